// SPDX-License-Identifier: GPL-2.0

//! The engine instance and everything that drives it: the sysfs attributes (`enabled`,
//! `transition`, `force`, `stalls`, `stats`), the retry work, and the switch points the C side
//! calls (ftrace handler, exit to user mode, fork).

use crate::backend::{self, backend};
use crate::patches::{self, Cell, DECLS, NPATCH};
use crate::registry::{self, Locked, SlotState, NALL};
use crate::report::{self, Buf, StallLine};
use crate::shim::{self, EngineGuard, TaskStruct};
use crate::tasks;
use core::ffi::{c_char, c_int, c_ulong};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use livepatch_core::backend::TaskKind;
use livepatch_core::func_stack::FuncSlot;
use livepatch_core::model::SwitchPoints;
use livepatch_core::patch::FuncNode;
use livepatch_core::sweep::{StallReason, Straggler};
use livepatch_core::patched_set::WINDOW;
use livepatch_core::transition::Progress;
use livepatch_core::{CodeAddr, Engine, EngineStorage, Live, ObjectId, PatchState, Policy, Redirect, SlotId, TaskPatchState};

const SLOTS: usize = 16;
/// Index entries per version; the buffers hold `WINDOW` more, so that a full version keeps its
/// lookups on the fast path (`PatchedSet::new`).
const RANGES: usize = 64;
const MAX_STALLS: usize = 16;

/// The policy: every improvement of the core except the handler-entry switch (the ftrace
/// handler runs inside the original's entry, so its frame is always on the stack it would
/// check); a pass every 5 ms; kick stragglers from the second pass on, and when a kick round
/// changed nothing (the same stragglers blocked in the same functions), wait
/// `Policy::KICK_BACKOFF_NS` (15 s, `klp_send_signals`' interval) before the next round.
const POLICY: Policy = Policy {
    switch_points: SwitchPoints::all()
        .difference(SwitchPoints::KTHREAD_SAFE_POINT)
        .difference(SwitchPoints::HANDLER_ENTRY),
    retry_delay_ns: 5_000_000,
    ..Policy::IMPROVED
};

static STORAGE: EngineStorage<'static, SLOTS, { RANGES + WINDOW }> = EngineStorage::new();
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
    patches: [PerPatch; NALL],
}

/// The engine's events, printed as the kernel's livepatch prints them (`livepatch: ` and the
/// kernel's message: the core's `Event` displays it), so the kernel's selftests' expected
/// `dmesg` can be compared with ours. Our own diagnostic lines keep the `livepatch_rs: ` prefix.
struct KernelLog;

impl livepatch_core::transition::Events for KernelLog {
    fn event(&self, event: &livepatch_core::transition::Event<'_>) {
        // The kernel prints "signaling remaining tasks" when it sends its fake signals, every
        // 15 s of a stalled transition; this engine kicks stragglers from the second pass on
        // (every 5 ms): printing it each time would flood the log without saying more.
        if matches!(event, livepatch_core::transition::Event::Signaling(_)) {
            return;
        }
        let mut buf = [0u8; 256];
        let mut out = Buf::new(&mut buf);
        let _ = write!(out, "{event}");
        let len = out.len();
        // SAFETY: a valid buffer of `len` bytes.
        unsafe { shim::lp_shim_klp_log(buf.as_ptr().cast(), len as c_int) };
    }
}

static KLOG: KernelLog = KernelLog;

/// The engine's patched-set index (for the walker's in-redirect check).
pub(crate) fn live_set() -> &'static livepatch_core::patched_set::PatchedSet<'static> {
    live().patched_set()
}

fn live() -> &'static Live<'static> {
    // SAFETY: set in `init` before READY, before any hook or file exists.
    unsafe { LIVE.get() }
}

/// The engine state; the caller holds the engine lock.
///
/// The signature does not enforce what the `&'static mut` needs: at most one reference from
/// `state` is used at a time (each caller takes it once, after any callee that takes its own),
/// and none is used after its guard is dropped. Code called back from inside an engine method
/// (a patch module's callback calling `klp_get_prev_state()`, see [`lp_rs_prev_state`]) runs
/// while the caller's reference is live, so it never calls `state`.
fn state(_guard: &EngineGuard) -> &'static mut State {
    // SAFETY: set in `init`; exclusive access is guaranteed by the engine lock the caller
    // proves it holds.
    unsafe { &mut *STATE.as_mut_ptr() }
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
        (*st).engine.set_events(&KLOG);
        for i in 0..NALL {
            (&raw mut (*st).patches[i]).write(per());
        }
    }
    registry::init();
    backend::OBJECT_LOADED[0].store(true, Ordering::Relaxed);
    READY.store(true, Ordering::Release);
}

/// Whether our own diagnostic lines (timings, pass history) are printed for patch `idx`: for
/// the built-in patches. A patch module's patch gets only the kernel's messages (the
/// `livepatch: ` events), so the kernel's selftests can compare `dmesg` lines that name it.
fn diag(idx: usize) -> bool {
    idx < NPATCH
}

/// The name of patch `idx` (a built-in patch's, or the patch module's).
fn name_of(l: &Locked<'_>, idx: usize) -> &'static str {
    match DECLS.get(idx) {
        Some(d) => d.name.to_str().unwrap_or("?"),
        None => registry::name(l, idx - NPATCH),
    }
}

/// Patch `idx`'s descriptors, if built.
fn descriptor(l: &Locked<'_>, st: &State, idx: usize) -> Option<&'static livepatch_core::Patch<'static>> {
    if !st.patches.get(idx)?.built {
        return None;
    }
    if idx < NPATCH {
        // SAFETY: built.
        Some(unsafe { patches::DESCRIPTORS[idx].patch.get() })
    } else {
        registry::patch(l, idx - NPATCH)
    }
}

// ---- switch points called from C ----------------------------------------------------------

/// The func slot `slot` of the engine, for the ftrace hook installed on its function.
///
/// The slot lives in `STORAGE`, a `static`: the reference is valid for the module's lifetime,
/// hence for the lifetime of any hook (hooks are removed before the module's memory goes).
pub(crate) fn func_slot(slot: SlotId) -> Option<&'static FuncSlot<'static>> {
    live().slots().get(slot.0 as usize)
}

/// Whether the module's model decides redirects from the task's word (fixed at build time, so
/// the handler below calls the per-task decision directly, without `Live`'s model dispatch).
const PER_TASK: bool = POLICY.model.redirects_per_task();

/// The ftrace handler's question for a function in transition: where does this call go? 0 =
/// the original. The C handler (`lp_ftrace_handler`) answered steps 1 and 2 of the decision
/// itself (`redirect::settled`, through the layout `shim.h` declares and the asserts below
/// check) and calls this only when the top node of the hook's func stack, `top`, is in
/// transition. `curr` is `current`; `cached` is this CPU's `lp_rec_cache` entry, which the
/// handler read (it runs with preemption disabled). A hit (`cached` is `curr`'s record) decides
/// here; a miss goes to the cold [`redirect_after_miss`].
#[no_mangle]
pub(crate) extern "C" fn lp_rs_redirect_in_transition(
    top: *const FuncNode<'static>,
    curr: *mut TaskStruct,
    cached: *const tasks::TaskRec,
    parent_ip: c_ulong,
) -> c_ulong {
    // SAFETY: `top` is the node the handler loaded from its hook's `'static` slot of `STORAGE`
    // (`lp_hook.fslot`) with acquire ordering: a node of a registered patch, freed only after a
    // grace period this preempt-disabled handler delays.
    let top = unsafe { &*top };
    match tasks::cached_word(curr, cached) {
        Some(word) => decide_in_transition(top, word, parent_ip),
        None => redirect_after_miss(top, curr, parent_ip),
    }
}

/// [`lp_rs_redirect_in_transition`] after a cache miss: the word from the task table (which
/// refills this CPU's entry), then the decision. Out of line, so that the hit path saves no
/// register and makes no call.
#[cold]
#[inline(never)]
fn redirect_after_miss(top: &FuncNode<'static>, curr: *mut TaskStruct, parent_ip: c_ulong) -> c_ulong {
    decide_in_transition(top, tasks::current_word_refill(curr), parent_ip)
}

/// Steps 3 and 4 of the decision with the engine's model (fixed at build time), for `top` in
/// transition and the current task's `word`.
#[inline(always)]
fn decide_in_transition(top: &FuncNode<'static>, word: &TaskPatchState, parent_ip: c_ulong) -> c_ulong {
    let to = if PER_TASK {
        livepatch_core::redirect::per_task_in_transition(top, || word)
    } else {
        live().redirect_in_transition(top, || word, CodeAddr(parent_ip as usize))
    };
    match to {
        Redirect::Variant(addr) => addr.get() as c_ulong,
        Redirect::Original => 0,
    }
}

// The layout the C handler reads (`struct lp_func_slot`, `struct lp_func_node` in `shim.h`,
// whose offsets `shim.c` asserts equal `LP_SLOT_TOP_OFFSET`, `LP_NODE_TRANSITION_OFFSET` and
// `LP_NODE_ENTRY_OFFSET`): the core's offsets must be those numbers.
const _: () = {
    use livepatch_core::redirect::{NODE_ENTRY_OFFSET, NODE_TRANSITION_OFFSET, SLOT_TOP_OFFSET};
    assert!(SLOT_TOP_OFFSET == 0, "LP_SLOT_TOP_OFFSET in shim.h");
    assert!(NODE_TRANSITION_OFFSET == 0, "LP_NODE_TRANSITION_OFFSET in shim.h");
    assert!(NODE_ENTRY_OFFSET == 8, "LP_NODE_ENTRY_OFFSET in shim.h");
};

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
    shim::assert_switch_section();
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
    shim::assert_switch_section();
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
    let l = &Locked(&guard);
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
        Ok(Progress::Pending(_)) if info.passes + 1 == SLOW_PASS && diag(idx) => {
            // A slow transition: say once who holds it up.
            kernel::pr_info!("'{}': still in transition after {} passes:\n", name_of(l, idx), SLOW_PASS);
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
            if diag(idx) {
                kernel::pr_info!(
                    "'{}': {} complete in {} us after {} passes (all tasks switched at +{} us)\n",
                    name_of(l, idx),
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
            }
            per.history_len = 0;
            settle(l, st);
        }
        Err(e) => kernel::pr_err!("completion attempt failed: {}\n", e),
    }
}

/// After a transition ended: drop the symbol and module references of patches the engine no
/// longer holds. A forced patch keeps them forever (its code may still be running).
fn settle(l: &Locked<'_>, st: &mut State) {
    if st.engine.transition().is_none() {
        resched_hook(false);
        sync_untracked(None);
    }
    let mut reap = false;
    for idx in 0..NALL {
        let Some(patch) = descriptor(l, st, idx) else { continue };
        let per = &mut st.patches[idx];
        if patch.is_registered() || patch.is_forced() {
            continue;
        }
        if idx >= NPATCH && registry::state(l, idx - NPATCH) == SlotState::Registered {
            // The engine let go of a registered module's patch: unpin the patch module; its
            // directory goes next (a work item: never under the lock, never from a handler).
            // SAFETY: balanced with the get at registration; the engine synchronized after
            // unlinking the patch, so no handler runs the patch module's code any more.
            unsafe { shim::lp_shim_patch_module_put(registry::module(l, idx - NPATCH)) };
            registry::set_state(l, idx - NPATCH, SlotState::Dying);
            reap = true;
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
    if reap {
        // SAFETY: no preconditions.
        unsafe { shim::lp_shim_queue_reap() };
    }
    stop_tracking_if_unhooked(st);
}

/// Stops tracking tasks (fork/free hooks gone, records freed) once no redirect hook is left
/// and no transition runs. The first hook starts it again (`backend::Hooks::install`).
///
/// Why no fork or exit the consistency model needs is lost while tracking is off: a task's
/// word is read only by a redirect (none without a hook) and by the engine's switch points
/// (only during a transition, which never sees tracking stop). So while tracking is off every
/// task runs the universe `UNTRACKED` holds — idle between transitions — and none has a word
/// of its own; a task forked meanwhile inherits nothing that differs from it. When the next
/// hook is installed, tracking starts before it: the fork and free hooks, then a record for
/// every task on the task list and each idle task, with `UNTRACKED`'s word (`start_enable`
/// keeps that the transition's initial universe, not yet pending, while the enable installs
/// its hooks; between transitions it is idle). A task freed while tracking is off has no
/// record to remove, so no stale record can meet a reused `task_struct` address.
fn stop_tracking_if_unhooked(st: &State) {
    if st.engine.transition().is_none() && !backend::hooks_installed() {
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
        // A pre_patch callback's own error (test-callbacks.sh: -ENODEV reaches insmod).
        E::Callback { error, .. } => error.0,
        // A hook ftrace refused (`ftrace_enabled=0`, another IPMODIFY user): -EBUSY, as
        // `klp_patch_func()` passes `register_ftrace_function()`'s error on.
        E::Backend(kind) => kind.errno(),
        _ => -22,
    }
}

fn enable(l: &Locked<'_>, st: &mut State, idx: usize) -> c_int {
    let b = backend();
    if let Some(patch) = descriptor(l, st, idx) {
        if patch.is_registered() {
            // Enabling the patch whose disable is in progress reverses that transition.
            return match st.engine.transition() {
                Some(t) if t.patch.0 as usize == idx && t.target == PatchState::Unpatched => {
                    let per = &mut st.patches[idx];
                    per.started_ns = shim::now_ns();
                    per.history_len = 0;
                    if diag(idx) {
                        kernel::pr_info!("'{}': reversing transition\n", name_of(l, idx));
                    }
                    let rc = st.engine.reverse(&b).map_or_else(errno, |_| 0);
                    sync_untracked(st.engine.transition().map(|t| t.target));
                    arm_exit_to_user();
                    rc
                }
                // As the kernel's enabled_store: already enabled.
                _ => -22,
            };
        }
    }
    if idx >= NPATCH {
        // A patch module's patch is enabled by loading the module; once disabled it is gone.
        return -22;
    }
    if st.engine.transition().is_some() {
        return -16;
    }
    // SAFETY: engine lock held; the patch is not registered, so nothing references its old
    // descriptors (the engine synchronized when it let go of them).
    let patch = match unsafe { patches::build(idx) } {
        Ok(p) => p,
        Err(e) => {
            kernel::pr_err!("cannot resolve patch '{}': {:?}\n", name_of(l, idx), e);
            return -2;
        }
    };
    let per = &mut st.patches[idx];
    per.built = true;
    per.resolved = true;
    if DECLS[idx].exported {
        backend::OBJECT_LOADED[DECLS[idx].object.0 as usize].store(true, Ordering::Relaxed);
    }
    start_enable(l, st, idx, patch)
}

/// Registers `patch` (index `idx`, descriptors built) with the engine and starts its
/// transition; on failure everything is settled back.
fn start_enable(l: &Locked<'_>, st: &mut State, idx: usize, patch: &'static livepatch_core::Patch<'static>) -> c_int {
    let b = backend();
    // Task records are tracked from the first hook on (`backend::Hooks::install`), inside the
    // engine's enable, so a refused hook is reported as the kernel reports it.
    // SAFETY: no preconditions.
    if !unsafe { shim::lp_shim_module_get() } {
        settle(l, st);
        return -19;
    }
    st.patches[idx].module_ref = true;
    st.patches[idx].stalls = [None; MAX_STALLS];
    let name = name_of(l, idx);
    if diag(idx) {
        kernel::pr_info!("enabling patch '{}'\n", name);
    }
    // While the enable installs hooks, `UNTRACKED` is the transition's initial universe, not
    // yet pending: the word the engine's `klp_init_transition` gave every record, and the one
    // records created by the first hook's tracking start get. Pending only once the engine
    // has published the patch and retargeted every record (below).
    if tasks::UNTRACKED.state() == PatchState::Idle {
        tasks::untracked_start(Some((PatchState::Unpatched, PatchState::Unpatched)));
    }
    match st.engine.enable(patch, &b) {
        Ok(()) => {
            sync_untracked(Some(PatchState::Patched));
            // SAFETY: no preconditions.
            unsafe { shim::lp_shim_taint() };
            // As the kernel logs it: hooks are installed, every task is pending from here.
            st.patches[idx].started_ns = shim::now_ns();
            st.patches[idx].history_len = 0;
            if diag(idx) {
                kernel::pr_info!("'{}': starting patching transition\n", name);
            }
            arm_exit_to_user();
            resched_hook(true);
            0
        }
        Err(e) => {
            if diag(idx) {
                kernel::pr_err!("enabling '{}' failed: {}\n", name, e);
            }
            settle(l, st);
            errno(e)
        }
    }
}

fn disable(l: &Locked<'_>, st: &mut State, idx: usize) -> c_int {
    let b = backend();
    let Some(patch) = descriptor(l, st, idx) else { return -22 };
    match st.engine.transition() {
        Some(t) if t.patch.0 as usize == idx => {
            if t.target == PatchState::Unpatched {
                // As the kernel's enabled_store: already disabled.
                return -22;
            }
            st.patches[idx].started_ns = shim::now_ns();
            st.patches[idx].history_len = 0;
            if diag(idx) {
                kernel::pr_info!("'{}': reversing transition\n", name_of(l, idx));
            }
            let rc = st.engine.reverse(&b).map_or_else(errno, |_| 0);
            sync_untracked(st.engine.transition().map(|t| t.target));
            arm_exit_to_user();
            rc
        }
        Some(_) => -16,
        None if !patch.is_registered() => -22,
        None => {
            sync_untracked(Some(PatchState::Unpatched));
            st.patches[idx].started_ns = shim::now_ns();
            st.patches[idx].history_len = 0;
            if diag(idx) {
                kernel::pr_info!("'{}': starting unpatching transition\n", name_of(l, idx));
            }
            let rc = st.engine.disable(patch, &b).map_or_else(errno, |_| 0);
            arm_exit_to_user();
            resched_hook(st.engine.transition().is_some());
            rc
        }
    }
}

fn force(l: &Locked<'_>, st: &mut State, idx: usize) -> c_int {
    let b = backend();
    match st.engine.transition() {
        Some(t) if t.patch.0 as usize == idx => match st.engine.force(&b) {
            Ok(_) => {
                if diag(idx) {
                    kernel::pr_warn!("'{}': transition forced; its code is never released\n", name_of(l, idx));
                }
                settle(l, st);
                0
            }
            Err(e) => errno(e),
        },
        _ => -22,
    }
}

// ---- patch modules (include/livepatch_rs.h) ---------------------------------------------------

/// `lprs_enable_patch()` (`klp_enable_patch()`), from a patch module's init: takes a slot,
/// builds its descriptors, creates its directory, enables the patch, all under the engine
/// lock. Refused with nothing changed: another transition (-EBUSY), a patch of that name
/// (-EINVAL), no slot (-ENOSPC), a function not found or ambiguous (-EINVAL), whatever the
/// engine refuses. A failure once the slot is filled leaves it to the reap work, which removes
/// the directory (not under the lock) and frees it.
#[no_mangle]
pub(crate) extern "C" fn lp_rs_register(reg: *const shim::Reg) -> c_int {
    if reg.is_null() || !READY.load(Ordering::Acquire) {
        return -22;
    }
    // SAFETY: register.c passes a filled `struct lp_reg` it owns for the call.
    let reg = unsafe { &*reg };
    let guard = EngineGuard::lock();
    let l = &Locked(&guard);
    let st = state(&guard);
    if st.engine.transition().is_some() {
        return -16;
    }
    if registry::name_taken(l, reg.patch_name) {
        return -22;
    }
    let Some(k) = registry::free_slot(l) else { return -28 };
    if let Err(e) = registry::fill(l, k, reg) {
        kernel::pr_err!("cannot register patch: {:?}\n", e);
        return e.errno();
    }
    let idx = NPATCH + k;
    st.patches[idx].built = true;
    let fail = |st: &mut State, rc: c_int| {
        if rc != 0 {
            registry::set_state(l, k, SlotState::Dying);
            let _ = st;
            // SAFETY: no preconditions.
            unsafe { shim::lp_shim_queue_reap() };
        }
        rc
    };
    let rc = registry::add_dirs(l, k, idx);
    if rc != 0 {
        return fail(st, rc);
    }
    if st.engine.transition().is_some() {
        return fail(st, -16);
    }
    // SAFETY: the patch module is in its init (not going), the pointer is its `struct module`.
    if !unsafe { shim::lp_shim_patch_module_get(registry::module(l, k)) } {
        return fail(st, -19);
    }
    registry::set_state(l, k, SlotState::Registered);
    let Some(patch) = registry::patch(l, k) else { return fail(st, -22) };
    let rc = start_enable(l, st, idx, patch);
    // On failure `settle` unpinned the patch module and queued the directory's removal.
    rc
}

/// `klp_get_prev_state(id)` for a patch module callback the engine is running: state `id` of
/// the newest patch installed before the one whose callback runs (`registry::prev_klp_state`).
///
/// Called back from inside an engine method that holds `&mut` to the engine state (from its
/// own [`state`]), so this answers from the `CallbackContext` that method passed the callback
/// (published by the registry for the duration of the callback), and takes no `state()`: a
/// second `&mut` of the engine state while the first is live would be an aliasing violation.
#[no_mangle]
pub(crate) extern "C" fn lp_rs_prev_state(id: c_ulong) -> *mut core::ffi::c_void {
    // SAFETY: `register.c` calls this only when the current task holds the engine lock
    // (`lp_shim_engine_locked()`).
    unsafe { registry::prev_klp_state(id as u64) }
}

/// The reap work: removes the directories of `Dying` slots (without the engine lock: their
/// files' handlers take it) and frees the slots.
#[no_mangle]
pub(crate) extern "C" fn lp_rs_reap() {
    let mut dying = [false; registry::NDYN];
    {
        let guard = EngineGuard::lock();
        let l = &Locked(&guard);
        for (k, d) in dying.iter_mut().enumerate() {
            *d = registry::state(l, k) == SlotState::Dying;
        }
    }
    for (k, _) in dying.iter().enumerate().filter(|(_, d)| **d) {
        // SAFETY: process context (a work item), engine lock not held.
        unsafe { shim::lp_shim_dir_remove((NPATCH + k) as u32) };
    }
    let guard = EngineGuard::lock();
    let l = &Locked(&guard);
    let st = state(&guard);
    for (k, _) in dying.iter().enumerate().filter(|(_, d)| **d) {
        let per = &mut st.patches[NPATCH + k];
        per.built = false;
        per.stats = Stats::default();
        per.stalls = [None; MAX_STALLS];
        registry::set_state(l, k, SlotState::Free);
    }
}

// ---- modules that come and go --------------------------------------------------------------

/// The object ids patches use for module `name` (NUL-terminated): a built-in late patch's and
/// the one registered patches use.
fn module_objects(l: &Locked<'_>, name: *const c_char) -> ([Option<ObjectId>; 2], &'static str) {
    // SAFETY: the notifier passes `mod->name`, NUL-terminated and alive for the call.
    let name = unsafe { core::ffi::CStr::from_ptr(name) }.to_bytes();
    let builtin = DECLS.iter().find(|d| d.late && d.object_name.as_bytes() == name);
    let label = builtin.map_or("module", |d| d.object_name);
    ([builtin.map(|d| d.object), registry::object_of(l, name)], label)
}

/// Resolves patch `idx`'s functions in module `object`, which is coming.
fn resolve_in(l: &Locked<'_>, idx: usize, object: ObjectId) -> Result<(), c_int> {
    let st = state(l.0);
    let Some(patch) = descriptor(l, st, idx) else { return Ok(()) };
    if !patch.is_registered() || !patch.objects().iter().any(|o| o.id() == object) {
        return Ok(());
    }
    let rc = if idx < NPATCH {
        patches::resolve_late(idx, patch).map_err(|e| {
            kernel::pr_err!("patch {}: cannot resolve {:?}\n", idx, e);
            -22
        })
    } else {
        registry::resolve(l, idx - NPATCH, object).map_err(|e| e.errno())
    };
    if rc.is_err() {
        kernel::pr_err!("patch {}: refusing to load the module\n", idx);
    }
    rc
}

/// The module notifier at `MODULE_STATE_COMING` (the kernel's `klp_module_coming()`): the
/// module's fentry sites are ftrace-ready and none of its code has run. Every registered patch
/// naming it gets its functions resolved in the module's symbol table and patched — joining
/// the transition in progress if that patch's is. An error refuses the load.
#[no_mangle]
pub(crate) extern "C" fn lp_rs_module_coming(module: *mut core::ffi::c_void) -> c_int {
    let guard = EngineGuard::lock();
    // SAFETY: the notifier passes the coming module, alive for the call; engine lock held.
    let name = unsafe {
        shim::lp_shim_notify_mod(module);
        shim::lp_shim_module_name(module)
    };
    let rc = module_coming(&guard, name);
    // A refused load may have started tracking for a hook that is not there.
    stop_tracking_if_unhooked(state(&guard));
    // SAFETY: engine lock held.
    unsafe { shim::lp_shim_notify_mod(core::ptr::null_mut()) };
    rc
}

fn module_coming(guard: &EngineGuard, name: *const c_char) -> c_int {
    let l = &Locked(guard);
    let (objects, label) = module_objects(l, name);
    let b = backend();
    let mut done: [Option<ObjectId>; 2] = [None; 2];
    for (i, object) in objects.iter().enumerate() {
        let Some(object) = *object else { continue };
        backend::OBJECT_LOADED[object.0 as usize].store(true, Ordering::Relaxed);
        let mut rc = (0..NALL).try_for_each(|idx| resolve_in(l, idx, object));
        let st = state(guard);
        if rc.is_ok() {
            rc = st.engine.object_coming(object, &b).map_err(|e| {
                kernel::pr_err!("patching the coming module failed: {}: refusing to load it\n", e);
                errno(e)
            });
        }
        if let Err(rc) = rc {
            backend::OBJECT_LOADED[object.0 as usize].store(false, Ordering::Relaxed);
            // Undo what the other id of this module got.
            for o in done.iter().flatten() {
                st.engine.object_going(*o, &b);
                backend::OBJECT_LOADED[o.0 as usize].store(false, Ordering::Relaxed);
            }
            return rc;
        }
        let n = st.engine.patches().filter(|p| p.objects().iter().any(|o| o.id() == object && o.is_patched())).count();
        if objects[0].is_some() {
            kernel::pr_info!("module '{}' coming: patched by {} patch(es)\n", label, n);
        }
        done[i] = Some(object);
    }
    0
}

/// The module notifier at `MODULE_STATE_GOING` (the kernel's `klp_module_going()`): after the
/// module's exit function, before its ftrace records and text are released. Its functions are
/// reverted in every patch (with the callbacks), after a grace period no handler uses them,
/// and their addresses are forgotten.
#[no_mangle]
pub(crate) extern "C" fn lp_rs_module_going(module: *mut core::ffi::c_void) {
    let guard = EngineGuard::lock();
    // SAFETY: the notifier passes the going module, alive for the call; engine lock held.
    let name = unsafe {
        shim::lp_shim_notify_mod(module);
        shim::lp_shim_module_name(module)
    };
    let l = &Locked(&guard);
    let (objects, label) = module_objects(l, name);
    let st = state(&guard);
    let b = backend();
    for object in objects.iter().flatten() {
        st.engine.object_going(*object, &b);
        if objects[0].is_some() {
            kernel::pr_info!("module '{}' going: its functions reverted\n", label);
        }
        backend::OBJECT_LOADED[object.0 as usize].store(false, Ordering::Relaxed);
    }
    // Its hooks may have been the last ones.
    stop_tracking_if_unhooked(st);
    // SAFETY: engine lock held.
    unsafe { shim::lp_shim_notify_mod(core::ptr::null_mut()) };
}

// ---- sysfs ---------------------------------------------------------------------------------

fn show(l: &Locked<'_>, st: &State, idx: usize, attr: u32, out: &mut Buf<'_>) -> fmt::Result {
    let per = &st.patches[idx];
    let patch = descriptor(l, st, idx);
    let in_transition = st.engine.transition().filter(|t| t.patch.0 as usize == idx);
    let object = (attr >> 8) as usize;
    match attr & 0xff {
        shim::ATTR_REPLACE => {
            let replace = match DECLS.get(idx) {
                Some(d) => d.replace,
                None => patch.is_some_and(|p| p.is_replace()),
            };
            writeln!(out, "{}", u8::from(replace))
        }
        shim::ATTR_PATCHED => {
            let patched = patch.and_then(|p| p.objects().get(object)).is_some_and(|o| o.is_patched());
            writeln!(out, "{}", u8::from(patched))
        }
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
                    _ if s.pid == tasks::UNTRACKED_FORKS_PID => {
                        let _ = write!(Buf::new(&mut comm[..15]), "(untracked)");
                        true
                    }
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
                report::write_stall(out, &line, |range| patches::func_name(range, |idx| st.patches[idx].built))?;
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
            writeln!(out, "task_records {} untracked_forks {}", tasks::count(), unsafe { shim::lp_shim_tasks_untracked() })?;
            let mut possible = 0u32;
            // SAFETY: `possible` is a valid u32 to write.
            let idle = unsafe { shim::lp_shim_idle_records(&mut possible) };
            writeln!(out, "idle_task_records {idle} of {possible} possible CPUs")?;
            // SAFETY: no preconditions.
            writeln!(out, "task_work_pending {}", unsafe { shim::lp_shim_works_pending() })
        }
        _ => Ok(()),
    }
}

#[no_mangle]
pub(crate) extern "C" fn lp_rs_attr_show(patch: u32, attr: u32, buf: *mut c_char, len: u32) -> c_int {
    let idx = patch as usize;
    if idx >= NALL || buf.is_null() {
        return -22;
    }
    // SAFETY: the shim passes a buffer of `len` bytes it owns for the call.
    let slice = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len as usize) };
    let mut out = Buf::new(slice);
    let guard = EngineGuard::lock();
    let _ = show(&Locked(&guard), state(&guard), idx, attr, &mut out);
    out.len() as c_int
}

#[no_mangle]
pub(crate) extern "C" fn lp_rs_attr_store(patch: u32, attr: u32, buf: *const c_char, len: u32) -> c_int {
    let idx = patch as usize;
    if idx >= NALL || buf.is_null() {
        return -22;
    }
    // SAFETY: the shim passes `len` bytes it owns for the call.
    let bytes = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len as usize) };
    let Some(value) = kstrtobool(bytes) else { return -22 };
    let guard = EngineGuard::lock();
    let l = &Locked(&guard);
    let st = state(&guard);
    match (attr, value) {
        (shim::ATTR_ENABLED, true) => enable(l, st, idx),
        (shim::ATTR_ENABLED, false) => disable(l, st, idx),
        // As the kernel's force_store: only the patch in transition; 0 is accepted and ignored.
        (shim::ATTR_FORCE, v) => match st.engine.transition() {
            Some(t) if t.patch.0 as usize == idx => {
                if v {
                    force(l, st, idx)
                } else {
                    0
                }
            }
            _ => -22,
        },
        _ => -22,
    }
}

/// The kernel's `kstrtobool()`: `1`/`y`/`Y`/`on` → true, `0`/`n`/`N`/`off` → false (only the
/// first characters count, as there); anything else is refused (-EINVAL).
fn kstrtobool(s: &[u8]) -> Option<bool> {
    match s {
        [b'1' | b'y' | b'Y', ..] => Some(true),
        [b'0' | b'n' | b'N', ..] => Some(false),
        [b'o' | b'O', b'n' | b'N', ..] => Some(true),
        [b'o' | b'O', b'f' | b'F', ..] => Some(false),
        _ => None,
    }
}
