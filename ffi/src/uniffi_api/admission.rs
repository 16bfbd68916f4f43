//! Who may connect, for the bindings: the host's admission policy (a foreign trait), the
//! allowlist and private-network settings of [`Config`](super::Config), and the helpers a
//! host needs to run its own network authority.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use starling_core::admission::{unix_now, AdmissionHook, Credential, CredentialError};
use starling_core::identity::{Keypair, PeerId};

use super::types::{ErrorKind, StarlingError};

/// The application's allow/deny decision on a peer, given at node construction
/// (`Node.with_admission`).
#[uniffi::export(with_foreign)]
pub trait AdmissionPolicy: Send + Sync {
    /// Returns true to admit `peer_id` (64 hex digits). Asked for every inbound connection
    /// once the handshake proved the peer's key, and for every outbound one before the dial
    /// and again after its handshake. It runs on the node's network threads and the node
    /// handles no traffic meanwhile: keep it quick (an in-memory lookup) and do not call
    /// the node from it (the call would time out). A policy that throws refuses the peer.
    fn allow(&self, peer_id: String) -> bool;
}

/// The core hook: the allowlist (if any) and the policy (if any) must both admit. `None`
/// when neither is set (everyone the network admits may connect).
pub(crate) fn hook(
    allowlist: Option<Vec<PeerId>>,
    policy: Option<Arc<dyn AdmissionPolicy>>,
) -> Option<AdmissionHook> {
    let allowed = allowlist.map(|ids| ids.into_iter().collect::<std::collections::BTreeSet<_>>());
    if allowed.is_none() && policy.is_none() {
        return None;
    }
    Some(AdmissionHook::new(move |peer| {
        if let Some(set) = &allowed {
            if !set.contains(peer) {
                return false;
            }
        }
        let Some(policy) = &policy else {
            return true;
        };
        // A host exception surfaces as a panic of the generated glue: refuse, never crash
        // the node's actor.
        match catch_unwind(AssertUnwindSafe(|| policy.allow(peer.to_string()))) {
            Ok(admit) => admit,
            Err(_) => {
                tracing::warn!(peer = %peer, "the admission policy failed; refusing the peer");
                false
            }
        }
    }))
}

/// Parses a peer id (64 hex digits); `what` names the setting in the error.
pub(crate) fn peer_id(hex: &str, what: &str, kind: ErrorKind) -> Result<PeerId, StarlingError> {
    hex.trim()
        .parse::<PeerId>()
        .map_err(|e| StarlingError::new(kind, format!("{what}: {e} (expected 64 hex digits)")))
}

fn seed(bytes: &[u8], what: &str) -> Result<[u8; 32], StarlingError> {
    bytes.try_into().map_err(|_| {
        StarlingError::new(
            ErrorKind::InvalidArgument,
            format!("{what} must be 32 bytes, not {}", bytes.len()),
        )
    })
}

/// Parses `credential` and checks what can be checked without the node: its form, that
/// `authority` signed it, its expiry, and — when known — that it was issued for `peer`
/// and `network`. Errors are `ErrorKind::InvalidCredential`.
pub(crate) fn credential(
    authority: &PeerId,
    credential: &str,
    peer: Option<PeerId>,
    network: &str,
) -> Result<Credential, StarlingError> {
    let bad = |e: CredentialError| {
        let hint = match e {
            CredentialError::WrongAuthority { .. } => {
                " (was it issued by another network's authority?)"
            }
            CredentialError::WrongPeer { .. } => " (it must be issued for this node's identity)",
            _ => "",
        };
        StarlingError::new(
            ErrorKind::InvalidCredential,
            format!("credential: {e}{hint}"),
        )
    };
    let cred = Credential::from_text(credential).map_err(bad)?;
    let peer = peer.unwrap_or(cred.peer);
    cred.check(authority, &peer, network, unix_now())
        .map_err(bad)?;
    Ok(cred)
}

/// The public key (peer id, 64 hex digits) of the 32-byte secret `seed`: the id of a node
/// started with `Config.identity_seed = seed`, or a network authority's public key.
#[uniffi::export]
pub fn public_key(seed: Vec<u8>) -> Result<String, StarlingError> {
    Ok(Keypair::from_seed(self::seed(&seed, "seed")?)
        .peer_id()
        .to_string())
}

/// Issues a private-network credential, as the network authority: signs with the
/// authority's 32-byte secret `authority_seed` (keep it off the nodes) a credential that
/// admits `peer_id` (64 hex digits) to `network_id` until `expires_unix` (seconds since
/// the Unix epoch). Returns its text form (`"starling-credential-v1 <hex>"`), what
/// `starling authority issue` writes.
#[uniffi::export]
pub fn issue_credential(
    authority_seed: Vec<u8>,
    peer_id: String,
    network_id: String,
    expires_unix: u64,
) -> Result<String, StarlingError> {
    let key = Keypair::from_seed(seed(&authority_seed, "authority_seed")?);
    let peer = self::peer_id(&peer_id, "peer_id", ErrorKind::InvalidArgument)?;
    if network_id.is_empty() || network_id.len() > 200 {
        return Err(StarlingError::new(
            ErrorKind::InvalidArgument,
            format!(
                "the network id must be 1 to 200 bytes, not {}",
                network_id.len()
            ),
        ));
    }
    Ok(Credential::issue(&key, peer, &network_id, expires_unix).to_text())
}
