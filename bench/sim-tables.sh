#!/usr/bin/env bash
# Runs every simulator scenario at 1,000 and 10,000 nodes (plus the stable scenario with
# uniform 50 ms links) and prints the Markdown tables used in docs/BENCHMARKS.md. Raw
# results go to docs/sim-results/*.jsonl. About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p starling-sim
sim=target/release/starling-sim
out=docs/sim-results
mkdir -p "$out"
for n in 1000 10000; do
    "$sim" --scenario all --nodes "$n" --json > "$out/all-$n.jsonl"
    "$sim" --scenario stable --nodes "$n" --latency 50-50 --json > "$out/stable-$n-uniform50.jsonl"
done
for f in "$out"/all-1000.jsonl "$out"/all-10000.jsonl "$out"/stable-*-uniform50.jsonl; do
    printf '\n%s\n\n' "$f"
    "$sim" --render "$f"
done
