//! How a kernel module finds the current task's word, and how the kernel finds its own, for
//! the hook bench (area 1):
//!
//! * [`TaskTable`]: the module's table (a port of the lookup the module's handler calls): 65 536
//!   buckets (`hlist_head`), each a lock-free chain of records `{ next, task, word }` keyed by
//!   the `task_struct` address, bucket = Fibonacci hash of `addr >> 6`. Records are 20 bytes,
//!   so they come from kmalloc-32: 4 KiB slab pages of 128 objects, each page's objects handed
//!   out in a random order (Debian builds with `CONFIG_SLAB_FREELIST_RANDOM`), in the order the
//!   tasks are visited.
//! * [`TaskStructs`]: `task_struct`s as the kernel lays them out (≈ 9.7 KiB each, three to a
//!   32 KiB slab), with `patch_state` at its offset inside, which is all `klp_ftrace_handler`
//!   reads of `current`.
//!
//! Every allocation is leaked, so every pointer stays valid for the whole process.

use crate::kernel::KTask;
use crate::layout::Rng;
use livepatch_core::{PatchState, TaskPatchState};
use std::ptr;

/// Buckets of the module's table (`1 << 16`).
pub const TABLE_BITS: u32 = 16;
/// Bytes of one `task_struct` (Debian 12's 6.1 kernel: `task_struct` cache object size).
pub const TASK_STRUCT_SIZE: usize = 9_792;
/// Offset of `patch_state` in `task_struct` (`CONFIG_LIVEPATCH`, x86-64; approximate: the
/// field sits in the middle of the structure, far from the fields `current` users touch first).
pub const PATCH_STATE_OFFSET: usize = 2_456;
const SLAB_32K: usize = 32 * 1024;
const PAGE: usize = 4096;
const KMALLOC_32: usize = 32;

/// A record of the module's table (20 bytes: a kmalloc-32 object).
#[repr(C)]
#[derive(Debug)]
pub struct TaskRec {
    next: *const TaskRec,
    task: usize,
    word: TaskPatchState,
}

/// The module's task table. See the module documentation.
#[derive(Debug)]
pub struct TaskTable {
    buckets: Box<[*const TaskRec]>,
    records: Vec<*const TaskRec>,
}

/// The word of a task the table does not know.
static UNKNOWN: TaskPatchState = TaskPatchState::new();

#[inline(always)]
fn bucket(task: usize) -> usize {
    (task >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - TABLE_BITS)
}

impl TaskTable {
    /// A table with a record for each of `tasks`, placed as kmalloc-32 would place them.
    pub fn new(tasks: &[usize], seed: u64) -> Self {
        let pages = tasks.len().div_ceil(PAGE / KMALLOC_32).max(1);
        // Page-aligned slab pages, leaked.
        let raw: &'static mut [u8] = Box::leak(vec![0u8; (pages + 1) * PAGE].into_boxed_slice());
        let base = raw.as_mut_ptr().wrapping_add(raw.as_ptr().align_offset(PAGE));
        let mut rng = Rng::new(seed);
        let mut buckets = vec![ptr::null::<TaskRec>(); 1 << TABLE_BITS].into_boxed_slice();
        let mut records = Vec::with_capacity(tasks.len());
        for (page, chunk) in tasks.chunks(PAGE / KMALLOC_32).enumerate() {
            // The page's freelist, shuffled (Fisher-Yates).
            let mut order: Vec<usize> = (0..PAGE / KMALLOC_32).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            for (&task, &obj) in chunk.iter().zip(&order) {
                let rec = base.wrapping_add(page * PAGE + obj * KMALLOC_32).cast::<TaskRec>();
                let b = bucket(task);
                // SAFETY: `rec` is a 32-byte-aligned, in-bounds, unused object of the leaked
                // region (each page index and object index is used once).
                unsafe { rec.write(TaskRec { next: buckets[b], task, word: TaskPatchState::new() }) };
                // hlist_add_head_rcu
                buckets[b] = rec;
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

    /// The word of `task` (the module handler's lookup of `current`): hash, then walk the
    /// bucket's chain with `READ_ONCE` loads.
    #[inline(always)]
    pub fn lookup(&self, task: usize) -> &TaskPatchState {
        // SAFETY: `bucket` is below `1 << TABLE_BITS`; every chain pointer is null or a leaked
        // record, valid for the process.
        unsafe {
            let mut p = ptr::read_volatile(self.buckets.as_ptr().add(bucket(task)));
            while !p.is_null() {
                if (*p).task == task {
                    return &(*p).word;
                }
                p = ptr::read_volatile(ptr::addr_of!((*p).next));
            }
        }
        &UNKNOWN
    }
}

/// A per-CPU one-entry cache in front of [`TaskTable`]: the task it last resolved on this CPU
/// and that task's word. **A proposal for the module, not what it does today** (it looks the
/// table up on every call in a transition): the handler runs with preemption disabled, so the
/// entry of its CPU is stable during the call; `current` is compared with the cached task, and
/// on a match the word is one load away, as `current->patch_state` is for the kernel. On a
/// mismatch (the first call after a context switch) the table is looked up and the entry
/// refilled. What the module would also need: when a record is removed (its `task_struct` is
/// freed), clear every CPU's entry that points to it before the RCU grace period that precedes
/// the free, so a recycled `task_struct` address never meets a stale word.
///
/// Modelled as one 64-byte-aligned entry (CPU 0's): `this_cpu_read` is a `gs`-relative load.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct CpuCache {
    task: std::cell::Cell<usize>,
    word: std::cell::Cell<*const TaskPatchState>,
}

impl Default for CpuCache {
    fn default() -> Self {
        Self { task: std::cell::Cell::new(0), word: std::cell::Cell::new(&UNKNOWN) }
    }
}

impl CpuCache {
    /// The word of `task` (the current task on this CPU).
    #[inline(always)]
    pub fn lookup<'t>(&self, table: &'t TaskTable, task: usize) -> &'t TaskPatchState {
        if self.task.get() == task {
            // SAFETY: `word` is `UNKNOWN` or a record of `table`; both are leaked and valid
            // for the process (module documentation).
            return unsafe { &*self.word.get() };
        }
        let word = table.lookup(task);
        self.task.set(task);
        self.word.set(word);
        word
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
        let cache = CpuCache::default();
        for &t in structs.addrs.iter().chain(&structs.addrs[..3]).chain(&[8]) {
            assert!(ptr::eq(cache.lookup(&table, t), table.lookup(t)), "a miss refills");
            assert!(ptr::eq(cache.lookup(&table, t), table.lookup(t)), "a hit");
        }
        assert_eq!(structs.current(5).patch_state, 0);
    }
}
