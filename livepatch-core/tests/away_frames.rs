//! `sweep::first_away_frame` against a straightforward reference, for every pre-filter tier
//! (1, 2, 3, 4, 5 and 17 functions being switched away from), both directions, every stack
//! depth up to 21 frames, the away frame at every depth or absent, behind near-misses, and a
//! walker handing the frames one by one, three, eight or all at once
//! (`StackWalker::walk_runs`): the batched check of the direct tiers must report the same
//! innermost frame, depth, address and code as a frame-by-frame scan.

mod common;

use common::{r, TestBackend, TestTask};
use livepatch_core::backend::{ErrorKind, Parts, StackWalker, WalkError};
use livepatch_core::sweep::{self, StallReason};
use livepatch_core::{
    CodeAddr, CodeRange, Engine, EngineStorage, Func, Live, Object, ObjectId, Patch, PatchId, PatchState, Policy,
};
use std::ops::ControlFlow;

/// The `i`-th original function: 0x40 bytes, 4 KiB apart.
fn original(i: usize) -> CodeRange {
    r(0x10_0000 + i * 0x1000, 0x40)
}

/// Its replacement: 0x80 bytes, 4 KiB apart.
fn variant(i: usize) -> CodeRange {
    r(0x80_0000 + i * 0x1000, 0x80)
}

/// `TestBackend`'s walk, handing the stack in runs of `run` addresses (`0`: all at once).
struct Runs<'b> {
    backend: &'b TestBackend,
    run: usize,
}

impl StackWalker for Runs<'_> {
    type Task = TestTask;
    type Error = ErrorKind;

    fn walk<F>(&self, task: &TestTask, max_depth: usize, frame: F) -> Result<usize, WalkError<ErrorKind>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        self.backend.walk(task, max_depth, frame)
    }

    fn walk_runs<F>(&self, task: &TestTask, max_depth: usize, mut frames: F) -> Result<usize, WalkError<ErrorKind>>
    where
        F: FnMut(&[CodeAddr]) -> ControlFlow<()>,
    {
        let stack: Vec<CodeAddr> = task.stack.borrow().iter().map(|&a| CodeAddr(a)).collect();
        if stack.len() > max_depth {
            return Err(WalkError::TooDeep);
        }
        let mut handed = 0;
        for run in stack.chunks(if self.run == 0 { stack.len().max(1) } else { self.run }) {
            handed += run.len();
            if frames(run).is_break() {
                break;
            }
        }
        Ok(handed)
    }
}

/// A stack of `depth` frames outside the code being switched away from: near-misses of the
/// ranges (the byte before, the byte after) and unpatched code.
fn clean_stack(depth: usize, ranges: &[CodeRange]) -> Vec<usize> {
    (0..depth)
        .map(|i| {
            let near = ranges[i % ranges.len()];
            match i % 3 {
                0 => near.start().get() - 1,
                1 => near.end().get(),
                _ => 0x5000 + 8 * i,
            }
        })
        .collect()
}

/// Checks every stack shape against the reference, with the code of `away` being switched
/// away from (`originals`: whether that code is the originals or the variants).
fn check_every_stack(live: &Live<'_>, b: &TestBackend, n: usize, away_is_original: bool) {
    let away: Vec<CodeRange> = (0..n).map(|i| if away_is_original { original(i) } else { variant(i) }).collect();
    let task = b.task(1);
    for depth in 0..=21 {
        for hit in (0..depth).map(Some).chain([None]) {
            let mut stack = clean_stack(depth, &away);
            if let Some(p) = hit {
                // In function `p % n`, and an outer away frame that must not be reported.
                stack[p] = away[p % n].start().get() + 0x10;
                if p + 2 < depth {
                    stack[depth - 1] = away[(p + 1) % n].end().get() - 1;
                }
            }
            *task.stack.borrow_mut() = stack.clone();
            let want = stack.iter().position(|&a| away.iter().any(|c| c.contains(CodeAddr(a))));
            assert_eq!(want, hit, "the reference sees the away frame placed ({n} functions, depth {depth})");
            for run in [1, 3, 8, 0] {
                let got = sweep::first_away_frame(live, &Runs { backend: b, run }, task);
                let context = format!("{n} functions, depth {depth}, hit {hit:?}, runs of {run}: {got:?}");
                match (want, got) {
                    (None, Ok(None)) => {}
                    (Some(i), Ok(Some(StallReason::OnStack { slot, function, variant: v, frame, addr }))) => {
                        let f = i % n;
                        assert_eq!((frame as usize, addr), (i, CodeAddr(stack[i])), "{context}");
                        assert_eq!(function, original(f), "{context}");
                        assert_eq!(v, (!away_is_original).then(|| variant(f)), "{context}");
                        assert_eq!(live.slot_at(original(f).start()), Some(slot), "{context}");
                    }
                    _ => panic!("expected the away frame at {want:?}; {context}"),
                }
            }
            // The one-by-one walk (the provided `walk_runs`) agrees.
            let one_by_one = sweep::first_away_frame(live, b, task);
            assert_eq!(one_by_one, sweep::first_away_frame(live, &Runs { backend: b, run: 0 }, task));
        }
    }
    // Deeper than the limit: `TooDeep`, whoever hands the frames.
    *task.stack.borrow_mut() = clean_stack(live.policy().max_depth + 1, &away);
    for run in [1, 8, 0] {
        assert_eq!(sweep::first_away_frame(live, &Runs { backend: b, run }, task), Err(WalkError::TooDeep));
    }
    task.stack.borrow_mut().clear();
}

#[test]
fn first_away_frame_agrees_with_a_frame_by_frame_scan_in_every_tier_and_run_size() {
    for n in [1, 2, 3, 4, 5, 17] {
        let funcs: Vec<Func<'_>> = (0..n).map(|i| Func::new("f", original(i), variant(i))).collect();
        let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
        let patch = Patch::new(PatchId(1), "p1", &objs);
        let storage = Box::new(EngineStorage::<24, 64>::new());
        // A small depth limit, so that `TooDeep` is quick to reach.
        let live = Live::new(&storage, Policy { max_depth: 40, ..Policy::LINUX_6_12 });
        let mut engine = Engine::new(&live);
        let b = TestBackend::with_tasks(1);

        // Enabling: the originals are being switched away from.
        engine.enable(&patch, &b).unwrap();
        check_every_stack(&live, &b, n, true);
        assert!(engine.try_complete(&b, |_| {}).unwrap().is_complete(), "{n} functions");

        // Disabling: the variants are.
        engine.disable(&patch, &b).unwrap();
        check_every_stack(&live, &b, n, false);
        assert!(engine.try_complete(&b, |_| {}).unwrap().is_complete(), "{n} functions");
    }
}

#[test]
fn a_batch_of_frames_in_old_code_blocks_the_switch_whoever_hands_it() {
    // One function being switched away from (the tier that compares each frame with one
    // range), and walkers that hand a saved stack eight frames at a time or all at once: a
    // task recursing in the old function (every frame of a batch inside it), and one old
    // frame among frames far from it (no near-miss that a pre-filter could mistake for it).
    let funcs = [Func::new("f", original(0), variant(0))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
    let patch = Patch::new(PatchId(1), "p1", &objs);
    let storage = Box::new(EngineStorage::<4, 16>::new());
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    let b = TestBackend::with_tasks(1);
    engine.enable(&patch, &b).unwrap();
    let task = b.task(1);
    let old = original(0).start().get() + 0x10;
    let far = |i: usize| 0x5000 + 8 * i;
    for depth in [8, 9, 16, 20] {
        let recursing = vec![old; depth];
        let stacks = (0..depth).map(|p| (0..depth).map(|i| if i == p { old } else { far(i) }).collect::<Vec<_>>());
        for stack in std::iter::once(recursing).chain(stacks) {
            let first = stack.iter().position(|&a| a == old).unwrap();
            *task.stack.borrow_mut() = stack.clone();
            for run in [8, 0] {
                let walker = Runs { backend: &b, run };
                let got = sweep::first_away_frame(&live, &walker, task);
                let Ok(Some(StallReason::OnStack { function, frame, addr, .. })) = got else {
                    panic!("depth {depth}, runs of {run}, stack {stack:x?}: {got:?}")
                };
                assert_eq!((function, frame as usize, addr), (original(0), first, CodeAddr(old)), "runs of {run}");
                // The engine's sweep with that walker leaves the task where it is.
                let parts = Parts { scheduler: &b, walker: &walker, tracer: &b };
                let progress = engine.try_complete(&parts, |_| {}).unwrap();
                assert!(progress.is_pending(), "depth {depth}, runs of {run}, stack {stack:x?}: {progress:?}");
                assert_eq!(task.state.state(), PatchState::Unpatched);
            }
        }
    }
    task.stack.borrow_mut().clear();
    assert!(engine.try_complete(&b, |_| {}).unwrap().is_complete());
}
