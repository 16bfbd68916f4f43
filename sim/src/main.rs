//! `starling-sim --scenario NAME --nodes N --seed S [--broadcasts B] [--json]`
//!
//! Runs one scenario (or `--scenario all`) of the deterministic simulator and prints a
//! table, or one JSON object per line with `--json`.

use std::process::ExitCode;

use starling_sim::{run_scenario, Params, Report, SCENARIOS};

const USAGE: &str = "usage: starling-sim --scenario NAME|all [--nodes N] [--seed S] [--broadcasts B] [--latency MIN-MAX] [--json]";

fn parse() -> Result<(Vec<String>, Params, bool), String> {
    let mut p = Params {
        scenario: String::new(),
        nodes: 1000,
        seed: 1,
        broadcasts: 100,
        latency_ms: (10, 90),
    };
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--scenario" => p.scenario = value("--scenario")?,
            "--nodes" => {
                p.nodes = value("--nodes")?
                    .parse()
                    .map_err(|e| format!("--nodes: {e}"))?
            }
            "--seed" => {
                p.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--broadcasts" => {
                p.broadcasts = value("--broadcasts")?
                    .parse()
                    .map_err(|e| format!("--broadcasts: {e}"))?
            }
            "--latency" => {
                let v = value("--latency")?;
                let (lo, hi) = v.split_once('-').unwrap_or((&v, &v));
                let num = |s: &str| {
                    s.parse::<u64>()
                        .map_err(|e| format!("--latency {v:?}: {e}"))
                };
                p.latency_ms = (num(lo)?, num(hi)?);
            }
            "--json" => json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if p.scenario.is_empty() {
        return Err("--scenario is required".into());
    }
    let names = if p.scenario == "all" {
        SCENARIOS.iter().map(|s| s.to_string()).collect()
    } else {
        vec![p.scenario.clone()]
    };
    Ok((names, p, json))
}

fn print_row(r: &Report) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    println!(
        "{:<16} {:>6} {:>5} {:>6.4} {:>6.3} {:>4} {:>8.1} {:>8.1} {:>7.2} {:>4} first={} first1s={} full_s={} conv_ms={} crash_p99_ms={} late_rtts={} nonsub={} wall={:.1}s",
        r.scenario,
        r.nodes,
        r.broadcasts,
        r.reliability,
        r.rmr,
        r.ldh_max,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.control_msgs_per_node,
        r.isolated_nodes,
        opt(r.first_broadcast_reliability),
        opt(r.first_broadcast_reliability_1s),
        opt(r.time_to_full_delivery_s),
        opt(r.presence_converge_ms),
        opt(r.crash_detect_p99_ms),
        opt(r.late_join_rtts),
        r.nonsubscriber_payloads.map_or("-".into(), |v| v.to_string()),
        r.wall_s,
    );
}

fn main() -> ExitCode {
    let (names, params, json) = match parse() {
        Ok(x) => x,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}\nscenarios: {}", SCENARIOS.join(", "));
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    if !json {
        println!(
            "{:<16} {:>6} {:>5} {:>6} {:>6} {:>4} {:>8} {:>8} {:>7} {:>4}",
            "scenario", "nodes", "bcast", "rel", "rmr", "ldh", "p50_ms", "p99_ms", "ctl/n/s", "iso"
        );
    }
    for name in names {
        let p = Params {
            scenario: name,
            ..params.clone()
        };
        match run_scenario(&p) {
            Ok(r) if json => match serde_json::to_string(&r) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            },
            Ok(r) => print_row(&r),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
