// SPDX-License-Identifier: GPL-2.0
//! Live patches for `livepatch_rs.ko`, declared in Rust.
//!
//! The Rust counterpart of `include/livepatch_rs.h`: `#[repr(C)]` types with the header's
//! layout (`struct klp_func`, `klp_callbacks`, `klp_object`, `klp_state`, `klp_patch`; checked
//! against the header by this crate's tests, which compile a C program with it) and the
//! registration call, `lprs_enable_patch()`.
//!
//! One source file, two builds:
//! * cargo (workspace member `livepatch-rs-patch`): host unit tests of the layout and of the
//!   list checks;
//! * kbuild: a Rust patch module's `Kbuild` compiles `src/lib.rs` as an extra crate object of
//!   the module (`livepatch_rs_patch.o`, emitting its metadata) and the module's own crate uses
//!   it with `--extern livepatch_rs_patch=...` (see `patches/Kbuild` and `patches/lprs_rust.rs`).
//!   There `Patch::enable` takes the module's `THIS_MODULE`.
//!
//! A patch is a set of `static`s of the patch module:
//!
//! ```
//! use core::ffi::{c_int, c_void};
//! use livepatch_rs_patch::{Func, Object, Patch};
//!
//! unsafe extern "C" fn new_show(_m: *mut c_void, _v: *mut c_void) -> c_int {
//!     0
//! }
//!
//! static FUNCS: [Func; 2] = [
//!     // SAFETY: `new_show` has cmdline_proc_show's prototype
//!     // (int (*)(struct seq_file *, void *)) and keeps its contract.
//!     unsafe { Func::new(c"cmdline_proc_show", new_show as *const ()) },
//!     Func::END,
//! ];
//! static OBJS: [Object; 2] = [Object::vmlinux(&FUNCS), Object::END];
//! static PATCH: Patch = Patch::new(&OBJS);
//! ```
//!
//! What can go wrong is checked where it can be: a list without its terminator, or with a
//! terminator before its end, is refused by the `const fn` that takes it (a compile error in a
//! `static`); a function without a name cannot be written (`&CStr`); registration errors are
//! [`EnableError`]s. What the compiler cannot check is that a new function has the prototype of
//! the function it replaces: [`Func::new`] is `unsafe` for that reason alone.
#![no_std]

use core::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

/// `struct klp_func`: a function to replace.
#[repr(C)]
#[derive(Debug)]
pub struct Func {
    old_name: *const c_char,
    new_func: *const c_void,
    old_sympos: c_ulong,
    lprs_reserved: c_ulong,
}

// SAFETY: a `Func` is never written after construction (neither by Rust: no `&mut` to a static
// is handed out, nor by livepatch_rs, which copies it); its pointers are to `'static` data (a
// C string literal, a function).
unsafe impl Sync for Func {}

impl Func {
    /// The terminator of a function list (`{ }` in C).
    pub const END: Func = Func { old_name: ptr::null(), new_func: ptr::null(), old_sympos: 0, lprs_reserved: 0 };

    /// Replace the function `old_name` (which must be the only one of that name in its
    /// object; see [`Func::sympos`]) by `new_func`.
    ///
    /// # Safety
    ///
    /// `new_func` is a function with the C ABI (`extern "C"`) and exactly the prototype of
    /// `old_name`, and it keeps that function's contract (callers run it instead of the
    /// original, in any context the original runs in, e.g. atomic context), for as long as the
    /// patch module is loaded.
    pub const unsafe fn new(old_name: &'static CStr, new_func: *const ()) -> Func {
        Func { old_name: old_name.as_ptr(), new_func: new_func.cast(), old_sympos: 0, lprs_reserved: 0 }
    }

    /// `old_sympos`: the `pos`-th symbol named `old_name` in its object (1: the first), for a
    /// name that is not unique (e.g. two static functions of the same name).
    pub const fn sympos(mut self, pos: usize) -> Func {
        self.old_sympos = pos as c_ulong;
        self
    }

    /// The name of the function replaced (`None` for [`Func::END`]).
    pub fn old_name(&self) -> Option<&'static CStr> {
        if self.old_name.is_null() {
            return None;
        }
        // SAFETY: a non-null `old_name` comes from a `&'static CStr` (`Func::new`).
        Some(unsafe { CStr::from_ptr(self.old_name) })
    }

    /// Its `old_sympos`.
    pub fn old_sympos(&self) -> usize {
        self.old_sympos as usize
    }

    /// The replacement's address.
    pub fn new_func(&self) -> *const () {
        self.new_func.cast()
    }

    const fn is_end(&self) -> bool {
        self.old_name.is_null() && self.new_func.is_null() && self.old_sympos == 0
    }
}

/// A callback run for an object before it is patched; a negative errno cancels the enable (or
/// refuses the load of the object's module).
pub type PrePatch = extern "C" fn(obj: &Object) -> c_int;
/// A callback run for an object after it is patched, before it is unpatched, or after it is
/// unpatched.
pub type ObjectCallback = extern "C" fn(obj: &Object);

/// `struct klp_callbacks`: the kernel's four object callbacks, with its rules (`pre_patch` may
/// fail; the other three run only for an object whose `pre_patch` succeeded). They run in
/// process context, under livepatch_rs's engine lock: they must not register patches.
#[repr(C)]
#[derive(Debug)]
pub struct Callbacks {
    /// Before the object is patched.
    pub pre_patch: Option<PrePatch>,
    /// After the object is patched (the transition completed, or its module came).
    pub post_patch: Option<ObjectCallback>,
    /// Before the object is unpatched.
    pub pre_unpatch: Option<ObjectCallback>,
    /// After the object is unpatched.
    pub post_unpatch: Option<ObjectCallback>,
    /// The header's field (internal to the kernel's livepatch); livepatch_rs ignores it.
    pub post_unpatch_enabled: bool,
}

impl Callbacks {
    /// No callbacks.
    pub const NONE: Callbacks = Callbacks {
        pre_patch: None,
        post_patch: None,
        pre_unpatch: None,
        post_unpatch: None,
        post_unpatch_enabled: false,
    };
}

/// Why a list handed to [`Object`] or [`Patch`] is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListError {
    /// The list does not end with its terminator (`END`).
    Unterminated,
    /// A terminator before the end: the entries after it would be ignored.
    EarlyEnd,
    /// Nothing before the terminator.
    Empty,
}

impl ListError {
    const fn message(self) -> &'static str {
        match self {
            ListError::Unterminated => "list does not end with its END terminator",
            ListError::EarlyEnd => "END terminator before the end of the list",
            ListError::Empty => "list has no entry before its END terminator",
        }
    }
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Checks a function list: at least one function, then [`Func::END`], and no other END.
pub const fn check_funcs(funcs: &[Func]) -> Result<(), ListError> {
    let n = funcs.len();
    if n == 0 || !funcs[n - 1].is_end() {
        return Err(ListError::Unterminated);
    }
    if n == 1 {
        return Err(ListError::Empty);
    }
    let mut i = 0;
    while i < n - 1 {
        if funcs[i].is_end() {
            return Err(ListError::EarlyEnd);
        }
        i += 1;
    }
    Ok(())
}

/// Checks an object list: at least one object, then [`Object::END`], and no other END.
pub const fn check_objects(objs: &[Object]) -> Result<(), ListError> {
    let n = objs.len();
    if n == 0 || !objs[n - 1].is_end() {
        return Err(ListError::Unterminated);
    }
    if n == 1 {
        return Err(ListError::Empty);
    }
    let mut i = 0;
    while i < n - 1 {
        if objs[i].is_end() {
            return Err(ListError::EarlyEnd);
        }
        i += 1;
    }
    Ok(())
}

/// Checks a state list: at least one state, then [`State::END`] (id 0), and no other id 0.
pub const fn check_states(states: &[State]) -> Result<(), ListError> {
    let n = states.len();
    if n == 0 || states[n - 1].id != 0 {
        return Err(ListError::Unterminated);
    }
    if n == 1 {
        return Err(ListError::Empty);
    }
    let mut i = 0;
    while i < n - 1 {
        if states[i].id == 0 {
            return Err(ListError::EarlyEnd);
        }
        i += 1;
    }
    Ok(())
}

const fn expect_list(r: Result<(), ListError>) {
    if let Err(e) = r {
        panic!("{}", e.message());
    }
}

/// `struct klp_object`: vmlinux or a module, and the functions replaced in it.
#[repr(C)]
#[derive(Debug)]
pub struct Object {
    name: *const c_char,
    funcs: *const Func,
    callbacks: Callbacks,
    /// `struct module *mod`: written by livepatch_rs before each callback (the module while
    /// it is loaded, null for vmlinux), read by [`Object::module`].
    module: AtomicPtr<c_void>,
    lprs_reserved: c_ulong,
}

// SAFETY: `name` and `funcs` point to `'static` data that is never written (a C string literal,
// a `'static [Func]` whose `Func`s are `Sync`); the only field written after construction is
// `module`, an atomic (livepatch_rs stores it under its engine lock with a plain store; Rust
// reads it with an atomic load, so concurrent access is not a data race on the Rust side).
unsafe impl Sync for Object {}

impl Object {
    /// The terminator of an object list.
    // A fresh terminator per use is what a list needs (its `module` is never written:
    // livepatch_rs stops at the terminator).
    #[allow(clippy::declare_interior_mutable_const)]
    pub const END: Object = Object {
        name: ptr::null(),
        funcs: ptr::null(),
        callbacks: Callbacks::NONE,
        module: AtomicPtr::new(ptr::null_mut()),
        lprs_reserved: 0,
    };

    /// Functions of vmlinux. `funcs` ends with [`Func::END`] (checked: a compile error in a
    /// `static`, a panic if called at run time with a bad list).
    pub const fn vmlinux(funcs: &'static [Func]) -> Object {
        expect_list(check_funcs(funcs));
        Object {
            name: ptr::null(),
            funcs: funcs.as_ptr(),
            callbacks: Callbacks::NONE,
            module: AtomicPtr::new(ptr::null_mut()),
            lprs_reserved: 0,
        }
    }

    /// Functions of the module `name` (patched while it is loaded, also when it is loaded
    /// after the patch). `funcs` as for [`Object::vmlinux`].
    pub const fn module(name: &'static CStr, funcs: &'static [Func]) -> Object {
        let mut obj = Object::vmlinux(funcs);
        obj.name = name.as_ptr();
        obj
    }

    /// With these callbacks.
    pub const fn callbacks(mut self, callbacks: Callbacks) -> Object {
        self.callbacks = callbacks;
        self
    }

    /// The module's name, `None` for vmlinux (and for [`Object::END`]).
    pub fn name(&self) -> Option<&'static CStr> {
        if self.name.is_null() {
            return None;
        }
        // SAFETY: a non-null `name` comes from a `&'static CStr` (`Object::module`).
        Some(unsafe { CStr::from_ptr(self.name) })
    }

    /// The object's `struct module *` as livepatch_rs last set it (before each callback): the
    /// module while it is loaded, null for vmlinux or before any callback ran.
    pub fn loaded_module(&self) -> *mut c_void {
        // Relaxed: the value is written by livepatch_rs under its engine lock before it calls
        // the callback that reads it (same thread); no other data is published through it.
        self.module.load(Ordering::Relaxed)
    }

    /// Its functions, without the terminator.
    pub fn funcs(&self) -> &'static [Func] {
        if self.funcs.is_null() {
            return &[];
        }
        let mut n = 0;
        // SAFETY: a non-null `funcs` comes from a `&'static [Func]` checked to end with
        // `Func::END` (`Object::vmlinux`), so every index up to that END is in bounds.
        unsafe {
            while !(*self.funcs.add(n)).is_end() {
                n += 1;
            }
            core::slice::from_raw_parts(self.funcs, n)
        }
    }

    const fn is_end(&self) -> bool {
        self.name.is_null() && self.funcs.is_null()
    }
}

/// `struct klp_state`: a system state the patch establishes or maintains (`id` non-zero).
#[repr(C)]
#[derive(Debug)]
pub struct State {
    /// Its id (0 terminates the list).
    pub id: c_ulong,
    /// Its version (a patch needs each state of the patches it replaces at ≥ their version).
    pub version: c_uint,
    data: AtomicPtr<c_void>,
}

impl State {
    /// The terminator of a state list.
    // A fresh terminator per use is what a list needs (its `data` is never used).
    #[allow(clippy::declare_interior_mutable_const)]
    pub const END: State = State { id: 0, version: 0, data: AtomicPtr::new(ptr::null_mut()) };

    /// State `id` (non-zero) at `version`.
    pub const fn new(id: usize, version: u32) -> State {
        State { id: id as c_ulong, version: version as c_uint, data: AtomicPtr::new(ptr::null_mut()) }
    }

    /// Its `data` pointer (for the patch's callbacks; livepatch_rs does not use it).
    pub fn data(&self) -> &AtomicPtr<c_void> {
        &self.data
    }
}

/// Why `lprs_enable_patch()` refused a patch; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableError {
    /// `-EINVAL`: bad descriptor, a function not found or ambiguous, incompatible states, a
    /// patch of that name registered already.
    Invalid,
    /// `-EBUSY`: another transition is in progress, or a function conflicts with live patched
    /// code.
    Busy,
    /// `-ENOSPC`: livepatch_rs's descriptor pool is full (see the README's limits).
    NoSpace,
    /// `-ENODEV`: the patch module is going.
    NoDevice,
    /// Another negative errno: a `pre_patch` callback's error.
    Other(c_int),
}

impl EnableError {
    /// The error of a `lprs_enable_patch()` return value (`None` for 0).
    pub fn from_return(rc: c_int) -> Option<EnableError> {
        match rc {
            0 => None,
            -22 => Some(EnableError::Invalid),
            -16 => Some(EnableError::Busy),
            -28 => Some(EnableError::NoSpace),
            -19 => Some(EnableError::NoDevice),
            rc => Some(EnableError::Other(rc)),
        }
    }

    /// The negative errno.
    pub fn to_errno(self) -> c_int {
        match self {
            EnableError::Invalid => -22,
            EnableError::Busy => -16,
            EnableError::NoSpace => -28,
            EnableError::NoDevice => -19,
            EnableError::Other(rc) => rc,
        }
    }
}

impl fmt::Display for EnableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lprs_enable_patch: error {}", self.to_errno())
    }
}

/// `struct klp_patch`: a live patch. Its name is the patch module's name.
#[repr(C)]
#[derive(Debug)]
pub struct Patch {
    /// `struct module *mod`: the patch module, stored by [`Patch::enable`].
    module: AtomicPtr<c_void>,
    objs: *const Object,
    states: *const State,
    replace: bool,
    lprs_reserved: c_ulong,
}

// SAFETY: `objs` and `states` point to `'static` lists of `Sync` entries, never written through
// these pointers; `module` is an atomic; the other fields are not written after construction.
unsafe impl Sync for Patch {}

extern "C" {
    /// `int lprs_enable_patch(struct klp_patch *patch)`, exported by livepatch_rs.ko.
    fn lprs_enable_patch(patch: *const Patch) -> c_int;
}

impl Patch {
    /// A patch of these objects; `objs` ends with [`Object::END`] (checked as for
    /// [`Object::vmlinux`]).
    pub const fn new(objs: &'static [Object]) -> Patch {
        expect_list(check_objects(objs));
        Patch {
            module: AtomicPtr::new(ptr::null_mut()),
            objs: objs.as_ptr(),
            states: ptr::null(),
            replace: false,
            lprs_reserved: 0,
        }
    }

    /// Atomic replace: when its transition completes, every other enabled patch is replaced
    /// (functions only they patched run their original code again).
    pub const fn replace(mut self) -> Patch {
        self.replace = true;
        self
    }

    /// With these system states; `states` ends with [`State::END`] (checked).
    pub const fn states(mut self, states: &'static [State]) -> Patch {
        expect_list(check_states(states));
        self.states = states.as_ptr();
        self
    }

    /// Whether it is an atomic-replace patch.
    pub fn is_replace(&self) -> bool {
        self.replace
    }

    /// Its objects, without the terminator.
    pub fn objects(&self) -> &'static [Object] {
        let mut n = 0;
        // SAFETY: `objs` comes from a `&'static [Object]` checked to end with `Object::END`
        // (`Patch::new`), so every index up to that END is in bounds.
        unsafe {
            while !(*self.objs.add(n)).is_end() {
                n += 1;
            }
            core::slice::from_raw_parts(self.objs, n)
        }
    }

    /// Registers and enables the patch with livepatch_rs.ko (`lprs_enable_patch()`), from the
    /// patch module's init; the patch is named after the module.
    ///
    /// # Safety
    ///
    /// `module` is the calling patch module's own `struct module` (its `THIS_MODULE`), and that
    /// module declares `livepatch=Y` in its `.modinfo` (see [`modinfo_livepatch!`]).
    pub unsafe fn enable_raw(&'static self, module: *mut c_void) -> Result<(), EnableError> {
        // Relaxed: `lprs_enable_patch` reads it on this thread, after this store.
        self.module.store(module, Ordering::Relaxed);
        // SAFETY: `self` is a `'static` patch whose lists were checked at construction and
        // whose layout is the header's `struct klp_patch`; `module` is valid (caller).
        let rc = unsafe { lprs_enable_patch(self) };
        match EnableError::from_return(rc) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Registers and enables the patch (see [`Patch::enable_raw`]) for the module whose
    /// `THIS_MODULE` this is; the module must use [`modinfo_livepatch!`].
    #[cfg(MODULE)]
    pub fn enable(&'static self, module: &'static kernel::ThisModule) -> kernel::error::Result {
        // SAFETY: `module` is a `ThisModule`, i.e. a module's own `struct module`; a module
        // can only name its own `THIS_MODULE` (the `module!` macro's private static). Without
        // the livepatch modinfo, lprs_enable_patch refuses the patch (-EINVAL), as the kernel.
        match unsafe { self.enable_raw(module.as_ptr().cast()) } {
            Ok(()) => Ok(()),
            Err(e) => Err(kernel::error::Error::from_errno(e.to_errno())),
        }
    }
}

/// `MODULE_INFO(livepatch, "Y")`: marks the module as a live patch (lprs_enable_patch refuses
/// a module without it, as `klp_enable_patch()` does). Use it once at the patch module's top
/// level.
#[macro_export]
macro_rules! modinfo_livepatch {
    () => {
        #[doc(hidden)]
        #[link_section = ".modinfo"]
        #[used]
        static __LPRS_MODINFO_LIVEPATCH: [u8; 12] = *b"livepatch=Y\0";
    };
}

/// The size of every type and the offset of every field, under the header's names
/// (`klp_func`, `klp_func.old_name`, ...), in the order of `tests/layout.rs`, which compares
/// them with what a C compiler makes of `include/livepatch_rs.h`.
pub fn layout() -> [(&'static str, usize); 24] {
    use core::mem::{offset_of, size_of};
    [
        ("klp_func", size_of::<Func>()),
        ("klp_func.old_name", offset_of!(Func, old_name)),
        ("klp_func.new_func", offset_of!(Func, new_func)),
        ("klp_func.old_sympos", offset_of!(Func, old_sympos)),
        ("klp_callbacks", size_of::<Callbacks>()),
        ("klp_callbacks.pre_patch", offset_of!(Callbacks, pre_patch)),
        ("klp_callbacks.post_patch", offset_of!(Callbacks, post_patch)),
        ("klp_callbacks.pre_unpatch", offset_of!(Callbacks, pre_unpatch)),
        ("klp_callbacks.post_unpatch", offset_of!(Callbacks, post_unpatch)),
        ("klp_callbacks.post_unpatch_enabled", offset_of!(Callbacks, post_unpatch_enabled)),
        ("klp_object", size_of::<Object>()),
        ("klp_object.name", offset_of!(Object, name)),
        ("klp_object.funcs", offset_of!(Object, funcs)),
        ("klp_object.callbacks", offset_of!(Object, callbacks)),
        ("klp_object.mod", offset_of!(Object, module)),
        ("klp_state", size_of::<State>()),
        ("klp_state.id", offset_of!(State, id)),
        ("klp_state.version", offset_of!(State, version)),
        ("klp_state.data", offset_of!(State, data)),
        ("klp_patch", size_of::<Patch>()),
        ("klp_patch.mod", offset_of!(Patch, module)),
        ("klp_patch.objs", offset_of!(Patch, objs)),
        ("klp_patch.states", offset_of!(Patch, states)),
        ("klp_patch.replace", offset_of!(Patch, replace)),
    ]
}

// The same layout checked at compile time for 64-bit targets (x86_64, the kernel build, where
// the host test cannot run): the sizes the header has under the LP64 C ABI.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Func>() == 32);
    assert!(size_of::<Callbacks>() == 40 && offset_of!(Callbacks, post_unpatch_enabled) == 32);
    assert!(size_of::<Object>() == 72 && offset_of!(Object, module) == 56);
    assert!(size_of::<State>() == 24 && offset_of!(State, data) == 16);
    assert!(size_of::<Patch>() == 40 && offset_of!(Patch, replace) == 24);
};

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn f() {}
    extern "C" fn pre(_: &Object) -> c_int {
        0
    }

    // SAFETY (for the `Func::new` calls below): the functions are never called.
    fn func(name: &'static CStr) -> Func {
        // SAFETY: see above.
        unsafe { Func::new(name, f as *const ()) }
    }

    #[test]
    fn lists_need_exactly_one_terminator_at_their_end() {
        assert_eq!(check_funcs(&[func(c"a"), Func::END]), Ok(()));
        assert_eq!(check_funcs(&[func(c"a")]), Err(ListError::Unterminated));
        assert_eq!(check_funcs(&[]), Err(ListError::Unterminated));
        assert_eq!(check_funcs(&[Func::END]), Err(ListError::Empty));
        assert_eq!(check_funcs(&[func(c"a"), Func::END, func(c"b"), Func::END]), Err(ListError::EarlyEnd));
        // A function with only old_sympos set is not a terminator (as the header's iterator).
        assert_eq!(check_funcs(&[Func::END.sympos(1), Func::END]), Ok(()));
        assert_eq!(check_states(&[State::new(7, 1), State::END]), Ok(()));
        assert_eq!(check_states(&[State::new(7, 1)]), Err(ListError::Unterminated));
        assert_eq!(check_states(&[State::END, State::new(7, 1), State::END]), Err(ListError::EarlyEnd));
    }

    static FUNCS: [Func; 3] = [
        // SAFETY: never called.
        unsafe { Func::new(c"one", f as *const ()) },
        // SAFETY: never called.
        unsafe { Func::new(c"two", f as *const ()) }.sympos(2),
        Func::END,
    ];
    static OBJS: [Object; 3] = [
        Object::vmlinux(&FUNCS),
        Object::module(c"lp_late", &FUNCS).callbacks(Callbacks { pre_patch: Some(pre), ..Callbacks::NONE }),
        Object::END,
    ];
    static STATES: [State; 2] = [State::new(5, 2), State::END];
    static PATCH: Patch = Patch::new(&OBJS).replace().states(&STATES);

    #[test]
    fn a_declared_patch_reads_back() {
        let objs = PATCH.objects();
        assert_eq!(objs.len(), 2);
        assert!(PATCH.is_replace());
        assert_eq!(objs[0].name(), None);
        assert_eq!(objs[1].name(), Some(c"lp_late"));
        let funcs = objs[1].funcs();
        assert_eq!(funcs.len(), 2);
        assert_eq!(funcs[0].old_name(), Some(c"one"));
        assert_eq!(funcs[1].old_sympos(), 2);
        assert_eq!(funcs[1].new_func(), f as *const ());
        assert!(objs[0].callbacks.pre_patch.is_none());
        assert_eq!(objs[1].callbacks.pre_patch.map(|p| p(&objs[1])), Some(0));
        assert!(objs[1].loaded_module().is_null());
    }

    #[test]
    fn errors_map_both_ways() {
        assert_eq!(EnableError::from_return(0), None);
        for rc in [-22, -16, -28, -19, -1, -12] {
            assert_eq!(EnableError::from_return(rc).map(EnableError::to_errno), Some(rc));
        }
        assert_eq!(EnableError::from_return(-16), Some(EnableError::Busy));
    }
}
