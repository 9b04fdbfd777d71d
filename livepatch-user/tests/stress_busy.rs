//! The stress with 2 busy threads only (`common/stress.rs`): calls of f and g back to back,
//! so kicks land inside hook decisions, trampolines and variants far more often than in the
//! mixed stress. This mix caught a walk that skipped the hooked function's caller when a kick
//! interrupted the start of a hook decision (fixed in `walk::chain`).

mod common;

#[test]
fn stress_busy_threads_only() {
    common::stress::run("stress_busy", [2, 0, 0, 0]);
}
