#!/usr/bin/env python3
"""Messages per second delivered to a Python callback on one subscription (256-byte
payloads). Prints a Markdown table (or JSON with --json).

Two measurements, reported separately because they bound different things:

1. dispatch: libstarling hands synthetic 256 B messages to a Python ``on_message``
   callback exactly as a topic's delivery thread does (batches of up to 256 from a
   library thread, lowered through uniffi, lifted into ``starling.Message`` objects, one
   Python call per message) -- ``starling._ffi.benchmark_dispatch``. No network, no
   signatures: this is the cost of the binding itself.
2. end-to-end: node A publishes on loopback, node B's ``on_message`` callback counts.
   Bounded by B's Ed25519 verification (one check per message) and by A's publish path
   (one synchronous call per message from Python), not by the binding.

Run after installing the package (scripts/test-python.sh installs it into
$CARGO_TARGET_DIR/python-venv; a release build gives the representative figures):

    python bench/python/bench_callback.py [--messages 200000] [--e2e-messages 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

import starling
from starling import _ffi

PAYLOAD = 256


class Counter:
    def __init__(self, target: int) -> None:
        self.n = 0
        self.bytes = 0
        self.target = target
        self.done = threading.Event()

    def __call__(self, m: starling.Message) -> None:
        # What a real callback minimally does: touch the payload.
        self.bytes += len(m.payload)
        self.n += 1
        if self.n >= self.target:
            self.done.set()


def dispatch_rate(count: int) -> tuple[float, float]:
    """(messages per wall second, messages per CPU second of this process). The second
    is what one core sustains; it differs from the first when the machine is busy."""
    counter = Counter(count)
    adapter = starling._MessageAdapter(counter)
    start, cpu_start = time.perf_counter(), time.process_time()
    _ffi.benchmark_dispatch(adapter, count, PAYLOAD)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert counter.n == count and counter.bytes == count * PAYLOAD, (counter.n, counter.bytes)
    return count / elapsed, count / cpu


def end_to_end_rate(count: int) -> tuple[float, int]:
    net = f"bench-{time.monotonic_ns()}"
    with starling.Node(bind="127.0.0.1:0", network_id=net, subscription_queue=1 << 16) as b, starling.Node(
        bind="127.0.0.1:0", network_id=net, bootstrap=[b.contact]
    ) as a:
        warm = threading.Event()
        counter = Counter(count)

        def on_message(m: starling.Message) -> None:
            if m.payload[:4] == b"warm":
                warm.set()
            else:
                counter(m)

        b.on_message("bench", on_message)
        deadline = time.monotonic() + 20
        while not warm.is_set():  # until the topic overlay carries messages
            if time.monotonic() > deadline:
                raise SystemExit("end-to-end: the nodes never connected")
            a.publish("bench", b"warm")
            warm.wait(0.1)
        payload = bytes(PAYLOAD)
        start = time.perf_counter()
        for _ in range(count):
            a.publish("bench", payload)
        if not counter.done.wait(60):
            print(f"end-to-end: only {counter.n} of {count} delivered within 60 s", file=sys.stderr)
        elapsed = time.perf_counter() - start
        return counter.n / elapsed, count - counter.n


def main() -> int:
    p = argparse.ArgumentParser(description="Python callback delivery rate")
    p.add_argument("--messages", type=int, default=200_000, help="dispatch: messages per run")
    p.add_argument("--runs", type=int, default=5, help="dispatch: runs (median reported)")
    p.add_argument("--e2e-messages", type=int, default=20_000, help="end-to-end: messages (0: skip)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    dispatch_rate(10_000)  # warm-up
    runs = [dispatch_rate(args.messages) for _ in range(args.runs)]
    rates = [r[0] for r in runs]
    cpu_rates = [r[1] for r in runs]
    result = {
        "python": sys.version.split()[0],
        "library": starling.library_version(),
        "payload_bytes": PAYLOAD,
        "dispatch_msgs_per_s_median": round(statistics.median(rates)),
        "dispatch_msgs_per_s_runs": [round(r) for r in rates],
        "dispatch_msgs_per_cpu_s_median": round(statistics.median(cpu_rates)),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "cpus": os.cpu_count(),
    }
    if args.e2e_messages:
        rate, lost = end_to_end_rate(args.e2e_messages)
        result["e2e_msgs_per_s"] = round(rate)
        result["e2e_undelivered"] = lost
    if args.json:
        print(json.dumps(result))
        return 0
    print("| measurement | messages/s | notes |")
    print("|---|---:|---|")
    print(
        f"| dispatch to a Python callback (median of {args.runs} x {args.messages:,}) | "
        f"{result['dispatch_msgs_per_s_median']:,} | runs: {', '.join(f'{r:,}' for r in result['dispatch_msgs_per_s_runs'])} |"
    )
    print(
        f"| same, per CPU-second of the process (all threads) | {result['dispatch_msgs_per_cpu_s_median']:,} | "
        f"load average {result['load_average_1min']} on {result['cpus']} CPUs |"
    )
    if args.e2e_messages:
        print(
            f"| end-to-end, 2 nodes on loopback ({args.e2e_messages:,} messages) | {result['e2e_msgs_per_s']:,} | "
            f"undelivered: {result['e2e_undelivered']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
