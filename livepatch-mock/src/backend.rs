//! The machine's implementation of the core's backend traits.
//!
//! The engine runs beside the machine and calls back into it through these types while the
//! machine is borrowed immutably; every side effect that would mutate the machine (a fake
//! signal, the next retry, a stop-the-world pause) is recorded in [`Effects`] and applied after
//! the engine call returns, as a kernel would defer it to an IPI or a work item.

use crate::machine::cpu::Cpu;
use crate::machine::task::SimTask;
use livepatch_core::backend::{ErrorKind, Parts, Pinned, Scheduler, StackWalker, Task, TaskCursor, Tracer, WalkError};
use livepatch_core::state::{PatchState, TaskWord};
use livepatch_core::sync::Ordering;
use livepatch_core::{CodeAddr, CodeRange, CpuId, ObjectId, SlotId};
use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::ops::ControlFlow;

use crate::machine::code::CodeTable;
use crate::middleware::{FaultyScheduler, FaultyWalker};

/// Counts stack walks and the simulated time they cost.
#[derive(Debug, Default)]
pub struct Meter {
    /// Walks done.
    pub walks: Cell<u64>,
    /// Frames visited.
    pub frames: Cell<u64>,
    /// Simulated nanoseconds spent walking.
    pub ns: Cell<u64>,
}

/// Walks a simulated task's real stack of frames, innermost first, charging simulated time
/// per walk and per frame.
#[derive(Debug)]
pub struct MockWalker {
    meter: Meter,
    walk_ns: u64,
    frame_ns: u64,
}

impl MockWalker {
    /// A walker charging `walk_ns` per walk and `frame_ns` per frame.
    pub fn new(walk_ns: u64, frame_ns: u64) -> Self {
        Self { meter: Meter::default(), walk_ns, frame_ns }
    }

    /// Its meter.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    fn charge(&self, frames: usize) {
        let m = &self.meter;
        m.walks.set(m.walks.get() + 1);
        m.frames.set(m.frames.get() + frames as u64);
        m.ns.set(m.ns.get() + self.walk_ns + self.frame_ns * frames as u64);
    }
}

impl StackWalker for MockWalker {
    type Task = SimTask;
    type Error = Infallible;

    fn walk<F>(&self, task: &SimTask, max_depth: usize, mut frame: F) -> Result<usize, WalkError<Infallible>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        let stack = task.stack();
        if stack.len() > max_depth {
            self.charge(max_depth);
            return Err(WalkError::TooDeep);
        }
        let mut n = 0;
        for f in stack.iter().rev() {
            n += 1;
            if frame(f.addr()).is_break() {
                break;
            }
        }
        self.charge(n);
        Ok(n)
    }
}

/// A task-state change observed while the engine ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Task index.
    pub task: u32,
    /// Its word before.
    pub before: TaskWord,
    /// Its universe after.
    pub after: PatchState,
    /// Whether the per-CPU pass did it.
    pub per_cpu: bool,
}

/// Side effects of one engine call, applied by the machine afterwards.
#[derive(Debug, Default)]
pub struct Effects {
    /// Fake signals / wake-ups: task index and delay.
    pub kicks: RefCell<Vec<(u32, u64)>>,
    /// The requested retry time (absolute).
    pub retry_at: Cell<Option<u64>>,
    /// Task-state changes, in order.
    pub observed: RefCell<Vec<Observed>>,
    /// Grace periods waited for.
    pub syncs: Cell<u32>,
    /// Simulated time the engine spent outside stack walks.
    pub extra_ns: Cell<u64>,
    /// Stop-the-world pauses `(begin, end)`.
    pub stops: RefCell<Vec<(u64, u64)>>,
}

/// A scheduler that can deliver a fake signal after a delay (used by the signal middleware).
pub trait DelayKick: Scheduler {
    /// Kicks `task` after `delay_ns`.
    fn kick_after(&self, task: &Self::Task, delay_ns: u64);
}

/// Timing constants the scheduler charges.
#[derive(Clone, Copy, Debug)]
pub struct SchedCosts {
    /// Per task visited by a task-list walk.
    pub visit_ns: u64,
    /// A grace period.
    pub grace_ns: u64,
    /// Stopping one CPU (stop-the-world).
    pub stop_cpu_ns: u64,
}

/// The scheduler services, over an immutable view of the machine.
#[derive(Debug)]
pub struct MockScheduler<'m> {
    pub(crate) tasks: &'m [SimTask],
    pub(crate) cpus: &'m [Cpu],
    pub(crate) meter: &'m Meter,
    pub(crate) fx: &'m Effects,
    pub(crate) start_ns: u64,
    pub(crate) meter_start: u64,
    pub(crate) costs: SchedCosts,
    /// Task indices per CPU, built on the first per-CPU pass of an engine call (no task
    /// moves during one).
    pub(crate) by_cpu: RefCell<Option<Vec<Vec<u32>>>>,
}

impl MockScheduler<'_> {
    fn charge(&self, ns: u64) {
        self.fx.extra_ns.set(self.fx.extra_ns.get() + ns);
    }

    fn visit<F: FnMut(&SimTask)>(&self, i: usize, per_cpu: bool, f: &mut F) {
        let task = &self.tasks[i];
        self.charge(self.costs.visit_ns);
        let before = task.patch.load(Ordering::Relaxed);
        f(task);
        let after = task.patch.load(Ordering::Relaxed).state;
        if after != before.state {
            self.fx.observed.borrow_mut().push(Observed { task: i as u32, before, after, per_cpu });
        }
    }
}

impl Scheduler for MockScheduler<'_> {
    type Task = SimTask;

    fn for_each_task<F>(&self, cursor: TaskCursor, max: usize, mut f: F) -> Option<TaskCursor>
    where
        F: FnMut(&SimTask),
    {
        let mut i = cursor.0 as usize;
        let mut seen = 0;
        while i < self.tasks.len() {
            if seen == max {
                return Some(TaskCursor(i as u64));
            }
            if !self.tasks[i].is_dead() {
                self.visit(i, false, &mut f);
                seen += 1;
            }
            i += 1;
        }
        None
    }

    fn for_each_task_on_cpu<F>(&self, cpu: CpuId, mut f: F)
    where
        F: FnMut(&SimTask),
    {
        let mut index = self.by_cpu.borrow_mut();
        let lists = index.get_or_insert_with(|| {
            let mut lists = vec![Vec::new(); self.cpus.len()];
            for (i, t) in self.tasks.iter().enumerate() {
                if let Some(list) = lists.get_mut(t.cpu.0 as usize) {
                    if !t.is_dead() {
                        list.push(i as u32);
                    }
                }
            }
            lists
        });
        let Some(list) = lists.get(cpu.0 as usize) else {
            return;
        };
        for &i in list {
            self.visit(i as usize, true, &mut f);
        }
    }

    fn for_each_cpu<F>(&self, mut f: F)
    where
        F: FnMut(CpuId),
    {
        for (i, c) in self.cpus.iter().enumerate() {
            if c.online {
                f(CpuId(i as u32));
            }
        }
    }

    fn pin<R, F>(&self, task: &SimTask, f: F) -> Pinned<R>
    where
        F: FnOnce(&SimTask) -> R,
    {
        if task.is_running() {
            Pinned::Running
        } else {
            Pinned::Checked(f(task))
        }
    }

    fn kick(&self, task: &SimTask) {
        self.kick_after(task, 0);
    }

    fn stop_all<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R,
    {
        let begin = self.now_ns();
        let online = self.cpus.iter().filter(|c| c.online).count() as u64;
        self.charge(self.costs.stop_cpu_ns * online);
        let r = f();
        self.fx.stops.borrow_mut().push((begin, self.now_ns()));
        r
    }

    fn schedule_retry(&self, delay_ns: u64) {
        self.fx.retry_at.set(Some(self.now_ns().saturating_add(delay_ns)));
    }

    fn synchronize(&self) {
        self.fx.syncs.set(self.fx.syncs.get() + 1);
        self.charge(self.costs.grace_ns);
    }

    fn now_ns(&self) -> u64 {
        self.start_ns + (self.meter.ns.get() - self.meter_start) + self.fx.extra_ns.get()
    }
}

impl DelayKick for MockScheduler<'_> {
    fn kick_after(&self, task: &SimTask, delay_ns: u64) {
        self.fx.kicks.borrow_mut().push((task.id().0, delay_ns));
    }
}

/// Sentinel for "no hook" in the hook table.
pub(crate) const NO_HOOK: u32 = u32::MAX;

/// Installs hooks in the machine's hook table (one cell per function).
#[derive(Debug)]
pub struct MockTracer<'m> {
    pub(crate) code: &'m CodeTable,
    pub(crate) hooks: &'m [Cell<u32>],
    pub(crate) loaded: &'m [ObjectId],
    pub(crate) fail_on: Option<CodeAddr>,
}

impl Tracer for MockTracer<'_> {
    type Error = ErrorKind;

    fn install(&self, slot: SlotId, func: CodeRange) -> Result<(), ErrorKind> {
        if self.fail_on == Some(func.start()) {
            return Err(ErrorKind::Hook);
        }
        let id = self.code.at_entry(func.start()).ok_or(ErrorKind::Hook)?;
        if self.code.get(id).range != func {
            return Err(ErrorKind::Hook);
        }
        let cell = &self.hooks[id.idx()];
        if cell.get() != NO_HOOK {
            return Err(ErrorKind::Hook);
        }
        cell.set(slot.0);
        Ok(())
    }

    fn remove(&self, slot: SlotId, func: CodeRange) -> Result<(), ErrorKind> {
        let id = self.code.at_entry(func.start()).ok_or(ErrorKind::Hook)?;
        let cell = &self.hooks[id.idx()];
        if cell.get() != slot.0 {
            return Err(ErrorKind::Hook);
        }
        cell.set(NO_HOOK);
        Ok(())
    }

    fn object_loaded(&self, object: ObjectId) -> bool {
        object == ObjectId::VMLINUX || self.loaded.contains(&object)
    }
}

/// The backend the engine sees: the machine's scheduler and walker behind the fault-injecting
/// middleware, and its tracer.
pub type MockBackend<'m> = Parts<'m, FaultyScheduler<'m, MockScheduler<'m>>, FaultyWalker<MockWalker>, MockTracer<'m>>;
