#!/usr/bin/env bash
# Cross-language test: a Python node, the C chat example and the Kotlin chat example on
# loopback exchange messages and see each other's presence (driver: scripts/cross/cross_chat.py).
# Called last by scripts/test-all.sh; reuses what the C, Kotlin and Python steps built in
# $CARGO_TARGET_DIR (the C chat, the bindings jar in the local Maven repository, the Python
# venv) and builds only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target/cross"
target="$(cd "$target" && pwd)"
export CARGO_TARGET_DIR="$target"

for tool in cc java mvn python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool not found (scripts/install-test-deps.sh installs it)" >&2; exit 1; }
done

# The C chat: scripts/test-c.sh's CMake build, else compiled here against libstarling.so.
chat="$target/c-build/chat"
if [ ! -x "$chat" ]; then
    cargo build --locked -p starling-ffi
    chat="$target/cross/chat"
    cc -std=c11 -Wall -Wextra -Werror -Iinclude examples-c/chat.c -o "$chat" \
        -L"$target/debug" -lstarling -Wl,-rpath,"$target/debug" -lpthread
fi

# The Kotlin chat: needs the bindings jar that scripts/test-kotlin.sh installs into the local
# Maven repository; compiled and its classpath resolved by Maven when out of date.
jar="$HOME/.m2/repository/dev/starling/starling/0.1.0/starling-0.1.0.jar"
[ -f "$jar" ] || ./scripts/test-kotlin.sh
cpfile="$target/cross/kotlin-classpath.txt"
classes=examples-kotlin/target/classes
if [ ! -f "$cpfile" ] || [ ! -d "$classes" ] || [ examples-kotlin/src/main/kotlin/Chat.kt -nt "$cpfile" ] \
    || [ examples-kotlin/pom.xml -nt "$cpfile" ] || [ "$jar" -nt "$cpfile" ]; then
    mvn -q -B -ntp -Dstyle.color=never -f examples-kotlin/pom.xml compile \
        dependency:build-classpath -Dmdep.outputFile="$cpfile"
    touch "$cpfile" # the plugin leaves an unchanged file as it was
fi

# Python: the venv with the starling package that scripts/test-python.sh installs.
py="$target/python-venv/bin/python"
if ! [ -x "$py" ] || ! "$py" -c "import starling" 2>/dev/null; then
    [ -x "$py" ] || python3 -m venv "$target/python-venv"
    MATURIN_PEP517_ARGS="--profile dev" \
        "$py" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./bindings/python
fi

# Run from outside the source tree so the installed package is imported.
cd "$target/cross"
exec "$py" "$root/scripts/cross/cross_chat.py" --c-chat "$chat" \
    --kotlin-cp "$root/$classes:$(cat "$cpfile")"
