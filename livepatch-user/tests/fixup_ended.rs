//! A thread that ends its registration while a fix-up signal is pending for it, and lives on
//! (a main thread that unregisters and then joins its workers, a pool thread between tasks):
//! the first hook of a fresh entry must not wait for that thread's acknowledgement for as
//! long as it lives. Its handler finds no registry entry; the writer sees the entry marked
//! exiting.
//!
//! The interleaving is forced: the thread blocks the fix-up signal, waits until the writer's
//! signal is pending, ends its registration, then unblocks it (the handler runs unregistered),
//! and then stays alive for [`LINGER`].

mod common;

use common::sym;
use livepatch_user::Runtime;
use std::ffi::c_int;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the unregistered thread lives on after its handler ran.
const LINGER: Duration = Duration::from_secs(6);

fn fixup_signal() -> c_int {
    libc::SIGRTMIN() + 3
}

fn sigset_of(sig: c_int) -> libc::sigset_t {
    // SAFETY: a zeroed sigset is valid storage for `sigemptyset`, which initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
    }
    set
}

fn pending(sig: c_int) -> bool {
    // SAFETY: as in `sigset_of`.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable; `sigismember` reads it.
    unsafe { libc::sigpending(&mut set) == 0 && libc::sigismember(&set, sig) == 1 }
}

#[test]
fn a_fixup_round_does_not_wait_for_a_thread_that_ended_its_registration() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let many = common::many::Many::load("fixup_ended");
    let patch = many.patch(Some(30));
    let h30: extern "C" fn(c_int) -> c_int = sym(many.handle, "h30");

    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let lingerer = std::thread::spawn(move || {
        let base = 0usize;
        // SAFETY: a root thread (no token); `base` is on this thread's stack above every frame
        // it uses later.
        let r =
            unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
        assert_eq!(r, 0, "a root thread begins before any patch");
        let set = sigset_of(fixup_signal());
        // SAFETY: `set` is a valid sigset; the old mask is not requested.
        assert_eq!(unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) }, 0);
        ready_tx.send(()).unwrap();
        let t0 = Instant::now();
        while !pending(fixup_signal()) {
            assert!(t0.elapsed() < Duration::from_secs(20), "no fix-up signal came");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The writer waits for this thread's acknowledgement now.
        livepatch_user::livepatch_thread_end();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) }, 0);
        // The handler has run, unregistered. The thread lives on.
        std::thread::sleep(LINGER);
        std::hint::black_box(&base);
    });
    ready_rx.recv().unwrap();

    let (done_tx, done_rx) = mpsc::channel();
    let applier = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = rt.apply(&patch).map(|h| (h, rt.wait(Duration::from_secs(10)).is_ok()));
        done_tx.send((r.map_err(|e| e.to_string()), t0.elapsed())).unwrap();
    });
    let Ok((result, took)) = done_rx.recv_timeout(Duration::from_secs(3)) else {
        // Let the thread exit (the writer's `tgkill(tid, 0)` then fails) for a clean report.
        lingerer.join().unwrap();
        let late = done_rx.recv().unwrap();
        panic!(
            "the first hook of h30 did not return within 3 s: its fix-up round waited for a thread \
             that had ended its registration, until that thread exited ({:?} after the start; {:?})",
            late.1, late.0
        );
    };
    let (handle, completed) = result.expect("apply");
    assert!(completed, "the enable completes");
    assert_eq!(h30(1), 31, "the variant computes the same");
    eprintln!("apply took {took:?}");
    applier.join().unwrap();
    rt.disable(handle).expect("disable");
    rt.wait(Duration::from_secs(10)).expect("disable completes");
    lingerer.join().unwrap();
}
