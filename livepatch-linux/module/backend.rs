// SPDX-License-Identifier: GPL-2.0

//! The core's backend traits over the C shim: [`Walker`] (ORC unwinder), [`Hooks`] (ftrace),
//! [`Sched`] (task list, pi_lock pinning, IPIs, task work, wake-ups, delayed work, RCU).

use crate::shim;
use crate::tasks::{self, LinuxTask};
use core::ops::ControlFlow;
use core::ptr;
use crate::control;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use livepatch_core::backend::{ErrorKind, Parts, Pinned, Scheduler, StackWalker, Task, TaskCursor, TaskKind, Tracer, WalkError};
use livepatch_core::{CodeAddr, CodeRange, CpuId, ObjectId, SlotId};

/// The reliable stack walker (ORC, as `arch_stack_walk_reliable()`).
///
/// Reliability: the task is current, or pinned by [`Sched::pin`] (its `pi_lock` held, and it
/// was neither running, runnable, waking nor switching out: it cannot be woken, so its stack
/// cannot change), or current on its CPU during the per-CPU IPI. The walk fails — never
/// returns a partial stack — on an unwinder error or an unknown return address, and stops
/// successfully only at user-mode registers or the end of a kthread's stack.
#[derive(Debug)]
pub(crate) struct Walker;

impl StackWalker for Walker {
    type Task = LinuxTask;
    type Error = ErrorKind;

    fn walk<F>(&self, task: &LinuxTask, max_depth: usize, mut frame: F) -> Result<usize, WalkError<ErrorKind>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        if task.is_untracked_forks() {
            return Err(WalkError::Backend(ErrorKind::Unreliable));
        }
        if task.parked.get() {
            // An offline CPU's idle task, held offline by `Sched::pin`: it never returns into
            // its stack, so no frame of it can run code of either universe again.
            return Ok(0);
        }
        let mut n = 0usize;
        let mut too_deep = false;
        let mut in_redirect = false;
        let rc = shim::walk(task.ptr, |addr| {
            if n >= max_depth {
                too_deep = true;
                return false;
            }
            if inside_redirect(addr) {
                in_redirect = true;
                return false;
            }
            n += 1;
            frame(CodeAddr(addr)).is_continue()
        });
        if in_redirect {
            return Err(WalkError::Backend(ErrorKind::InRedirect));
        }
        if too_deep {
            return Err(WalkError::TooDeep);
        }
        match rc {
            shim::LP_WALK_OK | shim::LP_WALK_STOP => Ok(n),
            // Its stack is gone: the task has exited and never runs again.
            shim::LP_WALK_NO_STACK => Ok(0),
            _ => Err(WalkError::Backend(ErrorKind::Unreliable)),
        }
    }
}

/// Per hook slot: the offset of the fentry call's return address from the function's start
/// (`MCOUNT_INSN_SIZE`, plus the `ENDBR64` in front of the call with IBT); 0 = no hook.
static FENTRY_RET: [AtomicU8; HOOK_SLOTS] = [const { AtomicU8::new(0) }; HOOK_SLOTS];
const HOOK_SLOTS: usize = shim::LP_MAX_HOOKS as usize;

/// Whether a frame at `addr` shows its task inside a function-entry hook: between the ftrace
/// trampoline's call and its return into the code the handler chose.
///
/// * `addr` is the fentry call's return address of a hooked original (`f+5`, `f+9` with IBT):
///   that return address is on the stack exactly while the trampoline runs — before the
///   handler, inside it (the handler and `lp_rs_redirect_in_transition` are above it), and after
///   it, until the trampoline stores the chosen ip over this very slot;
/// * `addr` is the first byte of a function in the patched set: the trampoline has stored the
///   variant's entry as its return address and not yet returned, or the task was interrupted
///   on the variant's (or original's) first instruction. A genuine return address is never a
///   function's first byte (a call precedes it), except after a `noreturn` call that ends the
///   previous function — treating that as "inside a redirect" only delays the switch.
///
/// During a transition the decision the handler made from the task's word is only visible on
/// the stack once the jump happened; a switch in between would let the task run the code it
/// decided on in the other universe (the mixed calls the consistency stress counted). So a
/// task seen here is not switched now; it is checked again on the next pass. Cheap: one
/// patched-set lookup per frame, only for frames in patched code.
fn inside_redirect(addr: usize) -> bool {
    let Some(hit) = control::live_set().lookup(CodeAddr(addr)) else {
        return false;
    };
    let start = hit.range.start().get();
    if addr == start {
        return true;
    }
    hit.node.is_none()
        && FENTRY_RET.get(hit.slot().0 as usize).is_some_and(|off| {
            let off = off.load(Ordering::Relaxed) as usize;
            off != 0 && addr == start + off
        })
}

/// Whether each object is loaded: vmlinux, the built-in patches' modules (1, 2), and the
/// modules registered patches name (3..).
pub(crate) static OBJECT_LOADED: [AtomicBool; 3 + crate::registry::NOBJNAMES] =
    [const { AtomicBool::new(false) }; 3 + crate::registry::NOBJNAMES];

/// How many redirect hooks are installed (engine lock held for every change).
static HOOKS_INSTALLED: AtomicU32 = AtomicU32::new(0);

/// Whether any redirect hook is installed: while one is, task records are tracked.
pub(crate) fn hooks_installed() -> bool {
    HOOKS_INSTALLED.load(Ordering::Relaxed) != 0
}

/// ftrace hooks: one IPMODIFY `ftrace_ops` per slot, filtered by ip.
///
/// The first hook also starts task tracking (the fork and free hooks, then a record for every
/// task: see "Task records" in `shim.c`), **before** its own `ftrace_ops` is registered, so
/// no redirect ever reads the word of a task that should have a record. Tracking failing is
/// this hook failing: with `kernel.ftrace_enabled=0` the fork/free hooks (`PERMANENT`) are
/// refused with `-EBUSY` exactly as the redirect hook itself would be, and the engine reports
/// it where the kernel's `klp_patch_func()` does (`failed to register ftrace handler for
/// function ...`), then cancels. Tracking stops in `control` once no hook is left and no
/// transition runs.
#[derive(Debug)]
pub(crate) struct Hooks;

impl Tracer for Hooks {
    type Error = ErrorKind;

    fn install(&self, slot: SlotId, func: CodeRange) -> Result<(), ErrorKind> {
        // SAFETY: process context, engine lock held; a no-op when tracking is on.
        let rc = unsafe { shim::lp_shim_tracking(true) };
        if rc != 0 {
            kernel::pr_err!("cannot track tasks ({}): no hook on {:?}\n", rc, func);
            return Err(ErrorKind::Hook);
        }
        // The hook holds its slot for the redirect (see `lp_ftrace_handler` in `shim.c`).
        let Some(fslot) = crate::control::func_slot(slot) else {
            return Err(ErrorKind::Hook);
        };
        // SAFETY: process context, engine lock held; `fslot` is `'static` (the engine's
        // static storage).
        let rc = unsafe { shim::lp_shim_hook_install(slot.0, func.start().get() as _, ptr::from_ref(fslot).cast()) };
        if rc != 0 {
            kernel::pr_err!("ftrace hook on {:?} failed: {}\n", func, rc);
            return Err(ErrorKind::Hook);
        }
        HOOKS_INSTALLED.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `func` is a function the hook was just installed on (its first bytes exist).
        let off = unsafe { shim::lp_shim_fentry_ret_offset(func.start().get() as _) };
        if let Some(o) = FENTRY_RET.get(slot.0 as usize) {
            o.store(off as u8, Ordering::Relaxed);
        }
        Ok(())
    }

    fn remove(&self, slot: SlotId, _func: CodeRange) -> Result<(), ErrorKind> {
        // Completion of an unpatch removes hooks before its first grace period.
        mark_switched();
        // SAFETY: process context, engine lock held.
        match unsafe { shim::lp_shim_hook_remove(slot.0) } {
            0 => {
                HOOKS_INSTALLED.fetch_sub(1, Ordering::Relaxed);
                Ok(())
            }
            // Still registered: still counted (tracking stays on).
            _ => Err(ErrorKind::Hook),
        }
    }

    fn object_loaded(&self, object: ObjectId) -> bool {
        OBJECT_LOADED.get(object.0 as usize).is_some_and(|b| b.load(Ordering::Relaxed))
    }
}

/// The scheduler services.
#[derive(Debug)]
pub(crate) struct Sched;

/// A populate pass failed and no later one succeeded yet (the failure is logged once).
static POPULATE_FAILED: AtomicBool = AtomicBool::new(false);

/// When a completion attempt first removed a hook or waited for a grace period since this was
/// last cleared (0: not yet): the engine's `complete` starts with one of them, so this is when
/// every task had switched, apart from the cleanup that follows.
pub(crate) static FIRST_SYNC_NS: AtomicU64 = AtomicU64::new(0);

fn mark_switched() {
    let _ = FIRST_SYNC_NS.compare_exchange(0, shim::now_ns(), Ordering::Relaxed, Ordering::Relaxed);
}

impl Scheduler for Sched {
    type Task = LinuxTask;

    /// One batch of the walk over every task record (see "Task records" in `shim.c`): O(N) per
    /// pass, every task that exists throughout the walk visited once, a child forked meanwhile
    /// visited after its parent. The walk ends only when no record is left behind the cursor,
    /// and only after the untracked forks (record allocation failed) have been given records:
    /// no task is ever skipped. It then moves [`tasks::UNTRACKED`] to the target
    /// ([`tasks::lp_rs_untracked_settle`]), so a fork failing after the walk that precedes
    /// completion starts its child in the target universe, as its parent runs.
    fn for_each_task<F>(&self, cursor: TaskCursor, max: usize, mut f: F) -> Option<TaskCursor>
    where
        F: FnMut(&LinuxTask),
    {
        const MAX: usize = shim::LP_BATCH_MAX as usize;
        let max = max.clamp(1, MAX) as u32;
        let mut tasks = [core::ptr::null_mut(); MAX];
        let mut recs = [core::ptr::null_mut(); MAX];
        let mut restart = cursor.0 == 0;
        loop {
            // SAFETY: both arrays hold `max` entries.
            let n = unsafe { shim::lp_shim_tasks_next(restart, max, tasks.as_mut_ptr(), recs.as_mut_ptr()) } as usize;
            if n > 0 {
                for &t in &tasks[..n] {
                    // The walk holds a reference on `t`, so its record is alive.
                    if let Some(task) = LinuxTask::new(t) {
                        f(&task);
                    }
                }
                for &t in &tasks[..n] {
                    // SAFETY: drops the reference `lp_shim_tasks_next` took.
                    unsafe { shim::lp_shim_put_task(t) };
                }
                return Some(TaskCursor(1));
            }
            // The end: first give any task whose fork could not allocate a record one (it has
            // run the untracked universe); those records are behind the cursor, so continue.
            // With none left, `UNTRACKED` moves to the target (`lp_shim_tasks_walk_end`).
            // SAFETY: no preconditions.
            if unsafe { shim::lp_shim_tasks_walk_end() } == 0 {
                return None;
            }
            // SAFETY: process context (the engine's walks run from the engine's work or a
            // sysfs write, with only the engine mutex held).
            if unsafe { shim::lp_shim_tasks_populate() } != 0 {
                // No records for them now: they are one task of this walk, `UNTRACKED`'s word,
                // never pinned, so while that word is pending the transition does not complete
                // without them (a force switches it); the next pass tries again. Ending the
                // walk here, not looping: the core's walks run until `None`.
                if !POPULATE_FAILED.swap(true, Ordering::Relaxed) {
                    kernel::pr_err!("cannot allocate task records: the transition waits\n");
                }
                f(&LinuxTask::untracked_forks());
                return None;
            }
            POPULATE_FAILED.store(false, Ordering::Relaxed);
            restart = true;
        }
    }

    fn for_each_task_on_cpu<F>(&self, cpu: CpuId, mut f: F)
    where
        F: FnMut(&LinuxTask),
    {
        // From the IPI the CPU's current task is the caller: its stack cannot change under us.
        // A CPU that went offline meanwhile is simply skipped (the sweep covers its tasks).
        let _ = shim::on_cpu(cpu.0, |t, _| {
            if let Some(task) = LinuxTask::new(t) {
                f(&task);
            }
        });
    }

    fn for_each_cpu<F>(&self, mut f: F)
    where
        F: FnMut(CpuId),
    {
        // SAFETY: no preconditions.
        let n = unsafe { shim::lp_shim_nr_cpu_ids() };
        for cpu in 0..n {
            // SAFETY: no preconditions.
            if unsafe { shim::lp_shim_cpu_online(cpu) } {
                f(CpuId(cpu));
            }
        }
    }

    fn pin<R, F>(&self, task: &LinuxTask, f: F) -> Pinned<R>
    where
        F: FnOnce(&LinuxTask) -> R,
    {
        if task.is_untracked_forks() {
            return Pinned::Running;
        }
        if task.info.idle {
            // An offline CPU's idle task looks running (on_cpu, parked in play_dead()) but
            // never returns into its stack: checked with no frames, under the hotplug lock
            // (`lp_shim_offline_idle`), as the kernel switches offline idle tasks at once.
            let mut f = Some(f);
            let parked = shim::if_offline_idle(task.info.cpu, |_| {
                task.parked.set(true);
                let r = f.take().map(|f| f(task));
                task.parked.set(false);
                r
            });
            if let Some(r) = parked.flatten() {
                return Pinned::Checked(r);
            }
            // Online: `f` was not taken.
            let Some(f) = f else { return Pinned::Running };
            // An idle task is always TASK_RUNNING, so pi_lock cannot hold it; it is switched
            // out only at schedule_idle() and runs again whenever its CPU has nothing else.
            // Under stop_machine() every CPU runs its stopper thread, so no idle task can run
            // while `f` checks it. (Only reached when the per-CPU pass did not find it idle.)
            if task.is_running() {
                return Pinned::Running;
            }
            return match shim::stop_machine(|| (!task.is_running()).then(|| f(task))) {
                Some(Some(r)) => Pinned::Checked(r),
                _ => Pinned::Running,
            };
        }
        match shim::pin(task.ptr, |_| f(task)) {
            Some(r) => Pinned::Checked(r),
            None => Pinned::Running,
        }
    }

    fn kick(&self, task: &LinuxTask) {
        if task.is_untracked_forks() {
            return;
        }
        match task.kind() {
            TaskKind::User => tasks::kick_user(task.ptr, true),
            // SAFETY: `ptr` is valid for the visit (RCU read side).
            TaskKind::Kthread => unsafe { shim::lp_shim_wake(task.ptr) },
            TaskKind::Idle(_) => {}
        }
    }

    fn stop_all<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R,
    {
        match shim::stop_machine(f) {
            Some(r) => r,
            None => panic!("stop_machine did not run the callback"),
        }
    }

    fn schedule_retry(&self, delay_ns: u64) {
        // SAFETY: no preconditions (mod_delayed_work).
        unsafe { shim::lp_shim_schedule_retry(delay_ns) }
    }

    fn synchronize(&self) {
        mark_switched();
        // SAFETY: process context.
        unsafe { shim::lp_shim_synchronize() }
    }

    fn now_ns(&self) -> u64 {
        shim::now_ns()
    }
}

/// The module's backend: its three parts.
pub(crate) type Backend = Parts<'static, Sched, Walker, Hooks>;

/// The backend instance.
pub(crate) fn backend() -> Backend {
    static SCHED: Sched = Sched;
    static WALKER: Walker = Walker;
    static HOOKS: Hooks = Hooks;
    Parts { scheduler: &SCHED, walker: &WALKER, tracer: &HOOKS }
}

