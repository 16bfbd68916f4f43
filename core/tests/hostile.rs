//! Hostile peers against a real node over QUIC on loopback (ports 0).
//!
//! Each attack test builds a small honest scene — a victim node, an honest publisher and
//! an honest subscriber that joined through the victim, all on one topic — and an
//! attacker made of the project's own transport and wire code ([`Endpoint`],
//! [`encode_frame`], signed envelopes). While the attacker works, the publisher
//! publishes; every test asserts that
//! - the victim stays up and answers,
//! - honest delivery is 100% (at the victim and at the subscriber),
//! - the victim's tables stay within their configured bounds,
//! - the attacker is cut off (disconnected, counted by reason) and refused when it comes
//!   back during the back-off.
//!
//! Every wait is a bounded poll that fails with what was missing.
#![cfg(feature = "net")]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use starling_core::admission::{Credential, PeerLimits, PrivateNetwork};
use starling_core::identity::{Keypair, PeerId};
use starling_core::net::{
    Connection, Endpoint, StreamClass, TransportError, TransportOptions, CODE_BANNED,
    CODE_FRAME_TOO_LARGE, CODE_NOT_ADMITTED, CODE_REFUSED,
};
use starling_core::node::{Builder, Error, Item, Node, RecvError, Stats, Subscription};

#[path = "support/wait.rs"]
mod wait;
use starling_core::wire::{
    encode_frame, Broadcast, DiscoveryMsg, GossipMsg, IHave, Limits, MembershipMsg, Message,
    MessageId, PeerInfo, PresenceRecord, PresenceStatus, SignedMessage, TopicId, TopicMsg,
};
use wait::wait_until;

const NET: &str = "hostile-tests";
/// Honest messages published during each attack.
const HONEST: usize = 20;

fn key(n: u32) -> Keypair {
    let mut seed = [9u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    Keypair::from_seed(seed)
}

/// Low limits so that a test can exceed them tenfold in a fraction of a second (the
/// victim's; see [`Scene::with`]).
fn limits() -> PeerLimits {
    PeerLimits {
        frames_per_sec: 2_000.0,
        messages_per_sec: 200.0,
        ihave_per_sec: 2_000.0,
        graft_per_sec: 200.0,
        burst: Duration::from_secs(1),
        ban_duration: Duration::from_secs(60),
        ..PeerLimits::default()
    }
}

fn builder(n: u32) -> Builder {
    Node::builder()
        .bind("127.0.0.1:0")
        .network_id(NET)
        .identity(key(n))
        .worker_threads(1)
        .peer_limits(limits())
        .transport(TransportOptions {
            dial_timeout: Duration::from_secs(2),
            ..TransportOptions::default()
        })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unix_secs() -> u64 {
    now_ms() / 1000
}

/// Reads `sub` until the payloads in `want` from `author` all arrived (others are
/// collected too and returned), failing with what is missing after `limit`.
fn collect_from(
    sub: &Subscription,
    author: PeerId,
    want: &BTreeSet<Vec<u8>>,
    limit: Duration,
    label: &str,
) -> Vec<(PeerId, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    let mut got = BTreeSet::new();
    let mut all = Vec::new();
    while !want.is_subset(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let missing: Vec<_> = want.difference(&got).collect();
            panic!(
                "{label}: {} of {} honest messages missing: {missing:?}",
                missing.len(),
                want.len()
            );
        }
        match sub.recv_timeout(left) {
            Ok(Item::Message(m)) => {
                if m.author == author {
                    assert!(
                        got.insert(m.payload.to_vec()),
                        "{label}: duplicate delivery"
                    );
                }
                all.push((m.author, m.payload.to_vec()));
            }
            Ok(Item::Presence(_)) => {}
            Ok(Item::Lagged(n)) => panic!("{label}: subscription lagged by {n}"),
            Err(RecvError::Empty) => {}
            Err(RecvError::Closed) => panic!("{label}: subscription closed"),
        }
    }
    all
}

fn count(map: &std::collections::BTreeMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

/// The honest side: victim, publisher and subscriber on one topic.
struct Scene {
    topic: TopicId,
    victim: Node,
    victim_sub: Subscription,
    publisher: Node,
    _publisher_sub: Subscription,
    subscriber: Node,
    subscriber_sub: Subscription,
}

impl Scene {
    fn new(base: u32, topic: &str) -> Scene {
        Self::with(base, topic, |b| b)
    }

    /// A scene whose victim's builder is adjusted by `tweak`.
    fn with(base: u32, topic: &str, tweak: impl FnOnce(Builder) -> Builder) -> Scene {
        let topic = TopicId::from_name(topic);
        let victim = tweak(builder(base)).start().expect("victim starts");
        let victim_sub = victim.subscribe(topic).unwrap();
        // The honest peers keep the default limits: the victim forwards what it accepted
        // (up to its own limit) and must not look like a flooder to them.
        let publisher = builder(base + 1)
            .peer_limits(PeerLimits::default())
            .bootstrap(victim.contact())
            .start()
            .unwrap();
        let publisher_sub = publisher.subscribe(topic).unwrap();
        let subscriber = builder(base + 2)
            .peer_limits(PeerLimits::default())
            .bootstrap(victim.contact())
            .start()
            .unwrap();
        let subscriber_sub = subscriber.subscribe(topic).unwrap();
        let scene = Scene {
            topic,
            victim,
            victim_sub,
            publisher,
            _publisher_sub: publisher_sub,
            subscriber,
            subscriber_sub,
        };
        let tree = |n: &Node| {
            let (e, l) = n.topic_tree(topic).unwrap();
            e.into_iter().chain(l).collect::<BTreeSet<_>>()
        };
        let want: BTreeSet<PeerId> = [scene.publisher.id(), scene.subscriber.id()].into();
        wait_until(
            Duration::from_secs(15),
            || {
                format!(
                    "topic overlay not formed: victim {:?}, publisher {:?}, subscriber {:?}",
                    tree(&scene.victim),
                    tree(&scene.publisher),
                    tree(&scene.subscriber)
                )
            },
            || {
                want.is_subset(&tree(&scene.victim))
                    && !tree(&scene.publisher).is_empty()
                    && !tree(&scene.subscriber).is_empty()
            },
        );
        scene
    }

    /// Publishes [`HONEST`] messages from a thread (one every 25 ms) while `attack` runs,
    /// then checks that the victim and the subscriber got every one exactly once.
    fn honest_traffic_during<T>(&self, label: &str, attack: impl FnOnce() -> T) -> T {
        let payloads: BTreeSet<Vec<u8>> = (0..HONEST)
            .map(|i| format!("{label} honest {i}").into_bytes())
            .collect();
        let out = std::thread::scope(|s| {
            let publisher = &self.publisher;
            let topic = self.topic;
            let list: Vec<Vec<u8>> = payloads.iter().cloned().collect();
            let h = s.spawn(move || {
                for p in list {
                    publisher.publish(topic, p).expect("honest publish");
                    std::thread::sleep(Duration::from_millis(25));
                }
            });
            let out = attack();
            h.join().expect("publisher thread");
            out
        });
        let author = self.publisher.id();
        let limit = Duration::from_secs(15);
        let at_victim = collect_from(&self.victim_sub, author, &payloads, limit, "victim");
        collect_from(&self.subscriber_sub, author, &payloads, limit, "subscriber");
        // Nothing forged or tampered was delivered: every delivery verifies as its author.
        for (a, p) in &at_victim {
            assert!(
                *a == author || p.starts_with(b"attacker"),
                "unexpected delivery at the victim from {a:?}: {p:?}"
            );
        }
        out
    }

    fn stats(&self) -> Stats {
        self.victim.stats().expect("the victim answers")
    }

    /// Every bounded table of the victim within its configured bound.
    fn assert_bounded(&self) {
        let s = self.stats();
        let t = &s.tables;
        let p = starling_core::proto::Config::default();
        assert!(t.cache_bytes <= p.plumtree.cache_max_bytes, "{t:?}");
        assert!(t.cache_entries <= p.plumtree.cache_max_count, "{t:?}");
        assert!(t.seen_ids <= p.plumtree.seen_max_count, "{t:?}");
        assert!(
            t.missing_ids <= starling_core::proto::plumtree::MAX_MISSING_IDS,
            "{t:?}"
        );
        assert!(t.presence_records <= p.presence.max_records, "{t:?}");
        assert!(t.hint_topics <= p.discovery.max_hint_topics, "{t:?}");
        assert!(s.topics <= p.max_topics, "{s:?}");
        assert!(s.address_book <= 4096, "{s:?}");
        assert!(s.peers <= 512, "{s:?}");
    }
}

/// A peer built on the project's own transport and wire code, doing what it likes.
struct Attacker {
    endpoint: Endpoint,
    key: Keypair,
    rt: tokio::runtime::Runtime,
}

impl Attacker {
    fn new(n: u32) -> Attacker {
        Self::with(n, Limits::default(), None)
    }

    /// `limits` sizes the frames it may send; `private`: it shows this credential.
    fn with(n: u32, limits: Limits, private: Option<PrivateNetwork>) -> Attacker {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let key = key(n);
        let endpoint = {
            let _g = rt.enter();
            Endpoint::bind_private(
                "127.0.0.1:0".parse().unwrap(),
                &key,
                NET,
                limits,
                TransportOptions {
                    dial_timeout: Duration::from_secs(3),
                    ..TransportOptions::default()
                },
                private,
            )
            .unwrap()
        };
        Attacker { endpoint, key, rt }
    }

    fn id(&self) -> PeerId {
        self.key.peer_id()
    }

    fn connect(&self, node: &Node) -> Result<Connection, TransportError> {
        let addr: SocketAddr = node.bound_addr();
        self.rt
            .block_on(self.endpoint.connect(addr, Some(node.id())))
    }

    fn send(&self, conn: &Connection, frames: &[Vec<u8>]) -> Result<(), TransportError> {
        self.rt.block_on(conn.send_many(StreamClass::Data, frames))
    }

    fn send_control(&self, conn: &Connection, frames: &[Vec<u8>]) -> Result<(), TransportError> {
        self.rt
            .block_on(conn.send_many(StreamClass::Control, frames))
    }

    /// Waits for the connection to end; the application close code the peer gave, if any.
    fn closed_code(&self, conn: &Connection, limit: Duration) -> Option<u64> {
        let ended = self
            .rt
            .block_on(async { tokio::time::timeout(limit, conn.closed()).await });
        match ended {
            Ok(TransportError::ClosedByPeer { code, .. }) => Some(code),
            Ok(other) => panic!("connection ended without a peer close code: {other}"),
            Err(_) => None,
        }
    }

    /// A message signed by this attacker (valid), with `issued_ms`.
    fn message(&self, topic: TopicId, seq: u64, issued_ms: u64, payload: &str) -> SignedMessage {
        SignedMessage::new(
            &self.key,
            topic,
            seq,
            issued_ms,
            Bytes::from(payload.as_bytes().to_vec()),
        )
    }

    /// The victim's cut-off must be visible from both sides: counted with `reason`, the
    /// connection closed (with one of `codes`), and a reconnect refused as banned.
    fn assert_cut_off(&self, scene: &Scene, conn: &Connection, reason: &str, codes: &[u32]) {
        wait_until(
            Duration::from_secs(10),
            || format!("attacker not cut off for {reason}: {:?}", scene.stats()),
            || count(&scene.stats().cut_off, reason) >= 1,
        );
        let code = self.closed_code(conn, Duration::from_secs(10));
        assert!(
            code.is_some_and(|c| codes.iter().any(|x| u64::from(*x) == c)),
            "attacker's connection ended with code {code:?}, expected one of {codes:?}"
        );
        assert!(scene.stats().banned >= 1);
        self.assert_refused_on_reconnect(&scene.victim);
    }

    fn assert_refused_on_reconnect(&self, victim: &Node) {
        let before = count(&victim.stats().unwrap().refused, "banned");
        match self.connect(victim) {
            Ok(conn) => {
                let code = self.closed_code(&conn, Duration::from_secs(10));
                assert_eq!(code, Some(u64::from(CODE_BANNED)), "reconnect not refused");
            }
            Err(e) => panic!("reconnect should complete the handshake, then be closed: {e}"),
        }
        wait_until(
            Duration::from_secs(5),
            || "the refusal of a banned peer was not counted".into(),
            || count(&victim.stats().unwrap().refused, "banned") > before,
        );
    }
}

fn gossip(topic: TopicId, content: Broadcast) -> Vec<u8> {
    encode_frame(&Message::Topic {
        topic,
        msg: TopicMsg::Gossip(GossipMsg::Gossip { hops: 0, content }),
    })
}

fn random_id(rng: &mut impl rand::Rng) -> MessageId {
    MessageId(rng.gen())
}

// ---------------------------------------------------------------------------------------
// Malformed input

#[test]
fn garbage_cbor_is_cut_off() {
    let scene = Scene::new(100, "garbage");
    let attacker = Attacker::new(190);
    let conn = attacker.connect(&scene.victim).unwrap();
    scene.honest_traffic_during("garbage", || {
        let frames = vec![vec![1u8, 0xff, 0x13, 0x37, 0x00, 0xbf]];
        // The connection may be closed before the send completes; either is fine.
        let _ = attacker.send(&conn, &frames);
    });
    attacker.assert_cut_off(&scene, &conn, "bad_frame", &[2, CODE_BANNED]);
    assert!(count(&scene.stats().drops, "bad_frame") >= 1);
    scene.assert_bounded();
}

#[test]
fn oversized_frame_is_refused_before_allocation_and_cut_off() {
    let scene = Scene::new(110, "oversized");
    let big = Limits {
        max_payload_bytes: 4 << 20,
        ..Limits::default()
    };
    let attacker = Attacker::with(191, big, None);
    let conn = attacker.connect(&scene.victim).unwrap();
    let max = Limits::default().max_frame_bytes();
    scene.honest_traffic_during("oversized", || {
        let _ = attacker.send(&conn, &[vec![0u8; max + 1]]);
    });
    attacker.assert_cut_off(
        &scene,
        &conn,
        "oversized_frame",
        &[CODE_FRAME_TOO_LARGE, CODE_BANNED],
    );
    scene.assert_bounded();
}

// ---------------------------------------------------------------------------------------
// Forgery

#[test]
fn forged_author_is_refused_and_cut_off() {
    let scene = Scene::new(120, "forged");
    let attacker = Attacker::new(192);
    let conn = attacker.connect(&scene.victim).unwrap();
    // Signed by the attacker, claiming to be the honest publisher, with a sequence number
    // above the publisher's (an old one is refused as a replay before the signature is
    // even checked).
    let mut m = attacker.message(scene.topic, u64::MAX / 2, now_ms(), "attacker forged");
    m.author = scene.publisher.id();
    scene.honest_traffic_during("forged", || {
        let _ = attacker.send(&conn, &[gossip(scene.topic, Broadcast::Message(m))]);
    });
    attacker.assert_cut_off(&scene, &conn, "bad_signature", &[CODE_BANNED]);
    assert!(count(&scene.stats().drops, "rejected_BadSignature") >= 1);
    scene.assert_bounded();
}

#[test]
fn tampered_payload_is_refused_and_cut_off() {
    let scene = Scene::new(130, "tampered");
    let attacker = Attacker::new(193);
    let conn = attacker.connect(&scene.victim).unwrap();
    let mut m = attacker.message(scene.topic, 1, now_ms(), "attacker original");
    m.payload = Bytes::from_static(b"attacker tampered");
    scene.honest_traffic_during("tampered", || {
        let _ = attacker.send(&conn, &[gossip(scene.topic, Broadcast::Message(m))]);
    });
    attacker.assert_cut_off(&scene, &conn, "bad_signature", &[CODE_BANNED]);
    scene.assert_bounded();
}

// ---------------------------------------------------------------------------------------
// Replay and time

#[test]
fn replays_are_delivered_once_and_a_reused_seq_is_refused() {
    let scene = Scene::new(140, "replay");
    let attacker = Attacker::new(194);
    let conn = attacker.connect(&scene.victim).unwrap();
    let m = attacker.message(scene.topic, 1000, now_ms(), "attacker once");
    let frame = gossip(scene.topic, Broadcast::Message(m));
    // Same seq, other payload: a different id, but a replayed sequence number.
    let reused = attacker.message(scene.topic, 1000, now_ms(), "attacker reused seq");
    scene.honest_traffic_during("replay", || {
        attacker.send(&conn, &vec![frame.clone(); 50]).unwrap();
    });
    // Sent after the first copy was delivered: a replay of its sequence number.
    attacker
        .send(&conn, &[gossip(scene.topic, Broadcast::Message(reused))])
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        || format!("reused seq not refused: {:?}", scene.stats().drops),
        || count(&scene.stats().drops, "rejected_Replay") >= 1,
    );
    // The victim delivered the attacker's message once, and never the reused seq.
    let mut copies = 0;
    while let Ok(item) = scene.victim_sub.try_recv() {
        if let Item::Message(m) = item {
            assert_ne!(&m.payload[..], b"attacker reused seq");
            if m.author == attacker.id() {
                copies += 1;
            }
        }
    }
    // `honest_traffic_during` already drained what arrived before the honest set was
    // complete; count both.
    let delivered_from_attacker = scene.stats().delivered - HONEST as u64;
    assert_eq!(
        delivered_from_attacker, 1,
        "the attacker's message was delivered {delivered_from_attacker} times ({copies} after the honest set)"
    );
    // A resend is not a violation: the attacker is not cut off for 50 copies.
    assert!(scene.stats().cut_off.is_empty(), "{:?}", scene.stats());
    scene.assert_bounded();
}

#[test]
fn future_dated_message_and_presence_are_refused_and_freeze_nothing() {
    let scene = Scene::new(150, "future");
    let attacker = Attacker::new(195);
    let conn = attacker.connect(&scene.victim).unwrap();
    let hour = 3_600_000;
    let topic = scene.topic;
    // A message from an hour ahead with a huge seq, then an honest-dated one with a lower
    // seq: had the first been taken, the second would be refused as a replay.
    let future = attacker.message(topic, 5_000_000, now_ms() + hour, "attacker future");
    let present = attacker.message(topic, 10, now_ms(), "attacker present");
    let rec = |seq, issued| {
        PresenceRecord::new(
            &attacker.key,
            topic,
            seq,
            issued,
            60_000,
            PresenceStatus::Online,
            Bytes::from_static(b"attacker"),
        )
    };
    scene.honest_traffic_during("future", || {
        attacker
            .send(
                &conn,
                &[
                    gossip(topic, Broadcast::Message(future)),
                    gossip(topic, Broadcast::Presence(rec(u64::MAX, now_ms() + hour))),
                ],
            )
            .unwrap();
        wait_until(
            Duration::from_secs(10),
            || format!("future-dated not refused: {:?}", scene.stats().drops),
            || count(&scene.stats().drops, "rejected_FutureDated") >= 2,
        );
        attacker
            .send(
                &conn,
                &[
                    gossip(topic, Broadcast::Message(present)),
                    gossip(topic, Broadcast::Presence(rec(1, now_ms()))),
                ],
            )
            .unwrap();
    });
    // The present-dated record was taken: nothing was frozen by the future one.
    wait_until(
        Duration::from_secs(10),
        || "the present-dated presence record was not applied".into(),
        || {
            scene
                .victim
                .online(topic)
                .unwrap()
                .iter()
                .any(|e| e.peer == attacker.id())
        },
    );
    wait_until(
        Duration::from_secs(10),
        || "the present-dated message was not delivered".into(),
        || scene.stats().delivered > HONEST as u64,
    );
    // A skewed clock is not a violation: no ban.
    assert!(scene.stats().cut_off.is_empty(), "{:?}", scene.stats());
    scene.assert_bounded();
}

// ---------------------------------------------------------------------------------------
// Floods

#[test]
fn ihave_flood_for_unknown_ids_is_bounded_and_cut_off() {
    let scene = Scene::new(160, "ihave");
    let attacker = Attacker::new(196);
    let conn = attacker.connect(&scene.victim).unwrap();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(8);
    let topic = scene.topic;
    scene.honest_traffic_during("ihave", || {
        // 10 frames of 1,024 unknown ids: 10,240 entries against a 2,000/s budget.
        for _ in 0..10 {
            let entries: Vec<IHave> = (0..1024)
                .map(|_| IHave {
                    id: random_id(&mut rng),
                    hops: 0,
                })
                .collect();
            let f = encode_frame(&Message::Topic {
                topic,
                msg: TopicMsg::Gossip(GossipMsg::IHave(entries)),
            });
            if attacker.send(&conn, &[f]).is_err() {
                break;
            }
        }
    });
    attacker.assert_cut_off(&scene, &conn, "ihave_rate", &[CODE_BANNED]);
    scene.assert_bounded();
}

#[test]
fn graft_storm_is_cut_off() {
    let scene = Scene::new(170, "graft");
    let attacker = Attacker::new(197);
    let conn = attacker.connect(&scene.victim).unwrap();
    let topic = scene.topic;
    // A real message, so the grafts would each cost the victim a payload.
    let m = attacker.message(topic, 1, now_ms(), "attacker graft bait");
    let id = m.id();
    attacker
        .send(&conn, &[gossip(topic, Broadcast::Message(m))])
        .unwrap();
    scene.honest_traffic_during("graft", || {
        let f = encode_frame(&Message::Topic {
            topic,
            msg: TopicMsg::Gossip(GossipMsg::Graft(vec![id; 100])),
        });
        for _ in 0..50 {
            if attacker.send(&conn, std::slice::from_ref(&f)).is_err() {
                break;
            }
        }
    });
    attacker.assert_cut_off(&scene, &conn, "graft_rate", &[CODE_BANNED]);
    scene.assert_bounded();
}

#[test]
fn thousands_of_topics_leave_the_tables_bounded() {
    let scene = Scene::new(180, "topics");
    let attacker = Attacker::new(198);
    let conn = attacker.connect(&scene.victim).unwrap();
    let me = PeerInfo::bare(attacker.id());
    let topics: Vec<TopicId> = (0..5000)
        .map(|i| TopicId::from_name(&format!("spam {i}")))
        .collect();
    scene.honest_traffic_during("topics", || {
        // 5,000 topic joins, topic lists and discovery answers, 1,000 frames per second:
        // within the frame rate, so this tests the tables, not the rate limit.
        for chunk in topics.chunks(100) {
            let mut frames = Vec::new();
            for t in chunk {
                frames.push(encode_frame(&Message::Topic {
                    topic: *t,
                    msg: TopicMsg::Membership(MembershipMsg::Join(me.clone())),
                }));
                frames.push(encode_frame(&Message::Discovery(
                    DiscoveryMsg::TopicPeers {
                        topic: *t,
                        peers: vec![PeerInfo::bare(key(7000).peer_id())],
                        recent: vec![],
                    },
                )));
            }
            frames.push(encode_frame(&Message::Discovery(DiscoveryMsg::Topics(
                chunk.to_vec(),
            ))));
            attacker.send_control(&conn, &frames).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let s = scene.stats();
    // The victim joined none of them and remembers hints for at most max_hint_topics.
    assert_eq!(s.topics, 1, "{s:?}");
    scene.assert_bounded();
}

#[test]
fn presence_records_from_thousands_of_authors_stay_bounded() {
    let max_records = 500;
    let scene = Scene::with(220, "presence", |b| {
        let mut p = starling_core::proto::Config::default();
        p.presence.max_records = max_records;
        // Within the victim's rate: this tests the table bound, not the rate limit.
        // (Grafts too: the victim announces what it passes on, and honest neighbours graft
        // it.)
        b.protocol(p).peer_limits(PeerLimits {
            messages_per_sec: 10_000.0,
            graft_per_sec: 10_000.0,
            ..limits()
        })
    });
    let attacker = Attacker::new(221);
    let conn = attacker.connect(&scene.victim).unwrap();
    let topic = scene.topic;
    // 800 Sybil authors, each with a valid, signed online record, in snapshot parts (fewer
    // than the subscriber's queue of 1,024 items holds: the victim passes records on, and
    // presence changes share the application's queue with messages).
    let records: Vec<PresenceRecord> = (0..800u32)
        .map(|i| {
            PresenceRecord::new(
                &key(100_000 + i),
                topic,
                1,
                now_ms(),
                60_000,
                PresenceStatus::Online,
                Bytes::from_static(b"sybil"),
            )
        })
        .collect();
    scene.honest_traffic_during("presence", || {
        for part in records.chunks(32) {
            let f = encode_frame(&Message::Topic {
                topic,
                msg: TopicMsg::PresenceSnapshot(part.to_vec()),
            });
            attacker.send(&conn, &[f]).unwrap();
        }
    });
    wait_until(
        Duration::from_secs(10),
        || format!("table not filled: {:?}", scene.stats().tables),
        || scene.stats().tables.presence_records >= max_records,
    );
    let s = scene.stats();
    assert_eq!(s.tables.presence_records, max_records, "{s:?}");
    assert!(scene.victim.online(topic).unwrap().len() <= max_records);
    assert!(
        s.cut_off.is_empty(),
        "valid records are no violation: {s:?}"
    );
    scene.assert_bounded();
}

#[test]
fn message_flood_at_ten_times_the_rate_limit() {
    let scene = Scene::new(200, "flood");
    let attacker = Attacker::new(199);
    let topic = scene.topic;
    let rss_before = rss_kib();
    let rate = limits().messages_per_sec as u64;
    let mut seq = 1u64;
    let mut sent = 0u64;
    let mut conn = attacker.connect(&scene.victim).unwrap();
    let first = conn.clone();
    scene.honest_traffic_during("flood", || {
        // 10× the limit for 3 s in 100 ms slices of valid, signed, distinct messages;
        // when cut off, keep knocking (refused during the back-off).
        let start = Instant::now();
        for slice in 0..30 {
            let frames: Vec<Vec<u8>> = (0..rate)
                .map(|_| {
                    seq += 1;
                    let m = attacker.message(topic, seq, now_ms(), "attacker flood");
                    gossip(topic, Broadcast::Message(m))
                })
                .collect();
            if attacker.send(&conn, &frames).is_ok() {
                sent += frames.len() as u64;
            } else if let Ok(c) = attacker.connect(&scene.victim) {
                conn = c;
            }
            let next = start + Duration::from_millis(100 * (slice + 1));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    attacker.assert_cut_off(&scene, &first, "message_rate", &[CODE_BANNED]);
    let s = scene.stats();
    let rss_after = rss_kib();
    println!(
        "flood: attacker offered {} messages over 3 s at 10x the {rate}/s limit ({sent} \
         accepted by its QUIC streams); honest delivery {HONEST}/{HONEST} at victim and \
         subscriber; victim delivered {} attacker messages (its burst) before cutting it \
         off, dropped {} queued frames of it, refused {} reconnects; process RSS \
         {rss_before} KiB -> {rss_after} KiB (+{} KiB, 3 nodes + attacker)",
        30 * rate,
        s.delivered - HONEST as u64,
        count(&s.drops, "from_banned_peer"),
        count(&s.refused, "banned"),
        rss_after.saturating_sub(rss_before)
    );
    // About the burst (1 s at the rate, plus the refill until the cut-off) got through.
    assert!(s.delivered - HONEST as u64 <= 2 * rate, "{s:?}");
    scene.assert_bounded();
}

#[test]
fn sybil_connections_beyond_the_limit_are_refused() {
    // Room for the publisher, the subscriber and two more.
    let scene = Scene::with(210, "sybil", |b| {
        let mut c = b.config_ref().clone();
        c.max_connections = 4;
        b.config(c)
    });
    let sybils: Vec<Attacker> = (0..8).map(|i| Attacker::new(260 + i)).collect();
    let conns = scene.honest_traffic_during("sybil", || {
        sybils
            .iter()
            .filter_map(|a| a.connect(&scene.victim).ok().map(|c| (a, c)))
            .collect::<Vec<_>>()
    });
    // Every sybil beyond the limit was closed at once; the others hold a slot each.
    let mut closed = 0;
    for (a, c) in &conns {
        if a.closed_code(c, Duration::from_millis(300)).is_some() {
            closed += 1;
        }
    }
    let s = scene.stats();
    assert!(s.peers <= 4, "{s:?}");
    assert!(count(&s.refused, "connection_limit") >= 6, "{s:?}");
    assert!(closed >= 6, "only {closed} sybil connections were closed");
    scene.assert_bounded();
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Admission

#[test]
fn private_network_refuses_peers_without_a_valid_credential() {
    let authority = key(900);
    let other_authority = key(901);
    let far = unix_secs() + 3600;
    let member = |n: u32| {
        let k = key(n);
        let c = Credential::issue(&authority, k.peer_id(), NET, far);
        builder(n).private_network(authority.peer_id(), c)
    };
    let a = member(910).start().unwrap();
    let b = member(911).bootstrap(a.contact()).start().unwrap();
    let topic = TopicId::from_name("private");
    let sa = a.subscribe(topic).unwrap();
    let _sb = b.subscribe(topic).unwrap();
    wait_until(
        Duration::from_secs(15),
        || "members did not become topic neighbours".into(),
        || !a.topic_tree(topic).unwrap().0.is_empty() || !a.topic_tree(topic).unwrap().1.is_empty(),
    );
    b.publish(topic, b"member message".to_vec()).unwrap();
    let want: BTreeSet<Vec<u8>> = [b"member message".to_vec()].into();
    collect_from(&sa, b.id(), &want, Duration::from_secs(10), "member");

    // Outsiders, each with a different defect. They trust the real authority, so it is
    // the member that refuses them.
    let x = key(920).peer_id();
    let cases: Vec<(&str, Credential)> = vec![
        (
            "credential_expired",
            Credential::issue(&authority, x, NET, unix_secs().saturating_sub(10)),
        ),
        (
            "credential_wrong_authority",
            Credential::issue(&other_authority, x, NET, far),
        ),
        (
            "credential_wrong_network",
            Credential::issue(&authority, x, "another-net", far),
        ),
        // A member's credential shown by someone else.
        (
            "credential_wrong_peer",
            Credential::issue(&authority, b.id(), NET, far),
        ),
    ];
    for (reason, credential) in cases {
        let outsider = Attacker::with(
            920,
            Limits::default(),
            Some(PrivateNetwork {
                authority: authority.peer_id(),
                credential,
            }),
        );
        match outsider.connect(&a) {
            Err(TransportError::ClosedByPeer { code, .. }) => {
                assert_eq!(code, u64::from(CODE_NOT_ADMITTED), "{reason}")
            }
            Err(other) => panic!("{reason}: unexpected error {other}"),
            Ok(conn) => assert_eq!(
                outsider.closed_code(&conn, Duration::from_secs(10)),
                Some(u64::from(CODE_NOT_ADMITTED)),
                "{reason}"
            ),
        }
        wait_until(
            Duration::from_secs(10),
            || format!("{reason} not counted: {:?}", a.stats().unwrap().refused),
            || count(&a.stats().unwrap().refused, reason) >= 1,
        );
    }
    // No credential at all (an open-network node): refused after the wait.
    let open = Attacker::new(921);
    let conn = open.connect(&a).expect("the open side does not wait");
    assert_eq!(
        open.closed_code(&conn, Duration::from_secs(10)),
        Some(u64::from(CODE_NOT_ADMITTED))
    );
    assert!(count(&a.stats().unwrap().refused, "credential_missing") >= 1);
    // One that speaks first instead (a frame on its first stream, no credential): that
    // counts as no credential at once, long before the 5 s wait would end.
    let eager = Attacker::new(922);
    let conn = eager.connect(&a).expect("the open side does not wait");
    let join = encode_frame(&Message::Topic {
        topic,
        msg: TopicMsg::Membership(MembershipMsg::Join(PeerInfo::bare(eager.id()))),
    });
    eager.send_control(&conn, &[join]).expect("sent");
    assert_eq!(
        eager.closed_code(&conn, Duration::from_secs(3)),
        Some(u64::from(CODE_NOT_ADMITTED))
    );
    // Counted once the node's accept path has reported it (after the close is sent).
    wait_until(
        Duration::from_secs(10),
        || {
            format!(
                "second credential_missing not counted: {:?}",
                a.stats().unwrap().refused
            )
        },
        || count(&a.stats().unwrap().refused, "credential_missing") >= 2,
    );
    // The members kept their link throughout.
    assert!(a.stats().unwrap().peers >= 1);

    // A node cannot start with a credential its peers would refuse.
    let expired = Credential::issue(&authority, key(930).peer_id(), NET, 1);
    let err = builder(930)
        .private_network(authority.peer_id(), expired)
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn admission_hook_refuses_inbound_and_outbound() {
    let denied = key(951).peer_id();
    let a = builder(950)
        .admission(move |p| *p != denied)
        .start()
        .unwrap();
    let events = a.events().unwrap();
    // Inbound: the handshake completes (the key must be proven first), then it is closed.
    let outsider = Attacker::new(951);
    let conn = outsider.connect(&a).unwrap();
    assert_eq!(
        outsider.closed_code(&conn, Duration::from_secs(10)),
        Some(u64::from(CODE_REFUSED))
    );
    // Outbound: the node does not even dial it.
    a.join([format!(
        "{}@{}",
        denied,
        outsider.endpoint.local_addr().unwrap()
    )])
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no DialFailed for the refused peer");
        if let Ok(starling_core::node::NetEvent::DialFailed { peer, reason, .. }) =
            events.recv_timeout(left)
        {
            assert_eq!(peer, Some(denied));
            assert!(reason.contains("admission_hook"), "{reason}");
            break;
        }
    }
    assert!(count(&a.stats().unwrap().refused, "admission_hook") >= 2);
    // Everyone else is admitted.
    let b = builder(952).bootstrap(a.contact()).start().unwrap();
    wait_until(
        Duration::from_secs(10),
        || "an allowed peer did not become a neighbour".into(),
        || a.stats().unwrap().neighbors >= 1 && b.stats().unwrap().neighbors >= 1,
    );
}

#[test]
fn pending_dials_are_bounded() {
    let l = PeerLimits {
        max_pending_dials: 1,
        ..limits()
    };
    let a = builder(230).peer_limits(l).start().unwrap();
    let events = a.events().unwrap();
    // Sockets that never answer: each dial waits out the handshake timeout.
    let silent: Vec<std::net::UdpSocket> = (0..4)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let targets: Vec<String> = silent
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "{}@{}",
                key(231 + i as u32).peer_id(),
                s.local_addr().unwrap()
            )
        })
        .collect();
    a.join(&targets).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut limited = 0;
    while limited < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {limited} dials refused by the pending-dial limit"
        );
        if let Ok(starling_core::node::NetEvent::DialFailed { reason, .. }) =
            events.recv_timeout(left)
        {
            if reason.contains("too many pending dials") {
                limited += 1;
            }
        }
    }
    assert!(count(&a.stats().unwrap().drops, "dial_limit") >= 3);
}
