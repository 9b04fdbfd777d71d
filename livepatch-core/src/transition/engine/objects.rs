//! Late and going objects: the kernel's module notifier paths.

use super::{unpatch_object, Engine};
use crate::backend::Backend;
use crate::backend::Scheduler;
use crate::error::Error;
use crate::ids::ObjectId;
use crate::patch::{self, Object};
use crate::sync::Ordering;
use crate::transition::Event;

impl<'a> Engine<'a> {
    /// A module is loading (the kernel's `klp_module_coming`): patch its functions for every
    /// registered patch that covers it. A failing `pre_patch` refuses the load and undoes what
    /// this call did.
    ///
    /// The backend resolves the object's relocatable functions first
    /// ([`Func::resolve`](crate::Func::resolve)); they are checked here as an enable checks a
    /// patch — every function resolved ([`Error::Unresolved`]), each patch valid with its new
    /// addresses ([`Error::Invalid`]), no conflict with live patched code or between patches
    /// ([`Error::Conflict`]), storage enough — before any callback runs; a refusal changes
    /// nothing.
    pub fn object_coming<B: Backend>(&mut self, object: ObjectId, b: &B) -> Result<(), Error> {
        self.check_coming(object)?;
        let mut failure = None;
        // Whether code of the coming object is being switched away from in the transition.
        let mut away = false;
        let mut i = 0;
        while let Some(patch) = self.nth_patch(i) {
            i += 1;
            let Some(obj) = patch.objects().iter().find(|o| o.id() == object) else {
                continue;
            };
            if obj.is_patched() {
                continue;
            }
            self.emit(Event::Applying(patch.name(), obj.name()));
            if let Err(error) = obj.pre_patch(&self.context(patch, obj)) {
                self.emit(Event::PrePatchFailed(patch.name(), obj.name()));
                self.emit(Event::Refusing(patch.name(), obj.name()));
                failure = Some(Error::Callback { object, error });
                break;
            }
            if let Err(e) = self.patch_object(patch, obj, b) {
                self.emit(Event::ApplyFailed(patch.name(), obj.name(), e));
                obj.post_unpatch(&self.context(patch, obj));
                self.emit(Event::Refusing(patch.name(), obj.name()));
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
                    away = true;
                }
                _ => obj.post_patch(&self.context(patch, obj)),
            }
        }
        if let Some(t) = self.transition.filter(|_| failure.is_none()) {
            // A replace patch has nops while the patches it replaces are registered before it:
            // from its enable until that transition completes, *in either direction* (the
            // kernel allocates them in `klp_add_nops` when the patch is enabled, for every
            // object of the patches it replaces, and `klp_module_coming` patches them whatever
            // the direction). Not after: the disable of a replace patch, even reversed, has
            // none, and a nop there would hide patches enabled after it.
            if t.patch.is_replace() && self.patches.front().get().is_some_and(|p| !core::ptr::eq(p, t.patch)) {
                self.add_nops(t.patch, Some(object));
                away = true;
            }
            // After the nops: when patching, the code below each of them (a replaced patch's
            // variant, which unpatched tasks run) is code being switched away from.
            if away {
                self.mark_away(t.patch, t.target);
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

    /// Checks the functions every registered patch replaces in `object`, which is coming.
    fn check_coming(&self, object: ObjectId) -> Result<(), Error> {
        let coming = || {
            self.patches.iter().flat_map(move |p| {
                p.objects().iter().filter(move |o| o.id() == object && !o.is_patched()).map(move |o| (p, o))
            })
        };
        for (patch, obj) in coming() {
            if obj.funcs().iter().any(|f| f.old().is_none()) {
                return Err(Error::Unresolved(object));
            }
            patch::validate(patch)?;
        }
        self.check_funcs_fit(coming().flat_map(|(_, o)| o.funcs().iter()))
    }

    /// A module is going away (the kernel's `klp_module_going`): revert its functions in every
    /// patch, with `pre_unpatch` (except for the patch in transition) and `post_unpatch`, and
    /// forget the addresses of its relocatable functions.
    pub fn object_going<B: Backend>(&mut self, object: ObjectId, b: &B) {
        let mut i = 0;
        while let Some(patch) = self.nth_patch(i) {
            i += 1;
            let Some(obj) = patch.objects().iter().find(|o| o.id() == object) else {
                continue;
            };
            if !obj.is_patched() {
                obj.post_unpatch(&self.context(patch, obj));
                forget_addresses(obj);
                continue;
            }
            let in_transition = self.transition.is_some_and(|t| core::ptr::eq(t.patch, patch));
            if !in_transition {
                obj.pre_unpatch(&self.context(patch, obj));
            }
            self.emit(Event::Reverting(patch.name(), obj.name()));
            unpatch_object(self.live, obj);
            obj.post_unpatch(&self.context(patch, obj));
            forget_addresses(obj);
        }
        for slot in self.live.slots() {
            if slot.object() == Some(object) && slot.nop.linked.load(Ordering::Relaxed) {
                slot.unlink(&slot.nop);
            }
        }
        self.release_empty_slots(b);
        // A slot whose hook could not be removed stays, its original in the index: the object's
        // code is gone, so a frame in that range is not code being switched away from any more
        // (the kernel's `klp_check_stack` only checks patched objects).
        for slot in self.live.slots() {
            if slot.object() == Some(object) {
                slot.orig_away.store(false, Ordering::Relaxed);
            }
        }
        let _ = self.publish(b);
        b.scheduler().synchronize();
    }
}

/// Unresolves the relocatable functions of an object that is gone (none is patched any more).
fn forget_addresses(obj: &Object<'_>) {
    for f in obj.funcs().iter().filter(|f| f.is_relocatable()) {
        // Cannot fail: the function is relocatable and its object was just unpatched.
        let _ = f.unresolve();
    }
}
