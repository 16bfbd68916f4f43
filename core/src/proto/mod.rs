//! The protocol as sans-IO state machines: no sockets, no tokio, no clock. Every call takes
//! the current [`Time`]; randomness comes from seeded generators, so a run is reproducible.
//!
//! [`State`] is one node. It combines:
//! - a network-wide HyParView overlay ([`hyparview`]) that every node is in;
//! - a SWIM failure detector ([`swim`]) over the union of all its neighbours;
//! - per topic it is a member of: its own HyParView overlay, a Plumtree broadcast tree
//!   over that overlay ([`plumtree`]), a presence table ([`presence`]) and a per-author
//!   sequencer ([`order`]). Only members of a topic carry its payloads;
//! - topic discovery over the network-wide overlay ([`discovery`]).
//!
//! A driver (the network node, or the simulator) feeds it messages, failures and time, and
//! drains [`Event`]s: messages to send, deliveries, presence changes.

pub mod discovery;
pub mod hyparview;
pub mod order;
pub mod plumtree;
pub mod presence;
pub mod swim;
pub mod time;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use time::Time;

use crate::identity::{Keypair, PeerId};
use crate::wire::{
    check_broadcast, Broadcast, DiscoveryMsg, GossipMsg, Limits, MembershipMsg, Message, MessageId,
    PeerInfo, SignedMessage, SwimMsg, TopicId, TopicMsg,
};
use hyparview::Linked;
use presence::PresenceEvent;

/// All protocol parameters, with defaults from the papers and peer systems (each layer's
/// config says where its numbers come from).
#[derive(Clone, Debug)]
pub struct Config {
    /// The network-wide overlay.
    pub membership: hyparview::Config,
    /// Each topic's overlay.
    pub topic_membership: hyparview::Config,
    /// Failure detection of neighbours.
    pub swim: swim::Config,
    /// Broadcast within a topic.
    pub plumtree: plumtree::Config,
    /// Presence within a topic.
    pub presence: presence::Config,
    /// Per-author ordering and replay window.
    pub order: order::Config,
    /// Topic discovery.
    pub discovery: discovery::Config,
    /// Size limits.
    pub limits: Limits,
    /// A broadcast stamped further than this in the future is refused (10 min), so a
    /// future-dated record cannot freeze anyone's state.
    pub max_future_skew: Duration,
    /// A broadcast stamped longer ago than this is refused (10 min).
    pub max_age: Duration,
    /// Most topics a node is a member of (1,024).
    pub max_topics: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            membership: hyparview::Config::default(),
            topic_membership: hyparview::Config::default(),
            swim: swim::Config::default(),
            plumtree: plumtree::Config::default(),
            presence: presence::Config::default(),
            order: order::Config::default(),
            discovery: discovery::Config::default(),
            limits: Limits::default(),
            max_future_skew: Duration::from_secs(600),
            max_age: Duration::from_secs(600),
            max_topics: 1024,
        }
    }
}

/// A message delivered to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The topic.
    pub topic: TopicId,
    /// The author (signer), never the forwarding neighbour.
    pub author: PeerId,
    /// The author's sequence number.
    pub seq: u64,
    /// The message id.
    pub id: MessageId,
    /// The author's timestamp (ms since the Unix epoch).
    pub issued_ms: u64,
    /// The payload.
    pub payload: Bytes,
    /// Hops from the author.
    pub hops: u16,
}

/// Why a broadcast from a peer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The signature does not verify (forged author, tampered content).
    BadSignature,
    /// Larger than the limits allow.
    Oversized,
    /// Stamped too far in the future.
    FutureDated,
    /// Stamped too long ago.
    TooOld,
    /// Already delivered, or older than the replay window.
    Replay,
    /// Sent under a topic other than its own.
    TopicMismatch,
}

impl Reject {
    /// Whether only a broken or hostile peer sends this (a replay can be an honest resend).
    pub fn is_violation(self) -> bool {
        !matches!(self, Reject::Replay | Reject::TooOld)
    }
}

/// What the node asks of its driver, or tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Send a message to a peer.
    Send(PeerId, Message),
    /// An address for a peer (keep it in the address book).
    LearnedPeer(PeerInfo),
    /// A network-wide neighbour is up.
    NeighborUp(PeerId),
    /// A network-wide neighbour is down.
    NeighborDown(PeerId),
    /// A topic neighbour is up.
    TopicNeighborUp(TopicId, PeerId),
    /// A topic neighbour is down.
    TopicNeighborDown(TopicId, PeerId),
    /// A message for the application (subscribed topics only, per-author order).
    Deliver(Delivery),
    /// Who is online changed.
    Presence(PresenceEvent),
    /// A peer sent something invalid.
    Rejected {
        /// The neighbour it came from.
        peer: PeerId,
        /// Why.
        reason: Reject,
    },
}

/// Why a failed peer is reported to [`State::peer_failed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The failure detector declared it dead.
    Dead,
    /// Its connection was lost (not closed gracefully).
    Disconnected,
    /// Dialing it failed.
    DialFailed,
}

/// The outcome of a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The message id.
    pub id: MessageId,
    /// Its sequence number.
    pub seq: u64,
    /// Topic neighbours it was pushed or announced to. Zero: nobody yet; the message stays
    /// cached and is offered to neighbours that arrive within the cache window.
    pub peers: usize,
}

/// Why a request of the application was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The payload is larger than the limit.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Presence metadata is larger than the limit.
    #[error("presence metadata of {len} bytes exceeds the limit of {max} bytes")]
    MetadataTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The node is a member of too many topics.
    #[error("already a member of {max} topics, the limit")]
    TooManyTopics {
        /// The limit.
        max: usize,
    },
    /// The node has left the network.
    #[error("the node has left the network")]
    Left,
}

/// Signature checking, injectable so the simulator can verify each distinct signature once
/// for all its nodes (the outcome is identical; only the CPU time is shared).
pub trait Verify: Send {
    /// Whether `content`'s signature is valid for `id` (its recomputed id).
    fn verify(&mut self, id: &MessageId, content: &Broadcast) -> bool;

    /// Told of broadcasts about to be handled (each with its recomputed id), so a checker
    /// can check them together, which is cheaper, and answer the `verify` calls that
    /// follow from that. The verdicts must be those `verify` alone would give. Default:
    /// nothing; each is checked when `verify` is called.
    fn verify_ahead(&mut self, _batch: &[(MessageId, &Broadcast)]) {}
}

/// Checks every signature with Ed25519 (the default).
#[derive(Debug, Default)]
pub struct Ed25519Verify;

impl Verify for Ed25519Verify {
    fn verify(&mut self, id: &MessageId, content: &Broadcast) -> bool {
        content.verify(id).is_ok()
    }
}

/// Counters for statistics and measurements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages published here.
    pub published: u64,
    /// Messages delivered to the application.
    pub delivered: u64,
    /// Broadcasts refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Topic messages received for topics this node is not a member of (dropped).
    pub not_member: u64,
    /// Joins made because discovery found a separate part of a topic's overlay.
    pub merge_joins: u64,
    /// Peers the failure detector declared dead.
    pub declared_dead: u64,
}

/// Sizes of the node's bounded tables, summed over its topics (each has a configured
/// bound; the hostile-peer tests watch these stay under it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// Presence records held (online and tombstones), all topics.
    pub presence_records: usize,
    /// Broadcasts in the message caches.
    pub cache_entries: usize,
    /// Bytes in the message caches (approximate).
    pub cache_bytes: usize,
    /// Ids in the seen sets.
    pub seen_ids: usize,
    /// Announced-but-missing ids waiting for a graft.
    pub missing_ids: usize,
    /// Topics with discovery hints remembered.
    pub hint_topics: usize,
}

/// Whether `peer` is a neighbour in any of `topics`' overlays.
fn in_topics(topics: &BTreeMap<TopicId, Box<Topic>>, peer: &PeerId) -> bool {
    topics.values().any(|t| t.membership.is_active(peer))
}

struct Topic {
    /// Deliver messages to the application (false: member only to publish).
    subscribed: bool,
    membership: hyparview::State,
    plumtree: plumtree::State,
    presence: presence::State,
    order: order::Sequencer<Delivery>,
    next_seq: Option<u64>,
    next_walk: Time,
    walk_backoff: Duration,
}

/// One node's protocol state.
pub struct State {
    key: Keypair,
    me: PeerInfo,
    config: Config,
    rng: ChaCha8Rng,
    global: hyparview::State,
    swim: swim::State,
    directory: discovery::Directory,
    /// Boxed: [`State::topic_membership`] moves a topic out of the map and back.
    topics: BTreeMap<TopicId, Box<Topic>>,
    verifier: Box<dyn Verify>,
    events: VecDeque<Event>,
    counters: Counters,
    left: bool,
    /// Bootstrap contacts, retried while the node has no network-wide neighbour.
    bootstrap: Vec<PeerInfo>,
    next_bootstrap: Option<Time>,
    bootstrap_backoff: Duration,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("me", &self.me.id)
            .field("topics", &self.topics.len())
            .finish_non_exhaustive()
    }
}

impl State {
    /// A node with identity `key`, advertising transport address `addr`.
    pub fn new(key: Keypair, addr: Bytes, config: Config, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let me = PeerInfo {
            id: key.peer_id(),
            addr,
        };
        State {
            global: hyparview::State::new(me.clone(), config.membership.clone(), rng.gen()),
            swim: swim::State::new(config.swim.clone(), rng.gen()),
            key,
            me,
            config,
            rng,
            directory: discovery::Directory::default(),
            topics: BTreeMap::new(),
            verifier: Box::new(Ed25519Verify),
            events: VecDeque::new(),
            counters: Counters::default(),
            left: false,
            bootstrap: Vec::new(),
            next_bootstrap: None,
            bootstrap_backoff: Duration::ZERO,
        }
    }

    /// Replaces the signature checker (the simulator shares one across nodes).
    pub fn set_verifier(&mut self, verifier: Box<dyn Verify>) {
        self.verifier = verifier;
    }

    /// Hands the new broadcasts among `msgs`, which are about to be handled, to the
    /// signature checker at once ([`Verify::verify_ahead`]: a batch check costs about half
    /// as much per signature). Broadcasts already known, sent under another topic or for a
    /// topic this node is not in are left out: their handling checks no signature.
    pub fn verify_ahead<'a>(&mut self, msgs: impl IntoIterator<Item = &'a Message>) {
        let mut batch = Vec::new();
        for msg in msgs {
            let Message::Topic {
                topic,
                msg: TopicMsg::Gossip(GossipMsg::Gossip { content, .. }),
            } = msg
            else {
                continue;
            };
            if content.topic() != *topic {
                continue;
            }
            let id = content.id();
            if self
                .topics
                .get(topic)
                .is_some_and(|t| !t.plumtree.is_known(&id))
            {
                batch.push((id, content));
            }
        }
        if batch.len() > 1 {
            self.verifier.verify_ahead(&batch);
        }
    }

    /// This node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.me.id
    }

    /// The parameters in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Updates the transport address this node advertises.
    pub fn set_addr(&mut self, addr: Bytes) {
        self.me.addr = addr.clone();
        self.global.set_my_addr(addr.clone());
        for t in self.topics.values_mut() {
            t.membership.set_my_addr(addr.clone());
        }
    }

    /// The next event for the driver or the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Sizes of the bounded tables (statistics, hostile-peer tests).
    pub fn table_sizes(&self) -> TableSizes {
        let mut s = TableSizes {
            hint_topics: self.directory.hint_topics(),
            ..TableSizes::default()
        };
        for t in self.topics.values() {
            let (entries, bytes, seen, missing) = t.plumtree.table_sizes();
            s.presence_records += t.presence.len();
            s.cache_entries += entries;
            s.cache_bytes += bytes;
            s.seen_ids += seen;
            s.missing_ids += missing;
        }
        s
    }

    /// Network-wide active view.
    pub fn neighbors(&self) -> Vec<PeerId> {
        self.global.active()
    }

    /// Network-wide overlay's refill counters (where neighbour replacement time goes).
    pub fn membership_counters(&self) -> &hyparview::Counters {
        self.global.counters()
    }

    /// Network-wide passive view.
    pub fn passive_peers(&self) -> Vec<PeerId> {
        self.global.passive()
    }

    /// Topics this node is a member of.
    pub fn topics(&self) -> Vec<TopicId> {
        self.topics.keys().copied().collect()
    }

    /// A topic's active view (empty if not a member).
    pub fn topic_neighbors(&self, topic: &TopicId) -> Vec<PeerId> {
        self.topics
            .get(topic)
            .map(|t| t.membership.active())
            .unwrap_or_default()
    }

    /// A topic's eager (tree) and lazy neighbours.
    pub fn topic_tree(&self, topic: &TopicId) -> (Vec<PeerId>, Vec<PeerId>) {
        self.topics
            .get(topic)
            .map(|t| (t.plumtree.eager_peers(), t.plumtree.lazy_peers()))
            .unwrap_or_default()
    }

    /// A topic's broadcast counters.
    pub fn topic_counters(&self, topic: &TopicId) -> Option<plumtree::Counters> {
        self.topics
            .get(topic)
            .map(|t| t.plumtree.counters().clone())
    }

    /// Everyone online on `topic` (empty if not a member).
    pub fn online(&self, topic: &TopicId) -> Vec<presence::Entry> {
        self.topics
            .get(topic)
            .map(|t| t.presence.online())
            .unwrap_or_default()
    }

    /// Whether `peer` is online on `topic` as seen here.
    pub fn is_online(&self, topic: &TopicId, peer: &PeerId) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|t| t.presence.is_online(peer))
    }

    /// Whether `peer` is in any active view (network-wide or a topic's).
    pub fn is_neighbor(&self, peer: &PeerId) -> bool {
        self.global.is_active(peer) || in_topics(&self.topics, peer)
    }

    /// Runs `f` on the network-wide membership, with `linked` saying whether this node is
    /// connected to a peer through a topic's overlay.
    fn global_membership<R>(
        &mut self,
        f: impl FnOnce(&mut hyparview::State, Linked<'_>) -> R,
    ) -> R {
        let topics = &self.topics;
        f(&mut self.global, &|p| in_topics(topics, p))
    }

    /// Runs `f` on `topic`'s membership, with `linked` saying whether this node is
    /// connected to a peer through another overlay (network-wide or another topic).
    fn topic_membership<R>(
        &mut self,
        topic: &TopicId,
        f: impl FnOnce(&mut hyparview::State, Linked<'_>) -> R,
    ) -> Option<R> {
        // Out of the map meanwhile, so that `is_neighbor` reads only the other overlays.
        let mut t = self.topics.remove(topic)?;
        let result = f(&mut t.membership, &|p| self.is_neighbor(p));
        self.topics.insert(*topic, t);
        Some(result)
    }

    /// Joins the network through `contacts` (bootstrap peers). While the node has no
    /// network-wide neighbour it retries them, backing off from 1 s to 30 s, so a node whose
    /// contacts were briefly unreachable is not left alone.
    pub fn join(&mut self, contacts: Vec<PeerInfo>, now: Time) {
        for c in contacts.into_iter().filter(|c| c.id != self.me.id) {
            self.events.push_back(Event::LearnedPeer(c.clone()));
            self.bootstrap.retain(|b| b.id != c.id);
            self.bootstrap.push(c);
        }
        self.bootstrap_backoff = self.config.discovery.retry_min;
        self.join_bootstrap(now);
    }

    fn join_bootstrap(&mut self, now: Time) {
        let mut ev = Vec::new();
        for c in self.bootstrap.clone() {
            self.global.join(c, now, &mut ev);
        }
        self.next_bootstrap = Some(now + self.bootstrap_backoff);
        self.bootstrap_backoff = (self.bootstrap_backoff * 2).min(self.config.discovery.retry_max);
        self.on_global(ev, now);
    }

    /// Subscribes to `topic`: joins its overlay (finding members by itself) and delivers
    /// its messages.
    pub fn subscribe(&mut self, topic: TopicId, now: Time) -> Result<(), Error> {
        self.ensure_member(topic, now)?;
        if let Some(t) = self.topics.get_mut(&topic) {
            t.subscribed = true;
        }
        Ok(())
    }

    /// Leaves `topic`: announces leaving presence, disconnects its overlay, stops delivery.
    pub fn unsubscribe(&mut self, topic: &TopicId, now: Time) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        let mut pres = Vec::new();
        t.presence.clear_local(now, &mut pres);
        self.on_presence(*topic, pres, now);
        let Some(mut t) = self.topics.remove(topic) else {
            return;
        };
        let mut ev = Vec::new();
        t.membership.leave(&mut ev);
        // The topic's state is gone: only the disconnect notices and neighbour-down events
        // of these have an effect.
        self.on_topic_membership(*topic, ev, now);
        self.announce_topics();
    }

    /// Publishes `payload` on `topic` (joining the topic's overlay first if needed).
    pub fn publish(
        &mut self,
        topic: TopicId,
        payload: Bytes,
        now: Time,
    ) -> Result<Published, Error> {
        if self.left {
            return Err(Error::Left);
        }
        let max = self.config.limits.max_payload_bytes;
        if payload.len() > max {
            return Err(Error::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        self.ensure_member(topic, now)?;
        let Some(t) = self.topics.get_mut(&topic) else {
            return Err(Error::Left);
        };
        // Sequence numbers start at the clock so a restarted author continues above the
        // numbers it used before (receivers keep a replay window per author).
        let seq = t.next_seq.unwrap_or(now.as_micros().max(1));
        t.next_seq = Some(seq + 1);
        let msg = SignedMessage::new(&self.key, topic, seq, now.as_millis(), payload);
        let id = msg.id();
        let peers = t.membership.active().len();
        let mut ev = Vec::new();
        t.plumtree
            .broadcast(id, Broadcast::Message(msg), now, &mut ev);
        self.counters.published += 1;
        self.on_plumtree(topic, ev, now);
        Ok(Published { id, seq, peers })
    }

    /// Announces this node online on `topic` with `metadata` (joining the topic if needed).
    pub fn set_presence(
        &mut self,
        topic: TopicId,
        metadata: Bytes,
        now: Time,
    ) -> Result<(), Error> {
        let max = self.config.limits.max_metadata_bytes;
        if metadata.len() > max {
            return Err(Error::MetadataTooLarge {
                len: metadata.len(),
                max,
            });
        }
        self.ensure_member(topic, now)?;
        let mut ev = Vec::new();
        if let Some(t) = self.topics.get_mut(&topic) {
            t.presence.set_local(metadata, now, &mut ev);
        }
        self.on_presence(topic, ev, now);
        Ok(())
    }

    /// Announces that this node is no longer online on `topic`.
    pub fn clear_presence(&mut self, topic: &TopicId, now: Time) {
        let mut ev = Vec::new();
        if let Some(t) = self.topics.get_mut(topic) {
            t.presence.clear_local(now, &mut ev);
        }
        self.on_presence(*topic, ev, now);
    }

    /// Leaves the network gracefully: leaving presence on every topic, then disconnect
    /// notices to every neighbour.
    pub fn leave(&mut self, now: Time) {
        for topic in self.topics() {
            self.unsubscribe(&topic, now);
        }
        let mut ev = Vec::new();
        self.global.leave(&mut ev);
        self.on_global(ev, now);
        self.left = true;
    }

    fn ensure_member(&mut self, topic: TopicId, now: Time) -> Result<(), Error> {
        if self.left {
            return Err(Error::Left);
        }
        if self.topics.contains_key(&topic) {
            return Ok(());
        }
        if self.topics.len() >= self.config.max_topics {
            return Err(Error::TooManyTopics {
                max: self.config.max_topics,
            });
        }
        let c = &self.config;
        let t = Topic {
            subscribed: false,
            membership: hyparview::State::new(
                self.me.clone(),
                c.topic_membership.clone(),
                self.rng.gen(),
            ),
            plumtree: plumtree::State::new(self.me.id, c.plumtree.clone()),
            presence: presence::State::new(topic, self.key.clone(), c.presence.clone()),
            order: order::Sequencer::new(c.order.clone()),
            next_seq: None,
            next_walk: now,
            walk_backoff: c.discovery.retry_min,
        };
        self.topics.insert(topic, Box::new(t));
        self.announce_topics();
        self.discover(topic, now);
        Ok(())
    }

    /// Tells every network-wide neighbour which topics this node is a member of.
    fn announce_topics(&mut self) {
        let topics = self.topics();
        for p in self.global.active() {
            self.send(p, Message::Discovery(DiscoveryMsg::Topics(topics.clone())));
        }
    }

    fn send(&mut self, to: PeerId, msg: Message) {
        self.events.push_back(Event::Send(to, msg));
    }

    // ------------------------------------------------------------------------------------
    // Input from the network

    /// Handles a message from `from` (whose identity the transport proved).
    pub fn handle_message(&mut self, from: PeerId, msg: Message, now: Time) {
        if from == self.me.id || self.left {
            return;
        }
        // Asked to probe this node itself: only a broken or hostile peer asks, and obeying
        // would make the node ping (dial) itself.
        if let Message::Swim(SwimMsg::PingReq { target, .. }) = &msg {
            if target.id == self.me.id {
                return;
            }
        }
        // Traffic is evidence of life; SWIM's own acks are timed by the detector itself.
        if !matches!(msg, Message::Swim(_)) {
            self.swim.heard_from(&from, now);
        }
        match msg {
            Message::Membership(m) => {
                let mut ev = Vec::new();
                self.global_membership(|g, linked| g.handle_message(from, m, now, linked, &mut ev));
                self.on_global(ev, now);
            }
            Message::Swim(m) => {
                let mut ev = Vec::new();
                self.swim.handle_message(from, m, now, &mut ev);
                self.on_swim(ev, now);
            }
            Message::Discovery(m) => self.on_discovery(from, m, now),
            Message::Topic { topic, msg } => self.on_topic_message(from, topic, msg, now),
        }
    }

    /// `peer` failed: dead by the failure detector, connection lost, or a dial failed.
    pub fn peer_failed(&mut self, peer: PeerId, failure: Failure, now: Time) {
        if peer == self.me.id {
            return;
        }
        self.swim.unwatch(&peer);
        if failure == Failure::DialFailed {
            self.directory.forget(&peer);
        }
        if self.global.is_active(&peer) && self.global.passive_len() == 0 {
            // Its slot is refilled at once (inside `peer_failed`): give it candidates
            // rather than wait for the next timer. The failed peer itself is known (active)
            // and so not added.
            self.backups_from_topics();
        }
        let mut ev = Vec::new();
        self.global_membership(|g, linked| g.peer_failed(peer, now, linked, &mut ev));
        self.on_global(ev, now);
        for topic in self.topics() {
            let mut ev = Vec::new();
            let Some(was_neighbor) = self.topic_membership(&topic, |m, linked| {
                let was_neighbor = m.is_active(&peer);
                m.peer_failed(peer, now, linked, &mut ev);
                was_neighbor
            }) else {
                continue;
            };
            let Some(t) = self.topics.get_mut(&topic) else {
                continue;
            };
            let mut pres = Vec::new();
            // A failed dial to a stale address says little; a neighbour's failure or the
            // detector's verdict means the peer is gone from this topic.
            if failure != Failure::DialFailed || was_neighbor {
                t.presence.peer_failed(&peer, now, &mut pres);
            }
            self.on_topic_membership(topic, ev, now);
            self.on_presence(topic, pres, now);
        }
    }

    /// When [`State::handle_timeout`] next has work to do.
    ///
    /// Timer coalescing: deadlines that tolerate running up to one probe interval late
    /// (shuffles, partition-healing rejoins, presence refresh and expiry, cache expiry,
    /// maintenance walks of a topic that has neighbours) are not returned on their own
    /// while the failure detector has a round scheduled: they are done on that round (every
    /// layer's `handle_timeout` does whatever is due at `now`). An idle node therefore wakes
    /// about once per probe round, not once per topic and timer. Deadlines that must be
    /// precise (probe and request timeouts, IHAVE batches, graft timers, ordering gaps,
    /// first walks, bootstrap retries) are returned as they are.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut precise = time::earliest(self.global.poll_precise(), self.swim.poll_timeout());
        let mut lax = self.global.poll_lax();
        if self.global.active_len() == 0 {
            precise = time::earliest(precise, self.next_bootstrap);
        }
        for topic in self.topics.values() {
            precise = time::earliest(precise, topic.membership.poll_precise());
            precise = time::earliest(precise, topic.plumtree.poll_precise());
            precise = time::earliest(precise, topic.order.poll_timeout());
            lax = time::earliest(lax, topic.membership.poll_lax());
            lax = time::earliest(lax, topic.plumtree.poll_lax());
            lax = time::earliest(lax, topic.presence.poll_timeout());
            if topic.membership.active_len() == 0 {
                precise = time::earliest(precise, Some(topic.next_walk));
            } else {
                lax = time::earliest(lax, Some(topic.next_walk));
            }
        }
        match self.swim.next_round() {
            // The round is part of `precise` (through the detector's own deadline).
            Some(_) => precise,
            None => time::earliest(precise, lax),
        }
    }

    /// Does all timed work due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.left {
            return;
        }
        if self.global.active().is_empty() && self.next_bootstrap.is_some_and(|t| t <= now) {
            self.join_bootstrap(now);
        }
        let under_full = self.global.active_len() < self.config.membership.active_view_capacity;
        if self.global.active_len() == 0 || (under_full && self.global.passive_len() == 0) {
            self.backups_from_topics();
        }
        let mut ev = Vec::new();
        self.global_membership(|g, linked| g.handle_timeout(now, linked, &mut ev));
        self.on_global(ev, now);
        let mut ev = Vec::new();
        self.swim.handle_timeout(now, &mut ev);
        self.on_swim(ev, now);
        for topic in self.topics() {
            let mut hv = Vec::new();
            self.topic_membership(&topic, |m, linked| m.handle_timeout(now, linked, &mut hv));
            let Some(t) = self.topics.get_mut(&topic) else {
                continue;
            };
            let mut pt = Vec::new();
            t.plumtree.handle_timeout(now, &mut pt);
            let mut pres = Vec::new();
            t.presence.handle_timeout(now, &mut pres);
            let mut ready = Vec::new();
            t.order.handle_timeout(now, &mut ready);
            let walk_due = t.next_walk <= now;
            self.on_topic_membership(topic, hv, now);
            self.on_plumtree(topic, pt, now);
            self.on_presence(topic, pres, now);
            self.deliver(topic, ready);
            if walk_due {
                self.discover(topic, now);
            }
        }
    }

    /// Offers the topic neighbours as network-wide backups. Used when the network-wide
    /// overlay is cut off (every neighbour and backup failed) but a topic's is not: its
    /// members are live contacts to rejoin through. Likewise for an under-full view with no
    /// backup left (a young overlay's passive views are small, and a crash empties some):
    /// they are the refill's candidates.
    fn backups_from_topics(&mut self) {
        for t in self.topics.values() {
            for p in t.membership.active() {
                if let Some(info) = t.membership.peer_info(&p) {
                    self.global.add_passive(info);
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Reactions to layer events

    fn watch(&mut self, info: Option<PeerInfo>, now: Time) {
        if let Some(info) = info {
            self.swim.watch(info, now);
        }
    }

    fn unwatch_if_unneeded(&mut self, peer: &PeerId) {
        if !self.is_neighbor(peer) {
            self.swim.unwatch(peer);
        }
    }

    fn on_global(&mut self, events: Vec<hyparview::OutEvent>, now: Time) {
        for e in events {
            match e {
                hyparview::OutEvent::Send(p, m) => self.send(p, Message::Membership(m)),
                hyparview::OutEvent::LearnedPeer(info) => {
                    self.events.push_back(Event::LearnedPeer(info))
                }
                hyparview::OutEvent::NeighborUp(p) => {
                    let info = self.global.peer_info(&p);
                    self.watch(info, now);
                    let topics = self.topics();
                    if !topics.is_empty() {
                        self.send(p, Message::Discovery(DiscoveryMsg::Topics(topics)));
                    }
                    self.events.push_back(Event::NeighborUp(p));
                }
                hyparview::OutEvent::NeighborDown(p) => {
                    self.directory.remove_neighbor(&p);
                    self.unwatch_if_unneeded(&p);
                    self.events.push_back(Event::NeighborDown(p));
                }
            }
        }
    }

    fn on_swim(&mut self, events: Vec<swim::OutEvent>, now: Time) {
        for e in events {
            match e {
                swim::OutEvent::Send(p, m) => self.send(p, Message::Swim(m)),
                swim::OutEvent::PeerDead(p) => {
                    self.counters.declared_dead += 1;
                    self.peer_failed(p, Failure::Dead, now)
                }
            }
        }
    }

    fn on_topic_membership(&mut self, topic: TopicId, events: Vec<hyparview::OutEvent>, now: Time) {
        for e in events {
            match e {
                hyparview::OutEvent::Send(p, m) => self.send(
                    p,
                    Message::Topic {
                        topic,
                        msg: TopicMsg::Membership(m),
                    },
                ),
                hyparview::OutEvent::LearnedPeer(info) => {
                    self.events.push_back(Event::LearnedPeer(info))
                }
                hyparview::OutEvent::NeighborUp(p) => self.topic_neighbor_up(topic, p, now),
                hyparview::OutEvent::NeighborDown(p) => {
                    let mut pt = Vec::new();
                    if let Some(t) = self.topics.get_mut(&topic) {
                        t.plumtree.neighbor_down(&p, &mut pt);
                    }
                    self.on_plumtree(topic, pt, now);
                    self.unwatch_if_unneeded(&p);
                    self.events.push_back(Event::TopicNeighborDown(topic, p));
                }
            }
        }
    }

    fn topic_neighbor_up(&mut self, topic: TopicId, peer: PeerId, now: Time) {
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        let info = t.membership.peer_info(&peer);
        let mut pt = Vec::new();
        t.plumtree.neighbor_up(peer, now, &mut pt);
        let snapshot = t.presence.snapshot();
        t.walk_backoff = self.config.discovery.retry_min;
        self.watch(info, now);
        self.events.push_back(Event::TopicNeighborUp(topic, peer));
        // A new neighbour gets the presence table at once: a late joiner knows who is
        // online within one round trip of its first neighbour.
        for part in snapshot.chunks(self.config.limits.max_records_per_msg.max(1)) {
            self.send(
                peer,
                Message::Topic {
                    topic,
                    msg: TopicMsg::PresenceSnapshot(part.to_vec()),
                },
            );
        }
        self.on_plumtree(topic, pt, now);
    }

    fn on_plumtree(&mut self, topic: TopicId, events: Vec<plumtree::OutEvent>, now: Time) {
        for e in events {
            match e {
                plumtree::OutEvent::Send(p, m) => self.send(
                    p,
                    Message::Topic {
                        topic,
                        msg: TopicMsg::Gossip(m),
                    },
                ),
                plumtree::OutEvent::Deliver {
                    id, content, hops, ..
                } => self.on_broadcast(topic, id, content, hops, now),
            }
        }
    }

    /// A broadcast arrived for the first time (already validated).
    fn on_broadcast(
        &mut self,
        topic: TopicId,
        id: MessageId,
        content: Broadcast,
        hops: u16,
        now: Time,
    ) {
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        let mut pres = Vec::new();
        match content {
            Broadcast::Message(m) => {
                let delivery = Delivery {
                    topic,
                    author: m.author,
                    seq: m.seq,
                    id,
                    issued_ms: m.issued_ms,
                    payload: m.payload,
                    hops,
                };
                let mut ready = Vec::new();
                // Checked before validation; a refusal here cannot happen in between.
                let _ = t.order.push(m.author, m.seq, delivery, now, &mut ready);
                self.deliver(topic, ready);
            }
            Broadcast::Presence(r) => {
                if t.presence.is_newer(&r) {
                    t.presence.handle_record(r, now, &mut pres);
                }
            }
            Broadcast::Gone(g) => t.presence.handle_gone(g, now, &mut pres),
        }
        self.on_presence(topic, pres, now);
    }

    fn deliver(&mut self, topic: TopicId, ready: Vec<Delivery>) {
        if !self.topics.get(&topic).is_some_and(|t| t.subscribed) {
            return;
        }
        for d in ready {
            self.counters.delivered += 1;
            self.events.push_back(Event::Deliver(d));
        }
    }

    fn on_presence(&mut self, topic: TopicId, events: Vec<presence::OutEvent>, now: Time) {
        for e in events {
            match e {
                presence::OutEvent::Broadcast(b) => {
                    let Some(t) = self.topics.get_mut(&topic) else {
                        continue;
                    };
                    let mut pt = Vec::new();
                    t.plumtree.broadcast(b.id(), b, now, &mut pt);
                    self.on_plumtree(topic, pt, now);
                }
                presence::OutEvent::Event(ev) => {
                    // Departure: a peer reported failed (signed notice) or leaving is no
                    // good backup; dropping it from every passive view keeps refills after
                    // a crash from waiting out a request timeout on it.
                    if matches!(
                        ev.change,
                        presence::PresenceChange::Offline(
                            presence::OfflineReason::Failed { .. } | presence::OfflineReason::Left
                        )
                    ) {
                        if matches!(
                            ev.change,
                            presence::PresenceChange::Offline(
                                presence::OfflineReason::Failed { .. }
                            )
                        ) {
                            // Someone else's detector found it dead: check it now if it is
                            // our neighbour too (swim::State::hint_failed).
                            let mut sw = Vec::new();
                            self.swim.hint_failed(&ev.peer, now, &mut sw);
                            self.on_swim(sw, now);
                        }
                        self.global.forget_passive(&ev.peer);
                        for t in self.topics.values_mut() {
                            t.membership.forget_passive(&ev.peer);
                        }
                    }
                    self.events.push_back(Event::Presence(ev));
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Topic messages

    fn on_topic_message(&mut self, from: PeerId, topic: TopicId, msg: TopicMsg, now: Time) {
        if !self.topics.contains_key(&topic) {
            self.counters.not_member += 1;
            // Tell a peer that wants us in the topic's overlay that we are not a member, so
            // it stops waiting and tries someone else.
            if let TopicMsg::Membership(
                MembershipMsg::Join(_)
                | MembershipMsg::Neighbor { .. }
                | MembershipMsg::NeighborReply { accepted: true },
            ) = msg
            {
                self.send(
                    from,
                    Message::Topic {
                        topic,
                        msg: TopicMsg::Membership(MembershipMsg::Disconnect { alive: false }),
                    },
                );
            }
            return;
        }
        match msg {
            TopicMsg::Membership(m) => {
                let mut ev = Vec::new();
                let refused = self.topic_membership(&topic, |t, linked| {
                    let refusal = matches!(m, MembershipMsg::Disconnect { alive: false })
                        && !t.is_active(&from);
                    if refusal {
                        // A non-member (or a leaving member) answered our join: look
                        // elsewhere.
                        t.peer_failed(from, now, linked, &mut ev);
                    } else {
                        t.handle_message(from, m, now, linked, &mut ev);
                    }
                    refusal
                });
                if refused == Some(true) {
                    self.directory.forget(&from);
                }
                self.on_topic_membership(topic, ev, now);
            }
            TopicMsg::Gossip(GossipMsg::Gossip { hops, content }) => {
                self.on_gossip(from, topic, hops, content, now)
            }
            TopicMsg::Gossip(control) => {
                let Some(t) = self.topics.get_mut(&topic) else {
                    return;
                };
                let mut ev = Vec::new();
                t.plumtree.handle_control(from, control, now, &mut ev);
                self.on_plumtree(topic, ev, now);
            }
            TopicMsg::PresenceSnapshot(records) => {
                let max = self.config.limits.max_records_per_msg;
                for r in records.into_iter().take(max) {
                    let fresh = self
                        .topics
                        .get(&topic)
                        .is_some_and(|t| t.presence.is_newer(&r));
                    if !fresh {
                        continue;
                    }
                    let content = Broadcast::Presence(r);
                    let id = content.id();
                    if let Err(reason) = self.validate(topic, &id, &content, now) {
                        self.reject(from, reason);
                        continue;
                    }
                    let mut pres = Vec::new();
                    let mut pt = Vec::new();
                    if let (Some(t), Broadcast::Presence(r)) =
                        (self.topics.get_mut(&topic), &content)
                    {
                        t.presence.handle_record(r.clone(), now, &mut pres);
                        // News from a snapshot is passed on: when two parts of a topic's
                        // overlay merge, each learns the other's presence at once, not at
                        // the next refresh.
                        if !t.plumtree.is_known(&id) {
                            t.plumtree.broadcast(id, content, now, &mut pt);
                        }
                    }
                    self.on_presence(topic, pres, now);
                    self.on_plumtree(topic, pt, now);
                }
            }
        }
    }

    fn on_gossip(
        &mut self,
        from: PeerId,
        topic: TopicId,
        hops: u16,
        content: Broadcast,
        now: Time,
    ) {
        let id = content.id();
        let known = self
            .topics
            .get(&topic)
            .is_some_and(|t| t.plumtree.is_known(&id));
        if !known {
            if let Err(reason) = self.validate(topic, &id, &content, now) {
                self.reject(from, reason);
                return;
            }
        }
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        let mut ev = Vec::new();
        t.plumtree
            .handle_gossip(from, hops, id, content, now, &mut ev);
        self.on_plumtree(topic, ev, now);
    }

    /// Every check a new broadcast must pass before it is delivered or forwarded; the
    /// signature last, as it costs the most.
    fn validate(
        &mut self,
        topic: TopicId,
        id: &MessageId,
        content: &Broadcast,
        now: Time,
    ) -> Result<(), Reject> {
        if content.topic() != topic {
            return Err(Reject::TopicMismatch);
        }
        check_broadcast(content, &self.config.limits).map_err(|_| Reject::Oversized)?;
        let issued = content.issued_ms();
        let now_ms = now.as_millis();
        if issued > now_ms.saturating_add(self.config.max_future_skew.as_millis() as u64) {
            return Err(Reject::FutureDated);
        }
        if issued.saturating_add(self.config.max_age.as_millis() as u64) < now_ms {
            return Err(Reject::TooOld);
        }
        if let (Broadcast::Message(m), Some(t)) = (content, self.topics.get(&topic)) {
            t.order
                .check(&m.author, m.seq)
                .map_err(|_| Reject::Replay)?;
        }
        if !self.verifier.verify(id, content) {
            return Err(Reject::BadSignature);
        }
        Ok(())
    }

    fn reject(&mut self, peer: PeerId, reason: Reject) {
        *self
            .counters
            .rejected
            .entry(format!("{reason:?}"))
            .or_default() += 1;
        self.events.push_back(Event::Rejected { peer, reason });
    }

    // ------------------------------------------------------------------------------------
    // Discovery

    /// Looks for members of `topic` if its overlay is empty, or (less often) for other parts
    /// of its overlay.
    fn discover(&mut self, topic: TopicId, now: Time) {
        let dc = self.config.discovery.clone();
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        let active = t.membership.active().len();
        let alone = active == 0;
        let under_full = active < self.config.topic_membership.active_view_capacity;
        let (walks, ttl) = if alone {
            let delay = t.walk_backoff;
            t.walk_backoff = (t.walk_backoff * 2).min(dc.retry_max);
            t.next_walk = now + delay;
            let candidates = known_members(&self.directory, &self.global, &topic);
            if let Some(first) = candidates.choose(&mut self.rng).cloned() {
                let mut ev = Vec::new();
                for c in candidates.iter().filter(|c| c.id != first.id) {
                    t.membership.add_passive(c.clone());
                }
                t.membership.join(first, now, &mut ev);
                self.on_topic_membership(topic, ev, now);
                return;
            }
            (dc.walk_fanout, dc.walk_length)
        } else {
            // Far walks, looking for other parts of the topic's overlay (and, for a view
            // below capacity, for members to fill it): soon after a change of neighbours,
            // then backing off to the maintenance interval.
            let cap = if under_full {
                dc.retry_max
            } else {
                dc.maintenance_interval
            };
            let delay = t
                .walk_backoff
                .min(cap)
                .mul_f64(self.rng.gen_range(0.5..1.5));
            t.walk_backoff = (t.walk_backoff * 2).min(cap);
            t.next_walk = now + delay;
            (1, dc.walk_length + dc.walk_skip)
        };
        let mut targets = self.global.active();
        targets.shuffle(&mut self.rng);
        for p in targets.into_iter().take(walks) {
            self.send(
                p,
                Message::Discovery(DiscoveryMsg::FindTopic {
                    topic,
                    origin: self.me.clone(),
                    ttl,
                }),
            );
        }
    }

    fn on_discovery(&mut self, from: PeerId, msg: DiscoveryMsg, now: Time) {
        let dc = self.config.discovery.clone();
        match msg {
            DiscoveryMsg::Topics(topics) => {
                if self.global.is_active(&from) {
                    // A topic we are alone on that this neighbour has: join it now rather
                    // than at the next walk retry (a new node's first walk ran before it
                    // had any neighbour, so it would wait a full retry interval).
                    let alone: Vec<TopicId> = topics
                        .iter()
                        .filter(|t| {
                            self.topics
                                .get(t)
                                .is_some_and(|s| s.membership.active().is_empty())
                        })
                        .copied()
                        .collect();
                    self.directory.set_neighbor_topics(from, topics);
                    for topic in alone {
                        self.discover(topic, now);
                    }
                }
            }
            DiscoveryMsg::FindTopic { topic, origin, ttl } => {
                if origin.id == self.me.id {
                    return;
                }
                let ttl = ttl.min(dc.walk_length + dc.walk_skip);
                let looking = ttl <= dc.walk_length;
                if let Some(t) = self.topics.get(&topic).filter(|_| looking) {
                    // A member answers: itself first, then members it knows.
                    let mut members = vec![self.me.clone()];
                    members.extend(
                        t.membership
                            .active()
                            .iter()
                            .filter_map(|p| t.membership.peer_info(p)),
                    );
                    members.retain(|p| p.id != origin.id);
                    members.truncate(dc.answer_peers);
                    let recent = t
                        .plumtree
                        .settled_ids(dc.answer_recent, now - dc.settled_after);
                    self.events.push_back(Event::LearnedPeer(origin.clone()));
                    self.send(
                        origin.id,
                        Message::Discovery(DiscoveryMsg::TopicPeers {
                            topic,
                            peers: members,
                            recent,
                        }),
                    );
                    return;
                }
                // Not a member: hand the walk to a member we know of, else walk on.
                let mut known = known_members(&self.directory, &self.global, &topic);
                known.retain(|p| p.id != origin.id && p.id != from);
                if !looking {
                    known.clear();
                }
                let next = match known.choose(&mut self.rng) {
                    Some(member) => {
                        self.events.push_back(Event::LearnedPeer(member.clone()));
                        Some((member.id, ttl))
                    }
                    None if ttl > 0 => {
                        let candidates: Vec<PeerId> = self
                            .global
                            .active()
                            .into_iter()
                            .filter(|p| *p != from && *p != origin.id)
                            .collect();
                        candidates.choose(&mut self.rng).map(|&p| (p, ttl - 1))
                    }
                    None => None,
                };
                if let Some((p, ttl)) = next {
                    self.send(
                        p,
                        Message::Discovery(DiscoveryMsg::FindTopic { topic, origin, ttl }),
                    );
                }
            }
            DiscoveryMsg::TopicPeers {
                topic,
                peers,
                recent,
            } => {
                let me = self.me.id;
                self.directory.add_hints(topic, &peers, &me, &dc);
                let Some(t) = self.topics.get_mut(&topic) else {
                    return;
                };
                let peers: Vec<PeerInfo> = peers.into_iter().filter(|p| p.id != me).collect();
                for p in &peers {
                    self.events.push_back(Event::LearnedPeer(p.clone()));
                }
                let Some(first) = peers.first().cloned() else {
                    return;
                };
                // Departure from HyParView: it has no way to merge two overlays. An answer
                // from a member that has seen broadcasts we have not means a separate part
                // of the topic's overlay (formed apart, or split by a partition): joining
                // it merges the two.
                // Only ids we have never seen count. (An answer naming none is no sign: a
                // member deeper in the tree gets a broadcast later, so its "settled" list
                // can be empty while ours is not; treating that as separate made false
                // merge joins that kept reshaping the tree.) A part with no traffic of its
                // own is found from its side, where the other part's ids are unknown.
                let separate = recent.iter().any(|id| !t.plumtree.is_known(id));
                let alone = t.membership.active().is_empty();
                let under_full =
                    t.membership.active().len() < self.config.topic_membership.active_view_capacity;
                if alone || separate || under_full {
                    for p in peers.iter().skip(1) {
                        t.membership.add_passive(p.clone());
                    }
                }
                if alone || separate {
                    if separate && !alone {
                        self.counters.merge_joins += 1;
                    }
                    let mut ev = Vec::new();
                    t.membership.join(first, now, &mut ev);
                    self.on_topic_membership(topic, ev, now);
                } else if under_full {
                    t.membership.add_passive(first);
                }
            }
        }
    }
}

/// Members of `topic` this node knows of: network-wide neighbours that announced it (with
/// their addresses), then hints remembered from discovery answers.
fn known_members(
    directory: &discovery::Directory,
    global: &hyparview::State,
    topic: &TopicId,
) -> Vec<PeerInfo> {
    let mut known: Vec<PeerInfo> = directory
        .neighbors_on(topic)
        .into_iter()
        .filter_map(|p| global.peer_info(&p))
        .collect();
    known.extend(directory.hints(topic));
    known
}
