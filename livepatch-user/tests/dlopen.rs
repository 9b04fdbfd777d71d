//! Libraries loaded and unloaded while patches name them (the core's late and going objects;
//! the kernel's VM scenario s13, `lp.only=late`, in a process): `tests/c/late_app.c` runs 3
//! registered worker threads calling `late_f()` of `liblate.so`, which it loads (`dlopen`)
//! and unloads (`dlclose`) on command; `livepatchctl` applies and disables
//! `tests/c/late_patch.c`, which names `late_f` in `liblate.so`.
//!
//! 1. patch enabled before the library exists → the loaded library runs the new code in
//!    every thread (its constructor ran before the runtime patched it: the original);
//! 2. `dlclose` + reload at another address → patched again;
//! 3. disable while it is loaded → the original;
//! 4. enable over the loaded library → the new code; then `dlclose` (it goes);
//! 5. load after the patch is gone → the original.
//!
//! Also: the library comes during an enable transition (a thread held inside a patched
//! function of the program): each thread runs the library's code of its own universe.
//!
//! And the failure path: a patch naming a function the library lacks is applied while the
//! library is unloaded; the load is refused by the runtime — the library loads and runs
//! unpatched, nothing of it half-patched — and `livepatchctl libs`/`stats` say so.

mod common;

use common::program::{Build, Running};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

struct App {
    run: Running,
    ctl: PathBuf,
    sock: String,
}

impl App {
    fn ask(&mut self, command: &str) -> String {
        writeln!(self.run.stdin, "{command}").unwrap();
        self.run.stdin.flush().unwrap();
        self.run.line(&format!("an answer to `{command}`"), Duration::from_secs(30))
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(&self.ctl).arg(&self.sock).args(args).output().unwrap();
        let answer = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "livepatchctl {args:?}: {answer}");
        answer
    }

    /// (old, new) results of `late_f()` over the workers and main since the check started.
    fn check(&mut self) -> (u64, u64) {
        let (old, new, _) = self.check_with_holder();
        (old, new)
    }

    /// [`check`](Self::check), and the holder thread's (old, new) meanwhile.
    fn check_with_holder(&mut self) -> (u64, u64, (u64, u64)) {
        let line = self.ask("check");
        let n: Vec<u64> = line.split(' ').map(|w| w.split('=').nth(1).unwrap().parse().unwrap()).collect();
        assert_eq!(n[2], 0, "late_f returned something else: {line}");
        (n[0], n[1], (n[3], n[4]))
    }

    /// A counter of `livepatchctl stats`.
    fn stat(&self, name: &str) -> u64 {
        let stats = self.ctl(&["stats"]);
        let at = stats.find(&format!("{name}: ")).unwrap_or_else(|| panic!("no {name} in {stats}")) + name.len() + 2;
        stats[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    }

    fn load(&mut self) -> (String, u32) {
        self.load_with("load")
    }

    fn load_with(&mut self, command: &str) -> (String, u32) {
        let line = self.ask(command);
        let mut words = line.split(' ');
        assert_eq!(words.next(), Some("loaded"), "{line}");
        let base = words.next().unwrap().to_string();
        let ctor = words.next().unwrap().strip_prefix("ctor=").unwrap().parse().unwrap();
        (base, ctor)
    }
}

#[test]
fn a_library_loaded_after_the_patch_is_patched_and_unpatched_with_its_lifetime() {
    let build = Build::new("dlopen");
    let app = build.program("late_app.c", "late_app");
    let lib = build.library("late_lib.c", "liblate.so");
    let patch = |out: &str, extra: &[&str]| build.patch("late_patch.c", out, extra);
    let (fix, missing) = (patch("late_fix.so", &[]), patch("late_missing.so", &["-DMISSING"]));
    let (global, hold) = (patch("late_global.so", &["-DGLOBAL"]), patch("late_hold.so", &["-DHOLD"]));

    let sock = build.out("late.sock");
    let run = Running::start(&app, &[&sock, &lib]);
    let mut app = App { run, ctl: build.ctl.clone(), sock };
    assert_eq!(app.run.line("ready", Duration::from_secs(10)), "ready");

    // 1. The patch is enabled while the library does not exist; then it is loaded.
    assert_eq!(app.ctl(&["apply", &fix]).trim(), "ok 1");
    assert!(app.ctl(&["libs"]).contains("liblate.so unloaded"));
    let (base1, ctor) = app.load();
    assert_eq!(ctor, 100, "the constructor runs before the runtime patches the library");
    let (old, new) = app.check();
    assert!(old == 0 && new > 0, "1. loaded after the patch: old {old}, new {new}");
    assert!(app.ctl(&["libs"]).contains(&format!("liblate.so loaded at {base1}")));

    // 2. Unloaded, reloaded at another address: patched again.
    assert_eq!(app.ask("close"), "closed gone");
    let (base2, _) = app.load();
    assert_ne!(base1, base2, "the reload must map the library elsewhere");
    let (old, new) = app.check();
    assert!(old == 0 && new > 0, "2. reloaded at {base2}: old {old}, new {new}");

    // 3. Disabled while the library is loaded: the original.
    assert_eq!(app.ctl(&["disable", "1"]).trim(), "ok");
    let (old, new) = app.check();
    assert!(old > 0 && new == 0, "3. disabled: old {old}, new {new}");

    // 4. Enabled over the loaded library, then the library is unloaded.
    assert_eq!(app.ctl(&["apply", &fix]).trim(), "ok 2");
    let (old, new) = app.check();
    assert!(old == 0 && new > 0, "4. enabled over the loaded library: old {old}, new {new}");
    assert_eq!(app.ask("close"), "closed gone");
    assert_eq!((app.stat("libraries_loaded"), app.stat("libraries_gone")), (2, 2));

    // 5. The patch is gone; the library is loaded again: the original.
    assert_eq!(app.ctl(&["disable", "2"]).trim(), "ok");
    let (_, ctor) = app.load();
    assert_eq!(ctor, 100);
    let (old, new) = app.check();
    assert!(old > 0 && new == 0, "5. loaded after the patch is gone: old {old}, new {new}");
    assert_eq!(app.ask("close"), "closed gone");

    // A patch naming a function the library lacks: applied while it is unloaded (nothing to
    // resolve yet); the load is refused, the library runs unpatched, the process lives on.
    assert_eq!(app.ctl(&["apply", &missing]).trim(), "ok 3");
    let (base3, _) = app.load();
    let (old, new) = app.check();
    assert!(old > 0 && new == 0, "a refused library runs the original: old {old}, new {new}");
    let libs = app.ctl(&["libs"]);
    assert!(
        libs.contains(&format!("liblate.so refused at {base3}: function `late_missing in liblate.so` not found")),
        "{libs}"
    );
    assert_eq!(app.stat("libraries_refused"), 1);
    // Closing a refused library is an ordinary dlclose; the patch stays registered and is
    // refused again at the next load; it is disabled like any other.
    assert_eq!(app.ask("close"), "closed gone");
    assert!(app.ctl(&["libs"]).contains("liblate.so unloaded"));
    assert_eq!(app.ctl(&["disable", "3"]).trim(), "ok");
    let (_, _) = app.load();
    let (old, new) = app.check();
    assert!(old > 0 && new == 0);
    // The same patch applied while the library is loaded is refused at apply, nothing
    // registered, the library untouched.
    let out = Command::new(&app.ctl).arg(&app.sock).args(["apply", &missing]).output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success() && answer.contains("`late_missing in liblate.so` not found"), "{answer}");
    assert_eq!(app.ctl(&["list"]).trim(), "");
    let (old, new) = app.check();
    assert!(old > 0 && new == 0);
    assert_eq!(app.ask("close"), "closed gone");

    // The library comes while the patch's enable transition is in progress: a thread sits
    // inside hold_here(), which the patch also replaces, so it cannot switch. In the library
    // loaded meanwhile, the switched threads run the new late_f and the holder the old one,
    // each in its own universe; once released, it switches and the transition completes.
    assert_eq!(app.ask("hold"), "holding");
    // `livepatchctl apply` waits for the transition, and the control socket serves one
    // session at a time: the apply runs on a thread, and the program itself says when the
    // hook is in place (hold_here's entry no longer NOPs).
    let (ctl, sock, hold_path) = (app.ctl.clone(), app.sock.clone(), hold.clone());
    let apply = std::thread::spawn(move || Command::new(ctl).arg(sock).args(["apply", &hold_path]).output().unwrap());
    while app.ask("hooked") != "hooked yes" {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = app.load();
    let (old, new, (held_old, held_new)) = app.check_with_holder();
    assert!(
        old == 0 && new > 0 && held_old > 0 && held_new == 0,
        "coming during the transition: switched threads old {old} new {new}, held thread old {held_old} new {held_new}"
    );
    assert_eq!(app.ask("release"), "released");
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("STALLS {}", app.ctl(&["stalls"]));
    let out = apply.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 4");
    let (old, new) = app.check();
    assert!(old == 0 && new > 0);
    assert_eq!(app.ctl(&["disable", "4"]).trim(), "ok");
    assert_eq!(app.ask("close"), "closed gone");

    // A patch replacing late_f through the global scope (the library loaded RTLD_GLOBAL),
    // not by library name: no going unpatches it, and none needs to: the runtime's
    // `dlsym(RTLD_DEFAULT)` made glibc record a dependency of the runtime on the library,
    // which therefore stays mapped after its last dlclose (and stays patched).
    let _ = app.load_with("loadg");
    assert_eq!(app.ctl(&["apply", &global]).trim(), "ok 5");
    let (old, new) = app.check();
    assert!(old == 0 && new > 0, "global-scope patch: old {old}, new {new}");
    assert_eq!(app.ask("close"), "closed still-loaded");
    let _ = app.load();
    let (old, new) = app.check();
    assert!(old == 0 && new > 0, "still patched: old {old}, new {new}");
    assert_eq!(app.ctl(&["disable", "5"]).trim(), "ok");
    let (old, new) = app.check();
    assert!(old > 0 && new == 0, "global-scope patch disabled: old {old}, new {new}");

    drop(app.run.stdin);
    assert!(app.run.child.wait().unwrap().success());
}
