//! Starling through its Rust API (`starling_core::node::Node`), default protocol
//! parameters, one runtime worker per node, loopback only (bootstrap by address: there is
//! no discovery service or relay to turn off).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use starling_core::identity::{Keypair, PeerId};
use starling_core::node::{Item, Node, RecvError};
use starling_core::wire::TopicId;

use super::{pick_bootstrap, Cluster, Sink, System};

/// The starling adapter.
pub struct Starling;

struct Member {
    node: Node,
    alive: bool,
}

struct StarlingCluster {
    topic: TopicId,
    network: String,
    members: Vec<Member>,
    stop: Arc<AtomicBool>,
}

fn key(seed: u64, i: usize) -> Keypair {
    let mut s = [7u8; 32];
    s[..8].copy_from_slice(&seed.to_be_bytes());
    s[8..16].copy_from_slice(&(i as u64).to_be_bytes());
    Keypair::from_seed(s)
}

impl StarlingCluster {
    fn spawn(&mut self, sink: Sink, bootstrap: Vec<String>, seed: u64) -> Result<(), String> {
        let i = self.members.len();
        let mut b = Node::builder()
            .bind("127.0.0.1:0")
            .network_id(self.network.clone())
            .identity(key(seed, i))
            .worker_threads(1);
        for c in bootstrap {
            b = b.bootstrap(c);
        }
        let node = b.start().map_err(|e| format!("starling node {i}: {e}"))?;
        let sub = node
            .subscribe(self.topic)
            .map_err(|e| format!("subscribe: {e}"))?;
        let stop = Arc::clone(&self.stop);
        std::thread::Builder::new()
            .name(format!("bench-sub-{i}"))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match sub.recv_timeout(Duration::from_millis(100)) {
                        Ok(Item::Message(m)) => sink.deliver(&m.payload),
                        Ok(_) => {}
                        Err(RecvError::Closed) => return,
                        Err(_) => {}
                    }
                }
            })
            .map_err(|e| format!("thread: {e}"))?;
        self.members.push(Member { node, alive: true });
        Ok(())
    }

    fn live(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].alive)
            .collect()
    }
}

impl System for Starling {
    fn name(&self) -> &'static str {
        "starling"
    }

    fn start(&self, sinks: Vec<Sink>, seed: u64) -> Result<Box<dyn Cluster>, String> {
        let mut c = StarlingCluster {
            topic: TopicId::from_name("bench"),
            network: format!("peers-bench-{seed}"),
            members: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        for (i, sink) in sinks.into_iter().enumerate() {
            // One contact among the earlier nodes, the same spread as the node suite.
            let boot = if i == 0 {
                vec![]
            } else {
                vec![c.members[(i * 7) % i].node.contact()]
            };
            c.spawn(sink, boot, seed)?;
        }
        Ok(Box::new(c))
    }
}

impl Cluster for StarlingCluster {
    fn publish(&self, node: usize, payload: Bytes) -> Result<(), String> {
        let m = self.members.get(node).ok_or("no such node")?;
        m.node
            .publish(self.topic, payload)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn kill(&mut self, node: usize) {
        if let Some(m) = self.members.get_mut(node) {
            m.node.abort();
            m.alive = false;
        }
    }

    fn add_node(&mut self, sink: Sink, seed: u64) -> Result<usize, String> {
        let live = self.live();
        let boot = pick_bootstrap(&live, 1, seed ^ self.members.len() as u64)
            .into_iter()
            .map(|i| self.members[i].node.contact())
            .collect();
        self.spawn(sink, boot, seed)?;
        Ok(self.members.len() - 1)
    }

    fn online(&self, node: usize) -> Option<usize> {
        let m = self.members.get(node)?;
        m.node.online(self.topic).ok().map(|v| v.len())
    }

    fn announce(&self, node: usize) {
        if let Some(m) = self.members.get(node) {
            let _ = m.node.set_presence(self.topic, "bench");
        }
    }

    fn diag(&self) -> Vec<(String, u64)> {
        let (mut bytes, mut msgs) = (0, 0);
        let mut drops: std::collections::BTreeMap<String, u64> = Default::default();
        for m in self.members.iter().filter(|m| m.alive) {
            if let Ok(s) = m.node.stats() {
                bytes += s.bytes_out;
                msgs += s.msgs_out;
                for (k, v) in s.drops {
                    *drops.entry(format!("starling_drops_{k}")).or_default() += v;
                }
            }
        }
        // Plumtree links at the end (a gauge: each eager link pushes every message in full).
        let (mut eager, mut lazy) = (0, 0);
        for m in self.members.iter().filter(|m| m.alive) {
            if let Ok((e, l)) = m.node.topic_tree(self.topic) {
                eager += e.len() as u64;
                lazy += l.len() as u64;
            }
        }
        let mut out = vec![
            ("starling_frame_bytes_out".to_string(), bytes),
            ("starling_msgs_out".to_string(), msgs),
            ("gauge_starling_eager_links".to_string(), eager),
            ("gauge_starling_lazy_links".to_string(), lazy),
        ];
        out.extend(drops);
        out
    }

    fn describe(&self, node: usize) -> String {
        let Some(m) = self.members.get(node) else {
            return "no such node".into();
        };
        let index = |p: &PeerId| {
            self.members
                .iter()
                .position(|o| o.node.id() == *p)
                .map_or_else(|| p.short(), |i| i.to_string())
        };
        let list = |v: Vec<PeerId>| v.iter().map(index).collect::<Vec<_>>().join(",");
        let tree = match m.node.topic_tree(self.topic) {
            Ok((eager, lazy)) => format!("eager [{}] lazy [{}]", list(eager), list(lazy)),
            Err(e) => format!("tree: {e}"),
        };
        let stats = match m.node.stats() {
            Ok(s) => format!(
                "network neighbours {}, connections {}, delivered {}",
                s.neighbors, s.peers, s.delivered
            ),
            Err(e) => format!("stats: {e}"),
        };
        format!("alive {}; {tree}; {stats}", m.alive)
    }

    fn shutdown(self: Box<Self>) {
        self.stop.store(true, Ordering::Relaxed);
        for m in &self.members {
            m.node.abort();
        }
    }
}
