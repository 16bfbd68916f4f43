//! Envelope verification: signed messages, presence records and gone notices.
//!
//! Two modes, by the first byte:
//! - mutate: a genuinely signed envelope (4 authors × 3 kinds), then arbitrary byte flips
//!   in any field, the signature, or the id it is checked against;
//! - raw: arbitrary bytes decoded as a CBOR `Broadcast` (seeds: envelopes signed by the
//!   same four keys).
//!
//! Invariants: the wire's check (`Broadcast::verify`, strict Ed25519) and the node's
//! faster checker (`FastVerify`, alone and after a batch check) always agree; a mutated envelope verifies if and only if
//! it is, byte for byte, the genuinely signed one; nothing verifies for an author whose
//! key the fuzzer does not hold.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use starling_core::identity::{Keypair, PeerId};
use starling_core::net::verify::FastVerify;
use starling_core::proto::Verify;
use starling_core::wire::{
    Broadcast, GoneNotice, MessageId, PresenceRecord, PresenceStatus, SignedMessage, TopicId,
};

fn genuine() -> &'static [Broadcast] {
    static ALL: OnceLock<Vec<Broadcast>> = OnceLock::new();
    ALL.get_or_init(|| {
        let topic = TopicId::from_name("fuzz");
        let mut v = Vec::new();
        for i in 1..=4u8 {
            let k = Keypair::from_seed([i; 32]);
            let other = Keypair::from_seed([i + 10; 32]).peer_id();
            let t = 1_700_000_000_000 + u64::from(i);
            v.push(Broadcast::Message(SignedMessage::new(
                &k,
                topic,
                u64::from(i),
                t,
                Bytes::from(vec![i; usize::from(i) * 3]),
            )));
            v.push(Broadcast::Presence(PresenceRecord::new(
                &k,
                topic,
                u64::from(i),
                t,
                30_000,
                PresenceStatus::Online,
                Bytes::from_static(b"meta"),
            )));
            v.push(Broadcast::Gone(GoneNotice::new(
                &k,
                topic,
                other,
                u64::from(i),
                t,
            )));
        }
        v
    })
}

fn flip32(a: &mut [u8; 32], i: u8, x: u8) {
    a[usize::from(i) % 32] ^= x;
}

fn flip_peer(p: &mut PeerId, i: u8, x: u8) {
    let mut b = *p.as_bytes();
    flip32(&mut b, i, x);
    *p = PeerId::from_bytes(b);
}

fn flip_u64(v: &mut u64, i: u8, x: u8) {
    *v ^= u64::from(x) << (8 * (u32::from(i) % 8));
}

fn mutate(b: &mut Broadcast, delta: &mut MessageId, field: u8, i: u8, x: u8) {
    match (b, field % 8) {
        (_, 0) => flip32(&mut delta.0, i, x),
        (Broadcast::Message(m), f) => match f {
            1 => flip32(&mut m.topic.0, i, x),
            2 => flip_peer(&mut m.author, i, x),
            3 => flip_u64(&mut m.seq, i, x),
            4 => flip_u64(&mut m.issued_ms, i, x),
            5 => {
                let mut p = m.payload.to_vec();
                match p.get_mut(usize::from(i)) {
                    Some(byte) => *byte ^= x,
                    None => p.push(x),
                }
                m.payload = Bytes::from(p);
            }
            _ => m.sig.0[usize::from(i) % 64] ^= x,
        },
        (Broadcast::Presence(r), f) => match f {
            1 => flip32(&mut r.topic.0, i, x),
            2 => flip_peer(&mut r.author, i, x),
            3 => flip_u64(&mut r.seq, i, x),
            4 => r.ttl_ms ^= u32::from(x) << (8 * (u32::from(i) % 4)),
            5 => {
                if x & 1 == 1 {
                    r.status = match r.status {
                        PresenceStatus::Online => PresenceStatus::Leaving,
                        PresenceStatus::Leaving => PresenceStatus::Online,
                    };
                } else {
                    let mut p = r.metadata.to_vec();
                    match p.get_mut(usize::from(i)) {
                        Some(byte) => *byte ^= x,
                        None => p.push(x),
                    }
                    r.metadata = Bytes::from(p);
                }
            }
            _ => r.sig.0[usize::from(i) % 64] ^= x,
        },
        (Broadcast::Gone(g), f) => match f {
            1 => flip32(&mut g.topic.0, i, x),
            2 => flip_peer(&mut g.reporter, i, x),
            3 => flip_peer(&mut g.subject, i, x),
            4 => flip_u64(&mut g.subject_seq, i, x),
            5 => flip_u64(&mut g.issued_ms, i, x),
            _ => g.sig.0[usize::from(i) % 64] ^= x,
        },
    }
}

/// Both checkers' verdict on `b` against `id`; they must agree.
fn verdict(fast: &mut FastVerify, b: &Broadcast, id: &MessageId) -> bool {
    let slow = b.verify(id).is_ok();
    // Twice: the second call takes the key cache's path.
    assert_eq!(fast.verify(id, b), slow, "FastVerify disagrees: {b:?}");
    assert_eq!(
        fast.verify(id, b),
        slow,
        "FastVerify disagrees (cached key): {b:?}"
    );
    // Checked ahead in one batch with two genuine envelopes, as the actor does under load.
    let batch: Vec<(MessageId, &Broadcast)> = genuine()[..2]
        .iter()
        .map(|g| (g.id(), g))
        .chain([(*id, b)])
        .collect();
    fast.verify_ahead(&batch);
    assert_eq!(
        fast.verify(id, b),
        slow,
        "FastVerify disagrees after a batch: {b:?}"
    );
    slow
}

fuzz_target!(|data: &[u8]| {
    let mut fast = FastVerify::default();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 0x80 == 0 {
        let all = genuine();
        let base = &all[usize::from(mode) % all.len()];
        let mut b = base.clone();
        // Field 0 of a mutation flips bits of the id the signature is checked against
        // (a receiver that got the id wrong); otherwise the id is recomputed, as a node does.
        let mut delta = MessageId([0; 32]);
        for m in rest.chunks_exact(3) {
            mutate(&mut b, &mut delta, m[0], m[1], m[2]);
        }
        let mut id = b.id();
        id.0.iter_mut().zip(delta.0).for_each(|(a, d)| *a ^= d);
        let ok = verdict(&mut fast, &b, &id);
        let unchanged = b == *base && delta.0 == [0; 32];
        assert_eq!(
            ok, unchanged,
            "verified: {ok}, unchanged: {unchanged}: {b:?}"
        );
    } else if let Ok(b) = ciborium::from_reader::<Broadcast, _>(rest) {
        let id = b.id();
        // The seeds are signed by the four keys of `genuine`; nothing can verify for an
        // author whose private key the fuzzer does not have.
        if verdict(&mut fast, &b, &id) {
            let signer = b.signer();
            assert!(
                genuine().iter().any(|g| g.signer() == signer),
                "an envelope verified for an unknown author: {b:?}"
            );
        }
    }
});
