//! Node-level protocol tests on small simulated networks: what a user relies on (each
//! subscriber gets each message once, with its author; presence; bad input refused).

use std::time::Duration;

use bytes::Bytes;
use starling_core::identity::Keypair;
use starling_core::proto::{self, Error, Event, Reject, State};
use starling_core::wire::{
    Broadcast, GossipMsg, Message, PresenceRecord, PresenceStatus, SignedMessage, TopicId, TopicMsg,
};
use starling_sim::engine::{NetConfig, Observed, Sim};

fn topic() -> TopicId {
    TopicId::from_name("test-topic")
}

/// A connected network of `n` nodes, all subscribed to `topic()`.
fn network(n: u32, seed: u64) -> Sim {
    let mut sim = Sim::new(seed, NetConfig::default(), proto::Config::default());
    sim.add_node();
    for i in 1..n {
        sim.add_node();
        sim.join(i, i / 2);
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(3));
    for i in 0..n {
        sim.with(i, |s, now| s.subscribe(topic(), now))
            .unwrap()
            .unwrap();
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(5));
    sim
}

fn deliveries(sim: &mut Sim) -> Vec<(u32, proto::Delivery)> {
    sim.observed
        .drain(..)
        .filter_map(|o| match o {
            Observed::Delivered { node, d } => Some((node, d)),
            _ => None,
        })
        .collect()
}

/// Feeds `msg` to node `i` as if sent by `from`, returning the node's events.
fn inject(sim: &mut Sim, i: u32, from: &Keypair, msg: Message) -> Vec<Event> {
    let state: &mut State = match sim.nodes[i as usize].state.as_mut() {
        Some(s) => s,
        None => panic!("node {i} is not running"),
    };
    state.handle_message(from.peer_id(), msg, sim.now);
    std::iter::from_fn(|| state.poll_event()).collect()
}

fn gossip(content: Broadcast) -> Message {
    Message::Topic {
        topic: topic(),
        msg: TopicMsg::Gossip(GossipMsg::Gossip { hops: 0, content }),
    }
}

#[test]
fn every_subscriber_gets_every_message_once_with_its_author() {
    let mut sim = network(30, 7);
    deliveries(&mut sim);
    let mut published = Vec::new();
    for k in 0..20u32 {
        let publisher = (k * 7) % 30;
        let payload = Bytes::from(format!("m{k}"));
        let p = sim
            .with(publisher, |s, now| s.publish(topic(), payload, now))
            .unwrap()
            .unwrap();
        assert!(p.peers > 0, "a connected publisher reaches peers");
        published.push((p.id, sim.nodes[publisher as usize].id, publisher));
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_secs(3));
    let got = deliveries(&mut sim);
    for (id, author, publisher) in &published {
        let receivers: Vec<_> = got.iter().filter(|(_, d)| d.id == *id).collect();
        assert_eq!(
            receivers.len(),
            29,
            "message {id:?}: every other node, once each"
        );
        let mut nodes: Vec<u32> = receivers.iter().map(|(n, _)| *n).collect();
        nodes.sort_unstable();
        nodes.dedup();
        assert_eq!(nodes.len(), 29, "no duplicates");
        assert!(
            !nodes.contains(publisher),
            "not delivered back to its publisher"
        );
        for (_, d) in receivers {
            assert_eq!(
                d.author, *author,
                "the author, not the forwarding neighbour"
            );
        }
    }
}

#[test]
fn messages_from_one_author_arrive_in_publish_order() {
    let mut sim = network(20, 11);
    deliveries(&mut sim);
    for k in 0..50u32 {
        let payload = Bytes::from(k.to_be_bytes().to_vec());
        sim.with(3, |s, now| s.publish(topic(), payload, now))
            .unwrap()
            .unwrap();
    }
    sim.run_for(Duration::from_secs(3));
    let got = deliveries(&mut sim);
    for node in 0..20u32 {
        if node == 3 {
            continue;
        }
        let seqs: Vec<u64> = got
            .iter()
            .filter(|(n, _)| *n == node)
            .map(|(_, d)| d.seq)
            .collect();
        assert_eq!(seqs.len(), 50, "node {node}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "node {node}: {seqs:?}"
        );
    }
}

#[test]
fn forged_tampered_replayed_and_misdated_broadcasts_are_refused() {
    let mut sim = network(5, 3);
    deliveries(&mut sim);
    let now_ms = sim.now.as_millis();
    let honest = Keypair::from_seed([42; 32]);
    let attacker = Keypair::from_seed([66; 32]);
    let good = SignedMessage::new(&honest, topic(), 10, now_ms, Bytes::from_static(b"hello"));

    // Spoofed author: signed by the attacker, claiming the honest author.
    let mut spoofed = SignedMessage::new(&attacker, topic(), 10, now_ms, Bytes::from_static(b"x"));
    spoofed.author = honest.peer_id();
    // Tampered payload.
    let mut tampered = good.clone();
    tampered.payload = Bytes::from_static(b"HELLO");
    // Future-dated by a day, and a week old.
    let future = SignedMessage::new(&honest, topic(), 11, now_ms + 86_400_000, Bytes::new());
    let stale = SignedMessage::new(&honest, topic(), 12, now_ms - 7 * 86_400_000, Bytes::new());
    // Under another topic's header.
    let other = SignedMessage::new(
        &honest,
        TopicId::from_name("other"),
        13,
        now_ms,
        Bytes::new(),
    );
    // Oversized payload.
    let limit = proto::Config::default().limits.max_payload_bytes;
    let big = SignedMessage::new(
        &honest,
        topic(),
        14,
        now_ms,
        Bytes::from(vec![0; limit + 1]),
    );

    for (msg, reason) in [
        (spoofed, Reject::BadSignature),
        (tampered, Reject::BadSignature),
        (future, Reject::FutureDated),
        (stale, Reject::TooOld),
        (other, Reject::TopicMismatch),
        (big, Reject::Oversized),
    ] {
        let events = inject(&mut sim, 0, &attacker, gossip(Broadcast::Message(msg)));
        assert!(
            events.contains(&Event::Rejected {
                peer: attacker.peer_id(),
                reason
            }),
            "expected {reason:?}, got {events:?}"
        );
        assert!(!events
            .iter()
            .any(|e| matches!(e, Event::Deliver(_) | Event::Send(..))));
    }

    // The honest message is delivered once; a replay of it is not delivered again, and an
    // older sequence number beyond the window is refused as a replay.
    let events = inject(
        &mut sim,
        0,
        &attacker,
        gossip(Broadcast::Message(good.clone())),
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Deliver(_)))
            .count(),
        1
    );
    let events = inject(&mut sim, 0, &attacker, gossip(Broadcast::Message(good)));
    assert!(!events.iter().any(|e| matches!(e, Event::Deliver(_))));
    for seq in 11..2000 {
        let m = SignedMessage::new(&honest, topic(), seq, now_ms, Bytes::new());
        inject(&mut sim, 0, &attacker, gossip(Broadcast::Message(m)));
    }
    let old = SignedMessage::new(&honest, topic(), 5, now_ms, Bytes::from_static(b"old"));
    let events = inject(&mut sim, 0, &attacker, gossip(Broadcast::Message(old)));
    assert!(events.contains(&Event::Rejected {
        peer: attacker.peer_id(),
        reason: Reject::Replay
    }));
}

#[test]
fn forged_presence_is_refused_and_topics_not_joined_carry_no_payloads() {
    let mut sim = network(5, 5);
    let attacker = Keypair::from_seed([66; 32]);
    let victim = Keypair::from_seed([7; 32]);
    let now_ms = sim.now.as_millis();
    let mut record = PresenceRecord::new(
        &attacker,
        topic(),
        1,
        now_ms,
        60_000,
        PresenceStatus::Online,
        Bytes::new(),
    );
    record.author = victim.peer_id();
    let events = inject(
        &mut sim,
        1,
        &attacker,
        Message::Topic {
            topic: topic(),
            msg: TopicMsg::PresenceSnapshot(vec![record]),
        },
    );
    assert!(events.contains(&Event::Rejected {
        peer: attacker.peer_id(),
        reason: Reject::BadSignature
    }));
    assert!(sim.state(1).unwrap().online(&topic()).is_empty());

    // A topic node 1 is not a member of: the payload is dropped, not forwarded.
    let elsewhere = TopicId::from_name("elsewhere");
    let m = SignedMessage::new(&attacker, elsewhere, 1, now_ms, Bytes::from_static(b"p"));
    let events = inject(
        &mut sim,
        1,
        &attacker,
        Message::Topic {
            topic: elsewhere,
            msg: TopicMsg::Gossip(GossipMsg::Gossip {
                hops: 0,
                content: Broadcast::Message(m),
            }),
        },
    );
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(sim.state(1).unwrap().counters().not_member, 1);
}

#[test]
fn application_errors_are_clear() {
    let mut sim = network(3, 9);
    let limit = proto::Config::default().limits.max_payload_bytes;
    let err = sim
        .with(0, |s, now| {
            s.publish(topic(), Bytes::from(vec![0; limit + 1]), now)
        })
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err,
        Error::PayloadTooLarge {
            len: limit + 1,
            max: limit
        }
    );
    assert!(err.to_string().contains("exceeds the limit"));
    let err = sim
        .with(0, |s, now| {
            s.set_presence(topic(), Bytes::from(vec![0; 1025]), now)
        })
        .unwrap()
        .unwrap_err();
    assert!(matches!(
        err,
        Error::MetadataTooLarge {
            len: 1025,
            max: 1024
        }
    ));
    sim.with(0, |s, now| s.leave(now));
    let err = sim
        .with(0, |s, now| s.publish(topic(), Bytes::new(), now))
        .unwrap()
        .unwrap_err();
    assert_eq!(err, Error::Left);
}

#[test]
fn a_message_published_before_any_peer_arrives_later() {
    let mut sim = Sim::new(4, NetConfig::default(), proto::Config::default());
    let a = sim.add_node();
    let b = sim.add_node();
    sim.with(b, |s, now| s.subscribe(topic(), now))
        .unwrap()
        .unwrap();
    let p = sim
        .with(a, |s, now| {
            s.publish(topic(), Bytes::from_static(b"early"), now)
        })
        .unwrap()
        .unwrap();
    assert_eq!(p.peers, 0, "nobody to send to: the receipt says so");
    sim.run_for(Duration::from_secs(1));
    sim.join(b, a);
    sim.run_for(Duration::from_secs(5));
    let got = deliveries(&mut sim);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, b);
    assert_eq!(got[0].1.payload, Bytes::from_static(b"early"));
}

#[test]
fn presence_snapshot_reaches_a_late_joiner_and_crashes_are_noticed() {
    let mut sim = network(12, 21);
    for i in 0..12u32 {
        let meta = Bytes::from(format!("node {i}"));
        sim.with(i, |s, now| s.set_presence(topic(), meta, now))
            .unwrap()
            .unwrap();
    }
    sim.run_for(Duration::from_secs(2));
    for i in 0..12u32 {
        assert_eq!(sim.state(i).unwrap().online(&topic()).len(), 11, "node {i}");
    }
    // Late joiner.
    let j = sim.add_node();
    sim.join(j, 5);
    sim.run_for(Duration::from_secs(2));
    sim.with(j, |s, now| s.subscribe(topic(), now))
        .unwrap()
        .unwrap();
    sim.run_for(Duration::from_secs(2));
    let online = sim.state(j).unwrap().online(&topic());
    assert_eq!(online.len(), 12);
    assert!(online
        .iter()
        .any(|e| e.metadata == Bytes::from_static(b"node 5")));

    // Crash two members: everyone else sees them offline within 3 s.
    sim.crash(2);
    sim.crash(9);
    let crashed = [sim.nodes[2].id, sim.nodes[9].id];
    sim.run_for(Duration::from_secs(3));
    for i in (0..12u32).filter(|i| ![2, 9].contains(i)) {
        let s = sim.state(i).unwrap();
        for c in &crashed {
            assert!(
                !s.is_online(&topic(), c),
                "node {i} still sees {c:?} online"
            );
        }
        assert_eq!(
            s.online(&topic()).len(),
            9,
            "node {i}: 12 members, itself and 2 crashed"
        );
    }
    // Graceful leave.
    sim.with(4, |s, now| s.clear_presence(&topic(), now));
    sim.run_for(Duration::from_secs(1));
    let leaver = sim.nodes[4].id;
    assert!(!sim.state(0).unwrap().is_online(&topic(), &leaver));
}

#[test]
fn a_node_subscribed_before_joining_enters_the_topic_as_soon_as_a_neighbour_has_it() {
    // Its first topic walk ran with no neighbour at all; the neighbour's topic list must
    // start the topic join at once, not at the walk retry 1 s later.
    let mut sim = network(10, 11);
    let newcomer = sim.add_node();
    sim.with(newcomer, |s, now| s.subscribe(topic(), now))
        .unwrap()
        .unwrap();
    sim.join(newcomer, 0);
    sim.run_for(Duration::from_millis(700));
    let neighbours = sim
        .with(newcomer, |s, _| s.topic_neighbors(&topic()))
        .unwrap();
    assert!(
        !neighbours.is_empty(),
        "700 ms after joining, the newcomer still has no neighbour on the topic"
    );
}
