//! The event loop: one `mio::Poll`, one thread, every source a token.
//!
//! | token | source | Go counterpart |
//! |---|---|---|
//! | `Token(LISTENERS - i)` | listening socket `i` | the accept goroutine |
//! | `SIGNALS` | `signal_hook_mio` self-pipe | `signal.Notify` channel in main |
//! | `WAKER` | [`ShutdownHandle`] from other threads | `cancel()` on the context |
//! | `Token(key)` | connection in slab slot `key` | one handler goroutine |
//!
//! Each turn: poll (sleeping until the next timer at most), dispatch events
//! by token, revisit connections that yielded, fire due timers, and stop
//! once draining has emptied the slab. Everything a connection does lives
//! in [`crate::reactor::conn`]; everything a protocol does lives in [`crate::proto`].
//! This file only routes, counts and decides when to stop.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::base::close::{ProxyFailure, StageFailure};
use crate::base::counters::Stats;
use crate::base::error::Error;
use crate::base::human::{ConnName, Count, Dur, LoopName, LoopTag, Timeout};
use crate::io::stack::{Accept, Stream};
use crate::mailbox::{ConnId, Hub, Message, Outbox, Receivers, Refused, To};
use crate::obs::access_log::{AccessLog, ConnEntry, HttpEntry, LoopLog};
use crate::obs::trace_events::{LoopTrace, TraceEvents};
use crate::proto::{ConnInfo, Protocol, Report, Reports};
use crate::reactor::admission::{self, ConnLimit, Held, Slot};
use crate::reactor::config::Config;
use crate::reactor::conn::{CloseReason, Conn, Ctx, ForceCause, Progress, Readiness, Scratch};
use crate::reactor::control::{
    self, Control, Request, ShutdownHandle, REQUEST_ACCEPT, REQUEST_DRAIN_CONNS, REQUEST_FORCE,
    REQUEST_RELOAD, REQUEST_SHUTDOWN, REQUEST_STATS,
};
use crate::reactor::listener::{self, Accepted, Listener};
use crate::reactor::loop_context::MakeProtocol;
use crate::reactor::signals::SignalSource;
use crate::reactor::timer::{Timers, Wake};
use crate::reactor::tokens::{listener_index, SIGNALS, WAKER};

/// The context a connection is lent for one call (see [`Ctx`]): built
/// from the server's fields in place, so that it borrows them apart from
/// the slab the connection is in.
macro_rules! cx {
    ($server:ident, $now:expr) => {
        Ctx {
            now: $now,
            limits: &$server.config.limits,
            stats: &mut $server.stats,
            trace: $server.trace.as_mut(),
        }
    };
}

/// The trace line for a poll, out of the hot path's way.
#[cold]
#[inline(never)]
fn trace_poll(tag: LoopTag, events: &Events, waited: Duration, timeout: Option<Duration>) {
    log::trace!(
        "{}poll: {} after {} (timeout {})",
        LoopName(tag),
        Count(events.iter().count() as u64, "event"),
        Dur(waited),
        Timeout(timeout)
    );
}

/// The trace line for an armed timer, out of the hot path's way.
#[cold]
#[inline(never)]
fn trace_armed(name: ConnName, what: &str, at: Instant) {
    log::trace!(
        "{name} timer armed: {what} in {}",
        Dur(at.saturating_duration_since(Instant::now()))
    );
}

/// Take what `conn`'s protocol finished into the counters and the access
/// log. The log's clock is read here, once per call that has something to
/// log: just after the drive that wrote the responses' last bytes, so a
/// request's duration runs to its last byte written (the loop's per-turn
/// `now` would make a fast request take 0).
fn take_reports<P: Protocol, S: Accept>(
    conn: &mut Conn<P, S>,
    tally: &mut Stats,
    log: &mut Option<LoopLog>,
) {
    let peer = conn.peer();
    let mut written: Option<Instant> = None;
    conn.report(&mut |report| {
        report.count(tally);
        if let (
            Some(log),
            Report::Http {
                request,
                referer,
                user_agent,
                status,
                bytes,
                body_bytes,
                started,
            },
        ) = (log.as_mut(), report)
        {
            let at = *written.get_or_insert_with(Instant::now);
            let entry = HttpEntry {
                request,
                referer,
                user_agent,
                status,
                bytes,
                body_bytes,
                took: at.saturating_duration_since(started),
            };
            log.http(at, peer, &entry);
        }
    });
}

/// Most rounds of messages begetting messages routed in one turn; the
/// rest waits for the next turn, so a ping-pong cannot starve the loop.
const MAX_ROUTE_ROUNDS: usize = 64;

/// How [`Server::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Every connection finished its drain.
    Clean,
    /// Shutdown was forced and `remaining` (at least one) connections were
    /// cut off.
    Forced {
        /// Why the drain was cut short.
        cause: ForceCause,
        /// How many connections were force-closed.
        remaining: usize,
    },
}

impl Outcome {
    /// The binary's exit code: 0 clean, 3 forced.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::Forced { .. } => 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining { started: Instant },
    Done(Outcome),
}

type Hook = Box<dyn FnMut(&ConnInfo) + Send>;
type StatsHook = Box<dyn FnMut(&Stats) + Send>;
type NoteHook = Box<dyn FnMut() + Send>;

/// A bound server, ready to [`run`](Server::run).
///
/// `S` is the byte stream each connection runs on (see
/// [`Accept`]): [`Stream`] does
/// whatever the config asks (TLS, say); the supervisor runs loops whose
/// config needs no stage on a bare `mio::net::TcpStream`, so a plain
/// deployment pays nothing per message for TLS being compiled in.
pub struct Server<P: Protocol, S: Accept = Stream, M: MakeProtocol<P> = Factory<P>> {
    poll: Poll,
    /// Listening sockets; emptied when the drain starts.
    listeners: Vec<Listener>,
    local_addr: SocketAddr,
    signals: Option<SignalSource>,
    waker: Arc<Waker>,
    request: Arc<AtomicU8>,
    conns: Slab<Conn<P, S>>,
    timers: Timers,
    /// Connections that yielded with work left: `(key, generation)`.
    ready: Vec<(usize, u64)>,
    /// The listener had more to accept when its batch ran out, or a slot freed.
    accept_pending: bool,
    /// Accepting stopped at `max_conns`.
    at_limit: bool,
    /// Our slots in the process-wide count of open connections (shared by
    /// a supervisor's loops): one per slab entry, taken just before the
    /// accept, given back when the connection leaves the slab or the loop
    /// is dropped (see [`crate::reactor::admission`]).
    slots: Held,
    scratch: Scratch,
    config: Config,
    make_protocol: M,
    on_close: Option<Hook>,
    on_stats: Option<StatsHook>,
    on_stopped_accepting: Option<NoteHook>,
    /// `Some(i)`: loop `i` of a supervised process, which owns signals and
    /// the process-wide log lines. `None`: standalone.
    worker: Option<usize>,
    phase: Phase,
    /// Draining began, but the connections are told only once every loop
    /// has stopped accepting (several loops; see [`Server::begin_drain`]).
    waiting_for_loops: bool,
    next_generation: u64,
    stats: Stats,
    /// Messaging: the process's hub, our loop's number in it, and the
    /// receiving end of our queue (see [`crate::mailbox`]).
    hub: Arc<Hub>,
    loop_id: usize,
    inbox: Option<Receiver<Outbox>>,
    /// Outboxes taken from connections this turn, not routed yet.
    outgoing: Vec<Outbox>,
    /// The list being routed (swapped with `outgoing`).
    routing: Vec<Outbox>,
    /// Emptied outboxes kept for their memory.
    spares: Vec<Outbox>,
    /// Per loop: the batch being gathered for it this turn.
    remote: Vec<Outbox>,
    /// A batch for another loop is gathered (or kept): `route` posts it.
    remote_pending: bool,
    /// Another loop's queue had no room for our batch (see
    /// [`Refused::Heavy`]): connections that send are held meanwhile.
    waiting_for_room: bool,
    /// The connections held for it, `(key, generation)`.
    held: Vec<(usize, u64)>,
    /// The receivers of the publication being delivered (reused).
    receivers: Receivers,
    /// Receivers that messages gave output this turn: flushed once each
    /// after the deliveries, `(key, generation)`.
    delivered: Vec<(usize, u64)>,
    /// `protocol.name()`, for access-log lines.
    protocol: &'static str,
    access_log: Option<LoopLog>,
    trace_events: Option<TraceEvents>,
    /// This loop's recording into `trace_events`, while it runs.
    trace: Option<LoopTrace>,
}

impl<P: Protocol> Server<P> {
    /// Bind the listener and set up the poller; nothing is accepted until
    /// [`run`](Server::run). `make_protocol` makes one protocol state per
    /// connection.
    pub fn bind(
        config: Config,
        make_protocol: impl FnMut() -> P + Send + 'static,
    ) -> Result<Self, Error> {
        let socket = listener::bind(config.listen, config.backlog)?;
        Self::with_listeners(config, vec![socket], make_protocol)
    }

    /// Serve on listening sockets made elsewhere (inherited from systemd or
    /// a previous process, or shared between loops); `config.listen` is
    /// ignored. Each must already be listening.
    pub(crate) fn with_listeners(
        config: Config,
        sockets: Vec<std::net::TcpListener>,
        make_protocol: impl FnMut() -> P + Send + 'static,
    ) -> Result<Self, Error> {
        Self::on_sockets(config, sockets, make_protocol)
    }
}

/// What a lone [`Server`] makes its protocols with: any closure that can
/// move to the thread the server runs on. (Loops a supervisor runs make
/// theirs on their own thread, so theirs need not be `Send`: see
/// [`LoopContext`](crate::reactor::loop_context::LoopContext).)
pub(crate) type Factory<P> = Box<dyn FnMut() -> P + Send>;

impl<P: Protocol, S: Accept> Server<P, S> {
    /// `with_listeners`, with connections on the
    /// byte stream `S` (see [`Server`]).
    pub fn on_sockets(
        config: Config,
        sockets: Vec<std::net::TcpListener>,
        make_protocol: impl FnMut() -> P + Send + 'static,
    ) -> Result<Self, Error> {
        Server::with_factory(config, sockets, Box::new(make_protocol) as Factory<P>)
    }
}

impl<P: Protocol, S: Accept, M: MakeProtocol<P>> Server<P, S, M> {
    /// [`on_sockets`](Server::on_sockets) with a factory of any type: a
    /// loop's own, built on its thread, which need not be `Send`.
    pub(crate) fn with_factory(
        config: Config,
        sockets: Vec<std::net::TcpListener>,
        make_protocol: M,
    ) -> Result<Self, Error> {
        let setup = |what| move |source| Error::Setup { what, source };
        let poll = Poll::new().map_err(setup("the poller"))?;
        let listeners = listener::register_all(poll.registry(), sockets)?;
        let local_addr = listeners
            .first()
            .map_or(config.listen, Listener::local_addr);
        let waker = Waker::new(poll.registry(), WAKER).map_err(setup("the waker"))?;
        let signals = SignalSource::for_loop(config.handle_signals, poll.registry())
            .map_err(setup("signal handlers"))?;
        let mut config = config;
        let held = crate::base::rlimit::fds_per_loop(listeners.len());
        config.max_conns = admission::effective_max_conns(config.max_conns, held, 1);
        let waker = Arc::new(waker);
        let hub = Hub::new(1);
        let inbox = hub.open_door(0, Arc::clone(&waker));
        let protocol = P::NAME;
        Ok(Self {
            poll,
            listeners,
            local_addr,
            signals,
            waker,
            request: Arc::new(AtomicU8::new(0)),
            conns: Slab::with_capacity(config.max_conns.min(1 << 16)),
            timers: Timers::new(),
            ready: Vec::new(),
            accept_pending: false,
            at_limit: false,
            slots: Held::new(Arc::new(ConnLimit::new(config.max_conns))),
            scratch: Scratch::new(),
            config,
            make_protocol,
            on_close: None,
            on_stats: None,
            on_stopped_accepting: None,
            worker: None,
            phase: Phase::Serving,
            waiting_for_loops: false,
            next_generation: 0,
            stats: Stats::default(),
            hub,
            loop_id: 0,
            inbox,
            outgoing: Vec::new(),
            routing: Vec::new(),
            spares: Vec::new(),
            remote: vec![Outbox::default()],
            remote_pending: false,
            waiting_for_room: false,
            held: Vec::new(),
            receivers: Receivers::default(),
            delivered: Vec::new(),
            protocol,
            access_log: None,
            trace_events: None,
            trace: None,
        })
    }

    /// Message through `hub` as its loop `loop_id` (the supervisor gives
    /// every loop of a process the same hub). Without this a server is
    /// loop 0 of a hub of its own.
    pub(crate) fn hub(mut self, hub: Arc<Hub>, loop_id: usize) -> Self {
        self.inbox = hub.open_door(loop_id, Arc::clone(&self.waker));
        self.remote = (0..hub.loops()).map(|_| Outbox::default()).collect();
        self.hub = hub;
        self.loop_id = loop_id;
        self
    }

    /// Run as loop `id` of a supervised process: the supervisor owns the
    /// signals and logs the process-wide lines (`listening on`, `recv quit
    /// signal`, `All done.`); this loop logs its own at debug.
    pub(crate) fn worker(mut self, id: usize) -> Self {
        self.worker = Some(id);
        self
    }

    /// Count connections against `limit`, shared with other loops, instead
    /// of a limit of this loop's own: `--max-conns` for the whole process.
    /// Call before [`run`](Self::run).
    pub fn shared_limit(mut self, limit: Arc<ConnLimit>) -> Self {
        self.config.max_conns = limit.max();
        self.slots = Held::new(limit);
        self
    }

    /// Set the hook called once the drain has closed this loop's listeners.
    pub(crate) fn on_stopped_accepting(mut self, hook: impl FnMut() + Send + 'static) -> Self {
        self.on_stopped_accepting = Some(Box::new(hook));
        self
    }

    /// Set the hook that receives this loop's counters when asked through
    /// [`ShutdownHandle::request_stats`].
    pub(crate) fn on_stats(mut self, hook: impl FnMut(&Stats) + Send + 'static) -> Self {
        self.on_stats = Some(Box::new(hook));
        self
    }

    /// Write an access-log line per HTTP request, or per finished
    /// connection of other protocols, to `log` (see [`crate::obs::access_log`]).
    pub fn access_log(mut self, log: &AccessLog) -> Self {
        self.access_log = Some(log.for_loop());
        self
    }

    /// Record this loop's timeline into `trace` (see [`crate::obs::trace_events`]).
    pub fn trace_events(mut self, trace: &TraceEvents) -> Self {
        self.trace_events = Some(trace.clone());
        self
    }

    /// Set the cleanup hook, run exactly once per connection however it ends
    /// (the Go handler's deferred cleanup).
    pub fn on_close(mut self, hook: impl FnMut(&ConnInfo) + Send + 'static) -> Self {
        self.on_close = Some(Box::new(hook));
        self
    }

    /// What the protocol calls itself (`echo`, `http`, …).
    pub(crate) fn protocol_name(&self) -> &'static str {
        self.protocol
    }

    /// How this loop's log lines name it: `loop 1` with several loops.
    fn tag(&self) -> LoopTag {
        LoopTag::of(self.loop_id, self.hub.loops())
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The configuration in force (`max_conns` possibly lowered to the fd limit).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A handle to stop the server from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::new(Arc::clone(&self.waker), Arc::clone(&self.request))
    }

    /// A one-line summary of what this server does, for the start-up log.
    pub fn describe(&self) -> String {
        self.config.describe(self.protocol)
    }

    /// Serve until shut down and drained. Logs `All done.` on the way out.
    pub fn run(mut self) -> Result<Outcome, Error> {
        match self.worker {
            None => {
                let what = self.describe();
                log::info!("listening on {} ({what})", self.local_addr);
            }
            Some(id) => log::debug!("loop {id} started on {}", self.local_addr),
        }
        if let Some(sink) = &self.trace_events {
            self.trace = Some(LoopTrace::start(sink, self.worker.unwrap_or(0)));
        }
        let start = Instant::now();
        if let Some(extras) = self.make_protocol.extras_ref() {
            for (i, timer) in extras.timers.iter().enumerate() {
                self.timers.schedule(start + timer.every, Wake::Every(i));
            }
        }
        let mut events = Events::with_capacity(1024);
        self.take_inbox(Instant::now()); // sent before we were up
        let outcome = loop {
            let before = Instant::now();
            let timeout = self.poll_timeout(before);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Poll(e));
            }
            let now = Instant::now();
            if log::log_enabled!(log::Level::Trace) {
                trace_poll(
                    self.tag(),
                    &events,
                    now.saturating_duration_since(before),
                    timeout,
                );
            }
            let mut polled = 0;
            for event in events.iter() {
                polled += 1;
                self.dispatch(event, now);
            }
            self.stats.polls += 1;
            self.stats.events += polled;
            self.revisit_ready(now);
            if self.accept_pending {
                self.accept_pending = false;
                self.accept(now, false);
            }
            self.fire_timers(now);
            self.route(now);
            if let Some(trace) = self.trace.as_mut() {
                trace.poll(before, now, polled as usize);
                trace.dispatch(now, polled as usize);
            }
            if let Some(log) = self.access_log.as_mut() {
                log.flush();
            }
            if let Some(outcome) = self.check_finished(now) {
                break outcome;
            }
        };
        if let Some(log) = self.access_log.as_mut() {
            log.flush();
        }
        if let Some(trace) = self.trace.take() {
            trace.end();
        }
        match self.worker {
            None => log::info!("All done."),
            Some(id) => log::debug!("loop {id} done: {outcome:?}"),
        }
        Ok(outcome)
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || self.accept_pending || !self.outgoing.is_empty() {
            return Some(Duration::ZERO);
        }
        self.timers
            .next_deadline()
            .map(|at| at.saturating_duration_since(now))
    }

    fn dispatch(&mut self, event: &Event, now: Instant) {
        match event.token() {
            SIGNALS => {
                log::trace!("{}signals event: a signal arrived", LoopName(self.tag()));
                self.on_signals(now)
            }
            WAKER => {
                log::trace!(
                    "{}waker event: a request from another thread",
                    LoopName(self.tag())
                );
                self.on_request(now)
            }
            token => match listener_index(token) {
                Some(i) => {
                    log::trace!("{}listener {i} event: readable", LoopName(self.tag()));
                    self.accept(now, true);
                }
                None => self.on_conn_event(token.0, event, now),
            },
        }
    }

    fn on_conn_event(&mut self, key: usize, event: &Event, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            // The connection closed earlier in this same batch of events.
            log::trace!(
                "{} event for a closed connection: ignored",
                ConnName::new(self.tag(), key)
            );
            return;
        };
        conn.on_event(Readiness::of(event));
        let progress = conn.drive(&mut cx!(self, now), &mut self.scratch);
        // The common case, done with the connection at hand: arm. (A
        // protocol that reports or sent messages takes the general path,
        // which collects them; for echo both are constant `false`.)
        if progress == Progress::Idle && !P::REPORTS.any() && !conn.has_sent() {
            if let Some(at) = conn.arm(&self.config.limits) {
                let generation = conn.generation();
                self.timers.schedule(at, Wake::Conn { key, generation });
            }
            return;
        }
        self.after_drive(key, progress, now);
        // What it published reaches this loop's subscribers before any of
        // them reads its next command (see `route_sent`).
        self.route_sent(now);
    }

    /// Connections that used up their fairness budget get another turn.
    fn revisit_ready(&mut self, now: Instant) {
        if self.ready.is_empty() {
            return;
        }
        let ready = std::mem::take(&mut self.ready);
        self.drive_each(ready, now);
    }

    /// Drive each `(key, generation)` of `list` whose connection is still
    /// open (not a later tenant of the same slot).
    fn drive_each(&mut self, list: Vec<(usize, u64)>, now: Instant) {
        for (key, generation) in list {
            let Some(conn) = self
                .conns
                .get_mut(key)
                .filter(|c| c.generation() == generation)
            else {
                continue;
            };
            let progress = conn.drive(&mut cx!(self, now), &mut self.scratch);
            self.after_drive(key, progress, now);
        }
    }

    fn after_drive(&mut self, key: usize, progress: Progress, now: Instant) {
        self.collect_sent(key);
        match progress {
            Progress::Idle => {
                self.collect_reports(key);
                self.arm(key);
            }
            Progress::Yield => {
                self.collect_reports(key);
                if let Some(conn) = self.conns.get(key) {
                    self.ready.push((key, conn.generation()));
                }
                self.arm(key);
            }
            Progress::Closed(reason) => self.close(key, reason, now),
        }
    }

    /// Take what the connection's protocol sent, to route after the turn.
    fn collect_sent(&mut self, key: usize) {
        // For a protocol without a mailbox `has_sent` is a constant `false`.
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.has_sent() {
            return;
        }
        let mut spare = self.spares.pop().unwrap_or_default();
        conn.take_sent(&mut spare);
        self.outgoing.push(spare);
        if self.waiting_for_room {
            // Another loop's queue is full: this sender reads nothing more
            // until it has room (backpressure instead of dropping).
            conn.hold();
            self.held.push((key, conn.generation()));
        }
    }

    /// Route the messages sent this turn: ours straight into their
    /// receivers, the others' as one batch per loop.
    #[inline]
    fn route(&mut self, now: Instant) {
        // The common turn (echo, a request answered) has nothing to route.
        if self.outgoing.is_empty() && self.delivered.is_empty() && !self.remote_pending {
            return;
        }
        self.route_all(now);
    }

    #[inline(never)]
    fn route_all(&mut self, now: Instant) {
        let mut rounds = 0;
        while !self.delivered.is_empty() || !self.outgoing.is_empty() {
            self.route_sent(now);
            self.flush_delivered(now); // may send more: another round
            rounds += 1;
            if rounds >= MAX_ROUTE_ROUNDS {
                break;
            }
        }
        let mut heavy = false;
        self.remote_pending = false;
        for id in 0..self.remote.len() {
            if self.remote[id].is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut self.remote[id]);
            match self.hub.post(self.loop_id, id, batch) {
                Ok(()) => {}
                // Kept, and posted again once that loop has caught up (it
                // wakes us); meanwhile whoever sends more is held.
                Err(Refused::Heavy(batch)) => {
                    self.remote[id] = *batch;
                    heavy = true;
                    self.remote_pending = true;
                }
                Err(Refused::Full(batch)) => {
                    log::warn!(
                        "loop {id}'s message queue is full: {} messages dropped",
                        batch.len()
                    );
                    self.stats.messages_dropped += batch.len() as u64;
                }
            }
        }
        if heavy != self.waiting_for_room {
            self.waiting_for_room = heavy;
            if heavy {
                log::debug!(
                    "{}another loop's message queue is full: holding the connections that send",
                    LoopName(self.tag())
                );
            } else {
                self.release_held();
            }
        }
    }

    /// Another loop has room for our messages again: read the connections
    /// held meanwhile (driven next turn, from the readiness they remember).
    fn release_held(&mut self) {
        for (key, generation) in std::mem::take(&mut self.held) {
            if let Some(conn) = self
                .conns
                .get_mut(key)
                .filter(|c| c.generation() == generation)
            {
                conn.release();
                self.ready.push((key, generation));
            }
        }
    }

    /// Route what connections have sent so far: messages for our own
    /// connections straight into their output (queued, flushed once per
    /// turn by [`Server::route`]); those for other loops into this turn's
    /// batch for each.
    ///
    /// Called right after a connection's input is answered, not only at
    /// the end of the turn, so that on one loop commands take effect in
    /// the order they arrive: a message published before a subscriber's
    /// next command is read is framed before that command's reply, as
    /// redis frames it.
    fn route_sent(&mut self, now: Instant) {
        if self.outgoing.is_empty() {
            return;
        }
        // Swap lists (both keep their memory): deliveries may send more.
        let mut outgoing = std::mem::take(&mut self.routing);
        std::mem::swap(&mut outgoing, &mut self.outgoing);
        for mut outbox in outgoing.drain(..) {
            let (local, remote) = outbox.split_remote(self.loop_id, &mut self.remote);
            self.remote_pending |= remote;
            if local {
                self.deliver(&outbox, now);
            }
            outbox.clear();
            self.spares.push(outbox);
        }
        self.routing = outgoing;
    }

    /// Batches other loops sent us.
    fn take_inbox(&mut self, now: Instant) {
        let Some(inbox) = self.inbox.take() else {
            return;
        };
        while let Ok(batch) = inbox.try_recv() {
            self.hub.received(self.loop_id, &batch);
            self.deliver(&batch, now);
        }
        self.inbox = Some(inbox);
        self.flush_delivered(now);
    }

    /// Hand the messages of `outbox` meant for this loop to their receivers.
    fn deliver(&mut self, outbox: &Outbox, now: Instant) {
        for (to, as_of, msg) in outbox.local(self.loop_id) {
            match to {
                To::Conn(to) => self.deliver_one(to, &msg, now),
                To::Members { .. } => self.deliver_to_members(&msg, as_of, now),
            }
        }
    }

    /// A publication for our members of its topic (and listeners of the
    /// patterns it matches), looked up now: who was a member when it was
    /// published (`as_of`) and still is gets it, in the directory's order.
    fn deliver_to_members(&mut self, msg: &Message<'_>, as_of: u64, now: Instant) {
        let Some(topic) = msg.topic else {
            return;
        };
        let mut receivers = std::mem::take(&mut self.receivers);
        self.hub
            .receivers(topic, self.loop_id, as_of, &mut receivers);
        for i in 0..receivers.len() {
            if let Some((to, pattern)) = receivers.get(i) {
                let msg = Message { pattern, ..*msg };
                self.deliver_one(to, &msg, now);
            }
        }
        self.receivers = receivers;
    }

    fn deliver_one(&mut self, to: ConnId, msg: &Message<'_>, now: Instant) {
        let Some(conn) = self
            .conns
            .get_mut(to.key)
            .filter(|c| c.generation() == to.generation)
        else {
            // Closed; its slot may hold a new connection: not for it.
            log::trace!("message from {} to {to} dropped: gone", msg.from);
            self.stats.messages_dropped += 1;
            return;
        };
        let was_owing = conn.owed() > 0;
        let progress = conn.deliver(&mut cx!(self, now), msg, &mut self.scratch);
        if progress == Progress::Idle {
            if conn.owed() >= self.config.limits.write_high_watermark {
                // A burst (many publishers this turn, or many batches from
                // other loops) has queued a full write's worth: write it
                // now, so a subscriber that keeps up never nears the
                // slow-consumer bound just because the turn's flush is late.
                let progress = conn.drive(&mut cx!(self, now), &mut self.scratch);
                self.after_drive(to.key, progress, now);
                return;
            }
            // Its first message this turn: flush it once all are delivered
            // (and collect what its protocol sent in answer, if anything).
            if (!was_owing && conn.wants_write()) || conn.has_sent() {
                self.delivered.push((to.key, to.generation));
            }
            return;
        }
        self.after_drive(to.key, progress, now);
    }

    /// Write what the turn's messages queued, once per receiver.
    fn flush_delivered(&mut self, now: Instant) {
        let delivered = std::mem::take(&mut self.delivered);
        self.drive_each(delivered, now);
    }

    /// Take what the connection's protocol finished (HTTP requests, RESP
    /// commands) into the counters and the access log. Echo reports nothing
    /// (`Protocol::REPORTS` is `Nothing`): this compiles to nothing for it.
    fn collect_reports(&mut self, key: usize) {
        if !P::REPORTS.any() {
            return;
        }
        if let Some(conn) = self.conns.get_mut(key) {
            take_reports(conn, &mut self.stats, &mut self.access_log);
        }
    }

    #[inline]
    fn arm(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if let Some(at) = conn.arm(&self.config.limits) {
                if log::log_enabled!(log::Level::Trace) {
                    trace_armed(conn.name(), conn.deadline_name(&self.config.limits), at);
                }
                let generation = conn.generation();
                self.timers.schedule(at, Wake::Conn { key, generation });
            }
        }
    }

    /// Accept from every listener until each is empty, paused, or the batch
    /// or the connection limit runs out.
    /// `arrived`: the listener's readiness said a client is queued (not a
    /// retry after a slot freed, which may find the queue empty).
    fn accept(&mut self, now: Instant, arrived: bool) {
        self.accept_up_to(self.config.accept_batch.max(1), now, arrived);
    }

    /// Accept at most `batch` connections now (see [`Server::accept`]).
    fn accept_up_to(&mut self, batch: usize, now: Instant, arrived: bool) {
        if self.phase != Phase::Serving {
            return;
        }
        let mut accepted = 0;
        let mut i = 0;
        while i < self.listeners.len() {
            if accepted >= batch {
                self.accept_pending = true;
                return;
            }
            let Some(slot) = self.reserve_slot() else {
                self.at_limit = true;
                // Filling the last slot is not news; a client left waiting
                // is. A retry after a slot freed (another loop may have
                // taken it) proves no client waits: only an arrival does.
                if accepted == 0 && arrived && self.slots.limit().start_warning() {
                    log::warn!(
                        "connection limit {} reached: new connections wait in the backlog",
                        self.config.max_conns
                    );
                }
                return;
            };
            // A slot is ours: it goes to the connection, or (dropped) back at once.
            match self.listeners[i].accept(now, &mut self.stats) {
                Accepted::Conn(stream, peer) => {
                    accepted += 1;
                    self.open(stream, peer, slot, now);
                }
                Accepted::Empty => i += 1,
                Accepted::PausedUntil(until) => {
                    self.timers.schedule(until, Wake::AcceptResume);
                    i += 1;
                }
                Accepted::Closed => {
                    // Shut down under us (the supervisor stopping the
                    // process): nothing more will come from it.
                    let mut gone = self.listeners.remove(i);
                    let _ = self.poll.registry().deregister(gone.socket_mut());
                }
            }
        }
    }

    /// Take a process-wide connection slot; if there is none, park this
    /// loop to be woken when one frees, and look once more (see
    /// [`crate::reactor::admission`] for why the second look is needed).
    fn reserve_slot(&mut self) -> Option<Slot> {
        self.slots.limit().take_or_park(self.shutdown_handle())
    }

    /// A slot may be free again (ours closed one, or another loop woke us):
    /// accept what waits in the backlog, on purpose, as it raises no new edge.
    fn resume_accepting(&mut self) {
        if self.at_limit && self.phase == Phase::Serving {
            self.at_limit = false;
            if self.slots.limit().end_warning() {
                log::info!("below the connection limit again: accepting");
            }
            self.accept_pending = true;
        }
    }

    /// Set up an accepted connection with the `slot` reserved for it; the
    /// slot goes back (dropped) on every path that does not keep it.
    fn open(
        &mut self,
        mut stream: mio::net::TcpStream,
        peer: SocketAddr,
        slot: Slot,
        now: Instant,
    ) {
        let proxy = self.config.stages.proxy;
        if !self.config.stages.trusts(peer.ip()) {
            // A PROXY header lets its sender claim any client address.
            log::debug!(
                "conn from {peer}: not in --proxy-from, may not send PROXY headers; closed"
            );
            self.stats.accepted += 1;
            self.stats.open += 1;
            self.stats.record_close(
                CloseReason::Stage(StageFailure::Proxy(ProxyFailure::Untrusted)),
                0,
                0,
            );
            return;
        }
        // Replies go out at once; the protocol already batches per read.
        let _ = stream.set_nodelay(true);
        let tag = self.tag();
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            log::warn!("conn from {peer}: cannot register: {e}; closing it");
            return;
        }
        let stream = match S::accept(stream, ConnName::new(tag, key), &self.config.stages, now) {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("conn from {peer}: cannot start its stages: {e}; closing it");
                return;
            }
        };
        self.slots.keep(slot);
        self.next_generation += 1;
        let proto = self.make_protocol.make();
        let name = ConnName::new(tag, key);
        let conn = entry.insert(Conn::new(
            stream,
            peer,
            name,
            self.next_generation,
            proto,
            now,
            proxy,
        ));
        let me = ConnId {
            loop_id: self.loop_id,
            key,
            generation: self.next_generation,
        };
        conn.attach(me, &self.hub, &mut cx!(self, now), &mut self.scratch);
        self.collect_sent(key);
        self.stats.accepted += 1;
        self.stats.open += 1;
        log::debug!("{} accepted from {peer}", ConnName::new(self.tag(), key));
        if let Some(trace) = self.trace.as_mut() {
            trace.conn_begin(self.next_generation, key, peer, "Open", now);
        }
        self.arm(key);
    }

    /// The one place a connection leaves: close the socket, count, log, run
    /// the cleanup hook.
    fn close(&mut self, key: usize, reason: CloseReason, now: Instant) {
        self.collect_sent(key); // its last words still go out
        self.collect_reports(key);
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        self.timers.cancel(key); // timer memory follows live connections
        let (bytes_in, bytes_out) = conn.bytes();
        let id = ConnId {
            loop_id: self.loop_id,
            key,
            generation: conn.generation(),
        };
        let lifetime = now.saturating_duration_since(conn.opened());
        let info = ConnInfo::new(id, conn.peer(), reason, (bytes_in, bytes_out), lifetime);
        log::trace!(
            "{} {} => closed",
            ConnName::new(self.tag(), key),
            conn.state()
        );
        if let Some(trace) = self.trace.as_mut() {
            let state = conn.state().name();
            trace.conn_end(conn.generation(), state, now, Some(&reason));
        }
        conn.end(reason); // if it ended here, not in an orderly way
        conn.protocol_mut().on_closed(&info);
        if P::REPORTS.any() {
            // A response the close cut short is reported by `on_closed`.
            take_reports(&mut conn, &mut self.stats, &mut self.access_log);
        }
        let mut spare = self.spares.pop().unwrap_or_default();
        if conn.take_sent(&mut spare) {
            self.outgoing.push(spare); // its farewells
        } else {
            self.spares.push(spare);
        }
        if conn.stream_mut().handshaking() {
            self.stats.tls_handshake_failures += 1;
        }
        drop(conn); // closes the socket (which also removes it from epoll); leaves its groups
        drop(self.slots.take()); // and then its slot: the descriptor is already free
        log::trace!(
            "{} socket closed and removed from the poller; slot {key} is free",
            ConnName::new(self.tag(), key)
        );
        log::debug!(
            "{} {} closed: {reason} (in {bytes_in} B, out {bytes_out} B, {})",
            ConnName::new(self.tag(), key),
            info.peer,
            Dur(info.lifetime)
        );
        self.stats.record_close(reason, bytes_in, bytes_out);
        if let Some(log) = self
            .access_log
            .as_mut()
            .filter(|_| P::REPORTS != Reports::Requests)
        {
            let entry = ConnEntry {
                upstream: None,
                protocol: self.protocol,
                lifetime: info.lifetime,
                bytes_in,
                bytes_out,
                reason,
            };
            log.conn(now, info.peer, &entry);
        }
        if let Some(hook) = self.on_close.as_mut() {
            hook(&info);
        }
        log::debug!(
            "{} {} handler done.",
            ConnName::new(self.tag(), key),
            info.peer
        );
        self.resume_accepting();
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, wake)) = self.timers.pop_due(now) {
            match wake {
                Wake::Conn { key, generation } => match self.conns.get_mut(key) {
                    Some(conn) if conn.generation() == generation => {
                        log::trace!(
                            "{} timer fired ({} late)",
                            conn.name(),
                            Dur(now.saturating_duration_since(at))
                        );
                        let progress = conn.on_timer(at, &mut cx!(self, now), &mut self.scratch);
                        self.after_drive(key, progress, now);
                    }
                    // Cancelled at close, so not expected; harmless anyway.
                    _ => log::trace!(
                        "{} stale timer (generation {generation}): ignored",
                        ConnName::new(self.tag(), key)
                    ),
                },
                Wake::DrainDeadline => {
                    log::trace!("{}drain deadline timer fired", LoopName(self.tag()));
                    if matches!(self.phase, Phase::Draining { .. }) {
                        self.force(ForceCause::DrainDeadline, now);
                    }
                }
                Wake::Every(i) => {
                    let extras = self.make_protocol.extras();
                    if let Some(timer) = extras.and_then(|e| e.timers.get_mut(i)) {
                        (timer.tick)(now);
                        self.timers.schedule(now + timer.every, Wake::Every(i));
                    }
                }
                Wake::AcceptResume => {
                    log::trace!(
                        "{}accept back-off timer fired: accepting again",
                        LoopName(self.tag())
                    );
                    for listener in &mut self.listeners {
                        listener.resume_if_due(now);
                    }
                    self.accept_pending = true;
                }
            }
        }
    }

    fn on_signals(&mut self, now: Instant) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        // Collect first: handling a signal needs `&mut self`.
        let received: Vec<Request> = signals.pending().collect();
        for request in received {
            self.control(request, now);
        }
    }

    /// Do what a signal (or a handle) asks (see [`Control`]).
    fn control(&mut self, request: Request, now: Instant) {
        let Request { control, from } = request;
        match control {
            Control::Quit => self.quit(from, now),
            Control::Force => self.force(ForceCause::SecondSignal, now),
            Control::Stats => self.log_stats(),
            Control::Reload => {
                let reopen = self.access_log.as_ref().map(|log| move || log.reopen());
                control::reload(&self.config, reopen, from);
            }
            Control::Upgrade => {
                log::warn!(
                    "{from}: upgrades are run by a supervisor (the tcp-reactor binary's); ignored"
                )
            }
        }
    }

    fn on_request(&mut self, now: Instant) {
        // Messages first: a drain must not overtake what was sent before it.
        self.take_inbox(now);
        let request = self.request.swap(0, Ordering::SeqCst);
        if request & REQUEST_STATS != 0 {
            let stats = self.live_stats();
            if let Some(hook) = self.on_stats.as_mut() {
                hook(&stats);
            }
        }
        if request & REQUEST_ACCEPT != 0 {
            self.resume_accepting();
        }
        if request & REQUEST_DRAIN_CONNS != 0 && std::mem::take(&mut self.waiting_for_loops) {
            log::debug!("every loop stopped accepting: draining connections");
            self.drain_connections(now);
        }
        if request & REQUEST_RELOAD != 0 {
            self.control(
                Request {
                    control: Control::Reload,
                    from: "reload requested",
                },
                now,
            );
        }
        if request & REQUEST_FORCE != 0 {
            self.force(ForceCause::SecondSignal, now);
        } else if request & REQUEST_SHUTDOWN != 0 {
            self.quit("shutdown requested", now);
        }
    }

    /// The counters, with the bytes of connections still open added in.
    pub(crate) fn live_stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.at_limit = u64::from(self.at_limit);
        stats.access_log_dropped = self.access_log.as_ref().map_or(0, LoopLog::dropped);
        stats.user = self
            .make_protocol
            .extras_ref()
            .map(|e| e.counts())
            .unwrap_or_default();
        for (_, conn) in self.conns.iter() {
            let (bytes_in, bytes_out) = conn.bytes();
            stats.bytes_in += bytes_in;
            stats.bytes_out += bytes_out;
        }
        stats
    }

    fn log_stats(&self) {
        log::info!("stats: {}", self.live_stats());
    }

    /// A quit signal: start the drain, or force it if one is under way.
    fn quit(&mut self, cause: &str, now: Instant) {
        match self.phase {
            Phase::Serving => self.begin_drain(cause, now),
            Phase::Draining { .. } => {
                log::warn!("recv quit signal again ({cause}) while draining");
                self.force(ForceCause::SecondSignal, now);
            }
            Phase::Done(_) => {}
        }
    }

    fn begin_drain(&mut self, cause: &str, now: Instant) {
        // Messages sent this turn reach their receivers before they drain.
        self.route(now);
        // Take what is already queued before letting go: when the last
        // descriptor of a listening socket closes, the kernel resets every
        // connection still waiting in its queue — connects the client (or
        // its load balancer) believes complete. Taken now, they are drained
        // like the rest (a silent one gets its grace to speak).
        self.accept_up_to(usize::MAX, now, false);
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(listener.socket_mut());
        } // dropped: our descriptor is closed; if it was the last, connects are refused
        if let Some(hook) = self.on_stopped_accepting.as_mut() {
            hook();
        }
        self.accept_pending = false;
        self.phase = Phase::Draining { started: now };
        if let Some(trace) = self.trace.as_mut() {
            trace.instant("drain begins", now);
        }
        if let Some(timeout) = self.config.drain_timeout {
            self.timers.schedule(now + timeout, Wake::DrainDeadline);
        }
        let deadline = crate::reactor::config::describe_timeout(self.config.drain_timeout);
        match self.worker {
            None => log::info!(
                "recv quit signal ({cause}): stopped accepting on {}, draining {} (deadline {deadline})",
                self.local_addr,
                Count(self.conns.len() as u64, "connection"),
            ),
            // `loop N: ` only when there are several (see `human::LoopName`).
            Some(_) => log::info!(
                "{}draining {} (deadline {deadline})",
 LoopName(self.tag()),
                Count(self.conns.len() as u64, "connection"),
            ),
        }
        if self.hub.loops() > 1 {
            // Another loop may have answered a PUBLISH whose messages to our
            // connections it routes at the end of its turn: if they drained
            // now, those would arrive after their FIN. The supervisor says
            // when every loop has stopped accepting (each routes what it
            // sent first); until then ours are served as usual.
            self.waiting_for_loops = true;
            return;
        }
        self.drain_connections(now);
    }

    /// Tell every connection the drain began (see [`Conn::begin_drain`]).
    fn drain_connections(&mut self, now: Instant) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                let progress = conn.begin_drain(&mut cx!(self, now), &mut self.scratch);
                self.after_drive(key, progress, now);
            }
        }
    }

    /// Cut off every connection still open. Only a connection actually cut
    /// off makes the outcome `Forced` (exit 3): with none left, it is clean.
    fn force(&mut self, cause: ForceCause, now: Instant) {
        let remaining = self.conns.len();
        if remaining == 0 {
            log::debug!(
                "{}: no connection left to cut off",
                CloseReason::Forced(cause)
            );
            self.listeners.clear();
            self.phase = Phase::Done(Outcome::Clean);
            return;
        }
        log::warn!(
            "{}: force-closing {}",
            CloseReason::Forced(cause),
            Count(remaining as u64, "connection")
        );
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, CloseReason::Forced(cause), now);
        }
        self.listeners.clear();
        self.phase = Phase::Done(Outcome::Forced { cause, remaining });
    }

    fn check_finished(&mut self, now: Instant) -> Option<Outcome> {
        match self.phase {
            Phase::Draining { started } if self.conns.is_empty() => {
                log::info!(
                    "{}drained in {}: {}",
                    LoopName(self.tag()),
                    Dur(now.saturating_duration_since(started)),
                    self.live_stats()
                );
                self.phase = Phase::Done(Outcome::Clean);
                if let Some(trace) = self.trace.as_mut() {
                    trace.instant("drained", now);
                }
                Some(Outcome::Clean)
            }
            Phase::Done(outcome) => Some(outcome),
            _ => None,
        }
    }
}
