//! The accept side: the Go tutorial's accept goroutine, without its spin.
//!
//! The Go loop `for { conn, err := l.Accept(); if err != nil { continue } }`
//! burns a core when accept keeps failing. Here every accept error has a
//! class, and only one class is retried at once:
//!
//! | class | errors | what we do |
//! |---|---|---|
//! | skip | `ECONNABORTED`, `EPROTO`, network errors `accept(2)` says to treat like `EAGAIN` | drop that one connection, keep accepting |
//! | exhausted | `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM` | pause accepting; retry after a back-off (5 ms doubling to 1 s, reset by a success) |
//! | other | anything else | the same pause: it is never safe to spin |
//!
//! While paused, listener events are ignored: the loop sleeps until the
//! back-off timer fires. Warnings are rate-limited to one a second.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};

use crate::base::counters::Stats;
use crate::base::error::Error;
use crate::reactor::tokens::{LISTENERS, MAX_LISTENERS};

/// Shortest accept back-off.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest accept back-off.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Create a non-blocking, close-on-exec listening socket.
pub fn bind(addr: SocketAddr, backlog: i32) -> Result<std::net::TcpListener, Error> {
    let fail = |source| Error::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    // Rebind at once after a restart even while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(backlog).map_err(fail)?;
    Ok(socket.into())
}

/// How an accept error is handled; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptErrorClass {
    /// That one connection failed; accept the next.
    Skip,
    /// Out of descriptors or memory: back off.
    Exhausted,
    /// Unknown: back off too.
    Other,
}

/// Classify an `accept` error.
pub fn classify(err: &io::Error) -> AcceptErrorClass {
    match err.raw_os_error() {
        Some(
            libc::ECONNABORTED
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH,
        ) => AcceptErrorClass::Skip,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            AcceptErrorClass::Exhausted
        }
        _ => AcceptErrorClass::Other,
    }
}

/// What one call to [`Listener::accept`] produced.
#[derive(Debug)]
pub enum Accepted {
    /// A new connection.
    Conn(TcpStream, SocketAddr),
    /// The queue is empty (`WouldBlock`).
    Empty,
    /// Accepting is paused until this instant; arm a timer for it.
    PausedUntil(Instant),
    /// The socket no longer listens (`EINVAL`: it was shut down).
    Closed,
}

/// The listening socket and its back-off state.
#[derive(Debug)]
pub struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    backoff: Duration,
    paused_until: Option<Instant>,
    last_warn: Option<Instant>,
    suppressed: u64,
}

/// Make listening sockets non-blocking and register socket `i` (at most
/// [`MAX_LISTENERS`]) with `registry` as `Token(LISTENERS - i)`: what every
/// loop does with the sockets it is given.
pub(crate) fn register_all(
    registry: &mio::Registry,
    sockets: Vec<std::net::TcpListener>,
) -> Result<Vec<Listener>, Error> {
    let setup = |what| move |source| Error::Setup { what, source };
    let mut listeners = Vec::with_capacity(sockets.len());
    for (i, socket) in sockets.into_iter().take(MAX_LISTENERS).enumerate() {
        socket.set_nonblocking(true).map_err(setup("a listener"))?;
        let mut listener =
            Listener::new(TcpListener::from_std(socket)).map_err(setup("a listener"))?;
        registry
            .register(
                listener.socket_mut(),
                mio::Token(LISTENERS - i),
                mio::Interest::READABLE,
            )
            .map_err(setup("the listener registration"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

impl Listener {
    /// Wrap a bound, listening socket.
    pub fn new(socket: TcpListener) -> io::Result<Self> {
        let addr = socket.local_addr()?;
        Ok(Self {
            socket,
            addr,
            backoff: BACKOFF_MIN,
            paused_until: None,
            last_warn: None,
            suppressed: 0,
        })
    }

    /// The address actually bound (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The socket, for registration.
    pub(crate) fn socket_mut(&mut self) -> &mut TcpListener {
        &mut self.socket
    }

    /// A back-off timer fired: accept again if this listener's pause is over.
    pub(crate) fn resume_if_due(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
        }
    }

    /// Accept one connection, skipping failed ones, pausing on exhaustion.
    pub fn accept(&mut self, now: Instant, stats: &mut Stats) -> Accepted {
        if let Some(until) = self.paused_until.filter(|&until| now < until) {
            return Accepted::PausedUntil(until);
        }
        loop {
            match self.socket.accept() {
                Ok((stream, peer)) => {
                    self.backoff = BACKOFF_MIN;
                    return Accepted::Conn(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::Empty,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    log::debug!("listener {} was shut down: no longer accepting", self.addr);
                    return Accepted::Closed;
                }
                Err(e) => {
                    let class = classify(&e);
                    *match class {
                        AcceptErrorClass::Skip => &mut stats.accept_skipped,
                        AcceptErrorClass::Exhausted => &mut stats.accept_exhausted,
                        AcceptErrorClass::Other => &mut stats.accept_other,
                    } += 1;
                    match class {
                        AcceptErrorClass::Skip => {
                            log::debug!(
                                "accept on {}: skipped a failed connection: {e}",
                                self.addr
                            );
                            continue;
                        }
                        AcceptErrorClass::Exhausted | AcceptErrorClass::Other => {
                            let until = now + self.backoff;
                            self.warn(now, &e);
                            self.paused_until = Some(until);
                            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                            return Accepted::PausedUntil(until);
                        }
                    }
                }
            }
        }
    }

    fn warn(&mut self, now: Instant, err: &io::Error) {
        if self
            .last_warn
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        log::warn!(
            "accept on {} failed: {err}; pausing accept for {:?}{}",
            self.addr,
            self.backoff,
            if self.suppressed > 0 {
                format!(" ({} similar warnings suppressed)", self.suppressed)
            } else {
                String::new()
            }
        );
        self.last_warn = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_so_that_nothing_spins() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(classify(&os(libc::ECONNABORTED)), AcceptErrorClass::Skip);
        assert_eq!(classify(&os(libc::EMFILE)), AcceptErrorClass::Exhausted);
        assert_eq!(classify(&os(libc::ENFILE)), AcceptErrorClass::Exhausted);
        assert_eq!(classify(&os(libc::ENOBUFS)), AcceptErrorClass::Exhausted);
        assert_eq!(classify(&os(libc::ENOMEM)), AcceptErrorClass::Exhausted);
        assert_eq!(classify(&os(libc::EBADF)), AcceptErrorClass::Other);
    }

    #[test]
    fn bind_failure_names_the_address_and_the_os_reason() {
        let first = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let taken = first.local_addr().unwrap();
        let err = bind(taken, 16).unwrap_err().to_string();
        assert!(err.contains(&taken.to_string()), "{err}");
        assert!(err.contains("in use"), "{err}");
    }
}
