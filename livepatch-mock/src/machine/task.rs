//! Simulated tasks: identity, kind, run state, a real stack of frames, the program they run,
//! and the core's patch-state word.

use super::code::{FnId, SleepFor, SleepKind, OP_BYTES};
use super::heap::TaskData;
use livepatch_core::backend::{Task, TaskFlags, TaskKind};
use livepatch_core::{CodeAddr, CpuId, TaskId, TaskPatchState};
use std::cell::Cell;

/// One stack frame: the function whose code it is and the op the task is at (innermost) or
/// returns to (outer frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The function (original, variant or helper) that runs in this frame.
    pub func: FnId,
    /// The op index.
    pub pc: u32,
    /// The function's entry address.
    pub base: usize,
}

impl Frame {
    /// The frame's address: the return address for outer frames, the current ip innermost.
    #[inline]
    pub fn addr(&self) -> CodeAddr {
        CodeAddr(self.base + self.pc as usize * OP_BYTES)
    }
}

/// Where a task is inside the redirect handler of a hooked call. The handler is not atomic:
/// the trampoline saves registers, the handler reads the task's word and decides, stores the
/// new ip in the saved registers, and the trampoline returns to it. An interrupt (the per-CPU
/// pass's IPI) can land between any two of these steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerPhase {
    /// The trampoline runs (called from the hooked function's fentry site); nothing decided.
    Entered,
    /// The handler read the task's word and decided to run this function.
    Decided(FnId),
    /// The saved ip is the entry of this function; the trampoline has not returned yet.
    IpSet(FnId),
}

/// A hooked call in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InHandler {
    /// The hooked (original) function called.
    pub func: FnId,
    /// Its slot.
    pub slot: u32,
    /// The caller's return address.
    pub parent_ip: CodeAddr,
    /// How far the handler got.
    pub phase: HandlerPhase,
    /// The return address the trampoline's frame holds: the hooked function's fentry return
    /// site, the entry of the chosen function once the new ip is stored.
    pub site: CodeAddr,
    /// Whether the step that ends this phase is already queued.
    pub(crate) queued: bool,
}

/// What a user task does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserProgram {
    /// User-mode work between syscalls, `[min, max]` ns.
    pub user_ns: (u64, u64),
    /// Syscall entry functions, picked uniformly.
    pub syscalls: Vec<FnId>,
    /// Exit (through `exit_fn`) after this many syscalls.
    pub exit_after: Option<u32>,
    /// The exit path (`do_exit`).
    pub exit_fn: Option<FnId>,
    /// What a child forked by this task runs (default: the same program).
    pub child: Option<Box<UserProgram>>,
}

/// What a task runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// A user task: user work, syscalls, exit to user mode.
    User(UserProgram),
    /// A kthread running `main` (which loops for ever).
    Kthread {
        /// Its main function.
        main: FnId,
    },
    /// A CPU's idle task.
    Idle,
}

/// Scheduler state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// On a CPU.
    Running,
    /// On a run queue.
    Runnable,
    /// Blocked in `schedule()`.
    Sleeping(SleepKind),
    /// Gone.
    Dead,
}

/// A simulated task.
#[derive(Debug)]
pub struct SimTask {
    pub(crate) id: TaskId,
    pub(crate) kind: TaskKind,
    pub(crate) flags: TaskFlags,
    pub(crate) cpu: CpuId,
    pub(crate) run: RunState,
    pub(crate) patch: TaskPatchState,
    pub(crate) stack: Vec<Frame>,
    pub(crate) program: Program,
    /// Nanoseconds left of the current `Work` op or user-mode stretch.
    pub(crate) work_left: u64,
    /// Length of the chunk of work whose end the CPU's next step marks.
    pub(crate) chunk: u64,
    /// In user mode (no kernel frames).
    pub(crate) in_user: bool,
    /// A fake signal is pending.
    pub(crate) sig_pending: bool,
    /// Task work a kick queued (the module's switch callback) is pending.
    pub(crate) task_work: bool,
    /// A signal interrupted its sleep: unwind the syscall to user mode.
    pub(crate) unwind: bool,
    /// The sleep `schedule()` will perform.
    pub(crate) sleep_req: (SleepKind, SleepFor),
    /// Generation of its current sleep (stale wake-ups are ignored).
    pub(crate) sleep_gen: u32,
    /// Syscalls made.
    pub(crate) syscalls: u32,
    /// The syscall in progress (its entry function).
    pub(crate) syscall: Option<FnId>,
    /// A syscall a fake signal interrupted: restarted at once from user mode
    /// (`-ERESTARTSYS` / `restart_syscall()` with no handler to run), with no user work
    /// between.
    pub(crate) restart: Option<FnId>,
    /// Asked to exit at its next syscall.
    pub(crate) exit_requested: bool,
    /// Whether it started running its program.
    pub(crate) started: bool,
    /// Its registers for the data ops (objects, held buffer).
    pub(crate) data: TaskData,
    /// A hooked call in progress (the redirect handler, not yet jumped).
    pub(crate) handler: Option<InHandler>,
    /// Set while the per-CPU pass runs on its CPU from an interrupt that stopped it: the task
    /// is then the (interrupted) caller, not a task running elsewhere.
    pub(crate) interrupted: Cell<bool>,
    /// Syscalls a fake signal interrupted (an interruptible sleep unwound to user mode).
    pub(crate) interrupted_syscalls: u32,
    /// A kthread woken by a kick, not by what it waits for: its wait loop re-checks the
    /// condition and sleeps again in the same function.
    pub(crate) rewait: bool,
    /// When its current timed sleep ends: a wait loop woken early sleeps again until then
    /// (`schedule_timeout()` returns the time left), not for a fresh timeout.
    pub(crate) wait_deadline: Option<u64>,
    /// The deadline a re-wait keeps.
    pub(crate) rewait_until: Option<u64>,
    /// Asked to freeze (the freezer model), not frozen yet.
    pub(crate) freeze_pending: bool,
    /// On its way into the refrigerator: its next block in `schedule()` freezes it.
    pub(crate) freezing: bool,
    /// Frozen since then (the freezer model).
    pub(crate) frozen_since: Option<u64>,
    /// Frozen inside its interruptible wait (`wait_event_freezable`), not taken off a CPU.
    pub(crate) frozen_in_sleep: bool,
    /// Its task-work callback's check, preempted in the middle (`TaskWorkMode::Preemptible`).
    pub(crate) split_check: Option<super::preempt::SplitCheck>,
    /// When its syscall in progress started (0: none).
    pub(crate) syscall_start: u64,
    /// CPU time taken from under it (IPIs, signals, the engine's work, its own walks, pauses)
    /// since its syscall started.
    pub(crate) added_ns: u64,
}

impl SimTask {
    pub(crate) fn new(id: TaskId, kind: TaskKind, flags: TaskFlags, cpu: CpuId, program: Program) -> Self {
        Self {
            id,
            kind,
            flags,
            cpu,
            run: RunState::Runnable,
            patch: TaskPatchState::new(),
            stack: Vec::with_capacity(8),
            program,
            work_left: 0,
            chunk: 0,
            in_user: false,
            sig_pending: false,
            task_work: false,
            unwind: false,
            sleep_req: (SleepKind::Uninterruptible, SleepFor::Forever),
            sleep_gen: 0,
            syscalls: 0,
            syscall: None,
            restart: None,
            exit_requested: false,
            started: false,
            data: TaskData::default(),
            handler: None,
            interrupted: Cell::new(false),
            interrupted_syscalls: 0,
            rewait: false,
            wait_deadline: None,
            rewait_until: None,
            freeze_pending: false,
            freezing: false,
            frozen_since: None,
            frozen_in_sleep: false,
            split_check: None,
            syscall_start: 0,
            added_ns: 0,
        }
    }

    /// Its stack, outermost frame first.
    pub fn stack(&self) -> &[Frame] {
        &self.stack
    }

    /// Its scheduler state.
    pub fn run_state(&self) -> RunState {
        self.run
    }

    /// Whether it has died.
    pub fn is_dead(&self) -> bool {
        self.run == RunState::Dead
    }

    /// The objects it owns, oldest first (indices into the heap's objects).
    pub fn objects(&self) -> impl Iterator<Item = usize> + '_ {
        self.data.objects.iter().copied()
    }

    /// The hooked call in progress, if it is inside a redirect handler.
    pub fn handler(&self) -> Option<InHandler> {
        self.handler
    }

    /// Whether it is in user mode.
    pub fn in_user(&self) -> bool {
        self.in_user
    }
}

impl Task for SimTask {
    fn id(&self) -> TaskId {
        self.id
    }
    fn kind(&self) -> TaskKind {
        self.kind
    }
    fn flags(&self) -> TaskFlags {
        if self.frozen_since.is_some() {
            self.flags | TaskFlags::FROZEN
        } else {
            self.flags
        }
    }
    fn cpu(&self) -> CpuId {
        self.cpu
    }
    fn is_running(&self) -> bool {
        self.run == RunState::Running && !self.interrupted.get()
    }
    fn patch_state(&self) -> &TaskPatchState {
        &self.patch
    }
}
