//! Cross-modifying code: the kernel's `text_poke_bp` protocol in user space, and the signal
//! handlers that go with it.
//!
//! Writing a hook over an entry that other threads may be executing:
//!
//! 1. write `int3` over the first byte; serialise every core
//!    (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`): from now on a thread reaching
//!    the entry traps, and the `SIGTRAP` handler emulates the site's current meaning (a call to
//!    the trampoline while hooked, a jump over the entry NOPs otherwise);
//! 2. only when installing over fresh padding: the entry was several NOP instructions (gcc:
//!    16 one-byte ones; clang: a 10- and a 6-byte one), so a thread may have stopped *between*
//!    two of them (the kernel never has this case: its ftrace NOP is one instruction). Every
//!    registered thread gets a fix-up signal whose handler moves an `rip` inside the padding to
//!    its end (equivalent: the bytes it skips are NOPs); the writer waits for each thread's
//!    acknowledgement, its exit or the end of its registration. While a *prepared* child has
//!    not begun, it may already run its start routine (whose entry this may be) with no
//!    thread id in the registry: then every other thread of the process
//!    (`/proc/self/task`) gets the signal too, and answers in a table of thread ids
//!    ([`UNREGISTERED`]); a thread started after the trap byte was written cannot be past
//!    it. The handler sees only the
//!    context it interrupted: a thread inside a signal handler of its own that interrupted it
//!    between two NOPs resumes there when that handler returns, from the `rip` saved in the
//!    outer signal frame. So the handler also scans its live stack (from the interrupted
//!    `rsp` to the thread's base frame) for a word strictly inside the bytes the hook writes
//!    (`site + 1` … `site + 12`; the hook's own return address is `site + 13`), and answers
//!    "blocked" if it finds one (or runs on another stack, whose frames it cannot bound). The
//!    writer repeats the round, 1 ms apart, until every thread answers clear; after
//!    [`FIXUP_PATIENCE`] it gives up: the trap byte is written back (the tail was never
//!    touched, so the entry is what it was) and the hook fails (the engine cancels the
//!    enable). A stale word in a dead slot can only make a hook fail, never tear code;
//! 3. write the tail; serialise;
//! 4. write the first byte; serialise.
//!
//! Removing a hook does not write the NOPs back: it *parks* the site, turning the first two
//! bytes into `jmp short +14` (`eb 0e`), which skips the rest of the padding.
//! A thread cannot stop inside an instruction, so parking and re-hooking (two bytes each way)
//! never need the fix-up round; only the first hook of a fresh NOP entry does. A parked entry
//! costs one taken jump per call, like the kernel's 5-byte NOP costs one decoded instruction.

use crate::hook::{self, ENTRY_NOPS, HOOK_LEN};
use crate::sys;
use crate::threads;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a first hook waits for every thread's saved contexts to leave the entry padding
/// before it gives up (see step 2 above).
pub(crate) const FIXUP_PATIENCE: Duration = Duration::from_secs(1);

/// A fix-up answer is `round << 1 | BLOCKED`: the thread's stack holds a word inside the
/// padding (an outer signal frame's saved `rip`).
const BLOCKED: u64 = 1;

/// The signal that kicks a straggler (its handler checks the thread's stack).
pub(crate) fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// The signal of a fix-up round.
pub(crate) fn fixup_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

/// The site of the fix-up round in progress (0: none).
static FIXUP_SITE: AtomicUsize = AtomicUsize::new(0);
static FIXUP_ROUND: AtomicU64 = AtomicU64::new(0);
/// Serialises pokes (the engine already does; this keeps `poke` sound on its own).
static POKE_LOCK: Mutex<()> = Mutex::new(());

/// Threads without a begun registry entry a round can signal ([`UNREGISTERED`]).
const MAX_UNREGISTERED: usize = 64;

/// The thread ids a fix-up round signals beyond the registered threads (the first
/// [`UNREGISTERED_COUNT`]), each with its answer (`round << 1 | BLOCKED`, as a registered
/// thread's).
static UNREGISTERED: [(AtomicI32, AtomicU64); MAX_UNREGISTERED] =
    [const { (AtomicI32::new(0), AtomicU64::new(0)) }; MAX_UNREGISTERED];
static UNREGISTERED_COUNT: AtomicUsize = AtomicUsize::new(0);

/// How long a round waits for the answer of a thread without a registry entry (it may block
/// the signal; the round is then not clear, and repeated).
const UNREGISTERED_WAIT: Duration = Duration::from_millis(100);

/// Fix-up signals sent so far (for the benchmarks' signals-per-thread figure).
pub(crate) static FIXUP_SIGNALS: AtomicU64 = AtomicU64::new(0);
/// Threads a fix-up handler found between two entry NOPs and moved past the hook.
pub(crate) static FIXUPS_APPLIED: AtomicU64 = AtomicU64::new(0);

/// Installs the trap and fix-up handlers.
pub(crate) fn install_handlers() -> Result<(), crate::Error> {
    // The fix-up signal is blocked in the trap handler: its frame's `rip` (`site + 1`) is
    // inside the padding until the handler moves it, and a fix-up handler nested there would
    // answer "blocked" (see `saved_context_inside`).
    sys::install_handler(libc::SIGTRAP, on_trap, true, &[crate::stop::stop_signal(), fixup_signal()])
        .map_err(|e| crate::Error::Sys("sigaction(SIGTRAP)", e))?;
    sys::install_handler(fixup_signal(), on_fixup, false, &[kick_signal(), crate::stop::stop_signal()])
        .map_err(|e| crate::Error::Sys("sigaction(fixup)", e))
}

/// Writes `new` over `site` with the protocol above. An error means nothing was written (the
/// page could not be made writable, or a first hook gave up in its fix-up round and wrote the
/// trap byte back).
///
/// # Safety
///
/// `site` must be a patchable entry ([`hook::is_patchable`]) in mapped text; `new` must be
/// the hook bytes or the parked hook; the site's state in the site table must already say
/// what a trap there means.
pub(crate) unsafe fn poke(site: usize, new: &[u8; HOOK_LEN]) -> std::io::Result<()> {
    let _g = POKE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the caller guarantees a mapped patchable entry of at least `HOOK_LEN` bytes.
    let old: [u8; HOOK_LEN] = unsafe { (site as *const [u8; HOOK_LEN]).read_volatile() };
    // A fresh entry is padding of several NOP instructions (gcc: sixteen one-byte ones): a
    // thread may have stopped between two of them. Our hook and its parked form are whole
    // instructions a thread is never inside.
    let fresh_nops = !hook::is_ours(&old);
    sys::protect(site, HOOK_LEN, libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC)?;
    let p = site as *mut u8;
    // SAFETY: the page is writable now; a single-byte store is atomic, and every other
    // thread either has not reached the byte or executes it after the serialisation below.
    unsafe { p.write_volatile(0xcc) };
    sys::sync_core();
    if fresh_nops && !fixup_until_clear(site) {
        // SAFETY: the byte the trap replaced; the tail was not written, so the entry is the
        // padding it was (a thread that trapped meanwhile was moved per the site's state).
        unsafe { p.write_volatile(old[0]) };
        sys::sync_core();
        sys::protect(site, HOOK_LEN, libc::PROT_READ | libc::PROT_EXEC)?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "a thread's saved context stayed inside the entry padding",
        ));
    }
    for (i, b) in new.iter().enumerate().skip(1).filter(|(i, b)| old[*i] != **b) {
        // SAFETY: as above; no thread executes these bytes now (the trap guards the entry
        // and the fix-up round moved any thread that was past it).
        unsafe { p.add(i).write_volatile(*b) };
    }
    sys::sync_core();
    // SAFETY: as above.
    unsafe { p.write_volatile(new[0]) };
    sys::sync_core();
    // The bytes are written: a page that stays writable is no reason to report the write as
    // failed (the caller would then record the opposite of what the code now does).
    let _ = sys::protect(site, HOOK_LEN, libc::PROT_READ | libc::PROT_EXEC);
    Ok(())
}

/// Fix-up rounds, 1 ms apart, until one finds every thread clear; `false` after
/// [`FIXUP_PATIENCE`].
fn fixup_until_clear(site: usize) -> bool {
    let deadline = Instant::now() + FIXUP_PATIENCE;
    loop {
        if fixup_round(site) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Moves every registered thread's `rip` out of `(site, site + ENTRY_NOPS)`; `true` if no
/// thread's stack holds a saved context there either.
fn fixup_round(site: usize) -> bool {
    FIXUP_SITE.store(site, Ordering::Relaxed);
    // `Release`: pairs with the handler's `Acquire` of the round: it sees the site.
    let round = FIXUP_ROUND.fetch_add(1, Ordering::Release) + 1;
    let me = sys::gettid();
    let mut waiting = Vec::new();
    let threads = threads::snapshot();
    // A prepared child that has not begun: its thread may already run its start routine, or
    // what the routine calls on its way to `begin`, and be stopped between two NOPs of this
    // very entry, with no thread id here to signal (`tests/prebegin.rs`).
    let prepared = threads.iter().any(|t| t.tid() == 0 && !t.has_ended());
    let registered: Vec<i32> = threads.iter().map(|t| t.tid()).filter(|&tid| tid != 0).collect();
    for t in threads {
        let tid = t.tid();
        if tid == 0 || tid == me {
            continue;
        }
        if sys::tgkill(tid, fixup_signal()).is_ok() {
            FIXUP_SIGNALS.fetch_add(1, Ordering::Relaxed);
            waiting.push(t);
        }
    }
    let mut clear = true;
    for t in waiting {
        loop {
            // `Acquire`: pairs with the handler's `Release`: its `rip` fix and its scan are done.
            let answer = t.fixup_round.load(Ordering::Acquire);
            if answer >> 1 >= round {
                clear &= answer & BLOCKED == 0;
                break;
            }
            // A thread that ended its registration runs no patched code any more and its
            // handler cannot acknowledge (it finds no entry); one that exited cannot either.
            if t.has_ended() || sys::tgkill(t.tid(), 0).is_err() {
                break;
            }
            std::thread::yield_now();
        }
    }
    if prepared {
        clear &= fixup_unregistered(round, me, &registered);
    }
    FIXUP_SITE.store(0, Ordering::Relaxed);
    clear
}

/// Signals every thread of the process that is neither the caller nor in `registered`, and
/// waits for each one's answer to `round`, its exit, or [`UNREGISTERED_WAIT`]; `true` if all
/// answered clear or exited. Their handler moves an `rip` in the padding like any other's,
/// and scans their stacks as far as it can bound them ([`unregistered_context_inside`]).
fn fixup_unregistered(round: u64, me: i32, registered: &[i32]) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return false };
    let tids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|tid| *tid != me && !registered.contains(tid))
        .collect();
    if tids.len() > MAX_UNREGISTERED {
        return false;
    }
    for ((slot_tid, answer), tid) in UNREGISTERED.iter().zip(&tids) {
        answer.store(0, Ordering::Relaxed);
        slot_tid.store(*tid, Ordering::Relaxed);
    }
    // `Release`: pairs with `answer_unregistered`'s `Acquire`: the ids above are written.
    UNREGISTERED_COUNT.store(tids.len(), Ordering::Release);
    let sent: Vec<bool> = tids.iter().map(|tid| sys::tgkill(*tid, fixup_signal()).is_ok()).collect();
    FIXUP_SIGNALS.fetch_add(sent.iter().filter(|s| **s).count() as u64, Ordering::Relaxed);
    let deadline = Instant::now() + UNREGISTERED_WAIT;
    let mut clear = true;
    for (((_, answer), tid), sent) in UNREGISTERED.iter().zip(&tids).zip(sent) {
        // Not sent: the thread is gone.
        if !sent {
            continue;
        }
        loop {
            // `Acquire`: pairs with `answer_unregistered`'s `Release`: its `rip` fix and its
            // scan are done.
            let a = answer.load(Ordering::Acquire);
            if a >> 1 >= round {
                clear &= a & BLOCKED == 0;
                break;
            }
            if sys::tgkill(*tid, 0).is_err() {
                break;
            }
            if Instant::now() >= deadline {
                clear = false;
                break;
            }
            std::thread::yield_now();
        }
    }
    UNREGISTERED_COUNT.store(0, Ordering::Relaxed);
    clear
}

/// The longest stack [`unregistered_context_inside`] scans (64 MiB).
const MAX_UNREGISTERED_STACK: usize = 64 << 20;

/// For a thread without a begun registry entry (no stack bounds recorded): whether its live
/// stack, from the interrupted `sp` up to its thread pointer, holds a word strictly inside
/// `(site, site + HOOK_LEN)`, as [`saved_context_inside`] for a registered thread. glibc puts
/// a thread's TCB (where `fs` points) at the top of the stack block it allocates (or the one
/// given to `pthread_create`), so `[sp, fs)` is the thread's used stack. The words are read
/// with `process_vm_readv` on this process, which fails instead of faulting: a hole (the
/// thread runs on another stack) answers `true`. A thread pointer not above `sp` within
/// [`MAX_UNREGISTERED_STACK`] (the main thread's TLS is not on its stack) is not scanned.
fn unregistered_context_inside(sp: usize, site: usize) -> bool {
    let tp: usize;
    // SAFETY: `fs:0` is the TCB's pointer to itself (the x86-64 TLS ABI), always mapped.
    unsafe { std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags)) };
    if tp <= sp || tp - sp > MAX_UNREGISTERED_STACK || !sp.is_multiple_of(8) {
        return false;
    }
    let mut buf = [0usize; 64];
    let mut at = sp;
    while tp - at >= 8 {
        let n = ((tp - at) / 8).min(buf.len());
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: n * 8 };
        let remote = libc::iovec { iov_base: at as *mut libc::c_void, iov_len: n * 8 };
        // SAFETY: `local` is this frame's buffer of `n` words; `remote` is only read, by the
        // kernel, which reports an unmapped range instead of faulting.
        let r = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if r != (n * 8) as isize {
            return true;
        }
        if buf[..n].iter().any(|&v| v > site && v < site + HOOK_LEN) {
            return true;
        }
        at += n * 8;
    }
    false
}

/// The fix-up handler's answer to `round` in the table of threads signalled beyond the
/// registered ones, if the calling thread is there (interrupted at `sp`, round's `site`).
fn answer_unregistered(round: u64, sp: usize, site: usize) {
    // `Acquire`: pairs with `fixup_unregistered`'s `Release`.
    let n = UNREGISTERED_COUNT.load(Ordering::Acquire);
    if n == 0 {
        return;
    }
    let me = sys::gettid();
    if let Some((_, answer)) =
        UNREGISTERED[..n.min(MAX_UNREGISTERED)].iter().find(|(t, _)| t.load(Ordering::Relaxed) == me)
    {
        let blocked = site != 0 && unregistered_context_inside(sp, site);
        // `Release`: pairs with `fixup_unregistered`'s `Acquire`.
        answer.store(round << 1 | u64::from(blocked), Ordering::Release);
    }
}

/// Whether the calling thread's live stack, from the interrupted `sp` up to its base frame
/// (or its stack's top without one), holds a word strictly inside the bytes the hook writes,
/// `(site, site + HOOK_LEN)`: the `rip` an outer signal frame will resume at. Not the hook's
/// own return address, `site + HOOK_LEN`, which every thread inside the trampoline has on its
/// stack: the bytes from there on are never written. `true` also when `sp` is not on the
/// thread's stack (a handler's alternate stack: the frames there cannot be bounded). A trap
/// frame's `rip` (`site + 1`) is never seen here: the trap handler blocks the fix-up signal
/// and always moves that `rip` before it returns.
fn saved_context_inside(t: &threads::Thread, sp: usize, site: usize) -> bool {
    let (lo, hi) = (t.stack_lo(), t.stack_hi());
    let top = match t.base_fp() {
        0 => hi,
        base => (base + 16).min(hi),
    };
    if sp < lo || sp >= top || !sp.is_multiple_of(8) {
        return true;
    }
    (sp..top & !7).step_by(8).any(|w| {
        // SAFETY: `[sp, top)` is the calling thread's own stack above the interrupted stack
        // pointer: mapped (`begin` took its bounds from `pthread_getattr_np`) and 8-aligned.
        let v = unsafe { (w as *const usize).read_volatile() };
        v > site && v < site + HOOK_LEN
    })
}

/// Moves this thread's `rip` past the entry padding of the fix-up round's site if it is inside.
///
/// # Safety
///
/// Only the kernel calls it, as an `SA_SIGINFO` handler: `ctx` is the interrupted context.
unsafe extern "C" fn on_fixup(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // `Acquire`: pairs with `fixup_round`'s `Release`.
    let round = FIXUP_ROUND.load(Ordering::Acquire);
    let site = FIXUP_SITE.load(Ordering::Relaxed);
    // SAFETY: `ctx` is this handler's ucontext.
    let (pc, sp, _) = unsafe { sys::context_regs(ctx) };
    if site != 0 && pc > site && pc < site + ENTRY_NOPS {
        // SAFETY: the bytes between `pc` and the end of the hook are the entry NOPs not yet
        // overwritten (only the first byte is, with the trap); skipping them is executing them.
        unsafe { sys::set_context_ip_sp(ctx, site + ENTRY_NOPS, sp) };
        FIXUPS_APPLIED.fetch_add(1, Ordering::Relaxed);
    }
    // A thread signalled as one without a registry entry answers in that table (it may have
    // begun meanwhile: it answers both ways).
    answer_unregistered(round, sp, site);
    // A thread that ended its registration while the signal was pending has no entry to
    // acknowledge with: the writer stops waiting when it sees the entry marked exiting.
    let Some(t) = threads::current() else { return };
    let blocked = site != 0 && saved_context_inside(t, sp, site);
    // `Release`: pairs with `fixup_round`'s `Acquire`.
    t.fixup_round.store(round << 1 | u64::from(blocked), Ordering::Release);
}

/// A thread reached an entry being poked: emulates what the site means now.
///
/// # Safety
///
/// Only the kernel calls it, as an `SA_SIGINFO` handler: `ctx` is the interrupted context.
unsafe extern "C" fn on_trap(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: `ctx` is this handler's ucontext.
    let (pc, sp, _) = unsafe { sys::context_regs(ctx) };
    let site = pc.wrapping_sub(1);
    match hook::site_state(site) {
        Some(hook::HOOKED) => {
            // Emulate `call trampoline` from the site: push the return address the real call
            // pushes (the function's entry rsp is 8 mod 16, as after a call; the 8 bytes below
            // it are the red zone's, unused at a function entry).
            let ret_sp = sp - 8;
            // SAFETY: `ret_sp` is on the interrupted thread's stack, just below its rsp.
            unsafe { (ret_sp as *mut usize).write(site + HOOK_LEN) };
            // SAFETY: continuing in the trampoline with its expected stack.
            unsafe { sys::set_context_ip_sp(ctx, hook::trampoline_range().0, ret_sp) };
        }
        Some(_) => {
            // SAFETY: the entry's 16 bytes are padding (or a hook being removed, which is
            // dropped): continuing after them runs the original.
            unsafe { sys::set_context_ip_sp(ctx, site + ENTRY_NOPS, sp) };
        }
        None => {
            // Not ours: the default action (terminate with a core dump).
            // SAFETY: resetting a disposition and raising are async-signal-safe.
            unsafe {
                libc::signal(libc::SIGTRAP, libc::SIG_DFL);
                libc::raise(libc::SIGTRAP);
            }
        }
    }
}
