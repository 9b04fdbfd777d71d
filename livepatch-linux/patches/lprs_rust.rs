// SPDX-License-Identifier: GPL-2.0

//! lprs_rust: a patch module written in Rust, with the `livepatch_rs_patch` crate
//! (`patch-api/`), for livepatch_rs.ko.
//!
//! It replaces vmlinux's `cmdline_proc_show()` (as the kernel's livepatch-sample.c does) and
//! logs its vmlinux object's callbacks. Load it after livepatch_rs.ko; the patch appears as
//! /sys/kernel/livepatch_rs/lprs_rust/; writing 0 to its `enabled` disables it, after which the
//! module can be removed.

use core::ffi::{c_int, c_void};
use kernel::bindings;
use kernel::prelude::*;
use livepatch_rs_patch::{modinfo_livepatch, Callbacks, Func, Object, Patch};

module! {
    type: LprsRust,
    name: "lprs_rust",
    author: "livepatch project",
    description: "A live patch written in Rust: replaces cmdline_proc_show",
    license: "GPL",
}

modinfo_livepatch!();

const MESSAGE: &[u8] = b"this has been live patched by a Rust patch module\n";

/// The new `cmdline_proc_show()`: `int cmdline_proc_show(struct seq_file *m, void *v)`.
///
/// # Safety
///
/// Called by the kernel in place of `cmdline_proc_show()`: `m` is a live seq_file.
unsafe extern "C" fn lprs_rust_cmdline_proc_show(m: *mut bindings::seq_file, _v: *mut c_void) -> c_int {
    // SAFETY: `m` is the seq_file the caller passed to cmdline_proc_show (function contract);
    // MESSAGE is `MESSAGE.len()` readable bytes. seq_write's overflow result is the seq_file's
    // business (it retries with a larger buffer), as for the original's seq_puts.
    unsafe { bindings::seq_write(m, MESSAGE.as_ptr().cast(), MESSAGE.len()) };
    0
}

extern "C" fn pre_patch(obj: &Object) -> c_int {
    pr_info!("pre_patch: {} function(s) of vmlinux ({})\n", obj.funcs().len(), obj.name().is_none());
    0
}

extern "C" fn post_unpatch(obj: &Object) {
    pr_info!("post_unpatch: {} function(s) of vmlinux\n", obj.funcs().len());
}

static FUNCS: [Func; 2] = [
    // SAFETY: lprs_rust_cmdline_proc_show is `extern "C"` with cmdline_proc_show's prototype
    // (int (*)(struct seq_file *, void *)) and, like it, only writes to the seq_file.
    unsafe { Func::new(c"cmdline_proc_show", lprs_rust_cmdline_proc_show as *const ()) },
    Func::END,
];

static OBJS: [Object; 2] = [
    Object::vmlinux(&FUNCS).callbacks(Callbacks {
        pre_patch: Some(pre_patch),
        post_unpatch: Some(post_unpatch),
        ..Callbacks::NONE
    }),
    Object::END,
];

static PATCH: Patch = Patch::new(&OBJS);

struct LprsRust;

impl kernel::Module for LprsRust {
    fn init(module: &'static ThisModule) -> Result<Self> {
        PATCH.enable(module)?;
        Ok(LprsRust)
    }
}
