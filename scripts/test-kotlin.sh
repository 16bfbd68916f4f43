#!/usr/bin/env bash
# Builds libstarling, puts the library where the jar carries it (bindings/kotlin/target/native/linux-x86-64/libstarling.so) and runs the
# JUnit 5 suite of bindings/kotlin with Maven (which fetches its plugins from Maven Central).
# Then installs the jar into the local Maven repository for examples-kotlin and bench/kotlin.
#
#   ./scripts/test-kotlin.sh                 # debug library
#   PROFILE=release ./scripts/test-kotlin.sh # release library
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in java mvn; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool not found (scripts/install-test-deps.sh installs it)" >&2; exit 1; }
done

profile="${PROFILE:-debug}"
target="${CARGO_TARGET_DIR:-target}"
flags=(--locked -p starling-ffi)
[ "$profile" = release ] && flags+=(--release)
cargo build "${flags[@]}"
lib="$target/$profile/libstarling.so"

# The generated sources (committed; scripts/gen-bindings.sh --check guards them) must match
# the library: the generated Kotlin checks the contract version and API checksums on load,
# so a mismatch fails the first test.
native=bindings/kotlin/target/native/linux-x86-64
mkdir -p "$native"
cp "$lib" "$native/libstarling.so"

cd bindings/kotlin
# Not -q: Surefire's "Tests run: N, Failures: 0" summary is the record of what ran.
mvn -B -ntp -Dstyle.color=never install
