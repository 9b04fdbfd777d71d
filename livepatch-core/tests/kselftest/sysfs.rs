//! `test-sysfs.sh`. The log of each case is checked here; the values the script reads from
//! `/sys/kernel/livepatch/<patch>/{enabled,transition,replace,<object>/patched}` are checked
//! against the engine state they are made of. The files' access rights are kernel interface
//! only: checked in the VM (livepatch-linux).

use crate::expected::*;
use crate::harness::{Kernel, Livepatch, Target, CALLBACKS_MOD};
use livepatch_core::ObjectId;

/// `check_sysfs_value "$MOD" "<object>/patched"`.
fn patched(lp: Livepatch, object: ObjectId) -> bool {
    lp.patch.objects().iter().find(|o| o.id() == object).unwrap().is_patched()
}

#[test]
fn sysfs_test() {
    let mut k = Kernel::boot();
    let lp = k.m.livepatch;
    k.start_test("sysfs test");
    k.load_lp(lp, "");
    assert!(lp.patch.is_enabled(), "enabled = 1");
    assert!(!k.in_transition(lp), "transition = 0");
    assert!(patched(lp, ObjectId::VMLINUX), "vmlinux/patched = 1");
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.check_result(SYSFS_SYSFS_TEST, &[("MOD_LIVEPATCH", lp.name())]);
}

#[test]
fn sysfs_test_object_patched() {
    let mut k = Kernel::boot();
    let lp = k.m.demo;
    k.start_test("sysfs test object/patched");
    k.load_lp(lp, "");
    // The "patched" file changes as the target module loads and unloads.
    assert!(!patched(lp, CALLBACKS_MOD));
    k.load_mod(Target::CallbacksMod);
    assert!(patched(lp, CALLBACKS_MOD));
    k.unload_mod(Target::CallbacksMod);
    assert!(!patched(lp, CALLBACKS_MOD));
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.check_result(SYSFS_SYSFS_TEST_OBJECT_PATCHED, &[]);
}

#[test]
fn sysfs_test_replace_enabled() {
    let mut k = Kernel::boot();
    let lp = k.m.atomic_replace_1;
    k.start_test("sysfs test replace enabled");
    k.load_lp(lp, " replace=1");
    assert!(lp.patch.is_replace(), "replace = 1");
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.check_result(SYSFS_SYSFS_TEST_REPLACE_ENABLED, &[("MOD_LIVEPATCH", lp.name())]);
}

#[test]
fn sysfs_test_replace_disabled() {
    let mut k = Kernel::boot();
    let lp = k.m.atomic_replace;
    k.start_test("sysfs test replace disabled");
    k.load_lp(lp, " replace=0");
    assert!(!lp.patch.is_replace(), "replace = 0");
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.check_result(SYSFS_SYSFS_TEST_REPLACE_DISABLED, &[("MOD_LIVEPATCH", lp.name())]);
}
