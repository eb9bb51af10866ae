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
//! * `SIGHUP`: re-read the TLS certificate and key (see [`Config::reload`](crate::Config::reload)),
//!   and reopen the access log (after logrotate moved it): nginx's `HUP`.
//!
//! The binary takes the signals over as the first thing `main` does
//! ([`SignalSource::install`] then [`unblock`]): from then on a quit signal
//! is a byte in the pipe, whatever the process is doing — parsing flags,
//! binding, starting threads — and the supervisor reads it on its first
//! poll. Before that (the dynamic loader, Rust's runtime start-up) nothing
//! can catch a signal; a parent that must signal that early should start us
//! with the signals blocked: we unblock them once they are ours.
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
    /// Re-read what can change without a restart: the TLS certificate and
    /// key, and the access log's file (reopened after logrotate).
    Reload,
}

/// The signals we handle.
const HANDLED: [i32; 6] = [SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2, SIGHUP];

/// The installed signal source: handlers in place, signals queued in the
/// self-pipe until a loop registers it and reads them.
pub struct SignalSource {
    signals: Signals,
}

impl SignalSource {
    /// Install the handlers. From here on these signals never take the
    /// default action (death); each one waits in the pipe.
    pub fn install() -> io::Result<Self> {
        Ok(Self {
            signals: Signals::new(HANDLED)?,
        })
    }

    /// Register the self-pipe with a poller under `token`. Signals that
    /// arrived since [`install`](Self::install) make it readable at once.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.signals, token, Interest::READABLE)
    }

    /// Every signal delivered since the last call, oldest first.
    ///
    /// Reads the self-pipe until it is empty (edge-triggered rule).
    pub fn pending(&mut self) -> impl Iterator<Item = SignalEvent> + '_ {
        self.signals.pending().filter_map(meaning)
    }
}

/// Unblock the handled signals for the calling thread (and the threads it
/// starts later). A parent may start us with them blocked — a shell's or a
/// supervisor's inherited mask, or on purpose to queue a signal sent before
/// our handlers exist — and a blocked quit signal would wait forever.
/// Call it after [`SignalSource::install`], so a signal that was pending
/// goes to our handler, not to the default action.
pub fn unblock() -> io::Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it,
    // and pthread_sigmask only reads it (no old mask asked for).
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in HANDLED {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut())
    };
    match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

fn meaning(signal: i32) -> Option<SignalEvent> {
    match signal {
        SIGINT => Some(SignalEvent::Quit("SIGINT")),
        SIGTERM => Some(SignalEvent::Quit("SIGTERM")),
        SIGQUIT => Some(SignalEvent::Quit("SIGQUIT")),
        SIGUSR1 => Some(SignalEvent::Stats),
        SIGUSR2 => Some(SignalEvent::Upgrade),
        SIGHUP => Some(SignalEvent::Reload),
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
        assert_eq!(meaning(SIGHUP), Some(SignalEvent::Reload));
        assert_eq!(meaning(signal_hook::consts::SIGWINCH), None);
    }
}
