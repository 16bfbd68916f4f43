//! Records, enums and the error of the uniffi API, and their conversions from the core.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use starling_core::identity::Keypair;
use starling_core::node::{self as core, Item};

use super::admission::{self, AdmissionPolicy};

/// Everything a node needs. Every field has a default, so bindings can set only what
/// they care about.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Config {
    /// UDP address to bind: `"0.0.0.0:0"` (all interfaces, any port; the default),
    /// `"127.0.0.1:0"`, `"[::]:4000"`, …
    #[uniffi(default = "0.0.0.0:0")]
    pub bind: String,
    /// Peers joined at start: `"host:port"` or `"<peer id>@host:port"`.
    #[uniffi(default = [])]
    pub bootstrap: Vec<String>,
    /// Addresses to advertise (`"ip:port"`); empty: derived from the bound address.
    #[uniffi(default = [])]
    pub advertise: Vec<String>,
    /// Key file for a stable identity (created with mode 0600 if missing); none: a fresh
    /// identity every start.
    #[uniffi(default = None)]
    pub identity_file: Option<String>,
    /// Nodes of different network ids never connect.
    #[uniffi(default = "starling")]
    pub network_id: String,
    /// Largest payload in bytes (1 B to 16 MiB; default 64 KiB).
    #[uniffi(default = 65536)]
    pub max_payload: u32,
    /// How long a presence announcement lives without refresh, in ms (≥ 1,000; refreshed
    /// every third of it).
    #[uniffi(default = 60000)]
    pub presence_ttl_ms: u64,
    /// Threads of the node's network runtime (≥ 1).
    #[uniffi(default = 2)]
    pub worker_threads: u32,
    /// Items buffered per subscription before the oldest are dropped (≥ 1).
    #[uniffi(default = 1024)]
    pub subscription_queue: u32,
    /// The 32-byte secret seed of the node's identity key (keep it secret), for a fixed
    /// identity without a key file; not together with `identity_file`. `public_key(seed)`
    /// gives the node's id.
    #[uniffi(default = None)]
    pub identity_seed: Option<Vec<u8>>,
    /// When set, exactly these peers (64 hex digits each) may connect, in and out; an
    /// empty list refuses everyone. With an admission policy too, both must admit.
    #[uniffi(default = None)]
    pub allowlist: Option<Vec<String>>,
    /// Private network: the network authority's public key (64 hex digits, what
    /// `starling authority new` prints). Set together with `credential`.
    #[uniffi(default = None)]
    pub authority: Option<String>,
    /// Private network: this node's credential (`"starling-credential-v1 <hex>"`), issued
    /// by `authority` for this node's identity and `network_id`. Peers without a valid
    /// credential from the same authority are refused.
    #[uniffi(default = None)]
    pub credential: Option<String>,
}

impl Config {
    pub(crate) fn into_core(
        self,
        policy: Option<std::sync::Arc<dyn AdmissionPolicy>>,
    ) -> Result<core::Config, StarlingError> {
        let advertise = self
            .advertise
            .iter()
            .map(|a| {
                a.trim().parse::<SocketAddr>().map_err(|e| {
                    StarlingError::new(
                        ErrorKind::InvalidConfig,
                        format!("invalid advertise address {a:?}: {e} (expected ip:port)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let identity = match (self.identity_file, self.identity_seed) {
            (Some(_), Some(_)) => {
                return Err(StarlingError::new(
                    ErrorKind::InvalidConfig,
                    "set identity_file or identity_seed, not both",
                ))
            }
            (None, Some(seed)) => {
                let seed: [u8; 32] = seed.as_slice().try_into().map_err(|_| {
                    StarlingError::new(
                        ErrorKind::InvalidConfig,
                        format!("identity_seed must be 32 bytes, not {}", seed.len()),
                    )
                })?;
                core::Identity::Key(Keypair::from_seed(seed))
            }
            (Some(path), None) if path.is_empty() => {
                return Err(StarlingError::new(
                    ErrorKind::InvalidConfig,
                    "identity_file must not be empty (use none for a fresh identity)",
                ))
            }
            (Some(path), None) => core::Identity::File(PathBuf::from(path)),
            (None, None) => core::Identity::Generate,
        };
        let allowlist = self
            .allowlist
            .map(|ids| {
                ids.iter()
                    .map(|id| admission::peer_id(id, "allowlist entry", ErrorKind::InvalidConfig))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let (authority, credential) = match (self.authority, self.credential) {
            (None, None) => (None, None),
            (Some(authority), Some(credential)) => {
                let authority =
                    admission::peer_id(&authority, "authority", ErrorKind::InvalidConfig)?;
                // With a seed the node's id is known now; otherwise the core checks the
                // peer at start (InvalidConfig).
                let me = match &identity {
                    core::Identity::Key(k) => Some(k.peer_id()),
                    _ => None,
                };
                let cred = admission::credential(&authority, &credential, me, &self.network_id)?;
                (Some(authority), Some(cred))
            }
            _ => {
                return Err(StarlingError::new(
                    ErrorKind::InvalidConfig,
                    "a private network needs both authority and credential",
                ))
            }
        };
        Ok(core::Config {
            bind: self.bind,
            advertise,
            bootstrap: self.bootstrap,
            identity,
            network_id: self.network_id,
            max_payload: self.max_payload as usize,
            presence_ttl: Duration::from_millis(self.presence_ttl_ms),
            worker_threads: self.worker_threads as usize,
            subscription_queue: self.subscription_queue as usize,
            authority,
            credential,
            admission: admission::hook(allowlist, policy),
            ..core::Config::default()
        })
    }
}

/// What kind of failure a [`StarlingError`] is. New kinds may be added; handle unknown
/// ones like `Internal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A bootstrap or join address could not be parsed or resolved.
    InvalidBootstrap,
    /// The bind address could not be parsed or resolved.
    InvalidBind,
    /// Another configuration value is out of range.
    InvalidConfig,
    /// An argument is invalid (e.g. an empty topic name).
    InvalidArgument,
    /// A private-network credential is malformed, signed by another authority, forged,
    /// expired, or issued for another peer or network.
    InvalidCredential,
    /// The identity key file could not be read or created.
    Identity,
    /// The network endpoint could not be set up (e.g. the address is in use).
    Transport,
    /// The node's runtime could not be started.
    Runtime,
    /// The payload exceeds the configured `max_payload`.
    PayloadTooLarge,
    /// Presence metadata exceeds 1 KiB.
    MetadataTooLarge,
    /// The node is a member of too many topics.
    TooManyTopics,
    /// The node is shut down, or the subscription ended.
    Closed,
    /// The node did not answer in time (overloaded or stuck).
    Timeout,
    /// Anything else (a bug: please report it with the message).
    Internal,
}

/// The one error of the API: a stable kind plus the core's human-readable text.
#[derive(Debug, uniffi::Error)]
pub enum StarlingError {
    /// A failed call.
    Failed {
        /// What kind of failure (stable; match on this).
        kind: ErrorKind,
        /// What went wrong, in words (may change between versions).
        detail: String,
    },
}

impl StarlingError {
    pub(crate) fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        StarlingError::Failed {
            kind,
            detail: detail.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StarlingError::Failed { kind, .. } => *kind,
        }
    }
}

impl fmt::Display for StarlingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StarlingError::Failed { detail, .. } => f.write_str(detail),
        }
    }
}

impl std::error::Error for StarlingError {}

impl From<core::Error> for StarlingError {
    fn from(e: core::Error) -> Self {
        let kind = match &e {
            core::Error::InvalidBootstrap { .. } => ErrorKind::InvalidBootstrap,
            core::Error::InvalidBind { .. } => ErrorKind::InvalidBind,
            core::Error::InvalidConfig(_) => ErrorKind::InvalidConfig,
            core::Error::Identity(_) => ErrorKind::Identity,
            core::Error::Transport(_) => ErrorKind::Transport,
            core::Error::Runtime(_) => ErrorKind::Runtime,
            core::Error::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            core::Error::MetadataTooLarge { .. } => ErrorKind::MetadataTooLarge,
            core::Error::TooManyTopics { .. } => ErrorKind::TooManyTopics,
            core::Error::Closed => ErrorKind::Closed,
            core::Error::Timeout(_) => ErrorKind::Timeout,
            _ => ErrorKind::Internal,
        };
        StarlingError::new(kind, e.to_string())
    }
}

/// The outcome of a publish.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Receipt {
    /// The message id (64 hex digits).
    pub id: String,
    /// Its sequence number (per author and topic, increasing).
    pub seq: u64,
    /// Topic neighbours it was sent to directly. 0 is not an error: the message stays
    /// cached and reaches peers that arrive shortly after.
    pub peers_reached: u64,
}

/// A message delivered on a topic.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Message {
    /// The topic name (as subscribed).
    pub topic: String,
    /// The author (who signed it, never the forwarding neighbour), 64 hex digits.
    pub author: String,
    /// The author's sequence number on this topic; per author, delivery follows it.
    pub seq: u64,
    /// The message id (64 hex digits).
    pub id: String,
    /// The author's timestamp, ms since the Unix epoch.
    pub issued_ms: u64,
    /// The payload.
    pub payload: Vec<u8>,
    /// Hops from the author (1: direct from the author).
    pub hops: u16,
}

impl Message {
    pub(crate) fn from_core(m: core::Message, topic: &str) -> Self {
        Message {
            topic: topic.to_owned(),
            author: m.author.to_string(),
            seq: m.seq,
            id: m.id.to_string(),
            issued_ms: m.issued_ms,
            payload: m.payload.to_vec(),
            hops: m.hops,
        }
    }
}

/// Why a peer went offline.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum OfflineReason {
    /// It announced it was leaving.
    Left,
    /// Its announcement was not refreshed within its TTL.
    Expired,
    /// A failure detector declared it dead.
    Failed {
        /// Who detected it (64 hex digits).
        reporter: String,
    },
}

/// What changed in someone's presence.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum PresenceChange {
    /// The peer came online.
    Online,
    /// The peer's metadata changed.
    Updated,
    /// The peer went offline.
    Offline {
        /// Why.
        reason: OfflineReason,
    },
}

/// A presence change on a topic.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct PresenceEvent {
    /// The topic name.
    pub topic: String,
    /// Whose presence changed (64 hex digits).
    pub peer: String,
    /// What changed.
    pub change: PresenceChange,
    /// The peer's metadata (its last known metadata when it went offline).
    pub metadata: Vec<u8>,
}

impl PresenceEvent {
    pub(crate) fn from_core(e: core::PresenceEvent, topic: &str) -> Self {
        let change = match e.change {
            core::PresenceChange::Online => PresenceChange::Online,
            core::PresenceChange::Updated => PresenceChange::Updated,
            core::PresenceChange::Offline(reason) => PresenceChange::Offline {
                reason: match reason {
                    core::OfflineReason::Left => OfflineReason::Left,
                    core::OfflineReason::Expired => OfflineReason::Expired,
                    core::OfflineReason::Failed { reporter } => OfflineReason::Failed {
                        reporter: reporter.to_string(),
                    },
                },
            },
        };
        PresenceEvent {
            topic: topic.to_owned(),
            peer: e.peer.to_string(),
            change,
            metadata: e.metadata.to_vec(),
        }
    }
}

/// One peer online on a topic.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct PresenceEntry {
    /// The peer (64 hex digits).
    pub peer: String,
    /// Its metadata.
    pub metadata: Vec<u8>,
    /// When it came online, ms since the Unix epoch (this node's clock).
    pub since_ms: u64,
    /// When its newest announcement arrived, ms since the Unix epoch (this node's clock).
    pub last_seen_ms: u64,
}

impl From<core::PresenceEntry> for PresenceEntry {
    fn from(e: core::PresenceEntry) -> Self {
        PresenceEntry {
            peer: e.peer.to_string(),
            metadata: e.metadata.to_vec(),
            since_ms: e.since.as_millis(),
            last_seen_ms: e.last_seen.as_millis(),
        }
    }
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SubscriptionItem {
    /// A message.
    Message {
        /// The message.
        message: Message,
    },
    /// Someone's presence on the topic changed.
    Presence {
        /// The change.
        event: PresenceEvent,
    },
    /// The reader was too slow: this many older items were dropped before the next one.
    Lagged {
        /// How many.
        dropped: u64,
    },
}

impl SubscriptionItem {
    pub(crate) fn from_core(item: Item, topic: &str) -> Self {
        match item {
            Item::Message(m) => SubscriptionItem::Message {
                message: Message::from_core(m, topic),
            },
            Item::Presence(e) => SubscriptionItem::Presence {
                event: PresenceEvent::from_core(e, topic),
            },
            Item::Lagged(dropped) => SubscriptionItem::Lagged { dropped },
        }
    }
}

/// A snapshot of a node's counters.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Stats {
    /// Open connections.
    pub peers: u64,
    /// Network-wide neighbours.
    pub neighbors: u64,
    /// Topics this node is a member of.
    pub topics: u64,
    /// Frames received.
    pub msgs_in: u64,
    /// Frames sent.
    pub msgs_out: u64,
    /// Frame bytes received.
    pub bytes_in: u64,
    /// Frame bytes sent.
    pub bytes_out: u64,
    /// Timer wake-ups of the node's actor.
    pub timer_wakeups: u64,
    /// Messages published here.
    pub published: u64,
    /// Messages delivered to subscriptions here.
    pub delivered: u64,
    /// Things dropped, by reason (`send_queue_full`, `subscriber_lagged`, `bad_frame`, …).
    pub drops: HashMap<String, u64>,
    /// Connections refused, by reason: `admission_hook` (the policy or allowlist),
    /// `banned`, `connection_limit`, `credential_<why>` (missing, expired,
    /// wrong_authority, wrong_peer, wrong_network, bad_signature, malformed),
    /// `too_many_handshakes` (refused before the handshake: too many inbound connections
    /// were pending, or too many from the same address).
    pub refused: HashMap<String, u64>,
    /// Peers disconnected and kept out for breaking the protocol, by reason (`bad_frame`,
    /// `bad_signature`, `message_rate`, …).
    pub cut_off: HashMap<String, u64>,
    /// Peers currently kept out (ban back-off running).
    pub banned: u64,
}

impl From<core::Stats> for Stats {
    fn from(s: core::Stats) -> Self {
        Stats {
            peers: s.peers as u64,
            neighbors: s.neighbors as u64,
            topics: s.topics as u64,
            msgs_in: s.msgs_in,
            msgs_out: s.msgs_out,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            timer_wakeups: s.timer_wakeups,
            published: s.published,
            delivered: s.delivered,
            drops: s.drops.into_iter().collect(),
            refused: s.refused.into_iter().collect(),
            cut_off: s.cut_off.into_iter().collect(),
            banned: s.banned as u64,
        }
    }
}

/// Severity of a log record, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    /// Failures the host should look at.
    Error,
    /// Something unexpected that the node handled.
    Warn,
    /// Lifecycle: start, join, shutdown.
    Info,
    /// Protocol decisions.
    Debug,
    /// Every message and timer.
    Trace,
}

impl LogLevel {
    pub(crate) fn to_core(self) -> crate::logging::LogLevel {
        use crate::logging::LogLevel as L;
        match self {
            LogLevel::Error => L::Error,
            LogLevel::Warn => L::Warn,
            LogLevel::Info => L::Info,
            LogLevel::Debug => L::Debug,
            LogLevel::Trace => L::Trace,
        }
    }

    pub(crate) fn from_core(level: crate::logging::LogLevel) -> Self {
        use crate::logging::LogLevel as L;
        match level {
            L::Error | L::Off => LogLevel::Error,
            L::Warn => LogLevel::Warn,
            L::Info => LogLevel::Info,
            L::Debug => LogLevel::Debug,
            L::Trace => LogLevel::Trace,
        }
    }
}

/// One log record of the library.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// The module that logged, e.g. `starling_core::net::driver`.
    pub target: String,
    /// The message followed by its fields as `key=value`.
    pub message: String,
}
