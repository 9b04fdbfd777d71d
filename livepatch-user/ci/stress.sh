#!/usr/bin/env bash
# The consistency stress on real threads (livepatch-user/tests/stress.rs) with 1 000
# transitions in a release build, then the same with the core's orderings weakened
# (`--cfg livepatch_weak_ordering`, as livepatch-core/ci/loom.sh --weak). On x86-64 the
# weakened ordering compiles to the same `lock cmpxchg`, so the stress cannot catch it and is
# expected to pass; the loom models are what catch it (livepatch-user/README.md explains).
#
#   livepatch-user/ci/stress.sh            # both runs (about 1 min each on 2 cores, plus builds)
#   LP_STRESS_TRANSITIONS=N ...            # another count
set -euo pipefail
cd "$(dirname "$0")/../.."
export LP_STRESS_TRANSITIONS="${LP_STRESS_TRANSITIONS:-1000}"
base="${CARGO_TARGET_DIR:-target}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run() {
    local status=0
    cargo test --release -p livepatch-user --test stress --test stress_busy --test force_detects -- --nocapture >"$log" 2>&1 || status=$?
    grep -E '^(stress|forced):|test result|panicked|^error' "$log" || true
    return $status
}
start=$(date +%s)
echo "-- stress, release, $LP_STRESS_TRANSITIONS transitions"
CARGO_TARGET_DIR="$base" run
echo "-- the same with --cfg livepatch_weak_ordering"
CARGO_TARGET_DIR="$base/weak-ordering" RUSTFLAGS="${RUSTFLAGS:-} --cfg livepatch_weak_ordering" run
echo "stress: $(($(date +%s) - start)) s"
