//! The invariant oracle: an independent model of which code each universe runs, checked at
//! every call of a patched function, every universe switch, every completion and every code
//! release (DESIGN §4, I1–I4 and I6).
//!
//! The oracle does not use the core's redirect code: it keeps its own list of enabled
//! patches, computes from the scenario's patch descriptions the code that the unpatched and
//! the patched universe run for every function, and compares what the machine actually ran.
//! A switch is also checked against the policy: only at a point it enables and its model can
//! use.
//! A violation is recorded with a replayable trace (seed, event index, the offending stack)
//! and stops the run.

use crate::machine::code::{CodeTable, FnId, Origin};
use crate::machine::task::{HandlerPhase, SimTask};
use crate::machine::SwitchPoint;
use livepatch_core::backend::{Task, TaskFlags};
use livepatch_core::model::{Model, SwitchPoints};
use livepatch_core::state::PatchState;
use livepatch_core::ObjectId;
use serde::Serialize;
use std::fmt;

/// Which invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Invariant {
    /// Per-task consistency.
    I1,
    /// Safe switch.
    I2,
    /// Completion and release.
    I3,
    /// Reversal.
    I4,
}

/// A broken invariant, with what it takes to replay it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// What happened.
    pub message: String,
    /// The task (index = task id).
    pub task: u32,
    /// Its stack, outermost first, as `name@address`.
    pub stack: Vec<String>,
    /// Simulated time.
    pub time_ns: u64,
    /// The index of the event being handled (replay: same seed, stop at this event).
    pub event_index: u64,
    /// The seed.
    pub seed: u64,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} violated at t={}ns (seed {}, event #{}): task {}: {}; stack [{}]",
            self.invariant,
            self.time_ns,
            self.seed,
            self.event_index,
            self.task,
            self.message,
            self.stack.join(" > ")
        )
    }
}

/// One function a patch replaces, as the oracle sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchedFunc {
    /// The object of the original.
    pub object: ObjectId,
    /// The original.
    pub orig: FnId,
    /// The replacement.
    pub variant: FnId,
}

/// A patch as the oracle models it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchModel {
    /// Cumulative (atomic replace).
    pub replace: bool,
    /// Its functions.
    pub funcs: Vec<PatchedFunc>,
}

/// Counters of measured (not failed) weaknesses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OracleStats {
    /// Patched calls checked.
    pub checked_calls: u64,
    /// Switches checked.
    pub checked_switches: u64,
    /// Call-chain model: calls after which a stack held code of both universes (I6).
    pub mixed_stacks: u64,
    /// Call-chain model: distinct tasks that ever had a mixed stack.
    pub mixed_tasks: u64,
    /// Exiting tasks left in the old universe at completion, with no old code on their stack
    /// (harmless here; a crash when the exit path is patched).
    pub exiting_unswitched: u64,
    /// After a forced transition: calls or completions with stale code on the stack.
    pub forced_mixed: u64,
}

const U: u8 = 1;
const P: u8 = 2;
const STALE: u8 = 4;

fn bit(state: PatchState) -> u8 {
    match state {
        PatchState::Unpatched => U,
        PatchState::Patched => P,
        PatchState::Idle => U | P,
    }
}

#[derive(Clone, Copy, Debug)]
struct Transition {
    patch: usize,
    start: PatchState,
    target: PatchState,
    reversed: bool,
    forced: bool,
    /// The universe every task was in when the transition began (a reversal keeps it).
    start_universe: PatchState,
}

/// The oracle.
#[derive(Debug)]
pub struct Oracle {
    seed: u64,
    model: Model,
    /// The policy's enabled switch points (I2 allows a switch only at one the model can use).
    switch_points: SwitchPoints,
    patches: Vec<PatchModel>,
    enabled: Vec<usize>,
    forced: Vec<bool>,
    /// Per task: its frames below this depth predate a forced transition.
    allow: Vec<u32>,
    /// Per task: the code a hooked call in flight at a force was decided to run (its handler
    /// read the task's word before the force); taken by the task's next patched call, the one
    /// that lands.
    decided_before_force: Vec<Option<FnId>>,
    /// Per task, during a transition: the universe the oracle knows it is in — the start
    /// universe, then whatever its observed switches and its fork made it — independent of
    /// the core's word (0: not in a transition).
    univ: Vec<u8>,
    loaded: Vec<ObjectId>,
    transition: Option<Transition>,
    /// The enabled list before [`begin`](Self::begin), restored by an aborted start.
    saved_enabled: Vec<usize>,
    /// Code per original function outside a transition; `maps[0]`/`maps[1]` in one.
    committed: Vec<FnId>,
    maps: [Vec<FnId>; 2],
    member: Vec<u8>,
    mixed_seen: Vec<bool>,
    /// Tasks seen leaving a transition: (task, universe, exiting, lacks-unpatched,
    /// lacks-patched) — whether its stack held code the unpatched / patched universe lacks.
    completions: Vec<(u32, PatchState, bool, bool, bool)>,
    event_index: u64,
    stats: OracleStats,
    violation: Option<Violation>,
    violations: u32,
}

impl Oracle {
    /// An oracle for `funcs` functions, the scenario's `patches`, under `model` with the
    /// policy's `switch_points` enabled.
    pub fn new(
        seed: u64,
        model: Model,
        switch_points: SwitchPoints,
        funcs: usize,
        patches: Vec<PatchModel>,
        loaded: &[ObjectId],
    ) -> Self {
        let identity: Vec<FnId> = (0..funcs as u32).map(FnId).collect();
        let n = patches.len();
        Self {
            seed,
            model,
            switch_points,
            patches,
            enabled: Vec::new(),
            forced: vec![false; n],
            allow: Vec::new(),
            decided_before_force: Vec::new(),
            univ: Vec::new(),
            loaded: loaded.to_vec(),
            transition: None,
            saved_enabled: Vec::new(),
            committed: identity.clone(),
            maps: [identity.clone(), identity],
            member: vec![0; funcs],
            mixed_seen: Vec::new(),
            completions: Vec::new(),
            event_index: 0,
            stats: OracleStats::default(),
            violation: None,
            violations: 0,
        }
    }

    /// Sets the index of the event being handled (for traces).
    pub fn set_event_index(&mut self, i: u64) {
        self.event_index = i;
    }

    /// Whether a violation stopped the run.
    pub fn stopped(&self) -> bool {
        self.violation.is_some()
    }

    /// The first violation.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Number of violations (the run stops at the first).
    pub fn violations(&self) -> u32 {
        self.violations
    }

    /// Counters.
    pub fn stats(&self) -> &OracleStats {
        &self.stats
    }

    /// The patches the oracle believes enabled, oldest first.
    pub fn enabled(&self) -> &[usize] {
        &self.enabled
    }

    /// Records a violation (the first one is kept).
    pub fn violate(
        &mut self,
        invariant: Invariant,
        t: u32,
        task: &SimTask,
        message: String,
        code: &CodeTable,
        now: u64,
    ) {
        self.violations += 1;
        if self.violation.is_some() {
            return;
        }
        let stack = task.stack().iter().map(|f| format!("{}@{}", code.get(f.func).name, f.addr())).collect();
        self.violation = Some(Violation {
            invariant,
            message,
            task: t,
            stack,
            time_ns: now,
            event_index: self.event_index,
            seed: self.seed,
        });
    }

    fn map_from(&self, list: &[usize]) -> Vec<FnId> {
        let mut map: Vec<FnId> = (0..self.committed.len() as u32).map(FnId).collect();
        for &p in list {
            let patch = &self.patches[p];
            if patch.replace {
                map.iter_mut().enumerate().for_each(|(i, c)| *c = FnId(i as u32));
            }
            for f in &patch.funcs {
                if f.object == ObjectId::VMLINUX || self.loaded.contains(&f.object) {
                    map[f.orig.idx()] = f.variant;
                }
            }
        }
        map
    }

    fn recompute(&mut self) {
        self.member.iter_mut().for_each(|m| *m &= STALE);
        match self.transition {
            None => {
                self.committed = self.map_from(&self.enabled);
            }
            Some(t) => {
                // The patch keeps its place in the stack: on top when being enabled (begin
                // pushed it), where it was when being disabled.
                let without: Vec<usize> = self.enabled.iter().copied().filter(|&p| p != t.patch).collect();
                let with = self.enabled.clone();
                self.maps = [self.map_from(&without), self.map_from(&with)];
                for (u, p) in self.maps[0].iter().zip(self.maps[1].iter()) {
                    if u != p {
                        self.member[u.idx()] |= U;
                        self.member[p.idx()] |= P;
                    }
                }
            }
        }
    }

    fn code_for(&self, orig: FnId, state: PatchState) -> FnId {
        match (self.transition, state) {
            (None, _) | (Some(_), PatchState::Idle) => self.committed[orig.idx()],
            (Some(_), PatchState::Unpatched) => self.maps[0][orig.idx()],
            (Some(_), PatchState::Patched) => self.maps[1][orig.idx()],
        }
    }

    /// A transition of patch `patch` towards `target` is about to start.
    pub fn begin(&mut self, patch: usize, target: PatchState) {
        self.saved_enabled = self.enabled.clone();
        if !self.enabled.contains(&patch) {
            self.enabled.push(patch);
        }
        // Starting a transition clears the stale marks of the previous one.
        self.member.iter_mut().for_each(|m| *m = 0);
        // Every task starts the transition in its start universe (0 below: not moved yet).
        self.univ.clear();
        self.transition = Some(Transition {
            patch,
            start: target.opposite(),
            target,
            reversed: false,
            forced: false,
            start_universe: target.opposite(),
        });
        self.recompute();
    }

    /// The transition in progress was reversed.
    pub fn reverse(&mut self) {
        if let Some(t) = &mut self.transition {
            std::mem::swap(&mut t.start, &mut t.target);
            t.reversed = true;
        }
    }

    /// The transition in progress is about to be forced: every registered patch is marked
    /// forced (as the engine does: its code is never released), and the frames each task holds
    /// now — plus a hooked call in flight — predate the force: stale code among them is
    /// counted, not failed, until the task returns below them. A hooked call whose handler
    /// has already decided runs what it decided, whatever the force makes of the task: counted
    /// when it lands, not failed. Every other check stays on.
    pub fn force_begin(&mut self, tasks: &[SimTask]) {
        let Some(t) = &mut self.transition else {
            return;
        };
        t.forced = true;
        self.allow.resize(tasks.len(), 0);
        self.decided_before_force.resize(tasks.len(), None);
        for (i, task) in tasks.iter().enumerate() {
            if !task.is_dead() {
                self.allow[i] = task.stack().len() as u32 + 1;
            }
            if let Some(HandlerPhase::Decided(to) | HandlerPhase::IpSet(to)) = task.handler().map(|h| h.phase) {
                self.decided_before_force[i] = Some(to);
            }
        }
        for &p in &self.enabled {
            if let Some(f) = self.forced.get_mut(p) {
                *f = true;
            }
        }
    }

    /// The target of the transition in progress.
    pub fn target(&self) -> Option<PatchState> {
        self.transition.map(|t| t.target)
    }

    /// The patch in transition.
    pub fn patch_in_transition(&self) -> Option<usize> {
        self.transition.map(|t| t.patch)
    }

    /// A module was loaded or unloaded: the universes' code changes.
    pub fn set_loaded(&mut self, object: ObjectId, loaded: bool) {
        self.loaded.retain(|o| *o != object);
        if loaded {
            self.loaded.push(object);
        }
        self.recompute();
    }

    /// Task `t` called `orig`, which ran `ran` (after the hook).
    pub fn on_patched_call(&mut self, t: u32, task: &SimTask, orig: FnId, ran: FnId, code: &CodeTable, now: u64) {
        self.stats.checked_calls += 1;
        let decided_before_force = self.decided_before_force.get_mut(t as usize).and_then(Option::take);
        let state = task.patch_state().state();
        if self.model == Model::CallChain {
            if let Some(tr) = self.transition {
                // The model's one promise: a call made directly from code being switched
                // away from (only the start universe runs it) continues the old chain. The
                // weakness it is allowed — an old chain reaching new code through code both
                // universes share — is measured below, not failed.
                let caller = task.stack().last().map_or(0, |f| self.member[f.func.idx()] & (U | P));
                if caller == bit(tr.start) && self.member[ran.idx()] & (U | P) == bit(tr.target) {
                    let msg = format!(
                        "call of {} from {} (code being switched away from) ran {} of the other universe",
                        code.get(orig).name,
                        task.stack().last().map_or("?", |f| code.get(f.func).name.as_str()),
                        code.get(ran).name
                    );
                    self.violate(Invariant::I1, t, task, msg, code, now);
                    return;
                }
                let mut seen = self.member[ran.idx()] & (U | P);
                for f in task.stack() {
                    seen |= self.member[f.func.idx()] & (U | P);
                }
                if seen == U | P {
                    self.stats.mixed_stacks += 1;
                    let i = t as usize;
                    if self.mixed_seen.len() <= i {
                        self.mixed_seen.resize(i + 1, false);
                    }
                    if !self.mixed_seen[i] {
                        self.mixed_seen[i] = true;
                        self.stats.mixed_tasks += 1;
                    }
                }
            }
            self.check_released_stack(t, task, code, now);
            return;
        }
        if self.transition.is_some() && state == PatchState::Idle {
            self.violate(Invariant::I1, t, task, "idle task state during a transition".into(), code, now);
            return;
        }
        // The oracle's universe decides what the call must run; the word is only checked.
        let Some(state) = self.universe_checked_against_word(t, task, code, now) else {
            return;
        };
        let expected = self.code_for(orig, state);
        if ran != expected {
            if decided_before_force == Some(ran) {
                // Its handler decided before the force moved the task on: what a force does.
                self.stats.forced_mixed += 1;
                return;
            }
            let msg = format!(
                "call of {} ran {} but universe {state} runs {}",
                code.get(orig).name,
                code.get(ran).name,
                code.get(expected).name
            );
            let inv = if self.transition.is_some_and(|t| t.reversed) { Invariant::I4 } else { Invariant::I1 };
            self.violate(inv, t, task, msg, code, now);
            return;
        }
        let want = if self.transition.is_some() { bit(state) } else { U | P };
        for (idx, f) in task.stack().iter().map(|f| f.func).chain(std::iter::once(ran)).enumerate() {
            let m = self.member[f.idx()];
            if m & STALE != 0 && self.transition.is_none() {
                if self.forgiven(t, idx) {
                    continue;
                }
                let msg = format!("stale frame {} on the stack after completion", code.get(f).name);
                self.violate(Invariant::I1, t, task, msg, code, now);
                return;
            }
            let m = m & (U | P);
            if m != 0 && m & want == 0 {
                if self.forgiven(t, idx) {
                    continue;
                }
                let msg = format!("universe {state} task holds {} of the other universe", code.get(f).name);
                self.violate(Invariant::I1, t, task, msg, code, now);
                return;
            }
        }
    }

    /// Task `t` called `f` with no hook on it: every call of a function, hooked or not, must
    /// run the code of the task's universe, so a core that forgets a hook, or removes one
    /// while a universe still runs a variant, is caught here.
    pub fn on_plain_call(&mut self, t: u32, task: &SimTask, f: FnId, code: &CodeTable, now: u64) {
        if self.model == Model::CallChain {
            // Its redirect depends on the caller, not on a universe.
            return;
        }
        let Some(state) = self.universe_checked_against_word(t, task, code, now) else {
            return;
        };
        let expected = self.code_for(f, state);
        if expected != f {
            self.stats.checked_calls += 1;
            let msg = format!(
                "called {} with no hook on it, but universe {state} runs {}",
                code.get(f).name,
                code.get(expected).name
            );
            self.violate(Invariant::I1, t, task, msg, code, now);
        }
    }

    /// The universe task `t` is in, for checking the code a call runs: the oracle's own during
    /// a transition (start universe, observed switches, fork), after checking that the core's
    /// word agrees (I1 if not, and `None`); outside one, the word (idle).
    fn universe_checked_against_word(
        &mut self,
        t: u32,
        task: &SimTask,
        code: &CodeTable,
        now: u64,
    ) -> Option<PatchState> {
        let word = task.patch_state().state();
        let Some(u) = self.universe_of(t) else {
            return Some(word);
        };
        if u != word {
            let msg = format!("the core's word says {word}, but the task's observed switches left it in {u}");
            self.violate(Invariant::I1, t, task, msg, code, now);
            return None;
        }
        Some(u)
    }

    /// The universe the oracle knows task `t` is in during a transition.
    fn universe_of(&self, t: u32) -> Option<PatchState> {
        let tr = self.transition?;
        Some(match self.univ.get(t as usize).copied().unwrap_or(0) {
            1 => PatchState::Unpatched,
            2 => PatchState::Patched,
            _ => tr.start_universe,
        })
    }

    fn set_universe(&mut self, t: u32, u: PatchState) {
        let i = t as usize;
        if self.univ.len() <= i {
            self.univ.resize(i + 1, 0);
        }
        self.univ[i] = match u {
            PatchState::Unpatched => 1,
            PatchState::Patched => 2,
            PatchState::Idle => 0,
        };
    }

    /// Task `parent` forked `child`: the child starts where the parent is.
    pub fn on_fork(&mut self, parent: u32, child: u32) {
        if let Some(u) = self.universe_of(parent) {
            self.set_universe(child, u);
        }
    }

    /// Task `t`'s stack shrank to `depth` frames: frames it pushes from now on are not
    /// covered by an earlier force.
    pub fn on_return(&mut self, t: u32, depth: usize) {
        if let Some(a) = self.allow.get_mut(t as usize) {
            *a = (*a).min(depth as u32);
        }
    }

    /// Task `t` returned into its innermost frame: that code must belong to its universe
    /// (during a transition) or still be in use (after one) — the return counterpart of the
    /// checks at every call.
    pub fn on_return_into(&mut self, t: u32, task: &SimTask, code: &CodeTable, now: u64) {
        if self.model == Model::CallChain {
            return;
        }
        let Some(idx) = task.stack().len().checked_sub(1) else {
            return;
        };
        let f = task.stack()[idx].func;
        let m = self.member[f.idx()];
        let bad = match self.universe_of(t) {
            Some(u) => m & (U | P) != 0 && m & bit(u) == 0,
            None => self.transition.is_none() && m & STALE != 0,
        };
        if bad && !self.forgiven(t, idx) {
            let msg = format!("returned into {}, code its universe does not run", code.get(f).name);
            self.violate(Invariant::I1, t, task, msg, code, now);
        }
    }

    /// Whether frame `idx` of task `t` predates a forced transition (counted, not failed).
    fn forgiven(&mut self, t: u32, idx: usize) -> bool {
        let hit = self.allow.get(t as usize).is_some_and(|a| (idx as u32) < *a);
        if hit {
            self.stats.forced_mixed += 1;
        }
        hit
    }

    fn check_released_stack(&mut self, t: u32, task: &SimTask, code: &CodeTable, now: u64) {
        if let Some(f) = task.stack().iter().find(|f| code.is_released(f.func)) {
            let msg = format!("released code {} on the stack", code.get(f.func).name);
            self.violate(Invariant::I3, t, task, msg, code, now);
        }
    }

    /// Task `t`'s universe changed from `from` to `to` at `point`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_state_change(
        &mut self,
        t: u32,
        task: &SimTask,
        from: PatchState,
        to: PatchState,
        point: SwitchPoint,
        code: &CodeTable,
        now: u64,
    ) {
        match (from, to) {
            (PatchState::Idle, _) => {}
            (_, PatchState::Idle) => {
                let exiting = task.flags().contains(TaskFlags::EXITING);
                let lack_u = self.holds_code_lacking(task, PatchState::Unpatched);
                let lack_p = self.holds_code_lacking(task, PatchState::Patched);
                self.completions.push((t, from, exiting, lack_u, lack_p));
            }
            _ => {
                self.stats.checked_switches += 1;
                if !self.switch_allowed_at(point) {
                    let msg = format!("switched {from}->{to} at {}, a point its policy does not enable", point.name());
                    self.violate(Invariant::I2, t, task, msg, code, now);
                    return;
                }
                if let Some(u) = self.universe_of(t) {
                    if u != from && self.model != Model::CallChain {
                        let msg = format!("switched {from}->{to}, but its observed switches left it in {u}");
                        self.violate(Invariant::I1, t, task, msg, code, now);
                        return;
                    }
                }
                self.set_universe(t, to);
                if self.transition.is_some_and(|tr| tr.target != to) {
                    if self.model == Model::CallChain {
                        // The call-chain model's word is bookkeeping for completion only; a
                        // reversal re-arms every task (not a switch of the code it runs).
                        return;
                    }
                    let msg = format!("switched to {to} at {}, away from the transition's target", point.name());
                    self.violate(Invariant::I4, t, task, msg, code, now);
                    return;
                }
                if point == SwitchPoint::ExitToUser && !task.stack().is_empty() {
                    self.violate(
                        Invariant::I2,
                        t,
                        task,
                        "switched at exit to user with kernel frames".into(),
                        code,
                        now,
                    );
                    return;
                }
                let want = bit(to);
                let found = task.stack().iter().enumerate().find(|(_, f)| {
                    let m = self.member[f.func.idx()] & (U | P);
                    m != 0 && m & want == 0
                });
                if let Some((idx, f)) = found {
                    let msg = format!(
                        "switched {from}->{to} at {} with {} (code being switched away from) on the stack",
                        point.name(),
                        code.get(f.func).name
                    );
                    if !self.forgiven(t, idx) {
                        self.violate(Invariant::I2, t, task, msg, code, now);
                    }
                }
            }
        }
    }

    /// Whether a task may change universe at `point` (I2: "only at a switch point"): one of
    /// the policy's enabled points that its model can use — the oracle's own table of the
    /// models (DESIGN.md "Switch points and models"), not the core's. A forced transition and
    /// a stop-the-world model switch tasks from the engine, whatever the points.
    fn switch_allowed_at(&self, point: SwitchPoint) -> bool {
        let engine_switches_all = self.model == Model::StopTheWorld || self.transition.is_some_and(|t| t.forced);
        let needed = match point {
            SwitchPoint::Sweep if engine_switches_all => return true,
            SwitchPoint::Sweep => SwitchPoints::SWEEP,
            SwitchPoint::PerCpu => SwitchPoints::PER_CPU_PASS,
            // The task work a kick queues is the module's way to exit to user mode.
            SwitchPoint::ExitToUser | SwitchPoint::TaskWork => SwitchPoints::EXIT_TO_USER,
            SwitchPoint::Idle => SwitchPoints::IDLE,
            SwitchPoint::HandlerEntry => SwitchPoints::HANDLER_ENTRY,
            SwitchPoint::SelfCheck => SwitchPoints::SELF_CHECK,
            SwitchPoint::SafePoint => SwitchPoints::KTHREAD_SAFE_POINT,
        };
        let usable = match self.model {
            Model::PerTask => SwitchPoints::all(),
            // No stack checks: no kernel frames, the idle loop, a kthread's declared safe point.
            Model::KernelExit => SwitchPoints::EXIT_TO_USER | SwitchPoints::IDLE | SwitchPoints::KTHREAD_SAFE_POINT,
            Model::CallChain => {
                SwitchPoints::SWEEP
                    | SwitchPoints::EXIT_TO_USER
                    | SwitchPoints::IDLE
                    | SwitchPoints::SELF_CHECK
                    | SwitchPoints::PER_CPU_PASS
            }
            Model::StopTheWorld => SwitchPoints::empty(),
            // Frozen (or off-CPU) tasks checked by the engine, and idle CPUs.
            Model::Freezer => SwitchPoints::SWEEP | SwitchPoints::IDLE,
        };
        (self.switch_points & usable).contains(needed)
    }

    fn holds_code_lacking(&self, task: &SimTask, universe: PatchState) -> bool {
        self.first_frame_lacking(task, universe).is_some()
    }

    fn first_frame_lacking(&self, task: &SimTask, universe: PatchState) -> Option<usize> {
        let want = bit(universe);
        task.stack().iter().position(|f| {
            let m = self.member[f.func.idx()] & (U | P);
            m != 0 && m & want == 0
        })
    }

    /// The engine became idle: the transition ended in `fin` (the target if it completed, the
    /// start universe if it was cancelled or gave up). Checks I3 for every task and returns
    /// the functions whose code is released now (patches no longer enabled, never forced).
    pub fn end(
        &mut self,
        fin: PatchState,
        forced: &[bool],
        tasks: &[SimTask],
        code: &CodeTable,
        now: u64,
    ) -> Vec<FnId> {
        self.finish(fin, false, forced, tasks, code, now)
    }

    /// The engine refused to start the transition announced by [`begin`](Self::begin) (or
    /// cancelled it): every task must still be in the start universe, and the enabled patches
    /// are those before.
    pub fn abort(&mut self, forced: &[bool], tasks: &[SimTask], code: &CodeTable, now: u64) -> Vec<FnId> {
        let Some(tr) = self.transition else {
            return Vec::new();
        };
        self.finish(tr.start, true, forced, tasks, code, now)
    }

    fn finish(
        &mut self,
        fin: PatchState,
        aborted: bool,
        forced: &[bool],
        tasks: &[SimTask],
        code: &CodeTable,
        now: u64,
    ) -> Vec<FnId> {
        let Some(tr) = self.transition else {
            return Vec::new();
        };
        for (i, f) in forced.iter().enumerate() {
            if *f && i < self.forced.len() {
                self.forced[i] = true;
            }
        }
        let completions = std::mem::take(&mut self.completions);
        for (t, from, exiting, lack_u, lack_p) in completions {
            if from == fin {
                continue;
            }
            let away = if fin == PatchState::Patched { lack_p } else { lack_u };
            let task = &tasks[t as usize];
            if tr.forced {
                self.stats.forced_mixed += 1;
            } else if exiting && !away {
                self.stats.exiting_unswitched += 1;
            } else {
                let msg = format!(
                    "transition ended in {fin} while this {}task was still {from}",
                    if exiting { "exiting " } else { "" }
                );
                self.violate(Invariant::I3, t, task, msg, code, now);
            }
        }
        // Every live task's stack must be free of code the final universe does not run (after
        // an aborted start there was no transition: nothing to check).
        if !aborted && self.model != Model::CallChain {
            for (i, task) in tasks.iter().enumerate() {
                if task.is_dead() || self.violation.is_some() {
                    continue;
                }
                if let Some(idx) = self.first_frame_lacking(task, fin) {
                    if !self.forgiven(i as u32, idx) {
                        let msg = format!("old code on the stack when the transition ended in {fin}");
                        self.violate(Invariant::I3, i as u32, task, msg, code, now);
                    }
                }
            }
        }
        let stay = fin == PatchState::Patched;
        if aborted {
            self.enabled = std::mem::take(&mut self.saved_enabled);
        } else if stay {
            if self.patches[tr.patch].replace {
                // A cumulative patch replaces the patches enabled before it (those after it —
                // possible when its disable was reversed — stay).
                if let Some(pos) = self.enabled.iter().position(|p| *p == tr.patch) {
                    self.enabled.drain(..pos);
                }
            }
        } else {
            self.enabled.retain(|p| *p != tr.patch);
        }
        let fin_map = if stay { self.maps[1].clone() } else { self.maps[0].clone() };
        let other = if stay { self.maps[0].clone() } else { self.maps[1].clone() };
        self.transition = None;
        self.recompute();
        for (o, f) in other.iter().zip(fin_map.iter()) {
            // An aborted start changed no code: nothing became stale.
            if o != f && !aborted {
                self.member[o.idx()] |= STALE;
            }
        }
        // Release the code of every patch that is neither enabled nor forced.
        let mut released = Vec::new();
        for (id, func) in code.iter() {
            let patch = match func.origin {
                Origin::Variant { patch, .. } | Origin::Helper { patch } => patch,
                Origin::Base => continue,
            };
            if !self.enabled.contains(&patch) && !self.forced.get(patch).copied().unwrap_or(false) {
                released.push(id);
            }
        }
        released
    }

    /// After code was released: no live task may hold it.
    pub fn check_released(&mut self, tasks: &[SimTask], code: &CodeTable, now: u64) {
        for (i, task) in tasks.iter().enumerate() {
            if !task.is_dead() && self.violation.is_none() {
                self.check_released_stack(i as u32, task, code, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::code::{CodeBuilder, Op};
    use crate::machine::task::{Frame, HandlerPhase, InHandler, Program, RunState};
    use livepatch_core::backend::TaskKind;
    use livepatch_core::sync::Ordering;
    use livepatch_core::{CodeAddr, CpuId, TaskId};

    /// A kthread with id `id`, nothing on its stack, whose word says `word`.
    fn task_with_word(id: u32, word: PatchState) -> SimTask {
        let task = SimTask::new(TaskId(id), TaskKind::Kthread, TaskFlags::empty(), CpuId(0), Program::Idle);
        task.patch.reset(word);
        task
    }

    /// The violation the oracle recorded: of `invariant`, its message naming `says`.
    fn caught<'o>(oracle: &'o Oracle, invariant: Invariant, says: &str) -> &'o Violation {
        let violation = oracle.violation().expect("caught");
        assert_eq!(violation.invariant, invariant, "{violation}");
        assert!(violation.message.contains(says), "{violation}");
        violation
    }

    /// A frame inside `f`.
    fn frame_of(code: &CodeTable, f: FnId) -> Frame {
        Frame { func: f, pc: 1, base: code.get(f).range.start().get() }
    }

    /// Task `t` switches from `from` to `to` at a sweep, seen by the oracle, and its word follows.
    fn switch(oracle: &mut Oracle, t: u32, task: &SimTask, from: PatchState, to: PatchState, code: &CodeTable) {
        oracle.on_state_change(t, task, from, to, SwitchPoint::Sweep, code, 1);
        task.patch.reset(to);
    }

    /// One function `f` with one variant `v`, and an oracle for a per-task run patching it.
    fn one_function_patch() -> (CodeTable, FnId, FnId, Oracle) {
        one_function_patch_under(Model::PerTask, SwitchPoints::all())
    }

    /// The same under `model` with `points` enabled.
    fn one_function_patch_under(model: Model, points: SwitchPoints) -> (CodeTable, FnId, FnId, Oracle) {
        let mut b = CodeBuilder::new();
        b.func("schedule", vec![Op::Block]);
        let f = b.func("f", vec![Op::Work(1, 2)]);
        let v = b.variant(f, 0, vec![Op::Work(1, 2)]);
        let code = b.build().unwrap();
        let patch =
            PatchModel { replace: false, funcs: vec![PatchedFunc { object: ObjectId::VMLINUX, orig: f, variant: v }] };
        let oracle = Oracle::new(1, model, points, code.len(), vec![patch], &[]);
        (code, f, v, oracle)
    }

    #[test]
    fn a_word_changed_behind_the_oracles_back_is_caught() {
        let (code, f, v, mut oracle) = one_function_patch();
        let task = SimTask::new(TaskId(0), TaskKind::Kthread, TaskFlags::empty(), CpuId(0), Program::Idle);
        oracle.begin(0, PatchState::Patched);
        task.patch.reset(PatchState::Unpatched);
        task.patch.retarget(PatchState::Patched);
        oracle.on_patched_call(0, &task, f, f, &code, 1);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        // The core's word moves with no switch the machine saw: the redirect now sends the
        // task to the variant, consistently with the word — but not with its switches.
        task.patch.try_switch(task.patch.load(Ordering::Relaxed)).unwrap();
        oracle.on_patched_call(0, &task, f, v, &code, 2);
        caught(&oracle, Invariant::I1, "observed switches");
    }

    #[test]
    fn a_return_into_code_of_the_other_universe_is_caught() {
        let (code, f, v, mut oracle) = one_function_patch();
        let mut task = SimTask::new(TaskId(0), TaskKind::Kthread, TaskFlags::empty(), CpuId(0), Program::Idle);
        oracle.begin(0, PatchState::Patched);
        task.stack.push(crate::machine::task::Frame { func: f, pc: 1, base: code.get(f).range.start().get() });
        oracle.on_return_into(0, &task, &code, 1);
        assert!(!oracle.stopped(), "the original is the unpatched universe's code");
        task.stack[0] = frame_of(&code, code.schedule());
        oracle.on_return_into(0, &task, &code, 1);
        assert!(!oracle.stopped(), "both universes run schedule()");
        task.stack[0] = crate::machine::task::Frame { func: v, pc: 1, base: code.get(v).range.start().get() };
        oracle.on_return_into(0, &task, &code, 2);
        caught(&oracle, Invariant::I1, "returned into f");
    }

    #[test]
    fn a_plain_call_is_checked_against_the_oracles_universe_not_the_word() {
        // A disable: the task starts in the patched universe, which runs the variant of f.
        let (code, f, _v, mut oracle) = one_function_patch();
        let task = SimTask::new(TaskId(0), TaskKind::Kthread, TaskFlags::empty(), CpuId(0), Program::Idle);
        oracle.begin(0, PatchState::Unpatched);
        task.patch.reset(PatchState::Patched);
        task.patch.retarget(PatchState::Unpatched);
        // The core's word moves with no switch the machine saw, and the task's next call of
        // f is a plain one (its hook removed too early): it runs the original, which is what
        // the word says — but not the universe the task is in.
        task.patch.try_switch(task.patch.load(Ordering::Relaxed)).unwrap();
        oracle.on_plain_call(0, &task, f, &code, 1);
        let violation = oracle.violation().expect("caught");
        assert_eq!(violation.invariant, Invariant::I1);
    }

    /// A switch of a task with nothing of `f` on its stack (so no other rule objects), at
    /// `point`, in a fresh enable under `model` with `points`: the violation's message, if any.
    fn switch_at(model: Model, points: SwitchPoints, point: SwitchPoint, forced: bool) -> Option<String> {
        let (code, _f, _v, mut oracle) = one_function_patch_under(model, points);
        let task = SimTask::new(TaskId(0), TaskKind::Kthread, TaskFlags::empty(), CpuId(0), Program::Idle);
        oracle.begin(0, PatchState::Patched);
        if forced {
            oracle.force_begin(core::slice::from_ref(&task));
        }
        oracle.on_state_change(0, &task, PatchState::Unpatched, PatchState::Patched, point, &code, 1);
        oracle.violation().map(|v| {
            assert_eq!(v.invariant, Invariant::I2);
            v.message.clone()
        })
    }

    #[test]
    fn a_switch_at_a_point_the_policy_does_not_enable_is_caught() {
        let kgraft = livepatch_core::Policy::KGRAFT.switch_points;
        // kGraft's model checks no stacks: its sweep must not switch anyone, even with a clean
        // stack (on an architecture without a reliable unwinder the check would be a guess).
        let msg = switch_at(Model::KernelExit, kgraft, SwitchPoint::Sweep, false).expect("caught");
        assert!(msg.contains("at sweep, a point its policy does not enable"), "{msg}");
        assert_eq!(switch_at(Model::KernelExit, kgraft, SwitchPoint::ExitToUser, false), None);
        assert_eq!(switch_at(Model::KernelExit, kgraft, SwitchPoint::TaskWork, false), None);
        // A point the model could use but the policy leaves off.
        let sweep_only = SwitchPoints::SWEEP;
        assert!(switch_at(Model::PerTask, sweep_only, SwitchPoint::HandlerEntry, false).is_some());
        assert!(switch_at(Model::PerTask, sweep_only, SwitchPoint::PerCpu, false).is_some());
        assert_eq!(switch_at(Model::PerTask, sweep_only, SwitchPoint::Sweep, false), None);
        // A point the policy enables but the model cannot use.
        assert!(switch_at(Model::Freezer, SwitchPoints::all(), SwitchPoint::ExitToUser, false).is_some());
        // The engine switches every task of a forced transition, and stop-the-world's.
        assert_eq!(switch_at(Model::KernelExit, kgraft, SwitchPoint::Sweep, true), None);
        assert_eq!(switch_at(Model::StopTheWorld, SwitchPoints::empty(), SwitchPoint::Sweep, false), None);
        assert!(switch_at(Model::StopTheWorld, SwitchPoints::all(), SwitchPoint::SelfCheck, false).is_some());
    }

    #[test]
    fn an_idle_word_during_a_transition_is_caught() {
        let (code, f, _v, mut oracle) = one_function_patch();
        let task = task_with_word(0, PatchState::Idle);
        // Outside a transition every task is idle and runs the committed code.
        oracle.on_patched_call(0, &task, f, f, &code, 1);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        oracle.begin(0, PatchState::Patched);
        oracle.on_patched_call(0, &task, f, f, &code, 2);
        caught(&oracle, Invariant::I1, "idle task state during a transition");
    }

    #[test]
    fn a_call_running_code_its_universe_does_not_run_is_i1_and_after_a_reversal_i4() {
        for reversed in [false, true] {
            let (code, f, v, mut oracle) = one_function_patch();
            let task = task_with_word(0, PatchState::Unpatched);
            oracle.begin(0, PatchState::Patched);
            if reversed {
                oracle.reverse();
            }
            oracle.on_patched_call(0, &task, f, f, &code, 1);
            assert!(!oracle.stopped(), "{:?}", oracle.violation());
            oracle.on_patched_call(0, &task, f, v, &code, 2);
            let violation = oracle.violation().expect("caught");
            assert_eq!(violation.invariant, if reversed { Invariant::I4 } else { Invariant::I1 });
            assert!(violation.message.contains("call of f ran f.p0 but universe unpatched runs f"), "{violation}");
            assert_eq!(oracle.stats().checked_calls, 2);
            // A later violation is counted; the first one is kept for the replay.
            oracle.on_patched_call(0, &task, f, v, &code, 3);
            assert_eq!(oracle.violations(), 2);
            assert_eq!(oracle.violation().map(|v| v.time_ns), Some(2));
        }
    }

    #[test]
    fn a_task_holding_code_of_the_universe_it_left_is_caught_at_its_next_call() {
        let (code, f, v, mut oracle) = one_function_patch();
        let mut task = task_with_word(0, PatchState::Unpatched);
        oracle.begin(0, PatchState::Patched);
        switch(&mut oracle, 0, &task, PatchState::Unpatched, PatchState::Patched, &code);
        // The variant belongs to its new universe, schedule() to both.
        task.stack.push(frame_of(&code, code.schedule()));
        task.stack.push(frame_of(&code, v));
        oracle.on_patched_call(0, &task, f, v, &code, 2);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        // The original appears on its stack behind the oracle's back.
        task.stack.push(frame_of(&code, f));
        oracle.on_patched_call(0, &task, f, v, &code, 3);
        caught(&oracle, Invariant::I1, "universe patched task holds f of the other universe");
    }

    #[test]
    fn a_stale_frame_after_completion_is_caught_at_a_call_and_at_a_return() {
        let (code, f, v, mut oracle) = one_function_patch();
        let mut task = task_with_word(0, PatchState::Unpatched);
        oracle.begin(0, PatchState::Patched);
        switch(&mut oracle, 0, &task, PatchState::Unpatched, PatchState::Patched, &code);
        switch(&mut oracle, 0, &task, PatchState::Patched, PatchState::Idle, &code);
        let released = oracle.end(PatchState::Patched, &[false], core::slice::from_ref(&task), &code, 2);
        assert_eq!(released, Vec::<FnId>::new());
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        // The variant is the code in use now.
        task.stack.push(frame_of(&code, v));
        oracle.on_patched_call(0, &task, f, v, &code, 3);
        oracle.on_return_into(0, &task, &code, 3);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        // The replaced original is not.
        task.stack[0] = frame_of(&code, f);
        oracle.on_return_into(0, &task, &code, 4);
        let violation = oracle.violation().expect("caught").clone();
        assert_eq!(violation.invariant, Invariant::I1);
        assert!(violation.message.contains("returned into f, code its universe does not run"), "{violation}");
        let (code, f, v, mut oracle) = one_function_patch();
        oracle.begin(0, PatchState::Patched);
        oracle.end(PatchState::Patched, &[false], &[], &code, 2);
        let mut task = task_with_word(0, PatchState::Idle);
        task.stack.push(frame_of(&code, f));
        oracle.on_patched_call(0, &task, f, v, &code, 3);
        caught(&oracle, Invariant::I1, "stale frame f on the stack after completion");
    }

    #[test]
    fn call_chain_a_call_from_code_being_switched_away_from_into_new_code_is_caught() {
        let (code, f, v, mut oracle) = one_function_patch_under(Model::CallChain, SwitchPoints::all());
        let mut task = task_with_word(0, PatchState::Unpatched);
        oracle.begin(0, PatchState::Patched);
        task.stack.push(frame_of(&code, f));
        // Called from the old code, the old chain continues.
        oracle.on_patched_call(0, &task, f, f, &code, 1);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        oracle.on_patched_call(0, &task, f, v, &code, 2);
        let violation = oracle.violation().expect("caught");
        assert_eq!(violation.invariant, Invariant::I1);
        assert!(
            violation
                .message
                .contains("call of f from f (code being switched away from) ran f.p0 of the other universe"),
            "{violation}"
        );
    }

    #[test]
    fn call_chain_mixed_stacks_are_counted_per_call_and_per_task() {
        let (code, f, v, mut oracle) = one_function_patch_under(Model::CallChain, SwitchPoints::all());
        oracle.begin(0, PatchState::Patched);
        let new_chain = |id: u32| {
            let mut task = task_with_word(id, PatchState::Patched);
            task.stack.push(frame_of(&code, v));
            task
        };
        let (t0, t2) = (new_chain(0), new_chain(2));
        let mut old_chain = task_with_word(1, PatchState::Unpatched);
        old_chain.stack.push(frame_of(&code, f));
        // A new chain reaching the original (through code both universes share, in a kernel):
        // twice by task 0, once by task 2.
        oracle.on_patched_call(0, &t0, f, f, &code, 1);
        oracle.on_patched_call(0, &t0, f, f, &code, 2);
        oracle.on_patched_call(2, &t2, f, f, &code, 3);
        let stats = oracle.stats();
        assert_eq!((stats.mixed_stacks, stats.mixed_tasks), (3, 2), "{stats:?}");
        // Chains that stay in one universe do not count.
        oracle.on_patched_call(1, &old_chain, f, f, &code, 4);
        oracle.on_patched_call(0, &t0, f, v, &code, 5);
        oracle.on_patched_call(1, &task_with_word(1, PatchState::Patched), f, v, &code, 6);
        oracle.on_patched_call(1, &old_chain, f, f, &code, 7);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        let stats = oracle.stats();
        assert_eq!((stats.mixed_stacks, stats.mixed_tasks, stats.checked_calls), (3, 2, 7), "{stats:?}");
    }

    #[test]
    fn released_code_on_a_live_stack_is_caught() {
        // The call-chain model checks it at every call, every model after a release.
        let (mut code, f, v, mut oracle) = one_function_patch_under(Model::CallChain, SwitchPoints::all());
        code.released[v.idx()] = true;
        let mut task = task_with_word(0, PatchState::Idle);
        task.stack.push(frame_of(&code, f));
        oracle.on_patched_call(0, &task, f, f, &code, 1);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        task.stack.push(frame_of(&code, v));
        oracle.on_patched_call(0, &task, f, f, &code, 2);
        caught(&oracle, Invariant::I3, "released code f.p0 on the stack");

        let (mut code, f, v, mut oracle) = one_function_patch();
        code.released[v.idx()] = true;
        let mut dead = task_with_word(0, PatchState::Idle);
        dead.stack.push(frame_of(&code, v));
        dead.run = RunState::Dead;
        let mut live = task_with_word(1, PatchState::Idle);
        live.stack.push(frame_of(&code, f));
        let mut tasks = vec![dead, live];
        oracle.check_released(&tasks, &code, 1);
        assert!(!oracle.stopped(), "a dead task holds nothing: {:?}", oracle.violation());
        tasks[1].stack.push(frame_of(&code, v));
        oracle.check_released(&tasks, &code, 2);
        assert_eq!(caught(&oracle, Invariant::I3, "released code f.p0 on the stack").task, 1);
    }

    #[test]
    fn a_plain_call_of_a_function_its_universe_replaces_is_caught_except_in_the_call_chain_model() {
        for model in [Model::PerTask, Model::CallChain] {
            let (code, f, _v, mut oracle) = one_function_patch_under(model, SwitchPoints::all());
            let task = task_with_word(0, PatchState::Unpatched);
            oracle.begin(0, PatchState::Patched);
            oracle.on_plain_call(0, &task, f, &code, 1);
            assert!(!oracle.stopped(), "{:?}", oracle.violation());
            switch(&mut oracle, 0, &task, PatchState::Unpatched, PatchState::Patched, &code);
            oracle.on_plain_call(0, &task, f, &code, 2);
            if model == Model::CallChain {
                // Its redirect depends on the caller, not on a universe.
                assert!(!oracle.stopped(), "{:?}", oracle.violation());
                continue;
            }
            let violation = oracle.violation().expect("caught");
            assert_eq!(violation.invariant, Invariant::I1);
            assert!(
                violation.message.contains("called f with no hook on it, but universe patched runs f.p0"),
                "{violation}"
            );
            assert_eq!(oracle.stats().checked_calls, 1);
        }
    }

    #[test]
    fn a_switch_from_a_universe_the_task_was_not_in_is_caught_except_in_the_call_chain_model() {
        for model in [Model::PerTask, Model::CallChain] {
            let (code, _f, _v, mut oracle) = one_function_patch_under(model, SwitchPoints::all());
            let task = task_with_word(0, PatchState::Unpatched);
            oracle.begin(0, PatchState::Patched);
            // Entering the transition is no switch.
            oracle.on_state_change(0, &task, PatchState::Idle, PatchState::Unpatched, SwitchPoint::Sweep, &code, 1);
            // Task 1 switches as it should; task 0 is reported leaving the target it never reached.
            oracle.on_state_change(1, &task, PatchState::Unpatched, PatchState::Patched, SwitchPoint::Sweep, &code, 1);
            assert!(!oracle.stopped(), "{:?}", oracle.violation());
            oracle.on_state_change(0, &task, PatchState::Patched, PatchState::Unpatched, SwitchPoint::Sweep, &code, 2);
            assert_eq!(oracle.stats().checked_switches, 2);
            if model == Model::CallChain {
                // Its word is bookkeeping for completion only.
                assert!(!oracle.stopped(), "{:?}", oracle.violation());
                continue;
            }
            let violation = oracle.violation().expect("caught");
            assert_eq!((violation.invariant, violation.task), (Invariant::I1, 0));
            assert!(
                violation
                    .message
                    .contains("switched patched->unpatched, but its observed switches left it in unpatched"),
                "{violation}"
            );
        }
    }

    #[test]
    fn a_switch_away_from_the_target_is_i4_except_in_the_call_chain_model() {
        for model in [Model::PerTask, Model::CallChain] {
            let (code, _f, _v, mut oracle) = one_function_patch_under(model, SwitchPoints::all());
            let task = task_with_word(0, PatchState::Unpatched);
            oracle.begin(0, PatchState::Patched);
            switch(&mut oracle, 0, &task, PatchState::Unpatched, PatchState::Patched, &code);
            assert!(!oracle.stopped(), "{:?}", oracle.violation());
            oracle.on_state_change(0, &task, PatchState::Patched, PatchState::Unpatched, SwitchPoint::Sweep, &code, 2);
            if model == Model::CallChain {
                // A reversal re-arms every task: no switch of the code it runs.
                assert!(!oracle.stopped(), "{:?}", oracle.violation());
                continue;
            }
            caught(&oracle, Invariant::I4, "switched to unpatched at sweep, away from the transition's target");
            // After a reversal the same switch is the way back.
            let (code, _f, _v, mut oracle) = one_function_patch_under(model, SwitchPoints::all());
            oracle.begin(0, PatchState::Patched);
            switch(&mut oracle, 0, &task, PatchState::Unpatched, PatchState::Patched, &code);
            oracle.reverse();
            assert_eq!(oracle.target(), Some(PatchState::Unpatched));
            oracle.on_state_change(0, &task, PatchState::Patched, PatchState::Unpatched, SwitchPoint::Sweep, &code, 2);
            assert!(!oracle.stopped(), "{:?}", oracle.violation());
        }
    }

    #[test]
    fn a_switch_at_exit_to_user_with_kernel_frames_is_caught() {
        let (code, _f, _v, mut oracle) = one_function_patch();
        let mut task = task_with_word(0, PatchState::Unpatched);
        oracle.begin(0, PatchState::Patched);
        oracle.on_state_change(0, &task, PatchState::Unpatched, PatchState::Patched, SwitchPoint::ExitToUser, &code, 1);
        // A kernel frame of code both universes run: fine at a sweep, not at exit to user.
        task.stack.push(frame_of(&code, code.schedule()));
        oracle.on_state_change(1, &task, PatchState::Unpatched, PatchState::Patched, SwitchPoint::Sweep, &code, 1);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        oracle.on_state_change(2, &task, PatchState::Unpatched, PatchState::Patched, SwitchPoint::ExitToUser, &code, 2);
        assert_eq!(caught(&oracle, Invariant::I2, "switched at exit to user with kernel frames").task, 2);
    }

    #[test]
    fn a_switch_with_code_being_switched_away_from_on_the_stack_is_caught() {
        let (code, f, v, mut oracle) = one_function_patch();
        let mut task = task_with_word(0, PatchState::Unpatched);
        oracle.begin(0, PatchState::Patched);
        // Code both universes run, and the code of the target, may be on the stack.
        task.stack.push(frame_of(&code, code.schedule()));
        task.stack.push(frame_of(&code, v));
        oracle.on_state_change(0, &task, PatchState::Unpatched, PatchState::Patched, SwitchPoint::Sweep, &code, 1);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        task.stack.push(frame_of(&code, f));
        oracle.on_state_change(1, &task, PatchState::Unpatched, PatchState::Patched, SwitchPoint::Sweep, &code, 2);
        let violation = oracle.violation().expect("caught");
        assert_eq!((violation.invariant, violation.task), (Invariant::I2, 1));
        assert!(
            violation.message.contains("switched unpatched->patched at sweep with f (code being switched away from)"),
            "{violation}"
        );
    }

    #[test]
    fn a_fork_starts_the_child_in_its_parents_universe() {
        let (code, f, v, mut oracle) = one_function_patch();
        let parent = task_with_word(0, PatchState::Unpatched);
        oracle.on_fork(0, 3);
        oracle.begin(0, PatchState::Patched);
        switch(&mut oracle, 0, &parent, PatchState::Unpatched, PatchState::Patched, &code);
        oracle.on_fork(0, 1);
        // The child of a task that had not switched stays where it started.
        oracle.on_fork(2, 3);
        let child = task_with_word(1, PatchState::Patched);
        oracle.on_patched_call(1, &child, f, v, &code, 2);
        oracle.on_patched_call(3, &task_with_word(3, PatchState::Unpatched), f, f, &code, 2);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        oracle.on_patched_call(1, &task_with_word(1, PatchState::Unpatched), f, f, &code, 3);
        caught(&oracle, Invariant::I1, "observed switches left it in patched");
    }

    #[test]
    fn a_transition_ending_while_a_task_is_still_in_its_start_universe_is_caught() {
        let (code, _f, _v, mut oracle) = one_function_patch();
        let tasks = [task_with_word(0, PatchState::Unpatched), task_with_word(1, PatchState::Unpatched)];
        oracle.begin(0, PatchState::Patched);
        // Task 1 switched, then left the transition; task 0 left it without switching.
        switch(&mut oracle, 1, &tasks[1], PatchState::Unpatched, PatchState::Patched, &code);
        switch(&mut oracle, 1, &tasks[1], PatchState::Patched, PatchState::Idle, &code);
        switch(&mut oracle, 0, &tasks[0], PatchState::Unpatched, PatchState::Idle, &code);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        oracle.end(PatchState::Patched, &[false], &tasks, &code, 2);
        assert_eq!(
            caught(&oracle, Invariant::I3, "transition ended in patched while this task was still unpatched").task,
            0
        );
    }

    #[test]
    fn an_exiting_task_left_behind_is_counted_unless_it_holds_code_the_final_universe_lacks() {
        let exiting = |id: u32, word: PatchState| {
            let task = SimTask::new(TaskId(id), TaskKind::User, TaskFlags::EXITING, CpuId(0), Program::Idle);
            task.patch.reset(word);
            task
        };
        // Per direction: the code an exiting task may hold, and the code it must not.
        for (target, harmless, away) in [(PatchState::Patched, 2, 1), (PatchState::Unpatched, 1, 2)] {
            let (code, f, v, mut oracle) = one_function_patch();
            let func = |which: u32| if which == 1 { f } else { v };
            let start = target.opposite();
            oracle.begin(0, target);
            let mut tasks = [exiting(0, start), exiting(1, start), exiting(2, start)];
            tasks[1].stack.push(frame_of(&code, func(harmless)));
            tasks[2].stack.push(frame_of(&code, func(away)));
            for (t, task) in tasks.iter().enumerate().take(2) {
                switch(&mut oracle, t as u32, task, start, PatchState::Idle, &code);
            }
            oracle.end(target, &[false], &tasks[..2], &code, 2);
            assert!(!oracle.stopped(), "{:?}", oracle.violation());
            assert_eq!(oracle.stats().exiting_unswitched, 2);

            let (code, _f, _v, mut oracle) = one_function_patch();
            oracle.begin(0, target);
            switch(&mut oracle, 2, &tasks[2], start, PatchState::Idle, &code);
            oracle.end(target, &[false], &tasks, &code, 2);
            let violation = oracle.violation().expect("caught");
            assert_eq!((violation.invariant, violation.task), (Invariant::I3, 2));
            let msg = format!("transition ended in {target} while this exiting task was still {start}");
            assert!(violation.message.contains(&msg), "{violation}");
            assert_eq!(oracle.stats().exiting_unswitched, 0);
        }
    }

    #[test]
    fn old_code_on_a_stack_when_the_transition_ends_is_caught_except_in_the_call_chain_model() {
        for model in [Model::PerTask, Model::CallChain] {
            let (code, f, _v, mut oracle) = one_function_patch_under(model, SwitchPoints::all());
            let mut tasks = [
                task_with_word(0, PatchState::Idle),
                task_with_word(1, PatchState::Idle),
                task_with_word(2, PatchState::Idle),
            ];
            // A dead task holds nothing; a live one may hold code both universes run.
            tasks[0].stack.push(frame_of(&code, f));
            tasks[0].run = RunState::Dead;
            tasks[1].stack.push(frame_of(&code, code.schedule()));
            tasks[2].stack.push(frame_of(&code, code.schedule()));
            tasks[2].stack.push(frame_of(&code, f));
            oracle.begin(0, PatchState::Patched);
            oracle.end(PatchState::Patched, &[false], &tasks, &code, 2);
            if model == Model::CallChain {
                // Its stacks may mix universes (measured at the calls, not failed).
                assert!(!oracle.stopped(), "{:?}", oracle.violation());
                continue;
            }
            assert_eq!(
                caught(&oracle, Invariant::I3, "old code on the stack when the transition ended in patched").task,
                2
            );
            // A start the engine refused changed nothing: nothing to check.
            let (code, _f, _v, mut oracle) = one_function_patch_under(model, SwitchPoints::all());
            oracle.begin(0, PatchState::Patched);
            oracle.abort(&[false], &tasks, &code, 2);
            assert!(!oracle.stopped(), "{:?}", oracle.violation());
        }
    }

    #[test]
    fn frames_that_predate_a_force_are_counted_until_the_task_returns_below_them() {
        let (code, f, v, mut oracle) = one_function_patch();
        let mut tasks = [task_with_word(0, PatchState::Unpatched), task_with_word(1, PatchState::Unpatched)];
        tasks[0].stack.push(frame_of(&code, f));
        tasks[1].run = RunState::Dead;
        oracle.begin(0, PatchState::Patched);
        oracle.force_begin(&tasks);
        // The engine switches it with the original on its stack: counted, not failed.
        switch(&mut oracle, 0, &tasks[0], PatchState::Unpatched, PatchState::Patched, &code);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        assert_eq!(oracle.stats().forced_mixed, 1);
        // The hooked call in flight at the force enters the original: its frame is covered too.
        tasks[0].stack.push(frame_of(&code, f));
        oracle.on_patched_call(0, &tasks[0], f, v, &code, 2);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        assert_eq!(oracle.stats().forced_mixed, 3);
        // Once it returned below them, what it pushes is checked again.
        tasks[0].stack.clear();
        oracle.on_return(0, 0);
        tasks[0].stack.push(frame_of(&code, f));
        oracle.on_patched_call(0, &tasks[0], f, v, &code, 3);
        caught(&oracle, Invariant::I1, "universe patched task holds f of the other universe");
        assert_eq!(oracle.stats().forced_mixed, 3);
    }

    /// A hooked call whose handler decided before the force lands after it: it runs what the
    /// handler chose (the original, the task's universe then), although the force has moved
    /// the task on. That is what a force does (the kernel's handler, past its read of
    /// `patch_state`, does the same): counted, not failed. The task's next call is checked.
    #[test]
    fn a_hooked_call_decided_before_a_force_is_counted_when_it_lands() {
        let (code, f, _v, mut oracle) = one_function_patch();
        let mut task = task_with_word(0, PatchState::Unpatched);
        oracle.begin(0, PatchState::Patched);
        task.handler = Some(InHandler {
            func: f,
            slot: 0,
            parent_ip: CodeAddr(0),
            phase: HandlerPhase::Decided(f),
            site: code.get(f).range.start(),
            queued: false,
        });
        oracle.force_begin(core::slice::from_ref(&task));
        switch(&mut oracle, 0, &task, PatchState::Unpatched, PatchState::Patched, &code);
        oracle.end(PatchState::Patched, &[true], core::slice::from_ref(&task), &code, 2);
        task.patch.reset(PatchState::Idle);
        task.handler = None;
        oracle.on_patched_call(0, &task, f, f, &code, 3);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        assert_eq!(oracle.stats().forced_mixed, 1);
        // Only that call: the next one of the original is decided after the force.
        oracle.on_patched_call(0, &task, f, f, &code, 4);
        caught(&oracle, Invariant::I1, "call of f ran f but universe");
    }

    #[test]
    fn a_forced_transition_counts_tasks_left_behind_instead_of_failing() {
        let (code, f, _v, mut oracle) = one_function_patch();
        let mut task = task_with_word(0, PatchState::Unpatched);
        task.stack.push(frame_of(&code, f));
        oracle.begin(0, PatchState::Patched);
        oracle.force_begin(core::slice::from_ref(&task));
        switch(&mut oracle, 0, &task, PatchState::Unpatched, PatchState::Idle, &code);
        oracle.end(PatchState::Patched, &[true], core::slice::from_ref(&task), &code, 2);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        // Once as a task left behind, once for the original still on its stack.
        assert_eq!(oracle.stats().forced_mixed, 2);
    }

    #[test]
    fn the_enabled_patches_follow_enables_disables_replacements_and_aborts_and_the_rest_is_released() {
        let mut b = CodeBuilder::new();
        b.func("schedule", vec![Op::Block]);
        let f = b.func("f", vec![Op::Work(1, 2)]);
        let g = b.func("g", vec![Op::Work(1, 2)]);
        let f0 = b.variant(f, 0, vec![Op::Work(1, 2)]);
        let g1 = b.variant(g, 1, vec![Op::Work(1, 2)]);
        let code = b.build().unwrap();
        let func = |orig, variant| PatchedFunc { object: ObjectId::VMLINUX, orig, variant };
        let patches = vec![
            PatchModel { replace: false, funcs: vec![func(f, f0)] },
            PatchModel { replace: true, funcs: vec![func(g, g1)] },
        ];
        let mut oracle = Oracle::new(1, Model::PerTask, SwitchPoints::all(), code.len(), patches, &[]);
        let idle = task_with_word(0, PatchState::Idle);
        let runs = |oracle: &mut Oracle, orig, ran| {
            oracle.on_patched_call(0, &idle, orig, ran, &code, 1);
            !oracle.stopped()
        };
        oracle.begin(0, PatchState::Patched);
        assert_eq!(oracle.end(PatchState::Patched, &[false, false], &[], &code, 1), vec![g1]);
        assert_eq!(oracle.enabled(), &[0]);
        assert!(runs(&mut oracle, f, f0) && runs(&mut oracle, g, g));
        // The cumulative patch replaces the one before it.
        oracle.begin(1, PatchState::Patched);
        assert_eq!(oracle.end(PatchState::Patched, &[false, false], &[], &code, 1), vec![f0]);
        assert_eq!(oracle.enabled(), &[1]);
        assert!(runs(&mut oracle, f, f) && runs(&mut oracle, g, g1));
        oracle.begin(1, PatchState::Unpatched);
        assert_eq!(oracle.end(PatchState::Unpatched, &[false, false], &[], &code, 1), vec![f0, g1]);
        assert_eq!(oracle.enabled(), &[] as &[usize]);
        // A refused start leaves the list as it was.
        oracle.begin(0, PatchState::Patched);
        assert_eq!(oracle.enabled(), &[0]);
        assert_eq!(oracle.abort(&[false, false], &[], &code, 1), vec![f0, g1]);
        assert_eq!(oracle.enabled(), &[] as &[usize]);
        assert!(runs(&mut oracle, f, f) && runs(&mut oracle, g, g));
        // Only while a transition is announced is there anything to abort.
        assert_eq!(oracle.abort(&[false, false], &[], &code, 1), Vec::<FnId>::new());
    }

    #[test]
    fn a_forced_patchs_code_is_never_released() {
        // Forced by the engine (its list at the end) or by the force the oracle saw begin.
        for engine_says in [true, false] {
            let (code, _f, _v, mut oracle) = one_function_patch();
            oracle.begin(0, PatchState::Patched);
            if !engine_says {
                oracle.force_begin(&[]);
            }
            assert_eq!(oracle.end(PatchState::Patched, &[false], &[], &code, 1), Vec::<FnId>::new());
            oracle.begin(0, PatchState::Unpatched);
            assert_eq!(oracle.end(PatchState::Unpatched, &[engine_says], &[], &code, 2), Vec::<FnId>::new());
        }
        let (code, _f, v, mut oracle) = one_function_patch();
        oracle.begin(0, PatchState::Patched);
        oracle.end(PatchState::Patched, &[false], &[], &code, 1);
        oracle.begin(0, PatchState::Unpatched);
        assert_eq!(oracle.end(PatchState::Unpatched, &[false], &[], &code, 2), vec![v]);
    }

    #[test]
    fn a_module_patch_changes_the_code_only_while_its_module_is_loaded() {
        let module = ObjectId(1);
        let mut b = CodeBuilder::new();
        b.func("schedule", vec![Op::Block]);
        let f = b.declare("f", module);
        b.define(f, vec![Op::Work(1, 2)]);
        let v = b.variant(f, 0, vec![Op::Work(1, 2)]);
        let code = b.build().unwrap();
        let patch = PatchModel { replace: false, funcs: vec![PatchedFunc { object: module, orig: f, variant: v }] };
        let mut oracle = Oracle::new(1, Model::PerTask, SwitchPoints::all(), code.len(), vec![patch], &[]);
        oracle.begin(0, PatchState::Patched);
        oracle.end(PatchState::Patched, &[false], &[], &code, 1);
        let idle = task_with_word(0, PatchState::Idle);
        oracle.on_patched_call(0, &idle, f, f, &code, 1);
        assert!(!oracle.stopped(), "not loaded: {:?}", oracle.violation());
        oracle.set_loaded(module, true);
        oracle.on_patched_call(0, &idle, f, v, &code, 2);
        oracle.set_loaded(ObjectId(2), true);
        oracle.set_loaded(ObjectId(2), false);
        oracle.on_patched_call(0, &idle, f, v, &code, 3);
        assert!(!oracle.stopped(), "loaded: {:?}", oracle.violation());
        oracle.set_loaded(module, false);
        oracle.on_patched_call(0, &idle, f, f, &code, 4);
        assert!(!oracle.stopped(), "unloaded: {:?}", oracle.violation());
    }

    #[test]
    fn each_model_switches_only_at_the_points_it_can_use() {
        use SwitchPoint::*;
        let all = [Sweep, PerCpu, ExitToUser, TaskWork, Idle, HandlerEntry, SelfCheck, SafePoint];
        let table: [(Model, &[SwitchPoint]); 5] = [
            (Model::PerTask, &all),
            (Model::KernelExit, &[ExitToUser, TaskWork, Idle, SafePoint]),
            (Model::CallChain, &[Sweep, PerCpu, ExitToUser, TaskWork, Idle, SelfCheck]),
            (Model::StopTheWorld, &[Sweep]),
            (Model::Freezer, &[Sweep, Idle]),
        ];
        for (model, usable) in table {
            for point in all {
                let caught = switch_at(model, SwitchPoints::all(), point, false);
                assert_eq!(caught.is_none(), usable.contains(&point), "{model:?} at {}: {caught:?}", point.name());
            }
        }
    }

    #[test]
    fn a_task_switched_back_by_a_disable_runs_the_original() {
        let (code, f, v, mut oracle) = one_function_patch();
        let task = task_with_word(0, PatchState::Patched);
        oracle.begin(0, PatchState::Unpatched);
        oracle.on_patched_call(0, &task, f, v, &code, 1);
        switch(&mut oracle, 0, &task, PatchState::Patched, PatchState::Unpatched, &code);
        oracle.on_patched_call(0, &task, f, f, &code, 2);
        assert!(!oracle.stopped(), "{:?}", oracle.violation());
        oracle.on_patched_call(0, &task, f, v, &code, 3);
        caught(&oracle, Invariant::I1, "call of f ran f.p0 but universe unpatched runs f");
    }

    #[test]
    fn a_violation_reads_with_what_it_takes_to_replay_it() {
        let (code, f, v, mut oracle) = one_function_patch();
        let mut task = task_with_word(0, PatchState::Unpatched);
        task.stack.push(frame_of(&code, f));
        oracle.set_event_index(7);
        oracle.begin(0, PatchState::Patched);
        oracle.on_patched_call(0, &task, f, v, &code, 42);
        let violation = oracle.violation().expect("caught");
        let want = format!(
            "I1 violated at t=42ns (seed 1, event #7): task 0: call of f ran f.p0 but universe unpatched runs f; \
             stack [f@{}]",
            frame_of(&code, f).addr()
        );
        assert_eq!(violation.to_string(), want);
    }
}
