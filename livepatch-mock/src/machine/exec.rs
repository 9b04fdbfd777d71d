//! Running tasks: ops, calls through hooks, sleeps, exit to user mode, syscalls, exit,
//! fork and fake signals — each switch point calling into the core and reporting to the oracle.

use super::code::{FnId, Op, SleepFor, SleepKind};
use super::event::Event;
use super::task::{Frame, HandlerPhase, InHandler, Program, RunState, UserProgram};
use super::{Machine, SwitchPoint, TaskSpec, MAX_STACK, OPS_BUDGET};
use crate::backend::{TaskWorkMode, FENTRY_OFFSET, NO_HOOK};
use crate::oracle::{Invariant, Oracle};
use livepatch_core::backend::{TaskFlags, TaskKind};
use livepatch_core::state::PatchState;
use livepatch_core::sync::Ordering;
use livepatch_core::{CodeAddr, Live, Redirect, SlotId};
use std::sync::Arc;

/// From the return to user mode of an interrupted syscall to its restart: the `syscall`
/// instruction again (ns).
const RESTART_NS: (u64, u64) = (100, 300);

impl Machine {
    pub(super) fn on_step(&mut self, cpu: usize, live: &Live<'_>, oracle: &mut Oracle) {
        let Some(t) = self.cpus[cpu].current else {
            return;
        };
        let ti = t as usize;
        if self.tasks[ti].freeze_pending && self.tasks[ti].in_user && self.tasks[ti].handler.is_none() {
            // The freezer's signal is delivered on the way back to user mode (get_signal ->
            // try_to_freeze): the task enters the refrigerator from the kernel side.
            self.tasks[ti].in_user = false;
            self.tasks[ti].work_left = 0;
            self.enter_refrigerator(cpu, ti, live, oracle);
            self.run_ops(cpu, ti, live, oracle);
            return;
        }
        let task = &mut self.tasks[ti];
        if task.work_left > 0 {
            task.work_left = task.work_left.saturating_sub(task.chunk);
            task.chunk = 0;
            if task.in_user {
                // A timer interrupt or the end of the stretch: back to user mode through the
                // exit path.
                self.exit_to_user(ti, live, oracle);
            }
            if self.tasks[ti].work_left > 0 {
                if self.now >= self.cpus[cpu].slice_end {
                    if !self.cpus[cpu].rq.is_empty() {
                        self.preempt(cpu, live, oracle);
                        return;
                    }
                    self.cpus[cpu].slice_end = self.now + self.cfg.slice_ns;
                }
                self.schedule_chunk(cpu, ti);
                return;
            }
        }
        self.run_ops(cpu, ti, live, oracle);
    }

    pub(super) fn run_ops(&mut self, cpu: usize, t: usize, live: &Live<'_>, oracle: &mut Oracle) {
        for _ in 0..OPS_BUDGET {
            if oracle.stopped() {
                return;
            }
            let task = &self.tasks[t];
            if task.run != RunState::Running || self.cpus[cpu].current != Some(t as u32) {
                return;
            }
            if task.split_check.is_some() {
                // Back on its CPU inside its task-work callback: the rest of its check.
                self.continue_task_work(cpu, t, live, oracle);
                continue;
            }
            if let Some(h) = task.handler {
                if self.cfg.handler_step_ns > 0 && !h.queued {
                    // The next step of the handler comes after an event boundary: an IPI
                    // (the per-CPU pass) may land first.
                    if let Some(h) = self.tasks[t].handler.as_mut() {
                        h.queued = true;
                    }
                    let step = self.cfg.handler_step_ns;
                    self.tasks[t].work_left = self.rng.range(step.div_ceil(2), step + step / 2);
                    self.schedule_chunk(cpu, t);
                    return;
                }
                if let Some(h) = self.tasks[t].handler.as_mut() {
                    h.queued = false;
                }
                self.handler_step(cpu, t, live, oracle);
                continue;
            }
            if task.unwind {
                self.return_to_user(cpu, t, live, oracle);
                return;
            }
            if task.in_user {
                self.enter_kernel(cpu, t, live, oracle);
                continue;
            }
            let Some(frame) = task.stack.last().copied() else {
                match &task.program {
                    Program::User(_) => {
                        self.return_to_user(cpu, t, live, oracle);
                        return;
                    }
                    Program::Kthread { main } => {
                        let main = *main;
                        self.tasks[t].started = true;
                        self.call(cpu, t, main, live, oracle);
                        if self.tasks[t].stack.is_empty() && self.tasks[t].handler.is_none() {
                            // Its main function is not loaded: nothing to run for a while.
                            self.tasks[t].work_left = self.cfg.slice_ns;
                            self.schedule_chunk(cpu, t);
                            return;
                        }
                        continue;
                    }
                    Program::Idle => return,
                }
            };
            let body = &self.code.get(frame.func).body;
            let pc = frame.pc as usize;
            if pc >= body.len() {
                self.tasks[t].stack.pop();
                oracle.on_return(t as u32, self.tasks[t].stack.len());
                oracle.on_return_into(t as u32, &self.tasks[t], &self.code, self.now);
                if std::mem::take(&mut self.tasks[t].rewait) {
                    // Back from schedule() after a kick: the wait loop's condition is still
                    // false, so the caller's sleep op runs again, with the time left.
                    self.tasks[t].rewait_until = self.tasks[t].wait_deadline;
                    if let Some(caller) = self.tasks[t].stack.last_mut() {
                        caller.pc = caller.pc.saturating_sub(1);
                    }
                }
                if let Some(caller) = self.tasks[t].stack.last() {
                    if self.code.is_released(caller.func) {
                        let msg = format!("returned into released code {}", self.code.get(caller.func).name);
                        oracle.violate(Invariant::I3, t as u32, &self.tasks[t], msg, &self.code, self.now);
                    }
                }
                continue;
            }
            let op = body[pc];
            self.stats.ops += 1;
            let advance = |m: &mut Self| {
                if let Some(f) = m.tasks[t].stack.last_mut() {
                    f.pc += 1;
                }
            };
            match op {
                Op::Call(f) => {
                    advance(self);
                    self.call(cpu, t, f, live, oracle);
                }
                Op::CallBelow(f, depth) => {
                    advance(self);
                    if self.tasks[t].stack.len() < usize::from(depth) {
                        self.call(cpu, t, f, live, oracle);
                    }
                }
                Op::Work(lo, hi) => {
                    advance(self);
                    let ns = self.rng.range(lo, hi);
                    if ns > 0 {
                        self.tasks[t].work_left = ns;
                        self.schedule_chunk(cpu, t);
                        return;
                    }
                }
                Op::Sleep(kind, dur) => {
                    advance(self);
                    self.tasks[t].sleep_req = (kind, dur);
                    let s = self.code.schedule();
                    self.call(cpu, t, s, live, oracle);
                }
                Op::Block => {
                    advance(self);
                    if self.block(cpu, t, live, oracle) {
                        return;
                    }
                }
                Op::CondResched => {
                    advance(self);
                    let before = self.tasks[t].patch.load(Ordering::Relaxed).state;
                    let cost0 = self.walker.inner().meter().ns.get();
                    live.self_check(&self.tasks[t], &self.walker);
                    self.after_self_walk(cpu, cost0);
                    self.note_switch(t, before, SwitchPoint::SelfCheck, oracle);
                    if self.now >= self.cpus[cpu].slice_end && !self.cpus[cpu].rq.is_empty() {
                        self.preempt(cpu, live, oracle);
                        return;
                    }
                }
                Op::SafePoint if self.tasks[t].freeze_pending => {
                    // try_to_freeze(): a freezable kthread's loop top.
                    advance(self);
                    self.enter_refrigerator(cpu, t, live, oracle);
                }
                Op::SafePoint => {
                    advance(self);
                    let before = self.tasks[t].patch.load(Ordering::Relaxed).state;
                    live.kthread_safe_point(&self.tasks[t].patch);
                    self.note_switch(t, before, SwitchPoint::SafePoint, oracle);
                }
                Op::Loop => {
                    if self.tasks[t].exit_requested && self.tasks[t].kind == TaskKind::Kthread {
                        // kthread_should_stop(): the loop ends and the kthread exits.
                        self.die(cpu, t, live, oracle);
                        return;
                    }
                    if let Some(f) = self.tasks[t].stack.last_mut() {
                        f.pc = 0;
                    }
                }
                Op::Unhash => {
                    advance(self);
                    self.tasks[t].flags |= TaskFlags::EXITING;
                }
                Op::Die => {
                    self.die(cpu, t, live, oracle);
                    return;
                }
                Op::Fork => {
                    advance(self);
                    self.fork(t, live, oracle);
                }
                Op::TaskWork => {
                    advance(self);
                    if self.tasks[t].task_work {
                        self.run_task_work(cpu, t, live, oracle);
                    }
                }
                Op::ObjAlloc
                | Op::ObjOldest
                | Op::ObjFree
                | Op::BufAlloc
                | Op::ShadowAttach(_)
                | Op::ShadowCount(_)
                | Op::ShadowFree(_) => {
                    advance(self);
                    self.data_op(t, frame.func, op);
                }
            }
        }
        // Let time pass rather than spin on zero-time ops.
        self.tasks[t].work_left = 1_000;
        self.schedule_chunk(cpu, t);
    }

    /// The freezer asks task `t` to freeze: a fake signal for a user task (an interruptible
    /// sleep unwinds; it freezes on its way back to user mode), a freezable kthread in an
    /// interruptible wait freezes in it, one running freezes at its `try_to_freeze` point.
    pub(crate) fn freeze_request(&mut self, t: u32) {
        let now = self.now;
        let Some(task) = self.tasks.get_mut(t as usize) else {
            return;
        };
        if task.is_dead() || task.freezing || task.frozen_since.is_some() {
            return;
        }
        task.freeze_pending = true;
        self.stats.signals += 1;
        match task.kind {
            TaskKind::User => {
                task.sig_pending = true;
                if task.run == RunState::Sleeping(SleepKind::Interruptible) {
                    task.unwind = true;
                    task.interrupted_syscalls += 1;
                    self.stats.interrupted_syscalls += 1;
                    self.wake(t);
                }
            }
            TaskKind::Kthread => {
                if task.run == RunState::Sleeping(SleepKind::Interruptible) {
                    // wait_event_freezable(): frozen where it waits; its timeout no longer
                    // runs it. Thawed, it goes back to its wait.
                    task.frozen_since = Some(now);
                    task.frozen_in_sleep = true;
                    task.freeze_pending = false;
                    task.sleep_gen = task.sleep_gen.wrapping_add(1);
                }
            }
            TaskKind::Idle(_) => task.freeze_pending = false,
        }
    }

    /// Task `t`, on `cpu`, enters the refrigerator: `__refrigerator()` sleeps in
    /// `schedule()` (called through its hook, like any call) until thawed — so a frozen task
    /// always has `schedule()` on its stack, which is why a patch of the schedule path makes
    /// the freezer model fail.
    pub(super) fn enter_refrigerator(&mut self, cpu: usize, t: usize, live: &Live<'_>, oracle: &mut Oracle) {
        let task = &mut self.tasks[t];
        task.freeze_pending = false;
        task.freezing = true;
        task.sleep_req = (SleepKind::Uninterruptible, SleepFor::Forever);
        let s = self.code.schedule();
        self.call(cpu, t, s, live, oracle);
    }

    /// The transition ended: every frozen task is thawed.
    pub(crate) fn thaw_all(&mut self) {
        for t in 0..self.tasks.len() {
            let task = &mut self.tasks[t];
            task.freeze_pending = false;
            let Some(since) = task.frozen_since.take() else {
                continue;
            };
            self.freeze_pauses.push(self.now.saturating_sub(since));
            if std::mem::take(&mut self.tasks[t].frozen_in_sleep) {
                self.tasks[t].rewait = true;
            }
            if !self.tasks[t].is_dead() {
                self.wake(t as u32);
            }
        }
    }

    /// An op on the heap by task `t` running `func`.
    fn data_op(&mut self, t: usize, func: FnId, op: Op) {
        let now = self.now;
        let heap = Arc::clone(&self.heap);
        let mut heap = heap.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let regs = &mut self.tasks[t].data;
        match op {
            Op::ObjAlloc => {
                let o = heap.alloc_object(func, t as u32, now);
                regs.objects.push_back(o);
                regs.current = Some(o);
            }
            Op::ObjOldest => regs.current = regs.objects.front().copied(),
            Op::ObjFree => {
                if let Some(o) = regs.current.take() {
                    regs.objects.retain(|x| *x != o);
                    heap.free_object(o, func, now);
                }
            }
            Op::BufAlloc => {
                // A buffer held before is dropped on the floor: leaked.
                regs.held = Some(heap.alloc_buffer(func, t as u32, regs.current, now));
            }
            Op::ShadowAttach(id) => {
                if let Some(o) = regs.current {
                    let data = regs.held.map_or(0, |b| b + 1);
                    if heap.shadow_alloc(o, id, data).is_ok() {
                        regs.held = None;
                    }
                }
            }
            Op::ShadowCount(id) => {
                if let Some(o) = regs.current {
                    heap.shadow_count(o, id);
                }
            }
            Op::ShadowFree(id) => {
                if let Some(o) = regs.current {
                    heap.shadow_free(o, id, func, now);
                }
            }
            _ => {}
        }
    }

    pub(super) fn after_self_walk(&mut self, cpu: usize, cost0: u64) {
        let cost = self.walker.inner().meter().ns.get() - cost0;
        if cost > 0 {
            self.stats.self_walks += 1;
            self.stats.self_walk_ns += cost;
            self.cpus[cpu].debt += cost;
        }
    }

    pub(super) fn note_switch(&mut self, t: usize, before: PatchState, point: SwitchPoint, oracle: &mut Oracle) {
        let after = self.tasks[t].patch.load(Ordering::Relaxed).state;
        if after != before {
            self.stats.switches[point as usize] += 1;
            oracle.on_state_change(t as u32, &self.tasks[t], before, after, point, &self.code, self.now);
        }
    }

    /// A call of `f` by task `t`. Through its hook if it has one: the task enters the redirect
    /// handler, whose steps ([`Self::handler_step`]) may be split by interrupts; otherwise a
    /// new frame at once, checked by the oracle.
    pub(super) fn call(&mut self, cpu: usize, t: usize, f: FnId, live: &Live<'_>, oracle: &mut Oracle) {
        if !self.is_loaded(self.code.get(f).object) {
            return;
        }
        if self.tasks[t].stack.len() >= MAX_STACK {
            self.stats.deep_calls_skipped += 1;
            return;
        }
        let slot = self.hooks[f.idx()].get();
        if slot == NO_HOOK {
            oracle.on_plain_call(t as u32, &self.tasks[t], f, &self.code, self.now);
            self.enter(t, f, oracle);
            return;
        }
        self.stats.hooked_calls += 1;
        let parent_ip = self.tasks[t].stack.last().map_or(CodeAddr(0), Frame::addr);
        let site = CodeAddr(self.code.get(f).range.start().get() + FENTRY_OFFSET);
        self.tasks[t].handler =
            Some(InHandler { func: f, slot, parent_ip, phase: HandlerPhase::Entered, site, queued: false });
        if self.cfg.handler_step_ns == 0 {
            while self.tasks[t].handler.is_some() && !oracle.stopped() {
                self.handler_step(cpu, t, live, oracle);
            }
        }
    }

    /// The redirect handler's next step: decide (the handler-entry switch, then the redirect
    /// on the task's word), store the new ip, return into the chosen function.
    pub(super) fn handler_step(&mut self, cpu: usize, t: usize, live: &Live<'_>, oracle: &mut Oracle) {
        let Some(mut h) = self.tasks[t].handler else {
            return;
        };
        let f = h.func;
        match h.phase {
            HandlerPhase::Entered => {
                let task = &self.tasks[t];
                let before = task.patch.load(Ordering::Relaxed).state;
                let cost0 = self.walker.inner().meter().ns.get();
                // The handler's own walk starts at its caller: the trampoline is not "away".
                self.walker.inner().set_self_walk(true);
                let r = live.on_function_entry(SlotId(h.slot), task, &self.walker, h.parent_ip);
                self.walker.inner().set_self_walk(false);
                self.after_self_walk(cpu, cost0);
                self.note_switch(t, before, SwitchPoint::HandlerEntry, oracle);
                let r = if self.cfg.broken_hook_on == Some(f) { Redirect::Original } else { r };
                let target = match r {
                    Redirect::Original => f,
                    Redirect::Variant(addr) => match self.code.at_entry(addr) {
                        Some(v) => v,
                        None => {
                            self.tasks[t].handler = None;
                            let msg = format!("redirected {} to {addr}, which is no function", self.code.get(f).name);
                            oracle.violate(Invariant::I1, t as u32, &self.tasks[t], msg, &self.code, self.now);
                            return;
                        }
                    },
                };
                h.phase = HandlerPhase::Decided(target);
            }
            HandlerPhase::Decided(target) => {
                h.phase = HandlerPhase::IpSet(target);
                h.site = self.code.get(target).range.start();
            }
            HandlerPhase::IpSet(target) => {
                self.tasks[t].handler = None;
                oracle.on_patched_call(t as u32, &self.tasks[t], f, target, &self.code, self.now);
                self.enter(t, target, oracle);
                return;
            }
        }
        self.tasks[t].handler = Some(h);
    }

    /// Task `t` starts running `target`: a new frame, unless the code is released.
    fn enter(&mut self, t: usize, target: FnId, oracle: &mut Oracle) {
        if self.code.is_released(target) {
            let msg = format!("called released code {}", self.code.get(target).name);
            oracle.violate(Invariant::I3, t as u32, &self.tasks[t], msg, &self.code, self.now);
            return;
        }
        let base = self.code.get(target).range.start().get();
        self.tasks[t].stack.push(Frame { func: target, pc: 0, base });
    }

    /// Task work a kick queued runs (at exit to user mode, or in kernel context: KVM guest
    /// entry, io_uring waits, io-wq workers): the module's callback.
    pub(super) fn run_task_work(&mut self, cpu: usize, t: usize, live: &Live<'_>, oracle: &mut Oracle) {
        self.tasks[t].task_work = false;
        let before = self.tasks[t].patch.load(Ordering::Relaxed).state;
        match self.cfg.backend.task_work {
            TaskWorkMode::SelfCheck => {
                let cost0 = self.walker.inner().meter().ns.get();
                live.task_work(&self.tasks[t], &self.walker);
                self.after_self_walk(cpu, cost0);
            }
            TaskWorkMode::Blind => {
                live.exit_to_user(&self.tasks[t].patch);
            }
            TaskWorkMode::Preemptible => {
                // Its switch, if any, comes events later (`continue_task_work`).
                self.start_preemptible_task_work(cpu, t, live, oracle);
                return;
            }
        }
        self.note_switch(t, before, SwitchPoint::TaskWork, oracle);
    }

    /// Blocks task `t` in `schedule()`; returns whether it blocked (a pending signal makes an
    /// interruptible sleep return at once).
    pub(super) fn block(&mut self, cpu: usize, t: usize, live: &Live<'_>, oracle: &mut Oracle) -> bool {
        let (kind, dur) = self.tasks[t].sleep_req;
        let task = &mut self.tasks[t];
        if std::mem::take(&mut task.freezing) {
            // TASK_FROZEN: no signal or timeout wakes it; only the thaw.
            task.frozen_since = Some(self.now);
        } else if kind == SleepKind::Interruptible && task.sig_pending && task.kind == TaskKind::User {
            task.unwind = true;
            return false;
        }
        task.run = RunState::Sleeping(kind);
        task.sleep_gen = task.sleep_gen.wrapping_add(1);
        let gen = task.sleep_gen;
        let rewait_until = self.tasks[t].rewait_until.take();
        self.tasks[t].wait_deadline = None;
        if let SleepFor::Between(lo, hi) = dur {
            let at = match rewait_until {
                Some(deadline) => deadline.max(self.now + 1),
                None => self.now + self.rng.range(lo, hi).max(1),
            };
            self.tasks[t].wait_deadline = Some(at);
            self.queue.push(at, Event::Wake { task: t as u32, gen });
        }
        self.cpus[cpu].current = None;
        self.switch_to_next(cpu, live, oracle);
        true
    }

    /// Exit to user mode: the switch point, and the (no-op) signal handler.
    pub(super) fn exit_to_user(&mut self, t: usize, live: &Live<'_>, oracle: &mut Oracle) {
        if !self.tasks[t].stack.is_empty() {
            let msg = "exit to user mode with kernel frames".to_string();
            oracle.violate(Invariant::I2, t as u32, &self.tasks[t], msg, &self.code, self.now);
            return;
        }
        let before = self.tasks[t].patch.load(Ordering::Relaxed).state;
        live.exit_to_user(&self.tasks[t].patch);
        self.note_switch(t, before, SwitchPoint::ExitToUser, oracle);
        self.tasks[t].sig_pending = false;
        self.tasks[t].task_work = false;
    }

    /// The syscall is over (or was interrupted by a signal): unwind every kernel frame, exit
    /// to user mode, start a stretch of user work.
    pub(super) fn return_to_user(&mut self, cpu: usize, t: usize, live: &Live<'_>, oracle: &mut Oracle) {
        // An interrupted syscall returns through every frame: none may be released code.
        while let Some(f) = self.tasks[t].stack.pop() {
            if self.code.is_released(f.func) {
                let msg = format!("unwound through released code {}", self.code.get(f.func).name);
                self.tasks[t].stack.push(f);
                oracle.violate(Invariant::I3, t as u32, &self.tasks[t], msg, &self.code, self.now);
                return;
            }
        }
        oracle.on_return(t as u32, 0);
        let task = &mut self.tasks[t];
        if task.syscall_start > 0 {
            self.syscall_times.push((task.syscall_start, self.now, task.added_ns));
            task.syscall_start = 0;
        }
        let task = &mut self.tasks[t];
        // Unwound by a fake signal (every signal of this machine is one): the kernel restarts
        // the syscall as soon as it is back in user mode — no handler runs, no user work.
        let interrupted = std::mem::take(&mut task.unwind);
        if interrupted {
            task.restart = task.syscall;
        }
        task.syscall = None;
        task.in_user = true;
        self.exit_to_user(t, live, oracle);
        let Program::User(p) = &self.tasks[t].program else {
            return;
        };
        let (lo, hi) = if self.tasks[t].restart.is_some() { RESTART_NS } else { p.user_ns };
        let ns = self.rng.range(lo, hi).max(1);
        self.tasks[t].work_left = ns;
        self.schedule_chunk(cpu, t);
    }

    /// User work is over: make the next syscall, or exit.
    pub(super) fn enter_kernel(&mut self, cpu: usize, t: usize, live: &Live<'_>, oracle: &mut Oracle) {
        let task = &mut self.tasks[t];
        task.in_user = false;
        let Program::User(p) = &task.program else {
            return;
        };
        if let Some(sys) = task.restart.take() {
            // restart_syscall(): the interrupted call again, not a new one of the program's.
            task.syscall = Some(sys);
            task.syscall_start = self.now.max(1);
            task.added_ns = 0;
            self.stats.syscalls += 1;
            self.stats.restarted_syscalls += 1;
            self.call(cpu, t, sys, live, oracle);
            return;
        }
        let exiting = task.exit_requested || p.exit_after.is_some_and(|n| task.syscalls >= n);
        if exiting {
            match p.exit_fn {
                Some(f) => {
                    self.call(cpu, t, f, live, oracle);
                    if self.tasks[t].stack.is_empty() && self.tasks[t].handler.is_none() {
                        self.die(cpu, t, live, oracle);
                    }
                }
                None => self.die(cpu, t, live, oracle),
            }
            return;
        }
        if p.syscalls.is_empty() {
            self.tasks[t].unwind = true;
            return;
        }
        let i = self.rng.below(p.syscalls.len());
        let sys = p.syscalls[i];
        task.syscalls += 1;
        task.syscall = Some(sys);
        task.syscall_start = self.now.max(1);
        task.added_ns = 0;
        self.stats.syscalls += 1;
        self.call(cpu, t, sys, live, oracle);
    }

    pub(super) fn die(&mut self, cpu: usize, t: usize, live: &Live<'_>, oracle: &mut Oracle) {
        let task = &mut self.tasks[t];
        task.run = RunState::Dead;
        task.stack.clear();
        task.flags |= TaskFlags::EXITING;
        self.stats.exits += 1;
        if self.cpus[cpu].current == Some(t as u32) {
            self.switch_to_next(cpu, live, oracle);
        }
    }

    pub(super) fn fork(&mut self, parent: usize, live: &Live<'_>, oracle: &mut Oracle) {
        let program = match &self.tasks[parent].program {
            Program::User(UserProgram { child: Some(child), .. }) => Program::User((**child).clone()),
            other => other.clone(),
        };
        let flags = self.tasks[parent].flags.difference(TaskFlags::EXITING);
        let idx = self.spawn(&TaskSpec { program, flags, cpu: None });
        let (p, c) = (&self.tasks[parent], &self.tasks[idx as usize]);
        live.fork(&p.patch, &c.patch);
        oracle.on_fork(parent as u32, idx);
        self.stats.forks += 1;
        self.tasks[idx as usize].run = RunState::Sleeping(SleepKind::Uninterruptible);
        self.wake(idx);
    }

    pub(super) fn deliver_signal(&mut self, t: u32, live: &Live<'_>, oracle: &mut Oracle) {
        let ti = t as usize;
        let Some(task) = self.tasks.get(ti) else {
            return;
        };
        if task.is_dead() {
            return;
        }
        self.stats.signals += 1;
        // Taking the signal or the wake-up costs the target's CPU.
        let c = task.cpu.0 as usize;
        if let Some(cpu) = self.cpus.get_mut(c) {
            cpu.debt += self.cfg.signal_ns;
            self.stats.signal_cpu_ns += self.cfg.signal_ns;
        }
        match task.kind {
            TaskKind::Idle(cpu) => {
                let c = cpu.0 as usize;
                if self.cpus[c].online && self.cpus[c].current.is_none() {
                    self.idle_loop(c, live, oracle);
                }
            }
            TaskKind::Kthread => {
                if task.run == RunState::Sleeping(SleepKind::Interruptible) {
                    // `wake_up_process()`: a kthread in `wait_event_interruptible()` or a
                    // `schedule_timeout()` loop re-checks and sleeps again where it was.
                    self.tasks[ti].rewait = true;
                    self.wake(t);
                }
            }
            TaskKind::User => {
                // A fake signal cannot be ignored or blocked (the kernel's `signal_wake_up`
                // sets TIF_SIGPENDING without a signal): `IGNORES_SIGNALS` has no effect here.
                // The kick also queues the module's task work.
                self.tasks[ti].sig_pending = true;
                self.tasks[ti].task_work = true;
                let task = &self.tasks[ti];
                if task.in_user && task.stack.is_empty() {
                    // An IPI: the task passes through exit to user mode.
                    self.exit_to_user(ti, live, oracle);
                } else if task.run == RunState::Sleeping(SleepKind::Interruptible) {
                    self.tasks[ti].unwind = true;
                    self.tasks[ti].interrupted_syscalls += 1;
                    self.stats.interrupted_syscalls += 1;
                    self.wake(t);
                }
            }
        }
    }
}
