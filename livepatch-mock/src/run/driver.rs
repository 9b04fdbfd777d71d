//! The run's driver state: the script, completion attempts and their records, the oracle's
//! view of transitions ending, and the timeline samples.

use super::result::{ActionOutcome, StallKind, StragglerRecord, TransitionRecord};
use crate::machine::event::Event;
use crate::machine::{CallReport, Machine};
use crate::oracle::Oracle;
use crate::scenario::{Action, Scenario, Wait};
use livepatch_core::state::PatchState;
use livepatch_core::sweep::Straggler;
use livepatch_core::transition::Progress;
use livepatch_core::{Engine, Live, ObjectId, Patch};
use std::collections::{BTreeMap, BTreeSet};

/// The driver's state between events: where the script is, the transition in progress and
/// its record, the retry generation, the timeline.
#[derive(Default)]
pub(super) struct State {
    pub(super) step: usize,
    pub(super) script_done: bool,
    pub(super) waiting_settle: bool,
    pub(super) settle_delay: u64,
    pub(super) end_at: Option<u64>,
    pub(super) retry_gen: u32,
    pub(super) current: Option<TransitionRecord>,
    pub(super) transitions: Vec<TransitionRecord>,
    pub(super) outcomes: Vec<ActionOutcome>,
    pub(super) timeline: Vec<(u64, u32)>,
    pub(super) first_start: Option<u64>,
    pub(super) sample_gen_armed: bool,
}

impl State {
    pub(super) fn after_call(&mut self, m: &mut Machine, rep: &CallReport) {
        if let Some(at) = rep.retry_at {
            self.retry_gen = self.retry_gen.wrapping_add(1);
            m.queue.push(at.max(m.now), Event::Retry { gen: self.retry_gen });
        }
        if let Some(t) = &mut self.current {
            t.kicks += u64::from(rep.kicks);
            t.max_pause_ns = t.max_pause_ns.max(rep.pause_ns);
        }
    }

    pub(super) fn note_pass(&mut self, m: &Machine, progress: &Progress, stragglers: &[Straggler]) {
        let Some(t) = &mut self.current else {
            return;
        };
        let s = progress.summary();
        t.passes += 1;
        t.walks += u64::from(s.walks);
        if let Progress::GaveUp(_) = progress {
            t.outcome = "gave-up".into();
        }
        if !stragglers.is_empty() {
            t.straggler_reasons.clear();
            t.last_stragglers.clear();
            for s in stragglers {
                let reason =
                    StallKind::of(&s.reason, |entry| m.code().at_entry(entry).map(|f| m.code().get(f).name.clone()));
                if let StallKind::OnStack { function, .. } = &reason {
                    if !t.blocking_functions.contains(function) {
                        t.blocking_functions.insert(function.clone());
                    }
                }
                *t.straggler_reasons.entry(reason.key()).or_default() += 1;
                // Every straggler of the pass: the display caps, not the record.
                t.last_stragglers.push(StragglerRecord {
                    task: s.task.0,
                    kind: s.kind.into(),
                    exiting: s.flags.contains(livepatch_core::backend::TaskFlags::EXITING),
                    reason,
                });
            }
        }
    }

    /// After any engine call: if the transition ended, let the oracle check it and release
    /// the code of patches no longer in use.
    pub(super) fn after_engine(
        &mut self,
        m: &mut Machine,
        oracle: &mut Oracle,
        engine: &Engine<'_>,
        patches: &[Patch<'_>],
        end_ns: u64,
        timeline: bool,
    ) {
        let Some(pi) = oracle.patch_in_transition() else {
            return;
        };
        if engine.transition().is_some() {
            return;
        }
        let p = &patches[pi];
        let fin = if p.is_registered() && p.is_enabled() { PatchState::Patched } else { PatchState::Unpatched };
        let forced: Vec<bool> = patches.iter().map(|p| p.is_forced()).collect();
        let now = m.now;
        let released = oracle.end(fin, &forced, m.tasks(), m.code(), now);
        for f in released {
            m.set_released(f, true);
        }
        oracle.check_released(m.tasks(), m.code(), now);
        if let Some(mut t) = self.current.take() {
            t.end_ns = Some(end_ns.max(t.start_ns));
            if t.outcome == "pending" {
                t.outcome = if t.reversed { "reversed".into() } else { "complete".into() };
            }
            // A transition that gave up leaves tasks where they started: no drop to zero.
            if timeline && t.outcome != "gave-up" {
                let base = self.first_start.unwrap_or(0);
                self.timeline.push((end_ns.saturating_sub(base), 0));
            }
            self.transitions.push(t);
        }
    }

    pub(super) fn sample(&mut self, m: &mut Machine, oracle: &Oracle, timeline: bool) {
        self.sample_gen_armed = false;
        let (Some(target), Some(t)) = (oracle.target(), &self.current) else {
            return;
        };
        if !timeline {
            return;
        }
        let base = self.first_start.unwrap_or(t.start_ns);
        let n = m.count_not_in(target);
        self.timeline.push((m.now.saturating_sub(base), n));
        let elapsed = m.now.saturating_sub(t.start_ns);
        let next = (elapsed / 40).max(20_000);
        m.queue.push(m.now + next, Event::Sample);
        self.sample_gen_armed = true;
    }

    pub(super) fn start_record(&mut self, m: &mut Machine, patch: &Patch<'_>, direction: &str) {
        if let Some(t) = self.current.take() {
            self.transitions.push(t);
        }
        self.first_start.get_or_insert(m.now);
        self.current = Some(TransitionRecord {
            patch: patch.name().to_string(),
            direction: direction.to_string(),
            start_ns: m.now,
            end_ns: None,
            passes: 0,
            walks: 0,
            kicks: 0,
            reversed: false,
            outcome: "pending".into(),
            last_stragglers: Vec::new(),
            straggler_reasons: BTreeMap::new(),
            blocking_functions: BTreeSet::new(),
            max_pause_ns: 0,
        });
        if !self.sample_gen_armed {
            m.queue.push(m.now, Event::Sample);
            self.sample_gen_armed = true;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_step<'a>(
        &mut self,
        sc: &Scenario,
        m: &mut Machine,
        oracle: &mut Oracle,
        engine: &mut Engine<'a>,
        patches: &'a [Patch<'a>],
        live: &Live<'_>,
        timeline: bool,
    ) {
        let Some(step) = sc.script.get(self.step).copied() else {
            self.script_done = true;
            return;
        };
        self.step += 1;
        // Its outcome is recorded; the script goes on whatever it was.
        let _ = self.act(step.action, m, oracle, engine, patches, live, timeline);
        match sc.script.get(self.step) {
            None => self.script_done = true,
            Some(next) => match next.wait {
                Wait::For(ns) => m.queue.push(m.now + ns, Event::Script),
                Wait::Settled(ns) => {
                    self.waiting_settle = true;
                    self.settle_delay = ns;
                }
            },
        }
    }

    /// Runs `action` now (a script step, or one injected by a caller stepping the run) and
    /// records its outcome.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn act<'a>(
        &mut self,
        action: Action,
        m: &mut Machine,
        oracle: &mut Oracle,
        engine: &mut Engine<'a>,
        patches: &'a [Patch<'a>],
        live: &Live<'_>,
        timeline: bool,
    ) -> Result<(), String> {
        let now = m.now;
        let idle = engine.transition().is_none();
        let result: Result<(), String> = match action {
            Action::Enable(i) | Action::Disable(i) => match patches.get(i) {
                None => Err(format!("no patch #{i}")),
                Some(p) => {
                    let enable = matches!(action, Action::Enable(_));
                    let target = if enable { PatchState::Patched } else { PatchState::Unpatched };
                    if idle {
                        oracle.begin(i, target);
                        if enable {
                            // A re-enabled patch's module is loaded again.
                            let ids: Vec<_> = m
                                .code()
                                .iter()
                                .filter(|(_, f)| {
                                    matches!(f.origin, crate::machine::code::Origin::Variant { patch, .. } | crate::machine::code::Origin::Helper { patch } if patch == i)
                                })
                                .map(|(id, _)| id)
                                .collect();
                            for id in ids {
                                m.set_released(id, false);
                            }
                        }
                    }
                    let (r, rep) =
                        m.engine_call(oracle, |b| if enable { engine.enable(p, b) } else { engine.disable(p, b) });
                    if r.is_ok() {
                        self.start_record(m, p, if enable { "enable" } else { "disable" });
                    }
                    self.after_call(m, &rep);
                    if idle {
                        if r.is_ok() {
                            self.after_engine(m, oracle, engine, patches, rep.end_ns, timeline);
                        } else {
                            // Refused (nothing changed) or cancelled (nobody switched).
                            let forced: Vec<bool> = patches.iter().map(|p| p.is_forced()).collect();
                            let released = oracle.abort(&forced, m.tasks(), m.code(), now);
                            for f in released {
                                m.set_released(f, true);
                            }
                            oracle.check_released(m.tasks(), m.code(), now);
                        }
                    }
                    r.map_err(|e| e.to_string())
                }
            },
            Action::Reverse => {
                if !idle {
                    oracle.reverse();
                    if let Some(t) = &mut self.current {
                        t.reversed = true;
                    }
                }
                let (r, rep) = m.engine_call(oracle, |b| engine.reverse(b));
                self.after_call(m, &rep);
                self.after_engine(m, oracle, engine, patches, rep.end_ns, timeline);
                r.map_err(|e| e.to_string())
            }
            Action::Force => {
                oracle.force_begin(m.tasks());
                let (r, rep) = m.engine_call(oracle, |b| engine.force(b));
                if let (Ok(_), Some(t)) = (&r, &mut self.current) {
                    t.outcome = "forced".into();
                }
                self.after_call(m, &rep);
                self.after_engine(m, oracle, engine, patches, rep.end_ns, timeline);
                r.map(|_| ()).map_err(|e| e.to_string())
            }
            Action::Load(o) => {
                if m.is_loaded(o) {
                    Err(format!("object {o} is already loaded"))
                } else {
                    m.set_loaded(o, true);
                    oracle.set_loaded(o, true);
                    let (r, rep) = m.engine_call(oracle, |b| engine.object_coming(o, b));
                    self.after_call(m, &rep);
                    if r.is_err() {
                        m.set_loaded(o, false);
                        oracle.set_loaded(o, false);
                    }
                    r.map_err(|e| e.to_string())
                }
            }
            Action::Unload(o) => {
                if !m.is_loaded(o) || o == ObjectId::VMLINUX {
                    Err(format!("object {o} is not a loaded module"))
                } else {
                    let ((), rep) = m.engine_call(oracle, |b| engine.object_going(o, b));
                    self.after_call(m, &rep);
                    m.set_loaded(o, false);
                    oracle.set_loaded(o, false);
                    Ok(())
                }
            }
            Action::Fork(t) => m.fork_task(t, live, oracle).map(|_| ()).ok_or_else(|| format!("task {t} cannot fork")),
            Action::Kill(t) => m.kill_task(t).then_some(()).ok_or_else(|| format!("task {t} cannot be killed")),
            Action::CpuOffline(c) => {
                m.cpu_offline(c, live, oracle).then_some(()).ok_or_else(|| format!("cpu {c} cannot go offline"))
            }
            Action::Nop => Ok(()),
            Action::CpuOnline(c) => {
                m.cpu_online(c, live, oracle).then_some(()).ok_or_else(|| format!("cpu {c} cannot come online"))
            }
        };
        self.outcomes.push(ActionOutcome { at_ns: now, action: format!("{action:?}"), error: result.clone().err() });
        result
    }
}
