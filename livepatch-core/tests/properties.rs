//! Property tests: the patched-set index against a sorted-`Vec` reference (point lookups,
//! overlap queries and the sweep's stack query), and random engine operation sequences against
//! a small reference state machine of func stacks, universes and transitions.

mod common;

use common::{original, r, variant_code, TestBackend};
use livepatch_core::patched_set::PatchedSet;
use livepatch_core::transition::Progress;
use livepatch_core::{
    CodeAddr, CodeRange, Engine, EngineStorage, Error, Func, Live, Object, ObjectId, Patch, PatchId, PatchState,
    Policy, Redirect,
};
use proptest::prelude::*;

const FUNCS: usize = 5;
const PATCHES: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    Enable(usize),
    Disable(usize),
    Reverse,
    Force,
    TryComplete,
    /// Put the sleeper task to sleep at this address (or wake it with `None`).
    Sleep(Option<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    let addr = prop_oneof![
        (0..FUNCS).prop_map(|f| original(f).start().get() + 4),
        (0..PATCHES, 0..FUNCS).prop_map(|(p, f)| variant_code(p, f).start().get() + 4),
        Just(0x5000usize),
    ];
    prop_oneof![
        3 => (0..PATCHES).prop_map(Op::Enable),
        2 => (0..PATCHES).prop_map(Op::Disable),
        1 => Just(Op::Reverse),
        1 => Just(Op::Force),
        4 => Just(Op::TryComplete),
        2 => proptest::option::of(addr).prop_map(Op::Sleep),
    ]
}

/// One entry of a reference func stack.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Entry {
    Variant(usize),
    Nop(usize),
}

impl Entry {
    fn patch(self) -> usize {
        match self {
            Entry::Variant(p) | Entry::Nop(p) => p,
        }
    }
    fn code(self, f: usize) -> CodeRange {
        match self {
            Entry::Variant(p) => variant_code(p, f),
            Entry::Nop(_) => original(f),
        }
    }
}

#[derive(Debug, Default)]
struct Reference {
    stacks: [Vec<Entry>; FUNCS],
    registered: Vec<usize>,
    enabled: [bool; PATCHES],
    transition: Option<(usize, PatchState)>,
    sleeper: Option<PatchState>,
    sleeper_at: Option<usize>,
}

impl Reference {
    fn away(&self) -> Vec<CodeRange> {
        let Some((p, target)) = self.transition else { return Vec::new() };
        let mut away = Vec::new();
        for (f, stack) in self.stacks.iter().enumerate() {
            for (i, e) in stack.iter().enumerate() {
                if e.patch() != p {
                    continue;
                }
                away.push(match target {
                    PatchState::Patched => i.checked_sub(1).map_or(original(f), |below| stack[below].code(f)),
                    _ => e.code(f),
                });
            }
        }
        away
    }

    fn blocked(&self) -> bool {
        self.sleeper_at.is_some_and(|a| self.away().iter().any(|c| c.contains(CodeAddr(a))))
    }

    fn complete(&mut self) {
        let Some((p, target)) = self.transition.take() else { return };
        if target == PatchState::Patched && REPLACE[p] {
            // Only the patches registered before `p` are replaced (the kernel's
            // `klp_unpatch_replaced_patches` stops at the transition patch); patches enabled
            // after it — possible when a disable of `p` is reversed — stay.
            let pos = self.registered.iter().position(|&q| q == p).unwrap_or(0);
            let older: Vec<usize> = self.registered[..pos].to_vec();
            for &q in &older {
                self.enabled[q] = false;
            }
            self.registered.retain(|q| !older.contains(q));
            for s in &mut self.stacks {
                s.retain(|e| match *e {
                    Entry::Variant(q) => !older.contains(&q),
                    Entry::Nop(q) => q != p,
                });
            }
        }
        if target == PatchState::Unpatched {
            for s in &mut self.stacks {
                s.retain(|e| e.patch() != p);
            }
            self.registered.retain(|&q| q != p);
            self.enabled[p] = false;
        }
        self.sleeper = None;
    }

    fn expected(&self, f: usize) -> Redirect {
        match self.stacks[f].last() {
            Some(Entry::Variant(p)) => Redirect::Variant(variant_code(*p, f).start()),
            _ => Redirect::Original,
        }
    }
}

/// Which functions each patch replaces, and which patch is cumulative.
const COVERS: [&[usize]; PATCHES] = [&[0, 1], &[1, 2, 3], &[0, 4], &[1, 3]];
const REPLACE: [bool; PATCHES] = [false, false, false, true];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_operations_follow_the_reference(ops in proptest::collection::vec(op(), 1..40)) {
        let storage = EngineStorage::<8, 32>::new();
        let funcs: Vec<Vec<Func<'_>>> = (0..PATCHES)
            .map(|p| COVERS[p].iter().map(|&f| Func::new("f", original(f), variant_code(p, f))).collect())
            .collect();
        let objs: Vec<[Object<'_>; 1]> = funcs.iter().map(|f| [Object::new(ObjectId::VMLINUX, "vmlinux", f)]).collect();
        let patches: Vec<Patch<'_>> = objs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let p = Patch::new(PatchId(i as u32), "p", o);
                if REPLACE[i] { p.replacing() } else { p }
            })
            .collect();
        let b = TestBackend::with_tasks(3);
        let live = Live::new(&storage, Policy::LINUX_6_12);
        let mut engine = Engine::new(&live);
        let mut model = Reference::default();

        for op in ops {
            match op {
                Op::Enable(p) => {
                    let expect = if model.transition.is_some() {
                        Err(Error::Busy)
                    } else if model.registered.contains(&p) {
                        Err(Error::AlreadyEnabled(PatchId(p as u32)))
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(engine.enable(&patches[p], &b), expect);
                    if expect.is_ok() {
                        model.registered.push(p);
                        model.enabled[p] = true;
                        for (f, stack) in model.stacks.iter_mut().enumerate() {
                            if COVERS[p].contains(&f) {
                                stack.push(Entry::Variant(p));
                            } else if REPLACE[p] && !stack.is_empty() {
                                stack.push(Entry::Nop(p));
                            }
                        }
                        model.transition = Some((p, PatchState::Patched));
                        model.sleeper = Some(PatchState::Unpatched);
                    }
                }
                Op::Disable(p) => {
                    let expect = if model.transition.is_some() {
                        Err(Error::Busy)
                    } else if !model.registered.contains(&p) || !model.enabled[p] {
                        Err(Error::NotEnabled(PatchId(p as u32)))
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(engine.disable(&patches[p], &b), expect);
                    if expect.is_ok() {
                        model.enabled[p] = false;
                        model.transition = Some((p, PatchState::Unpatched));
                        model.sleeper = Some(PatchState::Patched);
                    }
                }
                Op::Reverse => {
                    let expect = if model.transition.is_some() { Ok(()) } else { Err(Error::NoTransition) };
                    prop_assert_eq!(engine.reverse(&b), expect);
                    if let Some((p, target)) = model.transition {
                        model.transition = Some((p, target.opposite()));
                        model.enabled[p] = target.opposite() == PatchState::Patched;
                    }
                }
                Op::Force => {
                    let result = engine.force(&b);
                    prop_assert_eq!(result.is_ok(), model.transition.is_some());
                    model.complete();
                }
                Op::TryComplete => {
                    let result = engine.try_complete(&b, |_| {});
                    let Some((_, target)) = model.transition else {
                        prop_assert_eq!(result, Err(Error::NoTransition));
                        continue;
                    };
                    if model.sleeper != Some(target) && !model.blocked() {
                        model.sleeper = Some(target);
                    }
                    let done = model.sleeper == Some(target);
                    prop_assert_eq!(matches!(result, Ok(Progress::Complete(_))), done, "{:?}", result);
                    if done {
                        model.complete();
                    }
                }
                Op::Sleep(at) => {
                    *b.task(1).stack.borrow_mut() = at.into_iter().collect();
                    model.sleeper_at = at;
                }
            }
            let info = engine.transition();
            prop_assert_eq!(info.map(|t| (t.patch.0 as usize, t.target)), model.transition);
            let ids: Vec<usize> = engine.patches().map(|p| p.id().0 as usize).collect();
            prop_assert_eq!(&ids, &model.registered);
            for (p, patch) in patches.iter().enumerate() {
                prop_assert_eq!(patch.is_enabled(), model.enabled[p], "patch {}", p);
            }
            if model.transition.is_none() {
                // Outside a transition every task runs the top of every func stack, and the
                // hooks are exactly the functions with a non-empty stack.
                for f in 0..FUNCS {
                    let got = live.slot_at(original(f).start()).map(|s| live.redirect(s, &b.task(2).state, CodeAddr(0)));
                    let expected = (!model.stacks[f].is_empty()).then(|| model.expected(f));
                    prop_assert_eq!(got, expected, "function {}", f);
                }
                prop_assert_eq!(b.hooked().len(), model.stacks.iter().filter(|s| !s.is_empty()).count());
                prop_assert!(b.tasks.iter().all(|t| t.state.state() == PatchState::Idle));
            } else {
                // The sleeper's universe matches the reference.
                prop_assert_eq!(Some(b.task(1).state.state()), model.sleeper);
            }
        }
    }

    #[test]
    fn index_lookups_match_a_sorted_vec(
        layout in proptest::collection::vec((1usize..0x80, 1usize..0x80, proptest::bool::ANY), 1..12),
        probes in proptest::collection::vec(0usize..0x1400, 1..64),
        spans in proptest::collection::vec((0usize..0x1400, 1usize..0x100), 1..16),
    ) {
        // Lay out disjoint originals (gap, len), each optionally with one variant far away.
        let mut reference: Vec<CodeRange> = Vec::new();
        let mut originals = Vec::new();
        let mut at = 0x100;
        for (gap, len, with_variant) in &layout {
            at += gap;
            originals.push((r(at, *len), *with_variant));
            at += len;
        }
        let nodes: Vec<Func<'_>> = originals
            .iter()
            .enumerate()
            .map(|(i, (o, _))| Func::new("f", *o, r(0x1000 + i * 0x20, 0x10)))
            .collect();
        let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &nodes)];
        let storage = EngineStorage::<16, 32>::new();
        let patch = Patch::new(PatchId(1), "p", &objs);
        let live = Live::new(&storage, Policy::LINUX_6_12);
        let mut engine = Engine::new(&live);
        let b = TestBackend::with_tasks(1);
        engine.enable(&patch, &b).unwrap();
        for (i, (o, _)) in originals.iter().enumerate() {
            reference.push(*o);
            reference.push(r(0x1000 + i * 0x20, 0x10));
        }
        reference.sort();
        let set: &PatchedSet<'_> = live.patched_set();
        prop_assert_eq!(set.len(), reference.len());
        for addr in probes {
            let want = reference.iter().find(|c| c.contains(CodeAddr(addr))).copied();
            prop_assert_eq!(set.lookup(CodeAddr(addr)).map(|h| h.range), want, "addr {:#x}", addr);
            // The stack query: a task sleeping at `addr` is blocked iff `addr` is in an
            // original (the code being switched away from while patching).
            let away = originals.iter().any(|(o, _)| o.contains(CodeAddr(addr)));
            prop_assert_eq!(live.away_hit(CodeAddr(addr)).is_some(), away, "addr {:#x}", addr);
        }
        for (start, len) in spans {
            let span = r(start, len);
            let want = reference.iter().find(|c| c.overlaps(span)).copied();
            prop_assert_eq!(set.first_overlap(span).map(|h| h.range), want);
        }
        engine.force(&b).unwrap();
    }
}
