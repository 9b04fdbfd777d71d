//! Function-entry hooks: the site table, the assembly trampoline and the redirect decision.
//!
//! A patchable function starts with 16 bytes of NOP instructions (`-fpatchable-function-entry=16`:
//! gcc writes sixteen one-byte NOPs, LLVM a few multi-byte ones).
//! Hooking it writes, over the first 13,
//!
//! ```text
//!   49 bb <imm64>    movabs r11, livepatch_user_trampoline
//!   41 ff d3         call   r11
//! ```
//!
//! (`r11` is scratch at a call boundary in the SysV ABI; an absolute target needs no stub
//! near the patched code). The trampoline saves the argument registers (`rdi`…`r9`, `rax` for
//! variadic calls, `r10`, `xmm0`…`xmm7`), calls [`hook_decide`] with the function's entry, the
//! caller's return address and its own frame, restores them and either returns into the
//! original past the 16 bytes of padding (the 3 bytes after the hook are the old padding's:
//! with LLVM's multi-byte NOPs they may be the middle of one) or drops its return address and
//! jumps to the variant, which then returns straight to the caller.

use crate::threads;
use crate::walk::{self, Start, Walker};
use livepatch_core::{CodeAddr, Live, Redirect, SlotId};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// NOPs a patchable entry must have (`-fpatchable-function-entry=16`).
pub const ENTRY_NOPS: usize = 16;
/// Bytes the hook occupies.
pub(crate) const HOOK_LEN: usize = 13;

std::arch::global_asm!(
    ".pushsection .text.livepatch_user_trampoline,\"ax\",@progbits",
    ".p2align 4",
    ".globl livepatch_user_trampoline",
    ".type livepatch_user_trampoline,@function",
    "livepatch_user_trampoline:",
    // On entry: [rsp] = entry + 13 (inside the hooked function), [rsp+8] = the caller's
    // return address; rsp = 0 mod 16.
    "push rbp",
    "mov rbp, rsp",
    "push rdi",
    "push rsi",
    "push rdx",
    "push rcx",
    "push r8",
    "push r9",
    "push rax",
    "push r10",
    // 8 pushes + rbp: rsp = 8 mod 16; 136 bytes make it 0 mod 16 again for the call.
    "sub rsp, 136",
    "movdqu [rsp], xmm0",
    "movdqu [rsp+16], xmm1",
    "movdqu [rsp+32], xmm2",
    "movdqu [rsp+48], xmm3",
    "movdqu [rsp+64], xmm4",
    "movdqu [rsp+80], xmm5",
    "movdqu [rsp+96], xmm6",
    "movdqu [rsp+112], xmm7",
    "mov rdi, [rbp+8]",
    "sub rdi, 13",
    "mov rsi, [rbp+16]",
    "mov rdx, rbp",
    "call {decide}",
    // rax: the target (0: the original); rdx: this thread's in-hook flag, cleared only now
    // that the rest of the way to the target runs inside this trampoline (a kick handler
    // that interrupts it sees its pc here and does not switch the thread).
    "mov r11, rax",
    "mov qword ptr [rdx], 0",
    "movdqu xmm0, [rsp]",
    "movdqu xmm1, [rsp+16]",
    "movdqu xmm2, [rsp+32]",
    "movdqu xmm3, [rsp+48]",
    "movdqu xmm4, [rsp+64]",
    "movdqu xmm5, [rsp+80]",
    "movdqu xmm6, [rsp+96]",
    "movdqu xmm7, [rsp+112]",
    "add rsp, 136",
    "pop r10",
    "pop rax",
    "pop r9",
    "pop r8",
    "pop rcx",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    "pop rbp",
    "test r11, r11",
    "jz 2f",
    // To the variant: drop the return address into the original; the variant returns to the
    // caller.
    "add rsp, 8",
    "jmp r11",
    "2:",
    // To the original: past the whole entry padding (the 3 bytes after the hook are the old
    // padding's, which may be the middle of a multi-byte NOP).
    "add qword ptr [rsp], 3",
    "ret",
    ".globl livepatch_user_trampoline_end",
    "livepatch_user_trampoline_end:",
    ".size livepatch_user_trampoline, livepatch_user_trampoline_end - livepatch_user_trampoline",
    ".popsection",
    decide = sym hook_decide,
);

extern "C" {
    fn livepatch_user_trampoline();
    fn livepatch_user_trampoline_end();
}

/// The trampoline's code range `[start, end)`: a thread interrupted there is between a
/// redirect decision and its jump.
pub(crate) fn trampoline_range() -> (usize, usize) {
    (livepatch_user_trampoline as *const () as usize, livepatch_user_trampoline_end as *const () as usize)
}

/// The bytes of a hook at any site.
pub(crate) fn hook_bytes() -> [u8; HOOK_LEN] {
    let mut b = [0u8; HOOK_LEN];
    b[0] = 0x49;
    b[1] = 0xbb;
    b[2..10].copy_from_slice(&(livepatch_user_trampoline as *const () as usize as u64).to_le_bytes());
    b[10..13].copy_from_slice(&[0x41, 0xff, 0xd3]);
    b
}

/// A parked hook: `jmp short +14` over the rest of the entry padding.
pub(crate) fn parked_bytes() -> [u8; HOOK_LEN] {
    let mut b = hook_bytes();
    b[0] = 0xeb;
    b[1] = (ENTRY_NOPS - 2) as u8;
    b
}

/// The length of the NOP instruction at the start of `b`, if it is one: `nop` (`90`), or
/// `nopw`/`nopl` (`0f 1f /0`) with any `66`/`2e` prefixes — the forms gcc, clang and rustc
/// pad entries with.
fn nop_len(b: &[u8]) -> Option<usize> {
    let prefixes = b.iter().take_while(|&&x| x == 0x66 || x == 0x2e).count();
    let rest = &b[prefixes..];
    match rest {
        [0x90, ..] => Some(prefixes + 1),
        [0x0f, 0x1f, modrm, ..] if modrm & 0x38 == 0 => {
            let (md, rm) = (modrm >> 6, modrm & 7);
            let sib = usize::from(md != 3 && rm == 4);
            let disp = match md {
                0 if rm == 5 => 4,
                1 => 1,
                2 => 4,
                _ => 0,
            };
            Some(prefixes + 3 + sib + disp)
        }
        _ => None,
    }
}

/// Whether `b` is entry padding: NOP instructions covering it exactly.
pub(crate) fn is_padding(b: &[u8]) -> bool {
    let mut at = 0;
    while at < b.len() {
        match nop_len(&b[at..]) {
            Some(n) if at + n <= b.len() => at += n,
            _ => return false,
        }
    }
    true
}

/// Whether `b` starts with our hook, active or parked.
pub(crate) fn is_ours(b: &[u8]) -> bool {
    b.len() >= HOOK_LEN && (b[..HOOK_LEN] == hook_bytes() || b[..HOOK_LEN] == parked_bytes())
}

/// Whether the code at `entry` is a patchable entry (16 bytes of NOP instructions: gcc's
/// one-byte NOPs, or LLVM's multi-byte ones) or one of our hooks (active or parked).
///
/// # Safety
///
/// `entry` must be the start of a mapped, readable function of at least 16 bytes.
pub(crate) unsafe fn is_patchable(entry: usize) -> bool {
    // SAFETY: the caller guarantees 16 readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(entry as *const u8, ENTRY_NOPS) };
    is_padding(bytes) || is_ours(bytes)
}

/// A site's state.
pub(crate) const UNHOOKED: u8 = 0;
/// The site's hook is installed or being installed: a trap there emulates the call.
pub(crate) const HOOKED: u8 = 1;

struct Site {
    entry: AtomicUsize,
    slot: AtomicU32,
    state: AtomicU8,
}

const MAX_SITES: usize = 1024;

/// Every entry ever hooked (an open-addressing table; entries are never removed, so lookups
/// need no lock: a late trap or a thread still in the trampoline finds its site's state).
static SITES: [Site; MAX_SITES] =
    [const { Site { entry: AtomicUsize::new(0), slot: AtomicU32::new(0), state: AtomicU8::new(0) } }; MAX_SITES];

fn home(entry: usize) -> usize {
    (entry >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - 10)
}

fn find(entry: usize) -> Option<&'static Site> {
    let h = home(entry);
    for i in 0..MAX_SITES {
        let s = &SITES[(h + i) % MAX_SITES];
        // `Acquire`: pairs with the `Release` that published the entry in `claim`.
        match s.entry.load(Ordering::Acquire) {
            0 => return None,
            e if e == entry => return Some(s),
            _ => {}
        }
    }
    None
}

/// The site of `entry`, claimed if new (only the engine's writer calls this).
fn claim(entry: usize) -> Option<&'static Site> {
    if let Some(s) = find(entry) {
        return Some(s);
    }
    let h = home(entry);
    (0..MAX_SITES).map(|i| &SITES[(h + i) % MAX_SITES]).find(|s| s.entry.load(Ordering::Relaxed) == 0).inspect(|s| {
        // `Release`: pairs with `find`'s `Acquire` (the slot and state below are set before
        // the hook bytes that lead anyone here are written, and published by the text poke's
        // core serialisation, which is stronger still).
        s.entry.store(entry, Ordering::Release);
    })
}

/// Records that `entry` is (being) hooked for `slot`. `None` when the table is full.
pub(crate) fn set_hooked(entry: usize, slot: SlotId) -> Option<()> {
    let s = claim(entry)?;
    s.slot.store(slot.0, Ordering::Relaxed);
    // `Release`: pairs with the `Acquire` in `hook_decide` and the trap handler: the slot is
    // set before the state says hooked.
    s.state.store(HOOKED, Ordering::Release);
    Some(())
}

/// Records that `entry` is (being) unhooked.
pub(crate) fn set_unhooked(entry: usize) {
    if let Some(s) = find(entry) {
        // `Relaxed`: the grace period after the text poke orders it for readers.
        s.state.store(UNHOOKED, Ordering::Relaxed);
    }
}

/// The state of the site at `entry` (`None`: never hooked).
pub(crate) fn site_state(entry: usize) -> Option<u8> {
    find(entry).map(|s| s.state.load(Ordering::Acquire))
}

/// The engine's read side the hooks consult (set once by [`crate::Runtime::init`]).
pub(crate) static LIVE: AtomicPtr<Live<'static>> = AtomicPtr::new(std::ptr::null_mut());

/// Calls of hooked functions by threads that are not registered (they run the original).
pub(crate) static UNREGISTERED_CALLS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn live() -> Option<&'static Live<'static>> {
    // SAFETY: `LIVE` is null or points to a leaked `Live` that is never freed.
    unsafe { LIVE.load(Ordering::Acquire).as_ref() }
}

/// The trampoline's answer, returned in `rax:rdx`.
#[repr(C)]
struct Decision {
    /// 0 for the original, else the variant's address.
    target: usize,
    /// The calling thread's in-hook flag, which the trampoline clears on its way out.
    in_hook: *const usize,
}

/// The trampoline's question: where does this call of the function at `entry` go?
/// `frame` is the trampoline's frame record: `[frame]` is the caller's frame pointer.
///
/// The thread's in-hook flag is set here and cleared by the trampoline, so from the moment
/// the decision reads the thread's universe until the jump, a kick handler sees either the
/// flag or a pc inside the trampoline, and never switches the thread under a stale decision.
///
/// A decision that finds the flag already set is *nested*: a signal handler of the program's
/// own interrupted the thread inside another decision and called a hooked function. It only
/// redirects (no handler-entry switch: the outer decision may have read the thread's word
/// already), and hands the trampoline a sink instead of the flag, so that the flag stays set
/// until the outer trampoline clears it (`tests/nested_decision_inside.rs`). A handler that
/// interrupted the trampoline after the flag was cleared is seen by the walk instead (its
/// signal frame's saved `rip`, [`crate::walk`]). A handler that left the decision with
/// `siglongjmp` leaves the flag set; it holds the decision's `top` (the slot of the return
/// address into the caller), so a later context of the thread's at or above it, or one that
/// finds another word there, knows that one is over ([`walk::in_hook`]), and its read-side
/// section too ([`threads::Thread::read_enter`]).
///
/// # Safety
///
/// Only the trampoline calls it: `frame` is the trampoline's frame record on this thread's
/// stack.
unsafe extern "C" fn hook_decide(entry: usize, parent_ip: usize, frame: usize) -> Decision {
    let in_hook = walk::in_hook_flag();
    let Some(thread) = threads::current() else {
        UNREGISTERED_CALLS.fetch_add(1, Ordering::Relaxed);
        return Decision { target: 0, in_hook };
    };
    let Some(live) = live() else { return Decision { target: 0, in_hook } };
    // The slot of the return address into the hooked function's caller, unchanged until the
    // call returns: this decision's `top` (`Thread::outlived`), `parent_ip` its witness.
    let top = frame + 16;
    // A flag left by a decision that never returned is over (`walk::in_hook`).
    let nested = walk::in_hook(thread, top);
    if !nested {
        walk::set_in_hook(top, parent_ip);
    }
    thread.read_enter(top, parent_ip);
    let mut target = 0;
    if let Some(site) = find(entry) {
        // `Acquire`: pairs with `set_hooked`'s `Release` (the slot is the one installed).
        if site.state.load(Ordering::Acquire) == HOOKED {
            let slot = SlotId(site.slot.load(Ordering::Relaxed));
            // SAFETY: `frame` is the trampoline's frame record on this thread's stack; its
            // first word is the saved frame pointer of the hooked function's caller.
            let caller_fp = unsafe { *(frame as *const usize) };
            let to = if nested {
                live.redirect_task(slot, thread, CodeAddr(parent_ip))
            } else {
                walk::set_start(Start::Call { ret: parent_ip, fp: caller_fp, sp: frame + 16 });
                let to = live.on_function_entry(slot, thread, &Walker, CodeAddr(parent_ip));
                walk::set_start(Start::None);
                to
            };
            if let Redirect::Variant(a) = to {
                target = a.0;
            }
        }
    }
    thread.read_exit();
    let in_hook = if nested { walk::nested_sink() } else { in_hook };
    Decision { target, in_hook }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_padding_of_each_compiler_is_recognised() {
        let gcc = [0x90; 16];
        let clang14 = [0x2e, 0x66, 0x0f, 0x1f, 0x84, 0, 0, 0x02, 0, 0, 0x66, 0x0f, 0x1f, 0x44, 0, 0x08];
        let rustc = [0x66, 0x66, 0x66, 0x66, 0x66, 0x2e, 0x66, 0x0f, 0x1f, 0x84, 0, 0, 0x02, 0, 0, 0x90];
        for (name, b) in [("gcc", gcc), ("clang", clang14), ("rustc", rustc)] {
            assert!(is_padding(&b), "{name}");
            assert!(!is_ours(&b), "{name}");
        }
        // A function body, a long NOP cut by the end of the padding, a NOP with a register
        // operand (not one compilers pad with, but still a NOP form we decode by length).
        assert!(!is_padding(&[0x55, 0x48, 0x89, 0xe5]));
        assert!(!is_padding(&rustc[..12]));
        assert!(is_padding(&[0x0f, 0x1f, 0x00, 0x0f, 0x1f, 0x40, 0x00]));
        let mut hooked = [0x90; 16];
        hooked[..HOOK_LEN].copy_from_slice(&hook_bytes());
        assert!(is_ours(&hooked) && !is_padding(&hooked));
        let mut parked = rustc;
        parked[..HOOK_LEN].copy_from_slice(&parked_bytes());
        assert!(is_ours(&parked), "a parked hook over LLVM padding keeps the old tail bytes");
        assert_eq!(&parked_bytes()[..2], &[0xeb, 14], "jmp short over the 16 bytes");
    }
}
