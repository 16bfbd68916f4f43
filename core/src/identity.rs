//! Node identity: an Ed25519 keypair whose public key is the node's [`PeerId`].
//!
//! The key file holds one line, `starling-key-v1 <64 hex digits of the secret seed>`, is
//! created with mode 0600 and written atomically (temporary file, fsync, rename), so a
//! crash never leaves a half-written key behind.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// A node's identity on the network: its 32-byte Ed25519 public key.
///
/// Shown as 64 lowercase hex digits; [`PeerId::short`] gives the first 8 for logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerId(#[serde(with = "serde_bytes")] [u8; 32]);

impl PeerId {
    /// Wraps 32 raw bytes. Whether they form a valid Ed25519 point is checked when a
    /// signature is verified ([`PeerId::verify`]), not here.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        PeerId(bytes)
    }

    /// The raw 32 bytes of the public key.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Checks an Ed25519 signature made by this peer over `msg`: canonical encodings, no
    /// small-order key or `R`, `s < ℓ`, and the cofactored equation (the rules and why:
    /// `core/src/ed25519.rs`).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        crate::ed25519::VerifyKey::decode(&self.0)
            .is_some_and(|key| crate::ed25519::verify(&key, msg, &sig.0))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

/// Why a string is not a [`PeerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer id {input:?}: expected 64 hex digits")]
pub struct ParsePeerIdError {
    input: String,
}

impl FromStr for PeerId {
    type Err = ParsePeerIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePeerIdError {
            input: s.chars().take(80).collect(),
        };
        let bytes = hex::decode(s).map_err(|_| err())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| err())?;
        Ok(PeerId(arr))
    }
}

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "serde_bytes")] pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..4]))
    }
}

/// An Ed25519 keypair: the node's secret identity.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.peer_id().short())
    }
}

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read, created or replaced.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file exists but is not a Starling key file.
    #[error("key file {path} is corrupt: {reason}")]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

const KEY_FILE_TAG: &str = "starling-key-v1";

impl Keypair {
    /// A fresh keypair from the given random number generator.
    pub fn generate<R: rand::CryptoRng + rand::RngCore>(rng: &mut R) -> Self {
        Keypair {
            signing: SigningKey::generate(rng),
        }
    }

    /// The keypair whose secret seed is `seed` (deterministic: tests and the simulator).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Keypair {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte secret seed.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// This keypair's public identity.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.signing.verifying_key().to_bytes())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.signing.sign(msg).to_bytes())
    }

    /// Reads a key file written by [`Keypair::save`].
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let text = std::fs::read(path).map_err(|source| IdentityError::Io {
            path: path.to_owned(),
            source,
        })?;
        let corrupt = |reason: &str| IdentityError::Corrupt {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let text = std::str::from_utf8(&text).map_err(|_| corrupt("not UTF-8 text"))?;
        let mut parts = text.split_whitespace();
        if parts.next() != Some(KEY_FILE_TAG) {
            return Err(corrupt(&format!("does not start with {KEY_FILE_TAG:?}")));
        }
        let hex_seed = parts
            .next()
            .ok_or_else(|| corrupt("no key after the tag"))?;
        if parts.next().is_some() {
            return Err(corrupt("unexpected text after the key"));
        }
        let bytes = hex::decode(hex_seed).map_err(|_| corrupt("the key is not hex"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| corrupt(&format!("the key is {} bytes, not 32", b.len())))?;
        Ok(Keypair::from_seed(seed))
    }

    /// Writes the key file atomically with mode 0600 (owner read/write only).
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| io(std::io::Error::other("path has no file name")))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let write = || -> std::io::Result<()> {
            let mut file = options.open(&tmp)?;
            writeln!(file, "{KEY_FILE_TAG} {}", hex::encode(self.seed()))?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }

    /// Loads the key file at `path`, or creates it with a fresh key if it does not exist.
    /// A file that exists but is unreadable or corrupt is an error, never replaced.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        match Self::load(path) {
            Err(IdentityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let key = Keypair::generate(&mut rand::rngs::OsRng);
                key.save(path)?;
                Ok(key)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Verifier, VerifyingKey};

    #[test]
    fn peer_id_hex_round_trip_and_short_form() {
        let key = Keypair::from_seed([7; 32]);
        let id = key.peer_id();
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<PeerId>().unwrap(), id);
        assert_eq!(id.short(), text[..8]);
        assert!("zz".parse::<PeerId>().is_err());
        assert!(text[..62].parse::<PeerId>().is_err());
    }

    #[test]
    fn signatures_verify_only_for_signer_and_message() {
        let a = Keypair::from_seed([1; 32]);
        let b = Keypair::from_seed([2; 32]);
        let sig = a.sign(b"hello");
        assert!(a.peer_id().verify(b"hello", &sig));
        assert!(!a.peer_id().verify(b"hellO", &sig));
        assert!(!b.peer_id().verify(b"hello", &sig));
        let mut bad = sig;
        bad.0[3] ^= 1;
        assert!(!a.peer_id().verify(b"hello", &bad));
        // Not a curve point / small-order key: rejected, not a panic.
        assert!(!PeerId::from_bytes([0; 32]).verify(b"hello", &sig));
    }

    /// On signatures from a standard signer, tampered copies and degenerate inputs, our
    /// cofactored check gives the verdict of dalek's two checks (`verify_strict && verify`);
    /// they differ only on an `R` with a torsion component (`ed25519.rs` tests).
    #[test]
    fn agrees_with_dalek_strict_on_standard_and_tampered_signatures() {
        let reference = |key: &[u8; 32], msg: &[u8], sig: &Signature| {
            let Ok(k) = VerifyingKey::from_bytes(key) else {
                return false;
            };
            let s = ed25519_dalek::Signature::from_bytes(&sig.0);
            k.verify_strict(msg, &s).is_ok() && k.verify(msg, &s).is_ok()
        };
        let mut cases: Vec<([u8; 32], Vec<u8>, Signature)> = Vec::new();
        for seed in 1..6u8 {
            let k = Keypair::from_seed([seed; 32]);
            let sig = k.sign(b"msg");
            let key = *k.peer_id().as_bytes();
            cases.push((key, b"msg".to_vec(), sig));
            cases.push((key, b"msG".to_vec(), sig));
            for byte in [0usize, 31, 32, 63] {
                let mut bad = sig;
                bad.0[byte] ^= 0x01;
                cases.push((key, b"msg".to_vec(), bad));
            }
            // s ≥ ℓ.
            let mut big = sig;
            big.0[32..].copy_from_slice(&[0xff; 32]);
            cases.push((key, b"msg".to_vec(), big));
            // Non-canonical R: the identity's y = 1 encoded as 1 + p (not reduced).
            let mut noncanon = sig;
            noncanon.0[..32].copy_from_slice(&[
                0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0xff, 0x7f,
            ]);
            cases.push((key, b"msg".to_vec(), noncanon));
        }
        // Small-order key and R (the identity point), s = 0: passes the cofactorless
        // equation for any message, must be refused.
        let mut ident = [0u8; 32];
        ident[0] = 1;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&ident);
        cases.push((ident, b"anything".to_vec(), Signature(sig)));
        // Key bytes that are no point.
        cases.push((
            [0xff; 32],
            b"msg".to_vec(),
            Keypair::from_seed([1; 32]).sign(b"msg"),
        ));
        let mut accepted = 0;
        for (key, msg, sig) in &cases {
            let want = reference(key, msg, sig);
            assert_eq!(PeerId::from_bytes(*key).verify(msg, sig), want, "{key:?}");
            accepted += usize::from(want);
        }
        assert_eq!(accepted, 5, "only the five genuine signatures verify");
    }

    #[test]
    fn key_file_is_private_atomic_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let created = Keypair::load_or_create(&path).unwrap();
        let loaded = Keypair::load_or_create(&path).unwrap();
        assert_eq!(created.peer_id(), loaded.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_key_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        for (content, expect) in [
            (&b"hello"[..], "does not start with"),
            (b"starling-key-v1", "no key after the tag"),
            (b"starling-key-v1 abcd", "is 2 bytes, not 32"),
            (b"starling-key-v1 xyz", "not hex"),
            (b"\xff\xfe", "not UTF-8"),
        ] {
            std::fs::write(&path, content).unwrap();
            let err = Keypair::load_or_create(&path).unwrap_err().to_string();
            assert!(err.contains(expect), "{err:?} should mention {expect:?}");
            assert!(err.contains("bad.key"), "{err:?} should name the file");
            // A corrupt file is never overwritten.
            assert_eq!(std::fs::read(&path).unwrap(), content);
        }
        let missing_dir = dir.path().join("no/such/dir/key");
        assert!(matches!(
            Keypair::load(&missing_dir),
            Err(IdentityError::Io { .. })
        ));
        assert!(matches!(
            Keypair::load_or_create(&missing_dir),
            Err(IdentityError::Io { .. })
        ));
    }
}
