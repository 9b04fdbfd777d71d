//! livepatch-user's costs, measured side by side in one run on the C target
//! (`tests/c/target.c`, gcc -O2, 16 patchable entry NOPs):
//!
//! * `call/*`: 1 000 calls of a one-line function through a function pointer — plain (no
//!   patchable entry), with its entry NOPs untouched, with a parked hook (`jmp short +11`),
//!   and hooked with a patch enabled (trampoline, decision, jump to the variant);
//! * `transition/N busy`: enabling then disabling the f/g patch (two transitions, each to
//!   completion) while N threads call f -> g chains;
//!
//! * `shadow/*`: 1 000 lookups of 64 attached shadow variables (`lpu_shadow_get`, each
//!   result read) against the same lookups in a `std` `HashMap` behind an `RwLock` read lock
//!   (the obvious thread-safe alternative a patch author could write), same keys, same thread;
//!
//! and prints the kick signals per thread per transition of the transition runs.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{BenchmarkId, Criterion};
use livepatch_user::Runtime;
use std::hint::black_box;
use std::time::Duration;

fn benches(c: &mut Criterion) {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("bench");
    // This thread runs the hooked calls, so it registers (as a root thread, before any patch).
    let frame = 0usize;
    let begin =
        // SAFETY: no token; `frame` is a stack address above every frame this thread uses later.
        unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &frame as *const usize as *const _) };
    assert_eq!(begin, 0);

    let mut g = c.benchmark_group("call");
    g.bench_function("plain", |b| b.iter(|| (t.loop_)(black_box(t.plain), 1000)));
    g.bench_function("entry NOPs", |b| b.iter(|| (t.loop_)(black_box(t.hooked), 1000)));
    let h = rt.apply(&t.bench_patch).expect("apply");
    rt.wait(Duration::from_secs(10)).expect("enable");
    g.bench_function("hooked, to the variant", |b| b.iter(|| (t.loop_)(black_box(t.hooked), 1000)));
    rt.disable(h).expect("disable");
    rt.wait(Duration::from_secs(10)).expect("disable completes");
    g.bench_function("parked hook", |b| b.iter(|| (t.loop_)(black_box(t.hooked), 1000)));
    g.finish();

    shadow_lookups(c);

    let mut g = c.benchmark_group("transition");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for n in [0, 2, 8] {
        assert_eq!((t.start)(&common::API, n, 0, 0, 0), 0);
        common::wait_running(&t, n);
        let before = rt.stats();
        let mut rounds = 0u64;
        g.bench_with_input(BenchmarkId::new("enable+disable, busy threads", n), &n, |b, _| {
            b.iter(|| {
                let h = rt.apply(&t.patches[0]).expect("apply");
                rt.wait(Duration::from_secs(10)).expect("enable");
                rt.disable(h).expect("disable");
                rt.wait(Duration::from_secs(10)).expect("disable completes");
                rounds += 1;
            })
        });
        (t.stop)();
        let after = rt.stats();
        let transitions = after.transitions - before.transitions;
        // The workers, their root thread, and this one.
        let threads = u64::from(n as u32) + 2;
        eprintln!(
            "transition/{n} busy: {transitions} transitions, {} kicks ({:.2} per thread per transition), {} passes per transition",
            after.kicks - before.kicks,
            (after.kicks - before.kicks) as f64 / (threads * transitions.max(1)) as f64,
            (after.passes - before.passes) / transitions.max(1),
        );
        assert_eq!((t.bad)(), 0);
        let _ = rounds;
    }
    g.finish();
}

fn shadow_lookups(c: &mut Criterion) {
    use std::collections::HashMap;
    use std::ffi::c_void;
    use std::sync::RwLock;
    const ID: u64 = 0xbe;
    let objects: Vec<u64> = (0..64).collect();
    let keys: Vec<usize> = objects.iter().map(|o| o as *const u64 as usize).collect();
    let mut map = HashMap::new();
    for &k in &keys {
        let data = livepatch_user::shadow::alloc(k, ID, 8, |d| {
            // SAFETY: a fresh block of 8 bytes.
            unsafe { (d as *mut u64).write(k as u64) };
            Ok(())
        })
        .expect("attach");
        map.insert(k, data.as_ptr() as usize);
    }
    let map = RwLock::new(map);
    let mut g = c.benchmark_group("shadow");
    g.bench_function("lpu_shadow_get", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for i in 0..1000 {
                let p = livepatch_user::shadow::lpu_shadow_get(black_box(keys[i % 64]) as *mut c_void, ID);
                // SAFETY: attached above, never freed while the benchmark runs.
                sum = sum.wrapping_add(unsafe { *(p as *const u64) });
            }
            sum
        })
    });
    g.bench_function("RwLock<HashMap> read", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for i in 0..1000 {
                let p = *map.read().unwrap().get(&black_box(keys[i % 64])).unwrap();
                // SAFETY: as above.
                sum = sum.wrapping_add(unsafe { *(p as *const u64) });
            }
            sum
        })
    });
    g.finish();
    let n = livepatch_user::shadow::free_all(ID, |_, _| {}).expect("free_all");
    assert_eq!(n, 64);
    black_box(&objects);
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
