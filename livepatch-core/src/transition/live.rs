use super::storage::EngineStorage;
use crate::addr::{CodeAddr, CodeRange};
use crate::backend::{StackWalker, Task};
use crate::func_stack::FuncSlot;
use crate::ids::SlotId;
use crate::model::{Policy, SwitchPoints};
use crate::patch::FuncNode;
use crate::patched_set::{Hit, IndexBuffer, PatchedSet};
use crate::redirect::{self, Redirect};
use crate::state::{PatchState, TaskPatchState};
use crate::sweep::{self, Verdict};
use crate::sync::{const_fn, AtomicU32, AtomicUsize, Ordering};
use core::fmt;

/// The shared read side of an engine: what every CPU reads on its hot paths, and the switch
/// points a backend calls. All methods take `&self` and are lock-free.
pub struct Live<'a> {
    slots: &'a [FuncSlot<'a>],
    index: PatchedSet<'a>,
    policy: Policy,
    /// The transition's target (`Idle`: none in progress).
    target: AtomicU32,
    /// Bounds of the code being switched away from: `[lo, hi)`, empty when none.
    away_lo: AtomicUsize,
    away_hi: AtomicUsize,
    /// The away-block filter: bit `(addr >> AWAY_BLOCK_SHIFT) % AWAY_BITS` is set for every
    /// 1 KiB block that holds code being switched away from. A clear bit proves an address
    /// is not away code; a set bit (or an aliased block) needs the index lookup.
    away_pages: [AtomicUsize; AWAY_WORDS],
    /// The first [`AWAY_LISTED`] ranges of code being switched away from, one by one:
    /// `[start, len]`, `[0, 0]` past the last one marked.
    away_listed: [[AtomicUsize; 2]; AWAY_LISTED],
    /// How many ranges were marked away since the last clear (saturating). Up to
    /// [`AWAY_LISTED`], `away_listed` holds them all and a stack check compares frames with
    /// them directly; beyond, it uses the bounds and the blocks.
    away_count: AtomicUsize,
}

/// Block size of the away filter (1 KiB: on a real kernel's text, where functions average
/// 225 bytes, a frame in an unpatched function seldom shares a block with patched code; the
/// 4 KiB pages it replaced let 40 % of such frames through with 1 000 functions patched, 1 KiB
/// blocks 16 %).
const AWAY_BLOCK_SHIFT: u32 = 10;
/// Words of the away filter: 16 384 bits (2 KiB, kept small because a kernel module may build
/// `Live` on its stack), so 16 MiB of code maps without aliasing (a distribution kernel's core
/// text is about 14 MiB). Loom models get a small filter (every atomic is a modelled object
/// there); the filter only ever rejects, so its size changes what is looked up, never an
/// answer.
#[cfg(not(loom))]
const AWAY_WORDS: usize = 16_384 / usize::BITS as usize;
#[cfg(loom)]
const AWAY_WORDS: usize = 4;
const WORD_BITS: usize = usize::BITS as usize;
const AWAY_BITS: usize = AWAY_WORDS * WORD_BITS;

/// Ranges of code being switched away from that are also kept one by one (32 words of
/// `Live`). Loom models get fewer, as for the blocks.
#[cfg(not(loom))]
const AWAY_LISTED: usize = 16;
#[cfg(loom)]
const AWAY_LISTED: usize = 4;

#[cfg(not(loom))]
const fn new_away_listed() -> [[AtomicUsize; 2]; AWAY_LISTED] {
    [const { [const { AtomicUsize::new(0) }; 2] }; AWAY_LISTED]
}

#[cfg(loom)]
fn new_away_listed() -> [[AtomicUsize; 2]; AWAY_LISTED] {
    core::array::from_fn(|_| [AtomicUsize::new(0), AtomicUsize::new(0)])
}

#[cfg(not(loom))]
const fn new_away_pages() -> [AtomicUsize; AWAY_WORDS] {
    [const { AtomicUsize::new(0) }; AWAY_WORDS]
}

#[cfg(loom)]
fn new_away_pages() -> [AtomicUsize; AWAY_WORDS] {
    core::array::from_fn(|_| AtomicUsize::new(0))
}

/// The two-stage pre-filter a stack check applies to each return address before looking it
/// up: the bounds of the code being switched away from, then the away-block bitmap. Read once
/// per walk (see [`Live::away_filter`]).
#[derive(Clone, Copy)]
pub(crate) struct AwayFilter<'l> {
    lo: usize,
    /// `hi - lo` (0 when no code is being switched away from).
    span: usize,
    pages: &'l [AtomicUsize; AWAY_WORDS],
}

impl AwayFilter<'_> {
    /// Whether `addr` may be in code being switched away from; `false` is definite.
    #[inline(always)]
    pub(crate) fn admits(&self, addr: CodeAddr) -> bool {
        let a = addr.get();
        // One unsigned compare for `lo <= a < hi`: below `lo` wraps above `span`.
        if a.wrapping_sub(self.lo) >= self.span {
            return false;
        }
        let bit = (a >> AWAY_BLOCK_SHIFT) % AWAY_BITS;
        self.pages[bit / WORD_BITS].load(Ordering::Relaxed) & (1 << (bit % WORD_BITS)) != 0
    }
}

/// What a stack check compares each return address with, chosen once per check (per walk, not
/// per frame) from how many ranges are being switched away from. Every variant only ever
/// rejects: an admitted address is still looked up and its away flag read.
#[derive(Clone, Copy)]
pub(crate) enum AwayCheck<'l> {
    /// At most one range, `(start, len)` (`(0, 0)`: none): one unsigned compare per frame.
    One([(usize, usize); 1]),
    /// At most two ranges: two compares per frame.
    Two([(usize, usize); 2]),
    /// At most four ranges: four compares per frame.
    Four([(usize, usize); 4]),
    /// At most [`AWAY_LISTED`] ranges: the bounds and blocks, then the listed ranges one by one.
    Listed(AwayFilter<'l>, &'l [[AtomicUsize; 2]; AWAY_LISTED]),
    /// More: the bounds and blocks.
    Blocks(AwayFilter<'l>),
}

/// Whether `a` is inside one of `ranges` (`(start, len)`): one unsigned compare each, no branch.
#[inline(always)]
pub(crate) fn in_ranges<const N: usize>(ranges: &[(usize, usize); N], a: usize) -> bool {
    ranges.iter().fold(false, |inside, &(lo, len)| inside | (a.wrapping_sub(lo) < len))
}

/// Whether `a` is inside one of the listed ranges.
#[inline]
pub(crate) fn in_listed(listed: &[[AtomicUsize; 2]; AWAY_LISTED], a: usize) -> bool {
    // `Relaxed`: published like the bounds (see `Live::set_away_bounds`).
    listed.iter().any(|[lo, len]| a.wrapping_sub(lo.load(Ordering::Relaxed)) < len.load(Ordering::Relaxed))
}

impl<'a> Live<'a> {
    const_fn! {
        /// The read side over `storage`, with `policy`.
        ///
        /// # Lifetimes
        ///
        /// The storage, the read side, the engine and every patch it will ever hold share one
        /// lifetime `'a`: func stacks link patch descriptors and storage slots to each other,
        /// so each must outlive all the others' use of it. The compiler says "`storage` does
        /// not live long enough … borrowed value does not live long enough" (E0597) or
        /// "… dropped here while still borrowed" when a patch or the storage is declared
        /// *after* the engine (locals drop in reverse order). Two ways that always work:
        ///
        /// * declare, in this order: storage, patches (and their funcs, objects, callbacks,
        ///   states), read side, engine — all in one scope;
        /// * or make the storage, the read side and the patches `static`s (every constructor
        ///   involved is a `const fn`), and keep only the [`Engine`](super::Engine) — the
        ///   single writer — in your own state (a kernel module keeps it under a mutex):
        ///
        /// ```
        /// use livepatch_core::{CodeRange, Engine, EngineStorage, Func, Live, Object, ObjectId, Patch, PatchId, Policy};
        ///
        /// static STORAGE: EngineStorage<'static, 16, 64> = EngineStorage::new();
        /// static LIVE: Live<'static> = Live::new(&STORAGE, Policy::IMPROVED);
        /// const fn r(start: usize) -> CodeRange {
        ///     match CodeRange::new(start, 0x40) { Ok(r) => r, Err(_) => panic!() }
        /// }
        /// static FUNCS: [Func<'static>; 1] = [Func::new("parse", r(0x1000), r(0x9000))];
        /// static OBJS: [Object<'static>; 1] = [Object::new(ObjectId::VMLINUX, "app", &FUNCS)];
        /// static PATCH: Patch<'static> = Patch::new(PatchId(1), "fix-parse", &OBJS);
        ///
        /// let engine = Engine::new(&LIVE); // enable(&PATCH, &backend) needs no other borrow
        /// assert!(engine.transition().is_none() && !PATCH.is_registered());
        /// ```
        pub fn new<const S: usize, const R: usize>(storage: &'a EngineStorage<'a, S, R>, policy: Policy) -> Self {
            Self::from_parts(&storage.slots, storage.index_buffer(0), storage.index_buffer(1), policy)
        }
    }

    const_fn! {
        /// The read side over separately provided slots and the two index buffers.
        pub fn from_parts(
            slots: &'a [FuncSlot<'a>],
            index_a: IndexBuffer<'a>,
            index_b: IndexBuffer<'a>,
            policy: Policy,
        ) -> Self {
            Self {
                slots,
                index: PatchedSet::new(index_a, index_b),
                policy,
                target: AtomicU32::new(PatchState::Idle as u32),
                away_lo: AtomicUsize::new(0),
                away_hi: AtomicUsize::new(0),
                away_pages: new_away_pages(),
                away_listed: new_away_listed(),
                away_count: AtomicUsize::new(0),
            }
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The function slots.
    pub fn slots(&self) -> &'a [FuncSlot<'a>] {
        self.slots
    }

    /// The patched-set index.
    pub fn patched_set(&self) -> &PatchedSet<'a> {
        &self.index
    }

    /// The target of the transition in progress, if any.
    ///
    /// `Acquire`: pairs with the engine's `Release` store when it starts or reverses a
    /// transition.
    pub fn transition_target(&self) -> Option<PatchState> {
        match self.target.load(Ordering::Acquire) {
            1 => Some(PatchState::Unpatched),
            2 => Some(PatchState::Patched),
            _ => None,
        }
    }

    pub(crate) fn set_target(&self, target: PatchState) {
        // `Release`: pairs with `transition_target`'s `Acquire`.
        self.target.store(target as u32, Ordering::Release);
    }

    pub(crate) fn away_bounds(&self) -> (usize, usize) {
        (self.away_lo.load(Ordering::Relaxed), self.away_hi.load(Ordering::Relaxed))
    }

    pub(crate) fn set_away_bounds(&self, lo: usize, hi: usize) {
        // `Relaxed`: published to other CPUs by the `Release` of the task retargeting that
        // follows (readers load the task word with `Acquire` first).
        self.away_lo.store(lo, Ordering::Relaxed);
        self.away_hi.store(hi, Ordering::Relaxed);
    }

    /// Sets the away-filter bits of every block `code` spans (all of them if it spans the whole
    /// filter) and lists `code` if fewer than [`AWAY_LISTED`] ranges are. Only the engine (the
    /// single writer) calls this, so a load and a store suffice.
    ///
    /// `Relaxed`, like the bounds: published by the `Release` of the task retargeting that
    /// follows. The range is stored before the count that covers it; a reader that sees the
    /// count without the range (an object coming during a transition) misses it as it would
    /// miss bounds not yet widened.
    pub(crate) fn mark_away_pages(&self, code: CodeRange) {
        let count = self.away_count.load(Ordering::Relaxed);
        if let Some([lo, len]) = self.away_listed.get(count) {
            lo.store(code.start().get(), Ordering::Relaxed);
            len.store(code.len(), Ordering::Relaxed);
        }
        self.away_count.store(count.saturating_add(1), Ordering::Relaxed);
        let first = code.start().get() >> AWAY_BLOCK_SHIFT;
        let last = (code.end().get() - 1) >> AWAY_BLOCK_SHIFT;
        if last - first >= AWAY_BITS {
            self.away_pages.iter().for_each(|w| w.store(usize::MAX, Ordering::Relaxed));
            return;
        }
        for block in first..=last {
            let bit = block % AWAY_BITS;
            let word = &self.away_pages[bit / WORD_BITS];
            word.store(word.load(Ordering::Relaxed) | 1 << (bit % WORD_BITS), Ordering::Relaxed);
        }
    }

    /// Clears the away filter (no code is being switched away from).
    pub(crate) fn clear_away_pages(&self) {
        self.away_pages.iter().for_each(|w| w.store(0, Ordering::Relaxed));
        self.away_listed.iter().flatten().for_each(|w| w.store(0, Ordering::Relaxed));
        self.away_count.store(0, Ordering::Relaxed);
    }

    /// The pre-filter for the code being switched away from, read once.
    #[inline(always)]
    pub(crate) fn away_filter(&self) -> AwayFilter<'_> {
        let (lo, hi) = self.away_bounds();
        AwayFilter { lo, span: hi.saturating_sub(lo), pages: &self.away_pages }
    }

    /// What a stack check compares frames with, read once per check: the listed ranges while
    /// there are at most four (unused ones are `(0, 0)`, which holds nothing), the listed
    /// ranges behind the bounds and blocks while there are at most [`AWAY_LISTED`], the bounds
    /// and blocks beyond.
    #[inline(always)]
    pub(crate) fn away_check(&self) -> AwayCheck<'_> {
        // `Relaxed`: published like the bounds (see `set_away_bounds`).
        let range = |i: usize| {
            let [lo, len] = &self.away_listed[i];
            (lo.load(Ordering::Relaxed), len.load(Ordering::Relaxed))
        };
        match self.away_count.load(Ordering::Relaxed) {
            0 | 1 => AwayCheck::One([range(0)]),
            2 => AwayCheck::Two([range(0), range(1)]),
            3 | 4 => AwayCheck::Four([range(0), range(1), range(2), range(3)]),
            n if n <= AWAY_LISTED => AwayCheck::Listed(self.away_filter(), &self.away_listed),
            _ => AwayCheck::Blocks(self.away_filter()),
        }
    }

    /// The slot whose original function starts at `entry` (a hook's address-to-slot lookup).
    pub fn slot_at(&self, entry: CodeAddr) -> Option<SlotId> {
        let hit = self.index.lookup(entry)?;
        (hit.node.is_none() && hit.range.start() == entry).then_some(hit.slot())
    }

    /// The code being switched away from that contains `addr`, if any.
    #[inline]
    pub fn away_hit(&self, addr: CodeAddr) -> Option<Hit<'a>> {
        if !self.away_filter().admits(addr) {
            return None;
        }
        self.index.lookup(addr).filter(|hit| hit.is_away(self.slots))
    }

    /// Where a call to the function of `slot` goes, for the task whose state is `task`;
    /// `parent_ip` is the caller's return address (used by the call-chain model only).
    /// An unknown slot runs the original.
    #[inline(always)]
    pub fn redirect(&self, slot: SlotId, task: &TaskPatchState, parent_ip: CodeAddr) -> Redirect {
        self.redirect_current(slot, || task, parent_ip)
    }

    /// [`redirect`](Self::redirect) for the task whose word `current` finds, called only when
    /// the decision needs it (the function is in transition and the model is per-task): the
    /// path of a hook that must look the current task's word up.
    #[inline(always)]
    pub fn redirect_current<'t>(
        &self,
        slot: SlotId,
        current: impl FnOnce() -> &'t TaskPatchState,
        parent_ip: CodeAddr,
    ) -> Redirect {
        let Some(slot) = self.slots.get(slot.0 as usize) else {
            return Redirect::Original;
        };
        self.redirect_slot(slot, current, parent_ip)
    }

    /// [`redirect_current`](Self::redirect_current) for a hook that holds its slot (resolved
    /// when it was installed, as ftrace hands `klp_ftrace_handler` its `ftrace_ops`): no slot
    /// lookup. A backend whose model is fixed at build time and
    /// [redirects per task](crate::model::Model::redirects_per_task) can call
    /// [`redirect::per_task_lazy`] instead and skip the model dispatch too.
    #[inline(always)]
    pub fn redirect_slot<'t>(
        &self,
        slot: &FuncSlot<'a>,
        current: impl FnOnce() -> &'t TaskPatchState,
        parent_ip: CodeAddr,
    ) -> Redirect {
        match redirect::settled(slot) {
            Ok(to) => to,
            Err(top) => self.redirect_in_transition(top, current, parent_ip),
        }
    }

    /// [`redirect_slot`](Self::redirect_slot) for a hook that answered steps 1 and 2 of the
    /// decision itself ([`redirect::settled`]) and found `top` in transition: the engine's
    /// model finishes it. (The Linux module's C handler does this: outside a transition it
    /// never calls Rust.)
    #[inline(always)]
    pub fn redirect_in_transition<'t>(
        &self,
        top: &FuncNode<'a>,
        current: impl FnOnce() -> &'t TaskPatchState,
        parent_ip: CodeAddr,
    ) -> Redirect {
        if self.policy.model.redirects_per_task() {
            redirect::per_task_in_transition(top, current)
        } else {
            redirect::call_chain_in_transition(top, self.transition_target(), || self.away_hit(parent_ip).is_some())
        }
    }

    /// The function-entry hook: first, if the policy has the handler-entry switch, convert the
    /// current task when nothing it is switching away from is on its stack; then
    /// [`redirect`](Self::redirect).
    ///
    /// `task` must be the caller (the current task); `walker` walks its own stack.
    #[inline]
    pub fn on_function_entry<W: StackWalker>(
        &self,
        slot: SlotId,
        task: &W::Task,
        walker: &W,
        parent_ip: CodeAddr,
    ) -> Redirect {
        if self.policy.allows(SwitchPoints::HANDLER_ENTRY) {
            self.self_switch(task, walker);
        }
        self.redirect(slot, task.patch_state(), parent_ip)
    }

    /// The `cond_resched`-like self-check: the current task checks its own stack and switches
    /// if it can. Returns the verdict (`NotPending` also when the policy lacks the point).
    ///
    /// Call it inside a section the backend's [`Scheduler::synchronize`] waits for (in a
    /// kernel: preemption disabled, as for the kernel's `__klp_sched_try_switch()`): a
    /// reversal's grace period is what keeps a check from deciding on one direction's code and
    /// switching in another's. The word's generation makes such a switch fail anyway (DESIGN.md,
    /// "Per-task state"); the section also keeps the backend's own per-task data alive.
    ///
    /// [`Scheduler::synchronize`]: crate::backend::Scheduler::synchronize
    pub fn self_check<W: StackWalker>(&self, task: &W::Task, walker: &W) -> Verdict {
        if !self.policy.allows(SwitchPoints::SELF_CHECK) {
            return Verdict::NotPending;
        }
        self.self_switch(task, walker)
    }

    /// A task-work callback queued by a kick (the way a module reaches exit to user mode).
    ///
    /// Task work does not only run on the way back to user mode: `task_work_run` is also
    /// called in kernel context — before KVM enters a guest (`xfer_to_guest_mode_handle_work`),
    /// in io_uring's waits, by io-wq workers — with kernel frames on the stack. So the callback
    /// checks its own stack reliably and switches only if nothing being switched away from is
    /// on it. Enabled with [`SwitchPoints::EXIT_TO_USER`]; `NotPending` otherwise.
    ///
    /// Like [`self_check`](Self::self_check), call it inside a section the backend's
    /// `Scheduler::synchronize` waits for (preemption disabled in a kernel: the kernel's
    /// `klp_update_patch_state()` runs so).
    pub fn task_work<W: StackWalker>(&self, task: &W::Task, walker: &W) -> Verdict {
        if !self.policy.allows(SwitchPoints::EXIT_TO_USER) {
            return Verdict::NotPending;
        }
        self.self_switch(task, walker)
    }

    fn self_switch<W: StackWalker>(&self, task: &W::Task, walker: &W) -> Verdict {
        // `Acquire`: pairs with `retarget`'s `Release`: the away flags and bounds of this
        // direction were written before the task was retargeted to it.
        let seen = task.patch_state().load(Ordering::Acquire);
        if !seen.pending() {
            return Verdict::NotPending;
        }
        sweep::check_and_switch(self, walker, task, seen)
    }

    /// Exit to user mode: the task holds no kernel frames, so it switches if pending.
    pub fn exit_to_user(&self, task: &TaskPatchState) -> Option<PatchState> {
        self.switch_without_check(task, SwitchPoints::EXIT_TO_USER)
    }

    /// The idle loop of a CPU: its idle task switches if pending.
    pub fn idle(&self, task: &TaskPatchState) -> Option<PatchState> {
        self.switch_without_check(task, SwitchPoints::IDLE)
    }

    /// A kthread at its declared safe point (kGraft's `kgr_task_safe`): no patched frame by
    /// construction, so it switches if pending.
    pub fn kthread_safe_point(&self, task: &TaskPatchState) -> Option<PatchState> {
        self.switch_without_check(task, SwitchPoints::KTHREAD_SAFE_POINT)
    }

    fn switch_without_check(&self, task: &TaskPatchState, point: SwitchPoints) -> Option<PatchState> {
        if !self.policy.allows(point) {
            return None;
        }
        // `Acquire` (in `try_switch`) pairs with `retarget`'s `Release`.
        task.try_switch(task.load(Ordering::Relaxed))
    }

    /// Fork: the child inherits the parent's universe and pending state.
    pub fn fork(&self, parent: &TaskPatchState, child: &TaskPatchState) {
        child.inherit(parent);
    }

    /// Convenience for backends: the per-task redirect for a task object.
    pub fn redirect_task<T: Task>(&self, slot: SlotId, task: &T, parent_ip: CodeAddr) -> Redirect {
        self.redirect(slot, task.patch_state(), parent_ip)
    }
}

impl fmt::Debug for Live<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live")
            .field("policy", &self.policy)
            .field("target", &self.transition_target())
            .field("ranges", &self.index.len())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn away_filter_admits_marked_blocks_within_the_bounds() {
        let live = Live::from_parts(&[], IndexBuffer::EMPTY, IndexBuffer::EMPTY, Policy::IMPROVED);
        let block = |p: usize| CodeAddr(p << AWAY_BLOCK_SHIFT);
        // Spans the end of one block and the start of the next.
        let code = CodeRange::new(0x1_0ff0, 0x20).unwrap();
        let b0 = 0x1_0ff0 >> AWAY_BLOCK_SHIFT;
        assert_eq!(b0 + 1, 0x1_1000 >> AWAY_BLOCK_SHIFT);
        live.set_away_bounds(code.start().get(), code.end().get());
        live.mark_away_pages(code);
        let filter = live.away_filter();
        assert!(filter.admits(CodeAddr(0x1_0ff0)) && filter.admits(CodeAddr(0x1_100f)));
        assert!(!filter.admits(CodeAddr(0x1_1010)), "above the bounds");
        assert!(!filter.admits(CodeAddr(0x1_0fef)), "below the bounds, in a marked block");
        assert!(!filter.admits(CodeAddr(usize::MAX)) && !filter.admits(CodeAddr(0)));
        live.set_away_bounds(0, 0);
        assert!(!live.away_filter().admits(CodeAddr(0)), "no code is being switched away from");

        live.set_away_bounds(0, usize::MAX);
        let filter = live.away_filter();
        assert!(filter.admits(block(b0)) && filter.admits(block(b0 + 1)));
        assert!(!filter.admits(block(b0 + 2)) && !filter.admits(block(b0 - 1)), "unmarked blocks");
        assert!(filter.admits(block(b0 + AWAY_BITS)), "an aliased block is admitted");

        live.clear_away_pages();
        assert!(!live.away_filter().admits(CodeAddr(0x1_0ff0)));
        live.mark_away_pages(CodeRange::new(0x1000, (AWAY_BITS + 1) << AWAY_BLOCK_SHIFT).unwrap());
        assert!((0..AWAY_BITS).all(|p| live.away_filter().admits(block(p))), "a huge range marks every block");
    }

    #[test]
    fn the_away_filter_maps_16_mib_of_code_without_aliasing() {
        // The size the filter is documented with: one bit per 1 KiB block, 16 384 of them, so
        // a marked block aliases only blocks 16 MiB away.
        let live = Live::from_parts(&[], IndexBuffer::EMPTY, IndexBuffer::EMPTY, Policy::IMPROVED);
        live.set_away_bounds(0, usize::MAX);
        let block = |p: usize| CodeAddr(p << AWAY_BLOCK_SHIFT);
        let b0 = 0x400_0000 >> AWAY_BLOCK_SHIFT;
        live.mark_away_pages(CodeRange::new(0x400_0000, 0x40).unwrap());
        let filter = live.away_filter();
        let admitted: Vec<usize> = (b0 - 16_384..=b0 + 16_384).filter(|&p| filter.admits(block(p))).collect();
        let first = &admitted[..admitted.len().min(4)];
        assert!(admitted == [b0 - 16_384, b0, b0 + 16_384], "{} blocks admitted: {first:?}…", admitted.len());
    }

    #[test]
    fn a_range_marks_exactly_the_blocks_it_spans() {
        let live = Live::from_parts(&[], IndexBuffer::EMPTY, IndexBuffer::EMPTY, Policy::IMPROVED);
        live.set_away_bounds(0, usize::MAX);
        let block = |p: usize| CodeAddr(p << AWAY_BLOCK_SHIFT);
        // Two whole blocks, ending exactly where the third starts.
        live.mark_away_pages(CodeRange::new(0x4_0000, 2 << AWAY_BLOCK_SHIFT).unwrap());
        let b0 = 0x4_0000 >> AWAY_BLOCK_SHIFT;
        let admitted: Vec<usize> = (b0 - 2..b0 + 4).filter(|&p| live.away_filter().admits(block(p))).collect();
        assert_eq!(admitted, [b0, b0 + 1]);
    }

    /// Every address `check` admits among `probes`.
    fn admitted(live: &Live<'_>, probes: &[usize]) -> Vec<usize> {
        let admits = |a: usize| match live.away_check() {
            AwayCheck::One(r) => in_ranges(&r, a),
            AwayCheck::Two(r) => in_ranges(&r, a),
            AwayCheck::Four(r) => in_ranges(&r, a),
            AwayCheck::Listed(filter, listed) => filter.admits(CodeAddr(a)) && in_listed(listed, a),
            AwayCheck::Blocks(filter) => filter.admits(CodeAddr(a)),
        };
        probes.iter().copied().filter(|&a| admits(a)).collect()
    }

    #[test]
    fn away_check_admits_every_marked_range_whatever_their_number() {
        let live = Live::from_parts(&[], IndexBuffer::EMPTY, IndexBuffer::EMPTY, Policy::IMPROVED);
        // Ranges 8 KiB apart (each in its own blocks), 0x40 bytes long.
        let range = |i: usize| CodeRange::new(0x10_0000 + i * 0x2000, 0x40).unwrap();
        for n in 0..=AWAY_LISTED + 2 {
            live.clear_away_pages();
            live.set_away_bounds(0, 0);
            let (mut lo, mut hi) = (usize::MAX, 0);
            for i in 0..n {
                // As the engine's `mark_away`: blocks and list, then the bounds.
                live.mark_away_pages(range(i));
                lo = lo.min(range(i).start().get());
                hi = hi.max(range(i).end().get());
            }
            if n > 0 {
                live.set_away_bounds(lo, hi);
            }
            let expected = match n {
                0 | 1 => "One",
                2 => "Two",
                3 | 4 => "Four",
                n if n <= AWAY_LISTED => "Listed",
                _ => "Blocks",
            };
            let tier = match live.away_check() {
                AwayCheck::One(_) => "One",
                AwayCheck::Two(_) => "Two",
                AwayCheck::Four(_) => "Four",
                AwayCheck::Listed(..) => "Listed",
                AwayCheck::Blocks(_) => "Blocks",
            };
            assert_eq!(tier, expected, "{n} ranges");
            // First, last byte and the bytes just outside of every range, marked or not.
            let probes: Vec<usize> = (0..n + 2)
                .flat_map(|i| {
                    [range(i).start().get() - 1, range(i).start().get(), range(i).end().get() - 1, range(i).end().get()]
                })
                .chain([0, usize::MAX])
                .collect();
            let inside: Vec<usize> = (0..n).flat_map(|i| [range(i).start().get(), range(i).end().get() - 1]).collect();
            let admitted = admitted(&live, &probes);
            if tier == "Blocks" {
                // 1 KiB blocks: the byte after a range shares its block.
                assert!(inside.iter().all(|a| admitted.contains(a)), "{n} ranges");
                assert!(admitted.iter().all(|&a| (0..n).any(|i| a.wrapping_sub(range(i).start().get()) <= 0x40)));
            } else {
                // Listed ranges: exactly the marked bytes.
                assert_eq!(admitted, inside, "{n} ranges");
            }
        }
        live.clear_away_pages();
        assert_eq!(admitted(&live, &[0, range(0).start().get()]), [] as [usize; 0], "cleared");
    }
}
