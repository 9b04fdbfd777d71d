//! The machine is adversarial enough that a wrong backend fails: every unsound backend
//! variant is caught by the oracle within 10⁵ events, and the sound backend passes the same
//! runs with 0 violations.

use livepatch_core::Policy;
use livepatch_mock::backend::{BackendConfig, PerCpuScope, RedirectCheck, TaskWorkMode};
use livepatch_mock::oracle::Invariant;
use livepatch_mock::run::{run, RunResult};
use livepatch_mock::scenario::{self, Scenario};

const BUDGET: u64 = 100_000;

fn build(name: &str, seed: u64) -> Scenario {
    scenario::find(name).expect("scenario exists").build_with(None, None, Some(seed)).expect("scenario builds")
}

fn policy(name: &str) -> Policy {
    livepatch_mock::model(name).expect("policy exists")
}

fn with(mut sc: Scenario, backend: BackendConfig) -> Scenario {
    sc.machine.backend = backend;
    sc
}

/// The run is caught, by `invariant`, within the event budget.
fn caught(r: &RunResult, invariant: Invariant) {
    let v = r.violation.as_ref().unwrap_or_else(|| panic!("not caught in {} events", r.events));
    assert_eq!(v.invariant, invariant, "{v}");
    assert!(v.event_index <= BUDGET, "caught only at event {}: {v}", v.event_index);
}

fn clean(r: &RunResult) {
    assert_eq!(r.violations, 0, "{:?}", r.violation);
    assert!(r.converged, "{} did not converge: {:?}", r.scenario, r.transitions.last());
}

#[test]
fn a_per_cpu_pass_that_switches_a_task_inside_its_handler_is_caught() {
    // The module's bug: from the IPI, the interrupted current task's walk found only the
    // original's fentry frame and the handler's (neither is away during a disable), so the
    // task was switched after its handler had decided on its old word — and it jumped into
    // the variant of the universe it just left.
    // A pass as soon as the last one is done (adversarial cadence: at one per millisecond,
    // 10⁵ events of this dense machine hold about one pass).
    let naive = BackendConfig { redirect_check: RedirectCheck::Naive, ..BackendConfig::default() };
    let fast = Policy { retry_delay_ns: 1_000, ..policy("improved-no-handler-entry") };
    for seed in 1..=8 {
        let r = run(&with(build("ipi-in-handler", seed), naive), fast);
        caught(&r, Invariant::I1);
        let v = r.violation.as_ref().expect("caught");
        assert!(v.message.contains("spin_step"), "{v}");
        assert!(r.machine.switched_after_decision >= 1, "the pass switched a task after its handler read the word");
    }
}

#[test]
fn the_sound_per_cpu_pass_converges_cpu_bound_kthreads_without_the_handler_entry_switch() {
    // The same runs the naive walk fails, back-to-back passes.
    let fast = Policy { retry_delay_ns: 1_000, ..policy("improved-no-handler-entry") };
    for seed in 1..=8 {
        let r = run(&build("ipi-in-handler", seed), fast);
        clean(&r);
        assert_eq!(r.switches["handler-entry"], 0);
        assert!(r.switches["per-cpu"] > 0, "{:?}", r.switches);
        assert!(r.machine.interrupted_handlers > 0, "the IPI never landed in a handler");
        assert_eq!(r.machine.switched_in_handler, 0);
    }
    // At the policy's own cadence, on the 2014 scenario.
    let r = run(&build("cpu-bound-kthread", 1), policy("improved-no-handler-entry"));
    clean(&r);
    assert!(r.switches["per-cpu"] > 0, "{:?}", r.switches);
}

#[test]
fn a_sweep_that_does_not_pin_the_task_is_caught() {
    // Vojtech's race: the task is checked asleep, wakes and calls the old function before the
    // switch is written. On the scenario's own schedule (no forced preemption): the engine's
    // kworker is preempted inside a check as often as a tick or a wake-up on its CPU lands
    // there (a preemptible kernel's wake-up preemption), and 256 tasks waking every few
    // hundred microseconds make that about one check in twenty.
    let unpinned = BackendConfig { pin: false, ..BackendConfig::default() };
    for seed in 1..=12 {
        let sc = with(build("wake-race", seed), unpinned);
        assert_eq!(sc.machine.engine_preempt_one_in, 0, "the natural rate");
        let r = run(&sc, policy("linux-tuned"));
        caught(&r, Invariant::I2);
        assert!(r.machine.late_switches > 0);
        // Pinned (`task_call_func`), the same schedule finds nothing.
        clean(&run(&build("wake-race", seed), policy("linux-tuned")));
    }
    // The improved policy's handler-entry switch happens to close this race here: a task's
    // first call of the patched function after the check switches it (its stack is clean),
    // so the late write's compare-and-swap fails. Without that switch it is caught again.
    let r = run(&with(build("wake-race", 1), unpinned), policy("improved"));
    clean(&r);
    assert!(r.machine.late_switches == 0 || r.switches["handler-entry"] > 0);
    caught(&run(&with(build("wake-race", 1), unpinned), policy("improved-no-handler-entry")), Invariant::I2);
}

#[test]
fn a_per_cpu_pass_over_pinned_queued_tasks_is_sound() {
    let pinned = BackendConfig { per_cpu: PerCpuScope::Pinned, ..BackendConfig::default() };
    let fast = Policy { retry_delay_ns: 1_000, ..policy("improved-no-handler-entry") };
    for name in ["wake-race", "ipi-in-handler"] {
        let mut sc = with(build(name, 2), pinned);
        sc.machine.engine_preempt_one_in = 4;
        clean(&run(&sc, fast));
    }
}

#[test]
fn blind_task_work_in_kernel_context_is_caught_and_the_self_check_is_not() {
    let blind = BackendConfig { task_work: TaskWorkMode::Blind, ..BackendConfig::default() };
    let r = run(&with(build("io-uring", 1), blind), Policy::IMPROVED);
    caught(&r, Invariant::I2);
    assert!(r.violation.as_ref().is_some_and(|v| v.message.contains("task-work")), "{:?}", r.violation);
    for seed in 1..=3 {
        let r = run(&build("io-uring", seed), Policy::IMPROVED);
        clean(&r);
    }
}
