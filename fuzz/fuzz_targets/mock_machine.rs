//! The simulated machine driven by arbitrary scenario bytes with the oracle on: a random
//! machine shape (CPUs, user tasks, exiting tasks, kthreads, seed) and a script of enable,
//! disable, reverse, force, fork, exit, CPU hot-unplug and module load/unload steps, with or
//! without a hook the tracer refuses to install or remove, with a walker handing frames one at a
//! time or the saved stack at once, run under one of the simulator's
//! models. Any invariant violation the oracle reports (I1–I4,
//! I6 is only counted) or any panic is a crash.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use livepatch_mock::backend::WalkMode;
use livepatch_mock::scenario::random::{self, HookFault, RandomMachine, RandomOp, RandomStep};
use livepatch_mock::{run_with, RunOptions, MODELS};

#[derive(Debug, Arbitrary)]
enum Op {
    Enable(u8),
    Disable(u8),
    Reverse,
    Force,
    Fork(u8),
    Exit(u8),
    CpuOffline(u8),
    CpuOnline(u8),
    Load,
    Unload,
}

#[derive(Debug, Arbitrary)]
struct Step {
    delay_us: u16,
    settle: bool,
    op: Op,
}

#[derive(Debug, Arbitrary)]
struct Input {
    model: u8,
    cpus: u8,
    users: u8,
    exiting: u8,
    kthreads: u8,
    seed: u64,
    hook_fault: Fault,
    saved_walk: bool,
    steps: Vec<Step>,
}

#[derive(Debug, Arbitrary)]
enum Fault {
    None,
    Install(u8),
    Remove(u8),
}

fuzz_target!(|input: Input| {
    let users = u32::from(input.users % 8) + 1;
    let m = RandomMachine {
        cpus: u32::from(input.cpus % 4) + 1,
        users,
        exiting: u32::from(input.exiting) % (users + 1),
        kthreads: u32::from(input.kthreads % 4),
        seed: input.seed,
        hook_fault: match input.hook_fault {
            Fault::None => HookFault::None,
            Fault::Install(n) => HookFault::Install(n),
            Fault::Remove(n) => HookFault::Remove(n),
        },
        walk: if input.saved_walk { WalkMode::Saved } else { WalkMode::OneByOne },
    };
    let steps: Vec<RandomStep> = input
        .steps
        .iter()
        .take(12)
        .map(|s| RandomStep {
            delay_us: u32::from(s.delay_us % 20_000),
            settle: s.settle,
            op: match s.op {
                Op::Enable(n) => RandomOp::Enable(n),
                Op::Disable(n) => RandomOp::Disable(n),
                Op::Reverse => RandomOp::Reverse,
                Op::Force => RandomOp::Force,
                Op::Fork(n) => RandomOp::Fork(n),
                Op::Exit(n) => RandomOp::Exit(n),
                Op::CpuOffline(n) => RandomOp::CpuOffline(n),
                Op::CpuOnline(n) => RandomOp::CpuOnline(n),
                Op::Load => RandomOp::Load,
                Op::Unload => RandomOp::Unload,
            },
        })
        .collect();
    let Ok(sc) = random::build(&m, &steps) else {
        return;
    };
    let (name, policy) = MODELS[usize::from(input.model) % MODELS.len()];
    let r = run_with(&sc, policy, RunOptions { max_events: 20_000, timeline: false }, &mut |_| {});
    if let Some(v) = r.violation {
        // Linux's own exit race (its policy skips exiting tasks) is measured, not a failure.
        if !livepatch_mock::soak::is_linux_exit_race(&policy, &v) {
            panic!("{name}: invariant violation {v:?}");
        }
    }
});
