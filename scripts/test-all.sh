#!/usr/bin/env bash
# Runs every check and test of the project. This is the test command README.md gives,
# and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace)"
cargo test --workspace --locked

# The live web view in headless Chromium (cli/tests/web; .ci/run installs its tools).
step "web view in headless Chromium"
if [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && command -v node >/dev/null 2>&1 \
    && [ -d cli/tests/web/node_modules/playwright-core ]; then
    cargo build -p starling-cli --locked
    target="${CARGO_TARGET_DIR:-target}"
    # The committed docs/demo-web.png is refreshed by running the script by hand.
    SCREENSHOT="$target/demo-web.png" node cli/tests/web/web-view.test.js "$target/debug/starling"
elif [ "${STARLING_REQUIRE_WEB_TEST:-0}" = 1 ]; then
    echo "error: chromium, node or cli/tests/web/node_modules missing (see .ci/run)" >&2
    exit 1
else
    echo "skipped: needs /usr/bin/chromium, node, and 'npm ci' in cli/tests/web (.ci/run does both)"
fi

# libstarling's C API: header drift, C examples and tests (CMake, make, shared and static),
# valgrind and AddressSanitizer (scripts/test-c.sh; .ci/run installs its tools).
step "C API (scripts/test-c.sh)"
./scripts/test-c.sh

# The Kotlin bindings: JUnit 5 suite through Maven (bindings/kotlin; .ci/run installs Maven).
step "Kotlin bindings (JUnit 5 via Maven)"
if command -v mvn >/dev/null 2>&1 && command -v java >/dev/null 2>&1; then
    ./scripts/test-kotlin.sh
elif [ "${STARLING_REQUIRE_KOTLIN_TEST:-0}" = 1 ]; then
    echo "error: java or mvn missing (see .ci/run)" >&2
    exit 1
else
    echo "skipped: needs java and mvn (.ci/run installs them)"
fi

# The Swift bindings as far as they can be checked without Swift: the generated FFI header
# with clang and gcc, its symbols against libstarling.so, the load-time checksums.
step "Swift bindings: FFI header, symbols and checksums (no Swift compiler here)"
if command -v clang >/dev/null 2>&1; then
    ./scripts/test-swift.sh
elif [ "${STARLING_REQUIRE_SWIFT_FFI_TEST:-0}" = 1 ]; then
    echo "error: clang missing (see .ci/run)" >&2
    exit 1
else
    echo "skipped: needs clang (.ci/run installs it)"
fi

# The Python bindings (bindings/python): generated-source drift check, package build into
# a venv, pytest (.ci/run installs python3-venv if missing; pip fetches maturin and pytest).
step "Python bindings (scripts/test-python.sh)"
./scripts/test-python.sh
