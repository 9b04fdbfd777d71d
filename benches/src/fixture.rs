//! Engines built through the public API: storage sized at run time ([`Live::from_parts`]),
//! patches over the synthetic layout, and helpers to enable and complete them.

use crate::backend::{self, BenchBackend, BenchTask};
use crate::layout;
use crate::leak;
use livepatch_core::func_stack::FuncSlot;
use livepatch_core::model::SwitchPoints;
use livepatch_core::patched_set::{DirectorySlot, IndexBuffer, IndexEntry, WINDOW};
use livepatch_core::transition::Progress;
use livepatch_core::{CodeRange, Engine, Func, Live, Object, ObjectId, Patch, PatchId, Policy};

/// The policy the benches use: per-task model, sweep only (no handler-entry switch, no per-CPU
/// pass, no kicks), 64 tasks per task-list lock hold, the kernel's 100-frame limit.
pub const BENCH_POLICY: Policy = Policy { switch_points: SwitchPoints::SWEEP, signal_every: None, ..Policy::IMPROVED };

/// An engine over leaked storage with its backend.
#[derive(Debug)]
pub struct Fixture {
    /// The read side.
    pub live: &'static Live<'static>,
    /// The writer.
    pub engine: Engine<'static>,
    /// The in-memory backend (its scheduler holds the tasks).
    pub backend: BenchBackend,
}

impl Fixture {
    /// An idle engine with room for `funcs` original functions, each with up to `depth`
    /// variants stacked, over `tasks`.
    pub fn new(funcs: usize, depth: usize, policy: Policy, tasks: Vec<BenchTask>) -> Self {
        let slots: Vec<FuncSlot<'static>> = (0..funcs).map(|_| FuncSlot::new()).collect();
        // Room for the ranges and the index's window sentinels (`PatchedSet::new`).
        let ranges = funcs * (1 + depth) + WINDOW;
        let live = leak(Live::from_parts(
            Box::leak(slots.into_boxed_slice()),
            leaked_index_buffer(ranges),
            leaked_index_buffer(ranges),
            policy,
        ));
        Self { live, engine: Engine::new(live), backend: backend::backend(tasks) }
    }

    /// Enables `patch` (the transition starts; tasks become pending).
    pub fn enable(&mut self, patch: &'static Patch<'static>) {
        self.engine.enable(patch, &self.backend).expect("enable");
    }

    /// Starts disabling `patch`.
    pub fn disable(&mut self, patch: &'static Patch<'static>) {
        self.engine.disable(patch, &self.backend).expect("disable");
    }

    /// Forces the transition in progress to complete.
    pub fn force(&mut self) {
        self.engine.force(&self.backend).expect("transition in progress");
    }

    /// One completion attempt.
    pub fn try_complete(&mut self) -> Progress {
        self.engine.try_complete(&self.backend, |_| {}).expect("transition in progress")
    }

    /// Completes the transition in progress; every task's stack must allow it.
    pub fn complete(&mut self) {
        assert!(self.try_complete().is_complete(), "the fixture's tasks must be able to switch");
    }

    /// Enables `patch` and completes the transition.
    pub fn apply(&mut self, patch: &'static Patch<'static>) {
        self.enable(patch);
        self.complete();
    }
}

/// A patch of `pairs` (original, variant) in the core kernel, leaked.
pub fn patch(id: u32, pairs: &[(CodeRange, CodeRange)], replace: bool) -> &'static Patch<'static> {
    let funcs: Vec<Func<'static>> = pairs.iter().map(|&(old, new)| Func::new("f", old, new)).collect();
    let funcs: &'static [Func<'static>] = Box::leak(funcs.into_boxed_slice());
    let objects: &'static [Object<'static>] = Box::leak(Box::new([Object::new(ObjectId::VMLINUX, "vmlinux", funcs)]));
    let p = Patch::new(PatchId(id), "bench", objects);
    leak(if replace { p.replacing() } else { p })
}

/// A patch replacing `n` functions spread over the text, with variants of `generation`.
pub fn spread_patch(id: u32, generation: usize, n: usize) -> &'static Patch<'static> {
    let pairs: Vec<_> = (0..n).map(|i| (layout::original(i, n), layout::variant(generation, i))).collect();
    patch(id, &pairs, false)
}

/// An index buffer of `len` entries and as many directory slot pairs, leaked (the index is
/// static in the kernel and the mock alike, and its published version points into it).
pub fn leaked_index_buffer(len: usize) -> IndexBuffer<'static> {
    IndexBuffer {
        entries: (0..len).map(|_| IndexEntry::new()).collect::<Vec<_>>().leak(),
        directory: (0..len).map(|_| [DirectorySlot::new(), DirectorySlot::new()]).collect::<Vec<_>>().leak(),
    }
}
