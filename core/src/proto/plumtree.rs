//! Plumtree, epidemic broadcast trees [Leitão, Pereira, Rodrigues, SRDS 2007], for one
//! topic: payloads are pushed eagerly along a spanning tree of the topic's active view and
//! announced lazily (IHAVE, batched) on the other links; a missing message is pulled with
//! GRAFT after a timeout, which also repairs the tree; duplicates PRUNE links to lazy.
//!
//! Departures from the paper are marked "Departure:" where they are made.

use std::time::Duration;

use super::time::Time;
use crate::identity::PeerId;
use crate::wire::{Broadcast, GossipMsg, MessageId};

/// Broadcast parameters (iroh-gossip's defaults, design.md §3).
#[derive(Clone, Debug)]
pub struct Config {
    /// IHAVE announcements are batched for this long (5 ms).
    pub ihave_batch_delay: Duration,
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
            ihave_batch_delay: Duration::from_millis(5),
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
}

/// The broadcast tree state of one topic.
#[derive(Debug)]
pub struct State {
    _todo: (),
}

impl State {
    /// A node `me` with no neighbours yet.
    pub fn new(me: PeerId, config: Config) -> Self {
        let _ = (me, config);
        todo!()
    }

    /// A new neighbour in the topic's active view: starts as eager. Departure (neighbour
    /// sync): it is also sent an IHAVE of the cached messages (at most `sync_max_ids`), so a
    /// new or reconnected neighbour can graft what it missed while the tree was broken.
    pub fn neighbor_up(&mut self, peer: PeerId, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (peer, now, out);
        todo!()
    }

    /// A neighbour left the active view.
    pub fn neighbor_down(&mut self, peer: &PeerId) {
        let _ = peer;
        todo!()
    }

    /// Whether `id` was seen (delivered or published here) within `seen_max_age`.
    pub fn is_known(&self, id: &MessageId) -> bool {
        let _ = id;
        todo!()
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
        let _ = (id, content, now, out);
        todo!()
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
        let _ = (from, hops, id, content, now, out);
        todo!()
    }

    /// Handles IHave, Graft and Prune (a Gossip variant passed here is ignored).
    pub fn handle_control(
        &mut self,
        from: PeerId,
        msg: GossipMsg,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        let _ = (from, msg, now, out);
        todo!()
    }

    /// Up to `n` ids of the most recently cached broadcasts, newest first.
    pub fn recent_ids(&self, n: usize) -> Vec<MessageId> {
        let _ = n;
        todo!()
    }

    /// The eager (tree) neighbours.
    pub fn eager_peers(&self) -> Vec<PeerId> {
        todo!()
    }

    /// The lazy neighbours.
    pub fn lazy_peers(&self) -> Vec<PeerId> {
        todo!()
    }

    /// Measurement counters.
    pub fn counters(&self) -> &Counters {
        todo!()
    }

    /// When [`State::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        todo!()
    }

    /// Does all timed work due at `now`: IHAVE flushes, graft timeouts, cache expiry.
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (now, out);
        todo!()
    }
}
