//! The stress mix under the stop-the-world model: transitions complete only when one stop
//! finds every stack clean, and no chain may mix versions (`common/stress.rs`).

mod common;

#[test]
fn stress_consistency_under_stop_the_world() {
    common::stress::run_stop_the_world("stress_stw", [1, 1, 1, 1]);
}
