// SPDX-License-Identifier: GPL-2.0

//! The C shim's interface (`shim.h`), and safe wrappers that pass Rust closures through
//! `void *` contexts.

use core::ffi::{c_char, c_int, c_ulong, c_void};

/// `struct task_struct`, opaque.
#[repr(C)]
pub(crate) struct TaskStruct {
    _opaque: [u8; 0],
}

/// `struct lp_task_info`: a snapshot of the task fields the backend needs.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct TaskInfo {
    pub(crate) start_time: u64,
    pub(crate) pid: i32,
    pub(crate) tgid: i32,
    pub(crate) cpu: u32,
    pub(crate) state: u32,
    pub(crate) kthread: bool,
    pub(crate) idle: bool,
    pub(crate) exiting: bool,
    pub(crate) on_cpu: bool,
    pub(crate) comm: [u8; 16],
}

pub(crate) const LP_PIN_BUSY: c_int = -16;
pub(crate) const LP_WALK_OK: c_int = 0;
pub(crate) const LP_WALK_STOP: c_int = 1;
pub(crate) const LP_WALK_NO_STACK: c_int = -3;
pub(crate) const LP_BATCH_MAX: u32 = 64;
pub(crate) const LP_MAX_HOOKS: u32 = 16;

pub(crate) const ATTR_ENABLED: u32 = 0;
pub(crate) const ATTR_TRANSITION: u32 = 1;
pub(crate) const ATTR_FORCE: u32 = 2;
pub(crate) const ATTR_STALLS: u32 = 3;
pub(crate) const ATTR_STATS: u32 = 4;
pub(crate) const ATTR_REPLACE: u32 = 5;
pub(crate) const ATTR_PATCHED: u32 = 6;

pub(crate) const LP_REG_OBJS: usize = 4;
pub(crate) const LP_REG_FUNCS: usize = 16;
pub(crate) const LP_REG_STATES: usize = 4;
pub(crate) const LP_REG_NAME: usize = 56;

/// `struct lp_reg_func`.
#[repr(C)]
pub(crate) struct RegFunc {
    pub(crate) name: *const c_char,
    pub(crate) sympos: c_ulong,
    pub(crate) new_addr: c_ulong,
    pub(crate) obj: u32,
}

/// `struct lp_reg_obj`.
#[repr(C)]
pub(crate) struct RegObj {
    pub(crate) name: *const c_char,
    pub(crate) klp: *mut c_void,
}

/// `struct lp_reg_state`.
#[repr(C)]
pub(crate) struct RegState {
    pub(crate) id: c_ulong,
    pub(crate) version: u32,
    pub(crate) klp: *mut c_void,
}

/// `struct lp_reg`: a patch module's `klp_patch`, checked and flattened by `register.c`.
#[repr(C)]
pub(crate) struct Reg {
    pub(crate) patch_name: *const c_char,
    pub(crate) module: *mut c_void,
    pub(crate) replace: bool,
    pub(crate) nobjs: u32,
    pub(crate) nfuncs: u32,
    pub(crate) nstates: u32,
    pub(crate) objs: [RegObj; LP_REG_OBJS],
    pub(crate) funcs: [RegFunc; LP_REG_FUNCS],
    pub(crate) states: [RegState; LP_REG_STATES],
}

pub(crate) const LP_CB_PRE_PATCH: u32 = 0;
pub(crate) const LP_CB_POST_PATCH: u32 = 1;
pub(crate) const LP_CB_PRE_UNPATCH: u32 = 2;
pub(crate) const LP_CB_POST_UNPATCH: u32 = 3;

type PinCb = unsafe extern "C" fn(*mut c_void, *mut TaskStruct) -> c_int;
type FrameCb = unsafe extern "C" fn(*mut c_void, c_ulong) -> c_int;
type CpuCb = unsafe extern "C" fn(*mut c_void, *mut TaskStruct, u32);
type StopCb = unsafe extern "C" fn(*mut c_void) -> c_int;

extern "C" {
    pub(crate) fn lp_shim_resolve(name: *const c_char, exported: bool, addr: *mut c_ulong, size: *mut c_ulong) -> c_int;
    pub(crate) fn lp_shim_release(name: *const c_char, exported: bool);
    pub(crate) fn lp_shim_extent(addr: c_ulong, size: *mut c_ulong) -> c_int;
    pub(crate) fn lp_shim_find_symbol(
        objname: *const c_char,
        name: *const c_char,
        sympos: c_ulong,
        addr: *mut c_ulong,
        size: *mut c_ulong,
    ) -> c_int;
    pub(crate) fn lp_shim_module_notifier(on: bool) -> c_int;
    pub(crate) fn lp_shim_module_loaded(name: *const c_char) -> bool;
    pub(crate) fn lp_shim_module_name(module: *mut c_void) -> *const c_char;
    pub(crate) fn lp_shim_notify_mod(module: *mut c_void);
    pub(crate) fn lp_shim_klp_callback(object: *mut c_void, which: u32) -> c_int;
    pub(crate) fn lp_shim_patch_module_get(module: *mut c_void) -> bool;
    pub(crate) fn lp_shim_patch_module_put(module: *mut c_void);
    pub(crate) fn lp_shim_queue_reap();
    pub(crate) fn lp_shim_cancel_reap();
    pub(crate) fn lp_shim_hook_install(slot: u32, ip: c_ulong, fslot: *const c_void) -> c_int;
    pub(crate) fn lp_shim_hook_remove(slot: u32) -> c_int;
    pub(crate) fn lp_shim_tracking(on: bool) -> c_int;
    pub(crate) fn lp_shim_tasks_exit();
    pub(crate) fn lp_shim_tasks_populate() -> c_int;
    pub(crate) fn lp_shim_tasks_untracked() -> c_int;
    pub(crate) fn lp_shim_tasks_walk_end() -> c_int;
    pub(crate) fn lp_shim_idle_records(possible: *mut u32) -> u32;
    pub(crate) fn lp_shim_tasks_count() -> u32;
    pub(crate) fn lp_shim_tasks_next(restart: bool, max: u32, tasks: *mut *mut TaskStruct, recs: *mut *mut c_void) -> u32;
    pub(crate) fn lp_shim_put_task(t: *mut TaskStruct);
    pub(crate) fn lp_shim_task_rec(t: *mut TaskStruct) -> *mut c_void;
    pub(crate) fn lp_shim_task_rec_cache(curr: *mut TaskStruct) -> *mut c_void;
    pub(crate) fn lp_shim_resched_hook(on: bool) -> c_int;
    pub(crate) fn lp_shim_current() -> *mut TaskStruct;
    pub(crate) fn lp_shim_task_info(t: *mut TaskStruct, info: *mut TaskInfo);
    pub(crate) fn lp_shim_task_running(t: *mut TaskStruct) -> bool;
    pub(crate) fn lp_shim_idle_task(cpu: u32) -> *mut TaskStruct;
    fn lp_shim_pin(t: *mut TaskStruct, cb: PinCb, ctx: *mut c_void) -> c_int;
    fn lp_shim_offline_idle(cpu: u32, cb: PinCb, ctx: *mut c_void) -> c_int;
    fn lp_shim_walk(t: *mut TaskStruct, cb: FrameCb, ctx: *mut c_void) -> c_int;
    pub(crate) fn lp_shim_kick_user(t: *mut TaskStruct, signal: bool) -> c_int;
    pub(crate) fn lp_shim_works_pending() -> c_int;
    pub(crate) fn lp_shim_wake(t: *mut TaskStruct);
    fn lp_shim_on_cpu(cpu: u32, cb: CpuCb, ctx: *mut c_void) -> c_int;
    fn lp_shim_stop_machine(cb: StopCb, ctx: *mut c_void) -> c_int;
    pub(crate) fn lp_shim_nr_cpu_ids() -> u32;
    pub(crate) fn lp_shim_cpu_online(cpu: u32) -> bool;
    pub(crate) fn lp_shim_synchronize();
    fn lp_shim_assert_switch_section();
    pub(crate) fn lp_shim_exit_barrier();
    pub(crate) fn lp_shim_taint();
    pub(crate) fn lp_shim_now_ns() -> u64;
    pub(crate) fn lp_shim_msleep(ms: u32);
    pub(crate) fn lp_shim_udelay(us: u32);
    pub(crate) fn lp_shim_fentry_ret_offset(func: c_ulong) -> u32;
    pub(crate) fn lp_shim_schedule_retry(delay_ns: u64);
    pub(crate) fn lp_shim_cancel_retry();
    pub(crate) fn lp_shim_dir_add(patch: u32, name: *const c_char, builtin: bool) -> c_int;
    pub(crate) fn lp_shim_dir_add_object(patch: u32, obj: u32, name: *const c_char) -> c_int;
    pub(crate) fn lp_shim_dir_add_func(patch: u32, obj: u32, name: *const c_char, sympos: c_ulong) -> c_int;
    pub(crate) fn lp_shim_dir_remove(patch: u32) -> c_int;
    pub(crate) fn lp_shim_dir_remove_all();
    pub(crate) fn lp_shim_patch_state_file(on: bool) -> c_int;
    pub(crate) fn lp_shim_klp_log(msg: *const c_char, len: c_int);
    pub(crate) fn lp_shim_module_get() -> bool;
    pub(crate) fn lp_shim_module_put();
    pub(crate) fn lp_shim_lock();
    pub(crate) fn lp_shim_unlock();
    pub(crate) fn lp_shim_comm_of(pid: i32, buf: *mut u8) -> bool;
    pub(crate) fn seq_write(m: *mut c_void, data: *const c_void, len: usize) -> c_int;
}

/// A snapshot of `t`'s fields.
pub(crate) fn task_info(t: *mut TaskStruct) -> TaskInfo {
    let mut info = TaskInfo {
        start_time: 0,
        pid: 0,
        tgid: 0,
        cpu: 0,
        state: 0,
        kthread: false,
        idle: false,
        exiting: false,
        on_cpu: false,
        comm: [0; 16],
    };
    // SAFETY: `t` is a live task (callers hold the RCU read lock or it is current); `info` is
    // a valid out-pointer.
    unsafe { lp_shim_task_info(t, &mut info) };
    info
}

/// Hands `f` to `call` — a shim function that calls the callback it is given at most once,
/// with a task, in this task and during the call — through a trampoline; `None` if the shim
/// answered `LP_PIN_BUSY` (or did not call it).
fn with_task_callback<R, F: FnOnce(*mut TaskStruct) -> R>(f: F, call: impl FnOnce(PinCb, *mut c_void) -> c_int) -> Option<R> {
    struct Ctx<F, R> {
        f: Option<F>,
        r: Option<R>,
    }
    unsafe extern "C" fn tramp<R, F: FnOnce(*mut TaskStruct) -> R>(ctx: *mut c_void, t: *mut TaskStruct) -> c_int {
        // SAFETY: `ctx` is the `&mut Ctx` passed below, alive for the whole call.
        let c = unsafe { &mut *ctx.cast::<Ctx<F, R>>() };
        if let Some(f) = c.f.take() {
            c.r = Some(f(t));
        }
        0
    }
    let mut c = Ctx { f: Some(f), r: None };
    let ret = call(tramp::<R, F>, (&raw mut c).cast());
    if ret == LP_PIN_BUSY {
        None
    } else {
        c.r
    }
}

/// Runs `f` while `t` cannot run (see `lp_shim_pin`); `None` if it is running or runnable.
pub(crate) fn pin<R, F: FnOnce(*mut TaskStruct) -> R>(t: *mut TaskStruct, f: F) -> Option<R> {
    // SAFETY: the trampoline matches `ctx`'s type; the shim calls it at most once, on this
    // CPU, during this call; `t` is the caller's live task (its contract).
    with_task_callback(f, |cb, ctx| unsafe { lp_shim_pin(t, cb, ctx) })
}

/// Runs `f` with the idle task of `cpu` if `cpu` is offline, the CPU hotplug lock held so that
/// it stays offline meanwhile (`lp_shim_offline_idle`: such a task never returns into its
/// stack); `None` if `cpu` is online.
pub(crate) fn if_offline_idle<R, F: FnOnce(*mut TaskStruct) -> R>(cpu: u32, f: F) -> Option<R> {
    // SAFETY: the trampoline matches `ctx`'s type; the shim calls it at most once, in this
    // task, during this call.
    with_task_callback(f, |cb, ctx| unsafe { lp_shim_offline_idle(cpu, cb, ctx) })
}

/// Walks `t`'s stack (current, or pinned); `f` returns `false` to stop. Returns the shim's
/// `LP_WALK_*` code.
pub(crate) fn walk<F: FnMut(usize) -> bool>(t: *mut TaskStruct, mut f: F) -> c_int {
    unsafe extern "C" fn tramp<F: FnMut(usize) -> bool>(ctx: *mut c_void, addr: c_ulong) -> c_int {
        // SAFETY: `ctx` is the `&mut F` passed below, alive for the whole call.
        let f = unsafe { &mut *ctx.cast::<F>() };
        if f(addr as usize) {
            LP_WALK_OK
        } else {
            LP_WALK_STOP
        }
    }
    // SAFETY: the trampoline matches `ctx`'s type; the shim calls it only during this call,
    // on this CPU; `t` is current or pinned by the caller (its contract).
    unsafe { lp_shim_walk(t, tramp::<F>, (&raw mut f).cast()) }
}

/// Runs `f(current task, cpu)` on `cpu` from an IPI (synchronously).
pub(crate) fn on_cpu<F: FnMut(*mut TaskStruct, u32)>(cpu: u32, mut f: F) -> c_int {
    unsafe extern "C" fn tramp<F: FnMut(*mut TaskStruct, u32)>(ctx: *mut c_void, t: *mut TaskStruct, cpu: u32) {
        // SAFETY: `ctx` is the `&mut F` passed below; smp_call_function_single() waits.
        let f = unsafe { &mut *ctx.cast::<F>() };
        f(t, cpu)
    }
    // SAFETY: the trampoline matches `ctx`'s type; smp_call_function_single(.., wait = 1)
    // returns only after it ran, so `f` outlives the call. `F` need not be `Send` although it
    // may run on another CPU: this task spins in the call meanwhile (the IPI's completion is
    // the ordering both ways), so `f` never runs beside code of this task, and its callers
    // pass closures of references only (nothing whose use or drop is tied to this task, such
    // as a lock guard).
    unsafe { lp_shim_on_cpu(cpu, tramp::<F>, (&raw mut f).cast()) }
}

/// Runs `f` once under `stop_machine()`.
pub(crate) fn stop_machine<R, F: FnOnce() -> R>(f: F) -> Option<R> {
    struct Ctx<F, R> {
        f: Option<F>,
        r: Option<R>,
    }
    unsafe extern "C" fn tramp<R, F: FnOnce() -> R>(ctx: *mut c_void) -> c_int {
        // SAFETY: `ctx` is the `&mut Ctx` passed below; stop_machine() waits for it.
        let c = unsafe { &mut *ctx.cast::<Ctx<F, R>>() };
        if let Some(f) = c.f.take() {
            c.r = Some(f());
        }
        0
    }
    let mut c = Ctx { f: Some(f), r: None };
    // SAFETY: the trampoline matches `ctx`'s type; stop_machine() returns only after it ran
    // (on one CPU's stopper thread), so `c` outlives the call. `F` and `R` need not be `Send`
    // although they cross to that thread: this task sleeps in stop_machine() meanwhile (its
    // completion orders both ways), so `f` never runs beside code of this task, and its one
    // caller (`Sched::stop_all`, the core's stop-the-world attempt) passes a closure of
    // references only (nothing whose use or drop is tied to this task, such as a lock guard).
    // The core's `Scheduler::stop_all` has no `Send` bound for the same reason (a bound would
    // force every backend's types to be `Sync`, the mock's are not).
    unsafe { lp_shim_stop_machine(tramp::<R, F>, (&raw mut c).cast()) };
    c.r
}

/// Warns once if the caller, a switch point a task runs on itself, is preemptible: it must run
/// in a section the engine's grace period waits for (`Live::task_work`'s contract).
pub(crate) fn assert_switch_section() {
    // SAFETY: no preconditions.
    unsafe { lp_shim_assert_switch_section() }
}

/// The current task.
pub(crate) fn current() -> *mut TaskStruct {
    // SAFETY: no preconditions.
    unsafe { lp_shim_current() }
}

/// The monotonic clock.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { lp_shim_now_ns() }
}

/// The size of the function starting at `addr` (from kallsyms), if `addr` is a symbol start.
pub(crate) fn extent(addr: usize) -> Option<usize> {
    let mut size: c_ulong = 0;
    // SAFETY: `size` is a valid out-pointer.
    (unsafe { lp_shim_extent(addr as c_ulong, &mut size) } == 0).then_some(size as usize)
}

/// Serialises the engine (a kernel mutex).
pub(crate) struct EngineGuard(());

impl EngineGuard {
    pub(crate) fn lock() -> Self {
        // SAFETY: process context (sysfs writes, the retry work, module init/exit).
        unsafe { lp_shim_lock() };
        EngineGuard(())
    }
}

impl Drop for EngineGuard {
    fn drop(&mut self) {
        // SAFETY: we hold the lock.
        unsafe { lp_shim_unlock() };
    }
}
