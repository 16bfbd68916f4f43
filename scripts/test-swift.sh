#!/usr/bin/env bash
# What can be tested of the Swift bindings without a Swift compiler (none exists on these
# machines; the XCTest suite in bindings/swift/Tests runs on macOS only):
#   1. the generated FFI header (StarlingFFI.h) compiles as C with clang and with gcc,
#      warnings as errors;
#   2. every function it declares is exported by libstarling.so (nm -D), and a C file
#      taking the address of each one links against it;
#   3. the uniffi contract version and every API checksum that the generated Swift code
#      checks at load time are what the library answers (a C program calls them).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in clang gcc nm python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool not found (scripts/install-test-deps.sh installs clang)" >&2; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
cargo build --locked -p starling-ffi
lib="$target/debug/libstarling.so"

# The committed generated files (scripts/gen-bindings.sh writes them).
gen=bindings/swift/Sources/StarlingFFI/include
header="$gen/StarlingFFI.h"
swift_src=bindings/swift/Sources/Starling/Starling.swift
for f in "$header" "$swift_src" "$gen/module.modulemap"; do
    [ -f "$f" ] || { echo "error: $f missing (scripts/gen-bindings.sh did not write it)" >&2; exit 1; }
done

work="$target/swift-check"
rm -rf "$work"
mkdir -p "$work"
pass=0
fail=0
check() { # name, command...
    local name="$1"
    shift
    if "$@" >"$work/$name.log" 2>&1; then
        echo "ok: $name"
        pass=$((pass + 1))
    else
        echo "FAILED: $name"
        sed 's/^/    /' "$work/$name.log" | head -40
        fail=$((fail + 1))
    fi
}

# 1. The header as C, with both compilers, at the strictest warning level used here.
printf '#include "StarlingFFI.h"\nint main(void) { return 0; }\n' >"$work/include.c"
check "header compiles with clang" \
    clang -std=c11 -Wall -Wextra -Werror -I"$gen" -c "$work/include.c" -o "$work/clang.o"
check "header compiles with gcc" \
    gcc -std=c11 -Wall -Wextra -Werror -D_Nonnull= -D_Nullable= -I"$gen" -c "$work/include.c" -o "$work/gcc.o"

# 2. Every declared function is exported. The declarations are found by the compiler
# itself (clang's AST dump), not by pattern-matching the text.
clang -std=c11 -I"$gen" -Xclang -ast-dump=json -fsyntax-only "$work/include.c" >"$work/ast.json"
python3 - "$work/ast.json" "$header" >"$work/declared.txt" <<'PY'
import json, sys
ast = json.load(open(sys.argv[1]))
header = sys.argv[2]
names = set()
for node in ast.get("inner", []):
    name = node.get("name", "")
    # uniffi names all its functions uniffi_* or ffi_*; the rest come from system headers.
    if node.get("kind") == "FunctionDecl" and name.startswith(("uniffi_", "ffi_")):
        names.add(name)
print("\n".join(sorted(names)))
PY
declared=$(wc -l <"$work/declared.txt")
nm -D --defined-only "$lib" | awk '{print $NF}' | sort -u >"$work/exported.txt"
missing=$(comm -23 "$work/declared.txt" "$work/exported.txt")
check_exported() {
    echo "declared functions: $declared"
    [ "$declared" -gt 20 ] || { echo "too few declarations found in $header"; return 1; }
    [ -z "$missing" ] || { echo "declared in the header but not exported: $missing"; return 1; }
}
check "every declared function is exported by libstarling.so" check_exported
{
    echo '#include "StarlingFFI.h"'
    echo 'void *const symbols[] = {'
    sed 's/.*/    (void *)\&&,/' "$work/declared.txt"
    echo '};'
    echo 'int main(void) { return symbols[0] == 0; }'
} >"$work/link.c"
check "every declared function links" \
    gcc -std=c11 -Wall -Wextra -Werror -Wno-pedantic -D_Nonnull= -D_Nullable= -I"$gen" \
    "$work/link.c" -L"$(dirname "$lib")" -lstarling -Wl,--no-undefined -Wl,-rpath,"$(cd "$(dirname "$lib")" && pwd)" \
    -o "$work/link"

# 3. The load-time checks of the generated Swift: contract version and API checksums.
python3 - "$swift_src" >"$work/checks.c" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
version = re.search(r"let bindings_contract_version = (\d+)", src)
contract = re.search(r"let scaffolding_contract_version = (\w+)\(\)", src)
checks = re.findall(r"if \((uniffi_\w+_checksum_\w+)\(\) != (\d+)\)", src)
if not version or not contract or not checks:
    sys.exit("error: the contract version or the checksum checks were not found in the Swift source")
print('#include <stdio.h>\n#include "StarlingFFI.h"')
print("int main(void) {\n    int bad = 0;")
print(f"    if ({contract.group(1)}() != {version.group(1)}u) {{ printf(\"contract version %u, Swift expects {version.group(1)}\\n\", (unsigned){contract.group(1)}()); bad++; }}")
for name, value in checks:
    print(f"    if ({name}() != {value}) {{ printf(\"{name}: %u, Swift expects {value}\\n\", (unsigned){name}()); bad++; }}")
print(f"    printf(\"contract version {version.group(1)} and {len(checks)} checksums checked, %d mismatched\\n\", bad);")
print("    return bad != 0;\n}")
PY
check "contract check program builds" \
    gcc -std=c11 -Wall -Wextra -Werror -D_Nonnull= -D_Nullable= -I"$gen" "$work/checks.c" \
    -L"$(dirname "$lib")" -lstarling -Wl,-rpath,"$(cd "$(dirname "$lib")" && pwd)" -o "$work/checks"
check "contract version and checksums answer as the Swift code expects" "$work/checks"
cat "$work/contract version and checksums answer as the Swift code expects.log" 2>/dev/null | tail -1 || true

echo "swift-ffi: $pass passed, $fail failed"
[ "$fail" = 0 ]
