//! The `many` fixture: `c/many.c` (64 functions `h10` … `h87` of 16 entry NOPs and an add,
//! called in a loop by registered worker threads) and its patches `c/many_patch.c`, built into
//! a test's own directory.

use super::cc;
use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};

/// `libmany.so`, loaded and trusted.
pub(crate) struct Many {
    /// The `dlopen` handle (for [`super::sym`]).
    pub(crate) handle: *mut c_void,
    dir: PathBuf,
}

impl Many {
    /// Builds `libmany.so` (with `-fpatchable-function-entry=16`) into `test`'s directory
    /// under the test's temporary directory, loads it (`RTLD_NOW | RTLD_GLOBAL`) and trusts it.
    pub(crate) fn load(test: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libmany.so");
        let (lib_s, many_c) = (lib.to_str().unwrap(), source("many.c"));
        let fpe = "-fpatchable-function-entry=16";
        cc(&["-O2", "-fPIC", "-shared", "-pthread", "-fno-omit-frame-pointer", fpe, &many_c, "-o", lib_s]);
        let c = CString::new(lib_s).unwrap();
        // SAFETY: dlopen of the fixture just built.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        assert!(!handle.is_null(), "dlopen {lib_s}");
        let start: extern "C" fn() = super::sym(handle, "many_start");
        assert!(livepatch_user::patch_so::trust_object_containing(start as usize), "trust libmany.so");
        Many { handle, dir }
    }

    /// Builds a patch of `libmany.so` and returns its path: of the one function `h<only>`
    /// (`libmany_h<only>.so`, `-DONLY=<only>`), or of all 64 (`libmany_patch.so`).
    pub(crate) fn patch(&self, only: Option<u32>) -> String {
        let (file, define) = match only {
            Some(n) => (format!("libmany_h{n}.so"), format!("-DONLY={n}")),
            None => ("libmany_patch.so".to_owned(), String::new()),
        };
        let out = self.dir.join(file).to_str().unwrap().to_owned();
        let inc = format!("-I{}", Path::new(env!("CARGO_MANIFEST_DIR")).join("include").display());
        let mut args = vec!["-O2", "-fPIC", "-shared", "-fno-omit-frame-pointer", &inc];
        if only.is_some() {
            args.push(&define);
        }
        let patch_c = source("many_patch.c");
        args.extend([patch_c.as_str(), "-o", &out]);
        cc(&args);
        out
    }
}

fn source(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(file).to_str().unwrap().to_owned()
}
