//! Both ways a walker hands frames to the core's stack check are exercised: one address at a
//! time (`StackWalker::walk`, what the Linux module and livepatch-user do) and the saved stack
//! at once (`StackWalker::walk_runs`, `WalkMode::Saved`), which takes the core's batched path
//! (eight frames per compare, at most four ranges switched away from). The stacks here are
//! deep enough for that path to matter: a kthread sleeps in the patched function under a
//! chain of eight callers.

use livepatch_core::backend::TaskFlags;
use livepatch_core::Policy;
use livepatch_mock::backend::{BackendConfig, WalkMode};
use livepatch_mock::machine::code::{CodeBuilder, Op, SleepFor, SleepKind};
use livepatch_mock::run::run;
use livepatch_mock::scenario::build::{after, config, kernel, kthread, on_cpu, patch, settled, user, MS, S, US};
use livepatch_mock::scenario::{Action, Scenario};

/// A kthread that sleeps (interruptibly, 20–30 ms at a time) in `deep_wait`, called through
/// `deep_0` … `deep_7`, then 5 ms at the top of its loop; a few user tasks beside it. The
/// script patches `deep_wait` and `spares` functions nobody calls, then unpatches them.
fn deep_sleeper(seed: u64, walk: WalkMode, spares: usize) -> Scenario {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let body =
        || vec![Op::Work(5 * US, 10 * US), Op::Sleep(SleepKind::Interruptible, SleepFor::Between(20 * MS, 30 * MS))];
    let wait = b.func("deep_wait", body());
    let mut callee = wait;
    for i in (0..8).rev() {
        callee = b.func(&format!("deep_{i}"), vec![Op::Work(US, 2 * US), Op::Call(callee)]);
    }
    // Between two waits it sleeps at the top of its loop too: where Linux's sweep finds it
    // with a clean stack.
    let main = b.func(
        "deep_main",
        vec![
            Op::SafePoint,
            Op::Call(callee),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(5 * MS, 5 * MS)),
            Op::Loop,
        ],
    );
    let v = b.variant(wait, 0, body());
    let mut funcs = Vec::new();
    for i in 0..spares {
        let f = b.func(&format!("spare_{i}"), vec![Op::Work(US, 2 * US)]);
        funcs.push((f, b.variant(f, 0, vec![Op::Work(US, 2 * US)])));
    }
    // Last: with 17 ranges, `deep_wait` is the one past the 16 listed.
    funcs.push((wait, v));
    let mut machine = config(2, seed);
    machine.backend = BackendConfig { walk, ..BackendConfig::default() };
    Scenario {
        name: "deep-sleeper".into(),
        about: "a kthread sleeps in the patched function under eight callers".into(),
        code: b.build().expect("code builds"),
        machine,
        tasks: vec![
            kthread(main, TaskFlags::empty()),
            user(&[k.sys_getpid, k.sys_read], (50 * US, 500 * US)),
            user(&[k.sys_getpid, k.sys_read], (50 * US, 500 * US)),
        ],
        patches: vec![patch("deep-fix", &funcs)],
        loaded: Vec::new(),
        script: vec![after(5 * MS, Action::Enable(0)), settled(5 * MS, Action::Disable(0)), settled(MS, Action::Nop)],
        limit_ns: 2 * S,
        settle_ns: 10 * MS,
    }
}

/// The sweep finds the sleeping kthread with `deep_wait` at depth 1 of an 11-frame stack, in
/// the first batch of eight the saved walk hands: it must not switch it there, whichever way
/// the frames come (a batch check that misses it switches it with the function being
/// replaced on its stack: I2).
#[test]
fn a_deep_stack_is_checked_the_same_one_by_one_and_saved() {
    for walk in [WalkMode::OneByOne, WalkMode::Saved] {
        for (name, policy) in [("linux-tuned", livepatch_mock::LINUX_TUNED), ("improved", Policy::IMPROVED)] {
            for seed in 1..=2 {
                let r = run(&deep_sleeper(seed, walk, 0), policy);
                assert_eq!(r.violations, 0, "{walk:?} {name} seed {seed}: {:?}", r.violation.map(|v| v.to_string()));
                assert!(r.converged, "{walk:?} {name} seed {seed}: {:?}", r.transitions);
                assert_eq!(r.transitions.len(), 2, "{walk:?} {name} seed {seed}: {:?}", r.transitions);
                // The case is reached: the kthread was found blocked in deep_wait.
                let blocked = r.transitions.iter().any(|t| t.blocking_functions.contains("deep_wait"));
                assert!(blocked, "{walk:?} {name} seed {seed}: {:?}", r.transitions);
            }
        }
    }
}

/// The stack check picks its pre-filter from how many ranges are switched away from: up to
/// four compared directly, up to 16 listed behind the block bitmap, more through the bitmap
/// alone. One patched function, then 5 and 17: the sleeping kthread must be found blocked
/// and never switched with `deep_wait` on its stack, whichever filter admits its frame.
/// Here the code switched away from (the originals, at `0x1000_0720` and up) does not cover
/// block 0 of the bitmap, which the machine's other scenarios almost always do (their away
/// code starts a 16 MiB region), so a filter that tests the wrong bit for a frame is seen.
#[test]
fn every_away_filter_tier_finds_the_frame() {
    for spares in [0, 4, 16] {
        for (name, policy) in [("linux-tuned", livepatch_mock::LINUX_TUNED), ("improved", Policy::IMPROVED)] {
            let r = run(&deep_sleeper(1, WalkMode::OneByOne, spares), policy);
            let what = format!("{} ranges, {name}", spares + 1);
            assert_eq!(r.violations, 0, "{what}: {:?}", r.violation.map(|v| v.to_string()));
            assert!(r.converged, "{what}: {:?}", r.transitions);
            let blocked = r.transitions.iter().any(|t| t.blocking_functions.contains("deep_wait"));
            assert!(blocked, "{what}: {:?}", r.transitions);
        }
    }
}

/// A kthread that recurses eight deep in the patched `rec_step` (`Op::CallBelow`) and stays
/// there, working in a loop, on a CPU it shares with three busy user tasks: preempted, its
/// innermost eight frames are all `rec_step` (a batch of the saved walk entirely inside the
/// one range switched away from), and only `rec_main` is outside. It never leaves
/// `rec_step`, so the script enables the patch and reverses the transition 50 ms later.
fn recursive_worker(seed: u64) -> Scenario {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    // Laid out with room for its body, which calls itself: set once its id is known.
    let rec = b.func("rec_step", vec![Op::Work(1, 1), Op::Work(1, 1), Op::Work(1, 1)]);
    let main = b.func("rec_main", vec![Op::Call(rec), Op::Loop]);
    let v = b.variant(rec, 0, vec![Op::Work(100 * US, 300 * US)]);
    let mut code = b.build().expect("code builds");
    code.replace_body(rec, vec![Op::CallBelow(rec, 9), Op::Work(100 * US, 300 * US), Op::Loop]).expect("fits");
    let mut machine = config(2, seed);
    machine.backend = BackendConfig { walk: WalkMode::Saved, ..BackendConfig::default() };
    let busy = || on_cpu(user(&[k.sys_getpid], (200 * US, 2 * MS)), 1);
    Scenario {
        name: "recursive-worker".into(),
        about: "a kthread recurses eight deep in the patched function and works there".into(),
        code,
        machine,
        tasks: vec![on_cpu(kthread(main, TaskFlags::empty()), 1), busy(), busy(), busy()],
        patches: vec![patch("rec-fix", &[(rec, v)])],
        loaded: Vec::new(),
        script: vec![after(5 * MS, Action::Enable(0)), after(50 * MS, Action::Reverse), settled(MS, Action::Nop)],
        limit_ns: S,
        settle_ns: 10 * MS,
    }
}

/// A batch of the saved walk whose eight frames are all inside the code switched away from
/// (recursion) must be found like any other: the kthread is never switched with `rec_step`
/// on its stack, and the reversal takes everybody back.
#[test]
fn a_batch_entirely_inside_old_code_is_found() {
    for (name, policy) in [("linux-tuned", livepatch_mock::LINUX_TUNED), ("improved", Policy::IMPROVED)] {
        for seed in 1..=2 {
            let r = run(&recursive_worker(seed), policy);
            assert_eq!(r.violations, 0, "{name} seed {seed}: {:?}", r.violation.map(|v| v.to_string()));
            assert!(r.converged, "{name} seed {seed}: {:?}", r.transitions);
            let t = &r.transitions[0];
            assert!(t.reversed && t.blocking_functions.contains("rec_step"), "{name} seed {seed}: {t:?}");
        }
    }
}
