//! Simulated kernel data: objects tasks allocate and free, buffers that may leak, and the
//! shadow-variable table (the core's [`ShadowTable`]) patched code attaches to objects —
//! after the kernel's `samples/livepatch/livepatch-shadow-*.c`.
//!
//! Every object and buffer is recorded with the function that allocated it, when, and what
//! freed it, so a scenario can count leaks exactly. The slots of the shadow table live here;
//! a [`ShadowTable`] over them is built for each operation (it is a view: the slots hold all
//! the state, and the machine is single-threaded, so a fresh writer lock per view is enough).
//! Freed shadow variables are reclaimed after a grace period by the runner (see
//! [`Heap::reclaim`]).

use super::code::FnId;
use livepatch_core::shadow::{ShadowError, ShadowId, ShadowSlot, ShadowTable};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The shadow id of a leaked buffer attached to its object (`SV_LEAK`): its data is the
/// buffer's index + 1; its destructor frees the buffer.
pub const SV_LEAK: ShadowId = ShadowId(1);
/// The shadow id of a per-object counter (`SV_COUNTER`): its data is the count; its
/// destructor frees nothing.
pub const SV_COUNTER: ShadowId = ShadowId(2);

/// Default number of shadow slots.
pub const DEFAULT_SHADOW_SLOTS: usize = 1024;

/// Who freed an object or a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FreedBy {
    /// Code running in this function (an original, a variant or a helper).
    Code(FnId),
    /// A `free_all` in a callback of patch number `patch` (index in the scenario).
    Callback {
        /// The patch's index.
        patch: usize,
    },
}

/// One allocation (an object or a buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Allocation {
    /// The function whose code allocated it.
    pub by: FnId,
    /// The task that allocated it.
    pub task: u32,
    /// When.
    pub at_ns: u64,
    /// For a buffer: the object the task was working on (index into the objects).
    pub object: Option<usize>,
    /// What freed it, and when.
    pub freed: Option<(FreedBy, u64)>,
    /// For a buffer: a live [`SV_LEAK`] shadow variable holds it (not leaked: the shadow's
    /// destructor will free it).
    pub in_shadow: bool,
}

impl Allocation {
    /// A buffer nothing will ever free: not freed, and no shadow variable holds it.
    pub fn is_leaked(&self) -> bool {
        self.freed.is_none() && !self.in_shadow
    }
}

/// Counters of the heap and its shadow table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeapStats {
    /// Shadow variables allocated (constructor calls).
    pub shadow_allocs: u64,
    /// `alloc` / `get_or_alloc` failures (exists, full).
    pub shadow_alloc_failures: u64,
    /// `free` calls that found nothing (the kernel's `klp_shadow_free` of a missing variable
    /// is a no-op).
    pub shadow_free_missing: u64,
    /// Destructor calls for [`SV_LEAK`].
    pub leak_dtor_calls: u64,
    /// Destructor calls for [`SV_COUNTER`].
    pub counter_dtor_calls: u64,
    /// Destructor calls for other ids.
    pub other_dtor_calls: u64,
    /// Of the destructor calls, those made by `free_all`.
    pub free_all_dtor_calls: u64,
    /// Counter increments.
    pub counter_increments: u64,
    /// Shadow slots reclaimed after a grace period.
    pub reclaimed: u64,
    /// Grace periods waited for by reclaims.
    pub reclaim_graces: u64,
    /// Frees of something already freed (must stay 0).
    pub double_frees: u64,
}

/// The machine's data.
#[derive(Debug)]
pub struct Heap {
    slots: Vec<ShadowSlot<AtomicUsize>>,
    objects: Vec<Allocation>,
    buffers: Vec<Allocation>,
    /// Slots retired since the last reclaim.
    retired: u64,
    stats: HeapStats,
}

/// Per-task registers of the data ops: the objects the task owns (oldest first), the one it
/// works on, and the buffer it holds.
#[derive(Clone, Debug, Default)]
pub struct TaskData {
    /// Objects the task owns, oldest first.
    pub objects: VecDeque<usize>,
    /// The object it works on.
    pub current: Option<usize>,
    /// A buffer it allocated and has not handed to anything (leaked unless it is).
    pub held: Option<usize>,
}

/// The address of object number `i`.
pub fn object_addr(i: usize) -> usize {
    0xffff_8880_0000_0000usize.wrapping_add(i * 0x40)
}

impl Heap {
    /// A heap with `slots` shadow slots.
    pub fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots).map(|_| ShadowSlot::new(AtomicUsize::new(0))).collect(),
            objects: Vec::new(),
            buffers: Vec::new(),
            retired: 0,
            stats: HeapStats::default(),
        }
    }

    /// Every object allocated.
    pub fn objects(&self) -> &[Allocation] {
        &self.objects
    }

    /// Every buffer allocated.
    pub fn buffers(&self) -> &[Allocation] {
        &self.buffers
    }

    /// Counters.
    pub fn stats(&self) -> &HeapStats {
        &self.stats
    }

    /// Buffers leaked: not freed, and held by no shadow variable.
    pub fn leaked(&self) -> impl Iterator<Item = &Allocation> {
        self.buffers.iter().filter(|b| b.is_leaked())
    }

    /// Live shadow variables.
    pub fn shadows_live(&self) -> usize {
        ShadowTable::new(&self.slots).len()
    }

    /// Freed shadow variables not reclaimed yet.
    pub fn shadows_retired(&self) -> u64 {
        self.retired
    }

    /// The shadow variable of object `obj` with `id`, if any (its data word).
    pub fn shadow(&self, obj: usize, id: ShadowId) -> Option<usize> {
        ShadowTable::new(&self.slots).get(object_addr(obj), id).map(|d| d.load(Ordering::Relaxed))
    }

    pub(crate) fn alloc_object(&mut self, by: FnId, task: u32, now: u64) -> usize {
        self.objects.push(Allocation { by, task, at_ns: now, object: None, freed: None, in_shadow: false });
        self.objects.len() - 1
    }

    pub(crate) fn free_object(&mut self, obj: usize, by: FnId, now: u64) {
        match self.objects.get_mut(obj) {
            Some(o) if o.freed.is_none() => o.freed = Some((FreedBy::Code(by), now)),
            _ => self.stats.double_frees += 1,
        }
    }

    pub(crate) fn alloc_buffer(&mut self, by: FnId, task: u32, object: Option<usize>, now: u64) -> usize {
        self.buffers.push(Allocation { by, task, at_ns: now, object, freed: None, in_shadow: false });
        self.buffers.len() - 1
    }

    /// A destructor: counts the call and, for [`SV_LEAK`], frees the buffer.
    fn dtor(buffers: &mut [Allocation], stats: &mut HeapStats, id: ShadowId, data: usize, by: FreedBy, now: u64) {
        match id {
            SV_LEAK => {
                stats.leak_dtor_calls += 1;
                // Data 0: the shadow variable holds no buffer.
                if let Some(i) = data.checked_sub(1) {
                    match buffers.get_mut(i) {
                        Some(b) if b.freed.is_none() => {
                            b.freed = Some((by, now));
                            b.in_shadow = false;
                        }
                        _ => stats.double_frees += 1,
                    }
                }
            }
            SV_COUNTER => stats.counter_dtor_calls += 1,
            _ => stats.other_dtor_calls += 1,
        }
    }

    /// `klp_shadow_alloc(obj, id)` with a constructor storing `data`. Returns whether it was
    /// allocated.
    pub(crate) fn shadow_alloc(&mut self, obj: usize, id: ShadowId, data: usize) -> Result<(), ShadowError> {
        let table = ShadowTable::new(&self.slots);
        let r = table.alloc(object_addr(obj), id, |_, d| {
            d.store(data, Ordering::Relaxed);
            Ok(())
        });
        match r {
            Ok(_) => {
                self.stats.shadow_allocs += 1;
                if id == SV_LEAK {
                    if let Some(b) = data.checked_sub(1).and_then(|b| self.buffers.get_mut(b)) {
                        b.in_shadow = true;
                    }
                }
            }
            Err(_) => self.stats.shadow_alloc_failures += 1,
        }
        r.map(|_| ())
    }

    /// `klp_shadow_get_or_alloc(obj, id)` (zeroed), then increments the word.
    pub(crate) fn shadow_count(&mut self, obj: usize, id: ShadowId) {
        let table = ShadowTable::new(&self.slots);
        let mut created = false;
        match table.get_or_alloc(object_addr(obj), id, |_, _| {
            created = true;
            Ok(())
        }) {
            Ok(d) => {
                d.fetch_add(1, Ordering::Relaxed);
                self.stats.counter_increments += 1;
                if created {
                    self.stats.shadow_allocs += 1;
                }
            }
            Err(_) => self.stats.shadow_alloc_failures += 1,
        }
    }

    /// `klp_shadow_free(obj, id, dtor)`; a missing variable is a no-op.
    pub(crate) fn shadow_free(&mut self, obj: usize, id: ShadowId, by: FnId, now: u64) {
        let Heap { slots, buffers, stats, retired, .. } = self;
        let table = ShadowTable::new(slots);
        match table.free(object_addr(obj), id, |_, d| {
            Self::dtor(buffers, stats, id, d.load(Ordering::Relaxed), FreedBy::Code(by), now)
        }) {
            Ok(()) => *retired += 1,
            Err(_) => stats.shadow_free_missing += 1,
        }
    }

    /// `klp_shadow_free_all(id, dtor)` from a callback of patch `patch`. Returns how many.
    pub fn shadow_free_all(&mut self, id: ShadowId, patch: usize, now: u64) -> usize {
        let Heap { slots, buffers, stats, retired, .. } = self;
        let table = ShadowTable::new(slots);
        let n = table.free_all(id, |_, d| {
            stats.free_all_dtor_calls += 1;
            Self::dtor(buffers, stats, id, d.load(Ordering::Relaxed), FreedBy::Callback { patch }, now);
        });
        *retired += n as u64;
        n
    }

    /// Makes freed shadow slots reusable after `grace` (a grace period of the machine: the
    /// runner passes the engine scheduler's `synchronize`). Returns how many.
    pub fn reclaim(&mut self, grace: impl FnOnce()) -> usize {
        let mut waited = false;
        let n = ShadowTable::new(&self.slots).reclaim(|| {
            waited = true;
            grace();
        });
        if waited {
            self.stats.reclaim_graces += 1;
        }
        self.stats.reclaimed += n as u64;
        self.retired = self.retired.saturating_sub(n as u64);
        n
    }
}

impl Default for Heap {
    fn default() -> Self {
        Self::new(DEFAULT_SHADOW_SLOTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leak_shadow_frees_its_buffer_once() {
        let mut h = Heap::new(8);
        let f = FnId(0);
        let o = h.alloc_object(f, 1, 0);
        let b = h.alloc_buffer(f, 1, Some(o), 0);
        h.shadow_alloc(o, SV_LEAK, b + 1).unwrap();
        assert_eq!(h.shadow_alloc(o, SV_LEAK, b + 1), Err(ShadowError::Exists));
        h.shadow_count(o, SV_COUNTER);
        h.shadow_count(o, SV_COUNTER);
        assert_eq!(h.shadow(o, SV_COUNTER), Some(2));
        h.shadow_free(o, SV_LEAK, f, 5);
        h.shadow_free(o, SV_LEAK, f, 6);
        assert_eq!(h.buffers()[b].freed, Some((FreedBy::Code(f), 5)));
        assert_eq!(h.shadow_free_all(SV_COUNTER, 0, 7), 1);
        assert_eq!((h.shadows_live(), h.shadows_retired()), (0, 2));
        let mut graces = 0;
        assert_eq!(h.reclaim(|| graces += 1), 2);
        let s = h.stats();
        assert_eq!((s.leak_dtor_calls, s.counter_dtor_calls, s.shadow_free_missing, s.double_frees), (1, 1, 1, 0));
        assert_eq!((graces, s.reclaimed, h.leaked().count()), (1, 2, 0));
    }
}
