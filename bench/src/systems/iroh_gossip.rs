//! iroh-gossip (HyParView + Plumtree over iroh's QUIC) on loopback: relays disabled, no
//! DNS/pkarr address lookup, no port mapping (iroh built without default features), and
//! one in-memory address book shared by the nodes of a run (iroh dials endpoint ids, so
//! it needs ids → addresses: this is the loopback equivalent of starling's
//! `peerid@host:port` bootstrap strings). Gossip parameters are the crate defaults
//! except `max_message_size` = 64 KiB (default 4 KiB; starling's default limit is 64 KiB).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use iroh::address_lookup::memory::MemoryLookup;
use iroh::endpoint::presets;
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, SecretKey, TransportAddr};
use iroh_gossip::api::Event;
use iroh_gossip::net::Gossip;
use iroh_gossip::proto::TopicId;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use super::{node_runtime, pick_bootstrap, send_bounded, Cluster, Sink, System};

/// The iroh-gossip adapter.
pub struct IrohGossip;

/// Most bytes per gossip message (the crate default is 4096).
pub const MAX_MESSAGE: usize = 64 * 1024;

struct Member {
    id: EndpointId,
    rt: Option<Runtime>,
    tx: mpsc::Sender<Bytes>,
}

struct IrohCluster {
    book: MemoryLookup,
    /// Subscriptions that lagged (iroh-gossip then drops events and closes them).
    lagged: Arc<AtomicU64>,
    members: Vec<Member>,
}

const TOPIC: [u8; 32] = [0xb1; 32];

impl IrohCluster {
    fn spawn(&mut self, sink: Sink, bootstrap: Vec<EndpointId>, seed: u64) -> Result<(), String> {
        let i = self.members.len();
        let rt = node_runtime(&format!("iroh-node-{i}"))?;
        let mut sk = [3u8; 32];
        sk[..8].copy_from_slice(&seed.to_be_bytes());
        sk[8..16].copy_from_slice(&(i as u64).to_be_bytes());
        let book = self.book.clone();
        let lagged = Arc::clone(&self.lagged);
        let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
        let id = rt.block_on(async move {
            let ep = Endpoint::builder(presets::Minimal)
                .relay_mode(RelayMode::Disabled)
                .clear_address_lookup()
                .address_lookup(book.clone())
                .secret_key(SecretKey::from_bytes(&sk))
                .bind_addr("127.0.0.1:0")
                .map_err(|e| format!("iroh bind addr: {e}"))?
                .bind()
                .await
                .map_err(|e| format!("iroh bind: {e}"))?;
            book.add_endpoint_info(EndpointAddr::from_parts(
                ep.id(),
                ep.bound_sockets().into_iter().map(TransportAddr::Ip),
            ));
            let gossip = Gossip::builder()
                .max_message_size(MAX_MESSAGE)
                .spawn(ep.clone());
            let router = Router::builder(ep.clone())
                .accept(iroh_gossip::ALPN, gossip.clone())
                .spawn();
            let topic = gossip
                .subscribe(TopicId::from_bytes(TOPIC), bootstrap)
                .await
                .map_err(|e| format!("iroh subscribe: {e}"))?;
            let (sender, mut receiver) = topic.split();
            tokio::spawn(async move {
                while let Some(ev) = receiver.next().await {
                    match ev {
                        Ok(Event::Received(m)) => sink.deliver(&m.content),
                        // The subscription is closed after this: later deliveries are lost.
                        Ok(Event::Lagged) => {
                            lagged.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            let id = ep.id();
            tokio::spawn(async move {
                // Owns the router and gossip handles: they live as long as the runtime.
                let _keep = (router, gossip);
                while let Some(p) = rx.recv().await {
                    if sender.broadcast(p).await.is_err() {
                        break;
                    }
                }
            });
            Ok::<_, String>(id)
        })?;
        self.members.push(Member {
            id,
            rt: Some(rt),
            tx,
        });
        Ok(())
    }

    fn live(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].rt.is_some())
            .collect()
    }
}

impl System for IrohGossip {
    fn name(&self) -> &'static str {
        "iroh-gossip"
    }

    fn start(&self, sinks: Vec<Sink>, seed: u64) -> Result<Box<dyn Cluster>, String> {
        let mut c = IrohCluster {
            book: MemoryLookup::new(),
            lagged: Arc::new(AtomicU64::new(0)),
            members: Vec::new(),
        };
        for (i, sink) in sinks.into_iter().enumerate() {
            // One contact among the earlier nodes, as for starling.
            let boot = if i == 0 {
                vec![]
            } else {
                vec![c.members[(i * 7) % i].id]
            };
            c.spawn(sink, boot, seed)?;
        }
        Ok(Box::new(c))
    }
}

impl Cluster for IrohCluster {
    fn publish(&self, node: usize, payload: Bytes) -> Result<(), String> {
        let m = self.members.get(node).ok_or("no such node")?;
        send_bounded(&m.tx, payload).map_err(|e| format!("iroh node {node}: {e}"))
    }

    fn kill(&mut self, node: usize) {
        if let Some(rt) = self.members.get_mut(node).and_then(|m| m.rt.take()) {
            rt.shutdown_background();
        }
    }

    fn add_node(&mut self, sink: Sink, seed: u64) -> Result<usize, String> {
        let live = self.live();
        let boot = pick_bootstrap(&live, 1, seed ^ self.members.len() as u64)
            .into_iter()
            .map(|i| self.members[i].id)
            .collect();
        self.spawn(sink, boot, seed)?;
        Ok(self.members.len() - 1)
    }

    fn diag(&self) -> Vec<(String, u64)> {
        vec![(
            "iroh_lagged_subscriptions".to_string(),
            self.lagged.load(Ordering::Relaxed),
        )]
    }

    fn shutdown(mut self: Box<Self>) {
        for m in &mut self.members {
            if let Some(rt) = m.rt.take() {
                rt.shutdown_background();
            }
        }
    }
}
