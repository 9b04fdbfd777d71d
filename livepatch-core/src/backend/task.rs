use crate::ids::{CpuId, TaskId};
use crate::state::TaskPatchState;
use bitflags::bitflags;

/// What kind of task this is; the sweep's straggler policy and stall reports depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// A task with a user-mode side: it switches at exit to user mode and can get a fake
    /// signal.
    User,
    /// A kernel thread: never returns to user mode; a straggler is woken, not signalled.
    Kthread,
    /// The idle task of a CPU: switches in the idle loop.
    Idle(CpuId),
}

bitflags! {
    /// Per-task facts the backend reports.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct TaskFlags: u8 {
        /// The task is exiting: it left the task list but may still run its exit path.
        const EXITING = 1 << 0;
        /// The task ignores fake signals (e.g. pid 1 in a container).
        const IGNORES_SIGNALS = 1 << 1;
        /// A kthread that calls a `cond_resched`-like self-check point.
        const SELF_CHECKS = 1 << 2;
        /// The task can be frozen by the freezer.
        const FREEZABLE = 1 << 3;
        /// The task is frozen (in the refrigerator, which calls `schedule()`): the freezer
        /// model asked it to freeze and it stopped.
        const FROZEN = 1 << 4;
    }
}

/// A task (thread) of the backend.
pub trait Task {
    /// Its id.
    fn id(&self) -> TaskId;
    /// Its kind.
    fn kind(&self) -> TaskKind;
    /// Its flags.
    fn flags(&self) -> TaskFlags;
    /// The CPU it last ran on (or runs on).
    fn cpu(&self) -> CpuId;
    /// Whether it is on a CPU right now (and is not the caller), read without a lock.
    ///
    /// The core reads it in one place: the per-CPU pass, where the CPU is held (an IPI runs
    /// on it), so the task it interrupted is the one running and the answer cannot change.
    /// Everywhere else the answer must hold while the stack is checked, which only
    /// [`Scheduler::pin`](super::Scheduler::pin) can give
    /// ([`Pinned::Running`](super::Pinned::Running)).
    fn is_running(&self) -> bool;
    /// Its patch-state word (4 bytes; the backend embeds it in its task structure).
    fn patch_state(&self) -> &TaskPatchState;
}

impl<T: Task + ?Sized> Task for &T {
    fn id(&self) -> TaskId {
        (**self).id()
    }
    fn kind(&self) -> TaskKind {
        (**self).kind()
    }
    fn flags(&self) -> TaskFlags {
        (**self).flags()
    }
    fn cpu(&self) -> CpuId {
        (**self).cpu()
    }
    fn is_running(&self) -> bool {
        (**self).is_running()
    }
    fn patch_state(&self) -> &TaskPatchState {
        (**self).patch_state()
    }
}
