//! How a kernel module finds the current task's word, and how the kernel finds its own, for
//! the hook bench (area 1):
//!
//! * [`TaskTable`]: the module's table (a port of `lp_rec_find` in
//!   `livepatch-linux/module/shim.c`): 65 536 buckets (`hlist_head`), each a lock-free chain of
//!   records keyed by the `task_struct` address, bucket = Fibonacci hash of `addr >> 6`. A record
//!   is laid out as `struct lp_task_rec`: `{ u32 word, u8 kicks, task, hlist_node hash, list_head
//!   list }`, 48 bytes, so it comes from kmalloc-64: 4 KiB slab pages of 64 objects, each page's
//!   objects handed out in a random order (Debian builds with `CONFIG_SLAB_FREELIST_RANDOM`), in
//!   the order the tasks are visited.
//! * [`RecCache`]: the module's per-CPU cache in front of the table (`lp_rec_cache` and
//!   `tasks::current_word` in the module): the record last found on this CPU.
//! * [`TaskStructs`]: `task_struct`s as the kernel lays them out (≈ 9.7 KiB each, three to a
//!   32 KiB slab), with `patch_state` at its offset inside, which is all `klp_ftrace_handler`
//!   reads of `current`.
//!
//! Every allocation is leaked, so every pointer stays valid for the whole process.

use crate::kernel::KTask;
use crate::layout::Rng;
use livepatch_core::{PatchState, TaskPatchState};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Buckets of the module's table (`1 << 16`).
pub const TABLE_BITS: u32 = 16;
/// Bytes of one `task_struct` (Debian 12's 6.1 kernel: `task_struct` cache object size).
pub const TASK_STRUCT_SIZE: usize = 9_792;
/// Offset of `patch_state` in `task_struct` (`CONFIG_LIVEPATCH`, x86-64; approximate: the
/// field sits in the middle of the structure, far from the fields `current` users touch first).
pub const PATCH_STATE_OFFSET: usize = 2_456;
const SLAB_32K: usize = 32 * 1024;
const PAGE: usize = 4096;
const KMALLOC_64: usize = 64;

/// `struct hlist_node`. `next` is written by [`TaskTable::remove`] while readers may hold the
/// record (`WRITE_ONCE`/`READ_ONCE` in the module): an atomic, accessed `Relaxed`.
#[repr(C)]
#[derive(Debug)]
struct HlistNode {
    next: AtomicPtr<HlistNode>,
    pprev: *const *const HlistNode,
}

/// A record of the module's table, laid out as `struct lp_task_rec` (48 bytes: kmalloc-64).
#[repr(C)]
#[derive(Debug)]
pub struct TaskRec {
    word: TaskPatchState,
    kicks: u8,
    /// Cleared by [`TaskTable::remove`] while a [`RecCache`] may hand the record out (the
    /// module's `AtomicPtr`): an atomic, accessed `Relaxed`.
    task: AtomicUsize,
    hash: HlistNode,
    list: [usize; 2],
}

/// The module's task table. See the module documentation.
#[derive(Debug)]
pub struct TaskTable {
    buckets: Box<[AtomicPtr<HlistNode>]>,
    records: Vec<*const TaskRec>,
}

/// The word of a task the table does not know (the module's `UNTRACKED`).
static UNKNOWN: TaskPatchState = TaskPatchState::new();

#[inline(always)]
fn bucket(task: usize) -> usize {
    (task >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - TABLE_BITS)
}

impl TaskTable {
    /// A table with a record for each of `tasks`, placed as kmalloc-64 would place them.
    pub fn new(tasks: &[usize], seed: u64) -> Self {
        let per_page = PAGE / KMALLOC_64;
        let pages = tasks.len().div_ceil(per_page).max(1);
        // Page-aligned slab pages, leaked.
        let raw: &'static mut [u8] = Box::leak(vec![0u8; (pages + 1) * PAGE].into_boxed_slice());
        let base = raw.as_mut_ptr().wrapping_add(raw.as_ptr().align_offset(PAGE));
        let mut rng = Rng::new(seed);
        let mut buckets: Box<[AtomicPtr<HlistNode>]> =
            (0..1 << TABLE_BITS).map(|_| AtomicPtr::new(ptr::null_mut())).collect();
        let mut records = Vec::with_capacity(tasks.len());
        for (page, chunk) in tasks.chunks(per_page).enumerate() {
            // The page's freelist, shuffled (Fisher-Yates).
            let mut order: Vec<usize> = (0..per_page).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            for (&task, &obj) in chunk.iter().zip(&order) {
                let rec = base.wrapping_add(page * PAGE + obj * KMALLOC_64).cast::<TaskRec>();
                let b = bucket(task);
                let hash = HlistNode { next: AtomicPtr::new(*buckets[b].get_mut()), pprev: ptr::null() };
                let task = AtomicUsize::new(task);
                // SAFETY: `rec` is a 64-byte-aligned, in-bounds, unused object of the leaked
                // region (each page index and object index is used once).
                unsafe {
                    rec.write(TaskRec { word: TaskPatchState::new(), kicks: 0, task, hash, list: [0; 2] });
                    // hlist_add_head_rcu
                    *buckets[b].get_mut() = ptr::addr_of_mut!((*rec).hash);
                }
                records.push(rec.cast_const());
            }
        }
        Self { buckets, records }
    }

    /// Sets every task's word to `state` (a transition's start does this).
    pub fn reset_all(&self, state: PatchState) {
        for &r in &self.records {
            // SAFETY: records are leaked and valid for the process (module documentation).
            unsafe { (*r).word.reset(state) };
        }
    }

    /// The record of `task` (`lp_rec_find`): hash, then walk the bucket's chain with
    /// `READ_ONCE` loads, `hlist_entry` by offset.
    #[inline(always)]
    pub fn lookup_rec(&self, task: usize) -> Option<&TaskRec> {
        // SAFETY: `bucket` is below `1 << TABLE_BITS`; every chain pointer is null or the hash
        // node of a leaked record, valid for the process. (`Relaxed` loads: `READ_ONCE`.)
        unsafe {
            let mut n = (*self.buckets.as_ptr().add(bucket(task))).load(Ordering::Relaxed);
            while !n.is_null() {
                let r = n.byte_sub(std::mem::offset_of!(TaskRec, hash)).cast::<TaskRec>();
                if (*r).task.load(Ordering::Relaxed) == task {
                    return Some(&*r);
                }
                n = (*n).next.load(Ordering::Relaxed);
            }
        }
        None
    }

    /// `lp_rec_remove` (in `__put_task_struct()`, the task's last reference gone): unlinks
    /// `task`'s record from its chain and clears its task. The record stays readable (the module
    /// frees it after the reaper's grace periods; here it is leaked). Returns whether there was
    /// one.
    pub fn remove(&mut self, task: usize) -> bool {
        let mut link = &self.buckets[bucket(task)];
        loop {
            let n = link.load(Ordering::Relaxed);
            if n.is_null() {
                return false;
            }
            // SAFETY: every chain pointer is null or the hash node of a leaked record, valid
            // for the process; the table is borrowed mutably, so no other writer meanwhile.
            let (r, node) = unsafe { (&*n.byte_sub(std::mem::offset_of!(TaskRec, hash)).cast::<TaskRec>(), &*n) };
            if r.task.load(Ordering::Relaxed) == task {
                link.store(node.next.load(Ordering::Relaxed), Ordering::Relaxed);
                // A cached entry holding the record no longer matches any task.
                r.task.store(0, Ordering::Relaxed);
                return true;
            }
            link = &node.next;
        }
    }

    /// `wake_up_new_task()`: a new record for `task` (a new task, possibly at the address of
    /// one removed before) with `state`, at the head of its chain.
    pub fn insert(&mut self, task: usize, state: PatchState) {
        let b = bucket(task);
        let word = TaskPatchState::new();
        word.reset(state);
        let hash = HlistNode { next: AtomicPtr::new(*self.buckets[b].get_mut()), pprev: ptr::null() };
        let task = AtomicUsize::new(task);
        // Leaked; a raw pointer to the whole record, so that the hash node's address keeps
        // the record's provenance (lookups step back from it to the record).
        let rec = Box::into_raw(Box::new(TaskRec { word, kicks: 0, task, hash, list: [0; 2] }));
        *self.buckets[b].get_mut() = rec.wrapping_byte_add(std::mem::offset_of!(TaskRec, hash)).cast::<HlistNode>();
        self.records.push(rec);
    }

    /// The word of `task` (the table alone): its record's, or the untracked word.
    #[inline(always)]
    pub fn lookup(&self, task: usize) -> &TaskPatchState {
        self.lookup_rec(task).map_or(&UNKNOWN, |r| &r.word)
    }
}

/// One CPU's entry of the module's per-CPU record cache (`lp_rec_cache`): the record the
/// redirect last found on this CPU. A port of the module's path: the C handler reads the
/// entry ([`entry`](Self::entry): `this_cpu_read`, one `gs`-relative load, a load of this
/// static here) and hands the record to Rust; a hit ([`hit`](Self::hit), `tasks::cached_word`)
/// is the record whose task is `current` (a load of the record's task, beside its word); a
/// miss (the first call in a transition after a context switch) looks the table up and stores
/// the record in the entry ([`refill`](Self::refill): `lp_shim_task_rec_cache`, a C call in
/// the module, `#[inline(never)]` here). The module's invalidation (a removed record's task is
/// cleared; the entry is cleared between two grace periods before the free) is off the hot
/// path and not measured.
///
/// Modelled as one 64-byte-aligned entry (CPU 0's).
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct RecCache {
    rec: AtomicUsize,
}

impl RecCache {
    /// An empty entry.
    pub const fn new() -> Self {
        Self { rec: AtomicUsize::new(0) }
    }

    /// The cached record (`this_cpu_read(lp_rec_cache)`): none, or a record of the table.
    #[inline(always)]
    pub fn entry(&self) -> Option<&'static TaskRec> {
        // SAFETY: the entry is 0 or a record of a table, leaked and valid for the process.
        unsafe { (self.rec.load(Ordering::Relaxed) as *const TaskRec).as_ref() }
    }

    /// The word of `task` if `rec` (an [`entry`](Self::entry)) is its record.
    #[inline(always)]
    pub fn hit(rec: Option<&'static TaskRec>, task: usize) -> Option<&'static TaskPatchState> {
        let rec = rec?;
        (rec.task.load(Ordering::Relaxed) == task).then_some(&rec.word)
    }

    /// The word of `task` (the current task on this CPU): a hit, or a refill.
    #[inline(always)]
    pub fn lookup<'t>(&self, table: &'t TaskTable, task: usize) -> &'t TaskPatchState {
        match Self::hit(self.entry(), task) {
            Some(word) => word,
            None => self.refill(table, task),
        }
    }

    /// `lp_rec_cache_forget` (the reaper, between its two grace periods): drops the entry if
    /// it holds a removed record (task cleared).
    pub fn forget_removed(&self) {
        if self.entry().is_some_and(|rec| rec.task.load(Ordering::Relaxed) == 0) {
            self.rec.store(0, Ordering::Relaxed);
        }
    }

    /// A miss (`lp_shim_task_rec_cache`): the table's record of `task`, stored in the entry;
    /// the untracked word, not cached, for a task without one.
    #[cold]
    #[inline(never)]
    pub fn refill<'t>(&self, table: &'t TaskTable, task: usize) -> &'t TaskPatchState {
        match table.lookup_rec(task) {
            Some(rec) => {
                self.rec.store(ptr::from_ref(rec) as usize, Ordering::Relaxed);
                &rec.word
            }
            None => &UNKNOWN,
        }
    }
}

/// `task_struct`s of `n` tasks: their addresses, and the part of each that
/// `klp_ftrace_handler` reads ([`KTask`], placed so that `patch_state` is at
/// [`PATCH_STATE_OFFSET`]).
#[derive(Debug)]
pub struct TaskStructs {
    /// Each task's `task_struct` address, in creation order.
    pub addrs: Vec<usize>,
    ktasks: Vec<*mut KTask>,
}

impl TaskStructs {
    /// `n` task structs, three to a 32 KiB slab, in `state`.
    pub fn new(n: usize, state: i32) -> Self {
        let per_slab = SLAB_32K / TASK_STRUCT_SIZE;
        let slabs = n.div_ceil(per_slab);
        let raw: &'static mut [u8] = Box::leak(vec![0u8; (slabs + 1) * SLAB_32K].into_boxed_slice());
        let base = raw.as_mut_ptr().wrapping_add(raw.as_ptr().align_offset(SLAB_32K));
        let (mut addrs, mut ktasks) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            let t = base.wrapping_add((i / per_slab) * SLAB_32K + (i % per_slab) * TASK_STRUCT_SIZE);
            let k = t.wrapping_add(PATCH_STATE_OFFSET - std::mem::offset_of!(KTask, patch_state)).cast::<KTask>();
            // SAFETY: `k` is in bounds of the leaked region and 8-byte aligned (every offset
            // above is a multiple of 8).
            unsafe { k.write(KTask::new(state)) };
            addrs.push(t as usize);
            ktasks.push(k);
        }
        Self { addrs, ktasks }
    }

    /// Task `i`'s `current` as the handler sees it.
    #[inline(always)]
    pub fn current(&self, i: usize) -> &KTask {
        // SAFETY: written in `new`, leaked, valid for the process.
        unsafe { &*self.ktasks[i] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_finds_its_own_record() {
        let structs = TaskStructs::new(1024, 0);
        let table = TaskTable::new(&structs.addrs, 1);
        table.reset_all(PatchState::Patched);
        for &t in &structs.addrs {
            assert_eq!(table.lookup(t).state(), PatchState::Patched);
        }
        assert!(ptr::eq(table.lookup(8), &UNKNOWN));
        let cache = RecCache::default();
        for &t in structs.addrs.iter().chain(&structs.addrs[..3]).chain(&[8]) {
            assert!(ptr::eq(cache.lookup(&table, t), table.lookup(t)), "a miss refills");
            assert!(ptr::eq(cache.lookup(&table, t), table.lookup(t)), "a hit");
        }
        assert!(ptr::eq(cache.lookup(&table, 8), &UNKNOWN), "an unknown task is never cached");
        assert_eq!(structs.current(5).patch_state, 0);
    }

    /// The module's invalidation, in this port: a task's record is cached on its CPU; the task
    /// dies (its record removed) and a new task gets the same `task_struct` address in the
    /// other universe before the reaper runs. Its first call must read its own word.
    #[test]
    fn a_recycled_task_struct_address_never_meets_the_removed_records_word() {
        let structs = TaskStructs::new(4, 0);
        let dead = structs.addrs[1];
        let mut table = TaskTable::new(&structs.addrs, 5);
        table.reset_all(PatchState::Unpatched);
        let cache = RecCache::default();
        assert_eq!(cache.lookup(&table, dead).state(), PatchState::Unpatched, "cached");
        assert!(table.remove(dead));
        table.insert(dead, PatchState::Patched);
        assert_eq!(
            cache.lookup(&table, dead).state(),
            PatchState::Patched,
            "the new task at the dead task's address read the dead task's word"
        );
        assert_eq!(cache.lookup(&table, structs.addrs[2]).state(), PatchState::Unpatched);
        // The reaper drops an entry holding a removed record, and keeps a live one.
        let other = structs.addrs[2];
        cache.forget_removed();
        assert_ne!(cache.rec.load(Ordering::Relaxed), 0, "a live record stays cached");
        assert!(table.remove(other));
        cache.forget_removed();
        assert_eq!(cache.rec.load(Ordering::Relaxed), 0, "a removed record is dropped before it is freed");
        assert!(ptr::eq(cache.lookup(&table, other), &UNKNOWN));
    }
}
