//! The one shim for atomics: `core::sync::atomic` normally, `loom`'s under `cfg(loom)`, plus
//! [`AtomicRef`] and [`AtomicPrefix`], the only `unsafe` code in the crate.
//!
//! Every other module imports its atomics from here, so a loom model exercises the real code.
#![allow(unsafe_code)]

use core::marker::PhantomData;

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize};

pub use core::sync::atomic::Ordering;

/// Defines a constructor that is a `const fn` normally and a plain `fn` under loom, whose atomics
/// cannot be built in constant context.
macro_rules! const_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $($rest:tt)*) => {
        #[cfg(not(loom))]
        $(#[$meta])* $vis const fn $name $($rest)*
        #[cfg(loom)]
        $(#[$meta])* $vis fn $name $($rest)*
    };
}
pub(crate) use const_fn;

/// An atomic `Option<&'a T>`.
///
/// Readers load a reference without a lock; the writer publishes one with a `Release` store.
/// Because only `&'a T` values are ever stored, a loaded pointer is valid for `'a`.
///
/// # Invariants
///
/// `ptr` is null or was obtained from a `&'a T`.
///
/// # Variance
///
/// `AtomicRef` stores through a shared reference, as `Cell` does, so it is *invariant* in `'a`:
/// a `&AtomicRef<'static, T>` must never be usable as a `&AtomicRef<'short, T>`, or a
/// short-lived reference stored through it would later be loaded as `&'static T`. This does
/// not compile:
///
/// ```compile_fail
/// use livepatch_core::sync::{AtomicRef, Ordering};
/// let long: AtomicRef<'static, u32> = AtomicRef::none();
/// {
///     let local = 5u32;
///     let short: &AtomicRef<'_, u32> = &long;
///     short.store(Some(&local), Ordering::Release);
/// }
/// let dangling: &'static u32 = long.load(Ordering::Acquire).unwrap();
/// assert_eq!(*dangling, 5);
/// ```
///
/// The same code with the reference stored through `long` itself (no shortening) compiles:
///
/// ```
/// use livepatch_core::sync::{AtomicRef, Ordering};
/// static FIVE: u32 = 5;
/// let long: AtomicRef<'static, u32> = AtomicRef::none();
/// long.store(Some(&FIVE), Ordering::Release);
/// assert_eq!(long.load(Ordering::Acquire), Some(&5));
/// ```
///
/// Sharing an `AtomicRef` shares the `&T`s it hands out, so it is `Sync` only for `T: Sync`:
///
/// ```compile_fail
/// fn shared_across_threads<S: Sync>() {}
/// shared_across_threads::<livepatch_core::sync::AtomicRef<'static, core::cell::Cell<u32>>>();
/// ```
///
/// ```
/// fn shared_across_threads<S: Send + Sync>() {}
/// shared_across_threads::<livepatch_core::sync::AtomicRef<'static, u32>>();
/// ```
pub struct AtomicRef<'a, T> {
    ptr: AtomicPtr<T>,
    _marker: InvariantRef<'a, T>,
}

/// `&'a T`: `Send`/`Sync` only where `&'a T` is (`T: Sync`). `fn(&'a T)`: contravariant in
/// `'a`, which with the covariant `&'a T` makes `'a` invariant (see "Variance").
type InvariantRef<'a, T> = PhantomData<(&'a T, fn(&'a T))>;

impl<'a, T> AtomicRef<'a, T> {
    const_fn! {
        /// An empty reference.
        pub fn none() -> Self {
            // INVARIANT: null.
            Self { ptr: AtomicPtr::new(core::ptr::null_mut()), _marker: PhantomData }
        }
    }

    /// Loads the reference.
    #[inline(always)]
    pub fn load(&self, order: Ordering) -> Option<&'a T> {
        let ptr = self.ptr.load(order);
        // SAFETY: by the type invariant `ptr` is null or came from a `&'a T`, so it is aligned,
        // points to a live `T` for all of `'a`, and only shared references to it exist.
        unsafe { ptr.as_ref() }
    }

    /// Stores a reference.
    #[inline(always)]
    pub fn store(&self, value: Option<&'a T>, order: Ordering) {
        // INVARIANT: the pointer comes from a `&'a T` or is null.
        self.ptr.store(as_ptr(value), order);
    }

    /// Whether the two references point to the same object (pointer identity).
    #[inline(always)]
    pub fn is(&self, other: Option<&T>, order: Ordering) -> bool {
        core::ptr::eq(self.ptr.load(order), as_ptr(other))
    }
}

fn as_ptr<T>(value: Option<&T>) -> *mut T {
    value.map_or(core::ptr::null_mut(), |r| r as *const T as *mut T)
}

impl<T> core::fmt::Debug for AtomicRef<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("AtomicRef").field(&self.ptr.load(Ordering::Relaxed)).finish()
    }
}

impl<T> Default for AtomicRef<'_, T> {
    fn default() -> Self {
        Self::none()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn stores_and_loads_references() {
        let a = 1u32;
        let b = 2u32;
        let r = AtomicRef::none();
        assert!(r.load(Ordering::Acquire).is_none());
        r.store(Some(&a), Ordering::Release);
        assert_eq!(r.load(Ordering::Acquire), Some(&1));
        assert!(r.is(Some(&a), Ordering::Relaxed));
        assert!(!r.is(Some(&b), Ordering::Relaxed));
        r.store(None, Ordering::Release);
        assert!(r.is(None, Ordering::Relaxed));
    }
}

/// A prefix of a fixed slice whose length is stored atomically: readers get the prefix as a
/// `&'a [T]` without a bounds check, because the length can never exceed the slice's.
///
/// A version of the patched-set index is such a prefix of its buffer; loading it is one load
/// of the length beside the slice's address, not a clamp on the lookup's path.
///
/// # Invariants
///
/// `len <= slice.len()`.
pub struct AtomicPrefix<'a, T> {
    slice: &'a [T],
    len: AtomicUsize,
}

impl<'a, T> AtomicPrefix<'a, T> {
    const_fn! {
        /// The empty prefix of `slice`.
        pub fn new(slice: &'a [T]) -> Self {
            // INVARIANT: 0 <= slice.len().
            Self { slice, len: AtomicUsize::new(0) }
        }
    }

    /// The prefix of the last stored length.
    #[inline(always)]
    pub fn load(&self, order: Ordering) -> &'a [T] {
        let len = self.len.load(order);
        // SAFETY: by the type invariant `len <= slice.len()`, so `..len` is in bounds.
        unsafe { self.slice.get_unchecked(..len) }
    }

    /// Stores the prefix's length, clamped to the slice's.
    #[inline(always)]
    pub fn store(&self, len: usize, order: Ordering) {
        // INVARIANT: clamped to the slice's length.
        self.len.store(len.min(self.slice.len()), order);
    }

    /// The whole slice.
    #[inline(always)]
    pub fn slice(&self) -> &'a [T] {
        self.slice
    }
}

impl<T> core::fmt::Debug for AtomicPrefix<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AtomicPrefix")
            .field("len", &self.len.load(Ordering::Relaxed))
            .field("capacity", &self.slice.len())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod prefix_tests {
    use super::*;

    #[test]
    fn stores_lengths_within_the_slice() {
        let data = [1u8, 2, 3];
        let prefix = AtomicPrefix::new(&data[..]);
        assert_eq!(prefix.load(Ordering::Acquire), &[] as &[u8]);
        prefix.store(2, Ordering::Release);
        assert_eq!(prefix.load(Ordering::Acquire), &[1, 2]);
        prefix.store(7, Ordering::Release);
        assert_eq!(prefix.load(Ordering::Acquire), &[1, 2, 3], "clamped to the slice");
        assert_eq!(prefix.slice(), &[1, 2, 3]);
    }
}

/// A writer-side spin lock for short critical sections (the shadow-variable table's
/// `klp_shadow_lock`). `Acquire` on taking it pairs with the `Release` on dropping the guard.
#[derive(Debug, Default)]
pub(crate) struct SpinLock(AtomicBool);

/// Holds a [`SpinLock`] until dropped.
#[derive(Debug)]
pub(crate) struct SpinGuard<'l>(&'l SpinLock);

impl SpinLock {
    const_fn! {
        pub(crate) fn new() -> Self {
            Self(AtomicBool::new(false))
        }
    }

    pub(crate) fn lock(&self) -> SpinGuard<'_> {
        while self.0.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            #[cfg(loom)]
            loom::thread::yield_now();
            #[cfg(not(loom))]
            core::hint::spin_loop();
        }
        SpinGuard(self)
    }
}

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        // `Release`: pairs with the `Acquire` in `lock`.
        (self.0).0.store(false, Ordering::Release);
    }
}
