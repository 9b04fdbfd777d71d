//! The Linux livepatch selftests that apply to a consistency engine
//! (`tools/testing/selftests/livepatch`), as scenarios with exact expected outcomes.

use super::build::*;
use super::{Action, ObjectSpec, Params, PatchSpec, Scenario, ScenarioDef};
use crate::machine::code::{CodeBuilder, CodeError, Op, SleepFor, SleepKind};
use livepatch_core::backend::TaskFlags;
use livepatch_core::ObjectId;

/// The parity scenarios.
pub const ALL: [ScenarioDef; 7] = [
    ScenarioDef {
        name: "basic",
        group: "parity",
        about: "basic patch and unpatch (test-livepatch.sh: basic function patching)",
        defaults: SMALL,
        build: basic,
    },
    ScenarioDef {
        name: "multiple",
        group: "parity",
        about: "two non-replace patches on different functions, enabled and disabled in turn",
        defaults: SMALL,
        build: multiple,
    },
    ScenarioDef {
        name: "replace3",
        group: "parity",
        about: "atomic replace of two stacked patches by a third; the replaced ones are gone",
        defaults: SMALL,
        build: replace3,
    },
    ScenarioDef {
        name: "callbacks",
        group: "parity",
        about: "callbacks for loaded, late and going objects; pre-patch failures cancel (test-callbacks.sh)",
        defaults: SMALL,
        build: callbacks,
    },
    ScenarioDef {
        name: "busy-target",
        group: "parity",
        about: "a worker sleeps in the patched function: the transition stays pending; reversing completes it",
        defaults: SMALL,
        build: busy_target,
    },
    ScenarioDef {
        name: "syscall",
        group: "parity",
        about: "a syscall-heavy workload: user tasks switch at exit to user mode (test-syscall.sh)",
        defaults: Params { tasks: 40, cpus: 4, seed: 1 },
        build: syscall,
    },
    ScenarioDef {
        name: "force",
        group: "parity",
        about: "a stuck transition forced to completion; the forced patch's code is never released",
        defaults: SMALL,
        build: force,
    },
];

const SMALL: Params = Params { tasks: 16, cpus: 4, seed: 1 };

pub(super) fn scenario(name: &str, about: &str, p: &Params, code: crate::machine::code::CodeTable) -> Scenario {
    Scenario {
        name: name.into(),
        about: about.into(),
        code,
        machine: config(p.cpus, p.seed),
        tasks: Vec::new(),
        patches: Vec::new(),
        loaded: Vec::new(),
        script: Vec::new(),
        limit_ns: 30 * S,
        settle_ns: 20 * MS,
    }
}

pub(super) fn background(sc: &mut Scenario, k: &Kernel, n: usize) {
    for i in 0..n {
        if i % 4 == 3 {
            sc.tasks.push(kthread(k.worker_thread, TaskFlags::SELF_CHECKS));
        } else {
            sc.tasks.push(user(&[k.sys_getpid, k.sys_read, k.sys_write], (20 * US, 500 * US)));
        }
    }
}

fn basic(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let v = b.variant(k.sys_getpid, 0, vec![Op::Work(300, 700)]);
    let mut sc = scenario("basic", ALL[0].about, p, b.build()?);
    background(&mut sc, &k, p.tasks);
    sc.patches.push(patch("livepatch-sample", &[(k.sys_getpid, v)]));
    sc.script = vec![after(10 * MS, Action::Enable(0)), settled(20 * MS, Action::Disable(0)), settled(MS, Action::Nop)];
    Ok(sc)
}

fn multiple(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let v0 = b.variant(k.sys_getpid, 0, vec![Op::Work(300, 700)]);
    let v1 = b.variant(k.vfs_write, 1, vec![Op::Work(3 * US, 9 * US)]);
    let mut sc = scenario("multiple", ALL[1].about, p, b.build()?);
    background(&mut sc, &k, p.tasks);
    sc.patches.push(patch("p1", &[(k.sys_getpid, v0)]));
    sc.patches.push(patch("p2", &[(k.vfs_write, v1)]));
    sc.script = vec![
        after(10 * MS, Action::Enable(0)),
        settled(10 * MS, Action::Enable(1)),
        settled(10 * MS, Action::Disable(1)),
        settled(10 * MS, Action::Disable(0)),
        settled(MS, Action::Nop),
    ];
    Ok(sc)
}

fn replace3(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let v0 = b.variant(k.sys_getpid, 0, vec![Op::Work(300, 700)]);
    let v1 = b.variant(k.vfs_write, 1, vec![Op::Work(3 * US, 9 * US)]);
    // The cumulative patch keeps the getpid fix, drops the write fix (a nop reverts it) and
    // adds a read fix whose variant calls a new helper.
    let helper = b.helper("read_check", 2, vec![Op::Work(100, 200)]);
    let v2a = b.variant(k.sys_getpid, 2, vec![Op::Work(300, 700)]);
    let v2b = b.variant(k.vfs_read, 2, vec![Op::Call(helper), Op::Work(US, 4 * US), Op::Call(k.pipe_read)]);
    let mut sc = scenario("replace3", ALL[2].about, p, b.build()?);
    background(&mut sc, &k, p.tasks);
    sc.patches.push(patch("p1", &[(k.sys_getpid, v0)]));
    sc.patches.push(patch("p2", &[(k.vfs_write, v1)]));
    let mut cumulative = patch("p3-replace", &[(k.sys_getpid, v2a), (k.vfs_read, v2b)]);
    cumulative.replace = true;
    sc.patches.push(cumulative);
    sc.script = vec![
        after(10 * MS, Action::Enable(0)),
        settled(10 * MS, Action::Enable(1)),
        settled(10 * MS, Action::Enable(2)),
        // The replaced patches are gone: disabling one is refused.
        settled(50 * MS, Action::Disable(0)),
        after(MS, Action::Disable(2)),
        settled(MS, Action::Nop),
    ];
    Ok(sc)
}

fn callbacks(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let m1 = ObjectId(1);
    let m2 = ObjectId(2);
    let mod_work = b.declare("test_klp_callbacks_mod_work", m1);
    b.define(mod_work, vec![Op::Work(5 * US, 20 * US)]);
    let mod2_work = b.declare("test_klp_callbacks_mod2_work", m2);
    b.define(mod2_work, vec![Op::Work(5 * US, 20 * US)]);
    let mod_main = b.func(
        "mod_worker",
        vec![
            Op::Call(mod_work),
            Op::Call(mod2_work),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(MS, 5 * MS)),
            Op::Loop,
        ],
    );
    let v_getpid0 = b.variant(k.sys_getpid, 0, vec![Op::Work(300, 700)]);
    let v_mod0 = b.variant(mod_work, 0, vec![Op::Work(5 * US, 20 * US)]);
    let v_getpid1 = b.variant(k.sys_getpid, 1, vec![Op::Work(300, 700)]);
    let v_getpid2 = b.variant(k.sys_getpid, 2, vec![Op::Work(300, 700)]);
    let v_mod2 = b.variant(mod2_work, 2, vec![Op::Work(5 * US, 20 * US)]);
    let mut sc = scenario("callbacks", ALL[3].about, p, b.build()?);
    background(&mut sc, &k, p.tasks);
    sc.tasks.push(kthread(mod_main, TaskFlags::empty()));
    let obj = |id: ObjectId, name: &str, funcs, fail| ObjectSpec {
        id,
        name: name.into(),
        funcs,
        callbacks: true,
        fail_pre_patch: fail,
    };
    sc.patches.push(PatchSpec {
        name: "p0".into(),
        replace: false,
        objects: vec![
            obj(ObjectId::VMLINUX, "vmlinux", vec![(k.sys_getpid, v_getpid0)], None),
            obj(m1, "mod1", vec![(mod_work, v_mod0)], None),
        ],
        ..Default::default()
    });
    sc.patches.push(PatchSpec {
        name: "p1".into(),
        replace: false,
        objects: vec![obj(ObjectId::VMLINUX, "vmlinux", vec![(k.sys_getpid, v_getpid1)], Some(-19))],
        ..Default::default()
    });
    sc.patches.push(PatchSpec {
        name: "p2".into(),
        replace: false,
        objects: vec![
            obj(ObjectId::VMLINUX, "vmlinux", vec![(k.sys_getpid, v_getpid2)], None),
            obj(m2, "mod2", vec![(mod2_work, v_mod2)], Some(-22)),
        ],
        ..Default::default()
    });
    sc.script = vec![
        // Test 1: target module loaded before the patch.
        after(5 * MS, Action::Load(m1)),
        after(5 * MS, Action::Enable(0)),
        // Test 2: the target module goes away and comes back (late) while patched.
        settled(10 * MS, Action::Unload(m1)),
        after(10 * MS, Action::Load(m1)),
        after(10 * MS, Action::Disable(0)),
        // Test 3: a failing pre_patch cancels the enable.
        settled(10 * MS, Action::Enable(1)),
        // Test 4: a late module whose pre_patch fails is refused.
        after(10 * MS, Action::Enable(2)),
        settled(10 * MS, Action::Load(m2)),
        after(10 * MS, Action::Disable(2)),
        settled(MS, Action::Nop),
    ];
    Ok(sc)
}

fn busy(p: &Params, name: &str, about: &str) -> Result<(Scenario, Kernel), CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let work = b.func(
        "busymod_work_func",
        vec![Op::Work(10 * US, 20 * US), Op::Sleep(SleepKind::Uninterruptible, SleepFor::Forever)],
    );
    let main = b.func("busymod_worker", vec![Op::Call(work), Op::Loop]);
    let v =
        b.variant(work, 0, vec![Op::Work(10 * US, 20 * US), Op::Sleep(SleepKind::Uninterruptible, SleepFor::Forever)]);
    let mut sc = scenario(name, about, p, b.build()?);
    background(&mut sc, &k, p.tasks);
    sc.tasks.push(kthread(main, TaskFlags::empty()));
    sc.patches.push(patch("p-busy", &[(work, v)]));
    Ok((sc, k))
}

fn busy_target(p: &Params) -> Result<Scenario, CodeError> {
    let (mut sc, _) = busy(p, "busy-target", ALL[4].about)?;
    sc.script = vec![after(10 * MS, Action::Enable(0)), after(5 * S, Action::Reverse), settled(MS, Action::Nop)];
    Ok(sc)
}

fn force(p: &Params) -> Result<Scenario, CodeError> {
    let (mut sc, _) = busy(p, "force", ALL[6].about)?;
    sc.script = vec![
        after(10 * MS, Action::Enable(0)),
        after(3 * S, Action::Force),
        // A forced patch can be disabled, but its code is never released.
        after(10 * MS, Action::Disable(0)),
        after(2 * S, Action::Force),
        settled(MS, Action::Nop),
    ];
    Ok(sc)
}

fn syscall(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let v = b.variant(k.sys_getpid, 0, vec![Op::Work(300, 700)]);
    let mut sc = scenario("syscall", ALL[5].about, p, b.build()?);
    for _ in 0..p.tasks {
        sc.tasks.push(user(&[k.sys_getpid], (5 * US, 20 * US)));
    }
    sc.patches.push(patch("syscall-fix", &[(k.sys_getpid, v)]));
    sc.script = vec![after(10 * MS, Action::Enable(0)), settled(10 * MS, Action::Disable(0)), settled(MS, Action::Nop)];
    Ok(sc)
}
