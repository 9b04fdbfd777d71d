//! Scenarios where an operation races with a transition in progress: a module loading while an
//! atomic replace is being enabled (and after that enable was reversed), a module going while
//! a patch of it is being enabled, and the engine moving on while a task's own check is
//! preempted in the middle. A core that gets the replace patch's nops for the module wrong, or
//! that switches a task on a check made against another transition, lets a task run two
//! universes or be switched with code being switched away from on its stack; the oracle
//! catches each. A core that still checks a going module's code holds the transition forever.

use super::build::*;
use super::{Action, ObjectSpec, Params, PatchSpec, Scenario, ScenarioDef, Step, Wait};
use crate::machine::code::{CodeBuilder, CodeError, Op, SleepFor, SleepKind};
use livepatch_core::backend::TaskFlags;
use livepatch_core::ObjectId;

/// The race scenarios.
pub const ALL: [ScenarioDef; 5] = [
    ScenarioDef {
        name: "late-module-replace",
        group: "adversarial",
        about: "a module loads while an atomic replace that drops a patch of it is being enabled: kthreads sleep in the replaced patch's variant of the module's function",
        defaults: Params { tasks: 8, cpus: 4, seed: 1 },
        build: late_module_replace,
    },
    ScenarioDef {
        name: "late-module-replace-reversed",
        group: "adversarial",
        about: "the same module loads after the atomic replace's enable was reversed: kthreads still in the replace patch's universe call the module's function",
        defaults: Params { tasks: 8, cpus: 4, seed: 1 },
        build: late_module_replace_reversed,
    },
    ScenarioDef {
        name: "preempted-task-work",
        group: "adversarial",
        about: "io_uring waiters run task work after a wait one patch patches, inside a wait another patches; the second is enabled as soon as the first completes: with TaskWorkMode::Preemptible a task's check spans both transitions",
        defaults: Params { tasks: 32, cpus: 4, seed: 1 },
        build: preempted_task_work,
    },
    ScenarioDef {
        name: "preempted-task-work-reversed",
        group: "adversarial",
        about: "the same waiters; the wait's patch is enabled, reversed and reversed again a millisecond apart: with TaskWorkMode::Preemptible a task's check spans both reversals",
        defaults: Params { tasks: 32, cpus: 4, seed: 1 },
        build: preempted_task_work_reversed,
    },
    ScenarioDef {
        name: "going-module-unhook-fails",
        group: "faults",
        about: "a module's kthread sleeps for good in the module's function an enable in transition patches; the module goes and the hook on that function cannot be removed: the transition completes (the kernel checks patched objects only)",
        defaults: Params { tasks: 8, cpus: 4, seed: 1 },
        build: going_module_unhook_fails,
    },
];

/// The module both scenarios load late.
pub const MODULE: ObjectId = ObjectId(1);

/// Patch 0 patches the module's `mod_wait` (the module is not loaded: nothing to do yet);
/// patch 1, an atomic replace, patches only `dev_wait` of the core kernel, so it drops patch
/// 0's `mod_wait`. Kthreads loop over `dev_wait` and `mod_wait` (both sleep, uninterruptibly)
/// and an interruptible sleep of their own, where the sweep can switch them; one more kthread
/// sleeps 50–100 ms at a time in `dev_hold`, which the replace patches too, so the replace's
/// enable lasts that long.
fn base(def: usize, p: &Params, script: Vec<Step>) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let wait_body = vec![
        Op::Work(US, 3 * US),
        Op::Sleep(SleepKind::Uninterruptible, SleepFor::Between(MS, 3 * MS)),
        Op::Work(US, 2 * US),
    ];
    let dev_wait = b.func("dev_wait", wait_body.clone());
    let mod_wait = b.declare("mod_wait", MODULE);
    b.define(mod_wait, wait_body.clone());
    let main = b.func(
        "mod_worker",
        vec![
            Op::Call(dev_wait),
            Op::Call(mod_wait),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(MS, 3 * MS)),
            Op::Loop,
        ],
    );
    // One more kthread holds the replace's enable open: it sleeps long in `dev_hold`.
    let hold_body = vec![Op::Sleep(SleepKind::Uninterruptible, SleepFor::Between(50 * MS, 100 * MS))];
    let dev_hold = b.func("dev_hold", hold_body.clone());
    let holder = b.func(
        "holder",
        vec![Op::Call(dev_hold), Op::Sleep(SleepKind::Interruptible, SleepFor::Between(MS, 3 * MS)), Op::Loop],
    );
    let mod_wait_0 = b.variant(mod_wait, 0, wait_body.clone());
    let dev_wait_1 = b.variant(dev_wait, 1, wait_body);
    let dev_hold_1 = b.variant(dev_hold, 1, hold_body);
    let code = b.build()?;
    let mut tasks: Vec<_> = (0..p.tasks.max(1)).map(|_| kthread(main, TaskFlags::empty())).collect();
    tasks.push(kthread(holder, TaskFlags::empty()));
    let patches = vec![
        PatchSpec {
            name: "mod-fix".into(),
            objects: vec![ObjectSpec {
                id: MODULE,
                name: "mod".into(),
                funcs: vec![(mod_wait, mod_wait_0)],
                callbacks: false,
                fail_pre_patch: None,
            }],
            ..Default::default()
        },
        PatchSpec { replace: true, ..patch("cumulative", &[(dev_wait, dev_wait_1), (dev_hold, dev_hold_1)]) },
    ];
    Ok(Scenario {
        name: ALL[def].name.into(),
        about: ALL[def].about.into(),
        code,
        machine: config(p.cpus, p.seed),
        tasks,
        patches,
        loaded: Vec::new(),
        script,
        limit_ns: 10 * S,
        settle_ns: 10 * MS,
    })
}

/// Patch 0, then the replace; the module loads 200 µs into the replace's transition, while
/// kthreads sleeping in the original `dev_wait` hold it open. Woken, they call `mod_wait` in
/// the start universe — patch 0's variant, below the replace patch's new nop — and sleep there:
/// code being switched away from, which the sweep must not switch them on.
fn late_module_replace(p: &Params) -> Result<Scenario, CodeError> {
    let script = vec![
        after(MS, Action::Enable(0)),
        settled(MS, Action::Enable(1)),
        after(200 * US, Action::Load(MODULE)),
        settled(MS, Action::Nop),
    ];
    base(0, p, script)
}

/// Patch 0, then the replace, reversed 2.5 ms in (after three passes); the module loads 100 µs
/// later. Kthreads the passes switched to the replace patch's universe and that sleep in its
/// `dev_wait` stay there until they leave it; woken, they call `mod_wait`, which that universe runs
/// as the original (the replace patch drops patch 0), not as patch 0's variant.
fn late_module_replace_reversed(p: &Params) -> Result<Scenario, CodeError> {
    let script = vec![
        after(MS, Action::Enable(0)),
        settled(MS, Action::Enable(1)),
        after(2_500 * US, Action::Reverse),
        after(100 * US, Action::Load(MODULE)),
        settled(MS, Action::Nop),
    ];
    base(1, p, script)
}

/// io_uring waiters: `io_cqring_wait` waits in `io_wait_event` (uninterruptibly: a kick does
/// not cut it short, it queues task work), then runs pending task work from a callee
/// (`io_run_task_work`), so a task's own check walks a frame of its own, then the wait (patch
/// 0's function), then the syscall. Patch 1 patches `io_wait_event`: the kicks of its enable
/// go to tasks sleeping there, which run their task work after they return from it; the
/// kicks of patch 0's enable, to tasks in the original `io_cqring_wait`.
fn io_waiters(def: usize, p: &Params, script: Vec<Step>) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let event_body = vec![Op::Sleep(SleepKind::Uninterruptible, SleepFor::Between(MS, 5 * MS))];
    let wait_event = b.func("io_wait_event", event_body.clone());
    let run_task_work = b.func("io_run_task_work", vec![Op::TaskWork, Op::Work(US, 2 * US)]);
    let body =
        vec![Op::Work(5 * US, 20 * US), Op::Call(wait_event), Op::Call(run_task_work), Op::Work(5 * US, 20 * US)];
    let wait = b.func("io_cqring_wait", body.clone());
    let enter = b.func("io_uring_enter", vec![Op::Work(US, 3 * US), Op::Call(wait)]);
    let wait_0 = b.variant(wait, 0, body);
    let wait_event_1 = b.variant(wait_event, 1, event_body);
    let code = b.build()?;
    let tasks = (0..p.tasks.max(1)).map(|_| user(&[enter], (2 * US, 20 * US))).collect();
    let mut script = script;
    script.push(settled(MS, Action::Nop));
    if let Some(first) = script.first_mut() {
        first.wait = Wait::For(MS);
    }
    Ok(Scenario {
        name: ALL[def].name.into(),
        about: ALL[def].about.into(),
        code,
        machine: config(p.cpus, p.seed),
        tasks,
        patches: vec![patch("wait-fix", &[(wait, wait_0)]), patch("event-fix", &[(wait_event, wait_event_1)])],
        loaded: Vec::new(),
        script,
        limit_ns: 20 * S,
        settle_ns: 10 * MS,
    })
}

/// Ten times: patch 1, then patch 0 10 µs after patch 1's enable completed; both disabled. A
/// check preempted across the end of patch 1's enable and the start of patch 0's was made
/// against patch 1's transition, in which the original `io_cqring_wait` is not being switched
/// away from; its switch lands in patch 0's, where it is.
fn preempted_task_work(p: &Params) -> Result<Scenario, CodeError> {
    let mut script = Vec::new();
    for _ in 0..10 {
        script.extend([
            settled(MS, Action::Enable(1)),
            settled(10 * US, Action::Enable(0)),
            settled(100 * US, Action::Disable(0)),
            settled(10 * US, Action::Disable(1)),
        ]);
    }
    io_waiters(2, p, script)
}

/// Ten times: patch 0, its enable reversed 1.5 ms in and reversed again a millisecond later,
/// then disabled. A check preempted across both reversals looked at the original
/// `io_cqring_wait` while the transition went the other way (where it is not being switched
/// away from), and its switch lands after the second reversal, where it is again.
fn preempted_task_work_reversed(p: &Params) -> Result<Scenario, CodeError> {
    let mut script = Vec::new();
    for _ in 0..10 {
        script.extend([
            settled(MS, Action::Enable(0)),
            after(1_500 * US, Action::Reverse),
            after(MS, Action::Reverse),
            settled(MS, Action::Disable(0)),
        ]);
    }
    io_waiters(3, p, script)
}

/// Patch 0 patches `sys_getpid` and the module's `mod_stuck`. The module's kthread calls
/// `mod_stuck` and sleeps there for good, uninterruptibly: the module's exit does not stop it
/// (a module bug the kernel does not prevent: `delete_module` checks no stacks), and it is
/// never woken, so it never runs the gone code again. The enable waits for it; 20 ms in, the
/// module goes, and `MachineConfig::fail_unhook_on` makes the removal of `mod_stuck`'s hook
/// fail: the hook and the core's slot stay. `klp_module_going` unpatched the object and
/// `klp_check_stack` checks patched objects only, so in the kernel the kthread's frame no
/// longer holds the transition: it completes.
fn going_module_unhook_fails(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let stuck_body = vec![Op::Work(10 * US, 20 * US), Op::Sleep(SleepKind::Uninterruptible, SleepFor::Forever)];
    let mod_stuck = b.declare("mod_stuck", MODULE);
    b.define(mod_stuck, stuck_body.clone());
    let mod_thread = b.declare("mod_thread", MODULE);
    b.define(mod_thread, vec![Op::Call(mod_stuck), Op::Loop]);
    let getpid_0 = b.variant(k.sys_getpid, 0, vec![Op::Work(300, 700)]);
    let mod_stuck_0 = b.variant(mod_stuck, 0, stuck_body);
    let def = &ALL[4];
    let mut sc = super::parity::scenario(def.name, def.about, p, b.build()?);
    super::parity::background(&mut sc, &k, p.tasks);
    sc.tasks.push(kthread(mod_thread, TaskFlags::empty()));
    sc.loaded = vec![MODULE];
    sc.machine.fail_unhook_on = Some(mod_stuck);
    let mut fix = patch("mod-fix", &[(k.sys_getpid, getpid_0)]);
    fix.objects.push(ObjectSpec {
        id: MODULE,
        name: "mod".into(),
        funcs: vec![(mod_stuck, mod_stuck_0)],
        callbacks: false,
        fail_pre_patch: None,
    });
    sc.patches.push(fix);
    sc.script =
        vec![after(10 * MS, Action::Enable(0)), after(20 * MS, Action::Unload(MODULE)), settled(MS, Action::Nop)];
    // Without the kernel's behaviour the enable never completes: 2 s show it.
    sc.limit_ns = 2 * S;
    Ok(sc)
}
