//! Scenarios: a machine (code, CPUs, tasks, faults), patches, and a script of operations,
//! plus the registry `livepatch-sim --list` shows.

pub mod adversarial;
pub mod build;
pub mod data;
pub mod parity;
pub mod races;
pub mod random;
pub mod thread2014;
pub mod workload;

use crate::machine::code::{CodeError, CodeTable, FnId};
use crate::machine::{MachineConfig, TaskSpec};
use livepatch_core::shadow::ShadowId;
use livepatch_core::ObjectId;

/// One object of a patch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectSpec {
    /// The object.
    pub id: ObjectId,
    /// Its name.
    pub name: String,
    /// (original, variant) pairs.
    pub funcs: Vec<(FnId, FnId)>,
    /// Whether it has (recording) callbacks.
    pub callbacks: bool,
    /// Its `pre_patch` callback fails with this code.
    pub fail_pre_patch: Option<i32>,
}

/// A patch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatchSpec {
    /// Its name.
    pub name: String,
    /// Cumulative (atomic replace).
    pub replace: bool,
    /// Its objects.
    pub objects: Vec<ObjectSpec>,
    /// System states it declares: (id, version). Its objects' callbacks (if any) take each
    /// over from the previous patch in `pre_patch` (`klp_get_prev_state`) or set it up.
    pub states: Vec<(u64, u32)>,
    /// Shadow ids its objects' `post_unpatch` callbacks free with `free_all` (the
    /// destructor of [`SV_LEAK`](crate::machine::heap::SV_LEAK) frees the buffer).
    pub free_on_unpatch: Vec<ShadowId>,
}

/// When a script step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// This long after the previous step.
    For(u64),
    /// This long after no transition is in progress any more.
    Settled(u64),
}

/// An operation of the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Enable patch `i`.
    Enable(usize),
    /// Disable patch `i`.
    Disable(usize),
    /// Reverse the transition in progress.
    Reverse,
    /// Force the transition in progress.
    Force,
    /// Load a module.
    Load(ObjectId),
    /// Unload a module.
    Unload(ObjectId),
    /// Task `t` forks.
    Fork(u32),
    /// User task `t` exits at its next syscall; kthread `t` stops at the top of its loop.
    Kill(u32),
    /// A CPU goes offline.
    CpuOffline(u32),
    /// A CPU comes back.
    CpuOnline(u32),
    /// Nothing (ends a wait).
    Nop,
}

/// One step of the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// When.
    pub wait: Wait,
    /// What.
    pub action: Action,
}

/// A complete scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// One line about it.
    pub about: String,
    /// The code.
    pub code: CodeTable,
    /// The machine's parameters (CPUs, seed, faults).
    pub machine: MachineConfig,
    /// Tasks created at boot (besides the idle tasks).
    pub tasks: Vec<TaskSpec>,
    /// Patches.
    pub patches: Vec<PatchSpec>,
    /// Modules loaded at boot.
    pub loaded: Vec<ObjectId>,
    /// The script.
    pub script: Vec<Step>,
    /// Simulated time limit.
    pub limit_ns: u64,
    /// How long to keep running after the script is done and no transition is in progress
    /// (so that released code would be caught if it were still used).
    pub settle_ns: u64,
}

/// Size parameters a scenario builder takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Tasks (approximate; builders scale their mix).
    pub tasks: usize,
    /// CPUs.
    pub cpus: u32,
    /// Seed.
    pub seed: u64,
}

/// A named scenario builder.
#[derive(Clone, Copy, Debug)]
pub struct ScenarioDef {
    /// Its name.
    pub name: &'static str,
    /// Group: "default", "parity", "2014", "faults", "data".
    pub group: &'static str,
    /// One line about it.
    pub about: &'static str,
    /// Default size.
    pub defaults: Params,
    /// The builder.
    pub build: fn(&Params) -> Result<Scenario, CodeError>,
}

/// Every named scenario.
pub fn all() -> Vec<ScenarioDef> {
    let mut v = vec![workload::DEFAULT, workload::EXIT_PATH, workload::FAULTS];
    v.extend(parity::ALL);
    v.extend(thread2014::ALL);
    v.extend(data::ALL);
    v.extend(adversarial::ALL);
    v.extend(races::ALL);
    v
}

/// The scenario named `name`.
pub fn find(name: &str) -> Option<ScenarioDef> {
    all().into_iter().find(|d| d.name == name)
}

impl ScenarioDef {
    /// Builds it with its defaults, overridden where given.
    pub fn build_with(
        &self,
        tasks: Option<usize>,
        cpus: Option<u32>,
        seed: Option<u64>,
    ) -> Result<Scenario, CodeError> {
        let p = Params {
            tasks: tasks.unwrap_or(self.defaults.tasks),
            cpus: cpus.unwrap_or(self.defaults.cpus).max(1),
            seed: seed.unwrap_or(self.defaults.seed),
        };
        (self.build)(&p)
    }
}
