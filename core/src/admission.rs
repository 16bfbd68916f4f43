//! Who may connect, and how much a connected peer may send.
//!
//! - Private networks: a network *authority* (an Ed25519 key held by the network's owner,
//!   never by the nodes) signs a [`Credential`] `{network id, peer, expiry}` for each
//!   member. A node of a private network presents its credential right after the QUIC
//!   handshake, on a stream of its own, before any protocol frame is handled; the other
//!   side checks it ([`Credential::check`]) and closes the connection if it is missing,
//!   expired, signed by another authority, made for another peer or for another network.
//! - The admission hook ([`AdmissionHook`]): the application's allow/deny decision on a
//!   [`PeerId`], consulted for every inbound and outbound connection.
//! - [`PeerLimits`]: per-connection rates and the back-off that keeps a peer that broke
//!   the protocol out for a while.
//!
//! Every refusal is logged (`tracing`) and counted in `node::Stats::refused` with its
//! reason ([`Refusal::as_str`]).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::identity::{Keypair, PeerId, Signature};

/// Prefix of the bytes a credential's signature covers (domain separation: a signature
/// made for anything else never verifies as a credential).
pub const CREDENTIAL_DOMAIN: &[u8] = b"starling/v1/credential";
/// First word of a credential's text form.
const CREDENTIAL_TAG: &str = "starling-credential-v1";
/// Longest network id (the node refuses longer ones too).
const MAX_NETWORK: usize = 200;
/// Binary size without the network id: authority, peer, expiry, network length, signature.
const FIXED: usize = 32 + 32 + 8 + 2 + 64;
/// Longest encoded credential (what a receiver reads at most).
pub const MAX_CREDENTIAL_BYTES: usize = FIXED + MAX_NETWORK;

/// A membership credential of a private network, signed by the network's authority.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The authority's public key (the signer).
    pub authority: PeerId,
    /// The member it admits.
    pub peer: PeerId,
    /// The network id it is valid on.
    pub network: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_unix: u64,
    /// Ed25519 signature by `authority` over [`CREDENTIAL_DOMAIN`] ‖ the other fields.
    pub sig: Signature,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("authority", &self.authority)
            .field("peer", &self.peer)
            .field("network", &self.network)
            .field("expires_unix", &self.expires_unix)
            .finish_non_exhaustive()
    }
}

/// Why a credential (or its absence) does not admit a peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Bytes or text that are not a credential.
    #[error("malformed credential: {0}")]
    Malformed(String),
    /// The peer sent no credential in time.
    #[error("no credential presented")]
    Missing,
    /// Signed by another authority than the network's.
    #[error("credential signed by authority {found}, not this network's {expected}")]
    WrongAuthority {
        /// The network's authority.
        expected: PeerId,
        /// The credential's.
        found: PeerId,
    },
    /// Made for another peer than the one that proved its key in the handshake.
    #[error("credential is for peer {found}, presented by {expected}")]
    WrongPeer {
        /// The peer that presented it.
        expected: PeerId,
        /// The peer it names.
        found: PeerId,
    },
    /// Made for another network.
    #[error("credential is for network {found:?}, not {expected:?}")]
    WrongNetwork {
        /// This network.
        expected: String,
        /// The credential's.
        found: String,
    },
    /// Past its expiry.
    #[error("credential expired at {expires_unix} (now {now_unix}, Unix seconds)")]
    Expired {
        /// Its expiry.
        expires_unix: u64,
        /// The checker's clock.
        now_unix: u64,
    },
    /// The signature does not verify (forged or tampered).
    #[error("credential signature does not verify")]
    BadSignature,
}

impl CredentialError {
    /// The short reason used as a counter key (`credential_expired`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialError::Malformed(_) => "credential_malformed",
            CredentialError::Missing => "credential_missing",
            CredentialError::WrongAuthority { .. } => "credential_wrong_authority",
            CredentialError::WrongPeer { .. } => "credential_wrong_peer",
            CredentialError::WrongNetwork { .. } => "credential_wrong_network",
            CredentialError::Expired { .. } => "credential_expired",
            CredentialError::BadSignature => "credential_bad_signature",
        }
    }
}

/// Seconds since the Unix epoch on this machine's clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Credential {
    /// Signs a credential admitting `peer` to `network` until `expires_unix`.
    pub fn issue(authority: &Keypair, peer: PeerId, network: &str, expires_unix: u64) -> Self {
        let mut c = Credential {
            authority: authority.peer_id(),
            peer,
            network: network.to_owned(),
            expires_unix,
            sig: Signature([0; 64]),
        };
        c.sig = authority.sign(&c.signed_bytes());
        c
    }

    fn body(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FIXED + self.network.len());
        v.extend_from_slice(self.authority.as_bytes());
        v.extend_from_slice(self.peer.as_bytes());
        v.extend_from_slice(&self.expires_unix.to_be_bytes());
        // Checked at issue and decode; a longer id is cut (and then fails to verify).
        let net = &self.network.as_bytes()[..self.network.len().min(MAX_NETWORK)];
        v.extend_from_slice(&(net.len() as u16).to_be_bytes());
        v.extend_from_slice(net);
        v
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut v = CREDENTIAL_DOMAIN.to_vec();
        v.extend_from_slice(&self.body());
        v
    }

    /// The binary form (what travels after the handshake).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.sig.0);
        v
    }

    /// Parses the binary form; never panics.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CredentialError> {
        let bad = |s: &str| CredentialError::Malformed(s.to_owned());
        if b.len() < FIXED || b.len() > MAX_CREDENTIAL_BYTES {
            return Err(bad("wrong length"));
        }
        let take32 = |at: usize| -> [u8; 32] {
            let mut a = [0u8; 32];
            a.copy_from_slice(&b[at..at + 32]);
            a
        };
        let authority = PeerId::from_bytes(take32(0));
        let peer = PeerId::from_bytes(take32(32));
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&b[64..72]);
        let net_len = usize::from(u16::from_be_bytes([b[72], b[73]]));
        if b.len() != FIXED + net_len {
            return Err(bad("network id length does not match"));
        }
        let network = std::str::from_utf8(&b[74..74 + net_len])
            .map_err(|_| bad("network id is not UTF-8"))?
            .to_owned();
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&b[74 + net_len..]);
        Ok(Credential {
            authority,
            peer,
            network,
            expires_unix: u64::from_be_bytes(exp),
            sig: Signature(sig),
        })
    }

    /// The text form: `starling-credential-v1 <hex>` (one line; what `starling authority
    /// issue` writes).
    pub fn to_text(&self) -> String {
        format!("{CREDENTIAL_TAG} {}", hex::encode(self.to_bytes()))
    }

    /// Parses the text form (surrounding whitespace ignored).
    pub fn from_text(s: &str) -> Result<Self, CredentialError> {
        let s = s.trim();
        let hexpart = s
            .strip_prefix(CREDENTIAL_TAG)
            .map(str::trim_start)
            .ok_or_else(|| {
                CredentialError::Malformed(format!("does not start with {CREDENTIAL_TAG:?}"))
            })?;
        let bytes = hex::decode(hexpart)
            .map_err(|e| CredentialError::Malformed(format!("bad hex: {e}")))?;
        Self::from_bytes(&bytes)
    }

    /// Whether this credential admits `peer` to `network` under `authority` at
    /// `now_unix`. The cheap checks come first, the signature last.
    pub fn check(
        &self,
        authority: &PeerId,
        peer: &PeerId,
        network: &str,
        now_unix: u64,
    ) -> Result<(), CredentialError> {
        if self.authority != *authority {
            return Err(CredentialError::WrongAuthority {
                expected: *authority,
                found: self.authority,
            });
        }
        if self.peer != *peer {
            return Err(CredentialError::WrongPeer {
                expected: *peer,
                found: self.peer,
            });
        }
        if self.network != network {
            return Err(CredentialError::WrongNetwork {
                expected: network.to_owned(),
                found: self.network.clone(),
            });
        }
        if self.expires_unix <= now_unix {
            return Err(CredentialError::Expired {
                expires_unix: self.expires_unix,
                now_unix,
            });
        }
        if !self.authority.verify(&self.signed_bytes(), &self.sig) {
            return Err(CredentialError::BadSignature);
        }
        Ok(())
    }
}

/// A private network as one node sees it: the authority to check peers against and the
/// node's own credential to show them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateNetwork {
    /// The network authority's public key.
    pub authority: PeerId,
    /// This node's credential (issued by `authority` for this node and network).
    pub credential: Credential,
}

/// The application's admission decision: `true` admits the peer. Consulted for every
/// inbound connection (after the handshake proved the peer's key) and before every
/// outbound dial and after its handshake. It runs on the node's actor, so it must be
/// quick and must not call back into the node.
#[derive(Clone)]
pub struct AdmissionHook(Arc<dyn Fn(&PeerId) -> bool + Send + Sync + 'static>);

impl AdmissionHook {
    /// Wraps a closure.
    pub fn new(f: impl Fn(&PeerId) -> bool + Send + Sync + 'static) -> Self {
        AdmissionHook(Arc::new(f))
    }

    /// An allowlist: exactly these peers are admitted.
    pub fn allowlist(peers: impl IntoIterator<Item = PeerId>) -> Self {
        let set: std::collections::BTreeSet<PeerId> = peers.into_iter().collect();
        AdmissionHook::new(move |p| set.contains(p))
    }

    /// Whether `peer` is admitted.
    pub fn admits(&self, peer: &PeerId) -> bool {
        (self.0)(peer)
    }
}

impl fmt::Debug for AdmissionHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdmissionHook(..)")
    }
}

/// Why a connection was refused (the key of `node::Stats::refused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The admission hook said no.
    Hook,
    /// The peer is kept out after breaking the protocol (back-off running).
    Banned,
    /// Already at `max_connections`.
    ConnectionLimit,
    /// Private network: the peer's credential did not check out.
    Credential(&'static str),
}

impl Refusal {
    /// The counter key.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Hook => "admission_hook",
            Refusal::Banned => "banned",
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::Credential(s) => s,
        }
    }
}

/// Per-peer limits, enforced per connection before the work they guard, and the back-off
/// for a peer that broke the protocol. [`Default`] gives the documented values.
///
/// Rates are token buckets holding `burst` seconds' worth of tokens. A peer that empties a
/// bucket is disconnected and kept out for `ban_duration`. The defaults detect abuse, they
/// do not throttle: they sit well above the fastest honest link measured (8,600
/// broadcasts/s between two nodes, docs/BENCHMARKS.md) and the throughput goal (20,000/s),
/// and a receiver's signature checks (about 11,000/s per core) bound honest forwarding
/// anyway. Lower them for small devices, but keep `messages_per_sec` above the total rate
/// a neighbour may forward: a node forwards everything it accepted from all its peers, so
/// a limit at the level of one peer's honest traffic would make it cut off an honest
/// forwarder of several publishers.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerLimits {
    /// Frames per second from one peer, of any kind (default 100,000); counted before the
    /// frame is decoded.
    pub frames_per_sec: f64,
    /// Broadcasts (payload-carrying gossip, and each record of a presence snapshot) per
    /// second from one peer (default 50,000); counted before the signature is checked.
    pub messages_per_sec: f64,
    /// IHAVE entries per second from one peer (default 100,000; honest lazy links carry
    /// one entry per broadcast).
    pub ihave_per_sec: f64,
    /// GRAFT requests (ids, or a bare graft) per second from one peer (default 50,000;
    /// each costs this node a payload send). An honest neighbour grafts what this node
    /// announced to it, up to the rate of broadcasts this node passes on: keep it at
    /// least `messages_per_sec`.
    pub graft_per_sec: f64,
    /// Bucket depth, in seconds of the rate (default 2 s).
    pub burst: Duration,
    /// How long a peer that broke the protocol (malformed frame, bad signature, rate
    /// abuse) is kept out: its connections are refused and it is not dialed (default 60 s).
    pub ban_duration: Duration,
    /// Peers kept out at once (default 4,096; the ban ending soonest is dropped first).
    pub max_banned: usize,
    /// Dials (handshakes in progress) at once (default 64); further dials fail at once
    /// with "too many pending dials".
    pub max_pending_dials: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            frames_per_sec: 100_000.0,
            messages_per_sec: 50_000.0,
            ihave_per_sec: 100_000.0,
            graft_per_sec: 50_000.0,
            burst: Duration::from_secs(2),
            ban_duration: Duration::from_secs(60),
            max_banned: 4096,
            max_pending_dials: 64,
        }
    }
}

impl PeerLimits {
    /// Checks the values, saying what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("frames_per_sec", self.frames_per_sec),
            ("messages_per_sec", self.messages_per_sec),
            ("ihave_per_sec", self.ihave_per_sec),
            ("graft_per_sec", self.graft_per_sec),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(format!("peer_limits.{name} must be a positive number"));
            }
        }
        if self.burst.is_zero() {
            return Err("peer_limits.burst must be above zero".into());
        }
        if self.max_pending_dials == 0 {
            return Err("peer_limits.max_pending_dials must be at least 1".into());
        }
        Ok(())
    }
}

/// A token bucket (rate per second, depth `rate × burst`), on a time the caller supplies,
/// so it is testable without a clock.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    depth: f64,
    tokens: f64,
    last: Option<std::time::Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: Duration) -> Self {
        let depth = (rate * burst.as_secs_f64()).max(1.0);
        TokenBucket {
            rate,
            depth,
            tokens: depth,
            last: None,
        }
    }

    /// Takes `n` tokens at `now`; false (and nothing taken) if there are not enough.
    pub fn take(&mut self, n: f64, now: std::time::Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.depth);
        }
        self.last = Some(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Keypair {
        Keypair::from_seed([n; 32])
    }

    #[test]
    fn credential_round_trips_and_checks() {
        let auth = key(1);
        let peer = key(2).peer_id();
        let c = Credential::issue(&auth, peer, "net", 1000);
        assert_eq!(Credential::from_bytes(&c.to_bytes()).unwrap(), c);
        assert_eq!(Credential::from_text(&c.to_text()).unwrap(), c);
        assert_eq!(c.check(&auth.peer_id(), &peer, "net", 999), Ok(()));
        let e = |r: Result<(), CredentialError>| r.unwrap_err().as_str();
        assert_eq!(
            e(c.check(&auth.peer_id(), &peer, "net", 1000)),
            "credential_expired"
        );
        assert_eq!(
            e(c.check(&key(3).peer_id(), &peer, "net", 1)),
            "credential_wrong_authority"
        );
        assert_eq!(
            e(c.check(&auth.peer_id(), &key(3).peer_id(), "net", 1)),
            "credential_wrong_peer"
        );
        assert_eq!(
            e(c.check(&auth.peer_id(), &peer, "other", 1)),
            "credential_wrong_network"
        );
        // Tampering with any field breaks the signature.
        let mut t = c.clone();
        t.expires_unix += 1;
        assert_eq!(
            e(t.check(&auth.peer_id(), &peer, "net", 1)),
            "credential_bad_signature"
        );
    }

    #[test]
    fn malformed_credentials_are_errors_not_panics() {
        for bad in [
            "",
            "starling-credential-v1",
            "starling-credential-v1 zz",
            "starling-credential-v1 00",
            "something else",
        ] {
            assert!(matches!(
                Credential::from_text(bad),
                Err(CredentialError::Malformed(_))
            ));
        }
        let c = Credential::issue(&key(1), key(2).peer_id(), "net", 5);
        let mut b = c.to_bytes();
        b[73] = 200; // network length beyond the data
        assert!(Credential::from_bytes(&b).is_err());
        for n in 0..b.len() {
            let _ = Credential::from_bytes(&b[..n]);
        }
    }

    #[test]
    fn token_bucket_refills_at_its_rate() {
        let t0 = std::time::Instant::now();
        let mut b = TokenBucket::new(10.0, Duration::from_secs(1));
        for _ in 0..10 {
            assert!(b.take(1.0, t0));
        }
        assert!(!b.take(1.0, t0));
        assert!(b.take(5.0, t0 + Duration::from_millis(500)));
        assert!(!b.take(1.0, t0 + Duration::from_millis(500)));
        // Never above the depth.
        assert!(!b.take(11.0, t0 + Duration::from_secs(100)));
    }

    #[test]
    fn allowlist_admits_only_its_peers() {
        let h = AdmissionHook::allowlist([key(1).peer_id()]);
        assert!(h.admits(&key(1).peer_id()));
        assert!(!h.admits(&key(2).peer_id()));
    }
}
