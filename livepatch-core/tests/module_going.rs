//! A module goes while a patch of it is in transition: its code is no longer checked, as the
//! kernel's `klp_check_stack` only checks objects that are patched (`klp_module_going`
//! unpatches the going one), even when the backend fails to remove the hook on its function.

mod common;

use common::{r, TestBackend};
use livepatch_core::sweep::Straggler;
use livepatch_core::{Engine, EngineStorage, Func, Live, Object, ObjectId, Patch, PatchId, PatchState, Policy};

const M1: usize = 0x20_0000;
const MODULE: ObjectId = ObjectId(9);

fn quiet(_: &Straggler) {}

/// Task 2 sleeps in the module's original `m1` while `p1`'s enable is in transition, so the
/// transition waits. The module goes; the hook on `m1` cannot be removed (a backend failure:
/// the slot stays, with the original in the index). The module's code is gone: the task's
/// frame there blocks nothing any more, whether the hook went or not.
#[test]
fn a_going_modules_code_blocks_no_switch_even_when_its_hook_stays() {
    for fail_remove in [false, true] {
        let f1 = [Func::new("f1", r(0x1000, 0x40), r(0x9000, 0x80))];
        let m1 = [Func::new("m1", r(M1, 0x40), r(0x9100, 0x80))];
        let o1 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f1), Object::new(MODULE, "mod9", &m1)];
        let p1 = Patch::new(PatchId(1), "p1", &o1);
        let b = TestBackend::with_tasks(2);
        let storage = EngineStorage::<8, 32>::new();
        let live = Live::new(&storage, Policy::LINUX_6_12);
        let mut engine = Engine::new(&live);
        b.task(2).stack.borrow_mut().extend([M1 + 0x10, 0x5004]);
        engine.enable(&p1, &b).unwrap();
        assert!(!engine.try_complete(&b, quiet).unwrap().is_complete());
        assert_eq!(b.task(2).state.state(), PatchState::Unpatched, "task 2 sleeps in the module's m1");

        b.fail_remove.set(fail_remove);
        b.unloaded.borrow_mut().insert(MODULE.0);
        engine.object_going(MODULE, &b);
        assert_eq!(
            live.slot_at(livepatch_core::CodeAddr(M1)).is_some(),
            fail_remove,
            "the slot stays exactly when its hook could not be removed"
        );
        let progress = engine.try_complete(&b, quiet).unwrap();
        assert!(progress.is_complete(), "fail_remove {fail_remove}: blocked by a gone module's code: {progress:?}");
        assert!(p1.is_enabled());
    }
}
