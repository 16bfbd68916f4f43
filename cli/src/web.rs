//! `--web ADDR`: a live view of the overlay as this process sees it, served by the tiny
//! server of [`crate::http`]: a self-contained page (`GET /`, no external scripts), a JSON
//! snapshot (`GET /state.json`) and the same snapshot as server-sent events
//! (`GET /events`, every ~500 ms and soon after a change).
//!
//! Everything comes from the public `Node` API: `stats()` (counters), `online()`
//! (presence lists), `topic_tree()` (each topic's Plumtree eager/lazy split) and
//! `events()` (neighbour and topic-neighbour up/down). A topic's links are its topic
//! neighbours; those some local end keeps eager (the broadcast tree) are marked so.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use starling_core::identity::PeerId;
use starling_core::node::{Events, NetEvent, Node};
use starling_core::wire::TopicId;

use crate::common::CliError;
use crate::http::{self, Reply};

/// The page, embedded so the binary serves it with no files around.
const PAGE: &str = include_str!("web.html");
/// A snapshot at least this often (what the issue asks: ~500 ms).
const TICK: Duration = Duration::from_millis(500);
/// After a change, a snapshot no sooner than this after the previous one (bounds the
/// `stats()`/`online()` calls a busy overlay causes).
const MIN_GAP: Duration = Duration::from_millis(100);
/// Above this many local nodes, snapshots come only every [`TICK`].
const MANY_NODES: usize = 50;
/// Presence lists are sent per node for at most this many local nodes (counts always).
const MAX_LISTS: usize = 64;
/// Recent overlay events kept for the page's log.
const LOG_LEN: usize = 30;
/// An idle event stream sends a comment this often, so proxies and clients keep it.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// Presence metadata shown is cut to this many characters.
const META_CHARS: usize = 40;

/// A node of this process.
struct Local {
    label: String,
    node: Arc<Node>,
    id: PeerId,
    /// Taken by the sampler; `None` once the node stopped.
    events: Option<Events>,
}

/// State shared by the sampler thread and the HTTP handlers.
struct Inner {
    mode: &'static str,
    topics: Vec<(String, TopicId)>,
    nodes: Mutex<Vec<Local>>,
    /// (version, snapshot JSON).
    snap: Mutex<(u64, Arc<String>)>,
    changed: Condvar,
    stop: AtomicBool,
    started: Instant,
}

/// A running live view; stops its sampler when dropped.
pub struct WebView {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl WebView {
    /// Serves the view on `addr` (flag name for errors: `--web`). `mode` is "demo" or
    /// "node"; `topics` are the topics whose links and presence are shown.
    pub fn start(
        addr: SocketAddr,
        mode: &'static str,
        topics: Vec<(String, TopicId)>,
    ) -> Result<WebView, CliError> {
        let inner = Arc::new(Inner {
            mode,
            topics,
            nodes: Mutex::new(Vec::new()),
            snap: Mutex::new((0, Arc::new("{}".to_owned()))),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            started: Instant::now(),
        });
        // The first snapshot exists before anyone can ask.
        let mut graph = Graph::default();
        publish(&inner, &mut graph);
        let h = Arc::clone(&inner);
        let handler: http::Handler = Arc::new(move |path: &str| route(&h, path));
        let addr = http::serve(addr, "--web", handler)?;
        let s = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("starling-web".into())
            .spawn(move || sampler(&s, graph))
            .map_err(|e| CliError::other(format!("cannot start the --web sampler: {e}")))?;
        Ok(WebView { inner, addr })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shows `node` (under `label`) from now on. Call right after starting it: its own
    /// earlier neighbour events are missed, but links are drawn when either end reports
    /// them, and its peers' receivers already run.
    pub fn add_node(&self, label: impl Into<String>, node: Arc<Node>) {
        let events = node.events().ok();
        let id = node.id();
        lock(&self.inner.nodes).push(Local {
            label: label.into(),
            node,
            id,
            events,
        });
    }
}

impl Drop for WebView {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        self.inner.changed.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn route(inner: &Arc<Inner>, path: &str) -> Reply {
    match path.split('?').next().unwrap_or("") {
        "/" | "/index.html" => Reply::ok("text/html; charset=utf-8", PAGE),
        "/state.json" => Reply::ok(
            "application/json",
            format!("{}\n", lock(&inner.snap).1.as_str()),
        ),
        "/events" => {
            let inner = Arc::clone(inner);
            Reply::Stream {
                content_type: "text/event-stream",
                writer: Box::new(move |w| stream(&inner, w)),
            }
        }
        _ => Reply::not_found(),
    }
}

/// Writes every new snapshot as an SSE `data:` line until the client leaves or the view
/// stops.
fn stream(inner: &Inner, w: &mut dyn Write) -> std::io::Result<()> {
    // Tells EventSource how soon to reconnect if the stream drops.
    w.write_all(b"retry: 1000\n\n")?;
    let mut seen = 0u64;
    loop {
        let (version, body) = {
            let mut g = lock(&inner.snap);
            let deadline = Instant::now() + KEEPALIVE;
            while g.0 == seen && !inner.stop.load(Ordering::Relaxed) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                g = inner
                    .changed
                    .wait_timeout(g, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            (g.0, Arc::clone(&g.1))
        };
        if inner.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if version == seen {
            w.write_all(b": keepalive\n\n")?;
        } else {
            // The JSON is one line (serde_json's compact form), as `data:` needs.
            write!(w, "id: {version}\ndata: {body}\n\n")?;
            seen = version;
        }
        w.flush()?;
    }
}

/// Links as reported by the nodes of this process: (reporter, peer). A link is drawn
/// while either end reports it.
#[derive(Default)]
struct Graph {
    links: BTreeSet<(PeerId, PeerId)>,
    topic_links: BTreeMap<TopicId, BTreeSet<(PeerId, PeerId)>>,
    /// Local nodes that stopped (their reports were dropped).
    dead: BTreeSet<PeerId>,
    log: VecDeque<String>,
}

impl Graph {
    fn forget(&mut self, reporter: PeerId) {
        self.links.retain(|(r, _)| *r != reporter);
        for set in self.topic_links.values_mut() {
            set.retain(|(r, _)| *r != reporter);
        }
    }
}

/// Drains every node's events into `graph`; true if anything changed.
fn drain(inner: &Inner, graph: &mut Graph) -> bool {
    let mut changed = false;
    let mut nodes = lock(&inner.nodes);
    let labels: BTreeMap<PeerId, String> = nodes.iter().map(|l| (l.id, l.label.clone())).collect();
    let name = |p: &PeerId| labels.get(p).cloned().unwrap_or_else(|| p.short());
    let topic_name = |t: &TopicId| {
        inner
            .topics
            .iter()
            .find(|(_, id)| id == t)
            .map_or_else(|| t.short(), |(n, _)| n.clone())
    };
    let t = inner.started.elapsed().as_secs_f64();
    for local in nodes.iter_mut() {
        let Some(events) = &local.events else {
            continue;
        };
        let me = local.id;
        let mut closed = false;
        while !closed {
            let line = match events.try_recv() {
                Ok(NetEvent::NeighborUp(p)) => {
                    graph.links.insert((me, p));
                    format!("{} — {} link up", local.label, name(&p))
                }
                Ok(NetEvent::NeighborDown(p)) => {
                    graph.links.remove(&(me, p));
                    format!("{} — {} link down", local.label, name(&p))
                }
                Ok(NetEvent::TopicNeighborUp(topic, p)) => {
                    graph.topic_links.entry(topic).or_default().insert((me, p));
                    format!(
                        "{} — {} on {} up",
                        local.label,
                        name(&p),
                        topic_name(&topic)
                    )
                }
                Ok(NetEvent::TopicNeighborDown(topic, p)) => {
                    if let Some(s) = graph.topic_links.get_mut(&topic) {
                        s.remove(&(me, p));
                    }
                    format!(
                        "{} — {} on {} down",
                        local.label,
                        name(&p),
                        topic_name(&topic)
                    )
                }
                Ok(_) => continue,
                Err(starling_core::node::RecvError::Empty) => break,
                Err(starling_core::node::RecvError::Closed) => {
                    closed = true;
                    graph.dead.insert(me);
                    graph.forget(me);
                    format!("{} stopped", local.label)
                }
            };
            changed = true;
            graph.log.push_back(format!("{t:6.1}s  {line}"));
            if graph.log.len() > LOG_LEN {
                graph.log.pop_front();
            }
        }
        if closed {
            local.events = None;
        }
    }
    changed
}

fn sampler(inner: &Inner, mut graph: Graph) {
    let mut last = Instant::now();
    let mut pending = false;
    while !inner.stop.load(Ordering::Relaxed) {
        pending |= drain(inner, &mut graph);
        let many = lock(&inner.nodes).len() > MANY_NODES;
        let since = last.elapsed();
        if since >= TICK || (pending && !many && since >= MIN_GAP) {
            publish(inner, &mut graph);
            last = Instant::now();
            pending = false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds a snapshot and wakes the event streams.
fn publish(inner: &Inner, graph: &mut Graph) {
    let mut value = snapshot(inner, graph);
    let mut g = lock(&inner.snap);
    g.0 += 1;
    value["version"] = json!(g.0);
    g.1 = Arc::new(value.to_string());
    drop(g);
    inner.changed.notify_all();
}

fn pair(a: &PeerId, b: &PeerId) -> (PeerId, PeerId) {
    if a <= b {
        (*a, *b)
    } else {
        (*b, *a)
    }
}

fn snapshot(inner: &Inner, graph: &mut Graph) -> Value {
    let locals: Vec<(String, Arc<Node>, PeerId)> = lock(&inner.nodes)
        .iter()
        .map(|l| (l.label.clone(), Arc::clone(&l.node), l.id))
        .collect();
    let mut nodes: Vec<Value> = Vec::new();
    let mut seen: BTreeSet<PeerId> = BTreeSet::new();
    let mut totals = (0u64, 0u64);
    // Per topic: per node, its presence list (or count).
    let mut presence: Vec<serde_json::Map<String, Value>> =
        vec![serde_json::Map::new(); inner.topics.len()];
    let mut remote_meta: BTreeMap<PeerId, String> = BTreeMap::new();
    // Per topic: tree links reported by local nodes, eager ones and all (eager + lazy).
    let mut eager: Vec<BTreeSet<(PeerId, PeerId)>> = vec![BTreeSet::new(); inner.topics.len()];
    let mut tree: Vec<BTreeSet<(PeerId, PeerId)>> = vec![BTreeSet::new(); inner.topics.len()];
    for (i, (label, node, id)) in locals.iter().enumerate() {
        seen.insert(*id);
        let stats = if graph.dead.contains(id) {
            None
        } else {
            node.stats().ok()
        };
        if stats.is_none() && graph.dead.insert(*id) {
            graph.forget(*id);
        }
        let alive = stats.is_some();
        let s = stats.unwrap_or_default();
        totals.0 += s.published;
        totals.1 += s.delivered;
        nodes.push(json!({
            "id": id.short(), "label": label, "local": true, "alive": alive,
            "neighbors": s.neighbors, "peers": s.peers, "published": s.published,
            "delivered": s.delivered, "msgs_in": s.msgs_in, "msgs_out": s.msgs_out,
        }));
        if !alive {
            continue;
        }
        for (ti, (_, topic)) in inner.topics.iter().enumerate() {
            if let Ok((e, l)) = node.topic_tree(*topic) {
                eager[ti].extend(e.iter().map(|p| pair(id, p)));
                tree[ti].extend(e.iter().chain(&l).map(|p| pair(id, p)));
            }
            let Ok(entries) = node.online(*topic) else {
                continue;
            };
            let v = if i < MAX_LISTS {
                let list: Vec<Value> = entries
                    .iter()
                    .map(|e| {
                        let meta: String = String::from_utf8_lossy(&e.metadata)
                            .chars()
                            .take(META_CHARS)
                            .collect();
                        if !seen.contains(&e.peer) {
                            remote_meta.insert(e.peer, meta.clone());
                        }
                        json!({"peer": e.peer.short(), "meta": meta})
                    })
                    .collect();
                json!(list)
            } else {
                json!(entries.len())
            };
            presence[ti].insert(id.short(), v);
        }
    }
    let links: BTreeSet<(PeerId, PeerId)> = graph.links.iter().map(|(a, b)| pair(a, b)).collect();
    // Peers of other processes: anything linked to or listed online here.
    let mut remote: BTreeSet<PeerId> = links.iter().flat_map(|(a, b)| [*a, *b]).collect();
    remote.extend(remote_meta.keys().copied());
    for set in graph.topic_links.values() {
        remote.extend(set.iter().map(|(_, p)| *p));
    }
    for set in &tree {
        remote.extend(set.iter().flat_map(|(a, b)| [*a, *b]));
    }
    for p in remote.difference(&seen) {
        let label = remote_meta
            .get(p)
            .filter(|m| !m.is_empty())
            .cloned()
            .unwrap_or_else(|| p.short());
        nodes.push(json!({"id": p.short(), "label": label, "local": false, "alive": true}));
    }
    let edge = |(a, b): &(PeerId, PeerId)| json!([a.short(), b.short()]);
    let topics: Vec<Value> = inner
        .topics
        .iter()
        .zip(presence)
        .zip(eager.iter().zip(tree))
        .map(|(((name, id), online), (eager, tree))| {
            // Topic neighbours from events, plus the tree's (the two can briefly differ).
            let mut tl: BTreeSet<(PeerId, PeerId)> = graph
                .topic_links
                .get(id)
                .map(|s| s.iter().map(|(a, b)| pair(a, b)).collect())
                .unwrap_or_default();
            tl.extend(tree);
            json!({
                "name": name, "id": id.short(),
                "links": tl.iter().map(edge).collect::<Vec<_>>(),
                "eager": eager.iter().map(edge).collect::<Vec<_>>(),
                "online": online,
            })
        })
        .collect();
    json!({
        "mode": inner.mode,
        "uptime_s": (inner.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "eager_tree_exposed": true,
        "nodes": nodes,
        "links": links.iter().map(edge).collect::<Vec<_>>(),
        "topics": topics,
        "published": totals.0,
        "delivered": totals.1,
        "log": graph.log.iter().collect::<Vec<_>>(),
    })
}
