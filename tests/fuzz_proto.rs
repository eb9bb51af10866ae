//! Property/fuzz harness for the HTTP and RESP parsers, without sockets.
//!
//! A driver plays the connection exactly as `conn` does: unconsumed input is
//! kept and offered again with the next bytes; nothing is fed after `Close`
//! or `Reject`. Inputs are valid streams (several requests or commands,
//! pipelined), mutations of them (bytes flipped, truncated, a range
//! duplicated, another stream spliced in, random bytes inserted), and
//! random bytes (from a protocol-ish alphabet, or any byte). Each case is
//! fed whole and again in random pieces, and we check:
//!
//! * **no panic**, whatever the bytes;
//! * **split invariance**: the same output and final decision however the
//!   stream is cut into reads (for every stream, valid or not: both parsers
//!   look at bounded windows, so a verdict never depends on a read's size);
//! * **bounded output**: one call writes at most 32 bytes per byte it was
//!   offered, plus 1 KiB, and never more than `OUT_BUDGET`; input left
//!   behind at the budget is offered again, as the connection does;
//! * **bounded state**: the unconsumed input never exceeds the protocol's
//!   `MAX_PENDING` (itself under `Limits::max_pending_input`), an HTTP
//!   header timer is armed only while a partial head is held;
//! * **drains end**: a drain at any point either closes at once or, once the
//!   in-flight request of a valid stream has arrived, closes then;
//! * **the clock**: with time jumping and timers firing (HTTP's 408), and a
//!   drain thrown in, the bounds above still hold.
//!
//! `cargo test --test fuzz_proto` runs a short deterministic pass. The long
//! pass: `TCP_REACTOR_FUZZ_CASES=1000000 cargo test --release --test
//! fuzz_proto -- --nocapture` (cases per protocol; `TCP_REACTOR_FUZZ_SEED`
//! picks another sequence).

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tcp_reactor::base::limits::Limits;
use tcp_reactor::proto::{
    budget_spent, http, http::chunked, resp, Decision, Http, HttpConfig, Output, Protocol, Resp,
    OUT_BUDGET,
};
use util::clients::Rng;

/// Bytes out per byte offered, at most (plus [`OUT_SLACK`]).
const OUT_RATIO: usize = 32;
const OUT_SLACK: usize = 1024;

/// One protocol under test.
trait Subject: Protocol + Sized {
    const MAX_PENDING: usize;
    fn make(rng: &mut Rng) -> (Self, Settings);
    fn make_with(settings: &Settings) -> Self;
    /// One valid request or command.
    fn valid_message(rng: &mut Rng, out: &mut Vec<u8>);
    /// Characters random inputs are drawn from, to get past the first byte.
    const ALPHABET: &'static [u8];
    /// Extra invariant on the protocol's state after a call.
    fn check_state(&self, pending: usize, now: Instant);
}

#[derive(Clone, Copy)]
struct Settings {
    max_body: u64,
    header_timeout: Option<Duration>,
}

impl Subject for Http {
    const MAX_PENDING: usize = http::MAX_PENDING;
    const ALPHABET: &'static [u8] =
        b"GET POST HEAD /echo HTTP/1.1\r\n\r\nHost: x\r\nContent-Length: 0123456789\r\nConnection: close keep-alive\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n:\t ";

    fn make(rng: &mut Rng) -> (Self, Settings) {
        let settings = Settings {
            max_body: [0, 1000, 100_000, 1 << 20, 1 << 20][rng.range(0, 4)],
            header_timeout: [None, Some(Duration::from_millis(rng.range(1, 500) as u64))]
                [rng.range(0, 1)],
        };
        (Self::make_with(&settings), settings)
    }

    fn make_with(s: &Settings) -> Self {
        Http::new(Arc::new(HttpConfig {
            max_body: s.max_body,
            header_timeout: s.header_timeout,
            date: None,
            log_requests: true,
        }))
    }

    fn valid_message(rng: &mut Rng, out: &mut Vec<u8>) {
        let http10 = rng.range(0, 4) == 0;
        let method = ["GET", "HEAD", "POST", "POST", "PUT", "DELETE", "OPTIONS"][rng.range(0, 6)];
        let path = ["/", "/echo", "/echo?x=1", "/a/b", "*", "/%20"][rng.range(0, 5)];
        if rng.range(0, 9) == 0 {
            out.extend_from_slice(b"\r\n"); // a stray CRLF between requests
        }
        let version = match rng.range(0, 60) {
            0 => "1.2", // served as 1.1
            1 => "2.0", // 505
            _ if http10 => "1.0",
            _ => "1.1",
        };
        let long;
        let path = if rng.range(0, 60) == 0 {
            long = format!("/{}", "t".repeat(rng.range(8000, 9000))); // 414 past 8 KiB
            &long
        } else {
            path
        };
        out.extend_from_slice(format!("{method} {path} HTTP/{version}\r\n").as_bytes());
        if !http10 || rng.range(0, 1) == 0 {
            out.extend_from_slice(b"Host: example.test\r\n");
        }
        for _ in 0..rng.range(0, 4) {
            let name = ["Accept", "X-Custom", "User-Agent", "Cookie"][rng.range(0, 3)];
            let value = "v".repeat(rng.range(0, 40));
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        match rng.range(0, 5) {
            0 => out.extend_from_slice(b"Connection: close\r\n"),
            1 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
            _ => {}
        }
        match rng.range(0, 40) {
            0 => {
                // Well-formed, but a head over 8 KiB: 431.
                out.extend_from_slice(b"X-Big: ");
                out.resize(out.len() + rng.range(8000, 9000), b'b');
                out.extend_from_slice(b"\r\n");
            }
            1 => {
                // A coding other than chunked: 501.
                out.extend_from_slice(
                    b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                );
                return;
            }
            2..=5 if !http10 => {
                // A chunked body.
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                if rng.range(0, 3) == 0 {
                    out.extend_from_slice(b"Expect: 100-continue\r\n");
                }
                out.extend_from_slice(b"\r\n");
                chunked_body(rng, out, &mut Vec::new());
                return;
            }
            _ => {}
        }
        let body_len = match rng.range(0, 9) {
            0..=3 => 0,
            4..=7 => rng.range(1, 3000),
            _ => rng.range(3000, 40_000),
        };
        if body_len > 0 || rng.range(0, 3) == 0 {
            out.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
            if !http10 && rng.range(0, 3) == 0 {
                out.extend_from_slice(b"Expect: 100-continue\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend((0..body_len).map(|_| rng.next_u64() as u8));
    }

    fn check_state(&self, pending: usize, now: Instant) {
        if let Some(deadline) = self.next_deadline() {
            assert!(pending > 0, "header timer armed with no partial head");
            assert!(deadline <= now + Duration::from_secs(1));
        }
    }
}

impl Subject for Resp {
    const MAX_PENDING: usize = resp::MAX_PENDING;
    const ALPHABET: &'static [u8] = b"*$-0123456789\r\n\r\nPING ECHO QUIT ping echo CONFIG GET x";

    fn make(rng: &mut Rng) -> (Self, Settings) {
        let settings = Settings {
            max_body: [5, 100, 100_000, 1 << 20, 1 << 20][rng.range(0, 4)],
            header_timeout: None,
        };
        (Self::make_with(&settings), settings)
    }

    fn make_with(s: &Settings) -> Self {
        Resp::new(s.max_body)
    }

    fn valid_message(rng: &mut Rng, out: &mut Vec<u8>) {
        let name =
            ["PING", "ping", "ECHO", "Echo", "CONFIG", "SET", "QUIT", ""][match rng.range(0, 40) {
                0 => 6, // QUIT, rarely: it ends the stream
                n => [0, 1, 2, 3, 4, 5, 7][n % 7],
            }];
        let argc = match name.to_ascii_uppercase().as_str() {
            "PING" => rng.range(1, 2),
            "ECHO" => 2,
            _ => rng.range(1, 4),
        };
        let arg = |rng: &mut Rng| -> Vec<u8> {
            let len = match rng.range(0, 9) {
                0..=7 => rng.range(0, 30),
                _ => rng.range(30, 20_000),
            };
            (0..len).map(|_| rng.next_u64() as u8).collect()
        };
        if rng.range(0, 3) == 0 && !name.is_empty() {
            // Inline: arguments without spaces, CR or LF.
            out.extend_from_slice(name.as_bytes());
            for _ in 1..argc {
                out.push(b' ');
                let len = rng.range(1, 20);
                out.extend((0..len).map(|_| b'a' + (rng.next_u64() % 26) as u8));
            }
            out.extend_from_slice(if rng.range(0, 4) == 0 { b"\n" } else { b"\r\n" });
            return;
        }
        if rng.range(0, 19) == 0 {
            out.extend_from_slice(b"*0\r\n");
        }
        out.extend_from_slice(format!("*{argc}\r\n${}\r\n{name}\r\n", name.len()).as_bytes());
        for _ in 1..argc {
            let a = arg(rng);
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(&a);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn check_state(&self, _pending: usize, _now: Instant) {}
}

/// A valid chunked body (sizes, extensions, trailers at random); appends
/// to `canonical` what the decoder echoes for it: the same chunks, without
/// extensions and trailers.
fn chunked_body(rng: &mut Rng, out: &mut Vec<u8>, canonical: &mut Vec<u8>) {
    for _ in 0..rng.range(0, 6) {
        let len = match rng.range(0, 9) {
            0..=6 => rng.range(1, 200),
            _ => rng.range(200, 30_000),
        };
        let size = if rng.range(0, 3) == 0 {
            format!("{len:X}")
        } else {
            format!("{len:x}")
        };
        out.extend_from_slice(size.as_bytes());
        if rng.range(0, 3) == 0 {
            out.extend_from_slice(b";ext=\"v\";x");
        }
        out.extend_from_slice(b"\r\n");
        canonical.extend_from_slice(format!("{len:x}\r\n").as_bytes());
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        out.extend_from_slice(&data);
        canonical.extend_from_slice(&data);
        out.extend_from_slice(b"\r\n");
        canonical.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for _ in 0..rng.range(0, 2) {
        out.extend_from_slice(b"X-Trailer: value\r\n");
    }
    out.extend_from_slice(b"\r\n");
    canonical.extend_from_slice(b"0\r\n\r\n");
}

/// Decode `pieces` as the HTTP protocol does: a partial line is offered
/// again with the next piece; echoing stops at `room` bytes per call and
/// the rest is offered again. The output, final status and bytes used.
fn decode_pieces(pieces: &[&[u8]], max: u64, room: usize) -> (Vec<u8>, chunked::Status, usize) {
    let mut d = chunked::Decoder::new();
    let mut pending = Vec::new();
    let mut out = Vec::new();
    let mut used = 0;
    let mut status = chunked::Status::More;
    for piece in pieces {
        pending.extend_from_slice(piece);
        loop {
            let stop_at = out.len().saturating_add(room);
            let r = d.decode(&pending, max, Some((&mut out, stop_at)));
            assert!(r.consumed <= pending.len());
            assert!(
                out.len() <= stop_at.saturating_add(32),
                "echo ran past its room"
            );
            pending.drain(..r.consumed);
            used += r.consumed;
            status = r.status;
            if status != chunked::Status::More || out.len() < stop_at {
                break;
            }
        }
        assert!(
            status != chunked::Status::More || pending.len() <= chunked::LINE_MAX + 2,
            "{} B held",
            pending.len()
        );
        if status != chunked::Status::More {
            break;
        }
    }
    (out, status, used)
}

/// One chunked decoder case: a valid body (followed by other bytes), a
/// mutated one, or random bytes; whole, then split at random with a
/// random output room: the same output, verdict and bytes used.
fn chunked_case(seed: u64, reached: &mut [u64; 4]) {
    let mut rng = Rng::new(seed);
    let max = [10, 1000, 100_000, 1 << 20][rng.range(0, 3)];
    let mut body = Vec::new();
    let mut canonical = Vec::new();
    chunked_body(&mut rng, &mut body, &mut canonical);
    let valid_len = body.len();
    body.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let kind = rng.range(0, 3);
    if kind == 1 {
        let other = body.clone();
        mutate(
            &mut rng,
            &mut body,
            &other,
            b"0123456789abcdefABCDEF;=\r\n\t \"xX-:",
        );
    } else if kind == 2 {
        let len = rng.range(0, 6000);
        body = (0..len)
            .map(|_| b"0123456789abcdef;\r\n x"[rng.range(0, 20)])
            .collect();
    }
    let whole = decode_pieces(&[&body], max, usize::MAX);
    if kind == 0 {
        // Valid: done (or over `max`), never anything else.
        match whole.1 {
            chunked::Status::Done => {
                assert_eq!(whole.0, canonical, "seed {seed}: echo of a valid body");
                assert_eq!(whole.2, valid_len, "seed {seed}: stops at the body's end");
            }
            chunked::Status::TooLarge => {}
            other => panic!("seed {seed}: valid body decoded as {other:?}"),
        }
    }
    for _ in 0..2 {
        let room = [1, 7, 100, 5000, usize::MAX][rng.range(0, 4)];
        let split = decode_pieces(&pieces(&mut rng, &body), max, room);
        assert!(
            split == whole,
            "seed {seed}: chunked decoding depends on split points or room ({:?} vs {:?})",
            split.1,
            whole.1
        );
    }
    reached[match whole.1 {
        chunked::Status::More => 0,
        chunked::Status::Done => 1,
        chunked::Status::Invalid(_) => 2,
        chunked::Status::TooLarge => 3,
    }] += 1;
}

#[test]
fn chunked_decoder_gives_the_same_echo_and_verdict_however_the_body_is_split() {
    let (cases, base) = cases();
    let started = Instant::now();
    let mut reached = [0u64; 4];
    for case in 0..cases {
        chunked_case(base.wrapping_add(case), &mut reached);
    }
    eprintln!(
        "fuzz_proto chunked: {cases} cases from seed {base} in {:?}: more/done/invalid/too large {reached:?}",
        started.elapsed()
    );
    if cases >= 1000 {
        assert!(
            reached.iter().all(|&n| n > 0),
            "a verdict never reached: {reached:?}"
        );
    }
}

/// Plays the connection for one protocol object.
struct Driver<P> {
    proto: P,
    pending: Vec<u8>,
    out: Output,
    ended: Option<Decision>,
}

impl<P: Subject> Driver<P> {
    fn new(proto: P) -> Self {
        Self {
            proto,
            pending: Vec::new(),
            out: Output::new(),
            ended: None,
        }
    }

    fn feed(&mut self, now: Instant, bytes: &[u8], seed: u64) {
        if self.ended.is_some() || bytes.is_empty() {
            return;
        }
        self.pending.extend_from_slice(bytes);
        // Like the connection: input left behind at the output budget is
        // offered again (the peer reads everything here).
        while self.call(now, seed) {}
        self.check(now, seed);
    }

    /// One `on_input` call; whether the connection would offer the rest again.
    fn call(&mut self, now: Instant, seed: u64) -> bool {
        let before = self.out.len();
        let step = self.proto.on_input(now, &self.pending, &mut self.out);
        let offered = self.pending.len();
        assert!(
            step.consumed <= offered,
            "seed {seed}: consumed more than offered"
        );
        let wrote = self.out.len() - before;
        assert!(
            wrote <= OUT_RATIO * offered + OUT_SLACK && wrote <= OUT_BUDGET,
            "seed {seed}: {wrote} B out for {offered} B in"
        );
        self.pending.drain(..step.consumed);
        if step.decision != Decision::Continue {
            self.ended = Some(step.decision);
            return false;
        }
        !self.pending.is_empty() && budget_spent(wrote)
    }

    fn check(&self, now: Instant, seed: u64) {
        let bound = P::MAX_PENDING.min(Limits::default().max_pending_input);
        assert!(
            self.ended.is_some() || self.pending.len() <= bound,
            "seed {seed}: {} B left unconsumed (bound {bound})",
            self.pending.len()
        );
        self.proto.check_state(self.pending.len(), now);
    }
}

/// Random cut points: pieces of 1 byte to the whole rest.
fn pieces<'a>(rng: &mut Rng, stream: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    let small = rng.range(0, 3) == 0;
    while at < stream.len() {
        let left = stream.len() - at;
        let n = if small {
            rng.range(1, left.min(16))
        } else {
            rng.range(1, left)
        };
        out.push(&stream[at..at + n]);
        at += n;
    }
    out
}

fn mutate(rng: &mut Rng, stream: &mut Vec<u8>, other: &[u8], alphabet: &[u8]) {
    for _ in 0..rng.range(1, 4) {
        if stream.is_empty() {
            stream.extend_from_slice(&other[..other.len().min(64)]);
            continue;
        }
        let at = rng.range(0, stream.len() - 1);
        match rng.range(0, 6) {
            0 => stream[at] = rng.next_u64() as u8, // flip
            1 => stream[at] = alphabet[rng.range(0, alphabet.len() - 1)],
            2 => stream.truncate(at),
            3 => {
                // duplicate a range
                let end = rng.range(at, stream.len().min(at + 200));
                let copy = stream[at..end].to_vec();
                let to = rng.range(0, stream.len());
                stream.splice(to..to, copy);
            }
            4 if !other.is_empty() => {
                // splice in part of another stream
                let from = rng.range(0, other.len() - 1);
                let end = rng.range(from, other.len().min(from + 300));
                stream.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                let end = rng.range(at, stream.len().min(at + 20));
                stream.drain(at..end);
            }
        }
    }
}

/// What the cases got to, so the harness cannot go vacuous.
#[derive(Debug, Default)]
struct Reached {
    valid: u64,
    mutated: u64,
    random: u64,
    closed: u64,
    rejected: u64,
    drain_continued: u64,
    timed_out: u64,
    markers: Vec<(&'static str, u64)>,
}

fn run_case<P: Subject>(seed: u64, reached: &mut Reached) {
    let mut rng = Rng::new(seed);
    let now = Instant::now();
    let (_, settings) = P::make(&mut rng);

    // The stream: valid, mutated, or random.
    let mut stream = Vec::new();
    for _ in 0..rng.range(1, 8) {
        P::valid_message(&mut rng, &mut stream);
    }
    let kind = rng.range(0, 9);
    let valid = kind < 4;
    if (4..8).contains(&kind) {
        let mut other = Vec::new();
        P::valid_message(&mut rng, &mut other);
        mutate(&mut rng, &mut stream, &other, P::ALPHABET);
        reached.mutated += 1;
    } else if kind == 8 {
        let len = match rng.range(0, 7) {
            0 => rng.range(16_000, 24_000), // over every line and head limit
            _ => rng.range(0, 3000),
        };
        let any = rng.range(0, 1) == 0;
        stream = (0..len)
            .map(|_| {
                if any {
                    rng.next_u64() as u8
                } else {
                    P::ALPHABET[rng.range(0, P::ALPHABET.len() - 1)]
                }
            })
            .collect();
        if rng.range(0, 1) == 0 {
            stream.retain(|&b| b != b'\n'); // no line ever ends
        }
        reached.random += 1;
    } else {
        reached.valid += 1;
    }

    // Whole, then in random pieces: the same output and decision.
    let mut whole = Driver::new(P::make_with(&settings));
    whole.feed(now, &stream, seed);
    for _ in 0..2 {
        let mut split = Driver::new(P::make_with(&settings));
        for piece in pieces(&mut rng, &stream) {
            split.feed(now, piece, seed);
        }
        assert!(
            split.out == whole.out && split.ended == whole.ended,
            "seed {seed}: {} output depends on split points ({:?} vs {:?})",
            <P as Protocol>::NAME,
            split.ended,
            whole.ended
        );
    }
    match whole.ended {
        Some(Decision::Close) => reached.closed += 1,
        Some(Decision::Reject(_)) => reached.rejected += 1,
        _ => {}
    }
    for (marker, count) in reached.markers.iter_mut() {
        if whole
            .out
            .windows(marker.len())
            .any(|w| w == marker.as_bytes())
        {
            *count += 1;
        }
    }

    // A drain at a random point, the clock jumping, timers firing.
    let mut d = Driver::new(P::make_with(&settings));
    let cuts = pieces(&mut rng, &stream);
    let drain_at = rng.range(0, cuts.len());
    let mut t = now;
    let mut drained = false;
    for (i, piece) in cuts.iter().enumerate() {
        if i == drain_at && d.ended.is_none() {
            drained = true;
            match d.proto.on_drain(t, &mut d.out) {
                Decision::Continue => reached.drain_continued += 1,
                other => d.ended = Some(other),
            }
        }
        t += Duration::from_millis(rng.range(0, 200) as u64);
        if d.ended.is_none() {
            if let Some(deadline) = d.proto.next_deadline() {
                if t >= deadline {
                    let decision = d.proto.on_timeout(t, &mut d.out);
                    assert_ne!(
                        decision,
                        Decision::Continue,
                        "seed {seed}: timer fired for nothing"
                    );
                    assert_eq!(
                        d.proto.next_deadline(),
                        None,
                        "seed {seed}: timer after close"
                    );
                    d.ended = Some(decision);
                    reached.timed_out += 1;
                }
            }
        }
        d.feed(t, piece, seed);
    }
    if valid && drained {
        // Every message of a valid stream is complete, so the one in
        // flight when the drain began has arrived: the protocol closed.
        assert!(
            d.ended.is_some(),
            "seed {seed}: drained {} connection never closed",
            <P as Protocol>::NAME
        );
    }
}

fn cases() -> (u64, u64) {
    let cases = std::env::var("TCP_REACTOR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let base = std::env::var("TCP_REACTOR_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_2026);
    (cases, base)
}

fn fuzz<P: Subject>(markers: &[&'static str]) {
    let (cases, base) = cases();
    let mut reached = Reached {
        markers: markers.iter().map(|m| (*m, 0)).collect(),
        ..Reached::default()
    };
    let started = Instant::now();
    for case in 0..cases {
        run_case::<P>(base.wrapping_add(case), &mut reached);
    }
    eprintln!(
        "fuzz_proto {}: {cases} cases from seed {base} in {:?}: {reached:?}",
        <P as Protocol>::NAME,
        started.elapsed()
    );
    if cases >= 1000 {
        let r = &reached;
        for (what, n) in [
            ("valid", r.valid),
            ("mutated", r.mutated),
            ("random", r.random),
            ("close", r.closed),
            ("reject", r.rejected),
            ("drain in flight", r.drain_continued),
        ] {
            assert!(n > 0, "{}: no case reached {what}", <P as Protocol>::NAME);
        }
        for (marker, n) in &r.markers {
            assert!(
                *n > 0,
                "{}: no case produced {marker:?}",
                <P as Protocol>::NAME
            );
        }
    }
}

#[test]
fn http_parser_survives_random_and_mutated_requests_split_anywhere() {
    fuzz::<Http>(&[
        "HTTP/1.1 200 OK",
        "HTTP/1.1 100 Continue",
        "HTTP/1.1 400 ",
        "HTTP/1.1 404 ",
        "HTTP/1.1 405 ",
        "HTTP/1.1 413 ",
        "HTTP/1.1 414 ",
        "HTTP/1.1 431 ",
        "HTTP/1.1 505 ",
        "HTTP/1.1 501 ",
        "Transfer-Encoding: chunked",
        "\r\n0\r\n\r\n",
        "Connection: close",
        "Connection: keep-alive",
    ]);
}

#[test]
fn resp_parser_survives_random_and_mutated_commands_split_anywhere() {
    fuzz::<Resp>(&[
        "+PONG\r\n",
        "+OK\r\n",
        "-ERR unknown command",
        "-ERR wrong number of arguments",
        "-ERR Protocol error: invalid bulk length",
        "-ERR Protocol error: invalid multibulk length",
        "-ERR Protocol error: expected '$'",
        "-ERR Protocol error: too big inline request",
    ]);
}
