//! The C programs of the end-to-end tests, built and run as a user would: a target linked
//! against `liblivepatch_user.so`, libraries and patch objects, and the running process with
//! its stdin and a line reader on its stdout.

use super::cc;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// Flags of code the runtime may patch: patchable entries and frame pointers everywhere.
const PATCHABLE: [&str; 4] =
    ["-O2", "-fpatchable-function-entry=16", "-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer"];

/// Where one test's programs are built from and to.
pub(crate) struct Build {
    /// `livepatchctl`.
    pub(crate) ctl: PathBuf,
    src: PathBuf,
    dir: PathBuf,
    inc: String,
    libdir: PathBuf,
}

impl Build {
    /// Sources in `tests/c`, outputs in the test's own scratch directory `name`.
    pub(crate) fn new(name: &str) -> Self {
        let ctl = PathBuf::from(env!("CARGO_BIN_EXE_livepatchctl"));
        // The cdylib is built with the tests, in `deps/` (and uplifted next to the tool by
        // `cargo build`): `deps/` first, the copy next to the tool is only refreshed by
        // `cargo build`.
        let bin = ctl.parent().unwrap();
        let libdir = [bin.join("deps"), bin.to_path_buf()]
            .into_iter()
            .find(|d| d.join("liblivepatch_user.so").exists())
            .expect("liblivepatch_user.so is built");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            ctl,
            src: manifest.join("tests/c"),
            dir,
            inc: format!("-I{}", manifest.join("include").display()),
            libdir,
        }
    }

    /// The path of output `name`.
    pub(crate) fn out(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    fn source(&self, name: &str) -> String {
        self.src.join(name).to_str().unwrap().to_owned()
    }

    /// A patchable program from `source`, linked against the runtime (found through its
    /// runpath); returns its path.
    pub(crate) fn program(&self, source: &str, out: &str) -> String {
        let (l, rpath) = (format!("-L{}", self.libdir.display()), format!("-Wl,-rpath,{}", self.libdir.display()));
        let (src, out) = (self.source(source), self.out(out));
        let tail = ["-rdynamic", "-pthread", &self.inc, &src, &l, &rpath, "-llivepatch_user", "-o", &out];
        cc(&[&PATCHABLE[..], &tail[..]].concat());
        out
    }

    /// A patchable shared library from `source`; returns its path.
    pub(crate) fn library(&self, source: &str, out: &str) -> String {
        let (src, out) = (self.source(source), self.out(out));
        cc(&[&PATCHABLE[..], &["-fPIC", "-shared", &src, "-o", &out]].concat());
        out
    }

    /// A patch object from `source`, with `extra` flags (e.g. `-DFIX=2`); returns its path.
    pub(crate) fn patch(&self, source: &str, out: &str, extra: &[&str]) -> String {
        let (src, out) = (self.source(source), self.out(out));
        let head = ["-O2", "-fPIC", "-shared", "-fno-omit-frame-pointer", &self.inc];
        cc(&[&head[..], extra, &[&src, "-o", &out]].concat());
        out
    }
}

/// A started program: its stdin, and its stdout's lines read on a thread, so that a program
/// that never prints fails the test instead of hanging it.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) lines: Receiver<String>,
}

impl Running {
    /// Starts `program` with `args`. The runtime is found through the program's runpath, not
    /// cargo's `LD_LIBRARY_PATH`: that lists the directory where `cargo build` uplifts the
    /// library first, whose copy may be older than the test's.
    pub(crate) fn start(program: &str, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .env_remove("LD_LIBRARY_PATH")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the program");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
        let stdin = child.stdin.take().unwrap();
        Self { child, stdin, lines }
    }

    /// The next line, within `timeout`; otherwise the program is killed and the test fails
    /// saying it did not print `what`.
    pub(crate) fn line(&mut self, what: &str, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(_) => {
                let _ = self.child.kill();
                panic!("the program did not print {what}");
            }
        }
    }
}
