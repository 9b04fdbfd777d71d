//! Shadow variables: data a patch attaches to existing objects, keyed by (object address, id)
//! — the kernel's `klp_shadow_*` API without an allocator.
//!
//! A [`ShadowTable`] is an open-addressing hash table over caller-provided slots, each holding
//! one `T`. Lookups never lock: a slot is published with a `Release` store of its state and
//! readers probe with `Acquire` loads. Writers (alloc, free) serialise on a spin lock, like the
//! kernel's `klp_shadow_lock`; constructors and destructors run under it. A freed slot is
//! *retired*, not reused, until [`ShadowTable::reclaim`] has waited for a grace period — patched
//! code may still hold its data.

use crate::patch::CallbackError;
use crate::sync::{const_fn, AtomicU32, AtomicUsize, Ordering, SpinLock};
use core::fmt;

/// A shadow variable's id (the kernel's `unsigned long id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShadowId(pub u32);

/// Data that can live in a shadow slot: it is shared between CPUs (`Sync`, so it uses interior
/// mutability) and can be reset to its all-zero state, which is what a new shadow variable
/// holds before its constructor runs (the kernel zeroes with `kzalloc`).
pub trait ShadowData: Sync {
    /// Resets to the zero state.
    fn zero(&self);
}

impl ShadowData for crate::sync::AtomicUsize {
    fn zero(&self) {
        self.store(0, Ordering::Relaxed);
    }
}

impl ShadowData for crate::sync::AtomicU32 {
    fn zero(&self) {
        self.store(0, Ordering::Relaxed);
    }
}

const EMPTY: u32 = 0;
const RESERVED: u32 = 1;
const LIVE: u32 = 2;
const RETIRED: u32 = 3;
const DELETED: u32 = 4;
/// Retired before the grace period a `reclaim` is waiting for.
const RECLAIMING: u32 = 5;

/// One slot of a [`ShadowTable`].
pub struct ShadowSlot<T> {
    state: AtomicU32,
    obj: AtomicUsize,
    id: AtomicU32,
    data: T,
}

impl<T> ShadowSlot<T> {
    const_fn! {
        /// An empty slot around `data` (its initial value does not matter: it is zeroed before
        /// each use).
        pub fn new(data: T) -> Self {
            Self { state: AtomicU32::new(EMPTY), obj: AtomicUsize::new(0), id: AtomicU32::new(0), data }
        }
    }
}

impl<T: Default> Default for ShadowSlot<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> fmt::Debug for ShadowSlot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowSlot")
            .field("state", &self.state.load(Ordering::Relaxed))
            .field("obj", &self.obj.load(Ordering::Relaxed))
            .field("id", &self.id.load(Ordering::Relaxed))
            .finish()
    }
}

/// Why a shadow operation failed. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowError {
    /// A shadow variable with this object and id exists (`alloc` only).
    Exists,
    /// No shadow variable with this object and id (`free`).
    NotFound,
    /// Every slot is live or retired.
    Full,
    /// The constructor failed; nothing was allocated.
    Constructor(CallbackError),
}

impl fmt::Display for ShadowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShadowError::Exists => f.write_str("shadow variable already exists"),
            ShadowError::NotFound => f.write_str("no such shadow variable"),
            ShadowError::Full => f.write_str("shadow table is full"),
            ShadowError::Constructor(e) => write!(f, "shadow constructor: {e}"),
        }
    }
}

impl core::error::Error for ShadowError {}

/// The shadow-variable table. See the [module documentation](self).
pub struct ShadowTable<'a, T> {
    slots: &'a [ShadowSlot<T>],
    writer: SpinLock,
}

impl<'a, T: ShadowData> ShadowTable<'a, T> {
    /// A table over `slots` (all empty).
    pub fn new(slots: &'a [ShadowSlot<T>]) -> Self {
        Self { slots, writer: SpinLock::new() }
    }

    fn probe(&self, obj: usize, id: ShadowId) -> impl Iterator<Item = &'a ShadowSlot<T>> + 'a {
        let n = self.slots.len();
        let hash =
            (obj as u64 ^ u64::from(id.0).wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        let start = if n == 0 { 0 } else { (hash >> 17) as usize % n };
        let slots = self.slots;
        (0..n).map(move |i| &slots[(start + i) % n])
    }

    fn matches(slot: &ShadowSlot<T>, obj: usize, id: ShadowId) -> bool {
        slot.obj.load(Ordering::Relaxed) == obj && slot.id.load(Ordering::Relaxed) == id.0
    }

    /// The shadow variable of `obj` with `id` (`klp_shadow_get`). Lock-free.
    ///
    /// The data stays valid while the caller is in a read-side critical section (a freed
    /// variable is reclaimed only after a grace period).
    pub fn get(&self, obj: usize, id: ShadowId) -> Option<&'a T> {
        for slot in self.probe(obj, id) {
            // `Acquire`: pairs with the `Release` that published the slot, making its key and
            // constructed data visible.
            match slot.state.load(Ordering::Acquire) {
                EMPTY => return None,
                LIVE if Self::matches(slot, obj, id) => return Some(&slot.data),
                _ => {}
            }
        }
        None
    }

    /// Attaches a new zeroed shadow variable to `obj` and runs `ctor` on it under the writer
    /// lock (`klp_shadow_alloc`). Fails if one exists, if the table is full, or if `ctor`
    /// fails — then nothing is left behind.
    pub fn alloc<C>(&self, obj: usize, id: ShadowId, ctor: C) -> Result<&'a T, ShadowError>
    where
        C: FnOnce(usize, &T) -> Result<(), CallbackError>,
    {
        let _guard = self.writer.lock();
        if self.find_live(obj, id).is_some() {
            return Err(ShadowError::Exists);
        }
        self.insert(obj, id, ctor)
    }

    /// Returns the existing shadow variable, or allocates one as [`alloc`](Self::alloc) does
    /// (`klp_shadow_get_or_alloc`); the constructor runs only for a new one.
    pub fn get_or_alloc<C>(&self, obj: usize, id: ShadowId, ctor: C) -> Result<&'a T, ShadowError>
    where
        C: FnOnce(usize, &T) -> Result<(), CallbackError>,
    {
        if let Some(data) = self.get(obj, id) {
            return Ok(data);
        }
        let _guard = self.writer.lock();
        if let Some(slot) = self.find_live(obj, id) {
            return Ok(&slot.data);
        }
        self.insert(obj, id, ctor)
    }

    /// Detaches the shadow variable of `obj` with `id`, running `dtor` on it under the writer
    /// lock (`klp_shadow_free`).
    pub fn free<D: FnOnce(usize, &T)>(&self, obj: usize, id: ShadowId, dtor: D) -> Result<(), ShadowError> {
        let _guard = self.writer.lock();
        let slot = self.find_live(obj, id).ok_or(ShadowError::NotFound)?;
        dtor(obj, &slot.data);
        // `Release`: pairs with `get`'s `Acquire`; a reader that sees the slot retired also
        // sees what the destructor wrote.
        slot.state.store(RETIRED, Ordering::Release);
        Ok(())
    }

    /// Detaches every shadow variable with `id`, whatever its object, running `dtor` on each
    /// (`klp_shadow_free_all`). Returns how many.
    pub fn free_all<D: FnMut(usize, &T)>(&self, id: ShadowId, mut dtor: D) -> usize {
        let _guard = self.writer.lock();
        let mut freed = 0;
        for slot in self.slots {
            if slot.state.load(Ordering::Relaxed) == LIVE && slot.id.load(Ordering::Relaxed) == id.0 {
                dtor(slot.obj.load(Ordering::Relaxed), &slot.data);
                // `Release`: as in `free`.
                slot.state.store(RETIRED, Ordering::Release);
                freed += 1;
            }
        }
        freed
    }

    /// Makes retired slots reusable once `grace` (a grace period) has returned. Returns how
    /// many were reclaimed.
    pub fn reclaim(&self, grace: impl FnOnce()) -> usize {
        // Mark what is retired now; slots retired while we wait belong to the next reclaim.
        let marked = {
            let _guard = self.writer.lock();
            let mut marked = 0;
            for slot in self.slots {
                if slot.state.load(Ordering::Relaxed) == RETIRED {
                    slot.state.store(RECLAIMING, Ordering::Relaxed);
                    marked += 1;
                }
            }
            marked
        };
        if marked == 0 {
            return 0;
        }
        // Not under the spin lock: a grace period may sleep.
        grace();
        let _guard = self.writer.lock();
        for slot in self.slots {
            if slot.state.load(Ordering::Relaxed) == RECLAIMING {
                slot.state.store(DELETED, Ordering::Relaxed);
            }
        }
        marked
    }

    /// Number of live shadow variables.
    pub fn len(&self) -> usize {
        // `Acquire`: pairs with the `Release` that published or retired each slot.
        self.slots.iter().filter(|s| s.state.load(Ordering::Acquire) == LIVE).count()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Under the writer lock: the live slot for the key.
    fn find_live(&self, obj: usize, id: ShadowId) -> Option<&'a ShadowSlot<T>> {
        for slot in self.probe(obj, id) {
            match slot.state.load(Ordering::Relaxed) {
                EMPTY => return None,
                LIVE if Self::matches(slot, obj, id) => return Some(slot),
                _ => {}
            }
        }
        None
    }

    /// Under the writer lock, with no live slot for the key: claim the first empty or deleted
    /// slot of the probe sequence, construct, publish.
    fn insert<C>(&self, obj: usize, id: ShadowId, ctor: C) -> Result<&'a T, ShadowError>
    where
        C: FnOnce(usize, &T) -> Result<(), CallbackError>,
    {
        let slot = self
            .probe(obj, id)
            .find(|s| matches!(s.state.load(Ordering::Relaxed), EMPTY | DELETED))
            .ok_or(ShadowError::Full)?;
        let previous = slot.state.load(Ordering::Relaxed);
        // Readers skip a reserved slot but keep probing past it, as past a deleted one.
        slot.state.store(RESERVED, Ordering::Relaxed);
        slot.obj.store(obj, Ordering::Relaxed);
        slot.id.store(id.0, Ordering::Relaxed);
        slot.data.zero();
        if let Err(e) = ctor(obj, &slot.data) {
            slot.state.store(previous, Ordering::Relaxed);
            return Err(ShadowError::Constructor(e));
        }
        // `Release`: pairs with `get`'s `Acquire`.
        slot.state.store(LIVE, Ordering::Release);
        Ok(&slot.data)
    }
}

impl<T> fmt::Debug for ShadowTable<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowTable").field("slots", &self.slots.len()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[derive(Default)]
    struct Counter(AtomicUsize);
    impl ShadowData for Counter {
        fn zero(&self) {
            self.0.store(0, Ordering::Relaxed);
        }
    }

    fn slots(n: usize) -> Vec<ShadowSlot<Counter>> {
        (0..n).map(|_| ShadowSlot::default()).collect()
    }

    const ID1: ShadowId = ShadowId(0x1234);
    const ID2: ShadowId = ShadowId(0x1235);

    #[test]
    fn alloc_get_free_follow_the_kernel_api() {
        let s = slots(8);
        let t = ShadowTable::new(&s);
        assert!(t.get(0x100, ID1).is_none());
        let d = t.alloc(0x100, ID1, |_, d| {
            d.0.store(7, Ordering::Relaxed);
            Ok(())
        });
        assert_eq!(d.unwrap().0.load(Ordering::Relaxed), 7);
        assert_eq!(t.get(0x100, ID1).unwrap().0.load(Ordering::Relaxed), 7);
        assert!(t.get(0x100, ID2).is_none(), "ids are separate");
        assert_eq!(t.alloc(0x100, ID1, |_, _| Ok(())).err(), Some(ShadowError::Exists));
        // get_or_alloc returns the existing one without running the constructor.
        let again = t.get_or_alloc(0x100, ID1, |_, _| panic!("constructor must not run")).unwrap();
        assert_eq!(again.0.load(Ordering::Relaxed), 7);
        let mut dtor_calls = 0;
        t.free(0x100, ID1, |obj, d| {
            assert_eq!((obj, d.0.load(Ordering::Relaxed)), (0x100, 7));
            dtor_calls += 1;
        })
        .unwrap();
        assert_eq!(dtor_calls, 1);
        assert!(t.get(0x100, ID1).is_none());
        assert_eq!(t.free(0x100, ID1, |_, _| {}), Err(ShadowError::NotFound));
    }

    #[test]
    fn new_variables_are_zeroed_and_a_failed_constructor_leaves_nothing() {
        let s = slots(2);
        let t = ShadowTable::new(&s);
        t.alloc(1, ID1, |_, d| {
            d.0.store(99, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        t.free(1, ID1, |_, _| {}).unwrap();
        assert_eq!(t.reclaim(|| {}), 1);
        let d = t.alloc(2, ID1, |_, d| {
            assert_eq!(d.0.load(Ordering::Relaxed), 0, "zeroed before the constructor");
            Ok(())
        });
        assert!(d.is_ok());
        assert_eq!(
            t.alloc(3, ID1, |_, _| Err(CallbackError(-12))).err(),
            Some(ShadowError::Constructor(CallbackError(-12)))
        );
        assert!(t.get(3, ID1).is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn free_all_frees_only_that_id_and_freed_slots_wait_for_a_grace_period() {
        let s = slots(6);
        let t = ShadowTable::new(&s);
        for obj in [10, 20, 30] {
            t.alloc(obj, ID1, |_, _| Ok(())).unwrap();
            t.alloc(obj, ID2, |_, _| Ok(())).unwrap();
        }
        assert_eq!(t.alloc(40, ID1, |_, _| Ok(())).err(), Some(ShadowError::Full));
        let mut seen = Vec::new();
        assert_eq!(t.free_all(ID1, |obj, _| seen.push(obj)), 3);
        seen.sort();
        assert_eq!(seen, [10, 20, 30]);
        assert!(t.get(10, ID2).is_some() && t.get(10, ID1).is_none());
        // Retired slots are not reused before a grace period.
        assert_eq!(t.alloc(40, ID1, |_, _| Ok(())).err(), Some(ShadowError::Full));
        let mut graces = 0;
        assert_eq!(t.reclaim(|| graces += 1), 3);
        assert_eq!(graces, 1);
        assert!(t.alloc(40, ID1, |_, _| Ok(())).is_ok());
        assert_eq!(t.reclaim(|| graces += 1), 0);
        assert_eq!(graces, 1, "no grace period needed with nothing retired");
    }

    #[test]
    fn an_empty_table_is_full_not_a_panic() {
        let s: [ShadowSlot<Counter>; 0] = [];
        let t = ShadowTable::new(&s);
        assert!(t.get(1, ID1).is_none());
        assert_eq!(t.alloc(1, ID1, |_, _| Ok(())).err(), Some(ShadowError::Full));
    }
}
