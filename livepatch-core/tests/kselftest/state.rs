//! `test-state.sh`: a patch that modifies a system state (the console loglevel), a cumulative
//! patch that takes it over in `post_patch`, compatible and incompatible cumulative patches.
//! All of them replace no function.

use crate::expected::*;
use crate::harness::Kernel;
use std::sync::atomic::Ordering;

fn vars(k: &Kernel) -> [(&'static str, &'static str); 3] {
    [("MOD_LIVEPATCH", k.m.state.name()), ("MOD_LIVEPATCH2", k.m.state2.name()), ("MOD_LIVEPATCH3", k.m.state3.name())]
}

fn loglevel(k: &Kernel) -> usize {
    k.m.console_loglevel.load(Ordering::Relaxed)
}

#[test]
fn system_state_modification() {
    let mut k = Kernel::boot();
    let lp = k.m.state;
    k.start_test("system state modification");
    k.load_lp(lp, "");
    assert_eq!(loglevel(&k), 15, "CONSOLE_LOGLEVEL_MOTORMOUTH");
    k.disable_lp(lp);
    k.unload_lp(lp);
    assert_eq!(loglevel(&k), 7);
    k.check_result(STATE_SYSTEM_STATE_MODIFICATION, &vars(&k));
}

/// The second divergence of issue 13: `test_klp_state2` takes the state over in `post_patch`;
/// without the replaced patch still listed there it would take the "first patch" path and
/// dereference state data it never allocated (the harness panics where a kernel oopses).
#[test]
fn taking_over_system_state_modification() {
    let mut k = Kernel::boot();
    let (lp, lp2) = (k.m.state, k.m.state2);
    k.start_test("taking over system state modification");
    k.load_lp(lp, "");
    k.load_lp(lp2, "");
    k.unload_lp(lp);
    assert_eq!(loglevel(&k), 15);
    k.disable_lp(lp2);
    k.unload_lp(lp2);
    assert_eq!(loglevel(&k), 7, "restored from the value state saved");
    k.check_result(STATE_TAKING_OVER_SYSTEM_STATE_MODIFICATION, &vars(&k));
}

#[test]
fn compatible_cumulative_livepatches() {
    let mut k = Kernel::boot();
    let (lp2, lp3) = (k.m.state2, k.m.state3);
    k.start_test("compatible cumulative livepatches");
    k.load_lp(lp2, "");
    k.load_lp(lp3, "");
    k.unload_lp(lp2);
    k.load_lp(lp2, "");
    k.disable_lp(lp2);
    k.unload_lp(lp2);
    k.unload_lp(lp3);
    assert_eq!(loglevel(&k), 7);
    k.check_result(STATE_COMPATIBLE_CUMULATIVE_LIVEPATCHES, &vars(&k));
}

#[test]
fn incompatible_cumulative_livepatches() {
    let mut k = Kernel::boot();
    let (lp, lp2) = (k.m.state, k.m.state2);
    k.start_test("incompatible cumulative livepatches");
    k.load_lp(lp2, "");
    k.load_failing_lp(lp, "");
    k.disable_lp(lp2);
    k.unload_lp(lp2);
    k.check_result(STATE_INCOMPATIBLE_CUMULATIVE_LIVEPATCHES, &vars(&k));
}
