//! The uniffi exports: the API the generated Swift, Kotlin and Python bindings call.
//!
//! A thin adapter over [`starling_core::node::Node`]: topics are names (hashed with
//! [`TopicId::from_name`]), ids are lowercase hex, and every failure is one
//! [`StarlingError`] carrying a stable [`ErrorKind`] and the core's message.
//!
//! Two ways to receive:
//! - pull: [`Node::subscribe`] gives a [`Subscription`] read with `next` / `next_batch`
//!   (blocking, with a timeout) or the async `recv`;
//! - push: listener registrations (`add_message_listener`, `add_presence_listener`,
//!   `add_lag_listener`, [`set_log_listener`]) return a [`ListenerHandle`]; the listeners
//!   run on a delivery thread of this library (one per topic), never on the node's network
//!   workers, so a slow host callback delays only its own topic (its queue overflows and
//!   the lag listeners hear about it) and never the protocol.

mod admission;
mod listeners;
mod types;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use starling_core::node::{self as core, Item, RecvError};
use starling_core::wire::TopicId;

pub use admission::{issue_credential, public_key, AdmissionPolicy};
pub use listeners::{
    set_log_listener, LagListener, ListenerHandle, LogListener, MessageListener, PresenceListener,
};
pub use types::{
    Config, ErrorKind, LogLevel, LogRecord, Message, OfflineReason, PresenceChange, PresenceEntry,
    PresenceEvent, Receipt, StarlingError, Stats, SubscriptionItem,
};

use listeners::{Hub, Hubs};

/// Longest wait a blocking read accepts (longer timeouts are cut to this): one day.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The version of libstarling (the crate version), e.g. `"0.1.0"`. The bindings compare it
/// with their own version to detect a stale library.
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The topic id (64 hex digits) of a topic name, as every binding and the C ABI compute it.
#[uniffi::export]
pub fn topic_id(name: String) -> Result<String, StarlingError> {
    Ok(topic(&name)?.to_string())
}

/// For benchmarks of the bindings: hands `count` synthetic messages (`payload_len`-byte
/// payloads, 64-hex-digit author and id) to `listener.on_messages` in batches of at most
/// 256, from a thread of the library, the way a topic's delivery thread does; returns once
/// all were delivered. It measures the host-language dispatch path alone: end-to-end
/// rates between nodes are bounded lower by the receiver's signature checks.
#[uniffi::export]
pub fn benchmark_dispatch(
    listener: Arc<dyn MessageListener>,
    count: u64,
    payload_len: u32,
) -> Result<(), StarlingError> {
    if payload_len > 16 << 20 {
        return Err(StarlingError::new(
            ErrorKind::InvalidArgument,
            "payload_len must be at most 16 MiB",
        ));
    }
    let template = Message {
        topic: "benchmark".to_owned(),
        author: "ab".repeat(32),
        seq: 0,
        id: "cd".repeat(32),
        issued_ms: 0,
        payload: vec![0x5a; payload_len as usize],
        hops: 1,
    };
    let worker = std::thread::Builder::new()
        .name("starling-deliver".to_owned())
        .spawn(move || {
            let mut sent = 0u64;
            while sent < count {
                let n = (count - sent).min(listeners::BATCH as u64);
                let batch = (0..n)
                    .map(|i| Message {
                        seq: sent + i + 1,
                        ..template.clone()
                    })
                    .collect();
                listener.on_messages(batch);
                sent += n;
            }
        })
        .map_err(|e| {
            StarlingError::new(ErrorKind::Runtime, format!("cannot start a thread: {e}"))
        })?;
    worker
        .join()
        .map_err(|_| StarlingError::new(ErrorKind::Internal, "the listener panicked"))
}

/// Checks a topic name and hashes it.
fn topic(name: &str) -> Result<TopicId, StarlingError> {
    if name.is_empty() {
        return Err(StarlingError::new(
            ErrorKind::InvalidArgument,
            "the topic name must not be empty",
        ));
    }
    Ok(TopicId::from_name(name))
}

fn wait(timeout_ms: u64) -> Duration {
    Duration::from_millis(timeout_ms).min(MAX_WAIT)
}

/// A running Starling node. Shut it down with `shutdown` (idempotent); dropping the last
/// reference shuts it down too, waiting at most 3 s for the goodbyes.
#[derive(uniffi::Object)]
pub struct Node {
    inner: core::Node,
    hubs: Hubs,
    closed: AtomicBool,
}

#[uniffi::export]
impl Node {
    /// Starts a node: binds its UDP socket, starts its runtime and joins the bootstrap
    /// peers (in the background). Fails on an invalid configuration or when the socket or
    /// the identity file cannot be set up.
    #[uniffi::constructor]
    pub fn new(config: Config) -> Result<Arc<Node>, StarlingError> {
        Self::start(config, None)
    }

    /// As `new`, with the application's admission `policy` deciding which peers may
    /// connect (see [`AdmissionPolicy`]: it runs on the network threads, must be quick,
    /// and a policy that throws refuses the peer). Refusals are counted in
    /// `Stats.refused["admission_hook"]`.
    #[uniffi::constructor]
    pub fn with_admission(
        config: Config,
        policy: Arc<dyn AdmissionPolicy>,
    ) -> Result<Arc<Node>, StarlingError> {
        Self::start(config, Some(policy))
    }

    /// This node's identity: its Ed25519 public key as 64 hex digits.
    pub fn id(&self) -> String {
        self.inner.id().to_string()
    }

    /// This node's identity as its 32 raw bytes.
    pub fn id_bytes(&self) -> Vec<u8> {
        self.inner.id().as_bytes().to_vec()
    }

    /// `"<peer id>@<address>"`: what another node passes to `join` or puts in its
    /// bootstrap list to reach this one.
    pub fn contact(&self) -> String {
        self.inner.contact()
    }

    /// The addresses this node advertises to peers (`"ip:port"`).
    pub fn local_addrs(&self) -> Vec<String> {
        self.inner
            .local_addrs()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The bound UDP address (`"ip:port"`; the real port when 0 was asked for).
    pub fn bound_addr(&self) -> String {
        self.inner.bound_addr().to_string()
    }

    /// Joins the network through `peers` (`"host:port"` or `"<peer id>@host:port"`).
    /// Returns once the join is under way; fails if an address is invalid.
    pub fn join(&self, peers: Vec<String>) -> Result<(), StarlingError> {
        Ok(self.inner.join(peers)?)
    }

    /// Subscribes to `topic` for reading with `next`, `next_batch` or `recv`. Several
    /// subscriptions (and listener registrations) of one topic each get every item.
    pub fn subscribe(&self, topic: String) -> Result<Arc<Subscription>, StarlingError> {
        let id = self::topic(&topic)?;
        let sub = self.inner.subscribe(id)?;
        Ok(Arc::new(Subscription {
            topic,
            inner: RwLock::new(Some(Arc::new(sub))),
            closed: AtomicBool::new(false),
            unsubscribed: tokio::sync::Notify::new(),
        }))
    }

    /// Publishes `payload` on `topic` (no subscription needed; this node does not receive
    /// its own messages). Fails if the payload exceeds the configured `max_payload`.
    pub fn publish(&self, topic: String, payload: Vec<u8>) -> Result<Receipt, StarlingError> {
        let receipt = self.inner.publish(self::topic(&topic)?, payload)?;
        Ok(Receipt {
            id: receipt.id.to_string(),
            seq: receipt.seq,
            peers_reached: receipt.peers as u64,
        })
    }

    /// Announces this node online on `topic` with `metadata` (at most 1 KiB), refreshed
    /// automatically until `clear_presence` or shutdown.
    pub fn set_presence(&self, topic: String, metadata: Vec<u8>) -> Result<(), StarlingError> {
        Ok(self.inner.set_presence(self::topic(&topic)?, metadata)?)
    }

    /// Announces that this node is no longer online on `topic`.
    pub fn clear_presence(&self, topic: String) -> Result<(), StarlingError> {
        Ok(self.inner.clear_presence(self::topic(&topic)?)?)
    }

    /// The other peers online on `topic` as this node sees it; this node itself is not
    /// listed (empty if this node is not a member of the topic).
    pub fn online(&self, topic: String) -> Result<Vec<PresenceEntry>, StarlingError> {
        let entries = self.inner.online(self::topic(&topic)?)?;
        Ok(entries.into_iter().map(PresenceEntry::from).collect())
    }

    /// A snapshot of the node's counters.
    pub fn stats(&self) -> Result<Stats, StarlingError> {
        Ok(self.inner.stats()?.into())
    }

    /// Calls `listener` with the messages of `topic` (in batches, in per-author order) on
    /// this topic's delivery thread until the handle is cancelled or the node shuts down.
    pub fn add_message_listener(
        &self,
        topic: String,
        listener: Arc<dyn MessageListener>,
    ) -> Result<Arc<ListenerHandle>, StarlingError> {
        self.register(topic, listeners::Entry::Message(listener))
    }

    /// Calls `listener` with the presence changes of `topic` (subscribing to it), starting
    /// with an Online event for each peer already online there, as a subscription does.
    pub fn add_presence_listener(
        &self,
        topic: String,
        listener: Arc<dyn PresenceListener>,
    ) -> Result<Arc<ListenerHandle>, StarlingError> {
        self.register(topic, listeners::Entry::Presence(listener))
    }

    /// Calls `listener` when the delivery queue of `topic`'s listeners overflowed because
    /// they were too slow (the oldest items are dropped; `dropped` says how many).
    pub fn add_lag_listener(
        &self,
        topic: String,
        listener: Arc<dyn LagListener>,
    ) -> Result<Arc<ListenerHandle>, StarlingError> {
        self.register(topic, listeners::Entry::Lag(listener))
    }

    /// Shuts down gracefully (presence goodbyes, disconnect notices; at most 3 s).
    /// Idempotent. Afterwards every call fails with `ErrorKind::Closed`, subscriptions end
    /// and listeners get nothing more.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.inner.shutdown();
    }

    /// Whether `shutdown` was called.
    pub fn is_shut_down(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Node {
    fn start(
        config: Config,
        policy: Option<Arc<dyn AdmissionPolicy>>,
    ) -> Result<Arc<Node>, StarlingError> {
        let inner = core::Node::start(config.into_core(policy)?)?;
        Ok(Arc::new(Node {
            inner,
            hubs: Arc::new(Mutex::new(HashMap::new())),
            closed: AtomicBool::new(false),
        }))
    }

    fn register(
        &self,
        topic: String,
        entry: listeners::Entry,
    ) -> Result<Arc<ListenerHandle>, StarlingError> {
        let id = self::topic(&topic)?;
        if self.is_shut_down() {
            return Err(core::Error::Closed.into());
        }
        Hub::register(&self.hubs, &topic, entry, || self.inner.subscribe(id))
    }
}

/// Items of one topic read by pulling (`next`, `next_batch`, `recv`). `unsubscribe` (or
/// dropping it) leaves the topic unless another subscription of this node holds it.
#[derive(uniffi::Object)]
pub struct Subscription {
    topic: String,
    inner: RwLock<Option<Arc<core::Subscription>>>,
    closed: AtomicBool,
    unsubscribed: tokio::sync::Notify,
}

impl Subscription {
    fn core(&self) -> Result<Arc<core::Subscription>, StarlingError> {
        self.inner
            .read()
            .clone()
            .ok_or_else(|| StarlingError::new(ErrorKind::Closed, "the subscription is closed"))
    }

    fn convert(&self, item: Item) -> SubscriptionItem {
        SubscriptionItem::from_core(item, &self.topic)
    }
}

fn ended() -> StarlingError {
    StarlingError::new(
        ErrorKind::Closed,
        "the subscription ended (unsubscribed or the node shut down)",
    )
}

#[uniffi::export]
impl Subscription {
    /// The topic name.
    pub fn topic(&self) -> String {
        self.topic.clone()
    }

    /// The next item, waiting at most `timeout_ms` (0: only what is already waiting).
    /// `None` if nothing arrived in time; fails with `ErrorKind::Closed` once the
    /// subscription ended and everything queued was read.
    pub fn next(&self, timeout_ms: u64) -> Result<Option<SubscriptionItem>, StarlingError> {
        let sub = self.core()?;
        let got = if timeout_ms == 0 {
            sub.try_recv()
        } else {
            sub.recv_timeout(wait(timeout_ms))
        };
        match got {
            Ok(item) => Ok(Some(self.convert(item))),
            Err(RecvError::Empty) => Ok(None),
            Err(RecvError::Closed) => Err(ended()),
        }
    }

    /// Up to `max` items: waits at most `timeout_ms` for the first, then takes what is
    /// already waiting. Empty if nothing arrived in time; fails like `next` once ended.
    pub fn next_batch(
        &self,
        max: u32,
        timeout_ms: u64,
    ) -> Result<Vec<SubscriptionItem>, StarlingError> {
        let mut items = Vec::new();
        if max == 0 {
            return Ok(items);
        }
        let sub = self.core()?;
        let first = if timeout_ms == 0 {
            sub.try_recv()
        } else {
            sub.recv_timeout(wait(timeout_ms))
        };
        match first {
            Ok(item) => items.push(self.convert(item)),
            Err(RecvError::Empty) => return Ok(items),
            Err(RecvError::Closed) => return Err(ended()),
        }
        while items.len() < max as usize {
            match sub.try_recv() {
                Ok(item) => items.push(self.convert(item)),
                // The end is reported by the next call.
                Err(_) => break,
            }
        }
        Ok(items)
    }

    /// The next item, waiting as long as it takes; fails with `ErrorKind::Closed` once the
    /// subscription ended (also when `unsubscribe` is called while waiting).
    pub async fn recv(&self) -> Result<SubscriptionItem, StarlingError> {
        let sub = self.core()?;
        let unsubscribed = self.unsubscribed.notified();
        tokio::pin!(unsubscribed);
        // Registered before the flag is read, so an unsubscribe in between still wakes us.
        unsubscribed.as_mut().enable();
        if self.closed.load(Ordering::SeqCst) {
            return Err(ended());
        }
        tokio::select! {
            item = sub.next() => item.map(|i| self.convert(i)).ok_or_else(ended),
            () = unsubscribed => Err(ended()),
        }
    }

    /// Items waiting to be read.
    pub fn pending(&self) -> u64 {
        self.inner.read().as_ref().map_or(0, |s| s.pending() as u64)
    }

    /// Stops the subscription (idempotent). Pending `recv` calls fail with
    /// `ErrorKind::Closed`; a blocking `next` in another thread returns within its timeout.
    pub fn unsubscribe(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Dropping the last reference unsubscribes in the core.
        self.inner.write().take();
        self.unsubscribed.notify_waiters();
    }

    /// Whether `unsubscribe` was called.
    pub fn is_unsubscribed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}
