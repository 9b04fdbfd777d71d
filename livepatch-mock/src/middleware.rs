//! Middleware backends (after smoltcp's `phy::FaultInjector`): wrappers around any walker or
//! scheduler that inject the faults a real machine has — unreliable or over-deep stack walks,
//! lost or delayed fake signals, a task that never reacts to them.

use crate::backend::DelayKick;
use livepatch_core::backend::{Error, ErrorKind, Pinned, Scheduler, StackWalker, Task, TaskCursor, WalkError};
use livepatch_core::{CodeAddr, CpuId, TaskId};
use std::cell::Cell;
use std::ops::ControlFlow;

/// What a [`FaultyWalker`] injects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalkFaults {
    /// These tasks' stacks are always unreliable (e.g. an interrupt frame on them).
    pub unreliable_tasks: Vec<TaskId>,
    /// One walk in this many is unreliable (0: never), decided by a hash of task and count.
    pub unreliable_one_in: u32,
    /// These tasks' stacks are this much deeper than they look (over-deep stacks).
    pub deep_tasks: Vec<TaskId>,
    /// How many hidden frames the deep tasks have.
    pub extra_depth: usize,
    /// A *buggy* walker: silently stops after this many frames and reports success — what
    /// the core's contract forbids. Only for testing that the oracle catches the result.
    pub silently_truncate_at: Option<usize>,
}

/// A walk failure injected by the middleware, or the inner walker's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault<E> {
    /// Injected.
    Injected(ErrorKind),
    /// From the wrapped backend.
    Inner(E),
}

impl<E: Error> Error for Fault<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Fault::Injected(k) => *k,
            Fault::Inner(e) => e.kind(),
        }
    }
}

/// Wraps a walker and injects [`WalkFaults`].
#[derive(Debug)]
pub struct FaultyWalker<W> {
    inner: W,
    faults: WalkFaults,
    count: Cell<u64>,
    injected: Cell<u64>,
}

impl<W> FaultyWalker<W> {
    /// Wraps `inner`.
    pub fn new(inner: W, faults: WalkFaults) -> Self {
        Self { inner, faults, count: Cell::new(0), injected: Cell::new(0) }
    }

    /// The wrapped walker.
    pub fn inner(&self) -> &W {
        &self.inner
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.get()
    }
}

impl<W: StackWalker> FaultyWalker<W> {
    /// The faults decided before a walk: an injected error, or the depth the inner walk gets.
    fn admit(&self, task: &W::Task, max_depth: usize) -> Result<usize, WalkError<Fault<W::Error>>> {
        let id = task.id();
        let n = self.count.get().wrapping_add(1);
        self.count.set(n);
        let unlucky = self.faults.unreliable_one_in > 0
            && (u64::from(id.0).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n.wrapping_mul(0xbf58_476d_1ce4_e5b9))
                % u64::from(self.faults.unreliable_one_in)
                == 0;
        if unlucky || self.faults.unreliable_tasks.contains(&id) {
            self.injected.set(self.injected.get() + 1);
            return Err(WalkError::Backend(Fault::Injected(ErrorKind::Unreliable)));
        }
        let depth = if self.faults.deep_tasks.contains(&id) {
            if self.faults.extra_depth >= max_depth {
                self.injected.set(self.injected.get() + 1);
                return Err(WalkError::TooDeep);
            }
            max_depth - self.faults.extra_depth
        } else {
            max_depth
        };
        Ok(depth)
    }

    /// The inner walk's result, its errors wrapped.
    fn finish(
        &self,
        r: Result<usize, WalkError<W::Error>>,
        depth: usize,
        max_depth: usize,
    ) -> Result<usize, WalkError<Fault<W::Error>>> {
        if depth < max_depth && matches!(r, Err(WalkError::TooDeep)) {
            // Too deep only because of the hidden frames.
            self.injected.set(self.injected.get() + 1);
        }
        r.map_err(|e| match e {
            WalkError::TooDeep => WalkError::TooDeep,
            WalkError::Backend(e) => WalkError::Backend(Fault::Inner(e)),
        })
    }
}

impl<W: StackWalker> StackWalker for FaultyWalker<W> {
    type Task = W::Task;
    type Error = Fault<W::Error>;

    fn walk<F>(&self, task: &W::Task, max_depth: usize, frame: F) -> Result<usize, WalkError<Self::Error>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        let depth = self.admit(task, max_depth)?;
        if let Some(limit) = self.faults.silently_truncate_at {
            let mut frame = frame;
            let mut seen = 0usize;
            let r = self.inner.walk(task, depth, |addr| {
                seen += 1;
                if seen > limit {
                    return ControlFlow::Break(());
                }
                frame(addr)
            });
            return r.map(|n| n.min(limit)).map_err(|e| match e {
                WalkError::TooDeep => WalkError::TooDeep,
                WalkError::Backend(e) => WalkError::Backend(Fault::Inner(e)),
            });
        }
        let r = self.inner.walk(task, depth, frame);
        self.finish(r, depth, max_depth)
    }

    /// The inner walker's runs under the same faults (a silently truncating walker goes one
    /// address at a time, through [`walk`](Self::walk)).
    fn walk_runs<F>(&self, task: &W::Task, max_depth: usize, mut frames: F) -> Result<usize, WalkError<Self::Error>>
    where
        F: FnMut(&[CodeAddr]) -> ControlFlow<()>,
    {
        if self.faults.silently_truncate_at.is_some() {
            return self.walk(task, max_depth, |addr| frames(core::slice::from_ref(&addr)));
        }
        let depth = self.admit(task, max_depth)?;
        let r = self.inner.walk_runs(task, depth, frames);
        self.finish(r, depth, max_depth)
    }
}

/// What a [`FaultyScheduler`] does to fake signals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignalFaults {
    /// One kick in this many is lost (0: none).
    pub drop_one_in: u32,
    /// Every kick arrives this much later.
    pub delay_ns: u64,
    /// These tasks never react to a kick.
    pub stubborn: Vec<TaskId>,
}

/// Wraps a scheduler; loses, delays or ignores fake signals per [`SignalFaults`].
#[derive(Debug)]
pub struct FaultyScheduler<'f, S> {
    inner: S,
    faults: &'f SignalFaults,
    counter: &'f Cell<u64>,
    lost: &'f Cell<u64>,
}

impl<'f, S> FaultyScheduler<'f, S> {
    /// Wraps `inner`; `counter` and `lost` persist across engine calls.
    pub fn new(inner: S, faults: &'f SignalFaults, counter: &'f Cell<u64>, lost: &'f Cell<u64>) -> Self {
        Self { inner, faults, counter, lost }
    }

    /// The wrapped scheduler.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: DelayKick> Scheduler for FaultyScheduler<'_, S> {
    type Task = S::Task;

    fn for_each_task<F>(&self, cursor: TaskCursor, max: usize, f: F) -> Option<TaskCursor>
    where
        F: FnMut(&S::Task),
    {
        self.inner.for_each_task(cursor, max, f)
    }

    fn for_each_task_on_cpu<F>(&self, cpu: CpuId, f: F)
    where
        F: FnMut(&S::Task),
    {
        self.inner.for_each_task_on_cpu(cpu, f)
    }

    fn for_each_cpu<F>(&self, f: F)
    where
        F: FnMut(CpuId),
    {
        self.inner.for_each_cpu(f)
    }

    fn pin<R, F>(&self, task: &S::Task, f: F) -> Pinned<R>
    where
        F: FnOnce(&S::Task) -> R,
    {
        self.inner.pin(task, f)
    }

    fn freeze(&self, task: &S::Task) {
        self.inner.freeze(task);
    }

    fn thaw_all(&self) {
        self.inner.thaw_all();
    }

    fn kick(&self, task: &S::Task) {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let lost = self.faults.stubborn.contains(&task.id())
            || (self.faults.drop_one_in > 0 && n % u64::from(self.faults.drop_one_in) == 0);
        if lost {
            self.lost.set(self.lost.get() + 1);
        } else if self.faults.delay_ns > 0 {
            self.inner.kick_after(task, self.faults.delay_ns);
        } else {
            self.inner.kick(task);
        }
    }

    fn stop_all<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R,
    {
        self.inner.stop_all(f)
    }

    fn schedule_retry(&self, delay_ns: u64) {
        self.inner.schedule_retry(delay_ns)
    }

    fn synchronize(&self) {
        self.inner.synchronize()
    }

    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MockWalker;
    use crate::machine::code::FnId;
    use crate::machine::task::{Frame, Program, SimTask};
    use livepatch_core::backend::{TaskFlags, TaskKind};

    fn task(id: u32, depth: usize) -> SimTask {
        let mut t = SimTask::new(TaskId(id), TaskKind::Kthread, TaskFlags::empty(), CpuId(0), Program::Idle);
        for i in 0..depth {
            t.stack.push(Frame { func: FnId(i as u32), pc: 1, base: 0x1000 * (i + 1) });
        }
        t
    }

    fn frames<W: StackWalker<Task = SimTask>>(w: &W, t: &SimTask, max: usize) -> Result<Vec<usize>, ErrorKind> {
        let mut v = Vec::new();
        w.walk(t, max, |a| {
            v.push(a.get());
            ControlFlow::Continue(())
        })
        .map_err(|e| e.kind())?;
        Ok(v)
    }

    #[test]
    fn a_clean_walk_is_innermost_first_and_respects_the_limit() {
        let w = FaultyWalker::new(MockWalker::new(100, 10), WalkFaults::default());
        let t = task(5, 3);
        assert_eq!(frames(&w, &t, 10), Ok(vec![0x3010, 0x2010, 0x1010]));
        assert_eq!(frames(&w, &t, 2), Err(ErrorKind::TooDeep));
        assert_eq!(w.inner().meter().walks.get(), 2);
        assert_eq!(w.inner().meter().ns.get(), 100 + 30 + 100 + 20);
    }

    #[test]
    fn injected_faults_are_errors_never_partial_walks() {
        let faults = WalkFaults {
            unreliable_tasks: vec![TaskId(1)],
            deep_tasks: vec![TaskId(2)],
            extra_depth: 8,
            ..WalkFaults::default()
        };
        let w = FaultyWalker::new(MockWalker::new(0, 0), faults);
        assert_eq!(frames(&w, &task(1, 2), 10), Err(ErrorKind::Unreliable));
        assert_eq!(frames(&w, &task(2, 3), 10), Err(ErrorKind::TooDeep));
        assert_eq!(frames(&w, &task(2, 2), 10).map(|v| v.len()), Ok(2));
        assert_eq!(frames(&w, &task(3, 3), 10).map(|v| v.len()), Ok(3));
        assert_eq!(w.injected(), 2);
        let every =
            FaultyWalker::new(MockWalker::new(0, 0), WalkFaults { unreliable_one_in: 1, ..WalkFaults::default() });
        assert_eq!(frames(&every, &task(3, 1), 10), Err(ErrorKind::Unreliable));
    }

    #[test]
    fn the_buggy_walker_hides_frames() {
        let w = FaultyWalker::new(
            MockWalker::new(0, 0),
            WalkFaults { silently_truncate_at: Some(1), ..WalkFaults::default() },
        );
        assert_eq!(frames(&w, &task(1, 3), 10), Ok(vec![0x3010]));
    }
}
