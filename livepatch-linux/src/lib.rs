//! Kernel-independent parts of the `livepatch_rs` kernel module, compiled both by cargo (host
//! tests) and by kbuild (into the module, from these same files).
//!
//! The module itself (`module/`) is built by kbuild against a Rust-enabled kernel; see
//! `README.md` and `scripts/e2e.sh`.
#![no_std]
#![deny(unsafe_code)]

pub mod report;
