//! A loopback cluster of real nodes behind one [`FaultInjector`] (a simulated network with
//! loss, latency and partitions), for `core/tests/faults.rs` and the `faults` benchmark
//! (`bench/src/faults.rs`), which both include this file with `#[path]`.
//!
//! Every wait is bounded and returns what was missing as its error.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use starling_core::identity::{Keypair, PeerId};
use starling_core::net::fault::FaultInjector;
use starling_core::net::TransportOptions;
use starling_core::node::{Item, Node, RecvError, Subscription};
use starling_core::wire::{MessageId, TopicId};

/// One node of the cluster and what it received.
pub struct Member {
    /// The node.
    pub node: Node,
    sub: Subscription,
    /// Ids of the messages delivered to it.
    pub got: BTreeSet<MessageId>,
    /// Set when its subscription lagged (a failure: these workloads never overflow).
    pub lagged: u64,
}

/// A published message and who published it.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// Index of the author in the cluster.
    pub author: usize,
    /// The message id.
    pub id: MessageId,
}

/// A cluster of nodes on 127.0.0.1 sharing one simulated network.
pub struct Cluster {
    /// The simulated network.
    pub faults: FaultInjector,
    /// The nodes.
    pub members: Vec<Member>,
    /// The topic every node is subscribed to.
    pub topic: TopicId,
}

fn key(seed: u64, i: usize) -> Keypair {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_be_bytes());
    s[8..16].copy_from_slice(&(i as u64).to_be_bytes());
    Keypair::from_seed(s)
}

/// Calls `check` every 20 ms until it returns `Ok`; after `limit`, the last error (what
/// was still missing). Returns how long it took.
pub fn wait_for(
    limit: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) if start.elapsed() > limit => return Err(format!("after {limit:?}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Cluster {
    /// Starts `n` nodes on the simulated network `faults` (node i bootstraps from an
    /// earlier node), subscribes each to one topic and announces presence there.
    pub fn start(n: usize, seed: u64, faults: FaultInjector) -> Result<Cluster, String> {
        let topic = TopicId::from_name("faults");
        let mut members: Vec<Member> = Vec::with_capacity(n);
        for i in 0..n {
            let mut b = Node::builder()
                .bind("127.0.0.1:0")
                .network_id("faults")
                .identity(key(seed, i))
                .worker_threads(1)
                .transport(TransportOptions {
                    dial_timeout: Duration::from_secs(2),
                    faults: Some(faults.clone()),
                    ..TransportOptions::default()
                });
            if i > 0 {
                b = b.bootstrap(members[(i * 7 + 3) % i].node.contact());
            }
            let node = b
                .start()
                .map_err(|e| format!("node {i} failed to start: {e}"))?;
            let sub = node
                .subscribe(topic)
                .map_err(|e| format!("node {i} failed to subscribe: {e}"))?;
            node.set_presence(topic, format!("node {i}"))
                .map_err(|e| format!("node {i} failed to announce presence: {e}"))?;
            members.push(Member {
                node,
                sub,
                got: BTreeSet::new(),
                lagged: 0,
            });
        }
        Ok(Cluster {
            faults,
            members,
            topic,
        })
    }

    /// The bound addresses of members `range` (for a partition).
    pub fn addrs(&self, range: std::ops::Range<usize>) -> Vec<SocketAddr> {
        self.members[range]
            .iter()
            .map(|m| m.node.bound_addr())
            .collect()
    }

    /// Reads every subscription without waiting.
    pub fn pump(&mut self) -> Result<(), String> {
        for (i, m) in self.members.iter_mut().enumerate() {
            loop {
                match m.sub.try_recv() {
                    Ok(Item::Message(msg)) => {
                        m.got.insert(msg.id);
                    }
                    Ok(Item::Presence(_)) => {}
                    Ok(Item::Lagged(n)) => m.lagged += n,
                    Err(RecvError::Empty) => break,
                    Err(RecvError::Closed) => return Err(format!("node {i}: subscription closed")),
                }
            }
        }
        Ok(())
    }

    /// Waits until every member sees every other member online (presence converged).
    pub fn wait_presence(
        &mut self,
        members: &[usize],
        limit: Duration,
    ) -> Result<Duration, String> {
        let topic = self.topic;
        let ids: BTreeSet<PeerId> = members.iter().map(|&i| self.members[i].node.id()).collect();
        let missing = |c: &Cluster| -> Vec<(usize, usize)> {
            members
                .iter()
                .map(|&i| {
                    let n = &c.members[i].node;
                    let seen: BTreeSet<PeerId> = n
                        .online(topic)
                        .map(|v| v.into_iter().map(|e| e.peer).collect())
                        .unwrap_or_default();
                    let miss = ids
                        .iter()
                        .filter(|p| **p != n.id() && !seen.contains(p))
                        .count();
                    (i, miss)
                })
                .filter(|(_, miss)| *miss > 0)
                .collect()
        };
        wait_for(limit, || {
            self.pump()?;
            let m = missing(self);
            if m.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "presence incomplete at (node, peers missing): {m:?}"
                ))
            }
        })
    }

    /// Publishes one message from each of `authors`.
    pub fn publish(
        &mut self,
        authors: impl IntoIterator<Item = usize>,
        tag: &str,
    ) -> Result<Vec<Sent>, String> {
        let topic = self.topic;
        authors
            .into_iter()
            .map(|a| {
                self.members[a]
                    .node
                    .publish(topic, format!("{tag} from {a}"))
                    .map(|r| Sent {
                        author: a,
                        id: r.id,
                    })
                    .map_err(|e| format!("node {a} failed to publish: {e}"))
            })
            .collect()
    }

    /// How many (receiver, message) deliveries of `sent` to `receivers` are still missing.
    pub fn missing(&self, sent: &[Sent], receivers: &[usize]) -> usize {
        receivers
            .iter()
            .map(|&r| {
                sent.iter()
                    .filter(|s| s.author != r && !self.members[r].got.contains(&s.id))
                    .count()
            })
            .sum()
    }

    /// Deliveries of `sent` to `receivers` that ought to happen (authors excluded).
    pub fn expected(&self, sent: &[Sent], receivers: &[usize]) -> usize {
        receivers
            .iter()
            .map(|&r| sent.iter().filter(|s| s.author != r).count())
            .sum()
    }

    /// Waits until every one of `receivers` got every message of `sent` (but its own).
    pub fn wait_delivered(
        &mut self,
        sent: &[Sent],
        receivers: &[usize],
        limit: Duration,
    ) -> Result<Duration, String> {
        let expected = self.expected(sent, receivers);
        wait_for(limit, || {
            self.pump()?;
            match self.missing(sent, receivers) {
                0 => Ok(()),
                left => Err(format!("{left} of {expected} deliveries missing")),
            }
        })
    }

    /// Failure-detector verdicts over all members.
    pub fn declared_dead(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.node.stats().map(|s| s.declared_dead).unwrap_or(0))
            .sum()
    }

    /// Subscription lag over all members.
    pub fn lagged(&self) -> u64 {
        self.members.iter().map(|m| m.lagged).sum()
    }

    /// All member indices.
    pub fn all(&self) -> Vec<usize> {
        (0..self.members.len()).collect()
    }
}
