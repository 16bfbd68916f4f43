//! The network actor: one tokio task owns the protocol [`State`] and everything that
//! touches it. It drives the protocol's timers with real time, turns its
//! [`Event::Send`]s into frames on QUIC connections, feeds it decoded frames, and hands
//! deliveries and presence changes to the application's bounded queues.
//!
//! Tasks around the actor (never sharing state with it, only channels):
//! - the accept loop: finished inbound handshakes → [`Internal::Accepted`];
//! - one dial task per dial → [`Internal::Dialed`];
//! - per connection one reader (reads the peer's streams through
//!   [`Connection::recv`] and decodes frames off the actor, so decoding runs in parallel
//!   with protocol work) and one writer per stream class.
//!
//! Back-pressure and bounds: commands and inbound frames reach the actor over bounded
//! channels (readers wait when it is busy, and QUIC flow control then slows the peer);
//! the actor itself never waits on anyone: writer queues, frames waiting for a dial and
//! application queues are bounded and drop (counted by reason) when full.
//!
//! Admission and abuse: every connection, inbound or outbound, passes the application's
//! admission hook and the ban list before it is used (a private network's credential was
//! already checked by the transport). Per-connection rates are token buckets in each
//! connection's reader task, checked before the frame is decoded (frames) or before the
//! actor sees it (broadcasts, IHAVE entries, grafts): the reader is the one place that
//! sees every frame of one connection, on real time, without shared state, and a flood
//! is stopped there before it costs the actor anything; the protocol core stays
//! policy-free and the simulator unchanged. A peer that breaks the protocol (undecodable
//! or oversized frame, bad signature, topic mismatch, a rate exceeded) is disconnected
//! with [`CODE_BANNED`] and kept out for `PeerLimits::ban_duration`.
//!
//! One connection per peer pair: when two exist (simultaneous dials), both sides keep the
//! one dialed by the lower [`PeerId`]; a connection older than [`DUPLICATE_WINDOW`] is
//! replaced by a new one from the same peer instead (the old one is most likely dead: the
//! peer restarted). The loser is closed after a grace period so frames already queued on
//! it still arrive.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::addr::{decode_addrs, encode_addrs};
use super::queue::Queue;
use super::transport::{Connection, Endpoint, StreamClass, TransportError, CODE_NORMAL};
use super::transport::{CODE_BANNED, CODE_PROTOCOL_VIOLATION, CODE_REFUSED};
use crate::admission::{AdmissionHook, PeerLimits, Refusal, TokenBucket};
use crate::identity::PeerId;
use crate::node::{Error, Item, Message as AppMessage, NetEvent, Receipt, Stats};
use crate::proto::presence::{Entry, PresenceChange, PresenceEvent};
use crate::proto::{self, Event, Failure, Reject, State, Time};
use crate::wire::{
    decode_frame, encode_frame, GossipMsg, Limits, Message, PeerInfo, TopicId, TopicMsg,
};

/// Two connections to one peer established within this window are a simultaneous dial
/// (keep the lower id's); beyond it the newer replaces the older (the peer restarted).
pub(crate) const DUPLICATE_WINDOW: Duration = Duration::from_secs(3);
/// A connection replaced by another is closed after this grace, so that frames already
/// queued on it are still delivered.
const RETIRE_GRACE: Duration = Duration::from_secs(2);
/// Frames waiting for a dial to finish, per peer.
const PENDING_PER_PEER: usize = 256;
/// Addresses remembered (peers learned from the protocol, oldest forgotten first).
const ADDRESS_BOOK: usize = 4096;
/// First retry delay after a failed dial; doubles up to [`DIAL_BACKOFF_MAX`].
const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest retry delay after failed dials.
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Housekeeping period: idle connections, expired back-offs.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// A connection to a peer that is no neighbour, idle this long, is closed. Short: such
/// contacts (shuffle and discovery replies, join walks that ended elsewhere) are one-off,
/// and each open connection holds about 45 KB (QUIC state, TLS keys, tasks); with 30 s,
/// an idle node of 10 topics kept about 13 of them open from shuffles alone (45
/// connections against 32). A later contact dials again (one handshake).
const IDLE_CLOSE: Duration = Duration::from_secs(5);
/// Longest wait at shutdown for queued frames to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Inputs handled per wake-up before events are drained (bounds latency under load).
const BATCH: usize = 64;
/// A writer sends at most this many queued frames in one write…
const WRITE_BATCH_FRAMES: usize = 256;
/// …and stops adding frames once the write is this large.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Longest a publish waits for a neighbour's payload queue to drain below half (its
/// backpressure); after this it returns and a still-full queue drops, counted as
/// `send_queue_full`. Well under [`crate::node::CALL_TIMEOUT`].
const PUBLISH_HOLD_MAX: Duration = Duration::from_secs(1);

/// Sizes of the actor's queues (see [`crate::node::Config`]).
#[derive(Clone, Debug)]
pub(crate) struct Queues {
    /// Frames queued per connection for the data class.
    pub data: usize,
    /// Frames queued per connection for the control class.
    pub control: usize,
    /// Inbound decoded frames waiting for the actor (shared by all connections).
    pub inbound: usize,
    /// Most connections at once.
    pub max_connections: usize,
}

/// A peer to join through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JoinTarget {
    /// Its identity, if known (then a dial that reaches another key fails).
    pub id: Option<PeerId>,
    /// Where to reach it.
    pub addrs: Vec<SocketAddr>,
}

/// A request of the application.
pub(crate) enum Command {
    Join(Vec<JoinTarget>),
    Subscribe {
        topic: TopicId,
        queue: Arc<Queue<Item>>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A subscription was closed (its queue is marked closed).
    Unsubscribe(TopicId),
    Publish {
        topic: TopicId,
        payload: Bytes,
        reply: oneshot::Sender<Result<Receipt, Error>>,
    },
    SetPresence {
        topic: TopicId,
        metadata: Bytes,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    ClearPresence(TopicId),
    Online {
        topic: TopicId,
        reply: oneshot::Sender<Vec<Entry>>,
    },
    TopicTree {
        topic: TopicId,
        reply: oneshot::Sender<(Vec<PeerId>, Vec<PeerId>)>,
    },
    Events(Arc<Queue<NetEvent>>),
    Stats(oneshot::Sender<Stats>),
    Shutdown(oneshot::Sender<()>),
}

/// What the actor's helper tasks report.
enum Internal {
    Accepted(Connection),
    Dialed {
        /// The peer dialed (None: a bootstrap address of unknown identity).
        peer: Option<PeerId>,
        result: Result<Connection, (Option<SocketAddr>, TransportError)>,
    },
    Frame {
        peer: PeerId,
        msg: Message,
        len: usize,
    },
    BadFrame {
        peer: PeerId,
        conn: u64,
        error: String,
    },
    Closed {
        peer: PeerId,
        conn: u64,
        error: TransportError,
    },
    /// A connection's reader found a rate exceeded.
    Abuse {
        peer: PeerId,
        conn: u64,
        reason: &'static str,
    },
    /// The transport refused an inbound connection (private network credential).
    Refused {
        peer: Option<PeerId>,
        reason: &'static str,
    },
}

struct Conn {
    id: u64,
    conn: Connection,
    dialed_by_me: bool,
    since: Instant,
    last_active: Instant,
    control: mpsc::Sender<Bytes>,
    data: mpsc::Sender<Bytes>,
    writers: [JoinHandle<()>; 2],
}

#[derive(Default)]
struct Slot {
    conn: Option<Conn>,
    pending: VecDeque<(StreamClass, Bytes)>,
    dialing: bool,
    /// No dial before this; the delay that produced it.
    backoff: Option<(Instant, Duration)>,
}

/// The monotonic wall clock the protocol runs on.
#[derive(Default)]
struct Clock {
    last: u64,
}

impl Clock {
    fn now(&mut self) -> Time {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.last = self.last.max(wall);
        Time::from_micros(self.last)
    }
}

#[derive(Default)]
struct Counters {
    msgs_in: u64,
    msgs_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Times the actor woke for a timer (protocol deadline or housekeeping).
    timer_wakeups: u64,
    drops: BTreeMap<&'static str, u64>,
    /// Connections refused, by reason.
    refused: BTreeMap<&'static str, u64>,
    /// Peers cut off for breaking the protocol, by reason.
    cut_off: BTreeMap<&'static str, u64>,
}

impl Counters {
    fn drop(&mut self, why: &'static str) {
        *self.drops.entry(why).or_default() += 1;
    }
}

/// The actor (see the module docs).
pub(crate) struct Driver {
    state: State,
    me: PeerId,
    endpoint: Arc<Endpoint>,
    limits: Limits,
    queues: Queues,
    clock: Clock,
    peers: HashMap<PeerId, Slot>,
    book: HashMap<PeerId, Vec<SocketAddr>>,
    book_order: VecDeque<PeerId>,
    subs: BTreeMap<TopicId, Vec<Arc<Queue<Item>>>>,
    watchers: Vec<Arc<Queue<NetEvent>>>,
    joined: bool,
    next_conn: u64,
    closing: bool,
    counters: Counters,
    internal_tx: mpsc::Sender<Internal>,
    internal_rx: Option<mpsc::Receiver<Internal>>,
    /// Writers signal here after each write, so held publishes can be released.
    drained: Arc<Notify>,
    /// Some payload queue was seen more than half full (rechecked before holding).
    congested: bool,
    /// Publish replies held back while a payload queue is congested (backpressure on the
    /// publisher), in order; and since when.
    held: VecDeque<HeldReply>,
    held_since: Option<Instant>,
    frames: FrameCache,
    /// The application's admission decision (None: everyone).
    hook: Option<AdmissionHook>,
    peer_limits: PeerLimits,
    /// Peers kept out, and until when.
    banned: HashMap<PeerId, Instant>,
    /// Dials (with or without a known identity) whose handshake is under way.
    dials_in_flight: usize,
}

/// A publish answer waiting for queue space, and the answer.
type HeldReply = (
    oneshot::Sender<Result<Receipt, Error>>,
    Result<Receipt, Error>,
);

/// Encodes each message once for all the peers it goes to: the protocol emits one send per
/// eager peer with the same content back to back, so comparing with the last message
/// (a memcmp) replaces a CBOR encode and an allocation per peer.
#[derive(Default)]
struct FrameCache {
    last: Option<(Message, Bytes)>,
}

impl FrameCache {
    fn encode(&mut self, msg: Message) -> Bytes {
        if let Some((m, f)) = &self.last {
            if *m == msg {
                return f.clone();
            }
        }
        let frame = Bytes::from(encode_frame(&msg));
        self.last = Some((msg, frame.clone()));
        frame
    }

    /// Forgets the last message (it is not kept alive past a drain).
    fn clear(&mut self) {
        self.last = None;
    }
}

impl Driver {
    pub(crate) fn new(
        mut state: State,
        endpoint: Endpoint,
        limits: Limits,
        queues: Queues,
    ) -> Self {
        // Same verdicts as the default checker at about half the CPU (see its docs).
        state.set_verifier(Box::new(super::verify::FastVerify::default()));
        let (internal_tx, internal_rx) = mpsc::channel(queues.inbound.max(16));
        Driver {
            me: state.peer_id(),
            state,
            endpoint: Arc::new(endpoint),
            limits,
            queues,
            clock: Clock::default(),
            peers: HashMap::new(),
            book: HashMap::new(),
            book_order: VecDeque::new(),
            subs: BTreeMap::new(),
            watchers: Vec::new(),
            joined: false,
            next_conn: 0,
            closing: false,
            counters: Counters::default(),
            internal_tx,
            internal_rx: Some(internal_rx),
            drained: Arc::new(Notify::new()),
            congested: false,
            held: VecDeque::new(),
            held_since: None,
            frames: FrameCache::default(),
            hook: None,
            peer_limits: PeerLimits::default(),
            banned: HashMap::new(),
            dials_in_flight: 0,
        }
    }

    /// Sets the admission hook and the per-peer limits (before [`Driver::run`]).
    pub(crate) fn set_admission(&mut self, hook: Option<AdmissionHook>, limits: PeerLimits) {
        self.hook = hook;
        self.peer_limits = limits;
    }

    /// Whether `peer` may be connected to now; counts and logs a refusal.
    fn admit(&mut self, peer: &PeerId, direction: &'static str) -> Result<(), Refusal> {
        let refusal = if self.is_banned(peer) {
            Some(Refusal::Banned)
        } else if self.hook.as_ref().is_some_and(|h| !h.admits(peer)) {
            Some(Refusal::Hook)
        } else {
            None
        };
        match refusal {
            None => Ok(()),
            Some(r) => {
                tracing::info!(peer = %peer.short(), direction, reason = r.as_str(), "connection refused");
                self.refuse(r.as_str());
                Err(r)
            }
        }
    }

    /// Whether `peer` is kept out right now.
    fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned
            .get(peer)
            .is_some_and(|until| *until > Instant::now())
    }

    fn refuse(&mut self, reason: &'static str) {
        *self.counters.refused.entry(reason).or_default() += 1;
    }

    /// Disconnects a peer that broke the protocol and keeps it out for the ban duration.
    fn cut_off(&mut self, peer: PeerId, reason: &'static str) {
        let until = Instant::now() + self.peer_limits.ban_duration;
        tracing::warn!(peer = %peer.short(), reason, ban = ?self.peer_limits.ban_duration, "peer broke the protocol: disconnected and kept out");
        *self.counters.cut_off.entry(reason).or_default() += 1;
        if self.banned.len() >= self.peer_limits.max_banned && !self.banned.contains_key(&peer) {
            let soonest = self.banned.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p);
            if let Some(p) = soonest {
                self.banned.remove(&p);
            }
        }
        if self.peer_limits.max_banned > 0 {
            self.banned.insert(peer, until);
        }
        let slot = self.peers.entry(peer).or_default();
        slot.pending.clear();
        slot.backoff = Some((until, DIAL_BACKOFF_MAX));
        let had = slot.conn.take();
        if let Some(c) = had {
            let text = format!("kept out for {:?}: {reason}", self.peer_limits.ban_duration);
            c.conn.close_with(CODE_BANNED, &text);
            for w in c.writers {
                w.abort();
            }
        }
        let now = self.clock.now();
        self.state.peer_failed(peer, Failure::Disconnected, now);
    }

    /// Runs until a [`Command::Shutdown`] (or every command sender is gone).
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let span = tracing::info_span!("starling_node", peer = %self.me.short());
        async move {
            let Some(mut internal) = self.internal_rx.take() else {
                return;
            };
            self.spawn_accept_loop();
            let sleep = tokio::time::sleep(Duration::from_secs(3600));
            tokio::pin!(sleep);
            let mut armed: Option<Time> = None;
            let mut last_fired: Option<Time> = None;
            // Housekeeping is due every HOUSEKEEPING and runs on the next protocol timer
            // after that (an idle node has one every probe round); its own timer is only a
            // fallback one period later, so it adds no wake-up of its own.
            let mut housekeeping_due = Instant::now() + HOUSEKEEPING;
            let housekeeping = tokio::time::sleep_until(housekeeping_due + HOUSEKEEPING);
            tokio::pin!(housekeeping);
            let drained = Arc::clone(&self.drained);
            let mut inputs: Vec<Internal> = Vec::with_capacity(BATCH);
            tracing::info!("node started");
            loop {
                self.drain();
                let next = self.state.poll_timeout();
                if next != armed {
                    if let Some(t) = next {
                        let now = self.clock.now();
                        let mut wait = t.saturating_since(now);
                        // A deadline the last firing did not move: do not spin on it.
                        if last_fired == Some(t) {
                            wait = wait.max(Duration::from_millis(1));
                        }
                        sleep.as_mut().reset(Instant::now() + wait);
                    }
                    armed = next;
                }
                tokio::select! {
                    cmd = commands.recv() => match cmd {
                        Some(Command::Shutdown(reply)) => {
                            self.shutdown().await;
                            let _ = reply.send(());
                            return;
                        }
                        Some(cmd) => self.command(cmd),
                        None => {
                            self.shutdown().await;
                            return;
                        }
                    },
                    Some(first) = internal.recv() => {
                        inputs.push(first);
                        while inputs.len() < BATCH {
                            match internal.try_recv() {
                                Ok(i) => inputs.push(i),
                                Err(_) => break,
                            }
                        }
                        self.verify_ahead(&inputs);
                        for i in inputs.drain(..) {
                            self.internal(i);
                        }
                    }
                    () = &mut sleep, if armed.is_some() => {
                        self.counters.timer_wakeups += 1;
                        let now = self.clock.now();
                        last_fired = armed;
                        armed = None;
                        self.state.handle_timeout(now);
                        if Instant::now() >= housekeeping_due {
                            self.housekeeping();
                            housekeeping_due = Instant::now() + HOUSEKEEPING;
                            housekeeping.as_mut().reset(housekeeping_due + HOUSEKEEPING);
                        }
                    }
                    () = &mut housekeeping => {
                        self.counters.timer_wakeups += 1;
                        self.housekeeping();
                        housekeeping_due = Instant::now() + HOUSEKEEPING;
                        housekeeping.as_mut().reset(housekeeping_due + HOUSEKEEPING);
                    }
                    () = drained.notified(), if !self.held.is_empty() => self.release_held(false),
                    () = tokio::time::sleep_until(
                        self.held_since.unwrap_or_else(Instant::now) + PUBLISH_HOLD_MAX
                    ), if self.held_since.is_some() => self.release_held(true),
                }
            }
        }
        .instrument(span)
        .await
    }

    fn spawn_accept_loop(&self) {
        let endpoint = Arc::clone(&self.endpoint);
        let tx = self.internal_tx.clone();
        tokio::spawn(
            async move {
                while let Some(result) = endpoint.accept().await {
                    match result {
                        Ok(conn) => {
                            if tx.send(Internal::Accepted(conn)).await.is_err() {
                                return;
                            }
                        }
                        Err(TransportError::NotAdmitted { peer, error }) => {
                            let refused = Internal::Refused {
                                peer: Some(peer),
                                reason: error.as_str(),
                            };
                            if tx.send(refused).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "inbound handshake failed"),
                    }
                }
            }
            .in_current_span(),
        );
    }

    // ------------------------------------------------------------------------------------
    // Application commands

    fn command(&mut self, cmd: Command) {
        let now = self.clock.now();
        match cmd {
            Command::Join(targets) => {
                for t in targets {
                    match t.id {
                        Some(id) if id == self.me => {}
                        Some(id) => {
                            let info = PeerInfo {
                                id,
                                addr: encode_addrs(&t.addrs),
                            };
                            self.learn(&info);
                            // A fresh join may retry a peer that failed before.
                            if let Some(slot) = self.peers.get_mut(&id) {
                                slot.backoff = None;
                            }
                            self.state.join(vec![info], now);
                        }
                        None => self.dial_unknown(t.addrs),
                    }
                }
            }
            Command::Subscribe {
                topic,
                queue,
                reply,
            } => {
                let result = self.state.subscribe(topic, now).map_err(Error::from);
                if result.is_ok() {
                    // A new subscription starts with who is online already (as Online
                    // events), then gets the changes: the actor owns both, so nothing is
                    // missed or repeated between the snapshot and the first change.
                    for entry in self.state.online(&topic) {
                        queue.push(Item::Presence(PresenceEvent {
                            topic,
                            peer: entry.peer,
                            change: PresenceChange::Online,
                            metadata: entry.metadata,
                        }));
                    }
                    self.subs.entry(topic).or_default().push(queue);
                }
                let _ = reply.send(result);
            }
            Command::Unsubscribe(topic) => self.prune_subscriptions(topic),
            Command::Publish {
                topic,
                payload,
                reply,
            } => {
                let result = self
                    .state
                    .publish(topic, payload, now)
                    .map(|p| Receipt {
                        id: p.id,
                        seq: p.seq,
                        peers: p.peers,
                    })
                    .map_err(Error::from);
                // Backpressure: a publisher faster than a neighbour's link waits (its
                // call does not return) until the payload queue drains below half.
                if result.is_ok()
                    && (!self.held.is_empty() || (self.congested && self.data_congested()))
                {
                    self.held_since.get_or_insert_with(Instant::now);
                    self.held.push_back((reply, result));
                } else {
                    let _ = reply.send(result);
                }
            }
            Command::SetPresence {
                topic,
                metadata,
                reply,
            } => {
                let result = self
                    .state
                    .set_presence(topic, metadata, now)
                    .map_err(Error::from);
                let _ = reply.send(result);
            }
            Command::ClearPresence(topic) => self.state.clear_presence(&topic, now),
            Command::Online { topic, reply } => {
                let _ = reply.send(self.state.online(&topic));
            }
            Command::TopicTree { topic, reply } => {
                let _ = reply.send(self.state.topic_tree(&topic));
            }
            Command::Events(queue) => self.watchers.push(queue),
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            // Handled by the loop.
            Command::Shutdown(reply) => {
                let _ = reply.send(());
            }
        }
    }

    /// Drops closed subscription queues of `topic`; leaves the topic when none is left.
    fn prune_subscriptions(&mut self, topic: TopicId) {
        let Some(list) = self.subs.get_mut(&topic) else {
            return;
        };
        list.retain(|q| !q.is_reader_closed());
        if list.is_empty() {
            self.subs.remove(&topic);
            let now = self.clock.now();
            self.state.unsubscribe(&topic, now);
            tracing::debug!(topic = %topic.short(), "unsubscribed");
        }
    }

    /// Whether some connection's payload queue is more than half full.
    fn data_congested(&self) -> bool {
        let congested =
            |c: &Conn| !c.data.is_closed() && c.data.capacity() * 2 < c.data.max_capacity();
        self.peers
            .values()
            .filter_map(|s| s.conn.as_ref())
            .any(congested)
    }

    /// Answers held publishes once the queues drained (or, `force`, after the longest
    /// hold).
    fn release_held(&mut self, force: bool) {
        self.congested = self.data_congested();
        if self.congested && !force {
            return;
        }
        if self.congested {
            tracing::debug!(
                held = self.held.len(),
                "publish backpressure: queues still full after the longest hold"
            );
        }
        self.held_since = None;
        for (reply, result) in self.held.drain(..) {
            let _ = reply.send(result);
        }
    }

    fn stats(&self) -> Stats {
        let c = self.state.counters();
        let mut drops: BTreeMap<String, u64> = self
            .counters
            .drops
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        for (reason, n) in &c.rejected {
            *drops.entry(format!("rejected_{reason}")).or_default() += n;
        }
        Stats {
            peers: self.peers.values().filter(|s| s.conn.is_some()).count(),
            neighbors: self.state.neighbors().len(),
            topics: self.state.topics().len(),
            msgs_in: self.counters.msgs_in,
            msgs_out: self.counters.msgs_out,
            bytes_in: self.counters.bytes_in,
            bytes_out: self.counters.bytes_out,
            timer_wakeups: self.counters.timer_wakeups,
            published: c.published,
            delivered: c.delivered,
            drops,
            refused: {
                let mut refused = to_strings(&self.counters.refused);
                let busy = self.endpoint.handshakes_refused();
                if busy > 0 {
                    refused.insert("too_many_handshakes".into(), busy);
                }
                refused
            },
            cut_off: to_strings(&self.counters.cut_off),
            banned: self
                .banned
                .values()
                .filter(|t| **t > Instant::now())
                .count(),
            tables: self.state.table_sizes(),
            address_book: self.book.len(),
            pending_frames: self.peers.values().map(|s| s.pending.len()).sum(),
            declared_dead: c.declared_dead,
        }
    }

    // ------------------------------------------------------------------------------------
    // Protocol events

    fn drain(&mut self) {
        while let Some(ev) = self.state.poll_event() {
            match ev {
                Event::Send(peer, msg) => {
                    let class = class_of(&msg);
                    let frame = self.frames.encode(msg);
                    self.send_to(peer, class, frame);
                }
                Event::LearnedPeer(info) => self.learn(&info),
                Event::NeighborUp(p) => {
                    tracing::debug!(peer = %p.short(), "neighbour up");
                    if !self.joined {
                        self.joined = true;
                        self.emit(NetEvent::Joined);
                    }
                    self.emit(NetEvent::NeighborUp(p));
                }
                Event::NeighborDown(p) => {
                    tracing::debug!(peer = %p.short(), "neighbour down");
                    if self.state.neighbors().is_empty() {
                        self.joined = false;
                    }
                    self.emit(NetEvent::NeighborDown(p));
                }
                Event::TopicNeighborUp(t, p) => self.emit(NetEvent::TopicNeighborUp(t, p)),
                Event::TopicNeighborDown(t, p) => self.emit(NetEvent::TopicNeighborDown(t, p)),
                Event::Deliver(d) => {
                    let topic = d.topic;
                    let msg = AppMessage {
                        topic: d.topic,
                        author: d.author,
                        seq: d.seq,
                        id: d.id,
                        issued_ms: d.issued_ms,
                        payload: d.payload,
                        hops: d.hops,
                    };
                    self.deliver_to_subscribers(topic, Item::Message(msg));
                }
                Event::Presence(p) => {
                    let topic = p.topic;
                    self.deliver_to_subscribers(topic, Item::Presence(p));
                }
                Event::Rejected { peer, reason } => {
                    tracing::debug!(peer = %peer.short(), ?reason, "broadcast refused");
                    // Only a forger sends these: every node checks a broadcast before it
                    // forwards it. (Oversized and future-dated broadcasts can come from an
                    // honest node with other limits or a skewed clock: refused, not banned.)
                    let why = match reason {
                        Reject::BadSignature => Some("bad_signature"),
                        Reject::TopicMismatch => Some("topic_mismatch"),
                        _ => None,
                    };
                    if let Some(why) = why {
                        if !self.is_banned(&peer) {
                            self.cut_off(peer, why);
                        }
                    }
                }
            }
        }
        self.frames.clear();
    }

    fn deliver_to_subscribers(&mut self, topic: TopicId, item: Item) {
        let Some(list) = self.subs.get(&topic) else {
            return;
        };
        let mut closed = false;
        for q in list {
            let (accepted, dropped) = q.push(item.clone());
            closed |= !accepted;
            if dropped {
                self.counters.drop("subscriber_lagged");
            }
        }
        if closed {
            self.prune_subscriptions(topic);
        }
    }

    fn emit(&mut self, ev: NetEvent) {
        let mut closed = false;
        for q in &self.watchers {
            let (accepted, dropped) = q.push(ev.clone());
            closed |= !accepted;
            if dropped {
                self.counters.drop("event_lagged");
            }
        }
        if closed {
            self.watchers.retain(|q| !q.is_reader_closed());
        }
    }

    /// Remembers where `info` can be reached (bounded; oldest forgotten first).
    fn learn(&mut self, info: &PeerInfo) {
        if info.id == self.me {
            return;
        }
        let addrs = decode_addrs(&info.addr);
        if addrs.is_empty() {
            return;
        }
        if self.book.insert(info.id, addrs).is_none() {
            self.book_order.push_back(info.id);
            while self.book_order.len() > ADDRESS_BOOK {
                if let Some(old) = self.book_order.pop_front() {
                    self.book.remove(&old);
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Sending and dialing

    fn send_to(&mut self, peer: PeerId, class: StreamClass, frame: Bytes) {
        let len = frame.len() as u64;
        let slot = self.peers.entry(peer).or_default();
        if let Some(c) = &slot.conn {
            let tx = match class {
                StreamClass::Control => &c.control,
                StreamClass::Data => &c.data,
            };
            match tx.try_send(frame) {
                Ok(()) => {
                    self.counters.msgs_out += 1;
                    self.counters.bytes_out += len;
                    if class == StreamClass::Data && tx.capacity() * 2 < tx.max_capacity() {
                        self.congested = true;
                    }
                }
                Err(mpsc::error::TrySendError::Full(_)) => match class {
                    StreamClass::Data => {
                        self.congested = true;
                        self.counters.drop("send_queue_full")
                    }
                    StreamClass::Control => self.counters.drop("control_queue_full"),
                },
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.counters.drop("connection_closed")
                }
            }
            if let Some(c) = slot.conn.as_mut() {
                c.last_active = Instant::now();
            }
            return;
        }
        if self.closing {
            self.counters.drop("shutting_down");
            return;
        }
        if let Some((until, _)) = slot.backoff {
            if Instant::now() < until {
                self.counters.drop("peer_unreachable");
                return;
            }
        }
        if slot.pending.len() >= PENDING_PER_PEER {
            self.counters.drop("dial_queue_full");
            return;
        }
        slot.pending.push_back((class, frame));
        if !slot.dialing {
            self.dial(peer);
        }
    }

    fn connection_count(&self) -> usize {
        self.peers.values().filter(|s| s.conn.is_some()).count()
    }

    fn dial(&mut self, peer: PeerId) {
        if let Err(r) = self.admit(&peer, "outbound") {
            self.dial_failed(peer, None, format!("refused: {}", r.as_str()));
            return;
        }
        if self.dials_in_flight >= self.peer_limits.max_pending_dials {
            self.counters.drop("dial_limit");
            self.dial_failed(peer, None, "too many pending dials".to_owned());
            return;
        }
        let addrs = self.book.get(&peer).cloned().unwrap_or_default();
        if addrs.is_empty() || self.connection_count() >= self.queues.max_connections {
            let reason = if addrs.is_empty() {
                "no known address"
            } else {
                "connection limit reached"
            };
            self.dial_failed(peer, None, reason.to_owned());
            return;
        }
        if let Some(slot) = self.peers.get_mut(&peer) {
            slot.dialing = true;
        }
        self.dials_in_flight += 1;
        tracing::debug!(peer = %peer.short(), ?addrs, "dialing");
        let endpoint = Arc::clone(&self.endpoint);
        let tx = self.internal_tx.clone();
        tokio::spawn(
            async move {
                let mut last = None;
                for addr in addrs {
                    match endpoint.connect(addr, Some(peer)).await {
                        Ok(conn) => {
                            let _ = tx
                                .send(Internal::Dialed {
                                    peer: Some(peer),
                                    result: Ok(conn),
                                })
                                .await;
                            return;
                        }
                        Err(e) => {
                            let wrong = matches!(e, TransportError::WrongPeer { .. });
                            last = Some((Some(addr), e));
                            if wrong {
                                break;
                            }
                        }
                    }
                }
                let err = last.unwrap_or((
                    None,
                    TransportError::Config("no address to dial".to_owned()),
                ));
                let _ = tx
                    .send(Internal::Dialed {
                        peer: Some(peer),
                        result: Err(err),
                    })
                    .await;
            }
            .in_current_span(),
        );
    }

    /// Dials bootstrap addresses of unknown identity; the first that answers is joined.
    fn dial_unknown(&mut self, addrs: Vec<SocketAddr>) {
        self.dials_in_flight += 1;
        let endpoint = Arc::clone(&self.endpoint);
        let tx = self.internal_tx.clone();
        tokio::spawn(
            async move {
                let mut last = None;
                for addr in addrs {
                    match endpoint.connect(addr, None).await {
                        Ok(conn) => {
                            let _ = tx
                                .send(Internal::Dialed {
                                    peer: None,
                                    result: Ok(conn),
                                })
                                .await;
                            return;
                        }
                        Err(e) => last = Some((Some(addr), e)),
                    }
                }
                // Always answered, so the count of dials in flight stays right.
                let err = last.unwrap_or((
                    None,
                    TransportError::Config("no address to dial".to_owned()),
                ));
                let _ = tx
                    .send(Internal::Dialed {
                        peer: None,
                        result: Err(err),
                    })
                    .await;
            }
            .in_current_span(),
        );
    }

    fn dial_failed(&mut self, peer: PeerId, addr: Option<SocketAddr>, reason: String) {
        tracing::debug!(peer = %peer.short(), ?addr, %reason, "dial failed");
        let slot = self.peers.entry(peer).or_default();
        slot.dialing = false;
        let dropped = slot.pending.len();
        slot.pending.clear();
        let delay = slot
            .backoff
            .map(|(_, d)| (d * 2).min(DIAL_BACKOFF_MAX))
            .unwrap_or(DIAL_BACKOFF_MIN);
        slot.backoff = Some((Instant::now() + delay, delay));
        for _ in 0..dropped {
            self.counters.drop("dial_failed");
        }
        self.emit(NetEvent::DialFailed {
            peer: Some(peer),
            addr,
            reason,
        });
        let now = self.clock.now();
        self.state.peer_failed(peer, Failure::DialFailed, now);
    }

    // ------------------------------------------------------------------------------------
    // Connections

    /// Lets the signature checker check the broadcasts of one drain together (a batch
    /// costs about half as much per signature; `net::verify`). Frames of banned peers are
    /// dropped unread, so they are left out.
    fn verify_ahead(&mut self, inputs: &[Internal]) {
        let msgs: Vec<&Message> = inputs
            .iter()
            .filter_map(|i| match i {
                Internal::Frame { peer, msg, .. } if !self.is_banned(peer) => Some(msg),
                _ => None,
            })
            .collect();
        self.state.verify_ahead(msgs);
    }

    fn internal(&mut self, i: Internal) {
        match i {
            Internal::Accepted(conn) => {
                if self.closing || self.connection_count() >= self.queues.max_connections {
                    self.refuse(Refusal::ConnectionLimit.as_str());
                    conn.close("connection limit reached");
                    return;
                }
                // The peer's socket address is where it listens (one socket per node).
                let peer = conn.peer_id();
                if let Err(r) = self.admit(&peer, "inbound") {
                    conn.close_with(refusal_code(r), r.as_str());
                    return;
                }
                if !self.book.contains_key(&peer) {
                    let info = PeerInfo {
                        id: peer,
                        addr: encode_addrs(&[conn.remote_addr()]),
                    };
                    self.learn(&info);
                }
                self.register(conn, false);
            }
            Internal::Dialed { peer, result } => {
                self.dials_in_flight = self.dials_in_flight.saturating_sub(1);
                self.dialed(peer, result);
            }
            Internal::Abuse { peer, conn, reason } => {
                if self
                    .peers
                    .get(&peer)
                    .and_then(|s| s.conn.as_ref())
                    .is_some_and(|c| c.id == conn)
                {
                    self.cut_off(peer, reason);
                }
            }
            Internal::Refused { peer, reason } => {
                tracing::info!(peer = ?peer.map(|p| p.short()), reason, "inbound connection refused");
                self.refuse(reason);
            }
            other => self.internal_more(other),
        }
    }

    /// A dial finished (the identity was proven; the admission hook is asked again, as
    /// for an inbound connection).
    fn dialed(
        &mut self,
        peer: Option<PeerId>,
        result: Result<Connection, (Option<SocketAddr>, TransportError)>,
    ) {
        let result = match result {
            Ok(conn) => match self.admit(&conn.peer_id(), "outbound") {
                Ok(()) => Ok(conn),
                Err(r) => {
                    conn.close_with(refusal_code(r), r.as_str());
                    let addr = conn.remote_addr();
                    Err((
                        Some(addr),
                        TransportError::Handshake {
                            addr,
                            reason: format!("refused: {}", r.as_str()),
                        },
                    ))
                }
            },
            Err((addr, e)) => {
                if let TransportError::NotAdmitted { error, .. } = &e {
                    self.refuse(error.as_str());
                }
                Err((addr, e))
            }
        };
        match (peer, result) {
            (Some(_), Ok(conn)) => self.register(conn, true),
            (Some(peer), Err((addr, e))) => self.dial_failed(peer, addr, e.to_string()),
            (None, Ok(conn)) => {
                let info = PeerInfo {
                    id: conn.peer_id(),
                    addr: encode_addrs(&[conn.remote_addr()]),
                };
                self.learn(&info);
                self.register(conn, true);
                let now = self.clock.now();
                if info.id != self.me {
                    self.state.join(vec![info], now);
                }
            }
            (None, Err((addr, e))) => {
                tracing::debug!(?addr, error = %e, "bootstrap dial failed");
                self.emit(NetEvent::DialFailed {
                    peer: None,
                    addr,
                    reason: e.to_string(),
                })
            }
        }
    }

    fn internal_more(&mut self, i: Internal) {
        match i {
            Internal::Frame { peer, msg, len } => {
                self.counters.msgs_in += 1;
                self.counters.bytes_in += len as u64;
                // Frames a cut-off peer had queued before it was cut off go nowhere.
                if self.is_banned(&peer) {
                    self.counters.drop("from_banned_peer");
                    return;
                }
                if let Some(c) = self.peers.get_mut(&peer).and_then(|s| s.conn.as_mut()) {
                    c.last_active = Instant::now();
                }
                let now = self.clock.now();
                self.state.handle_message(peer, msg, now);
            }
            Internal::BadFrame { peer, conn, error } => {
                tracing::warn!(peer = %peer.short(), %error, "undecodable frame: disconnecting");
                self.counters.drop("bad_frame");
                if let Some(slot) = self.peers.get_mut(&peer) {
                    if slot.conn.as_ref().is_some_and(|c| c.id == conn) {
                        if let Some(c) = slot.conn.take() {
                            c.conn
                                .close_with(CODE_PROTOCOL_VIOLATION, "undecodable frame");
                        }
                        self.cut_off(peer, "bad_frame");
                    }
                }
            }
            Internal::Closed { peer, conn, error } => {
                let Some(slot) = self.peers.get_mut(&peer) else {
                    return;
                };
                if slot.conn.as_ref().is_none_or(|c| c.id != conn) {
                    return; // a replaced connection
                }
                slot.conn = None;
                // The transport closed it for breaking the framing: keep the peer out too.
                let broke = match &error {
                    TransportError::FrameTooLarge { .. } => Some("oversized_frame"),
                    TransportError::Protocol(_) => Some("framing"),
                    _ => None,
                };
                if let Some(reason) = broke {
                    self.cut_off(peer, reason);
                    return;
                }
                let graceful = matches!(
                    error,
                    TransportError::ClosedByPeer { code, .. } if code == u64::from(CODE_NORMAL)
                ) || matches!(error, TransportError::ClosedLocally);
                tracing::debug!(peer = %peer.short(), %error, graceful, "connection ended");
                if !graceful {
                    let now = self.clock.now();
                    self.state.peer_failed(peer, Failure::Disconnected, now);
                }
            }
            // Handled by `internal`.
            Internal::Accepted(_)
            | Internal::Dialed { .. }
            | Internal::Abuse { .. }
            | Internal::Refused { .. } => {}
        }
    }

    /// Adopts a new connection, deduplicating against an existing one.
    fn register(&mut self, conn: Connection, dialed_by_me: bool) {
        let peer = conn.peer_id();
        if peer == self.me {
            conn.close("connected to self");
            return;
        }
        self.next_conn += 1;
        let id = self.next_conn;
        let tx = self.internal_tx.clone();
        let limits = self.limits.clone();
        let rates = Rates::new(&self.peer_limits);
        tokio::spawn(reader(conn.clone(), id, tx, limits, rates).in_current_span());
        let (control, control_rx) = mpsc::channel(self.queues.control.max(1));
        let (data, data_rx) = mpsc::channel(self.queues.data.max(1));
        let writers = [
            tokio::spawn(writer(conn.clone(), StreamClass::Control, control_rx, None)),
            tokio::spawn(writer(
                conn.clone(),
                StreamClass::Data,
                data_rx,
                Some(Arc::clone(&self.drained)),
            )),
        ];
        let now = Instant::now();
        let new = Conn {
            id,
            conn,
            dialed_by_me,
            since: now,
            last_active: now,
            control,
            data,
            writers,
        };
        let me = self.me;
        let slot = self.peers.entry(peer).or_default();
        slot.dialing = false;
        slot.backoff = None;
        match slot.conn.take() {
            None => slot.conn = Some(new),
            Some(old) => {
                let keep_new = old.dialed_by_me == new.dialed_by_me
                    || old.since.elapsed() > DUPLICATE_WINDOW
                    || new.dialed_by_me == (me < peer);
                let (keep, lose) = if keep_new { (new, old) } else { (old, new) };
                tracing::debug!(peer = %peer.short(), kept = keep.id, closed = lose.id, "duplicate connection");
                slot.conn = Some(keep);
                retire(lose, "duplicate connection");
            }
        }
        let pending: Vec<_> = slot.pending.drain(..).collect();
        for (class, frame) in pending {
            self.send_to(peer, class, frame);
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.banned.retain(|_, until| *until > now);
        let mut idle = Vec::new();
        for (peer, slot) in &self.peers {
            if let Some(c) = &slot.conn {
                if now.duration_since(c.last_active) > IDLE_CLOSE && !self.state.is_neighbor(peer) {
                    idle.push(*peer);
                }
            }
        }
        for peer in idle {
            if let Some(c) = self.peers.get_mut(&peer).and_then(|s| s.conn.take()) {
                tracing::debug!(peer = %peer.short(), "closing idle connection");
                retire(c, "idle");
            }
        }
        self.peers.retain(|_, s| {
            s.conn.is_some()
                || s.dialing
                || !s.pending.is_empty()
                || s.backoff.is_some_and(|(until, _)| until > now)
        });
        // Subscriptions closed while their topic was quiet.
        let topics: Vec<TopicId> = self
            .subs
            .iter()
            .filter(|(_, l)| l.iter().any(|q| q.is_reader_closed()))
            .map(|(t, _)| *t)
            .collect();
        for t in topics {
            self.prune_subscriptions(t);
        }
        self.watchers.retain(|q| !q.is_reader_closed());
    }

    /// Graceful shutdown: presence leave and disconnect notices, flush, close.
    async fn shutdown(&mut self) {
        tracing::info!("shutting down");
        self.closing = true;
        let now = self.clock.now();
        self.state.leave(now);
        self.drain();
        for q in self.subs.values().flatten() {
            q.close_writer();
        }
        for q in &self.watchers {
            q.close_writer();
        }
        let conns: Vec<Conn> = self
            .peers
            .values_mut()
            .filter_map(|s| s.conn.take())
            .collect();
        // Dropping the senders lets each writer finish its queue and stop.
        let mut flushes = Vec::new();
        for c in conns {
            let Conn { conn, writers, .. } = c;
            // A live peer acknowledges within a few round trips; a dead one never does.
            let patience = (conn.rtt() * 4 + Duration::from_millis(50)).min(FLUSH_TIMEOUT);
            flushes.push(tokio::spawn(async move {
                let flush = async {
                    for w in writers {
                        let _ = w.await;
                    }
                    conn.finish().await;
                };
                let _ = tokio::time::timeout(patience, flush).await;
                conn.close("shutdown");
            }));
        }
        let flush_all = async {
            for f in flushes {
                let _ = f.await;
            }
        };
        if tokio::time::timeout(FLUSH_TIMEOUT, flush_all)
            .await
            .is_err()
        {
            tracing::debug!("flush timed out");
        }
        self.endpoint.close();
        // The close packets go out at once; this only gives the endpoint a moment to send
        // them (waiting for full idleness would wait out dead peers' close timeouts).
        let _ = tokio::time::timeout(Duration::from_millis(50), self.endpoint.wait_idle()).await;
        tracing::info!("shut down");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // However the actor ends (shutdown, abort, panic), readers stop waiting.
        for q in self.subs.values().flatten() {
            q.close_writer();
        }
        for q in &self.watchers {
            q.close_writer();
        }
    }
}

/// Closes a connection that is no longer used, after a grace period (see the module docs).
fn retire(c: Conn, reason: &'static str) {
    let Conn { conn, writers, .. } = c;
    tokio::spawn(async move {
        for w in writers {
            let _ = w.await;
        }
        tokio::time::sleep(RETIRE_GRACE).await;
        conn.close(reason);
    });
}

/// Which stream a message travels on: membership and failure detection (network-wide or
/// a topic's) never wait behind a busy topic's payloads.
pub(crate) fn class_of(msg: &Message) -> StreamClass {
    match msg {
        Message::Membership(_) | Message::Swim(_) | Message::Discovery(_) => StreamClass::Control,
        Message::Topic {
            msg: TopicMsg::Membership(_),
            ..
        } => StreamClass::Control,
        Message::Topic { .. } => StreamClass::Data,
    }
}

/// One connection's token buckets (see the module docs for why they live here).
struct Rates {
    frames: TokenBucket,
    messages: TokenBucket,
    ihave: TokenBucket,
    graft: TokenBucket,
}

impl Rates {
    fn new(l: &PeerLimits) -> Self {
        Rates {
            frames: TokenBucket::new(l.frames_per_sec, l.burst),
            messages: TokenBucket::new(l.messages_per_sec, l.burst),
            ihave: TokenBucket::new(l.ihave_per_sec, l.burst),
            graft: TokenBucket::new(l.graft_per_sec, l.burst),
        }
    }

    /// The rate a decoded message exceeds, if any.
    fn check(&mut self, msg: &Message, now: std::time::Instant) -> Option<&'static str> {
        let g = match msg {
            Message::Topic {
                msg: TopicMsg::Gossip(g),
                ..
            } => g,
            // Each record of a snapshot costs a signature check, like a broadcast.
            Message::Topic {
                msg: TopicMsg::PresenceSnapshot(records),
                ..
            } => {
                let n = records.len().max(1) as f64;
                return (!self.messages.take(n, now)).then_some("message_rate");
            }
            _ => return None,
        };
        let (bucket, n, why) = match g {
            GossipMsg::Gossip { .. } => (&mut self.messages, 1, "message_rate"),
            GossipMsg::IHave(v) => (&mut self.ihave, v.len().max(1), "ihave_rate"),
            GossipMsg::Graft(v) => (&mut self.graft, v.len().max(1), "graft_rate"),
            GossipMsg::Prune => return None,
        };
        (!bucket.take(n as f64, now)).then_some(why)
    }
}

async fn reader(
    conn: Connection,
    id: u64,
    tx: mpsc::Sender<Internal>,
    limits: Limits,
    mut rates: Rates,
) {
    let peer = conn.peer_id();
    let abuse = |reason| Internal::Abuse {
        peer,
        conn: id,
        reason,
    };
    loop {
        match conn.recv().await {
            Ok((_, frame)) => {
                let now = std::time::Instant::now();
                if !rates.frames.take(1.0, now) {
                    let _ = tx.send(abuse("frame_rate")).await;
                    return;
                }
                match decode_frame(&frame, &limits) {
                    Ok(msg) => {
                        if let Some(why) = rates.check(&msg, now) {
                            let _ = tx.send(abuse(why)).await;
                            return;
                        }
                        let len = frame.len();
                        if tx.send(Internal::Frame { peer, msg, len }).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Internal::BadFrame {
                                peer,
                                conn: id,
                                error: e.to_string(),
                            })
                            .await;
                        return;
                    }
                }
            }
            Err(error) => {
                let _ = tx
                    .send(Internal::Closed {
                        peer,
                        conn: id,
                        error,
                    })
                    .await;
                return;
            }
        }
    }
}

/// Sends a connection's queued frames of one class, everything queued at once in one
/// write (bounded by [`WRITE_BATCH_FRAMES`] and [`WRITE_BATCH_BYTES`]); signals `drained`
/// after each write.
async fn writer(
    conn: Connection,
    class: StreamClass,
    mut rx: mpsc::Receiver<Bytes>,
    drained: Option<Arc<Notify>>,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    while let Some(frame) = rx.recv().await {
        let mut bytes = frame.len();
        batch.push(frame);
        while batch.len() < WRITE_BATCH_FRAMES && bytes < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(f) => {
                    bytes += f.len();
                    batch.push(f);
                }
                Err(_) => break,
            }
        }
        let result = conn.send_many(class, &batch).await;
        batch.clear();
        if let Some(d) = &drained {
            d.notify_one();
        }
        if let Err(e) = result {
            tracing::debug!(peer = %conn.peer_id().short(), %class, error = %e, "send failed");
            return;
        }
    }
}

/// The close code that tells a refused peer why.
fn refusal_code(r: Refusal) -> u32 {
    match r {
        Refusal::Banned => CODE_BANNED,
        _ => CODE_REFUSED,
    }
}

fn to_strings(m: &BTreeMap<&'static str, u64>) -> BTreeMap<String, u64> {
    m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The protocol configuration with the node's limits applied.
pub(crate) fn protocol_config(mut config: proto::Config, limits: &Limits) -> proto::Config {
    config.limits = limits.clone();
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SwimMsg;

    fn ping(nonce: u64) -> Message {
        Message::Swim(SwimMsg::Ping { nonce })
    }

    #[test]
    fn rates_count_broadcasts_ihave_entries_grafts_and_snapshot_records() {
        use crate::wire::{IHave, MessageId};
        let limits = PeerLimits {
            messages_per_sec: 10.0,
            ihave_per_sec: 10.0,
            graft_per_sec: 10.0,
            burst: Duration::from_secs(1),
            ..PeerLimits::default()
        };
        let topic = TopicId([1; 32]);
        let t0 = std::time::Instant::now();
        let gossip = |g| Message::Topic {
            topic,
            msg: TopicMsg::Gossip(g),
        };
        let ihave = gossip(GossipMsg::IHave(vec![
            IHave {
                id: MessageId([0; 32]),
                hops: 0,
            };
            6
        ]));
        let mut r = Rates::new(&limits);
        assert_eq!(r.check(&ihave, t0), None);
        assert_eq!(r.check(&ihave, t0), Some("ihave_rate"));
        let graft = gossip(GossipMsg::Graft(vec![MessageId([0; 32]); 10]));
        assert_eq!(r.check(&graft, t0), None);
        // An empty graft still counts one.
        assert_eq!(
            r.check(&gossip(GossipMsg::Graft(Vec::new())), t0),
            Some("graft_rate")
        );
        // Prunes and non-gossip traffic are only counted as frames.
        for _ in 0..100 {
            assert_eq!(r.check(&gossip(GossipMsg::Prune), t0), None);
            assert_eq!(r.check(&ping(1), t0), None);
        }
        let snapshot = Message::Topic {
            topic,
            msg: TopicMsg::PresenceSnapshot(Vec::new()),
        };
        for _ in 0..10 {
            assert_eq!(r.check(&snapshot, t0), None);
        }
        assert_eq!(r.check(&snapshot, t0), Some("message_rate"));
        // Refilled at the rate.
        assert_eq!(r.check(&snapshot, t0 + Duration::from_millis(200)), None);
    }

    #[test]
    fn frame_cache_encodes_a_repeated_message_once() {
        let mut cache = FrameCache::default();
        let a = cache.encode(ping(1));
        let b = cache.encode(ping(1));
        assert_eq!(a, Bytes::from(encode_frame(&ping(1))));
        // The same buffer, not an equal copy.
        assert_eq!(a.as_ptr(), b.as_ptr());
        let c = cache.encode(ping(2));
        assert_eq!(c, Bytes::from(encode_frame(&ping(2))));
        assert_ne!(a, c);
        cache.clear();
        let d = cache.encode(ping(2));
        assert_eq!(c, d);
        assert_ne!(c.as_ptr(), d.as_ptr());
    }
}
