// SPDX-License-Identifier: GPL-2.0

//! The patches this module carries, declared in Rust: target symbol → replacement function.
//!
//! A declaration is static ([`DECLS`]); the core's descriptors ([`Patch`] ⊃ [`Object`] ⊃
//! [`Func`]) need the resolved addresses, so they are built into static storage when a patch
//! is enabled and are only rebuilt once the engine no longer references them.

use crate::shim;
use core::cell::UnsafeCell;
use core::ffi::{c_int, c_ulong, c_void, CStr};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};
use livepatch_core::{CodeRange, Func, Object, ObjectId, Patch, PatchId};

/// One replaced function.
pub(crate) struct FuncDecl {
    /// The original's symbol.
    pub(crate) symbol: &'static CStr,
    /// The replacement (its address; its size comes from kallsyms).
    pub(crate) new: fn() -> usize,
}

/// One patch: functions of one object.
pub(crate) struct PatchDecl {
    pub(crate) name: &'static CStr,
    pub(crate) object: ObjectId,
    pub(crate) object_name: &'static str,
    /// The object's symbols are exported (a module): resolve with `symbol_get`, which pins the
    /// module; otherwise by name in the object's symbol table (`lp_shim_find_symbol`, as the
    /// kernel's `klp_find_object_symbol`).
    pub(crate) exported: bool,
    /// A module that may come and go while the patch is enabled: its functions are
    /// relocatable, resolved when the module is loaded (at enable, or by the module notifier)
    /// and forgotten when it goes. The module is not pinned.
    pub(crate) late: bool,
    pub(crate) funcs: &'static [FuncDecl],
    /// Further symbols of the object that the replacements call (resolved and released with
    /// the functions).
    pub(crate) imports: &'static [Import],
    /// An atomic-replace (cumulative) patch: it replaces every patch enabled before it.
    pub(crate) replace: bool,
}

/// A symbol a replacement calls, resolved when the patch is built.
pub(crate) struct Import {
    pub(crate) symbol: &'static CStr,
    pub(crate) addr: &'static AtomicUsize,
}

pub(crate) const MAX_FUNCS: usize = 4;

/// How many patches the module carries.
pub(crate) const NPATCH: usize = 6;

/// The object id of `lp_target.ko`.
pub(crate) const LP_TARGET: ObjectId = ObjectId(1);

/// The object id of `lp_late.ko` (loaded and unloaded while its patch is enabled).
pub(crate) const LP_LATE: ObjectId = ObjectId(2);

/// Everything this module can patch.
pub(crate) static DECLS: [PatchDecl; NPATCH] = [
    PatchDecl {
        name: c"lp_target",
        object: LP_TARGET,
        object_name: "lp_target",
        exported: true,
        late: false,
        funcs: &[
            FuncDecl { symbol: c"lp_target_read", new: || lp_rs_target_read as usize },
            FuncDecl { symbol: c"lp_target_tick", new: || lp_rs_target_tick as usize },
            FuncDecl { symbol: c"lp_target_sleep", new: || lp_rs_target_sleep as usize },
            FuncDecl { symbol: c"lp_target_block", new: || lp_rs_target_block as usize },
        ],
        imports: &[],
        replace: false,
    },
    PatchDecl {
        name: c"cmdline",
        object: ObjectId::VMLINUX,
        object_name: "vmlinux",
        exported: false,
        late: false,
        funcs: &[FuncDecl { symbol: c"cmdline_proc_show", new: || lp_rs_cmdline_proc_show as usize }],
        imports: &[],
        replace: false,
    },
    PatchDecl {
        name: c"cmdline_stacked",
        object: ObjectId::VMLINUX,
        object_name: "vmlinux",
        exported: false,
        late: false,
        funcs: &[FuncDecl { symbol: c"cmdline_proc_show", new: || lp_rs_cmdline_stacked as usize }],
        imports: &[],
        replace: false,
    },
    PatchDecl {
        name: c"cmdline_replace",
        object: ObjectId::VMLINUX,
        object_name: "vmlinux",
        exported: false,
        late: false,
        funcs: &[FuncDecl { symbol: c"cmdline_proc_show", new: || lp_rs_cmdline_replace as usize }],
        imports: &[],
        replace: true,
    },
    PatchDecl {
        name: c"stress",
        object: LP_TARGET,
        object_name: "lp_target",
        exported: true,
        late: false,
        funcs: &[
            FuncDecl { symbol: c"lp_target_f", new: || lp_rs_target_f as usize },
            FuncDecl { symbol: c"lp_target_g", new: || lp_rs_target_g as usize },
            FuncDecl { symbol: c"lp_target_twrun", new: || lp_rs_target_twrun as usize },
            FuncDecl { symbol: c"lp_target_twstep", new: || lp_rs_target_twstep as usize },
        ],
        imports: &[
            Import { symbol: c"lp_target_g", addr: &TARGET_G },
            Import { symbol: c"lp_target_twstep", addr: &TARGET_TWSTEP },
            Import { symbol: c"lp_target_run_task_work", addr: &TARGET_RUN_TASK_WORK },
        ],
        replace: false,
    },
    LATE_DECL,
];

/// The patch of a module that is not loaded yet (issue 11 item 6, issue 15 item 3).
const LATE_DECL: PatchDecl = PatchDecl {
    name: c"late",
    object: LP_LATE,
    object_name: "lp_late",
    exported: false,
    late: true,
    funcs: &[FuncDecl { symbol: c"lp_late_value", new: || lp_rs_late_value as usize }],
    imports: &[],
    replace: false,
};

static TARGET_G: AtomicUsize = AtomicUsize::new(0);
static TARGET_TWSTEP: AtomicUsize = AtomicUsize::new(0);
static TARGET_RUN_TASK_WORK: AtomicUsize = AtomicUsize::new(0);

/// Calls the `fn() -> c_int` at `addr` (an imported symbol), or returns 0 if unresolved.
fn call_int(addr: &AtomicUsize) -> c_int {
    match addr.load(Ordering::Relaxed) {
        0 => 0,
        // SAFETY: a resolved import of type `int (*)(void)`, pinned (symbol_get) while the
        // patch that uses it is built.
        a => unsafe { core::mem::transmute::<usize, extern "C" fn() -> c_int>(a)() },
    }
}

// ---- the replacements -------------------------------------------------------------------------

/// Replaces `lp_target_read()` (called by user processes reading /proc/lp_target).
#[no_mangle]
#[inline(never)]
pub(crate) extern "C" fn lp_rs_target_read() -> c_int {
    2
}

/// Replaces `lp_target_tick()` (called by the kthread lp_ticker).
#[no_mangle]
#[inline(never)]
pub(crate) extern "C" fn lp_rs_target_tick() -> c_int {
    core::hint::black_box(2)
}

/// Replaces `lp_target_sleep()` (where the kthread lp_sleeper is held): naps briefly instead.
#[no_mangle]
#[inline(never)]
pub(crate) extern "C" fn lp_rs_target_sleep() -> c_int {
    // SAFETY: called in process context (a kthread).
    unsafe { shim::lp_shim_msleep(5) };
    2
}

/// Replaces `lp_late_value()` of `lp_late.ko` (read through /proc/lp_late).
#[no_mangle]
#[inline(never)]
pub(crate) extern "C" fn lp_rs_late_value() -> c_int {
    core::hint::black_box(2)
}

/// Replaces `lp_target_g()` (stress): the new universe's g.
#[no_mangle]
#[inline(never)]
pub(crate) extern "C" fn lp_rs_target_g() -> c_int {
    core::hint::black_box(2)
}

/// Replaces `lp_target_f()` (stress): 20 + g, with g called through its own hook, so a task
/// that runs this f with the old g returns 21.
#[no_mangle]
#[inline(never)]
pub(crate) extern "C" fn lp_rs_target_f() -> c_int {
    20 + call_int(&TARGET_G)
}

/// Replaces `lp_target_twstep()` (stress): the new universe's step.
#[no_mangle]
#[inline(never)]
pub(crate) extern "C" fn lp_rs_target_twstep() -> c_int {
    // Not the same body as `lp_rs_target_g`: identical functions are merged by the compiler,
    // and two variants may not share code.
    core::hint::black_box(1) + 1
}

/// Replaces `lp_target_twrun()` (stress): runs pending task work inside itself, as the
/// original does, then 20 + the step called through its hook.
#[no_mangle]
#[inline(never)]
pub(crate) extern "C" fn lp_rs_target_twrun() -> c_int {
    // SAFETY: process context.
    unsafe { shim::lp_shim_udelay(20) };
    let _ = call_int(&TARGET_RUN_TASK_WORK);
    20 + call_int(&TARGET_TWSTEP)
}

/// Replaces `lp_target_block()`: returns at once (a user task that slept in the original is
/// switched by a fake signal and restarts its read into this).
#[no_mangle]
#[inline(never)]
pub(crate) extern "C" fn lp_rs_target_block() -> c_int {
    core::hint::black_box(3) - 1
}

/// `cmdline_proc_show()` of the patch stacked on `cmdline`.
///
/// # Safety
///
/// Called by the kernel in place of `cmdline_proc_show()`: `m` is a live seq_file.
#[no_mangle]
#[inline(never)]
pub(crate) unsafe extern "C" fn lp_rs_cmdline_stacked(m: *mut c_void, _v: *mut c_void) -> c_int {
    const MSG: &[u8] = b"livepatch-rs: cmdline_proc_show is patched by cmdline_stacked\n";
    // SAFETY: `m` is the seq_file the original was called with.
    unsafe { shim::seq_write(m, MSG.as_ptr().cast(), MSG.len()) };
    0
}

/// `cmdline_proc_show()` of the atomic-replace patch.
///
/// # Safety
///
/// Called by the kernel in place of `cmdline_proc_show()`: `m` is a live seq_file.
#[no_mangle]
#[inline(never)]
pub(crate) unsafe extern "C" fn lp_rs_cmdline_replace(m: *mut c_void, _v: *mut c_void) -> c_int {
    const MSG: &[u8] = b"livepatch-rs: cmdline_proc_show is patched by cmdline_replace\n";
    // SAFETY: `m` is the seq_file the original was called with.
    unsafe { shim::seq_write(m, MSG.as_ptr().cast(), MSG.len()) };
    0
}

/// Replaces `cmdline_proc_show()` (fs/proc/cmdline.c), the function the kernel's own
/// livepatch sample patches.
///
/// # Safety
///
/// Called by the kernel in place of `cmdline_proc_show()`: `m` is a live seq_file.
#[no_mangle]
#[inline(never)]
pub(crate) unsafe extern "C" fn lp_rs_cmdline_proc_show(m: *mut c_void, _v: *mut c_void) -> c_int {
    const MSG: &[u8] = b"livepatch-rs: cmdline_proc_show is patched\n";
    // SAFETY: `m` is the seq_file the original was called with.
    unsafe { shim::seq_write(m, MSG.as_ptr().cast(), MSG.len()) };
    0
}

// ---- descriptors ------------------------------------------------------------------------------

/// Static storage written only while the engine does not reference it (engine lock held).
pub(crate) struct Cell<T>(UnsafeCell<MaybeUninit<T>>);

// SAFETY: written only under the engine lock while no reader exists (see `Descriptors`).
// For every `T`, not `T: Send + Sync`: some values stored hold raw kernel pointers
// (`registry::Meta`), and those are only touched under the engine lock. The values whose
// `&'static T` is read without the lock (`Live`, the core's descriptors) are `Send + Sync`
// themselves (the core's types are); a new `Cell` static must keep to one of the two cases.
unsafe impl<T> Sync for Cell<T> {}

impl<T> Cell<T> {
    pub(crate) const fn new() -> Self {
        Cell(UnsafeCell::new(MaybeUninit::uninit()))
    }

    /// # Safety
    /// No reference to the previous value may be alive, and nobody may read concurrently.
    pub(crate) unsafe fn set(&self, value: T) -> &'static T
    where
        T: 'static,
    {
        // SAFETY: per the contract; `self` is a static.
        unsafe {
            let p = &mut *self.0.get();
            p.write(value);
            &*(p.as_ptr())
        }
    }

    /// The value's address, for exclusive access under the engine lock.
    pub(crate) fn as_mut_ptr(&self) -> *mut T {
        self.0.get().cast::<T>()
    }

    /// # Safety
    /// `set` must have run.
    pub(crate) unsafe fn get(&'static self) -> &'static T {
        // SAFETY: per the contract.
        unsafe { (*self.0.get()).assume_init_ref() }
    }
}

/// The built descriptors of one patch.
pub(crate) struct Descriptors {
    funcs: Cell<[Func<'static>; MAX_FUNCS]>,
    objects: Cell<[Object<'static>; 1]>,
    pub(crate) patch: Cell<Patch<'static>>,
}

impl Descriptors {
    const fn new() -> Self {
        Descriptors { funcs: Cell::new(), objects: Cell::new(), patch: Cell::new() }
    }
}

pub(crate) static DESCRIPTORS: [Descriptors; NPATCH] = [const { Descriptors::new() }; NPATCH];

/// Why resolving a patch failed (printed with `{:?}`).
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) enum ResolveError {
    Symbol(&'static CStr, c_int),
    Replacement(&'static CStr),
    Range,
}

/// Resolves `decl`'s symbols and builds its descriptors into `DESCRIPTORS[idx]`.
///
/// # Safety
/// Engine lock held, and the previous descriptors (if any) are not registered with the engine.
pub(crate) unsafe fn build(idx: usize) -> Result<&'static Patch<'static>, ResolveError> {
    let decl = &DECLS[idx];
    let d = &DESCRIPTORS[idx];
    if decl.late {
        // SAFETY: this function's contract.
        return unsafe { build_late(idx) };
    }
    let mut olds = [(0usize, 0usize); MAX_FUNCS];
    for (i, f) in decl.funcs.iter().enumerate() {
        let (mut addr, mut size): (c_ulong, c_ulong) = (0, 0);
        let rc = if decl.exported {
            // SAFETY: valid C string and out-pointers.
            unsafe { shim::lp_shim_resolve(f.symbol.as_ptr(), true, &mut addr, &mut size) }
        } else {
            // vmlinux, by name and position (0: the name must be unique).
            // SAFETY: valid C string and out-pointers.
            unsafe { shim::lp_shim_find_symbol(core::ptr::null(), f.symbol.as_ptr(), 0, &mut addr, &mut size) }
        };
        if rc != 0 {
            release(idx, i);
            return Err(ResolveError::Symbol(f.symbol, rc));
        }
        olds[i] = (addr as usize, size as usize);
    }
    for (i, import) in decl.imports.iter().enumerate() {
        let (mut addr, mut size): (c_ulong, c_ulong) = (0, 0);
        // SAFETY: valid C string and out-pointers.
        let rc = unsafe { shim::lp_shim_resolve(import.symbol.as_ptr(), decl.exported, &mut addr, &mut size) };
        if rc != 0 {
            release_imports(idx, i);
            release(idx, decl.funcs.len());
            return Err(ResolveError::Symbol(import.symbol, rc));
        }
        import.addr.store(addr as usize, Ordering::Relaxed);
    }
    let mk = |i: usize| -> Result<Func<'static>, ResolveError> {
        let Some(f) = decl.funcs.get(i) else {
            // Unused tail: never part of the object's slice.
            return Ok(Func::new("", CodeRange::new(1, 1).map_err(|_| ResolveError::Range)?, CodeRange::new(2, 1).map_err(|_| ResolveError::Range)?));
        };
        let new = (f.new)();
        let new_size = shim::extent(new).ok_or(ResolveError::Replacement(f.symbol))?;
        let old = CodeRange::new(olds[i].0, olds[i].1).map_err(|_| ResolveError::Range)?;
        let new = CodeRange::new(new, new_size).map_err(|_| ResolveError::Range)?;
        Ok(Func::new(f.symbol.to_str().unwrap_or("?"), old, new))
    };
    let built = (|| Ok::<_, ResolveError>([mk(0)?, mk(1)?, mk(2)?, mk(3)?]))();
    let funcs = match built {
        Ok(f) => f,
        Err(e) => {
            release_imports(idx, decl.imports.len());
            release(idx, decl.funcs.len());
            return Err(e);
        }
    };
    // SAFETY: per this function's contract nothing references the old descriptors.
    let funcs = unsafe { d.funcs.set(funcs) };
    let name = decl.name.to_str().unwrap_or("?");
    // SAFETY: as above.
    let objects = unsafe { d.objects.set([Object::new(decl.object, decl.object_name, &funcs[..decl.funcs.len()])]) };
    let patch = Patch::new(PatchId(idx as u32), name, objects);
    let patch = if decl.replace { patch.replacing() } else { patch };
    // SAFETY: as above.
    Ok(unsafe { d.patch.set(patch) })
}

/// Builds the descriptors of a late patch: relocatable functions, resolved now if the module
/// is loaded (otherwise the module notifier resolves them when it comes).
///
/// # Safety
/// As [`build`].
unsafe fn build_late(idx: usize) -> Result<&'static Patch<'static>, ResolveError> {
    let decl = &DECLS[idx];
    let d = &DESCRIPTORS[idx];
    let mk = |i: usize| -> Result<Func<'static>, ResolveError> {
        let Some(f) = decl.funcs.get(i) else {
            // Unused tail: never part of the object's slice.
            return Ok(Func::relocatable("", CodeRange::new(2, 1).map_err(|_| ResolveError::Range)?));
        };
        let new = (f.new)();
        let new_size = shim::extent(new).ok_or(ResolveError::Replacement(f.symbol))?;
        let new = CodeRange::new(new, new_size).map_err(|_| ResolveError::Range)?;
        Ok(Func::relocatable(f.symbol.to_str().unwrap_or("?"), new))
    };
    let funcs = [mk(0)?, mk(1)?, mk(2)?, mk(3)?];
    // SAFETY: per this function's contract nothing references the old descriptors.
    let funcs = unsafe { d.funcs.set(funcs) };
    let name = decl.name.to_str().unwrap_or("?");
    // SAFETY: as above.
    let objects = unsafe { d.objects.set([Object::new(decl.object, decl.object_name, &funcs[..decl.funcs.len()])]) };
    let patch = Patch::new(PatchId(idx as u32), name, objects);
    let patch = if decl.replace { patch.replacing() } else { patch };
    // SAFETY: as above.
    let patch: &'static Patch<'static> = unsafe { d.patch.set(patch) };
    if crate::backend::OBJECT_LOADED[decl.object.0 as usize].load(Ordering::Relaxed) {
        resolve_late(idx, patch)?;
    }
    Ok(patch)
}

/// Resolves the relocatable functions of late patch `idx` in its (loaded or coming) module:
/// by name and position in the module's own symbol table, no export needed.
pub(crate) fn resolve_late(idx: usize, patch: &'static Patch<'static>) -> Result<(), ResolveError> {
    let decl = &DECLS[idx];
    let mut objname = [0u8; 64];
    let name = decl.object_name.as_bytes();
    if name.len() >= objname.len() {
        return Err(ResolveError::Range);
    }
    objname[..name.len()].copy_from_slice(name);
    for (f, fdecl) in patch.objects()[0].funcs().iter().zip(decl.funcs) {
        let (mut addr, mut size): (c_ulong, c_ulong) = (0, 0);
        // SAFETY: NUL-terminated names and valid out-pointers; process context.
        let rc = unsafe {
            shim::lp_shim_find_symbol(objname.as_ptr().cast(), fdecl.symbol.as_ptr(), 0, &mut addr, &mut size)
        };
        if rc != 0 {
            return Err(ResolveError::Symbol(fdecl.symbol, rc));
        }
        let old = CodeRange::new(addr as usize, size as usize).map_err(|_| ResolveError::Range)?;
        f.resolve(old).map_err(|_| ResolveError::Range)?;
    }
    Ok(())
}

/// Creates built-in patch `idx`'s sysfs directory with its object's and functions'.
pub(crate) fn add_dirs(idx: usize) -> c_int {
    let decl = &DECLS[idx];
    let mut obj = [0u8; 64];
    let name = decl.object_name.as_bytes();
    if name.len() >= obj.len() {
        return -22;
    }
    obj[..name.len()].copy_from_slice(name);
    // SAFETY: NUL-terminated names; process context (module init).
    unsafe {
        let mut rc = shim::lp_shim_dir_add(idx as u32, decl.name.as_ptr(), true);
        if rc == 0 {
            rc = shim::lp_shim_dir_add_object(idx as u32, 0, obj.as_ptr().cast());
        }
        for f in decl.funcs {
            if rc == 0 {
                rc = shim::lp_shim_dir_add_func(idx as u32, 0, f.symbol.as_ptr(), 0);
            }
        }
        rc
    }
}

/// Drops the references `build` took on the first `n` imports of patch `idx`.
fn release_imports(idx: usize, n: usize) {
    let decl = &DECLS[idx];
    for import in decl.imports.iter().take(n) {
        import.addr.store(0, Ordering::Relaxed);
        // SAFETY: valid C string; balanced with a successful resolve.
        unsafe { shim::lp_shim_release(import.symbol.as_ptr(), decl.exported) };
    }
}

/// Drops every reference `build` took for patch `idx` (functions and imports).
pub(crate) fn release_all(idx: usize) {
    release_imports(idx, DECLS[idx].imports.len());
    release(idx, DECLS[idx].funcs.len());
}

/// Drops the references `build` took on the first `n` symbols of patch `idx`.
pub(crate) fn release(idx: usize, n: usize) {
    let decl = &DECLS[idx];
    for f in decl.funcs.iter().take(n) {
        // SAFETY: valid C string; balanced with a successful resolve.
        unsafe { shim::lp_shim_release(f.symbol.as_ptr(), decl.exported) };
    }
}

/// The name of the function (original or replacement) of a patch that `range` is: of a
/// built-in patch whose descriptors exist (`built(idx)`, from the engine state the caller
/// holds), else of a registered one. The caller holds the engine lock.
pub(crate) fn func_name(range: CodeRange, built: impl Fn(usize) -> bool) -> Option<&'static str> {
    for (idx, decl) in DECLS.iter().enumerate() {
        if !built(idx) {
            continue;
        }
        // SAFETY: built.
        let patch = unsafe { DESCRIPTORS[idx].patch.get() };
        for (_, f) in patch.funcs() {
            if f.old() == Some(range) || f.new_code() == range {
                return Some(f.name());
            }
        }
        let _ = decl;
    }
    crate::registry::func_name(range)
}
