//! Engine operation sequences — enable, disable, reverse, force, replace, completion attempts,
//! with failing `pre_patch` callbacks, failing hook installs and removals, running tasks and
//! bad stacks — checked against the state machine's rules and a brute-force reference:
//! refusals change nothing, every call runs the variant of its task's universe, the sweep
//! switches exactly the tasks whose stacks are clean, and nothing stays linked after a
//! disable completes. Module objects load and go between and during transitions (with the
//! nops of an atomic replace whose replaced patches are still registered).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use livepatch_core::backend::Parts;
use livepatch_core::transition::Progress;
use livepatch_core::{CodeAddr, CodeRange, Engine, EngineStorage, Error, Live, ObjectId, Patch, PatchState, Policy};
use livepatch_fuzz::backend::{FuzzScheduler, FuzzTracer, FuzzWalker, WalkMode};
use livepatch_fuzz::patches::{self, PatchSpec};
use livepatch_fuzz::reference::{self, Reference, WalkOutcome};
use std::sync::atomic::Ordering;

#[derive(Debug, Arbitrary)]
enum Op {
    Enable(u8),
    Disable(u8),
    Reverse,
    Force,
    TryComplete,
    FailPrePatch { patch: u8, object: u8 },
    FailNextInstall,
    FailRemove(bool),
    SetStack { task: u8, frames: Vec<(u8, u8)> },
    SetRunning { task: u8, running: bool },
    SetWalk { task: u8, mode: WalkMode },
    ExitToUser(u8),
    /// Module object `1 + n % 2` loads (`Engine::object_coming`).
    Load(u8),
    /// Module object `1 + n % 2` goes (`Engine::object_going`).
    Unload(u8),
}

#[derive(Debug, Arbitrary)]
struct Input {
    patches: Vec<PatchSpec>,
    unloaded: u8,
    max_depth: u8,
    batch: u8,
    ops: Vec<Op>,
}

/// What must not change when an operation is refused.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    transition: Option<(u32, PatchState, u32)>,
    registered: Vec<u32>,
    stacks: Vec<Vec<Option<(usize, usize)>>>,
    index: Vec<(usize, usize, bool)>,
    words: Vec<(PatchState, PatchState)>,
}

fn snapshot(engine: &Engine<'_>, live: &Live<'_>, sched: &FuzzScheduler) -> Snapshot {
    Snapshot {
        transition: engine.transition().map(|t| (t.patch.0, t.target, t.passes)),
        registered: engine.patches().map(|p| p.id().0).collect(),
        stacks: live
            .slots()
            .iter()
            .map(|s| s.iter().map(|n| n.code().map(|c| (c.start().get(), c.end().get()))).collect())
            .collect(),
        index: live
            .patched_set()
            .iter()
            .map(|h| (h.range.start().get(), h.range.end().get(), h.node.is_some()))
            .collect(),
        words: sched
            .tasks
            .iter()
            .map(|t| {
                let w = t.patch_state().load(Ordering::Relaxed);
                (w.state, w.target)
            })
            .collect(),
    }
}

use livepatch_core::backend::Task as _;

/// An address the fuzz bytes select: inside, at the edge of, or outside a known range.
fn frame_addr(patches: &[Patch<'_>], which: u8, off: u8) -> CodeAddr {
    let ranges: Vec<_> = patches.iter().flat_map(|p| p.funcs().flat_map(|(_, f)| f.old().into_iter().chain([f.new_code()]))).collect();
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

/// A refused or cancelled operation changes nothing, except for the slots of hooks whose
/// removal failed (a backend failure of its own): a cancel may leave more of them, or release
/// earlier ones once removal works again. `originals` are the originals live patches replace;
/// index entries of other originals are such slots.
fn same(before: &Snapshot, after: &Snapshot, originals: &[CodeRange], what: &str) {
    let live_only = |s: &Snapshot| -> Vec<(usize, usize, bool)> {
        s.index
            .iter()
            .copied()
            .filter(|&(start, end, variant)| {
                variant || originals.iter().any(|o| (o.start().get(), o.end().get()) == (start, end))
            })
            .collect()
    };
    assert_eq!(
        (&before.transition, &before.registered, &before.words, live_only(before)),
        (&after.transition, &after.registered, &after.words, live_only(after)),
        "{what} changed state"
    );
    let stacks = |s: &Snapshot| s.stacks.iter().filter(|st| !st.is_empty()).cloned().collect::<Vec<_>>();
    assert_eq!(stacks(before), stacks(after), "{what} changed a func stack");
}

fn check(engine: &Engine<'_>, live: &Live<'_>, sched: &FuzzScheduler, patches: &[Patch<'_>], r: &Reference) {
    // The engine's view of the transition and the registered patches.
    assert_eq!(engine.transition().map(|t| (t.patch.0 as usize - 1, t.target)), r.transition, "transition");
    let ids: Vec<usize> = engine.patches().map(|p| p.id().0 as usize - 1).collect();
    assert_eq!(ids, r.registered, "registered patches");
    assert_eq!(live.transition_target(), r.transition.map(|(_, t)| t), "published target");

    // Every task's universe, and where each of its calls goes.
    for t in &sched.tasks {
        let w = t.patch_state().load(Ordering::Relaxed);
        match r.transition {
            None => assert_eq!((w.state, w.target), (PatchState::Idle, PatchState::Idle), "idle task word"),
            Some((_, target)) => {
                assert_ne!(w.state, PatchState::Idle, "task idle during a transition");
                assert_eq!(w.target, target, "task target");
            }
        }
        for old in r.originals(patches) {
            let slot = live.slot_at(old.start()).expect("slot for a replaced original");
            let got = live.redirect(slot, t.patch_state(), CodeAddr(0));
            assert_eq!(got, r.redirect(patches, w.state, old), "redirect of {old:?} for a {:?} task", w.state);
        }
    }

    // The index: every expected range; anything else is an original whose hook removal failed.
    let expected = r.index(patches);
    let got: Vec<_> = live.patched_set().iter().collect();
    for range in &expected {
        assert!(got.iter().any(|h| h.range == *range), "index misses {range:?}");
    }
    for hit in &got {
        if !expected.contains(&hit.range) {
            assert!(hit.node.is_none() && !r.originals(patches).contains(&hit.range), "stray index entry {hit:?}");
        }
    }
    for pair in got.windows(2) {
        assert!(pair[0].range.end() <= pair[1].range.start(), "index unsorted or overlapping");
    }

    // Nothing of an unregistered patch stays linked; callbacks keep their pairing.
    for (i, p) in patches.iter().enumerate() {
        if !r.registered.contains(&i) {
            assert!(!p.is_registered() && !p.is_enabled(), "patch {i} still registered");
            for (_, f) in p.funcs() {
                assert!(!f.is_patched(), "func of unregistered patch {i} still linked");
            }
        }
    }
}

fn run(input: &Input) {
    let specs: Vec<PatchSpec> = input.patches.iter().take(5).cloned().collect();
    let funcs = patches::build_funcs(&specs);
    let callbacks = patches::build_callbacks(&specs);
    let objects = patches::build_objects(&specs, &funcs, &callbacks);
    let pool = patches::build_patches(&specs, &objects);
    if pool.is_empty() {
        return;
    }
    let policy = Policy {
        max_depth: usize::from(input.max_depth % 8) + 1,
        batch: usize::from(input.batch % 4) + 1,
        signal_every: Some(2),
        ..Policy::IMPROVED
    };
    let storage: Box<EngineStorage<'_, 32, 128>> = Box::default();
    let live = Live::new(&storage, policy);
    let mut engine = Engine::new(&live);
    let sched = FuzzScheduler::new(4);
    let walker = FuzzWalker::default();
    let tracer = FuzzTracer::default();
    tracer.unloaded.set(u32::from(input.unloaded & 0b110));
    let b = Parts { scheduler: &sched, walker: &walker, tracer: &tracer };
    let mut r = Reference { unloaded: u32::from(input.unloaded & 0b110), ..Reference::default() };

    for op in input.ops.iter().take(64) {
        let before = snapshot(&engine, &live, &sched);
        match *op {
            Op::Enable(p) => {
                let p = usize::from(p) % pool.len();
                let fresh = !pool[p].is_registered();
                let res = engine.enable(&pool[p], &b);
                match res {
                    Ok(()) => {
                        assert!(r.transition.is_none() && fresh, "enable accepted while busy or registered");
                        r.nops = r.nops_for(&pool, p);
                        r.registered.push(p);
                        r.transition = Some((p, PatchState::Patched));
                    }
                    Err(e) => {
                        same(&before, &snapshot(&engine, &live, &sched), &r.originals(&pool), "refused enable");
                        match e {
                            Error::Busy => assert!(r.transition.is_some()),
                            Error::AlreadyEnabled(_) => assert!(r.transition.is_none() && !fresh),
                            Error::Invalid(_) | Error::Conflict(_) | Error::Callback { .. } | Error::Backend(_) => {
                                assert!(r.transition.is_none() && fresh)
                            }
                            other => panic!("unexpected enable error {other:?}"),
                        }
                    }
                }
            }
            Op::Disable(p) => {
                let p = usize::from(p) % pool.len();
                match engine.disable(&pool[p], &b) {
                    Ok(()) => {
                        assert!(r.transition.is_none() && r.registered.contains(&p), "disable accepted");
                        r.nops.clear();
                        r.transition = Some((p, PatchState::Unpatched));
                    }
                    Err(e) => {
                        assert_eq!(snapshot(&engine, &live, &sched), before, "refused disable changed state");
                        match e {
                            Error::Busy => assert!(r.transition.is_some()),
                            Error::NotEnabled(_) => assert!(r.transition.is_none() && !r.registered.contains(&p)),
                            other => panic!("unexpected disable error {other:?}"),
                        }
                    }
                }
            }
            Op::Reverse => match engine.reverse(&b) {
                Ok(()) => {
                    let (p, target) = r.transition.expect("reverse accepted with no transition");
                    r.transition = Some((p, target.opposite()));
                }
                Err(e) => {
                    assert_eq!(e, Error::NoTransition);
                    assert!(r.transition.is_none());
                }
            },
            Op::Force => match engine.force(&b) {
                Ok(progress) => {
                    assert!(matches!(progress, Progress::Complete(_)));
                    let (p, target) = r.transition.expect("force accepted with no transition");
                    for &q in &r.registered {
                        assert!(pool[q].is_forced());
                    }
                    complete(&mut r, &pool, p, target);
                }
                Err(e) => {
                    assert_eq!(e, Error::NoTransition);
                    assert!(r.transition.is_none());
                }
            },
            Op::TryComplete => {
                let away = r.away(&pool);
                let pending: Vec<Option<WalkOutcome>> = sched
                    .tasks
                    .iter()
                    .map(|t| {
                        let w = t.patch_state().load(Ordering::Relaxed);
                        if !w.pending() {
                            return None;
                        }
                        if t.running.get() {
                            return Some(WalkOutcome::TooDeep); // blocked: running
                        }
                        Some(reference::walk_outcome(&t.stack.borrow(), t.walk.get(), policy.max_depth, &away))
                    })
                    .collect();
                match engine.try_complete(&b, |_| {}) {
                    Ok(progress) => {
                        let (p, target) = r.transition.expect("attempt accepted with no transition");
                        let all_clean = pending.iter().all(|o| matches!(o, None | Some(WalkOutcome::Clean)));
                        match progress {
                            Progress::Complete(_) => {
                                assert!(all_clean, "completed with a blocked task: {pending:?}");
                                complete(&mut r, &pool, p, target);
                            }
                            Progress::Pending(s) => {
                                assert!(!all_clean, "pending although every task could switch");
                                for (t, o) in sched.tasks.iter().zip(&pending) {
                                    let w = t.patch_state().load(Ordering::Relaxed);
                                    match o {
                                        None => assert!(!w.pending()),
                                        Some(WalkOutcome::Clean) => {
                                            assert_eq!((w.state, w.target), (target, target), "clean task not switched")
                                        }
                                        Some(_) => assert!(w.pending(), "blocked task switched"),
                                    }
                                }
                                assert_eq!(
                                    s.remaining as usize,
                                    pending.iter().filter(|o| !matches!(o, None | Some(WalkOutcome::Clean))).count()
                                );
                            }
                            Progress::GaveUp(_) => panic!("per-task model gave up"),
                        }
                    }
                    Err(e) => {
                        assert_eq!(e, Error::NoTransition);
                        assert!(r.transition.is_none());
                    }
                }
            }
            Op::FailPrePatch { patch, object } => {
                let p = usize::from(patch) % pool.len();
                if let Some(cb) = callbacks[p].get(usize::from(object) % 2) {
                    cb.fail_pre_patch.store(true, Ordering::Relaxed);
                }
            }
            Op::FailNextInstall => tracer.fail_next_install.set(true),
            Op::FailRemove(on) => tracer.fail_remove.set(on),
            Op::SetStack { task, ref frames } => {
                let t = &sched.tasks[usize::from(task) % sched.tasks.len()];
                *t.stack.borrow_mut() = frames.iter().take(12).map(|&(w, o)| frame_addr(&pool, w, o)).collect();
            }
            Op::SetRunning { task, running } => {
                sched.tasks[usize::from(task) % sched.tasks.len()].running.set(running);
            }
            Op::SetWalk { task, mode } => {
                sched.tasks[usize::from(task) % sched.tasks.len()].walk.set(mode);
            }
            Op::Load(o) => {
                let object = 1 + u32::from(o % 2);
                if !r.loaded(object) {
                    tracer.unloaded.set(tracer.unloaded.get() & !(1 << object));
                    match engine.object_coming(ObjectId(object), &b) {
                        Ok(()) => {
                            r.unloaded &= !(1 << object);
                            // A replace patch in transition while the patches it replaces are
                            // registered (its enable, either direction) nops the new object's
                            // originals it does not cover, as `klp_module_coming()`.
                            if let Some((p, _)) = r.transition {
                                if pool[p].is_replace() && r.registered.first() != Some(&p) {
                                    r.nops = r.nops_for(&pool, p);
                                }
                            }
                        }
                        Err(e) => {
                            tracer.unloaded.set(tracer.unloaded.get() | (1 << object));
                            same(&before, &snapshot(&engine, &live, &sched), &r.originals(&pool), "refused load");
                            assert!(
                                matches!(e, Error::Callback { .. } | Error::Backend(_) | Error::Conflict(_) | Error::Invalid(_)),
                                "unexpected load error {e:?}"
                            );
                        }
                    }
                }
            }
            Op::Unload(o) => {
                let object = 1 + u32::from(o % 2);
                // Also while hook removals fail: the going object's slots then stay (their
                // originals in the index, which `check` allows), but none of its code is
                // switched away from any more.
                if r.loaded(object) {
                    tracer.unloaded.set(tracer.unloaded.get() | (1 << object));
                    engine.object_going(ObjectId(object), &b);
                    r.unloaded |= 1 << object;
                }
            }
            Op::ExitToUser(task) => {
                let t = &sched.tasks[usize::from(task) % sched.tasks.len()];
                let w = t.patch_state().load(Ordering::Relaxed);
                let got = live.exit_to_user(t.patch_state());
                assert_eq!(got, w.pending().then_some(w.target), "exit to user");
            }
        }
        check(&engine, &live, &sched, &pool, &r);
        for cbs in &callbacks {
            for cb in cbs {
                assert!(!cb.violation.load(Ordering::Relaxed), "callback ran out of order");
            }
        }
    }
}

/// The reference's completion of the transition of `p` towards `target`.
fn complete(r: &mut Reference, pool: &[Patch<'_>], p: usize, target: PatchState) {
    r.transition = None;
    r.nops.clear();
    if target == PatchState::Unpatched {
        r.registered.retain(|&q| q != p);
    } else if pool[p].is_replace() {
        // A cumulative patch retires the patches registered before it.
        let pos = r.registered.iter().position(|&q| q == p).unwrap_or(0);
        r.registered.drain(..pos);
    }
}

fuzz_target!(|input: Input| run(&input));
