//! Per-original-function slots (the kernel's `klp_ops`): the func stack — an RCU-style list of
//! variants, newest on top — that the redirect handler reads without a lock.
//!
//! The engine is the only writer. A node is pushed with a `Release` store of the head and
//! unlinked with a `Release` store of its predecessor's link; a removed node stays valid
//! (descriptors live for `'a`) and is reused only after a grace period, so a reader that still
//! holds it reads consistent data.

use crate::addr::CodeRange;
use crate::ids::ObjectId;
use crate::patch::{Func, FuncNode, Object};
use crate::sync::{const_fn, AtomicBool, AtomicRef, AtomicU32, AtomicUsize, Ordering};
use core::fmt;

/// One original function's func stack and the state the engine keeps for it.
///
/// `repr(C)` with `top` first: a handler written in C reads it there (see
/// [`crate::redirect::SLOT_TOP_OFFSET`]).
#[repr(C)]
pub struct FuncSlot<'a> {
    /// Top of the func stack (`None`: nothing patched, run the original).
    pub(crate) top: AtomicRef<'a, FuncNode<'a>>,
    /// The original function's code (`start == end == 0` while the slot is free).
    orig_start: AtomicUsize,
    orig_end: AtomicUsize,
    /// The original code is being switched away from in the current transition.
    pub(crate) orig_away: AtomicBool,
    /// The backend's hook is installed on the original's entry.
    pub(crate) hooked: AtomicBool,
    /// The object the original function lives in.
    object: AtomicU32,
    /// The name a stall report gives this function, cached for one completion attempt (the
    /// patch list and the functions' ranges cannot change during one): the engine clears
    /// `named` when an attempt starts and sets it with the two references below on the first
    /// straggler blocked here. Only the engine reads or writes them, so `Relaxed`.
    pub(crate) named: AtomicBool,
    /// The function of the first registered patch that replaces this one (`None`: no patch
    /// names it).
    pub(crate) name_func: AtomicRef<'a, Func<'a>>,
    /// That function's object.
    pub(crate) name_object: AtomicRef<'a, Object<'a>>,
    /// The slot's nop node, pushed by an atomic-replace patch that no longer patches it.
    pub(crate) nop: FuncNode<'a>,
}

// Two cache lines per slot: the hot words and the engine's with `top` first, then the nop
// node (64-byte aligned) in the second line.
#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<FuncSlot<'static>>() <= 128);

impl<'a> FuncSlot<'a> {
    const_fn! {
        /// A free slot.
        pub fn new() -> Self {
            Self {
                top: AtomicRef::none(),
                orig_start: AtomicUsize::new(0),
                orig_end: AtomicUsize::new(0),
                nop: FuncNode::new(None),
                orig_away: AtomicBool::new(false),
                hooked: AtomicBool::new(false),
                object: AtomicU32::new(0),
                named: AtomicBool::new(false),
                name_func: AtomicRef::none(),
                name_object: AtomicRef::none(),
            }
        }
    }

    /// The original function this slot serves, or `None` when the slot is free.
    pub fn original(&self) -> Option<CodeRange> {
        CodeRange::from_bounds(self.orig_start.load(Ordering::Relaxed), self.orig_end.load(Ordering::Relaxed)).ok()
    }

    /// Whether the slot is unused.
    pub(crate) fn is_free(&self) -> bool {
        self.original().is_none()
    }

    /// The object the original function lives in, while the slot is claimed.
    pub fn object(&self) -> Option<ObjectId> {
        self.original().map(|_| ObjectId(self.object.load(Ordering::Relaxed)))
    }

    pub(crate) fn claim(&self, orig: CodeRange, object: ObjectId) {
        self.object.store(object.0, Ordering::Relaxed);
        self.orig_start.store(orig.start().get(), Ordering::Relaxed);
        self.orig_end.store(orig.end().get(), Ordering::Relaxed);
    }

    pub(crate) fn release(&self) {
        self.orig_start.store(0, Ordering::Relaxed);
        self.orig_end.store(0, Ordering::Relaxed);
        self.orig_away.store(false, Ordering::Relaxed);
    }

    /// The top of the func stack.
    ///
    /// `Acquire`: pairs with the `Release` in `push` and `unlink`,
    /// so the node's fields written before publication are visible.
    #[inline(always)]
    pub fn top(&self) -> Option<&'a FuncNode<'a>> {
        self.top.load(Ordering::Acquire)
    }

    /// Whether nothing is stacked.
    pub fn is_empty(&self) -> bool {
        self.top.load(Ordering::Relaxed).is_none()
    }

    /// The nodes of the stack, top first.
    pub fn iter(&self) -> impl Iterator<Item = &'a FuncNode<'a>> {
        let mut cur = self.top();
        core::iter::from_fn(move || {
            let node = cur?;
            // `Acquire`: pairs with the `Release` of `push`/`unlink` that linked `next`.
            cur = node.next.load(Ordering::Acquire);
            Some(node)
        })
    }

    /// The node directly below `node`, or `None` when the original function is below.
    pub(crate) fn below(&self, node: &FuncNode<'a>) -> Option<&'a FuncNode<'a>> {
        // `Acquire`: pairs with the `Release` of `push`/`unlink` that linked `next`.
        node.next.load(Ordering::Acquire)
    }

    /// Pushes `node` on top.
    ///
    /// `Release` on the head pairs with the `Acquire` in [`top`](Self::top): a reader that sees
    /// the node sees its `next` link and its `transition` flag as set before.
    pub(crate) fn push(&self, node: &'a FuncNode<'a>) {
        node.next.store(self.top.load(Ordering::Relaxed), Ordering::Relaxed);
        node.linked.store(true, Ordering::Relaxed);
        self.top.store(Some(node), Ordering::Release);
    }

    /// Unlinks `node` wherever it is in the stack; returns whether it was there.
    ///
    /// `Release` pairs with the readers' `Acquire` loads of the head and of `next` links.
    pub(crate) fn unlink(&self, node: &FuncNode<'a>) -> bool {
        let next = node.next.load(Ordering::Relaxed);
        if self.top.is(Some(node), Ordering::Relaxed) {
            self.top.store(next, Ordering::Release);
        } else {
            let Some(prev) = self.iter().find(|n| n.next.is(Some(node), Ordering::Relaxed)) else {
                return false;
            };
            prev.next.store(next, Ordering::Release);
        }
        node.linked.store(false, Ordering::Relaxed);
        true
    }
}

impl Default for FuncSlot<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FuncSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FuncSlot")
            .field("original", &self.original())
            .field("depth", &self.iter().count())
            .field("hooked", &self.hooked.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn push_and_unlink_keep_newest_on_top() {
        let a = FuncNode::new(CodeRange::new(0x100, 1).ok());
        let b = FuncNode::new(CodeRange::new(0x200, 1).ok());
        let c = FuncNode::new(CodeRange::new(0x300, 1).ok());
        let slot = FuncSlot::new();
        assert!(slot.is_free());
        slot.claim(CodeRange::new(0x10, 0x10).unwrap(), ObjectId::VMLINUX);
        assert_eq!(slot.original(), CodeRange::new(0x10, 0x10).ok());
        slot.push(&a);
        slot.push(&b);
        slot.push(&c);
        let order: [usize; 3] = core::array::from_fn(|i| slot.iter().nth(i).unwrap().code.unwrap().start().get());
        assert_eq!(order, [0x300, 0x200, 0x100]);
        assert!(slot.unlink(&b)); // from the middle
        assert_eq!(slot.iter().count(), 2);
        assert!(!b.linked.load(Ordering::Relaxed));
        assert!(slot.unlink(&c)); // from the top
        assert_eq!(slot.top().unwrap().code, a.code);
        assert!(slot.below(&a).is_none());
        assert!(!slot.unlink(&c)); // not there any more
        assert!(slot.unlink(&a));
        assert!(slot.is_empty());
        slot.release();
        assert!(slot.is_free());
    }

    #[test]
    fn a_claimed_slot_is_not_free_until_released() {
        // The engine hands a function a slot only if it is free: a claimed one must not be.
        let slot = FuncSlot::new();
        assert!(slot.is_free());
        assert_eq!((slot.original(), slot.object()), (None, None));
        let orig = CodeRange::new(0x4000, 0x20).unwrap();
        slot.claim(orig, ObjectId(3));
        assert!(!slot.is_free(), "a claimed slot, even with nothing stacked yet");
        assert_eq!((slot.original(), slot.object()), (Some(orig), Some(ObjectId(3))));
        slot.release();
        assert!(slot.is_free());
        assert_eq!((slot.original(), slot.object()), (None, None));
    }
}
