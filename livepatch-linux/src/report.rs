//! The stall report's text: one line per straggler, written into a fixed buffer.
//!
//! Shared verbatim by the kernel module (`module/control.rs` includes this file) and the host
//! tests below, so the format the e2e test greps for is unit-tested.

use core::fmt::{self, Write};
use livepatch_core::backend::TaskKind;
use livepatch_core::sweep::StallReason;
use livepatch_core::CodeRange;

/// A `fmt::Write` into a fixed byte buffer that truncates instead of failing.
#[derive(Debug)]
pub struct Buf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Buf<'a> {
    /// An empty writer over `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Buf { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The text written so far (whole UTF-8 characters only).
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            // Truncation may have cut a character: drop the partial tail.
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// One straggler as the report shows it.
#[derive(Clone, Copy, Debug)]
pub struct StallLine<'a> {
    /// Its pid (0 for idle tasks).
    pub pid: i32,
    /// Its command name.
    pub comm: &'a str,
    /// Its kind.
    pub kind: TaskKind,
    /// Why it has not switched.
    pub reason: StallReason,
    /// Whether the last pass kicked it.
    pub kicked: bool,
}

/// Writes `line` as `task <pid> <comm> <kind>: <reason>[ [kicked]]\n`; a frame in patched code
/// is named with `name_of` (the original function's range → its symbol).
pub fn write_stall(
    out: &mut impl Write,
    line: &StallLine<'_>,
    name_of: impl Fn(CodeRange) -> Option<&'static str>,
) -> fmt::Result {
    write!(out, "task {} {} {:?}: ", line.pid, line.comm, line.kind)?;
    match line.reason {
        StallReason::OnStack { function, variant, frame, addr, .. } => {
            let which = if variant.is_some() { "replacement" } else { "original" };
            write!(out, "in {} ({}) at frame {} ({})", name_of(function).unwrap_or("?"), which, frame, addr)?;
        }
        other => write!(out, "{other}")?,
    }
    writeln!(out, "{}", if line.kicked { " [kicked]" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use livepatch_core::{CodeAddr, SlotId};

    fn range(start: usize) -> CodeRange {
        CodeRange::new(start, 0x40).unwrap()
    }

    #[test]
    fn a_sleeper_in_the_original_is_named_with_its_function() {
        let mut mem = [0u8; 256];
        let mut out = Buf::new(&mut mem);
        let line = StallLine {
            pid: 45,
            comm: "lp_sleeper",
            kind: TaskKind::Kthread,
            reason: StallReason::OnStack {
                slot: SlotId(0),
                function: range(0x1000),
                variant: None,
                frame: 2,
                addr: CodeAddr(0x1010),
            },
            kicked: true,
        };
        write_stall(&mut out, &line, |r| (r == range(0x1000)).then_some("lp_target_sleep")).unwrap();
        let s = out.as_str();
        // The e2e test greps for the comm and the function on one line.
        assert!(s.starts_with("task 45 lp_sleeper Kthread: in lp_target_sleep (original) at frame 2 ("), "{s}");
        assert!(s.ends_with(" [kicked]\n"), "{s}");
    }

    #[test]
    fn other_reasons_use_the_core_display() {
        let mut mem = [0u8; 128];
        let mut out = Buf::new(&mut mem);
        let line = StallLine { pid: 7, comm: "sh", kind: TaskKind::User, reason: StallReason::Running, kicked: false };
        write_stall(&mut out, &line, |_| None).unwrap();
        assert_eq!(out.as_str(), "task 7 sh User: running\n");
    }

    #[test]
    fn the_buffer_truncates_instead_of_failing() {
        let mut mem = [0u8; 8];
        let mut out = Buf::new(&mut mem);
        write!(out, "0123456789").unwrap();
        assert_eq!(out.as_str(), "01234567");
        assert_eq!(out.len(), 8);
        write!(out, "more").unwrap();
        assert_eq!(out.len(), 8);
    }

    #[test]
    fn truncation_never_splits_a_character() {
        let mut mem = [0u8; 2];
        let mut out = Buf::new(&mut mem);
        write!(out, "aé").unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out.as_str(), "a");
    }
}
