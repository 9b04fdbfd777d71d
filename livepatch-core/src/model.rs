//! Consistency models as policies over one machinery.
//!
//! * [`Model::PerTask`] — each task has a universe; the redirect follows the task. Which switch
//!   points are used is the policy's [`SwitchPoints`]: [`Policy::LINUX_6_12`] matches the
//!   kernel, [`Policy::IMPROVED`] adds the 2014 thread's handler-entry switch, the per-CPU pass,
//!   early signals, immediate retries and visiting exiting tasks.
//! * [`Model::KernelExit`] — kGraft: tasks switch only where they hold no kernel frames (exit to
//!   user mode, the idle loop, a kthread's declared safe point); no stack checks at all.
//! * [`Model::CallChain`] — the "trivial" model: a call is redirected unless it comes from code
//!   being switched away from (`parent_ip` in the old set). No per-task redirect state; the
//!   transition completes only when sweeps have seen every task free of old frames.
//! * [`Model::StopTheWorld`] — kpatch.ko / Ksplice: stop every CPU, check every stack, switch
//!   all tasks at once or retry a bounded number of times.
//! * [`Model::Freezer`] — the 2014 thread's LEAVE_PATCHED_SET + SWITCH_THREAD through the
//!   freezer; fails (reverses the transition) where the thread said it would.

use bitflags::bitflags;

/// The consistency model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// Per-task universes (the Linux hybrid and its improvements).
    PerTask,
    /// Switch only at the user/kernel boundary (kGraft).
    KernelExit,
    /// Redirect iff `parent_ip` is outside the code being switched away from.
    CallChain,
    /// `stop_machine`, check all stacks, switch everything or retry.
    StopTheWorld,
    /// The 2014 thread's simple LEAVE_PATCHED_SET + SWITCH_THREAD: switch every task that is
    /// off-CPU with nothing being switched away from on its stack; ask the rest to freeze
    /// ([`Scheduler::freeze`](crate::backend::Scheduler::freeze): user tasks at signal
    /// delivery, freezable kthreads at their `try_to_freeze` points) and check them again
    /// once frozen; unfreezable kthreads are retried. Frozen tasks are thawed when the
    /// transition ends. Fail-fast, as the thread put it: a frozen task that still holds code
    /// being switched away from means the patch touches the freezer/schedule path, and the
    /// transition is given up at once; otherwise it is given up after
    /// [`Policy::stop_attempts`] passes. Giving up thaws every task and reverses the
    /// transition (on the way back stragglers are kicked, not frozen).
    Freezer,
}

impl Model {
    /// Whether a call's redirect is decided by the calling task's universe (its word, read
    /// only in a transition of the function) rather than by its caller's address
    /// ([`Model::CallChain`]). A `const fn`, so a backend whose model is fixed at build time
    /// can call [`redirect::per_task_lazy`](crate::redirect::per_task_lazy) directly.
    #[inline(always)]
    pub const fn redirects_per_task(self) -> bool {
        !matches!(self, Model::CallChain)
    }
}

impl Model {
    /// The model's name as the simulator prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Model::PerTask => "per-task",
            Model::KernelExit => "kernel-exit",
            Model::CallChain => "call-chain",
            Model::StopTheWorld => "stop-the-world",
            Model::Freezer => "freezer",
        }
    }
}

bitflags! {
    /// Where a task may change universe.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SwitchPoints: u16 {
        /// The engine's sweep over non-running tasks, with a reliable stack check.
        const SWEEP = 1 << 0;
        /// Exit to user mode (no kernel frames at all).
        const EXIT_TO_USER = 1 << 1;
        /// The idle loop.
        const IDLE = 1 << 2;
        /// A `cond_resched`-like point where the task checks its own stack.
        const SELF_CHECK = 1 << 3;
        /// The redirect handler converts the current task when nothing it is switching away
        /// from is on its stack (the 2014 thread's step 1).
        const HANDLER_ENTRY = 1 << 4;
        /// On each CPU, check the tasks queued there while the CPU is held (2014 step 2).
        const PER_CPU_PASS = 1 << 5;
        /// A kthread's main-loop top, declared free of patched frames (kGraft's
        /// `kgr_task_safe`); switches without a stack check.
        const KTHREAD_SAFE_POINT = 1 << 6;
    }
}

/// A complete policy: model, switch points, straggler handling and limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The consistency model.
    pub model: Model,
    /// Enabled switch points.
    pub switch_points: SwitchPoints,
    /// Whether the sweep visits tasks that are exiting (Linux does not).
    pub visit_exiting: bool,
    /// Kick (signal or wake) the stragglers on every this many-th unsuccessful pass.
    pub signal_every: Option<u32>,
    /// Kick backoff: once a kick round leaves the same stragglers blocked for the same reasons
    /// (a kthread whose wait loop went back to sleep in the patched function), they are kicked
    /// again only this often, in nanoseconds, until the set of stragglers changes; any change
    /// restores `signal_every`'s cadence. `None`: every `signal_every`-th pass, changed or not
    /// (Linux). See the engine's kick pacing.
    pub kick_backoff_ns: Option<u64>,
    /// Force the transition after this many unsuccessful passes.
    pub force_after: Option<u32>,
    /// Delay between completion attempts, in nanoseconds.
    pub retry_delay_ns: u64,
    /// Tasks visited per task-list lock hold.
    pub batch: usize,
    /// Stack walk depth limit (the kernel's 100-entry buffer).
    pub max_depth: usize,
    /// Attempts before giving up: stop-the-world's stops, and the freezer model's passes
    /// (it gives up earlier, at once, when a frozen task still holds code being switched
    /// away from).
    pub stop_attempts: u32,
}

impl Policy {
    /// [`Policy::IMPROVED`]'s kick backoff: Linux's own signal interval (`klp_send_signals()`
    /// every `SIGNALS_TIMEOUT` = 15 passes of one second), so that a straggler a kick does not
    /// move is never kicked more often than Linux kicks it.
    pub const KICK_BACKOFF_NS: u64 = 15_000_000_000;

    /// Linux 6.12: sweep, exit to user, idle loop, `cond_resched` self-check; signals every 15
    /// passes; a pass every second; exiting tasks not visited.
    pub const LINUX_6_12: Policy = Policy {
        model: Model::PerTask,
        switch_points: SwitchPoints::SWEEP
            .union(SwitchPoints::EXIT_TO_USER)
            .union(SwitchPoints::IDLE)
            .union(SwitchPoints::SELF_CHECK),
        visit_exiting: false,
        signal_every: Some(15),
        kick_backoff_ns: None,
        force_after: None,
        retry_delay_ns: 1_000_000_000,
        batch: usize::MAX,
        max_depth: 100,
        stop_attempts: 0,
    };

    /// Every improvement: the Linux switch points plus handler-entry switch and the per-CPU
    /// pass; stragglers kicked from the second pass on, backing off to Linux's 15 s cadence
    /// while a kick changes nothing; retries every millisecond; exiting tasks visited; the task
    /// list is walked 64 tasks per lock hold.
    pub const IMPROVED: Policy = Policy {
        model: Model::PerTask,
        switch_points: SwitchPoints::all().difference(SwitchPoints::KTHREAD_SAFE_POINT),
        visit_exiting: true,
        signal_every: Some(1),
        kick_backoff_ns: Some(Policy::KICK_BACKOFF_NS),
        force_after: None,
        retry_delay_ns: 1_000_000,
        batch: 64,
        max_depth: 100,
        stop_attempts: 0,
    };

    /// kGraft: switch at kernel exit, in the idle loop and at kthreads' declared safe points.
    pub const KGRAFT: Policy = Policy {
        model: Model::KernelExit,
        switch_points: SwitchPoints::EXIT_TO_USER.union(SwitchPoints::IDLE).union(SwitchPoints::KTHREAD_SAFE_POINT),
        visit_exiting: true,
        signal_every: Some(1),
        kick_backoff_ns: None,
        force_after: None,
        retry_delay_ns: 1_000_000_000,
        batch: 64,
        max_depth: 100,
        stop_attempts: 0,
    };

    /// The trivial call-chain model, completed by sweeps (and exit to user / idle).
    pub const CALL_CHAIN: Policy = Policy {
        model: Model::CallChain,
        switch_points: SwitchPoints::SWEEP.union(SwitchPoints::EXIT_TO_USER).union(SwitchPoints::IDLE),
        visit_exiting: true,
        signal_every: None,
        kick_backoff_ns: None,
        force_after: None,
        retry_delay_ns: 1_000_000,
        batch: 64,
        max_depth: 100,
        stop_attempts: 0,
    };

    /// kpatch.ko / Ksplice: five stop-the-world attempts a second apart.
    pub const STOP_THE_WORLD: Policy = Policy {
        model: Model::StopTheWorld,
        switch_points: SwitchPoints::empty(),
        visit_exiting: true,
        signal_every: None,
        kick_backoff_ns: None,
        force_after: None,
        retry_delay_ns: 1_000_000_000,
        batch: usize::MAX,
        max_depth: 100,
        stop_attempts: 5,
    };

    /// The freezer model: a pass per millisecond; from the second pass on, every pending user
    /// task and freezable kthread is asked to freeze. It fails (reverses) when a frozen task
    /// still holds code being switched away from (the patch touches the freezer/schedule
    /// path), and after 10 000 passes (ten seconds) otherwise (an unfreezable kthread that
    /// is CPU-bound or sleeps in a patched function).
    pub const FREEZER: Policy = Policy {
        model: Model::Freezer,
        switch_points: SwitchPoints::SWEEP.union(SwitchPoints::IDLE),
        visit_exiting: true,
        signal_every: Some(1),
        kick_backoff_ns: None,
        force_after: None,
        retry_delay_ns: 1_000_000,
        batch: 64,
        max_depth: 100,
        stop_attempts: 10_000,
    };

    /// Whether `point` is enabled; the model decides which points it can use at all.
    pub const fn allows(&self, point: SwitchPoints) -> bool {
        let usable = match self.model {
            Model::PerTask => SwitchPoints::all(),
            // kGraft checks no stacks: only points where the task holds no kernel frames or
            // a kthread declares itself safe.
            Model::KernelExit => {
                SwitchPoints::EXIT_TO_USER.union(SwitchPoints::IDLE).union(SwitchPoints::KTHREAD_SAFE_POINT)
            }
            Model::CallChain => SwitchPoints::SWEEP
                .union(SwitchPoints::EXIT_TO_USER)
                .union(SwitchPoints::IDLE)
                .union(SwitchPoints::SELF_CHECK)
                .union(SwitchPoints::PER_CPU_PASS),
            Model::StopTheWorld => SwitchPoints::empty(),
            // Only the stack check of tasks that are off-CPU (or frozen), and idle CPUs.
            Model::Freezer => SwitchPoints::SWEEP.union(SwitchPoints::IDLE),
        };
        self.switch_points.intersection(usable).contains(point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_enable_what_their_model_can_use() {
        assert!(Policy::LINUX_6_12.allows(SwitchPoints::SWEEP));
        assert!(!Policy::LINUX_6_12.allows(SwitchPoints::HANDLER_ENTRY));
        assert!(Policy::IMPROVED.allows(SwitchPoints::HANDLER_ENTRY | SwitchPoints::PER_CPU_PASS));
        assert!(!Policy::KGRAFT.allows(SwitchPoints::SWEEP));
        let mut p = Policy::KGRAFT;
        p.switch_points = SwitchPoints::all();
        assert!(!p.allows(SwitchPoints::SWEEP), "kernel-exit never stack-checks");
        assert!(!Policy::STOP_THE_WORLD.allows(SwitchPoints::EXIT_TO_USER));
        assert!(!Policy::CALL_CHAIN.allows(SwitchPoints::HANDLER_ENTRY));
        let mut f = Policy::FREEZER;
        assert!(f.allows(SwitchPoints::SWEEP) && f.allows(SwitchPoints::IDLE));
        f.switch_points = SwitchPoints::all();
        for point in [SwitchPoints::EXIT_TO_USER, SwitchPoints::HANDLER_ENTRY, SwitchPoints::PER_CPU_PASS] {
            assert!(!f.allows(point), "the freezer switches only tasks it checked off-CPU: {point:?}");
        }
    }
}
