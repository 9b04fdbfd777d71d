//! The first hook of a fresh entry while a registered thread is inside a signal handler of
//! its own (a profiler's `SIGPROF`, a `SIGALRM` timer) that interrupted it *between two entry
//! NOPs*: the fix-up handler runs on top of that handler and sees only the handler's `rip`;
//! the `rip` the thread resumes at when its handler returns is the one saved in the outer
//! signal frame, inside the padding. Written over with the hook, that would be the middle of
//! the `movabs`.
//!
//! The interleaving is forced: a `SIGUSR1` handler that finds its interrupted `rip` strictly
//! inside `h31`'s padding holds the thread there (it keeps it until the test releases it,
//! 300 ms after the apply started), and on release checks the bytes it is about to resume
//! at. To keep the process alive when they are torn, it resumes the thread at the entry
//! instead (equivalent: the thread had executed nothing of the function yet).

mod common;

use common::catch::{EntryWatch, Hold};
use common::sym;
use livepatch_user::Runtime;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static ENTRY: EntryWatch = EntryWatch::new();
static HOLD: Hold = Hold::new();
static STOP: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn on_usr1(_sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel's ucontext of this SA_SIGINFO handler.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    let pc = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    if HOLD.wanted() && ENTRY.inside(pc) {
        HOLD.hold();
        ENTRY.resume(pc, uc);
    }
    HOLD.handled();
}

#[test]
fn a_thread_held_between_two_entry_nops_by_its_own_signal_handler_never_resumes_inside_the_hook() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let many = common::many::Many::load("fixup_nested_signal");
    let patch = many.patch(Some(31));
    let h31: extern "C" fn(c_int) -> c_int = sym(many.handle, "h31");
    let site = h31 as usize;
    ENTRY.watch(site);

    common::catch::install(libc::SIGUSR1, on_usr1);

    let f = std::hint::black_box(h31);
    let (worker, tid) = common::catch::spawn_worker(&STOP, None, move |i| u64::from(f(i) != i + 31));

    // Catch the worker between two of h31's entry NOPs.
    HOLD.catch(tid, libc::SIGUSR1, Duration::from_secs(30), "inside h31's padding");

    let (result, took) = HOLD.apply_then_release(rt, patch, Duration::from_millis(300));
    let handle = result.expect("apply");
    rt.wait(Duration::from_secs(10)).expect("the enable completes");
    let torn = ENTRY.torn();
    assert_eq!(
        torn,
        0,
        "the hook was written while a thread's saved rip was at h31+{} (between two entry NOPs, \
         in its own signal handler's frame): it would have resumed inside the new hook's bytes \
         (apply returned after {took:?})",
        torn >> 8
    );
    assert_eq!(h31(1), 32, "the variant computes the same");
    rt.disable(handle).expect("disable");
    rt.wait(Duration::from_secs(10)).expect("disable completes");
    STOP.store(true, Ordering::Relaxed);
    assert_eq!(worker.join().unwrap(), 0, "every call of h31 returned its result");
}
