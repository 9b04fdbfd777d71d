// SPDX-License-Identifier: GPL-2.0

//! Per-task patch state, and the backend's task type.
//!
//! A module cannot add a field to `task_struct` (and `task_struct::patch_state` belongs to the
//! kernel's own livepatch), so each task's 4-byte [`TaskPatchState`] lives in a record the C
//! shim keeps (see "Task records" in `shim.c`): created for every task when tracking starts,
//! for each child at fork with its parent's word, removed when the `task_struct` is freed.
//! No fixed capacity; lock-free lookups; an O(N) walk that misses no task.
//!
//! A task without a record can only be one the shim could not allocate a record for at fork
//! (counted, and recorded before a transition may complete: see [`crate::backend`]) or one that
//! was already past `__unhash_process()` when tracking started. It reads [`UNTRACKED`]: the
//! universe every task starts the transition in, with the transition's target — never the
//! patched universe of a transition that has not reached it.

use crate::shim::{self, TaskInfo, TaskStruct};
use core::cell::Cell;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};
use livepatch_core::backend::{Task, TaskFlags, TaskKind};
use livepatch_core::{CpuId, PatchState, TaskId, TaskPatchState};

/// `struct lp_task_rec`'s first three fields (the rest is the shim's; `shim.c` asserts the
/// offsets).
#[repr(C)]
pub(crate) struct TaskRec {
    state: TaskPatchState,
    /// Task work queued for the task: [`KICK_RESUME`] and/or [`KICK_SIGNAL`].
    kicks: AtomicU8,
    /// The task (the hash key); NULL once the record is removed (written by the shim under
    /// its table lock).
    task: AtomicPtr<TaskStruct>,
}

const _: () = assert!(core::mem::offset_of!(TaskRec, kicks) == 4 && core::mem::offset_of!(TaskRec, task) == 8);

/// A `TWA_RESUME` work (armed at transition start) is queued.
pub(crate) const KICK_RESUME: u8 = 1;
/// A `TWA_SIGNAL` work (a straggler's fake signal) is queued.
pub(crate) const KICK_SIGNAL: u8 = 2;

/// The word of a task without a record, and the first word of a record created for a task
/// found without one: outside transitions idle; during one, the universe the transition
/// started from (kept by [`untracked_start`]), pending towards its target, until a walk over
/// every record ends with no task left without one ([`lp_rs_untracked_settle`]): from then
/// on the target.
pub(crate) static UNTRACKED: TaskPatchState = TaskPatchState::new();

/// A walk over every record ended and no fork since the last populate failed to get a record
/// (the shim calls this under its table lock, which the fork hook holds when it counts such a
/// fork or copies this word into a new record): no task forked without a record has run
/// `UNTRACKED`'s universe, so it can move to the target. A child forked without a record from
/// now on starts there, with a fresh stack, as its parent (every tracked task, once the
/// engine completes) runs — never the start universe that the completion would then switch
/// whatever its stack held. A reversal keeps the state it reached (`retarget`), so a child
/// that started there keeps running it until a later walk gives it a record and checks it.
#[no_mangle]
pub(crate) extern "C" fn lp_rs_untracked_settle() {
    UNTRACKED.force_switch();
}

/// A transition from `start` towards `target` began or was reversed (`UNTRACKED` keeps
/// `start`, the universe untracked tasks have run since the transition began), or ended
/// (`None`: idle).
pub(crate) fn untracked_start(start_target: Option<(PatchState, PatchState)>) {
    match start_target {
        Some((start, target)) => {
            UNTRACKED.reset(start);
            UNTRACKED.retarget(target);
        }
        None => UNTRACKED.reset(PatchState::Idle),
    }
}

/// The record of task `t`, if it has one. Lock-free. Valid while `t` is (current, or the
/// caller holds a reference on it): a record lives as long as its `task_struct`.
#[inline]
fn record(t: *mut TaskStruct) -> Option<&'static TaskRec> {
    // SAFETY: `lp_shim_task_rec` returns NULL or a live record, which starts with the fields of
    // `TaskRec` (`u32` word = `TaskPatchState`, `repr(transparent)` over `AtomicU32`; `u8`
    // kicks). 'static is the caller's contract above (the record outlives every use of `t`).
    unsafe { shim::lp_shim_task_rec(t).cast::<TaskRec>().as_ref() }
}

/// The word of task `t`, if it has a record.
#[inline]
pub(crate) fn lookup(t: *mut TaskStruct) -> Option<&'static TaskPatchState> {
    record(t).map(|r| &r.state)
}

/// The patch state of task `t` as `/proc/<pid>/patch_state` shows it: -1 between transitions
/// (and for a task without a record, which runs `UNTRACKED`'s universe), else 0 (unpatched) or
/// 1 (patched). The caller keeps `t` alive (RCU).
#[no_mangle]
pub(crate) extern "C" fn lp_rs_task_patch_state(t: *mut TaskStruct) -> core::ffi::c_int {
    use livepatch_core::PatchState;
    match lookup(t).unwrap_or(&UNTRACKED).state() {
        PatchState::Idle => -1,
        PatchState::Unpatched => 0,
        PatchState::Patched => 1,
    }
}

/// The word of `curr`, the current task, if `cached` — this CPU's `lp_rec_cache` entry, which
/// the C handler read (`this_cpu_read`) — is its record: a load of the record's task, beside
/// its word. `None` is a miss (the first call in a transition after a context switch, or
/// another task's record cached): then [`current_word_refill`].
///
/// The caller runs with preemption disabled (the ftrace handler), from the read of the entry
/// on. Why the cached record is never stale or freed: "Task records" in `shim.c` (a removed
/// record's task is NULL before its `task_struct` can be reused; the entry is cleared between
/// two grace periods before the record is freed).
#[inline(always)]
pub(crate) fn cached_word(curr: *mut TaskStruct, cached: *const TaskRec) -> Option<&'static TaskPatchState> {
    // SAFETY: NULL or a record not yet freed: the shim frees a record only after clearing
    // every entry holding it and a grace period that this preempt-disabled caller delays.
    let rec = unsafe { cached.as_ref() }?;
    // Relaxed: a removal's NULL store happens before the `task_struct` address can belong to
    // another task, and that task runs here only after (slab free, fork, scheduling).
    (rec.task.load(Ordering::Relaxed) == curr).then_some(&rec.state)
}

/// The word of `curr`, the current task, after a miss of [`cached_word`]: its record from the
/// table, which `lp_shim_task_rec_cache` also stores in this CPU's entry, or [`UNTRACKED`]
/// (not cached) for a task without one. Preemption disabled, as for [`cached_word`].
#[inline(always)]
pub(crate) fn current_word_refill(curr: *mut TaskStruct) -> &'static TaskPatchState {
    // SAFETY: the caller is the ftrace handler, preemption disabled, for `curr` = current.
    // The shim returns NULL or current's live record (`TaskRec`'s layout, asserted in `shim.c`),
    // which lives as long as current.
    unsafe { shim::lp_shim_task_rec_cache(curr).cast::<TaskRec>().as_ref() }.map_or(&UNTRACKED, |r| &r.state)
}

/// `wake_up_new_task()` and the populate pass: a new record's word, from the parent's word
/// (`NULL`: a task found without a record, which has run the untracked universe).
#[no_mangle]
pub(crate) extern "C" fn lp_rs_inherit(parent: *const u32, child: *mut u32) {
    // SAFETY: the shim passes NULL or the parent's live record word, and the child's new
    // record word, both `u32`s laid out as `TaskPatchState` (`repr(transparent)`).
    let (parent, child) = unsafe { (parent.cast::<TaskPatchState>().as_ref(), &*child.cast::<TaskPatchState>()) };
    crate::control::fork(parent.unwrap_or(&UNTRACKED), child);
}

/// Queues exit-to-user task work for user task `t` (`signal`: also interrupt its sleep), unless
/// one of that kind is already queued: at most one of each kind per task, so a task that stays
/// in the kernel for a long transition does not collect a work item per pass.
pub(crate) fn kick_user(t: *mut TaskStruct, signal: bool) {
    let bit = if signal { KICK_SIGNAL } else { KICK_RESUME };
    let Some(rec) = record(t) else { return };
    if rec.kicks.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        return;
    }
    // SAFETY: the caller holds a reference on `t`.
    if unsafe { shim::lp_shim_kick_user(t, signal) } != 0 {
        rec.kicks.fetch_and(!bit, Ordering::Relaxed);
    }
}

/// The task work of kind `signal` ran (or is being discarded) for `t` (current).
pub(crate) fn kick_done(t: *mut TaskStruct, signal: bool) {
    let bit = if signal { KICK_SIGNAL } else { KICK_RESUME };
    if let Some(rec) = record(t) {
        rec.kicks.fetch_and(!bit, Ordering::Relaxed);
    }
}

/// Records in use.
pub(crate) fn count() -> u32 {
    // SAFETY: no preconditions.
    unsafe { shim::lp_shim_tasks_count() }
}

/// A task as the core sees it: a `task_struct` pointer valid for the visit (a reference held by
/// the walk, the interrupt that found it current, or current itself), a snapshot of its fields,
/// and its word.
pub(crate) struct LinuxTask {
    pub(crate) ptr: *mut TaskStruct,
    pub(crate) info: TaskInfo,
    state: &'static TaskPatchState,
    /// Set by [`crate::backend::Sched::pin`] while it holds an offline CPU's idle task (the
    /// hotplug lock held): its stack is never returned into, so the walker reports it empty.
    pub(crate) parked: Cell<bool>,
}

impl LinuxTask {
    /// Wraps `t` if it has a record.
    pub(crate) fn new(t: *mut TaskStruct) -> Option<LinuxTask> {
        Some(Self::with_state(t, lookup(t)?))
    }

    /// The current task, if it has a record.
    pub(crate) fn current() -> Option<LinuxTask> {
        Self::new(shim::current())
    }

    /// The tasks forked without a record that a populate pass could not give one, as one task
    /// of the walk (`Sched::for_each_task`): no `task_struct` (null), [`UNTRACKED`]'s word, a
    /// kthread for the core (never kicked), always running (never pinned or walked). Its id is
    /// [`UNTRACKED_FORKS_PID`].
    pub(crate) fn untracked_forks() -> LinuxTask {
        let mut info = shim::TaskInfo::default();
        info.pid = UNTRACKED_FORKS_PID;
        info.kthread = true;
        LinuxTask { ptr: core::ptr::null_mut(), info, state: &UNTRACKED, parked: Cell::new(false) }
    }

    /// Whether this is [`LinuxTask::untracked_forks`].
    pub(crate) fn is_untracked_forks(&self) -> bool {
        self.ptr.is_null()
    }

    /// Wraps `t` whose word is `state`.
    pub(crate) fn with_state(t: *mut TaskStruct, state: &'static TaskPatchState) -> LinuxTask {
        LinuxTask { ptr: t, info: shim::task_info(t), state, parked: Cell::new(false) }
    }
}

/// The pid [`LinuxTask::untracked_forks`] reports (stall reports name it `(untracked)`).
pub(crate) const UNTRACKED_FORKS_PID: i32 = -1;

/// A NUL-terminated `comm` as a string.
pub(crate) fn comm_str(comm: &[u8; 16]) -> &str {
    let n = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    core::str::from_utf8(&comm[..n]).unwrap_or("?")
}

impl Task for LinuxTask {
    fn id(&self) -> TaskId {
        TaskId(self.info.pid as u32)
    }

    fn kind(&self) -> TaskKind {
        if self.info.idle {
            TaskKind::Idle(CpuId(self.info.cpu))
        } else if self.info.kthread {
            TaskKind::Kthread
        } else {
            TaskKind::User
        }
    }

    fn flags(&self) -> TaskFlags {
        // A fake signal here is task work with TWA_SIGNAL: it runs even in tasks that ignore
        // signals (init), so IGNORES_SIGNALS is never set.
        if self.info.exiting {
            TaskFlags::EXITING
        } else {
            TaskFlags::empty()
        }
    }

    fn cpu(&self) -> CpuId {
        CpuId(self.info.cpu)
    }

    fn is_running(&self) -> bool {
        if self.is_untracked_forks() {
            return true;
        }
        // SAFETY: `ptr` is valid for the visit.
        unsafe { shim::lp_shim_task_running(self.ptr) }
    }

    fn patch_state(&self) -> &TaskPatchState {
        self.state
    }
}
