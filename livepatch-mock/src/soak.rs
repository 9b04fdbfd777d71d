//! The soak: random machines and operation sequences under every model, with the oracle on,
//! until a budget of simulated events is spent.

use crate::run::{run_with, RunOptions};
use crate::scenario::random;
use crate::{oracle::Violation, MODELS};
use serde::Serialize;
use std::time::Instant;

/// What a soak found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakReport {
    /// Runs done.
    pub runs: u64,
    /// Simulated events (steps) handled.
    pub events: u64,
    /// Runs that ended with an invariant violation.
    pub violations: u64,
    /// The first violation: model, and the violation (its seed replays it).
    pub first: Option<(String, Violation)>,
    /// Transitions completed.
    pub transitions: u64,
    /// Script operations run.
    pub operations: u64,
    /// Of those, refused by the engine or the machine (busy, not enabled, …).
    pub refused: u64,
    /// Call-chain mixed stacks measured (I6).
    pub mixed_stacks: u64,
    /// Exiting tasks left unswitched (Linux policy; harmless here).
    pub exiting_unswitched: u64,
    /// Runs of a policy that does not visit exiting tasks (linux-6.12) stopped by the exit
    /// race the kernel has: an unhashed task still in an old `do_exit` at completion.
    pub linux_exit_races: u64,
    /// Runs with a forced transition (the oracle's checks stay on after it; only frames that
    /// predate the force are counted instead of failed).
    pub forced_runs: u64,
    /// Stale frames from before a force, counted.
    pub forced_mixed: u64,
    /// Wall-clock time.
    pub wall_ns: u64,
}

/// Runs random scenarios (seeds `seed`, `seed + 1`, …, models in turn, `steps` operations
/// each) until `budget` events were simulated. `progress` gets the events so far.
pub fn soak(budget: u64, seed: u64, steps: usize, progress: &mut dyn FnMut(u64)) -> SoakReport {
    let wall = Instant::now();
    let mut rep = SoakReport::default();
    let mut i = 0u64;
    while rep.events < budget {
        let s = seed.wrapping_add(i);
        let (m, ops) = random::generate(s, steps);
        let Ok(sc) = random::build(&m, &ops) else {
            i += 1;
            continue;
        };
        let (name, policy) = MODELS[(i % MODELS.len() as u64) as usize];
        let opts = RunOptions { max_events: 400_000, timeline: false };
        let r = run_with(&sc, policy, opts, &mut |_| {});
        rep.runs += 1;
        rep.events += r.events;
        rep.transitions += r.transitions.iter().filter(|t| t.end_ns.is_some()).count() as u64;
        rep.mixed_stacks += r.oracle.mixed_stacks;
        rep.operations += r.outcomes.len() as u64;
        rep.refused += r.outcomes.iter().filter(|o| o.error.is_some()).count() as u64;
        rep.exiting_unswitched += r.oracle.exiting_unswitched;
        rep.forced_runs += u64::from(r.transitions.iter().any(|t| t.outcome == "forced"));
        rep.forced_mixed += r.oracle.forced_mixed;
        if let Some(v) = r.violation {
            if is_linux_exit_race(&policy, &v) {
                rep.linux_exit_races += 1;
            } else {
                rep.violations += 1;
                rep.first.get_or_insert((name.to_string(), v));
            }
        }
        progress(rep.events);
        i += 1;
    }
    rep.wall_ns = wall.elapsed().as_nanos() as u64;
    rep
}

/// Whether `v` is Linux's own exit race, not the core's: under a policy that does not visit
/// exiting tasks, a task preempted in the unhashed tail of a patched `do_exit` while the
/// transition completes (LKML, Jan 2025, "\[BUG\] Kernel Crash during replacement of livepatch
/// patching do_exit()").
pub fn is_linux_exit_race(policy: &livepatch_core::Policy, v: &Violation) -> bool {
    !policy.visit_exiting && v.invariant == crate::oracle::Invariant::I3 && v.message.contains("exiting")
}

/// Replays soak run `seed` (with `steps` operations) under `policy`: the run a violation's
/// seed names.
pub fn replay(seed: u64, steps: usize, policy: livepatch_core::Policy) -> Option<crate::run::RunResult> {
    let (m, ops) = random::generate(seed, steps);
    let sc = random::build(&m, &ops).ok()?;
    Some(run_with(&sc, policy, RunOptions { max_events: 400_000, timeline: false }, &mut |_| {}))
}
