//! Patched-set operations against a reference list.
//!
//! Func slots are claimed, pushed and unlinked through the engine (enable/disable, completed at
//! once with `force`, or left in transition); after every step the published index must equal
//! the reference's sorted range list, and point lookups, `first_overlap`, `slot_at`,
//! `away_hit` and the sweep's stack query must agree with linear scans. A second, small
//! `PatchedSet` is rebuilt over the same slots to exercise full buffers and buffer reuse, in the
//! lookup mode the input picks (the writer's choice, or forced to the directory or the search),
//! and answers the same point lookups.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use livepatch_core::backend::{Parts, Task as _};
use livepatch_core::patched_set::{DirectorySlot, IndexBuffer, IndexEntry, IndexError, LookupMode, PatchedSet};
use livepatch_core::{sweep, CodeAddr, CodeRange, Engine, EngineStorage, Live, Patch, PatchState, Policy};
use livepatch_fuzz::backend::{FuzzScheduler, FuzzTracer, FuzzWalker};
use livepatch_fuzz::patches::{self, PatchSpec};
use livepatch_fuzz::reference::{self, Reference};
use std::cell::Cell;

#[derive(Debug, Arbitrary)]
enum Op {
    /// Enable a patch; complete at once unless `leave`.
    Enable { patch: u8, leave: bool },
    /// Disable a patch; complete at once unless `leave`.
    Disable { patch: u8, leave: bool },
    /// Reverse the transition in progress.
    Reverse,
    /// Force the transition in progress.
    Force,
    /// Point lookups.
    Lookup(Vec<u16>),
    /// Overlap query.
    Overlap { start: u16, len: u8 },
    /// The sweep's stack query over these frames.
    Stack(Vec<u16>),
    /// Rebuild the small side index.
    Rebuild,
}

#[derive(Debug, Arbitrary)]
struct Input {
    patches: Vec<PatchSpec>,
    side_capacity: u8,
    /// The side index's lookup mode: 0 the writer's choice, 1 the directory, 2 the search.
    side_mode: u8,
    ops: Vec<Op>,
}

/// Maps fuzz bytes onto the interesting part of the address space.
fn addr(a: u16) -> CodeAddr {
    let a = usize::from(a);
    match a >> 14 {
        0 => CodeAddr(0x1000 + (a & 0x3fff) % 0x800),
        1 => CodeAddr(0x10_1000 + (a & 0x3fff) % 0x800),
        2 => CodeAddr(0x8000 + (a & 0x3fff) % 0x400),
        _ => CodeAddr(0x40_0000 + (a & 0x3fff) * 2),
    }
}

fn run(input: &Input) {
    let specs: Vec<PatchSpec> = input.patches.iter().take(8).cloned().collect();
    let side_cap = usize::from(input.side_capacity % 24);
    // A directory of two slots per entry, or up to three pairs short (which bounds the side
    // index's capacity instead of its entries).
    let side_pairs = side_cap.saturating_sub(usize::from(input.side_capacity / 24 % 4));
    let entries = || -> Vec<IndexEntry<'_>> { (0..side_cap).map(|_| IndexEntry::new()).collect() };
    let directory = || -> Vec<[DirectorySlot; 2]> { (0..side_pairs).map(|_| Default::default()).collect() };
    let (entries_a, entries_b, directory_a, directory_b) = (entries(), entries(), directory(), directory());
    let side_a = IndexBuffer { entries: &entries_a, directory: &directory_a };
    let side_b = IndexBuffer { entries: &entries_b, directory: &directory_b };

    let funcs = patches::build_funcs(&specs);
    let callbacks = patches::build_callbacks(&specs);
    let objects = patches::build_objects(&specs, &funcs, &callbacks);
    let pool: Vec<Patch<'_>> = patches::build_patches(&specs, &objects);
    if pool.is_empty() {
        return;
    }
    // Declared before the engine: a published side version points into `side`, which is
    // therefore borrowed for as long as the engine's data (the engine's list runs a destructor).
    let side = match input.side_mode % 3 {
        0 => PatchedSet::new(side_a, side_b),
        1 => PatchedSet::with_mode(side_a, side_b, LookupMode::Directory),
        _ => PatchedSet::with_mode(side_a, side_b, LookupMode::Search),
    };
    let policy = Policy { max_depth: 16, ..Policy::IMPROVED };
    let storage: Box<EngineStorage<'_, 32, 64>> = Box::default();
    let live = Live::new(&storage, policy);
    let mut engine = Engine::new(&live);
    let sched = FuzzScheduler::new(1);
    let walker = FuzzWalker::default();
    let tracer = FuzzTracer::default();
    let b = Parts { scheduler: &sched, walker: &walker, tracer: &tracer };
    let mut r = Reference::default();

    let mut side_published: Vec<CodeRange> = Vec::new();
    let mut side_stale = false;

    for op in input.ops.iter().take(48) {
        match *op {
            Op::Enable { patch, leave } => {
                let p = usize::from(patch) % pool.len();
                if engine.enable(&pool[p], &b).is_ok() {
                    r.nops = r.nops_for(&pool, p);
                    r.registered.push(p);
                    r.transition = Some((p, PatchState::Patched));
                    if !leave {
                        engine.force(&b).unwrap();
                        finish(&mut r, &pool);
                    }
                }
            }
            Op::Disable { patch, leave } => {
                let p = usize::from(patch) % pool.len();
                if engine.disable(&pool[p], &b).is_ok() {
                    r.nops.clear();
                    r.transition = Some((p, PatchState::Unpatched));
                    if !leave {
                        engine.force(&b).unwrap();
                        finish(&mut r, &pool);
                    }
                }
            }
            Op::Reverse => {
                if engine.reverse(&b).is_ok() {
                    let (p, t) = r.transition.unwrap();
                    r.transition = Some((p, t.opposite()));
                }
            }
            Op::Force => {
                if engine.force(&b).is_ok() {
                    finish(&mut r, &pool);
                }
            }
            Op::Lookup(ref addrs) => {
                let expected = r.index(&pool);
                let away = r.away(&pool);
                for &a in addrs.iter().take(16) {
                    let a = addr(a);
                    let want = expected.iter().find(|x| x.contains(a));
                    let got = live.patched_set().lookup(a);
                    assert_eq!(got.map(|h| h.range), want.copied(), "lookup({a:?})");
                    let side_want = side_published.iter().find(|x| x.contains(a));
                    assert_eq!(side.lookup(a).map(|h| h.range), side_want.copied(), "side lookup({a:?})");
                    if let Some(hit) = got {
                        let orig = live.slots()[hit.slot().0 as usize].original().expect("hit on a free slot");
                        match hit.node {
                            None => assert_eq!(orig, hit.range),
                            Some(node) => {
                                assert_eq!(node.code(), Some(hit.range));
                                assert!(r
                                    .registered
                                    .iter()
                                    .any(|&p| r.funcs(&pool, p).any(|f| f == (orig, hit.range))));
                            }
                        }
                    }
                    let is_away = reference::hits(&away, a);
                    assert_eq!(live.away_hit(a).is_some(), is_away, "away_hit({a:?})");
                    let slot_at = live.slot_at(a);
                    assert_eq!(slot_at.is_some(), r.originals(&pool).iter().any(|o| o.start() == a), "slot_at({a:?})");
                }
            }
            Op::Overlap { start, len } => {
                let q = CodeRange::new(addr(start).get(), usize::from(len) + 1).unwrap();
                let want = r.index(&pool).into_iter().find(|x| x.overlaps(q));
                assert_eq!(live.patched_set().first_overlap(q).map(|h| h.range), want, "first_overlap({q:?})");
            }
            Op::Stack(ref frames) => {
                let task = &sched.tasks[0];
                *task.stack.borrow_mut() = frames.iter().take(20).map(|&a| addr(a)).collect();
                let away = r.away(&pool);
                let got = sweep::first_away_frame(&live, &walker, task);
                let stack = task.stack.borrow();
                match reference::walk_outcome(&stack, task.walk.get(), policy.max_depth, &away) {
                    reference::WalkOutcome::Away(i) => match got {
                        Ok(Some(sweep::StallReason::OnStack { frame, addr, .. })) => {
                            assert_eq!((frame as usize, addr), (i, stack[i]))
                        }
                        other => panic!("expected away frame {i}, got {other:?}"),
                    },
                    reference::WalkOutcome::Clean => assert!(matches!(got, Ok(None)), "{got:?}"),
                    reference::WalkOutcome::TooDeep => assert!(got.is_err()),
                    reference::WalkOutcome::Unreliable => unreachable!(),
                }
                let _ = task.patch_state();
            }
            Op::Rebuild => {
                let graced = Cell::new(false);
                let res = side.rebuild(live.slots(), || graced.set(true));
                assert_eq!(graced.get(), side_stale, "grace exactly before reusing a published buffer");
                side_stale = false;
                let mut want: Vec<CodeRange> = live.patched_set().iter().map(|h| h.range).collect();
                want.sort();
                match res {
                    Ok(()) => {
                        side_stale = true;
                        side_published = want;
                    }
                    Err(IndexError::Full { capacity }) => {
                        assert_eq!(capacity, side_pairs, "capacity of {side_cap} entries, {side_pairs} slot pairs");
                        assert!(want.len() > side_pairs, "full with {} of {side_pairs}", want.len());
                    }
                    Err(e) => panic!("side rebuild: {e}"),
                }
                let got: Vec<CodeRange> = side.iter().map(|h| h.range).collect();
                assert_eq!(got, side_published, "side index after rebuild");
            }
        }
        // The published index is exactly the reference's.
        let got: Vec<CodeRange> = live.patched_set().iter().map(|h| h.range).collect();
        assert_eq!(got, r.index(&pool), "published index");
        assert_eq!(live.patched_set().len(), got.len());
    }
}

fn finish(r: &mut Reference, pool: &[Patch<'_>]) {
    let (p, target) = r.transition.take().unwrap();
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
