//! Stack walks of the calling thread: by frame pointers, or conservatively.
//!
//! A thread walks its own stack (from a hook, a safe point or a signal handler that
//! interrupted it), starting where that entry point says ([`Start`]). The one exception is a
//! stop of the stop-the-world model ([`crate::stop`]): its controller walks every parked
//! thread from the context its stop handler recorded, and its own stack by the conservative
//! scan.
//!
//! 1. **The frame-pointer chain** ([`chain`]): every return address on it must lie in
//!    *trusted* code — objects declared built with frame pointers ([`trust_code`],
//!    `livepatch_trust_object`); the chain must rise strictly, stay 8-aligned and end exactly
//!    at the frame record of the thread's start routine (registered by
//!    [`crate::threads::begin`]). A signal can interrupt a function before its frame is set up,
//!    after it is torn down, or in a leaf that keeps none: its return address is then in
//!    `[rsp, rbp)`, not on the chain, so every trusted word there is reported too, as is the
//!    interrupted `rip`.
//! 2. **The conservative scan** ([`scan`]), when the chain breaks (an untrusted frame: libc
//!    blocked in a system call, a library without frame pointers, a callback): every return
//!    address of a live frame lies between the stack pointer and the base frame, so every
//!    word there that points into trusted code is reported. It is sound without any frame
//!    pointers because patched code must be trusted code ([`crate::patch_so::load`] refuses
//!    anything else); a stale word in a dead slot only delays a switch. Only a stack too
//!    large for it (over 8 MiB) is unreliable.
//!
//! An interruption inside the trampoline, or while the thread's in-hook flag is set (from
//! the start of a hook decision until the trampoline's jump), is [`ErrorKind::InRedirect`].
//! So is a *signal frame* on the walked stack whose saved `rip` is inside the trampoline
//! (`scan_word`; any other saved `rip` is a frame): a handler of the program's own
//! interrupted the thread between a decision and its jump, and a switch from inside that
//! handler (a hooked call or a safe point there, a kick landing in it) would leave the
//! decision to be used in the other universe (`tests/nested_decision.rs`).

use crate::hook;
use crate::stop::{self, Stopped};
use crate::threads::{self, Thread};
use livepatch_core::backend::{ErrorKind, StackWalker, WalkError};
use livepatch_core::CodeAddr;
use std::cell::Cell;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Where the calling thread's walk starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// No entry point set one: the walk is unreliable.
    None,
    /// At a call: `ret` is the return address into the caller (0: none, a thread's start
    /// routine), whose frame record is `fp`.
    Call {
        /// The return address.
        ret: usize,
        /// The caller's frame pointer.
        fp: usize,
        /// Where the return address is stored: the caller's stack starts there.
        sp: usize,
    },
    /// An interrupted context (a signal handler's).
    Interrupted {
        /// The interrupted instruction.
        pc: usize,
        /// Its stack pointer.
        sp: usize,
        /// Its frame pointer.
        fp: usize,
    },
}

thread_local! {
    static START: Cell<Start> = const { Cell::new(Start::None) };
    /// The `top` ([`Thread::outlived`]) of the hook decision the thread is in, 0 outside one.
    static IN_HOOK: Cell<usize> = const { Cell::new(0) };
    /// The `witness` of that decision: the return address into the hooked function's caller.
    static IN_HOOK_WITNESS: Cell<usize> = const { Cell::new(0) };
    /// What a nested decision's trampoline clears instead of `IN_HOOK` (never read).
    static NESTED_SINK: Cell<usize> = const { Cell::new(0) };
}

/// Sets where the calling thread's next walks start; returns the previous start (a signal
/// handler restores it: it may have interrupted a hook that set one).
pub(crate) fn set_start(start: Start) -> Start {
    START.with(|s| s.replace(start))
}

/// Marks the calling thread as inside the hook decision that entered the runtime with `top`
/// and `witness` (the slot of the return address into the hooked function's caller, and that
/// address: [`Thread::outlived`]).
pub(crate) fn set_in_hook(top: usize, witness: usize) {
    IN_HOOK_WITNESS.with(|s| s.set(witness));
    IN_HOOK.with(|s| s.set(top));
}

/// Whether the calling thread, `thread`, is inside a hook decision that is still live, seen
/// from a context whose stack lies below `here` (an interrupted stack pointer, or the slot of
/// a return address into the code that entered the runtime).
///
/// A decision that never returned (a signal handler of the program's own interrupted it and
/// left with `siglongjmp`: the trampoline never cleared the flag) is over once the thread
/// runs at or above the decision's `top` on its stack, or the return address there changed
/// ([`Thread::outlived`]): such a flag is ignored, and the next decision replaces it
/// (`tests/longjmp_decision.rs`).
pub(crate) fn in_hook(thread: &Thread, here: usize) -> bool {
    let top = IN_HOOK.with(|s| s.get());
    top != 0 && !thread.outlived(top, IN_HOOK_WITNESS.with(|s| s.get()), here)
}

/// The address of the calling thread's in-hook flag (a `Cell<usize>`: 0 is outside any
/// decision), which the trampoline clears.
pub(crate) fn in_hook_flag() -> *const usize {
    IN_HOOK.with(|s| s as *const Cell<usize> as *const usize)
}

/// A word of the calling thread's that a nested decision's trampoline clears instead of the
/// in-hook flag, which belongs to the decision it interrupted ([`crate::hook`]).
pub(crate) fn nested_sink() -> *const usize {
    NESTED_SINK.with(|s| s as *const Cell<usize> as *const usize)
}

/// The first word of every signal frame (libc's `sa_restorer`, [`crate::sys::restorer_of`];
/// 0: unknown, no frame is recognised).
static RESTORER: AtomicUsize = AtomicUsize::new(0);

/// Records the signal frames' return address (once, at initialisation).
pub(crate) fn set_restorer(addr: usize) {
    RESTORER.store(addr, Ordering::Relaxed);
}

/// From a signal frame's first word (`rt_sigframe.pretcode`, the restorer) to the saved `rip`
/// in the `ucontext` that follows it.
const SIGFRAME_RIP: usize = 8
    + std::mem::offset_of!(libc::ucontext_t, uc_mcontext)
    + std::mem::offset_of!(libc::mcontext_t, gregs)
    + libc::REG_RIP as usize * 8;

const _: () = assert!(SIGFRAME_RIP.is_multiple_of(8), "the saved rip is an aligned stack word");

/// The saved `rip` of the signal frame that the word `v` at `w` starts, if it starts one (its
/// `ucontext` read only if it lies below `end`, the walk's upper bound).
fn signal_frame_pc(w: usize, v: usize, end: usize) -> Option<usize> {
    let restorer = RESTORER.load(Ordering::Relaxed);
    if restorer == 0 || v != restorer || w + SIGFRAME_RIP + 8 > end {
        return None;
    }
    Some(read(w + SIGFRAME_RIP))
}

/// A stack word of a scan: a signal frame's interrupted `rip` is a frame whatever it is (it
/// may be the very entry of a variant the thread had just jumped to, which
/// [`maybe_return_address`] would take for a function pointer:
/// `tests/nested_decision_entry.rs`), and [`Outcome::InRedirect`] inside the trampoline;
/// other words are frames if they may be return addresses.
fn scan_word<F: FnMut(CodeAddr) -> ControlFlow<()>>(w: usize, end: usize, e: &mut Emitter<F>) -> Option<Outcome> {
    let v = read(w);
    if let Some(pc) = signal_frame_pc(w, v, end) {
        let (t0, t1) = hook::trampoline_range();
        if (t0..t1).contains(&pc) {
            return Some(Outcome::InRedirect);
        }
        if let Some(o) = e.emit(pc) {
            return Some(o);
        }
    }
    if maybe_return_address(v) {
        return e.emit(v);
    }
    None
}

const MAX_REGIONS: usize = 64;
static REGIONS: [(AtomicUsize, AtomicUsize); MAX_REGIONS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; MAX_REGIONS];
static REGION_COUNT: AtomicUsize = AtomicUsize::new(0);
static REGION_LOCK: Mutex<()> = Mutex::new(());

/// Declares `[lo, hi)` code compiled with frame pointers: return addresses there are trusted
/// frames. Returns `false` when the table (64 regions) is full.
pub fn trust_code(lo: usize, hi: usize) -> bool {
    let _g = REGION_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let n = REGION_COUNT.load(Ordering::Relaxed);
    // A region emptied by `distrust_code` is reused: `hi` first, then `lo`, so a reader that
    // sees any mix of the old (empty: `usize::MAX`, 0) and new bounds matches nothing wider.
    if let Some(free) =
        REGIONS[..n].iter().find(|(l, h)| l.load(Ordering::Relaxed) == usize::MAX && h.load(Ordering::Relaxed) == 0)
    {
        free.1.store(hi, Ordering::Relaxed);
        free.0.store(lo, Ordering::Relaxed);
        return true;
    }
    if n == MAX_REGIONS {
        return false;
    }
    REGIONS[n].0.store(lo, Ordering::Relaxed);
    REGIONS[n].1.store(hi, Ordering::Relaxed);
    // `Release`: pairs with `is_trusted`'s `Acquire`: the region is written before it counts.
    REGION_COUNT.store(n + 1, Ordering::Release);
    true
}

/// Stops trusting `[lo, hi)` (a library about to be unmapped; code mapped there later is
/// unknown). The region becomes empty (`lo` = `usize::MAX`, then `hi` = 0: a reader seeing
/// any mix of old and new bounds matches nothing wider than the old region).
pub(crate) fn distrust_code(lo: usize, hi: usize) {
    let _g = REGION_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let n = REGION_COUNT.load(Ordering::Relaxed);
    for (l, h) in &REGIONS[..n] {
        if l.load(Ordering::Relaxed) == lo && h.load(Ordering::Relaxed) == hi {
            l.store(usize::MAX, Ordering::Relaxed);
            h.store(0, Ordering::Relaxed);
        }
    }
}

/// Whether `addr` is in trusted code.
pub(crate) fn is_trusted(addr: usize) -> bool {
    let n = REGION_COUNT.load(Ordering::Acquire);
    REGIONS[..n].iter().any(|(lo, hi)| addr >= lo.load(Ordering::Relaxed) && addr < hi.load(Ordering::Relaxed))
}

/// Whether a stack word found by a conservative scan may be a return address: it must point
/// into trusted code, right after a call instruction ([`follows_call`]), and not at the entry
/// of patched code — that is a function pointer (a return address equals a function's entry
/// only after a call that is the last instruction before it, which compilers emit only for
/// calls that never return).
fn maybe_return_address(v: usize) -> bool {
    if !is_trusted(v) || !follows_call(v) {
        return false;
    }
    let entry =
        hook::live().and_then(|l| l.patched_set().lookup(CodeAddr(v))).is_some_and(|h| h.range.start().get() == v);
    !entry
}

/// The longest call instruction the scan recognises before a return address: `ff /2` with a
/// SIB byte and a 32-bit displacement (7 bytes; prefixes before the `ff` do not matter).
const LONGEST_CALL: usize = 7;

/// Whether the trusted code address `v` follows a call instruction, as every return address a
/// `call` pushed does: `e8 rel32`, or `ff /2` (an indirect call through a register or memory:
/// `call rax`, the hook's `call r11`, `call [rip + disp32]` through the PLT's GOT, …) ending
/// exactly at `v`. The one return address no call instruction precedes is the one the
/// runtime's trap handler pushes for a thread that reaches an entry while its hook is being
/// written (`site + 13`, with the padding's NOPs still there): every hook site's is accepted.
/// Words that point into a function's body elsewhere (a profiler's sample, a pointer or an
/// iterator over its code, a label's address) are not frames: `tests/stale_word.rs`.
/// Bytes before a trusted region are not read: such an address is accepted.
fn follows_call(v: usize) -> bool {
    if hook::site_state(v.wrapping_sub(hook::HOOK_LEN)).is_some() {
        return true;
    }
    let Some(from) = v.checked_sub(LONGEST_CALL) else { return true };
    if !is_trusted(from) {
        return true;
    }
    // SAFETY: `from` and `v` are both in trusted regions (checked above and by the caller):
    // executable segments of loaded objects, mapped readable in whole pages; the 7 bytes
    // between lie in the pages of those two addresses.
    let b = unsafe { &*(from as *const [u8; LONGEST_CALL]) };
    ends_with_call(b)
}

/// Whether the bytes `b` end with a call instruction (see [`follows_call`]).
fn ends_with_call(b: &[u8; LONGEST_CALL]) -> bool {
    if b[LONGEST_CALL - 5] == 0xe8 {
        return true;
    }
    (2..=LONGEST_CALL).any(|len| {
        let at = LONGEST_CALL - len;
        b[at] == 0xff && {
            let modrm = b[at + 1];
            modrm >> 3 & 7 == 2 && call_ff_len(modrm, b.get(at + 2).copied()) == len
        }
    })
}

/// The length of `ff modrm [sib] [disp]` from its ModRM byte (and SIB byte, if any).
fn call_ff_len(modrm: u8, sib: Option<u8>) -> usize {
    let (md, rm) = (modrm >> 6, modrm & 7);
    let has_sib = md != 3 && rm == 4;
    let disp = match md {
        0 if rm == 5 => 4,
        0 if has_sib && sib.is_some_and(|s| s & 7 == 5) => 4,
        1 => 1,
        2 => 4,
        _ => 0,
    };
    2 + usize::from(has_sib) + disp
}

/// The longest `[rsp, rbp)` gap scanned in an interrupted frame (64 KiB).
const MAX_SCAN: usize = 64 * 1024;

/// The stack walker: walks the calling thread (or, during a stop, the parked threads).
#[derive(Clone, Copy, Debug, Default)]
pub struct Walker;

fn read(addr: usize) -> usize {
    // SAFETY: every address passed here was checked to lie within the walked thread's live
    // stack, between its stack pointer and its start routine's frame record (+ 16), and to be
    // 8-aligned: `Walker::walk` checks the walk's lowest address against the thread's stack
    // bottom and `threads::begin` checked the frame record against its top. The walked thread
    // is the calling thread, or a thread parked by a stop (`crate::stop`) whose stack cannot
    // change until the stop ends.
    unsafe { std::ptr::read_volatile(addr as *const usize) }
}

/// Where a walk stopped.
enum Outcome {
    /// The closure broke at frame `.0`, or the walk ended reliably after `.0` frames.
    Done(usize),
    /// Too many frames.
    TooDeep,
    /// The frame-pointer chain could not be followed reliably.
    Unreliable,
    /// A signal frame interrupted the trampoline ([`scan_word`]).
    InRedirect,
}

/// Hands frames to the core's closure, counting them against the depth limit.
struct Emitter<F> {
    frame: F,
    n: usize,
    max: usize,
}

impl<F: FnMut(CodeAddr) -> ControlFlow<()>> Emitter<F> {
    /// `Some(outcome)` when the walk must stop.
    fn emit(&mut self, addr: usize) -> Option<Outcome> {
        self.n += 1;
        if self.n > self.max {
            return Some(Outcome::TooDeep);
        }
        match (self.frame)(CodeAddr(addr)) {
            ControlFlow::Break(()) => Some(Outcome::Done(self.n)),
            ControlFlow::Continue(()) => None,
        }
    }
}

/// The precise walk: the start's frames, then the frame-pointer chain up to `base`.
fn chain<F: FnMut(CodeAddr) -> ControlFlow<()>>(
    start: Start,
    floor: usize,
    base: usize,
    e: &mut Emitter<F>,
) -> Outcome {
    let (mut fp, mut prev) = match start {
        Start::None => return Outcome::Unreliable,
        Start::Call { ret, fp, .. } => {
            // `ret == 0`: a thread's first frame, with no caller.
            if ret != 0 {
                if !is_trusted(ret) {
                    return Outcome::Unreliable;
                }
                if let Some(o) = e.emit(ret) {
                    return o;
                }
            }
            (fp, floor)
        }
        Start::Interrupted { pc, sp, fp } => {
            if let Some(o) = e.emit(pc) {
                return o;
            }
            if fp < sp || fp - sp > MAX_SCAN || fp > base || !sp.is_multiple_of(8) {
                return Outcome::Unreliable;
            }
            // The interrupted function may have no frame yet (or any more): its return
            // address is then in `[sp, fp)`. So may a signal frame (a handler of the
            // program's interrupted before its prologue).
            for w in (sp..fp).step_by(8) {
                if let Some(o) = scan_word(w, base + 16, e) {
                    return o;
                }
            }
            (fp, sp)
        }
    };
    loop {
        if fp == base {
            return Outcome::Done(e.n);
        }
        if !fp.is_multiple_of(8) || fp <= prev || fp > base {
            return Outcome::Unreliable;
        }
        let ret = read(fp + 8);
        if !is_trusted(ret) {
            return Outcome::Unreliable;
        }
        if let Some(o) = e.emit(ret) {
            return o;
        }
        // The trampoline's frame: it returns into a hooked entry, which was called before it
        // set up a frame, so the return address into *its* caller is the next word, not on
        // the chain.
        if hook::site_state(ret.wrapping_sub(hook::HOOK_LEN)).is_some() {
            let caller = read(fp + 16);
            if !is_trusted(caller) {
                return Outcome::Unreliable;
            }
            if let Some(o) = e.emit(caller) {
                return o;
            }
        }
        prev = fp;
        fp = read(fp);
    }
}

/// The conservative walk, when the chain breaks (a library without frame pointers between
/// the interruption and the thread's base): every return address of a live frame lies
/// between the stack pointer and the base frame, so every word there that points into
/// trusted code is reported. Sound without frame pointers (patched code is trusted code, as
/// [`crate::patch_so::load`] requires); stale words in dead slots only delay a switch.
fn scan<F: FnMut(CodeAddr) -> ControlFlow<()>>(sp: usize, base: usize, e: &mut Emitter<F>) -> Outcome {
    if !sp.is_multiple_of(8) || sp > base || base - sp > MAX_STACK {
        return Outcome::Unreliable;
    }
    for w in (sp..base + 16).step_by(8) {
        if let Some(o) = scan_word(w, base + 16, e) {
            return o;
        }
    }
    Outcome::Done(e.n)
}

/// The largest stack a conservative walk scans (8 MiB, glibc's default thread stack).
const MAX_STACK: usize = 8 << 20;

impl StackWalker for Walker {
    type Task = Thread;
    type Error = ErrorKind;

    fn walk<F>(&self, task: &Thread, max_depth: usize, frame: F) -> Result<usize, WalkError<ErrorKind>>
    where
        F: FnMut(CodeAddr) -> ControlFlow<()>,
    {
        let marker = 0u8;
        // Everything above this function's frame is the caller's.
        let here = &marker as *const u8 as usize;
        let base = task.base_fp();
        let start = match stop::view(task) {
            Stopped::NoStop => {
                let Some(me) = threads::current() else { return Err(WalkError::Backend(ErrorKind::Running)) };
                if !std::ptr::eq(me, task) {
                    return Err(WalkError::Backend(ErrorKind::Running));
                }
                let start = START.with(|s| s.get());
                if let Start::Interrupted { pc, sp, .. } = start {
                    let (t0, t1) = hook::trampoline_range();
                    if in_hook(task, sp) || (pc >= t0 && pc < t1) {
                        return Err(WalkError::Backend(ErrorKind::InRedirect));
                    }
                }
                start
            }
            // A stop is running on this thread (the controller): see `crate::stop`.
            Stopped::NotStarted => return Ok(0),
            Stopped::Running => return Err(WalkError::Backend(ErrorKind::Running)),
            // Its stop handler parked it only outside any hook decision.
            Stopped::Parked { pc, sp, fp } => Start::Interrupted { pc, sp, fp },
            Stopped::Controller => {
                // Inside the engine: every frame above the runtime's entry into it is scanned.
                if base == 0 {
                    return Err(WalkError::Backend(ErrorKind::Unreliable));
                }
                let from = stop::controller_scan_start(here).next_multiple_of(8);
                // As below: the scan reads `[from, base + 16)`, the controller's own stack.
                if from < task.stack_lo() {
                    return Err(WalkError::Backend(ErrorKind::Unreliable));
                }
                let mut e = Emitter { frame, n: 0, max: max_depth };
                return finish(scan(from, base, &mut e));
            }
        };
        let sp = match start {
            _ if base == 0 => return Err(WalkError::Backend(ErrorKind::Unreliable)),
            Start::None => return Err(WalkError::Backend(ErrorKind::Unreliable)),
            Start::Call { sp, .. } | Start::Interrupted { sp, .. } => sp,
        };
        // Every read below is in `[lowest, base + 16)`: the chain's from above its floor
        // (`here` for a call, `sp` for an interruption), the scan's from `sp`. That is the
        // walked thread's stack only if `lowest` is on it (`threads::begin` checked `base`):
        // a thread running on another stack (a coroutine's, a signal stack) is unreliable.
        let lowest = match start {
            Start::Call { .. } => here.min(sp),
            _ => sp,
        };
        if lowest < task.stack_lo() || lowest > base {
            return Err(WalkError::Backend(ErrorKind::Unreliable));
        }
        let mut e = Emitter { frame, n: 0, max: max_depth };
        let mut outcome = chain(start, here, base, &mut e);
        if let Outcome::Unreliable = outcome {
            e.n = 0;
            if let Start::Interrupted { pc, .. } = start {
                if let Some(o) = e.emit(pc) {
                    outcome = o;
                }
            }
            if let Outcome::Unreliable = outcome {
                outcome = scan(sp, base, &mut e);
            }
        }
        finish(outcome)
    }
}

/// The walk's result.
fn finish(outcome: Outcome) -> Result<usize, WalkError<ErrorKind>> {
    match outcome {
        Outcome::Done(n) => Ok(n),
        Outcome::TooDeep => Err(WalkError::TooDeep),
        Outcome::Unreliable => Err(WalkError::Backend(ErrorKind::Unreliable)),
        Outcome::InRedirect => Err(WalkError::Backend(ErrorKind::InRedirect)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 7 bytes before a return address: `code` right-aligned after NOPs.
    fn before(code: &[u8]) -> [u8; LONGEST_CALL] {
        let mut b = [0x90; LONGEST_CALL];
        b[LONGEST_CALL - code.len()..].copy_from_slice(code);
        b
    }

    #[test]
    fn the_call_forms_compilers_emit_are_recognised_and_nothing_else() {
        let calls: [&[u8]; 9] = [
            &[0xe8, 1, 2, 3, 4],             // call rel32
            &[0xff, 0xd0],                   // call rax
            &[0x41, 0xff, 0xd3],             // call r11 (the hook's)
            &[0xff, 0x15, 1, 2, 3, 4],       // call [rip + disp32] (the GOT)
            &[0xff, 0x50, 0x08],             // call [rax + 8]
            &[0xff, 0x90, 1, 2, 3, 4],       // call [rax + disp32]
            &[0xff, 0x54, 0x24, 0x08],       // call [rsp + 8] (SIB, disp8)
            &[0xff, 0x14, 0x25, 1, 2, 3, 4], // call [disp32] (SIB without base)
            &[0x3e, 0xff, 0xd0],             // notrack call rax
        ];
        for c in calls {
            assert!(ends_with_call(&before(c)), "{c:02x?}");
        }
        let others: [&[u8]; 6] = [
            &[],                       // NOPs: a function's first instruction after its padding
            &[0xff, 0xe0],             // jmp rax
            &[0xff, 0x25, 1, 2, 3, 4], // jmp [rip + disp32]
            &[0x55, 0x48, 0x89, 0xe5], // push rbp; mov rbp, rsp
            &[0xff, 0x50],             // call [rax + disp8] cut short: the disp8 is not there
            &[0xc3],                   // ret
        ];
        for c in others {
            assert!(!ends_with_call(&before(c)), "{c:02x?}");
        }
    }
}
