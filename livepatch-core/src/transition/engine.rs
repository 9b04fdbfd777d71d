use super::live::Live;
use crate::addr::CodeRange;
use crate::backend::Error as _;
use crate::backend::{Backend, Scheduler, Task, TaskCursor, TaskFlags, TaskKind, Tracer};
use crate::error::Error;
use crate::func_stack::FuncSlot;
use crate::ids::{ObjectId, PatchId, SlotId};
use crate::model::{Model, SwitchPoints};
use crate::patch::{self, CallbackContext, FuncNode, Object, Patch, PatchAdapter};
use crate::state::PatchState;
use crate::sweep::{self, PassSummary, StallReason, Straggler, Verdict};
use crate::sync::Ordering;
use core::fmt;
use intrusive_collections::LinkedList;

/// What a completion attempt achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every task switched; the transition is complete and the engine is idle.
    Complete(PassSummary),
    /// Some tasks have not switched; a retry was scheduled.
    Pending(PassSummary),
    /// Stop-the-world only: every attempt failed, so the transition was cancelled and every
    /// task stays where it started.
    GaveUp(PassSummary),
}

impl Progress {
    /// The attempt's summary.
    pub fn summary(&self) -> &PassSummary {
        match self {
            Progress::Complete(s) | Progress::Pending(s) | Progress::GaveUp(s) => s,
        }
    }

    /// Whether the transition is over.
    pub fn is_done(&self) -> bool {
        !matches!(self, Progress::Pending(_))
    }
}

/// The transition in progress, as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransitionInfo {
    /// The patch in transition.
    pub patch: PatchId,
    /// The universe every task must reach.
    pub target: PatchState,
    /// Completion attempts so far in this direction.
    pub passes: u32,
    /// When it started (scheduler clock).
    pub started_ns: u64,
    /// Whether it has been reversed at least once.
    pub reversed: bool,
}

#[derive(Clone, Copy)]
struct Transition<'a> {
    patch: &'a Patch<'a>,
    target: PatchState,
    passes: u32,
    started_ns: u64,
    reversed: bool,
}

/// The transition engine: the single writer. See the [module documentation](super).
pub struct Engine<'a> {
    live: &'a Live<'a>,
    patches: LinkedList<PatchAdapter<'a>>,
    transition: Option<Transition<'a>>,
    hook_errors: u32,
}

impl<'a> Engine<'a> {
    /// An idle engine writing to `live`.
    pub fn new(live: &'a Live<'a>) -> Self {
        Self { live, patches: LinkedList::new(PatchAdapter::new()), transition: None, hook_errors: 0 }
    }

    /// The read side.
    pub fn live(&self) -> &'a Live<'a> {
        self.live
    }

    /// The transition in progress.
    pub fn transition(&self) -> Option<TransitionInfo> {
        self.transition.map(|t| TransitionInfo {
            patch: t.patch.id(),
            target: t.target,
            passes: t.passes,
            started_ns: t.started_ns,
            reversed: t.reversed,
        })
    }

    /// The registered patches (enabled, or in transition), oldest first.
    pub fn patches(&self) -> impl Iterator<Item = &Patch<'a>> {
        self.patches.iter()
    }

    /// Hook removals the backend refused (the slot then stays hooked, running the original).
    pub fn hook_errors(&self) -> u32 {
        self.hook_errors
    }

    fn batch(&self) -> usize {
        self.live.policy().batch
    }

    /// The `i`-th registered patch.
    fn nth_patch(&self, i: usize) -> Option<&'a Patch<'a>> {
        let mut cursor = self.patches.front();
        for _ in 0..i {
            cursor.move_next();
        }
        cursor.clone_pointer()
    }

    fn context<'c>(&'c self, patch: &'a Patch<'a>, obj: &Object<'a>) -> CallbackContext<'c, 'a> {
        CallbackContext { patch, object: obj.id(), installed: &self.patches }
    }

    fn is_registered_here(&self, patch: &Patch<'a>) -> bool {
        self.patches.iter().any(|p| core::ptr::eq(p, patch))
    }

    // ----------------------------------------------------------------------------------------
    // enable

    /// Registers `patch` and starts the transition to it. Completion happens in
    /// [`try_complete`](Self::try_complete) (a retry is scheduled at once).
    ///
    /// Refused with no change: another transition ([`Error::Busy`]), an already registered
    /// patch, an invalid descriptor, ranges that conflict with live code, no free slot or
    /// index space. Cancelled with everything undone: a failing `pre_patch` callback or hook
    /// installation.
    pub fn enable<B: Backend>(&mut self, patch: &'a Patch<'a>, b: &B) -> Result<(), Error> {
        if self.transition.is_some() {
            return Err(Error::Busy);
        }
        if patch.is_registered() {
            return Err(Error::AlreadyEnabled(patch.id()));
        }
        patch::validate(patch)?;
        patch.check_states(self.patches.iter()).map_err(Error::IncompatibleState)?;
        self.check_fits(patch, b)?;

        // Commit point: from here a failure cancels.
        self.patches.push_back(patch);
        self.transition = Some(Transition {
            patch,
            target: PatchState::Patched,
            passes: 0,
            started_ns: b.scheduler().now_ns(),
            reversed: false,
        });
        self.init_transition(patch, PatchState::Patched, b);
        for obj in patch.objects() {
            if !b.tracer().object_loaded(obj.id()) {
                continue;
            }
            if let Err(error) = obj.pre_patch(&self.context(patch, obj)) {
                self.cancel(b);
                return Err(Error::Callback { object: obj.id(), error });
            }
            if let Err(e) = self.patch_object(patch, obj, b) {
                self.cancel(b);
                return Err(e);
            }
        }
        if patch.is_replace() {
            self.add_nops(patch, None);
        }
        if let Err(e) = self.publish(b) {
            self.cancel(b);
            return Err(e);
        }
        self.mark_away(patch, PatchState::Patched);
        patch.enabled.store(true, Ordering::Relaxed);
        self.start_transition(PatchState::Patched, b);
        Ok(())
    }

    /// Checks that `patch` can be stacked on the live set and that storage suffices.
    fn check_fits<B: Backend>(&self, patch: &Patch<'a>, b: &B) -> Result<(), Error> {
        let set = self.live.patched_set();
        let mut new_slots = 0usize;
        let mut new_ranges = 0usize;
        for (obj, f) in patch.funcs() {
            if !b.tracer().object_loaded(obj.id()) {
                continue;
            }
            match set.first_overlap(f.old()) {
                Some(hit) if hit.node.is_none() && hit.range == f.old() => {}
                Some(_) => return Err(Error::Conflict(f.old())),
                None => {
                    new_slots += 1;
                    new_ranges += 1;
                }
            }
            if set.first_overlap(f.new_code()).is_some() {
                return Err(Error::Conflict(f.new_code()));
            }
            new_ranges += 1;
        }
        let free = self.live.slots().iter().filter(|s| s.is_free() && !s.hooked.load(Ordering::Relaxed)).count();
        if new_slots > free {
            return Err(Error::NoSlot);
        }
        let capacity = set.capacity();
        if set.len() + new_ranges > capacity {
            return Err(Error::Index(crate::patched_set::IndexError::Full { capacity }));
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // disable, reverse, force

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
        // 1. Nobody may switch while the direction changes (the kernel clears
        //    TIF_PATCH_PENDING everywhere) ...
        for_all_tasks(b, self.batch(), |task| task.patch_state().clear_pending());
        // 2. ... and switch points that read the old direction must have finished.
        b.scheduler().synchronize();
        // 3. Flip the direction, then let tasks switch again.
        t.target = t.target.opposite();
        t.passes = 0;
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
        if self.transition.is_none() {
            return Err(Error::NoTransition);
        }
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

    // ----------------------------------------------------------------------------------------
    // completion attempts

    /// One completion attempt (the kernel's `klp_try_complete_transition`): the per-CPU pass
    /// if enabled, then a sweep over every task in bounded batches, each straggler reported to
    /// `stalls` and kicked when the policy says so. Completes the transition when no task is
    /// pending; otherwise schedules the next attempt.
    pub fn try_complete<B: Backend>(&mut self, b: &B, mut stalls: impl FnMut(&Straggler)) -> Result<Progress, Error> {
        let Some(mut t) = self.transition else {
            return Err(Error::NoTransition);
        };
        t.passes += 1;
        self.transition = Some(t);
        if self.live.policy().model == Model::StopTheWorld {
            return Ok(self.stop_the_world_attempt(b, stalls));
        }
        let live = self.live;
        let policy = *live.policy();
        let sched = b.scheduler();
        let mut summary = PassSummary { pass: t.passes, ..PassSummary::default() };

        if policy.allows(SwitchPoints::PER_CPU_PASS) {
            sched.for_each_cpu(|cpu| {
                sched.for_each_task_on_cpu(cpu, |task| {
                    // `Acquire`: pairs with `retarget`'s `Release` (the away set of this
                    // direction is visible), as in `sweep::try_switch_task`.
                    let seen = task.patch_state().load(Ordering::Acquire);
                    if !seen.pending() || task.is_running() || skip_exiting(&policy, task) {
                        return;
                    }
                    summary.walks += 1;
                    if let Verdict::Switched(_) = sweep::check_and_switch(live, b.walker(), task, seen) {
                        summary.switched += 1;
                        summary.switched_per_cpu += 1;
                    }
                })
            });
        }

        // Kick on every `n`-th unsuccessful pass, counting from the first retry.
        let kick_due = policy.signal_every.is_some_and(|n| n > 0 && t.passes > 1 && (t.passes - 1) % n == 0);
        let mut cursor = TaskCursor::default();
        loop {
            let begin = sched.now_ns();
            let next = sched.for_each_task(cursor, policy.batch.max(1), |task| {
                summary.visited += 1;
                if skip_exiting(&policy, task) {
                    if task.patch_state().pending() {
                        summary.exiting_skipped += 1;
                    }
                    return;
                }
                let verdict = sweep::try_switch_task(live, sched, b.walker(), task);
                summary.walks += u32::from(verdict.walked());
                match verdict {
                    Verdict::NotPending => {}
                    Verdict::Switched(_) => summary.switched += 1,
                    Verdict::Blocked(reason) => {
                        summary.count(reason);
                        // A pending idle task is sent through its idle loop on every pass,
                        // signal pass or not: Linux's `klp_try_complete_transition` calls
                        // `wake_up_if_idle()` for each idle-task straggler (an idle CPU may
                        // otherwise never iterate its loop again).
                        let idle = matches!(task.kind(), TaskKind::Idle(_));
                        let kicked = if idle {
                            sched.kick(task);
                            true
                        } else if policy.model == Model::Freezer {
                            // The freezer: every pending user task and freezable kthread is
                            // asked to freeze, running or not; unfreezable kthreads are retried.
                            let freeze = kick_due && wants_freeze(task);
                            if freeze {
                                sched.freeze(task);
                            }
                            freeze
                        } else {
                            let kick = kick_due && wants_kick(task, reason);
                            if kick {
                                sched.kick(task);
                            }
                            kick
                        };
                        if kicked {
                            summary.kicked += 1;
                        }
                        stalls(&Straggler { task: task.id(), kind: task.kind(), flags: task.flags(), reason, kicked });
                    }
                }
            });
            summary.batches += 1;
            summary.max_batch_ns = summary.max_batch_ns.max(sched.now_ns().saturating_sub(begin));
            match next {
                Some(c) => cursor = c,
                None => break,
            }
        }

        if summary.remaining == 0 {
            self.complete(b);
            return Ok(Progress::Complete(summary));
        }
        if policy.force_after.is_some_and(|m| t.passes >= m) {
            let forced = self.force(b)?;
            summary.switched += forced.summary().switched;
            return Ok(Progress::Complete(summary));
        }
        sched.schedule_retry(policy.retry_delay_ns);
        Ok(Progress::Pending(summary))
    }

    /// Stop-the-world: with every CPU stopped, check every task; switch all of them only if
    /// every stack is free of the code being switched away from.
    fn stop_the_world_attempt<B: Backend>(&mut self, b: &B, mut stalls: impl FnMut(&Straggler)) -> Progress {
        let Some(t) = self.transition else {
            return Progress::Pending(PassSummary::default());
        };
        let live = self.live;
        let policy = *live.policy();
        let sched = b.scheduler();
        let mut summary = PassSummary { pass: t.passes, ..PassSummary::default() };
        let begin = sched.now_ns();
        let all_clean = sched.stop_all(|| {
            let mut clean = true;
            for_all_tasks(b, self.batch(), |task| {
                summary.visited += 1;
                if !task.patch_state().pending() || skip_exiting(&policy, task) {
                    return;
                }
                summary.walks += 1;
                let reason = match sweep::first_away_frame(live, b.walker(), task) {
                    Ok(None) => return,
                    Ok(Some(reason)) => reason,
                    Err(crate::backend::WalkError::TooDeep) => StallReason::TooDeep,
                    Err(crate::backend::WalkError::Backend(e)) => StallReason::Unreliable(e.kind()),
                };
                clean = false;
                summary.count(reason);
                stalls(&Straggler { task: task.id(), kind: task.kind(), flags: task.flags(), reason, kicked: false });
            });
            if clean {
                for_all_tasks(b, self.batch(), |task| {
                    if task.patch_state().force_switch() {
                        summary.switched += 1;
                    }
                });
            }
            clean
        });
        summary.pause_ns = sched.now_ns().saturating_sub(begin);
        summary.max_batch_ns = summary.pause_ns;
        summary.batches = 1;
        if all_clean {
            self.complete(b);
            return Progress::Complete(summary);
        }
        if t.passes >= policy.stop_attempts {
            // No task switched: completing towards the start universe undoes everything.
            if t.target == PatchState::Patched {
                self.cancel(b);
            } else {
                self.reverse_silently(b);
            }
            return Progress::GaveUp(summary);
        }
        sched.schedule_retry(policy.retry_delay_ns);
        Progress::Pending(summary)
    }

    /// Gives up a stop-the-world disable: nobody switched, so the patch stays enabled.
    fn reverse_silently<B: Backend>(&mut self, b: &B) {
        let Some(mut t) = self.transition else { return };
        for_all_tasks(b, self.batch(), |task| task.patch_state().clear_pending());
        t.target = PatchState::Patched;
        self.transition = Some(t);
        t.patch.enabled.store(true, Ordering::Relaxed);
        self.complete(b);
    }

    // ----------------------------------------------------------------------------------------
    // late and going objects

    /// A module is loading (the kernel's `klp_module_coming`): patch its functions for every
    /// registered patch that covers it. A failing `pre_patch` refuses the load and undoes what
    /// this call did.
    pub fn object_coming<B: Backend>(&mut self, object: ObjectId, b: &B) -> Result<(), Error> {
        let mut failure = None;
        let mut i = 0;
        while let Some(patch) = self.nth_patch(i) {
            i += 1;
            let Some(obj) = patch.objects().iter().find(|o| o.id() == object) else {
                continue;
            };
            if obj.is_patched() {
                continue;
            }
            if let Err(error) = obj.pre_patch(&self.context(patch, obj)) {
                failure = Some(Error::Callback { object, error });
                break;
            }
            if let Err(e) = self.patch_object(patch, obj, b) {
                obj.post_unpatch(&self.context(patch, obj));
                failure = Some(e);
                break;
            }
            match self.transition {
                Some(t) if core::ptr::eq(t.patch, patch) => {
                    for f in obj.funcs() {
                        // `Release`: pairs with the handler's `Acquire` of the flag, as in
                        // `init_transition` (the task states it will read are already set).
                        f.node.transition.store(true, Ordering::Release);
                    }
                    self.mark_away(patch, t.target);
                }
                _ => obj.post_patch(&self.context(patch, obj)),
            }
        }
        if let Some(t) = self.transition {
            if t.patch.is_replace() && t.target == PatchState::Patched {
                self.add_nops(t.patch, Some(object));
            }
        }
        if failure.is_none() {
            if let Err(e) = self.publish(b) {
                failure = Some(e);
            }
        }
        match failure {
            None => Ok(()),
            Some(e) => {
                self.object_going(object, b);
                Err(e)
            }
        }
    }

    /// A module is going away (the kernel's `klp_module_going`): revert its functions in every
    /// patch, with `pre_unpatch` (except for the patch in transition) and `post_unpatch`.
    pub fn object_going<B: Backend>(&mut self, object: ObjectId, b: &B) {
        let mut i = 0;
        while let Some(patch) = self.nth_patch(i) {
            i += 1;
            let Some(obj) = patch.objects().iter().find(|o| o.id() == object) else {
                continue;
            };
            if !obj.is_patched() {
                obj.post_unpatch(&self.context(patch, obj));
                continue;
            }
            let in_transition = self.transition.is_some_and(|t| core::ptr::eq(t.patch, patch));
            if !in_transition {
                obj.pre_unpatch(&self.context(patch, obj));
            }
            unpatch_object(self.live, obj);
            obj.post_unpatch(&self.context(patch, obj));
        }
        for slot in self.live.slots() {
            if slot.object() == Some(object) && slot.nop.linked.load(Ordering::Relaxed) {
                slot.unlink(&slot.nop);
            }
        }
        self.release_empty_slots(b);
        let _ = self.publish(b);
        b.scheduler().synchronize();
    }

    // ----------------------------------------------------------------------------------------
    // the steps, after the kernel's transition.c / patch.c

    /// `klp_init_transition`: every task starts in the universe opposite to the target, then
    /// the patch's nodes are flagged as in transition.
    fn init_transition<B: Backend>(&self, patch: &'a Patch<'a>, target: PatchState, b: &B) {
        let initial = target.opposite();
        for_all_tasks(b, self.batch(), |task| task.patch_state().reset(initial));
        // `Release` (each flag): pairs with the handler's `Acquire` load of the flag, which
        // then reads the task state written above (the kernel's smp_wmb/smp_rmb pair).
        for (_, f) in patch.funcs() {
            f.node.transition.store(true, Ordering::Release);
        }
        for slot in self.live.slots() {
            if slot.nop.linked.load(Ordering::Relaxed) && slot.nop.owner() == patch.id() {
                slot.nop.transition.store(true, Ordering::Release);
            }
        }
    }

    /// `klp_start_transition`: publish the target, then make every task pending.
    fn start_transition<B: Backend>(&self, target: PatchState, b: &B) {
        self.live.set_target(target);
        // `Release` in `retarget`: pairs with the `Acquire` of every switch point's load of
        // the task word, publishing func stacks, index, away flags and bounds written before.
        for_all_tasks(b, self.batch(), |task| task.patch_state().retarget(target));
        b.scheduler().schedule_retry(0);
    }

    /// `klp_cancel_transition`: a failed enable, completed as an unpatch nobody switched to.
    fn cancel<B: Backend>(&mut self, b: &B) {
        if let Some(mut t) = self.transition {
            t.target = PatchState::Unpatched;
            self.transition = Some(t);
            t.patch.enabled.store(false, Ordering::Relaxed);
            self.complete(b);
        }
    }

    /// `klp_complete_transition`.
    fn complete<B: Backend>(&mut self, b: &B) {
        let Some(t) = self.transition.take() else {
            return;
        };
        let patch = t.patch;
        let live = self.live;
        if t.target == PatchState::Patched && patch.is_replace() {
            // Retire every replaced patch (no callbacks: only the new patch's run), then the
            // new patch's own nops: the original is what runs where nothing is patched.
            // Only the patches registered *before* it are replaced, as the kernel's
            // `klp_unpatch_replaced_patches` stops at the transition patch: when a disable of
            // an older cumulative patch is reversed, patches enabled after it stay. (Retiring
            // those too unlinked their code with no transition while tasks still ran it —
            // found by the mock's release check.)
            let mut cursor = self.patches.front_mut();
            while let Some(old) = cursor.get() {
                if core::ptr::eq(old, patch) {
                    break;
                }
                for obj in old.objects() {
                    if obj.is_patched() {
                        unpatch_object(live, obj);
                    }
                    obj.callbacks_enabled.store(false, Ordering::Relaxed);
                }
                old.enabled.store(false, Ordering::Relaxed);
                cursor.remove();
            }
            self.discard_nops(patch);
        }
        if t.target == PatchState::Unpatched {
            for obj in patch.objects() {
                if obj.is_patched() {
                    unpatch_object(live, obj);
                }
            }
            self.discard_nops(patch);
            // The kernel's first `klp_synchronize_transition` in `klp_complete_transition`: a
            // handler that read one of the unlinked nodes as the top before the unlink must be
            // done before the node's `transition` flag is cleared, or it would send an
            // unpatched task to the removed variant (or, for a nop, to the original).
            b.scheduler().synchronize();
        }
        self.release_empty_slots(b);
        // Cannot fail: the new version only has fewer ranges than the published one.
        let _ = self.publish(b);
        // `Release` (each flag): pairs with the handler's `Acquire` load of the flag; a handler
        // that sees it clear also sees the func stacks and index published above.
        for (_, f) in patch.funcs() {
            f.node.transition.store(false, Ordering::Release);
        }
        for slot in live.slots() {
            if slot.nop.owner() == patch.id() {
                // `Release`: as above, for the nops this patch pushed.
                slot.nop.transition.store(false, Ordering::Release);
            }
        }
        self.clear_away();
        // One grace period: no handler still uses an unlinked node, still reads the old index
        // version, or is between reading a transition flag and reading its task's state.
        b.scheduler().synchronize();
        for_all_tasks(b, self.batch(), |task| task.patch_state().reset(PatchState::Idle));
        self.live.set_target(PatchState::Idle);
        if live.policy().model == Model::Freezer {
            b.scheduler().thaw_all();
        }
        for obj in patch.objects() {
            let ctx = self.context(patch, obj);
            match t.target {
                PatchState::Patched => obj.post_patch(&ctx),
                _ => obj.post_unpatch(&ctx),
            }
        }
        if t.target == PatchState::Unpatched {
            patch.enabled.store(false, Ordering::Relaxed);
            let mut cursor = self.patches.front_mut();
            while let Some(p) = cursor.get() {
                if core::ptr::eq(p, patch) {
                    cursor.remove();
                    break;
                }
                cursor.move_next();
            }
        }
    }

    /// Pushes the object's nodes on their func stacks, claiming slots and installing hooks.
    /// All or nothing.
    fn patch_object<B: Backend>(&mut self, patch: &'a Patch<'a>, obj: &'a Object<'a>, b: &B) -> Result<(), Error> {
        for (i, f) in obj.funcs().iter().enumerate() {
            let result = match self.slot_for(f.old(), obj.id()) {
                Some((id, slot)) => {
                    f.node.owner.store(patch.id().0, Ordering::Relaxed);
                    slot.push(&f.node);
                    if slot.hooked.load(Ordering::Relaxed) {
                        Ok(())
                    } else {
                        match b.tracer().install(id, f.old()) {
                            Ok(()) => {
                                slot.hooked.store(true, Ordering::Relaxed);
                                Ok(())
                            }
                            Err(e) => {
                                slot.unlink(&f.node);
                                if slot.is_empty() {
                                    slot.release();
                                }
                                Err(Error::Backend(e.kind()))
                            }
                        }
                    }
                }
                None => Err(Error::NoSlot),
            };
            if let Err(e) = result {
                for g in &obj.funcs()[..i] {
                    unpatch_func(self.live, g.old(), &g.node);
                }
                self.release_empty_slots(b);
                return Err(e);
            }
        }
        obj.patched.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Atomic replace: a nop on every stacked function the replacing patch does not cover
    /// (only those of `object`, for a late module).
    fn add_nops(&self, patch: &'a Patch<'a>, object: Option<ObjectId>) {
        for slot in self.live.slots() {
            let Some(orig) = slot.original() else {
                continue;
            };
            if slot.is_empty() || slot.nop.linked.load(Ordering::Relaxed) {
                continue;
            }
            if object.is_some_and(|o| slot.object() != Some(o)) {
                continue;
            }
            let covered = patch.funcs().any(|(_, f)| f.old() == orig);
            if !covered {
                slot.nop.owner.store(patch.id().0, Ordering::Relaxed);
                slot.nop.transition.store(true, Ordering::Relaxed);
                slot.push(&slot.nop);
            }
        }
    }

    fn discard_nops(&self, patch: &Patch<'a>) {
        for slot in self.live.slots() {
            if slot.nop.linked.load(Ordering::Relaxed) && slot.nop.owner() == patch.id() {
                slot.unlink(&slot.nop);
                // `transition` is cleared by `complete`, after a grace period.
                slot.nop.away.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Marks the code being switched away from, per func of `patch` (and its nops): when
    /// patching, whatever is below the patch's node; when unpatching, the node itself. Sets
    /// the bounds and the page bits used as a pre-filter.
    fn mark_away(&self, patch: &Patch<'a>, target: PatchState) {
        let (mut lo, mut hi) = self.live.away_bounds();
        if lo >= hi {
            (lo, hi) = (usize::MAX, 0);
        }
        let mut mark = |slot: &FuncSlot<'a>, node: Option<&FuncNode<'a>>| {
            let code = match node.and_then(|n| n.code) {
                Some(code) => {
                    if let Some(n) = node {
                        n.away.store(true, Ordering::Relaxed);
                    }
                    code
                }
                None => {
                    slot.orig_away.store(true, Ordering::Relaxed);
                    match slot.original() {
                        Some(orig) => orig,
                        None => return,
                    }
                }
            };
            lo = lo.min(code.start().get());
            hi = hi.max(code.end().get());
            self.live.mark_away_pages(code);
        };
        let mut visit = |slot: &'a FuncSlot<'a>, node: &'a FuncNode<'a>| match target {
            PatchState::Patched => mark(slot, slot.below(node)),
            _ => mark(slot, Some(node)),
        };
        for (_, f) in patch.funcs() {
            if f.node.linked.load(Ordering::Relaxed) {
                if let Some((_, slot)) = self.find_slot(f.old()) {
                    visit(slot, &f.node);
                }
            }
        }
        for slot in self.live.slots() {
            if slot.nop.linked.load(Ordering::Relaxed) && slot.nop.owner() == patch.id() {
                visit(slot, &slot.nop);
            }
        }
        if lo < hi {
            self.live.set_away_bounds(lo, hi);
        }
    }

    fn clear_away(&self) {
        for slot in self.live.slots() {
            slot.orig_away.store(false, Ordering::Relaxed);
            for node in slot.iter() {
                node.away.store(false, Ordering::Relaxed);
            }
        }
        self.live.set_away_bounds(0, 0);
        self.live.clear_away_pages();
    }

    fn find_slot(&self, old: CodeRange) -> Option<(SlotId, &'a FuncSlot<'a>)> {
        find_slot(self.live, old)
    }

    fn slot_for(&self, old: CodeRange, object: ObjectId) -> Option<(SlotId, &'a FuncSlot<'a>)> {
        if let Some(found) = self.find_slot(old) {
            return Some(found);
        }
        let (i, slot) =
            self.live.slots().iter().enumerate().find(|(_, s)| s.is_free() && !s.hooked.load(Ordering::Relaxed))?;
        slot.claim(old, object);
        Some((SlotId(i as u32), slot))
    }

    /// Removes the hooks of slots whose stacks became empty and frees them.
    fn release_empty_slots<B: Backend>(&mut self, b: &B) {
        for (i, slot) in self.live.slots().iter().enumerate() {
            let Some(orig) = slot.original() else {
                continue;
            };
            if !slot.is_empty() {
                continue;
            }
            if slot.hooked.load(Ordering::Relaxed) {
                match b.tracer().remove(SlotId(i as u32), orig) {
                    Ok(()) => slot.hooked.store(false, Ordering::Relaxed),
                    Err(_) => {
                        self.hook_errors += 1;
                        continue;
                    }
                }
            }
            slot.release();
        }
    }

    fn publish<B: Backend>(&self, b: &B) -> Result<(), Error> {
        self.live.patched_set().rebuild(self.live.slots(), || b.scheduler().synchronize())?;
        Ok(())
    }
}

fn find_slot<'a>(live: &'a Live<'a>, old: CodeRange) -> Option<(SlotId, &'a FuncSlot<'a>)> {
    let slots = live.slots();
    // The index knows every published slot; slots claimed since the last publication are
    // found by a scan.
    if let Some(hit) = live.patched_set().lookup(old.start()) {
        if let Some(slot) = slots.get(hit.slot.0 as usize) {
            if hit.node.is_none() && hit.range == old && slot.original() == Some(old) {
                return Some((hit.slot, slot));
            }
        }
    }
    slots.iter().enumerate().find(|(_, s)| s.original() == Some(old)).map(|(i, s)| (SlotId(i as u32), s))
}

fn unpatch_object<'a>(live: &'a Live<'a>, obj: &Object<'a>) {
    for f in obj.funcs() {
        unpatch_func(live, f.old(), &f.node);
    }
    obj.patched.store(false, Ordering::Relaxed);
}

fn unpatch_func<'a>(live: &'a Live<'a>, old: CodeRange, node: &FuncNode<'a>) {
    if let Some((_, slot)) = find_slot(live, old) {
        slot.unlink(node);
    }
    // The `transition` flag stays: a handler may still hold this node (it read the top before
    // the unlink) and must keep consulting its task's universe. `complete` clears it after a
    // grace period.
    node.away.store(false, Ordering::Relaxed);
}

fn skip_exiting<T: Task>(policy: &crate::model::Policy, task: &T) -> bool {
    !policy.visit_exiting && task.flags().contains(TaskFlags::EXITING)
}

/// Whether a straggler is worth kicking: user tasks get a fake signal, kthreads and idle
/// CPUs a wake-up; a running task or one that ignores signals is left alone.
fn wants_kick<T: Task>(task: &T, reason: StallReason) -> bool {
    if reason == StallReason::Running && task.kind() != TaskKind::User {
        return false;
    }
    !task.flags().contains(TaskFlags::IGNORES_SIGNALS)
}

/// Whether the freezer model asks a straggler to freeze: user tasks and freezable kthreads.
fn wants_freeze<T: Task>(task: &T) -> bool {
    match task.kind() {
        TaskKind::User => true,
        TaskKind::Kthread => task.flags().contains(TaskFlags::FREEZABLE),
        TaskKind::Idle(_) => false,
    }
}

/// Visits every task, at most `batch` per task-list lock hold.
fn for_all_tasks<B: Backend>(b: &B, batch: usize, mut f: impl FnMut(&B::Task)) {
    let sched = b.scheduler();
    let mut cursor = TaskCursor::default();
    while let Some(next) = sched.for_each_task(cursor, batch.max(1), &mut f) {
        cursor = next;
    }
}

impl fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("transition", &self.transition())
            .field("patches", &self.patches.iter().count())
            .finish()
    }
}
