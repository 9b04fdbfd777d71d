//! Loom model 3 of issue 4: a task switching itself at a switch point, against a sweep on
//! another CPU trying to switch it, against the engine reversing the transition.
//!
//! Patch 0 replaces the original `F` with `V0`; the transition to it has started (the task is
//! unpatched and pending). The task calls `F` through the hook, sleeps inside whatever it was
//! sent to (releasing its CPU, so the sweep can pin it and walk its stack), wakes, checks that
//! its universe still matches the code it is in (I2: nobody switched it while that code was
//! being switched away from), leaves, and passes its switch point. Meanwhile another thread
//! runs the sweep's step for the task (`sweep::try_switch_task`) and the engine reverses the
//! transition. Afterwards the task is in exactly one universe and its target is the reversed
//! direction's (unpatched): a switch decided for the patching direction is never applied
//! after the reversal.
//!
//! Bounds: `LOOM_MAX_PREEMPTIONS=4` (ci/loom.sh); three threads; one task, one original, one
//! variant; one call, one sweep step, one reversal; `max_branches` = `loom_support::MAX_BRANCHES`.
#![cfg(loom)]

mod loom_support;

use livepatch_core::backend::Task as _;
use livepatch_core::redirect::Redirect;
use livepatch_core::sweep;
use livepatch_core::{CodeAddr, Engine, PatchState};
use loom::sync::atomic::Ordering;
use loom_support::{Fixture, PatchKind};

/// Where the task changes universe in the model.
#[derive(Clone, Copy, Debug)]
enum Point {
    /// Exit to user mode, after the call returned.
    ExitToUser,
    /// The handler-entry switch, as the hook is entered.
    HandlerEntry,
    /// A `cond_resched`-like self-check, after the call returned.
    SelfCheck,
}

fn model(name: &str, point: Point) {
    loom_support::model(name, move || {
        let fx = Fixture::new(1, &[PatchKind::default()]);
        let mut engine = Engine::new(fx.live);
        engine.enable(fx.patches[0], fx.b).unwrap();
        let (live, sched, b, task, v0) = (fx.live, fx.sched, fx.b, fx.task(0), fx.codes[0]);
        let slot = fx.slot();
        let original = loom_support::ORIGINAL;

        let reverser = loom::thread::spawn(move || {
            engine.reverse(b).unwrap();
            engine
        });
        let sweeper = loom::thread::spawn(move || {
            let _ = sched.read(|| sweep::try_switch_task(live, sched, b.walker, task));
        });

        // The task. Scheduling points (not preemptions) before each step let the other
        // threads run any number of steps: loom's partial-order reduction does not see every
        // conflict through the engine's many relaxed accesses.
        loom::thread::yield_now();
        let cpu = task.cpu.lock().unwrap();
        let redirect = sched.read(|| match point {
            Point::HandlerEntry => live.on_function_entry(slot, task, b.walker, CodeAddr(0x5000)),
            _ => live.redirect(slot, task.patch_state(), CodeAddr(0x5000)),
        });
        let (frame, universe) = match redirect {
            Redirect::Original => (original + 8, PatchState::Unpatched),
            Redirect::Variant(at) => {
                assert_eq!(at, v0.range.start());
                v0.execute();
                (at.get() + 8, PatchState::Patched)
            }
        };
        task.frame.store(frame, Ordering::Relaxed);
        let seen = task.state.load(Ordering::Relaxed).state;
        assert_eq!(seen, universe, "sent to the code of the other universe");
        // Sleep inside the function: the sweep may pin the task and walk its stack now.
        drop(cpu);
        loom::thread::yield_now();
        let cpu = task.cpu.lock().unwrap();
        let now = task.state.load(Ordering::Relaxed).state;
        assert_eq!(now, universe, "switched while its code was being switched away from");
        task.frame.store(0, Ordering::Relaxed);
        match point {
            Point::ExitToUser => {
                live.exit_to_user(&task.state);
            }
            Point::SelfCheck => {
                live.self_check(task, b.walker);
            }
            Point::HandlerEntry => {}
        }
        drop(cpu);

        let engine = reverser.join().unwrap();
        sweeper.join().unwrap();
        let w = task.state.load(Ordering::Relaxed);
        assert_eq!(w.target, PatchState::Unpatched, "the reversed direction's target: {w:?}");
        assert!(matches!(w.state, PatchState::Unpatched | PatchState::Patched), "{w:?}");
        assert_eq!(engine.transition().map(|t| t.target), Some(PatchState::Unpatched));
        drop(engine);
        fx.free();
    });
}

#[test]
fn loom_switch_exit_to_user_vs_sweep_vs_reverse() {
    model("loom_switch_exit_to_user_vs_sweep_vs_reverse", Point::ExitToUser);
}

#[test]
fn loom_switch_handler_entry_vs_sweep_vs_reverse() {
    model("loom_switch_handler_entry_vs_sweep_vs_reverse", Point::HandlerEntry);
}

#[test]
fn loom_switch_self_check_vs_sweep_vs_reverse() {
    model("loom_switch_self_check_vs_sweep_vs_reverse", Point::SelfCheck);
}
