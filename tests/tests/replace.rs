//! Atomic replace and a module that comes back later. The kernel frees the patches an atomic
//! replace retired (`klp_free_replaced_patches_async`): a module loaded afterwards gets only
//! the code of the patches still enabled, and a function that only a retired patch changed
//! runs its original.

use livepatch_core::backend::TaskFlags;
use livepatch_core::{ObjectId, Policy};
use livepatch_mock::machine::code::{CodeBuilder, Op, SleepFor, SleepKind};
use livepatch_mock::run::run;
use livepatch_mock::scenario::build::{after, config, kernel, kthread, settled, user, MS, S, US};
use livepatch_mock::scenario::{Action, ObjectSpec, PatchSpec, Scenario};

const MODULE: ObjectId = ObjectId(1);

/// A kthread calls the module's `mod_work` in a loop; users call `sys_getpid`. `p0` patches
/// both; `p1` replaces it and patches `sys_getpid` only. After the replace, the module goes
/// and comes back, then `p1` is disabled: `mod_work` must run its original throughout.
fn module_back_after_replace(seed: u64) -> Scenario {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let work = b.declare("mod_work", MODULE);
    b.define(work, vec![Op::Work(5 * US, 20 * US)]);
    let main = b.func(
        "mod_worker",
        vec![Op::Call(work), Op::Sleep(SleepKind::Interruptible, SleepFor::Between(MS, 3 * MS)), Op::Loop],
    );
    let work_0 = b.variant(work, 0, vec![Op::Work(5 * US, 20 * US)]);
    let getpid_0 = b.variant(k.sys_getpid, 0, vec![Op::Work(300, 700)]);
    let getpid_1 = b.variant(k.sys_getpid, 1, vec![Op::Work(300, 700)]);
    let object = |id: ObjectId, name: &str, funcs| ObjectSpec {
        id,
        name: name.into(),
        funcs,
        callbacks: true,
        fail_pre_patch: None,
    };
    let patches = vec![
        PatchSpec {
            name: "p0".into(),
            replace: false,
            objects: vec![
                object(ObjectId::VMLINUX, "vmlinux", vec![(k.sys_getpid, getpid_0)]),
                object(MODULE, "mod", vec![(work, work_0)]),
            ],
            ..Default::default()
        },
        PatchSpec {
            name: "p1-replace".into(),
            replace: true,
            objects: vec![object(ObjectId::VMLINUX, "vmlinux", vec![(k.sys_getpid, getpid_1)])],
            ..Default::default()
        },
    ];
    Scenario {
        name: "module-back-after-replace".into(),
        about: "a module unloaded and loaded again after an atomic replace retired its patch".into(),
        code: b.build().expect("code builds"),
        machine: config(2, seed),
        tasks: vec![
            kthread(main, TaskFlags::empty()),
            user(&[k.sys_getpid, k.sys_read], (50 * US, 500 * US)),
            user(&[k.sys_getpid], (50 * US, 500 * US)),
        ],
        patches,
        loaded: vec![MODULE],
        script: vec![
            after(5 * MS, Action::Enable(0)),
            settled(5 * MS, Action::Enable(1)),
            settled(5 * MS, Action::Unload(MODULE)),
            settled(5 * MS, Action::Load(MODULE)),
            // The module runs for a while under p1 alone, then p1 goes too.
            after(20 * MS, Action::Disable(1)),
            settled(5 * MS, Action::Nop),
        ],
        limit_ns: 30 * S,
        settle_ns: 10 * MS,
    }
}

/// A retired patch must not come back with the module: if the engine kept `p0` on its list
/// after the replace, the coming module would get `p0`'s `mod_work` (and the disable of `p1`
/// would then send the unpatched universe to it): I1.
#[test]
fn a_module_loaded_after_an_atomic_replace_gets_none_of_the_replaced_patchs_code() {
    for (name, policy) in [("linux-6.12", Policy::LINUX_6_12), ("improved", Policy::IMPROVED)] {
        for seed in 1..=3 {
            let r = run(&module_back_after_replace(seed), policy);
            let what = format!("{name} seed {seed}");
            assert_eq!(r.violations, 0, "{what}: {:?}", r.violation.map(|v| v.to_string()));
            let refused: Vec<_> = r.outcomes.iter().filter(|o| o.error.is_some()).collect();
            assert!(refused.is_empty(), "{what}: {refused:?}");
            let done: Vec<_> = r.transitions.iter().map(|t| (t.patch.as_str(), t.outcome.as_str())).collect();
            assert_eq!(done, [("p0", "complete"), ("p1-replace", "complete"), ("p1-replace", "complete")], "{what}");
        }
    }
}
