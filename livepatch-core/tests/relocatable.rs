//! Relocatable functions: a patch names a function of a module that is not loaded yet; the
//! backend resolves the function's address when the module comes (the kernel's
//! `klp_init_object_loaded` → `klp_find_object_symbol`), the engine validates it there as it
//! validates an enable, and the address is forgotten when the module goes (a reloaded module
//! sits elsewhere).

mod common;

use common::{r, CallbackLog, TestBackend};
use livepatch_core::patch::{validate, PatchError, ResolveError};
use livepatch_core::sweep::Straggler;
use livepatch_core::{
    CodeAddr, Engine, EngineStorage, Error, Func, Live, Object, ObjectId, Patch, PatchId, Policy, Redirect,
};

const F1: usize = 0x1000;
const M1: usize = 0x20_0000;
const M1_AGAIN: usize = 0x30_0000;
const CALLER: usize = 0x5000;
const MOD: ObjectId = ObjectId(9);

macro_rules! engine {
    ($storage:ident, $live:ident, $engine:ident) => {
        let $storage = EngineStorage::<8, 32>::new();
        let $live = Live::new(&$storage, Policy::LINUX_6_12);
        #[allow(unused_mut)]
        let mut $engine = Engine::new(&$live);
    };
}

fn quiet(_: &Straggler) {}

fn call(live: &Live<'_>, entry: usize, b: &TestBackend) -> Option<Redirect> {
    let slot = live.slot_at(CodeAddr(entry))?;
    Some(live.redirect(slot, &b.task(1).state, CodeAddr(CALLER)))
}

#[test]
fn a_relocatable_func_starts_unresolved_and_resolves_only_while_unpatched() {
    let fixed = Func::new("f1", r(F1, 0x40), r(0x9000, 0x80));
    let late = Func::relocatable("m1", r(0x9100, 0x80));
    assert_eq!(fixed.old(), Some(r(F1, 0x40)));
    assert!(!fixed.is_relocatable() && late.is_relocatable());
    assert_eq!(late.old(), None);
    assert_eq!(fixed.resolve(r(F1, 0x40)), Err(ResolveError::Fixed));
    assert_eq!(late.resolve(r(M1, 0x40)), Ok(()));
    assert_eq!(late.old(), Some(r(M1, 0x40)));
    assert_eq!(late.unresolve(), Ok(()));
    assert_eq!(late.old(), None);
    assert_eq!(fixed.unresolve(), Err(ResolveError::Fixed));
}

#[test]
fn validate_skips_unresolved_funcs_but_checks_them_once_resolved() {
    let v = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let m = [Func::relocatable("m1", r(0x9100, 0x80)), Func::relocatable("m2", r(0x9200, 0x80))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &v), Object::new(MOD, "mod9", &m)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    assert_eq!(validate(&patch), Ok(()));
    m[0].resolve(r(M1, 0x40)).unwrap();
    m[1].resolve(r(M1, 0x40)).unwrap();
    assert_eq!(validate(&patch), Err(PatchError::DuplicateFunc(r(M1, 0x40))));
    m[1].resolve(r(0x9000, 0x10)).unwrap();
    assert!(matches!(validate(&patch), Err(PatchError::Overlap(..))));
}

#[test]
fn a_module_loaded_after_the_patch_is_resolved_patched_and_forgotten_when_it_goes() {
    let log = CallbackLog::default();
    let v = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let m = [Func::relocatable("m1", r(0x9100, 0x80))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &v), Object::new(MOD, "mod9", &m).with_callbacks(&log)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(2);
    b.unloaded.borrow_mut().insert(MOD.0);
    engine!(storage, live, engine);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());

    // The backend forgot to resolve: the load is refused, nothing ran, nothing changed.
    b.unloaded.borrow_mut().remove(&MOD.0);
    assert_eq!(engine.object_coming(MOD, &b), Err(Error::Unresolved(MOD)));
    assert_eq!(b.hooked(), [r(F1, 0x40)]);
    assert!(log.calls().is_empty());

    m[0].resolve(r(M1, 0x40)).unwrap();
    engine.object_coming(MOD, &b).unwrap();
    assert_eq!(call(&live, M1, &b), Some(Redirect::Variant(CodeAddr(0x9100))));
    assert_eq!(m[0].resolve(r(M1_AGAIN, 0x40)), Err(ResolveError::Patched));

    engine.object_going(MOD, &b);
    b.unloaded.borrow_mut().insert(MOD.0);
    assert_eq!(m[0].old(), None, "a going module's addresses are forgotten");
    assert_eq!(b.hooked(), [r(F1, 0x40)]);

    // Loaded again at another address.
    b.unloaded.borrow_mut().remove(&MOD.0);
    m[0].resolve(r(M1_AGAIN, 0x40)).unwrap();
    engine.object_coming(MOD, &b).unwrap();
    assert_eq!(call(&live, M1, &b), None);
    assert_eq!(call(&live, M1_AGAIN, &b), Some(Redirect::Variant(CodeAddr(0x9100))));
    assert_eq!(
        log.calls(),
        ["pre_patch 1/9", "post_patch 1/9", "pre_unpatch 1/9", "post_unpatch 1/9", "pre_patch 1/9", "post_patch 1/9"]
    );
}

#[test]
fn enabling_with_a_loaded_but_unresolved_object_is_refused_with_nothing_changed() {
    let m = [Func::relocatable("m1", r(0x9100, 0x80))];
    let objs = [Object::new(MOD, "mod9", &m)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(2);
    engine!(storage, live, engine);
    assert_eq!(engine.enable(&patch, &b), Err(Error::Unresolved(MOD)));
    assert!(!patch.is_registered() && engine.transition().is_none() && b.hooked().is_empty());
    m[0].resolve(r(M1, 0x40)).unwrap();
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(b.hooked(), [r(M1, 0x40)]);
}

#[test]
fn a_late_object_that_conflicts_with_live_code_is_refused_before_any_callback() {
    let log = CallbackLog::default();
    // Patch 1 patches vmlinux's f1.
    let v = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let objs1 = [Object::new(ObjectId::VMLINUX, "vmlinux", &v)];
    let p1 = Patch::new(PatchId(1), "p1", &objs1);
    // Patch 2 names two functions of the module, enabled before it loads.
    let m = [Func::relocatable("m1", r(0x9400, 0x80)), Func::relocatable("m2", r(0x9500, 0x80))];
    let objs2 = [Object::new(MOD, "mod9", &m).with_callbacks(&log)];
    let p2 = Patch::new(PatchId(2), "p2", &objs2);
    let b = TestBackend::with_tasks(2);
    b.unloaded.borrow_mut().insert(MOD.0);
    engine!(storage, live, engine);
    engine.enable(&p1, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    engine.enable(&p2, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    b.unloaded.borrow_mut().remove(&MOD.0);

    // m2 resolves into patch 1's replacement code: a conflict.
    m[0].resolve(r(M1, 0x40)).unwrap();
    m[1].resolve(r(0x9010, 0x40)).unwrap();
    assert_eq!(engine.object_coming(MOD, &b), Err(Error::Conflict(r(0x9010, 0x40))));
    // m2 partially overlaps the live original f1.
    m[1].resolve(r(F1 + 0x10, 0x40)).unwrap();
    assert_eq!(engine.object_coming(MOD, &b), Err(Error::Conflict(r(F1 + 0x10, 0x40))));
    // m1 and m2 resolve to the same function.
    m[1].resolve(r(M1, 0x40)).unwrap();
    assert_eq!(engine.object_coming(MOD, &b), Err(Error::Invalid(PatchError::DuplicateFunc(r(M1, 0x40)))));
    assert!(log.calls().is_empty(), "no callback runs for a refused load");
    assert_eq!(b.hooked(), [r(F1, 0x40)]);
    assert!(!objs2[0].is_patched());
    assert_eq!(call(&live, F1, &b), Some(Redirect::Variant(CodeAddr(0x9000))));

    m[1].resolve(r(M1 + 0x100, 0x40)).unwrap();
    engine.object_coming(MOD, &b).unwrap();
    assert_eq!(b.hooked().len(), 3);
    assert_eq!(log.calls(), ["pre_patch 2/9", "post_patch 2/9"]);
}

#[test]
fn a_module_that_comes_during_the_enable_transition_joins_it() {
    let v = [Func::new("f1", r(F1, 0x40), r(0x9000, 0x80))];
    let m = [Func::relocatable("m1", r(0x9100, 0x80))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &v), Object::new(MOD, "mod9", &m)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(2);
    b.unloaded.borrow_mut().insert(MOD.0);
    b.task(2).stack.borrow_mut().push(F1 + 1);
    engine!(storage, live, engine);
    engine.enable(&patch, &b).unwrap();
    assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());

    b.unloaded.borrow_mut().remove(&MOD.0);
    m[0].resolve(r(M1, 0x40)).unwrap();
    engine.object_coming(MOD, &b).unwrap();
    // Task 1 switched, task 2 did not: each runs its own universe in the new module too.
    assert_eq!(call(&live, M1, &b), Some(Redirect::Variant(CodeAddr(0x9100))));
    let slot = live.slot_at(CodeAddr(M1)).unwrap();
    assert_eq!(live.redirect(slot, &b.task(2).state, CodeAddr(CALLER)), Redirect::Original);
    b.task(2).stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    assert_eq!(live.redirect(slot, &b.task(2).state, CodeAddr(CALLER)), Redirect::Variant(CodeAddr(0x9100)));
}

/// Patches enabled before a module loads, each naming one of its functions. When it comes,
/// their functions are checked against each other as an enable checks one patch's: the same
/// original in two patches stacks on one slot, anything else that overlaps is a conflict,
/// refused before any callback.
#[test]
fn a_late_objects_functions_are_checked_across_the_patches_that_name_it() {
    let log = CallbackLog::default();
    let m1 = [Func::relocatable("m1", r(0x9400, 0x80))];
    let m2 = [Func::relocatable("m2", r(0x9600, 0x80))];
    // p3's replacement overlaps p1's.
    let m3 = [Func::relocatable("m3", r(0x9440, 0x80))];
    let objs1 = [Object::new(MOD, "mod9", &m1).with_callbacks(&log)];
    let objs2 = [Object::new(MOD, "mod9", &m2).with_callbacks(&log)];
    let objs3 = [Object::new(MOD, "mod9", &m3).with_callbacks(&log)];
    let p1 = Patch::new(PatchId(1), "p1", &objs1);
    let p2 = Patch::new(PatchId(2), "p2", &objs2);
    let p3 = Patch::new(PatchId(3), "p3", &objs3);
    let b = TestBackend::with_tasks(1);
    b.unloaded.borrow_mut().insert(MOD.0);
    // One slot: functions of the module can only share it.
    let storage = EngineStorage::<1, 32>::new();
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    for p in [&p1, &p2, &p3] {
        engine.enable(p, &b).unwrap();
        assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    }
    b.unloaded.borrow_mut().remove(&MOD.0);

    let refused = [
        // m2 partly overlaps m1.
        (r(M1 + 0x10, 0x40), r(M1 + 0x200, 0x40), Error::Conflict(r(M1 + 0x10, 0x40))),
        // m2 lies in p1's replacement for m1.
        (r(0x9410, 0x40), r(M1 + 0x200, 0x40), Error::Conflict(r(0x9410, 0x40))),
        // m2 is fine; m3's replacement overlaps m1's.
        (r(M1 + 0x100, 0x40), r(M1 + 0x200, 0x40), Error::Conflict(r(0x9440, 0x80))),
    ];
    for (at2, at3, error) in refused {
        m1[0].resolve(r(M1, 0x40)).unwrap();
        m2[0].resolve(at2).unwrap();
        m3[0].resolve(at3).unwrap();
        assert_eq!(engine.object_coming(MOD, &b), Err(error), "m2 at {at2:?}");
    }
    assert!(log.calls().is_empty(), "no callback runs for a refused load: {:?}", log.calls());
    assert!(b.hooked().is_empty());

    // Without p3 (disabled while the module was away: no callback), m1 and m2 the same
    // function: one slot, p2's variant on top of p1's.
    b.unloaded.borrow_mut().insert(MOD.0);
    engine.disable(&p3, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());
    b.unloaded.borrow_mut().remove(&MOD.0);
    m1[0].resolve(r(M1, 0x40)).unwrap();
    m2[0].resolve(r(M1, 0x40)).unwrap();
    engine.object_coming(MOD, &b).unwrap();
    assert_eq!(b.hooked(), [r(M1, 0x40)]);
    assert_eq!(call(&live, M1, &b), Some(Redirect::Variant(CodeAddr(0x9600))));
    assert_eq!(log.calls(), ["pre_patch 1/9", "post_patch 1/9", "pre_patch 2/9", "post_patch 2/9"]);
}

/// A patch names functions of two modules, neither loaded. When one comes, only its
/// functions are checked: the other module's are unresolved, and must stay so without
/// refusing the load.
#[test]
fn a_coming_module_is_checked_alone_when_its_patch_names_another_module_too() {
    const OTHER: ObjectId = ObjectId(10);
    let m = [Func::relocatable("m1", r(0x9400, 0x80))];
    let o = [Func::relocatable("o1", r(0x9500, 0x80))];
    let objs = [Object::new(MOD, "mod9", &m), Object::new(OTHER, "mod10", &o)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let b = TestBackend::with_tasks(1);
    b.unloaded.borrow_mut().extend([MOD.0, OTHER.0]);
    engine!(storage, live, engine);
    engine.enable(&patch, &b).unwrap();
    assert!(engine.try_complete(&b, quiet).unwrap().is_complete());

    b.unloaded.borrow_mut().remove(&MOD.0);
    m[0].resolve(r(M1, 0x40)).unwrap();
    engine.object_coming(MOD, &b).unwrap();
    assert!(objs[0].is_patched() && !objs[1].is_patched());
    assert_eq!(o[0].old(), None);
    assert_eq!(call(&live, M1, &b), Some(Redirect::Variant(CodeAddr(0x9400))));
}
