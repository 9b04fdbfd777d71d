//! A hook decision made, its jump not yet taken, when a signal handler of the program's own
//! runs on the same thread and calls a hooked function: that nested call's decision is a
//! handler-entry switch point, and it may switch the thread while the outer decision (the
//! target in the trampoline's `r11`) is still to be used. The outer call then runs the
//! variant it decided on in the other universe: new f calling old g.
//!
//! The interleaving is forced: with the patch enabled and settled, a `SIGUSR1` handler that
//! finds its thread interrupted inside the trampoline with `r11` = `f_v1` (the decision
//! "variant" taken, the jump not yet) waits there until the test has started disabling the
//! patch, then calls `g`. The target's `g` counts a chain whose f and g versions differ.

mod common;

use common::catch::Hold;
use livepatch_user::Runtime;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

static TRAMPOLINE: AtomicUsize = AtomicUsize::new(0);
static VARIANT: AtomicUsize = AtomicUsize::new(0);
static G: AtomicUsize = AtomicUsize::new(0);
static HOLD: Hold = Hold::new();
static STOP: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn on_usr1(_sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel's ucontext of this SA_SIGINFO handler.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let pc = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    let r11 = uc.uc_mcontext.gregs[libc::REG_R11 as usize] as usize;
    let t0 = TRAMPOLINE.load(Ordering::Relaxed);
    let in_tail = pc >= t0 && pc < t0 + 256 && r11 == VARIANT.load(Ordering::Relaxed);
    if HOLD.wanted() && in_tail {
        HOLD.hold();
        common::catch::call(&G);
    }
    HOLD.handled();
}

#[test]
fn a_signal_handler_calling_a_hooked_function_does_not_switch_under_a_pending_decision() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("nested_decision");
    let (f, bad, bad_detail) = (t.f, t.bad, t.bad_detail);
    common::catch::install(libc::SIGUSR1, on_usr1);

    let (worker, tid) = common::catch::spawn_calling(&STOP, None, f);

    let handle = rt.apply(&t.patches[0]).expect("apply v1");
    rt.wait(Duration::from_secs(10)).expect("the enable completes");
    // The trampoline's address from the hook at f's entry (`movabs r11, imm64`), the variant
    // and g from their objects.
    TRAMPOLINE.store(common::catch::trampoline_of(f as usize), Ordering::Relaxed);
    VARIANT.store(common::catch::patch_symbol(&t.patches[0], "f_v1"), Ordering::Relaxed);
    G.store(common::catch::dlsym(libc::RTLD_DEFAULT, "g"), Ordering::Relaxed);
    assert_eq!(bad(), 0, "no mixed chain before");

    // Catch the worker between its decision for f (the variant) and the jump.
    HOLD.catch(tid, libc::SIGUSR1, Duration::from_secs(60), "in the trampoline");
    // The disable starts (every thread retargeted to the original) while the decision waits.
    rt.disable(handle).expect("disable");
    HOLD.release();
    std::thread::sleep(Duration::from_millis(50));
    STOP.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    let _ = rt.wait(Duration::from_secs(10));
    assert_eq!(
        bad(),
        0,
        "a chain ran f and g of different versions (f * 16 + g = {:#x}): the signal handler's call \
         of g switched the thread while its decision for f (the variant) was pending",
        bad_detail()
    );
}
