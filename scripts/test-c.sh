#!/usr/bin/env bash
# The C side of libstarling: builds the library, checks that include/starling.h matches
# the Rust sources, installs a C SDK prefix, builds the examples and C tests with CMake
# (shared and static) and plain make, runs ctest, then runs the C tests under valgrind
# and under AddressSanitizer. Called by scripts/test-all.sh; scripts/install-test-deps.sh installs the tools.
set -euo pipefail
cd "$(dirname "$0")/.."

CBINDGEN_VERSION=0.29.4 # keep in step with scripts/install-test-deps.sh
step() { printf '\n==> c: %s\n' "$*"; }

missing=()
for tool in cc cmake make pkg-config valgrind cbindgen; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${STARLING_REQUIRE_C_TEST:-0}" = 1 ]; then
        echo "error: missing for the C tests: ${missing[*]} (see scripts/install-test-deps.sh)" >&2
        exit 1
    fi
    echo "skipped: the C tests need ${missing[*]} (scripts/install-test-deps.sh installs them)"
    exit 0
fi

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
sdk="$target/c-sdk"

step "include/starling.h is what cbindgen $CBINDGEN_VERSION generates"
have="$(cbindgen --version | awk '{print $2}')"
if [ "$have" != "$CBINDGEN_VERSION" ]; then
    echo "error: cbindgen $have found, the header is generated with $CBINDGEN_VERSION" >&2
    echo "       (cargo install --locked --force --version $CBINDGEN_VERSION cbindgen)" >&2
    exit 1
fi
# Generated next to the build (`--verify` would rewrite the committed file), then compared.
cbindgen --quiet --config ffi/cbindgen.toml --crate starling-ffi \
    --output "$target/starling.h.fresh" ffi
if ! diff -u include/starling.h "$target/starling.h.fresh"; then
    echo "error: include/starling.h is stale; regenerate it with:" >&2
    echo "  cbindgen --config ffi/cbindgen.toml --crate starling-ffi --output include/starling.h ffi" >&2
    exit 1
fi
if grep -qi uniffi include/starling.h; then
    echo "error: include/starling.h declares uniffi symbols; only the C API belongs there" >&2
    exit 1
fi

step "the header compiles as C99, C11 and C++ with warnings as errors"
printf '#include <starling.h>\nint main(void) { return STARLING_RESULT_OK; }\n' > "$target/c-header-check.c"
for std in c99 c11; do
    cc -std=$std -Wall -Wextra -Wpedantic -Werror -Iinclude -fsyntax-only "$target/c-header-check.c"
done
if command -v c++ >/dev/null 2>&1; then
    c++ -std=c++11 -Wall -Wextra -Werror -Iinclude -fsyntax-only -x c++ "$target/c-header-check.c"
fi

step "build libstarling and install the C SDK into $sdk"
scripts/install-c.sh --prefix "$sdk"

step "CMake: examples and tests, shared and static"
cmake -S examples-c -B "$target/c-build" -DCMAKE_PREFIX_PATH="$sdk" -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$target/c-build" -j 2
ctest --test-dir "$target/c-build" --output-on-failure

step "plain make with pkg-config"
PKG_CONFIG_PATH="$sdk/lib/pkgconfig" make -C examples-c OUT="$target/c-make" -s
"$target/c-make/chat-static" --nonsense 2>/dev/null && { echo "chat accepted a bad flag" >&2; exit 1; }
"$target/c-make/telemetry" 2>/dev/null && { echo "telemetry ran without a command" >&2; exit 1; }

step "the complete example of docs/C-API.md compiles"
awk '/^```c$/{f=1;next} /^```$/{f=0} f' docs/C-API.md > "$target/c-make/doc-example.c"
cc -std=c11 -Wall -Wextra -Werror -I"$sdk/include" "$target/c-make/doc-example.c" \
    -L"$sdk/lib" -lstarling -Wl,-rpath,"$sdk/lib" -o "$target/c-make/doc-example"

step "valgrind: no leaks, no errors"
vg=(valgrind --leak-check=full --error-exitcode=1 --errors-for-leak-kinds=definite,possible
    --suppressions=examples-c/tests/valgrind.supp -q)
export STARLING_TEST_DEADLINE_S=120
"${vg[@]}" "$target/c-build/test_api"
examples-c/tests/two_process.sh "$target/c-build/test_peer" "${vg[@]}"

step "AddressSanitizer build"
cmake -S examples-c -B "$target/c-asan" -DCMAKE_PREFIX_PATH="$sdk" -DCMAKE_BUILD_TYPE=Debug \
    -DSTARLING_SANITIZE=address >/dev/null
cmake --build "$target/c-asan" -j 2 --target test_api test_peer
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
"$target/c-asan/test_api"
examples-c/tests/two_process.sh "$target/c-asan/test_peer"
unset STARLING_TEST_DEADLINE_S

echo "c: all passed"
