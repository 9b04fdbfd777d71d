//! Stack inputs to the sweep: arbitrary frame lists, depths at and past the walk limit
//! (including a limit of zero), walkers that fail eagerly or part-way, running tasks. Each
//! task's verdict from `try_switch_task` (or from a self-check at a switch point) must equal
//! a brute-force check of its frames against the code being switched away from.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use livepatch_core::backend::{ErrorKind, Parts, Task as _};
use livepatch_core::sweep::{self, StallReason, Verdict};
use livepatch_core::{CodeAddr, Engine, EngineStorage, Live, Patch, PatchState, Policy};
use livepatch_fuzz::backend::{FuzzScheduler, FuzzTracer, FuzzWalker, WalkMode};
use livepatch_fuzz::patches::{self, PatchSpec};
use livepatch_fuzz::reference::{self, Reference, WalkOutcome};

#[derive(Debug, Arbitrary)]
struct TaskSpec {
    frames: Vec<(u8, u8)>,
    mode: WalkMode,
    running: bool,
    /// Check at the task's own self-check point instead of from the sweep.
    self_check: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    patches: Vec<PatchSpec>,
    /// Patches enabled (and completed) before the transition under test.
    enabled: Vec<u8>,
    /// The transition under test: enable this patch, or disable an enabled one.
    transition: u8,
    disable: bool,
    reverse: bool,
    max_depth: u8,
    tasks: Vec<TaskSpec>,
}

/// An address inside, at the edge of, or next to a range of the pool.
fn frame_addr(pool: &[Patch<'_>], which: u8, off: u8) -> CodeAddr {
    let ranges: Vec<_> = pool.iter().flat_map(|p| p.funcs().flat_map(|(_, f)| f.old().into_iter().chain([f.new_code()]))).collect();
    if ranges.is_empty() || which == 255 {
        return CodeAddr(usize::from(off) * 0x40);
    }
    let r = ranges[usize::from(which) % ranges.len()];
    CodeAddr(match off % 4 {
        0 => r.start().get(),
        1 => r.end().get() - 1,
        2 => r.end().get(),
        _ => r.start().get() + usize::from(off) % r.len(),
    })
}

fn run(input: &Input) {
    let specs: Vec<PatchSpec> = input.patches.iter().take(4).cloned().collect();
    let funcs = patches::build_funcs(&specs);
    let callbacks = patches::build_callbacks(&specs);
    let objects = patches::build_objects(&specs, &funcs, &callbacks);
    let pool = patches::build_patches(&specs, &objects);
    if pool.is_empty() {
        return;
    }
    let max_depth = usize::from(input.max_depth % 24);
    let policy = Policy { max_depth, ..Policy::IMPROVED };
    let storage: Box<EngineStorage<'_, 16, 64>> = Box::default();
    let live = Live::new(&storage, policy);
    let mut engine = Engine::new(&live);
    let tasks = input.tasks.iter().take(8).collect::<Vec<_>>();
    let sched = FuzzScheduler::new(tasks.len() as u32);
    let walker = FuzzWalker::default();
    let tracer = FuzzTracer::default();
    let b = Parts { scheduler: &sched, walker: &walker, tracer: &tracer };
    let mut r = Reference::default();

    for &p in input.enabled.iter().take(4) {
        let p = usize::from(p) % pool.len();
        if engine.enable(&pool[p], &b).is_ok() {
            engine.force(&b).unwrap();
            if pool[p].is_replace() {
                r.registered.clear();
            }
            r.registered.push(p);
        }
    }
    let p = usize::from(input.transition) % pool.len();
    if input.disable {
        if engine.disable(&pool[p], &b).is_err() {
            return;
        }
        r.transition = Some((p, PatchState::Unpatched));
    } else {
        if engine.enable(&pool[p], &b).is_err() {
            return;
        }
        r.nops = r.nops_for(&pool, p);
        r.registered.push(p);
        r.transition = Some((p, PatchState::Patched));
    }
    if input.reverse {
        engine.reverse(&b).unwrap();
        let (p, t) = r.transition.unwrap();
        r.transition = Some((p, t.opposite()));
    }
    let target = r.transition.unwrap().1;
    let away = r.away(&pool);

    for (task, spec) in sched.tasks.iter().zip(&tasks) {
        let stack: Vec<CodeAddr> = spec.frames.iter().take(32).map(|&(w, o)| frame_addr(&pool, w, o)).collect();
        *task.stack.borrow_mut() = stack.clone();
        task.walk.set(spec.mode);
        task.running.set(spec.running && !spec.self_check);
        let pending = task.patch_state().pending();
        let verdict = if spec.self_check {
            live.self_check(task, &walker)
        } else {
            sweep::try_switch_task(&live, &sched, &walker, task)
        };
        let want = if !pending {
            Verdict::NotPending
        } else if task.running.get() {
            Verdict::Blocked(StallReason::Running)
        } else {
            match reference::walk_outcome(&stack, spec.mode, max_depth, &away) {
                WalkOutcome::Clean => Verdict::Switched(target),
                WalkOutcome::TooDeep => Verdict::Blocked(StallReason::TooDeep),
                WalkOutcome::Unreliable => Verdict::Blocked(StallReason::Unreliable(ErrorKind::Unreliable)),
                WalkOutcome::Away(i) => {
                    let Verdict::Blocked(StallReason::OnStack { slot, function, variant, frame, addr }) = verdict
                    else {
                        panic!("frame {i} ({:?}) is away, got {verdict:?}", stack[i]);
                    };
                    assert_eq!((frame as usize, addr), (i, stack[i]));
                    assert_eq!(live.slots()[slot.0 as usize].original(), Some(function));
                    let code = variant.unwrap_or(function);
                    assert!(code.contains(addr) && away.contains(&code), "{code:?} not away");
                    verdict
                }
            }
        };
        assert_eq!(verdict, want, "stack {stack:?} mode {:?} depth {max_depth}", spec.mode);
        let w = task.patch_state().load(livepatch_core::sync::Ordering::Relaxed);
        assert_eq!(w.pending(), pending && !matches!(verdict, Verdict::Switched(_)));
        assert_ne!(w.state, PatchState::Idle);
    }
}

fuzz_target!(|input: Input| run(&input));
