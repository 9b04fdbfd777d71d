//! The transition engine driven through its public API by a tiny backend: enable, disable,
//! reverse, force, atomic replace, callbacks, late and going objects, stall reports and every
//! refusal path.

mod common;

use common::{r, CallbackLog, TestBackend};
use livepatch_core::backend::{ErrorKind, Parts, StackWalker, TaskFlags, TaskKind, WalkError};
use livepatch_core::patch::CallbackError;
use livepatch_core::sweep::{FuncName, StallReason, Straggler};
use livepatch_core::transition::Progress;
use livepatch_core::{
    CodeAddr, Engine, EngineStorage, Error, Func, Live, Object, ObjectId, Patch, PatchId, PatchState, Policy, Redirect,
    SlotId,
};
use std::cell::RefCell;

/// The one-function patch most tests use: `f1` at `F1` replaced by code at `0x9000`.
macro_rules! one_func_patch {
    ($funcs:ident, $objs:ident, $patch:ident) => {
        let $funcs = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
        let $objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &$funcs)];
        let $patch = Patch::new(PatchId(1), "p1", &$objs);
    };
}

/// Storage for 8 functions and 32 ranges, the read side with `policy`, and an engine.
macro_rules! engine {
    ($storage:ident, $live:ident, $engine:ident, $policy:expr) => {
        let $storage = EngineStorage::<8, 32>::new();
        let $live = Live::new(&$storage, $policy);
        #[allow(unused_mut)]
        let mut $engine = Engine::new(&$live);
    };
}

const F1: usize = 0x1000;
const F2: usize = 0x1100;
const F3: usize = 0x1200;
const CALLER: usize = 0x5000;

fn quiet(_: &Straggler) {}

fn collect<'o, 'n>(out: &'o RefCell<Vec<Straggler<'n>>>) -> impl FnMut(&Straggler<'n>) + 'o {
    move |s| out.borrow_mut().push(*s)
}

fn call<'a>(live: &Live<'a>, entry: usize, b: &TestBackend, task: u32) -> Redirect {
    let slot = live.slot_at(CodeAddr(entry)).expect("function is hooked");
    live.redirect(slot, &b.task(task).state, CodeAddr(CALLER))
}

fn variant(addr: usize) -> Redirect {
    Redirect::Variant(CodeAddr(addr))
}

#[test]
fn enable_completes_when_no_task_runs_old_code_and_redirects_afterwards() {
    let funcs = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80)), Func::new("f2", r(F2, 0x40), r(0x9100, 0x80))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(4);
    b.task(1).stack.borrow_mut().extend([CALLER + 4, CALLER + 8]);
    engine!(storage, live, engine, Policy::LINUX_6_12);

    engine.enable(&patch, &b).unwrap();
    assert_eq!(b.hooked(), [r(F1, 0x40), r(F2, 0x40)]);
    assert_eq!(live.transition_target(), Some(PatchState::Patched));
    assert!(patch.is_enabled() && patch.is_registered());
    // Before the sweep, tasks are unpatched and run the original.
    assert_eq!(call(&live, F1, &b, 1), Redirect::Original);
    assert!(b.task(1).state.pending());

    let progress = engine.try_complete(&b, quiet).unwrap();
    let Progress::Complete(summary) = progress else { panic!("{progress:?}") };
    assert_eq!((summary.visited, summary.switched, summary.remaining), (4, 4, 0));
    assert_eq!(summary.walks, 4);
    assert!(engine.transition().is_none());
    assert_eq!(live.transition_target(), None);
    assert_eq!(b.task(1).state.state(), PatchState::Idle);
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000));
    assert_eq!(call(&live, F2, &b, 3), variant(0x9100));
    assert!(funcs.iter().all(Func::is_patched));
    // The index holds both originals and both variants.
    assert_eq!(live.patched_set().len(), 4);
}

#[test]
fn a_task_sleeping_in_the_original_blocks_and_is_reported_until_it_leaves() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(3);
    b.task(2).stack.borrow_mut().extend([0x7000, F1 + 0x10, CALLER + 4]);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();

    let stalls = RefCell::new(Vec::new());
    let Progress::Pending(summary) = engine.try_complete(&b, collect(&stalls)).unwrap() else { panic!() };
    assert_eq!((summary.switched, summary.remaining, summary.on_stack), (2, 1, 1));
    let stalls = stalls.into_inner();
    assert_eq!(stalls.len(), 1);
    assert_eq!(stalls[0].task.0, 2);
    let StallReason::OnStack { function, variant: in_variant, frame, addr, .. } = stalls[0].reason else { panic!() };
    assert_eq!((function, in_variant, frame, addr), (r(F1, 0x40), None, 1, CodeAddr(F1 + 0x10)));
    // The report names the function and its object, as the patch descriptor does.
    assert_eq!(stalls[0].name, Some(FuncName { object: "vmlinux", function: "f1" }));
    assert_eq!(stalls[0].to_string(), "task 2 (User): in function f1 (vmlinux, [0x1000, 0x1040)) at frame 1 (0x1010)");
    assert_eq!(b.retries.borrow().last(), Some(&1_000_000_000));
    // Switched tasks already run the new code; the sleeper still runs the old.
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000));
    assert_eq!(call(&live, F1, &b, 2), Redirect::Original);

    b.task(2).stack.borrow_mut().clear();
    assert!(matches!(engine.try_complete(&b, quiet).unwrap(), Progress::Complete(_)));
}

#[test]
fn a_stall_report_names_the_function_by_the_first_registered_patch_in_every_attempt() {
    // `p1`, registered first, replaces a relocatable function of a module that is not loaded;
    // `p2` replaces `f1` in vmlinux, and a task sleeps in `f1`.
    const MODULE: u32 = 7;
    let p1_funcs = [Func::relocatable("g", r(0x9400, 0x80))];
    let p1_objs = [Object::new(ObjectId(MODULE), "mod7", &p1_funcs)];
    let p1 = Patch::new(PatchId(1), "p1", &p1_objs);
    let p2_funcs = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let p2_objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &p2_funcs)];
    let p2 = Patch::new(PatchId(2), "p2", &p2_objs);
    let b = TestBackend::with_tasks(2);
    b.unloaded.borrow_mut().insert(MODULE);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&p1, &b).unwrap();
    assert!(matches!(engine.try_complete(&b, quiet).unwrap(), Progress::Complete(_)));
    b.task(1).stack.borrow_mut().extend([F1 + 0x10, CALLER + 4]);
    engine.enable(&p2, &b).unwrap();

    let mut names = || {
        let stalls = RefCell::new(Vec::new());
        assert!(matches!(engine.try_complete(&b, collect(&stalls)).unwrap(), Progress::Pending(_)));
        stalls.into_inner().iter().map(|s| s.name.map(|n| (n.object, n.function))).collect::<Vec<_>>()
    };
    let by_p2 = Some(("vmlinux", "f1"));
    assert_eq!(names(), [by_p2]);
    assert_eq!(names(), [by_p2], "the same attempt again");
    // Between two attempts `p1`'s function is resolved to `f1`'s range: `p1` comes first in
    // the patch list, so the next attempt's report names `f1` by `p1`'s descriptor.
    p1_funcs[0].resolve(r(F1, 0x40)).unwrap();
    assert_eq!(names(), [Some(("mod7", "g"))]);
}

#[test]
fn the_innermost_frame_in_old_code_is_reported_whatever_the_number_of_functions() {
    // A stack check compares frames with the listed ranges while few functions are patched,
    // and uses the bounds, blocks and index beyond: the answer is the same for every count.
    for n in 1..=20usize {
        let old = |i: usize| r(0x10_0000 + i * 0x2000, 0x40);
        let funcs: Vec<Func> = (0..n).map(|i| Func::new("f", old(i), r(0x80_0000 + i * 0x100, 0x80))).collect();
        let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
        let patch = Patch::new(PatchId(1), "p", &objs);
        let b = TestBackend::with_tasks(1);
        let (first, last) = (old(0), old(n - 1));
        // Innermost first: the bytes just outside the first and the last function, then the
        // last byte of the last one, then the first byte of the first one.
        b.task(1).stack.borrow_mut().extend([
            first.start().get() - 1,
            first.end().get(),
            last.end().get(),
            last.end().get() - 1,
            first.start().get(),
        ]);
        let storage = EngineStorage::<32, 128>::new();
        let live = Live::new(&storage, Policy::LINUX_6_12);
        let mut engine = Engine::new(&live);
        engine.enable(&patch, &b).unwrap();
        let stalls = RefCell::new(Vec::new());
        assert!(matches!(engine.try_complete(&b, collect(&stalls)).unwrap(), Progress::Pending(_)));
        let stalls = stalls.into_inner();
        let StallReason::OnStack { function, variant, frame, addr, .. } = stalls[0].reason else { panic!("{n}") };
        assert_eq!((function, variant, frame, addr), (last, None, 3, CodeAddr(last.end().get() - 1)), "{n}");
    }
}

#[test]
fn running_unreliable_and_deep_tasks_are_reported_with_their_reason() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(4);
    b.task(1).running.set(true);
    b.task(2).unreliable.set(true);
    b.task(3).stack.borrow_mut().extend(std::iter::repeat_n(CALLER, 101));
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    let stalls = RefCell::new(Vec::new());
    let Progress::Pending(s) = engine.try_complete(&b, collect(&stalls)).unwrap() else { panic!() };
    assert_eq!((s.running, s.unreliable, s.too_deep, s.switched), (1, 1, 1, 1));
    let reasons: Vec<_> = stalls.borrow().iter().map(|s| s.reason).collect();
    assert_eq!(
        reasons,
        [
            StallReason::Running,
            StallReason::Unreliable(livepatch_core::backend::ErrorKind::Unreliable),
            StallReason::TooDeep
        ]
    );
    // The running task switches itself at exit to user mode.
    assert_eq!(live.exit_to_user(&b.task(1).state), Some(PatchState::Patched));
    assert_eq!(live.exit_to_user(&b.task(1).state), None, "not pending any more");
}

#[test]
fn a_stall_report_says_why_in_words() {
    // What a user reads in the log: the task, its kind, whether it exits, and the reason.
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(3);
    b.task(1).running.set(true);
    b.task(2).unreliable.set(true);
    b.task(2).flags.set(TaskFlags::EXITING);
    b.task(3).stack.borrow_mut().extend(std::iter::repeat_n(CALLER, 101));
    engine!(storage, live, engine, Policy { visit_exiting: true, ..Policy::LINUX_6_12 });
    engine.enable(&patch, &b).unwrap();
    let stalls = RefCell::new(Vec::new());
    assert!(engine.try_complete(&b, collect(&stalls)).unwrap().is_pending());
    let reports: Vec<String> = stalls.borrow().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        reports,
        [
            "task 1 (User): running",
            "task 2 (User, exiting): unreliable stack (unreliable stack)",
            "task 3 (User): stack too deep"
        ]
    );
    // The reasons this backend does not produce, and a frame in code no registered patch names
    // (the report then gives the ranges alone).
    let function = r(F1, 0x40);
    let cases = [
        (StallReason::AwaitingSwitchPoint, "awaiting a switch point"),
        (StallReason::Raced, "changed while checked"),
        (
            StallReason::OnStack {
                slot: SlotId(0),
                function,
                variant: Some(r(0x9000, 0x80)),
                frame: 2,
                addr: CodeAddr(0x9010),
            },
            "in variant [0x9000, 0x9080) of function [0x1000, 0x1040) at frame 2 (0x9010)",
        ),
        (
            StallReason::OnStack { slot: SlotId(0), function, variant: None, frame: 0, addr: CodeAddr(F1 + 4) },
            "in function [0x1000, 0x1040) at frame 0 (0x1004)",
        ),
    ];
    for (reason, words) in cases {
        assert_eq!(reason.to_string(), words);
    }
}

/// `TestBackend`'s walker, except that the task `victim` switches itself at exit to user mode
/// (on another CPU, say) while its stack is walked: the word the sweep decided on is stale.
struct SwitchesWhileWalked<'b, 'l> {
    backend: &'b TestBackend,
    live: &'b Live<'l>,
    victim: u32,
}

impl StackWalker for SwitchesWhileWalked<'_, '_> {
    type Task = common::TestTask;
    type Error = ErrorKind;

    fn walk<F>(&self, task: &common::TestTask, max_depth: usize, frame: F) -> Result<usize, WalkError<ErrorKind>>
    where
        F: FnMut(CodeAddr) -> std::ops::ControlFlow<()>,
    {
        if task.id.0 == self.victim {
            assert_eq!(self.live.exit_to_user(&task.state), Some(PatchState::Patched));
        }
        self.backend.walk(task, max_depth, frame)
    }
}

#[test]
fn a_task_whose_word_changes_during_its_check_is_left_to_the_next_pass() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(3);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    let walker = SwitchesWhileWalked { backend: &b, live: &live, victim: 2 };
    let parts = Parts { scheduler: &b, walker: &walker, tracer: &b };
    let stalls = RefCell::new(Vec::new());
    let Progress::Pending(s) = engine.try_complete(&parts, collect(&stalls)).unwrap() else { panic!() };
    assert_eq!((s.switched, s.raced, s.remaining), (2, 1, 1));
    let reasons: Vec<_> = stalls.borrow().iter().map(|s| (s.task.0, s.reason)).collect();
    assert_eq!(reasons, [(2, StallReason::Raced)]);
    // The task switched itself once; the sweep's switch, decided on the old word, failed.
    assert_eq!((b.task(2).state.state(), b.task(2).state.pending()), (PatchState::Patched, false));
    // The next pass finds it switched.
    let Progress::Complete(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!((s.switched, s.raced, s.remaining), (0, 0, 0));
}

#[test]
fn stragglers_are_kicked_every_nth_pass_except_those_that_ignore_signals() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(2);
    b.task(1).stack.borrow_mut().push(F1 + 1);
    b.task(2).stack.borrow_mut().push(F1 + 1);
    b.task(2).flags.set(TaskFlags::IGNORES_SIGNALS);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    for pass in 1..=16 {
        let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
        assert_eq!(s.pass, pass);
        assert_eq!(s.kicked, u32::from(pass == 16), "pass {pass}");
    }
    assert_eq!(b.kicks.borrow().iter().map(|t| t.0).collect::<Vec<_>>(), [1]);
}

#[test]
fn a_kick_signals_user_tasks_running_or_not_and_wakes_only_sleeping_kthreads() {
    // As Linux's `klp_send_signals`: a fake signal for every pending user task (a running one
    // takes it on its way back to user mode) and a wake-up for a kthread, which only does
    // something to a sleeping one, so a running kthread is left alone; a task flagged as
    // ignoring signals gets nothing.
    one_func_patch!(funcs, objs, patch);
    let mut b = TestBackend::with_tasks(3);
    b.tasks.push(common::TestTask::new(4, TaskKind::Kthread));
    b.tasks.push(common::TestTask::new(5, TaskKind::Kthread));
    b.task(1).running.set(true);
    b.task(2).stack.borrow_mut().push(F1 + 1);
    b.task(3).stack.borrow_mut().push(F1 + 1);
    b.task(3).flags.set(TaskFlags::IGNORES_SIGNALS);
    b.task(4).running.set(true);
    b.task(5).stack.borrow_mut().push(F1 + 1);
    engine!(storage, live, engine, Policy { signal_every: Some(1), ..Policy::LINUX_6_12 });
    engine.enable(&patch, &b).unwrap();
    let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!((s.remaining, s.kicked), (5, 0), "the first pass only looks");
    let stalls = RefCell::new(Vec::new());
    let Progress::Pending(s) = engine.try_complete(&b, collect(&stalls)).unwrap() else { panic!() };
    assert_eq!((s.remaining, s.kicked), (5, 3));
    assert_eq!(b.kicks.borrow().iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2, 5]);
    let kicked: Vec<_> = stalls.borrow().iter().map(|s| (s.task.0, s.kicked)).collect();
    assert_eq!(kicked, [(1, true), (2, true), (3, false), (4, false), (5, true)]);
}

#[test]
fn disable_restores_the_original_removes_hooks_and_frees_slots() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(2);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());

    // A task sleeping in the variant keeps the disable pending.
    b.task(1).stack.borrow_mut().push(0x9010);
    engine.disable(&patch, &b).unwrap();
    assert!(!patch.is_enabled() && patch.is_registered());
    let stalls = RefCell::new(Vec::new());
    assert!(!engine.try_complete(&b, collect(&stalls)).unwrap().is_complete());
    let StallReason::OnStack { variant: in_variant, .. } = stalls.borrow()[0].reason else { panic!() };
    assert_eq!(in_variant, Some(r(0x9000, 0x80)));
    b.task(1).stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());

    assert!(b.hooked().is_empty());
    assert!(!patch.is_registered() && !funcs[0].is_patched());
    assert!(live.patched_set().is_empty());
    assert!(live.slot_at(CodeAddr(F1)).is_none());
    // It can be enabled again.
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000));
}

#[test]
fn a_hook_the_backend_cannot_remove_is_counted_and_runs_the_original() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(1);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(engine.hook_errors(), 0);

    b.fail_remove.set(true);
    engine.disable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(engine.hook_errors(), 1, "the refused removal is counted");
    assert!(!patch.is_registered());
    // The hook stays, and calls through it run the original.
    assert_eq!(b.hooked(), [r(F1, 0x40)]);
    assert_eq!(call(&live, F1, &b, 1), Redirect::Original);

    // The slot is still the function's: enabling it again stacks there, with no second hook.
    b.fail_remove.set(false);
    let installs = b.installs.get();
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(b.installs.get(), installs);
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000));
    assert_eq!(engine.hook_errors(), 1);
}

#[test]
fn a_replace_patch_puts_no_nop_on_a_slot_left_hooked_and_empty() {
    // `f1`'s hook could not be removed when its patch went: its slot stays, with nothing
    // stacked, running the original. A cumulative patch (of `f2` only) has nothing to revert
    // there, so a task asleep in `f1` is not in code being switched away from.
    one_func_patch!(funcs, objs, patch);
    let f2 = [Func::new("f2", r(F2, 0x40), r(0x9100, 0x80))];
    let objs2 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f2)];
    let replace = Patch::new(PatchId(2), "replace", &objs2).replacing();
    let b = TestBackend::with_tasks(2);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    b.fail_remove.set(true);
    engine.disable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!((engine.hook_errors(), b.hooked()), (1, vec![r(F1, 0x40)]));

    b.task(2).stack.borrow_mut().extend([F1 + 4, CALLER]);
    engine.enable(&replace, &b).unwrap();
    let progress = engine.try_complete(&b, quiet).unwrap();
    assert!(progress.is_complete(), "{progress:?}");
    assert_eq!(call(&live, F1, &b, 2), Redirect::Original);
    assert_eq!(call(&live, F2, &b, 2), variant(0x9100));
}

#[test]
fn refused_operations_change_nothing() {
    one_func_patch!(funcs, objs, patch);
    let other_funcs = [Func::new("f2", r(F2, 0x40), r(0x9100, 0x80))];
    let other_objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &other_funcs)];
    let other = Patch::new(PatchId(2), "p2", &other_objs);
    let partial_funcs = [Func::new("f1-part", r(F1 + 8, 0x40), r(0xa000, 0x80))];
    let partial_objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &partial_funcs)];
    let partial = Patch::new(PatchId(3), "p3", &partial_objs);
    let clash_funcs = [Func::new("f3", r(F3, 0x40), r(0x9010, 0x10))];
    let clash_objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &clash_funcs)];
    let clash = Patch::new(PatchId(4), "p4", &clash_objs);

    let b = TestBackend::with_tasks(2);
    b.task(1).stack.borrow_mut().push(F1 + 1);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    assert_eq!(engine.reverse(&b), Err(Error::NoTransition));
    assert_eq!(engine.force(&b), Err(Error::NoTransition));
    assert_eq!(engine.try_complete(&b, quiet), Err(Error::NoTransition));
    assert_eq!(engine.disable(&patch, &b), Err(Error::NotEnabled(PatchId(1))));

    engine.enable(&patch, &b).unwrap();
    assert_eq!(engine.enable(&other, &b), Err(Error::Busy));
    assert_eq!(engine.disable(&patch, &b), Err(Error::Busy));
    assert!(!other.is_registered());
    b.task(1).stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());

    assert_eq!(engine.enable(&patch, &b), Err(Error::AlreadyEnabled(PatchId(1))));
    assert_eq!(engine.enable(&partial, &b), Err(Error::Conflict(r(F1 + 8, 0x40))));
    assert_eq!(engine.enable(&clash, &b), Err(Error::Conflict(r(0x9010, 0x10))));
    assert_eq!(engine.disable(&other, &b), Err(Error::NotEnabled(PatchId(2))));
    assert!(engine.transition().is_none());
    assert_eq!(engine.patches().count(), 1);
    assert_eq!(b.hooked(), [r(F1, 0x40)]);
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000));
    assert_eq!(live.slot_at(CodeAddr(0x9000)), None, "a variant is not a hook site");
    assert_eq!(live.redirect(SlotId(999), &b.task(1).state, CodeAddr(0)), Redirect::Original);
}

/// The kernel accepts a patch that replaces no function (`test_klp_callbacks_demo2`, every
/// `test_klp_state*` module): its callbacks run at the four points, it stacks on a function
/// patch, and as a cumulative patch it reverts every function the patches it replaces changed.
#[test]
fn an_engine_refuses_to_disable_a_patch_enabled_by_another() {
    // Two engines over their own storage (a kernel has one; a process may run several): a
    // patch enabled by the first is not the second's to remove.
    let storage = EngineStorage::<8, 32>::new();
    let other_storage = EngineStorage::<8, 32>::new();
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(1);
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let other_live = Live::new(&other_storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    let mut other = Engine::new(&other_live);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert!(patch.is_enabled());

    assert_eq!(other.disable(&patch, &b), Err(Error::NotEnabled(PatchId(1))));
    assert!(other.transition().is_none() && other_live.transition_target().is_none());
    assert!(patch.is_enabled() && patch.is_registered());
    assert_eq!(b.task(1).state.state(), PatchState::Idle);
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000));
}

#[test]
fn a_patch_that_replaces_no_function_runs_its_callbacks_and_stacks() {
    let log = CallbackLog::default();
    let none: [Func<'_>; 0] = [];
    let cb_objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &none).with_callbacks(&log)];
    let callbacks_only = Patch::new(PatchId(2), "callbacks", &cb_objs);
    let replace_objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &none).with_callbacks(&log)];
    let replace = Patch::new(PatchId(3), "replace", &replace_objs).replacing();
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(2);
    engine!(storage, live, engine, Policy::LINUX_6_12);

    engine.enable(&callbacks_only, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert!(callbacks_only.is_enabled() && b.hooked().is_empty());
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    engine.disable(&callbacks_only, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(log.calls(), ["pre_patch 2/0", "post_patch 2/0", "pre_unpatch 2/0", "post_unpatch 2/0"]);
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000), "the function patch stays");

    // A cumulative patch with no function replaces `patch`: f1 runs the original again.
    engine.enable(&replace, &b).unwrap();
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000), "not switched yet");
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(engine.patches().map(|p| p.id()).collect::<Vec<_>>(), [PatchId(3)]);
    assert!(!funcs[0].is_patched() && b.hooked().is_empty() && live.patched_set().is_empty());
    engine.disable(&replace, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(engine.patches().count(), 0);
    assert_eq!(log.calls()[4..], ["pre_patch 3/0", "post_patch 3/0", "pre_unpatch 3/0", "post_unpatch 3/0"]);
}

#[test]
fn storage_limits_are_typed_errors() {
    // Storage outlives the descriptors: their nodes may point into it (nop nodes).
    let small_slots = EngineStorage::<2, 32>::new();
    let small_index = EngineStorage::<8, 5>::new();
    let funcs = [
        Func::new("f1", r(F1, 0x40), r(0x9000, 0x80)),
        Func::new("f2", r(F2, 0x40), r(0x9100, 0x80)),
        Func::new("f3", r(F3, 0x40), r(0x9200, 0x80)),
    ];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(1);

    let live_slots = Live::new(&small_slots, Policy::LINUX_6_12);
    let live_index = Live::new(&small_index, Policy::LINUX_6_12);
    {
        let mut engine = Engine::new(&live_slots);
        assert_eq!(engine.enable(&patch, &b), Err(Error::NoSlot));
        assert!(!patch.is_registered());
    }
    let mut engine = Engine::new(&live_index);
    assert!(matches!(engine.enable(&patch, &b), Err(Error::Index(_))));
    assert!(!patch.is_registered() && b.hooked().is_empty());
}

#[test]
fn a_patch_that_does_not_fit_is_refused_before_any_callback_or_task_write() {
    // Refused, not cancelled: too few free slots or index entries is found before the commit
    // point, so no `pre_patch` runs, no hook is installed and no task's word is rewritten
    // (not even in a new generation, which a cancelled transition would leave behind).
    let small_slots = EngineStorage::<2, 32>::new();
    let small_index = EngineStorage::<8, 5>::new();
    let exact = EngineStorage::<3, 6>::new();
    let live_exact = Live::new(&exact, Policy::LINUX_6_12);
    let log = CallbackLog::default();
    let funcs = [
        Func::new("f1", r(F1, 0x40), r(0x9000, 0x80)),
        Func::new("f2", r(F2, 0x40), r(0x9100, 0x80)),
        Func::new("f3", r(F3, 0x40), r(0x9200, 0x80)),
    ];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs).with_callbacks(&log)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(2);
    let word = |t: u32| b.task(t).state.load(std::sync::atomic::Ordering::Relaxed);
    let before = [word(1), word(2)];
    let live_slots = Live::new(&small_slots, Policy::LINUX_6_12);
    let live_index = Live::new(&small_index, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live_slots);
    assert_eq!(engine.enable(&patch, &b), Err(Error::NoSlot), "3 functions, 2 slots");
    let mut other = Engine::new(&live_index);
    assert_eq!(
        other.enable(&patch, &b),
        Err(Error::Index(livepatch_core::patched_set::IndexError::Full { capacity: 5 })),
        "3 originals and 3 variants, 5 entries"
    );
    assert!(log.calls().is_empty(), "{:?}", log.calls());
    assert_eq!(b.installs.get(), 0);
    assert_eq!([word(1), word(2)], before);
    assert!(!patch.is_registered() && engine.transition().is_none() && other.transition().is_none());

    // Exactly enough: 3 slots, 6 entries.
    let mut engine = Engine::new(&live_exact);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(live_exact.patched_set().len(), 6);
    assert_eq!(call(&live_exact, F3, &b, 1), variant(0x9200));
}

#[test]
fn reversing_an_enable_returns_every_task_and_skips_pre_unpatch() {
    let log = CallbackLog::default();
    let funcs = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs).with_callbacks(&log)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(3);
    b.task(3).stack.borrow_mut().push(F1 + 4); // blocks the enable
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(b.task(1).state.state(), PatchState::Patched);

    // Task 1 now sleeps in the new variant: the reversal must wait for it.
    b.task(1).stack.borrow_mut().push(0x9004);
    engine.reverse(&b).unwrap();
    let info = engine.transition().unwrap();
    assert_eq!((info.target, info.reversed, info.passes), (PatchState::Unpatched, true, 0));
    assert!(!patch.is_enabled());
    // Task 3 (never switched) is not pending; task 1 is.
    assert!(!b.task(3).state.pending() && b.task(1).state.pending());
    let stalls = RefCell::new(Vec::new());
    assert!(!engine.try_complete(&b, collect(&stalls)).unwrap().is_complete());
    assert_eq!(stalls.borrow().iter().map(|s| s.task.0).collect::<Vec<_>>(), [1]);
    b.task(1).stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert!(!patch.is_registered() && b.hooked().is_empty());
    assert_eq!(log.calls(), ["pre_patch 1/0", "post_unpatch 1/0"]);
}

#[test]
fn reversing_a_disable_keeps_the_patch_and_runs_post_patch() {
    let log = CallbackLog::default();
    let funcs = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs).with_callbacks(&log)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(2);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    b.task(2).stack.borrow_mut().push(0x9001);
    engine.disable(&patch, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    engine.reverse(&b).unwrap();
    assert!(patch.is_enabled());
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert!(patch.is_registered());
    assert_eq!(call(&live, F1, &b, 2), variant(0x9000));
    assert_eq!(log.calls(), ["pre_patch 1/0", "post_patch 1/0", "pre_unpatch 1/0", "post_patch 1/0"]);
}

#[test]
fn a_failing_pre_patch_cancels_the_enable_and_unwinds_earlier_objects() {
    let ok = CallbackLog::default();
    let bad = CallbackLog::failing_for(ObjectId(7));
    let f_a = [Func::new("a", r(F1, 0x40), r(0x9000, 0x80))];
    let f_b = [Func::new("b", r(F2, 0x40), r(0x9100, 0x80))];
    let objs = [
        Object::new(ObjectId::VMLINUX, "vmlinux", &f_a).with_callbacks(&ok),
        Object::new(ObjectId(7), "mod7", &f_b).with_callbacks(&bad),
    ];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(2);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    assert_eq!(engine.enable(&patch, &b), Err(Error::Callback { object: ObjectId(7), error: CallbackError(-19) }));
    assert_eq!(ok.calls(), ["pre_patch 1/0", "post_unpatch 1/0"]);
    assert_eq!(bad.calls(), ["pre_patch 1/7"], "no post_unpatch for the object whose pre_patch failed");
    assert!(engine.transition().is_none() && !patch.is_registered() && !patch.is_enabled());
    assert!(b.hooked().is_empty() && live.patched_set().is_empty());
    assert!(!f_a[0].is_patched());
    assert_eq!(b.task(1).state.state(), PatchState::Idle);
}

#[test]
fn a_failing_hook_install_cancels_the_enable() {
    let funcs = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80)), Func::new("f2", r(F2, 0x40), r(0x9100, 0x80))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(1);
    b.fail_install.set(true);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    assert_eq!(engine.enable(&patch, &b), Err(Error::Backend(livepatch_core::backend::ErrorKind::Hook)));
    assert!(!patch.is_registered() && funcs.iter().all(|f| !f.is_patched()));
    assert!(storage.slots().iter().all(|s| s.original().is_none()));
    b.fail_install.set(false);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
}

#[test]
fn stacked_patches_redirect_to_the_newest_and_any_can_be_disabled() {
    let f_a = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let o_a = [Object::new(ObjectId::VMLINUX, "vmlinux", &f_a)];
    let a = Patch::new(PatchId(1), "a", &o_a);
    let f_b = [Func::new("f1", r(F1, 0x40), r(0xa000, 0x80)), Func::new("f2", r(F2, 0x40), r(0xa100, 0x80))];
    let o_b = [Object::new(ObjectId::VMLINUX, "vmlinux", &f_b)];
    let bp = Patch::new(PatchId(2), "b", &o_b);
    let b = TestBackend::with_tasks(2);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&a, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    // Task 1 sleeps in patch a's variant: enabling b must wait for it (it is the old code).
    b.task(1).stack.borrow_mut().push(0x9008);
    engine.enable(&bp, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000), "unpatched task runs the variant below");
    assert_eq!(call(&live, F1, &b, 2), variant(0xa000));
    assert_eq!(call(&live, F2, &b, 1), Redirect::Original);
    b.task(1).stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(call(&live, F1, &b, 1), variant(0xa000));

    // Disable the older patch, which is below b: b keeps running.
    engine.disable(&a, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(call(&live, F1, &b, 1), variant(0xa000));
    assert_eq!(engine.patches().map(|p| p.id()).collect::<Vec<_>>(), [PatchId(2)]);
    assert_eq!(b.hooked().len(), 2);
    engine.disable(&bp, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert!(b.hooked().is_empty());
}

#[test]
fn atomic_replace_retires_stacked_patches_and_reverts_uncovered_functions() {
    let f1 = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let o1 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f1)];
    let p1 = Patch::new(PatchId(1), "p1", &o1);
    let f2 = [Func::new("f2", r(F2, 0x40), r(0x9100, 0x80))];
    let o2 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f2)];
    let p2 = Patch::new(PatchId(2), "p2", &o2);
    let f3 = [Func::new("f3", r(F3, 0x40), r(0x9200, 0x80))];
    let o3 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f3)];
    let p3 = Patch::new(PatchId(3), "p3", &o3);
    // The cumulative patch keeps f1 (new version) and drops f2 and f3.
    let fr = [Func::new("f1", r(F1, 0x40), r(0xb000, 0x80))];
    let or = [Object::new(ObjectId::VMLINUX, "vmlinux", &fr)];
    let replace = Patch::new(PatchId(4), "replace", &or).replacing();
    let b = TestBackend::with_tasks(2);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    for p in [&p1, &p2, &p3] {
        engine.enable(p, &b).unwrap();
        assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    }
    // A task sleeping in p2's variant of f2 blocks the replace: f2 goes back to the original.
    b.task(2).stack.borrow_mut().push(0x9110);
    engine.enable(&replace, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(call(&live, F2, &b, 1), Redirect::Original, "nop: switched task runs the original");
    assert_eq!(call(&live, F2, &b, 2), variant(0x9100));
    b.task(2).stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());

    assert_eq!(engine.patches().map(|p| p.id()).collect::<Vec<_>>(), [PatchId(4)]);
    assert!(!p1.is_enabled() && !p2.is_registered() && !p3.is_registered());
    assert_eq!(call(&live, F1, &b, 1), variant(0xb000));
    assert_eq!(b.hooked(), [r(F1, 0x40)], "nops discarded, their hooks removed");
    assert!(live.slot_at(CodeAddr(F2)).is_none());
    // The replaced patches can be enabled again later.
    engine.enable(&p2, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(call(&live, F2, &b, 1), variant(0x9100));
}

#[test]
fn reversing_an_atomic_replace_keeps_the_replaced_patches() {
    let f1 = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let o1 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f1)];
    let p1 = Patch::new(PatchId(1), "p1", &o1);
    let fr = [Func::new("f2", r(F2, 0x40), r(0xb000, 0x80))];
    let or = [Object::new(ObjectId::VMLINUX, "vmlinux", &fr)];
    let replace = Patch::new(PatchId(4), "replace", &or).replacing();
    let b = TestBackend::with_tasks(2);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&p1, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    b.task(1).stack.borrow_mut().push(0x9001);
    engine.enable(&replace, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    engine.reverse(&b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(engine.patches().map(|p| p.id()).collect::<Vec<_>>(), [PatchId(1)]);
    assert_eq!(call(&live, F1, &b, 2), variant(0x9000));
    assert_eq!(b.hooked(), [r(F1, 0x40)]);
}

#[test]
fn force_switches_everyone_and_marks_patches_forced() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(3);
    b.task(1).stack.borrow_mut().push(F1 + 1);
    b.task(2).running.set(true);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    assert!(!patch.is_forced(), "only a forced transition marks its patches");
    let Progress::Complete(s) = engine.force(&b).unwrap() else { panic!() };
    // Every task visited; the two still pending switched.
    assert_eq!((s.visited, s.switched), (3, 2));
    assert!(patch.is_forced() && engine.transition().is_none());
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000));
}

#[test]
fn force_after_m_passes_is_a_policy() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(1);
    b.task(1).stack.borrow_mut().push(F1 + 1);
    engine!(storage, live, engine, Policy { force_after: Some(3), ..Policy::LINUX_6_12 });
    engine.enable(&patch, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    let Progress::Complete(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    // The pass found the task blocked; the force switched it.
    assert_eq!((s.pass, s.on_stack, s.switched), (3, 1, 1));
    assert!(patch.is_forced());
}

#[test]
fn exiting_tasks_are_skipped_by_linux_and_visited_by_the_improved_policy() {
    let b = TestBackend::with_tasks(2);
    b.task(2).flags.set(TaskFlags::EXITING);
    b.task(2).stack.borrow_mut().push(F1 + 2);
    for (policy, completes) in [(Policy::LINUX_6_12, true), (Policy::IMPROVED, false)] {
        b.hooks.borrow_mut().clear(); // the forced patch of the previous round stays hooked
        let storage = EngineStorage::<8, 32>::new();
        let funcs = [Func::new("do_exit", r(F1, 0x40), r(0x9000, 0x80))];
        let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
        let patch = Patch::new(PatchId(1), "p1", &objs);
        let live = Live::new(&storage, policy);
        let mut engine = Engine::new(&live);
        engine.enable(&patch, &b).unwrap();
        let progress = engine.try_complete(&b, quiet).unwrap();
        assert_eq!(progress.is_complete(), completes, "{:?}", policy.model);
        if completes {
            // Linux declares victory while the exiting task still runs the old do_exit.
            assert_eq!(progress.summary().exiting_skipped, 1);
        } else {
            assert_eq!(progress.summary().on_stack, 1);
            engine.force(&b).unwrap();
        }
    }
}

#[test]
fn the_handler_entry_switch_converts_the_caller_when_its_stack_is_clean() {
    let b = TestBackend::with_tasks(2);
    b.task(1).running.set(true);
    b.task(2).running.set(true);
    b.task(2).stack.borrow_mut().extend([F2 + 8, CALLER]); // f2 (old) calls f1
    for (policy, switches) in [(Policy::LINUX_6_12, false), (Policy::IMPROVED, true)] {
        b.hooks.borrow_mut().clear(); // the forced patch of the previous round stays hooked
        let storage = EngineStorage::<8, 32>::new();
        let funcs = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80)), Func::new("f2", r(F2, 0x40), r(0x9100, 0x80))];
        let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
        let patch = Patch::new(PatchId(1), "p1", &objs);
        let live = Live::new(&storage, policy);
        let mut engine = Engine::new(&live);
        engine.enable(&patch, &b).unwrap();
        let slot = live.slot_at(CodeAddr(F1)).unwrap();
        let r1 = live.on_function_entry(slot, b.task(1), &b, CodeAddr(CALLER));
        let r2 = live.on_function_entry(slot, b.task(2), &b, CodeAddr(F2 + 8));
        assert_eq!(r1, if switches { variant(0x9000) } else { Redirect::Original }, "{:?}", policy.model);
        assert_eq!(r2, Redirect::Original, "old f2 on the stack: keeps the old universe");
        assert_eq!(b.task(2).state.state(), PatchState::Unpatched);
        engine.force(&b).unwrap();
    }
}

#[test]
fn the_self_check_and_per_cpu_pass_switch_tasks() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(4);
    engine!(storage, live, engine, Policy::IMPROVED);
    engine.enable(&patch, &b).unwrap();
    let v = live.self_check(b.task(1), &b);
    assert_eq!(v, livepatch_core::sweep::Verdict::Switched(PatchState::Patched));
    let Progress::Complete(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!((s.switched_per_cpu, s.switched), (3, 3));
    assert_eq!((s.batches, s.visited, s.remaining), (1, 4, 0));
}

#[test]
fn the_per_cpu_pass_checks_only_pending_tasks_that_are_neither_running_nor_skipped() {
    // Task 1 runs (its stack may change under a check), task 2 exits (the policy does not
    // visit exiting tasks), task 3 sleeps with a clean stack, task 4 in the old `f1`.
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(4);
    b.task(1).running.set(true);
    b.task(2).flags.set(TaskFlags::EXITING);
    b.task(4).stack.borrow_mut().push(F1 + 1);
    engine!(storage, live, engine, Policy { visit_exiting: false, ..Policy::IMPROVED });
    engine.enable(&patch, &b).unwrap();
    let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    // The per-CPU pass walks tasks 3 and 4 and switches 3; the sweep walks 4 again.
    assert_eq!((s.switched_per_cpu, s.switched), (1, 1));
    assert_eq!(s.walks, 3);
    assert_eq!((s.running, s.exiting_skipped, s.on_stack, s.remaining), (1, 1, 1, 2));
    let states: Vec<_> = b.tasks.iter().map(|t| t.state.state()).collect();
    assert_eq!(states, [PatchState::Unpatched, PatchState::Unpatched, PatchState::Patched, PatchState::Unpatched]);
}

#[test]
fn kernel_exit_switches_only_at_the_boundary() {
    one_func_patch!(funcs, objs, patch);
    let mut b = TestBackend::with_tasks(2);
    b.tasks.push(common::TestTask::new(3, TaskKind::Kthread));
    engine!(storage, live, engine, Policy::KGRAFT);
    engine.enable(&patch, &b).unwrap();
    let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!((s.awaiting, s.walks), (3, 0));
    assert_eq!(live.self_check(b.task(1), &b), livepatch_core::sweep::Verdict::NotPending, "no self-check in kGraft");
    assert!(live.exit_to_user(&b.task(1).state).is_some());
    assert!(live.exit_to_user(&b.task(2).state).is_some());
    assert!(live.kthread_safe_point(&b.task(3).state).is_some());
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
}

#[test]
fn an_idle_task_switches_in_its_idle_loop_only_where_the_policy_has_that_point() {
    // The idle task of CPU 0, with a frame of the old `f1` recorded so that no sweep can
    // switch it: only its idle loop (`Live::idle`, no stack check) does, and only where the
    // policy has that switch point.
    for (policy, switches) in [(Policy::LINUX_6_12, true), (Policy::STOP_THE_WORLD, false)] {
        one_func_patch!(funcs, objs, patch);
        let mut b = TestBackend::default();
        b.tasks.push(common::TestTask::new(1, TaskKind::Idle(livepatch_core::CpuId(0))));
        b.task(1).stack.borrow_mut().push(F1 + 1);
        engine!(storage, live, engine, policy);
        engine.enable(&patch, &b).unwrap();
        let idle = &b.task(1).state;
        assert!(idle.pending(), "{:?}", policy.model);
        if switches {
            assert_eq!(live.idle(idle), Some(PatchState::Patched), "{:?}", policy.model);
            assert_eq!(live.idle(idle), None, "not pending any more");
            assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
        } else {
            assert_eq!(live.idle(idle), None, "{:?} has no idle switch point", policy.model);
            assert_eq!((idle.state(), idle.pending()), (PatchState::Unpatched, true), "{:?}", policy.model);
            engine.force(&b).unwrap();
        }
    }
}

#[test]
fn call_chain_redirects_by_caller_and_completes_by_sweeps() {
    let funcs = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80)), Func::new("f2", r(F2, 0x40), r(0x9100, 0x80))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(2);
    b.task(1).stack.borrow_mut().push(F2 + 4);
    engine!(storage, live, engine, Policy::CALL_CHAIN);
    engine.enable(&patch, &b).unwrap();
    let slot = live.slot_at(CodeAddr(F1)).unwrap();
    let state = &b.task(1).state;
    assert_eq!(live.redirect(slot, state, CodeAddr(F2 + 4)), Redirect::Original, "old caller: old chain");
    assert_eq!(live.redirect(slot, state, CodeAddr(0x9104)), variant(0x9000), "new caller");
    assert_eq!(live.redirect(slot, state, CodeAddr(CALLER)), variant(0x9000), "unpatched caller");
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    b.task(1).stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(live.redirect(slot, state, CodeAddr(F2 + 4)), variant(0x9000));
}

#[test]
fn stop_the_world_switches_all_at_once_or_gives_up() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(3);
    b.task(1).running.set(true); // preempted by the stop: checkable
    b.task(2).stack.borrow_mut().push(F1 + 3);
    engine!(storage, live, engine, Policy::STOP_THE_WORLD);
    engine.enable(&patch, &b).unwrap();
    for _ in 0..4 {
        assert!(matches!(engine.try_complete(&b, quiet).unwrap(), Progress::Pending(_)));
    }
    let gave_up = engine.try_complete(&b, quiet).unwrap();
    // Neither complete (nothing was patched) nor pending (no retry).
    assert!(!gave_up.is_complete() && !gave_up.is_pending());
    let Progress::GaveUp(s) = gave_up else { panic!() };
    assert_eq!(s.on_stack, 1);
    assert_eq!(b.stops.get(), 5);
    assert!(!patch.is_registered() && b.hooked().is_empty());
    assert!(b.tasks.iter().all(|t| t.state.state() == PatchState::Idle));

    b.task(2).stack.borrow_mut().clear();
    engine.enable(&patch, &b).unwrap();
    let Progress::Complete(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!(s.switched, 3);
    assert!(s.pause_ns > 0);
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000));
}

#[test]
fn the_freezer_freezes_stragglers_and_reverses_when_a_frozen_task_is_still_in_old_code() {
    // A user task, an unfreezable kthread and a freezable one, all asleep in the old `f1`.
    one_func_patch!(funcs, objs, patch);
    let mut b = TestBackend::with_tasks(1);
    b.tasks.push(common::TestTask::new(2, TaskKind::Kthread));
    b.tasks.push(common::TestTask::new(3, TaskKind::Kthread));
    b.task(3).flags.set(TaskFlags::FREEZABLE);
    for t in &b.tasks {
        t.stack.borrow_mut().extend([F1 + 4, CALLER]);
    }
    engine!(storage, live, engine, Policy::FREEZER);
    engine.enable(&patch, &b).unwrap();
    let freezes = || b.freezes.borrow().iter().map(|t| t.0).collect::<Vec<_>>();

    // The first pass only looks; from the second on, the user task and the freezable
    // kthread are asked to freeze, the unfreezable kthread is left alone.
    let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!((s.on_stack, s.kicked), (3, 0));
    assert_eq!(freezes(), [] as [u32; 0]);
    let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!((s.on_stack, s.kicked), (3, 2));
    assert_eq!(freezes(), [1, 3]);
    assert!(b.kicks.borrow().is_empty(), "frozen, not kicked");

    // Frozen, the user task left the old code; the kthread froze inside it (the patch touches
    // the freezer's path): freezing cannot help, so the freezer thaws everybody and takes every
    // task back.
    b.task(1).flags.set(TaskFlags::FROZEN);
    b.task(1).stack.borrow_mut().clear();
    b.task(3).flags.set(TaskFlags::FREEZABLE | TaskFlags::FROZEN);
    let gave_up = engine.try_complete(&b, quiet).unwrap();
    let Progress::GaveUp(s) = gave_up else { panic!("{gave_up:?}") };
    assert_eq!((s.switched, s.on_stack), (1, 2));
    assert_eq!(b.thaws.get(), 1);
    let info = engine.transition().expect("reversed, still in progress");
    assert_eq!((info.target, info.reversed), (PatchState::Unpatched, true));
    assert!(!patch.is_enabled());
    assert_eq!((b.task(1).state.state(), b.task(1).state.pending()), (PatchState::Patched, true));
    let frozen = freezes();

    // On the way back nobody is frozen again: the stragglers are kicked instead.
    b.task(1).stack.borrow_mut().push(0x9010);
    for t in &b.tasks {
        t.flags.set(t.flags.get() - TaskFlags::FROZEN);
    }
    let Progress::Pending(_) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!(s.kicked, 1);
    assert_eq!(freezes(), frozen, "no freeze after the reversal");
    assert_eq!(b.kicks.borrow().iter().map(|t| t.0).collect::<Vec<_>>(), [1]);
    b.task(1).stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert!(!patch.is_registered() && b.hooked().is_empty());
    assert_eq!(b.thaws.get(), 2, "and once more when the transition completes");
}

#[test]
fn a_stop_the_world_attempt_counts_its_pass_visits_and_walks_and_skips_exiting_tasks() {
    // Task 1 is clean, task 2 exits inside the old `f1` (not visited by this policy), task 3
    // sleeps in it until the second attempt.
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(3);
    b.task(2).flags.set(TaskFlags::EXITING);
    b.task(2).stack.borrow_mut().push(F1 + 1);
    b.task(3).stack.borrow_mut().push(F1 + 1);
    engine!(storage, live, engine, Policy { visit_exiting: false, ..Policy::STOP_THE_WORLD });
    engine.enable(&patch, &b).unwrap();
    let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!((s.pass, s.visited, s.walks, s.on_stack, s.switched), (1, 3, 2, 1, 0));
    b.task(3).stack.borrow_mut().clear();
    let Progress::Complete(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!((s.pass, s.visited, s.walks, s.switched), (2, 3, 2, 3));
}

#[test]
fn a_stop_the_world_disable_that_gives_up_leaves_the_patch_enabled() {
    // Task 2 sleeps in the variant through all five attempts: nobody switched, so the patch
    // stays enabled, with no transition left and every task back to idle.
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(2);
    engine!(storage, live, engine, Policy::STOP_THE_WORLD);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    b.task(2).stack.borrow_mut().push(0x9010);
    engine.disable(&patch, &b).unwrap();
    for _ in 0..4 {
        assert!(engine.try_complete(&b, quiet).unwrap().is_pending());
    }
    let gave_up = engine.try_complete(&b, quiet).unwrap();
    assert!(matches!(gave_up, Progress::GaveUp(_)), "{gave_up:?}");
    assert!(engine.transition().is_none() && live.transition_target().is_none());
    assert!(patch.is_enabled() && patch.is_registered());
    assert!(b.tasks.iter().all(|t| t.state.state() == PatchState::Idle && !t.state.pending()));
    assert_eq!(b.hooked(), [r(F1, 0x40)]);
    assert_eq!(call(&live, F1, &b, 1), variant(0x9000));
    assert_eq!(call(&live, F1, &b, 2), variant(0x9000));
}

#[test]
fn a_kick_that_moves_nobody_is_repeated_only_after_the_backoff() {
    // A kthread that goes back to sleep in the old `f1` whenever it is woken: with a backoff,
    // the first kick round is the only one for 15 000 passes (15 s at a pass per millisecond).
    one_func_patch!(funcs, objs, patch);
    let mut b = TestBackend::default();
    b.tasks.push(common::TestTask::new(1, TaskKind::Kthread));
    b.task(1).stack.borrow_mut().push(F1 + 1);
    engine!(storage, live, engine, Policy::IMPROVED);
    engine.enable(&patch, &b).unwrap();
    let mut kicked = Vec::new();
    for pass in 1..=20 {
        let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
        if s.kicked > 0 {
            kicked.push(pass);
        }
    }
    assert_eq!(kicked, [2]);
    assert_eq!(b.kicks.borrow().len(), 1);
}

#[test]
fn stragglers_blocked_elsewhere_are_kicked_again_at_once() {
    // Two kthreads asleep in `f1` and `f2`: kicked at the second pass, then left alone (the
    // kicks moved nobody). When they wake and fall asleep in each other's function, the set
    // of stragglers changed (same functions, same number, other tasks): the next pass a kick
    // round is due kicks them again.
    let funcs = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80)), Func::new("f2", r(F2, 0x40), r(0x9100, 0x80))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let mut b = TestBackend::default();
    b.tasks.push(common::TestTask::new(1, TaskKind::Kthread));
    b.tasks.push(common::TestTask::new(2, TaskKind::Kthread));
    b.task(1).stack.borrow_mut().push(F1 + 1);
    b.task(2).stack.borrow_mut().push(F2 + 1);
    engine!(storage, live, engine, Policy::IMPROVED);
    engine.enable(&patch, &b).unwrap();
    let mut rounds = Vec::new();
    for pass in 1..=10 {
        if pass == 6 {
            *b.task(1).stack.borrow_mut() = vec![F2 + 1];
            *b.task(2).stack.borrow_mut() = vec![F1 + 1];
        }
        let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
        if s.kicked > 0 {
            rounds.push((pass, s.kicked));
        }
    }
    assert_eq!(rounds, [(2, 2), (7, 2)]);
}

#[test]
fn a_policy_that_kicks_every_zeroth_pass_never_kicks() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(1);
    b.task(1).stack.borrow_mut().push(F1 + 1);
    engine!(storage, live, engine, Policy { signal_every: Some(0), ..Policy::IMPROVED });
    engine.enable(&patch, &b).unwrap();
    for _ in 0..4 {
        let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
        assert_eq!(s.kicked, 0);
    }
    assert!(b.kicks.borrow().is_empty());
}

#[test]
fn the_freezer_gives_up_after_its_attempts_and_takes_every_task_back() {
    // An unfreezable kthread asleep in the old `f1`: freezing cannot move it.
    one_func_patch!(funcs, objs, patch);
    let mut b = TestBackend::with_tasks(1);
    b.tasks.push(common::TestTask::new(2, TaskKind::Kthread));
    b.task(2).stack.borrow_mut().push(F1 + 1);
    engine!(storage, live, engine, Policy { stop_attempts: 3, ..Policy::FREEZER });
    engine.enable(&patch, &b).unwrap();
    for _ in 0..2 {
        assert!(engine.try_complete(&b, quiet).unwrap().is_pending());
    }
    let gave_up = engine.try_complete(&b, quiet).unwrap();
    assert!(matches!(gave_up, Progress::GaveUp(s) if s.pass == 3), "{gave_up:?}");
    assert_eq!(b.thaws.get(), 1);
    let info = engine.transition().expect("reversed, still in progress");
    assert_eq!((info.target, info.reversed), (PatchState::Unpatched, true));
    // The kthread never left the start universe; the user task, which had switched, comes back.
    assert_eq!(b.task(1).state.state(), PatchState::Patched);
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert!(!patch.is_registered() && b.hooked().is_empty());
}

#[test]
fn late_and_going_objects_follow_the_patch() {
    let log = CallbackLog::default();
    let f_v = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let f_m = [Func::new("m1", r(0x20_0000, 0x40), r(0x9100, 0x80))];
    let objs = [
        Object::new(ObjectId::VMLINUX, "vmlinux", &f_v).with_callbacks(&log),
        Object::new(ObjectId(9), "mod9", &f_m).with_callbacks(&log),
    ];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(2);
    b.unloaded.borrow_mut().insert(9);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(b.hooked(), [r(F1, 0x40)]);

    b.unloaded.borrow_mut().remove(&9);
    engine.object_coming(ObjectId(9), &b).unwrap();
    assert_eq!(b.hooked().len(), 2);
    assert_eq!(call(&live, 0x20_0000, &b, 1), variant(0x9100));
    engine.object_going(ObjectId(9), &b);
    b.unloaded.borrow_mut().insert(9);
    assert_eq!(b.hooked(), [r(F1, 0x40)]);
    assert!(!f_m[0].is_patched());
    assert_eq!(
        log.calls(),
        ["pre_patch 1/0", "post_patch 1/0", "pre_patch 1/9", "post_patch 1/9", "pre_unpatch 1/9", "post_unpatch 1/9"]
    );
}

#[test]
fn a_module_coming_during_a_transition_leaves_a_task_in_old_code_blocked() {
    // A patch for vmlinux and a module that loads while the patch is in transition. The
    // coming module's code joins the code being switched away from; the code marked before
    // (the original `f1`, where task 1 sleeps) must stay so.
    const MODULE: u32 = 7;
    let vmlinux = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let module = [Func::new("g", r(0x20_0000, 0x40), r(0x9100, 0x80))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &vmlinux), Object::new(ObjectId(MODULE), "mod7", &module)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(2);
    b.unloaded.borrow_mut().insert(MODULE);
    b.task(1).stack.borrow_mut().extend([F1 + 4, CALLER]);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_pending());

    b.unloaded.borrow_mut().remove(&MODULE);
    engine.object_coming(ObjectId(MODULE), &b).unwrap();
    let stalls = RefCell::new(Vec::new());
    let progress = engine.try_complete(&b, collect(&stalls)).unwrap();
    assert!(progress.is_pending(), "{progress:?}");
    let blocked: Vec<_> = stalls.borrow().iter().map(|s| (s.task.0, s.reason)).collect();
    assert!(
        matches!(blocked[..], [(1, StallReason::OnStack { function, frame: 0, .. })] if function == r(F1, 0x40)),
        "{blocked:?}"
    );
    assert_eq!(b.task(1).state.state(), PatchState::Unpatched);

    b.task(1).stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(call(&live, 0x20_0000, &b, 1), variant(0x9100));
}

#[test]
fn fork_inherits_the_parents_universe() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(2);
    b.task(2).stack.borrow_mut().push(F1 + 1);
    engine!(storage, live, engine, Policy::LINUX_6_12);
    engine.enable(&patch, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    let child = livepatch_core::TaskPatchState::new();
    live.fork(&b.task(1).state, &child);
    assert_eq!(child.state(), PatchState::Patched);
    live.fork(&b.task(2).state, &child);
    assert_eq!(child.state(), PatchState::Unpatched);
    assert!(child.pending());
}

#[test]
fn sweeps_hold_the_task_list_one_batch_at_a_time() {
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(200);
    b.task(200).stack.borrow_mut().push(F1);
    engine!(storage, live, engine, Policy { batch: 64, ..Policy::LINUX_6_12 });
    engine.enable(&patch, &b).unwrap();
    let Progress::Pending(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!((s.batches, s.visited, s.switched), (4, 200, 199));
}

#[test]
fn every_walk_of_the_task_list_holds_it_one_batch_at_a_time() {
    // Not only the sweep: resetting and retargeting every task (enable) and putting them back
    // to idle (completion) visit 200 tasks in holds of 64.
    one_func_patch!(funcs, objs, patch);
    let b = TestBackend::with_tasks(200);
    engine!(storage, live, engine, Policy { batch: 64, ..Policy::LINUX_6_12 });
    engine.enable(&patch, &b).unwrap();
    assert_eq!(b.batches.get(), 2 * 4, "reset, then retarget");
    let Progress::Complete(s) = engine.try_complete(&b, quiet).unwrap() else { panic!() };
    assert_eq!(s.batches, 4);
    assert_eq!(b.batches.get(), 8 + 4 + 4, "the sweep, then the reset to idle");
}
