//! What a run reports: per-transition records, script outcomes and the run's totals.

use crate::machine::heap::{Allocation, HeapStats};
use crate::machine::MachineStats;
use crate::oracle::{OracleStats, Violation};
use livepatch_core::backend::{ErrorKind, TaskKind};
use livepatch_core::sweep::StallReason;
use livepatch_core::CodeAddr;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What kind of task a straggler is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum TaskClass {
    /// A user task.
    User,
    /// A kernel thread.
    Kthread,
    /// The idle task of this CPU.
    Idle(u32),
}

impl From<TaskKind> for TaskClass {
    fn from(k: TaskKind) -> Self {
        match k {
            TaskKind::User => TaskClass::User,
            TaskKind::Kthread => TaskClass::Kthread,
            TaskKind::Idle(cpu) => TaskClass::Idle(cpu.0),
        }
    }
}

/// Why a straggler had not switched (the core's [`StallReason`], with the blocking function
/// named).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum StallKind {
    /// Running on a CPU.
    Running,
    /// Its stack could not be walked reliably.
    Unreliable,
    /// Interrupted inside a redirect handler.
    InRedirect,
    /// Deeper than the walk limit.
    TooDeep,
    /// Code being switched away from is on its stack.
    OnStack {
        /// The original function's name.
        function: String,
        /// Whether the frame is in a variant (not the original).
        in_variant: bool,
        /// Its depth (0 = innermost).
        frame: u32,
        /// The return address found there.
        addr: u64,
    },
    /// Waiting for a switch point (no stack checks in this model).
    AwaitingSwitchPoint,
    /// It changed while checked.
    Raced,
}

impl StallKind {
    /// From the core's reason; `name` names a function by its entry.
    pub fn of(reason: &StallReason, name: impl Fn(CodeAddr) -> Option<String>) -> Self {
        match *reason {
            StallReason::Running => StallKind::Running,
            StallReason::Unreliable(ErrorKind::InRedirect) => StallKind::InRedirect,
            StallReason::Unreliable(_) => StallKind::Unreliable,
            StallReason::TooDeep => StallKind::TooDeep,
            StallReason::OnStack { function, variant, frame, addr, .. } => StallKind::OnStack {
                function: name(function.start()).unwrap_or_else(|| function.start().to_string()),
                in_variant: variant.is_some(),
                frame,
                addr: addr.get() as u64,
            },
            StallReason::AwaitingSwitchPoint => StallKind::AwaitingSwitchPoint,
            StallReason::Raced => StallKind::Raced,
        }
    }

    /// The short name the summaries use (`on-stack in F`, `running`, …).
    pub fn key(&self) -> String {
        match self {
            StallKind::Running => "running".into(),
            StallKind::Unreliable => "unreliable".into(),
            StallKind::InRedirect => "in-redirect".into(),
            StallKind::TooDeep => "too-deep".into(),
            StallKind::OnStack { function, .. } => format!("on-stack in {function}"),
            StallKind::AwaitingSwitchPoint => "awaiting-switch-point".into(),
            StallKind::Raced => "raced".into(),
        }
    }
}

impl fmt::Display for StallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// One straggler of a pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StragglerRecord {
    /// Its task id.
    pub task: u32,
    /// Its kind.
    pub kind: TaskClass,
    /// Whether it was exiting.
    pub exiting: bool,
    /// Why it had not switched.
    pub reason: StallKind,
}

/// One transition, from its start to its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransitionRecord {
    /// The patch.
    pub patch: String,
    /// `enable` or `disable`.
    pub direction: String,
    /// Start, simulated ns.
    pub start_ns: u64,
    /// End, if it ended.
    pub end_ns: Option<u64>,
    /// Completion attempts.
    pub passes: u32,
    /// Stack walks the engine did.
    pub walks: u64,
    /// Kicks (fake signals, wake-ups) sent.
    pub kicks: u64,
    /// Whether it was reversed.
    pub reversed: bool,
    /// `complete`, `reversed`, `forced`, `gave-up` or `pending`.
    pub outcome: String,
    /// Stragglers of the last pass that did not complete.
    pub last_stragglers: Vec<StragglerRecord>,
    /// Stragglers of that pass by reason.
    pub straggler_reasons: BTreeMap<String, u32>,
    /// Every function that kept some task from switching, over all passes.
    pub blocking_functions: BTreeSet<String>,
    /// The longest stop-the-world pause.
    pub max_pause_ns: u64,
}

/// What a script step did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActionOutcome {
    /// When.
    pub at_ns: u64,
    /// The action.
    pub action: String,
    /// The error, if it was refused.
    pub error: Option<String>,
}

/// The result of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Model/policy name.
    pub model: String,
    /// Seed.
    pub seed: u64,
    /// CPUs.
    pub cpus: u32,
    /// Tasks at boot (without idle tasks).
    pub tasks: usize,
    /// Every transition completed, the script ran to its end, no violation.
    pub converged: bool,
    /// The simulated time limit was reached first.
    pub timed_out: bool,
    /// Sum of the transitions' durations, when they all ended.
    pub time_to_converge_ns: Option<u64>,
    /// Simulated time at the end of the run.
    pub sim_time_ns: u64,
    /// Completion attempts.
    pub passes: u32,
    /// All stack walks (engine and tasks' own).
    pub walks: u64,
    /// Stack walks by the engine's passes.
    pub engine_walks: u64,
    /// Fake signals / wake-ups sent.
    pub signals: u64,
    /// Of those, lost by the signal middleware.
    pub signals_lost: u64,
    /// Invariant violations (the run stops at the first).
    pub violations: u32,
    /// The first violation.
    pub violation: Option<Violation>,
    /// Measured weaknesses.
    pub oracle: OracleStats,
    /// The longest stop-the-world pause.
    pub max_pause_ns: u64,
    /// Universe switches by switch point.
    pub switches: BTreeMap<String, u64>,
    /// Machine counters.
    pub machine: MachineStats,
    /// What the transitions cost the machine.
    pub costs: Costs,
    /// The transitions.
    pub transitions: Vec<TransitionRecord>,
    /// The script's outcomes.
    pub outcomes: Vec<ActionOutcome>,
    /// Callbacks, in the order they ran.
    pub callbacks: Vec<String>,
    /// The machine's heap at the end: objects, buffers, shadow variables.
    pub heap: HeapReport,
    /// (simulated ns since the first transition started, tasks not in the target universe).
    pub timeline: Vec<(u64, u32)>,
    /// Events handled.
    pub events: u64,
    /// Wall-clock time of the run.
    pub wall_ns: u64,
}

/// What the transitions cost, per model: no model gets free work.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Costs {
    /// CPU time the transitions used: the engine's kworker, the per-CPU pass's IPIs, the
    /// tasks' own stack walks, taking signals and wake-ups.
    pub transition_cpu_ns: u64,
    /// Of which the engine's kworker.
    pub engine_cpu_ns: u64,
    /// Of which IPIs and walks on interrupted CPUs.
    pub ipi_cpu_ns: u64,
    /// Of which the tasks' walks of their own stacks.
    pub self_walk_ns: u64,
    /// Of which taking fake signals and wake-ups.
    pub signal_cpu_ns: u64,
    /// Per-CPU-pass IPIs per task.
    pub ipis_per_task: f64,
    /// Kicks (fake signals, wake-ups) per task.
    pub kicks_per_task: f64,
    /// Tasks kicked at least once.
    pub kicked_tasks: u32,
    /// Kicks per kicked task, and the most any one task got.
    pub kicks_per_kicked: f64,
    /// The most kicks one task got.
    pub max_kicks: u32,
    /// Syscalls a fake signal interrupted.
    pub interrupted_syscalls: u64,
    /// Tasks the freezer model froze.
    pub frozen_tasks: u64,
    /// Tasks still frozen when the run ended (0 once every freezer transition is over: the
    /// engine thaws them when it completes or gives up).
    pub still_frozen: u64,
    /// How long each frozen task stayed frozen (the pause it saw).
    pub freeze_pause: Latency,
    /// The longest stop-the-world pause (every task sees it).
    pub stop_pause_ns: u64,
    /// Latency the transitions added to the syscalls that overlapped one: the CPU time taken
    /// from under the task while it was in the syscall (IPIs, signals, the engine's work on
    /// its CPU, its own stack walks, stop-the-world pauses).
    pub added: Latency,
}

/// A latency distribution's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median (ns).
    pub p50_ns: u64,
    /// 99th percentile (ns).
    pub p99_ns: u64,
    /// Maximum (ns).
    pub max_ns: u64,
}

impl Latency {
    /// The summary of `samples` (sorted in place).
    pub fn of(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        let n = samples.len();
        if n == 0 {
            return Self::default();
        }
        let at = |q: f64| samples[((n as f64 * q) as usize).min(n - 1)];
        Self { count: n as u64, p50_ns: at(0.5), p99_ns: at(0.99), max_ns: samples[n - 1] }
    }
}

impl RunResult {
    /// A digest of everything the run computed — its JSON form with the wall-clock time left
    /// out (FNV-1a, 64 bits): two runs of the same scenario, policy and seed have the same
    /// digest, so results can be compared without comparing floats or timings.
    pub fn digest(&self) -> u64 {
        let mut r = self.clone();
        r.wall_ns = 0;
        let json = serde_json::to_vec(&r).unwrap_or_default();
        json.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
    }

    /// Simulated events per wall-clock second.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / (self.wall_ns.max(1) as f64 / 1e9)
    }

    /// The stragglers that held the run up longest: those of the last unsuccessful pass of the
    /// transition that had most passes, summarised by reason.
    pub fn straggler_summary(&self) -> String {
        let Some(t) = self.transitions.iter().filter(|t| !t.straggler_reasons.is_empty()).max_by_key(|t| t.passes)
        else {
            return "-".into();
        };
        let total: u32 = t.straggler_reasons.values().sum();
        let mut parts: Vec<(u32, &String)> = t.straggler_reasons.iter().map(|(k, v)| (*v, k)).collect();
        parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let list: Vec<String> = parts.iter().take(3).map(|(n, k)| format!("{n} {k}")).collect();
        format!("{total}: {}", list.join(", "))
    }
}

/// The machine's heap at the end of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HeapReport {
    /// Counters.
    pub stats: HeapStats,
    /// Every object allocated.
    pub objects: Vec<Allocation>,
    /// Every buffer allocated.
    pub buffers: Vec<Allocation>,
    /// Live shadow variables.
    pub shadows_live: usize,
    /// Freed shadow variables not reclaimed yet.
    pub shadows_retired: u64,
}

impl HeapReport {
    /// Buffers leaked: not freed, and held by no shadow variable.
    pub fn leaked(&self) -> impl Iterator<Item = &Allocation> {
        self.buffers.iter().filter(|b| b.is_leaked())
    }
}

/// Progress of a run, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct ProgressInfo {
    /// Simulated time.
    pub sim_ns: u64,
    /// The time limit.
    pub limit_ns: u64,
    /// Events so far.
    pub events: u64,
}

/// Options of a run.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Stop after this many events (0: no limit).
    pub max_events: u64,
    /// Record the timeline.
    pub timeline: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { max_events: 0, timeline: true }
    }
}
