//! The node's signature checker: the verdicts of [`Broadcast::verify`], with authors' keys
//! kept decoded and broadcasts that arrive together checked in one batch.
//!
//! A node verifies every message it receives, so this is its throughput limit. Two savings:
//! - decoded author keys are cached (bounded), which saves a point decompression per
//!   message;
//! - [`Verify::verify_ahead`] checks the new broadcasts the actor drained together in one
//!   multi-scalar multiplication (`ed25519::verify_batch`, about half the cost per
//!   signature); the `verify` calls that follow are answered from that. If the batch
//!   fails, nothing is taken from it and each broadcast is checked alone, so one forged
//!   message costs its sender the batch, never an honest message its delivery. The batch
//!   and the single check use the same (cofactored) equation, so they agree on every
//!   input (see `core/src/ed25519.rs`).

use std::collections::{HashMap, HashSet};

use crate::ed25519::{verify, verify_batch, VerifyKey};
use crate::proto::Verify;
use crate::wire::{Broadcast, MessageId, SIGNATURE_DOMAIN};

/// Author keys kept decoded; when full the cache is cleared (simple and bounded; a
/// network with more active authors than this only loses the cache's benefit).
const KEY_CACHE: usize = 4096;

/// The signed input for `id`: the domain tag, then the id.
fn signed_input(id: &MessageId) -> [u8; SIGNATURE_DOMAIN.len() + 32] {
    let mut input = [0u8; SIGNATURE_DOMAIN.len() + 32];
    input[..SIGNATURE_DOMAIN.len()].copy_from_slice(SIGNATURE_DOMAIN);
    input[SIGNATURE_DOMAIN.len()..].copy_from_slice(id.as_bytes());
    input
}

/// See the module docs.
#[derive(Default)]
pub struct FastVerify {
    /// Author key → its decoded point, or None for bytes that are no usable key.
    keys: HashMap<[u8; 32], Option<VerifyKey>>,
    /// (id, signature) pairs of the last batch that passed, each answered once by
    /// `verify`; cleared by the next batch, so bounded by the actor's drain size.
    proven: HashSet<(MessageId, [u8; 64])>,
}

impl FastVerify {
    fn key(&mut self, bytes: &[u8; 32]) -> Option<VerifyKey> {
        if let Some(k) = self.keys.get(bytes) {
            return *k;
        }
        if self.keys.len() >= KEY_CACHE {
            self.keys.clear();
        }
        let key = VerifyKey::decode(bytes);
        self.keys.insert(*bytes, key);
        key
    }
}

impl Verify for FastVerify {
    fn verify(&mut self, id: &MessageId, content: &Broadcast) -> bool {
        // The id covers the signer, so a proven (id, signature) pair is this very check.
        if !self.proven.is_empty() && self.proven.remove(&(*id, content.sig().0)) {
            return true;
        }
        let Some(key) = self.key(content.signer().as_bytes()) else {
            return false;
        };
        verify(&key, &signed_input(id), &content.sig().0)
    }

    fn verify_ahead(&mut self, batch: &[(MessageId, &Broadcast)]) {
        self.proven.clear();
        let mut items = Vec::with_capacity(batch.len());
        let mut seen = HashSet::with_capacity(batch.len());
        for (id, content) in batch {
            let sig = content.sig().0;
            // Undecodable keys fail alone later; a copy from a second neighbour is checked
            // once.
            if let Some(key) = self.key(content.signer().as_bytes()) {
                if seen.insert((*id, sig)) {
                    items.push((key, signed_input(id), sig, *id));
                }
            }
        }
        if items.len() < 2 {
            return;
        }
        let refs: Vec<_> = items
            .iter()
            .map(|(key, input, sig, _)| (key, &input[..], sig))
            .collect();
        if verify_batch(&refs) {
            self.proven = seen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Keypair, PeerId, Signature as WireSig};
    use crate::wire::{SignedMessage, TopicId};

    fn msg(seed: u8, payload: &[u8]) -> SignedMessage {
        let k = Keypair::from_seed([seed; 32]);
        SignedMessage::new(
            &k,
            TopicId::from_name("t"),
            1,
            1000,
            payload.to_vec().into(),
        )
    }

    /// Same verdict as the wire's own check, for valid, tampered, forged and degenerate
    /// inputs (including small-order keys and R, and non-canonical encodings).
    #[test]
    fn agrees_with_broadcast_verify() {
        let mut fast = FastVerify::default();
        let mut cases: Vec<(Broadcast, MessageId)> = Vec::new();
        for seed in 1..6u8 {
            let m = msg(seed, b"hello");
            let id = m.id();
            cases.push((Broadcast::Message(m.clone()), id));
            // Wrong id (tampered content).
            cases.push((Broadcast::Message(m.clone()), msg(seed, b"other").id()));
            // Flipped signature bits, in R and in s.
            for byte in [0usize, 31, 32, 63] {
                let mut bad = m.clone();
                bad.sig.0[byte] ^= 0x01;
                cases.push((Broadcast::Message(bad), id));
            }
            // s ≥ ℓ (non-canonical scalar).
            let mut big_s = m.clone();
            big_s.sig.0[32..].copy_from_slice(&[0xff; 32]);
            cases.push((Broadcast::Message(big_s), id));
            // Another author claimed.
            let mut forged = m.clone();
            forged.author = Keypair::from_seed([seed + 100; 32]).peer_id();
            cases.push((Broadcast::Message(forged), id));
        }
        // Small-order key (identity point) with R = identity, s = 0: verifies under the
        // cofactorless equation, must still be refused.
        let mut ident = [0u8; 32];
        ident[0] = 1;
        let mut weak = msg(1, b"x");
        weak.author = PeerId::from_bytes(ident);
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&ident);
        weak.sig = WireSig(sig);
        let weak_id = weak.id();
        cases.push((Broadcast::Message(weak), weak_id));
        // Key bytes that are not a point.
        let mut junk = msg(2, b"y");
        junk.author = PeerId::from_bytes([0xff; 32]);
        let junk_id = junk.id();
        cases.push((Broadcast::Message(junk), junk_id));
        let mut accepted = 0;
        for (b, id) in &cases {
            let want = b.verify(id).is_ok();
            // Twice: the second call hits the key cache.
            assert_eq!(fast.verify(id, b), want, "{b:?}");
            assert_eq!(fast.verify(id, b), want, "{b:?}");
            accepted += usize::from(want);
        }
        assert_eq!(accepted, 5, "only the five genuine messages verify");
    }

    /// Checked ahead in a batch, the verdicts are those of single checks: a passing batch
    /// answers each member once; one bad member makes every member be checked alone; a
    /// copy of a proven message with another signature is still refused.
    #[test]
    fn verify_ahead_gives_the_single_verdicts() {
        let good: Vec<(MessageId, Broadcast)> = (0..5u8)
            .map(|i| {
                let m = msg(1 + i % 2, &[i; 20]);
                (m.id(), Broadcast::Message(m))
            })
            .collect();
        let mut fast = FastVerify::default();
        let batch: Vec<_> = good.iter().map(|(id, b)| (*id, b)).collect();
        fast.verify_ahead(&batch);
        assert_eq!(fast.proven.len(), 5, "the batch passed");
        // Same id, another (invalid) signature: not answered from the batch.
        let (id0, b0) = &good[0];
        let Broadcast::Message(m0) = b0 else {
            unreachable!()
        };
        let mut forged = m0.clone();
        forged.sig.0[40] ^= 1;
        assert!(!fast.verify(id0, &Broadcast::Message(forged.clone())));
        for (id, b) in &good {
            assert!(fast.verify(id, b));
        }
        assert!(fast.proven.is_empty(), "each proven pair answers once");

        // One bad member: nothing is proven, each is checked alone.
        let mut mixed = batch.clone();
        let bad = Broadcast::Message(forged);
        mixed.push((*id0, &bad));
        fast.verify_ahead(&mixed);
        assert!(fast.proven.is_empty());
        for (id, b) in &good {
            assert!(fast.verify(id, b));
        }
        assert!(!fast.verify(id0, &bad));
    }

    #[test]
    fn key_cache_is_bounded() {
        let mut fast = FastVerify::default();
        for i in 0..(KEY_CACHE + 10) {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let _ = fast.key(&b);
            assert!(fast.keys.len() <= KEY_CACHE);
        }
    }
}
