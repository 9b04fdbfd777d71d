//! Builds and loads the C stress target and its patches (gcc is part of the machine's
//! toolchain: `cc`, as the `cc` crate would find it).

#![allow(dead_code)]

pub(crate) mod catch;
pub(crate) mod many;
pub(crate) mod parts;
pub(crate) mod program;
pub(crate) mod stress;

use std::ffi::{c_int, c_long, c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `struct lp_api` of `c/lp_api.h`.
#[repr(C)]
pub(crate) struct Api {
    pub(crate) prepare: extern "C" fn() -> *mut c_void,
    pub(crate) begin: unsafe extern "C" fn(*mut c_void, *const c_void) -> c_int,
    pub(crate) end: extern "C" fn(),
    pub(crate) safe_point: extern "C" fn(),
}

pub(crate) const API: Api = Api {
    prepare: livepatch_user::livepatch_thread_prepare,
    begin: livepatch_user::livepatch_thread_begin,
    end: livepatch_user::livepatch_thread_end,
    safe_point: livepatch_user::livepatch_safe_point,
};

/// The loaded target's entry points.
pub(crate) struct Target {
    pub(crate) start: extern "C" fn(*const Api, c_int, c_int, c_int, c_int) -> c_int,
    pub(crate) running: extern "C" fn() -> c_int,
    pub(crate) stop: extern "C" fn(),
    pub(crate) bad: extern "C" fn() -> c_long,
    pub(crate) bad_detail: extern "C" fn() -> c_long,
    pub(crate) calls: extern "C" fn(c_int, c_int) -> c_long,
    pub(crate) f: extern "C" fn(c_int) -> c_int,
    pub(crate) plain: extern "C" fn(c_int) -> c_int,
    pub(crate) hooked: extern "C" fn(c_int) -> c_int,
    pub(crate) loop_: extern "C" fn(extern "C" fn(c_int) -> c_int, c_int) -> c_int,
    /// Starts a thread held inside f -> g (call from a registered thread).
    pub(crate) start_holder: extern "C" fn() -> c_int,
    /// Lets the held thread return from g and f.
    pub(crate) release_holder: extern "C" fn(),
    /// The patch objects: version 1, version 2 (cumulative).
    pub(crate) patches: [String; 2],
    /// The benchmarks' patch (replaces `target_hooked`).
    pub(crate) bench_patch: String,
}

/// The C compiler: `LP_CC` (e.g. `clang`, whose entry padding is multi-byte NOPs), else `cc`.
pub(crate) fn cc(args: &[&str]) {
    let compiler = std::env::var("LP_CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&compiler).args(args).output().expect("run the C compiler");
    assert!(out.status.success(), "cc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn build(dir: &Path) -> [PathBuf; 4] {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c");
    let inc = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    std::fs::create_dir_all(dir).unwrap();
    let target = dir.join("libtarget.so");
    let flags =
        ["-O2", "-g", "-fPIC", "-shared", "-pthread", "-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer"];
    let mut args: Vec<&str> = flags.to_vec();
    let (t, s) = (target.to_str().unwrap().to_owned(), src.join("target.c").to_str().unwrap().to_owned());
    args.extend(["-fpatchable-function-entry=16", "-o", &t, &s]);
    cc(&args);
    let mut out = [target.clone(), PathBuf::new(), PathBuf::new(), dir.join("libbenchpatch.so")];
    for (v, slot) in out.iter_mut().enumerate().take(3).skip(1) {
        let p = dir.join(format!("libpatch{v}.so"));
        let (pp, ps, pi, dv) = (
            p.to_str().unwrap().to_owned(),
            src.join("patch.c").to_str().unwrap().to_owned(),
            format!("-I{}", inc.display()),
            format!("-DV={v}"),
        );
        let mut args: Vec<&str> = flags.to_vec();
        args.extend([pi.as_str(), dv.as_str(), "-o", &pp, &ps]);
        cc(&args);
        *slot = p;
    }
    let (bp, bs, bi) = (
        out[3].to_str().unwrap().to_owned(),
        src.join("bench_patch.c").to_str().unwrap().to_owned(),
        format!("-I{}", inc.display()),
    );
    let mut args: Vec<&str> = flags.to_vec();
    args.extend([bi.as_str(), "-o", &bp, &bs]);
    cc(&args);
    out
}

/// The symbol `name` of a `dlopen` handle as the function-pointer type `T`.
pub(crate) fn sym<T: Copy>(handle: *mut c_void, name: &str) -> T {
    let c = CString::new(name).unwrap();
    // SAFETY: a valid handle and C string.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
    assert!(!p.is_null(), "symbol {name}");
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: `T` is the function-pointer type of the C definition of `name`.
    unsafe { std::mem::transmute_copy(&p) }
}

/// Builds the fixtures into `name` under the test's temporary directory and loads the target
/// (`RTLD_GLOBAL`: the patches resolve `f`, `g` and the records there).
pub(crate) fn load(name: &str) -> Target {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let [target, p1, p2, bench] = build(&dir);
    let c = CString::new(target.to_str().unwrap()).unwrap();
    // SAFETY: dlopen of the fixture we just built.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    assert!(!h.is_null(), "dlopen target");
    let t = Target {
        start: sym(h, "target_start"),
        running: sym(h, "target_running"),
        stop: sym(h, "target_stop"),
        bad: sym(h, "target_bad"),
        bad_detail: sym(h, "target_bad_detail"),
        calls: sym(h, "target_calls"),
        f: sym(h, "f"),
        plain: sym(h, "target_plain"),
        hooked: sym(h, "target_hooked"),
        loop_: sym(h, "target_loop"),
        start_holder: sym(h, "target_start_holder"),
        release_holder: sym(h, "target_release_holder"),
        patches: [p1.to_str().unwrap().to_owned(), p2.to_str().unwrap().to_owned()],
        bench_patch: bench.to_str().unwrap().to_owned(),
    };
    assert!(livepatch_user::patch_so::trust_object_containing(t.f as usize), "trust the target");
    t
}

/// The g calls of `version` over every thread record.
pub(crate) fn calls_of(t: &Target, version: c_int) -> i64 {
    (0..64).map(|r| (t.calls)(r, version)).sum()
}

/// Waits until the target's workers all started.
pub(crate) fn wait_running(t: &Target, n: c_int) {
    let t0 = std::time::Instant::now();
    while (t.running)() < n {
        assert!(t0.elapsed().as_secs() < 10, "workers did not start");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
