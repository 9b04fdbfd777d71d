//! The core's traits for a process: threads are tasks, a kick is a real-time signal whose
//! handler checks the thread's own stack, hooks are poked entry NOPs.
//!
//! What user space cannot do, and what is done instead:
//!
//! * **Pin another thread** (`task_call_func`): there is no way to keep a thread off its CPU
//!   and read its registers from outside without ptrace. [`pin`](Scheduler::pin) answers
//!   [`Pinned::Running`] for every thread but the caller; the engine then kicks the
//!   straggler, and the thread checks and switches *itself* in the signal handler — the
//!   user-space per-CPU pass, where the interrupted thread is held by construction.
//! * **Hold a CPU** (the per-CPU pass): [`for_each_task_on_cpu`](Scheduler::for_each_task_on_cpu)
//!   visits nothing; the kick handler does that pass's work.
//! * **Stop the machine**: [`stop_all`](Scheduler::stop_all) stops every registered thread
//!   with a signal whose handler parks it after recording its interrupted context
//!   ([`crate::stop`]); the walker then reads each parked thread's stack from that context.
//!   The freezer model is refused by [`crate::Runtime::init`].

use crate::hook;
use crate::poke;
use crate::sys;
use crate::threads::{self, KickResult, Thread};
use crate::walk::{self, Start, Walker};
use livepatch_core::backend::{Backend, ErrorKind, Pinned, Scheduler, TaskCursor, Tracer};
use livepatch_core::sweep::{StallReason, Verdict};
use livepatch_core::{CodeRange, CpuId, ObjectId, SlotId};
use std::sync::atomic::{AtomicU64, Ordering};

/// Kick signals sent.
pub(crate) static KICKS_SENT: AtomicU64 = AtomicU64::new(0);
/// Threads switched by a kick handler.
pub(crate) static KICK_SWITCHES: AtomicU64 = AtomicU64::new(0);

/// The process backend (a unit: its state is the thread registry and the site table).
///
/// Only the runtime has one: its [`Tracer`] writes hooks over the code it is given, which the
/// engine takes from patches the runtime resolved by symbol. Safe code outside the crate
/// cannot make one and poke arbitrary text:
///
/// ```compile_fail,E0599
/// use livepatch_core::backend::Tracer;
/// use livepatch_core::{CodeRange, SlotId};
/// extern "C" fn victim() {}
/// let b = livepatch_user::backend::ProcessBackend::default();
/// // Writes a parked hook (`jmp short +14`) over `victim`'s first two bytes.
/// let _ = b.remove(SlotId(0), CodeRange::new(victim as usize, 16).unwrap());
/// ```
#[derive(Debug)]
pub struct ProcessBackend {
    retry_ns: AtomicU64,
}

impl ProcessBackend {
    /// The runtime's backend (see the type's documentation: the only one).
    pub(crate) fn new() -> Self {
        Self { retry_ns: AtomicU64::new(0) }
    }

    /// The delay the engine last asked for before its next completion attempt.
    pub fn retry_delay_ns(&self) -> u64 {
        self.retry_ns.load(Ordering::Relaxed)
    }
}

impl Backend for ProcessBackend {
    type Task = Thread;
    type Walker = Walker;
    type Tracer = ProcessBackend;
    type Scheduler = ProcessBackend;

    fn walker(&self) -> &Walker {
        &Walker
    }
    fn tracer(&self) -> &ProcessBackend {
        self
    }
    fn scheduler(&self) -> &ProcessBackend {
        self
    }
}

impl Scheduler for ProcessBackend {
    type Task = Thread;

    fn for_each_task<F>(&self, cursor: TaskCursor, max: usize, f: F) -> Option<TaskCursor>
    where
        F: FnMut(&Thread),
    {
        threads::for_each(cursor.0, max, f).map(TaskCursor)
    }

    fn for_each_task_on_cpu<F>(&self, _cpu: CpuId, _f: F)
    where
        F: FnMut(&Thread),
    {
    }

    fn for_each_cpu<F>(&self, mut f: F)
    where
        F: FnMut(CpuId),
    {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n as u32).for_each(|c| f(CpuId(c)));
    }

    fn pin<R, F>(&self, task: &Thread, f: F) -> Pinned<R>
    where
        F: FnOnce(&Thread) -> R,
    {
        match threads::current() {
            Some(me) if std::ptr::eq(me, task) => Pinned::Checked(f(task)),
            _ => Pinned::Running,
        }
    }

    fn kick(&self, task: &Thread) {
        if kick_thread(task) {
            KICKS_SENT.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn stop_all<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R,
    {
        crate::stop::stop_all(f)
    }

    fn schedule_retry(&self, delay_ns: u64) {
        self.retry_ns.store(delay_ns, Ordering::Relaxed);
    }

    fn synchronize(&self) {
        threads::grace_period();
    }

    fn now_ns(&self) -> u64 {
        sys::now_ns()
    }
}

impl Tracer for ProcessBackend {
    type Error = ErrorKind;

    fn install(&self, slot: SlotId, func: CodeRange) -> Result<(), ErrorKind> {
        let entry = func.start().get();
        if func.len() < hook::ENTRY_NOPS {
            return Err(ErrorKind::Hook);
        }
        // SAFETY: `func` is a function the patch loader resolved by symbol, with its size (at
        // least 16 bytes, checked above): only the runtime has a `ProcessBackend`, and its
        // engine installs only the functions of patches the runtime loaded.
        if !unsafe { hook::is_patchable(entry) } {
            return Err(ErrorKind::Hook);
        }
        hook::set_hooked(entry, slot).ok_or(ErrorKind::Hook)?;
        // SAFETY: the entry is patchable (checked above) and the site says "hooked".
        unsafe { poke::poke(entry, &hook::hook_bytes()) }.map_err(|_| {
            hook::set_unhooked(entry);
            ErrorKind::Hook
        })
    }

    fn remove(&self, slot: SlotId, func: CodeRange) -> Result<(), ErrorKind> {
        let entry = func.start().get();
        hook::set_unhooked(entry);
        // SAFETY: the entry is one of our hooks (the runtime's engine removes only what it
        // installed: the type's documentation); the site now says "unhooked".
        if unsafe { poke::poke(entry, &hook::parked_bytes()) }.is_err() {
            // Nothing was written (`poke` fails only before its first write): the hook stays,
            // and the engine keeps the slot hooked and may push variants on it again without
            // installing anything, so the site must say "hooked" again
            // (`tests/unhook_fails.rs`).
            hook::set_hooked(entry, slot);
            return Err(ErrorKind::Hook);
        }
        // Threads still deciding for this site (they entered before the site said
        // "unhooked") finish before the engine reuses the slot.
        threads::grace_period();
        Ok(())
    }

    fn object_loaded(&self, object: ObjectId) -> bool {
        crate::objects::is_loaded(object)
    }
}

/// Sends `task` the kick signal, unless one is pending or it has not started; whether it
/// sent one. (The engine's kicks are counted by [`Scheduler::kick`]; a grace period's, which
/// only make a thread enter the runtime, are not: [`threads::grace_period`].)
pub(crate) fn kick_thread(task: &Thread) -> bool {
    let tid = task.tid();
    if tid == 0 || task.kick_pending.swap(true, Ordering::Relaxed) {
        return false;
    }
    if sys::tgkill(tid, poke::kick_signal()).is_err() {
        task.kick_pending.store(false, Ordering::Relaxed);
        return false;
    }
    true
}

/// Installs the kick handler.
pub(crate) fn install_kick_handler() -> Result<(), crate::Error> {
    sys::install_handler(poke::kick_signal(), on_kick, false, &[poke::fixup_signal(), crate::stop::stop_signal()])
        .map_err(|e| crate::Error::Sys("sigaction(kick)", e))
}

/// A kicked thread checks its own stack from the interrupted context and switches if
/// nothing it is switching away from is on it.
///
/// # Safety
///
/// Only the kernel calls it, as an `SA_SIGINFO` handler: `ctx` is the interrupted context.
unsafe extern "C" fn on_kick(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(thread) = threads::current() else { return };
    thread.kick_pending.store(false, Ordering::Relaxed);
    thread.signals.fetch_add(1, Ordering::Relaxed);
    let Some(live) = hook::live() else { return };
    // SAFETY: `ctx` is this handler's ucontext.
    let (pc, sp, fp) = unsafe { sys::context_regs(ctx) };
    // The word at the interrupted stack pointer is this handler's witness (`Thread::outlived`):
    // the interrupted context's, unchanged while the handler runs below its red zone.
    // SAFETY: `sp` is the interrupted stack pointer of this thread, a mapped stack word.
    let witness = unsafe { (sp as *const usize).read_volatile() };
    thread.read_enter(sp, witness);
    let prev = walk::set_start(Start::Interrupted { pc, sp, fp });
    let result = match live.task_work(thread, &Walker) {
        Verdict::NotPending => KickResult::Nothing,
        Verdict::Switched(_) => {
            KICK_SWITCHES.fetch_add(1, Ordering::Relaxed);
            KickResult::Switched
        }
        Verdict::Blocked(StallReason::OnStack { slot, .. }) => KickResult::OnStack(slot),
        Verdict::Blocked(StallReason::Unreliable(ErrorKind::InRedirect)) => KickResult::InRedirect,
        Verdict::Blocked(StallReason::TooDeep) => KickResult::TooDeep,
        Verdict::Blocked(StallReason::Raced) => KickResult::Raced,
        Verdict::Blocked(_) => KickResult::Unreliable,
    };
    thread.last_kick.store(result.encode(), Ordering::Relaxed);
    walk::set_start(prev);
    thread.read_exit();
}
