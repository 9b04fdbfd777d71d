//! The `livepatch-sim` command: listing, a small run with a report, and bad input.

use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_livepatch-sim"))
}

#[test]
fn lists_scenarios_and_models() {
    let out = sim().arg("--list").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["default", "busy-target", "cpu-bound-kthread", "linux-6.12", "stop-the-world"] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[test]
fn runs_a_scenario_and_writes_a_report() {
    let dir = std::env::temp_dir().join(format!("livepatch-sim-cli-{}", std::process::id()));
    let out = sim()
        .args(["--scenario", "basic", "--model", "linux,improved", "--seed", "2", "--out"])
        .arg(&dir)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("| model | converged |"), "{text}");
    assert!(text.contains("| linux | yes |") || text.contains("| linux-6.12 | yes |"), "{text}");
    for f in ["summary.md", "results.json", "old-universe.svg"] {
        let p = dir.join(f);
        assert!(p.metadata().is_ok_and(|m| m.len() > 0), "{} missing", p.display());
    }
    let json = std::fs::read_to_string(dir.join("results.json")).expect("json");
    assert!(json.contains("\"converged\": true"));
    let svg = std::fs::read_to_string(dir.join("old-universe.svg")).expect("svg");
    assert!(svg.starts_with("<svg") && svg.contains("improved"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_and_values_fail_with_a_message() {
    for args in [
        &["--scenario", "no-such-scenario"][..],
        &["--model", "windows"],
        &["--tasks", "0"],
        &["--cpus", "many"],
        &["--compare", "some"],
        &["--frobnicate"],
    ] {
        let out = sim().args(args).arg("--no-report").output().expect("runs");
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}

#[test]
fn replays_a_soak_run() {
    let out = sim().args(["--replay", "3", "--model", "improved"]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("| improved |"));
}

#[test]
fn runs_a_small_soak() {
    let out = sim().args(["--soak", "20000", "--seed", "5"]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 violations"));
}
