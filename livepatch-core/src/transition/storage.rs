use crate::func_stack::FuncSlot;
use crate::patched_set::{DirectorySlot, IndexBuffer, IndexEntry};

/// Caller-provided memory for an engine: `SLOTS` original functions and `RANGES` index entries
/// per version (each original and each variant on a stack takes one; lookups are fastest with
/// [`WINDOW`](crate::patched_set::WINDOW) entries to spare, see
/// [`PatchedSet::new`](crate::patched_set::PatchedSet::new)), each entry with its two
/// directory slots: 32 bytes per range and buffer on 64-bit targets.
///
/// Put it in a `static`, a `Box`, or on a long-lived stack frame; then build a
/// [`Live`](super::Live) over it with [`Live::new`](super::Live::new).
pub struct EngineStorage<'a, const SLOTS: usize, const RANGES: usize> {
    pub(crate) slots: [FuncSlot<'a>; SLOTS],
    pub(crate) index: [[IndexEntry<'a>; RANGES]; 2],
    pub(crate) directory: [[[DirectorySlot; 2]; RANGES]; 2],
}

impl<'a, const SLOTS: usize, const RANGES: usize> EngineStorage<'a, SLOTS, RANGES> {
    /// Empty storage.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            slots: [const { FuncSlot::new() }; SLOTS],
            index: [const { [const { IndexEntry::new() }; RANGES] }; 2],
            directory: [const { [const { [const { DirectorySlot::new() }; 2] }; RANGES] }; 2],
        }
    }

    /// Empty storage.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| FuncSlot::new()),
            index: core::array::from_fn(|_| core::array::from_fn(|_| IndexEntry::new())),
            directory: core::array::from_fn(|_| {
                core::array::from_fn(|_| core::array::from_fn(|_| DirectorySlot::new()))
            }),
        }
    }

    /// The slots.
    pub fn slots(&self) -> &[FuncSlot<'a>] {
        &self.slots
    }

    /// Index buffer `i` (0 or 1).
    pub(crate) const fn index_buffer(&'a self, i: usize) -> IndexBuffer<'a> {
        IndexBuffer { entries: &self.index[i], directory: &self.directory[i] }
    }
}

impl<const SLOTS: usize, const RANGES: usize> Default for EngineStorage<'_, SLOTS, RANGES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SLOTS: usize, const RANGES: usize> core::fmt::Debug for EngineStorage<'_, SLOTS, RANGES> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EngineStorage").field("slots", &SLOTS).field("ranges", &RANGES).finish()
    }
}
