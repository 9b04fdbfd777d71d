//! A child prepared with `threads::prepare_child` joins the registry at once (it inherits its
//! parent's universe), and leaves it when it ends. If its thread is never created — the
//! parent's `pthread_create` failed — the token is dropped unused: the entry must leave the
//! registry then too. Left there it would be a task no walk can read and no kick can reach
//! (it has no thread), pending in every transition, none of which could then complete.

mod common;

use livepatch_user::{threads, Runtime};
use std::time::Duration;

#[test]
fn a_child_token_dropped_unused_does_not_hold_up_transitions() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("root");
    let base = 0usize;
    // SAFETY: no token; `base` is a stack address above every frame this test uses later.
    let r = unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
    assert_eq!(r, 0);
    // The parent prepares two children; their threads are never created.
    drop(threads::prepare_child().expect("the caller is registered"));
    // SAFETY: the result of `livepatch_thread_prepare`, not consumed before.
    unsafe { livepatch_user::livepatch_thread_discard(livepatch_user::livepatch_thread_prepare()) };
    let h = rt.apply(&t.bench_patch).expect("apply");
    if let Err(e) = rt.wait(Duration::from_secs(5)) {
        panic!("enable: {e}; stalls {:?}", rt.stalls());
    }
    rt.disable(h).expect("disable");
    rt.wait(Duration::from_secs(5)).expect("disable completes");
    threads::end();
}
