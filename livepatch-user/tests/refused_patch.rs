//! A patch refused at `apply` leaves the runtime as it was (`Error`: "every refusal leaves
//! the process as it was"): here its descriptor names a library, which the loader registers
//! as an object while it reads the descriptor, and then a function that does not exist.
//! The library must not stay registered (it would show in `livepatchctl libs`, and count
//! against the 64 libraries patches may name).

mod common;

use common::cc;
use livepatch_user::{Error, Runtime};
use std::path::Path;

#[test]
fn a_refused_patch_leaves_no_library_registered() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/refused_patch.c");
    let inc = format!("-I{}", Path::new(env!("CARGO_MANIFEST_DIR")).join("include").display());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("refused_patch");
    std::fs::create_dir_all(&dir).unwrap();
    let patch = dir.join("librefused.so");
    let patch = patch.to_str().unwrap();
    cc(&["-O2", "-fPIC", "-shared", "-fno-omit-frame-pointer", &inc, src.to_str().unwrap(), "-o", patch]);
    for _ in 0..3 {
        match rt.apply(patch) {
            Err(Error::Symbol(name)) => assert_eq!(name, "lp_no_such_function_anywhere"),
            other => panic!("expected the missing function's refusal, got {other:?}"),
        }
    }
    let names: Vec<String> = rt.libraries().into_iter().map(|l| l.name).collect();
    assert!(names.is_empty(), "a refused patch left libraries registered: {names:?}");
    assert!(rt.list().is_empty());
}
