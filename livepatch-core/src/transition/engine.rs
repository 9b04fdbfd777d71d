use super::events::{Event, Events};
use super::live::Live;
use crate::addr::CodeRange;
use crate::backend::{Backend, Scheduler, Task, TaskCursor, TaskFlags, TaskKind};
use crate::error::Error;
use crate::func_stack::FuncSlot;
use crate::ids::{ObjectId, PatchId, SlotId};
use crate::patch::{CallbackContext, FuncNode, Object, Patch, PatchAdapter};
use crate::state::PatchState;
use crate::sweep::{FuncName, PassSummary, StallReason, Straggler};
use crate::sync::Ordering;
use core::fmt;
use intrusive_collections::LinkedList;

mod complete;
mod enable;
mod kick;
mod objects;
mod unpatch;

/// What a completion attempt achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every task switched; the transition is complete and the engine is idle.
    Complete(PassSummary),
    /// Some tasks have not switched; a retry was scheduled.
    Pending(PassSummary),
    /// The attempt gave up. Stop-the-world: every attempt failed, so the transition was
    /// cancelled and every task stays where it started (no transition is left). The freezer
    /// model: a frozen task was still on the patched path, or the attempts ran out; every
    /// task was thawed and the transition *reversed* — it is still in progress, towards the
    /// start universe, and completes through further attempts.
    GaveUp(PassSummary),
}

impl Progress {
    /// The attempt's summary.
    pub fn summary(&self) -> &PassSummary {
        match self {
            Progress::Complete(s) | Progress::Pending(s) | Progress::GaveUp(s) => s,
        }
    }

    /// Whether every task reached the target and the transition completed. `false` for
    /// [`Pending`](Progress::Pending) and for [`GaveUp`](Progress::GaveUp) (stop-the-world
    /// cancelled the transition: every task stays where it started; the freezer reversed it).
    pub fn is_complete(&self) -> bool {
        matches!(self, Progress::Complete(_))
    }

    /// Whether the transition is still in progress (a retry was scheduled).
    pub fn is_pending(&self) -> bool {
        matches!(self, Progress::Pending(_))
    }
}

/// The transition in progress, as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransitionInfo {
    /// The patch in transition.
    pub patch: PatchId,
    /// The universe every task must reach.
    pub target: PatchState,
    /// Completion attempts so far in this direction.
    pub passes: u32,
    /// When it started (scheduler clock).
    pub started_ns: u64,
    /// Whether it has been reversed at least once.
    pub reversed: bool,
}

#[derive(Clone, Copy)]
struct Transition<'a> {
    patch: &'a Patch<'a>,
    target: PatchState,
    passes: u32,
    started_ns: u64,
    reversed: bool,
    /// The freezer model found a frozen task still on the patched path: freezing cannot help
    /// this transition any more (its stragglers are kicked instead).
    freeze_blocked: bool,
    /// Which attempts kick, and the backoff for stragglers a kick did not move.
    kicks: kick::KickPacer,
}

/// The transition engine: the single writer. See the [module documentation](super).
pub struct Engine<'a> {
    live: &'a Live<'a>,
    patches: LinkedList<PatchAdapter<'a>>,
    transition: Option<Transition<'a>>,
    hook_errors: u32,
    events: Option<&'a dyn Events>,
}

impl<'a> Engine<'a> {
    /// An idle engine writing to `live`.
    pub fn new(live: &'a Live<'a>) -> Self {
        Self { live, patches: LinkedList::new(PatchAdapter::new()), transition: None, hook_errors: 0, events: None }
    }

    /// Sends every later [`Event`] to `events` (the kernel's livepatch log messages).
    pub fn set_events(&mut self, events: &'a dyn Events) {
        self.events = Some(events);
    }

    fn emit(&self, event: Event<'_>) {
        if let Some(events) = self.events {
            events.event(&event);
        }
    }

    /// The read side.
    pub fn live(&self) -> &'a Live<'a> {
        self.live
    }

    /// The transition in progress.
    pub fn transition(&self) -> Option<TransitionInfo> {
        self.transition.map(|t| TransitionInfo {
            patch: t.patch.id(),
            target: t.target,
            passes: t.passes,
            started_ns: t.started_ns,
            reversed: t.reversed,
        })
    }

    /// The registered patches (enabled, or in transition), oldest first.
    pub fn patches(&self) -> impl Iterator<Item = &Patch<'a>> {
        self.patches.iter()
    }

    /// Hook removals the backend refused (the slot then stays hooked, running the original).
    pub fn hook_errors(&self) -> u32 {
        self.hook_errors
    }

    fn batch(&self) -> usize {
        self.live.policy().batch
    }

    /// The `i`-th registered patch.
    fn nth_patch(&self, i: usize) -> Option<&'a Patch<'a>> {
        let mut cursor = self.patches.front();
        for _ in 0..i {
            cursor.move_next();
        }
        cursor.clone_pointer()
    }

    fn context<'c>(&'c self, patch: &'a Patch<'a>, obj: &Object<'a>) -> CallbackContext<'c, 'a> {
        CallbackContext { patch, object: obj.id(), installed: &self.patches }
    }

    /// Empties the stall reports' name cache of every slot: a completion attempt starts (the
    /// patch list or a function's range may have changed since the last one).
    fn forget_names(&self) {
        // `Relaxed`: only the engine reads and writes the cache (see `FuncSlot::named`).
        self.live.slots().iter().for_each(|s| s.named.store(false, Ordering::Relaxed));
    }

    fn is_registered_here(&self, patch: &Patch<'a>) -> bool {
        self.patches.iter().any(|p| core::ptr::eq(p, patch))
    }

    /// Marks the code being switched away from, per func of `patch` (and its nops): when
    /// patching, whatever is below the patch's node; when unpatching, the node itself. Sets
    /// the bounds and the page bits used as a pre-filter.
    fn mark_away(&self, patch: &Patch<'a>, target: PatchState) {
        let (mut lo, mut hi) = self.live.away_bounds();
        if lo >= hi {
            (lo, hi) = (usize::MAX, 0);
        }
        let mut mark = |slot: &FuncSlot<'a>, node: Option<&FuncNode<'a>>| {
            let code = match node.and_then(|n| n.code) {
                Some(code) => {
                    if let Some(n) = node {
                        n.away.store(true, Ordering::Relaxed);
                    }
                    code
                }
                None => {
                    slot.orig_away.store(true, Ordering::Relaxed);
                    match slot.original() {
                        Some(orig) => orig,
                        None => return,
                    }
                }
            };
            lo = lo.min(code.start().get());
            hi = hi.max(code.end().get());
            self.live.mark_away_pages(code);
        };
        let mut visit = |slot: &'a FuncSlot<'a>, node: &'a FuncNode<'a>| match target {
            PatchState::Patched => mark(slot, slot.below(node)),
            _ => mark(slot, Some(node)),
        };
        for (_, f) in patch.funcs() {
            if f.node.linked.load(Ordering::Relaxed) {
                if let Some((_, slot)) = f.old().and_then(|old| self.find_slot(old)) {
                    visit(slot, &f.node);
                }
            }
        }
        for slot in self.live.slots() {
            if slot.nop.linked.load(Ordering::Relaxed) && slot.nop.owner() == patch.id() {
                visit(slot, &slot.nop);
            }
        }
        if lo < hi {
            self.live.set_away_bounds(lo, hi);
        }
    }

    fn clear_away(&self) {
        for slot in self.live.slots() {
            slot.orig_away.store(false, Ordering::Relaxed);
            for node in slot.iter() {
                node.away.store(false, Ordering::Relaxed);
            }
        }
        self.live.set_away_bounds(0, 0);
        self.live.clear_away_pages();
    }

    fn find_slot(&self, old: CodeRange) -> Option<(SlotId, &'a FuncSlot<'a>)> {
        find_slot(self.live, old)
    }

    fn slot_for(&self, old: CodeRange, object: ObjectId) -> Option<(SlotId, &'a FuncSlot<'a>)> {
        if let Some(found) = self.find_slot(old) {
            return Some(found);
        }
        let (i, slot) =
            self.live.slots().iter().enumerate().find(|(_, s)| s.is_free() && !s.hooked.load(Ordering::Relaxed))?;
        slot.claim(old, object);
        Some((SlotId(i as u32), slot))
    }

    fn publish<B: Backend>(&self, b: &B) -> Result<(), Error> {
        self.live.patched_set().rebuild(self.live.slots(), || b.scheduler().synchronize())?;
        Ok(())
    }
}

fn find_slot<'a>(live: &'a Live<'a>, old: CodeRange) -> Option<(SlotId, &'a FuncSlot<'a>)> {
    let slots = live.slots();
    // The index knows every published slot; slots claimed since the last publication are
    // found by a scan.
    if let Some(hit) = live.patched_set().lookup(old.start()) {
        if let Some(slot) = slots.get(hit.slot().0 as usize) {
            if hit.node.is_none() && hit.range == old && slot.original() == Some(old) {
                return Some((hit.slot(), slot));
            }
        }
    }
    slots.iter().enumerate().find(|(_, s)| s.original() == Some(old)).map(|(i, s)| (SlotId(i as u32), s))
}

fn unpatch_object<'a>(live: &'a Live<'a>, obj: &Object<'a>) {
    for f in obj.funcs() {
        if let Some(old) = f.old() {
            unpatch_func(live, old, &f.node);
        }
    }
    obj.patched.store(false, Ordering::Relaxed);
}

fn unpatch_func<'a>(live: &'a Live<'a>, old: CodeRange, node: &FuncNode<'a>) {
    if let Some((_, slot)) = find_slot(live, old) {
        slot.unlink(node);
    }
    // The `transition` flag stays: a handler may still hold this node (it read the top before
    // the unlink) and must keep consulting its task's universe. `complete` clears it after a
    // grace period.
    node.away.store(false, Ordering::Relaxed);
}

/// The name and object of the function a stall reason blames, from the registered patches
/// that replace it (the slot and ranges alone do not name it): the first such function in
/// patch-list order. The answer is cached in the blamed slot for the rest of the completion
/// attempt ([`Engine::forget_names`] starts each attempt), so a pass in which many tasks are
/// blocked searches the patches once per blamed function, not once per task.
fn func_name<'a>(
    patches: &LinkedList<PatchAdapter<'a>>,
    slots: &'a [FuncSlot<'a>],
    reason: StallReason,
) -> Option<FuncName<'a>> {
    let StallReason::OnStack { slot, function, .. } = reason else {
        return None;
    };
    let search = || patches.iter().find_map(|p| p.funcs().find(|(_, f)| f.old() == Some(function)));
    // `Relaxed`: only the engine reads and writes the cache (see `FuncSlot::named`).
    let found = match slots.get(slot.0 as usize).filter(|s| s.original() == Some(function)) {
        Some(s) if s.named.load(Ordering::Relaxed) => {
            s.name_object.load(Ordering::Relaxed).zip(s.name_func.load(Ordering::Relaxed))
        }
        Some(s) => {
            let found = search();
            s.name_object.store(found.map(|(o, _)| o), Ordering::Relaxed);
            s.name_func.store(found.map(|(_, f)| f), Ordering::Relaxed);
            s.named.store(true, Ordering::Relaxed);
            found
        }
        None => search(),
    };
    found.map(|(o, f)| FuncName { object: o.name(), function: f.name() })
}

fn straggler<'a, T: Task>(
    patches: &LinkedList<PatchAdapter<'a>>,
    slots: &'a [FuncSlot<'a>],
    task: &T,
    reason: StallReason,
    kicked: bool,
) -> Straggler<'a> {
    Straggler {
        task: task.id(),
        kind: task.kind(),
        flags: task.flags(),
        reason,
        kicked,
        name: func_name(patches, slots, reason),
    }
}

fn skip_exiting<T: Task>(policy: &crate::model::Policy, task: &T) -> bool {
    !policy.visit_exiting && task.flags().contains(TaskFlags::EXITING)
}

/// Whether a straggler is worth kicking: user tasks get a fake signal, kthreads and idle
/// CPUs a wake-up; a running task or one that ignores signals is left alone.
fn wants_kick<T: Task>(task: &T, reason: StallReason) -> bool {
    if reason == StallReason::Running && task.kind() != TaskKind::User {
        return false;
    }
    !task.flags().contains(TaskFlags::IGNORES_SIGNALS)
}

/// Whether the freezer model asks a straggler to freeze: user tasks and freezable kthreads.
fn wants_freeze<T: Task>(task: &T) -> bool {
    match task.kind() {
        TaskKind::User => true,
        TaskKind::Kthread => task.flags().contains(TaskFlags::FREEZABLE),
        TaskKind::Idle(_) => false,
    }
}

/// Visits every task, at most `batch` per task-list lock hold.
fn for_all_tasks<B: Backend>(b: &B, batch: usize, mut f: impl FnMut(&B::Task)) {
    let sched = b.scheduler();
    let mut cursor = TaskCursor::default();
    while let Some(next) = sched.for_each_task(cursor, batch.max(1), &mut f) {
        cursor = next;
    }
}

impl fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("transition", &self.transition())
            .field("patches", &self.patches.iter().count())
            .finish()
    }
}
