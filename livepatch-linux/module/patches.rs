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
    /// module; otherwise (vmlinux) with `kallsyms_lookup_name`.
    pub(crate) exported: bool,
    pub(crate) funcs: &'static [FuncDecl],
}

pub(crate) const MAX_FUNCS: usize = 4;

/// The object id of `lp_target.ko`.
pub(crate) const LP_TARGET: ObjectId = ObjectId(1);

/// Everything this module can patch.
pub(crate) static DECLS: [PatchDecl; 2] = [
    PatchDecl {
        name: c"lp_target",
        object: LP_TARGET,
        object_name: "lp_target",
        exported: true,
        funcs: &[
            FuncDecl { symbol: c"lp_target_read", new: || lp_rs_target_read as usize },
            FuncDecl { symbol: c"lp_target_tick", new: || lp_rs_target_tick as usize },
            FuncDecl { symbol: c"lp_target_sleep", new: || lp_rs_target_sleep as usize },
        ],
    },
    PatchDecl {
        name: c"cmdline",
        object: ObjectId::VMLINUX,
        object_name: "vmlinux",
        exported: false,
        funcs: &[FuncDecl { symbol: c"cmdline_proc_show", new: || lp_rs_cmdline_proc_show as usize }],
    },
];

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

/// Replaces `cmdline_proc_show()` (fs/proc/cmdline.c), the function the kernel's own
/// livepatch sample patches.
#[no_mangle]
#[inline(never)]
pub(crate) extern "C" fn lp_rs_cmdline_proc_show(m: *mut c_void, _v: *mut c_void) -> c_int {
    const MSG: &[u8] = b"livepatch-rs: cmdline_proc_show is patched\n";
    // SAFETY: `m` is the seq_file the original was called with.
    unsafe { shim::seq_write(m, MSG.as_ptr().cast(), MSG.len()) };
    0
}

// ---- descriptors ------------------------------------------------------------------------------

/// Static storage written only while the engine does not reference it (engine lock held).
pub(crate) struct Cell<T>(UnsafeCell<MaybeUninit<T>>);

// SAFETY: written only under the engine lock while no reader exists (see `Descriptors`).
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

pub(crate) static DESCRIPTORS: [Descriptors; 2] = [Descriptors::new(), Descriptors::new()];

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
    let mut olds = [(0usize, 0usize); MAX_FUNCS];
    for (i, f) in decl.funcs.iter().enumerate() {
        let (mut addr, mut size): (c_ulong, c_ulong) = (0, 0);
        // SAFETY: valid C string and out-pointers.
        let rc = unsafe { shim::lp_shim_resolve(f.symbol.as_ptr(), decl.exported, &mut addr, &mut size) };
        if rc != 0 {
            release(idx, i);
            return Err(ResolveError::Symbol(f.symbol, rc));
        }
        olds[i] = (addr as usize, size as usize);
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
            release(idx, decl.funcs.len());
            return Err(e);
        }
    };
    // SAFETY: per this function's contract nothing references the old descriptors.
    let funcs = unsafe { d.funcs.set(funcs) };
    let name = decl.name.to_str().unwrap_or("?");
    // SAFETY: as above.
    let objects = unsafe { d.objects.set([Object::new(decl.object, decl.object_name, &funcs[..decl.funcs.len()])]) };
    // SAFETY: as above.
    Ok(unsafe { d.patch.set(Patch::new(PatchId(idx as u32), name, objects)) })
}

/// Drops the references `build` took on the first `n` symbols of patch `idx`.
pub(crate) fn release(idx: usize, n: usize) {
    let decl = &DECLS[idx];
    for f in decl.funcs.iter().take(n) {
        // SAFETY: valid C string; balanced with a successful resolve.
        unsafe { shim::lp_shim_release(f.symbol.as_ptr(), decl.exported) };
    }
}

/// The name of the function (original or replacement) of patch `idx` that `range` is.
pub(crate) fn func_name(range: CodeRange) -> Option<&'static str> {
    for (idx, decl) in DECLS.iter().enumerate() {
        if !crate::control::built(idx) {
            continue;
        }
        // SAFETY: built.
        let patch = unsafe { DESCRIPTORS[idx].patch.get() };
        for (_, f) in patch.funcs() {
            if f.old() == range || f.new_code() == range {
                return Some(f.name());
            }
        }
        let _ = decl;
    }
    None
}
