//! Randomised: proptest-driven machines and operation sequences under every model with the
//! oracle on, and the bounded soak CI runs.

use livepatch_mock::backend::WalkMode;
use livepatch_mock::run::{run_with, RunOptions};
use livepatch_mock::scenario::random::{build, HookFault, RandomMachine, RandomOp, RandomStep};
use livepatch_mock::{soak, MODELS};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = RandomOp> {
    prop_oneof![
        4 => any::<u8>().prop_map(RandomOp::Enable),
        3 => any::<u8>().prop_map(RandomOp::Disable),
        1 => Just(RandomOp::Reverse),
        1 => Just(RandomOp::Force),
        1 => any::<u8>().prop_map(RandomOp::Fork),
        1 => any::<u8>().prop_map(RandomOp::Exit),
        1 => any::<u8>().prop_map(RandomOp::CpuOffline),
        1 => any::<u8>().prop_map(RandomOp::CpuOnline),
        1 => Just(RandomOp::Load),
        1 => Just(RandomOp::Unload),
    ]
}

fn step() -> impl Strategy<Value = RandomStep> {
    (0u32..20_000, any::<bool>(), op()).prop_map(|(delay_us, settle, op)| RandomStep { delay_us, settle, op })
}

fn hook_fault() -> impl Strategy<Value = HookFault> {
    prop_oneof![
        6 => Just(HookFault::None),
        1 => any::<u8>().prop_map(HookFault::Install),
        1 => any::<u8>().prop_map(HookFault::Remove),
    ]
}

fn machine() -> impl Strategy<Value = RandomMachine> {
    let walk = prop_oneof![Just(WalkMode::OneByOne), Just(WalkMode::Saved)];
    (1u32..=4, 1u32..=10, 0u32..=4, 0u32..=4, any::<u64>(), hook_fault(), walk).prop_map(
        |(cpus, users, exiting, kthreads, seed, hook_fault, walk)| RandomMachine {
            cpus,
            users,
            exiting: exiting.min(users),
            kthreads,
            seed,
            hook_fault,
            walk,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_machines_never_violate_an_invariant(
        m in machine(),
        steps in proptest::collection::vec(step(), 1..10),
        model in 0usize..MODELS.len(),
    ) {
        let sc = build(&m, &steps).expect("random code builds");
        let (name, policy) = MODELS[model];
        let r = run_with(&sc, policy, RunOptions { max_events: 150_000, timeline: false }, &mut |_| {});
        prop_assert!(r.violation.is_none(), "{name}: {}", r.violation.as_ref().map(|v| v.to_string()).unwrap_or_default());
        prop_assert_eq!(r.outcomes.len() <= steps.len(), true);
    }
}

#[test]
fn bounded_soak() {
    // CI's soak: at least 2e5 simulated steps (events) of random machines and operations,
    // every model in turn, 0 violations.
    let rep = soak::soak(200_000, 20_241_114, 12, &mut |_| {});
    assert!(rep.events >= 200_000);
    assert!(rep.runs >= 2);
    assert!(rep.transitions > 0);
    assert_eq!(rep.violations, 0, "{:?}", rep.first);
}

#[test]
#[ignore = "release soak (≥ 1e6 steps): cargo test --release -p livepatch-tests --test random -- --ignored"]
fn release_soak() {
    let rep = soak::soak(1_000_000, 1, 12, &mut |_| {});
    assert!(rep.events >= 1_000_000);
    assert_eq!(rep.violations, 0, "{:?}", rep.first);
}

/// Soak runs that once found bugs, replayed: a call-chain reversal that completed at once
/// (the redirect ignores the task word), a cumulative patch whose reversed disable retired a
/// newer patch, and a disable of a cumulative patch under the call-chain model.
#[test]
fn replays_of_past_soak_findings_stay_clean() {
    for (seed, model) in [(59, "call-chain"), (30_242, "kgraft"), (40_218, "call-chain"), (20, "call-chain")] {
        let policy = livepatch_mock::model(model).expect("known model");
        let r = soak::replay(seed, 12, policy).expect("builds");
        assert!(r.violation.is_none(), "seed {seed} {model}: {:?}", r.violation);
        assert!(r.converged || r.timed_out, "seed {seed} {model}");
    }
}

/// The random machines' tracer faults reach the tracer: a refused install refuses the enable
/// (nothing enabled: the next enable of another patch works), and a refused removal leaves the
/// hook when the module goes. The proptest and the soak draw these faults; this checks that
/// drawing one changes what the machine does.
#[test]
fn random_machines_hook_faults_reach_the_tracer() {
    let m = |hook_fault| RandomMachine {
        cpus: 2,
        users: 3,
        exiting: 0,
        kthreads: 1,
        seed: 7,
        hook_fault,
        walk: WalkMode::OneByOne,
    };
    let step = |op, settle| RandomStep { delay_us: 1_000, settle, op };
    let (name, policy) = MODELS[0];

    // f1 (fault 0) is patched by r0: its enable is refused, r3's then completes.
    let steps = [step(RandomOp::Enable(0), false), step(RandomOp::Enable(3), true)];
    let sc = build(&m(HookFault::Install(0)), &steps).expect("random code builds");
    let r = run_with(&sc, policy, RunOptions { max_events: 150_000, timeline: false }, &mut |_| {});
    assert!(r.violation.is_none(), "{name}: {:?}", r.violation);
    let errors: Vec<_> = r.outcomes.iter().map(|o| o.error.is_some()).collect();
    assert_eq!(errors, [true, false], "{:?}", r.outcomes);
    assert_eq!(r.transitions.len(), 1, "{:?}", r.transitions);
    assert_eq!(r.transitions[0].outcome, "complete");

    // m0 (fault 1) is patched by r2: enabled, then the module goes and its hook stays.
    let steps = [step(RandomOp::Enable(2), false), step(RandomOp::Unload, true), step(RandomOp::Disable(2), true)];
    for (fault, refused) in [(HookFault::None, false), (HookFault::Remove(1), true)] {
        let sc = build(&m(fault), &steps).expect("random code builds");
        let r = run_with(&sc, policy, RunOptions { max_events: 150_000, timeline: false }, &mut |_| {});
        assert!(r.violation.is_none(), "{name}: {:?}", r.violation);
        assert!(r.outcomes.iter().all(|o| o.error.is_none()), "{:?}", r.outcomes);
        assert_eq!(r.machine.failed_unhooks > 0, refused, "{fault:?}: {:?}", r.machine);
        assert!(r.converged, "{fault:?}: {:?}", r.transitions);
    }
}
