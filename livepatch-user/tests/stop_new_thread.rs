//! Stop-the-world: a thread created while every other thread is stopped does not escape the
//! stop. Its entry was prepared before the stop (the runtime's fork rule: the child inherits
//! its parent's word and is in the registry), and its start routine reaches
//! `livepatch_thread_begin` while the controller holds every registered thread parked. The
//! documented rule (`src/stop.rs`, README "Stop-the-world"): a thread cannot begin during a
//! stop; it waits in `begin` until the stop is over and then runs in the universe the stop
//! left it in — here the patched one, since the stop switched every thread, the not yet
//! started child included.
//!
//! The stop is made long on purpose: thread B blocks the stop signal, so the controller waits
//! for it; B sees the signal pending (the stop is under way), lets the child start, waits until
//! the child has been created, and unblocks the signal 200 ms later (then it parks, and the
//! stop completes). B waiting for the child, not a fixed time, keeps the stop open however
//! late a loaded machine schedules the spawner.

mod common;

use livepatch_core::Policy;
use livepatch_user::{stop, threads, Runtime};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn stop_signal_pending() -> bool {
    // SAFETY: `set` is valid output storage for `sigpending`; `sigismember` reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set) == 0 && libc::sigismember(&set, libc::SIGRTMIN() + 4) == 1
    }
}

fn block_stop_signal(block: bool) {
    // SAFETY: a signal set built in place, passed to `pthread_sigmask` for this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGRTMIN() + 4);
        let how = if block { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
        assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
    }
}

/// Zeroes the stack below the caller's frame: the stop walks this (controlling) thread's
/// stack by the conservative scan, and a stale word pointing into f left in a slot that a
/// later frame reserves but never writes (by loading the target, applying the patch) would
/// fail the stop. Which slots hold such words depends on the code's layout.
#[inline(never)]
fn scrub_stack() {
    std::hint::black_box(&mut [0u8; 256 * 1024]);
}

#[test]
fn a_thread_created_during_a_stop_waits_and_runs_in_the_stops_universe() {
    let policy = Policy { retry_delay_ns: 1_000_000, stop_attempts: 50, ..Policy::STOP_THE_WORLD };
    let rt = Runtime::init(policy).expect("init with the stop-the-world model");
    let t = Arc::new(common::load("stop_new_thread"));
    let base = 0usize;
    // SAFETY: no token; `base` is a stack address above every frame this test uses later.
    let r = unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
    assert_eq!(r, 0);

    // B: registered, the stop signal blocked until it has seen a stop begin.
    let token_b = threads::prepare_child().expect("prepare B");
    let stop_seen = Arc::new(AtomicBool::new(false));
    let quit = Arc::new(AtomicBool::new(false));
    let b_began = Arc::new(AtomicBool::new(false));
    let c_created = Arc::new(AtomicBool::new(false));
    let b = {
        let (stop_seen, quit, b_began, c_created) =
            (stop_seen.clone(), quit.clone(), b_began.clone(), c_created.clone());
        std::thread::spawn(move || {
            block_stop_signal(true);
            let base = 0usize;
            Runtime::get().unwrap().thread_begin(Some(token_b), &base as *const usize as usize).expect("B begins");
            b_began.store(true, Ordering::SeqCst);
            let t0 = Instant::now();
            while !stop_signal_pending() {
                assert!(t0.elapsed() < Duration::from_secs(20), "no stop came");
                std::thread::sleep(Duration::from_micros(200));
            }
            stop_seen.store(true, Ordering::SeqCst);
            let t0 = Instant::now();
            while !c_created.load(Ordering::SeqCst) {
                assert!(t0.elapsed() < Duration::from_secs(20), "C was never created");
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(Duration::from_millis(200));
            block_stop_signal(false); // the pending signal is handled here: B parks
            while !quit.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            livepatch_user::livepatch_thread_end();
        })
    };

    while !b_began.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // C's entry: prepared now (inherits this thread's word, joins the registry, not started).
    let token_c = threads::prepare_child().expect("prepare C");
    let p1 = t.patches[0].clone();
    rt.apply(&p1).expect("apply");
    assert!(rt.transition().is_some(), "the enable is in progress");

    // The spawner starts C as soon as B has seen the stop begin.
    const CALLS: i32 = 50;
    let began_during_stop = Arc::new(AtomicI32::new(-1));
    let spawner = {
        let (stop_seen, began_during_stop, t, c_created) =
            (stop_seen.clone(), began_during_stop.clone(), t.clone(), c_created.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !stop_seen.load(Ordering::SeqCst) {
                assert!(t0.elapsed() < Duration::from_secs(20), "B never saw a stop");
                std::thread::sleep(Duration::from_micros(100));
            }
            assert!(stop::in_progress(), "the stop is under way when C is created");
            let c = std::thread::spawn(move || {
                let base = 0usize;
                Runtime::get().unwrap().thread_begin(Some(token_c), &base as *const usize as usize).expect("C begins");
                began_during_stop.store(stop::in_progress() as i32, Ordering::SeqCst);
                for i in 0..CALLS {
                    (t.f)(i);
                }
                livepatch_user::livepatch_thread_end();
            });
            c_created.store(true, Ordering::SeqCst);
            c.join().expect("C");
        })
    };

    scrub_stack();
    let first = rt.step().expect("one stop attempt");
    spawner.join().expect("spawner");
    assert_eq!(
        began_during_stop.load(Ordering::SeqCst),
        0,
        "C's livepatch_thread_begin returned while the stop was in progress: it escaped the stop"
    );
    assert!(
        first.is_some_and(|p| p.is_complete()),
        "the stop (B parked after 200 ms) switched every thread: {first:?}, {:?}",
        rt.stalls()
    );
    // Only C calls f: each call is two g calls of one version.
    assert_eq!(common::calls_of(&t, 0), 0, "C ran the original f -> g");
    assert_eq!(common::calls_of(&t, 1), 2 * i64::from(CALLS), "C ran the patched f -> g in every call");
    assert_eq!((t.bad)(), 0, "no chain mixed versions");
    quit.store(true, Ordering::SeqCst);
    b.join().expect("B");
    livepatch_user::livepatch_thread_end();
}
