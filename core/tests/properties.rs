//! Property tests (proptest, fixed seed and case counts so the suite is fast and
//! reproducible): the frame codec, signed envelopes and the protocol state machine.
//! The fuzz targets in `fuzz/` check the same invariants for much longer.

#[path = "support/events.rs"]
mod events;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use starling_core::identity::{Keypair, PeerId};
use starling_core::net::verify::FastVerify;
use starling_core::proto::Verify;
use starling_core::wire::{
    decode_frame, encode_frame, Broadcast, DiscoveryMsg, GoneNotice, GossipMsg, IHave, Limits,
    MembershipMsg, Message, MessageId, PeerInfo, PresenceRecord, PresenceStatus, SignedMessage,
    SwimMsg, TopicId, TopicMsg, PROTOCOL_VERSION,
};

/// A runner with a fixed seed: the same cases on every run.
fn runner(cases: u32) -> TestRunner {
    let config = PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]))
}

fn key(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

fn peer_info() -> impl Strategy<Value = PeerInfo> {
    (any::<[u8; 32]>(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(id, addr)| PeerInfo {
        id: PeerId::from_bytes(id),
        addr: Bytes::from(addr),
    })
}

fn id32() -> impl Strategy<Value = MessageId> {
    any::<[u8; 32]>().prop_map(MessageId)
}

/// A signed broadcast of any kind, signed by one of four keys.
fn broadcast() -> impl Strategy<Value = Broadcast> {
    (
        0u8..3,
        1u8..5,
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<u32>(),
        any::<bool>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(kind, k, seq, issued, bytes, ttl, online, subject)| {
            let k = key(k);
            let topic = TopicId::from_name("prop");
            match kind {
                0 => Broadcast::Message(SignedMessage::new(&k, topic, seq, issued, bytes.into())),
                1 => {
                    let status = if online {
                        PresenceStatus::Online
                    } else {
                        PresenceStatus::Leaving
                    };
                    Broadcast::Presence(PresenceRecord::new(
                        &k,
                        topic,
                        seq,
                        issued,
                        ttl,
                        status,
                        bytes.into(),
                    ))
                }
                _ => Broadcast::Gone(GoneNotice::new(
                    &k,
                    topic,
                    PeerId::from_bytes(subject),
                    seq,
                    issued,
                )),
            }
        })
}

fn membership() -> impl Strategy<Value = MembershipMsg> {
    prop_oneof![
        peer_info().prop_map(MembershipMsg::Join),
        (peer_info(), any::<u16>())
            .prop_map(|(peer, ttl)| MembershipMsg::ForwardJoin { peer, ttl }),
        (peer_info(), any::<bool>()).prop_map(|(peer, high_priority)| MembershipMsg::Neighbor {
            peer,
            high_priority
        }),
        any::<bool>().prop_map(|accepted| MembershipMsg::NeighborReply { accepted }),
        any::<bool>().prop_map(|alive| MembershipMsg::Disconnect { alive }),
        (
            peer_info(),
            any::<u16>(),
            prop::collection::vec(peer_info(), 0..6)
        )
            .prop_map(|(origin, ttl, peers)| MembershipMsg::Shuffle { origin, ttl, peers }),
        prop::collection::vec(peer_info(), 0..6)
            .prop_map(|peers| MembershipMsg::ShuffleReply { peers }),
    ]
}

/// Any protocol message within the default limits.
fn message() -> impl Strategy<Value = Message> {
    let topic = any::<[u8; 32]>().prop_map(TopicId);
    let swim = prop_oneof![
        any::<u64>().prop_map(|nonce| SwimMsg::Ping { nonce }),
        any::<u64>().prop_map(|nonce| SwimMsg::Ack { nonce }),
        (any::<u64>(), peer_info()).prop_map(|(nonce, target)| SwimMsg::PingReq { nonce, target }),
        any::<u64>().prop_map(|nonce| SwimMsg::IndirectAck { nonce }),
        any::<u64>().prop_map(|nonce| SwimMsg::Nack { nonce }),
        Just(SwimMsg::Suspect),
        Just(SwimMsg::Alive),
    ];
    let discovery = prop_oneof![
        prop::collection::vec(any::<[u8; 32]>().prop_map(TopicId), 0..8)
            .prop_map(DiscoveryMsg::Topics),
        (any::<[u8; 32]>(), peer_info(), any::<u16>()).prop_map(|(t, origin, ttl)| {
            DiscoveryMsg::FindTopic {
                topic: TopicId(t),
                origin,
                ttl,
            }
        }),
        (
            any::<[u8; 32]>(),
            prop::collection::vec(peer_info(), 0..4),
            prop::collection::vec(id32(), 0..4)
        )
            .prop_map(|(t, peers, recent)| DiscoveryMsg::TopicPeers {
                topic: TopicId(t),
                peers,
                recent,
            }),
    ];
    let gossip = prop_oneof![
        (any::<u16>(), broadcast()).prop_map(|(hops, content)| GossipMsg::Gossip { hops, content }),
        prop::collection::vec(
            (id32(), any::<u16>()).prop_map(|(id, hops)| IHave { id, hops }),
            0..8
        )
        .prop_map(GossipMsg::IHave),
        prop::collection::vec(id32(), 0..8).prop_map(GossipMsg::Graft),
        Just(GossipMsg::Prune),
    ];
    let topic_msg = prop_oneof![
        membership().prop_map(TopicMsg::Membership),
        gossip.prop_map(TopicMsg::Gossip),
        prop::collection::vec(broadcast(), 0..3).prop_map(|v| {
            TopicMsg::PresenceSnapshot(
                v.into_iter()
                    .filter_map(|b| match b {
                        Broadcast::Presence(r) => Some(r),
                        _ => None,
                    })
                    .collect(),
            )
        }),
    ];
    prop_oneof![
        membership().prop_map(Message::Membership),
        swim.prop_map(Message::Swim),
        discovery.prop_map(Message::Discovery),
        (topic, topic_msg).prop_map(|(topic, msg)| Message::Topic { topic, msg }),
    ]
}

#[test]
fn frames_round_trip() {
    let limits = Limits::default();
    runner(256)
        .run(&message(), |msg| {
            let frame = encode_frame(&msg);
            let back =
                decode_frame(&frame, &limits).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, msg);
            Ok(())
        })
        .unwrap();
}

#[test]
fn decoding_arbitrary_bytes_never_panics() {
    let limits = Limits::default();
    // Raw bytes, and bytes behind the right version byte so the CBOR decoder is reached.
    runner(2048)
        .run(
            &(any::<bool>(), prop::collection::vec(any::<u8>(), 0..600)),
            |(versioned, mut bytes)| {
                if versioned {
                    bytes.insert(0, PROTOCOL_VERSION);
                }
                if let Ok(msg) = decode_frame(&bytes, &limits) {
                    // Anything accepted re-encodes to a frame that is accepted again.
                    let again = decode_frame(&encode_frame(&msg), &limits);
                    prop_assert_eq!(again, Ok(msg));
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn truncated_and_mutated_frames_never_panic() {
    let limits = Limits::default();
    runner(512)
        .run(
            &(
                message(),
                any::<prop::sample::Index>(),
                any::<u8>(),
                any::<bool>(),
            ),
            |(msg, at, xor, truncate)| {
                let mut frame = encode_frame(&msg);
                let i = at.index(frame.len());
                if truncate {
                    frame.truncate(i);
                } else {
                    frame[i] ^= xor;
                }
                let _ = decode_frame(&frame, &limits);
                Ok(())
            },
        )
        .unwrap();
}

/// Flips `xor` into byte `at` of field `field` of `b` (recomputing nothing).
fn mutate(b: &mut Broadcast, field: u8, at: usize, xor: u8) {
    fn flip_peer(p: &mut PeerId, at: usize, xor: u8) {
        let mut bytes = *p.as_bytes();
        bytes[at % 32] ^= xor;
        *p = PeerId::from_bytes(bytes);
    }
    let x64 = u64::from(xor) << (8 * (at % 8));
    match b {
        Broadcast::Message(m) => match field % 6 {
            0 => m.topic.0[at % 32] ^= xor,
            1 => flip_peer(&mut m.author, at, xor),
            2 => m.seq ^= x64,
            3 => m.issued_ms ^= x64,
            4 => {
                let mut p = m.payload.to_vec();
                let n = p.len();
                match p.get_mut(at % (n + 1)) {
                    Some(byte) => *byte ^= xor,
                    None => p.push(xor),
                }
                m.payload = p.into();
            }
            _ => m.sig.0[at % 64] ^= xor,
        },
        Broadcast::Presence(r) => match field % 6 {
            0 => r.topic.0[at % 32] ^= xor,
            1 => flip_peer(&mut r.author, at, xor),
            2 => r.seq ^= x64,
            3 => r.ttl_ms ^= u32::from(xor) << (8 * (at % 4)),
            4 => {
                r.status = match r.status {
                    PresenceStatus::Online => PresenceStatus::Leaving,
                    PresenceStatus::Leaving => PresenceStatus::Online,
                }
            }
            _ => r.sig.0[at % 64] ^= xor,
        },
        Broadcast::Gone(g) => match field % 6 {
            0 => g.topic.0[at % 32] ^= xor,
            1 => flip_peer(&mut g.reporter, at, xor),
            2 => flip_peer(&mut g.subject, at, xor),
            3 => g.subject_seq ^= x64,
            4 => g.issued_ms ^= x64,
            _ => g.sig.0[at % 64] ^= xor,
        },
    }
}

#[test]
fn mutated_envelopes_never_verify() {
    runner(256)
        .run(
            &(broadcast(), any::<u8>(), any::<usize>(), 1u8..=255),
            |(original, field, at, xor)| {
                let id = original.id();
                prop_assert!(original.verify(&id).is_ok());
                let mut b = original.clone();
                mutate(&mut b, field, at, xor);
                prop_assert_ne!(&b, &original);
                // A node recomputes the id from the content it received.
                let id = b.id();
                prop_assert!(
                    b.verify(&id).is_err(),
                    "a mutated envelope verified: {:?}",
                    b
                );
                prop_assert!(!FastVerify::default().verify(&id, &b));
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn state_machine_keeps_its_bounds_under_random_events() {
    // Real Ed25519 signatures here (the fuzz target uses a cheap stand-in for speed).
    runner(48)
        .run(
            &(any::<u64>(), prop::collection::vec(any::<u8>(), 0..3000)),
            |(seed, bytes)| {
                let mut h = events::Harness::new(events::Signing::Ed25519, seed);
                h.run(&bytes);
                Ok(())
            },
        )
        .unwrap();
}

/// A long scenario in which peers really connect, publish and fail: the checks run
/// after every one of thousands of events.
#[test]
fn state_machine_long_scenario_keeps_its_bounds() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let bytes: Vec<u8> = (0..40_000).map(|_| rng.gen()).collect();
    for chunk in bytes.chunks(4000) {
        let mut h = events::Harness::new(events::Signing::Cheap, u64::from(chunk[0]));
        h.run(chunk);
        assert!(h.events > 0, "a scenario of 4,000 bytes produced no event");
    }
}

/// Writes the fuzz seed corpora (`fuzz/corpus/<target>/`) from real encoded frames and
/// signed envelopes. Run by hand when the wire format changes:
/// `cargo test -p starling-core --test properties -- --ignored write_fuzz_seed_corpus`
#[test]
#[ignore]
fn write_fuzz_seed_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = |target: &str, name: String, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let mut runner = runner(1);
    let messages = message();
    let mut stream = Vec::new();
    for i in 0..24 {
        let msg = messages.new_tree(&mut runner).unwrap().current();
        let frame = encode_frame(&msg);
        write("frame", format!("frame-{i:02}"), &frame);
        if i < 6 {
            stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            stream.extend_from_slice(&frame);
        }
        // The state target: a seed byte, then a raw-frame event (selector 15) carrying it.
        if frame.len() < 250 {
            let mut s = vec![i as u8, 0, 15, frame.len() as u8];
            s.extend_from_slice(&frame);
            write("state", format!("frame-{i:02}"), &s);
        }
    }
    write("frame", "stream".into(), &stream);
    let broadcasts = broadcast();
    for i in 0..12u8 {
        // Mutate mode: base envelope i, one mutation of each field.
        let mut s = vec![i];
        for f in 0..8u8 {
            s.extend_from_slice(&[f, i, 1 << (f % 8)]);
        }
        write("envelope", format!("mutate-{i:02}"), &s);
        let b = broadcasts.new_tree(&mut runner).unwrap().current();
        let mut raw = vec![0x80];
        ciborium::into_writer(&b, &mut raw).unwrap();
        write("envelope", format!("raw-{i:02}"), &raw);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for i in 0..8u8 {
        let s: Vec<u8> = (0..600).map(|_| rng.gen()).collect();
        write("state", format!("random-{i:02}"), &s);
    }
}

/// Regression (found by the `state` fuzz target): a peer asking this node to probe itself
/// (`PingReq` with this node as target) made it send a `Ping` to itself.
#[test]
fn ping_req_for_this_node_itself_is_ignored() {
    use starling_core::proto::{Config, Event, State, Time};
    let me = key(1);
    let peer = key(2).peer_id();
    let mut s = State::new(me.clone(), Bytes::from_static(b"a"), Config::default(), 1);
    let now = Time::from_millis(1_700_000_000_000);
    // Only a neighbour may ask for probes: the peer joins through this node first.
    let join = MembershipMsg::Join(PeerInfo::bare(peer));
    s.handle_message(peer, Message::Membership(join), now);
    assert!(s.is_neighbor(&peer), "the joining peer is a neighbour");
    let target = PeerInfo::bare(me.peer_id());
    s.handle_message(
        peer,
        Message::Swim(SwimMsg::PingReq { nonce: 7, target }),
        now,
    );
    s.handle_timeout(now);
    while let Some(ev) = s.poll_event() {
        if let Event::Send(to, msg) = ev {
            assert_ne!(to, me.peer_id(), "sent {msg:?} to itself");
        }
    }
}
