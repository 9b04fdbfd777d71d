//! The brute-force reference: which patches are registered, which one is in transition, and
//! from that, by linear scans over the descriptors, what every call must run, what the index
//! must hold and which code a transition switches away from.

use livepatch_core::redirect::Redirect;
use livepatch_core::{CodeAddr, CodeRange, Patch, PatchState};

/// The reference state of an engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reference {
    /// Registered patches (indices into the pool), oldest first.
    pub registered: Vec<usize>,
    /// The patch in transition and the universe every task must reach.
    pub transition: Option<(usize, PatchState)>,
    /// Originals that got a nop when the patch in transition (a replace) was enabled, or when
    /// their object loaded during that transition (those of an object gone since are not
    /// nopped any more: [`Reference::away`] skips them).
    pub nops: Vec<CodeRange>,
    /// Bit `i`: object `i` is not loaded.
    pub unloaded: u32,
}

impl Reference {
    /// Whether object `id` is loaded.
    pub fn loaded(&self, id: u32) -> bool {
        id == 0 || id >= 32 || self.unloaded & (1 << id) == 0
    }

    /// The `(old, new)` pairs of patch `p` in loaded objects (the fuzzed patches' functions
    /// have fixed addresses: always resolved).
    pub fn funcs(&self, patches: &[Patch<'_>], p: usize) -> std::vec::IntoIter<(CodeRange, CodeRange)> {
        patches[p]
            .funcs()
            .filter(|(o, _)| self.loaded(o.id().0))
            .filter_map(|(_, f)| Some((f.old()?, f.new_code())))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The patches whose code a task of universe `state` runs, oldest first: everything
    /// registered (without the patch in transition for `Unpatched`), cut before the newest
    /// cumulative patch.
    pub fn world(&self, patches: &[Patch<'_>], state: PatchState) -> Vec<usize> {
        let mut list: Vec<usize> = self.registered.clone();
        if state == PatchState::Unpatched {
            if let Some((p, _)) = self.transition {
                list.retain(|&q| q != p);
            }
        }
        if let Some(last_replace) = list.iter().rposition(|&q| patches[q].is_replace()) {
            list.drain(..last_replace);
        }
        list
    }

    /// The variant a world runs for the original `old` (`None`: the original).
    pub fn code_in(&self, patches: &[Patch<'_>], world: &[usize], old: CodeRange) -> Option<CodeRange> {
        world.iter().rev().find_map(|&p| self.funcs(patches, p).find(|(o, _)| *o == old).map(|(_, n)| n))
    }

    /// Where a call to `old` goes for a task in `state` (`Idle`: outside a transition).
    pub fn redirect(&self, patches: &[Patch<'_>], state: PatchState, old: CodeRange) -> Redirect {
        match self.code_in(patches, &self.world(patches, state), old) {
            Some(code) => Redirect::Variant(code.start()),
            None => Redirect::Original,
        }
    }

    /// Every original function some registered patch replaces.
    pub fn originals(&self, patches: &[Patch<'_>]) -> Vec<CodeRange> {
        let mut out: Vec<CodeRange> = Vec::new();
        for &p in &self.registered {
            for (old, _) in self.funcs(patches, p) {
                if !out.contains(&old) {
                    out.push(old);
                }
            }
        }
        out
    }

    /// The ranges the index must hold: each replaced original and every registered variant
    /// of it, sorted.
    pub fn index(&self, patches: &[Patch<'_>]) -> Vec<CodeRange> {
        let mut out = self.originals(patches);
        for &p in &self.registered {
            out.extend(self.funcs(patches, p).map(|(_, new)| new));
        }
        out.sort();
        out
    }

    /// The code being switched away from in the current transition.
    pub fn away(&self, patches: &[Patch<'_>]) -> Vec<CodeRange> {
        let Some((p, target)) = self.transition else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let nops = self.nops.iter().filter(|&&o| self.loaded(crate::patches::object_of(o)));
        let touched: Vec<(CodeRange, Option<CodeRange>)> =
            self.funcs(patches, p).map(|(o, n)| (o, Some(n))).chain(nops.map(|&o| (o, None))).collect();
        // What is below the patch's node on each stack: the patches registered before it
        // (for a patch in the middle of a stack — a reversed disable — that is not what the
        // old universe runs, but it is what the engine marks, conservatively).
        let pos = self.registered.iter().position(|&q| q == p).unwrap_or(self.registered.len());
        let below = &self.registered[..pos];
        for (old, own) in touched {
            let code = match target {
                PatchState::Patched => self.code_in(patches, below, old).unwrap_or(old),
                _ => own.unwrap_or(old),
            };
            out.push(code);
        }
        out
    }

    /// The originals that get a nop when replace patch `p` is enabled now.
    pub fn nops_for(&self, patches: &[Patch<'_>], p: usize) -> Vec<CodeRange> {
        if !patches[p].is_replace() {
            return Vec::new();
        }
        let covered: Vec<CodeRange> = self.funcs(patches, p).map(|(o, _)| o).collect();
        self.originals(patches).into_iter().filter(|o| !covered.contains(o)).collect()
    }
}

/// Whether `addr` lies in any of `ranges`.
pub fn hits(ranges: &[CodeRange], addr: CodeAddr) -> bool {
    ranges.iter().any(|r| r.contains(addr))
}

/// How a brute-force walk of a stack ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkOutcome {
    /// Frame `i` is in code being switched away from.
    Away(usize),
    /// The walk fails as too deep.
    TooDeep,
    /// The walk fails as unreliable.
    Unreliable,
    /// The stack is clean.
    Clean,
}

/// The brute-force stack check of a task with `stack` under walk `mode` and `max_depth`.
pub fn walk_outcome(
    stack: &[CodeAddr],
    mode: crate::backend::WalkMode,
    max_depth: usize,
    away: &[CodeRange],
) -> WalkOutcome {
    use crate::backend::WalkMode;
    if mode == WalkMode::Eager && stack.len() > max_depth {
        return WalkOutcome::TooDeep;
    }
    for (i, &addr) in stack.iter().enumerate() {
        if i >= max_depth {
            return WalkOutcome::TooDeep;
        }
        if mode == WalkMode::FailAt(i as u8) && i < 256 {
            return WalkOutcome::Unreliable;
        }
        if hits(away, addr) {
            return WalkOutcome::Away(i);
        }
    }
    WalkOutcome::Clean
}
