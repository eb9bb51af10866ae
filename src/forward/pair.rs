//! One proxied connection: the client's socket, the upstream's, and the
//! two [`Flow`]s between them — the Go model's goroutine pair running
//! `io.Copy` each way, as one state machine the loop drives.
//!
//! ```text
//!   Connecting ──connected──► Forwarding ──both FINs passed on──► closed
//!       │  refused / timed out: the loop retries on another upstream
//!       └─ none left ─► closed (NoUpstream)
//! ```
//!
//! While `Connecting`, the client is not read (what it sends waits in
//! its socket, and its readiness is remembered for later). A pair ends
//! when both directions have passed their FIN on, on an error in either
//! (the other side is then reset: `SO_LINGER` 0), on the idle timeout, or
//! when a drain runs out of time.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::base::buffer::Buffer;
use crate::base::close::{CloseReason, StageFailure};
use crate::base::human::ConnName;
use crate::io::proxy::preamble::{Preamble, Step as PreambleStep};
use crate::io::proxy::Announce;
use crate::io::transport::Transport;

use super::flow::{End, Endpoint, Flow, Pumped, Side, Splice, Tools};
use crate::io::stack::Stream;

/// Where a pair is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairState {
    /// A non-blocking connect to an upstream is under way.
    Connecting,
    /// Bytes flow both ways.
    Forwarding,
}

impl fmt::Display for PairState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PairState::Connecting => "Connecting",
            PairState::Forwarding => "Forwarding",
        })
    }
}

/// What driving a pair came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Idle,
    Yield,
    Closed(CloseReason),
}

/// A direction's name in the trace: `conn 3 client → upstream`.
struct Direction(ConnName, &'static str);

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) client: Side<Stream>,
    /// The upstream socket: connecting, or connected.
    pub(crate) upstream: Side<TcpStream>,
    /// Index of the upstream in the loop's list.
    pub(crate) target: usize,
    /// Upstreams tried so far, a bit each.
    pub(crate) tried: u64,
    /// Connects tried so far (the first one included).
    pub(crate) attempts: usize,
    /// Counted in `target`'s live connections (until a failed connect
    /// takes it out).
    pub(crate) holds_upstream: bool,
    state: PairState,
    /// Client → upstream.
    up: Flow,
    /// Upstream → client.
    down: Flow,
    pub(crate) peer: SocketAddr,
    pub(crate) name: ConnName,
    pub(crate) generation: u64,
    pub(crate) opened: Instant,
    connect_started: Instant,
    last_active: Instant,
    /// The deadline the loop's timer holds for this pair.
    pub(crate) armed: Option<Instant>,
    splice: Splice,
    /// Bytes of the PROXY header sent ahead of the client's.
    announced: u64,
    /// A PROXY header is expected from the client and not read yet.
    preamble: Option<Preamble>,
    /// The PROXY header read so far; then what followed it, for the upstream.
    held: Buffer,
    /// The upstream connect has completed.
    connected: bool,
    /// Send the upstream a PROXY header naming the client.
    announce: Option<Announce>,
    /// The address the client connected to.
    ours: SocketAddr,
}

/// How every pair of a loop is set up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct How {
    pub(crate) splice: Splice,
    pub(crate) preamble: Option<Preamble>,
    pub(crate) announce: Option<Announce>,
}

/// Which deadline a pair waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// The upstream connect (`--connect-timeout`).
    Connect,
    /// The client's PROXY header (`--proxy-timeout`).
    Header,
    /// Traffic either way (`--idle-timeout`).
    Idle,
    /// A stage's own (the TLS handshake): closed with this reason.
    Stage(StageFailure),
}

impl Pair {
    /// A pair whose connect to upstream `target` has just been started.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Stream,
        peer: SocketAddr,
        upstream: TcpStream,
        target: usize,
        name: ConnName,
        generation: u64,
        how: &How,
        now: Instant,
    ) -> Self {
        let ours = client.socket().local_addr().unwrap_or(peer);
        let splice = how.splice;
        Self {
            preamble: how.preamble,
            held: Buffer::new(),
            connected: false,
            announce: how.announce,
            ours,
            client: Side::new(client),
            upstream: Side::new(upstream),
            target,
            tried: bit(target),
            attempts: 1,
            holds_upstream: true,
            state: PairState::Connecting,
            up: Flow::new(splice),
            down: Flow::new(splice),
            peer,
            name,
            generation,
            opened: now,
            connect_started: now,
            last_active: now,
            armed: None,
            splice,
            announced: 0,
        }
    }

    pub(crate) fn state(&self) -> PairState {
        self.state
    }

    /// When the current connect began.
    pub(crate) fn connect_started(&self) -> Instant {
        self.connect_started
    }

    /// The one place the state changes.
    fn set_state(&mut self, to: PairState) {
        log::trace!("{} {} => {to}", self.name, self.state);
        self.state = to;
    }

    /// A new connect, to upstream `target`, replaces a failed one.
    pub(crate) fn retry(
        &mut self,
        upstream: TcpStream,
        target: usize,
        attempts: usize,
        now: Instant,
    ) {
        self.upstream = Side::new(upstream);
        self.target = target;
        self.tried |= bit(target);
        self.attempts = attempts;
        self.holds_upstream = true;
        self.connect_started = now;
    }

    /// The connect completed: forward, once the client's PROXY header
    /// (if one is expected) is read too.
    pub(crate) fn connected(&mut self, now: Instant) {
        self.connected = true;
        self.try_forward(now);
    }

    /// Start forwarding if both the upstream and the client are ready:
    /// our PROXY header first, then what followed the client's.
    fn try_forward(&mut self, now: Instant) {
        if !self.connected || self.preamble.is_some() || self.state != PairState::Connecting {
            return;
        }
        if let Some(announce) = self.announce {
            let header = announce.header(self.peer, self.ours);
            self.up.announce(&header);
            self.announced = header.len() as u64;
        }
        if !self.held.is_empty() {
            self.up.announce(self.held.as_slice());
            self.held = Buffer::new();
        }
        self.set_state(PairState::Forwarding);
        self.last_active = now;
    }

    /// Read the client's PROXY header while one is expected: the client
    /// it names becomes the peer; an invalid one closes the pair.
    fn read_preamble(&mut self, scratch: &mut [u8]) -> Option<Step> {
        let preamble = self.preamble?;
        while self.client.readable {
            // Never past the header's cap and one read behind it.
            let n = match self.client.sock.recv(&mut scratch[..MAX_HEADER_READ]) {
                Ok(0) => return Some(Step::Closed(CloseReason::PeerClosed)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.client.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Step::Closed(CloseReason::from_io(&e))),
            };
            if n < MAX_HEADER_READ && !self.client.read_closed {
                self.client.readable = false;
            }
            match preamble.feed(&mut self.held, &scratch[..n]) {
                PreambleStep::Incomplete => {}
                PreambleStep::Done { client, rest } => {
                    log::debug!(
                        "{} PROXY header: client {} ({} B after it)",
                        self.name,
                        client.map_or_else(|| "not named".to_owned(), |c| c.to_string()),
                        rest.len()
                    );
                    if let Some(client) = client {
                        self.peer = client;
                    }
                    // TLS takes what followed the header as its records;
                    // otherwise it is payload for the upstream.
                    if self.client.sock.preamble_done(rest) {
                        self.held = Buffer::new();
                    }
                    self.preamble = None;
                    return None;
                }
                PreambleStep::Invalid(why) => {
                    log::debug!("{} {why}: closed", self.name);
                    return Some(Step::Closed(CloseReason::Stage(StageFailure::Proxy(why))));
                }
            }
        }
        None
    }

    /// Bytes from the client, bytes to the client (a PROXY header we
    /// sent is not the client's).
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (
            self.up.bytes.saturating_sub(self.announced),
            self.down.bytes,
        )
    }

    /// The deadline this pair needs now, and what it is: the connect's,
    /// the client's PROXY header's, a stage's (the TLS handshake), or the
    /// idle timeout's.
    pub(crate) fn deadline(&self, limits: &Timeouts) -> Option<(Instant, Deadline)> {
        let header = self
            .preamble
            .and_then(|p| p.deadline(self.opened, limits.header))
            .map(|at| (at, Deadline::Header));
        let connect =
            (!self.connected).then(|| (self.connect_started + limits.connect, Deadline::Connect));
        let stage = self
            .client
            .sock
            .stage_deadline()
            .map(|d| (d.at, Deadline::Stage(d.reason)));
        let idle = match self.state {
            PairState::Connecting => None,
            PairState::Forwarding => limits.idle.map(|t| (self.last_active + t, Deadline::Idle)),
        };
        [header, connect, stage, idle]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// Move bytes both ways; say whether the pair is over.
    pub(crate) fn drive(&mut self, tools: &mut Tools<'_>, now: Instant) -> Step {
        if let Some(closed) = self.read_preamble(tools.scratch) {
            return closed;
        }
        self.try_forward(now);
        if self.state != PairState::Forwarding {
            return Step::Idle;
        }
        let before = self.bytes();
        let up = self.up.pump(
            &mut self.client,
            &mut self.upstream,
            self.splice,
            tools,
            &Direction(self.name, "client → upstream"),
        );
        let down = self.down.pump(
            &mut self.upstream,
            &mut self.client,
            self.splice,
            tools,
            &Direction(self.name, "upstream → client"),
        );
        if self.bytes() != before || self.up.eof || self.down.eof {
            self.last_active = now;
        }
        let yielded = matches!(up, Pumped::Yield) || matches!(down, Pumped::Yield);
        for (pumped, from_client) in [(up, true), (down, false)] {
            if let Pumped::Failed(end, e) = pumped {
                let client_side = matches!(
                    (end, from_client),
                    (End::Source, true) | (End::Destination, false)
                );
                let side = if client_side { "client" } else { "upstream" };
                log::debug!("{} {side} error: {e}: resetting the other side", self.name);
                self.reset_both();
                // A stage's refusal (bad TLS) is its own reason, not an I/O error.
                let reason = match self.client.sock.failure() {
                    Some(why) if client_side => CloseReason::Stage(why),
                    _ => CloseReason::from_io(&e),
                };
                return Step::Closed(reason);
            }
        }
        if self.up.done() && self.down.done() {
            return Step::Closed(CloseReason::PeerClosed);
        }
        if yielded {
            Step::Yield
        } else {
            Step::Idle
        }
    }

    /// Reset both sockets when they close (`SO_LINGER` 0: an RST, not a
    /// FIN), so an error on one side is an error on the other.
    pub(crate) fn reset_both(&self) {
        for sock in [self.client.sock.socket(), &self.upstream.sock] {
            let _ = socket2::SockRef::from(sock).set_linger(Some(Duration::ZERO));
        }
    }

    /// Give the pipes back before the pair goes.
    pub(crate) fn release(&mut self, pipes: &mut super::pipe::PipePool) {
        self.up.release(pipes);
        self.down.release(pipes);
    }
}

/// What a read for the client's PROXY header asks for at most: the
/// longest header we accept, and a read's worth behind it.
const MAX_HEADER_READ: usize = 4096;

/// The timeouts a pair's deadline comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) header: Option<Duration>,
    pub(crate) idle: Option<Duration>,
}

/// Upstream `i`'s bit in [`Pair::tried`] (the 64th and later share none,
/// and are never skipped on a retry).
fn bit(i: usize) -> u64 {
    if i < 64 {
        1 << i
    } else {
        0
    }
}
