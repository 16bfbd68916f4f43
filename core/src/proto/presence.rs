//! Presence on one topic: who is online right now.
//!
//! Each present node keeps a signed record {author, topic, seq, issued, ttl, status,
//! metadata} alive by re-announcing it every `refresh_interval`; records ride the topic's
//! broadcast tree. A record expires `ttl` after it was last *received* (local clock, so a
//! peer's clock cannot freeze or extend it). A graceful leave is a signed `Leaving` record.
//! A crash is noticed by the failure detector of a neighbour, which broadcasts a signed
//! [`GoneNotice`]; a live subject refutes it with a newer record (as SWIM refutes
//! suspicion). A node that joins the topic gets a snapshot from each new neighbour.

use std::time::Duration;

use bytes::Bytes;

use super::time::Time;
use crate::identity::{Keypair, PeerId};
use crate::wire::{Broadcast, GoneNotice, PresenceRecord, TopicId};

/// Presence parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a record lives without a refresh (60 s; seed systems use minutes).
    pub ttl: Duration,
    /// How often a present node re-announces itself (ttl / 3: two refreshes may be lost).
    pub refresh_interval: Duration,
    /// Most records kept per topic (10,000).
    pub max_records: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl: Duration::from_secs(60),
            refresh_interval: Duration::from_secs(20),
            max_records: 10_000,
        }
    }
}

/// Why a peer went offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineReason {
    /// It announced it was leaving.
    Left,
    /// Its record was not refreshed within its TTL.
    Expired,
    /// A failure detector (here or at `reporter`) declared it dead.
    Failed {
        /// Who detected it.
        reporter: PeerId,
    },
}

/// A change in who is online.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceChange {
    /// The peer came online.
    Online,
    /// The peer's metadata changed.
    Updated,
    /// The peer went offline.
    Offline(OfflineReason),
}

/// A presence event for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEvent {
    /// The topic.
    pub topic: TopicId,
    /// Whose presence changed.
    pub peer: PeerId,
    /// What changed.
    pub change: PresenceChange,
    /// The peer's metadata (its last known metadata when offline).
    pub metadata: Bytes,
}

/// One online peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The peer.
    pub peer: PeerId,
    /// Its metadata.
    pub metadata: Bytes,
    /// When it came online (local clock).
    pub since: Time,
    /// When its newest record arrived (local clock).
    pub last_seen: Time,
}

/// What the presence layer asks of its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutEvent {
    /// Broadcast this (signed) content on the topic.
    Broadcast(Broadcast),
    /// Tell the application.
    Event(PresenceEvent),
}

/// The presence table of one topic.
#[derive(Debug)]
pub struct State {
    _todo: (),
}

impl State {
    /// An empty table for `topic`; `key` signs this node's own records.
    pub fn new(topic: TopicId, key: Keypair, config: Config) -> Self {
        let _ = (topic, key, config);
        todo!()
    }

    /// Announces this node online with `metadata` (or updates its metadata), broadcasting
    /// a new record and refreshing it until [`State::clear_local`].
    pub fn set_local(&mut self, metadata: Bytes, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (metadata, now, out);
        todo!()
    }

    /// Announces that this node leaves (a signed `Leaving` record), if it was present.
    pub fn clear_local(&mut self, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (now, out);
        todo!()
    }

    /// Whether this node is announcing itself.
    pub fn is_local_present(&self) -> bool {
        todo!()
    }

    /// Whether `record` is newer than what the table holds for its author (so worth
    /// verifying and applying). Records of this node's own key are never newer.
    pub fn is_newer(&self, record: &PresenceRecord) -> bool {
        let _ = record;
        todo!()
    }

    /// Applies a record whose signature the caller verified.
    pub fn handle_record(&mut self, record: PresenceRecord, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (record, now, out);
        todo!()
    }

    /// Applies a failure notice whose signature the caller verified. A notice about this
    /// node while it is present is refuted with a newer record.
    pub fn handle_gone(&mut self, notice: GoneNotice, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (notice, now, out);
        todo!()
    }

    /// This node's failure detector declared `peer` dead: if it is online here, it goes
    /// offline and a signed [`GoneNotice`] is broadcast.
    pub fn peer_failed(&mut self, peer: &PeerId, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (peer, now, out);
        todo!()
    }

    /// The records of everyone online (this node included), for a new neighbour.
    pub fn snapshot(&self) -> Vec<PresenceRecord> {
        todo!()
    }

    /// Everyone online except this node, sorted by peer id.
    pub fn online(&self) -> Vec<Entry> {
        todo!()
    }

    /// Whether `peer` is online here.
    pub fn is_online(&self, peer: &PeerId) -> bool {
        let _ = peer;
        todo!()
    }

    /// When [`State::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        todo!()
    }

    /// Does all timed work due at `now`: refreshes this node's record, expires others.
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (now, out);
        todo!()
    }
}
