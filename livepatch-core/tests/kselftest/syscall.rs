//! `test-syscall.sh`: `getpid` patched while `NPROC` processes call it in a loop. They are
//! always running, so the sweep never checks them: each switches at exit to user mode, and the
//! new `getpid` removes its caller from `klp_pids` (`npids` counts those that never ran it).

use crate::expected::*;
use crate::harness::Kernel;

#[test]
fn patch_getpid_syscall_while_being_heavily_hammered() {
    let mut k = Kernel::boot();
    let lp = k.m.syscall;
    k.start_test("patch getpid syscall while being heavily hammered");
    let pids = k.start_getpid_hammer();
    let pid_list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    k.set_klp_pids(&pids);
    k.load_lp(lp, &format!(" klp_pids={pid_list}"));
    // Wait for all tasks to transition to the patched state (they call the new getpid).
    let mut tries = 0;
    while k.npids() != 0 {
        tries += 1;
        assert!(tries < 600, "tasks never reached the new getpid");
        k.run_user_space();
    }
    k.log(format!("{}: Remaining not livepatched processes: {}", lp.name(), k.npids()));
    k.stop_getpid_hammer();
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.check_result(
        SYSCALL_PATCH_GETPID_SYSCALL_WHILE_BEING_HEAVILY_HAMMERED,
        &[("MOD_SYSCALL", lp.name()), ("pid_list", &pid_list)],
    );
}
