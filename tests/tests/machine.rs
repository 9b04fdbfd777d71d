//! The machine itself: determinism, the oracle catching a broken backend, the middleware's
//! faults, CPU hot-unplug and fork.

use livepatch_core::{Policy, TaskId};
use livepatch_mock::machine::task::HandlerPhase;
use livepatch_mock::middleware::{SignalFaults, WalkFaults};
use livepatch_mock::oracle::Invariant;
use livepatch_mock::run::{run, run_stepped, run_with, RunOptions};
use livepatch_mock::scenario::{self, Action, Step, Wait};

fn build(name: &str, tasks: Option<usize>, seed: u64) -> scenario::Scenario {
    scenario::find(name).expect("scenario exists").build_with(tasks, None, Some(seed)).expect("scenario builds")
}

#[test]
fn same_seed_same_run_different_seed_different_run() {
    let sc = build("default", Some(300), 11);
    let a = run(&sc, Policy::IMPROVED);
    let b = run(&sc, Policy::IMPROVED);
    assert_eq!(a.events, b.events);
    assert_eq!(a.timeline, b.timeline);
    assert_eq!(a.transitions, b.transitions);
    assert_eq!(a.machine.switches, b.machine.switches);
    assert_eq!(a.walks, b.walks);
    let c = run(&build("default", Some(300), 12), Policy::IMPROVED);
    assert_ne!((a.events, &a.timeline), (c.events, &c.timeline));
    assert_eq!(a.digest(), b.digest());
    assert_ne!(a.digest(), c.digest());
}

#[test]
fn improved_is_ten_times_faster_than_linux_6_12_on_the_default_mix_and_pays_for_it() {
    // Against linux-6.12 (the cadence does it: linux-tuned is as fast — the README's table);
    // 0 invariant violations; every model's work is charged.
    let sc = build("default", Some(600), 1);
    let linux = run(&sc, Policy::LINUX_6_12);
    let improved = run(&sc, Policy::IMPROVED);
    assert!(linux.converged && improved.converged);
    assert_eq!(linux.violations + improved.violations, 0);
    let (lt, it) = (linux.time_to_converge_ns.unwrap(), improved.time_to_converge_ns.unwrap());
    assert!(it * 10 <= lt, "improved {it} ns vs linux {lt} ns");
    // The per-CPU pass checks only each CPU's interrupted current task (the sweep checks the
    // others): it switches some, fewer than the sweep.
    assert!(improved.switches["per-cpu"] > 0);
    assert!(improved.switches["per-cpu"] < improved.switches["sweep"]);
    assert_eq!(linux.switches["handler-entry"] + linux.switches["per-cpu"], 0);
    // Tasks in the old universe only ever decrease to zero at the end of the curve.
    assert_eq!(improved.timeline.last().map(|p| p.1), Some(0));
    // No free work: the engine's kworker, the IPIs on the interrupted CPUs, the signals.
    let tuned = run(&sc, livepatch_mock::LINUX_TUNED);
    assert!(tuned.converged && tuned.violations == 0);
    for r in [&linux, &tuned, &improved] {
        let c = &r.costs;
        assert!(c.engine_cpu_ns > 0 && c.transition_cpu_ns >= c.engine_cpu_ns + c.ipi_cpu_ns, "{}: {c:?}", r.model);
    }
    assert!(improved.costs.ipi_cpu_ns > 0 && improved.costs.ipis_per_task > 0.0);
    assert_eq!(tuned.costs.ipi_cpu_ns, 0);
    // The engine's cost follows its passes (with interrupted syscalls restarted at once,
    // linux-tuned needs fewer passes than linux-6.12's 17).
    let per_pass = |r: &livepatch_mock::RunResult| r.costs.engine_cpu_ns / u64::from(r.passes.max(1));
    assert_eq!(tuned.passes < linux.passes, tuned.costs.engine_cpu_ns < linux.costs.engine_cpu_ns);
    assert!(per_pass(&tuned) * 2 > per_pass(&linux) && per_pass(&linux) * 2 > per_pass(&tuned));
    assert!(improved.costs.kicks_per_kicked <= 2.0, "{:?}", improved.costs);
}

#[test]
fn the_oracle_catches_a_walker_that_hides_frames() {
    // A walker that silently stops after the innermost frame reports the busy worker (asleep
    // in schedule() called from the patched function) as clean: the sweep switches it with
    // the old function on its stack, which I2 forbids.
    let mut sc = build("busy-target", None, 1);
    sc.machine.walk_faults = WalkFaults { silently_truncate_at: Some(1), ..WalkFaults::default() };
    let r = run(&sc, Policy::LINUX_6_12);
    let v = r.violation.expect("the oracle notices");
    assert_eq!(v.invariant, Invariant::I2, "{v}");
    assert!(v.message.contains("busymod_work_func"), "{v}");
    assert!(v.stack.iter().any(|f| f.starts_with("busymod_work_func@")), "{v}");
    assert!(!r.converged);
    assert!(v.event_index > 0 && v.event_index <= r.events);
    // The violation stops the run: no later event is handled, nothing else is found.
    assert_eq!((r.violations, r.events), (1, v.event_index), "{v}");
}

#[test]
fn the_oracle_catches_a_hook_that_ignores_the_redirect() {
    let mut sc = build("basic", None, 1);
    let getpid = sc.code.by_name("sys_getpid").expect("exists");
    sc.machine.broken_hook_on = Some(getpid);
    let r = run(&sc, Policy::IMPROVED);
    let v = r.violation.expect("the oracle notices");
    assert_eq!(v.invariant, Invariant::I1, "{v}");
    assert!(v.message.contains("call of sys_getpid ran sys_getpid"), "{v}");
}

#[test]
fn a_failing_hook_installation_cancels_the_enable() {
    let mut sc = build("basic", None, 1);
    sc.machine.fail_hook_on = sc.code.by_name("sys_getpid");
    let r = run(&sc, Policy::LINUX_6_12);
    assert_eq!(r.violations, 0, "{:?}", r.violation);
    assert!(r.transitions.is_empty());
    let e: Vec<Option<&str>> = r.outcomes.iter().map(|o| o.error.as_deref()).collect();
    assert_eq!(e[0], Some("backend: hook install/remove failed"));
    assert_eq!(e[1], Some("patch 1 is not enabled"));
}

/// The module goes while the enable of a patch of it waits for the module's kthread, asleep
/// for good in the patched `mod_stuck`, and the hook on `mod_stuck` cannot be removed
/// (`fail_unhook_on`): the hook and the core's slot stay, and the transition completes, as
/// the kernel's does (`klp_check_stack` checks patched objects only; `klp_module_going`
/// unpatched the module). Before `4a093a5` the core kept the stale slot marked as code being
/// switched away from and waited for the kthread until the time limit.
#[test]
fn a_going_module_whose_hook_stays_holds_no_transition() {
    for policy in [Policy::LINUX_6_12, Policy::IMPROVED] {
        let sc = build("going-module-unhook-fails", None, 1);
        let stuck = sc.code.by_name("mod_stuck").expect("exists");
        let entry = sc.code.get(stuck).range.start();
        let r = run_stepped(&sc, policy, RunOptions::default(), &mut |_| {}, |sim| {
            while sim.step() {}
            let m = sim.machine();
            let hook = m.hook_on(stuck);
            assert!(hook.is_some(), "the hook on mod_stuck stays");
            assert_eq!(sim.live().slot_at(entry).map(|s| s.0), hook, "and so does the core's slot");
            let kthread = m.tasks().last().expect("the module's kthread");
            assert!(!kthread.is_dead() && kthread.stack().iter().any(|f| f.func == stuck), "it sleeps in mod_stuck");
        });
        assert_eq!(r.violations, 0, "{:?}", r.violation);
        // Refused when the module went (and again each time the core retried it).
        assert!(r.machine.failed_unhooks >= 1, "the removal of mod_stuck's hook was refused");
        let errors: Vec<_> = r.outcomes.iter().filter_map(|o| o.error.as_deref()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(r.converged, "{}: {:?}", r.model, r.transitions);
        let [t] = &r.transitions[..] else { panic!("one transition: {:?}", r.transitions) };
        assert_eq!(t.outcome, "complete");
        // It waited for the kthread until the module went (30 ms).
        assert!(t.end_ns.is_some_and(|e| e >= 30_000_000), "{t:?}");
    }
    // Without the fault, the hook goes with the module and nothing is refused.
    let mut sc = build("going-module-unhook-fails", None, 1);
    sc.machine.fail_unhook_on = None;
    let stuck = sc.code.by_name("mod_stuck").expect("exists");
    let r = run_stepped(&sc, Policy::IMPROVED, RunOptions::default(), &mut |_| {}, |sim| {
        while sim.step() {}
        assert_eq!(sim.machine().hook_on(stuck), None);
    });
    assert!(r.converged && r.violations == 0, "{:?}", r.violation);
    assert_eq!(r.machine.failed_unhooks, 0);
}

#[test]
fn unreliable_and_deep_stacks_block_only_the_sweep() {
    let mut sc = build("fake-signal", Some(8), 2);
    let first = sc.machine.cpus;
    sc.machine.walk_faults = WalkFaults {
        unreliable_tasks: vec![TaskId(first)],
        deep_tasks: vec![TaskId(first + 1)],
        extra_depth: 1000,
        ..WalkFaults::default()
    };
    let r = run(&sc, Policy::IMPROVED);
    assert!(r.converged, "{:?}", r.violation);
    let reasons: Vec<&String> = r.transitions.iter().flat_map(|t| t.straggler_reasons.keys()).collect();
    assert!(reasons.iter().any(|k| k.as_str() == "unreliable" || k.as_str() == "too-deep"), "{reasons:?}");
}

#[test]
fn lost_and_stubborn_signals_delay_but_do_not_break() {
    let mut sc = build("fake-signal", Some(10), 3);
    let stubborn = TaskId(sc.machine.cpus);
    sc.machine.signal_faults = SignalFaults { drop_one_in: 2, delay_ns: 3_000_000, stubborn: vec![stubborn] };
    let r = run(&sc, Policy::IMPROVED);
    assert!(r.converged, "{:?}", r.violation);
    assert!(r.signals_lost > 0);
    // The stubborn task waits out its 20-40 s poll.
    assert!(r.time_to_converge_ns.unwrap() > 10_000_000_000);
    let clean = run(&build("fake-signal", Some(10), 3), Policy::IMPROVED);
    assert!(clean.time_to_converge_ns.unwrap() < r.time_to_converge_ns.unwrap());
}

#[test]
fn cpu_offline_and_fork_during_a_transition() {
    let mut sc = build("syscall", Some(12), 4);
    let first = sc.machine.cpus;
    sc.script = vec![
        Step { wait: Wait::For(10_000_000), action: Action::Enable(0) },
        Step { wait: Wait::For(100_000), action: Action::CpuOffline(1) },
        Step { wait: Wait::For(100_000), action: Action::Fork(first) },
        Step { wait: Wait::For(100_000), action: Action::Kill(first + 1) },
        Step { wait: Wait::Settled(1_000_000), action: Action::CpuOnline(1) },
        Step { wait: Wait::For(1_000_000), action: Action::CpuOffline(99) },
        Step { wait: Wait::For(1_000_000), action: Action::Fork(0) },
        Step { wait: Wait::Settled(1_000_000), action: Action::Nop },
    ];
    for p in [Policy::LINUX_6_12, Policy::IMPROVED] {
        let r = run(&sc, p);
        assert!(r.converged, "{:?}", r.violation);
        assert_eq!(r.machine.forks, 1);
        assert!(r.machine.exits >= 1);
        let errors: Vec<_> = r.outcomes.iter().map(|o| o.error.is_some()).collect();
        assert_eq!(errors, [false, false, false, false, false, true, true, false], "{:?}", r.outcomes);
    }
}

/// A force lands while a task is inside the redirect handler, past its decision: it runs the
/// original its handler chose for its universe before the force (as the kernel's
/// `klp_ftrace_handler` does past its read of `patch_state`). That is what a force does:
/// counted with the stale frames a force leaves, not failed.
#[test]
fn a_force_lands_on_a_hooked_call_already_decided_without_a_violation() {
    // A kthread alone on its CPU calls the patched function in a tight loop: Linux 6.12's
    // model never switches it, so its handler keeps choosing the original.
    let mut sc = build("cpu-bound-kthread", None, 3);
    sc.script = vec![
        Step { wait: Wait::For(1_000_000), action: Action::Enable(0) },
        Step { wait: Wait::Settled(1_000_000), action: Action::Nop },
    ];
    let mut forced_mid_handler = false;
    let r = run_stepped(&sc, Policy::LINUX_6_12, RunOptions::default(), &mut |_| {}, |sim| {
        sim.run_until(1_000_000);
        // The first moment a task's handler has chosen the original of a function being patched.
        while sim.step() {
            let decided_original = sim.machine().tasks().iter().any(|t| {
                t.handler().is_some_and(|h| {
                    h.phase == HandlerPhase::Decided(h.func) && sim.machine().hook_on(h.func).is_some()
                })
            });
            if decided_original && sim.oracle().target().is_some() {
                forced_mid_handler = sim.inject(Action::Force).is_ok();
                break;
            }
        }
        while sim.step() {}
    });
    assert!(forced_mid_handler, "the force was injected while a handler had decided");
    assert_eq!(r.violations, 0, "{}", r.violation.as_ref().map(ToString::to_string).unwrap_or_default());
    assert!(r.oracle.forced_mixed > 0, "{:?}", r.oracle);
    assert!(r.converged);
}

#[test]
fn busy_and_invalid_operations_are_refused_without_harm() {
    let mut sc = build("busy-target", None, 1);
    sc.script = vec![
        Step { wait: Wait::For(10_000_000), action: Action::Enable(0) },
        Step { wait: Wait::For(1_000_000), action: Action::Enable(0) },
        Step { wait: Wait::For(1_000_000), action: Action::Disable(0) },
        Step { wait: Wait::For(1_000_000), action: Action::Enable(7) },
        Step { wait: Wait::For(1_000_000), action: Action::Unload(livepatch_core::ObjectId(9)) },
        Step { wait: Wait::For(1_000_000), action: Action::Reverse },
        Step { wait: Wait::Settled(1_000_000), action: Action::Reverse },
        Step { wait: Wait::For(1_000_000), action: Action::Force },
        Step { wait: Wait::For(1_000_000), action: Action::Nop },
    ];
    let r = run(&sc, Policy::IMPROVED);
    assert!(r.converged && r.violations == 0, "{:?}", r.violation);
    let e: Vec<Option<&str>> = r.outcomes.iter().map(|o| o.error.as_deref()).collect();
    assert_eq!(e[0], None);
    assert_eq!(e[1], Some("another transition is in progress"));
    assert_eq!(e[2], Some("another transition is in progress"));
    assert_eq!(e[3], Some("no patch #7"));
    assert!(e[4].is_some());
    assert_eq!(e[5], None);
    assert_eq!(e[6], Some("no transition is in progress"));
    assert_eq!(e[7], Some("no transition is in progress"));
}

#[test]
fn an_event_budget_stops_a_run_early() {
    let sc = build("default", Some(200), 1);
    let r = run_with(&sc, Policy::LINUX_6_12, RunOptions { max_events: 5_000, timeline: false }, &mut |_| {});
    assert!(r.events <= 5_001);
    assert!(!r.converged);
    assert!(r.timeline.is_empty());
}

#[test]
fn a_run_can_be_stepped_woken_and_driven_from_outside() {
    use livepatch_mock::machine::task::RunState;
    use livepatch_mock::run::run_stepped;
    let sc = build("basic", None, 3);
    // Stepping nothing is the same run.
    let plain = run(&sc, Policy::IMPROVED);
    let stepped = run_stepped(&sc, Policy::IMPROVED, RunOptions::default(), &mut |_| {}, |_| {});
    assert_eq!(plain.digest(), stepped.digest());

    // Drive a run with no script: run 5 ms, wake a sleeper, enable the patch, step until the
    // transition is over.
    let mut sc = build("basic", None, 3);
    sc.script.clear();
    let r = run_stepped(&sc, Policy::IMPROVED, RunOptions::default(), &mut |_| {}, |sim| {
        assert!(sim.run_until(5_000_000));
        assert!(sim.now() >= 5_000_000);
        let sleeper = sim
            .machine()
            .tasks()
            .iter()
            .position(|t| matches!(t.run_state(), RunState::Sleeping(_)))
            .expect("a task sleeps");
        assert!(sim.wake(TaskId(sleeper as u32)));
        assert!(!sim.wake(TaskId(sleeper as u32)), "it runs now");
        sim.inject(Action::Enable(0)).expect("enabled");
        assert!(sim.in_transition());
        while sim.in_transition() && sim.step() {}
        assert!(!sim.in_transition(), "converged while stepped");
        assert!(sim.inject(Action::Enable(7)).is_err(), "a bad operation is a typed outcome");
    });
    assert_eq!(r.violations, 0, "{:?}", r.violation);
    assert_eq!(r.transitions.len(), 1);
    assert!(r.transitions[0].end_ns.is_some());
    assert_eq!(r.outcomes.len(), 2);
}

#[test]
fn a_syscall_a_fake_signal_interrupts_is_restarted_at_once() {
    // The kernel's fake signal has no handler to run: the interrupted poll returns
    // -ERESTART_RESTARTBLOCK, passes exit to user mode (where it switches) and is restarted
    // by the next instruction — no user work in between.
    let sc = build("fake-signal", None, 1);
    let r = run(&sc, Policy::IMPROVED);
    assert!(r.converged && r.violations == 0, "{:?}", r.violation);
    assert!(r.machine.interrupted_syscalls > 0);
    assert_eq!(r.machine.restarted_syscalls, r.machine.interrupted_syscalls, "{:?}", r.machine);
}
