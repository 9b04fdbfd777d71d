//! The control socket's `apply PATH` takes the rest of the line as the path: a patch object
//! in a directory whose name has a space is applied, not a path cut at the space.

mod common;

use livepatch_user::{control, Runtime};
use std::path::Path;

#[test]
fn apply_takes_a_path_with_a_space() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("control_path");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("control path");
    std::fs::create_dir_all(&dir).unwrap();
    let spaced = dir.join("libbenchpatch.so");
    std::fs::copy(&t.bench_patch, &spaced).unwrap();
    let answer = control::execute(rt, &format!("apply {}", spaced.display()));
    assert_eq!(answer, vec!["ok 1".to_string()], "apply {}", spaced.display());
    assert_eq!(control::execute(rt, "disable 1"), vec!["ok".to_string()]);
}
