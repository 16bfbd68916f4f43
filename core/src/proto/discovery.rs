//! Topic discovery: how a node that joined the network through any bootstrap peer finds
//! the members of a topic by itself, with no topic-specific bootstrap list.
//!
//! Every node tells its network-wide neighbours which topics it is a member of
//! (`Discovery::Topics`). A node looking for a topic first asks this directory; if it knows
//! nobody, it sends a few random walks (`FindTopic`) over the network-wide overlay. A member
//! on the walk answers the seeker directly (naming itself, members it knows, and broadcasts
//! it has had for a while); a non-member that knows a member (a neighbour's topic list, or
//! a remembered hint) hands the walk to that member; otherwise the walk goes on. A walk of
//! length L looks at about (L + 1) × (active view + 1) nodes' topic lists, so four walks of
//! length 20 see ≈ 500 nodes and find a topic held by 1% of the network with probability
//! ≈ 1 − 0.99^500 ≈ 99.3% per round (three walks of length 10 failed about one round in
//! five at 10,000 nodes in the simulator); a failed round is retried with backoff.
//!
//! Members keep walking at a low rate (`maintenance_interval`): an answer from a member
//! that has seen broadcasts this node has not reveals a separate part of the topic's
//! overlay (formed apart, or split by a partition), which the node then joins to merge.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::identity::PeerId;
use crate::wire::{PeerInfo, TopicId};

/// Discovery parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// Length of a `FindTopic` walk (20).
    pub walk_length: u16,
    /// Random hops a maintenance walk (sent by a node that already has topic neighbours)
    /// takes before it starts looking (6, about the overlay's diameter): members near the
    /// seeker are likely in its own part of the topic's overlay, so it looks far away. Sent
    /// as extra TTL: a node seeing `ttl > walk_length` only forwards.
    pub walk_skip: u16,
    /// Walks sent per attempt by a node with no topic neighbour (4).
    pub walk_fanout: usize,
    /// First retry delay when nobody was found (1 s), doubling up to `retry_max`.
    pub retry_min: Duration,
    /// Longest retry delay (30 s).
    pub retry_max: Duration,
    /// How often a member of a topic looks for other parts of its overlay (60 s).
    pub maintenance_interval: Duration,
    /// Members named in one answer (8).
    pub answer_peers: usize,
    /// Recent broadcast ids in one answer (8).
    pub answer_recent: usize,
    /// Only broadcasts a member has had for this long are named in an answer (2 s, several
    /// times a broadcast's spread), so one still in flight is not taken for a sign of a
    /// separate overlay.
    pub settled_after: Duration,
    /// Hints kept per topic (8) and topics with hints (4,096).
    pub hints_per_topic: usize,
    /// See `hints_per_topic`.
    pub max_hint_topics: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            walk_length: 20,
            walk_skip: 6,
            walk_fanout: 4,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            maintenance_interval: Duration::from_secs(60),
            answer_peers: 8,
            answer_recent: 8,
            settled_after: Duration::from_secs(2),
            hints_per_topic: 8,
            max_hint_topics: 4096,
        }
    }
}

/// Who is known to be on which topic.
#[derive(Debug, Default)]
pub struct Directory {
    neighbor_topics: BTreeMap<PeerId, BTreeSet<TopicId>>,
    hints: BTreeMap<TopicId, VecDeque<PeerInfo>>,
}

impl Directory {
    /// Records a network-wide neighbour's topic list (replacing any earlier one).
    pub fn set_neighbor_topics(&mut self, peer: PeerId, topics: Vec<TopicId>) {
        self.neighbor_topics
            .insert(peer, topics.into_iter().collect());
    }

    /// Forgets a neighbour that left the active view.
    pub fn remove_neighbor(&mut self, peer: &PeerId) {
        self.neighbor_topics.remove(peer);
    }

    /// Remembers members of `topic` learned from a discovery answer.
    pub fn add_hints(&mut self, topic: TopicId, peers: &[PeerInfo], me: &PeerId, config: &Config) {
        if !self.hints.contains_key(&topic) && self.hints.len() >= config.max_hint_topics {
            // Make room by forgetting an arbitrary (the smallest) topic's hints.
            if let Some(first) = self.hints.keys().next().copied() {
                self.hints.remove(&first);
            }
        }
        let list = self.hints.entry(topic).or_default();
        for p in peers.iter().filter(|p| p.id != *me) {
            list.retain(|q| q.id != p.id);
            list.push_front(p.clone());
            list.truncate(config.hints_per_topic);
        }
    }

    /// Forgets `peer` as a hint for every topic (it failed or refused).
    pub fn forget(&mut self, peer: &PeerId) {
        self.hints.retain(|_, list| {
            list.retain(|p| p.id != *peer);
            !list.is_empty()
        });
    }

    /// Neighbours that announced `topic`.
    pub fn neighbors_on(&self, topic: &TopicId) -> Vec<PeerId> {
        self.neighbor_topics
            .iter()
            .filter(|(_, t)| t.contains(topic))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Topics with remembered hints (at most `max_hint_topics`).
    pub fn hint_topics(&self) -> usize {
        self.hints.len()
    }

    /// Remembered members of `topic`, most recent first.
    pub fn hints(&self, topic: &TopicId) -> Vec<PeerInfo> {
        self.hints
            .get(topic)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    #[test]
    fn neighbours_and_hints_are_found_and_forgotten() {
        let config = Config::default();
        let t = TopicId::from_name("t");
        let mut d = Directory::default();
        d.set_neighbor_topics(peer(1), vec![t, TopicId::from_name("u")]);
        d.set_neighbor_topics(peer(2), vec![TopicId::from_name("u")]);
        assert_eq!(d.neighbors_on(&t), vec![peer(1)]);
        d.remove_neighbor(&peer(1));
        assert!(d.neighbors_on(&t).is_empty());

        let infos: Vec<_> = (3..20).map(|n| PeerInfo::bare(peer(n))).collect();
        d.add_hints(t, &infos, &peer(5), &config);
        let hints = d.hints(&t);
        assert_eq!(hints.len(), config.hints_per_topic);
        assert!(
            hints.iter().all(|p| p.id != peer(5)),
            "never a hint to self"
        );
        assert_eq!(hints[0].id, peer(19), "most recent first");
        d.forget(&peer(19));
        assert!(d.hints(&t).iter().all(|p| p.id != peer(19)));
    }

    #[test]
    fn hint_topics_are_bounded() {
        let config = Config {
            max_hint_topics: 4,
            ..Config::default()
        };
        let mut d = Directory::default();
        for n in 0..100u8 {
            let t = TopicId::from_name(&n.to_string());
            d.add_hints(t, &[PeerInfo::bare(peer(n))], &peer(255), &config);
        }
        assert_eq!(d.hints.len(), 4);
    }
}
