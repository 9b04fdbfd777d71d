//! Completion attempts (sweep, per-CPU pass, stop-the-world) and `klp_complete_transition`.

use super::kick::KickSet;
use super::{for_all_tasks, skip_exiting, straggler, unpatch_object, wants_freeze, wants_kick, Engine, Progress};
use crate::backend::Error as _;
use crate::backend::{Backend, Scheduler, Task, TaskCursor, TaskFlags, TaskKind, Tracer};
use crate::error::Error;
use crate::ids::SlotId;
use crate::model::{Model, SwitchPoints};
use crate::patch::Patch;
use crate::state::PatchState;
use crate::sweep::{self, PassSummary, StallReason, Straggler, Verdict};
use crate::sync::Ordering;
use crate::transition::Event;

impl<'a> Engine<'a> {
    /// One completion attempt (the kernel's `klp_try_complete_transition`): the per-CPU pass
    /// if enabled, then a sweep over every task in bounded batches, each straggler reported to
    /// `stalls` and kicked when the policy says so. Completes the transition when no task is
    /// pending; otherwise schedules the next attempt.
    pub fn try_complete<B: Backend>(
        &mut self,
        b: &B,
        mut stalls: impl FnMut(&Straggler<'a>),
    ) -> Result<Progress, Error> {
        let Some(mut t) = self.transition else {
            return Err(Error::NoTransition);
        };
        t.passes += 1;
        self.transition = Some(t);
        self.forget_names();
        if self.live.policy().model == Model::StopTheWorld {
            return Ok(self.stop_the_world_attempt(b, stalls));
        }
        let live = self.live;
        let patches = &self.patches;
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

        // Kick on every `n`-th unsuccessful pass, counting from the first retry, backing off
        // while a kick moves nothing (`kick.rs`).
        let kick_due = t.kicks.due(&policy, t.passes);
        let mut kick_set = KickSet::default();
        // The freezer freezes until a frozen task is found on the patched path; from then on
        // its stragglers are kicked instead (a frozen task would sit in the same path).
        let freezing = policy.model == Model::Freezer && !t.freeze_blocked;
        let mut frozen_blocked = false;
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
                        } else if freezing {
                            // The freezer: every pending user task and freezable kthread is
                            // asked to freeze, running or not; unfreezable kthreads are retried.
                            // A frozen task still blocked by a frame of code being switched
                            // away from: the patch touches the freezer/schedule path.
                            if task.flags().contains(TaskFlags::FROZEN) && matches!(reason, StallReason::OnStack { .. })
                            {
                                frozen_blocked = true;
                            }
                            let freeze = kick_due && wants_freeze(task);
                            if freeze {
                                sched.freeze(task);
                            }
                            freeze
                        } else {
                            let wanted = wants_kick(task, reason);
                            if wanted {
                                kick_set.add(task, reason);
                            }
                            let kick = kick_due && wanted;
                            if kick {
                                sched.kick(task);
                            }
                            kick
                        };
                        if kicked {
                            summary.kicked += 1;
                        }
                        stalls(&straggler(patches, live.slots(), task, reason, kicked));
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

        if let Some(tr) = &mut self.transition {
            // Only kick rounds are paced: a freeze round keeps the policy's cadence (its tasks
            // are not added to the set).
            tr.kicks.end_pass(t.passes, kick_set, kick_due && !freezing);
        }
        if summary.remaining == 0 {
            self.complete(b);
            return Ok(Progress::Complete(summary));
        }
        if kick_due {
            self.emit(Event::Signaling(t.patch.name()));
        }
        if freezing && (frozen_blocked || (!t.reversed && t.passes >= policy.stop_attempts)) {
            // "fail (patch affects freezer/schedule path)", or "retry and/or fail" for an
            // unfreezable kthread, bounded: thaw everybody and take every task back. On the
            // way back nothing is given up: frozen tasks are thawed, then kicked.
            sched.thaw_all();
            if !t.reversed {
                self.reverse(b)?;
            }
            if let Some(tr) = &mut self.transition {
                tr.freeze_blocked |= frozen_blocked;
            }
            if !t.reversed {
                return Ok(Progress::GaveUp(summary));
            }
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
    pub(super) fn stop_the_world_attempt<B: Backend>(
        &mut self,
        b: &B,
        mut stalls: impl FnMut(&Straggler<'a>),
    ) -> Progress {
        let Some(t) = self.transition else {
            return Progress::Pending(PassSummary::default());
        };
        let live = self.live;
        let patches = &self.patches;
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
                stalls(&straggler(patches, live.slots(), task, reason, false));
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
    pub(super) fn reverse_silently<B: Backend>(&mut self, b: &B) {
        let Some(mut t) = self.transition else { return };
        for_all_tasks(b, self.batch(), |task| task.patch_state().clear_pending());
        t.target = PatchState::Patched;
        self.transition = Some(t);
        t.patch.enabled.store(true, Ordering::Relaxed);
        self.complete(b);
    }

    /// `klp_complete_transition`.
    pub(super) fn complete<B: Backend>(&mut self, b: &B) {
        let Some(t) = self.transition.take() else {
            return;
        };
        let patch = t.patch;
        let live = self.live;
        self.emit(Event::Completing(patch.name(), t.target));
        if t.target == PatchState::Patched && patch.is_replace() {
            // Retire every replaced patch (no callbacks: only the new patch's run), then the
            // new patch's own nops: the original is what runs where nothing is patched.
            // Only the patches registered *before* it are replaced, as the kernel's
            // `klp_unpatch_replaced_patches` stops at the transition patch: when a disable of
            // an older cumulative patch is reversed, patches enabled after it stay. (Retiring
            // those too unlinked their code with no transition while tasks still ran it —
            // found by the mock's release check.)
            // They stay on the list until the new patch's post-patch callbacks have run (the
            // kernel frees them afterwards, in `klp_free_replaced_patches_async`), so that
            // `prev_state` finds the state a cumulative patch takes over in `post_patch`.
            for old in self.patches.iter() {
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
        if self.live.policy().model == Model::Freezer {
            b.scheduler().thaw_all();
        }
        for obj in patch.objects() {
            let ctx = self.context(patch, obj);
            match t.target {
                PatchState::Patched => obj.post_patch(&ctx),
                _ => obj.post_unpatch(&ctx),
            }
        }
        self.emit(Event::Complete(patch.name(), t.target));
        if t.target == PatchState::Patched && patch.is_replace() {
            // `klp_free_replaced_patches_async`: now the replaced patches leave the list.
            let mut cursor = self.patches.front_mut();
            while let Some(old) = cursor.get() {
                if core::ptr::eq(old, patch) {
                    break;
                }
                cursor.remove();
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

    pub(super) fn discard_nops(&self, patch: &Patch<'a>) {
        for slot in self.live.slots() {
            if slot.nop.linked.load(Ordering::Relaxed) && slot.nop.owner() == patch.id() {
                slot.unlink(&slot.nop);
                // `transition` is cleared by `complete`, after a grace period.
                slot.nop.away.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Removes the hooks of slots whose stacks became empty and frees them.
    pub(super) fn release_empty_slots<B: Backend>(&mut self, b: &B) {
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
}
