//! Area 3 — one task's stack check on a real kernel's text (Debian 12's 6.1, see
//! `livepatch_benches::real`): D ∈ {8, 32, 99} frames × F ∈ {1, 2, 4, 8, 15, 100, 1k, 10k}
//! patched functions drawn at random from the text. Ours: `sweep::first_away_frame`, whose
//! per-frame filter depends on F (one compare per range up to 4 ranges, eight frames per
//! loop iteration; bounds, blocks and the listed ranges up to 16; bounds, blocks and an index
//! lookup beyond), so F = 2, 4 and 8 are rows of their own. The walker (`SliceWalker`) hands
//! ours the saved stack at once (`walk_runs`) and the kernel port one address at a time into
//! its buffer (`walk`), as `stack_trace_save_tsk_reliable` fills the kernel's. Baseline, same run:
//! the kernel's `klp_check_stack` — save the stack in the reused per-CPU buffer (not cleared per
//! call), then for each function of the patch find its ops on a list of N = F patched functions and
//! scan all D frames, O(F·(N+D)).
//!
//! Each iteration checks the next of 1 024 tasks (distinct stacks, cycled), so neither side
//! checks the same stack twice in a row. The return addresses are inside random unpatched
//! functions of the text: no frame is in patched code, so both algorithms must look at
//! everything. `stack_check/near_D32` puts every frame inside an unpatched neighbour of a
//! patched function (a near-miss): the worst case for the core's block pre-filter.

use criterion::{black_box, BenchmarkId, Criterion, SamplingMode};
use livepatch_benches::backend::{BenchTask, SliceWalker};
use livepatch_benches::fixture::{patch, Fixture, BENCH_POLICY};
use livepatch_benches::interleave;
use livepatch_benches::kernel::{KlpPatch, KlpWorld};
use livepatch_benches::layout::Rng;
use livepatch_benches::real::KernelText;
use livepatch_core::sweep;

/// Distinct tasks cycled (a power of two).
const TASKS: usize = 1024;

fn bench(c: &mut Criterion) {
    let text = KernelText::load();
    // Quick iterations: `STACK_ONLY=1,2,4` keeps those F, and `STACK_INTERLEAVED_ONLY=1`
    // skips the criterion groups (the interleaved lines remain).
    let only = std::env::var("STACK_ONLY").ok();
    let interleaved_only = std::env::var_os("STACK_INTERLEAVED_ONLY").is_some();
    for f in [1usize, 2, 4, 8, 15, 100, 1_000, 10_000] {
        if only.as_ref().is_some_and(|o| !o.split(',').any(|x| x == f.to_string())) {
            continue;
        }
        let set = text.random_set(f, 0x5c0 + f as u64);
        let patched = text.mask(&set);
        let pairs = text.pairs(&set, 0);
        let mut fx = Fixture::new(f, 1, BENCH_POLICY, Vec::new());
        // In transition towards the patch: the originals are the code being switched away from.
        fx.enable(patch(1, &pairs, false));
        let live = fx.live;

        let mut world = KlpWorld::new();
        let mut kpatch = KlpPatch::default();
        for &(old, new) in &pairs {
            world.patch_func(&mut kpatch, old, Some(new));
        }
        world.set_transition(&kpatch, true);

        let mut rng = Rng::new(0xd00d ^ f as u64);
        let mut cases: Vec<(String, Vec<BenchTask>)> = [8usize, 32, 99]
            .iter()
            .map(|&d| {
                let tasks = (0..TASKS)
                    .map(|i| BenchTask::new(i as u32, (0..d).map(|_| text.clean_frame(&patched, &mut rng)).collect()))
                    .collect();
                (format!("D{d}"), tasks)
            })
            .collect();
        let near = (0..TASKS)
            .map(|i| {
                let stack = (0..32).map(|_| text.near_miss(&set, &patched, &mut rng).expect("a neighbour")).collect();
                BenchTask::new(i as u32, stack)
            })
            .collect();
        cases.push(("near_D32".to_string(), near));
        for (name, tasks) in &cases {
            for t in tasks.iter().step_by(97) {
                assert_eq!(sweep::first_away_frame(live, &SliceWalker, t), Ok(None));
                assert_eq!(world.check_stack(&kpatch, &SliceWalker, t, true), Ok(true));
            }
            if !interleaved_only {
                let mut group = c.benchmark_group(format!("stack_check/{name}"));
                if f >= 1_000 {
                    // The kernel's check takes milliseconds here: fewer, flat samples.
                    group.sampling_mode(SamplingMode::Flat).sample_size(10);
                }
                group.bench_with_input(BenchmarkId::new("ours", f), tasks, |b, tasks| {
                    let mut i = 0;
                    b.iter(|| {
                        i = (i + 1) & (TASKS - 1);
                        // The kernel's answer, "may it switch?", in the same type
                        // (`Result<bool, _>`): the harness then stores the same few bytes for both.
                        sweep::first_away_frame(black_box(live), &SliceWalker, black_box(&tasks[i]))
                            .map(|f| f.is_none())
                    })
                });
                group.bench_with_input(BenchmarkId::new("kernel", f), tasks, |b, tasks| {
                    let mut i = 0;
                    b.iter(|| {
                        i = (i + 1) & (TASKS - 1);
                        world.check_stack(black_box(&kpatch), &SliceWalker, black_box(&tasks[i]), true)
                    })
                });
                group.finish();
            }

            // Alternating turns (the ratio the goal is checked on); the kernel's check at
            // F >= 1 000 takes milliseconds, so only F <= 100 is interleaved.
            if f <= 100 {
                let (mut i, mut j) = (0, 0);
                let mut ours = |n: u64| {
                    for _ in 0..n {
                        i = (i + 1) & (TASKS - 1);
                        let _ = black_box(
                            sweep::first_away_frame(black_box(live), &SliceWalker, black_box(&tasks[i]))
                                .map(|f| f.is_none()),
                        );
                    }
                };
                let mut kernel = |n: u64| {
                    for _ in 0..n {
                        j = (j + 1) & (TASKS - 1);
                        let _ =
                            black_box(world.check_stack(black_box(&kpatch), &SliceWalker, black_box(&tasks[j]), true));
                    }
                };
                interleave::measure(
                    &format!("stack_check/{name}/{f}"),
                    &mut [("ours", &mut ours), ("kernel", &mut kernel)],
                );
            }
        }
    }
}

fn main() {
    let mut c = livepatch_benches::criterion();
    bench(&mut c);
    c.final_summary();
}
