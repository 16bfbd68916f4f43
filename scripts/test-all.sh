#!/usr/bin/env bash
# Runs every check and test of the project. This is the test command README.md gives,
# and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Tools for the C, Kotlin, Swift-header, Python and browser tests, each installed only if
# missing (apt, npm, crates.io; needs root or sudo the first time). STARLING_SKIP_INSTALL=1
# skips this, and then the tests whose tools are absent are skipped with a message instead
# of failing.
if [ "${STARLING_SKIP_INSTALL:-0}" != 1 ]; then
    step "tools the tests need (scripts/install-test-deps.sh)"
    ./scripts/install-test-deps.sh
    export STARLING_REQUIRE_WEB_TEST=1 STARLING_REQUIRE_C_TEST=1 \
        STARLING_REQUIRE_KOTLIN_TEST=1 STARLING_REQUIRE_SWIFT_FFI_TEST=1
fi
export PATH="$HOME/.cargo/bin:$PATH"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace)"
cargo test --workspace --locked

# The live web view in headless Chromium (cli/tests/web; scripts/install-test-deps.sh installs its tools).
step "web view in headless Chromium"
if [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && command -v node >/dev/null 2>&1 \
    && [ -d cli/tests/web/node_modules/playwright-core ]; then
    cargo build -p starling-cli --locked
    target="${CARGO_TARGET_DIR:-target}"
    # The committed docs/demo-web.png is refreshed by running the script by hand.
    SCREENSHOT="$target/demo-web.png" node cli/tests/web/web-view.test.js "$target/debug/starling"
elif [ "${STARLING_REQUIRE_WEB_TEST:-0}" = 1 ]; then
    echo "error: chromium, node or cli/tests/web/node_modules missing (see scripts/install-test-deps.sh)" >&2
    exit 1
else
    echo "skipped: needs /usr/bin/chromium, node, and 'npm ci' in cli/tests/web (scripts/install-test-deps.sh does both)"
fi

# libstarling's C API: header drift, C examples and tests (CMake, make, shared and static),
# valgrind and AddressSanitizer (scripts/test-c.sh; scripts/install-test-deps.sh installs its tools).
step "C API (scripts/test-c.sh)"
./scripts/test-c.sh

# The Kotlin bindings: JUnit 5 suite through Maven (bindings/kotlin; scripts/install-test-deps.sh installs Maven).
step "Kotlin bindings (JUnit 5 via Maven)"
if command -v mvn >/dev/null 2>&1 && command -v java >/dev/null 2>&1; then
    ./scripts/test-kotlin.sh
elif [ "${STARLING_REQUIRE_KOTLIN_TEST:-0}" = 1 ]; then
    echo "error: java or mvn missing (see scripts/install-test-deps.sh)" >&2
    exit 1
else
    echo "skipped: needs java and mvn (scripts/install-test-deps.sh installs them)"
fi

# The Swift bindings as far as they can be checked without Swift: the generated FFI header
# with clang and gcc, its symbols against libstarling.so, the load-time checksums.
step "Swift bindings: FFI header, symbols and checksums (no Swift compiler here)"
if command -v clang >/dev/null 2>&1; then
    ./scripts/test-swift.sh
elif [ "${STARLING_REQUIRE_SWIFT_FFI_TEST:-0}" = 1 ]; then
    echo "error: clang missing (see scripts/install-test-deps.sh)" >&2
    exit 1
else
    echo "skipped: needs clang (scripts/install-test-deps.sh installs it)"
fi

# The Python bindings (bindings/python): generated-source drift check, package build into
# a venv, pytest (scripts/install-test-deps.sh installs python3-venv if missing; pip fetches maturin and pytest).
step "Python bindings (scripts/test-python.sh)"
./scripts/test-python.sh

# Python, C and Kotlin nodes on loopback: messages and presence across the three languages
# (scripts/test-cross.sh reuses what the C, Kotlin and Python steps above built).
step "cross-language: Python, C and Kotlin chats (scripts/test-cross.sh)"
if command -v mvn >/dev/null 2>&1 && command -v java >/dev/null 2>&1 && command -v cc >/dev/null 2>&1; then
    ./scripts/test-cross.sh
elif [ "${STARLING_REQUIRE_KOTLIN_TEST:-0}" = 1 ]; then
    echo "error: java, mvn or cc missing (see scripts/install-test-deps.sh)" >&2
    exit 1
else
    echo "skipped: needs java, mvn and cc (scripts/install-test-deps.sh installs them)"
fi
