#!/usr/bin/env bash
# The consistency stress on real threads in a release build: tests/stress.rs (mixed threads)
# and tests/stress_busy.rs (busy threads only), 1 000 transitions each, tests/stress_stop_world.rs
# (the stop-the-world model, 100 transitions), and the control
# (tests/force_detects.rs: forced transitions must be caught mixing versions).
#
#   livepatch-user/ci/stress.sh           # the CI step (about 40 s of tests on 2 cores, plus the build)
#   livepatch-user/ci/stress.sh --weak    # the same with the core's orderings weakened
#                                         # (`--cfg livepatch_weak_ordering`, as livepatch-core/ci/loom.sh
#                                         # --weak), in a target directory of its own (a full rebuild).
#                                         # It passes: on x86-64 the weakened ordering compiles to the
#                                         # same code (livepatch-user/README.md, "Weakened orderings").
#   LP_STRESS_TRANSITIONS=N ...           # another count
set -euo pipefail
cd "$(dirname "$0")/../.."
export LP_STRESS_TRANSITIONS="${LP_STRESS_TRANSITIONS:-1000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ "${1:-}" = "--weak" ]; then
    export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/weak-ordering"
    export RUSTFLAGS="${RUSTFLAGS:-} --cfg livepatch_weak_ordering"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
start=$(date +%s)
status=0
cargo test --release -p livepatch-user --test stress --test stress_busy --test stress_stop_world --test force_detects -- --nocapture \
    >"$log" 2>&1 || status=$?
grep -E '^(stress|forced)( \(stop-the-world\))?:|test result|panicked|^error' "$log" || true
echo "stress${1:+ $1}: $LP_STRESS_TRANSITIONS transitions per mix, $(($(date +%s) - start)) s"
exit $status
