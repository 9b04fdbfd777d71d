//! A variant outside trusted code: the patch object's second variant is a function of a
//! helper library it links against, which nothing declared built with frame pointers. The
//! walks (the chain and the conservative scan) see return addresses only in trusted code, so
//! a thread inside that variant looks clean, and a disable switches it back while the
//! variant being switched away from is on its stack. The loader must refuse such a patch
//! (as it refuses an original outside trusted code), or the disable must wait.

mod common;

use common::parts::Parts;
use common::sym;
use livepatch_user::{Error, Runtime};
use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn a_variant_outside_trusted_code_is_refused_or_waited_for() {
    let rt = Runtime::init(livepatch_user::DEFAULT_POLICY).expect("init");
    let parts = Parts::new("untrusted_variant");
    let h = parts.load_lib("libvt.so");
    let helper = parts.build("HELPER", "libvhelp.so", &[]);
    let (ldir, rpath) = (format!("-L{}", parts.dir()), format!("-Wl,-rpath,{}", parts.dir()));
    let patch = parts.build("PATCH", "libvpatch.so", &[&ldir, &rpath, "-lvhelp"]);
    let ug: extern "C" fn(c_int) -> c_int = sym(h, "ug");
    assert!(livepatch_user::patch_so::trust_object_containing(ug as usize));

    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicI32::new(0));
    let (stop2, last2) = (stop.clone(), last.clone());
    let worker = std::thread::spawn(move || {
        let base = 0usize;
        // SAFETY: a root thread, before any patch; `base` is above every frame used later.
        let r =
            unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
        assert_eq!(r, 0);
        while !stop2.load(Ordering::Relaxed) {
            last2.store(ug(1), Ordering::Relaxed);
        }
        livepatch_user::livepatch_thread_end();
        std::hint::black_box(&base);
    });
    std::thread::sleep(Duration::from_millis(20));

    let handle = match rt.apply(&patch) {
        Err(Error::Untrusted(what)) => {
            eprintln!("refused: a variant outside trusted code ({what})");
            stop.store(true, Ordering::Relaxed);
            worker.join().unwrap();
            return;
        }
        other => other.expect("apply"),
    };
    rt.wait(Duration::from_secs(10)).expect("the enable completes");
    let t0 = Instant::now();
    while last.load(Ordering::Relaxed) != 1003 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the worker never ran the variant");
        std::thread::yield_now();
    }
    // Hold the worker inside the variant (it sleeps in nanosleep, called from vh_g).
    let ch = CString::new(helper.as_str()).unwrap();
    // SAFETY: the helper is loaded (a dependency of the patch object): a reference to it.
    let hh = unsafe { libc::dlopen(ch.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    assert!(!hh.is_null());
    let hold: *const AtomicI32 = sym::<*mut c_void>(hh, "vh_hold") as *const AtomicI32;
    let inside: *const AtomicI32 = sym::<*mut c_void>(hh, "vh_inside") as *const AtomicI32;
    // SAFETY: the helper's `atomic_int`s, which live as long as the helper (never unloaded).
    let (hold, inside) = unsafe { (&*hold, &*inside) };
    // `SeqCst` throughout: C11's default order, which `vh_g` in `c/untrusted_variant.c` uses for
    // its loads and stores of the same two flags (they pair with these).
    hold.store(1, Ordering::SeqCst);
    while inside.load(Ordering::SeqCst) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the worker never entered vh_g");
        std::thread::yield_now();
    }
    rt.disable(handle).expect("disable");
    let during = rt.wait(Duration::from_millis(500));
    let still_inside = inside.load(Ordering::SeqCst) == 1;
    hold.store(0, Ordering::SeqCst);
    rt.wait(Duration::from_secs(10)).expect("the disable completes once the worker left vh_g");
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert!(still_inside, "the worker stayed inside vh_g during the disable");
    assert!(
        during.is_err(),
        "the disable completed while the worker was inside ug's variant vh_g (in libvhelp.so, \
         not trusted): it was switched with the code being switched away from on its stack"
    );
}
