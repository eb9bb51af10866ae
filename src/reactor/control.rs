//! What a loop, or the supervisor of several, can be asked to do — one
//! vocabulary whoever asks: a signal ([`crate::reactor::signals`]), a
//! handle on another thread, a scrape of `/metrics`.
//!
//! | control | signal | a loop | the supervisor |
//! |---|---|---|---|
//! | [`Control::Quit`] | `SIGINT`, `SIGTERM`, `SIGQUIT` | stop accepting, drain; a second one forces | the same, for every loop |
//! | [`Control::Force`] | — | cut every connection now | the same, for every loop |
//! | [`Control::Reload`] | `SIGHUP` | [`reload`]: the TLS pair, the access log | the same, once for the process |
//! | [`Control::Stats`] | `SIGUSR1` | report its counters | sum every loop's, log the line |
//! | [`Control::Upgrade`] | `SIGUSR2` | (not a loop's: ignored, with a warning) | start the new binary, hand the sockets over |

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use mio::Waker;

use crate::reactor::config::Config;

/// A request to a loop or to the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Control {
    /// Stop accepting and drain every connection; if a drain is under way,
    /// force it.
    Quit,
    /// Cut every connection now (exit code 3 if any was open).
    Force,
    /// Re-read what can change without a restart: the TLS certificate and
    /// key, and the access log's file (reopened after logrotate).
    Reload,
    /// Report the counters (`SIGUSR1` logs their sum).
    Stats,
    /// Replace the binary without dropping a connection.
    Upgrade,
}

/// A control and who asked for it (`SIGTERM`, `a handle`): the log says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// What is asked.
    pub control: Control,
    /// Who asked, for the log.
    pub from: &'static str,
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Control::Quit => "quit",
            Control::Force => "force",
            Control::Reload => "reload",
            Control::Stats => "stats",
            Control::Upgrade => "upgrade",
        })
    }
}

/// `SIGHUP`, as nginx's `HUP`: re-read the TLS pair (every loop's next
/// accept uses it; live connections keep theirs) and reopen the access
/// log (`reopen_log`, when there is one). The one place that does it, for
/// a lone loop and for the supervisor.
pub fn reload(config: &Config, reopen_log: Option<impl FnOnce()>, from: &str) {
    config.reload(from);
    match reopen_log {
        Some(reopen) => {
            log::info!("{from}: reopening the access log");
            reopen();
        }
        None => log::debug!("{from}: no access log to reopen"),
    }
}

// Requests from other threads: bits in one atomic, taken all at once.
pub(crate) const REQUEST_SHUTDOWN: u8 = 1;
pub(crate) const REQUEST_FORCE: u8 = 2;
pub(crate) const REQUEST_STATS: u8 = 4;
/// A slot freed somewhere in the process (see [`crate::reactor::admission`]).
pub(crate) const REQUEST_ACCEPT: u8 = 8;
/// Every loop has stopped accepting and posted what it sent before: drain
/// the connections now (see the server's `begin_drain`).
pub(crate) const REQUEST_DRAIN_CONNS: u8 = 16;
/// [`Control::Reload`] from a handle.
pub(crate) const REQUEST_RELOAD: u8 = 32;

/// Asks a running server to shut down, from any thread.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    waker: Arc<Waker>,
    request: Arc<AtomicU8>,
}

impl ShutdownHandle {
    /// A handle reaching the loop that polls `waker` and reads `request`.
    pub(crate) fn new(waker: Arc<Waker>, request: Arc<AtomicU8>) -> Self {
        Self { waker, request }
    }
}

impl ShutdownHandle {
    /// Like a quit signal: the first starts the graceful drain, a later
    /// one during the drain forces it.
    pub fn shutdown(&self) {
        self.send(Control::Quit);
    }

    /// Ask for `control` (see [`Control`]): a loop does what a signal
    /// asking for it would make it do; `Upgrade` is the supervisor's alone.
    pub fn send(&self, control: Control) {
        match control {
            Control::Quit => self.ask(REQUEST_SHUTDOWN),
            Control::Force => self.ask(REQUEST_FORCE),
            Control::Stats => self.ask(REQUEST_STATS),
            Control::Reload => self.ask(REQUEST_RELOAD),
            Control::Upgrade => log::warn!("upgrade asked of a loop: only a supervisor upgrades"),
        }
    }

    /// Force-close every connection now.
    pub fn force(&self) {
        self.ask(REQUEST_FORCE);
    }

    /// Ask for the loop's counters; they arrive through the hook set with
    /// `Server::on_stats`.
    pub(crate) fn request_stats(&self) {
        self.ask(REQUEST_STATS);
    }

    /// A connection slot was freed (by any loop): try to accept again.
    pub(crate) fn accept_again(&self) {
        self.ask(REQUEST_ACCEPT);
    }

    /// Every loop of the process has stopped accepting (and routed what it
    /// had sent): a loop waiting for that drains its connections now.
    pub(crate) fn drain_connections(&self) {
        self.ask(REQUEST_DRAIN_CONNS);
    }

    /// Both handles reach the same loop.
    pub(crate) fn same_loop(&self, other: &ShutdownHandle) -> bool {
        Arc::ptr_eq(&self.request, &other.request)
    }

    fn ask(&self, bit: u8) {
        self.request.fetch_or(bit, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}
