//! The 2014 thread's hard cases under every model: who converges, and how the failures look.

use livepatch_core::Policy;
use livepatch_mock::run::StallKind;
use livepatch_mock::run::{run, RunResult};
use livepatch_mock::{scenario, MODELS};

fn run_all(name: &str) -> Vec<RunResult> {
    let def = scenario::find(name).expect("scenario exists");
    let sc = def.build_with(None, None, Some(5)).expect("scenario builds");
    MODELS.iter().map(|(_, p)| run(&sc, *p)).collect()
}

fn by<'r>(rs: &'r [RunResult], model: &str) -> &'r RunResult {
    rs.iter().find(|r| r.model == model).expect("model ran")
}

fn no_violations(rs: &[RunResult]) {
    for r in rs {
        assert_eq!(r.violations, 0, "{}: {:?}", r.model, r.violation);
    }
}

#[test]
fn cpu_bound_kthread() {
    let rs = run_all("cpu-bound-kthread");
    no_violations(&rs);
    // Linux never catches it off the CPU and it never calls cond_resched.
    let linux = by(&rs, "linux-6.12");
    assert!(!linux.converged && linux.timed_out);
    assert!(linux.transitions[0].last_stragglers.iter().any(|s| s.reason == StallKind::Running));
    // The handler-entry switch converts it at its next call of the patched function.
    let improved = by(&rs, "improved");
    assert!(improved.converged);
    assert!(improved.switches["handler-entry"] >= 1);
    assert!(improved.time_to_converge_ns.unwrap() < 100_000_000);
    // Stop-the-world finds it inside the patched function most of the time (85% of its loop):
    // it succeeds only if one of its five stops lands between two calls.
    let stw = by(&rs, "stop-the-world");
    assert!(stw.passes <= Policy::STOP_THE_WORLD.stop_attempts);
    assert_eq!(stw.converged, stw.transitions[0].outcome != "gave-up");
    assert!(stw.max_pause_ns > 0);
    // The call-chain model cannot check a running task either.
    assert!(!by(&rs, "call-chain").converged);
}

#[test]
fn kthread_sleeping_in_the_patched_function() {
    let rs = run_all("sleeping-kthread");
    no_violations(&rs);
    // "None of the so far proposed methods can complete patching if a patched function is in
    // use by a sleeping kthread": woken by a kick, its wait loop re-checks its condition and
    // sleeps again inside the patched function, for the time left of its 60 s wait. While it
    // sleeps there no model switches it.
    for r in rs.iter().filter(|r| r.transitions[0].outcome != "gave-up") {
        let end = r.transitions[0].end_ns.unwrap_or(u64::MAX);
        assert!(end >= 59_000_000_000, "{}: ended at {end} ns", r.model);
    }
    // When the wait ends, Linux's switch points still miss it: it runs to its next call of the
    // patched function and sleeps in it again, in the old universe.
    let linux = by(&rs, "linux-6.12");
    assert!(!linux.converged && linux.timed_out);
    assert!(linux.transitions[0].straggler_reasons.contains_key("on-stack in watchdog_wait"));
    // The handler-entry switch converts it at that call (kGraft, at its loop-top safe point).
    let improved = by(&rs, "improved");
    assert!(improved.converged, "{:?}", improved.transitions[0]);
    assert!(improved.switches["handler-entry"] >= 1, "{:?}", improved.switches);
    assert!(by(&rs, "kgraft").converged);
    // Kicking it on every pass buys nothing (each wake-up re-sleeps) and is not free: once a
    // kick round leaves the same straggler blocked in the same function, the engine backs off
    // to Linux's own cadence (`Policy::KICK_BACKOFF_NS`, 15 s) until something changes. So it
    // gets one kick at the first retry, then one at 15, 30 and 45 s: no more than linux-6.12
    // gives it over the run (5: at 15, 30, 45, 60 and 75 s). (The goal of at most 2 kicks per straggler would need a backoff
    // longer than Linux's 15 s; before the backoff it was woken on every 1 ms pass: 59 454.)
    let backoff_rounds = 60_000_000_000 / Policy::KICK_BACKOFF_NS - 1;
    assert!(improved.costs.max_kicks >= 1, "it is kicked at all: {:?}", improved.costs);
    assert!(
        u64::from(improved.costs.max_kicks) <= 1 + backoff_rounds && improved.costs.max_kicks <= linux.costs.max_kicks,
        "{} kicks per kicked task, {} at most (linux-6.12: {}), {} signals",
        improved.costs.kicks_per_kicked,
        improved.costs.max_kicks,
        linux.costs.max_kicks,
        improved.signals
    );
    // Stop-the-world gives up; the freezer cannot freeze it (not freezable) and gives up
    // after its bound.
    assert_eq!(by(&rs, "stop-the-world").transitions[0].outcome, "gave-up");
    assert_eq!(by(&rs, "freezer").transitions[0].outcome, "gave-up");
}

#[test]
fn patch_on_the_schedule_path() {
    let rs = run_all("schedule-path");
    no_violations(&rs);
    let linux = by(&rs, "linux-6.12");
    assert!(!linux.converged);
    assert!(linux.transitions[0].straggler_reasons.contains_key("on-stack in schedule"), "{:?}", linux.transitions);
    assert!(by(&rs, "improved").converged);
    assert!(by(&rs, "call-chain").converged, "new chains reach the new schedule(), old ones drain");
    assert!(!by(&rs, "stop-the-world").converged);
}

#[test]
fn tasks_that_need_a_fake_signal() {
    let rs = run_all("fake-signal");
    no_violations(&rs);
    let linux = by(&rs, "linux-6.12");
    assert!(linux.converged);
    // Signals go out on the 16th pass, 15 s in.
    let lt = linux.time_to_converge_ns.unwrap();
    assert!((15_000_000_000..17_000_000_000).contains(&lt), "{lt}");
    assert!(linux.signals >= 50);
    let improved = by(&rs, "improved");
    let it = improved.time_to_converge_ns.unwrap();
    assert!(it * 10 <= lt, "improved {it} vs linux {lt}");
    assert!(improved.switches["exit-to-user"] >= 50);
    let kgraft = by(&rs, "kgraft");
    assert!(kgraft.converged && kgraft.time_to_converge_ns.unwrap() < 3_000_000_000);
}

#[test]
fn call_chain_mixes_universes_when_a_prototype_changes() {
    let rs = run_all("prototype-change");
    no_violations(&rs);
    let cc = by(&rs, "call-chain");
    assert!(cc.converged);
    assert!(cc.oracle.mixed_stacks > 0, "I6 is measured, not hidden");
    assert!(cc.oracle.mixed_tasks > 0);
    for model in ["linux-6.12", "improved", "kgraft"] {
        let r = by(&rs, model);
        assert!(r.converged, "{model}");
        assert_eq!(r.oracle.mixed_stacks, 0, "{model}: per-task models never mix");
    }
}

#[test]
fn linux_skips_exiting_tasks_on_a_patched_exit_path() {
    use livepatch_mock::machine::code::{Op, SleepFor, SleepKind};
    let def = scenario::find("exit-path").unwrap();
    // The kernel's window: unhashed only for the short, preemptible tail of do_exit. The race
    // is rare; over these seeds it does not bite (`livepatch-sim --scenario exit-path
    // --seeds 500` measures it).
    for seed in 1..=3 {
        let sc = def.build_with(None, None, Some(seed)).unwrap();
        let linux = run(&sc, Policy::LINUX_6_12);
        assert!(linux.converged && linux.violations == 0, "{:?}", linux.violation);
    }
    // Rare, but it happens (2 seeds in 500 under improved-no-exiting, 2 under linux-tuned):
    // on seed 19 an exiting task, unhashed and preempted in the tail, still holds the replaced
    // variant when the transition completes. Visiting exiting tasks is what prevents it.
    let sc = def.build_with(None, None, Some(19)).unwrap();
    let skipping = run(&sc, livepatch_mock::model("improved-no-exiting").unwrap());
    let v = skipping.violation.as_ref().expect("the race bites on seed 19");
    assert_eq!(v.invariant, livepatch_mock::oracle::Invariant::I3, "{v}");
    assert!(v.message.contains("exiting task"), "{v}");
    let visiting = run(&sc, Policy::IMPROVED);
    assert!(visiting.converged && visiting.violations == 0, "{:?}", visiting.violation);
    // With a long sleep after unhashing (the mock's old exit path), it bites at once: the
    // oracle catches the field report's crash class.
    let mut sc = def.build_with(None, None, Some(1)).unwrap();
    let long_tail = vec![
        Op::Work(5_000, 20_000),
        Op::Work(2_000, 5_000),
        Op::Unhash,
        Op::Sleep(SleepKind::Uninterruptible, SleepFor::Between(1_500_000_000, 4_000_000_000)),
        Op::Work(1_000, 10_000),
        Op::Die,
    ];
    let exits: Vec<_> = sc.code.iter().filter(|(_, f)| f.name.starts_with("do_exit")).map(|(id, _)| id).collect();
    for id in exits {
        sc.code.replace_body(id, long_tail.clone()).unwrap();
    }
    let linux = run(&sc, Policy::LINUX_6_12);
    let v = linux.violation.as_ref().expect("the field report's bug is reproduced");
    assert_eq!(v.invariant, livepatch_mock::oracle::Invariant::I3);
    assert!(v.message.contains("exiting"), "{v}");
    assert!(v.stack.iter().any(|f| f.starts_with("do_exit")), "{v}");
    assert!(!linux.converged);
    let improved = run(&sc, Policy::IMPROVED);
    assert!(improved.converged, "{:?}", improved.violation);
    assert_eq!(improved.violations, 0);
}

#[test]
fn the_freezer_model_and_the_pause_it_costs() {
    // Josh's simple LEAVE_PATCHED_SET + SWITCH_THREAD: switch what is off-CPU and clean,
    // freeze the rest and check them again. The pause each frozen task sees is measured, as
    // is stop-the-world's (which every task sees).
    let sc = scenario::find("default").unwrap().build_with(Some(600), None, Some(1)).unwrap();
    let freezer = run(&sc, Policy::FREEZER);
    let stw = run(&sc, Policy::STOP_THE_WORLD);
    assert!(freezer.converged && freezer.violations == 0, "{:?}", freezer.violation);
    assert!(freezer.costs.frozen_tasks > 0);
    // Every frozen task was thawed when the transition completed: none sits in the
    // refrigerator after it (a task never thawed never runs again).
    assert_eq!(freezer.costs.still_frozen, 0);
    assert!(freezer.costs.freeze_pause.max_ns >= freezer.costs.freeze_pause.p50_ns);
    assert!(freezer.costs.freeze_pause.p50_ns > 0);
    assert_eq!(freezer.costs.stop_pause_ns, 0);
    assert!(stw.costs.stop_pause_ns > 0 && stw.costs.frozen_tasks == 0);
    // It fails where the thread said: a CPU-bound kthread cannot be frozen (retried for
    // ever), and a patch of schedule() finds every frozen task inside it.
    let cpu_bound = run_all("cpu-bound-kthread");
    assert!(!by(&cpu_bound, "freezer").converged);
    let sched = run_all("schedule-path");
    let f = by(&sched, "freezer");
    assert!(!f.converged && f.violations == 0);
    assert!(f.costs.frozen_tasks > 0);
    assert!(f.transitions[0].straggler_reasons.contains_key("on-stack in schedule"), "{:?}", f.transitions[0]);
}

#[test]
fn the_freezer_fails_fast_where_the_thread_said() {
    // "fail (patch affects freezer/schedule path)": a frozen task sits in schedule() (the
    // refrigerator calls it), so with schedule() patched every frozen task is still on the
    // patched path when checked again. The freezer gives up at once, thaws everybody and
    // reverses, instead of holding tasks frozen until the time limit.
    let sched = run_all("schedule-path");
    let f = by(&sched, "freezer");
    assert_eq!(f.violations, 0, "{:?}", f.violation);
    let t = &f.transitions[0];
    assert_eq!(t.outcome, "gave-up", "{t:?}");
    assert!(t.reversed, "{t:?}");
    assert!(t.end_ns.is_some(), "the reversal completes: {t:?}");
    assert!(t.passes <= 5, "failed only after {} passes", t.passes);
    assert!(f.costs.freeze_pause.max_ns < 10_000_000, "{:?}", f.costs.freeze_pause);
    // "retry and/or fail (kthread is either CPU-bound or is using patched func)": retried,
    // with a bound.
    let cpu_bound = run_all("cpu-bound-kthread");
    let f = by(&cpu_bound, "freezer");
    assert_eq!(f.violations, 0, "{:?}", f.violation);
    let t = &f.transitions[0];
    assert_eq!(t.outcome, "gave-up", "{t:?}");
    assert!(t.end_ns.is_some(), "the reversal completes: {t:?}");
    assert!(t.passes <= Policy::FREEZER.stop_attempts + 5, "{} passes", t.passes);
}
