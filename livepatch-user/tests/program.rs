//! End to end, as a user would do it: a C program built with patchable entries and linked
//! against `liblivepatch_user.so` runs in its own process; `livepatchctl` applies a patch
//! through its control socket; every thread of the process, which was never restarted, then
//! runs the fixed function.

mod common;

use common::program::{Build, Running};
use std::process::Command;
use std::time::Duration;

#[test]
fn an_unrestarted_program_runs_the_fix_in_every_thread() {
    let build = Build::new("program");
    let app = build.program("app.c", "app");
    let fix = build.patch("app_fix.c", "fix.so", &[]);
    let sock = build.out("app.sock");
    let ctl = &build.ctl;

    let mut run = Running::start(&app, &[&sock]);
    let wait = Duration::from_secs(10);
    assert_eq!(run.line("ready", wait), "ready");
    let out = Command::new(ctl).arg(&sock).args(["apply", &fix]).output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && answer.trim() == "ok 1", "{answer}");
    assert_eq!(run.line("that the fix runs in every thread", wait), "fixed in every thread");
    let list = Command::new(ctl).arg(&sock).arg("list").output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("1 fix-answer enabled"));
    drop(run.stdin);
    assert!(run.child.wait().unwrap().success());
}
