//! Side-by-side timing in alternating slices, for the ratios the goals are stated in.
//!
//! Criterion measures one function for a couple of seconds, then the next: on a shared machine
//! the load changes between the two, and a ratio of their medians carries that change. Here
//! the contenders take turns: each round runs every contender for about [`SLICE`] (the order
//! rotates every round), so every contender sees the same load within a few milliseconds; a
//! contender's figure is the median over the rounds of its time per iteration. Turns are
//! timed in the thread's CPU time ([`crate::cpu_time::now`]), so a turn in which the thread
//! waited for a CPU is not charged for the wait. The ratios printed as `interleaved:` lines
//! are the ones BENCHMARKS.md checks goals against.

use crate::cpu_time;
use std::time::Duration;

/// Thread CPU time of one contender's turn.
pub const SLICE: Duration = Duration::from_millis(2);
/// Turns per contender.
pub const ROUNDS: usize = 41;

/// One contender: a label and a body that runs the measured operation `n` times.
pub type Contender<'f> = (&'static str, &'f mut dyn FnMut(u64));

/// Calibrations per contender; the longest turn they find is kept.
const CALIBRATIONS: usize = 3;

/// Iterations of `body` per turn so that a turn lasts about [`SLICE`].
///
/// Each calibration times `body` over 1, 4, 16, … iterations until a quarter of a slice has
/// passed. A stall in one of them — a host preemption, which a guest charges to the thread's CPU
/// time — only makes an iteration look dearer, so the turn shorter: of [`CALIBRATIONS`], the
/// longest turn is kept. (Kept from one calibration, a millisecond's stall on the first call
/// made turns of two iterations, each charged half the clock reads around the turn: 204 ns
/// per iteration for a body of about one.)
fn turn_length(body: &mut dyn FnMut(u64)) -> u64 {
    (0..CALIBRATIONS)
        .map(|_| {
            let mut n = 1u64;
            loop {
                let t = cpu_time::now();
                body(n);
                let took = cpu_time::now().saturating_sub(t);
                if took >= SLICE / 4 || n >= 1 << 30 {
                    let per = took.as_secs_f64() / n as f64;
                    return ((SLICE.as_secs_f64() / per.max(1e-12)) as u64).clamp(1, 1 << 30);
                }
                n *= 4;
            }
        })
        .max()
        .unwrap_or(1)
}

/// Times `contenders` in alternating turns and prints one line
/// `interleaved: <name> <label>=<ns per iteration> …` (medians over [`ROUNDS`] turns).
/// Returns the medians in the contenders' order.
pub fn measure(name: &str, contenders: &mut [Contender<'_>]) -> Vec<f64> {
    let iters: Vec<u64> = contenders.iter_mut().map(|(_, body)| turn_length(body)).collect();
    let k = contenders.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); k];
    for round in 0..ROUNDS {
        for j in 0..k {
            let c = (round + j) % k;
            let t = cpu_time::now();
            (contenders[c].1)(iters[c]);
            samples[c].push(cpu_time::now().saturating_sub(t).as_secs_f64() * 1e9 / iters[c] as f64);
        }
    }
    let medians: Vec<f64> = samples
        .iter_mut()
        .map(|s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect();
    let figures: Vec<String> =
        contenders.iter().zip(&medians).map(|((label, _), m)| format!("{label}={m:.3}")).collect();
    println!("interleaved: {name} {}", figures.join(" "));
    medians
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// Spins for `d` of the thread's CPU time (a stall the guest's clock charges to the thread,
    /// as a host preemption is).
    fn spin(d: Duration) {
        let until = cpu_time::now() + d;
        while cpu_time::now() < until {}
    }

    /// A stall during the calibration of a turn's length must not shrink the turns to a few
    /// iterations, each then charged the clock reads around the turn: the contender below
    /// costs about a nanosecond per iteration, but its first calibration call stalls for a
    /// millisecond.
    #[test]
    fn a_stall_while_calibrating_does_not_shrink_the_turns() {
        let mut first = true;
        let mut body = |n: u64| {
            if std::mem::take(&mut first) {
                spin(Duration::from_millis(1));
            }
            for i in 0..n {
                black_box(i);
            }
        };
        let medians = measure("test/stalled_calibration", &mut [("stalled", &mut body)]);
        assert!(medians[0] < 20.0, "{} ns per iteration", medians[0]);
    }
}
