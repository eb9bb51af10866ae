//! The byte path of one connection, as stages, and [`Stream`], which holds
//! the ones below the protocol:
//!
//! ```text
//!   socket ──► PROXY preamble ──► TLS ──► protocol
//!   (Stream)   (conn::preamble,   (tls::session,   (proto::*, fed by Conn)
//!               sans-IO, fed by    a Transport
//!               Conn first)        over the socket)
//! ```
//!
//! A stage below the protocol is a [`Transport`]: the connection reads and
//! writes it as it would a socket, and asks it through the trait's hooks
//! what only a stage can know — bytes it owes the socket
//! ([`Transport::owed`]), a deadline of its own (the TLS handshake), how to
//! end its output (close_notify before our FIN), whether it takes the
//! bytes that followed a PROXY header (TLS does: they are its records), and
//! — told, not asked — that the kernel reported the peer's FIN.
//! Each stage is tested alone over an in-memory transport
//! (`tests/tls.rs`, `tests/fuzz_tls.rs`); the PROXY preamble, which is no
//! `Transport` but a sans-IO stage the connection feeds, in
//! [`preamble`](super::preamble), `proto::proxy` and `tests/proxy.rs`.
//!
//! [`Stream`] is what the loop hands every connection: the plain socket —
//! the echo fast path, one `match` arm — or, with `--tls-cert`, the TLS
//! stage over it. The enum keeps the connection type the same for both, so
//! one slab holds them and the plain path pays one branch, not a vtable.

use std::error::Error;
use std::fmt;
use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;

use crate::config::Config;
use crate::reactor::conn::{StageDeadline, Transport};

/// A stage's reason for closing a connection, carried inside an
/// `io::Error` so that it reaches the close log and the counters as
/// [`CloseReason::ProtocolError`](super::CloseReason::ProtocolError).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageError(pub &'static str);

impl StageError {
    /// A reason, for the log line `closed: protocol error: …`.
    pub fn new(why: &'static str) -> Self {
        Self(why)
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Error for StageError {}

impl From<StageError> for io::Error {
    fn from(e: StageError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The socket a connection reads, through whichever stages it has.
#[derive(Debug)]
pub enum Stream {
    /// The socket itself.
    Plain(TcpStream),
    /// TLS over the socket.
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::TlsStream<TcpStream>>),
}

impl Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Transport for Stream {
    #[inline(always)]
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => Transport::recv(s, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }

    #[inline(always)]
    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => Transport::send(s, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown_write(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.shutdown_write(),
        }
    }

    #[inline]
    fn owed(&self) -> usize {
        match self {
            Stream::Plain(_) => 0,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.owed(),
        }
    }

    fn flush_owed(&mut self) -> io::Result<bool> {
        match self {
            Stream::Plain(_) => Ok(true),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush_owed(),
        }
    }

    fn end_output(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.end_output(),
        }
    }

    #[allow(unused_variables)]
    fn preamble_done(&mut self, rest: &[u8]) -> bool {
        match self {
            Stream::Plain(_) => false,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.preamble_done(rest),
        }
    }

    fn handshaking(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.handshaking(),
        }
    }

    fn stage_deadline(&self) -> Option<StageDeadline> {
        match self {
            Stream::Plain(_) => None,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.stage_deadline(),
        }
    }

    fn peer_fin(&mut self) {
        match self {
            Stream::Plain(_) => {}
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.peer_fin(),
        }
    }
}

/// How a loop makes a connection's byte stream from an accepted socket.
///
/// [`Stream`] builds the stages the config asks for (TLS, say), and every
/// call on it is a `match` on its kind; a bare [`TcpStream`] has no stage
/// and nothing to dispatch: the supervisor runs its loops on it when the
/// config asks for no stage, which keeps a plain deployment's cost per
/// message what it would be without TLS compiled in (~15 instructions).
pub trait Accept: Transport + Sized {
    /// The stream for socket `sock`, accepted into slab slot `key`.
    fn accept(sock: TcpStream, key: usize, config: &Config, now: Instant) -> io::Result<Self>;
}

impl Accept for Stream {
    /// The stages `config` asks for, over an accepted socket in slab slot
    /// `key`. A PROXY preamble (if configured) is read before TLS starts.
    #[allow(unused_variables)]
    fn accept(sock: TcpStream, key: usize, config: &Config, now: Instant) -> io::Result<Self> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &config.tls {
            let preamble = config.proxy != crate::proto::proxy::ProxyMode::Off;
            let deadline = tls.handshake_timeout.map(|t| now + t);
            let stream = crate::tls::TlsStream::new(sock, tls.current(), key, preamble, deadline)?;
            return Ok(Stream::Tls(Box::new(stream)));
        }
        Ok(Stream::Plain(sock))
    }
}

impl Accept for TcpStream {
    #[inline]
    fn accept(sock: TcpStream, _key: usize, config: &Config, _now: Instant) -> io::Result<Self> {
        if config.needs_stages() {
            // A loop chosen for a config that asks for no stage; serving
            // this one in the clear would be worse than refusing it.
            return Err(io::Error::other("this loop runs without stages (TLS)"));
        }
        Ok(sock)
    }
}
