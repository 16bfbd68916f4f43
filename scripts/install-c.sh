#!/usr/bin/env bash
# Builds libstarling and installs the C SDK into a prefix:
#   <prefix>/include/starling.h
#   <prefix>/lib/libstarling.so, <prefix>/lib/libstarling.a
#   <prefix>/lib/pkgconfig/starling.pc, starling-static.pc
#   <prefix>/lib/cmake/starling/starlingConfig.cmake (+ ConfigVersion)
# Usage: scripts/install-c.sh --prefix DIR [--release] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="" profile=debug build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
        --release) profile=release; shift ;;
        --no-build) build=0; shift ;;
        *) echo "usage: $0 --prefix DIR [--release] [--no-build]" >&2; exit 2 ;;
    esac
done
[ -n "$prefix" ] || { echo "usage: $0 --prefix DIR [--release] [--no-build]" >&2; exit 2; }

if [ "$build" = 1 ]; then
    if [ "$profile" = release ]; then
        cargo build -p starling-ffi --release --locked
    else
        cargo build -p starling-ffi --locked
    fi
fi
target="${CARGO_TARGET_DIR:-target}/$profile"
for f in libstarling.so libstarling.a; do
    [ -f "$target/$f" ] || { echo "error: $target/$f missing (build first)" >&2; exit 1; }
done

mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
major="${version%%.*}" rest="${version#*.}"
minor="${rest%%.*}"
# What `rustc --print native-static-libs` reports for this crate on Linux (glibc); the
# static example links with exactly these, so a missing one fails the test.
native_static_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

mkdir -p "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/starling"
install -m 0644 include/starling.h "$prefix/include/starling.h"
install -m 0755 "$target/libstarling.so" "$prefix/lib/libstarling.so"
install -m 0644 "$target/libstarling.a" "$prefix/lib/libstarling.a"
subst() {
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" \
        -e "s|@VERSION_MAJOR@|$major|g" -e "s|@VERSION_MINOR@|$minor|g" \
        -e "s|@NATIVE_STATIC_LIBS@|$native_static_libs|g" \
        -e "s|@NATIVE_STATIC_LIBS_CMAKE@|$(echo "$native_static_libs" | sed 's/-l//g; s/ /;/g')|g" "$1"
}
subst ffi/pkg/starling.pc.in > "$prefix/lib/pkgconfig/starling.pc"
subst ffi/pkg/starling-static.pc.in > "$prefix/lib/pkgconfig/starling-static.pc"
subst ffi/pkg/starlingConfig.cmake.in > "$prefix/lib/cmake/starling/starlingConfig.cmake"
subst ffi/pkg/starlingConfigVersion.cmake.in > "$prefix/lib/cmake/starling/starlingConfigVersion.cmake"
echo "installed libstarling $version ($profile) into $prefix"
