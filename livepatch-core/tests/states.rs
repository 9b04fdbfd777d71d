//! System states (`klp_state`), after the kernel's `test-state.sh` selftests: a patch that
//! modifies a system state in its callbacks, a cumulative patch taking it over, a compatible
//! cumulative chain, and an incompatible (older) cumulative patch refused.

mod common;

use common::{r, TestBackend};
use livepatch_core::patch::{CallbackContext, CallbackError, PatchError, State, StateId};
use livepatch_core::{
    Engine, EngineStorage, Error, Func, Live, Object, ObjectCallbacks, ObjectId, Patch, PatchId, Policy,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const LOGLEVEL: StateId = StateId(1);
const FIXED_LOGLEVEL: usize = 3;

/// The system: a console loglevel, and a log of what the callbacks did.
struct Console {
    loglevel: AtomicUsize,
    log: Mutex<Vec<String>>,
}

impl Console {
    fn new() -> Self {
        Self { loglevel: AtomicUsize::new(7), log: Mutex::new(Vec::new()) }
    }
    fn note(&self, ctx: &CallbackContext<'_, '_>, what: &str) {
        self.log.lock().unwrap().push(format!("{}: {what}", ctx.patch().name()));
    }
}

/// The callbacks of `test_klp_state*.c`: the state's data word holds the saved loglevel (+1,
/// so 0 means "not saved"); a cumulative patch takes it over instead of saving again.
impl ObjectCallbacks for Console {
    fn pre_patch(&self, ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        let state = ctx.state(LOGLEVEL).expect("the patch declares the state");
        match ctx.prev_state(LOGLEVEL) {
            Some(prev) => {
                state.set_data(prev.data());
                self.note(ctx, "take over");
            }
            None => self.note(ctx, "allocate"),
        }
        Ok(())
    }
    fn post_patch(&self, ctx: &CallbackContext<'_, '_>) {
        let state = ctx.state(LOGLEVEL).unwrap();
        if state.data() == 0 {
            state.set_data(self.loglevel.swap(FIXED_LOGLEVEL, Ordering::Relaxed) + 1);
            self.note(ctx, "fix loglevel");
        }
    }
    fn pre_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        let saved = ctx.state(LOGLEVEL).unwrap().data();
        self.loglevel.store(saved - 1, Ordering::Relaxed);
        self.note(ctx, "restore loglevel");
    }
    fn post_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        ctx.state(LOGLEVEL).unwrap().set_data(0);
        self.note(ctx, "free");
    }
}

fn run(engine: &mut Engine<'_>, b: &TestBackend) {
    assert!(engine.try_complete(b, |_| {}).unwrap().is_complete());
}

#[test]
fn a_patch_modifies_a_system_state_and_restores_it() {
    let storage = EngineStorage::<8, 32>::new();
    let console = Console::new();
    let states = [State::new(LOGLEVEL, 1)];
    let funcs = [Func::new("f", r(0x1000, 0x40), r(0x9000, 0x40))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &funcs).with_callbacks(&console)];
    let patch = Patch::new(PatchId(1), "state", &objs).replacing().with_states(&states);
    let b = TestBackend::with_tasks(2);
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    engine.enable(&patch, &b).unwrap();
    run(&mut engine, &b);
    assert_eq!(console.loglevel.load(Ordering::Relaxed), FIXED_LOGLEVEL);
    engine.disable(&patch, &b).unwrap();
    run(&mut engine, &b);
    assert_eq!(console.loglevel.load(Ordering::Relaxed), 7);
    assert_eq!(
        *console.log.lock().unwrap(),
        ["state: allocate", "state: fix loglevel", "state: restore loglevel", "state: free"]
    );
}

#[test]
fn a_cumulative_patch_takes_the_state_over() {
    let storage = EngineStorage::<8, 32>::new();
    let console = Console::new();
    let s1 = [State::new(LOGLEVEL, 1)];
    let s2 = [State::new(LOGLEVEL, 1)];
    let f1 = [Func::new("f", r(0x1000, 0x40), r(0x9000, 0x40))];
    let f2 = [Func::new("f", r(0x1000, 0x40), r(0xa000, 0x40))];
    let o1 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f1).with_callbacks(&console)];
    let o2 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f2).with_callbacks(&console)];
    let p1 = Patch::new(PatchId(1), "state", &o1).replacing().with_states(&s1);
    let p2 = Patch::new(PatchId(2), "state2", &o2).replacing().with_states(&s2);
    let b = TestBackend::with_tasks(2);
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    engine.enable(&p1, &b).unwrap();
    run(&mut engine, &b);
    engine.enable(&p2, &b).unwrap();
    run(&mut engine, &b);
    assert!(!p1.is_registered(), "replaced");
    assert_eq!(console.loglevel.load(Ordering::Relaxed), FIXED_LOGLEVEL);
    engine.disable(&p2, &b).unwrap();
    run(&mut engine, &b);
    assert_eq!(console.loglevel.load(Ordering::Relaxed), 7);
    assert_eq!(
        *console.log.lock().unwrap(),
        ["state: allocate", "state: fix loglevel", "state2: take over", "state2: restore loglevel", "state2: free"]
    );
}

#[test]
fn compatible_cumulative_patches_chain_and_an_older_version_is_refused() {
    let storage = EngineStorage::<8, 32>::new();
    let console = Console::new();
    let v1 = [State::new(LOGLEVEL, 1)];
    let v2a = [State::new(LOGLEVEL, 2)];
    let v2b = [State::new(LOGLEVEL, 2)];
    let f = [
        Func::new("f", r(0x1000, 0x40), r(0x9000, 0x40)),
        Func::new("f", r(0x1000, 0x40), r(0xa000, 0x40)),
        Func::new("f", r(0x1000, 0x40), r(0xb000, 0x40)),
    ];
    let o1 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f[0..1]).with_callbacks(&console)];
    let o2 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f[1..2]).with_callbacks(&console)];
    let o3 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f[2..3]).with_callbacks(&console)];
    let state = Patch::new(PatchId(1), "state", &o1).replacing().with_states(&v1);
    let state2 = Patch::new(PatchId(2), "state2", &o2).replacing().with_states(&v2a);
    let state3 = Patch::new(PatchId(3), "state3", &o3).replacing().with_states(&v2b);
    let b = TestBackend::with_tasks(2);
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);

    // state2 → state3 → state2: each takes the state over.
    for p in [&state2, &state3, &state2] {
        engine.enable(p, &b).unwrap();
        run(&mut engine, &b);
        assert_eq!(engine.patches().map(|p| p.id()).collect::<Vec<_>>(), [p.id()]);
    }
    // The v1 patch after v2: refused, nothing changes.
    assert_eq!(engine.enable(&state, &b), Err(Error::IncompatibleState(LOGLEVEL)));
    assert!(!state.is_registered() && engine.transition().is_none());
    assert_eq!(console.loglevel.load(Ordering::Relaxed), FIXED_LOGLEVEL);
    let log = console.log.lock().unwrap().clone();
    assert_eq!(log.iter().filter(|l| l.ends_with("take over")).count(), 2);
    assert_eq!(log.iter().filter(|l| l.ends_with("fix loglevel")).count(), 1);
}

#[test]
fn non_cumulative_patches_may_leave_states_alone_but_a_cumulative_one_may_not() {
    let with = [State::new(LOGLEVEL, 1)];
    let other = [State::new(StateId(2), 1)];
    let dup = [State::new(LOGLEVEL, 1), State::new(LOGLEVEL, 2)];
    let f = [Func::new("f", r(0x1000, 0x40), r(0x9000, 0x40))];
    let objs = [Object::new(ObjectId::VMLINUX, "vmlinux", &f)];
    let installed = Patch::new(PatchId(1), "a", &objs).with_states(&with);
    assert_eq!(Patch::new(PatchId(2), "b", &objs).check_states([&installed]), Ok(()));
    assert_eq!(Patch::new(PatchId(2), "b", &objs).with_states(&other).check_states([&installed]), Ok(()));
    assert_eq!(Patch::new(PatchId(2), "b", &objs).replacing().check_states([&installed]), Err(LOGLEVEL));
    assert_eq!(
        livepatch_core::patch::validate(&Patch::new(PatchId(3), "c", &objs).with_states(&dup)),
        Err(PatchError::DuplicateState(LOGLEVEL))
    );
}

/// `test_klp_state2.c` takes the state over in `post_patch` ("taking over the console_loglevel
/// change"): the kernel keeps the replaced patches on its list until after the new patch's
/// post-patch callbacks (`klp_complete_transition` → callbacks →
/// `klp_free_replaced_patches_async`), so `klp_get_prev_state` still finds the replaced patch's
/// state there.
struct TakeOverInPostPatch {
    seen: Mutex<Vec<(String, Option<usize>)>>,
}

impl ObjectCallbacks for TakeOverInPostPatch {
    fn pre_patch(&self, ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        if ctx.prev_state(LOGLEVEL).is_none() {
            ctx.state(LOGLEVEL).ok_or(CallbackError(-22))?.set_data(0x1000); // "kzalloc"
        }
        Ok(())
    }
    fn post_patch(&self, ctx: &CallbackContext<'_, '_>) {
        let prev = ctx.prev_state(LOGLEVEL).map(State::data);
        self.seen.lock().unwrap().push((format!("post_patch {}", ctx.patch().name()), prev));
        if let (Some(data), Some(mine)) = (prev, ctx.state(LOGLEVEL)) {
            mine.set_data(data);
        }
    }
}

#[test]
fn a_cumulative_patch_finds_the_replaced_state_in_post_patch() {
    let storage = EngineStorage::<8, 32>::new();
    let cb = TakeOverInPostPatch { seen: Mutex::new(Vec::new()) };
    let s1 = [State::new(LOGLEVEL, 1)];
    let s2 = [State::new(LOGLEVEL, 2)];
    let f1 = [Func::new("f", r(0x1000, 0x40), r(0x9000, 0x40))];
    let f2 = [Func::new("f", r(0x1000, 0x40), r(0xa000, 0x40))];
    let o1 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f1).with_callbacks(&cb)];
    let o2 = [Object::new(ObjectId::VMLINUX, "vmlinux", &f2).with_callbacks(&cb)];
    let p1 = Patch::new(PatchId(1), "state", &o1).replacing().with_states(&s1);
    let p2 = Patch::new(PatchId(2), "state2", &o2).replacing().with_states(&s2);
    let b = TestBackend::with_tasks(2);
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    engine.enable(&p1, &b).unwrap();
    run(&mut engine, &b);
    engine.enable(&p2, &b).unwrap();
    run(&mut engine, &b);
    assert_eq!(
        *cb.seen.lock().unwrap(),
        [("post_patch state".to_string(), None), ("post_patch state2".to_string(), Some(0x1000))]
    );
    assert_eq!(s2[0].data(), 0x1000, "the state was taken over, not left unallocated");
    assert!(!p1.is_registered(), "replaced once the callbacks ran");
    assert_eq!(engine.patches().map(|p| p.id()).collect::<Vec<_>>(), [PatchId(2)]);
}

/// Records, per callback, which earlier patch `prev_state_with_patch` names and whether the
/// state it returns is that patch's own declaration (the kernel module maps exactly that pair
/// to the patch module's `struct klp_state` for `klp_get_prev_state()`).
struct PrevStateRecorder {
    seen: Mutex<Vec<String>>,
}

impl PrevStateRecorder {
    fn record(&self, ctx: &CallbackContext<'_, '_>, callback: &str) {
        let answer = match ctx.prev_state_with_patch(LOGLEVEL) {
            Some((patch, state)) => {
                let own = patch.state(LOGLEVEL).is_some_and(|s| core::ptr::eq(s, state));
                let same = ctx.prev_state(LOGLEVEL).is_some_and(|s| core::ptr::eq(s, state));
                format!("{} v{} own={own} same={same}", patch.name(), state.version())
            }
            None => format!("none same={}", ctx.prev_state(LOGLEVEL).is_none()),
        };
        self.seen.lock().unwrap().push(format!("{callback} {}: {answer}", ctx.patch().name()));
    }
}

impl ObjectCallbacks for PrevStateRecorder {
    fn pre_patch(&self, ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        self.record(ctx, "pre_patch");
        Ok(())
    }
    fn post_patch(&self, ctx: &CallbackContext<'_, '_>) {
        self.record(ctx, "post_patch");
    }
    fn pre_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        self.record(ctx, "pre_unpatch");
    }
}

/// `klp_get_prev_state()` through `prev_state_with_patch`, for stacked (non-cumulative)
/// patches: the newest patch installed before the callback's patch that declares the state
/// wins (c's over a's, b declares another state); a patch installed after it is not looked at
/// (a's own callbacks find nothing, though c declares the state); the answer is the declaring
/// patch's own `State`, the same one `prev_state` returns.
#[test]
fn prev_state_with_patch_names_the_newest_earlier_declaration() {
    let storage = EngineStorage::<8, 32>::new();
    let rec = PrevStateRecorder { seen: Mutex::new(Vec::new()) };
    let sa = [State::new(LOGLEVEL, 1)];
    let sb = [State::new(StateId(2), 1)];
    let sc = [State::new(StateId(2), 1), State::new(LOGLEVEL, 3)];
    let f = [
        Func::new("f", r(0x1000, 0x40), r(0x9000, 0x40)),
        Func::new("g", r(0x2000, 0x40), r(0xa000, 0x40)),
        Func::new("h", r(0x3000, 0x40), r(0xb000, 0x40)),
        Func::new("i", r(0x4000, 0x40), r(0xc000, 0x40)),
    ];
    let objs: Vec<_> =
        (0..4).map(|i| [Object::new(ObjectId::VMLINUX, "vmlinux", &f[i..i + 1]).with_callbacks(&rec)]).collect();
    let a = Patch::new(PatchId(1), "a", &objs[0]).with_states(&sa);
    let bp = Patch::new(PatchId(2), "b", &objs[1]).with_states(&sb);
    let c = Patch::new(PatchId(3), "c", &objs[2]).with_states(&sc);
    let d = Patch::new(PatchId(4), "d", &objs[3]);
    let b = TestBackend::with_tasks(2);
    let live = Live::new(&storage, Policy::LINUX_6_12);
    let mut engine = Engine::new(&live);
    for p in [&a, &bp, &c, &d] {
        engine.enable(p, &b).unwrap();
        run(&mut engine, &b);
    }
    engine.disable(&a, &b).unwrap();
    run(&mut engine, &b);
    assert_eq!(
        *rec.seen.lock().unwrap(),
        [
            "pre_patch a: none same=true",
            "post_patch a: none same=true",
            "pre_patch b: a v1 own=true same=true",
            "post_patch b: a v1 own=true same=true",
            "pre_patch c: a v1 own=true same=true",
            "post_patch c: a v1 own=true same=true",
            "pre_patch d: c v3 own=true same=true",
            "post_patch d: c v3 own=true same=true",
            "pre_unpatch a: none same=true",
        ]
    );
}
