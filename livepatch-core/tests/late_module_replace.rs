//! A module loads while an atomic replace patch is in transition: the replace patch's nops for
//! the module's functions follow the kernel's (`klp_add_nops` at enable for every object of the
//! patches it replaces, loaded or not; `klp_module_coming` patches them whatever the
//! direction; `klp_check_stack` checks the code below them). Each test but the last failed
//! before `de1b073` with a task running two universes or switched with replaced code on its
//! stack; the last one (a module going) fails on the mutants of `object_going` that remove
//! another object's nops.

mod common;

use common::{r, TestBackend};
use livepatch_core::sweep::{StallReason, Straggler};
use livepatch_core::{
    CodeAddr, Engine, EngineStorage, Func, Live, Object, ObjectId, Patch, PatchId, PatchState, Policy, Redirect,
};
use std::cell::RefCell;

const F1: usize = 0x1000;
const F2: usize = 0x1100;
const M1: usize = 0x20_0000;
const CALLER: usize = 0x5000;
const MODULE: ObjectId = ObjectId(9);

/// Binds `$p1`, a patch of `f1` (vmlinux) and `m1` (the module), and `$replace`, a cumulative
/// (atomic replace) patch of `f2` alone, under which `f1` and `m1` go back to their originals.
/// A macro, not a function: the patches borrow the arrays of their objects and functions,
/// which live in the calling test's frame.
macro_rules! p1_and_replace {
    ($p1:ident, $replace:ident) => {
        let f1 = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
        let m1 = [Func::new("m1", r(M1, 0x40), r(0x9100, 0x80))];
        let o1 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f1), Object::new(MODULE, "mod9", &m1)];
        let $p1 = Patch::new(PatchId(1), "p1", &o1);
        let fr = [Func::new("f2", r(F2, 0x40), r(0xb000, 0x80))];
        let or = [Object::new(ObjectId::VMLINUX, "vmlinux", &fr)];
        let $replace = Patch::new(PatchId(2), "replace", &or).replacing();
    };
}

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
    p1_and_replace!(p1, replace);
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
    p1_and_replace!(p1, replace);
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

/// A module goes while an atomic replace is in transition: the replace patch's nops on the
/// module's functions go with it, and only those. A nop of another object removed with them
/// would send a task already in the replace patch's universe back into `p1`'s variant of a
/// function the replace patch reverts.
#[test]
fn a_module_going_during_a_replace_takes_only_its_own_nops() {
    p1_and_replace!(p1, replace);
    let b = TestBackend::with_tasks(2);
    let storage = EngineStorage::<8, 32>::new();
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    engine.enable(&p1, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());

    // Task 2 sleeps in p1's f1: task 1 switches to the replace patch, task 2 does not.
    b.task(2).stack.borrow_mut().push(0x9010);
    engine.enable(&replace, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(call(&live, F1, &b, 1), Redirect::Original);
    assert_eq!(call(&live, M1, &b, 1), Redirect::Original);

    b.unloaded.borrow_mut().insert(MODULE.0);
    engine.object_going(MODULE, &b);
    assert_eq!(live.slot_at(CodeAddr(M1)), None, "the module's slot went with it");
    assert_eq!(call(&live, F1, &b, 1), Redirect::Original, "task 1 still runs the replace patch's f1");
    assert_eq!(call(&live, F1, &b, 2), variant(0x9000), "task 2 still runs p1's");

    b.task(2).stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(call(&live, F2, &b, 2), variant(0xb000));
    assert_eq!(live.slot_at(CodeAddr(F1)), None, "f1 reverted to its original");
}
