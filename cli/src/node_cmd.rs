//! `starling node`: a long-running node.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use starling_core::node::{Item, NetEvent, Node, PresenceChange, RecvError, Subscription};

use crate::common::{self, CliError, CliResult};
use crate::http::{self, Reply};
use crate::web::WebView;

/// `starling node`.
#[derive(Args, Debug)]
#[command(
    after_help = "Prints its bootstrap string (<peer id>@<addr>) on stdout first, then \
logs to stderr (RUST_LOG=debug for more). Stops gracefully on Ctrl-C or SIGTERM.\n\n\
Example:\n  starling node --bind 0.0.0.0:4000 --identity node.key --topic chat --metrics 127.0.0.1:9100 \
--web 127.0.0.1:8080"
)]
pub struct NodeArgs {
    /// UDP address to bind, e.g. 0.0.0.0:4000 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub bind: String,
    /// A peer to join through ("<peer id>@host:port" or "host:port"); repeat for more.
    #[arg(long, short = 'b', value_name = "PEER")]
    pub bootstrap: Vec<String>,
    /// Identity key file (created if missing); default: a fresh identity every start.
    #[arg(long, short = 'i', value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Network id: nodes of different networks never connect.
    #[arg(long, value_name = "ID", default_value = "starling")]
    pub network: String,
    /// A topic to subscribe to (its messages and presence changes are logged); repeat
    /// for more.
    #[arg(long, short = 't', value_name = "T")]
    pub topic: Vec<String>,
    /// Announce this node online on every --topic with this metadata.
    #[arg(long, value_name = "TEXT")]
    pub meta: Option<String>,
    /// Address to advertise to peers (the bound address by default); repeat for more.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Serve a live view of this node's overlay neighbourhood at http://ADDR/.
    #[arg(long, value_name = "ADDR")]
    pub web: Option<String>,
    /// Private network: the network authority's public key (`starling authority new`
    /// printed it). Peers without a credential it signed are refused.
    #[arg(long, value_name = "KEY")]
    pub authority: Option<String>,
    /// Private network: this node's credential file (`starling authority issue`), made
    /// for this node's --identity and --network.
    #[arg(long, value_name = "FILE")]
    pub credential: Option<PathBuf>,
    /// Exit with an error if no bootstrap peer answers within this many seconds
    /// (0: keep retrying for ever).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub join_timeout: f64,
}

/// How often an unjoined node retries its bootstrap peers.
const REJOIN_EVERY: Duration = Duration::from_secs(2);

/// Runs the node until SIGINT/SIGTERM.
pub fn run(args: NodeArgs) -> CliResult {
    common::init_logging("info");
    let stop = common::stop_flag()?;
    let metrics_addr = match &args.metrics {
        Some(a) => Some(http::parse_addr(a, "--metrics")?),
        None => None,
    };
    let web_addr = match &args.web {
        Some(a) => Some(http::parse_addr(a, "--web")?),
        None => None,
    };
    let join_timeout = if args.join_timeout == 0.0 {
        None
    } else {
        Some(common::secs(args.join_timeout, "--join-timeout")?)
    };
    let mut b = Node::builder()
        .bind(args.bind.clone())
        .network_id(args.network.clone());
    for a in &args.advertise {
        let addr = a.parse().map_err(|_| {
            CliError::usage(format!(
                "invalid --advertise address {a:?}: expected ip:port"
            ))
        })?;
        b = b.advertise(addr);
    }
    if let Some(path) = &args.identity {
        b = b.identity_file(path);
    }
    if let Some((authority, credential)) =
        crate::authority::private_network(args.authority.as_deref(), args.credential.as_deref())?
    {
        b = b.private_network(authority, credential);
    }
    // Given to the builder so a bad peer string fails before anything starts.
    for peer in &args.bootstrap {
        b = b.bootstrap(peer.clone());
    }
    let node = Arc::new(b.start()?);
    // The bootstrap string first, so scripts can read one line and go.
    println!("{}", node.contact());
    let _ = std::io::stdout().flush();
    let addrs: Vec<String> = node.local_addrs().iter().map(|a| a.to_string()).collect();
    tracing::info!(peer = %node.id(), addrs = %addrs.join(","), network = %args.network, "node up");
    let events = node.events()?;
    // Started before subscribing, so topic-neighbour events are all seen.
    let _web = match web_addr {
        Some(addr) => {
            let topics = args
                .topic
                .iter()
                .map(|t| common::topic_id(t).map(|id| (t.clone(), id)))
                .collect::<Result<Vec<_>, _>>()?;
            let view = WebView::start(addr, "node", topics)?;
            view.add_node("this node", Arc::clone(&node));
            tracing::info!("web view at http://{}/", view.addr());
            Some(view)
        }
        None => None,
    };

    let mut subs: Vec<(String, Subscription)> = Vec::new();
    for name in &args.topic {
        let topic = common::topic_id(name)?;
        subs.push((name.clone(), node.subscribe(topic)?));
        if let Some(meta) = &args.meta {
            node.set_presence(topic, meta.clone().into_bytes())?;
        }
    }
    let started = Instant::now();
    if let Some(addr) = metrics_addr {
        let n = Arc::clone(&node);
        let topics: Vec<(String, starling_core::wire::TopicId)> = args
            .topic
            .iter()
            .map(|t| (t.clone(), starling_core::wire::TopicId::from_name(t)))
            .collect();
        let handler: http::Handler = Arc::new(move |path: &str| {
            let path = path.split('?').next().unwrap_or("");
            match path {
                "/metrics" => match n.stats() {
                    Ok(s) => {
                        let online: Vec<(String, usize)> = topics
                            .iter()
                            .map(|(name, t)| (name.clone(), n.online(*t).map_or(0, |v| v.len())))
                            .collect();
                        Reply::ok(
                            "text/plain; version=0.0.4; charset=utf-8",
                            http::prometheus(&s, &online, started.elapsed()),
                        )
                    }
                    Err(e) => Reply::Full {
                        status: "503 Service Unavailable",
                        content_type: "text/plain",
                        body: format!("{e}\n").into_bytes(),
                    },
                },
                "/" => Reply::ok(
                    "text/html; charset=utf-8",
                    "<a href=\"/metrics\">metrics</a>\n",
                ),
                _ => Reply::not_found(),
            }
        });
        let bound = http::serve(addr, "--metrics", handler)?;
        tracing::info!("metrics at http://{bound}/metrics");
    }

    let mut joined = args.bootstrap.is_empty();
    let mut failures: Vec<String> = Vec::new();
    let mut next_join = None;
    let mut next_check = Instant::now();
    while !common::stopped(&stop) {
        if !joined && Instant::now() >= next_check {
            // Catches a join that completed before the event receiver existed.
            next_check = Instant::now() + Duration::from_millis(500);
            if node.stats().is_ok_and(|s| s.neighbors > 0) {
                joined = true;
                tracing::info!("joined the network");
            }
        }
        if !joined {
            if let Some(t) = next_join {
                if Instant::now() >= t {
                    node.join(&args.bootstrap)?;
                    next_join = None;
                }
            }
            if let Some(limit) = join_timeout {
                if started.elapsed() > limit {
                    node.shutdown();
                    let why = if failures.is_empty() {
                        "no answer".to_owned()
                    } else {
                        failures.join("; ")
                    };
                    return Err(CliError::network(format!(
                        "cannot reach bootstrap peer {} within {}s: {why}",
                        args.bootstrap.join(", "),
                        limit.as_secs_f64()
                    )));
                }
            }
        }
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(NetEvent::Joined) => {
                joined = true;
                tracing::info!("joined the network");
            }
            Ok(NetEvent::NeighborUp(p)) => {
                joined = true;
                tracing::info!(peer = %p.short(), "neighbour up");
            }
            Ok(NetEvent::NeighborDown(p)) => tracing::info!(peer = %p.short(), "neighbour down"),
            Ok(NetEvent::TopicNeighborUp(t, p)) => {
                tracing::debug!(topic = %t.short(), peer = %p.short(), "topic neighbour up")
            }
            Ok(NetEvent::TopicNeighborDown(t, p)) => {
                tracing::debug!(topic = %t.short(), peer = %p.short(), "topic neighbour down")
            }
            Ok(NetEvent::DialFailed { peer, addr, reason }) => {
                let who = peer.map(|p| p.short()).unwrap_or_else(|| "?".into());
                let at = addr.map(|a| a.to_string()).unwrap_or_default();
                tracing::warn!(peer = %who, addr = %at, "dial failed: {reason}");
                if !joined {
                    failures.push(format!("{at}: {reason}"));
                    failures.dedup();
                    if next_join.is_none() {
                        next_join = Some(Instant::now() + REJOIN_EVERY);
                    }
                }
            }
            Ok(NetEvent::Lagged(n)) => tracing::warn!("{n} network events dropped"),
            Err(RecvError::Empty) => {}
            Err(RecvError::Closed) => break,
        }
        for (name, sub) in &subs {
            while let Ok(item) = sub.try_recv() {
                match item {
                    Item::Message(m) => tracing::info!(
                        topic = %name, author = %m.author.short(), seq = m.seq, hops = m.hops,
                        "message: {}", String::from_utf8_lossy(&m.payload)
                    ),
                    Item::Presence(p) => {
                        let what = match p.change {
                            PresenceChange::Online => "online".to_owned(),
                            PresenceChange::Updated => "updated".to_owned(),
                            PresenceChange::Offline(r) => format!("offline ({r:?})"),
                        };
                        tracing::info!(topic = %name, peer = %p.peer.short(), "presence: {what}");
                    }
                    Item::Lagged(n) => tracing::warn!(topic = %name, "{n} items dropped"),
                }
            }
        }
    }
    tracing::info!("stopping: leaving gracefully");
    // Shut down before dropping the subscriptions: dropping one unsubscribes, which
    // leaves its topic without announcing the presence leave.
    let present: Vec<starling_core::wire::TopicId> = if args.meta.is_some() {
        subs.iter().map(|(_, s)| s.topic()).collect()
    } else {
        Vec::new()
    };
    common::leave(&node, &present);
    drop(subs);
    tracing::info!("stopped");
    Ok(())
}
