//! The Go model's `signal.Notify` channel, as one more token in the loop.
//!
//! `signal_hook_mio` installs async-signal-safe handlers that write to a
//! self-pipe; the pipe's read end is registered with our `Poll`, so a signal
//! is just another readiness event. This module maps raw signal numbers to
//! the [`Control`] they ask for and owns nothing else.
//!
//! * `SIGINT`, `SIGTERM`, `SIGQUIT`: quit. The first starts the graceful
//!   drain, a second one during the drain forces it.
//! * `SIGUSR1`: log one line of live counters.
//! * `SIGUSR2`: start a zero-downtime binary upgrade (see `crate::process::upgrade`).
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

use crate::reactor::control::{Control, Request};

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

    /// A lone loop's signals (`handle`: the config says it owns them):
    /// installed and registered as [`SIGNALS`](crate::reactor::tokens::SIGNALS); `None` under a supervisor.
    pub(crate) fn for_loop(handle: bool, registry: &Registry) -> io::Result<Option<Self>> {
        if !handle {
            return Ok(None);
        }
        let mut signals = Self::install()?;
        signals.register(registry, crate::reactor::tokens::SIGNALS)?;
        Ok(Some(signals))
    }

    /// Every signal delivered since the last call, oldest first, as the
    /// request it makes.
    ///
    /// Reads the self-pipe until it is empty (edge-triggered rule).
    pub fn pending(&mut self) -> impl Iterator<Item = Request> + '_ {
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

/// The request a signal makes (see [`Control`]).
fn meaning(signal: i32) -> Option<Request> {
    let (control, from) = match signal {
        SIGINT => (Control::Quit, "SIGINT"),
        SIGTERM => (Control::Quit, "SIGTERM"),
        SIGQUIT => (Control::Quit, "SIGQUIT"),
        SIGUSR1 => (Control::Stats, "SIGUSR1"),
        SIGUSR2 => (Control::Upgrade, "SIGUSR2"),
        SIGHUP => (Control::Reload, "SIGHUP"),
        _ => return None,
    };
    Some(Request { control, from })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signal_is_a_control_and_carries_its_name() {
        let asks = |s| meaning(s).map(|r| (r.control, r.from));
        assert_eq!(asks(SIGTERM), Some((Control::Quit, "SIGTERM")));
        assert_eq!(asks(SIGINT), Some((Control::Quit, "SIGINT")));
        assert_eq!(asks(SIGQUIT), Some((Control::Quit, "SIGQUIT")));
        assert_eq!(asks(SIGUSR1), Some((Control::Stats, "SIGUSR1")));
        assert_eq!(asks(SIGUSR2), Some((Control::Upgrade, "SIGUSR2")));
        assert_eq!(asks(SIGHUP), Some((Control::Reload, "SIGHUP")));
        assert_eq!(meaning(signal_hook::consts::SIGWINCH), None);
    }
}
