//! End to end, as a user would do it: a C program built with patchable entries and linked
//! against `liblivepatch_user.so` runs in its own process; `livepatchctl` applies a patch
//! through its control socket; every thread of the process, which was never restarted, then
//! runs the fixed function.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn cc(args: &[&str]) {
    let out = Command::new("cc").args(args).output().expect("run cc");
    assert!(out.status.success(), "cc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_unrestarted_program_runs_the_fix_in_every_thread() {
    let ctl = Path::new(env!("CARGO_BIN_EXE_livepatchctl"));
    // The cdylib is built with the tests, in `deps/` (and uplifted next to the tool by
    // `cargo build`).
    // `deps/` first: the copy next to the tool is only refreshed by `cargo build`.
    let dirs = [ctl.parent().unwrap().join("deps"), ctl.parent().unwrap().to_path_buf()];
    let libdir = dirs.iter().find(|d| d.join("liblivepatch_user.so").exists()).expect("liblivepatch_user.so is built");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c");
    let inc = format!("-I{}", Path::new(env!("CARGO_MANIFEST_DIR")).join("include").display());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("program");
    std::fs::create_dir_all(&dir).unwrap();
    let (app, fix, sock) = (dir.join("app"), dir.join("fix.so"), dir.join("app.sock"));
    let (l, rpath) = (format!("-L{}", libdir.display()), format!("-Wl,-rpath,{}", libdir.display()));
    cc(&[
        "-O2",
        "-fpatchable-function-entry=16",
        "-fno-omit-frame-pointer",
        "-mno-omit-leaf-frame-pointer",
        "-rdynamic",
        "-pthread",
        &inc,
        src.join("app.c").to_str().unwrap(),
        &l,
        &rpath,
        "-llivepatch_user",
        "-o",
        app.to_str().unwrap(),
    ]);
    cc(&[
        "-O2",
        "-fPIC",
        "-shared",
        "-fno-omit-frame-pointer",
        &inc,
        src.join("app_fix.c").to_str().unwrap(),
        "-o",
        fix.to_str().unwrap(),
    ]);

    let mut child = Command::new(&app)
        .arg(&sock)
        // The runpath, not cargo's LD_LIBRARY_PATH: that lists the directory where `cargo
        // build` uplifts the library first, whose copy may be older than the test's.
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the program");
    // The program's lines, read on a thread so that a program that never prints fails the
    // test instead of hanging it.
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    let mut next_line = |what: &str| match lines.recv_timeout(Duration::from_secs(10)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!("the program did not print {what}");
        }
    };
    assert_eq!(next_line("ready"), "ready");
    let out = Command::new(ctl).arg(&sock).args(["apply", fix.to_str().unwrap()]).output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && answer.trim() == "ok 1", "{answer}");
    assert_eq!(next_line("that the fix runs in every thread"), "fixed in every thread");
    let list = Command::new(ctl).arg(&sock).arg("list").output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("1 fix-answer enabled"));
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}
