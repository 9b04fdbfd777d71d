//! `test-livepatch.sh`: function patching, stacked patches, atomic replace.

use crate::expected::*;
use crate::harness::{Kernel, CMDLINE_PROC_SHOW, MEMINFO_PROC_SHOW};

fn vars(k: &Kernel) -> [(&'static str, &'static str); 4] {
    [
        ("MOD_LIVEPATCH1", k.m.livepatch.name()),
        ("MOD_LIVEPATCH2", k.m.syscall.name()),
        ("MOD_LIVEPATCH3", k.m.demo.name()),
        ("MOD_REPLACE", k.m.atomic_replace.name()),
    ]
}

fn grep_both(k: &Kernel) {
    k.grep_live_patched(CMDLINE_PROC_SHOW);
    k.grep_live_patched(MEMINFO_PROC_SHOW);
}

#[test]
fn basic_function_patching() {
    let mut k = Kernel::boot();
    let lp = k.m.livepatch;
    k.start_test("basic function patching");
    k.load_lp(lp, "");
    assert_eq!(k.call(1, CMDLINE_PROC_SHOW), crate::harness::LIVEPATCH_CMDLINE_PROC_SHOW);
    k.disable_lp(lp);
    k.unload_lp(lp);
    assert_eq!(k.call(1, CMDLINE_PROC_SHOW), CMDLINE_PROC_SHOW);
    k.check_result(LIVEPATCH_BASIC_FUNCTION_PATCHING, &vars(&k));
}

#[test]
fn multiple_livepatches() {
    let mut k = Kernel::boot();
    let (lp1, replace) = (k.m.livepatch, k.m.atomic_replace);
    k.start_test("multiple livepatches");
    k.load_lp(lp1, "");
    grep_both(&k);
    k.load_lp(replace, " replace=0");
    grep_both(&k);
    k.disable_lp(replace);
    k.unload_lp(replace);
    grep_both(&k);
    k.disable_lp(lp1);
    k.unload_lp(lp1);
    grep_both(&k);
    k.check_result(LIVEPATCH_MULTIPLE_LIVEPATCHES, &vars(&k));
}

#[test]
fn atomic_replace_livepatch() {
    let mut k = Kernel::boot();
    let (lp1, lp2, lp3, replace) = (k.m.livepatch, k.m.syscall, k.m.demo, k.m.atomic_replace_1);
    k.start_test("atomic replace livepatch");
    k.load_lp(lp1, "");
    grep_both(&k);
    for lp in [lp2, lp3] {
        k.load_lp(lp, "");
    }
    assert_eq!(k.engine.patches().count(), 3, "Expecting three modules listed");
    k.load_lp(replace, " replace=1");
    grep_both(&k);
    assert_eq!(k.engine.patches().count(), 1, "Expecting only one module listed");
    // These modules were disabled by the atomic replace.
    for lp in [lp3, lp2, lp1] {
        k.unload_lp(lp);
    }
    grep_both(&k);
    k.disable_lp(replace);
    k.unload_lp(replace);
    grep_both(&k);
    k.check_result(LIVEPATCH_ATOMIC_REPLACE_LIVEPATCH, &vars(&k));
}
