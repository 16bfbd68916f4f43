//! The Starling node: the one Rust API that the C ABI and the bindings wrap.
//!
//! A [`Node`] owns its own tokio runtime (default 2 worker threads) on which one actor
//! task runs the whole protocol over QUIC (see [`crate::net`]). Every method here is
//! synchronous and cheap: it hands a command to the actor over a bounded channel and, when
//! it needs an answer, waits for it (never longer than [`CALL_TIMEOUT`]). Methods may be
//! called from any thread, including from inside another tokio runtime (they block that
//! thread briefly, never the node's own).
//!
//! ```no_run
//! use starling_core::node::{Item, Node};
//! use starling_core::wire::TopicId;
//! use std::time::Duration;
//!
//! let node = Node::builder()
//!     .bind("0.0.0.0:0")
//!     .bootstrap("127.0.0.1:4000")
//!     .network_id("demo")
//!     .start()?;
//! let topic = TopicId::from_name("chat");
//! let sub = node.subscribe(topic)?;
//! let receipt = node.publish(topic, b"hello".to_vec())?;
//! println!("sent {} to {} peers", receipt.id, receipt.peers);
//! if let Ok(Item::Message(m)) = sub.recv_timeout(Duration::from_secs(1)) {
//!     println!("{}: {:?}", m.author, m.payload);
//! }
//! node.shutdown();
//! # Ok::<(), starling_core::node::Error>(())
//! ```

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::admission::{unix_now, AdmissionHook, Credential, PeerLimits, PrivateNetwork};
use crate::identity::{IdentityError, Keypair, PeerId};
use crate::net::addr::{advertised_addrs, encode_addrs};
use crate::net::driver::{self, Command, Driver, JoinTarget, Queues};
use crate::net::queue::{Pop, Queue};
use crate::net::{Endpoint, TransportError, TransportOptions};
use crate::proto::{self, State};
use crate::wire::{Limits, MessageId, TopicId};

pub use crate::proto::presence::{
    Entry as PresenceEntry, OfflineReason, PresenceChange, PresenceEvent,
};

/// Longest wait for the node's actor to accept a command and answer it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait of [`Node::shutdown`] (and of dropping a node) for the graceful part.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// Commands queued for the actor.
const COMMAND_QUEUE: usize = 1024;

/// Every error of the node API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bootstrap peer could not be parsed or resolved.
    #[error("invalid bootstrap peer {input:?}: {reason} (expected \"host:port\" or \"<64 hex peer id>@host:port\")")]
    InvalidBootstrap {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The bind address could not be parsed or resolved.
    #[error("invalid bind address {input:?}: {reason}")]
    InvalidBind {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The identity key file could not be read or created.
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    /// The QUIC endpoint could not be set up.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The node's runtime could not be started.
    #[error("cannot start the node's runtime: {0}")]
    Runtime(std::io::Error),
    /// The payload is larger than the configured limit.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Presence metadata is larger than the limit.
    #[error("presence metadata of {len} bytes exceeds the limit of {max} bytes")]
    MetadataTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The node is a member of too many topics.
    #[error("already a member of {max} topics, the limit")]
    TooManyTopics {
        /// The limit.
        max: usize,
    },
    /// The node is shut down (or shutting down).
    #[error("the node is shut down")]
    Closed,
    /// The node did not answer in time (it is overloaded or stuck).
    #[error("the node did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<proto::Error> for Error {
    fn from(e: proto::Error) -> Self {
        match e {
            proto::Error::PayloadTooLarge { len, max } => Error::PayloadTooLarge { len, max },
            proto::Error::MetadataTooLarge { len, max } => Error::MetadataTooLarge { len, max },
            proto::Error::TooManyTopics { max } => Error::TooManyTopics { max },
            proto::Error::Left => Error::Closed,
        }
    }
}

/// Where the node's identity comes from.
#[derive(Clone, Debug, Default)]
pub enum Identity {
    /// A fresh random key (the node has a new identity every start).
    #[default]
    Generate,
    /// A key file, created (mode 0600) if it does not exist.
    File(PathBuf),
    /// This key.
    Key(Keypair),
}

/// Everything a node needs; [`Config::default`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// UDP address to bind, IPv4 or IPv6 (default `0.0.0.0:0`: all interfaces, any port).
    pub bind: String,
    /// Addresses to advertise to peers; empty (default): the bound address, or for an
    /// unspecified bind address the default route's local address and loopback.
    pub advertise: Vec<SocketAddr>,
    /// Bootstrap peers joined at start: `"host:port"` or `"<peer id hex>@host:port"`.
    pub bootstrap: Vec<String>,
    /// The node's identity (default: a fresh key).
    pub identity: Identity,
    /// Network id: nodes of different networks never connect (default `"starling"`).
    pub network_id: String,
    /// Largest payload (default 64 KiB, the wire default).
    pub max_payload: usize,
    /// How long a presence record lives without refresh (default 60 s; refreshed every
    /// third of it).
    pub presence_ttl: Duration,
    /// Worker threads of the node's runtime (default 2; 1 works).
    pub worker_threads: usize,
    /// Items buffered per subscription (and per event receiver) before the oldest are
    /// dropped and a `Lagged` item reports how many (default 1,024).
    pub subscription_queue: usize,
    /// Frames queued per connection for payloads (default 1,024; full: dropped and
    /// counted). Membership traffic has its own queue of the same size.
    pub send_queue: usize,
    /// Most connections at once (default 512).
    pub max_connections: usize,
    /// Protocol parameters (their docs say where each default comes from). `limits` and
    /// `presence.ttl`/`refresh_interval` are overridden by the fields above.
    pub protocol: proto::Config,
    /// Dial/handshake timeout, keep-alive and idle timeout of QUIC connections.
    pub transport: TransportOptions,
    /// Seed of the protocol's random choices (default: random).
    pub seed: Option<u64>,
    /// Private network: the authority's public key (default `None`: an open network).
    /// Set together with `credential`.
    pub authority: Option<PeerId>,
    /// Private network: this node's credential, issued by `authority` for this node's key
    /// and `network_id` (see [`crate::admission`]).
    pub credential: Option<Credential>,
    /// The application's admission decision on every inbound and outbound connection
    /// (default `None`: everyone the network admits).
    pub admission: Option<AdmissionHook>,
    /// Per-peer rates, ban back-off and pending-dial limit ([`PeerLimits::default`]).
    pub peer_limits: PeerLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "0.0.0.0:0".to_owned(),
            advertise: Vec::new(),
            bootstrap: Vec::new(),
            identity: Identity::Generate,
            network_id: "starling".to_owned(),
            max_payload: Limits::default().max_payload_bytes,
            presence_ttl: Duration::from_secs(60),
            worker_threads: 2,
            subscription_queue: 1024,
            send_queue: 1024,
            max_connections: 512,
            protocol: proto::Config::default(),
            transport: TransportOptions::default(),
            seed: None,
            authority: None,
            credential: None,
            admission: None,
            peer_limits: PeerLimits::default(),
        }
    }
}

/// Builds a [`Config`] and starts a [`Node`]; values are checked by [`Builder::start`].
#[derive(Clone, Debug, Default)]
pub struct Builder {
    config: Config,
}

impl Builder {
    /// UDP address to bind (`"0.0.0.0:0"`, `"[::]:4000"`, `"127.0.0.1:0"`, …).
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.config.bind = addr.into();
        self
    }
    /// Adds an address to advertise to peers.
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.config.advertise.push(addr);
        self
    }
    /// Adds a bootstrap peer: `"host:port"` or `"<peer id>@host:port"`.
    pub fn bootstrap(mut self, peer: impl Into<String>) -> Self {
        self.config.bootstrap.push(peer.into());
        self
    }
    /// Identity from a key file (created if missing).
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.identity = Identity::File(path.into());
        self
    }
    /// Identity from a key in memory.
    pub fn identity(mut self, key: Keypair) -> Self {
        self.config.identity = Identity::Key(key);
        self
    }
    /// Network id.
    pub fn network_id(mut self, id: impl Into<String>) -> Self {
        self.config.network_id = id.into();
        self
    }
    /// Largest payload in bytes.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.config.max_payload = bytes;
        self
    }
    /// Presence TTL.
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.config.presence_ttl = ttl;
        self
    }
    /// Runtime worker threads.
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.config.worker_threads = n;
        self
    }
    /// Protocol parameters.
    pub fn protocol(mut self, config: proto::Config) -> Self {
        self.config.protocol = config;
        self
    }
    /// QUIC timeouts.
    pub fn transport(mut self, options: TransportOptions) -> Self {
        self.config.transport = options;
        self
    }
    /// The admission hook: `f(peer)` is asked for every inbound connection and before
    /// (and after) every outbound dial; `false` refuses the peer (logged, and counted in
    /// [`Stats::refused`] as `admission_hook`). It runs on the node's actor: keep it quick
    /// and do not call the node from it.
    pub fn admission(mut self, f: impl Fn(&PeerId) -> bool + Send + Sync + 'static) -> Self {
        self.config.admission = Some(AdmissionHook::new(f));
        self
    }
    /// Makes this node a member of a private network: peers must show a credential signed
    /// by `authority`, and this node shows `credential` (see [`crate::admission`]).
    pub fn private_network(mut self, authority: PeerId, credential: Credential) -> Self {
        self.config.authority = Some(authority);
        self.config.credential = Some(credential);
        self
    }
    /// Per-peer rates, ban back-off and pending-dial limit.
    pub fn peer_limits(mut self, limits: PeerLimits) -> Self {
        self.config.peer_limits = limits;
        self
    }
    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    /// The configuration so far.
    pub fn config_ref(&self) -> &Config {
        &self.config
    }
    /// Validates the configuration and starts the node.
    pub fn start(self) -> Result<Node, Error> {
        Node::start(self.config)
    }
}

/// A message delivered on a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: TopicId,
    /// The author (who signed it), never the neighbour that forwarded it.
    pub author: PeerId,
    /// The author's sequence number on this topic (increasing; delivery is in this order
    /// per author).
    pub seq: u64,
    /// The message id (BLAKE3 over the signed fields, recomputed on receipt).
    pub id: MessageId,
    /// The author's timestamp, ms since the Unix epoch.
    pub issued_ms: u64,
    /// The payload.
    pub payload: Bytes,
    /// Hops from the author.
    pub hops: u16,
}

/// What a [`Subscription`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A message (each once, in per-author order from the first message this subscriber
    /// received from its author; see docs/ARCHITECTURE.md, Known limitations).
    Message(Message),
    /// Someone's presence on the topic changed.
    Presence(PresenceEvent),
    /// The queue overflowed: this many older items were dropped before the next one.
    Lagged(u64),
}

/// A network event (see [`Node::events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// The node has its first network-wide neighbour (again, after having lost all).
    Joined,
    /// A network-wide neighbour is up.
    NeighborUp(PeerId),
    /// A network-wide neighbour is down.
    NeighborDown(PeerId),
    /// A neighbour in a topic's overlay is up.
    TopicNeighborUp(TopicId, PeerId),
    /// A neighbour in a topic's overlay is down.
    TopicNeighborDown(TopicId, PeerId),
    /// A dial failed.
    DialFailed {
        /// The peer dialed (None: a bootstrap address of unknown identity).
        peer: Option<PeerId>,
        /// The last address tried.
        addr: Option<SocketAddr>,
        /// Why, in words (e.g. "expected peer … but … answered").
        reason: String,
    },
    /// The event queue overflowed: this many older events were dropped.
    Lagged(u64),
}

/// The outcome of [`Node::publish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The message id.
    pub id: MessageId,
    /// Its sequence number.
    pub seq: u64,
    /// Topic neighbours it was pushed or announced to directly. 0: no peer yet; the
    /// message stays cached and reaches peers that arrive within the cache window.
    pub peers: usize,
}

/// A snapshot of the node's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open connections.
    pub peers: usize,
    /// Network-wide neighbours (active view).
    pub neighbors: usize,
    /// Topics this node is a member of.
    pub topics: usize,
    /// Frames received.
    pub msgs_in: u64,
    /// Frames sent (queued on a connection).
    pub msgs_out: u64,
    /// Frame bytes received (without QUIC overhead).
    pub bytes_in: u64,
    /// Frame bytes sent (without QUIC overhead).
    pub bytes_out: u64,
    /// Times the node's actor woke up for a timer (protocol deadlines and housekeeping;
    /// packets and keep-alives are not counted).
    pub timer_wakeups: u64,
    /// Messages published here.
    pub published: u64,
    /// Messages delivered to subscriptions here.
    pub delivered: u64,
    /// Things dropped, by reason (`send_queue_full` (payload queue), `control_queue_full`, `subscriber_lagged`, `bad_frame`,
    /// `dial_failed`, `rejected_<why>`, …).
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Connections refused, by reason: `admission_hook`, `banned`, `connection_limit`,
    /// `credential_<why>` (missing, expired, wrong_authority, wrong_peer, wrong_network,
    /// bad_signature, malformed), `too_many_handshakes` (refused before the handshake:
    /// `TransportOptions::max_inbound_pending` were already held, or 16 by peers from the
    /// same address).
    pub refused: std::collections::BTreeMap<String, u64>,
    /// Peers disconnected and kept out for breaking the protocol, by reason: `bad_frame`,
    /// `oversized_frame`, `framing`, `bad_signature`, `topic_mismatch`, `frame_rate`,
    /// `message_rate`, `ihave_rate`, `graft_rate`.
    pub cut_off: std::collections::BTreeMap<String, u64>,
    /// Peers currently kept out (ban back-off running).
    pub banned: usize,
    /// Sizes of the protocol's bounded tables.
    pub tables: proto::TableSizes,
    /// Peers in the address book (at most 4,096).
    pub address_book: usize,
    /// Frames waiting for dials to finish (at most 256 per peer).
    pub pending_frames: usize,
    /// Peers this node's failure detector declared dead (a live peer counted here is a
    /// false failure detection).
    pub declared_dead: u64,
}

/// Why a read from a [`Subscription`] or [`Events`] returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing arrived (within the wait).
    #[error("nothing received")]
    Empty,
    /// Nothing more will arrive: closed, or the node shut down.
    #[error("closed")]
    Closed,
}

fn pop_result<T>(p: Pop<T>, lagged: impl Fn(u64) -> T) -> Result<T, RecvError> {
    match p {
        Pop::Item(i) => Ok(i),
        Pop::Lagged(n) => Ok(lagged(n)),
        Pop::Empty => Err(RecvError::Empty),
        Pop::Ended => Err(RecvError::Closed),
    }
}

/// Messages and presence changes of one topic. Dropping or closing it unsubscribes (when
/// it is the node's last subscription to the topic).
pub struct Subscription {
    topic: TopicId,
    queue: Arc<Queue<Item>>,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> TopicId {
        self.topic
    }
    /// The next item, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Item, RecvError> {
        pop_result(self.queue.pop_timeout(timeout), Item::Lagged)
    }
    /// The next item if one is waiting.
    pub fn try_recv(&self) -> Result<Item, RecvError> {
        pop_result(self.queue.try_pop(), Item::Lagged)
    }
    /// The next item; `None` once closed or the node shut down.
    pub async fn next(&self) -> Option<Item> {
        pop_result(self.queue.pop().await, Item::Lagged).ok()
    }
    /// Items waiting.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
    /// Unsubscribes (same as dropping it).
    pub fn close(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.queue.close_reader();
        // If the actor is too busy to take this now, it notices the closed queue later.
        let _ = self.commands.try_send(Command::Unsubscribe(self.topic));
    }
}

/// Network events ([`Node::events`]); bounded like a subscription.
pub struct Events {
    queue: Arc<Queue<NetEvent>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<NetEvent, RecvError> {
        pop_result(self.queue.pop_timeout(timeout), NetEvent::Lagged)
    }
    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Result<NetEvent, RecvError> {
        pop_result(self.queue.try_pop(), NetEvent::Lagged)
    }
    /// The next event; `None` once the node shut down.
    pub async fn next(&self) -> Option<NetEvent> {
        pop_result(self.queue.pop().await, NetEvent::Lagged).ok()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.queue.close_reader();
    }
}

/// A running Starling node (see the module docs). Dropping it shuts it down gracefully,
/// waiting at most [`SHUTDOWN_TIMEOUT`].
pub struct Node {
    id: PeerId,
    bound: SocketAddr,
    addrs: Vec<SocketAddr>,
    commands: mpsc::Sender<Command>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    max_payload: usize,
    max_metadata: usize,
    queue_capacity: usize,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

/// Parses `"host:port"` or `"<peer id>@host:port"`, resolving host names.
pub(crate) fn parse_peer(input: &str) -> Result<JoinTarget, Error> {
    let bad = |reason: &str| Error::InvalidBootstrap {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let (id, hostport) = match s.split_once('@') {
        Some((id, rest)) => {
            let id: PeerId = id
                .parse()
                .map_err(|_| bad("the peer id must be 64 hex digits"))?;
            (Some(id), rest)
        }
        None => (None, s),
    };
    if hostport.is_empty() {
        return Err(bad("no address after the peer id"));
    }
    if !hostport.contains(':') {
        return Err(bad("no port (use host:port, or [v6addr]:port)"));
    }
    let addrs: Vec<SocketAddr> = hostport
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve: {e}")))?
        .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
        .collect();
    if addrs.is_empty() {
        return Err(bad(
            "resolves to no usable address (port 0 or unspecified IP)",
        ));
    }
    Ok(JoinTarget { id, addrs })
}

fn parse_bind(input: &str) -> Result<SocketAddr, Error> {
    let bad = |reason: String| Error::InvalidBind {
        input: input.to_owned(),
        reason,
    };
    input
        .trim()
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".to_owned()))
}

/// Polls `fut` to completion on the calling thread, giving up at `deadline` if one is
/// given. No runtime is needed, so it works from a plain thread and inside any async
/// context; the node's futures (e.g. [`Subscription::next`]) are driven by the node's own
/// runtime and only need to be polled. Used by the node's blocking calls and by the C
/// ABI's delivery threads.
pub fn block_on<F: Future>(fut: F, deadline: Option<Instant>) -> Option<F::Output> {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        match deadline {
            None => std::thread::park(),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return None;
                }
                std::thread::park_timeout(deadline - now);
            }
        }
    }
}

impl Node {
    /// A builder with the default configuration.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts a node with `config` (see [`Builder::start`]).
    pub fn start(config: Config) -> Result<Node, Error> {
        let invalid = |s: &str| Err(Error::InvalidConfig(s.to_owned()));
        if config.network_id.is_empty() || config.network_id.len() > 200 {
            return invalid("network_id must be 1 to 200 bytes");
        }
        if config.worker_threads == 0 {
            return invalid("worker_threads must be at least 1");
        }
        if config.max_payload == 0 || config.max_payload > 16 << 20 {
            return invalid("max_payload must be between 1 byte and 16 MiB");
        }
        if config.presence_ttl < Duration::from_secs(1) {
            return invalid("presence_ttl must be at least 1 s");
        }
        if config.subscription_queue == 0 || config.send_queue == 0 {
            return invalid("queue sizes must be at least 1");
        }
        if let Err(e) = config.peer_limits.validate() {
            return Err(Error::InvalidConfig(e));
        }
        let bind = parse_bind(&config.bind)?;
        let bootstrap = config
            .bootstrap
            .iter()
            .map(|s| parse_peer(s))
            .collect::<Result<Vec<_>, _>>()?;
        let key = match &config.identity {
            Identity::Generate => Keypair::generate(&mut rand::rngs::OsRng),
            Identity::File(path) => Keypair::load_or_create(path)?,
            Identity::Key(k) => k.clone(),
        };
        let private = match (config.authority, config.credential.clone()) {
            (None, None) => None,
            (Some(authority), Some(credential)) => {
                // Our own credential must be one our peers will accept.
                credential
                    .check(&authority, &key.peer_id(), &config.network_id, unix_now())
                    .map_err(|e| {
                        Error::InvalidConfig(format!("this node's own credential: {e}"))
                    })?;
                Some(PrivateNetwork {
                    authority,
                    credential,
                })
            }
            (Some(_), None) => {
                return invalid("a private network (authority set) needs this node's credential")
            }
            (None, Some(_)) => return invalid("a credential needs the network's authority key"),
        };
        let mut limits = config.protocol.limits.clone();
        limits.max_payload_bytes = config.max_payload;
        let mut protocol = driver::protocol_config(config.protocol.clone(), &limits);
        protocol.presence.ttl = config.presence_ttl;
        protocol.presence.refresh_interval = config.presence_ttl / 3;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .thread_name("starling-node")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        // Entering (unlike block_on) is allowed inside another runtime.
        let endpoint = {
            let _guard = runtime.enter();
            Endpoint::bind_private(
                bind,
                &key,
                &config.network_id,
                limits.clone(),
                config.transport.clone(),
                private,
            )
        };
        let endpoint = match endpoint {
            Ok(e) => e,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e.into());
            }
        };
        let bound = match endpoint.local_addr() {
            Ok(a) => a,
            Err(e) => {
                drop(endpoint);
                runtime.shutdown_background();
                return Err(e.into());
            }
        };
        let addrs = if config.advertise.is_empty() {
            advertised_addrs(bound)
        } else {
            config.advertise.clone()
        };
        let seed = config.seed.unwrap_or_else(rand::random);
        let state = State::new(key.clone(), encode_addrs(&addrs), protocol, seed);
        let queues = Queues {
            data: config.send_queue,
            control: config.send_queue,
            inbound: 1024,
            max_connections: config.max_connections.max(1),
        };
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let mut driver = Driver::new(state, endpoint, limits.clone(), queues);
        driver.set_admission(config.admission.clone(), config.peer_limits.clone());
        runtime.spawn(driver.run(rx));
        let node = Node {
            id: key.peer_id(),
            bound,
            addrs,
            commands,
            runtime: Mutex::new(Some(runtime)),
            max_payload: config.max_payload,
            max_metadata: limits.max_metadata_bytes,
            queue_capacity: config.subscription_queue,
        };
        tracing::info!(peer = %node.id.short(), addr = %bound, "node started");
        if !bootstrap.is_empty() {
            node.send(Command::Join(bootstrap))?;
        }
        Ok(node)
    }

    /// Queues a command for the actor (waits while the queue is full, up to
    /// [`CALL_TIMEOUT`]).
    fn send(&self, cmd: Command) -> Result<(), Error> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        match block_on(self.commands.send(cmd), Some(deadline)) {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) => Err(Error::Closed),
            None => Err(Error::Timeout(CALL_TIMEOUT)),
        }
    }

    /// Sends a command and waits for its answer.
    fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        let deadline = Instant::now() + CALL_TIMEOUT;
        match block_on(self.commands.send(make(tx)), Some(deadline)) {
            Some(Ok(())) => {}
            Some(Err(_)) => return Err(Error::Closed),
            None => return Err(Error::Timeout(CALL_TIMEOUT)),
        }
        match block_on(rx, Some(deadline)) {
            Some(Ok(v)) => Ok(v),
            Some(Err(_)) => Err(Error::Closed),
            None => Err(Error::Timeout(CALL_TIMEOUT)),
        }
    }

    /// This node's identity.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The addresses this node advertises (what peers dial).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// The bound UDP address.
    pub fn bound_addr(&self) -> SocketAddr {
        self.bound
    }

    /// `"<peer id>@<first advertised address>"`: what another node passes to
    /// [`Node::join`] or [`Builder::bootstrap`] to reach this one.
    pub fn contact(&self) -> String {
        match self.addrs.first() {
            Some(a) => format!("{}@{}", self.id, a),
            None => format!("{}@{}", self.id, self.bound),
        }
    }

    /// Joins the network through `peers` (`"host:port"` or `"<peer id>@host:port"`).
    /// Returns once the join is under way; [`NetEvent::Joined`] says when it worked and
    /// [`NetEvent::DialFailed`] when a peer could not be reached.
    pub fn join<S: AsRef<str>>(&self, peers: impl IntoIterator<Item = S>) -> Result<(), Error> {
        let targets = peers
            .into_iter()
            .map(|p| parse_peer(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        self.send(Command::Join(targets))
    }

    /// Subscribes to `topic` (joining its overlay). Several subscriptions to one topic
    /// each get every item. A subscription starts with an Online event for each peer
    /// already online on the topic here, then gets every change.
    pub fn subscribe(&self, topic: TopicId) -> Result<Subscription, Error> {
        let queue = Arc::new(Queue::new(self.queue_capacity));
        let q = Arc::clone(&queue);
        self.call(|reply| Command::Subscribe {
            topic,
            queue: q,
            reply,
        })??;
        Ok(Subscription {
            topic,
            queue,
            commands: self.commands.clone(),
        })
    }

    /// Publishes `payload` on `topic` (no subscription needed). The receipt says how many
    /// peers it reached directly; 0 is not an error (see [`Receipt::peers`]).
    pub fn publish(&self, topic: TopicId, payload: impl Into<Bytes>) -> Result<Receipt, Error> {
        let payload = payload.into();
        if payload.len() > self.max_payload {
            return Err(Error::PayloadTooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        self.call(|reply| Command::Publish {
            topic,
            payload,
            reply,
        })?
    }

    /// Announces this node online on `topic` with `metadata` (≤ 1 KiB).
    pub fn set_presence(&self, topic: TopicId, metadata: impl Into<Bytes>) -> Result<(), Error> {
        let metadata = metadata.into();
        if metadata.len() > self.max_metadata {
            return Err(Error::MetadataTooLarge {
                len: metadata.len(),
                max: self.max_metadata,
            });
        }
        self.call(|reply| Command::SetPresence {
            topic,
            metadata,
            reply,
        })?
    }

    /// Announces that this node is no longer online on `topic`.
    pub fn clear_presence(&self, topic: TopicId) -> Result<(), Error> {
        self.send(Command::ClearPresence(topic))
    }

    /// The other peers online on `topic` as seen here; this node itself is not listed
    /// (empty if not a member).
    pub fn online(&self, topic: TopicId) -> Result<Vec<PresenceEntry>, Error> {
        self.call(|reply| Command::Online { topic, reply })
    }

    /// This node's Plumtree neighbours on `topic`: `(eager, lazy)`. Eager peers get every
    /// message in full (the spanning-tree links); lazy peers get only `IHave` digests and
    /// are grafted into the tree if they announce something missed. Both are subsets of
    /// the topic neighbours; both are empty if this node is not a member of `topic`.
    pub fn topic_tree(&self, topic: TopicId) -> Result<(Vec<PeerId>, Vec<PeerId>), Error> {
        self.call(|reply| Command::TopicTree { topic, reply })
    }

    /// A receiver of network events from now on.
    pub fn events(&self) -> Result<Events, Error> {
        let queue = Arc::new(Queue::new(self.queue_capacity));
        self.send(Command::Events(Arc::clone(&queue)))?;
        Ok(Events { queue })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Result<Stats, Error> {
        self.call(Command::Stats)
    }

    /// Shuts down gracefully: leaving presence on every topic and disconnect notices to
    /// every neighbour, flush, close; then stops the runtime. Waits at most
    /// [`SHUTDOWN_TIMEOUT`]. Idempotent; afterwards every call fails with
    /// [`Error::Closed`] and subscriptions end.
    pub fn shutdown(&self) {
        let runtime = match self.runtime.lock() {
            Ok(mut g) => g.take(),
            Err(e) => e.into_inner().take(),
        };
        let Some(runtime) = runtime else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        if let Some(Ok(())) = block_on(self.commands.send(Command::Shutdown(tx)), Some(deadline)) {
            let _ = block_on(rx, Some(deadline));
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            // Safe inside an async context, unlike dropping the runtime.
            runtime.shutdown_background();
        } else {
            // Outside one, wait for the worker threads to exit, so that none of the
            // library's code runs after shutdown (C hosts may unload it; leak checkers
            // see no live threads at exit).
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
        tracing::info!(peer = %self.id.short(), "node shut down");
    }

    /// Stops at once without telling anyone (as if the process crashed): peers find out
    /// through their failure detectors. For tests and benchmarks.
    pub fn abort(&self) {
        let runtime = match self.runtime.lock() {
            Ok(mut g) => g.take(),
            Err(e) => e.into_inner().take(),
        };
        if let Some(rt) = runtime {
            rt.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}
