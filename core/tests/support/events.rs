//! Arbitrary event sequences for the protocol state machine ([`State`]), built from raw
//! bytes, with the invariants checked after every event.
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/state.rs` (bytes from libFuzzer) and the
//! property test in `core/tests/properties.rs` (bytes from proptest); both include this
//! file with `#[path]`, so it depends on nothing but `starling_core` and `bytes`.
//!
//! Peers, topics and message ids come from small pools so that events hit the same state
//! often (a random 32-byte id would almost never name anything the node knows).
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use starling_core::identity::{Keypair, PeerId, Signature};
use starling_core::proto::{Config, Failure, State, Time, Verify};
use starling_core::wire::{
    decode_frame, signing_input, Broadcast, DiscoveryMsg, GoneNotice, GossipMsg, IHave,
    MembershipMsg, Message, MessageId, PeerInfo, PresenceRecord, PresenceStatus, SignedMessage,
    SwimMsg, TopicId, TopicMsg,
};

/// Remote peers the node hears from (index 0..PEERS), plus the node itself at PEERS.
pub const PEERS: usize = 12;
const TOPICS: usize = 5;
/// Start of the clock: a realistic wall-clock value (2023-11-14).
const EPOCH_MS: u64 = 1_700_000_000_000;

/// A reader that never fails: past the end it yields zeros, so every input is a valid
/// (possibly short) scenario.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// Reads scenario choices from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        b.iter_mut().for_each(|x| *x = self.u8());
        u64::from_le_bytes(b)
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n.max(1)
    }
    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = self.below(max + 1);
        let start = self.pos.min(self.data.len());
        let end = (start + len).min(self.data.len());
        self.pos = start + len;
        &self.data[start..end]
    }
}

/// The fixed identities (deriving a key costs a scalar multiplication: do it once).
fn keys() -> &'static [Keypair] {
    static KEYS: OnceLock<Vec<Keypair>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..=PEERS)
            .map(|i| Keypair::from_seed([i as u8 + 1; 32]))
            .collect()
    })
}

/// A signature checker that costs nothing: a "signature" is the id followed by the
/// signer. The fuzz target uses it so executions go to the state machine rather than to
/// Ed25519 (which the `envelope` target covers); the harness can still make both valid and
/// invalid broadcasts.
pub struct CheapVerify;

impl Verify for CheapVerify {
    fn verify(&mut self, id: &MessageId, content: &Broadcast) -> bool {
        let sig = &content.sig().0;
        sig[..32] == id.0 && sig[32..] == content.signer().as_bytes()[..]
    }
}

/// How broadcasts are signed in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    /// Real Ed25519 (the node's default checker).
    Ed25519,
    /// [`CheapVerify`]'s scheme.
    Cheap,
}

/// One node under test and the world around it.
pub struct Harness {
    state: State,
    now: Time,
    signing: Signing,
    topics: Vec<TopicId>,
    /// Ids the node may know (broadcasts it was sent or published), for IHAVE/GRAFT.
    ids: Vec<MessageId>,
    /// Events drained so far.
    pub events: u64,
    /// Deliveries seen.
    pub deliveries: u64,
}

impl Harness {
    /// A fresh node (identity index `PEERS`) with the default configuration.
    pub fn new(signing: Signing, seed: u64) -> Self {
        let key = keys()[PEERS].clone();
        let mut state = State::new(key, Bytes::from_static(b"self"), Config::default(), seed);
        if signing == Signing::Cheap {
            state.set_verifier(Box::new(CheapVerify));
        }
        Harness {
            state,
            now: Time::from_millis(EPOCH_MS),
            signing,
            topics: (0..TOPICS)
                .map(|i| TopicId::from_name(&format!("topic-{i}")))
                .collect(),
            ids: Vec::new(),
            events: 0,
            deliveries: 0,
        }
    }

    /// The state machine.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Runs the whole scenario in `data`, checking the invariants after every event.
    pub fn run(&mut self, data: &[u8]) {
        let mut input = Input::new(data);
        let mut steps = 0;
        // Bounded: a scenario of zeros past the end must still stop.
        while !input.is_empty() && steps < 400 {
            self.step(&mut input);
            self.drain();
            self.check();
            steps += 1;
        }
    }

    fn peer(&self, i: usize) -> PeerInfo {
        let id = keys()[i % (PEERS + 1)].peer_id();
        PeerInfo {
            id,
            addr: Bytes::from(format!("127.0.0.1:{}", 4000 + i)),
        }
    }

    fn peer_id(&self, i: usize) -> PeerId {
        keys()[i % (PEERS + 1)].peer_id()
    }

    fn peers(&self, input: &mut Input) -> Vec<PeerInfo> {
        (0..input.below(8))
            .map(|_| self.peer(input.below(PEERS + 1)))
            .collect()
    }

    fn topic(&self, input: &mut Input) -> TopicId {
        self.topics[input.below(TOPICS)]
    }

    fn id(&self, input: &mut Input) -> MessageId {
        if self.ids.is_empty() || input.below(4) == 0 {
            MessageId([input.u8(); 32])
        } else {
            self.ids[input.below(self.ids.len())]
        }
    }

    /// The signature over `id` in this harness's scheme (records are built unsigned, so
    /// the cheap scheme never pays for an Ed25519 signature it would throw away).
    fn sign(&self, key: &Keypair, id: &MessageId) -> Signature {
        match self.signing {
            Signing::Ed25519 => key.sign(&signing_input(id)),
            Signing::Cheap => {
                let mut s = [0u8; 64];
                s[..32].copy_from_slice(&id.0);
                s[32..].copy_from_slice(key.peer_id().as_bytes());
                Signature(s)
            }
        }
    }

    /// A broadcast by one of the peers: valid, or broken in one of the ways a hostile peer
    /// would try (bad signature, wrong clock).
    fn broadcast(&mut self, input: &mut Input, topic: TopicId) -> Broadcast {
        let author = input.below(PEERS);
        let key = keys()[author].clone();
        // Issued anywhere from an hour before to an hour after now.
        let skew_ms = (i64::from(input.u16() as i16)) * 110;
        let issued = (self.now.as_millis() as i64 + skew_ms).max(0) as u64;
        let seq = u64::from(input.u8()).wrapping_add(if input.bool() { 0 } else { input.u64() });
        let mut b = match input.below(3) {
            0 => {
                let payload = Bytes::copy_from_slice(input.bytes(64));
                let mut m = SignedMessage {
                    topic,
                    author: key.peer_id(),
                    seq,
                    issued_ms: issued,
                    payload,
                    sig: Signature([0; 64]),
                };
                m.sig = self.sign(&key, &m.id());
                Broadcast::Message(m)
            }
            1 => {
                let status = if input.bool() {
                    PresenceStatus::Online
                } else {
                    PresenceStatus::Leaving
                };
                let ttl = u32::from(input.u16()) * 10;
                let meta = Bytes::copy_from_slice(input.bytes(32));
                let mut r = PresenceRecord {
                    topic,
                    author: key.peer_id(),
                    seq,
                    issued_ms: issued,
                    ttl_ms: ttl,
                    status,
                    metadata: meta,
                    sig: Signature([0; 64]),
                };
                r.sig = self.sign(&key, &r.id());
                Broadcast::Presence(r)
            }
            _ => {
                let subject = self.peer_id(input.below(PEERS + 1));
                let mut g = GoneNotice {
                    topic,
                    reporter: key.peer_id(),
                    subject,
                    subject_seq: seq,
                    issued_ms: issued,
                    sig: Signature([0; 64]),
                };
                g.sig = self.sign(&key, &g.id());
                Broadcast::Gone(g)
            }
        };
        if input.below(8) == 0 {
            // Tampered: flip a signature bit.
            let bit = input.below(512);
            match &mut b {
                Broadcast::Message(m) => m.sig.0[bit / 8] ^= 1 << (bit % 8),
                Broadcast::Presence(r) => r.sig.0[bit / 8] ^= 1 << (bit % 8),
                Broadcast::Gone(g) => g.sig.0[bit / 8] ^= 1 << (bit % 8),
            }
        }
        if self.ids.len() < 64 {
            self.ids.push(b.id());
        } else {
            let i = input.below(64);
            self.ids[i] = b.id();
        }
        b
    }

    fn membership(&self, input: &mut Input) -> MembershipMsg {
        match input.below(7) {
            0 => MembershipMsg::Join(self.peer(input.below(PEERS + 1))),
            1 => MembershipMsg::ForwardJoin {
                peer: self.peer(input.below(PEERS + 1)),
                ttl: u16::from(input.u8()),
            },
            2 => MembershipMsg::Neighbor {
                peer: self.peer(input.below(PEERS + 1)),
                high_priority: input.bool(),
            },
            3 => MembershipMsg::NeighborReply {
                accepted: input.bool(),
            },
            4 => MembershipMsg::Disconnect {
                alive: input.bool(),
            },
            5 => MembershipMsg::Shuffle {
                origin: self.peer(input.below(PEERS + 1)),
                ttl: u16::from(input.u8()),
                peers: self.peers(input),
            },
            _ => MembershipMsg::ShuffleReply {
                peers: self.peers(input),
            },
        }
    }

    fn swim(&self, input: &mut Input) -> SwimMsg {
        // Small nonces so acks can match outstanding probes.
        let nonce = u64::from(input.u8());
        match input.below(7) {
            0 => SwimMsg::Ping { nonce },
            1 => SwimMsg::Ack { nonce },
            2 => SwimMsg::PingReq {
                nonce,
                target: self.peer(input.below(PEERS + 1)),
            },
            3 => SwimMsg::IndirectAck { nonce },
            4 => SwimMsg::Nack { nonce },
            5 => SwimMsg::Suspect,
            _ => SwimMsg::Alive,
        }
    }

    fn step(&mut self, input: &mut Input) {
        let from = self.peer_id(input.below(PEERS));
        let now = self.now;
        match input.below(16) {
            // Time passes: anything from nothing to about a minute.
            0 | 1 => {
                let ms = u64::from(input.u16());
                self.now = self.now + Duration::from_millis(ms);
                self.state.handle_timeout(self.now);
            }
            2 => {
                if let Some(t) = self.state.poll_timeout() {
                    // Jump to the next deadline, as the driver does (never backwards).
                    self.now = self.now.max(t);
                }
                self.state.handle_timeout(self.now);
            }
            3 | 4 => {
                let m = self.membership(input);
                self.state.handle_message(from, Message::Membership(m), now);
            }
            5 => {
                let m = self.swim(input);
                self.state.handle_message(from, Message::Swim(m), now);
            }
            6 => {
                let m = match input.below(3) {
                    0 => DiscoveryMsg::Topics(
                        (0..input.below(6)).map(|_| self.topic(input)).collect(),
                    ),
                    1 => DiscoveryMsg::FindTopic {
                        topic: self.topic(input),
                        origin: self.peer(input.below(PEERS + 1)),
                        ttl: u16::from(input.u8()),
                    },
                    _ => DiscoveryMsg::TopicPeers {
                        topic: self.topic(input),
                        peers: self.peers(input),
                        recent: (0..input.below(4)).map(|_| self.id(input)).collect(),
                    },
                };
                self.state.handle_message(from, Message::Discovery(m), now);
            }
            7 => {
                let topic = self.topic(input);
                let m = self.membership(input);
                let msg = Message::Topic {
                    topic,
                    msg: TopicMsg::Membership(m),
                };
                self.state.handle_message(from, msg, now);
            }
            8 | 9 => {
                let topic = self.topic(input);
                // Mostly its own topic; sometimes sent under another one.
                let carried = if input.below(8) == 0 {
                    self.topic(input)
                } else {
                    topic
                };
                let content = self.broadcast(input, topic);
                let msg = Message::Topic {
                    topic: carried,
                    msg: TopicMsg::Gossip(GossipMsg::Gossip {
                        hops: u16::from(input.u8()),
                        content,
                    }),
                };
                self.state.handle_message(from, msg, now);
            }
            10 => {
                let topic = self.topic(input);
                let g = match input.below(3) {
                    0 => GossipMsg::IHave(
                        (0..input.below(8))
                            .map(|_| IHave {
                                id: self.id(input),
                                hops: u16::from(input.u8()),
                            })
                            .collect(),
                    ),
                    1 => GossipMsg::Graft((0..input.below(8)).map(|_| self.id(input)).collect()),
                    _ => GossipMsg::Prune,
                };
                let msg = Message::Topic {
                    topic,
                    msg: TopicMsg::Gossip(g),
                };
                self.state.handle_message(from, msg, now);
            }
            11 => {
                let topic = self.topic(input);
                let records = (0..input.below(4))
                    .filter_map(|_| match self.broadcast(input, topic) {
                        Broadcast::Presence(r) => Some(r),
                        _ => None,
                    })
                    .collect();
                let msg = Message::Topic {
                    topic,
                    msg: TopicMsg::PresenceSnapshot(records),
                };
                self.state.handle_message(from, msg, now);
            }
            12 => {
                let failure = match input.below(3) {
                    0 => Failure::Dead,
                    1 => Failure::Disconnected,
                    _ => Failure::DialFailed,
                };
                self.state.peer_failed(from, failure, now);
            }
            13 | 14 => {
                let topic = self.topic(input);
                // The API's errors (payload too large, too many topics, left) are answers,
                // not failures: only a panic or a broken invariant fails the scenario.
                match input.below(8) {
                    0 => drop(self.state.subscribe(topic, now)),
                    1 => self.state.unsubscribe(&topic, now),
                    2 | 3 => {
                        let len = if input.below(16) == 0 {
                            70_000
                        } else {
                            input.below(200)
                        };
                        if let Ok(p) = self.state.publish(topic, Bytes::from(vec![7u8; len]), now) {
                            self.ids.push(p.id);
                        }
                    }
                    4 => drop(self.state.set_presence(
                        topic,
                        Bytes::copy_from_slice(input.bytes(40)),
                        now,
                    )),
                    5 => self.state.clear_presence(&topic, now),
                    6 => {
                        let contacts = self.peers(input);
                        self.state.join(contacts, now);
                    }
                    _ => {
                        // Leaving ends the node's life: make it rare.
                        if input.u8() == 0xff {
                            self.state.leave(now);
                        }
                    }
                }
            }
            _ => {
                // A raw frame, as a peer could send it (the seed corpus holds real ones).
                let raw = input.bytes(512);
                if let Ok(msg) = decode_frame(raw, &self.state.config().limits) {
                    self.state.handle_message(from, msg, now);
                }
            }
        }
    }

    fn drain(&mut self) {
        let me = self.state.peer_id();
        while let Some(ev) = self.state.poll_event() {
            self.events += 1;
            match ev {
                starling_core::proto::Event::Send(to, msg) => {
                    assert_ne!(to, me, "the node sent a message to itself: {msg:?}");
                }
                starling_core::proto::Event::Deliver(d) => {
                    self.deliveries += 1;
                    assert_ne!(d.author, me, "delivered its own message back to itself");
                }
                _ => {}
            }
        }
    }

    /// The invariants: every view and table within its configured bound, the node never
    /// its own neighbour, trees made of neighbours.
    pub fn check(&self) {
        let s = &self.state;
        let c = s.config();
        let me = s.peer_id();
        let active = s.neighbors();
        let passive = s.passive_peers();
        assert!(
            active.len() <= c.membership.active_view_capacity,
            "active view {} over capacity",
            active.len()
        );
        assert!(
            passive.len() <= c.membership.passive_view_capacity,
            "passive view {} over capacity",
            passive.len()
        );
        assert!(
            !active.contains(&me) && !passive.contains(&me),
            "self in a view"
        );
        assert!(
            active.iter().all(|p| !passive.contains(p)),
            "a peer both active and passive"
        );
        let topics = s.topics();
        assert!(
            topics.len() <= c.max_topics,
            "{} topics over the limit",
            topics.len()
        );
        for t in &topics {
            let n = s.topic_neighbors(t);
            assert!(
                n.len() <= c.topic_membership.active_view_capacity,
                "topic view over capacity"
            );
            assert!(!n.contains(&me), "self in a topic view");
            let (eager, lazy) = s.topic_tree(t);
            assert!(
                eager.iter().chain(&lazy).all(|p| n.contains(p)),
                "a tree peer that is not a topic neighbour"
            );
            assert!(
                eager.iter().all(|p| !lazy.contains(p)),
                "a peer both eager and lazy"
            );
            let online = s.online(t);
            assert!(
                online.len() <= c.presence.max_records + 1,
                "presence table over its bound"
            );
        }
    }
}
