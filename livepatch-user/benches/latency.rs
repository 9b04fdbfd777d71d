//! Added latency of the target's operations: a registered thread times every call of the
//! C target's f -> g chain (`f(i)`: f calls g twice) back to back, first for a phase without
//! transitions, then for a phase in which the runtime enables and disables the f/g patch in
//! a loop (each transition waited to completion or to its giving up), while 2 spinning and
//! 2 churning threads of the target run. Printed per model: the per-task default
//! ([`livepatch_user::DEFAULT_POLICY`]) and stop-the-world (a stop every 200 µs, 200
//! attempts). Each model runs in a process of its own (the runtime is a process singleton):
//! the bench re-executes itself with `LP_LATENCY_MODEL`.
//!
//! Not a criterion bench: the figures are a distribution's tail (p50, p99, p99.9, max), which
//! criterion does not report. `cargo bench -p livepatch-user --bench latency`.

#[path = "../tests/common/mod.rs"]
mod common;

use livepatch_core::Policy;
use livepatch_user::Runtime;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long each phase runs.
const PHASE: Duration = Duration::from_secs(2);
/// Histogram resolution and range: 10 ns buckets up to 1 ms, then one overflow bucket
/// (the maximum is kept exactly).
const BUCKET_NS: u64 = 10;
const BUCKETS: usize = 100_000;

struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max_ns: u64,
}

impl Histogram {
    fn new() -> Self {
        Self { counts: vec![0; BUCKETS + 1], n: 0, max_ns: 0 }
    }
    fn add(&mut self, ns: u64) {
        self.counts[((ns / BUCKET_NS) as usize).min(BUCKETS)] += 1;
        self.n += 1;
        self.max_ns = self.max_ns.max(ns);
    }
    /// The smallest bucket bound below which a fraction `q` of the samples lies.
    fn quantile(&self, q: f64) -> String {
        let want = (self.n as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return if i == BUCKETS { "> 1 ms".into() } else { fmt_ns((i as u64 + 1) * BUCKET_NS) };
            }
        }
        "-".into()
    }
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

fn run(model: &str) {
    let policy = match model {
        "stop-the-world" => Policy { retry_delay_ns: 200_000, stop_attempts: 200, ..Policy::STOP_THE_WORLD },
        _ => livepatch_user::DEFAULT_POLICY,
    };
    let rt = Runtime::init(policy).expect("init");
    let t = common::load(&format!("latency-{model}"));
    let frame = 0usize;
    // SAFETY: no token; `frame` is a stack address above every frame this thread uses later.
    let r = unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &frame as *const usize as *const _) };
    assert_eq!(r, 0);
    assert_eq!((t.start)(&common::API, 0, 0, 2, 2), 0);
    common::wait_running(&t, 4);
    let f = t.f;
    let token = livepatch_user::threads::prepare_child().expect("prepare the measuring thread");
    let stop = Arc::new(AtomicBool::new(false));
    let transitions = Arc::new(AtomicBool::new(false));
    let (s2, tr2) = (stop.clone(), transitions.clone());
    let measurer = std::thread::spawn(move || {
        let base = 0usize;
        Runtime::get().unwrap().thread_begin(Some(token), &base as *const usize as usize).expect("begin");
        let (mut quiet, mut busy) = (Histogram::new(), Histogram::new());
        let mut i = 0;
        while !s2.load(Ordering::Relaxed) {
            let during = tr2.load(Ordering::Relaxed);
            let t0 = Instant::now();
            std::hint::black_box(f(std::hint::black_box(i)));
            let ns = t0.elapsed().as_nanos() as u64;
            if during { &mut busy } else { &mut quiet }.add(ns);
            i += 1;
        }
        livepatch_user::livepatch_thread_end();
        std::hint::black_box(&base);
        (quiet, busy)
    });
    std::thread::sleep(PHASE);
    transitions.store(true, Ordering::Relaxed);
    let p = &t.patches[0];
    let t0 = Instant::now();
    let (mut completed, mut gave_up) = (0u64, 0u64);
    while t0.elapsed() < PHASE {
        let before = rt.stats().transitions;
        rt.apply(p).expect("apply");
        rt.wait(Duration::from_secs(20)).expect("enable ends");
        let enabled = rt.stats().transitions > before;
        if enabled {
            completed += 1;
            let h = rt.list()[0].handle;
            loop {
                let before = rt.stats().transitions;
                rt.disable(h).expect("disable");
                rt.wait(Duration::from_secs(20)).expect("disable ends");
                if rt.stats().transitions > before {
                    completed += 1;
                    break;
                }
                gave_up += 1;
            }
        } else {
            gave_up += 1;
        }
    }
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (quiet, busy) = measurer.join().expect("measurer");
    (t.stop)();
    assert_eq!((t.bad)(), 0, "no chain mixed versions");
    let stats = rt.stats();
    println!(
        "{model}: {completed} transitions completed, {gave_up} gave up in {elapsed:.2?}; kicks {}, stops {}, \
         stop signals {}, stop pause mean {} max {}",
        stats.kicks,
        stats.stops,
        stats.stop_signals,
        fmt_ns(stats.stop_pause_ns_total.checked_div(stats.stops).unwrap_or(0)),
        fmt_ns(stats.stop_pause_ns_max)
    );
    for (phase, h) in [("no transitions", &quiet), ("transitions", &busy)] {
        println!(
            "| {model} | {phase} | {} | {} | {} | {} | {} |",
            h.n,
            h.quantile(0.5),
            h.quantile(0.99),
            h.quantile(0.999),
            fmt_ns(h.max_ns)
        );
    }
}

fn main() {
    if let Ok(model) = std::env::var("LP_LATENCY_MODEL") {
        run(&model);
        return;
    }
    // `cargo bench` passes `--bench`; anything else (a filter, `--test`) runs nothing long.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!("| model | phase | calls | p50 | p99 | p99.9 | max |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for model in ["per-task", "stop-the-world"] {
        let status = std::process::Command::new(std::env::current_exe().expect("this bench"))
            .env("LP_LATENCY_MODEL", model)
            .status()
            .expect("run a model");
        assert!(status.success(), "{model}: {status}");
    }
}
