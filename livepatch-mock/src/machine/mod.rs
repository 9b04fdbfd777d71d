//! The simulated machine: CPUs with run queues and time slices, tasks running programs over
//! a laid-out call graph with real stacks, sleeps, signals, fork and exit, and the switch
//! points a kernel calls into the core from (function entry, exit to user mode, the idle
//! loop, `cond_resched`, a kthread's safe point, fork).
//!
//! The machine is a discrete-event simulation: one [`event::Event`] at a time, in
//! time order, ties broken by insertion order; a run is a pure function of its seed.

pub mod code;
pub mod cpu;
pub mod event;
mod exec;
pub mod heap;
mod preempt;
pub mod rng;
mod sched;
pub mod task;

use crate::backend::{
    BackendConfig, Effects, MockBackend, MockScheduler, MockTracer, MockWalker, Observed, SchedCosts, NO_HOOK,
};
use crate::middleware::{FaultyScheduler, FaultyWalker, SignalFaults, WalkFaults};
use crate::oracle::Oracle;
use code::{CodeTable, FnId, SleepKind};
use cpu::Cpu;
use event::{Event, EventQueue};
use heap::Heap;
use livepatch_core::backend::{Parts, TaskFlags, TaskKind};
use livepatch_core::state::PatchState;
use livepatch_core::sync::Ordering;
use livepatch_core::{CpuId, Live, ObjectId, TaskId};
use rng::Rng;
use serde::Serialize;
use std::cell::Cell;
use std::sync::{Arc, Mutex, MutexGuard};
use task::{Program, RunState, SimTask};

/// Zero-time ops a task may run in one step before the machine lets time pass.
const OPS_BUDGET: u32 = 256;
/// Calls deeper than this are skipped (a runaway recursion guard).
const MAX_STACK: usize = 512;

/// Where a task changed universe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum SwitchPoint {
    /// The engine's sweep (or a forced or stop-the-world switch).
    Sweep,
    /// The engine's per-CPU pass.
    PerCpu,
    /// Exit to user mode.
    ExitToUser,
    /// The idle loop.
    Idle,
    /// The function-entry hook.
    HandlerEntry,
    /// `cond_resched`.
    SelfCheck,
    /// A kthread's safe point.
    SafePoint,
    /// Task work a kick queued (the module's way to exit to user mode).
    TaskWork,
}

impl SwitchPoint {
    /// Every switch point, in counter order.
    pub const ALL: [SwitchPoint; 8] = [
        SwitchPoint::Sweep,
        SwitchPoint::PerCpu,
        SwitchPoint::ExitToUser,
        SwitchPoint::Idle,
        SwitchPoint::HandlerEntry,
        SwitchPoint::SelfCheck,
        SwitchPoint::SafePoint,
        SwitchPoint::TaskWork,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            SwitchPoint::Sweep => "sweep",
            SwitchPoint::PerCpu => "per-cpu",
            SwitchPoint::ExitToUser => "exit-to-user",
            SwitchPoint::Idle => "idle",
            SwitchPoint::HandlerEntry => "handler-entry",
            SwitchPoint::SelfCheck => "self-check",
            SwitchPoint::SafePoint => "safe-point",
            SwitchPoint::TaskWork => "task-work",
        }
    }
}

/// Timing and fault parameters of a machine.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// Number of CPUs.
    pub cpus: u32,
    /// Time slice.
    pub slice_ns: u64,
    /// Timer tick (a user-mode task passes through exit to user mode on each).
    pub tick_ns: u64,
    /// Context switch cost.
    pub ctx_switch_ns: u64,
    /// Cost of a stack walk, plus per frame.
    pub walk_ns: u64,
    /// Cost per frame walked.
    pub frame_ns: u64,
    /// Cost per task visited by a task-list walk.
    pub visit_ns: u64,
    /// A grace period.
    pub grace_ns: u64,
    /// Stopping one CPU.
    pub stop_cpu_ns: u64,
    /// The seed.
    pub seed: u64,
    /// Walk faults.
    pub walk_faults: WalkFaults,
    /// Signal faults.
    pub signal_faults: SignalFaults,
    /// Hook installation fails on this function.
    pub fail_hook_on: Option<FnId>,
    /// Hook removal fails on this function (`Tracer::remove` returns
    /// [`ErrorKind::Hook`](livepatch_core::backend::ErrorKind::Hook)): the hook stays
    /// installed, and the core keeps the function's slot.
    pub fail_unhook_on: Option<FnId>,
    /// A *broken* hook on this function: it ignores the redirect and always runs the
    /// original. Only for testing that the oracle catches it.
    pub broken_hook_on: Option<FnId>,
    /// Slots of the shadow-variable table.
    pub shadow_slots: usize,
    /// The backend's choices (sound by default).
    pub backend: BackendConfig,
    /// Adversarial scheduling: the engine's kworker is preempted between an unpinned check
    /// and its write once in this many checks. 0: as often as a tick or a wake-up on its CPU
    /// lands in the check (wake-up preemption, at the machine's own wake-up rate).
    pub engine_preempt_one_in: u32,
    /// Each of the redirect handler's three steps (trampoline entry and decision, storing the
    /// new ip, the trampoline's return); an interrupt can land between them. 0: atomic.
    pub handler_step_ns: u64,
    /// An IPI, on the sender and on the target.
    pub ipi_ns: u64,
    /// Sending a fake signal or a wake-up (the engine's CPU).
    pub kick_ns: u64,
    /// Taking a fake signal or a wake-up (the target's CPU).
    pub signal_ns: u64,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            cpus: 4,
            slice_ns: 3_000_000,
            tick_ns: 4_000_000,
            ctx_switch_ns: 2_000,
            walk_ns: 300,
            frame_ns: 25,
            visit_ns: 40,
            grace_ns: 2_000_000,
            stop_cpu_ns: 5_000,
            seed: 1,
            walk_faults: WalkFaults::default(),
            signal_faults: SignalFaults::default(),
            fail_hook_on: None,
            fail_unhook_on: None,
            broken_hook_on: None,
            shadow_slots: heap::DEFAULT_SHADOW_SLOTS,
            backend: BackendConfig::default(),
            engine_preempt_one_in: 0,
            handler_step_ns: 20,
            ipi_ns: 1_500,
            kick_ns: 500,
            signal_ns: 1_000,
        }
    }
}

/// A task to create at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// What it runs.
    pub program: Program,
    /// Its flags (`SELF_CHECKS`, `FREEZABLE`, `IGNORES_SIGNALS`).
    pub flags: TaskFlags,
    /// Its CPU (default: round robin).
    pub cpu: Option<u32>,
}

/// Counters of the machine.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MachineStats {
    /// Events handled.
    pub events: u64,
    /// Ops executed.
    pub ops: u64,
    /// Syscalls made.
    pub syscalls: u64,
    /// Calls that went through a hook.
    pub hooked_calls: u64,
    /// Fake signals / wake-ups delivered.
    pub signals: u64,
    /// Context switches.
    pub context_switches: u64,
    /// Wake-ups (a sleeping task made runnable).
    pub wakeups: u64,
    /// Tasks forked.
    pub forks: u64,
    /// Tasks that died.
    pub exits: u64,
    /// Universe switches per switch point (see [`SwitchPoint::ALL`]).
    pub switches: [u64; 8],
    /// Stack walks the tasks did on themselves (handler entry, self-check).
    pub self_walks: u64,
    /// Calls skipped by the recursion guard.
    pub deep_calls_skipped: u64,
    /// CPU time the engine's own work used (its kworker: sweeps, walks, kicks sent).
    pub engine_cpu_ns: u64,
    /// CPU time the per-CPU pass used on the CPUs it interrupted (IPIs and walks).
    pub ipi_cpu_ns: u64,
    /// CPU time tasks spent walking their own stacks (handler entry, self-check, task work).
    pub self_walk_ns: u64,
    /// CPU time spent taking fake signals and wake-ups.
    pub signal_cpu_ns: u64,
    /// IPIs the per-CPU pass sent.
    pub ipis: u64,
    /// Syscalls a fake signal interrupted (an interruptible sleep unwound to user mode).
    pub interrupted_syscalls: u64,
    /// Interrupted syscalls restarted from user mode.
    pub restarted_syscalls: u64,
    /// Switches by the sweep or the per-CPU pass whose write landed after the check
    /// (unpinned backends only).
    pub late_switches: u64,
    /// Hooked calls an interrupt found inside the redirect handler.
    pub interrupted_handlers: u64,
    /// Tasks the engine switched while they were inside a redirect handler (an unsound
    /// walk), and of those, after the handler had read the word.
    pub switched_in_handler: u64,
    /// See [`Self::switched_in_handler`].
    pub switched_after_decision: u64,
    /// Times a task-work callback was preempted in the middle of its check
    /// ([`TaskWorkMode::Preemptible`](crate::backend::TaskWorkMode::Preemptible)).
    pub task_work_preemptions: u64,
    /// Of those checks, the ones whose switch failed: the word changed after the callback
    /// read it.
    pub task_work_raced: u64,
    /// Hook removals that failed by [`MachineConfig::fail_unhook_on`] (the hook stayed).
    pub failed_unhooks: u64,
}

/// The machine.
#[derive(Debug)]
pub struct Machine {
    pub(crate) cfg: MachineConfig,
    pub(crate) code: CodeTable,
    pub(crate) tasks: Vec<SimTask>,
    pub(crate) cpus: Vec<Cpu>,
    pub(crate) hooks: Vec<Cell<u32>>,
    pub(crate) loaded: Vec<ObjectId>,
    pub(crate) walker: FaultyWalker<MockWalker>,
    pub(crate) queue: EventQueue,
    pub(crate) rng: Rng,
    pub(crate) now: u64,
    pub(crate) stopped_until: u64,
    pub(crate) stats: MachineStats,
    pub(crate) kick_counter: Cell<u64>,
    pub(crate) kicks_lost: Cell<u64>,
    pub(crate) max_pause_ns: u64,
    /// Objects, buffers and shadow variables; shared with the callbacks of the run's patches.
    pub(crate) heap: Arc<Mutex<Heap>>,
    /// Writes of unpinned checks still to land.
    pub(crate) late: Vec<Option<Observed>>,
    /// Every completed syscall: (start, end, CPU time taken from under it).
    pub(crate) syscall_times: Vec<(u64, u64, u64)>,
    /// Kicks (fake signals, wake-ups) sent to each task.
    pub(crate) kicks_to: Vec<u32>,
    /// How long each frozen task stayed frozen (the freezer model), once thawed.
    pub(crate) freeze_pauses: Vec<u64>,
    next_cpu: u32,
}

/// What one engine call cost and asked for.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallReport {
    /// When the call returned, on the engine's clock.
    pub end_ns: u64,
    /// The retry it scheduled (absolute time).
    pub retry_at: Option<u64>,
    /// Kicks it sent.
    pub kicks: u32,
    /// Grace periods.
    pub syncs: u32,
    /// The longest stop-the-world pause.
    pub pause_ns: u64,
}

impl Machine {
    /// A machine with `cfg`, `code`, one idle task per CPU (task ids `0..cpus`) and `tasks`.
    pub fn new(cfg: MachineConfig, code: CodeTable, tasks: &[TaskSpec], loaded: &[ObjectId]) -> Self {
        let ncpu = cfg.cpus.max(1);
        let shadow_slots = cfg.shadow_slots;
        let hooks = (0..code.len()).map(|_| Cell::new(NO_HOOK)).collect();
        let sites = MockWalker::sites_of(&code);
        let inner = MockWalker::with_sites(cfg.walk_ns, cfg.frame_ns, cfg.backend.redirect_check, sites)
            .with_mode(cfg.backend.walk);
        let walker = FaultyWalker::new(inner, cfg.walk_faults.clone());
        let mut m = Self {
            rng: Rng::new(cfg.seed),
            cfg,
            code,
            tasks: Vec::with_capacity(tasks.len() + ncpu as usize),
            cpus: Vec::new(),
            hooks,
            loaded: loaded.to_vec(),
            walker,
            queue: EventQueue::default(),
            now: 0,
            stopped_until: 0,
            stats: MachineStats::default(),
            kick_counter: Cell::new(0),
            kicks_lost: Cell::new(0),
            max_pause_ns: 0,
            heap: Arc::new(Mutex::new(Heap::new(shadow_slots))),
            late: Vec::new(),
            syscall_times: Vec::new(),
            kicks_to: Vec::new(),
            freeze_pauses: Vec::new(),
            next_cpu: 0,
        };
        m.cfg.cpus = ncpu;
        for c in 0..ncpu {
            let id = TaskId(m.tasks.len() as u32);
            let mut idle = SimTask::new(id, TaskKind::Idle(CpuId(c)), TaskFlags::empty(), CpuId(c), Program::Idle);
            idle.run = RunState::Running;
            m.tasks.push(idle);
            m.cpus.push(Cpu::new(c));
        }
        for spec in tasks {
            m.spawn(spec);
        }
        m
    }

    fn spawn(&mut self, spec: &TaskSpec) -> u32 {
        let idx = self.tasks.len() as u32;
        let kind = match spec.program {
            Program::User(_) => TaskKind::User,
            _ => TaskKind::Kthread,
        };
        let cpu = spec.cpu.filter(|c| *c < self.cfg.cpus).unwrap_or_else(|| self.round_robin());
        let mut t = SimTask::new(
            TaskId(idx),
            kind,
            spec.flags.difference(TaskFlags::EXITING),
            CpuId(cpu),
            spec.program.clone(),
        );
        if kind == TaskKind::User {
            // Starts by returning to user mode (from exec / fork).
            t.unwind = true;
        }
        self.tasks.push(t);
        idx
    }

    fn round_robin(&mut self) -> u32 {
        let c = self.next_cpu % self.cfg.cpus;
        self.next_cpu = self.next_cpu.wrapping_add(1);
        c
    }

    /// Puts every created task on a run queue and starts the CPUs.
    pub fn boot(&mut self) {
        for i in self.cfg.cpus as usize..self.tasks.len() {
            self.tasks[i].run = RunState::Sleeping(SleepKind::Uninterruptible);
            self.wake(i as u32);
        }
    }

    /// The code.
    pub fn code(&self) -> &CodeTable {
        &self.code
    }

    /// The tasks (including dead ones), indexed by task id.
    pub fn tasks(&self) -> &[SimTask] {
        &self.tasks
    }

    /// The CPUs.
    pub fn cpus(&self) -> &[Cpu] {
        &self.cpus
    }

    /// The current simulated time.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Counters.
    pub fn stats(&self) -> &MachineStats {
        &self.stats
    }

    /// Stack walks done (engine and tasks).
    pub fn walks(&self) -> u64 {
        self.walker.inner().meter().walks.get()
    }

    /// The heap (objects, buffers, shadow variables), shared with the run's callbacks.
    pub fn heap(&self) -> Arc<Mutex<Heap>> {
        Arc::clone(&self.heap)
    }

    /// The heap, locked (a poisoned lock is taken over: the machine is single-threaded).
    pub(crate) fn heap_mut(&self) -> MutexGuard<'_, Heap> {
        self.heap.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long each task frozen by the freezer model stayed frozen: those thawed, then those
    /// still frozen (until now).
    pub fn freeze_pauses(&self) -> Vec<u64> {
        let mut v = self.freeze_pauses.clone();
        v.extend(self.tasks.iter().filter_map(|t| t.frozen_since).map(|s| self.now.saturating_sub(s)));
        v
    }

    /// Every completed syscall, as (start, end, CPU time the transitions took from under it)
    /// in simulated time.
    pub fn syscall_times(&self) -> &[(u64, u64, u64)] {
        &self.syscall_times
    }

    /// Kicks sent to each task (index = task id).
    pub fn kicks_to(&self) -> &[u32] {
        &self.kicks_to
    }

    /// Kicks lost by the signal middleware.
    pub fn kicks_lost(&self) -> u64 {
        self.kicks_lost.get()
    }

    /// Whether `object` is loaded.
    pub fn is_loaded(&self, object: ObjectId) -> bool {
        object == ObjectId::VMLINUX || self.loaded.contains(&object)
    }

    /// The slot of the hook installed on `func`, if any (whether or not its module is loaded).
    pub fn hook_on(&self, func: FnId) -> Option<u32> {
        self.hooks.get(func.idx()).map(Cell::get).filter(|s| *s != NO_HOOK)
    }

    /// Marks functions as released (their module freed) or present again.
    pub fn set_released(&mut self, func: FnId, released: bool) {
        if let Some(r) = self.code.released.get_mut(func.idx()) {
            *r = released;
        }
    }

    // ---------------------------------------------------------------------------------------
    // engine calls

    /// Runs `f` with the backend the engine uses (a view of the machine), then applies what
    /// the engine asked for: kicks, the next retry, stop-the-world pauses; hands the observed
    /// task-state changes to the oracle.
    pub fn engine_call<R>(&mut self, oracle: &mut Oracle, f: impl FnOnce(&MockBackend<'_>) -> R) -> (R, CallReport) {
        let fx = Effects::default();
        let meter = self.walker.inner().meter();
        let meter_start = meter.ns.get();
        let entry_of = |f: Option<FnId>| f.map(|id| self.code.get(id).range.start());
        let (fail_on, fail_remove_on) = (entry_of(self.cfg.fail_hook_on), entry_of(self.cfg.fail_unhook_on));
        let costs = SchedCosts {
            visit_ns: self.cfg.visit_ns,
            grace_ns: self.cfg.grace_ns,
            stop_cpu_ns: self.cfg.stop_cpu_ns,
            ipi_ns: self.cfg.ipi_ns,
            kick_ns: self.cfg.kick_ns,
        };
        let sched = MockScheduler {
            tasks: &self.tasks,
            cpus: &self.cpus,
            meter,
            fx: &fx,
            start_ns: self.now,
            meter_start,
            costs,
            config: self.cfg.backend,
            unpinned: Cell::new(false),
        };
        let sched = FaultyScheduler::new(sched, &self.cfg.signal_faults, &self.kick_counter, &self.kicks_lost);
        let tracer = MockTracer {
            code: &self.code,
            hooks: &self.hooks,
            loaded: &self.loaded,
            fail_on,
            fail_remove_on,
            failed_removals: Cell::new(0),
        };
        let backend = Parts { scheduler: &sched, walker: &self.walker, tracer: &tracer };
        let r = f(&backend);
        self.stats.failed_unhooks += tracer.failed_removals.get();
        let end_ns = livepatch_core::backend::Scheduler::now_ns(&sched);
        let engine_cpu = sched.inner().cpu_ns();
        // The engine's view ended; apply its effects.
        // Its own work ran on a workqueue kthread: charged to the least loaded CPU.
        self.stats.engine_cpu_ns += engine_cpu;
        let wq = self.least_loaded_cpu();
        self.cpus[wq].debt += engine_cpu;
        for (c, ns) in fx.cpu_ns.borrow().iter().enumerate() {
            self.cpus[c].debt += ns;
            self.stats.ipi_cpu_ns += ns;
        }
        self.stats.ipis += u64::from(fx.ipis.get());
        if fx.ipis.get() > 0 {
            let in_handler = self
                .cpus
                .iter()
                .filter(|c| c.online && c.current.is_some_and(|t| self.tasks[t as usize].handler.is_some()))
                .count();
            self.stats.interrupted_handlers += in_handler as u64;
        }
        let observed = std::mem::take(&mut *fx.observed.borrow_mut());
        for o in observed {
            let task = &self.tasks[o.task as usize];
            let word = task.patch.load(Ordering::Relaxed);
            if o.unpinned && o.after != PatchState::Idle && word.state == o.after && !task.is_dead() {
                // Not pinned: the check read the stack now, but the write lands only after the
                // walk — and if the engine's kworker is preempted in between (as likely as a
                // tick landing in the check), a slice later. Undo it until then; the task may
                // run, and call what it is being switched away from, meanwhile.
                let preempted = match self.cfg.engine_preempt_one_in {
                    0 => self.kworker_preempted_in(o.check_ns),
                    n => self.rng.below(n as usize) == 0,
                };
                let delay = o.check_ns.max(1) + if preempted { self.rng.range(1, self.cfg.slice_ns.max(1)) } else { 0 };
                let task = &self.tasks[o.task as usize];
                task.patch.restore(o.before);
                let id = self.late.len() as u32;
                self.late.push(Some(o));
                self.queue.push(self.now + delay, Event::LateSwitch { id });
                continue;
            }
            self.observe(o, oracle);
        }
        let kicks = fx.kicks.borrow();
        for &(task, delay) in kicks.iter() {
            self.queue.push(end_ns + delay, Event::Signal { task });
            if self.kicks_to.len() <= task as usize {
                self.kicks_to.resize(self.tasks.len().max(task as usize + 1), 0);
            }
            self.kicks_to[task as usize] += 1;
        }
        drop(kicks);
        for t in std::mem::take(&mut *fx.freezes.borrow_mut()) {
            self.freeze_request(t);
        }
        if fx.thaw.get() {
            self.thaw_all();
        }
        let kicks = fx.kicks.borrow();
        let mut pause_ns = 0;
        for &(begin, end) in fx.stops.borrow().iter() {
            pause_ns = pause_ns.max(end - begin);
            self.stopped_until = self.stopped_until.max(self.now + (end - begin));
            for t in self.tasks.iter_mut().filter(|t| t.syscall_start > 0) {
                t.added_ns += end - begin;
            }
        }
        self.max_pause_ns = self.max_pause_ns.max(pause_ns);
        let report = CallReport {
            end_ns,
            retry_at: fx.retry_at.get(),
            kicks: kicks.len() as u32,
            syncs: fx.syncs.get(),
            pause_ns,
        };
        (r, report)
    }

    /// Whether the engine's kworker is preempted inside an unpinned check of `check_ns`:
    /// a tick (one per time slice) or a wake-up on its CPU (the preemptible kernel's wake-up
    /// preemption; the machine's own rate of wake-ups per CPU so far) lands in it.
    fn kworker_preempted_in(&mut self, check_ns: u64) -> bool {
        let cpus = self.cpus.iter().filter(|c| c.online).count().max(1) as f64;
        let wakeups_per_ns = self.stats.wakeups as f64 / (self.now.max(1) as f64 * cpus);
        let p = check_ns as f64 * (1.0 / self.cfg.slice_ns.max(1) as f64 + wakeups_per_ns);
        const SCALE: usize = 1 << 24;
        (self.rng.below(SCALE) as f64) < p.min(1.0) * SCALE as f64
    }

    fn observe(&mut self, o: Observed, oracle: &mut Oracle) {
        let point = if o.per_cpu { SwitchPoint::PerCpu } else { SwitchPoint::Sweep };
        let task = &self.tasks[o.task as usize];
        if let Some(h) = task.handler {
            if o.before.state != PatchState::Idle && o.after != PatchState::Idle {
                self.stats.switched_in_handler += 1;
                if let crate::machine::task::HandlerPhase::Decided(_) = h.phase {
                    self.stats.switched_after_decision += 1;
                }
            }
        }
        if o.before.state != PatchState::Idle && o.after != PatchState::Idle {
            self.stats.switches[point as usize] += 1;
        }
        oracle.on_state_change(o.task, task, o.before.state, o.after, point, &self.code, self.now);
    }

    /// The write of an unpinned check lands: the core's compare-and-swap from the word the
    /// check saw (it fails if the task switched itself or was retargeted meanwhile).
    fn late_switch(&mut self, id: u32, oracle: &mut Oracle) {
        let Some(Observed { task: t, before: seen, per_cpu, .. }) =
            self.late.get_mut(id as usize).and_then(Option::take)
        else {
            return;
        };
        let task = &self.tasks[t as usize];
        if task.is_dead() {
            return;
        }
        if let Some(after) = task.patch.try_switch(seen) {
            self.stats.late_switches += 1;
            let o = Observed { task: t, before: seen, after, per_cpu, unpinned: true, check_ns: 0 };
            self.observe(o, oracle);
        }
    }

    // ---------------------------------------------------------------------------------------
    // events

    /// Handles a machine event (`Step`, `Wake`, `Signal`); others are the runner's.
    pub fn handle(&mut self, time: u64, event: Event, live: &Live<'_>, oracle: &mut Oracle) {
        if time < self.stopped_until
            && matches!(
                event,
                Event::Step { .. } | Event::Wake { .. } | Event::Signal { .. } | Event::LateSwitch { .. }
            )
        {
            // Every CPU is stopped: the event happens when they resume.
            self.queue.push(self.stopped_until, event);
            return;
        }
        self.now = time;
        self.stats.events += 1;
        match event {
            Event::Step { cpu, gen } => {
                let c = cpu as usize;
                if c < self.cpus.len() && self.cpus[c].gen == gen && self.cpus[c].online {
                    self.on_step(c, live, oracle);
                }
            }
            Event::Wake { task, gen } => {
                let t = &self.tasks[task as usize];
                if t.sleep_gen == gen && matches!(t.run, RunState::Sleeping(_)) {
                    self.wake(task);
                }
            }
            Event::Signal { task } => self.deliver_signal(task, live, oracle),
            Event::LateSwitch { id } => self.late_switch(id, oracle),
            _ => {}
        }
    }

    // ---------------------------------------------------------------------------------------
    // script actions

    /// Starts every CPU (at the current time).
    pub fn start_cpus(&mut self, live: &Live<'_>, oracle: &mut Oracle) {
        for c in 0..self.cpus.len() {
            if self.cpus[c].current.is_none() {
                if self.cpus[c].rq.is_empty() {
                    self.idle_loop(c, live, oracle);
                } else {
                    self.dispatch(c);
                }
            }
        }
    }

    /// Task `t` forks (as if it called `fork()` now); returns the child's index.
    pub fn fork_task(&mut self, t: u32, live: &Live<'_>, oracle: &mut Oracle) -> Option<u32> {
        let task = self.tasks.get(t as usize)?;
        if task.is_dead() || task.kind != TaskKind::User {
            return None;
        }
        self.fork(t as usize, live, oracle);
        Some(self.tasks.len() as u32 - 1)
    }

    /// Wakes task `t` if it sleeps (what it waited for happened); returns whether it slept.
    pub fn wake_task(&mut self, t: u32) -> bool {
        match self.tasks.get(t as usize) {
            Some(task) if matches!(task.run, RunState::Sleeping(_)) => {
                self.wake(t);
                true
            }
            _ => false,
        }
    }

    /// Asks user task `t` to exit at its next syscall, or kthread `t` to stop at the top of
    /// its loop (`kthread_stop`).
    pub fn kill_task(&mut self, t: u32) -> bool {
        match self.tasks.get_mut(t as usize) {
            Some(task) if !task.is_dead() && matches!(task.kind, TaskKind::User | TaskKind::Kthread) => {
                task.exit_requested = true;
                true
            }
            _ => false,
        }
    }

    /// Takes `cpu` offline, migrating its tasks; refused for the last online CPU.
    pub fn cpu_offline(&mut self, cpu: u32, live: &Live<'_>, oracle: &mut Oracle) -> bool {
        let c = cpu as usize;
        let online = self.cpus.iter().filter(|c| c.online).count();
        if c >= self.cpus.len() || !self.cpus[c].online || online <= 1 {
            return false;
        }
        let _ = (live, &oracle);
        let cur = self.cpus[c].current.take();
        self.cpus[c].online = false;
        self.cpus[c].gen = self.cpus[c].gen.wrapping_add(1);
        let idle = self.cpus[c].idle_task as usize;
        self.tasks[idle].run = RunState::Runnable;
        let mut moved: Vec<u32> = self.cpus[c].rq.drain(..).collect();
        if let Some(t) = cur {
            moved.insert(0, t);
        }
        for t in moved {
            self.tasks[t as usize].run = RunState::Sleeping(SleepKind::Uninterruptible);
            self.wake(t);
        }
        true
    }

    /// Brings `cpu` back online.
    pub fn cpu_online(&mut self, cpu: u32, live: &Live<'_>, oracle: &mut Oracle) -> bool {
        let c = cpu as usize;
        if c >= self.cpus.len() || self.cpus[c].online {
            return false;
        }
        self.cpus[c].online = true;
        self.switch_to_next(c, live, oracle);
        true
    }

    /// Loads or unloads a module's code.
    pub fn set_loaded(&mut self, object: ObjectId, loaded: bool) {
        self.loaded.retain(|o| *o != object);
        if loaded {
            self.loaded.push(object);
        }
    }

    /// Tasks (alive, including idle and exiting ones) whose universe differs from `target`.
    pub fn count_not_in(&self, target: PatchState) -> u32 {
        self.tasks.iter().filter(|t| !t.is_dead() && t.patch.state() != target).count() as u32
    }
}
