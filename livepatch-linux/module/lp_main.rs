// SPDX-License-Identifier: GPL-2.0

//! livepatch_rs: live patching driven by the livepatch-core consistency engine.
//!
//! The core (compiled into this module from `livepatch-core/src`, the same files cargo builds)
//! decides; this crate implements its backend traits over a thin C shim (`shim.c`): ftrace
//! hooks with IPMODIFY, the ORC unwinder, the task list, IPIs, task work and delayed work.
//! Built-in patches are declared in `patches.rs`; patch modules register theirs through
//! `lprs_enable_patch()` (`registry.rs`, `include/livepatch_rs.h`). Each gets
//! `/sys/kernel/livepatch_rs/<patch>/{enabled,transition,force,replace,stalls,stats}` and
//! `<object>/patched`, `<object>/<function,sympos>/`.

use kernel::prelude::*;

mod backend;
mod control;
mod patches;
mod registry;
// Shared with the host crate `livepatch-linux` (src/lib.rs), where it is unit-tested.
#[allow(unreachable_pub, dead_code)]
#[path = "../src/report.rs"]
mod report;
mod shim;
mod tasks;

module! {
    type: LivepatchRs,
    name: "livepatch_rs",
    author: "livepatch project",
    description: "Live patching driven by the livepatch-core consistency engine",
    license: "GPL",
}

struct LivepatchRs;

impl kernel::Module for LivepatchRs {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        control::init();
        // Each CPU's idle task is found through kallsyms: without it idle tasks could not be
        // tracked, and a transition could complete without them.
        // SAFETY: CPU 0 exists.
        if unsafe { shim::lp_shim_idle_task(0) }.is_null() {
            pr_err!("cannot find the idle tasks (idle_task() not resolvable)\n");
            return Err(kernel::error::code::ENOENT);
        }
        for idx in 0..patches::NPATCH {
            let rc = patches::add_dirs(idx);
            if rc != 0 {
                // SAFETY: process context.
                unsafe { shim::lp_shim_dir_remove_all() };
                return Err(kernel::error::Error::from_errno(rc));
            }
        }
        // SAFETY: process context; the engine is initialised.
        let rc = unsafe { shim::lp_shim_patch_state_file(true) };
        if rc != 0 {
            // SAFETY: process context.
            unsafe { shim::lp_shim_dir_remove_all() };
            return Err(kernel::error::Error::from_errno(rc));
        }
        // SAFETY: process context; the engine is initialised.
        let rc = unsafe { shim::lp_shim_module_notifier(true) };
        if rc != 0 {
            // SAFETY: process context.
            unsafe {
                shim::lp_shim_patch_state_file(false);
                shim::lp_shim_dir_remove_all();
            }
            return Err(kernel::error::Error::from_errno(rc));
        }
        pr_info!("loaded: {} patches\n", patches::DECLS.len());
        Ok(LivepatchRs)
    }
}

impl Drop for LivepatchRs {
    fn drop(&mut self) {
        // No patch is registered (each holds a module reference) and no task work is pending
        // (each holds one too). Remove the files, the fork hook and the retry work.
        // SAFETY: module exit, process context.
        unsafe {
            shim::lp_shim_module_notifier(false);
            shim::lp_shim_cancel_reap();
            shim::lp_shim_patch_state_file(false);
            shim::lp_shim_dir_remove_all();
            shim::lp_shim_resched_hook(false);
            shim::lp_shim_cancel_retry();
            shim::lp_shim_tasks_exit();
            shim::lp_shim_synchronize();
            shim::lp_shim_exit_barrier();
        }
        pr_info!("unloaded\n");
    }
}
