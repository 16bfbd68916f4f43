#!/usr/bin/env bash
# Builds bindings/swift/StarlingFFI.xcframework (the binary target of bindings/swift's
# Package.swift): libstarling.a for iOS devices, the iOS simulator (arm64 + x86_64) and
# macOS (arm64 + x86_64), each with the uniffi C header and the StarlingFFI module map.
#
# macOS only: needs Xcode (xcodebuild, lipo) and rustup. It cannot run on the Starling
# dev/CI machines (Linux, no Swift or Xcode); it has not been run here.
#
#   ./scripts/build-xcframework.sh            # release build
#   cd bindings/swift && swift test           # then the XCTest suite (macOS)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -s)" != Darwin ]; then
    echo "error: building an xcframework needs macOS with Xcode (this is $(uname -s))" >&2
    exit 1
fi
for tool in xcodebuild lipo rustup cargo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool not found" >&2; exit 1; }
done

targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin
    x86_64-apple-darwin)
rustup target add "${targets[@]}"

# The committed generated Swift, header and modulemap must match the Rust exports.
./scripts/gen-bindings.sh --check

target_dir="${CARGO_TARGET_DIR:-target}"
for t in "${targets[@]}"; do
    cargo build --release --locked -p starling-ffi --target "$t"
done

work="$target_dir/xcframework"
rm -rf "$work"
mkdir -p "$work/ios-sim" "$work/macos" "$work/headers/StarlingFFI"

# One static library per platform: simulator and macOS slices are fat (arm64 + x86_64).
lipo -create "$target_dir/aarch64-apple-ios-sim/release/libstarling.a" \
    "$target_dir/x86_64-apple-ios/release/libstarling.a" -output "$work/ios-sim/libstarling.a"
lipo -create "$target_dir/aarch64-apple-darwin/release/libstarling.a" \
    "$target_dir/x86_64-apple-darwin/release/libstarling.a" -output "$work/macos/libstarling.a"

# Headers in a folder named after the module, so that several xcframeworks' module maps
# do not collide in an app's build.
gen=bindings/swift/Sources/StarlingFFI/include
cp "$gen/StarlingFFI.h" "$gen/module.modulemap" "$work/headers/StarlingFFI/"

out=bindings/swift/StarlingFFI.xcframework
rm -rf "$out"
xcodebuild -create-xcframework \
    -library "$target_dir/aarch64-apple-ios/release/libstarling.a" -headers "$work/headers" \
    -library "$work/ios-sim/libstarling.a" -headers "$work/headers" \
    -library "$work/macos/libstarling.a" -headers "$work/headers" \
    -output "$out"
echo "built $out"
