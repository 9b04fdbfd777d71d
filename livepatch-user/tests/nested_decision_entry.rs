//! `tests/nested_decision.rs` one instruction later: the trampoline has jumped, and the
//! signal lands on the variant's first instruction. The signal frame's saved `rip` is then
//! exactly the variant's entry, which a conservative scan takes for a function pointer (a
//! word equal to the entry of patched code) and skips; nothing else on the stack names the
//! variant (its caller's return address is the caller's). A hooked call from the handler
//! then switches the thread while the variant is about to run: new f calling old g.
//!
//! The interleaving is forced: a `SIGUSR1` handler that finds its thread interrupted at
//! exactly `f_v1` waits until the test has started disabling the patch, then calls `g`.

mod common;

use common::catch::Hold;
use livepatch_user::Runtime;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

static VARIANT: AtomicUsize = AtomicUsize::new(0);
static G: AtomicUsize = AtomicUsize::new(0);
static HOLD: Hold = Hold::new();
static STOP: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn on_usr1(_sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel's ucontext of this SA_SIGINFO handler.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let pc = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    let at_entry = pc == VARIANT.load(Ordering::Relaxed);
    if HOLD.wanted() && at_entry {
        HOLD.hold();
        common::catch::call(&G);
    }
    HOLD.handled();
}

#[test]
fn a_signal_handler_calling_a_hooked_function_at_a_variant_entry_does_not_switch_the_thread() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("nested_decision_entry");
    let (f, bad, bad_detail) = (t.f, t.bad, t.bad_detail);
    common::catch::install(libc::SIGUSR1, on_usr1);

    let (worker, tid) = common::catch::spawn_calling(&STOP, None, f);

    let handle = rt.apply(&t.patches[0]).expect("apply v1");
    rt.wait(Duration::from_secs(10)).expect("the enable completes");
    // The variant and g from their objects.
    common::catch::trampoline_of(f as usize); // f is hooked
    VARIANT.store(common::catch::patch_symbol(&t.patches[0], "f_v1"), Ordering::Relaxed);
    G.store(common::catch::dlsym(libc::RTLD_DEFAULT, "g"), Ordering::Relaxed);
    assert_eq!(bad(), 0, "no mixed chain before");

    // Catch the worker on the variant's first instruction.
    HOLD.catch(tid, libc::SIGUSR1, Duration::from_secs(60), "at f_v1's entry");
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
        "a chain ran f and g of different versions (f * 16 + g = {:#x}): the signal handler's \
         call of g switched the thread interrupted at f_v1's entry",
        bad_detail()
    );
}
