#!/usr/bin/env bash
# Generates the Python, Kotlin and Swift sources from libstarling's uniffi metadata
# (library mode). The Kotlin and Swift sources are committed under bindings/ and
# scripts/test-python.sh runs this with --check to fail when they drift from the Rust
# exports. The Python module is not committed: maturin generates it when the package is
# built (pip install ./bindings/python), with this same workspace generator; this script
# leaves a copy in $CARGO_TARGET_DIR/bindings-python/ for reading.
#
#   scripts/gen-bindings.sh            debug libstarling (what the tests use)
#   scripts/gen-bindings.sh --release  release libstarling
#   scripts/gen-bindings.sh --check    generate into a temporary dir and compare
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
check=0
for arg in "$@"; do
    case "$arg" in
        --release) profile=release ;;
        --check) check=1 ;;
        *) echo "usage: $0 [--release] [--check]" >&2; exit 2 ;;
    esac
done
target="${CARGO_TARGET_DIR:-target}"
cargo_profile=()
[ "$profile" = release ] && cargo_profile=(--release)

cargo build -p starling-ffi --locked "${cargo_profile[@]}"
lib="$target/$profile/libstarling.so"
[ -f "$lib" ] || { echo "error: $lib was not built" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# -p: the generator's "cli" features must not reach the library build.
cargo run -q -p uniffi-bindgen --locked -- generate "$lib" \
    --language python --language kotlin --language swift --out-dir "$out/raw" >/dev/null

# Lay the files out where each package expects them.
stage="$out/stage"
mkdir -p "$stage/bindings/kotlin/src/main/kotlin/dev/starling/ffi" \
    "$stage/bindings/swift/Sources/Starling" \
    "$stage/bindings/swift/Sources/StarlingFFI/include"
mkdir -p "$target/bindings-python"
cp "$out/raw/starling.py" "$target/bindings-python/starling.py"
cp "$out/raw/dev/starling/ffi/starling.kt" "$stage/bindings/kotlin/src/main/kotlin/dev/starling/ffi/starling.kt"
cp "$out/raw/Starling.swift" "$stage/bindings/swift/Sources/Starling/Starling.swift"
cp "$out/raw/StarlingFFI.h" "$stage/bindings/swift/Sources/StarlingFFI/include/StarlingFFI.h"
cp "$out/raw/StarlingFFI.modulemap" "$stage/bindings/swift/Sources/StarlingFFI/include/module.modulemap"

files=(
    bindings/kotlin/src/main/kotlin/dev/starling/ffi/starling.kt
    bindings/swift/Sources/Starling/Starling.swift
    bindings/swift/Sources/StarlingFFI/include/StarlingFFI.h
    bindings/swift/Sources/StarlingFFI/include/module.modulemap
)
if [ "$check" = 1 ]; then
    status=0
    for f in "${files[@]}"; do
        if ! cmp -s "$stage/$f" "$f"; then
            echo "error: $f differs from what the Rust exports generate (run scripts/gen-bindings.sh and commit)" >&2
            diff -u "$f" "$stage/$f" | head -20 >&2 || true
            status=1
        fi
    done
    [ "$status" = 0 ] && echo "generated bindings are up to date"
    exit "$status"
fi
for f in "${files[@]}"; do
    mkdir -p "$(dirname "$f")"
    cp "$stage/$f" "$f"
    echo "wrote $f"
done
