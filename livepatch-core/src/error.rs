//! The engine's error type: small, `Copy`, one variant per way an operation can be refused.
//! A refused operation changes nothing.

use crate::addr::CodeRange;
use crate::backend::ErrorKind;
use crate::ids::{ObjectId, PatchId};
use crate::patch::{CallbackError, PatchError, StateId};
use crate::patched_set::IndexError;
use core::fmt;

/// Why an engine operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Another transition is in progress (one at a time, like the kernel's `-EBUSY`).
    Busy,
    /// The operation needs a transition in progress and there is none.
    NoTransition,
    /// The patch is already registered with an engine (enabled or in transition).
    AlreadyEnabled(PatchId),
    /// The patch is not enabled.
    NotEnabled(PatchId),
    /// The descriptor is invalid on its own.
    Invalid(PatchError),
    /// A range of the patch overlaps live patched code in a way that cannot be stacked
    /// (a partial overlap with an original, or any overlap with a variant).
    Conflict(CodeRange),
    /// The engine's storage has no free function slot left.
    NoSlot,
    /// The patched-set index cannot hold the new version.
    Index(IndexError),
    /// A `pre_patch` callback failed; the enable (or the object's load) was cancelled.
    Callback {
        /// The object whose callback failed.
        object: ObjectId,
        /// What it returned.
        error: CallbackError,
    },
    /// The patch would break a system state an installed patch established: a cumulative
    /// patch must carry every installed state, and no patch may lower a state's version.
    IncompatibleState(StateId),
    /// A function of this loaded object has no address: the backend did not resolve the
    /// relocatable function ([`Func::resolve`](crate::Func::resolve)) before the enable or the
    /// object's arrival.
    Unresolved(ObjectId),
    /// The backend failed.
    Backend(ErrorKind),
}

impl Error {
    /// The negative errno the kernel returns for the same refusal (what `insmod` or a sysfs
    /// write reports): `-EBUSY` for another transition or a range the tracer cannot take,
    /// `-ENOMEM` for exhausted storage, the callback's own code for a failed `pre_patch`, the
    /// backend's for a backend failure, `-EINVAL` otherwise.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Busy | Error::Conflict(_) => -16,
            Error::NoSlot | Error::Index(_) => -12,
            Error::Callback { error, .. } => error.0,
            Error::Backend(kind) => kind.errno(),
            Error::NoTransition
            | Error::AlreadyEnabled(_)
            | Error::NotEnabled(_)
            | Error::Invalid(_)
            | Error::IncompatibleState(_)
            | Error::Unresolved(_) => -22,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Busy => f.write_str("another transition is in progress"),
            Error::NoTransition => f.write_str("no transition is in progress"),
            Error::AlreadyEnabled(p) => write!(f, "patch {p} is already enabled"),
            Error::NotEnabled(p) => write!(f, "patch {p} is not enabled"),
            Error::Invalid(e) => write!(f, "invalid patch: {e}"),
            Error::Conflict(r) => write!(f, "code range {r:?} conflicts with live patched code"),
            Error::NoSlot => f.write_str("no free function slot"),
            Error::Index(e) => write!(f, "{e}"),
            Error::Callback { object, error } => {
                write!(f, "pre-patch callback of object {object}: {error}")
            }
            Error::IncompatibleState(id) => write!(f, "incompatible with installed system state {}", id.0),
            Error::Unresolved(o) => write!(f, "object {o} has an unresolved function"),
            Error::Backend(k) => write!(f, "backend: {k}"),
        }
    }
}

impl core::error::Error for Error {}

impl From<PatchError> for Error {
    fn from(e: PatchError) -> Self {
        Error::Invalid(e)
    }
}

impl From<IndexError> for Error {
    fn from(e: IndexError) -> Self {
        Error::Index(e)
    }
}
