//! Helpers to write scenarios: time units, a small standard kernel (`schedule`, `do_exit`,
//! a few syscalls and a workqueue worker), task and patch constructors.

use super::{Action, ObjectSpec, PatchSpec, Step, Wait};
use crate::machine::code::{CodeBuilder, FnId, Op, SleepFor, SleepKind};
use crate::machine::task::{Program, UserProgram};
use crate::machine::{MachineConfig, TaskSpec};
use livepatch_core::backend::TaskFlags;
use livepatch_core::ObjectId;

/// A microsecond in ns.
pub const US: u64 = 1_000;
/// A millisecond in ns.
pub const MS: u64 = 1_000_000;
/// A second in ns.
pub const S: u64 = 1_000_000_000;

/// The functions of the standard kernel.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// `schedule()`.
    pub schedule: FnId,
    /// `do_exit()`.
    pub do_exit: FnId,
    /// A cheap syscall.
    pub sys_getpid: FnId,
    /// `read()` → `vfs_read()` → `pipe_read()` (sleeps interruptibly).
    pub sys_read: FnId,
    /// `vfs_read()`.
    pub vfs_read: FnId,
    /// `pipe_read()`.
    pub pipe_read: FnId,
    /// `write()` → `vfs_write()`.
    pub sys_write: FnId,
    /// `vfs_write()`.
    pub vfs_write: FnId,
    /// `poll()` → `do_sys_poll()` (sleeps interruptibly, long).
    pub sys_poll: FnId,
    /// `do_sys_poll()`.
    pub do_sys_poll: FnId,
    /// `clone()`: forks.
    pub sys_clone: FnId,
    /// A workqueue worker's main loop.
    pub worker_thread: FnId,
    /// What a worker runs.
    pub process_one_work: FnId,
}

/// Adds the standard kernel to `b`; `poll` is do_sys_poll's sleep range, `exit_sleep` the
/// time an exiting task spends in `do_exit`.
pub fn kernel(b: &mut CodeBuilder, poll: (u64, u64), exit_sleep: (u64, u64)) -> Kernel {
    let schedule = b.func("schedule", vec![Op::Block]);
    let do_exit = b.func("do_exit", exit_body(exit_sleep));
    let sys_getpid = b.func("sys_getpid", vec![Op::Work(200, 600)]);
    let pipe_read = b.func(
        "pipe_read",
        vec![
            Op::Work(US, 3 * US),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(MS, 100 * MS)),
            Op::Work(US, 2 * US),
        ],
    );
    let vfs_read = b.func("vfs_read", vec![Op::Work(US, 4 * US), Op::Call(pipe_read)]);
    let sys_read = b.func("sys_read", vec![Op::Call(vfs_read)]);
    let vfs_write = b.func("vfs_write", vec![Op::Work(2 * US, 10 * US)]);
    let sys_write = b.func("sys_write", vec![Op::Call(vfs_write)]);
    let do_sys_poll = b.func(
        "do_sys_poll",
        vec![
            Op::Work(US, 2 * US),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(poll.0, poll.1)),
            Op::Work(US, 2 * US),
        ],
    );
    let sys_poll = b.func("sys_poll", vec![Op::Call(do_sys_poll)]);
    let sys_clone = b.func("sys_clone", vec![Op::Work(20 * US, 50 * US), Op::Fork]);
    let process_one_work = b.func("process_one_work", vec![Op::Work(10 * US, 200 * US)]);
    let worker_thread = b.func(
        "worker_thread",
        vec![
            Op::SafePoint,
            Op::CondResched,
            Op::Call(process_one_work),
            Op::Sleep(SleepKind::Interruptible, SleepFor::Between(10 * MS, 100 * MS)),
            Op::Loop,
        ],
    );
    Kernel {
        schedule,
        do_exit,
        sys_getpid,
        sys_read,
        vfs_read,
        pipe_read,
        sys_write,
        vfs_write,
        sys_poll,
        do_sys_poll,
        sys_clone,
        worker_thread,
        process_one_work,
    }
}

/// `do_exit()` as the kernel has it: the task stays on the task list (`for_each_process_thread`
/// visits it) through almost all of it — tearing down its mm and files, where it may sleep
/// (`sleep` ns) — and through `exit_notify`; it leaves the list at `__unhash_process`, then
/// runs a short tail that does not sleep but can be preempted, until `do_task_dead`.
pub fn exit_body(sleep: (u64, u64)) -> Vec<Op> {
    vec![
        Op::Work(5 * US, 20 * US),
        Op::Sleep(SleepKind::Uninterruptible, SleepFor::Between(sleep.0, sleep.1)),
        Op::Work(2 * US, 5 * US),
        Op::Unhash,
        Op::Work(US, 10 * US),
        Op::Die,
    ]
}

/// A machine configuration with `cpus` CPUs and `seed`.
pub fn config(cpus: u32, seed: u64) -> MachineConfig {
    MachineConfig { cpus, seed, ..MachineConfig::default() }
}

/// A user task making `syscalls` with `user_ns` of user work between them.
pub fn user(syscalls: &[FnId], user_ns: (u64, u64)) -> TaskSpec {
    TaskSpec {
        program: Program::User(UserProgram {
            user_ns,
            syscalls: syscalls.to_vec(),
            exit_after: None,
            exit_fn: None,
            child: None,
        }),
        flags: TaskFlags::empty(),
        cpu: None,
    }
}

/// A user task that exits through `exit_fn` after `after` syscalls.
pub fn user_exiting(syscalls: &[FnId], user_ns: (u64, u64), after: u32, exit_fn: FnId) -> TaskSpec {
    TaskSpec {
        program: Program::User(UserProgram {
            user_ns,
            syscalls: syscalls.to_vec(),
            exit_after: Some(after),
            exit_fn: Some(exit_fn),
            child: None,
        }),
        flags: TaskFlags::empty(),
        cpu: None,
    }
}

/// A kthread running `main`.
pub fn kthread(main: FnId, flags: TaskFlags) -> TaskSpec {
    TaskSpec { program: Program::Kthread { main }, flags, cpu: None }
}

/// The same task pinned to `cpu`.
pub fn on_cpu(mut t: TaskSpec, cpu: u32) -> TaskSpec {
    t.cpu = Some(cpu);
    t
}

/// A patch of the core kernel replacing `funcs` (original, variant).
pub fn patch(name: &str, funcs: &[(FnId, FnId)]) -> PatchSpec {
    PatchSpec {
        name: name.to_string(),
        replace: false,
        objects: vec![ObjectSpec {
            id: ObjectId::VMLINUX,
            name: "vmlinux".into(),
            funcs: funcs.to_vec(),
            callbacks: false,
            fail_pre_patch: None,
        }],
        ..Default::default()
    }
}

/// A script step `ns` after the previous one.
pub fn after(ns: u64, action: Action) -> Step {
    Step { wait: Wait::For(ns), action }
}

/// A script step `ns` after the transition in progress ended.
pub fn settled(ns: u64, action: Action) -> Step {
    Step { wait: Wait::Settled(ns), action }
}

/// A user task that forks children running `child` (a shell).
pub fn shell(syscalls: &[FnId], user_ns: (u64, u64), child: TaskSpec) -> TaskSpec {
    let mut t = user(syscalls, user_ns);
    if let (Program::User(p), Program::User(c)) = (&mut t.program, child.program) {
        p.child = Some(Box::new(c));
    }
    t
}
