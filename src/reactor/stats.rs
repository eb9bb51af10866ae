//! Counters the loop owns: what `SIGUSR1` prints and `--metrics` serves.
//!
//! Plain integers, no atomics: only the loop thread touches them. The loop
//! counts what it sees itself (accepts, closes, polls) in [`Stats`];
//! rarer things noticed deep inside a connection or a listener (a
//! backpressure pause, an accept error's kind) go to this thread's
//! [`Tally`] through [`tally`], a `thread_local` like sozu's metrics, and
//! are folded in when the counters are read. Nothing here runs per message.

use std::cell::RefCell;
use std::fmt;

use crate::proto::Report;
use crate::reactor::conn::CloseReason;

/// Live counters of one event loop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Closed after an orderly end (peer closed, protocol done, drained).
    pub closed_ok: u64,
    /// Reset by the peer between messages, with nothing owed: how load
    /// tools and some clients end a connection. Nothing was lost.
    pub closed_aborted: u64,
    /// Closed because the peer reset the connection while a reply was owed
    /// or a request was half-received (or it broke otherwise).
    pub closed_reset: u64,
    /// Closed by the idle timeout.
    pub closed_timeout: u64,
    /// Closed because the peer broke the protocol.
    pub closed_protocol: u64,
    /// Closed by a forced shutdown.
    pub closed_forced: u64,
    /// Closed as slow consumers (messages piled up unread).
    pub closed_slow: u64,
    /// Messages dropped: their receiver had closed (or was closing), or
    /// the receiving loop's queue was full.
    pub messages_dropped: u64,
    /// Accept calls that failed (excluding `WouldBlock`).
    pub accept_errors: u64,
    /// Bytes read from peers of closed connections.
    pub bytes_in: u64,
    /// Bytes written to peers of closed connections.
    pub bytes_out: u64,
    /// Turns of the loop: `poll` calls that returned.
    pub polls: u64,
    /// Readiness events those polls returned.
    pub events: u64,
    /// This loop stopped accepting at its share of `--max-conns` (0 or 1).
    pub at_limit: u64,
    /// Counted by connections and listeners of this thread: see [`Tally`].
    pub tally: Tally,
}

/// Counters that code below the loop bumps through [`tally`]: plain
/// integers in a `thread_local`, read by the loop of the same thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Times a connection stopped reading because it owed too much output.
    pub backpressure_pauses: u64,
    /// Accept errors that cost one connection (`ECONNABORTED`, ...).
    pub accept_skipped: u64,
    /// Accept errors that paused accepting: out of descriptors or memory.
    pub accept_exhausted: u64,
    /// Accept errors of any other kind (accepting pauses too).
    pub accept_other: u64,
    /// HTTP responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub http_responses: [u64; 5],
    /// RESP commands by name, in the order of [`RESP_COMMANDS`].
    pub resp_commands: [u64; RESP_COMMANDS.len()],
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS connections closed before their handshake completed (bad or
    /// plain-text input, a timeout, a client that gave up).
    pub tls_handshake_failures: u64,
    /// TLS ClientHellos whose server name (SNI) rustls ignores: an IP
    /// address (what `wrk` sends for `https://127.0.0.1/`) or no valid
    /// DNS name.
    pub tls_sni_ignored: u64,
}

/// The RESP commands counted by name; anything else counts as `other`.
pub const RESP_COMMANDS: [&str; 4] = ["ping", "echo", "quit", "other"];

thread_local! {
    static TALLY: RefCell<Tally> = RefCell::new(Tally::default());
}

/// Bump this thread's [`Tally`]. Cheap (a thread-local borrow, no atomic),
/// but meant for events rarer than messages.
pub fn tally(f: impl FnOnce(&mut Tally)) {
    TALLY.with(|t| f(&mut t.borrow_mut()));
}

/// A copy of this thread's [`Tally`].
pub fn tally_now() -> Tally {
    TALLY.with(|t| t.borrow().clone())
}

/// Start this thread's [`Tally`] from zero (a new loop on a reused thread).
pub fn tally_reset() {
    TALLY.with(|t| *t.borrow_mut() = Tally::default());
}

impl Tally {
    /// Count what a protocol reported.
    pub fn count(&mut self, report: &Report<'_>) {
        match *report {
            Report::Http { status, .. } => {
                if let Some(n) = (status / 100)
                    .checked_sub(1)
                    .and_then(|class| self.http_responses.get_mut(usize::from(class)))
                {
                    *n += 1;
                }
            }
            Report::Resp { commands } => {
                for (n, c) in self.resp_commands.iter_mut().zip(commands) {
                    *n += u64::from(c);
                }
            }
        }
    }

    /// Add another thread's tally.
    pub fn add(&mut self, other: &Tally) {
        self.backpressure_pauses += other.backpressure_pauses;
        self.tls_handshakes += other.tls_handshakes;
        self.tls_handshake_failures += other.tls_handshake_failures;
        self.tls_sni_ignored += other.tls_sni_ignored;
        self.accept_skipped += other.accept_skipped;
        self.accept_exhausted += other.accept_exhausted;
        self.accept_other += other.accept_other;
        self.access_log_dropped += other.access_log_dropped;
        for (a, b) in self.http_responses.iter_mut().zip(other.http_responses) {
            *a += b;
        }
        for (a, b) in self.resp_commands.iter_mut().zip(other.resp_commands) {
            *a += b;
        }
    }
}

impl Stats {
    /// Count one closed connection.
    pub fn record_close(&mut self, reason: CloseReason, bytes_in: u64, bytes_out: u64) {
        self.open = self.open.saturating_sub(1);
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        let counter = match reason {
            CloseReason::PeerClosed | CloseReason::Done | CloseReason::Drained => {
                &mut self.closed_ok
            }
            CloseReason::PeerAborted => &mut self.closed_aborted,
            CloseReason::Reset | CloseReason::Io(_) => &mut self.closed_reset,
            CloseReason::IdleTimeout => &mut self.closed_timeout,
            CloseReason::ProtocolError(_) => &mut self.closed_protocol,
            CloseReason::Forced(_) => &mut self.closed_forced,
            CloseReason::SlowConsumer => &mut self.closed_slow,
        };
        *counter += 1;
    }

    /// Add another loop's counters (for per-thread totals).
    pub fn add(&mut self, other: &Stats) {
        self.accepted += other.accepted;
        self.open += other.open;
        self.closed_ok += other.closed_ok;
        self.closed_aborted += other.closed_aborted;
        self.closed_reset += other.closed_reset;
        self.closed_timeout += other.closed_timeout;
        self.closed_protocol += other.closed_protocol;
        self.closed_forced += other.closed_forced;
        self.closed_slow += other.closed_slow;
        self.messages_dropped += other.messages_dropped;
        self.accept_errors += other.accept_errors;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.polls += other.polls;
        self.events += other.events;
        self.at_limit += other.at_limit;
        self.tally.add(&other.tally);
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "open {}, accepted {}, closed ok {} aborted {} reset {} timeout {} protocol {} forced {}, \
             slow {}, accept errors {}, bytes in {} out {}, messages dropped {}",
            self.open,
            self.accepted,
            self.closed_ok,
            self.closed_aborted,
            self.closed_reset,
            self.closed_timeout,
            self.closed_protocol,
            self.closed_forced,
            self.closed_slow,
            self.accept_errors,
            self.bytes_in,
            self.bytes_out,
            self.messages_dropped
        )
    }
}
