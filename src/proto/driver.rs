//! A sans-IO test harness for any [`Protocol`]: feeds it bytes the way a
//! connection does (input it did not consume is kept and offered again,
//! with the next bytes behind it; input left at the output budget is
//! offered again at once), collects what it writes, and checks the
//! bounds a connection relies on after every call (the output budget,
//! the pending-input bound). No socket, no clock: `now` is passed in.
//!
//! ```
//! use std::time::Instant;
//! use tcp_reactor::proto::driver::Driver;
//! use tcp_reactor::proto::{Decision, Resp};
//!
//! let mut d = Driver::new(Resp::new(1 << 20), 64 * 1024);
//! let now = Instant::now();
//! assert_eq!(d.feed(now, b"PI"), Decision::Continue); // half a command
//! assert_eq!(d.feed(now, b"NG\r\nECHO hi\r\n"), Decision::Continue);
//! assert_eq!(d.text(), "+PONG\r\n$2\r\nhi\r\n");
//! ```

use std::time::Instant;

use super::{budget_spent, Decision, Output, Protocol, OUT_BUDGET};

/// Plays the connection for one protocol, without a socket.
pub struct Driver<P> {
    /// The protocol under test.
    pub proto: P,
    /// Input it has not consumed yet (offered again with the next bytes).
    pub pending: Vec<u8>,
    /// Everything it wrote so far.
    pub out: Output,
    /// How the conversation ended, once it has.
    pub ended: Option<Decision>,
    max_pending: usize,
    reoffer: bool,
}

impl<P: Protocol> Driver<P> {
    /// Drive `proto`, checking after each call that it leaves at most
    /// `max_pending` bytes unconsumed (its bound on partial frames).
    pub fn new(proto: P, max_pending: usize) -> Self {
        Self {
            proto,
            pending: Vec::new(),
            out: Output::new(),
            ended: None,
            max_pending,
            reoffer: false,
        }
    }

    /// Hand `bytes` (behind what is pending) to the protocol at `now`,
    /// and offer what it left again while it stopped at its budget.
    pub fn feed(&mut self, now: Instant, bytes: &[u8]) -> Decision {
        assert!(self.ended.is_none(), "fed after {:?}", self.ended);
        self.pending.extend_from_slice(bytes);
        loop {
            let decision = self.call(now);
            if decision != Decision::Continue || !self.reoffer {
                assert!(
                    self.pending.len() <= self.max_pending,
                    "{} pending",
                    self.pending.len()
                );
                return decision;
            }
        }
    }

    /// One `on_input` call, as the connection makes it.
    fn call(&mut self, now: Instant) -> Decision {
        let before = self.out.len();
        let step = self.proto.on_input(now, &self.pending, &mut self.out);
        let wrote = self.out.len() - before;
        assert!(wrote <= OUT_BUDGET, "{wrote} B out in one call");
        assert!(step.consumed <= self.pending.len());
        self.pending.drain(..step.consumed);
        self.reoffer = !self.pending.is_empty() && budget_spent(wrote);
        if step.decision != Decision::Continue {
            self.ended = Some(step.decision);
        }
        step.decision
    }

    /// Everything the protocol wrote so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}
