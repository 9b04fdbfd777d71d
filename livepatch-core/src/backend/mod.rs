//! The four traits a backend implements — [`Task`], [`StackWalker`], [`Tracer`],
//! [`Scheduler`] — and [`Backend`], which bundles one of each for the engine.
//!
//! Every trait method takes `&self`: a kernel's task list, unwinder and tracer are shared
//! objects with their own locking. Data crosses the boundary through closures, so the core
//! never allocates. Each trait has an associated error type that maps to the common
//! [`ErrorKind`].

mod error;
mod scheduler;
mod task;
mod tracer;
mod walker;

pub use error::{Error, ErrorKind};
pub use scheduler::{Pinned, Scheduler, TaskCursor};
pub use task::{Task, TaskFlags, TaskKind};
pub use tracer::Tracer;
pub use walker::{StackWalker, WalkError};

/// One backend: its task type and one implementation of each trait.
pub trait Backend {
    /// The backend's task.
    type Task: Task;
    /// Its stack walker.
    type Walker: StackWalker<Task = Self::Task>;
    /// Its function-entry hook installer.
    type Tracer: Tracer;
    /// Its scheduler interface.
    type Scheduler: Scheduler<Task = Self::Task>;

    /// The stack walker.
    fn walker(&self) -> &Self::Walker;
    /// The tracer.
    fn tracer(&self) -> &Self::Tracer;
    /// The scheduler.
    fn scheduler(&self) -> &Self::Scheduler;
}

/// A [`Backend`] made of three references.
#[derive(Debug)]
pub struct Parts<'x, S, W, T> {
    /// The scheduler.
    pub scheduler: &'x S,
    /// The stack walker.
    pub walker: &'x W,
    /// The tracer.
    pub tracer: &'x T,
}

impl<S, W, T> Backend for Parts<'_, S, W, T>
where
    S: Scheduler,
    W: StackWalker<Task = S::Task>,
    T: Tracer,
{
    type Task = S::Task;
    type Walker = W;
    type Tracer = T;
    type Scheduler = S;

    fn walker(&self) -> &W {
        self.walker
    }
    fn tracer(&self) -> &T {
        self.tracer
    }
    fn scheduler(&self) -> &S {
        self.scheduler
    }
}

impl<B: Backend> Backend for &B {
    type Task = B::Task;
    type Walker = B::Walker;
    type Tracer = B::Tracer;
    type Scheduler = B::Scheduler;

    fn walker(&self) -> &B::Walker {
        (**self).walker()
    }
    fn tracer(&self) -> &B::Tracer {
        (**self).tracer()
    }
    fn scheduler(&self) -> &B::Scheduler {
        (**self).scheduler()
    }
}
