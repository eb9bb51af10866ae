//! Errors that stop the server as a whole, as a small enum with `Display`.
//!
//! Only start-up and event-loop failures live here. A single connection's I/O
//! error is not an [`Error`]: it ends that connection with a
//! [`CloseReason`](crate::reactor::conn::CloseReason) and the loop goes on.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Why the server could not start, or why its event loop had to stop.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The listening socket could not be created, bound or put into listen mode.
    Bind {
        /// The address we tried to listen on.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// Setting up the poller, waker or signal handlers failed.
    Setup {
        /// Which piece failed, in words.
        what: &'static str,
        /// What the operating system said.
        source: io::Error,
    },
    /// `Poll::poll` failed with something other than `Interrupted`.
    Poll(io::Error),
    /// The event loops asked for would not fit in the descriptor limit
    /// (`RLIMIT_NOFILE`); none was started.
    TooManyLoops {
        /// How many were asked for.
        loops: usize,
        /// What they need, the limit, and how many would fit.
        fit: crate::base::rlimit::TooManyLoops,
    },
    /// A descriptor handed over by `LISTEN_FDS` is unusable.
    Inherited {
        /// The descriptor number.
        fd: i32,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::Setup { what, source } => write!(f, "cannot set up {what}: {source}"),
            Error::Poll(source) => write!(f, "event loop failed: {source}"),
            Error::Inherited { fd, problem } => {
                write!(f, "inherited descriptor {fd} (LISTEN_FDS) {problem}")
            }
            Error::TooManyLoops { loops, fit } => write!(
                f,
                "{loops} event loops need about {} descriptors; the limit is {} (ulimit -n): at most {} fit",
                fit.needed, fit.limit, fit.most
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Setup { source, .. } | Error::Poll(source) => {
                Some(source)
            }
            Error::Inherited { .. } | Error::TooManyLoops { .. } => None,
        }
    }
}
