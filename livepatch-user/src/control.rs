//! The control socket: an operator's commands to a running process, one per connection line.
//!
//! A program starts the server with [`serve`] (or `livepatch_serve` from C); the
//! `livepatchctl` tool connects to the socket and sends one command per line:
//!
//! | command            | answer                                                        |
//! |--------------------|---------------------------------------------------------------|
//! | `apply PATH`       | enables the patch in the shared object, waits; `ok HANDLE`   |
//! | `disable HANDLE`   | disables (removes) a patch, waits; `ok`                      |
//! | `reverse`          | reverses the transition in progress, waits; `ok`             |
//! | `list`             | one line per registered patch: `HANDLE NAME enabled/… PATH`   |
//! | `stalls`           | the last attempt's stragglers: `tid TID: REPORT`             |
//! | `stats`            | the runtime's counters, then the shadow variables' ones      |
//!
//! Every answer ends with a line `.`; errors are a line `error: …`.

use crate::runtime::Runtime;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

/// How long a command waits for its transition before answering (it keeps running).
const WAIT: Duration = Duration::from_secs(10);

/// Runs one command line and returns the answer's lines.
pub fn execute(rt: &Runtime, line: &str) -> Vec<String> {
    // The command is the first word; its argument the rest of the line (a path may hold
    // spaces), trimmed.
    let line = line.trim();
    let (cmd, arg) = match line.split_once(char::is_whitespace) {
        Some((cmd, rest)) => (cmd, Some(rest.trim())),
        None => (line, None),
    };
    let waited = |r: Result<(), crate::Error>| -> Result<(), crate::Error> {
        r?;
        rt.wait(WAIT).map(|_| ())
    };
    let result: Result<Vec<String>, crate::Error> = match (cmd, arg) {
        ("apply", Some(path)) => rt.apply(path).and_then(|h| waited(Ok(())).map(|_| vec![format!("ok {h}")])),
        ("disable", Some(h)) => match h.parse::<u32>() {
            Ok(h) => waited(rt.disable(h)).map(|_| vec!["ok".into()]),
            Err(_) => Ok(vec![format!("error: bad handle `{h}`")]),
        },
        ("reverse", None) => waited(rt.reverse()).map(|_| vec!["ok".into()]),
        ("list", None) => Ok(rt
            .list()
            .into_iter()
            .map(|p| {
                let state = if p.enabled { "enabled" } else { "disabling" };
                let replace = if p.replace { " replace" } else { "" };
                format!("{} {} {state}{replace} {}", p.handle, p.name, p.path)
            })
            .collect()),
        ("libs", None) => Ok(rt
            .libraries()
            .into_iter()
            .map(|l| match l.state {
                crate::objects::LibraryState::Unloaded => format!("{} {} unloaded", l.id.0, l.name),
                crate::objects::LibraryState::Loaded { base, .. } => {
                    format!("{} {} loaded at {base:#x}", l.id.0, l.name)
                }
                crate::objects::LibraryState::Refused { base, error } => {
                    format!("{} {} refused at {base:#x}: {error}", l.id.0, l.name)
                }
            })
            .collect()),
        ("stalls", None) => Ok(rt.stalls().into_iter().map(|s| format!("tid {}: {}", s.tid, s.report)).collect()),
        ("stats", None) => Ok(vec![format!("{:?}", rt.stats()), format!("{:?}", crate::shadow::stats())]),
        _ => Ok(vec![format!("error: unknown command `{line}`")]),
    };
    result.unwrap_or_else(|e| vec![format!("error: {e}")])
}

fn session(rt: &Runtime, stream: UnixStream) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        for answer in execute(rt, &line?) {
            writeln!(out, "{answer}")?;
        }
        writeln!(out, ".")?;
    }
    Ok(())
}

/// Listens on the Unix socket at `path` (replacing a stale one) on a thread of its own; each
/// connection is served in turn. The thread is not registered: it runs no patched code.
pub fn serve(path: &str) -> std::io::Result<std::thread::JoinHandle<()>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new().name("livepatch-control".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Ok(rt) = Runtime::get() {
                let _ = session(rt, stream);
            }
        }
    })
}
