//! Loom model 4 of issue 4: publication of patched-set versions to lock-free readers, and reuse
//! of a version's buffer only after a grace period.
//!
//! The engine (one thread) enables two patches one after the other, then disables the first,
//! completing each transition; every enable, disable and completion publishes a new index version into the other of the two buffers, so
//! buffers are rewritten while a reader may still hold the version in them — unless the
//! grace period (`LSched::synchronize`, which waits for announced read-side sections) runs
//! first. A reader thread runs two read-side sections, each taking a full snapshot of the
//! published version and doing point lookups; every snapshot must be exactly one of the
//! versions the engine published (sorted, no torn entries), and lookups in the same section
//! must agree with the snapshot.
//!
//! Bounds: `LOOM_MAX_PREEMPTIONS=4` (ci/loom.sh); two threads; two read-side sections of two
//! lookups each; six publications; `max_branches` = `loom_support::MAX_BRANCHES`.
#![cfg(loom)]

mod loom_support;

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
