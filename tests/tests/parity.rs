//! Linux selftest parity: each scenario's exact expected outcome under the Linux 6.12 policy
//! and the improved one, with the oracle on.

use livepatch_core::Policy;
use livepatch_mock::run::{run, RunResult};
use livepatch_mock::scenario;

fn run_named(name: &str, policy: Policy) -> RunResult {
    let def = scenario::find(name).expect("scenario exists");
    let sc = def.build_with(None, None, Some(3)).expect("scenario builds");
    run(&sc, policy)
}

fn errors(r: &RunResult) -> Vec<Option<String>> {
    r.outcomes.iter().map(|o| o.error.clone()).collect()
}

fn outcomes(r: &RunResult) -> Vec<(&str, &str)> {
    r.transitions.iter().map(|t| (t.direction.as_str(), t.outcome.as_str())).collect()
}

const BOTH: [Policy; 2] = [Policy::LINUX_6_12, Policy::IMPROVED];

#[test]
fn basic_patch_and_unpatch() {
    for p in BOTH {
        let r = run_named("basic", p);
        assert!(r.converged, "{}: {:?}", r.model, r.violation);
        assert_eq!(r.violations, 0);
        assert_eq!(outcomes(&r), [("enable", "complete"), ("disable", "complete")]);
        assert!(errors(&r).iter().all(Option::is_none));
        assert!(r.machine.hooked_calls > 0, "the patched function was called");
    }
    // Linux: the idle tasks are running on the first pass and switch in their idle loop after
    // a wake-up; the second pass, one second later, completes. The improved policy retries
    // after a millisecond.
    let linux = run_named("basic", Policy::LINUX_6_12);
    for t in &linux.transitions {
        assert_eq!(t.passes, 2, "{t:?}");
        let d = t.end_ns.unwrap() - t.start_ns;
        assert!((1_000_000_000..1_100_000_000).contains(&d), "{d}");
    }
    let improved = run_named("basic", Policy::IMPROVED);
    for t in &improved.transitions {
        assert!(t.end_ns.unwrap() - t.start_ns < 50_000_000, "{t:?}");
    }
}

#[test]
fn multiple_non_replace_patches() {
    for p in BOTH {
        let r = run_named("multiple", p);
        assert!(r.converged, "{}: {:?}", r.model, r.violation);
        assert_eq!(
            outcomes(&r),
            [("enable", "complete"), ("enable", "complete"), ("disable", "complete"), ("disable", "complete")]
        );
        assert!(errors(&r).iter().all(Option::is_none));
    }
}

#[test]
fn atomic_replace_of_stacked_patches() {
    for p in BOTH {
        let r = run_named("replace3", p);
        assert!(r.converged, "{}: {:?}", r.model, r.violation);
        assert_eq!(r.violations, 0);
        assert_eq!(
            outcomes(&r),
            [("enable", "complete"), ("enable", "complete"), ("enable", "complete"), ("disable", "complete")]
        );
        // After the replace, p1 is no longer enabled: disabling it is refused.
        let e = errors(&r);
        assert_eq!(e[3].as_deref(), Some("patch 1 is not enabled"), "{e:?}");
        assert!(e.iter().enumerate().all(|(i, e)| i == 3 || e.is_none()));
    }
}

#[test]
fn callbacks_run_in_the_kernel_order() {
    let expected = [
        // Test 1: module loaded before the patch.
        "pre_patch p0 vmlinux",
        "pre_patch p0 mod1",
        "post_patch p0 vmlinux",
        "post_patch p0 mod1",
        // Test 2: the module goes away and comes back while patched.
        "pre_unpatch p0 mod1",
        "post_unpatch p0 mod1",
        "pre_patch p0 mod1",
        "post_patch p0 mod1",
        // Disable.
        "pre_unpatch p0 vmlinux",
        "pre_unpatch p0 mod1",
        "post_unpatch p0 vmlinux",
        "post_unpatch p0 mod1",
        // Test 3: a failing pre_patch cancels the enable; nothing else runs for it.
        "pre_patch p1 vmlinux",
        // Test 4: a late module whose pre_patch fails is refused; the rest is unaffected.
        "pre_patch p2 vmlinux",
        "post_patch p2 vmlinux",
        "pre_patch p2 mod2",
        "pre_unpatch p2 vmlinux",
        "post_unpatch p2 vmlinux",
    ];
    for p in BOTH {
        let r = run_named("callbacks", p);
        assert!(r.converged, "{}: {:?}", r.model, r.violation);
        assert_eq!(r.callbacks, expected, "{}", r.model);
        let e = errors(&r);
        assert!(e[5].as_deref().is_some_and(|s| s.contains("code -19")), "{e:?}");
        assert!(e[7].as_deref().is_some_and(|s| s.contains("code -22")), "{e:?}");
        assert_eq!(e.iter().filter(|e| e.is_some()).count(), 2);
    }
}

#[test]
fn busy_target_stays_pending_and_reversal_completes() {
    for p in BOTH {
        let r = run_named("busy-target", p);
        assert!(r.converged, "{}: {:?}", r.model, r.violation);
        assert_eq!(outcomes(&r), [("enable", "reversed")]);
        let t = &r.transitions[0];
        assert!(t.reversed);
        // Pending for the 5 s before the reversal...
        assert!(t.end_ns.unwrap() - t.start_ns >= 5_000_000_000);
        // ...because of the worker sleeping in the patched function.
        assert!(t.blocking_functions.contains("busymod_work_func"), "{:?}", t.blocking_functions);
    }
}

#[test]
fn syscall_heavy_tasks_switch_at_exit_to_user() {
    for p in BOTH {
        let r = run_named("syscall", p);
        assert!(r.converged, "{}: {:?}", r.model, r.violation);
        assert!(r.switches["exit-to-user"] > 0, "{}: {:?}", r.model, r.switches);
        assert!(r.machine.syscalls > 10_000);
    }
}

#[test]
fn force_completes_and_never_releases_forced_code() {
    for p in BOTH {
        let r = run_named("force", p);
        assert!(r.converged, "{}: {:?}", r.model, r.violation);
        assert_eq!(r.violations, 0);
        assert_eq!(outcomes(&r), [("enable", "forced"), ("disable", "complete")]);
        let e = errors(&r);
        assert_eq!(e[3].as_deref(), Some("no transition is in progress"));
    }
}
