//! # livepatch-user
//!
//! [`livepatch_core`] patching the functions of a running multi-threaded process on x86-64
//! Linux, with the core's per-task consistency: every thread is a task with its own universe.
//!
//! * [`hook`]: target functions carry 16 entry NOPs (`-fpatchable-function-entry=16`); a hook
//!   is a `movabs r11, trampoline; call r11` written over them by [`poke`] with the kernel's
//!   `text_poke_bp` protocol while other threads run them; the assembly trampoline asks the
//!   core ([`Live::on_function_entry`](livepatch_core::Live::on_function_entry)) and returns
//!   into the original or jumps to the variant.
//! * [`threads`]: the registry of threads with their 4-byte patch-state words, fork
//!   inheritance for threads created during a transition.
//! * [`walk`]: a thread walks its own stack by frame pointers (hook, safe point, or a kick
//!   signal's interrupted context); untrusted frames make the walk unreliable.
//! * [`backend`]: the core's traits; stragglers are kicked with a real-time signal (`tgkill`)
//!   whose handler checks and switches the thread.
//! * [`stop`]: the stop-the-world model's stop: every registered thread parked by a signal,
//!   its stack walked from the recorded context, all switched or none.
//! * [`patch_so`]: patches come from shared objects that describe themselves.
//! * [`objects`]: libraries loaded and unloaded while patches name them (the interposed
//!   `dlopen`/`dlclose`: the core's late and going objects).
//! * [`shadow`]: shadow variables for patches (`lpu_shadow_*`), reclaimed after every
//!   registered thread passed a safe point.
//! * [`Runtime`]: apply, disable, reverse, force, wait, list, stall reports.
//! * [`control`]: a control socket for an operator's tool.
//!
//! The C API below (`livepatch_*`) is what a program links against (see the README).
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

pub mod backend;
pub mod control;
mod error;
pub mod hook;
pub mod objects;
pub mod patch_so;
mod poke;
mod runtime;
pub mod shadow;
pub mod stop;
mod sys;
pub mod threads;
pub mod walk;

pub use error::Error;
pub use runtime::{PatchInfo, Runtime, Stall, Stats, DEFAULT_POLICY, RANGES, SLOTS};

use std::ffi::{c_char, c_int, c_void, CStr};
use walk::Start;

/// The `cond_resched` analogue for event loops and long computations: the calling thread
/// checks its own stack (from its caller's frame) and switches if it is pending and nothing it
/// is switching away from is on it. Call it where no patched function is on the stack you care
/// about; it is cheap when no transition is pending (two loads and a store).
///
/// It is also the quiescent point of shadow variables ([`shadow`]): data freed by another
/// thread is reclaimed only after every registered thread passed one, so do not keep a
/// shadow pointer across it.
///
/// Naked, so that its frame record is exactly one push below its caller's: the walk starts
/// at the return address into the caller, a trusted frame.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn livepatch_safe_point() {
    std::arch::naked_asm!(
        "push rbp",
        "mov rbp, rsp",
        "mov rdi, rbp",
        "call {inner}",
        "pop rbp",
        "ret",
        inner = sym safe_point_inner,
    )
}

/// [`livepatch_safe_point`], from Rust.
pub fn safe_point() {
    livepatch_safe_point()
}

/// # Safety
///
/// Only `livepatch_safe_point` calls it: `frame` is its frame record on this thread's stack.
unsafe extern "C" fn safe_point_inner(frame: usize) {
    // SAFETY: `frame` is `livepatch_safe_point`'s frame record on this thread's stack:
    // `[frame]` is its caller's frame pointer, `[frame + 8]` the return address into it.
    let (fp, ret) = unsafe { (*(frame as *const usize), *((frame + 8) as *const usize)) };
    safe_point_at(Start::Call { ret, fp, sp: frame + 8 });
}

/// A safe point at the start of a thread, walking from `caller` (the registration's caller:
/// the start routine, or code it called; `ret` 0 and `fp` the base frame when unknown).
pub(crate) fn safe_point_from(caller: Start) {
    safe_point_at(caller);
}

fn safe_point_at(start: Start) {
    let Some(thread) = threads::current() else { return };
    // A safe point is also the quiescent point of shadow variables: the caller keeps no
    // shadow data across it.
    thread.quiescent_point();
    if !livepatch_core::backend::Task::patch_state(thread).pending() {
        return;
    }
    let Some(live) = hook::live() else { return };
    // The slot of the return address into the caller, and that address (`Thread::outlived`;
    // none when the caller is unknown, `ret` 0).
    let (top, witness) = match start {
        Start::Call { ret, sp, .. } if ret != 0 => (sp, ret),
        _ => (0, 0),
    };
    // Inside a hook decision: a signal handler of the program's own interrupted it and called
    // this; the decision may have read the thread's word already (see `hook::hook_decide`).
    if walk::in_hook(thread, top) {
        return;
    }
    thread.read_enter(top, witness);
    let prev = walk::set_start(start);
    live.self_check(thread, &walk::Walker);
    walk::set_start(prev);
    thread.read_exit();
}

/// Initialises the runtime with the default policy. 0, or -1 (already initialised or a
/// system call failed).
#[no_mangle]
pub extern "C" fn livepatch_init() -> c_int {
    match Runtime::init(DEFAULT_POLICY) {
        Ok(_) => 0,
        Err(_) => -1,
    }
}

/// Prepares the registry entry of a thread the caller is about to create; pass the result
/// to the child's `livepatch_thread_begin`. NULL if the caller is not registered.
#[no_mangle]
pub extern "C" fn livepatch_thread_prepare() -> *mut c_void {
    match threads::prepare_child() {
        Ok(t) => Box::into_raw(Box::new(t)) as *mut c_void,
        Err(_) => std::ptr::null_mut(),
    }
}

/// Gives back a `livepatch_thread_prepare` result whose thread was not created (its
/// `pthread_create` failed): the prepared entry leaves the registry, as the child's
/// `livepatch_thread_end` would have removed it. Without this, every later transition would
/// wait for a thread that does not exist. NULL is ignored.
///
/// # Safety
///
/// `token` must be NULL or an unconsumed `livepatch_thread_prepare` result (consumed here).
#[no_mangle]
pub unsafe extern "C" fn livepatch_thread_discard(token: *mut c_void) {
    if !token.is_null() {
        // SAFETY: the caller passes a `livepatch_thread_prepare` result, consumed once; dropping
        // the token removes its entry.
        drop(unsafe { Box::from_raw(token as *mut threads::ChildToken) });
    }
}

/// Registers the calling thread. `token`: NULL for a root thread, else the parent's
/// `livepatch_thread_prepare` result (consumed). `frame`: `__builtin_frame_address(0)` of
/// the thread's start routine (refused unless it is on the calling thread's stack above the
/// caller: stack walks read up to it). 0 on success, -1 otherwise.
///
/// Refused too when the caller — the start routine — is a patched function that the thread's
/// universe runs the variant of: the routine was entered before the thread registered, so as
/// the original ([`Error::StartRoutinePatched`]); the thread then runs unregistered, every
/// hooked function's original.
///
/// Naked, so that the return address into the start routine (and where it is stored) reach
/// the registration: the check above, and the walk of the thread's first safe point.
///
/// # Safety
///
/// `token` must be NULL or an unconsumed `livepatch_thread_prepare` result.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn livepatch_thread_begin(token: *mut c_void, frame: *const c_void) -> c_int {
    std::arch::naked_asm!(
        // rdi, rsi: as given; rdx: the return address into the caller; rcx: where it is;
        // r8: the caller's frame pointer.
        "mov rdx, [rsp]",
        "mov rcx, rsp",
        "mov r8, rbp",
        "jmp {inner}",
        inner = sym thread_begin_inner,
    )
}

/// # Safety
///
/// Only `livepatch_thread_begin` calls it (a tail jump: `ret` is its return address into its
/// caller, stored at `sp`, and `fp` the caller's frame pointer); `token` as for it.
unsafe extern "C" fn thread_begin_inner(
    token: *mut c_void,
    frame: *const c_void,
    ret: usize,
    sp: usize,
    fp: usize,
) -> c_int {
    let token = if token.is_null() {
        None
    } else {
        // SAFETY: the caller passes a `livepatch_thread_prepare` result, consumed once.
        Some(*unsafe { Box::from_raw(token as *mut threads::ChildToken) })
    };
    let caller = Start::Call { ret, fp, sp };
    match Runtime::get().and_then(|rt| rt.thread_begin_from(token, frame as usize, caller)) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// Unregisters the calling thread (call it last in the start routine; not from a signal
/// handler: it takes a lock).
#[no_mangle]
pub extern "C" fn livepatch_thread_end() {
    threads::end();
}

/// Enters an extended quiescent state for shadow variables (around a blocking call): until
/// [`livepatch_thread_online`], the calling thread uses no shadow data and calls no shadow
/// function, and their reclaim does not wait for it ([`shadow`]). Nothing for an
/// unregistered thread.
#[no_mangle]
pub extern "C" fn livepatch_thread_offline() {
    if let Some(t) = threads::current() {
        t.go_offline();
    }
}

/// Leaves the extended quiescent state of [`livepatch_thread_offline`].
#[no_mangle]
pub extern "C" fn livepatch_thread_online() {
    if let Some(t) = threads::current() {
        t.go_online();
    }
}

/// Declares the loaded object containing `addr` compiled with frame pointers (its frames
/// are trusted by stack walks). 0 if found, -1 otherwise.
#[no_mangle]
pub extern "C" fn livepatch_trust_object(addr: *const c_void) -> c_int {
    if patch_so::trust_object_containing(addr as usize) {
        0
    } else {
        -1
    }
}

/// Applies the patch in the shared object `path` and waits up to `timeout_ms` for the
/// transition. The patch's handle (> 0), or -1.
///
/// # Safety
///
/// `path` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn livepatch_apply(path: *const c_char, timeout_ms: u32) -> c_int {
    // SAFETY: the caller passes a C string.
    let path = unsafe { CStr::from_ptr(path) }.to_string_lossy().into_owned();
    let Ok(rt) = Runtime::get() else { return -1 };
    match rt.apply(&path) {
        Ok(h) => {
            let _ = rt.wait(std::time::Duration::from_millis(timeout_ms.into()));
            h as c_int
        }
        Err(_) => -1,
    }
}

/// Starts the control socket at `path` (see [`control`]). 0, or -1.
///
/// # Safety
///
/// `path` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn livepatch_serve(path: *const c_char) -> c_int {
    // SAFETY: the caller passes a C string.
    let path = unsafe { CStr::from_ptr(path) }.to_string_lossy().into_owned();
    match control::serve(&path) {
        Ok(_) => 0,
        Err(_) => -1,
    }
}
