//! Universes: the global patch state and each task's atomic patch-state word.
//!
//! A task runs either the code of the *unpatched* universe (the func stack below the patch in
//! transition) or of the *patched* one (its top). Between transitions every task is
//! [`PatchState::Idle`]. During a transition a task's word also carries the transition's
//! target, so "pending" (the kernel's `TIF_PATCH_PENDING`) is derived, never stored twice:
//! a task is pending when its state differs from its target. Switching and retargeting are
//! single compare-and-swaps on one word, so a task that switches itself and a reversal racing
//! with it always leave the task in exactly one universe.

use crate::sync::{const_fn, AtomicU32, Ordering};
use core::fmt;

/// A universe as the kernel names it (`KLP_TRANSITION_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PatchState {
    /// No transition is in progress.
    Idle = 0,
    /// The task runs the code below the transitioning patch.
    Unpatched = 1,
    /// The task runs the transitioning patch's code.
    Patched = 2,
}

impl PatchState {
    const fn from_bits(bits: u32) -> PatchState {
        match bits & 3 {
            1 => PatchState::Unpatched,
            2 => PatchState::Patched,
            _ => PatchState::Idle,
        }
    }

    /// The other non-idle state; `Idle` stays `Idle`.
    pub const fn opposite(self) -> PatchState {
        match self {
            PatchState::Idle => PatchState::Idle,
            PatchState::Unpatched => PatchState::Patched,
            PatchState::Patched => PatchState::Unpatched,
        }
    }
}

impl fmt::Display for PatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PatchState::Idle => "idle",
            PatchState::Unpatched => "unpatched",
            PatchState::Patched => "patched",
        })
    }
}

/// A snapshot of a task's word: its universe, the transition's target for it, and the word's
/// generation.
///
/// The generation (the word's upper 28 bits) changes with every engine write that makes a
/// decision taken on an earlier snapshot wrong — [`TaskPatchState::reset`] (transition init
/// and completion) and [`TaskPatchState::clear_pending`] (reversal) — so a switch from a
/// snapshot taken before either fails even when state and target came back to the same
/// values (a check preempted across two reversals, or across the end of one transition and
/// the start of the next, would otherwise switch on a walk made against another transition's
/// code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskWord {
    /// The universe the task runs now.
    pub state: PatchState,
    /// The universe it must reach; equal to `state` when it is not pending.
    pub target: PatchState,
    generation: u32,
}

impl TaskWord {
    /// Whether the task still has to switch.
    #[inline(always)]
    pub const fn pending(self) -> bool {
        self.state as u8 != self.target as u8
    }

    const fn bits(self) -> u32 {
        self.state as u32 | (self.target as u32) << 2 | self.generation << GENERATION_SHIFT
    }

    const fn from_bits(bits: u32) -> TaskWord {
        TaskWord {
            state: PatchState::from_bits(bits),
            target: PatchState::from_bits(bits >> 2),
            generation: bits >> GENERATION_SHIFT,
        }
    }

    /// The same word in the next generation.
    const fn next_generation(self) -> TaskWord {
        TaskWord { generation: self.generation.wrapping_add(1) & (u32::MAX >> GENERATION_SHIFT), ..self }
    }
}

/// Where the generation starts in the word (below: state and target, two bits each).
const GENERATION_SHIFT: u32 = 4;

/// The success ordering of [`TaskPatchState::try_switch`]. A test-only build
/// (`--cfg livepatch_weak_ordering`) weakens it to `Acquire` so the loom models can show that
/// the `Release` half is needed.
#[cfg(not(livepatch_weak_ordering))]
const SWITCH_ORDER: Ordering = Ordering::AcqRel;
#[cfg(livepatch_weak_ordering)]
const SWITCH_ORDER: Ordering = Ordering::Acquire;

/// The per-task patch state: 4 bytes, lock-free.
///
/// Written by the engine (transition start, reversal, completion), by the task itself at its
/// switch points, and by the sweep while the task cannot run.
#[repr(transparent)]
pub struct TaskPatchState(AtomicU32);

impl TaskPatchState {
    const_fn! {
        /// A task outside any transition.
        pub fn new() -> Self {
            Self(AtomicU32::new(0))
        }
    }

    /// Reads the word.
    ///
    /// `order` is `Relaxed` on the redirect path: the engine's transition-flag `Release` store
    /// (see [`crate::redirect`]) orders its earlier writes of this word before the flag, and the
    /// handler reads the flag with `Acquire` before this load.
    #[inline(always)]
    pub fn load(&self, order: Ordering) -> TaskWord {
        TaskWord::from_bits(self.0.load(order))
    }

    /// The universe the task runs.
    #[inline(always)]
    pub fn state(&self) -> PatchState {
        self.load(Ordering::Relaxed).state
    }

    /// Whether the task still has to switch.
    #[inline(always)]
    pub fn pending(&self) -> bool {
        self.load(Ordering::Relaxed).pending()
    }

    /// Puts the task in `state` with nothing pending (transition init and completion), in a
    /// new generation: a switch decided on any earlier snapshot fails.
    ///
    /// A load and a store, not a compare-and-swap: only the engine writes a generation, and
    /// it calls this under its own serialisation; a concurrent switch or fork copy keeps the
    /// generation, so whatever lands between the two, the word ends as `(state, state, g + 1)`
    /// for the generation `g` every earlier snapshot has.
    ///
    /// `Relaxed`: published to handlers by the later `Release` store of the transition flag
    /// (init) or by the grace period that follows clearing it (completion).
    pub fn reset(&self, state: PatchState) {
        let cur = TaskWord::from_bits(self.0.load(Ordering::Relaxed));
        self.0.store(TaskWord { state, target: state, ..cur }.next_generation().bits(), Ordering::Relaxed);
    }

    /// Puts back a word read earlier, generation included: for a simulator that undoes a
    /// switch to replay it later with [`try_switch`](Self::try_switch) (a delayed write). An
    /// engine or a backend has no use for it.
    pub fn restore(&self, word: TaskWord) {
        self.0.store(word.bits(), Ordering::Relaxed);
    }

    /// Makes `target` the universe the task must reach, keeping its current state.
    ///
    /// `Release`: pairs with the `Acquire` of [`try_switch`](Self::try_switch), so a task that
    /// switches itself after seeing the target also sees the func stacks the engine published
    /// before starting the transition.
    pub fn retarget(&self, target: PatchState) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let mut word = TaskWord::from_bits(cur);
            word.target = target;
            match self.0.compare_exchange_weak(cur, word.bits(), Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Switches the task to its target if it is pending and the word is still `seen`.
    ///
    /// Returns the new state on success. Fails (returns `None`) when the task was not pending
    /// or when the word changed since `seen` was read — e.g. a reversal retargeted it — so a
    /// decision made for one direction is never applied to the other.
    ///
    /// `AcqRel` on success. The `Acquire` half pairs with [`retarget`](Self::retarget)'s
    /// `Release`. The `Release` half pairs with the `Acquire` load of the word by whoever next
    /// observes the switch (the sweep's [`try_switch_task`](crate::sweep::try_switch_task), a
    /// completion attempt): everything the task did in its old universe — executing the code
    /// being switched away from — happens-before the engine completes the transition and the
    /// caller releases that code. This is what we rely on where the kernel relies on the full
    /// barrier of the value-returning `test_and_clear_tsk_thread_flag(TIF_PATCH_PENDING)` in
    /// `klp_update_patch_state`: a task that switches itself at exit to user mode or in a
    /// self-check runs outside any read-side section, so no grace period orders its past.
    pub fn try_switch(&self, seen: TaskWord) -> Option<PatchState> {
        if !seen.pending() {
            return None;
        }
        let new = TaskWord { state: seen.target, ..seen };
        self.0.compare_exchange(seen.bits(), new.bits(), SWITCH_ORDER, Ordering::Relaxed).ok().map(|_| seen.target)
    }

    /// Makes the task not pending, keeping its state (the first step of a reversal, the
    /// kernel's clearing of `TIF_PATCH_PENDING`), in a new generation: a switch decided on an
    /// earlier snapshot fails even once the task is retargeted to the same direction again.
    pub fn clear_pending(&self) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let mut word = TaskWord::from_bits(cur).next_generation();
            word.target = word.state;
            match self.0.compare_exchange_weak(cur, word.bits(), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Switches the task to its target whatever its stack holds (a forced transition).
    /// Returns whether it was pending.
    pub fn force_switch(&self) -> bool {
        loop {
            let seen = self.load(Ordering::Relaxed);
            if !seen.pending() {
                return false;
            }
            if self.try_switch(seen).is_some() {
                return true;
            }
        }
    }

    /// Copies `parent`'s word into this (new) task: fork inheritance.
    pub fn inherit(&self, parent: &TaskPatchState) {
        self.0.store(parent.0.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl Default for TaskPatchState {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TaskPatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.load(Ordering::Relaxed), f)
    }
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<TaskPatchState>() <= 8);

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_task_is_idle_and_not_pending() {
        let t = TaskPatchState::new();
        assert_eq!(t.state(), PatchState::Idle);
        assert!(!t.pending());
    }

    #[test]
    fn switching_follows_the_target() {
        let t = TaskPatchState::new();
        t.reset(PatchState::Unpatched);
        assert!(!t.pending());
        t.retarget(PatchState::Patched);
        let seen = t.load(Ordering::Relaxed);
        assert!(seen.pending());
        assert_eq!(t.try_switch(seen), Some(PatchState::Patched));
        assert_eq!(t.state(), PatchState::Patched);
        assert!(!t.pending());
        // A second switch with the stale snapshot fails.
        assert_eq!(t.try_switch(seen), None);
    }

    #[test]
    fn a_reversal_invalidates_a_stale_decision() {
        let t = TaskPatchState::new();
        t.reset(PatchState::Unpatched);
        t.retarget(PatchState::Patched);
        let seen = t.load(Ordering::Relaxed);
        t.retarget(PatchState::Unpatched); // reversal: no longer pending
        assert_eq!(t.try_switch(seen), None);
        assert_eq!(t.state(), PatchState::Unpatched);
        assert!(!t.pending());
    }

    #[test]
    fn a_decision_from_before_two_reversals_fails() {
        let t = TaskPatchState::new();
        t.reset(PatchState::Unpatched);
        t.retarget(PatchState::Patched);
        let seen = t.load(Ordering::Relaxed);
        for target in [PatchState::Unpatched, PatchState::Patched] {
            t.clear_pending();
            t.retarget(target);
        }
        assert_eq!((t.state(), t.pending()), (PatchState::Unpatched, true), "same state and target as `seen`");
        assert_eq!(t.try_switch(seen), None);
        // The next transition starting from the same word: the same.
        t.reset(PatchState::Idle);
        t.reset(PatchState::Unpatched);
        t.retarget(PatchState::Patched);
        assert_eq!(t.try_switch(seen), None);
        assert_eq!(t.try_switch(t.load(Ordering::Relaxed)), Some(PatchState::Patched));
    }

    #[test]
    fn a_restored_word_replays_the_switch_it_undid() {
        // The simulator's delayed write: undo a switch, then replay it from the same snapshot.
        let t = TaskPatchState::new();
        t.reset(PatchState::Unpatched);
        t.retarget(PatchState::Patched);
        let seen = t.load(Ordering::Relaxed);
        assert_eq!(t.try_switch(seen), Some(PatchState::Patched));
        t.restore(seen);
        assert_eq!(t.load(Ordering::Relaxed), seen, "state, target and generation are back");
        assert_eq!((t.state(), t.pending()), (PatchState::Unpatched, true));
        assert_eq!(t.try_switch(seen), Some(PatchState::Patched), "the replay succeeds");
        assert_eq!((t.state(), t.pending()), (PatchState::Patched, false));
    }

    #[test]
    fn each_universe_displays_its_name() {
        extern crate std;
        use std::string::ToString;
        let names = [PatchState::Idle, PatchState::Unpatched, PatchState::Patched].map(|s| s.to_string());
        assert_eq!(names, ["idle", "unpatched", "patched"]);
    }

    #[test]
    fn fork_copies_state_and_pending() {
        let parent = TaskPatchState::new();
        parent.reset(PatchState::Unpatched);
        parent.retarget(PatchState::Patched);
        let child = TaskPatchState::new();
        child.inherit(&parent);
        assert_eq!(child.load(Ordering::Relaxed), parent.load(Ordering::Relaxed));
    }
}
