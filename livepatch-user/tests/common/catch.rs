//! Forcing an interleaving with a signal handler of the test's own: a registered worker that
//! calls a function in a loop, and a signal sent to it until its handler reports that it
//! caught the worker where the test wants it (the handler's predicate is the test's own).

use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An `SA_SIGINFO` handler.
pub(crate) type InfoHandler = unsafe extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);

/// `name`'s address in the object `handle` (`libc::RTLD_DEFAULT`: the global scope).
pub(crate) fn dlsym(handle: *mut c_void, name: &str) -> usize {
    let c = CString::new(name).unwrap();
    // SAFETY: a valid handle and C string.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) } as usize;
    assert_ne!(p, 0, "{name}");
    p
}

/// `name`'s address in the loaded patch object `path` (the runtime never closes it).
pub(crate) fn patch_symbol(path: &str, name: &str) -> usize {
    let c = CString::new(path).unwrap();
    // SAFETY: the object is loaded: `RTLD_NOLOAD` only takes a reference to it.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    assert!(!handle.is_null(), "{path} is loaded");
    dlsym(handle, name)
}

/// The trampoline the hook at `entry` calls (its `movabs r11, imm64`).
pub(crate) fn trampoline_of(entry: usize) -> usize {
    // SAFETY: a hooked entry's 13 bytes are mapped and readable.
    let hook = unsafe { std::slice::from_raw_parts(entry as *const u8, 13) };
    assert_eq!(&hook[..2], &[0x49, 0xbb], "the entry is hooked");
    usize::from_le_bytes(hook[2..10].try_into().unwrap())
}

/// Installs `handler` for `sig` (`SA_SIGINFO | SA_RESTART`, empty mask: the runtime's signals
/// are not blocked in it).
pub(crate) fn install(sig: c_int, handler: InfoHandler) {
    // SAFETY: a zeroed sigaction is a valid empty one; the handler and flags are set.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `sa` is fully initialised.
    assert_eq!(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) }, 0);
}

/// A worker thread, registered as a root thread before any patch, calling `each(i)` for
/// `i` = 0, 1, … (mod 2^16) until `stop`; joins with the sum of what `each` returned. Its
/// base frame's address goes to `base` (where a handler's scan of its stack can end).
/// Returns the thread and its tid.
pub(crate) fn spawn_worker(
    stop: &'static AtomicBool,
    base: Option<&'static AtomicUsize>,
    mut each: impl FnMut(c_int) -> u64 + Send + 'static,
) -> (JoinHandle<u64>, i32) {
    let (tid_tx, tid_rx) = mpsc::channel::<i32>();
    let worker = std::thread::spawn(move || {
        let frame = 0usize;
        // SAFETY: a root thread, before any patch; `frame` is above every frame used later.
        let r =
            unsafe { livepatch_user::livepatch_thread_begin(std::ptr::null_mut(), &frame as *const usize as *const _) };
        assert_eq!(r, 0);
        if let Some(base) = base {
            base.store(&frame as *const usize as usize, Ordering::Relaxed);
        }
        // SAFETY: `gettid` takes no arguments.
        tid_tx.send(unsafe { libc::syscall(libc::SYS_gettid) } as i32).unwrap();
        let (mut sum, mut i) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            sum += each(i);
            i = (i + 1) & 0xffff;
        }
        livepatch_user::livepatch_thread_end();
        std::hint::black_box(&frame);
        sum
    });
    (worker, tid_rx.recv().unwrap())
}

/// [`spawn_worker`] calling the C function `f` (`int f(int)`), its results dropped.
pub(crate) fn spawn_calling(
    stop: &'static AtomicBool,
    base: Option<&'static AtomicUsize>,
    f: extern "C" fn(c_int) -> c_int,
) -> (JoinHandle<u64>, i32) {
    let f = std::hint::black_box(f);
    spawn_worker(stop, base, move |i| {
        std::hint::black_box(f(i));
        0
    })
}

/// Calls the C function `int g(int)` at `addr` (from a handler: the nested call under test).
pub(crate) fn call(addr: &AtomicUsize) {
    // SAFETY: `addr` holds the address of a C function `int g(int)` (from `dlsym`).
    let g: extern "C" fn(c_int) -> c_int = unsafe { std::mem::transmute(addr.load(Ordering::Relaxed)) };
    std::hint::black_box(g(7));
}

/// A signal handler's hold on the thread it caught, shared with the test (a `static`): the
/// handler reports the catch and spins until the test releases it; the test signals the thread
/// until it is caught, acts while it is held, then releases it and waits for the handler's end.
pub(crate) struct Hold {
    armed: AtomicBool,
    caught: AtomicBool,
    released: AtomicBool,
    handled: AtomicU64,
}

impl Hold {
    pub(crate) const fn new() -> Self {
        Self {
            armed: AtomicBool::new(false),
            caught: AtomicBool::new(false),
            released: AtomicBool::new(false),
            handled: AtomicU64::new(0),
        }
    }

    /// In the handler: whether a catch is wanted (armed, none held yet).
    pub(crate) fn wanted(&self) -> bool {
        self.armed.load(Ordering::Relaxed) && !self.caught.load(Ordering::Relaxed)
    }

    /// In the handler: reports the catch and waits for [`Hold::release`].
    pub(crate) fn hold(&self) {
        // `Release`: pairs with `catch`'s `Acquire`.
        self.caught.store(true, Ordering::Release);
        // `Acquire`: pairs with `release`'s `Release`.
        while !self.released.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
    }

    /// In the handler, last: one more signal handled.
    pub(crate) fn handled(&self) {
        // `Release`: pairs with the test's `Acquire` loads in `catch` and `release`.
        self.handled.fetch_add(1, Ordering::Release);
    }

    /// Sends `sig` to thread `tid`, one signal at a time (the next once the handler returned),
    /// until the handler holds it; panics after `limit`, naming `where_`. Clears a previous
    /// catch first.
    pub(crate) fn catch(&self, tid: i32, sig: c_int, limit: Duration, where_: &str) {
        self.caught.store(false, Ordering::Relaxed);
        self.released.store(false, Ordering::Relaxed);
        self.armed.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        // `Acquire`: pairs with the handler's `Release` stores of both.
        while !self.caught.load(Ordering::Acquire) {
            assert!(t0.elapsed() < limit, "never caught the worker {where_}");
            let before = self.handled.load(Ordering::Acquire);
            // SAFETY: `tgkill` takes integers only.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
            while self.handled.load(Ordering::Acquire) == before && !self.caught.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        }
        self.armed.store(false, Ordering::Relaxed);
    }

    /// While the handler holds its thread: starts `rt.apply(patch)` in another thread,
    /// releases the handler `held_for` later (whether or not the apply returned meanwhile),
    /// and returns the apply's result and how long it took.
    pub(crate) fn apply_then_release(
        &self,
        rt: &'static livepatch_user::Runtime,
        patch: String,
        held_for: Duration,
    ) -> (Result<u32, String>, Duration) {
        let (done_tx, done_rx) = mpsc::channel();
        let applier = std::thread::spawn(move || {
            let t0 = Instant::now();
            let r = rt.apply(&patch).map_err(|e| e.to_string());
            done_tx.send((r, t0.elapsed())).unwrap();
        });
        std::thread::sleep(held_for);
        let early = done_rx.try_recv().ok();
        self.release();
        let done = early.unwrap_or_else(|| done_rx.recv().unwrap());
        applier.join().unwrap();
        done
    }

    /// Releases the held handler and waits until it returned.
    pub(crate) fn release(&self) {
        let held_at = self.handled.load(Ordering::Acquire);
        // `Release`: pairs with `hold`'s `Acquire`.
        self.released.store(true, Ordering::Release);
        while self.handled.load(Ordering::Acquire) == held_at {
            std::thread::yield_now();
        }
    }
}

/// A function's entry watched while its first hook is written, for a handler of the test's
/// own that holds a thread inside the padding: the entry's 16 bytes before any hook, and
/// whether the held thread would have resumed in bytes rewritten meanwhile.
pub(crate) struct EntryWatch {
    site: AtomicUsize,
    orig: [AtomicU8; 16],
    /// `offset << 8 | 1` once a thread held at `site + offset` would have resumed there in
    /// rewritten bytes.
    torn: AtomicU64,
}

impl EntryWatch {
    pub(crate) const fn new() -> Self {
        EntryWatch { site: AtomicUsize::new(0), orig: [const { AtomicU8::new(0) }; 16], torn: AtomicU64::new(0) }
    }

    /// Watches the entry at `site`, recording its 16 bytes (before any hook).
    pub(crate) fn watch(&self, site: usize) {
        // Copied by value: no pointer into the function's body stays on the caller's stack (a
        // slice's end there once held the test thread's switch back, before the conservative
        // scan required a call before a return address).
        // SAFETY: the function's 16 entry bytes are mapped and readable.
        let orig = unsafe { (site as *const [u8; 16]).read() };
        for (o, b) in self.orig.iter().zip(orig) {
            o.store(b, Ordering::Relaxed);
        }
        self.site.store(site, Ordering::Relaxed);
    }

    /// Whether `pc` lies inside the 13 bytes the hook writes (past the entry's first byte; the
    /// rest of the padding stays NOPs).
    pub(crate) fn inside(&self, pc: usize) -> bool {
        let site = self.site.load(Ordering::Relaxed);
        pc > site && pc < site + 13
    }

    /// For a thread held at `pc` (inside the hook's bytes) that resumes from the signal frame
    /// `uc`: if the bytes from `pc` on changed while it was held, records the offset and moves
    /// its `rip` back to the entry, so it runs the whole hook instead of crashing and the test
    /// reports the tear ([`torn`](Self::torn)).
    pub(crate) fn resume(&self, pc: usize, uc: &mut libc::ucontext_t) {
        let site = self.site.load(Ordering::Relaxed);
        let off = pc - site;
        // SAFETY: the function's 16 entry bytes are mapped and readable.
        let now = unsafe { (site as *const [u8; 16]).read() };
        if (off..16).any(|i| now[i] != self.orig[i].load(Ordering::Relaxed)) {
            self.torn.store((off as u64) << 8 | 1, Ordering::Relaxed);
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] = site as i64;
        }
    }

    /// `offset << 8 | 1` if a held thread would have resumed at `site + offset` in rewritten
    /// bytes; 0 if none did.
    pub(crate) fn torn(&self) -> u64 {
        self.torn.load(Ordering::Relaxed)
    }
}
