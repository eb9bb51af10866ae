//! Many clients on one thread: a small mio loop that writes a known byte
//! pattern in random-sized chunks, reads concurrently, and checks every
//! byte that comes back against what was sent.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Length of the shared random pattern; prime, so streams never line up.
const PATTERN_LEN: usize = 1_048_573;

/// A small deterministic PRNG (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// The bytes client `id` sends, as an endless stream.
pub struct Pattern {
    bytes: Vec<u8>,
}

impl Pattern {
    /// The shared pattern.
    pub fn new() -> Self {
        let mut rng = Rng::new(42);
        Self {
            bytes: (0..PATTERN_LEN).map(|_| rng.next_u64() as u8).collect(),
        }
    }

    fn offset(id: usize, pos: u64) -> usize {
        ((id as u64 * 7919 + pos) % PATTERN_LEN as u64) as usize
    }

    /// Up to `len` bytes of client `id`'s stream from position `pos`.
    pub fn slice(&self, id: usize, pos: u64, len: usize) -> &[u8] {
        let start = Self::offset(id, pos);
        &self.bytes[start..(start + len).min(PATTERN_LEN)]
    }

    /// Whether `got` equals client `id`'s stream at `pos`; else where it differs.
    pub fn check(&self, id: usize, pos: u64, got: &[u8]) -> Result<(), u64> {
        let mut done = 0;
        while done < got.len() {
            let want = self.slice(id, pos + done as u64, got.len() - done);
            let have = &got[done..done + want.len()];
            if want != have {
                let i = want.iter().zip(have).position(|(a, b)| a != b).unwrap_or(0);
                return Err(pos + (done + i) as u64);
            }
            done += want.len();
        }
        Ok(())
    }
}

impl Default for Pattern {
    fn default() -> Self {
        Self::new()
    }
}

/// What each client does.
#[derive(Clone, Copy, Debug)]
pub enum Plan {
    /// Send exactly this many bytes, half-close, read until EOF.
    SendThenHalfClose(u64),
    /// Send without end; stop sending when the server's EOF arrives.
    StreamUntilEof,
}

/// How one client's conversation ended.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Bytes written.
    pub sent: u64,
    /// Bytes read back (all verified against the pattern up to `mismatch`).
    pub received: u64,
    /// A clean EOF (`read` returned 0) arrived.
    pub eof: bool,
    /// An error ended it (reset, refused, …).
    pub error: Option<io::ErrorKind>,
    /// First position where the bytes read back differ from those sent.
    pub mismatch: Option<u64>,
}

impl Outcome {
    /// Finished, one way or another.
    pub fn finished(&self) -> bool {
        self.eof || self.error.is_some() || self.mismatch.is_some()
    }
}

struct Client {
    /// Dropped (closed, sending our FIN) as soon as the client finishes.
    stream: Option<TcpStream>,
    out: Outcome,
    rng: Rng,
    write_closed: bool,
}

/// A set of clients driven by one poll loop.
pub struct Clients {
    poll: Poll,
    events: Events,
    clients: HashMap<usize, Client>,
    pattern: Pattern,
    plan: Plan,
    min_chunk: usize,
    max_chunk: usize,
    buf: Vec<u8>,
    /// Clients that stopped writing at their turn's budget, not at
    /// `WouldBlock`: no edge will come for them, so they are stepped again.
    again: Vec<usize>,
}

/// Bytes one client may write per turn. Without a cap, a client whose
/// peer drains as fast as it writes (a server discarding input in its
/// lingering close) never meets `WouldBlock`, and the others — one thread
/// serves them all — wait for seconds: long enough for a server's linger
/// timeout to cut them off.
const WRITE_BUDGET: u64 = 256 * 1024;

impl Clients {
    /// Connect `n` clients to `addr` (non-blocking; they complete in the loop).
    pub fn connect(addr: SocketAddr, n: usize, plan: Plan, seed: u64) -> Self {
        Self::connect_from(None, addr, n, plan, seed)
    }

    /// Like [`connect`](Self::connect), from source address `from` (any
    /// port), e.g. 127.0.0.2 to tell clients from a proxy on 127.0.0.1.
    pub fn connect_from(
        from: Option<IpAddr>,
        addr: SocketAddr,
        n: usize,
        plan: Plan,
        seed: u64,
    ) -> Self {
        let poll = Poll::new().expect("poll");
        let mut clients = HashMap::new();
        for id in 0..n {
            let mut stream = match from {
                None => TcpStream::connect(addr).expect("connect"),
                Some(ip) => connect_nonblocking_from(ip, addr),
            };
            poll.registry()
                .register(
                    &mut stream,
                    Token(id),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .expect("register");
            clients.insert(
                id,
                Client {
                    stream: Some(stream),
                    out: Outcome::default(),
                    rng: Rng::new(seed ^ id as u64),
                    write_closed: false,
                },
            );
        }
        Self {
            poll,
            events: Events::with_capacity(1024),
            clients,
            pattern: Pattern::new(),
            plan,
            min_chunk: 1,
            max_chunk: 8192,
            buf: vec![0; 64 * 1024],
            again: Vec::new(),
        }
    }

    /// Largest random write size (default 8 KiB).
    pub fn max_chunk(mut self, max: usize) -> Self {
        self.max_chunk = max.max(self.min_chunk);
        self
    }

    /// Every write exactly `size` bytes (or what is left): a client that
    /// sends each request in one write.
    pub fn fixed_chunk(mut self, size: usize) -> Self {
        self.min_chunk = size.max(1);
        self.max_chunk = size.max(1);
        self
    }

    /// Outcome of each client so far, by client id.
    pub fn outcomes(&self) -> Vec<Outcome> {
        let mut ids: Vec<_> = self.clients.keys().copied().collect();
        ids.sort_unstable();
        ids.iter().map(|id| self.clients[id].out.clone()).collect()
    }

    /// Drive all clients until each has finished or `timeout` passes. `tick`
    /// runs after every poll with the outcomes so far; it may act (send a
    /// signal, say). Returns the outcomes and whether all finished in time.
    pub fn run(
        &mut self,
        timeout: Duration,
        mut tick: impl FnMut(&[Outcome]),
    ) -> (Vec<Outcome>, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let outcomes = self.outcomes();
            tick(&outcomes);
            if outcomes.iter().all(Outcome::finished) {
                return (outcomes, true);
            }
            let now = Instant::now();
            if now >= deadline {
                return (outcomes, false);
            }
            let wait = match self.again.is_empty() {
                true => (deadline - now).min(Duration::from_millis(20)),
                false => Duration::ZERO,
            };
            match self.poll.poll(&mut self.events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("client poll: {e}"),
            }
            let mut ids: Vec<usize> = std::mem::take(&mut self.again);
            ids.extend(self.events.iter().map(|e| e.token().0));
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                self.step(id);
            }
        }
    }

    fn step(&mut self, id: usize) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let Some(mut stream) = c.stream.take() else {
            return;
        };
        let chunks = (self.min_chunk, self.max_chunk);
        let more = Self::exchange(
            &mut stream,
            c,
            id,
            &self.pattern,
            self.plan,
            chunks,
            &mut self.buf,
        );
        if !c.out.finished() {
            c.stream = Some(stream);
            if more {
                self.again.push(id);
            }
        } // else dropped here: our FIN ends the server's lingering close
    }

    fn exchange(
        stream: &mut TcpStream,
        c: &mut Client,
        id: usize,
        pattern: &Pattern,
        plan: Plan,
        (min_chunk, max_chunk): (usize, usize),
        buf: &mut [u8],
    ) -> bool {
        // Read everything available and check it.
        loop {
            match stream.read(buf) {
                Ok(0) => {
                    c.out.eof = true;
                    return false;
                }
                Ok(n) => {
                    if let Err(at) = pattern.check(id, c.out.received, &buf[..n]) {
                        c.out.mismatch = Some(at);
                        return false;
                    }
                    c.out.received += n as u64;
                    if c.out.received > c.out.sent {
                        c.out.mismatch = Some(c.out.sent);
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    c.out.error = Some(e.kind());
                    return false;
                }
            }
        }
        // Write random-sized chunks until the socket is full, we are done,
        // or this turn's budget is spent (then: more to do, without an edge).
        let mut written = 0u64;
        while !c.write_closed {
            if written >= WRITE_BUDGET {
                return true;
            }
            let remaining = match plan {
                Plan::SendThenHalfClose(total) => total - c.out.sent,
                Plan::StreamUntilEof => u64::MAX,
            };
            if remaining == 0 {
                let _ = stream.shutdown(Shutdown::Write);
                c.write_closed = true;
                break;
            }
            let len = c.rng.range(min_chunk, max_chunk).min(remaining as usize);
            let chunk = pattern.slice(id, c.out.sent, len);
            match stream.write(chunk) {
                Ok(n) => {
                    c.out.sent += n as u64;
                    written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break, // still connecting
                Err(e) => {
                    c.out.error = Some(e.kind());
                    return false;
                }
            }
        }
        false
    }
}

fn connect_nonblocking_from(ip: IpAddr, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(ip, 0).into())
        .expect("bind source");
    socket.set_nonblocking(true).expect("nonblocking");
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => panic!("connect from {ip}: {e}"),
    }
    TcpStream::from_std(socket.into())
}

/// Sum of a field over outcomes, for progress checks.
pub fn total_received(outcomes: &[Outcome]) -> u64 {
    outcomes.iter().map(|o| o.received).sum()
}
