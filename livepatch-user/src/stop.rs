//! Stopping every registered thread: the user-space `stop_machine` of the stop-the-world
//! model.
//!
//! The controller (the thread running the engine's completion attempt) locks the thread
//! registry — no thread can be prepared, begin or end until the stop is over — and sends
//! every started thread the stop signal (`SIGRTMIN+4`, `tgkill`). Its handler records the
//! interrupted `rip`, `rsp` and `rbp`, says "parked", and sleeps on a futex until the
//! controller opens the gate. The controller waits until every thread parked, runs the
//! engine's check-and-switch (the walker reads each parked thread's stack from its recorded
//! context, [`crate::walk`]), then opens the gate.
//!
//! * A thread interrupted **inside a hook decision** (its in-hook flag set, or inside the
//!   trampoline) does not park: its decision would be stale after a switch. It answers
//!   "retry" and is signalled again, until it is stopped outside one (the kernel's
//!   `stop_machine` likewise never stops a CPU inside an ftrace handler).
//! * A thread **blocked in a system call** is stopped too: the signal interrupts the call,
//!   which restarts (`SA_RESTART`) when the handler returns; `nanosleep` returns `EINTR`.
//! * A **prepared thread that has not begun** runs no patched code until it begins, and it
//!   cannot begin during a stop (the registry lock): its stack holds nothing to check.
//! * A thread that does not park within [`STOP_TIMEOUT`] (the signal blocked, a thread stuck
//!   in a hook decision) is reported running: the attempt fails and nobody switches.
//!
//! The runtime's signal handlers block each other's signals, so the stop handler never
//! interrupts a kick, fix-up or trap handler (and none of them interrupts it).
//!
//! What the controller may do while threads are parked: nothing that takes a lock a parked
//! thread may hold. The engine's check-and-switch allocates nothing (the core has no
//! allocator), and [`crate::Runtime::step`] collects its stall reports into a buffer reserved
//! before the stop.

use crate::hook;
use crate::sys;
use crate::threads::{self, Thread};
use crate::walk;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the controller waits for every thread to park before it gives the attempt up.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// The stop signal.
pub(crate) fn stop_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// The round of the stop in progress (0: none). Rounds are numbered from 1.
static ROUND: AtomicU64 = AtomicU64::new(0);
/// The futex parked threads sleep on: the round's low 32 bits while the gate is closed, 0
/// when open.
static GATE: AtomicU32 = AtomicU32::new(0);
/// Rounds started so far.
static ROUNDS: AtomicU64 = AtomicU64::new(0);
/// Stop signals sent (first signals and retries).
pub(crate) static STOP_SIGNALS: AtomicU64 = AtomicU64::new(0);
/// Time from locking the registry to opening the gate, summed over stops and the longest.
static PAUSE_NS_TOTAL: AtomicU64 = AtomicU64::new(0);
static PAUSE_NS_MAX: AtomicU64 = AtomicU64::new(0);
/// Stops given up because a thread did not park in time.
pub(crate) static STOP_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// A thread's answer to a round: `round << 2 | status`.
const PARKED: u64 = 1;
const RETRY: u64 = 2;

thread_local! {
    /// This thread is running a stop (it holds the registry and reads parked stacks).
    static CONTROLLER: Cell<bool> = const { Cell::new(false) };
    /// An address in the frame of the runtime's entry into the engine on this thread (0: none):
    /// the frames below it are the runtime's and the core's, never patched code.
    static ENGINE_ENTRY: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` (a call into the engine) with `marker`, an address in the caller's frame, as the
/// lowest point of this thread's stack that a stop's controller scans: the engine's own
/// frames below it hold no return address into patched code, only dead slots whose stale
/// words would delay the stop for nothing (a stale word of an earlier call did, in a debug
/// build, once the engine's frame grew).
pub(crate) fn with_engine_entry<R>(marker: usize, f: impl FnOnce() -> R) -> R {
    let outer = ENGINE_ENTRY.with(|e| e.replace(marker));
    let r = f();
    ENGINE_ENTRY.with(|e| e.set(outer));
    r
}

/// The lowest address of the controller's stack its walk scans (see [`with_engine_entry`]);
/// `here` when no entry was recorded.
pub(crate) fn controller_scan_start(here: usize) -> usize {
    ENGINE_ENTRY.with(|e| e.get()).max(here)
}

/// How the controller's walker sees a thread during a stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// The walker is not running a stop: the usual rules apply.
    NoStop,
    /// The controller itself.
    Controller,
    /// Parked at this interrupted context.
    Parked {
        /// `rip`.
        pc: usize,
        /// `rsp`.
        sp: usize,
        /// `rbp`.
        fp: usize,
    },
    /// Prepared but not begun: no patched code on its stack.
    NotStarted,
    /// Did not park: its stack cannot be read.
    Running,
}

/// What the calling thread's walker may assume about `task`.
pub(crate) fn view(task: &Thread) -> Stopped {
    if !CONTROLLER.with(|c| c.get()) {
        return Stopped::NoStop;
    }
    if threads::current().is_some_and(|me| std::ptr::eq(me, task)) {
        return Stopped::Controller;
    }
    if task.tid() == 0 {
        return Stopped::NotStarted;
    }
    let round = ROUND.load(Ordering::Relaxed);
    // `Acquire`: pairs with the handler's `Release` of its answer, so the registers it stored
    // before are the ones read here.
    if task.stop_state.load(Ordering::Acquire) != round << 2 | PARKED {
        return Stopped::Running;
    }
    let r = &task.stop_regs;
    Stopped::Parked {
        pc: r[0].load(Ordering::Relaxed),
        sp: r[1].load(Ordering::Relaxed),
        fp: r[2].load(Ordering::Relaxed),
    }
}

/// Stops every registered thread but the caller, runs `f`, releases them; returns `f`'s
/// result. Threads that did not park in time are seen by the walker as not stopped.
pub(crate) fn stop_all<R>(f: impl FnOnce() -> R) -> R {
    let began = Instant::now();
    let held = threads::hold();
    let me = threads::current().map_or(std::ptr::null(), |t| t as *const Thread);
    let round = ROUNDS.fetch_add(1, Ordering::Relaxed) + 1;
    GATE.store(gate_value(round), Ordering::Relaxed);
    // `Release`: pairs with the handler's `Acquire` load of the round: the closed gate is
    // visible to a thread that sees the round.
    ROUND.store(round, Ordering::Release);
    let others: Vec<&Thread> = held.threads().map(|t| &**t).filter(|t| !std::ptr::eq(*t, me) && t.tid() != 0).collect();
    let signal = |t: &Thread| {
        if sys::tgkill(t.tid(), stop_signal()).is_ok() {
            STOP_SIGNALS.fetch_add(1, Ordering::Relaxed);
        }
    };
    // Allocated before the first signal: a parked thread may hold the allocator's lock.
    let mut waiting: Vec<&Thread> = others.clone();
    others.iter().for_each(|t| signal(t));
    let deadline = Instant::now() + STOP_TIMEOUT;
    while !waiting.is_empty() && Instant::now() < deadline {
        waiting.retain(|t| {
            // `Acquire`: pairs with the handler's `Release` (see `view`).
            let answer = t.stop_state.load(Ordering::Acquire);
            if answer == round << 2 | RETRY {
                t.stop_state.store(0, Ordering::Relaxed);
                signal(t);
            }
            answer != round << 2 | PARKED
        });
        if !waiting.is_empty() {
            std::thread::yield_now();
        }
    }
    if !waiting.is_empty() {
        STOP_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
    }
    CONTROLLER.with(|c| c.set(true));
    let result = f();
    CONTROLLER.with(|c| c.set(false));
    ROUND.store(0, Ordering::Relaxed);
    // `Release`: pairs with the parked handlers' `Acquire` load of the gate: every switch
    // `f` made is visible to a thread that sees the gate open.
    GATE.store(0, Ordering::Release);
    sys::futex_wake_all(&GATE);
    let pause = began.elapsed().as_nanos() as u64;
    PAUSE_NS_TOTAL.fetch_add(pause, Ordering::Relaxed);
    PAUSE_NS_MAX.fetch_max(pause, Ordering::Relaxed);
    drop(others);
    drop(waiting);
    drop(held);
    result
}

/// The gate's value while round `round` is stopped: never 0 (open), and different for
/// consecutive rounds, so a thread still parked for the previous round leaves when a new
/// round closes the gate (and parks again on the new round's signal).
fn gate_value(round: u64) -> u32 {
    (round % u64::from(u32::MAX)) as u32 + 1
}

/// Whether a stop is in progress: from the round's start (every thread about to be
/// signalled) until the controller opens the gate. A thread that begins or runs registered
/// code while this holds has escaped the stop (the registry lock forbids it).
pub fn in_progress() -> bool {
    ROUND.load(Ordering::Relaxed) != 0
}

/// Stops so far: (stops, stops in which some thread did not park in time, signals sent,
/// total and longest pause in ns).
pub(crate) fn counters() -> (u64, u64, u64, u64, u64) {
    (
        ROUNDS.load(Ordering::Relaxed),
        STOP_TIMEOUTS.load(Ordering::Relaxed),
        STOP_SIGNALS.load(Ordering::Relaxed),
        PAUSE_NS_TOTAL.load(Ordering::Relaxed),
        PAUSE_NS_MAX.load(Ordering::Relaxed),
    )
}

/// Installs the stop handler.
pub(crate) fn install_stop_handler() -> Result<(), crate::Error> {
    sys::install_handler(stop_signal(), on_stop, false, &[crate::poke::kick_signal(), crate::poke::fixup_signal()])
        .map_err(|e| crate::Error::Sys("sigaction(stop)", e))
}

/// Records the interrupted context and parks until the controller opens the gate; inside a
/// hook decision, asks to be signalled again instead.
///
/// # Safety
///
/// Only the kernel calls it, as an `SA_SIGINFO` handler: `ctx` is the interrupted context.
unsafe extern "C" fn on_stop(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // `Acquire`: pairs with `stop_all`'s `Release` store of the round.
    let round = ROUND.load(Ordering::Acquire);
    if round == 0 {
        return; // a late signal of a stop that is over
    }
    let Some(thread) = threads::current() else { return };
    // SAFETY: `ctx` is this handler's ucontext.
    let (pc, sp, fp) = unsafe { sys::context_regs(ctx) };
    let (t0, t1) = hook::trampoline_range();
    if walk::in_hook(thread, sp) || (pc >= t0 && pc < t1) {
        // `Release`: pairs with the controller's `Acquire` load of the answer.
        thread.stop_state.store(round << 2 | RETRY, Ordering::Release);
        return;
    }
    thread.stop_regs[0].store(pc, Ordering::Relaxed);
    thread.stop_regs[1].store(sp, Ordering::Relaxed);
    thread.stop_regs[2].store(fp, Ordering::Relaxed);
    // `Release`: the registers above are visible to the controller's `Acquire` in `view`.
    thread.stop_state.store(round << 2 | PARKED, Ordering::Release);
    let closed = gate_value(round);
    // `Acquire`: pairs with `stop_all`'s `Release` opening of the gate.
    while GATE.load(Ordering::Acquire) == closed {
        sys::futex_wait(&GATE, closed);
    }
}
