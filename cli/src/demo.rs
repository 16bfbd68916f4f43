//! `starling demo`: N nodes on loopback in this process. They subscribe to every topic,
//! announce presence, publish on a schedule; a fraction is killed midway (as if crashed,
//! with [`Node::abort`]); the run ends with a summary of deliveries, latency, and how fast
//! and how correctly presence noticed the crashes.

use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;
use starling_core::identity::PeerId;
use starling_core::net::TransportOptions;
use starling_core::node::{Item, Node, PresenceChange, Subscription};
use starling_core::wire::TopicId;

use crate::common::{self, CliError, CliResult};
use crate::http;
use crate::web::WebView;

/// `starling demo`.
#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Progress is a refreshing table on a terminal and plain lines \
otherwise (on stderr with --json, whose summary is the only thing on stdout).\n\n\
Examples:\n  starling demo\n  starling demo --nodes 50 --kill 0.3 --json\n  \
starling demo --nodes 12 --duration 120 --web 127.0.0.1:8080"
)]
pub struct DemoArgs {
    /// Nodes to run (2 to 500).
    #[arg(long, short = 'n', value_name = "N", default_value_t = 20)]
    pub nodes: usize,
    /// Topics; every node subscribes to all of them and publishes round-robin.
    #[arg(long, value_name = "K", default_value_t = 3)]
    pub topics: usize,
    /// Seconds of publishing (the kill happens halfway), after the overlay formed.
    #[arg(long, short = 'd', value_name = "S", default_value_t = 20.0)]
    pub duration: f64,
    /// Fraction of the nodes to kill halfway (0 to 0.9).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.25)]
    pub kill: f64,
    /// Messages published per second, all publishers together.
    #[arg(long, value_name = "R", default_value_t = 10.0)]
    pub rate: f64,
    /// Presence TTL of the demo nodes in seconds (a crash not seen by a failure detector
    /// is noticed by expiry at the latest).
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub presence_ttl: f64,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seed of the demo's random choices (which nodes are killed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Serve a live view of the overlay at http://ADDR/ (e.g. 127.0.0.1:8080; port 0:
    /// any free port). The URL is printed on stderr.
    #[arg(long, value_name = "ADDR")]
    pub web: Option<String>,
}

/// How long the overlay may take to form before publishing starts anyway.
const FORM_LIMIT: Duration = Duration::from_secs(60);
/// How long after the publishing window the demo waits for stragglers.
const DRAIN_LIMIT: Duration = Duration::from_secs(12);
/// Publishers that will be killed publish only before this fraction of the window, so
/// every message has a live author while it spreads.
const DOOMED_PUBLISH_UNTIL: f64 = 0.4;

/// One published message.
struct Msg {
    publisher: usize,
    at: Instant,
    /// The publish call succeeded.
    ok: bool,
}

/// What the collector thread records.
#[derive(Default)]
struct Record {
    msgs: Vec<Msg>,
    /// First delivery of (message, node).
    delivered: HashMap<(usize, usize), Instant>,
    /// Per message: its last first-delivery anywhere (the end of its flight).
    last_delivery: HashMap<usize, Instant>,
    duplicates: u64,
    /// First time (watcher, topic) saw a peer go offline.
    offline: HashMap<(usize, usize, usize), Instant>,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

fn round2(x: Option<f64>) -> Option<f64> {
    x.map(|v| (v * 100.0).round() / 100.0)
}

/// Delivery accounting: a receiver is expected to get a message when it subscribes to
/// the topic, is not the author, and was alive for the whole time the message was in
/// flight (from its publication to its last delivery anywhere).
struct Tally {
    published: usize,
    expected: u64,
    delivered: u64,
    latencies: Vec<f64>,
}

fn tally(rec: &Record, n: usize, killed_at: &[Option<Instant>]) -> Tally {
    let mut t = Tally {
        published: 0,
        expected: 0,
        delivered: 0,
        latencies: Vec::new(),
    };
    for (m, msg) in rec.msgs.iter().enumerate() {
        if !msg.ok {
            continue;
        }
        t.published += 1;
        let end = rec.last_delivery.get(&m).copied().unwrap_or(msg.at);
        for (j, killed) in killed_at.iter().enumerate().take(n) {
            if j == msg.publisher || killed.is_some_and(|k| k <= end) {
                continue;
            }
            t.expected += 1;
            if let Some(d) = rec.delivered.get(&(m, j)) {
                t.delivered += 1;
                t.latencies
                    .push(d.saturating_duration_since(msg.at).as_secs_f64() * 1000.0);
            }
        }
    }
    t.latencies.sort_by(|a, b| a.total_cmp(b));
    t
}

/// Where progress goes: stdout, or stderr when stdout carries the JSON summary.
struct Progress {
    out: Box<dyn Write>,
    tty: bool,
    /// Lines drawn last time (to redraw in place on a terminal).
    drawn: usize,
}

impl Progress {
    fn new(json: bool) -> Progress {
        let (out, tty): (Box<dyn Write>, bool) = if json {
            (Box::new(std::io::stderr()), std::io::stderr().is_terminal())
        } else {
            (Box::new(std::io::stdout()), std::io::stdout().is_terminal())
        };
        Progress { out, tty, drawn: 0 }
    }
    /// A line on a pipe; a redraw of the table on a terminal.
    fn show(&mut self, line: &str, table: &[String]) {
        if self.tty {
            if self.drawn > 0 {
                let _ = write!(self.out, "\x1b[{}A\x1b[J", self.drawn);
            }
            for l in table {
                let _ = writeln!(self.out, "{l}");
            }
            self.drawn = table.len();
        } else {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }
    /// A line that stays (not redrawn over).
    fn note(&mut self, line: &str) {
        self.drawn = 0;
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> CliResult {
    common::init_logging("warn");
    let stop = common::stop_flag()?;
    let n = args.nodes;
    if !(2..=500).contains(&n) {
        return Err(CliError::usage(format!(
            "--nodes must be 2 to 500 (got {n})"
        )));
    }
    if !(1..=64).contains(&args.topics) {
        return Err(CliError::usage(format!(
            "--topics must be 1 to 64 (got {})",
            args.topics
        )));
    }
    if !(0.0..=0.9).contains(&args.kill) {
        return Err(CliError::usage(format!(
            "--kill must be a fraction from 0 to 0.9 (got {})",
            args.kill
        )));
    }
    let duration = common::secs(args.duration, "--duration")?;
    let interval = Duration::from_secs_f64(1.0 / common::secs(args.rate, "--rate")?.as_secs_f64());
    let ttl = common::secs(args.presence_ttl, "--presence-ttl")?;
    if ttl < Duration::from_secs(1) {
        return Err(CliError::usage("--presence-ttl must be at least 1 s"));
    }
    let web_addr = match &args.web {
        Some(a) => Some(http::parse_addr(a, "--web")?),
        None => None,
    };
    let wall = Instant::now();
    let mut progress = Progress::new(args.json);
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let topic_names: Vec<String> = (0..args.topics).map(|t| format!("demo-{t}")).collect();
    let topics: Vec<TopicId> = topic_names.iter().map(|t| TopicId::from_name(t)).collect();
    let network = format!("starling-demo-{:016x}", rand::random::<u64>());
    let web = match web_addr {
        Some(addr) => {
            let named = topic_names.iter().cloned().zip(topics.iter().copied());
            let view = WebView::start(addr, "demo", named.collect())?;
            // On stderr in every mode, so a script can read it whatever stdout carries.
            eprintln!("web view at http://{}/", view.addr());
            Some(view)
        }
        None => None,
    };

    // Start: each node bootstraps from an earlier one (a deterministic spread).
    progress.note(&format!(
        "starting {n} nodes on 127.0.0.1, {} topics, seed {seed}",
        args.topics
    ));
    let mut nodes: Vec<Arc<Node>> = Vec::with_capacity(n);
    for i in 0..n {
        let mut b = Node::builder()
            .bind("127.0.0.1:0")
            .network_id(network.clone())
            .worker_threads(1)
            .presence_ttl(ttl)
            .transport(TransportOptions {
                dial_timeout: Duration::from_secs(2),
                ..TransportOptions::default()
            });
        if i > 0 {
            b = b.bootstrap(nodes[(i * 7) % i].contact());
        }
        let node = Arc::new(b.start()?);
        if let Some(view) = &web {
            view.add_node(format!("node-{i}"), Arc::clone(&node));
        }
        nodes.push(node);
    }
    let index: HashMap<PeerId, usize> =
        nodes.iter().enumerate().map(|(i, n)| (n.id(), i)).collect();
    let mut subs: Vec<(usize, usize, Subscription)> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for (t, topic) in topics.iter().enumerate() {
            subs.push((i, t, node.subscribe(*topic)?));
            node.set_presence(*topic, format!("node-{i}").into_bytes())?;
        }
    }

    let rec = Arc::new(Mutex::new(Record::default()));
    let done = Arc::new(AtomicBool::new(false));
    let collector = {
        let rec = Arc::clone(&rec);
        let done = Arc::clone(&done);
        std::thread::Builder::new()
            .name("demo-collector".into())
            .spawn(move || collect(subs, index, rec, done))
            .map_err(|e| CliError::other(format!("cannot start a thread: {e}")))?
    };
    let lock = || rec.lock().unwrap_or_else(|e| e.into_inner());

    // Wait for the overlay: every node sees every other online on every topic.
    let form_start = Instant::now();
    let mut formed = false;
    while form_start.elapsed() < FORM_LIMIT && !common::stopped(&stop) {
        let complete = views_complete(&nodes, &topics, &vec![None; n], false);
        let total = n * topics.len();
        if complete == total {
            formed = true;
            break;
        }
        progress.show(
            &format!(
                "forming overlay: {complete}/{total} presence views complete ({:.1}s)",
                form_start.elapsed().as_secs_f64()
            ),
            &[format!(
                "forming overlay: {complete}/{total} presence views complete ({:.1}s)",
                form_start.elapsed().as_secs_f64()
            )],
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let formed_s = form_start.elapsed().as_secs_f64();
    progress.note(&format!(
        "overlay {} after {formed_s:.1}s; publishing for {:.0}s at {}/s, killing {:.0}% halfway",
        if formed { "formed" } else { "NOT fully formed" },
        duration.as_secs_f64(),
        args.rate,
        args.kill * 100.0
    ));

    // Which nodes die halfway.
    let n_kill = ((n as f64) * args.kill).floor() as usize;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let doomed: BTreeSet<usize> = order.into_iter().take(n_kill).collect();
    let mut killed_at: Vec<Option<Instant>> = vec![None; n];

    let t0 = Instant::now();
    let kill_time = t0 + duration / 2;
    let mut next_pub = t0;
    let mut next_show = t0;
    let mut msg_no = 0usize;
    let mut publisher_cursor = 0usize;
    while t0.elapsed() < duration && !common::stopped(&stop) {
        let now = Instant::now();
        if n_kill > 0 && killed_at.iter().all(Option::is_none) && now >= kill_time {
            for &k in &doomed {
                nodes[k].abort();
                killed_at[k] = Some(Instant::now());
            }
            progress.note(&format!(
                "t={:.1}s: killed {n_kill} nodes (no goodbye: peers must detect it)",
                t0.elapsed().as_secs_f64()
            ));
        }
        if now >= next_pub {
            next_pub += interval;
            let frac = t0.elapsed().as_secs_f64() / duration.as_secs_f64();
            // Next eligible publisher, round-robin.
            let mut p = None;
            for _ in 0..n {
                publisher_cursor = (publisher_cursor + 1) % n;
                let doomed_p = doomed.contains(&publisher_cursor);
                if !doomed_p || frac < DOOMED_PUBLISH_UNTIL {
                    p = Some(publisher_cursor);
                    break;
                }
            }
            if let Some(p) = p {
                let topic = msg_no % topics.len();
                let idx = {
                    let mut r = lock();
                    r.msgs.push(Msg {
                        publisher: p,
                        at: Instant::now(),
                        ok: true,
                    });
                    r.msgs.len() - 1
                };
                msg_no += 1;
                let payload = format!("demo {idx} from node-{p}");
                if nodes[p]
                    .publish(topics[topic], payload.into_bytes())
                    .is_err()
                {
                    lock().msgs[idx].ok = false;
                }
            }
        }
        if now >= next_show {
            next_show += if progress.tty {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(1)
            };
            let (line, table) = status(
                &nodes,
                &topic_names,
                &topics,
                &rec,
                &killed_at,
                t0.elapsed(),
                duration,
            );
            progress.show(&line, &table);
        }
        let wake = next_pub
            .min(next_show)
            .min(if killed_at.iter().all(Option::is_none) {
                kill_time
            } else {
                next_show
            });
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }

    // Drain: wait for stragglers, crash detection and presence to settle.
    let drain_start = Instant::now();
    let survivors: Vec<usize> = (0..n).filter(|i| killed_at[*i].is_none()).collect();
    let killed: Vec<usize> = (0..n).filter(|i| killed_at[*i].is_some()).collect();
    let mut presence_ok = false;
    // STARLING_DEMO_DEBUG=1: say what the drain is waiting for.
    let dbg = std::env::var_os("STARLING_DEMO_DEBUG").is_some();
    while drain_start.elapsed() < DRAIN_LIMIT && !common::stopped(&stop) {
        let all_delivered = {
            let r = lock();
            let t = tally(&r, n, &killed_at);
            t.delivered == t.expected
        };
        let all_detected = {
            let r = lock();
            survivors.iter().all(|&s| {
                killed
                    .iter()
                    .all(|&k| (0..topics.len()).all(|t| r.offline.contains_key(&(s, t, k))))
            })
        };
        presence_ok =
            views_complete(&nodes, &topics, &killed_at, dbg) == survivors.len() * topics.len();
        if all_delivered && all_detected && presence_ok {
            break;
        }
        if dbg {
            eprintln!("{:?} drain: delivered {all_delivered} detected {all_detected} presence {presence_ok}", wall.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    done.store(true, Ordering::Relaxed);
    let _ = collector.join();

    let r = lock();
    let t = tally(&r, n, &killed_at);
    let mut detect: Vec<f64> = Vec::new();
    let mut missing_detect = 0u64;
    for &s in &survivors {
        for &k in &killed {
            for topic in 0..topics.len() {
                match (r.offline.get(&(s, topic, k)), killed_at[k]) {
                    (Some(seen), Some(at)) => {
                        detect.push(seen.saturating_duration_since(at).as_secs_f64() * 1000.0)
                    }
                    _ => missing_detect += 1,
                }
            }
        }
    }
    detect.sort_by(|a, b| a.total_cmp(b));
    let neighbors: Vec<usize> = survivors
        .iter()
        .filter_map(|&i| nodes[i].stats().ok().map(|s| s.neighbors))
        .collect();
    let avg_neighbors = neighbors.iter().sum::<usize>() as f64 / neighbors.len().max(1) as f64;
    // Offline verdicts about nodes that were never killed.
    let false_offline = r
        .offline
        .keys()
        .filter(|k| killed_at[k.2].is_none())
        .count();
    let presence_correct = presence_ok && missing_detect == 0 && false_offline == 0;
    let summary = json!({
        "nodes": n,
        "topics": topics.len(),
        "duration_s": duration.as_secs_f64(),
        "overlay_formed": formed,
        "overlay_formed_s": (formed_s * 100.0).round() / 100.0,
        "published": t.published,
        "expected_deliveries": t.expected,
        "delivered": t.delivered,
        "duplicates": r.duplicates,
        "latency_p50_ms": round2(percentile(&t.latencies, 0.5)),
        "latency_p99_ms": round2(percentile(&t.latencies, 0.99)),
        "killed": killed.len(),
        "offline_detected_p50_ms": round2(percentile(&detect, 0.5)),
        "offline_detected_p99_ms": if missing_detect == 0 { round2(percentile(&detect, 0.99)) } else { None },
        "offline_detections_missing": missing_detect,
        "false_offline": false_offline,
        "presence_correct": presence_correct,
        "avg_neighbors": (avg_neighbors * 100.0).round() / 100.0,
        "seed": seed,
        "wall_s": (wall.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    });
    drop(r);
    for node in &nodes {
        node.abort();
    }
    if args.json {
        println!("{summary}");
    } else {
        let f = |k: &str| summary.get(k).cloned().unwrap_or_default();
        let ms = |k: &str| match summary.get(k).and_then(|v| v.as_f64()) {
            Some(v) => format!("{v:.1} ms"),
            None => "n/a".to_owned(),
        };
        println!("\nsummary");
        println!(
            "  nodes           {} ({} killed halfway)",
            f("nodes"),
            f("killed")
        );
        println!(
            "  messages        {} published, {}/{} delivered, {} duplicates",
            f("published"),
            f("delivered"),
            f("expected_deliveries"),
            f("duplicates")
        );
        println!(
            "  latency         p50 {}, p99 {}",
            ms("latency_p50_ms"),
            ms("latency_p99_ms")
        );
        println!(
            "  crash detection p50 {}, p99 {} ({} missing)",
            ms("offline_detected_p50_ms"),
            ms("offline_detected_p99_ms"),
            missing_detect
        );
        println!(
            "  presence        {}",
            if presence_correct { "correct" } else { "WRONG" }
        );
        println!("  wall            {:.1} s", wall.elapsed().as_secs_f64());
    }
    if common::stopped(&stop) {
        return Err(CliError::other("interrupted"));
    }
    Ok(())
}

/// The collector: drains every subscription, recording deliveries and offline events.
fn collect(
    subs: Vec<(usize, usize, Subscription)>,
    index: HashMap<PeerId, usize>,
    rec: Arc<Mutex<Record>>,
    done: Arc<AtomicBool>,
) {
    while !done.load(Ordering::Relaxed) {
        let mut any = false;
        for (node, topic, sub) in &subs {
            while let Ok(item) = sub.try_recv() {
                any = true;
                let now = Instant::now();
                let mut r = rec.lock().unwrap_or_else(|e| e.into_inner());
                match item {
                    Item::Message(m) => {
                        let idx = std::str::from_utf8(&m.payload)
                            .ok()
                            .and_then(|s| s.split_whitespace().nth(1))
                            .and_then(|s| s.parse::<usize>().ok());
                        let Some(idx) = idx else { continue };
                        match r.delivered.entry((idx, *node)) {
                            std::collections::hash_map::Entry::Occupied(_) => r.duplicates += 1,
                            std::collections::hash_map::Entry::Vacant(v) => {
                                v.insert(now);
                                r.last_delivery.insert(idx, now);
                            }
                        }
                    }
                    Item::Presence(p) => {
                        if let (PresenceChange::Offline(_), Some(&peer)) =
                            (p.change, index.get(&p.peer))
                        {
                            r.offline.entry((*node, *topic, peer)).or_insert(now);
                        }
                    }
                    Item::Lagged(_) => {}
                }
            }
        }
        if !any {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// How many (live node, topic) presence views are exactly right: every other live node
/// online with its metadata, nobody else.
fn views_complete(
    nodes: &[Arc<Node>],
    topics: &[TopicId],
    killed_at: &[Option<Instant>],
    verbose: bool,
) -> usize {
    let live: BTreeSet<PeerId> = nodes
        .iter()
        .zip(killed_at)
        .filter(|(_, k)| k.is_none())
        .map(|(n, _)| n.id())
        .collect();
    let mut ok = 0;
    for (i, node) in nodes.iter().enumerate() {
        if killed_at[i].is_some() {
            continue;
        }
        for topic in topics {
            let Ok(entries) = node.online(*topic) else {
                continue;
            };
            let seen: BTreeSet<PeerId> = entries
                .iter()
                .filter(|e| e.peer != node.id())
                .map(|e| e.peer)
                .collect();
            let want: BTreeSet<PeerId> = live.iter().copied().filter(|p| *p != node.id()).collect();
            if seen == want {
                ok += 1;
            } else if verbose {
                let name = |p: &PeerId| p.short();
                eprintln!(
                    "view of {} on {}: missing {:?} extra {:?}",
                    node.id().short(),
                    topic.short(),
                    want.difference(&seen).map(name).collect::<Vec<_>>(),
                    seen.difference(&want).map(name).collect::<Vec<_>>()
                );
            }
        }
    }
    ok
}

/// One progress line, and the table for a terminal.
fn status(
    nodes: &[Arc<Node>],
    names: &[String],
    topics: &[TopicId],
    rec: &Mutex<Record>,
    killed_at: &[Option<Instant>],
    elapsed: Duration,
    duration: Duration,
) -> (String, Vec<String>) {
    let n = nodes.len();
    let alive = killed_at.iter().filter(|k| k.is_none()).count();
    let (t, dups) = {
        let r = rec.lock().unwrap_or_else(|e| e.into_inner());
        (tally(&r, n, killed_at), r.duplicates)
    };
    let ms = |p: f64| percentile(&t.latencies, p).map_or("-".to_owned(), |v| format!("{v:.1}ms"));
    let mut neighbors: Vec<usize> = Vec::new();
    let mut online: Vec<Vec<usize>> = vec![Vec::new(); topics.len()];
    for (i, node) in nodes.iter().enumerate() {
        if killed_at[i].is_some() {
            continue;
        }
        if let Ok(s) = node.stats() {
            neighbors.push(s.neighbors);
        }
        for (ti, topic) in topics.iter().enumerate() {
            if let Ok(e) = node.online(*topic) {
                // Counting this node itself as online.
                online[ti].push(e.iter().filter(|e| e.peer != node.id()).count() + 1);
            }
        }
    }
    let avg = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
    let minmax = |v: &[usize]| {
        (
            v.iter().copied().min().unwrap_or(0),
            v.iter().copied().max().unwrap_or(0),
        )
    };
    let pct = if t.expected == 0 {
        100.0
    } else {
        t.delivered as f64 * 100.0 / t.expected as f64
    };
    let (nmin, nmax) = minmax(&neighbors);
    let online_all: Vec<usize> = online.iter().flatten().copied().collect();
    let (omin, omax) = minmax(&online_all);
    let line = format!(
        "t={:.1}s alive {alive}/{n} published {} delivered {}/{} ({pct:.2}%) dup {dups} \
         latency p50 {} p99 {} neighbours avg {:.1} online min {omin} max {omax}",
        elapsed.as_secs_f64(),
        t.published,
        t.delivered,
        t.expected,
        ms(0.5),
        ms(0.99),
        avg(&neighbors),
    );
    let mut table = vec![
        format!(
            "starling demo   t={:>5.1}s / {:.0}s   nodes {n}   alive {alive}   killed {}",
            elapsed.as_secs_f64(),
            duration.as_secs_f64(),
            n - alive
        ),
        format!(
            "messages  published {:>6}   delivered {:>8}/{:<8} ({pct:6.2}%)   duplicates {dups}",
            t.published, t.delivered, t.expected
        ),
        format!("latency   p50 {:>9}   p99 {:>9}", ms(0.5), ms(0.99)),
        format!(
            "neighbours  avg {:.1}  min {nmin}  max {nmax}",
            avg(&neighbors)
        ),
        format!("{:<12} {:>8} {:>8} {:>8}", "topic", "online", "min", "max"),
    ];
    for (ti, name) in names.iter().enumerate() {
        let (lo, hi) = minmax(&online[ti]);
        table.push(format!(
            "{:<12} {:>8.1} {:>8} {:>8}",
            name,
            avg(&online[ti]),
            lo,
            hi
        ));
    }
    (line, table)
}
