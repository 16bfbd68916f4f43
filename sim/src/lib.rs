//! starling-sim: runs the real protocol state machines of `starling-core` in a deterministic,
//! seeded discrete-event network of thousands of nodes, and measures what users rely on:
//! reliability, redundancy, hops, latency, healing after failures, presence convergence.

pub mod engine;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use starling_core::identity::PeerId;
use starling_core::proto::{self, Time};
use starling_core::wire::{MessageId, TopicId};

use engine::{NetConfig, Observed, Sim};

/// The scenario names.
pub const SCENARIOS: &[&str] = &[
    "stable",
    "stable-multi",
    "mass-failure-20",
    "mass-failure-50",
    "mass-failure-80",
    "churn",
    "partition-heal",
    "sparse-topic",
    "presence",
    "replace",
];

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Scenario name (one of [`SCENARIOS`]).
    pub scenario: String,
    /// Network size.
    pub nodes: usize,
    /// Seed: the same seed gives the same run.
    pub seed: u64,
    /// Broadcasts to measure (stable, sparse-topic, churn).
    pub broadcasts: usize,
    /// One-way link latency range in ms (each link draws a fixed value in it).
    pub latency_ms: (u64, u64),
}

/// One run's results (one JSON line with `--json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Network size.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Link latency range (ms, one way).
    pub latency_ms: (u64, u64),
    /// Broadcasts measured.
    pub broadcasts: usize,
    /// Fraction of expected (live, subscribed) receivers that delivered, over all measured
    /// broadcasts.
    pub reliability: f64,
    /// Relative message redundancy: payload messages / receivers − 1 (mean over broadcasts).
    pub rmr: f64,
    /// Largest hop count of any delivery (last delivery hop, max over broadcasts).
    pub ldh_max: u16,
    /// Mean over broadcasts of the last delivery hop.
    pub ldh_mean: f64,
    /// Publish-to-delivery latency at expected receivers, median (simulated ms).
    pub latency_p50_ms: f64,
    /// Publish-to-delivery latency, 99th percentile (simulated ms).
    pub latency_p99_ms: f64,
    /// Messages other than payloads sent per live node per simulated second (membership,
    /// failure detection, IHAVE/GRAFT/PRUNE, presence snapshots, discovery).
    pub control_msgs_per_node: f64,
    /// Live nodes with no network-wide neighbour, or subscribers with no topic neighbour.
    pub isolated_nodes: usize,
    /// Active-view links that are not mutual at the end and were not a second earlier (a
    /// link is one-sided while its handshake's answer is in flight).
    pub view_asymmetry: usize,
    /// Connected components of the network-wide overlay among live nodes, at the end (1:
    /// one overlay).
    pub network_components: usize,
    /// Connected components of the topic's overlay among live subscribers, at the end.
    pub topic_components: usize,
    /// Joins made because discovery found a separate part of the topic's overlay (summed
    /// over live nodes).
    pub merge_joins: u64,
    /// Topic active-view changes during the measurement, per node (overlay churn).
    pub topic_view_changes_per_node: f64,
    /// Failure-detector verdicts over the whole run (false ones, where nothing crashed).
    pub declared_dead: u64,
    /// Messages delivered twice to one application (must be 0).
    pub duplicate_deliveries: u64,
    /// Mass failure: fraction of survivors that eventually delivered the first broadcast
    /// published right after the crash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broadcast_reliability: Option<f64>,
    /// Mass failure: the same, counting only deliveries within 1 s (before the failure
    /// detector can have repaired anything, as the Plumtree paper measures it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broadcast_reliability_1s: Option<f64>,
    /// Mass failure / partition: seconds from the event until every broadcast from then on
    /// reached every expected receiver within 2 s of being published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_full_delivery_s: Option<f64>,
    /// The same in membership cycles (one cycle = the shuffle interval, 30 s), rounded up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycles_to_full_delivery: Option<u32>,
    /// Presence: from the last member announcing itself until every member sees all others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_converge_ms: Option<f64>,
    /// Presence: 99th percentile over (member, crashed member) pairs of the time until the
    /// member sees the crashed one offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash_detect_p99_ms: Option<f64>,
    /// Presence: crashed members some live member still saw online at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash_undetected: Option<usize>,
    /// Presence: a late joiner's time from subscribing to knowing the whole online set
    /// (including discovery: it finds a member, joins it, and gets its snapshot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_join_ms: Option<f64>,
    /// Presence: round trips to its first topic neighbour from sending the join to knowing
    /// the whole online set (1.0: the snapshot came with the neighbour's accept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_join_rtts: Option<f64>,
    /// Sparse topic: payload messages received by nodes not subscribed (must be 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonsubscriber_payloads: Option<u64>,
    /// Replace: survivors that lost a network-wide neighbour to the crash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace_lost: Option<usize>,
    /// Replace: of those, how many had a new neighbour within 10 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace_replaced: Option<usize>,
    /// Replace: from the crash until the survivor dropped the dead neighbour, median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace_detect_p50_ms: Option<f64>,
    /// Replace: the same, largest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace_detect_max_ms: Option<f64>,
    /// Replace: from the crash until the survivor's next new neighbour, median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace_p50_ms: Option<f64>,
    /// Replace: the same, largest (infinite if a survivor got none within 10 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace_max_ms: Option<f64>,
    /// Replace: refill neighbour requests the survivors sent after the crash, and how many
    /// were refused or timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refill_requests: Option<(u64, u64, u64)>,
    /// Simulated seconds.
    pub sim_s: f64,
    /// Events processed.
    pub events: u64,
    /// Wall-clock seconds for the run.
    pub wall_s: f64,
}

struct Published {
    id: MessageId,
    publisher: u32,
    at: Time,
}

/// Tracks broadcasts and their deliveries.
#[derive(Default)]
struct Tracker {
    published: Vec<Published>,
    deliveries: HashMap<MessageId, HashMap<u32, (Time, u16)>>,
    duplicates: u64,
    presence: Vec<(Time, u32, proto::presence::PresenceEvent)>,
    /// Network-wide active-view changes: (when, node, peer, up).
    neighbors: Vec<(Time, u32, PeerId, bool)>,
}

impl Tracker {
    fn absorb(&mut self, sim: &mut Sim) {
        let now = sim.now;
        for o in sim.observed.drain(..) {
            match o {
                Observed::Delivered { node, d } => {
                    let per = self.deliveries.entry(d.id).or_default();
                    if per.insert(node, (now, d.hops)).is_some() {
                        self.duplicates += 1;
                    }
                }
                Observed::Presence { node, ev } => self.presence.push((now, node, ev)),
                Observed::Neighbor { node, peer, up } => self.neighbors.push((now, node, peer, up)),
            }
        }
    }
}

const TOPIC_NAME: &str = "sim";

fn topic() -> TopicId {
    TopicId::from_name(TOPIC_NAME)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Steps the simulation in small increments, absorbing observations as it goes (so
/// delivery times are exact: the tracker stamps them at the step's end, which is at most
/// `STEP` late — deliveries carry no time, so steps are kept short).
const STEP: Duration = Duration::from_millis(1);

fn run(sim: &mut Sim, tr: &mut Tracker, d: Duration) {
    let until = sim.now + d;
    while sim.now < until {
        let next = (sim.now + STEP).min(until);
        sim.run_until(next);
        tr.absorb(sim);
    }
}

/// Builds a network of `n` nodes: each joins through a random earlier node.
fn build(sim: &mut Sim, tr: &mut Tracker, n: usize) {
    sim.add_node();
    for i in 1..n as u32 {
        sim.add_node();
        let contact = rand::Rng::gen_range(sim.rng(), 0..i);
        sim.join(i, contact);
        run(sim, tr, Duration::from_micros(2000));
    }
    run(sim, tr, Duration::from_secs(5));
}

fn subscribe(sim: &mut Sim, tr: &mut Tracker, nodes: &[u32]) {
    for &i in nodes {
        sim.with(i, |s, now| s.subscribe(topic(), now));
        run(sim, tr, Duration::from_micros(500));
    }
    run(sim, tr, Duration::from_secs(10));
}

fn publish(sim: &mut Sim, tr: &mut Tracker, publisher: u32) {
    let at = sim.now;
    let payload = Bytes::from(format!("broadcast {} from {publisher}", tr.published.len()));
    if let Some(Ok(p)) = sim.with(publisher, |s, now| s.publish(topic(), payload, now)) {
        tr.published.push(Published {
            id: p.id,
            publisher,
            at,
        });
    }
}

fn random_member(sim: &mut Sim, members: &[u32]) -> u32 {
    let live: Vec<u32> = members.iter().copied().filter(|&i| sim.alive(i)).collect();
    live[rand::Rng::gen_range(sim.rng(), 0..live.len())]
}

/// Per-broadcast outcome against an expected receiver set.
struct Outcome {
    expected: usize,
    delivered: usize,
    delivered_1s: usize,
    /// Delivered within [`FULL_DEADLINE`].
    delivered_in_time: usize,
    payloads: u64,
    receivers: usize,
    ldh: u16,
    latencies: Vec<f64>,
}

fn outcome(sim: &Sim, tr: &Tracker, b: &Published, expected: &HashSet<u32>) -> Outcome {
    let empty = HashMap::new();
    let got = tr.deliveries.get(&b.id).unwrap_or(&empty);
    let mut o = Outcome {
        expected: expected.iter().filter(|&&i| i != b.publisher).count(),
        delivered: 0,
        delivered_1s: 0,
        delivered_in_time: 0,
        payloads: sim.traffic.payload_by_id.get(&b.id).copied().unwrap_or(0),
        receivers: got.len(),
        ldh: 0,
        latencies: Vec::with_capacity(got.len()),
    };
    for (node, (t, hops)) in got {
        let lat = t.saturating_since(b.at);
        o.ldh = o.ldh.max(*hops);
        if expected.contains(node) && *node != b.publisher {
            o.latencies.push(ms(lat));
            o.delivered += 1;
            if lat <= Duration::from_secs(1) {
                o.delivered_1s += 1;
            }
            if lat <= FULL_DEADLINE {
                o.delivered_in_time += 1;
            }
        }
    }
    o
}

fn summarize(report: &mut Report, outcomes: &[Outcome]) {
    if std::env::var_os("STARLING_SIM_DEBUG").is_some() {
        for (i, o) in outcomes.iter().enumerate() {
            eprintln!(
                "broadcast {i}: delivered {}/{} payloads {} receivers {} ldh {}",
                o.delivered, o.expected, o.payloads, o.receivers, o.ldh
            );
        }
    }
    let expected: usize = outcomes.iter().map(|o| o.expected).sum();
    let delivered: usize = outcomes.iter().map(|o| o.delivered).sum();
    report.broadcasts = outcomes.len();
    report.reliability = if expected == 0 {
        1.0
    } else {
        delivered as f64 / expected as f64
    };
    let rmrs: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.receivers > 0)
        .map(|o| o.payloads as f64 / o.receivers as f64 - 1.0)
        .collect();
    report.rmr = rmrs.iter().sum::<f64>() / rmrs.len().max(1) as f64;
    report.ldh_max = outcomes.iter().map(|o| o.ldh).max().unwrap_or(0);
    report.ldh_mean =
        outcomes.iter().map(|o| f64::from(o.ldh)).sum::<f64>() / outcomes.len().max(1) as f64;
    let mut lat: Vec<f64> = outcomes.iter().flat_map(|o| o.latencies.clone()).collect();
    lat.sort_by(f64::total_cmp);
    report.latency_p50_ms = percentile(&lat, 0.5);
    report.latency_p99_ms = percentile(&lat, 0.99);
}

fn finish(sim: &Sim, tr: &Tracker, report: &mut Report, subscribers: &[u32], from: Baseline) {
    let live = sim.live();
    let subs: HashSet<u32> = subscribers.iter().copied().collect();
    let mut isolated = 0;
    for &i in &live {
        let Some(s) = sim.state(i) else { continue };
        let global = s.neighbors();
        if global.is_empty() || (subs.contains(&i) && s.topic_neighbors(&topic()).is_empty()) {
            isolated += 1;
        }
    }
    report.declared_dead = live
        .iter()
        .filter_map(|&i| sim.state(i))
        .map(|s| s.counters().declared_dead)
        .sum();
    report.merge_joins = live
        .iter()
        .filter_map(|&i| sim.state(i))
        .map(|s| s.counters().merge_joins)
        .sum();
    report.topic_components = components(sim, subscribers, |s| s.topic_neighbors(&topic()));
    report.network_components = components(sim, &live, |s| s.neighbors());
    report.isolated_nodes = isolated;
    report.duplicate_deliveries = tr.duplicates;
    let secs = sim.now.saturating_since(from.at).as_secs_f64().max(1e-9);
    report.control_msgs_per_node =
        (sim.traffic.control - from.control) as f64 / live.len().max(1) as f64 / secs;
    report.topic_view_changes_per_node =
        (sim.traffic.topic_view_changes - from.view_changes) as f64 / live.len().max(1) as f64;
    report.events = sim.events;
}

/// The active-view links (network-wide: `false`, the topic's: `true`) of live nodes that the
/// other end does not have back.
fn one_sided_pairs(sim: &Sim) -> HashSet<(PeerId, PeerId, bool)> {
    let mut pairs = HashSet::new();
    for i in sim.live() {
        let Some(s) = sim.state(i) else { continue };
        for topic_view in [false, true] {
            let links = |o: &proto::State| {
                if topic_view {
                    o.topic_neighbors(&topic())
                } else {
                    o.neighbors()
                }
            };
            for p in links(s) {
                let back = sim
                    .index_of(&p)
                    .and_then(|j| sim.state(j))
                    .is_some_and(|o| links(o).contains(&s.peer_id()));
                if !back {
                    pairs.insert((s.peer_id(), p, topic_view));
                }
            }
        }
    }
    pairs
}

/// The number of connected components among the live nodes of `nodes`, following the
/// links `links` gives.
fn components(
    sim: &Sim,
    nodes: &[u32],
    links: impl Fn(&proto::State) -> Vec<starling_core::identity::PeerId>,
) -> usize {
    let members: HashSet<u32> = nodes.iter().copied().filter(|&i| sim.alive(i)).collect();
    let mut seen: HashSet<u32> = HashSet::new();
    let mut count = 0;
    for &m in &members {
        if !seen.insert(m) {
            continue;
        }
        count += 1;
        let mut stack = vec![m];
        while let Some(x) = stack.pop() {
            let Some(s) = sim.state(x) else { continue };
            for p in links(s) {
                if let Some(j) = sim.index_of(&p).filter(|j| members.contains(j)) {
                    if seen.insert(j) {
                        stack.push(j);
                    }
                }
            }
        }
    }
    count
}

/// Counters at the start of the measurement.
struct Baseline {
    at: Time,
    control: u64,
    view_changes: u64,
}

/// Runs one scenario.
pub fn run_scenario(p: &Params) -> Result<Report, String> {
    if !SCENARIOS.contains(&p.scenario.as_str()) {
        return Err(format!(
            "unknown scenario {:?}; expected one of: {}",
            p.scenario,
            SCENARIOS.join(", ")
        ));
    }
    if p.nodes < 10 {
        return Err(format!("--nodes must be at least 10, got {}", p.nodes));
    }
    let wall = Instant::now();
    if p.latency_ms.0 > p.latency_ms.1 {
        return Err(format!(
            "--latency: {} > {}",
            p.latency_ms.0, p.latency_ms.1
        ));
    }
    let mut net = NetConfig {
        latency_min: Duration::from_millis(p.latency_ms.0),
        latency_max: Duration::from_millis(p.latency_ms.1),
        ..NetConfig::default()
    };
    if p.scenario == "replace" {
        // As QUIC on loopback: a dial to a dead port fails only at the handshake timeout.
        net.dial_timeout = Duration::from_secs(5);
    }
    let mut sim = Sim::new(p.seed, net, proto::Config::default());
    let mut tr = Tracker::default();
    let mut report = Report {
        scenario: p.scenario.clone(),
        nodes: p.nodes,
        seed: p.seed,
        latency_ms: p.latency_ms,
        ..Report::default()
    };
    let start = sim.now;
    build(&mut sim, &mut tr, p.nodes);
    let all: Vec<u32> = (0..p.nodes as u32).collect();
    let subscribers: Vec<u32> = match p.scenario.as_str() {
        "sparse-topic" => {
            let k = (p.nodes / 100).max(10);
            let mut picked: Vec<u32> = all.clone();
            rand::seq::SliceRandom::shuffle(picked.as_mut_slice(), sim.rng());
            picked.truncate(k);
            picked.sort_unstable();
            picked
        }
        "presence" => {
            let k = (p.nodes / 100).max(20);
            let mut picked: Vec<u32> = all.clone();
            rand::seq::SliceRandom::shuffle(picked.as_mut_slice(), sim.rng());
            picked.truncate(k);
            picked.sort_unstable();
            picked
        }
        _ => all.clone(),
    };
    subscribe(&mut sim, &mut tr, &subscribers);
    let baseline = Baseline {
        at: sim.now,
        control: sim.traffic.control,
        view_changes: sim.traffic.topic_view_changes,
    };
    match p.scenario.as_str() {
        "stable" | "stable-multi" | "sparse-topic" => {
            // stable: one publisher, as in the Plumtree paper's stable-network figures;
            // stable-multi and sparse-topic: a random subscriber publishes each message.
            let single = random_member(&mut sim, &subscribers);
            // Two unmeasured warm-up broadcasts build the tree (the paper's RMR ≈ 0 holds
            // "after the first couple of broadcasts"; the first one floods).
            for _ in 0..2 {
                publish(&mut sim, &mut tr, single);
                run(&mut sim, &mut tr, Duration::from_secs(1));
            }
            let warmup = tr.published.len();
            let mut outcomes = Vec::new();
            for _ in 0..p.broadcasts {
                let publisher = if p.scenario == "stable" {
                    single
                } else {
                    random_member(&mut sim, &subscribers)
                };
                publish(&mut sim, &mut tr, publisher);
                run(&mut sim, &mut tr, Duration::from_millis(100));
            }
            run(&mut sim, &mut tr, Duration::from_secs(5));
            let expected: HashSet<u32> = subscribers.iter().copied().collect();
            for b in &tr.published[warmup..] {
                outcomes.push(outcome(&sim, &tr, b, &expected));
            }
            summarize(&mut report, &outcomes);
            if p.scenario == "sparse-topic" {
                report.nonsubscriber_payloads = Some(
                    all.iter()
                        .filter(|i| !expected.contains(i))
                        .map(|&i| sim.traffic.payload_by_node[i as usize])
                        .sum(),
                );
            }
        }
        s if s.starts_with("mass-failure-") => {
            let pct: usize = s.trim_start_matches("mass-failure-").parse().unwrap_or(50);
            mass_failure(&mut sim, &mut tr, &mut report, &subscribers, pct);
        }
        "churn" => churn(&mut sim, &mut tr, &mut report, p.broadcasts),
        "partition-heal" => partition_heal(&mut sim, &mut tr, &mut report, &subscribers),
        "presence" => presence(&mut sim, &mut tr, &mut report, &subscribers),
        "replace" => replace(&mut sim, &mut tr, &mut report),
        _ => unreachable!("checked above"),
    }
    let final_subs: Vec<u32> = if p.scenario == "churn" {
        sim.live()
    } else {
        subscribers.clone()
    };
    // A link is one-sided for a round trip while its handshake's answer is in flight:
    // count only links that are still one-sided a second later.
    let one_sided = one_sided_pairs(&sim);
    run(&mut sim, &mut tr, Duration::from_secs(1));
    finish(&sim, &tr, &mut report, &final_subs, baseline);
    report.view_asymmetry = one_sided_pairs(&sim).intersection(&one_sided).count();
    report.sim_s = sim.now.saturating_since(start).as_secs_f64();
    report.wall_s = wall.elapsed().as_secs_f64();
    Ok(report)
}

/// Crash `pct`% of nodes at once, publish right away, then once a second.
fn mass_failure(sim: &mut Sim, tr: &mut Tracker, report: &mut Report, subs: &[u32], pct: usize) {
    for _ in 0..5 {
        let p = random_member(sim, subs);
        publish(sim, tr, p);
        run(sim, tr, Duration::from_millis(200));
    }
    run(sim, tr, Duration::from_secs(2));
    let mut victims = subs.to_vec();
    rand::seq::SliceRandom::shuffle(victims.as_mut_slice(), sim.rng());
    victims.truncate(subs.len() * pct / 100);
    for &v in &victims {
        sim.crash(v);
    }
    let crash_at = sim.now;
    let first = tr.published.len();
    let rounds = 90;
    for _ in 0..rounds {
        let p = random_member(sim, subs);
        publish(sim, tr, p);
        run(sim, tr, Duration::from_secs(1));
    }
    run(sim, tr, Duration::from_secs(5));
    let expected: HashSet<u32> = subs.iter().copied().filter(|&i| sim.alive(i)).collect();
    let outcomes: Vec<Outcome> = tr.published[first..]
        .iter()
        .map(|b| outcome(sim, tr, b, &expected))
        .collect();
    if let Some(o) = outcomes.first() {
        report.first_broadcast_reliability = Some(o.delivered as f64 / o.expected.max(1) as f64);
        report.first_broadcast_reliability_1s =
            Some(o.delivered_1s as f64 / o.expected.max(1) as f64);
    }
    full_delivery_time(report, tr, &outcomes, first, crash_at);
    summarize(report, &outcomes);
}

/// A broadcast counts as fully delivered when every expected receiver had it within this
/// long (a few times the stable network's p99).
const FULL_DEADLINE: Duration = Duration::from_secs(2);

/// Sets the time from `since` until every later broadcast was fully delivered in time.
fn full_delivery_time(
    report: &mut Report,
    tr: &Tracker,
    outcomes: &[Outcome],
    first: usize,
    since: Time,
) {
    let last_partial = outcomes
        .iter()
        .rposition(|o| o.delivered_in_time < o.expected);
    let full_from = match last_partial {
        None => Some(0),
        Some(i) if i + 1 < outcomes.len() => Some(i + 1),
        Some(_) => None,
    };
    if let Some(k) = full_from {
        let t = tr.published[first + k]
            .at
            .saturating_since(since)
            .as_secs_f64();
        report.time_to_full_delivery_s = Some(t);
        let cycle = proto::hyparview::Config::default()
            .shuffle_interval
            .as_secs_f64();
        report.cycles_to_full_delivery = Some((t / cycle).ceil() as u32);
    }
}

/// For 30 s, every second 1% of nodes crash and as many new ones join and subscribe;
/// broadcasts every 200 ms (at most `broadcasts`).
fn churn(sim: &mut Sim, tr: &mut Tracker, report: &mut Report, broadcasts: usize) {
    let mut joined_at: HashMap<u32, Time> = HashMap::new();
    let mut sent = 0;
    let per_second = (sim.live().len() / 100).max(1);
    for _second in 0..30 {
        for _ in 0..per_second {
            if let Some(v) = sim.random_live() {
                sim.crash(v);
            }
            let n = sim.add_node();
            // Three bootstrap contacts, as a deployment would configure.
            for _ in 0..3 {
                if let Some(c) = sim.random_live().filter(|&c| c != n) {
                    sim.join(n, c);
                }
            }
            sim.with(n, |s, now| s.subscribe(topic(), now));
            joined_at.insert(n, sim.now);
        }
        for _ in 0..5 {
            if sent < broadcasts {
                let live = sim.live();
                let p = live[rand::Rng::gen_range(sim.rng(), 0..live.len())];
                publish(sim, tr, p);
                sent += 1;
            }
            run(sim, tr, Duration::from_millis(200));
        }
    }
    run(sim, tr, Duration::from_secs(10));
    // Expected receivers: alive at the end and a member for at least 5 s before the publish.
    let live: Vec<u32> = sim.live();
    let outcomes: Vec<Outcome> = tr
        .published
        .iter()
        .map(|b| {
            let expected: HashSet<u32> = live
                .iter()
                .copied()
                .filter(|i| {
                    joined_at
                        .get(i)
                        .is_none_or(|&t| t + Duration::from_secs(5) <= b.at)
                })
                .collect();
            outcome(sim, tr, b, &expected)
        })
        .collect();
    summarize(report, &outcomes);
}

/// Every node announces presence; then crashes every node whose index ends in 5 (10%, as
/// the node benchmark's churn workload does) and measures, per survivor that lost a network-wide neighbour, the time from the
/// crash until it dropped the dead one and until its next new neighbour.
fn replace(sim: &mut Sim, tr: &mut Tracker, report: &mut Report) {
    // Every node announces presence, as in the benchmark (its failure notices are what
    // tell a crashed node's other neighbours).
    for i in sim.live() {
        let meta = Bytes::from(format!("member {i}"));
        sim.with(i, |s, now| s.set_presence(topic(), meta, now));
    }
    run(sim, tr, Duration::from_secs(5));
    let refill = |sim: &Sim| -> HashMap<u32, proto::hyparview::Counters> {
        sim.live()
            .into_iter()
            .filter_map(|i| Some((i, sim.state(i)?.membership_counters().clone())))
            .collect()
    };
    let victims: Vec<u32> = (0..sim.nodes.len() as u32)
        .filter(|i| i % 10 == 5)
        .collect();
    let victim_ids: HashSet<PeerId> = victims.iter().map(|&v| sim.nodes[v as usize].id).collect();
    for &v in &victims {
        sim.crash(v);
    }
    let before = refill(sim);
    tr.neighbors.clear();
    let crash_at = sim.now;
    run(sim, tr, Duration::from_secs(10));
    let mut down: HashMap<u32, Time> = HashMap::new();
    let mut up: HashMap<u32, Time> = HashMap::new();
    for &(t, node, peer, is_up) in &tr.neighbors {
        if !is_up && victim_ids.contains(&peer) {
            down.entry(node).or_insert(t);
        } else if is_up && down.contains_key(&node) {
            up.entry(node).or_insert(t);
        }
    }
    let since = |t: &Time| ms(t.saturating_since(crash_at));
    let mut detect: Vec<f64> = down.values().map(since).collect();
    detect.sort_by(f64::total_cmp);
    let mut replaced: Vec<f64> = up.values().map(since).collect();
    replaced.sort_by(f64::total_cmp);
    if std::env::var_os("STARLING_SIM_DEBUG").is_some() {
        for (node, t) in &down {
            let s = sim.state(*node);
            eprintln!(
                "node {node} {:?}: down {:.0} ms, up {}, active {}, passive {}, refill {:?}",
                sim.nodes[*node as usize].id,
                since(t),
                up.get(node)
                    .map_or("never".into(), |u| format!("{:.0} ms", since(u))),
                s.map_or(0, |s| s.neighbors().len()),
                s.map_or(0, |s| s.passive_peers().len()),
                s.map(|s| s.membership_counters()),
            );
        }
    }
    report.replace_lost = Some(down.len());
    report.replace_replaced = Some(up.len());
    report.replace_detect_p50_ms = Some(percentile(&detect, 0.5));
    report.replace_detect_max_ms = Some(percentile(&detect, 1.0));
    report.replace_p50_ms = Some(percentile(&replaced, 0.5));
    report.replace_max_ms = Some(if up.len() < down.len() {
        f64::INFINITY
    } else {
        percentile(&replaced, 1.0)
    });
    let after = refill(sim);
    let (mut sent, mut refused, mut timeouts) = (0, 0, 0);
    for (i, a) in &after {
        let b = before.get(i).cloned().unwrap_or_default();
        sent += a.refill_requests - b.refill_requests;
        refused += a.refill_refused - b.refill_refused;
        timeouts += a.refill_timeouts - b.refill_timeouts;
    }
    report.refill_requests = Some((sent, refused, timeouts));
}

/// Splits the network in two halves for 60 s, then heals it.
fn partition_heal(sim: &mut Sim, tr: &mut Tracker, report: &mut Report, subs: &[u32]) {
    let groups: Vec<u8> = (0..sim.nodes.len())
        .map(|_| rand::Rng::gen_range(sim.rng(), 0..2u8))
        .collect();
    sim.partition(&groups);
    for _ in 0..60 {
        let p = random_member(sim, subs);
        publish(sim, tr, p);
        run(sim, tr, Duration::from_secs(1));
    }
    sim.heal();
    let healed_at = sim.now;
    let first = tr.published.len();
    for _ in 0..90 {
        let p = random_member(sim, subs);
        publish(sim, tr, p);
        run(sim, tr, Duration::from_secs(1));
    }
    run(sim, tr, Duration::from_secs(5));
    let expected: HashSet<u32> = subs.iter().copied().collect();
    let outcomes: Vec<Outcome> = tr.published[first..]
        .iter()
        .map(|b| outcome(sim, tr, b, &expected))
        .collect();
    full_delivery_time(report, tr, &outcomes, first, healed_at);
    summarize(report, &outcomes);
}

/// Members announce presence; measure convergence, crash detection and a late joiner.
fn presence(sim: &mut Sim, tr: &mut Tracker, report: &mut Report, members: &[u32]) {
    for &m in members {
        let meta = Bytes::from(format!("member {m}"));
        sim.with(m, |s, now| s.set_presence(topic(), meta, now));
    }
    let announced = sim.now;
    let converged = wait_until(sim, tr, Duration::from_secs(30), STEP * 10, |sim| {
        all_see(sim, members, members)
    });
    report.presence_converge_ms = converged.map(|t| ms(t.saturating_since(announced)));
    run(sim, tr, Duration::from_secs(5));

    // Crash 5% of the members (at least one).
    let mut victims = members.to_vec();
    rand::seq::SliceRandom::shuffle(victims.as_mut_slice(), sim.rng());
    victims.truncate((members.len() / 20).max(1));
    for &v in &victims {
        sim.crash(v);
    }
    let crash_at = sim.now;
    let survivors: Vec<u32> = members.iter().copied().filter(|&m| sim.alive(m)).collect();
    let victim_ids: Vec<_> = victims.iter().map(|&v| sim.nodes[v as usize].id).collect();
    let mut pending: Vec<(u32, usize)> = survivors
        .iter()
        .flat_map(|&m| (0..victim_ids.len()).map(move |v| (m, v)))
        .collect();
    let mut times = Vec::new();
    let until = sim.now + Duration::from_secs(10);
    while sim.now < until && !pending.is_empty() {
        pending.retain(|&(m, v)| {
            let online = sim
                .state(m)
                .is_some_and(|s| s.is_online(&topic(), &victim_ids[v]));
            if !online {
                times.push(ms(sim.now.saturating_since(crash_at)));
            }
            online
        });
        run(sim, tr, STEP);
    }
    times.sort_by(f64::total_cmp);
    let undetected: HashSet<usize> = pending.iter().map(|&(_, v)| v).collect();
    report.crash_detect_p99_ms = Some(if undetected.is_empty() {
        percentile(&times, 0.99)
    } else {
        f64::INFINITY
    });
    report.crash_undetected = Some(undetected.len());

    // A late joiner: how soon after its first topic neighbour does it know everyone online?
    let joiner = sim.add_node();
    let contact = sim.random_live().filter(|&c| c != joiner).unwrap_or(0);
    sim.join(joiner, contact);
    run(sim, tr, Duration::from_secs(3));
    sim.with(joiner, |s, now| s.subscribe(topic(), now));
    let subscribed_at = sim.now;
    let first_neighbor = wait_until(sim, tr, Duration::from_secs(30), STEP, |sim| {
        sim.state(joiner)
            .is_some_and(|s| !s.topic_neighbors(&topic()).is_empty())
    });
    let Some(up_at) = first_neighbor else {
        return;
    };
    let neighbor = sim
        .state(joiner)
        .and_then(|s| s.topic_neighbors(&topic()).first().copied())
        .and_then(|p| sim.index_of(&p));
    let full = wait_until(sim, tr, Duration::from_secs(30), STEP, |sim| {
        all_see(sim, &[joiner], &survivors)
    });
    if let (Some(t), Some(nb)) = (full, neighbor) {
        report.late_join_ms = Some(ms(t.saturating_since(subscribed_at)));
        // The neighbour's accept arrives one round trip after the join left, together with
        // its snapshot: count from the join leaving.
        let rtt = 2.0 * sim.latency(joiner, nb).as_secs_f64();
        report.late_join_rtts = Some(t.saturating_since(up_at).as_secs_f64() / rtt + 1.0);
    }
}

/// Whether every node in `viewers` sees every other node of `targets` online.
fn all_see(sim: &Sim, viewers: &[u32], targets: &[u32]) -> bool {
    viewers.iter().all(|&v| {
        let Some(s) = sim.state(v) else { return true };
        targets
            .iter()
            .filter(|&&t| t != v)
            .all(|&t| s.is_online(&topic(), &sim.nodes[t as usize].id))
    })
}

/// Runs until `cond` holds (checked every `step`) or `limit` passes.
fn wait_until(
    sim: &mut Sim,
    tr: &mut Tracker,
    limit: Duration,
    step: Duration,
    cond: impl Fn(&Sim) -> bool,
) -> Option<Time> {
    let until = sim.now + limit;
    while sim.now < until {
        if cond(sim) {
            return Some(sim.now);
        }
        run(sim, tr, step);
    }
    cond(sim).then_some(sim.now)
}
