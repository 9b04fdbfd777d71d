//! The engine's events, in the kernel's order and words, for the paths the selftest port
//! (`tests/kselftest`) does not reach: a reversed disable, signals, force, and a late module
//! whose hook cannot be installed.

mod common;

use common::{r, TestBackend};
use livepatch_core::transition::{Event, Events};
use livepatch_core::{Engine, EngineStorage, Error, Func, Live, Object, ObjectId, Patch, PatchId, Policy};
use std::sync::Mutex;

#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Events for Log {
    fn event(&self, event: &Event<'_>) {
        self.0.lock().unwrap().push(format!("livepatch: {event}"));
    }
}

impl Log {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

const F1: usize = 0x1000;
const G: usize = 0x2000;

#[test]
fn reversing_a_disable_signals_and_force_are_reported() {
    let log = Log::default();
    let funcs = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x40))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let storage = EngineStorage::<8, 32>::new();
    let live = Live::new(&storage, Policy { signal_every: Some(2), ..Policy::LINUX_6_12 });
    let mut engine = Engine::new(&live);
    engine.set_events(&log);
    let b = TestBackend::with_tasks(2);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, |_| {}).unwrap().is_complete());
    log.take();

    b.task(2).stack.borrow_mut().push(0x9010); // sleeps in the variant: the disable stalls
    engine.disable(&patch, &b).unwrap();
    for _ in 0..3 {
        assert!(engine.try_complete(&b, |_| {}).unwrap().is_pending());
    }
    engine.reverse(&b).unwrap();
    b.task(1).stack.borrow_mut().push(F1 + 4); // task 1 switched, now sleeps in the original: the reversal stalls
    assert!(engine.try_complete(&b, |_| {}).unwrap().is_pending());
    assert!(engine.force(&b).unwrap().is_complete());
    assert_eq!(
        log.take(),
        [
            "livepatch: 'p1': initializing unpatching transition",
            "livepatch: 'p1': starting unpatching transition",
            // passes 1 and 2 stall quietly; pass 3 is the first due for a kick (every 2nd retry)
            "livepatch: signaling remaining tasks",
            "livepatch: 'p1': reversing transition from unpatching to patching",
            "livepatch: 'p1': starting patching transition",
            "livepatch: forcing remaining tasks to the patched state",
            "livepatch: 'p1': completing patching transition",
            "livepatch: 'p1': patching complete",
        ]
    );
    assert!(patch.is_enabled() && patch.is_forced());
}

#[test]
fn a_late_module_whose_hook_fails_is_refused_with_the_kernels_messages() {
    let log = Log::default();
    let f = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x40))];
    let g = [Func::new("g", r(G, 0x40), r(0x9100, 0x40))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &f), Object::new(ObjectId(7), "mod7", &g)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let storage = EngineStorage::<8, 32>::new();
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    engine.set_events(&log);
    let b = TestBackend::with_tasks(1);
    b.unloaded.borrow_mut().insert(7);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, |_| {}).unwrap().is_complete());
    log.take();

    b.unloaded.borrow_mut().remove(&7);
    b.fail_install.set(true);
    let e = engine.object_coming(ObjectId(7), &b).unwrap_err();
    assert_eq!((e, e.errno()), (Error::Backend(livepatch_core::backend::ErrorKind::Hook), -16));
    assert_eq!(
        log.take(),
        [
            "livepatch: applying patch 'p1' to loading module 'mod7'",
            "livepatch: failed to register ftrace handler for function 'g' (-16)",
            "livepatch: failed to apply patch 'p1' to module 'mod7' (-16)",
            "livepatch: patch 'p1' failed for module 'mod7', refusing to load module 'mod7'",
        ]
    );
    assert!(!objs[1].is_patched() && b.hooked() == [r(F1, 0x40)], "nothing of mod7 left behind");
}
