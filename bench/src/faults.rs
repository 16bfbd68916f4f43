//! `--suite faults`: a loopback cluster on a faulty network (in-process fault injection,
//! `starling_core::net::fault`).
//!
//! ```text
//! cargo run --release -p starling-bench -- --suite faults [--minutes M] [--minutes-20 M2]
//!     [--nodes N] [--partition-secs S] [--seed X]
//! ```
//!
//! Phases on one cluster of N nodes (default 20), all subscribed to one topic with
//! presence, a steady workload of 4 messages per second from rotating authors:
//! 1. `loss5`: 5% packet loss for M minutes (default 10);
//! 2. `loss20`: 20% loss for M2 minutes (default 1);
//! 3. `partition`: the cluster cut in two halves for S seconds (default 60), then healed.
//!
//! Printed per phase (one JSON line each): messages, deliveries expected and done when
//! the phase ends and after a 60 s grace, the time to complete after the last publish,
//! failure-detector verdicts (every node stays up, so each verdict outside the partition
//! is false), and for the partition the recovery time: from the heal until messages
//! published then reached everyone and presence converged everywhere.

#[path = "../../core/tests/support/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::{Cluster, Sent};
use serde_json::json;
use starling_core::net::fault::FaultInjector;

struct Args {
    minutes: f64,
    minutes20: f64,
    nodes: usize,
    partition: Duration,
    seed: u64,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        minutes: 10.0,
        minutes20: 1.0,
        nodes: 20,
        partition: Duration::from_secs(60),
        seed: 1,
    };
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> Result<f64, String> {
            it.next()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or(format!("{name} needs a non-negative number"))
        };
        match arg.as_str() {
            "--suite" => {
                it.next();
            }
            "--minutes" => a.minutes = num("--minutes")?,
            "--minutes-20" => a.minutes20 = num("--minutes-20")?,
            "--nodes" => a.nodes = (num("--nodes")? as usize).max(4),
            "--partition-secs" => a.partition = Duration::from_secs_f64(num("--partition-secs")?),
            "--seed" => a.seed = num("--seed")? as u64,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// Runs the suite if the command line selects it (`--suite faults`); the exit code.
pub fn main_if_selected() -> Option<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let selected = args
        .windows(2)
        .any(|w| w[0] == "--suite" && w[1] == "faults");
    if !selected {
        return None;
    }
    let code = match parse(args.into_iter()).and_then(|a| run(&a)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}\nusage: starling-bench --suite faults [--minutes M] [--minutes-20 M2] [--nodes N] [--partition-secs S] [--seed X]");
            1
        }
    };
    Some(code)
}

/// Publishes 4 messages a second from rotating authors for `length`.
fn steady(
    c: &mut Cluster,
    length: Duration,
    tag: &str,
    next_author: &mut usize,
) -> Result<Vec<Sent>, String> {
    let start = Instant::now();
    let mut sent = Vec::new();
    let mut tick = start;
    while start.elapsed() < length {
        let author = *next_author % c.members.len();
        *next_author += 1;
        sent.extend(c.publish([author], tag)?);
        c.pump()?;
        tick += Duration::from_millis(250);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
    }
    Ok(sent)
}

/// Ends a phase: deliveries when it ends, then waits (60 s grace) for the rest.
fn settle(c: &mut Cluster, sent: &[Sent]) -> Result<serde_json::Value, String> {
    let all = c.all();
    c.pump()?;
    let expected = c.expected(sent, &all);
    let at_end = expected - c.missing(sent, &all);
    let done = c.wait_delivered(sent, &all, Duration::from_secs(60));
    let delivered = expected - c.missing(sent, &all);
    Ok(json!({
        "messages": sent.len(),
        "deliveries_expected": expected,
        "delivered_at_phase_end": at_end,
        "delivered_after_grace": delivered,
        "delivery_ratio": delivered as f64 / expected.max(1) as f64,
        "complete_after_last_publish_ms": done.ok().map(|d| d.as_millis() as u64),
        "lagged": c.lagged(),
    }))
}

fn run(a: &Args) -> Result<(), String> {
    let faults = FaultInjector::new(a.seed);
    let t0 = Instant::now();
    let mut c = Cluster::start(a.nodes, a.seed, faults)?;
    let all = c.all();
    let formed = c.wait_presence(&all, Duration::from_secs(60))?;
    println!(
        "{}",
        json!({"suite": "faults", "phase": "formed", "nodes": a.nodes,
               "presence_converged_ms": formed.as_millis() as u64,
               "since_start_ms": t0.elapsed().as_millis() as u64})
    );
    let mut author = 0;

    for (phase, loss, minutes) in [("loss5", 0.05, a.minutes), ("loss20", 0.20, a.minutes20)] {
        if minutes <= 0.0 {
            continue;
        }
        let dead_before = c.declared_dead();
        let stats_before = c.faults.stats();
        c.faults.set_loss(loss).map_err(|e| e.to_string())?;
        let sent = steady(
            &mut c,
            Duration::from_secs_f64(minutes * 60.0),
            phase,
            &mut author,
        )?;
        let mut row = settle(&mut c, &sent)?;
        c.faults.set_loss(0.0).map_err(|e| e.to_string())?;
        let stats = c.faults.stats();
        let o = row.as_object_mut().ok_or("row is an object")?;
        o.insert("suite".into(), json!("faults"));
        o.insert("phase".into(), json!(phase));
        o.insert("nodes".into(), json!(a.nodes));
        o.insert("loss".into(), json!(loss));
        o.insert("minutes".into(), json!(minutes));
        o.insert(
            "false_dead_verdicts".into(),
            json!(c.declared_dead() - dead_before),
        );
        o.insert(
            "datagrams_sent".into(),
            json!(stats.sent - stats_before.sent),
        );
        o.insert(
            "datagrams_lost".into(),
            json!(stats.lost - stats_before.lost),
        );
        println!("{row}");
    }

    if !a.partition.is_zero() {
        let half = a.nodes / 2;
        let (left, right): (Vec<usize>, Vec<usize>) = (0..a.nodes).partition(|&i| i < half);
        let dead_before = c.declared_dead();
        c.faults.partition(c.addrs(0..half));
        let cut = Instant::now();
        let during = steady(&mut c, a.partition, "partition", &mut author)?;
        let verdicts = c.declared_dead() - dead_before;
        let (from_left, from_right): (Vec<Sent>, Vec<Sent>) =
            during.iter().partition(|s| s.author < half);
        c.pump()?;
        let inside_missing = c.missing(&from_left, &left) + c.missing(&from_right, &right);
        c.faults.heal();
        let healed = Instant::now();
        let after = c.publish(0..a.nodes, "healed")?;
        let msgs = c.wait_delivered(&after, &all, Duration::from_secs(120));
        let presence = c.wait_presence(&all, Duration::from_secs(120));
        let presence_ms = presence
            .as_ref()
            .ok()
            .map(|_| healed.elapsed().as_millis() as u64);
        c.pump()?;
        let cross_expected = c.expected(&from_left, &right) + c.expected(&from_right, &left);
        let cross_missing = c.missing(&from_left, &right) + c.missing(&from_right, &left);
        println!(
            "{}",
            json!({"suite": "faults", "phase": "partition", "nodes": a.nodes,
                   "held_ms": (healed - cut).as_millis() as u64,
                   "dead_verdicts_during": verdicts,
                   "messages_during": during.len(),
                   "missing_inside_halves_at_heal": inside_missing,
                   "recovery_messages_ms": msgs.as_ref().ok().map(|d| d.as_millis() as u64),
                   "recovery_presence_ms": presence_ms,
                   "recovery_error": msgs.err().or(presence.err()),
                   "partition_messages_delivered_across_later": cross_expected - cross_missing,
                   "partition_messages_across_expected": cross_expected,
                   "lagged": c.lagged()})
        );
    }
    Ok(())
}
