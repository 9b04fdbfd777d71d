//! A task's own check (task work, `cond_resched()`) preempted in the middle of its walk while
//! the engine moves on: its switch is a compare-and-swap from the word it read before the
//! walk, and must fail when the engine rewrote the word in between even if the word came back
//! to the same universe and target (the generation in the word, `5e81f2e`). Backends also keep
//! these checks inside a section `Scheduler::synchronize` waits for, as the kernel does
//! (`Live::task_work`); these tests play a backend that does not.

mod common;

use common::{r, TestBackend, TestTask};
use livepatch_core::backend::{ErrorKind, StackWalker, WalkError};
use livepatch_core::sweep::{Straggler, Verdict};
use livepatch_core::{
    CodeAddr, Engine, EngineStorage, Func, Live, Object, ObjectId, Patch, PatchId, PatchState, Policy,
};
use std::cell::RefCell;
use std::ops::ControlFlow;

const F1: usize = 0x1000;
const F2: usize = 0x1100;
const CALLER: usize = 0x5000;

fn quiet(_: &Straggler) {}

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
