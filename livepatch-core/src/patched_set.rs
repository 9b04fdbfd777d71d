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
//! # Lookup
//!
//! A version is the ranges sorted by start address, plus a *granule table*: an open-addressing
//! hash table (linear probing, load ≤ ½) from each aligned granule of `2^shift` bytes that some
//! range overlaps to the first range overlapping it. A lookup hashes the address's granule, finds
//! that range in about one probe, and steps over the few ranges that share the granule: O(1)
//! expected, independent of the number of ranges. The writer picks the smallest granule (16 B
//! to 16 MiB) for which the table stays at most half full and no granule sits more than
//! [`PROBE_LIMIT`] slots from its home slot; if none does (or past `2^24` ranges) the version
//! has no table. Every lookup stays O(log n) in the worst case: a long run of ranges in one
//! granule is finished by a galloping search over that run (O(log k) for k ranges in the
//! granule, never over the rest of the version), and a version without a table is
//! binary-searched. A matching slot whose range overlaps the granule and starts at or before the
//! address decides a hit or a miss there (no earlier range can hold the address); one whose
//! range starts after it decides a miss if that range is the granule's first, and is otherwise
//! a tag collision to probe past.
//!
//! The table needs no storage of its own: each [`IndexEntry`] carries two of its slots, so a
//! version with `n` ranges in a buffer of `capacity` entries gets `min(2·capacity, 4·n)` slots.

use crate::addr::{CodeAddr, CodeRange};
use crate::func_stack::FuncSlot;
use crate::ids::SlotId;
use crate::patch::FuncNode;
use crate::sync::{const_fn, AtomicBool, AtomicRef, AtomicU32, AtomicUsize, Ordering};
use core::fmt;

/// One entry of an index buffer: a range of the version, and two slots of its granule table.
/// 32 bytes on 64-bit targets.
pub struct IndexEntry<'a> {
    start: AtomicUsize,
    len: AtomicU32,
    slot: AtomicU32,
    node: AtomicRef<'a, FuncNode<'a>>,
    /// Two slots of the version's granule table: `tag << RANK_BITS | (rank + 1)`, 0 when empty.
    table: [AtomicU32; 2],
}

impl<'a> IndexEntry<'a> {
    const_fn! {
        /// An empty entry (storage for [`PatchedSet`] buffers).
        pub fn new() -> Self {
            Self {
                start: AtomicUsize::new(0),
                len: AtomicU32::new(0),
                slot: AtomicU32::new(0),
                node: AtomicRef::none(),
                table: [AtomicU32::new(0), AtomicU32::new(0)],
            }
        }
    }

    fn read(&self) -> Hit<'a> {
        self.read_known(self.start(), self.len() as usize)
    }

    /// [`read`](Self::read) with the start and length already loaded.
    #[inline(always)]
    fn read_known(&self, start: usize, len: usize) -> Hit<'a> {
        Hit {
            range: CodeRange::from_written(start, start.saturating_add(len)),
            slot: SlotId(self.slot.load(Ordering::Relaxed)),
            node: self.node.load(Ordering::Relaxed),
        }
    }

    /// Writes `hit`, whose range is at most `u32::MAX` bytes long (checked by the caller).
    fn write(&self, hit: &Hit<'a>) {
        self.start.store(hit.range.start().get(), Ordering::Relaxed);
        self.len.store(u32::try_from(hit.range.len()).unwrap_or(u32::MAX), Ordering::Relaxed);
        self.slot.store(hit.slot.0, Ordering::Relaxed);
        self.node.store(hit.node, Ordering::Relaxed);
    }

    #[inline(always)]
    fn start(&self) -> usize {
        self.start.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        self.len.load(Ordering::Relaxed)
    }

    /// The last byte of the range (written ranges are never empty).
    #[inline(always)]
    fn last(&self) -> usize {
        self.start().saturating_add((self.len() as usize).saturating_sub(1))
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

/// The farthest a granule may sit from its home slot for a version to keep its granule table.
pub const PROBE_LIMIT: usize = 32;
/// The granule sizes the writer tries, smallest first: 16 bytes to 16 MiB.
const SHIFTS: core::ops::RangeInclusive<u32> = 4..=24;
/// Bits of a table slot that hold `rank + 1`; the rest hold a tag from the granule's hash.
const RANK_BITS: u32 = 24;
const RANK_MASK: u32 = (1 << RANK_BITS) - 1;
/// Ranges of a granule a lookup compares branch-free before it gallops over the rest.
const WINDOW: usize = 4;

/// How the published version is laid out, for diagnostics and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexLayout {
    /// Ranges in the version.
    pub ranges: usize,
    /// Size of a granule in bytes; `None` when the version has no granule table (lookups
    /// binary-search).
    pub granule: Option<usize>,
    /// Slots of the granule table (0 without one).
    pub table_slots: usize,
    /// The farthest any granule sits from its home slot (lookups probe at most one more).
    pub longest_probe: usize,
}

/// The granule table of one version, decoded from its shape word.
#[derive(Clone, Copy)]
struct Table {
    /// Granule shift; 0 when the version has no table.
    shift: u32,
    longest_probe: usize,
    slots: usize,
}

impl Table {
    const NONE: u32 = 0;

    fn encode(shift: u32, longest_probe: usize) -> u32 {
        shift | (longest_probe as u32) << 8
    }

    #[inline(always)]
    fn decode(word: u32, buffer_len: usize, ranges: usize) -> Self {
        let shift = word & 0xff;
        let slots = if shift == 0 { 0 } else { table_slots(buffer_len, ranges) };
        Self { shift, longest_probe: (word >> 8) as usize, slots }
    }
}

/// Slots of the granule table of a version of `ranges` ranges in a buffer of `buffer_len`.
#[inline(always)]
fn table_slots(buffer_len: usize, ranges: usize) -> usize {
    buffer_len.saturating_mul(2).min(ranges.saturating_mul(4))
}

/// Fibonacci hashing of a granule number.
#[inline(always)]
fn hash(granule: usize) -> u64 {
    (granule as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The home slot of a hash in a table of `slots` slots (`slots < 2^32`).
#[inline(always)]
fn home(h: u64, slots: usize) -> usize {
    (((h >> 32) * slots as u64) >> 32) as usize
}

/// The tag stored with a granule: hash bits independent of the home slot's.
#[inline(always)]
fn tag(h: u64) -> u32 {
    ((h >> 24) as u32 & 0xff) << RANK_BITS
}

/// Slot `i` of the granule table spread over `buffer` (`None` past its end).
#[inline(always)]
fn table_slot<'b>(buffer: &'b [IndexEntry<'_>], i: usize) -> Option<&'b AtomicU32> {
    buffer.get(i / 2).map(|e| &e.table[i % 2])
}

/// One published version.
#[derive(Clone, Copy)]
struct Version<'a> {
    /// Its ranges, sorted.
    entries: &'a [IndexEntry<'a>],
    /// The whole buffer (the granule table spans past `entries`).
    buffer: &'a [IndexEntry<'a>],
    table: Table,
}

impl<'a> Version<'a> {
    /// The range containing `addr`.
    #[inline(always)]
    fn lookup(&self, addr: usize) -> Option<Hit<'a>> {
        if self.table.shift == 0 {
            let rank = self.entries.partition_point(|e| e.start() <= addr).checked_sub(1)?;
            return self.hit_if_contains(rank, addr);
        }
        let granule = addr >> self.table.shift;
        let h = hash(granule);
        let tag = tag(h);
        let mut i = home(h, self.table.slots);
        for _ in 0..=self.table.longest_probe {
            let word = table_slot(self.buffer, i)?.load(Ordering::Relaxed);
            if word == 0 {
                // Every granule of the version is within `longest_probe` slots of its home,
                // with no empty slot between: absent.
                return None;
            }
            if word & !RANK_MASK == tag {
                let first = ((word & RANK_MASK) as usize).wrapping_sub(1);
                let entry = self.entries.get(first)?;
                let (start, len) = (entry.start(), entry.len() as usize);
                // A range that overlaps the granule and starts at or before `addr` settles the
                // lookup from it on: no range before it can contain `addr` (they end before it
                // starts). One that starts after `addr` settles it (a miss) only if it is the
                // granule's first range, i.e. the range before it does not reach the granule;
                // otherwise the slot is another granule's whose tag collided: probe on.
                if start >> self.table.shift <= granule
                    && start.saturating_add(len.saturating_sub(1)) >> self.table.shift >= granule
                {
                    if start <= addr {
                        return self.in_granule(first, addr);
                    }
                    if !self.reaches_before(first, granule) {
                        return None;
                    }
                }
            }
            i += 1;
            if i == self.table.slots {
                i = 0;
            }
        }
        None
    }

    /// Whether the range before `first` reaches into `granule`.
    #[cold]
    fn reaches_before(&self, first: usize, granule: usize) -> bool {
        first.checked_sub(1).and_then(|p| self.entries.get(p)).is_some_and(|e| e.last() >> self.table.shift >= granule)
    }

    /// The range containing `addr`, given `first`, a range that overlaps `addr`'s granule and
    /// starts at or before `addr`: the last range from `first` on that starts at or before
    /// `addr`, if it contains `addr`. The next [`WINDOW`] − 1 ranges are compared without
    /// branches (a granule rarely holds more); past them, a galloping search over the rest of
    /// the granule's run — never over the rest of the version.
    #[inline(always)]
    fn in_granule(&self, first: usize, addr: usize) -> Option<Hit<'a>> {
        let starts_by = |rank: usize| self.entries.get(rank).is_some_and(|e| e.start() <= addr) as usize;
        let mut rank = first + (1..WINDOW).map(|k| starts_by(first + k)).sum::<usize>();
        if rank == first + WINDOW - 1 && starts_by(rank + 1) == 1 {
            rank = self.gallop(rank + 1, addr);
        }
        self.hit_if_contains(rank, addr)
    }

    /// From `rank`, which starts at or before `addr`, the last range that does: O(log k) for a
    /// run of k such ranges.
    #[cold]
    fn gallop(&self, rank: usize, addr: usize) -> usize {
        let rest = self.entries.get(rank + 1..).unwrap_or(&[]);
        let mut bound = 1;
        while bound < rest.len() && rest[bound - 1].start() <= addr {
            bound *= 2;
        }
        let bound = bound.min(rest.len());
        rank + rest[..bound].partition_point(|e| e.start() <= addr)
    }

    #[inline(always)]
    fn hit_if_contains(&self, rank: usize, addr: usize) -> Option<Hit<'a>> {
        let entry = self.entries.get(rank)?;
        let (start, len) = (entry.start(), entry.len() as usize);
        (addr.wrapping_sub(start) < len).then(|| entry.read_known(start, len))
    }
}

/// The versioned index. See the [module documentation](self).
pub struct PatchedSet<'a> {
    buffers: [&'a [IndexEntry<'a>]; 2],
    /// `len << 1 | buffer` of the published version.
    current: AtomicUsize,
    /// The granule-table shape word of each buffer's version (see `Table`).
    tables: [AtomicU32; 2],
    /// The unpublished buffer may still have readers: wait for a grace period before reuse.
    stale: AtomicBool,
}

impl<'a> PatchedSet<'a> {
    const_fn! {
        /// An empty index over two buffers (a version holds at most the smaller one's length).
        pub fn new(a: &'a [IndexEntry<'a>], b: &'a [IndexEntry<'a>]) -> Self {
            Self {
                buffers: [a, b],
                current: AtomicUsize::new(0),
                tables: [AtomicU32::new(Table::NONE), AtomicU32::new(Table::NONE)],
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
    /// `Acquire`: pairs with the `Release` in [`rebuild`](Self::rebuild), making the entries
    /// and the table shape written before publication visible; they are then read `Relaxed`.
    #[inline(always)]
    fn published(&self) -> Version<'a> {
        let v = self.current.load(Ordering::Acquire);
        // Both buffers' fields are read and one is picked, so nothing waits for a load that
        // depends on `v` (the other buffer's shape word may be being rewritten: it is discarded).
        let (shape0, shape1) = (self.tables[0].load(Ordering::Relaxed), self.tables[1].load(Ordering::Relaxed));
        let (buffer, shape) = if v & 1 == 0 { (self.buffers[0], shape0) } else { (self.buffers[1], shape1) };
        let entries = &buffer[..(v >> 1).min(buffer.len())];
        let table = Table::decode(shape, buffer.len(), entries.len());
        Version { entries, buffer, table }
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
        IndexLayout {
            ranges: v.entries.len(),
            granule: (v.table.shift != 0).then(|| 1 << v.table.shift),
            table_slots: v.table.slots,
            longest_probe: v.table.longest_probe,
        }
    }

    /// The range containing `addr`: O(1) expected, O(log n) worst case (see the
    /// [module documentation](self)).
    #[inline]
    pub fn lookup(&self, addr: CodeAddr) -> Option<Hit<'a>> {
        self.published().lookup(addr.get())
    }

    /// The first published range that overlaps `range`, if any.
    pub fn first_overlap(&self, range: CodeRange) -> Option<Hit<'a>> {
        let entries = self.published().entries;
        let idx = entries.partition_point(|e| e.last() < range.start().get());
        let hit = entries.get(idx)?.read();
        hit.range.overlaps(range).then_some(hit)
    }

    /// Every published range, in address order.
    pub fn iter(&self) -> impl Iterator<Item = Hit<'a>> + 'a {
        self.published().entries.iter().map(IndexEntry::read)
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
                if u32::try_from(hit.range.len()).is_err() {
                    return Err(IndexError::TooLong(hit.range));
                }
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
        self.tables[next].store(build_table(buf, len), Ordering::Relaxed);
        // `Release`: pairs with the `Acquire` in `published`; the entries and the table above
        // happen-before.
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

/// The granules of the sorted ranges `entries` at `shift`, each with the rank of the first range
/// that overlaps it, in increasing order.
fn granules<'e, 'x: 'e>(
    entries: &'e [IndexEntry<'x>],
    shift: u32,
) -> impl Iterator<Item = (usize, usize)> + use<'e, 'x> {
    let mut previous_last: Option<usize> = None;
    entries.iter().enumerate().flat_map(move |(rank, e)| {
        let (mut first, last) = (e.start() >> shift, e.last() >> shift);
        if previous_last == Some(first) {
            first += 1;
        }
        previous_last = Some(last);
        (first..=last).map(move |g| (g, rank))
    })
}

/// Builds the granule table of the sorted ranges `buffer[..len]` in `buffer`, and returns its
/// shape word (`Table::NONE` when no granule size gives a table within the limits).
fn build_table(buffer: &[IndexEntry<'_>], len: usize) -> u32 {
    let slots = table_slots(buffer.len(), len);
    if len == 0 || len >= RANK_MASK as usize || u32::try_from(slots).is_err() {
        return Table::NONE;
    }
    let entries = &buffer[..len];
    for shift in SHIFTS {
        if shift >= usize::BITS || granules(entries, shift).nth(slots / 2).is_some() {
            continue; // more granules than half the slots
        }
        (0..slots).filter_map(|i| table_slot(buffer, i)).for_each(|s| s.store(0, Ordering::Relaxed));
        if let Some(longest_probe) = insert_granules(buffer, entries, shift, slots) {
            return Table::encode(shift, longest_probe);
        }
    }
    Table::NONE
}

/// Inserts every granule of `entries` at `shift` into the cleared table of `slots` slots in
/// `buffer`; the longest probe, or `None` if one exceeds [`PROBE_LIMIT`].
fn insert_granules(buffer: &[IndexEntry<'_>], entries: &[IndexEntry<'_>], shift: u32, slots: usize) -> Option<usize> {
    let mut longest = 0;
    for (granule, rank) in granules(entries, shift) {
        let h = hash(granule);
        let mut i = home(h, slots);
        let mut probe = 0;
        loop {
            let slot = table_slot(buffer, i)?;
            if slot.load(Ordering::Relaxed) == 0 {
                slot.store(tag(h) | (rank as u32 + 1), Ordering::Relaxed);
                break;
            }
            probe += 1;
            if probe > PROBE_LIMIT {
                return None;
            }
            i = if i + 1 == slots { 0 } else { i + 1 };
        }
        longest = longest.max(probe);
    }
    Some(longest)
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
    fn the_granule_table_agrees_with_a_scan_on_every_layout() {
        // Patched text spread out, and variants packed in a module area far away.
        let mut spread: Vec<CodeRange> = (0..300).map(|i| r(0x1000_0000 + i * 0x4000, 0x100)).collect();
        spread.extend((0..300).map(|i| r(0x4000_0000 + i * 0x200, 0x100)));
        let layout = check_layout(&spread, 600, 20_000);
        assert_eq!(layout.ranges, 600);
        assert!(layout.granule.is_some() && layout.table_slots == 1200, "{layout:?}");
        assert!(layout.longest_probe <= PROBE_LIMIT);

        // Tiny functions packed back to back: long runs in one granule, finished by search.
        let packed: Vec<CodeRange> = (0..500).map(|i| r(0x8000 + i * 0x10, 0x10)).collect();
        assert_eq!(check_layout(&packed, 500, 20_000).granule, Some(0x10));
        let two_bytes: Vec<CodeRange> = (0..500).map(|i| r(0x8000 + i * 2, 2)).collect();
        assert_eq!(check_layout(&two_bytes, 500, 20_000).granule, Some(0x10), "runs of 8 ranges");

        // Mixed sizes with gaps, some spanning many granules; headroom in the buffers.
        let mut mixed = Vec::new();
        let mut at = 0x10_0000;
        for i in 0..400usize {
            let len = [0x10, 0x30, 0x200, 0x1_0000, 0x8][i % 5];
            mixed.push(r(at, len));
            at += len + [0, 0x10, 0x1000, 0x3][i % 4];
        }
        let layout = check_layout(&mixed, 1000, 20_000);
        assert!(layout.granule.is_some() && layout.table_slots == 1600, "{layout:?}");

        // One range, and ranges at the top of the address space.
        check_layout(&[r(0x1000, 1)], 1, 100);
        check_layout(&[r(usize::MAX - 0x30, 0x10), r(usize::MAX - 0x10, 0x10)], 2, 1000);
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
            proptest::prop_assert!(layout.longest_probe <= PROBE_LIMIT);
        }
    }

    /// Many dense layouts (ranges of 1 to 48 bytes, back to back or with small gaps, many
    /// sharing or spanning granules) against a scan at every address, so the windowed compare,
    /// the gallop and the miss decided at a granule's first range are all exercised.
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
    fn a_version_without_a_granule_table_is_binary_searched() {
        // Every 64 MiB range spans four 16 MiB granules: more granules than half the slots.
        let huge: Vec<CodeRange> = (0..4).map(|i| r(0x1000_0000 + i * 0x800_0000, 0x400_0000)).collect();
        let layout = check_layout(&huge, 8, 10_000);
        assert_eq!(layout, IndexLayout { ranges: 4, granule: None, table_slots: 0, longest_probe: 0 });
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
