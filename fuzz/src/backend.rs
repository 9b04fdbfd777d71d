//! A single-threaded backend whose every failure mode is a knob the fuzz input turns: running
//! tasks, unreliable or over-deep stacks (reported eagerly or after some frames), hook
//! installs and removals that fail, objects that are not loaded.

use livepatch_core::backend::{
    ErrorKind, Parts, Pinned, Scheduler, StackWalker, Task, TaskCursor, TaskFlags, TaskKind, Tracer, WalkError,
};
use livepatch_core::{CodeAddr, CodeRange, CpuId, ObjectId, SlotId, TaskId, TaskPatchState};
use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;

/// How the walker treats a task's stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum WalkMode {
    /// Checks the depth before handing out any frame.
    Eager,
    /// Hands out frames up to the limit, then reports `TooDeep` if there are more.
    Lazy,
    /// Hands out the frames before index `k`, then fails as unreliable (a clean walk when the
    /// stack is shorter; the depth limit still applies first).
    FailAt(u8),
}

/// A task: its patch-state word, its stack (innermost first), whether it is on a CPU, and how
/// its stack walks.
#[derive(Debug)]
pub struct FuzzTask {
    id: TaskId,
    state: TaskPatchState,
    /// Return addresses, innermost first.
    pub stack: RefCell<Vec<CodeAddr>>,
    /// On a CPU: the sweep cannot pin it.
    pub running: Cell<bool>,
    /// How its stack walks.
    pub walk: Cell<WalkMode>,
    /// Kicks received.
    pub kicks: Cell<u32>,
}

impl FuzzTask {
    /// Task `id`, idle, not running, with an empty stack that walks cleanly.
    pub fn new(id: u32) -> Self {
        Self {
            id: TaskId(id),
            state: TaskPatchState::new(),
            stack: RefCell::new(Vec::new()),
            running: Cell::new(false),
            walk: Cell::new(WalkMode::Eager),
            kicks: Cell::new(0),
        }
    }
}

impl Task for FuzzTask {
    fn id(&self) -> TaskId {
        self.id
    }
    fn kind(&self) -> TaskKind {
        if self.id.0 % 3 == 2 {
            TaskKind::Kthread
        } else {
            TaskKind::User
        }
    }
    fn flags(&self) -> TaskFlags {
        TaskFlags::empty()
    }
    fn cpu(&self) -> CpuId {
        CpuId(self.id.0 % 2)
    }
    fn is_running(&self) -> bool {
        self.running.get()
    }
    fn patch_state(&self) -> &TaskPatchState {
        &self.state
    }
}

/// The walker over [`FuzzTask`] stacks.
#[derive(Debug, Default)]
pub struct FuzzWalker {
    /// Walks performed.
    pub walks: Cell<u32>,
}

impl StackWalker for FuzzWalker {
    type Task = FuzzTask;
    type Error = ErrorKind;

    fn walk<F>(&self, task: &FuzzTask, max_depth: usize, mut frame: F) -> Result<usize, WalkError<ErrorKind>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        self.walks.set(self.walks.get() + 1);
        let stack = task.stack.borrow();
        let mode = task.walk.get();
        if mode == WalkMode::Eager && stack.len() > max_depth {
            return Err(WalkError::TooDeep);
        }
        for (i, &addr) in stack.iter().enumerate() {
            if i >= max_depth {
                return Err(WalkError::TooDeep);
            }
            if mode == WalkMode::FailAt(i as u8) && i < 256 {
                return Err(WalkError::Backend(ErrorKind::Unreliable));
            }
            if frame(addr).is_break() {
                return Ok(i + 1);
            }
        }
        Ok(stack.len())
    }
}

/// A tracer whose installs and removals fail on demand; objects can be unloaded.
#[derive(Debug, Default)]
pub struct FuzzTracer {
    /// The next install fails (then the flag clears).
    pub fail_next_install: Cell<bool>,
    /// Removals fail while set.
    pub fail_remove: Cell<bool>,
    /// Bit `i` set: object `i` is not loaded (the core kernel, object 0, always is).
    pub unloaded: Cell<u32>,
    /// Hooks currently installed, by slot (bit mask).
    pub hooked: Cell<u64>,
}

impl Tracer for FuzzTracer {
    type Error = ErrorKind;

    fn install(&self, slot: SlotId, _func: CodeRange) -> Result<(), ErrorKind> {
        if self.fail_next_install.replace(false) {
            return Err(ErrorKind::Hook);
        }
        self.hooked.set(self.hooked.get() | 1 << (slot.0 % 64));
        Ok(())
    }
    fn remove(&self, slot: SlotId, _func: CodeRange) -> Result<(), ErrorKind> {
        if self.fail_remove.get() {
            return Err(ErrorKind::Hook);
        }
        self.hooked.set(self.hooked.get() & !(1 << (slot.0 % 64)));
        Ok(())
    }
    fn object_loaded(&self, object: ObjectId) -> bool {
        object.0 == 0 || object.0 >= 32 || self.unloaded.get() & (1 << object.0) == 0
    }
}

/// The scheduler: a task list walked in batches, a fake clock, counters for grace periods.
#[derive(Debug, Default)]
pub struct FuzzScheduler {
    /// Every task.
    pub tasks: Vec<FuzzTask>,
    /// Grace periods waited for.
    pub syncs: Cell<u32>,
    /// Retries requested.
    pub retries: Cell<u32>,
    clock: Cell<u64>,
}

impl FuzzScheduler {
    /// A scheduler over `n` tasks.
    pub fn new(n: u32) -> Self {
        Self { tasks: (0..n).map(FuzzTask::new).collect(), ..Self::default() }
    }
}

impl Scheduler for FuzzScheduler {
    type Task = FuzzTask;

    fn for_each_task<F>(&self, cursor: TaskCursor, max: usize, mut f: F) -> Option<TaskCursor>
    where
        F: FnMut(&FuzzTask),
    {
        let start = (cursor.0 as usize).min(self.tasks.len());
        let end = start.saturating_add(max).min(self.tasks.len());
        self.tasks[start..end].iter().for_each(&mut f);
        (end < self.tasks.len()).then_some(TaskCursor(end as u64))
    }

    fn for_each_task_on_cpu<F>(&self, cpu: CpuId, f: F)
    where
        F: FnMut(&FuzzTask),
    {
        self.tasks.iter().filter(|t| t.cpu() == cpu).for_each(f);
    }

    fn for_each_cpu<F>(&self, mut f: F)
    where
        F: FnMut(CpuId),
    {
        f(CpuId(0));
        f(CpuId(1));
    }

    fn pin<R, F>(&self, task: &FuzzTask, f: F) -> Pinned<R>
    where
        F: FnOnce(&FuzzTask) -> R,
    {
        if task.running.get() {
            Pinned::Running
        } else {
            Pinned::Checked(f(task))
        }
    }

    fn kick(&self, task: &FuzzTask) {
        task.kicks.set(task.kicks.get() + 1);
    }

    fn stop_all<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R,
    {
        f()
    }

    fn schedule_retry(&self, _delay_ns: u64) {
        self.retries.set(self.retries.get() + 1);
    }

    fn synchronize(&self) {
        self.syncs.set(self.syncs.get() + 1);
    }

    fn now_ns(&self) -> u64 {
        let t = self.clock.get() + 1000;
        self.clock.set(t);
        t
    }
}

/// The backend the targets drive the engine with.
pub type FuzzBackend<'x> = Parts<'x, FuzzScheduler, FuzzWalker, FuzzTracer>;
