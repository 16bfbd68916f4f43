//! HyParView membership [Leitão, Pereira, Rodrigues, DSN 2007]: a small active view of
//! connected neighbours (the broadcast fanout) and a larger passive view of backups, kept
//! fresh by random walks (join, shuffle). Used twice: once for the network-wide overlay
//! and once per subscribed topic.
//!
//! Departures from the paper are marked "Departure:" where they are made.

use std::time::Duration;

use bytes::Bytes;

use super::time::Time;
use crate::identity::PeerId;
use crate::wire::{MembershipMsg, PeerInfo};

/// HyParView parameters. Defaults from the paper's 10,000-node setting (design.md §3).
#[derive(Clone, Debug)]
pub struct Config {
    /// Active view size (paper: log10(n) + 1 = 5).
    pub active_view_capacity: usize,
    /// Passive view size (paper: 30).
    pub passive_view_capacity: usize,
    /// Active random walk length, ARWL (paper: 6).
    pub active_random_walk_length: u16,
    /// Passive random walk length, PRWL (paper: 3).
    pub passive_random_walk_length: u16,
    /// Shuffle random walk length (paper: uses ARWL, 6).
    pub shuffle_random_walk_length: u16,
    /// Active-view peers in a shuffle sample (paper: 3).
    pub shuffle_active_count: usize,
    /// Passive-view peers in a shuffle sample (paper: 4).
    pub shuffle_passive_count: usize,
    /// Shuffle period: each period is drawn uniformly from [interval, 2 × interval)
    /// (design: every 30–60 s).
    pub shuffle_interval: Duration,
    /// How long a neighbour request may go unanswered before it counts as refused.
    /// Departure: the paper relies on TCP connection failure; we need an explicit timeout.
    pub neighbor_request_timeout: Duration,
    /// How many failed former neighbours to remember for partition healing.
    pub graveyard_capacity: usize,
    /// How long a failed former neighbour is remembered.
    pub graveyard_ttl: Duration,
    /// How often one remembered failed neighbour is retried with a join.
    /// Departure: the paper has no partition healing; Serf/memberlist reconnect to failed
    /// members the same way.
    pub rejoin_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            active_view_capacity: 5,
            passive_view_capacity: 30,
            active_random_walk_length: 6,
            passive_random_walk_length: 3,
            shuffle_random_walk_length: 6,
            shuffle_active_count: 3,
            shuffle_passive_count: 4,
            shuffle_interval: Duration::from_secs(30),
            neighbor_request_timeout: Duration::from_secs(1),
            graveyard_capacity: 16,
            graveyard_ttl: Duration::from_secs(600),
            rejoin_interval: Duration::from_secs(10),
        }
    }
}

/// What the membership layer asks of its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutEvent {
    /// Send a message to a peer.
    Send(PeerId, MembershipMsg),
    /// A peer entered the active view (it answered, so it is reachable).
    NeighborUp(PeerId),
    /// A peer left the active view.
    NeighborDown(PeerId),
    /// An address was learned for a peer (the driver keeps an address book).
    LearnedPeer(PeerInfo),
}

/// The membership state of one overlay.
#[derive(Debug)]
pub struct State {
    _todo: (),
}

impl State {
    /// A node `me` (with its own address) with no neighbours yet.
    pub fn new(me: PeerInfo, config: Config, seed: u64) -> Self {
        let _ = (me, config, seed);
        todo!()
    }

    /// Updates the address this node advertises in joins, neighbour requests and shuffles.
    pub fn set_my_addr(&mut self, addr: Bytes) {
        let _ = addr;
        todo!()
    }

    /// Asks `contact` to let this node in (sends `Join`). May be called for several
    /// contacts; a contact that fails is reported through [`State::peer_failed`].
    pub fn join(&mut self, contact: PeerInfo, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (contact, now, out);
        todo!()
    }

    /// Handles a message from `from` (the transport proved `from`'s identity).
    pub fn handle_message(
        &mut self,
        from: PeerId,
        msg: MembershipMsg,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        let _ = (from, msg, now, out);
        todo!()
    }

    /// `peer` failed: the failure detector declared it dead, its connection was lost, or a
    /// dial to it failed. Removes it from both views; a failed active neighbour is replaced
    /// from the passive view and remembered for partition healing.
    pub fn peer_failed(&mut self, peer: PeerId, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (peer, now, out);
        todo!()
    }

    /// Adds a hint to the passive view (e.g. a peer found by topic discovery).
    pub fn add_passive(&mut self, peer: PeerInfo) {
        let _ = peer;
        todo!()
    }

    /// Leaves gracefully: `Disconnect { alive: false }` to every active neighbour, and
    /// empties both views.
    pub fn leave(&mut self, out: &mut Vec<OutEvent>) {
        let _ = out;
        todo!()
    }

    /// The active view.
    pub fn active(&self) -> Vec<PeerId> {
        todo!()
    }

    /// The passive view.
    pub fn passive(&self) -> Vec<PeerId> {
        todo!()
    }

    /// Whether `peer` is in the active view.
    pub fn is_active(&self, peer: &PeerId) -> bool {
        let _ = peer;
        todo!()
    }

    /// The address info of an active or passive peer, if known.
    pub fn peer_info(&self, peer: &PeerId) -> Option<PeerInfo> {
        let _ = peer;
        todo!()
    }

    /// When [`State::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        todo!()
    }

    /// Does all timed work due at `now`: neighbour-request timeouts, shuffles, rejoins of
    /// remembered failed peers, refilling an active view below capacity.
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (now, out);
        todo!()
    }
}
