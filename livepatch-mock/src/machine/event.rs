//! The event queue: a min-heap of timed events, ties broken by insertion order, so a run is
//! a pure function of its seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Something that happens at a simulated time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// The task on `cpu` reaches the end of its current step (`gen` filters stale steps).
    Step {
        /// The CPU.
        cpu: u32,
        /// The CPU's step generation when this was queued.
        gen: u32,
    },
    /// A timed sleep of `task` ends (`gen` filters sleeps that ended earlier).
    Wake {
        /// The task index.
        task: u32,
        /// The task's sleep generation.
        gen: u32,
    },
    /// A fake signal (or kthread wake-up) reaches `task`.
    Signal {
        /// The task index.
        task: u32,
    },
    /// The write of an unpinned check lands (see [`crate::backend::BackendConfig::pin`]).
    LateSwitch {
        /// Index of the pending write in the machine's table.
        id: u32,
    },
    /// The engine's next completion attempt (`gen` filters superseded retries).
    Retry {
        /// The retry generation.
        gen: u32,
    },
    /// The next step of the scenario's script.
    Script,
    /// Record how many tasks are still in the old universe.
    Sample,
    /// Reclaim freed shadow variables after a grace period.
    Reclaim,
}

/// The queue.
#[derive(Debug, Default)]
pub struct EventQueue {
    heap: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
}

impl EventQueue {
    /// Queues `event` at `time`.
    pub fn push(&mut self, time: u64, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse((time, self.seq, event)));
    }

    /// The earliest event.
    pub fn pop(&mut self) -> Option<(u64, Event)> {
        self.heap.pop().map(|Reverse((t, _, e))| (t, e))
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Number of queued events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_then_insertion_order() {
        let mut q = EventQueue::default();
        q.push(5, Event::Script);
        q.push(1, Event::Sample);
        q.push(5, Event::Retry { gen: 1 });
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), Some((1, Event::Sample)));
        assert_eq!(q.pop(), Some((5, Event::Script)));
        assert_eq!(q.pop(), Some((5, Event::Retry { gen: 1 })));
        assert!(q.is_empty() && q.pop().is_none());
    }
}
