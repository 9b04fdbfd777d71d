#!/usr/bin/env bash
# Runs the core's loom models (livepatch-core/tests/loom_*.rs) in release mode with a known
# budget, in a target directory of its own so the `--cfg loom` build does not invalidate the
# normal one.
#
#   livepatch-core/ci/loom.sh           # the models, LOOM_MAX_PREEMPTIONS=4 (about 1 min on 2 cores, plus the build)
#   livepatch-core/ci/loom.sh --weak    # the same with `--cfg livepatch_weak_ordering`: the
#                                       # task-word switch loses its Release half, and the
#                                       # matching models must FAIL (exit 0 iff they do)
#
# Budget: every model states its bound in its header; the defaults here are
# LOOM_MAX_PREEMPTIONS=4 and max_branches = loom_support::MAX_BRANCHES (20 000) unless
# LOOM_MAX_BRANCHES is set.
set -euo pipefail
cd "$(dirname "$0")/../.."

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-4}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/loom}"
rustflags="--cfg loom"
weak=0
if [ "${1:-}" = "--weak" ]; then
    weak=1
    rustflags="$rustflags --cfg livepatch_weak_ordering"
    export CARGO_TARGET_DIR="$CARGO_TARGET_DIR-weak"
fi
export RUSTFLAGS="${RUSTFLAGS:-} $rustflags"

tests=()
for f in livepatch-core/tests/loom_*.rs; do
    tests+=(--test "$(basename "$f" .rs)")
done

start=$(date +%s)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test -p livepatch-core --release --no-fail-fast "${tests[@]}" -- --test-threads=1 --nocapture >"$log" 2>&1 ||
    status=$?
grep -E '^error|^test |executions in|test result|panicked|Causality|assertion' "$log" || true
echo "loom: LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS, $(($(date +%s) - start)) s"

if [ "$weak" = 1 ]; then
    if [ "$status" -eq 0 ]; then
        echo "loom --weak: the weakened ordering went unnoticed" >&2
        exit 1
    fi
    echo "loom --weak: the weakened ordering was caught (expected failures above)"
    exit 0
fi
exit "$status"
