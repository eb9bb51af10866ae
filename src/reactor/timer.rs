//! Deadlines for the event loop: a min-heap of `(instant, what to wake)`
//! holding **at most one entry per connection**.
//!
//! The loop asks [`Timers::next_deadline`] for its `Poll::poll` timeout, so it
//! sleeps exactly until the next deadline and never wakes to check a clock.
//! After each poll it pops every due entry with [`Timers::pop_due`].
//!
//! A connection's entry is found through its slab key (an index kept beside
//! the heap), so it can be moved or removed where it sits:
//! * [`Timers::schedule`] for a connection that already has an entry
//!   *replaces* it (an earlier linger deadline takes the place of the idle
//!   one, instead of leaving it behind);
//! * [`Timers::cancel`] removes it when the connection closes.
//!
//! So the heap holds one entry per connection that has a deadline, plus the
//! loop's own few ([`Wake::DrainDeadline`], [`Wake::AcceptResume`]): timer
//! memory follows live connections, whatever the churn. (Before, entries
//! were left to fire and be ignored; an idle entry superseded by a linger
//! one was never counted as stale, and connections the server closed
//! itself left ~70 B each in the heap for the whole idle timeout.)
//!
//! The hot path still does no heap operation per message: a connection
//! re-arms only when the deadline it wants is *earlier* than the one it has
//! (see `Conn::arm`); traffic pushes the idle deadline later, which costs
//! nothing until the entry fires, finds nothing due, and re-arms once.
//! An entry still names the connection's generation as well as its key, so
//! the loop can tell a connection from a later tenant of the same slot.
//!
//! The timers know nothing of sockets; time is passed in.

use std::time::Instant;

/// What a deadline wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Wake {
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
    /// Timer `i` a per-loop factory registered (`LoopContext::every`).
    Every(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    at: Instant,
    /// Tie-breaker so entries with the same instant fire in the order armed.
    seq: u64,
    wake: Wake,
}

impl Entry {
    fn before(&self, other: &Entry) -> bool {
        (self.at, self.seq) < (other.at, other.seq)
    }

    fn conn_key(&self) -> Option<usize> {
        match self.wake {
            Wake::Conn { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// No entry for this slot in [`Timers::slots`].
const NONE: u32 = u32::MAX;

/// A min-heap of deadlines, at most one per connection slot. See the
/// module docs.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// A binary min-heap by `(at, seq)`.
    heap: Vec<Entry>,
    /// Slab key → index of that connection's entry in `heap` (`NONE`: none).
    slots: Vec<u32>,
    seq: u64,
}

impl Timers {
    /// An empty set of timers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arm a deadline. For [`Wake::Conn`], this replaces the entry the
    /// slot already has, if any (whatever its generation): a connection
    /// has one deadline at a time.
    pub(crate) fn schedule(&mut self, at: Instant, wake: Wake) {
        self.seq += 1;
        let entry = Entry {
            at,
            seq: self.seq,
            wake,
        };
        if let Some(key) = entry.conn_key() {
            if key >= self.slots.len() {
                self.slots.resize(key + 1, NONE);
            }
            let i = self.slots[key];
            if i != NONE {
                let i = i as usize;
                let earlier = entry.before(&self.heap[i]);
                self.heap[i] = entry;
                if earlier {
                    self.sift_up(i);
                } else {
                    self.sift_down(i);
                }
                return;
            }
        }
        self.heap.push(entry);
        let i = self.heap.len() - 1;
        self.place(i);
        self.sift_up(i);
    }

    /// Remove the entry of connection slot `key`, if it has one (the
    /// connection closed).
    pub fn cancel(&mut self, key: usize) {
        let Some(&i) = self.slots.get(key) else {
            return;
        };
        if i != NONE {
            self.remove(i as usize);
        }
    }

    /// The earliest armed deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.first().map(|e| e.at)
    }

    /// Remove and return one entry whose deadline is at or before `now`,
    /// with the instant it was armed for.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Wake)> {
        match self.heap.first() {
            Some(e) if e.at <= now => {
                let e = self.remove(0);
                Some((e.at, e.wake))
            }
            _ => None,
        }
    }

    /// Number of armed entries (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Heap bytes held (for tests).
    #[cfg(test)]
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Entry>()
            + self.slots.capacity() * std::mem::size_of::<u32>()
    }

    /// Take the entry at `i` out, keeping the heap ordered.
    fn remove(&mut self, i: usize) -> Entry {
        let gone = self.heap.swap_remove(i);
        if let Some(key) = gone.conn_key() {
            self.slots[key] = NONE;
        }
        if i < self.heap.len() {
            self.place(i);
            if i > 0 && self.heap[i].before(&self.heap[(i - 1) / 2]) {
                self.sift_up(i);
            } else {
                self.sift_down(i);
            }
        }
        // A burst of connections grew the heap: give the memory back once
        // it is mostly empty, so it follows the live connections.
        if self.heap.capacity() > 1024 && self.heap.len() < self.heap.capacity() / 4 {
            self.heap.shrink_to(self.heap.capacity() / 2);
        }
        gone
    }

    /// Record that the entry at `i` is where its slot's index says.
    fn place(&mut self, i: usize) {
        if let Some(key) = self.heap[i].conn_key() {
            self.slots[key] = i as u32;
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.heap[i].before(&self.heap[parent]) {
                break;
            }
            self.heap.swap(i, parent);
            self.place(i);
            i = parent;
        }
        self.place(i);
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let left = 2 * i + 1;
            if left >= self.heap.len() {
                break;
            }
            let right = left + 1;
            let child = if right < self.heap.len() && self.heap[right].before(&self.heap[left]) {
                right
            } else {
                left
            };
            if !self.heap[child].before(&self.heap[i]) {
                break;
            }
            self.heap.swap(i, child);
            self.place(i);
            i = child;
        }
        self.place(i);
    }

    /// Check the heap order and the slot index (tests).
    #[cfg(test)]
    fn check(&self) {
        for i in 1..self.heap.len() {
            assert!(!self.heap[i].before(&self.heap[(i - 1) / 2]), "heap order");
        }
        for (key, &i) in self.slots.iter().enumerate() {
            if i != NONE {
                assert_eq!(self.heap[i as usize].conn_key(), Some(key), "slot {key}");
            }
        }
        let conns = self.heap.iter().filter(|e| e.conn_key().is_some()).count();
        let indexed = self.slots.iter().filter(|&&i| i != NONE).count();
        assert_eq!(conns, indexed, "every connection entry is indexed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;
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

    /// Slot 4 is closed and reused by a new connection: the old
    /// connection's entry is cancelled at its close, and the new one's
    /// fires with the new generation.
    #[test]
    fn a_closed_connection_s_entry_is_gone_before_its_slot_is_reused() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(t0 + Duration::from_millis(5), conn(4, 7)); // A in slot 4
        timers.cancel(4); // A closed
        timers.schedule(t0 + Duration::from_millis(50), conn(4, 8)); // B accepted into slot 4
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(10)), None);
        let fired = timers.pop_due(t0 + Duration::from_millis(60));
        assert_eq!(fired.map(|(_, w)| w), Some(conn(4, 8)), "B's own timer");
    }

    /// The idle deadline, then the earlier linger one: the linger entry
    /// takes the idle one's place (before, both stayed).
    #[test]
    fn an_earlier_deadline_replaces_the_connection_s_entry() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(t0 + Duration::from_secs(300), conn(1, 1)); // idle
        timers.schedule(t0 + Duration::from_secs(60), conn(2, 1));
        timers.schedule(t0 + Duration::from_secs(5), conn(1, 1)); // linger
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(5)));
        // And a later one moves it back (the heap stays ordered).
        timers.schedule(t0 + Duration::from_secs(90), conn(1, 1));
        let order: Vec<Wake> = std::iter::from_fn(|| timers.pop_due(t0 + Duration::from_secs(999)))
            .map(|(_, w)| w)
            .collect();
        assert_eq!(order, [conn(2, 1), conn(1, 1)]);
    }

    /// What the loop does for connections the server closes itself
    /// (HTTP/1.0, `Connection: close`, QUIT): arm the idle deadline, arm
    /// the earlier linger one, close. 100 000 of them, with a few hundred
    /// open at any time: the heap holds one entry per open connection
    /// (plus the loop's own), never the closed ones, and its memory
    /// follows.
    #[test]
    fn after_churn_entries_follow_live_connections() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(t0 + Duration::from_secs(10), Wake::DrainDeadline);
        let mut live: Vec<(usize, u64)> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut next_key = 0;
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut peak = 0;
        for generation in 1..=100_000_u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let now = t0 + Duration::from_micros(generation * 50);
            // Accept one: its idle deadline.
            let key = free.pop().unwrap_or_else(|| {
                next_key += 1;
                next_key - 1
            });
            timers.schedule(now + Duration::from_secs(300), conn(key, generation));
            live.push((key, generation));
            // Now and then one (any) ends: FIN, linger armed, then closed.
            while live.len() > 300 || (rng % 3 == 0 && !live.is_empty()) {
                let (key, generation) = live.swap_remove((rng as usize) % live.len());
                timers.schedule(now + Duration::from_secs(5), conn(key, generation));
                timers.cancel(key);
                free.push(key);
                rng = rng.rotate_left(7);
            }
            assert!(timers.len() <= live.len() + 1, "{} entries", timers.len());
            peak = peak.max(timers.len());
        }
        timers.check();
        assert_eq!(timers.len(), live.len() + 1);
        for (key, _) in live.drain(..) {
            timers.cancel(key);
        }
        assert_eq!(timers.len(), 1, "only the drain deadline is left");
        let (bytes, most) = (
            timers.capacity_bytes(),
            2 * (peak + 64) * size_of::<Entry>(),
        );
        assert!(bytes <= most, "{bytes} B held for {peak} entries at most");
    }

    /// Random schedules, replacements, cancels and pops against a plain
    /// list: the same entries come out in the same order.
    #[test]
    fn random_operations_match_a_sorted_list() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let mut model: Vec<(Instant, u64, Wake)> = Vec::new();
        let mut seq = 0;
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for step in 0..20_000_u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = (rng % 64) as usize;
            let at = t0 + Duration::from_millis(rng % 1000);
            match rng % 7 {
                0..=2 => {
                    seq += 1;
                    let wake = if rng % 50 == 0 {
                        Wake::AcceptResume
                    } else {
                        conn(key, step)
                    };
                    if let Wake::Conn { key, .. } = wake {
                        model.retain(
                            |(_, _, w)| !matches!(w, Wake::Conn { key: k, .. } if *k == key),
                        );
                    }
                    model.push((at, seq, wake));
                    timers.schedule(at, wake);
                }
                3 => {
                    model.retain(|(_, _, w)| !matches!(w, Wake::Conn { key: k, .. } if *k == key));
                    timers.cancel(key);
                }
                _ => {
                    model.sort();
                    let expected = model
                        .first()
                        .filter(|(due, _, _)| *due <= at)
                        .map(|&(due, _, w)| (due, w));
                    if expected.is_some() {
                        model.remove(0);
                    }
                    assert_eq!(timers.pop_due(at), expected, "step {step}");
                }
            }
            assert_eq!(timers.len(), model.len());
        }
        timers.check();
    }
}
