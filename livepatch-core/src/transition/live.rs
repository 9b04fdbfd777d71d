use super::storage::EngineStorage;
use crate::addr::{CodeAddr, CodeRange};
use crate::backend::{StackWalker, Task};
use crate::func_stack::FuncSlot;
use crate::ids::SlotId;
use crate::model::{Policy, SwitchPoints};
use crate::patched_set::{Hit, IndexEntry, PatchedSet};
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
            Self::from_parts(&storage.slots, &storage.index[0], &storage.index[1], policy)
        }
    }

    const_fn! {
        /// The read side over separately provided slots and the two index buffers.
        pub fn from_parts(
            slots: &'a [FuncSlot<'a>],
            index_a: &'a [IndexEntry<'a>],
            index_b: &'a [IndexEntry<'a>],
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
    /// filter). Only the engine (the single writer) calls this, so a load and a store suffice.
    ///
    /// `Relaxed`, like the bounds: published by the `Release` of the task retargeting that
    /// follows.
    pub(crate) fn mark_away_pages(&self, code: CodeRange) {
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
    }

    /// The pre-filter for the code being switched away from, read once.
    #[inline(always)]
    pub(crate) fn away_filter(&self) -> AwayFilter<'_> {
        let (lo, hi) = self.away_bounds();
        AwayFilter { lo, span: hi.saturating_sub(lo), pages: &self.away_pages }
    }

    /// The slot whose original function starts at `entry` (a hook's address-to-slot lookup).
    pub fn slot_at(&self, entry: CodeAddr) -> Option<SlotId> {
        let hit = self.index.lookup(entry)?;
        (hit.node.is_none() && hit.range.start() == entry).then_some(hit.slot)
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
        if self.policy.model.redirects_per_task() {
            redirect::per_task_lazy(slot, current)
        } else {
            redirect::call_chain_towards(slot, self.transition_target(), || self.away_hit(parent_ip).is_some())
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
    use super::*;

    #[test]
    fn away_filter_admits_marked_blocks_within_the_bounds() {
        let live = Live::from_parts(&[], &[], &[], Policy::IMPROVED);
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
}
