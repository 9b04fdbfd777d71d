//! Libraries loaded and unloaded while patches are registered: the core's late and going
//! objects (the kernel's module notifier, `klp_module_coming` / `klp_module_going`).
//!
//! A patch names a function of a library by the library's file name (the basename of the
//! path it is loaded from, `struct livepatch_func.object`); each such library is one of the
//! core's objects ([`ObjectId`] 1, 2, …; the program's global scope is
//! [`ObjectId::VMLINUX`]). The runtime **interposes `dlopen` and `dlclose`** (the program
//! links `liblivepatch_user.so` before libc, or preloads it, so its definitions come first
//! in the global scope):
//!
//! * after the real `dlopen` returned, and before the interposer returns to its caller, every
//!   named library now loaded is *coming*: its functions are resolved in it, checked
//!   patchable, its executable segments trusted, and the engine's `object_coming` hooks and
//!   switches them per the core's rules. The library's constructors have already run: they
//!   ran the original code (a constructor cannot be patched by this mechanism);
//! * a `dlclose` that drops the last handle the interposer handed out for a patched library
//!   runs the engine's `object_going` (unhooked, addresses forgotten, segments no longer
//!   trusted) **before** the real `dlclose`, while the text is still mapped.
//!
//! A coming library is held open by the runtime (a `RTLD_NOLOAD` handle, the *pin*) while it
//! is known as loaded, so its text is never unmapped except through the interposed
//! `dlclose`: a library loaded only as a dependency of another one stays mapped when that
//! one is closed. A coming library whose functions cannot be resolved, are not patchable, or
//! conflict is refused by the engine with a typed error: it stays loaded **unpatched** (its
//! state says why: `livepatchctl libs`, `stats`), nothing of it is hooked.

use crate::walk;
use livepatch_core::ObjectId;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Libraries the patches can name, at most.
pub const MAX_LIBRARIES: usize = 64;

/// Whether library `id` is loaded and patched as far as the engine knows (read by the
/// backend's `object_loaded`, written by the runtime under its lock).
static LOADED: [AtomicBool; MAX_LIBRARIES] = [const { AtomicBool::new(false) }; MAX_LIBRARIES];

/// Whether the engine sees `object` as loaded.
pub(crate) fn is_loaded(object: ObjectId) -> bool {
    match object.0 {
        0 => true,
        n => LOADED.get(n as usize - 1).is_some_and(|l| l.load(Ordering::Relaxed)),
    }
}

/// A library's state as the runtime tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LibraryState {
    /// Not loaded (or not yet seen loaded).
    Unloaded,
    /// Loaded and handed to the engine: `base` is its load address.
    Loaded {
        /// The link map (`dlopen` handle) of the library.
        map: usize,
        /// The runtime's own `RTLD_NOLOAD` handle keeping it mapped.
        pin: usize,
        /// Its load address (`dlpi_addr`).
        base: usize,
        /// Its executable segments, trusted by stack walks while it is loaded.
        text: Vec<(usize, usize)>,
    },
    /// Loaded, but the engine (or the resolution before it) refused it: it runs unpatched
    /// until it is unloaded and loaded again.
    Refused {
        /// Its load address.
        base: usize,
        /// Why.
        error: String,
    },
}

/// A library some patch names.
#[derive(Clone, Debug)]
pub struct Library {
    /// The file name patches name it by.
    pub name: String,
    /// The core's object id.
    pub id: ObjectId,
    /// Its state.
    pub state: LibraryState,
}

/// A loaded object found by its file name: its path as the loader knows it, its load
/// address and its executable segments.
pub(crate) struct Found {
    pub path: CString,
    pub base: usize,
    pub text: Vec<(usize, usize)>,
}

/// Finds the loaded object whose path's file name is `name`.
pub(crate) fn find_loaded(name: &str) -> Option<Found> {
    struct Search<'n> {
        name: &'n str,
        found: Option<Found>,
    }
    extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the `Search` passed below, alive for the iteration.
        let search = unsafe { &mut *(data as *mut Search<'_>) };
        // SAFETY: the loader passes a valid `dl_phdr_info`.
        let info = unsafe { &*info };
        if info.dlpi_name.is_null() || info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: a NUL-terminated path owned by the loader.
        let path = unsafe { CStr::from_ptr(info.dlpi_name) };
        let file = path.to_bytes().rsplit(|&b| b == b'/').next().unwrap_or(&[]);
        let base = info.dlpi_addr as usize;
        if file != search.name.as_bytes() {
            return 0;
        }
        // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let text = phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
            .map(|p| (base + p.p_vaddr as usize, base + (p.p_vaddr + p.p_memsz) as usize))
            .collect();
        search.found = Some(Found { path: path.to_owned(), base, text });
        1
    }
    let mut search = Search { name, found: None };
    // SAFETY: `visit` only touches `search` through the pointer, during the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut _ as *mut c_void) };
    search.found
}

type DlopenFn = unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void;
type DlcloseFn = unsafe extern "C" fn(*mut c_void) -> c_int;

fn next_symbol(name: &CStr) -> usize {
    // SAFETY: `RTLD_NEXT` lookup of a C string: the definition after ours (libc's).
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
}

fn real_dlopen_fn() -> Option<DlopenFn> {
    static REAL: OnceLock<usize> = OnceLock::new();
    let f = *REAL.get_or_init(|| next_symbol(c"dlopen"));
    // SAFETY: a non-null `dlopen` found by `dlsym` has `dlopen`'s type.
    (f != 0).then(|| unsafe { std::mem::transmute::<usize, DlopenFn>(f) })
}

fn real_dlclose_fn() -> Option<DlcloseFn> {
    static REAL: OnceLock<usize> = OnceLock::new();
    let f = *REAL.get_or_init(|| next_symbol(c"dlclose"));
    // SAFETY: a non-null `dlclose` found by `dlsym` has `dlclose`'s type.
    (f != 0).then(|| unsafe { std::mem::transmute::<usize, DlcloseFn>(f) })
}

/// libc's `dlopen`, bypassing the interposer.
///
/// # Safety
///
/// `path` is null or a NUL-terminated string; the object's constructors run.
pub(crate) unsafe fn real_dlopen(path: *const c_char, flags: c_int) -> *mut c_void {
    match real_dlopen_fn() {
        // SAFETY: the caller's contract is `dlopen`'s.
        Some(f) => unsafe { f(path, flags) },
        None => std::ptr::null_mut(),
    }
}

/// libc's `dlclose`, bypassing the interposer.
///
/// # Safety
///
/// `handle` is a `dlopen` handle not closed yet.
pub(crate) unsafe fn real_dlclose(handle: *mut c_void) -> c_int {
    match real_dlclose_fn() {
        // SAFETY: the caller's contract is `dlclose`'s.
        Some(f) => unsafe { f(handle) },
        None => -1,
    }
}

/// Trusts a library's executable segments; `false` (nothing trusted) when the table of
/// trusted regions is full — a walk would then ignore return addresses into the library,
/// so such a library must not be patched.
pub(crate) fn trust(text: &[(usize, usize)]) -> bool {
    for (i, &(lo, hi)) in text.iter().enumerate() {
        if !walk::trust_code(lo, hi) {
            distrust(&text[..i]);
            return false;
        }
    }
    true
}

/// Stops trusting a library's executable segments (it is about to be unmapped, or refused).
pub(crate) fn distrust(text: &[(usize, usize)]) {
    for &(lo, hi) in text {
        walk::distrust_code(lo, hi);
    }
}

/// Marks library `id` loaded or not for the engine.
pub(crate) fn set_loaded(id: ObjectId, loaded: bool) {
    if let Some(l) = (id.0 as usize).checked_sub(1).and_then(|i| LOADED.get(i)) {
        l.store(loaded, Ordering::Relaxed);
    }
}

thread_local! {
    /// Set while this thread is inside the interposer: a `dlopen`/`dlclose` made by a
    /// library's constructor or destructor then goes straight to libc (the runtime's lock is
    /// held); the outer call's scan still sees what it loaded.
    static INSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` as the interposer's outermost call on this thread, or `None` when nested.
fn outermost<R>(f: impl FnOnce() -> R) -> Option<R> {
    if INSIDE.with(|i| i.replace(true)) {
        return None;
    }
    let r = f();
    INSIDE.with(|i| i.set(false));
    Some(r)
}

/// Marks the calling thread as inside the interposer (it holds the runtime's lock, and runs
/// patch code under it: a patch object's constructors, its callbacks); returns what it was,
/// for [`leave_interposer`]. A `dlopen`/`dlclose` that code makes goes straight to libc, as
/// one made by a library's constructor during an interposed call does, instead of taking the
/// runtime's lock again (`tests/ctor_dlopen.rs`).
pub(crate) fn enter_interposer() -> bool {
    INSIDE.with(|i| i.replace(true))
}

/// Undoes [`enter_interposer`].
pub(crate) fn leave_interposer(outer: bool) {
    INSIDE.with(|i| i.set(outer));
}

/// The interposed `dlopen`: libc's, then every library a patch names that is now loaded
/// comes (resolved, hooked, switched) before this returns.
///
/// # Safety
///
/// As libc's `dlopen`.
#[no_mangle]
pub unsafe extern "C" fn dlopen(path: *const c_char, flags: c_int) -> *mut c_void {
    // SAFETY: the caller's contract is `dlopen`'s.
    let handle = unsafe { real_dlopen(path, flags) };
    if handle.is_null() {
        return handle;
    }
    if let Ok(rt) = crate::Runtime::get() {
        outermost(|| rt.after_dlopen(handle as usize));
    }
    handle
}

/// The interposed `dlclose`: when it drops the last handle of a patched library, the
/// library goes (unpatched) before libc's `dlclose` unmaps it.
///
/// # Safety
///
/// As libc's `dlclose`.
#[no_mangle]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    if let Ok(rt) = crate::Runtime::get() {
        // SAFETY: the caller's contract is `dlclose`'s.
        let close = || unsafe { real_dlclose(handle) };
        if let Some(r) = outermost(|| rt.dlclose(handle as usize, close)) {
            return r;
        }
    }
    // SAFETY: the caller's contract is `dlclose`'s.
    unsafe { real_dlclose(handle) }
}

/// `RTLD_DL_LINKMAP` (`dlfcn.h`).
const RTLD_DL_LINKMAP: c_int = 2;

/// The link map (`dlopen` handle) of the object containing `addr`, or 0.
fn link_map_of(addr: usize) -> usize {
    // SAFETY: zeroed `Dl_info` is valid output storage.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let mut map: *mut c_void = std::ptr::null_mut();
    // SAFETY: `info` and `map` are valid output locations.
    let ok = unsafe { libc::dladdr1(addr as *const c_void, &mut info, &mut map, RTLD_DL_LINKMAP) };
    if ok == 0 {
        0
    } else {
        map as usize
    }
}

/// Resolves every function of `object` (a library's part of a patch) in the loaded library
/// whose link map is `map`; on error none stays resolved.
pub(crate) fn resolve(object: &livepatch_core::Object<'_>, map: usize) -> Result<(), crate::Error> {
    use crate::Error;
    let one = |f: &livepatch_core::Func<'_>| -> Result<(), Error> {
        let what = || format!("{} in {}", f.name(), object.name());
        let cname = CString::new(f.name()).map_err(|_| Error::Symbol(what()))?;
        // SAFETY: `map` is a live `dlopen` handle (the runtime's pin), the name a C string.
        let addr = unsafe { libc::dlsym(map as *mut c_void, cname.as_ptr()) } as usize;
        if addr == 0 || link_map_of(addr) != map {
            return Err(Error::Symbol(what()));
        }
        let range = crate::patch_so::function_range(addr, &what())?;
        // SAFETY: a function of the library of at least 16 bytes (checked first).
        if range.len() < crate::hook::ENTRY_NOPS || !unsafe { crate::hook::is_patchable(addr) } {
            return Err(Error::NotPatchable(what()));
        }
        f.resolve(range).map_err(|e| Error::Descriptor(format!("{}: {e:?}", what())))
    };
    let result = object.funcs().iter().try_for_each(one);
    if result.is_err() {
        unresolve(object);
    }
    result
}

/// Forgets the addresses of `object`'s functions (none is patched).
pub(crate) fn unresolve(object: &livepatch_core::Object<'_>) {
    for f in object.funcs().iter().filter(|f| f.is_relocatable()) {
        // Refused only while patched, which a caller never asks for.
        let _ = f.unresolve();
    }
}
