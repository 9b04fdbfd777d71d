//! A registered thread blocked in libc is checked by its kick handler with the conservative
//! scan (the frame-pointer chain breaks in libc): every word of its live stack that points
//! into trusted code is taken for a return address. A word that points into a patched
//! function's body but follows no call instruction is no return address: here `f + 16`, f's
//! first instruction after its entry padding, kept in a live local of a thread that then
//! sleeps (what a profiler's sample, an unwinder's cursor or an iterator over f's bytes
//! holds: `tests/prebegin.rs`'s own thread was held back by a slice's end pointer at
//! `sr_enter + 16`). Such a thread must still switch, while a thread that really is inside
//! f → g (the target's holder, napping in g) still holds the enable back until it left.
//!
//! The holder leaves f and g and ends (the target's stop): napping on in its own loop it
//! would hold the switch back by itself, with genuine return addresses into g left in slots
//! its later frames reserve and never write (README, "Not supported": stale return addresses).

mod common;

use livepatch_user::Runtime;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

#[test]
fn a_code_address_no_call_precedes_does_not_hold_a_switch_back() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("stale_word");
    let base = 0usize;
    // SAFETY: a root thread, before any patch; `base` is above every frame used later.
    let r = unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
    assert_eq!(r, 0);
    // Sets the target's API (its root thread registers and ends: no workers).
    assert_eq!((t.start)(&common::API, 0, 0, 0, 0), 0);
    std::thread::sleep(Duration::from_millis(50));

    let f = t.f as usize;
    let (worker, tid) = common::catch::spawn_worker(&STOP, None, move |_| {
        // f's first instruction after the padding: inside f, but no call precedes it.
        let word = black_box([f + 16]);
        while !STOP.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
        black_box(&word);
        0
    });
    assert_eq!((t.start_holder)(), 0, "a thread held inside f -> g");

    let stalls = || rt.stalls().iter().map(|s| format!("{}: {}", s.tid, s.report)).collect::<Vec<_>>();
    let handle = rt.apply(&t.patches[0]).expect("apply v1");
    // The holder really is inside f and g: the enable waits for it.
    assert!(rt.wait(Duration::from_millis(300)).is_err(), "the enable completed with a thread inside f -> g");
    // The holder leaves f -> g and ends (and the target's root thread is joined).
    (t.stop)();
    if let Err(e) = rt.wait(Duration::from_secs(3)) {
        panic!(
            "the enable did not complete ({e}) once the holder left f -> g and ended; stalls (worker {tid}): {:?}",
            stalls()
        );
    }
    rt.disable(handle).expect("disable");
    rt.wait(Duration::from_secs(5)).expect("the disable completes");
    STOP.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    livepatch_user::livepatch_thread_end();
    black_box(&base);
    assert_eq!((t.bad)(), 0, "a mixed chain (f * 16 + g = {:#x})", (t.bad_detail)());
}
