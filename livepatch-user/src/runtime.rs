//! The process-wide runtime: the engine (single writer, under a mutex), its read side, the
//! loaded patches, and the operations an operator asks for.

use crate::backend::{self, ProcessBackend};
use crate::error::Error;
use crate::hook;
use crate::objects::{self, Library, LibraryState};
use crate::patch_so::{self, LoadedPatch};
use crate::poke;
use crate::stop;
use crate::sys;
use crate::threads::{self, KickResult};
use crate::walk::{self, Start};
use livepatch_core::backend::Task;
use livepatch_core::model::Model;
use livepatch_core::patched_set::WINDOW;
use livepatch_core::sweep::{PassSummary, Straggler};
use livepatch_core::transition::Progress;
use livepatch_core::{Engine, EngineStorage, Live, ObjectId, PatchId, PatchState, Policy};
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Function slots (replaced functions) the runtime can hold at once.
pub const SLOTS: usize = 256;
/// Patched-set index entries per version (each original function and each variant on a stack
/// takes one); the index's buffers hold [`WINDOW`](livepatch_core::patched_set::WINDOW) more,
/// so that a full version keeps its lookups on the fast path.
pub const RANGES: usize = 1024;

/// The policy the runtime uses unless told otherwise: the core's improved per-task model
/// (switch at hook entry, at safe points, in kick handlers; kick from the second pass),
/// a completion attempt every 200 µs.
pub const DEFAULT_POLICY: Policy = Policy { retry_delay_ns: 200_000, ..Policy::IMPROVED };

/// One stall as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// The thread's kernel id (0 if it had not started).
    pub tid: i32,
    /// The core's report (reason, function, kicked).
    pub report: String,
}

/// A registered patch as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchInfo {
    /// Its handle.
    pub handle: u32,
    /// Its name.
    pub name: String,
    /// The shared object.
    pub path: String,
    /// Whether it is enabled (or being enabled).
    pub enabled: bool,
    /// Whether it replaces the patches below it.
    pub replace: bool,
}

/// Counters since the runtime started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transitions completed.
    pub transitions: u64,
    /// Completion attempts.
    pub passes: u64,
    /// Kick signals sent.
    pub kicks: u64,
    /// Threads switched from a kick handler.
    pub kick_switches: u64,
    /// Fix-up signals sent while installing hooks.
    pub fixup_signals: u64,
    /// Threads found between two entry NOPs by a fix-up handler and moved past the hook.
    pub fixups_applied: u64,
    /// Calls of hooked functions by unregistered threads (they ran the original).
    pub unregistered_calls: u64,
    /// Stops of the stop-the-world model (each a completion attempt).
    pub stops: u64,
    /// Stops in which some thread did not park within [`crate::stop::STOP_TIMEOUT`].
    pub stop_timeouts: u64,
    /// Stop signals sent (one per thread per stop, plus one per thread found inside a hook
    /// decision and signalled again).
    pub stop_signals: u64,
    /// The stops' pauses summed (from locking the thread registry to releasing every
    /// thread), in ns.
    pub stop_pause_ns_total: u64,
    /// The longest stop's pause, in ns.
    pub stop_pause_ns_max: u64,
    /// Named libraries that came (found loaded by the interposed `dlopen`) and were accepted:
    /// patched by every registered patch naming them.
    pub libraries_loaded: u64,
    /// Libraries that came but were refused (left loaded, unpatched).
    pub libraries_refused: u64,
    /// Patched libraries that went (unpatched before their last `dlclose`).
    pub libraries_gone: u64,
}

struct Inner {
    engine: Engine<'static>,
    loaded: Vec<LoadedPatch>,
    next_id: u32,
    stalls: Vec<Stall>,
    transitions: u64,
    passes: u64,
    /// The libraries patches name ([`crate::objects`]); index + 1 is the object id.
    libraries: Vec<Library>,
    /// Handles the interposed `dlopen` returned, by link map, not yet closed.
    opens: HashMap<usize, usize>,
    libraries_loaded: u64,
    libraries_refused: u64,
    libraries_gone: u64,
}

// `Inner` is `Send` by itself (the core's `Engine` and descriptors are `Send + Sync`): the
// compiler checks it where `static RUNTIME` needs `Runtime: Sync`, i.e. `Mutex<Inner>: Sync`.

/// The runtime (one per process).
pub struct Runtime {
    live: &'static Live<'static>,
    backend: ProcessBackend,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("live", self.live).finish()
    }
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime's lock, held. Patch code runs under it (a patch object's constructors, its
/// callbacks), so while it is held the thread counts as inside the `dlopen` interposer: a
/// `dlopen`/`dlclose` that code makes goes straight to libc instead of taking the lock again
/// ([`objects::enter_interposer`]).
struct Locked<'a> {
    guard: MutexGuard<'a, Inner>,
    outer: bool,
}

impl Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.guard
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Before the guard (a field) unlocks.
        objects::leave_interposer(self.outer);
    }
}

impl Runtime {
    /// Initialises the process's runtime with `policy`: registers for `membarrier`, installs
    /// the trap, fix-up and kick signal handlers (`SIGTRAP`, `SIGRTMIN+2`, `SIGRTMIN+3`).
    ///
    /// With the stop-the-world model, also the stop handler (`SIGRTMIN+4`, [`crate::stop`]).
    ///
    /// Refuses the freezer model ([`Error::UnsupportedModel`]) and a second initialisation
    /// ([`Error::AlreadyInitialised`]).
    pub fn init(policy: Policy) -> Result<&'static Runtime, Error> {
        if policy.model == Model::Freezer {
            return Err(Error::UnsupportedModel(policy.model.name()));
        }
        if RUNTIME.get().is_some() {
            return Err(Error::AlreadyInitialised);
        }
        sys::register_membarrier().map_err(|e| Error::Sys("membarrier(REGISTER)", e))?;
        poke::install_handlers()?;
        backend::install_kick_handler()?;
        crate::walk::set_restorer(sys::restorer_of(poke::kick_signal()));
        if policy.model == Model::StopTheWorld {
            crate::stop::install_stop_handler()?;
        }
        let storage: &'static EngineStorage<'static, SLOTS, { RANGES + WINDOW }> =
            Box::leak(Box::new(EngineStorage::new()));
        let live: &'static Live<'static> = Box::leak(Box::new(Live::new(storage, policy)));
        let rt = Runtime {
            live,
            backend: ProcessBackend::new(),
            inner: Mutex::new(Inner {
                engine: Engine::new(live),
                loaded: Vec::new(),
                next_id: 1,
                stalls: Vec::new(),
                transitions: 0,
                passes: 0,
                libraries: Vec::new(),
                opens: HashMap::new(),
                libraries_loaded: 0,
                libraries_refused: 0,
                libraries_gone: 0,
            }),
        };
        RUNTIME.set(rt).map_err(|_| Error::AlreadyInitialised)?;
        let rt = RUNTIME.get().ok_or(Error::NotInitialised)?;
        // `Release`: pairs with `hook::live`'s `Acquire`.
        hook::LIVE.store(live as *const Live<'static> as *mut Live<'static>, Ordering::Release);
        Ok(rt)
    }

    /// The runtime, if initialised.
    pub fn get() -> Result<&'static Runtime, Error> {
        RUNTIME.get().ok_or(Error::NotInitialised)
    }

    fn inner(&self) -> Locked<'_> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Locked { guard, outer: objects::enter_interposer() }
    }

    /// The engine's read side.
    pub fn live(&self) -> &'static Live<'static> {
        self.live
    }

    /// Registers the calling thread (see [`threads::begin`]); a root thread is refused while
    /// a patch is registered.
    ///
    /// A prepared child does not take the engine's lock: it may begin while a completion
    /// attempt runs, and the thread registry's lock alone keeps it from beginning during a
    /// stop ([`crate::stop`]; `tests/stop_new_thread.rs`).
    pub fn thread_begin(&self, token: Option<threads::ChildToken>, base_fp: usize) -> Result<(), Error> {
        self.thread_begin_from(token, base_fp, Start::Call { ret: 0, fp: base_fp, sp: base_fp })
    }

    /// [`thread_begin`](Self::thread_begin) called from `caller` (the return address into
    /// the registration's caller, where it is stored, the caller's frame pointer; `ret` 0 when
    /// unknown). Every function on the stack then — the start routine, and what it called on
    /// its way to the registration — was entered before the thread registered, so their hooks
    /// ran the originals: if the thread's universe runs the variant of one of them, the
    /// registration is refused ([`Error::StartRoutinePatched`]; the thread then runs every
    /// original, unregistered) — the original would call the patch's variants. The thread's
    /// first safe point walks from `caller`, so code being switched away from there keeps it
    /// in its universe.
    pub(crate) fn thread_begin_from(
        &self,
        token: Option<threads::ChildToken>,
        base_fp: usize,
        caller: Start,
    ) -> Result<(), Error> {
        match token {
            Some(token) => threads::begin(Some(token), base_fp, || false)?,
            None => {
                let inner = self.inner();
                let active = || inner.engine.patches().next().is_some() || inner.engine.transition().is_some();
                threads::begin(None, base_fp, active)?;
            }
        }
        if matches!(caller, Start::Call { ret, .. } if ret != 0) && self.runs_variant_on_stack(caller) {
            threads::end();
            return Err(Error::StartRoutinePatched);
        }
        // A prepared child that is pending switches now if it can: its stack holds only its
        // start routine (and what it called to get here).
        crate::safe_point_from(caller);
        Ok(())
    }

    /// Whether a frame of the calling (registered) thread's stack, walked from `caller`, lies
    /// in the original of a patched function whose variant the thread's universe runs (only
    /// `caller`'s return address when the walk fails).
    fn runs_variant_on_stack(&self, caller: Start) -> bool {
        let Some(thread) = threads::current() else { return false };
        let Start::Call { ret, sp, .. } = caller else { return false };
        let runs_variant = |addr: livepatch_core::CodeAddr| {
            self.live.patched_set().lookup(addr).is_some_and(|hit| {
                hit.node.is_none()
                    && matches!(
                        self.live.redirect_task(hit.slot(), thread, livepatch_core::CodeAddr(0)),
                        livepatch_core::Redirect::Variant(_)
                    )
            })
        };
        // A read-side section: the index version and the func stacks read here are reused
        // only after a grace period, which waits for it.
        thread.read_enter(sp, ret);
        let prev = walk::set_start(caller);
        let mut found = false;
        let walked = livepatch_core::backend::StackWalker::walk(&walk::Walker, thread, 64, |addr| {
            found |= runs_variant(addr);
            if found {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        });
        if walked.is_err() && !found {
            found = runs_variant(livepatch_core::CodeAddr(ret));
        }
        walk::set_start(prev);
        thread.read_exit();
        found
    }

    /// Loads the patch in the shared object at `path` and starts enabling it; returns its
    /// handle. [`wait`](Self::wait) completes the transition.
    ///
    /// # Trust
    ///
    /// A safe function that runs native code: the object's constructors, its callbacks, its
    /// variants in place of the program's functions. Its descriptor is trusted to be what
    /// `include/livepatch_user.h` declares and its variants to keep the replaced functions'
    /// prototypes and contracts (neither can be checked). Whoever chooses `path` (the
    /// program, or an operator through [`crate::control`]'s socket, whose file permissions
    /// are the boundary) must trust the object as it trusts the program's own code.
    pub fn apply(&self, path: &str) -> Result<u32, Error> {
        let mut inner = self.inner();
        let id = inner.next_id;
        // Libraries first named by this patch are appended to the table; a refusal takes
        // them out again (no other patch refers to them).
        let known = inner.libraries.len();
        let loaded = {
            let libraries = &mut inner.libraries;
            patch_so::load(path, PatchId(id), &mut |name| library_id(libraries, name))
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                inner.libraries.truncate(known);
                return Err(e);
            }
        };
        let patch = loaded.patch;
        // The patch's libraries already loaded: resolved now, as the kernel resolves a loaded
        // module's functions at enable. A library seen loaded for the first time is pinned.
        let mut pinned = Vec::new();
        let mut result = Ok(());
        for obj in patch.objects().iter().filter(|o| o.id() != ObjectId::VMLINUX) {
            let idx = obj.id().0 as usize - 1;
            if inner.libraries[idx].state == LibraryState::Unloaded {
                if let Some(found) = objects::find_loaded(&inner.libraries[idx].name) {
                    result = Self::pin(&mut inner.libraries[idx], found);
                    if result.is_err() {
                        break;
                    }
                    pinned.push(idx);
                }
            }
            if let LibraryState::Loaded { map, .. } = inner.libraries[idx].state {
                result = objects::resolve(obj, map);
                if result.is_err() {
                    break;
                }
            }
        }
        if result.is_ok() {
            result = inner.engine.enable(patch, &self.backend).map_err(Error::from);
        }
        if let Err(e) = result {
            for obj in patch.objects().iter().filter(|o| o.id() != ObjectId::VMLINUX) {
                objects::unresolve(obj);
            }
            for idx in pinned {
                Self::unpin(&mut inner.libraries[idx]);
            }
            inner.libraries.truncate(known);
            return Err(e);
        }
        inner.next_id += 1;
        inner.loaded.push(loaded);
        Ok(id)
    }

    /// Takes the runtime's handle on a library found loaded and declares it loaded to the
    /// engine (its text trusted). On error nothing changed.
    fn pin(lib: &mut Library, found: objects::Found) -> Result<(), Error> {
        // SAFETY: a C path of a loaded object; `RTLD_NOLOAD` loads nothing, runs nothing.
        let pin = unsafe { objects::real_dlopen(found.path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) } as usize;
        if pin == 0 {
            return Err(Error::Load(format!("{}: not loaded any more", lib.name)));
        }
        if !objects::trust(&found.text) {
            // SAFETY: the handle just opened, closed once.
            unsafe { objects::real_dlclose(pin as *mut libc::c_void) };
            return Err(Error::Load(format!("{}: the table of trusted code regions is full", lib.name)));
        }
        objects::set_loaded(lib.id, true);
        lib.state = LibraryState::Loaded { map: pin, pin, base: found.base, text: found.text };
        Ok(())
    }

    /// Undoes [`pin`](Self::pin) (nothing of the library is patched); its text may be
    /// unmapped after this.
    fn unpin(lib: &mut Library) {
        if let LibraryState::Loaded { pin, text, .. } = std::mem::replace(&mut lib.state, LibraryState::Unloaded) {
            objects::set_loaded(lib.id, false);
            objects::distrust(&text);
            // SAFETY: the runtime's own handle, closed once.
            unsafe { objects::real_dlclose(pin as *mut libc::c_void) };
        }
    }

    /// A library named by patches was found loaded: resolved in every registered patch,
    /// then the engine's `object_coming`. A refusal leaves it loaded, unpatched, unpinned.
    fn coming(&self, inner: &mut Inner, idx: usize, found: objects::Found) {
        let base = found.base;
        let id = inner.libraries[idx].id;
        let mut result = Self::pin(&mut inner.libraries[idx], found);
        if let LibraryState::Loaded { map, .. } = inner.libraries[idx].state {
            let mut covering = inner.engine.patches().flat_map(|p| p.objects()).filter(|o| o.id() == id);
            result = covering.try_for_each(|o| objects::resolve(o, map));
        }
        if result.is_ok() {
            result = inner.engine.object_coming(id, &self.backend).map_err(Error::from);
        }
        match result {
            Ok(()) => inner.libraries_loaded += 1,
            Err(e) => {
                for o in inner.engine.patches().flat_map(|p| p.objects()).filter(|o| o.id() == id) {
                    objects::unresolve(o);
                }
                let lib = &mut inner.libraries[idx];
                Self::unpin(lib);
                lib.state = LibraryState::Refused { base, error: e.to_string() };
                inner.libraries_refused += 1;
            }
        }
    }

    /// After the interposed `dlopen` loaded `map`: every named library now loaded comes.
    pub(crate) fn after_dlopen(&self, map: usize) {
        let mut inner = self.inner();
        *inner.opens.entry(map).or_default() += 1;
        for idx in 0..inner.libraries.len() {
            if inner.libraries[idx].state == LibraryState::Unloaded {
                if let Some(found) = objects::find_loaded(&inner.libraries[idx].name) {
                    self.coming(&mut inner, idx, found);
                }
            }
        }
    }

    /// The interposed `dlclose` of `map`: if it drops the last handle of a patched library,
    /// the library goes (the engine's `object_going`) before `close` (libc's `dlclose`).
    pub(crate) fn dlclose(&self, map: usize, close: impl FnOnce() -> libc::c_int) -> libc::c_int {
        let mut inner = self.inner();
        let last = match inner.opens.get_mut(&map) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                inner.opens.remove(&map);
                true
            }
        };
        let going = inner
            .libraries
            .iter()
            .position(|l| matches!(l.state, LibraryState::Loaded { map: m, .. } if m == map))
            .filter(|_| last);
        if let Some(idx) = going {
            let id = inner.libraries[idx].id;
            inner.engine.object_going(id, &self.backend);
            Self::unpin(&mut inner.libraries[idx]);
            inner.libraries_gone += 1;
        }
        let result = close();
        for idx in 0..inner.libraries.len() {
            let found = objects::find_loaded(&inner.libraries[idx].name);
            match (&inner.libraries[idx].state, found) {
                // Still loaded (another object depends on it, or a handle the interposer did
                // not hand out holds it): it comes again.
                (LibraryState::Unloaded, Some(found)) if Some(idx) == going => self.coming(&mut inner, idx, found),
                (LibraryState::Refused { .. }, None) => inner.libraries[idx].state = LibraryState::Unloaded,
                _ => {}
            }
        }
        result
    }

    /// The libraries patches name, and their states.
    pub fn libraries(&self) -> Vec<Library> {
        self.inner().libraries.clone()
    }

    fn registered(inner: &Inner, handle: u32) -> Option<&'static livepatch_core::Patch<'static>> {
        inner
            .engine
            .patches()
            .find(|p| p.id() == PatchId(handle))
            .and_then(|p| inner.loaded.iter().map(|l| l.patch).find(|l| std::ptr::eq(*l, p)))
    }

    /// Starts disabling the patch `handle`.
    pub fn disable(&self, handle: u32) -> Result<(), Error> {
        let mut inner = self.inner();
        let patch = Self::registered(&inner, handle).ok_or(Error::NoSuchPatch(handle))?;
        inner.engine.disable(patch, &self.backend)?;
        Ok(())
    }

    /// Reverses the transition in progress.
    pub fn reverse(&self) -> Result<(), Error> {
        self.inner().engine.reverse(&self.backend)?;
        Ok(())
    }

    /// Forces the transition in progress (every thread switches whatever its stack holds:
    /// the consistency guarantee is given up, as with the kernel's `force`).
    pub fn force(&self) -> Result<(), Error> {
        let mut inner = self.inner();
        inner.engine.force(&self.backend)?;
        inner.transitions += 1;
        Ok(())
    }

    /// The transition in progress: its patch's handle and target.
    pub fn transition(&self) -> Option<(u32, PatchState)> {
        self.inner().engine.transition().map(|t| (t.patch.0, t.target))
    }

    /// One completion attempt; `None` when no transition is in progress.
    pub fn step(&self) -> Result<Option<Progress>, Error> {
        let mut inner = self.inner();
        if inner.engine.transition().is_none() {
            return Ok(None);
        }
        // Reserved before the attempt, formatted after it: under the stop-the-world model
        // the reports are made while every other thread is parked, possibly holding the
        // allocator's lock (`crate::stop`).
        let mut found: Vec<Straggler<'static>> = Vec::with_capacity(threads::count() + 8);
        let entry = 0u8;
        let progress = stop::with_engine_entry(&entry as *const u8 as usize, || {
            inner.engine.try_complete(&self.backend, |s: &Straggler<'static>| {
                if found.len() < found.capacity() {
                    found.push(*s);
                }
            })
        })?;
        let stalls: Vec<(livepatch_core::TaskId, String)> = found.iter().map(|s| (s.task, s.to_string())).collect();
        let threads = threads::snapshot();
        let stalls: Vec<Stall> = stalls
            .into_iter()
            .map(|(task, report)| {
                let thread = threads.iter().find(|t| t.id() == task);
                let detail = thread.map_or(String::new(), |t| self.kick_detail(&inner, t.last_kick()));
                Stall { tid: thread.map_or(0, |t| t.tid()), report: report + &detail }
            })
            .collect();
        inner.stalls = stalls;
        inner.passes += 1;
        if progress.is_complete() {
            inner.transitions += 1;
        }
        Ok(Some(progress))
    }

    /// The stall report's detail from a thread's last kick handler.
    fn kick_detail(&self, inner: &Inner, kick: KickResult) -> String {
        match kick {
            KickResult::Nothing | KickResult::Switched => String::new(),
            KickResult::OnStack(slot) => {
                let range = self.live.slots().get(slot.0 as usize).and_then(|s| s.original());
                let name = inner
                    .engine
                    .patches()
                    .flat_map(|p| p.funcs())
                    .find(|(_, f)| range.is_some() && f.old() == range)
                    .map_or("?", |(_, f)| f.name());
                format!("; its kick handler found function {name} on its stack")
            }
            other => format!("; its kick handler found: {other:?}"),
        }
    }

    /// Runs completion attempts, the engine's retry delay apart, until no transition is in
    /// progress; returns the last attempt's summary. [`Error::Timeout`] after `timeout` (the
    /// transition stays in progress; [`stalls`](Self::stalls) says who holds it up).
    pub fn wait(&self, timeout: Duration) -> Result<PassSummary, Error> {
        let start = Instant::now();
        let mut last = PassSummary::default();
        loop {
            match self.step()? {
                None => return Ok(last),
                Some(p) if !p.is_pending() => return Ok(*p.summary()),
                Some(p) => last = *p.summary(),
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout);
            }
            std::thread::sleep(Duration::from_nanos(self.backend.retry_delay_ns().max(10_000)));
        }
    }

    /// The registered patches, oldest first.
    pub fn list(&self) -> Vec<PatchInfo> {
        let inner = self.inner();
        inner
            .engine
            .patches()
            .filter_map(|p| {
                let l = inner.loaded.iter().find(|l| std::ptr::eq(l.patch, p))?;
                Some(PatchInfo {
                    handle: p.id().0,
                    name: p.name().into(),
                    path: l.path.clone(),
                    enabled: p.is_enabled(),
                    replace: p.is_replace(),
                })
            })
            .collect()
    }

    /// The stragglers of the last completion attempt.
    pub fn stalls(&self) -> Vec<Stall> {
        self.inner().stalls.clone()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let inner = self.inner();
        let (stops, stop_timeouts, stop_signals, stop_pause_ns_total, stop_pause_ns_max) = crate::stop::counters();
        Stats {
            transitions: inner.transitions,
            passes: inner.passes,
            kicks: backend::KICKS_SENT.load(Ordering::Relaxed),
            kick_switches: backend::KICK_SWITCHES.load(Ordering::Relaxed),
            fixup_signals: poke::FIXUP_SIGNALS.load(Ordering::Relaxed),
            fixups_applied: poke::FIXUPS_APPLIED.load(Ordering::Relaxed),
            unregistered_calls: hook::UNREGISTERED_CALLS.load(Ordering::Relaxed),
            stops,
            stop_timeouts,
            stop_signals,
            stop_pause_ns_total,
            stop_pause_ns_max,
            libraries_loaded: inner.libraries_loaded,
            libraries_refused: inner.libraries_refused,
            libraries_gone: inner.libraries_gone,
        }
    }
}

/// The object id of the library `name`, registered if new.
fn library_id(libraries: &mut Vec<Library>, name: &str) -> Result<ObjectId, Error> {
    if let Some(l) = libraries.iter().find(|l| l.name == name) {
        return Ok(l.id);
    }
    if libraries.len() == objects::MAX_LIBRARIES {
        return Err(Error::Descriptor(format!("more than {} libraries named by patches", objects::MAX_LIBRARIES)));
    }
    let id = ObjectId(libraries.len() as u32 + 1);
    libraries.push(Library { name: name.into(), id, state: LibraryState::Unloaded });
    Ok(id)
}
