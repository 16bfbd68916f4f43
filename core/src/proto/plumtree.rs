//! Plumtree, epidemic broadcast trees [Leitão, Pereira, Rodrigues, SRDS 2007], for one
//! topic: payloads are pushed eagerly along a spanning tree of the topic's active view and
//! announced lazily (IHAVE, batched) on the other links; a missing message is pulled with
//! GRAFT after a timeout, which also repairs the tree; duplicates PRUNE links to lazy.
//!
//! Departures from the paper are marked "Departure:" where they are made.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use super::time::{earliest, Time};
use crate::identity::PeerId;
use crate::wire::{Broadcast, GossipMsg, IHave, MessageId};

/// Most ids in one IHAVE or GRAFT message: the wire limit (`Limits::max_ids_per_msg`'s
/// default, 1,024), so every message we send decodes at the receiver.
pub const MAX_IDS_PER_MSG: usize = 1024;

/// Most peers remembered as announcers of one missing message (8: a node has ~5 topic
/// neighbours (HyParView active view), so 8 covers all of them plus a few strangers).
pub const MAX_ANNOUNCERS_PER_ID: usize = 8;

/// Most missing messages tracked at once (4,096, as many as the default cache holds):
/// bounds the memory an IHAVE flood can take; further announcements are dropped until
/// graft timers free room.
pub const MAX_MISSING_IDS: usize = 4096;

/// How long after the last application message duplicates of presence records still
/// leave the tree alone (see `State::handle_gossip`).
const MESSAGES_SHAPE_TREE_FOR: Duration = Duration::from_secs(30);

/// Broadcast parameters (iroh-gossip's defaults, design.md §3).
#[derive(Clone, Debug)]
pub struct Config {
    /// IHAVE announcements are batched for this long (10 ms). Those of application
    /// messages always wait for it: sent at once, they would spend the CPU and packets the
    /// eager push needs while it is still spreading (on 50 nodes sharing 2 cores, waiting
    /// 10 ms took the median delivery latency from about 3.9 to 2.7 ms). Tried and not
    /// kept: 25 ms, which puts two messages of a 50 msgs/s topic in one IHAVE frame (10–18 %
    /// fewer wire bytes per 256 B delivery) but gave p99 28–73 ms instead of 5–16 ms over
    /// 1,000 messages at 50 msgs/s on 50 nodes (repairs start later). A batch flushes up to
    /// 40 % of this later, staggered between nodes (see `flush_offset`).
    pub ihave_batch_delay: Duration,
    /// Presence and failure records, unlike application messages, are announced at once
    /// for the first this many (4) broadcasts of each batch window, so the periodic
    /// refreshes of an idle topic set no timer (0: always batch, the paper's behaviour).
    pub ihave_burst: usize,
    /// Wait after the first IHAVE of a missing message before grafting (80 ms).
    pub graft_timeout_1: Duration,
    /// Wait before grafting from the next announcer (40 ms).
    pub graft_timeout_2: Duration,
    /// Tree optimisation: a lazy path this many hops shorter replaces the eager one (7).
    pub optimization_threshold: u16,
    /// Message cache (answers grafts): most entries (4,096).
    pub cache_max_count: usize,
    /// Message cache: most bytes (16 MiB).
    pub cache_max_bytes: usize,
    /// Message cache: oldest entry kept (30 s).
    pub cache_max_age: Duration,
    /// Seen ids (duplicate suppression): kept this long (2 min, like gossipsub's seen cache).
    pub seen_max_age: Duration,
    /// Seen ids: most entries (65,536).
    pub seen_max_count: usize,
    /// Most ids announced to a new neighbour from the cache (Departure: neighbour sync,
    /// below) (256).
    pub sync_max_ids: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ihave_batch_delay: Duration::from_millis(10),
            ihave_burst: 4,
            graft_timeout_1: Duration::from_millis(80),
            graft_timeout_2: Duration::from_millis(40),
            optimization_threshold: 7,
            cache_max_count: 4096,
            cache_max_bytes: 16 * 1024 * 1024,
            cache_max_age: Duration::from_secs(30),
            seen_max_age: Duration::from_secs(120),
            seen_max_count: 65_536,
            sync_max_ids: 256,
        }
    }
}

/// What the broadcast layer asks of its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutEvent {
    /// Send a message to a neighbour.
    Send(PeerId, GossipMsg),
    /// A broadcast arrived for the first time: hand it to the application.
    Deliver {
        /// Its id.
        id: MessageId,
        /// The content.
        content: Broadcast,
        /// Hops from the author to this node (a direct neighbour of the author: 1).
        hops: u16,
        /// The neighbour it came from.
        from: PeerId,
    },
}

/// Counters for measurements (simulator, stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Gossip (payload-carrying) messages received.
    pub payloads_received: u64,
    /// Of those, duplicates.
    pub duplicates: u64,
    /// IHAVE entries received.
    pub ihaves_received: u64,
    /// Grafts sent.
    pub grafts_sent: u64,
    /// Prunes sent.
    pub prunes_sent: u64,
    /// Graft requests we could not answer (not in the cache).
    pub grafts_missed: u64,
    /// IHAVE entries not sent because the lazy peer had shown it has the broadcast.
    pub ihaves_skipped: u64,
}

/// A cached broadcast: what answers grafts and neighbour syncs.
#[derive(Debug)]
struct CacheEntry {
    content: Broadcast,
    /// The hops at which we received it (0: published here).
    hops: u16,
    /// When it was cached.
    at: Time,
    /// `content.approx_size()`, kept so eviction need not recompute it.
    size: usize,
}

/// A message announced to us (IHAVE) that we have not received yet.
#[derive(Debug)]
struct Missing {
    /// Who announced it, with the announced hops, in arrival order.
    announcers: VecDeque<(PeerId, u16)>,
    /// When its graft timer fires (also a key of `State::graft_timers`).
    deadline: Time,
}

/// Whether `content` is flooded to every neighbour instead of pushed along the tree:
/// failure notices (the failed node probably broke the tree where the news must pass) and
/// leave records (their author is about to go, so a lazy neighbour's graft would find
/// nobody to answer it). Both are rare.
fn is_flooded(content: &Broadcast) -> bool {
    match content {
        Broadcast::Gone(_) => true,
        Broadcast::Presence(r) => r.status == crate::wire::PresenceStatus::Leaving,
        Broadcast::Message(_) => false,
    }
}

/// The broadcast tree state of one topic.
///
/// Invariants: `eager ∩ lazy = ∅`, both hold only neighbours and never `me`; `seen_order`
/// lists exactly the keys of `seen` (insertion order), `cache_order` those of `cache`;
/// every `missing` entry has exactly one `graft_timers` entry `(deadline, id)`.
#[derive(Debug)]
pub struct State {
    me: PeerId,
    config: Config,
    eager: BTreeSet<PeerId>,
    lazy: BTreeSet<PeerId>,
    // The hash tables below are only looked up, never iterated, so they cannot make the
    // output depend on hash order; the VecDeques give the order (and the times).
    seen: HashSet<MessageId>,
    seen_order: VecDeque<(MessageId, Time)>,
    /// Boxed: a hash table keeps an eighth to over half of its slots empty, and an entry
    /// is about 220 B (docs/BENCHMARKS.md, memory).
    cache: HashMap<MessageId, Box<CacheEntry>>,
    cache_order: VecDeque<MessageId>,
    cache_bytes: usize,
    missing: BTreeMap<MessageId, Missing>,
    graft_timers: BTreeSet<(Time, MessageId)>,
    pending_ihave: BTreeMap<PeerId, Vec<IHave>>,
    ihave_deadline: Option<Time>,
    /// The current IHAVE batch window: its start, how many broadcasts were announced
    /// without waiting in it, and the instant of the last one (see `queue_ihave`).
    ihave_window: (Time, usize, Option<Time>),
    /// When an application message last went through here (see `handle_gossip`).
    last_message: Option<Time>,
    counters: Counters,
}

impl State {
    /// A node `me` with no neighbours yet.
    pub fn new(me: PeerId, config: Config) -> Self {
        State {
            me,
            config,
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            cache_bytes: 0,
            missing: BTreeMap::new(),
            graft_timers: BTreeSet::new(),
            pending_ihave: BTreeMap::new(),
            ihave_deadline: None,
            ihave_window: (Time::default(), 0, None),
            last_message: None,
            counters: Counters::default(),
        }
    }

    /// A new neighbour in the topic's active view: starts as eager. Departure (neighbour
    /// sync): it is also sent an IHAVE of the cached messages (at most `sync_max_ids`), so a
    /// new or reconnected neighbour can graft what it missed while the tree was broken.
    pub fn neighbor_up(&mut self, peer: PeerId, now: Time, out: &mut Vec<OutEvent>) {
        if peer == self.me {
            return;
        }
        self.expire(now);
        self.make_eager(peer);
        let entries: Vec<IHave> = self
            .cache_order
            .iter()
            .rev()
            .take(self.config.sync_max_ids)
            .filter_map(|id| {
                self.cache.get(id).map(|e| IHave {
                    id: *id,
                    hops: e.hops,
                })
            })
            .collect();
        send_chunked(peer, entries, GossipMsg::IHave, out);
    }

    /// A neighbour left the active view.
    ///
    /// Departure: if it was eager, every lazy neighbour is grafted at once (an empty
    /// GRAFT: "push to me"). The paper waits until an IHAVE for a missing message times
    /// out, so the whole subtree behind a replaced tree link went without messages for
    /// the graft timeout (80 ms) plus the IHAVE batch; topic overlays still settle links
    /// for a while after a join. The duplicates the extra links bring prune them again.
    pub fn neighbor_down(&mut self, peer: &PeerId, out: &mut Vec<OutEvent>) {
        if self.eager.remove(peer) {
            self.graft_lazy_neighbors(None, out);
        }
        self.lazy.remove(peer);
        self.pending_ihave.remove(peer);
        self.end_empty_batch();
        // A scan of the missing ids (at most MAX_MISSING_IDS), but only on a neighbour
        // change, never per message. An id left without announcers is forgotten when its
        // timer fires.
        for m in self.missing.values_mut() {
            m.announcers.retain(|(p, _)| p != peer);
        }
    }

    /// Makes every lazy neighbour but `except` eager and tells it so (an empty GRAFT):
    /// repairs the tree at once after this node lost its way into it.
    fn graft_lazy_neighbors(&mut self, except: Option<PeerId>, out: &mut Vec<OutEvent>) {
        let lazy: Vec<PeerId> = self
            .lazy
            .iter()
            .copied()
            .filter(|p| Some(*p) != except)
            .collect();
        for p in lazy {
            self.ask_to_push(p, out);
        }
    }

    /// Makes `peer` eager and asks it to push to us too (an empty GRAFT).
    fn ask_to_push(&mut self, peer: PeerId, out: &mut Vec<OutEvent>) {
        self.make_eager(peer);
        out.push(OutEvent::Send(peer, GossipMsg::Graft(Vec::new())));
        self.counters.grafts_sent += 1;
    }

    /// Whether `id` was seen (delivered or published here) within `seen_max_age`.
    pub fn is_known(&self, id: &MessageId) -> bool {
        self.seen.contains(id)
    }

    /// Publishes a local broadcast: caches it and pushes it (hops 0) to the eager peers,
    /// announcing it to the lazy ones. It is not delivered locally. `id` must be
    /// `content.id()` and unknown.
    pub fn broadcast(
        &mut self,
        id: MessageId,
        content: Broadcast,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        self.expire(now);
        if self.is_known(&id) {
            return;
        }
        self.mark_seen(id, now);
        self.forget_missing(&id);
        self.cache_insert(id, content.clone(), 0, now);
        self.push(None, &[], IHave { id, hops: 0 }, &content, now, out);
    }

    /// Handles a Gossip message. `id` is `content.id()`; if `!is_known(&id)` the caller has
    /// already validated the content (signature, limits, replay).
    pub fn handle_gossip(
        &mut self,
        from: PeerId,
        hops: u16,
        id: MessageId,
        content: Broadcast,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        self.expire(now);
        self.counters.payloads_received += 1;
        if self.is_known(&id) {
            self.counters.duplicates += 1;
            self.unqueue_ihave(&from, &id);
            if is_flooded(&content) {
                // Flooded on purpose: says nothing about the tree.
                return;
            }
            // Departure: while the topic carries application messages, duplicates of
            // presence records prune nothing. One tree serves every sender, and the
            // refreshes of all members, crossing the publishers' messages, pruned two
            // links of one cycle at once often enough to cut subtrees off the
            // publishers' tree until a graft timer fired (50 nodes, 50 msgs/s for 20 s:
            // p99 91–93 ms, 12–16 ms without these prunes). The messages keep the tree
            // pruned; a topic without them is shaped by its records as before.
            let carrying_messages = self
                .last_message
                .is_some_and(|t| now.saturating_since(t) < MESSAGES_SHAPE_TREE_FOR);
            if carrying_messages && !matches!(content, Broadcast::Message(_)) {
                return;
            }
            // The paper: a duplicate over an eager link means the link closes a cycle.
            if self.eager.remove(&from) {
                self.lazy.insert(from);
            }
            // Departure: the paper prunes only a link that is eager on this side. When the
            // two sides disagree (we hold the sender lazy, it holds us eager — e.g. a graft
            // and a prune crossed), it would push duplicates for ever; so every duplicate
            // from a neighbour is answered with a prune.
            if self.lazy.contains(&from) {
                out.push(OutEvent::Send(from, GossipMsg::Prune));
                self.counters.prunes_sent += 1;
            }
            return;
        }
        let hops = hops.saturating_add(1);
        self.mark_seen(id, now);
        let announcers: Vec<(PeerId, u16)> = self
            .missing
            .get(&id)
            .map(|m| m.announcers.iter().copied().collect())
            .unwrap_or_default();
        self.forget_missing(&id);
        self.cache_insert(id, content.clone(), hops, now);
        // The link it came over is part of the tree (a lazy one was grafted); a stranger
        // is never added (the membership layer decides who is a neighbour).
        if self.lazy.remove(&from) {
            self.eager.insert(from);
        }
        out.push(OutEvent::Deliver {
            id,
            content: content.clone(),
            hops,
            from,
        });
        self.push(
            Some(from),
            &announcers,
            IHave { id, hops },
            &content,
            now,
            out,
        );
        self.optimize(from, hops, &announcers, out);
    }

    /// Handles IHave, Graft and Prune (a Gossip variant passed here is ignored).
    pub fn handle_control(
        &mut self,
        from: PeerId,
        msg: GossipMsg,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        if from == self.me {
            // We can neither graft from nor answer ourselves.
            return;
        }
        self.expire(now);
        match msg {
            GossipMsg::Gossip { .. } => {}
            GossipMsg::IHave(entries) => self.on_ihave(from, entries, now),
            GossipMsg::Graft(ids) => self.on_graft(from, ids, out),
            GossipMsg::Prune => {
                if self.eager.remove(&from) {
                    self.lazy.insert(from);
                    // Departure: eager links are symmetric, so with none left nobody
                    // pushes to this node. Concurrent prunes of several senders' duplicates
                    // can do that (the paper then waits for a graft timer on the next
                    // message); graft the others at once instead.
                    if self.eager.is_empty() {
                        self.graft_lazy_neighbors(Some(from), out);
                    }
                }
            }
        }
    }

    /// Up to `n` ids of the most recently cached broadcasts, newest first.
    pub fn recent_ids(&self, n: usize) -> Vec<MessageId> {
        self.cache_order.iter().rev().take(n).copied().collect()
    }

    /// Up to `n` ids of the newest cached broadcasts that were cached no later than
    /// `before`, newest first: every member of the same overlay has had them for a while.
    pub fn settled_ids(&self, n: usize, before: Time) -> Vec<MessageId> {
        self.cache_order
            .iter()
            .rev()
            .filter(|id| self.cache.get(*id).is_some_and(|e| e.at <= before))
            .take(n)
            .copied()
            .collect()
    }

    /// The eager (tree) neighbours.
    pub fn eager_peers(&self) -> Vec<PeerId> {
        self.eager.iter().copied().collect()
    }

    /// The lazy neighbours.
    pub fn lazy_peers(&self) -> Vec<PeerId> {
        self.lazy.iter().copied().collect()
    }

    /// Sizes of the bounded tables: `(cache entries, cache bytes, seen ids, missing ids)`
    /// (for statistics and the hostile-peer tests).
    pub fn table_sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.cache.len(),
            self.cache_bytes,
            self.seen.len(),
            self.missing.len(),
        )
    }

    /// Measurement counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// When [`State::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        earliest(self.poll_precise(), self.poll_lax())
    }

    /// Deadlines that must run on time: the IHAVE flush and graft timers.
    pub fn poll_precise(&self) -> Option<Time> {
        let graft = self.graft_timers.first().map(|(t, _)| *t);
        earliest(self.ihave_deadline, graft)
    }

    /// Deadlines that tolerate running late (cache and seen-set expiry): the node runs them
    /// on its next failure-detector round instead of waking once per expiring message.
    pub fn poll_lax(&self) -> Option<Time> {
        let cache = self
            .cache_order
            .front()
            .and_then(|id| self.cache.get(id))
            .map(|e| e.at + self.config.cache_max_age);
        let seen = self
            .seen_order
            .front()
            .map(|(_, t)| *t + self.config.seen_max_age);
        earliest(cache, seen)
    }

    /// Does all timed work due at `now`: IHAVE flushes, graft timeouts, cache expiry.
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<OutEvent>) {
        self.expire(now);
        if self.ihave_deadline.is_some_and(|t| t <= now) {
            self.flush_ihaves(out);
        }
        self.fire_graft_timers(now, out);
    }

    // -----------------------------------------------------------------------------------

    fn is_neighbor(&self, peer: &PeerId) -> bool {
        self.eager.contains(peer) || self.lazy.contains(peer)
    }

    /// Makes `peer` eager; callers check that it is (or becomes) a neighbour.
    fn make_eager(&mut self, peer: PeerId) {
        self.lazy.remove(&peer);
        self.eager.insert(peer);
    }

    /// Eager push to the eager peers and lazy push (queued IHAVE) to the lazy ones, except
    /// `from`; the `announcers` (which announced it to us before it arrived) get no IHAVE.
    ///
    /// Departure: the paper announces to every lazy peer. A peer that announced the
    /// broadcast to us has it and would ignore our IHAVE; skipping it (here, and for
    /// IHAVEs still queued when its announcement or duplicate arrives, `unqueue_ihave`)
    /// sends about one IHAVE per lazy link and broadcast instead of two.
    fn push(
        &mut self,
        from: Option<PeerId>,
        announcers: &[(PeerId, u16)],
        IHave { id, hops }: IHave,
        content: &Broadcast,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        let is_message = matches!(content, Broadcast::Message(_));
        if is_message {
            self.last_message = Some(now);
        }
        // Departure: failure notices and leave records are flooded to every neighbour,
        // not pushed along the tree (see `is_flooded`).
        let flood = is_flooded(content);
        for p in self.eager.iter().chain(self.lazy.iter().filter(|_| flood)) {
            if Some(*p) != from {
                out.push(OutEvent::Send(
                    *p,
                    GossipMsg::Gossip {
                        hops,
                        content: content.clone(),
                    },
                ));
            }
        }
        if flood {
            return;
        }
        let lazy: Vec<PeerId> = self
            .lazy
            .iter()
            .copied()
            .filter(|p| Some(*p) != from)
            .collect();
        for p in lazy {
            if announcers.iter().any(|(a, _)| *a == p) {
                self.counters.ihaves_skipped += 1;
                continue;
            }
            self.queue_ihave(p, IHave { id, hops }, !is_message, now, out);
        }
    }

    fn queue_ihave(
        &mut self,
        peer: PeerId,
        entry: IHave,
        may_burst: bool,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        let queue = self.pending_ihave.entry(peer).or_default();
        queue.push(entry);
        if queue.len() >= MAX_IDS_PER_MSG {
            // A full message goes at once: bounds the queue under a burst.
            let entries = std::mem::take(queue);
            self.pending_ihave.remove(&peer);
            out.push(OutEvent::Send(peer, GossipMsg::IHave(entries)));
        } else if self.ihave_deadline.is_none() {
            // Departure (idle-adaptive batching; the paper leaves the lazy-push policy to
            // the implementation): records go at once while fewer than `ihave_burst`
            // broadcasts were announced at once within the current batch window (the other
            // lazy peers of one broadcast, at the same instant, count once); beyond that,
            // and for every application message, they are batched until the window ends.
            // The refreshes of a quiet topic thus never set a timer for their IHAVEs, and
            // a busy topic sends at most `ihave_burst` + 1 IHAVE messages per peer per
            // batch delay.
            let delay = self.config.ihave_batch_delay;
            let (start, count, last) = self.ihave_window;
            let (start, count) = if now >= start + delay {
                (now, 0)
            } else {
                (start, count)
            };
            if may_burst && (last == Some(now) || count < self.config.ihave_burst) {
                if let Some(entries) = self.pending_ihave.remove(&peer) {
                    out.push(OutEvent::Send(peer, GossipMsg::IHave(entries)));
                }
                let count = if last == Some(now) { count } else { count + 1 };
                self.ihave_window = (start, count, Some(now));
            } else {
                self.ihave_window = (start, count, last);
                self.ihave_deadline = Some(start + delay + self.flush_offset(&entry.id, delay));
            }
        }
    }

    /// How much later than the batch delay this node flushes a batch opened by `id`: up to
    /// 40 % of the delay, from our id and the broadcast's, so it differs between the two
    /// ends of a link and between broadcasts. Nodes that receive a broadcast at about the
    /// same time would otherwise flush together, each before the other's IHAVE arrived,
    /// and both announce over their lazy link (see `push`).
    fn flush_offset(&self, id: &MessageId, delay: Duration) -> Duration {
        let word = |b: &[u8; 32]| b.iter().fold(0u32, |h, x| h.rotate_left(5) ^ u32::from(*x));
        let draw = (word(self.me.as_bytes()) ^ word(id.as_bytes())).wrapping_mul(0x9E37_79B9) >> 24;
        delay * 2 * draw / (5 * 256)
    }

    /// Drops a queued IHAVE of `id` to `peer`, which has shown that it has the broadcast
    /// (see `push`).
    fn unqueue_ihave(&mut self, peer: &PeerId, id: &MessageId) {
        let Some(queue) = self.pending_ihave.get_mut(peer) else {
            return;
        };
        let before = queue.len();
        queue.retain(|e| e.id != *id);
        self.counters.ihaves_skipped += (before - queue.len()) as u64;
        if queue.is_empty() {
            self.pending_ihave.remove(peer);
            self.end_empty_batch();
        }
    }

    /// A batch left with nothing to announce needs no flush (no wake-up for nothing).
    fn end_empty_batch(&mut self) {
        if self.pending_ihave.is_empty() {
            self.ihave_deadline = None;
        }
    }

    fn flush_ihaves(&mut self, out: &mut Vec<OutEvent>) {
        self.ihave_deadline = None;
        for (peer, entries) in std::mem::take(&mut self.pending_ihave) {
            send_chunked(peer, entries, GossipMsg::IHave, out);
        }
    }

    fn on_ihave(&mut self, from: PeerId, entries: Vec<IHave>, now: Time) {
        self.counters.ihaves_received = self
            .counters
            .ihaves_received
            .saturating_add(entries.len() as u64);
        for entry in entries {
            if self.is_known(&entry.id) {
                self.unqueue_ihave(&from, &entry.id);
            } else {
                // Departure: announcements from a non-neighbour are recorded too: the
                // sender may become a neighbour a moment later (streams are not ordered).
                self.record_announcer(from, entry, now);
            }
        }
    }

    fn record_announcer(&mut self, from: PeerId, entry: IHave, now: Time) {
        if let Some(m) = self.missing.get_mut(&entry.id) {
            if m.announcers.len() < MAX_ANNOUNCERS_PER_ID
                && !m.announcers.iter().any(|(p, _)| *p == from)
            {
                m.announcers.push_back((from, entry.hops));
            }
            return;
        }
        if self.missing.len() >= MAX_MISSING_IDS {
            return;
        }
        let deadline = now + self.config.graft_timeout_1;
        self.missing.insert(
            entry.id,
            Missing {
                announcers: VecDeque::from([(from, entry.hops)]),
                deadline,
            },
        );
        self.graft_timers.insert((deadline, entry.id));
    }

    /// Tree optimisation (the paper, §3.8): a payload arrived from `parent` at `hops`,
    /// but an earlier IHAVE had announced it over a path at least `optimization_threshold`
    /// hops shorter: graft that announcer. Because the announcement came first, the short
    /// path is also the faster one.
    ///
    /// Departure: the paper prunes the parent in the same step. The graft and the prune
    /// then race the next broadcasts: one the announcer had already passed on when the
    /// graft arrived, and the parent would have pushed after the prune, reaches nobody
    /// below us until a graft timer fires (80 ms). Here the parent stays eager until the
    /// next broadcast shows which path is faster: its copy from the slower one is a
    /// duplicate, and the usual rule prunes that link. One duplicate payload per change
    /// instead of a hole (50 nodes, one publisher at 50 msgs/s for 20 s: p99 56–97 ms
    /// with the paper's prune, 6.5–7.8 ms without, in interleaved runs).
    ///
    /// Departure: iroh-gossip also optimises on an IHAVE for a message already received;
    /// with links of unequal latency that trades latency for hops (the announced path is
    /// shorter but slower), and the graft timer then trades it back, for ever. We keep the
    /// paper's rule only.
    fn optimize(
        &mut self,
        parent: PeerId,
        hops: u16,
        announcers: &[(PeerId, u16)],
        out: &mut Vec<OutEvent>,
    ) {
        let threshold = u32::from(self.config.optimization_threshold);
        let shorter = announcers.iter().find(|(p, h)| {
            *p != parent && self.is_neighbor(p) && u32::from(*h) + threshold < u32::from(hops)
        });
        let Some(&(better, _)) = shorter else {
            return;
        };
        if !self.eager.contains(&parent) {
            return;
        }
        self.ask_to_push(better, out);
    }

    fn on_graft(&mut self, from: PeerId, ids: Vec<MessageId>, out: &mut Vec<OutEvent>) {
        if self.is_neighbor(&from) {
            self.make_eager(from);
        }
        // A repeated id is answered once: no amplification from one small request.
        let mut answered = BTreeSet::new();
        for id in ids {
            if !answered.insert(id) {
                continue;
            }
            match self.cache.get(&id) {
                Some(e) => out.push(OutEvent::Send(
                    from,
                    GossipMsg::Gossip {
                        hops: e.hops,
                        content: e.content.clone(),
                    },
                )),
                None => self.counters.grafts_missed += 1,
            }
        }
    }

    fn fire_graft_timers(&mut self, now: Time, out: &mut Vec<OutEvent>) {
        let mut due = Vec::new();
        while let Some(&(t, id)) = self.graft_timers.first() {
            if t > now {
                break;
            }
            self.graft_timers.pop_first();
            due.push(id);
        }
        // Departure: the ids due in one call are grafted from each announcer in one
        // message (the paper sends one GRAFT per id); same requests, fewer messages.
        let mut grafts: BTreeMap<PeerId, Vec<MessageId>> = BTreeMap::new();
        for id in due {
            let Some(m) = self.missing.get_mut(&id) else {
                continue;
            };
            let Some((peer, _hops)) = m.announcers.pop_front() else {
                self.missing.remove(&id);
                continue;
            };
            if m.announcers.is_empty() {
                // The last announcer: forget the id, a later IHAVE starts afresh.
                self.missing.remove(&id);
            } else {
                m.deadline = now + self.config.graft_timeout_2;
                self.graft_timers.insert((m.deadline, id));
            }
            grafts.entry(peer).or_default().push(id);
        }
        for (peer, ids) in grafts {
            if self.is_neighbor(&peer) {
                self.make_eager(peer);
            }
            let before = out.len();
            send_chunked(peer, ids, GossipMsg::Graft, out);
            self.counters.grafts_sent += (out.len() - before) as u64;
        }
    }

    fn forget_missing(&mut self, id: &MessageId) {
        if let Some(m) = self.missing.remove(id) {
            self.graft_timers.remove(&(m.deadline, *id));
        }
    }

    fn mark_seen(&mut self, id: MessageId, now: Time) {
        if self.seen.insert(id) {
            self.seen_order.push_back((id, now));
        }
        while self.seen.len() > self.config.seen_max_count {
            self.pop_seen();
        }
    }

    fn pop_seen(&mut self) {
        if let Some((id, _)) = self.seen_order.pop_front() {
            self.seen.remove(&id);
        }
    }

    fn cache_insert(&mut self, id: MessageId, content: Broadcast, hops: u16, now: Time) {
        if self.cache.contains_key(&id) {
            return;
        }
        let size = content.approx_size();
        self.cache.insert(
            id,
            Box::new(CacheEntry {
                content,
                hops,
                at: now,
                size,
            }),
        );
        self.cache_order.push_back(id);
        self.cache_bytes = self.cache_bytes.saturating_add(size);
        while self.cache.len() > self.config.cache_max_count
            || self.cache_bytes > self.config.cache_max_bytes
        {
            if !self.pop_cache() {
                break;
            }
        }
    }

    fn pop_cache(&mut self) -> bool {
        let Some(id) = self.cache_order.pop_front() else {
            return false;
        };
        if let Some(e) = self.cache.remove(&id) {
            self.cache_bytes = self.cache_bytes.saturating_sub(e.size);
        }
        true
    }

    /// Drops seen ids and cached messages past their age (oldest first, no scan).
    fn expire(&mut self, now: Time) {
        while let Some(&(_, t)) = self.seen_order.front() {
            if t + self.config.seen_max_age > now {
                break;
            }
            self.pop_seen();
        }
        while let Some(e) = self.cache_order.front().and_then(|id| self.cache.get(id)) {
            if e.at + self.config.cache_max_age > now {
                break;
            }
            self.pop_cache();
        }
    }
}

/// Sends `items` to `peer` in messages of at most [`MAX_IDS_PER_MSG`] (none if empty).
fn send_chunked<T: Clone>(
    peer: PeerId,
    items: Vec<T>,
    make: fn(Vec<T>) -> GossipMsg,
    out: &mut Vec<OutEvent>,
) {
    for chunk in items.chunks(MAX_IDS_PER_MSG) {
        out.push(OutEvent::Send(peer, make(chunk.to_vec())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::wire::{SignedMessage, TopicId};
    use bytes::Bytes;
    use rand::Rng;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn peer(n: u64) -> PeerId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&(n + 1).to_be_bytes());
        PeerId::from_bytes(b)
    }

    fn content_sized(seq: u64, len: usize) -> Broadcast {
        Broadcast::Message(SignedMessage::new(
            &Keypair::from_seed([7; 32]),
            TopicId::from_name("plumtree-test"),
            seq,
            1_000,
            Bytes::from(vec![0u8; len]),
        ))
    }

    fn content(seq: u64) -> Broadcast {
        content_sized(seq, 10)
    }

    fn fake_id(n: u64) -> MessageId {
        let mut b = [0xeeu8; 32];
        b[..8].copy_from_slice(&n.to_be_bytes());
        MessageId(b)
    }

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    fn sends(out: &[OutEvent]) -> Vec<(PeerId, GossipMsg)> {
        out.iter()
            .filter_map(|e| match e {
                OutEvent::Send(p, m) => Some((*p, m.clone())),
                OutEvent::Deliver { .. } => None,
            })
            .collect()
    }

    fn delivers(out: &[OutEvent]) -> Vec<(MessageId, u16, PeerId)> {
        out.iter()
            .filter_map(|e| match e {
                OutEvent::Deliver { id, hops, from, .. } => Some((*id, *hops, *from)),
                OutEvent::Send(..) => None,
            })
            .collect()
    }

    fn check_invariants(s: &State) {
        assert!(s.eager.is_disjoint(&s.lazy));
        assert!(!s.eager.contains(&s.me) && !s.lazy.contains(&s.me));
        assert_eq!(s.seen.len(), s.seen_order.len());
        assert_eq!(s.cache.len(), s.cache_order.len());
        assert!(s.cache.len() <= s.config.cache_max_count);
        assert!(s.cache_bytes <= s.config.cache_max_bytes);
        assert_eq!(
            s.cache_bytes,
            s.cache_order
                .iter()
                .map(|id| s.cache[id].size)
                .sum::<usize>()
        );
        assert!(s.seen.len() <= s.config.seen_max_count);
        assert!(s.missing.len() <= MAX_MISSING_IDS);
        assert_eq!(s.missing.len(), s.graft_timers.len());
        for (id, m) in &s.missing {
            assert!(m.announcers.len() <= MAX_ANNOUNCERS_PER_ID);
            assert!(s.graft_timers.contains(&(m.deadline, *id)));
        }
        for q in s.pending_ihave.values() {
            assert!(q.len() < MAX_IDS_PER_MSG);
        }
    }

    /// When the IHAVE batch opened at `opened` is due: after the batch delay, plus at most
    /// 40 % of it (`flush_offset`).
    fn batch_due(s: &State, opened: Time) -> Time {
        let due = s.poll_precise().expect("an IHAVE batch is pending");
        let delay = s.config.ihave_batch_delay;
        assert!(
            due >= opened + delay && due <= opened + delay * 7 / 5,
            "{due:?}"
        );
        due
    }

    /// A node `me` = peer(0) with the given neighbours (all eager).
    fn node_with(neighbours: &[u64], config: Config) -> State {
        let mut s = State::new(peer(0), config);
        let mut out = Vec::new();
        for n in neighbours {
            s.neighbor_up(peer(*n), ms(0), &mut out);
        }
        assert!(out.is_empty(), "no cache, no sync");
        s
    }

    // ---------------------------------------------------------------------------------
    // In-memory network: FIFO per link (constant per-link delay), silent link drops.

    const DEFAULT_DELAY: Duration = Duration::from_millis(10);

    struct Net {
        now: Time,
        nodes: Vec<State>,
        index: BTreeMap<PeerId, usize>,
        /// Undirected links (a < b) and their one-way delay.
        links: BTreeMap<(usize, usize), Duration>,
        /// Links whose messages are silently lost (neither side is told).
        dropped: BTreeSet<(usize, usize)>,
        queue: BTreeMap<(Time, u64), (usize, usize, GossipMsg)>,
        seq: u64,
        /// Per node: (id, hops, from) of every Deliver.
        delivered: Vec<Vec<(MessageId, u16, PeerId)>>,
        /// Grafts that asked for broadcasts (graft timers: repairs), as sent.
        repair_grafts: u64,
    }

    fn key(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    impl Net {
        fn new(n: usize, config: &Config) -> Self {
            Net {
                now: ms(0),
                nodes: (0..n)
                    .map(|i| State::new(peer(i as u64), config.clone()))
                    .collect(),
                index: (0..n).map(|i| (peer(i as u64), i)).collect(),
                links: BTreeMap::new(),
                dropped: BTreeSet::new(),
                queue: BTreeMap::new(),
                seq: 0,
                delivered: vec![Vec::new(); n],
                repair_grafts: 0,
            }
        }

        /// A ring plus random chords until every node has degree >= 4.
        fn random_regularish(n: usize, seed: u64, delay: Duration, config: &Config) -> Self {
            let mut net = Net::new(n, config);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut deg = vec![0usize; n];
            let mut edges = BTreeSet::new();
            for i in 0..n {
                edges.insert(key(i, (i + 1) % n));
                deg[i] += 1;
                deg[(i + 1) % n] += 1;
            }
            for i in 0..n {
                let mut tries = 0;
                while deg[i] < 4 && tries < 1000 {
                    tries += 1;
                    let j = rng.gen_range(0..n);
                    if j != i && deg[j] < 5 && edges.insert(key(i, j)) {
                        deg[i] += 1;
                        deg[j] += 1;
                    }
                }
            }
            for (a, b) in edges {
                net.connect(a, b, delay);
            }
            net
        }

        /// A ring of 20 (links of `ring` one way) and a chord 0–10 (`chord`).
        fn ring_with_chord(ring: Duration, chord: Duration) -> Self {
            let mut net = Net::new(20, &Config::default());
            for i in 0..20 {
                net.connect(i, (i + 1) % 20, ring);
            }
            net.connect(0, 10, chord);
            net
        }

        fn connect(&mut self, a: usize, b: usize, delay: Duration) {
            self.links.insert(key(a, b), delay);
            let mut out = Vec::new();
            self.nodes[a].neighbor_up(peer(b as u64), self.now, &mut out);
            self.process(a, out);
            let mut out = Vec::new();
            self.nodes[b].neighbor_up(peer(a as u64), self.now, &mut out);
            self.process(b, out);
        }

        fn process(&mut self, at: usize, out: Vec<OutEvent>) {
            for ev in out {
                match ev {
                    OutEvent::Send(to, msg) => {
                        let Some(&to) = self.index.get(&to) else {
                            continue;
                        };
                        if self.dropped.contains(&key(at, to)) {
                            continue;
                        }
                        if matches!(&msg, GossipMsg::Graft(ids) if !ids.is_empty()) {
                            self.repair_grafts += 1;
                        }
                        // Not a link (a graft to a stranger): the transport dials it.
                        let delay = self
                            .links
                            .get(&key(at, to))
                            .copied()
                            .unwrap_or(DEFAULT_DELAY);
                        self.seq += 1;
                        self.queue
                            .insert((self.now + delay, self.seq), (at, to, msg));
                    }
                    OutEvent::Deliver { id, hops, from, .. } => {
                        self.delivered[at].push((id, hops, from))
                    }
                }
            }
        }

        fn broadcast(&mut self, at: usize, content: Broadcast) -> MessageId {
            let id = content.id();
            let mut out = Vec::new();
            self.nodes[at].broadcast(id, content, self.now, &mut out);
            self.process(at, out);
            id
        }

        fn run_for(&mut self, d: Duration) {
            let until = self.now + d;
            loop {
                let next_msg = self.queue.keys().next().map(|(t, _)| *t);
                let next_timer = self.nodes.iter().filter_map(|s| s.poll_timeout()).min();
                let Some(next) = earliest(next_msg, next_timer) else {
                    break;
                };
                if next > until {
                    break;
                }
                self.now = next.max(self.now);
                if next_msg == Some(next) {
                    let Some((_, (from, to, msg))) = self.queue.pop_first() else {
                        break;
                    };
                    let from_id = peer(from as u64);
                    let mut out = Vec::new();
                    match msg {
                        GossipMsg::Gossip { hops, content } => {
                            let id = content.id();
                            self.nodes[to]
                                .handle_gossip(from_id, hops, id, content, self.now, &mut out)
                        }
                        other => self.nodes[to].handle_control(from_id, other, self.now, &mut out),
                    }
                    self.process(to, out);
                } else {
                    for i in 0..self.nodes.len() {
                        if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                            let mut out = Vec::new();
                            self.nodes[i].handle_timeout(self.now, &mut out);
                            self.process(i, out);
                        }
                    }
                }
            }
            self.now = until;
        }

        fn deliveries_of(&self, id: &MessageId) -> Vec<usize> {
            self.delivered
                .iter()
                .map(|d| d.iter().filter(|(i, _, _)| i == id).count())
                .collect()
        }

        fn total(&self, f: impl Fn(&Counters) -> u64) -> u64 {
            self.nodes.iter().map(|s| f(s.counters())).sum()
        }

        fn total_deliveries(&self) -> u64 {
            self.delivered.iter().map(|d| d.len() as u64).sum()
        }

        fn assert_all_delivered_once(&self, id: &MessageId, source: usize) {
            for (i, n) in self.deliveries_of(id).into_iter().enumerate() {
                assert_eq!(n, usize::from(i != source), "node {i} delivered {n} times");
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Multi-node behaviour

    #[test]
    fn single_broadcast_reaches_all_100_nodes_exactly_once() {
        let mut net = Net::random_regularish(100, 1, DEFAULT_DELAY, &Config::default());
        let id = net.broadcast(0, content(1));
        net.run_for(Duration::from_secs(2));
        net.assert_all_delivered_once(&id, 0);
        // The first broadcast floods (duplicates prune the non-tree links).
        assert!(net.total(|c| c.duplicates) > 0);
        assert!(net.total(|c| c.prunes_sent) > 0);
        for s in &net.nodes {
            check_invariants(s);
        }
    }

    #[test]
    fn tree_forms_and_later_broadcasts_have_no_redundancy() {
        // Short links, so no tree path is longer than the graft timeout.
        let mut net = Net::random_regularish(100, 2, Duration::from_millis(2), &Config::default());
        let mut extra = Vec::new();
        for (seq, source) in [(1, 0), (2, 37), (3, 73), (4, 73), (5, 73)] {
            let before = net.total(|c| c.payloads_received) - net.total_deliveries();
            let grafts = net.total(|c| c.grafts_sent);
            let id = net.broadcast(source, content(seq));
            net.run_for(Duration::from_secs(1));
            net.assert_all_delivered_once(&id, source);
            let after = net.total(|c| c.payloads_received) - net.total_deliveries();
            extra.push((after - before, net.total(|c| c.grafts_sent) - grafts));
        }
        assert!(extra[0].0 > 0, "the first broadcast floods: {extra:?}");
        // A new source may still graft shorter paths by the tree optimisation (it did
        // here); its next broadcast costs at most two duplicates per such graft (one each
        // way over the longer path, which they prune), and from then on no payload travels
        // twice.
        assert!(
            extra[2].1 > 0,
            "the optimisation grafted nothing: {extra:?}"
        );
        assert!(extra[3].0 <= 2 * extra[2].1, "{extra:?}");
        assert_eq!(extra[4].0, 0, "RMR 0 once the tree formed: {extra:?}");
        // The eager links form a spanning tree: n - 1 undirected links, symmetric.
        let mut eager_links = BTreeSet::new();
        for (i, s) in net.nodes.iter().enumerate() {
            for p in s.eager_peers() {
                let j = net.index[&p];
                assert!(net.nodes[j].eager.contains(&peer(i as u64)), "asymmetric");
                eager_links.insert(key(i, j));
            }
        }
        assert_eq!(eager_links.len(), 99);
    }

    /// The tree optimisation grafts a much shorter path while broadcasts are on their way
    /// over the long one: none of them may be lost to the change. (With the paper's prune
    /// of the long path in the same step, those in flight reach the node only through a
    /// graft timer.)
    #[test]
    fn an_optimised_path_loses_no_broadcast_in_flight() {
        // A slow chord: the first broadcast prunes it.
        let mut net = Net::ring_with_chord(Duration::from_millis(3), Duration::from_millis(200));
        let first = net.broadcast(0, content(1));
        net.run_for(Duration::from_secs(1));
        net.assert_all_delivered_once(&first, 0);
        assert!(net.nodes[10].lazy.contains(&peer(0)));
        // The chord turns fast: node 0's announcements reach node 10 long before the
        // payloads come round the ring (10 hops, 30 ms). A broadcast every millisecond.
        net.links.insert(key(0, 10), Duration::from_micros(100));
        let mut ids = Vec::new();
        for k in 0..100 {
            ids.push(net.broadcast(0, content(100 + k)));
            net.run_for(Duration::from_millis(1));
        }
        net.run_for(Duration::from_secs(1));
        for id in &ids {
            net.assert_all_delivered_once(id, 0);
        }
        assert!(
            net.nodes[10].eager.contains(&peer(0)),
            "the chord was not grafted"
        );
        assert_eq!(net.repair_grafts, 0, "broadcasts lost to the tree change");
    }

    #[test]
    fn a_lazy_link_carries_about_one_ihave_per_broadcast_not_two() {
        // Links of 0.2 ms, as on loopback, against the 10 ms IHAVE batch.
        let delay = Duration::from_micros(200);
        let mut net = Net::random_regularish(100, 3, delay, &Config::default());
        net.broadcast(0, content(1));
        net.run_for(Duration::from_secs(1));
        let lazy_links: BTreeSet<(usize, usize)> = net
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.lazy_peers().into_iter().map(move |p| (i, p)))
            .map(|(i, p)| key(i, net.index[&p]))
            .collect();
        let received = net.total(|c| c.ihaves_received);
        let skipped = net.total(|c| c.ihaves_skipped);
        let id = net.broadcast(37, content(2));
        net.run_for(Duration::from_secs(1));
        net.assert_all_delivered_once(&id, 37);
        let received = net.total(|c| c.ihaves_received) - received;
        let skipped = net.total(|c| c.ihaves_skipped) - skipped;
        // The paper's rule sends one per lazy link end that has the broadcast: two per
        // link. An end that saw the other's announcement, or got the broadcast from there,
        // skips; only the ends that flush their batches within one link delay of each
        // other (here: equally deep in the tree) both send.
        let links = lazy_links.len() as u64;
        assert!(
            received + skipped >= 2 * links - 2,
            "{received} + {skipped} vs {links}"
        );
        assert!(
            received <= links * 6 / 5,
            "{received} IHAVEs on {links} lazy links"
        );
    }

    /// A node with eager peers 1, 2 and lazy peers 3, 4, and a broadcast it has not seen.
    fn eager_1_2_lazy_3_4() -> (State, Broadcast) {
        let mut s = node_with(&[1, 2, 3, 4], Config::default());
        let mut out = Vec::new();
        for lazy in [3, 4] {
            s.handle_control(peer(lazy), GossipMsg::Prune, ms(0), &mut out);
        }
        (s, content(1))
    }

    #[test]
    fn a_peer_that_announced_a_broadcast_gets_no_ihave_for_it() {
        let (mut s, c) = eager_1_2_lazy_3_4();
        let id = c.id();
        let mut out = Vec::new();
        // Peer 3 announces it before it arrives from peer 1.
        let announce = GossipMsg::IHave(vec![IHave { id, hops: 0 }]);
        s.handle_control(peer(3), announce, ms(100), &mut out);
        out.clear();
        s.handle_gossip(peer(1), 0, id, c, ms(101), &mut out);
        let due = batch_due(&s, ms(101));
        out.clear();
        s.handle_timeout(due, &mut out);
        assert_eq!(
            sends(&out),
            vec![(peer(4), GossipMsg::IHave(vec![IHave { id, hops: 1 }]))]
        );
        assert_eq!(s.counters().ihaves_skipped, 1);
        check_invariants(&s);
    }

    #[test]
    fn a_queued_ihave_is_dropped_when_the_peer_shows_it_has_the_broadcast() {
        let (mut s, c) = eager_1_2_lazy_3_4();
        let id = c.id();
        let mut out = Vec::new();
        s.handle_gossip(peer(1), 0, id, c.clone(), ms(100), &mut out);
        assert!(s.poll_precise().is_some(), "IHAVEs to 3 and 4 are queued");
        // While they wait, peer 3 announces it and peer 4 pushes it.
        let announce = GossipMsg::IHave(vec![IHave { id, hops: 2 }]);
        s.handle_control(peer(3), announce, ms(102), &mut out);
        out.clear();
        s.handle_gossip(peer(4), 1, id, c, ms(103), &mut out);
        // The duplicate is answered with a prune, and no IHAVE (nor its timer) is left.
        assert_eq!(sends(&out), vec![(peer(4), GossipMsg::Prune)]);
        assert_eq!(s.poll_precise(), None);
        assert_eq!(s.counters().ihaves_skipped, 2);
        check_invariants(&s);
    }

    #[test]
    fn broken_eager_link_is_repaired_by_ihave_and_graft() {
        let mut net = Net::random_regularish(100, 3, DEFAULT_DELAY, &Config::default());
        let first = net.broadcast(0, content(1));
        net.run_for(Duration::from_secs(2));
        net.assert_all_delivered_once(&first, 0);
        assert_eq!(net.total(|c| c.grafts_sent), 0);
        // Silently break one eager link of the source: its child must pull the next
        // broadcast over a lazy link.
        let child = net.index[&net.nodes[0].eager_peers()[0]];
        net.dropped.insert(key(0, child));
        let second = net.broadcast(0, content(2));
        net.run_for(Duration::from_secs(3));
        net.assert_all_delivered_once(&second, 0);
        assert!(net.nodes[child].counters().grafts_sent > 0);
        assert_eq!(net.delivered[child].last().map(|d| d.0), Some(second));
        // The repaired tree carries the next broadcast too.
        let third = net.broadcast(0, content(3));
        net.run_for(Duration::from_secs(3));
        net.assert_all_delivered_once(&third, 0);
    }

    #[test]
    fn neighbour_sync_lets_a_late_neighbour_graft_what_it_missed() {
        let mut net = Net::new(3, &Config::default());
        net.connect(0, 1, DEFAULT_DELAY);
        let id = net.broadcast(0, content(1));
        net.run_for(Duration::from_secs(1));
        assert_eq!(net.deliveries_of(&id), vec![0, 1, 0]);
        // Node 2 appears afterwards, next to node 1 only.
        let grafts_before = net.nodes[2].counters().grafts_sent;
        net.connect(1, 2, DEFAULT_DELAY);
        net.run_for(Duration::from_millis(50));
        assert_eq!(net.deliveries_of(&id)[2], 0, "not before the graft timeout");
        net.run_for(Duration::from_secs(1));
        assert_eq!(net.deliveries_of(&id), vec![0, 1, 1]);
        assert_eq!(net.nodes[2].counters().grafts_sent, grafts_before + 1);
        // Delivered with the hops it had at node 1, plus one.
        assert_eq!(net.delivered[2], vec![(id, 2, peer(1))]);
    }

    #[test]
    fn tree_optimisation_never_trades_latency_for_hops() {
        // A ring of 20 with 1 ms links and a slow chord 0-10 (50 ms). The first broadcast
        // reaches node 10 over the ring (10 hops, 10 ms) and prunes the chord. The chord's
        // later announcements say "0 hops", but they arrive after the payload: the short
        // path is the slow one, so the tree keeps the fast ring path.
        let mut net = Net::ring_with_chord(Duration::from_millis(1), Duration::from_millis(50));
        let hops_at_10 = |net: &Net, id: &MessageId| {
            net.delivered[10]
                .iter()
                .find(|(i, _, _)| i == id)
                .map(|(_, h, _)| *h)
        };
        for k in 1..=3 {
            let m = net.broadcast(0, content(k));
            net.run_for(Duration::from_secs(1));
            assert_eq!(hops_at_10(&net, &m), Some(10), "broadcast {k}");
            net.assert_all_delivered_once(&m, 0);
        }
        assert!(net.nodes[10].lazy.contains(&peer(0)));
        assert_eq!(net.nodes[10].counters().grafts_sent, 0);
    }

    // ---------------------------------------------------------------------------------
    // Single-node rules

    /// The paper's lazy push: every announcement waits for the batch (no burst), 5 ms.
    fn batching() -> Config {
        Config {
            ihave_burst: 0,
            ihave_batch_delay: Duration::from_millis(5),
            ..Config::default()
        }
    }

    /// An online presence record (the kind of broadcast an idle topic still sends).
    fn online_record(seq: u64) -> Broadcast {
        Broadcast::Presence(crate::wire::PresenceRecord::new(
            &Keypair::from_seed([8; 32]),
            TopicId::from_name("plumtree-test"),
            seq,
            0,
            1_000,
            crate::wire::PresenceStatus::Online,
            Bytes::new(),
        ))
    }

    #[test]
    fn quiet_topic_announces_records_at_once_and_a_burst_is_batched() {
        let config = Config {
            ihave_burst: 4,
            ihave_batch_delay: Duration::from_millis(5),
            ..Config::default()
        };
        let mut s = node_with(&[1, 2, 3], config);
        let mut out = Vec::new();
        s.handle_control(peer(2), GossipMsg::Prune, ms(0), &mut out);
        s.handle_control(peer(3), GossipMsg::Prune, ms(0), &mut out);
        let c = online_record(1);
        // The first `ihave_burst` broadcasts of a window go at once, to every lazy peer,
        // without a timer.
        for n in 0..4 {
            out.clear();
            s.handle_gossip(peer(1), 0, fake_id(n), c.clone(), ms(100 + n), &mut out);
            let announce = GossipMsg::IHave(vec![IHave {
                id: fake_id(n),
                hops: 1,
            }]);
            assert_eq!(
                sends(&out),
                vec![(peer(2), announce.clone()), (peer(3), announce)],
                "broadcast {n}"
            );
            assert_eq!(s.poll_precise(), None, "no IHAVE timer while quiet");
        }
        // The next one in the same window waits for its end.
        out.clear();
        s.handle_gossip(peer(1), 0, fake_id(4), c.clone(), ms(104), &mut out);
        assert!(sends(&out).is_empty());
        let due = batch_due(&s, ms(100));
        s.handle_timeout(due, &mut out);
        assert_eq!(sends(&out).len(), 2);
        // A new window: at once again.
        out.clear();
        s.handle_gossip(peer(1), 0, fake_id(5), c, ms(200), &mut out);
        assert_eq!(sends(&out).len(), 2);
        assert_eq!(s.poll_precise(), None);
        check_invariants(&s);
    }

    #[test]
    fn application_messages_are_announced_after_the_batch_delay_even_when_quiet() {
        let mut s = node_with(&[1, 2, 3], Config::default());
        let mut out = Vec::new();
        s.handle_control(peer(3), GossipMsg::Prune, ms(0), &mut out);
        let c = content(1);
        let id = c.id();
        s.handle_gossip(peer(1), 0, id, c, ms(100), &mut out);
        // The eager push goes at once; the announcement waits for the window's end.
        assert_eq!(sends(&out).len(), 1);
        assert!(matches!(sends(&out)[0], (p, GossipMsg::Gossip { .. }) if p == peer(2)));
        let due = batch_due(&s, ms(100));
        out.clear();
        s.handle_timeout(due, &mut out);
        assert_eq!(
            sends(&out),
            vec![(peer(3), GossipMsg::IHave(vec![IHave { id, hops: 1 }]))]
        );
        check_invariants(&s);
    }

    #[test]
    fn broadcast_pushes_to_eager_and_announces_to_lazy() {
        let mut s = node_with(&[1, 2, 3], batching());
        let mut out = Vec::new();
        s.handle_control(peer(3), GossipMsg::Prune, ms(0), &mut out);
        assert_eq!(s.lazy_peers(), vec![peer(3)]);
        let c = content(1);
        let id = c.id();
        s.broadcast(id, c.clone(), ms(10), &mut out);
        assert!(s.is_known(&id));
        assert!(delivers(&out).is_empty(), "no local delivery");
        let gossip = GossipMsg::Gossip {
            hops: 0,
            content: c,
        };
        assert_eq!(
            sends(&out),
            vec![(peer(1), gossip.clone()), (peer(2), gossip)]
        );
        let due = batch_due(&s, ms(10));
        assert_eq!(s.poll_timeout(), Some(due));
        out.clear();
        s.handle_timeout(due, &mut out);
        assert_eq!(
            sends(&out),
            vec![(peer(3), GossipMsg::IHave(vec![IHave { id, hops: 0 }]))]
        );
        assert_eq!(s.recent_ids(5), vec![id]);
    }

    #[test]
    fn gossip_is_delivered_forwarded_and_its_sender_made_eager() {
        let mut s = node_with(&[1, 2, 3], batching());
        let mut out = Vec::new();
        s.handle_control(peer(1), GossipMsg::Prune, ms(0), &mut out);
        s.handle_control(peer(3), GossipMsg::Prune, ms(0), &mut out);
        // Received from a lazy peer (as a graft answer would be): it becomes eager.
        let c = content(1);
        let id = c.id();
        s.handle_gossip(peer(1), 4, id, c.clone(), ms(1), &mut out);
        assert_eq!(delivers(&out), vec![(id, 5, peer(1))]);
        assert_eq!(s.eager_peers(), vec![peer(1), peer(2)]);
        assert_eq!(s.lazy_peers(), vec![peer(3)]);
        assert_eq!(
            sends(&out),
            vec![(
                peer(2),
                GossipMsg::Gossip {
                    hops: 5,
                    content: c.clone()
                }
            )]
        );
        out.clear();
        // The first batch window opened at time 0.
        let due = batch_due(&s, ms(0));
        s.handle_timeout(due, &mut out);
        assert_eq!(
            sends(&out),
            vec![(peer(3), GossipMsg::IHave(vec![IHave { id, hops: 5 }]))]
        );
        // Hops saturate.
        let c2 = content(2);
        out.clear();
        s.handle_gossip(peer(2), u16::MAX, c2.id(), c2, ms(7), &mut out);
        assert_eq!(delivers(&out)[0].1, u16::MAX);
        assert_eq!(s.counters().payloads_received, 2);
        assert_eq!(s.counters().duplicates, 0);
    }

    #[test]
    fn duplicate_over_eager_link_prunes_it() {
        let mut s = node_with(&[1, 2], Config::default());
        let mut out = Vec::new();
        let c = content(1);
        let id = c.id();
        s.handle_gossip(peer(1), 0, id, c.clone(), ms(0), &mut out);
        out.clear();
        s.handle_gossip(peer(2), 3, id, c.clone(), ms(1), &mut out);
        assert_eq!(sends(&out), vec![(peer(2), GossipMsg::Prune)]);
        assert!(delivers(&out).is_empty());
        assert_eq!(s.eager_peers(), vec![peer(1)]);
        assert_eq!(s.lazy_peers(), vec![peer(2)]);
        // A second duplicate over the now-lazy link: the sender still holds us eager (its
        // prune crossed something), so it is told again.
        out.clear();
        s.handle_gossip(peer(2), 3, id, c.clone(), ms(2), &mut out);
        assert_eq!(sends(&out), vec![(peer(2), GossipMsg::Prune)]);
        // A stranger's duplicate is counted, never answered.
        out.clear();
        s.handle_gossip(peer(9), 3, id, c, ms(3), &mut out);
        assert!(out.is_empty());
        let c = s.counters();
        assert_eq!(
            (c.payloads_received, c.duplicates, c.prunes_sent),
            (4, 3, 2)
        );
    }

    #[test]
    fn prune_makes_an_eager_neighbour_lazy() {
        let mut s = node_with(&[1], Config::default());
        let mut out = Vec::new();
        s.handle_control(peer(1), GossipMsg::Prune, ms(0), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.lazy_peers(), vec![peer(1)]);
        assert!(s.eager_peers().is_empty());
    }

    #[test]
    fn graft_is_answered_from_the_cache_and_misses_are_counted() {
        let mut s = node_with(&[1, 2], Config::default());
        let mut out = Vec::new();
        s.handle_control(peer(2), GossipMsg::Prune, ms(0), &mut out);
        let c = content(1);
        let id = c.id();
        s.handle_gossip(peer(1), 2, id, c.clone(), ms(0), &mut out);
        out.clear();
        s.handle_control(
            peer(2),
            GossipMsg::Graft(vec![id, fake_id(9), id]),
            ms(1),
            &mut out,
        );
        // Answered once, with the hops at which we got it.
        assert_eq!(
            sends(&out),
            vec![(
                peer(2),
                GossipMsg::Gossip {
                    hops: 3,
                    content: c
                }
            )]
        );
        assert_eq!(s.counters().grafts_missed, 1);
        assert_eq!(s.eager_peers(), vec![peer(1), peer(2)]);
        // An empty graft only grafts the link.
        s.handle_control(peer(2), GossipMsg::Prune, ms(2), &mut out);
        out.clear();
        s.handle_control(peer(2), GossipMsg::Graft(vec![]), ms(3), &mut out);
        assert!(out.is_empty());
        assert!(s.eager.contains(&peer(2)));
    }

    #[test]
    fn ihave_for_a_missing_message_grafts_announcers_in_turn() {
        let mut s = node_with(&[1, 2, 3], Config::default());
        let mut out = Vec::new();
        for p in [1, 2] {
            s.handle_control(peer(p), GossipMsg::Prune, ms(0), &mut out);
        }
        let id = fake_id(1);
        s.handle_control(
            peer(1),
            GossipMsg::IHave(vec![IHave { id, hops: 3 }]),
            ms(0),
            &mut out,
        );
        s.handle_control(
            peer(2),
            GossipMsg::IHave(vec![IHave { id, hops: 1 }]),
            ms(10),
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(s.counters().ihaves_received, 2);
        assert_eq!(s.poll_timeout(), Some(ms(80)));
        s.handle_timeout(ms(79), &mut out);
        assert!(out.is_empty());
        s.handle_timeout(ms(80), &mut out);
        assert_eq!(sends(&out), vec![(peer(1), GossipMsg::Graft(vec![id]))]);
        assert!(s.eager.contains(&peer(1)));
        assert_eq!(s.poll_timeout(), Some(ms(120)));
        out.clear();
        s.handle_timeout(ms(120), &mut out);
        assert_eq!(sends(&out), vec![(peer(2), GossipMsg::Graft(vec![id]))]);
        assert_eq!(s.counters().grafts_sent, 2);
        assert_eq!(s.poll_timeout(), None, "no announcer left: forgotten");
        // Announced again later: a fresh timer.
        out.clear();
        s.handle_control(
            peer(3),
            GossipMsg::IHave(vec![IHave { id, hops: 1 }]),
            ms(200),
            &mut out,
        );
        assert_eq!(s.poll_timeout(), Some(ms(280)));
        // Delivery cancels the timer.
        let c = content(1);
        s.handle_control(
            peer(3),
            GossipMsg::IHave(vec![IHave {
                id: c.id(),
                hops: 1,
            }]),
            ms(201),
            &mut out,
        );
        s.handle_gossip(peer(3), 1, c.id(), c, ms(202), &mut out);
        assert_eq!(s.graft_timers.len(), 1);
        check_invariants(&s);
    }

    #[test]
    fn ihaves_are_batched_into_one_message_per_window() {
        let mut s = node_with(&[1, 2], batching());
        let mut out = Vec::new();
        s.handle_control(peer(2), GossipMsg::Prune, ms(0), &mut out);
        let c = content(1);
        for n in 0..3 {
            s.handle_gossip(peer(1), 0, fake_id(n), c.clone(), ms(100 + n), &mut out);
        }
        assert!(sends(&out).is_empty(), "only the lazy peer, not yet");
        // Due from the first queued entry.
        let due = batch_due(&s, ms(100));
        assert_eq!(s.poll_timeout(), Some(due));
        s.handle_timeout(ms(104), &mut out);
        assert!(sends(&out).is_empty());
        s.handle_timeout(due, &mut out);
        let entries: Vec<IHave> = (0..3)
            .map(|n| IHave {
                id: fake_id(n),
                hops: 1,
            })
            .collect();
        assert_eq!(sends(&out), vec![(peer(2), GossipMsg::IHave(entries))]);
        // A burst fills a message: it goes at once, the rest waits for the window.
        out.clear();
        for n in 10..(10 + MAX_IDS_PER_MSG as u64 + 5) {
            s.handle_gossip(peer(1), 0, fake_id(n), c.clone(), ms(200), &mut out);
        }
        let sent = sends(&out);
        assert_eq!(sent.len(), 1);
        assert!(
            matches!(&sent[0], (p, GossipMsg::IHave(v)) if *p == peer(2) && v.len() == MAX_IDS_PER_MSG)
        );
        out.clear();
        let due = batch_due(&s, ms(200));
        s.handle_timeout(due, &mut out);
        assert!(matches!(&sends(&out)[..], [(_, GossipMsg::IHave(v))] if v.len() == 5));
        check_invariants(&s);
    }

    #[test]
    fn neighbour_sync_announces_the_newest_cached_ids_in_chunks() {
        let config = Config {
            sync_max_ids: 1500,
            ..Config::default()
        };
        let mut s = node_with(&[], config);
        let mut out = Vec::new();
        let c = content(1);
        for n in 0..2000 {
            s.broadcast(fake_id(n), c.clone(), ms(0), &mut out);
        }
        s.neighbor_up(peer(5), ms(1), &mut out);
        let sent = sends(&out);
        let sizes: Vec<usize> = sent
            .iter()
            .map(|(p, m)| match m {
                GossipMsg::IHave(v) if *p == peer(5) => v.len(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(sizes, vec![1024, 476]);
        let GossipMsg::IHave(first) = &sent[0].1 else {
            unreachable!()
        };
        assert_eq!(
            first[0],
            IHave {
                id: fake_id(1999),
                hops: 0
            }
        );
        assert_eq!(s.eager_peers(), vec![peer(5)]);
    }

    #[test]
    fn a_batch_left_empty_by_a_departed_neighbour_sets_no_timer() {
        let mut s = node_with(&[1, 2, 3], Config::default());
        let mut out = Vec::new();
        s.handle_control(peer(3), GossipMsg::Prune, ms(0), &mut out);
        let c = content(1);
        s.handle_gossip(peer(1), 0, c.id(), c, ms(100), &mut out);
        batch_due(&s, ms(100));
        // Its only lazy neighbour leaves before the flush: nothing is left to announce.
        s.neighbor_down(&peer(3), &mut out);
        assert_eq!(s.poll_precise(), None);
    }

    #[test]
    fn optimisation_grafts_a_much_shorter_lazy_path() {
        let mut s = node_with(&[1, 2, 3], Config::default());
        let mut out = Vec::new();
        s.handle_control(peer(2), GossipMsg::Prune, ms(0), &mut out);
        s.handle_control(peer(3), GossipMsg::Prune, ms(0), &mut out);
        let (c, d) = (content(1), content(2));
        let (id, id2) = (c.id(), d.id());
        // Announced 4 hops away, received at 11: 4 + 7 = 11 is not shorter.
        let announce =
            |s: &mut State, from: u64, id: MessageId, hops: u16, out: &mut Vec<OutEvent>| {
                s.handle_control(
                    peer(from),
                    GossipMsg::IHave(vec![IHave { id, hops }]),
                    ms(1),
                    out,
                )
            };
        announce(&mut s, 2, id, 4, &mut out);
        out.clear();
        s.handle_gossip(peer(1), 10, id, c, ms(2), &mut out);
        assert!(!sends(&out)
            .iter()
            .any(|(_, m)| matches!(m, GossipMsg::Graft(_) | GossipMsg::Prune)));
        // Announced 3 hops away before the payload arrived at 11: graft it. The parent
        // stays eager (no prune racing the graft: nothing in between is lost).
        announce(&mut s, 2, id2, 3, &mut out);
        out.clear();
        s.handle_gossip(peer(1), 10, id2, d, ms(3), &mut out);
        let tree_changes = |out: &[OutEvent]| -> Vec<(PeerId, GossipMsg)> {
            sends(out)
                .into_iter()
                .filter(|(_, m)| matches!(m, GossipMsg::Graft(_) | GossipMsg::Prune))
                .collect()
        };
        assert_eq!(
            tree_changes(&out),
            vec![(peer(2), GossipMsg::Graft(vec![]))]
        );
        assert_eq!(s.eager_peers(), vec![peer(1), peer(2)]);
        assert_eq!(s.lazy_peers(), vec![peer(3)]);
        // An announcement after the payload (a slower path) never changes the tree.
        out.clear();
        announce(&mut s, 3, id2, 0, &mut out);
        assert!(out.is_empty());
        // The next broadcast comes over the short path first; the parent's copy is a
        // duplicate and prunes the long path.
        let e = content(3);
        let id3 = e.id();
        s.handle_gossip(peer(2), 4, id3, e.clone(), ms(4), &mut out);
        out.clear();
        s.handle_gossip(peer(1), 10, id3, e, ms(5), &mut out);
        assert_eq!(tree_changes(&out), vec![(peer(1), GossipMsg::Prune)]);
        assert_eq!(s.eager_peers(), vec![peer(2)]);
        assert_eq!(s.lazy_peers(), vec![peer(1), peer(3)]);
        check_invariants(&s);
    }

    #[test]
    fn failure_notices_and_leaves_are_flooded_and_their_duplicates_prune_nothing() {
        let mut s = node_with(&[1, 2, 3], batching());
        let mut out = Vec::new();
        s.handle_control(peer(3), GossipMsg::Prune, ms(0), &mut out);
        let key = Keypair::from_seed([5; 32]);
        let gone = Broadcast::Gone(crate::wire::GoneNotice::new(
            &key,
            TopicId::from_name("t"),
            peer(7),
            1,
            0,
        ));
        let id = gone.id();
        out.clear();
        s.broadcast(id, gone.clone(), ms(1), &mut out);
        let mut to: Vec<PeerId> = sends(&out).into_iter().map(|(p, _)| p).collect();
        to.sort();
        assert_eq!(to, vec![peer(1), peer(2), peer(3)], "lazy neighbour 3 too");
        assert_eq!(s.poll_timeout().filter(|t| *t <= ms(10)), None, "no IHAVE");
        out.clear();
        s.handle_gossip(peer(1), 0, id, gone, ms(2), &mut out);
        assert!(
            out.is_empty(),
            "a flooded duplicate prunes nothing: {out:?}"
        );
        assert_eq!(s.eager_peers(), vec![peer(1), peer(2)]);
        // A leave record is flooded too; an online record goes along the tree.
        let record = |status| {
            Broadcast::Presence(crate::wire::PresenceRecord::new(
                &key,
                TopicId::from_name("t"),
                9,
                0,
                1000,
                status,
                Bytes::new(),
            ))
        };
        for (status, expect) in [
            (crate::wire::PresenceStatus::Leaving, 3),
            (crate::wire::PresenceStatus::Online, 2),
        ] {
            let r = record(status);
            out.clear();
            s.broadcast(r.id(), r, ms(3), &mut out);
            assert_eq!(sends(&out).len(), expect, "{status:?}");
        }
    }

    #[test]
    fn neighbour_down_forgets_the_peer_everywhere() {
        let mut s = node_with(&[1, 2], batching());
        let mut out = Vec::new();
        s.handle_control(peer(2), GossipMsg::Prune, ms(0), &mut out);
        let c = content(1);
        s.handle_gossip(peer(1), 0, c.id(), c, ms(0), &mut out);
        assert_eq!(s.pending_ihave.len(), 1);
        let missing = fake_id(1);
        s.handle_control(
            peer(2),
            GossipMsg::IHave(vec![IHave {
                id: missing,
                hops: 0,
            }]),
            ms(1),
            &mut out,
        );
        out.clear();
        s.neighbor_down(&peer(2), &mut out);
        s.neighbor_down(&peer(1), &mut out);
        assert!(s.eager_peers().is_empty() && s.lazy_peers().is_empty());
        assert!(s.pending_ihave.is_empty());
        assert!(out.is_empty(), "nobody left to graft: {out:?}");
        s.handle_timeout(ms(100), &mut out);
        assert!(
            out.is_empty(),
            "no IHAVE or GRAFT to a departed peer: {out:?}"
        );
        assert!(s.missing.is_empty());
        check_invariants(&s);
    }

    #[test]
    fn record_duplicates_prune_only_while_no_application_messages_flow() {
        let mut s = node_with(&[1, 2], batching());
        let mut out = Vec::new();
        // A quiet topic: the records shape the tree.
        let r = online_record(1);
        s.handle_gossip(peer(1), 0, r.id(), r.clone(), ms(0), &mut out);
        out.clear();
        s.handle_gossip(peer(2), 0, r.id(), r, ms(1), &mut out);
        assert_eq!(sends(&out), vec![(peer(2), GossipMsg::Prune)]);
        // Messages flow: a record's duplicate leaves the link alone…
        let mut s = node_with(&[1, 2], batching());
        let m = content(1);
        s.handle_gossip(peer(1), 0, m.id(), m, ms(0), &mut out);
        let r = online_record(2);
        s.handle_gossip(peer(1), 0, r.id(), r.clone(), ms(10), &mut out);
        out.clear();
        s.handle_gossip(peer(2), 0, r.id(), r, ms(11), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(s.eager_peers(), vec![peer(1), peer(2)]);
        // …a message's duplicate prunes as ever…
        let m = content(2);
        s.handle_gossip(peer(1), 0, m.id(), m.clone(), ms(20), &mut out);
        out.clear();
        s.handle_gossip(peer(2), 0, m.id(), m, ms(21), &mut out);
        assert_eq!(sends(&out), vec![(peer(2), GossipMsg::Prune)]);
        // …and once the messages stopped for 30 s, records prune again.
        s.neighbor_up(peer(3), ms(40_000), &mut out);
        let r = online_record(3);
        s.handle_gossip(peer(1), 0, r.id(), r.clone(), ms(50_020), &mut out);
        out.clear();
        s.handle_gossip(peer(3), 0, r.id(), r, ms(50_021), &mut out);
        assert_eq!(sends(&out), vec![(peer(3), GossipMsg::Prune)]);
        check_invariants(&s);
    }

    #[test]
    fn losing_a_tree_link_grafts_every_lazy_neighbour_at_once() {
        let mut s = node_with(&[1, 2, 3, 4], batching());
        let mut out = Vec::new();
        for p in [3, 4] {
            s.handle_control(peer(p), GossipMsg::Prune, ms(0), &mut out);
        }
        assert_eq!(s.eager_peers(), vec![peer(1), peer(2)]);
        // A lazy neighbour leaving changes nothing else.
        out.clear();
        s.neighbor_down(&peer(4), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(s.lazy_peers(), vec![peer(3)]);
        // An eager one: the subtree it fed must not wait for a graft timer.
        s.neighbor_down(&peer(1), &mut out);
        assert_eq!(sends(&out), vec![(peer(3), GossipMsg::Graft(Vec::new()))]);
        assert_eq!(s.eager_peers(), vec![peer(2), peer(3)]);
        assert!(s.lazy_peers().is_empty());
        // The grafted neighbour pushes; a duplicate from the other prunes it again.
        out.clear();
        let c = content(1);
        s.handle_gossip(peer(3), 0, c.id(), c.clone(), ms(10), &mut out);
        out.clear();
        s.handle_gossip(peer(2), 0, c.id(), c, ms(11), &mut out);
        assert_eq!(sends(&out), vec![(peer(2), GossipMsg::Prune)]);
        assert_eq!(s.eager_peers(), vec![peer(3)]);
        check_invariants(&s);
    }

    #[test]
    fn a_prune_of_the_last_tree_link_grafts_the_other_lazy_neighbours() {
        let mut s = node_with(&[1, 2, 3], batching());
        let mut out = Vec::new();
        s.handle_control(peer(3), GossipMsg::Prune, ms(0), &mut out);
        assert!(out.is_empty(), "still on the tree through 1 and 2");
        s.handle_control(peer(2), GossipMsg::Prune, ms(0), &mut out);
        assert!(out.is_empty(), "still on the tree through 1");
        s.handle_control(peer(1), GossipMsg::Prune, ms(0), &mut out);
        let mut sent = sends(&out);
        sent.sort_by_key(|(p, _)| *p);
        assert_eq!(
            sent,
            vec![
                (peer(2), GossipMsg::Graft(Vec::new())),
                (peer(3), GossipMsg::Graft(Vec::new()))
            ],
            "the pruner itself is not asked back"
        );
        assert_eq!(s.eager_peers(), vec![peer(2), peer(3)]);
        assert_eq!(s.lazy_peers(), vec![peer(1)]);
        check_invariants(&s);
    }

    // ---------------------------------------------------------------------------------
    // Bounds

    #[test]
    fn cache_is_bounded_by_count() {
        let config = Config {
            cache_max_count: 3,
            ..Config::default()
        };
        let mut s = node_with(&[1], config);
        let mut out = Vec::new();
        let ids: Vec<MessageId> = (0..5).map(|n| content(n).id()).collect();
        for n in 0..5 {
            s.broadcast(ids[n as usize], content(n), ms(n), &mut out);
        }
        assert_eq!(s.recent_ids(10), vec![ids[4], ids[3], ids[2]]);
        assert_eq!(s.recent_ids(2), vec![ids[4], ids[3]]);
        out.clear();
        s.handle_control(
            peer(1),
            GossipMsg::Graft(vec![ids[0], ids[4]]),
            ms(6),
            &mut out,
        );
        assert_eq!(sends(&out).len(), 1);
        assert_eq!(s.counters().grafts_missed, 1);
        // Evicted from the cache but still seen.
        assert!(s.is_known(&ids[0]));
        check_invariants(&s);
    }

    #[test]
    fn cache_is_bounded_by_bytes() {
        let size = content_sized(0, 1000).approx_size();
        let config = Config {
            cache_max_bytes: size * 5 / 2,
            ..Config::default()
        };
        let mut s = node_with(&[], config);
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for n in 0..4 {
            let c = content_sized(n, 1000);
            ids.push(c.id());
            s.broadcast(c.id(), c, ms(n), &mut out);
        }
        assert_eq!(s.recent_ids(10), vec![ids[3], ids[2]]);
        assert_eq!(s.cache_bytes, 2 * size);
        // One entry larger than the whole budget is not kept.
        let big = content_sized(9, 4000);
        s.broadcast(big.id(), big, ms(5), &mut out);
        assert!(s.recent_ids(10).is_empty());
        assert_eq!(s.cache_bytes, 0);
        check_invariants(&s);
    }

    #[test]
    fn cache_and_seen_expire_by_age() {
        let config = Config {
            cache_max_age: Duration::from_secs(30),
            seen_max_age: Duration::from_secs(120),
            ..Config::default()
        };
        let mut s = node_with(&[], config);
        let mut out = Vec::new();
        let a = content(1);
        let b = content(2);
        s.broadcast(a.id(), a.clone(), ms(1_000), &mut out);
        s.broadcast(b.id(), b.clone(), ms(2_000), &mut out);
        assert_eq!(s.poll_timeout(), Some(ms(31_000)));
        s.handle_timeout(ms(31_000), &mut out);
        assert_eq!(s.recent_ids(10), vec![b.id()]);
        assert_eq!(s.poll_timeout(), Some(ms(32_000)));
        // Called late: everything due is done at once.
        s.handle_timeout(ms(60_000), &mut out);
        assert!(s.recent_ids(10).is_empty());
        assert!(s.is_known(&a.id()) && s.is_known(&b.id()));
        assert_eq!(s.poll_timeout(), Some(ms(121_000)));
        s.handle_timeout(ms(121_000), &mut out);
        assert!(!s.is_known(&a.id()) && s.is_known(&b.id()));
        s.handle_timeout(ms(122_000), &mut out);
        assert!(!s.is_known(&b.id()));
        assert_eq!(s.poll_timeout(), None);
        assert!(out.is_empty());
        check_invariants(&s);
    }

    #[test]
    fn seen_is_bounded_by_count() {
        let config = Config {
            seen_max_count: 3,
            ..Config::default()
        };
        let mut s = node_with(&[1], config);
        let mut out = Vec::new();
        let c = content(1);
        for n in 0..5 {
            s.handle_gossip(peer(1), 0, fake_id(n), c.clone(), ms(n), &mut out);
        }
        assert!(!s.is_known(&fake_id(0)) && !s.is_known(&fake_id(1)));
        assert!((2..5).all(|n| s.is_known(&fake_id(n))));
        assert_eq!(s.seen_order.len(), 3);
        check_invariants(&s);
    }

    // ---------------------------------------------------------------------------------
    // Hostile input

    #[test]
    fn ihave_flood_of_unknown_ids_stays_bounded() {
        let mut s = node_with(&[1], Config::default());
        let mut out = Vec::new();
        let flood: Vec<IHave> = (0..10_000)
            .map(|n| IHave {
                id: fake_id(n),
                hops: u16::MAX,
            })
            .collect();
        for from in [peer(1), peer(66), peer(67)] {
            s.handle_control(from, GossipMsg::IHave(flood.clone()), ms(0), &mut out);
        }
        // Many announcers of one id: at most MAX_ANNOUNCERS_PER_ID kept.
        for p in 100..120 {
            s.handle_control(
                peer(p),
                GossipMsg::IHave(vec![IHave {
                    id: fake_id(0),
                    hops: 0,
                }]),
                ms(0),
                &mut out,
            );
        }
        assert!(out.is_empty());
        assert_eq!(s.missing.len(), MAX_MISSING_IDS);
        assert_eq!(
            s.missing[&fake_id(0)].announcers.len(),
            MAX_ANNOUNCERS_PER_ID
        );
        assert_eq!(s.counters().ihaves_received, 30_020);
        check_invariants(&s);
        // The grafts go in full-size messages, to the first announcer.
        s.handle_timeout(ms(80), &mut out);
        let sent = sends(&out);
        assert_eq!(sent.len(), 4);
        assert!(sent
            .iter()
            .all(|(p, m)| *p == peer(1) && matches!(m, GossipMsg::Graft(v) if v.len() == 1024)));
        // The strangers never joined the tree.
        assert_eq!(s.eager_peers(), vec![peer(1)]);
        assert!(s.lazy_peers().is_empty());
        // Every id is forgotten once its announcers are used up.
        for t in (120..=1000).step_by(40) {
            s.handle_timeout(ms(t), &mut out);
        }
        assert!(s.missing.is_empty() && s.graft_timers.is_empty());
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn strangers_and_self_cannot_join_the_tree() {
        let mut s = node_with(&[1], Config::default());
        let mut out = Vec::new();
        let stranger = peer(50);
        // Graft for unknown ids: counted, no answer, no link.
        s.handle_control(
            stranger,
            GossipMsg::Graft(vec![fake_id(1), fake_id(2)]),
            ms(0),
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(s.counters().grafts_missed, 2);
        // Prune from a stranger: nothing changes.
        s.handle_control(stranger, GossipMsg::Prune, ms(0), &mut out);
        assert_eq!(s.eager_peers(), vec![peer(1)]);
        // Gossip from a stranger: delivered and forwarded, the stranger stays out.
        let c = content(1);
        let id = c.id();
        s.handle_gossip(stranger, 2, id, c.clone(), ms(1), &mut out);
        assert_eq!(delivers(&out), vec![(id, 3, stranger)]);
        assert_eq!(
            sends(&out),
            vec![(
                peer(1),
                GossipMsg::Gossip {
                    hops: 3,
                    content: c.clone()
                }
            )]
        );
        // Its duplicate is not answered with a prune (it is no eager link).
        out.clear();
        s.handle_gossip(stranger, 2, id, c.clone(), ms(2), &mut out);
        assert!(out.is_empty());
        // A graft from a stranger is still answered from the cache.
        s.handle_control(stranger, GossipMsg::Graft(vec![id]), ms(3), &mut out);
        assert_eq!(sends(&out).len(), 1);
        assert_eq!(s.eager_peers(), vec![peer(1)]);
        assert!(s.lazy_peers().is_empty());
        // Messages from ourselves: ignored, never a neighbour.
        out.clear();
        s.neighbor_up(peer(0), ms(4), &mut out);
        s.handle_control(
            peer(0),
            GossipMsg::IHave(vec![IHave {
                id: fake_id(7),
                hops: 0,
            }]),
            ms(4),
            &mut out,
        );
        s.handle_control(peer(0), GossipMsg::Graft(vec![id]), ms(4), &mut out);
        assert!(out.is_empty());
        assert!(s.missing.is_empty());
        // A Gossip variant passed to handle_control is ignored.
        s.handle_control(
            peer(1),
            GossipMsg::Gossip {
                hops: 0,
                content: content(9),
            },
            ms(5),
            &mut out,
        );
        assert!(out.is_empty() && !s.is_known(&content(9).id()));
        check_invariants(&s);
    }

    #[test]
    fn a_stranger_announcer_is_grafted_but_stays_out_of_the_views() {
        let mut s = node_with(&[1], Config::default());
        let mut out = Vec::new();
        let stranger = peer(50);
        let c = content(1);
        s.handle_control(
            stranger,
            GossipMsg::IHave(vec![IHave {
                id: c.id(),
                hops: 0,
            }]),
            ms(0),
            &mut out,
        );
        s.handle_timeout(ms(80), &mut out);
        assert_eq!(
            sends(&out),
            vec![(stranger, GossipMsg::Graft(vec![c.id()]))]
        );
        assert_eq!(s.eager_peers(), vec![peer(1)]);
        assert!(s.lazy_peers().is_empty());
        check_invariants(&s);
    }
}
