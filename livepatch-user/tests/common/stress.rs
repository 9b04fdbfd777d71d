//! The stress loop shared by `tests/stress.rs` and `tests/stress_busy.rs`: the C target's
//! workers call f -> g chains while the runtime enables, disables, reverses and replaces
//! patches in a loop; any chain mixing versions fails the run.

use livepatch_user::Runtime;
use std::time::{Duration, Instant};

/// Transitions the loop must complete (each enable, disable, replace and reversal counts) in
/// `cargo test`; `LP_STRESS_TRANSITIONS` overrides (`.ci/run` asks for 1 000 in a release
/// build: `livepatch-user/ci/stress.sh`).
const TRANSITIONS: u64 = 200;

/// The stress loop with `default_mix` threads (busy, sleepy, spinning, churning), until
/// `LP_STRESS_TRANSITIONS` (default [`TRANSITIONS`]) transitions completed.
pub(crate) fn run(name: &str, default_mix: [i32; 4]) {
    let want: u64 = std::env::var("LP_STRESS_TRANSITIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(TRANSITIONS);
    let mut policy = livepatch_user::DEFAULT_POLICY;
    // `LP_STRESS_WITHOUT=handler-entry,self-check,exit-to-user` removes switch points.
    for point in std::env::var("LP_STRESS_WITHOUT").unwrap_or_default().split(',') {
        use livepatch_core::model::SwitchPoints as P;
        policy.switch_points.remove(match point {
            "handler-entry" => P::HANDLER_ENTRY,
            "self-check" => P::SELF_CHECK,
            "exit-to-user" => P::EXIT_TO_USER,
            _ => P::empty(),
        });
    }
    let rt = Runtime::init(policy).expect("init");
    let t = super::load(name);
    start_mix(&t, default_mix);
    let [p1, p2] = &t.patches;
    let wait = Duration::from_secs(20);
    let done = |r: Result<livepatch_core::sweep::PassSummary, livepatch_user::Error>, what: &str| {
        if let Err(e) = r {
            panic!("{what}: {e}; stalls: {:#?}; {:?}", rt.stalls(), rt.stats());
        }
    };
    let t0 = Instant::now();
    let mut round = 0u64;
    let mut reversals = 0u64;
    while rt.stats().transitions < want {
        match round % 4 {
            // enable, disable
            0 => {
                let h = rt.apply(p1).expect("apply v1");
                done(rt.wait(wait), "enable v1");
                rt.disable(h).expect("disable v1");
                done(rt.wait(wait), "disable v1 completes");
            }
            // enable, reverse mid-transition (or disable if it already completed)
            1 => {
                let h = rt.apply(p1).expect("apply v1");
                let _ = rt.step().expect("one pass");
                if rt.transition().is_some() {
                    rt.reverse().expect("reverse");
                    reversals += 1;
                    done(rt.wait(wait), "reversal completes");
                } else {
                    rt.disable(h).expect("disable v1");
                    done(rt.wait(wait), "disable v1 completes");
                }
            }
            // v1, then the cumulative v2 replaces it, then v2 goes
            2 => {
                rt.apply(p1).expect("apply v1");
                done(rt.wait(wait), "enable v1");
                let h2 = rt.apply(p2).expect("apply v2");
                done(rt.wait(wait), "replace by v2");
                assert_eq!(rt.list().len(), 1, "the replaced patch is gone: {:?}", rt.list());
                rt.disable(h2).expect("disable v2");
                done(rt.wait(wait), "disable v2 completes");
            }
            // a disable reversed back to enabled, then the disable again
            _ => {
                let h = rt.apply(p2).expect("apply v2");
                done(rt.wait(wait), "enable v2");
                rt.disable(h).expect("disable v2");
                if rt.transition().is_some() {
                    rt.reverse().expect("reverse the disable");
                    reversals += 1;
                    done(rt.wait(wait), "back to enabled");
                    rt.disable(h).expect("disable v2 again");
                }
                done(rt.wait(wait), "disable v2 completes");
            }
        }
        round += 1;
        assert_eq!((t.bad)(), 0, "a chain mixed versions (f*16+g = {:#x}) in round {round}", (t.bad_detail)());
    }
    let elapsed = t0.elapsed();
    (t.stop)();
    let stats = rt.stats();
    let per_version: Vec<i64> = (0..3).map(|v| (0..64).map(|r| (t.calls)(r, v)).sum()).collect();
    let records_with_all = (0..64).filter(|&r| (0..3).all(|v| (t.calls)(r, v) > 0)).count();
    eprintln!(
        "stress: {} transitions ({reversals} reversals) in {elapsed:.2?}; {stats:?}; g calls per version {per_version:?}; \
         {records_with_all} thread records ran all three versions; bad chains {}",
        stats.transitions,
        (t.bad)()
    );
    assert_eq!((t.bad)(), 0);
    assert!(stats.transitions >= want);
    assert!(per_version.iter().all(|&n| n > 0), "every version ran: {per_version:?}");
    assert!(stats.kicks > 0, "stragglers were kicked");
    assert_eq!(stats.unregistered_calls, 0);
}

/// The stress under the stop-the-world model with `default_mix` threads: enable v1, replace
/// it by the cumulative v2, disable; an attempt that finds any thread inside f or g fails,
/// and after the policy's attempts the transition gives up (an enable is cancelled, a disable
/// leaves the patch enabled, to be retried). Runs until a tenth of `LP_STRESS_TRANSITIONS`
/// (default [`TRANSITIONS`]) transitions completed — with a busy thread, a stop that finds
/// every stack clean takes tens of attempts; no chain may mix versions.
pub(crate) fn run_stop_the_world(name: &str, default_mix: [i32; 4]) {
    use livepatch_core::Policy;
    let want: u64 =
        std::env::var("LP_STRESS_TRANSITIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(TRANSITIONS).div_ceil(10);
    let policy = Policy { retry_delay_ns: 200_000, stop_attempts: 200, ..Policy::STOP_THE_WORLD };
    let rt = Runtime::init(policy).expect("init with the stop-the-world model");
    let t = super::load(name);
    start_mix(&t, default_mix);
    let [p1, p2] = &t.patches;
    let wait = Duration::from_secs(20);
    let t0 = Instant::now();
    let mut gave_up = 0u64;
    let mut round = 0u64;
    // Runs the transition in progress to its end; `true` if it completed.
    let mut finish = |what: &str| -> bool {
        let before = rt.stats().transitions;
        if let Err(e) = rt.wait(wait) {
            panic!("{what}: {e}; stalls: {:#?}; {:?}", rt.stalls(), rt.stats());
        }
        let completed = rt.stats().transitions > before;
        gave_up += u64::from(!completed);
        completed
    };
    while rt.stats().transitions < want {
        rt.apply(if round.is_multiple_of(2) { p1 } else { p2 }).expect("apply");
        if finish("enable") && round.is_multiple_of(4) {
            rt.apply(p2).expect("apply the replacement");
            finish("replace");
        }
        // Disable whatever is enabled until nothing is (a disable that gives up leaves it).
        while let Some(p) = rt.list().first().cloned() {
            rt.disable(p.handle).expect("disable");
            finish("disable");
            assert!(t0.elapsed() < Duration::from_secs(600), "the disables never complete");
        }
        round += 1;
        assert_eq!((t.bad)(), 0, "a chain mixed versions (f*16+g = {:#x}) in round {round}", (t.bad_detail)());
    }
    let elapsed = t0.elapsed();
    (t.stop)();
    let stats = rt.stats();
    let per_version: Vec<i64> = (0..3).map(|v| super::calls_of(&t, v)).collect();
    eprintln!(
        "stress (stop-the-world): {} transitions ({gave_up} gave up) in {elapsed:.2?}; {stats:?}; \
         g calls per version {per_version:?}; bad chains {}",
        stats.transitions,
        (t.bad)()
    );
    assert_eq!((t.bad)(), 0);
    assert!(stats.transitions >= want);
    assert!(per_version.iter().all(|&n| n > 0), "every version ran: {per_version:?}");
    assert_eq!(stats.kicks, 0, "the stop-the-world model kicks nobody");
    assert_eq!(stats.unregistered_calls, 0);
}

/// Starts the target's worker threads — `default_mix`, or `LP_STRESS_MIX=busy,sleepy,spin,churn`
/// — and waits until they all run.
fn start_mix(t: &super::Target, default_mix: [i32; 4]) {
    let mix: Vec<i32> = std::env::var("LP_STRESS_MIX")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .filter(|m: &Vec<i32>| m.len() == 4)
        .unwrap_or(default_mix.to_vec());
    assert_eq!((t.start)(&super::API, mix[0], mix[1], mix[2], mix[3]), 0);
    super::wait_running(t, mix.iter().sum());
}
