//! The decision an ftrace-style handler makes on every call of a patched function: run the
//! original, or jump to a variant.
//!
//! This is the hottest path in the system. It takes no lock and does no read-modify-write:
//!
//! 1. load the top of the func stack (`Acquire`, pairs with the `Release` push/unlink in
//!    [`crate::func_stack`]);
//! 2. load the top node's `transition` flag (`Acquire`, pairs with the engine's `Release`
//!    store that sets it *after* writing every task's initial state — the kernel's
//!    `smp_wmb()` in `klp_init_transition`, read behind its second `smp_rmb()`);
//! 3. only in transition: load the current task's state (`Relaxed`: ordered by step 2) and, if
//!    the task is unpatched, the node below (`Acquire`, pairs with the push that linked it);
//! 4. a nop variant means "run the original".
//!
//! Outside a transition that is two dependent loads on two cache lines (slot, node).

use crate::addr::CodeAddr;
use crate::func_stack::FuncSlot;
use crate::patch::FuncNode;
use crate::state::{PatchState, TaskPatchState};
use crate::sync::Ordering;

/// Where a call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Redirect {
    /// Run the original function (nothing patched, a nop, or the task is unpatched and
    /// nothing is below).
    Original,
    /// Jump to the variant at this address.
    Variant(CodeAddr),
}

/// What the handler saw, for oracles and models (the hot path ignores it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The top node was in transition.
    pub in_transition: bool,
    /// The task's state, if it was read (only in transition).
    pub task_state: Option<PatchState>,
}

#[inline(always)]
fn target(node: Option<&FuncNode<'_>>) -> Redirect {
    match node {
        Some(n) if n.entry != 0 => Redirect::Variant(CodeAddr(n.entry)),
        _ => Redirect::Original,
    }
}

/// The per-task decision (the kernel's `klp_ftrace_handler`), with what it observed.
#[inline(always)]
pub fn per_task_observed(slot: &FuncSlot<'_>, task: &TaskPatchState) -> (Redirect, Observed) {
    per_task_lazy_observed(slot, || task)
}

/// The per-task decision for a task whose word is only looked up when it is needed — in a
/// transition of this function. A hook that must find the current task's word (a table
/// lookup in a kernel module) pays for it only then, like `klp_ftrace_handler`, which reads
/// `current->patch_state` only behind the transition flag.
#[inline(always)]
pub fn per_task_lazy<'t>(slot: &FuncSlot<'_>, task: impl FnOnce() -> &'t TaskPatchState) -> Redirect {
    per_task_lazy_observed(slot, task).0
}

#[inline(always)]
fn per_task_lazy_observed<'t>(slot: &FuncSlot<'_>, task: impl FnOnce() -> &'t TaskPatchState) -> (Redirect, Observed) {
    match settled(slot) {
        Ok(to) => (to, Observed { in_transition: false, task_state: None }),
        Err(top) => {
            let (to, state) = per_task_in_transition_observed(top, task);
            (to, Observed { in_transition: true, task_state: Some(state) })
        }
    }
}

/// Steps 1 and 2 alone: `Ok` with the decision when the function is not in transition (the
/// top variant, or the original when nothing is stacked or the top is a nop) — the same for
/// every model and every task — or `Err` with the top node when it is in transition, for
/// [`per_task_in_transition`] (or [`call_chain_in_transition`]) to finish.
///
/// A handler split in two (the Linux module answers this part in its C ftrace handler and
/// calls Rust only in transition) makes exactly these loads, with these orderings, at the
/// offsets [`SLOT_TOP_OFFSET`], [`NODE_TRANSITION_OFFSET`] and [`NODE_ENTRY_OFFSET`].
#[inline(always)]
pub fn settled<'a>(slot: &FuncSlot<'a>) -> Result<Redirect, &'a FuncNode<'a>> {
    // Step 1: `Acquire`, see `FuncSlot::top`.
    let Some(top) = slot.top() else {
        return Ok(Redirect::Original);
    };
    // Step 2: `Acquire` pairs with the engine's `Release` stores of the flag.
    if top.transition.load(Ordering::Acquire) {
        Err(top)
    } else {
        Ok(target(Some(top)))
    }
}

/// Steps 3 and 4 of the per-task decision, for the top node [`settled`] found in transition:
/// the task's word is looked up (once) and picks the top or the node below.
#[inline(always)]
pub fn per_task_in_transition<'t>(top: &FuncNode<'_>, task: impl FnOnce() -> &'t TaskPatchState) -> Redirect {
    per_task_in_transition_observed(top, task).0
}

#[inline(always)]
fn per_task_in_transition_observed<'t>(
    top: &FuncNode<'_>,
    task: impl FnOnce() -> &'t TaskPatchState,
) -> (Redirect, PatchState) {
    // Step 3: `Relaxed`, ordered by the `Acquire` load of the flag in `settled`.
    let state = task().load(Ordering::Relaxed).state;
    let node = match state {
        // Step 4: `Acquire` pairs with the `Release` push that linked the node below.
        PatchState::Unpatched => top.next.load(Ordering::Acquire),
        // `Idle` during a transition would be an engine bug (the kernel WARNs); the patched
        // universe is the safe reading because the flag is cleared before tasks go idle.
        PatchState::Patched | PatchState::Idle => Some(top),
    };
    (target(node), state)
}

/// Offset of the func stack's top (`Option<&FuncNode>`, a pointer, null for `None`) in a
/// [`FuncSlot`]: what step 1 of [`settled`] loads. For a handler written in C, which declares
/// the layout and checks it against these constants at build time.
#[cfg(not(loom))]
pub const SLOT_TOP_OFFSET: usize = core::mem::offset_of!(FuncSlot<'static>, top);
/// Offset of a [`FuncNode`]'s transition flag (one byte, 0 or 1): step 2 of [`settled`].
#[cfg(not(loom))]
pub const NODE_TRANSITION_OFFSET: usize = core::mem::offset_of!(FuncNode<'static>, transition);
/// Offset of a [`FuncNode`]'s entry address (`usize`, 0 for a nop): the decision outside a
/// transition.
#[cfg(not(loom))]
pub const NODE_ENTRY_OFFSET: usize = core::mem::offset_of!(FuncNode<'static>, entry);

// The layout those offsets describe: a nullable pointer, a byte, a `usize`.
#[cfg(not(loom))]
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<crate::sync::AtomicRef<'static, FuncNode<'static>>>() == size_of::<usize>());
    assert!(size_of::<crate::sync::AtomicBool>() == 1);
};

/// The per-task decision.
#[inline(always)]
pub fn per_task(slot: &FuncSlot<'_>, task: &TaskPatchState) -> Redirect {
    per_task_observed(slot, task).0
}

/// The call-chain decision when patching: in transition, a call from code being switched
/// away from (`caller_is_old`) continues the old chain; any other call takes the new code.
/// See [`call_chain_towards`] for either direction.
#[inline(always)]
pub fn call_chain(slot: &FuncSlot<'_>, caller_is_old: impl FnOnce() -> bool) -> Redirect {
    match settled(slot) {
        Ok(to) => to,
        Err(top) => call_chain_in_transition(top, Some(PatchState::Patched), caller_is_old),
    }
}

/// The call-chain decision towards `target`: in transition, a call from code being switched
/// away from (`caller_is_old`) continues the old chain; any other call takes the code of the
/// target universe. When unpatching, the new code is the node *below* the top (the top is
/// what is being removed), so the patching-only [`call_chain`] would keep sending fresh call
/// chains into the code being removed — found by the mock's release check (a disable of a
/// cumulative patch completed while a task still ran the removed variant).
#[inline(always)]
pub fn call_chain_towards(
    slot: &FuncSlot<'_>,
    towards: Option<PatchState>,
    caller_is_old: impl FnOnce() -> bool,
) -> Redirect {
    match settled(slot) {
        Ok(to) => to,
        Err(top) => call_chain_in_transition(top, towards, caller_is_old),
    }
}

/// [`call_chain_towards`] for the top node [`settled`] found in transition.
#[inline(always)]
pub fn call_chain_in_transition(
    top: &FuncNode<'_>,
    towards: Option<PatchState>,
    caller_is_old: impl FnOnce() -> bool,
) -> Redirect {
    // Patching continues the old chain below the top; unpatching sends new chains there.
    let below = if towards == Some(PatchState::Unpatched) { !caller_is_old() } else { caller_is_old() };
    if below {
        // Step 4 of the module documentation, with the same pairing.
        return target(top.next.load(Ordering::Acquire));
    }
    target(Some(top))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::addr::CodeRange;

    fn node<'a>(start: usize) -> FuncNode<'a> {
        FuncNode::new(CodeRange::new(start, 0x10).ok())
    }

    #[test]
    fn the_lazy_decision_reads_the_task_only_in_transition() {
        let a = node(0x9000);
        let slot = FuncSlot::new();
        slot.push(&a);
        let task = TaskPatchState::new();
        let mut asked = 0;
        assert_eq!(
            per_task_lazy(&slot, || {
                asked += 1;
                &task
            }),
            Redirect::Variant(CodeAddr(0x9000))
        );
        assert_eq!(asked, 0, "no transition: the task word is not looked up");
        a.transition.store(true, Ordering::Relaxed);
        task.reset(PatchState::Unpatched);
        assert_eq!(
            per_task_lazy(&slot, || {
                asked += 1;
                &task
            }),
            Redirect::Original
        );
        assert_eq!(asked, 1, "in transition: looked up once");
        let empty = FuncSlot::new();
        assert_eq!(per_task_lazy(&empty, || unreachable!("nothing patched")), Redirect::Original);
    }

    #[test]
    fn a_held_slot_is_decided_by_the_engines_model() {
        use crate::model::{Model, Policy};
        use crate::patched_set::IndexBuffer;
        use crate::transition::Live;
        let a = node(0x9000);
        let slots = [FuncSlot::new()];
        a.transition.store(true, Ordering::Release);
        slots[0].push(&a);
        let task = TaskPatchState::new();
        task.reset(PatchState::Unpatched);
        let per_task = Live::from_parts(&slots, IndexBuffer::EMPTY, IndexBuffer::EMPTY, Policy::IMPROVED);
        assert!(Model::PerTask.redirects_per_task() && !Model::CallChain.redirects_per_task());
        assert_eq!(per_task.redirect_slot(&slots[0], || &task, CodeAddr(0)), Redirect::Original);
        assert_eq!(
            per_task.redirect_slot(&slots[0], || &task, CodeAddr(0)),
            per_task.redirect_current(crate::SlotId(0), || &task, CodeAddr(0))
        );
        let chain = Live::from_parts(
            &slots,
            IndexBuffer::EMPTY,
            IndexBuffer::EMPTY,
            Policy { model: Model::CallChain, ..Policy::IMPROVED },
        );
        assert_eq!(
            chain.redirect_slot(&slots[0], || unreachable!("no task word in the call-chain model"), CodeAddr(0)),
            Redirect::Variant(CodeAddr(0x9000)),
            "a caller outside the code being switched away from takes the new code"
        );
    }

    #[test]
    fn no_stack_runs_the_original() {
        let slot = FuncSlot::new();
        let task = TaskPatchState::new();
        assert_eq!(per_task(&slot, &task), Redirect::Original);
        assert_eq!(call_chain(&slot, || true), Redirect::Original);
    }

    #[test]
    fn outside_a_transition_the_top_variant_runs() {
        let a = node(0x9000);
        let slot = FuncSlot::new();
        slot.push(&a);
        let task = TaskPatchState::new();
        let (r, seen) = per_task_observed(&slot, &task);
        assert_eq!(r, Redirect::Variant(CodeAddr(0x9000)));
        assert_eq!(seen, Observed { in_transition: false, task_state: None });
    }

    #[test]
    fn in_transition_the_task_state_picks_the_variant() {
        let a = node(0x9000);
        let b = node(0xa000);
        let slot = FuncSlot::new();
        slot.push(&a);
        b.transition.store(true, Ordering::Release);
        slot.push(&b);
        let task = TaskPatchState::new();
        task.reset(PatchState::Unpatched);
        assert_eq!(per_task(&slot, &task), Redirect::Variant(CodeAddr(0x9000)));
        task.reset(PatchState::Patched);
        assert_eq!(per_task(&slot, &task), Redirect::Variant(CodeAddr(0xa000)));
        // Unpatched with nothing below: the original.
        let only = FuncSlot::new();
        let c = node(0xb000);
        c.transition.store(true, Ordering::Release);
        only.push(&c);
        task.reset(PatchState::Unpatched);
        assert_eq!(per_task(&only, &task), Redirect::Original);
    }

    #[test]
    fn settled_answers_exactly_the_calls_outside_a_transition() {
        let a = node(0x9000);
        let b = node(0xa000);
        let nop = FuncNode::new(None);
        let slot = FuncSlot::new();
        let task = TaskPatchState::new();
        let variant = |at| Redirect::Variant(CodeAddr(at));
        assert_eq!(settled(&slot).ok(), Some(Redirect::Original), "nothing stacked");
        slot.push(&a);
        assert_eq!(settled(&slot).ok(), Some(variant(0x9000)));
        // In transition: the top is handed on, and the task's word picks the node.
        for (top, patched) in [(&b, variant(0xa000)), (&nop, Redirect::Original)] {
            top.transition.store(true, Ordering::Release);
            slot.push(top);
            let Err(found) = settled(&slot) else { panic!("a node in transition was answered without the task") };
            assert!(core::ptr::eq(found, top));
            task.reset(PatchState::Unpatched);
            assert_eq!(per_task_in_transition(found, || &task), variant(0x9000), "unpatched: the node below");
            task.reset(PatchState::Patched);
            assert_eq!(per_task_in_transition(found, || &task), patched, "patched: the top");
            top.transition.store(false, Ordering::Release);
            assert_eq!(settled(&slot).ok(), Some(patched), "after the transition: the top, for everyone");
            slot.unlink(top);
        }
    }

    #[test]
    fn a_nop_runs_the_original() {
        let a = node(0x9000);
        let nop = FuncNode::new(None);
        let slot = FuncSlot::new();
        slot.push(&a);
        nop.transition.store(true, Ordering::Release);
        slot.push(&nop);
        let task = TaskPatchState::new();
        task.reset(PatchState::Patched);
        assert_eq!(per_task(&slot, &task), Redirect::Original);
        task.reset(PatchState::Unpatched);
        assert_eq!(per_task(&slot, &task), Redirect::Variant(CodeAddr(0x9000)));
    }

    #[test]
    fn call_chain_towards_unpatched_keeps_new_chains_off_the_removed_code() {
        let a = node(0x9000);
        let slot = FuncSlot::new();
        a.transition.store(true, Ordering::Release);
        slot.push(&a);
        let un = Some(PatchState::Unpatched);
        assert_eq!(call_chain_towards(&slot, un, || false), Redirect::Original);
        assert_eq!(call_chain_towards(&slot, un, || true), Redirect::Variant(CodeAddr(0x9000)));
        let on = Some(PatchState::Patched);
        assert_eq!(call_chain_towards(&slot, on, || false), Redirect::Variant(CodeAddr(0x9000)));
        a.transition.store(false, Ordering::Release);
        assert_eq!(call_chain_towards(&slot, un, || false), Redirect::Variant(CodeAddr(0x9000)));
    }

    #[test]
    fn call_chain_follows_the_caller() {
        let a = node(0x9000);
        let slot = FuncSlot::new();
        a.transition.store(true, Ordering::Release);
        slot.push(&a);
        assert_eq!(call_chain(&slot, || true), Redirect::Original);
        assert_eq!(call_chain(&slot, || false), Redirect::Variant(CodeAddr(0x9000)));
        a.transition.store(false, Ordering::Release);
        assert_eq!(call_chain(&slot, || true), Redirect::Variant(CodeAddr(0x9000)));
    }
}
