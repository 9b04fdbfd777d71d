use super::task::Task;
use crate::ids::CpuId;

/// Where a batched task walk resumes; opaque to the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TaskCursor(pub u64);

/// The outcome of trying to pin a task for inspection.
#[derive(Debug)]
pub enum Pinned<R> {
    /// The task could not run while the closure ran; its result.
    Checked(R),
    /// The task is running on a CPU (and is not the caller): it cannot be inspected now. This
    /// is the answer the sweep relies on (it holds while the pin is attempted, unlike an
    /// unlocked [`Task::is_running`]).
    Running,
}

/// The scheduler services the engine needs.
///
/// Unlike the other traits it has no error type: every service here is infallible in a
/// kernel (RCU task-list walks, IPIs, `task_call_func`, signals, `synchronize_rcu`); a task
/// that is running is a [`Pinned::Running`] result, not an error.
pub trait Scheduler {
    /// The backend's task.
    type Task: Task;

    /// Visits at most `max` tasks starting at `cursor` (default: the first) and returns where
    /// the next batch starts, or `None` after the last task. The walk covers every task:
    /// user tasks, kthreads, each possible CPU's idle task (an offline CPU's too: it runs
    /// again when its CPU comes back) and tasks that are exiting. Whatever lock protects the
    /// task list is held for one batch only. A task the backend cannot present (the kernel
    /// module's task without a record) must still hold the transition while its word is
    /// pending: a stand-in whose [`pin`](Self::pin) answers [`Pinned::Running`] does.
    ///
    /// Because the lock is dropped between batches, the order must be creation order (new
    /// tasks appended after existing ones, as the kernel's task list is): then a task forked
    /// during a walk is either visited by it or inherited its state from a parent that was.
    fn for_each_task<F>(&self, cursor: TaskCursor, max: usize, f: F) -> Option<TaskCursor>
    where
        F: FnMut(&Self::Task);

    /// Visits the tasks whose CPU is `cpu` while that CPU is held (the per-CPU pass: on a
    /// kernel, from an IPI on that CPU, so none of them can be scheduled in meanwhile).
    fn for_each_task_on_cpu<F>(&self, cpu: CpuId, f: F)
    where
        F: FnMut(&Self::Task);

    /// The CPUs that are online.
    fn for_each_cpu<F>(&self, f: F)
    where
        F: FnMut(CpuId);

    /// Runs `f` while `task` cannot be scheduled in (the kernel's `task_call_func`), or reports
    /// that it is running on a CPU. The idle task of an offline CPU never returns into its
    /// stack (the CPU starts it on a fresh one when it comes back): held offline (the kernel's
    /// CPU hotplug lock), it may be checked as a task with an empty stack, as the kernel's
    /// `klp_try_complete_transition` switches it at once; reporting it running would hold the
    /// transition until the CPU returns.
    fn pin<R, F>(&self, task: &Self::Task, f: F) -> Pinned<R>
    where
        F: FnOnce(&Self::Task) -> R;

    /// Sends a fake signal to a user task (forcing it through exit to user mode) or wakes a
    /// kthread from an interruptible sleep.
    fn kick(&self, task: &Self::Task);

    /// Asks `task` to freeze (the freezer model): a user task stops at its next signal
    /// delivery, a freezable kthread at its next `try_to_freeze` point; it stays frozen until
    /// [`thaw_all`](Self::thaw_all). Default: a [`kick`](Self::kick) (a backend without a
    /// freezer).
    fn freeze(&self, task: &Self::Task) {
        self.kick(task);
    }

    /// Thaws every task frozen for the transition (the freezer model, when it ends). Default:
    /// nothing to thaw.
    fn thaw_all(&self) {}

    /// Runs every CPU through a context where it cannot be in the middle of a handler, stops
    /// them all, runs `f` once, then lets them go (`stop_machine`). Returns `f`'s result.
    ///
    /// `f` may run on another CPU or thread (the kernel's stopper thread), but only while the
    /// caller waits in this call, with the hand-over ordered both ways: `f` never runs beside
    /// the caller. So `F` has no `Send` bound (it would force every backend's types to be
    /// `Sync`); the engine's closure holds only references, nothing tied to the calling
    /// thread. An implementation that runs `f` elsewhere must keep it that way.
    fn stop_all<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R;

    /// Asks to be called back for another completion attempt after `delay_ns`.
    fn schedule_retry(&self, delay_ns: u64);

    /// Waits for a grace period: every CPU has left any redirect handler or patched-set read
    /// it was in when this was called.
    fn synchronize(&self);

    /// A monotonic clock in nanoseconds, for stall reports and pause measurements.
    fn now_ns(&self) -> u64;
}
