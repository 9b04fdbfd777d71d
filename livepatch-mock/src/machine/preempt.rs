//! A task-work callback preempted in the middle of its own stack check
//! ([`TaskWorkMode::Preemptible`](crate::backend::TaskWorkMode::Preemptible)): the check is
//! split across machine events, one frame per event, and the switch is a last event of its
//! own, so whatever the engine does meanwhile (passes, reversals, completions, the next
//! enable) lands between two frames of the walk, or between the walk and the switch.

use super::event::Event;
use super::task::RunState;
use super::{Machine, SwitchPoint};
use crate::machine::code::SleepKind;
use crate::oracle::Oracle;
use livepatch_core::backend::{StackWalker, WalkError};
use livepatch_core::model::SwitchPoints;
use livepatch_core::state::TaskWord;
use livepatch_core::sweep::first_away_frame;
use livepatch_core::sync::Ordering;
use livepatch_core::{CodeAddr, Live};
use std::ops::ControlFlow;

/// A task's own check in progress: the word it read before its walk, and the next frame
/// (innermost first) to look at; once past the last frame, the switch from that word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SplitCheck {
    seen: TaskWord,
    next: usize,
}

/// One frame of a walk: the `depth`-th frame (innermost first) of what `inner` walks.
struct OneFrame<'w, W> {
    inner: &'w W,
    depth: usize,
}

impl<W: StackWalker> StackWalker for OneFrame<'_, W> {
    type Task = W::Task;
    type Error = W::Error;

    fn walk<F>(&self, task: &W::Task, max_depth: usize, mut frame: F) -> Result<usize, WalkError<W::Error>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        // Frames above `depth` are passed over (checked at earlier events); the one at
        // `depth` is handed on, and the walk ends there.
        let mut seen = 0;
        let mut handed = 0;
        self.inner.walk(task, max_depth, |addr| {
            seen += 1;
            if seen <= self.depth {
                return ControlFlow::Continue(());
            }
            handed = 1;
            let _ = frame(addr);
            ControlFlow::Break(())
        })?;
        Ok(handed)
    }
}

impl Machine {
    /// The task-work callback of task `t` starts its check: it reads its word (as
    /// `Live::task_work` does) and checks its innermost frame.
    pub(super) fn start_preemptible_task_work(&mut self, cpu: usize, t: usize, live: &Live<'_>, oracle: &mut Oracle) {
        if !live.policy().allows(SwitchPoints::EXIT_TO_USER) {
            return;
        }
        // `Acquire`, as `Live::task_work`: pairs with `retarget`'s `Release`.
        let seen = self.tasks[t].patch.load(Ordering::Acquire);
        if !seen.pending() {
            return;
        }
        self.tasks[t].split_check = Some(SplitCheck { seen, next: 0 });
        self.continue_task_work(cpu, t, live, oracle);
    }

    /// Task `t`, running again on `cpu`, goes on with its check: the next frame, checked
    /// against the transition as it is *now* (`sweep::first_away_frame`), then off the CPU
    /// again; past the last frame, the switch — the compare-and-swap from the word read before
    /// the walk, as `sweep::check_and_switch` does it.
    pub(super) fn continue_task_work(&mut self, cpu: usize, t: usize, live: &Live<'_>, oracle: &mut Oracle) {
        let Some(mut check) = self.tasks[t].split_check.take() else {
            return;
        };
        let frames = self.tasks[t].stack.len();
        if check.next >= frames {
            let before = self.tasks[t].patch.load(Ordering::Relaxed).state;
            if self.tasks[t].patch.try_switch(check.seen).is_none() {
                self.stats.task_work_raced += 1;
            }
            self.note_switch(t, before, SwitchPoint::TaskWork, oracle);
            return;
        }
        let cost0 = self.walker.inner().meter().ns.get();
        let view = OneFrame { inner: &self.walker, depth: check.next };
        let away = first_away_frame(live, &view, &self.tasks[t]);
        self.after_self_walk(cpu, cost0);
        if !matches!(away, Ok(None)) {
            // Blocked (or the walk failed): no switch.
            return;
        }
        check.next += 1;
        self.tasks[t].split_check = Some(check);
        self.preempt_task_work(cpu, t, live, oracle);
    }

    /// Task `t` is preempted inside its task-work callback: off its CPU for up to a time
    /// slice. It is not running meanwhile (the engine's sweep can check it), and not on a run
    /// queue either: it comes back when the time is up (a timed wake-up, with no sleep op and
    /// no `schedule()` frame, which a signal does not cut short).
    fn preempt_task_work(&mut self, cpu: usize, t: usize, live: &Live<'_>, oracle: &mut Oracle) {
        self.stats.task_work_preemptions += 1;
        let delay = self.rng.range(1, self.cfg.slice_ns.max(2));
        let task = &mut self.tasks[t];
        task.run = RunState::Sleeping(SleepKind::Uninterruptible);
        task.sleep_gen = task.sleep_gen.wrapping_add(1);
        let gen = task.sleep_gen;
        self.queue.push(self.now + delay, Event::Wake { task: t as u32, gen });
        self.cpus[cpu].current = None;
        self.switch_to_next(cpu, live, oracle);
    }
}
