//! Shadow variables for patches: data a patch attaches to the program's objects, keyed by
//! (object address, id) — the kernel's `klp_shadow_*` for a process, process-wide and
//! thread-safe, with a C API (`lpu_shadow_*`, `include/livepatch_user.h`).
//!
//! The table is the core's [`ShadowTable`] (lock-free lookups, writers serialised, a freed
//! slot retired until a grace period); each slot holds the address of a zeroed data block
//! of the size the patch asked for (`calloc`), which the constructor fills.
//!
//! # Reclaim: when freed memory is given back
//!
//! [`free`] and [`free_all`] run the destructor and detach the variable at once (a later
//! [`get`] does not find it), but the data block and the slot are **reclaimed only after a
//! grace period**: once every registered thread has passed a *quiescent point* since the free.
//! The quiescent points are [`crate::livepatch_safe_point`] and `livepatch_thread_end`; a
//! thread about to block for long (a `read`, `accept`, `poll`) can instead declare an
//! *extended* quiescent state with [`crate::livepatch_thread_offline`] …
//! [`crate::livepatch_thread_online`] (liburcu's `rcu_thread_offline`/`online`), during which
//! the reclaimer does not wait for it. So:
//!
//! * a registered thread may use a pointer it got from [`get`], [`alloc`] or
//!   [`get_or_alloc`] until its next safe point, even if another thread frees the variable
//!   meanwhile (the memory is neither unmapped nor reused for another variable before);
//! * it must not keep the pointer across a safe point (the same place where it must not be
//!   inside a patched function it cares about);
//! * threads that are **not registered** are not waited for: they must follow the kernel's
//!   rule (nobody uses a variable concurrently with its free). Patch callbacks run on the
//!   thread that drives the transition; `post_unpatch` freeing every variable of an id with
//!   [`free_all`] is safe because no thread runs the patch's code any more;
//! * a registered thread that never reaches a safe point (and is not offline) holds reclaim
//!   back: freed blocks wait (counted in [`ShadowStats::waiting`]); nothing is freed early;
//! * an offline thread must not use shadow data it got before going offline, nor call the
//!   shadow API, until it is online again.
//!
//! Grace periods are detected by a reclaimer thread (`livepatch-shadow`, started by the
//! first free, not registered): it takes the blocks freed so far, marks the table's retired
//! slots, issues a process-wide memory barrier (`membarrier`), records every registered
//! thread's quiescent count, waits until each has changed, then gives the slots back to the
//! table and the blocks to `free` (after writing a poison pattern into their first bytes,
//! so that a premature reuse shows). The membarrier orders the frees before every running
//! reader's next lookup, as in liburcu's `memb` flavour; a count read with `Acquire` pairs
//! with the `Release` store of the quiescent point, so the reader's uses of a block happen
//! before the block's `free`.
//!
//! Constructors and destructors run under the table's writer lock (as the kernel's do
//! under `klp_shadow_lock`): they must not call `alloc`, `get_or_alloc`, `free` or
//! `free_all` (refused with [`ShadowError::Reentrant`]); `get` is allowed.

use crate::threads::{self, Thread};
use livepatch_core::shadow::{ShadowError as TableError, ShadowId, ShadowSlot, ShadowTable};
use std::cell::Cell;
use std::ffi::{c_int, c_long, c_ulong, c_void};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Shadow variables the process can hold at once (live, plus freed ones waiting for their
/// grace period).
pub const CAPACITY: usize = 1 << 16;

/// The first bytes of a reclaimed block are overwritten with this before `free`.
pub const POISON: u64 = 0x6b6b_6b6b_dead_5a5a;

/// Why a shadow operation failed. Nothing changed (no variable attached or detached, no
/// destructor run, no memory kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShadowError {
    /// The object pointer is NULL (C: `-EINVAL`).
    NullObject,
    /// The id does not fit the table's 32 bits (C: `-EINVAL`).
    BadId(u64),
    /// A NULL output pointer (C only: `-EINVAL`).
    NullOutput,
    /// `alloc`: a variable with this object and id exists (C: `-EEXIST`).
    Exists,
    /// `free`: no variable with this object and id (C: `-ENOENT`).
    NotFound,
    /// The table is full of live and not yet reclaimed variables (C: `-ENOSPC`).
    Full,
    /// The data block could not be allocated (C: `-ENOMEM`).
    NoMemory,
    /// The constructor returned this non-zero value; nothing was attached (C: `-ECANCELED`).
    Constructor(i32),
    /// Called from a constructor or destructor (C: `-EDEADLK`).
    Reentrant,
}

impl ShadowError {
    /// The C API's error code (a negative `errno` value).
    pub fn errno(self) -> c_int {
        -match self {
            ShadowError::NullObject | ShadowError::BadId(_) | ShadowError::NullOutput => libc::EINVAL,
            ShadowError::Exists => libc::EEXIST,
            ShadowError::NotFound => libc::ENOENT,
            ShadowError::Full => libc::ENOSPC,
            ShadowError::NoMemory => libc::ENOMEM,
            ShadowError::Constructor(_) => libc::ECANCELED,
            ShadowError::Reentrant => libc::EDEADLK,
        }
    }
}

impl fmt::Display for ShadowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShadowError::NullObject => f.write_str("shadow variable of a NULL object"),
            ShadowError::BadId(id) => write!(f, "shadow id {id:#x} does not fit 32 bits"),
            ShadowError::NullOutput => f.write_str("NULL output pointer"),
            ShadowError::Exists => f.write_str("shadow variable already exists"),
            ShadowError::NotFound => f.write_str("no such shadow variable"),
            ShadowError::Full => f.write_str("shadow table is full"),
            ShadowError::NoMemory => f.write_str("out of memory for shadow data"),
            ShadowError::Constructor(e) => write!(f, "shadow constructor failed ({e})"),
            ShadowError::Reentrant => f.write_str("shadow call from a constructor or destructor"),
        }
    }
}

impl std::error::Error for ShadowError {}

/// Counters since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Live variables.
    pub live: usize,
    /// Variables attached so far.
    pub allocated: u64,
    /// Variables detached so far (`free`, `free_all`).
    pub freed: u64,
    /// Data blocks given back to `free` after their grace period.
    pub reclaimed: u64,
    /// Freed blocks still waiting for their grace period (`freed - reclaimed`).
    pub waiting: u64,
    /// Grace periods the reclaimer completed.
    pub grace_periods: u64,
}

static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);
static RECLAIMED: AtomicU64 = AtomicU64::new(0);
static GRACE_PERIODS: AtomicU64 = AtomicU64::new(0);

/// The counters.
pub fn stats() -> ShadowStats {
    let (allocated, freed, reclaimed) =
        (ALLOCATED.load(Ordering::Relaxed), FREED.load(Ordering::Relaxed), RECLAIMED.load(Ordering::Relaxed));
    ShadowStats {
        live: TABLE.get().map_or(0, |t| t.len()),
        allocated,
        freed,
        reclaimed,
        waiting: freed.saturating_sub(reclaimed),
        grace_periods: GRACE_PERIODS.load(Ordering::Relaxed),
    }
}

static TABLE: OnceLock<ShadowTable<'static, AtomicUsize>> = OnceLock::new();

fn table() -> &'static ShadowTable<'static, AtomicUsize> {
    TABLE.get_or_init(|| {
        let slots: Box<[ShadowSlot<AtomicUsize>]> = (0..CAPACITY).map(|_| ShadowSlot::default()).collect();
        // Leaked: the table lives as long as the process (patched code may run until exit).
        ShadowTable::new(Box::leak(slots))
    })
}

fn key(obj: usize, id: u64) -> Result<(usize, ShadowId), ShadowError> {
    if obj == 0 {
        return Err(ShadowError::NullObject);
    }
    let id = u32::try_from(id).map_err(|_| ShadowError::BadId(id))?;
    Ok((obj, ShadowId(id)))
}

/// Serialises the writers before they take the table's spin lock, so that at most one thread
/// spins on it: a user-space spin lock whose holder is preempted would make every other
/// writer spin for a whole time slice (and starve the reclaimer, seen in the stress below:
/// 130 ms grace periods). Waiters sleep on this mutex instead.
static WRITER: Mutex<()> = Mutex::new(());

fn writer() -> std::sync::MutexGuard<'static, ()> {
    WRITER.lock().unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    /// The calling thread is inside a writer operation (its constructor or destructor runs).
    static WRITING: Cell<bool> = const { Cell::new(false) };
}

/// The calling thread as a writer, holding [`WRITER`], for its lifetime.
struct Writing(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

impl Writing {
    fn enter() -> Result<Writing, ShadowError> {
        if WRITING.with(|w| w.replace(true)) {
            return Err(ShadowError::Reentrant);
        }
        Ok(Writing(writer()))
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        WRITING.with(|w| w.set(false));
    }
}

/// A zeroed block of `size` bytes; at least 8, so that it has an address of its own (size 0)
/// and room for the reclaimer's poison.
fn new_block(size: usize) -> Result<NonNull<u8>, ShadowError> {
    // SAFETY: `calloc` with a non-zero size; the result is checked.
    let p = unsafe { libc::calloc(1, size.max(8)) } as *mut u8;
    NonNull::new(p).ok_or(ShadowError::NoMemory)
}

/// Frees a block that was never published (a failed or unneeded allocation).
fn drop_unpublished(block: NonNull<u8>) {
    // SAFETY: from `new_block`, never reachable through the table.
    unsafe { libc::free(block.as_ptr().cast()) };
}

/// The data of `obj`'s shadow variable `id` (`klp_shadow_get`); lock-free. `None` if there is
/// none (or the key is invalid). See the module documentation for how long the pointer
/// stays valid.
pub fn get(obj: usize, id: u64) -> Option<NonNull<u8>> {
    let (obj, id) = key(obj, id).ok()?;
    let data = TABLE.get()?.get(obj, id)?;
    // Relaxed: the block address was stored before the slot was published, and `get`'s
    // `Acquire` load of the slot state pairs with that `Release` publication.
    NonNull::new(data.load(Ordering::Relaxed) as *mut u8)
}

fn attach(
    obj: usize,
    id: u64,
    size: usize,
    ctor: impl FnOnce(*mut u8) -> Result<(), i32>,
    existing_ok: bool,
) -> Result<NonNull<u8>, ShadowError> {
    let (obj, id) = key(obj, id)?;
    if existing_ok {
        if let Some(data) = get(obj, u64::from(id.0)) {
            return Ok(data);
        }
    }
    let _writing = Writing::enter()?;
    let block = new_block(size)?;
    let mut ctor_error = None;
    let mut used = false;
    let construct = |_obj: usize, data: &AtomicUsize| {
        used = true;
        data.store(block.as_ptr() as usize, Ordering::Relaxed);
        ctor(block.as_ptr()).map_err(|e| {
            ctor_error = Some(e);
            livepatch_core::patch::CallbackError(e)
        })
    };
    let t = table();
    let result = if existing_ok { t.get_or_alloc(obj, id, construct) } else { t.alloc(obj, id, construct) };
    match result {
        Ok(data) => {
            // Relaxed: we hold no lock now, but the slot is live and ours or another
            // writer's published one (read under its `Acquire` in `get_or_alloc`).
            let p = data.load(Ordering::Relaxed) as *mut u8;
            if used {
                ALLOCATED.fetch_add(1, Ordering::Relaxed);
            } else {
                drop_unpublished(block);
            }
            NonNull::new(p).ok_or(ShadowError::NoMemory)
        }
        Err(e) => {
            drop_unpublished(block);
            Err(match e {
                TableError::Exists => ShadowError::Exists,
                TableError::Full => ShadowError::Full,
                TableError::NotFound => ShadowError::NotFound,
                TableError::Constructor(_) => ShadowError::Constructor(ctor_error.unwrap_or(-1)),
            })
        }
    }
}

/// Attaches a new shadow variable of `size` zeroed bytes to `obj` with `id` and runs `ctor`
/// on its data (`klp_shadow_alloc`): a constructor error (non-zero) leaves nothing attached.
/// [`ShadowError::Exists`] if `obj` already has one with `id`.
pub fn alloc(
    obj: usize,
    id: u64,
    size: usize,
    ctor: impl FnOnce(*mut u8) -> Result<(), i32>,
) -> Result<NonNull<u8>, ShadowError> {
    attach(obj, id, size, ctor, false)
}

/// The existing shadow variable, or a new one as [`alloc`] makes it
/// (`klp_shadow_get_or_alloc`); `ctor` runs only for a new one. An existing variable is
/// returned whatever its size.
pub fn get_or_alloc(
    obj: usize,
    id: u64,
    size: usize,
    ctor: impl FnOnce(*mut u8) -> Result<(), i32>,
) -> Result<NonNull<u8>, ShadowError> {
    attach(obj, id, size, ctor, true)
}

/// Detaches `obj`'s shadow variable `id`, running `dtor` on its data first
/// (`klp_shadow_free`); the data is reclaimed after a grace period.
pub fn free(obj: usize, id: u64, dtor: impl FnOnce(*mut u8)) -> Result<(), ShadowError> {
    let (obj, id) = key(obj, id)?;
    let t = TABLE.get().ok_or(ShadowError::NotFound)?;
    {
        let _writing = Writing::enter()?;
        t.free(obj, id, |_, data| {
            let block = data.load(Ordering::Relaxed);
            dtor(block as *mut u8);
            retire(block);
        })
        .map_err(|_| ShadowError::NotFound)?;
    }
    reclaimer_wake();
    Ok(())
}

/// Detaches every shadow variable with `id`, whatever its object, running `dtor(obj, data)`
/// on each (`klp_shadow_free_all`). Returns how many.
pub fn free_all(id: u64, mut dtor: impl FnMut(usize, *mut u8)) -> Result<usize, ShadowError> {
    let id = ShadowId(u32::try_from(id).map_err(|_| ShadowError::BadId(id))?);
    let Some(t) = TABLE.get() else { return Ok(0) };
    let n = {
        let _writing = Writing::enter()?;
        t.free_all(id, |obj, data| {
            let block = data.load(Ordering::Relaxed);
            dtor(obj, block as *mut u8);
            retire(block);
        })
    };
    if n > 0 {
        reclaimer_wake();
    }
    Ok(n)
}

// ---- Reclaim ----

/// Blocks detached and not yet handed to the reclaimer.
static RETIRED: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// Wakes the reclaimer when `RETIRED` is not empty.
static WAKE: Condvar = Condvar::new();
static RECLAIMER: OnceLock<()> = OnceLock::new();

/// Called under the table's writer lock, after the destructor.
fn retire(block: usize) {
    RETIRED.lock().unwrap_or_else(|p| p.into_inner()).push(block);
    FREED.fetch_add(1, Ordering::Relaxed);
}

fn reclaimer_wake() {
    RECLAIMER.get_or_init(|| {
        // If the thread cannot be created, blocks stay retired (counted as waiting): nothing
        // is freed early.
        let _ = std::thread::Builder::new().name("livepatch-shadow".into()).spawn(reclaimer);
    });
    WAKE.notify_one();
}

fn reclaimer() {
    // `Runtime::init` registers the process for `membarrier`; registering again is harmless
    // and covers threads registered without it. Without it, `barrier_all` is only a local
    // fence, so the grace period would not order other threads' lookups: keep every block.
    if crate::sys::register_membarrier().is_err() {
        return;
    }
    loop {
        let blocks = {
            let mut retired = RETIRED.lock().unwrap_or_else(|p| p.into_inner());
            while retired.is_empty() {
                retired = WAKE.wait(retired).unwrap_or_else(|p| p.into_inner());
            }
            std::mem::take(&mut *retired)
        };
        // Every block taken above was detached, under the writer lock, before the table's
        // `reclaim` marks what is retired (it takes that lock), so its slot is marked too;
        // the grace period starts after both.
        let mut waited = false;
        let mut held = Some(writer());
        table().reclaim(|| {
            drop(held.take());
            grace_period();
            waited = true;
            held = Some(writer());
        });
        drop(held);
        if !waited {
            grace_period();
        }
        for block in blocks {
            // SAFETY: a block from `new_block` (at least 8 bytes) whose variable was detached
            // before this grace period began: no registered thread can still use it; it is
            // poisoned and freed once.
            unsafe {
                (block as *mut u64).write_unaligned(POISON);
                libc::free(block as *mut c_void);
            }
            RECLAIMED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits until every registered thread that is not offline has passed a quiescent point
/// (see the module documentation).
fn grace_period() {
    // Orders the detaching stores before every running thread's later loads, and those
    // threads' earlier quiescent-count stores before our loads below.
    crate::sys::barrier_all();
    let mut waiting: Vec<(Arc<Thread>, u64)> = threads::snapshot()
        .into_iter()
        .filter(|t| t.tid() != 0 && !t.is_offline())
        .map(|t| {
            let seen = t.quiescent_count();
            (t, seen)
        })
        .collect();
    while !waiting.is_empty() {
        waiting.retain(|(t, seen)| t.quiescent_count() == *seen);
        if !waiting.is_empty() {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    GRACE_PERIODS.fetch_add(1, Ordering::Relaxed);
}

// ---- The C API (include/livepatch_user.h) ----

/// `lpu_shadow_ctor_t`: fills a new variable's data; non-zero cancels the allocation.
pub type CCtor = Option<unsafe extern "C" fn(obj: *mut c_void, data: *mut c_void, ctor_data: *mut c_void) -> c_int>;
/// `lpu_shadow_dtor_t`: releases what a variable's data refers to, before it is detached.
pub type CDtor = Option<unsafe extern "C" fn(obj: *mut c_void, data: *mut c_void)>;

/// `klp_shadow_get`: the data of `obj`'s shadow variable `id`, or NULL.
#[no_mangle]
pub extern "C" fn lpu_shadow_get(obj: *mut c_void, id: c_ulong) -> *mut c_void {
    get(obj as usize, id).map_or(std::ptr::null_mut(), |p| p.as_ptr().cast())
}

/// # Safety
///
/// `ctor`, if not NULL, is a function safe to call with `obj`, the new data and `ctor_data`;
/// `data` is NULL or writable.
unsafe fn c_attach(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    ctor: CCtor,
    ctor_data: *mut c_void,
    data: *mut *mut c_void,
    existing_ok: bool,
) -> c_int {
    if data.is_null() {
        return ShadowError::NullOutput.errno();
    }
    let construct = |block: *mut u8| match ctor {
        // SAFETY: the caller's constructor, called as its contract says.
        Some(f) => match unsafe { f(obj, block.cast(), ctor_data) } {
            0 => Ok(()),
            e => Err(e),
        },
        None => Ok(()),
    };
    match attach(obj as usize, id, size, construct, existing_ok) {
        Ok(p) => {
            // SAFETY: `data` is non-null and writable (the caller's contract).
            unsafe { *data = p.as_ptr().cast() };
            0
        }
        Err(e) => e.errno(),
    }
}

/// `klp_shadow_alloc`: attaches `size` zeroed bytes to `obj` as variable `id`, runs `ctor`
/// (may be NULL) and stores the data's address in `*data`. 0, or a negative errno
/// ([`ShadowError::errno`]).
///
/// # Safety
///
/// `ctor` is NULL or a valid constructor; `data` is NULL (refused) or writable.
#[no_mangle]
pub unsafe extern "C" fn lpu_shadow_alloc(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    ctor: CCtor,
    ctor_data: *mut c_void,
    data: *mut *mut c_void,
) -> c_int {
    // SAFETY: the caller's contract is `c_attach`'s.
    unsafe { c_attach(obj, id, size, ctor, ctor_data, data, false) }
}

/// `klp_shadow_get_or_alloc`: as [`lpu_shadow_alloc`], but an existing variable is returned
/// (its constructor is not run again).
///
/// # Safety
///
/// As [`lpu_shadow_alloc`].
#[no_mangle]
pub unsafe extern "C" fn lpu_shadow_get_or_alloc(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    ctor: CCtor,
    ctor_data: *mut c_void,
    data: *mut *mut c_void,
) -> c_int {
    // SAFETY: the caller's contract is `c_attach`'s.
    unsafe { c_attach(obj, id, size, ctor, ctor_data, data, true) }
}

/// `klp_shadow_free`: runs `dtor` (may be NULL) and detaches `obj`'s variable `id`. 0, or a
/// negative errno.
///
/// # Safety
///
/// `dtor` is NULL or a valid destructor.
#[no_mangle]
pub unsafe extern "C" fn lpu_shadow_free(obj: *mut c_void, id: c_ulong, dtor: CDtor) -> c_int {
    let result = free(obj as usize, id, |block| {
        if let Some(f) = dtor {
            // SAFETY: the caller's destructor, with the variable's object and data.
            unsafe { f(obj, block.cast()) }
        }
    });
    result.map_or_else(ShadowError::errno, |()| 0)
}

/// `klp_shadow_free_all`: runs `dtor` (may be NULL) on every variable `id` and detaches it.
/// How many, or a negative errno.
///
/// # Safety
///
/// `dtor` is NULL or a valid destructor.
#[no_mangle]
pub unsafe extern "C" fn lpu_shadow_free_all(id: c_ulong, dtor: CDtor) -> c_long {
    let result = free_all(id, |obj, block| {
        if let Some(f) = dtor {
            // SAFETY: the caller's destructor, with the variable's object and data.
            unsafe { f(obj as *mut c_void, block.cast()) }
        }
    });
    match result {
        Ok(n) => n as c_long,
        Err(e) => c_long::from(e.errno()),
    }
}

/// Freed shadow data blocks still waiting for their grace period (they are reclaimed in the
/// background once every registered thread passed a safe point).
#[no_mangle]
pub extern "C" fn lpu_shadow_waiting() -> c_long {
    stats().waiting as c_long
}
