//! Shared helpers for the criterion benches in `benches/benches/`: a minimal in-memory backend
//! ([`backend`]), a synthetic address layout and a seeded generator ([`layout`]), a real kernel's
//! text ([`real`]), the task lookups of a module and of the kernel ([`tasks`]), engines built
//! through the public API ([`fixture`]), ports of the Linux 6.12 algorithms the benches
//! compare against ([`kernel`]), a thread-CPU-time measurement for criterion
//! ([`cpu_time`]), and side-by-side timing in alternating turns ([`interleave`]).
//!
//! Everything here is built once per bench and leaked (`&'static`), so the engine's lifetimes
//! are satisfied without self-referential structs.

pub mod backend;
pub mod cpu_time;
pub mod fixture;
pub mod interleave;
pub mod kernel;
pub mod layout;
pub mod real;
pub mod tasks;

use criterion::Criterion;
use std::time::Duration;

/// The criterion configuration every bench uses: short enough that the whole suite runs in a
/// few minutes on a shared 2-core machine (no plots; 10k bootstrap resamples instead of 100k).
/// Command-line options still override it.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .nresamples(10_000)
        .without_plots()
        .configure_from_args()
}

/// Leaks `value` for the rest of the process (bench fixtures live that long anyway).
pub fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}
