//! `test-ftrace.sh`: with ftrace disabled, hooking the patched function fails and the enable
//! is cancelled with the kernel's messages; while a livepatch is enabled, ftrace cannot be
//! disabled. The harness's tracer plays ftrace: `kernel.ftrace_enabled = 0` makes its
//! `install` fail (`-EBUSY`), and the sysctl is refused while any hook is installed.

use crate::expected::*;
use crate::harness::{Kernel, CMDLINE_PROC_SHOW, LIVEPATCH_CMDLINE_PROC_SHOW};

#[test]
fn livepatch_interaction_with_ftrace_enabled_sysctl() {
    let mut k = Kernel::boot();
    let lp = k.m.livepatch;
    k.start_test("livepatch interaction with ftrace_enabled sysctl");
    k.set_ftrace_enabled(false);
    k.load_failing_lp(lp, "");
    assert!(k.b.hooked().is_empty() && k.live.patched_set().is_empty(), "nothing left behind");

    k.set_ftrace_enabled(true);
    k.load_lp(lp, "");
    assert_eq!(k.call(1, CMDLINE_PROC_SHOW), LIVEPATCH_CMDLINE_PROC_SHOW);
    // ftrace could not be disabled while a livepatch is enabled.
    k.set_ftrace_enabled(false);
    assert_eq!(k.call(1, CMDLINE_PROC_SHOW), LIVEPATCH_CMDLINE_PROC_SHOW);
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.check_result(FTRACE_LIVEPATCH_INTERACTION_WITH_FTRACE_ENABLED_SYSCTL, &[("MOD_LIVEPATCH", lp.name())]);
}
