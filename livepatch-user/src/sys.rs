//! Thin wrappers over the Linux system calls the runtime uses: `membarrier`, `tgkill`,
//! `gettid`, `mprotect`, the monotonic clock and signal handlers.

use std::io;

/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (`linux/membarrier.h`).
const CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`.
const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE`.
const CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 5;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE`.
const CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 6;

fn membarrier(cmd: libc::c_int) -> io::Result<()> {
    // SAFETY: `membarrier` takes two integers and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers the process for the two expedited membarrier commands the runtime issues
/// (a kernel refuses them with `EPERM` to an unregistered process).
pub(crate) fn register_membarrier() -> io::Result<()> {
    membarrier(CMD_REGISTER_PRIVATE_EXPEDITED)?;
    membarrier(CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE)
}

/// Every thread of the process that is running on a CPU executes a core-serialising
/// instruction before this returns; threads that are not running will serialise when they
/// are scheduled in (a context switch serialises). The user-space `text_poke_sync()`.
pub(crate) fn sync_core() {
    // Registration happened in `Runtime::init`; a failure here would mean the kernel lost
    // it, which it never does: the result is checked at registration.
    let _ = membarrier(CMD_PRIVATE_EXPEDITED_SYNC_CORE);
}

/// A full memory barrier on every running thread of the process (the writer side of a
/// membarrier-based read-side section, as in liburcu's `memb` flavour).
pub(crate) fn barrier_all() {
    if membarrier(CMD_PRIVATE_EXPEDITED).is_err() {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// The calling thread's kernel id.
pub(crate) fn gettid() -> i32 {
    // SAFETY: `gettid` has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Sends `sig` to thread `tid` of this process. `Err` with `ESRCH` when the thread is gone.
pub(crate) fn tgkill(tid: i32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: `tgkill` takes integers only.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The monotonic clock in nanoseconds.
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: `sysconf` has no memory arguments.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Changes the protection of the pages spanning `[addr, addr + len)`.
pub(crate) fn protect(addr: usize, len: usize, prot: libc::c_int) -> io::Result<()> {
    let page = page_size();
    let start = addr & !(page - 1);
    let end = (addr + len).div_ceil(page) * page;
    // SAFETY: changes protections only; the pages are mapped text the caller identified by
    // symbol, and the execute bit is kept whenever the caller asks for writable text.
    let r = unsafe { libc::mprotect(start as *mut libc::c_void, end - start, prot) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A signal handler taking the `siginfo` and the interrupted context (unsafe: it trusts `ctx`
/// to be the kernel's `ucontext_t`).
pub(crate) type Handler = unsafe extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Installs `handler` for `sig` with `SA_SIGINFO | SA_RESTART` (`SA_NODEFER` too when
/// `nodefer`: a trap inside the handler must not be blocked), blocking the signals of `mask`
/// while it runs (the runtime's other handlers: one never interrupts another).
pub(crate) fn install_handler(
    sig: libc::c_int,
    handler: Handler,
    nodefer: bool,
    mask: &[libc::c_int],
) -> io::Result<()> {
    // SAFETY: a zeroed `sigaction` is a valid empty one; every field we rely on is set below.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | if nodefer { libc::SA_NODEFER } else { 0 };
    // SAFETY: `sa.sa_mask` is a valid sigset owned by `sa`.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    for &m in mask {
        // SAFETY: as above.
        unsafe { libc::sigaddset(&mut sa.sa_mask, m) };
    }
    // SAFETY: `sa` is a fully initialised sigaction; the old action is not requested.
    let r = unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `sa_restorer` of `sig`'s disposition (0: none): the return address libc gives every
/// handler it installs (glibc's `__restore_rt`, which makes the `rt_sigreturn` call), so the
/// first word of every signal frame it delivers.
pub(crate) fn restorer_of(sig: libc::c_int) -> usize {
    // SAFETY: a zeroed `sigaction` is valid output storage.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: queries only (no new action); `old` is writable.
    if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } < 0 {
        return 0;
    }
    old.sa_restorer.map_or(0, |f| f as usize)
}

/// The interrupted registers of a signal's context: (`rip`, `rsp`, `rbp`).
///
/// # Safety
///
/// `ctx` must be the third argument of an `SA_SIGINFO` handler (a `ucontext_t`).
pub(crate) unsafe fn context_regs(ctx: *mut libc::c_void) -> (usize, usize, usize) {
    // SAFETY: the caller passes the kernel-provided ucontext of the current handler.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let g = &uc.uc_mcontext.gregs;
    (g[libc::REG_RIP as usize] as usize, g[libc::REG_RSP as usize] as usize, g[libc::REG_RBP as usize] as usize)
}

/// Sets the interrupted context's `rip` and `rsp`.
///
/// # Safety
///
/// As for [`context_regs`]; the new values must make the interrupted code continue correctly.
pub(crate) unsafe fn set_context_ip_sp(ctx: *mut libc::c_void, rip: usize, rsp: usize) {
    // SAFETY: the caller passes the kernel-provided ucontext of the current handler, which
    // the kernel restores from when the handler returns.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    uc.uc_mcontext.gregs[libc::REG_RIP as usize] = rip as i64;
    uc.uc_mcontext.gregs[libc::REG_RSP as usize] = rsp as i64;
}

/// Sleeps while `*word == expected` (`FUTEX_WAIT_PRIVATE`; returns on a wake-up, a signal, or
/// when the word already differs). Async-signal-safe: a system call.
pub(crate) fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32) {
    // SAFETY: `word` is a live, aligned 4-byte atomic; the kernel only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

/// Wakes every thread sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake_all(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: as for `futex_wait`; a wake-up touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX) };
}

/// The calling thread's stack: `[lo, hi)` (`pthread_getattr_np`; for the main thread, the
/// region its stack may grow into, up to the top of its mapping).
pub(crate) fn stack_bounds() -> io::Result<(usize, usize)> {
    // SAFETY: a zeroed `pthread_attr_t` is valid output storage for `pthread_getattr_np`,
    // which initialises it.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: `attr` is writable; `pthread_self` is the calling thread.
    let r = unsafe { libc::pthread_getattr_np(libc::pthread_self(), &mut attr) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    let mut addr: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was initialised above; `addr` and `size` are writable.
    let r = unsafe { libc::pthread_attr_getstack(&attr, &mut addr, &mut size) };
    // SAFETY: `attr` was initialised by `pthread_getattr_np` and is destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok((addr as usize, addr as usize + size))
}
