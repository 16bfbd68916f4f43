//! The node over real QUIC on loopback (ports 0): smoke, many nodes, crashes, restarts,
//! network separation, impersonation, limits, late peers, two OS processes.
//!
//! Every wait is a bounded poll that fails with what was missing; nothing sleeps to hide
//! a race.
#![cfg(feature = "net")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use starling_core::identity::{Keypair, PeerId};
use starling_core::net::TransportOptions;
use starling_core::node::{
    Builder, Error, Item, Message, NetEvent, Node, OfflineReason, PresenceChange, RecvError,
    Subscription,
};
use starling_core::wire::TopicId;

const NET: &str = "node-tests";

fn key(n: u32) -> Keypair {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    Keypair::from_seed(seed)
}

fn builder(n: u32) -> Builder {
    Node::builder()
        .bind("127.0.0.1:0")
        .network_id(NET)
        .identity(key(n))
        .worker_threads(1)
        .transport(TransportOptions {
            dial_timeout: Duration::from_secs(2),
            ..TransportOptions::default()
        })
}

fn start(n: u32, bootstrap: Option<&Node>) -> Node {
    let mut b = builder(n);
    if let Some(boot) = bootstrap {
        b = b.bootstrap(boot.contact());
    }
    b.start().expect("node starts")
}

/// Polls `cond` until it holds, failing with `what()` after `limit`.
fn wait_until(limit: Duration, what: impl Fn() -> String, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {limit:?}: {}", what());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `sub` until `want` messages arrived (presence items are skipped), failing with
/// what is missing after `limit`. Lagged is a failure here: these tests never overflow.
fn collect(sub: &Subscription, want: usize, limit: Duration, label: &str) -> Vec<Message> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("{label}: got {} of {want} messages: {got:?}", got.len());
        }
        match sub.recv_timeout(left) {
            Ok(Item::Message(m)) => got.push(m),
            Ok(Item::Presence(_)) => {}
            Ok(Item::Lagged(n)) => panic!("{label}: subscription lagged by {n}"),
            Err(RecvError::Empty) => {}
            Err(RecvError::Closed) => panic!("{label}: subscription closed"),
        }
    }
    got
}

fn online_ids(node: &Node, topic: TopicId) -> BTreeSet<PeerId> {
    node.online(topic)
        .expect("online")
        .into_iter()
        .map(|e| e.peer)
        .collect()
}

fn wait_all_online(nodes: &[&Node], topic: TopicId, limit: Duration) {
    let ids: BTreeSet<PeerId> = nodes.iter().map(|n| n.id()).collect();
    wait_until(
        limit,
        || {
            let views: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let seen = online_ids(n, topic);
                    let missing = ids.iter().filter(|i| **i != n.id() && !seen.contains(i));
                    format!("{} misses {}", n.id().short(), missing.count())
                })
                .collect();
            format!("presence views incomplete: {views:?}")
        },
        || {
            nodes.iter().all(|n| {
                let seen = online_ids(n, topic);
                ids.iter().all(|i| *i == n.id() || seen.contains(i))
            })
        },
    );
}

#[test]
fn three_nodes_smoke() {
    let a = start(1, None);
    let b = start(2, Some(&a));
    let c = start(3, Some(&a));
    let topic = TopicId::from_name("smoke");
    let nodes = [&a, &b, &c];
    let subs: Vec<Subscription> = nodes
        .iter()
        .map(|n| n.subscribe(topic).expect("subscribe"))
        .collect();
    for n in nodes {
        n.set_presence(topic, format!("node {}", n.id().short()))
            .expect("presence");
    }
    wait_all_online(&nodes, topic, Duration::from_secs(15));
    let entry = a
        .online(topic)
        .unwrap()
        .into_iter()
        .find(|e| e.peer == b.id())
        .expect("b online at a");
    assert_eq!(entry.metadata, format!("node {}", b.id().short()).as_bytes());

    for n in nodes {
        let r = n
            .publish(topic, format!("hello from {}", n.id().short()))
            .expect("publish");
        assert!(r.peers >= 1, "{r:?}");
    }
    for (i, sub) in subs.iter().enumerate() {
        let got = collect(sub, 2, Duration::from_secs(10), "smoke");
        let authors: BTreeSet<PeerId> = got.iter().map(|m| m.author).collect();
        let expect: BTreeSet<PeerId> = nodes
            .iter()
            .filter(|n| n.id() != nodes[i].id())
            .map(|n| n.id())
            .collect();
        assert_eq!(authors, expect);
        for m in &got {
            assert_eq!(m.topic, topic);
            assert_eq!(m.payload, format!("hello from {}", m.author.short()).as_bytes());
        }
    }
    let stats = a.stats().expect("stats");
    assert!(stats.peers >= 2 && stats.msgs_in > 0 && stats.bytes_out > 0, "{stats:?}");
    assert_eq!(stats.published, 1);
    assert_eq!(stats.delivered, 2);

    // A graceful shutdown is seen as a leave, not a failure.
    let c_id = c.id();
    c.shutdown();
    assert!(matches!(c.publish(topic, "late"), Err(Error::Closed)));
    let saw_left = |sub: &Subscription| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match sub.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Item::Presence(p))
                    if p.peer == c_id
                        && p.change == PresenceChange::Offline(OfflineReason::Left) =>
                {
                    return true
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    };
    assert!(saw_left(&subs[0]), "a did not see c leave");
    assert!(saw_left(&subs[1]), "b did not see c leave");
    // c's subscription ends.
    assert_eq!(
        subs[2].recv_timeout(Duration::from_secs(5)).err(),
        Some(RecvError::Closed)
    );
}
