//! A patch object whose constructor calls `dlopen`: the constructor runs inside the
//! runtime's `apply`, which holds the runtime's lock, and in a program linked against the
//! runtime the constructor's `dlopen` is the runtime's interposer, which takes that lock
//! after libc's `dlopen` returned. The apply must not deadlock (`tests/c/app.c` with
//! `tests/c/ctor_dlopen_fix.c`; `livepatchctl` runs under `timeout`). The same for a
//! `dlopen` in the patch's `post_patch` callback.

mod common;

use common::program::{Build, Running};
use std::process::Command;
use std::time::Duration;

#[test]
fn a_patch_whose_constructor_calls_dlopen_applies() {
    applies("ctor_dlopen", &[]);
}

/// The same `dlopen` from the patch's `post_patch` callback, which the completion runs
/// under the runtime's lock.
#[test]
fn a_patch_whose_post_patch_calls_dlopen_applies() {
    applies("post_patch_dlopen", &["-DIN_POST_PATCH"]);
}

fn applies(name: &str, flags: &[&str]) {
    let build = Build::new(name);
    let app = build.program("app.c", "app");
    let fix = build.patch("ctor_dlopen_fix.c", "fix.so", flags);
    let sock = build.out("app.sock");
    let ctl = build.ctl.to_str().unwrap().to_owned();

    let mut run = Running::start(&app, &[&sock]);
    let wait = Duration::from_secs(10);
    assert_eq!(run.line("ready", wait), "ready");
    let out = Command::new("timeout").args(["10", &ctl, &sock, "apply", &fix]).output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let _ = run.child.kill();
        panic!(
            "apply did not answer within 10 s ({:?}, {answer:?}): the patch's dlopen ({flags:?}) \
             waited for the runtime's lock, which the apply running its code holds",
            out.status
        );
    }
    assert_eq!(answer.trim(), "ok 1");
    assert_eq!(run.line("that the fix runs in every thread", wait), "fixed in every thread");
    drop(run.stdin);
    assert!(run.child.wait().unwrap().success());
}
