use super::error::{Error, ErrorKind};
use super::task::Task;
use crate::addr::CodeAddr;
use core::fmt;
use core::ops::ControlFlow;

/// Why a walk did not produce a reliable stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError<E> {
    /// The stack has more than the depth limit's frames; no partial result is implied.
    TooDeep,
    /// The backend could not walk the stack reliably.
    Backend(E),
}

impl<E: Error> Error for WalkError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            WalkError::TooDeep => ErrorKind::TooDeep,
            WalkError::Backend(e) => e.kind(),
        }
    }
}

impl<E: fmt::Debug> fmt::Display for WalkError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::TooDeep => f.write_str("stack deeper than the walk limit"),
            WalkError::Backend(e) => write!(f, "unreliable stack: {e:?}"),
        }
    }
}

/// Walks a task's kernel stack reliably.
///
/// The task is either the caller itself or a task the scheduler has pinned (it cannot run
/// during the walk). A walk hands each return address, innermost first, to `frame`, which may
/// stop it early with `ControlFlow::Break`. A stack that cannot be walked reliably is an
/// error, never a silent partial walk.
pub trait StackWalker {
    /// The backend's task.
    type Task: Task;
    /// The backend's walk failure.
    type Error: Error;

    /// Walks `task`'s stack, at most `max_depth` frames; a deeper stack is
    /// [`WalkError::TooDeep`].
    ///
    /// Returns how many return addresses were handed to `frame`: the stack's depth if `frame`
    /// never stopped the walk, fewer if it returned `Break` (the frame that broke counts), `0`
    /// for a task with no stack left. Not the stack's depth in general: the core stops at the
    /// first frame in code being switched away from. The core needs no count (its closure
    /// sees every frame); a backend may use it for its own accounting, as the simulated
    /// machine charges time per frame walked.
    fn walk<F>(&self, task: &Self::Task, max_depth: usize, frame: F) -> Result<usize, WalkError<Self::Error>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>;

    /// Walks `task`'s stack as [`walk`](Self::walk) does, handing the return addresses to
    /// `frames` in runs: consecutive, innermost first, none empty, together the same
    /// addresses in the same order as `walk` would hand one by one; `Break` stops the walk
    /// after the run that returned it.
    ///
    /// Returns how many return addresses were handed to `frames` (every address of the run
    /// that broke counts). The same errors as `walk`, with the same meaning: a stack deeper
    /// than `max_depth` is [`WalkError::TooDeep`], whether or not some runs were handed
    /// before the walk found out.
    ///
    /// The provided method hands runs of one address each, through `walk`. A backend that
    /// holds the addresses in memory before handing them (a saved stack trace, as the
    /// kernel's `stack_trace_save_tsk_reliable` fills) can hand them all at once: the core
    /// then checks several frames per branch instead of one (see
    /// [`sweep::first_away_frame`](crate::sweep::first_away_frame)).
    #[inline]
    fn walk_runs<F>(&self, task: &Self::Task, max_depth: usize, mut frames: F) -> Result<usize, WalkError<Self::Error>>
    where
        F: FnMut(&[CodeAddr]) -> ControlFlow<()>,
    {
        self.walk(task, max_depth, |addr| frames(core::slice::from_ref(&addr)))
    }
}
