// SPDX-License-Identifier: GPL-2.0

//! Patches that patch modules register through `lprs_enable_patch()` (`klp_enable_patch()` in
//! `include/livepatch_rs.h`): a pool of [`NDYN`] descriptor slots. A slot is filled from the
//! flattened `klp_patch` (`register.c`), copying every name it keeps, so nothing points into
//! the patch module once the slot is given back.
//!
//! A slot's life, every change under the engine lock: `Free` → `Reserved` (descriptors built,
//! sysfs directory created) → `Registered` (the engine holds the
//! patch; the patch module and this module are pinned) → `Dying` (the engine let go after a
//! disable, a replace or a failed enable; the pins are dropped; the directory is removed by a
//! work item, without the lock, since its files' handlers take it) → `Free`. A forced patch
//! stays `Registered` forever, as in the kernel.

use crate::backend::OBJECT_LOADED;
use crate::patches::{Cell, NPATCH};
use crate::shim::{self, Reg, LP_REG_FUNCS, LP_REG_NAME, LP_REG_OBJS, LP_REG_STATES};
use core::ffi::{c_char, c_int, c_ulong, c_void, CStr};
use core::sync::atomic::{AtomicPtr, Ordering};
use livepatch_core::patch::{CallbackContext, CallbackError, State, StateId};
use livepatch_core::{CodeRange, Func, Object, ObjectCallbacks, ObjectId, Patch, PatchId};

/// How many patches patch modules may have registered at once.
pub(crate) const NDYN: usize = 8;

/// Patch indices: the built-in patches first, then the slots.
pub(crate) const NALL: usize = NPATCH + NDYN;

/// The first object id of a module named by a registered patch (0: vmlinux; 1, 2: the
/// built-in patches' modules).
const FIRST_OBJECT: u32 = 3;
/// How many distinct module names registered patches may name over the module's life.
pub(crate) const NOBJNAMES: usize = 8;

/// A slot's state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SlotState {
    Free,
    Reserved,
    Registered,
    Dying,
}

/// A patch module's object callbacks, called with its `klp_object`.
struct KlpCallbacks {
    object: AtomicPtr<c_void>,
}

impl KlpCallbacks {
    const fn new() -> Self {
        Self { object: AtomicPtr::new(core::ptr::null_mut()) }
    }

    fn call(&self, ctx: &CallbackContext<'_, '_>, which: u32) -> c_int {
        // What `klp_get_prev_state()` answers from while the C callback runs (the kernel uses
        // `klp_transition_patch`, still set while the post callbacks run; the context names the
        // patch whose callback this is).
        let _running = RunningCallback::publish(ctx);
        // SAFETY: the object is the patch module's `klp_object`, alive while the patch module
        // is pinned, which it is while the engine holds the patch (the only time callbacks run).
        unsafe { shim::lp_shim_klp_callback(self.object.load(Ordering::Relaxed), which) }
    }
}

/// The context the engine passed the patch module callback that is running (null: none), for
/// `klp_get_prev_state()` ([`prev_klp_state`]). Set and cleared by [`RunningCallback`], around
/// the C callback only; callbacks run under the engine lock, so the only thread that finds it
/// non-null is the one running the callback, which holds that lock.
///
/// The engine's `&mut` of its own state stays the only one: the context is a shared borrow of
/// the engine's patch list that the engine handed the callback, and `klp_get_prev_state()` reads
/// through it, never through `control::state()`.
///
/// `'static` stands for the borrow of the engine's list, which lasts exactly as long as the
/// callback (the patches themselves are `'static`): the pointer is dereferenced only while the
/// `RunningCallback` that published it lives, and nothing borrowed from the context with that
/// lifetime leaves [`prev_klp_state`].
static RUNNING: AtomicPtr<CallbackContext<'static, 'static>> = AtomicPtr::new(core::ptr::null_mut());

/// Publishes a callback's context in [`RUNNING`] for the duration of the C callback: set when
/// created, the previous value put back when dropped, on every way out of the call.
///
/// `Relaxed` everywhere: [`RUNNING`] is written and read by the engine-lock holder only.
struct RunningCallback {
    outer: *mut CallbackContext<'static, 'static>,
}

impl RunningCallback {
    fn publish(ctx: &CallbackContext<'_, '_>) -> Self {
        let ctx = core::ptr::from_ref(ctx).cast_mut().cast::<CallbackContext<'static, 'static>>();
        Self { outer: RUNNING.swap(ctx, Ordering::Relaxed) }
    }
}

impl Drop for RunningCallback {
    fn drop(&mut self) {
        RUNNING.store(self.outer, Ordering::Relaxed);
    }
}

/// `klp_get_prev_state(id)` for the patch module callback that is running: the patch module's
/// `struct klp_state` of state `id` of the newest patch installed before the one whose
/// callback runs (the core's [`CallbackContext::prev_state_with_patch`]); null if none
/// declares it, or if no callback is running.
///
/// Reads the running callback's context and the slots' `klp_state` pointers (written at
/// registration, before the engine can call the slot's callbacks); never `control::state()`,
/// to which the engine method running the callback holds a `&mut`, nor a slot's [`Meta`].
///
/// # Safety
/// The calling thread holds the engine lock.
pub(crate) unsafe fn prev_klp_state(id: u64) -> *mut c_void {
    let ctx = RUNNING.load(Ordering::Relaxed);
    if ctx.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: `ctx` is non-null only while `KlpCallbacks::call` runs its C callback under the
    // engine lock; the caller holds that lock, so that call is on this thread's stack, below
    // us, and the context it published (and its borrow of the engine's patch list, shared,
    // which the engine does not touch until the callback returns) outlives this function. The
    // reference and the `'static` patch list borrow do not leave it.
    let ctx = unsafe { &*ctx };
    let Some((patch, state)) = ctx.prev_state_with_patch(StateId(id)) else {
        return core::ptr::null_mut();
    };
    // Only registered patches declare states (the built-in ones declare none).
    let Some(slot) = (patch.id().0 as usize).checked_sub(NPATCH).and_then(|k| SLOTS.get(k)) else {
        return core::ptr::null_mut();
    };
    match patch.states().iter().position(|s| core::ptr::eq(s, state)) {
        Some(i) => slot.klp_states[i].load(Ordering::Relaxed),
        None => core::ptr::null_mut(),
    }
}

impl ObjectCallbacks for KlpCallbacks {
    fn pre_patch(&self, ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        match self.call(ctx, shim::LP_CB_PRE_PATCH) {
            0 => Ok(()),
            rc => Err(CallbackError(rc)),
        }
    }
    fn post_patch(&self, ctx: &CallbackContext<'_, '_>) {
        self.call(ctx, shim::LP_CB_POST_PATCH);
    }
    fn pre_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        self.call(ctx, shim::LP_CB_PRE_UNPATCH);
    }
    fn post_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        self.call(ctx, shim::LP_CB_POST_UNPATCH);
    }
}

type Name = [u8; LP_REG_NAME];

/// What a slot keeps besides the core's descriptors that changes while the slot is used.
struct Meta {
    state: SlotState,
    module: *mut c_void,
}

/// The names a slot copied from the patch module, written by [`fill`] while the slot is free
/// and only read (shared) afterwards: the slot's descriptors hold `&'static str`s into them,
/// so no `&mut` may cover them while the slot is in use (a `&mut Meta` never does).
struct Names {
    name: Name,
    obj_names: [Name; LP_REG_OBJS],
    func_names: [Name; LP_REG_FUNCS],
    sympos: [c_ulong; LP_REG_FUNCS],
}

/// One slot.
pub(crate) struct Slot {
    funcs: Cell<[Func<'static>; LP_REG_FUNCS]>,
    objects: Cell<[Object<'static>; LP_REG_OBJS]>,
    states: Cell<[State; LP_REG_STATES]>,
    patch: Cell<Patch<'static>>,
    callbacks: [KlpCallbacks; LP_REG_OBJS],
    /// The patch module's `klp_state`s, in the order of `states`, for `klp_get_prev_state()`.
    /// Written by [`fill`] (the slot is not yet the engine's), read by [`prev_klp_state`];
    /// both under the engine lock, so `Relaxed`.
    klp_states: [AtomicPtr<c_void>; LP_REG_STATES],
    meta: Cell<Meta>,
    names: Cell<Names>,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            funcs: Cell::new(),
            objects: Cell::new(),
            states: Cell::new(),
            patch: Cell::new(),
            callbacks: [const { KlpCallbacks::new() }; LP_REG_OBJS],
            klp_states: [const { AtomicPtr::new(core::ptr::null_mut()) }; LP_REG_STATES],
            meta: Cell::new(),
            names: Cell::new(),
        }
    }
}

static SLOTS: [Slot; NDYN] = [const { Slot::new() }; NDYN];

/// The module names registered patches named, in object-id order (under the engine lock).
static OBJNAMES: Cell<([Name; NOBJNAMES], usize)> = Cell::new();

/// Proof that the caller holds the engine lock (the registry is only touched under it).
pub(crate) struct Locked<'g>(pub(crate) &'g crate::shim::EngineGuard);

/// Sets up the registry. Module init, before anything else can reach it.
pub(crate) fn init() {
    for slot in &SLOTS {
        let meta = Meta { state: SlotState::Free, module: core::ptr::null_mut() };
        let names = Names {
            name: [0; LP_REG_NAME],
            obj_names: [[0; LP_REG_NAME]; LP_REG_OBJS],
            func_names: [[0; LP_REG_NAME]; LP_REG_FUNCS],
            sympos: [0; LP_REG_FUNCS],
        };
        // SAFETY: module init; nothing references the slot yet.
        unsafe {
            slot.meta.set(meta);
            slot.names.set(names);
        }
    }
    // SAFETY: as above.
    unsafe { OBJNAMES.set(([[0; LP_REG_NAME]; NOBJNAMES], 0)) };
}

/// Slot `k`'s metadata. As for `control::state`, the signature does not enforce what the
/// `&'static mut` needs: each use ends before the next `meta` of the same slot, and before the
/// engine lock is released. Nothing borrowed from it outlives the use (its fields are copied
/// out); the names, which the descriptors borrow for good, are apart ([`names`]).
fn meta(_l: &Locked<'_>, k: usize) -> &'static mut Meta {
    // SAFETY: set in `init`; the engine lock (proved by `Locked`) gives exclusive access.
    unsafe { &mut *SLOTS[k].meta.as_mut_ptr() }
}

/// Slot `k`'s names (those of the patch module's last registration in it; meaningful unless
/// the slot is free).
fn names(_l: &Locked<'_>, k: usize) -> &'static Names {
    // SAFETY: set in `init`; written only by `fill` through `names_to_fill`, under the engine
    // lock, while the slot is free and nothing borrows them; shared otherwise.
    unsafe { &*SLOTS[k].names.as_mut_ptr() }
}

/// Slot `k`'s names, to rewrite.
///
/// # Safety
/// Slot `k` is free and nothing borrows its names: neither descriptors (the engine let go of
/// the slot's patch before it was freed) nor a [`names`] result still in use.
unsafe fn names_to_fill(_l: &Locked<'_>, k: usize) -> &'static mut Names {
    // SAFETY: set in `init`; exclusive per the contract and the engine lock.
    unsafe { &mut *SLOTS[k].names.as_mut_ptr() }
}

fn as_str(name: &Name) -> &str {
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    core::str::from_utf8(&name[..len]).unwrap_or("?")
}

/// Copies a C string into `out` (NUL-terminated). `false` if it does not fit.
fn copy_name(src: *const c_char, out: &mut Name) -> bool {
    if src.is_null() {
        return false;
    }
    // SAFETY: register.c passes NUL-terminated strings of the patch module (checked shorter
    // than LP_REG_NAME there), alive during the registration call.
    let bytes = unsafe { CStr::from_ptr(src) }.to_bytes();
    if bytes.len() >= out.len() {
        return false;
    }
    *out = [0; LP_REG_NAME];
    out[..bytes.len()].copy_from_slice(bytes);
    true
}

/// The state of slot `k`.
pub(crate) fn state(l: &Locked<'_>, k: usize) -> SlotState {
    meta(l, k).state
}

/// Sets the state of slot `k`.
pub(crate) fn set_state(l: &Locked<'_>, k: usize, state: SlotState) {
    meta(l, k).state = state;
}

/// The patch module of slot `k`.
pub(crate) fn module(l: &Locked<'_>, k: usize) -> *mut c_void {
    meta(l, k).module
}

/// The name of slot `k`'s patch (the patch module's name).
pub(crate) fn name(l: &Locked<'_>, k: usize) -> &'static str {
    as_str(&names(l, k).name)
}

/// Slot `k`'s patch, unless the slot is free.
pub(crate) fn patch(l: &Locked<'_>, k: usize) -> Option<&'static Patch<'static>> {
    if meta(l, k).state == SlotState::Free {
        return None;
    }
    // SAFETY: a non-free slot's descriptors were set by `fill`.
    Some(unsafe { SLOTS[k].patch.get() })
}

/// The object ids module `name` has (at most one): the id registered patches use for it.
pub(crate) fn object_of(_l: &Locked<'_>, name: &[u8]) -> Option<ObjectId> {
    // SAFETY: set in `init`; read under the engine lock.
    let (names, n) = unsafe { OBJNAMES.get() };
    names[..*n].iter().position(|m| as_str(m).as_bytes() == name).map(|i| ObjectId(FIRST_OBJECT + i as u32))
}

/// The object id for module `name`, allocated on first use; a new name is probed: if the module
/// is already loaded (before this module's notifier could see it), it counts as loaded.
fn object_id(l: &Locked<'_>, name: &Name) -> Option<ObjectId> {
    if let Some(id) = object_of(l, as_str(name).as_bytes()) {
        return Some(id);
    }
    // SAFETY: set in `init`; the engine lock gives exclusive access.
    let (names, n) = unsafe { &mut *OBJNAMES.as_mut_ptr() };
    if *n >= NOBJNAMES {
        return None;
    }
    names[*n] = *name;
    let id = ObjectId(FIRST_OBJECT + *n as u32);
    *n += 1;
    // SAFETY: a NUL-terminated name; process context.
    let loaded = unsafe { shim::lp_shim_module_loaded(name.as_ptr().cast()) };
    OBJECT_LOADED[id.0 as usize].store(loaded, Ordering::Relaxed);
    Some(id)
}

/// Why a registration is refused (each maps to the errno the kernel returns).
#[derive(Debug)]
pub(crate) enum RegError {
    /// A name too long, or a replacement that is not a known function: -EINVAL.
    Invalid,
    /// A function not found or ambiguous (as `klp_find_object_symbol`): its errno.
    Symbol(c_int),
    /// Too many module names: -ENOSPC.
    NoSpace,
}

impl RegError {
    pub(crate) fn errno(&self) -> c_int {
        match self {
            RegError::Invalid => -22,
            RegError::Symbol(rc) => *rc,
            RegError::NoSpace => -28,
        }
    }
}

/// A free slot, if any.
pub(crate) fn free_slot(l: &Locked<'_>) -> Option<usize> {
    (0..NDYN).find(|&k| meta(l, k).state == SlotState::Free)
}

/// Whether a registered (or reserved, or dying) patch has this name.
pub(crate) fn name_taken(l: &Locked<'_>, name: *const c_char) -> bool {
    let mut n = [0; LP_REG_NAME];
    copy_name(name, &mut n) && (0..NDYN).any(|k| meta(l, k).state != SlotState::Free && names(l, k).name == n)
}

/// Copies the names of `reg` into slot `k` (free): the patch's, its objects' (`vmlinux` for
/// the core kernel) and its functions' with their `sympos`. From here on they are only read.
fn copy_names(l: &Locked<'_>, k: usize, reg: &Reg) -> Result<&'static Names, RegError> {
    if meta(l, k).state != SlotState::Free {
        return Err(RegError::Invalid);
    }
    // SAFETY: the slot is free (checked above): the engine let go of its last patch, whose
    // descriptors held the only lasting borrows of these names, and no `names` result of
    // this slot is in use under the lock we hold.
    let m = unsafe { names_to_fill(l, k) };
    if !copy_name(reg.patch_name, &mut m.name) {
        return Err(RegError::Invalid);
    }
    let nobjs = (reg.nobjs as usize).min(LP_REG_OBJS);
    let nfuncs = (reg.nfuncs as usize).min(LP_REG_FUNCS);
    for (i, o) in reg.objs[..nobjs].iter().enumerate() {
        if o.name.is_null() {
            m.obj_names[i] = [0; LP_REG_NAME];
            m.obj_names[i][..7].copy_from_slice(b"vmlinux");
        } else if !copy_name(o.name, &mut m.obj_names[i]) {
            return Err(RegError::Invalid);
        }
    }
    for (i, f) in reg.funcs[..nfuncs].iter().enumerate() {
        if !copy_name(f.name, &mut m.func_names[i]) || f.obj as usize >= nobjs {
            return Err(RegError::Invalid);
        }
        m.sympos[i] = f.sympos;
    }
    Ok(m)
}

/// Builds slot `k`'s descriptors from `reg`: vmlinux functions resolved now; a module's
/// functions are relocatable, resolved now if the module is loaded, else by the notifier.
/// The slot becomes `Reserved`. On error the slot stays `Free`.
pub(crate) fn fill(l: &Locked<'_>, k: usize, reg: &Reg) -> Result<&'static Patch<'static>, RegError> {
    let slot = &SLOTS[k];
    let m = copy_names(l, k, reg)?;
    let nobjs = (reg.nobjs as usize).min(LP_REG_OBJS);
    let nfuncs = (reg.nfuncs as usize).min(LP_REG_FUNCS);
    let nstates = (reg.nstates as usize).min(LP_REG_STATES);
    let mut ids = [ObjectId::VMLINUX; LP_REG_OBJS];
    for (i, o) in reg.objs[..nobjs].iter().enumerate() {
        if !o.name.is_null() {
            ids[i] = object_id(l, &m.obj_names[i]).ok_or(RegError::NoSpace)?;
        }
        slot.callbacks[i].object.store(o.klp, Ordering::Relaxed);
    }
    // The functions, object by object (register.c lists them in object order).
    let mut built: [Option<Func<'static>>; LP_REG_FUNCS] = [const { None }; LP_REG_FUNCS];
    for (i, f) in reg.funcs[..nfuncs].iter().enumerate() {
        let size = shim::extent(f.new_addr as usize).ok_or(RegError::Invalid)?;
        let new = CodeRange::new(f.new_addr as usize, size).map_err(|_| RegError::Invalid)?;
        let fname = as_str(&m.func_names[i]);
        let obj = f.obj as usize;
        built[i] = Some(if ids[obj] == ObjectId::VMLINUX {
            let old = find(None, &m.func_names[i], m.sympos[i])?;
            Func::new(fname, old, new)
        } else {
            Func::relocatable(fname, new)
        });
    }
    // Unused entries: never part of an object's slice.
    let filler = CodeRange::new(2, 1).map_err(|_| RegError::Invalid)?;
    let funcs: [Func<'static>; LP_REG_FUNCS] =
        core::array::from_fn(|i| built[i].take().unwrap_or_else(|| Func::relocatable("", filler)));
    // SAFETY: the slot is free: nothing references its old descriptors.
    let funcs: &'static [Func<'static>; LP_REG_FUNCS] = unsafe { slot.funcs.set(funcs) };
    let mut start = 0;
    let objects: [Object<'static>; LP_REG_OBJS] = core::array::from_fn(|i| {
        let end = if i < nobjs { start + reg.funcs[start..nfuncs].iter().take_while(|f| f.obj as usize == i).count() } else { start };
        let o = Object::new(ids[i], as_str(&m.obj_names[i]), &funcs[start..end]).with_callbacks(&slot.callbacks[i]);
        start = end;
        o
    });
    // SAFETY: as above.
    let objects = unsafe { slot.objects.set(objects) };
    for (i, (st, klp)) in reg.states.iter().zip(&slot.klp_states).enumerate() {
        klp.store(if i < nstates { st.klp } else { core::ptr::null_mut() }, Ordering::Relaxed);
    }
    let states: [State; LP_REG_STATES] = core::array::from_fn(|i| match reg.states.get(i) {
        Some(s) if i < nstates => State::new(StateId(s.id as u64), s.version),
        _ => State::new(StateId(0), 0),
    });
    // SAFETY: as above.
    let states = unsafe { slot.states.set(states) };
    let patch =
        Patch::new(PatchId((NPATCH + k) as u32), as_str(&m.name), &objects[..nobjs]).with_states(&states[..nstates]);
    let patch = if reg.replace { patch.replacing() } else { patch };
    // SAFETY: as above.
    let patch: &'static Patch<'static> = unsafe { slot.patch.set(patch) };
    meta(l, k).module = reg.module;
    for obj in patch.objects() {
        if obj.id() != ObjectId::VMLINUX && OBJECT_LOADED[obj.id().0 as usize].load(Ordering::Relaxed) {
            resolve(l, k, obj.id())?;
        }
    }
    set_state(l, k, SlotState::Reserved);
    Ok(patch)
}

/// Looks a function up as `klp_find_object_symbol` does.
fn find(objname: Option<&Name>, name: &Name, sympos: c_ulong) -> Result<CodeRange, RegError> {
    let (mut addr, mut size): (c_ulong, c_ulong) = (0, 0);
    let obj = objname.map_or(core::ptr::null(), |o| o.as_ptr().cast());
    // SAFETY: NUL-terminated names, valid out-pointers, process context.
    let rc = unsafe { shim::lp_shim_find_symbol(obj, name.as_ptr().cast(), sympos, &mut addr, &mut size) };
    if rc != 0 {
        return Err(RegError::Symbol(rc));
    }
    CodeRange::new(addr as usize, size as usize).map_err(|_| RegError::Invalid)
}

/// Resolves slot `k`'s functions of module `object` (loaded, or coming).
pub(crate) fn resolve(l: &Locked<'_>, k: usize, object: ObjectId) -> Result<(), RegError> {
    let m = names(l, k);
    // SAFETY: the slot is not free (the caller holds its patch).
    let patch = unsafe { SLOTS[k].patch.get() };
    let mut i = 0;
    for (oi, obj) in patch.objects().iter().enumerate() {
        for f in obj.funcs() {
            if obj.id() == object {
                let old = find(Some(&m.obj_names[oi]), &m.func_names[i], m.sympos[i])?;
                f.resolve(old).map_err(|_| RegError::Invalid)?;
            }
            i += 1;
        }
    }
    Ok(())
}

/// Creates slot `k`'s sysfs directory (patch index `idx`): the patch, its objects, their
/// functions. Creating never waits for handlers, so the engine lock may be held.
pub(crate) fn add_dirs(l: &Locked<'_>, k: usize, idx: usize) -> c_int {
    let m = names(l, k);
    // SAFETY: the slot is not free: its patch is set.
    let patch = unsafe { SLOTS[k].patch.get() };
    // SAFETY: NUL-terminated names of the slot; process context.
    unsafe {
        let mut rc = shim::lp_shim_dir_add(idx as u32, m.name.as_ptr().cast(), false);
        let mut i = 0;
        for (o, obj) in patch.objects().iter().enumerate() {
            if rc == 0 {
                rc = shim::lp_shim_dir_add_object(idx as u32, o as u32, m.obj_names[o].as_ptr().cast());
            }
            for _ in obj.funcs() {
                if rc == 0 {
                    rc = shim::lp_shim_dir_add_func(idx as u32, o as u32, m.func_names[i].as_ptr().cast(), m.sympos[i]);
                }
                i += 1;
            }
        }
        rc
    }
}

/// The name of the function (original or replacement) of a registered patch that `range` is.
/// The caller holds the engine lock (the stall report is written under it).
pub(crate) fn func_name(range: CodeRange) -> Option<&'static str> {
    let free = |k: usize| {
        // SAFETY: set in `init`; read under the engine lock the caller holds.
        unsafe { (*SLOTS[k].meta.as_mut_ptr()).state == SlotState::Free }
    };
    (0..NDYN).filter(|&k| !free(k)).map(|k| {
        // SAFETY: a non-free slot's descriptors are set.
        unsafe { SLOTS[k].patch.get() }
    }).find_map(|p| {
        p.funcs().find(|(_, f)| f.old() == Some(range) || f.new_code() == range).map(|(_, f)| f.name())
    })
}
