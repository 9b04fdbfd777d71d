//! Address newtypes: a code address ([`CodeAddr`]) and a non-empty half-open code range
//! ([`CodeRange`]), so that sizes, return addresses and ranges cannot be mixed up.

use core::fmt;

/// An address in the code of one address space: a function entry, a return address, an ip.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CodeAddr(pub usize);

impl CodeAddr {
    /// The raw address.
    #[inline(always)]
    pub const fn get(self) -> usize {
        self.0
    }
}

impl fmt::Debug for CodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for CodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Why a range could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// The range has no bytes.
    Empty,
    /// `start + len` does not fit in the address space.
    Overflow,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RangeError::Empty => "code range has zero size",
            RangeError::Overflow => "code range wraps around the address space",
        })
    }
}

impl core::error::Error for RangeError {}

/// The code of one function: the half-open byte range `[start, end)`.
///
/// # Invariants
///
/// `start < end`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CodeRange {
    start: usize,
    end: usize,
}

impl CodeRange {
    /// The range of `len` bytes starting at `start`.
    pub const fn new(start: usize, len: usize) -> Result<Self, RangeError> {
        if len == 0 {
            return Err(RangeError::Empty);
        }
        match start.checked_add(len) {
            // INVARIANT: len > 0 and no overflow, so start < end.
            Some(end) => Ok(Self { start, end }),
            None => Err(RangeError::Overflow),
        }
    }

    /// The range `[start, end)`.
    pub const fn from_bounds(start: usize, end: usize) -> Result<Self, RangeError> {
        if end <= start {
            return Err(RangeError::Empty);
        }
        // INVARIANT: checked above.
        Ok(Self { start, end })
    }

    /// Rebuilds a range from the start and length of a valid range, read back from the
    /// index's entries (written only from `CodeRange`s, immutable while published).
    #[inline(always)]
    pub(crate) fn from_written_len(start: usize, len: usize) -> Self {
        debug_assert!(len > 0 && start.checked_add(len).is_some());
        // INVARIANT: the entry was written from a valid range.
        Self { start, end: start.wrapping_add(len) }
    }

    /// The first address (the function's entry).
    #[inline(always)]
    pub const fn start(self) -> CodeAddr {
        CodeAddr(self.start)
    }

    /// One past the last address.
    #[inline(always)]
    pub const fn end(self) -> CodeAddr {
        CodeAddr(self.end)
    }

    /// Size in bytes (never zero).
    #[allow(clippy::len_without_is_empty)]
    #[inline(always)]
    pub const fn len(self) -> usize {
        self.end - self.start
    }

    /// Whether `addr` lies in the range.
    #[inline(always)]
    pub const fn contains(self, addr: CodeAddr) -> bool {
        self.start <= addr.0 && addr.0 < self.end
    }

    /// Whether the two ranges share at least one address.
    pub const fn overlaps(self, other: CodeRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

impl fmt::Debug for CodeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_and_wrapping_ranges() {
        assert_eq!(CodeRange::new(0x1000, 0), Err(RangeError::Empty));
        assert_eq!(CodeRange::new(usize::MAX, 2), Err(RangeError::Overflow));
        assert_eq!(CodeRange::from_bounds(5, 5), Err(RangeError::Empty));
        assert_eq!(CodeRange::from_bounds(6, 5), Err(RangeError::Empty));
    }

    #[test]
    fn contains_is_half_open() {
        let r = CodeRange::new(0x1000, 0x10).unwrap();
        assert!(r.contains(CodeAddr(0x1000)));
        assert!(r.contains(CodeAddr(0x100f)));
        assert!(!r.contains(CodeAddr(0x1010)));
        assert!(!r.contains(CodeAddr(0xfff)));
        assert_eq!(r.len(), 0x10);
    }

    #[test]
    fn overlap_is_symmetric_and_excludes_touching() {
        let a = CodeRange::from_bounds(10, 20).unwrap();
        let b = CodeRange::from_bounds(20, 30).unwrap();
        let c = CodeRange::from_bounds(19, 21).unwrap();
        assert!(!a.overlaps(b) && !b.overlaps(a));
        assert!(a.overlaps(c) && c.overlaps(a) && b.overlaps(c));
    }
}
