//! The machine's implementation of the core's backend traits.
//!
//! The engine runs beside the machine and calls back into it through these types while the
//! machine is borrowed immutably; every side effect that would mutate the machine (a fake
//! signal, the next retry, a stop-the-world pause) is recorded in [`Effects`] and applied after
//! the engine call returns, as a kernel would defer it to an IPI or a work item.

use crate::machine::cpu::Cpu;
use crate::machine::task::{RunState, SimTask};
use livepatch_core::backend::{
    ErrorKind, Parts, Pinned, Scheduler, StackWalker, Task, TaskCursor, TaskKind, Tracer, WalkError,
};
use livepatch_core::state::{PatchState, TaskWord};
use livepatch_core::sync::Ordering;
use livepatch_core::{CodeAddr, CodeRange, CpuId, ObjectId, SlotId};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ops::ControlFlow;

use crate::machine::code::{CodeTable, Origin, SleepKind};
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

/// Bytes from a function's entry to the return address of its `call __fentry__` (the
/// trampoline's return site): never an op boundary, so no ordinary frame has it.
pub const FENTRY_OFFSET: usize = 4;

/// Where the ftrace trampoline's frame points (outside every function and patch region).
pub const TRAMPOLINE: CodeAddr = CodeAddr(0x7f00_0000);

/// How a walk treats the frames of a redirect in progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RedirectCheck {
    /// Sound: a frame at a hooked function's fentry return site or at a variant's entry
    /// means the task is inside the handler ([`ErrorKind::InRedirect`]); no verdict.
    #[default]
    Sound,
    /// *Unsound* (the kernel module's bug before the fix): those frames are ordinary frames,
    /// so a task interrupted after its handler read the word may be switched under it.
    Naive,
}

/// How a walker hands the frames to the core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WalkMode {
    /// One address at a time (`StackWalker::walk`, and the provided `walk_runs` on top of it):
    /// what the Linux module and livepatch-user do.
    #[default]
    OneByOne,
    /// The saved stack at once (`StackWalker::walk_runs` with one run, as a walker over
    /// `stack_trace_save_tsk_reliable`'s buffer would): the core's stack check then takes its
    /// batched path, eight frames per compare, with at most four ranges switched away from.
    Saved,
}

/// Walks a simulated task's real stack of frames, innermost first, charging simulated time
/// per walk and per frame.
///
/// A task inside a redirect handler (interrupted by the per-CPU pass's IPI, or parked by a
/// CPU going offline) has two more frames on top: the trampoline and the hooked function's
/// fentry return site (the variant's entry once the new ip is stored). The task's own walk
/// from inside its handler (the handler-entry switch) starts at the handler's caller, so it
/// does not see them.
#[derive(Debug)]
pub struct MockWalker {
    meter: Meter,
    walk_ns: u64,
    frame_ns: u64,
    check: RedirectCheck,
    mode: WalkMode,
    /// Every fentry return site and every variant entry.
    sites: HashSet<usize>,
    self_walk: Cell<bool>,
}

impl MockWalker {
    /// A walker charging `walk_ns` per walk and `frame_ns` per frame, with no redirect sites.
    pub fn new(walk_ns: u64, frame_ns: u64) -> Self {
        Self::with_sites(walk_ns, frame_ns, RedirectCheck::Sound, HashSet::new())
    }

    /// A walker that knows the redirect sites of the machine's code.
    pub fn with_sites(walk_ns: u64, frame_ns: u64, check: RedirectCheck, sites: HashSet<usize>) -> Self {
        Self {
            meter: Meter::default(),
            walk_ns,
            frame_ns,
            check,
            mode: WalkMode::OneByOne,
            sites,
            self_walk: Cell::new(false),
        }
    }

    /// The same walker handing frames as `mode` says.
    pub fn with_mode(self, mode: WalkMode) -> Self {
        Self { mode, ..self }
    }

    /// The redirect sites of `code`: every function's fentry return site, every variant entry.
    pub fn sites_of(code: &CodeTable) -> HashSet<usize> {
        let mut sites = HashSet::new();
        for (_, f) in code.iter() {
            sites.insert(f.range.start().get() + FENTRY_OFFSET);
            if matches!(f.origin, Origin::Variant { .. }) {
                sites.insert(f.range.start().get());
            }
        }
        sites
    }

    /// Its meter.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// Marks the next walks as the current task's own, from inside its handler.
    pub(crate) fn set_self_walk(&self, on: bool) {
        self.self_walk.set(on);
    }

    /// The frames a walk of `task` sees, innermost first: the trampoline and the redirect site
    /// when the task is inside a redirect handler (unless this is its own walk from inside
    /// it), then its stack. More than `max_depth` of them: `TooDeep`, charged as a walk of
    /// `max_depth` frames.
    fn frames<'t>(
        &self,
        task: &'t SimTask,
        max_depth: usize,
    ) -> Result<impl Iterator<Item = CodeAddr> + 't, WalkError<ErrorKind>> {
        let stack = task.stack();
        let top = task.handler.filter(|_| !self.self_walk.get()).map(|h| [TRAMPOLINE, h.site]);
        if stack.len() + top.map_or(0, |t| t.len()) > max_depth {
            self.charge(max_depth);
            return Err(WalkError::TooDeep);
        }
        Ok(top.into_iter().flatten().chain(stack.iter().rev().map(|f| f.addr())))
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
    type Error = ErrorKind;

    fn walk<F>(&self, task: &SimTask, max_depth: usize, mut frame: F) -> Result<usize, WalkError<ErrorKind>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        let mut n = 0;
        for addr in self.frames(task, max_depth)? {
            n += 1;
            if self.check == RedirectCheck::Sound && self.sites.contains(&addr.get()) {
                self.charge(n);
                return Err(WalkError::Backend(ErrorKind::InRedirect));
            }
            if frame(addr).is_break() {
                break;
            }
        }
        self.charge(n);
        Ok(n)
    }

    /// In [`WalkMode::Saved`], the frames up to the first redirect site (the whole stack when
    /// there is none) as one run; the same frames, the same error and the same charge as
    /// [`walk`](Self::walk) gives one at a time, except that a run the core stops inside is
    /// charged whole (the buffer was saved before the core looked at it).
    fn walk_runs<F>(&self, task: &SimTask, max_depth: usize, mut frames: F) -> Result<usize, WalkError<ErrorKind>>
    where
        F: FnMut(&[CodeAddr]) -> ControlFlow<()>,
    {
        if self.mode == WalkMode::OneByOne {
            return self.walk(task, max_depth, |addr| frames(core::slice::from_ref(&addr)));
        }
        let saved: Vec<CodeAddr> = self.frames(task, max_depth)?.collect();
        let site = match self.check {
            RedirectCheck::Sound => saved.iter().position(|a| self.sites.contains(&a.get())),
            RedirectCheck::Naive => None,
        };
        let run = &saved[..site.unwrap_or(saved.len())];
        if !run.is_empty() && frames(run).is_break() {
            self.charge(run.len());
            return Ok(run.len());
        }
        if let Some(i) = site {
            self.charge(i + 1);
            return Err(WalkError::Backend(ErrorKind::InRedirect));
        }
        self.charge(saved.len());
        Ok(saved.len())
    }
}

/// Which tasks the per-CPU pass checks from its IPI, and whether it can pin them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PerCpuScope {
    /// The CPU's current task only — the task the IPI interrupted (or its idle task): what a
    /// module can check soundly, with a walk that starts at the interrupted context.
    #[default]
    Current,
    /// The current task and every other task whose CPU is this one, each pinned
    /// (`task_call_func`: the run-queue and `pi_lock` held), as the kernel itself could — the
    /// 2014 step 2. A module cannot take those locks: without them a queued task can be
    /// migrated, and a sleeping one woken, onto another CPU while this one sits in the IPI
    /// (the same race as an unpinned sweep, see [`BackendConfig::pin`]).
    Pinned,
}

/// What the task-work callback a kick queues does where task work runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TaskWorkMode {
    /// Sound: a reliable walk of its own stack, switch only if nothing being switched away
    /// from is on it ([`livepatch_core::Live::task_work`]).
    #[default]
    SelfCheck,
    /// *Unsound* (the module's bug before the fix): switch as if at exit to user mode — wrong
    /// where task work runs in kernel context (KVM guest entry, io_uring waits, io-wq).
    Blind,
    /// *Unsound as a backend* (the Linux module's callback runs preemptible, outside any
    /// section `Scheduler::synchronize` waits for): the self-check, preempted between every
    /// two frames of its walk and between the walk and its switch. Each frame is checked
    /// against the transition as it is when the task gets to it; the switch is the
    /// compare-and-swap from the word read before the walk. Only the core's word can then
    /// refuse a switch decided across a reversal or a completion (its generation, `5e81f2e`).
    Preemptible,
}

/// The backend's choices: the sound ones by default; each unsound variant exists so the tests
/// can show that the oracle catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendConfig {
    /// How walks treat a redirect in progress.
    pub redirect_check: RedirectCheck,
    /// The per-CPU pass's tasks.
    pub per_cpu: PerCpuScope,
    /// Whether the sweep pins a task while it checks and switches it (`task_call_func`).
    /// Without, the write lands after the walk — later still if the engine's kworker is
    /// preempted in between — and the task may have run meanwhile.
    pub pin: bool,
    /// The task-work callback.
    pub task_work: TaskWorkMode,
    /// How the walker hands frames to the core (both are sound).
    pub walk: WalkMode,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            redirect_check: RedirectCheck::Sound,
            per_cpu: PerCpuScope::Current,
            pin: true,
            task_work: TaskWorkMode::SelfCheck,
            walk: WalkMode::OneByOne,
        }
    }
}

impl BackendConfig {
    /// Whether every choice is the sound one.
    pub fn is_sound(&self) -> bool {
        self.redirect_check == RedirectCheck::Sound && self.pin && self.task_work == TaskWorkMode::SelfCheck
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
    /// Checked without the task pinned: the write may land after the task ran again.
    pub unpinned: bool,
    /// Simulated nanoseconds the check took (the window between the check and the write).
    pub check_ns: u64,
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
    /// Simulated CPU time the engine spent outside stack walks (task-list walks, kicks, IPIs
    /// sent, stopping CPUs).
    pub extra_ns: Cell<u64>,
    /// Simulated time the engine waited without using a CPU (grace periods).
    pub wait_ns: Cell<u64>,
    /// Walk time spent on other CPUs (the per-CPU pass), not on the engine's.
    pub moved_ns: Cell<u64>,
    /// CPU time charged to each CPU by the per-CPU pass (IPI entry/exit and walks).
    pub cpu_ns: RefCell<Vec<u64>>,
    /// IPIs sent.
    pub ipis: Cell<u32>,
    /// Tasks asked to freeze (the freezer model).
    pub freezes: RefCell<Vec<u32>>,
    /// The engine thawed every frozen task.
    pub thaw: Cell<bool>,
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
    /// An IPI: sending it (the engine's CPU) and taking it (the target's).
    pub ipi_ns: u64,
    /// Sending a fake signal or a wake-up.
    pub kick_ns: u64,
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
    pub(crate) config: BackendConfig,
    /// Set by an unpinned check inside the current visit.
    pub(crate) unpinned: Cell<bool>,
}

impl MockScheduler<'_> {
    fn charge(&self, ns: u64) {
        self.fx.extra_ns.set(self.fx.extra_ns.get() + ns);
    }

    /// Visits task `i`; `on_cpu` is the CPU whose IPI runs the visit (the per-CPU pass).
    fn visit<F: FnMut(&SimTask)>(&self, i: usize, on_cpu: Option<usize>, f: &mut F) {
        let task = &self.tasks[i];
        let before = task.patch.load(Ordering::Relaxed);
        let walked0 = self.meter.ns.get();
        self.unpinned.set(false);
        match on_cpu {
            None => self.charge(self.costs.visit_ns),
            Some(_) => task.interrupted.set(task.run == RunState::Running),
        }
        f(task);
        task.interrupted.set(false);
        let check_ns = self.meter.ns.get() - walked0;
        if let Some(c) = on_cpu {
            // The walk ran on that CPU, in its IPI, not on the engine's.
            self.fx.moved_ns.set(self.fx.moved_ns.get() + check_ns);
            self.fx.cpu_ns.borrow_mut()[c] += check_ns + self.costs.visit_ns;
        }
        let after = task.patch.load(Ordering::Relaxed).state;
        if after != before.state {
            let unpinned = self.unpinned.get();
            self.fx.observed.borrow_mut().push(Observed {
                task: i as u32,
                before,
                after,
                per_cpu: on_cpu.is_some(),
                unpinned,
                check_ns,
            });
        }
        self.unpinned.set(false);
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
                self.visit(i, None, &mut f);
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
        let c = cpu.0 as usize;
        let Some(state) = self.cpus.get(c) else {
            return;
        };
        // One IPI: sent by the engine's CPU, taken by this one.
        self.charge(self.costs.ipi_ns);
        self.fx.ipis.set(self.fx.ipis.get() + 1);
        {
            let mut per_cpu = self.fx.cpu_ns.borrow_mut();
            if per_cpu.len() < self.cpus.len() {
                per_cpu.resize(self.cpus.len(), 0);
            }
            per_cpu[c] += self.costs.ipi_ns;
        }
        // The interrupted task: the CPU's current one, or its idle task.
        let current = state.current.unwrap_or(state.idle_task) as usize;
        self.visit(current, Some(c), &mut f);
        if self.config.per_cpu == PerCpuScope::Current {
            return;
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if i != current && t.cpu == cpu && !t.is_dead() && !matches!(t.kind, TaskKind::Idle(_)) {
                self.visit(i, Some(c), &mut f);
            }
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
            return Pinned::Running;
        }
        if !self.config.pin {
            // Checked now, written after the walk: the task is not held meanwhile.
            self.unpinned.set(true);
        }
        Pinned::Checked(f(task))
    }

    fn kick(&self, task: &SimTask) {
        self.kick_after(task, 0);
    }

    fn freeze(&self, task: &SimTask) {
        if task.freeze_pending || task.freezing || task.frozen_since.is_some() {
            return;
        }
        // The freezer's request: a fake signal or a wake-up, sent like a kick.
        self.charge(self.costs.kick_ns);
        self.fx.freezes.borrow_mut().push(task.id().0);
    }

    fn thaw_all(&self) {
        self.fx.thaw.set(true);
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
        self.fx.wait_ns.set(self.fx.wait_ns.get() + self.costs.grace_ns);
    }

    fn now_ns(&self) -> u64 {
        self.start_ns + self.cpu_ns() + self.fx.wait_ns.get()
    }
}

impl MockScheduler<'_> {
    /// CPU time the engine itself used so far in this call (on its own CPU).
    pub fn cpu_ns(&self) -> u64 {
        (self.meter.ns.get() - self.meter_start) + self.fx.extra_ns.get() - self.fx.moved_ns.get()
    }
}

impl DelayKick for MockScheduler<'_> {
    fn kick_after(&self, task: &SimTask, delay_ns: u64) {
        // A kick that cannot do anything is not sent: a user task whose last fake signal is
        // still pending (it has not run since), a kthread not in an interruptible sleep
        // (`wake_up_state(TASK_INTERRUPTIBLE)` would not wake it), an idle task whose CPU is
        // busy. The backend reads that from the task, as a kernel would (`signal_pending()`,
        // `task->__state`, `idle_cpu()`).
        let useless = match task.kind {
            TaskKind::User => task.sig_pending || task.unwind,
            TaskKind::Kthread => task.run != RunState::Sleeping(SleepKind::Interruptible),
            TaskKind::Idle(cpu) => self.cpus.get(cpu.0 as usize).is_some_and(|c| c.current.is_some()),
        };
        if useless {
            return;
        }
        self.charge(self.costs.kick_ns);
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
    /// Removing the hook of the function at this entry fails; the hook stays.
    pub(crate) fail_remove_on: Option<CodeAddr>,
    /// Removals that failed by `fail_remove_on`.
    pub(crate) failed_removals: Cell<u64>,
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
        if self.fail_remove_on == Some(func.start()) {
            // An unregister that fails leaves the hook as it was.
            self.failed_removals.set(self.failed_removals.get() + 1);
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
