//! Random machines and operation sequences, for property tests and the soak: a small call
//! graph with sleeps in patched functions and a recursion, a module, four patches (one cumulative,
//! one on `schedule()`), and scripts of enable, disable, reverse, force, fork, exit, module load
//! and unload and CPU hot-unplug; optionally a hook that cannot be installed or removed; the
//! walker handing frames one at a time or the saved stack at once.

use super::build::*;
use super::{Action, ObjectSpec, PatchSpec, Scenario, Step, Wait};
use crate::backend::WalkMode;
use crate::machine::code::{CodeBuilder, CodeError, Op, SleepFor, SleepKind};
use crate::machine::rng::Rng;
use livepatch_core::backend::TaskFlags;
use livepatch_core::ObjectId;

/// The machine's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RandomMachine {
    /// CPUs (1–4).
    pub cpus: u32,
    /// User tasks.
    pub users: u32,
    /// Of those, how many exit after a few syscalls.
    pub exiting: u32,
    /// Kthreads.
    pub kthreads: u32,
    /// Seed.
    pub seed: u64,
    /// A hook the tracer refuses to install or to remove.
    pub hook_fault: HookFault,
    /// How the walker hands frames to the core: one at a time, or the saved stack at once (the
    /// core's batched stack check).
    pub walk: WalkMode,
}

/// A tracer fault of a random machine: on `f1` (patched by `r0` and the cumulative `r2`), the
/// module's `m0` (patched by `r2`, installed and removed with the module too) or `schedule()`
/// (patched by `r3`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HookFault {
    /// No fault.
    #[default]
    None,
    /// Installing the hook on function `n % 3` fails
    /// ([`MachineConfig::fail_hook_on`](crate::machine::MachineConfig::fail_hook_on)).
    Install(u8),
    /// Removing the hook on function `n % 3` fails: it stays
    /// ([`MachineConfig::fail_unhook_on`](crate::machine::MachineConfig::fail_unhook_on)).
    Remove(u8),
}

/// A random operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RandomOp {
    /// Enable patch `n % 4`.
    Enable(u8),
    /// Disable patch `n % 4`.
    Disable(u8),
    /// Reverse.
    Reverse,
    /// Force.
    Force,
    /// User task `n % users` forks.
    Fork(u8),
    /// User task `n % users` exits.
    Exit(u8),
    /// CPU `n % cpus` goes offline.
    CpuOffline(u8),
    /// CPU `n % cpus` comes back.
    CpuOnline(u8),
    /// Load the module.
    Load,
    /// Unload the module.
    Unload,
}

/// A random script step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RandomStep {
    /// Delay before it, in microseconds.
    pub delay_us: u32,
    /// Wait for the transition in progress to end first.
    pub settle: bool,
    /// The operation.
    pub op: RandomOp,
}

/// The module of random machines.
pub const MODULE: ObjectId = ObjectId(1);

/// Builds the scenario.
pub fn build(m: &RandomMachine, steps: &[RandomStep]) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (MS, 30 * MS), (MS, 5 * MS));
    let f5 = b.func("f5", vec![Op::Work(US, 5 * US)]);
    let f4 =
        b.func("f4", vec![Op::Work(US, 2 * US), Op::Sleep(SleepKind::Interruptible, SleepFor::Between(MS, 20 * MS))]);
    let f3 = b.func("f3", vec![Op::Call(f5), Op::Work(US, 3 * US)]);
    let f2 = b.func("f2", vec![Op::Call(f4), Op::Call(f5)]);
    let f1 = b.func("f1", vec![Op::Call(f2), Op::Call(f3)]);
    let f0 = b.func("f0", vec![Op::Work(US, 2 * US), Op::Call(f1)]);
    let m0 = b.declare("m0", MODULE);
    b.define(m0, vec![Op::Work(US, 4 * US), Op::Call(f5)]);
    let sys_a = b.func("sys_a", vec![Op::Call(f0)]);
    let sys_b = b.func("sys_b", vec![Op::Call(f2), Op::Call(m0)]);
    // A recursion (`Op::CallBelow`) to a stack of 14 frames, each level then calling `f2`:
    // stacks deeper than the saved walk's batch of eight frames, with patched code inside.
    let rec = b.declare("rec", ObjectId::VMLINUX);
    b.define(rec, vec![Op::Work(US, 2 * US), Op::CallBelow(rec, 14), Op::Call(f2)]);
    let sys_c = b.func(
        "sys_c",
        vec![Op::Call(rec), Op::Call(f3), Op::Sleep(SleepKind::Uninterruptible, SleepFor::Between(MS, 5 * MS))],
    );
    let k_main = b.func(
        "k_main",
        vec![
            Op::SafePoint,
            Op::CondResched,
            Op::Call(f1),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(MS, 10 * MS)),
            Op::Loop,
        ],
    );
    let k_main2 = b.func("k_main2", vec![Op::Call(f4), Op::Call(m0), Op::Loop]);
    // p0: f1 calls a new helper; f3.
    let h0 = b.helper("h0", 0, vec![Op::Work(100, 300)]);
    let f1_0 = b.variant(f1, 0, vec![Op::Call(h0), Op::Call(f2), Op::Call(f3)]);
    let f3_0 = b.variant(f3, 0, vec![Op::Call(f5), Op::Work(US, 3 * US)]);
    // p1: f2 reorders its callees, f4 sleeps differently, and do_exit (the exit path).
    let exit_1 = b.variant(k.do_exit, 1, exit_body((MS, 5 * MS)));
    let f2_1 = b.variant(f2, 1, vec![Op::Call(f5), Op::Call(f4)]);
    let f4_1 = b.variant(
        f4,
        1,
        vec![Op::Work(US, 2 * US), Op::Sleep(SleepKind::Interruptible, SleepFor::Between(MS, 10 * MS))],
    );
    // p2 (cumulative): f1, f5 and the module's m0.
    let f1_2 = b.variant(f1, 2, vec![Op::Call(f2), Op::Call(f3), Op::Work(100, 200)]);
    let f5_2 = b.variant(f5, 2, vec![Op::Work(US, 5 * US)]);
    let m0_2 = b.variant(m0, 2, vec![Op::Work(US, 4 * US), Op::Call(f5)]);
    // p3: schedule() and f0.
    let sched_3 = b.variant(k.schedule, 3, vec![Op::Block]);
    let f0_3 = b.variant(f0, 3, vec![Op::Work(US, 2 * US), Op::Call(f1)]);
    let code = b.build()?;

    let cpus = m.cpus.clamp(1, 8);
    let mut tasks = Vec::new();
    let users = m.users.max(1);
    for i in 0..users {
        let syscalls = [sys_a, sys_b, sys_c, k.sys_getpid, k.sys_read];
        tasks.push(if i < m.exiting {
            user_exiting(&syscalls, (10 * US, 500 * US), 3 + i % 5, k.do_exit)
        } else {
            user(&syscalls, (10 * US, 500 * US))
        });
    }
    for i in 0..m.kthreads {
        tasks.push(if i % 2 == 0 {
            kthread(k_main, TaskFlags::SELF_CHECKS)
        } else {
            kthread(k_main2, TaskFlags::empty())
        });
    }
    let vmlinux = |funcs: Vec<_>| ObjectSpec {
        id: ObjectId::VMLINUX,
        name: "vmlinux".into(),
        funcs,
        callbacks: true,
        fail_pre_patch: None,
    };
    let patches = vec![
        PatchSpec {
            name: "r0".into(),
            replace: false,
            objects: vec![vmlinux(vec![(f1, f1_0), (f3, f3_0)])],
            ..Default::default()
        },
        PatchSpec {
            name: "r1".into(),
            replace: false,
            objects: vec![vmlinux(vec![(f2, f2_1), (f4, f4_1), (k.do_exit, exit_1)])],
            ..Default::default()
        },
        PatchSpec {
            name: "r2-replace".into(),
            replace: true,
            objects: vec![
                vmlinux(vec![(f1, f1_2), (f5, f5_2)]),
                ObjectSpec {
                    id: MODULE,
                    name: "mod".into(),
                    funcs: vec![(m0, m0_2)],
                    callbacks: true,
                    fail_pre_patch: None,
                },
            ],
            ..Default::default()
        },
        PatchSpec {
            name: "r3-sched".into(),
            replace: false,
            objects: vec![vmlinux(vec![(k.schedule, sched_3), (f0, f0_3)])],
            ..Default::default()
        },
    ];
    let first_user = cpus;
    let script = steps
        .iter()
        .map(|s| {
            let ns = u64::from(s.delay_us) * US;
            let action = match s.op {
                RandomOp::Enable(n) => Action::Enable(usize::from(n % 4)),
                RandomOp::Disable(n) => Action::Disable(usize::from(n % 4)),
                RandomOp::Reverse => Action::Reverse,
                RandomOp::Force => Action::Force,
                RandomOp::Fork(n) => Action::Fork(first_user + u32::from(n) % users),
                RandomOp::Exit(n) => Action::Kill(first_user + u32::from(n) % users),
                RandomOp::CpuOffline(n) => Action::CpuOffline(u32::from(n) % cpus),
                RandomOp::CpuOnline(n) => Action::CpuOnline(u32::from(n) % cpus),
                RandomOp::Load => Action::Load(MODULE),
                RandomOp::Unload => Action::Unload(MODULE),
            };
            Step { wait: if s.settle { Wait::Settled(ns) } else { Wait::For(ns) }, action }
        })
        .collect();
    let mut machine = config(cpus, m.seed);
    let faulty = [f1, m0, k.schedule];
    match m.hook_fault {
        HookFault::None => {}
        HookFault::Install(n) => machine.fail_hook_on = Some(faulty[usize::from(n) % faulty.len()]),
        HookFault::Remove(n) => machine.fail_unhook_on = Some(faulty[usize::from(n) % faulty.len()]),
    }
    machine.backend.walk = m.walk;
    Ok(Scenario {
        name: "random".into(),
        about: "a random machine and operation sequence".into(),
        code,
        machine,
        tasks,
        patches,
        loaded: vec![MODULE],
        script,
        limit_ns: 40 * S,
        settle_ns: 20 * MS,
    })
}

/// A random machine and `steps` random steps from `seed` (for the soak).
pub fn generate(seed: u64, steps: usize) -> (RandomMachine, Vec<RandomStep>) {
    let mut r = Rng::new(seed);
    let users = r.range(1, 12) as u32;
    let m = RandomMachine {
        cpus: r.range(1, 4) as u32,
        users,
        exiting: r.range(0, u64::from(users)) as u32,
        kthreads: r.range(0, 5) as u32,
        seed,
        hook_fault: match r.below(8) {
            0 => HookFault::Install(r.range(0, 255) as u8),
            1 => HookFault::Remove(r.range(0, 255) as u8),
            _ => HookFault::None,
        },
        walk: if r.chance(1, 2) { WalkMode::Saved } else { WalkMode::OneByOne },
    };
    let ops = (0..steps)
        .map(|_| {
            let n = r.range(0, 255) as u8;
            let op = match r.below(14) {
                0..=3 => RandomOp::Enable(n),
                4..=6 => RandomOp::Disable(n),
                7 => RandomOp::Reverse,
                8 => RandomOp::Force,
                9 => RandomOp::Fork(n),
                10 => RandomOp::Exit(n),
                11 => RandomOp::CpuOffline(n),
                12 => RandomOp::CpuOnline(n),
                _ => {
                    if r.chance(1, 2) {
                        RandomOp::Load
                    } else {
                        RandomOp::Unload
                    }
                }
            };
            RandomStep { delay_us: r.range(0, 20_000) as u32, settle: r.chance(1, 2), op }
        })
        .collect();
    (m, ops)
}
