//! `starling-sim --scenario NAME --nodes N --seed S [--broadcasts B] [--json]`
//!
//! Runs one scenario (or `--scenario all`) of the deterministic simulator and prints a
//! table, or one JSON object per line with `--json`.

use std::process::ExitCode;

use starling_sim::{run_scenario, Params, Report, SCENARIOS};

const USAGE: &str = "usage: starling-sim --scenario NAME|all [--nodes N] [--seed S] [--broadcasts B] [--latency MIN-MAX] [--json|--markdown]\n       starling-sim --render RESULTS.jsonl   (JSON lines from --json, as a Markdown table)";

/// How results are printed: a Markdown table (readable on a terminal too) or JSON lines.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Json,
    Markdown,
}

fn parse() -> Result<(Vec<String>, Params, Output), String> {
    let mut p = Params {
        scenario: String::new(),
        nodes: 1000,
        seed: 1,
        broadcasts: 100,
        latency_ms: (10, 90),
    };
    let mut output = Output::Markdown;
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
            "--json" => output = Output::Json,
            "--markdown" => output = Output::Markdown,
            "--render" => {
                p.scenario = format!("@{}", value("--render")?);
                output = Output::Markdown;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if p.scenario.is_empty() {
        return Err("--scenario is required".into());
    }
    let names = if p.scenario.starts_with('@') {
        vec![p.scenario.clone()]
    } else if p.scenario == "all" {
        SCENARIOS.iter().map(|s| s.to_string()).collect()
    } else {
        vec![p.scenario.clone()]
    };
    if let Some(bad) = names
        .iter()
        .find(|n| !n.starts_with('@') && !SCENARIOS.contains(&n.as_str()))
    {
        return Err(format!("unknown scenario {bad:?}"));
    }
    Ok((names, p, output))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.digits$}"))
}

fn markdown_header() {
    println!("| scenario | nodes | bcasts | reliability | RMR | LDH max | p50 ms | p99 ms | control msgs/node/s | isolated | components (net/topic) | first bcast (eventual / ≤1 s) | full delivery after | presence converge ms | crash offline p99 ms | late join RTTs | non-subscriber payloads | wall s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

fn markdown_row(r: &Report) {
    println!(
        "| {} | {} | {} | {:.4} | {:.3} | {} | {:.0} | {:.0} | {:.1} | {} | {}/{} | {} / {} | {} | {} | {} | {} | {} | {:.1} |",
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
        r.network_components,
        r.topic_components,
        opt(r.first_broadcast_reliability, 3),
        opt(r.first_broadcast_reliability_1s, 3),
        r.time_to_full_delivery_s.map_or("–".into(), |s| format!("{s:.0} s ({} cycles)", r.cycles_to_full_delivery.unwrap_or(0))),
        opt(r.presence_converge_ms, 0),
        opt(r.crash_detect_p99_ms, 0),
        opt(r.late_join_rtts, 2),
        r.nonsubscriber_payloads.map_or("–".into(), |v| v.to_string()),
        r.wall_s,
    );
}

/// Prints JSON-lines results (from `--json`) as a Markdown table.
fn render(path: &str) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    markdown_header();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<Report>(line) {
            Ok(r) => markdown_row(&r),
            Err(e) => {
                eprintln!("error: {path}:{}: {e}", n + 1);
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let (names, params, output) = match parse() {
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
    if let Some(path) = names.first().and_then(|n| n.strip_prefix('@')) {
        return render(path);
    }
    if output == Output::Markdown {
        markdown_header();
    }
    for name in names {
        let p = Params {
            scenario: name,
            ..params.clone()
        };
        match run_scenario(&p) {
            Ok(r) if output == Output::Markdown => markdown_row(&r),
            Ok(r) => match serde_json::to_string(&r) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
