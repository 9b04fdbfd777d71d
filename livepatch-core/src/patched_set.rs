//! The patched set: every code range a transition may switch away from or to — each original
//! function with a func stack and each variant on one — in a sorted, versioned index.
//!
//! Readers (the sweep's stack checks, the call-chain model's `parent_ip` test, a backend's
//! address-to-slot lookup) never lock: they load the current version with `Acquire` and binary
//! search it, O(log n). The single writer (the engine) builds the next version in the other of
//! two caller-provided buffers and publishes it with a `Release` store; before it writes into a
//! buffer that readers may still be using, it waits for a grace period. That is RCU with two
//! versions and no allocation.

use crate::addr::{CodeAddr, CodeRange};
use crate::func_stack::FuncSlot;
use crate::ids::SlotId;
use crate::patch::FuncNode;
use crate::sync::{const_fn, AtomicBool, AtomicRef, AtomicU32, AtomicUsize, Ordering};
use core::fmt;

/// One entry of an index buffer.
pub struct IndexEntry<'a> {
    start: AtomicUsize,
    end: AtomicUsize,
    slot: AtomicU32,
    node: AtomicRef<'a, FuncNode<'a>>,
}

impl<'a> IndexEntry<'a> {
    const_fn! {
        /// An empty entry (storage for [`PatchedSet`] buffers).
        pub fn new() -> Self {
            Self { start: AtomicUsize::new(0), end: AtomicUsize::new(0), slot: AtomicU32::new(0), node: AtomicRef::none() }
        }
    }

    fn read(&self) -> Hit<'a> {
        Hit {
            range: CodeRange::from_written(self.start.load(Ordering::Relaxed), self.end.load(Ordering::Relaxed)),
            slot: SlotId(self.slot.load(Ordering::Relaxed)),
            node: self.node.load(Ordering::Relaxed),
        }
    }

    fn write(&self, hit: &Hit<'a>) {
        self.start.store(hit.range.start().get(), Ordering::Relaxed);
        self.end.store(hit.range.end().get(), Ordering::Relaxed);
        self.slot.store(hit.slot.0, Ordering::Relaxed);
        self.node.store(hit.node, Ordering::Relaxed);
    }

    fn start(&self) -> usize {
        self.start.load(Ordering::Relaxed)
    }
}

impl Default for IndexEntry<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for IndexEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.read(), f)
    }
}

/// What an address hit in the patched set.
#[derive(Clone, Copy)]
pub struct Hit<'a> {
    /// The range that contains the address.
    pub range: CodeRange,
    /// The original function's slot.
    pub slot: SlotId,
    /// The variant whose code this is; `None` for the original function's own code.
    pub node: Option<&'a FuncNode<'a>>,
}

impl Hit<'_> {
    /// Whether this code is being switched away from in the current transition.
    #[inline]
    pub fn is_away(&self, slots: &[FuncSlot<'_>]) -> bool {
        match self.node {
            Some(node) => node.away.load(Ordering::Relaxed),
            None => slots.get(self.slot.0 as usize).is_some_and(|s| s.orig_away.load(Ordering::Relaxed)),
        }
    }
}

impl fmt::Debug for Hit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hit")
            .field("range", &self.range)
            .field("slot", &self.slot)
            .field("variant", &self.node.is_some())
            .finish()
    }
}

/// Why a new version of the index could not be built. The published version is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexError {
    /// More ranges than an index buffer holds.
    Full {
        /// Entries the buffer holds.
        capacity: usize,
    },
    /// Two ranges overlap.
    Overlap(CodeRange, CodeRange),
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexError::Full { capacity } => {
                write!(f, "patched-set index is full ({capacity} ranges)")
            }
            IndexError::Overlap(a, b) => write!(f, "code ranges {a:?} and {b:?} overlap"),
        }
    }
}

impl core::error::Error for IndexError {}

/// The versioned index. See the [module documentation](self).
pub struct PatchedSet<'a> {
    buffers: [&'a [IndexEntry<'a>]; 2],
    /// `len << 1 | buffer` of the published version.
    current: AtomicUsize,
    /// The unpublished buffer may still have readers: wait for a grace period before reuse.
    stale: AtomicBool,
}

impl<'a> PatchedSet<'a> {
    /// An empty index over two equally sized buffers.
    pub fn new(a: &'a [IndexEntry<'a>], b: &'a [IndexEntry<'a>]) -> Self {
        Self { buffers: [a, b], current: AtomicUsize::new(0), stale: AtomicBool::new(false) }
    }

    /// How many ranges a version can hold.
    pub fn capacity(&self) -> usize {
        self.buffers[0].len().min(self.buffers[1].len())
    }

    /// The published version's entries.
    ///
    /// `Acquire`: pairs with the `Release` in [`rebuild`](Self::rebuild), making the entries
    /// written before publication visible; the entries themselves are then read `Relaxed`.
    #[inline(always)]
    fn published(&self) -> &'a [IndexEntry<'a>] {
        let v = self.current.load(Ordering::Acquire);
        let buf = self.buffers[v & 1];
        &buf[..(v >> 1).min(buf.len())]
    }

    /// Number of ranges in the published version.
    pub fn len(&self) -> usize {
        self.published().len()
    }

    /// Whether the published version is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The range containing `addr`, O(log n).
    #[inline]
    pub fn lookup(&self, addr: CodeAddr) -> Option<Hit<'a>> {
        let entries = self.published();
        // The last entry whose start <= addr.
        let idx = entries.partition_point(|e| e.start() <= addr.get());
        let entry = entries.get(idx.checked_sub(1)?)?;
        (addr.get() < entry.end.load(Ordering::Relaxed)).then(|| entry.read())
    }

    /// The first published range that overlaps `range`, if any.
    pub fn first_overlap(&self, range: CodeRange) -> Option<Hit<'a>> {
        let entries = self.published();
        let idx = entries.partition_point(|e| e.end.load(Ordering::Relaxed) <= range.start().get());
        let hit = entries.get(idx)?.read();
        hit.range.overlaps(range).then_some(hit)
    }

    /// Every published range, in address order.
    pub fn iter(&self) -> impl Iterator<Item = Hit<'a>> + 'a {
        self.published().iter().map(IndexEntry::read)
    }

    /// Builds and publishes a new version with the ranges of `slots`: each claimed slot's
    /// original function and every variant on its stack.
    ///
    /// `grace` is called first when the buffer about to be written may still have readers.
    /// On error nothing is published.
    pub fn rebuild(&self, slots: &'a [FuncSlot<'a>], grace: impl FnOnce()) -> Result<(), IndexError> {
        if self.stale.load(Ordering::Relaxed) {
            grace();
            self.stale.store(false, Ordering::Relaxed);
        }
        let next = 1 - (self.current.load(Ordering::Relaxed) & 1);
        let buf = self.buffers[next];
        let mut len = 0;
        for (i, slot) in slots.iter().enumerate() {
            let Some(orig) = slot.original() else {
                continue;
            };
            let id = SlotId(i as u32);
            let ranges = core::iter::once(Hit { range: orig, slot: id, node: None })
                .chain(slot.iter().filter_map(|n| n.code.map(|c| Hit { range: c, slot: id, node: Some(n) })));
            for hit in ranges {
                let entry = buf.get(len).ok_or(IndexError::Full { capacity: buf.len() })?;
                entry.write(&hit);
                len += 1;
            }
        }
        let entries = &buf[..len];
        heap_sort(entries);
        for pair in entries.windows(2) {
            let (a, b) = (pair[0].read(), pair[1].read());
            if a.range.overlaps(b.range) {
                return Err(IndexError::Overlap(a.range, b.range));
            }
        }
        // `Release`: pairs with the `Acquire` in `published`; the entries above happen-before.
        self.current.store(len << 1 | next, Ordering::Release);
        self.stale.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl fmt::Debug for PatchedSet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// In-place heap sort by start address (no allocation; the writer owns the buffer).
fn heap_sort(entries: &[IndexEntry<'_>]) {
    fn swap(entries: &[IndexEntry<'_>], a: usize, b: usize) {
        let (x, y) = (entries[a].read(), entries[b].read());
        entries[a].write(&y);
        entries[b].write(&x);
    }
    fn sift_down(entries: &[IndexEntry<'_>], mut root: usize, end: usize) {
        loop {
            let mut child = 2 * root + 1;
            if child >= end {
                return;
            }
            if child + 1 < end && entries[child].start() < entries[child + 1].start() {
                child += 1;
            }
            if entries[root].start() >= entries[child].start() {
                return;
            }
            swap(entries, root, child);
            root = child;
        }
    }
    let n = entries.len();
    for root in (0..n / 2).rev() {
        sift_down(entries, root, n);
    }
    for end in (1..n).rev() {
        swap(entries, 0, end);
        sift_down(entries, 0, end);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn r(start: usize, len: usize) -> CodeRange {
        CodeRange::new(start, len).unwrap()
    }

    #[test]
    fn lookup_finds_originals_and_variants() {
        let nodes = [FuncNode::new(Some(r(0x9000, 0x40))), FuncNode::new(Some(r(0x9100, 0x40)))];
        let slots: Vec<FuncSlot<'_>> = (0..3).map(|_| FuncSlot::new()).collect();
        slots[0].claim(r(0x3000, 0x10), crate::ObjectId(0));
        slots[0].push(&nodes[0]);
        slots[2].claim(r(0x1000, 0x10), crate::ObjectId(0));
        slots[2].push(&nodes[1]);
        let a: Vec<IndexEntry<'_>> = (0..8).map(|_| IndexEntry::new()).collect();
        let b: Vec<IndexEntry<'_>> = (0..8).map(|_| IndexEntry::new()).collect();
        let set = PatchedSet::new(&a, &b);
        assert!(set.lookup(CodeAddr(0x3000)).is_none());
        let mut graces = 0;
        set.rebuild(&slots, || graces += 1).unwrap();
        assert_eq!(graces, 0);
        assert_eq!(set.len(), 4);
        let starts: Vec<usize> = set.iter().map(|h| h.range.start().get()).collect();
        assert_eq!(starts, [0x1000, 0x3000, 0x9000, 0x9100]);

        let hit = set.lookup(CodeAddr(0x300f)).unwrap();
        assert_eq!((hit.slot, hit.node.is_none()), (SlotId(0), true));
        let hit = set.lookup(CodeAddr(0x913f)).unwrap();
        assert_eq!(hit.slot, SlotId(2));
        assert!(core::ptr::eq(hit.node.unwrap(), &nodes[1]));
        assert!(set.lookup(CodeAddr(0x3010)).is_none());
        assert!(set.lookup(CodeAddr(0x0fff)).is_none());
        assert!(set.lookup(CodeAddr(usize::MAX)).is_none());
        assert_eq!(set.first_overlap(r(0x2ff0, 0x11)).unwrap().slot, SlotId(0));
        assert!(set.first_overlap(r(0x2ff0, 0x10)).is_none());

        // The second rebuild reuses the first buffer only after a grace period.
        set.rebuild(&slots, || graces += 1).unwrap();
        assert_eq!(graces, 1);
    }

    #[test]
    fn a_failed_rebuild_keeps_the_published_version() {
        let slots: Vec<FuncSlot<'_>> = (0..3).map(|_| FuncSlot::new()).collect();
        slots[0].claim(r(0x1000, 0x10), crate::ObjectId(0));
        let a: Vec<IndexEntry<'_>> = (0..2).map(|_| IndexEntry::new()).collect();
        let b: Vec<IndexEntry<'_>> = (0..2).map(|_| IndexEntry::new()).collect();
        let set = PatchedSet::new(&a, &b);
        set.rebuild(&slots, || {}).unwrap();
        slots[1].claim(r(0x1008, 0x10), crate::ObjectId(0));
        assert!(matches!(set.rebuild(&slots, || {}), Err(IndexError::Overlap(..))));
        slots[1].claim(r(0x2000, 0x10), crate::ObjectId(0));
        slots[2].claim(r(0x3000, 0x10), crate::ObjectId(0));
        assert_eq!(set.rebuild(&slots, || {}), Err(IndexError::Full { capacity: 2 }));
        assert_eq!(set.len(), 1);
        assert!(set.lookup(CodeAddr(0x1000)).is_some());
        assert!(set.lookup(CodeAddr(0x2000)).is_none());
    }
}
