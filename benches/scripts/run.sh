#!/usr/bin/env bash
# One benchmark run as BENCHMARKS.md reports it: every bench once in full (criterion and the
# interleaved lines), bench by bench, each built right before it runs; then K − 1 more
# processes of the interleaved measurements (lookup, stack_check, redirect), bench by bench in
# turn, so that a slow stretch of the machine falls on different benches and processes.
# `benches/scripts/tables.py` turns the logs into the tables (medians over the K processes).
#
# Usage: benches/scripts/run.sh [out-dir]   (K=5 by default; CARGO_TARGET_DIR as for cargo)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/bench-run}
K=${K:-5}
mkdir -p "$out"
commit=$(git rev-parse --short HEAD)
stamp() { echo "== $1 $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"; }
full=$out/bench-$commit.log
: > "$full"
for b in lookup redirect stack_check sweep simulator; do
    cargo bench -p livepatch-benches --bench "$b" --no-run 2>&1 | tail -n 1
    stamp "$b start" | tee -a "$full"
    cargo bench -p livepatch-benches --bench "$b" -- --warm-up-time 0.3 --measurement-time 1 --sample-size 20 >> "$full" 2>&1
    stamp "$b end" | tee -a "$full"
done
for i in $(seq 2 "$K"); do
    log=$out/repeat-$commit-p$i.log
    : > "$log"
    for b in lookup stack_check redirect; do
        stamp "$b process $i start" | tee -a "$log"
        LOOKUP_INTERLEAVED_ONLY=1 STACK_INTERLEAVED_ONLY=1 cargo bench -p livepatch-benches --bench "$b" -- \
            --warm-up-time 0.3 --measurement-time 1 --sample-size 20 >> "$log" 2>&1
        stamp "$b process $i end" | tee -a "$log"
    done
done
echo "logs in $out: $(ls "$out" | tr '\n' ' ')"
