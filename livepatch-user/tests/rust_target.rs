//! Rust code as the patched target: a cdylib built by the nightly toolchain with
//! `-Z patchable-function-entry=16 -C force-frame-pointers=yes` (LLVM pads the entry with a
//! 15-byte and a 1-byte NOP), patched by a C variant while this registered thread calls it.
//! Needs `rustc +nightly` (the machine's rustup nightly).

use livepatch_user::Runtime;
use std::ffi::{c_int, c_long, CString};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TARGET: &str = r#"
#[no_mangle]
#[inline(never)]
pub extern "C" fn rt_answer() -> i32 {
    std::hint::black_box(1)
}

#[no_mangle]
pub extern "C" fn rt_sum(n: i32) -> i64 {
    (0..n).map(|_| rt_answer() as i64).sum()
}
"#;

const FIX: &str = r#"
#include "livepatch_user.h"
int rt_answer_fixed(void) { return 2; }
static const struct livepatch_func funcs[] = {{"rt_answer", (void *)rt_answer_fixed}};
const struct livepatch_patch livepatch_patch = {LIVEPATCH_ABI, "fix-rust", 0, 1, funcs};
"#;

#[test]
fn a_rust_function_built_by_nightly_is_patched() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rust_target");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("target.rs"), TARGET).unwrap();
    std::fs::write(dir.join("fix.c"), FIX).unwrap();
    let lib = dir.join("librt.so");
    let st = Command::new("rustc")
        .args(["+nightly", "-O", "-Z", "patchable-function-entry=16", "-C", "force-frame-pointers=yes"])
        .args(["--crate-type", "cdylib", "-o"])
        .arg(&lib)
        .arg(dir.join("target.rs"))
        .env_remove("RUSTFLAGS")
        .status()
        .expect("rustc +nightly (the machine's rustup nightly)");
    assert!(st.success(), "rustc +nightly");
    let fix = dir.join("libfix.so");
    let inc = format!("-I{}", Path::new(env!("CARGO_MANIFEST_DIR")).join("include").display());
    let st = Command::new("cc")
        .args(["-O2", "-fPIC", "-shared", "-fno-omit-frame-pointer", &inc, "-o"])
        .arg(&fix)
        .arg(dir.join("fix.c"))
        .status()
        .unwrap();
    assert!(st.success());

    let c = CString::new(lib.to_str().unwrap()).unwrap();
    // SAFETY: dlopen of the library just built.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    assert!(!h.is_null());
    let name = CString::new("rt_sum").unwrap();
    // SAFETY: a valid handle and name; `rt_sum` is `extern "C" fn(i32) -> i64`.
    let sum: extern "C" fn(c_int) -> c_long = unsafe { std::mem::transmute(libc::dlsym(h, name.as_ptr())) };
    let answer = CString::new("rt_answer").unwrap();
    // SAFETY: as above.
    let entry = unsafe { libc::dlsym(h, answer.as_ptr()) } as *const [u8; 16];
    // SAFETY: `rt_answer` is at least 16 bytes of code.
    let padding = unsafe { entry.read() };
    assert_ne!(padding, [0x90; 16], "LLVM pads with multi-byte NOPs: {padding:02x?}");
    assert!(livepatch_user::patch_so::trust_object_containing(sum as usize));

    let base = 0usize;
    let r =
        // SAFETY: no token; `base` is a stack address above every frame this test uses later.
        unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
    assert_eq!(r, 0);
    assert_eq!(sum(10), 10);
    let p = rt.apply(fix.to_str().unwrap()).expect("apply");
    rt.wait(Duration::from_secs(10)).expect("enable");
    assert_eq!(sum(10), 20, "the Rust function's calls run the fix");
    rt.disable(p).expect("disable");
    rt.wait(Duration::from_secs(10)).expect("disable completes");
    assert_eq!(sum(10), 10);
    assert_eq!(rt.stats().unregistered_calls, 0);
}
