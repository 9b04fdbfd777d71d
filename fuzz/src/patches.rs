//! Patch descriptors from fuzz input.
//!
//! Originals come mostly from a small table of fixed functions, so patches stack on each other;
//! a few bytes select odd ranges that overlap the table partially (conflicts). Replacement code
//! is laid out per patch and function, with an occasional deliberate collision.

use arbitrary::Arbitrary;
use livepatch_core::patch::{CallbackContext, CallbackError, ObjectCallbacks};
use livepatch_core::{CodeRange, Func, Object, ObjectId, Patch, PatchId};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Fixed original functions: `[0x1000 + i·0x100, +0x40)`.
pub const FIXED_FUNCS: usize = 6;

/// One replaced function, as fuzz input.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub struct FuncSpec {
    /// `< 220`: fixed function `old % FIXED_FUNCS`; otherwise an odd range.
    pub old: u8,
    /// `> 240`: replacement code that may collide with another patch's.
    pub new: u8,
}

/// One object of a patch, as fuzz input.
#[derive(Clone, Debug, Arbitrary)]
pub struct ObjSpec {
    /// Object id, taken modulo 3 (0 is the core kernel).
    pub id: u8,
    /// Its functions (at most 3 are used).
    pub funcs: Vec<FuncSpec>,
}

/// One patch, as fuzz input.
#[derive(Clone, Debug, Arbitrary)]
pub struct PatchSpec {
    /// Cumulative (atomic replace).
    pub replace: bool,
    /// Its objects (at most 2 are used).
    pub objects: Vec<ObjSpec>,
}

/// The original range a spec byte selects in object `object` (each object has its own part
/// of the address space, as loaded code does).
pub fn old_range(object: u8, old: u8) -> CodeRange {
    let base = 0x1000 + usize::from(object % 3) * 0x10_0000;
    if old < 220 {
        CodeRange::new(base + (old as usize % FIXED_FUNCS) * 0x100, 0x40).unwrap()
    } else {
        CodeRange::new(base + (old as usize % 16) * 0x50, 0x20).unwrap()
    }
}

/// The object whose part of the address space holds original `range` (see [`old_range`]).
pub fn object_of(range: CodeRange) -> u32 {
    ((range.start().get() - 0x1000) / 0x10_0000) as u32
}

/// The replacement range of function `f` of object `o` in patch `p`.
pub fn new_range(p: usize, o: usize, f: usize, new: u8) -> CodeRange {
    if new > 240 {
        CodeRange::new(0x8000 + (new as usize % 8) * 0x80, 0x40).unwrap()
    } else {
        CodeRange::new(0x40_0000 + p * 0x1000 + o * 0x400 + f * 0x80, 0x40 + (new as usize % 0x40)).unwrap()
    }
}

/// Object callbacks that count their calls and fail `pre_patch` on demand.
#[derive(Debug, Default)]
pub struct Callbacks {
    /// The next `pre_patch` fails.
    pub fail_pre_patch: AtomicBool,
    /// Successful `pre_patch` calls.
    pub pre_patch_ok: AtomicU32,
    /// `post_patch` calls.
    pub post_patch: AtomicU32,
    /// `pre_unpatch` calls.
    pub pre_unpatch: AtomicU32,
    /// `post_unpatch` calls.
    pub post_unpatch: AtomicU32,
    /// A successful `pre_patch` has not been undone by `post_unpatch` yet.
    pub active: AtomicBool,
    /// A callback ran while the object was not set up by a successful `pre_patch`.
    pub violation: AtomicBool,
}

impl Callbacks {
    fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
}

impl ObjectCallbacks for Callbacks {
    fn pre_patch(&self, _ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        // No check that the object is inactive: an atomic replace retires older patches
        // without their callbacks (the kernel's rule), so a retired object may be set up again.
        if self.fail_pre_patch.swap(false, Ordering::Relaxed) {
            return Err(CallbackError(-22));
        }
        self.pre_patch_ok.fetch_add(1, Ordering::Relaxed);
        self.active.store(true, Ordering::Relaxed);
        Ok(())
    }
    fn post_patch(&self, _ctx: &CallbackContext<'_, '_>) {
        if !self.active() {
            self.violation.store(true, Ordering::Relaxed);
        }
        self.post_patch.fetch_add(1, Ordering::Relaxed);
    }
    fn pre_unpatch(&self, _ctx: &CallbackContext<'_, '_>) {
        if !self.active() {
            self.violation.store(true, Ordering::Relaxed);
        }
        self.pre_unpatch.fetch_add(1, Ordering::Relaxed);
    }
    fn post_unpatch(&self, _ctx: &CallbackContext<'_, '_>) {
        if !self.active() {
            self.violation.store(true, Ordering::Relaxed);
        }
        self.post_unpatch.fetch_add(1, Ordering::Relaxed);
        self.active.store(false, Ordering::Relaxed);
    }
}

/// The functions of every object of every patch: `funcs[p][o]`.
pub fn build_funcs<'a>(specs: &[PatchSpec]) -> Vec<Vec<Vec<Func<'a>>>> {
    specs
        .iter()
        .enumerate()
        .map(|(p, ps)| {
            ps.objects
                .iter()
                .take(2)
                .enumerate()
                .map(|(o, os)| {
                    os.funcs
                        .iter()
                        .take(3)
                        .enumerate()
                        .map(|(f, fs)| Func::new("f", old_range(os.id, fs.old), new_range(p, o, f, fs.new)))
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// One [`Callbacks`] per object: `callbacks[p][o]`.
pub fn build_callbacks(specs: &[PatchSpec]) -> Vec<Vec<Callbacks>> {
    specs.iter().map(|ps| ps.objects.iter().take(2).map(|_| Callbacks::default()).collect()).collect()
}

/// The objects of every patch: `objects[p]`.
pub fn build_objects<'a>(
    specs: &[PatchSpec],
    funcs: &'a [Vec<Vec<Func<'a>>>],
    callbacks: &'a [Vec<Callbacks>],
) -> Vec<Vec<Object<'a>>> {
    specs
        .iter()
        .enumerate()
        .map(|(p, ps)| {
            ps.objects
                .iter()
                .take(2)
                .enumerate()
                .map(|(o, os)| {
                    Object::new(ObjectId(u32::from(os.id % 3)), "obj", &funcs[p][o]).with_callbacks(&callbacks[p][o])
                })
                .collect()
        })
        .collect()
}

/// The patches: patch `p` has id `p + 1`.
pub fn build_patches<'a>(specs: &[PatchSpec], objects: &'a [Vec<Object<'a>>]) -> Vec<Patch<'a>> {
    specs
        .iter()
        .enumerate()
        .map(|(p, ps)| {
            let patch = Patch::new(PatchId(p as u32 + 1), "p", &objects[p]);
            if ps.replace {
                patch.replacing()
            } else {
                patch
            }
        })
        .collect()
}
