//! Property tests of the two per-call decisions over random func stacks and random task
//! states: the redirect (per-task and call-chain models) and the sweep's stack query.
//!
//! A scenario enables a few patches (some cumulative, so stacks hold nops and replaced
//! patches get retired), then leaves one transition in progress — an enable or a disable,
//! possibly reversed — with each task switched or not before and after the reversal. A
//! straightforward reference keeps each function's stack as a list of entries and answers by
//! looking at its top two. Everything is small and `Debug`, so a shrunk failure reads as a
//! short story: which patch covers which function, what was enabled, which task switched.

mod common;

use common::{original, variant_code, TestBackend};
use livepatch_core::backend::Task as _;
use livepatch_core::sweep::{self, StallReason};
use livepatch_core::{
    CodeAddr, CodeRange, Engine, EngineStorage, Func, Live, Object, ObjectId, Patch, PatchId, PatchState, Policy,
    Redirect,
};
use proptest::prelude::*;

const FUNCS: usize = 4;
const TASKS: usize = 3;

/// One patch: the functions it replaces, and whether it is cumulative.
#[derive(Clone, Debug)]
struct PatchDesc {
    covers: Vec<usize>,
    replace: bool,
}

/// The transition left in progress.
#[derive(Clone, Copy, Debug)]
enum Last {
    Enable(usize),
    Disable(usize),
}

/// A return address on a task's stack.
#[derive(Clone, Copy, Debug)]
enum Frame {
    /// Inside original function `f`.
    Orig(usize),
    /// Inside patch `p`'s variant of function `f`.
    Variant(usize, usize),
    /// Somewhere unpatched.
    Elsewhere,
}

impl Frame {
    fn addr(self) -> CodeAddr {
        CodeAddr(match self {
            Frame::Orig(f) => original(f).start().get() + 0x10,
            Frame::Variant(p, f) => variant_code(p, f).start().get() + 0x3f,
            Frame::Elsewhere => 0x5000,
        })
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    patches: Vec<PatchDesc>,
    /// Patches enabled and completed first, in order (already registered ones are skipped).
    setup: Vec<usize>,
    last: Last,
    reverse: bool,
    /// Per task: switched before the reversal, switched after it.
    switched: Vec<(bool, bool)>,
    /// One stack per task, innermost first.
    stacks: Vec<Vec<Frame>>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let patch =
        (proptest::sample::subsequence((0..FUNCS).collect::<Vec<_>>(), 1..=FUNCS), proptest::bool::weighted(0.3))
            .prop_map(|(covers, replace)| PatchDesc { covers, replace });
    proptest::collection::vec(patch, 1..=4).prop_flat_map(|patches| {
        let n = patches.len();
        let frame = prop_oneof![
            (0..FUNCS).prop_map(Frame::Orig),
            (0..n, 0..FUNCS).prop_map(|(p, f)| Frame::Variant(p, f)),
            Just(Frame::Elsewhere),
        ];
        (
            Just(patches),
            proptest::collection::vec(0..n, 0..4),
            prop_oneof![(0..n).prop_map(Last::Enable), (0..n).prop_map(Last::Disable)],
            any::<bool>(),
            proptest::collection::vec(any::<(bool, bool)>(), TASKS),
            proptest::collection::vec(proptest::collection::vec(frame, 0..5), TASKS),
        )
            .prop_map(|(patches, setup, last, reverse, switched, stacks)| Scenario {
                patches,
                setup,
                last,
                reverse,
                switched,
                stacks,
            })
    })
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
    fn code(self, f: usize) -> Option<CodeRange> {
        match self {
            Entry::Variant(p) => Some(variant_code(p, f)),
            Entry::Nop(_) => None,
        }
    }
}

#[derive(Debug, Default)]
struct Reference {
    stacks: [Vec<Entry>; FUNCS],
    registered: Vec<usize>,
    transition: Option<(usize, PatchState)>,
}

impl Reference {
    fn push(&mut self, patches: &[PatchDesc], p: usize) {
        for f in 0..FUNCS {
            if patches[p].covers.contains(&f) {
                self.stacks[f].push(Entry::Variant(p));
            } else if patches[p].replace && !self.stacks[f].is_empty() {
                self.stacks[f].push(Entry::Nop(p));
            }
        }
        self.registered.push(p);
    }

    fn complete(&mut self, patches: &[PatchDesc]) {
        let Some((p, target)) = self.transition.take() else { return };
        if target == PatchState::Patched && patches[p].replace {
            self.registered.retain(|&q| q == p);
            for s in &mut self.stacks {
                s.retain(|e| *e == Entry::Variant(p));
            }
        }
        if target == PatchState::Unpatched {
            self.registered.retain(|&q| q != p);
            for s in &mut self.stacks {
                s.retain(|e| e.patch() != p);
            }
        }
    }

    /// The top entry, and the one below it when the top belongs to the patch in transition.
    fn top_two(&self, f: usize) -> (Option<Entry>, Option<Option<Entry>>) {
        let s = &self.stacks[f];
        let top = s.last().copied();
        let below = match (top, self.transition) {
            (Some(e), Some((p, _))) if e.patch() == p => Some(s.len().checked_sub(2).map(|i| s[i])),
            _ => None,
        };
        (top, below)
    }

    fn to_redirect(code: Option<CodeRange>) -> Redirect {
        code.map_or(Redirect::Original, |c| Redirect::Variant(c.start()))
    }

    /// Per-task model: a task of `state` calls function `f`.
    fn per_task(&self, f: usize, state: PatchState) -> Redirect {
        match self.top_two(f) {
            (None, _) => Redirect::Original,
            (Some(_), Some(below)) if state == PatchState::Unpatched => {
                Self::to_redirect(below.and_then(|e| e.code(f)))
            }
            (Some(top), _) => Self::to_redirect(top.code(f)),
        }
    }

    /// Call-chain model: a call of `f` whose caller is (or is not) in code being switched
    /// away from continues the old chain (or takes the target universe's code).
    fn call_chain(&self, f: usize, caller_is_old: bool) -> Redirect {
        let target = self.transition.map(|(_, t)| t);
        match self.top_two(f) {
            (None, _) => Redirect::Original,
            (Some(top), Some(below)) => {
                let old_chain = match target {
                    Some(PatchState::Unpatched) => !caller_is_old,
                    _ => caller_is_old,
                };
                if old_chain {
                    Self::to_redirect(below.and_then(|e| e.code(f)))
                } else {
                    Self::to_redirect(top.code(f))
                }
            }
            (Some(top), None) => Self::to_redirect(top.code(f)),
        }
    }

    /// The code being switched away from.
    fn away(&self) -> Vec<CodeRange> {
        let Some((p, target)) = self.transition else { return Vec::new() };
        let mut away = Vec::new();
        for (f, s) in self.stacks.iter().enumerate() {
            for (i, e) in s.iter().enumerate() {
                if e.patch() != p {
                    continue;
                }
                away.push(match target {
                    PatchState::Patched => i.checked_sub(1).and_then(|b| s[b].code(f)).unwrap_or(original(f)),
                    _ => e.code(f).unwrap_or(original(f)),
                });
            }
        }
        away
    }
}

/// Builds the engine for `sc` under `policy`, runs the scenario, and checks `check` against
/// the reference. Returns `false` when the scenario is not applicable (then nothing is
/// checked).
fn run(sc: &Scenario, policy: Policy, check: impl Fn(&Live<'_>, &TestBackend, &Reference)) -> bool {
    let funcs: Vec<Vec<Func<'_>>> = sc
        .patches
        .iter()
        .enumerate()
        .map(|(p, d)| d.covers.iter().map(|&f| Func::new("f", original(f), variant_code(p, f))).collect())
        .collect();
    let objects: Vec<[Object<'_>; 1]> =
        funcs.iter().map(|fs| [Object::new(ObjectId::VMLINUX, "vmlinux", fs)]).collect();
    let patches: Vec<Patch<'_>> = sc
        .patches
        .iter()
        .enumerate()
        .map(|(p, d)| {
            let patch = Patch::new(PatchId(p as u32 + 1), "p", &objects[p]);
            if d.replace {
                patch.replacing()
            } else {
                patch
            }
        })
        .collect();
    let storage: Box<EngineStorage<'_, FUNCS, 32>> = Box::default();
    let live = Live::new(&storage, policy);
    let mut engine = Engine::new(&live);
    let b = TestBackend::with_tasks(TASKS as u32);
    let mut reference = Reference::default();

    for &p in &sc.setup {
        if reference.registered.contains(&p) {
            continue;
        }
        engine.enable(&patches[p], &b).unwrap();
        assert!(engine.try_complete(&b, |_| {}).unwrap().is_complete());
        reference.push(&sc.patches, p);
        reference.transition = Some((p, PatchState::Patched));
        reference.complete(&sc.patches);
    }
    match sc.last {
        Last::Enable(p) => {
            if reference.registered.contains(&p) {
                return false;
            }
            engine.enable(&patches[p], &b).unwrap();
            reference.push(&sc.patches, p);
            reference.transition = Some((p, PatchState::Patched));
        }
        Last::Disable(p) => {
            if !reference.registered.contains(&p) {
                return false;
            }
            engine.disable(&patches[p], &b).unwrap();
            reference.transition = Some((p, PatchState::Unpatched));
        }
    }
    for (t, &(before, _)) in b.tasks.iter().zip(&sc.switched) {
        if before {
            live.exit_to_user(t.patch_state());
        }
    }
    if sc.reverse {
        engine.reverse(&b).unwrap();
        let (p, target) = reference.transition.unwrap();
        reference.transition = Some((p, target.opposite()));
        for (t, &(_, after)) in b.tasks.iter().zip(&sc.switched) {
            if after {
                live.exit_to_user(t.patch_state());
            }
        }
    }
    for (t, frames) in b.tasks.iter().zip(&sc.stacks) {
        *t.stack.borrow_mut() = frames.iter().map(|f| f.addr().get()).collect();
    }
    check(&live, &b, &reference);
    true
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every task's call of every function goes where the reference's func stack and the
    /// task's universe say.
    #[test]
    fn per_task_redirect_follows_the_stack_and_the_task(sc in scenario()) {
        run(&sc, Policy::IMPROVED, |live, b, reference| {
            for t in &b.tasks {
                let state = t.patch_state().state();
                assert_ne!(state, PatchState::Idle, "idle during a transition");
                for f in 0..FUNCS {
                    let want = reference.per_task(f, state);
                    let got = match live.slot_at(original(f).start()) {
                        Some(slot) => live.redirect(slot, t.patch_state(), CodeAddr(0x5000)),
                        None => Redirect::Original,
                    };
                    assert_eq!(got, want, "function {f}, {state} task; stacks {:?}", reference.stacks);
                }
            }
        });
    }

    /// The call-chain model: a call from code being switched away from continues the old
    /// chain, any other call takes the target universe's code, in either direction.
    #[test]
    fn call_chain_redirect_follows_the_caller(sc in scenario()) {
        run(&sc, Policy::CALL_CHAIN, |live, b, reference| {
            let away = reference.away();
            let callers = sc.stacks.iter().flatten().copied().chain([Frame::Elsewhere]);
            for caller in callers {
                let old = away.iter().any(|c| c.contains(caller.addr()));
                for f in 0..FUNCS {
                    let want = reference.call_chain(f, old);
                    let got = match live.slot_at(original(f).start()) {
                        Some(slot) => live.redirect(slot, b.tasks[0].patch_state(), caller.addr()),
                        None => Redirect::Original,
                    };
                    assert_eq!(got, want, "function {f}, caller {caller:?} (old: {old}); stacks {:?}", reference.stacks);
                }
            }
        });
    }

    /// The sweep's stack query finds exactly the innermost frame in code being switched away
    /// from, and reports the function and variant it belongs to.
    #[test]
    fn stack_query_finds_the_innermost_away_frame(sc in scenario()) {
        run(&sc, Policy::IMPROVED, |live, b, reference| {
            let away = reference.away();
            for (t, frames) in b.tasks.iter().zip(&sc.stacks) {
                let want = frames.iter().position(|fr| away.iter().any(|c| c.contains(fr.addr())));
                let got = sweep::first_away_frame(live, b, t).unwrap();
                match (want, got) {
                    (None, None) => {}
                    (Some(i), Some(StallReason::OnStack { frame, addr, function, variant, .. })) => {
                        assert_eq!((frame as usize, addr), (i, frames[i].addr()), "stack {frames:?}");
                        let expect = match frames[i] {
                            Frame::Orig(f) => (original(f), None),
                            Frame::Variant(p, f) => (original(f), Some(variant_code(p, f))),
                            Frame::Elsewhere => unreachable!("not patched code"),
                        };
                        assert_eq!((function, variant), expect);
                    }
                    (want, got) => panic!("stack {frames:?}: expected away frame {want:?}, got {got:?}; away {away:?}"),
                }
            }
        });
    }
}
