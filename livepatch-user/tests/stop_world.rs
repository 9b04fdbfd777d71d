//! The stop-the-world model on real threads: every registered thread is stopped by a signal
//! whose handler parks it, every stack is checked, and all threads switch or none does.
//!
//! A thread held inside the original f -> g makes every attempt fail: the enable gives up
//! (is cancelled) and no thread ever ran the new version. Once it is released, one attempt
//! switches every thread at once.

mod common;

use livepatch_core::Policy;
use livepatch_user::Runtime;
use std::time::{Duration, Instant};

#[test]
fn stop_the_world_switches_all_threads_or_none() {
    let policy = Policy { retry_delay_ns: 1_000_000, stop_attempts: 20, ..Policy::STOP_THE_WORLD };
    let rt = Runtime::init(policy).expect("init with the stop-the-world model");
    let t = common::load("stop_world");
    // This thread registers (as a root thread) so that it can prepare the held thread.
    let base = 0usize;
    // SAFETY: no token; `base` is a stack address above every frame this test uses later.
    let r = unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
    assert_eq!(r, 0);
    // Two spinning threads (they call f between spins) and one churning (short-lived threads
    // are prepared and started during stops). Busy and sleepy threads spend nearly all their
    // time inside f -> g, where no stop can switch them (see `stress_stop_world.rs`).
    assert_eq!((t.start)(&common::API, 0, 0, 2, 1), 0);
    common::wait_running(&t, 3);
    assert_eq!((t.start_holder)(), 0);
    let [p1, _] = &t.patches;

    // Held: every attempt finds f and g on the held thread's stack; nobody switches.
    let h = rt.apply(p1).expect("apply");
    let summary = rt.wait(Duration::from_secs(10)).expect("the attempts end");
    assert!(rt.transition().is_none(), "the enable gave up");
    assert!(rt.list().is_empty(), "the cancelled patch is gone: {:?}", rt.list());
    let stalls = rt.stalls();
    // The held thread, at least (a short-lived thread caught inside f -> g may be reported
    // too; it has exited since, so its tid reads 0).
    assert!(stalls.iter().any(|s| s.tid != 0 && s.report.contains("in function g")), "the held thread: {stalls:?}");
    assert_eq!(common::calls_of(&t, 1), 0, "no thread ever ran version 1 (all or none)");
    let stats = rt.stats();
    assert_eq!(stats.transitions, 0);
    assert!(stats.passes >= 20, "every attempt was made: {stats:?}, last {summary:?}");
    assert_eq!((t.bad)(), 0);
    let _ = h;

    // Released: one attempt switches every thread at once.
    (t.release_holder)();
    std::thread::sleep(Duration::from_millis(5));
    let before: Vec<i64> = (0..3).map(|r| (t.calls)(r, 1)).collect();
    let h = rt.apply(p1).expect("apply again");
    let summary = rt.wait(Duration::from_secs(10)).expect("the enable completes");
    assert!(rt.transition().is_none());
    assert_eq!(rt.list().len(), 1, "enabled: {:?}", rt.list());
    assert!(summary.switched >= 4, "every pending thread switched in one stop: {summary:?}");
    // The spinning threads (records 0 and 1) now run version 1.
    let t0 = Instant::now();
    while (0..2).any(|r| (t.calls)(r, 1) == before[r as usize]) {
        assert!(t0.elapsed() < Duration::from_secs(5), "a worker still runs the old version");
        std::thread::sleep(Duration::from_millis(1));
    }
    let v0 = common::calls_of(&t, 0);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(common::calls_of(&t, 0), v0, "no registered thread runs version 0 any more");

    rt.disable(h).expect("disable");
    rt.wait(Duration::from_secs(10)).expect("the disable completes");
    assert!(rt.list().is_empty());
    (t.stop)();
    livepatch_user::livepatch_thread_end();
    assert_eq!((t.bad)(), 0, "no chain mixed versions");
    assert_eq!(rt.stats().transitions, 2);
}
