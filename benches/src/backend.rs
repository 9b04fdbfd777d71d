//! A minimal in-memory backend: tasks in a `Vec`, each with its stack as a slice of return
//! addresses; a walker over those slices; a tracer that accepts every hook; a scheduler that
//! visits tasks in batches and reads a monotonic clock.

use livepatch_core::backend::{
    Parts, Pinned, Scheduler, StackWalker, Task, TaskCursor, TaskFlags, TaskKind, Tracer, WalkError,
};
use livepatch_core::{CodeAddr, CodeRange, CpuId, ObjectId, SlotId, TaskId, TaskPatchState};
use std::cell::RefCell;
use std::convert::Infallible;
use std::ops::ControlFlow;
use std::time::Instant;

/// A task: a patch-state word and a stack (innermost frame first). Never running.
#[derive(Debug)]
pub struct BenchTask {
    id: TaskId,
    state: TaskPatchState,
    /// Return addresses, innermost first.
    pub stack: Box<[CodeAddr]>,
}

impl BenchTask {
    /// Task `id` with `stack`.
    pub fn new(id: u32, stack: Vec<CodeAddr>) -> Self {
        Self { id: TaskId(id), state: TaskPatchState::new(), stack: stack.into_boxed_slice() }
    }
}

impl Task for BenchTask {
    fn id(&self) -> TaskId {
        self.id
    }
    fn kind(&self) -> TaskKind {
        TaskKind::User
    }
    fn flags(&self) -> TaskFlags {
        TaskFlags::empty()
    }
    fn cpu(&self) -> CpuId {
        CpuId(0)
    }
    fn is_running(&self) -> bool {
        false
    }
    fn patch_state(&self) -> &TaskPatchState {
        &self.state
    }
}

/// Walks a [`BenchTask`]'s stack slice; a stack deeper than the limit is `TooDeep` before any
/// frame is handed out (a reliable walk never reports a partial stack).
#[derive(Debug, Default, Clone, Copy)]
pub struct SliceWalker;

impl StackWalker for SliceWalker {
    type Task = BenchTask;
    type Error = Infallible;

    #[inline]
    fn walk<F>(&self, task: &BenchTask, max_depth: usize, mut frame: F) -> Result<usize, WalkError<Infallible>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        if task.stack.len() > max_depth {
            return Err(WalkError::TooDeep);
        }
        let mut n = 0;
        for &addr in task.stack.iter() {
            n += 1;
            if frame(addr).is_break() {
                break;
            }
        }
        Ok(n)
    }

    /// The saved stack at once (the core's batched check; see `StackWalker::walk_runs`).
    #[inline]
    fn walk_runs<F>(&self, task: &BenchTask, max_depth: usize, mut frames: F) -> Result<usize, WalkError<Infallible>>
    where
        F: FnMut(&[CodeAddr]) -> ControlFlow<()>,
    {
        if task.stack.len() > max_depth {
            return Err(WalkError::TooDeep);
        }
        if task.stack.is_empty() {
            return Ok(0);
        }
        let _ = frames(&task.stack);
        Ok(task.stack.len())
    }
}

/// A tracer that installs and removes every hook successfully; every object is loaded.
#[derive(Debug, Default, Clone, Copy)]
pub struct AcceptTracer;

impl Tracer for AcceptTracer {
    type Error = Infallible;

    fn install(&self, _slot: SlotId, _func: CodeRange) -> Result<(), Infallible> {
        Ok(())
    }
    fn remove(&self, _slot: SlotId, _func: CodeRange) -> Result<(), Infallible> {
        Ok(())
    }
    fn object_loaded(&self, _object: ObjectId) -> bool {
        true
    }
}

/// The task list and the scheduler services: batches of the `Vec`, one CPU, no-op signals,
/// retries and grace periods, and a monotonic clock.
#[derive(Debug)]
pub struct VecScheduler {
    /// Every task.
    pub tasks: Vec<BenchTask>,
    epoch: Instant,
    /// When `Some`, the duration of every `for_each_task` batch (one task-list lock hold) is
    /// appended here, in nanoseconds.
    pub batch_ns: RefCell<Option<Vec<u64>>>,
}

impl VecScheduler {
    /// A scheduler over `tasks`.
    pub fn new(tasks: Vec<BenchTask>) -> Self {
        Self { tasks, epoch: Instant::now(), batch_ns: RefCell::new(None) }
    }
}

impl Scheduler for VecScheduler {
    type Task = BenchTask;

    fn for_each_task<F>(&self, cursor: TaskCursor, max: usize, mut f: F) -> Option<TaskCursor>
    where
        F: FnMut(&BenchTask),
    {
        let begin = self.batch_ns.borrow().is_some().then(Instant::now);
        let start = (cursor.0 as usize).min(self.tasks.len());
        let end = start.saturating_add(max).min(self.tasks.len());
        self.tasks[start..end].iter().for_each(&mut f);
        if let (Some(begin), Some(times)) = (begin, self.batch_ns.borrow_mut().as_mut()) {
            times.push(begin.elapsed().as_nanos() as u64);
        }
        (end < self.tasks.len()).then_some(TaskCursor(end as u64))
    }

    fn for_each_task_on_cpu<F>(&self, cpu: CpuId, f: F)
    where
        F: FnMut(&BenchTask),
    {
        self.tasks.iter().filter(|t| t.cpu() == cpu).for_each(f);
    }

    fn for_each_cpu<F>(&self, mut f: F)
    where
        F: FnMut(CpuId),
    {
        f(CpuId(0));
    }

    fn pin<R, F>(&self, task: &BenchTask, f: F) -> Pinned<R>
    where
        F: FnOnce(&BenchTask) -> R,
    {
        Pinned::Checked(f(task))
    }

    fn kick(&self, _task: &BenchTask) {}

    fn stop_all<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R,
    {
        f()
    }

    fn schedule_retry(&self, _delay_ns: u64) {}

    fn synchronize(&self) {}

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// The backend the engine is driven with.
pub type BenchBackend = Parts<'static, VecScheduler, SliceWalker, AcceptTracer>;

/// A backend over `tasks`, leaked.
pub fn backend(tasks: Vec<BenchTask>) -> BenchBackend {
    Parts {
        scheduler: crate::leak(VecScheduler::new(tasks)),
        walker: crate::leak(SliceWalker),
        tracer: crate::leak(AcceptTracer),
    }
}
