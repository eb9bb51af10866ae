//! Counters the loop owns: what `SIGUSR1` prints.
//!
//! Plain integers, no atomics: only the loop thread touches them.

use std::fmt;

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
