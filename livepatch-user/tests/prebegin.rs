//! The first hook of a function that a prepared child runs before it registers: its start
//! routine, or a function the routine calls on its way to `livepatch_thread_begin`. The child
//! is in the registry from `livepatch_thread_prepare` on, but with no thread id until it
//! begins, so no fix-up signal reaches it; a child stopped between two of that function's
//! entry NOPs would resume inside the hook's bytes.
//!
//! The interleaving is forced: the child calls `sr_enter` (which returns at once) in a loop;
//! a `SIGUSR1` handler of the test's sets the trap flag in the interrupted context, so the
//! child single-steps (the test's own `SIGTRAP` handler, in place of the runtime's for the
//! catch only) until its `rip` is strictly inside `sr_enter`'s first 13 bytes, where the
//! handler holds it (a preemption at that instant, made long). The test applies a patch
//! replacing `sr_enter` and releases the child 300 ms later; on release the handler checks the
//! bytes it is about to resume at. To keep the process alive when they are torn, it resumes
//! the child at the entry instead (equivalent: it had executed nothing of the function yet).

mod common;

use common::catch::{EntryWatch, Hold};
use common::parts::Parts;
use common::sym;
use livepatch_user::Runtime;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ENTRY: EntryWatch = EntryWatch::new();
static HOLD: Hold = Hold::new();

/// The trap flag of `EFLAGS`.
const TF: i64 = 0x100;
/// The child single-steps.
static STEPPING: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn on_usr1(_sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel's ucontext of this SA_SIGINFO handler.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    if HOLD.wanted() {
        STEPPING.store(true, Ordering::Relaxed);
        uc.uc_mcontext.gregs[libc::REG_EFL as usize] |= TF;
    }
    HOLD.handled();
}

unsafe extern "C" fn on_step(_sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel's ucontext of this SA_SIGINFO handler.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    if !STEPPING.load(Ordering::Relaxed) {
        return;
    }
    let pc = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    if !ENTRY.inside(pc) {
        uc.uc_mcontext.gregs[libc::REG_EFL as usize] |= TF;
        return;
    }
    STEPPING.store(false, Ordering::Relaxed);
    uc.uc_mcontext.gregs[libc::REG_EFL as usize] &= !TF;
    HOLD.hold();
    ENTRY.resume(pc, uc);
    HOLD.handled();
}

#[test]
fn a_prepared_child_between_two_entry_nops_before_it_registers_never_resumes_inside_the_hook() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let parts = Parts::new("prebegin");
    let h = parts.load_lib("libpb.so");
    let patch = parts.build("PATCH", "libpb_patch.so", &[]);
    let spawn: extern "C" fn(*const common::Api) -> c_int = sym(h, "pb_spawn");
    let child_tid: extern "C" fn() -> c_int = sym(h, "pb_tid");
    let go: extern "C" fn() = sym(h, "pb_go");
    let join: extern "C" fn() -> c_int = sym(h, "pb_join");
    let site = common::catch::dlsym(h, "sr_enter");
    assert!(livepatch_user::patch_so::trust_object_containing(site));
    ENTRY.watch(site);
    common::catch::install(libc::SIGUSR1, on_usr1);

    let base = 0usize;
    // SAFETY: a root thread, before any patch; `base` is above every frame used later.
    let r = unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
    assert_eq!(r, 0);
    assert_eq!(spawn(&common::API), 0, "the child is prepared and started");
    let t0 = Instant::now();
    while child_tid() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the child did not start");
        std::thread::yield_now();
    }
    // Catch the child between two of sr_enter's entry NOPs; once released it registers.
    // The test's SIGTRAP handler for the catch (the runtime's is put back before the apply:
    // its hooks trap while they are written).
    // SAFETY: a zeroed sigaction is a valid empty one; the handler and flags are set.
    let mut step: libc::sigaction = unsafe { std::mem::zeroed() };
    step.sa_sigaction = on_step as *const () as usize;
    step.sa_flags = libc::SA_SIGINFO;
    // `SIGUSR1` blocked in it: its handler would set the trap flag in the step handler's own
    // context, and a trap there, with `SIGTRAP` blocked, kills the process.
    // SAFETY: `sa_mask` is a valid signal set.
    unsafe { libc::sigaddset(&mut step.sa_mask, libc::SIGUSR1) };
    // SAFETY: as above; `runtime_trap` receives the runtime's handler.
    let mut runtime_trap: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both structures are initialised.
    assert_eq!(unsafe { libc::sigaction(libc::SIGTRAP, &step, &mut runtime_trap) }, 0);
    let c0 = Instant::now();
    HOLD.catch(child_tid(), libc::SIGUSR1, Duration::from_secs(10), "inside sr_enter's padding");
    eprintln!("caught the child inside sr_enter's padding after {:?}", c0.elapsed());
    // SAFETY: the runtime's handler, as it was.
    assert_eq!(unsafe { libc::sigaction(libc::SIGTRAP, &runtime_trap, std::ptr::null_mut()) }, 0);
    go();

    let (result, took) = HOLD.apply_then_release(rt, patch, Duration::from_millis(300));
    let torn = ENTRY.torn();
    assert_eq!(
        torn,
        0,
        "the hook was written while a prepared child that had not registered yet was at \
         sr_enter+{} (between two entry NOPs): it would have resumed inside the new hook's bytes \
         (apply returned after {took:?})",
        torn >> 8
    );
    let handle = result.expect("apply");
    rt.wait(Duration::from_secs(10)).expect("the enable completes");
    let registered = join();
    eprintln!("apply took {took:?}; the child's registration: {registered}");
    rt.disable(handle).expect("disable");
    rt.wait(Duration::from_secs(10)).expect("the disable completes");
    livepatch_user::livepatch_thread_end();
    std::hint::black_box(&base);
}
