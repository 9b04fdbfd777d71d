#![doc = include_str!("../README.md")]
//!
//! # Library use
//!
//! [`run::run`] runs a [`scenario::Scenario`] under a [`Policy`] and returns a
//! [`run::RunResult`]; [`report`] renders results as a table, JSON and an SVG plot.
//!
//! ```
//! use livepatch_mock::{run, scenario, MODELS};
//! let def = scenario::find("basic").unwrap();
//! let sc = def.build_with(None, None, Some(7)).unwrap();
//! let result = run::run(&sc, MODELS[0].1);
//! assert!(result.converged && result.violations == 0);
//! ```
#![deny(unsafe_code)]

pub mod backend;
pub mod machine;
pub mod middleware;
pub mod oracle;
pub mod report;
pub mod run;
pub mod scenario;
pub mod soak;

use livepatch_core::model::SwitchPoints;
use livepatch_core::Policy;

pub use run::{run_with, RunOptions, RunResult};

/// The policies the simulator compares, by name.
pub const MODELS: &[(&str, Policy)] = &[
    ("linux-6.12", Policy::LINUX_6_12),
    ("improved", Policy::IMPROVED),
    ("kgraft", Policy::KGRAFT),
    ("call-chain", Policy::CALL_CHAIN),
    ("stop-the-world", Policy::STOP_THE_WORLD),
    ("freezer", Policy::FREEZER),
];

/// Linux 6.12's switch points with the improved policy's cadence and kick timing: a pass per
/// millisecond, stragglers kicked from the second pass, the same kick backoff. What the tuning
/// alone buys.
pub const LINUX_TUNED: Policy = Policy {
    retry_delay_ns: 1_000_000,
    signal_every: Some(1),
    kick_backoff_ns: Policy::IMPROVED.kick_backoff_ns,
    ..Policy::LINUX_6_12
};

/// The ablation: `linux-tuned`, and the improved policy without one mechanism each.
pub const ABLATION: &[(&str, Policy)] = &[
    ("linux-tuned", LINUX_TUNED),
    (
        "improved-no-handler-entry",
        Policy {
            switch_points: Policy::IMPROVED.switch_points.difference(SwitchPoints::HANDLER_ENTRY),
            ..Policy::IMPROVED
        },
    ),
    (
        "improved-no-per-cpu",
        Policy {
            switch_points: Policy::IMPROVED.switch_points.difference(SwitchPoints::PER_CPU_PASS),
            ..Policy::IMPROVED
        },
    ),
    ("improved-no-exiting", Policy { visit_exiting: false, ..Policy::IMPROVED }),
];

/// The policy named `name` (see [`MODELS`] and [`ABLATION`]; `linux` is short for
/// `linux-6.12`).
pub fn model(name: &str) -> Option<Policy> {
    let name = if name == "linux" { "linux-6.12" } else { name };
    MODELS.iter().chain(ABLATION).find(|(n, _)| *n == name).map(|(_, p)| *p)
}
