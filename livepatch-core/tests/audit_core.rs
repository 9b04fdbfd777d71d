//! Soundness audit (December 2026): cases where a task could run code of two universes, or
//! switch with code being switched away from on its stack, each compared with what
//! `kernel/livepatch` (6.12) does in the same situation.

mod common;

use common::{r, TestBackend, TestTask};
use livepatch_core::backend::{ErrorKind, StackWalker, WalkError};
use livepatch_core::sweep::{StallReason, Straggler, Verdict};
use livepatch_core::{
    CodeAddr, Engine, EngineStorage, Func, Live, Object, ObjectId, Patch, PatchId, PatchState, Policy, Redirect,
};
use std::cell::RefCell;
use std::ops::ControlFlow;

const F1: usize = 0x1000;
const F2: usize = 0x1100;
const M1: usize = 0x20_0000;
const CALLER: usize = 0x5000;
const MODULE: ObjectId = ObjectId(9);

fn quiet(_: &Straggler) {}

fn call(live: &Live<'_>, entry: usize, b: &TestBackend, task: u32) -> Redirect {
    let slot = live.slot_at(CodeAddr(entry)).expect("function is hooked");
    live.redirect(slot, &b.task(task).state, CodeAddr(CALLER))
}

fn variant(addr: usize) -> Redirect {
    Redirect::Variant(CodeAddr(addr))
}

/// A module loads while an atomic replace's *enable* has been reversed. The kernel gave the
/// replace patch nops for every object of the patches it replaces when it was enabled
/// (`klp_add_nops`), loaded or not, and `klp_module_coming` patches them with the module
/// whatever the direction: a task already in the replace patch's universe runs the original
/// of a function the replace patch drops. Here a task in that universe ran `p1`'s variant of
/// the module's function while running the original of `f1` (the replace patch's nop):
/// two universes at once.
#[test]
fn a_module_coming_during_a_reversed_replace_gets_the_replace_patchs_nops() {
    let f1 = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let m1 = [Func::new("m1", r(M1, 0x40), r(0x9100, 0x80))];
    let o1 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f1), Object::new(MODULE, "mod9", &m1)];
    let p1 = Patch::new(PatchId(1), "p1", &o1);
    // The cumulative patch only patches f2: f1 and m1 go back to their originals.
    let fr = [Func::new("f2", r(F2, 0x40), r(0xb000, 0x80))];
    let or = [Object::new(ObjectId::VMLINUX, "vmlinux", &fr)];
    let replace = Patch::new(PatchId(2), "replace", &or).replacing();
    let b = TestBackend::with_tasks(2);
    b.unloaded.borrow_mut().insert(MODULE.0);
    let storage = EngineStorage::<8, 32>::new();
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    engine.enable(&p1, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());

    // Task 2 sleeps in p1's f1: task 1 switches to the replace patch, task 2 does not.
    b.task(2).stack.borrow_mut().push(0x9010);
    engine.enable(&replace, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(b.task(1).state.state(), PatchState::Patched);
    engine.reverse(&b).unwrap();
    assert_eq!(call(&live, F1, &b, 1), Redirect::Original, "task 1 runs the replace patch's universe");

    b.unloaded.borrow_mut().remove(&MODULE.0);
    engine.object_coming(MODULE, &b).unwrap();
    assert_eq!(call(&live, M1, &b, 2), variant(0x9100), "task 2 runs p1's universe");
    assert_eq!(
        call(&live, M1, &b, 1),
        Redirect::Original,
        "task 1 runs the replace patch's universe, where m1 is the original, not p1's variant"
    );

    b.task(2).stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(call(&live, M1, &b, 1), variant(0x9100), "reversed: p1 stays");
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000));
}

/// A module loads while an atomic replace is being enabled: its nops are pushed on the
/// module's functions that an older patch patches, but the code below them (that patch's
/// variants, which unpatched tasks keep running) was never marked as being switched away
/// from. The kernel's `klp_check_stack` checks every func of the transition patch's patched
/// objects, nops included, each against the func below it at check time. Here a task
/// sleeping in `p1`'s variant of the module's function was switched to the replace patch's
/// universe, and the variant it sleeps in was unlinked at completion.
#[test]
fn a_module_coming_during_a_replace_marks_the_code_below_its_nops_as_switched_away_from() {
    let f1 = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let m1 = [Func::new("m1", r(M1, 0x40), r(0x9100, 0x80))];
    let o1 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f1), Object::new(MODULE, "mod9", &m1)];
    let p1 = Patch::new(PatchId(1), "p1", &o1);
    let fr = [Func::new("f2", r(F2, 0x40), r(0xb000, 0x80))];
    let or = [Object::new(ObjectId::VMLINUX, "vmlinux", &fr)];
    let replace = Patch::new(PatchId(2), "replace", &or).replacing();
    let b = TestBackend::with_tasks(3);
    b.unloaded.borrow_mut().insert(MODULE.0);
    let storage = EngineStorage::<8, 32>::new();
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    engine.enable(&p1, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());

    // Task 3 runs through the first attempt and stays in the start universe.
    b.task(3).running.set(true);
    engine.enable(&replace, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(b.task(3).state.state(), PatchState::Unpatched);

    b.unloaded.borrow_mut().remove(&MODULE.0);
    engine.object_coming(MODULE, &b).unwrap();
    assert_eq!(call(&live, M1, &b, 3), variant(0x9100), "an unpatched task runs p1's m1");
    // ... and sleeps in it.
    b.task(3).running.set(false);
    b.task(3).stack.borrow_mut().extend([0x9110, CALLER + 4]);
    let stalls = RefCell::new(Vec::new());
    let progress = engine.try_complete(&b, |s: &Straggler| stalls.borrow_mut().push(s.reason)).unwrap();
    assert_eq!(
        b.task(3).state.state(),
        PatchState::Unpatched,
        "switched with p1's m1 on its stack ({progress:?}, stalls {:?})",
        stalls.borrow()
    );
    assert!(matches!(
        stalls.borrow()[..],
        [StallReason::OnStack { variant: Some(v), .. }] if v == r(0x9100, 0x80)
    ));
}

/// A module loads while the *disable* of an atomic-replace patch has been reversed, and a
/// patch enabled after the replace patch patches the module. The kernel's replace patch has
/// no nops any more (they were freed when its enable completed), so the later patch's
/// variant runs in both universes. Here a nop was pushed over it: tasks in the patched
/// universe ran the original while the later patch is enabled, and ran its variant again
/// once the transition completed — without a stack check.
#[test]
fn a_module_coming_during_a_reversed_disable_of_a_replace_gets_no_nops() {
    let fr = [Func::new("f2", r(F2, 0x40), r(0xb000, 0x80))];
    let or = [Object::new(ObjectId::VMLINUX, "vmlinux", &fr)];
    let replace = Patch::new(PatchId(2), "replace", &or).replacing();
    let m1 = [Func::new("m1", r(M1, 0x40), r(0x9100, 0x80))];
    let o3 = [Object::new(MODULE, "mod9", &m1)];
    let p3 = Patch::new(PatchId(3), "p3", &o3);
    let b = TestBackend::with_tasks(2);
    b.unloaded.borrow_mut().insert(MODULE.0);
    let storage = EngineStorage::<8, 32>::new();
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    for p in [&replace, &p3] {
        engine.enable(p, &b).unwrap();
        assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    }

    // Task 2 sleeps in the replace patch's f2: the disable waits for it; then it is reversed.
    b.task(2).stack.borrow_mut().push(0xb010);
    engine.disable(&replace, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    engine.reverse(&b).unwrap();
    assert_eq!(b.task(2).state.state(), PatchState::Patched);

    b.unloaded.borrow_mut().remove(&MODULE.0);
    engine.object_coming(MODULE, &b).unwrap();
    assert_eq!(call(&live, M1, &b, 1), variant(0x9100), "unpatched universe: p3's m1");
    assert_eq!(call(&live, M1, &b, 2), variant(0x9100), "patched universe: p3 is enabled there too");
}

/// A walker that lets the engine run between two frames of a task's own check — the task is
/// preempted inside its task-work callback, which a kernel module runs preemptible, outside
/// any read-side section, so `Scheduler::synchronize` does not wait for it.
struct Preempted<'h> {
    /// Called before frame `depth` is handed on (and with the depth past the last frame when
    /// the walk ends).
    at: RefCell<Box<dyn FnMut(usize) + 'h>>,
}

impl StackWalker for Preempted<'_> {
    type Task = TestTask;
    type Error = ErrorKind;

    fn walk<F>(&self, task: &TestTask, max_depth: usize, mut frame: F) -> Result<usize, WalkError<ErrorKind>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        let stack = task.stack.borrow().clone();
        assert!(stack.len() <= max_depth);
        for (depth, &addr) in stack.iter().enumerate() {
            (self.at.borrow_mut())(depth);
            if frame(CodeAddr(addr)).is_break() {
                return Ok(depth + 1);
            }
        }
        (self.at.borrow_mut())(stack.len());
        Ok(stack.len())
    }
}

/// A task checks its own stack (task work) and is preempted in the middle of its walk; the
/// transition is reversed, and reversed again, before it resumes. The frames it looked at
/// after the first reversal were checked against that direction's code (the original `f1`
/// is not switched away from when unpatching), and its word is back to the one it read at
/// the start: the compare-and-swap from that word succeeded, and the task switched to the
/// patched universe with the original `f1` on its stack. DESIGN.md: "a switch decided on the
/// old word then fails instead of moving the task the wrong way". (The kernel's switch points
/// all run with preemption disabled, so `klp_synchronize_transition()` in
/// `klp_reverse_transition()` waits for them.)
#[test]
fn a_self_check_preempted_across_two_reversals_does_not_switch_on_a_stale_walk() {
    let funcs = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(1);
    // Innermost first: the task-work callback's caller, then the original f1.
    b.task(1).stack.borrow_mut().extend([CALLER + 4, F1 + 0x10, CALLER + 8]);
    let storage = EngineStorage::<8, 32>::new();
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let engine = RefCell::new(Engine::new(&live));
    engine.borrow_mut().enable(&patch, &b).unwrap();
    assert!(b.task(1).state.pending());

    let walker = Preempted {
        at: RefCell::new(Box::new(|depth| {
            if depth == 1 || depth == 3 {
                engine.borrow_mut().reverse(&b).unwrap();
            }
        })),
    };
    let verdict = live.task_work(b.task(1), &walker);
    assert_eq!(engine.borrow().transition().map(|t| t.target), Some(PatchState::Patched));
    assert_eq!(
        b.task(1).state.state(),
        PatchState::Unpatched,
        "switched to the patched universe with the original f1 on its stack ({verdict:?})"
    );
    assert_ne!(verdict, Verdict::Switched(PatchState::Patched));
}

/// The same across the end of one transition and the start of the next: the task's own check
/// starts in a transition for `a` (whose pre-filter it reads once, at the start), the task is
/// preempted, the sweep switches it, `a` completes and `b` starts; the task's word is again
/// "unpatched, target patched", bit for bit the one it read. The rest of its walk was checked
/// against `a`'s code, so the original `f2` (`b`'s) on its stack went unseen and the task was
/// switched into `b`'s universe on top of it.
#[test]
fn a_self_check_preempted_across_a_completion_and_the_next_enable_does_not_switch() {
    let fa = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let oa = [Object::new(ObjectId::VMLINUX, "vmlinux", &fa)];
    let a = Patch::new(PatchId(1), "a", &oa);
    let fb = [Func::new("f2", r(F2, 0x40), r(0x9100, 0x80))];
    let ob = [Object::new(ObjectId::VMLINUX, "vmlinux", &fb)];
    let pb = Patch::new(PatchId(2), "b", &ob);
    let b = TestBackend::with_tasks(1);
    b.task(1).stack.borrow_mut().extend([CALLER + 4, F2 + 0x10, CALLER + 8]);
    let storage = EngineStorage::<8, 32>::new();
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let engine = RefCell::new(Engine::new(&live));
    engine.borrow_mut().enable(&a, &b).unwrap();

    let walker = Preempted {
        at: RefCell::new(Box::new(|depth| {
            if depth == 1 {
                let mut engine = engine.borrow_mut();
                assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
                engine.enable(&pb, &b).unwrap();
            }
        })),
    };
    let verdict = live.task_work(b.task(1), &walker);
    assert_eq!(engine.borrow().transition().map(|t| (t.patch, t.target)), Some((PatchId(2), PatchState::Patched)));
    assert_eq!(
        b.task(1).state.state(),
        PatchState::Unpatched,
        "switched into b's universe with the original f2 on its stack ({verdict:?})"
    );
}
