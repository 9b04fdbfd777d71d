//! Shadow variables through the C API (`lpu_shadow_*`) on real threads: the kernel's
//! semantics, typed errors, and the reclaim rule — freed data is neither freed nor reused
//! before every registered thread passed a safe point (or ended) since the free.
//!
//! The tests share the process-wide table and counters, so they run one at a time (`SERIAL`).

use livepatch_user::shadow::{self, ShadowStats, POISON};
use livepatch_user::{
    livepatch_safe_point, livepatch_thread_end, livepatch_thread_offline, livepatch_thread_online, Runtime,
};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn setup() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _ = Runtime::init(livepatch_user::DEFAULT_POLICY);
    guard
}

/// The calling thread registered as a root thread (no patch is ever registered here) until
/// dropped: a test that fails must not leave a registered thread behind, which would hold
/// every later reclaim back.
struct Registered;

impl Registered {
    fn new() -> Self {
        let base = 0usize;
        // SAFETY: no token. `base` is on this thread's stack above `livepatch_thread_begin`'s
        // frame (which checks it), so every walk reads only this thread's stack. Its frame
        // returns, so a walk would miss the caller's frames above it: no patch is ever
        // registered in these tests, so no walk decides anything.
        let r =
            unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &base as *const usize as *const _) };
        assert_eq!(r, 0);
        Registered
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        livepatch_thread_end(); // nothing if the thread already ended
    }
}

/// Waits until every freed block was reclaimed (the calling thread keeps passing safe
/// points).
fn wait_reclaimed() -> ShadowStats {
    let t0 = Instant::now();
    loop {
        livepatch_safe_point();
        let s = shadow::stats();
        if s.waiting == 0 {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "freed blocks were never reclaimed: {s:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn obj(x: &u64) -> *mut c_void {
    x as *const u64 as *mut c_void
}

/// Stores `*ctor_data` (a u64) into the new data.
unsafe extern "C" fn ctor_store(_obj: *mut c_void, data: *mut c_void, ctor_data: *mut c_void) -> c_int {
    if ctor_data.is_null() {
        return -22;
    }
    // SAFETY: the data is at least 16 bytes (every allocation here), `ctor_data` a u64.
    unsafe { *(data as *mut u64) = *(ctor_data as *const u64) };
    0
}

unsafe extern "C" fn ctor_fails(_obj: *mut c_void, _data: *mut c_void, _ctor_data: *mut c_void) -> c_int {
    -5
}

static REENTRANT: AtomicU64 = AtomicU64::new(0);

/// Calls the writer API from a constructor (refused) and `get` (allowed).
unsafe extern "C" fn ctor_reenters(obj: *mut c_void, _data: *mut c_void, _ctor_data: *mut c_void) -> c_int {
    let mut out = std::ptr::null_mut();
    // SAFETY: a NULL constructor and a valid output pointer.
    let a = unsafe { shadow::lpu_shadow_alloc(obj, 99, 8, None, std::ptr::null_mut(), &mut out) };
    // SAFETY: a NULL destructor.
    let f = unsafe { shadow::lpu_shadow_free(obj, 1, None) };
    let g = shadow::lpu_shadow_get(obj, 1);
    REENTRANT.store(((-a) as u64) << 32 | (-f) as u64, Ordering::Relaxed);
    assert!(g.is_null() || !g.is_null()); // `get` returned without deadlocking
    0
}

static DTOR_CALLS: AtomicU64 = AtomicU64::new(0);
static DTOR_SUM: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn dtor_count(_obj: *mut c_void, data: *mut c_void) {
    DTOR_CALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the variable's data, still attached while its destructor runs.
    DTOR_SUM.fetch_add(unsafe { *(data as *const u64) }, Ordering::Relaxed);
}

#[test]
fn the_c_api_follows_the_kernel_and_refuses_bad_input_with_error_codes() {
    let _serial = setup();
    let _registered = Registered::new();
    let before = shadow::stats();
    let (a, b, c) = (1u64, 2u64, 3u64);
    const ID: u64 = 0x71; // and 0x72; every test has ids of its own
    let mut out: *mut c_void = std::ptr::null_mut();
    let mut value = 42u64;
    let v = &mut value as *mut u64 as *mut c_void;
    // SAFETY: every call below passes constructors and destructors defined above, output
    // pointers to locals.
    unsafe {
        assert!(shadow::lpu_shadow_get(obj(&a), ID).is_null());
        // Bad input: NULL object, id beyond 32 bits, NULL output.
        assert_eq!(shadow::lpu_shadow_alloc(std::ptr::null_mut(), ID, 16, None, v, &mut out), -libc::EINVAL);
        assert_eq!(shadow::lpu_shadow_alloc(obj(&a), 1 << 32, 16, None, v, &mut out), -libc::EINVAL);
        assert_eq!(shadow::lpu_shadow_alloc(obj(&a), ID, 16, None, v, std::ptr::null_mut()), -libc::EINVAL);
        assert_eq!(shadow::lpu_shadow_free(std::ptr::null_mut(), ID, None), -libc::EINVAL);
        assert_eq!(shadow::lpu_shadow_free_all(1 << 40, None), -(libc::EINVAL as i64));
        assert!(shadow::lpu_shadow_get(std::ptr::null_mut(), ID).is_null());
        assert!(shadow::lpu_shadow_get(obj(&a), 1 << 32).is_null());
        // alloc: zeroed, then constructed.
        assert_eq!(shadow::lpu_shadow_alloc(obj(&a), ID, 16, Some(ctor_store), v, &mut out), 0);
        let data = out as *const u64;
        assert_eq!((*data, *data.add(1)), (42, 0), "constructed, the rest zeroed");
        assert_eq!(shadow::lpu_shadow_get(obj(&a), ID), out);
        assert!(shadow::lpu_shadow_get(obj(&a), ID + 1).is_null(), "ids are separate");
        assert!(shadow::lpu_shadow_get(obj(&b), ID).is_null(), "objects are separate");
        // Duplicate alloc: refused, nothing changed.
        *(v as *mut u64) = 7;
        let mut again = std::ptr::null_mut();
        assert_eq!(shadow::lpu_shadow_alloc(obj(&a), ID, 16, Some(ctor_store), v, &mut again), -libc::EEXIST);
        assert!(again.is_null());
        assert_eq!(*data, 42);
        // get_or_alloc: the existing one, its constructor not run again; a new one otherwise.
        assert_eq!(shadow::lpu_shadow_get_or_alloc(obj(&a), ID, 16, Some(ctor_fails), v, &mut again), 0);
        assert_eq!(again, out);
        assert_eq!(shadow::lpu_shadow_get_or_alloc(obj(&b), ID, 16, Some(ctor_store), v, &mut again), 0);
        assert_eq!(*(again as *const u64), 7);
        // A failing constructor attaches nothing.
        assert_eq!(shadow::lpu_shadow_alloc(obj(&c), ID, 16, Some(ctor_fails), v, &mut out), -libc::ECANCELED);
        assert_eq!(shadow::lpu_shadow_get_or_alloc(obj(&c), ID, 16, Some(ctor_fails), v, &mut out), -libc::ECANCELED);
        assert!(shadow::lpu_shadow_get(obj(&c), ID).is_null());
        assert_eq!(
            shadow::lpu_shadow_alloc(obj(&c), ID, 16, Some(ctor_store), std::ptr::null_mut(), &mut out),
            -libc::ECANCELED
        );
        // A constructor calling the writer API gets -EDEADLK (no deadlock), `get` works.
        assert_eq!(shadow::lpu_shadow_alloc(obj(&c), ID, 16, Some(ctor_reenters), v, &mut out), 0);
        let r = REENTRANT.load(Ordering::Relaxed);
        assert_eq!((r >> 32, r & 0xffff_ffff), (libc::EDEADLK as u64, libc::EDEADLK as u64));
        assert!(shadow::lpu_shadow_get(obj(&c), 99).is_null(), "the nested alloc attached nothing");
        assert_eq!(shadow::stats().live, before.live + 3);
        // free: the destructor sees the data; afterwards the variable is gone.
        assert_eq!(shadow::lpu_shadow_free(obj(&a), ID, Some(dtor_count)), 0);
        assert_eq!((DTOR_CALLS.load(Ordering::Relaxed), DTOR_SUM.load(Ordering::Relaxed)), (1, 42));
        assert!(shadow::lpu_shadow_get(obj(&a), ID).is_null());
        assert_eq!(shadow::lpu_shadow_free(obj(&a), ID, Some(dtor_count)), -libc::ENOENT);
        assert_eq!(DTOR_CALLS.load(Ordering::Relaxed), 1, "no destructor for a missing variable");
        // free_all: every object with that id, and only that id.
        let mut other = std::ptr::null_mut();
        assert_eq!(shadow::lpu_shadow_alloc(obj(&a), ID + 1, 16, None, v, &mut other), 0);
        assert_eq!(shadow::lpu_shadow_free_all(ID, Some(dtor_count)), 2);
        assert_eq!(DTOR_CALLS.load(Ordering::Relaxed), 3);
        assert!(shadow::lpu_shadow_get(obj(&b), ID).is_null() && shadow::lpu_shadow_get(obj(&c), ID).is_null());
        assert_eq!(shadow::lpu_shadow_get(obj(&a), ID + 1), other);
        assert_eq!(shadow::lpu_shadow_free_all(ID + 1, None), 1);
        assert_eq!(shadow::lpu_shadow_free_all(ID, None), 0);
        // Size 0 still gets an address of its own.
        assert_eq!(shadow::lpu_shadow_alloc(obj(&a), ID, 0, None, v, &mut out), 0);
        assert!(!out.is_null());
        assert_eq!(shadow::lpu_shadow_free(obj(&a), ID, None), 0);
    }
    // No leak: every block attached here is given back.
    let after = wait_reclaimed();
    assert_eq!(after.live, before.live);
    assert_eq!(after.allocated - before.allocated, 5);
    assert_eq!(after.freed - before.freed, 5);
    assert_eq!(after.reclaimed - before.reclaimed, 5);
    livepatch_thread_end();
}

/// The reclaim rule, deterministically: a registered reader keeps using data another thread
/// freed; it is not reclaimed while the reader has not passed a safe point, and it is right
/// after. A thread that ends counts as having passed one.
#[test]
fn freed_data_outlives_every_registered_reader_until_its_safe_point() {
    let _serial = setup();
    let _registered = Registered::new();
    let target = 0x1234u64;
    const ID: u64 = 0x52;
    let mut value = 0x5eed_u64;
    let mut out = std::ptr::null_mut();
    // SAFETY: the constructor above, locals.
    let r = unsafe {
        shadow::lpu_shadow_alloc(
            obj(&target),
            ID,
            64,
            Some(ctor_store),
            &mut value as *mut u64 as *mut c_void,
            &mut out,
        )
    };
    assert_eq!(r, 0);
    let before = wait_reclaimed();

    // Two readers take the pointer; one will pass a safe point, the other will end.
    let (got, go_safe_point, go_end) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let seen = Arc::new(AtomicU64::new(0));
    let reader = |go: Arc<AtomicBool>, by_ending: bool| {
        let (got, seen) = (got.clone(), seen.clone());
        let target = &target as *const u64 as usize;
        std::thread::spawn(move || {
            let _registered = Registered::new();
            let p = shadow::lpu_shadow_get(target as *mut c_void, ID) as *const u64;
            assert!(!p.is_null());
            got.fetch_add(1, Ordering::SeqCst);
            while !go.load(Ordering::SeqCst) {
                // SAFETY: the reader has passed no safe point since its `get`: the data is
                // still allocated, whoever freed the variable (the rule under test).
                seen.store(unsafe { p.read_volatile() }, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
            if !by_ending {
                livepatch_safe_point();
                std::thread::sleep(Duration::from_millis(50));
            }
            livepatch_thread_end();
        })
    };
    let r1 = reader(go_safe_point.clone(), false);
    let r2 = reader(go_end.clone(), true);
    while got.load(Ordering::SeqCst) < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: a NULL destructor.
    assert_eq!(unsafe { shadow::lpu_shadow_free(obj(&target), ID, None) }, 0);
    assert!(shadow::lpu_shadow_get(obj(&target), ID).is_null(), "detached at once");
    // This thread passes safe points; the readers do not: nothing is reclaimed.
    for _ in 0..200 {
        livepatch_safe_point();
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = shadow::stats();
    assert_eq!((s.waiting, s.reclaimed), (1, before.reclaimed), "reclaimed under a reader: {s:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 0x5eed, "the readers still read the data, not the poison");
    // One reader passes a safe point: still waiting for the other.
    go_safe_point.store(true, Ordering::SeqCst);
    r1.join().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(shadow::stats().waiting, 1, "the second reader still holds it");
    assert_ne!(seen.load(Ordering::SeqCst), POISON);
    // The other ends: reclaimed.
    go_end.store(true, Ordering::SeqCst);
    r2.join().unwrap();
    let after = wait_reclaimed();
    assert_eq!(after.reclaimed, before.reclaimed + 1);
    assert!(after.grace_periods > before.grace_periods);
    livepatch_thread_end();
}

/// Readers on 4 threads look up and read shadow data while a writer frees and re-attaches
/// the same variables as fast as it can; every read must see the stamp of the variable it
/// looked up (a block reclaimed too early reads as poison or as another variable's stamp).
#[test]
fn concurrent_readers_never_see_reclaimed_or_reused_data() {
    let _serial = setup();
    let _registered = Registered::new();
    const ID: u64 = 0x53;
    const OBJECTS: usize = 64;
    let objects: Arc<Vec<u64>> = Arc::new((0..OBJECTS as u64).collect());
    let addr = |k: usize, objects: &[u64]| &objects[k] as *const u64 as usize;
    let stamp = |a: usize| (a as u64) ^ 0xa5a5_0000_0000_a5a5;
    let before = wait_reclaimed();
    let stop = Arc::new(AtomicBool::new(false));
    let (bad, reads) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (objects, stop, bad, reads) = (objects.clone(), stop.clone(), bad.clone(), reads.clone());
            std::thread::spawn(move || {
                let _registered = Registered::new();
                let mut i: usize = r;
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_mul(1103515245).wrapping_add(12345);
                    let a = addr(i % OBJECTS, &objects);
                    let p = shadow::lpu_shadow_get(a as *mut c_void, ID) as *const u64;
                    if !p.is_null() {
                        for _ in 0..8 {
                            // SAFETY: no safe point since the `get`: the block is allocated.
                            let v = unsafe { p.read_volatile() };
                            if v != stamp(a) {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                            std::hint::spin_loop();
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    if i.is_multiple_of(16) {
                        livepatch_safe_point();
                    }
                }
                livepatch_thread_end();
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut cycles = 0u64;
    // At least 1.5 s, and on a loaded machine until the reclaimer has given back memory while
    // the readers read (at most 20 s): the check below is about concurrency, not speed.
    let reclaimed_during = || shadow::stats().reclaimed > before.reclaimed;
    while t0.elapsed() < Duration::from_millis(1500) || (!reclaimed_during() && t0.elapsed() < Duration::from_secs(20))
    {
        for k in 0..OBJECTS {
            let a = addr(k, &objects);
            let mut s = stamp(a);
            let mut out = std::ptr::null_mut();
            // SAFETY: the constructor above, locals.
            let r = unsafe {
                shadow::lpu_shadow_alloc(
                    a as *mut c_void,
                    ID,
                    32,
                    Some(ctor_store),
                    &mut s as *mut u64 as *mut c_void,
                    &mut out,
                )
            };
            assert!(r == 0 || r == -libc::ENOSPC, "alloc: {r}");
        }
        // Detach them one by one, or all at once.
        if cycles.is_multiple_of(2) {
            for k in 0..OBJECTS {
                // SAFETY: a NULL destructor.
                let _ = unsafe { shadow::lpu_shadow_free(addr(k, &objects) as *mut c_void, ID, None) };
            }
        } else {
            // SAFETY: a NULL destructor.
            let _ = unsafe { shadow::lpu_shadow_free_all(ID, None) };
        }
        livepatch_safe_point();
        cycles += 1;
    }
    let during = shadow::stats();
    stop.store(true, Ordering::Relaxed);
    readers.into_iter().for_each(|r| r.join().unwrap());
    let after = wait_reclaimed();
    let (reads, bad) = (reads.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    println!(
        "shadow stress: {cycles} cycles of {OBJECTS} objects, {} attached, {reads} reads, {} grace periods, {bad} bad reads",
        after.allocated - before.allocated,
        after.grace_periods - before.grace_periods
    );
    assert!(reads > 1000, "the readers found data: {reads}");
    assert!(during.reclaimed > before.reclaimed, "reclaim ran while the readers read: {during:?}");
    assert_eq!(bad, 0, "a reader saw reclaimed or reused data");
    assert_eq!(after.live, before.live, "every variable detached");
    assert_eq!(after.reclaimed - before.reclaimed, after.allocated - before.allocated, "every block given back");
    livepatch_thread_end();
}

/// An offline thread (blocked, holding no shadow data) is not waited for; once online again,
/// it is, until its next safe point.
#[test]
fn an_offline_thread_does_not_hold_reclaim_back() {
    let _serial = setup();
    let _registered = Registered::new();
    const ID: u64 = 0x54;
    let target = 7u64;
    let (offline, online, safe_point, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let t = {
        let (offline, online, safe_point, done) = (offline.clone(), online.clone(), safe_point.clone(), done.clone());
        std::thread::spawn(move || {
            let _registered = Registered::new();
            livepatch_thread_offline();
            offline.store(true, Ordering::SeqCst);
            while !online.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1)); // "blocked"
            }
            livepatch_thread_online();
            done.store(true, Ordering::SeqCst);
            while !safe_point.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            livepatch_safe_point();
            while safe_point.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            livepatch_thread_end();
        })
    };
    while !offline.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let attach_and_free = || {
        let mut out = std::ptr::null_mut();
        // SAFETY: no constructor or destructor, a local output.
        unsafe {
            assert_eq!(shadow::lpu_shadow_alloc(obj(&target), ID, 8, None, std::ptr::null_mut(), &mut out), 0);
            assert_eq!(shadow::lpu_shadow_free(obj(&target), ID, None), 0);
        }
    };
    // Offline: reclaimed without it.
    attach_and_free();
    wait_reclaimed();
    // Online again: the next free waits for its safe point.
    online.store(true, Ordering::SeqCst);
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    attach_and_free();
    for _ in 0..100 {
        livepatch_safe_point();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(shadow::stats().waiting, 1, "an online thread is waited for");
    safe_point.store(true, Ordering::SeqCst);
    wait_reclaimed();
    safe_point.store(false, Ordering::SeqCst);
    t.join().unwrap();
    livepatch_thread_end();
}
