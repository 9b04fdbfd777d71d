//! Realistic mixes: the default scenario (thousands of tasks), the field report's crash on a
//! patched exit path, and the default mix behind fault-injecting middleware.

use super::build::*;
use super::{Action, Params, Scenario, ScenarioDef};
use crate::machine::code::{CodeBuilder, CodeError, FnId, Op, SleepFor, SleepKind};
use crate::middleware::{SignalFaults, WalkFaults};
use livepatch_core::backend::TaskFlags;
use livepatch_core::TaskId;

/// The default scenario.
pub const DEFAULT: ScenarioDef = ScenarioDef {
    name: "default",
    group: "default",
    about: "a server mix (pollers, readers, CPU hogs, shells forking short-lived children, workqueue and journal kthreads); one patch of poll, read and journal-commit paths",
    defaults: Params { tasks: 4000, cpus: 8, seed: 1 },
    build: default_scenario,
};

/// The field report: replacing a patch of `do_exit()` while tasks are exiting.
pub const EXIT_PATH: ScenarioDef = ScenarioDef {
    name: "exit-path",
    group: "default",
    about:
        "atomic replace of a do_exit() patch while tasks exit (Linux skips the unhashed, preemptible tail of do_exit)",
    defaults: Params { tasks: 64, cpus: 4, seed: 1 },
    build: exit_path,
};

/// The default mix behind fault-injecting middleware.
pub const FAULTS: ScenarioDef = ScenarioDef {
    name: "faults",
    group: "faults",
    about: "default mix with unreliable and over-deep stacks, lost and delayed signals and a stubborn task",
    defaults: Params { tasks: 500, cpus: 4, seed: 1 },
    build: faults,
};

struct Mix {
    code: crate::machine::code::CodeTable,
    tasks: Vec<crate::machine::TaskSpec>,
    patch: Vec<(FnId, FnId)>,
}

fn mix(p: &Params) -> Result<Mix, CodeError> {
    let mut b = CodeBuilder::new();
    let k = kernel(&mut b, (100 * MS, 30 * S), (MS, 5 * MS));
    // A journal thread: commits (with an uninterruptible I/O wait inside the patched commit
    // function) every few seconds and sleeps interruptibly in between.
    let jbd2_commit = b.func(
        "jbd2_journal_commit",
        vec![Op::Work(50 * US, 500 * US), Op::Sleep(SleepKind::Uninterruptible, SleepFor::Between(MS, 20 * MS))],
    );
    let kjournald = b.func(
        "kjournald2",
        vec![
            Op::SafePoint,
            Op::CondResched,
            Op::Call(jbd2_commit),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(S, 5 * S)),
            Op::Loop,
        ],
    );
    // Without cond_resched, but with the loop-top annotation kGraft required of every kthread.
    let ksoftirqd = b.func(
        "run_ksoftirqd",
        vec![
            Op::SafePoint,
            Op::Call(k.process_one_work),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(10 * MS, 100 * MS)),
            Op::Loop,
        ],
    );
    // The patch: a fixed poll (with a new helper), read path and journal commit.
    let poll_helper = b.helper("poll_check_events", 0, vec![Op::Work(200, 500)]);
    let poll_v = b.variant(
        k.do_sys_poll,
        0,
        vec![
            Op::Call(poll_helper),
            Op::Work(US, 2 * US),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(100 * MS, 30 * S)),
            Op::Work(US, 2 * US),
        ],
    );
    let read_v = b.variant(k.vfs_read, 0, vec![Op::Work(US, 5 * US), Op::Call(k.pipe_read)]);
    let jbd2_v = b.variant(
        jbd2_commit,
        0,
        vec![Op::Work(50 * US, 500 * US), Op::Sleep(SleepKind::Uninterruptible, SleepFor::Between(MS, 20 * MS))],
    );
    let code = b.build()?;
    let n = p.tasks.max(10);
    let mut tasks = Vec::with_capacity(n);
    let share = |pct: usize| (n * pct / 100).max(1);
    // Servers: short bursts of user work between reads, writes and polls; mostly asleep.
    for _ in 0..share(55) {
        tasks.push(user(&[k.sys_read, k.sys_read, k.sys_poll, k.sys_write], (20 * US, 300 * US)));
    }
    for _ in 0..share(10) {
        tasks.push(user(&[k.sys_poll], (10 * US, 100 * US)));
    }
    // CPU hogs on half the CPUs. With them the box is saturated: before the transition 15-80
    // runnable tasks wait on each CPU's run queue and no CPU is idle (seed 1), so a kicked
    // task waits for a CPU behind them.
    for _ in 0..(p.cpus as usize / 2).max(1) {
        tasks.push(user(&[k.sys_getpid], (S, 2 * S)));
    }
    for _ in 0..share(4) {
        let child = user_exiting(&[k.sys_read, k.sys_write, k.sys_getpid], (20 * US, 200 * US), 5, k.do_exit);
        tasks.push(shell(&[k.sys_clone, k.sys_read, k.sys_getpid], (100 * US, MS), child));
    }
    for _ in 0..share(2) {
        tasks.push(kthread(kjournald, TaskFlags::SELF_CHECKS | TaskFlags::FREEZABLE));
    }
    for _ in 0..share(5) {
        tasks.push(kthread(ksoftirqd, TaskFlags::empty()));
    }
    while tasks.len() < n {
        tasks.push(kthread(k.worker_thread, TaskFlags::SELF_CHECKS | TaskFlags::FREEZABLE));
    }
    Ok(Mix { code, tasks, patch: vec![(k.do_sys_poll, poll_v), (k.vfs_read, read_v), (jbd2_commit, jbd2_v)] })
}

fn default_scenario(p: &Params) -> Result<Scenario, CodeError> {
    let m = mix(p)?;
    Ok(Scenario {
        name: "default".into(),
        about: DEFAULT.about.into(),
        code: m.code,
        machine: config(p.cpus, p.seed),
        tasks: m.tasks,
        patches: vec![patch("fix-poll", &m.patch)],
        loaded: vec![],
        script: vec![after(S, Action::Enable(0)), settled(20 * MS, Action::Nop)],
        limit_ns: 120 * S,
        settle_ns: 10 * MS,
    })
}

fn faults(p: &Params) -> Result<Scenario, CodeError> {
    let mut sc = default_scenario(p)?;
    sc.name = "faults".into();
    sc.about = FAULTS.about.into();
    let first = p.cpus;
    sc.machine.walk_faults = WalkFaults {
        unreliable_one_in: 40,
        unreliable_tasks: vec![],
        deep_tasks: vec![TaskId(first), TaskId(first + 1), TaskId(first + 2)],
        extra_depth: 100,
        silently_truncate_at: None,
    };
    // The first two long pollers are stubborn: their kicks are lost in the middleware (a fake
    // signal cannot be ignored or blocked by the task itself, so a lost kick is the backend's).
    let poller = (p.tasks.max(10) * 55 / 100).max(1);
    let stubborn = vec![TaskId(first + poller as u32), TaskId(first + poller as u32 + 1)];
    sc.machine.signal_faults = SignalFaults { drop_one_in: 3, delay_ns: 5 * MS, stubborn };
    Ok(sc)
}

fn exit_path(p: &Params) -> Result<Scenario, CodeError> {
    let mut b = CodeBuilder::new();
    // Exiting tasks stay in do_exit (still on the task list) longer than Linux's 1 s retry;
    // after __unhash_process only a short, preemptible tail is left.
    let k = kernel(&mut b, (100 * MS, S), (1500 * MS, 4 * S));
    let exit = exit_body((1500 * MS, 4 * S));
    let v0 = b.variant(k.do_exit, 0, exit.clone());
    let v1 = b.variant(k.do_exit, 1, exit);
    let code = b.build()?;
    let n = p.tasks.max(4);
    let mut tasks = Vec::new();
    for _ in 0..n / 2 {
        let child = user_exiting(&[k.sys_getpid, k.sys_write], (50 * US, 500 * US), 3, k.do_exit);
        tasks.push(shell(&[k.sys_clone, k.sys_read], (500 * US, 5 * MS), child));
    }
    // CPU hogs in user mode keep the run queues busy, so an exiting task can be preempted in
    // the tail.
    for _ in 0..p.cpus {
        tasks.push(user(&[k.sys_getpid], (10 * MS, 50 * MS)));
    }
    while tasks.len() < n + p.cpus as usize {
        tasks.push(user(&[k.sys_read, k.sys_getpid], (100 * US, MS)));
    }
    let mut replace = patch("exit-fix-v2", &[(k.do_exit, v1)]);
    replace.replace = true;
    Ok(Scenario {
        name: "exit-path".into(),
        about: EXIT_PATH.about.into(),
        code,
        machine: config(p.cpus, p.seed),
        tasks,
        patches: vec![patch("exit-fix-v1", &[(k.do_exit, v0)]), replace],
        loaded: vec![],
        script: vec![after(50 * MS, Action::Enable(0)), settled(2 * S, Action::Enable(1)), settled(MS, Action::Nop)],
        limit_ns: 60 * S,
        settle_ns: 5 * S,
    })
}
