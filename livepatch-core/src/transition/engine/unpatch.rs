//! Leaving the patched state: disable, reverse, force, and cancelling a failed enable.

use super::{for_all_tasks, Engine, Progress, Transition};
use crate::backend::{Backend, Scheduler, Task};
use crate::error::Error;
use crate::model::Model;
use crate::patch::Patch;
use crate::state::PatchState;
use crate::sweep::PassSummary;
use crate::sync::Ordering;
use crate::transition::Event;

impl<'a> Engine<'a> {
    /// Starts the transition that removes `patch`.
    ///
    /// Refused with no change: another transition ([`Error::Busy`]; to undo the transition in
    /// progress use [`reverse`](Self::reverse)), or a patch that is not enabled here.
    pub fn disable<B: Backend>(&mut self, patch: &'a Patch<'a>, b: &B) -> Result<(), Error> {
        if self.transition.is_some() {
            return Err(Error::Busy);
        }
        if !self.is_registered_here(patch) || !patch.is_enabled() {
            return Err(Error::NotEnabled(patch.id()));
        }
        self.transition = Some(Transition {
            patch,
            target: PatchState::Unpatched,
            passes: 0,
            started_ns: b.scheduler().now_ns(),
            reversed: false,
            freeze_blocked: false,
            kicks: super::kick::KickPacer::default(),
        });
        self.init_transition(patch, PatchState::Unpatched, b);
        for obj in patch.objects() {
            if obj.is_patched() {
                obj.pre_unpatch(&self.context(patch, obj));
            }
        }
        self.mark_away(patch, PatchState::Unpatched);
        patch.enabled.store(false, Ordering::Relaxed);
        self.start_transition(PatchState::Unpatched, b);
        Ok(())
    }

    /// Reverses the transition in progress: every task must return to the universe it started
    /// in, under the same rules. No `pre_unpatch`/`pre_patch` callback runs; completion runs
    /// the post callbacks of the new direction.
    pub fn reverse<B: Backend>(&mut self, b: &B) -> Result<(), Error> {
        let Some(mut t) = self.transition else {
            return Err(Error::NoTransition);
        };
        self.emit(Event::Reversing(t.patch.name(), t.target));
        // 1. Nobody may switch while the direction changes (the kernel clears
        //    TIF_PATCH_PENDING everywhere) ...
        for_all_tasks(b, self.batch(), |task| task.patch_state().clear_pending());
        // 2. ... and switch points that read the old direction must have finished.
        b.scheduler().synchronize();
        // 3. Flip the direction, then let tasks switch again.
        t.target = t.target.opposite();
        t.passes = 0;
        t.kicks = super::kick::KickPacer::default();
        t.reversed = true;
        self.transition = Some(t);
        self.clear_away();
        self.mark_away(t.patch, t.target);
        t.patch.enabled.store(t.target == PatchState::Patched, Ordering::Relaxed);
        if self.live.policy().model == Model::CallChain {
            // The call-chain redirect ignores the task word: a task that never switched may
            // already run the code now being switched away from (a fresh call chain took the
            // new code), so after a reversal every task must be checked again. Found by the
            // mock's release check: without this, a reversed call-chain transition completed
            // at once and freed the variant a sleeping kthread was still in.
            let from = t.target.opposite();
            for_all_tasks(b, self.batch(), |task| task.patch_state().reset(from));
        }
        self.start_transition(t.target, b);
        Ok(())
    }

    /// Switches every task to the target now, whatever its stack holds, and completes.
    ///
    /// Unsafe for consistency by design (the kernel's `force`): every registered patch is
    /// marked [`forced`](Patch::is_forced) and its code must never be released.
    pub fn force<B: Backend>(&mut self, b: &B) -> Result<Progress, Error> {
        let Some(t) = self.transition else {
            return Err(Error::NoTransition);
        };
        self.emit(Event::Forcing(t.patch.name()));
        let mut summary = PassSummary::default();
        for_all_tasks(b, self.batch(), |task| {
            summary.visited += 1;
            if task.patch_state().force_switch() {
                summary.switched += 1;
            }
        });
        for p in self.patches.iter() {
            p.forced.store(true, Ordering::Relaxed);
        }
        self.complete(b);
        Ok(Progress::Complete(summary))
    }

    /// `klp_cancel_transition`: a failed enable, completed as an unpatch nobody switched to.
    pub(super) fn cancel<B: Backend>(&mut self, b: &B) {
        if let Some(mut t) = self.transition {
            self.emit(Event::Canceling(t.patch.name()));
            t.target = PatchState::Unpatched;
            self.transition = Some(t);
            t.patch.enabled.store(false, Ordering::Relaxed);
            self.complete(b);
        }
    }
}
