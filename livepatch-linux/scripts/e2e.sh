#!/usr/bin/env bash
# livepatch-linux end-to-end test: install the toolchain, build (once, cached) a Rust-enabled
# Debian 6.12 kernel, build our modules, boot QEMU (TCG, -smp 2) with a busybox initramfs that runs
# the scenarios, and judge PASS/FAIL from the console log.
#
# Usage: livepatch-linux/scripts/e2e.sh [--no-install] [--keep] [--kernel-only]
#   LP_CACHE      cache root (default /var/cache/livepatch-kernel)
#   LP_WORK       scratch dir for this run (default: a fresh mktemp dir)
#   LP_QEMU_TIMEOUT  seconds before the guest is killed (default 300)
# Exit status: 0 = all scenarios passed; non-zero with a "E2E FAIL: ..." line otherwise.
set -euo pipefail
# The whole script is one compound command, parsed before it runs: editing the file while a run
# is in progress cannot change what that run executes.
{
T0=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LPL=$(cd "$HERE/.." && pwd)              # livepatch-linux/
REPO=$(cd "$LPL/.." && pwd)              # workspace root
CACHE_ROOT=${LP_CACHE:-/var/cache/livepatch-kernel}
QEMU_TIMEOUT=${LP_QEMU_TIMEOUT:-1500}
# TCG with one host thread for both vCPUs (still -smp 2, still two guest CPUs running the
# scenarios concurrently from the guest's view). Multi-threaded TCG occasionally ran a stale
# translation of code that ftrace had just re-patched: an INT3 left by text_poke_bp() was
# executed after patching had finished ("Oops: int3" in a patched function; seen in about 1 of
# 10 boots, with the kernel's own livepatch and ours alike exposed). LP_ACCEL overrides.
LP_ACCEL=${LP_ACCEL:-tcg,thread=single}
INSTALL=1
KEEP=0
KERNEL_ONLY=0
for a in "$@"; do
    case "$a" in
        --no-install) INSTALL=0 ;;
        --keep) KEEP=1 ;;
        --kernel-only) KERNEL_ONLY=1 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done

declare -A STEP_T
step() { echo; echo "=== [$(($(date +%s) - T0))s] $*"; }
fail() { echo; echo "E2E FAIL: $*"; echo "e2e: 0 passed, 1 failed"; exit 1; }
timed() { # timed NAME cmd...
    local name=$1; shift
    local s; s=$(date +%s)
    "$@"
    STEP_T[$name]=$(($(date +%s) - s))
}

# ---------------------------------------------------------------------------------------------
# 1. Debian packages (versions measured in shared/kernel/RECIPE.md) and bindgen-cli.
# ---------------------------------------------------------------------------------------------
KVER_PKG=6.12.117-1~deb12u1
RUST_PKG=1.85.0+dfsg3-1~deb12u3
PKGS_PINNED=(
    "linux-source-6.12=$KVER_PKG"
    "rustc-web=$RUST_PKG" "libstd-rust-web-dev=$RUST_PKG" "libstd-rust-web-1.85=$RUST_PKG"
    "rust-web-src=$RUST_PKG" "cargo-web=$RUST_PKG" "rustfmt-web=$RUST_PKG"
)
PKGS_PLAIN=(clang lld llvm libclang-dev flex bison bc libelf-dev libssl-dev cpio
    qemu-system-x86 busybox-static xz-utils zstd python3 make kmod)
BINDGEN_VER=0.69.5

install_packages() {
    local need=0
    for p in "${PKGS_PINNED[@]}"; do
        local name=${p%%=*} ver=${p#*=}
        [ "$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null || true)" = "$ver" ] || need=1
    done
    for p in "${PKGS_PLAIN[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need=1
    done
    if [ $need = 0 ]; then echo "packages: already installed"; return; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if ! apt-get install -y -qq --no-install-recommends "${PKGS_PINNED[@]}" "${PKGS_PLAIN[@]}"; then
        echo "WARNING: pinned versions unavailable; installing the archive's current ones" >&2
        apt-get install -y -qq --no-install-recommends "${PKGS_PINNED[@]%%=*}" "${PKGS_PLAIN[@]}"
    fi
}

TOOLS=$CACHE_ROOT/tools
install_bindgen() {
    if [ -x "$TOOLS/bin/bindgen" ] && "$TOOLS/bin/bindgen" --version | grep -q "$BINDGEN_VER"; then
        echo "bindgen: cached"; return
    fi
    # Any cargo will do to build bindgen (rustup's or Debian's); the kernel itself uses Debian's rustc.
    local cargo_bin
    cargo_bin=$(command -v cargo || echo /usr/bin/cargo)
    "$cargo_bin" install --locked --root "$TOOLS" bindgen-cli --version "$BINDGEN_VER"
}

mkdir -p "$CACHE_ROOT"
if [ $INSTALL = 1 ]; then
    step "install packages"
    timed apt install_packages
    step "install bindgen-cli $BINDGEN_VER"
    timed bindgen install_bindgen
fi

# The kernel's Rust needs rust-src, which only Debian's rustc has here: put it first in PATH.
export PATH=$TOOLS/bin:/usr/sbin:/usr/bin:/sbin:/bin
KMAKE=(make LLVM=1)

# ---------------------------------------------------------------------------------------------
# 2. Kernel: unpack + build once into $CACHE_ROOT/<key>.
# ---------------------------------------------------------------------------------------------
FRAG=$LPL/kernel/lp_rust.config
# LP_PREEMPT=1: the same kernel with CONFIG_PREEMPT (full preemption: handlers, trampolines and
# task work can be preempted), cached under its own key.
FRAGS=("$FRAG")
[ "${LP_PREEMPT:-0}" = 1 ] && FRAGS+=("$LPL/kernel/lp_preempt.config")
key_of() { # key_of FRAGMENT...
    { dpkg-query -W -f='${Version}\n' linux-source-6.12
      rustc --version; bindgen --version; clang --version | head -1
      cat "$@" | sha256sum; } | sha256sum | cut -c1-12
}
KPFX=$(dpkg-query -W -f='${Version}' linux-source-6.12 | tr '~+:' '___')
KEY=$KPFX-$(key_of "${FRAGS[@]}")
KEEP_KEYS=("$KPFX-$(key_of "$FRAG")" "$KPFX-$(key_of "$FRAG" "$LPL/kernel/lp_preempt.config")")
KC=$CACHE_ROOT/$KEY
KSRC=$KC/linux-source-6.12
KDIR=$KC/build

step "kernel (cache key $KEY)"
# One lock per key: a run that finds its kernel built never waits for another key's build (CI
# builds the CONFIG_PREEMPT kernel in the background while the first kernel's guests run).
exec 9>"$CACHE_ROOT/$KEY.lock"
flock 9
if [ -f "$KC/.complete" ]; then
    echo "kernel: cached at $KC"
    STEP_T[kernel]=0
else
    # Build directly under the final path so that the build dir's absolute paths stay valid;
    # .complete marks a finished build (an interrupted one is redone from scratch).
    rm -rf "$KC"; mkdir -p "$KC"
    s=$(date +%s)
    echo "unpacking /usr/src/linux-source-6.12.tar.xz"
    tar -xf /usr/src/linux-source-6.12.tar.xz -C "$KC"
    cat "${FRAGS[@]}" > "$KSRC/kernel/configs/lp_rust.config"
    "${KMAKE[@]}" -C "$KSRC" O="$KDIR" rustavailable
    "${KMAKE[@]}" -C "$KSRC" O="$KDIR" tinyconfig lp_rust.config >/dev/null
    missing=0
    while IFS= read -r line; do
        case "$line" in CONFIG_*=*) grep -qx "$line" "$KDIR/.config" || { echo "config dropped: $line"; missing=1; } ;; esac
    done < <(cat "${FRAGS[@]}")
    [ $missing = 0 ] || fail "kernel config fragment not fully applied (see above)"
    "${KMAKE[@]}" -C "$KSRC" O="$KDIR" -j"$(nproc)" bzImage modules > "$KC/build.log" 2>&1 \
        || { tail -40 "$KC/build.log"; fail "kernel build failed (log: $KC/build.log)"; }
    touch "$KC/.complete"
    STEP_T[kernel]=$(($(date +%s) - s))
fi
flock -u 9

# Remove cache entries of other keys (old configs / package versions): they are 2 GB each.
for d in "$CACHE_ROOT"/*/; do
    d=${d%/}
    case "$(basename "$d")" in "${KEEP_KEYS[0]}"|"${KEEP_KEYS[1]}") ;;
        "$KPFX"-*|[0-9]*.[0-9]*-*) [ -d "$d" ] && { echo "removing stale cache $d"; rm -rf "$d"; } ;; esac
done

[ $KERNEL_ONLY = 1 ] && { echo "kernel ready: $KDIR"; exit 0; }

# ---------------------------------------------------------------------------------------------
# 3. Modules.
# ---------------------------------------------------------------------------------------------
if [ -n "${LP_WORK:-}" ]; then WORK=$LP_WORK; OWN_WORK=0; else WORK=$(mktemp -d /tmp/lp-e2e.XXXXXX); OWN_WORK=1; fi
mkdir -p "$WORK"
[ $KEEP = 1 ] || trap 'rm -rf "$WORK/mod" "$WORK/root"' EXIT

step "build modules"
s=$(date +%s)
# Build in a scratch copy of our Kbuild dirs so the source tree stays clean; the core's sources are
# referenced in place (see module/Kbuild).
rm -rf "$WORK/mod"; mkdir -p "$WORK/mod"
cp -r "$LPL/target" "$LPL/module" "$LPL/src" "$LPL/include" "$LPL/patches" "$LPL/patch-api" "$WORK/mod/"
if [ -x "$LPL/scripts/prepare-core.sh" ]; then
    "$LPL/scripts/prepare-core.sh" "$REPO" "$WORK/mod/module" || fail "preparing the core crate sources failed"
fi
"${KMAKE[@]}" -C "$KDIR" M="$WORK/mod/target" modules > "$WORK/target-build.log" 2>&1 \
    || { cat "$WORK/target-build.log"; fail "building lp_target.ko failed"; }
"${KMAKE[@]}" -C "$KDIR" M="$WORK/mod/module" modules > "$WORK/module-build.log" 2>&1 \
    || { cat "$WORK/module-build.log"; fail "building livepatch_rs.ko failed"; }
# Patch modules against include/livepatch_rs.h and livepatch_rs.ko's exports. The kernel's own
# sample, with exactly one line changed: its include.
sed 's|^#include <linux/livepatch.h>$|#include <livepatch_rs.h>|' "$KSRC/samples/livepatch/livepatch-sample.c" \
    > "$WORK/mod/patches/lprs_sample.c"
[ "$(diff "$KSRC/samples/livepatch/livepatch-sample.c" "$WORK/mod/patches/lprs_sample.c" | grep -c '^[<>]')" = 2 ] \
    || fail "lprs_sample.c is not livepatch-sample.c with one line changed"
"${KMAKE[@]}" -C "$KDIR" M="$WORK/mod/patches" KBUILD_EXTRA_SYMBOLS="$WORK/mod/module/Module.symvers" modules \
    > "$WORK/patches-build.log" 2>&1 || { cat "$WORK/patches-build.log"; fail "building the patch modules failed"; }
# The kernel's v6.12 livepatch selftest modules, each with its one include line changed (the
# ones without <linux/livepatch.h> unchanged), against the same header.
KST=$KSRC/tools/testing/selftests/livepatch
mkdir -p "$WORK/mod/selftests"
for f in "$KST"/test_modules/*.c; do
    sed 's|^#include <linux/livepatch.h>$|#include <livepatch_rs.h>|' "$f" > "$WORK/mod/selftests/${f##*/}"
    [ "$(diff "$f" "$WORK/mod/selftests/${f##*/}" | grep -c '^[<>]')" -le 2 ] || fail "${f##*/}: more than one line changed"
done
{ echo "obj-m := $(cd "$WORK/mod/selftests" && ls *.c | sed 's/\.c$/.o/' | tr '\n' ' ')"
  echo "ccflags-y += -I$LPL/include"; } > "$WORK/mod/selftests/Kbuild"
"${KMAKE[@]}" -C "$KDIR" M="$WORK/mod/selftests" KBUILD_EXTRA_SYMBOLS="$WORK/mod/module/Module.symvers" modules \
    > "$WORK/selftests-build.log" 2>&1 || { cat "$WORK/selftests-build.log"; fail "building the selftest modules failed"; }
grep -iE 'warning' "$WORK/target-build.log" "$WORK/module-build.log" "$WORK/patches-build.log" \
    "$WORK/selftests-build.log" && fail "module build printed warnings"
STEP_T[modules]=$(($(date +%s) - s))

# ---------------------------------------------------------------------------------------------
# 4. Initramfs.
# ---------------------------------------------------------------------------------------------
step "initramfs"
R=$WORK/root
rm -rf "$R"; mkdir -p "$R"/{bin,sbin,proc,sys,dev,tmp,lib/modules}
cp /bin/busybox "$R/bin/busybox"
for a in sh mount cat echo sleep date insmod rmmod lsmod grep sed awk cut tr head tail wc seq \
         kill ps mkdir dmesg reboot poweroff usleep test "[" printf expr true false ls stat; do
    ln -sf busybox "$R/bin/$a"
done
cp "$WORK/mod/target/lp_target.ko" "$WORK/mod/target/lp_late.ko" "$WORK/mod/module/livepatch_rs.ko" "$R/lib/modules/"
find "$WORK/mod/module" -name 'livepatch_rs_*.ko' -exec cp {} "$R/lib/modules/" \; 2>/dev/null || true
cp "$WORK"/mod/patches/*.ko "$R/lib/modules/"
cp "$KDIR/samples/livepatch/livepatch-sample.ko" "$R/lib/modules/"
gcc -static -O2 -pthread -o "$R/bin/lp_threads" "$LPL/target/lp_threads.c" \
    || fail "building the guest's lp_threads failed"
cp "$LPL/scripts/guest-init.sh" "$R/init"
# The kernel's selftest scripts, with only the sysfs root adapted, their modules, and what they
# run: bash and the GNU tools and kmod they call (with their libraries: busybox has other
# options and messages), an empty KDIR (they only check that it exists).
mkdir -p "$R/selftests/test_modules" "$R/usr/bin" "$R/usr/sbin" "$R/lib64" "$R/lib/x86_64-linux-gnu"
for f in "$KST"/functions.sh "$KST"/test-*.sh; do
    sed 's|/sys/kernel/livepatch|/sys/kernel/livepatch_rs|g' "$f" > "$R/selftests/${f##*/}"
done
chmod +x "$R"/selftests/*.sh
cp "$WORK"/mod/selftests/*.ko "$R/selftests/test_modules/"
gcc -static -O2 -o "$R/selftests/test_klp-call_getpid" "$KST/test_klp-call_getpid.c" \
    || fail "building test_klp-call_getpid failed"
for b in /usr/bin/bash /usr/bin/date /usr/bin/diff /usr/bin/stat /usr/sbin/sysctl /usr/bin/getconf \
         /usr/bin/kmod /usr/bin/id /usr/bin/seq /usr/bin/tr /usr/bin/sed /usr/bin/grep /usr/bin/awk \
         /usr/bin/cat /usr/bin/sleep /usr/bin/dirname /usr/bin/basename /usr/bin/cut /usr/bin/head \
         /usr/bin/tail /usr/bin/wc /usr/bin/ls /usr/bin/rm /usr/bin/mkdir /usr/bin/uname /usr/bin/env; do
    [ -e "$b" ] || continue
    cp -L "$b" "$R$b"
    ldd "$b" 2>/dev/null | awk '/=>/ { print $3 } /ld-linux/ { print $1 }' | while read -r l; do
        [ -f "$l" ] && cp -Ln "$l" "$R/lib/x86_64-linux-gnu/" 2>/dev/null; true
    done
done
cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/"
for a in insmod rmmod modinfo lsmod; do ln -sf ../bin/kmod "$R/usr/sbin/$a"; done
ln -sf /usr/bin/bash "$R/bin/bash"
ln -sf /usr/bin/stat "$R/bin/stat"    # functions.sh calls /bin/stat --format
mkdir -p "$R/lib/modules/$(cat "$KDIR/include/config/kernel.release")/build"
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet) > "$WORK/initramfs.cpio"

# ---------------------------------------------------------------------------------------------
# 5. Boot and judge.
# ---------------------------------------------------------------------------------------------
# LP_QEMU / LP_QEMU_DATA: another QEMU build (e.g. the newer one scripts/qemu-backports.sh
# unpacks from Debian's bookworm-backports) and its firmware directory.
QEMU_BIN=${LP_QEMU:-qemu-system-x86_64}
step "boot QEMU $("$QEMU_BIN" --version | head -1 | sed 's/.*version //') (-accel $LP_ACCEL, -smp 2, timeout ${QEMU_TIMEOUT}s)"
LOG=${LP_LOG:-$WORK/console.log}
s=$(date +%s)
set +e
QEMU_ARGS=()
[ -n "${LP_QEMU_DATA:-}" ] && QEMU_ARGS+=(-L "$LP_QEMU_DATA")
timeout --foreground -k 5 "$QEMU_TIMEOUT" "$QEMU_BIN" "${QEMU_ARGS[@]}" -accel "$LP_ACCEL" -smp 2 -m 1024M \
    -nographic -no-reboot -kernel "$KDIR/arch/x86/boot/bzImage" -initrd "$WORK/initramfs.cpio" \
    -append "console=ttyS0 panic=-1 loglevel=7 quiet_not ${LP_APPEND:-}" < /dev/null > "$LOG" 2>&1
qrc=$?
set -e
STEP_T[qemu]=$(($(date +%s) - s))
tr -d '\r' < "$LOG" > "$LOG.txt"; mv "$LOG.txt" "$LOG"
echo "console log: $LOG (qemu exit $qrc)"

errors=()
[ $qrc = 124 ] && errors+=("QEMU timed out after ${QEMU_TIMEOUT}s")
grep -q '^LP-E2E: DONE' "$LOG" || errors+=("guest did not reach LP-E2E: DONE")
while IFS= read -r l; do errors+=("$l"); done < <(grep -E '^LP-E2E: FAIL' "$LOG" || true)
# Kernel splats: WARN/BUG/oops, lockdep reports (all start with "WARNING:" or name their kind),
# RCU stalls and misuse, memory-corruption detectors.
splats=$(grep -nE 'WARNING:|BUG:|Oops|Kernel panic|general protection fault|Call Trace:|suspicious RCU usage|possible circular locking|possible recursive locking|inconsistent lock state|lock held when returning|DEBUG_LOCKS_WARN_ON|turning off the locking correctness validator|detected stall|detected stalls on CPUs|INFO: task .* blocked|UBSAN|KASAN|refcount_t:|list_add corruption|list_del corruption|double fault|soft lockup|hard LOCKUP|scheduling while atomic|sleeping function called from invalid context' "$LOG" \
    | grep -v 'LP-E2E:' || true)
if [ -n "$splats" ]; then
    errors+=("kernel splat in console log:")
    while IFS= read -r l; do errors+=("    $l"); done <<< "$splats"
fi
npass=$(grep -c '^LP-E2E: PASS' "$LOG" || true)
nfail=$(grep -c '^LP-E2E: FAIL' "$LOG" || true)
# The guest says how many PASS lines its scenarios print when all pass: fewer means a check
# was skipped (an early return, a crash of the init script), which is a failure too.
nexpect=$(sed -n 's/^LP-E2E: EXPECT \([0-9]*\)$/\1/p' "$LOG" | tail -1)
[ -n "$nexpect" ] || errors+=("guest did not say how many checks to expect")
[ -n "$nexpect" ] && [ "$npass" != "$nexpect" ] && errors+=("$npass PASS lines, expected $nexpect")

# Transition times from the kernel's own log timestamps (printk time, microseconds): from
# "starting (un)patching transition" (every task pending) to "(un)patching complete".
ktimes() { # ktimes PREFIX NAME
    awk -v pre="$1" -v name="'$2'" '
        function ts(l) { sub(/^\[ */, "", l); sub(/\].*/, "", l); return l + 0 }
        index($0, pre " " name ": starting patching transition") { s = ts($0); d = "enable" }
        index($0, pre " " name ": starting unpatching transition") { s = ts($0); d = "disable" }
        index($0, pre " " name ": reversing transition") { s = ts($0); d = "reverse" }
        s && (index($0, pre " " name ": patching complete") || index($0, pre " " name ": unpatching complete")) {
            printf "  %-28s %-8s %8.1f ms\n", name, d, (ts($0) - s) * 1000; s = 0 }' "$LOG"
}
echo
echo "================ livepatch-linux e2e summary ================"
grep -E '^LP-E2E: (PASS|FAIL|TIME|INFO)' "$LOG" | grep -v 'INFO s[0-9]: stats' || true
echo "-------------------------------------------------------------"
echo "transition times from kernel log timestamps (every task pending -> complete):"
ktimes "livepatch:" livepatch_sample
ktimes "livepatch_rs:" cmdline
ktimes "livepatch_rs:" lp_target
echo "distributions (scenario 10; ms from 'starting ... transition' to '... complete'):"
awk '
    function ts(l) { sub(/^\[ */, "", l); sub(/\].*/, "", l); return l + 0 }
    /^LP-E2E: DIST-BEGIN/ { load = $3 } /^LP-E2E: DIST-END/ { load = "" }
    load != "" && /livepatch: .livepatch_sample.: starting patching transition/ { s["k"] = ts($0); d["k"] = "enable" }
    load != "" && /livepatch: .livepatch_sample.: starting unpatching transition/ { s["k"] = ts($0); d["k"] = "disable" }
    load != "" && /livepatch: .livepatch_sample.: (un)?patching complete/ && s["k"] { printf "kernel-sample %s %s %.1f\n", d["k"], load, (ts($0) - s["k"]) * 1000; s["k"] = 0 }
    load != "" && /livepatch_rs: .cmdline.: starting patching transition/ { s["r"] = ts($0); d["r"] = "enable" }
    load != "" && /livepatch_rs: .cmdline.: starting unpatching transition/ { s["r"] = ts($0); d["r"] = "disable" }
    load != "" && /livepatch_rs: .cmdline.: (un)?patching complete/ && s["r"] { printf "livepatch_rs %s %s %.1f\n", d["r"], load, (ts($0) - s["r"]) * 1000; s["r"] = 0 }
' "$LOG" | sort -k1,3 -k4,4n | awk '
    function flush() { if (n) printf "  %-14s %-8s %-9s n=%-3d min %8.1f  median %8.1f  max %8.1f\n", k1, k2, k3, n, v[1], (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2), v[n] }
    { key = $1 " " $2 " " $3; if (key != last) { flush(); n = 0; last = key; k1 = $1; k2 = $2; k3 = $3 } v[++n] = $4 }
    END { flush() }'
echo "the kernel's livepatch selftests (scenario 16: script | case | result):"
grep -oE "LP-E2E: SELFTEST .*" "$LOG" | sed 's/^LP-E2E: SELFTEST /  /' || true
echo "livepatch_rs completions (from its log):"
grep -oE "livepatch_rs: ('[a-z_]+': (un)?patching complete in |  pass at ).*" "$LOG" | sed 's/^livepatch_rs: /  /' || true
echo "-------------------------------------------------------------"
printf 'steps: apt %ss, bindgen %ss, kernel %ss, modules %ss, qemu %ss; total %ss\n' \
    "${STEP_T[apt]:-0}" "${STEP_T[bindgen]:-0}" "${STEP_T[kernel]:-0}" "${STEP_T[modules]:-0}" \
    "${STEP_T[qemu]:-0}" "$(($(date +%s) - T0))"
if [ ${#errors[@]} -gt 0 ]; then
    for e in "${errors[@]}"; do echo "  $e"; done
    echo "console log kept at $LOG"
    echo
    echo "E2E FAIL: ${errors[0]}"
    echo "e2e: $npass passed, $((nfail > 0 ? nfail : 1)) failed"
    exit 1
fi
# A passing run leaves nothing behind in /tmp (a failing one keeps the console log).
[ $KEEP = 1 ] || [ $OWN_WORK = 0 ] || rm -rf "$WORK"
echo "E2E PASS"
echo "e2e: $npass passed, 0 failed"
exit 0
}
