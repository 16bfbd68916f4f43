#!/usr/bin/env bash
# The Python bindings: checks that the committed generated sources (Kotlin, Swift) match
# the Rust exports, builds and installs the package (debug libstarling) into a venv under
# the target dir, and runs its pytest suite. Called by scripts/test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
target=$(cd "$target" && pwd)

scripts/gen-bindings.sh --check

venv="$target/python-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip --version >/dev/null
"$py" -c "import pytest" 2>/dev/null || "$py" -m pip install -q --disable-pip-version-check "pytest>=7,<10"

# pip fetches the pinned maturin (pyproject build-system) and builds in the tree; the dev
# profile keeps CI time down (a release build of libstarling takes minutes on 2 cores).
CARGO_TARGET_DIR="$target" MATURIN_PEP517_ARGS="--profile dev" \
    "$py" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./bindings/python

# Run from outside the source tree so the installed package (with its library) is tested.
cd bindings/python/tests
"$py" -m pytest -q -p no:cacheprovider "$@"
