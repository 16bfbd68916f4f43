//! One adapter per gossip system behind a common interface, so every workload runs the
//! same code against starling, iroh-gossip and rust-libp2p gossipsub.
//!
//! Every node of every system gets its own tokio runtime with one worker thread (that is
//! how a starling `Node` runs with `worker_threads(1)`), binds 127.0.0.1 port 0, and
//! delivers into a [`Sink`] that timestamps the delivery with the harness clock.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

pub mod iroh_gossip;
pub mod libp2p_gossipsub;
pub mod starling;

/// Length of the header every benchmark payload starts with: publish time (µs since the
/// harness base, big endian) and a unique message number (so content-addressed systems
/// never deduplicate two distinct publishes).
pub const HEADER: usize = 16;

/// One delivery seen by one node.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    /// The message number from the payload header.
    pub msg: u64,
    /// Publish time, µs since the harness base.
    pub sent_us: u64,
    /// Delivery time, µs since the harness base.
    pub at_us: u64,
}

/// Where one node's adapter reports deliveries (cheap to clone, shared with the harness).
#[derive(Clone)]
pub struct Sink {
    base: Instant,
    log: Arc<Mutex<Vec<Delivery>>>,
}

impl Sink {
    /// A sink whose timestamps count from `base`.
    pub fn new(base: Instant) -> Self {
        Self {
            base,
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Records a delivered payload; payloads without a header (not ours) are ignored.
    pub fn deliver(&self, payload: &[u8]) {
        let at_us = self.base.elapsed().as_micros() as u64;
        let (Some(sent), Some(msg)) = (payload.get(..8), payload.get(8..16)) else {
            return;
        };
        let (Ok(sent), Ok(msg)) = (<[u8; 8]>::try_from(sent), <[u8; 8]>::try_from(msg)) else {
            return;
        };
        let d = Delivery {
            msg: u64::from_be_bytes(msg),
            sent_us: u64::from_be_bytes(sent),
            at_us,
        };
        if let Ok(mut g) = self.log.lock() {
            g.push(d);
        }
    }

    /// A copy of every delivery so far.
    pub fn snapshot(&self) -> Vec<Delivery> {
        self.log.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Number of deliveries so far.
    pub fn count(&self) -> usize {
        self.log.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// Forgets every delivery (between phases, to keep memory flat).
    pub fn clear(&self) {
        if let Ok(mut g) = self.log.lock() {
            g.clear();
        }
    }
}

/// A benchmark payload: header (publish time now, `msg`) then zeros up to `len`.
pub fn payload(base: Instant, msg: u64, len: usize) -> Bytes {
    let mut p = vec![0u8; len.max(HEADER)];
    p[..8].copy_from_slice(&(base.elapsed().as_micros() as u64).to_be_bytes());
    p[8..16].copy_from_slice(&msg.to_be_bytes());
    Bytes::from(p)
}

/// A gossip system under test.
pub trait System: Sync {
    /// The name in tables and JSON (`starling`, `iroh-gossip`, `libp2p-gossipsub`).
    fn name(&self) -> &'static str;
    /// Starts `sinks.len()` nodes on loopback, all subscribed to one topic, each joining
    /// the overlay through earlier nodes. Returns once every node is started (the harness
    /// then waits for the overlay to carry messages).
    fn start(&self, sinks: Vec<Sink>, seed: u64) -> Result<Box<dyn Cluster>, String>;
}

/// A running set of nodes of one system.
pub trait Cluster: Send + Sync {
    /// Publishes on the topic from node `node`; blocks while that node's queue is full.
    fn publish(&self, node: usize, payload: Bytes) -> Result<(), String>;
    /// Stops node `node` abruptly, as if its process crashed (no goodbyes).
    fn kill(&mut self, node: usize);
    /// Starts one more node that joins through existing live nodes; returns its index.
    fn add_node(&mut self, sink: Sink, seed: u64) -> Result<usize, String>;
    /// Members node `node` sees online on the topic (starling presence), if the system
    /// has such a view.
    fn online(&self, _node: usize) -> Option<usize> {
        None
    }
    /// Asks node `node` to announce itself online (starling presence); no-op elsewhere.
    fn announce(&self, _node: usize) {}
    /// Publishes the system accepted from the harness but refused itself (e.g.
    /// gossipsub's `InsufficientPeers`), where it reports them asynchronously.
    fn publish_failures(&self) -> u64 {
        0
    }
    /// System-specific counters summed over the live nodes (for the notes: starling's
    /// frame bytes, iroh-gossip's lagged subscribers, …). Deltas land in the rows; keys
    /// starting with `gauge_` are levels, reported as their final value.
    fn diag(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// What node `node` holds, in one line, for a report when the overlay did not form
    /// (which nodes a node is linked to).
    fn describe(&self, _node: usize) -> String {
        "no detail from this system".to_owned()
    }
    /// Stops everything.
    fn shutdown(self: Box<Self>);
}

/// Hands `payload` to a node task through its bounded queue, waiting while the queue is
/// full but never longer than 5 s (a node that stops draining is an error, not a hang).
pub fn send_bounded(tx: &tokio::sync::mpsc::Sender<Bytes>, payload: Bytes) -> Result<(), String> {
    use tokio::sync::mpsc::error::TrySendError;
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let mut p = payload;
    loop {
        match tx.try_send(p) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err("node stopped".into()),
            Err(TrySendError::Full(back)) => {
                if Instant::now() > deadline {
                    return Err("node did not take a publish for 5 s (queue full)".into());
                }
                p = back;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }
}

/// A tokio runtime with one worker, like a starling node's with `worker_threads(1)`.
pub fn node_runtime(name: &str) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

/// Deterministic choice of `k` distinct earlier nodes among `alive` for node `i` to
/// bootstrap from (a small LCG seeded per run: no global RNG state).
pub fn pick_bootstrap(alive: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::new();
    let mut pool: Vec<usize> = alive.to_vec();
    while out.len() < k && !pool.is_empty() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = ((s >> 33) as usize) % pool.len();
        out.push(pool.swap_remove(j));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_reads_the_header_and_ignores_foreign_payloads() {
        let base = Instant::now();
        let sink = Sink::new(base);
        sink.deliver(&payload(base, 42, 256));
        sink.deliver(b"short");
        let got = sink.snapshot();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].msg, 42);
        assert!(got[0].at_us >= got[0].sent_us);
    }

    #[test]
    fn bootstrap_choices_are_distinct_seeded_and_bounded() {
        let alive: Vec<usize> = (0..10).collect();
        let a = pick_bootstrap(&alive, 6, 1);
        let mut d = a.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 6);
        assert_eq!(a, pick_bootstrap(&alive, 6, 1));
        assert_eq!(pick_bootstrap(&alive[..2], 6, 1).len(), 2);
        assert!(pick_bootstrap(&[], 6, 1).is_empty());
    }
}
