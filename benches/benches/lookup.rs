//! Area 2 — patched-set point lookup on a real kernel's text (Debian 12's 6.1 kernel, see
//! `livepatch_benches::real`), against a branch-free binary search over the same sorted starts
//! and a linear scan, all over the same ranges in the same run. The search is measured twice:
//! over arrays whose addresses stay in registers across the loop (`bsearch`, the goal's
//! baseline), and over arrays behind a published pointer loaded per lookup
//! (`bsearch_published`: what a lock-free kernel index built on the search would load, as the
//! core loads its version word). Also prints the sizes of the
//! core's per-function records and each version's index layout.
//!
//! Layouts (N patched functions, each adds two ranges: its original and its variant, packed in
//! module text):
//! * `random`: N functions drawn uniformly from the text (N = 10, 100, 1k, 10k);
//! * `run`: a contiguous run of N functions (N = 10, 100, 1k, 10k);
//! * `tcp`, `bpf`: every `tcp_` function (381) and every `bpf…` function (1 147), one subsystem;
//! * `synthetic`: the old best case (256-byte functions, 256-byte aligned, spread evenly over a
//!   16 MiB text; N = 1k, 10k), kept as one row among others.
//!
//! Queries (16 384 per kind, cycled, one lookup per iteration):
//! * `hit_orig` / `hit_variant`: uniform inside a random patched original / variant;
//! * `near_miss`: inside an unpatched function right before or after a patched one;
//! * `random_text`: uniform over the whole text `[_stext, _etext)` (mostly misses).

use criterion::{black_box, BenchmarkId, Criterion};
use livepatch_benches::fixture::{leaked_index_buffer, patch, Fixture, BENCH_POLICY};
use livepatch_benches::interleave;
use livepatch_benches::layout::{self, Rng};
use livepatch_benches::real::{KernelText, GROUP_BPF, GROUP_TCP};
use livepatch_core::func_stack::FuncSlot;
use livepatch_core::patch::FuncNode;
use livepatch_core::patched_set::{DirectorySlot, Hit, IndexEntry, LookupMode, PatchedSet, WINDOW};
use livepatch_core::{CodeAddr, CodeRange, Live, TaskPatchState};
use std::sync::atomic::{AtomicPtr, Ordering};

/// Queries per kind; a power of two, many enough that the branch predictor cannot learn them.
const QUERIES: usize = 1 << 14;
/// Largest N measured with the linear scan (its cost grows with N; the goal is at 1k).
const LINEAR_MAX: usize = 1_000;

fn print_sizes() {
    println!("size_of: TaskPatchState={}", std::mem::size_of::<TaskPatchState>());
    println!("size_of: IndexEntry={}", std::mem::size_of::<IndexEntry<'static>>());
    println!("size_of: DirectorySlot={}", std::mem::size_of::<DirectorySlot>());
    println!("size_of: FuncSlot={}", std::mem::size_of::<FuncSlot<'static>>());
    println!("size_of: FuncNode={}", std::mem::size_of::<FuncNode<'static>>());
    println!("size_of: PatchedSet={}", std::mem::size_of::<PatchedSet<'static>>());
    println!("size_of: Live={}", std::mem::size_of::<Live<'static>>());
}

/// Cycles through `queries`, one lookup per iteration.
fn cycle<T>(b: &mut criterion::Bencher<'_>, queries: &[CodeAddr], mut f: impl FnMut(CodeAddr) -> T) {
    let mut i = 0;
    b.iter(|| {
        i = (i + 1) & (QUERIES - 1);
        f(black_box(queries[i]))
    });
}

/// The same cycling for [`interleave::measure`]: `n` lookups per call.
fn turns<'q, T>(queries: &'q [CodeAddr], mut f: impl FnMut(CodeAddr) -> T + 'q) -> impl FnMut(u64) + 'q {
    let mut i = 0;
    move |n| {
        for _ in 0..n {
            i = (i + 1) & (QUERIES - 1);
            black_box(f(black_box(queries[i])));
        }
    }
}

/// The baseline: a branch-free binary search over the sorted starts (a dense `usize` array),
/// then one compare against the candidate's end. Returns the range's rank (`bsearch_rank`);
/// `bsearch` then reads the rank's record, so that it answers what `lookup` answers (the
/// range, the slot and the variant: what the sweep needs).
#[inline(always)]
#[allow(clippy::incompatible_msrv)] // the benches build with the pinned 1.95 toolchain
fn bsearch(starts: &[usize], ends: &[usize], a: usize) -> Option<u32> {
    assert!(!starts.is_empty() && ends.len() == starts.len());
    let (mut base, mut len) = (0usize, starts.len());
    while len > 1 {
        let half = len / 2;
        // SAFETY: `base + half < base + len <= starts.len()` (the loop keeps
        // `base + len <= starts.len()`).
        let s = unsafe { *starts.get_unchecked(base + half) };
        // `select_unpredictable` keeps it a cmov (LLVM turns a plain `if` in a loop into a branch).
        base = std::hint::select_unpredictable(s <= a, base + half, base);
        len -= half;
    }
    // SAFETY: `base < starts.len() == ends.len()`.
    let (s, e) = unsafe { (*starts.get_unchecked(base), *ends.get_unchecked(base)) };
    (s <= a && a < e).then_some(base as u32)
}

/// The binary search's arrays as a kernel would publish them for lock-free readers: behind a
/// pointer that each lookup loads (`rcu_dereference`, here an `Acquire` load), so the arrays'
/// addresses and length come from memory per lookup, as the core's version word and buffer
/// do, rather than from registers kept across the loop.
struct PublishedSearch {
    starts: Vec<usize>,
    ends: Vec<usize>,
    records: Vec<Hit<'static>>,
}

/// `bsearch` over the arrays `published` points to, loaded once per lookup.
#[inline(always)]
fn bsearch_published(published: &AtomicPtr<PublishedSearch>, a: usize) -> Option<Hit<'static>> {
    // `Acquire`, as `rcu_dereference` on a weakly ordered machine: pairs with the `Release`
    // a publisher would store the pointer with (here `AtomicPtr::new` before the first lookup,
    // on the same thread); it is the load a reader pays, not a race this bench has.
    // SAFETY: the pointer is set once from a leaked `Box` before any lookup and never freed.
    let index = unsafe { &*published.load(Ordering::Acquire) };
    bsearch(&index.starts, &index.ends, a).map(|rank| index.records[rank as usize])
}

/// One measured layout: the (original, variant) pairs and the four query sets.
struct Case {
    layout: &'static str,
    n: usize,
    pairs: Vec<(CodeRange, CodeRange)>,
    queries: [(&'static str, Vec<CodeAddr>); 4],
}

fn inside_any(rng: &mut Rng, ranges: &[CodeRange]) -> CodeAddr {
    let i = rng.below(ranges.len());
    rng.inside(ranges[i])
}

fn real_case(text: &KernelText, layout: &'static str, set: Vec<usize>, seed: u64) -> Case {
    let pairs = text.pairs(&set, 0);
    let patched = text.mask(&set);
    let mut rng = Rng::new(seed);
    let originals: Vec<CodeRange> = pairs.iter().map(|p| p.0).collect();
    let variants: Vec<CodeRange> = pairs.iter().map(|p| p.1).collect();
    let queries = [
        ("hit_orig", (0..QUERIES).map(|_| inside_any(&mut rng, &originals)).collect()),
        ("hit_variant", (0..QUERIES).map(|_| inside_any(&mut rng, &variants)).collect()),
        ("near_miss", (0..QUERIES).map(|_| text.near_miss(&set, &patched, &mut rng).expect("a neighbour")).collect()),
        ("random_text", (0..QUERIES).map(|_| text.random_addr(&mut rng)).collect()),
    ];
    Case { layout, n: set.len(), pairs, queries }
}

fn synthetic_case(n: usize) -> Case {
    let pairs: Vec<_> = (0..n).map(|i| (layout::original(i, n), layout::variant(0, i))).collect();
    let mut rng = Rng::new(0x5eed ^ n as u64);
    let originals: Vec<CodeRange> = pairs.iter().map(|p| p.0).collect();
    let variants: Vec<CodeRange> = pairs.iter().map(|p| p.1).collect();
    let text = layout::TEXT_FUNCS * layout::STRIDE;
    let queries = [
        ("hit_orig", (0..QUERIES).map(|_| inside_any(&mut rng, &originals)).collect()),
        ("hit_variant", (0..QUERIES).map(|_| inside_any(&mut rng, &variants)).collect()),
        ("near_miss", (0..QUERIES).map(|_| rng.near_frame(n)).collect()),
        ("random_text", (0..QUERIES).map(|_| CodeAddr(layout::TEXT_BASE + rng.below(text))).collect()),
    ];
    Case { layout: "synthetic", n, pairs, queries }
}

fn cases() -> Vec<Case> {
    let text = KernelText::load();
    let mut cases = Vec::new();
    for n in [10usize, 100, 1_000, 10_000] {
        cases.push(real_case(&text, "random", text.random_set(n, 0x1000 + n as u64), n as u64));
    }
    for n in [10usize, 100, 1_000, 10_000] {
        cases.push(real_case(&text, "run", text.run_set(n, 0x2000 + n as u64), n as u64 ^ 0x77));
    }
    cases.push(real_case(&text, "tcp", text.group_set(GROUP_TCP, usize::MAX), 0x7c9));
    cases.push(real_case(&text, "bpf", text.group_set(GROUP_BPF, usize::MAX), 0xb9f));
    for n in [1_000usize, 10_000] {
        cases.push(synthetic_case(n));
    }
    cases
}

fn bench(c: &mut Criterion) {
    println!("extra: text {}", livepatch_benches::real::SOURCE.trim());
    // Quick iterations: `LOOKUP_ONLY=random/10,run/10000` keeps those cases, and
    // `LOOKUP_INTERLEAVED_ONLY=1` skips the criterion groups (the interleaved lines remain);
    // `LOOKUP_MODES=1` adds to them an index forced into each lookup mode (`directory`,
    // `search`) over the same slots, to compare the modes against the writer's choice.
    let only = std::env::var("LOOKUP_ONLY").ok();
    let interleaved_only = std::env::var_os("LOOKUP_INTERLEAVED_ONLY").is_some();
    let modes = std::env::var_os("LOOKUP_MODES").is_some();
    for case in cases() {
        let n = case.n;
        let name = format!("{}/{n}", case.layout);
        if only.as_ref().is_some_and(|o| !o.split(',').any(|x| x == name)) {
            continue;
        }
        let mut fx = Fixture::new(n, 1, BENCH_POLICY, Vec::new());
        fx.apply(patch(1, &case.pairs, false));
        let set = fx.live.patched_set();
        assert_eq!(set.len(), 2 * n);
        println!("extra: lookup/{}/{n} {:?}", case.layout, set.layout());

        // The same ranges for every baseline, read from the core's published version.
        let ranges: Vec<(usize, usize)> = set.iter().map(|h| (h.range.start().get(), h.range.end().get())).collect();
        let starts: Vec<usize> = ranges.iter().map(|r| r.0).collect();
        let ends: Vec<usize> = ranges.iter().map(|r| r.1).collect();
        let records: Vec<Hit<'static>> = set.iter().collect();
        let published = AtomicPtr::new(Box::leak(Box::new(PublishedSearch {
            starts: starts.clone(),
            ends: ends.clone(),
            records: records.clone(),
        })));
        // Buffers of 2N entries and the window's sentinels, like the live index's.
        let forced = |mode| {
            let buffer = || leaked_index_buffer(2 * n + WINDOW);
            // Leaked, as the live index is static: the published version points into it.
            let forced: &'static PatchedSet<'static> =
                Box::leak(Box::new(PatchedSet::with_mode(buffer(), buffer(), mode)));
            forced.rebuild(fx.live.slots(), || {}).expect("the live index's ranges fit");
            forced
        };
        let (directory, search) = (forced(LookupMode::Directory), forced(LookupMode::Search));
        for (kind, queries) in &case.queries {
            for &a in queries {
                let want = ranges.iter().position(|r| r.0 <= a.get() && a.get() < r.1);
                assert_eq!(set.lookup(a).map(|h| h.range.start().get()), want.map(|i| ranges[i].0), "{a:?}");
                assert_eq!(bsearch(&starts, &ends, a.get()).map(|i| i as usize), want);
                assert_eq!(
                    bsearch_published(&published, a.get()).map(|h| h.range.start().get()),
                    want.map(|i| ranges[i].0)
                );
                for forced in [directory, search] {
                    assert_eq!(forced.lookup(a).map(|h| h.range.start().get()), want.map(|i| ranges[i].0), "{a:?}");
                }
            }
            if !interleaved_only {
                let mut group = c.benchmark_group(format!("lookup/{}/{kind}", case.layout));
                group.bench_with_input(BenchmarkId::new("ours", n), queries, |b, q| cycle(b, q, |a| set.lookup(a)));
                group.bench_with_input(BenchmarkId::new("bsearch", n), queries, |b, q| {
                    cycle(b, q, |a| bsearch(&starts, &ends, a.get()).map(|rank| records[rank as usize]))
                });
                group.bench_with_input(BenchmarkId::new("bsearch_rank", n), queries, |b, q| {
                    cycle(b, q, |a| bsearch(&starts, &ends, a.get()))
                });
                if n <= LINEAR_MAX {
                    group.bench_with_input(BenchmarkId::new("linear", n), queries, |b, q| {
                        cycle(b, q, |a| ranges.iter().position(|r| r.0 <= a.get() && a.get() < r.1))
                    });
                }
                group.finish();
            }

            // The same contenders in alternating turns: the ratios the goals are checked on.
            let (mut ours, mut bs) = (
                turns(queries, |a| set.lookup(a)),
                turns(queries, |a| bsearch(&starts, &ends, a.get()).map(|rank| records[rank as usize])),
            );
            let mut bs_rank = turns(queries, |a| bsearch(&starts, &ends, a.get()));
            let mut bs_published = turns(queries, |a| bsearch_published(&published, a.get()));
            let mut linear = turns(queries, |a| ranges.iter().position(|r| r.0 <= a.get() && a.get() < r.1));
            let (mut by_directory, mut by_search) =
                (turns(queries, |a| directory.lookup(a)), turns(queries, |a| search.lookup(a)));
            let mut contenders: Vec<interleave::Contender<'_>> = vec![
                ("ours", &mut ours),
                ("bsearch", &mut bs),
                ("bsearch_rank", &mut bs_rank),
                ("bsearch_published", &mut bs_published),
            ];
            if n <= LINEAR_MAX {
                contenders.push(("linear", &mut linear));
            }
            if modes {
                contenders.push(("directory", &mut by_directory));
                contenders.push(("search", &mut by_search));
            }
            interleave::measure(&format!("lookup/{}/{kind}/{n}", case.layout), &mut contenders);
        }
    }
}

fn main() {
    print_sizes();
    let mut c = livepatch_benches::criterion();
    bench(&mut c);
    c.final_summary();
}
