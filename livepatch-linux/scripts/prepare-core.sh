#!/usr/bin/env bash
# prepare-core.sh REPO MODULE_BUILD_DIR
# Fetches the core's crates.io dependencies with cargo and writes MODULE_BUILD_DIR/deps.mk,
# which tells module/Kbuild where the source files are: the core's own lib.rs in the work tree
# (the same file cargo builds, never a copy) and the dependencies' lib.rs in cargo's registry.
set -euo pipefail
REPO=$1
OUT=$2
cd "$REPO"
# rustup's cargo (the workspace's toolchain) resolves and fetches; the kernel build then compiles
# the fetched sources with Debian's rustc and the kernel's flags.
CARGO=${CARGO:-$(PATH="${HOME:-/root}/.cargo/bin:$PATH" command -v cargo)}
"$CARGO" fetch --quiet
"$CARGO" metadata --format-version 1 --offline > "$OUT/metadata.json"
python3 - "$OUT/metadata.json" "$OUT/deps.mk" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
by_name = {}
core = next(p for p in meta["packages"] if p["name"] == "livepatch-core")
resolve = {n["id"]: n for n in meta["resolve"]["nodes"]}
pkgs = {p["id"]: p for p in meta["packages"]}
def lib_src(p):
    return next(t["src_path"] for t in p["targets"] if "lib" in t["kind"])
deps = {}
for d in resolve[core["id"]]["deps"]:
    kinds = [k["kind"] for k in d["dep_kinds"]]
    if None not in kinds:          # dev-dependencies are not compiled into the module
        continue
    p = pkgs[d["pkg"]]
    deps[p["name"]] = p
want = {"bitflags": "LP_BITFLAGS_SRC", "intrusive-collections": "LP_INTRUSIVE_SRC"}
extra = set(deps) - set(want) - {"loom"}
if extra:
    sys.exit(f"livepatch-core has dependencies the kernel build does not know: {sorted(extra)}")
with open(sys.argv[2], "w") as f:
    f.write(f"LP_CORE_SRC := {lib_src(core)}\n")
    for name, var in want.items():
        p = deps[name]
        f.write(f"{var} := {lib_src(p)}\n")
        f.write(f"# {name} {p['version']}\n")
print(open(sys.argv[2]).read(), end="")
PY
