//! The TLS stage of a connection's byte path: a rustls `ServerConnection`
//! between the socket and the protocol.
//!
//! [`TlsStream`] is a [`Transport`]: the connection reads plaintext from it
//! and writes plaintext to it, exactly as it would a socket. Inside, rustls
//! is sans-IO (`read_tls` → `process_new_packets` → `reader()`, and
//! `writer()` → `write_tls`); this type only moves bytes between it and the
//! socket, and never registers, re-registers or polls anything: the
//! connection stays registered once, for readable and writable, and this
//! stage works from the readiness the connection remembers.
//!
//! # Never strand bytes rustls holds
//! With edge-triggered readiness, bytes that have left the kernel raise no
//! edge. rustls can hold decrypted plaintext, or owe TLS records, at a
//! moment when the socket says `WouldBlock`. So:
//! * [`read`](Read::read) returns a **short** count (or `WouldBlock`) only
//!   when rustls holds no more plaintext *and* the socket proved empty
//!   (`WouldBlock`, or a short read of its own). Otherwise it fills the
//!   caller's buffer completely, so the connection keeps its `readable`
//!   flag and reads again (this turn, or next turn when its fairness budget
//!   is spent).
//! * A short read is trusted even when it decrypted nothing (half a
//!   record, a handshake flight in parts): any later arrival raises a new
//!   edge. The one exception is the peer's FIN, which raises no second
//!   edge: once the readiness event has said `read-closed`
//!   ([`peer_fin`](Transport::peer_fin)), the stage reads on to `Ok(0)`.
//! * What rustls owes the socket is [`owed`](Transport::owed): the
//!   connection counts it in `wants_write` (so the next writable edge
//!   flushes it) and in its watermarks.
//! * Bytes already read past a PROXY header are handed in with
//!   [`preamble_done`](Transport::preamble_done) and read before the socket.
//!
//! # One read per arrival
//! rustls reading a socket itself asks for at most 4 KiB at a time: five
//! `recvfrom` for one 16 KiB record, where tokio-rustls makes the same
//! five. So the stage reads the socket into the caller's buffer, as a
//! plain connection would (up to 48 KiB at once), and hands those bytes to
//! rustls; the plaintext they decrypt to is written back into the same
//! buffer, behind the records still to be handed over. It never overtakes
//! them: each record's plaintext is shorter than the record, and the one
//! record rustls may already hold part of gets `PLAINTEXT_ROOM` ahead of
//! where the socket's bytes land. The price is one copy in user space (the
//! records, from the buffer into rustls: a `memcpy` of 16 KiB, against four
//! syscalls saved). A buffer with too little room left is read the old
//! way, by rustls. (`tests/fuzz_tls.rs` counts the calls.)
//!
//! # Bounds
//! rustls' own buffers: at most one record of input being reassembled (up
//! to 64 KiB during the handshake, 16 KiB + 2 KiB after), at most 16 KiB of
//! decrypted plaintext not yet read (rustls' default; we read it out before
//! reading more from the socket), and at most [`SEND_LIMIT`] of sealed
//! records owed: plaintext is accepted only once the previous records have
//! all gone, so what the connection's `out` queue holds stays in its queue,
//! and backpressure sees both.
//!
//! # Bad input
//! A peer that does not speak TLS is closed with a reason (a
//! [`TlsFailure`]): a first record that is not a handshake, a malformed or
//! oversized record, a fatal alert, a handshake not done in time. Plain
//! HTTP sent to the TLS port gets what nginx answers, a plain-text `400`
//! saying to use `https://`, and is then closed.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rustls::{ServerConfig, ServerConnection};

use super::client_hello::{self, Sni};
use crate::base::close::{StageFailure, TlsFailure};
use crate::base::counters::Stats;
use crate::base::human::ConnName;
use crate::io::transport::{StageDeadline, Transport};

/// Most sealed TLS bytes owed to the socket at once (rustls' buffer limit).
pub const SEND_LIMIT: usize = 64 * 1024;

/// TLS record overhead at most per record (TLS 1.2 AES-GCM: 5 header + 8
/// explicit nonce + 16 tag; TLS 1.3: 5 + 1 + 16), for counting owed bytes.
const RECORD_OVERHEAD: usize = 29;
const MAX_FRAGMENT: usize = 16 * 1024;

/// Room kept in the caller's buffer, ahead of the socket's bytes, for the
/// plaintext of the one record rustls may hold part of already (a record's
/// plaintext is at most 2^14 bytes, in TLS 1.2 and 1.3).
pub(crate) const PLAINTEXT_ROOM: usize = MAX_FRAGMENT;

/// The least the stage reads into the caller's buffer past
/// [`PLAINTEXT_ROOM`]; with less room left, rustls reads the socket
/// itself (as much as rustls' own 4 KiB reads, so no more calls).
const STAGED_READ_MIN: usize = 4 * 1024;

/// What nginx answers plain HTTP sent to its TLS port, near enough.
pub(crate) const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain\r\n\
Content-Length: 58\r\n\
Connection: close\r\n\
\r\n\
This port speaks HTTPS: send the request to https:// here\n";

/// The TLS stage over a socket `S`.
#[derive(Debug)]
pub struct TlsStream<S> {
    sock: S,
    tls: ServerConnection,
    /// The connection's name in logs.
    name: ConnName,
    /// Bytes read from the socket before this stage began (what followed a
    /// PROXY header): given to rustls before anything else is read.
    pending: Vec<u8>,
    /// A PROXY preamble is still being read: bytes pass through untouched.
    preamble: bool,
    /// No byte from the peer has reached rustls yet (the first is checked).
    fresh: bool,
    /// Sealed bytes owed to the socket (estimated from plaintext accepted,
    /// less what `write_tls` wrote); exact to within record overhead.
    owed: usize,
    /// close_notify has been queued.
    closing: bool,
    /// While the handshake runs: when it must be done (`None`: no limit).
    handshake_deadline: Option<Instant>,
    /// The handshake finished (counted once, in the loop's metrics).
    handshaken: bool,
    /// The kernel reported the peer's FIN: short reads are not trusted
    /// any more, the socket is read until `Ok(0)`.
    peer_fin: bool,
    /// Why this stage refused the connection, once it has: the typed
    /// reason behind the `InvalidData` error it returned.
    failure: Option<TlsFailure>,
    /// What this stage counted (handshakes, ignored server names) since
    /// the connection last took it into its loop's counters.
    counted: Stats,
}

/// A socket reader that remembers whether its last read came up short
/// (the socket is empty: a later arrival raises a new edge) and the first
/// bytes the peer ever sent (to tell plain HTTP from TLS).
struct Tap<'a, R> {
    inner: &'a mut R,
    short: bool,
    head: [u8; 4],
    head_len: usize,
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.short = n < buf.len();
        if self.head_len == 0 {
            self.head_len = n.min(self.head.len());
            self.head[..self.head_len].copy_from_slice(&buf[..self.head_len]);
        }
        Ok(n)
    }
}

/// What one pull from the socket found.
enum Pulled {
    /// Records read and processed; the socket may hold more.
    More,
    /// Records read and processed, and the socket proved empty.
    Drained,
    /// The peer's FIN.
    Eof,
}

impl<S: Transport> TlsStream<S> {
    /// Refuse the connection for `why`: remembered, typed, for
    /// [`Transport::failure`]; the error returned only ends the I/O.
    fn fail(&mut self, why: TlsFailure) -> io::Error {
        self.failure = Some(why);
        io::Error::new(io::ErrorKind::InvalidData, why.to_string())
    }

    /// A connection accepted for the slab slot `name` holds. With `preamble`,
    /// bytes pass through untouched until
    /// [`preamble_done`](Transport::preamble_done).
    pub fn new(
        sock: S,
        config: Arc<ServerConfig>,
        name: ConnName,
        preamble: bool,
        handshake_deadline: Option<Instant>,
    ) -> io::Result<Self> {
        let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(SEND_LIMIT));
        Ok(Self {
            sock,
            tls,
            name,
            pending: Vec::new(),
            preamble,
            fresh: true,
            owed: 0,
            closing: false,
            handshake_deadline,
            handshaken: false,
            peer_fin: false,
            failure: None,
            counted: Stats::default(),
        })
    }

    /// The socket under the stage.
    pub fn get_ref(&self) -> &S {
        &self.sock
    }

    /// The socket under the stage, mutably (tests drive a scripted one).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.sock
    }

    /// The rustls session (negotiated version, ALPN, SNI, …).
    pub fn session(&self) -> &ServerConnection {
        &self.tls
    }

    /// Read once from the pending bytes or the socket into rustls, and
    /// process what arrived.
    fn pull(&mut self) -> io::Result<Pulled> {
        if self.fresh && !self.pending.is_empty() {
            // What followed a PROXY header: the client's first bytes.
            let pending = std::mem::take(&mut self.pending);
            let first = self.first_bytes(&pending);
            self.pending = pending;
            first?;
        }
        let sniff = self.fresh;
        let (n, short, head, head_len) = if !self.pending.is_empty() {
            let mut src: &[u8] = &self.pending;
            let mut tap = Tap {
                inner: &mut src,
                short: false,
                head: [0; 4],
                head_len: 0,
            };
            let n = self
                .tls
                .read_tls(&mut tap)
                .map_err(|e| buffer_error(&mut self.failure, e))?;
            let (head, head_len) = (tap.head, tap.head_len);
            self.pending.drain(..n);
            if self.pending.is_empty() {
                self.pending = Vec::new(); // give the memory back
            }
            (n, false, head, head_len)
        } else {
            let mut tap = Tap {
                inner: &mut self.sock,
                short: false,
                head: [0; 4],
                head_len: 0,
            };
            let n = loop {
                match self.tls.read_tls(&mut tap) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other.map_err(|e| buffer_error(&mut self.failure, e))?,
                }
            };
            (n, tap.short, tap.head, tap.head_len)
        };
        if n == 0 {
            return self.eof();
        }
        if sniff && head_len > 0 {
            self.first_bytes(&head[..head_len])?;
        }
        self.trace_read(n, short);
        self.process()?;
        Ok(if short { Pulled::Drained } else { Pulled::More })
    }

    /// Read the socket once into `buf` past `*filled` + [`PLAINTEXT_ROOM`],
    /// hand what came to rustls, and write the plaintext it decrypts to at
    /// `buf[*filled..]`, advancing `*filled`. One `recvfrom` for up to
    /// 48 KiB of records, where rustls reading the socket makes one per
    /// 4 KiB. The caller checks that `buf` has the room (see the module's
    /// doc).
    fn pull_into(&mut self, buf: &mut [u8], filled: &mut usize) -> io::Result<Pulled> {
        let at = *filled + PLAINTEXT_ROOM;
        let n = loop {
            match self.sock.recv(&mut buf[at..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            // rustls learns of the EOF from an empty read, as from a socket's.
            self.tls
                .read_tls(&mut &[][..])
                .map_err(|e| buffer_error(&mut self.failure, e))?;
            return self.eof();
        }
        if self.fresh {
            self.first_bytes(&buf[at..at + n])?;
        }
        let short = at + n < buf.len();
        self.trace_read(n, short);
        // Records go in at `next`; plaintext comes out at `*filled`, never
        // past `next` (see the module's doc): the bytes not yet handed
        // over are never written over.
        let (mut next, end) = (at, at + n);
        while next < end {
            let took = self
                .tls
                .read_tls(&mut &buf[next..end])
                .map_err(|e| buffer_error(&mut self.failure, e))?;
            if took == 0 {
                break; // after close_notify rustls takes nothing more: ignored
            }
            next += took;
            self.process()?;
            if next < end {
                // Room for rustls to read on (it holds 16 KiB of plaintext
                // at most); after the last records the caller takes it.
                *filled += self.plaintext(&mut buf[*filled..next]);
            }
        }
        Ok(if short { Pulled::Drained } else { Pulled::More })
    }

    /// Plaintext rustls holds, into `dst` while it has room; how much.
    /// Stops at whatever `reader()` says other than data (the caller's
    /// next read of it reports EOF or an error).
    fn plaintext(&mut self, dst: &mut [u8]) -> usize {
        let mut got = 0;
        while got < dst.len() {
            match self.tls.reader().read(&mut dst[got..]) {
                Ok(n) if n > 0 => got += n,
                _ => break,
            }
        }
        got
    }

    /// The socket's EOF: let rustls see it (it reports a truncation or a
    /// clean close).
    fn eof(&mut self) -> io::Result<Pulled> {
        log::trace!("{} TLS: socket EOF", self.name);
        self.process()?;
        Ok(Pulled::Eof)
    }

    /// The peer's first bytes (at least one): plain HTTP gets nginx's
    /// answer and the connection is closed; a ClientHello whose server
    /// name rustls will ignore (an IP address, as `wrk` sends) is counted
    /// and logged here, at debug, once per connection.
    fn first_bytes(&mut self, first: &[u8]) -> io::Result<()> {
        self.fresh = false;
        let head = &first[..first.len().min(4)];
        if head[0] != 0x16 && looks_like_http(head) {
            log::debug!(
                "{} plain HTTP sent to the TLS port: answering 400",
                self.name
            );
            // Best effort: a fresh socket's send buffer has room for it.
            let _ = self.sock.write(PLAIN_HTTP_ANSWER);
            return Err(self.fail(TlsFailure::PlainHttp));
        }
        let what = match client_hello::server_name(first) {
            Sni::IpAddress => "an IP address",
            Sni::Invalid => "no valid DNS name",
            Sni::Absent | Sni::DnsName | Sni::Unknown => return Ok(()),
        };
        self.counted.tls_sni_ignored += 1;
        log::debug!(
            "{} TLS: the client's server name (SNI) is {what}: ignored (RFC 6066 allows DNS names only)",
            self.name
        );
        Ok(())
    }

    fn trace_read(&self, n: usize, short: bool) {
        log::trace!(
            "{} TLS: read {n} B of records{}",
            self.name,
            if short { " (short read: drained)" } else { "" }
        );
    }

    /// Decrypt what rustls has read; send whatever it wants to send now
    /// (handshake flights, alerts, key updates).
    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.tls.process_new_packets() {
            log::debug!("{} TLS error: {e}", self.name);
            let _ = self.push_records(); // the alert, if the socket takes it
            return Err(self.fail(classify(&e)));
        }
        if !self.handshaken && !self.tls.is_handshaking() {
            self.handshaken = true;
            self.handshake_deadline = None;
            self.counted.tls_handshakes += 1;
            log::debug!(
                "{} TLS handshake done: {:?} {:?}, ALPN {}, SNI {}",
                self.name,
                self.tls.protocol_version(),
                self.tls.negotiated_cipher_suite().map(|s| s.suite()),
                self.tls
                    .alpn_protocol()
                    .map_or("none".into(), |p| String::from_utf8_lossy(p).into_owned()),
                self.tls.server_name().unwrap_or("none"),
            );
        }
        if self.tls.wants_write() {
            self.push_records()?;
        }
        Ok(())
    }

    /// Write owed records until none are left (`Ok(true)`) or the socket
    /// is full (`Ok(false)`).
    fn push_records(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    log::trace!("{} TLS: wrote {n} B of records", self.name);
                    self.owed = self.owed.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.owed = 0;
        Ok(true)
    }

    /// The socket's FIN (or a TCP EOF after any TLS bytes): what it means.
    fn at_eof(&mut self, e: io::Error) -> io::Result<usize> {
        if self.tls.is_handshaking() && !self.fresh {
            return Err(self.fail(TlsFailure::PeerClosedInHandshake));
        }
        if e.kind() == io::ErrorKind::UnexpectedEof {
            // No close_notify: many clients (curl, wrk) end this way; the
            // protocol's own framing tells a truncated message.
            log::trace!("{} TLS: EOF without close_notify", self.name);
        }
        Ok(0)
    }
}

impl<S: Transport> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.preamble {
            return self.sock.read(buf);
        }
        let mut filled = 0;
        // The socket proved empty (a short read) on the last pull.
        let mut drained = false;
        loop {
            // Plaintext rustls already holds comes first.
            while filled < buf.len() {
                match self.tls.reader().read(&mut buf[filled..]) {
                    Ok(0) => return Ok(filled), // close_notify: EOF after this
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if filled > 0 => {
                        let _ = e; // reported again on the next call
                        return Ok(filled);
                    }
                    Err(e) => return self.at_eof(e),
                }
            }
            if filled == buf.len() {
                // Full: rustls or the socket may hold more. The caller
                // keeps its readable flag and comes back.
                return Ok(filled);
            }
            if drained {
                // rustls holds no plaintext and the socket proved empty:
                // a later arrival raises a new edge. Even if nothing was
                // decrypted (half a record): only the FIN raises no second
                // edge, so once it is announced, read on to `Ok(0)`.
                if filled > 0 {
                    return Ok(filled);
                }
                if !self.peer_fin {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                drained = false;
            }
            let room = buf.len() - filled;
            let pulled = if self.pending.is_empty() && room >= PLAINTEXT_ROOM + STAGED_READ_MIN {
                self.pull_into(buf, &mut filled)
            } else {
                self.pull()
            };
            match pulled {
                Ok(Pulled::More) => {}
                Ok(Pulled::Drained) => drained = true,
                Ok(Pulled::Eof) => {
                    filled += self.plaintext(&mut buf[filled..]);
                    if filled > 0 {
                        return Ok(filled);
                    }
                    return match self.tls.reader().read(buf) {
                        Ok(n) => Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // Handshake never started or ran: plain EOF.
                            self.at_eof(io::ErrorKind::UnexpectedEof.into())
                        }
                        Err(e) => self.at_eof(e),
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: Transport> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.preamble {
            return self.sock.write(buf);
        }
        // Seal more only once the last records are gone: what is not
        // taken stays in the connection's queue, where backpressure sees it.
        if !self.push_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.tls.writer().write(buf)?;
        self.owed += n + n.div_ceil(MAX_FRAGMENT) * RECORD_OVERHEAD;
        self.push_records()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push_records().map(|_| ())
    }
}

impl<S: Transport> Transport for TlsStream<S> {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.sock.shutdown_write()
    }

    fn owed(&self) -> usize {
        if self.tls.wants_write() {
            self.owed.max(1)
        } else {
            0
        }
    }

    fn flush_owed(&mut self) -> io::Result<bool> {
        self.push_records()
    }

    fn end_output(&mut self) -> bool {
        if self.closing || self.preamble {
            return false;
        }
        self.closing = true;
        log::trace!("{} TLS: sending close_notify", self.name);
        self.tls.send_close_notify();
        true
    }

    fn preamble_done(&mut self, rest: &[u8]) -> bool {
        self.preamble = false;
        self.pending.extend_from_slice(rest);
        true
    }

    fn stage_deadline(&self) -> Option<StageDeadline> {
        self.handshake_deadline.map(|at| StageDeadline {
            at,
            name: "TLS handshake timeout",
            reason: StageFailure::Tls(TlsFailure::HandshakeTimeout),
        })
    }

    fn handshaking(&self) -> bool {
        !self.handshaken
    }

    fn peer_fin(&mut self) {
        self.peer_fin = true;
    }

    fn failure(&self) -> Option<StageFailure> {
        self.failure.map(StageFailure::Tls)
    }

    fn take_counts(&mut self, stats: &mut Stats) {
        if self.counted != Stats::default() {
            stats.add(&self.counted);
            self.counted = Stats::default();
        }
    }
}

/// The first bytes of a plain HTTP request (`GET `, `POST`, …).
fn looks_like_http(head: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ", b"HEAD", b"POST", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC",
    ];
    METHODS
        .iter()
        .any(|m| m.starts_with(head) || head.starts_with(m))
}

/// A reason for the log and the counters, from rustls' error.
fn classify(e: &rustls::Error) -> TlsFailure {
    use rustls::Error as E;
    match e {
        E::InvalidMessage(_) => TlsFailure::BadRecord,
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            TlsFailure::Unexpected
        }
        E::PeerIncompatible(_) => TlsFailure::Incompatible,
        E::PeerMisbehaved(_) => TlsFailure::Misbehaved,
        E::AlertReceived(_) => TlsFailure::AlertReceived,
        E::DecryptError => TlsFailure::DecryptError,
        E::NoApplicationProtocol => TlsFailure::NoApplicationProtocol,
        _ => TlsFailure::HandshakeFailed,
    }
}

/// rustls refuses to read more while its buffers are full: only a peer
/// sending an oversized handshake message gets there.
fn buffer_error(failure: &mut Option<TlsFailure>, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::Other {
        *failure = Some(TlsFailure::TooLarge);
        io::Error::new(io::ErrorKind::InvalidData, TlsFailure::TooLarge.to_string())
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_methods_are_recognised_from_their_first_bytes() {
        assert!(looks_like_http(b"GET "));
        assert!(looks_like_http(b"POST"));
        assert!(looks_like_http(b"GE"));
        assert!(!looks_like_http(b"\x16\x03\x01\x02"));
        assert!(!looks_like_http(b"HELO"));
    }

    #[test]
    fn the_plain_http_answer_has_a_correct_length() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
