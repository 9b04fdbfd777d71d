//! Area 1 — the hook's real path per call, against a port of Linux 6.12's `klp_ftrace_handler`
//! in the same run.
//!
//! Cases: one variant outside a transition; in transition with the task switched and not
//! switched; a nop on top (atomic replace); three variants stacked.
//!
//! * `ours_hook`: what the module's handler calls, `Live::redirect_current(slot, || lookup(current),
//!   parent_ip)`, where `lookup` is the module's task table (`livepatch_benches::tasks::TaskTable`:
//!   65 536 hash-chain buckets keyed by the `task_struct` address, records placed as kmalloc-32
//!   places them). The table is only consulted when the top node is in transition.
//! * `ours_slot_hook`: the same with the hook holding its `&FuncSlot` (resolved when the hook is
//!   installed, as ftrace hands the kernel's handler its `ftrace_ops`) and calling
//!   `redirect::per_task_lazy(slot, || lookup(current))` for a per-task model fixed at build
//!   time: no slot-index bounds check, no model dispatch.
//! * `ours_slot_hook_cached`: `ours_slot_hook` with a per-CPU one-entry cache of (task, word)
//!   in front of the table (`livepatch_benches::tasks::CpuCache`) — a proposal for the module,
//!   not what it does today. With one call per iteration every call follows a context switch
//!   (a new current task), so the cache always misses there; with 64 calls per iteration it
//!   misses once per iteration.
//! * `kernel`: `klp_ftrace_handler`'s decision, reading `current->patch_state` (one load, at its
//!   offset in a `task_struct` laid out as the kernel's slab lays them out) only in transition.
//! * `ours_decision` (one call per iteration only): the bare decision `redirect::per_task` with
//!   the task word already in hand — not a path any hook takes; shown to split the costs.
//!
//! The current task cycles over 1 024 distinct tasks, one per iteration. `redirect/…` makes one
//! call per iteration, so the harness (`redirect/loop_overhead`) is part of the figure.
//! `redirect_x64/…` makes 64 calls per iteration, on 64 different functions, by the same current
//! task (criterion reports the time per iteration and the per-call throughput): time / 64 is the
//! per-call cost of a hot handler.

use criterion::{black_box, Criterion, Throughput};
use livepatch_benches::fixture::{patch, Fixture, BENCH_POLICY};
use livepatch_benches::interleave;
use livepatch_benches::kernel::{
    klp_ftrace_handler, KTask, KlpOps, KlpPatch, KlpWorld, KLP_TRANSITION_IDLE, KLP_TRANSITION_PATCHED,
    KLP_TRANSITION_UNPATCHED,
};
use livepatch_benches::layout::{original, variant};
use livepatch_benches::tasks::{CpuCache, TaskStructs, TaskTable};
use livepatch_core::func_stack::FuncSlot;
use livepatch_core::redirect::{self, Redirect};
use livepatch_core::{CodeAddr, CodeRange, Live, PatchState, SlotId, TaskPatchState};

/// One measured situation: how to build the core's and the kernel's func stacks.
struct Case {
    name: &'static str,
    /// Patches applied (completed) before the last one, each a generation of `f`'s variant.
    below: usize,
    /// Whether the last patch stays in transition.
    in_transition: bool,
    /// Whether the last patch is an atomic replace that leaves a nop on `f`.
    nop: bool,
    /// The task's universe (ignored outside a transition).
    task: PatchState,
}

const CASES: &[Case] = &[
    Case { name: "no_transition", below: 0, in_transition: false, nop: false, task: PatchState::Idle },
    Case { name: "transition_switched", below: 0, in_transition: true, nop: false, task: PatchState::Patched },
    Case { name: "transition_not_switched", below: 0, in_transition: true, nop: false, task: PatchState::Unpatched },
    Case { name: "nop_switched", below: 1, in_transition: true, nop: true, task: PatchState::Patched },
    Case { name: "nop_not_switched", below: 1, in_transition: true, nop: true, task: PatchState::Unpatched },
    Case { name: "stacked3_no_transition", below: 2, in_transition: false, nop: false, task: PatchState::Idle },
    Case { name: "stacked3_switched", below: 2, in_transition: true, nop: false, task: PatchState::Patched },
    Case { name: "stacked3_not_switched", below: 2, in_transition: true, nop: false, task: PatchState::Unpatched },
];

/// The `i`-th of `n` measured functions.
fn f(i: usize, n: usize) -> CodeRange {
    original(i, 2 * n)
}
/// What a nop-producing replace patch covers instead of the `i`-th measured function.
fn g(i: usize, n: usize) -> CodeRange {
    original(n + i, 2 * n)
}

/// The core's func stacks for `case` on `n` functions, and their slots.
fn core_fixture(case: &Case, n: usize) -> (Fixture, Vec<&'static FuncSlot<'static>>) {
    let mut fx = Fixture::new(2 * n, 4, BENCH_POLICY, Vec::new());
    let pairs = |gen: usize, on: fn(usize, usize) -> CodeRange| -> Vec<_> {
        (0..n).map(|i| (on(i, n), variant(gen, i))).collect()
    };
    for gen in 0..case.below {
        fx.apply(patch(gen as u32 + 1, &pairs(gen, f), false));
    }
    let last = if case.nop { patch(10, &pairs(9, g), true) } else { patch(10, &pairs(case.below, f), false) };
    fx.enable(last);
    if !case.in_transition {
        fx.complete();
    }
    let live = fx.live;
    let slots = (0..n)
        .map(|i| {
            let id = live.slot_at(f(i, n).start()).expect("measured function is patched");
            &live.slots()[id.0 as usize]
        })
        .collect();
    (fx, slots)
}

/// The kernel's func stacks for `case` on `n` functions, their ops, and the current task.
fn kernel_fixture(case: &Case, n: usize) -> (Vec<&'static KlpOps>, KTask) {
    let mut world = KlpWorld::new();
    for gen in 0..case.below {
        let mut p = KlpPatch::default();
        for i in 0..n {
            world.patch_func(&mut p, f(i, n), Some(variant(gen, i)));
        }
    }
    let mut last = KlpPatch::default();
    for i in 0..n {
        world.patch_func(&mut last, f(i, n), if case.nop { None } else { Some(variant(case.below, i)) });
    }
    world.set_transition(&last, case.in_transition);
    let state = match (case.in_transition, case.task) {
        (false, _) => KLP_TRANSITION_IDLE,
        (true, PatchState::Unpatched) => KLP_TRANSITION_UNPATCHED,
        (true, _) => KLP_TRANSITION_PATCHED,
    };
    ((0..n).map(|i| world.ops_for(f(i, n))).collect(), KTask::new(state))
}

fn as_addr(r: Redirect) -> Option<usize> {
    match r {
        Redirect::Original => None,
        Redirect::Variant(a) => Some(a.get()),
    }
}

/// Calls per iteration in the amortised benches.
const BATCH: usize = 64;
/// Distinct current tasks, cycled (a power of two).
const TASKS: usize = 1024;

fn kstate(case: &Case) -> i32 {
    match (case.in_transition, case.task) {
        (false, _) => KLP_TRANSITION_IDLE,
        (true, PatchState::Unpatched) => KLP_TRANSITION_UNPATCHED,
        (true, _) => KLP_TRANSITION_PATCHED,
    }
}

fn bench(c: &mut Criterion) {
    // What the harness itself costs per iteration: two `black_box`ed inputs, one output.
    let task = TaskPatchState::new();
    let slot = FuncSlot::new();
    c.bench_function("redirect/loop_overhead", |b| {
        b.iter(|| (black_box(&slot) as *const _ as usize) ^ (black_box(&task) as *const _ as usize))
    });
    for case in CASES {
        let task = TaskPatchState::new();
        if case.in_transition {
            task.reset(case.task);
        }
        // The same 1 024 tasks on both sides: the kernel's `task_struct`s, and the module's
        // records keyed by their addresses.
        let structs = TaskStructs::new(TASKS, kstate(case));
        let table = TaskTable::new(&structs.addrs, 0x7a5c);
        if case.in_transition {
            table.reset_all(case.task);
        }
        let addrs = &structs.addrs;

        // One call per iteration.
        let (fx, slots) = core_fixture(case, 1);
        let (live, slot, id) = (fx.live, slots[0], live_id(fx.live, 1));
        let (ops, _) = kernel_fixture(case, 1);
        let ops = ops[0];
        // Both implementations must agree on the outcome, for every task.
        for (i, &t) in addrs.iter().enumerate() {
            let ours = live.redirect_current(id, || table.lookup(t), CodeAddr(0));
            assert_eq!(as_addr(ours), klp_ftrace_handler(ops, structs.current(i)), "case {}", case.name);
        }
        assert_eq!(as_addr(redirect::per_task(slot, &task)), klp_ftrace_handler(ops, structs.current(0)));
        let mut group = c.benchmark_group(format!("redirect/{}", case.name));
        group.bench_function("ours_decision", |b| b.iter(|| redirect::per_task(black_box(slot), black_box(&task))));
        group.bench_function("ours_hook", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (TASKS - 1);
                let t = black_box(addrs[i]);
                live.redirect_current(black_box(id), || table.lookup(t), black_box(CodeAddr(0)))
            })
        });
        group.bench_function("ours_slot_hook", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (TASKS - 1);
                let t = black_box(addrs[i]);
                redirect::per_task_lazy(black_box(slot), || table.lookup(t))
            })
        });
        group.bench_function("ours_slot_hook_cached", |b| {
            let cache = CpuCache::default();
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (TASKS - 1);
                let t = black_box(addrs[i]);
                redirect::per_task_lazy(black_box(slot), || cache.lookup(&table, t))
            })
        });
        group.bench_function("kernel", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (TASKS - 1);
                klp_ftrace_handler(black_box(ops), black_box(structs.current(i)))
            })
        });
        group.finish();

        // Alternating turns: the ratios the goal is checked on.
        {
            let cache = CpuCache::default();
            let (mut a, mut b, mut c, mut d) = (0, 0, 0, 0);
            let mut hook = |n: u64| {
                for _ in 0..n {
                    a = (a + 1) & (TASKS - 1);
                    let t = black_box(addrs[a]);
                    black_box(live.redirect_current(black_box(id), || table.lookup(t), black_box(CodeAddr(0))));
                }
            };
            let mut slot_hook = |n: u64| {
                for _ in 0..n {
                    b = (b + 1) & (TASKS - 1);
                    let t = black_box(addrs[b]);
                    black_box(redirect::per_task_lazy(black_box(slot), || table.lookup(t)));
                }
            };
            let mut cached = |n: u64| {
                for _ in 0..n {
                    c = (c + 1) & (TASKS - 1);
                    let t = black_box(addrs[c]);
                    black_box(redirect::per_task_lazy(black_box(slot), || cache.lookup(&table, t)));
                }
            };
            let mut kernel = |n: u64| {
                for _ in 0..n {
                    d = (d + 1) & (TASKS - 1);
                    black_box(klp_ftrace_handler(black_box(ops), black_box(structs.current(d))));
                }
            };
            interleave::measure(
                &format!("redirect/{}", case.name),
                &mut [
                    ("hook", &mut hook),
                    ("slot_hook", &mut slot_hook),
                    ("slot_hook_cached", &mut cached),
                    ("kernel", &mut kernel),
                ],
            );
        }

        // BATCH calls per iteration by one current task, on BATCH different functions: the
        // harness cost is shared, so time / BATCH is the per-call throughput.
        let (fx, slot_refs) = core_fixture(case, BATCH);
        let live = fx.live;
        let ids: Vec<SlotId> = (0..BATCH).map(|i| live.slot_at(f(i, BATCH).start()).expect("patched")).collect();
        let (ops, _) = kernel_fixture(case, BATCH);
        for (k, (&id, o)) in ids.iter().zip(&ops).enumerate() {
            let t = addrs[k];
            assert_eq!(
                as_addr(live.redirect_current(id, || table.lookup(t), CodeAddr(0))),
                klp_ftrace_handler(o, structs.current(k))
            );
        }
        let mut group = c.benchmark_group(format!("redirect_x{BATCH}/{}", case.name));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function("ours_hook", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (TASKS - 1);
                let (ids, t) = black_box((&ids[..], addrs[i]));
                ids.iter().fold(0usize, |acc, &id| {
                    acc ^ as_addr(live.redirect_current(id, || table.lookup(t), CodeAddr(0))).unwrap_or(1)
                })
            })
        });
        group.bench_function("ours_slot_hook", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (TASKS - 1);
                let (slots, t) = black_box((&slot_refs[..], addrs[i]));
                slots
                    .iter()
                    .fold(0usize, |acc, s| acc ^ as_addr(redirect::per_task_lazy(s, || table.lookup(t))).unwrap_or(1))
            })
        });
        group.bench_function("ours_slot_hook_cached", |b| {
            let cache = CpuCache::default();
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (TASKS - 1);
                let (slots, t, cache) = black_box((&slot_refs[..], addrs[i], &cache));
                slots.iter().fold(0usize, |acc, s| {
                    acc ^ as_addr(redirect::per_task_lazy(s, || cache.lookup(&table, t))).unwrap_or(1)
                })
            })
        });
        group.bench_function("kernel", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (TASKS - 1);
                let (ops, current) = black_box((&ops[..], structs.current(i)));
                ops.iter().fold(0usize, |acc, o| acc ^ klp_ftrace_handler(o, current).unwrap_or(1))
            })
        });
        group.finish();

        {
            let cache = CpuCache::default();
            let (mut a, mut b, mut c, mut d) = (0, 0, 0, 0);
            let mut hook = |n: u64| {
                for _ in 0..n {
                    a = (a + 1) & (TASKS - 1);
                    let (ids, t) = black_box((&ids[..], addrs[a]));
                    black_box(ids.iter().fold(0usize, |acc, &id| {
                        acc ^ as_addr(live.redirect_current(id, || table.lookup(t), CodeAddr(0))).unwrap_or(1)
                    }));
                }
            };
            let mut slot_hook = |n: u64| {
                for _ in 0..n {
                    b = (b + 1) & (TASKS - 1);
                    let (slots, t) = black_box((&slot_refs[..], addrs[b]));
                    black_box(slots.iter().fold(0usize, |acc, s| {
                        acc ^ as_addr(redirect::per_task_lazy(s, || table.lookup(t))).unwrap_or(1)
                    }));
                }
            };
            let mut cached = |n: u64| {
                for _ in 0..n {
                    c = (c + 1) & (TASKS - 1);
                    let (slots, t, cache) = black_box((&slot_refs[..], addrs[c], &cache));
                    black_box(slots.iter().fold(0usize, |acc, s| {
                        acc ^ as_addr(redirect::per_task_lazy(s, || cache.lookup(&table, t))).unwrap_or(1)
                    }));
                }
            };
            let mut kernel = |n: u64| {
                for _ in 0..n {
                    d = (d + 1) & (TASKS - 1);
                    let (ops, current) = black_box((&ops[..], structs.current(d)));
                    black_box(ops.iter().fold(0usize, |acc, o| acc ^ klp_ftrace_handler(o, current).unwrap_or(1)));
                }
            };
            interleave::measure(
                &format!("redirect_x{BATCH}/{}", case.name),
                &mut [
                    ("hook", &mut hook),
                    ("slot_hook", &mut slot_hook),
                    ("slot_hook_cached", &mut cached),
                    ("kernel", &mut kernel),
                ],
            );
        }
    }
    // The amortised harness alone: the same fold over BATCH pointers, without a decision.
    let nothing: Vec<usize> = (0..BATCH).collect();
    let mut group = c.benchmark_group(format!("redirect_x{BATCH}/loop_overhead"));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("fold", |b| b.iter(|| black_box(&nothing[..]).iter().fold(0usize, |acc, &x| acc ^ x)));
    group.finish();
}

/// The slot id of the first measured function.
fn live_id(live: &Live<'_>, n: usize) -> SlotId {
    live.slot_at(f(0, n).start()).expect("patched")
}

fn main() {
    let mut c = livepatch_benches::criterion();
    bench(&mut c);
    c.final_summary();
}
