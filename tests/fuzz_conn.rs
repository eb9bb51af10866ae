//! Property/fuzz harness for the connection state machine, without sockets.
//!
//! A scripted [`Transport`] plays the kernel and the peer: input (sometimes
//! behind a PROXY header, sometimes a junk one) arrives in random-sized
//! pieces (random split points), the peer frees random amounts
//! of send room, reads are interrupted, events are spurious, the peer may
//! reset at any byte, half-close at the end, or never finish; a drain may
//! start at any step; the clock jumps. After every step we check:
//!
//! * **prefix-faithful echo**: what the connection wrote is exactly a prefix
//!   of what the peer sent;
//! * **bounded buffers**: owed output ≤ high watermark + one read;
//! * **legal transitions**: Open → Draining → Flushing → Lingering, states
//!   may be skipped but never revisited, and nothing is written after our FIN;
//! * **no lost data**: an orderly close (peer closed, drained) has written
//!   every byte it read before its FIN;
//! * **liveness**: with the peer reading everything, a half-closed stream is
//!   echoed in full and closed;
//! * **no missed deadline**: timers fire only through the entries
//!   `Conn::arm` asked for, and the earliest pending one is never later than
//!   the connection's earliest deadline.
//!
//!
//! A second property holds for **every** protocol `--protocol` offers:
//! against a peer that never reads, owed output stays within the high
//! watermark plus one protocol call's [`OUT_BUDGET`], however cheap the
//! requests and costly the replies.
//!
//! `cargo test --test fuzz_conn` runs a short deterministic pass. The long
//! pass: `TCP_REACTOR_FUZZ_CASES=1000000 cargo test --release --test fuzz_conn`
//! (`TCP_REACTOR_FUZZ_SEED` picks another sequence).

mod util;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tcp_reactor::base::buffer::GRANULE;
use tcp_reactor::base::close::{CloseReason, StageFailure};
use tcp_reactor::base::counters::Stats;
use tcp_reactor::base::human::{ConnName, LoopTag};
use tcp_reactor::base::limits::Limits;
use tcp_reactor::io::proxy::ProxyMode;
use tcp_reactor::io::transport::Transport;
use tcp_reactor::proto::{Echo, Http, HttpConfig, Protocol, Resp, OUT_BUDGET};
use tcp_reactor::reactor::conn::{Conn, Ctx, Progress, Readiness, Scratch, State};
use util::clients::Rng;

/// The kernel and the peer, scripted.
struct Peer {
    rng: Rng,
    /// Everything the peer will send: a PROXY header, then payload.
    input: Vec<u8>,
    /// Length of the PROXY header at the front of `input` (0: none).
    skip: usize,
    /// How much of it has reached our socket so far.
    arrived: usize,
    /// How much the connection has read.
    read_pos: usize,
    /// How much it read before sending its FIN (after that, lingering
    /// reads are discarded on purpose).
    read_before_fin: usize,
    /// The peer's FIN has arrived (after all of `input`).
    fin: bool,
    /// The peer resets once this much input has arrived.
    reset_at: Option<usize>,
    reset: bool,
    /// What the connection wrote.
    written: Vec<u8>,
    /// Bytes the send buffer takes before `WouldBlock`.
    room: usize,
    /// Our FIN went out.
    shut: bool,
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if self.rng.range(0, 99) == 0 {
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
        // Like the kernel: a read returns all that is there, up to the buffer.
        let n = available.min(buf.len());
        buf[..n].copy_from_slice(&self.input[self.read_pos..self.read_pos + n]);
        self.read_pos += n;
        if !self.shut {
            self.read_before_fin += n;
        }
        Ok(n)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert!(!self.shut, "wrote after our FIN");
        if self.reset {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.rng.range(0, 99) == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.written.extend_from_slice(&buf[..n]);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Peer {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}

/// Where a state sits in the lifecycle. One step may pass through several
/// states (Open → Flushing → Lingering in one `drive`), but never backwards.
fn rank(state: State) -> u8 {
    match state {
        State::Open => 0,
        State::Draining { .. } => 1,
        State::Flushing { .. } => 2,
        State::Lingering { .. } => 3,
    }
}

fn legal(from: State, to: State) -> bool {
    rank(to) >= rank(from)
}

fn random_limits(rng: &mut Rng) -> Limits {
    let high = rng.range(1, 8192);
    Limits {
        write_high_watermark: high,
        write_low_watermark: rng.range(0, high),
        read_budget: rng.range(1, 256 * 1024),
        idle_timeout: [None, Some(Duration::from_millis(rng.range(1, 500) as u64))]
            [rng.range(0, 1)],
        ..Limits::default()
    }
}

/// Which paths the cases reached, so the harness cannot go vacuous.
#[derive(Debug, Default)]
struct Reached {
    peer_closed: u64,
    drained: u64,
    reset: u64,
    idle: u64,
    open_at_end: u64,
    liveness_checked: u64,
    backpressure: u64,
    proxy_refused: u64,
}

/// What the loop does after driving a connection: push the entry `arm`
/// asks for. Then check that the earliest pending entry is no later than
/// the connection's earliest deadline, so no deadline is ever missed.
fn arm(
    conn: &mut Conn<Echo, Peer>,
    progress: Progress,
    timers: &mut Vec<Instant>,
    limits: &Limits,
    seed: u64,
) {
    if let Progress::Closed(_) = progress {
        return;
    }
    if let Some(at) = conn.arm(limits) {
        timers.push(at);
    }
    if let Some(deadline) = conn.deadline(limits) {
        let first = timers.iter().min();
        assert!(
            first.is_some_and(|at| *at <= deadline),
            "seed {seed}: deadline {deadline:?} but the first timer is {first:?}"
        );
    }
}

/// Take the earliest timer entry if it is due.
fn pop_due(timers: &mut Vec<Instant>, now: Instant) -> Option<Instant> {
    let (i, at) = timers.iter().enumerate().min_by_key(|(_, at)| **at)?;
    (*at <= now).then(|| timers.swap_remove(i))
}

/// Run one random case; panics (with the seed) when an invariant breaks.
fn run_case(seed: u64, scratch: &mut Scratch, reached: &mut Reached) {
    let mut rng = Rng::new(seed);
    let limits = random_limits(&mut rng);
    let len = match rng.range(0, 9) {
        0 => 0,
        1..=6 => rng.range(1, 4096),
        _ => rng.range(4096, 200_000),
    };
    // A third of the cases start with a PROXY header (a few of them junk).
    let (proxy, header, junk) = match rng.range(0, 5) {
        0 => {
            let h = format!(
                "PROXY TCP4 10.{}.{}.{} 127.0.0.1 {} 8000\r\n",
                rng.range(0, 255),
                rng.range(0, 255),
                rng.range(0, 255),
                rng.range(1, 65535)
            );
            (ProxyMode::V1, h.into_bytes(), false)
        }
        1 => {
            let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
            h.extend((0..12).map(|_| rng.next_u64() as u8));
            (ProxyMode::Any, h, false)
        }
        2 if rng.range(0, 3) == 0 => (ProxyMode::V2, b"PROXY TCP4 nonsense\r\n".to_vec(), true),
        _ => (ProxyMode::Off, Vec::new(), false),
    };
    let skip = header.len();
    let mut input = header;
    input.extend((0..len).map(|_| rng.next_u64() as u8));
    let len = input.len();
    let peer = Peer {
        rng: Rng::new(seed ^ 0xfeed),
        input,
        skip,
        arrived: 0,
        read_pos: 0,
        read_before_fin: 0,
        fin: false,
        reset_at: (rng.range(0, 9) == 0).then(|| rng.range(0, len)),
        reset: false,
        written: Vec::new(),
        room: 0,
        shut: false,
    };
    let half_closes = rng.range(0, 3) > 0;
    let drain_at = (rng.range(0, 3) == 0).then(|| rng.range(0, 60));
    let peer_addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut now = Instant::now();
    let mut conn = Conn::new(
        peer,
        peer_addr,
        ConnName::new(LoopTag::ONLY, 0),
        1,
        Echo,
        now,
        proxy,
    );
    let mut state = conn.state();
    // The loop's timer entries for this connection, as `arm` asked for them.
    let mut timers: Vec<Instant> = Vec::new();
    arm(&mut conn, Progress::Idle, &mut timers, &limits, seed);
    let bound = limits.write_high_watermark + Scratch::READ_SIZE;

    let mut closed = None;
    let mut step = 0;
    let steps = rng.range(1, 400); // some cases stop mid-conversation: see liveness
    while closed.is_none() && step < steps {
        step += 1;
        // The network and the peer act.
        let p = conn.stream_mut();
        let mut readable = false;
        let mut read_closed = false;
        if p.arrived < p.input.len() && p.rng.range(0, 2) > 0 {
            let piece = p.rng.range(1, (p.input.len() - p.arrived).min(70_000));
            p.arrived += piece;
            readable = true;
        }
        if let Some(at) = p.reset_at {
            if p.arrived >= at && !p.reset {
                p.reset = true;
                readable = true;
            }
        }
        if half_closes && p.arrived == p.input.len() && !p.fin && p.rng.range(0, 3) == 0 {
            p.fin = true;
            read_closed = true;
        }
        let mut writable = false;
        if p.rng.range(0, 2) > 0 {
            p.room += p.rng.range(1, 100_000);
            writable = true;
        }
        if p.rng.range(0, 19) == 0 {
            readable = true; // spurious
            writable = true;
        }
        now += Duration::from_millis(rng.range(0, 50) as u64);

        // The loop's side: an event, a drain, a timer.
        conn.on_event(Readiness {
            readable,
            writable,
            read_closed,
        });
        let mut progress = if drain_at == Some(step) {
            conn.begin_drain(&mut Ctx::new(now, &limits, &mut Stats::default()), scratch)
        } else {
            conn.drive(&mut Ctx::new(now, &limits, &mut Stats::default()), scratch)
        };
        arm(&mut conn, progress, &mut timers, &limits, seed);
        if progress == Progress::Idle {
            if let Some(at) = pop_due(&mut timers, now) {
                progress = conn.on_timer(
                    at,
                    &mut Ctx::new(now, &limits, &mut Stats::default()),
                    scratch,
                );
                arm(&mut conn, progress, &mut timers, &limits, seed);
            }
        }
        let mut yields = 0;
        while progress == Progress::Yield {
            yields += 1;
            assert!(yields < 10_000, "seed {seed}: yields forever");
            progress = conn.drive(&mut Ctx::new(now, &limits, &mut Stats::default()), scratch);
            arm(&mut conn, progress, &mut timers, &limits, seed);
        }

        // Invariants.
        let p = conn.stream_mut();
        let payload = &p.input[p.skip..];
        assert!(
            p.written.len() <= p.read_pos.saturating_sub(p.skip)
                && p.written[..] == payload[..p.written.len()],
            "seed {seed}: output is not a prefix of the payload"
        );
        assert!(
            !junk || p.written.is_empty(),
            "seed {seed}: echoed behind a junk header"
        );
        assert!(
            conn.owed() <= bound,
            "seed {seed}: owed {} > {bound}",
            conn.owed()
        );
        if conn.owed() >= limits.write_high_watermark {
            reached.backpressure += 1;
        }
        let next = conn.state();
        assert!(legal(state, next), "seed {seed}: {state:?} => {next:?}");
        state = next;
        if let Progress::Closed(reason) = progress {
            closed = Some(reason);
        }
    }

    let owed = conn.owed();
    let p = conn.stream_mut();
    match closed {
        Some(reason @ (CloseReason::PeerClosed | CloseReason::Drained)) => {
            assert_eq!(owed, 0, "seed {seed}: orderly close with bytes owed");
            assert_eq!(
                p.written.len(),
                p.read_before_fin.saturating_sub(p.skip),
                "seed {seed}: orderly close lost data"
            );
            if reason == CloseReason::Drained {
                reached.drained += 1;
            } else {
                reached.peer_closed += 1;
            }
        }
        Some(CloseReason::Reset | CloseReason::PeerAborted) => reached.reset += 1,
        Some(CloseReason::Stage(StageFailure::Proxy(_))) if proxy != ProxyMode::Off => {
            reached.proxy_refused += 1
        }
        Some(CloseReason::IdleTimeout) => reached.idle += 1,
        None => reached.open_at_end += 1,
        Some(other) => panic!("seed {seed}: unexpected close: {other}"),
    }
    if closed.is_none()
        && p.reset_at.is_none()
        && half_closes
        && !junk
        && drain_at.is_none()
        && limits.idle_timeout.is_none()
    {
        // Liveness: let everything arrive and the peer read all; it must finish.
        p.arrived = p.input.len();
        p.fin = true;
        p.room = usize::MAX / 2;
        conn.on_event(Readiness {
            readable: true,
            writable: true,
            read_closed: true,
        });
        let mut progress = conn.drive(&mut Ctx::new(now, &limits, &mut Stats::default()), scratch);
        let mut rounds = 0;
        while progress == Progress::Yield {
            rounds += 1;
            assert!(rounds < 10_000, "seed {seed}: no progress");
            progress = conn.drive(&mut Ctx::new(now, &limits, &mut Stats::default()), scratch);
        }
        assert_eq!(
            progress,
            Progress::Closed(CloseReason::PeerClosed),
            "seed {seed}"
        );
        let p = conn.stream_mut();
        assert!(
            p.written == p.input[p.skip..],
            "seed {seed}: not every byte echoed"
        );
        reached.liveness_checked += 1;
    }
}

#[test]
fn random_streams_splits_resets_and_drains_keep_the_connection_invariants() {
    let cases: u64 = std::env::var("TCP_REACTOR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let base: u64 = std::env::var("TCP_REACTOR_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7c9_2026);
    let mut scratch = Scratch::new();
    let mut reached = Reached::default();
    let started = Instant::now();
    for case in 0..cases {
        run_case(base.wrapping_add(case), &mut scratch, &mut reached);
    }
    eprintln!(
        "fuzz_conn: {cases} cases from seed {base} in {:?}: {reached:?}",
        started.elapsed()
    );
    if cases >= 1000 {
        let r = &reached;
        for (what, n) in [
            ("peer closed", r.peer_closed),
            ("drained", r.drained),
            ("reset", r.reset),
            ("idle timeout", r.idle),
            ("liveness", r.liveness_checked),
            ("backpressure", r.backpressure),
            ("PROXY refused", r.proxy_refused),
        ] {
            assert!(n > 0, "no case reached {what}: the harness lost its teeth");
        }
    }
}

/// A peer that never reads: the kernel's send buffer takes `room` bytes,
/// then every write would block. Its requests arrive as fast as we read.
struct NonReader {
    rng: Rng,
    input: Vec<u8>,
    arrived: usize,
    read_pos: usize,
    room: usize,
}

impl Read for NonReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.arrived - self.read_pos;
        if available == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = available.min(buf.len());
        buf[..n].copy_from_slice(&self.input[self.read_pos..self.read_pos + n]);
        self.read_pos += n;
        Ok(n)
    }
}

impl Write for NonReader {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for NonReader {
    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One case: a pipelined stream of `messages` (whole requests, each one
/// repeated a random number of times, in random order) to a connection
/// whose peer never reads. Returns the most output that was ever owed.
fn non_reader_case<P: Protocol>(
    seed: u64,
    make: &impl Fn() -> P,
    messages: &[Vec<u8>],
    scratch: &mut Scratch,
) -> usize {
    let mut rng = Rng::new(seed);
    let high = rng.range(1, 256 * 1024);
    let limits = Limits {
        write_high_watermark: high,
        write_low_watermark: rng.range(0, high),
        read_budget: rng.range(1, 512 * 1024),
        idle_timeout: None,
        ..Limits::default()
    };
    let mut input = Vec::new();
    while input.len() < 1 << 20 {
        let m = &messages[rng.range(0, messages.len() - 1)];
        for _ in 0..rng.range(1, 2000) {
            input.extend_from_slice(m);
        }
    }
    let peer = NonReader {
        rng: Rng::new(seed ^ 0xbeef),
        input,
        arrived: 0,
        read_pos: 0,
        room: rng.range(0, 300_000),
    };
    let now = Instant::now();
    let peer_addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut conn = Conn::new(
        peer,
        peer_addr,
        ConnName::new(LoopTag::ONLY, 0),
        1,
        make(),
        now,
        ProxyMode::Off,
    );
    let bound = limits.write_high_watermark + OUT_BUDGET;
    // What the queues may *hold* (capacity, what RSS pays): output within
    // a granule of its bound, input one read, and their two headers.
    let held_bound = bound.next_multiple_of(GRANULE) + Scratch::READ_SIZE + 2 * 64;
    let mut most = 0;
    for _ in 0..rng.range(1, 200) {
        let p = conn.stream_mut();
        let piece = p.rng.range(1, 150_000);
        p.arrived = (p.arrived + piece).min(p.input.len());
        conn.on_event(Readiness {
            readable: true,
            writable: true,
            read_closed: false,
        });
        let mut progress = conn.drive(&mut Ctx::new(now, &limits, &mut Stats::default()), scratch);
        let mut yields = 0;
        loop {
            most = most.max(conn.owed());
            assert!(
                conn.owed() <= bound,
                "seed {seed}: owed {} > {bound} (high watermark {high})",
                conn.owed()
            );
            assert!(
                conn.queued_capacity() <= held_bound,
                "seed {seed}: queues hold {} B > {held_bound} (high watermark {high})",
                conn.queued_capacity()
            );
            match progress {
                Progress::Yield => {
                    yields += 1;
                    assert!(yields < 10_000, "seed {seed}: yields forever");
                    progress =
                        conn.drive(&mut Ctx::new(now, &limits, &mut Stats::default()), scratch);
                }
                Progress::Idle => break,
                Progress::Closed(reason) => panic!("seed {seed}: closed: {reason}"),
            }
        }
    }
    most
}

fn non_reader_cases<P: Protocol>(name: &str, make: impl Fn() -> P, messages: &[&[u8]]) {
    let messages: Vec<Vec<u8>> = messages.iter().map(|m| m.to_vec()).collect();
    let cases: u64 = std::env::var("TCP_REACTOR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(200, |n| n / 100)
        .max(1);
    let mut scratch = Scratch::new();
    let mut most = 0;
    for case in 0..cases {
        most = most.max(non_reader_case(
            0x0b0_2026 + case,
            &make,
            &messages,
            &mut scratch,
        ));
    }
    eprintln!("{name}: {cases} cases against a non-reading peer, at most {most} B owed");
    assert!(
        most > 0,
        "{name}: the peer never fell behind: the case lost its teeth"
    );
}

/// Every protocol the crate ships (`--protocol` offers the same list: the
/// binary's own test checks), each with whole requests whose replies
/// outweigh them. A new protocol fails here until it is given cases.
#[test]
fn every_protocol_keeps_owed_output_within_high_watermark_plus_out_budget_for_a_non_reader() {
    let post = [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n".as_slice(),
        &[b'b'; 20000],
    ]
    .concat();
    let echo = [
        b"*2\r\n$4\r\nECHO\r\n$3000\r\n".as_slice(),
        &[b'a'; 3000],
        b"\r\n",
    ]
    .concat();
    let inline_echo = [b"ECHO ".as_slice(), &[b'i'; 16000], b"\n"].concat();
    for &name in tcp_reactor::proto::BUNDLED {
        match name {
            Echo::NAME => non_reader_cases(name, || Echo, &[b"x", &[b'e'; 3000]]),
            Http::NAME => non_reader_cases(
                name,
                || Http::new(Arc::new(HttpConfig::default())),
                &[
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"X / HTTP/1.1\r\nHost: x\r\n\r\n",
                    &post,
                ],
            ),
            Resp::NAME => non_reader_cases(
                name,
                || Resp::new(1 << 20),
                &[
                    b"x\n",
                    b"PING\n",
                    b"*1\r\n$1\r\nx\r\n",
                    b"ECHO aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
                    &echo,
                    &inline_echo,
                ],
            ),
            other => panic!("{other}: a bundled protocol with no non-reader cases here"),
        }
    }
}
