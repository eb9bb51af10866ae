//! `--max-conns`: one count of open connections for the whole process,
//! however many loops serve it.
//!
//! A [`ConnLimit`] is shared (behind an `Arc`) by every loop. A loop
//! reserves a slot *before* each accept and gives it back when that
//! connection closes, or at once when the accept found nothing. Only accept
//! and close touch it: the per-message path never does.
//!
//! A loop that cannot reserve a slot stops accepting, so the clients wait in
//! the kernel's backlog (not accepted and dropped). It must start again when
//! *any* loop frees a slot, and the shared listening socket raises no new
//! edge for connections already queued, so the loop *parks*: it leaves its
//! [`ShutdownHandle`] here. Whoever frees a slot wakes every parked loop
//! through that handle (its waker, with the "accept again" request bit); each
//! tries to reserve again, the winner accepts, the others park again. No
//! loop spins (a parked loop sleeps in `epoll_wait` until woken) and no
//! queued client is stranded: a loop parks *before* it looks at the count a
//! second time, and a releaser frees the slot *before* it looks for parked
//! loops (both sequentially consistent), so at least one of the two sees
//! the other.
//!
//! A slot is a value, not a number to remember: `ConnLimit::try_take`
//! hands out a [`Slot`] that gives itself back when dropped, so a
//! connection that never makes it into the loop (the accept found nothing,
//! its stream could not be built, its peer was refused) cannot keep one.
//! Once the connection is in the loop's slab its slot moves into the loop's
//! [`Held`] — one count for all of them, which keeps a connection's own
//! memory what it was — and comes out again when the loop closes it, or
//! all at once when the loop is dropped with connections still open.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::reactor::control::ShutdownHandle;

/// The process-wide connection count and its limit.
#[derive(Debug)]
pub struct ConnLimit {
    max: usize,
    open: AtomicUsize,
    /// Set while `parked` may hold a loop: lets `release` skip the lock.
    any_parked: AtomicBool,
    parked: Mutex<Vec<ShutdownHandle>>,
    /// The "limit reached" warning was logged and not yet answered by
    /// "below the limit again": one pair per episode for the process.
    warned: AtomicBool,
}

impl ConnLimit {
    /// A limit of `max` connections open at once (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            open: AtomicUsize::new(0),
            any_parked: AtomicBool::new(false),
            parked: Mutex::new(Vec::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open (and slots reserved for accepts under way) now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Take a slot if one is free.
    pub(crate) fn try_reserve(&self) -> bool {
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Take a slot if one is free: it is given back when the [`Slot`] is
    /// dropped.
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.try_reserve().then(|| Slot {
            limit: Arc::clone(self),
        })
    }

    /// Take a slot; if there is none, park the loop `handle` wakes, to be
    /// woken when one frees, and look once more (a slot freed between the
    /// first look and the parking would otherwise be missed).
    pub(crate) fn take_or_park(self: &Arc<Self>, handle: ShutdownHandle) -> Option<Slot> {
        if let Some(slot) = self.try_take() {
            return Some(slot);
        }
        self.park(handle);
        self.try_take()
    }

    /// Give a slot back and wake every parked loop. Only for a slot taken
    /// with `try_reserve`; a [`Slot`] gives itself back.
    pub fn release(&self) {
        let before = self.open.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(before > 0, "released more slots than were reserved");
        if self.any_parked.load(Ordering::SeqCst) {
            let parked = {
                let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
                self.any_parked.store(false, Ordering::SeqCst);
                std::mem::take(&mut *parked)
            };
            for handle in parked {
                handle.accept_again();
            }
        }
    }

    /// A loop found no slot: wake it through `handle` at the next release.
    /// The caller must try [`try_reserve`](Self::try_reserve) once more
    /// after this, or a slot freed just before could be missed.
    pub(crate) fn park(&self, handle: ShutdownHandle) {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if !parked.iter().any(|h| h.same_loop(&handle)) {
            parked.push(handle);
        }
        self.any_parked.store(true, Ordering::SeqCst);
    }

    /// Record that a client is left waiting; true the first time in an
    /// episode (the caller warns).
    pub(crate) fn start_warning(&self) -> bool {
        !self.warned.swap(true, Ordering::SeqCst)
    }

    /// Accepting again after a warning; true once per episode (the caller
    /// says so).
    pub(crate) fn end_warning(&self) -> bool {
        self.warned.swap(false, Ordering::SeqCst)
    }
}

/// One connection's place in the count, from just before its `accept`
/// until it is closed. Dropping it gives the place back (and wakes the
/// loops parked at the limit).
#[must_use = "dropping a slot gives it back at once"]
#[derive(Debug)]
pub struct Slot {
    limit: Arc<ConnLimit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limit.release();
    }
}

/// The slots of the connections one loop holds, one per slab entry: a
/// count rather than a [`Slot`] in each connection, so that an idle
/// connection stays one slab entry of the documented size. Each slot comes
/// back out as a [`Slot`] when its connection closes; whatever is still
/// held when the loop is dropped is given back then.
#[derive(Debug)]
pub struct Held {
    limit: Arc<ConnLimit>,
    count: usize,
}

impl Held {
    /// Nothing held yet, against `limit`.
    pub fn new(limit: Arc<ConnLimit>) -> Self {
        Self { limit, count: 0 }
    }

    /// The limit the slots count against.
    pub fn limit(&self) -> &Arc<ConnLimit> {
        &self.limit
    }

    /// How many slots are held.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Keep `slot` for a connection that entered the loop.
    pub fn keep(&mut self, slot: Slot) {
        debug_assert!(
            Arc::ptr_eq(&slot.limit, &self.limit),
            "a slot of another limit"
        );
        std::mem::forget(slot); // its place is now in `count`
        self.count += 1;
    }

    /// The slot of a connection that left the loop; dropping it gives it back.
    pub fn take(&mut self) -> Option<Slot> {
        self.count = self.count.checked_sub(1)?;
        Some(Slot {
            limit: Arc::clone(&self.limit),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        while self.take().is_some() {}
    }
}

/// The `--max-conns` in force: what was asked, lowered to what
/// `RLIMIT_NOFILE` allows besides the `held` descriptors of the event loops
/// (logged at warn when it is) and to the most tokens a loop can give out.
/// Computed once per process, before any loop starts, and printed in the
/// start-up line.
pub(crate) fn effective_max_conns(requested: usize, held: u64, per_conn: u64) -> usize {
    let mut max = requested.max(1);
    if let Some(allowed) = crate::base::rlimit::max_conns_allowed(held, per_conn) {
        if max > allowed {
            log::warn!("max-conns {max} is above what RLIMIT_NOFILE allows; using {allowed}");
            max = allowed;
        }
    }
    max.min(crate::reactor::tokens::LISTENERS - crate::reactor::tokens::MAX_LISTENERS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reserved_up_to_the_limit_and_given_back() {
        let limit = ConnLimit::new(2);
        assert!(limit.try_reserve());
        assert!(limit.try_reserve());
        assert!(!limit.try_reserve(), "a third slot past max 2");
        assert_eq!(limit.open(), 2);
        limit.release();
        assert_eq!(limit.open(), 1);
        assert!(limit.try_reserve());
        assert!(!limit.try_reserve());
    }

    #[test]
    fn a_slot_gives_itself_back_wherever_it_is_dropped() {
        let limit = Arc::new(ConnLimit::new(2));
        let first = limit.try_take().expect("a free slot");
        let second = limit.try_take().expect("a free slot");
        assert!(limit.try_take().is_none(), "a third slot past max 2");
        drop(first);
        assert_eq!(limit.open(), 1);
        let mut held = Held::new(Arc::clone(&limit));
        held.keep(second);
        held.keep(limit.try_take().expect("the freed slot"));
        assert_eq!((limit.open(), held.count()), (2, 2));
        drop(held.take());
        assert_eq!(limit.open(), 1);
        drop(held); // a loop dropped with a connection still open
        assert_eq!(limit.open(), 0);
    }

    #[test]
    fn the_limit_warning_is_once_per_episode() {
        let limit = ConnLimit::new(1);
        assert!(limit.start_warning());
        assert!(!limit.start_warning());
        assert!(limit.end_warning());
        assert!(!limit.end_warning());
        assert!(limit.start_warning());
    }
}
