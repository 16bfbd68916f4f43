#!/usr/bin/env bash
# Builds libstarling.so for Android's four ABIs with cargo-ndk and packages them, with the
# Kotlin bindings' classes, as an AAR:
#
#   bindings/kotlin/target/android/jniLibs/<abi>/libstarling.so   (arm64-v8a, armeabi-v7a,
#                                                                  x86_64, x86)
#   bindings/kotlin/target/android/starling-<version>.aar
#
# Needs: the Android NDK (ANDROID_NDK_HOME, r26 or newer), `cargo install cargo-ndk`, the
# four rustup targets (added below), Maven and zip. It does NOT run on the Starling dev/CI
# machines (no NDK there, and nothing can fetch one): it was written for a developer
# machine and has not been run here.
#
# In an Android app, add the AAR and JNA's Android AAR (JNA loads libstarling.so from
# jniLibs; the plain JNA jar carries no Android natives):
#   implementation(files("libs/starling-0.1.0.aar"))
#   implementation("net.java.dev.jna:jna:5.17.0@aar")
#   implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.10.2")
set -euo pipefail
cd "$(dirname "$0")/.."

: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to the Android NDK (r26 or newer)}"
command -v cargo-ndk >/dev/null 2>&1 || {
    echo "error: cargo-ndk not found; install it with: cargo install --locked cargo-ndk" >&2
    exit 1
}
for tool in mvn zip; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool not found" >&2; exit 1; }
done

rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android \
    i686-linux-android

out=bindings/kotlin/target/android
rm -rf "$out"
mkdir -p "$out/jniLibs" "$out/aar/jni"

# API level 24 (Android 7.0): the lowest one that tokio and quinn support well.
cargo ndk --platform 24 -t arm64-v8a -t armeabi-v7a -t x86_64 -t x86 \
    -o "$out/jniLibs" build --release --locked -p starling-ffi

# The committed generated Kotlin sources must match the Rust exports.
./scripts/gen-bindings.sh --check

# The classes without the linux-x86-64 library (an AAR carries natives under jni/).
(cd bindings/kotlin && mvn -B -q -DskipTests -Dstarling.native.dir=target/no-native package)
version=$(sed -n 's:.*<version>\([^<]*\)</version>.*:\1:p' bindings/kotlin/pom.xml | head -1)
cp "bindings/kotlin/target/starling-$version.jar" "$out/aar/classes.jar"
cp -r "$out/jniLibs/." "$out/aar/jni/"
cat > "$out/aar/AndroidManifest.xml" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="dev.starling">
    <uses-sdk android:minSdkVersion="24" />
    <uses-permission android:name="android.permission.INTERNET" />
</manifest>
XML
: > "$out/aar/R.txt"
(cd "$out/aar" && zip -q -r "../starling-$version.aar" AndroidManifest.xml R.txt classes.jar jni)
echo "built $out/starling-$version.aar"
find "$out/jniLibs" -name '*.so' -exec ls -l {} +
