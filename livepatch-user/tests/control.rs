//! The operator's tool against a running target: `livepatchctl` applies, lists, reports
//! stalls, reverses and removes patches through the control socket; bad patches are refused
//! with nothing left behind.

mod common;

use livepatch_user::{Error, Runtime};
use std::path::Path;
use std::process::Command;

fn ctl(socket: &Path, args: &[&str]) -> (bool, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_livepatchctl")).arg(socket).args(args).output().expect("run livepatchctl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn bad_patch(dir: &Path, name: &str, body: &str) -> String {
    let src = dir.join(format!("{name}.c"));
    let so = dir.join(format!("lib{name}.so"));
    let inc = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    std::fs::write(&src, format!("#include \"livepatch_user.h\"\n{body}")).unwrap();
    let st = Command::new("cc")
        .args(["-O2", "-fPIC", "-shared", "-fno-omit-frame-pointer"])
        .arg(format!("-I{}", inc.display()))
        .arg("-o")
        .arg(&so)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    so.to_str().unwrap().to_owned()
}

#[test]
fn operator_tool_and_refusals() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let t = common::load("control");
    assert_eq!((t.start)(&common::API, 1, 2, 0, 1), 0);
    common::wait_running(&t, 4);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("control");
    let socket = dir.join("lp.sock");
    livepatch_user::control::serve(socket.to_str().unwrap()).expect("serve");

    let (ok, out) = ctl(&socket, &["apply", &t.patches[0]]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "ok 1");
    // An unregistered thread (this one) runs the original, and is counted.
    assert_eq!((t.f)(1), 3 + 6, "f(1) = g(1) + g(2)");
    assert!(rt.stats().unregistered_calls > 0);
    // SAFETY: `f` is a function of the loaded target, at least 16 bytes long.
    let entry = |f: extern "C" fn(i32) -> i32| unsafe { std::ptr::read_volatile(f as *const [u8; 2]) };
    assert_eq!(entry(t.f), [0x49, 0xbb], "f's entry is an active hook (movabs r11)");
    let (ok, out) = ctl(&socket, &["list"]);
    assert!(ok && out.contains("1 fix-v1 enabled") && out.contains("libpatch1.so"), "{out}");
    let (ok, out) = ctl(&socket, &["stalls"]);
    assert!(ok && out.is_empty(), "no stalls after a completed transition: {out}");
    let (ok, out) = ctl(&socket, &["apply", &t.patches[1]]);
    assert!(ok && out.trim() == "ok 2", "{out}");
    let (ok, out) = ctl(&socket, &["list"]);
    assert!(ok && out.trim().lines().count() == 1 && out.contains("2 fix-v2-cumulative enabled replace"), "{out}");
    let (ok, out) = ctl(&socket, &["disable", "1"]);
    assert!(!ok && out.contains("no patch #1"), "the replaced patch is gone: {out}");
    let (ok, out) = ctl(&socket, &["disable", "2"]);
    assert!(ok, "{out}");
    let (ok, out) = ctl(&socket, &["list"]);
    assert!(ok && out.is_empty(), "{out}");
    assert_eq!(entry(t.f), [0xeb, 14], "f's hook is parked (jmp short +14)");
    let (ok, out) = ctl(&socket, &["reverse"]);
    assert!(!ok && out.contains("NoTransition"), "{out}");
    let (ok, out) = ctl(&socket, &["frobnicate"]);
    assert!(!ok && out.contains("unknown command"), "{out}");
    let (ok, out) = ctl(&socket, &["apply", "/nonexistent.so"]);
    assert!(!ok && out.contains("cannot load"), "{out}");

    // Refusals leave nothing registered and the functions unhooked-or-parked, working.
    let missing = bad_patch(
        &dir,
        "missing",
        "int v(int x) { return x; }\n\
         static const struct livepatch_func fs[] = {{\"no_such_function\", (void *)v}};\n\
         const struct livepatch_patch livepatch_patch = {LIVEPATCH_ABI, \"missing\", 0, 1, fs};",
    );
    assert!(matches!(rt.apply(&missing), Err(Error::Symbol(_))));
    let unpatchable = bad_patch(
        &dir,
        "unpatchable",
        "int v(const char *s) { return 0; }\n\
         static const struct livepatch_func fs[] = {{\"puts\", (void *)v}};\n\
         const struct livepatch_patch livepatch_patch = {LIVEPATCH_ABI, \"unpatchable\", 0, 1, fs};",
    );
    assert!(matches!(rt.apply(&unpatchable), Err(Error::NotPatchable(_))));
    let abi = bad_patch(
        &dir,
        "abi",
        "int v(int x) { return x; }\n\
         static const struct livepatch_func fs[] = {{\"f\", (void *)v}};\n\
         const struct livepatch_patch livepatch_patch = {99, \"abi\", 0, 1, fs};",
    );
    assert!(matches!(rt.apply(&abi), Err(Error::Descriptor(_))));
    let refused = bad_patch(
        &dir,
        "refused",
        "int v(int x) { return -1; }\n\
         static int pre(void) { return -22; }\n\
         static const struct livepatch_func fs[] = {{\"f\", (void *)v}};\n\
         const struct livepatch_patch livepatch_patch = {LIVEPATCH_ABI, \"refused\", 0, 1, fs, pre};",
    );
    let r = rt.apply(&refused);
    assert!(matches!(r, Err(Error::Engine(livepatch_core::Error::Callback { .. }))), "{r:?}");
    assert!(rt.list().is_empty() && rt.transition().is_none());
    assert_eq!(entry(t.f), [0xeb, 14], "the cancelled enable parked f's hook again (jmp short +14)");
    (t.stop)();
    assert_eq!((t.bad)(), 0);
}
