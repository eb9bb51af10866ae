//! Sans-IO protocols: bytes and `now` in, bytes and decisions out.
//!
//! A protocol never sees a socket, a clock or the event loop. The connection
//! hands it the bytes it has read and a buffer to append replies to, and acts
//! on the [`Decision`] it returns. That keeps every protocol testable (and
//! fuzzable) with plain byte slices and a made-up `Instant`.
//!
//! The connection owns buffering: input the protocol did not consume (a
//! partial frame) is kept and handed back, with more bytes behind it, on the
//! next call. A protocol must therefore consume *whole* frames only and may
//! rely on seeing the unconsumed tail again. It should consume every whole
//! frame it can, except that it may stop once its output reaches
//! [`OUT_BUDGET`]; the connection then offers the rest again by itself once
//! its output has drained, even if no new byte arrives.

use std::time::Instant;

mod echo;
#[cfg(feature = "http")]
pub mod http;
pub mod proxy;
pub mod resp;

pub use echo::Echo;
#[cfg(feature = "http")]
pub use http::{DateAnchor, Http, HttpConfig};
pub use resp::Resp;

/// How much output one [`Protocol::on_input`] call should produce before it
/// stops taking new frames. Some requests ask for far more than they weigh
/// (a pipelined `GET` is 27 bytes, its reply ~150): without a budget, one
/// 64 KiB read could queue half a megabyte for a client that never reads.
/// A protocol that stops early leaves the rest unconsumed; the connection
/// offers it again once its output has drained to the low watermark.
pub const OUT_BUDGET: usize = 64 * 1024;

/// What the connection should do after a protocol call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Keep going: read more input when it comes.
    Continue,
    /// The conversation is over: write everything owed, then close.
    Close,
    /// The peer broke the protocol: write what is owed (an error reply, say),
    /// then close. The message is logged and counted.
    Reject(&'static str),
}

/// The result of handing input to a protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// How many bytes from the front of the input were used up. The rest is
    /// offered again, with newer bytes appended, on the next call.
    pub consumed: usize,
    /// What to do next.
    pub decision: Decision,
}

/// A per-connection protocol state machine.
pub trait Protocol {
    /// A short name for logs (`echo`, `http`, …).
    fn name(&self) -> &'static str;

    /// Who the peer is: the socket's address, or the client a PROXY header
    /// named. Called once, before any input.
    fn on_peer(&mut self, _peer: std::net::SocketAddr) {}

    /// Handle input. Replies are appended to `out`.
    fn on_input(&mut self, now: Instant, input: &[u8], out: &mut Vec<u8>) -> Step;

    /// Whether this protocol's reply to any input is that same input, whole
    /// and unchanged, with `Continue` (echo). The connection then writes
    /// its read buffer straight to the socket instead of calling
    /// [`Protocol::on_input`] and copying the reply out of `out`: the issue's
    /// "write straight from the read buffer", worth ~300 ns per 16 KiB read.
    /// `on_input` must still behave the same (it is used when the input
    /// does not start at a fresh read, e.g. behind a PROXY header).
    fn replies_with_input(&self) -> bool {
        false
    }

    /// The peer half-closed its side: no more input will come. Whatever is
    /// appended to `out` is still sent before the connection closes.
    fn on_eof(&mut self, _now: Instant, _out: &mut Vec<u8>) {}

    /// Graceful shutdown began, after the connection read what was already
    /// readable. Return [`Decision::Close`] when the conversation can end now,
    /// or [`Decision::Continue`] when a request in flight still needs input;
    /// the protocol then returns `Close` from a later [`Protocol::on_input`].
    fn on_drain(&mut self, _now: Instant, _out: &mut Vec<u8>) -> Decision {
        Decision::Close
    }

    /// Whether a message is half-received or half-answered (a request head
    /// or body in flight). A peer that resets the connection while this is
    /// false, with nothing owed to it, lost nothing: the connection counts
    /// it as [`CloseReason::PeerAborted`](crate::reactor::conn::CloseReason), not as
    /// a reset.
    fn mid_message(&self) -> bool {
        false
    }

    /// The next instant at which [`Protocol::on_timeout`] must be called.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Called at (or after) the instant [`Protocol::next_deadline`] named.
    fn on_timeout(&mut self, _now: Instant, _out: &mut Vec<u8>) -> Decision {
        Decision::Continue
    }

    /// Hand what was finished since the last call to `sink`, oldest first,
    /// and forget it. The loop calls this after driving the connection, for
    /// the access log and the metrics; a protocol keeps what it reports in
    /// reused buffers (bounded by [`MAX_REPORTS`]), so this costs no
    /// allocation per request. Echo has nothing to report.
    fn report(&mut self, _sink: &mut dyn FnMut(Report<'_>)) {}

    /// Whether [`Protocol::report`] ever reports anything. `false` (echo)
    /// lets the loop skip collecting after each drive at compile time: a
    /// protocol that overrides `report` must set it.
    const REPORTS: bool = false;
}

/// Most reports a protocol keeps between two [`Protocol::report`] calls;
/// beyond it they are counted in the next report's `dropped` rather than
/// kept (the loop collects after every drive, so this bounds memory only).
pub const MAX_REPORTS: usize = 1024;

/// Something a protocol finished, as [`Protocol::report`] hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report<'a> {
    /// An HTTP response was committed: its status line and length are known.
    Http {
        /// The request method (`-` when the head could not be parsed).
        method: &'a str,
        /// The request target as sent (`-` when unparsed), at most 1 KiB.
        path: &'a str,
        /// The response status code.
        status: u16,
        /// The response's length: head and body.
        bytes: u64,
        /// When the request head began to arrive.
        started: Instant,
        /// When the response was committed.
        answered: Instant,
    },
    /// RESP commands answered since the last report, by
    /// [`RESP_COMMANDS`](crate::reactor::stats::RESP_COMMANDS) index.
    Resp {
        /// How many of each.
        commands: [u16; 4],
    },
}

/// A test harness for any protocol: feeds it bytes the way a connection
/// does (unconsumed input is kept and offered again with the next bytes),
/// collects its output, and checks the pending-input bound after each call.
#[cfg(test)]
pub(crate) mod driver {
    use std::time::Instant;

    use super::{Decision, Protocol};

    pub(crate) struct Driver<P> {
        pub proto: P,
        pub pending: Vec<u8>,
        pub out: Vec<u8>,
        pub ended: Option<Decision>,
        max_pending: usize,
    }

    impl<P: Protocol> Driver<P> {
        pub fn new(proto: P, max_pending: usize) -> Self {
            Self {
                proto,
                pending: Vec::new(),
                out: Vec::new(),
                ended: None,
                max_pending,
            }
        }

        /// Hand `bytes` (behind what is pending) to the protocol at `now`.
        pub fn feed(&mut self, now: Instant, bytes: &[u8]) -> Decision {
            assert!(self.ended.is_none(), "fed after {:?}", self.ended);
            self.pending.extend_from_slice(bytes);
            let step = self.proto.on_input(now, &self.pending, &mut self.out);
            assert!(step.consumed <= self.pending.len());
            self.pending.drain(..step.consumed);
            assert!(
                self.pending.len() <= self.max_pending,
                "{} pending",
                self.pending.len()
            );
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
}
