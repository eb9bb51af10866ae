//! The TLS load generator: the same rustls client code against every server.
//!
//! Owns: the client config (TLS 1.3 only, one cipher suite and one key
//! exchange group, no resumption, the server's certificate pinned), the
//! closed-loop echo load ([`echo`]: one mio loop, N connections, one message
//! in flight each, every echoed byte compared), the handshake loop
//! ([`handshakes`]: threads that connect, handshake, exchange one small
//! message or one HTTPS GET, send close_notify and close) and idle
//! connections ([`open_idle`]). Must not: read server figures (the harness
//! takes [`Snapshot`]s at the window's edges through the callbacks here).
//!
//! Pinning the certificate (compare the DER, then check the handshake
//! signature with ring as usual) keeps the client's cost per handshake
//! small and equal for every server, without skipping the signature check.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

use crate::servers::Snapshot;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The cipher suite every row uses (rustls' and OpenSSL's first choice).
pub const SUITE: &str = "TLS13_AES_256_GCM_SHA384";
/// The one request an HTTP server gets per connection in the handshake row.
const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
const GET_KEEP: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Accepts exactly one certificate; signatures are checked with ring.
#[derive(Debug)]
struct Pinned {
    cert: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS 1.3, [`SUITE`], X25519, no resumption, `cert` pinned.
pub fn config(cert: &[u8]) -> Arc<ClientConfig> {
    let provider = Arc::new(CryptoProvider {
        cipher_suites: vec![ring::cipher_suite::TLS13_AES_256_GCM_SHA384],
        kx_groups: vec![ring::kx_group::X25519],
        ..ring::default_provider()
    });
    let verifier = Arc::new(Pinned {
        cert: cert.to_vec(),
        provider: Arc::clone(&provider),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 with the ring provider")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

fn name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("a valid DNS name")
}

/// Connect and finish a blocking handshake; checks the negotiated suite.
fn connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let conn = ClientConnection::new(Arc::clone(config), name()).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    let suite = s.conn.negotiated_cipher_suite().map(|c| c.suite());
    if suite != Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384) {
        return Err(io::Error::other(format!(
            "negotiated {suite:?}, not {SUITE}"
        )));
    }
    Ok(s)
}

/// Read one HTTP/1.1 response with a Content-Length body; check it is 200.
fn read_response<R: Read>(r: &mut R) -> io::Result<()> {
    let mut got = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(io::Error::other(format!("response {head:?}")));
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::other("no Content-Length"))?;
            if got.len() >= end + 4 + len {
                return Ok(());
            }
        }
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "EOF in a response",
            ));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// One small echo (or one GET) on an established connection.
fn exchange<S: Read + Write>(s: &mut S, http: bool, keep: bool, i: u64) -> io::Result<()> {
    if http {
        s.write_all(if keep { GET_KEEP } else { GET_CLOSE })?;
        s.flush()?;
        return read_response(s);
    }
    let msg = format!("hs-{i:012}\n");
    s.write_all(msg.as_bytes())?;
    s.flush()?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back != msg.as_bytes() {
        return Err(io::Error::other("echoed bytes differ"));
    }
    Ok(())
}

// ---------------------------------------------------------------- handshakes

/// A handshake-loop run.
#[derive(Debug, Default)]
pub struct HandshakeRun {
    /// Completed handshake + exchange + close, inside the window.
    pub done: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: crate::servers::Window,
}

/// `threads` clients, each: connect, full handshake, one exchange,
/// close_notify, close; again. Counted between `warmup` and `warmup + secs`.
pub fn handshakes(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    http: bool,
    threads: usize,
    warmup: f64,
    secs: f64,
    server_pid: u32,
) -> Result<HandshakeRun, String> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let workers: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
            let first_error = first_error.clone();
            let config = Arc::clone(config);
            std::thread::spawn(move || {
                let mut i = (t as u64) << 40;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let one = || -> io::Result<()> {
                        let mut s = connect(addr, &config)?;
                        exchange(&mut s, http, false, i)?;
                        s.conn.send_close_notify();
                        while s.conn.wants_write() {
                            s.conn.write_tls(&mut s.sock)?;
                        }
                        Ok(())
                    };
                    match one() {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let mut f = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            f.get_or_insert_with(|| e.to_string());
                            // A refusing server must not turn this into a busy loop.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(warmup));
    let a = Snapshot::take(server_pid).ok_or("server gone before the window");
    let d0 = done.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(secs));
    let d1 = done.load(Ordering::Relaxed);
    let b = Snapshot::take(server_pid).ok_or("server gone during the window");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let (a, b) = (a?, b?);
    let errors = errors.load(Ordering::Relaxed);
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok(HandshakeRun {
        done: d1 - d0,
        errors,
        first_error,
        window: crate::servers::Window::between(&a, &b),
    })
}

// ---------------------------------------------------------------- idle

/// An idle connection held open; dropping it closes the socket.
pub type Idle = StreamOwned<ClientConnection, TcpStream>;

/// Open `n` connections, each after a handshake and one exchange.
pub fn open_idle(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    http: bool,
    n: usize,
) -> Result<Vec<Idle>, String> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect(addr, config).map_err(|e| format!("idle connection {i}: {e}"))?;
        exchange(&mut s, http, true, i as u64).map_err(|e| format!("idle connection {i}: {e}"))?;
        held.push(s);
    }
    Ok(held)
}

// ---------------------------------------------------------------- echo load

/// An echo-load run.
#[derive(Debug, Default)]
pub struct EchoRun {
    /// Messages echoed in full inside the window.
    pub msgs: u64,
    /// Messages echoed over the connections' whole life (warm-up included).
    pub msgs_total: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: crate::servers::Window,
}

/// One client connection of the echo load.
struct Conn {
    sock: mio::net::TcpStream,
    tls: ClientConnection,
    /// The message in flight; its first 8 bytes carry a sequence number.
    sent: Vec<u8>,
    got: Vec<u8>,
    filled: usize,
    seq: u64,
    /// Messages this connection sends in all (`u64::MAX`: until the run ends).
    last: u64,
    since: Instant,
    dead: bool,
}

impl Conn {
    /// Queue the next message (into rustls) and write what rustls owes.
    fn send_next(&mut self) -> io::Result<()> {
        self.seq += 1;
        let n = self.sent.len().min(8);
        self.sent[..n].copy_from_slice(&self.seq.to_le_bytes()[..n]);
        self.filled = 0;
        self.since = Instant::now();
        self.tls.writer().write_all(&self.sent)?;
        self.flush()
    }

    /// Write TLS records until rustls owes none or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Read to WouldBlock; returns the latencies (µs) of messages completed.
    fn on_readable(&mut self, done: &mut Vec<u32>) -> io::Result<()> {
        loop {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "server closed")),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return self.flush(),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.tls.process_new_packets().map_err(io::Error::other)?;
            loop {
                let want = self.sent.len();
                match self.tls.reader().read(&mut self.got[self.filled..want]) {
                    Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "close_notify")),
                    Ok(n) => self.filled += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
                if self.filled == want {
                    if self.got != self.sent {
                        return Err(io::Error::other(format!(
                            "message {} echoed with different bytes",
                            self.seq
                        )));
                    }
                    done.push(self.since.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if self.seq == self.last {
                        return self.flush();
                    }
                    self.send_next()?;
                }
            }
        }
    }
}

/// `conns` connections, `size`-byte messages, one in flight each; the window
/// is `secs` long after `warmup`. Every echoed byte is compared.
pub fn echo(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    conns: usize,
    size: usize,
    warmup: f64,
    secs: f64,
    server_pid: u32,
) -> Result<EchoRun, String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut all = open_echo(&poll, addr, config, conns, size, u64::MAX)?;
    let mut run = EchoRun::default();
    for (i, c) in all.iter_mut().enumerate() {
        if let Err(e) = c.send_next() {
            fail(&mut run, c, i, e);
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let started = Instant::now();
    let open = started + Duration::from_secs_f64(warmup);
    let close = open + Duration::from_secs_f64(secs);
    let mut first: Option<Snapshot> = None;
    let mut warmup_msgs = 0;
    let mut last_progress = Instant::now();
    loop {
        let now = Instant::now();
        if first.is_none() && now >= open {
            first = Some(Snapshot::take(server_pid).ok_or("server gone before the window")?);
            warmup_msgs = lat.len() as u64;
            lat.clear();
        }
        if now >= close {
            break;
        }
        if now - last_progress > IO_TIMEOUT {
            return Err(format!("no echo for {} s", IO_TIMEOUT.as_secs()));
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .or_else(|e| {
                if e.kind() == ErrorKind::Interrupted {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut all[i];
            if c.dead {
                continue;
            }
            let before = lat.len();
            if let Err(e) = c.on_readable(&mut lat) {
                fail(&mut run, c, i, e);
            }
            if lat.len() > before {
                last_progress = Instant::now();
            }
        }
    }
    let last = Snapshot::take(server_pid).ok_or("server gone during the window")?;
    let first = first.ok_or("the window never opened")?;
    run.window = crate::servers::Window::between(&first, &last);
    run.msgs = lat.len() as u64;
    run.msgs_total = warmup_msgs + run.msgs;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |&v| f64::from(v))
    };
    run.p50_us = pct(0.50);
    run.p99_us = pct(0.99);
    // close_notify and close; a message still in flight is simply dropped.
    for c in all.iter_mut().filter(|c| !c.dead) {
        c.tls.send_close_notify();
        let _ = c.flush();
    }
    Ok(run)
}

/// `conns` connections registered with `poll`, handshaken, each with its
/// `size`-byte message ready and `last` messages to send in all.
fn open_echo(
    poll: &Poll,
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    conns: usize,
    size: usize,
    last: u64,
) -> Result<Vec<Conn>, String> {
    let mut all = Vec::with_capacity(conns);
    for i in 0..conns {
        let s = connect(addr, config).map_err(|e| format!("connection {i}: {e}"))?;
        let (tls, tcp) = (s.conn, s.sock);
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut sock = mio::net::TcpStream::from_std(tcp);
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| e.to_string())?;
        let sent: Vec<u8> = (0..size).map(|j| (j * 131 + i * 7 + 1) as u8).collect();
        all.push(Conn {
            sock,
            tls,
            got: vec![0; size],
            sent,
            filled: 0,
            seq: 0,
            last,
            since: Instant::now(),
            dead: false,
        });
    }
    Ok(all)
}

/// Exactly `per_conn` echoes of `size` bytes on each of `conns`
/// connections (one in flight each), then close_notify and close: a fixed
/// number of messages, for counting what the server does per message (the
/// connections' setup and teardown are the same in every such run).
/// Returns the messages echoed, every byte compared.
pub fn echo_count(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    conns: usize,
    size: usize,
    per_conn: u64,
) -> Result<u64, String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut all = open_echo(&poll, addr, config, conns, size, per_conn.max(1))?;
    for (i, c) in all.iter_mut().enumerate() {
        c.send_next().map_err(|e| format!("connection {i}: {e}"))?;
    }
    let want = conns as u64 * per_conn.max(1);
    let mut events = Events::with_capacity(1024);
    let mut lat: Vec<u32> = Vec::with_capacity(want as usize);
    let mut last_progress = Instant::now();
    while (lat.len() as u64) < want {
        if last_progress.elapsed() > IO_TIMEOUT {
            return Err(format!("no echo for {} s", IO_TIMEOUT.as_secs()));
        }
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Err(e) if e.kind() != ErrorKind::Interrupted => return Err(e.to_string()),
            _ => {}
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let before = lat.len();
            all[i]
                .on_readable(&mut lat)
                .map_err(|e| format!("connection {i}: {e}"))?;
            if lat.len() > before {
                last_progress = Instant::now();
            }
        }
    }
    for c in &mut all {
        c.tls.send_close_notify();
        let _ = c.flush();
    }
    Ok(lat.len() as u64)
}

/// A connection that failed stays in the slab, ignored, until the run ends.
fn fail(run: &mut EchoRun, c: &mut Conn, i: usize, e: io::Error) {
    c.dead = true;
    run.errors += 1;
    run.first_error
        .get_or_insert_with(|| format!("connection {i}: {e}"));
}
