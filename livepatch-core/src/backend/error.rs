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
    /// The task is gone.
    NoSuchTask,
    /// A function-entry hook could not be installed or removed.
    Hook,
    /// The backend is temporarily unable (e.g. out of memory for a work item).
    Busy,
    /// The task is inside a redirect: a walk from interrupt context found the ftrace
    /// trampoline's return site in a hooked function, or a variant's entry address (the
    /// trampoline stored the new ip but has not jumped yet). The handler may already have
    /// read the task's word, so the task must not be switched now.
    InRedirect,
    /// Anything else.
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Unreliable => "unreliable stack",
            ErrorKind::TooDeep => "stack deeper than the walk limit",
            ErrorKind::Running => "task is running",
            ErrorKind::NoSuchTask => "no such task",
            ErrorKind::Hook => "hook install/remove failed",
            ErrorKind::Busy => "backend busy",
            ErrorKind::InRedirect => "inside a redirect handler",
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
