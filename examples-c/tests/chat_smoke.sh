#!/usr/bin/env bash
# The chat example end to end: alice starts, bob joins through her contact; bob's line
# must appear in alice's output under bob's name, and alice must see bob leave when his
# input ends. Usage: chat_smoke.sh CHAT_BINARY
set -euo pipefail
bin="$1"
dir="$(mktemp -d)"
alice=""
cleanup() { [ -n "$alice" ] && kill "$alice" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
mkfifo "$dir/alice.in"
# alice reads from a fifo held open by fd 3, so her input ends only when we close it.
"$bin" --bind 127.0.0.1:0 --name alice < "$dir/alice.in" > "$dir/alice.out" 2>&1 &
alice=$!
exec 3> "$dir/alice.in"

wait_for() { # FILE PATTERN WHAT
    for _ in $(seq 300); do grep -q -- "$2" "$1" && return 0; sleep 0.1; done
    echo "timeout: $3; $1 has:" >&2; cat "$1" >&2; return 1
}
wait_for "$dir/alice.out" "--join " "alice's contact"
contact="$(sed -n 's/.*--join \([^ )]*\).*/\1/p' "$dir/alice.out" | head -n1)"

# bob says hello every 0.2 s (the first lines may precede the topic tree) until alice
# has shown it, then his input ends and he leaves.
(
    for _ in $(seq 150); do
        echo "hello from bob"
        grep -q "\[bob\] hello from bob" "$dir/alice.out" && break
        sleep 0.2
    done
) | timeout 60 "$bin" --join "$contact" --name bob > "$dir/bob.out" 2>&1
wait_for "$dir/alice.out" "\[bob\] hello from bob" "bob's line at alice, under his name"
wait_for "$dir/alice.out" "\* bob left" "alice seeing bob leave"
wait_for "$dir/bob.out" "\* alice is online" "bob seeing alice online"
exec 3>&-
wait "$alice"
alice=""
echo "chat: alice saw bob's message and his leaving"
