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

mod util;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use tcp_reactor::proto::proxy::ProxyMode;
use tcp_reactor::proto::Echo;
use tcp_reactor::reactor::conn::{CloseReason, Conn, Limits, Progress, Scratch, Transport};
use tcp_reactor::tls::session::SEND_LIMIT;
use tcp_reactor::tls::{TlsConfig, TlsStream};
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
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rng.range(0, 49) == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let available = self.arrived - self.read_pos;
        if available == 0 {
            return if self.fin {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
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
        if self.rng.range(0, 49) == 0 {
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
    let wire0 = Wire {
        rng: Rng::new(seed ^ 0x5eed),
        c2s: Vec::new(),
        arrived: 0,
        read_pos: 0,
        fin: false,
        s2c: Vec::new(),
        room: 0,
        shut: false,
    };
    let stream = TlsStream::new(
        wire0,
        tls.current(),
        0,
        false,
        Some(start + Duration::from_secs(10)),
    )
    .expect("stage");
    let peer = "127.0.0.1:9".parse().unwrap();
    let mut conn: TlsConn = Conn::new(stream, peer, 0, 1, Echo, start, ProxyMode::Off);
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
        conn.on_event(arrive > 0 || fin, freed > 0, fin);
        now += Duration::from_millis(rng.range(0, 3) as u64);
        let progress = conn.drive(now, &mut scratch, &limits);

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
