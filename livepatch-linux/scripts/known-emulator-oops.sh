#!/usr/bin/env bash
# known-emulator-oops.sh CONSOLE_LOG: exits 0 if the e2e guest died of the multi-threaded-TCG
# stale translation described in livepatch-linux/README.md ("Emulator limits"), and of nothing
# else: an `Oops: int3` whose RIP is a function + 0x5 (the fentry call site after ENDBR64) and
# whose code dump already shows the finished instruction at the int3's address (the `call`,
# e8, or the nop 0f 1f 44 00 00), with no check failing before it. Any other death, or a
# missing log, exits 1.
set -euo pipefail
log=${1:-}
[ -n "$log" ] && [ -r "$log" ] || exit 1
grep -q 'LP-E2E: FAIL' "$log" && exit 1
oops=$(grep -m1 -n 'Oops: int3' "$log" | cut -d: -f1) || exit 1
[ -n "$oops" ] || exit 1
# Any other splat before the oops (e2e.sh's list) is not the emulator's.
head -n "$((oops - 1))" "$log" | grep -q -E 'WARNING:|BUG:|Oops|Kernel panic|general protection fault|Call Trace:|suspicious RCU usage|possible circular locking|possible recursive locking|inconsistent lock state|lock held when returning|DEBUG_LOCKS_WARN_ON|turning off the locking correctness validator|detected stall|INFO: task .* blocked|UBSAN|KASAN|refcount_t:|list_add corruption|list_del corruption|double fault|soft lockup|hard LOCKUP|scheduling while atomic|sleeping function called from invalid context' | grep -v -q 'LP-E2E:' && exit 1
after=$(tail -n +"$oops" "$log" | head -n 12)
echo "$after" | grep -q -E 'RIP: 0010:[A-Za-z0-9_.]+\+0x5/' || exit 1
# The finished instruction at the int3's address: the call ftrace wrote (e8, enabling the site)
# or the 5-byte nop it wrote back (0f 1f 44 00 00, disabling it).
echo "$after" | grep -m1 '^.*Code:' | grep -q -E ' e8 <[0-9a-f]{2}>| 0f <1f> 44 00 00' || exit 1
exit 0
