//! The connection's lifecycle states, and why a connection ended.
//!
//! ```text
//!            peer EOF / protocol Close or Reject
//!   Open ─────────────────────────────────────────────┐
//!    │ drain starts: final read, then ask the protocol│
//!    ├── protocol: Close ────────────────────────────►│
//!    ├── protocol: Continue ──┐                       │
//!    └── no payload yet ──────┴► Draining ── Close ──►│
//!                 (ask the protocol again after each input;
//!                  a silent peer gets a short grace)
//!                                                      ▼
//!                          Flushing { ending, peer_done }   (write all that is owed)
//!                            │ owed == 0, peer_done ──────────────► closed
//!                            │ owed == 0, !peer_done: shutdown(Write) = FIN
//!                            ▼
//!                          Lingering { ending, since }      (read and discard)
//!                            │ peer EOF, error, or linger bound ─► closed
//! ```
//! Any state can also end at once: an I/O error (reset), the idle timeout,
//! or a forced shutdown.

use std::fmt;

use crate::base::close::CloseReason;
use std::time::Instant;

/// Where a connection is in its life. Changed only by `Conn::set_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Reading, handing input to the protocol, writing its replies.
    Open,
    /// Shutdown began while the protocol still needed input to finish a
    /// request in flight, or before the peer sent its first byte (it may be
    /// writing its first request right now). Reading goes on; after each
    /// input the protocol is asked again, until it says `Close`. A peer
    /// that stays silent is closed after `Limits::drain_silent_grace`.
    Draining {
        /// When the drain started.
        since: Instant,
    },
    /// No more input is processed; what is owed is written, then FIN.
    Flushing {
        /// Why the connection is ending.
        ending: Ending,
        /// The peer already sent its FIN: after flushing, close outright.
        peer_done: bool,
    },
    /// Our FIN is sent. Read and discard until the peer's FIN, so that
    /// closing never turns unread input into an RST that could destroy
    /// replies still in flight to the peer. Gives up after `linger_timeout`
    /// without input, or `linger_max` in all (nginx's `lingering_timeout`
    /// and `lingering_time`), and at the drain deadline.
    Lingering {
        /// Why the connection is ending.
        ending: Ending,
        /// When our FIN was sent.
        since: Instant,
    },
}

impl State {
    /// The state's name alone: `Open`, `Draining`, `Flushing`, `Lingering`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Open => "Open",
            State::Draining { .. } => "Draining",
            State::Flushing { .. } => "Flushing",
            State::Lingering { .. } => "Lingering",
        }
    }
}

/// The state's name and why it is ending, without its `Instant`s: what a
/// trace line shows (`Open => Flushing (peer closed, peer done)`).
impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Open => f.write_str("Open"),
            State::Draining { .. } => f.write_str("Draining"),
            State::Flushing { ending, peer_done } => write!(
                f,
                "Flushing ({ending}{})",
                if *peer_done { ", peer done" } else { "" }
            ),
            State::Lingering { ending, .. } => write!(f, "Lingering ({ending})"),
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::PeerClosed => f.write_str("peer closed"),
            Ending::Done => f.write_str("protocol done"),
            Ending::ProtocolError(msg) => write!(f, "protocol error: {msg}"),
            Ending::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// Why an orderly end began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The peer half-closed its write side.
    PeerClosed,
    /// The protocol ended the conversation.
    Done,
    /// The peer broke the protocol.
    ProtocolError(&'static str),
    /// Graceful shutdown of the server.
    Shutdown,
}

impl From<Ending> for CloseReason {
    fn from(ending: Ending) -> Self {
        match ending {
            Ending::PeerClosed => CloseReason::PeerClosed,
            Ending::Done => CloseReason::Done,
            Ending::ProtocolError(msg) => CloseReason::ProtocolError(msg),
            Ending::Shutdown => CloseReason::Drained,
        }
    }
}
