//! Runs a scenario under a policy: builds the patch descriptors and the engine's storage,
//! boots the machine, and drives machine, engine and oracle event by event.
//!
//! The descriptors and storage the core borrows (`&'a`) are locals of [`run_with`], built in
//! stages (functions, then objects, then patches), so nothing is leaked and each run owns
//! everything it uses.

mod driver;
mod result;
mod sim;

pub use sim::Sim;

pub use result::{
    ActionOutcome, Costs, HeapReport, Latency, ProgressInfo, RunOptions, RunResult, StallKind, StragglerRecord,
    TaskClass, TransitionRecord,
};

use crate::machine::code::Op;
use crate::machine::event::Event;
use crate::machine::heap::Heap;
use crate::machine::{Machine, SwitchPoint};
use crate::oracle::{Oracle, PatchModel, PatchedFunc};
use crate::scenario::{Scenario, Wait};
use driver::State;
use livepatch_core::func_stack::FuncSlot;
use livepatch_core::patch::{CallbackContext, CallbackError, State as SysState, StateId};
use livepatch_core::patched_set::{DirectorySlot, IndexBuffer, IndexEntry};
use livepatch_core::shadow::ShadowId;
use livepatch_core::{Engine, Func, Live, Object, ObjectCallbacks, Patch, PatchId, Policy};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// The name the simulator prints for a policy.
pub fn policy_name(p: &Policy) -> String {
    for (name, preset) in crate::MODELS.iter().chain(crate::ABLATION) {
        if p == preset {
            return (*name).to_string();
        }
    }
    p.model.name().to_string()
}

struct Recorder<'l> {
    log: &'l Mutex<Vec<String>>,
    patch: String,
    object: String,
    fail: Option<i32>,
    /// The patch's index in the scenario.
    index: usize,
    /// Shadow ids `post_unpatch` frees with `free_all`.
    frees: &'l [ShadowId],
    heap: &'l Mutex<Heap>,
    /// The machine's time, for the heap's records.
    clock: &'l AtomicU64,
}

impl Recorder<'_> {
    fn note(&self, what: &str) {
        if let Ok(mut log) = self.log.lock() {
            log.push(format!("{what} {} {}", self.patch, self.object));
        }
    }
}

impl ObjectCallbacks for Recorder<'_> {
    fn pre_patch(&self, ctx: &CallbackContext<'_, '_>) -> Result<(), CallbackError> {
        self.note("pre_patch");
        if let Some(code) = self.fail {
            return Err(CallbackError(code));
        }
        // System states (test_klp_state*.c): take the state over from the patch installed
        // before (`klp_get_prev_state`), or set it up; its data word is handed over.
        for state in ctx.patch().states() {
            let id = state.id().0;
            match ctx.prev_state(state.id()) {
                Some(prev) => {
                    state.set_data(prev.data());
                    self.note(&format!(
                        "take over state {id} v{}->v{} data {}",
                        prev.version(),
                        state.version(),
                        state.data()
                    ));
                }
                None => {
                    state.set_data(self.index + 1);
                    self.note(&format!("set up state {id} v{} data {}", state.version(), state.data()));
                }
            }
        }
        Ok(())
    }
    fn post_patch(&self, _: &CallbackContext<'_, '_>) {
        self.note("post_patch");
    }
    fn pre_unpatch(&self, _: &CallbackContext<'_, '_>) {
        self.note("pre_unpatch");
    }
    fn post_unpatch(&self, ctx: &CallbackContext<'_, '_>) {
        self.note("post_unpatch");
        for state in ctx.patch().states() {
            self.note(&format!("release state {} v{} data {}", state.id().0, state.version(), state.data()));
            state.set_data(0);
        }
        if !self.frees.is_empty() {
            let mut heap = self.heap.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for &id in self.frees {
                let n = heap.shadow_free_all(id, self.index, self.clock.load(Ordering::Relaxed));
                self.note(&format!("free_all shadow {}: {n}", id.0));
            }
        }
    }
}

/// Runs `scenario` under `policy`.
pub fn run(scenario: &Scenario, policy: Policy) -> RunResult {
    run_with(scenario, policy, RunOptions::default(), &mut |_| {})
}

/// Runs `scenario` under `policy`, calling `progress` now and then.
pub fn run_with(
    scenario: &Scenario,
    policy: Policy,
    opts: RunOptions,
    progress: &mut dyn FnMut(&ProgressInfo),
) -> RunResult {
    run_stepped(scenario, policy, opts, progress, |_| {})
}

/// Runs `scenario` under `policy`, first handing the run to `drive`, which may step it
/// ([`Sim::step`], [`Sim::run_until`]), wake tasks and inject operations; whatever `drive`
/// leaves is then run to the end as usual.
///
/// ```
/// use livepatch_mock::run::{run_stepped, RunOptions};
/// use livepatch_mock::scenario::{self, Action};
/// let sc = scenario::find("basic").unwrap().build_with(None, None, Some(7)).unwrap();
/// let r = run_stepped(&sc, livepatch_core::Policy::IMPROVED, RunOptions::default(), &mut |_| {}, |sim| {
///     sim.run_until(1_000_000);
///     assert!(sim.inject(Action::Nop).is_ok());
/// });
/// assert_eq!(r.violations, 0);
/// ```
pub fn run_stepped(
    scenario: &Scenario,
    policy: Policy,
    opts: RunOptions,
    progress: &mut dyn FnMut(&ProgressInfo),
    drive: impl FnOnce(&mut Sim<'_, '_>),
) -> RunResult {
    let wall = Instant::now();
    let sc = scenario;
    let code = &sc.code;

    // The machine first: its heap is shared with the callbacks.
    let mut m = Machine::new(sc.machine.clone(), code.clone(), &sc.tasks, &sc.loaded);
    let heap = m.heap();
    let clock = AtomicU64::new(0);
    let uses_heap = !sc.patches.iter().all(|p| p.free_on_unpatch.is_empty())
        || code.iter().any(|(_, f)| f.body.iter().any(|op| matches!(op, Op::ShadowFree(_))));

    // Stage 1: callback recorders, functions and states; stage 2: objects; stage 3: patches.
    let log = Mutex::new(Vec::new());
    let recorders: Vec<Vec<Recorder<'_>>> = sc
        .patches
        .iter()
        .enumerate()
        .map(|(pi, p)| {
            p.objects
                .iter()
                .map(|o| Recorder {
                    log: &log,
                    patch: p.name.clone(),
                    object: o.name.clone(),
                    fail: o.fail_pre_patch,
                    index: pi,
                    frees: &p.free_on_unpatch,
                    heap: &heap,
                    clock: &clock,
                })
                .collect()
        })
        .collect();
    let states: Vec<Vec<SysState>> = sc
        .patches
        .iter()
        .map(|p| p.states.iter().map(|&(id, version)| SysState::new(StateId(id), version)).collect())
        .collect();
    let funcs: Vec<Vec<Vec<Func<'_>>>> = sc
        .patches
        .iter()
        .map(|p| {
            p.objects
                .iter()
                .map(|o| {
                    o.funcs
                        .iter()
                        .map(|&(orig, var)| Func::new(&code.get(orig).name, code.get(orig).range, code.get(var).range))
                        .collect()
                })
                .collect()
        })
        .collect();
    let objects: Vec<Vec<Object<'_>>> = sc
        .patches
        .iter()
        .enumerate()
        .map(|(pi, p)| {
            p.objects
                .iter()
                .enumerate()
                .map(|(oi, o)| {
                    let obj = Object::new(o.id, &o.name, &funcs[pi][oi]);
                    if o.callbacks {
                        obj.with_callbacks(&recorders[pi][oi])
                    } else {
                        obj
                    }
                })
                .collect()
        })
        .collect();
    let patches: Vec<Patch<'_>> = sc
        .patches
        .iter()
        .enumerate()
        .map(|(pi, p)| {
            let patch = Patch::new(PatchId(pi as u32 + 1), &p.name, &objects[pi]).with_states(&states[pi]);
            if p.replace {
                patch.replacing()
            } else {
                patch
            }
        })
        .collect();
    let total_funcs: usize = sc.patches.iter().flat_map(|p| &p.objects).map(|o| o.funcs.len()).sum();
    let slots: Vec<FuncSlot<'_>> = (0..total_funcs + 2).map(|_| FuncSlot::new()).collect();
    let ranges = 2 * total_funcs + 4;
    let entries: [Vec<IndexEntry<'_>>; 2] = [(); 2].map(|_| (0..ranges).map(|_| IndexEntry::new()).collect());
    let directory: [Vec<[DirectorySlot; 2]>; 2] = [(); 2].map(|_| (0..ranges).map(|_| Default::default()).collect());
    let buffer = |i: usize| IndexBuffer { entries: &entries[i], directory: &directory[i] };
    let live = Live::from_parts(&slots, buffer(0), buffer(1), policy);
    let mut engine = Engine::new(&live);

    let models: Vec<PatchModel> = sc
        .patches
        .iter()
        .map(|p| PatchModel {
            replace: p.replace,
            funcs: p
                .objects
                .iter()
                .flat_map(|o| o.funcs.iter().map(move |&(orig, variant)| PatchedFunc { object: o.id, orig, variant }))
                .collect(),
        })
        .collect();
    let seed = sc.machine.seed;
    let mut oracle = Oracle::new(seed, policy.model, policy.switch_points, code.len(), models, &sc.loaded);
    m.boot();
    m.start_cpus(&live, &mut oracle);

    let mut st = State::default();
    if let Some(first) = sc.script.first() {
        let at = match first.wait {
            Wait::For(ns) | Wait::Settled(ns) => ns,
        };
        m.queue.push(at, Event::Script);
    } else {
        st.script_done = true;
    }

    let mut sim = Sim {
        sc,
        m: &mut m,
        oracle: &mut oracle,
        engine: &mut engine,
        patches: &patches,
        live: &live,
        st: &mut st,
        heap: &heap,
        clock: &clock,
        timeline: opts.timeline,
        max_events: opts.max_events,
        uses_heap,
        reclaim_armed: false,
        events: 0,
        timed_out: false,
        done: false,
    };
    drive(&mut sim);
    while sim.step() {
        if sim.events & 0xffff == 0 {
            progress(&ProgressInfo { sim_ns: sim.m.now, limit_ns: sc.limit_ns, events: sim.events });
        }
    }
    let (events, timed_out) = (sim.events, sim.timed_out);
    progress(&ProgressInfo { sim_ns: m.now, limit_ns: sc.limit_ns, events });

    // A transition still in progress at the end did not converge.
    if let Some(t) = st.current.take() {
        st.transitions.push(t);
    }
    let all_ended = st.transitions.iter().all(|t| t.end_ns.is_some());
    let gave_up = st.transitions.iter().any(|t| t.outcome == "gave-up");
    let converged = !timed_out
        && st.script_done
        && all_ended
        && !gave_up
        && oracle.violation().is_none()
        && engine.transition().is_none();
    let time_to_converge_ns = if all_ended && !st.transitions.is_empty() {
        Some(st.transitions.iter().filter_map(|t| t.end_ns.map(|e| e - t.start_ns)).sum())
    } else {
        None
    };
    let stats = m.stats().clone();
    let switches = SwitchPoint::ALL
        .iter()
        .map(|p| (p.name().to_string(), stats.switches[*p as usize]))
        .collect::<BTreeMap<_, _>>();
    let callbacks = log.lock().map(|l| l.clone()).unwrap_or_default();
    let heap = {
        let h = m.heap_mut();
        HeapReport {
            stats: h.stats().clone(),
            objects: h.objects().to_vec(),
            buffers: h.buffers().to_vec(),
            shadows_live: h.shadows_live(),
            shadows_retired: h.shadows_retired(),
        }
    };
    drop(engine);
    let costs = costs_of(&m, &st.transitions, &stats);
    RunResult {
        scenario: sc.name.clone(),
        model: policy_name(&policy),
        seed,
        cpus: m.cfg.cpus,
        tasks: sc.tasks.len(),
        converged,
        timed_out,
        time_to_converge_ns,
        sim_time_ns: m.now,
        passes: st.transitions.iter().map(|t| t.passes).sum(),
        walks: m.walks(),
        engine_walks: st.transitions.iter().map(|t| t.walks).sum(),
        signals: st.transitions.iter().map(|t| t.kicks).sum(),
        signals_lost: m.kicks_lost(),
        violations: oracle.violations(),
        violation: oracle.violation().cloned(),
        oracle: oracle.stats().clone(),
        max_pause_ns: m.max_pause_ns,
        switches,
        machine: stats,
        costs,
        transitions: st.transitions,
        outcomes: st.outcomes,
        callbacks,
        heap,
        timeline: st.timeline,
        events,
        wall_ns: wall.elapsed().as_nanos() as u64,
    }
}

/// What the transitions cost the machine (see [`Costs`]).
fn costs_of(m: &Machine, transitions: &[TransitionRecord], stats: &crate::machine::MachineStats) -> Costs {
    let live = m.tasks().len().max(1) as f64;
    let kicks: u64 = m.kicks_to().iter().map(|&k| u64::from(k)).sum();
    let kicked = m.kicks_to().iter().filter(|&&k| k > 0).count() as u32;
    let windows: Vec<(u64, u64)> = transitions.iter().map(|t| (t.start_ns, t.end_ns.unwrap_or(u64::MAX))).collect();
    let mut added = Vec::new();
    for &(start, end, add) in m.syscall_times() {
        if windows.iter().any(|&(a, b)| start < b && end > a) {
            added.push(add);
        }
    }
    Costs {
        transition_cpu_ns: stats.engine_cpu_ns + stats.ipi_cpu_ns + stats.self_walk_ns + stats.signal_cpu_ns,
        engine_cpu_ns: stats.engine_cpu_ns,
        ipi_cpu_ns: stats.ipi_cpu_ns,
        self_walk_ns: stats.self_walk_ns,
        signal_cpu_ns: stats.signal_cpu_ns,
        ipis_per_task: stats.ipis as f64 / live,
        kicks_per_task: kicks as f64 / live,
        kicked_tasks: kicked,
        kicks_per_kicked: if kicked > 0 { kicks as f64 / f64::from(kicked) } else { 0.0 },
        max_kicks: m.kicks_to().iter().copied().max().unwrap_or(0),
        interrupted_syscalls: stats.interrupted_syscalls,
        added: Latency::of(&mut added),
        frozen_tasks: m.freeze_pauses().len() as u64,
        still_frozen: m.tasks().iter().filter(|t| !t.is_dead() && t.frozen_since.is_some()).count() as u64,
        freeze_pause: Latency::of(&mut m.freeze_pauses()),
        stop_pause_ns: m.max_pause_ns,
    }
}
