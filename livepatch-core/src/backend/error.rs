use core::fmt;

/// The kinds of backend failure the core distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The stack could not be walked reliably (unknown frame, interrupt frame, corrupt stack).
    Unreliable,
    /// The stack is deeper than the walk's depth limit.
    TooDeep,
    /// The task is running on a CPU and cannot be inspected now.
    Running,
    /// The task was interrupted inside a function-entry hook — between the redirect decision
    /// (made on its current universe) and the jump to the code it decided on — so its universe
    /// must not change now. Only a walk that starts in interrupt context can see this.
    InRedirect,
    /// The task is gone.
    NoSuchTask,
    /// A function-entry hook could not be installed or removed.
    Hook,
    /// The backend is temporarily unable (e.g. out of memory for a work item).
    Busy,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The negative errno a kernel reports for this kind of failure: `-EBUSY` for a hook the
    /// tracer refuses (ftrace disabled, or the function already modified), a busy backend
    /// or a running task; `-ESRCH` for a vanished task; `-EINVAL` otherwise.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::Hook | ErrorKind::Busy | ErrorKind::Running | ErrorKind::InRedirect => -16,
            ErrorKind::NoSuchTask => -3,
            ErrorKind::Unreliable | ErrorKind::TooDeep | ErrorKind::Other => -22,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Unreliable => "unreliable stack",
            ErrorKind::TooDeep => "stack deeper than the walk limit",
            ErrorKind::Running => "task is running",
            ErrorKind::InRedirect => "interrupted inside a redirect",
            ErrorKind::NoSuchTask => "no such task",
            ErrorKind::Hook => "hook install/remove failed",
            ErrorKind::Busy => "backend busy",
            ErrorKind::Other => "backend error",
        })
    }
}

/// A backend error: anything with an [`ErrorKind`].
pub trait Error: fmt::Debug {
    /// The kind of failure.
    fn kind(&self) -> ErrorKind;
}

impl Error for ErrorKind {
    fn kind(&self) -> ErrorKind {
        *self
    }
}

impl Error for core::convert::Infallible {
    fn kind(&self) -> ErrorKind {
        match *self {}
    }
}
