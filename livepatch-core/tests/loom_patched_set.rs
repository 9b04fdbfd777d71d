//! Loom model 4 of issue 4: publication of patched-set versions to lock-free readers, and reuse
//! of a version's buffer only after a grace period.
//!
//! The engine (one thread) enables two patches one after the other, then disables the first,
//! completing each transition; every enable, disable and completion publishes a new index version
//! into the other of the two buffers, so buffers are rewritten while a reader may still hold the
//! version in them — unless the grace period (`LSched::synchronize`, which waits for announced
//! read-side sections) runs first. A reader thread runs two read-side sections, each taking a full
//! snapshot of the published version and doing point lookups; every snapshot must be exactly one of
//! the versions the engine published (sorted, no torn entries), and lookups in the same section
//! must agree with the snapshot.
//!
//! Bounds: `LOOM_MAX_PREEMPTIONS=4` (ci/loom.sh); two threads; two read-side sections of two
//! lookups each; six publications; `max_branches` = `loom_support::MAX_BRANCHES`.
//!
//! The second model, once per lookup mode (`PatchedSet::with_mode`): a writer publishes one
//! three-range version into a fresh index forced into that mode while a reader looks up each
//! range; every lookup sees the empty version or the whole new one (its length, mode,
//! entries and directory, all behind the one published pointer). Bounds: two threads, one
//! publication, three lookups.
#![cfg(loom)]

mod loom_support;

use livepatch_core::patched_set::{DirectorySlot, IndexBuffer, IndexEntry, LookupMode, PatchedSet};
use livepatch_core::{CodeAddr, CodeRange, Engine};
use loom_support::{complete, variant, Fixture, PatchKind, ORIGINAL};

#[test]
fn loom_patched_set_publication_and_grace() {
    loom_support::model("loom_patched_set_publication_and_grace", || {
        let fx = Fixture::new(1, &[PatchKind::default(), PatchKind::default()]);
        let mut engine = Engine::new(fx.live);
        let (live, sched, b) = (fx.live, fx.sched, fx.b);
        let (p0, p1) = (fx.patches[0], fx.patches[1]);
        let writer = loom::thread::spawn(move || {
            engine.enable(p0, b).unwrap();
            complete(&mut engine, b);
            engine.enable(p1, b).unwrap();
            complete(&mut engine, b);
            // Removing the lower variant moves the higher one down an entry: a reader still
            // holding the rewritten buffer would see a torn version.
            engine.disable(p0, b).unwrap();
            complete(&mut engine, b);
        });

        let f = CodeRange::new(ORIGINAL, 0x40).unwrap();
        let versions: [&[CodeRange]; 4] = [&[], &[f, variant(0)], &[f, variant(0), variant(1)], &[f, variant(1)]];
        for _ in 0..2 {
            // Let the writer run any number of steps first (not a preemption).
            loom::thread::yield_now();
            sched.read(|| {
                let set = live.patched_set();
                let snapshot: Vec<CodeRange> = set.iter().map(|h| h.range).collect();
                assert!(versions.contains(&snapshot.as_slice()), "torn or unknown version {snapshot:?}");
                for addr in [variant(0).start(), CodeAddr(ORIGINAL + 0x3f)] {
                    if let Some(hit) = set.lookup(addr) {
                        assert!(hit.range.contains(addr));
                        assert!(versions[2].contains(&hit.range));
                    }
                }
            });
        }
        writer.join().unwrap();
        fx.free();
    });
}

#[test]
fn loom_patched_set_each_mode_publishes_whole_versions() {
    for mode in [LookupMode::Directory, LookupMode::Search] {
        loom_support::model("loom_patched_set_each_mode_publishes_whole_versions", move || {
            let fx = Fixture::new(1, &[PatchKind::default(), PatchKind::default()]);
            // Single-threaded set-up: both patches enabled, so the slots hold the original
            // and two variants.
            let mut engine = Engine::new(fx.live);
            for p in [fx.patches[0], fx.patches[1]] {
                engine.enable(p, fx.b).unwrap();
                complete(&mut engine, fx.b);
            }
            drop(engine);
            let buffer = || IndexBuffer {
                entries: Vec::from_iter((0..3).map(|_| IndexEntry::new())).leak(),
                directory: Vec::from_iter((0..3).map(|_| [DirectorySlot::new(), DirectorySlot::new()])).leak(),
            };
            let set: &'static PatchedSet<'static> =
                Box::leak(Box::new(PatchedSet::with_mode(buffer(), buffer(), mode)));
            let slots = fx.live.slots();
            let writer = loom::thread::spawn(move || set.rebuild(slots, || {}).unwrap());

            let ranges = [CodeRange::new(ORIGINAL, 0x40).unwrap(), variant(0), variant(1)];
            let mut seen = 0;
            for range in ranges {
                // Let the writer run any number of steps first (not a preemption).
                loom::thread::yield_now();
                let snapshot: Vec<CodeRange> = set.iter().map(|h| h.range).collect();
                assert!(snapshot.is_empty() || snapshot == ranges, "{mode:?}: torn version {snapshot:?}");
                let addr = CodeAddr(range.end().get() - 1);
                match set.lookup(addr) {
                    // Once a lookup saw the version, every later one does.
                    None => assert_eq!(seen, 0, "{mode:?}: {addr:?} missed after a hit"),
                    Some(hit) => {
                        assert_eq!(hit.range, range, "{mode:?}: {addr:?}");
                        seen += 1;
                    }
                }
            }
            writer.join().unwrap();
            assert_eq!(set.layout().mode, mode);
            fx.free();
        });
    }
}
