//! Why a connection ended: the one vocabulary the loop, the counters, the
//! logs and the cleanup hook share.

use std::fmt;
use std::io;

/// Why a forced close happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForceCause {
    /// The drain deadline (`--drain-timeout`) passed.
    DrainDeadline,
    /// A second quit signal (or `force`) arrived during the drain.
    SecondSignal,
}

/// Why a connection ended; handed to the cleanup hook and logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer half-closed; everything owed was written first.
    PeerClosed,
    /// The protocol ended the conversation; everything owed was written.
    Done,
    /// The peer broke the protocol (the protocol's own words).
    ProtocolError(&'static str),
    /// A stage of the byte path below the protocol (the PROXY header, TLS)
    /// refused the connection.
    Stage(StageFailure),
    /// Drained by a graceful shutdown: owed bytes written, FIN sent.
    Drained,
    /// The peer reset the connection between messages: nothing was owed to
    /// it and no request was half-received, so nothing was lost. Load tools
    /// (`wrk`, `ab`) end connections this way after their last response.
    PeerAborted,
    /// The peer reset the connection, or we wrote after it closed, while
    /// output was owed or a message was half-received.
    Reset,
    /// Another I/O error.
    Io(io::ErrorKind),
    /// No traffic in either direction for the idle timeout.
    IdleTimeout,
    /// Shutdown could not wait for this connection.
    Forced(ForceCause),
    /// Messages for it piled up past `Limits::slow_consumer_limit`: it
    /// does not read as fast as it is sent to.
    SlowConsumer,
    /// Forwarding (`--upstream`): no upstream took the connection — every
    /// one tried was refused or timed out.
    NoUpstream,
}

impl CloseReason {
    /// Classify an I/O error that ended a connection. (A stage's refusal
    /// is not an I/O error: the stage says it, typed, through
    /// [`Transport::failure`](crate::io::transport::Transport::failure).)
    pub(crate) fn from_io(err: &io::Error) -> Self {
        use io::ErrorKind::*;
        match err.kind() {
            ConnectionReset | BrokenPipe | ConnectionAborted => CloseReason::Reset,
            kind => CloseReason::Io(kind),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed"),
            CloseReason::Done => f.write_str("protocol closed"),
            CloseReason::ProtocolError(msg) => write!(f, "protocol error: {msg}"),
            CloseReason::Stage(why) => write!(f, "protocol error: {why}"),
            CloseReason::Drained => f.write_str("drained"),
            CloseReason::PeerAborted => f.write_str("reset by peer between messages"),
            CloseReason::Reset => f.write_str("reset by peer"),
            CloseReason::Io(kind) => write!(f, "I/O error: {kind}"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::SlowConsumer => f.write_str("slow consumer"),
            CloseReason::NoUpstream => f.write_str("no upstream available"),
            CloseReason::Forced(ForceCause::DrainDeadline) => {
                f.write_str("forced: drain deadline passed")
            }
            CloseReason::Forced(ForceCause::SecondSignal) => {
                f.write_str("forced: second quit signal")
            }
        }
    }
}

/// Why a stage of the byte path refused a connection.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageFailure {
    /// The PROXY header stage.
    Proxy(ProxyFailure),
    /// The TLS stage.
    Tls(TlsFailure),
}

/// Why a PROXY header was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyFailure {
    /// The first bytes are not a PROXY header (or not the version required).
    Missing,
    /// A v1 line longer than the spec's 107 bytes.
    V1TooLong,
    /// A v1 line that does not parse.
    V1Malformed,
    /// A v2 header whose stated length is over the cap.
    V2TooLong,
    /// A v2 header that does not parse.
    V2Malformed,
    /// This build has no `proxy` feature.
    Unsupported,
    /// The header was not complete within `--proxy-timeout`.
    TimedOut,
    /// The peer is not in `--proxy-from`, so may not name a client.
    Untrusted,
}

/// Why the TLS stage refused a connection.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// Plain HTTP arrived on the TLS port (answered with a 400 first).
    PlainHttp,
    /// A record that is malformed or oversized: not TLS, probably.
    BadRecord,
    /// A handshake message or record over rustls' size limits.
    TooLarge,
    /// A message the handshake did not expect.
    Unexpected,
    /// No version, cipher suite or extension in common.
    Incompatible,
    /// The peer broke the handshake's rules.
    Misbehaved,
    /// The peer sent a fatal alert.
    AlertReceived,
    /// A record failed to decrypt.
    DecryptError,
    /// No ALPN protocol in common.
    NoApplicationProtocol,
    /// Another handshake failure.
    HandshakeFailed,
    /// The peer closed before the handshake completed.
    PeerClosedInHandshake,
    /// The handshake did not finish within `--tls-handshake-timeout`.
    HandshakeTimeout,
}

impl fmt::Display for StageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageFailure::Proxy(why) => fmt::Display::fmt(why, f),
            StageFailure::Tls(why) => fmt::Display::fmt(why, f),
        }
    }
}

impl fmt::Display for ProxyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyFailure::Missing => "no PROXY header",
            ProxyFailure::V1TooLong => "PROXY v1 header over 107 bytes",
            ProxyFailure::V1Malformed => "malformed PROXY v1 header",
            ProxyFailure::V2TooLong => "PROXY v2 header over the length cap",
            ProxyFailure::V2Malformed => "malformed PROXY v2 header",
            ProxyFailure::Unsupported => "PROXY headers need tcp-reactor's `proxy` feature",
            ProxyFailure::TimedOut => "no complete PROXY header in time",
            ProxyFailure::Untrusted => "untrusted PROXY source",
        })
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsFailure::PlainHttp => "plain HTTP sent to the TLS port",
            TlsFailure::BadRecord => "TLS: malformed or oversized record (not TLS?)",
            TlsFailure::TooLarge => "TLS: handshake message or record too large",
            TlsFailure::Unexpected => "TLS: unexpected message",
            TlsFailure::Incompatible => "TLS: no common version, cipher suite or extension",
            TlsFailure::Misbehaved => "TLS: peer misbehaved",
            TlsFailure::AlertReceived => "TLS: peer sent a fatal alert",
            TlsFailure::DecryptError => "TLS: record failed to decrypt",
            TlsFailure::NoApplicationProtocol => "TLS: no common ALPN protocol",
            TlsFailure::HandshakeFailed => "TLS: handshake failed",
            TlsFailure::PeerClosedInHandshake => "TLS: peer closed during the handshake",
            TlsFailure::HandshakeTimeout => "TLS handshake not finished in time",
        })
    }
}
