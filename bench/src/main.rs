//! Starling network benchmark: N real nodes over QUIC on loopback in one process.
//!
//! ```text
//! cargo run --release -p starling-bench -- --suite node [--nodes N] [--payload B]
//!     [--messages M] [--rate R] [--topics T] [--workload NAME]... [--json]
//! ```
//!
//! Workloads (one row each):
//! - `one_publisher`: N nodes on one topic; one node publishes M messages paced at
//!   `--rate` messages/s (default 20); latency from publish to delivery at every other
//!   node, delivery ratio, wire bytes. Every node verifies every message, so the rate is
//!   kept well below the verify capacity of the machine: this workload measures latency,
//!   not queueing behind a saturated CPU (that is the `throughput` workload's job).
//! - `many_publishers`: the same with every node publishing M/N messages (same total rate).
//! - `throughput`: 2 nodes, one publishes as fast as the API allows; delivered msgs/s at
//!   the subscriber, against this machine's single-core Ed25519 verify rate.
//! - `churn`: kill 10% of the N nodes abruptly; time until each neighbour of a killed node
//!   has a replacement neighbour, and until every survivor sees the killed offline.
//! - `idle`: N nodes each on T topics (default 10), idle after the overlays formed: RSS
//!   growth per node (and how much of it is live heap, per glibc), actor timer wake-ups
//!   and thread context switches per second. `STARLING_BENCH_SMAPS=FILE` copies
//!   /proc/self/smaps at the RSS reading; `STARLING_BENCH_EXIT_AFTER_RSS=1` exits there,
//!   for a heap profiler (`heaptrack`) to report what the idle nodes hold as "leaked".
//!
//! A figure that cannot be measured is printed as null, never guessed.
//!
//! `--suite faults` (loss, latency, partitions): see `faults.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use starling_core::identity::{Keypair, PeerId};
use starling_core::net::verify::FastVerify;
use starling_core::node::{Item, NetEvent, Node, PresenceChange, Subscription};
use starling_core::proto::Verify;
use starling_core::wire::{Broadcast, MessageId, SignedMessage, TopicId};

mod faults;
// The peer comparison (`--suite all|peers|quick`, feature `peers`): see peers.rs.
mod peers;
#[cfg(feature = "peers")]
mod physical;
#[cfg(feature = "peers")]
mod systems;
#[cfg(feature = "peers")]
mod workload;

struct Args {
    nodes: usize,
    payload: usize,
    messages: usize,
    /// Publish rate of the latency workloads, messages/s over all publishers.
    rate: f64,
    /// Topics per node of the idle workload.
    topics: usize,
    json: bool,
    /// Only these workloads (default: all).
    only: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: 50,
        payload: 256,
        messages: 200,
        rate: 20.0,
        topics: 10,
        json: false,
        only: Vec::new(),
    };
    let mut suite = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match a.as_str() {
            "--suite" => suite = it.next(),
            "--nodes" => args.nodes = num("--nodes")?.max(3),
            "--payload" => args.payload = num("--payload")?.max(8),
            "--messages" => args.messages = num("--messages")?.max(1),
            "--topics" => args.topics = num("--topics")?,
            "--rate" => {
                args.rate = it
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or("--rate needs a positive number (messages/s)")?
            }
            "--json" => args.json = true,
            "--workload" => args.only.push(it.next().ok_or("--workload needs a name")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match suite.as_deref() {
        Some("node") => Ok(args),
        other => Err(format!(
            "unknown suite {other:?}: node, or all/peers/quick (the peer comparison)"
        )),
    }
}

/// One process-wide clock so publish and delivery times compare directly.
fn micros(base: Instant) -> u64 {
    base.elapsed().as_micros() as u64
}

#[derive(Default)]
struct Record {
    /// (publish time, delivery time) in µs since the base.
    latencies: Vec<(u64, u64)>,
    /// Hop count of each delivery.
    hops: Vec<u32>,
    delivered: u64,
    /// When each peer was seen offline.
    offline: HashMap<PeerId, Instant>,
}

/// Drains a subscription on its own thread, recording deliveries and offline events.
fn consume(sub: Subscription, base: Instant, stop: Arc<AtomicBool>) -> Arc<Mutex<Record>> {
    let rec = Arc::new(Mutex::new(Record::default()));
    let r = Arc::clone(&rec);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match sub.recv_timeout(Duration::from_millis(50)) {
                Ok(Item::Message(m)) => {
                    let now = micros(base);
                    let sent = m
                        .payload
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes)
                        .unwrap_or(now);
                    let mut g = r.lock().unwrap();
                    g.delivered += 1;
                    g.latencies.push((sent, now));
                    g.hops.push(u32::from(m.hops));
                }
                Ok(Item::Presence(p)) => {
                    if let PresenceChange::Offline(_) = p.change {
                        r.lock().unwrap().offline.insert(p.peer, Instant::now());
                    }
                }
                Ok(Item::Lagged(_)) => {}
                Err(starling_core::node::RecvError::Closed) => return,
                Err(_) => {}
            }
        }
    });
    rec
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

fn key(i: usize) -> Keypair {
    let mut seed = [42u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Keypair::from_seed(seed)
}

fn start_nodes(n: usize, net: &str) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let mut b = Node::builder()
            .bind("127.0.0.1:0")
            .network_id(net)
            .identity(key(i))
            .worker_threads(1);
        if i > 0 {
            // A few contacts among the earlier nodes (deterministic spread).
            b = b.bootstrap(nodes[(i * 7) % i].contact());
        }
        nodes.push(b.start().expect("node starts"));
    }
    nodes
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn all_online(nodes: &[Node], topic: TopicId, limit: Duration) -> bool {
    wait_until(limit, || {
        nodes.iter().all(|n| {
            let seen = n.online(topic).map(|v| v.len()).unwrap_or(0);
            seen + 1 >= nodes.len()
        })
    })
}

fn total_bytes_out(nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .filter_map(|n| n.stats().ok())
        .map(|s| s.bytes_out)
        .sum()
}

/// Drops and refusals summed over all nodes, by reason.
fn total_drops(nodes: &[Node]) -> Value {
    let mut all: std::collections::BTreeMap<String, u64> = Default::default();
    for s in nodes.iter().filter_map(|n| n.stats().ok()) {
        for (k, v) in s.drops {
            *all.entry(k).or_default() += v;
        }
    }
    json!(all)
}

fn payload(base: Instant, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[..8].copy_from_slice(&micros(base).to_be_bytes());
    p
}

/// Single-core Ed25519 verifications per second of a broadcast like the ones sent: with
/// the checker the node runs, one at a time (`node`, the verify limit) and in batches of
/// 64 as the actor drains them under load (`batch`), and with the wire's reference check
/// (`wire`).
fn verify_rates(payload_len: usize) -> (f64, f64, f64) {
    let k = key(9999);
    let msgs: Vec<(MessageId, Broadcast)> = (0..64u64)
        .map(|seq| {
            let m = SignedMessage::new(
                &k,
                TopicId::from_name("v"),
                seq + 1,
                1,
                vec![0u8; payload_len].into(),
            );
            (m.id(), Broadcast::Message(m))
        })
        .collect();
    let (id, b) = &msgs[0];
    let mut fast = FastVerify::default();
    // Alternating short samples, best of each: on a shared machine the other programs'
    // load swings within a second, and the best sample is the closest to one free core.
    let rate = |f: &mut dyn FnMut() -> usize| {
        let t = Instant::now();
        let mut n = 0usize;
        while t.elapsed() < Duration::from_millis(250) {
            n += f();
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    let batched = |fast: &mut FastVerify| {
        let batch: Vec<_> = msgs.iter().map(|(id, b)| (*id, b)).collect();
        fast.verify_ahead(&batch);
        msgs.iter().filter(|(id, b)| fast.verify(id, b)).count()
    };
    let (mut node, mut batch, mut wire) = (0f64, 0f64, 0f64);
    for _ in 0..6 {
        node = node.max(rate(&mut || (0..50).filter(|_| fast.verify(id, b)).count()));
        batch = batch.max(rate(&mut || batched(&mut fast)));
        wire = wire.max(rate(&mut || {
            (0..50).filter(|_| b.verify(id).is_ok()).count()
        }));
    }
    (node, batch, wire)
}

fn emit(args: &Args, row: Value) {
    if args.json {
        println!("{row}");
    } else {
        let obj = row.as_object().cloned().unwrap_or_default();
        let line: Vec<String> = obj
            .iter()
            .map(|(k, v)| match v {
                Value::Number(n) if n.is_f64() => {
                    format!("{k}={:.3}", n.as_f64().unwrap_or(0.0))
                }
                other => format!("{k}={other}"),
            })
            .collect();
        println!("{}", line.join("  "));
    }
}

/// Latency / delivery workload: `publishers` publish `messages` in total, paced at
/// `args.rate` messages/s in total.
fn broadcast_workload(args: &Args, name: &str, publishers: usize, verify: f64) -> Value {
    let base = Instant::now();
    let topic = TopicId::from_name("bench");
    let nodes = start_nodes(args.nodes, &format!("bench-{name}"));
    let stop = Arc::new(AtomicBool::new(false));
    let mut recs = Vec::new();
    for n in &nodes {
        let sub = n.subscribe(topic).expect("subscribe");
        n.set_presence(topic, "b").expect("presence");
        recs.push(consume(sub, base, Arc::clone(&stop)));
    }
    let formed = all_online(&nodes, topic, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let bytes_before = total_bytes_out(&nodes);
    let per = (args.messages / publishers).max(1);
    let sent = per * publishers;
    // Paced on a fixed schedule (not sleep-after-send), one message per slot.
    let gap = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let mut slot = 0u32;
    for _ in 0..per {
        for p in 0..publishers {
            let at = start + gap * slot;
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            slot += 1;
            let idx = (p * nodes.len()) / publishers;
            let _ = nodes[idx].publish(topic, payload(base, args.payload));
        }
    }
    let expected = (sent * (nodes.len() - 1)) as u64;
    let delivered = || {
        recs.iter()
            .map(|r| r.lock().unwrap().delivered)
            .sum::<u64>()
    };
    wait_until(Duration::from_secs(20), || delivered() >= expected);
    let bytes = total_bytes_out(&nodes) - bytes_before;
    stop.store(true, Ordering::Relaxed);
    let got = delivered();
    // (latency ms, hops) of every delivery.
    let deliveries: Vec<(f64, u32)> = recs
        .iter()
        .flat_map(|r| {
            let g = r.lock().unwrap();
            g.latencies
                .iter()
                .zip(&g.hops)
                .map(|((s, d), h)| (d.saturating_sub(*s) as f64 / 1000.0, *h))
                .collect::<Vec<_>>()
        })
        .collect();
    let sorted = |v: Vec<f64>| {
        let mut v = v;
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let lat = sorted(deliveries.iter().map(|d| d.0).collect());
    let hops = sorted(deliveries.iter().map(|d| f64::from(d.1)).collect());
    // Median latency at each hop count: the slope is the cost of one hop.
    let mut by_hops: std::collections::BTreeMap<u32, Vec<f64>> = Default::default();
    for (l, h) in &deliveries {
        by_hops.entry(*h).or_default().push(*l);
    }
    let latency_by_hops: Vec<Value> = by_hops
        .into_iter()
        .map(|(h, l)| {
            let l = sorted(l);
            json!([h, l.len(), percentile(&l, 0.5)])
        })
        .collect();
    let drops = total_drops(&nodes);
    for n in &nodes {
        n.abort();
    }
    json!({
        "suite": "node", "workload": name, "nodes": args.nodes,
        "payload_bytes": args.payload, "messages": sent, "overlay_formed": formed,
        "rate_msgs_per_s": args.rate,
        // Signature checks per second the rate asks of the whole process (every other
        // node verifies every message), as a share of one core's verify rate.
        "verify_load_cores": args.rate * (args.nodes as f64 - 1.0) / verify,
        "delivery": got as f64 / expected as f64,
        "latency_p50_ms": percentile(&lat, 0.5), "latency_p99_ms": percentile(&lat, 0.99),
        "hops_p50": percentile(&hops, 0.5), "hops_max": percentile(&hops, 1.0),
        "latency_p50_ms_by_hops": latency_by_hops,
        "wire_bytes_per_delivery": if got > 0 { Some(bytes as f64 / got as f64) } else { None },
        "drops": drops,
    })
}

/// One publisher as fast as the API allows, one subscriber.
fn throughput_workload(args: &Args, verify: f64) -> Value {
    let base = Instant::now();
    let topic = TopicId::from_name("bench");
    let nodes = start_nodes(2, "bench-throughput");
    let stop = Arc::new(AtomicBool::new(false));
    let sub = nodes[1].subscribe(topic).expect("subscribe");
    nodes[1].set_presence(topic, "s").expect("presence");
    let rec = consume(sub, base, Arc::clone(&stop));
    nodes[0].set_presence(topic, "p").expect("presence");
    all_online(&nodes, topic, Duration::from_secs(30));
    wait_until(Duration::from_secs(10), || {
        nodes[0]
            .publish(topic, payload(base, args.payload))
            .map(|r| r.peers > 0)
            .unwrap_or(false)
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = rec.lock().unwrap().delivered;
    let count = 20_000u64;
    let t = Instant::now();
    let t_start = micros(base);
    for _ in 0..count {
        let _ = nodes[0].publish(topic, payload(base, args.payload));
    }
    let publish_rate = count as f64 / t.elapsed().as_secs_f64();
    wait_until(Duration::from_secs(20), || {
        rec.lock().unwrap().delivered >= before + count
    });
    let got = rec.lock().unwrap().delivered - before;
    let last = rec
        .lock()
        .unwrap()
        .latencies
        .last()
        .map(|(_, d)| *d)
        .unwrap_or(0);
    let elapsed = Duration::from_micros(last.saturating_sub(t_start));
    stop.store(true, Ordering::Relaxed);
    let rate = got as f64 / elapsed.as_secs_f64().max(1e-6);
    // Where anything was lost, by reason (publisher, subscriber): never silent.
    let drops: Vec<Value> = nodes
        .iter()
        .map(|n| n.stats().map(|s| json!(s.drops)).unwrap_or(Value::Null))
        .collect();
    for n in &nodes {
        n.abort();
    }
    json!({
        "suite": "node", "workload": "throughput", "nodes": 2,
        "payload_bytes": args.payload, "messages": count,
        "delivery": got as f64 / count as f64,
        "msgs_per_s": rate, "publish_calls_per_s": publish_rate,
        "verify_limit_msgs_per_s": verify, "fraction_of_verify_limit": rate / verify,
        "drops_publisher": drops.first(), "drops_subscriber": drops.get(1),
    })
}

/// Kill 10% of the nodes: neighbour replacement and offline detection.
fn churn_workload(args: &Args) -> Value {
    let base = Instant::now();
    let topic = TopicId::from_name("bench");
    let nodes = start_nodes(args.nodes, "bench-churn");
    let stop = Arc::new(AtomicBool::new(false));
    let mut recs = Vec::new();
    let mut events = Vec::new();
    for n in &nodes {
        events.push(n.events().expect("events"));
        let sub = n.subscribe(topic).expect("subscribe");
        n.set_presence(topic, "c").expect("presence");
        recs.push(consume(sub, base, Arc::clone(&stop)));
    }
    let formed = all_online(&nodes, topic, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    for e in &events {
        while e.try_recv().is_ok() {}
    }
    let kill: Vec<usize> = (0..nodes.len()).filter(|i| i % 10 == 5).collect();
    let killed: Vec<PeerId> = kill.iter().map(|&i| nodes[i].id()).collect();
    let t0 = Instant::now();
    for &i in &kill {
        nodes[i].abort();
    }
    // Neighbour replacement: per survivor that lost a neighbour, time to the next
    // NeighborUp after its (first) NeighborDown of a killed node.
    let deadline = t0 + Duration::from_secs(10);
    let mut replace = Vec::new();
    let mut down_at: HashMap<usize, Instant> = HashMap::new();
    // When each of those survivors dropped the killed neighbour (its own detection).
    let mut dropped = Vec::new();
    let mut done: Vec<bool> = vec![false; nodes.len()];
    while Instant::now() < deadline {
        let mut any = false;
        for (i, e) in events.iter().enumerate() {
            if kill.contains(&i) {
                continue;
            }
            while let Ok(ev) = e.try_recv() {
                any = true;
                match ev {
                    NetEvent::NeighborDown(p) if killed.contains(&p) => {
                        down_at.entry(i).or_insert_with(|| {
                            dropped.push(t0.elapsed().as_secs_f64() * 1000.0);
                            Instant::now()
                        });
                    }
                    NetEvent::NeighborUp(_) if !done[i] && down_at.contains_key(&i) => {
                        done[i] = true;
                        replace.push(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => {}
                }
            }
        }
        if !any {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let lost = down_at.len();
    // Offline detection: for each (survivor, killed) pair, when the survivor saw it.
    let survivors: Vec<usize> = (0..nodes.len()).filter(|i| !kill.contains(i)).collect();
    wait_until(Duration::from_secs(20), || {
        survivors.iter().all(|&i| {
            let g = recs[i].lock().unwrap();
            killed.iter().all(|p| g.offline.contains_key(p))
        })
    });
    let mut offline: Vec<f64> = Vec::new();
    let mut missing = 0;
    for &i in &survivors {
        let g = recs[i].lock().unwrap();
        for p in &killed {
            match g.offline.get(p) {
                Some(t) => offline.push(t.duration_since(t0).as_secs_f64() * 1000.0),
                None => missing += 1,
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    offline.sort_by(|a, b| a.total_cmp(b));
    replace.sort_by(|a, b| a.total_cmp(b));
    dropped.sort_by(|a, b| a.total_cmp(b));
    for n in &nodes {
        n.abort();
    }
    json!({
        "suite": "node", "workload": "churn", "nodes": args.nodes, "killed": kill.len(),
        "overlay_formed": formed,
        "neighbours_that_lost_one": lost, "replaced": replace.len(),
        "neighbour_replace_ms": percentile(&replace, 1.0),
        "neighbour_replace_p50_ms": percentile(&replace, 0.5),
        "neighbour_replace_p99_ms": percentile(&replace, 0.99),
        // Each survivor's own detection: when it dropped the killed neighbour.
        "neighbour_down_p50_ms": percentile(&dropped, 0.5),
        "neighbour_down_max_ms": percentile(&dropped, 1.0),
        "offline_detect_p50_ms": percentile(&offline, 0.5),
        "offline_detect_p99_ms": if missing == 0 { percentile(&offline, 0.99) } else { None },
        "offline_pairs_missing": missing,
    })
}

fn rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Where the process's malloc'd memory is, in KiB, from glibc's `mallinfo2` (all
/// arenas): [in use in the arenas, kept free in the arenas, large blocks mmapped on their
/// own (counted whole, though only touched pages are resident)].
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_kb() -> Option<[u64; 3]> {
    // SAFETY: plain libc call without arguments to uphold; it only reads allocator state.
    let m = unsafe { libc::mallinfo2() };
    Some([m.uordblks, m.fordblks, m.hblkhd].map(|b| (b / 1024) as u64))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_kb() -> Option<[u64; 3]> {
    None
}

/// Context switches (wake-ups) of the nodes' runtime threads.
fn node_thread_wakeups() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.starts_with("starling-node") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        for l in status.lines() {
            if l.starts_with("voluntary_ctxt_switches:") {
                total += l.split_whitespace().nth(1)?.parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}

fn idle_workload(args: &Args) -> Value {
    let rss_before = rss_kb();
    let heap_before = malloc_kb();
    let nodes = start_nodes(args.nodes, "bench-idle");
    let mut subs = Vec::new();
    for n in &nodes {
        for t in 0..args.topics {
            let topic = TopicId::from_name(&format!("idle-{t}"));
            subs.push(n.subscribe(topic).expect("subscribe"));
            let _ = n.set_presence(topic, "i");
        }
    }
    // An application reads its subscriptions (presence events arrive for every peer while
    // the overlays form): a reader thread drains them, as one would.
    let subs = Arc::new(subs);
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (subs, reading) = (Arc::clone(&subs), Arc::clone(&reading));
        std::thread::spawn(move || {
            while reading.load(Ordering::Relaxed) {
                for s in subs.iter() {
                    while s.try_recv().is_ok() {}
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Idle means after formation: every node sees every other online in every topic
    // (bounded wait, reported), then a few seconds for the last joins' follow-up walks.
    let formed = (0..args.topics).all(|t| {
        all_online(
            &nodes,
            TopicId::from_name(&format!("idle-{t}")),
            Duration::from_secs(60),
        )
    });
    std::thread::sleep(Duration::from_secs(5));
    let rss_after = rss_kb();
    let heap_after = malloc_kb();
    // Profiling aids (see docs/BENCHMARKS.md, RSS): a copy of the memory map at this
    // point, and an exit right here, so that a heap profiler's "leaked at exit" is exactly
    // what the idle nodes hold.
    if let Ok(path) = std::env::var("STARLING_BENCH_SMAPS") {
        if let Err(e) = std::fs::copy("/proc/self/smaps", &path) {
            eprintln!("STARLING_BENCH_SMAPS: cannot write {path}: {e}");
        }
    }
    if std::env::var_os("STARLING_BENCH_EXIT_AFTER_RSS").is_some() {
        eprintln!("idle: exiting after the RSS reading (STARLING_BENCH_EXIT_AFTER_RSS)");
        std::process::exit(0);
    }
    // Each node's counter is read with the time of its own reading, so slow stats calls
    // on a loaded machine do not skew the windows.
    let timers = || -> Vec<Option<(u64, Instant)>> {
        nodes
            .iter()
            .map(|n| n.stats().ok().map(|s| (s.timer_wakeups, Instant::now())))
            .collect()
    };
    let w0 = node_thread_wakeups();
    let c0 = Instant::now();
    let t0 = timers();
    // Two presence refresh periods (20 s each): a shorter window can fall between the
    // refresh rounds of nodes that started together and miss their work.
    let window = Duration::from_secs(40);
    std::thread::sleep(window);
    let w1 = node_thread_wakeups();
    let c1 = Instant::now();
    let t1 = timers();
    // Steady state: the same readings after the window, once formation-time contacts
    // have been closed (RSS keeps what the allocator retained; the live heap does not).
    let rss_steady = rss_kb();
    let heap_steady = malloc_kb();
    let n = nodes.len() as f64;
    let switches = match (w0, w1) {
        (Some(a), Some(b)) => Some((b - a) as f64 / n / (c1 - c0).as_secs_f64()),
        _ => None,
    };
    // Per-node rates (wake-ups over that node's own window), then their median and max.
    let mut rates: Vec<f64> = t0
        .iter()
        .zip(&t1)
        .filter_map(|(a, b)| match (a, b) {
            (Some((n0, i0)), Some((n1, i1))) => {
                Some(n1.saturating_sub(*n0) as f64 / (*i1 - *i0).as_secs_f64().max(1e-3))
            }
            _ => None,
        })
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    let wake = if rates.is_empty() {
        None
    } else {
        Some(rates.iter().sum::<f64>() / rates.len() as f64)
    };
    let growth = |after: Option<u64>| match (rss_before, after) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1024.0 / n),
        _ => None,
    };
    let (rss, rss_steady) = (growth(rss_after), growth(rss_steady));
    let heap_live_steady = match (heap_before, heap_steady) {
        (Some(a), Some(b)) => Some(b[0].saturating_sub(a[0]) as f64 / 1024.0 / n),
        _ => None,
    };
    // RSS growth split: live heap allocations vs memory the allocator keeps free (freed
    // after bursts, fragmentation); the rest of the RSS growth is thread stacks and
    // other non-malloc pages.
    let heap: Vec<Option<f64>> = (0..3)
        .map(|i| match (heap_before, heap_after) {
            (Some(a), Some(b)) => Some(b[i].saturating_sub(a[i]) as f64 / 1024.0 / n),
            _ => None,
        })
        .collect();
    let stats: Vec<_> = nodes.iter().filter_map(|n| n.stats().ok()).collect();
    let per_node = |f: &dyn Fn(&starling_core::node::Stats) -> usize| {
        stats.iter().map(|s| f(s) as f64).sum::<f64>() / stats.len().max(1) as f64
    };
    let connections = per_node(&|s| s.peers);
    // Distinct peers the node's topic overlays hold as neighbours (each needs a
    // connection; the rest of `connections` are other recent contacts).
    let topic_neighbours = nodes
        .iter()
        .map(|node| {
            let mut peers = std::collections::BTreeSet::new();
            for t in 0..args.topics {
                let topic = TopicId::from_name(&format!("idle-{t}"));
                if let Ok((eager, lazy)) = node.topic_tree(topic) {
                    peers.extend(eager);
                    peers.extend(lazy);
                }
            }
            peers.len() as f64
        })
        .sum::<f64>()
        / n;
    let neighbours = per_node(&|s| s.neighbors);
    reading.store(false, Ordering::Relaxed);
    let _ = reader.join();
    drop(subs);
    for n in &nodes {
        n.abort();
    }
    json!({
        "suite": "node", "workload": "idle",
        "connections_per_node": connections, "neighbours_per_node": neighbours,
        "distinct_topic_neighbours_per_node": topic_neighbours, "nodes": args.nodes, "topics_per_node": args.topics,
        "overlay_formed": formed,
        "rss_per_node_mb": rss, "heap_live_per_node_mb": heap[0],
        "heap_free_per_node_mb": heap[1], "heap_mmapped_per_node_mb": heap[2],
        "rss_steady_per_node_mb": rss_steady, "heap_live_steady_per_node_mb": heap_live_steady,
        "idle_wakeups_per_s": wake,
        "idle_wakeups_per_s_p50": percentile(&rates, 0.5),
        "idle_wakeups_per_s_max": percentile(&rates, 1.0),
        "context_switches_per_s": switches,
        "note": "idle_wakeups_per_s: actor timer wake-ups (protocol deadlines + housekeeping) per node per s over a 40 s window (two presence refresh periods; mean over nodes; p50 and max also given), from Stats::timer_wakeups; context_switches_per_s: voluntary context switches of the node runtime threads per node per s (also packets: SWIM, keep-alives, presence refresh, and the stats calls of this measurement); rss_per_node_mb: process RSS growth from before the nodes start to after formation, / nodes (a reader thread drains every subscription meanwhile, as an application would); rss_steady/heap_live_steady_per_node_mb: the same after the 40 s window; heap_live/heap_free/heap_mmapped_per_node_mb: growth over the first span of malloc'd bytes in use in the arenas / kept free in the arenas / in large blocks mmapped on their own (counted whole, resident only where touched), glibc mallinfo2, / nodes; distinct_topic_neighbours_per_node: distinct peers that the topic overlays hold as neighbours (connections_per_node also counts other recent contacts: join walks, refills and discovery replies dial peers that do not become neighbours)",
    })
}

fn main() {
    // `--suite faults` (fault injection) parses its own arguments: bench/src/faults.rs.
    if let Some(code) = faults::main_if_selected() {
        std::process::exit(code);
    }
    if let Some(code) = peers::dispatch() {
        std::process::exit(code);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\nusage: starling-bench --suite node [--nodes N] [--payload BYTES] [--messages M] [--rate MSGS_PER_S] [--topics T] [--workload one_publisher|many_publishers|throughput|churn|idle]... [--json]");
            std::process::exit(2);
        }
    };
    let run = |w: &str| args.only.is_empty() || args.only.iter().any(|o| o == w);
    let (verify, batch_verify, wire_verify) = verify_rates(args.payload);
    emit(
        &args,
        json!({"suite": "node", "workload": "verify", "verify_limit_msgs_per_s": verify,
               "batch_verify_msgs_per_s": batch_verify,
               "wire_verify_msgs_per_s": wire_verify,
               "note": "single core, best of 6 alternating 250 ms samples; verify_limit is the node's checker one message at a time (net::verify::FastVerify, key cache); batch is the same checker given 64 messages at once (verify_ahead, as the actor does under load); wire is Broadcast::verify (key decoded per call)"}),
    );
    if run("one_publisher") {
        emit(&args, broadcast_workload(&args, "one_publisher", 1, verify));
    }
    if run("many_publishers") {
        emit(
            &args,
            broadcast_workload(&args, "many_publishers", args.nodes, verify),
        );
    }
    if run("throughput") {
        emit(&args, throughput_workload(&args, verify));
    }
    if run("churn") {
        emit(&args, churn_workload(&args));
    }
    if run("idle") {
        emit(&args, idle_workload(&args));
    }
}
