//! Regression tests for the grace period between unlinking a node from a func stack and
//! clearing its `transition` flag (found by the loom models `loom_redirect_vs_disable` and
//! `loom_redirect_vs_cancelled_enable`).
//!
//! A handler may have read a node as the top of its func stack just before the engine
//! unlinked it. While the node's flag is set, that handler still consults its task's universe;
//! once the flag is clear it jumps to the node's variant unconditionally. So the flag of an
//! unlinked node may only be cleared after a grace period — the kernel's first
//! `klp_synchronize_transition()` in `klp_complete_transition`. The engine used to clear it
//! in the same step as the unlink, sending an unpatched task into the removed variant.

mod common;

use common::{r, TestBackend, TestTask};
use livepatch_core::backend::{Backend, ErrorKind, Pinned, Scheduler, TaskCursor, Tracer};
use livepatch_core::patch::{CallbackContext, CallbackError, FuncNode, ObjectCallbacks};
use livepatch_core::{
    CodeRange, CpuId, Engine, EngineStorage, Func, Live, Object, ObjectId, Patch, PatchId, Policy, SlotId,
};
use std::cell::RefCell;

/// The test backend, with a probe run at the start of every grace period.
struct Watch<'x> {
    inner: &'x TestBackend,
    probe: RefCell<Box<dyn FnMut() + 'x>>,
}

impl Backend for Watch<'_> {
    type Task = TestTask;
    type Walker = TestBackend;
    type Tracer = Self;
    type Scheduler = Self;
    fn walker(&self) -> &TestBackend {
        self.inner
    }
    fn tracer(&self) -> &Self {
        self
    }
    fn scheduler(&self) -> &Self {
        self
    }
}

/// The probe also runs when a hook is installed (right after a node was pushed).
impl Tracer for Watch<'_> {
    type Error = ErrorKind;
    fn install(&self, slot: SlotId, func: CodeRange) -> Result<(), ErrorKind> {
        (self.probe.borrow_mut())();
        self.inner.install(slot, func)
    }
    fn remove(&self, slot: SlotId, func: CodeRange) -> Result<(), ErrorKind> {
        self.inner.remove(slot, func)
    }
    fn object_loaded(&self, object: ObjectId) -> bool {
        self.inner.object_loaded(object)
    }
}

impl Scheduler for Watch<'_> {
    type Task = TestTask;
    fn for_each_task<F: FnMut(&TestTask)>(&self, cursor: TaskCursor, max: usize, f: F) -> Option<TaskCursor> {
        self.inner.for_each_task(cursor, max, f)
    }
    fn for_each_task_on_cpu<F: FnMut(&TestTask)>(&self, cpu: CpuId, f: F) {
        self.inner.for_each_task_on_cpu(cpu, f)
    }
    fn for_each_cpu<F: FnMut(CpuId)>(&self, f: F) {
        self.inner.for_each_cpu(f)
    }
    fn pin<R, F: FnOnce(&TestTask) -> R>(&self, task: &TestTask, f: F) -> Pinned<R> {
        self.inner.pin(task, f)
    }
    fn kick(&self, task: &TestTask) {
        self.inner.kick(task)
    }
    fn stop_all<R, F: FnOnce() -> R>(&self, f: F) -> R {
        self.inner.stop_all(f)
    }
    fn schedule_retry(&self, delay_ns: u64) {
        self.inner.schedule_retry(delay_ns)
    }
    fn synchronize(&self) {
        (self.probe.borrow_mut())();
        self.inner.synchronize()
    }
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
}

/// What a grace period saw of one node: (still on its func stack, flag set).
type Seen = RefCell<Vec<(bool, bool)>>;

fn probe<'x>(inner: &'x TestBackend, func: &'x Func<'x>, node: &'x FuncNode<'x>, seen: &'x Seen) -> Watch<'x> {
    Watch {
        inner,
        probe: RefCell::new(Box::new(move || seen.borrow_mut().push((func.is_patched(), node.in_transition())))),
    }
}

/// Some grace period ran after the node was unlinked and before its flag was cleared.
fn graced_after_unlink(seen: &Seen) -> bool {
    seen.borrow().iter().any(|&(linked, flag)| !linked && flag)
}

#[test]
fn a_disabled_node_keeps_its_flag_until_a_grace_period() {
    let inner = TestBackend::with_tasks(2);
    let seen = Seen::default();
    let orig = r(0x1000, 0x40);
    let fa = [Func::new("a", orig, r(0x9000, 0x40))];
    let fb = [Func::new("b", orig, r(0xa000, 0x40))];
    let oa = [Object::new(ObjectId::VMLINUX, "vmlinux", &fa)];
    let ob = [Object::new(ObjectId::VMLINUX, "vmlinux", &fb)];
    let pa = Patch::new(PatchId(1), "a", &oa);
    let pb = Patch::new(PatchId(2), "b", &ob);
    let storage: EngineStorage<'_, 4, 8> = EngineStorage::new();
    let live = Live::new(&storage, Policy::IMPROVED);
    let mut engine = Engine::new(&live);
    for p in [&pa, &pb] {
        engine.enable(p, &inner).unwrap();
        assert!(engine.try_complete(&inner, |_| {}).unwrap().is_complete());
    }
    // The node a handler holds when it read the top just before the unlink.
    let slot = live.slot_at(orig.start()).unwrap();
    let node = live.slots()[slot.0 as usize].top().unwrap();
    assert_eq!(node.code(), Some(r(0xa000, 0x40)));
    let b = probe(&inner, &fb[0], node, &seen);
    engine.disable(&pb, &b).unwrap();
    assert!(engine.try_complete(&b, |_| {}).unwrap().is_complete());
    assert!(!fb[0].is_patched() && !node.in_transition());
    assert!(graced_after_unlink(&seen), "flag cleared without a grace period after the unlink: {:?}", seen.borrow());
}

/// `pre_patch` always fails.
struct Refuse;

impl ObjectCallbacks for Refuse {
    fn pre_patch(&self, _ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        Err(CallbackError(-22))
    }
}

#[test]
fn a_cancelled_enable_keeps_the_pushed_flag_until_a_grace_period() {
    // On a fresh engine no index version was published, so the index rebuild does not wait
    // for a grace period of its own: only the explicit one separates unlink and flag.
    let inner = TestBackend::with_tasks(2);
    let seen = Seen::default();
    let f = [Func::new("f", r(0x1000, 0x40), r(0x9000, 0x40))];
    let g = [Func::new("g", r(0x2000, 0x40), r(0xa000, 0x40))];
    let objs =
        [Object::new(ObjectId::VMLINUX, "vmlinux", &f), Object::new(ObjectId(1), "m", &g).with_callbacks(&Refuse)];
    let p = Patch::new(PatchId(1), "p", &objs);
    let storage: EngineStorage<'_, 4, 8> = EngineStorage::new();
    let live = Live::new(&storage, Policy::IMPROVED);
    let mut engine = Engine::new(&live);
    // The probe runs when the hook is installed (the node was just pushed: remember it) and
    // at every grace period (record the remembered node's state).
    let node: RefCell<Option<&FuncNode<'_>>> = RefCell::new(None);
    let b = Watch {
        inner: &inner,
        probe: RefCell::new(Box::new(|| {
            if let Some(top) = live.slots().iter().find_map(|s| s.top()) {
                *node.borrow_mut() = Some(top);
            }
            if let Some(n) = *node.borrow() {
                seen.borrow_mut().push((f[0].is_patched(), n.in_transition()));
            }
        })),
    };
    assert!(engine.enable(&p, &b).is_err());
    assert!(!f[0].is_patched());
    assert!(!seen.borrow().is_empty(), "no grace period ran after the push");
    assert!(graced_after_unlink(&seen), "flag cleared without a grace period after the unlink: {:?}", seen.borrow());
}
