//! Loom models of the redirect hot path against the engine (models 1 and 2 of issue 4).
//!
//! One thread is a task calling the patched function through the hook (the real
//! `redirect::per_task_observed` inside a read-side section), then executing the variant it
//! was sent to and passing its exit-to-user switch point; the other thread is the engine
//! (enable, disable or reverse, then completion attempts until done, then releasing the code
//! that only the old universe used). Each model checks, over every interleaving loom explores:
//!
//! * the handler never reads the idle state while it sees the transition flag;
//! * whenever the task's word names a universe, the call went to that universe's variant;
//! * the task never executes a variant whose code is not yet loaded-and-published to it, or
//!   that is being released (loom's causality check on the code cells: the engine thread
//!   loads a patch's code just before enabling it and releases it after the transition that
//!   removes it completed).
//!
//! Bounds: run with `LOOM_MAX_PREEMPTIONS=4` (ci/loom.sh); two threads; one task; one or two
//! calls; one original function with at most two variants stacked; default `max_branches`.
#![cfg(loom)]

mod loom_support;

use livepatch_core::redirect::Redirect;
use livepatch_core::{Engine, PatchState};
use loom::sync::MutexGuard;
use loom_support::{complete, Fixture, PatchKind};

const PLAIN: PatchKind = PatchKind { replace: false, failing_object: false };

/// The task: `calls` calls of the original through the hook, each followed by its exit to user
/// mode, holding its CPU for each call. With `held`, the first call runs on the CPU the task
/// already held when the engine thread started (so the engine's first completion attempts
/// find it running and the call happens mid-transition).
fn task_thread(
    fx: &Fixture,
    calls: usize,
    mut held: Option<MutexGuard<'static, ()>>,
    universe: fn(PatchState) -> Redirect,
) -> impl FnOnce() + 'static {
    let (live, sched, task, codes) = (fx.live, fx.sched, fx.task(0), fx.codes.clone());
    let slot = fx.slot();
    move || {
        for _ in 0..calls {
            // A scheduling point (not a preemption): loom's partial-order reduction does not
            // see every conflict through the engine's many relaxed accesses, so let the engine
            // run any number of steps before each call.
            loom::thread::yield_now();
            let cpu = held.take().unwrap_or_else(|| task.cpu.lock().unwrap());
            loom_support::call(live, sched, task, slot, &codes, universe);
            task.frame.store(0, loom::sync::atomic::Ordering::Relaxed);
            live.exit_to_user(&task.state);
            drop(cpu);
        }
    }
}

/// Model 1: enable → start → complete of patch 1 stacked on the enabled patch 0, against the
/// redirect path. Patch 1 is cumulative, so completing it retires patch 0, whose code is then
/// released.
#[test]
fn loom_redirect_vs_enable() {
    loom_support::model("loom_redirect_vs_enable", || {
        let fx = Fixture::new(1, &[PLAIN, PatchKind { replace: true, ..PLAIN }]);
        let mut engine = Engine::new(fx.live);
        engine.enable(fx.patches[0], fx.b).unwrap();
        complete(&mut engine, fx.b);
        let (b, patch, old_code, new_code) = (fx.b, fx.patches[1], fx.codes[0], fx.codes[1]);
        let held = fx.task(0).cpu.lock().unwrap();
        let writer = loom::thread::spawn(move || {
            // The patch's module is loaded now: a handler that jumps to its variant must be
            // ordered after this (the func-stack push publishes it).
            new_code.load();
            engine.enable(patch, b).unwrap();
            complete(&mut engine, b);
            drop(engine);
            old_code.release();
        });
        task_thread(&fx, 2, Some(held), |s| match s {
            PatchState::Unpatched => Fixture::world(&[0]),
            _ => Fixture::world(&[0, 1]),
        })();
        writer.join().unwrap();
        fx.free();
    });
}

/// Model 1, first patch: enabling a patch over the bare original (nothing below its node).
#[test]
fn loom_redirect_vs_first_enable() {
    loom_support::model("loom_redirect_vs_first_enable", || {
        let fx = Fixture::new(1, &[PLAIN]);
        let mut engine = Engine::new(fx.live);
        let (b, patch, new_code) = (fx.b, fx.patches[0], fx.codes[0]);
        // The task is on its CPU from the start: the enable happens while it runs.
        let cpu = fx.task(0).cpu.lock().unwrap();
        let writer = loom::thread::spawn(move || {
            new_code.load();
            engine.enable(patch, b).unwrap();
            complete(&mut engine, b);
        });
        let (live, sched, task, codes) = (fx.live, fx.sched, fx.task(0), fx.codes.clone());
        {
            loom::thread::yield_now();
            // The hook carries its slot: the first one, which the enable claims.
            loom_support::call(live, sched, task, livepatch_core::SlotId(0), &codes, |s| match s {
                PatchState::Unpatched => Fixture::world(&[]),
                _ => Fixture::world(&[0]),
            });
            task.frame.store(0, loom::sync::atomic::Ordering::Relaxed);
            live.exit_to_user(&task.state);
            drop(cpu);
        }
        writer.join().unwrap();
        fx.free();
    });
}

/// Model 2a: disable of patch 1 (stacked on patch 0) against the redirect path; after the
/// transition completes the disabled patch's code is released.
#[test]
fn loom_redirect_vs_disable() {
    loom_support::model("loom_redirect_vs_disable", || {
        let fx = Fixture::new(1, &[PLAIN, PLAIN]);
        let mut engine = Engine::new(fx.live);
        for p in &fx.patches {
            engine.enable(p, fx.b).unwrap();
            complete(&mut engine, fx.b);
        }
        let (b, patch, code) = (fx.b, fx.patches[1], fx.codes[1]);
        let writer = loom::thread::spawn(move || {
            engine.disable(patch, b).unwrap();
            complete(&mut engine, b);
            drop(engine);
            code.release();
        });
        task_thread(&fx, 2, None, |s| match s {
            PatchState::Unpatched => Fixture::world(&[0]),
            _ => Fixture::world(&[0, 1]),
        })();
        writer.join().unwrap();
        fx.free();
    });
}

/// Model 2b: enable of patch 1, reversed mid-transition, against the redirect path; the
/// cancelled patch's code is released once the reversal completes.
#[test]
fn loom_redirect_vs_reverse() {
    loom_support::model("loom_redirect_vs_reverse", || {
        let fx = Fixture::new(1, &[PLAIN, PLAIN]);
        let mut engine = Engine::new(fx.live);
        engine.enable(fx.patches[0], fx.b).unwrap();
        complete(&mut engine, fx.b);
        let (b, patch, code) = (fx.b, fx.patches[1], fx.codes[1]);
        let writer = loom::thread::spawn(move || {
            engine.enable(patch, b).unwrap();
            // One attempt in the patching direction, then reverse.
            let _ = engine.try_complete(b, |_| {}).unwrap();
            if engine.transition().is_some() {
                engine.reverse(b).unwrap();
                complete(&mut engine, b);
                drop(engine);
                code.release();
            }
        });
        task_thread(&fx, 2, None, |s| match s {
            PatchState::Unpatched => Fixture::world(&[0]),
            _ => Fixture::world(&[0, 1]),
        })();
        writer.join().unwrap();
        fx.free();
    });
}

/// Model 1c: an enable cancelled by a failing `pre_patch` of its second object, after its
/// first object's function was pushed, on a fresh engine (no index version published yet);
/// the cancelled patch's code is released when `enable` returns the error.
#[test]
fn loom_redirect_vs_cancelled_enable() {
    loom_support::model("loom_redirect_vs_cancelled_enable", || {
        let fx = Fixture::new(1, &[PatchKind { failing_object: true, ..PLAIN }]);
        let mut engine = Engine::new(fx.live);
        let (b, patch, code) = (fx.b, fx.patches[0], fx.codes[0]);
        let (live, sched, task, codes) = (fx.live, fx.sched, fx.task(0), fx.codes.clone());
        let writer = loom::thread::spawn(move || {
            assert!(engine.enable(patch, b).is_err());
            drop(engine);
            code.release();
        });
        {
            loom::thread::yield_now();
            let cpu = task.cpu.lock().unwrap();
            // The hook's slot: the first slot, claimed by the push (never published).
            let slot = livepatch_core::SlotId(0);
            loom_support::call(live, sched, task, slot, &codes, |_| Fixture::world(&[]));
            task.frame.store(0, loom::sync::atomic::Ordering::Relaxed);
            drop(cpu);
        }
        writer.join().unwrap();
        fx.free();
    });
}
