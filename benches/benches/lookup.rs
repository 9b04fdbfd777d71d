//! Area 2 — patched-set point lookup at 10, 100, 1k and 10k patched functions (each adds two
//! ranges: the original and its variant), hits and misses, against a linear scan, a sorted
//! `Vec` with binary search, a `BTreeMap` range query and `rangemap::RangeMap`, all over the
//! same ranges in the same run. Also prints the sizes of the core's per-function records.

use criterion::{black_box, BenchmarkId, Criterion};
use livepatch_benches::fixture::{spread_patch, Fixture, BENCH_POLICY};
use livepatch_benches::layout::Rng;
use livepatch_core::func_stack::FuncSlot;
use livepatch_core::patch::FuncNode;
use livepatch_core::patched_set::IndexEntry;
use livepatch_core::{CodeAddr, TaskPatchState};
use rangemap::RangeMap;
use std::collections::BTreeMap;

/// Queries per kind; a power of two, many enough that the branch predictor cannot learn them.
const QUERIES: usize = 1 << 14;

fn print_sizes() {
    println!("size_of: TaskPatchState={}", std::mem::size_of::<TaskPatchState>());
    println!("size_of: IndexEntry={}", std::mem::size_of::<IndexEntry<'static>>());
    println!("size_of: FuncSlot={}", std::mem::size_of::<FuncSlot<'static>>());
    println!("size_of: FuncNode={}", std::mem::size_of::<FuncNode<'static>>());
}

/// Cycles through `queries`, one lookup per iteration.
fn cycle<T>(b: &mut criterion::Bencher<'_>, queries: &[CodeAddr], mut f: impl FnMut(CodeAddr) -> T) {
    let mut i = 0;
    b.iter(|| {
        i = (i + 1) & (QUERIES - 1);
        f(black_box(queries[i]))
    });
}

fn bench(c: &mut Criterion) {
    for n in [10usize, 100, 1_000, 10_000] {
        let mut fx = Fixture::new(n, 1, BENCH_POLICY, Vec::new());
        fx.apply(spread_patch(1, 0, n));
        let set = fx.live.patched_set();
        assert_eq!(set.len(), 2 * n);
        println!("extra: lookup/{n} {:?}", set.layout());

        // The same ranges for every baseline; the value is the entry's position.
        let ranges: Vec<(usize, usize, u32)> =
            set.iter().enumerate().map(|(i, h)| (h.range.start().get(), h.range.end().get(), i as u32)).collect();
        let sorted = ranges.clone();
        let btree: BTreeMap<usize, (usize, u32)> = ranges.iter().map(|&(s, e, v)| (s, (e, v))).collect();
        let rmap: RangeMap<usize, u32> = ranges.iter().map(|&(s, e, v)| (s..e, v)).collect();

        let mut rng = Rng::new(0x5eed ^ n as u64);
        let hits: Vec<CodeAddr> = (0..QUERIES)
            .map(|_| {
                let (s, e, _) = ranges[rng.below(ranges.len())];
                CodeAddr(s + rng.below(e - s))
            })
            .collect();
        let misses: Vec<CodeAddr> = (0..QUERIES).map(|_| rng.clean_frame()).collect();
        for (&a, &m) in hits.iter().zip(&misses) {
            assert!(set.lookup(a).is_some() && set.lookup(m).is_none());
        }

        for (kind, queries) in [("hit", &hits), ("miss", &misses)] {
            let mut group = c.benchmark_group(format!("lookup/{kind}"));
            group.bench_with_input(BenchmarkId::new("ours", n), queries, |b, q| cycle(b, q, |a| set.lookup(a)));
            group.bench_with_input(BenchmarkId::new("linear", n), queries, |b, q| {
                cycle(b, q, |a| ranges.iter().find(|r| r.0 <= a.get() && a.get() < r.1).map(|r| r.2))
            });
            group.bench_with_input(BenchmarkId::new("sorted_vec", n), queries, |b, q| {
                cycle(b, q, |a| {
                    let i = sorted.partition_point(|r| r.0 <= a.get());
                    i.checked_sub(1).map(|i| sorted[i]).filter(|r| a.get() < r.1).map(|r| r.2)
                })
            });
            group.bench_with_input(BenchmarkId::new("btreemap", n), queries, |b, q| {
                cycle(b, q, |a| {
                    btree.range(..=a.get()).next_back().filter(|(_, (e, _))| a.get() < *e).map(|(_, v)| v.1)
                })
            });
            group.bench_with_input(BenchmarkId::new("rangemap", n), queries, |b, q| {
                cycle(b, q, |a| rmap.get(&a.get()).copied())
            });
            group.finish();
        }
    }
}

fn main() {
    print_sizes();
    let mut c = livepatch_benches::criterion();
    bench(&mut c);
    c.final_summary();
}
