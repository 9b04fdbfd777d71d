//! `test-callbacks.sh`: callbacks around enable and disable, the module notifier paths, a
//! failing `pre_patch`, a busy target module, several livepatches and atomic replace.

use crate::expected::*;
use crate::harness::{Kernel, Target};

const MOD_TARGET: Target = Target::CallbacksMod;

fn vars(k: &Kernel) -> [(&'static str, &'static str); 4] {
    [
        ("MOD_LIVEPATCH", k.m.demo.name()),
        ("MOD_LIVEPATCH2", k.m.demo2.name()),
        ("MOD_TARGET", "test_klp_callbacks_mod"),
        ("MOD_TARGET_BUSY", "test_klp_callbacks_busy"),
    ]
}

#[test]
fn target_module_before_livepatch() {
    let mut k = Kernel::boot();
    let lp = k.m.demo;
    k.start_test("target module before livepatch");
    k.load_mod(MOD_TARGET);
    k.load_lp(lp, "");
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.unload_mod(MOD_TARGET);
    k.check_result(CALLBACKS_TARGET_MODULE_BEFORE_LIVEPATCH, &vars(&k));
}

#[test]
fn module_coming_notifier() {
    let mut k = Kernel::boot();
    let lp = k.m.demo;
    k.start_test("module_coming notifier");
    k.load_lp(lp, "");
    k.load_mod(MOD_TARGET);
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.unload_mod(MOD_TARGET);
    k.check_result(CALLBACKS_MODULE_COMING_NOTIFIER, &vars(&k));
}

#[test]
fn module_going_notifier() {
    let mut k = Kernel::boot();
    let lp = k.m.demo;
    k.start_test("module_going notifier");
    k.load_mod(MOD_TARGET);
    k.load_lp(lp, "");
    k.unload_mod(MOD_TARGET);
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.check_result(CALLBACKS_MODULE_GOING_NOTIFIER, &vars(&k));
}

#[test]
fn module_coming_and_module_going_notifiers() {
    let mut k = Kernel::boot();
    let lp = k.m.demo;
    k.start_test("module_coming and module_going notifiers");
    k.load_lp(lp, "");
    k.load_mod(MOD_TARGET);
    k.unload_mod(MOD_TARGET);
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.check_result(CALLBACKS_MODULE_COMING_AND_MODULE_GOING_NOTIFIERS, &vars(&k));
}

#[test]
fn target_module_not_present() {
    let mut k = Kernel::boot();
    let lp = k.m.demo;
    k.start_test("target module not present");
    k.load_lp(lp, "");
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.check_result(CALLBACKS_TARGET_MODULE_NOT_PRESENT, &vars(&k));
}

#[test]
fn pre_patch_callback_enodev() {
    let mut k = Kernel::boot();
    let lp = k.m.demo;
    k.start_test("pre-patch callback -ENODEV");
    k.load_mod(MOD_TARGET);
    lp.demo.unwrap().pre_patch_ret.store(-19, std::sync::atomic::Ordering::Relaxed); // insmod … pre_patch_ret=-19
    k.load_failing_lp(lp, " pre_patch_ret=-19");
    k.unload_mod(MOD_TARGET);
    k.check_result(CALLBACKS_PRE_PATCH_CALLBACK_ENODEV, &vars(&k));
}

#[test]
fn module_coming_pre_patch_callback_enodev() {
    let mut k = Kernel::boot();
    let lp = k.m.demo;
    k.start_test("module_coming + pre-patch callback -ENODEV");
    k.load_lp(lp, "");
    k.set_pre_patch_ret(lp, -19);
    k.load_mod(MOD_TARGET); // load_failing_mod: refused by the notifier
    assert!(k.b.unloaded.borrow().contains(&1), "the module was refused");
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.check_result(CALLBACKS_MODULE_COMING_PRE_PATCH_CALLBACK_ENODEV, &vars(&k));
}

#[test]
fn multiple_target_modules() {
    let mut k = Kernel::boot();
    let lp = k.m.demo;
    let busy = Target::CallbacksBusy { block: false };
    k.start_test("multiple target modules");
    k.load_mod(busy);
    k.load_lp(lp, "");
    k.load_mod(MOD_TARGET);
    k.unload_mod(MOD_TARGET);
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.unload_mod(busy);
    k.check_result(CALLBACKS_MULTIPLE_TARGET_MODULES, &vars(&k));
}

/// Not covered by any engine test before: a target module loaded and unloaded while a
/// transition is stalled by a busy target module, then the stalled enable reversed.
#[test]
fn busy_target_module() {
    let mut k = Kernel::boot();
    let lp = k.m.demo;
    let busy = Target::CallbacksBusy { block: true };
    k.start_test("busy target module");
    k.load_mod(busy);
    k.load_lp_nowait(lp, "");
    // Wait until the livepatch reports in-transition state, stalled on busymod_work_func().
    assert!(k.in_transition(lp), "failed to stall transition");
    let mut stall = Vec::new();
    assert!(!k.engine.try_complete(k.b, |s| stall.push(s.to_string())).unwrap().is_complete());
    assert!(stall[0].contains("busymod_work_func (test_klp_callbacks_busy"), "{stall:?}");
    k.load_mod(MOD_TARGET);
    k.unload_mod(MOD_TARGET);
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.unload_mod(busy);
    k.check_result(CALLBACKS_BUSY_TARGET_MODULE, &vars(&k));
}

/// The same case under the improved policy: identical but for one line, because that policy
/// kicks stragglers from a stalled transition's second pass (the kernel: every 15th).
#[test]
fn busy_target_module_under_the_improved_policy() {
    let mut k = Kernel::boot_with(livepatch_core::Policy::IMPROVED);
    let lp = k.m.demo;
    let busy = Target::CallbacksBusy { block: true };
    k.start_test("busy target module");
    k.load_mod(busy);
    k.load_lp_nowait(lp, "");
    assert!(!k.engine.try_complete(k.b, |_| {}).unwrap().is_complete());
    k.load_mod(MOD_TARGET);
    k.unload_mod(MOD_TARGET);
    k.disable_lp(lp);
    k.unload_lp(lp);
    k.unload_mod(busy);
    let expected = CALLBACKS_BUSY_TARGET_MODULE.replacen(
        "% insmod test_modules/$MOD_TARGET.ko",
        "livepatch: signaling remaining tasks\n% insmod test_modules/$MOD_TARGET.ko",
        1,
    );
    k.check_result(&expected, &vars(&k));
}

/// Not covered before: callbacks-only patches (`test_klp_callbacks_demo2` replaces no
/// function) stacked on another patch.
#[test]
fn multiple_livepatches() {
    let mut k = Kernel::boot();
    let (lp, lp2) = (k.m.demo, k.m.demo2);
    k.start_test("multiple livepatches");
    k.load_lp(lp, "");
    k.load_lp(lp2, "");
    k.disable_lp(lp2);
    k.disable_lp(lp);
    k.unload_lp(lp2);
    k.unload_lp(lp);
    k.check_result(CALLBACKS_MULTIPLE_LIVEPATCHES, &vars(&k));
}

/// Not covered before: the replaced patch's callbacks stay silent; only the cumulative
/// patch's run.
#[test]
fn atomic_replace() {
    let mut k = Kernel::boot();
    let (lp, lp2) = (k.m.demo, k.m.demo2_1);
    k.start_test("atomic replace");
    k.load_lp(lp, "");
    k.load_lp(lp2, " replace=1");
    assert!(!lp.patch.is_registered(), "replaced");
    k.disable_lp(lp2);
    k.unload_lp(lp2);
    k.unload_lp(lp);
    k.check_result(CALLBACKS_ATOMIC_REPLACE, &vars(&k));
}
