//! Threads as tasks: the registry of every thread that runs patchable code, each with its
//! 4-byte patch-state word, in creation order.
//!
//! A thread joins in one of two ways:
//!
//! * a **child** is prepared by its creating thread ([`prepare_child`]) *before*
//!   `pthread_create`: the entry is allocated, inherits its parent's word (the core's fork
//!   rule, [`Live::fork`](livepatch_core::Live::fork)) and is appended to the registry under
//!   one lock hold, so a sweep either visits it or visited the parent before the copy; the
//!   child then calls [`begin`] first thing in its start routine;
//! * a **root** thread (the main thread, a thread of a library that did not prepare it) calls
//!   [`begin`] without a token. That is refused while a patch is registered: the thread ran
//!   originals until then, and no universe word says "runs the originals below an enabled
//!   patch".
//!
//! A thread leaves with [`end`]: it is marked exiting, then dropped from the registry (it runs
//! no patched code after that).

use crate::error::Error;
use livepatch_core::backend::{Task, TaskFlags, TaskKind};
use livepatch_core::{CpuId, TaskId, TaskPatchState};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One registered thread.
#[derive(Debug)]
pub struct Thread {
    seq: u64,
    tid: AtomicI32,
    state: TaskPatchState,
    flags: AtomicU8,
    /// The frame record of the thread's start routine (its `rbp`), where a reliable walk
    /// ends; 0 until [`begin`].
    base_fp: AtomicUsize,
    /// The lowest address of the thread's stack (from [`begin`]): a walk reads the stack
    /// from a point at or above it up to `base_fp`, which [`begin`] checked is below its top.
    stack_lo: AtomicUsize,
    /// The top of the thread's stack (from [`begin`]; 0 before).
    stack_hi: AtomicUsize,
    /// A kick signal was sent and not yet handled (real-time signals queue; one is enough).
    pub(crate) kick_pending: AtomicBool,
    /// Read-side nesting depth (hook decisions and signal handlers reading the engine's
    /// live state); see [`crate::backend`]'s grace period.
    read_depth: AtomicU32,
    /// Incremented each time the outermost read-side section ends.
    read_gen: AtomicU32,
    /// The `top` and `witness` of each read-side section the thread is in
    /// ([`Thread::read_enter`]), the outermost first; none kept deeper than [`MAX_SECTIONS`].
    /// Only the owning thread (or its signal handler, which nests) reads or writes them.
    sections: [[AtomicUsize; 2]; MAX_SECTIONS],
    /// Kick signals this thread handled.
    pub(crate) signals: AtomicU64,
    /// Its answer to the last text-poke fix-up round: `round << 1`, plus 1 when its stack held
    /// a saved context inside the entry padding ([`crate::poke`]).
    pub(crate) fixup_round: AtomicU64,
    /// What this thread's last kick handler found ([`KickResult`], encoded).
    pub(crate) last_kick: AtomicU64,
    /// Its answer to the last stop request (round and status, [`crate::stop`]).
    pub(crate) stop_state: AtomicU64,
    /// The interrupted `rip`, `rsp`, `rbp` its stop handler recorded before parking.
    pub(crate) stop_regs: [AtomicUsize; 3],
    /// Quiescent points passed (safe points, the thread's end): the grace periods of shadow
    /// variables ([`crate::shadow`]).
    quiescent: AtomicU64,
    /// In an extended quiescent state ([`Thread::go_offline`]): holds no shadow data.
    offline: AtomicBool,
}

/// Read-side sections whose `top` a thread remembers: one per level of signal-handler
/// nesting (a hook decision, a safe point or a kick handler, each possibly interrupted by a
/// handler that enters another).
const MAX_SECTIONS: usize = 8;

/// What a kick handler found when it checked its thread's stack (the stall report's detail:
/// the engine's sweep only sees "running" for another thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KickResult {
    /// No kick handled yet, or the thread was not pending.
    Nothing,
    /// It switched.
    Switched,
    /// Code being switched away from was on its stack: the function of this slot.
    OnStack(livepatch_core::SlotId),
    /// The walk was unreliable.
    Unreliable,
    /// It was interrupted inside a redirect decision.
    InRedirect,
    /// Its stack was deeper than the walk limit.
    TooDeep,
    /// Its word changed while it was checked.
    Raced,
}

impl KickResult {
    pub(crate) fn encode(self) -> u64 {
        match self {
            KickResult::Nothing => 0,
            KickResult::Switched => 1,
            KickResult::OnStack(s) => 2 | u64::from(s.0) << 8,
            KickResult::Unreliable => 3,
            KickResult::InRedirect => 4,
            KickResult::TooDeep => 5,
            KickResult::Raced => 6,
        }
    }

    fn decode(v: u64) -> Self {
        match v & 0xff {
            1 => KickResult::Switched,
            2 => KickResult::OnStack(livepatch_core::SlotId((v >> 8) as u32)),
            3 => KickResult::Unreliable,
            4 => KickResult::InRedirect,
            5 => KickResult::TooDeep,
            6 => KickResult::Raced,
            _ => KickResult::Nothing,
        }
    }
}

impl Thread {
    fn new(seq: u64) -> Self {
        Self {
            seq,
            tid: AtomicI32::new(0),
            state: TaskPatchState::new(),
            flags: AtomicU8::new(0),
            base_fp: AtomicUsize::new(0),
            stack_lo: AtomicUsize::new(0),
            stack_hi: AtomicUsize::new(0),
            kick_pending: AtomicBool::new(false),
            read_depth: AtomicU32::new(0),
            read_gen: AtomicU32::new(0),
            sections: [const { [AtomicUsize::new(0), AtomicUsize::new(0)] }; MAX_SECTIONS],
            signals: AtomicU64::new(0),
            fixup_round: AtomicU64::new(0),
            last_kick: AtomicU64::new(0),
            stop_state: AtomicU64::new(0),
            stop_regs: [const { AtomicUsize::new(0) }; 3],
            quiescent: AtomicU64::new(0),
            offline: AtomicBool::new(false),
        }
    }

    /// The kernel thread id, 0 before the thread began.
    pub fn tid(&self) -> i32 {
        self.tid.load(Ordering::Relaxed)
    }

    /// The frame record where a reliable walk of this thread ends (0 before it began).
    pub(crate) fn base_fp(&self) -> usize {
        self.base_fp.load(Ordering::Relaxed)
    }

    /// The lowest address of the thread's stack (0 before it began).
    pub(crate) fn stack_lo(&self) -> usize {
        self.stack_lo.load(Ordering::Relaxed)
    }

    /// The top of the thread's stack (0 before it began).
    pub(crate) fn stack_hi(&self) -> usize {
        self.stack_hi.load(Ordering::Relaxed)
    }

    /// Whether the thread ended its registration ([`end`]): it runs no patched code any more.
    pub(crate) fn has_ended(&self) -> bool {
        // `Relaxed`: a stop condition for waiters only; the thread's own program order puts
        // everything it ran before `end` ahead of the locked `fetch_or` that sets the flag.
        self.flags.load(Ordering::Relaxed) & TaskFlags::EXITING.bits() != 0
    }

    /// What the thread's last kick handler found.
    pub fn last_kick(&self) -> KickResult {
        KickResult::decode(self.last_kick.load(Ordering::Relaxed))
    }

    /// Kick signals this thread has handled.
    pub fn signals_handled(&self) -> u64 {
        self.signals.load(Ordering::Relaxed)
    }

    /// Records a quiescent point: the thread holds no shadow-variable data it got before
    /// ([`crate::shadow`]). Only the owning thread calls it.
    #[inline(always)]
    pub(crate) fn quiescent_point(&self) {
        let q = self.quiescent.load(Ordering::Relaxed);
        // `Release`: pairs with the shadow reclaimer's `Acquire` in `quiescent_count`: the
        // thread's uses of shadow data before this point happen before the data is freed.
        self.quiescent.store(q.wrapping_add(1), Ordering::Release);
    }

    /// Enters an extended quiescent state (liburcu's `rcu_thread_offline`): until
    /// [`go_online`](Self::go_online) the thread uses no shadow data, and the reclaimer does
    /// not wait for it. Only the owning thread calls it.
    pub(crate) fn go_offline(&self) {
        self.quiescent_point();
        // `Release`: as `quiescent_point`'s, for a reclaimer that sees the thread offline.
        self.offline.store(true, Ordering::Release);
    }

    /// Leaves the extended quiescent state. The fence orders the store before the thread's
    /// next shadow lookups; the reclaimer's `membarrier` before it reads this flag is the
    /// other half: either the reclaimer sees the thread online (and waits for its next
    /// quiescent point), or the thread's lookups see what was freed before.
    pub(crate) fn go_online(&self) {
        self.offline.store(false, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Whether the thread is in an extended quiescent state.
    pub(crate) fn is_offline(&self) -> bool {
        // `Acquire`: pairs with `go_offline`'s `Release`.
        self.offline.load(Ordering::Acquire)
    }

    /// The number of quiescent points passed.
    pub(crate) fn quiescent_count(&self) -> u64 {
        // `Acquire`: pairs with `quiescent_point`'s `Release`.
        self.quiescent.load(Ordering::Acquire)
    }

    /// Whether a context of this thread's that entered the runtime with `top` and `witness`
    /// (a hook decision, a safe point, a signal handler) has ended, seen from a context of the
    /// same thread whose stack lies below `here`.
    ///
    /// `top` is a word of the entering context's stack that stays unchanged while it is live,
    /// with everything it runs or nests (a callee, a signal handler on the same stack)
    /// strictly below it, and `witness` its value: the return address into the code that
    /// called the runtime and its slot, or the word at the stack pointer a signal
    /// interrupted. So if the context is live, a context of the thread's that runs now is
    /// nested in it: below `top`, where the word is still `witness`. A context at or above
    /// `top`, or a different word there, means that it left that stack: it returned, or
    /// never will (a signal handler of the program's own interrupted it and left with
    /// `siglongjmp`). Only on the thread's own stack: on another one (an alternate signal
    /// stack) nothing is concluded and the context counts as live. A stale word that happens
    /// to equal `witness` only makes a context that is over count as live.
    pub(crate) fn outlived(&self, top: usize, witness: usize, here: usize) -> bool {
        let (lo, hi) = (self.stack_lo(), self.stack_hi());
        let on_stack = |a: usize| lo != 0 && lo <= a && a.is_multiple_of(8) && a < hi;
        if top == 0 || !on_stack(top) || !on_stack(here) {
            return false;
        }
        if here >= top {
            return true;
        }
        // SAFETY: `top` is on this thread's stack (checked above), 8-aligned, above `here`,
        // which is at or above the calling context's stack pointer: a live, mapped word.
        unsafe { (top as *const usize).read_volatile() != witness }
    }

    /// Enters a read-side section (a reader of the engine's live state) for a context that
    /// entered the runtime with `top` and `witness` ([`outlived`](Self::outlived); `top` 0:
    /// unknown).
    ///
    /// Sections of this thread's that it outlived never ended (left with `siglongjmp`): they
    /// are dropped first, and if that ends the outermost, the generation moves on as if it
    /// had ended, so a grace period waiting for it is over (`tests/longjmp_decision.rs`).
    ///
    /// Plain stores, no barrier: the writer's [`grace_period`] issues a process-wide
    /// `membarrier`, which orders these stores against its reads (liburcu's `memb` flavour).
    /// Only the owning thread (or its signal handler, which nests) writes these words.
    #[inline(always)]
    pub(crate) fn read_enter(&self, top: usize, witness: usize) {
        let depth = self.read_depth.load(Ordering::Relaxed) as usize;
        let mut d = depth;
        while d > 0 && d <= MAX_SECTIONS {
            let [t, w] = &self.sections[d - 1];
            if !self.outlived(t.load(Ordering::Relaxed), w.load(Ordering::Relaxed), top) {
                break;
            }
            d -= 1;
        }
        if d == 0 && depth != 0 {
            let g = self.read_gen.load(Ordering::Relaxed);
            self.read_gen.store(g.wrapping_add(1), Ordering::Relaxed);
        }
        if let Some([t, w]) = self.sections.get(d) {
            t.store(top, Ordering::Relaxed);
            w.store(witness, Ordering::Relaxed);
        }
        // At most the depth it was, plus one: it fits.
        self.read_depth.store(d as u32 + 1, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
    }

    /// Leaves a read-side section.
    #[inline(always)]
    pub(crate) fn read_exit(&self) {
        compiler_fence(Ordering::SeqCst);
        let d = self.read_depth.load(Ordering::Relaxed) - 1;
        if d == 0 {
            let g = self.read_gen.load(Ordering::Relaxed);
            self.read_gen.store(g.wrapping_add(1), Ordering::Relaxed);
        }
        self.read_depth.store(d, Ordering::Relaxed);
    }
}

impl Task for Thread {
    fn id(&self) -> TaskId {
        TaskId(self.seq as u32)
    }
    fn kind(&self) -> TaskKind {
        TaskKind::User
    }
    fn flags(&self) -> TaskFlags {
        TaskFlags::from_bits_truncate(self.flags.load(Ordering::Relaxed))
    }
    fn cpu(&self) -> CpuId {
        CpuId(0)
    }
    fn is_running(&self) -> bool {
        !is_current(self)
    }
    fn patch_state(&self) -> &TaskPatchState {
        &self.state
    }
}

struct Registry {
    next_seq: u64,
    threads: BTreeMap<u64, Arc<Thread>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { next_seq: 1, threads: BTreeMap::new() });

thread_local! {
    /// The calling thread's entry, or null. Const-initialised without a destructor, so a
    /// signal handler may read it.
    static CURRENT: Cell<*const Thread> = const { Cell::new(std::ptr::null()) };
    /// The registry this thread holds locked for a stop ([`hold`]), or null.
    static HELD: Cell<*const Registry> = const { Cell::new(std::ptr::null()) };
}

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registry, locked by the calling thread for as long as it lives: no thread can join
/// (be prepared, begin) or leave while it is held. The holder's own visits
/// ([`for_each`], [`snapshot`]) go through it instead of locking again.
pub(crate) struct Held(MutexGuard<'static, Registry>);

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| h.set(std::ptr::null()));
    }
}

/// Locks the registry for a stop (see [`Held`]).
pub(crate) fn hold() -> Held {
    let guard = registry();
    HELD.with(|h| h.set(&*guard as *const Registry));
    Held(guard)
}

impl Held {
    /// Every registered thread, in creation order.
    pub(crate) fn threads(&self) -> impl Iterator<Item = &Arc<Thread>> {
        self.0.threads.values()
    }
}

/// Runs `f` on the registry: through the calling thread's [`Held`] guard if it holds one,
/// else under the lock.
fn with_registry<R>(f: impl FnOnce(&Registry) -> R) -> R {
    let held = HELD.with(|h| h.get());
    if held.is_null() {
        return f(&registry());
    }
    // SAFETY: `HELD` is non-null only while this thread's `Held` guard lives (its `Drop`
    // clears it), and the guard keeps the registry locked, so no other thread mutates it.
    f(unsafe { &*held })
}

/// The calling thread's entry, if it is registered.
///
/// `'static` is a promise the signature does not keep: the entry is freed by this thread's
/// [`end`]. Callers use the reference within the function (or signal handler) that got it
/// and call nothing that may reach [`end`] meanwhile; [`end`] takes the registry's lock, so it
/// is not async-signal-safe and never runs inside a handler that interrupted such a caller.
#[inline(always)]
pub(crate) fn current() -> Option<&'static Thread> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: `CURRENT` is non-null only between `begin` and `end` on this thread, and the
    // registry holds an `Arc` to the entry for that whole time (`end` clears `CURRENT` before
    // dropping it), so the entry outlives every use on this thread.
    unsafe { p.as_ref() }
}

fn is_current(t: &Thread) -> bool {
    std::ptr::eq(CURRENT.with(|c| c.get()), t)
}

/// A child's entry, prepared by its parent; hand it to the child's [`begin`].
///
/// The entry is in the registry from [`prepare_child`] on. Dropped without reaching
/// [`begin`] (the thread was never created), the token takes it out again: an entry without a
/// thread could never be walked or kicked, and every transition would wait for it.
#[derive(Debug)]
pub struct ChildToken(Option<Arc<Thread>>);

impl ChildToken {
    /// The entry, which the caller now answers for.
    fn take(mut self) -> Arc<Thread> {
        // `Some` until taken, and this consumes the token.
        self.0.take().expect("a token holds its entry until taken")
    }
}

impl Drop for ChildToken {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            registry().threads.remove(&t.seq);
        }
    }
}

/// Prepares the entry of a thread the calling (registered) thread is about to create: it
/// inherits the parent's universe and pending state and joins the registry now.
///
/// Errors: [`Error::NotRegistered`] when the caller is not registered.
pub fn prepare_child() -> Result<ChildToken, Error> {
    let parent = current().ok_or(Error::NotRegistered)?;
    let mut reg = registry();
    let child = Arc::new(Thread::new(reg.next_seq));
    reg.next_seq += 1;
    // Under the registry lock: the engine visits tasks in batches under it, so it either sees
    // the child or retargeted the parent before this copy.
    child.state.inherit(&parent.state);
    reg.threads.insert(child.seq, child.clone());
    Ok(ChildToken(Some(child)))
}

/// Makes the calling thread a registered task. `base_fp` is the frame record of the thread's
/// start routine (`__builtin_frame_address(0)` there): stack walks end there.
///
/// With a token the thread is the prepared child; without one it is a root thread, refused
/// with [`Error::PatchesActive`] while `patches_active` says a patch is registered.
/// [`Error::AlreadyRegistered`] if the thread already began; [`Error::Frame`] if `base_fp` is
/// not 0 (no base: every walk of the thread is unreliable) or an 8-aligned address on the
/// calling thread's stack above the caller's frame, 16 bytes below its top at least — the
/// walks read the stack up to it.
pub fn begin(token: Option<ChildToken>, base_fp: usize, patches_active: impl FnOnce() -> bool) -> Result<(), Error> {
    if current().is_some() {
        return Err(Error::AlreadyRegistered);
    }
    let (stack_lo, stack_hi) = match check_frame(base_fp) {
        Ok(bounds) => bounds,
        Err(e) => {
            // A refused child leaves the registry as `prepare_child` found it (the token's
            // drop removes the entry).
            drop(token);
            return Err(e);
        }
    };
    // Under the registry lock: a thread cannot begin during a stop (which holds it), so a
    // stop sees every thread either started (and parked) or not started at all.
    let (_reg, entry) = match token {
        Some(token) => {
            let t = token.take();
            (registry(), t)
        }
        None => {
            if patches_active() {
                return Err(Error::PatchesActive);
            }
            let mut reg = registry();
            let t = Arc::new(Thread::new(reg.next_seq));
            reg.next_seq += 1;
            reg.threads.insert(t.seq, t.clone());
            (reg, t)
        }
    };
    entry.base_fp.store(base_fp, Ordering::Relaxed);
    entry.stack_lo.store(stack_lo, Ordering::Relaxed);
    entry.stack_hi.store(stack_hi, Ordering::Relaxed);
    // The registry keeps the entry alive until `end`.
    CURRENT.with(|c| c.set(Arc::as_ptr(&entry)));
    // The thread id last, after a signal fence: another thread signals this one only once it
    // sees the id (a fix-up round waits for a prepared child to begin, then for its handler's
    // answer), and the handler answers only if it finds the entry (`crate::poke`).
    compiler_fence(Ordering::SeqCst);
    entry.tid.store(crate::sys::gettid(), Ordering::Relaxed);
    Ok(())
}

/// The bounds `[lo, hi)` of the calling thread's stack, if `base_fp` is 0 or a frame record on
/// that stack above this function's frame (and so above its caller's), 8-aligned, with its 16
/// bytes below the stack's top. Not inlined: its frame is below the caller's.
#[inline(never)]
fn check_frame(base_fp: usize) -> Result<(usize, usize), Error> {
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let (lo, hi) = crate::sys::stack_bounds().map_err(|e| Error::Sys("pthread_getattr_np", e))?;
    let on_stack = lo <= here && here < base_fp && base_fp.checked_add(16).is_some_and(|end| end <= hi);
    if base_fp != 0 && !(on_stack && base_fp.is_multiple_of(8)) {
        return Err(Error::Frame(base_fp));
    }
    Ok((lo, hi))
}

/// Removes the calling thread from the registry (it must run no patched code afterwards).
///
/// Not async-signal-safe (it takes the registry's lock): never call it from a signal handler.
pub fn end() {
    let Some(t) = current() else { return };
    // A thread that ended holds no shadow data: the reclaimer stops waiting for it.
    t.quiescent_point();
    // Under the registry lock: a stop either finds the thread registered (and stops it) or
    // gone.
    let mut reg = registry();
    t.flags.fetch_or(TaskFlags::EXITING.bits(), Ordering::Relaxed);
    let seq = t.seq;
    CURRENT.with(|c| c.set(std::ptr::null()));
    reg.threads.remove(&seq);
}

/// Visits at most `max` threads with sequence number `>= from`, in creation order; returns
/// the next sequence number to visit, or `None` after the last.
pub(crate) fn for_each(from: u64, max: usize, mut f: impl FnMut(&Thread)) -> Option<u64> {
    with_registry(|reg| {
        let mut it = reg.threads.range(from..);
        for _ in 0..max {
            match it.next() {
                Some((_, t)) => f(t),
                None => return None,
            }
        }
        it.next().map(|(seq, _)| *seq)
    })
}

/// How many threads are registered.
pub(crate) fn count() -> usize {
    with_registry(|reg| reg.threads.len())
}

/// Every registered thread (a snapshot).
pub(crate) fn snapshot() -> Vec<Arc<Thread>> {
    with_registry(|reg| reg.threads.values().cloned().collect())
}

/// How long a grace period waits for a thread before it kicks it, and then between kicks.
/// Long enough that a reader merely preempted in its section is seldom kicked: with 1 ms,
/// the stop-the-world stress (debug, 20 transitions, load 6-8) took 12-26 s against 3-6 s.
const GRACE_KICK: Duration = Duration::from_millis(10);

/// Waits until every registered thread has left the read-side section it was in when this
/// was called (the grace period of the engine's `Scheduler::synchronize`).
///
/// A thread still in a section after [`GRACE_KICK`] is kicked (again every [`GRACE_KICK`]):
/// a section left with `siglongjmp` is dropped only when the thread next enters the runtime
/// ([`Thread::read_enter`]), and a thread blocked elsewhere would not otherwise
/// (`tests/longjmp_decision.rs`). A live section is not shortened by it: the kick handler
/// nests.
pub(crate) fn grace_period() {
    // Orders the writer's earlier stores (a published index, an unlinked node) before every
    // running reader's later loads, and the readers' depth stores before our loads below.
    crate::sys::barrier_all();
    for t in snapshot() {
        if t.read_depth.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let gen = t.read_gen.load(Ordering::Relaxed);
        let mut kick_at = Instant::now() + GRACE_KICK;
        while t.read_depth.load(Ordering::Relaxed) != 0 && t.read_gen.load(Ordering::Relaxed) == gen {
            if Instant::now() >= kick_at {
                let _ = crate::backend::kick_thread(&t);
                kick_at += GRACE_KICK;
            }
            std::thread::yield_now();
            crate::sys::barrier_all();
        }
    }
    // Orders the readers' finished sections before whatever the writer does next.
    crate::sys::barrier_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child whose `begin` is refused (a frame not on its stack) leaves no entry behind: a
    /// prepared entry that never begins stays registered with tid 0 for good.
    #[test]
    fn a_refused_child_leaves_the_registry_as_it_was() {
        std::thread::spawn(|| {
            let local = 0usize;
            begin(None, &local as *const usize as usize, || false).expect("the parent begins");
            let before = count();
            let token = prepare_child().expect("a child is prepared");
            assert_eq!(count(), before + 1);
            let child = std::thread::spawn(move || begin(Some(token), 8, || false).map_err(|e| e.to_string()));
            assert!(child.join().expect("the child ran").is_err(), "frame 8 was accepted");
            assert_eq!(count(), before, "the refused child's entry stayed registered");
            end();
        })
        .join()
        .expect("the parent ran");
    }
}
