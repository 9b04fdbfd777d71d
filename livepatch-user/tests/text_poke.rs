//! Hooks written over fresh entries while registered threads execute them: 64 functions of
//! 16 entry NOPs and an add, called in a loop by 3 threads, get their first hook (each with a
//! fix-up round), are parked and re-hooked, for several rounds. A thread resumed in the
//! middle of the new `movabs` would fault or compute garbage; every call is checked.

mod common;

use common::{cc, sym};

use livepatch_user::Runtime;
use std::ffi::{c_int, c_long, CString};
use std::path::Path;
use std::time::Duration;

#[test]
fn first_hooks_over_running_entry_nops() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c");
    let inc = format!("-I{}", Path::new(env!("CARGO_MANIFEST_DIR")).join("include").display());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("text_poke");
    std::fs::create_dir_all(&dir).unwrap();
    let (lib, patch) = (dir.join("libmany.so"), dir.join("libmany_patch.so"));
    let (lib_s, patch_s) = (lib.to_str().unwrap(), patch.to_str().unwrap());
    let fpe = "-fpatchable-function-entry=16";
    cc(&[
        "-O2",
        "-fPIC",
        "-shared",
        "-pthread",
        "-fno-omit-frame-pointer",
        fpe,
        src.join("many.c").to_str().unwrap(),
        "-o",
        lib_s,
    ]);
    cc(&[
        "-O2",
        "-fPIC",
        "-shared",
        "-fno-omit-frame-pointer",
        &inc,
        src.join("many_patch.c").to_str().unwrap(),
        "-o",
        patch_s,
    ]);
    // One-function patches of h30..h37 and h40..h47, each first hooked while every thread
    // calls only it (`hN` is `hs[(N / 10 - 1) * 8 + N % 10]`).
    let singles: Vec<(usize, String)> = (30..38)
        .chain(40..48)
        .map(|n| {
            let p = dir.join(format!("libmany_h{n}.so"));
            let only = format!("-DONLY={n}");
            let (src_s, p_s) = (src.join("many_patch.c").to_str().unwrap().to_owned(), p.to_str().unwrap().to_owned());
            cc(&["-O2", "-fPIC", "-shared", "-fno-omit-frame-pointer", &inc, &only, &src_s, "-o", &p_s]);
            ((n / 10 - 1) * 8 + n % 10, p_s)
        })
        .collect();
    let c = CString::new(lib_s).unwrap();
    // SAFETY: dlopen of the fixture just built.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    assert!(!h.is_null());
    let start: extern "C" fn(*const common::Api, c_int) -> c_int = sym(h, "many_start");
    let running: extern "C" fn() -> c_int = sym(h, "many_running");
    let stop: extern "C" fn() = sym(h, "many_stop");
    let bad: extern "C" fn() -> c_long = sym(h, "many_bad");
    let calls: extern "C" fn() -> c_long = sym(h, "many_calls");
    let focus: extern "C" fn(c_int) = sym(h, "many_focus");
    assert!(livepatch_user::patch_so::trust_object_containing(start as usize));
    assert_eq!(start(&common::API, 3), 0);
    while running() < 3 {
        std::thread::sleep(Duration::from_millis(1));
    }
    for (k, patch) in &singles {
        focus(*k as c_int);
        std::thread::sleep(Duration::from_millis(2));
        let p = rt.apply(patch).expect("apply a single");
        rt.wait(Duration::from_secs(10)).expect("enable a single");
        rt.disable(p).expect("disable");
        rt.wait(Duration::from_secs(10)).expect("disable completes");
    }
    focus(-1);
    for _ in 0..5 {
        let before = calls();
        let p = rt.apply(patch_s).expect("apply");
        rt.wait(Duration::from_secs(10)).expect("enable");
        rt.disable(p).expect("disable");
        rt.wait(Duration::from_secs(10)).expect("disable completes");
        assert!(calls() > before, "the threads kept running");
    }
    stop();
    let stats = rt.stats();
    eprintln!("text poke: {} calls, {stats:?}", calls());
    assert_eq!(bad(), 0, "a call computed a wrong result");
    assert!(stats.fixup_signals >= 64 * 3, "each fresh entry's first hook had a fix-up round");
    // Whether a thread was caught between two NOPs depends on the scheduler: on a loaded
    // machine some runs catch none (seen in a CI run). The test's verdict is the two checks
    // above and the absence of a crash (without the fix-up round it died with SIGSEGV in 2 of
    // 3 runs); this line says whether this run exercised the fix-up.
    eprintln!("text poke: {} threads caught between two entry NOPs and moved", stats.fixups_applied);
}
