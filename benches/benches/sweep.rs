//! Area 4 — a full completion attempt (`Engine::try_complete`) over 10k and 100k tasks of 32
//! frames with 1k patched functions, on one core, 64 tasks per task-list lock hold, on a real
//! kernel's text (Debian 12's 6.1, see `livepatch_benches::real`): the 1k functions are drawn at
//! random from its 46 767, and the return addresses are inside its unpatched functions.
//!
//! * `blocked`: every task's outermost frame is in a patched original, so each check walks all
//!   32 frames and every task stays pending: the same pass can be repeated.
//! * `switching`: clean stacks; every task switches and the transition completes (setup, not
//!   measured: disable + force + enable again, so each iteration starts a fresh transition).
//! * `blocked_near`: as `blocked`, with every frame inside an unpatched neighbour of a patched
//!   function (a near-miss; the worst case for the core's page pre-filter).
//! * `kernel`: the baseline in the same run — the kernel's per-task `klp_check_stack` over 64
//!   clean-stack tasks (every function checked against every frame); reported per task and
//!   extrapolated to the task count.
//!
//! Every bench runs twice: timed by wall clock (`sweep/…`) and by the thread's CPU clock
//! (`sweep_cpu/…`, which leaves out time spent waiting for a CPU on a shared machine). The
//! `extra:` lines give the longest batch from `PassSummary::max_batch_ns` and, for `blocked`,
//! the distribution of every batch's duration (one task-list lock hold) timed by the scheduler.

use criterion::measurement::Measurement;
use criterion::{BatchSize, BenchmarkId, Criterion};
use livepatch_benches::backend::{BenchTask, SliceWalker};
use livepatch_benches::cpu_time::ThreadCpuTime;
use livepatch_benches::fixture::{patch, Fixture, BENCH_POLICY};
use livepatch_benches::kernel::{KlpPatch, KlpWorld};
use livepatch_benches::layout::Rng;
use livepatch_benches::real::KernelText;
use livepatch_core::transition::Progress;
use livepatch_core::{CodeRange, Patch};
use std::cell::{Cell, RefCell};

const FUNCS: usize = 1_000;
const DEPTH: usize = 32;
const KERNEL_TASKS: usize = 64;

/// Where the frames of a task's stack are.
#[derive(Clone, Copy)]
enum Frames {
    /// Inside random unpatched functions of the text.
    Text,
    /// Inside unpatched neighbours of patched functions (defeats the page pre-filter).
    Near,
}

/// The text, the patched set and its (original, variant) pairs.
struct Layout {
    text: KernelText,
    set: Vec<usize>,
    patched: Vec<bool>,
    pairs: Vec<(CodeRange, CodeRange)>,
}

impl Layout {
    fn new() -> Self {
        let text = KernelText::load();
        let set = text.random_set(FUNCS, 0x5eef);
        let patched = text.mask(&set);
        let pairs = text.pairs(&set, 0);
        Self { text, set, patched, pairs }
    }

    fn patch(&self, id: u32) -> &'static Patch<'static> {
        patch(id, &self.pairs, false)
    }

    fn tasks(&self, n: usize, blocked: bool, frames: Frames, seed: u64) -> Vec<BenchTask> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|i| {
                let mut stack: Vec<_> = (0..DEPTH)
                    .map(|_| match frames {
                        Frames::Text => self.text.clean_frame(&self.patched, &mut rng),
                        Frames::Near => self.text.near_miss(&self.set, &self.patched, &mut rng).expect("a neighbour"),
                    })
                    .collect();
                if blocked {
                    let func = self.pairs[rng.below(FUNCS)].0;
                    stack[DEPTH - 1] = rng.inside(func);
                }
                BenchTask::new(i as u32, stack)
            })
            .collect()
    }
}

/// Median, 99th percentile, 99.9th percentile and maximum of the batch times, as text.
fn percentiles(mut times: Vec<u64>) -> String {
    if times.is_empty() {
        return "no batches".into();
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    format!(
        "batches_timed={} batch_ns: p50={} p99={} p99.9={} max={}",
        times.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        times[times.len() - 1]
    )
}

fn bench<M: Measurement>(c: &mut Criterion<M>, name: &str, layout: &Layout) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    for n in [10_000usize, 100_000] {
        // Blocked: the same pass, repeated.
        let mut fx = Fixture::new(FUNCS, 1, BENCH_POLICY, layout.tasks(n, true, Frames::Text, 7));
        let p = layout.patch(1);
        fx.enable(p);
        let max_batch = Cell::new(0u64);
        let batches = Cell::new(0u32);
        *fx.backend.scheduler.batch_ns.borrow_mut() = Some(Vec::new());
        group.bench_function(BenchmarkId::new("blocked", n), |b| {
            b.iter(|| {
                let progress = fx.try_complete();
                let s = *progress.summary();
                assert!(matches!(progress, Progress::Pending(_)) && s.on_stack as usize == n);
                max_batch.set(max_batch.get().max(s.max_batch_ns));
                batches.set(s.batches);
                s.remaining
            })
        });
        let times = fx.backend.scheduler.batch_ns.borrow_mut().take().unwrap_or_default();
        println!(
            "extra: {name}/blocked/{n} batches_per_pass={} max_batch_ns(PassSummary)={} {}",
            batches.get(),
            max_batch.get(),
            percentiles(times)
        );

        // Switching: every task switches, the transition completes.
        let fx = RefCell::new(Fixture::new(FUNCS, 1, BENCH_POLICY, layout.tasks(n, false, Frames::Text, 8)));
        let p = layout.patch(2);
        let max_batch = Cell::new(0u64);
        group.bench_function(BenchmarkId::new("switching", n), |b| {
            b.iter_batched(
                || {
                    let mut fx = fx.borrow_mut();
                    if p.is_registered() {
                        fx.disable(p);
                        fx.force();
                    }
                    fx.enable(p);
                },
                |()| {
                    let progress = fx.borrow_mut().try_complete();
                    let s = *progress.summary();
                    assert!(matches!(progress, Progress::Complete(_)) && s.switched as usize == n);
                    max_batch.set(max_batch.get().max(s.max_batch_ns));
                    s.switched
                },
                BatchSize::PerIteration,
            )
        });
        println!("extra: {name}/switching/{n} max_batch_ns={}", max_batch.get());
    }

    // Worst case for the page pre-filter: every frame next to a patched function.
    let mut fx = Fixture::new(FUNCS, 1, BENCH_POLICY, layout.tasks(100_000, true, Frames::Near, 9));
    fx.enable(layout.patch(3));
    group.bench_function(BenchmarkId::new("blocked_near", 100_000), |b| {
        b.iter(|| fx.try_complete().summary().remaining)
    });

    // The kernel's per-task check over the first tasks of a clean-stack set, same run.
    let ktasks = layout.tasks(KERNEL_TASKS, false, Frames::Text, 8);
    let mut world = KlpWorld::new();
    let mut kpatch = KlpPatch::default();
    for &(old, new) in &layout.pairs {
        world.patch_func(&mut kpatch, old, Some(new));
    }
    world.set_transition(&kpatch, true);
    group.bench_function(BenchmarkId::new("kernel", KERNEL_TASKS), |b| {
        b.iter(|| ktasks.iter().filter(|t| world.check_stack(&kpatch, &SliceWalker, t, true) == Ok(true)).count())
    });
    group.finish();
}

fn main() {
    let layout = Layout::new();
    let mut c = livepatch_benches::criterion();
    bench(&mut c, "sweep", &layout);
    // The same passes timed by the thread's CPU clock: excludes the time other processes of a
    // loaded machine run while this thread waits.
    let mut c = livepatch_benches::criterion().with_measurement(ThreadCpuTime::default());
    bench(&mut c, "sweep_cpu", &layout);
    c.final_summary();
}
