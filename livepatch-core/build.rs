//! Sets `cfg(lp_select_unpredictable)` when the compiler has `core::hint::select_unpredictable`
//! (Rust 1.88), which keeps the patched set's binary search a `cmov` chain (see
//! `src/patched_set.rs`). The kernel module's build (Kbuild, Debian's rustc 1.85) runs no build
//! script, so it compiles the core without the cfg: with the directory lookup only.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lp_select_unpredictable)");
    println!("cargo::rerun-if-changed=build.rs");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = Command::new(rustc).arg("--version").output().ok().and_then(|o| String::from_utf8(o.stdout).ok());
    // "rustc 1.95.0 (...)": the minor version.
    let minor = version
        .as_deref()
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    if minor.is_some_and(|m| m >= 88) {
        println!("cargo::rustc-cfg=lp_select_unpredictable");
    }
}
