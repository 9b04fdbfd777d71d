//! Loom model 5 of issue 4: the per-task word — state and target (hence "pending") in one
//! atomic — between a task switching itself, the engine reversing, and an observer.
//!
//! The kernel keeps `patch_state` and `TIF_PATCH_PENDING` apart and relies on the full barrier
//! of the value-returning `test_and_clear_tsk_thread_flag` in `klp_update_patch_state`. We rely
//! on two things instead, and this model checks both with the real `TaskPatchState`:
//!
//! 1. **one word**: switching is a compare-and-swap from the snapshot the decision was made
//!    on, so a reversal (clear pending, then retarget) that lands in between makes the switch
//!    fail — the task ends in exactly one universe, never switched towards a direction that
//!    is no longer the target;
//! 2. **acquire/release pairs**: the engine's `retarget` is `Release` and the task's load of
//!    its word before switching is `Acquire`, so the task sees what the engine wrote before
//!    making it pending (the away flags it checks its stack against); and the switch itself
//!    is `AcqRel`, so whatever the task did in its old universe happens-before anyone who
//!    observes the switch with an `Acquire` load (the sweep, then completion and the release
//!    of the old code).
//!
//! Both are checked with `loom::cell::UnsafeCell`s: `away` (written by the engine before
//! retargeting, read by the task after seeing its target) and `old_code` (read by the task
//! before switching, overwritten by the observer after seeing the switch).
//!
//! Bounds: `LOOM_MAX_PREEMPTIONS=4` (ci/loom.sh); three threads; one retarget, one switch
//! attempt, one reversal, one observation; `max_branches` = `loom_support::MAX_BRANCHES`.
#![cfg(loom)]

mod loom_support;

use livepatch_core::{PatchState, TaskPatchState};
use loom::cell::UnsafeCell;
use loom::sync::atomic::Ordering;
use loom::sync::Arc;

struct Shared {
    word: TaskPatchState,
    /// The away flags of the patching direction (written before the task is made pending).
    away: UnsafeCell<u32>,
    /// The old universe's code (the task runs it before switching; freed after).
    old_code: UnsafeCell<u32>,
}

#[test]
fn loom_task_word_switch_vs_reverse_vs_observer() {
    loom_support::model("loom_task_word_switch_vs_reverse_vs_observer", || {
        let s =
            Arc::new(Shared { word: TaskPatchState::new(), away: UnsafeCell::new(0), old_code: UnsafeCell::new(1) });
        // Transition init: the task starts unpatched.
        s.word.reset(PatchState::Unpatched);

        // The engine: publish the away flags, make the task pending, then reverse.
        let engine = {
            let s = s.clone();
            loom::thread::spawn(move || {
                // SAFETY: loom checks the access.
                s.away.with_mut(|p| unsafe { *p = 1 });
                s.word.retarget(PatchState::Patched);
                s.word.clear_pending();
                s.word.retarget(PatchState::Unpatched);
            })
        };
        // The task at a switch point: runs old code, then switches if pending, checking its
        // stack against the away flags first.
        let task = {
            let s = s.clone();
            loom::thread::spawn(move || {
                // SAFETY: loom checks the access.
                let code = s.old_code.with(|p| unsafe { *p });
                assert_eq!(code, 1, "old code freed while the task runs it");
                let seen = s.word.load(Ordering::Acquire);
                if seen.pending() {
                    // SAFETY: loom checks the access.
                    let away = s.away.with(|p| unsafe { *p });
                    assert_eq!(away, 1, "pending task did not see the away flags");
                    s.word.try_switch(seen)
                } else {
                    None
                }
            })
        };
        // An observer (the sweep, then completion): once it sees the task switched to the
        // patched universe, the old code may be released.
        let observer = {
            let s = s.clone();
            loom::thread::spawn(move || {
                let w = s.word.load(Ordering::Acquire);
                if w.state == PatchState::Patched && !w.pending() {
                    // SAFETY: loom checks the access.
                    s.old_code.with_mut(|p| unsafe { *p = 0 });
                }
            })
        };
        engine.join().unwrap();
        let switched = task.join().unwrap();
        observer.join().unwrap();

        let w = s.word.load(Ordering::Relaxed);
        assert_eq!(w.target, PatchState::Unpatched, "the reversal's target wins: {w:?}");
        match switched {
            // Switched before the reversal: patched, pending back to unpatched.
            Some(state) => {
                assert_eq!(state, PatchState::Patched);
                assert_eq!(w.state, PatchState::Patched, "{w:?}");
            }
            None => assert_eq!(w.state, PatchState::Unpatched, "{w:?}"),
        }
    });
}
