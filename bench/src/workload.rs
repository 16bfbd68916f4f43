//! The common workload description and its measurement, run identically against every
//! [`System`]. Figures that cannot be measured are `null`, never guessed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::systems::{payload, Cluster, Delivery, Sink, System};
use crate::{percentile, wait_until};

/// Set once the process runs in its own network namespace: loopback counters are then
/// this process's traffic only.
pub static PRIVATE_NET: AtomicBool = AtomicBool::new(false);

/// One workload, as run against every system.
#[derive(Clone, Debug)]
pub enum Workload {
    /// One publisher (node 0) sends `messages` paced by `interval` to `nodes - 1`
    /// subscribers: latency percentiles, delivery ratio, wire bytes, CPU, RSS.
    Broadcast {
        /// Nodes in the overlay.
        nodes: usize,
        /// Payload bytes (header included).
        payload: usize,
        /// Messages published.
        messages: usize,
        /// Gap between two publishes.
        interval: Duration,
    },
    /// `publishers` nodes publish 256-byte messages as fast as the system accepts them
    /// for `duration`: delivered msgs/s per subscriber.
    Throughput {
        /// Nodes in the overlay.
        nodes: usize,
        /// Publishing nodes.
        publishers: usize,
        /// Publishing time.
        duration: Duration,
    },
    /// A steady stream (50 msg/s from node 0); 30% of the nodes killed abruptly after
    /// 2 s; delivery among survivors and time until every message reaches every survivor.
    Churn {
        /// Nodes in the overlay.
        nodes: usize,
        /// Streaming time after the kill.
        after: Duration,
    },
    /// A steady stream (20 msg/s); a new node joins through one live node: time to its
    /// first message (and for starling, to see every member in the online set).
    Join {
        /// Nodes before the join.
        nodes: usize,
    },
}

impl Workload {
    /// Short name for tables and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Broadcast { .. } => "broadcast",
            Workload::Throughput { .. } => "throughput",
            Workload::Churn { .. } => "churn",
            Workload::Join { .. } => "join",
        }
    }
}

/// Shared state of one benchmark run.
pub struct Env {
    /// The clock every timestamp counts from.
    pub base: Instant,
    /// The next unique message number.
    next: AtomicU64,
    /// Seed for keys and bootstrap choices.
    pub seed: u64,
}

impl Env {
    /// A fresh run.
    pub fn new(seed: u64) -> Self {
        Self {
            base: Instant::now(),
            next: AtomicU64::new(1),
            seed,
        }
    }

    fn msg(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }
}

/// Process counters sampled around a measurement.
#[derive(Clone, Copy)]
struct Sample {
    wire: Option<u64>,
    cpu_us: Option<u64>,
}

fn sample() -> Sample {
    Sample {
        wire: lo_tx_bytes(),
        cpu_us: cpu_us(),
    }
}

/// Bytes sent on loopback (IP + UDP headers included), only in a private namespace.
fn lo_tx_bytes() -> Option<u64> {
    if !PRIVATE_NET.load(Ordering::Relaxed) {
        return None;
    }
    let s = std::fs::read_to_string("/proc/net/dev").ok()?;
    let line = s.lines().find(|l| l.trim_start().starts_with("lo:"))?;
    let fields: Vec<&str> = line.split(':').nth(1)?.split_whitespace().collect();
    fields.get(8)?.parse().ok()
}

/// User + system CPU time of the whole process.
fn cpu_us() -> Option<u64> {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// Resident set size of the process in KiB.
pub fn rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits until no sink has seen a new delivery for `quiet` (or `limit` passed).
fn wait_quiet(sinks: &[Sink], quiet: Duration, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last = usize::MAX;
    let mut since = Instant::now();
    while Instant::now() < deadline {
        let total: usize = sinks.iter().map(Sink::count).sum();
        if total != last {
            last = total;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A started cluster whose overlay carried a probe from node 0 to every node.
struct Booted {
    cluster: Box<dyn Cluster>,
    sinks: Vec<Sink>,
    formed: bool,
    formation_ms: f64,
    rss_per_node_mb: Option<f64>,
}

/// Starts `n` nodes and probes from node 0 every 200 ms until every node got a probe
/// (bounded; `formed` false if not), then lets the overlay settle for 2 s.
fn boot(sys: &dyn System, n: usize, env: &Env) -> Result<Booted, String> {
    // Hand memory freed by the previous cluster back to the OS, so that RSS growth is
    // this cluster's (glibc keeps freed memory otherwise).
    // SAFETY: plain libc call without arguments to uphold.
    unsafe { libc::malloc_trim(0) };
    let rss0 = rss_kb();
    let t0 = Instant::now();
    let sinks: Vec<Sink> = (0..n).map(|_| Sink::new(env.base)).collect();
    let cluster = sys.start(sinks.clone(), env.seed)?;
    let rss1 = rss_kb();
    let first_probe = env.next.load(Ordering::Relaxed);
    let limit = Duration::from_secs(20 + n as u64 / 2);
    let deadline = Instant::now() + limit;
    let mut formed = false;
    while Instant::now() < deadline {
        let _ = cluster.publish(0, payload(env.base, env.msg(), 64));
        std::thread::sleep(Duration::from_millis(200));
        let all = sinks[1..]
            .iter()
            .all(|s| s.snapshot().iter().any(|d| d.msg >= first_probe));
        if all {
            formed = true;
            break;
        }
    }
    let formation_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if !formed {
        // Which nodes never got a probe, and what they are linked to (a rare failure to
        // form is otherwise only a number in the row).
        for (i, s) in sinks.iter().enumerate().skip(1) {
            if !s.snapshot().iter().any(|d| d.msg >= first_probe) {
                let what = cluster.describe(i);
                eprintln!("{}: node {i} got no probe: {what}", sys.name());
            }
        }
    }
    // Settle: gossipsub builds its mesh on 1 s heartbeats.
    std::thread::sleep(Duration::from_secs(2));
    for s in &sinks {
        s.clear();
    }
    let rss_per_node_mb = match (rss0, rss1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1024.0 / n as f64),
        _ => None,
    };
    Ok(Booted {
        cluster,
        sinks,
        formed,
        formation_ms,
        rss_per_node_mb,
    })
}

/// The fields of the node suite, all null, plus `system`; each workload fills its own.
fn row(sys: &dyn System, w: &Workload, nodes: usize) -> serde_json::Map<String, Value> {
    let v = json!({
        "suite": "peers", "workload": w.name(), "system": sys.name(), "nodes": nodes,
        "payload_bytes": Value::Null, "publishers": Value::Null,
        "delivery": Value::Null, "latency_p50_ms": Value::Null, "latency_p90_ms": Value::Null,
        "latency_p99_ms": Value::Null, "msgs_per_s": Value::Null,
        "verify_limit_msgs_per_s": Value::Null, "wire_bytes_per_delivery": Value::Null,
        "cpu_us_per_delivery": Value::Null, "rss_per_node_mb": Value::Null,
        "neighbour_replace_ms": Value::Null, "offline_detect_p99_ms": Value::Null,
        "idle_wakeups_per_s": Value::Null,
    });
    match v {
        Value::Object(m) => m,
        _ => Default::default(),
    }
}

/// The growth of each diagnostic counter, into the row (counters that appear only at
/// the end, like a new drop reason, grew from 0).
fn diag_delta(
    m: &mut serde_json::Map<String, Value>,
    before: &[(String, u64)],
    after: &[(String, u64)],
) {
    for (k, b) in after {
        let a = before.iter().find(|(k0, _)| k0 == k).map_or(0, |(_, a)| *a);
        match k.strip_prefix("gauge_") {
            Some(name) => m.insert(name.to_string(), json!(b)),
            None => m.insert(k.clone(), json!(b.saturating_sub(a))),
        };
    }
}

fn per_delivery(before: Sample, after: Sample, delivered: u64) -> (Option<f64>, Option<f64>) {
    if delivered == 0 {
        return (None, None);
    }
    let d = delivered as f64;
    let wire = match (before.wire, after.wire) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / d),
        _ => None,
    };
    let cpu = match (before.cpu_us, after.cpu_us) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / d),
        _ => None,
    };
    (wire, cpu)
}

/// Runs one workload against one system and returns its JSON row.
pub fn run(sys: &dyn System, w: &Workload, env: &Env, verify_limit: f64) -> Value {
    let out = match w {
        Workload::Broadcast {
            nodes,
            payload,
            messages,
            interval,
        } => broadcast(sys, w, env, *nodes, *payload, *messages, *interval),
        Workload::Throughput {
            nodes,
            publishers,
            duration,
        } => throughput(sys, w, env, *nodes, *publishers, *duration, verify_limit),
        Workload::Churn { nodes, after } => churn(sys, w, env, *nodes, *after),
        Workload::Join { nodes } => join(sys, w, env, *nodes),
    };
    match out {
        Ok(m) => Value::Object(m),
        Err(e) => {
            let mut m = row(sys, w, 0);
            m.insert("error".into(), json!(e));
            Value::Object(m)
        }
    }
}

fn broadcast(
    sys: &dyn System,
    w: &Workload,
    env: &Env,
    n: usize,
    size: usize,
    messages: usize,
    interval: Duration,
) -> Result<serde_json::Map<String, Value>, String> {
    let b = boot(sys, n, env)?;
    let failures0 = b.cluster.publish_failures();
    let diag0 = b.cluster.diag();
    let before = sample();
    let first = env.next.load(Ordering::Relaxed);
    let mut next = Instant::now();
    for _ in 0..messages {
        b.cluster.publish(0, payload(env.base, env.msg(), size))?;
        next += interval;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let last = env.next.load(Ordering::Relaxed);
    let expected = (messages * (n - 1)) as u64;
    // Counting (not copying) while the systems run: the harness must not steal CPU.
    wait_until(Duration::from_secs(10), || {
        b.sinks[1..].iter().map(|s| s.count() as u64).sum::<u64>() >= expected
    });
    wait_quiet(&b.sinks, Duration::from_millis(300), Duration::from_secs(3));
    let after = sample();
    let mut lat = Vec::new();
    let mut unique = 0u64;
    let mut dups = 0u64;
    for s in &b.sinks[1..] {
        let mut seen = std::collections::HashSet::new();
        for d in s
            .snapshot()
            .iter()
            .filter(|d| d.msg >= first && d.msg < last)
        {
            if seen.insert(d.msg) {
                unique += 1;
                lat.push(d.at_us.saturating_sub(d.sent_us) as f64 / 1000.0);
            } else {
                dups += 1;
            }
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let (wire, cpu) = per_delivery(before, after, unique);
    let failures = b.cluster.publish_failures() - failures0;
    let diag1 = b.cluster.diag();
    b.cluster.shutdown();
    let mut m = row(sys, w, n);
    diag_delta(&mut m, &diag0, &diag1);
    m.insert("payload_bytes".into(), json!(size));
    m.insert("publishers".into(), json!(1));
    m.insert("messages".into(), json!(messages));
    m.insert("interval_ms".into(), json!(interval.as_secs_f64() * 1000.0));
    m.insert("delivery".into(), json!(unique as f64 / expected as f64));
    m.insert("latency_p50_ms".into(), json!(percentile(&lat, 0.5)));
    m.insert("latency_p90_ms".into(), json!(percentile(&lat, 0.9)));
    m.insert("latency_p99_ms".into(), json!(percentile(&lat, 0.99)));
    m.insert("wire_bytes_per_delivery".into(), json!(wire));
    m.insert("cpu_us_per_delivery".into(), json!(cpu));
    m.insert("rss_per_node_mb".into(), json!(b.rss_per_node_mb));
    m.insert("overlay_formed".into(), json!(b.formed));
    m.insert("formation_ms".into(), json!(b.formation_ms));
    m.insert("duplicates".into(), json!(dups));
    m.insert("publish_failures".into(), json!(failures));
    Ok(m)
}

fn throughput(
    sys: &dyn System,
    w: &Workload,
    env: &Env,
    n: usize,
    publishers: usize,
    duration: Duration,
    verify_limit: f64,
) -> Result<serde_json::Map<String, Value>, String> {
    let b = boot(sys, n, env)?;
    let pubs: Vec<usize> = (0..publishers.min(n))
        .map(|p| p * n / publishers.min(n))
        .collect();
    let failures0 = b.cluster.publish_failures();
    let diag0 = b.cluster.diag();
    let before = sample();
    let first = env.next.load(Ordering::Relaxed);
    let t_start = env.now_us();
    let published = AtomicU64::new(0);
    let publish_error = std::sync::Mutex::new(None::<String>);
    let cluster = &b.cluster;
    std::thread::scope(|s| {
        for &p in &pubs {
            let (published, publish_error) = (&published, &publish_error);
            s.spawn(move || {
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    if let Err(e) = cluster.publish(p, payload(env.base, env.msg(), 256)) {
                        if let Ok(mut g) = publish_error.lock() {
                            g.get_or_insert(e);
                        }
                        return;
                    }
                    published.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let last = env.next.load(Ordering::Relaxed);
    wait_quiet(&b.sinks, Duration::from_secs(1), Duration::from_secs(20));
    let after = sample();
    let published = published.load(Ordering::Relaxed);
    let mut rates = Vec::new();
    let mut unique = 0u64;
    for (j, s) in b.sinks.iter().enumerate() {
        let ds: Vec<Delivery> = s
            .snapshot()
            .into_iter()
            .filter(|d| d.msg >= first && d.msg < last)
            .collect();
        let mut seen = std::collections::HashSet::new();
        let got = ds.iter().filter(|d| seen.insert(d.msg)).count() as u64;
        unique += got;
        // Publishers also subscribe; a node that is the only publisher gets nothing.
        if pubs.len() == 1 && pubs[0] == j {
            continue;
        }
        let end = ds.iter().map(|d| d.at_us).max().unwrap_or(t_start);
        let span = end.saturating_sub(t_start) as f64 / 1e6;
        rates.push(if span > 0.0 { got as f64 / span } else { 0.0 });
    }
    let rate = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    // Every message should reach every node but its publisher.
    let expected = published * (n as u64 - 1);
    let (wire, cpu) = per_delivery(before, after, unique);
    let failures = b.cluster.publish_failures() - failures0;
    let diag1 = b.cluster.diag();
    b.cluster.shutdown();
    let mut m = row(sys, w, n);
    diag_delta(&mut m, &diag0, &diag1);
    m.insert("payload_bytes".into(), json!(256));
    m.insert("publishers".into(), json!(pubs.len()));
    m.insert("published".into(), json!(published));
    m.insert("publish_s".into(), json!(duration.as_secs_f64()));
    if let Ok(Some(e)) = publish_error.into_inner() {
        m.insert("publish_error".into(), json!(e));
    }
    m.insert(
        "delivery".into(),
        json!(if expected > 0 {
            unique as f64 / expected as f64
        } else {
            0.0
        }),
    );
    m.insert("msgs_per_s".into(), json!(rate));
    m.insert("verify_limit_msgs_per_s".into(), json!(verify_limit));
    m.insert(
        "fraction_of_verify_limit".into(),
        json!(rate / verify_limit.max(1.0)),
    );
    m.insert("wire_bytes_per_delivery".into(), json!(wire));
    m.insert("cpu_us_per_delivery".into(), json!(cpu));
    m.insert("rss_per_node_mb".into(), json!(b.rss_per_node_mb));
    m.insert("overlay_formed".into(), json!(b.formed));
    m.insert("publish_failures".into(), json!(failures));
    Ok(m)
}

fn churn(
    sys: &dyn System,
    w: &Workload,
    env: &Env,
    n: usize,
    after: Duration,
) -> Result<serde_json::Map<String, Value>, String> {
    let mut b = boot(sys, n, env)?;
    // 30% killed, spread over the index range, never the publisher.
    let kill: Vec<usize> = (1..n).filter(|i| matches!(i % 10, 1 | 4 | 7)).collect();
    let survivors: Vec<usize> = (1..n).filter(|i| !kill.contains(i)).collect();
    let (kill_us, first_after, last) = {
        let cluster_ptr: &mut Box<dyn Cluster> = &mut b.cluster;
        // The stream needs shared access while kills need exclusive access: publish from
        // this thread instead, interleaving kills at the right time.
        let gap = Duration::from_millis(20);
        let mut next = Instant::now();
        let t_kill = Instant::now() + Duration::from_secs(2);
        let t_end = t_kill + after;
        let mut killed = false;
        let mut kill_us = 0;
        let mut first_after = 0;
        while Instant::now() < t_end {
            if !killed && Instant::now() >= t_kill {
                kill_us = env.now_us();
                for &k in &kill {
                    cluster_ptr.kill(k);
                }
                first_after = env.next.load(Ordering::Relaxed);
                killed = true;
            }
            let _ = cluster_ptr.publish(0, payload(env.base, env.msg(), 256));
            next += gap;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        (kill_us, first_after, env.next.load(Ordering::Relaxed))
    };
    wait_quiet(&b.sinks, Duration::from_secs(1), Duration::from_secs(5));
    // Per message published after the kill: at how many survivors it arrived.
    let mut reached: std::collections::BTreeMap<u64, (u64, usize)> = Default::default();
    for &j in &survivors {
        let mut seen = std::collections::HashSet::new();
        for d in b.sinks[j].snapshot() {
            if d.msg >= first_after && d.msg < last && seen.insert(d.msg) {
                let e = reached.entry(d.msg).or_insert((d.sent_us, 0));
                e.1 += 1;
            }
        }
    }
    let msgs: Vec<u64> = (first_after..last).collect();
    let total: usize = msgs.iter().map(|m| reached.get(m).map_or(0, |e| e.1)).sum();
    let expected = msgs.len() * survivors.len();
    let in_order: Vec<(u64, bool)> = msgs
        .iter()
        .map(|m| match reached.get(m) {
            Some(e) => (e.0, e.1 == survivors.len()),
            None => (0, false),
        })
        .collect();
    let recovery_ms = recovery(&in_order, kill_us);
    b.cluster.shutdown();
    let mut m = row(sys, w, n);
    m.insert("payload_bytes".into(), json!(256));
    m.insert("publishers".into(), json!(1));
    m.insert("killed".into(), json!(kill.len()));
    m.insert("messages_after_kill".into(), json!(msgs.len()));
    m.insert(
        "delivery".into(),
        json!(if expected > 0 {
            total as f64 / expected as f64
        } else {
            0.0
        }),
    );
    m.insert("recovery_ms".into(), json!(recovery_ms));
    m.insert("overlay_formed".into(), json!(b.formed));
    Ok(m)
}

fn join(
    sys: &dyn System,
    w: &Workload,
    env: &Env,
    n: usize,
) -> Result<serde_json::Map<String, Value>, String> {
    let b = boot(sys, n, env)?;
    for i in 0..n {
        b.cluster.announce(i);
    }
    // Let presence spread before the join (starling; a no-op wait for the others).
    std::thread::sleep(Duration::from_secs(2));
    let sink = Sink::new(env.base);
    let stop = AtomicBool::new(false);
    // The stream holds the read side per publish; the join takes the write side once.
    let cluster = std::sync::RwLock::new(b.cluster);
    let (first_ms, online_ms, idx) = std::thread::scope(|s| {
        let (cluster, stop) = (&cluster, &stop);
        s.spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(c) = cluster.read() {
                    let _ = c.publish(0, payload(env.base, env.msg(), 256));
                }
                next += Duration::from_millis(50);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        let added = cluster
            .write()
            .map_err(|_| "cluster lock poisoned".to_string())
            .and_then(|mut c| c.add_node(sink.clone(), env.seed ^ 0x5eed));
        let idx = match added {
            Ok(i) => i,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        if let Ok(c) = cluster.read() {
            c.announce(idx);
        }
        let first = wait_until(Duration::from_secs(20), || sink.count() > 0)
            .then(|| t0.elapsed().as_secs_f64() * 1000.0);
        let has_view = cluster.read().ok().and_then(|c| c.online(idx)).is_some();
        let online = if has_view {
            wait_until(Duration::from_secs(20), || {
                cluster.read().ok().and_then(|c| c.online(idx)).unwrap_or(0) >= n
            })
            .then(|| t0.elapsed().as_secs_f64() * 1000.0)
        } else {
            None
        };
        stop.store(true, Ordering::Relaxed);
        Ok((first, online, idx))
    })?;
    let _ = idx;
    let b_cluster = cluster
        .into_inner()
        .map_err(|_| "cluster lock poisoned".to_string())?;
    b_cluster.shutdown();
    let mut m = row(sys, w, n);
    m.insert("payload_bytes".into(), json!(256));
    m.insert("join_first_msg_ms".into(), json!(first_ms));
    m.insert("join_online_ms".into(), json!(online_ms));
    m.insert("overlay_formed".into(), json!(b.formed));
    Ok(m)
}

/// From the kill to the first message after which every message reached every survivor:
/// `msgs` in publish order as (publish µs, reached everyone). `Some(0)` if none missed
/// anyone, `None` if the last message still missed someone (not recovered in the window).
fn recovery(msgs: &[(u64, bool)], kill_us: u64) -> Option<f64> {
    match msgs.iter().rposition(|m| !m.1) {
        None => Some(0.0),
        Some(i) if i + 1 >= msgs.len() => None,
        Some(i) => Some(msgs[i + 1].0.saturating_sub(kill_us) as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_the_first_message_of_the_complete_tail() {
        assert_eq!(recovery(&[], 0), Some(0.0));
        assert_eq!(recovery(&[(10, true), (20, true)], 5), Some(0.0));
        let r = recovery(
            &[(1_000, false), (2_000, true), (3_000, false), (4_000, true)],
            500,
        );
        assert_eq!(r, Some(3.5));
        assert_eq!(recovery(&[(1_000, true), (2_000, false)], 0), None);
    }

    #[test]
    fn percentile_picks_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), Some(3.0));
        assert_eq!(percentile(&v, 0.99), Some(5.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
