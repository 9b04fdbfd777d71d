//! The patched set: every code range a transition may switch away from or to — each original
//! function with a func stack and each variant on one — in a sorted, versioned index.
//!
//! Readers (the sweep's stack checks, the call-chain model's `parent_ip` test, a backend's
//! address-to-slot lookup) never lock: they load the current version with `Acquire` and search
//! it. The single writer (the engine) builds the next version in the other of two
//! caller-provided buffers and publishes it with a `Release` store; before it writes into a
//! buffer that readers may still be using, it waits for a grace period. That is RCU with two
//! versions and no allocation.
//!
//! # Lookup: a static B+-tree over the sorted starts
//!
//! A version of `n` ranges is, in its buffer, `n` records sorted by start address (record `r`,
//! the range of rank `r`, is entry `r`) and a *key array* of machine words spread over the
//! entries, two per entry (word `j` is in entry `j / 2`):
//!
//! * the leaf level: word `r` is the start of rank `r`, padded with `usize::MAX` to a multiple
//!   of [`NODE_KEYS`];
//! * above it, levels of nodes of [`NODE_KEYS`] keys, each node having `NODE_KEYS + 1`
//!   children: key `i` of a node is the smallest start in the subtree of its child `i + 1`
//!   (`usize::MAX` when that child does not exist), up to a single root node.
//!
//! This is the S+-tree of Khuong and Morin's "Array layouts for comparison-based searching"
//! (as popularised by algorithmica.org): a lookup counts, without a branch, the keys of the
//! root that are at or below the address, which is the child to descend into; one node per
//! level (8 keys, 128 bytes of entries) down to a leaf, whose count is the rank. Then one
//! compare with that rank's length decides hit or miss. At 20 000 ranges that is five node
//! visits, against fifteen steps of a binary search, and at 20 ranges two. A version whose
//! tree does not fit its buffer's key words (a few ranges in a buffer of exactly their size)
//! is binary-searched over its leaf keys. No address is ever the padding key: a range ends at
//! `usize::MAX` at the latest, so its start and last byte are below it, and a lookup of
//! `usize::MAX` is a miss before any key is read.
//!
//! The tree's shape (its height and each level's offset in the key array) is a function of
//! `n`; the writer stores it next to the buffer and publishes it with the version.

use crate::addr::{CodeAddr, CodeRange};
use crate::func_stack::FuncSlot;
use crate::ids::SlotId;
use crate::patch::FuncNode;
use crate::sync::{const_fn, AtomicBool, AtomicRef, AtomicU32, AtomicUsize, Ordering};
use core::fmt;

/// Keys per node of the search tree: 8 words, spread over four entries (two 64-byte lines).
/// Loom models use 2, so their versions of two or three ranges get a tree of two levels.
#[cfg(not(loom))]
pub const NODE_KEYS: usize = 8;
/// Keys per node of the search tree (2 under loom, 8 otherwise).
#[cfg(loom)]
pub const NODE_KEYS: usize = 2;
/// Children per inner node.
const FANOUT: usize = NODE_KEYS + 1;
/// Entries a node's keys are spread over.
const NODE_ENTRIES: usize = NODE_KEYS / 2;
/// The most levels a tree may have (leaves included): `9^8` leaves, far beyond any buffer.
const MAX_HEIGHT: usize = 8;
/// Key of a padding slot: above every start (see the module documentation).
const PAD: usize = usize::MAX;

/// One entry of an index buffer: the record of one range of the version, and two words of the
/// version's key array. 32 bytes on 64-bit targets.
pub struct IndexEntry<'a> {
    /// Words `2i` and `2i + 1` of the key array, for entry `i`.
    keys: [AtomicUsize; 2],
    len: AtomicU32,
    slot: AtomicU32,
    node: AtomicRef<'a, FuncNode<'a>>,
}

impl<'a> IndexEntry<'a> {
    const_fn! {
        /// An empty entry (storage for [`PatchedSet`] buffers).
        pub fn new() -> Self {
            Self {
                keys: [AtomicUsize::new(0), AtomicUsize::new(0)],
                len: AtomicU32::new(0),
                slot: AtomicU32::new(0),
                node: AtomicRef::none(),
            }
        }
    }

    /// The record as a hit on the range starting at `start`.
    #[inline(always)]
    fn read_known(&self, start: usize, len: usize) -> Hit<'a> {
        Hit {
            range: CodeRange::from_written(start, start.saturating_add(len)),
            slot: SlotId(self.slot.load(Ordering::Relaxed)),
            node: self.node.load(Ordering::Relaxed),
        }
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed) as usize
    }
}

impl Default for IndexEntry<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for IndexEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexEntry")
            .field("keys", &[self.keys[0].load(Ordering::Relaxed), self.keys[1].load(Ordering::Relaxed)])
            .field("len", &self.len())
            .field("slot", &self.slot.load(Ordering::Relaxed))
            .field("variant", &self.node.load(Ordering::Relaxed).is_some())
            .finish()
    }
}

/// Word `j` of the key array spread over `buffer`.
#[inline(always)]
fn key_word<'b>(buffer: &'b [IndexEntry<'_>], j: usize) -> Option<&'b AtomicUsize> {
    buffer.get(j / 2).map(|e| &e.keys[j % 2])
}

/// Word `j` of the key array; `PAD` past the buffer's end (never read by a lookup).
#[inline(always)]
fn key(buffer: &[IndexEntry<'_>], j: usize) -> usize {
    key_word(buffer, j).map_or(PAD, |w| w.load(Ordering::Relaxed))
}

/// The range of rank `rank` (`rank` < the version's length, `buffer` its buffer).
fn read_rank<'a>(buffer: &[IndexEntry<'a>], rank: usize) -> Hit<'a> {
    buffer[rank].read_known(key(buffer, rank), buffer[rank].len())
}

/// Writes `hit` as the range of rank `rank`; its length fits in 32 bits (checked by the caller).
fn write_rank<'a>(buffer: &[IndexEntry<'a>], rank: usize, hit: &Hit<'a>) {
    if let Some(w) = key_word(buffer, rank) {
        w.store(hit.range.start().get(), Ordering::Relaxed);
    }
    let entry = &buffer[rank];
    entry.len.store(u32::try_from(hit.range.len()).unwrap_or(u32::MAX), Ordering::Relaxed);
    entry.slot.store(hit.slot.0, Ordering::Relaxed);
    entry.node.store(hit.node, Ordering::Relaxed);
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
    /// A range is longer than `u32::MAX` bytes (an entry stores the length in 32 bits).
    TooLong(CodeRange),
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexError::Full { capacity } => {
                write!(f, "patched-set index is full ({capacity} ranges)")
            }
            IndexError::Overlap(a, b) => write!(f, "code ranges {a:?} and {b:?} overlap"),
            IndexError::TooLong(r) => write!(f, "code range {r:?} is longer than 4 GiB"),
        }
    }
}

impl core::error::Error for IndexError {}

/// How the published version is laid out, for diagnostics and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexLayout {
    /// Ranges in the version.
    pub ranges: usize,
    /// Levels of its search tree, leaves included; 0 when the tree did not fit the buffer's
    /// key words (lookups binary-search the leaf keys).
    pub height: usize,
    /// Words of the key array the tree uses (0 without a tree).
    pub key_words: usize,
}

/// The shape of a version's tree: `offsets[l]` is the first key word of level `l` (leaves are
/// level 0, at word 0), for `l < height`; `height` 0 means no tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    height: usize,
    offsets: [usize; MAX_HEIGHT],
}

impl Shape {
    const NONE: Self = Self { height: 0, offsets: [0; MAX_HEIGHT] };

    /// The tree over `n` sorted keys, if it fits in `key_words` words.
    fn of(n: usize, key_words: usize) -> Self {
        let mut shape = Self::NONE;
        if n == 0 {
            return shape;
        }
        let (mut nodes, mut at) = (n.div_ceil(NODE_KEYS), 0usize);
        for level in 0..MAX_HEIGHT {
            shape.offsets[level] = at;
            at += nodes * NODE_KEYS;
            if nodes == 1 {
                if at > key_words {
                    break;
                }
                shape.height = level + 1;
                return shape;
            }
            nodes = nodes.div_ceil(FANOUT);
        }
        Self::NONE
    }

    /// Key words used.
    fn words(&self) -> usize {
        match self.height {
            0 => 0,
            h => self.offsets[h - 1] + NODE_KEYS,
        }
    }
}

/// Counts the keys of the node whose first key is word `at` that are at or below `addr`,
/// without a branch; `None` if the node is past the buffer (never, for a published shape).
#[inline(always)]
fn count_le(buffer: &[IndexEntry<'_>], at: usize, addr: usize) -> Option<usize> {
    let first = at / 2;
    let node: &[IndexEntry<'_>; NODE_ENTRIES] = buffer.get(first..first + NODE_ENTRIES)?.try_into().ok()?;
    // Counted as `NODE_KEYS` minus the keys above `addr`, one borrow each: LLVM keeps that a
    // chain of `cmp`/`sbb` (a sum of `<=` it vectorises into a slow horizontal reduction).
    let mut above = 0usize;
    for e in node {
        for k in &e.keys {
            above += addr.overflowing_sub(k.load(Ordering::Relaxed)).1 as usize;
        }
    }
    Some(NODE_KEYS - above)
}

/// One published version.
#[derive(Clone, Copy)]
struct Version<'a, 's> {
    /// Its records, sorted (the key array spans the whole buffer).
    entries: &'a [IndexEntry<'a>],
    buffer: &'a [IndexEntry<'a>],
    /// The tree's shape, as published with the version.
    shape: &'s [AtomicUsize; MAX_HEIGHT + 1],
}

impl<'a> Version<'a, '_> {
    /// The range containing `addr`.
    #[inline(always)]
    fn lookup(&self, addr: usize) -> Option<Hit<'a>> {
        if addr == PAD {
            return None; // no range holds the last address (see the module documentation)
        }
        let height = self.shape[0].load(Ordering::Relaxed);
        if height == 0 {
            return self.lookup_without_tree(addr);
        }
        let mut node = 0;
        for level in (1..height.min(MAX_HEIGHT)).rev() {
            let offset = self.shape[level].load(Ordering::Relaxed);
            node = node * FANOUT + count_le(self.buffer, offset + node * NODE_KEYS, addr)?;
        }
        let rank = (node * NODE_KEYS + count_le(self.buffer, node * NODE_KEYS, addr)?).checked_sub(1)?;
        self.hit_if_contains(rank, addr)
    }

    /// A binary search of the leaf keys, for a version whose tree did not fit.
    #[cold]
    fn lookup_without_tree(&self, addr: usize) -> Option<Hit<'a>> {
        let (mut lo, mut hi) = (0, self.entries.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key(self.buffer, mid) <= addr {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.hit_if_contains(lo.checked_sub(1)?, addr)
    }

    #[inline(always)]
    fn hit_if_contains(&self, rank: usize, addr: usize) -> Option<Hit<'a>> {
        let entry = self.entries.get(rank)?;
        let (start, len) = (key(self.buffer, rank), entry.len());
        (addr.wrapping_sub(start) < len).then(|| entry.read_known(start, len))
    }

    /// The range of rank `rank`.
    fn read(&self, rank: usize) -> Hit<'a> {
        read_rank(self.buffer, rank)
    }
}

/// The versioned index. See the [module documentation](self).
pub struct PatchedSet<'a> {
    buffers: [&'a [IndexEntry<'a>]; 2],
    /// `len << 1 | buffer` of the published version.
    current: AtomicUsize,
    /// The tree shape of each buffer's version: its height, then the offset of each level
    /// above the leaves (see `Shape`).
    shapes: [[AtomicUsize; MAX_HEIGHT + 1]; 2],
    /// The unpublished buffer may still have readers: wait for a grace period before reuse.
    stale: AtomicBool,
}

#[cfg(not(loom))]
const fn new_shape() -> [AtomicUsize; MAX_HEIGHT + 1] {
    [const { AtomicUsize::new(0) }; MAX_HEIGHT + 1]
}

#[cfg(loom)]
fn new_shape() -> [AtomicUsize; MAX_HEIGHT + 1] {
    core::array::from_fn(|_| AtomicUsize::new(0))
}

impl<'a> PatchedSet<'a> {
    const_fn! {
        /// An empty index over two buffers (a version holds at most the smaller one's length).
        pub fn new(a: &'a [IndexEntry<'a>], b: &'a [IndexEntry<'a>]) -> Self {
            Self {
                buffers: [a, b],
                current: AtomicUsize::new(0),
                shapes: [new_shape(), new_shape()],
                stale: AtomicBool::new(false),
            }
        }
    }

    /// How many ranges a version can hold.
    pub fn capacity(&self) -> usize {
        self.buffers[0].len().min(self.buffers[1].len())
    }

    /// The published version.
    ///
    /// `Acquire`: pairs with the `Release` in [`rebuild`](Self::rebuild), making the records,
    /// the key array and the shape written before publication visible; they are then read
    /// `Relaxed`.
    #[inline(always)]
    fn published(&self) -> Version<'a, '_> {
        let v = self.current.load(Ordering::Acquire);
        let which = v & 1;
        let buffer = self.buffers[which];
        let entries = &buffer[..(v >> 1).min(buffer.len())];
        Version { entries, buffer, shape: &self.shapes[which] }
    }

    /// Number of ranges in the published version.
    pub fn len(&self) -> usize {
        self.published().entries.len()
    }

    /// Whether the published version is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How the published version is laid out.
    pub fn layout(&self) -> IndexLayout {
        let v = self.published();
        let height = v.shape[0].load(Ordering::Relaxed);
        let mut shape = Shape::NONE;
        shape.height = height.min(MAX_HEIGHT);
        for l in 1..shape.height {
            shape.offsets[l] = v.shape[l].load(Ordering::Relaxed);
        }
        IndexLayout { ranges: v.entries.len(), height: shape.height, key_words: shape.words() }
    }

    /// The range containing `addr`: O(log n) with `log` to the base 9, branch-free within a
    /// level (see the [module documentation](self)).
    #[inline]
    pub fn lookup(&self, addr: CodeAddr) -> Option<Hit<'a>> {
        self.published().lookup(addr.get())
    }

    /// The first published range that overlaps `range`, if any.
    pub fn first_overlap(&self, range: CodeRange) -> Option<Hit<'a>> {
        let v = self.published();
        let (mut lo, mut hi) = (0, v.entries.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if v.read(mid).range.end().get() <= range.start().get() {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let hit = (lo < v.entries.len()).then(|| v.read(lo))?;
        hit.range.overlaps(range).then_some(hit)
    }

    /// Every published range, in address order.
    pub fn iter(&self) -> impl Iterator<Item = Hit<'a>> + 'a {
        let v = self.published();
        let buffer = v.buffer;
        (0..v.entries.len()).map(move |rank| read_rank(buffer, rank))
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
                if len >= buf.len() {
                    return Err(IndexError::Full { capacity: buf.len() });
                }
                if u32::try_from(hit.range.len()).is_err() {
                    return Err(IndexError::TooLong(hit.range));
                }
                write_rank(buf, len, &hit);
                len += 1;
            }
        }
        heap_sort(buf, len);
        for rank in 1..len {
            let (a, b) = (read_rank(buf, rank - 1), read_rank(buf, rank));
            if a.range.overlaps(b.range) {
                return Err(IndexError::Overlap(a.range, b.range));
            }
        }
        let shape = build_tree(buf, len);
        self.shapes[next][0].store(shape.height, Ordering::Relaxed);
        for l in 1..shape.height {
            self.shapes[next][l].store(shape.offsets[l], Ordering::Relaxed);
        }
        // `Release`: pairs with the `Acquire` in `published`; the records, the key array and
        // the shape above happen-before.
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

/// Builds the tree over the sorted leaf keys `0..n` of `buffer` in its key array (padding the
/// leaves, then writing each inner level), and returns its shape (`Shape::NONE`, leaving the
/// leaf keys alone, when it does not fit).
fn build_tree(buffer: &[IndexEntry<'_>], n: usize) -> Shape {
    let shape = Shape::of(n, buffer.len().saturating_mul(2));
    if shape.height == 0 {
        return shape;
    }
    let store = |j: usize, value: usize| {
        if let Some(w) = key_word(buffer, j) {
            w.store(value, Ordering::Relaxed);
        }
    };
    let leaves = n.div_ceil(NODE_KEYS);
    (n..leaves * NODE_KEYS).for_each(|j| store(j, PAD));
    // `span`: leaves under one node of the level below `level`; `nodes`: nodes of `level`.
    let (mut span, mut nodes) = (1, leaves);
    for level in 1..shape.height {
        nodes = nodes.div_ceil(FANOUT);
        for node in 0..nodes {
            for i in 0..NODE_KEYS {
                let leaf = (node * FANOUT + i + 1) * span;
                let value = if leaf < leaves { key(buffer, leaf * NODE_KEYS) } else { PAD };
                store(shape.offsets[level] + node * NODE_KEYS + i, value);
            }
        }
        span *= FANOUT;
    }
    shape
}

/// In-place heap sort of ranks `0..n` of `buffer` by start address (no allocation; the writer
/// owns the buffer).
fn heap_sort(buffer: &[IndexEntry<'_>], n: usize) {
    let swap = |a: usize, b: usize| {
        let (x, y) = (read_rank(buffer, a), read_rank(buffer, b));
        write_rank(buffer, a, &y);
        write_rank(buffer, b, &x);
    };
    let sift_down = |mut root: usize, end: usize| loop {
        let mut child = 2 * root + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && key(buffer, child) < key(buffer, child + 1) {
            child += 1;
        }
        if key(buffer, root) >= key(buffer, child) {
            return;
        }
        swap(root, child);
        root = child;
    };
    for root in (0..n / 2).rev() {
        sift_down(root, n);
    }
    for end in (1..n).rev() {
        swap(0, end);
        sift_down(0, end);
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

    /// The reference: a linear scan of the ranges.
    fn reference(ranges: &[CodeRange], addr: usize) -> Option<CodeRange> {
        ranges.iter().copied().find(|r| r.contains(CodeAddr(addr)))
    }

    /// Publishes `ranges` (as originals of one slot each) in buffers of `capacity` entries and
    /// checks every lookup near every range boundary, and `queries` seeded random addresses in
    /// the set's bounds, against the reference. Returns the layout.
    fn check_layout(ranges: &[CodeRange], capacity: usize, queries: usize) -> IndexLayout {
        let slots: Vec<FuncSlot<'_>> = ranges.iter().map(|_| FuncSlot::new()).collect();
        for (slot, &range) in slots.iter().zip(ranges) {
            slot.claim(range, crate::ObjectId(0));
        }
        let a: Vec<IndexEntry<'_>> = (0..capacity).map(|_| IndexEntry::new()).collect();
        let b: Vec<IndexEntry<'_>> = (0..capacity).map(|_| IndexEntry::new()).collect();
        let set = PatchedSet::new(&a, &b);
        set.rebuild(&slots, || {}).unwrap();
        let check = |addr: usize| {
            let got = set.lookup(CodeAddr(addr)).map(|h| h.range);
            assert_eq!(got, reference(ranges, addr), "lookup({addr:#x}) in {:?}", set.layout());
        };
        for r in ranges {
            let (s, e) = (r.start().get(), r.end().get());
            for addr in [s.wrapping_sub(1), s, s + 1, e - 1, e, e.wrapping_add(1)] {
                check(addr);
            }
        }
        let lo = ranges.iter().map(|r| r.start().get()).min().unwrap_or(0);
        let hi = ranges.iter().map(|r| r.end().get()).max().unwrap_or(1);
        let mut x = 0x5eed_u64;
        for _ in 0..queries {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            check(lo + (z as usize) % (hi - lo));
        }
        set.layout()
    }

    #[test]
    fn the_tree_agrees_with_a_scan_on_every_layout() {
        // Patched text spread out, and variants packed in a module area far away.
        let mut spread: Vec<CodeRange> = (0..300).map(|i| r(0x1000_0000 + i * 0x4000, 0x100)).collect();
        spread.extend((0..300).map(|i| r(0x4000_0000 + i * 0x200, 0x100)));
        let layout = check_layout(&spread, 600, 20_000);
        assert_eq!(layout.ranges, 600);
        // 75 leaves, 9 nodes above them, one root.
        assert_eq!(layout, IndexLayout { ranges: 600, height: 3, key_words: 600 + 72 + 8 });

        // Tiny functions packed back to back.
        let packed: Vec<CodeRange> = (0..500).map(|i| r(0x8000 + i * 0x10, 0x10)).collect();
        assert_eq!(check_layout(&packed, 500, 20_000).height, 3);
        let two_bytes: Vec<CodeRange> = (0..500).map(|i| r(0x8000 + i * 2, 2)).collect();
        assert_eq!(check_layout(&two_bytes, 500, 20_000).key_words, 504 + 56 + 8);

        // Mixed sizes with gaps; headroom in the buffers.
        let mut mixed = Vec::new();
        let mut at = 0x10_0000;
        for i in 0..400usize {
            let len = [0x10, 0x30, 0x200, 0x1_0000, 0x8][i % 5];
            mixed.push(r(at, len));
            at += len + [0, 0x10, 0x1000, 0x3][i % 4];
        }
        let layout = check_layout(&mixed, 1000, 20_000);
        assert_eq!(layout, IndexLayout { ranges: 400, height: 3, key_words: 400 + 48 + 8 });

        // Five levels: 20 000 ranges (10 000 patched functions).
        let big: Vec<CodeRange> = (0..20_000).map(|i| r(0x1000_0000 + i * 0x90, 0x10 + i % 0x80)).collect();
        assert_eq!(check_layout(&big, 20_000, 50_000).height, 5);

        // One range, and ranges at the top of the address space (the last one ends at
        // `usize::MAX`, so its start is below the padding key), with and without a tree.
        check_layout(&[r(0x1000, 1)], 1, 100);
        check_layout(&[r(usize::MAX - 0x30, 0x10), r(usize::MAX - 0x10, 0x10)], 2, 1000);
        let top: Vec<CodeRange> = (1..=9).rev().map(|i| r(usize::MAX - i * 0x10, 0x10)).collect();
        assert_eq!(check_layout(&top, 12, 1000).height, 2);
        assert_eq!(check_layout(&top, 9, 1000).height, 0);
        assert_eq!(check_layout(&top[1..], 8, 1000).height, 1);
    }

    proptest::proptest! {
        /// Random layouts — tiny to 16 KiB ranges, back to back or with gaps, in up to three
        /// clusters far apart, with or without spare buffer room — agree with a scan.
        #[test]
        fn random_layouts_agree_with_a_scan(
            ranges in proptest::collection::vec((0usize..0x2000, 1usize..0x4000, 0u8..16), 1..300),
            headroom in 0usize..3,
        ) {
            let mut at = 0x1000_0000usize;
            let layout: Vec<CodeRange> = ranges
                .iter()
                .map(|&(gap, len, kind)| {
                    at += match kind {
                        0 => 0x1000_0000, // a new cluster
                        1..=5 => 0,       // back to back
                        _ => gap,
                    };
                    let len = if kind < 10 { len % 0x40 + 1 } else { len };
                    let range = r(at, len);
                    at += len;
                    range
                })
                .collect();
            let layout = check_layout(&layout, layout.len() * (1 + headroom), 256);
            proptest::prop_assert!(layout.height > 0 || layout.ranges < 12, "{:?}", layout);
        }
    }

    /// Many dense layouts (ranges of 1 to 48 bytes, back to back or with small gaps, many
    /// many under one leaf) against a scan at every address, so every key compare of every
    /// node decides some lookup.
    #[test]
    fn dense_layouts_agree_with_a_scan_at_every_address() {
        let mut x = 0x7a6_u64;
        let mut next = |n: usize| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (x ^ (x >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            (z >> 17) as usize % n
        };
        for _ in 0..300 {
            let mut at = 0x10_0000;
            let ranges: Vec<CodeRange> = (0..40 + next(80))
                .map(|_| {
                    let len = 1 + next(48);
                    at += [0, 0, 1, 7, 16, 40][next(6)];
                    let range = r(at, len);
                    at += len;
                    range
                })
                .collect();
            let slots: Vec<FuncSlot<'_>> = ranges.iter().map(|_| FuncSlot::new()).collect();
            for (slot, &range) in slots.iter().zip(&ranges) {
                slot.claim(range, crate::ObjectId(0));
            }
            let a: Vec<IndexEntry<'_>> = ranges.iter().map(|_| IndexEntry::new()).collect();
            let b: Vec<IndexEntry<'_>> = ranges.iter().map(|_| IndexEntry::new()).collect();
            let set = PatchedSet::new(&a, &b);
            set.rebuild(&slots, || {}).unwrap();
            for addr in 0x10_0000 - 64..at + 64 {
                assert_eq!(set.lookup(CodeAddr(addr)).map(|h| h.range), reference(&ranges, addr), "{addr:#x}");
            }
        }
    }

    #[test]
    fn a_version_whose_tree_does_not_fit_is_binary_searched() {
        // Ten ranges in buffers of ten entries: two leaves and a root need 24 key words, the
        // buffer has 20.
        let ten: Vec<CodeRange> = (0..10).map(|i| r(0x1000_0000 + i * 0x800, 0x400)).collect();
        let layout = check_layout(&ten, 10, 10_000);
        assert_eq!(layout, IndexLayout { ranges: 10, height: 0, key_words: 0 });
        // With two more entries of headroom it has one.
        assert_eq!(check_layout(&ten, 12, 10_000), IndexLayout { ranges: 10, height: 2, key_words: 24 });
    }

    #[test]
    fn every_version_of_twelve_ranges_or_more_has_a_tree() {
        for n in 1..200_000 {
            let shape = Shape::of(n, 2 * n);
            assert_eq!(shape.height > 0, !(1..=3).contains(&n) && !(9..=11).contains(&n), "{n}: {shape:?}");
            if shape.height > 0 {
                assert!(shape.words() <= 2 * n);
                assert_eq!(Shape::of(n, shape.words()), shape, "fits exactly");
                assert_eq!(Shape::of(n, shape.words() - 1).height, 0);
            }
        }
        assert_eq!(Shape::of(20_000, 40_000).height, 5);
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
        #[cfg(target_pointer_width = "64")]
        {
            // A range over 4 GiB does not fit an entry's 32-bit length.
            slots[2].release();
            let huge = r(0x1_0000_0000, 1 << 32);
            slots[1].claim(huge, crate::ObjectId(0));
            assert_eq!(set.rebuild(&slots, || {}), Err(IndexError::TooLong(huge)));
            assert!(set.lookup(CodeAddr(0x1_0000_0000)).is_none());
            assert_eq!(set.len(), 1);
        }
        assert!(set.lookup(CodeAddr(0x1000)).is_some());
        assert!(set.lookup(CodeAddr(0x2000)).is_none());
    }
}
