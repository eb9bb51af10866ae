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
//!                          Flushing { reason, peer }   (write all that is owed)
//!                            │ owed == 0, peer FIN received ─────► closed
//!                            │ owed == 0, peer FIN pending: shutdown(Write) = FIN
//!                            ▼
//!                          Lingering { reason, since }      (read and discard)
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
        /// Why the connection is ending (an orderly reason: the peer
        /// closed, the protocol was done or refused, or the drain).
        reason: CloseReason,
        /// Whether the peer's FIN is in: then, after flushing, close outright.
        peer: PeerFin,
    },
    /// Our FIN is sent. Read and discard until the peer's FIN, so that
    /// closing never turns unread input into an RST that could destroy
    /// replies still in flight to the peer. Gives up after `linger_timeout`
    /// without input, or `linger_max` in all (nginx's `lingering_timeout`
    /// and `lingering_time`), and at the drain deadline.
    Lingering {
        /// Why the connection is ending.
        reason: CloseReason,
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
            State::Flushing { reason, peer } => write!(
                f,
                "Flushing ({reason}{})",
                if *peer == PeerFin::Received {
                    ", peer done"
                } else {
                    ""
                }
            ),
            State::Lingering { reason, .. } => write!(f, "Lingering ({reason})"),
        }
    }
}

/// Whether the peer has sent its FIN when our output begins to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerFin {
    /// Not yet: after flushing we send our FIN and linger for theirs.
    Pending,
    /// It has: after flushing, the close sends our FIN and we are done.
    Received,
}
