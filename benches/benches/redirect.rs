//! Area 1 — the hook's real path per call, against a port of Linux 6.12's `klp_ftrace_handler`
//! in the same run.
//!
//! Cases: one variant outside a transition; in transition with the task switched and not
//! switched; a nop on top (atomic replace); three variants stacked.
//!
//! Contenders (ftrace's recursion guard and the ip rewrite are the same on both sides and left
//! out):
//!
//! * `module`: what `livepatch_rs.ko` runs, call for call. ftrace calls the C handler
//!   (`lp_ftrace_handler`, an `#[inline(never)]` function here, handed the hook as the kernel's
//!   handler is handed its `ftrace_ops`), which answers steps 1 and 2 of the decision itself
//!   (`redirect::settled`): it loads the hook's func stack top and that node's transition flag
//!   through the core's published layout (`redirect::SLOT_TOP_OFFSET` …, as `shim.h` declares
//!   it) and, outside a transition, returns the top's entry without leaving C. Only in a
//!   transition of the function does it call Rust (`lp_rs_redirect_in_transition`, another
//!   non-inlined function, really called and returned from: the C handler's recursion unlock
//!   follows it) with the top node, `current` and this CPU's cached record
//!   (`this_cpu_read(lp_rec_cache)`, `LP_REC_CACHE` here). Rust's hit path is the record's
//!   task compared with `current` and `redirect::per_task_in_transition` on its word; a miss
//!   tail-jumps to a cold function that looks the module's task table up
//!   (`livepatch_benches::tasks::TaskTable`, a port of `lp_rec_find`: 65 536 hash chains,
//!   records laid out and placed as kmalloc-64 places them), refills the entry
//!   (`RecCache::refill`, the C `lp_shim_task_rec_cache`, not inlined) and decides.
//! * `kernel`: `klp_ftrace_handler` as ftrace calls it (one non-inlined call), reading
//!   `current->patch_state` (one load, at its offset in a `task_struct` laid out as the
//!   kernel's slab lays them out) only in transition.
//! * `module_inline` / `kernel_inline`: the same two decisions inlined into the loop, without
//!   the call layers: what the decisions themselves cost.
//! * `previous`: the module's path before the hook held its slot and the cache existed:
//!   `Live::redirect_current(slot, || table.lookup(current), parent_ip)`, inlined.
//!
//! The current task cycles over 1 024 distinct tasks (distinct `task_struct` and record
//! addresses). `redirect/…` makes one call per iteration, each by the next task: every call
//! follows a context switch, so in a transition the cache always misses. `redirect_x64/…`
//! makes 64 calls per iteration by one task, on 64 different functions: one context switch per
//! 64 calls; time / 64 is the per-call cost of a hot handler.

use criterion::{black_box, Criterion, Throughput};
use livepatch_benches::fixture::{patch, Fixture, BENCH_POLICY};
use livepatch_benches::interleave;
use livepatch_benches::kernel::{
    klp_ftrace_handler, KTask, KlpOps, KlpPatch, KlpWorld, KLP_TRANSITION_IDLE, KLP_TRANSITION_PATCHED,
    KLP_TRANSITION_UNPATCHED,
};
use livepatch_benches::layout::{original, variant};
use livepatch_benches::tasks::{RecCache, TaskRec, TaskStructs, TaskTable};
use livepatch_core::func_stack::FuncSlot;
use livepatch_core::patch::FuncNode;
use livepatch_core::redirect::{self, Redirect};
use livepatch_core::{CodeAddr, CodeRange, Live, PatchState, SlotId, TaskPatchState};
use std::ptr;
use std::sync::atomic::{compiler_fence, AtomicPtr, Ordering};

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
    // Leaked, like the kernel's: the ops stay borrowed from it for the whole bench.
    let world: &'static KlpWorld = Box::leak(Box::new(world));
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

/// A hook as the module's C shim keeps it (`struct lp_hook`): what the handler gets from its
/// `ftrace_ops`.
struct Hook {
    slot: &'static FuncSlot<'static>,
}

/// The module's table, reached by the cache-miss path through a global (`lp_buckets`); set
/// for each case before its first call.
static TABLE: AtomicPtr<TaskTable> = AtomicPtr::new(std::ptr::null_mut());

/// This CPU's `lp_rec_cache` entry, as the module's handler reaches it: a per-CPU variable
/// (`this_cpu_read`, `this_cpu_write`), not an argument.
static LP_REC_CACHE: RecCache = RecCache::new();

/// The module's C ftrace handler (`lp_ftrace_handler`): steps 1 and 2 of the decision in C,
/// through the core's layout as `shim.c` declares it (`struct lp_func_slot`, `struct
/// lp_func_node`: the top at [`redirect::SLOT_TOP_OFFSET`], the flag and the entry at
/// [`redirect::NODE_TRANSITION_OFFSET`] and [`redirect::NODE_ENTRY_OFFSET`], both loads
/// `smp_load_acquire`, plain loads on x86); only in transition the call into Rust with the top
/// node, `current` and this CPU's cached record (`this_cpu_read(lp_rec_cache)`, read on that
/// path only).
#[inline(never)]
fn lp_ftrace_handler(hook: &Hook, current: usize) -> usize {
    let slot = ptr::from_ref(hook.slot).cast::<u8>();
    // SAFETY: the offsets are the core's, inside `FuncSlot` and `FuncNode` (`repr(C)`); the top
    // is null or a node of the leaked fixture, valid for the process.
    unsafe {
        let top = ptr::read_volatile(slot.add(redirect::SLOT_TOP_OFFSET).cast::<*const u8>());
        if top.is_null() {
            return 0;
        }
        if ptr::read_volatile(top.add(redirect::NODE_TRANSITION_OFFSET)) == 0 {
            return ptr::read_volatile(top.add(redirect::NODE_ENTRY_OFFSET).cast::<usize>());
        }
        let target = lp_rs_redirect_in_transition(&*top.cast::<FuncNode<'static>>(), current, LP_REC_CACHE.entry(), 0);
        // `ftrace_test_recursion_unlock()` follows the call in C (its `preempt_enable_notrace()`
        // is a compiler barrier): the call returns here, it is not a tail jump.
        compiler_fence(Ordering::SeqCst);
        target
    }
}

/// The module's `lp_rs_redirect_in_transition` (Rust, called from C: not inlined into the
/// handler): the cached record's word on a hit, else the cold path.
#[inline(never)]
extern "C" fn lp_rs_redirect_in_transition(
    top: &FuncNode<'static>,
    current: usize,
    cached: Option<&'static TaskRec>,
    _parent_ip: usize,
) -> usize {
    match RecCache::hit(cached, current) {
        Some(word) => as_addr(redirect::per_task_in_transition(top, || word)).unwrap_or(0),
        None => lp_rs_redirect_after_miss(top, current),
    }
}

/// The module's miss path (`control::redirect_after_miss`, cold): the word through
/// `lp_shim_task_rec_cache` (C: the table, then `this_cpu_write`), then the decision.
#[cold]
#[inline(never)]
fn lp_rs_redirect_after_miss(top: &FuncNode<'static>, current: usize) -> usize {
    // SAFETY: set to a leaked table before the first call of each case (`bench`).
    let table = unsafe { &*TABLE.load(Ordering::Relaxed) };
    let word = LP_REC_CACHE.refill(table, current);
    as_addr(redirect::per_task_in_transition(top, || word)).unwrap_or(0)
}

/// The module's decision: per task, the word found through the cache, then the table.
#[inline(always)]
fn module_decision(slot: &FuncSlot<'_>, current: usize, cache: &RecCache, table: &TaskTable) -> usize {
    as_addr(redirect::per_task_lazy(slot, || cache.lookup(table, current))).unwrap_or(0)
}

/// `klp_ftrace_handler` as ftrace calls it.
#[inline(never)]
fn kernel_handler(ops: &KlpOps, current: &KTask) -> usize {
    let target = klp_ftrace_handler(ops, current).unwrap_or(0);
    // `ftrace_test_recursion_unlock()`, as in the module's handler.
    compiler_fence(Ordering::SeqCst);
    target
}

/// One call per iteration, each by the next task.
fn single(c: &mut Criterion, case: &Case, structs: &TaskStructs, table: &'static TaskTable) {
    let addrs = &structs.addrs;
    let (fx, slots) = core_fixture(case, 1);
    let (live, id) = (fx.live, live_id(fx.live, 1));
    let hook = Hook { slot: slots[0] };
    let (ops, _) = kernel_fixture(case, 1);
    let ops = ops[0];
    // Every contender agrees with the kernel, for every task, through hits and misses.
    for (i, &t) in addrs.iter().enumerate().chain(addrs.iter().enumerate()) {
        let want = kernel_handler(ops, structs.current(i));
        assert_eq!(lp_ftrace_handler(&hook, t), want, "case {}", case.name);
        assert_eq!(lp_ftrace_handler(&hook, t), want, "case {} (cached)", case.name);
        assert_eq!(as_addr(live.redirect_current(id, || table.lookup(t), CodeAddr(0))).unwrap_or(0), want);
    }
    let mut group = c.benchmark_group(format!("redirect/{}", case.name));
    group.bench_function("module", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (TASKS - 1);
            lp_ftrace_handler(black_box(&hook), black_box(addrs[i]))
        })
    });
    group.bench_function("kernel", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (TASKS - 1);
            kernel_handler(black_box(ops), black_box(structs.current(i)))
        })
    });
    group.finish();

    // Alternating turns: the ratios the goal is checked on.
    let inline_cache = RecCache::default();
    let (mut a, mut b, mut c, mut d, mut e) = (0, 0, 0, 0, 0);
    let mut module = |n: u64| {
        for _ in 0..n {
            a = (a + 1) & (TASKS - 1);
            black_box(lp_ftrace_handler(black_box(&hook), black_box(addrs[a])));
        }
    };
    let mut kernel = |n: u64| {
        for _ in 0..n {
            b = (b + 1) & (TASKS - 1);
            black_box(kernel_handler(black_box(ops), black_box(structs.current(b))));
        }
    };
    let mut module_inline = |n: u64| {
        for _ in 0..n {
            c = (c + 1) & (TASKS - 1);
            let t = black_box(addrs[c]);
            black_box(module_decision(black_box(hook.slot), t, black_box(&inline_cache), table));
        }
    };
    let mut kernel_inline = |n: u64| {
        for _ in 0..n {
            d = (d + 1) & (TASKS - 1);
            black_box(klp_ftrace_handler(black_box(ops), black_box(structs.current(d))));
        }
    };
    let mut previous = |n: u64| {
        for _ in 0..n {
            e = (e + 1) & (TASKS - 1);
            let t = black_box(addrs[e]);
            black_box(live.redirect_current(black_box(id), || table.lookup(t), black_box(CodeAddr(0))));
        }
    };
    interleave::measure(
        &format!("redirect/{}", case.name),
        &mut [
            ("module", &mut module),
            ("kernel", &mut kernel),
            ("module_inline", &mut module_inline),
            ("kernel_inline", &mut kernel_inline),
            ("previous", &mut previous),
        ],
    );
}

/// BATCH calls per iteration by one current task, on BATCH different functions: the harness
/// cost is shared, so time / BATCH is the per-call throughput.
fn batch(c: &mut Criterion, case: &Case, structs: &TaskStructs, table: &'static TaskTable) {
    let addrs = &structs.addrs;
    let (fx, slot_refs) = core_fixture(case, BATCH);
    let live = fx.live;
    let ids: Vec<SlotId> = (0..BATCH).map(|i| live.slot_at(f(i, BATCH).start()).expect("patched")).collect();
    let hooks: Vec<Hook> = slot_refs.iter().map(|&slot| Hook { slot }).collect();
    let (ops, _) = kernel_fixture(case, BATCH);
    for (k, ((&id, o), hook)) in ids.iter().zip(&ops).zip(&hooks).enumerate() {
        let t = addrs[k];
        let want = kernel_handler(o, structs.current(k));
        assert_eq!(lp_ftrace_handler(hook, t), want);
        assert_eq!(as_addr(live.redirect_current(id, || table.lookup(t), CodeAddr(0))).unwrap_or(0), want);
    }
    let mut group = c.benchmark_group(format!("redirect_x{BATCH}/{}", case.name));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("module", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (TASKS - 1);
            let (hooks, t) = black_box((&hooks[..], addrs[i]));
            hooks.iter().fold(0usize, |acc, h| acc ^ lp_ftrace_handler(h, t))
        })
    });
    group.bench_function("kernel", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (TASKS - 1);
            let (ops, current) = black_box((&ops[..], structs.current(i)));
            ops.iter().fold(0usize, |acc, o| acc ^ kernel_handler(o, current))
        })
    });
    group.finish();

    let inline_cache = RecCache::default();
    let (mut a, mut b, mut c, mut d, mut e) = (0, 0, 0, 0, 0);
    let mut module = |n: u64| {
        for _ in 0..n {
            a = (a + 1) & (TASKS - 1);
            let (hooks, t) = black_box((&hooks[..], addrs[a]));
            black_box(hooks.iter().fold(0usize, |acc, h| acc ^ lp_ftrace_handler(h, t)));
        }
    };
    let mut kernel = |n: u64| {
        for _ in 0..n {
            b = (b + 1) & (TASKS - 1);
            let (ops, current) = black_box((&ops[..], structs.current(b)));
            black_box(ops.iter().fold(0usize, |acc, o| acc ^ kernel_handler(o, current)));
        }
    };
    let mut module_inline = |n: u64| {
        for _ in 0..n {
            c = (c + 1) & (TASKS - 1);
            let (slots, t, cache) = black_box((&slot_refs[..], addrs[c], &inline_cache));
            black_box(slots.iter().fold(0usize, |acc, s| acc ^ module_decision(s, t, cache, table)));
        }
    };
    let mut kernel_inline = |n: u64| {
        for _ in 0..n {
            d = (d + 1) & (TASKS - 1);
            let (ops, current) = black_box((&ops[..], structs.current(d)));
            black_box(ops.iter().fold(0usize, |acc, o| acc ^ klp_ftrace_handler(o, current).unwrap_or(0)));
        }
    };
    let mut previous = |n: u64| {
        for _ in 0..n {
            e = (e + 1) & (TASKS - 1);
            let (ids, t) = black_box((&ids[..], addrs[e]));
            black_box(ids.iter().fold(0usize, |acc, &id| {
                acc ^ as_addr(live.redirect_current(id, || table.lookup(t), CodeAddr(0))).unwrap_or(0)
            }));
        }
    };
    interleave::measure(
        &format!("redirect_x{BATCH}/{}", case.name),
        &mut [
            ("module", &mut module),
            ("kernel", &mut kernel),
            ("module_inline", &mut module_inline),
            ("kernel_inline", &mut kernel_inline),
            ("previous", &mut previous),
        ],
    );
}

fn bench(c: &mut Criterion) {
    // What the harness itself costs per iteration: two `black_box`ed inputs, one output.
    let task = TaskPatchState::new();
    let slot = FuncSlot::new();
    c.bench_function("redirect/loop_overhead", |b| {
        b.iter(|| (black_box(&slot) as *const _ as usize) ^ (black_box(&task) as *const _ as usize))
    });
    for case in CASES {
        // The same 1 024 tasks on both sides: the kernel's `task_struct`s, and the module's
        // records keyed by their addresses.
        let structs = TaskStructs::new(TASKS, kstate(case));
        let table = TaskTable::new(&structs.addrs, 0x7a5c);
        if case.in_transition {
            table.reset_all(case.task);
        }
        let table: &'static TaskTable = Box::leak(Box::new(table));
        TABLE.store(ptr::from_ref(table).cast_mut(), Ordering::Relaxed);
        single(c, case, &structs, table);
        batch(c, case, &structs, table);
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
