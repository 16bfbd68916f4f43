//! Presence on one topic: who is online right now.
//!
//! Each present node keeps a signed record {author, topic, seq, issued, ttl, status,
//! metadata} alive by re-announcing it every `refresh_interval`; records ride the topic's
//! broadcast tree. A record expires `ttl` after it was last *received* (local clock, so a
//! peer's clock cannot freeze or extend it). A graceful leave is a signed `Leaving` record.
//! A crash is noticed by the failure detector of a neighbour, which broadcasts a signed
//! [`GoneNotice`]; a live subject refutes it with a newer record (as SWIM refutes
//! suspicion). A node that joins the topic gets a snapshot from each new neighbour.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;

use super::time::{earliest, Time};
use crate::identity::{Keypair, PeerId};
use crate::wire::{Broadcast, GoneNotice, PresenceRecord, PresenceStatus, TopicId};

/// Presence parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a record lives without a refresh (60 s; seed systems use minutes).
    pub ttl: Duration,
    /// The longest time between two refreshes of a present node's record (ttl / 3: two
    /// refreshes may be lost). Each wait is drawn from ¾ to all of it (see
    /// `refresh_delay`).
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

/// A record's lifetime is capped at this many times our own `ttl`, so a peer cannot pin
/// itself in every table with a huge `ttl_ms` (10×: generous for peers configured with a
/// longer ttl than ours, still bounded).
const TTL_CAP_FACTOR: u32 = 10;

/// Floor on the refresh interval, so a zero interval cannot make the driver spin on the
/// same instant forever (a local misconfiguration, not a protocol value).
const MIN_REFRESH: Duration = Duration::from_millis(1);

/// What the table holds about one other peer (online, or a tombstone).
#[derive(Debug)]
struct Peer {
    /// Newest seq seen from it; only higher seqs are applied.
    seq: u64,
    /// Online, or offline (a tombstone kept so older records cannot resurrect it).
    online: bool,
    /// Last known metadata.
    metadata: Bytes,
    /// When it came online (local clock).
    since: Time,
    /// When its newest record arrived (local clock).
    last_seen: Time,
    /// Online: when its record expires. Offline: when the tombstone is dropped.
    /// Mirrored as `(deadline, peer)` in `expiries` or `tombstones`.
    deadline: Time,
    /// The capped lifetime of its newest record (sizes the tombstone: see `tombstone`).
    life: Duration,
    /// Its newest record (for snapshots).
    record: PresenceRecord,
}

/// How long after issuing `record` its author refreshes it: a point between ¾ of
/// `interval` and all of it, never less than [`MIN_REFRESH`].
///
/// Why the jitter: nodes that announce at the same moment (a cluster started together, an
/// application that sets presence on one event) would otherwise refresh in step for ever.
/// Hundreds of records from different authors then cross the topic's one broadcast tree at
/// once; their duplicates prune links of the same cycles concurrently, the tree breaks, and
/// graft timers repair it, round after round (50 nodes, 10 topics, started together: 21
/// prunes and 4 graft timers per node per second when idle, against 1.7 and 0.6 with the
/// jitter). The draw comes from the record's signature, which is uniform and
/// deterministic for a key and record, so no random generator is needed here.
fn refresh_delay(interval: Duration, record: &PresenceRecord) -> Duration {
    let draw = f64::from(u16::from_le_bytes([record.sig.0[0], record.sig.0[1]]));
    interval
        .mul_f64(1.0 - draw / f64::from(u16::MAX) / 4.0)
        .max(MIN_REFRESH)
}

/// This node's own announcement.
#[derive(Debug)]
struct Local {
    /// Current metadata.
    metadata: Bytes,
    /// Newest Online record issued.
    record: PresenceRecord,
    /// When to re-announce.
    next_refresh: Time,
}

/// The presence table of one topic.
#[derive(Debug)]
pub struct State {
    topic: TopicId,
    key: Keypair,
    me: PeerId,
    config: Config,
    /// Present: our current record and refresh timer.
    local: Option<Local>,
    /// Last seq this instance issued (kept across clear/set so seqs only grow).
    own_seq: Option<u64>,
    /// Other peers, online or tombstoned; never this node. At most `max_records`. Boxed:
    /// a B-tree node has room for 11 entries, so inline ~270 B entries would leave a
    /// small table's nodes mostly empty room (docs/BENCHMARKS.md, memory).
    peers: BTreeMap<PeerId, Box<Peer>>,
    /// `(expires_at, peer)` of every online peer: due entries in O(log n).
    expiries: BTreeSet<(Time, PeerId)>,
    /// `(drop_at, peer)` of every tombstone: due drops and eviction in O(log n).
    tombstones: BTreeSet<(Time, PeerId)>,
    /// Records from new authors ignored because the table was full of online peers.
    ignored_full: u64,
}

impl State {
    /// An empty table for `topic`; `key` signs this node's own records.
    pub fn new(topic: TopicId, key: Keypair, config: Config) -> Self {
        State {
            topic,
            me: key.peer_id(),
            key,
            config,
            local: None,
            own_seq: None,
            peers: BTreeMap::new(),
            expiries: BTreeSet::new(),
            tombstones: BTreeSet::new(),
            ignored_full: 0,
        }
    }

    /// Announces this node online with `metadata` (or updates its metadata), broadcasting
    /// a new record and refreshing it until [`State::clear_local`].
    pub fn set_local(&mut self, metadata: Bytes, now: Time, out: &mut Vec<OutEvent>) {
        self.announce(metadata, now, out);
    }

    /// Announces that this node leaves (a signed `Leaving` record), if it was present.
    pub fn clear_local(&mut self, now: Time, out: &mut Vec<OutEvent>) {
        if let Some(local) = self.local.take() {
            let rec = self.issue(PresenceStatus::Leaving, local.metadata, now);
            out.push(OutEvent::Broadcast(Broadcast::Presence(rec)));
        }
    }

    /// Whether this node is announcing itself.
    pub fn is_local_present(&self) -> bool {
        self.local.is_some()
    }

    /// Whether `record` is newer than what the table holds for its author (so worth
    /// verifying and applying). Records of this node's own key are never newer.
    ///
    /// Records for another topic are never newer either (they do not belong here).
    pub fn is_newer(&self, record: &PresenceRecord) -> bool {
        if record.topic != self.topic || record.author == self.me {
            return false;
        }
        match self.peers.get(&record.author) {
            Some(p) => record.seq > p.seq,
            None => true,
        }
    }

    /// Applies a record whose signature the caller verified.
    pub fn handle_record(&mut self, record: PresenceRecord, now: Time, out: &mut Vec<OutEvent>) {
        if !self.is_newer(&record) {
            return;
        }
        let author = record.author;
        // Expiry counts from the local receive time, never from `issued_ms`: a peer's
        // clock (or a forged future date) cannot extend or freeze its record.
        let cap = self.config.ttl.saturating_mul(TTL_CAP_FACTOR);
        let life = Duration::from_millis(u64::from(record.ttl_ms)).min(cap);
        let online = record.status == PresenceStatus::Online;
        let mut change = None;
        match self.peers.get_mut(&author) {
            Some(p) => {
                if online {
                    if !p.online {
                        change = Some(PresenceChange::Online);
                        p.since = now;
                    } else if p.metadata != record.metadata {
                        change = Some(PresenceChange::Updated);
                    }
                    p.metadata = record.metadata.clone();
                } else if p.online {
                    // Keep the last Online metadata for the event.
                    change = Some(PresenceChange::Offline(OfflineReason::Left));
                }
                p.seq = record.seq;
                p.last_seen = now;
                // A leave keeps the longest lifetime seen: old Online records may linger
                // elsewhere that long (see `tombstone`).
                p.life = if online { life } else { p.life.max(life) };
                p.record = record;
            }
            None => {
                if !self.make_room() {
                    self.ignored_full += 1;
                    return;
                }
                if online {
                    change = Some(PresenceChange::Online);
                }
                // A Leaving record from an unknown author still leaves a tombstone: its
                // older Online record may arrive later (reordering, a lagging snapshot).
                self.peers.insert(
                    author,
                    Box::new(Peer {
                        seq: record.seq,
                        online: false,
                        metadata: record.metadata.clone(),
                        since: now,
                        last_seen: now,
                        deadline: now,
                        life,
                        record,
                    }),
                );
                self.tombstones.insert((now, author));
            }
        }
        if online {
            self.retime(&author, true, now + life);
        } else {
            self.tombstone(&author, now);
        }
        if let Some(change) = change {
            self.emit(&author, change, out);
        }
    }

    /// Applies a failure notice whose signature the caller verified. A notice about this
    /// node while it is present is refuted with a newer record.
    pub fn handle_gone(&mut self, notice: GoneNotice, now: Time, out: &mut Vec<OutEvent>) {
        if notice.topic != self.topic {
            return;
        }
        if notice.subject == self.me {
            // Refute as SWIM refutes suspicion: a newer record supersedes the notice
            // everywhere (receivers drop it once they hold a seq above it).
            if let Some(local) = &self.local {
                let metadata = local.metadata.clone();
                self.announce(metadata, now, out);
            }
            return;
        }
        let applies = self
            .peers
            .get(&notice.subject)
            .is_some_and(|p| p.online && p.seq <= notice.subject_seq);
        if applies {
            let reason = OfflineReason::Failed {
                reporter: notice.reporter,
            };
            self.go_offline(&notice.subject, reason, now, out);
        }
    }

    /// This node's failure detector declared `peer` dead: if it is online here, it goes
    /// offline and a signed [`GoneNotice`] is broadcast.
    pub fn peer_failed(&mut self, peer: &PeerId, now: Time, out: &mut Vec<OutEvent>) {
        let seq = match self.peers.get(peer) {
            Some(p) if p.online => p.seq,
            _ => return,
        };
        let reason = OfflineReason::Failed { reporter: self.me };
        self.go_offline(peer, reason, now, out);
        let notice = GoneNotice::new(&self.key, self.topic, *peer, seq, now.as_millis());
        out.push(OutEvent::Broadcast(Broadcast::Gone(notice)));
    }

    /// The records of everyone online (this node included), for a new neighbour.
    ///
    /// This node's own record comes first, then the others by peer id. The caller splits
    /// it into parts of at most `Limits::max_records_per_msg`.
    pub fn snapshot(&self) -> Vec<PresenceRecord> {
        let own = self.local.as_ref().map(|l| l.record.clone());
        let others = self
            .peers
            .values()
            .filter(|p| p.online)
            .map(|p| p.record.clone());
        own.into_iter().chain(others).collect()
    }

    /// Everyone online except this node, sorted by peer id.
    pub fn online(&self) -> Vec<Entry> {
        self.peers
            .iter()
            .filter(|(_, p)| p.online)
            .map(|(id, p)| Entry {
                peer: *id,
                metadata: p.metadata.clone(),
                since: p.since,
                last_seen: p.last_seen,
            })
            .collect()
    }

    /// Whether `peer` is online here.
    pub fn is_online(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.online)
    }

    /// How many records from new authors were ignored because the table was full.
    pub fn ignored_full(&self) -> u64 {
        self.ignored_full
    }

    /// How many peers the table holds, online and tombstoned (at most `max_records`).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the table holds no peer at all.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// This node's current Online record, if it is present.
    pub fn local_record(&self) -> Option<&PresenceRecord> {
        self.local.as_ref().map(|l| &l.record)
    }

    /// When [`State::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        let refresh = self.local.as_ref().map(|l| l.next_refresh);
        let expiry = self.expiries.first().map(|(t, _)| *t);
        let drop = self.tombstones.first().map(|(t, _)| *t);
        earliest(refresh, earliest(expiry, drop))
    }

    /// Does all timed work due at `now`: refreshes this node's record, expires others.
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<OutEvent>) {
        let refresh = match &self.local {
            Some(l) if l.next_refresh <= now => Some(l.metadata.clone()),
            _ => None,
        };
        if let Some(metadata) = refresh {
            self.announce(metadata, now, out);
        }
        while let Some(&(t, peer)) = self.expiries.first() {
            if t > now {
                break;
            }
            // Pop first, so the loop always progresses even if the maps disagreed.
            self.expiries.pop_first();
            self.go_offline(&peer, OfflineReason::Expired, now, out);
        }
        while let Some(&(t, peer)) = self.tombstones.first() {
            if t > now {
                break;
            }
            self.tombstones.pop_first();
            if self.peers.get(&peer).is_some_and(|p| !p.online) {
                self.peers.remove(&peer);
            }
        }
    }

    /// Issues and signs this node's next record (seqs only grow).
    fn issue(&mut self, status: PresenceStatus, metadata: Bytes, now: Time) -> PresenceRecord {
        // The first seq is the clock in microseconds, so a restarted node with the same
        // key outranks every record of its previous incarnation without stored state.
        let seq = self
            .own_seq
            .map_or(now.as_micros(), |s| s.saturating_add(1));
        self.own_seq = Some(seq);
        let ttl_ms = u32::try_from(self.config.ttl.as_millis()).unwrap_or(u32::MAX);
        PresenceRecord::new(
            &self.key,
            self.topic,
            seq,
            now.as_millis(),
            ttl_ms,
            status,
            metadata,
        )
    }

    /// Issues, stores and broadcasts a new Online record; restarts the refresh timer.
    fn announce(&mut self, metadata: Bytes, now: Time, out: &mut Vec<OutEvent>) {
        let record = self.issue(PresenceStatus::Online, metadata.clone(), now);
        out.push(OutEvent::Broadcast(Broadcast::Presence(record.clone())));
        let next_refresh = now + refresh_delay(self.config.refresh_interval, &record);
        self.local = Some(Local {
            metadata,
            record,
            next_refresh,
        });
    }

    /// Marks an online `peer` offline for `reason` (event + tombstone); else does nothing.
    fn go_offline(
        &mut self,
        peer: &PeerId,
        reason: OfflineReason,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        if self.peers.get(peer).is_some_and(|p| p.online) {
            self.tombstone(peer, now);
            self.emit(peer, PresenceChange::Offline(reason), out);
        }
    }

    /// Makes `peer` a tombstone (or renews one).
    ///
    /// Departure: the brief keeps tombstones for `ttl`; we keep them for the longer of
    /// `ttl` and the peer's capped record lifetime, because a neighbour that missed the
    /// leave may hold (and snapshot) the old Online record that long.
    fn tombstone(&mut self, peer: &PeerId, now: Time) {
        let keep = match self.peers.get(peer) {
            Some(p) => p.life.max(self.config.ttl),
            None => return,
        };
        self.retime(peer, false, now + keep);
    }

    /// Sets `peer`'s online flag and deadline, keeping `expiries`/`tombstones` in step.
    fn retime(&mut self, peer: &PeerId, online: bool, deadline: Time) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let old = (p.deadline, *peer);
        if p.online {
            self.expiries.remove(&old);
        } else {
            self.tombstones.remove(&old);
        }
        p.online = online;
        p.deadline = deadline;
        if online {
            self.expiries.insert((deadline, *peer));
        } else {
            self.tombstones.insert((deadline, *peer));
        }
    }

    /// Frees a slot for a new author if needed: evicts the tombstone due soonest.
    /// False if the table is full of online peers.
    fn make_room(&mut self) -> bool {
        if self.peers.len() < self.config.max_records {
            return true;
        }
        match self.tombstones.pop_first() {
            Some((_, victim)) => {
                self.peers.remove(&victim);
                self.peers.len() < self.config.max_records
            }
            None => false,
        }
    }

    /// Tells the application about `peer`, with its last known metadata.
    fn emit(&self, peer: &PeerId, change: PresenceChange, out: &mut Vec<OutEvent>) {
        let metadata = self
            .peers
            .get(peer)
            .map(|p| p.metadata.clone())
            .unwrap_or_default();
        out.push(OutEvent::Event(PresenceEvent {
            topic: self.topic,
            peer: *peer,
            change,
            metadata,
        }));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::identity::Signature;

    /// A realistic wall clock (ms since the Unix epoch).
    const T0: u64 = 1_700_000_000_000;

    fn topic() -> TopicId {
        TopicId::from_name("room")
    }

    fn key(n: u8) -> Keypair {
        Keypair::from_seed([n; 32])
    }

    fn at(ms_after_t0: u64) -> Time {
        Time::from_millis(T0 + ms_after_t0)
    }

    fn table(n: u8) -> State {
        State::new(topic(), key(n), Config::default())
    }

    fn record(k: &Keypair, seq: u64, status: PresenceStatus, md: &'static [u8]) -> PresenceRecord {
        PresenceRecord::new(k, topic(), seq, T0, 60_000, status, Bytes::from_static(md))
    }

    fn online_rec(k: &Keypair, seq: u64, md: &'static [u8]) -> PresenceRecord {
        record(k, seq, PresenceStatus::Online, md)
    }

    fn leaving_rec(k: &Keypair, seq: u64) -> PresenceRecord {
        record(k, seq, PresenceStatus::Leaving, b"")
    }

    /// An unsigned record from a made-up author: the table never verifies, so bulk tests
    /// need not pay for 20,000 signatures.
    fn fake_rec(i: u32, seq: u64, status: PresenceStatus) -> PresenceRecord {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_be_bytes());
        id[31] = 0xee;
        PresenceRecord {
            topic: topic(),
            author: PeerId::from_bytes(id),
            seq,
            issued_ms: T0,
            ttl_ms: 60_000,
            status,
            metadata: Bytes::new(),
            sig: Signature([0; 64]),
        }
    }

    fn events(out: &[OutEvent]) -> Vec<(PeerId, PresenceChange, Bytes)> {
        out.iter()
            .filter_map(|o| match o {
                OutEvent::Event(e) => {
                    assert_eq!(e.topic, topic());
                    Some((e.peer, e.change.clone(), e.metadata.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn records(out: &[OutEvent]) -> Vec<PresenceRecord> {
        out.iter()
            .filter_map(|o| match o {
                OutEvent::Broadcast(Broadcast::Presence(r)) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn gones(out: &[OutEvent]) -> Vec<GoneNotice> {
        out.iter()
            .filter_map(|o| match o {
                OutEvent::Broadcast(Broadcast::Gone(g)) => Some(g.clone()),
                _ => None,
            })
            .collect()
    }

    fn md(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn online_updated_left_sequence() {
        let mut a = table(1);
        let b = key(2);
        let bid = b.peer_id();
        let mut out = Vec::new();

        a.handle_record(online_rec(&b, 10, b"x"), at(0), &mut out);
        assert_eq!(events(&out), vec![(bid, PresenceChange::Online, md(b"x"))]);
        assert!(a.is_online(&bid));

        // A refresh with the same metadata is silent but renews last_seen.
        out.clear();
        a.handle_record(online_rec(&b, 11, b"x"), at(1_000), &mut out);
        assert!(out.is_empty());

        a.handle_record(online_rec(&b, 12, b"y"), at(2_000), &mut out);
        assert_eq!(events(&out), vec![(bid, PresenceChange::Updated, md(b"y"))]);
        assert_eq!(
            a.online(),
            vec![Entry {
                peer: bid,
                metadata: md(b"y"),
                since: at(0),
                last_seen: at(2_000),
            }]
        );

        out.clear();
        a.handle_record(leaving_rec(&b, 13), at(3_000), &mut out);
        // The Offline event carries the last known metadata, not the leave's.
        assert_eq!(
            events(&out),
            vec![(bid, PresenceChange::Offline(OfflineReason::Left), md(b"y"))]
        );
        assert!(!a.is_online(&bid));
        assert!(a.online().is_empty());
        assert!(out.iter().all(|o| matches!(o, OutEvent::Event(_))));
    }

    #[test]
    fn stale_records_are_ignored_and_leave_cannot_be_resurrected() {
        let mut a = table(1);
        let b = key(2);
        let mut out = Vec::new();
        a.handle_record(online_rec(&b, 10, b"x"), at(0), &mut out);
        out.clear();

        for seq in [9, 10] {
            let stale = online_rec(&b, seq, b"other");
            assert!(!a.is_newer(&stale));
            a.handle_record(stale, at(1), &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(a.online()[0].metadata, md(b"x"));

        a.handle_record(leaving_rec(&b, 11), at(2), &mut out);
        out.clear();
        // Older Online records (reordered, or from a lagging snapshot) do not resurrect.
        for seq in [10, 11] {
            a.handle_record(online_rec(&b, seq, b"x"), at(3), &mut out);
        }
        assert!(out.is_empty());
        assert!(!a.is_online(&b.peer_id()));

        // A Leaving record from an unknown author also blocks its older Online record.
        let c = key(3);
        a.handle_record(leaving_rec(&c, 5), at(4), &mut out);
        a.handle_record(online_rec(&c, 4, b"c"), at(5), &mut out);
        assert!(out.is_empty());
        assert!(!a.is_online(&c.peer_id()));

        // A genuinely newer record (the peer rejoined) is accepted.
        a.handle_record(online_rec(&b, 12, b"back"), at(6), &mut out);
        assert_eq!(
            events(&out),
            vec![(b.peer_id(), PresenceChange::Online, md(b"back"))]
        );
        assert_eq!(a.online()[0].since, at(6));
    }

    #[test]
    fn tombstones_are_dropped_after_ttl() {
        let mut a = table(1);
        let b = key(2);
        let mut out = Vec::new();
        a.handle_record(online_rec(&b, 10, b""), at(0), &mut out);
        a.handle_record(leaving_rec(&b, 11), at(1_000), &mut out);
        assert_eq!(a.len(), 1);
        assert_eq!(a.poll_timeout(), Some(at(61_000)));
        a.handle_timeout(at(60_999), &mut out);
        assert_eq!(a.len(), 1);
        a.handle_timeout(at(61_000), &mut out);
        assert!(a.is_empty());
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn expiry_counts_from_local_receive_time_and_caps_ttl() {
        let mut a = table(1);
        let (b, c) = (key(2), key(3));
        let mut out = Vec::new();
        // Dated ten years ahead: must still expire one ttl after it arrived.
        let future = PresenceRecord::new(
            &b,
            topic(),
            1,
            T0 + 10 * 365 * 86_400_000,
            60_000,
            PresenceStatus::Online,
            md(b"b"),
        );
        a.handle_record(future, at(5_000), &mut out);
        // ttl_ms = u32::MAX (49 days) is capped at 10 × our ttl = 600 s.
        let huge = PresenceRecord::new(
            &c,
            topic(),
            1,
            T0,
            u32::MAX,
            PresenceStatus::Online,
            md(b"c"),
        );
        a.handle_record(huge, at(5_000), &mut out);
        out.clear();

        assert_eq!(a.poll_timeout(), Some(at(65_000)));
        a.handle_timeout(at(64_999), &mut out);
        assert!(out.is_empty());
        a.handle_timeout(at(65_000), &mut out);
        assert_eq!(
            events(&out),
            vec![(
                b.peer_id(),
                PresenceChange::Offline(OfflineReason::Expired),
                md(b"b")
            )]
        );
        assert!(a.is_online(&c.peer_id()));

        out.clear();
        a.handle_timeout(at(604_999), &mut out);
        assert!(out.is_empty());
        assert_eq!(a.poll_timeout(), Some(at(605_000)));
        a.handle_timeout(at(605_000), &mut out);
        assert_eq!(
            events(&out),
            vec![(
                c.peer_id(),
                PresenceChange::Offline(OfflineReason::Expired),
                md(b"c")
            )]
        );
        assert!(a.online().is_empty());
    }

    #[test]
    fn a_refresh_postpones_expiry() {
        let mut a = table(1);
        let b = key(2);
        let mut out = Vec::new();
        a.handle_record(online_rec(&b, 1, b""), at(0), &mut out);
        a.handle_record(online_rec(&b, 2, b""), at(30_000), &mut out);
        assert_eq!(a.poll_timeout(), Some(at(90_000)));
        out.clear();
        a.handle_timeout(at(60_000), &mut out);
        assert!(out.is_empty());
        assert!(a.is_online(&b.peer_id()));
    }

    #[test]
    fn refresh_broadcasts_increasing_seqs() {
        let mut a = table(1);
        let mut out = Vec::new();
        assert_eq!(a.poll_timeout(), None);
        a.set_local(md(b"hi"), at(0), &mut out);
        let first = records(&out);
        assert_eq!(first.len(), 1);
        let r = &first[0];
        assert_eq!(r.seq, at(0).as_micros());
        assert_eq!(r.issued_ms, T0);
        assert_eq!(r.ttl_ms, 60_000);
        assert_eq!(r.status, PresenceStatus::Online);
        assert_eq!(r.author, key(1).peer_id());
        let b = Broadcast::Presence(r.clone());
        assert_eq!(b.verify(&b.id()), Ok(()));
        assert!(a.is_local_present());

        let mut seq = r.seq;
        let mut last = at(0);
        for _ in 1..=5u64 {
            let due = a.poll_timeout().expect("refresh scheduled");
            let wait = due.saturating_since(last);
            assert!(
                (Duration::from_secs(15)..=Duration::from_secs(20)).contains(&wait),
                "refresh after {wait:?}, not within ¾–1 of the 20 s interval"
            );
            last = due;
            out.clear();
            a.handle_timeout(due - Duration::from_millis(1), &mut out);
            assert!(out.is_empty(), "no refresh before it is due");
            a.handle_timeout(due, &mut out);
            let recs = records(&out);
            assert_eq!(recs.len(), 1);
            assert_eq!(recs[0].seq, seq + 1);
            assert_eq!(recs[0].metadata, md(b"hi"));
            assert_eq!(recs[0].issued_ms, due.as_millis());
            seq += 1;
        }

        // New metadata: a new record at once, and the refresh timer restarts.
        out.clear();
        a.set_local(md(b"busy"), at(105_000), &mut out);
        let recs = records(&out);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].seq, seq + 1);
        assert_eq!(recs[0].metadata, md(b"busy"));
        let due = a.poll_timeout().expect("refresh scheduled");
        assert!(due >= at(120_000) && due <= at(125_000), "{due:?}");
        assert_eq!(a.snapshot(), recs);
    }

    #[test]
    fn nodes_that_announce_together_do_not_refresh_together() {
        // Twenty nodes set presence at the same instant: their refreshes spread over the
        // last quarter of the interval instead of all falling due at once.
        let mut dues = Vec::new();
        for n in 1..=20 {
            let mut t = table(n);
            t.set_local(md(b"x"), at(0), &mut Vec::new());
            dues.push(t.poll_timeout().expect("refresh scheduled"));
        }
        dues.sort();
        dues.dedup();
        assert_eq!(dues.len(), 20, "every node refreshes at its own moment");
        assert!(dues[0] >= at(15_000) && dues[19] <= at(20_000), "{dues:?}");
        assert!(
            dues[19].saturating_since(dues[0]) >= Duration::from_secs(2),
            "spread over seconds, not milliseconds: {dues:?}"
        );
    }

    #[test]
    fn restart_with_same_key_outranks_previous_incarnation() {
        let mut old = table(1);
        let mut observer = table(2);
        let mut out = Vec::new();
        old.set_local(md(b"v1"), at(0), &mut out);
        // Ten hours of refreshes.
        let mut now = at(0);
        for _ in 0..1_800 {
            now = old.poll_timeout().expect("refreshing");
            old.handle_timeout(now, &mut out);
        }
        let last = records(&out).pop().expect("records");
        assert_eq!(last.seq, at(0).as_micros() + 1_800);
        observer.handle_record(last.clone(), now, &mut out);

        // Crash, restart one second later without any stored state.
        let mut new = table(1);
        out.clear();
        new.set_local(md(b"v2"), now + Duration::from_secs(1), &mut out);
        let fresh = records(&out).pop().expect("record");
        assert!(fresh.seq > last.seq);
        assert!(observer.is_newer(&fresh));
        observer.handle_record(fresh, now + Duration::from_secs(1), &mut out);
        assert_eq!(observer.online()[0].metadata, md(b"v2"));
    }

    #[test]
    fn peer_failed_goes_offline_and_broadcasts_gone() {
        let mut a = table(1);
        let b = key(2);
        let mut out = Vec::new();
        a.handle_record(online_rec(&b, 10, b"b"), at(0), &mut out);
        out.clear();

        a.peer_failed(&b.peer_id(), at(7_000), &mut out);
        assert_eq!(
            events(&out),
            vec![(
                b.peer_id(),
                PresenceChange::Offline(OfflineReason::Failed {
                    reporter: key(1).peer_id()
                }),
                md(b"b")
            )]
        );
        let g = gones(&out);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].reporter, key(1).peer_id());
        assert_eq!(g[0].subject, b.peer_id());
        assert_eq!(g[0].subject_seq, 10);
        assert_eq!(g[0].issued_ms, T0 + 7_000);
        assert_eq!(g[0].topic, topic());
        let gb = Broadcast::Gone(g[0].clone());
        assert_eq!(gb.verify(&gb.id()), Ok(()));
        assert!(!a.is_online(&b.peer_id()));

        // Already offline, unknown, or self: nothing.
        out.clear();
        a.peer_failed(&b.peer_id(), at(8_000), &mut out);
        a.peer_failed(&key(9).peer_id(), at(8_000), &mut out);
        a.peer_failed(&key(1).peer_id(), at(8_000), &mut out);
        assert!(out.is_empty());
        // The tombstone blocks the record the failure was about.
        a.handle_record(online_rec(&b, 10, b"b"), at(9_000), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn gone_applies_only_up_to_subject_seq() {
        let mut a = table(1);
        let (b, c) = (key(2), key(3));
        let mut out = Vec::new();
        a.handle_record(online_rec(&b, 10, b"b"), at(0), &mut out);
        out.clear();

        // The reporter knew an older record: a newer one supersedes its notice.
        a.handle_gone(
            GoneNotice::new(&c, topic(), b.peer_id(), 9, T0),
            at(1),
            &mut out,
        );
        assert!(out.is_empty());
        assert!(a.is_online(&b.peer_id()));

        // Another topic's notice does not apply here.
        let other = TopicId::from_name("other");
        a.handle_gone(
            GoneNotice::new(&c, other, b.peer_id(), 10, T0),
            at(1),
            &mut out,
        );
        assert!(out.is_empty());

        a.handle_gone(
            GoneNotice::new(&c, topic(), b.peer_id(), 10, T0),
            at(2),
            &mut out,
        );
        assert_eq!(
            events(&out),
            vec![(
                b.peer_id(),
                PresenceChange::Offline(OfflineReason::Failed {
                    reporter: c.peer_id()
                }),
                md(b"b")
            )]
        );
        assert!(gones(&out).is_empty(), "a received notice is not re-issued");

        // Unknown subject: ignored, nothing stored.
        out.clear();
        let len = a.len();
        a.handle_gone(
            GoneNotice::new(&c, topic(), key(7).peer_id(), 99, T0),
            at(3),
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(a.len(), len);
    }

    #[test]
    fn gone_about_self_is_refuted() {
        let (mut a, mut b, c) = (table(1), table(2), key(3));
        let aid = key(1).peer_id();
        let mut out = Vec::new();

        // Not present: nothing to refute.
        a.handle_gone(GoneNotice::new(&c, topic(), aid, 5, T0), at(0), &mut out);
        assert!(out.is_empty());

        a.set_local(md(b"a"), at(0), &mut out);
        let rec = records(&out).pop().expect("record");
        b.handle_record(rec.clone(), at(0), &mut out);
        assert!(b.is_online(&aid));

        let notice = GoneNotice::new(&c, topic(), aid, rec.seq, T0 + 1_000);
        out.clear();
        b.handle_gone(notice.clone(), at(1_000), &mut out);
        assert!(!b.is_online(&aid));

        out.clear();
        a.handle_gone(notice, at(1_000), &mut out);
        let refute = records(&out);
        assert_eq!(refute.len(), 1);
        assert_eq!(refute[0].seq, rec.seq + 1);
        assert_eq!(refute[0].status, PresenceStatus::Online);
        assert_eq!(refute[0].metadata, md(b"a"));
        // The refutation restarts the refresh timer.
        let delay = refresh_delay(Config::default().refresh_interval, &refute[0]);
        assert_eq!(a.poll_timeout(), Some(at(1_000) + delay));

        out.clear();
        b.handle_record(refute[0].clone(), at(1_100), &mut out);
        assert_eq!(events(&out), vec![(aid, PresenceChange::Online, md(b"a"))]);
        assert!(b.is_online(&aid));
        // A late copy of the notice no longer applies.
        out.clear();
        b.handle_gone(
            GoneNotice::new(&c, topic(), aid, rec.seq, T0 + 1_000),
            at(1_200),
            &mut out,
        );
        assert!(out.is_empty());
        assert!(b.is_online(&aid));
    }

    #[test]
    fn snapshot_reproduces_the_online_set() {
        let mut a = table(1);
        let mut out = Vec::new();
        a.set_local(md(b"me"), at(0), &mut out);
        for n in 2..=6u8 {
            a.handle_record(online_rec(&key(n), 1, b"peer"), at(0), &mut out);
        }
        a.handle_record(leaving_rec(&key(6), 2), at(1), &mut out);

        let snap = a.snapshot();
        assert_eq!(snap.len(), 5); // self + 2..=5
        assert_eq!(snap[0].author, key(1).peer_id());
        assert!(snap.iter().all(|r| r.status == PresenceStatus::Online));

        let mut fresh = table(9);
        out.clear();
        for r in snap {
            assert!(fresh.is_newer(&r));
            fresh.handle_record(r, at(2), &mut out);
        }
        assert_eq!(events(&out).len(), 5);
        let mut expected: Vec<PeerId> = a.online().iter().map(|e| e.peer).collect();
        expected.push(key(1).peer_id());
        expected.sort();
        let got: Vec<PeerId> = fresh.online().iter().map(|e| e.peer).collect();
        assert_eq!(got, expected);

        // Not present: only the others.
        a.clear_local(at(3), &mut out);
        assert_eq!(a.snapshot().len(), 4);
    }

    #[test]
    fn max_records_holds_under_20k_authors() {
        let mut a = table(1);
        let max = a.config.max_records;
        let mut out = Vec::new();
        for i in 0..20_000u32 {
            a.handle_record(fake_rec(i, 1, PresenceStatus::Online), at(0), &mut out);
        }
        assert_eq!(a.len(), max);
        assert_eq!(a.online().len(), max);
        assert_eq!(a.ignored_full(), 20_000 - max as u64);
        assert_eq!(events(&out).len(), max);
        // Known authors still update when the table is full.
        out.clear();
        a.handle_record(fake_rec(0, 2, PresenceStatus::Leaving), at(1), &mut out);
        a.handle_record(fake_rec(1, 2, PresenceStatus::Leaving), at(2), &mut out);
        assert_eq!(events(&out).len(), 2);
        assert_eq!(a.len(), max);

        // New authors evict tombstones first (the one due soonest), never online peers.
        out.clear();
        a.handle_record(fake_rec(30_000, 1, PresenceStatus::Online), at(3), &mut out);
        assert_eq!(events(&out).len(), 1);
        assert_eq!(a.len(), max);
        let evicted = fake_rec(0, 1, PresenceStatus::Online);
        assert!(a.is_newer(&evicted), "author 0's tombstone went first");
        assert!(!a.is_newer(&fake_rec(1, 2, PresenceStatus::Online)));
        a.handle_record(fake_rec(30_001, 1, PresenceStatus::Online), at(4), &mut out);
        a.handle_record(fake_rec(30_002, 1, PresenceStatus::Online), at(5), &mut out);
        assert_eq!(a.len(), max);
        assert!(!a.is_online(&fake_rec(30_002, 1, PresenceStatus::Online).author));
        // 9,998 survivors + 30,000 + 30,001 (each took a tombstone's slot).
        assert_eq!(a.online().len(), max);
        assert_eq!(a.ignored_full(), 20_000 - max as u64 + 1);

        // Everything expires, then every tombstone is dropped.
        out.clear();
        while let Some(t) = a.poll_timeout() {
            a.handle_timeout(t, &mut out);
        }
        assert!(a.is_empty());
        assert!(a.expiries.is_empty() && a.tombstones.is_empty());
        assert_eq!(events(&out).len(), max);
    }

    #[test]
    fn clear_local_when_absent_is_a_noop() {
        let mut a = table(1);
        let mut out = Vec::new();
        a.clear_local(at(0), &mut out);
        assert!(out.is_empty());
        assert!(!a.is_local_present());
        assert_eq!(a.poll_timeout(), None);

        a.set_local(md(b"m"), at(0), &mut out);
        let seq = records(&out)[0].seq;
        out.clear();
        a.clear_local(at(1_000), &mut out);
        let recs = records(&out);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].status, PresenceStatus::Leaving);
        assert_eq!(recs[0].seq, seq + 1);
        assert!(!a.is_local_present());
        assert_eq!(a.poll_timeout(), None);
        assert!(a.snapshot().is_empty());

        out.clear();
        a.clear_local(at(2_000), &mut out);
        a.handle_timeout(at(100_000), &mut out);
        assert!(out.is_empty());

        // Announcing again continues the sequence.
        a.set_local(md(b"m"), at(3_000), &mut out);
        assert_eq!(records(&out)[0].seq, seq + 2);
    }

    #[test]
    fn hostile_inputs_are_harmless() {
        let mut a = table(1);
        let mut out = Vec::new();
        // Own key: never newer, never stored, even with a huge seq.
        let own = online_rec(&key(1), u64::MAX, b"spoof");
        assert!(!a.is_newer(&own));
        a.handle_record(own, at(0), &mut out);
        // Another topic's record.
        let mut foreign = online_rec(&key(2), 1, b"x");
        foreign.topic = TopicId::from_name("elsewhere");
        assert!(!a.is_newer(&foreign));
        a.handle_record(foreign, at(0), &mut out);
        assert!(out.is_empty());
        assert!(a.is_empty());

        // seq u64::MAX, then more: no overflow, stays the newest.
        a.handle_record(online_rec(&key(2), u64::MAX, b"x"), at(0), &mut out);
        assert!(!a.is_newer(&online_rec(&key(2), u64::MAX, b"y")));
        // ttl 0: expires at the next timeout, and the driver loop terminates.
        a.handle_record(
            PresenceRecord::new(&key(3), topic(), 1, 0, 0, PresenceStatus::Online, md(b"")),
            at(0),
            &mut out,
        );
        out.clear();
        let mut steps = 0;
        while let Some(t) = a.poll_timeout() {
            a.handle_timeout(t.max(at(0)), &mut out);
            steps += 1;
            assert!(steps < 10);
        }
        assert_eq!(events(&out).len(), 2);

        // A zero refresh interval cannot make the driver spin on one instant.
        let cfg = Config {
            refresh_interval: Duration::ZERO,
            ..Config::default()
        };
        let mut z = State::new(topic(), key(4), cfg);
        z.set_local(md(b""), at(0), &mut out);
        assert!(z.poll_timeout().expect("scheduled") > at(0));
    }

    /// A perfect broadcast among `n` nodes: every output reaches every other live node.
    struct Net {
        nodes: Vec<State>,
        /// Crashed nodes neither send nor receive nor run timers.
        alive: Vec<bool>,
        /// Muted nodes run but their broadcasts are lost.
        muted: Vec<bool>,
        events: Vec<Vec<PresenceEvent>>,
        now: Time,
    }

    impl Net {
        fn new(n: u8) -> Self {
            Net {
                nodes: (1..=n).map(table).collect(),
                alive: vec![true; n as usize],
                muted: vec![false; n as usize],
                events: vec![Vec::new(); n as usize],
                now: at(0),
            }
        }

        fn id(&self, i: usize) -> PeerId {
            self.nodes[i].me
        }

        fn dispatch(&mut self, from: usize, out: Vec<OutEvent>) {
            let mut queue: VecDeque<(usize, OutEvent)> =
                out.into_iter().map(|o| (from, o)).collect();
            while let Some((src, o)) = queue.pop_front() {
                let b = match o {
                    OutEvent::Event(e) => {
                        self.events[src].push(e);
                        continue;
                    }
                    OutEvent::Broadcast(b) => b,
                };
                if self.muted[src] {
                    continue;
                }
                assert_eq!(b.verify(&b.id()), Ok(()));
                for dst in 0..self.nodes.len() {
                    if dst == src || !self.alive[dst] {
                        continue;
                    }
                    let mut out = Vec::new();
                    match b.clone() {
                        Broadcast::Presence(r) => {
                            self.nodes[dst].handle_record(r, self.now, &mut out)
                        }
                        Broadcast::Gone(g) => self.nodes[dst].handle_gone(g, self.now, &mut out),
                        Broadcast::Message(_) => {}
                    }
                    queue.extend(out.into_iter().map(|o| (dst, o)));
                }
            }
        }

        fn call(&mut self, i: usize, f: impl FnOnce(&mut State, Time, &mut Vec<OutEvent>)) {
            let mut out = Vec::new();
            f(&mut self.nodes[i], self.now, &mut out);
            self.dispatch(i, out);
        }

        fn run_until(&mut self, end: Time) {
            loop {
                let next = (0..self.nodes.len())
                    .filter(|&i| self.alive[i])
                    .filter_map(|i| self.nodes[i].poll_timeout().map(|t| (t, i)))
                    .min();
                match next {
                    Some((t, i)) if t <= end => {
                        self.now = self.now.max(t);
                        self.call(i, |s, now, out| s.handle_timeout(now, out));
                    }
                    _ => break,
                }
            }
            self.now = end;
        }

        fn offline_reasons(&self, i: usize, peer: PeerId) -> Vec<OfflineReason> {
            self.events[i]
                .iter()
                .filter(|e| e.peer == peer)
                .filter_map(|e| match e.change {
                    PresenceChange::Offline(r) => Some(r),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn six_nodes_see_join_leave_crash_and_silence() {
        let mut net = Net::new(6);
        for i in 0..6 {
            let t = net.now + Duration::from_millis(i as u64 * 100);
            net.run_until(t);
            net.call(i, |s, now, out| s.set_local(md(b"on"), now, out));
        }
        net.run_until(at(300_000));
        for i in 0..6 {
            let mut expected: Vec<PeerId> = (0..6).filter(|&j| j != i).map(|j| net.id(j)).collect();
            expected.sort();
            let got: Vec<PeerId> = net.nodes[i].online().iter().map(|e| e.peer).collect();
            assert_eq!(got, expected, "node {i}");
            // Refreshes kept everyone online: one Online event per peer, nothing else.
            assert_eq!(net.events[i].len(), 5);
        }

        // Node 5 crashes; node 0's failure detector notices.
        net.alive[5] = false;
        let dead = net.id(5);
        net.call(0, |s, now, out| s.peer_failed(&dead, now, out));
        let reporter = net.id(0);
        for i in 0..5 {
            assert_eq!(
                net.offline_reasons(i, dead),
                vec![OfflineReason::Failed { reporter }]
            );
        }

        // Node 4 leaves gracefully.
        net.call(4, |s, now, out| s.clear_local(now, out));
        let left = net.id(4);
        for i in 0..4 {
            assert_eq!(net.offline_reasons(i, left), vec![OfflineReason::Left]);
        }

        // Node 3 falls silent (its records are lost) with nobody detecting it: TTL expiry.
        net.muted[3] = true;
        let silent = net.id(3);
        net.run_until(at(400_000));
        for i in 0..3 {
            assert_eq!(net.offline_reasons(i, silent), vec![OfflineReason::Expired]);
            assert_eq!(net.nodes[i].online().len(), 2);
        }

        // Node 3 is heard again: its refreshes carry newer seqs, so it comes back.
        net.muted[3] = false;
        net.run_until(at(430_000));
        for i in 0..3 {
            assert!(net.nodes[i].is_online(&silent));
        }
    }

    #[test]
    fn false_suspicion_is_refuted_across_the_network() {
        let mut net = Net::new(4);
        for i in 0..4 {
            net.call(i, |s, now, out| s.set_local(md(b"on"), now, out));
        }
        // Node 1 wrongly declares node 2 dead: the notice reaches node 2, which refutes.
        let victim = net.id(2);
        net.call(1, |s, now, out| s.peer_failed(&victim, now, out));
        for i in [0, 1, 3] {
            assert!(net.nodes[i].is_online(&victim), "node {i}");
            let changes: Vec<_> = net.events[i]
                .iter()
                .filter(|e| e.peer == victim)
                .map(|e| e.change.clone())
                .collect();
            assert_eq!(changes.last(), Some(&PresenceChange::Online));
        }
    }
}
