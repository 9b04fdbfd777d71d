//! Ports of the Linux 6.12 livepatch algorithms the benches compare against, written from their
//! description in `kernel/livepatch/{patch,transition}.c` (not copied):
//!
//! * the data: `struct klp_func` (with its `stack_node` in a func stack), `struct klp_ops` (one
//!   per patched original, on the global `klp_ops` list, with the `func_stack` list head), laid
//!   out field by field so the handler touches the same cache lines as in the kernel;
//! * [`klp_ftrace_handler`]: `list_first_or_null_rcu` on the func stack, `smp_rmb`, the
//!   `transition` flag, `current->patch_state`, `list_entry_rcu` of the next node, the `nop`
//!   check — minus ftrace's recursion guard, which is not part of the decision;
//! * [`KlpWorld::check_stack`] (`klp_check_stack`): save the reliable stack in the 100-entry
//!   buffer (a per-CPU array in the kernel, reused without clearing), then for every function of
//!   the patch in transition find its `klp_ops` by walking the `klp_ops` list (`klp_find_ops`),
//!   pick the code being switched away from and scan every saved frame — O(F·(N+D)).
//!
//! Every node is leaked, so every pointer in these lists stays valid for the whole process.

use livepatch_core::backend::{StackWalker, WalkError};
use livepatch_core::CodeRange;
use std::ops::ControlFlow;
use std::ptr;
use std::sync::atomic::{compiler_fence, Ordering};

/// `struct list_head`: a node of a circular doubly linked list.
#[repr(C)]
#[derive(Debug)]
pub struct ListHead {
    next: *mut ListHead,
    prev: *mut ListHead,
}

/// `struct klp_func`, field order as in the kernel (the kobject is a 64-byte block).
#[repr(C)]
#[derive(Debug)]
pub struct KlpFunc {
    old_name: *const u8,
    new_func: usize,
    old_sympos: u64,
    old_func: usize,
    kobj: [u64; 8],
    node: ListHead,
    stack_node: ListHead,
    old_size: u64,
    new_size: u64,
    nop: bool,
    patched: bool,
    transition: bool,
}

/// `struct klp_ops`: its node on the global list, its func stack, and the ftrace ops.
#[repr(C)]
#[derive(Debug)]
pub struct KlpOps {
    node: ListHead,
    func_stack: ListHead,
    fops: [u64; 16],
}

/// The part of `struct task_struct` the handler reads.
#[repr(C)]
#[derive(Debug)]
pub struct KTask {
    _before: [u64; 4],
    /// `KLP_TRANSITION_*`.
    pub patch_state: i32,
}

/// `KLP_TRANSITION_IDLE`.
pub const KLP_TRANSITION_IDLE: i32 = -1;
/// `KLP_TRANSITION_UNPATCHED`.
pub const KLP_TRANSITION_UNPATCHED: i32 = 0;
/// `KLP_TRANSITION_PATCHED`.
pub const KLP_TRANSITION_PATCHED: i32 = 1;

impl KTask {
    /// A task in `state`.
    pub fn new(state: i32) -> Self {
        Self { _before: [0; 4], patch_state: state }
    }
}

/// `container_of(node, struct klp_func, stack_node)`.
fn func_of(node: *mut ListHead) -> *mut KlpFunc {
    node.wrapping_byte_sub(std::mem::offset_of!(KlpFunc, stack_node)).cast()
}

/// `container_of(node, struct klp_ops, node)`.
fn ops_of(node: *mut ListHead) -> *mut KlpOps {
    node.wrapping_byte_sub(std::mem::offset_of!(KlpOps, node)).cast()
}

fn leak_head() -> *mut ListHead {
    let head = Box::into_raw(Box::new(ListHead { next: ptr::null_mut(), prev: ptr::null_mut() }));
    // SAFETY: `head` was just allocated and leaked; nobody else sees it yet.
    unsafe {
        (*head).next = head;
        (*head).prev = head;
    }
    head
}

/// `list_add`: inserts `new` right after `head`.
///
/// # Safety
///
/// `head` is on a well-formed list of leaked nodes and `new` is a leaked node on no list.
unsafe fn list_add(new: *mut ListHead, head: *mut ListHead) {
    // SAFETY: the caller guarantees both nodes are valid and the list is well formed.
    unsafe {
        let next = (*head).next;
        (*next).prev = new;
        (*new).next = next;
        (*new).prev = head;
        (*head).next = new;
    }
}

/// The kernel's livepatch state: the global `klp_ops` list and every `klp_func` and `klp_ops`
/// created on it.
///
/// # Invariants
///
/// Every pointer reachable from `klp_ops` and from [`KlpPatch`]es made by this world points to a
/// leaked, never freed node, and every list is well formed.
#[derive(Debug)]
pub struct KlpWorld {
    klp_ops: *mut ListHead,
    /// The saved stack (`klp_stack_entries`: in 6.12 a per-CPU array, not cleared per check).
    entries: std::cell::RefCell<[usize; MAX_STACK_ENTRIES]>,
}

/// `MAX_STACK_ENTRIES`.
pub const MAX_STACK_ENTRIES: usize = 100;

/// The functions of one patch, in patch order.
#[derive(Debug, Default)]
pub struct KlpPatch {
    funcs: Vec<*mut KlpFunc>,
}

impl Default for KlpWorld {
    fn default() -> Self {
        Self::new()
    }
}

impl KlpWorld {
    /// An empty world.
    pub fn new() -> Self {
        // INVARIANT: the head is leaked and self-linked.
        Self { klp_ops: leak_head(), entries: std::cell::RefCell::new([0; MAX_STACK_ENTRIES]) }
    }

    /// `klp_patch_func`: pushes a func (replacing `old` by `new`; `None` is a nop) on the func
    /// stack of `old`, creating its `klp_ops` at the head of the global list if needed.
    pub fn patch_func(&mut self, patch: &mut KlpPatch, old: CodeRange, new: Option<CodeRange>) {
        let func = Box::into_raw(Box::new(KlpFunc {
            old_name: ptr::null(),
            // A nop's `new_func` is the original (`klp_init_object_loaded`).
            new_func: new.unwrap_or(old).start().get(),
            old_sympos: 0,
            old_func: old.start().get(),
            kobj: [0; 8],
            node: ListHead { next: ptr::null_mut(), prev: ptr::null_mut() },
            stack_node: ListHead { next: ptr::null_mut(), prev: ptr::null_mut() },
            old_size: old.len() as u64,
            new_size: new.unwrap_or(old).len() as u64,
            nop: new.is_none(),
            patched: true,
            transition: false,
        }));
        let ops = match self.find_ops(old.start().get()) {
            Some(ops) => ops,
            None => {
                let ops = Box::into_raw(Box::new(KlpOps {
                    node: ListHead { next: ptr::null_mut(), prev: ptr::null_mut() },
                    func_stack: ListHead { next: ptr::null_mut(), prev: ptr::null_mut() },
                    fops: [0; 16],
                }));
                // SAFETY: `ops` is leaked and on no list; `klp_ops` is well formed (invariant).
                unsafe {
                    let stack = ptr::addr_of_mut!((*ops).func_stack);
                    (*stack).next = stack;
                    (*stack).prev = stack;
                    list_add(ptr::addr_of_mut!((*ops).node), self.klp_ops);
                }
                ops
            }
        };
        // INVARIANT: `func` is leaked and pushed on a well-formed list.
        // SAFETY: `func` and `ops` are leaked nodes (invariant); `list_add_rcu` = `list_add` here.
        unsafe { list_add(ptr::addr_of_mut!((*func).stack_node), ptr::addr_of_mut!((*ops).func_stack)) };
        patch.funcs.push(func);
    }

    /// Sets `transition` on every func of `patch` (`klp_init_transition`).
    pub fn set_transition(&mut self, patch: &KlpPatch, on: bool) {
        for &f in &patch.funcs {
            // SAFETY: `f` is a leaked func of this world (invariant) and `&mut self` excludes
            // concurrent readers.
            unsafe { (*f).transition = on };
        }
    }

    /// `klp_find_ops`: walks the global list for the ops whose top func replaces `old_func`.
    pub fn find_ops(&self, old_func: usize) -> Option<*mut KlpOps> {
        // SAFETY: every node on `klp_ops` is a leaked `KlpOps` and every func stack of a listed
        // ops is non-empty (invariant), so each `container_of` and dereference is valid.
        unsafe {
            let mut node = (*self.klp_ops).next;
            while node != self.klp_ops {
                let ops = ops_of(node);
                let func = func_of((*ops).func_stack.next);
                if (*func).old_func == old_func {
                    return Some(ops);
                }
                node = (*node).next;
            }
        }
        None
    }

    /// The ops of the func stack of the original function `old` (for the handler bench).
    ///
    /// The reference borrows the world: [`patch_func`](Self::patch_func) writes the ops'
    /// list heads, so no reference to an ops may live across it.
    ///
    /// ```compile_fail,E0502
    /// use livepatch_benches::kernel::{KlpPatch, KlpWorld};
    /// use livepatch_core::CodeRange;
    /// let old = CodeRange::new(0x1000, 64).unwrap();
    /// let (mut world, mut p) = (KlpWorld::new(), KlpPatch::default());
    /// world.patch_func(&mut p, old, Some(CodeRange::new(0x2000, 64).unwrap()));
    /// let ops = world.ops_for(old);
    /// // Pushes a func on `ops.func_stack`: a write to the ops while `ops` is shared.
    /// world.patch_func(&mut p, old, None);
    /// let _ = ops;
    /// ```
    pub fn ops_for(&self, old: CodeRange) -> &KlpOps {
        let ops = self.find_ops(old.start().get()).expect("patched");
        // SAFETY: `ops` is a leaked `KlpOps` that lives for the whole process (invariant), and
        // only `&mut self` methods write an ops: none runs while the world is borrowed here.
        unsafe { &*ops }
    }

    /// `klp_check_stack_func`: whether any of `entries` is in the code `func` switches away from.
    #[inline]
    fn check_stack_func(&self, func: *mut KlpFunc, entries: &[usize], target_patched: bool) -> bool {
        // SAFETY: `func` is a leaked func of this world and its ops is listed (invariant).
        let (addr, size) = unsafe {
            if !target_patched {
                ((*func).new_func, (*func).new_size as usize)
            } else {
                let ops = self.find_ops((*func).old_func).expect("patched func has ops");
                let stack = ptr::addr_of_mut!((*ops).func_stack);
                // list_is_singular: one entry on the func stack.
                if (*stack).next != stack && (*stack).next == (*stack).prev {
                    ((*func).old_func, (*func).old_size as usize)
                } else {
                    let prev = func_of((*func).stack_node.next);
                    ((*prev).new_func, (*prev).new_size as usize)
                }
            }
        };
        entries.iter().any(|&a| a >= addr && a < addr + size)
    }

    /// `klp_check_stack`: saves the task's stack (at most 100 entries) and checks it against
    /// every func of `patch`. `Ok(true)`: the task may switch.
    pub fn check_stack<W: StackWalker>(
        &self,
        patch: &KlpPatch,
        walker: &W,
        task: &W::Task,
        target_patched: bool,
    ) -> Result<bool, WalkError<W::Error>> {
        // The per-CPU buffer, reused: only the first `n` entries are read.
        let mut entries = self.entries.borrow_mut();
        let mut n = 0;
        walker.walk(task, MAX_STACK_ENTRIES, |addr| {
            entries[n] = addr.get();
            n += 1;
            ControlFlow::Continue(())
        })?;
        let entries = &entries[..n];
        Ok(!patch.funcs.iter().any(|&f| self.check_stack_func(f, entries, target_patched)))
    }
}

/// `klp_ftrace_handler`'s decision: the address to jump to, or `None` to run the original.
#[inline(always)]
pub fn klp_ftrace_handler(ops: &KlpOps, current: &KTask) -> Option<usize> {
    let head = ptr::addr_of!(ops.func_stack).cast_mut();
    // SAFETY: the func stack is a well-formed list of leaked funcs (`KlpWorld` invariant), so
    // every node read is valid and `container_of` yields a live `KlpFunc`.
    unsafe {
        // list_first_or_null_rcu: READ_ONCE(head->next), NULL if the list is empty.
        let first = ptr::read_volatile(ptr::addr_of!((*head).next));
        if first == head {
            return None; // WARN_ON_ONCE(!func)
        }
        let mut func = func_of(first);
        // smp_rmb(): a compiler barrier on x86.
        compiler_fence(Ordering::SeqCst);
        if (*func).transition {
            compiler_fence(Ordering::SeqCst);
            let patch_state = current.patch_state;
            if patch_state == KLP_TRANSITION_UNPATCHED {
                // list_entry_rcu(func->stack_node.next, ...)
                let next = ptr::read_volatile(ptr::addr_of!((*func).stack_node.next));
                if next == head {
                    return None;
                }
                func = func_of(next);
            }
        }
        if (*func).nop {
            return None;
        }
        Some((*func).new_func)
    }
}
