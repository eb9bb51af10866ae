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
//! frame it can, except that it must stop once its output is
//! [`budget_spent`], so that one call never writes more than
//! [`OUT_BUDGET`]; the connection then offers the rest again by itself once
//! its output has drained, even if no new byte arrives.

use std::time::Instant;

use crate::base::close::CloseReason;
use crate::base::counters::Stats;
use crate::mailbox::{Mailbox, Message};

mod conn_info;
pub mod driver;
mod echo;
#[cfg(feature = "http")]
pub mod http;
mod output;
pub mod resp;

pub use conn_info::ConnInfo;
pub use echo::Echo;
#[cfg(feature = "http")]
pub use http::{DateAnchor, Http, HttpConfig};
pub use output::{Output, Piece};
pub use resp::Resp;

/// The most output one [`Protocol::on_input`] call may write. Some requests
/// ask for far more than they weigh (RESP's inline `x\n` is 2 bytes, its
/// error reply 28): without a budget, one 64 KiB read could queue most of a
/// megabyte for a client that never reads. With it, a connection owes at
/// most its high watermark plus `OUT_BUDGET` (the property
/// `every_protocol_keeps_owed_output_within_high_watermark_plus_out_budget_for_a_non_reader`
/// in `tests/fuzz_conn.rs` checks every protocol against that).
pub const OUT_BUDGET: usize = 64 * 1024;

/// The most a protocol writes for one frame without looking at the budget
/// again: fixed replies (a response head, an error, RESP's inline `ECHO`
/// answer of up to 16 KiB). Streamed bytes (an echoed body) are not
/// counted here: they are cut at [`stream_room`].
pub(crate) const REPLY_MAX: usize = 20 * 1024;

/// Output at which a call stops taking new frames.
const FRAME_STOP: usize = OUT_BUDGET - REPLY_MAX;

/// Whether a call that has written `written` bytes must stop taking new
/// frames (and stop streaming). It then leaves the rest of its input
/// unconsumed; the connection offers it again, by itself, once its output
/// has drained to the low watermark: a protocol that stops with
/// `budget_spent` true may rely on that, even if no new byte arrives.
pub const fn budget_spent(written: usize) -> bool {
    written >= FRAME_STOP
}

/// How many streamed bytes (an echoed body) a call that has written
/// `written` bytes may still write. Streaming never takes the output past
/// the point where [`budget_spent`] holds, so the fixed replies that may
/// follow it in the same frame still fit in [`OUT_BUDGET`].
pub(crate) const fn stream_room(written: usize) -> usize {
    FRAME_STOP.saturating_sub(written)
}

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

/// The [`Protocol::NAME`] of every protocol this crate ships (those its
/// features compiled in): what the binary's `--protocol` offers, and what
/// the crate's tests run against every connection bound.
pub const BUNDLED: &[&str] = &[
    Echo::NAME,
    #[cfg(feature = "http")]
    Http::NAME,
    Resp::NAME,
];

/// A per-connection protocol state machine: bytes and `now` in, bytes
/// and a [`Decision`] out. It never sees a socket, so it is tested without
/// one ([`driver::Driver`]) and runs unchanged over TCP, TLS or a PROXY
/// header.
///
/// The rules a connection relies on:
/// * **Consume what you used.** [`Step::consumed`] says how much of `input`
///   was used; the rest (half a frame) is offered again with the next bytes.
/// * **Replies of any size.** Write to `out` as much as the input asks;
///   past [`OUT_BUDGET`] ([`budget_spent`]) stop and return what you
///   consumed so far: the connection writes, and offers the rest of the
///   input again when the peer can take more. A big value already in
///   memory goes in whole, without a copy, with [`Output::share`].
/// * **No clock, no IO.** Time comes in as `now`; deadlines go out through
///   [`Protocol::next_deadline`].
///
/// ```
/// use std::time::Instant;
/// use tcp_reactor::proto::driver::Driver;
/// use tcp_reactor::{Decision, Output, Protocol, Step};
///
/// /// Answers each line in upper case; `quit` ends the conversation.
/// struct Shout;
///
/// impl Protocol for Shout {
///     const NAME: &'static str = "shout";
///
///     fn on_input(&mut self, _now: Instant, input: &[u8], out: &mut Output) -> Step {
///         let mut consumed = 0;
///         while let Some(end) = input[consumed..].iter().position(|&b| b == b'\n') {
///             let line = &input[consumed..consumed + end + 1];
///             consumed += end + 1;
///             if line.trim_ascii() == b"quit" {
///                 return Step { consumed, decision: Decision::Close };
///             }
///             out.extend(line.iter().map(u8::to_ascii_uppercase));
///         }
///         Step { consumed, decision: Decision::Continue }
///     }
/// }
///
/// let mut d = Driver::new(Shout, 4096);
/// let now = Instant::now();
/// assert_eq!(d.feed(now, b"hel"), Decision::Continue); // half a line: kept
/// assert_eq!(d.feed(now, b"lo\nquit\n"), Decision::Close);
/// assert_eq!(d.text(), "HELLO\n");
/// ```
///
/// Serve it with `Server::bind(Config::default(), || Shout)?.run()`.
pub trait Protocol {
    /// A short name for logs and `/metrics` (`echo`, `http`, …).
    const NAME: &'static str;

    /// Who the peer is: the socket's address, or the client a PROXY header
    /// named. Called once, before any input.
    fn on_peer(&mut self, _peer: std::net::SocketAddr) {}

    /// Handle input. Replies are appended to `out`.
    fn on_input(&mut self, now: Instant, input: &[u8], out: &mut Output) -> Step;

    /// Whether this protocol's reply to any input is that same input, whole
    /// and unchanged, with `Continue` (echo). The connection then writes
    /// its read buffer straight to the socket instead of calling
    /// [`Protocol::on_input`] and copying the reply out of `out` (no copy of a
    /// 16 KiB read into a reply buffer).
    /// `on_input` must still behave the same (it is used when the input
    /// does not start at a fresh read, e.g. behind a PROXY header).
    fn replies_with_input(&self) -> bool {
        false
    }

    /// The peer half-closed its side: no more input will come. Whatever is
    /// appended to `out` is still sent before the connection closes.
    fn on_eof(&mut self, _now: Instant, _out: &mut Output) {}

    /// Graceful shutdown began, after the connection read what was already
    /// readable. Return [`Decision::Close`] when the conversation can end now,
    /// or [`Decision::Continue`] when a request in flight still needs input;
    /// the protocol then returns `Close` from a later [`Protocol::on_input`].
    fn on_drain(&mut self, _now: Instant, _out: &mut Output) -> Decision {
        Decision::Close
    }

    /// Whether a message is half-received or half-answered (a request head
    /// or body in flight). A peer that resets the connection while this is
    /// false, with nothing owed to it, lost nothing: the connection counts
    /// it as [`CloseReason::PeerAborted`], not as
    /// a reset.
    fn mid_message(&self) -> bool {
        false
    }

    /// The next instant at which [`Protocol::on_timeout`] must be called.
    ///
    /// Return an instant the protocol **stored** (say `started + timeout`,
    /// with `started` the `now` of an earlier call), never one computed
    /// from the current time: the connection asks again when the timer
    /// fires and calls `on_timeout` only if the instant it gets then has
    /// passed, so `Instant::now() + x` moves away each time it is asked and
    /// the protocol is never woken. (A protocol has no clock anyway: time
    /// comes in as `now`.)
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Called at (or after) the instant [`Protocol::next_deadline`] named.
    fn on_timeout(&mut self, _now: Instant, _out: &mut Output) -> Decision {
        Decision::Continue
    }

    /// The protocol's messaging handle, if it messages other connections
    /// (see [`crate::mailbox`]). The loop attaches it when the connection
    /// opens (so [`Mailbox::me`] is its identity from the first call on),
    /// and routes what was sent through it after each of the protocol's
    /// calls. `None` (the default) costs nothing.
    fn mailbox(&mut self) -> Option<&mut Mailbox> {
        None
    }

    /// The connection is open and its mailbox (if any) attached: the place
    /// to greet the peer (a server that speaks first: an SMTP or FTP
    /// banner; what is written to `out` goes out at once), to join groups
    /// or announce it. Called once, right after [`Protocol::on_peer`] (when
    /// a PROXY header is expected, before it). What it sends is routed
    /// after the call, like any call's.
    fn on_open(&mut self, _out: &mut Output) {}

    /// A message from another connection (or this one) arrived. Frame it
    /// into `out`, which is written to the peer like any reply; the default
    /// writes the payload as it is. Called only while the connection is
    /// `Open` or `Draining`; it may send messages in turn, and may end the
    /// conversation.
    fn on_message(&mut self, _now: Instant, msg: &Message<'_>, out: &mut Output) -> Decision {
        out.extend_from_slice(msg.payload);
        Decision::Continue
    }

    /// The conversation is over: no more input will be read, for `reason`
    /// (the peer closed, the protocol said `Close`, a drain, an error, a
    /// timeout). Called once, as soon as it is known: the connection may
    /// still be writing what it owes and waiting for the peer's FIN (up
    /// to 30 s of lingering close), so this, not [`Protocol::on_closed`],
    /// is where a chat says "left". What it sends is routed after it.
    fn on_end(&mut self, _reason: &CloseReason) {}

    /// The connection has closed (its socket is gone): the last call, made
    /// just before the server's cleanup hook with the same facts. The
    /// place to look at what the protocol kept (counters, a session) or to
    /// hand it on. Anything that must happen even when a protocol is
    /// dropped without closing (a test, a panic) belongs in `Drop`, which
    /// runs right after this.
    fn on_closed(&mut self, _info: &ConnInfo) {}

    /// Hand what was finished since the last call to `sink`, oldest first,
    /// and forget it. The loop calls this after driving the connection, for
    /// the access log and the metrics; a protocol keeps what it reports in
    /// reused buffers (bounded by `MAX_REPORTS`), so this costs no
    /// allocation per request. Echo has nothing to report.
    fn report(&mut self, _sink: &mut dyn FnMut(Report<'_>)) {}

    /// What [`Protocol::report`] hands over, and so what an access-log
    /// line stands for. [`Reports::Nothing`] (echo) lets the loop skip
    /// collecting after each drive at compile time: a protocol that
    /// overrides `report` must say what it reports.
    const REPORTS: Reports = Reports::Nothing;
}

/// What a protocol's [`Protocol::report`] hands the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reports {
    /// Nothing: the loop never asks. The access log has a line per connection.
    Nothing,
    /// Counts for the metrics (RESP commands). The access log has a line
    /// per connection.
    Counts,
    /// One report per request (HTTP): each is an access-log line of its
    /// own, and the connection gets none.
    Requests,
}

impl Reports {
    /// Whether the loop collects reports at all.
    pub const fn any(self) -> bool {
        !matches!(self, Reports::Nothing)
    }
}

/// Most reports a protocol keeps between two [`Protocol::report`] calls;
/// beyond it they are counted in the next report's `dropped` rather than
/// kept (the loop collects after every drive, so this bounds memory only).
#[cfg(feature = "http")]
pub(crate) const MAX_REPORTS: usize = 1024;

/// Something a protocol finished, as [`Protocol::report`] hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Report<'a> {
    /// An HTTP request is over: its body read and its response written
    /// (or cut short by the close). Reported then, not when the response
    /// head went out, so that the loop can time it to its last byte.
    Http {
        /// The request line as received, without its line end (for a
        /// request that could not be parsed, what was there of its first
        /// line: `BLAH`); at most 2 KiB. Empty unless the access log asks
        /// for it (`HttpConfig::log_requests`).
        request: &'a [u8],
        /// The `Referer` value (empty when absent or not asked for), at most 1 KiB.
        referer: &'a [u8],
        /// The `User-Agent` value (empty when absent or not asked for), at most 1 KiB.
        user_agent: &'a [u8],
        /// The response status code.
        status: u16,
        /// The response's bytes: head (with any `100 Continue`) and body.
        bytes: u64,
        /// Its body's bytes (nginx's `$body_bytes_sent`).
        body_bytes: u64,
        /// When the request's first byte arrived (the `now` of the read
        /// that brought it).
        started: Instant,
    },
    /// RESP commands answered since the last report, by
    /// `RESP_COMMANDS` index (`ping`, `echo`, `quit`, `other`).
    Resp {
        /// How many of each.
        commands: [u16; 4],
    },
}

impl Report<'_> {
    /// Add what this report says to the loop's counters.
    pub fn count(&self, stats: &mut Stats) {
        match *self {
            Report::Http { status, .. } => {
                let class = match status / 100 {
                    1 => &mut stats.http_1xx,
                    2 => &mut stats.http_2xx,
                    3 => &mut stats.http_3xx,
                    4 => &mut stats.http_4xx,
                    5 => &mut stats.http_5xx,
                    _ => return,
                };
                *class += 1;
            }
            Report::Resp { commands } => {
                // The order of RESP_COMMANDS.
                let counts = [
                    &mut stats.resp_ping,
                    &mut stats.resp_echo,
                    &mut stats.resp_quit,
                    &mut stats.resp_other,
                ];
                for (n, c) in counts.into_iter().zip(commands) {
                    *n += u64::from(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Report;
    use crate::base::counters::{Stats, COUNTERS, RESP_COMMANDS};

    #[test]
    fn the_resp_rows_follow_the_order_of_the_report() {
        let labels: Vec<&str> = COUNTERS
            .iter()
            .filter(|c| c.family == "tcp_reactor_resp_commands_total")
            .filter_map(|c| c.label.map(|(_, v)| v))
            .collect();
        assert_eq!(labels, RESP_COMMANDS);
        let mut stats = Stats::default();
        Report::Resp {
            commands: [1, 2, 3, 4],
        }
        .count(&mut stats);
        assert_eq!(
            [
                stats.resp_ping,
                stats.resp_echo,
                stats.resp_quit,
                stats.resp_other
            ],
            [1, 2, 3, 4]
        );
    }
}
