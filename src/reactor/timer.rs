//! Deadlines for the event loop: a min-heap of `(instant, what to wake)`.
//!
//! The loop asks [`Timers::next_deadline`] for its `Poll::poll` timeout, so it
//! sleeps exactly until the next deadline and never wakes to check a clock.
//! After each poll it pops every due entry with [`Timers::pop_due`].
//!
//! Entries are never removed early (a heap cannot do that cheaply). Instead a
//! connection's entry names its slab key *and generation*: slab keys are
//! reused, so when the entry fires the loop compares the generation with the
//! connection now in that slot and ignores a stale one. A connection re-arms
//! only when its wanted deadline is *earlier* than the one already armed; a
//! later one (an idle timer pushed back by traffic) costs nothing until the
//! armed entry fires, finds nothing due, and re-arms once. Stale entries of
//! closed connections are swept by [`Timers::compact`] when they outnumber the
//! live ones, so churn cannot grow the heap without bound.
//!
//! The timers know nothing of sockets; time is passed in.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wake {
    /// The connection in slab slot `key`, if it still has generation `generation`.
    Conn {
        /// Slab key (the connection's `Token`).
        key: usize,
        /// The generation the connection had when the timer was armed.
        generation: u64,
    },
    /// The graceful-shutdown deadline: force-close whatever is left.
    DrainDeadline,
    /// The end of an accept back-off pause (after `EMFILE` and friends).
    AcceptResume,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: Instant,
    seq: u64,
    wake: Wake,
}

/// A min-heap of deadlines. See the module docs for the generation rule.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    /// Tie-breaker so entries with the same instant fire in the order armed.
    seq: u64,
}

impl Timers {
    /// An empty set of timers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arm a deadline.
    pub fn schedule(&mut self, at: Instant, wake: Wake) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            wake,
        }));
    }

    /// The earliest armed deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Remove and return one entry whose deadline is at or before `now`,
    /// with the instant it was armed for.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Wake)> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => self.heap.pop().map(|Reverse(e)| (e.at, e.wake)),
            _ => None,
        }
    }

    /// Number of armed entries, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no entry is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drop every entry for which `live` says no, and give back the memory.
    pub fn compact(&mut self, mut live: impl FnMut(&Wake) -> bool) {
        self.heap.retain(|Reverse(e)| live(&e.wake));
        self.heap.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn conn(key: usize, generation: u64) -> Wake {
        Wake::Conn { key, generation }
    }

    #[test]
    fn fires_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(t0 + Duration::from_millis(30), conn(3, 1));
        timers.schedule(t0 + Duration::from_millis(10), conn(1, 1));
        timers.schedule(t0 + Duration::from_millis(20), Wake::DrainDeadline);

        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(timers.pop_due(t0), None, "nothing is due yet");
        let at = t0 + Duration::from_millis(25);
        assert_eq!(timers.pop_due(at).map(|(_, w)| w), Some(conn(1, 1)));
        assert_eq!(
            timers.pop_due(at).map(|(_, w)| w),
            Some(Wake::DrainDeadline)
        );
        assert_eq!(timers.pop_due(at), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn equal_deadlines_fire_in_the_order_armed() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(t0, conn(9, 1));
        timers.schedule(t0, conn(2, 1));
        assert_eq!(timers.pop_due(t0).map(|(_, w)| w), Some(conn(9, 1)));
        assert_eq!(timers.pop_due(t0).map(|(_, w)| w), Some(conn(2, 1)));
    }

    /// Slot 4 is closed and reused by a new connection before the old
    /// connection's timer fires: the entry still names the old generation, so
    /// the owner of slot 4 can tell it is not its own.
    #[test]
    fn a_stale_timer_names_the_old_generation_of_a_reused_slot() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let mut slot_generation = 7_u64; // connection A in slot 4
        timers.schedule(t0 + Duration::from_millis(5), conn(4, slot_generation));
        slot_generation = 8; // A closed, B accepted into slot 4
        timers.schedule(t0 + Duration::from_millis(50), conn(4, slot_generation));

        let fired = timers
            .pop_due(t0 + Duration::from_millis(10))
            .map(|(_, w)| w);
        let is_current = |w: Option<Wake>| matches!(w, Some(Wake::Conn { key: 4, generation }) if generation == slot_generation);
        assert!(fired.is_some() && !is_current(fired), "A's timer is stale");
        let fired = timers
            .pop_due(t0 + Duration::from_millis(60))
            .map(|(_, w)| w);
        assert!(is_current(fired), "B's own timer does fire");
    }

    #[test]
    fn compact_drops_stale_entries() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        for key in 0..100 {
            timers.schedule(t0, conn(key, 1));
        }
        timers.compact(|w| matches!(w, Wake::Conn { key, .. } if key % 10 == 0));
        assert_eq!(timers.len(), 10);
    }
}
