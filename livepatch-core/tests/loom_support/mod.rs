//! A loom backend for the core's models: tasks whose CPU is a loom mutex, a walker over each
//! task's one live frame, a tracer that accepts every hook, and a scheduler whose
//! `synchronize` is an explicit grace period over reader announcements.
//!
//! The grace period is the weakest one the [`Scheduler`] contract allows: it waits only for
//! the read-side sections that were in progress when it started (`read`), nothing else. A
//! read-side section announces entry and exit with `AcqRel` read-modify-writes on one counter;
//! `synchronize` spins (with `loom::thread::yield_now`) until an `AcqRel` RMW of that counter
//! reads zero. Every RMW of the counter is in one modification order, so a section is either
//! wholly before the grace period's final RMW (and happens-before everything after it) or
//! starts after it (and then sees everything written before `synchronize` was called).
//!
//! Code is modelled as memory: each variant's code is a `loom::cell::UnsafeCell` written when
//! its patch is loaded and overwritten when it is released; a task "executes" a variant by
//! reading it. Loom reports any execution that is not ordered after the load or before the
//! release as a causality violation, so "never jumps to a variant that is not yet published
//! or already retired" is checked by loom itself.
//!
//! Limits of loom 0.7 the models work around or leave open:
//!
//! * its partial-order reduction misses conflicts reached through long chains of relaxed
//!   accesses, so task threads call `loom::thread::yield_now()` before each step (a scheduling
//!   point, not a preemption) to let the engine run any number of steps first;
//! * it did not report the stale read of plain message passing (writer: flag `Release`, then
//!   pointer `Relaxed`; reader: pointer `Acquire`, then flag `Acquire`) in a ten-line model,
//!   so a weakened *publication* such as `FuncSlot::push` made `Relaxed` goes unnoticed here
//!   unless the reader also touches an `UnsafeCell` the writer wrote before publishing.
//!   Weakened orderings of the task word's switch and of the transition flag's store are
//!   caught (`ci/loom.sh --weak`, and the demonstration in the verification notes).
#![allow(dead_code, unreachable_pub, missing_docs)]

use livepatch_core::backend::{
    ErrorKind, Parts, Pinned, Scheduler, StackWalker, Task, TaskCursor, TaskFlags, TaskKind, Tracer, WalkError,
};
use livepatch_core::model::SwitchPoints;
use livepatch_core::patch::{CallbackContext, CallbackError, ObjectCallbacks};
use livepatch_core::redirect::{self, Observed, Redirect};
use livepatch_core::{
    CodeAddr, CodeRange, CpuId, Engine, EngineStorage, Func, Live, Object, ObjectId, Patch, PatchId, PatchState,
    Policy, SlotId, TaskId, TaskPatchState,
};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Mutex;
use std::ops::ControlFlow;

/// The value a released variant's code is overwritten with.
pub const FREED: u32 = 0xdead;
/// The value a loaded variant's code holds.
pub const LOADED: u32 = 0xc0de;

/// Leaks `value` for one loom iteration; see [`Leaked::free`].
pub fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// Frees what [`leak`] returned once every thread that used it has been joined.
///
/// # Safety
///
/// `r` came from [`leak`], is freed once, and nothing uses it afterwards.
pub unsafe fn free<T: ?Sized>(r: &'static T) {
    // SAFETY: by the contract `r` is the only remaining use of a `Box` leaked by `leak`.
    drop(unsafe { Box::from_raw(r as *const T as *mut T) });
}

/// The code of one variant, as memory.
#[derive(Debug)]
pub struct Code {
    pub range: CodeRange,
    cell: UnsafeCell<u32>,
}

impl Code {
    /// Code at `range`, not loaded yet.
    pub fn new(range: CodeRange) -> Self {
        Self { range, cell: UnsafeCell::new(0) }
    }

    /// The module that holds it is loaded (before its patch is enabled).
    pub fn load(&self) {
        // SAFETY: loom checks the access; the pointer is valid for the cell's lifetime.
        self.cell.with_mut(|p| unsafe { *p = LOADED });
    }

    /// A task runs it: must be loaded and not released, and ordered after both.
    pub fn execute(&self) {
        // SAFETY: as above.
        let v = self.cell.with(|p| unsafe { *p });
        assert_eq!(v, LOADED, "a task executed variant {:?} that is not loaded (or released)", self.range);
    }

    /// The module is freed (after its patch was disabled or replaced).
    pub fn release(&self) {
        // SAFETY: as above.
        self.cell.with_mut(|p| unsafe { *p = FREED });
    }
}

/// A task: its patch-state word, its CPU (held while it runs; the sweep try-locks it to pin
/// the task) and the return address of its one frame inside a function (0: none).
#[derive(Debug)]
pub struct LTask {
    id: TaskId,
    pub state: TaskPatchState,
    pub cpu: Mutex<()>,
    pub frame: AtomicUsize,
}

impl LTask {
    pub fn new(id: u32) -> Self {
        Self { id: TaskId(id), state: TaskPatchState::new(), cpu: Mutex::new(()), frame: AtomicUsize::new(0) }
    }
}

impl Task for LTask {
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
        CpuId(self.id.0)
    }
    fn is_running(&self) -> bool {
        // `pin` decides, atomically with the check.
        false
    }
    fn patch_state(&self) -> &TaskPatchState {
        &self.state
    }
}

/// Walks a task's one frame. Called by the task itself or under `pin`, so `Relaxed` suffices:
/// the frame was written in program order or before the task released its CPU.
#[derive(Debug, Default)]
pub struct LWalker;

impl StackWalker for LWalker {
    type Task = LTask;
    type Error = ErrorKind;

    fn walk<F>(&self, task: &LTask, max_depth: usize, mut frame: F) -> Result<usize, WalkError<ErrorKind>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        let ip = task.frame.load(Ordering::Relaxed);
        if ip == 0 {
            return Ok(0);
        }
        if max_depth == 0 {
            return Err(WalkError::TooDeep);
        }
        let _ = frame(CodeAddr(ip));
        Ok(1)
    }
}

/// The tracer: every hook installs; removal waits for a grace period (ftrace's unregister
/// waits for running handlers).
#[derive(Debug)]
pub struct LTracer {
    pub sched: &'static LSched,
}

impl Tracer for LTracer {
    type Error = ErrorKind;

    fn install(&self, _slot: SlotId, _func: CodeRange) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn remove(&self, _slot: SlotId, _func: CodeRange) -> Result<(), ErrorKind> {
        self.sched.synchronize();
        Ok(())
    }
    fn object_loaded(&self, _object: ObjectId) -> bool {
        true
    }
}

/// The scheduler: a fixed task list and the explicit grace period.
#[derive(Debug)]
pub struct LSched {
    pub tasks: Vec<&'static LTask>,
    readers: AtomicUsize,
}

impl LSched {
    pub fn new(tasks: Vec<&'static LTask>) -> Self {
        Self { tasks, readers: AtomicUsize::new(0) }
    }

    /// A read-side section (a redirect handler, a switch point, a patched-set read).
    pub fn read<R>(&self, f: impl FnOnce() -> R) -> R {
        // `AcqRel`: entry acquires what was written before a grace period this section starts
        // after; exit releases the section's reads to the grace period that waits for it.
        self.readers.fetch_add(1, Ordering::AcqRel);
        let r = f();
        self.readers.fetch_sub(1, Ordering::AcqRel);
        r
    }
}

impl Scheduler for LSched {
    type Task = LTask;

    fn for_each_task<F>(&self, cursor: TaskCursor, max: usize, mut f: F) -> Option<TaskCursor>
    where
        F: FnMut(&LTask),
    {
        let start = (cursor.0 as usize).min(self.tasks.len());
        let end = start.saturating_add(max).min(self.tasks.len());
        self.tasks[start..end].iter().for_each(|t| f(t));
        (end < self.tasks.len()).then_some(TaskCursor(end as u64))
    }

    fn for_each_task_on_cpu<F>(&self, _cpu: CpuId, _f: F)
    where
        F: FnMut(&LTask),
    {
        unreachable!("the loom policy has no per-CPU pass")
    }

    fn for_each_cpu<F>(&self, _f: F)
    where
        F: FnMut(CpuId),
    {
    }

    fn pin<R, F>(&self, task: &LTask, f: F) -> Pinned<R>
    where
        F: FnOnce(&LTask) -> R,
    {
        match task.cpu.try_lock() {
            Ok(_held) => Pinned::Checked(f(task)),
            Err(_) => Pinned::Running,
        }
    }

    fn kick(&self, _task: &LTask) {}

    fn stop_all<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R,
    {
        f()
    }

    fn schedule_retry(&self, _delay_ns: u64) {}

    fn synchronize(&self) {
        while self.readers.fetch_add(0, Ordering::AcqRel) != 0 {
            loom::thread::yield_now();
        }
    }

    fn now_ns(&self) -> u64 {
        0
    }
}

/// The backend.
pub type LBackend = Parts<'static, LSched, LWalker, LTracer>;

/// A backend over `n` fresh tasks, leaked for the iteration.
pub fn backend(n: u32) -> (&'static LBackend, &'static LSched) {
    let tasks = (0..n).map(|i| leak(LTask::new(i))).collect();
    let sched = leak(LSched::new(tasks));
    let backend = leak(Parts { scheduler: sched, walker: leak(LWalker), tracer: leak(LTracer { sched }) });
    (backend, sched)
}

/// Frees a [`backend`].
///
/// # Safety
///
/// Every thread that used it has been joined; it is not used afterwards.
pub unsafe fn free_backend(b: &'static LBackend) {
    // SAFETY: every reference below came from `leak` in `backend` and is freed once.
    unsafe {
        let sched = b.scheduler;
        for t in &sched.tasks {
            free(*t);
        }
        free(b.walker);
        free(b.tracer);
        free(sched);
        free(b);
    }
}

/// The per-task policy the models use: sweep, exit to user, self-check and handler-entry
/// switch points; no per-CPU pass; one task per batch; no kicks or forcing.
pub const POLICY: Policy = Policy {
    switch_points: SwitchPoints::SWEEP
        .union(SwitchPoints::EXIT_TO_USER)
        .union(SwitchPoints::SELF_CHECK)
        .union(SwitchPoints::HANDLER_ENTRY),
    signal_every: None,
    force_after: None,
    batch: 1,
    max_depth: 4,
    ..Policy::IMPROVED
};

/// What one call through the hook decided, with what the handler saw and the task's word
/// read right after (while the task still holds its CPU).
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub redirect: Redirect,
    pub observed: Observed,
    pub after: PatchState,
}

/// The current task calls the function of `slot`: the handler's decision in a read-side
/// section (the real `redirect::per_task_observed`), then the checks every model shares:
/// never the idle state in a transition, and the variant of the task's universe whenever its
/// word names one. `code` maps a variant address to its code, which the task then executes.
pub fn call(
    live: &Live<'static>,
    sched: &LSched,
    task: &LTask,
    slot: SlotId,
    codes: &[&Code],
    universe: impl Fn(PatchState) -> Redirect,
) -> Call {
    let (redirect, observed) =
        sched.read(|| redirect::per_task_observed(&live.slots()[slot.0 as usize], task.patch_state()));
    assert_ne!(observed.task_state, Some(PatchState::Idle), "the handler saw the idle state during a transition");
    let after = task.state.load(Ordering::Relaxed).state;
    if after != PatchState::Idle {
        assert_eq!(redirect, universe(after), "a {after} task was sent to the wrong variant ({observed:?})");
    }
    if let Redirect::Variant(at) = redirect {
        let code = codes.iter().find(|c| c.range.start() == at).expect("a known variant");
        task.frame.store(at.get() + 1, Ordering::Relaxed);
        code.execute();
    }
    Call { redirect, observed, after }
}

/// The original function every model patches, and where its patches' variants live.
pub const ORIGINAL: usize = 0x1000;

/// The range of variant `i`.
pub fn variant(i: usize) -> CodeRange {
    CodeRange::new(0x9000 + i * 0x1000, 0x40).unwrap()
}

/// One engine, its storage, its patches (patch `i` replaces [`ORIGINAL`] with
/// [`variant`]`(i)`; an optional second object whose `pre_patch` fails), the code of every
/// variant and the backend — leaked for one loom iteration and freed by [`Fixture::free`].
pub struct Fixture {
    pub live: &'static Live<'static>,
    pub b: &'static LBackend,
    pub sched: &'static LSched,
    pub patches: Vec<&'static Patch<'static>>,
    pub codes: Vec<&'static Code>,
    frees: Vec<Box<dyn FnOnce()>>,
}

/// How a fixture's patch is built.
#[derive(Clone, Copy, Debug, Default)]
pub struct PatchKind {
    /// Cumulative (atomic replace).
    pub replace: bool,
    /// A second object whose `pre_patch` fails, so enabling the patch is cancelled after its
    /// first object's functions were pushed.
    pub failing_object: bool,
}

/// `pre_patch` always fails.
#[derive(Debug)]
struct Refuse;

impl ObjectCallbacks for Refuse {
    fn pre_patch(&self, _ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        Err(CallbackError(-22))
    }
}

impl Fixture {
    /// A fixture with `tasks` tasks and one patch per entry of `kinds`.
    pub fn new(tasks: u32, kinds: &[PatchKind]) -> Self {
        let (b, sched) = backend(tasks);
        let mut frees: Vec<Box<dyn FnOnce()>> = Vec::new();
        let storage = leak(EngineStorage::<'static, 2, 6>::new());
        let live = leak(Live::new(storage, POLICY));
        let orig = CodeRange::new(ORIGINAL, 0x40).unwrap();
        let mut patches = Vec::new();
        let mut codes = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let code = leak(Code::new(variant(i)));
            let funcs = leak([Func::new("f", orig, variant(i))]);
            let extra = leak([Func::new(
                "g",
                CodeRange::new(0x2000, 0x40).unwrap(),
                CodeRange::new(0x3000 + i * 0x100, 0x40).unwrap(),
            )]);
            let objects: &'static [Object<'static>] = if kind.failing_object {
                leak([
                    Object::new(ObjectId::VMLINUX, "vmlinux", funcs),
                    Object::new(ObjectId(1), "m", extra).with_callbacks(&Refuse),
                ])
            } else {
                leak([Object::new(ObjectId::VMLINUX, "vmlinux", funcs)])
            };
            let patch = Patch::new(PatchId(i as u32 + 1), "p", objects);
            let patch = leak(if kind.replace { patch.replacing() } else { patch });
            code.load();
            frees.push(Box::new(move || {
                // SAFETY: leaked above, freed once after every thread was joined.
                unsafe {
                    free(patch);
                    free(objects);
                    free(extra);
                    free(funcs);
                    free(code);
                }
            }));
            patches.push(patch);
            codes.push(code);
        }
        frees.push(Box::new(move || {
            // SAFETY: as above; the engine was dropped before `free` runs.
            unsafe {
                free(live);
                free(storage);
                free_backend(b);
            }
        }));
        Self { live, b, sched, patches, codes, frees }
    }

    /// The slot of [`ORIGINAL`] (once a patch was enabled).
    pub fn slot(&self) -> SlotId {
        self.live.slot_at(CodeAddr(ORIGINAL)).expect("the original is patched")
    }

    /// The engine's first task.
    pub fn task(&self, i: usize) -> &'static LTask {
        self.sched.tasks[i]
    }

    /// Where a task of `state` must go when patches `world` (indices) are enabled, newest
    /// last.
    pub fn world(world: &[usize]) -> Redirect {
        match world.last() {
            Some(&i) => Redirect::Variant(variant(i).start()),
            None => Redirect::Original,
        }
    }

    /// Frees everything. Call after joining every thread and dropping the engine.
    pub fn free(self) {
        for f in self.frees.into_iter().rev() {
            f();
        }
    }
}

/// Runs completion attempts until the transition is over.
pub fn complete(engine: &mut Engine<'static>, b: &'static LBackend) {
    loop {
        match engine.try_complete(b, |_| {}) {
            Ok(p) if p.is_complete() => return,
            Ok(_) => loom::thread::yield_now(),
            Err(e) => panic!("completion attempt: {e}"),
        }
    }
}

/// The branch budget of every model (loom's default of 1 000 is too small for the engine).
pub const MAX_BRANCHES: usize = 20_000;

/// Runs `f` as a loom model and prints how many executions loom explored.
pub fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize as StdCount, Ordering as StdOrdering};
    use std::sync::Arc;
    let runs = Arc::new(StdCount::new(0));
    let counter = runs.clone();
    let start = std::time::Instant::now();
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        // The engine's single-threaded set-up and completion steps are thousands of atomic
        // operations; loom counts each as a branch.
        builder.max_branches = MAX_BRANCHES;
    }
    builder.check(move || {
        counter.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    eprintln!("{name}: {} executions in {:.1?}", runs.load(StdOrdering::Relaxed), start.elapsed());
}
