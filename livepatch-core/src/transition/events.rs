//! What the engine reports as it works: the kernel livepatch core's log messages, as data.
//!
//! An [`Events`] sink given to [`Engine::set_events`](super::Engine::set_events) receives one
//! [`Event`] per step the kernel's `kernel/livepatch` would log (`pr_notice`, `pr_warn`,
//! `pr_err` and the `pr_debug` lines the selftests enable). Each event's `Display` is the
//! kernel's message text without the `livepatch: ` prefix, so a kernel backend can print it
//! as is and a test can compare it with a selftest's expected `dmesg`.

use crate::backend::ErrorKind;
use crate::error::Error;
use crate::state::PatchState;
use core::fmt;

/// One step of the engine's work. Names are the descriptors' (`Patch::name`, `Object::name`,
/// `Func::name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'n> {
    /// `enable` accepted patch `.0` and starts (`__klp_enable_patch`).
    Enabling(&'n str),
    /// `enable` refused patch `.0`: it would break an installed system state
    /// (`klp_is_patch_compatible`).
    Incompatible(&'n str),
    /// Patch `.0`'s transition towards `.1` is initialised (`klp_init_transition`).
    Initializing(&'n str, PatchState),
    /// Tasks may now switch to `.1` (`klp_start_transition`).
    Starting(&'n str, PatchState),
    /// Patch `.0`'s transition towards `.1` is reversed (`klp_reverse_transition`).
    Reversing(&'n str, PatchState),
    /// A failed enable of patch `.0` is undone before any task switched
    /// (`klp_cancel_transition`).
    Canceling(&'n str),
    /// Every task reached `.1`; the transition is being completed (`klp_complete_transition`).
    Completing(&'n str, PatchState),
    /// The transition to `.1` is complete, its post callbacks ran.
    Complete(&'n str, PatchState),
    /// The remaining tasks of patch `.0`'s transition are forced (`klp_force_transition`).
    Forcing(&'n str),
    /// Stragglers of patch `.0`'s transition are being signalled or woken
    /// (`klp_send_signals`).
    Signaling(&'n str),
    /// The `pre_patch` callback of object `.1` of patch `.0` failed.
    PrePatchFailed(&'n str, &'n str),
    /// The backend could not hook function `.1` of patch `.0` (`klp_patch_func`).
    HookFailed(&'n str, &'n str, ErrorKind),
    /// Object `.1` of patch `.0` could not be patched while enabling it.
    PatchObjectFailed(&'n str, &'n str),
    /// Enabling patch `.0` failed; it is cancelled next.
    EnableFailed(&'n str),
    /// Patch `.0` is applied to object `.1`, which is loading (`klp_module_coming`).
    Applying(&'n str, &'n str),
    /// Applying patch `.0` to the loading object `.1` failed with `.2`.
    ApplyFailed(&'n str, &'n str, Error),
    /// Patch `.0` failed for the loading object `.1`, whose load is refused.
    Refusing(&'n str, &'n str),
    /// Patch `.0` is reverted from object `.1`, which is going away (`klp_module_going`).
    Reverting(&'n str, &'n str),
}

/// `patching` or `unpatching`, as the kernel words a target.
fn direction(target: PatchState) -> &'static str {
    match target {
        PatchState::Patched => "patching",
        _ => "unpatching",
    }
}

impl fmt::Display for Event<'_> {
    /// The kernel's message (v6.12), without the `livepatch: ` prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Event::Enabling(p) => write!(f, "enabling patch '{p}'"),
            Event::Incompatible(p) => {
                write!(f, "Livepatch patch ({p}) is not compatible with the already installed livepatches.")
            }
            Event::Initializing(p, t) => write!(f, "'{p}': initializing {} transition", direction(t)),
            Event::Starting(p, t) => write!(f, "'{p}': starting {} transition", direction(t)),
            Event::Reversing(p, t) => {
                write!(f, "'{p}': reversing transition from {} to {}", direction(t), direction(t.opposite()))
            }
            Event::Canceling(p) => write!(f, "'{p}': canceling patching transition, going to unpatch"),
            Event::Completing(p, t) => write!(f, "'{p}': completing {} transition", direction(t)),
            Event::Complete(p, t) => write!(f, "'{p}': {} complete", direction(t)),
            Event::Forcing(_) => f.write_str("forcing remaining tasks to the patched state"),
            Event::Signaling(_) => f.write_str("signaling remaining tasks"),
            Event::PrePatchFailed(_, o) => write!(f, "pre-patch callback failed for object '{o}'"),
            Event::HookFailed(_, func, e) => {
                write!(f, "failed to register ftrace handler for function '{func}' ({})", e.errno())
            }
            Event::PatchObjectFailed(_, o) => write!(f, "failed to patch object '{o}'"),
            Event::EnableFailed(p) => write!(f, "failed to enable patch '{p}'"),
            Event::Applying(p, o) => write!(f, "applying patch '{p}' to loading module '{o}'"),
            Event::ApplyFailed(p, o, e) => write!(f, "failed to apply patch '{p}' to module '{o}' ({})", e.errno()),
            Event::Refusing(p, o) => write!(f, "patch '{p}' failed for module '{o}', refusing to load module '{o}'"),
            Event::Reverting(p, o) => write!(f, "reverting patch '{p}' on unloading module '{o}'"),
        }
    }
}

/// Receives the engine's [`Event`]s, in order, on the writer's thread (a kernel backend
/// prints them; a test records them).
pub trait Events: Sync {
    /// One event.
    fn event(&self, event: &Event<'_>);
}

impl<E: Events + ?Sized> Events for &E {
    fn event(&self, event: &Event<'_>) {
        (**self).event(event)
    }
}
