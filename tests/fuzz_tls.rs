//! Property/fuzz harness for the TLS stage inside a connection, without
//! sockets: a real rustls client and `Conn<Echo, TlsStream<Wire>>` talk
//! through an in-memory wire that delivers the client's transcript
//! (ClientHello, Finished, records, close_notify) split at random points,
//! frees random amounts of send room, interrupts reads and writes, and —
//! in some cases — flips a byte of the transcript. After every step:
//!
//! * **prefix-faithful echo**: the plaintext the client decrypted is
//!   exactly a prefix of what it sent;
//! * **bounded buffers**: what the connection owes (its queue plus the
//!   sealed records the stage holds) ≤ high watermark + one read + the
//!   stage's send limit and record overhead;
//! * **never stranded**: with the wire fully delivered and drained, the
//!   whole payload comes back and the close is clean (close_notify, then
//!   our FIN) — no edge beyond the ones a kernel would raise is needed;
//! * **mutations close, never panic or leak**: a flipped byte ends the
//!   connection (protocol error or a failed handshake); the client never
//!   decrypts bytes it did not send.
//!
//! `cargo test --test fuzz_tls` runs a short deterministic pass;
//! `TCP_REACTOR_FUZZ_CASES=10000 cargo test --release --test fuzz_tls` a long one.
//!
//! The same wire, scripted instead of random, counts the stage's socket
//! calls: one read per arrival and one write per echo, as a plain
//! connection makes (`each_arrival_costs_one_socket_read_and_each_echo_one_write`),
//! and a FIN that came with half a record is still read at once.

mod util;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use tcp_reactor::base::close::{CloseReason, StageFailure, TlsFailure};
use tcp_reactor::base::counters::Stats;
use tcp_reactor::base::human::{ConnName, LoopTag};
use tcp_reactor::base::limits::Limits;
use tcp_reactor::io::proxy::ProxyMode;
use tcp_reactor::io::tls::session::SEND_LIMIT;
use tcp_reactor::io::tls::{TlsConfig, TlsStream};
use tcp_reactor::io::transport::Transport;
use tcp_reactor::proto::Echo;
use tcp_reactor::reactor::conn::{Conn, Ctx, Progress, Readiness, Scratch};
use util::clients::Rng;
use util::tls::Certs;

/// The kernel between the two ends, scripted.
struct Wire {
    rng: Rng,
    /// Client → server bytes, and how many have "arrived" / been read.
    c2s: Vec<u8>,
    arrived: usize,
    read_pos: usize,
    /// The client's FIN arrived (after all of `c2s`).
    fin: bool,
    /// Server → client bytes the client has not taken yet.
    s2c: Vec<u8>,
    /// Bytes the send buffer takes before `WouldBlock`.
    room: usize,
    /// Our FIN went out.
    shut: bool,
    /// Reads and writes fail with `Interrupted` now and then.
    interrupts: bool,
    /// Socket calls the stage made: reads, of them `WouldBlock`, writes.
    reads: usize,
    reads_blocked: usize,
    writes: usize,
}

impl Wire {
    fn new(seed: u64, interrupts: bool) -> Self {
        Wire {
            rng: Rng::new(seed),
            c2s: Vec::new(),
            arrived: 0,
            read_pos: 0,
            fin: false,
            s2c: Vec::new(),
            room: 0,
            shut: false,
            interrupts,
            reads: 0,
            reads_blocked: 0,
            writes: 0,
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if self.interrupts && self.rng.range(0, 49) == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let available = self.arrived - self.read_pos;
        if available == 0 {
            if self.fin {
                return Ok(0);
            }
            self.reads_blocked += 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = available.min(buf.len());
        buf[..n].copy_from_slice(&self.c2s[self.read_pos..self.read_pos + n]);
        self.read_pos += n;
        Ok(n)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert!(!self.shut, "wrote after our FIN");
        self.writes += 1;
        if self.interrupts && self.rng.range(0, 49) == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.s2c.extend_from_slice(&buf[..n]);
        self.room -= n;
        Ok(n)
    }

    /// One call for all of `bufs`, as `writev` (rustls hands its records
    /// over this way).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        assert!(!self.shut, "wrote after our FIN");
        self.writes += 1;
        if self.interrupts && self.rng.range(0, 49) == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(self.room);
            self.s2c.extend_from_slice(&buf[..take]);
            self.room -= take;
            n += take;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Wire {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}

type TlsConn = Conn<Echo, TlsStream<Wire>>;

fn wire(conn: &mut TlsConn) -> &mut Wire {
    conn.stream_mut().get_mut()
}

/// One case. `mutate`: flip one byte of the client's transcript at a
/// random point. Returns how the connection ended.
fn run_case(seed: u64, tls: &TlsConfig, client: &Arc<rustls::ClientConfig>, mutate: bool) -> usize {
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut now = start;
    let limits = Limits {
        write_high_watermark: rng.range(1, 64 * 1024),
        write_low_watermark: 0,
        read_budget: rng.range(1, 256 * 1024),
        ..Limits::default()
    };
    let wire0 = Wire::new(seed ^ 0x5eed, true);
    let stream = TlsStream::new(
        wire0,
        tls.current(),
        ConnName::new(LoopTag::ONLY, 0),
        false,
        Some(start + Duration::from_secs(10)),
    )
    .expect("stage");
    let peer = "127.0.0.1:9".parse().unwrap();
    let mut conn: TlsConn = Conn::new(
        stream,
        peer,
        ConnName::new(LoopTag::ONLY, 0),
        1,
        Echo,
        start,
        ProxyMode::Off,
    );
    let mut scratch = Scratch::new();

    let name = ServerName::try_from("localhost").unwrap();
    let mut cli = ClientConnection::new(Arc::clone(client), name).unwrap();
    let payload: Vec<u8> = (0..rng.range(0, 150_000))
        .map(|_| rng.range(0, 255) as u8)
        .collect();
    let mut sent = 0usize;
    let mut echoed: Vec<u8> = Vec::new();
    let mut client_closed = false;
    let mut got_close_notify = false;
    let mut mutated_at: Option<usize> = mutate.then(|| rng.range(0, 6000));
    let bound = limits.write_high_watermark + Scratch::READ_SIZE + SEND_LIMIT + 4096;

    for step in 0..20_000 {
        // The client: send a random piece of payload, then close_notify.
        if !cli.is_handshaking() && sent < payload.len() {
            let n = rng.range(1, 20_000).min(payload.len() - sent);
            let took = cli.writer().write(&payload[sent..sent + n]).unwrap();
            sent += took;
        }
        if !cli.is_handshaking()
            && sent == payload.len()
            && !client_closed
            && echoed.len() == payload.len()
        {
            cli.send_close_notify();
            client_closed = true;
        }
        let w = wire(&mut conn);
        while cli.wants_write() {
            cli.write_tls(&mut w.c2s).unwrap();
        }
        if let Some(at) = mutated_at {
            if w.c2s.len() > at && w.arrived <= at {
                w.c2s[at] ^= 1 << rng.range(0, 7);
                mutated_at = None;
            }
        }
        // The kernel: some bytes arrive, some send room frees.
        let pending = w.c2s.len() - w.arrived;
        let arrive = if rng.range(0, 3) == 0 {
            pending
        } else {
            rng.range(0, pending)
        };
        w.arrived += arrive;
        if client_closed && w.arrived == w.c2s.len() && rng.range(0, 3) == 0 {
            w.fin = true;
        }
        let freed = rng.range(0, 70_000);
        w.room += freed;
        let fin = w.fin;
        conn.on_event(Readiness {
            readable: arrive > 0 || fin,
            writable: freed > 0,
            read_closed: fin,
        });
        now += Duration::from_millis(rng.range(0, 3) as u64);
        let progress = conn.drive(
            &mut Ctx::new(now, &limits, &mut Stats::default()),
            &mut scratch,
        );

        // The client takes what the server wrote, in random pieces.
        let w = wire(&mut conn);
        let mut client_failed = false;
        while !w.s2c.is_empty() {
            let n = rng.range(1, w.s2c.len()).min(w.s2c.len());
            let chunk: Vec<u8> = w.s2c.drain(..n).collect();
            let mut rd = &chunk[..];
            while !rd.is_empty() {
                cli.read_tls(&mut rd).expect("client read_tls");
                if let Err(e) = cli.process_new_packets() {
                    eprintln!("seed {seed}: client: {e}");
                    client_failed = true;
                    break;
                }
                // Take the plaintext out so rustls reads on.
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = cli.reader().read(&mut buf) {
                    if n == 0 {
                        got_close_notify = true;
                        break;
                    }
                    echoed.extend_from_slice(&buf[..n]);
                }
            }
            if client_failed {
                break;
            }
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match cli.reader().read(&mut buf) {
                Ok(0) => {
                    got_close_notify = true;
                    break;
                }
                Ok(n) => echoed.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        assert!(
            echoed.len() <= sent && echoed[..] == payload[..echoed.len()],
            "seed {seed}: echo is not a prefix of what was sent"
        );
        assert!(
            conn.owed() <= bound,
            "seed {seed}: owes {} > {bound}",
            conn.owed()
        );
        match progress {
            Progress::Closed(reason) => {
                if mutate {
                    return echoed.len(); // a flipped byte may end it any way but a panic
                }
                assert!(
                    matches!(reason, CloseReason::PeerClosed),
                    "seed {seed}: closed {reason:?} at step {step}"
                );
                assert_eq!(echoed.len(), payload.len(), "seed {seed}: echo cut short");
                assert!(got_close_notify, "seed {seed}: closed without close_notify");
                return echoed.len();
            }
            Progress::Idle | Progress::Yield => {}
        }
        if client_failed {
            assert!(mutate, "seed {seed}: client rejected the server's records");
            return echoed.len();
        }
        if step > 15_000 && !mutate {
            // Everything delivered long ago: the client must have been answered.
            let w = wire(&mut conn);
            let all_in = w.arrived == w.c2s.len() && w.fin;
            assert!(
                !all_in,
                "seed {seed}: stranded: sent {sent}, echoed {}, state {:?}",
                echoed.len(),
                conn.state()
            );
        }
    }
    assert!(
        mutate,
        "seed {seed}: did not finish: sent {sent}/{}, echoed {}, state {:?}",
        payload.len(),
        echoed.len(),
        conn.state()
    );
    echoed.len()
}
fn cases() -> (u64, u64) {
    let cases = std::env::var("TCP_REACTOR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let base = std::env::var("TCP_REACTOR_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7153);
    (cases, base)
}

#[test]
fn random_splits_of_real_transcripts_echo_exactly_and_close_cleanly() {
    let certs = Certs::new();
    let tls = TlsConfig::load(&certs.cert, &certs.key, &[], Some(Duration::from_secs(10))).unwrap();
    let (cases, base) = cases();
    let mut total = 0;
    for (i, version) in [&rustls::version::TLS13, &rustls::version::TLS12]
        .into_iter()
        .cycle()
        .take(cases as usize)
        .enumerate()
    {
        let client = util::tls::client_config(&certs.cert_pem, Some(version), &[]);
        total += run_case(base + i as u64, &tls, &client, false);
    }
    eprintln!("{cases} cases, {total} B echoed through TLS");
    assert!(total > 0);
}

#[test]
fn mutated_transcripts_close_the_connection_and_never_leak_or_panic() {
    let certs = Certs::new();
    let tls = TlsConfig::load(&certs.cert, &certs.key, &[], Some(Duration::from_secs(10))).unwrap();
    let (cases, base) = cases();
    for i in 0..cases {
        let version = if i % 2 == 0 {
            &rustls::version::TLS13
        } else {
            &rustls::version::TLS12
        };
        let client = util::tls::client_config(&certs.cert_pem, Some(version), &[]);
        run_case(base + 1_000_000 + i, &tls, &client, true);
    }
}

// ------------------------------------------------------------ scripted

/// A TLS 1.3 connection over a scripted wire with room to write, its
/// client, and the clock.
struct Scripted {
    conn: TlsConn,
    cli: ClientConnection,
    scratch: Scratch,
    limits: Limits,
    now: Instant,
    /// Plaintext the client decrypted, not yet looked at.
    received: Vec<u8>,
}

/// Socket calls one step cost the stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Calls {
    reads: usize,
    blocked: usize,
    writes: usize,
}

impl Scripted {
    fn new(tls: &TlsConfig, client: &Arc<rustls::ClientConfig>) -> Self {
        let now = Instant::now();
        let mut wire = Wire::new(1, false);
        wire.room = usize::MAX;
        let stream = TlsStream::new(
            wire,
            tls.current(),
            ConnName::new(LoopTag::ONLY, 0),
            false,
            None,
        )
        .expect("stage");
        let peer = "127.0.0.1:9".parse().unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        Scripted {
            conn: Conn::new(
                stream,
                peer,
                ConnName::new(LoopTag::ONLY, 0),
                1,
                Echo,
                now,
                ProxyMode::Off,
            ),
            cli: ClientConnection::new(Arc::clone(client), name).unwrap(),
            scratch: Scratch::new(),
            limits: Limits::default(),
            now,
            received: Vec::new(),
        }
    }

    /// What the client owes, as records (not yet on the wire).
    fn client_records(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.cli.wants_write() {
            self.cli.write_tls(&mut out).unwrap();
        }
        out
    }

    /// `bytes` arrive (with the FIN if `fin`), in one readiness event as a
    /// kernel raises it; the connection is driven; the client takes what
    /// came back. Returns the progress and the socket calls it cost.
    fn arrive(&mut self, bytes: &[u8], fin: bool) -> (Progress, Calls) {
        let w = wire(&mut self.conn);
        w.c2s.extend_from_slice(bytes);
        w.arrived = w.c2s.len();
        w.fin |= fin;
        let before = (w.reads, w.reads_blocked, w.writes);
        self.conn.on_event(Readiness {
            readable: true,
            writable: true,
            read_closed: fin,
        });
        let progress = self.conn.drive(
            &mut Ctx::new(self.now, &self.limits, &mut Stats::default()),
            &mut self.scratch,
        );
        let w = wire(&mut self.conn);
        let calls = Calls {
            reads: w.reads - before.0,
            blocked: w.reads_blocked - before.1,
            writes: w.writes - before.2,
        };
        let back = std::mem::take(&mut w.s2c);
        let mut rd = &back[..];
        while !rd.is_empty() {
            self.cli.read_tls(&mut rd).unwrap();
            self.cli.process_new_packets().unwrap();
            self.take_plaintext();
        }
        (progress, calls)
    }

    /// Move what the client decrypted into `received` (so it reads on).
    fn take_plaintext(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.cli.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            self.received.extend_from_slice(&buf[..n]);
        }
    }

    /// Handshake; what the ClientHello and the client's Finished cost.
    fn handshake(&mut self) -> [Calls; 2] {
        let hello = self.client_records();
        let (_, hello_calls) = self.arrive(&hello, false);
        assert!(!self.cli.is_handshaking(), "the server's flight came back");
        let finished = self.client_records();
        let (_, finished_calls) = self.arrive(&finished, false);
        assert!(!self.conn.stream_mut().handshaking());
        [hello_calls, finished_calls]
    }

    /// The plaintext the client got since the last call.
    fn echoed(&mut self) -> Vec<u8> {
        self.take_plaintext();
        std::mem::take(&mut self.received)
    }
}

fn tls13() -> (Certs, Arc<TlsConfig>, Arc<rustls::ClientConfig>) {
    let certs = Certs::new();
    let tls = TlsConfig::load(&certs.cert, &certs.key, &[], None).unwrap();
    let client = util::tls::client_config(&certs.cert_pem, Some(&rustls::version::TLS13), &[]);
    (certs, tls, client)
}

/// What a plain connection pays, the TLS stage pays: a short read proves
/// the socket empty even when it decrypted nothing (no read → WouldBlock
/// after each handshake flight or half record), and a 16 KiB record is one
/// read, not rustls' four 4 KiB reads and a fifth for its tail.
#[test]
fn each_arrival_costs_one_socket_read_and_each_echo_one_write() {
    let (_certs, tls, client) = tls13();
    let mut s = Scripted::new(&tls, &client);
    // The server's flight, and its session tickets after the Finished.
    let flight = Calls {
        reads: 1,
        blocked: 0,
        writes: 1,
    };
    assert_eq!(s.handshake(), [flight, flight]);
    for size in [64, 16 * 1024] {
        let msg: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        s.cli.writer().write_all(&msg).unwrap();
        let records = s.client_records();
        let (_, calls) = s.arrive(&records, false);
        let one = Calls {
            reads: 1,
            blocked: 0,
            writes: 1,
        };
        assert_eq!(calls, one, "{size} B in one arrival");
        assert_eq!(s.echoed(), msg, "{size} B echoed");

        // The same message in two parts: each part is one read, and the
        // echo is one write.
        s.cli.writer().write_all(&msg).unwrap();
        let records = s.client_records();
        let (head, tail) = records.split_at(records.len() / 2);
        let (_, calls) = s.arrive(head, false);
        let none = Calls {
            reads: 1,
            blocked: 0,
            writes: 0,
        };
        assert_eq!(calls, none, "the first half of a {size} B record");
        let (_, calls) = s.arrive(tail, false);
        assert_eq!(calls, one, "the second half of a {size} B record");
        assert_eq!(s.echoed(), msg, "{size} B in two parts echoed");
    }
}

/// Trusting a short read that decrypted nothing must not strand the FIN:
/// when half a record and the FIN come in one event, no second edge will
/// announce the FIN, so the stage reads on to it.
#[test]
fn half_a_record_and_the_fin_in_one_event_end_the_connection_at_once() {
    let (_certs, tls, client) = tls13();
    let mut s = Scripted::new(&tls, &client);
    s.handshake();
    s.cli.writer().write_all(&[b'x'; 1000]).unwrap();
    let records = s.client_records();
    let (progress, _) = s.arrive(&records[..records.len() / 2], true);
    assert!(
        matches!(progress, Progress::Closed(CloseReason::PeerClosed)),
        "{progress:?}"
    );

    // During the handshake: a ClientHello cut short, then the FIN.
    let mut s = Scripted::new(&tls, &client);
    let hello = s.client_records();
    let (progress, _) = s.arrive(&hello[..hello.len() / 2], true);
    assert!(
        matches!(
            progress,
            Progress::Closed(CloseReason::Stage(StageFailure::Tls(
                TlsFailure::PeerClosedInHandshake
            )))
        ),
        "{progress:?}"
    );
}

/// Rule 7 at the stage: records that arrive all at once, more than one
/// read takes, are read and echoed in full on that one edge (the stage
/// fills the connection's buffer, reading the socket itself and, once the
/// buffer has little room left, through rustls), in far fewer reads than
/// rustls' own 4 KiB ones.
#[test]
fn a_large_arrival_is_echoed_in_full_on_one_edge() {
    let (_certs, tls, client) = tls13();
    let mut s = Scripted::new(&tls, &client);
    s.handshake();
    let msg: Vec<u8> = (0..200_000).map(|i| (i % 251) as u8).collect();
    let mut records = Vec::new();
    for piece in msg.chunks(32 * 1024) {
        s.cli.writer().write_all(piece).unwrap();
        records.extend(s.client_records());
    }
    let (_, calls) = s.arrive(&records, false);
    assert_eq!(s.echoed(), msg);
    let rustls_reads = records.len().div_ceil(4096);
    assert!(
        calls.reads * 2 < rustls_reads,
        "{calls:?} for {} B of records",
        records.len()
    );
}
