//! A synthetic address space: a kernel text of [`TEXT_FUNCS`] functions, patched originals
//! spread evenly over it, replacement variants in a module area, and a seeded generator for
//! stack frames that hit or miss the patched code.

use livepatch_core::{CodeAddr, CodeRange};

/// Start of the kernel text.
pub const TEXT_BASE: usize = 0x1000_0000;
/// Functions in the text (a patched original is one of them).
pub const TEXT_FUNCS: usize = 16_384;
/// Distance between two text functions.
pub const STRIDE: usize = 0x400;
/// Size of a patched original and of a variant: a text function's first `FUNC_LEN` bytes are
/// the patchable function, the rest of its stride is unpatched code.
pub const FUNC_LEN: usize = 0x100;
/// Start of the variants (module area).
pub const VARIANT_BASE: usize = 0x4000_0000;
/// Address-space room given to each patch generation's variants.
pub const GENERATION_ROOM: usize = 0x0100_0000;

/// The text function index of the `i`-th of `n` patched functions (spread evenly).
pub fn patched_index(i: usize, n: usize) -> usize {
    i * (TEXT_FUNCS / n.max(1)).max(1)
}

/// The original code of the `i`-th of `n` patched functions.
pub fn original(i: usize, n: usize) -> CodeRange {
    CodeRange::new(TEXT_BASE + patched_index(i, n) * STRIDE, FUNC_LEN).expect("valid range")
}

/// The variant of the `i`-th patched function provided by patch generation `generation`.
pub fn variant(generation: usize, i: usize) -> CodeRange {
    CodeRange::new(VARIANT_BASE + generation * GENERATION_ROOM + i * 2 * FUNC_LEN, FUNC_LEN).expect("valid range")
}

/// A small deterministic generator (splitmix64): benches must not depend on a crate's RNG.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A return address in unpatched text code: anywhere in the text, past the patchable part
    /// of its function, so it is never in a patched original whatever the patch size.
    pub fn clean_frame(&mut self) -> CodeAddr {
        let func = self.below(TEXT_FUNCS);
        CodeAddr(TEXT_BASE + func * STRIDE + FUNC_LEN + self.below(STRIDE - FUNC_LEN))
    }

    /// A return address in unpatched code right after one of `n` patched functions, on the
    /// same 4 KiB page: the worst case for a page-granular pre-filter.
    pub fn near_frame(&mut self, n: usize) -> CodeAddr {
        let func = original(self.below(n), n);
        CodeAddr(func.end().get() + self.below(STRIDE - FUNC_LEN))
    }

    /// A return address inside `range`.
    pub fn inside(&mut self, range: CodeRange) -> CodeAddr {
        CodeAddr(range.start().get() + self.below(range.len()))
    }
}
