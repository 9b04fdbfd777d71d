//! A registered thread whose stack holds function pointers to patched functions (not
//! return addresses) still switches: the conservative scan must not take a pointer to a
//! function's entry for a frame in it. This thread is registered as a root thread, calls
//! the target through pointers kept on its stack, and drives the transitions itself (its
//! switch comes from the kick it sends itself).

mod common;

use livepatch_user::Runtime;
use std::hint::black_box;
use std::time::Duration;

#[test]
fn a_root_thread_holding_function_pointers_switches() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("root");
    let base = 0usize;
    // SAFETY: no token; `base` is a stack address above every frame this test uses later.
    let r = unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
    assert_eq!(r, 0);
    let pointers = black_box([t.f, t.hooked]);
    assert_eq!((t.loop_)(pointers[1], 10), 55);
    for _ in 0..3 {
        let h = rt.apply(&t.bench_patch).expect("apply");
        if let Err(e) = rt.wait(Duration::from_secs(5)) {
            panic!("enable: {e}; stalls {:?}", rt.stalls());
        }
        assert_eq!((t.loop_)(pointers[1], 10), 55, "the variant computes the same");
        rt.disable(h).expect("disable");
        rt.wait(Duration::from_secs(5)).expect("disable completes");
    }
    black_box(&pointers);
    assert_eq!(rt.stats().unregistered_calls, 0, "this thread's calls went through its universe");
}
