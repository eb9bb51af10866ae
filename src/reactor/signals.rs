//! The Go model's `signal.Notify` channel, as one more token in the loop.
//!
//! `signal_hook_mio` installs async-signal-safe handlers that write to a
//! self-pipe; the pipe's read end is registered with our `Poll`, so a signal
//! is just another readiness event. This module maps raw signal numbers to
//! what they mean to the server and owns nothing else.
//!
//! * `SIGINT`, `SIGTERM`, `SIGQUIT`: quit. The first starts the graceful
//!   drain, a second one during the drain forces it.
//! * `SIGUSR1`: log one line of live counters.
//! * `SIGUSR2`: start a zero-downtime binary upgrade (see [`crate::process::upgrade`]).
//! * `SIGHUP`: reopen the access log (after logrotate moved it).
//!
//! `SIGPIPE` needs no handler: Rust binaries start with it ignored, and
//! `std`'s `send` on Linux passes `MSG_NOSIGNAL`, so writing to a closed peer
//! is an `EPIPE` error on that connection, never a dead process.

use std::io;

use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

/// What a received signal asks the server to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalEvent {
    /// Shut down. Carries the signal's name for the log.
    Quit(&'static str),
    /// Log the live counters.
    Stats,
    /// Replace the binary without dropping a connection.
    Upgrade,
    /// Reopen the access log.
    Reopen,
}

/// The registered signal source.
pub struct SignalSource {
    signals: Signals,
}

impl SignalSource {
    /// Install the handlers and register the self-pipe under `token`.
    pub fn register(registry: &Registry, token: Token) -> io::Result<Self> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2, SIGHUP])?;
        registry.register(&mut signals, token, Interest::READABLE)?;
        Ok(Self { signals })
    }

    /// Every signal delivered since the last call, oldest first.
    ///
    /// Reads the self-pipe until it is empty (edge-triggered rule).
    pub fn pending(&mut self) -> impl Iterator<Item = SignalEvent> + '_ {
        self.signals.pending().filter_map(meaning)
    }
}

fn meaning(signal: i32) -> Option<SignalEvent> {
    match signal {
        SIGINT => Some(SignalEvent::Quit("SIGINT")),
        SIGTERM => Some(SignalEvent::Quit("SIGTERM")),
        SIGQUIT => Some(SignalEvent::Quit("SIGQUIT")),
        SIGUSR1 => Some(SignalEvent::Stats),
        SIGUSR2 => Some(SignalEvent::Upgrade),
        SIGHUP => Some(SignalEvent::Reopen),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quit_signals_carry_their_names() {
        assert_eq!(meaning(SIGTERM), Some(SignalEvent::Quit("SIGTERM")));
        assert_eq!(meaning(SIGINT), Some(SignalEvent::Quit("SIGINT")));
        assert_eq!(meaning(SIGQUIT), Some(SignalEvent::Quit("SIGQUIT")));
        assert_eq!(meaning(SIGUSR1), Some(SignalEvent::Stats));
        assert_eq!(meaning(SIGUSR2), Some(SignalEvent::Upgrade));
        assert_eq!(meaning(SIGHUP), Some(SignalEvent::Reopen));
        assert_eq!(meaning(signal_hook::consts::SIGWINCH), None);
    }
}
