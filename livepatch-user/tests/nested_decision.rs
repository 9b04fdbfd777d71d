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

use livepatch_user::Runtime;
use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

static TRAMPOLINE: AtomicUsize = AtomicUsize::new(0);
static VARIANT: AtomicUsize = AtomicUsize::new(0);
static G: AtomicUsize = AtomicUsize::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);
static CAUGHT: AtomicBool = AtomicBool::new(false);
static GO: AtomicBool = AtomicBool::new(false);
static HANDLED: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn on_usr1(_sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel's ucontext of this SA_SIGINFO handler.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let pc = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    let r11 = uc.uc_mcontext.gregs[libc::REG_R11 as usize] as usize;
    let t0 = TRAMPOLINE.load(Ordering::Relaxed);
    let in_tail = pc >= t0 && pc < t0 + 256 && r11 == VARIANT.load(Ordering::Relaxed);
    if ARMED.load(Ordering::Relaxed) && in_tail && !CAUGHT.load(Ordering::Relaxed) {
        // `Release`/`Acquire` pairs: the test's waits on these flags.
        CAUGHT.store(true, Ordering::Release);
        while !GO.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        // SAFETY: the target's `g(int) -> int`.
        let g: extern "C" fn(c_int) -> c_int = unsafe { std::mem::transmute(G.load(Ordering::Relaxed)) };
        std::hint::black_box(g(7));
    }
    HANDLED.fetch_add(1, Ordering::Release);
}

fn dlsym(h: *mut c_void, name: &str) -> usize {
    let c = CString::new(name).unwrap();
    // SAFETY: a valid handle and C string.
    let p = unsafe { libc::dlsym(h, c.as_ptr()) } as usize;
    assert_ne!(p, 0, "{name}");
    p
}

#[test]
fn a_signal_handler_calling_a_hooked_function_does_not_switch_under_a_pending_decision() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("nested_decision");
    let (f, bad, bad_detail) = (t.f, t.bad, t.bad_detail);
    // SAFETY: a zeroed sigaction is a valid empty one; the handler and flags are set.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_usr1 as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `sa` is fully initialised.
    assert_eq!(unsafe { libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) }, 0);

    let (tid_tx, tid_rx) = mpsc::channel::<i32>();
    let worker = std::thread::spawn(move || {
        let base = 0usize;
        // SAFETY: a root thread, before any patch; `base` is above every frame used later.
        let r =
            unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
        assert_eq!(r, 0);
        // SAFETY: `gettid` takes no arguments.
        tid_tx.send(unsafe { libc::syscall(libc::SYS_gettid) } as i32).unwrap();
        let f = std::hint::black_box(f);
        let mut i = 0;
        while !STOP.load(Ordering::Relaxed) {
            std::hint::black_box(f(i));
            i = (i + 1) & 0xffff;
        }
        livepatch_user::livepatch_thread_end();
        std::hint::black_box(&base);
    });
    let tid = tid_rx.recv().unwrap();

    let handle = rt.apply(&t.patches[0]).expect("apply v1");
    rt.wait(Duration::from_secs(10)).expect("the enable completes");
    // The trampoline's address from the hook at f's entry (`movabs r11, imm64`), the variant
    // and g from their objects.
    // SAFETY: f's entry holds the hook's 13 bytes now.
    let hook = unsafe { std::slice::from_raw_parts(f as usize as *const u8, 13) };
    assert_eq!(&hook[..2], &[0x49, 0xbb], "f is hooked");
    TRAMPOLINE.store(usize::from_le_bytes(hook[2..10].try_into().unwrap()), Ordering::Relaxed);
    let cp = CString::new(t.patches[0].as_str()).unwrap();
    // SAFETY: the patch object is loaded (the runtime never closes it): this takes a reference.
    let ph = unsafe { libc::dlopen(cp.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    assert!(!ph.is_null());
    VARIANT.store(dlsym(ph, "f_v1"), Ordering::Relaxed);
    G.store(dlsym(libc::RTLD_DEFAULT, "g"), Ordering::Relaxed);
    assert_eq!(bad(), 0, "no mixed chain before");

    // Catch the worker between its decision for f (the variant) and the jump.
    ARMED.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    while !CAUGHT.load(Ordering::Acquire) {
        assert!(t0.elapsed() < Duration::from_secs(60), "never caught the worker in the trampoline");
        let before = HANDLED.load(Ordering::Acquire);
        // SAFETY: `tgkill` takes integers only.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
        while HANDLED.load(Ordering::Acquire) == before && !CAUGHT.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
    }
    // The disable starts (every thread retargeted to the original) while the decision waits.
    rt.disable(handle).expect("disable");
    GO.store(true, Ordering::Release);
    let caught_at = HANDLED.load(Ordering::Acquire);
    while HANDLED.load(Ordering::Acquire) == caught_at {
        std::thread::yield_now();
    }
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
