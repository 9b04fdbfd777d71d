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
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
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
        // The patch whose callback runs, for `klp_get_prev_state()` (the kernel uses
        // `klp_transition_patch`, still set while the post callbacks run).
        let outer = CALLBACK_PATCH.swap(ctx.patch().id().0 + 1, Ordering::Relaxed);
        // SAFETY: the object is the patch module's `klp_object`, alive while the patch module
        // is pinned, which it is while the engine holds the patch (the only time callbacks run).
        let rc = unsafe { shim::lp_shim_klp_callback(self.object.load(Ordering::Relaxed), which) };
        CALLBACK_PATCH.store(outer, Ordering::Relaxed);
        rc
    }
}

/// The id + 1 of the patch whose callback is running (0: none). Written and read under the
/// engine lock (callbacks run under it).
static CALLBACK_PATCH: AtomicU32 = AtomicU32::new(0);

/// The patch whose callback is running, if any.
pub(crate) fn callback_patch() -> Option<PatchId> {
    CALLBACK_PATCH.load(Ordering::Relaxed).checked_sub(1).map(PatchId)
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

/// What a slot keeps besides the core's descriptors.
struct Meta {
    state: SlotState,
    module: *mut c_void,
    name: Name,
    obj_names: [Name; LP_REG_OBJS],
    func_names: [Name; LP_REG_FUNCS],
    sympos: [c_ulong; LP_REG_FUNCS],
    /// The patch module's `klp_state`s, for `klp_get_prev_state()`.
    klp_states: [*mut c_void; LP_REG_STATES],
}

/// One slot.
pub(crate) struct Slot {
    funcs: Cell<[Func<'static>; LP_REG_FUNCS]>,
    objects: Cell<[Object<'static>; LP_REG_OBJS]>,
    states: Cell<[State; LP_REG_STATES]>,
    patch: Cell<Patch<'static>>,
    callbacks: [KlpCallbacks; LP_REG_OBJS],
    meta: Cell<Meta>,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            funcs: Cell::new(),
            objects: Cell::new(),
            states: Cell::new(),
            patch: Cell::new(),
            callbacks: [const { KlpCallbacks::new() }; LP_REG_OBJS],
            meta: Cell::new(),
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
        let meta = Meta {
            state: SlotState::Free,
            module: core::ptr::null_mut(),
            name: [0; LP_REG_NAME],
            obj_names: [[0; LP_REG_NAME]; LP_REG_OBJS],
            func_names: [[0; LP_REG_NAME]; LP_REG_FUNCS],
            sympos: [0; LP_REG_FUNCS],
            klp_states: [core::ptr::null_mut(); LP_REG_STATES],
        };
        // SAFETY: module init; nothing references the slot yet.
        unsafe { slot.meta.set(meta) };
    }
    // SAFETY: as above.
    unsafe { OBJNAMES.set(([[0; LP_REG_NAME]; NOBJNAMES], 0)) };
}

/// Slot `k`'s metadata. As for `control::state`, the signature does not enforce what the
/// `&'static mut` needs: each use ends before the next `meta` of the same slot, and before the
/// engine lock is released.
fn meta(_l: &Locked<'_>, k: usize) -> &'static mut Meta {
    // SAFETY: set in `init`; the engine lock (proved by `Locked`) gives exclusive access.
    unsafe { &mut *SLOTS[k].meta.as_mut_ptr() }
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
    as_str(&meta(l, k).name)
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
    copy_name(name, &mut n) && (0..NDYN).any(|k| meta(l, k).state != SlotState::Free && meta(l, k).name == n)
}

/// Builds slot `k`'s descriptors from `reg`: vmlinux functions resolved now; a module's
/// functions are relocatable, resolved now if the module is loaded, else by the notifier.
/// The slot becomes `Reserved`. On error the slot stays `Free`.
pub(crate) fn fill(l: &Locked<'_>, k: usize, reg: &Reg) -> Result<&'static Patch<'static>, RegError> {
    let slot = &SLOTS[k];
    let m = meta(l, k);
    if !copy_name(reg.patch_name, &mut m.name) {
        return Err(RegError::Invalid);
    }
    let nobjs = (reg.nobjs as usize).min(LP_REG_OBJS);
    let nfuncs = (reg.nfuncs as usize).min(LP_REG_FUNCS);
    let nstates = (reg.nstates as usize).min(LP_REG_STATES);
    let mut ids = [ObjectId::VMLINUX; LP_REG_OBJS];
    for (i, o) in reg.objs[..nobjs].iter().enumerate() {
        if o.name.is_null() {
            m.obj_names[i] = [0; LP_REG_NAME];
            m.obj_names[i][..7].copy_from_slice(b"vmlinux");
        } else {
            if !copy_name(o.name, &mut m.obj_names[i]) {
                return Err(RegError::Invalid);
            }
            ids[i] = object_id(l, &m.obj_names[i]).ok_or(RegError::NoSpace)?;
        }
        slot.callbacks[i].object.store(o.klp, Ordering::Relaxed);
    }
    for (i, f) in reg.funcs[..nfuncs].iter().enumerate() {
        if !copy_name(f.name, &mut m.func_names[i]) || f.obj as usize >= nobjs {
            return Err(RegError::Invalid);
        }
        m.sympos[i] = f.sympos;
    }
    // The functions, object by object (register.c lists them in object order).
    let mut built: [Option<Func<'static>>; LP_REG_FUNCS] = [const { None }; LP_REG_FUNCS];
    for (i, f) in reg.funcs[..nfuncs].iter().enumerate() {
        let size = shim::extent(f.new_addr as usize).ok_or(RegError::Invalid)?;
        let new = CodeRange::new(f.new_addr as usize, size).map_err(|_| RegError::Invalid)?;
        // SAFETY: `m` lives in a static and is not rewritten while the slot is in use.
        let fname: &'static str = unsafe { &*(as_str(&m.func_names[i]) as *const str) };
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
        // SAFETY: as above.
        let oname: &'static str = unsafe { &*(as_str(&m.obj_names[i]) as *const str) };
        let o = Object::new(ids[i], oname, &funcs[start..end]).with_callbacks(&slot.callbacks[i]);
        start = end;
        o
    });
    // SAFETY: as above.
    let objects = unsafe { slot.objects.set(objects) };
    for (i, st) in reg.states.iter().enumerate() {
        m.klp_states[i] = if i < nstates { st.klp } else { core::ptr::null_mut() };
    }
    let states: [State; LP_REG_STATES] = core::array::from_fn(|i| match reg.states.get(i) {
        Some(s) if i < nstates => State::new(StateId(s.id as u64), s.version),
        _ => State::new(StateId(0), 0),
    });
    // SAFETY: as above.
    let states = unsafe { slot.states.set(states) };
    // SAFETY: as above.
    let name: &'static str = unsafe { &*(as_str(&m.name) as *const str) };
    let patch = Patch::new(PatchId((NPATCH + k) as u32), name, &objects[..nobjs]).with_states(&states[..nstates]);
    let patch = if reg.replace { patch.replacing() } else { patch };
    // SAFETY: as above.
    let patch: &'static Patch<'static> = unsafe { slot.patch.set(patch) };
    m.module = reg.module;
    for obj in patch.objects() {
        if obj.id() != ObjectId::VMLINUX && OBJECT_LOADED[obj.id().0 as usize].load(Ordering::Relaxed) {
            resolve(l, k, obj.id())?;
        }
    }
    m.state = SlotState::Reserved;
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
    let m = meta(l, k);
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
    let m = meta(l, k);
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

/// The patch module's `klp_state` of state `id` of the patch with index `idx` (if it is a
/// registered patch's and declares it).
pub(crate) fn klp_state(l: &Locked<'_>, idx: usize, id: u64) -> Option<*mut c_void> {
    let k = idx.checked_sub(NPATCH)?;
    let patch = patch(l, k)?;
    let i = patch.states().iter().position(|s| s.id().0 == id)?;
    Some(meta(l, k).klp_states[i])
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
