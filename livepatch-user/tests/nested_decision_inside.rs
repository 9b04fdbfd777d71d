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

use livepatch_user::Runtime;
use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Catches, each with its enable and disable.
const ATTEMPTS: usize = 400;

/// The return address of the trampoline's call of the decision.
static DECIDE_RET: AtomicUsize = AtomicUsize::new(0);
static TRAMPOLINE: AtomicUsize = AtomicUsize::new(0);
/// The worker's base frame: its handler's scan of the interrupted stack ends there.
static BASE: AtomicUsize = AtomicUsize::new(0);
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
    let sp = uc.uc_mcontext.gregs[libc::REG_RSP as usize] as usize;
    let t0 = TRAMPOLINE.load(Ordering::Relaxed);
    let (base, ret) = (BASE.load(Ordering::Relaxed), DECIDE_RET.load(Ordering::Relaxed));
    let in_trampoline = pc >= t0 && pc < t0 + 256;
    // SAFETY: `[sp, base)` is the worker's live stack (the handler runs on it, below `sp`).
    let in_decision =
        !in_trampoline && sp < base && (sp..base).step_by(8).any(|w| unsafe { *(w as *const usize) } == ret);
    if ARMED.load(Ordering::Relaxed) && in_decision && !CAUGHT.load(Ordering::Relaxed) {
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
fn a_signal_handler_calling_a_hooked_function_inside_a_decision_does_not_switch_the_thread() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("nested_decision_inside");
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
        BASE.store(&base as *const usize as usize, Ordering::Relaxed);
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

    let mut attempts = 0;
    for _ in 0..ATTEMPTS {
        let handle = rt.apply(&t.patches[0]).expect("apply v1");
        rt.wait(Duration::from_secs(10)).expect("the enable completes");
        if TRAMPOLINE.load(Ordering::Relaxed) == 0 {
            // The trampoline's address from the hook at f's entry (`movabs r11, imm64`), and
            // its call of the decision (`mov rdx, rbp; call rel32`).
            // SAFETY: f's entry holds the hook's 13 bytes now.
            let hook = unsafe { std::slice::from_raw_parts(f as usize as *const u8, 13) };
            assert_eq!(&hook[..2], &[0x49, 0xbb], "f is hooked");
            let t0 = usize::from_le_bytes(hook[2..10].try_into().unwrap());
            // SAFETY: the trampoline's code is mapped and readable.
            let code = unsafe { std::slice::from_raw_parts(t0 as *const u8, 256) };
            let at = code.windows(4).position(|w| w == [0x48, 0x89, 0xea, 0xe8]).expect("the call of the decision");
            DECIDE_RET.store(t0 + at + 3 + 5, Ordering::Relaxed);
            TRAMPOLINE.store(t0, Ordering::Relaxed);
            G.store(dlsym(libc::RTLD_DEFAULT, "g"), Ordering::Relaxed);
        }
        GO.store(false, Ordering::Relaxed);
        CAUGHT.store(false, Ordering::Relaxed);
        // Catch the worker inside its decision for f.
        ARMED.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        while !CAUGHT.load(Ordering::Acquire) {
            assert!(t0.elapsed() < Duration::from_secs(60), "never caught the worker in a decision");
            let before = HANDLED.load(Ordering::Acquire);
            // SAFETY: `tgkill` takes integers only.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
            while HANDLED.load(Ordering::Acquire) == before && !CAUGHT.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        }
        ARMED.store(false, Ordering::Relaxed);
        // The disable starts (every thread retargeted to the original) while the decision waits.
        rt.disable(handle).expect("disable");
        let caught_at = HANDLED.load(Ordering::Acquire);
        GO.store(true, Ordering::Release);
        while HANDLED.load(Ordering::Acquire) == caught_at {
            std::thread::yield_now();
        }
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
