//! Who may connect: the admission hook (a host callback or an allowlist) and private
//! networks (an authority key and this node's credential), as `starling_config` settings;
//! plus the two helpers a host needs to run its own authority (a public key from a seed,
//! issuing a credential).

use std::cell::Cell;
use std::ffi::{c_char, c_void};

use starling_core::admission::{unix_now, AdmissionHook, Credential, CredentialError};
use starling_core::identity::{Keypair, PeerId};

use super::config::{starling_config, with_config};
use super::{boundary, bytes, cstr, need, starling_result, write_str, Fail};

/// Buffer size that always holds a credential in text form (`"starling-credential-v1
/// <hex>"`, for the longest network id) with its terminating NUL.
pub const STARLING_CREDENTIAL_TEXT_SIZE: usize = 700;

/// The admission hook: the host's allow/deny decision on a peer's identity.
/// `starling_config_set_admission` copies the struct.
///
/// When it is called: for every inbound connection, after the QUIC handshake proved the
/// peer's key, and for every outbound connection, before the dial and again after its
/// handshake. A peer it refuses is disconnected (or not dialled) and counted in
/// `starling_stats.refused_admission_hook`.
///
/// Threading: `allow` runs on the node's network threads (named `starling-node`), possibly
/// on several at once when several nodes were started from one config, and the node
/// handles no network traffic while it runs: it must be quick and must not block (look
/// the peer up in memory; do not do I/O or wait for locks held across slow work). From
/// inside `allow`, do not call `starling_node_*` (any node) or `starling_subscription_*`:
/// the calls that need a node fail at once with `STARLING_RESULT_WOULD_DEADLOCK` (they
/// would wait for the thread they run on), and `starling_node_free` is ignored.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct starling_admission {
    /// Passed unchanged as the first argument of both callbacks.
    pub userdata: *mut c_void,
    /// Required. Returns true to admit the peer whose 32-byte id `peer_id` points to
    /// (valid only during the call), false to refuse it.
    pub allow: Option<unsafe extern "C" fn(*mut c_void, *const u8) -> bool>,
    /// Optional (may be NULL). Called exactly once, after the last call of `allow`, when
    /// neither the config nor any node started from it needs the hook any more: inside
    /// `starling_config_free` (or a later `starling_config_set_admission` /
    /// `starling_config_set_allowlist` that replaces it) or `starling_node_free` /
    /// `starling_node_shutdown`, whichever drops the last reference, possibly on one of
    /// the node's network threads while that call waits for them. Release `userdata`
    /// here. Not called if `starling_config_set_admission` fails.
    pub release: Option<unsafe extern "C" fn(*mut c_void)>,
}

thread_local! {
    /// Set while this thread runs a host's `allow`: a node call from there would wait for
    /// the node's actor, which is the caller (see `starling_admission`).
    static IN_ADMISSION_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// `Err(WouldDeadlock)` when called from inside a host's admission callback.
pub(crate) fn not_in_admission_hook() -> Result<(), Fail> {
    if in_admission_hook() {
        Err(Fail::new(
            starling_result::WouldDeadlock,
            "node calls are not allowed inside the admission hook (the node is waiting for it)",
        ))
    } else {
        Ok(())
    }
}

/// Whether this thread is running a host's admission callback.
pub(crate) fn in_admission_hook() -> bool {
    IN_ADMISSION_HOOK.with(Cell::get)
}

/// The host's callbacks; `release` runs when the last node and config drop it.
struct HostHook(starling_admission);

// SAFETY: the header documents that `allow` and `release` are called on the node's
// network threads, possibly concurrently; the host agrees to that by setting the hook.
unsafe impl Send for HostHook {}
// SAFETY: as above.
unsafe impl Sync for HostHook {}

impl HostHook {
    fn admits(&self, peer: &PeerId) -> bool {
        let Some(allow) = self.0.allow else {
            return false; // checked non-NULL when set; refuse rather than trust
        };
        struct Reset(bool);
        impl Drop for Reset {
            fn drop(&mut self) {
                IN_ADMISSION_HOOK.with(|f| f.set(self.0));
            }
        }
        let _reset = Reset(IN_ADMISSION_HOOK.with(|f| f.replace(true)));
        // SAFETY: the host's callback, called as documented; the id outlives the call.
        unsafe { allow(self.0.userdata, peer.as_bytes().as_ptr()) }
    }
}

impl Drop for HostHook {
    fn drop(&mut self) {
        if let Some(release) = self.0.release {
            // SAFETY: the host's callback, called exactly once (this value is dropped once,
            // by whoever holds the last reference to the hook).
            unsafe { release(self.0.userdata) };
        }
    }
}

/// Sets the admission hook of nodes started from this config (replacing an earlier hook
/// or allowlist, whose `release` then runs unless a node still uses it). `*admission` is
/// copied; see `starling_admission` for when and on which threads its callbacks run and
/// what they may do. Without a hook every peer the network admits is accepted.
///
/// Errors: `NULL_PARAMETER` (`config`, `admission` or `admission->allow` NULL; then
/// `release` is not called and `userdata` remains the caller's).
#[no_mangle]
pub extern "C" fn starling_config_set_admission(
    config: *mut starling_config,
    admission: *const starling_admission,
) -> starling_result {
    with_config(config, |c| {
        need(admission, "admission")?;
        // SAFETY: non-NULL, readable (documented contract); the struct is Copy.
        let host = unsafe { *admission };
        if host.allow.is_none() {
            return Err(Fail::new(
                starling_result::NullParameter,
                "admission->allow is NULL",
            ));
        }
        let host = HostHook(host);
        c.admission = Some(AdmissionHook::new(move |peer| host.admits(peer)));
        Ok(())
    })
}

/// Admits exactly the `count` peers whose 32-byte ids lie one after another at
/// `peer_ids` (`count * 32` bytes, copied) and refuses everyone else; `count` 0 refuses
/// every peer. Replaces an earlier hook or allowlist (see `starling_config_set_admission`).
///
/// Errors: `NULL_PARAMETER` (`config` NULL, or `peer_ids` NULL with `count` above 0),
/// `INVALID_ARGUMENT` (`count * 32` overflows).
#[no_mangle]
pub extern "C" fn starling_config_set_allowlist(
    config: *mut starling_config,
    peer_ids: *const u8,
    count: usize,
) -> starling_result {
    with_config(config, |c| {
        let len = count.checked_mul(32).ok_or_else(|| {
            Fail::new(
                starling_result::InvalidArgument,
                format!("an allowlist of {count} peer ids is impossible"),
            )
        })?;
        // SAFETY: documented contract: `count * 32` readable bytes.
        let raw = unsafe { bytes(peer_ids, len, "peer_ids") }?;
        let peers = raw.chunks_exact(32).map(|id| {
            let mut a = [0u8; 32];
            a.copy_from_slice(id);
            PeerId::from_bytes(a)
        });
        c.admission = Some(AdmissionHook::allowlist(peers));
        Ok(())
    })
}

fn invalid(message: String) -> Fail {
    Fail::new(starling_result::InvalidArgument, message)
}

/// Checks what can be checked before start and stores the private network.
fn set_private(
    c: &mut starling_core::node::Config,
    authority: PeerId,
    credential: &str,
) -> Result<(), Fail> {
    let cred = Credential::from_text(credential).map_err(|e| invalid(e.to_string()))?;
    // The peer and network the credential is for are checked at start (the identity and
    // network id may still change); its signer, signature and expiry can be checked now.
    match cred.check(&authority, &cred.peer, &cred.network, unix_now()) {
        Ok(()) => {}
        Err(e @ CredentialError::WrongAuthority { .. }) => {
            return Err(invalid(format!(
                "{e} (was it issued by another network's authority?)"
            )))
        }
        Err(e) => return Err(invalid(e.to_string())),
    }
    c.authority = Some(authority);
    c.credential = Some(cred);
    Ok(())
}

/// Makes nodes started from this config members of a private network: they show
/// `credential` to every peer right after the handshake and refuse peers without a valid
/// credential from the same authority (counted in `starling_stats.refused_credential`).
/// `authority` points to the network authority's 32-byte public key; `credential` is this
/// node's credential in text form, NUL-terminated (`"starling-credential-v1 <hex>"`, one
/// line, surrounding whitespace ignored: what `starling authority issue` writes and
/// `starling_credential_issue` returns).
///
/// Checked here: the form, that `authority` signed it (signature verified), and that it
/// has not expired. Checked by `starling_node_start`, which fails with
/// `STARLING_RESULT_INVALID_CONFIG` and says which: that the credential was issued for
/// the node's identity key (set it with `starling_config_set_identity_seed` or
/// `_identity_file`; a generated identity never matches) and for the config's network id.
///
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT` (not a credential, not UTF-8, signed by
/// another authority, bad signature, expired).
#[no_mangle]
pub extern "C" fn starling_config_set_private_network(
    config: *mut starling_config,
    authority: *const u8,
    credential: *const c_char,
) -> starling_result {
    with_config(config, |c| {
        // SAFETY: documented contract: 32 readable bytes.
        let raw = unsafe { bytes(authority, 32, "authority") }?;
        let mut key = [0u8; 32];
        key.copy_from_slice(raw);
        // SAFETY: documented contract (NUL-terminated).
        let credential = unsafe { cstr(credential, "credential") }?;
        set_private(c, PeerId::from_bytes(key), credential)
    })
}

/// As `starling_config_set_private_network`, with the authority's public key as 64 hex
/// digits, NUL-terminated (what `starling authority new` prints).
///
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT` (the key is not 64 hex digits, and as
/// `starling_config_set_private_network`).
#[no_mangle]
pub extern "C" fn starling_config_set_private_network_hex(
    config: *mut starling_config,
    authority_hex: *const c_char,
    credential: *const c_char,
) -> starling_result {
    with_config(config, |c| {
        // SAFETY: documented contract (NUL-terminated).
        let hex = unsafe { cstr(authority_hex, "authority_hex") }?;
        let authority: PeerId =
            hex.trim()
                .parse()
                .map_err(|e: starling_core::identity::ParsePeerIdError| {
                    invalid(format!("authority: {e}"))
                })?;
        // SAFETY: documented contract (NUL-terminated).
        let credential = unsafe { cstr(credential, "credential") }?;
        set_private(c, authority, credential)
    })
}

/// Writes to `out` (room for 32 bytes) the public key (the peer id) that belongs to the
/// 32-byte secret `seed`: the id of a node started with
/// `starling_config_set_identity_seed(seed)`, or an authority's public key.
/// Errors: `NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn starling_public_key(seed: *const u8, out: *mut u8) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract: 32 readable bytes.
        let raw = unsafe { bytes(seed, 32, "seed") }?;
        need(out, "out")?;
        let mut s = [0u8; 32];
        s.copy_from_slice(raw);
        let id = Keypair::from_seed(s).peer_id();
        // SAFETY: out has room for 32 bytes (documented contract).
        unsafe { std::ptr::copy_nonoverlapping(id.as_bytes().as_ptr(), out, 32) };
        Ok(())
    })
}

/// Issues a private-network credential, as the network authority: signs with the
/// authority's 32-byte secret `authority_seed` (keep it off the nodes) a credential
/// admitting the peer `peer_id` (32 bytes) to the network `network_id` (NUL-terminated,
/// 1 to 200 bytes) until `expires_unix` (seconds since the Unix epoch). Writes its text
/// form and a NUL to `buf` (`STARLING_CREDENTIAL_TEXT_SIZE` always suffices); `*written`
/// (if not NULL) gets its length.
///
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT` (network id empty, too long or not UTF-8),
/// `BUFFER_TOO_SMALL`.
#[no_mangle]
pub extern "C" fn starling_credential_issue(
    authority_seed: *const u8,
    peer_id: *const u8,
    network_id: *const c_char,
    expires_unix: u64,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> starling_result {
    boundary(|| {
        // SAFETY: documented contract: 32 readable bytes each.
        let seed = unsafe { bytes(authority_seed, 32, "authority_seed") }?;
        // SAFETY: as above.
        let peer = unsafe { bytes(peer_id, 32, "peer_id") }?;
        // SAFETY: documented contract (NUL-terminated).
        let network = unsafe { cstr(network_id, "network_id") }?;
        if network.is_empty() || network.len() > 200 {
            return Err(invalid(format!(
                "the network id must be 1 to 200 bytes, not {}",
                network.len()
            )));
        }
        let mut s = [0u8; 32];
        s.copy_from_slice(seed);
        let mut p = [0u8; 32];
        p.copy_from_slice(peer);
        let cred = Credential::issue(
            &Keypair::from_seed(s),
            PeerId::from_bytes(p),
            network,
            expires_unix,
        );
        // SAFETY: documented contract of buf/len/written.
        unsafe { write_str(&cred.to_text(), buf, len, written) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_text_size_fits_the_longest_network_id() {
        let c = Credential::issue(
            &Keypair::from_seed([1; 32]),
            PeerId::from_bytes([2; 32]),
            &"n".repeat(200),
            u64::MAX,
        );
        assert_eq!(c.to_text().len() + 1, STARLING_CREDENTIAL_TEXT_SIZE);
    }
}
