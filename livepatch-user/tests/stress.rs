//! Real threads, real signals, real code modification: 3 busy threads (f -> g chains, a safe
//! point every 64 calls), 3 sleepy ones (naps inside f and g), 2 spinning ones and 2 that
//! create short-lived threads, while the runtime enables, disables, reverses and replaces
//! patches; any chain mixing versions fails the run (`common/stress.rs`).

mod common;

#[test]
fn stress_consistency_on_real_threads() {
    common::stress::run("stress", [3, 3, 2, 2]);
}
