#!/bin/sh
# /init of the e2e initramfs: runs the scenarios and prints "LP-E2E: ..." markers on the console.
# The host (scripts/e2e.sh) judges PASS/FAIL from these markers and from the absence of splats.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
ln -sf /proc/self/fd /dev/fd 2>/dev/null   # bash process substitution (the selftests' diff)
echo 8 > /proc/sys/kernel/printk 2>/dev/null

M=/lib/modules
KLP=/sys/kernel/livepatch/livepatch_sample
LRS=/sys/kernel/livepatch_rs_builtin     # livepatch_rs's own (demo) patches
LRM=/sys/kernel/livepatch_rs             # patch modules' patches (as /sys/kernel/livepatch)

say()  { echo "LP-E2E: $*"; }
pass() { say "PASS $*"; }
failed() { say "FAIL $*"; }
info() { say "INFO $*"; }
# centiseconds since boot, from /proc/uptime (busybox date has no sub-second format). tick sets
# NOW with shell built-ins only (no fork: the guest may be saturated by the stress load).
tick() { read _up _ < /proc/uptime; _f=${_up#*.}; NOW=$(( ${_up%.*} * 100 + ${_f#0} )); }
now_cs() { tick; echo $NOW; }
# val FILE: the first line of FILE into V (built-in read; empty if unreadable)
val() { V=; read V < "$1" 2>/dev/null; }
# wait_file FILE VALUE TIMEOUT_CS: poll until FILE reads VALUE; prints the elapsed cs; 1 on timeout
wait_file() {
    tick; _s=$NOW
    while :; do
        val "$1"
        tick
        [ "$V" = "$2" ] && { echo $(( NOW - _s )); return 0; }
        [ $(( NOW - _s )) -ge "$3" ] && { echo $(( NOW - _s )); return 1; }
        usleep 3000
    done
}
# The PASS lines the selected scenarios print when everything passes (checked by the host).
EXPECT=0
expect() { EXPECT=$((EXPECT + $1)); }
# rmmod_refused MODULE: rmmod must fail because the module is in use (EAGAIN from
# delete_module(O_NONBLOCK) on a live reference, or EBUSY) -- not for any other reason.
rmmod_refused() {
    _out=$(rmmod "$1" 2>&1) && return 1
    case "$_out" in *"Resource temporarily unavailable"*|*"busy"*|*"in use"*) return 0 ;; esac
    info "rmmod $1 failed for another reason: $_out"; return 1
}
tainted_livepatch() { V=$(cat /proc/sys/kernel/tainted); [ $(( V / 32768 % 2 )) = 1 ]; }
# field NAME: value of NAME=... in /proc/lp_target
field() { tr ' ' '\n' < /proc/lp_target | sed -n "s/^$1=//p"; }
wait_field() { # wait_field NAME VALUE TIMEOUT_CS
    _s=$(now_cs)
    while [ "$(field "$1")" != "$2" ]; do
        [ $(( $(now_cs) - _s )) -ge "$3" ] && return 1
        usleep 5000
    done
}
finish() {
    kill $LOADPIDS 2>/dev/null
    say DONE
    sync
    reboot -f
}

info "kernel $(cat /proc/version)"
info "cpus online: $(cat /sys/devices/system/cpu/online)"
ORIG_CMDLINE=$(cat /proc/cmdline)

# --- load: the target module (2 kthreads) and user processes in syscall loops ---------------
insmod $M/lp_target.ko || { failed "insmod lp_target.ko"; finish; }
LOADPIDS=""
for i in 1 2; do
    ( while :; do read l < /proc/lp_target; read c < /proc/cmdline; done ) &
    LOADPIDS="$LOADPIDS $!"
done
info "load: 2 user readers of /proc/lp_target + /proc/cmdline, kthreads lp_ticker, lp_sleeper"
sleep 1
[ "$(field read)" = 1 ] && [ "$(field tick)" = 1 ] && pass "target: original output ($(cat /proc/lp_target))" \
    || failed "target: unexpected output $(cat /proc/lp_target)"

# --- scenario 4: the kernel's own livepatch sample, same load, same boot ---------------------
scenario_kernel_sample() {
    s=$(now_cs)
    insmod $M/livepatch-sample.ko || { failed "s4: insmod livepatch-sample.ko"; return; }
    if t=$(wait_file $KLP/transition 0 3000); then
        t=$(( $(now_cs) - s ))
        say "TIME kernel-livepatch-sample enable transition ${t}0 ms (polled, 10 ms resolution)"
    else
        failed "s4: kernel sample transition did not finish in 30 s"; return
    fi
    grep -q "this has been live patched" /proc/cmdline && pass "s4: kernel sample patched cmdline_proc_show" \
        || failed "s4: /proc/cmdline not patched by the kernel sample: $(cat /proc/cmdline)"
    s=$(now_cs)
    echo 0 > $KLP/enabled
    # When unpatching completes the kernel removes the patch's sysfs directory.
    i=0; while [ -d $KLP ] && [ "$(cat $KLP/transition 2>/dev/null)" != 0 ] && [ $i -lt 1500 ]; do usleep 2000; i=$((i+1)); done
    [ $i -lt 1500 ] || { failed "s4: kernel sample disable did not finish"; return; }
    say "TIME kernel-livepatch-sample disable transition $(( $(now_cs) - s ))0 ms (polled)"
    i=0; while [ -d $KLP ] && [ $i -lt 500 ]; do usleep 10000; i=$((i+1)); done
    rmmod livepatch_sample && [ "$(cat /proc/cmdline)" = "$ORIG_CMDLINE" ] \
        && pass "s4: kernel sample disabled, output restored, unloaded" \
        || failed "s4: kernel sample unload or restore failed"
}

# --- scenario 1: our patch on lp_target's functions, sleeper holds the transition -----------
scenario_target() {
    P=$LRS/lp_target
    echo hold > /proc/lp_target_ctl
    wait_field sleeping 1 500 || { failed "s1: sleeper did not enter lp_target_sleep"; return; }
    s=$(now_cs)
    tainted_livepatch && info "s1: kernel already tainted by livepatch before our first enable"
    echo 1 > $P/enabled || { failed "s1: enable failed"; return; }
    tainted_livepatch && pass "s1: enable set TAINT_LIVEPATCH (tainted=$V)" \
        || failed "s1: TAINT_LIVEPATCH not set after enable (tainted=$V)"
    # Users and the ticker switch; the sleeper cannot, while it sleeps in lp_target_sleep().
    wait_field read 2 1000 && wait_field tick 2 1000 \
        && pass "s1: users and ticker run the new code while the sleeper blocks ($(cat /proc/lp_target))" \
        || failed "s1: output did not change: $(cat /proc/lp_target)"
    sleep 1
    if [ "$(cat $P/transition)" = 1 ]; then
        pass "s1: transition still in progress while lp_sleeper sleeps in lp_target_sleep"
    else
        failed "s1: transition finished although lp_sleeper is still in lp_target_sleep"
    fi
    stalls=$(cat $P/stalls)
    info "s1: stall report: $(echo "$stalls" | tr '\n' ';')"
    echo "$stalls" | grep "lp_sleeper" | grep -q "lp_target_sleep" \
        && pass "s1: stall report names lp_sleeper in lp_target_sleep" \
        || failed "s1: stall report does not name lp_sleeper/lp_target_sleep"
    r=$(now_cs)
    echo release > /proc/lp_target_ctl
    if t=$(wait_file $P/transition 0 1000); then
        say "TIME livepatch-rs s1 release-to-complete ${t}0 ms; enable-to-complete $(( $(now_cs) - s ))0 ms (held ~$(( r - s ))0 ms)"
        pass "s1: transition completed after the sleeper left lp_target_sleep"
    else
        failed "s1: transition did not complete after release"; return
    fi
    echo hold > /proc/lp_target_ctl
    wait_field sleep 2 500 && pass "s1: sleeper runs the new lp_target_sleep" \
        || failed "s1: sleeper still runs the old lp_target_sleep: $(cat /proc/lp_target)"
    echo release > /proc/lp_target_ctl
    cat $P/stats 2>/dev/null | while read l; do info "s1: stats $l"; done
    # Unpatch (no blocker): everything back to the original.
    echo 0 > $P/enabled
    wait_file $P/transition 0 1000 >/dev/null && wait_field read 1 500 && wait_field tick 1 500 \
        && pass "s1: disabled, original output back ($(cat /proc/lp_target))" \
        || failed "s1: disable did not restore: $(cat /proc/lp_target)"
}

# --- scenario 2: a vmlinux function, cmdline_proc_show --------------------------------------
scenario_vmlinux() {
    P=$LRS/cmdline
    s=$(now_cs)
    echo 1 > $P/enabled || { failed "s2: enable failed"; return; }
    if t=$(wait_file $P/transition 0 3000); then
        say "TIME livepatch-rs cmdline enable transition $(( $(now_cs) - s ))0 ms (polled, 10 ms resolution)"
    else
        failed "s2: transition did not finish: $(cat $P/stalls)"; return
    fi
    grep -q "livepatch-rs" /proc/cmdline && pass "s2: cmdline_proc_show patched ($(cat /proc/cmdline))" \
        || failed "s2: /proc/cmdline unchanged: $(cat /proc/cmdline)"
    cat $P/stats 2>/dev/null | while read l; do info "s2: stats $l"; done
    rmmod_refused livepatch_rs && pass "s2: rmmod refused while patched (module in use)" \
        || failed "s2: rmmod livepatch_rs was not refused as busy while a patch is enabled"
    # As test-ftrace.sh: the ftrace_enabled sysctl cannot switch the redirect off (PERMANENT).
    _err=$( { echo 0 > /proc/sys/kernel/ftrace_enabled; } 2>&1 ) ; val /proc/sys/kernel/ftrace_enabled
    case "$V:$_err" in 1:*busy*) pass "s2: ftrace_enabled=0 refused while patched ($_err)" ;;
        *) failed "s2: ftrace_enabled=0 not refused while patched (now $V: $_err)"; echo 1 > /proc/sys/kernel/ftrace_enabled ;; esac
    s=$(now_cs)
    echo 0 > $P/enabled
    wait_file $P/transition 0 3000 >/dev/null || { failed "s2: disable did not finish"; return; }
    say "TIME livepatch-rs cmdline disable transition $(( $(now_cs) - s ))0 ms (polled)"
    [ "$(cat /proc/cmdline)" = "$ORIG_CMDLINE" ] && pass "s2: disabled, /proc/cmdline restored" \
        || failed "s2: /proc/cmdline not restored: $(cat /proc/cmdline)"
    # No patch left: ftrace_enabled may be switched off again (as with the kernel's livepatch).
    if echo 0 > /proc/sys/kernel/ftrace_enabled 2>/dev/null; then
        echo 1 > /proc/sys/kernel/ftrace_enabled
        pass "s2: ftrace_enabled=0 accepted once no patch is registered"
    else
        failed "s2: ftrace_enabled=0 still refused with no patch registered"
    fi
}

# --- scenario 3: reverse mid-transition ------------------------------------------------------
scenario_reverse() {
    P=$LRS/lp_target
    echo hold > /proc/lp_target_ctl
    wait_field sleeping 1 500 || { failed "s3: sleeper did not enter lp_target_sleep"; return; }
    echo 1 > $P/enabled || { failed "s3: enable failed"; return; }
    wait_field read 2 1000 && wait_field tick 2 1000 || { failed "s3: patch did not take effect"; return; }
    usleep 300000
    [ "$(cat $P/transition)" = 1 ] || { failed "s3: transition not blocked by the sleeper"; return; }
    s=$(now_cs)
    echo 0 > $P/enabled || { failed "s3: write 0 (reverse) failed"; return; }
    if t=$(wait_file $P/transition 0 1000); then
        say "TIME livepatch-rs s3 reverse transition $(( $(now_cs) - s ))0 ms (sleeper still held)"
    else
        failed "s3: reverse did not complete: $(cat $P/stalls)"; return
    fi
    [ "$(cat $P/enabled)" = 0 ] && wait_field read 1 500 && wait_field tick 1 500 \
        && pass "s3: reversed while the sleeper blocked; all tasks back on the original ($(cat /proc/lp_target))" \
        || failed "s3: not back to original: $(cat /proc/lp_target)"
    # The held call entered the original before the enable; it must return the original's 1,
    # and the next call (reverse complete: every task unpatched) must be the original again
    # (only the original sets sleeping=1; the replacement just naps).
    n0=$(field sleeps)
    echo release > /proc/lp_target_ctl
    if wait_field sleeps $((n0 + 1)) 500 && [ "$(field sleep)" = 1 ]; then
        echo hold > /proc/lp_target_ctl
        wait_field sleeping 1 500 && pass "s3: the held call returned through the original (sleep=1) and the next call runs the original" \
            || failed "s3: after the reversal the sleeper does not run the original: $(cat /proc/lp_target)"
        echo release > /proc/lp_target_ctl
    else
        failed "s3: the held call did not return the original's value: $(cat /proc/lp_target)"
    fi
}

# --- scenario 6: force ------------------------------------------------------------------------
scenario_force() {
    insmod $M/lp_target.ko && insmod $M/livepatch_rs.ko || { failed "s6: reloading the modules failed"; return; }
    P=$LRS/lp_target
    echo hold > /proc/lp_target_ctl
    wait_field sleeping 1 500 || { failed "s6: sleeper did not enter lp_target_sleep"; return; }
    echo 1 > $P/enabled || { failed "s6: enable failed"; return; }
    usleep 300000
    [ "$(cat $P/transition)" = 1 ] || { failed "s6: transition not blocked by the sleeper"; return; }
    echo 1 > $P/force || { failed "s6: write 1 to force failed"; return; }
    [ "$(cat $P/transition)" = 0 ] && [ "$(field read)" = 2 ] \
        && pass "s6: force completed the blocked transition at once ($(cat /proc/lp_target))" \
        || failed "s6: force did not complete the transition"
    echo release > /proc/lp_target_ctl
    wait_field sleeping 0 500
    rmmod_refused livepatch_rs && pass "s6: module of a forced patch stays loaded (its code may still run)" \
        || failed "s6: rmmod livepatch_rs after a force was not refused as busy"
}

# --- scenario 7: consistency stress ------------------------------------------------------------
# Two spinning kthreads per CPU call lp_target_f() (which calls lp_target_g() through its hook)
# and two user tasks read /proc/lp_target_tw (lp_target_twrun() runs task work inside itself,
# then calls lp_target_twstep() through its hook), while the patch of all four functions is
# enabled, disabled and reversed in a loop. Every call is classified by lp_target: all-old,
# all-new, or MIXED (one universe's outer function with the other's inner one). Any mixed call
# fails the run.
STRESS_CYCLES=${STRESS_CYCLES:-100}
STRESS_BUDGET_CS=${STRESS_BUDGET_CS:-42000}
stress_wait() { # stress_wait CYCLE WHAT: waits for the transition to end; 1 if stuck
    if ! wait_file $P/transition 0 3000 >/dev/null; then
        failed "s7: cycle $1: $2 transition stuck for 30 s: $(cat $P/stalls | tr '\n' ';')"
        return 1
    fi
}
scenario_stress() {
    P=$LRS/stress
    echo stress > /proc/lp_target_ctl || { failed "s7: cannot start the stress kthreads"; return; }
    TWPIDS=""
    for i in 1 2; do
        ( while :; do read l < /proc/lp_target_tw; done ) &
        TWPIDS="$TWPIDS $!"
    done
    info "s7: stress load: $(grep -c . /proc/lp_target_stress) counters; kthreads: $(ps | grep -c '[l]p_stress')"
    s=$(now_cs); n=0; ok=1; slowest=0
    while [ $n -lt $STRESS_CYCLES ] && [ $(( $(now_cs) - s )) -lt $STRESS_BUDGET_CS ]; do
        n=$((n + 1)); c=$(now_cs)
        echo 1 > $P/enabled || { failed "s7: cycle $n: enable refused"; ok=0; break; }
        # Every third cycle: reverse the enable 2 ms in (a plain disable if it already finished).
        [ $((n % 3)) = 0 ] && { usleep 2000; echo 0 > $P/enabled; }
        # Every fifth other cycle: reverse the enable 2 ms in and that reversal 1 ms later (two
        # reversals in a row: a task-work check preempted across both must not switch; see
        # livepatch-core/tests/stale_self_check.rs -- only a preemptible kernel can hit it).
        [ $((n % 3)) != 0 ] && [ $((n % 5)) = 2 ] \
            && { usleep 2000; echo 0 > $P/enabled; usleep 1000; echo 1 > $P/enabled; }
        stress_wait $n enable || { ok=0; break; }
        val $P/enabled
        if [ "$V" = 1 ]; then
            echo 0 > $P/enabled
            # Every fourth cycle: reverse the disable 1 ms in (a new enable if it finished).
            [ $((n % 4)) = 1 ] && { usleep 1000; echo 1 > $P/enabled; }
            stress_wait $n disable || { ok=0; break; }
            val $P/enabled
            if [ "$V" = 1 ]; then
                echo 0 > $P/enabled
                stress_wait $n "final disable" || { ok=0; break; }
            fi
        fi
        d=$(( $(now_cs) - c )); [ $d -gt $slowest ] && slowest=$d
        [ $((n % 10)) = 0 ] && info "s7: $n cycles in $(( $(now_cs) - s ))0 ms (slowest ${slowest}0 ms): $(cat /proc/lp_target_stress)"
    done
    kill $TWPIDS 2>/dev/null
    echo nostress > /proc/lp_target_ctl
    counts=$(cat /proc/lp_target_stress)
    say "TIME livepatch-rs s7 $n stress cycles in $(( $(now_cs) - s ))0 ms, slowest cycle ${slowest}0 ms"
    info "s7: $counts"
    mixed=$(echo "$counts" | tr ' ' '\n' | sed -n 's/^[a-z]*_mixed=//p' | awk '{s += $1} END {print s + 0}')
    fnew=$(echo "$counts" | tr ' ' '\n' | sed -n 's/^f_new=//p')
    twnew=$(echo "$counts" | tr ' ' '\n' | sed -n 's/^tw_new=//p')
    [ "$mixed" = 0 ] && pass "s7: no task ran mixed universes ($counts)" \
        || failed "s7: $mixed calls ran one universe's outer function with the other's inner one ($counts)"
    [ $ok = 1 ] && [ $n -ge $STRESS_CYCLES ] && pass "s7: $n enable/disable/reverse cycles under stress" \
        || failed "s7: only $n of $STRESS_CYCLES cycles completed"
    [ "${fnew:-0}" -gt 0 ] && [ "${twnew:-0}" -gt 0 ] && pass "s7: both callers ran the new universe (f_new=$fnew tw_new=$twnew)" \
        || failed "s7: a caller never ran the new code (f_new=$fnew tw_new=$twnew)"
}

# --- scenario 11: a user task sleeping in a patched function (the fake-signal path) ------------
scenario_user_sleeper() {
    P=$LRS/lp_target
    echo blockhold > /proc/lp_target_ctl
    rm -f /tmp/blk
    cat /proc/lp_target_block > /tmp/blk &
    BPID=$!
    wait_field blocking 1 500 || { failed "s11: reader did not block in lp_target_block"; kill $BPID; return; }
    echo 1 > $P/enabled || { failed "s11: enable failed"; return; }
    # The reader sleeps in the old lp_target_block; from the second pass on it gets a fake
    # signal (TWA_SIGNAL task work): its sleep ends with -ERESTARTSYS, it switches on the way
    # out, and its restarted read runs the new variant, which returns at once.
    if t=$(wait_file $P/transition 0 1000); then
        wait $BPID; val /tmp/blk
        [ "$V" = 2 ] && pass "s11: a user task sleeping in a patched function was switched by a fake signal (${t}0 ms); its restarted read ran the new code" \
            || failed "s11: the restarted read returned '$V', not the new variant's 2"
    else
        failed "s11: transition blocked by a user task sleeping in lp_target_block: $(cat $P/stalls | tr '\n' ';')"
        kill $BPID
    fi
    echo blockrelease > /proc/lp_target_ctl
    echo 0 > $P/enabled; wait_file $P/transition 0 1000 >/dev/null
}

# --- scenario 12: stacked patches and atomic replace on one function ----------------------------
scenario_stack_replace() {
    C=$LRS/cmdline; S=$LRS/cmdline_stacked; X=$LRS/cmdline_replace
    en() { echo 1 > $1/enabled && wait_file $1/transition 0 3000 >/dev/null; }
    dis() { echo 0 > $1/enabled && wait_file $1/transition 0 3000 >/dev/null; }
    shows() { grep -q "$1" /proc/cmdline; }
    en $C && en $S && shows "by cmdline_stacked" && val $C/enabled && [ "$V" = 1 ] \
        && pass "s12: a patch stacked on another runs on top" || failed "s12: stacking: $(cat /proc/cmdline)"
    dis $S && shows "cmdline_proc_show is patched$" && pass "s12: disabling the top patch uncovers the one below" \
        || failed "s12: after disabling the top: $(cat /proc/cmdline)"
    en $S && en $X && shows "by cmdline_replace" && val $C/enabled && [ "$V" = 0 ] && val $S/enabled && [ "$V" = 0 ] \
        && pass "s12: atomic replace took over and retired both earlier patches" \
        || failed "s12: atomic replace: $(cat /proc/cmdline); cmdline=$(cat $C/enabled) stacked=$(cat $S/enabled)"
    dis $X && [ "$(cat /proc/cmdline)" = "$ORIG_CMDLINE" ] && pass "s12: disabling the replace patch restores the original" \
        || failed "s12: after disabling the replace patch: $(cat /proc/cmdline)"
}

# --- scenario 8: >= 10 000 tasks alive across enable / reverse / disable ----------------------
scenario_threads() {
    P=$LRS/cmdline
    echo 30000 > /proc/sys/kernel/threads-max
    rm -f /tmp/ready
    lp_threads hold 10000 /tmp/ready &
    TPID=$!
    i=0; while [ ! -s /tmp/ready ] && [ $i -lt 600 ]; do sleep 1; i=$((i + 1)); done
    val /tmp/ready
    [ "$V" = "ready 10000" ] && pass "s8: 10000 extra threads alive" || { failed "s8: threads not started: '$V'"; kill $TPID; return; }
    ok=1
    echo 1 > $P/enabled && wait_file $P/transition 0 6000 >/dev/null || ok=0
    records=$(sed -n 's/^task_records \([0-9]*\).*/\1/p' $P/stats)
    echo 0 > $P/enabled; echo 1 > $P/enabled        # a disable reversed at once
    wait_file $P/transition 0 6000 >/dev/null || ok=0
    val $P/enabled; [ "$V" = 1 ] || ok=0
    echo 0 > $P/enabled && wait_file $P/transition 0 6000 >/dev/null || ok=0
    [ $ok = 1 ] && [ "${records:-0}" -ge 10000 ] && [ "$(cat /proc/cmdline)" = "$ORIG_CMDLINE" ] \
        && pass "s8: enable, reverse, disable completed with $records task records" \
        || failed "s8: transitions with 10000 threads failed (ok=$ok records=$records): $(cat $P/stalls | tr '\n' ';')"
    kill $TPID; wait $TPID 2>/dev/null
}

# --- scenario 9: fork storm during enable / reverse loops -------------------------------------
# New threads and processes, created and exiting all the time, each call the patched
# twrun/twstep pair once; children must inherit their parent's universe atomically with
# retargets and reversals, and no walk may miss one.
scenario_fork_storm() {
    P=$LRS/stress
    before=$(sed -n 's/.*tw_mixed=\([0-9]*\).*/\1/p' /proc/lp_target_stress)
    lp_threads storm 25 > /tmp/storm &
    SPID=$!
    n=0; ok=1
    tick; s=$NOW
    while [ $((NOW - s)) -lt 2200 ]; do
        n=$((n + 1))
        echo 1 > $P/enabled
        [ $((n % 2)) = 0 ] && echo 0 > $P/enabled      # reverse the enable
        wait_file $P/transition 0 3000 >/dev/null || { ok=0; break; }
        val $P/enabled
        if [ "$V" = 1 ]; then
            echo 0 > $P/enabled
            [ $((n % 3)) = 0 ] && echo 1 > $P/enabled  # reverse the disable
            wait_file $P/transition 0 3000 >/dev/null || { ok=0; break; }
            val $P/enabled; [ "$V" = 1 ] && { echo 0 > $P/enabled; wait_file $P/transition 0 3000 >/dev/null || { ok=0; break; }; }
        fi
        tick
    done
    wait $SPID
    val /tmp/storm
    after=$(sed -n 's/.*tw_mixed=\([0-9]*\).*/\1/p' /proc/lp_target_stress)
    info "s9: $n cycles; $V; tw_mixed $before -> $after"
    [ $ok = 1 ] && [ "$after" = "$before" ] && [ -n "$V" ] \
        && pass "s9: $n enable/reverse/disable cycles during a fork storm ($V), no mixed call" \
        || failed "s9: fork storm: ok=$ok cycles=$n mixed $before -> $after ($V): $(cat $P/stalls | tr '\n' ';')"
}

# --- scenario 10: transition time distributions, kernel sample vs ours -------------------------
# Ten enable+disable transitions of cmdline_proc_show each, on two workloads: "idle" (only the
# background readers: a first attempt can succeed) and "spinning" (two CPU-bound kthreads per
# CPU that never sleep: a first attempt cannot switch them). The host computes min/median/max
# from the kernel log's own timestamps (livepatch: / livepatch_rs: transition lines).
scenario_distributions() {
    for load in idle spinning; do
        [ $load = spinning ] && echo stress > /proc/lp_target_ctl
        say "DIST-BEGIN $load"
        i=0
        while [ $i -lt 10 ]; do
            i=$((i + 1))
            insmod $M/livepatch-sample.ko || break
            wait_file $KLP/transition 0 6000 >/dev/null
            echo 0 > $KLP/enabled
            j=0; while [ -d $KLP ] && [ $j -lt 3000 ]; do usleep 10000; j=$((j + 1)); done
            rmmod livepatch_sample || break
            echo 1 > $LRS/cmdline/enabled
            wait_file $LRS/cmdline/transition 0 6000 >/dev/null
            echo 0 > $LRS/cmdline/enabled
            wait_file $LRS/cmdline/transition 0 6000 >/dev/null
        done
        say "DIST-END $load"
        [ $load = spinning ] && echo nostress > /proc/lp_target_ctl
        [ $i = 10 ] && pass "s10: 10 transitions each for the kernel sample and ours ($load)" \
            || failed "s10: distribution run ($load) stopped after $i"
    done
}

# --- scenario 13: a target module loaded after its patch is enabled --------------------------
# The `late` patch names lp_late.ko's static, unexported lp_late_value(). Enabled while the
# module is absent, the module notifier resolves and patches the function at
# MODULE_STATE_COMING (before the module's init runs), reverts it at MODULE_STATE_GOING, and
# does it again when the module is loaded a second time (at another address).
late_value() { V=; read V < /proc/lp_late 2>/dev/null; }
scenario_late() {
    P=$LRS/late
    echo 1 > $P/enabled || { failed "s13: enabling the late patch without its module failed"; return; }
    wait_file $P/transition 0 3000 >/dev/null || { failed "s13: late patch transition did not finish"; return; }
    insmod $M/lp_late.ko || { failed "s13: insmod lp_late.ko with the patch enabled"; return; }
    late_value
    init_saw=$(dmesg | grep -c "lp_late: init sees lp_late_value() = 2")
    [ "$V" = 2 ] && [ "$init_saw" -ge 1 ] \
        && pass "s13: module loaded after the patch runs the new lp_late_value (read $V, its init saw 2)" \
        || failed "s13: late module not patched: read '$V', init saw 2: $init_saw"
    if rmmod lp_late; then
        insmod $M/lp_late.ko || { failed "s13: reloading lp_late.ko"; return; }
        late_value
        [ "$V" = 2 ] && pass "s13: unloaded while patched (not pinned), reloaded: patched again (read $V)" \
            || failed "s13: reloaded module not patched: read '$V'"
    else
        failed "s13: rmmod lp_late refused while its patch is enabled"; return
    fi
    echo 0 > $P/enabled; wait_file $P/transition 0 3000 >/dev/null
    late_value
    [ "$V" = 1 ] && pass "s13: disabled with the module loaded: original again (read $V)" \
        || failed "s13: disable did not restore lp_late_value: read '$V'"
    # Enabled while the module is loaded, then the module goes while the patch stays.
    echo 1 > $P/enabled; wait_file $P/transition 0 3000 >/dev/null
    late_value; v_on=$V
    rmmod lp_late && r_ok=1 || r_ok=0
    val $P/enabled; e_after=$V
    echo 0 > $P/enabled; wait_file $P/transition 0 3000 >/dev/null
    [ "$v_on" = 2 ] && [ $r_ok = 1 ] && [ "$e_after" = 1 ] \
        && pass "s13: enabled over the loaded module (read $v_on), module unloaded under the enabled patch" \
        || failed "s13: enable over loaded module read '$v_on', rmmod ok=$r_ok, enabled after rmmod '$e_after'"
    insmod $M/lp_late.ko && late_value && rmmod lp_late
    [ "$V" = 1 ] && pass "s13: after the patch is gone the module loads unpatched (read $V)" \
        || failed "s13: module patched after the patch was disabled: read '$V'"
}

# --- scenario 14: patch modules written against include/livepatch_rs.h -------------------------
# lprs_sample.ko is the kernel's samples/livepatch/livepatch-sample.c with its include line
# changed (the host checks that exactly one line differs); lprs_late_patch.ko names lp_late.ko's
# static lp_late_value (old_sympos 1) with the four callbacks; lprs_replace.ko is an atomic
# replace of cmdline_proc_show; lprs_bad.ko names a function that does not exist.
# wait_gone DIR TIMEOUT_CS: poll until DIR no longer exists
wait_gone() { tick; _s=$NOW; while [ -d "$1" ]; do tick; [ $((NOW - _s)) -ge "$2" ] && return 1; usleep 5000; done; }
scenario_patch_modules() {
    SAMPLE=$LRM/lprs_sample; LATEP=$LRM/lprs_late_patch; REPL=$LRM/lprs_replace
    insmod $M/lprs_sample.ko || { failed "s14: insmod lprs_sample.ko"; return; }
    wait_file $SAMPLE/transition 0 3000 >/dev/null
    val $SAMPLE/enabled
    [ "$V" = 1 ] && grep -q "this has been live patched" /proc/cmdline \
        && pass "s14: the kernel's livepatch-sample.c (one line changed) patched cmdline_proc_show via klp_enable_patch" \
        || { failed "s14: sample not enabled ($V): $(cat /proc/cmdline)"; return; }
    if out=$(insmod $M/lprs_bad.ko 2>&1); then
        failed "s14: lprs_bad.ko (unknown function) loaded"
    else
        [ ! -d $LRM/lprs_bad ] && ! grep -q '^lprs_bad ' /proc/modules && grep -q "this has been live patched" /proc/cmdline \
            && pass "s14: a patch naming an unknown function is refused ($out), nothing changed" \
            || failed "s14: after the refused lprs_bad: dir=$([ -d $LRM/lprs_bad ] && echo yes) $(cat /proc/cmdline)"
    fi
    echo 1 > $LRS/cmdline_stacked/enabled; wait_file $LRS/cmdline_stacked/transition 0 3000 >/dev/null
    top=$(cat /proc/cmdline)
    echo 0 > $LRS/cmdline_stacked/enabled; wait_file $LRS/cmdline_stacked/transition 0 3000 >/dev/null
    case "$top" in *cmdline_stacked*) grep -q "this has been live patched" /proc/cmdline \
        && pass "s14: a built-in patch stacks on the patch module's and uncovers it when disabled" \
        || failed "s14: after unstacking: $(cat /proc/cmdline)" ;;
        *) failed "s14: stacking on the sample: $top" ;;
    esac
    rmmod_refused lprs_sample && pass "s14: an enabled patch module cannot be removed (pinned)" \
        || failed "s14: rmmod lprs_sample was not refused as in use"
    insmod $M/lprs_late_patch.ko || { failed "s14: insmod lprs_late_patch.ko"; return; }
    wait_file $LATEP/transition 0 3000 >/dev/null
    insmod $M/lp_late.ko || { failed "s14: insmod lp_late.ko under lprs_late_patch"; return; }
    late_value
    cb=$(dmesg | grep -c "lprs_late_patch: p[or][se]t*_*patch_callback: lp_late")
    [ "$V" = 3 ] && dmesg | grep -q "lprs_late_patch: pre_patch_callback: lp_late" \
        && dmesg | grep -q "lprs_late_patch: post_patch_callback: lp_late" \
        && pass "s14: a patch module for a module loaded later: lp_late_value replaced (read 3), pre/post_patch ran at its load" \
        || failed "s14: late patch module: read '$V', callbacks $cb"
    insmod $M/lprs_replace.ko || { failed "s14: insmod lprs_replace.ko"; return; }
    wait_file $REPL/transition 0 3000 >/dev/null
    wait_gone $SAMPLE 1000; wait_gone $LATEP 1000
    late_value
    grep -q "replaced by lprs_replace" /proc/cmdline && [ "$V" = 1 ] && [ ! -d $SAMPLE ] && [ ! -d $LATEP ] \
        && rmmod lprs_sample && rmmod lprs_late_patch \
        && pass "s14: atomic replace retired both patch modules' patches (directories gone, lp_late_value original: $V), they unload" \
        || failed "s14: atomic replace: $(cat /proc/cmdline), lp_late '$V', dirs $(ls $LRM | tr '\n' ' ')"
    echo 0 > $REPL/enabled
    wait_gone $REPL 1000 && [ "$(cat /proc/cmdline)" = "$ORIG_CMDLINE" ] && rmmod lprs_replace \
        && pass "s14: disabled through its enabled file: original restored, directory gone, module unloaded" \
        || failed "s14: disabling lprs_replace: $(cat /proc/cmdline), dirs $(ls $LRM | tr '\n' ' ')"
    rmmod lp_late
}

# --- scenario 17: a patch module written in Rust ---------------------------------------------
# lprs_rust.ko (patches/lprs_rust.rs) declares its patch with the livepatch_rs_patch crate
# (patch-api/): vmlinux's cmdline_proc_show and lp_late.ko's static lp_late_value (old_sympos 1,
# module loaded after the patch), pre_patch/post_patch/post_unpatch callbacks on both objects.
scenario_rust_patch() {
    RP=$LRM/lprs_rust
    insmod $M/lprs_rust.ko || { failed "s17: insmod lprs_rust.ko"; return; }
    wait_file $RP/transition 0 3000 >/dev/null
    val $RP/enabled
    [ "$V" = 1 ] && [ "$(cat /proc/cmdline)" = "this has been live patched by a Rust patch module" ] \
        && ls -d $RP/vmlinux/cmdline_proc_show,* >/dev/null 2>&1 && [ -d $RP/lp_late ] \
        && dmesg | grep -q "lprs_rust: pre_patch: 1 function(s) of vmlinux" \
        && ! dmesg | grep -q "lprs_rust: pre_patch: 1 function(s) of lp_late" \
        && pass "s17: the Rust patch module registered its patch: $RP/vmlinux/$(ls $RP/vmlinux | grep cmdline), /proc/cmdline replaced, pre_patch ran for vmlinux only" \
        || { failed "s17: lprs_rust not enabled ($V): $(cat /proc/cmdline), dir $(ls $RP 2>&1 | tr '\n' ' ')"; return; }
    insmod $M/lp_late.ko || { failed "s17: insmod lp_late.ko under lprs_rust"; return; }
    late_value
    [ "$V" = 4 ] && dmesg | grep -q "lprs_rust: pre_patch: 1 function(s) of lp_late" \
        && dmesg | grep -q "lprs_rust: post_patch: lp_late (module pointer set: true)" \
        && ls -d $RP/lp_late/lp_late_value,1 >/dev/null 2>&1 && rmmod lp_late \
        && dmesg | grep -q "lprs_rust: post_unpatch: 1 function(s) of lp_late" \
        && pass "s17: its module object: lp_late loaded later runs the Rust lp_late_value (read 4), callbacks ran with the module set, lp_late unloads under it" \
        || failed "s17: lprs_rust's lp_late object: read '$V', $(dmesg | grep -c 'lprs_rust: p.*lp_late') callback lines"
    rmmod_refused lprs_rust && pass "s17: the enabled Rust patch module cannot be removed (pinned)" \
        || failed "s17: rmmod lprs_rust was not refused as in use"
    echo 0 > $RP/enabled
    wait_gone $RP 1000 && [ "$(cat /proc/cmdline)" = "$ORIG_CMDLINE" ] \
        && dmesg | grep -q "lprs_rust: post_unpatch: 1 function(s) of vmlinux" && rmmod lprs_rust \
        && pass "s17: disabled through its enabled file: original /proc/cmdline, post_unpatch ran, directory gone, module unloaded" \
        || failed "s17: disabling lprs_rust: $(cat /proc/cmdline), dirs $(ls $LRM | tr '\n' ' ')"
}

# --- scenario 15: the sysfs interface ---------------------------------------------------------
# The tree as the kernel's /sys/kernel/livepatch (own root), its permissions, and writes checked
# like the kernel's: a bad value is -EINVAL, a second enable -EINVAL, another patch while a
# transition is in progress -EBUSY, force outside a transition -EINVAL, a read-only file
# -EACCES -- and nothing changes.
# wr FILE VALUE: the write's error message, empty on success
wr() { ( echo "$2" > "$1" ) 2>&1 | sed 's/.*: //'; }
scenario_sysfs() {
    C=$LRS/cmdline; T=$LRS/lp_target
    ok=1; missing=""
    for f in $C/enabled $C/transition $C/force $C/replace $C/stalls $C/stats $C/vmlinux/patched \
             $T/lp_target/patched; do [ -f $f ] || { ok=0; missing="$missing $f"; }; done
    for d in "$C/vmlinux/cmdline_proc_show,1" "$T/lp_target/lp_target_read,1" "$T/lp_target/lp_target_block,1"; do
        [ -d "$d" ] || { ok=0; missing="$missing $d"; }
    done
    modes=$(stat -c %a $C/enabled $C/transition $C/force $C/replace $C/stalls $C/vmlinux/patched | tr '\n' ' ')
    [ "$modes" = "644 444 200 444 400 444 " ] || ok=0
    val $LRS/cmdline_replace/replace; r1=$V; val $C/replace
    [ "$r1" = 1 ] && [ "$V" = 0 ] || ok=0
    [ $ok = 1 ] && pass "s15: tree <patch>/{enabled,transition,force,replace,stalls,stats}, <object>/patched, <object>/<function,sympos>/, modes $modes" \
        || failed "s15: sysfs tree: missing$missing; modes $modes; replace $r1/$V"
    e1=$(wr $C/enabled 2); val $C/enabled; v1=$V
    e2=$(wr $C/force 1)
    e3=$(wr $C/transition 1)
    [ "$e1" = "Invalid argument" ] && [ "$v1" = 0 ] && [ "$e2" = "Invalid argument" ] && [ "$e3" = "Permission denied" ] \
        && pass "s15: bad value -EINVAL, force outside a transition -EINVAL, read-only file -EACCES; nothing changed" \
        || failed "s15: writes: '2'->'$e1' (enabled $v1), force->'$e2', transition->'$e3'"
    echo 1 > $C/enabled; wait_file $C/transition 0 3000 >/dev/null
    val $C/vmlinux/patched; p1=$V
    e4=$(wr $C/enabled 1)
    echo hold > /proc/lp_target_ctl
    wait_field sleeping 1 500
    echo 1 > $T/enabled
    e5=$(wr $C/enabled 0); val $C/enabled; v5=$V
    e6=$(wr $LRS/cmdline_stacked/enabled 1); val $LRS/cmdline_stacked/enabled; v6=$V
    val $T/lp_target/patched; p2=$V
    # Every task's patch state, as /proc/<pid>/patch_state: the sleeper is still unpatched (0),
    # the shell that enabled the patch has switched (1); -1 everywhere once it completed.
    usleep 300000
    sl=""; for d in /proc/[0-9]*; do read c < $d/comm 2>/dev/null; [ "$c" = lp_sleeper ] && sl=${d#/proc/}; done
    ps_sl=$(sed -n "s/^$sl //p" /proc/livepatch_rs_patch_state)
    ps_me=$(sed -n "s/^$$ //p" /proc/livepatch_rs_patch_state)
    ps_mode=$(stat -c %a /proc/livepatch_rs_patch_state)
    stalls=$(cat $T/stalls | tr '\n' ';')
    echo release > /proc/lp_target_ctl
    wait_file $T/transition 0 3000 >/dev/null
    ps_after=$(grep -vc ' -1$' /proc/livepatch_rs_patch_state)
    echo 0 > $T/enabled; wait_file $T/transition 0 3000 >/dev/null
    echo 0 > $C/enabled; wait_file $C/transition 0 3000 >/dev/null
    val $C/vmlinux/patched; p3=$V
    [ -n "$sl" ] && [ "$ps_sl" = 0 ] && [ "$ps_me" = 1 ] && [ "$ps_after" = 0 ] && [ "$ps_mode" = 400 ] \
        && echo "$stalls" | grep -q "lp_sleeper.*lp_target_sleep" \
        && pass "s15: per-task patch state (0400): held lp_sleeper $ps_sl, this shell $ps_me, -1 for all after; stalls (0400) name it" \
        || failed "s15: patch_state: sleeper '$sl' '$ps_sl', shell '$ps_me', not -1 after: '$ps_after', mode $ps_mode; stalls $stalls"
    [ "$p1" = 1 ] && [ "$e4" = "Invalid argument" ] && [ "$e5" = "Device or resource busy" ] && [ "$v5" = 1 ] \
        && [ "$e6" = "Device or resource busy" ] && [ "$v6" = 0 ] && [ "$p2" = 1 ] && [ "$p3" = 0 ] \
        && [ "$(cat /proc/cmdline)" = "$ORIG_CMDLINE" ] \
        && pass "s15: patched follows the object; second enable -EINVAL; during another transition -EBUSY, nothing changed" \
        || failed "s15: patched $p1/$p2/$p3, enable twice '$e4', busy disable '$e5' ($v5), busy enable '$e6' ($v6)"
}

# --- scenario 18: task tracking follows the redirect hooks ---------------------------------------
# The fork/free ftrace hooks that keep task records (PERMANENT, like the redirect hooks) are
# registered by the first redirect hook and go when no hook is left and no transition runs.
# So: with ftrace_enabled=0 an enable fails at its first hook with the kernel's messages and
# -EBUSY (test-ftrace.sh); a patch with no hook (its module absent) registers no ftrace ops, so
# the sysctl can be switched off, as with the kernel's livepatch; and a task forked while
# tracking is off is given its record, in the right universe, when tracking starts.
# since_mark TEXT: the kernel log after the last line containing TEXT
since_mark() { dmesg | awk -v m="$1" 'index($0, m) { p = 1; next } p'; }
scenario_tracking() {
    FE=/proc/sys/kernel/ftrace_enabled
    P=$LRS/late
    # A: a built-in patch enabled with ftrace_enabled=0.
    echo "lp-e2e: s18 mark A" > /dev/kmsg
    if echo 0 > $FE; then
        err=$( { echo 1 > $LRS/cmdline/enabled; } 2>&1 ); val $LRS/cmdline/enabled; en=$V
        echo 1 > $FE
        log=$(since_mark "lp-e2e: s18 mark A")
        case "$err:$en" in *busy*:0)
            echo "$log" | grep -q "livepatch: failed to register ftrace handler for function 'cmdline_proc_show' (-16)" \
                && echo "$log" | grep -q "livepatch: 'cmdline': canceling patching transition, going to unpatch" \
                && echo "$log" | grep -q "livepatch: 'cmdline': unpatching complete" \
                && [ "$(cat /proc/cmdline)" = "$ORIG_CMDLINE" ] \
                && pass "s18: ftrace_enabled=0: enable fails at its first hook with the kernel's messages ($err), nothing changed" \
                || failed "s18: ftrace_enabled=0 enable: messages or state differ: $(echo "$log" | grep 'livepatch:' | tr '\n' ';')" ;;
        *) failed "s18: ftrace_enabled=0 enable: '$err', enabled $en" ;; esac
    else
        failed "s18: ftrace_enabled=0 refused with no patch registered"
    fi
    # B: a patch whose module is absent has no hook: no ftrace ops (the sysctl may go off); its
    # module's load then fails at the hook, as klp_module_coming() does.
    echo 1 > $P/enabled; wait_file $P/transition 0 3000 >/dev/null
    echo "lp-e2e: s18 mark B" > /dev/kmsg
    if echo 0 > $FE 2>/dev/null; then
        out=$(insmod $M/lp_late.ko 2>&1) && l_ok=1 || l_ok=0
        echo 1 > $FE
        log=$(since_mark "lp-e2e: s18 mark B")
        [ $l_ok = 0 ] && ! grep -q '^lp_late ' /proc/modules && case "$out" in *busy*) true ;; *) false ;; esac \
            && echo "$log" | grep -q "livepatch: failed to register ftrace handler for function 'lp_late_value' (-16)" \
            && echo "$log" | grep -q "refusing to load module 'lp_late'" \
            && pass "s18: a patch without hooks registers no ftrace ops (ftrace_enabled=0 accepted); its module refused at the hook ($out)" \
            || { failed "s18: insmod lp_late.ko with ftrace_enabled=0: ok=$l_ok '$out' $(echo "$log" | grep 'livepatch:' | tr '\n' ';')"; rmmod lp_late 2>/dev/null; }
    else
        echo 1 > $FE
        failed "s18: ftrace_enabled=0 refused while the only patch has no hook"
    fi
    # C: the last hook goes with its module while the patch stays enabled: so do the ops.
    insmod $M/lp_late.ko; late_value; v_on=$V
    echo 0 > $FE 2>/dev/null && { echo 1 > $FE; busy_on=0; } || busy_on=1
    rmmod lp_late
    echo 0 > $FE 2>/dev/null && { echo 1 > $FE; busy_off=0; } || busy_off=1
    val $P/enabled; e_after=$V
    echo 0 > $P/enabled; wait_file $P/transition 0 3000 >/dev/null
    [ "$v_on" = 2 ] && [ $busy_on = 1 ] && [ $busy_off = 0 ] && [ "$e_after" = 1 ] \
        && pass "s18: ftrace_enabled=0 refused while lp_late is patched, accepted once its module (the last hook) is gone, patch still enabled" \
        || failed "s18: lp_late read '$v_on', sysctl refused with hook $busy_on, without $busy_off, enabled '$e_after'"
    # D: a task forked while tracking is off (no patch registered) is tracked from the first
    # hook: it switches while the transition is held by the sleeper, and reads old then new.
    rm -f /tmp/s18.go /tmp/s18.stop /tmp/s18.vals
    ( while [ ! -e /tmp/s18.go ]; do usleep 2000; done
      last=
      while [ ! -e /tmp/s18.stop ]; do
          read l < /proc/lp_target; l=${l#*read=}; l=${l%% *}
          [ "$l" = "$last" ] || { echo "$l"; last=$l; }
      done ) > /tmp/s18.vals &
    C=$!
    echo hold > /proc/lp_target_ctl
    wait_field sleeping 1 500 || info "s18: sleeper did not enter lp_target_sleep"
    echo 1 > $LRS/lp_target/enabled
    : > /tmp/s18.go
    tick; _s=$NOW; st=
    while :; do
        st=$(sed -n "s/^$C //p" /proc/livepatch_rs_patch_state)
        tick; [ "$st" = 1 ] || [ $((NOW - _s)) -ge 1000 ] && break
        usleep 5000
    done
    val $LRS/lp_target/transition; held=$V
    echo release > /proc/lp_target_ctl
    wait_file $LRS/lp_target/transition 0 1000 >/dev/null
    : > /tmp/s18.stop; wait $C
    vals=$(tr '\n' ' ' < /tmp/s18.vals)
    echo 0 > $LRS/lp_target/enabled; wait_file $LRS/lp_target/transition 0 1000 >/dev/null
    [ "$st" = 1 ] && [ "$held" = 1 ] && case "$vals" in "2 "|"1 2 ") true ;; *) false ;; esac \
        && pass "s18: a task forked while tracking was off switched during the held transition (patch_state 1) and read: $vals" \
        || failed "s18: task forked while tracking was off: patch_state '$st' (transition $held), read '$vals'"
    # E: forks whose record cannot be allocated (GFP_ATOMIC; injected here) during a transition,
    # by a parent that has switched, once a walk of the transition has ended: each child runs
    # its parent's universe, the new one, from its first call. It must not run the start
    # universe: such a child forked after the walk that precedes completion would be switched by
    # the completion whatever its stack. 20 children, each reading /proc/lp_target at once (a
    # later pass gives it a record: before that it runs the untracked universe).
    F=/sys/module/livepatch_rs/parameters/fail_task_records
    rm -f /tmp/s18e.vals
    echo hold > /proc/lp_target_ctl
    wait_field sleeping 1 500 || info "s18: sleeper did not enter lp_target_sleep"
    echo 1 > $LRS/lp_target/enabled
    # The shell switches at its return to user mode; a pass has ended once only the sleeper stalls.
    i=0; while { [ "$(sed -n "s/^$$ //p" /proc/livepatch_rs_patch_state)" != 1 ] || [ "$(grep -c . $LRS/lp_target/stalls)" != 1 ]; } && [ $i -lt 500 ]; do usleep 10000; i=$((i+1)); done
    sh_st=$(sed -n "s/^$$ //p" /proc/livepatch_rs_patch_state)
    injected=0; i=0
    while [ $i -lt 20 ]; do
        echo 1 > $F
        ( read l < /proc/lp_target; l=${l#read=}; echo "${l%% *}" >> /tmp/s18e.vals ) &
        wait $!
        val $F; [ "$V" = 0 ] && injected=$((injected + 1))
        i=$((i + 1))
    done
    val $LRS/lp_target/transition; held=$V
    echo release > /proc/lp_target_ctl
    wait_file $LRS/lp_target/transition 0 1000 >/dev/null
    echo 0 > $LRS/lp_target/enabled; wait_file $LRS/lp_target/transition 0 1000 >/dev/null
    new=$(grep -c '^2$' /tmp/s18e.vals); old=$(grep -c '^1$' /tmp/s18e.vals)
    [ "$sh_st" = 1 ] && [ $injected = 20 ] && [ "$held" = 1 ] && [ "$new" = 20 ] \
        && pass "s18: 20 children whose record allocation failed (injected), forked by a switched parent during the held transition, all read the new code" \
        || failed "s18: children without a record: parent patch_state '$sh_st', $injected of 20 allocations failed, transition '$held', $new read the new code, $old the old"
    # F: the pass that would give such a child its record cannot allocate either (injected).
    # The child starts in the new universe (a pass has ended); the enable is then reversed, so
    # the child must be checked before the reversal may complete: the reversal waits, its stall
    # report names the forks without a record, the engine answers meanwhile and logs the
    # failure once; the reversal completes once allocations work again.
    echo hold > /proc/lp_target_ctl
    wait_field sleeping 1 500 || info "s18: sleeper did not enter lp_target_sleep"
    echo 1 > $LRS/lp_target/enabled
    i=0; while { [ "$(sed -n "s/^$$ //p" /proc/livepatch_rs_patch_state)" != 1 ] || [ "$(grep -c . $LRS/lp_target/stalls)" != 1 ]; } && [ $i -lt 500 ]; do usleep 10000; i=$((i+1)); done
    echo "lp-e2e: s18 mark F" > /dev/kmsg
    rm -f /tmp/s18f.stalls
    echo 100000 > $F
    ( read l < /proc/lp_target ) &
    wait $!
    echo 0 > $LRS/lp_target/enabled
    usleep 1000000
    # A reader of the stall report, which takes the engine's lock: it must answer.
    ( cat $LRS/lp_target/stalls > /tmp/s18f.part; mv /tmp/s18f.part /tmp/s18f.stalls ) &
    R=$!
    i=0; while [ ! -e /tmp/s18f.stalls ] && [ $i -lt 300 ]; do usleep 10000; i=$((i+1)); done
    [ -e /tmp/s18f.stalls ] && answered=1 || answered=0
    stalls=$(tr '\n' ';' < /tmp/s18f.stalls 2>/dev/null)
    val $LRS/lp_target/transition; waiting=$V
    echo 0 > $F
    wait $R
    nmsg=$(since_mark "lp-e2e: s18 mark F" | grep -c "cannot allocate task records")
    wait_file $LRS/lp_target/transition 0 1000 >/dev/null && done_f=1 || done_f=0
    val $LRS/lp_target/enabled; en=$V
    echo release > /proc/lp_target_ctl
    [ $answered = 1 ] && [ "$waiting" = 1 ] && [ $done_f = 1 ] && [ "$en" = 0 ] && [ "$nmsg" = 1 ] \
        && case "$stalls" in *"task -1 (untracked) "*": running"*) true ;; *) false ;; esac \
        && pass "s18: no record can be allocated for a fork (injected), enable reversed: the engine answers, the reversal waits on '$stalls' (logged once), completes once records can be allocated" \
        || failed "s18: allocations failing: stall report answered $answered ('$stalls'), transition '$waiting', completed $done_f, enabled '$en', logged $nmsg times"
}

# --- scenario 19: CPU hotplug during transitions ------------------------------------------------
# Every possible CPU's idle task is a task of the transition, as in the kernel's
# klp_try_complete_transition(): an offline CPU's idle task never returns into its stack (a CPU
# coming back starts on a fresh one), so it is switched at once, under the hotplug lock; a CPU
# brought online during a transition runs an idle task that was tracked from the start.
scenario_hotplug() {
    P=$LRS/lp_target
    C1=/sys/devices/system/cpu/cpu1/online
    [ -w $C1 ] || { failed "s19: cpu1 cannot be taken offline (no $C1)"; return; }
    # A: cpu1's idle task switches during an enable held by the sleeper, then cpu1 goes offline
    # and the enable is reversed: the reversal needs that idle task switched back.
    echo hold > /proc/lp_target_ctl
    wait_field sleeping 1 500 || { failed "s19: sleeper did not enter lp_target_sleep"; return; }
    echo 1 > $P/enabled || { failed "s19: enable failed"; return; }
    wait_field read 2 1000 || { failed "s19: patch did not take effect"; return; }
    i=0; while grep -q swapper $P/stalls && [ $i -lt 500 ]; do usleep 10000; i=$((i+1)); done
    stalls=$(tr '\n' ';' < $P/stalls)
    echo 0 > $C1 || { failed "s19: taking cpu1 offline failed"; return; }
    info "s19: cpu1 offline ($(cat /sys/devices/system/cpu/online) online) during the held enable; stalls before: $stalls"
    echo 0 > $P/enabled || { failed "s19: reverse failed"; return; }
    if wait_file $P/transition 0 1000 >/dev/null; then
        pass "s19: a reversal with cpu1 offline completes (its idle task switched back at once)"
    else
        failed "s19: the reversal with cpu1 offline did not complete: $(tr '\n' ';' < $P/stalls)"
        echo 1 > $P/force
    fi
    echo release > /proc/lp_target_ctl
    wait_field sleeping 0 500
    echo 1 > $C1 || { failed "s19: bringing cpu1 back failed"; return; }
    # B: cpu1 offline when tracking starts (no hook is installed now), online during the enable.
    echo 0 > $C1 || { failed "s19: taking cpu1 offline failed"; return; }
    echo hold > /proc/lp_target_ctl
    wait_field sleeping 1 500 || { failed "s19: sleeper did not enter lp_target_sleep"; return; }
    echo 1 > $P/enabled || { failed "s19: enable failed"; return; }
    wait_field read 2 1000 || { failed "s19: patch did not take effect"; return; }
    echo 1 > $C1 || { failed "s19: bringing cpu1 online failed"; return; }
    idle=$(sed -n 's/^idle_task_records //p' $P/stats)
    [ "$idle" = "2 of 2 possible CPUs" ] \
        && pass "s19: cpu1 offline when tracking started, online during the enable: idle task records $idle" \
        || failed "s19: idle task records '$idle' after cpu1 came online during the enable"
    echo release > /proc/lp_target_ctl
    wait_file $P/transition 0 1000 >/dev/null && echo 0 > $P/enabled && wait_file $P/transition 0 1000 >/dev/null \
        && wait_field read 1 500 \
        && pass "s19: that enable completed and its disable too, cpu1 online ($(cat /sys/devices/system/cpu/online))" \
        || failed "s19: enable or disable after cpu1 came online did not complete: $(tr '\n' ';' < $P/stalls)"
}

# --- scenario 16: the kernel's own livepatch selftests ------------------------------------------
# tools/testing/selftests/livepatch of v6.12: its scripts (only the sysfs root adapted) and its
# test modules (built against include/livepatch_rs.h), run with bash, GNU tools and kmod. Each
# script stops at its first failing case. One "SELFTEST <script> | <case> | <result>" line per
# case run (the README's table comes from them); a PASS per script whose cases all pass.
scenario_selftests() {
    cd /selftests || { failed "s16: no /selftests"; return; }
    for t in test-livepatch.sh test-callbacks.sh test-shadow-vars.sh test-state.sh test-ftrace.sh \
             test-sysfs.sh test-syscall.sh; do
        PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/bash ./$t > /tmp/$t.out 2>&1
        rc=$?
        sed -n 's/^TEST: \(.*\) \.\.\. \(.*\)$/\1|\2/p' /tmp/$t.out | while IFS='|' read -r name res; do
            say "SELFTEST $t | $name | $res"
        done
        n=$(grep -c '^TEST: .* \.\.\. ok$' /tmp/$t.out)
        if [ $rc = 0 ] && [ "$n" -ge 1 ]; then
            pass "s16: $t: all $n cases ok"
        else
            failed "s16: $t: exit $rc after $n cases ok"
        fi
        [ $rc = 0 ] || sed -n '/not ok/,$p' /tmp/$t.out | head -40 | while read -r l; do info "s16: $t: $l"; done
        # A failing case leaves its modules behind: remove them before the next script.
        for m in $(cut -d' ' -f1 /proc/modules | grep '^test_klp'); do
            [ -d $LRM/$m ] && { echo 0 > $LRM/$m/enabled; wait_gone $LRM/$m 3000; }
        done
        for m in $(cut -d' ' -f1 /proc/modules | grep '^test_klp'); do rmmod $m 2>/dev/null; done
    done
    cd /
}

# lp.only=<scenario> on the kernel command line runs one scenario (development aid).
ONLY=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^lp.only=//p')
case "$ONLY" in
    taint)
        expect 2
        insmod $M/livepatch_rs.ko && pass "livepatch_rs.ko loaded" || failed "insmod livepatch_rs.ko"
        info "taint before: $(cat /proc/sys/kernel/tainted)"
        echo 1 > $LRS/cmdline/enabled; wait_file $LRS/cmdline/transition 0 3000 >/dev/null
        tainted_livepatch && pass "taint: TAINT_LIVEPATCH set ($V)" || failed "taint: not set ($V)"
        echo 0 > $LRS/cmdline/enabled; wait_file $LRS/cmdline/transition 0 3000 >/dev/null
        say "EXPECT $((EXPECT + 1))"
        finish ;;
    stress|threads|storm|dist|late|modules|rust|sysfs|selftests|tracking|hotplug)
        expect 1
        insmod $M/livepatch_rs.ko && pass "livepatch_rs.ko loaded" || failed "insmod livepatch_rs.ko"
        case "$ONLY" in
            stress) expect 3; scenario_stress ;;
            threads) expect 2; scenario_threads ;;
            storm) expect 1; scenario_fork_storm ;;
            dist) expect 2; scenario_distributions ;;
            late) expect 5; scenario_late ;;
            modules) expect 7; scenario_patch_modules ;;
            rust) expect 4; scenario_rust_patch ;;
            sysfs) expect 4; scenario_sysfs ;;
            selftests) expect 7; scenario_selftests ;;
            tracking) expect 6; scenario_tracking ;;
            hotplug) expect 3; scenario_hotplug ;;
        esac
        say "EXPECT $((EXPECT + 1))"
        finish ;;
esac
# lp.quick: everything except the long stress and distribution runs (multi-threaded TCG, where
# a stale translation of just-re-patched code oopses under such load: see README).
QUICK=$(tr ' ' '\n' < /proc/cmdline | grep -c '^lp.quick$')

expect 1   # target: original output
if insmod $M/livepatch_rs.ko; then
    pass "livepatch_rs.ko loaded"
    expect 1
    expect 7; scenario_target
    expect 5; scenario_vmlinux
    expect 2; scenario_reverse
    expect 1; scenario_user_sleeper
    expect 4; scenario_stack_replace
    expect 2; scenario_threads
    expect 1; scenario_fork_storm
    expect 5; scenario_late
    expect 7; scenario_patch_modules
    expect 4; scenario_rust_patch
    expect 4; scenario_sysfs
    expect 6; scenario_tracking
    expect 3; scenario_hotplug
    if [ "$QUICK" = 0 ]; then
        expect 7; scenario_selftests
        expect 3; scenario_stress
        expect 2; scenario_distributions
    fi
    rmmod livepatch_rs && pass "livepatch_rs unloaded cleanly" || failed "rmmod livepatch_rs"
    expect 1
else
    failed "insmod livepatch_rs.ko"
fi
expect 2; scenario_kernel_sample
kill $LOADPIDS 2>/dev/null
LOADPIDS=""
rmmod lp_target && pass "lp_target unloaded" || failed "rmmod lp_target"
expect 1
expect 2; scenario_force
say "EXPECT $EXPECT"
finish
