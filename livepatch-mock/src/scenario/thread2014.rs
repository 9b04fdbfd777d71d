//! The hard cases of the 2014 consistency-model thread: a CPU-bound kthread, a kthread
//! sleeping in a patched function, a patch on the schedule path, and tasks that need a fake
//! signal. Each is meant to be run under every model and compared.

use super::build::*;
use super::{Action, Params, Scenario, ScenarioDef};
use crate::machine::code::{CodeBuilder, CodeError, Op, SleepFor, SleepKind};
use livepatch_core::backend::TaskFlags;

/// The 2014 scenarios.
pub const ALL: [ScenarioDef; 5] = [
    ScenarioDef {
        name: "cpu-bound-kthread",
        group: "2014",
        about: "a kthread alone on its CPU calls the patched function in a tight loop, never sleeping nor calling cond_resched",
        defaults: Params { tasks: 8, cpus: 2, seed: 1 },
        build: cpu_bound,
    },
    ScenarioDef {
        name: "sleeping-kthread",
        group: "2014",
        about: "a kthread sleeps (interruptibly, 60 s at a time) inside the patched function",
        defaults: Params { tasks: 8, cpus: 2, seed: 1 },
        build: sleeping_kthread,
    },
    ScenarioDef {
        name: "schedule-path",
        group: "2014",
        about: "the patch replaces schedule(): every sleeping task has it on its stack",
        defaults: Params { tasks: 32, cpus: 4, seed: 1 },
        build: schedule_path,
    },
    ScenarioDef {
        name: "fake-signal",
        group: "2014",
        about: "daemons sleep in the patched poll for 20-40 s: only a fake signal moves them soon",
        defaults: Params { tasks: 50, cpus: 4, seed: 1 },
        build: fake_signal,
    },
    ScenarioDef {
        name: "prototype-change",
        group: "2014",
        about: "the patch changes a callee's prototype (A calls B calls C; A and C patched): old chains must not reach new code",
        defaults: Params { tasks: 32, cpus: 4, seed: 1 },
        build: prototype_change,
    },
];

fn base(name: &str, about: &str, p: &Params, code: crate::machine::code::CodeTable) -> Scenario {
    Scenario {
        name: name.into(),
        about: about.into(),
        code,
        machine: config(p.cpus, p.seed),
        tasks: Vec::new(),
        patches: Vec::new(),
        loaded: Vec::new(),
        script: vec![after(20 * MS, Action::Enable(0)), settled(MS, Action::Nop)],
        limit_ns: 60 * S,
        settle_ns: 10 * MS,
    }
}

fn cpu_bound(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let step = b.func("crunch_step", vec![Op::Work(100 * US, 300 * US)]);
    // Some code of its own between the calls: where an interrupt finds it outside the patch.
    let main = b.func("crunch_main", vec![Op::SafePoint, Op::Work(20 * US, 50 * US), Op::Call(step), Op::Loop]);
    let v = b.variant(step, 0, vec![Op::Work(100 * US, 300 * US)]);
    let mut sc = base("cpu-bound-kthread", ALL[0].about, p, b.build()?);
    let last = p.cpus.saturating_sub(1);
    sc.tasks.push(on_cpu(kthread(main, TaskFlags::empty()), last));
    for _ in 1..p.tasks.max(1) {
        let t = user(&[k.sys_getpid, k.sys_read], (50 * US, 500 * US));
        sc.tasks.push(if last > 0 { on_cpu(t, 0) } else { t });
    }
    sc.patches.push(patch("crunch-fix", &[(step, v)]));
    sc.limit_ns = 20 * S;
    Ok(sc)
}

fn sleeping_kthread(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let wait = b.func(
        "watchdog_wait",
        vec![Op::Work(5 * US, 10 * US), Op::Sleep(SleepKind::Interruptible, SleepFor::Between(60 * S, 60 * S))],
    );
    let main = b.func("watchdog", vec![Op::SafePoint, Op::Call(wait), Op::Loop]);
    let v = b.variant(
        wait,
        0,
        vec![Op::Work(5 * US, 10 * US), Op::Sleep(SleepKind::Interruptible, SleepFor::Between(60 * S, 60 * S))],
    );
    let mut sc = base("sleeping-kthread", ALL[1].about, p, b.build()?);
    sc.tasks.push(kthread(main, TaskFlags::empty()));
    for _ in 1..p.tasks.max(1) {
        sc.tasks.push(user(&[k.sys_getpid, k.sys_read], (50 * US, 500 * US)));
    }
    sc.patches.push(patch("watchdog-fix", &[(wait, v)]));
    // Past the end of the kthread's first wait (60 s): what each model does then.
    sc.limit_ns = 90 * S;
    Ok(sc)
}

fn schedule_path(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let plain = b.func(
        "plain_kthread",
        vec![
            Op::Call(k.process_one_work),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(10 * MS, 100 * MS)),
            Op::Loop,
        ],
    );
    let v = b.variant(k.schedule, 0, vec![Op::Block]);
    let mut sc = base("schedule-path", ALL[2].about, p, b.build()?);
    let n = p.tasks.max(4);
    for i in 0..n {
        sc.tasks.push(match i % 4 {
            0 => kthread(k.worker_thread, TaskFlags::SELF_CHECKS | TaskFlags::FREEZABLE),
            1 => kthread(plain, TaskFlags::FREEZABLE),
            _ => user(&[k.sys_read, k.sys_getpid], (50 * US, 500 * US)),
        });
    }
    sc.patches.push(patch("schedule-fix", &[(k.schedule, v)]));
    sc.limit_ns = 30 * S;
    Ok(sc)
}

fn fake_signal(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (20 * S, 40 * S), (MS, 2 * MS));
    let v = b.variant(
        k.do_sys_poll,
        0,
        vec![
            Op::Work(US, 2 * US),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(20 * S, 40 * S)),
            Op::Work(US, 2 * US),
        ],
    );
    let mut sc = base("fake-signal", ALL[3].about, p, b.build()?);
    for _ in 0..p.tasks.max(1) {
        sc.tasks.push(user(&[k.sys_poll], (10 * US, 100 * US)));
    }
    sc.patches.push(patch("poll-fix", &[(k.do_sys_poll, v)]));
    sc.limit_ns = 60 * S;
    Ok(sc)
}

fn prototype_change(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let c = b.func("fill_info", vec![Op::Work(US, 3 * US)]);
    let mid = b.func("copy_info", vec![Op::Work(US, 2 * US), Op::Call(c)]);
    let a = b.func(
        "do_info",
        vec![
            Op::Work(US, 2 * US),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(5 * MS, 50 * MS)),
            Op::Call(mid),
        ],
    );
    let sys_info = b.func("sys_info", vec![Op::Call(a)]);
    // The fix adds an argument: the new do_info and the new fill_info agree on it, the old
    // ones on the old prototype; a chain mixing them is the bug the consistency model prevents.
    let a2 = b.variant(
        a,
        0,
        vec![
            Op::Work(US, 2 * US),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(5 * MS, 50 * MS)),
            Op::Call(mid),
        ],
    );
    let c2 = b.variant(c, 0, vec![Op::Work(US, 3 * US)]);
    let mut sc = base("prototype-change", ALL[4].about, p, b.build()?);
    for i in 0..p.tasks.max(1) {
        sc.tasks.push(if i % 8 == 7 {
            kthread(k.worker_thread, TaskFlags::SELF_CHECKS)
        } else {
            user(&[sys_info, k.sys_getpid], (50 * US, 500 * US))
        });
    }
    sc.patches.push(patch("info-fix", &[(a, a2), (c, c2)]));
    sc.script = vec![after(20 * MS, Action::Enable(0)), settled(20 * MS, Action::Disable(0)), settled(MS, Action::Nop)];
    sc.limit_ns = 30 * S;
    Ok(sc)
}
