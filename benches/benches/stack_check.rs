//! Area 3 — one task's stack check: D ∈ {8, 32, 99} frames × F ∈ {1, 15, 100, 1000} patched
//! functions. Ours: `sweep::first_away_frame` (bounds pre-filter, then an O(log n) lookup per
//! frame). Baseline, same run: the kernel's `klp_check_stack` — save the stack, then for each
//! function of the patch find its ops on a list of N = F patched functions and scan all D
//! frames, O(F·(N+D)).
//!
//! The F functions are spread evenly over a 16k-function text; the D return addresses are in
//! unpatched text anywhere (so for large F nearly every frame passes the bounds pre-filter and
//! costs a lookup). No frame is in patched code: both algorithms must look at everything.
//!
//! `stack_check/near_D32` repeats D = 32 with every frame right after a patched function, on
//! its 4 KiB page: the worst case for the core's page pre-filter (every frame is looked up).

use criterion::{black_box, BenchmarkId, Criterion};
use livepatch_benches::backend::{BenchTask, SliceWalker};
use livepatch_benches::fixture::{spread_patch, Fixture, BENCH_POLICY};
use livepatch_benches::kernel::{KlpPatch, KlpWorld};
use livepatch_benches::layout::{original, variant, Rng};
use livepatch_core::sweep;

fn bench(c: &mut Criterion) {
    let depths = [8usize, 32, 99];
    let mut rng = Rng::new(0xd00d);
    let tasks: Vec<BenchTask> =
        depths.iter().map(|&d| BenchTask::new(d as u32, (0..d).map(|_| rng.clean_frame()).collect())).collect();
    for f in [1usize, 15, 100, 1_000] {
        let mut fx = Fixture::new(f, 1, BENCH_POLICY, Vec::new());
        // In transition towards the patch: the originals are the code being switched away from.
        fx.enable(spread_patch(1, 0, f));
        let live = fx.live;

        let mut world = KlpWorld::new();
        let mut kpatch = KlpPatch::default();
        for i in 0..f {
            world.patch_func(&mut kpatch, original(i, f), Some(variant(0, i)));
        }
        world.set_transition(&kpatch, true);

        let mut near_rng = Rng::new(0xfeed);
        let near = BenchTask::new(1000, (0..32).map(|_| near_rng.near_frame(f)).collect());
        let cases = tasks.iter().zip(depths.map(|d| format!("D{d}"))).chain([(&near, "near_D32".to_string())]);
        for (task, name) in cases {
            assert_eq!(sweep::first_away_frame(live, &SliceWalker, task), Ok(None));
            assert_eq!(world.check_stack(&kpatch, &SliceWalker, task, true), Ok(true));
            let mut group = c.benchmark_group(format!("stack_check/{name}"));
            group.bench_with_input(BenchmarkId::new("ours", f), task, |b, t| {
                b.iter(|| sweep::first_away_frame(black_box(live), &SliceWalker, black_box(t)))
            });
            group.bench_with_input(BenchmarkId::new("kernel", f), task, |b, t| {
                b.iter(|| world.check_stack(black_box(&kpatch), &SliceWalker, black_box(t), true))
            });
            group.finish();
        }
    }
}

fn main() {
    let mut c = livepatch_benches::criterion();
    bench(&mut c);
    c.final_summary();
}
