//! Linux v6.12's livepatch selftests (`tools/testing/selftests/livepatch/test-*.sh`), every
//! case ported: the engine runs on a small backend that plays the kernel around it (module
//! loader, sysfs writes, the test modules), the engine's events become the kernel's
//! `livepatch:` messages, and each case's `dmesg` must equal the script's expected output
//! line for line (`expected.rs`, copied verbatim; only the scripts' variables are mapped).

#![allow(unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;

mod expected;
mod harness;

mod callbacks;
mod ftrace;
mod livepatch;
mod shadow_vars;
mod state;
mod syscall;
mod sysfs;

/// The comparison itself: one changed line, a missing line or an extra line fails.
#[test]
fn check_result_compares_line_for_line() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let mut k = harness::Kernel::boot();
    let lp = k.m.livepatch;
    k.start_test("basic function patching");
    k.load_lp(lp, "");
    k.disable_lp(lp);
    k.unload_lp(lp);
    let vars = [("MOD_LIVEPATCH1", "test_klp_livepatch")];
    let good = expected::LIVEPATCH_BASIC_FUNCTION_PATCHING;
    k.check_result(good, &vars);
    let changed = good.replace("patching complete", "patching done");
    let missing = good.replacen("% rmmod $MOD_LIVEPATCH1", "", 1);
    let extra = format!("{good}\nlivepatch: one more");
    for bad in [changed.as_str(), missing.trim_end(), extra.as_str()] {
        assert!(catch_unwind(AssertUnwindSafe(|| k.check_result(bad, &vars))).is_err(), "{bad}");
    }
}
