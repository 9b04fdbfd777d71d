//! Data changes: shadow variables fixing a leak across patch, replace and unpatch (after the
//! kernel's `samples/livepatch/livepatch-shadow-{mod,fix1,fix2}.c`), and system states handed
//! over between cumulative patches (after `test_klp_state*.c`).

use super::build::*;
use super::parity::{background, scenario};
use super::{Action, ObjectSpec, Params, PatchSpec, Scenario, ScenarioDef};
use crate::machine::code::{CodeBuilder, CodeError, Op, SleepFor, SleepKind};
use crate::machine::heap::{SV_COUNTER, SV_LEAK};
use livepatch_core::backend::TaskFlags;
use livepatch_core::ObjectId;

/// The data scenarios.
pub const ALL: [ScenarioDef; 2] = [
    ScenarioDef {
        name: "shadow-leak",
        group: "data",
        about: "livepatch-shadow-mod/fix1/fix2: a shadow variable fixes a leak across patch, replace and unpatch",
        defaults: Params { tasks: 12, cpus: 4, seed: 1 },
        build: shadow_leak,
    },
    ScenarioDef {
        name: "system-state",
        group: "data",
        about: "a system state taken over v1 -> v2 by a cumulative patch; v1 after v2 is refused",
        defaults: Params { tasks: 12, cpus: 4, seed: 1 },
        build: system_state,
    },
];

/// The module of the shadow sample (`livepatch_shadow_mod`).
pub const SHADOW_MOD: ObjectId = ObjectId(1);
/// The dummy workers of `shadow-leak` (the sample's alloc/cleanup work items).
pub const SHADOW_WORKERS: u32 = 4;
/// The system state of `system-state`.
pub const STATE_ID: u64 = 1;

/// `shadow-leak`. The module's `dummy_alloc` allocates an object and a buffer it never frees;
/// `dummy_free` frees the object only. `fix1` attaches the buffer to the object as a shadow
/// variable (`SV_LEAK`) and frees it through the shadow in `dummy_free`; `fix2` (cumulative)
/// keeps the fix with variants of its own, counts `dummy_check` calls per object in a second
/// shadow variable (`SV_COUNTER`), and its `post_unpatch` frees every remaining shadow
/// variable of both ids. The workers (task ids `cpus..cpus + SHADOW_WORKERS`) each own one or
/// two objects at a time, so objects allocated in one universe are freed in the next; they
/// are stopped before `fix2` is disabled.
fn shadow_leak(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    // kzalloc(GFP_KERNEL) may sleep in direct reclaim: a worker is often caught inside the
    // old dummy_alloc when a transition starts, and finishes that call in the old universe.
    let gfp_sleep = Op::Sleep(SleepKind::Uninterruptible, SleepFor::Between(200 * US, 8 * MS));
    let pause = Op::Sleep(SleepKind::Interruptible, SleepFor::Between(MS, 3 * MS));
    let alloc = b.declare("dummy_alloc", SHADOW_MOD);
    let check = b.declare("dummy_check", SHADOW_MOD);
    let free = b.declare("dummy_free", SHADOW_MOD);
    let lp = b.declare("dummy_loop", SHADOW_MOD);
    let worker = b.declare("dummy_worker", SHADOW_MOD);
    b.define(alloc, vec![Op::ObjAlloc, gfp_sleep, Op::BufAlloc, Op::Work(US, 3 * US)]);
    // dummy_check looks at the object just allocated; dummy_free frees the oldest one.
    b.define(check, vec![Op::Work(500, 1500)]);
    b.define(free, vec![Op::ObjOldest, Op::Work(500, 1000), Op::ObjFree]);
    b.define(lp, vec![Op::SafePoint, pause, Op::Call(alloc), Op::Call(check), pause, Op::Call(free), Op::Loop]);
    b.define(worker, vec![Op::Call(alloc), Op::Call(lp)]);
    let fixed_alloc = || vec![Op::ObjAlloc, gfp_sleep, Op::BufAlloc, Op::ShadowAttach(SV_LEAK), Op::Work(US, 3 * US)];
    let alloc1 = b.variant(alloc, 0, fixed_alloc());
    let free1 = b.variant(free, 0, vec![Op::ObjOldest, Op::ShadowFree(SV_LEAK), Op::Work(500, 1000), Op::ObjFree]);
    let alloc2 = b.variant(alloc, 1, fixed_alloc());
    let check2 = b.variant(check, 1, vec![Op::ShadowCount(SV_COUNTER), Op::Work(500, 1500)]);
    let free2 = b.variant(
        free,
        1,
        vec![Op::ObjOldest, Op::ShadowFree(SV_COUNTER), Op::ShadowFree(SV_LEAK), Op::Work(500, 1000), Op::ObjFree],
    );
    let mut sc = scenario("shadow-leak", ALL[0].about, p, b.build()?);
    sc.loaded = vec![SHADOW_MOD];
    for _ in 0..SHADOW_WORKERS {
        sc.tasks.push(kthread(worker, TaskFlags::empty()));
    }
    background(&mut sc, &k, p.tasks);
    let object = |funcs| ObjectSpec {
        id: SHADOW_MOD,
        name: "livepatch_shadow_mod".into(),
        funcs,
        callbacks: true,
        fail_pre_patch: None,
    };
    // fix1's post_unpatch would free every SV_LEAK variable; it never runs, since fix2
    // replaces fix1 (only the new patch's callbacks run on an atomic replace).
    sc.patches.push(PatchSpec {
        name: "livepatch-shadow-fix1".into(),
        objects: vec![object(vec![(alloc, alloc1), (free, free1)])],
        free_on_unpatch: vec![SV_LEAK],
        ..Default::default()
    });
    sc.patches.push(PatchSpec {
        name: "livepatch-shadow-fix2".into(),
        replace: true,
        objects: vec![object(vec![(alloc, alloc2), (check, check2), (free, free2)])],
        free_on_unpatch: vec![SV_LEAK, SV_COUNTER],
        ..Default::default()
    });
    let first = p.cpus;
    sc.script = vec![after(10 * MS, Action::Enable(0)), settled(30 * MS, Action::Enable(1))];
    for w in 0..SHADOW_WORKERS {
        let step = if w == 0 { settled(30 * MS, Action::Kill(first)) } else { after(0, Action::Kill(first + w)) };
        sc.script.push(step);
    }
    sc.script.extend([after(50 * MS, Action::Disable(1)), settled(MS, Action::Nop)]);
    Ok(sc)
}

/// `system-state`: three cumulative patches of `sys_getpid` declaring system state
/// [`STATE_ID`]: `state-v1` sets it up, `state-v2` takes it over (its `pre_patch` reads the
/// data through `prev_state`), `state-v1-again` is refused (`IncompatibleState`) while the
/// machine keeps running; disabling the replaced `state-v1` is refused too; `state-v2` is
/// disabled last and releases the state.
fn system_state(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let v: Vec<_> = (0..3).map(|i| b.variant(k.sys_getpid, i, vec![Op::Work(300, 700)])).collect();
    let mut sc = scenario("system-state", ALL[1].about, p, b.build()?);
    background(&mut sc, &k, p.tasks);
    for (i, (name, version)) in [("state-v1", 1), ("state-v2", 2), ("state-v1-again", 1)].into_iter().enumerate() {
        let mut patch = patch(name, &[(k.sys_getpid, v[i])]);
        patch.replace = true;
        patch.objects[0].callbacks = true;
        patch.states = vec![(STATE_ID, version)];
        sc.patches.push(patch);
    }
    sc.script = vec![
        after(10 * MS, Action::Enable(0)),
        settled(20 * MS, Action::Enable(1)),
        settled(20 * MS, Action::Enable(2)),
        after(20 * MS, Action::Disable(0)),
        after(20 * MS, Action::Disable(1)),
        settled(MS, Action::Nop),
    ];
    Ok(sc)
}
