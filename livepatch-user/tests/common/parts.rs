//! One-file C fixtures whose parts (the target library, its patches, helpers) are chosen by
//! `-DPART_<NAME>`: `tests/c/<source>.c`, built into the test's own directory.

use super::cc;
use std::ffi::{c_void, CString};
use std::path::Path;

/// The fixture `tests/c/<source>.c` and the directory its parts are built into.
pub(crate) struct Parts {
    src: String,
    dir: String,
}

impl Parts {
    /// The fixture `tests/c/<source>.c`, built into `<source>` under the test's temporary
    /// directory.
    pub(crate) fn new(source: &str) -> Self {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(source);
        std::fs::create_dir_all(&dir).unwrap();
        Parts {
            src: manifest.join(format!("tests/c/{source}.c")).to_str().unwrap().to_owned(),
            dir: dir.to_str().unwrap().to_owned(),
        }
    }

    /// The directory the parts are built into.
    pub(crate) fn dir(&self) -> &str {
        &self.dir
    }

    /// Builds the part `-DPART_<part>` as the shared object `file` (frame pointers, the
    /// runtime's header on the include path, then `extra`) and returns its path.
    pub(crate) fn build(&self, part: &str, file: &str, extra: &[&str]) -> String {
        let out = format!("{}/{file}", self.dir);
        let inc = format!("-I{}", Path::new(env!("CARGO_MANIFEST_DIR")).join("include").display());
        let define = format!("-DPART_{part}");
        let flags = ["-O2", "-fPIC", "-shared", "-pthread", "-fno-omit-frame-pointer", &inc, &define];
        cc(&[&flags[..], &[self.src.as_str(), "-o", &out], extra].concat());
        out
    }

    /// Builds the part `-DPART_LIB` as `file` with 16 entry NOPs per function (patchable),
    /// loads it (`RTLD_NOW | RTLD_GLOBAL`) and returns the handle.
    pub(crate) fn load_lib(&self, file: &str) -> *mut c_void {
        let lib = self.build("LIB", file, &["-fpatchable-function-entry=16"]);
        let c = CString::new(lib.as_str()).unwrap();
        // SAFETY: dlopen of the fixture just built.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        assert!(!h.is_null(), "dlopen {lib}");
        h
    }
}
