//! What the commands share: errors and exit codes, logging, signals, starting a node and
//! waiting for it to join.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use starling_core::net::TransportOptions;
use starling_core::node::{Events, NetEvent, Node, RecvError};
use starling_core::wire::TopicId;

use crate::ClientArgs;

/// Exit code of a bad argument (an address that does not parse, a bad peer string);
/// clap uses the same code for an unknown flag or a missing argument.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the network could not be reached (bootstrap unreachable, no peer on
/// the topic in time).
pub const EXIT_NETWORK: u8 = 3;
/// Exit code when an identity key file cannot be read, parsed or written.
pub const EXIT_IDENTITY: u8 = 4;
/// Exit code of any other failure.
pub const EXIT_FAILURE: u8 = 1;

/// A failure with its message and exit code.
#[derive(Debug)]
pub struct CliError {
    /// The process exit code.
    pub code: u8,
    /// What to tell the user (after "error: ").
    pub message: String,
}

impl CliError {
    /// An error with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }
    /// A usage error (bad argument value).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(EXIT_USAGE, message)
    }
    /// A network error.
    pub fn network(message: impl Into<String>) -> Self {
        Self::new(EXIT_NETWORK, message)
    }
    /// Any other failure.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(EXIT_FAILURE, message)
    }
}

impl From<starling_core::node::Error> for CliError {
    fn from(e: starling_core::node::Error) -> Self {
        use starling_core::node::Error as E;
        let code = match &e {
            E::InvalidBootstrap { .. } | E::InvalidBind { .. } | E::InvalidConfig(_) => EXIT_USAGE,
            E::Identity(_) => EXIT_IDENTITY,
            _ => EXIT_FAILURE,
        };
        CliError::new(code, e.to_string())
    }
}

impl From<starling_core::identity::IdentityError> for CliError {
    fn from(e: starling_core::identity::IdentityError) -> Self {
        CliError::new(EXIT_IDENTITY, format!("identity: {e}"))
    }
}

/// The result of a command.
pub type CliResult = Result<(), CliError>;

/// Logs to stderr through `tracing`; `RUST_LOG` overrides `default` (e.g. "info").
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A flag raised by SIGINT or SIGTERM (a second signal exits at once, so a stuck
/// shutdown can always be interrupted).
pub fn stop_flag() -> Result<Arc<AtomicBool>, CliError> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Order matters: the conditional exit sees the flag raised by an earlier signal.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&flag)))
            .map_err(|e| CliError::other(format!("cannot install signal handler: {e}")))?;
    }
    Ok(flag)
}

/// True once a stop signal arrived.
pub fn stopped(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

/// Parses a positive number of seconds.
pub fn secs(value: f64, what: &str) -> Result<Duration, CliError> {
    if !(value.is_finite() && value > 0.0 && value < 1e9) {
        return Err(CliError::usage(format!(
            "{what} must be a positive number of seconds (got {value})"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

/// The topic id of a topic name (BLAKE3 of its UTF-8 bytes, as every binding does).
pub fn topic_id(name: &str) -> Result<TopicId, CliError> {
    if name.is_empty() {
        return Err(CliError::usage("the topic name must not be empty"));
    }
    Ok(TopicId::from_name(name))
}

/// A short-lived node for `pub`, `sub` and `presence`, with its event receiver. It
/// starts without bootstrap so the event receiver exists before the join begins.
pub struct Client {
    /// The node.
    pub node: Node,
    /// Its network events.
    pub events: Events,
    /// How long to wait for the network.
    pub timeout: Duration,
    bootstrap: Vec<String>,
}

impl Client {
    /// Starts the node; its join through the bootstrap peers is under way.
    pub fn start(args: &ClientArgs) -> Result<Client, CliError> {
        let timeout = secs(args.timeout, "--timeout")?;
        let mut b = Node::builder()
            .bind(args.bind.clone())
            .network_id(args.network.clone())
            .worker_threads(1)
            .transport(TransportOptions {
                // A dial gives up in time for the overall timeout to report it.
                dial_timeout: timeout.min(TransportOptions::default().dial_timeout),
                ..TransportOptions::default()
            });
        if let Some(path) = &args.identity {
            b = b.identity_file(path);
        }
        if let Some((authority, credential)) = crate::authority::private_network(
            args.authority.as_deref(),
            args.credential.as_deref(),
        )? {
            b = b.private_network(authority, credential);
        }
        // Given to the builder so a bad peer string fails before anything starts.
        for peer in &args.bootstrap {
            b = b.bootstrap(peer.clone());
        }
        let node = b.start()?;
        let events = node.events()?;
        Ok(Client {
            node,
            events,
            timeout,
            bootstrap: args.bootstrap.clone(),
        })
    }

    /// Joins through the bootstrap peers and waits until it has a network neighbour,
    /// and then (with `topic`) a neighbour on that topic's overlay. Fails with a clear
    /// message when neither arrives within the timeout.
    pub fn join(&self, topic: Option<(TopicId, &str)>) -> CliResult {
        let deadline = Instant::now() + self.timeout;
        // The join began in `start`; an event before `events()` existed is caught by
        // asking for the neighbour count.
        let mut joined = false;
        let mut failures: Vec<String> = Vec::new();
        loop {
            if joined && topic.is_none() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !joined && self.node.stats().is_ok_and(|s| s.neighbors > 0) {
                joined = true;
                continue;
            }
            if left.is_zero() {
                let secs = self.timeout.as_secs_f64();
                if !joined {
                    let why = if failures.is_empty() {
                        "no answer".to_owned()
                    } else {
                        failures.join("; ")
                    };
                    return Err(CliError::network(format!(
                        "cannot reach bootstrap peer {} within {secs}s: {why}",
                        self.bootstrap.join(", ")
                    )));
                }
                let name = topic.map(|t| t.1).unwrap_or_default();
                return Err(CliError::network(format!(
                    "joined the network but found no peer on topic {name:?} within {secs}s \
                     (is any node subscribed to it? try `starling node --topic {name}`)"
                )));
            }
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(250)))
            {
                Ok(NetEvent::Joined) | Ok(NetEvent::NeighborUp(_)) => {
                    if !joined {
                        tracing::debug!("joined the network");
                    }
                    joined = true;
                }
                Ok(NetEvent::TopicNeighborUp(t, p)) => {
                    joined = true;
                    if Some(t) == topic.map(|t| t.0) {
                        tracing::debug!(peer = %p.short(), "topic neighbour up");
                        return Ok(());
                    }
                }
                Ok(NetEvent::DialFailed { addr, reason, .. }) if !joined => {
                    let at = addr.map(|a| format!("{a}: ")).unwrap_or_default();
                    failures.push(format!("{at}{reason}"));
                    // Every bootstrap peer failed: no point waiting longer.
                    if failures.len() >= self.bootstrap.len() {
                        return Err(CliError::network(format!(
                            "cannot reach bootstrap peer {}: {}",
                            self.bootstrap.join(", "),
                            failures.join("; ")
                        )));
                    }
                }
                Ok(_) => {}
                Err(RecvError::Empty) => {}
                Err(RecvError::Closed) => return Err(CliError::other("the node stopped")),
            }
        }
    }
}

/// How long a leaving node keeps its connections open after clearing its presence.
const LEAVE_GRACE: Duration = Duration::from_millis(300);

/// Leaves gracefully: clears presence on `topics` first and gives the leave a moment to
/// be read while the connections are still open, then shuts down.
///
/// Workaround: `Node::shutdown` announces the leave itself, but it closes connections
/// right after its frames are acknowledged, and a peer whose only link is that connection
/// can lose the leave still unread in its stream buffer (seen with one node and one
/// `presence --watch`): the peer then notices the departure only by expiry.
pub fn leave(node: &Node, topics: &[TopicId]) {
    if !topics.is_empty() {
        for t in topics {
            let _ = node.clear_presence(*t);
        }
        std::thread::sleep(LEAVE_GRACE);
    }
    node.shutdown();
}
