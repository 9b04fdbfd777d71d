// SPDX-License-Identifier: GPL-2.0

//! lprs_rust: a patch module written in Rust, with the `livepatch_rs_patch` crate
//! (`patch-api/`), for livepatch_rs.ko.
//!
//! It replaces vmlinux's `cmdline_proc_show()` (as the kernel's livepatch-sample.c does) and
//! lp_late.ko's static `lp_late_value()` (a module object: patched whenever lp_late is loaded,
//! also after the patch), and logs its objects' callbacks. Load it after livepatch_rs.ko; the patch
//! appears as /sys/kernel/livepatch_rs/lprs_rust/; writing 0 to its `enabled` disables it, after
//! which the module can be removed.

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

/// The new `lp_late_value()`: `static int lp_late_value(void)` (the original returns 1).
extern "C" fn lprs_rust_late_value() -> c_int {
    4
}

/// The object's name as the log shows it.
fn object_name(obj: &Object) -> &str {
    obj.name().map_or("vmlinux", |n| n.to_str().unwrap_or("?"))
}

extern "C" fn pre_patch(obj: &Object) -> c_int {
    pr_info!("pre_patch: {} function(s) of {}\n", obj.funcs().len(), object_name(obj));
    0
}

extern "C" fn post_patch(obj: &Object) {
    let loaded = !obj.loaded_module().is_null();
    pr_info!("post_patch: {} (module pointer set: {})\n", object_name(obj), loaded);
}

extern "C" fn post_unpatch(obj: &Object) {
    pr_info!("post_unpatch: {} function(s) of {}\n", obj.funcs().len(), object_name(obj));
}

const CALLBACKS: Callbacks = Callbacks {
    pre_patch: Some(pre_patch),
    post_patch: Some(post_patch),
    post_unpatch: Some(post_unpatch),
    ..Callbacks::NONE
};

static FUNCS: [Func; 2] = [
    // SAFETY: lprs_rust_cmdline_proc_show is `extern "C"` with cmdline_proc_show's prototype
    // (int (*)(struct seq_file *, void *)) and, like it, only writes to the seq_file.
    unsafe { Func::new(c"cmdline_proc_show", lprs_rust_cmdline_proc_show as *const ()) },
    Func::END,
];

static LATE_FUNCS: [Func; 2] = [
    // SAFETY: lprs_rust_late_value is `extern "C"` with lp_late_value's prototype
    // (int (*)(void)) and has no side effect; sympos 1: the first (and only) symbol of that
    // name in lp_late.
    unsafe { Func::new(c"lp_late_value", lprs_rust_late_value as *const ()) }.sympos(1),
    Func::END,
];

static OBJS: [Object; 3] = [
    Object::vmlinux(&FUNCS).callbacks(CALLBACKS),
    Object::module(c"lp_late", &LATE_FUNCS).callbacks(CALLBACKS),
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
