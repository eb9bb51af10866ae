//! One connection: the Go tutorial's handler goroutine, as an explicit state
//! machine that readiness events drive.
//!
//! The event loop owns the socket registration and the timers; a [`Conn`]
//! owns everything else about one peer: its [`State`], the readiness the
//! kernel last reported, the bytes it still owes, and its protocol.
//!
//! # The byte path
//! ```text
//!   socket ──► PROXY preamble ──► TLS ──────────► protocol
//!   Stream     preamble.rs        tls::session     P: Protocol
//!   (Plain)    Option<Preamble>   (Stream::Tls)
//! ```
//! Each stage is its own file, tested alone. Below the protocol is a
//! [`Transport`] ([`Stream`](crate::io::stack::Stream): the socket, or TLS over it); the
//! PROXY [`preamble`] is sans-IO and, while a header is expected, takes
//! the bytes read before anything else does (TLS has not started and
//! passes them through). `through_preamble` is the one place the stages
//! are chained: the header's client becomes the peer, and the bytes after
//! it go to TLS ([`Transport::preamble_done`]) or to the protocol. Plain
//! echo pays one test of `preamble` (`None`) and one `match` arm of
//! `Stream` per read.
//!
//! # Readiness rules (edge-triggered)
//! Each socket is registered **once**, for readable *and* writable. The
//! kernel reports an edge only when something changes, so the connection
//! remembers what it was told (`readable`, `writable`) and clears a flag
//! only when the socket proves it exhausted:
//! * a read that returns `WouldBlock`, or a **short read** (fewer bytes than
//!   the buffer): the socket was empty at that moment, and any later arrival
//!   raises a new edge. This saves the extra `read` → `WouldBlock` syscall per
//!   message (tokio relies on the same fact). The exception: once the kernel
//!   has reported the peer's FIN (`read_closed`), we keep reading until `Ok(0)`.
//! * a write that returns `WouldBlock`.
//! * `Interrupted` is retried; spurious events just find `WouldBlock`.
//!
//! Interest is *derived*, not registered: `Conn::wants_read` says whether
//! the state and backpressure allow reading. When reading is paused while the
//! socket is readable, no new edge will come, so un-pausing continues at once
//! from the remembered flag. When a connection stops because it used up its
//! fairness budget, [`Progress::Yield`] asks the loop to come back to it.
//!
//! # Backpressure
//! Output the kernel did not take waits in `out`. Once it reaches the high
//! watermark the connection stops reading; it reads again when `out` drains
//! to the low watermark. One read is answered by one protocol call, whose
//! output is at most [`OUT_BUDGET`] (a protocol stops taking frames at its
//! budget and the connection offers the rest again later), so `out` never
//! exceeds *high + `OUT_BUDGET`*, for every protocol. A read behind a
//! partial frame only tops the input queue up to one read's size, so
//! `input` never exceeds [`Scratch::READ_SIZE`]; and the queues' capacity
//! stays within [`GRANULE`](crate::base::buffer::GRANULE) of those lengths. With the defaults a
//! peer that sends without reading costs at most 64 + 64 + 64 = 192 KiB.
//!
//! # Ownership of the hot path
//! Reads land in the loop's shared [`Scratch`] buffer, the protocol answers
//! into the shared output scratch, and the answer is written straight from
//! there; only what the kernel refused is copied into `out`. An idle
//! connection owns no heap memory. The functions a message passes through
//! (`on_event`, `drive`, `read`, `answer`, `send`, `write`, `arm`) are
//! `#[inline(always)]`, `pump` included: one echoed message then runs in
//! the loop's own frame instead of a dozen prologues and epilogues.

mod state;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::base::buffer::Buffer;
pub use crate::base::close::{CloseReason, ForceCause};
use crate::base::close::{ProxyFailure, StageFailure};
use crate::base::counters::Stats;
use crate::base::human::ConnName;
pub use crate::base::limits::Limits;
use crate::io::proxy::preamble::{self, Preamble};
use crate::io::proxy::ProxyMode;
use crate::io::transport::Transport;
use crate::mailbox::{ConnId, Hub, Message, Outbox};
use crate::obs::trace_events::LoopTrace;
use crate::proto::{budget_spent, Decision, Output, Piece, Protocol, OUT_BUDGET};
pub use state::{PeerFin, State};

/// Buffers the loop lends to whichever connection it is driving.
#[derive(Debug)]
pub struct Scratch {
    read: Vec<u8>,
    out: Output,
}

impl Scratch {
    /// Size of the shared read buffer; a read never returns more.
    pub const READ_SIZE: usize = 64 * 1024;

    /// Allocate the shared buffers once.
    pub fn new() -> Self {
        Self {
            read: vec![0; Self::READ_SIZE],
            out: Output::with_capacity(Self::READ_SIZE),
        }
    }
}

/// The least a read behind a partial frame asks for (see `Conn::read`).
const MIN_READ: usize = 4 * 1024;

/// The part of the read buffer a read behind the `held` input may fill:
/// what tops the queue up to one read, and at least [`MIN_READ`]. Out of
/// line: echo, whose input queue is always empty, never calls it.
#[cold]
#[inline(never)]
fn room_behind<'b>(held: &Buffer, read: &'b mut [u8]) -> &'b mut [u8] {
    let room = Scratch::READ_SIZE.saturating_sub(held.len()).max(MIN_READ);
    let room = room.min(read.len());
    &mut read[..room]
}

// Echo's reply is written straight from one read: it must fit a call's
// output budget like any protocol's reply.
const _: () = assert!(Scratch::READ_SIZE <= OUT_BUDGET);

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// What the loop lends a connection for one call: its clock reading for
/// the turn, the bounds connections obey, and where counts and trace
/// events go. Passed down every call; no thread-local holds any of it.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The loop's one clock reading for this turn.
    pub now: Instant,
    /// Bounds and timeouts.
    pub limits: &'a Limits,
    /// The loop's counters (backpressure pauses, what a stage counted).
    pub stats: &'a mut Stats,
    /// The loop's `--trace-events` recording, when it has one.
    pub trace: Option<&'a mut LoopTrace>,
}

impl<'a> Ctx<'a> {
    /// A context at `now` with no trace recording.
    pub fn new(now: Instant, limits: &'a Limits, stats: &'a mut Stats) -> Self {
        Self {
            now,
            limits,
            stats,
            trace: None,
        }
    }
}

/// What one readiness event said about a connection's socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Bytes (or an error) to read.
    pub readable: bool,
    /// Room to write (or the write side closed, or an error: a write finds out).
    pub writable: bool,
    /// The peer's FIN arrived: read until `Ok(0)`, no further edge will say so.
    pub read_closed: bool,
}

impl Readiness {
    /// What an epoll event says. An error makes the socket both readable
    /// and writable: the next read or write returns it.
    #[inline(always)]
    pub fn of(event: &mio::event::Event) -> Self {
        let error = event.is_error();
        Self {
            readable: event.is_readable() || error,
            writable: event.is_writable() || event.is_write_closed() || error,
            read_closed: event.is_read_closed(),
        }
    }
}

/// What the loop should do with a connection after driving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing more to do until the next readiness event or timer.
    Idle,
    /// Work is left but the fairness budget is spent: come back next turn.
    Yield,
    /// The connection is finished; remove it.
    Closed(CloseReason),
}

/// One connection's state machine. `S` is the byte stream, `P` the protocol.
#[derive(Debug)]
pub struct Conn<P, S = crate::io::stack::Stream> {
    stream: S,
    peer: SocketAddr,
    /// Its name in logs, which holds its slab key.
    name: ConnName,
    generation: u64,
    state: State,
    /// Last readiness the kernel reported and we have not used up.
    readable: bool,
    writable: bool,
    /// The kernel reported the peer's FIN: read until `Ok(0)`.
    read_closed: bool,
    /// Backpressure: owed output crossed the high watermark.
    read_paused: bool,
    out: Buffer,
    input: Buffer,
    proto: P,
    opened: Instant,
    last_active: Instant,
    /// The earliest deadline armed in the loop's timer heap for us.
    armed: Option<Instant>,
    bytes_in: u64,
    bytes_out: u64,
    /// The PROXY preamble stage, while a header is still expected before
    /// any payload; `None` once it has been read, or when none is expected.
    preamble: Option<Preamble>,
    /// The protocol has had input. A connection that has not spoken yet
    /// (only a PROXY header, or nothing) gets the drain's silent grace.
    spoke: bool,
    /// The protocol stopped at its output budget with whole frames left in
    /// `input`: offer them again once output drains (no edge will come).
    reoffer: bool,
    /// Held by the loop: its messages for another loop wait for room in
    /// that loop's queue, so it reads nothing until they are posted.
    held: bool,
}

type Io<T> = Result<T, CloseReason>;

/// What one `read` found.
enum ReadOutcome {
    Data(usize),
    /// `WouldBlock`: nothing to read right now.
    Empty,
    /// `Ok(0)`: the peer's FIN.
    Eof,
}

impl<P: Protocol, S: Transport> Conn<P, S> {
    /// A freshly accepted connection, `name`d by its loop and slab slot. With `proxy` other
    /// than `Off`, a PROXY header must come first: its bytes are never
    /// handed to the protocol, and the client it names becomes the peer.
    pub fn new(
        stream: S,
        peer: SocketAddr,
        name: ConnName,
        generation: u64,
        mut proto: P,
        now: Instant,
        proxy: ProxyMode,
    ) -> Self {
        let preamble = Preamble::new(proxy);
        if preamble.is_none() {
            proto.on_peer(peer);
        }
        Self {
            stream,
            peer,
            name,
            generation,
            state: State::Open,
            readable: false,
            writable: false,
            read_closed: false,
            read_paused: false,
            out: Buffer::new(),
            input: Buffer::new(),
            proto,
            opened: now,
            last_active: now,
            armed: None,
            bytes_in: 0,
            bytes_out: 0,
            preamble,
            spoke: false,
            reoffer: false,
            held: false,
        }
    }

    /// Give the protocol its identity and the hub, if it messages, then
    /// tell it it is open.
    pub fn attach(&mut self, me: ConnId, hub: &Arc<Hub>, cx: &mut Ctx<'_>, scratch: &mut Scratch) {
        if let Some(mailbox) = self.proto.mailbox() {
            mailbox.attach(me, Arc::clone(hub));
        }
        scratch.out.clear();
        self.proto.on_open(&mut scratch.out);
        if !scratch.out.is_empty() {
            // A greeting: the socket is not known writable yet, so it is
            // queued and goes out on the first writable edge.
            self.queue(&scratch.out);
            self.update_backpressure(cx);
        }
    }

    /// The conversation ended (see [`Protocol::on_end`]): tell the
    /// protocol, once — when the state leaves `Open`/`Draining`, or (the
    /// loop calls this) when a connection closes straight from there.
    pub fn end(&mut self, reason: CloseReason) {
        if matches!(self.state, State::Open | State::Draining { .. }) {
            self.proto.on_end(&reason);
        }
    }

    /// Whether the protocol sent messages not yet taken by the loop.
    pub(crate) fn has_sent(&mut self) -> bool {
        self.proto
            .mailbox()
            .is_some_and(|mailbox| !mailbox.sent().is_empty())
    }

    /// Move what the protocol sent into `spare` (swapping buffers, so both
    /// keep their memory). `false`, touching nothing, when it sent nothing.
    pub(crate) fn take_sent(&mut self, spare: &mut Outbox) -> bool {
        match self.proto.mailbox() {
            Some(mailbox) if !mailbox.sent().is_empty() => {
                mailbox.take_sent(spare);
                true
            }
            _ => false,
        }
    }

    /// The protocol, for its last word once the connection has closed.
    pub(crate) fn protocol_mut(&mut self) -> &mut P {
        &mut self.proto
    }

    /// A message from another connection: the protocol frames it into our
    /// output, which is written at once if the socket takes it. A
    /// connection past `Open`/`Draining` drops it; one that then owes more
    /// than [`Limits::slow_consumer_limit`] is closed as a slow consumer.
    pub(crate) fn deliver(
        &mut self,
        cx: &mut Ctx<'_>,
        msg: &Message<'_>,
        scratch: &mut Scratch,
    ) -> Progress {
        let now = cx.now;
        let limits = cx.limits;
        if !matches!(self.state, State::Open | State::Draining { .. }) {
            log::trace!("{} message from {} dropped: closing", self.name, msg.from);
            return Progress::Idle;
        }
        // A group message reaches only a member of the group at delivery:
        // one routed before this connection left it (on another loop, or
        // earlier in this turn) is not for it any more.
        let accepted = match self.proto.mailbox() {
            Some(mailbox) => mailbox.accepts(msg),
            None => msg.topic.is_none(),
        };
        if !accepted {
            log::trace!(
                "{} message from {} dropped: no longer in its group",
                self.name,
                msg.from
            );
            return Progress::Idle;
        }
        scratch.out.clear();
        let decision = self.proto.on_message(now, msg, &mut scratch.out);
        // Queued, not written: the loop flushes each receiver once after
        // delivering the turn's messages, so a subscriber sent a hundred
        // messages in one turn costs one write, not a hundred (redis
        // batches its pub/sub output the same way).
        if !scratch.out.is_empty() {
            self.queue(&scratch.out);
            scratch.out.clear(); // hold no reference past the call
            self.update_backpressure(cx);
        }
        if self.out.len() > limits.slow_consumer_limit {
            log::debug!(
                "{} owes {} B after a message: slow consumer",
                self.name,
                self.out.len()
            );
            return Progress::Closed(CloseReason::SlowConsumer);
        }
        if decision == Decision::Continue {
            return Progress::Idle;
        }
        self.decide(cx, decision);
        self.drive(cx, scratch)
    }

    /// The socket, for (de)registration.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Its name in logs (`loop 1 conn 5`), which holds its slab key.
    pub fn name(&self) -> ConnName {
        self.name
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The generation this connection was given when accepted.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Current lifecycle state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Bytes read from and written to the peer.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }

    /// When the connection was accepted.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// Hand what the protocol finished since the last call to `sink`
    /// (see [`Protocol::report`]).
    pub fn report(&mut self, sink: &mut dyn FnMut(crate::proto::Report<'_>)) {
        self.proto.report(sink);
    }

    /// Bytes owed to the peer that the kernel has not taken yet: the
    /// output queue and what a stage (TLS) owes.
    pub fn owed(&self) -> usize {
        self.out.len() + self.stream.owed()
    }

    /// Heap bytes the connection's two queues hold: their *capacity*, what
    /// the memory bound is about (see [`buffer`]), not what they hold now.
    pub fn queued_capacity(&self) -> usize {
        self.out.capacity() + self.input.capacity()
    }

    /// Whether the state and backpressure allow reading input to process.
    pub(crate) fn wants_read(&self) -> bool {
        matches!(self.state, State::Open | State::Draining { .. })
            && !self.read_paused
            && !self.held
    }

    /// Stop reading until [`Conn::release`]: what it sent waits for room
    /// (see the server's routing). Writing goes on.
    pub fn hold(&mut self) {
        if !self.held {
            log::trace!("{} held: its messages wait for another loop", self.name);
            self.held = true;
        }
    }

    /// Read again after [`Conn::hold`]. The caller drives it: the socket may
    /// have become readable meanwhile, and no new edge would say so.
    pub fn release(&mut self) {
        if self.held {
            log::trace!("{} released: reading again", self.name);
            self.held = false;
        }
    }

    /// Whether bytes are waiting for the socket to become writable.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty() || self.stream.owed() > 0
    }

    /// Record a readiness event. Flags are only ever *set* here; the socket
    /// clears them by returning `WouldBlock` (or a short read).
    #[inline(always)]
    pub fn on_event(&mut self, event: Readiness) {
        let Readiness {
            readable,
            writable,
            read_closed,
        } = event;
        log::trace!(
            "{} event:{}{}{}",
            self.name,
            if readable { " readable" } else { "" },
            if writable { " writable" } else { "" },
            if read_closed { " read-closed" } else { "" },
        );
        self.readable |= readable || read_closed;
        self.writable |= writable;
        if read_closed {
            self.read_closed = true;
            self.stream.peer_fin();
        }
    }

    /// Do all the I/O the current readiness and state allow.
    #[inline(always)]
    pub fn drive(&mut self, cx: &mut Ctx<'_>, scratch: &mut Scratch) -> Progress {
        let progress = match self.pump(cx, scratch) {
            Ok(progress) => progress,
            Err(reason) => Progress::Closed(reason),
        };
        // What a stage counted (a TLS handshake); nothing for a socket.
        self.stream.take_counts(cx.stats);
        progress
    }

    /// Graceful shutdown began: read what is already readable, answer it,
    /// then let the protocol say whether it can end now. A connection that
    /// has not sent payload yet (a PROXY header is not payload) is not cut
    /// off: its client may be writing its first request at this moment (a
    /// connection accepted just before an upgrade's hand-over, say), so it
    /// waits in `Draining` for that.
    pub fn begin_drain(&mut self, cx: &mut Ctx<'_>, scratch: &mut Scratch) -> Progress {
        let now = cx.now;
        if self.state != State::Open {
            return self.drive(cx, scratch);
        }
        // Read even without a fresh edge: an arrival may be queued in the
        // kernel's event list that the loop has not collected yet.
        self.readable = true;
        match self.pump(cx, scratch) {
            Err(reason) => return Progress::Closed(reason),
            Ok(_) if self.state != State::Open => {} // ended while reading
            // Not spoken yet, or input left at the output budget that the
            // protocol has yet to see: it is asked once it has seen it all.
            Ok(_) if !self.spoke || self.reoffer => {
                self.set_state(cx, State::Draining { since: now })
            }
            Ok(_) => {
                if let Err(reason) = self.ask_drain(cx, scratch) {
                    return Progress::Closed(reason);
                }
            }
        }
        self.drive(cx, scratch)
    }

    /// Ask the protocol whether the conversation can end for the drain.
    fn ask_drain(&mut self, cx: &mut Ctx<'_>, scratch: &mut Scratch) -> Io<()> {
        let now = cx.now;
        scratch.out.clear();
        let decision = self.proto.on_drain(now, &mut scratch.out);
        self.send_scratch(cx, scratch)?;
        match decision {
            Decision::Continue if self.state == State::Open => {
                self.set_state(cx, State::Draining { since: now })
            }
            Decision::Continue => {}
            Decision::Close => self.finish(cx, CloseReason::Drained, PeerFin::Pending),
            Decision::Reject(msg) => {
                self.finish(cx, CloseReason::ProtocolError(msg), PeerFin::Pending)
            }
        }
        Ok(())
    }

    /// The earliest instant at which [`Conn::on_timer`] has work to do.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        self.deadlines(limits)
            .into_iter()
            .filter_map(|(at, _)| at)
            .min()
    }

    /// Which deadline [`Conn::deadline`] is, in words, for the trace.
    pub(crate) fn deadline_name(&self, limits: &Limits) -> &'static str {
        self.deadlines(limits)
            .into_iter()
            .filter_map(|(at, name)| at.map(|at| (at, name)))
            .min_by_key(|(at, _)| *at)
            .map_or("none", |(_, name)| name)
    }

    /// Every deadline the connection may have, with its name: the one
    /// list that [`Conn::deadline`] and [`Conn::deadline_name`] both read,
    /// so the trace names the deadline that was armed.
    fn deadlines(&self, limits: &Limits) -> [(Option<Instant>, &'static str); 6] {
        let stage = self.stream.stage_deadline();
        [
            (self.idle_deadline(limits), "idle timeout"),
            (self.proxy_deadline(limits), "PROXY header timeout"),
            (
                self.silent_deadline(limits),
                "drain grace for a silent peer",
            ),
            (self.linger_deadline(limits), "linger"),
            (
                stage.map(|d| d.at),
                stage.map_or("stage timeout", |d| d.name),
            ),
            (self.proto.next_deadline(), "protocol timeout"),
        ]
    }

    /// No traffic either way since `last_active`: close at this instant.
    fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        limits.idle_timeout.map(|d| self.last_active + d)
    }

    /// A PROXY header still expected: it must be complete by then.
    fn proxy_deadline(&self, limits: &Limits) -> Option<Instant> {
        self.preamble?.deadline(self.opened, limits.proxy_timeout)
    }

    /// Draining a connection that has not spoken: its grace ends then.
    fn silent_deadline(&self, limits: &Limits) -> Option<Instant> {
        match self.state {
            State::Draining { since } if !self.spoke => Some(since + limits.drain_silent_grace),
            _ => None,
        }
    }

    /// While lingering: `linger_timeout` after the last input (or our FIN),
    /// but no later than `linger_max` after our FIN.
    fn linger_deadline(&self, limits: &Limits) -> Option<Instant> {
        match self.state {
            State::Lingering { since, .. } => {
                let quiet = self.last_active.max(since) + limits.linger_timeout;
                Some(quiet.min(since + limits.linger_max))
            }
            _ => None,
        }
    }

    /// If `wanted` is earlier than what is armed, remember it as armed and
    /// return it so the loop moves the connection's one timer entry there
    /// (see [`crate::reactor::timer`]). Later deadlines cost nothing now:
    /// the armed entry fires first and re-arms.
    ///
    /// The fast path, taken once per message: while `Open` with no PROXY
    /// header expected, the only deadlines are the idle one and the
    /// protocol's. The idle deadline only ever moves later (traffic pushes
    /// `last_active` forward), so once an entry is armed it is no later
    /// than the idle deadline: only the protocol's needs a look.
    #[inline(always)]
    pub fn arm(&mut self, limits: &Limits) -> Option<Instant> {
        let wanted = if self.armed.is_some() && self.state == State::Open && self.preamble.is_none()
        {
            self.proto.next_deadline()?
        } else {
            self.deadline(limits)?
        };
        match self.armed {
            Some(armed) if armed <= wanted => None,
            _ => {
                self.armed = Some(wanted);
                Some(wanted)
            }
        }
    }

    /// A timer entry armed for `at` fired.
    pub fn on_timer(&mut self, at: Instant, cx: &mut Ctx<'_>, scratch: &mut Scratch) -> Progress {
        let now = cx.now;
        let limits = cx.limits;
        if self.armed == Some(at) {
            self.armed = None;
        }
        let due = |deadline: Option<Instant>| deadline.is_some_and(|d| now >= d);
        if due(self.idle_deadline(limits)) {
            return Progress::Closed(CloseReason::IdleTimeout);
        }
        if due(self.proxy_deadline(limits)) {
            return Progress::Closed(CloseReason::Stage(StageFailure::Proxy(
                ProxyFailure::TimedOut,
            )));
        }
        if let Some(stage) = self.stream.stage_deadline() {
            if now >= stage.at {
                return Progress::Closed(CloseReason::Stage(stage.reason));
            }
        }
        if due(self.silent_deadline(limits)) {
            log::debug!("{} stayed silent through the drain grace", self.name);
            self.finish(cx, CloseReason::Drained, PeerFin::Pending);
        }
        if let State::Lingering { reason, .. } = self.state {
            if due(self.linger_deadline(limits)) {
                // Worth a line: if the peer still sends, our close resets it.
                log::debug!("{} linger ended without the peer's FIN", self.name);
                return Progress::Closed(reason);
            }
        }
        if self.proto.next_deadline().is_some_and(|d| now >= d) {
            scratch.out.clear();
            let decision = self.proto.on_timeout(now, &mut scratch.out);
            if let Err(reason) = self.send_scratch(cx, scratch) {
                return Progress::Closed(reason);
            }
            self.decide(cx, decision);
        }
        self.drive(cx, scratch)
    }

    /// The one place the state changes.
    fn set_state(&mut self, cx: &mut Ctx<'_>, next: State) {
        if let State::Flushing { reason, .. } | State::Lingering { reason, .. } = next {
            self.end(reason);
        }
        log::trace!("{} {} => {}", self.name, self.state, next);
        if let Some(trace) = cx.trace.as_deref_mut() {
            let (from, to) = (self.state.name(), next.name());
            trace.conn_state(self.generation, self.name.key(), self.peer, from, to);
        }
        self.state = next;
    }

    fn set_read_paused(&mut self, cx: &mut Ctx<'_>, paused: bool) {
        if paused != self.read_paused {
            if paused {
                cx.stats.backpressure_pauses += 1;
            }
            log::trace!(
                "{} reading {} ({} B owed)",
                self.name,
                if paused {
                    "paused: above high watermark"
                } else {
                    "resumed: at low watermark"
                },
                self.out.len()
            );
            self.read_paused = paused;
        }
    }

    fn finish(&mut self, cx: &mut Ctx<'_>, reason: CloseReason, peer: PeerFin) {
        self.set_state(cx, State::Flushing { reason, peer });
    }

    fn decide(&mut self, cx: &mut Ctx<'_>, decision: Decision) {
        match decision {
            Decision::Continue => {}
            Decision::Close => self.finish(cx, CloseReason::Done, PeerFin::Pending),
            Decision::Reject(msg) => {
                self.finish(cx, CloseReason::ProtocolError(msg), PeerFin::Pending)
            }
        }
    }

    #[inline(always)]
    fn pump(&mut self, cx: &mut Ctx<'_>, scratch: &mut Scratch) -> Io<Progress> {
        let now = cx.now;
        let limits = cx.limits;
        let mut budget = limits.read_budget;
        loop {
            if self.writable && self.wants_write() {
                self.flush(cx)?;
            }
            match self.state {
                State::Open | State::Draining { .. } => {
                    if self.reoffer && self.wants_read() {
                        if budget == 0 {
                            return Ok(Progress::Yield);
                        }
                        self.reoffer = false;
                        self.answer(cx, scratch, 0)?;
                        budget = budget.saturating_sub(OUT_BUDGET);
                        if !self.reoffer && matches!(self.state, State::Draining { .. }) {
                            // Every byte read has been offered: now the
                            // protocol can say whether the drain ends it.
                            self.ask_drain(cx, scratch)?;
                        }
                        continue;
                    }
                    if !self.readable || !self.wants_read() {
                        return Ok(Progress::Idle);
                    }
                    if budget == 0 {
                        return Ok(Progress::Yield);
                    }
                    let n = self.read_and_answer(cx, scratch)?;
                    budget = budget.saturating_sub(n);
                    // Draining is rare: asked first, it is the only test
                    // an open connection pays for here.
                    if matches!(self.state, State::Draining { .. })
                        && n > 0
                        && self.spoke
                        && !self.reoffer
                    {
                        self.ask_drain(cx, scratch)?;
                    }
                }
                State::Flushing { reason, peer } => {
                    if self.out.is_empty() && self.stream.end_output() {
                        continue; // TLS close_notify queued: flush it first
                    }
                    if self.wants_write() {
                        return Ok(Progress::Idle); // not writable: wait for the edge
                    }
                    if peer == PeerFin::Received {
                        log::trace!(
                            "{} all owed bytes written and the peer is done: closing (the close sends our FIN)",
                            self.name
                        );
                        return Err(reason);
                    }
                    if let Err(e) = self.stream.shutdown_write() {
                        return Err(self.io_reason(&e));
                    }
                    log::trace!(
                        "{} all owed bytes written: FIN sent (shutdown write)",
                        self.name
                    );
                    self.set_state(cx, State::Lingering { reason, since: now });
                }
                State::Lingering { reason, .. } => {
                    if !self.readable {
                        return Ok(Progress::Idle);
                    }
                    if budget == 0 {
                        return Ok(Progress::Yield);
                    }
                    match self.read(cx, scratch) {
                        Ok(ReadOutcome::Data(n)) => budget = budget.saturating_sub(n),
                        Ok(ReadOutcome::Empty) => {}
                        // The peer's FIN, or an error: either way the peer
                        // already has every byte we owed.
                        Ok(ReadOutcome::Eof) | Err(_) => return Err(reason),
                    }
                }
            }
        }
    }

    /// One read into the shared read scratch. Behind input held in
    /// `input` (a partial frame, or whole ones left at the output budget),
    /// it reads only what tops the queue up to one read's size
    /// ([`Scratch::READ_SIZE`]), so the input queue never holds more than
    /// that (at least [`MIN_READ`] is read, so a frame can always grow).
    #[inline(always)]
    fn read(&mut self, cx: &mut Ctx<'_>, scratch: &mut Scratch) -> io::Result<ReadOutcome> {
        let now = cx.now;
        // Echo keeps no input (its reply is the read itself): for it this
        // test is a constant, and its hot path stays as it was.
        let buf = match self.proto.replies_with_input() || self.input.is_empty() {
            true => &mut scratch.read[..],
            false => room_behind(&self.input, &mut scratch.read),
        };
        loop {
            match self.stream.recv(buf) {
                Ok(0) => {
                    log::trace!("{} read EOF", self.name);
                    self.readable = false;
                    self.read_closed = true;
                    return Ok(ReadOutcome::Eof);
                }
                Ok(n) => {
                    if n < buf.len() && !self.read_closed {
                        self.readable = false; // short read: the socket is empty
                    }
                    log::trace!(
                        "{} read {n} B{}",
                        self.name,
                        if self.readable {
                            ""
                        } else {
                            " (short read: drained)"
                        }
                    );
                    self.bytes_in += n as u64;
                    self.last_active = now;
                    return Ok(ReadOutcome::Data(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    log::trace!("{} read would block", self.name);
                    self.readable = false;
                    return Ok(ReadOutcome::Empty);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Read once and hand the bytes to the protocol; returns bytes read.
    #[inline(always)]
    fn read_and_answer(&mut self, cx: &mut Ctx<'_>, scratch: &mut Scratch) -> Io<usize> {
        let now = cx.now;
        let n = match self.read(cx, scratch).map_err(|e| self.read_error(&e))? {
            ReadOutcome::Data(n) => n,
            ReadOutcome::Empty => return Ok(0),
            ReadOutcome::Eof => {
                // The peer's FIN: answer what is left, then end. (Before a
                // PROXY header completes, the protocol has seen nothing.)
                if self.preamble.is_none() {
                    scratch.out.clear();
                    self.proto.on_eof(now, &mut scratch.out);
                    self.send_scratch(cx, scratch)?;
                }
                self.finish(cx, CloseReason::PeerClosed, PeerFin::Received);
                return Ok(0);
            }
        };
        // The byte path: `stream` is the socket, or TLS over it. While a
        // PROXY header is expected, TLS has not started and the bytes read
        // are the socket's: they go through the preamble stage first.
        if let Some(preamble) = self.preamble {
            return self.through_preamble(preamble, cx, scratch, n);
        }
        self.answer(cx, scratch, n)?;
        Ok(n)
    }

    /// Why an I/O error ended the connection: a stage's own refusal
    /// (typed, from [`Transport::failure`]), else the kernel's error.
    fn io_reason(&self, e: &io::Error) -> CloseReason {
        self.stream
            .failure()
            .map_or_else(|| CloseReason::from_io(e), CloseReason::Stage)
    }

    /// Why a failed read ended the connection. A reset between messages,
    /// with nothing owed and nothing half-received, lost nothing: that is
    /// how `wrk` and `ab` end their connections, and not an error to report.
    fn read_error(&self, e: &io::Error) -> CloseReason {
        match self.io_reason(e) {
            CloseReason::Reset
                if self.out.is_empty() && self.input.is_empty() && !self.proto.mid_message() =>
            {
                CloseReason::PeerAborted
            }
            reason => reason,
        }
    }

    /// Where the stages are chained. `n` bytes read from the socket go to
    /// the PROXY `preamble` stage; once it has the whole header, the client
    /// it names becomes the peer, the stage ends, and what followed the
    /// header goes on down the path: to the TLS stage, which takes it as
    /// its first records ([`Transport::preamble_done`]), or else to the
    /// protocol as payload. Runs only while a header is expected.
    ///
    /// Out of line, so that the loop the hot path inlines stays as it was;
    /// not `#[cold]`, which reshuffled that loop (+1 instruction per echoed
    /// message under callgrind).
    #[inline(never)]
    fn through_preamble(
        &mut self,
        preamble: Preamble,
        cx: &mut Ctx<'_>,
        scratch: &mut Scratch,
        n: usize,
    ) -> Io<usize> {
        // Until the header is done, the input queue holds only its bytes.
        let (client, to_tls) = match preamble.feed(&mut self.input, &scratch.read[..n]) {
            preamble::Step::Incomplete => return Ok(n), // wait for more
            preamble::Step::Invalid(why) => {
                return Err(CloseReason::Stage(StageFailure::Proxy(why)))
            }
            preamble::Step::Done { client, rest } => (client, self.stream.preamble_done(rest)),
        };
        self.preamble = None;
        match client {
            Some(client) => {
                log::debug!(
                    "{} PROXY header: client {client} (via {})",
                    self.name,
                    self.peer
                );
                self.peer = client;
            }
            None => log::debug!(
                "{} PROXY header without a client (LOCAL/UNKNOWN): keeping {}",
                self.name,
                self.peer
            ),
        }
        self.proto.on_peer(self.peer);
        if to_tls {
            // The TLS stage has the rest: records already out of the
            // socket, so read them without waiting for an edge.
            self.input.consume(self.input.len());
            self.readable = true;
        } else if !self.input.is_empty() {
            self.answer(cx, scratch, 0)?; // payload behind the header
        }
        Ok(n)
    }

    /// Hand input to the protocol and send its answer: the first `fresh`
    /// bytes of the read scratch, behind whatever the input queue holds.
    #[inline(always)]
    fn answer(&mut self, cx: &mut Ctx<'_>, scratch: &mut Scratch, fresh: usize) -> Io<()> {
        let now = cx.now;
        let limits = cx.limits;
        let n = fresh;
        self.spoke = true;
        if self.input.is_empty() && n > 0 && self.proto.replies_with_input() {
            // Echo: the reply is this very read. Write it from the read
            // buffer, with no copy into the output scratch.
            return self.send(cx, &scratch.read[..n]);
        }
        scratch.out.clear();
        let step = if self.input.is_empty() {
            let step = self
                .proto
                .on_input(now, &scratch.read[..n], &mut scratch.out);
            self.input.extend(&scratch.read[step.consumed.min(n)..n]);
            step
        } else {
            self.input.extend(&scratch.read[..n]);
            let step = self
                .proto
                .on_input(now, self.input.as_slice(), &mut scratch.out);
            self.input.consume(step.consumed);
            step
        };
        // A call is meant to stop at its budget (`budget_spent`); one that
        // writes more is served all the same (never a panic), and reading
        // pauses behind it like behind any output over the watermark.
        if scratch.out.len() > OUT_BUDGET {
            log::trace!(
                "{} one call wrote {} B, over its budget",
                self.name,
                scratch.out.len()
            );
        }
        self.reoffer = !self.input.is_empty() && budget_spent(scratch.out.len());
        self.send_scratch(cx, scratch)?;
        // Left for the budget, the input is whole frames that are offered
        // again before anything more is read; only a partial frame counts.
        if !self.reoffer && self.input.len() > limits.max_pending_input {
            return Err(CloseReason::ProtocolError("unconsumed input over limit"));
        }
        self.decide(cx, step.decision);
        Ok(())
    }

    /// Send what the protocol put in the output scratch: straight to the
    /// socket when nothing is queued, keeping only what the kernel refused
    /// (a shared chunk by reference).
    fn send_scratch(&mut self, cx: &mut Ctx<'_>, scratch: &mut Scratch) -> Io<()> {
        if !scratch.out.has_shared() {
            return self.send(cx, &scratch.out);
        }
        let sent = self.send_pieces(cx, &scratch.out);
        scratch.out.clear(); // hold no reference past the call
        sent
    }

    /// [`Conn::send_scratch`] for an output with shared chunks: each piece
    /// in order, written while the socket takes it, queued after that.
    #[cold]
    #[inline(never)]
    fn send_pieces(&mut self, cx: &mut Ctx<'_>, out: &Output) -> Io<()> {
        for piece in out.pieces() {
            match piece {
                Piece::Bytes(bytes) => self.send(cx, bytes)?,
                Piece::Shared(chunk) => {
                    let written = if self.out.is_empty() && self.writable {
                        self.write(cx, chunk)?
                    } else {
                        0
                    };
                    self.out.share(Arc::clone(chunk), written);
                    self.update_backpressure(cx);
                }
            }
        }
        Ok(())
    }

    /// Queue all of `out` (a message framed for a receiver), shared chunks
    /// by reference.
    fn queue(&mut self, out: &Output) {
        if !out.has_shared() {
            self.out.extend(out);
            return;
        }
        for piece in out.pieces() {
            match piece {
                Piece::Bytes(bytes) => self.out.extend(bytes),
                Piece::Shared(chunk) => self.out.share(Arc::clone(chunk), 0),
            }
        }
    }

    /// Send `bytes`: straight to the socket when nothing is queued, keeping
    /// only what the kernel refused.
    #[inline(always)]
    fn send(&mut self, cx: &mut Ctx<'_>, bytes: &[u8]) -> Io<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.out.is_empty() && self.writable {
            let written = self.write(cx, bytes)?;
            // All taken, nothing owed (a TLS stage may still hold sealed
            // records: those count; for a plain socket `owed` is 0), and
            // nothing to resume: the watermarks have nothing to say.
            if written == bytes.len() && !self.read_paused && self.stream.owed() == 0 {
                return Ok(());
            }
            self.out.extend(&bytes[written..]);
        } else {
            self.out.extend(bytes);
        }
        self.update_backpressure(cx);
        Ok(())
    }

    /// Write queued output until it is gone or the socket is full.
    fn flush(&mut self, cx: &mut Ctx<'_>) -> Io<()> {
        match self.stream.flush_owed() {
            Ok(true) => {}
            Ok(false) => {
                self.writable = false;
                self.update_backpressure(cx);
                return Ok(());
            }
            Err(e) => return Err(self.io_reason(&e)),
        }
        // The front piece, then the next (behind a shared chunk the queue
        // is several slices), until the socket is full or all is out.
        loop {
            let out = std::mem::take(&mut self.out);
            let front = out.as_slice().len();
            let written = self.write(cx, out.as_slice());
            self.out = out;
            let written = written?;
            self.out.consume(written);
            if written < front || self.out.is_empty() {
                break;
            }
        }
        self.update_backpressure(cx);
        Ok(())
    }

    #[inline(always)]
    fn write(&mut self, cx: &mut Ctx<'_>, bytes: &[u8]) -> Io<usize> {
        let now = cx.now;
        let mut done = 0;
        while done < bytes.len() {
            match self.stream.send(&bytes[done..]) {
                Ok(0) => return Err(CloseReason::Io(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_reason(&e)),
            }
        }
        log::trace!(
            "{} wrote {done} of {} B{}",
            self.name,
            bytes.len(),
            if self.writable {
                ""
            } else {
                " (would block: rest queued)"
            }
        );
        if done > 0 {
            self.bytes_out += done as u64;
            self.last_active = now;
        }
        Ok(done)
    }

    #[inline(always)]
    fn update_backpressure(&mut self, cx: &mut Ctx<'_>) {
        let limits = cx.limits;
        let owed = self.owed();
        if owed >= limits.write_high_watermark {
            self.set_read_paused(cx, true);
        } else if owed <= limits.write_low_watermark {
            self.set_read_paused(cx, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Echo;

    /// An idle connection costs its slab entry and nothing else: this is
    /// the number behind the "RSS per idle connection" benchmark column.
    #[test]
    fn an_idle_echo_connection_is_small() {
        let size = std::mem::size_of::<slab::Slab<Conn<Echo>>>();
        let entry = std::mem::size_of::<Conn<Echo>>();
        eprintln!("Conn<Echo>: {entry} B (slab header {size} B)");
        assert!(entry <= 192, "Conn<Echo> grew to {entry} B");
    }
}
