//! Fault injection for tests and benchmarks: a UDP socket wrapper that loses, delays and
//! partitions datagrams, in process and portable (no root, no `tc netem`).
//!
//! One [`FaultInjector`] stands for a simulated network: give the same (cloned) injector
//! to every endpoint of a cluster through [`TransportOptions::faults`]. It acts on each
//! datagram an endpoint *sends*:
//! - **loss**: dropped with probability `loss` (so every datagram crosses the network with
//!   that loss rate, whichever direction), decided by one seeded RNG;
//! - **latency**: held back for `latency` before it is handed to the real socket (one way;
//!   a round trip gains twice that);
//! - **partition**: while a cut is set, a datagram between an address on the cut's side
//!   and one off it is dropped; [`FaultInjector::heal`] removes the cut.
//!
//! Off by default: with `faults: None` (the default) the endpoint uses quinn's own socket
//! and none of this code runs. Settings can change while the cluster runs.
//!
//! The datagram order is kept (the delay line is a FIFO); when the latency is lowered
//! while datagrams are waiting, the later ones wait behind the earlier ones. Delayed
//! datagrams are buffered without a bound: meant for tests, not for production.
//!
//! [`TransportOptions::faults`]: super::TransportOptions::faults

use std::collections::HashSet;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use super::TransportError;

/// Loss rates are kept in parts per million.
const PPM: u32 = 1_000_000;

/// A simulated network's faults, shared by every endpoint given a clone of it. See the
/// module docs.
#[derive(Clone)]
pub struct FaultInjector {
    inner: Arc<Shared>,
}

struct Shared {
    loss_ppm: AtomicU32,
    latency_us: AtomicU64,
    /// One side of the partition, if any.
    cut: Mutex<Option<HashSet<SocketAddr>>>,
    rng: Mutex<ChaCha8Rng>,
    sent: AtomicU64,
    lost: AtomicU64,
    cut_off: AtomicU64,
    delayed: AtomicU64,
}

/// What a [`FaultInjector`] did so far, over all its endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Datagrams handed to a real socket.
    pub sent: u64,
    /// Datagrams dropped by the loss rate.
    pub lost: u64,
    /// Datagrams dropped because they crossed the partition.
    pub cut_off: u64,
    /// Datagrams that went through the delay line.
    pub delayed: u64,
}

impl fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjector")
            .field("loss", &self.loss())
            .field("latency", &self.latency())
            .field("partitioned", &self.is_partitioned())
            .finish()
    }
}

/// Two options are equal when they share the same injector (the same simulated network).
impl PartialEq for FaultInjector {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for FaultInjector {}

impl FaultInjector {
    /// A network without faults yet; `seed` seeds the loss decisions.
    pub fn new(seed: u64) -> Self {
        FaultInjector {
            inner: Arc::new(Shared {
                loss_ppm: AtomicU32::new(0),
                latency_us: AtomicU64::new(0),
                cut: Mutex::new(None),
                rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
                sent: AtomicU64::new(0),
                lost: AtomicU64::new(0),
                cut_off: AtomicU64::new(0),
                delayed: AtomicU64::new(0),
            }),
        }
    }

    /// Sets the probability that a datagram is lost, from 0.0 to 1.0.
    pub fn set_loss(&self, rate: f64) -> Result<(), TransportError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(TransportError::Config(format!(
                "loss rate {rate} is not between 0 and 1"
            )));
        }
        let ppm = (rate * f64::from(PPM)).round() as u32;
        self.inner.loss_ppm.store(ppm, Ordering::Relaxed);
        Ok(())
    }

    /// The loss rate.
    pub fn loss(&self) -> f64 {
        f64::from(self.inner.loss_ppm.load(Ordering::Relaxed)) / f64::from(PPM)
    }

    /// Sets the one-way latency added to every datagram (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.inner.latency_us.store(us, Ordering::Relaxed);
    }

    /// The added one-way latency.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.inner.latency_us.load(Ordering::Relaxed))
    }

    /// Cuts the network in two: `side` (endpoint addresses, as bound) and everyone else.
    /// Replaces any earlier cut.
    pub fn partition(&self, side: impl IntoIterator<Item = SocketAddr>) {
        let side = side.into_iter().collect();
        *self.cut() = Some(side);
    }

    /// Removes the partition.
    pub fn heal(&self) {
        *self.cut() = None;
    }

    /// Whether a partition is in force.
    pub fn is_partitioned(&self) -> bool {
        self.cut().is_some()
    }

    /// Counters over all endpoints.
    pub fn stats(&self) -> FaultStats {
        let s = &self.inner;
        FaultStats {
            sent: s.sent.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            cut_off: s.cut_off.load(Ordering::Relaxed),
            delayed: s.delayed.load(Ordering::Relaxed),
        }
    }

    fn cut(&self) -> std::sync::MutexGuard<'_, Option<HashSet<SocketAddr>>> {
        // A panic elsewhere while holding it leaves a valid set: keep using it.
        self.inner.cut.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a datagram from `from` to `to` gets through (counted).
    fn passes(&self, from: SocketAddr, to: SocketAddr) -> bool {
        let s = &self.inner;
        if let Some(side) = &*self.cut() {
            if side.contains(&from) != side.contains(&to) {
                s.cut_off.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        let ppm = s.loss_ppm.load(Ordering::Relaxed);
        if ppm > 0 {
            let roll = s
                .rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .gen_range(0..PPM);
            if roll < ppm {
                s.lost.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        true
    }
}

/// Builds a server endpoint on a fault-injecting socket bound at `addr` (what
/// `quinn::Endpoint::server` does, with the wrapper in between).
pub(crate) fn server_endpoint(
    server: quinn::ServerConfig,
    addr: SocketAddr,
    faults: &FaultInjector,
) -> io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let runtime: Arc<dyn Runtime> = Arc::new(quinn::TokioRuntime);
    let inner = runtime.wrap_udp_socket(socket)?;
    let local = inner.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(delay_line(Arc::clone(&inner), rx));
    let socket = Arc::new(FaultySocket {
        inner,
        local,
        faults: faults.clone(),
        delay: tx,
    });
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        runtime,
    )
}

/// A datagram waiting in the delay line.
struct Delayed {
    due: tokio::time::Instant,
    to: SocketAddr,
    ecn: Option<EcnCodepoint>,
    contents: Vec<u8>,
}

/// Sends delayed datagrams when due, in order; ends when the socket is dropped.
async fn delay_line(socket: Arc<dyn AsyncUdpSocket>, mut rx: mpsc::UnboundedReceiver<Delayed>) {
    let mut poller = Arc::clone(&socket).create_io_poller();
    while let Some(d) = rx.recv().await {
        tokio::time::sleep_until(d.due).await;
        let t = Transmit {
            destination: d.to,
            ecn: d.ecn,
            contents: &d.contents,
            segment_size: None,
            src_ip: None,
        };
        loop {
            match socket.try_send(&t) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                // Sent, or a send error: UDP gives no guarantee, quinn retransmits.
                _ => break,
            }
        }
    }
}

struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    local: SocketAddr,
    faults: FaultInjector,
    delay: mpsc::UnboundedSender<Delayed>,
}

impl fmt::Debug for FaultySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultySocket")
            .field("local", &self.local)
            .field("faults", &self.faults)
            .finish()
    }
}

impl AsyncUdpSocket for FaultySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Arc::clone(&self.inner).create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let latency = self.faults.latency();
        // One datagram per transmit (max_transmit_segments is 1), but split a batch anyway
        // so each datagram meets its own fate.
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for datagram in transmit.contents.chunks(size) {
            if !self.faults.passes(self.local, transmit.destination) {
                continue;
            }
            let stats = &self.faults.inner;
            if latency.is_zero() {
                let t = Transmit {
                    destination: transmit.destination,
                    ecn: transmit.ecn,
                    contents: datagram,
                    segment_size: None,
                    src_ip: transmit.src_ip,
                };
                // WouldBlock goes back to quinn, which waits and retries the whole
                // transmit (a single datagram here).
                self.inner.try_send(&t)?;
            } else {
                let d = Delayed {
                    due: tokio::time::Instant::now() + latency,
                    to: transmit.destination,
                    ecn: transmit.ecn,
                    contents: datagram.to_vec(),
                };
                // The line ends only with the runtime: then nothing is sent anyway.
                if self.delay.send(d).is_err() {
                    return Err(io::Error::other("fault injection delay line stopped"));
                }
                stats.delayed.fetch_add(1, Ordering::Relaxed);
            }
            stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn loss_rate_is_validated_and_applied() {
        let f = FaultInjector::new(1);
        for bad in [-0.1, 1.5, f64::NAN] {
            assert!(f.set_loss(bad).is_err(), "{bad} accepted");
        }
        f.set_loss(0.2).unwrap();
        let passed = (0..10_000).filter(|_| f.passes(addr(1), addr(2))).count();
        // 8,000 expected; ±4 standard deviations (40 each).
        assert!(
            (7_840..=8_160).contains(&passed),
            "{passed} of 10,000 passed"
        );
        assert_eq!(f.stats().lost, 10_000 - passed as u64);
    }

    #[test]
    fn partition_drops_only_what_crosses_it_until_healed() {
        let f = FaultInjector::new(1);
        f.partition([addr(1), addr(2)]);
        assert!(f.is_partitioned());
        assert!(f.passes(addr(1), addr(2)));
        assert!(f.passes(addr(3), addr(4)));
        assert!(!f.passes(addr(1), addr(3)));
        assert!(!f.passes(addr(4), addr(2)));
        assert_eq!(f.stats().cut_off, 2);
        f.heal();
        assert!(f.passes(addr(1), addr(3)));
    }

    #[test]
    fn clones_share_one_network() {
        let f = FaultInjector::new(1);
        let g = f.clone();
        g.set_latency(Duration::from_millis(200));
        assert_eq!(f.latency(), Duration::from_millis(200));
        assert_eq!(f, g);
        assert_ne!(f, FaultInjector::new(1));
    }
}
