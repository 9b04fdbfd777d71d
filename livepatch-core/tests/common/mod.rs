//! A tiny single-threaded backend for the engine's tests: tasks with explicit stacks, a
//! walker over them, a tracer that records hooks, a scheduler that records kicks, retries and
//! grace periods.
#![allow(dead_code, unreachable_pub)]

use livepatch_core::backend::{
    Backend, ErrorKind, Pinned, Scheduler, StackWalker, Task, TaskCursor, TaskFlags, TaskKind, Tracer, WalkError,
};
use livepatch_core::{CodeAddr, CodeRange, CpuId, ObjectId, SlotId, TaskId, TaskPatchState};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

pub fn r(start: usize, len: usize) -> CodeRange {
    CodeRange::new(start, len).unwrap()
}

/// The `f`-th original function of the property tests' layout.
pub fn original(f: usize) -> CodeRange {
    r(0x1000 + f * 0x100, 0x40)
}

/// Patch `p`'s replacement for the `f`-th function of the property tests' layout.
pub fn variant_code(p: usize, f: usize) -> CodeRange {
    r(0x10_0000 + p * 0x1000 + f * 0x100, 0x40)
}

pub struct TestTask {
    pub id: TaskId,
    pub kind: TaskKind,
    pub flags: Cell<TaskFlags>,
    pub cpu: CpuId,
    pub running: Cell<bool>,
    pub unreliable: Cell<bool>,
    /// Return addresses, innermost first.
    pub stack: RefCell<Vec<usize>>,
    pub state: TaskPatchState,
}

impl TestTask {
    pub fn new(id: u32, kind: TaskKind) -> Self {
        Self {
            id: TaskId(id),
            kind,
            flags: Cell::new(TaskFlags::empty()),
            cpu: CpuId(id % 2),
            running: Cell::new(false),
            unreliable: Cell::new(false),
            stack: RefCell::new(Vec::new()),
            state: TaskPatchState::new(),
        }
    }
}

impl Task for TestTask {
    fn id(&self) -> TaskId {
        self.id
    }
    fn kind(&self) -> TaskKind {
        self.kind
    }
    fn flags(&self) -> TaskFlags {
        self.flags.get()
    }
    fn cpu(&self) -> CpuId {
        self.cpu
    }
    fn is_running(&self) -> bool {
        self.running.get()
    }
    fn patch_state(&self) -> &TaskPatchState {
        &self.state
    }
}

#[derive(Default)]
pub struct TestBackend {
    pub tasks: Vec<TestTask>,
    pub kicks: RefCell<Vec<TaskId>>,
    /// Tasks asked to freeze (the freezer model), in order; `thaws` counts `thaw_all`.
    pub freezes: RefCell<Vec<TaskId>>,
    pub thaws: Cell<u32>,
    pub retries: RefCell<Vec<u64>>,
    pub syncs: Cell<u32>,
    pub stops: Cell<u32>,
    pub now: Cell<u64>,
    pub hooks: RefCell<BTreeMap<u32, CodeRange>>,
    pub installs: Cell<u32>,
    pub fail_install: Cell<bool>,
    pub fail_remove: Cell<bool>,
    pub unloaded: RefCell<BTreeSet<u32>>,
    pub batches: Cell<u32>,
}

impl TestBackend {
    pub fn with_tasks(n: u32) -> Self {
        Self { tasks: (0..n).map(|i| TestTask::new(i + 1, TaskKind::User)).collect(), ..Self::default() }
    }

    pub fn task(&self, id: u32) -> &TestTask {
        self.tasks.iter().find(|t| t.id == TaskId(id)).unwrap()
    }

    pub fn hooked(&self) -> Vec<CodeRange> {
        self.hooks.borrow().values().copied().collect()
    }
}

impl Backend for TestBackend {
    type Task = TestTask;
    type Walker = Self;
    type Tracer = Self;
    type Scheduler = Self;
    fn walker(&self) -> &Self {
        self
    }
    fn tracer(&self) -> &Self {
        self
    }
    fn scheduler(&self) -> &Self {
        self
    }
}

impl StackWalker for TestBackend {
    type Task = TestTask;
    type Error = ErrorKind;

    fn walk<F>(&self, task: &TestTask, max_depth: usize, mut frame: F) -> Result<usize, WalkError<ErrorKind>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        if task.unreliable.get() {
            return Err(WalkError::Backend(ErrorKind::Unreliable));
        }
        let stack = task.stack.borrow();
        if stack.len() > max_depth {
            return Err(WalkError::TooDeep);
        }
        for (i, &addr) in stack.iter().enumerate() {
            self.now.set(self.now.get() + 10);
            if frame(CodeAddr(addr)).is_break() {
                return Ok(i + 1);
            }
        }
        Ok(stack.len())
    }
}

impl Tracer for TestBackend {
    type Error = ErrorKind;

    fn install(&self, slot: SlotId, func: CodeRange) -> Result<(), ErrorKind> {
        if self.fail_install.get() {
            return Err(ErrorKind::Hook);
        }
        self.installs.set(self.installs.get() + 1);
        let old = self.hooks.borrow_mut().insert(slot.0, func);
        assert!(old.is_none(), "slot {slot} hooked twice");
        Ok(())
    }

    fn remove(&self, slot: SlotId, func: CodeRange) -> Result<(), ErrorKind> {
        if self.fail_remove.get() {
            return Err(ErrorKind::Hook);
        }
        let old = self.hooks.borrow_mut().remove(&slot.0);
        assert_eq!(old, Some(func), "removing a hook that is not there");
        Ok(())
    }

    fn object_loaded(&self, object: ObjectId) -> bool {
        !self.unloaded.borrow().contains(&object.0)
    }
}

impl Scheduler for TestBackend {
    type Task = TestTask;

    fn for_each_task<F>(&self, cursor: TaskCursor, max: usize, mut f: F) -> Option<TaskCursor>
    where
        F: FnMut(&TestTask),
    {
        self.batches.set(self.batches.get() + 1);
        let start = cursor.0 as usize;
        let end = start.saturating_add(max).min(self.tasks.len());
        for t in &self.tasks[start.min(end)..end] {
            f(t);
        }
        (end < self.tasks.len()).then_some(TaskCursor(end as u64))
    }

    fn for_each_task_on_cpu<F>(&self, cpu: CpuId, mut f: F)
    where
        F: FnMut(&TestTask),
    {
        self.tasks.iter().filter(|t| t.cpu == cpu).for_each(&mut f);
    }

    fn for_each_cpu<F>(&self, mut f: F)
    where
        F: FnMut(CpuId),
    {
        f(CpuId(0));
        f(CpuId(1));
    }

    fn pin<R, F>(&self, task: &TestTask, f: F) -> Pinned<R>
    where
        F: FnOnce(&TestTask) -> R,
    {
        if task.running.get() {
            Pinned::Running
        } else {
            Pinned::Checked(f(task))
        }
    }

    fn kick(&self, task: &TestTask) {
        self.kicks.borrow_mut().push(task.id);
    }

    fn freeze(&self, task: &TestTask) {
        self.freezes.borrow_mut().push(task.id);
    }

    fn thaw_all(&self) {
        self.thaws.set(self.thaws.get() + 1);
    }

    fn stop_all<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R,
    {
        self.stops.set(self.stops.get() + 1);
        self.now.set(self.now.get() + 1_000); // stopping every CPU costs time
        let running: Vec<bool> = self.tasks.iter().map(|t| t.running.replace(false)).collect();
        let r = f();
        for (t, was) in self.tasks.iter().zip(running) {
            t.running.set(was);
        }
        r
    }

    fn schedule_retry(&self, delay_ns: u64) {
        self.retries.borrow_mut().push(delay_ns);
    }

    fn synchronize(&self) {
        self.syncs.set(self.syncs.get() + 1);
    }

    fn now_ns(&self) -> u64 {
        self.now.get()
    }
}

/// Callbacks that log every call as `"<callback> <patch>/<object>"` and can fail `pre_patch`
/// for one object with `-19` (`-ENODEV`).
#[derive(Default)]
pub struct CallbackLog {
    pub calls: std::sync::Mutex<Vec<String>>,
    pub fail_pre_patch_of: Option<ObjectId>,
}

impl CallbackLog {
    pub fn failing_for(object: ObjectId) -> Self {
        Self { fail_pre_patch_of: Some(object), ..Self::default() }
    }

    fn note(&self, what: &str, ctx: &livepatch_core::patch::CallbackContext<'_, '_>) {
        self.calls.lock().unwrap().push(format!("{what} {}/{}", ctx.patch().id(), ctx.object()));
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl livepatch_core::ObjectCallbacks for CallbackLog {
    fn pre_patch(
        &self,
        ctx: &livepatch_core::patch::CallbackContext<'_, '_>,
    ) -> Result<(), livepatch_core::patch::CallbackError> {
        self.note("pre_patch", ctx);
        match self.fail_pre_patch_of {
            Some(o) if o == ctx.object() => Err(livepatch_core::patch::CallbackError(-19)),
            _ => Ok(()),
        }
    }
    fn post_patch(&self, ctx: &livepatch_core::patch::CallbackContext<'_, '_>) {
        self.note("post_patch", ctx);
    }
    fn pre_unpatch(&self, ctx: &livepatch_core::patch::CallbackContext<'_, '_>) {
        self.note("pre_unpatch", ctx);
    }
    fn post_unpatch(&self, ctx: &livepatch_core::patch::CallbackContext<'_, '_>) {
        self.note("post_unpatch", ctx);
    }
}
