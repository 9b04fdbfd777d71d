// SPDX-License-Identifier: GPL-2.0

//! The engine instance and everything that drives it: the debugfs attributes (`enabled`,
//! `transition`, `force`, `stalls`, `stats`), the retry work, and the switch points the C side
//! calls (ftrace handler, exit to user mode, fork).

use crate::backend::{self, backend};
use crate::patches::{self, Cell, DECLS, NPATCH};
use crate::report::{self, Buf, StallLine};
use crate::shim::{self, EngineGuard, TaskStruct};
use crate::tasks;
use core::ffi::{c_char, c_int, c_ulong};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use livepatch_core::backend::TaskKind;
use livepatch_core::model::SwitchPoints;
use livepatch_core::sweep::{StallReason, Straggler};
use livepatch_core::transition::Progress;
use livepatch_core::{CodeAddr, Engine, EngineStorage, Live, PatchState, Policy, Redirect, SlotId, TaskPatchState};

const SLOTS: usize = 16;
const RANGES: usize = 64;
const MAX_STALLS: usize = 16;

/// The policy: every improvement of the core except the handler-entry switch (the ftrace
/// handler runs inside the original's entry, so its frame is always on the stack it would
/// check); a pass every 5 ms; kick stragglers from the second pass on.
const POLICY: Policy = Policy {
    switch_points: SwitchPoints::all()
        .difference(SwitchPoints::KTHREAD_SAFE_POINT)
        .difference(SwitchPoints::HANDLER_ENTRY),
    retry_delay_ns: 5_000_000,
    ..Policy::IMPROVED
};

static STORAGE: EngineStorage<'static, SLOTS, RANGES> = EngineStorage::new();
static LIVE: Cell<Live<'static>> = Cell::new();
static STATE: Cell<State> = Cell::new();
static READY: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy)]
struct Stall {
    pid: i32,
    kind: TaskKind,
    reason: StallReason,
    kicked: bool,
}

const HISTORY: usize = 6;
/// The pass after which a transition's stragglers are logged once.
const SLOW_PASS: u32 = 10;

/// One completion attempt, for the log line at completion.
#[derive(Clone, Copy, Default)]
struct PassLog {
    at_us: u64,
    took_us: u64,
    remaining: u32,
    running: u32,
    on_stack: u32,
    switched: u32,
    per_cpu: u32,
}

#[derive(Clone, Copy, Default)]
struct Stats {
    transitions: u32,
    last_ns: u64,
    last_switched_ns: u64,
    last_passes: u32,
    last_target: Option<PatchState>,
    last_switched: u32,
    last_visited: u32,
}

struct PerPatch {
    built: bool,
    /// Symbols resolved (and, for a module object, the module pinned).
    resolved: bool,
    /// A reference on this module is held for the patch (registered with the engine).
    module_ref: bool,
    stalls: [Option<Stall>; MAX_STALLS],
    stall_overflow: u32,
    stats: Stats,
    /// When the current direction's transition started (hooks installed, tasks pending).
    started_ns: u64,
    history: [PassLog; HISTORY],
    history_len: u32,
}

struct State {
    engine: Engine<'static>,
    patches: [PerPatch; NPATCH],
}

/// The engine's patched-set index (for the walker's in-redirect check).
pub(crate) fn live_set() -> &'static livepatch_core::patched_set::PatchedSet<'static> {
    live().patched_set()
}

fn live() -> &'static Live<'static> {
    // SAFETY: set in `init` before READY, before any hook or file exists.
    unsafe { LIVE.get() }
}

/// The engine state; the caller holds the engine lock.
fn state(_guard: &EngineGuard) -> &'static mut State {
    // SAFETY: set in `init`; exclusive access is guaranteed by the engine lock the caller
    // proves it holds.
    unsafe { &mut *STATE.as_mut_ptr() }
}

/// Whether patch `idx`'s descriptors exist (for reports).
pub(crate) fn built(idx: usize) -> bool {
    READY.load(Ordering::Acquire) && {
        // SAFETY: read-only peek at a flag written under the engine lock before the
        // descriptors are published; callers hold the engine lock.
        unsafe { (*STATE.as_mut_ptr()).patches[idx].built }
    }
}

/// Sets up the engine. Called once from module init.
pub(crate) fn init() {
    // SAFETY: module init, single-threaded; nothing references these yet.
    let live = unsafe { LIVE.set(Live::new(&STORAGE, POLICY)) };
    let per = || PerPatch {
        built: false,
        resolved: false,
        module_ref: false,
        stalls: [None; MAX_STALLS],
        stall_overflow: 0,
        stats: Stats::default(),
        started_ns: 0,
        history: [PassLog::default(); HISTORY],
        history_len: 0,
    };
    // Written field by field in place: a whole `State` built on the stack first would not fit a
    // 16 KiB kernel stack.
    let st = STATE.as_mut_ptr();
    // SAFETY: as above; each field of the static is written exactly once before READY.
    unsafe {
        (&raw mut (*st).engine).write(Engine::new(live));
        for i in 0..NPATCH {
            (&raw mut (*st).patches[i]).write(per());
        }
    }
    READY.store(true, Ordering::Release);
}

// ---- switch points called from C ----------------------------------------------------------

/// The ftrace handler's question: where does this call of slot `slot` go? 0 = the original.
#[no_mangle]
pub(crate) extern "C" fn lp_rs_redirect(slot: u32, _ip: c_ulong, parent_ip: c_ulong) -> c_ulong {
    // The current task's word is looked up only when this function is in transition.
    match live().redirect_current(SlotId(slot), tasks::current_state, CodeAddr(parent_ip as usize)) {
        Redirect::Variant(addr) => addr.get() as c_ulong,
        Redirect::Original => 0,
    }
}

/// Task work queued by a kick runs here.
///
/// Usually that is the task's way back to user mode, with no kernel frame of its own left
/// below — but not always: `task_work_run()` is also called inside the kernel, by io_uring in
/// the middle of `io_uring_enter()` and in io-wq workers, by KVM before entering the guest
/// (`xfer_to_guest_mode_work()` → `resume_user_mode_work()`), by `get_signal()`, by
/// `do_exit()`. Nothing tells the callback which one it is. So it does not switch blindly:
/// it walks its own stack reliably and switches only if no code being switched away from is
/// on it (the core's `Live::task_work`, the kernel's `klp_try_switch_task(current)` at
/// `cond_resched()`). On the way to user mode that walk is short and clean, and the task
/// switches as the kernel's `klp_update_patch_state()` would; inside the kernel it switches
/// only if the frames below are clean, or waits for the next kick.
#[no_mangle]
pub(crate) extern "C" fn lp_rs_exit_to_user(t: *mut TaskStruct, signal: bool, exiting: bool) {
    tasks::kick_done(t, signal);
    if exiting {
        return;
    }
    if let Some(task) = tasks::LinuxTask::current() {
        live().task_work(&task, &backend::Walker);
    }
}

/// `cond_resched()` during a transition: the current task checks its own stack and switches
/// if nothing being switched away from is on it (the kernel's `klp_cond_resched()`).
#[no_mangle]
pub(crate) extern "C" fn lp_rs_cond_resched() {
    let t = shim::current();
    let Some(state) = tasks::lookup(t) else { return };
    if state.pending() {
        live().self_check(&tasks::LinuxTask::with_state(t, state), &backend::Walker);
    }
}

/// Arms or disarms the `cond_resched()` switch point (only needed during a transition).
fn resched_hook(on: bool) {
    // SAFETY: process context, engine lock held.
    let rc = unsafe { shim::lp_shim_resched_hook(on) };
    if rc != 0 {
        // The point only speeds transitions up; without it they still complete.
        kernel::pr_warn!("cond_resched() switch point unavailable: {}\n", rc);
    }
}

/// Fork inheritance (the shim calls it under its table lock, from `wake_up_new_task()`, before
/// the child first runs): the child starts with its parent's word.
pub(crate) fn fork(parent: &TaskPatchState, child: &TaskPatchState) {
    live().fork(parent, child);
}

/// Keeps [`tasks::UNTRACKED`] in step with the engine: the universe a task without a record
/// has run since the transition began, pending towards the current target; idle between
/// transitions. Called before a transition starts (so a handler never sees a transition flag
/// with an idle untracked word) and after a reversal or a completion.
fn sync_untracked(target: Option<PatchState>) {
    match target {
        Some(t) if tasks::UNTRACKED.state() == PatchState::Idle => tasks::untracked_start(Some((t.opposite(), t))),
        Some(t) => tasks::UNTRACKED.retarget(t),
        None => tasks::untracked_start(None),
    }
}

/// The delayed work: one completion attempt.
#[no_mangle]
pub(crate) extern "C" fn lp_rs_retry() {
    let guard = EngineGuard::lock();
    let st = state(&guard);
    let Some(info) = st.engine.transition() else { return };
    let idx = info.patch.0 as usize;
    let b = backend();
    let per = &mut st.patches[idx];
    per.stalls = [None; MAX_STALLS];
    per.stall_overflow = 0;
    let pass_start = shim::now_ns();
    backend::FIRST_SYNC_NS.store(0, Ordering::Relaxed);
    let mut n = 0;
    let result = st.engine.try_complete(&b, |s: &Straggler<'_>| {
        if n < MAX_STALLS {
            per.stalls[n] = Some(Stall { pid: s.task.0 as i32, kind: s.kind, reason: s.reason, kicked: s.kicked });
            n += 1;
        } else {
            per.stall_overflow += 1;
        }
    });
    if let Ok(p) = &result {
        let sum = p.summary();
        if (per.history_len as usize) < HISTORY {
            per.history[per.history_len as usize] = PassLog {
                at_us: shim::now_ns().saturating_sub(per.started_ns) / 1000,
                remaining: sum.remaining,
                running: sum.running,
                on_stack: sum.on_stack,
                switched: sum.switched,
                per_cpu: sum.switched_per_cpu,
                took_us: (shim::now_ns().saturating_sub(pass_start)) / 1000,
            };
            per.history_len += 1;
        }
    }
    match result {
        Ok(Progress::Pending(_)) if info.passes + 1 == SLOW_PASS => {
            // A slow transition: say once who holds it up.
            kernel::pr_info!("'{}': still in transition after {} passes:\n", DECLS[idx].name.to_str().unwrap_or("?"), SLOW_PASS);
            for s in per.stalls.iter().flatten() {
                kernel::pr_info!("  task {} {:?}: {}{}\n", s.pid, s.kind, s.reason, if s.kicked { " [kicked]" } else { "" });
            }
        }
        Ok(Progress::Pending(_)) => {}
        Ok(Progress::Complete(sum)) | Ok(Progress::GaveUp(sum)) => {
            // From the moment every task was pending (as the kernel's "starting ... transition").
            let dt = shim::now_ns().saturating_sub(per.started_ns);
            let switched_at = match backend::FIRST_SYNC_NS.load(Ordering::Relaxed) {
                0 => dt,
                t => t.saturating_sub(per.started_ns),
            };
            per.stats.last_switched_ns = switched_at;
            per.stats.transitions += 1;
            per.stats.last_ns = dt;
            per.stats.last_passes = info.passes + 1;
            per.stats.last_target = Some(info.target);
            per.stats.last_switched = sum.switched;
            per.stats.last_visited = sum.visited;
            kernel::pr_info!(
                "'{}': {} complete in {} us after {} passes (all tasks switched at +{} us)\n",
                DECLS[idx].name.to_str().unwrap_or("?"),
                if info.target == PatchState::Patched { "patching" } else { "unpatching" },
                dt / 1000,
                info.passes + 1,
                switched_at / 1000,
            );
            for h in per.history.iter().take(per.history_len as usize) {
                kernel::pr_info!(
                    "  pass at +{} us took {} us: switched {} ({} per-cpu), remaining {} (running {}, on stack {})\n",
                    h.at_us, h.took_us, h.switched, h.per_cpu, h.remaining, h.running, h.on_stack
                );
            }
            per.history_len = 0;
            settle(st);
        }
        Err(e) => kernel::pr_err!("completion attempt failed: {}\n", e),
    }
}

/// After a transition ended: drop the symbol and module references of patches the engine no
/// longer holds. A forced patch keeps them forever (its code may still be running).
fn settle(st: &mut State) {
    if st.engine.transition().is_none() {
        resched_hook(false);
        sync_untracked(None);
    }
    for (idx, per) in st.patches.iter_mut().enumerate() {
        if !per.built {
            continue;
        }
        // SAFETY: built.
        let patch = unsafe { patches::DESCRIPTORS[idx].patch.get() };
        if patch.is_registered() || patch.is_forced() {
            continue;
        }
        if per.resolved {
            patches::release_all(idx);
            per.resolved = false;
        }
        if per.module_ref {
            per.module_ref = false;
            // SAFETY: balanced with the get in `enable`. The engine synchronized (a grace
            // period) after unlinking the patch, so no handler runs its code any more.
            unsafe { shim::lp_shim_module_put() };
        }
    }
    // A module object stays "loaded" for the engine while any patch holds its symbols.
    for decl in DECLS.iter().filter(|d| d.exported) {
        let held = st.patches.iter().zip(DECLS.iter()).any(|(p, d)| p.resolved && d.object == decl.object);
        backend::OBJECT_LOADED[decl.object.0 as usize].store(held, Ordering::Relaxed);
    }
    if st.engine.transition().is_none() && !st.patches.iter().any(|p| p.module_ref) {
        // No patch left: no hook, no transition; stop tracking tasks (records freed).
        // SAFETY: process context, engine lock held.
        unsafe { shim::lp_shim_tracking(false) };
    }
}

// ---- operations ----------------------------------------------------------------------------

/// Arms the exit-to-user switch point of every pending user task (task work with TWA_RESUME,
/// no signal): the counterpart of the kernel setting TIF_PATCH_PENDING on every task when a
/// transition starts. A task that returns to user mode before the first sweep reaches it then
/// switches on its way out.
fn arm_exit_to_user() {
    use livepatch_core::backend::{Scheduler, Task, TaskCursor};
    let sched = backend::Sched;
    let mut cursor = TaskCursor::default();
    while let Some(next) = sched.for_each_task(cursor, shim::LP_BATCH_MAX as usize, |t| {
        if t.kind() == TaskKind::User && !t.info.exiting && t.patch_state().pending() {
            tasks::kick_user(t.ptr, false);
        }
    }) {
        cursor = next;
    }
}

fn errno(e: livepatch_core::Error) -> c_int {
    use livepatch_core::Error as E;
    match e {
        E::Busy => -16,
        E::NoTransition | E::NotEnabled(_) => -22,
        E::AlreadyEnabled(_) => -17,
        E::NoSlot | E::Index(_) => -28,
        _ => -22,
    }
}

fn enable(st: &mut State, idx: usize) -> c_int {
    let b = backend();
    let per = &mut st.patches[idx];
    if per.built {
        // SAFETY: built.
        let patch = unsafe { patches::DESCRIPTORS[idx].patch.get() };
        if patch.is_registered() {
            // Enabling the patch whose disable is in progress reverses that transition.
            return match st.engine.transition() {
                Some(t) if t.patch.0 as usize == idx && t.target == PatchState::Unpatched => {
                    per.started_ns = shim::now_ns();
                    per.history_len = 0;
                    kernel::pr_info!("'{}': reversing transition\n", DECLS[idx].name.to_str().unwrap_or("?"));
                    let rc = st.engine.reverse(&b).map_or_else(errno, |_| 0);
                    sync_untracked(st.engine.transition().map(|t| t.target));
                    arm_exit_to_user();
                    rc
                }
                _ => -17,
            };
        }
    }
    if st.engine.transition().is_some() {
        return -16;
    }
    // Task records exist while a patch is registered: the first one starts tracking.
    // SAFETY: process context, engine lock held.
    let rc = unsafe { shim::lp_shim_tracking(true) };
    if rc != 0 {
        kernel::pr_err!("cannot track tasks: {}\n", rc);
        return rc;
    }
    // SAFETY: engine lock held; the patch is not registered, so nothing references its old
    // descriptors (the engine synchronized when it let go of them).
    let patch = match unsafe { patches::build(idx) } {
        Ok(p) => p,
        Err(e) => {
            kernel::pr_err!("cannot resolve patch '{}': {:?}\n", DECLS[idx].name.to_str().unwrap_or("?"), e);
            return -2;
        }
    };
    per.built = true;
    per.resolved = true;
    if DECLS[idx].exported {
        backend::OBJECT_LOADED[DECLS[idx].object.0 as usize].store(true, Ordering::Relaxed);
    }
    // SAFETY: no preconditions.
    if !unsafe { shim::lp_shim_module_get() } {
        settle(st);
        return -19;
    }
    st.patches[idx].module_ref = true;
    st.patches[idx].stalls = [None; MAX_STALLS];
    let name = DECLS[idx].name.to_str().unwrap_or("?");
    kernel::pr_info!("enabling patch '{}'\n", name);
    sync_untracked(Some(PatchState::Patched));
    match st.engine.enable(patch, &b) {
        Ok(()) => {
            // SAFETY: no preconditions.
            unsafe { shim::lp_shim_taint() };
            // As the kernel logs it: hooks are installed, every task is pending from here.
            st.patches[idx].started_ns = shim::now_ns();
            st.patches[idx].history_len = 0;
            kernel::pr_info!("'{}': starting patching transition\n", name);
            arm_exit_to_user();
            resched_hook(true);
            0
        }
        Err(e) => {
            kernel::pr_err!("enabling '{}' failed: {}\n", DECLS[idx].name.to_str().unwrap_or("?"), e);
            settle(st);
            errno(e)
        }
    }
}

fn disable(st: &mut State, idx: usize) -> c_int {
    let b = backend();
    if !st.patches[idx].built {
        return -22;
    }
    // SAFETY: built.
    let patch = unsafe { patches::DESCRIPTORS[idx].patch.get() };
    match st.engine.transition() {
        Some(t) if t.patch.0 as usize == idx => {
            if t.target == PatchState::Unpatched {
                return 0;
            }
            st.patches[idx].started_ns = shim::now_ns();
            st.patches[idx].history_len = 0;
            kernel::pr_info!("'{}': reversing transition\n", DECLS[idx].name.to_str().unwrap_or("?"));
            let rc = st.engine.reverse(&b).map_or_else(errno, |_| 0);
            sync_untracked(st.engine.transition().map(|t| t.target));
            arm_exit_to_user();
            rc
        }
        Some(_) => -16,
        None => {
            sync_untracked(Some(PatchState::Unpatched));
            st.patches[idx].started_ns = shim::now_ns();
            st.patches[idx].history_len = 0;
            kernel::pr_info!("'{}': starting unpatching transition\n", DECLS[idx].name.to_str().unwrap_or("?"));
            let rc = st.engine.disable(patch, &b).map_or_else(errno, |_| 0);
            arm_exit_to_user();
            resched_hook(st.engine.transition().is_some());
            rc
        }
    }
}

fn force(st: &mut State, idx: usize) -> c_int {
    let b = backend();
    match st.engine.transition() {
        Some(t) if t.patch.0 as usize == idx => match st.engine.force(&b) {
            Ok(_) => {
                kernel::pr_warn!("'{}': transition forced; its code is never released\n", DECLS[idx].name.to_str().unwrap_or("?"));
                settle(st);
                0
            }
            Err(e) => errno(e),
        },
        _ => -22,
    }
}

// ---- modules that come and go --------------------------------------------------------------

/// The late object named `name` (a NUL-terminated module name), if a patch names it.
fn late_object(name: *const c_char) -> Option<livepatch_core::ObjectId> {
    // SAFETY: the notifier passes `mod->name`, NUL-terminated and alive for the call.
    let name = unsafe { core::ffi::CStr::from_ptr(name) }.to_bytes();
    DECLS.iter().find(|d| d.late && d.object_name.as_bytes() == name).map(|d| d.object)
}

/// The module notifier at `MODULE_STATE_COMING` (the kernel's `klp_module_coming()`): the
/// module's fentry sites are ftrace-ready and none of its code has run. Every registered patch
/// naming it gets its functions resolved in the module's symbol table and patched — joining
/// the transition in progress if that patch's is. An error refuses the load.
#[no_mangle]
pub(crate) extern "C" fn lp_rs_module_coming(name: *const c_char) -> c_int {
    let Some(object) = late_object(name) else { return 0 };
    let guard = EngineGuard::lock();
    let st = state(&guard);
    let b = backend();
    backend::OBJECT_LOADED[object.0 as usize].store(true, Ordering::Relaxed);
    for (idx, decl) in DECLS.iter().enumerate() {
        if decl.object != object || !st.patches[idx].built {
            continue;
        }
        // SAFETY: built.
        let patch = unsafe { patches::DESCRIPTORS[idx].patch.get() };
        if !patch.is_registered() {
            continue;
        }
        if let Err(e) = patches::resolve_late(idx, patch) {
            kernel::pr_err!("'{}': cannot resolve {:?}: refusing to load the module\n", decl.name.to_str().unwrap_or("?"), e);
            backend::OBJECT_LOADED[object.0 as usize].store(false, Ordering::Relaxed);
            return -22;
        }
    }
    match st.engine.object_coming(object, &b) {
        Ok(()) => {
            let n = st.engine.patches().filter(|p| p.objects().iter().any(|o| o.id() == object && o.is_patched())).count();
            kernel::pr_info!("module '{}' coming: patched by {} patch(es)\n", DECLS.iter().find(|d| d.object == object).map_or("?", |d| d.object_name), n);
            0
        }
        Err(e) => {
            kernel::pr_err!("patching the coming module failed: {}: refusing to load it\n", e);
            backend::OBJECT_LOADED[object.0 as usize].store(false, Ordering::Relaxed);
            errno(e)
        }
    }
}

/// The module notifier at `MODULE_STATE_GOING` (the kernel's `klp_module_going()`): after the
/// module's exit function, before its ftrace records and text are released. Its functions are
/// reverted in every patch (with the callbacks), after a grace period no handler uses them,
/// and their addresses are forgotten.
#[no_mangle]
pub(crate) extern "C" fn lp_rs_module_going(name: *const c_char) {
    let Some(object) = late_object(name) else { return };
    let guard = EngineGuard::lock();
    let st = state(&guard);
    let b = backend();
    st.engine.object_going(object, &b);
    kernel::pr_info!("module '{}' going: its functions reverted\n", DECLS.iter().find(|d| d.object == object).map_or("?", |d| d.object_name));
    backend::OBJECT_LOADED[object.0 as usize].store(false, Ordering::Relaxed);
}

// ---- debugfs -------------------------------------------------------------------------------

fn show(st: &State, idx: usize, attr: u32, out: &mut Buf<'_>) -> fmt::Result {
    let per = &st.patches[idx];
    let patch = per.built.then(|| {
        // SAFETY: built.
        unsafe { patches::DESCRIPTORS[idx].patch.get() }
    });
    let in_transition = st.engine.transition().filter(|t| t.patch.0 as usize == idx);
    match attr {
        shim::ATTR_ENABLED => {
            let on = match in_transition {
                Some(t) => t.target == PatchState::Patched,
                None => patch.is_some_and(|p| p.is_enabled()),
            };
            writeln!(out, "{}", u8::from(on))
        }
        shim::ATTR_TRANSITION => writeln!(out, "{}", u8::from(in_transition.is_some())),
        shim::ATTR_FORCE => writeln!(out, "{}", u8::from(patch.is_some_and(|p| p.is_forced()))),
        shim::ATTR_STALLS => {
            if in_transition.is_none() {
                return Ok(());
            }
            for s in per.stalls.iter().flatten() {
                let mut comm = [0u8; 16];
                let known = match s.kind {
                    TaskKind::Idle(cpu) => {
                        let _ = write!(Buf::new(&mut comm[..15]), "swapper/{}", cpu.0);
                        true
                    }
                    // SAFETY: valid 16-byte buffer.
                    _ => unsafe { shim::lp_shim_comm_of(s.pid, comm.as_mut_ptr()) },
                };
                let line = StallLine {
                    pid: s.pid,
                    comm: if known { tasks::comm_str(&comm) } else { "?" },
                    kind: s.kind,
                    reason: s.reason,
                    kicked: s.kicked,
                };
                report::write_stall(out, &line, patches::func_name)?;
            }
            if per.stall_overflow > 0 {
                writeln!(out, "... and {} more", per.stall_overflow)?;
            }
            Ok(())
        }
        shim::ATTR_STATS => {
            let s = per.stats;
            writeln!(out, "transitions {}", s.transitions)?;
            writeln!(out, "last_transition_us {}", s.last_ns / 1000)?;
            writeln!(out, "last_all_switched_us {}", s.last_switched_ns / 1000)?;
            writeln!(out, "last_passes {}", s.last_passes)?;
            writeln!(out, "last_target {}", s.last_target.map_or("none", |t| if t == PatchState::Patched { "patched" } else { "unpatched" }))?;
            writeln!(out, "last_pass_switched {} of {} visited", s.last_switched, s.last_visited)?;
            if let Some(t) = in_transition {
                writeln!(out, "in_transition_us {} passes {}", shim::now_ns().saturating_sub(per.started_ns) / 1000, t.passes)?;
            }
            // SAFETY: no preconditions.
            // SAFETY: no preconditions.
            writeln!(out, "task_records {} untracked_forks {}", tasks::count(), unsafe { shim::lp_shim_tasks_untracked() })?;
            writeln!(out, "task_work_pending {}", unsafe { shim::lp_shim_works_pending() })
        }
        _ => Ok(()),
    }
}

#[no_mangle]
pub(crate) extern "C" fn lp_rs_attr_show(patch: u32, attr: u32, buf: *mut c_char, len: u32) -> c_int {
    let idx = patch as usize;
    if idx >= NPATCH || buf.is_null() {
        return -22;
    }
    // SAFETY: the shim passes a buffer of `len` bytes it owns for the call.
    let slice = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len as usize) };
    let mut out = Buf::new(slice);
    let guard = EngineGuard::lock();
    let _ = show(state(&guard), idx, attr, &mut out);
    out.len() as c_int
}

#[no_mangle]
pub(crate) extern "C" fn lp_rs_attr_store(patch: u32, attr: u32, buf: *const c_char, len: u32) -> c_int {
    let idx = patch as usize;
    if idx >= NPATCH || buf.is_null() {
        return -22;
    }
    // SAFETY: the shim passes `len` bytes it owns for the call.
    let bytes = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len as usize) };
    let value = match core::str::from_utf8(bytes).map(str::trim) {
        Ok("1") => true,
        Ok("0") => false,
        _ => return -22,
    };
    let guard = EngineGuard::lock();
    let st = state(&guard);
    match (attr, value) {
        (shim::ATTR_ENABLED, true) => enable(st, idx),
        (shim::ATTR_ENABLED, false) => disable(st, idx),
        (shim::ATTR_FORCE, true) => force(st, idx),
        _ => -22,
    }
}
