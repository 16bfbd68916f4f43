#!/usr/bin/env bash
# Two C processes exchange messages and presence over loopback: test_peer listen and
# test_peer dial, the listener's contact passed through a file. Usage:
#   two_process.sh TEST_PEER_BINARY [WRAPPER...]   (e.g. a valgrind command line)
set -euo pipefail
bin="$1"; shift
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
"$@" "$bin" listen "$dir/contact" & listener=$!
status=0
"$@" "$bin" dial "$dir/contact" || status=$?
wait "$listener" || status=$?
exit "$status"
