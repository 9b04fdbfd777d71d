//! Enabling a patch: validation, `klp_init_transition`, pushing nodes and hooks, nops,
//! `klp_start_transition`.

use super::{for_all_tasks, unpatch_func, Engine, Transition};
use crate::backend::Error as _;
use crate::backend::{Backend, Scheduler, Task, Tracer};
use crate::error::Error;
use crate::ids::ObjectId;
use crate::patch::{self, Func, Object, Patch};
use crate::state::PatchState;
use crate::sync::Ordering;
use crate::transition::Event;

impl<'a> Engine<'a> {
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
        if let Err(state) = patch.check_states(self.patches.iter()) {
            self.emit(Event::Incompatible(patch.name()));
            return Err(Error::IncompatibleState(state));
        }
        for obj in patch.objects() {
            if b.tracer().object_loaded(obj.id()) && obj.funcs().iter().any(|f| f.old().is_none()) {
                return Err(Error::Unresolved(obj.id()));
            }
        }
        self.check_fits(patch, b)?;
        self.emit(Event::Enabling(patch.name()));

        // Commit point: from here a failure cancels.
        self.patches.push_back(patch);
        self.transition = Some(Transition {
            patch,
            target: PatchState::Patched,
            passes: 0,
            started_ns: b.scheduler().now_ns(),
            reversed: false,
            freeze_blocked: false,
            kicks: super::kick::KickPacer::default(),
        });
        self.init_transition(patch, PatchState::Patched, b);
        for obj in patch.objects() {
            if !b.tracer().object_loaded(obj.id()) {
                continue;
            }
            if let Err(error) = obj.pre_patch(&self.context(patch, obj)) {
                self.emit(Event::PrePatchFailed(patch.name(), obj.name()));
                return Err(self.fail_enable(Error::Callback { object: obj.id(), error }, b));
            }
            if let Err(e) = self.patch_object(patch, obj, b) {
                self.emit(Event::PatchObjectFailed(patch.name(), obj.name()));
                return Err(self.fail_enable(e, b));
            }
        }
        if patch.is_replace() {
            self.add_nops(patch, None);
        }
        if let Err(e) = self.publish(b) {
            return Err(self.fail_enable(e, b));
        }
        self.mark_away(patch, PatchState::Patched);
        patch.enabled.store(true, Ordering::Relaxed);
        self.start_transition(PatchState::Patched, b);
        Ok(())
    }

    /// The error path of `__klp_enable_patch`: report, cancel, hand the error back.
    fn fail_enable<B: Backend>(&mut self, e: Error, b: &B) -> Error {
        if let Some(t) = self.transition {
            self.emit(Event::EnableFailed(t.patch.name()));
        }
        self.cancel(b);
        e
    }

    /// Checks that `patch` can be stacked on the live set and that storage suffices (its
    /// loaded objects' functions, all resolved).
    pub(super) fn check_fits<B: Backend>(&self, patch: &Patch<'a>, b: &B) -> Result<(), Error> {
        let funcs = patch.funcs().filter(|(obj, _)| b.tracer().object_loaded(obj.id())).map(|(_, f)| f);
        self.check_funcs_fit(funcs)
    }

    /// Checks that `funcs` (resolved, valid among themselves) can be stacked on the live set —
    /// an original may be one the set already hooks, exactly; nothing else may overlap — and
    /// that storage suffices for them.
    pub(super) fn check_funcs_fit<'f>(&self, funcs: impl Iterator<Item = &'f Func<'a>> + Clone) -> Result<(), Error>
    where
        'a: 'f,
    {
        let set = self.live.patched_set();
        let mut new_slots = 0usize;
        let mut new_ranges = 0usize;
        for (i, f) in funcs.clone().enumerate() {
            let (Some(old), new) = (f.old(), f.new_code()) else {
                return Err(Error::Conflict(f.new_code()));
            };
            match set.first_overlap(old) {
                Some(hit) if hit.node.is_none() && hit.range == old => {}
                Some(_) => return Err(Error::Conflict(old)),
                // Several patches may stack on a function that is not hooked yet: one slot.
                None if funcs.clone().take(i).any(|g| g.old() == Some(old)) => {}
                None => {
                    new_slots += 1;
                    new_ranges += 1;
                }
            }
            if set.first_overlap(new).is_some() {
                return Err(Error::Conflict(new));
            }
            for g in funcs.clone().take(i) {
                let Some(g_old) = g.old() else { continue };
                if (g_old != old && g_old.overlaps(old)) || g.new_code().overlaps(old) {
                    return Err(Error::Conflict(old));
                }
                if g_old.overlaps(new) || g.new_code().overlaps(new) {
                    return Err(Error::Conflict(new));
                }
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

    /// `klp_init_transition`: every task starts in the universe opposite to the target, then
    /// the patch's nodes are flagged as in transition.
    pub(super) fn init_transition<B: Backend>(&self, patch: &'a Patch<'a>, target: PatchState, b: &B) {
        self.emit(Event::Initializing(patch.name(), target));
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
    pub(super) fn start_transition<B: Backend>(&self, target: PatchState, b: &B) {
        if let Some(t) = self.transition {
            self.emit(Event::Starting(t.patch.name(), target));
        }
        self.live.set_target(target);
        // `Release` in `retarget`: pairs with the `Acquire` of every switch point's load of
        // the task word, publishing func stacks, index, away flags and bounds written before.
        for_all_tasks(b, self.batch(), |task| task.patch_state().retarget(target));
        b.scheduler().schedule_retry(0);
    }

    /// Pushes the object's nodes on their func stacks, claiming slots and installing hooks.
    /// All or nothing.
    pub(super) fn patch_object<B: Backend>(
        &mut self,
        patch: &'a Patch<'a>,
        obj: &'a Object<'a>,
        b: &B,
    ) -> Result<(), Error> {
        for (i, f) in obj.funcs().iter().enumerate() {
            let Some(old) = f.old() else {
                for g in &obj.funcs()[..i] {
                    if let Some(g_old) = g.old() {
                        unpatch_func(self.live, g_old, &g.node);
                    }
                }
                self.release_empty_slots(b);
                return Err(Error::Unresolved(obj.id()));
            };
            let result = match self.slot_for(old, obj.id()) {
                Some((id, slot)) => {
                    f.node.owner.store(patch.id().0, Ordering::Relaxed);
                    slot.push(&f.node);
                    if slot.hooked.load(Ordering::Relaxed) {
                        Ok(())
                    } else {
                        match b.tracer().install(id, old) {
                            Ok(()) => {
                                slot.hooked.store(true, Ordering::Relaxed);
                                Ok(())
                            }
                            Err(e) => {
                                self.emit(Event::HookFailed(patch.name(), f.name(), e.kind()));
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
                    if let Some(g_old) = g.old() {
                        unpatch_func(self.live, g_old, &g.node);
                    }
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
    pub(super) fn add_nops(&self, patch: &'a Patch<'a>, object: Option<ObjectId>) {
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
            let covered = patch.funcs().any(|(_, f)| f.old() == Some(orig));
            if !covered {
                slot.nop.owner.store(patch.id().0, Ordering::Relaxed);
                slot.nop.transition.store(true, Ordering::Relaxed);
                slot.push(&slot.nop);
            }
        }
    }
}
