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
//! [`preamble`](crate::io::proxy::preamble), `proto::proxy` and `tests/proxy.rs`.
//!
//! [`Stream`] is what the loop hands every connection: the plain socket —
//! the echo fast path, one `match` arm — or, with `--tls-cert`, the TLS
//! stage over it. The enum keeps the connection type the same for both, so
//! one slab holds them and the plain path pays one branch, not a vtable.

use std::io::{self, Read, Write};
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;

use crate::base::close::StageFailure;
use crate::base::counters::Stats;
use crate::base::human::ConnName;
use crate::io::proxy::{Cidr, ProxyMode};
#[cfg(feature = "tls")]
use crate::io::tls::TlsConfig;
use crate::io::transport::{StageDeadline, Transport};

/// What the byte path below the protocol is made of: the io layer's part
/// of the configuration.
#[derive(Clone, Debug)]
pub struct Stages {
    /// Which PROXY protocol header every connection must start with.
    pub proxy: ProxyMode,
    /// Peers allowed to send PROXY headers; others are closed on accept.
    pub proxy_from: Vec<Cidr>,
    /// Terminate TLS on every connection with this certificate and key
    /// (`None`: plain TCP).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<TlsConfig>>,
}

impl Default for Stages {
    fn default() -> Self {
        Self {
            proxy: ProxyMode::Off,
            proxy_from: Cidr::loopback(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl Stages {
    /// Whether a connection needs a stage between its socket and its
    /// protocol (TLS): then loops run on [`Stream`], else on a bare socket.
    pub fn needed(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return true;
        }
        false
    }

    /// Whether `peer` may send a PROXY header (always, when none is
    /// expected: then it sends none).
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.proxy == ProxyMode::Off || self.proxy_from.iter().any(|c| c.contains(peer))
    }

    /// Re-read what can change while serving (the TLS certificate and
    /// key); a failure keeps what is in use, and says why.
    pub fn reload(&self, cause: &str) {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => log::info!(
                    "{cause}: reloaded TLS certificate {}: new handshakes use it",
                    tls.cert_path().display()
                ),
                Err(e) => log::error!("{cause}: TLS reload failed, keeping the old pair: {e}"),
            }
            return;
        }
        log::debug!("{cause}: no TLS certificate to reload");
    }

    /// What the start-up line says of them: `, proxy-protocol V2 from
    /// 127.0.0.0/8, TLS cert.pem`, or nothing.
    pub fn describe(&self) -> String {
        let proxy = match self.proxy {
            ProxyMode::Off => String::new(),
            mode => {
                let from: Vec<String> = self.proxy_from.iter().map(Cidr::to_string).collect();
                format!(", proxy-protocol {mode:?} from {}", from.join(","))
            }
        };
        #[cfg(feature = "tls")]
        let proxy = match &self.tls {
            Some(tls) => format!("{proxy}, TLS {}", tls.cert_path().display()),
            None => proxy,
        };
        proxy
    }
}

/// The socket a connection reads, through whichever stages it has.
#[derive(Debug)]
pub enum Stream {
    /// The socket itself.
    Plain(TcpStream),
    /// TLS over the socket.
    #[cfg(feature = "tls")]
    Tls(Box<crate::io::tls::TlsStream<TcpStream>>),
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

    fn failure(&self) -> Option<StageFailure> {
        match self {
            Stream::Plain(_) => None,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.failure(),
        }
    }

    #[allow(unused_variables)]
    fn take_counts(&mut self, stats: &mut Stats) {
        match self {
            Stream::Plain(_) => {}
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.take_counts(stats),
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
    /// The stream for socket `sock`, accepted into the slab slot `name` holds.
    fn accept(sock: TcpStream, name: ConnName, stages: &Stages, now: Instant) -> io::Result<Self>;
}

impl Accept for Stream {
    /// The stages `config` asks for, over an accepted socket in slab slot
    /// `name`. A PROXY preamble (if configured) is read before TLS starts.
    #[allow(unused_variables)]
    fn accept(sock: TcpStream, name: ConnName, stages: &Stages, now: Instant) -> io::Result<Self> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &stages.tls {
            let preamble = stages.proxy != ProxyMode::Off;
            let deadline = tls.handshake_timeout.map(|t| now + t);
            let stream =
                crate::io::tls::TlsStream::new(sock, tls.current(), name, preamble, deadline)?;
            return Ok(Stream::Tls(Box::new(stream)));
        }
        Ok(Stream::Plain(sock))
    }
}

impl Accept for TcpStream {
    #[inline]
    fn accept(
        sock: TcpStream,
        _name: ConnName,
        stages: &Stages,
        _now: Instant,
    ) -> io::Result<Self> {
        if stages.needed() {
            // A loop chosen for a config that asks for no stage; serving
            // this one in the clear would be worse than refusing it.
            return Err(io::Error::other("this loop runs without stages (TLS)"));
        }
        Ok(sock)
    }
}
