//! A run in progress that a caller can step: handle one event, run until a time, wake a
//! task, inject an operation — the loop [`super::run_with`] drives to the end.

use super::driver::State;
use crate::machine::event::Event;
use crate::machine::heap::Heap;
use crate::machine::Machine;
use crate::oracle::Oracle;
use crate::scenario::{Action, Scenario};
use livepatch_core::backend::Scheduler;
use livepatch_core::sweep::Straggler;
use livepatch_core::transition::Progress;
use livepatch_core::{Engine, Live, Patch, TaskId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A run in progress (see [`super::run_stepped`]). Every step keeps the oracle on.
pub struct Sim<'r, 'a> {
    pub(super) sc: &'r Scenario,
    pub(super) m: &'r mut Machine,
    pub(super) oracle: &'r mut Oracle,
    pub(super) engine: &'r mut Engine<'a>,
    pub(super) patches: &'a [Patch<'a>],
    pub(super) live: &'a Live<'a>,
    pub(super) st: &'r mut State,
    pub(super) heap: &'r Mutex<Heap>,
    pub(super) clock: &'r AtomicU64,
    pub(super) timeline: bool,
    pub(super) max_events: u64,
    pub(super) uses_heap: bool,
    pub(super) reclaim_armed: bool,
    pub(super) events: u64,
    pub(super) timed_out: bool,
    pub(super) done: bool,
}

impl std::fmt::Debug for Sim<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.m.now())
            .field("events", &self.events)
            .field("done", &self.done)
            .finish()
    }
}

impl<'a> Sim<'_, 'a> {
    /// The core's live state (its slots and index).
    pub fn live(&self) -> &'a Live<'a> {
        self.live
    }
}

impl Sim<'_, '_> {
    /// The simulated time.
    pub fn now(&self) -> u64 {
        self.m.now()
    }

    /// Events handled so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Whether the run is over (time limit, settled after the script, event budget, or a
    /// violation).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The machine (tasks, CPUs, code, counters).
    pub fn machine(&self) -> &Machine {
        self.m
    }

    /// The oracle (its first violation, its counters).
    pub fn oracle(&self) -> &Oracle {
        self.oracle
    }

    /// Whether a transition is in progress.
    pub fn in_transition(&self) -> bool {
        self.engine.transition().is_some()
    }

    /// Handles the next event; `false` once the run is over.
    pub fn step(&mut self) -> bool {
        if self.done {
            return false;
        }
        let Some((time, ev)) = self.m.queue.pop() else {
            self.done = true;
            return false;
        };
        if time > self.sc.limit_ns {
            self.timed_out = true;
            self.m.now = self.sc.limit_ns;
            self.done = true;
            return false;
        }
        if self.st.end_at.is_some_and(|e| time > e) {
            self.m.now = time.min(self.st.end_at.unwrap_or(time));
            self.done = true;
            return false;
        }
        self.events += 1;
        if self.max_events > 0 && self.events > self.max_events {
            self.done = true;
            return false;
        }
        self.oracle.set_event_index(self.events);
        self.clock.store(self.m.now.max(time), Ordering::Relaxed);
        let (m, oracle, st) = (&mut *self.m, &mut *self.oracle, &mut *self.st);
        match ev {
            Event::Reclaim => {
                // Freed shadow variables become reusable after a grace period of the machine
                // (the engine scheduler's synchronize, as for released code).
                self.reclaim_armed = false;
                m.now = m.now.max(time);
                let h = self.heap;
                let (_, rep) = m.engine_call(oracle, |b| {
                    h.lock().unwrap_or_else(std::sync::PoisonError::into_inner).reclaim(|| b.scheduler.synchronize())
                });
                st.after_call(m, &rep);
            }
            Event::Retry { gen } => {
                if gen == st.retry_gen && self.engine.transition().is_some() {
                    m.now = m.now.max(time);
                    let mut stragglers: Vec<Straggler> = Vec::new();
                    let engine = &mut *self.engine;
                    let (r, rep) = m.engine_call(oracle, |b| engine.try_complete(b, |s| stragglers.push(*s)));
                    st.after_call(m, &rep);
                    if let Ok(progress) = r {
                        st.note_pass(m, &progress, &stragglers);
                        if matches!(progress, Progress::GaveUp(_)) && self.engine.transition().is_some() {
                            // The freezer gave up and reversed (after the attempt's own
                            // switches, which the machine already reported).
                            oracle.reverse();
                            if let Some(t) = &mut st.current {
                                t.reversed = true;
                            }
                        }
                    }
                    st.after_engine(m, oracle, self.engine, self.patches, rep.end_ns, self.timeline);
                }
            }
            Event::Script => {
                m.now = time;
                st.run_step(self.sc, m, oracle, self.engine, self.patches, self.live, self.timeline);
            }
            Event::Sample => {
                m.now = m.now.max(time);
                st.sample(m, oracle, self.timeline);
            }
            other => m.handle(time, other, self.live, oracle),
        }
        self.after_event();
        !self.done
    }

    /// Handles every event up to simulated time `t` (the clock then reads at least `t`
    /// unless the run ended first); returns whether the run goes on.
    pub fn run_until(&mut self, t: u64) -> bool {
        while !self.done && self.m.queue.peek_time().is_some_and(|next| next <= t) {
            self.step();
        }
        if !self.done {
            self.m.now = self.m.now.max(t.min(self.sc.limit_ns));
        }
        !self.done
    }

    /// Wakes task `task` if it sleeps (what it waited for happened); returns whether it slept.
    pub fn wake(&mut self, task: TaskId) -> bool {
        let woke = self.m.wake_task(task.0);
        self.after_event();
        woke
    }

    /// Runs `action` now, as a script step would (the script goes on as it was).
    pub fn inject(&mut self, action: Action) -> Result<(), String> {
        let (m, oracle, st) = (&mut *self.m, &mut *self.oracle, &mut *self.st);
        let r = st.act(action, m, oracle, self.engine, self.patches, self.live, self.timeline);
        self.after_event();
        r
    }

    fn after_event(&mut self) {
        if self.oracle.stopped() {
            self.done = true;
            return;
        }
        let (m, st) = (&mut *self.m, &mut *self.st);
        if self.uses_heap && !self.reclaim_armed && m.heap_mut().shadows_retired() > 0 {
            self.reclaim_armed = true;
            m.queue.push(m.now, Event::Reclaim);
        }
        let idle = self.engine.transition().is_none();
        if st.waiting_settle && idle {
            st.waiting_settle = false;
            m.queue.push(m.now + st.settle_delay, Event::Script);
        }
        if st.script_done && idle && st.end_at.is_none() {
            st.end_at = Some(m.now + self.sc.settle_ns);
        }
    }
}
