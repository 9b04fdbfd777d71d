#!/usr/bin/env bash
# The patched-set lookup makes no call on any path (DESIGN.md, "The patched-set index"): one
# call anywhere in it, even on a rare path, makes every lookup save and restore callee-saved
# registers. Checks every out-of-line copy of `PatchedSet::lookup` and of the paths it jumps
# to, `patched_set::directory_lookup` and `patched_set::crowded_lookup`, in the lookup bench's
# binary (LTO, the bench profile), built by `cargo bench --no-run` first.
# Usage: benches/ci/lookup-no-calls.sh [binary]   (default: the newest lookup bench binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
bin=${1:-$(ls -t "$target"/release/deps/lookup-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)}
[ -n "$bin" ] && [ -x "$bin" ] || { echo "no lookup bench binary under $target (run cargo bench --no-run)"; exit 1; }
command -v objdump >/dev/null || { echo "objdump (binutils) is missing"; exit 1; }
report=$(objdump -d --no-show-raw-insn -C "$bin" | awk '
    /^[0-9a-f]+ <.*>:$/ {
        lookup = ($0 ~ /<livepatch_core::patched_set::PatchedSet::lookup>:$/)
        directory = ($0 ~ /<livepatch_core::patched_set::directory_lookup>:$/)
        crowded = ($0 ~ /<livepatch_core::patched_set::crowded_lookup>:$/)
        lookups += lookup; directories += directory; crowdeds += crowded
        inside = lookup || directory || crowded; next
    }
    inside && /\tcall/ { calls++; print "  " $0 }
    END { printf "copies=%d directory=%d crowded=%d calls=%d\n", lookups, directories, crowdeds, calls }')
echo "$report"
copies=$(sed -n 's/^copies=\([0-9]*\) .*/\1/p' <<<"$report")
directories=$(sed -n 's/.* directory=\([0-9]*\) .*/\1/p' <<<"$report")
crowdeds=$(sed -n 's/.* crowded=\([0-9]*\) .*/\1/p' <<<"$report")
calls=$(sed -n 's/.* calls=\([0-9]*\)$/\1/p' <<<"$report")
if [ "${copies:-0}" -eq 0 ] || [ "${directories:-0}" -eq 0 ] || [ "${crowdeds:-0}" -eq 0 ]; then
    echo "FAIL: no out-of-line PatchedSet::lookup, directory_lookup or crowded_lookup in $bin (inlined everywhere? the check needs all three)"
    exit 1
fi
if [ "${calls:-0}" -ne 0 ]; then
    echo "FAIL: the lookup makes $calls call(s) in $bin"
    exit 1
fi
echo "ok: $copies out-of-line copies of PatchedSet::lookup, $directories of directory_lookup, $crowdeds of crowded_lookup, no call in any"
