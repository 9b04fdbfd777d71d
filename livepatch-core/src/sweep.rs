//! Per-task switch checks and the stall report.
//!
//! A task may switch universe when none of the code being switched away from is on its stack
//! (invariant I2). [`check_and_switch`] decides that for one task whose stack cannot change
//! meanwhile — pinned by the scheduler, held on its CPU by the per-CPU pass, or the caller
//! itself — with one reliable walk and a patched-set lookup per frame (O(1) expected), behind a
//! pre-filter chosen once per check: with at most four ranges being switched away from, one
//! compare per range and frame, eight frames per loop iteration when the walker hands its
//! saved stack at once; with more, the bounds of that code, then a bitmap of the 1 KiB
//! blocks it occupies (then, up to 16 ranges, the ranges themselves). Anything that keeps a
//! task from switching is a [`StallReason`], reported per task as a [`Straggler`] and counted
//! in a [`PassSummary`].

use crate::addr::{CodeAddr, CodeRange};
use crate::backend::Error as _;
use crate::backend::{ErrorKind, Pinned, Scheduler, StackWalker, Task, TaskFlags, TaskKind, WalkError};
use crate::ids::{SlotId, TaskId};
use crate::model::SwitchPoints;
use crate::state::{PatchState, TaskWord};
use crate::sync::Ordering;
use crate::transition::Live;
use crate::transition::{in_listed, in_ranges, AwayCheck};
use core::fmt;
use core::ops::ControlFlow;

/// Why a task has not switched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallReason {
    /// It is running on a CPU; its stack cannot be checked now.
    Running,
    /// Its stack could not be walked reliably.
    Unreliable(ErrorKind),
    /// Its stack is deeper than the walk limit.
    TooDeep,
    /// Code being switched away from is on its stack.
    OnStack {
        /// The original function whose code it is.
        slot: SlotId,
        /// That original function's range.
        function: CodeRange,
        /// The variant's range if the frame is in a variant, `None` if in the original.
        variant: Option<CodeRange>,
        /// The frame's depth (0 = innermost).
        frame: u32,
        /// The return address found there.
        addr: CodeAddr,
    },
    /// The model checks no stacks: the task waits for its switch point (exit to user mode,
    /// idle loop, safe point).
    AwaitingSwitchPoint,
    /// Its state changed while it was being checked (it switched itself, or a reversal
    /// retargeted it); the next pass decides.
    Raced,
}

impl fmt::Display for StallReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StallReason::Running => f.write_str("running"),
            StallReason::Unreliable(kind) => write!(f, "unreliable stack ({kind})"),
            StallReason::TooDeep => f.write_str("stack too deep"),
            StallReason::OnStack { function, variant, frame, addr, .. } => match variant {
                Some(v) => write!(f, "in variant {v:?} of function {function:?} at frame {frame} ({addr})"),
                None => write!(f, "in function {function:?} at frame {frame} ({addr})"),
            },
            StallReason::AwaitingSwitchPoint => f.write_str("awaiting a switch point"),
            StallReason::Raced => f.write_str("changed while checked"),
        }
    }
}

/// The function a straggler is blocked in, by the names its patch descriptors give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncName<'n> {
    /// The object (`vmlinux` or a module) the function belongs to.
    pub object: &'n str,
    /// The function's name ([`Func::name`](crate::Func::name)).
    pub function: &'n str,
}

/// One task that kept the transition from completing, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Straggler<'n> {
    /// The task.
    pub task: TaskId,
    /// Its kind.
    pub kind: TaskKind,
    /// Its flags (exiting, ignores signals, …).
    pub flags: TaskFlags,
    /// Why it has not switched.
    pub reason: StallReason,
    /// Whether this pass kicked it (signal or wake-up).
    pub kicked: bool,
    /// For [`StallReason::OnStack`]: the blocking function's name and object, from the
    /// registered patches that replace it.
    pub name: Option<FuncName<'n>>,
}

impl fmt::Display for Straggler<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} ({:?}{}): ",
            self.task,
            self.kind,
            if self.flags.contains(TaskFlags::EXITING) { ", exiting" } else { "" },
        )?;
        match (self.reason, self.name) {
            (StallReason::OnStack { function, variant, frame, addr, .. }, Some(n)) => {
                let (obj, func) = (n.object, n.function);
                match variant {
                    Some(v) => {
                        write!(f, "in a variant {v:?} of {func} ({obj}, {function:?}) at frame {frame} ({addr})")?
                    }
                    None => write!(f, "in function {func} ({obj}, {function:?}) at frame {frame} ({addr})")?,
                }
            }
            (reason, _) => write!(f, "{reason}")?,
        }
        if self.kicked {
            f.write_str(" [kicked]")?;
        }
        Ok(())
    }
}

/// What one completion attempt did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassSummary {
    /// Which attempt this was (1-based) within the current direction.
    pub pass: u32,
    /// Tasks visited.
    pub visited: u32,
    /// Tasks this pass switched (sweep and per-CPU pass).
    pub switched: u32,
    /// Of those, switched by the per-CPU pass.
    pub switched_per_cpu: u32,
    /// Tasks still pending after the pass.
    pub remaining: u32,
    /// Stragglers by reason.
    pub running: u32,
    /// Unreliable stacks.
    pub unreliable: u32,
    /// Over-deep stacks.
    pub too_deep: u32,
    /// Old code on the stack.
    pub on_stack: u32,
    /// Waiting for a switch point (no stack checks in this model).
    pub awaiting: u32,
    /// Changed while checked.
    pub raced: u32,
    /// Exiting tasks the policy did not visit.
    pub exiting_skipped: u32,
    /// Stragglers kicked (signalled or woken).
    pub kicked: u32,
    /// Stack walks done.
    pub walks: u32,
    /// Task-list lock holds (batches).
    pub batches: u32,
    /// The longest batch, in the scheduler's nanoseconds.
    pub max_batch_ns: u64,
    /// Stop-the-world pause, in nanoseconds (stop-the-world model only).
    pub pause_ns: u64,
}

impl PassSummary {
    pub(crate) fn count(&mut self, reason: StallReason) {
        self.remaining += 1;
        match reason {
            StallReason::Running => self.running += 1,
            StallReason::Unreliable(_) => self.unreliable += 1,
            StallReason::TooDeep => self.too_deep += 1,
            StallReason::OnStack { .. } => self.on_stack += 1,
            StallReason::AwaitingSwitchPoint => self.awaiting += 1,
            StallReason::Raced => self.raced += 1,
        }
    }
}

/// The outcome of checking one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The task was not pending.
    NotPending,
    /// The task switched to this state.
    Switched(PatchState),
    /// The task could not switch.
    Blocked(StallReason),
}

impl Verdict {
    /// Whether reaching this verdict took a stack walk.
    pub fn walked(&self) -> bool {
        match self {
            Verdict::Switched(_) => true,
            Verdict::Blocked(reason) => !matches!(reason, StallReason::Running | StallReason::AwaitingSwitchPoint),
            Verdict::NotPending => false,
        }
    }
}

/// Finds the innermost frame of `task` in code being switched away from.
///
/// The task's stack must not change during the call. Returns `Ok(None)` when the stack is
/// free of such code.
///
/// How a frame is pre-filtered is chosen once per call (`Live::away_check`):
/// * with at most four ranges being switched away from, the frames are compared with the
///   ranges themselves, one unsigned compare per range and frame (`addr - start < len`; the
///   kernel's `klp_check_stack` costs two per function and frame), eight frames per loop
///   iteration: the walk is [`StackWalker::walk_runs`], so a backend that hands its saved
///   stack at once gets straight-line code, a load, a subtraction and a compare-and-branch
///   per range and frame, whatever the loop's placement in the binary; one that hands one
///   address at a time gets the same answer one frame per iteration. Only a batch with a
///   frame inside a range is looked at again, out of line, frame by frame;
/// * with more, the bounds and the block bitmap of that code (then, up to 16 ranges, the
///   ranges), one frame at a time.
///
/// Only an admitted frame is looked up, out of line.
pub fn first_away_frame<W: StackWalker>(
    live: &Live<'_>,
    walker: &W,
    task: &W::Task,
) -> Result<Option<StallReason>, WalkError<W::Error>> {
    match live.away_check() {
        AwayCheck::One(r) => first_away_frame_in_runs(live, walker, task, &r),
        AwayCheck::Two(r) => first_away_frame_in_runs(live, walker, task, &r),
        AwayCheck::Four(r) => first_away_frame_in_runs(live, walker, task, &r),
        AwayCheck::Listed(filter, listed) => {
            first_admitted_away_frame(live, walker, task, |a| filter.admits(CodeAddr(a)) && in_listed(listed, a))
        }
        AwayCheck::Blocks(filter) => first_admitted_away_frame(live, walker, task, |a| filter.admits(CodeAddr(a))),
    }
}

/// Frames the direct tiers of [`first_away_frame`] check per branch.
const BATCH: usize = 8;

/// The walk of [`first_away_frame`] against at most four `ranges` (`(start, len)`; `(0, 0)`
/// holds nothing), a batch of frames per branch. Inlined into each of its arms, so the
/// ranges stay in registers.
#[inline(always)]
fn first_away_frame_in_runs<W: StackWalker, const N: usize>(
    live: &Live<'_>,
    walker: &W,
    task: &W::Task,
    ranges: &[(usize, usize); N],
) -> Result<Option<StallReason>, WalkError<W::Error>> {
    let mut found = None;
    // The depth of the next frame.
    let mut depth = 0u32;
    walker.walk_runs(task, live.policy().max_depth, |run| {
        let mut batches = run.chunks_exact(BATCH);
        for batch in batches.by_ref() {
            // Always `Ok`: `chunks_exact` yields `BATCH` frames.
            if <&[CodeAddr; BATCH]>::try_from(batch).is_ok_and(|b| any_in_ranges(ranges, b)) {
                found = first_away_in(live, ranges, batch, depth);
                if found.is_some() {
                    return ControlFlow::Break(());
                }
            }
            depth += BATCH as u32;
        }
        // Fewer than `BATCH` left (all of a one-address run): one compare per range each.
        for &addr in batches.remainder() {
            if in_ranges(ranges, addr.get()) {
                found = away_reason(live, addr, depth);
                if found.is_some() {
                    return ControlFlow::Break(());
                }
            }
            depth += 1;
        }
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

/// Whether one of `batch` is inside one of `ranges`: a fixed number of frames, so the
/// compiler unrolls it into `BATCH × N` compares that branch out only on a hit (never taken
/// on a clean stack), with no loop counter or bound between them. Branching per frame costs
/// less here than a branch-free reduction (a minimum or an or of flags per frame takes a
/// third instruction per range and frame, measured slower at F = 4).
#[inline(always)]
fn any_in_ranges<const N: usize>(ranges: &[(usize, usize); N], batch: &[CodeAddr; BATCH]) -> bool {
    batch.iter().any(|a| ranges.iter().any(|&(lo, len)| a.get().wrapping_sub(lo) < len))
}

/// The first of `frames` (the first at depth `depth`) in code being switched away from: the
/// frame-by-frame look at a batch [`any_in_ranges`] flagged. Out of line: most batches never
/// get here.
#[cold]
#[inline(never)]
fn first_away_in<const N: usize>(
    live: &Live<'_>,
    ranges: &[(usize, usize); N],
    frames: &[CodeAddr],
    depth: u32,
) -> Option<StallReason> {
    (depth..)
        .zip(frames)
        .filter(|&(_, &a)| in_ranges(ranges, a.get()))
        .find_map(|(frame, &addr)| away_reason(live, addr, frame))
}

/// The walk of [`first_away_frame`] with the pre-filter `admits`, inlined into each of its
/// arms so the per-frame loop holds the filter's few words in registers.
#[inline(always)]
fn first_admitted_away_frame<W: StackWalker>(
    live: &Live<'_>,
    walker: &W,
    task: &W::Task,
    admits: impl Fn(usize) -> bool,
) -> Result<Option<StallReason>, WalkError<W::Error>> {
    let mut found = None;
    let mut frame = 0u32;
    walker.walk(task, live.policy().max_depth, |addr| {
        if admits(addr.get()) {
            if let Some(reason) = away_reason(live, addr, frame) {
                found = Some(reason);
                return ControlFlow::Break(());
            }
        }
        frame += 1;
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

/// Why the return address `addr` at depth `frame` blocks the switch, if it is in code being
/// switched away from. Out of line: most frames never get here.
#[inline(never)]
fn away_reason(live: &Live<'_>, addr: CodeAddr, frame: u32) -> Option<StallReason> {
    let hit = live.patched_set().lookup(addr).filter(|hit| hit.is_away(live.slots()))?;
    let function = live.slots().get(hit.slot().0 as usize).and_then(|s| s.original()).unwrap_or(hit.range);
    Some(StallReason::OnStack { slot: hit.slot(), function, variant: hit.node.and_then(|n| n.code()), frame, addr })
}

/// Checks `task` (whose stack cannot change meanwhile) and switches it if nothing it is
/// switching away from is on its stack. `seen` is the word read before the check; the switch
/// only happens if the word is unchanged.
pub fn check_and_switch<W: StackWalker>(live: &Live<'_>, walker: &W, task: &W::Task, seen: TaskWord) -> Verdict {
    match first_away_frame(live, walker, task) {
        Err(WalkError::TooDeep) => Verdict::Blocked(StallReason::TooDeep),
        Err(WalkError::Backend(e)) => Verdict::Blocked(StallReason::Unreliable(e.kind())),
        Ok(Some(reason)) => Verdict::Blocked(reason),
        Ok(None) => match task.patch_state().try_switch(seen) {
            Some(state) => Verdict::Switched(state),
            None => Verdict::Blocked(StallReason::Raced),
        },
    }
}

/// The sweep's step for one task (the kernel's `klp_try_switch_task`): skip it if it is not
/// pending, otherwise pin it and check its stack; a task the scheduler cannot pin because it
/// is running is a straggler ([`StallReason::Running`]).
pub fn try_switch_task<S, W>(live: &Live<'_>, scheduler: &S, walker: &W, task: &S::Task) -> Verdict
where
    S: Scheduler,
    W: StackWalker<Task = S::Task>,
{
    // `Acquire`: pairs with `retarget`'s `Release`, so the away flags the engine set before
    // starting (or reversing) the transition are visible. The engine itself runs the sweep,
    // but a backend may run it on another CPU.
    let seen = task.patch_state().load(Ordering::Acquire);
    if !seen.pending() {
        return Verdict::NotPending;
    }
    if !live.policy().allows(SwitchPoints::SWEEP) {
        return Verdict::Blocked(StallReason::AwaitingSwitchPoint);
    }
    // Whether the task runs is asked under the pin only (the kernel's `task_call_func` then
    // `task_curr` check): an unlocked look first would say the same thing a second time, and
    // could be stale either way.
    match scheduler.pin(task, |t| check_and_switch(live, walker, t, seen)) {
        Pinned::Checked(verdict) => verdict,
        Pinned::Running => Verdict::Blocked(StallReason::Running),
    }
}
