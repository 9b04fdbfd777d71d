//! The scheduler: run queues, wake-ups, dispatch, idle, preemption and time slices.

use super::event::Event;
use super::task::RunState;
use super::{Machine, SwitchPoint};
use crate::oracle::Oracle;
use livepatch_core::sync::Ordering;
use livepatch_core::{CpuId, Live};

impl Machine {
    pub(super) fn wake(&mut self, t: u32) {
        self.stats.wakeups += 1;
        let task = &mut self.tasks[t as usize];
        task.run = RunState::Runnable;
        task.sleep_gen = task.sleep_gen.wrapping_add(1);
        let mut c = task.cpu.0 as usize;
        if !self.cpus.get(c).is_some_and(|c| c.online) {
            c = self.least_loaded_cpu();
        }
        self.tasks[t as usize].cpu = CpuId(c as u32);
        self.cpus[c].rq.push_back(t);
        if self.cpus[c].current.is_none() {
            self.dispatch(c);
        }
    }

    pub(super) fn least_loaded_cpu(&self) -> usize {
        self.cpus
            .iter()
            .enumerate()
            .filter(|(_, c)| c.online)
            .min_by_key(|(_, c)| c.rq.len() + usize::from(c.current.is_some()))
            .map_or(0, |(i, _)| i)
    }

    /// Picks the next task on an idle CPU (no idle-loop switch point: used on wake-ups).
    pub(super) fn dispatch(&mut self, cpu: usize) {
        let c = &mut self.cpus[cpu];
        let Some(n) = c.rq.pop_front() else {
            return;
        };
        c.current = Some(n);
        c.slice_end = self.now + self.cfg.slice_ns;
        c.gen = c.gen.wrapping_add(1);
        let gen = c.gen;
        let idle = c.idle_task as usize;
        self.tasks[idle].run = RunState::Runnable;
        let task = &mut self.tasks[n as usize];
        task.run = RunState::Running;
        task.cpu = CpuId(cpu as u32);
        self.stats.context_switches += 1;
        self.queue.push(self.now + self.cfg.ctx_switch_ns, Event::Step { cpu: cpu as u32, gen });
    }

    /// The CPU's current task stopped running: run the next one or idle.
    pub(super) fn switch_to_next(&mut self, cpu: usize, live: &Live<'_>, oracle: &mut Oracle) {
        self.cpus[cpu].current = None;
        if !self.cpus[cpu].online {
            return;
        }
        if self.cpus[cpu].rq.is_empty() {
            let idle = self.cpus[cpu].idle_task as usize;
            self.tasks[idle].run = RunState::Running;
            self.cpus[cpu].gen = self.cpus[cpu].gen.wrapping_add(1);
            self.idle_loop(cpu, live, oracle);
        } else {
            self.dispatch(cpu);
        }
    }

    pub(super) fn idle_loop(&mut self, cpu: usize, live: &Live<'_>, oracle: &mut Oracle) {
        let idle = self.cpus[cpu].idle_task as usize;
        let before = self.tasks[idle].patch.load(Ordering::Relaxed).state;
        live.idle(&self.tasks[idle].patch);
        self.note_switch(idle, before, SwitchPoint::Idle, oracle);
    }

    pub(super) fn preempt(&mut self, cpu: usize, live: &Live<'_>, oracle: &mut Oracle) {
        if let Some(t) = self.cpus[cpu].current {
            self.tasks[t as usize].run = RunState::Runnable;
            self.cpus[cpu].rq.push_back(t);
        }
        self.switch_to_next(cpu, live, oracle);
    }

    pub(super) fn schedule_chunk(&mut self, cpu: usize, t: usize) {
        let task = &mut self.tasks[t];
        let mut chunk = task.work_left.max(1);
        if task.in_user {
            chunk = chunk.min(self.cfg.tick_ns.max(1));
        }
        let c = &mut self.cpus[cpu];
        let slice_left = if c.slice_end > self.now { c.slice_end - self.now } else { self.cfg.slice_ns };
        chunk = chunk.min(slice_left.max(1));
        task.work_left = task.work_left.max(chunk);
        task.chunk = chunk;
        let debt = std::mem::take(&mut c.debt);
        task.added_ns += debt;
        c.gen = c.gen.wrapping_add(1);
        self.queue.push(self.now + chunk + debt, Event::Step { cpu: cpu as u32, gen: c.gen });
    }
}
