#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 30 s each) from the checked-in seed
# corpus; exits non-zero on the first crash. Installs cargo-fuzz if it is missing.
#
#   fuzz/smoke.sh                # every target, 30 s each
#   FUZZ_SECONDS=600 fuzz/smoke.sh engine_ops
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-30}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi

cargo "+$toolchain" fuzz build -O
for target in "${targets[@]}"; do
    # New inputs go to a scratch directory; the checked-in seeds are only read.
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    echo "== $target: ${seconds}s"
    status=0
    cargo "+$toolchain" fuzz run -O "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" >"$scratch.log" 2>&1 || status=$?
    grep -E -A8 '^Done|panicked|==[0-9]+== ERROR' "$scratch.log" | grep -v '^ *[0-9]*: ' | head -20 || true
    rm -f "$scratch.log"
    rm -rf "$scratch"
    trap - EXIT
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $target failed (exit $status); reproducer in fuzz/artifacts/$target/" >&2
        exit "$status"
    fi
done
echo "fuzz smoke: ${#targets[@]} targets clean, ${seconds}s each"
