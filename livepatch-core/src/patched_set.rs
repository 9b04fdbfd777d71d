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
//! A version is the ranges sorted by start address, a *bucket rank directory* and a
//! [`LookupMode`] the writer chose for it ([`LookupMode::choose`]: deterministic, from the
//! version's length) and publishes with it, so a lookup tests it with one predictable branch:
//!
//! - **Search**, for versions of at most [`SEARCH_MAX_RANGES`] ranges: a binary search over the
//!   entries' own starts whose every halving is a conditional move
//!   (`core::hint::select_unpredictable`, rustc ≥ 1.88, detected by `build.rs` as
//!   `cfg(lp_select_unpredictable)`): one step to a run whose length is a power of two, then
//!   that many halvings of constant length, unrolled (a jump on the version's *plan*, which
//!   the writer computes from the length and stores beside it, picks the sequence). The
//!   candidate's record is in the entry holding the last start compared. Without the cfg (the
//!   kernel module's build with rustc 1.85, which runs no build script) the writer never
//!   chooses it: LLVM would turn the selects into jumps.
//! - **Directory**, for the rest, below.
//!
//! The writer splits
//! splits the sorted ranges into at most [`SEGMENTS`] segments at the widest gaps between
//! neighbours (kernel text and the module area holding the variants; libraries far apart in a
//! process), and cuts each segment, from its first start on, into buckets of `2^shift` bytes.
//! The directory holds, for each bucket, the *rank* of the bucket's first byte — how many ranges
//! of the version start before it — and after each segment's last bucket a sentinel holding the
//! rank of the segment's end. The writer picks each segment's shift so that no bucket holds
//! more than [`WINDOW`] starts, within a memory budget (below); a bucket that still holds more
//! is flagged.
//!
//! A lookup is straight-line code without a data-dependent branch: pick the segment by
//! comparing the address with the others' bases (summed, no branch); its bucket,
//! `min((addr − base) >> shift, buckets)` (an address past the segment, or below the first
//! segment, lands on the sentinel); the bucket's rank `r`; then `r` plus, for the next
//! [`WINDOW`] ranges, whether each starts at or before the address (ranges past the bucket
//! start after it and add nothing) is the number of ranges starting at or before the address.
//! The last of those is the only candidate, and one compare with its end decides. A window
//! near the version's end reads up to [`WINDOW`] entries past it: the writer makes them
//! sentinels (a start of `usize::MAX`) where the buffer has them, so the window needs no clamp;
//! a version that leaves its buffer fewer free entries takes a rarer, clamped path in those
//! last buckets (correct, slower).
//!
//! A bucket holding more than [`WINDOW`] starts (a cluster of tiny functions, as the
//! `bpf_lsm_*` stubs: hundreds of 12–16-byte functions in a few KiB) is flagged, a branch that
//! is rare and so predicted. Its word then names a **sub-directory**: `2^order` sub-buckets
//! cutting the bucket evenly, with their ranks and a sentinel, looked up the same way — one
//! more slot — and its sub-buckets hold at most [`WINDOW`] starts where the budget allows. A
//! (sub-)bucket still holding more (no room left for a sub-directory, or for one fine enough)
//! is finished by a binary search over its own ranges, each step a conditional move: O(log k)
//! for k ranges. A sub-directory spans its whole bucket, so a cluster much smaller than its
//! bucket costs sub-buckets the cluster does not use.
//!
//! The directory is built for every version (in search mode it only serves
//! [`PatchedSet::layout`]), so forcing a mode ([`PatchedSet::with_mode`], for tests and
//! benchmarks) changes nothing but the lookup.
//!
//! # Storage
//!
//! Each buffer is provided by the caller as an [`IndexBuffer`]: the entries (24 bytes each: start,
//! 32-bit length and slot, the variant's node) and, in an array of its own, the directory's 32-bit
//! [`DirectorySlot`]s, two per entry — 32 bytes per range in all. A version in a buffer of
//! `capacity` entries has `2 · capacity` slots; a shorter directory bounds the version instead
//! ([`PatchedSet::capacity`]). The slots are kept apart from the entries so that slot `i` is one
//! indexed load, and sixteen of them share a cache line (as two fields of each entry, the address
//! of slot `i` took a shift, a mask and two adds; BENCHMARKS.md section 2). The writer shares the
//! slots greedily: starting from one bucket per segment, the finer shift that removes the most
//! crowded ranges per extra slot, while one fits; then sub-directories, bucket by bucket in address
//! order, each the coarsest that leaves no crowded sub-bucket (at most 16 slots per range of its
//! bucket). It lays the version out twice — the buckets given the whole budget, then half of it —
//! and keeps the one with fewer extra dependent loads summed over the ranges (one per range behind
//! a sub-directory, `⌈log2 k⌉` per range of a searched bucket of `k`). The segments' shapes (base,
//! shift, first slot, bucket count: 20 bytes each) live in the [`PatchedSet`], one table per
//! buffer. The search needs no storage beyond the entries.
//!
//! # Publication
//!
//! Each buffer has a descriptor in the [`PatchedSet`]: the buffer as an `AtomicPrefix` (its
//! version's length), the mode, the segments. The published version is an [`AtomicRef`] to one
//! of them, so a reader's first load yields everything a lookup needs without arithmetic on it.
//! The pointer designates the index itself, so [`PatchedSet::rebuild`] borrows the index for
//! `'a`: the index may not move once it has published (the compiler enforces it).

use crate::addr::{CodeAddr, CodeRange};
use crate::func_stack::FuncSlot;
use crate::ids::SlotId;
use crate::patch::FuncNode;
use crate::sync::{const_fn, AtomicBool, AtomicPrefix, AtomicRef, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use core::fmt;

/// One entry of an index buffer: a range of the version. 24 bytes on 64-bit targets.
pub struct IndexEntry<'a> {
    start: AtomicUsize,
    len: AtomicU32,
    slot: AtomicU32,
    node: AtomicRef<'a, FuncNode<'a>>,
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
            }
        }
    }

    fn read(&self) -> Hit<'a> {
        self.read_known(self.start(), self.len() as usize)
    }

    /// [`read`](Self::read) with the start and length already loaded.
    #[inline(always)]
    fn read_known(&self, start: usize, len: usize) -> Hit<'a> {
        Hit::new(
            CodeRange::from_written_len(start, len),
            SlotId(self.slot.load(Ordering::Relaxed)),
            self.node.load(Ordering::Relaxed),
        )
    }

    /// Makes the entry a window sentinel: a start after every address (see [`window_rank`]).
    fn write_sentinel(&self) {
        self.start.store(usize::MAX, Ordering::Relaxed);
        self.len.store(0, Ordering::Relaxed);
        self.slot.store(0, Ordering::Relaxed);
        self.node.store(None, Ordering::Relaxed);
    }

    /// Writes `hit`, whose range is at most `u32::MAX` bytes long (checked by the caller).
    fn write(&self, hit: &Hit<'a>) {
        self.start.store(hit.range.start().get(), Ordering::Relaxed);
        self.len.store(u32::try_from(hit.range.len()).unwrap_or(u32::MAX), Ordering::Relaxed);
        self.slot.store(hit.slot().0, Ordering::Relaxed);
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

    /// One past the last byte of the range.
    #[inline(always)]
    fn end(&self) -> usize {
        self.start().saturating_add(self.len() as usize)
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

/// One slot of an index buffer's bucket directory: a rank, with flags in its top bits for a
/// bucket that holds more than [`WINDOW`] starts. 4 bytes.
pub struct DirectorySlot(AtomicU32);

impl DirectorySlot {
    const_fn! {
        /// An empty slot (storage for [`PatchedSet`] buffers).
        pub fn new() -> Self {
            Self(AtomicU32::new(0))
        }
    }
}

impl Default for DirectorySlot {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DirectorySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DirectorySlot").field(&self.0.load(Ordering::Relaxed)).finish()
    }
}

/// One of a [`PatchedSet`]'s two buffers, provided by the caller: the entries a version's
/// ranges are written to, and the slots of its bucket directory, in pairs: two slots per
/// range (see the [module documentation](self), "Storage"). A version holds at most
/// `min(entries.len(), directory.len())` ranges; give both the same length, [`WINDOW`] above the
/// largest version (see [`PatchedSet::new`]).
#[derive(Clone, Copy, Debug)]
pub struct IndexBuffer<'a> {
    /// The version's ranges, sorted, then the window sentinels.
    pub entries: &'a [IndexEntry<'a>],
    /// The version's bucket directory: two slots per range, in an array of its own so that
    /// slot `i` is one indexed load.
    pub directory: &'a [[DirectorySlot; 2]],
}

impl IndexBuffer<'_> {
    /// A buffer of no entries: an index over it holds only the empty version.
    pub const EMPTY: Self = IndexBuffer { entries: &[], directory: &[] };
}

/// What an address hit in the patched set.
#[derive(Clone, Copy)]
pub struct Hit<'a> {
    /// The range that contains the address.
    pub range: CodeRange,
    /// The variant whose code this is; `None` for the original function's own code.
    pub node: Option<&'a FuncNode<'a>>,
    /// The original function's slot, widened: a hit is written in whole words.
    slot: u64,
}

impl<'a> Hit<'a> {
    /// The hit on `range`, code of `slot`'s original (`node` `None`) or of `node`.
    pub(crate) const fn new(range: CodeRange, slot: SlotId, node: Option<&'a FuncNode<'a>>) -> Self {
        Self { range, node, slot: slot.0 as u64 }
    }

    /// The original function's slot.
    #[inline(always)]
    pub const fn slot(&self) -> SlotId {
        SlotId(self.slot as u32)
    }
}

impl Hit<'_> {
    /// Whether this code is being switched away from in the current transition.
    #[inline]
    pub fn is_away(&self, slots: &[FuncSlot<'_>]) -> bool {
        match self.node {
            Some(node) => node.away.load(Ordering::Relaxed),
            None => slots.get(self.slot as usize).is_some_and(|s| s.orig_away.load(Ordering::Relaxed)),
        }
    }
}

impl fmt::Debug for Hit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hit")
            .field("range", &self.range)
            .field("slot", &self.slot())
            .field("variant", &self.node.is_some())
            .finish()
    }
}

/// Why a new version of the index could not be built. The published version is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexError {
    /// More ranges than an index buffer holds.
    Full {
        /// Ranges a version holds.
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

/// The most segments a version's directory is split into.
pub const SEGMENTS: usize = 4;
/// The most starts a bucket holds for the branch-free lookup (a bucket with more is flagged:
/// it has a sub-directory or is binary-searched), and the entries a version's buffer should
/// keep free past it for the window's sentinels.
pub const WINDOW: usize = 4;
/// Directory flag: the bucket holds more than [`WINDOW`] starts.
const OVERFLOW: u32 = 1 << 31;
/// Directory flag beside [`OVERFLOW`]: the crowded bucket has a sub-directory. The word then
/// holds the sub-directory's first slot (low [`SUB_SLOT_BITS`] bits) and `log2` of its
/// sub-bucket count (the [`SUB_ORDER_BITS`] bits above); without it, the rank of the bucket's
/// first range.
const SUB: u32 = 1 << 30;
/// Bits of a sub-directory word holding the sub-directory's first slot.
const SUB_SLOT_BITS: u32 = 25;
/// Bits of a sub-directory word holding `log2` of its sub-bucket count.
const SUB_ORDER_BITS: u32 = 5;
const _: () = assert!(SUB_SLOT_BITS + SUB_ORDER_BITS == 30);
/// The most ranges a version holds (a rank, up to the count itself, fits below both flags).
const MAX_RANGES: usize = (SUB - 1) as usize;
/// The most sub-buckets a sub-directory spends per range of its bucket.
const SUB_SLOTS_PER_RANGE: usize = 16;

/// Versions of at most this many ranges are searched rather than looked up in the directory
/// (when the compiler has `select_unpredictable`; see [`LookupMode::choose`]).
pub const SEARCH_MAX_RANGES: usize = 64;
const _: () = assert!(SEARCH_MAX_RANGES <= SEARCH_UNROLLED);

/// How lookups in a version find their range. The writer chooses it per version and publishes
/// it with the version, so a lookup tests it with one predictable branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupMode {
    /// The bucket rank directory (see the [module documentation](self)).
    Directory,
    /// A branch-free binary search over the entries' own starts.
    Search,
}

impl LookupMode {
    /// The mode the writer chooses for a version of `ranges` ranges:
    /// [`Search`](Self::Search) for at most [`SEARCH_MAX_RANGES`], else
    /// [`Directory`](Self::Directory) — and always `Directory` when the core is compiled
    /// without `cfg(lp_select_unpredictable)` (rustc before 1.88, e.g. the kernel module's
    /// build), where the search could not be kept free of data-dependent branches.
    ///
    /// The threshold is measured (BENCHMARKS.md section 2): the search costs about one
    /// dependent load and compare per halving on top of a fixed cost, the directory the same
    /// whatever the size; they cross between 20 ranges (search 4.2 ns, directory 6.5 ns on
    /// `random` hits) and 200 (7.4 ns against 6.5 ns; a search unrolled up to 256 ranges 6.4–6.6
    /// ns against 6.2–6.4 ns, slower on misses too). Crowded buckets do not switch a version to
    /// the search: on the clustered `bpf` set the search wins the crowded rows and loses the
    /// others by more.
    pub const fn choose(ranges: usize) -> Self {
        if cfg!(lp_select_unpredictable) && ranges <= SEARCH_MAX_RANGES {
            LookupMode::Search
        } else {
            LookupMode::Directory
        }
    }
}

/// How the published version is laid out, for diagnostics and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexLayout {
    /// Ranges in the version.
    pub ranges: usize,
    /// How lookups find their range.
    pub mode: LookupMode,
    /// Segments in use (0 for an empty version).
    pub segments: usize,
    /// Bucket size of each segment in use, in bytes (`log2`); 0 past `segments`.
    pub bucket_shifts: [u32; SEGMENTS],
    /// Directory slots in use, sentinels included (the buffer holds two per entry).
    pub directory_slots: usize,
    /// Buckets and sub-buckets holding more than [`WINDOW`] starts and finished by a binary
    /// search.
    pub overflow_buckets: usize,
    /// Ranges starting in those buckets.
    pub overflow_ranges: usize,
    /// Crowded buckets cut into a sub-directory (one more slot per lookup in them).
    pub subdirectories: usize,
    /// Ranges starting in those buckets.
    pub subdirectory_ranges: usize,
}

/// One segment of a version's directory.
struct Segment {
    /// Its first range's start; `usize::MAX` for a segment not in use.
    base: AtomicUsize,
    /// `log2` of its bucket size.
    shift: AtomicU32,
    /// Its first directory slot.
    first_slot: AtomicU32,
    /// Its buckets; the slot after the last is the sentinel.
    buckets: AtomicU32,
}

impl Segment {
    const_fn! {
        fn new() -> Self {
            Self {
                base: AtomicUsize::new(usize::MAX),
                shift: AtomicU32::new(0),
                first_slot: AtomicU32::new(0),
                buckets: AtomicU32::new(0),
            }
        }
    }

    fn store(&self, base: usize, shift: u32, first_slot: usize, buckets: usize) {
        self.base.store(base, Ordering::Relaxed);
        self.shift.store(shift, Ordering::Relaxed);
        // Both fit: slots are counted within `u32::MAX` by the writer.
        self.first_slot.store(first_slot as u32, Ordering::Relaxed);
        self.buckets.store(buckets as u32, Ordering::Relaxed);
    }
}

/// Directory slot `i` (`None` past the directory's end).
#[inline(always)]
fn directory_slot(directory: &[DirectorySlot], i: usize) -> Option<&AtomicU32> {
    directory.get(i).map(|s| &s.0)
}

/// One published version.
#[derive(Clone, Copy)]
struct Version<'a, 's> {
    /// Its ranges, sorted.
    entries: &'a [IndexEntry<'a>],
    /// The whole buffer (the window sentinels lie past `entries`).
    buffer: &'a [IndexEntry<'a>],
    /// Its descriptor, which holds the directory: the directory's path reads it from there,
    /// so the search's loads nothing more.
    descriptor: &'s BufferVersion<'a>,
    segments: &'s [Segment; SEGMENTS],
    /// [`DIRECTORY_PLAN`], or the plan it is searched with.
    plan: u8,
}

impl<'a> Version<'a, '_> {
    /// Its directory's slots.
    #[inline(always)]
    fn directory(&self) -> &'a [DirectorySlot] {
        self.descriptor.directory.as_flattened()
    }

    /// The range containing `addr`: the search inline, the directory by a jump to
    /// [`directory_lookup`].
    #[inline(always)]
    fn lookup(&self, addr: usize) -> Option<Hit<'a>> {
        if self.plan != DIRECTORY_PLAN {
            return search(self.entries, addr, self.plan);
        }
        directory_lookup(self.descriptor, addr)
    }

    /// The range containing `addr`, given `rank`, the number of ranges starting at or before
    /// it.
    #[inline(always)]
    fn candidate(&self, rank: usize, addr: usize) -> Option<Hit<'a>> {
        // `rank` ranges start at or before `addr`, so the candidate is range `rank − 1`; with
        // none (rank 0) the index wraps past the version and `get` answers the miss, with the
        // bounds check it makes anyway.
        let entry = self.entries.get(rank.wrapping_sub(1))?;
        let (start, len) = (entry.start(), entry.len() as usize);
        (addr.wrapping_sub(start) < len).then(|| entry.read_known(start, len))
    }
}

/// The range containing `addr` in the version `descriptor` holds, looked up in its directory.
///
/// Out of line, and reached by a tail jump (the lookup's last act on that path): the directory
/// needs more registers than the caller-saved ones, so its code saves callee-saved registers;
/// inlined, it made every lookup save and restore them, the search's too, which needs none
/// (three pushes and pops on a lookup of 10 ranges; BENCHMARKS.md section 2). A flagged
/// bucket's path is out of line too, reached the same way ([`crowded_lookup`]): inline, the
/// values it needs (the segment, the slot, the directory) stayed live on every path, and this
/// function saved three registers instead of one. Neither makes a call
/// (`benches/ci/lookup-no-calls.sh`).
#[inline(never)]
fn directory_lookup<'a>(descriptor: &BufferVersion<'a>, addr: usize) -> Option<Hit<'a>> {
    // The segment: the number of other segments' bases at or below `addr` (unused ones have
    // base `usize::MAX`, which only `usize::MAX` reaches: see `build_directory`).
    let segments = &descriptor.segments;
    let segment = &segments[segments[1..].iter().map(|s| (addr >= s.base()) as usize).sum::<usize>()];
    let bucket = addr
        .wrapping_sub(segment.base())
        .wrapping_shr(segment.shift.load(Ordering::Relaxed))
        .min(segment.buckets.load(Ordering::Relaxed) as usize);
    let slot = segment.first_slot.load(Ordering::Relaxed) as usize + bucket;
    let word = directory_slot(descriptor.directory.as_flattened(), slot)?.load(Ordering::Relaxed);
    if word & OVERFLOW != 0 {
        return crowded_lookup(descriptor, segment, word, slot, addr);
    }
    // The version's length only now: loaded first, it and the buffer's stayed live through the
    // segment's arithmetic above, and the function saved two registers more. An empty version
    // needs no test of its own: its directory's words are stale, but every rank they give
    // misses in `candidate`, which finds no entry in an empty version.
    let version = descriptor.version_with(DIRECTORY_PLAN);
    version.candidate(window_rank(version.entries, version.buffer, word as usize, addr), addr)
}

/// [`directory_lookup`]'s path for `addr` in a flagged bucket of `segment`, whose directory
/// slot `slot` holds `word`: out of line, reached by a tail jump (its six arguments, the
/// returned hit's address among them, fit the argument registers).
#[inline(never)]
fn crowded_lookup<'a>(
    descriptor: &BufferVersion<'a>,
    segment: &Segment,
    word: u32,
    slot: usize,
    addr: usize,
) -> Option<Hit<'a>> {
    let version = descriptor.version_with(DIRECTORY_PLAN);
    let rank = version.crowded_rank(segment, word, slot, addr)?;
    version.candidate(rank, addr)
}

impl Version<'_, '_> {
    /// The number of ranges starting at or before `addr`, which lies in the flagged bucket of
    /// `segment`'s directory slot `slot` (whose word is `word`): through the bucket's
    /// sub-directory, one more slot, if it has one; else by a branch-free binary search over
    /// the bucket's ranges. `None` only for a slot past the buffer, which the writer never
    /// makes.
    ///
    /// Inlined into [`crowded_lookup`], not called: a call would make it save and restore
    /// callee-saved registers (BENCHMARKS.md section 2).
    #[inline(always)]
    fn crowded_rank(&self, segment: &Segment, word: u32, slot: usize, addr: usize) -> Option<usize> {
        if word & SUB == 0 {
            return Some(search_bucket(self.entries, self.directory(), word, slot, addr));
        }
        // The sub-directory cuts the bucket into `2^order` sub-buckets; `addr` lies in the
        // bucket (a flagged slot is never a sentinel), so its offset in it is the low bits.
        let first = (word & ((1 << SUB_SLOT_BITS) - 1)) as usize;
        let order = (word >> SUB_SLOT_BITS) & ((1 << SUB_ORDER_BITS) - 1);
        let shift = segment.shift.load(Ordering::Relaxed);
        let offset = addr.wrapping_sub(segment.base()) & !usize::MAX.wrapping_shl(shift);
        let sub_slot = first + offset.wrapping_shr(shift.wrapping_sub(order));
        let sub_word = directory_slot(self.directory(), sub_slot)?.load(Ordering::Relaxed);
        Some(if sub_word & OVERFLOW == 0 {
            window_rank(self.entries, self.buffer, sub_word as usize, addr)
        } else {
            search_bucket(self.entries, self.directory(), sub_word, sub_slot, addr)
        })
    }
}

/// The number of the sorted `entries` (a version in `buffer`) starting at or before `addr`,
/// given `first`, the rank of the first range of the (sub-)bucket holding `addr`, whose bucket
/// holds at most [`WINDOW`] starts: `first` plus whether each of the next [`WINDOW`] entries
/// starts at or before `addr` (ranges past the bucket start after it; the entries past the
/// version are the writer's sentinels, which start at `usize::MAX`, after every address a
/// range can contain).
///
/// Reading past the version keeps the window unclamped, so the rank is one add and four
/// compares after the directory's load (a clamp to the version's end cost 0.2–0.5 ns per
/// lookup: BENCHMARKS.md section 2). Only where the buffer has no room for a sentinel the
/// window would need (a version leaving fewer than [`WINDOW`] entries of its buffer free) does
/// the lookup take the clamped path.
#[inline(always)]
fn window_rank(entries: &[IndexEntry<'_>], buffer: &[IndexEntry<'_>], first: usize, addr: usize) -> usize {
    match buffer.get(first..first + WINDOW) {
        Some(window) => first + window.iter().map(|e| (e.start() <= addr) as usize).sum::<usize>(),
        None => window_rank_clamped(entries, first, addr),
    }
}

/// [`window_rank`] without sentinels: the window moved back to stay inside the version (the
/// ranges it then covers before the bucket start before `addr`, so the count is the same).
///
/// Inlined, although rarely taken: the lookup makes no call on any path, since one call
/// anywhere in it makes every lookup save and restore callee-saved registers (this function
/// out of line and `search_bucket`'s `map_or`s, which LLVM left calls, cost every lookup five
/// pushes and five pops; BENCHMARKS.md section 2).
#[inline(always)]
fn window_rank_clamped(entries: &[IndexEntry<'_>], first: usize, addr: usize) -> usize {
    let from = first.min(entries.len().saturating_sub(WINDOW));
    match entries.get(from..from + WINDOW) {
        Some(window) => from + window.iter().map(|e| (e.start() <= addr) as usize).sum::<usize>(),
        None => entries.iter().map(|e| (e.start() <= addr) as usize).sum(), // fewer ranges than the window
    }
}

/// The range of the sorted `entries` containing `addr`: a binary search over their starts
/// whose every step is a conditional move (with `cfg(lp_select_unpredictable)`), so its only
/// branches depend on the version's length alone.
///
/// Straight-line code: one step keeps the last or the first `k` ranges, `k` the largest power
/// of two at most the version's length, then `log2 k` halvings of constant length, one
/// sequence per `k`, picked by a jump on the version's `plan` ([`search_plan`], which the
/// writer stores beside the length). A constant length needs no bounds check and no length
/// arithmetic: each halving is a load, a compare, an add and a `cmov` (eleven instructions a
/// halving in a loop), which took the lookup at N = 10 from 97 to 76 instructions and 5.7 to
/// 4.6 ns per hit; and the stored plan saves the lookup computing `k` and testing for a long
/// run (76 to 70 instructions, 4.58 to 4.18 ns per hit: BENCHMARKS.md section 2). Runs longer
/// than [`SEARCH_UNROLLED`] (never a version the writer searches, only a forced search) are
/// halved in a loop first.
///
/// The halving keeps the last run instead of counting as [`rank`] does: the search mode
/// written as `rank` plus the directory's tail (one candidate, its compare) was measured
/// slower at N = 10 (hits 8.2 → 9.0 ns, misses 4.7 → 6.8 ns; BENCHMARKS.md section 2).
#[inline(always)]
fn search<'a>(entries: &'a [IndexEntry<'a>], addr: usize, plan: u8) -> Option<Hit<'a>> {
    let mut run = entries;
    macro_rules! finish {
        ($len:literal: $($half:literal)*) => {{
            let (Some(first), Some(last)) = (run.first_chunk::<$len>(), run.last_chunk::<$len>()) else {
                return None;
            };
            let mut run: &[IndexEntry<'a>] = select(last[0].start() <= addr, last, first);
            $( run = select(run[$half].start() <= addr, &run[$half..2 * $half], &run[..$half]); )*
            &run[0]
        }};
    }
    // The jump is on the plan, which the version's length alone decides: predicted.
    macro_rules! unrolled {
        ($plan:expr, $long:expr) => {
            match $plan & 7 {
                7 => finish!(64: 32 16 8 4 2 1),
                6 => finish!(32: 16 8 4 2 1),
                5 => finish!(16: 8 4 2 1),
                4 => finish!(8: 4 2 1),
                3 => finish!(4: 2 1),
                2 => finish!(2: 1),
                1 => run.first()?,
                _ => $long,
            }
        };
    }
    let entry = unrolled!(plan, {
        // `SEARCH_LONG`: a run longer than `SEARCH_UNROLLED` (never a version the writer
        // searches) is halved in a loop first. The last range starting at or before `addr`
        // (or the first range, if none does) stays in `run`; both halves have `len − half`
        // ranges and `half < len`, so the index and the slicing need no bounds check.
        while run.len() > SEARCH_UNROLLED {
            let half = run.len() / 2;
            let rest = run.len() - half;
            run = select(run[half].start() <= addr, &run[half..], &run[..rest]);
        }
        // 1 to 7: the loop ends at `SEARCH_UNROLLED` ranges or fewer.
        unrolled!(search_plan(run.len()), return None)
    });
    let (start, len) = (entry.start(), entry.len() as usize);
    (addr.wrapping_sub(start) < len).then(|| entry.read_known(start, len))
}

/// How [`search`] finishes a version of `len` ranges, written by the writer beside the length
/// so that a lookup jumps on it without computing it: `1 + log2 k`, `k` the largest power of
/// two at most `len` (1 for an empty version), for `len` up to [`SEARCH_UNROLLED`]; else
/// [`SEARCH_LONG`]. Never [`DIRECTORY_PLAN`].
const fn search_plan(len: usize) -> u8 {
    if len > SEARCH_UNROLLED {
        SEARCH_LONG
    } else {
        // `len ≤ SEARCH_UNROLLED`: at most 7.
        (usize::BITS - (if len == 0 { 1 } else { len }).leading_zeros()) as u8
    }
}

/// The plan of a version looked up in the directory.
const DIRECTORY_PLAN: u8 = 0;

/// The plan of a searched version longer than [`SEARCH_UNROLLED`] (`& 7 == 0`).
const SEARCH_LONG: u8 = 8;

// `search` jumps on `plan & 7`: its arms 1 to 7 finish runs of 1 to 64 ranges, and 0 is the
// loop of a longer run.
const _: () = assert!(SEARCH_UNROLLED == 64 && search_plan(SEARCH_UNROLLED) == 7 && SEARCH_LONG & 7 == 0);

/// The longest run [`search`] finishes with unrolled halvings of constant length (the arms of
/// its `match`; at least [`SEARCH_MAX_RANGES`], so a version the writer searches takes no
/// loop).
const SEARCH_UNROLLED: usize = 64;

/// `if condition { a } else { b }`, as a conditional move where the compiler offers one.
#[cfg(lp_select_unpredictable)]
#[inline(always)]
#[allow(clippy::incompatible_msrv)] // only compiled by rustc >= 1.88 (build.rs)
fn select<T>(condition: bool, a: T, b: T) -> T {
    core::hint::select_unpredictable(condition, a, b)
}

/// `if condition { a } else { b }` (a branch: rustc before 1.88 has no `select_unpredictable`,
/// and the writer then never chooses [`LookupMode::Search`] on its own).
#[cfg(not(lp_select_unpredictable))]
#[inline(always)]
fn select<T>(condition: bool, a: T, b: T) -> T {
    if condition {
        a
    } else {
        b
    }
}

/// The number of ranges of `entries` (a version with `directory`) starting at or before `addr`,
/// which lies in the flagged (sub-)bucket of directory slot `slot` (whose word, without a
/// sub-directory, is `word`): a branch-free binary search over the bucket's ranges, which end
/// at the next slot's rank.
#[inline(always)]
fn search_bucket(
    entries: &[IndexEntry<'_>],
    directory: &[DirectorySlot],
    word: u32,
    slot: usize,
    addr: usize,
) -> usize {
    let first = (word & !OVERFLOW) as usize;
    // A flagged bucket is never a sentinel, so the next slot is its (sub-)directory's: a rank,
    // flagged or not, or a sub-directory whose first sub-bucket starts at the same rank.
    // Matches, not `map_or`: LLVM left those calls (see `window_rank_clamped`).
    let end = match directory_slot(directory, slot + 1) {
        Some(next) => slot_rank(directory, next.load(Ordering::Relaxed)).min(entries.len()),
        None => entries.len(),
    };
    match entries.get(first..end) {
        Some(run) => first + rank(run, addr),
        None => first,
    }
}

/// The rank of the first range at or after the start of the (sub-)bucket whose directory word
/// is `word`, in `directory` (a sub-directory's is its first sub-bucket's).
#[inline(always)]
fn slot_rank(directory: &[DirectorySlot], word: u32) -> usize {
    let word = if word & (OVERFLOW | SUB) == OVERFLOW | SUB {
        directory_slot(directory, (word & ((1 << SUB_SLOT_BITS) - 1)) as usize).map_or(0, |s| s.load(Ordering::Relaxed))
    } else {
        word
    };
    (word & !OVERFLOW) as usize
}

/// The number of the sorted `run`'s ranges starting at or before `addr`: a binary search whose
/// every step is a conditional move (with `cfg(lp_select_unpredictable)`), so its only branch
/// is the loop's, whose trip count depends on the run's length alone.
#[inline(always)]
fn rank(mut run: &[IndexEntry<'_>], addr: usize) -> usize {
    let mut below = 0;
    while run.len() > 1 {
        // Both halves have `len − half` ranges and `half < len`: no bounds check.
        let half = run.len() / 2;
        let rest = run.len() - half;
        let right = run[half].start() <= addr;
        below = select(right, below + half, below);
        run = select(right, &run[half..], &run[..rest]);
    }
    below + run.first().map_or(0, |e| (e.start() <= addr) as usize)
}

impl Segment {
    #[inline(always)]
    fn base(&self) -> usize {
        self.base.load(Ordering::Relaxed)
    }
}

/// One buffer and the version it holds: what the published pointer designates.
struct BufferVersion<'a> {
    /// The version's ranges: a prefix of the buffer.
    entries: AtomicPrefix<'a, IndexEntry<'a>>,
    /// How it is looked up: [`DIRECTORY_PLAN`], or searched by [`search`] with this plan
    /// ([`search_plan`] of its length).
    plan: AtomicU8,
    /// Its directory segments.
    segments: [Segment; SEGMENTS],
    /// Its directory's slots.
    directory: &'a [[DirectorySlot; 2]],
}

impl<'a> BufferVersion<'a> {
    const_fn! {
        fn new(buffer: IndexBuffer<'a>) -> Self {
            Self {
                directory: buffer.directory,
                entries: AtomicPrefix::new(buffer.entries),
                plan: AtomicU8::new(DIRECTORY_PLAN),
                segments: [Segment::new(), Segment::new(), Segment::new(), Segment::new()],
            }
        }
    }
}

impl<'a> BufferVersion<'a> {
    /// The version this buffer holds.
    #[inline(always)]
    fn version(&self) -> Version<'a, '_> {
        self.version_with(self.plan.load(Ordering::Relaxed))
    }

    /// The version this buffer holds, whose plan the caller knows (no load of it).
    #[inline(always)]
    fn version_with(&self, plan: u8) -> Version<'a, '_> {
        Version {
            entries: self.entries.load(Ordering::Relaxed),
            buffer: self.entries.slice(),
            descriptor: self,
            segments: &self.segments,
            plan,
        }
    }

    /// How many ranges a version in this buffer can hold: one entry and two directory slots
    /// each, at most [`MAX_RANGES`].
    fn capacity(&self) -> usize {
        self.entries.slice().len().min(self.directory.len()).min(MAX_RANGES)
    }
}

/// The versioned index. See the [module documentation](self).
pub struct PatchedSet<'a> {
    /// Each buffer with the version it holds.
    buffers: [BufferVersion<'a>; 2],
    /// The published version (`None` before the first): a pointer into `buffers`, so a lookup
    /// reaches the version's length, mode and segments with one load and no arithmetic on it.
    current: AtomicRef<'a, BufferVersion<'a>>,
    /// The mode every version takes, if not the writer's choice ([`LookupMode::choose`]).
    forced: Option<LookupMode>,
    /// The unpublished buffer may still have readers: wait for a grace period before reuse.
    stale: AtomicBool,
}

impl<'a> PatchedSet<'a> {
    const_fn! {
        /// An empty index over two buffers (a version holds at most the smaller one's
        /// [capacity](Self::capacity)).
        ///
        /// Size each buffer's entries and directory pairs alike, [`WINDOW`] above the largest
        /// version it will hold: lookups in the last buckets of a version that leaves less room
        /// take a slower path (see the [module documentation](self)).
        pub fn new(a: IndexBuffer<'a>, b: IndexBuffer<'a>) -> Self {
            Self {
                buffers: [BufferVersion::new(a), BufferVersion::new(b)],
                current: AtomicRef::none(),
                forced: None,
                stale: AtomicBool::new(false),
            }
        }
    }

    /// An empty index over two buffers whose every version takes `mode`, whatever its shape: for
    /// tests and benchmarks of each mode. ([`LookupMode::Search`] without
    /// `cfg(lp_select_unpredictable)` is a search with data-dependent branches.)
    pub fn with_mode(a: IndexBuffer<'a>, b: IndexBuffer<'a>, mode: LookupMode) -> Self {
        Self { forced: Some(mode), ..Self::new(a, b) }
    }

    /// How many ranges a version can hold: the smaller buffer's, each buffer holding as many as
    /// it has entries and pairs of directory slots (at most 2^30 − 1). A rebuild past it fails
    /// with [`IndexError::Full`] and publishes nothing.
    pub fn capacity(&self) -> usize {
        self.buffers[0].capacity().min(self.buffers[1].capacity())
    }

    /// The published version.
    ///
    /// `Acquire`: pairs with the `Release` in [`rebuild`](Self::rebuild), making the entries,
    /// the directory, the segments, the length and the plan written before publication
    /// visible; they are then read `Relaxed`.
    ///
    /// The pointer designates the buffer's descriptor, so the length, the mode and the segments
    /// are plain loads from it: no arithmetic on a packed version word and no clamp stand
    /// between the load and the search (BENCHMARKS.md section 2 measures what that saved).
    /// `None` before the first version.
    #[inline(always)]
    fn published(&self) -> Option<Version<'a, 'a>> {
        Some(self.current.load(Ordering::Acquire)?.version())
    }

    /// The published version's ranges.
    fn published_entries(&self) -> &'a [IndexEntry<'a>] {
        self.published().map_or(&[], |v| v.entries)
    }

    /// Number of ranges in the published version.
    pub fn len(&self) -> usize {
        self.published_entries().len()
    }

    /// Whether the published version is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How the published version is laid out.
    pub fn layout(&self) -> IndexLayout {
        let mut layout = IndexLayout {
            ranges: 0,
            mode: LookupMode::Directory,
            segments: 0,
            bucket_shifts: [0; SEGMENTS],
            directory_slots: 0,
            overflow_buckets: 0,
            overflow_ranges: 0,
            subdirectories: 0,
            subdirectory_ranges: 0,
        };
        let Some(v) = self.published() else {
            return layout;
        };
        layout.ranges = v.entries.len();
        layout.mode = if v.plan == DIRECTORY_PLAN { LookupMode::Directory } else { LookupMode::Search };
        if v.entries.is_empty() {
            return layout;
        }
        let word = |i: usize| directory_slot(v.directory(), i).map_or(0, |s| s.load(Ordering::Relaxed));
        for (k, segment) in v.segments.iter().enumerate() {
            if k > 0 && segment.base() == usize::MAX {
                break;
            }
            let (first, buckets) =
                (segment.first_slot.load(Ordering::Relaxed) as usize, segment.buckets.load(Ordering::Relaxed) as usize);
            layout.segments += 1;
            layout.bucket_shifts[k] = segment.shift.load(Ordering::Relaxed);
            layout.directory_slots = layout.directory_slots.max(first + buckets + 1);
            let ranks = |slot: usize| (slot_rank(v.directory(), word(slot)), slot_rank(v.directory(), word(slot + 1)));
            for slot in first..first + buckets {
                let w = word(slot);
                if w & (OVERFLOW | SUB) == OVERFLOW | SUB {
                    let (from, to) = ranks(slot);
                    layout.subdirectories += 1;
                    layout.subdirectory_ranges += to - from;
                    let sub_first = (w & ((1 << SUB_SLOT_BITS) - 1)) as usize;
                    let subs = 1 << ((w >> SUB_SLOT_BITS) & ((1 << SUB_ORDER_BITS) - 1));
                    layout.directory_slots = layout.directory_slots.max(sub_first + subs + 1);
                    for sub in (sub_first..sub_first + subs).filter(|&sub| word(sub) & OVERFLOW != 0) {
                        let (from, to) = ranks(sub);
                        layout.overflow_buckets += 1;
                        layout.overflow_ranges += to - from;
                    }
                } else if w & OVERFLOW != 0 {
                    let (from, to) = ranks(slot);
                    layout.overflow_buckets += 1;
                    layout.overflow_ranges += to - from;
                }
            }
        }
        layout
    }

    /// The range containing `addr`: in search mode O(log n) conditional moves, in directory
    /// mode O(1) straight-line code unless `addr` lies in a bucket of more than [`WINDOW`]
    /// starts (see the [module documentation](self)).
    #[inline]
    pub fn lookup(&self, addr: CodeAddr) -> Option<Hit<'a>> {
        self.published()?.lookup(addr.get())
    }

    /// The first published range that overlaps `range`, if any.
    pub fn first_overlap(&self, range: CodeRange) -> Option<Hit<'a>> {
        let entries = self.published_entries();
        let idx = entries.partition_point(|e| e.end() <= range.start().get());
        let hit = entries.get(idx)?.read();
        hit.range.overlaps(range).then_some(hit)
    }

    /// Every published range, in address order.
    pub fn iter(&self) -> impl Iterator<Item = Hit<'a>> + 'a {
        self.published_entries().iter().map(IndexEntry::read)
    }

    /// Builds and publishes a new version with the ranges of `slots`: each claimed slot's
    /// original function and every variant on its stack.
    ///
    /// `grace` is called first when the buffer about to be written may still have readers.
    /// On error nothing is published.
    ///
    /// The index must be borrowed for `'a` (as the engine holds its `&'a Live<'a>`): the
    /// published pointer designates one of its own buffers.
    pub fn rebuild(&'a self, slots: &'a [FuncSlot<'a>], grace: impl FnOnce()) -> Result<(), IndexError> {
        if self.stale.load(Ordering::Relaxed) {
            grace();
            self.stale.store(false, Ordering::Relaxed);
        }
        let next = &self.buffers[self.current.is(Some(&self.buffers[0]), Ordering::Relaxed) as usize];
        let buf = next.entries.slice();
        // Both buffers' capacity, not this one's: whether a set of ranges fits does not depend on
        // which buffer is written next.
        let capacity = self.capacity();
        let mut len = 0;
        for (i, slot) in slots.iter().enumerate() {
            let Some(orig) = slot.original() else {
                continue;
            };
            let id = SlotId(i as u32);
            let ranges = core::iter::once(Hit::new(orig, id, None))
                .chain(slot.iter().filter_map(|n| n.code.map(|c| Hit::new(c, id, Some(n)))));
            for hit in ranges {
                let entry = buf.get(len).filter(|_| len < capacity).ok_or(IndexError::Full { capacity })?;
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
        // The window of a bucket near the version's end reads up to `WINDOW` entries past it
        // (a bucket after the last start has the version's length as its rank), where the
        // buffer has them.
        buf.iter().skip(len).take(WINDOW).for_each(IndexEntry::write_sentinel);
        build_directory(&buf[..len], next.directory.as_flattened(), &next.segments);
        next.entries.store(len, Ordering::Relaxed);
        let plan = match self.forced.unwrap_or(LookupMode::choose(len)) {
            LookupMode::Search => search_plan(len),
            LookupMode::Directory => DIRECTORY_PLAN,
        };
        next.plan.store(plan, Ordering::Relaxed);
        // `Release`: pairs with the `Acquire` in `published`; the entries, the directory, the
        // segments, the length and the plan above happen-before.
        self.current.store(Some(next), Ordering::Release);
        self.stale.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl fmt::Debug for PatchedSet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The ranks at which the sorted ranges `entries` split into segments: after each of the
/// `SEGMENTS − 1` widest gaps between neighbours (fewer for fewer ranges), ascending, padded
/// with `entries.len()`.
fn segment_splits(entries: &[IndexEntry<'_>]) -> [usize; SEGMENTS - 1] {
    // The widest gaps so far, widest first: (gap, rank after it).
    let mut widest = [(0usize, entries.len()); SEGMENTS - 1];
    for (rank, pair) in entries.windows(2).enumerate() {
        let gap = pair[1].start() - pair[0].end();
        if let Some(at) = widest.iter().position(|&(g, r)| gap > 0 && (gap > g || r == entries.len())) {
            widest.copy_within(at..SEGMENTS - 2, at + 1);
            widest[at] = (gap, rank + 1);
        }
    }
    let mut splits = widest.map(|(_, r)| r);
    // An insertion sort of the few splits: `slice::sort_unstable` would link core's generic
    // sort into the kernel module, whose small-sort code objtool rejects ("falls through to
    // next function").
    for i in 1..splits.len() {
        let mut j = i;
        while j > 0 && splits[j - 1] > splits[j] {
            splits.swap(j - 1, j);
            j -= 1;
        }
    }
    splits
}

/// The number of buckets of `2^shift` bytes from `base` to the segment's last start `last`.
fn buckets(base: usize, last: usize, shift: u32) -> usize {
    ((last - base) >> shift) + 1
}

/// For the sorted segment `ranges` cut into buckets of `2^shift` bytes from its first start:
/// the ranges that start in buckets holding more than [`WINDOW`] starts.
fn overflow(ranges: &[IndexEntry<'_>], shift: u32) -> usize {
    let base = ranges[0].start();
    let mut crowded = 0;
    let mut at = 0;
    while at < ranges.len() {
        let bucket = (ranges[at].start() - base) >> shift;
        let run = ranges[at..].iter().take_while(|e| (e.start() - base) >> shift == bucket).count();
        if run > WINDOW {
            crowded += run;
        }
        at += run;
    }
    crowded
}

/// The bucket shifts of the sorted segments `segments` (each non-empty) within `budget`
/// directory slots (at least three per segment): starting from one bucket per segment, the
/// finer shift that removes the most crowded ranges per extra slot, while one does and fits.
fn choose_shifts(segments: &[&[IndexEntry<'_>]], budget: usize) -> [u32; SEGMENTS] {
    const SHIFTS: usize = usize::BITS as usize;
    let mut crowded = [[0u32; SHIFTS]; SEGMENTS];
    let mut shifts = [0u32; SEGMENTS];
    let slots =
        |ranges: &[IndexEntry<'_>], shift: u32| buckets(ranges[0].start(), ranges[ranges.len() - 1].start(), shift) + 1;
    let mut used = 0;
    for (k, ranges) in segments.iter().enumerate() {
        for (shift, c) in crowded[k].iter_mut().enumerate() {
            *c = overflow(ranges, shift as u32).min(u32::MAX as usize) as u32;
        }
        shifts[k] = (0..usize::BITS).find(|&h| slots(ranges, h) == 2).unwrap_or(usize::BITS - 1);
        used += slots(ranges, shifts[k]);
    }
    loop {
        // (segment, shift, crowded ranges removed, extra slots) of the best move.
        let mut best: Option<(usize, u32, u64, u64)> = None;
        for (k, ranges) in segments.iter().enumerate() {
            let (now, now_slots) = (crowded[k][shifts[k] as usize], slots(ranges, shifts[k]));
            for shift in (0..shifts[k]).rev() {
                let extra = slots(ranges, shift) - now_slots;
                if used + extra > budget {
                    break;
                }
                let gain = now.saturating_sub(crowded[k][shift as usize]) as u64;
                if gain > 0 && best.is_none_or(|(_, _, g, e)| gain * e > g * extra as u64) {
                    best = Some((k, shift, gain, extra as u64));
                }
            }
        }
        let Some((k, shift, _, extra)) = best else {
            return shifts;
        };
        shifts[k] = shift;
        used += extra as usize;
    }
}

/// Builds the directory of the sorted ranges `entries` in `directory` (at least two slots per
/// range) and writes its segments into `segments`.
///
/// The budget is shared between the buckets and the sub-directories of crowded buckets: the
/// writer lays the version out twice — the buckets given the whole budget, then half of it
/// (the rest left to sub-directories) — and keeps the layout with fewer expected extra loads
/// per range ([`DirectoryPlan::extra_loads`]); a tie keeps the first.
fn build_directory(entries: &[IndexEntry<'_>], directory: &[DirectorySlot], segments: &[Segment; SEGMENTS]) {
    let len = entries.len();
    if entries.is_empty() {
        segments.iter().for_each(|s| s.store(usize::MAX, 0, 0, 0));
        return;
    }
    // At least two slots per range ([`BufferVersion::capacity`]), at most `u32::MAX`: so at
    // least three per segment of two or more ranges and two for a segment of one (which needs
    // no more).
    let budget = directory.len().min(u32::MAX as usize);
    let splits = segment_splits(entries);
    let mut bounds = [(0, 0); SEGMENTS];
    let mut used = 0;
    for (k, bound) in bounds.iter_mut().enumerate() {
        let from = if k == 0 { 0 } else { splits[k - 1] };
        let to = if k < SEGMENTS - 1 { splits[k] } else { len };
        *bound = (from, to);
        if from < to {
            used = k + 1;
        }
    }
    let mut ranges: [&[IndexEntry<'_>]; SEGMENTS] = [&[]; SEGMENTS];
    for (k, &(from, to)) in bounds.iter().enumerate().take(used) {
        ranges[k] = &entries[from..to];
    }
    let plan = |bucket_budget: usize| DirectoryPlan {
        entries,
        bounds: &bounds[..used],
        shifts: choose_shifts(&ranges[..used], bucket_budget),
        budget,
    };
    let whole = plan(budget);
    let whole_cost = whole.extra_loads();
    let best = if whole_cost == 0 {
        whole
    } else {
        let half = plan(budget / 2);
        if half.extra_loads() < whole_cost {
            half
        } else {
            whole
        }
    };
    best.write(directory, segments);
}

/// A directory the writer considers: the segments' bounds (ranks) and bucket shifts,
/// and the slot budget its sub-directories share with its buckets.
struct DirectoryPlan<'e, 'a> {
    entries: &'e [IndexEntry<'a>],
    bounds: &'e [(usize, usize)],
    shifts: [u32; SEGMENTS],
    budget: usize,
}

impl DirectoryPlan<'_, '_> {
    /// The extra dependent loads the layout costs, summed over its ranges' starts: one per
    /// range behind a sub-directory, and `⌈log2 k⌉` per range of a bucket of `k` ranges
    /// finished by the binary search.
    fn extra_loads(&self) -> u64 {
        self.lay_out(None)
    }

    /// Writes the directory into `directory` and the segments into `segments`.
    fn write(&self, directory: &[DirectorySlot], segments: &[Segment; SEGMENTS]) {
        self.lay_out(Some((directory, segments)));
    }

    /// Walks the layout's buckets, writing them where `out` says, and returns
    /// [`extra_loads`](Self::extra_loads).
    fn lay_out(&self, out: Option<(&[DirectorySlot], &[Segment; SEGMENTS])>) -> u64 {
        let put = |slot: usize, word: u32| {
            if let Some(s) = out.and_then(|(directory, _)| directory_slot(directory, slot)) {
                s.store(word, Ordering::Relaxed);
            }
        };
        let main_slots: usize = self
            .bounds
            .iter()
            .zip(self.shifts)
            .map(|(&(from, to), shift)| buckets(self.entries[from].start(), self.entries[to - 1].start(), shift) + 1)
            .sum();
        let (mut first_slot, mut sub_next, mut cost) = (0, main_slots, 0u64);
        for (k, &(from, to)) in self.bounds.iter().enumerate() {
            let (ranges, shift) = (&self.entries[from..to], self.shifts[k]);
            let base = ranges[0].start();
            let count = buckets(base, ranges[ranges.len() - 1].start(), shift);
            let mut at = 0;
            for bucket in 0..count {
                let run = ranges[at..].iter().take_while(|e| (e.start() - base) >> shift == bucket).count();
                let rank = (from + at) as u32;
                let word = if run <= WINDOW {
                    rank
                } else {
                    let bucket_base = base + (bucket << shift);
                    let run = &ranges[at..at + run];
                    let room = self.budget.saturating_sub(sub_next).min(run.len() * SUB_SLOTS_PER_RANGE + 1);
                    match sub_order(run, bucket_base, shift, room).filter(|_| sub_next < 1 << SUB_SLOT_BITS) {
                        Some(order) => {
                            let word = OVERFLOW | SUB | order << SUB_SLOT_BITS | sub_next as u32;
                            cost += run.len() as u64;
                            cost += sub_directory(run, rank, bucket_base, shift - order, order, |i, w| {
                                put(sub_next + i, w)
                            });
                            sub_next += (1 << order) + 1;
                            word
                        }
                        None => {
                            cost += search_loads(run.len());
                            rank | OVERFLOW
                        }
                    }
                };
                put(first_slot + bucket, word);
                at += run;
            }
            put(first_slot + count, to as u32);
            if let Some((_, segments)) = out {
                segments[k].store(base, shift, first_slot, count);
            }
            first_slot += count + 1;
        }
        if let Some((_, segments)) = out {
            // Unused: base `usize::MAX` selects it only for `usize::MAX`, which no range holds;
            // its one slot is the previous segment's sentinel (rank `len`).
            for segment in &segments[self.bounds.len()..] {
                segment.store(usize::MAX, 0, first_slot - 1, 0);
            }
        }
        cost
    }
}

/// Extra dependent loads of a binary search over a bucket of `k` ranges, summed over them.
fn search_loads(k: usize) -> u64 {
    k as u64 * u64::from(usize::BITS - (k.max(1) - 1).leading_zeros())
}

/// The order (`log2` of its sub-bucket count) of a sub-directory for the crowded bucket
/// of `2^shift` bytes at `bucket_base` holding the sorted `run`, within `room` slots (its
/// sub-buckets and a sentinel): the smallest order that leaves no sub-bucket with more than
/// [`WINDOW`] starts, else the largest that fits; `None` if none fits.
fn sub_order(run: &[IndexEntry<'_>], bucket_base: usize, shift: u32, room: usize) -> Option<u32> {
    let most = (1..=shift.min((1 << SUB_ORDER_BITS) - 1)).take_while(|&order| (1usize << order) < room).last()?;
    let crowded = |order: u32| {
        let sub_shift = shift - order;
        let mut at = 0;
        while at < run.len() {
            let sub = (run[at].start() - bucket_base) >> sub_shift;
            let n = run[at..].iter().take_while(|e| (e.start() - bucket_base) >> sub_shift == sub).count();
            if n > WINDOW {
                return true;
            }
            at += n;
        }
        false
    };
    Some((1..=most).find(|&order| !crowded(order)).unwrap_or(most))
}

/// Writes (through `put(index, word)`) the sub-directory of `2^order` sub-buckets of
/// `2^sub_shift` bytes from `bucket_base` for the crowded `run`, whose first range has rank
/// `rank`, and its sentinel; returns the extra loads of its crowded sub-buckets' searches.
fn sub_directory(
    run: &[IndexEntry<'_>],
    rank: u32,
    bucket_base: usize,
    sub_shift: u32,
    order: u32,
    mut put: impl FnMut(usize, u32),
) -> u64 {
    let (mut at, mut cost) = (0, 0);
    for sub in 0..1usize << order {
        let n = run[at..].iter().take_while(|e| (e.start() - bucket_base) >> sub_shift == sub).count();
        let flag = if n > WINDOW { OVERFLOW } else { 0 };
        if n > WINDOW {
            cost += search_loads(n);
        }
        put(sub, (rank + at as u32) | flag);
        at += n;
    }
    put(1 << order, rank + run.len() as u32);
    cost
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

    /// An index buffer's storage: `len` entries and as many directory slot pairs (two slots
    /// per entry, the size `EngineStorage` gives).
    struct Storage<'a> {
        entries: Vec<IndexEntry<'a>>,
        directory: Vec<[DirectorySlot; 2]>,
    }

    impl<'a> Storage<'a> {
        fn new(len: usize) -> Self {
            Self::sized(len, len)
        }

        /// `entries` entries and `pairs` directory slot pairs.
        fn sized(entries: usize, pairs: usize) -> Self {
            Self {
                entries: (0..entries).map(|_| IndexEntry::new()).collect(),
                directory: (0..pairs).map(|_| [DirectorySlot::new(), DirectorySlot::new()]).collect(),
            }
        }

        fn buffer(&'a self) -> IndexBuffer<'a> {
            IndexBuffer { entries: &self.entries, directory: &self.directory }
        }
    }

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
        let a = Storage::new(8);
        let b = Storage::new(8);
        let set = PatchedSet::new(a.buffer(), b.buffer());
        assert!(set.lookup(CodeAddr(0x3000)).is_none());
        assert!(set.is_empty());
        let mut graces = 0;
        set.rebuild(&slots, || graces += 1).unwrap();
        assert_eq!(graces, 0);
        assert_eq!(set.len(), 4);
        assert!(!set.is_empty());
        let starts: Vec<usize> = set.iter().map(|h| h.range.start().get()).collect();
        assert_eq!(starts, [0x1000, 0x3000, 0x9000, 0x9100]);

        let hit = set.lookup(CodeAddr(0x300f)).unwrap();
        assert_eq!((hit.slot(), hit.node.is_none()), (SlotId(0), true));
        let hit = set.lookup(CodeAddr(0x913f)).unwrap();
        assert_eq!(hit.slot(), SlotId(2));
        assert!(core::ptr::eq(hit.node.unwrap(), &nodes[1]));
        assert!(set.lookup(CodeAddr(0x3010)).is_none());
        assert!(set.lookup(CodeAddr(0x0fff)).is_none());
        assert!(set.lookup(CodeAddr(usize::MAX)).is_none());
        assert_eq!(set.first_overlap(r(0x2ff0, 0x11)).unwrap().slot(), SlotId(0));
        assert!(set.first_overlap(r(0x2ff0, 0x10)).is_none());

        // The second rebuild reuses the first buffer only after a grace period.
        set.rebuild(&slots, || graces += 1).unwrap();
        assert_eq!(graces, 1);
    }

    /// The reference: a linear scan of the ranges.
    fn reference(ranges: &[CodeRange], addr: usize) -> Option<CodeRange> {
        ranges.iter().copied().find(|r| r.contains(CodeAddr(addr)))
    }

    /// Both lookup modes, whatever the writer would choose.
    const MODES: [LookupMode; 2] = [LookupMode::Directory, LookupMode::Search];

    /// Publishes `ranges` (as originals of one slot each) in buffers of `capacity` entries, once
    /// in each lookup mode, and runs `body` with the set and a check of one address against the
    /// reference. Returns what `body` returned in directory mode.
    fn published<R>(ranges: &[CodeRange], capacity: usize, body: impl Fn(&PatchedSet<'_>, &dyn Fn(usize)) -> R) -> R {
        let slots: Vec<FuncSlot<'_>> = ranges.iter().map(|_| FuncSlot::new()).collect();
        for (slot, &range) in slots.iter().zip(ranges) {
            slot.claim(range, crate::ObjectId(0));
        }
        let a = Storage::new(capacity);
        let b = Storage::new(capacity);
        let mut directory = None;
        // Each set is borrowed for the slots' lifetime (its published version points into it),
        // so the sets outlive the loop; each uses the buffers only in its own iteration.
        let sets = MODES.map(|mode| PatchedSet::with_mode(a.buffer(), b.buffer(), mode));
        for (set, mode) in sets.iter().zip(MODES) {
            set.rebuild(&slots, || {}).unwrap();
            assert_eq!(set.layout().mode, mode);
            let check = |addr: usize| {
                let got = set.lookup(CodeAddr(addr)).map(|h| h.range);
                assert_eq!(got, reference(ranges, addr), "lookup({addr:#x}) in {:?}", set.layout());
            };
            let result = body(set, &check);
            if mode == LookupMode::Directory {
                directory = Some(result);
            }
        }
        directory.expect("directory mode ran")
    }

    /// Publishes `ranges` (as originals of one slot each) in buffers of `capacity` entries and
    /// checks every lookup near every range boundary, and `queries` seeded random addresses in
    /// the set's bounds, against the reference. Returns the layout.
    fn check_layout(ranges: &[CodeRange], capacity: usize, queries: usize) -> IndexLayout {
        published(ranges, capacity, |set, check| {
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
        })
    }

    #[test]
    fn the_directory_agrees_with_a_scan_on_every_layout() {
        // Patched text spread out, and variants packed in a module area far away.
        let mut spread: Vec<CodeRange> = (0..300).map(|i| r(0x1000_0000 + i * 0x4000, 0x100)).collect();
        spread.extend((0..300).map(|i| r(0x4000_0000 + i * 0x200, 0x100)));
        let layout = check_layout(&spread, 600, 20_000);
        assert_eq!(layout.ranges, 600);
        assert!(layout.segments >= 2 && layout.directory_slots <= 1200, "{layout:?}");
        assert_eq!(layout.overflow_buckets, 0, "{layout:?}");

        // Tiny functions packed back to back: one segment, buckets of two to four starts.
        let packed: Vec<CodeRange> = (0..500).map(|i| r(0x8000 + i * 0x10, 0x10)).collect();
        let layout = check_layout(&packed, 500, 20_000);
        assert_eq!((layout.segments, layout.overflow_buckets), (1, 0), "{layout:?}");
        let two_bytes: Vec<CodeRange> = (0..500).map(|i| r(0x8000 + i * 2, 2)).collect();
        assert_eq!(check_layout(&two_bytes, 500, 20_000).overflow_buckets, 0);
        // Without room for buckets that small, crowded buckets are flagged and searched.
        let crowded: Vec<CodeRange> = (0..8)
            .map(|i| r(0x8000 + i * 2, 2))
            .chain((1..57).map(|i| r(0x8000 + i * (0x1_0000 + i * 0x10), 0x10)))
            .collect();
        let layout = check_layout(&crowded, 64, 5_000);
        assert!(layout.overflow_buckets > 0, "{layout:?}");

        // Mixed sizes with gaps, some spanning many buckets; headroom in the buffers.
        let mut mixed = Vec::new();
        let mut at = 0x10_0000;
        for i in 0..400usize {
            let len = [0x10, 0x30, 0x200, 0x1_0000, 0x8][i % 5];
            mixed.push(r(at, len));
            at += len + [0, 0x10, 0x1000, 0x3][i % 4];
        }
        let layout = check_layout(&mixed, 1000, 20_000);
        assert!(layout.directory_slots <= 2000, "{layout:?}");

        // One range, and ranges at the top of the address space.
        check_layout(&[r(0x1000, 1)], 1, 100);
        check_layout(&[r(usize::MAX - 0x30, 0x10), r(usize::MAX - 0x10, 0x10)], 2, 1000);
    }

    #[test]
    fn crowded_clusters_get_sub_directories() {
        // A subsystem's functions spread over 6 MiB of text, two clusters of tiny stubs among
        // them (as `bpf_lsm_*`: 12 bytes every 16), and the variants packed in a module area.
        let mut ranges: Vec<CodeRange> = (0..400).map(|i| r(0x100_0000 + i * 0x4000, 0x180)).collect();
        ranges.extend((0..128).map(|i| r(0x120_0200 + i * 0x10, 0xc)));
        ranges.extend((0..107).map(|i| r(0x150_0200 + i * 0x10, 0xc)));
        let variants = ranges.len();
        ranges.extend((0..variants).map(|i| r(0x4000_0000 + i * 0x100, 0x100)));
        let layout = check_layout(&ranges, ranges.len(), 50_000);
        assert!(layout.subdirectories >= 2, "{layout:?}");
        assert!(layout.subdirectory_ranges >= 235, "{layout:?}");
        assert_eq!(layout.overflow_buckets, 0, "{layout:?}");
        assert!(layout.directory_slots <= 2 * ranges.len(), "{layout:?}");
        // Every byte of both clusters and around them.
        published(&ranges, ranges.len(), |_, check| {
            for addr in (0x120_0000..0x120_1000).chain(0x150_0000..0x150_1000) {
                check(addr);
            }
        });
    }

    /// The layout's counts (what the benchmarks report) against the published version: one
    /// range takes one bucket and the sentinel; a crowded bucket's sub-directory is counted
    /// with its ranges and takes at least two sub-buckets and their sentinel past the main
    /// directory's slots.
    #[test]
    fn the_layout_counts_the_slots_and_sub_directories_written() {
        let layout = check_layout(&[r(0x1000, 1)], 1, 10);
        assert_eq!((layout.segments, layout.directory_slots), (1, 2), "{layout:?}");

        // 120 functions 256 bytes apart and, in a gap among them, 8 two-byte stubs: the one
        // bucket holding more than four starts holds the stubs.
        let mut ranges: Vec<CodeRange> = (0..100).map(|i| r(0x10_0000 + i * 0x100, 0x40)).collect();
        ranges.extend((0..8).map(|i| r(0x10_6400 + i * 2, 2)));
        ranges.extend((0..20).map(|i| r(0x10_6500 + i * 0x100, 0x40)));
        let layout = check_layout(&ranges, ranges.len(), 5_000);
        assert_eq!(
            (layout.subdirectories, layout.subdirectory_ranges, layout.overflow_buckets),
            (1, 8, 0),
            "{layout:?}"
        );
        published(&ranges, ranges.len(), |set, _| {
            let version = set.published().expect("a published version");
            let main: usize = version.segments[..layout.segments]
                .iter()
                .map(|s| s.buckets.load(Ordering::Relaxed) as usize + 1)
                .sum();
            let layout = set.layout();
            if layout.mode == LookupMode::Directory {
                assert!(layout.directory_slots >= main + 3, "{main} main slots: {layout:?}");
            }
        });
    }

    /// Slots claiming `ranges`, one each.
    fn claimed(ranges: &[CodeRange]) -> Vec<FuncSlot<'_>> {
        let slots: Vec<FuncSlot<'_>> = ranges.iter().map(|_| FuncSlot::new()).collect();
        for (slot, &range) in slots.iter().zip(ranges) {
            slot.claim(range, crate::ObjectId(0));
        }
        slots
    }

    /// A version smaller than the one its buffer held before: the entries past it are stale
    /// (with lower starts than every range of the new version), and the windows of its last
    /// buckets read past its end. Checked in buffers with room for the sentinels, and in
    /// buffers the version fills but for one or two entries or to the last (the clamped path).
    #[test]
    fn windows_past_a_smaller_version_never_count_stale_entries() {
        let low: Vec<CodeRange> = (0..90).map(|i| r(0x10_000 + i * 0x100, 0x80)).collect();
        // The last range is long: addresses in its tail lie in buckets after the last start,
        // whose rank is the version's length, so their windows lie wholly past the version.
        let high: Vec<CodeRange> =
            (0..10).map(|i| r(0x90_0000 + i * 0x40, if i == 9 { 0x4000 } else { 0x30 })).collect();
        let all = [&low[..], &high[..]].concat();
        // What each buffer held before: low starts at the small version's indices 10 and up.
        for capacity in [128, 14, 13, 12, 11, 10] {
            let before = if capacity == 128 { &all[..] } else { &low[..capacity] };
            let (old, small) = (claimed(before), claimed(&high));
            let a = Storage::new(capacity);
            let b = Storage::new(capacity);
            let set = PatchedSet::with_mode(a.buffer(), b.buffer(), LookupMode::Directory);
            set.rebuild(&old, || {}).unwrap();
            set.rebuild(&old, || {}).unwrap();
            set.rebuild(&small, || {}).unwrap(); // in `a` again
            assert_eq!(set.len(), 10);
            for range in &high {
                let (s, e) = (range.start().get(), range.end().get());
                for addr in [s - 1, s, s + 1, s + 0x800, s + 0x2000, e - 1, e, e + 0x10] {
                    let got = set.lookup(CodeAddr(addr)).map(|h| h.range);
                    assert_eq!(got, reference(&high, addr), "capacity {capacity}: lookup({addr:#x})");
                }
            }
            assert!(set.lookup(CodeAddr(usize::MAX)).is_none());
        }
    }

    #[test]
    fn sub_directories_out_of_room_leave_searched_buckets_that_agree_with_a_scan() {
        // Clusters of two-byte functions a MiB apart, more than the budget can cut finely:
        // the first crowded buckets get sub-directories, some of whose sub-buckets stay
        // crowded, and the last get none.
        let ranges: Vec<CodeRange> =
            (0..60).flat_map(|c| (0..40).map(move |i| r(0x100_0000 + c * 0x10_0000 + c * 0x20 + i * 2, 2))).collect();
        let layout = check_layout(&ranges, ranges.len(), 20_000);
        assert!(layout.subdirectories > 0 && layout.overflow_buckets > 0, "{layout:?}");
        assert!(layout.directory_slots <= 2 * ranges.len(), "{layout:?}");
    }

    /// The writer lays a version out with the whole budget given to the buckets and with half,
    /// and keeps the one with fewer extra loads. Ten 32-byte functions and, after them, nine
    /// one-byte ones back to back, in buffers of 22 entries (44 slots): the whole budget buys
    /// 8-byte buckets (43 slots), which split the nine 8 + 1 and leave no room for a
    /// sub-directory, so 8 ranges are searched (3 extra loads each, 24); half keeps 64-byte
    /// buckets (7 slots) and cuts the bucket of the nine into sixteen 4-byte sub-buckets and
    /// their sentinel (17 slots; one extra load each, 9).
    #[test]
    fn the_writer_keeps_the_half_budget_layout_when_it_costs_fewer_loads() {
        let mut ranges: Vec<CodeRange> = (0..10).map(|i| r(0x1000 + i * 0x20, 0x20)).collect();
        ranges.extend((0..9).map(|i| r(0x1140 + i, 1)));
        let layout = check_layout(&ranges, 22, 1_000);
        assert_eq!(
            (layout.segments, layout.bucket_shifts, layout.directory_slots),
            (1, [6, 0, 0, 0], 7 + 17),
            "{layout:?}"
        );
        assert_eq!(
            (layout.subdirectories, layout.subdirectory_ranges, layout.overflow_buckets),
            (1, 9, 0),
            "{layout:?}"
        );
    }

    /// Back-to-back functions: `count` of `len` bytes for each `(count, len)`, from 0x1000.
    fn back_to_back(blocks: &[(usize, usize)]) -> Vec<CodeRange> {
        let mut at = 0x1000;
        let mut ranges = Vec::new();
        for &(count, len) in blocks {
            for _ in 0..count {
                ranges.push(r(at, len));
                at += len;
            }
        }
        ranges
    }

    /// The writer weighs a searched bucket of `k` ranges at `k · ⌈log2 k⌉` extra loads against
    /// one per range behind a sub-directory. In both versions below the whole budget buys
    /// 8-byte buckets, one of which holds 8 one-byte functions and is searched (24 loads), and
    /// half keeps coarser buckets with a sub-directory.
    #[test]
    fn the_writer_weighs_a_searched_bucket_of_k_ranges_at_k_log2_k_loads() {
        // Half: 32-byte buckets, the 12 one-byte functions behind a sub-directory (12 loads),
        // cheaper (it would not be against `k + log2 k` = 11).
        let layout = check_layout(&back_to_back(&[(21, 0x20), (12, 1)]), 44, 1_000);
        assert_eq!(
            (layout.bucket_shifts, layout.subdirectory_ranges, layout.overflow_buckets),
            ([5, 0, 0, 0], 12, 0),
            "{layout:?}"
        );
        // Half: 64-byte buckets, 8 one-byte and 16 two-byte functions behind a
        // sub-directory with the 64-byte function after them (25 loads), dearer (it would not
        // be against `⌊log2 k⌋ + 1` = 4 loads each).
        let layout = check_layout(&back_to_back(&[(9, 0x40), (8, 1), (16, 2), (2, 0x40)]), 44, 1_000);
        assert_eq!(
            (layout.bucket_shifts, layout.overflow_buckets, layout.overflow_ranges, layout.subdirectories),
            ([3, 0, 0, 0], 1, 8, 0),
            "{layout:?}"
        );
    }

    /// The shifts chosen never make the directory outgrow the buffer, its sentinel included.
    /// Two 32-byte functions, five one-byte ones and a 64-byte one, back to back, in buffers
    /// of 9 entries (18 slots): 4-byte buckets would need 19 slots (18 buckets and the
    /// sentinel, which the lookups past the last bucket read). Every address against a scan.
    #[test]
    fn the_buckets_and_their_sentinel_fit_the_buffer() {
        let ranges = back_to_back(&[(2, 0x20), (5, 1), (1, 0x40)]);
        let layout = published(&ranges, 9, |set, check| {
            for addr in 0xff0..0x10a0 {
                check(addr);
            }
            set.layout()
        });
        assert!(layout.directory_slots <= 18, "{layout:?}");
    }

    /// A segment spanning half the address space or more: no shift below 63 makes it one
    /// bucket. Eight ranges 2^61 bytes apart (equal gaps: the first three split the segments),
    /// the last segment spanning 2^63 bytes.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_segment_spanning_half_the_address_space_agrees_with_a_scan() {
        let ranges: Vec<CodeRange> = (0..8).map(|k| r(k << 61 | 0x1000, 0x10)).collect();
        let layout = check_edges(&ranges, 8);
        assert_eq!((layout.segments, layout.bucket_shifts[3]), (4, 63), "{layout:?}");
    }

    /// A bucket of exactly [`WINDOW`] starts is not crowded: the writer refines the shift no
    /// further for it. Four 16-byte functions, then eight of 64 bytes, back to back: 64-byte
    /// buckets (the first holding the four; 9 buckets and the sentinel), although 32-byte
    /// ones would fit the budget.
    #[test]
    fn a_bucket_of_window_starts_is_not_refined() {
        let layout = check_layout(&back_to_back(&[(4, 0x10), (8, 0x40)]), 12, 1_000);
        assert_eq!(
            (layout.bucket_shifts, layout.directory_slots, layout.overflow_buckets),
            ([6, 0, 0, 0], 10, 0),
            "{layout:?}"
        );
    }

    /// The searches of a sub-directory's crowded sub-buckets count in the choice between the
    /// two layouts. 47 functions of 4 KiB, 32 of 256 bytes and 28 of 4 bytes, back to back, in
    /// buffers of 110 entries: the whole budget buys 1 KiB buckets, leaving room for one
    /// sub-directory of 2 sub-buckets of 14 tiny functions, searched (28 + 2 · 14 · 4 = 140
    /// loads); half keeps 4 KiB buckets and three sub-directories, 24 of their 60 ranges in
    /// three searched sub-buckets of 8 (60 + 3 · 8 · 3 = 132 loads): half is kept.
    #[test]
    fn sub_directories_count_the_searches_of_their_crowded_sub_buckets() {
        let layout = check_layout(&back_to_back(&[(47, 0x1000), (32, 0x100), (28, 4)]), 110, 5_000);
        assert_eq!((layout.bucket_shifts, layout.directory_slots), ([12, 0, 0, 0], 190), "{layout:?}");
        assert_eq!(
            (layout.subdirectories, layout.subdirectory_ranges, layout.overflow_buckets, layout.overflow_ranges),
            (3, 60, 3, 24),
            "{layout:?}"
        );
    }

    /// A sub-directory's sentinel (the rank of its bucket's end) ends the search of its last
    /// sub-bucket when that one is crowded. A long function, then 40 one-byte ones in the last
    /// 40 bytes of the next 2 KiB bucket (whose ranks start at 1), then 4 KiB functions, in
    /// buffers with room for no finer cut of that bucket than 32-byte sub-buckets: its last
    /// two are crowded and searched. Every address around them against a scan.
    #[test]
    fn the_search_of_a_crowded_last_sub_bucket_ends_at_the_sub_directory_sentinel() {
        let ranges = back_to_back(&[(1, 0xfd8), (40, 1), (10, 0x1000)]);
        let layout = published(&ranges, ranges.len(), |set, check| {
            for addr in 0xff0..0x2010 {
                check(addr);
            }
            set.layout()
        });
        assert_eq!(
            (layout.bucket_shifts[0], layout.subdirectories, layout.overflow_buckets, layout.overflow_ranges),
            (11, 1, 2, 40),
            "{layout:?}"
        );
    }

    /// A sub-directory may spend up to 16 sub-buckets per range of its bucket, and its
    /// sentinel: a crowded bucket of 8 ranges gets the 128 sub-buckets it needs. Seven one-byte
    /// functions and a long one start in the first 512 bytes of one segment (everything back to
    /// back), 20 functions of 512 bytes follow: 512-byte buckets (22 slots), and the first
    /// bucket cut into 4-byte sub-buckets (129 slots), within the 160 slots of 80 entries.
    #[test]
    fn a_sub_directory_takes_up_to_sixteen_sub_buckets_per_range() {
        let mut ranges: Vec<CodeRange> = (0..7).map(|i| r(0x1000 + i, 1)).collect();
        ranges.push(r(0x1007, 0x1f9));
        ranges.extend((0..20).map(|i| r(0x1200 + i * 0x200, 0x200)));
        let layout = check_layout(&ranges, 80, 1_000);
        assert_eq!(
            (layout.segments, layout.bucket_shifts, layout.directory_slots),
            (1, [9, 0, 0, 0], 22 + 128 + 1),
            "{layout:?}"
        );
        assert_eq!(
            (layout.subdirectories, layout.subdirectory_ranges, layout.overflow_buckets),
            (1, 8, 0),
            "{layout:?}"
        );
    }

    /// Sub-directories are laid out one after the other, each with its sentinel: two crowded
    /// buckets as in the test above, 10 KiB apart, take 2 × 129 slots past the 24 buckets.
    #[test]
    fn sub_directories_follow_each_other_with_their_sentinels() {
        let mut ranges = Vec::new();
        for base in [0x1000, 0x3a00] {
            ranges.extend((0..7).map(|i| r(base + i, 1)));
            ranges.push(r(base + 7, 0x1f9));
            ranges.extend((0..if base == 0x1000 { 20 } else { 1 }).map(|i| r(base + 0x200 + i * 0x200, 0x200)));
        }
        let layout = check_layout(&ranges, 150, 2_000);
        assert_eq!(
            (layout.segments, layout.bucket_shifts, layout.directory_slots),
            (1, [9, 0, 0, 0], 24 + 2 * 129),
            "{layout:?}"
        );
        assert_eq!(
            (layout.subdirectories, layout.subdirectory_ranges, layout.overflow_buckets),
            (2, 16, 0),
            "{layout:?}"
        );
    }

    /// Publishes `ranges` and checks every address within 2 bytes of each bucket edge, each
    /// segment's base and sentinel bucket, and the ends of the address space, against a scan.
    /// Returns the layout.
    fn check_edges(ranges: &[CodeRange], capacity: usize) -> IndexLayout {
        published(ranges, capacity, |set, check| {
            let version = set.published().expect("a published version");
            let mut edges = Vec::from([0, usize::MAX - 2]);
            for segment in version.segments {
                let (base, shift) = (segment.base(), segment.shift.load(Ordering::Relaxed));
                for bucket in 0..=segment.buckets.load(Ordering::Relaxed) as usize + 1 {
                    edges.push(base.wrapping_add(bucket << shift));
                }
            }
            for edge in edges {
                for addr in edge.saturating_sub(2)..=edge.saturating_add(2) {
                    check(addr);
                }
            }
            set.layout()
        })
    }

    #[test]
    fn segment_bases_bucket_edges_and_sentinels_agree_with_a_scan() {
        // Five clusters far apart (one more than there are segments, so one segment spans a
        // wide gap), each ending in a full bucket whose last range is long and reaches past
        // it into the sentinel's addresses, one cluster ending right where the next begins.
        let mut ranges = Vec::new();
        for (k, &base) in [0x1000usize, 0x10_0000, 0x1000_0000, 0x4000_0000, 0x7fff_0000_0000].iter().enumerate() {
            let mut at = base;
            for i in 0..20 + 7 * k {
                let len = [0x10, 0x2, 0x40, 0x8, 0x100][(i + k) % 5];
                ranges.push(r(at, len));
                at += len + [0, 0x30, 0x4, 0x200][i % 4];
            }
            // The last bucket full: three tiny ranges and the long one start in it.
            for _ in 0..WINDOW - 1 {
                ranges.push(r(at, 2));
                at += 2;
            }
            ranges.push(r(at, 0x1_0000));
        }
        // Touching the next cluster: ends exactly at 0x10_0000.
        ranges.push(r(0x10_0000 - 0x800, 0x800));
        ranges.sort();
        let layout = check_edges(&ranges, ranges.len());
        assert_eq!(layout.segments, SEGMENTS, "{layout:?}");
        check_edges(&ranges, 3 * ranges.len());
        // A segment's base inside the previous segment's last bucket, which is full: only
        // choosing the segment by `addr >= base` counts the base's own range.
        let mut near: Vec<CodeRange> = (0..18).map(|i| r(0x1_0000 + i * 0x1000, 0x100)).collect();
        near.extend((0..4).map(|i| r(0x2_2000 + i * 0x40, 0x40)));
        near.extend((0..30).map(|i| r(0x2_3100 + i * 0x40, 0x40)));
        check_edges(&near, near.len());
        // Fewer ranges than segments: unused segments and `usize::MAX`.
        let layout = check_edges(&[r(0x1000, 0x10), r(usize::MAX - 0x10, 0x10)], 2);
        assert_eq!(layout.segments, 2, "{layout:?}");
        check_edges(&[r(0x40, 0x10)], 1);
    }

    /// The bases of the segments a version's directory is split into.
    fn segment_bases(ranges: &[CodeRange]) -> Vec<usize> {
        published(ranges, ranges.len(), |set, _| {
            let version = set.published().expect("a published version");
            version.segments.iter().map(Segment::base).collect()
        })
    }

    /// The segments split after the three widest gaps, whatever order they come in: gaps
    /// widening from the first range on, and a gap narrower than the others between two
    /// wider ones.
    #[test]
    fn segments_split_at_the_three_widest_gaps() {
        let widening = [r(0x1000, 0x10), r(0x2000, 0x10), r(0x4000, 0x10), r(0x8000, 0x10)];
        assert_eq!(segment_bases(&widening), [0x1000, 0x2000, 0x4000, 0x8000]);
        // Gaps of about 0x2000, 0x800, 0x4800 and 0x8000: the 0x800 one is not split.
        let mixed = [r(0x1000, 0x10), r(0x3000, 0x10), r(0x3800, 0x10), r(0x8000, 0x10), r(0x1_0000, 0x10)];
        assert_eq!(segment_bases(&mixed), [0x1000, 0x3000, 0x8000, 0x1_0000]);
    }

    /// Entries holding `starts` (16-byte ranges), for the writer's shift choice.
    fn entries_at(starts: &[usize]) -> Vec<IndexEntry<'static>> {
        starts
            .iter()
            .enumerate()
            .map(|(i, &start)| {
                let entry = IndexEntry::new();
                entry.write(&Hit::new(r(start, 0x10), SlotId(i as u32), None));
                entry
            })
            .collect()
    }

    /// A move that fills the budget to its last slot is taken. Eight starts 4 KiB apart: one
    /// 32 KiB bucket (two slots with the sentinel) holds all eight; two 16 KiB buckets (three
    /// slots) hold four each, none crowded.
    #[test]
    fn a_shift_that_fills_the_budget_exactly_is_chosen() {
        let starts: Vec<usize> = (0..8).map(|i| 0x10_0000 + i * 0x1000).collect();
        let segment = entries_at(&starts);
        let segments = [&segment[..]];
        assert_eq!(overflow(&segment, 15), 8);
        assert_eq!(overflow(&segment, 14), 0);
        assert_eq!(choose_shifts(&segments, 3)[0], 14, "three slots: two buckets and the sentinel");
        assert_eq!(choose_shifts(&segments, 2)[0], 15, "two slots: one bucket and the sentinel");
    }

    /// The writer buys the most crowded ranges removed per extra slot, not the most per move.
    /// Segment 0: twelve starts in four groups of three 16 KiB apart — one move (three extra
    /// slots, 16 KiB buckets) un-crowds all twelve, four per slot. Segments 1–3: five starts
    /// 4 KiB apart each — one extra slot un-crowds five. With three slots to spare, the three
    /// small moves (15 ranges) beat the big one (12).
    #[test]
    fn the_shifts_remove_the_most_crowded_ranges_per_extra_slot() {
        let groups: Vec<usize> =
            (0..4).flat_map(|g| (0..3).map(move |i| 0x10_0000 + g * 0x4000 + i * 0x1000)).collect();
        let fives: Vec<Vec<IndexEntry<'static>>> =
            (1..4).map(|k| entries_at(&(0..5).map(|i| k * 0x100_0000 + i * 0x1000).collect::<Vec<_>>())).collect();
        let big = entries_at(&groups);
        let segments = [&big[..], &fives[0][..], &fives[1][..], &fives[2][..]];
        // Each segment starts as one bucket and its sentinel: 8 slots.
        let shifts = choose_shifts(&segments, 8 + 3);
        assert_eq!(shifts, [16, 14, 14, 14]);
        let crowded: usize = segments.iter().zip(shifts).map(|(s, shift)| overflow(s, shift)).sum();
        assert_eq!(crowded, 12);
        // With a fourth slot the big move fits too.
        assert_eq!(choose_shifts(&segments, 8 + 3 + 3), [14, 14, 14, 14]);
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
            proptest::prop_assert!(layout.directory_slots <= 2 * layout.ranges * (1 + headroom));
        }
    }

    /// Many dense layouts (ranges of 1 to 48 bytes, back to back or with small gaps, many
    /// sharing or spanning buckets, some buckets crowded) against a scan at every address, so
    /// the windowed count and the search of crowded buckets are both exercised.
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
            let a = Storage::new(ranges.len());
            let b = Storage::new(ranges.len());
            // Each set is borrowed for the slots' lifetime (its published version points into it),
            // so the sets outlive the loop; each uses the buffers only in its own iteration.
            let sets = MODES.map(|mode| PatchedSet::with_mode(a.buffer(), b.buffer(), mode));
            for (set, mode) in sets.iter().zip(MODES) {
                set.rebuild(&slots, || {}).unwrap();
                for addr in 0x10_0000 - 64..at + 64 {
                    let got = set.lookup(CodeAddr(addr)).map(|h| h.range);
                    assert_eq!(got, reference(&ranges, addr), "{addr:#x} in {mode:?}");
                }
            }
        }
    }

    /// Every address from below the first range to past the last, in both modes, for every
    /// version length from 0 to 140 (each length takes its own path through the search's
    /// halvings) of ranges with gaps, back to back and one byte long.
    #[test]
    fn every_length_agrees_with_a_scan_at_every_address() {
        for len in 0..=140usize {
            let mut at = 0x1000;
            let ranges: Vec<CodeRange> = (0..len)
                .map(|i| {
                    let range = r(at, 1 + i * 7 % 13);
                    at = range.end().get() + [0, 0, 3, 1, 9][i % 5];
                    range
                })
                .collect();
            let slots: Vec<FuncSlot<'_>> = ranges.iter().map(|_| FuncSlot::new()).collect();
            for (slot, &range) in slots.iter().zip(&ranges) {
                slot.claim(range, crate::ObjectId(0));
            }
            let a = Storage::new(len.max(1));
            let b = Storage::new(len.max(1));
            // Each set is borrowed for the slots' lifetime (its published version points into it),
            // so the sets outlive the loop; each uses the buffers only in its own iteration.
            let sets = MODES.map(|mode| PatchedSet::with_mode(a.buffer(), b.buffer(), mode));
            for (set, mode) in sets.iter().zip(MODES) {
                set.rebuild(&slots, || {}).unwrap();
                for addr in 0xff0..at + 0x10 {
                    let got = set.lookup(CodeAddr(addr)).map(|h| h.range);
                    assert_eq!(got, reference(&ranges, addr), "{addr:#x} of {len} in {mode:?}");
                }
                assert!(set.lookup(CodeAddr(0)).is_none() && set.lookup(CodeAddr(usize::MAX)).is_none());
            }
        }
    }

    /// The plan the writer stores names the run `search` finishes: `k` the largest power of two
    /// at most the length (one step then covers the version: `k ≤ len < 2k`), and the loop for
    /// longer runs.
    #[test]
    fn the_search_plan_covers_the_version() {
        assert_eq!(search_plan(0), 1);
        for len in 1..=SEARCH_UNROLLED {
            let plan = search_plan(len);
            assert!((1..=7).contains(&plan), "{len}: plan {plan}");
            let k = 1usize << (plan - 1);
            assert!(k <= len && len < 2 * k, "{len}: plan {plan} finishes {k} ranges");
        }
        for len in [SEARCH_UNROLLED + 1, 1000, MAX_RANGES] {
            assert_eq!(search_plan(len), SEARCH_LONG);
        }
    }

    /// An empty version in directory mode, written over a version whose first bucket had a
    /// sub-directory, misses everywhere, though the directory's path does not test the
    /// version's length: the writer resets an empty version's segments (every address reads
    /// slot 0) and writes sentinels at the buffer's start, and the candidate is bounded by the
    /// version's (empty) entries — either alone gives the misses.
    #[test]
    fn an_empty_version_misses_through_a_stale_directory() {
        // A cluster of one-byte functions (a crowded first bucket), then ranges 8 KiB apart (gaps
        // wider than the cluster's, so that the segments split among them).
        let ranges: Vec<CodeRange> =
            (0..12).map(|i| r(0x1000 + i, 1)).chain((0..100).map(|i| r(0x2000 + i * 0x2000, 0x40))).collect();
        let slots: Vec<FuncSlot<'_>> = ranges.iter().map(|_| FuncSlot::new()).collect();
        let claim = |n: usize| {
            for (i, slot) in slots.iter().enumerate() {
                if i < n {
                    slot.claim(ranges[i], crate::ObjectId(0));
                } else {
                    slot.release();
                }
            }
        };
        let (a, b) = (Storage::new(ranges.len() + WINDOW), Storage::new(ranges.len() + WINDOW));
        let set = PatchedSet::with_mode(a.buffer(), b.buffer(), LookupMode::Directory);
        claim(ranges.len());
        set.rebuild(&slots, || {}).unwrap();
        assert!(set.layout().subdirectories >= 1, "{:?}", set.layout());
        claim(1);
        set.rebuild(&slots, || {}).unwrap();
        claim(0);
        set.rebuild(&slots, || {}).unwrap(); // into the first version's buffer
        assert_eq!((set.len(), set.layout().mode), (0, LookupMode::Directory));
        for addr in (0x0f00..0x1100).chain((0x2000..0xcc000).step_by(0x101)) {
            assert!(set.lookup(CodeAddr(addr)).is_none(), "{addr:#x}");
        }
    }

    /// One index rebuilt through versions of every kind — searched, searched longer than the
    /// unrolled halvings, directory, empty — in the writer's choice of mode and forced into
    /// each: each version is looked up with its own plan, never the one its buffer held
    /// before. The empty version lands in a buffer whose directory still holds the words of
    /// the 300-range version before it, which the directory's path (no test of the length of
    /// its own) must answer with misses.
    #[test]
    fn each_version_is_looked_up_with_its_own_plan() {
        let all: Vec<CodeRange> = (0..300).map(|i| r(0x10_0000 + i * 0x40, 0x20 + i % 7)).collect();
        let slots: Vec<FuncSlot<'_>> = all.iter().map(|_| FuncSlot::new()).collect();
        let a = Storage::new(all.len() + WINDOW);
        let b = Storage::new(all.len() + WINDOW);
        // Range `i` of a version of `n`: the even ones first, so that a smaller version's
        // ranges are not the first ones of a larger one's.
        let pick = |i: usize| all[if 2 * i < all.len() { 2 * i } else { 2 * i - all.len() + 1 }];
        // Each set is borrowed for the slots' lifetime, so both outlive the loop; each uses the
        // buffers only in its own iteration.
        let sets = [
            (None, PatchedSet::new(a.buffer(), b.buffer())),
            (Some(LookupMode::Search), PatchedSet::with_mode(a.buffer(), b.buffer(), LookupMode::Search)),
            (Some(LookupMode::Directory), PatchedSet::with_mode(a.buffer(), b.buffer(), LookupMode::Directory)),
        ];
        for (forced, set) in &sets {
            for n in [3, 64, 300, 20, 0, 65, 150, 1, 33] {
                for (i, slot) in slots.iter().enumerate() {
                    if i < n {
                        slot.claim(pick(i), crate::ObjectId(0));
                    } else {
                        slot.release();
                    }
                }
                set.rebuild(&slots, || {}).unwrap();
                let ranges: Vec<CodeRange> = (0..n).map(pick).collect();
                assert_eq!(set.len(), n);
                assert_eq!(set.layout().mode, forced.unwrap_or(LookupMode::choose(n)), "{n} in {forced:?}");
                for addr in (0x0f_ffc0..0x10_0000 + 300 * 0x40 + 0x40).step_by(3) {
                    let got = set.lookup(CodeAddr(addr)).map(|h| h.range);
                    assert_eq!(got, reference(&ranges, addr), "{addr:#x} of {n} in {forced:?}");
                }
            }
        }
    }

    #[test]
    fn the_writer_searches_small_versions_and_uses_the_directory_for_large_ones() {
        let ranges = |n: usize| -> Vec<CodeRange> { (0..n).map(|i| r(0x10_0000 + i * 0x100, 0x80)).collect() };
        let small = if cfg!(lp_select_unpredictable) { LookupMode::Search } else { LookupMode::Directory };
        for (n, mode) in [(1, small), (SEARCH_MAX_RANGES, small), (SEARCH_MAX_RANGES + 1, LookupMode::Directory)] {
            let ranges = ranges(n);
            let slots: Vec<FuncSlot<'_>> = ranges.iter().map(|_| FuncSlot::new()).collect();
            for (slot, &range) in slots.iter().zip(&ranges) {
                slot.claim(range, crate::ObjectId(0));
            }
            let a = Storage::new(n);
            let b = Storage::new(n);
            let set = PatchedSet::new(a.buffer(), b.buffer());
            set.rebuild(&slots, || {}).unwrap();
            assert_eq!((set.layout().mode, LookupMode::choose(n)), (mode, mode), "{n} ranges");
            // The mode travels with the version: the next one, in the other buffer, keeps it.
            slots[0].release();
            set.rebuild(&slots, || {}).unwrap();
            assert_eq!(set.layout().mode, LookupMode::choose(n - 1));
            assert!(set.lookup(CodeAddr(0x10_0000)).is_none());
            assert_eq!(set.lookup(CodeAddr(0x10_017f)).map(|h| h.slot()), (n > 1).then_some(SlotId(1)));
        }
    }

    #[test]
    fn huge_ranges_agree_with_a_scan() {
        // 64 MiB ranges: each segment's buckets span many of them.
        let huge: Vec<CodeRange> = (0..9).map(|i| r(0x1000_0000 + i * 0x800_0000, 0x400_0000)).collect();
        let layout = check_layout(&huge, 9, 10_000);
        assert_eq!((layout.ranges, layout.overflow_buckets), (9, 0), "{layout:?}");
    }

    /// A buffer's directory holds two slots per range: a directory shorter than the entries
    /// bounds the versions of both buffers (the smaller buffer's capacity, whichever buffer is
    /// written next), and a version past it is refused whole.
    #[test]
    fn a_short_directory_bounds_the_capacity() {
        let slots: Vec<FuncSlot<'_>> = (0..6).map(|_| FuncSlot::new()).collect();
        let (a, b) = (Storage::sized(8, 3), Storage::sized(8, 5));
        let set = PatchedSet::new(a.buffer(), b.buffer());
        assert_eq!(set.capacity(), 3);
        for (i, slot) in slots.iter().take(3).enumerate() {
            slot.claim(r(0x1000 + i * 0x1000, 0x10), crate::ObjectId(0));
        }
        set.rebuild(&slots, || {}).unwrap();
        slots[3].claim(r(0x8000, 0x10), crate::ObjectId(0));
        // Into `b`, whose five pairs would hold four ranges.
        assert_eq!(set.rebuild(&slots, || {}), Err(IndexError::Full { capacity: 3 }));
        assert_eq!(set.len(), 3);
        slots[3].release();
        set.rebuild(&slots, || {}).unwrap();
        slots[3].claim(r(0x8000, 0x10), crate::ObjectId(0));
        // Into `a`, whose three pairs hold three.
        assert_eq!(set.rebuild(&slots, || {}), Err(IndexError::Full { capacity: 3 }));
        assert_eq!(set.len(), 3);
        for i in 0..3 {
            assert_eq!(set.lookup(CodeAddr(0x1008 + i * 0x1000)).map(|h| h.slot()), Some(SlotId(i as u32)));
        }
        assert!(set.lookup(CodeAddr(0x8008)).is_none());
        // No directory: no range fits.
        let none = Storage::sized(4, 0);
        let empty = PatchedSet::new(none.buffer(), none.buffer());
        assert_eq!(empty.capacity(), 0);
        assert_eq!(empty.rebuild(&slots, || {}), Err(IndexError::Full { capacity: 0 }));
        assert!(empty.is_empty());
    }

    #[test]
    fn a_failed_rebuild_keeps_the_published_version() {
        let slots: Vec<FuncSlot<'_>> = (0..3).map(|_| FuncSlot::new()).collect();
        slots[0].claim(r(0x1000, 0x10), crate::ObjectId(0));
        let a = Storage::new(2);
        let b = Storage::new(2);
        let set = PatchedSet::new(a.buffer(), b.buffer());
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
