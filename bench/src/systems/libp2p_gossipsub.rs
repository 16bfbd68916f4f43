//! rust-libp2p gossipsub (v1.2 mesh + IHAVE/IWANT gossip) over libp2p's QUIC transport
//! (`/ip4/127.0.0.1/udp/0/quic-v1`), no discovery behaviour (no mDNS, Kademlia, identify
//! or relay). Messages signed by their author and verified by every receiver
//! (`MessageAuthenticity::Signed`, `ValidationMode::Strict`, as starling signs every
//! message). Gossipsub has no membership protocol of its own, so each node dials
//! `DIALS` = 6 (= the default mesh degree D) seeded-random earlier nodes; every other
//! parameter is the crate default (heartbeat 1 s, D = 6, D_lo = 5, D_hi = 12, flood
//! publish on, max transmit size 64 KiB), idle connections kept for the whole run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{Config as SwarmConfig, Swarm, SwarmEvent};
use libp2p::{gossipsub, identity, quic, Multiaddr, PeerId, Transport};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use super::{node_runtime, pick_bootstrap, send_bounded, Cluster, Sink, System};

/// The libp2p gossipsub adapter.
pub struct Libp2pGossipsub;

/// Earlier nodes each new node dials (gossipsub only meshes over open connections).
pub const DIALS: usize = 6;

struct Member {
    addr: Multiaddr,
    rt: Option<Runtime>,
    tx: mpsc::Sender<Bytes>,
}

struct Libp2pCluster {
    members: Vec<Member>,
    publish_failures: Arc<AtomicU64>,
}

impl Libp2pCluster {
    fn spawn(&mut self, sink: Sink, bootstrap: Vec<Multiaddr>, seed: u64) -> Result<(), String> {
        let i = self.members.len();
        let rt = node_runtime(&format!("libp2p-node-{i}"))?;
        let mut sk = [5u8; 32];
        sk[..8].copy_from_slice(&seed.to_be_bytes());
        sk[8..16].copy_from_slice(&(i as u64).to_be_bytes());
        let kp = identity::Keypair::ed25519_from_bytes(sk).map_err(|e| format!("key: {e}"))?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
        let failures = Arc::clone(&self.publish_failures);
        let addr = rt.block_on(async move {
            let peer_id = PeerId::from(kp.public());
            let transport = quic::tokio::Transport::new(quic::Config::new(&kp))
                .map(|(p, c), _| (p, StreamMuxerBox::new(c)))
                .boxed();
            let cfg = gossipsub::ConfigBuilder::default()
                .max_transmit_size(64 * 1024)
                .validation_mode(gossipsub::ValidationMode::Strict)
                .build()
                .map_err(|e| format!("gossipsub config: {e}"))?;
            let mut gs: gossipsub::Behaviour = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(kp), cfg)
                .map_err(|e| format!("gossipsub: {e}"))?;
            let topic = gossipsub::IdentTopic::new("bench");
            gs.subscribe(&topic)
                .map_err(|e| format!("gossipsub subscribe: {e}"))?;
            let mut swarm = Swarm::new(
                transport,
                gs,
                peer_id,
                SwarmConfig::with_tokio_executor()
                    .with_idle_connection_timeout(Duration::from_secs(3600)),
            );
            let listen: Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1"
                .parse()
                .map_err(|e| format!("multiaddr: {e}"))?;
            swarm
                .listen_on(listen)
                .map_err(|e| format!("libp2p listen: {e}"))?;
            let addr = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if let SwarmEvent::NewListenAddr { address, .. } =
                        swarm.select_next_some().await
                    {
                        return address;
                    }
                }
            })
            .await
            .map_err(|_| "libp2p: no listen address within 10 s".to_string())?;
            for b in bootstrap {
                swarm.dial(b).map_err(|e| format!("libp2p dial: {e}"))?;
            }
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        cmd = rx.recv() => match cmd {
                            Some(p) => {
                                if swarm.behaviour_mut().publish(topic.clone(), p.to_vec()).is_err() {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            None => break,
                        },
                        ev = swarm.select_next_some() => {
                            if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) = ev {
                                sink.deliver(&message.data);
                            }
                        }
                    }
                }
            });
            Ok::<_, String>(addr.with(Protocol::P2p(peer_id)))
        })?;
        self.members.push(Member {
            addr,
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

impl System for Libp2pGossipsub {
    fn name(&self) -> &'static str {
        "libp2p-gossipsub"
    }

    fn start(&self, sinks: Vec<Sink>, seed: u64) -> Result<Box<dyn Cluster>, String> {
        let mut c = Libp2pCluster {
            members: Vec::new(),
            publish_failures: Arc::new(AtomicU64::new(0)),
        };
        for sink in sinks {
            let live = c.live();
            let boot = pick_bootstrap(&live, DIALS, seed ^ c.members.len() as u64)
                .into_iter()
                .map(|j| c.members[j].addr.clone())
                .collect();
            c.spawn(sink, boot, seed)?;
        }
        Ok(Box::new(c))
    }
}

impl Cluster for Libp2pCluster {
    fn publish(&self, node: usize, payload: Bytes) -> Result<(), String> {
        let m = self.members.get(node).ok_or("no such node")?;
        send_bounded(&m.tx, payload).map_err(|e| format!("libp2p node {node}: {e}"))
    }

    fn kill(&mut self, node: usize) {
        if let Some(rt) = self.members.get_mut(node).and_then(|m| m.rt.take()) {
            rt.shutdown_background();
        }
    }

    fn add_node(&mut self, sink: Sink, seed: u64) -> Result<usize, String> {
        let live = self.live();
        let boot = pick_bootstrap(&live, DIALS, seed ^ self.members.len() as u64)
            .into_iter()
            .map(|j| self.members[j].addr.clone())
            .collect();
        self.spawn(sink, boot, seed)?;
        Ok(self.members.len() - 1)
    }

    fn publish_failures(&self) -> u64 {
        self.publish_failures.load(Ordering::Relaxed)
    }

    fn shutdown(mut self: Box<Self>) {
        for m in &mut self.members {
            if let Some(rt) = m.rt.take() {
                rt.shutdown_background();
            }
        }
    }
}
