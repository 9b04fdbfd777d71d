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

use livepatch_core::Policy;

pub use run::{run_with, RunOptions, RunResult};

/// The policies the simulator compares, by name.
pub const MODELS: &[(&str, Policy)] = &[
    ("linux-6.12", Policy::LINUX_6_12),
    ("improved", Policy::IMPROVED),
    ("kgraft", Policy::KGRAFT),
    ("call-chain", Policy::CALL_CHAIN),
    ("stop-the-world", Policy::STOP_THE_WORLD),
];

/// The policy named `name` (see [`MODELS`]; `linux` is short for `linux-6.12`).
pub fn model(name: &str) -> Option<Policy> {
    let name = if name == "linux" { "linux-6.12" } else { name };
    MODELS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}
