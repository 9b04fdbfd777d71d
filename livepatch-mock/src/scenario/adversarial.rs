//! Scenarios that make a wrong backend fail: an IPI landing inside the redirect handler, a
//! task waking between an unpinned check and its switch, task work running in kernel
//! context. Each one repeats enable/disable cycles, so every direction is exercised.

use super::build::*;
use super::{Action, Params, Scenario, ScenarioDef, Step};
use crate::machine::code::{CodeBuilder, CodeError, Op, SleepFor, SleepKind};
use livepatch_core::backend::TaskFlags;

/// The adversarial scenarios.
pub const ALL: [ScenarioDef; 3] = [
    ScenarioDef {
        name: "ipi-in-handler",
        group: "adversarial",
        about: "a CPU-bound kthread per CPU calls a patched function in a tight loop: the per-CPU pass's IPI often lands inside the redirect handler",
        defaults: Params { tasks: 4, cpus: 4, seed: 1 },
        build: ipi_in_handler,
    },
    ScenarioDef {
        name: "wake-race",
        group: "adversarial",
        about: "tasks sleep briefly in an unpatched wait, then call the patched function: an unpinned check races with the wake-up",
        defaults: Params { tasks: 256, cpus: 4, seed: 1 },
        build: wake_race,
    },
    ScenarioDef {
        name: "io-uring",
        group: "adversarial",
        about: "io_uring waiters run task work inside the patched wait function (kernel context), not only on the way to user mode",
        defaults: Params { tasks: 32, cpus: 4, seed: 1 },
        build: io_uring,
    },
];

/// `n` enable/disable cycles of patch `p`, each step after the previous transition ended.
fn cycles(p: usize, n: usize, start: u64, gap: u64) -> Vec<Step> {
    let mut script = vec![after(start, Action::Enable(p))];
    for i in 0..n {
        script.push(settled(gap, Action::Disable(p)));
        if i + 1 < n {
            script.push(settled(gap, Action::Enable(p)));
        }
    }
    script.push(settled(gap, Action::Nop));
    script
}

fn base(def: usize, p: &Params, code: crate::machine::code::CodeTable) -> Scenario {
    Scenario {
        name: ALL[def].name.into(),
        about: ALL[def].about.into(),
        code,
        machine: config(p.cpus, p.seed),
        tasks: Vec::new(),
        patches: Vec::new(),
        loaded: Vec::new(),
        script: cycles(0, 10, 2 * MS, MS),
        limit_ns: 20 * S,
        settle_ns: 5 * MS,
    }
}

fn ipi_in_handler(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    let step = b.func("spin_step", vec![Op::Work(100, 200)]);
    let main = b.func("spin_main", vec![Op::Work(10, 20), Op::Call(step), Op::Loop]);
    let v = b.variant(step, 0, vec![Op::Work(100, 200)]);
    let b2 = b.variant(step, 1, vec![Op::Work(100, 200)]);
    let mut sc = base(0, p, b.build()?);
    // Dense (about 100 events per microsecond): expedited grace periods (20 µs) and short
    // gaps, so that 10⁵ events hold several enable/disable cycles.
    sc.machine.grace_ns = 20 * US;
    // A first patch, then cycles of a second one on top: in both directions the original's
    // fentry site is not code being switched away from (the first patch's variant is).
    sc.script = vec![after(20 * US, Action::Enable(0))];
    sc.script
        .extend(cycles(1, 10, 20 * US, 20 * US).into_iter().map(|s| Step { wait: super::Wait::Settled(20 * US), ..s }));
    sc.settle_ns = 50 * US;
    // About 10⁷ events per 100 ms: enough for the back-to-back passes the tests use.
    sc.limit_ns = 100 * MS;
    for i in 0..p.tasks.max(1) {
        sc.tasks.push(on_cpu(kthread(main, TaskFlags::empty()), i as u32 % p.cpus.max(1)));
    }
    let v2 = b2;
    sc.patches.push(patch("spin-fix", &[(step, v)]));
    sc.patches.push(patch("spin-fix2", &[(step, v2)]));
    Ok(sc)
}

fn wake_race(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    // The lookup reads a block: it sleeps inside the patched function.
    let lookup_body = vec![
        Op::Work(US, 3 * US),
        Op::Sleep(SleepKind::Uninterruptible, SleepFor::Between(50 * US, 500 * US)),
        Op::Work(US, 2 * US),
    ];
    let lookup = b.func("ext4_lookup", lookup_body.clone());
    let wait =
        b.func("wait_on_buffer", vec![Op::Sleep(SleepKind::Uninterruptible, SleepFor::Between(20 * US, 500 * US))]);
    let sys = b.func("sys_openat", vec![Op::Work(US, 2 * US), Op::Call(wait), Op::Call(lookup), Op::Work(US, 2 * US)]);
    let v = b.variant(lookup, 0, lookup_body);
    let mut sc = base(1, p, b.build()?);
    for _ in 0..p.tasks.max(1) {
        sc.tasks.push(user(&[sys], (5 * US, 50 * US)));
    }
    sc.patches.push(patch("lookup-fix", &[(lookup, v)]));
    Ok(sc)
}

fn io_uring(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (10 * MS, 100 * MS), (MS, 2 * MS));
    // io_cqring_wait(): reap completions, run pending task work, sleep until more arrive.
    let body = vec![
        Op::Work(50 * US, 300 * US),
        Op::TaskWork,
        Op::Sleep(SleepKind::Interruptible, SleepFor::Between(50 * US, 500 * US)),
        Op::TaskWork,
        Op::Work(20 * US, 100 * US),
    ];
    let wait = b.func("io_cqring_wait", body.clone());
    let enter = b.func("io_uring_enter", vec![Op::Work(US, 3 * US), Op::Call(wait)]);
    let v = b.variant(wait, 0, body);
    let mut sc = base(2, p, b.build()?);
    for i in 0..p.tasks.max(1) {
        let syscalls = if i % 4 == 0 { vec![enter, k.sys_getpid] } else { vec![enter] };
        sc.tasks.push(user(&syscalls, (2 * US, 20 * US)));
    }
    sc.patches.push(patch("io-wait-fix", &[(wait, v)]));
    Ok(sc)
}
