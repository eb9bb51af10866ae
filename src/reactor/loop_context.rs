//! What a library user's per-loop factory is given: the loop's identity,
//! and the means to build state that lives on that loop — counters that
//! reach `/metrics`, timers that fire on the loop's thread.
//!
//! A supervisor runs each loop on a thread of its own and calls the
//! factory *there* (see `Supervisor::run_per_loop`), so what the factory
//! builds need not be `Send`: a protocol may share an `Rc<RefCell<…>>` with
//! the other connections of its loop, lock-free, and a timer registered
//! here may tick that state (an expiry sweep, a heartbeat).
//!
//! ```
//! use std::rc::Rc;
//! use std::cell::Cell;
//! use std::time::Duration;
//! use tcp_reactor::reactor::loop_context::LoopContext;
//! use tcp_reactor::proto::Echo;
//!
//! // What a factory passed to `Supervisor::run_per_loop` does.
//! fn on_loop(ctx: &LoopContext) -> impl FnMut() -> Echo {
//!     let opened = ctx.counter("app_connections_total", "Connections this app served.");
//!     let ticks = Rc::new(Cell::new(0u64)); // this loop's own state: no lock
//!     let t = Rc::clone(&ticks);
//!     ctx.every(Duration::from_secs(1), move |_now| t.set(t.get() + 1));
//!     move || {
//!         opened.inc();
//!         Echo
//!     }
//! }
//! # let ctx = LoopContext::new(0, 1);
//! # let mut make = on_loop(&ctx);
//! # let _ = make();
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::base::counters::{valid_metric_name, UserCount};

/// One loop's identity and the per-loop things a factory may register.
pub struct LoopContext {
    id: usize,
    loops: usize,
    extras: RefCell<Extras>,
}

/// What makes a loop's protocols: a closure, and for a loop a supervisor
/// runs, what its factory registered on the [`LoopContext`].
#[doc(hidden)]
pub trait MakeProtocol<P> {
    /// A protocol state for a new connection.
    fn make(&mut self) -> P;

    /// The counters and timers registered for this loop, if any.
    fn extras(&mut self) -> Option<&mut Extras> {
        None
    }

    /// [`MakeProtocol::extras`], to read.
    fn extras_ref(&self) -> Option<&Extras> {
        None
    }
}

/// A lone server's factory: any closure that can move between threads.
impl<P> MakeProtocol<P> for Box<dyn FnMut() -> P + Send> {
    fn make(&mut self) -> P {
        self()
    }
}

/// A supervised loop's factory, built on its own thread, with what it
/// registered on its context.
pub(crate) struct OnLoop<G> {
    pub(crate) make: G,
    pub(crate) extras: Extras,
}

impl<P, G: FnMut() -> P> MakeProtocol<P> for OnLoop<G> {
    fn make(&mut self) -> P {
        (self.make)()
    }

    fn extras(&mut self) -> Option<&mut Extras> {
        Some(&mut self.extras)
    }

    fn extras_ref(&self) -> Option<&Extras> {
        Some(&self.extras)
    }
}

/// What a factory registered: the loop takes it over when it starts.
#[derive(Default)]
#[doc(hidden)]
pub struct Extras {
    pub(crate) counters: Vec<(&'static str, &'static str, Counter)>,
    pub(crate) timers: Vec<LoopTimer>,
}

/// A timer of the loop's own (see [`LoopContext::every`]).
pub(crate) struct LoopTimer {
    pub(crate) every: Duration,
    pub(crate) tick: Box<dyn FnMut(Instant)>,
}

/// A counter that lives on one loop: bumped without a lock or an atomic
/// (it is never shared with another thread), summed over the loops into
/// each `/metrics` scrape and the `SIGUSR1` line. Clone it into every
/// protocol that counts.
#[derive(Clone, Default)]
pub struct Counter(Rc<Cell<u64>>);

impl Counter {
    /// Count one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Count `n`.
    pub fn add(&self, n: u64) {
        self.0.set(self.0.get().wrapping_add(n));
    }

    /// The count so far (on this loop).
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counter({})", self.get())
    }
}

impl fmt::Debug for LoopContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoopContext(loop {} of {})", self.id, self.loops)
    }
}

impl LoopContext {
    /// The context of loop `id` of `loops`.
    pub fn new(id: usize, loops: usize) -> Self {
        Self {
            id,
            loops,
            extras: RefCell::default(),
        }
    }

    /// This loop's number, from 0.
    pub fn id(&self) -> usize {
        self.id
    }

    /// How many loops the process runs.
    pub fn loops(&self) -> usize {
        self.loops
    }

    /// A counter named `name` (a valid Prometheus name: an invalid one is
    /// refused with a warning, and the counter counts but is not shown),
    /// described by `help`. Each loop registers its own; the scrape shows
    /// their sum as `# TYPE <name> counter`.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Counter {
        let counter = Counter::default();
        if valid_metric_name(name) {
            let mut extras = self.extras.borrow_mut();
            match extras.counters.iter().find(|(n, _, _)| *n == name) {
                Some((_, _, existing)) => return existing.clone(),
                None => extras.counters.push((name, help, counter.clone())),
            }
        } else {
            log::warn!("counter {name:?} is not a valid metric name: counted, not shown");
        }
        counter
    }

    /// Call `tick` on this loop's thread every `every` (at least 1 ms),
    /// from one `every` after the loop starts until it ends. It may touch
    /// the loop's own state (an `Rc` the factory shares with its
    /// protocols): an expiry sweep, a heartbeat.
    pub fn every(&self, every: Duration, tick: impl FnMut(Instant) + 'static) {
        self.extras.borrow_mut().timers.push(LoopTimer {
            every: every.max(Duration::from_millis(1)),
            tick: Box::new(tick),
        });
    }

    /// What was registered, for the loop to take over.
    pub(crate) fn into_extras(self) -> Extras {
        self.extras.into_inner()
    }
}

impl Extras {
    /// The registered counters' values now.
    pub(crate) fn counts(&self) -> Vec<UserCount> {
        self.counters
            .iter()
            .map(|(name, help, counter)| UserCount {
                name,
                help,
                value: counter.get(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_registered_twice_is_one_and_a_bad_name_is_not_shown() {
        let ctx = LoopContext::new(0, 1);
        let a = ctx.counter("app_total", "x");
        let b = ctx.counter("app_total", "x");
        a.inc();
        b.add(2);
        let bad = ctx.counter("9lives", "x");
        bad.inc();
        let extras = ctx.into_extras();
        let counts = extras.counts();
        assert_eq!(counts.len(), 1);
        assert_eq!((counts[0].name, counts[0].value), ("app_total", 3));
    }
}
