//! Simulated CPUs: a run queue, the current task, a time slice, and an idle task.

use std::collections::VecDeque;

/// One CPU.
#[derive(Debug)]
pub struct Cpu {
    pub(crate) online: bool,
    /// Index of the task on the CPU; `None` while it idles.
    pub(crate) current: Option<u32>,
    pub(crate) rq: VecDeque<u32>,
    pub(crate) slice_end: u64,
    /// Incremented whenever a step is (re)scheduled; stale steps are ignored.
    pub(crate) gen: u32,
    /// Index of its idle task.
    pub(crate) idle_task: u32,
    /// Simulated time owed by the task on it (its own stack walks), added to its next step.
    pub(crate) debt: u64,
}

impl Cpu {
    pub(crate) fn new(idle_task: u32) -> Self {
        Self { online: true, current: None, rq: VecDeque::new(), slice_end: 0, gen: 0, idle_task, debt: 0 }
    }

    /// Whether the CPU is online.
    pub fn is_online(&self) -> bool {
        self.online
    }

    /// Whether it is idle.
    pub fn is_idle(&self) -> bool {
        self.current.is_none()
    }

    /// Tasks waiting on its run queue.
    pub fn queued(&self) -> usize {
        self.rq.len()
    }
}
