//! The node's signature checker: the same verdicts as [`Broadcast::verify`], with the
//! author's decompressed key cached.
//!
//! [`PeerId::verify`](crate::identity::PeerId::verify) decompresses the author's key on
//! every call. A node verifies every message it receives, so that is its throughput limit.
//! Both use one multiplication (`identity::verify_with`; dalek's `verify_strict` followed
//! by `verify` took two):
//! - `verify` (cofactorless, compares the *encoding* of the recomputed R with the
//!   signature's R, so R is canonical; s < ℓ is checked by dalek), plus
//! - the two extra conditions of `verify_strict`: neither R nor the author's key is of
//!   small order.
//!
//! `verify_strict` compares decompressed points; since `verify` compares encodings of the
//! same recomputed point, `verify` passing implies the point equation of `verify_strict`.
//! Decompressed author keys are cached (bounded), which saves one field inversion per
//! message.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

use crate::proto::Verify;
use crate::wire::{Broadcast, MessageId, SIGNATURE_DOMAIN};

/// Author keys kept decompressed; when full the cache is cleared (simple and bounded; a
/// network with more active authors than this only loses the cache's benefit).
const KEY_CACHE: usize = 4096;

/// See the module docs.
#[derive(Default)]
pub struct FastVerify {
    /// Author key → its decompressed point, or None for bytes that are no usable key.
    keys: HashMap<[u8; 32], Option<VerifyingKey>>,
}

impl FastVerify {
    fn key(&mut self, bytes: &[u8; 32]) -> Option<VerifyingKey> {
        if let Some(k) = self.keys.get(bytes) {
            return *k;
        }
        if self.keys.len() >= KEY_CACHE {
            self.keys.clear();
        }
        let key = VerifyingKey::from_bytes(bytes)
            .ok()
            .filter(|k| !k.is_weak());
        self.keys.insert(*bytes, key);
        key
    }
}

impl Verify for FastVerify {
    fn verify(&mut self, id: &MessageId, content: &Broadcast) -> bool {
        let Some(key) = self.key(content.signer().as_bytes()) else {
            return false;
        };
        let mut input = [0u8; SIGNATURE_DOMAIN.len() + 32];
        input[..SIGNATURE_DOMAIN.len()].copy_from_slice(SIGNATURE_DOMAIN);
        input[SIGNATURE_DOMAIN.len()..].copy_from_slice(id.as_bytes());
        crate::identity::verify_with(&key, &input, content.sig())
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
