//! The transition state machine.
//!
//! * [`Live`] is the read side every CPU shares: func stacks, the patched-set index, the
//!   transition's target and the switch points a backend calls (function entry, exit to user
//!   mode, idle loop, self-check, fork).
//! * [`Engine`] is the single writer (a kernel serialises it with a mutex): enable, disable,
//!   reverse, force, completion attempts, late and going objects.
//! * [`EngineStorage`] is the caller-provided memory both use.
//!
//! ```text
//!            enable                      try_complete: all switched
//!   Idle ───────────────► Patching ─────────────────────────────────► Idle (patch enabled)
//!                           │   ▲
//!                   reverse │   │ reverse
//!                           ▼   │
//!   Idle ◄──────────────── Unpatching ◄──────────────────────────────── Idle (patch enabled)
//!        all switched                         disable
//! ```
//! `force` switches every task at once and completes; a failed `pre_patch` callback or hook
//! installation cancels an enable (completes it as an unpatch with nothing switched).

mod engine;
mod events;
mod live;
mod storage;

pub use engine::{Engine, Progress, TransitionInfo};
pub use events::{Event, Events};
pub use live::Live;
pub(crate) use live::{in_listed, in_ranges, AwayCheck};
pub use storage::EngineStorage;
