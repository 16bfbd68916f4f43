//! The peer comparison (issue 7): `--suite all|peers|quick` runs starling, iroh-gossip and
//! rust-libp2p gossipsub through the same workloads, interleaved (A B C A B C …), plus
//! physical references, and writes the peers section of docs/BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p starling-bench --features peers -- --suite all --json
//!     [--reps R] [--seed S] [--only WORKLOAD]... [--system NAME]... [--sizes N,M,..]
//!     [--no-write | --write]
//!     [--out PATH]
//! ```

/// The suites this module answers.
const SUITES: [&str; 3] = ["all", "peers", "quick"];

fn requested_suite() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == "--suite")?;
    let s = args.get(i + 1)?;
    SUITES.contains(&s.as_str()).then(|| s.clone())
}

/// Runs the peer suites when one is requested: `Some(exit code)`, else `None` (another
/// suite of this binary).
#[cfg(not(feature = "peers"))]
pub fn dispatch() -> Option<i32> {
    let suite = requested_suite()?;
    eprintln!(
        "error: --suite {suite} compares starling with iroh-gossip and libp2p gossipsub, which \
         are behind the `peers` cargo feature (off by default so CI never compiles them).\n\
         Enable it: cargo run --release -p starling-bench --features peers -- --suite {suite}"
    );
    Some(2)
}

#[cfg(feature = "peers")]
pub use enabled::dispatch;

#[cfg(feature = "peers")]
mod enabled {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::requested_suite;
    use crate::physical;
    use crate::systems::iroh_gossip::IrohGossip;
    use crate::systems::libp2p_gossipsub::Libp2pGossipsub;
    use crate::systems::starling::Starling;
    use crate::systems::System;
    use crate::workload::{self, Env, Workload, PRIVATE_NET};

    /// Exact versions of the peers (pinned with `=` in bench/Cargo.toml).
    const VERSIONS: &str = "iroh 1.4.1 + iroh-gossip 0.101.0 (features: net; iroh: tls-ring only); \
        libp2p 0.57.1 (libp2p-gossipsub 0.50.1, libp2p-quic 0.14.0; features: tokio, gossipsub, quic, macros, ed25519); \
        raw QUIC reference: quinn 0.11.12 (rustls 0.23, ring)";

    struct Opts {
        suite: String,
        json: bool,
        reps: usize,
        seed: u64,
        only: Vec<String>,
        /// Only these systems (default: all three).
        systems: Vec<String>,
        write: bool,
        out: std::path::PathBuf,
        /// Re-render the section from this JSON-lines file instead of running.
        render: Option<String>,
        /// Cluster sizes of the broadcast workload (default 10, 50, 100; quick: 10, 50).
        sizes: Vec<usize>,
    }

    fn parse(suite: String) -> Result<Opts, String> {
        let quick = suite == "quick";
        let mut o = Opts {
            suite,
            json: false,
            reps: if quick { 1 } else { 3 },
            seed: 7,
            only: Vec::new(),
            systems: Vec::new(),
            write: !quick,
            out: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/BENCHMARKS.md"),
            render: None,
            sizes: Vec::new(),
        };
        let mut explicit_write = None;
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut val = |n: &str| it.next().ok_or(format!("{n} needs a value"));
            match a.as_str() {
                "--suite" => {
                    val("--suite")?;
                }
                "--json" => o.json = true,
                "--reps" => {
                    o.reps = val("--reps")?
                        .parse()
                        .map_err(|_| "--reps needs a number")?;
                    if o.reps == 0 {
                        return Err("--reps must be at least 1".into());
                    }
                }
                "--seed" => {
                    o.seed = val("--seed")?
                        .parse()
                        .map_err(|_| "--seed needs a number")?
                }
                "--only" => o.only.push(val("--only")?),
                "--system" => {
                    let name = val("--system")?;
                    if !SYS.contains(&name.as_str()) {
                        return Err(format!("--system {name:?}: expected one of {SYS:?}"));
                    }
                    o.systems.push(name);
                }
                "--write" => explicit_write = Some(true),
                "--no-write" => explicit_write = Some(false),
                "--out" => o.out = val("--out")?.into(),
                "--render" => o.render = Some(val("--render")?),
                "--sizes" => {
                    o.sizes = val("--sizes")?
                        .split(',')
                        .map(|n| match n.trim().parse::<usize>() {
                            Ok(n) if n >= 2 => Ok(n),
                            _ => Err(format!(
                                "--sizes {n:?}: expected node counts of at least 2, like 2,5,50"
                            )),
                        })
                        .collect::<Result<_, _>>()?;
                }
                other => {
                    return Err(format!(
                        "unknown argument {other:?} for --suite {}",
                        o.suite
                    ))
                }
            }
        }
        // A partial run (some workloads, systems or sizes) does not replace the published
        // tables unless asked to.
        o.write = explicit_write
            .unwrap_or(o.write && o.only.is_empty() && o.systems.is_empty() && o.sizes.is_empty());
        for w in &o.only {
            if !["broadcast", "throughput", "churn", "join", "physical"].contains(&w.as_str()) {
                return Err(format!(
                    "--only {w:?}: expected broadcast, throughput, churn, join or physical"
                ));
            }
        }
        Ok(o)
    }

    fn workloads(quick: bool, sizes: &[usize]) -> Vec<Workload> {
        let mut v = Vec::new();
        let sizes: &[usize] = match (sizes.is_empty(), quick) {
            (false, _) => sizes,
            (true, true) => &[10, 50],
            (true, false) => &[10, 50, 100],
        };
        let payloads: &[usize] = if quick { &[256] } else { &[256, 16 * 1024] };
        for &n in sizes {
            for &p in payloads {
                v.push(Workload::Broadcast {
                    nodes: n,
                    payload: p,
                    messages: if quick { 30 } else { 200 },
                    // Unsaturated: the latency of a paced stream, not of a queue.
                    interval: Duration::from_millis(if p > 1024 { 50 } else { 20 }),
                });
            }
        }
        if quick {
            v.push(Workload::Broadcast {
                nodes: 10,
                payload: 16 * 1024,
                messages: 30,
                interval: Duration::from_millis(50),
            });
        }
        for publishers in [1, 10] {
            v.push(Workload::Throughput {
                nodes: 10,
                publishers,
                duration: Duration::from_millis(if quick { 1500 } else { 4000 }),
            });
        }
        v.push(Workload::Churn {
            nodes: if quick { 20 } else { 50 },
            after: Duration::from_secs(if quick { 3 } else { 10 }),
        });
        v.push(Workload::Join {
            nodes: if quick { 10 } else { 30 },
        });
        v
    }

    /// Moves this process into a network namespace of its own (root only) so loopback
    /// byte counters are exactly this benchmark's wire traffic.
    fn private_net() -> Result<(), String> {
        // SAFETY: plain syscall; called before any thread exists, affects this thread and
        // every thread created later.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
        }
        let st = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .map_err(|e| format!("ip link set lo up: {e}"))?;
        if !st.success() {
            return Err("ip link set lo up failed".into());
        }
        Ok(())
    }

    /// Runs the suite named by `--suite` if it is one of ours.
    pub fn dispatch() -> Option<i32> {
        let suite = requested_suite()?;
        let o = match parse(suite) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}\nusage: starling-bench --suite all|peers|quick [--json] [--reps R] [--seed S] [--only broadcast|throughput|churn|join|physical]... [--system starling|iroh-gossip|libp2p-gossipsub]... [--sizes N,M,..] [--write|--no-write] [--out PATH] [--render RUN.jsonl]");
                return Some(2);
            }
        };
        if let Some(path) = o.render.clone() {
            return Some(match render(&o, &path) {
                Ok(()) => {
                    eprintln!("wrote the peers section of {}", o.out.display());
                    0
                }
                Err(e) => {
                    eprintln!("error: --render: {e}");
                    1
                }
            });
        }
        let net_note = match private_net() {
            Ok(()) => {
                PRIVATE_NET.store(true, Ordering::Relaxed);
                "own network namespace: wire bytes = loopback tx bytes of this process (IP + UDP headers included)".to_string()
            }
            Err(e) => format!("no private network namespace ({e}): wire bytes not measured (null)"),
        };
        Some(run(o, net_note))
    }

    fn emit(o: &Opts, row: &Value) {
        if o.json {
            println!("{row}");
        } else if let Value::Object(m) = row {
            let parts: Vec<String> = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v.as_f64() {
                    Some(f) if v.is_f64() => format!("{k}={f:.3}"),
                    _ => format!("{k}={v}"),
                })
                .collect();
            println!("{}", parts.join("  "));
        }
    }

    fn run(o: Opts, net_note: String) -> i32 {
        let quick = o.suite == "quick";
        let want = |w: &str| o.only.is_empty() || o.only.iter().any(|x| x == w);
        let started = std::time::Instant::now();
        emit(
            &o,
            &json!({"suite": "peers", "workload": "machine", "machine": machine("at the start"),
                          "net": net_note}),
        );
        let ref_time = Duration::from_millis(if quick { 300 } else { 1000 });
        let mut physical_rows = Vec::new();
        let verify = physical::starling_verify(ref_time);
        let verify_node = verify["verify_limit_msgs_per_s"].as_f64().unwrap_or(0.0);
        emit(&o, &verify);
        physical_rows.push(verify);
        if want("physical") {
            for r in [
                physical::ed25519(ref_time),
                physical::blake3_rates(ref_time),
                physical::quinn_loopback(ref_time * 2),
            ] {
                emit(&o, &r);
                physical_rows.push(r);
            }
        }
        let all: Vec<Box<dyn System>> = vec![
            Box::new(Starling),
            Box::new(IrohGossip),
            Box::new(Libp2pGossipsub),
        ];
        let systems: Vec<Box<dyn System>> = all
            .into_iter()
            .filter(|s| o.systems.is_empty() || o.systems.iter().any(|n| n == s.name()))
            .collect();
        let list: Vec<Workload> = workloads(quick, &o.sizes)
            .into_iter()
            .filter(|w| want(w.name()))
            .collect();
        let mut rows = Vec::new();
        for rep in 0..o.reps {
            for w in &list {
                for sys in &systems {
                    let env = Env::new(o.seed.wrapping_add(rep as u64 * 1000));
                    let mut r = workload::run(sys.as_ref(), w, &env, verify_node);
                    if let Value::Object(m) = &mut r {
                        m.insert("rep".into(), json!(rep));
                    }
                    emit(&o, &r);
                    rows.push(r);
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        if !o.json {
            println!("suite {} took {elapsed:.0} s", o.suite);
        }
        if o.json {
            println!(
                "{}",
                json!({"suite": "peers", "workload": "summary", "elapsed_s": elapsed,
                                  "reps": o.reps, "suite_name": o.suite})
            );
        }
        if o.write {
            let section = report(
                &o,
                &rows,
                &physical_rows,
                &net_note,
                elapsed,
                &machine("at the end"),
            );
            if let Err(e) = write_section(&o.out, &section) {
                eprintln!("error: writing {}: {e}", o.out.display());
                return 1;
            }
            eprintln!("wrote the peers section of {}", o.out.display());
        }
        0
    }

    fn median(mut v: Vec<f64>) -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let m = v.len() / 2;
        Some(if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        })
    }

    fn fmt(v: Option<f64>) -> String {
        match v {
            None => "—".into(),
            Some(x) if x.is_infinite() => "not within the window".into(),
            Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
            Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
            Some(x) => format!("{x:.3}"),
        }
    }

    const SYS: [&str; 3] = ["starling", "iroh-gossip", "libp2p-gossipsub"];

    /// Median of `field` over the rows matching `pred`, per system. A null recovery time
    /// means "not recovered within the window": it counts as infinitely long.
    fn medians(rows: &[Value], pred: &dyn Fn(&Value) -> bool, field: &str) -> [Option<f64>; 3] {
        let mut out = [None; 3];
        for (i, s) in SYS.iter().enumerate() {
            out[i] = median(
                rows.iter()
                    .filter(|r| pred(r) && r["system"] == *s && r.get("error").is_none())
                    .filter_map(|r| match r[field].as_f64() {
                        None if field == "recovery_ms" => Some(f64::INFINITY),
                        v => v,
                    })
                    .collect(),
            );
        }
        out
    }

    fn ratio(a: Option<f64>, b: Option<f64>) -> String {
        match (a, b) {
            (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => {
                format!("{:.2}", a / b)
            }
            _ => "—".into(),
        }
    }

    fn table(out: &mut String, rows: &[Value], configs: &[Config], figures: &[(&str, &str)]) {
        out.push_str("| config | figure | starling | iroh-gossip | libp2p-gossipsub | starling/iroh | starling/libp2p |\n");
        out.push_str("|---|---|---:|---:|---:|---:|---:|\n");
        for (label, pred) in configs {
            for (field, name) in figures {
                let m = medians(rows, pred.as_ref(), field);
                if m.iter().all(Option::is_none) {
                    continue;
                }
                out.push_str(&format!(
                    "| {label} | {name} | {} | {} | {} | {} | {} |\n",
                    fmt(m[0]),
                    fmt(m[1]),
                    fmt(m[2]),
                    ratio(m[0], m[1]),
                    ratio(m[0], m[2])
                ));
            }
        }
        out.push('\n');
    }

    /// The machine, with its load average `when` (e.g. "at the start").
    fn machine(when: &str) -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let load = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .next()
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
            })
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or("?".into(), |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0));
        format!("{cpu}, {cores} cores, {mem} RAM, Linux {kernel}, load average {when} {load}")
    }

    /// Writes the section again from the JSON lines of an earlier `--json` run.
    /// A table row: its label and which result rows it takes.
    type Config = (String, Box<dyn Fn(&Value) -> bool>);

    fn render(o: &Opts, path: &str) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let mut rows = Vec::new();
        let mut physical = Vec::new();
        let (mut machine_line, mut net, mut elapsed, mut reps, mut suite) =
            (None, String::new(), 0.0, 1, "all".to_string());
        for (i, line) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| format!("{path}:{}: not a JSON row: {e}", i + 1))?;
            match v["workload"].as_str() {
                Some("physical") => physical.push(v),
                Some("machine") => {
                    machine_line = v["machine"].as_str().map(String::from);
                    net = v["net"].as_str().unwrap_or_default().to_string();
                }
                Some("summary") => {
                    elapsed = v["elapsed_s"].as_f64().unwrap_or(0.0);
                    reps = v["reps"].as_u64().unwrap_or(1) as usize;
                    suite = v["suite_name"].as_str().unwrap_or("all").to_string();
                }
                _ => {
                    reps = reps.max(v["rep"].as_u64().unwrap_or(0) as usize + 1);
                    rows.push(v);
                }
            }
        }
        if rows.is_empty() {
            return Err(format!("{path}: no workload rows"));
        }
        if net.is_empty() {
            net = if rows
                .iter()
                .any(|r| r["wire_bytes_per_delivery"].is_number())
            {
                "own network namespace: wire bytes = loopback tx bytes of this process (IP + UDP headers included)".into()
            } else {
                "not measured".into()
            };
        }
        let machine_line = machine_line.unwrap_or_else(|| machine("when rendering"));
        let ro = Opts {
            suite,
            json: false,
            reps,
            seed: o.seed,
            only: Vec::new(),
            systems: Vec::new(),
            write: true,
            out: o.out.clone(),
            render: None,
            sizes: Vec::new(),
        };
        let section = report(&ro, &rows, &physical, &net, elapsed, &machine_line);
        write_section(&o.out, &section).map_err(|e| format!("{}: {e}", o.out.display()))
    }

    fn report(
        o: &Opts,
        rows: &[Value],
        physical: &[Value],
        net: &str,
        elapsed: f64,
        machine: &str,
    ) -> String {
        let mut s = String::new();
        let cmd = if o.suite == "quick" {
            "cargo run --release -p starling-bench --features peers -- --suite quick --write"
                .to_string()
        } else {
            format!(
                "cargo run --release -p starling-bench --features peers -- --suite {} --json --reps {}",
                o.suite, o.reps
            )
        };
        s.push_str(
            "## Against peers: starling vs iroh-gossip vs libp2p gossipsub (`--suite all`)\n\n",
        );
        s.push_str(
            "Generated by the benchmark itself; do not edit by hand (between the markers).\n\n",
        );
        s.push_str(&format!("- Command: `{cmd}` (suite `{}`, {} repetition(s), interleaved starling, iroh-gossip, libp2p-gossipsub per workload; {}).\n", o.suite, o.reps, if elapsed > 0.0 { format!("{elapsed:.0} s") } else { "duration not recorded".into() }));
        s.push_str(&format!("- Machine: {machine}.\n"));
        s.push_str("- The machine is shared with other jobs while this runs: absolute figures are noisy; the ratios come from interleaved runs under the same conditions.\n");
        s.push_str(&format!(
            "- Starling {} (this commit); {VERSIONS}; rustc 1.95.\n",
            env!("CARGO_PKG_VERSION")
        ));
        s.push_str(&format!("- Wire bytes: {net}. CPU: user+system time of the whole process (all nodes, the harness threads included) per delivered message. RSS per node: process RSS growth while the nodes start / nodes.\n"));
        s.push_str("- Each figure is the median over repetitions; ratio = starling / peer (below 1 is better for times, bytes and CPU; above 1 is better for delivery and msgs/s).\n\n");

        s.push_str("### Physical references (one core unless said)\n\n");
        for p in physical {
            let mut parts = Vec::new();
            if let Value::Object(m) = p {
                for (k, v) in m {
                    if ["suite", "workload", "note"].contains(&k.as_str()) {
                        continue;
                    }
                    match v.as_f64() {
                        Some(f) if v.is_f64() => parts.push(format!("{k} {}", fmt(Some(f)))),
                        _ => parts.push(format!("{k} {v}")),
                    }
                }
            }
            s.push_str(&format!("- {}\n", parts.join(", ")));
        }
        s.push('\n');

        let is = |w: &'static str| move |r: &Value| r["workload"] == w;
        let mut bcast: Vec<Config> = Vec::new();
        let mut keys: Vec<(u64, u64)> = rows
            .iter()
            .filter(|r| r["workload"] == "broadcast")
            .filter_map(|r| Some((r["nodes"].as_u64()?, r["payload_bytes"].as_u64()?)))
            .collect();
        keys.sort();
        keys.dedup();
        for (n, p) in keys.clone() {
            let f = is("broadcast");
            bcast.push((
                format!("N={n}, {p} B"),
                Box::new(move |r: &Value| {
                    f(r) && r["nodes"].as_u64() == Some(n) && r["payload_bytes"].as_u64() == Some(p)
                }),
            ));
        }
        s.push_str("### Broadcast latency (one publisher, paced: 50 msg/s at 256 B, 20 msg/s at 16 KiB)\n\n");
        table(
            &mut s,
            rows,
            &bcast,
            &[
                ("latency_p50_ms", "P50 ms"),
                ("latency_p90_ms", "P90 ms"),
                ("latency_p99_ms", "P99 ms"),
                ("delivery", "delivery"),
            ],
        );

        let mut tput: Vec<Config> = Vec::new();
        for p in [1u64, 10] {
            let f = is("throughput");
            tput.push((
                format!("10 nodes, {p} publisher(s), 256 B"),
                Box::new(move |r: &Value| f(r) && r["publishers"].as_u64() == Some(p)),
            ));
        }
        s.push_str("### Throughput (publishers as fast as each system accepts; delivered msgs/s per subscriber)\n\n");
        table(
            &mut s,
            rows,
            &tput,
            &[
                ("msgs_per_s", "msgs/s per subscriber"),
                ("delivery", "delivery"),
            ],
        );
        let frac = medians(
            rows,
            &|r: &Value| r["workload"] == "throughput" && r["publishers"].as_u64() == Some(1),
            "fraction_of_verify_limit",
        );
        s.push_str(&format!(
            "Starling's one-publisher throughput is {} of the verify-bound limit (this run's single-core verify rate of the node's checker, {} msgs/s).\n\n",
            frac[0].map_or("—".into(), |f| format!("{:.1}%", f * 100.0)),
            fmt(physical.first().and_then(|p| p["verify_limit_msgs_per_s"].as_f64()))
        ));

        let mut eff: Vec<Config> = Vec::new();
        for (n, p) in keys {
            let f = is("broadcast");
            eff.push((
                format!("broadcast N={n}, {p} B"),
                Box::new(move |r: &Value| {
                    f(r) && r["nodes"].as_u64() == Some(n) && r["payload_bytes"].as_u64() == Some(p)
                }),
            ));
        }
        for p in [1u64, 10] {
            let f = is("throughput");
            eff.push((
                format!("throughput, {p} publisher(s)"),
                Box::new(move |r: &Value| f(r) && r["publishers"].as_u64() == Some(p)),
            ));
        }
        s.push_str("### Efficiency (per delivered message; RSS per node)\n\n");
        table(
            &mut s,
            rows,
            &eff,
            &[
                ("wire_bytes_per_delivery", "wire bytes / delivery"),
                ("cpu_us_per_delivery", "CPU µs / delivery"),
                ("rss_per_node_mb", "RSS MB / node"),
            ],
        );

        // Signing cost, separated: one verify per delivery (starling, libp2p) that
        // iroh-gossip does not pay. Starling checks a drain's broadcasts in one batch, so
        // under saturation its cost per verify lies between the batch and the single rate.
        let per_us = |key: &str| {
            physical
                .first()
                .and_then(|p| p[key].as_f64())
                .map(|r| 1e6 / r.max(1.0))
        };
        let (single_us, batch_us) = (
            per_us("verify_limit_msgs_per_s"),
            per_us("batch_verify_msgs_per_s"),
        );
        let cpu = medians(
            rows,
            &|r: &Value| r["workload"] == "throughput" && r["publishers"].as_u64() == Some(1),
            "cpu_us_per_delivery",
        );
        if let (Some(v), Some(b), Some(c)) = (single_us, batch_us, cpu[0]) {
            s.push_str(&format!(
                "Signature cost separated: one Ed25519 verify through starling's checker costs {} µs of one core here alone and {} µs in a batch of 64 (what a saturated node mostly does); starling and libp2p-gossipsub verify every delivered message, iroh-gossip does not sign. Starling's one-publisher CPU per delivery without that verify: {} µs counting batched checks, {} µs counting single ones (vs iroh-gossip {}: ratio {} and {}).\n\n",
                fmt(Some(v)),
                fmt(Some(b)),
                fmt(Some(c - b)),
                fmt(Some(c - v)),
                fmt(cpu[1]),
                ratio(Some(c - b), cpu[1]),
                ratio(Some(c - v), cpu[1])
            ));
        }

        let churn: Vec<Config> = vec![(
            format!(
                "N={}, 30% killed",
                rows.iter()
                    .find(|r| r["workload"] == "churn")
                    .and_then(|r| r["nodes"].as_u64())
                    .unwrap_or(0)
            ),
            Box::new(is("churn")),
        )];
        s.push_str(
            "### Churn (50 msg/s from a surviving publisher; 30% of the nodes aborted at once)\n\n",
        );
        table(
            &mut s,
            rows,
            &churn,
            &[
                ("delivery", "delivery among survivors"),
                ("recovery_ms", "ms until back to 100%"),
            ],
        );
        let join: Vec<Config> = vec![(
            format!(
                "{} nodes + 1",
                rows.iter()
                    .find(|r| r["workload"] == "join")
                    .and_then(|r| r["nodes"].as_u64())
                    .unwrap_or(0)
            ),
            Box::new(is("join")),
        )];
        s.push_str(
            "### Join (a new node bootstraps from one live node during a 20 msg/s stream)\n\n",
        );
        table(
            &mut s,
            rows,
            &join,
            &[
                ("join_first_msg_ms", "ms to first message"),
                (
                    "join_online_ms",
                    "ms to see the online set (starling presence)",
                ),
            ],
        );
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| r.get("error").is_some() || r["overlay_formed"] == false)
            .map(|r| {
                format!(
                    "{} {} N={} rep {}: {}",
                    r["system"],
                    r["workload"],
                    r["nodes"],
                    r["rep"],
                    r.get("error").map_or(
                        "overlay did not carry a probe to every node before the deadline".into(),
                        |e| e.to_string()
                    )
                )
            })
            .collect();
        if !failed.is_empty() {
            s.push_str("Runs with problems (their figures are included as measured):\n\n");
            for f in failed {
                s.push_str(&format!("- {f}\n"));
            }
            s.push('\n');
        }
        s.push_str(SETTINGS);
        s.push_str(NOTES);
        s
    }

    const SETTINGS: &str = include_str!("peers_settings.md");
    /// Why starling loses where it loses (profiles and counters of the committed run).
    const NOTES: &str = include_str!("peers_notes.md");

    const BEGIN: &str = "<!-- peers:begin -->";
    const END: &str = "<!-- peers:end -->";

    /// Replaces the text between the markers (or appends the section with markers).
    fn write_section(path: &std::path::Path, section: &str) -> std::io::Result<()> {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let block = format!("{BEGIN}\n{section}{END}");
        let new = match (old.find(BEGIN), old.find(END)) {
            (Some(a), Some(b)) if a < b => {
                format!("{}{}{}", &old[..a], block, &old[b + END.len()..])
            }
            _ => format!("{}\n{}\n", old.trim_end(), block),
        };
        std::fs::write(path, new)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn section_replaces_between_markers_and_appends_otherwise() {
            let dir = std::env::temp_dir().join(format!("peers-md-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join("B.md");
            std::fs::write(&p, "# B\n\nkeep\n").unwrap();
            write_section(&p, "one\n").unwrap();
            let a = std::fs::read_to_string(&p).unwrap();
            assert!(a.starts_with("# B\n\nkeep\n"));
            assert!(a.contains(&format!("{BEGIN}\none\n{END}")));
            std::fs::write(&p, format!("{a}after\n")).unwrap();
            write_section(&p, "two\n").unwrap();
            let b = std::fs::read_to_string(&p).unwrap();
            assert!(!b.contains("one"));
            assert!(b.contains(&format!("{BEGIN}\ntwo\n{END}")));
            assert!(b.ends_with("after\n"));
            assert_eq!(b.matches(BEGIN).count(), 1);
            std::fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn medians_of_even_and_odd_counts() {
            assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
            assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
            assert_eq!(median(vec![]), None);
        }
    }
}
