#!/usr/bin/env bash
# Installs what scripts/test-all.sh needs beyond the Rust toolchain, each thing only if it is
# missing (a no-op on a machine that has them all), from the registries this project may
# use: Debian packages (apt), npm, the pinned cbindgen from crates.io. Maven and pip fetch
# their own packages (Maven Central, PyPI) when the Kotlin and Python tests run.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
have() { command -v "$1" >/dev/null 2>&1; }

pkgs=()
# The web view's browser test (cli/tests/web): chromium, node and npm.
[ -x /usr/bin/chromium ] || pkgs+=(chromium)
have npm || pkgs+=(nodejs npm)
# The C API tests (scripts/test-c.sh): compiler, build tools, valgrind.
have cc || pkgs+=(gcc libc6-dev)
have cmake || pkgs+=(cmake)
have make || pkgs+=(make)
have pkg-config || pkgs+=(pkg-config)
have valgrind || pkgs+=(valgrind)
# The Kotlin bindings (scripts/test-kotlin.sh) and the Swift FFI checks (clang).
have java || pkgs+=(default-jdk-headless)
have mvn || pkgs+=(maven)
have clang || pkgs+=(clang)
# The Python bindings' test makes a venv.
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || pkgs+=(python3-venv python3-pip)

if [ "${#pkgs[@]}" -gt 0 ]; then
    echo "installing from Debian: ${pkgs[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi

if [ ! -d cli/tests/web/node_modules/playwright-core ]; then
    (cd cli/tests/web && npm ci --no-audit --no-fund --loglevel=error)
fi

CBINDGEN_VERSION=0.29.4 # keep in step with scripts/test-c.sh
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(cbindgen --version 2>/dev/null | awk '{print $2}')" != "$CBINDGEN_VERSION" ]; then
    cargo install --locked --force --version "$CBINDGEN_VERSION" cbindgen
fi
