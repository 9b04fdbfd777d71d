//! A `no_std`, allocator-free static library that uses livepatch-core.
//!
//! It defines its own `#[panic_handler]`: if anything in the dependency graph linked `std`,
//! the build fails with a duplicate `panic_impl` lang item; if anything linked `alloc`, it
//! fails for want of a global allocator. `.ci/run` builds it.
#![no_std]

use livepatch_core::{EngineStorage, Live, Policy, Redirect, SlotId, TaskPatchState};

static STORAGE: EngineStorage<'static, 4, 8> = EngineStorage::new();
static TASK: TaskPatchState = TaskPatchState::new();

/// Exposes a redirect so the core is really linked in.
#[no_mangle]
pub extern "C" fn livepatch_nostd_redirect(slot: u32) -> usize {
    let live = Live::new(&STORAGE, Policy::LINUX_6_12);
    match live.redirect(SlotId(slot), &TASK, livepatch_core::CodeAddr(0)) {
        Redirect::Original => 0,
        Redirect::Variant(addr) => addr.get(),
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
