//! The kernel around the engine, for the selftests: the module loader (`insmod`, `rmmod`, the
//! module notifier), the sysfs writes of `functions.sh`, the test modules' `pr_info` lines and
//! a `dmesg` in which they all land, next to the engine's own messages.
//!
//! Every `livepatch: …` line comes from an [`Event`] the engine emitted; the harness only adds
//! the prefix — except the two that `functions.sh`'s `set_ftrace_enabled` itself writes to
//! `/dev/kmsg` with that prefix (`kernel.ftrace_enabled = N`, and the sysctl's refusal). The
//! harness writes what the script itself logs (`% insmod …`, `% rmmod …`,
//! `% echo …`, `insmod: ERROR: …` from the errno the engine returned, `grep` output) and what
//! the test modules print from their callbacks, init and exit functions.

use crate::common::{r, TestBackend, TestTask};
use livepatch_core::backend::TaskKind;
use livepatch_core::patch::{CallbackContext, CallbackError, State, StateId};
use livepatch_core::transition::{Event, Events};
use livepatch_core::{
    CodeAddr, CodeRange, Engine, EngineStorage, Func, Live, Object, ObjectCallbacks, ObjectId, Patch, PatchId, Policy,
    Redirect,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::Mutex;

/// `Box::leak`: the test modules are `static`s in a kernel; here each test builds its own.
pub fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

// ---------------------------------------------------------------------------------------------
// dmesg

/// A module's `mod->state`, as `test_klp_callbacks_demo.c` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModState {
    Coming,
    Live,
    Going,
}

impl ModState {
    fn describe(self) -> &'static str {
        match self {
            ModState::Coming => "[MODULE_STATE_COMING] Full formed, running module_init",
            ModState::Live => "[MODULE_STATE_LIVE] Normal state",
            ModState::Going => "[MODULE_STATE_GOING] Going away",
        }
    }
}

/// The kernel log, and the loaded modules' states the callbacks print.
#[derive(Default)]
pub struct Dmesg {
    lines: Mutex<Vec<String>>,
    modules: Mutex<BTreeMap<u32, ModState>>,
}

impl Dmesg {
    pub fn log(&self, line: impl Into<String>) {
        self.lines.lock().unwrap().push(line.into());
    }

    /// `start_test`: later checks only see what follows.
    pub fn start_test(&self) {
        self.lines.lock().unwrap().clear();
    }

    fn state(&self, object: ObjectId) -> Option<ModState> {
        self.modules.lock().unwrap().get(&object.0).copied()
    }

    fn set_state(&self, object: ObjectId, state: Option<ModState>) {
        let mut modules = self.modules.lock().unwrap();
        match state {
            Some(s) => modules.insert(object.0, s),
            None => modules.remove(&object.0),
        };
    }

    /// `check_result`: the lines since `start_test` that mention `livepatch:` or `test_klp`
    /// (minus taint notices) must equal `expected` line for line, after replacing each
    /// `$VAR` / `${VAR}` of the script by its value.
    pub fn check_result(&self, expected: &str, vars: &[(&str, &str)]) {
        let mut expected = expected.to_string();
        // Longest names first, so `$MOD_LIVEPATCH2` is not read as `$MOD_LIVEPATCH` + "2".
        let mut vars = vars.to_vec();
        vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        for (k, v) in vars {
            expected = expected.replace(&format!("${{{k}}}"), v).replace(&format!("${k}"), v);
        }
        assert!(!expected.contains('$'), "unmapped variable in {expected}");
        let expected = expected.replace("\\\"", "\"");
        let expected: Vec<&str> = expected.lines().collect();
        let result: Vec<String> = self
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| (l.contains("livepatch:") || l.contains("test_klp")) && !l.contains("taint"))
            .cloned()
            .collect();
        if expected != result {
            let mut diff = String::new();
            for i in 0..expected.len().max(result.len()) {
                let (e, g) = (expected.get(i).copied(), result.get(i).map(String::as_str));
                let mark = if e == g { ' ' } else { '!' };
                diff += &format!("{mark} {:<100} | {}\n", e.unwrap_or("<none>"), g.unwrap_or("<none>"));
            }
            panic!("dmesg differs from the selftest's expected output (expected | result):\n{diff}");
        }
    }
}

/// The engine's messages, with the kernel's `pr_fmt` prefix.
impl Events for Dmesg {
    fn event(&self, event: &Event<'_>) {
        self.log(format!("livepatch: {event}"));
    }
}

// ---------------------------------------------------------------------------------------------
// the machine: code layout, objects, tasks

pub const CALLBACKS_MOD: ObjectId = ObjectId(1);
pub const CALLBACKS_BUSY: ObjectId = ObjectId(2);

pub const CMDLINE_PROC_SHOW: usize = 0x1000;
pub const MEMINFO_PROC_SHOW: usize = 0x1100;
pub const SYS_GETPID: usize = 0x1200;
pub const SEQ_READ: usize = 0x1800;
pub const ENTRY_SYSCALL: usize = 0x1900;
pub const WORKER_THREAD: usize = 0x1a00;
pub const BUSYMOD_WORK_FUNC: usize = 0x20_0000;
pub const MSLEEP: usize = 0x1b00;

pub fn func(at: usize) -> CodeRange {
    r(at, 0x100)
}

/// The tasks: a shell (1), the busy module's kworker (2) and `NPROC` processes calling
/// `getpid` in a loop (3…).
pub const SHELL: u32 = 1;
pub const KWORKER: u32 = 2;
pub const NPROC: u32 = 4;

pub fn machine() -> &'static TestBackend {
    let mut b = TestBackend::with_tasks(0);
    b.tasks.push(TestTask::new(SHELL, TaskKind::User));
    b.tasks.push(TestTask::new(KWORKER, TaskKind::Kthread));
    for i in 0..NPROC {
        b.tasks.push(TestTask::new(3 + i, TaskKind::User));
    }
    b.unloaded.borrow_mut().extend([CALLBACKS_MOD.0, CALLBACKS_BUSY.0]);
    leak(b)
}

// ---------------------------------------------------------------------------------------------
// the test modules

/// `test_klp_callbacks_demo.c` / `demo2.c`: every callback prints `callback_info`;
/// `pre_patch` returns the `pre_patch_ret` module parameter.
pub struct DemoCallbacks {
    module: &'static str,
    dmesg: &'static Dmesg,
    pub pre_patch_ret: AtomicI32,
}

impl DemoCallbacks {
    fn info(&self, callback: &str, ctx: &CallbackContext<'_, '_>) {
        callback_info(self.dmesg, self.module, callback, ctx);
    }
}

fn callback_info(dmesg: &Dmesg, module: &str, callback: &str, ctx: &CallbackContext<'_, '_>) {
    let object = ctx.patch().objects().iter().find(|o| o.id() == ctx.object()).expect("the callback's object");
    match dmesg.state(ctx.object()) {
        Some(state) if ctx.object() != ObjectId::VMLINUX => {
            dmesg.log(format!("{module}: {callback}: {} -> {}", object.name(), state.describe()))
        }
        _ => dmesg.log(format!("{module}: {callback}: vmlinux")),
    }
}

impl ObjectCallbacks for DemoCallbacks {
    fn pre_patch(&self, ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        self.info("pre_patch_callback", ctx);
        match self.pre_patch_ret.load(Ordering::Relaxed) {
            0 => Ok(()),
            e => Err(CallbackError(e)),
        }
    }
    fn post_patch(&self, ctx: &CallbackContext<'_, '_>) {
        self.info("post_patch_callback", ctx);
    }
    fn pre_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        self.info("pre_unpatch_callback", ctx);
    }
    fn post_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        self.info("post_unpatch_callback", ctx);
    }
}

pub const CONSOLE_LOGLEVEL_STATE: StateId = StateId(1);
const CONSOLE_LOGLEVEL_MOTORMOUTH: usize = 15;
/// The state's data word: "allocated" (the `kzalloc`ed pointer) plus the saved loglevel.
const ALLOCATED: usize = 1 << 16;

/// `test_klp_state.c` (`migrates: false`) and `test_klp_state2.c`/`state3.c`
/// (`migrates: true`): the console loglevel as a system state. Dereferencing the state's data
/// before it was allocated panics, as it would oops in a kernel.
pub struct StateCallbacks {
    module: &'static str,
    dmesg: &'static Dmesg,
    migrates: bool,
    console_loglevel: &'static AtomicUsize,
}

impl StateCallbacks {
    fn say(&self, func: &str, what: &str) {
        self.dmesg.log(format!("{}: {func}: {what}", self.module));
    }
    fn prev<'a>(&self, ctx: &CallbackContext<'_, 'a>) -> Option<&'a State> {
        if self.migrates {
            ctx.prev_state(CONSOLE_LOGLEVEL_STATE)
        } else {
            None
        }
    }
    fn deref(data: usize) -> usize {
        assert!(data & ALLOCATED != 0, "BUG: kernel NULL pointer dereference (state data never allocated)");
        data & !ALLOCATED
    }
}

impl ObjectCallbacks for StateCallbacks {
    fn pre_patch(&self, ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        callback_info(self.dmesg, self.module, "pre_patch_callback", ctx);
        if self.prev(ctx).is_some() {
            self.say("allocate_loglevel_state", "space to store console_loglevel already allocated");
            return Ok(());
        }
        let state = ctx.state(CONSOLE_LOGLEVEL_STATE).ok_or(CallbackError(-22))?;
        state.set_data(ALLOCATED);
        self.say("allocate_loglevel_state", "allocating space to store console_loglevel");
        Ok(())
    }
    fn post_patch(&self, ctx: &CallbackContext<'_, '_>) {
        callback_info(self.dmesg, self.module, "post_patch_callback", ctx);
        let Some(state) = ctx.state(CONSOLE_LOGLEVEL_STATE) else { return };
        if let Some(prev) = self.prev(ctx) {
            self.say("fix_console_loglevel", "taking over the console_loglevel change");
            state.set_data(prev.data());
            return;
        }
        self.say("fix_console_loglevel", "fixing console_loglevel");
        Self::deref(state.data());
        let old = self.console_loglevel.swap(CONSOLE_LOGLEVEL_MOTORMOUTH, Ordering::Relaxed);
        state.set_data(ALLOCATED | old);
    }
    fn pre_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        callback_info(self.dmesg, self.module, "pre_unpatch_callback", ctx);
        if self.prev(ctx).is_some() {
            self.say("restore_console_loglevel", "passing the console_loglevel change back to the old livepatch");
            return;
        }
        let Some(state) = ctx.state(CONSOLE_LOGLEVEL_STATE) else { return };
        self.say("restore_console_loglevel", "restoring console_loglevel");
        self.console_loglevel.store(Self::deref(state.data()), Ordering::Relaxed);
    }
    fn post_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        callback_info(self.dmesg, self.module, "post_unpatch_callback", ctx);
        if self.prev(ctx).is_some() {
            self.say("free_loglevel_state", "keeping space to store console_loglevel");
            return;
        }
        let Some(state) = ctx.state(CONSOLE_LOGLEVEL_STATE) else { return };
        self.say("free_loglevel_state", "freeing space for the stored console_loglevel");
        Self::deref(state.data());
        state.set_data(0);
    }
}

/// A livepatch module: its patch, and what its variants print when called.
#[derive(Clone, Copy)]
pub struct Livepatch {
    pub patch: &'static Patch<'static>,
    pub demo: Option<&'static DemoCallbacks>,
}

impl Livepatch {
    pub fn name(&self) -> &'static str {
        self.patch.name()
    }
}

fn patch(id: u32, name: &'static str, objects: Vec<Object<'static>>, replace: bool) -> &'static Patch<'static> {
    let objects: &'static [Object<'static>] = Box::leak(objects.into_boxed_slice());
    let p = Patch::new(PatchId(id), name, objects);
    leak(if replace { p.replacing() } else { p })
}

fn funcs(list: Vec<Func<'static>>) -> &'static [Func<'static>] {
    Box::leak(list.into_boxed_slice())
}

/// Every test module of `tools/testing/selftests/livepatch/test_modules`, built per test.
pub struct Modules {
    /// `test_klp_livepatch`: `cmdline_proc_show`.
    pub livepatch: Livepatch,
    /// `test_klp_atomic_replace replace=0` / `replace=1`: `meminfo_proc_show`.
    pub atomic_replace: Livepatch,
    pub atomic_replace_1: Livepatch,
    /// `test_klp_syscall`: `sys_getpid`.
    pub syscall: Livepatch,
    /// `test_klp_callbacks_demo`: callbacks on vmlinux and both target modules, and
    /// `busymod_work_func`.
    pub demo: Livepatch,
    /// `test_klp_callbacks_demo2 replace=0` / `replace=1`: callbacks on vmlinux only.
    pub demo2: Livepatch,
    pub demo2_1: Livepatch,
    /// `test_klp_state`, `test_klp_state2`, `test_klp_state3`: no function, a system state.
    pub state: Livepatch,
    pub state2: Livepatch,
    pub state3: Livepatch,
    /// What each variant prints (`seq_printf`) or does, by entry address.
    pub variants: BTreeMap<usize, &'static str>,
    pub console_loglevel: &'static AtomicUsize,
}

pub const LIVEPATCH_CMDLINE_PROC_SHOW: usize = 0x10_0000;
pub const LIVEPATCH_MEMINFO_PROC_SHOW: usize = 0x11_0000;
pub const LP_SYS_GETPID: usize = 0x12_0000;
pub const PATCHED_WORK_FUNC: usize = 0x13_0000;

impl Modules {
    pub fn new(dmesg: &'static Dmesg) -> Self {
        let vmlinux = |f: &'static [Func<'static>]| Object::new(ObjectId::VMLINUX, "vmlinux", f);
        let none = funcs(Vec::new());
        let cmdline =
            || funcs(vec![Func::new("cmdline_proc_show", func(CMDLINE_PROC_SHOW), func(LIVEPATCH_CMDLINE_PROC_SHOW))]);
        let meminfo =
            || funcs(vec![Func::new("meminfo_proc_show", func(MEMINFO_PROC_SHOW), func(LIVEPATCH_MEMINFO_PROC_SHOW))]);
        let getpid = funcs(vec![Func::new("__x64_sys_getpid", func(SYS_GETPID), func(LP_SYS_GETPID))]);
        let busy = funcs(vec![Func::new("busymod_work_func", func(BUSYMOD_WORK_FUNC), func(PATCHED_WORK_FUNC))]);

        let demo_cb = |module| leak(DemoCallbacks { module, dmesg, pre_patch_ret: AtomicI32::new(0) });
        let cb = demo_cb("test_klp_callbacks_demo");
        let demo = patch(
            5,
            "test_klp_callbacks_demo",
            vec![
                vmlinux(none).with_callbacks(cb),
                Object::new(CALLBACKS_MOD, "test_klp_callbacks_mod", none).with_callbacks(cb),
                Object::new(CALLBACKS_BUSY, "test_klp_callbacks_busy", busy).with_callbacks(cb),
            ],
            false,
        );
        let demo2 = |id, replace| {
            let cb = demo_cb("test_klp_callbacks_demo2");
            let p = patch(id, "test_klp_callbacks_demo2", vec![vmlinux(none).with_callbacks(cb)], replace);
            Livepatch { patch: p, demo: Some(cb) }
        };
        let console_loglevel = leak(AtomicUsize::new(7));
        let state = |id, module, version, migrates| {
            let cb = leak(StateCallbacks { module, dmesg, migrates, console_loglevel });
            let states: &'static [State] =
                Box::leak(vec![State::new(CONSOLE_LOGLEVEL_STATE, version)].into_boxed_slice());
            let p =
                Patch::new(PatchId(id), module, Box::leak(vec![vmlinux(none).with_callbacks(cb)].into_boxed_slice()));
            Livepatch { patch: leak(p.replacing().with_states(states)), demo: None }
        };
        let plain = |p| Livepatch { patch: p, demo: None };
        Modules {
            livepatch: plain(patch(1, "test_klp_livepatch", vec![vmlinux(cmdline())], false)),
            atomic_replace: plain(patch(2, "test_klp_atomic_replace", vec![vmlinux(meminfo())], false)),
            atomic_replace_1: plain(patch(3, "test_klp_atomic_replace", vec![vmlinux(meminfo())], true)),
            syscall: plain(patch(4, "test_klp_syscall", vec![vmlinux(getpid)], false)),
            demo: Livepatch { patch: demo, demo: Some(cb) },
            demo2: demo2(6, false),
            demo2_1: demo2(7, true),
            state: state(8, "test_klp_state", 1, false),
            state2: state(9, "test_klp_state2", 2, true),
            state3: state(10, "test_klp_state3", 2, true),
            variants: BTreeMap::from([
                (LIVEPATCH_CMDLINE_PROC_SHOW, "test_klp_livepatch: this has been live patched"),
                (LIVEPATCH_MEMINFO_PROC_SHOW, "test_klp_atomic_replace: this has been live patched"),
                (CMDLINE_PROC_SHOW, "BOOT_IMAGE=/boot/vmlinuz-6.12 root=/dev/vda ro console=ttyS0"),
                (MEMINFO_PROC_SHOW, "MemTotal:        2014560 kB"),
            ]),
            console_loglevel,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the kernel: functions.sh over the engine

/// A module that is not a livepatch (`load_mod` / `unload_mod`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `test_klp_callbacks_mod`.
    CallbacksMod,
    /// `test_klp_callbacks_busy block_transition=…`.
    CallbacksBusy { block: bool },
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::CallbacksMod => "test_klp_callbacks_mod",
            Target::CallbacksBusy { .. } => "test_klp_callbacks_busy",
        }
    }
    fn id(self) -> ObjectId {
        match self {
            Target::CallbacksMod => CALLBACKS_MOD,
            Target::CallbacksBusy { .. } => CALLBACKS_BUSY,
        }
    }
    fn params(self) -> &'static str {
        match self {
            Target::CallbacksMod => "",
            Target::CallbacksBusy { block: true } => " block_transition=Y",
            Target::CallbacksBusy { block: false } => " block_transition=N",
        }
    }
}

/// `insmod`'s wording of an errno (kmod's `mod_strerror`, then `strerror`).
pub fn insmod_strerror(errno: i32) -> &'static str {
    match -errno {
        22 => "Invalid parameters",
        19 => "No such device",
        16 => "Device or resource busy",
        12 => "Cannot allocate memory",
        e => panic!("no wording for errno {e}"),
    }
}

/// `MAX_RETRIES` of `functions.sh`'s `loop_until`.
const MAX_RETRIES: usize = 600;

pub struct Kernel {
    pub b: &'static TestBackend,
    pub live: &'static Live<'static>,
    pub engine: Engine<'static>,
    pub dmesg: &'static Dmesg,
    pub m: Modules,
    /// `klp_pids` of `test_klp_syscall` still to call the new `getpid`.
    syscall_pids: Mutex<Vec<u32>>,
    hammering: AtomicBool,
}

impl Kernel {
    /// A booted machine with the Linux 6.12 policy.
    pub fn boot() -> Self {
        Self::boot_with(Policy::LINUX_6_12)
    }

    /// A booted machine with `policy`.
    pub fn boot_with(policy: Policy) -> Self {
        let dmesg = leak(Dmesg::default());
        let storage = leak(EngineStorage::<16, 64>::new());
        let live = leak(Live::new(storage, policy));
        let mut engine = Engine::new(live);
        engine.set_events(dmesg);
        Kernel {
            b: machine(),
            live,
            engine,
            dmesg,
            m: Modules::new(dmesg),
            syscall_pids: Mutex::new(Vec::new()),
            hammering: AtomicBool::new(false),
        }
    }

    pub fn start_test(&self, _name: &str) {
        self.dmesg.start_test();
    }

    /// `log` of `functions.sh`: the script writes to `/dev/kmsg`.
    pub fn log(&self, line: impl Into<String>) {
        self.dmesg.log(line);
    }

    pub fn check_result(&self, expected: &str, vars: &[(&str, &str)]) {
        self.dmesg.check_result(expected, vars);
    }

    fn wait_for_transition(&mut self) {
        for _ in 0..MAX_RETRIES {
            if self.engine.transition().is_none() {
                return;
            }
            self.run_user_space();
            self.engine.try_complete(self.b, |_| {}).expect("a transition is in progress");
        }
        panic!("failed to complete transition");
    }

    /// `__klp_enable_patch` / `__klp_disable_patch` end with a first completion attempt.
    fn first_attempt(&mut self) {
        if self.engine.transition().is_some() {
            self.engine.try_complete(self.b, |_| {}).unwrap();
        }
    }

    fn insmod_line(&self, name: &str, params: &str) {
        self.log(format!("% insmod test_modules/{name}.ko{params}"));
    }

    /// `load_lp_nowait`: insmod; the module's init calls `klp_enable_patch`.
    pub fn load_lp_nowait(&mut self, lp: Livepatch, params: &str) {
        self.insmod_line(lp.name(), params);
        if let Err(e) = self.engine.enable(lp.patch, self.b) {
            panic!("insmod {}: {e}", lp.name());
        }
        self.first_attempt();
    }

    /// `load_lp`: insmod, then wait until the transition is over.
    pub fn load_lp(&mut self, lp: Livepatch, params: &str) {
        self.load_lp_nowait(lp, params);
        self.wait_for_transition();
    }

    /// `load_failing_mod` for a livepatch: `klp_enable_patch` fails, insmod reports its errno.
    pub fn load_failing_lp(&mut self, lp: Livepatch, params: &str) {
        self.insmod_line(lp.name(), params);
        let e = self.engine.enable(lp.patch, self.b).expect_err("the livepatch unexpectedly loaded");
        assert!(!lp.patch.is_registered(), "a refused enable leaves nothing behind");
        self.log(format!(
            "insmod: ERROR: could not insert module test_modules/{}.ko: {}",
            lp.name(),
            insmod_strerror(e.errno())
        ));
    }

    /// `unload_lp`: rmmod waits until the patch is gone (its module's refcount drops).
    pub fn unload_lp(&mut self, lp: Livepatch) {
        assert!(!lp.patch.is_registered(), "failed to unload module {} (refcnt)", lp.name());
        self.log(format!("% rmmod {}", lp.name()));
    }

    /// `disable_lp`: `echo 0 > /sys/kernel/livepatch/$MOD/enabled` (`enabled_store`: a
    /// transition of this patch is reversed, otherwise it is disabled), then wait until the
    /// patch is gone.
    pub fn disable_lp(&mut self, lp: Livepatch) {
        self.log(format!("% echo 0 > /sys/kernel/livepatch/{}/enabled", lp.name()));
        match self.engine.transition() {
            Some(t) if t.patch == lp.patch.id() => self.engine.reverse(self.b).unwrap(),
            _ => {
                self.engine.disable(lp.patch, self.b).unwrap();
                self.first_attempt();
            }
        }
        self.wait_for_transition();
        assert!(!lp.patch.is_registered(), "failed to disable livepatch {}", lp.name());
    }

    /// `set_pre_patch_ret`.
    pub fn set_pre_patch_ret(&self, lp: Livepatch, ret: i32) {
        self.log(format!("% echo {ret} > /sys/module/{}/parameters/pre_patch_ret", lp.name()));
        lp.demo.expect("a callbacks demo module").pre_patch_ret.store(ret, Ordering::Relaxed);
    }

    /// `/sys/kernel/livepatch/$MOD/transition`.
    pub fn in_transition(&self, lp: Livepatch) -> bool {
        self.engine.transition().is_some_and(|t| t.patch == lp.patch.id())
    }

    fn kworker(&self) -> &TestTask {
        self.b.task(KWORKER)
    }

    /// `load_mod` of a target module: the module notifier (`klp_module_coming`), then its
    /// init. A refusal is reported by insmod.
    pub fn load_mod(&mut self, t: Target) {
        self.insmod_line(t.name(), t.params());
        self.b.unloaded.borrow_mut().remove(&t.id().0);
        self.dmesg.set_state(t.id(), Some(ModState::Coming));
        if let Err(e) = self.engine.object_coming(t.id(), self.b) {
            self.b.unloaded.borrow_mut().insert(t.id().0);
            self.dmesg.set_state(t.id(), None);
            self.log(format!(
                "insmod: ERROR: could not insert module test_modules/{}.ko: {}",
                t.name(),
                insmod_strerror(e.errno())
            ));
            return;
        }
        let name = t.name();
        self.log(format!("{name}: {name}_init"));
        if let Target::CallbacksBusy { block } = t {
            // schedule_work(): the kworker runs busymod_work_func, which sleeps in msleep()
            // until block_transition is cleared.
            self.log(format!("{name}: busymod_work_func enter"));
            *self.kworker().stack.borrow_mut() = vec![MSLEEP + 0x10, BUSYMOD_WORK_FUNC + 0x40, WORKER_THREAD + 0x80];
            if !block {
                self.busymod_work_func_exit();
            }
        }
        self.dmesg.set_state(t.id(), Some(ModState::Live));
    }

    fn busymod_work_func_exit(&self) {
        self.kworker().stack.borrow_mut().clear();
        self.log("test_klp_callbacks_busy: busymod_work_func exit");
    }

    /// `unload_mod` of a target module: its exit, then `klp_module_going`.
    pub fn unload_mod(&mut self, t: Target) {
        let name = t.name();
        self.log(format!("% rmmod {name}"));
        self.dmesg.set_state(t.id(), Some(ModState::Going));
        if let Target::CallbacksBusy { .. } = t {
            if !self.kworker().stack.borrow().is_empty() {
                self.busymod_work_func_exit();
            }
        }
        self.log(format!("{name}: {name}_exit"));
        self.engine.object_going(t.id(), self.b);
        self.b.unloaded.borrow_mut().insert(t.id().0);
        self.dmesg.set_state(t.id(), None);
    }

    /// Calls `function` in the shell's context through its hook, as the kernel's ftrace
    /// handler would, and returns where the call went.
    pub fn call(&self, task: u32, function: usize) -> usize {
        match self.live.slot_at(CodeAddr(function)) {
            None => function,
            Some(slot) => match self.live.redirect(slot, &self.b.task(task).state, CodeAddr(SEQ_READ)) {
                Redirect::Original => function,
                Redirect::Variant(at) => at.0,
            },
        }
    }

    /// `grep 'live patched' /proc/<file> > /dev/kmsg`.
    pub fn grep_live_patched(&self, show: usize) {
        let at = self.call(SHELL, show);
        let out = self.m.variants.get(&at).unwrap_or_else(|| panic!("no code at {at:#x}"));
        if out.contains("live patched") {
            self.log(*out);
        }
    }

    /// `test_klp-call_getpid` processes: `NPROC` tasks calling `getpid()` in a loop.
    pub fn start_getpid_hammer(&self) -> Vec<u32> {
        self.hammering.store(true, Ordering::Relaxed);
        (0..NPROC).map(|i| 3 + i).collect()
    }

    /// `test_klp_syscall`'s `klp_pids` parameter.
    pub fn set_klp_pids(&self, pids: &[u32]) {
        *self.syscall_pids.lock().unwrap() = pids.to_vec();
    }

    /// `/sys/kernel/test_klp_syscall/npids`.
    pub fn npids(&self) -> usize {
        self.syscall_pids.lock().unwrap().len()
    }

    /// `kill $pid`.
    pub fn stop_getpid_hammer(&self) {
        self.hammering.store(false, Ordering::Relaxed);
        for i in 0..NPROC {
            self.b.task(3 + i).running.set(false);
        }
    }

    /// Between completion attempts, user space runs: each hammering process enters the
    /// kernel, calls `getpid` through its hook (the new one removes the caller from
    /// `klp_pids`), and leaves through exit to user mode, a switch point.
    pub fn run_user_space(&self) {
        if !self.hammering.load(Ordering::Relaxed) {
            return;
        }
        for i in 0..NPROC {
            let task = self.b.task(3 + i);
            task.running.set(true); // always on a CPU: the sweep cannot check it
            *task.stack.borrow_mut() = vec![SYS_GETPID + 0x8, ENTRY_SYSCALL + 0x20];
            if self.call(task.id.0, SYS_GETPID) == LP_SYS_GETPID {
                self.syscall_pids.lock().unwrap().retain(|&p| p != task.id.0);
            }
            task.stack.borrow_mut().clear();
            self.live.exit_to_user(&task.state);
        }
    }

    /// `sysctl kernel.ftrace_enabled=<v>` (`set_ftrace_enabled [--fail]`): ftrace refuses to
    /// be disabled while a permanent ops (a livepatch hook) is registered; while disabled,
    /// registering one fails with `-EBUSY`.
    pub fn set_ftrace_enabled(&self, enabled: bool) {
        if !enabled && !self.b.hooks.borrow().is_empty() {
            self.log("livepatch: sysctl: setting key \"kernel.ftrace_enabled\": Device or resource busy");
            return;
        }
        self.b.fail_install.set(!enabled);
        self.log(format!("livepatch: kernel.ftrace_enabled = {}", u8::from(enabled)));
    }
}
