//! A hook whose removal fails stays in place, and the engine keeps its slot hooked (the
//! kernel keeps its `ftrace_ops` when unregistering fails): the site table must keep saying
//! "hooked" too. If it said "unhooked", a later patch of the same function — pushed on the
//! slot the engine believes hooked, with no new installation — would never be redirected
//! to, while the patch's other functions are: the original `sf_f` calling the new `sf_g`.
//!
//! The removal is made to fail with a seccomp filter on the test's thread (the one that
//! drives the transitions and writes the hooks) refusing `mprotect` of `sf_f`'s page.

mod common;

use common::parts::Parts;
use common::sym;
use livepatch_user::Runtime;
use std::ffi::{c_int, c_long};
use std::time::Duration;

/// Refuses `mprotect(page, …)` on the calling thread (and threads it creates) with `EPERM`.
fn refuse_mprotect_of(page: usize) {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let prog = [
        f(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        f(JEQ_K, 0, 5, libc::SYS_mprotect as u32),
        f(LD_W_ABS, 0, 0, 16), // args[0], low half
        f(JEQ_K, 0, 3, page as u32),
        f(LD_W_ABS, 0, 0, 20), // args[0], high half
        f(JEQ_K, 0, 1, (page >> 32) as u32),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
    // SAFETY: `prctl` with integer arguments; then a filter program that outlives the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog), 0);
    }
}

#[test]
fn a_hook_whose_removal_failed_still_redirects_a_later_patch() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let parts = Parts::new("unhook_fails");
    let h = parts.load_lib("libsf.so");
    let (p1, p2) = (parts.build("P1", "libsf_p1.so", &[]), parts.build("P2", "libsf_p2.so", &[]));
    let f: extern "C" fn(c_int) -> c_int = sym(h, "sf_f");
    let bad: extern "C" fn() -> c_long = sym(h, "sf_bad");
    assert!(livepatch_user::patch_so::trust_object_containing(f as usize));

    let base = 0usize;
    // SAFETY: a root thread, before any patch; `base` is above every frame used later.
    let r = unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
    assert_eq!(r, 0);
    let h1 = rt.apply(&p1).expect("apply p1");
    rt.wait(Duration::from_secs(10)).expect("p1 enabled");
    refuse_mprotect_of(f as usize & !4095);
    rt.disable(h1).expect("disable p1");
    rt.wait(Duration::from_secs(10)).expect("p1 disabled (its hook stays: removal failed)");
    // SAFETY: sf_f's 16 entry bytes are mapped and readable.
    let entry = unsafe { std::slice::from_raw_parts(f as usize as *const u8, 2) };
    assert_eq!(entry, &[0x49, 0xbb], "sf_f's hook stayed (its removal failed)");
    rt.apply(&p2).expect("apply p2");
    if let Err(e) = rt.wait(Duration::from_secs(10)) {
        panic!("p2 enabled: {e}; stalls {:?}; stats {:?}", rt.stalls(), rt.stats());
    }
    assert_eq!(f(5), 5);
    livepatch_user::livepatch_thread_end();
    std::hint::black_box(&base);
    assert_eq!(
        bad(),
        0,
        "the original sf_f ran the new sf_g: sf_f's site said \"unhooked\" after its failed removal, \
         so p2's variant of it (on the slot the engine kept hooked) was never used"
    );
}
