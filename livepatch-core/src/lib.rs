//! # livepatch-core
//!
//! The consistency model of live patching, written once: which variant of a patched function a
//! call runs ([`redirect`]), the index of every patched code range ([`patched_set`]), the
//! transition state machine that moves every task from the old set of variants to the new one
//! ([`transition`]), and the per-task safety checks that decide when a task may switch
//! ([`sweep`]). The consistency models of the 2014 live-patching discussion are policies over
//! this machinery ([`model`]).
//!
//! The crate is `no_std` and never allocates: patch descriptors and the engine's storage are
//! provided by the caller (statics in a kernel module, a `Box` in a simulator), and every
//! backend hands data to the core through closures. A backend implements four traits —
//! [`Task`](backend::Task), [`StackWalker`](backend::StackWalker), [`Tracer`](backend::Tracer)
//! and [`Scheduler`](backend::Scheduler) — and calls the engine's public API from its own
//! switch points (exit to user mode, the idle loop, its function-entry hook).
//!
//! `unsafe` code lives only in [`sync`], which also switches every atomic to `loom` under
//! `cfg(loom)`.
#![no_std]
#![deny(unsafe_code)]

pub mod addr;
pub mod backend;
pub mod error;
pub mod func_stack;
pub mod ids;
pub mod model;
pub mod patch;
pub mod patched_set;
pub mod redirect;
pub mod shadow;
pub mod state;
pub mod sweep;
pub mod sync;
pub mod transition;

pub use addr::{CodeAddr, CodeRange, RangeError};
pub use backend::Parts;
pub use error::Error;
pub use ids::{CpuId, ObjectId, PatchId, SlotId, TaskId};
pub use model::{Model, Policy};
pub use patch::{Func, Object, ObjectCallbacks, Patch};
pub use redirect::Redirect;
pub use state::{PatchState, TaskPatchState};
pub use transition::{Engine, EngineStorage, Live};

/// The repository README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
