//! Patches from shared objects: `dlopen`, the `livepatch_patch` descriptor, symbol
//! resolution, and the code regions trusted for stack walks.
//!
//! The descriptor (`include/livepatch_user.h`):
//!
//! ```c
//! struct livepatch_func  { const char *name; void *new_func;
//!                          const char *object; };  /* ABI 2: NULL, or a library's file name */
//! struct livepatch_patch {
//!     unsigned abi;                 /* LIVEPATCH_ABI (2; 1: functions without `object`) */
//!     const char *name;
//!     int replace;                  /* cumulative: replaces every enabled patch */
//!     unsigned nfuncs;
//!     const struct livepatch_func *funcs;
//!     int  (*pre_patch)(void);      /* each may be NULL; a non-zero pre_patch cancels */
//!     void (*post_patch)(void);
//!     void (*pre_unpatch)(void);
//!     void (*post_unpatch)(void);
//! };
//! extern const struct livepatch_patch livepatch_patch;
//! ```
//!
//! A replaced function is found by name in the process's global scope (`dlsym(RTLD_DEFAULT)`:
//! the main program if linked with `-rdynamic`, and every library loaded with `RTLD_GLOBAL`
//! or as a dependency); its size comes from its ELF symbol (`dladdr1`). The patch object is
//! opened `RTLD_NOW | RTLD_LOCAL` and **never closed**: a thread may return into its code at
//! any later time (a variant on a stack when it was disabled, a thread still in the
//! trampoline's jump), and nothing tells the process when that stops.
//!
//! A function whose `object` names a library (its file name, `"libfoo.so.1"`) is one of the
//! core's relocatable functions: it is resolved in that library when the library is loaded —
//! now, or later through the interposed `dlopen` ([`crate::objects`]).

use crate::error::Error;
use crate::walk;
use livepatch_core::patch::{CallbackContext, CallbackError};
use livepatch_core::{CodeRange, Func, Object, ObjectCallbacks, ObjectId, Patch, PatchId};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

/// The descriptor's ABI version (version 1, whose functions have no `object`, is accepted).
pub const ABI: u32 = 2;

/// `struct livepatch_func`.
#[repr(C)]
#[derive(Debug)]
pub struct CFunc {
    /// The replaced function's symbol.
    pub name: *const c_char,
    /// The variant.
    pub new_func: *const c_void,
    /// NULL: the function is found in the process's global scope; else the file name of
    /// the library it is in, which may be loaded later (ABI 2).
    pub object: *const c_char,
}

/// `struct livepatch_func` of ABI 1.
#[repr(C)]
#[derive(Debug)]
struct CFuncV1 {
    name: *const c_char,
    new_func: *const c_void,
}

/// `struct livepatch_patch`.
#[repr(C)]
#[derive(Debug)]
pub struct CPatch {
    /// [`ABI`].
    pub abi: c_uint,
    /// The patch's name.
    pub name: *const c_char,
    /// Non-zero: a cumulative patch replacing every enabled one.
    pub replace: c_int,
    /// Entries in `funcs`.
    pub nfuncs: c_uint,
    /// The replaced functions.
    pub funcs: *const CFunc,
    /// Before patching; non-zero cancels the enable.
    pub pre_patch: Option<extern "C" fn() -> c_int>,
    /// After the patching transition completed.
    pub post_patch: Option<extern "C" fn()>,
    /// Before an unpatching transition starts.
    pub pre_unpatch: Option<extern "C" fn()>,
    /// After the unpatching transition completed.
    pub post_unpatch: Option<extern "C" fn()>,
}

struct Callbacks {
    pre_patch: Option<extern "C" fn() -> c_int>,
    post_patch: Option<extern "C" fn()>,
    pre_unpatch: Option<extern "C" fn()>,
    post_unpatch: Option<extern "C" fn()>,
}

impl ObjectCallbacks for Callbacks {
    fn pre_patch(&self, _ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        match self.pre_patch.map_or(0, |f| f()) {
            0 => Ok(()),
            e => Err(CallbackError(e)),
        }
    }
    fn post_patch(&self, _ctx: &CallbackContext<'_, '_>) {
        if let Some(f) = self.post_patch {
            f()
        }
    }
    fn pre_unpatch(&self, _ctx: &CallbackContext<'_, '_>) {
        if let Some(f) = self.pre_unpatch {
            f()
        }
    }
    fn post_unpatch(&self, _ctx: &CallbackContext<'_, '_>) {
        if let Some(f) = self.post_unpatch {
            f()
        }
    }
}

fn dlerror() -> String {
    // SAFETY: `dlerror` returns null or a NUL-terminated string valid until the next dl call.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        return "unknown error".into();
    }
    // SAFETY: non-null, NUL-terminated (above).
    unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
}

/// `RTLD_DL_SYMENT` (`dlfcn.h`).
const RTLD_DL_SYMENT: c_int = 1;

/// The function symbol containing `addr`: (start, size, name).
fn symbol_of(addr: usize) -> Option<(usize, usize, String)> {
    // SAFETY: zeroed `Dl_info` is valid output storage.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let mut sym: *mut c_void = std::ptr::null_mut();
    // SAFETY: `info` and `sym` are valid output locations.
    let ok = unsafe { libc::dladdr1(addr as *const c_void, &mut info, &mut sym, RTLD_DL_SYMENT) };
    if ok == 0 || sym.is_null() || info.dli_saddr.is_null() {
        return None;
    }
    // SAFETY: with `RTLD_DL_SYMENT`, `sym` points to the symbol's `Elf64_Sym` in the object.
    let sym = unsafe { &*(sym as *const libc::Elf64_Sym) };
    let name = if info.dli_sname.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated symbol name owned by the loaded object.
        unsafe { CStr::from_ptr(info.dli_sname) }.to_string_lossy().into_owned()
    };
    Some((info.dli_saddr as usize, sym.st_size as usize, name))
}

/// The code range of the function symbol at exactly `addr`.
pub(crate) fn function_range(addr: usize, what: &str) -> Result<CodeRange, Error> {
    match symbol_of(addr) {
        Some((start, size, _)) if start == addr && size > 0 => {
            CodeRange::new(start, size).map_err(|_| Error::Symbol(what.into()))
        }
        _ => Err(Error::Symbol(format!("{what} (no sized symbol at {addr:#x})"))),
    }
}

/// Declares every executable segment of the loaded object containing `addr` as code
/// compiled with frame pointers (trusted by stack walks). Returns whether one was found.
pub fn trust_object_containing(addr: usize) -> bool {
    let mut state = (addr, Vec::<(usize, usize)>::new());
    extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the `state` tuple passed below, alive for the iteration.
        let (addr, out) = unsafe { &mut *(data as *mut (usize, Vec<(usize, usize)>)) };
        // SAFETY: the loader passes a valid `dl_phdr_info`.
        let info = unsafe { &*info };
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let base = info.dlpi_addr as usize;
        let segment = |p: &libc::Elf64_Phdr| (base + p.p_vaddr as usize, base + (p.p_vaddr + p.p_memsz) as usize);
        let loads = || phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD);
        if !loads().any(|p| (segment(p).0..segment(p).1).contains(addr)) {
            return 0;
        }
        out.extend(loads().filter(|p| p.p_flags & libc::PF_X != 0).map(segment));
        1
    }
    // SAFETY: `visit` only touches `state` through the pointer, during the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut state as *mut _ as *mut c_void) };
    let found = !state.1.is_empty();
    for (lo, hi) in state.1 {
        walk::trust_code(lo, hi);
    }
    found
}

/// A patch loaded from a shared object, its descriptors leaked (`'static`, as the engine
/// needs, and never freed: see the module documentation).
#[derive(Debug)]
pub struct LoadedPatch {
    /// The patch descriptor the engine enables.
    pub patch: &'static Patch<'static>,
    /// The path it came from.
    pub path: String,
}

/// Opens `path`, reads its descriptor and builds the core's patch with id `id`; `library`
/// gives the object id of a library named by a function (registering it if new). The
/// functions of libraries are left unresolved (the caller resolves those already loaded).
///
/// The object's constructors run, and its `livepatch_patch` is read as the header's
/// `struct livepatch_patch`: see [`Runtime::apply`](crate::Runtime::apply)'s "Trust".
pub fn load(
    path: &str,
    id: PatchId,
    library: &mut dyn FnMut(&str) -> Result<ObjectId, Error>,
) -> Result<LoadedPatch, Error> {
    let cpath = CString::new(path).map_err(|_| Error::Load("path contains NUL".into()))?;
    // libc's, not the interposer's (the runtime's lock is held), and so are the `dlopen`s
    // and `dlclose`s of the object's constructors (the caller holds the runtime's lock as
    // `Runtime::inner` takes it: `objects::enter_interposer`).
    // SAFETY: dlopen with a valid C string; the object's constructors run (that is the
    // operator's choice of patch).
    let handle = unsafe { crate::objects::real_dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(Error::Load(dlerror()));
    }
    // SAFETY: `handle` is a valid dlopen handle, the name a C string literal.
    let desc = unsafe { libc::dlsym(handle, c"livepatch_patch".as_ptr()) } as *const CPatch;
    if desc.is_null() {
        return Err(Error::Descriptor("no `livepatch_patch` symbol".into()));
    }
    // SAFETY: the object exports `livepatch_patch` as a `struct livepatch_patch` (its
    // contract); it stays mapped because the handle is never closed.
    let desc = unsafe { &*desc };
    if desc.abi != ABI && desc.abi != 1 {
        return Err(Error::Descriptor(format!("ABI {} (expected 1 or {ABI})", desc.abi)));
    }
    if desc.name.is_null() || desc.funcs.is_null() || desc.nfuncs == 0 || desc.nfuncs > 4096 {
        return Err(Error::Descriptor("missing name or functions".into()));
    }
    // SAFETY: non-null C string in the loaded object.
    let name: &'static str =
        Box::leak(unsafe { CStr::from_ptr(desc.name) }.to_string_lossy().into_owned().into_boxed_str());
    let cfuncs: Vec<CFunc> = if desc.abi == 1 {
        // SAFETY: `funcs` points to `nfuncs` entries of ABI 1 (the descriptor's contract).
        let v1 = unsafe { std::slice::from_raw_parts(desc.funcs as *const CFuncV1, desc.nfuncs as usize) };
        v1.iter().map(|f| CFunc { name: f.name, new_func: f.new_func, object: std::ptr::null() }).collect()
    } else {
        // SAFETY: `funcs` points to `nfuncs` entries (the descriptor's contract).
        let v2 = unsafe { std::slice::from_raw_parts(desc.funcs, desc.nfuncs as usize) };
        v2.iter().map(|f| CFunc { name: f.name, new_func: f.new_func, object: f.object }).collect()
    };
    // The patch object is built with frame pointers (its contract): its frames are trusted.
    if !trust_object_containing(cfuncs[0].new_func as usize) {
        return Err(Error::Descriptor("the variants are not in a loaded object".into()));
    }
    // (object, function) in descriptor order; objects in order of first appearance.
    let mut process = Vec::new();
    let mut late: Vec<(ObjectId, &'static str, Vec<Func<'static>>)> = Vec::new();
    for f in &cfuncs {
        if f.name.is_null() || f.new_func.is_null() {
            return Err(Error::Descriptor("a function entry without name or variant".into()));
        }
        // SAFETY: non-null C string in the loaded object.
        let fname = unsafe { CStr::from_ptr(f.name) };
        let new_name: &'static str = Box::leak(fname.to_string_lossy().into_owned().into_boxed_str());
        // A variant is code being switched away from when its patch is disabled or replaced:
        // the walks must see return addresses into it, and they see only trusted code (the
        // conservative scan's soundness rests on it, as for the originals below).
        if !walk::is_trusted(f.new_func as usize) {
            return Err(Error::Untrusted(format!("{new_name}'s variant")));
        }
        if !f.object.is_null() {
            // SAFETY: non-null C string in the loaded object.
            let lib = unsafe { CStr::from_ptr(f.object) }.to_string_lossy().into_owned();
            if lib.is_empty() || lib.contains('/') {
                return Err(Error::Descriptor(format!("object `{lib}` of `{new_name}` is not a file name")));
            }
            let oid = library(&lib)?;
            let new = function_range(f.new_func as usize, new_name)?;
            match late.iter_mut().find(|(o, _, _)| *o == oid) {
                Some((_, _, funcs)) => funcs.push(Func::relocatable(new_name, new)),
                None => {
                    let lib: &'static str = Box::leak(lib.into_boxed_str());
                    late.push((oid, lib, vec![Func::relocatable(new_name, new)]));
                }
            }
            continue;
        }
        // SAFETY: `RTLD_DEFAULT` lookup of a C string.
        let old = unsafe { libc::dlsym(libc::RTLD_DEFAULT, fname.as_ptr()) } as usize;
        let fname = new_name;
        if old == 0 {
            return Err(Error::Symbol(fname.into()));
        }
        let old = function_range(old, fname)?;
        if old.len() < crate::hook::ENTRY_NOPS {
            return Err(Error::NotPatchable(fname.into()));
        }
        // SAFETY: `old` is a function of at least 16 bytes, resolved by symbol.
        if !unsafe { crate::hook::is_patchable(old.start().get()) } {
            return Err(Error::NotPatchable(fname.into()));
        }
        if !walk::is_trusted(old.start().get()) {
            return Err(Error::Untrusted(fname.into()));
        }
        let new = function_range(f.new_func as usize, fname)?;
        process.push(Func::new(fname, old, new));
    }
    let callbacks = (desc.pre_patch.is_some()
        || desc.post_patch.is_some()
        || desc.pre_unpatch.is_some()
        || desc.post_unpatch.is_some())
    .then(|| -> &'static Callbacks {
        Box::leak(Box::new(Callbacks {
            pre_patch: desc.pre_patch,
            post_patch: desc.post_patch,
            pre_unpatch: desc.pre_unpatch,
            post_unpatch: desc.post_unpatch,
        }))
    });
    let mut objects = Vec::new();
    if !process.is_empty() {
        let funcs: &'static [Func<'static>] = Box::leak(process.into_boxed_slice());
        objects.push(Object::new(ObjectId::VMLINUX, "process", funcs));
    }
    for (oid, lib, funcs) in late {
        let funcs: &'static [Func<'static>] = Box::leak(funcs.into_boxed_slice());
        objects.push(Object::new(oid, lib, funcs));
    }
    // The descriptor's callbacks belong to its first object: the process's functions if it
    // has any, else its first library (they run when that library comes and goes).
    if let (Some(cb), Some(first)) = (callbacks, objects.first_mut()) {
        *first = std::mem::replace(first, Object::new(ObjectId::VMLINUX, "", &[])).with_callbacks(cb);
    }
    let objects: &'static [Object<'static>] = Box::leak(objects.into_boxed_slice());
    let mut patch = Patch::new(id, name, objects);
    if desc.replace != 0 {
        patch = patch.replacing();
    }
    Ok(LoadedPatch { patch: Box::leak(Box::new(patch)), path: path.into() })
}
