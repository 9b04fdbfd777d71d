// SPDX-License-Identifier: GPL-2.0

//! Per-task patch state kept by the module, and the backend's task type.
//!
//! The kernel's own `task_struct::patch_state` belongs to kernel livepatch, and a module cannot
//! add a field to `task_struct`. So the module keeps a fixed table, keyed by `task_struct`
//! address, of 4-byte [`TaskPatchState`] words: open addressing with linear probing, lock-free
//! lookups (the redirect hot path), inserts under one IRQ-safe spinlock. Entries are created
//! by the task walk (every task existing at a transition's start is visited before the
//! transition is published) and by the fork hook (a child inherits its parent's word before it
//! first runs), so a task unknown to the table during a transition cannot exist — except on
//! overflow, which sets [`OVERFLOW`]: the stats show it, the completion log line says so, and
//! no further transition starts ([`has_room`]).
//!
//! Idle tasks are not on the task list; each CPU's is found with `idle_task()` (resolved via
//! kallsyms) or, failing that, from an IPI that lands while the CPU idles, and kept in [`IDLE`].

use crate::shim::{self, TaskInfo, TaskStruct};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use livepatch_core::backend::{Task, TaskFlags, TaskKind};
use livepatch_core::{CpuId, TaskId, TaskPatchState};

const TABLE_BITS: u32 = 12;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
const EMPTY: usize = 0;
const MAX_CPUS: usize = 64;

struct Slot {
    key: AtomicUsize,
    state: TaskPatchState,
    /// Exit-to-user task work queued for the task: [`KICK_RESUME`] and/or [`KICK_SIGNAL`].
    kicks: AtomicU8,
}

impl Slot {
    const fn new() -> Self {
        Slot { key: AtomicUsize::new(EMPTY), state: TaskPatchState::new(), kicks: AtomicU8::new(0) }
    }
}

/// A `TWA_RESUME` work (armed at transition start) is queued.
pub(crate) const KICK_RESUME: u8 = 1;
/// A `TWA_SIGNAL` work (a straggler's fake signal) is queued.
pub(crate) const KICK_SIGNAL: u8 = 2;

static TABLE: [Slot; TABLE_SIZE] = [const { Slot::new() }; TABLE_SIZE];
static USED: AtomicU32 = AtomicU32::new(0);
/// Set when a task could not get an entry (reported in the stats and the completion log).
pub(crate) static OVERFLOW: AtomicBool = AtomicBool::new(false);
/// The word of a task the table does not know (between transitions: idle).
static UNKNOWN: TaskPatchState = TaskPatchState::new();
/// Each CPU's idle task, once seen.
pub(crate) static IDLE: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

fn home(key: usize) -> usize {
    // Fibonacci hashing of the address without its alignment bits.
    ((key >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - TABLE_BITS)) & (TABLE_SIZE - 1)
}

/// The slot of task `t`, if the table has it. Lock-free.
#[inline]
fn find(t: *mut TaskStruct) -> Option<&'static Slot> {
    let key = t as usize;
    let mut i = home(key);
    for _ in 0..TABLE_SIZE {
        // `Acquire`: pairs with the `Release` in `entry`, so the word written before the key
        // was published is the one read.
        match TABLE[i].key.load(Ordering::Acquire) {
            k if k == key => return Some(&TABLE[i]),
            EMPTY => return None,
            _ => i = (i + 1) & (TABLE_SIZE - 1),
        }
    }
    None
}

/// The word of task `t`, if the table has it. Lock-free.
#[inline]
pub(crate) fn lookup(t: *mut TaskStruct) -> Option<&'static TaskPatchState> {
    find(t).map(|s| &s.state)
}

/// The word of `t`, creating it (as `init`) if missing. `None` if the table is full.
pub(crate) fn entry(t: *mut TaskStruct, init: impl FnOnce(&TaskPatchState)) -> Option<&'static TaskPatchState> {
    if let Some(s) = lookup(t) {
        return Some(s);
    }
    // SAFETY: paired with the unlock below; IRQ-safe, so callable from IPIs and handlers.
    let flags = unsafe { shim::lp_shim_table_lock() };
    let key = t as usize;
    let mut i = home(key);
    let mut found = None;
    for _ in 0..TABLE_SIZE {
        match TABLE[i].key.load(Ordering::Relaxed) {
            k if k == key => {
                found = Some(&TABLE[i].state);
                break;
            }
            EMPTY => {
                init(&TABLE[i].state);
                // `Release`: publishes the word written by `init` with the key.
                TABLE[i].key.store(key, Ordering::Release);
                USED.fetch_add(1, Ordering::Relaxed);
                found = Some(&TABLE[i].state);
                break;
            }
            _ => i = (i + 1) & (TABLE_SIZE - 1),
        }
    }
    // SAFETY: we hold the lock.
    unsafe { shim::lp_shim_table_unlock(flags) };
    if found.is_none() {
        OVERFLOW.store(true, Ordering::Relaxed);
    }
    found
}

/// Queues exit-to-user task work for user task `t` (`signal`: also interrupt its sleep), unless
/// one of that kind is already queued: at most one of each kind per task, so a task that stays
/// in the kernel for a long transition does not collect a work item per pass.
pub(crate) fn kick_user(t: *mut TaskStruct, signal: bool) {
    let bit = if signal { KICK_SIGNAL } else { KICK_RESUME };
    let Some(slot) = find(t) else { return };
    if slot.kicks.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        return;
    }
    // SAFETY: `t` is valid for the caller's visit (RCU read side).
    if unsafe { shim::lp_shim_kick_user(t, signal) } != 0 {
        slot.kicks.fetch_and(!bit, Ordering::Relaxed);
    }
}

/// The task work of kind `signal` ran (or is being discarded) for `t`.
pub(crate) fn kick_done(t: *mut TaskStruct, signal: bool) {
    let bit = if signal { KICK_SIGNAL } else { KICK_RESUME };
    if let Some(slot) = find(t) {
        slot.kicks.fetch_and(!bit, Ordering::Relaxed);
    }
}

/// Entries in use.
pub(crate) fn used() -> u32 {
    USED.load(Ordering::Relaxed)
}

/// Whether a transition may start: the table never overflowed and has room to spare for the
/// tasks forked during the transition (entries of exited tasks are not reclaimed).
pub(crate) fn has_room() -> bool {
    !OVERFLOW.load(Ordering::Relaxed) && (used() as usize) < TABLE_SIZE / 8 * 7
}

/// The word the redirect handler reads for the current task.
#[inline]
pub(crate) fn current_state() -> &'static TaskPatchState {
    lookup(shim::current()).unwrap_or(&UNKNOWN)
}

/// A task as the core sees it: a `task_struct` pointer valid for the visit (RCU read side, an
/// IPI on its CPU, or current), a snapshot of its fields and its word.
pub(crate) struct LinuxTask {
    pub(crate) ptr: *mut TaskStruct,
    pub(crate) info: TaskInfo,
    state: &'static TaskPatchState,
}

impl LinuxTask {
    /// Wraps `t`, creating its table entry if needed (new entries start idle; the engine
    /// resets every visited task when a transition starts). `None` on table overflow.
    pub(crate) fn new(t: *mut TaskStruct) -> Option<LinuxTask> {
        let state = entry(t, |_| {})?;
        Some(LinuxTask { ptr: t, info: shim::task_info(t), state })
    }

    /// The current task, if the table knows it.
    pub(crate) fn current() -> Option<LinuxTask> {
        let t = shim::current();
        Some(Self::with_state(t, lookup(t)?))
    }

    /// Wraps `t` whose word is `state`.
    pub(crate) fn with_state(t: *mut TaskStruct, state: &'static TaskPatchState) -> LinuxTask {
        LinuxTask { ptr: t, info: shim::task_info(t), state }
    }
}

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
        // SAFETY: `ptr` is valid for the visit.
        unsafe { shim::lp_shim_task_running(self.ptr) }
    }

    fn patch_state(&self) -> &TaskPatchState {
        self.state
    }
}

/// Finds the idle task of every online CPU (from IPIs that land while it idles); gives up on a
/// CPU after `tries` attempts. Returns how many CPUs' idle tasks are known.
pub(crate) fn discover_idle(tries: u32) -> u32 {
    // SAFETY: no preconditions.
    let n = unsafe { shim::lp_shim_nr_cpu_ids() }.min(MAX_CPUS as u32);
    let mut known = 0;
    for cpu in 0..n {
        // SAFETY: no preconditions.
        if !unsafe { shim::lp_shim_cpu_online(cpu) } {
            continue;
        }
        // SAFETY: `cpu` is a valid CPU number.
        let idle = unsafe { shim::lp_shim_idle_task(cpu) };
        if !idle.is_null() {
            IDLE[cpu as usize].store(idle as usize, Ordering::Relaxed);
        }
        for _ in 0..tries {
            if IDLE[cpu as usize].load(Ordering::Relaxed) != 0 {
                break;
            }
            shim::on_cpu(cpu, |t, c| {
                if shim::task_info(t).idle {
                    IDLE[c as usize].store(t as usize, Ordering::Relaxed);
                }
            });
            if IDLE[cpu as usize].load(Ordering::Relaxed) == 0 {
                // SAFETY: process context.
                unsafe { shim::lp_shim_msleep(1) };
            }
        }
        if IDLE[cpu as usize].load(Ordering::Relaxed) != 0 {
            // Give it an entry now, outside any transition.
            let _ = entry(IDLE[cpu as usize].load(Ordering::Relaxed) as *mut TaskStruct, |_| {});
            known += 1;
        }
    }
    known
}
