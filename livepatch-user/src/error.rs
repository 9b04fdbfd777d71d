//! The runtime's errors.

use std::fmt;

/// Why a runtime operation was refused. Every refusal leaves the process as it was.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The runtime was already initialised in this process (it is a process-wide singleton).
    AlreadyInitialised,
    /// The runtime has not been initialised.
    NotInitialised,
    /// The policy's model needs a service this backend does not offer (the freezer needs the
    /// sweep to pin other threads; see the README's "Not supported").
    UnsupportedModel(&'static str),
    /// A system call failed.
    Sys(&'static str, std::io::Error),
    /// The calling thread is not registered.
    NotRegistered,
    /// The calling thread is already registered.
    AlreadyRegistered,
    /// A root thread cannot register while a patch is registered.
    PatchesActive,
    /// A child cannot register inside a start routine that a patch replaces for it: the
    /// routine's entry ran before the thread registered, so it runs the original, and its
    /// calls would run the patch's variants. The thread goes on unregistered (originals only).
    StartRoutinePatched,
    /// The frame record given to `begin` is not an 8-aligned address on the calling thread's
    /// stack above the caller (stack walks read the stack up to it).
    Frame(usize),
    /// The shared object could not be loaded (`dlerror`'s text).
    Load(String),
    /// The shared object has no `livepatch_patch` descriptor, or it is malformed.
    Descriptor(String),
    /// A function the patch replaces was not found by name.
    Symbol(String),
    /// A function is not compiled with enough patchable entry NOPs.
    NotPatchable(String),
    /// A replaced function lies in code not declared built with frame pointers
    /// (`livepatch_trust_object`): stack walks could not see it.
    Untrusted(String),
    /// The engine refused.
    Engine(livepatch_core::Error),
    /// No patch with this handle.
    NoSuchPatch(u32),
    /// The transition did not complete in time (it is still in progress).
    Timeout,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AlreadyInitialised => f.write_str("the livepatch runtime is already initialised"),
            Error::NotInitialised => f.write_str("the livepatch runtime is not initialised"),
            Error::UnsupportedModel(m) => write!(f, "the {m} model is not supported in user space"),
            Error::Sys(what, e) => write!(f, "{what}: {e}"),
            Error::NotRegistered => f.write_str("the calling thread is not registered"),
            Error::AlreadyRegistered => f.write_str("the calling thread is already registered"),
            Error::PatchesActive => f.write_str("a root thread cannot register while a patch is registered"),
            Error::StartRoutinePatched => {
                f.write_str("the thread's start routine is replaced for it: it ran the original before registering")
            }
            Error::Frame(fp) => write!(f, "frame {fp:#x} is not on the calling thread's stack above the caller"),
            Error::Load(e) => write!(f, "cannot load the patch: {e}"),
            Error::Descriptor(e) => write!(f, "bad patch descriptor: {e}"),
            Error::Symbol(s) => write!(f, "function `{s}` not found"),
            Error::NotPatchable(s) => write!(f, "function `{s}` has no patchable entry (16 bytes of NOPs)"),
            Error::Untrusted(s) => write!(f, "function `{s}` is not in trusted (frame-pointer) code"),
            Error::Engine(e) => write!(f, "engine: {e:?}"),
            Error::NoSuchPatch(h) => write!(f, "no patch #{h}"),
            Error::Timeout => f.write_str("the transition did not complete in time"),
        }
    }
}

impl std::error::Error for Error {}

impl From<livepatch_core::Error> for Error {
    fn from(e: livepatch_core::Error) -> Self {
        Error::Engine(e)
    }
}
