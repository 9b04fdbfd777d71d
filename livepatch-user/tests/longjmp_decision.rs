//! A signal handler of the program's own that leaves a hook decision with `siglongjmp` (a
//! `SIGALRM` timeout, a `SIGSEGV` probe: the program sees only that the signal interrupted
//! its call of `f`). The decision never returns, so neither the trampoline's clearing of the
//! thread's in-hook flag nor the decision's end of its read-side section ever runs. The
//! thread goes on: calling `f` again (even jumps), or sleeping where the jump landed (odd
//! jumps: a thread blocked elsewhere, which makes no hooked call, while another patch is
//! applied and removed first); every later transition must still complete.
//!
//! Where inside the decision the signal lands is not forced (the handler sees only that the
//! trampoline's call of the decision is live), so the test repeats the jump, with an enable
//! and a disable each time, up to [`ATTEMPTS`] times; each transition must complete within
//! [`PATIENCE`] (they run on their own thread, so one that never returns fails the test too).

mod common;

use common::{cc, sym};
use livepatch_user::Runtime;
use std::ffi::{c_int, c_long, c_ulong, CString};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Jumps out of a decision, each with its enable and disable.
const ATTEMPTS: usize = 20;
/// How long a disable may take to complete.
const PATIENCE: Duration = Duration::from_secs(2);

/// The worker's base frame: its handler's scan of the interrupted stack ends there.
static BASE: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
/// The C loop's stop flag (an `atomic_int`).
static STOP_C: AtomicI32 = AtomicI32::new(0);

#[test]
fn a_thread_that_left_a_decision_by_siglongjmp_still_switches() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("longjmp_decision");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/longjmp_decision.c");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("longjmp_decision");
    let lib = dir.join("liblj.so");
    let (src, lib) = (src.to_str().unwrap(), lib.to_str().unwrap());
    cc(&["-O2", "-fPIC", "-shared", "-fno-omit-frame-pointer", src, "-o", lib]);
    let c = CString::new(lib).unwrap();
    // SAFETY: dlopen of the fixture just built.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW) };
    assert!(!h.is_null());
    let setup: extern "C" fn(c_ulong, c_ulong, c_ulong) = sym(h, "lj_setup");
    let arm: extern "C" fn() = sym(h, "lj_arm");
    let park: extern "C" fn(c_int) = sym(h, "lj_park");
    let jumps: extern "C" fn() -> c_long = sym(h, "lj_jumps");
    let handled: extern "C" fn() -> c_long = sym(h, "lj_handled");
    let run: extern "C" fn(extern "C" fn(c_int) -> c_int, *const AtomicI32) -> c_long = sym(h, "lj_run");
    let on_usr1: common::catch::InfoHandler = sym(h, "lj_on_usr1");
    common::catch::install(libc::SIGUSR1, on_usr1);

    let f = t.f;
    let (worker, tid) = common::catch::spawn_worker(&STOP, Some(&BASE), move |_| run(f, &STOP_C) as u64);

    for attempt in 1..=ATTEMPTS {
        let handle = rt.apply(&t.patches[0]).expect("apply v1");
        rt.wait(Duration::from_secs(10)).expect("the enable completes");
        if attempt == 1 {
            // The trampoline's address from the hook at f's entry (`movabs r11, imm64`), and
            // its call of the decision (`mov rdx, rbp; call rel32`).
            let t0 = common::catch::trampoline_of(f as usize);
            // SAFETY: the trampoline's code is mapped and readable.
            let code = unsafe { std::slice::from_raw_parts(t0 as *const u8, 256) };
            let at = code.windows(4).position(|w| w == [0x48, 0x89, 0xea, 0xe8]).expect("the call of the decision");
            setup((t0 + at + 3 + 5) as c_ulong, t0 as c_ulong, BASE.load(Ordering::Relaxed) as c_ulong);
        }
        // Signal the worker until its handler caught it inside a decision and jumped out.
        let before = jumps();
        park(c_int::from(attempt % 2 == 1));
        arm();
        let t0 = Instant::now();
        while jumps() == before {
            assert!(t0.elapsed() < Duration::from_secs(30), "never caught the worker in a decision");
            let h = handled();
            // SAFETY: `tgkill` takes integers only.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
            while handled() == h && jumps() == before {
                std::hint::spin_loop();
            }
        }
        // The transitions after the jump run on their own thread, so that one that never
        // returns fails the test too. A parked worker makes no hooked call: first another
        // patch is applied and removed (its enable's grace period comes before any kick).
        let (tx, rx) = mpsc::channel();
        let (bench, parked) = (t.bench_patch.clone(), attempt % 2 == 1);
        std::thread::spawn(move || {
            let transitions = || -> Result<(), String> {
                if parked {
                    let other = rt.apply(&bench).map_err(|e| format!("apply another patch: {e}"))?;
                    rt.wait(PATIENCE).map_err(|e| format!("its enable: {e}"))?;
                    rt.disable(other).map_err(|e| format!("disable it: {e}"))?;
                    rt.wait(PATIENCE).map_err(|e| format!("its disable: {e}"))?;
                }
                rt.disable(handle).map_err(|e| format!("disable: {e}"))?;
                rt.wait(PATIENCE).map_err(|e| format!("the disable: {e}"))?;
                Ok(())
            };
            tx.send(transitions())
        });
        let stalls = || rt.stalls().iter().map(|s| format!("{}: {}", s.tid, s.report)).collect::<Vec<_>>();
        match rx.recv_timeout(4 * PATIENCE) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!(
                "jump {attempt}: a transition did not complete ({e}) after the worker left a decision by \
                 siglongjmp; stalls: {:?}",
                stalls()
            ),
            Err(_) => panic!(
                "jump {attempt}: a transition never returned (a grace period waiting for the decision's \
                 read-side section, which the siglongjmp abandoned)"
            ),
        }
        park(0);
    }
    park(0);
    STOP_C.store(1, Ordering::Relaxed);
    STOP.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert_eq!((t.bad)(), 0, "a mixed chain (f * 16 + g = {:#x})", (t.bad_detail)());
}
