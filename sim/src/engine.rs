//! A deterministic discrete-event network: virtual time, per-link latency, loss, crashes,
//! partitions. Every node runs the real `starling_core::proto::State`.
//!
//! Links behave like the transport's connections: messages on one link arrive in order
//! after the link's latency; the first message to a peer opens a connection. A message to a
//! crashed or unreachable peer is lost silently if a connection already existed (as on
//! QUIC, until the failure detector notices) and fails the dial after `dial_timeout`
//! otherwise (reported to the sender as `Failure::DialFailed`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use starling_core::identity::{Keypair, PeerId};
use starling_core::proto::{self, Event, Failure, State, Time, Verify};
use starling_core::wire::{Broadcast, GossipMsg, Message, MessageId, PeerInfo, TopicMsg};

/// Network model parameters.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Smallest one-way link latency.
    pub latency_min: Duration,
    /// Largest one-way link latency (each link gets a fixed value, uniform in between).
    pub latency_max: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    /// How long a dial to an unreachable peer takes to fail.
    pub dial_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency_min: Duration::from_millis(10),
            latency_max: Duration::from_millis(90),
            loss: 0.0,
            dial_timeout: Duration::from_secs(1),
        }
    }
}

/// Verifies each distinct (id, signature) once for all simulated nodes: every node still
/// gets the true answer, the simulator just does not pay for the same check 10,000 times.
#[derive(Clone, Default)]
pub struct SharedVerify(Arc<Mutex<VerifyMemo>>);

type VerifyMemo = HashMap<(MessageId, [u8; 64]), bool>;

impl Verify for SharedVerify {
    fn verify(&mut self, id: &MessageId, content: &Broadcast) -> bool {
        let key = (*id, content.sig().0);
        let mut memo = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        *memo
            .entry(key)
            .or_insert_with(|| content.verify(id).is_ok())
    }
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: u32,
        from: u32,
        msg: Box<Message>,
    },
    Wake(u32),
    DialFailed {
        node: u32,
        peer: u32,
    },
}

struct Queued {
    at: Time,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One simulated node.
pub struct Node {
    /// Its protocol state (None once crashed).
    pub state: Option<State>,
    /// Its identity.
    pub id: PeerId,
    /// Its keypair (to restart it).
    pub key: Keypair,
    /// Partition group (messages cross only within a group while partitioned).
    pub group: u8,
    wake_at: Option<Time>,
}

/// Something that happened, for the scenario's measurements.
#[derive(Debug, Clone)]
pub enum Observed {
    /// A node delivered a message to its application.
    Delivered {
        /// The node.
        node: u32,
        /// The delivery.
        d: proto::Delivery,
    },
    /// A node's network-wide active view changed.
    Neighbor {
        /// The node.
        node: u32,
        /// The neighbour.
        peer: PeerId,
        /// Whether it came up (else it went down).
        up: bool,
    },
    /// A node's presence view changed.
    Presence {
        /// The node.
        node: u32,
        /// The change.
        ev: proto::presence::PresenceEvent,
    },
}

/// Message counters.
#[derive(Debug, Default, Clone)]
pub struct Traffic {
    /// Payload-carrying messages (Gossip with a published message), by id.
    pub payload_by_id: HashMap<MessageId, u64>,
    /// Payload-carrying messages received by each node.
    pub payload_by_node: Vec<u64>,
    /// Every other message sent.
    pub control: u64,
    /// Messages lost to loss, crashes or partitions.
    pub lost: u64,
    /// Topic active-view changes (neighbour up and down events), a measure of overlay churn.
    pub topic_view_changes: u64,
}

/// The simulated network.
pub struct Sim {
    /// Virtual now.
    pub now: Time,
    /// Every node ever created.
    pub nodes: Vec<Node>,
    index: HashMap<PeerId, u32>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    connected: HashSet<(u32, u32)>,
    dialing: HashSet<(u32, u32)>,
    /// Network parameters.
    pub net: NetConfig,
    proto: proto::Config,
    rng: ChaCha8Rng,
    seed: u64,
    verify: SharedVerify,
    partitioned: bool,
    /// What was observed (drained by the scenario).
    pub observed: Vec<Observed>,
    /// Message counters.
    pub traffic: Traffic,
    /// Events processed.
    pub events: u64,
}

/// The simulated epoch (2026-01-01), so signed timestamps look real.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

impl Sim {
    /// An empty network.
    pub fn new(seed: u64, net: NetConfig, proto: proto::Config) -> Self {
        Sim {
            now: Time::from_millis(EPOCH_MS),
            nodes: Vec::new(),
            index: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            connected: HashSet::new(),
            dialing: HashSet::new(),
            net,
            proto,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            verify: SharedVerify::default(),
            partitioned: false,
            observed: Vec::new(),
            traffic: Traffic::default(),
            events: 0,
        }
    }

    /// Creates a node (not yet joined) and returns its index.
    pub fn add_node(&mut self) -> u32 {
        let i = self.nodes.len() as u32;
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..12].copy_from_slice(&i.to_le_bytes());
        seed[12] = 0x5a;
        let key = Keypair::from_seed(seed);
        let id = key.peer_id();
        self.index.insert(id, i);
        self.nodes.push(Node {
            state: None,
            id,
            key,
            group: 0,
            wake_at: None,
        });
        self.start(i);
        self.traffic.payload_by_node.push(0);
        i
    }

    /// (Re)starts node `i` with fresh state and its old identity.
    pub fn start(&mut self, i: u32) {
        let node = &mut self.nodes[i as usize];
        let seed = self.seed ^ (u64::from(i) << 20) ^ self.now.as_micros();
        let mut state = State::new(node.key.clone(), Bytes::new(), self.proto.clone(), seed);
        state.set_verifier(Box::new(self.verify.clone()));
        node.state = Some(state);
        node.wake_at = None;
        self.connected.retain(|&(a, b)| a != i && b != i);
        self.reschedule(i);
    }

    /// Crashes node `i` abruptly: it stops answering; peers are not told.
    pub fn crash(&mut self, i: u32) {
        self.nodes[i as usize].state = None;
    }

    /// Whether node `i` is running.
    pub fn alive(&self, i: u32) -> bool {
        self.nodes[i as usize].state.is_some()
    }

    /// Node `i`'s state, if running.
    pub fn state(&self, i: u32) -> Option<&State> {
        self.nodes[i as usize].state.as_ref()
    }

    /// The index of a peer.
    pub fn index_of(&self, id: &PeerId) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// Runs `f` on node `i`'s state (if running), then processes its events.
    pub fn with<R>(&mut self, i: u32, f: impl FnOnce(&mut State, Time) -> R) -> Option<R> {
        let now = self.now;
        let r = self.nodes[i as usize].state.as_mut().map(|s| f(s, now));
        self.drain(i);
        r
    }

    /// Node `i` joins through node `contact`.
    pub fn join(&mut self, i: u32, contact: u32) {
        let info = PeerInfo::bare(self.nodes[contact as usize].id);
        self.with(i, |s, now| s.join(vec![info], now));
    }

    /// Splits the network: node `i` can reach only nodes with the same `groups[i]`.
    pub fn partition(&mut self, groups: &[u8]) {
        for (n, g) in self.nodes.iter_mut().zip(groups) {
            n.group = *g;
        }
        self.partitioned = true;
    }

    /// Heals a partition.
    pub fn heal(&mut self) {
        self.partitioned = false;
    }

    fn reachable(&self, a: u32, b: u32) -> bool {
        self.alive(b)
            && (!self.partitioned || self.nodes[a as usize].group == self.nodes[b as usize].group)
    }

    /// The fixed one-way latency of the link between `a` and `b`.
    pub fn latency(&self, a: u32, b: u32) -> Duration {
        let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
        let mut x = self.seed ^ (lo << 32 | hi).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // splitmix64 finaliser: a fixed pseudo-random value per link.
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        let min = self.net.latency_min.as_micros() as u64;
        let span = (self.net.latency_max.as_micros() as u64).saturating_sub(min) + 1;
        Duration::from_micros(min + x % span)
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn reschedule(&mut self, i: u32) {
        let Some(t) = self.nodes[i as usize]
            .state
            .as_ref()
            .and_then(|s| s.poll_timeout())
        else {
            return;
        };
        let t = t.max(self.now);
        let node = &mut self.nodes[i as usize];
        if node.wake_at.is_none_or(|w| t < w) {
            node.wake_at = Some(t);
            self.push(t, Ev::Wake(i));
        }
    }

    fn drain(&mut self, i: u32) {
        loop {
            let Some(ev) = self.nodes[i as usize]
                .state
                .as_mut()
                .and_then(|s| s.poll_event())
            else {
                break;
            };
            match ev {
                Event::Send(to, msg) => self.send(i, to, msg),
                Event::Deliver(d) => self.observed.push(Observed::Delivered { node: i, d }),
                Event::Presence(ev) => self.observed.push(Observed::Presence { node: i, ev }),
                Event::NeighborUp(peer) => self.observed.push(Observed::Neighbor {
                    node: i,
                    peer,
                    up: true,
                }),
                Event::NeighborDown(peer) => self.observed.push(Observed::Neighbor {
                    node: i,
                    peer,
                    up: false,
                }),
                Event::TopicNeighborUp(..) | Event::TopicNeighborDown(..) => {
                    self.traffic.topic_view_changes += 1
                }
                _ => {}
            }
        }
        self.reschedule(i);
    }

    fn send(&mut self, from: u32, to: PeerId, msg: Message) {
        let Some(to) = self.index_of(&to) else {
            return;
        };
        let payload_id = match &msg {
            Message::Topic {
                msg:
                    TopicMsg::Gossip(GossipMsg::Gossip {
                        content: Broadcast::Message(m),
                        ..
                    }),
                ..
            } => Some(m.id()),
            _ => None,
        };
        if !self.reachable(from, to) {
            self.traffic.lost += 1;
            let link = (from.min(to), from.max(to));
            if !self.connected.contains(&link) && self.dialing.insert((from, to)) {
                let at = self.now + self.net.dial_timeout;
                self.push(
                    at,
                    Ev::DialFailed {
                        node: from,
                        peer: to,
                    },
                );
            }
            return;
        }
        if self.net.loss > 0.0 && self.rng.gen_bool(self.net.loss) {
            self.traffic.lost += 1;
            return;
        }
        match payload_id {
            Some(id) => {
                *self.traffic.payload_by_id.entry(id).or_default() += 1;
                self.traffic.payload_by_node[to as usize] += 1;
            }
            None => self.traffic.control += 1,
        }
        self.connected.insert((from.min(to), from.max(to)));
        let at = self.now + self.latency(from, to);
        self.push(
            at,
            Ev::Deliver {
                to,
                from,
                msg: Box::new(msg),
            },
        );
    }

    /// Processes events until virtual time `until` (inclusive).
    pub fn run_until(&mut self, until: Time) {
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.at > until {
                break;
            }
            let Some(Reverse(q)) = self.queue.pop() else {
                break;
            };
            self.now = q.at;
            self.events += 1;
            match q.ev {
                Ev::Deliver { to, from, msg } => {
                    let from_id = self.nodes[from as usize].id;
                    let now = self.now;
                    if let Some(s) = self.nodes[to as usize].state.as_mut() {
                        s.handle_message(from_id, *msg, now);
                        self.drain(to);
                    }
                }
                Ev::Wake(i) => {
                    if self.nodes[i as usize].wake_at != Some(q.at) {
                        continue;
                    }
                    self.nodes[i as usize].wake_at = None;
                    let now = self.now;
                    if let Some(s) = self.nodes[i as usize].state.as_mut() {
                        s.handle_timeout(now);
                        // A layer that keeps asking for "now" would spin: step past it.
                        if s.poll_timeout().is_some_and(|t| t <= now) {
                            self.nodes[i as usize].wake_at = Some(now + Duration::from_millis(1));
                            self.push(now + Duration::from_millis(1), Ev::Wake(i));
                        }
                        self.drain(i);
                    }
                }
                Ev::DialFailed { node, peer } => {
                    self.dialing.remove(&(node, peer));
                    let peer_id = self.nodes[peer as usize].id;
                    let now = self.now;
                    if let Some(s) = self.nodes[node as usize].state.as_mut() {
                        s.peer_failed(peer_id, Failure::DialFailed, now);
                        self.drain(node);
                    }
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Indices of running nodes.
    pub fn live(&self) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|&i| self.alive(i))
            .collect()
    }

    /// A random running node.
    pub fn random_live(&mut self) -> Option<u32> {
        let live = self.live();
        if live.is_empty() {
            None
        } else {
            Some(live[self.rng.gen_range(0..live.len())])
        }
    }

    /// The simulator's RNG (for scenarios).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}
