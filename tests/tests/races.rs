//! Races between an engine operation and a transition in progress, reproduced on the machine:
//! a module loading during an atomic replace (`de1b073`), a task's own check preempted while
//! the engine moves on (`5e81f2e`). Each scenario runs the bug's window often enough that the
//! oracle caught the core before the fix; the fixed core passes it with 0 violations.

use livepatch_mock::backend::{BackendConfig, TaskWorkMode};
use livepatch_mock::run::{run, RunResult};
use livepatch_mock::scenario::{self, Scenario};

fn build(name: &str, seed: u64) -> Scenario {
    scenario::find(name).expect("scenario exists").build_with(None, None, Some(seed)).expect("scenario builds")
}

fn clean(r: &RunResult) {
    assert_eq!(r.violations, 0, "{}", r.violation.as_ref().map_or(String::new(), |v| v.to_string()));
    assert!(r.converged, "{} did not converge: {:?}", r.scenario, r.transitions.last());
}

fn linux_tuned() -> livepatch_core::Policy {
    livepatch_mock::model("linux-tuned").expect("policy exists")
}

/// The module loaded during the replace's transition (its load succeeded, the transition
/// was still in progress).
fn loaded_mid_transition(r: &RunResult) {
    let load = r.outcomes.iter().find(|o| o.action.starts_with("Load")).expect("the script loads the module");
    assert_eq!(load.error, None);
    let replace = r.transitions.iter().find(|t| t.patch == "cumulative").expect("the replace ran");
    assert!(replace.start_ns < load.at_ns && replace.end_ns.is_some_and(|e| e > load.at_ns), "{replace:?} {load:?}");
}

/// `de1b073`, replace enable: the nops for the coming module were pushed after the code
/// switched away from was marked, so patch 0's variant below them was never away: the sweep
/// switched kthreads sleeping in it (I2: "switched unpatched->patched at sweep with
/// mod_wait.p0 on the stack").
#[test]
fn a_module_loading_during_a_replace_keeps_tasks_in_the_replaced_variant() {
    for seed in 1..=4 {
        let r = run(&build("late-module-replace", seed), linux_tuned());
        clean(&r);
        loaded_mid_transition(&r);
        // The sweep found a kthread in patch 0's variant below the new nop, and left it.
        let replace = r.transitions.iter().find(|t| t.patch == "cumulative").expect("the replace ran");
        assert!(replace.blocking_functions.contains("mod_wait"), "{replace:?}");
    }
}

/// `de1b073`, reversed replace enable: no nops for the coming module at all, so kthreads still
/// in the replace patch's universe ran patch 0's variant of the module's function, which that
/// universe does not run (I4: "call of mod_wait ran mod_wait.p0 but universe patched runs
/// mod_wait").
#[test]
fn a_module_loading_after_a_reversed_replace_runs_the_replace_universe_in_it() {
    for seed in 1..=4 {
        let r = run(&build("late-module-replace-reversed", seed), linux_tuned());
        clean(&r);
        loaded_mid_transition(&r);
        assert!(r.transitions.iter().any(|t| t.patch == "cumulative" && t.reversed), "{:?}", r.transitions);
    }
}

/// The io_uring waiters with their task-work callback preempted between every two frames of
/// its check and before its switch (the Linux module's callback runs preemptible, outside
/// any section the engine's grace period waits for).
fn preempted(name: &str, seed: u64) -> Scenario {
    let mut sc = build(name, seed);
    sc.machine.backend = BackendConfig { task_work: TaskWorkMode::Preemptible, ..BackendConfig::default() };
    sc
}

/// A run whose checks were preempted, some of them until their word had changed.
fn raced(r: &RunResult) {
    assert!(r.machine.task_work_preemptions > 0, "no check was preempted");
    assert!(r.machine.task_work_raced > 0, "no switch from a changed word was refused");
}

/// `5e81f2e`, across a completion and the next enable: a check made against patch 1's
/// enable (where the original `io_cqring_wait` is not being switched away from) switched,
/// after patch 0's enable started, on the word it read before — bit for bit the new one
/// without a generation (I2: "switched unpatched->patched at task-work with io_cqring_wait
/// (code being switched away from) on the stack").
#[test]
fn a_task_work_check_preempted_across_a_completion_and_the_next_enable_does_not_switch() {
    for policy in [linux_tuned(), livepatch_core::Policy::IMPROVED] {
        for seed in 1..=4 {
            let r = run(&preempted("preempted-task-work", seed), policy);
            clean(&r);
            raced(&r);
        }
    }
}

/// `5e81f2e`, across two reversals: the check looked at the original `io_cqring_wait` while
/// the transition went the other way, and switched after the second reversal (I2, as above).
#[test]
fn a_task_work_check_preempted_across_two_reversals_does_not_switch() {
    for policy in [linux_tuned(), livepatch_core::Policy::IMPROVED] {
        for seed in 1..=4 {
            let r = run(&preempted("preempted-task-work-reversed", seed), policy);
            clean(&r);
            raced(&r);
            assert_eq!(r.transitions.iter().filter(|t| t.reversed).count(), 10, "{:?}", r.outcomes);
        }
    }
}
