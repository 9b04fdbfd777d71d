//! Patch descriptors — [`Patch`] ⊃ [`Object`] ⊃ [`Func`] — and their validation.
//!
//! Like the kernel's `klp_patch`/`klp_object`/`klp_func`, a descriptor carries both what its
//! author declares and the little runtime state the engine keeps for it (its node in a func
//! stack, its membership in the engine's patch list). Descriptors can therefore be `static`
//! and the engine never allocates.

use crate::addr::CodeRange;
use crate::ids::{ObjectId, PatchId};
use crate::sync::{const_fn, AtomicBool, AtomicRef, AtomicU32, AtomicUsize, Ordering};
use core::fmt;
use intrusive_collections::linked_list::AtomicLink;
use intrusive_collections::{intrusive_adapter, LinkedList};

/// A node of a func stack: one variant of an original function, or a nop (run the original).
///
/// The engine links nodes newest-first per original function; the redirect handler reads the
/// top node without a lock (see [`crate::redirect`]).
///
/// One cache line, hot fields first: the handler reads `transition`, `entry` and (for an
/// unpatched task) `next`, all in the first 24 bytes.
#[repr(C, align(64))]
pub struct FuncNode<'a> {
    /// Set while the node's patch is in transition: the handler must consult the task.
    pub(crate) transition: AtomicBool,
    /// This node's code is being switched away from in the current transition.
    pub(crate) away: AtomicBool,
    /// Whether the node is on a func stack.
    pub(crate) linked: AtomicBool,
    /// The patch the node belongs to (meaningful while linked; nops are owned by the slot).
    pub(crate) owner: AtomicU32,
    /// The variant's entry address; 0 for a nop. What the handler jumps to.
    pub(crate) entry: usize,
    /// The node below this one, or `None` when the original function is below.
    pub(crate) next: AtomicRef<'a, FuncNode<'a>>,
    /// The variant's code; `None` for a nop (atomic replace: "back to the original").
    pub(crate) code: Option<CodeRange>,
}

impl<'a> FuncNode<'a> {
    const_fn! {
        pub(crate) fn new(code: Option<CodeRange>) -> Self {
            Self {
                transition: AtomicBool::new(false),
                away: AtomicBool::new(false),
                linked: AtomicBool::new(false),
                owner: AtomicU32::new(0),
                entry: match code {
                    Some(c) => c.start().get(),
                    None => 0,
                },
                next: AtomicRef::none(),
                code,
            }
        }
    }

    /// The variant's code, or `None` for a nop.
    pub fn code(&self) -> Option<CodeRange> {
        self.code
    }

    /// Whether this is a nop node.
    pub fn is_nop(&self) -> bool {
        self.code.is_none()
    }

    /// Whether the node's patch is in transition: the flag the redirect handler reads to
    /// decide whether to consult the task's universe. It stays set on a node unlinked by a
    /// completing transition until a grace period has passed.
    pub fn in_transition(&self) -> bool {
        // `Acquire`: pairs with the engine's `Release` stores of the flag.
        self.transition.load(Ordering::Acquire)
    }

    /// The patch this node belongs to.
    pub fn owner(&self) -> PatchId {
        PatchId(self.owner.load(Ordering::Relaxed))
    }
}

impl fmt::Debug for FuncNode<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FuncNode")
            .field("code", &self.code)
            .field("transition", &self.transition.load(Ordering::Relaxed))
            .field("linked", &self.linked.load(Ordering::Relaxed))
            .finish()
    }
}

/// One replaced function: the original's code range and the replacement's.
///
/// The original's range is either fixed when the descriptor is built ([`Func::new`]: code
/// whose address is known, e.g. the core kernel's) or **relocatable** ([`Func::relocatable`]):
/// unknown until the backend finds the function in its loaded object — the kernel's
/// `klp_find_object_symbol` at `klp_init_object_loaded`, when the patch is enabled or when the
/// module comes later — and forgotten again when the object goes, since a module loaded again
/// sits elsewhere.
///
/// [`resolve`](Func::resolve) and [`unresolve`](Func::unresolve) are serialised with the
/// engine by the caller (the same lock every [`Engine`](crate::Engine) call holds); they are
/// refused while the function is patched.
pub struct Func<'a> {
    name: &'a str,
    /// The original's start; meaningful while `old_len` is non-zero.
    old_start: AtomicUsize,
    /// The original's length; 0 while a relocatable function is unresolved.
    old_len: AtomicUsize,
    relocatable: bool,
    new: CodeRange,
    pub(crate) node: FuncNode<'a>,
}

/// Why [`Func::resolve`] or [`Func::unresolve`] refused; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveError {
    /// The function's range was fixed at construction ([`Func::new`]).
    Fixed,
    /// The function is on its func stack: its range is in use.
    Patched,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResolveError::Fixed => "the function's address is fixed",
            ResolveError::Patched => "the function is patched",
        })
    }
}

impl core::error::Error for ResolveError {}

impl<'a> Func<'a> {
    const_fn! {
        /// Replace the function at `old` by the code at `new`. `name` is for reports.
        pub fn new(name: &'a str, old: CodeRange, new: CodeRange) -> Self {
            Self {
                name,
                old_start: AtomicUsize::new(old.start().get()),
                old_len: AtomicUsize::new(old.len()),
                relocatable: false,
                new,
                node: FuncNode::new(Some(new)),
            }
        }
    }

    const_fn! {
        /// Replace the function `name`, whose address the backend resolves when its object is
        /// loaded ([`resolve`](Self::resolve)), by the code at `new`.
        pub fn relocatable(name: &'a str, new: CodeRange) -> Self {
            Self {
                name,
                old_start: AtomicUsize::new(0),
                old_len: AtomicUsize::new(0),
                relocatable: true,
                new,
                node: FuncNode::new(Some(new)),
            }
        }
    }

    /// The function's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The original function's code; `None` while a relocatable function is unresolved.
    pub fn old(&self) -> Option<CodeRange> {
        // `Acquire`: pairs with `resolve`'s `Release` store of the length, so the start read
        // next is the one stored with it.
        let len = self.old_len.load(Ordering::Acquire);
        if len == 0 {
            return None;
        }
        CodeRange::new(self.old_start.load(Ordering::Relaxed), len).ok()
    }

    /// Whether the original's range is resolved by the backend rather than fixed.
    pub fn is_relocatable(&self) -> bool {
        self.relocatable
    }

    /// Sets a relocatable function's original range (its object was found loaded). Refused
    /// for a fixed function and while the function is patched.
    pub fn resolve(&self, old: CodeRange) -> Result<(), ResolveError> {
        self.check_mutable()?;
        self.old_len.store(0, Ordering::Relaxed);
        self.old_start.store(old.start().get(), Ordering::Relaxed);
        // `Release`: pairs with `old()`'s `Acquire`.
        self.old_len.store(old.len(), Ordering::Release);
        Ok(())
    }

    /// Forgets a relocatable function's original range (its object went away). Refused for a
    /// fixed function and while the function is patched.
    pub fn unresolve(&self) -> Result<(), ResolveError> {
        self.check_mutable()?;
        self.old_len.store(0, Ordering::Release);
        Ok(())
    }

    fn check_mutable(&self) -> Result<(), ResolveError> {
        if !self.relocatable {
            return Err(ResolveError::Fixed);
        }
        if self.is_patched() {
            return Err(ResolveError::Patched);
        }
        Ok(())
    }

    /// The replacement's code.
    pub fn new_code(&self) -> CodeRange {
        self.new
    }

    /// Whether the replacement is on its func stack (enabled or in transition).
    pub fn is_patched(&self) -> bool {
        self.node.linked.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Func<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Func")
            .field("name", &self.name)
            .field("old", &self.old())
            .field("new", &self.node.code)
            .finish()
    }
}

/// An error a callback returns; the code is the backend's (a negative errno in a kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallbackError(pub i32);

impl fmt::Display for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "callback failed with code {}", self.0)
    }
}

impl core::error::Error for CallbackError {}

/// What a callback is told: the patch, the object, and the system states of the patch and of
/// the patches installed before it (the kernel's `klp_get_state` / `klp_get_prev_state`).
pub struct CallbackContext<'c, 'a> {
    pub(crate) patch: &'a Patch<'a>,
    pub(crate) object: ObjectId,
    pub(crate) installed: &'c LinkedList<PatchAdapter<'a>>,
}

impl<'a> CallbackContext<'_, 'a> {
    /// The patch whose callback this is.
    pub fn patch(&self) -> &'a Patch<'a> {
        self.patch
    }

    /// The object whose callback this is.
    pub fn object(&self) -> ObjectId {
        self.object
    }

    /// This patch's state `id` (`klp_get_state`).
    pub fn state(&self, id: StateId) -> Option<&'a State> {
        self.patch.state(id)
    }

    /// State `id` as the newest patch installed before this one declares it
    /// (`klp_get_prev_state`): what a cumulative patch takes over.
    pub fn prev_state(&self, id: StateId) -> Option<&'a State> {
        self.prev_state_with_patch(id).map(|(_, state)| state)
    }

    /// [`prev_state`](Self::prev_state) together with the patch that declares it, for an
    /// embedder that keeps its own data per declared state (the kernel module answers
    /// `klp_get_prev_state()` with the patch module's `struct klp_state`, found from the
    /// declaring patch and the state's place in its [`Patch::states`]).
    ///
    /// The patches installed before this one are searched oldest first, the last declaration
    /// found wins; patches installed after this one are not looked at. If this patch is not
    /// on the list, every installed patch counts as earlier, as in the kernel's loop in
    /// `klp_get_prev_state`.
    pub fn prev_state_with_patch(&self, id: StateId) -> Option<(&'a Patch<'a>, &'a State)> {
        let mut found = None;
        let mut cursor = self.installed.front();
        while let Some(p) = cursor.clone_pointer() {
            if core::ptr::eq(p, self.patch) {
                break;
            }
            if let Some(state) = p.state(id) {
                found = Some((p, state));
            }
            cursor.move_next();
        }
        found
    }
}

impl fmt::Debug for CallbackContext<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackContext").field("patch", &self.patch.id()).field("object", &self.object).finish()
    }
}

/// Per-object callbacks with the kernel's rules: `pre_patch` may fail and cancel the enable;
/// `post_patch`, `pre_unpatch` and `post_unpatch` run only for objects whose `pre_patch` ran
/// successfully; reversing an enable skips `pre_unpatch`; only the new patch's callbacks run
/// when an atomic replace retires older patches.
pub trait ObjectCallbacks: Sync {
    /// Before the object's functions are patched. An error cancels the enable (or refuses the
    /// module load for a late object).
    fn pre_patch(&self, ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        let _ = ctx;
        Ok(())
    }
    /// After the transition to the patched state completed.
    fn post_patch(&self, ctx: &CallbackContext<'_, '_>) {
        let _ = ctx;
    }
    /// Before a disable transition starts.
    fn pre_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        let _ = ctx;
    }
    /// After the transition to the unpatched state completed (or an enable was cancelled).
    fn post_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        let _ = ctx;
    }
}

/// A system state's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateId(pub u64);

/// A system state a patch declares it establishes or maintains (`klp_state`): an id, a
/// version, and a word of data the patch's callbacks may set and a later patch may take over.
pub struct State {
    id: StateId,
    version: u32,
    data: AtomicUsize,
}

impl State {
    const_fn! {
        /// State `id` at `version`.
        pub fn new(id: StateId, version: u32) -> Self {
            Self { id, version, data: AtomicUsize::new(0) }
        }
    }

    /// Its id.
    pub fn id(&self) -> StateId {
        self.id
    }
    /// Its version.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// Its data word (0 until set).
    pub fn data(&self) -> usize {
        self.data.load(Ordering::Acquire)
    }
    /// Sets its data word. `Release`: pairs with [`data`](Self::data)'s `Acquire`.
    pub fn set_data(&self, data: usize) {
        self.data.store(data, Ordering::Release);
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("data", &self.data())
            .finish()
    }
}

/// A code object (the core kernel or one module) and the functions a patch replaces in it.
pub struct Object<'a> {
    id: ObjectId,
    name: &'a str,
    funcs: &'a [Func<'a>],
    callbacks: Option<&'a dyn ObjectCallbacks>,
    /// `pre_patch` succeeded: the other callbacks may run (`obj->callbacks.post_unpatch_enabled`).
    pub(crate) callbacks_enabled: AtomicBool,
    /// The object's funcs are on their func stacks.
    pub(crate) patched: AtomicBool,
}

impl<'a> Object<'a> {
    const_fn! {
        /// An object `id` named `name` with the functions it replaces.
        pub fn new(id: ObjectId, name: &'a str, funcs: &'a [Func<'a>]) -> Self {
            Self {
                id,
                name,
                funcs,
                callbacks: None,
                callbacks_enabled: AtomicBool::new(false),
                patched: AtomicBool::new(false),
            }
        }
    }

    const_fn! {
        /// The same object with callbacks.
        pub fn with_callbacks(mut self, callbacks: &'a dyn ObjectCallbacks) -> Self {
            self.callbacks = Some(callbacks);
            self
        }
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.id
    }
    /// The object's name.
    pub fn name(&self) -> &'a str {
        self.name
    }
    /// The functions it replaces.
    pub fn funcs(&self) -> &'a [Func<'a>] {
        self.funcs
    }
    /// Whether its functions are on their func stacks.
    pub fn is_patched(&self) -> bool {
        self.patched.load(Ordering::Relaxed)
    }

    pub(crate) fn pre_patch(&self, ctx: &CallbackContext<'_, 'a>) -> Result<(), CallbackError> {
        if let Some(cb) = self.callbacks {
            cb.pre_patch(ctx)?;
        }
        self.callbacks_enabled.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn post_patch(&self, ctx: &CallbackContext<'_, 'a>) {
        if let (Some(cb), true) = (self.callbacks, self.callbacks_enabled.load(Ordering::Relaxed)) {
            cb.post_patch(ctx);
        }
    }

    pub(crate) fn pre_unpatch(&self, ctx: &CallbackContext<'_, 'a>) {
        if let (Some(cb), true) = (self.callbacks, self.callbacks_enabled.load(Ordering::Relaxed)) {
            cb.pre_unpatch(ctx);
        }
    }

    pub(crate) fn post_unpatch(&self, ctx: &CallbackContext<'_, 'a>) {
        if self.callbacks_enabled.swap(false, Ordering::Relaxed) {
            if let Some(cb) = self.callbacks {
                cb.post_unpatch(ctx);
            }
        }
    }
}

impl fmt::Debug for Object<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object").field("id", &self.id).field("name", &self.name).field("funcs", &self.funcs).finish()
    }
}

/// A patch: objects with replaced functions; `replace` makes it cumulative (atomic replace).
pub struct Patch<'a> {
    id: PatchId,
    name: &'a str,
    objects: &'a [Object<'a>],
    states: &'a [State],
    replace: bool,
    pub(crate) link: AtomicLink,
    pub(crate) enabled: AtomicBool,
    pub(crate) forced: AtomicBool,
}

intrusive_adapter!(pub(crate) PatchAdapter<'a> = &'a Patch<'a>: Patch<'a> { link => AtomicLink });

impl<'a> Patch<'a> {
    const_fn! {
        /// A patch `id` named `name` over `objects`.
        pub fn new(id: PatchId, name: &'a str, objects: &'a [Object<'a>]) -> Self {
            Self {
                id,
                name,
                objects,
                states: &[],
                replace: false,
                link: AtomicLink::new(),
                enabled: AtomicBool::new(false),
                forced: AtomicBool::new(false),
            }
        }
    }

    const_fn! {
        /// The same patch, cumulative: on completion it replaces every other enabled patch, and
        /// functions those patched that this one does not are reverted with nop variants.
        pub fn replacing(mut self) -> Self {
            self.replace = true;
            self
        }
    }

    const_fn! {
        /// The same patch, declaring the system states it establishes or maintains.
        pub fn with_states(mut self, states: &'a [State]) -> Self {
            self.states = states;
            self
        }
    }

    /// Its system states.
    pub fn states(&self) -> &'a [State] {
        self.states
    }

    /// Its state `id`.
    pub fn state(&self, id: StateId) -> Option<&'a State> {
        self.states.iter().find(|s| s.id == id)
    }

    /// Whether it may be installed on top of `installed` patches (`klp_is_patch_compatible`):
    /// every state they declare must be declared by this patch at the same or a higher
    /// version — or, for a non-cumulative patch, may be left alone. Returns the first
    /// offending state.
    pub fn check_states<'q, 'p: 'q>(&self, installed: impl IntoIterator<Item = &'q Patch<'p>>) -> Result<(), StateId> {
        for old in installed {
            for old_state in old.states {
                let ok = match self.state(old_state.id) {
                    None => !self.replace,
                    Some(state) => state.version >= old_state.version,
                };
                if !ok {
                    return Err(old_state.id);
                }
            }
        }
        Ok(())
    }

    /// The patch's id.
    pub fn id(&self) -> PatchId {
        self.id
    }
    /// The patch's name.
    pub fn name(&self) -> &'a str {
        self.name
    }
    /// Its objects.
    pub fn objects(&self) -> &'a [Object<'a>] {
        self.objects
    }
    /// Whether it is cumulative (atomic replace).
    pub fn is_replace(&self) -> bool {
        self.replace
    }
    /// Whether it is enabled (the kernel's `enabled` attribute: set at enable, cleared when a
    /// disable starts).
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
    /// Whether a forced transition involved it: its code may still be in use and must never
    /// be released.
    pub fn is_forced(&self) -> bool {
        self.forced.load(Ordering::Relaxed)
    }
    /// Whether the engine holds it (enabled, or in a transition).
    pub fn is_registered(&self) -> bool {
        self.link.is_linked()
    }

    /// Every function of the patch with its object.
    pub fn funcs(&self) -> impl Iterator<Item = (&'a Object<'a>, &'a Func<'a>)> + Clone + 'a {
        self.objects.iter().flat_map(|o| o.funcs.iter().map(move |f| (o, f)))
    }
}

impl fmt::Debug for Patch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patch")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("replace", &self.replace)
            .field("enabled", &self.is_enabled())
            .field("objects", &self.objects)
            .finish()
    }
}

/// Why a patch descriptor is invalid on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchError {
    /// Two objects of the patch have the same id.
    DuplicateObject(ObjectId),
    /// Two functions of the patch replace the same original function.
    DuplicateFunc(CodeRange),
    /// Two ranges of the patch (originals or replacements) overlap without being equal.
    Overlap(CodeRange, CodeRange),
    /// The patch declares the same system state twice.
    DuplicateState(StateId),
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::DuplicateObject(o) => write!(f, "object {o} appears twice"),
            PatchError::DuplicateFunc(r) => write!(f, "function {r:?} is replaced twice"),
            PatchError::Overlap(a, b) => write!(f, "code ranges {a:?} and {b:?} overlap"),
            PatchError::DuplicateState(id) => write!(f, "system state {} is declared twice", id.0),
        }
    }
}

impl core::error::Error for PatchError {}

/// Checks a patch on its own: unique objects and states, each original replaced once, and no
/// overlap among originals, replacements, or between the two.
///
/// A patch may replace no function at all: like the kernel, the engine accepts callbacks-only
/// and states-only patches (`test_klp_callbacks_demo2`, `test_klp_state*`); as a cumulative
/// patch it reverts every function the patches it replaces changed.
pub fn validate(patch: &Patch<'_>) -> Result<(), PatchError> {
    for (i, a) in patch.objects.iter().enumerate() {
        if patch.objects[..i].iter().any(|b| b.id == a.id) {
            return Err(PatchError::DuplicateObject(a.id));
        }
    }
    for (i, state) in patch.states.iter().enumerate() {
        if patch.states[..i].iter().any(|s| s.id == state.id) {
            return Err(PatchError::DuplicateState(state.id));
        }
    }
    check_funcs(patch.funcs().map(|(_, f)| f))
}

/// The function checks of [`validate`] over `funcs`: each resolved original replaced once, no
/// overlap among resolved originals and replacements. Unresolved functions (a relocatable
/// function of an object that is not loaded) have no original yet: only their replacement is
/// checked; the engine checks them again when their object comes.
pub(crate) fn check_funcs<'f, 'a: 'f>(funcs: impl Iterator<Item = &'f Func<'a>> + Clone) -> Result<(), PatchError> {
    for (i, f) in funcs.clone().enumerate() {
        let new = f.new_code();
        let old = f.old();
        if let Some(old) = old {
            if new.overlaps(old) {
                return Err(PatchError::Overlap(old, new));
            }
        }
        for g in funcs.clone().take(i) {
            let g_old = g.old();
            if let (Some(a), Some(b)) = (old, g_old) {
                if a == b {
                    return Err(PatchError::DuplicateFunc(a));
                }
            }
            let pairs = [(old, g_old), (old, Some(g.new_code())), (Some(new), g_old), (Some(new), Some(g.new_code()))];
            for (a, b) in pairs {
                if let (Some(a), Some(b)) = (a, b) {
                    if a.overlaps(b) {
                        return Err(PatchError::Overlap(a, b));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn r(start: usize, len: usize) -> CodeRange {
        CodeRange::new(start, len).unwrap()
    }

    #[test]
    fn a_nop_node_is_one_without_code() {
        assert!(FuncNode::new(None).is_nop());
        assert!(!FuncNode::new(Some(r(0x9000, 0x80))).is_nop());
    }

    #[test]
    fn a_refused_resolve_says_why() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(ResolveError::Fixed.to_string(), "the function's address is fixed");
        assert_eq!(ResolveError::Patched.to_string(), "the function is patched");
    }

    #[test]
    fn a_failed_callback_gives_its_code() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(CallbackError(-19).to_string(), "callback failed with code -19");
    }

    #[test]
    fn an_invalid_patch_says_what_is_wrong() {
        extern crate std;
        use std::string::ToString;
        let (a, b) = (r(0x100, 0x10), r(0x108, 0x10));
        assert_eq!(PatchError::DuplicateObject(ObjectId(3)).to_string(), "object 3 appears twice");
        assert_eq!(PatchError::DuplicateFunc(a).to_string(), "function [0x100, 0x110) is replaced twice");
        assert_eq!(PatchError::Overlap(a, b).to_string(), "code ranges [0x100, 0x110) and [0x108, 0x118) overlap");
        assert_eq!(PatchError::DuplicateState(StateId(7)).to_string(), "system state 7 is declared twice");
    }

    #[test]
    fn a_well_formed_patch_validates() {
        let funcs = [Func::new("a", r(0x100, 0x10), r(0x9000, 0x20)), Func::new("b", r(0x200, 0x10), r(0x9100, 0x20))];
        let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs)];
        let p = Patch::new(PatchId(1), "p", &objs);
        assert_eq!(validate(&p), Ok(()));
        assert_eq!(p.funcs().count(), 2);
        assert!(!p.is_enabled() && !p.is_registered() && !p.is_replace());
    }

    #[test]
    fn duplicate_and_overlapping_patches_are_rejected_and_empty_ones_accepted() {
        let none: [Func<'_>; 0] = [];
        let objs = [Object::new(ObjectId(0), "vmlinux", &none)];
        assert_eq!(validate(&Patch::new(PatchId(1), "p", &objs)), Ok(()));
        assert_eq!(validate(&Patch::new(PatchId(1), "p", &[])), Ok(()));

        let dup = [Func::new("a", r(0x100, 0x10), r(0x9000, 0x20)), Func::new("a2", r(0x100, 0x10), r(0x9100, 0x20))];
        let objs = [Object::new(ObjectId(0), "vmlinux", &dup)];
        assert_eq!(validate(&Patch::new(PatchId(1), "p", &objs)), Err(PatchError::DuplicateFunc(r(0x100, 0x10))));

        let over = [Func::new("a", r(0x100, 0x10), r(0x9000, 0x20)), Func::new("b", r(0x108, 0x10), r(0x9100, 0x20))];
        let objs = [Object::new(ObjectId(0), "vmlinux", &over)];
        assert!(matches!(validate(&Patch::new(PatchId(1), "p", &objs)), Err(PatchError::Overlap(..))));

        let shared_new =
            [Func::new("a", r(0x100, 0x10), r(0x9000, 0x20)), Func::new("b", r(0x200, 0x10), r(0x9010, 0x20))];
        let objs = [Object::new(ObjectId(0), "vmlinux", &shared_new)];
        assert!(matches!(validate(&Patch::new(PatchId(1), "p", &objs)), Err(PatchError::Overlap(..))));

        let self_overlap = [Func::new("a", r(0x100, 0x10), r(0x108, 0x20))];
        let objs = [Object::new(ObjectId(0), "vmlinux", &self_overlap)];
        assert!(matches!(validate(&Patch::new(PatchId(1), "p", &objs)), Err(PatchError::Overlap(..))));

        let f = [Func::new("a", r(0x100, 0x10), r(0x9000, 0x20))];
        let g = [Func::new("b", r(0x200, 0x10), r(0x9100, 0x20))];
        let objs = [Object::new(ObjectId(3), "m", &f), Object::new(ObjectId(3), "m", &g)];
        assert_eq!(validate(&Patch::new(PatchId(1), "p", &objs)), Err(PatchError::DuplicateObject(ObjectId(3))));
    }
}
