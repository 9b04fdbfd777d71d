//! A patched thread start routine. A prepared child enters its start routine before it
//! registers, so its hook finds no thread and runs the original; the child then registers
//! with the universe it inherited. If that universe runs the patch's variants (the patch is
//! enabled, or the child switches at once at its start while an enable is in progress), the
//! original start routine goes on to call the variant of `sr_g`: an old function and a new
//! one of the same patch in one chain.
//!
//! Two children, deterministically: one started while the patch's enable is in progress (its
//! parent pending: the child inherits the pending word and its start could switch it), one
//! after the enable completed.

mod common;

use common::parts::Parts;
use common::sym;
use livepatch_user::Runtime;
use std::ffi::{c_int, c_long};
use std::time::Duration;

#[test]
fn a_child_running_the_original_start_routine_never_runs_a_variant_of_the_same_patch() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let parts = Parts::new("start_routine");
    let h = parts.load_lib("libsr.so");
    let patch = parts.build("PATCH", "libsr_patch.so", &[]);
    let spawn: extern "C" fn(*const common::Api) -> c_int = sym(h, "sr_spawn");
    let bad: extern "C" fn() -> c_long = sym(h, "sr_bad");
    let runs: extern "C" fn() -> c_long = sym(h, "sr_runs");
    let unregistered: extern "C" fn() -> c_long = sym(h, "sr_unregistered_runs");
    assert!(livepatch_user::patch_so::trust_object_containing(spawn as usize));

    let base = 0usize;
    // SAFETY: a root thread, before any patch; `base` is above every frame used later.
    let r = unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
    assert_eq!(r, 0);
    let handle = rt.apply(&patch).expect("apply");
    // The enable is in progress (no completion attempt yet): this thread is pending.
    assert!(rt.transition().is_some());
    assert_eq!(spawn(&common::API), 0, "a child during the enable");
    let during = bad();
    rt.wait(Duration::from_secs(10)).expect("the enable completes");
    assert_eq!(spawn(&common::API), 0, "a child after the enable");
    let after = bad() - during;
    eprintln!("runs {}, unregistered {}, mixed during {during}, after {after}", runs(), unregistered());
    rt.disable(handle).expect("disable");
    rt.wait(Duration::from_secs(10)).expect("the disable completes");
    livepatch_user::livepatch_thread_end();
    std::hint::black_box(&base);
    assert_eq!(runs(), 2);
    assert_eq!(
        (during, after),
        (0, 0),
        "a child ran the original sr_start (its hook ran before it registered) and then the \
         variant of sr_g (mixed chains started during the enable, after it)"
    );
}
