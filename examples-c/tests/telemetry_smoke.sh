#!/usr/bin/env bash
# The telemetry example end to end: a collector and two publishers on loopback; the
# collector must receive at least 6 readings, from both, and exit on its own. Usage:
#   telemetry_smoke.sh TELEMETRY_BINARY
set -euo pipefail
bin="$1"
dir="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
timeout 60 "$bin" collect --bind 127.0.0.1:0 --contact-file "$dir/contact" --count 6 --nodes 2 > "$dir/collector.out" &
collector=$!
for _ in $(seq 200); do [ -s "$dir/contact" ] && break; sleep 0.1; done
[ -s "$dir/contact" ] || { echo "collector wrote no contact file" >&2; exit 1; }
for s in kitchen cellar; do
    timeout 60 "$bin" publish --join "$(cat "$dir/contact")" --sensor "$s" --interval-ms 200 --count 100 > "$dir/$s.out" &
    pids+=($!)
done
if ! wait "$collector"; then
    echo "collector failed; its output:" >&2; cat "$dir/collector.out" >&2; exit 1
fi
# The last table lists both sensors.
tail -n 3 "$dir/collector.out"
grep -q "sensor=kitchen" "$dir/collector.out" && grep -q "sensor=cellar" "$dir/collector.out" \
    || { echo "the collector did not see both sensors" >&2; cat "$dir/collector.out" >&2; exit 1; }
