//! Kick pacing: which completion attempts kick their stragglers (the kernel's
//! `klp_send_signals`), with a backoff for stragglers that a kick does not move.
//!
//! A kick is a fake signal (user tasks) or a wake-up (kthreads). In the kernel neither is lost:
//! the signal stays pending until the task passes exit to user mode, and a kthread woken from
//! its interruptible sleep re-checks its wait condition. So when a kick round leaves exactly
//! the same stragglers blocked for the same reasons — a kthread whose wait loop went back to
//! sleep in the same patched function — kicking them again at full cadence cannot help; it only
//! costs them a wake-up each time. The pacer remembers, per transition and without any per-task
//! memory, a digest of the set of stragglers each pass would kick (task id and blocking
//! function); a round whose set is unchanged one pass later backs off to
//! [`Policy::kick_backoff_ns`] (a lossy backend still gets its lost kicks re-sent, at Linux's
//! own cadence), and any change in the set (a straggler switched, a new one appeared, one is
//! blocked elsewhere) restores [`Policy::signal_every`]'s cadence.

use crate::backend::Task;
use crate::model::Policy;
use crate::sweep::StallReason;

/// A digest of a set of kick candidates: order-independent, so two passes that visit the same
/// stragglers in another order agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct KickSet {
    count: u32,
    digest: u64,
}

impl KickSet {
    /// Adds a straggler the pass would kick, blocked for `reason`.
    pub(super) fn add<T: Task>(&mut self, task: &T, reason: StallReason) {
        let why = match reason {
            StallReason::OnStack { slot, .. } => 0x100 | u64::from(slot.0),
            StallReason::Running => 1,
            StallReason::Unreliable(_) => 2,
            StallReason::TooDeep => 3,
            StallReason::AwaitingSwitchPoint => 4,
            StallReason::Raced => 5,
        };
        self.count += 1;
        self.digest = self.digest.wrapping_add(mix(u64::from(task.id().0) << 32 ^ why));
    }
}

/// SplitMix64's finalizer: spreads the key so that sums of different sets rarely collide.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What one transition remembers between passes to pace its kicks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct KickPacer {
    /// The pass of the last kick round; 0 before the first.
    last_round: u32,
    /// The candidates that round kicked.
    kicked: KickSet,
    /// Whether that set was found unchanged by a later pass: the next round waits for the
    /// backoff interval.
    backed_off: bool,
}

impl KickPacer {
    /// Whether attempt `pass` kicks its stragglers.
    pub(super) fn due(&self, policy: &Policy, pass: u32) -> bool {
        let Some(n) = policy.signal_every.filter(|&n| n > 0) else {
            return false;
        };
        // Every `n`-th unsuccessful pass, counting from the first retry (Linux's cadence).
        let cadence = pass > 1 && (pass - 1) % n == 0;
        let Some(backoff_ns) = policy.kick_backoff_ns else {
            return cadence;
        };
        if self.last_round == 0 {
            return cadence;
        }
        let since = pass.saturating_sub(self.last_round);
        if self.backed_off {
            // The stragglers did not change since the last round: once per backoff interval.
            let wait = u32::try_from(backoff_ns / policy.retry_delay_ns.max(1)).unwrap_or(u32::MAX).max(n);
            since >= wait
        } else {
            // A pass must have looked at the stragglers after the last round before the next
            // one, so that an unchanged set is noticed before it is kicked again.
            cadence && since >= 2
        }
    }

    /// After attempt `pass`: `seen` is what it would have kicked, `kicked` whether it did.
    pub(super) fn end_pass(&mut self, pass: u32, seen: KickSet, kicked: bool) {
        if kicked {
            self.last_round = pass;
            self.kicked = seen;
            // A retry of an unchanged set stays backed off.
        } else if self.last_round != 0 && pass > self.last_round {
            // One pass or more after the round: is anything different?
            self.backed_off = seen == self.kicked;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    fn set(members: &[(u32, u64)]) -> KickSet {
        let mut s = KickSet::default();
        for &(task, why) in members {
            s.count += 1;
            s.digest = s.digest.wrapping_add(mix(u64::from(task) << 32 ^ why));
        }
        s
    }

    /// Drives the pacer over `passes` attempts that all see `seen(pass)`; returns the kick rounds.
    fn rounds(policy: &Policy, passes: u32, seen: impl Fn(u32) -> KickSet) -> Vec<u32> {
        let mut pacer = KickPacer::default();
        let mut out = Vec::new();
        for pass in 1..=passes {
            let due = pacer.due(policy, pass);
            if due {
                out.push(pass);
            }
            pacer.end_pass(pass, seen(pass), due);
        }
        out
    }

    #[test]
    fn an_unchanged_straggler_is_kicked_at_the_backoff_interval() {
        // A pass per millisecond: the backoff is 15 000 passes.
        let stuck = set(&[(7, 0x105)]);
        let r = rounds(&Policy::IMPROVED, 60_000, |_| stuck);
        assert_eq!(r, [2, 15_002, 30_002, 45_002]);
    }

    #[test]
    fn any_change_restores_the_cadence() {
        // The set shrinks every pass (stragglers switching): every other pass kicks, as a
        // round needs one pass to look at its effect.
        let r = rounds(&Policy::IMPROVED, 9, |pass| set(&[(1, 1), (pass, 1)]));
        assert_eq!(r, [2, 4, 6, 8]);
        // Stuck, then a new straggler appears at pass 100: kicked at once.
        let r = rounds(&Policy::IMPROVED, 200, |pass| if pass < 100 { set(&[(1, 1)]) } else { set(&[(1, 1), (2, 1)]) });
        assert_eq!(r, [2, 101]);
        // The same task blocked in another function is a change too.
        let r = rounds(&Policy::IMPROVED, 200, |pass| set(&[(1, if pass < 50 { 0x101 } else { 0x102 })]));
        assert_eq!(r, [2, 51]);
    }

    #[test]
    fn without_a_backoff_the_cadence_is_linux() {
        let stuck = set(&[(7, 0x105)]);
        let r = rounds(&Policy::LINUX_6_12, 50, |_| stuck);
        assert_eq!(r, [16, 31, 46]);
        let none = Policy { signal_every: None, ..Policy::IMPROVED };
        assert!(rounds(&none, 50, |_| stuck).is_empty());
    }
}
