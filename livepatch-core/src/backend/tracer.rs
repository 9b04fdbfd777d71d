use super::error::Error;
use crate::addr::CodeRange;
use crate::ids::{ObjectId, SlotId};

/// Installs the redirect hook on functions' entries (ftrace with `IPMODIFY` in a kernel).
///
/// The hook, when the function is called, asks the engine's [`Live`](crate::Live) where the
/// call goes: `live.on_function_entry(slot, ...)`.
pub trait Tracer {
    /// The backend's hook failure.
    type Error: Error;

    /// Installs the hook for `slot` on the entry of `func`. On error nothing is installed.
    fn install(&self, slot: SlotId, func: CodeRange) -> Result<(), Self::Error>;

    /// Removes the hook. When it returns, no CPU runs the hook for this function any more
    /// (ftrace's unregister waits for running handlers).
    fn remove(&self, slot: SlotId, func: CodeRange) -> Result<(), Self::Error>;

    /// Whether the object's code is loaded (the core kernel always is).
    fn object_loaded(&self, object: ObjectId) -> bool;
}
