//! The stress's check can fail: forcing transitions (every thread switches whatever its stack
//! holds, giving up the consistency guarantee) makes threads that nap between f's two calls
//! of g run old f with new g, and the target counts those chains.

mod common;

use livepatch_user::Runtime;
use std::time::{Duration, Instant};

#[test]
fn forced_transitions_mix_versions_and_the_check_sees_it() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("force");
    // Sleepy threads only: they spend most of their time inside f, between its calls of g.
    assert_eq!((t.start)(&common::API, 0, 6, 0, 0), 0);
    common::wait_running(&t, 6);
    let p1 = &t.patches[0];
    let t0 = Instant::now();
    let mut rounds = 0;
    while (t.bad)() == 0 && t0.elapsed() < Duration::from_secs(20) {
        let h = rt.apply(p1).expect("apply");
        rt.force().expect("force the enable");
        std::thread::sleep(Duration::from_millis(2));
        rt.disable(h).expect("disable");
        rt.force().expect("force the disable");
        std::thread::sleep(Duration::from_millis(2));
        rounds += 1;
    }
    (t.stop)();
    eprintln!("forced: {rounds} rounds, {} mixed chains (last f*16+g = {:#x})", (t.bad)(), (t.bad_detail)());
    assert!((t.bad)() > 0, "forcing never produced a mixed chain in {rounds} rounds");
}
