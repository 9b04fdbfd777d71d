//! `tests/nested_decision.rs` one step earlier: the signal handler of the program's own
//! interrupts its thread *inside* the hook decision (`hook_decide`, called by the
//! trampoline: the trampoline's return address from that call is live on the stack), and
//! calls a hooked function once a disable has started. If the outer decision had already
//! read the thread's word when the signal came, a switch by the nested call leaves it to
//! jump to the variant in the other universe.
//!
//! Where inside the decision the signal lands is not forced (the handler sees only that the
//! call from the trampoline is live), so the test repeats the catch, with an enable and a
//! disable each time, [`ATTEMPTS`] times; the target's `g` counts a chain whose f and g
//! versions differ.

mod common;

use common::catch::Hold;
use livepatch_user::Runtime;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Catches, each with its enable and disable.
const ATTEMPTS: usize = 400;

/// The return address of the trampoline's call of the decision.
static DECIDE_RET: AtomicUsize = AtomicUsize::new(0);
static TRAMPOLINE: AtomicUsize = AtomicUsize::new(0);
/// The worker's base frame: its handler's scan of the interrupted stack ends there.
static BASE: AtomicUsize = AtomicUsize::new(0);
static G: AtomicUsize = AtomicUsize::new(0);
static HOLD: Hold = Hold::new();
static STOP: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn on_usr1(_sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel's ucontext of this SA_SIGINFO handler.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let pc = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    let sp = uc.uc_mcontext.gregs[libc::REG_RSP as usize] as usize;
    let t0 = TRAMPOLINE.load(Ordering::Relaxed);
    let (base, ret) = (BASE.load(Ordering::Relaxed), DECIDE_RET.load(Ordering::Relaxed));
    let in_trampoline = pc >= t0 && pc < t0 + 256;
    // SAFETY: `[sp, base)` is the worker's live stack (the handler runs on it, below `sp`).
    let in_decision =
        !in_trampoline && sp < base && (sp..base).step_by(8).any(|w| unsafe { *(w as *const usize) } == ret);
    if HOLD.wanted() && in_decision {
        HOLD.hold();
        common::catch::call(&G);
    }
    HOLD.handled();
}

#[test]
fn a_signal_handler_calling_a_hooked_function_inside_a_decision_does_not_switch_the_thread() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("nested_decision_inside");
    let (f, bad, bad_detail) = (t.f, t.bad, t.bad_detail);
    common::catch::install(libc::SIGUSR1, on_usr1);

    let (worker, tid) = common::catch::spawn_calling(&STOP, Some(&BASE), f);

    let mut attempts = 0;
    for _ in 0..ATTEMPTS {
        let handle = rt.apply(&t.patches[0]).expect("apply v1");
        rt.wait(Duration::from_secs(10)).expect("the enable completes");
        if TRAMPOLINE.load(Ordering::Relaxed) == 0 {
            // The trampoline's address from the hook at f's entry (`movabs r11, imm64`), and
            // its call of the decision (`mov rdx, rbp; call rel32`).
            let t0 = common::catch::trampoline_of(f as usize);
            // SAFETY: the trampoline's code is mapped and readable.
            let code = unsafe { std::slice::from_raw_parts(t0 as *const u8, 256) };
            let at = code.windows(4).position(|w| w == [0x48, 0x89, 0xea, 0xe8]).expect("the call of the decision");
            DECIDE_RET.store(t0 + at + 3 + 5, Ordering::Relaxed);
            TRAMPOLINE.store(t0, Ordering::Relaxed);
            G.store(common::catch::dlsym(libc::RTLD_DEFAULT, "g"), Ordering::Relaxed);
        }
        // Catch the worker inside its decision for f.
        HOLD.catch(tid, libc::SIGUSR1, Duration::from_secs(60), "in a decision");
        // The disable starts (every thread retargeted to the original) while the decision waits.
        rt.disable(handle).expect("disable");
        HOLD.release();
        rt.wait(Duration::from_secs(10)).expect("the disable completes");
        attempts += 1;
        if bad() != 0 {
            break;
        }
    }
    STOP.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert_eq!(
        bad(),
        0,
        "a chain ran f and g of different versions (f * 16 + g = {:#x}) after {attempts} catches: \
         the signal handler's call of g switched the thread while its decision for f was pending",
        bad_detail()
    );
}
