//! Data changes on the simulated machine, with the oracle on: shadow variables fixing a leak
//! across patch, replace and unpatch (`shadow-leak`, after the kernel's
//! `samples/livepatch/livepatch-shadow-{mod,fix1,fix2}.c`), and system states handed over
//! between cumulative patches (`system-state`, after `test_klp_state*.c`).

use livepatch_core::patch::StateId;
use livepatch_core::{Error, Policy};
use livepatch_mock::machine::code::FnId;
use livepatch_mock::machine::heap::{Allocation, FreedBy};
use livepatch_mock::run::{run, RunResult};
use livepatch_mock::scenario::{self, data, Scenario};

const BOTH: [Policy; 2] = [Policy::LINUX_6_12, Policy::IMPROVED];

fn build(name: &str) -> Scenario {
    scenario::find(name).expect("scenario exists").build_with(None, None, Some(3)).expect("scenario builds")
}

fn outcomes(r: &RunResult) -> Vec<(&str, &str)> {
    r.transitions.iter().map(|t| (t.direction.as_str(), t.outcome.as_str())).collect()
}

fn func(sc: &Scenario, name: &str) -> FnId {
    sc.code.by_name(name).unwrap_or_else(|| panic!("no function {name}"))
}

/// The figures of one `shadow-leak` run, checked against each other.
#[derive(Debug, PartialEq, Eq)]
struct Figures {
    /// Buffers allocated by the original `dummy_alloc` (no shadow: every one leaks).
    old_buffers: usize,
    /// Of those, allocated while fix1's transition was in progress (tasks still in the old
    /// universe).
    old_buffers_in_transition: usize,
    /// Objects the original `dummy_alloc` allocated and a fixed `dummy_free` freed: their
    /// buffers leak all the same (no shadow to free them through).
    old_objects_freed_by_new_code: usize,
    /// Buffers fix1's / fix2's `dummy_alloc` allocated.
    fixed_buffers: usize,
    /// Buffers fix1 attached and fix2's `dummy_free` freed through fix1's shadow variable.
    fix1_buffers_freed_by_fix2: usize,
    /// Buffers fix2's `post_unpatch` freed with `free_all(SV_LEAK)`.
    freed_by_free_all: usize,
    /// Buffers never freed.
    leaked: usize,
}

fn shadow_figures(sc: &Scenario, r: &RunResult) -> Figures {
    let alloc = func(sc, "dummy_alloc");
    let (alloc1, alloc2) = (func(sc, "dummy_alloc.p0"), func(sc, "dummy_alloc.p1"));
    let (free1, free2) = (func(sc, "dummy_free.p0"), func(sc, "dummy_free.p1"));
    let fix1 = &r.transitions[0];
    let (start, end) = (fix1.start_ns, fix1.end_ns.unwrap());
    let h = &r.heap;
    let by = |f: FnId| h.buffers.iter().filter(move |b| b.by == f);
    let freed_by = |b: &Allocation, f: FnId| matches!(b.freed, Some((FreedBy::Code(g), _)) if g == f);
    Figures {
        old_buffers: by(alloc).count(),
        old_buffers_in_transition: by(alloc).filter(|b| b.at_ns >= start).count(),
        old_objects_freed_by_new_code: h
            .objects
            .iter()
            .filter(|o| o.by == alloc && (freed_by(o, free1) || freed_by(o, free2)))
            .count(),
        fixed_buffers: by(alloc1).count() + by(alloc2).count(),
        fix1_buffers_freed_by_fix2: by(alloc1).filter(|b| freed_by(b, free2)).count(),
        freed_by_free_all: h
            .buffers
            .iter()
            .filter(|b| matches!(b.freed, Some((FreedBy::Callback { patch: 1 }, _))))
            .count(),
        leaked: {
            let leaked: Vec<_> = h.leaked().collect();
            // Only buffers the original dummy_alloc allocated, all before fix1 was fully in
            // effect, leak.
            assert!(leaked.iter().all(|b| b.by == alloc && b.at_ns < end), "{leaked:?}");
            leaked.len()
        },
    }
}

#[test]
fn shadow_variables_fix_the_leak_across_patch_replace_and_unpatch() {
    let sc = build("shadow-leak");
    let workers = data::SHADOW_WORKERS as usize;
    let mut figures = Vec::new();
    for p in BOTH {
        let r = run(&sc, p);
        assert!(r.converged, "{}: {:?}", r.model, r.violation);
        assert_eq!(r.violations, 0);
        assert_eq!(outcomes(&r), [("enable", "complete"), ("enable", "complete"), ("disable", "complete")]);
        assert!(r.outcomes.iter().all(|o| o.error.is_none()), "{:?}", r.outcomes);
        let f = shadow_figures(&sc, &r);
        let h = &r.heap;
        let s = &h.stats;

        // Every buffer the original dummy_alloc allocated leaks — also when a fixed
        // dummy_free frees its object (no shadow variable holds it: the kernel sample behaves
        // the same) — and nothing else leaks (checked with the times in `shadow_figures`).
        assert_eq!(f.leaked, f.old_buffers, "{}: {f:?}", r.model);
        assert!(f.old_objects_freed_by_new_code > 0, "{}: {f:?}", r.model);
        for (i, o) in h.objects.iter().enumerate() {
            if o.by == func(&sc, "dummy_alloc") && o.freed.is_some() {
                let b = h.buffers.iter().find(|b| b.object == Some(i)).expect("its buffer");
                assert!(b.freed.is_none(), "an old object's buffer cannot be freed: {b:?}");
            }
        }
        // Every fixed buffer is freed exactly once, through its shadow variable's destructor:
        // by a fixed dummy_free, or by fix2's post_unpatch free_all.
        assert_eq!(s.leak_dtor_calls as usize, f.fixed_buffers);
        assert_eq!(h.buffers.iter().filter(|b| b.freed.is_some()).count(), f.fixed_buffers);
        assert_eq!((s.double_frees, s.shadow_alloc_failures), (0, 0));
        // fix2 keeps working with fix1's shadow variables: it frees their buffers.
        assert!(f.fix1_buffers_freed_by_fix2 > 0, "{}: {f:?}", r.model);
        // The stopped workers own one object each, with both shadow variables: fix2's
        // post_unpatch frees them all (fix1's never runs: it was replaced).
        assert_eq!(f.freed_by_free_all, workers);
        assert_eq!(s.free_all_dtor_calls as usize, 2 * workers);
        let outstanding: Vec<_> = h.objects.iter().filter(|o| o.freed.is_none()).collect();
        assert_eq!(outstanding.len(), workers);
        assert!(outstanding.iter().all(|o| o.by == func(&sc, "dummy_alloc.p1")));
        let fix1 = "livepatch-shadow-fix1 livepatch_shadow_mod";
        let fix2 = "livepatch-shadow-fix2 livepatch_shadow_mod";
        let expected: Vec<String> = [
            format!("pre_patch {fix1}"),
            format!("post_patch {fix1}"),
            format!("pre_patch {fix2}"),
            format!("post_patch {fix2}"),
            format!("pre_unpatch {fix2}"),
            format!("post_unpatch {fix2}"),
            format!("free_all shadow 1: {workers} {fix2}"),
            format!("free_all shadow 2: {workers} {fix2}"),
        ]
        .into();
        assert_eq!(r.callbacks, expected);
        // Every shadow variable was freed and reclaimed after a grace period; every counter
        // shadow variable was freed with a destructor call.
        assert_eq!((h.shadows_live, h.shadows_retired), (0, 0));
        assert_eq!(s.reclaimed, s.shadow_allocs);
        assert!(s.reclaim_graces > 0);
        assert_eq!(s.counter_dtor_calls, s.shadow_allocs - f.fixed_buffers as u64);
        figures.push(f);
    }
    // Linux switches a worker caught inside the old dummy_alloc at the next sweep, a second
    // later, and it leaks on every call until then; the improved policy switches it at its
    // next call of dummy_alloc (handler entry): at most the call it was caught in leaks.
    let (linux, improved) = (&figures[0], &figures[1]);
    assert!(improved.old_buffers_in_transition <= workers, "{improved:?}");
    assert!(linux.old_buffers_in_transition > 10 * improved.old_buffers_in_transition.max(1), "{linux:?}");
}

/// The workers keep running through fix2's disable: a worker still in fix2's universe
/// attaches shadow variables that the original `dummy_free` (once it switched) leaves behind
/// on freed objects — fix2's `post_unpatch` `free_all` frees their buffers. After the
/// disable, the original code leaks again.
#[test]
fn post_unpatch_frees_the_shadow_variables_the_original_code_left_behind() {
    let mut sc = build("shadow-leak");
    for step in &mut sc.script {
        if matches!(step.action, scenario::Action::Kill(_)) {
            step.action = scenario::Action::Nop;
        }
    }
    let alloc = func(&sc, "dummy_alloc");
    let free = func(&sc, "dummy_free");
    for p in BOTH {
        let r = run(&sc, p);
        assert!(r.converged, "{}: {:?}", r.model, r.violation);
        assert_eq!(r.violations, 0);
        assert_eq!(outcomes(&r), [("enable", "complete"), ("enable", "complete"), ("disable", "complete")]);
        let (fix1_end, disable_start) = (r.transitions[0].end_ns.unwrap(), r.transitions[2].start_ns);
        let h = &r.heap;
        assert!(h.leaked().all(|b| b.by == alloc && (b.at_ns < fix1_end || b.at_ns >= disable_start)));
        assert_eq!(h.leaked().count(), h.buffers.iter().filter(|b| b.by == alloc).count());
        assert!(h.leaked().any(|b| b.at_ns >= disable_start), "{}: the original leaks again", r.model);
        // Buffers freed by free_all: of objects still owned, and of objects the original
        // dummy_free freed, leaving their shadow variables behind.
        let by_free_all: Vec<_> =
            h.buffers.iter().filter(|b| matches!(b.freed, Some((FreedBy::Callback { patch: 1 }, _)))).collect();
        let orphans = by_free_all
            .iter()
            .filter(|b| matches!(h.objects[b.object.unwrap()].freed, Some((FreedBy::Code(f), _)) if f == free))
            .count();
        assert!(orphans > 0, "{}: {} freed by free_all", r.model, by_free_all.len());
        assert_eq!((h.shadows_live, h.shadows_retired), (0, 0));
        assert_eq!(h.stats.reclaimed, h.stats.shadow_allocs);
        assert_eq!(h.stats.double_frees, 0);
    }
}

#[test]
fn every_model_keeps_the_shadow_invariants() {
    let sc = build("shadow-leak");
    let alloc = func(&sc, "dummy_alloc");
    for (name, p) in livepatch_mock::MODELS {
        let r = run(&sc, *p);
        assert_eq!(r.violations, 0, "{name}: {:?}", r.violation);
        assert_eq!(r.heap.stats.double_frees, 0, "{name}");
        assert!(r.heap.leaked().all(|b| b.by == alloc), "{name}: only the original dummy_alloc leaks");
        if r.converged {
            assert_eq!((r.heap.shadows_live, r.heap.shadows_retired), (0, 0), "{name}");
        } else {
            // Stop-the-world finds a worker inside dummy_alloc on every try and gives up.
            assert!(r.transitions.iter().any(|t| t.outcome == "gave-up"), "{name}: {:?}", r.transitions);
        }
    }
}

#[test]
fn a_system_state_is_taken_over_and_an_older_version_refused() {
    let sc = build("system-state");
    let refused = Error::IncompatibleState(StateId(data::STATE_ID)).to_string();
    for p in BOTH {
        let r = run(&sc, p);
        assert!(r.converged, "{}: {:?}", r.model, r.violation);
        assert_eq!(r.violations, 0);
        // state-v1 and state-v2 complete; state-v1-again is refused before any callback or
        // transition; the replaced state-v1 cannot be disabled; the machine keeps running and
        // the final disable completes.
        assert_eq!(outcomes(&r), [("enable", "complete"), ("enable", "complete"), ("disable", "complete")]);
        let errors: Vec<Option<&str>> = r.outcomes.iter().map(|o| o.error.as_deref()).collect();
        assert_eq!(errors, [None, None, Some(refused.as_str()), Some("patch 1 is not enabled"), None, None]);
        assert!(r.transitions[2].start_ns > r.outcomes[2].at_ns);
        assert_eq!(
            r.callbacks,
            [
                "pre_patch state-v1 vmlinux",
                "set up state 1 v1 data 1 state-v1 vmlinux",
                "post_patch state-v1 vmlinux",
                "pre_patch state-v2 vmlinux",
                "take over state 1 v1->v2 data 1 state-v2 vmlinux",
                "post_patch state-v2 vmlinux",
                "pre_unpatch state-v2 vmlinux",
                "post_unpatch state-v2 vmlinux",
                "release state 1 v2 data 1 state-v2 vmlinux",
            ]
        );
        assert!(r.machine.hooked_calls > 0);
    }
}
