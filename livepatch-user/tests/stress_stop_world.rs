//! The stress under the stop-the-world model: 1 busy thread (f -> g back to back, so stops
//! land inside chains and inside hook decisions), 2 spinning ones and 2 that create
//! short-lived threads (prepared and begun around stops). Transitions complete only when one
//! stop finds every stack clean; no chain may mix versions (`common/stress.rs`). Sleepy
//! threads are left out: they are inside f nearly all the time, and no stop would ever find
//! them clean (the model's known weakness, README "Stop-the-world").

mod common;

#[test]
fn stress_consistency_under_stop_the_world() {
    common::stress::run_stop_the_world("stress_stw", [1, 0, 2, 2]);
}
