//! The forwarding loop: one `mio::Poll` on one thread, whose connections
//! are pairs (`forward::pair`) — the accept goroutine and, per client, the Go model's
//! `io.Copy` pair.
//!
//! | token | source |
//! |---|---|
//! | `Token(2k)` | the client socket of the pair in slab slot `k` |
//! | `Token(2k + 1)` | its upstream socket |
//! | the listener, signal and waker tokens | as in [`crate::reactor`] |
//!
//! It shares the server loop's parts — the listener (accept until
//! `WouldBlock`, back off on `EMFILE`), the process-wide `--max-conns`
//! slots, the timer heap, the control requests and the counters — and
//! keeps the same drain: stop accepting at once, let live pairs end until
//! the drain deadline, then cut what is left (exit code 3).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::base::close::{CloseReason, ForceCause, ProxyFailure, StageFailure};
use crate::base::counters::Stats;
use crate::base::error::Error;
use crate::base::human::{ConnName, Count, Dur, LoopName, LoopTag};
use crate::io::proxy::preamble::Preamble;
use crate::io::stack::{Accept, Stream};
use crate::io::transport::Transport;
use crate::obs::access_log::{AccessLog, ConnEntry, LoopLog};
use crate::reactor::admission::{self, ConnLimit, Held, Slot};
use crate::reactor::config::Config;
use crate::reactor::control::{
    self, Control, Request, ShutdownHandle, REQUEST_ACCEPT, REQUEST_FORCE, REQUEST_RELOAD,
    REQUEST_SHUTDOWN, REQUEST_STATS,
};
use crate::reactor::listener::{self, Accepted, Listener};
use crate::reactor::server::Outcome;
use crate::reactor::signals::SignalSource;
use crate::reactor::timer::{Timers, Wake};
use crate::reactor::tokens::{listener_index, SIGNALS, WAKER};

use super::flow::Tools;
use super::health::{connect_result, Checks};
use super::pair::{Deadline, How, Pair, PairState, Step, Timeouts};
use super::pipe::PipePool;
use super::upstreams::{ConnectFailure, Upstreams};
use super::Forward;

/// The protocol name a forwarding loop reports (logs, `/metrics`).
pub const NAME: &str = "forward";

/// The loop timer of the health checks (`Wake::Every`'s number).
const HEALTH: usize = 0;

/// Size of the loop's copy buffer (one read's worth).
const SCRATCH: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining { started: Instant },
    Done(Outcome),
}

type StatsHook = Box<dyn FnMut(&Stats) + Send>;
type NoteHook = Box<dyn FnMut() + Send>;

/// A bound forwarding loop, ready to [`run`](Forwarder::run).
pub struct Forwarder {
    poll: Poll,
    listeners: Vec<Listener>,
    local_addr: SocketAddr,
    signals: Option<SignalSource>,
    waker: Arc<Waker>,
    request: Arc<AtomicU8>,
    pairs: Slab<Pair>,
    timers: Timers,
    ready: Vec<(usize, u64)>,
    accept_pending: bool,
    at_limit: bool,
    slots: Held,
    config: Config,
    forward: Forward,
    upstreams: Upstreams,
    /// How every pair is set up (splice, PROXY headers in and out).
    how: How,
    /// The `--upstream-file` list generation this loop has taken.
    file_generation: u64,
    /// Active health checks in flight (`--health-interval`).
    checks: Checks,
    timeouts: Timeouts,
    scratch: Vec<u8>,
    pipes: PipePool,
    on_stats: Option<StatsHook>,
    on_stopped_accepting: Option<NoteHook>,
    worker: Option<usize>,
    loops: usize,
    phase: Phase,
    next_generation: u64,
    stats: Stats,
    access_log: Option<LoopLog>,
}

impl Forwarder {
    /// A loop forwarding what it accepts on `sockets` as `forward` says.
    pub fn new(
        config: Config,
        forward: Forward,
        sockets: Vec<std::net::TcpListener>,
    ) -> Result<Self, Error> {
        let setup = |what| move |source| Error::Setup { what, source };
        let poll = Poll::new().map_err(setup("the poller"))?;
        let listeners = listener::register_all(poll.registry(), sockets)?;
        let local_addr = listeners
            .first()
            .map_or(config.listen, Listener::local_addr);
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(setup("the waker"))?);
        let signals = SignalSource::for_loop(config.handle_signals, poll.registry())
            .map_err(setup("signal handlers"))?;
        let mut config = config;
        // A pair holds two descriptors (splicing, a pipe's two more for a
        // while: a pipe that cannot be made falls back to copying).
        let held = crate::base::rlimit::fds_per_loop(listeners.len());
        config.max_conns = admission::effective_max_conns(config.max_conns, held, 2);
        let upstreams = Upstreams::new(&forward.upstreams, forward.balance, forward.down_time);
        let how = How {
            splice: forward.splice,
            preamble: Preamble::new(config.stages.proxy),
            announce: forward.send_proxy,
        };
        let timeouts = Timeouts {
            connect: forward.connect_timeout,
            header: config.limits.proxy_timeout,
            idle: config.limits.idle_timeout,
        };
        Ok(Self {
            poll,
            listeners,
            local_addr,
            signals,
            waker,
            request: Arc::new(AtomicU8::new(0)),
            pairs: Slab::new(),
            timers: Timers::new(),
            ready: Vec::new(),
            accept_pending: false,
            at_limit: false,
            slots: Held::new(Arc::new(ConnLimit::new(config.max_conns))),
            config,
            forward,
            upstreams,
            how,
            file_generation: 0,
            checks: Checks::default(),
            timeouts,
            scratch: vec![0; SCRATCH],
            pipes: PipePool::default(),
            on_stats: None,
            on_stopped_accepting: None,
            worker: None,
            loops: 1,
            phase: Phase::Serving,
            next_generation: 0,
            stats: Stats::default(),
            access_log: None,
        })
    }

    /// Run as loop `id` of `loops` in a supervised process (the supervisor
    /// logs the process-wide lines).
    pub(crate) fn worker(mut self, id: usize, loops: usize) -> Self {
        self.worker = Some(id);
        self.loops = loops;
        self
    }

    /// Count pairs against `limit`, shared with other loops.
    pub fn shared_limit(mut self, limit: Arc<ConnLimit>) -> Self {
        self.config.max_conns = limit.max();
        self.slots = Held::new(limit);
        self
    }

    pub(crate) fn on_stopped_accepting(mut self, hook: impl FnMut() + Send + 'static) -> Self {
        self.on_stopped_accepting = Some(Box::new(hook));
        self
    }

    pub(crate) fn on_stats(mut self, hook: impl FnMut(&Stats) + Send + 'static) -> Self {
        self.on_stats = Some(Box::new(hook));
        self
    }

    /// Write an access-log line per finished pair to `log`.
    pub fn access_log(mut self, log: &AccessLog) -> Self {
        self.access_log = Some(log.for_loop());
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to stop the loop from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::new(Arc::clone(&self.waker), Arc::clone(&self.request))
    }

    /// What the start-up line says: `forward to 127.0.0.1:6379 (least-conn)`.
    pub fn describe(&self) -> String {
        self.forward.describe()
    }

    fn tag(&self) -> LoopTag {
        LoopTag::of(self.worker.unwrap_or(0), self.loops)
    }

    /// Forward until shut down and drained.
    pub fn run(mut self) -> Result<Outcome, Error> {
        match self.worker {
            None => log::info!("listening on {} ({})", self.local_addr, self.describe()),
            Some(id) => log::debug!("loop {id} started on {}", self.local_addr),
        }
        if let Some(every) = self.forward.health_interval {
            self.timers
                .schedule(Instant::now() + every, Wake::Every(HEALTH));
        }
        let mut events = Events::with_capacity(1024);
        let outcome = loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Poll(e));
            }
            let now = Instant::now();
            let mut polled = 0;
            for event in events.iter() {
                polled += 1;
                self.dispatch(event, now);
            }
            self.stats.polls += 1;
            self.stats.events += polled;
            if !self.ready.is_empty() {
                for (key, generation) in std::mem::take(&mut self.ready) {
                    if self
                        .pairs
                        .get(key)
                        .is_some_and(|p| p.generation == generation)
                    {
                        self.drive(key, now);
                    }
                }
            }
            if self.accept_pending {
                self.accept_pending = false;
                self.accept(now, false);
            }
            self.fire_timers(now);
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
        match self.worker {
            None => log::info!("All done."),
            Some(id) => log::debug!("loop {id} done: {outcome:?}"),
        }
        Ok(outcome)
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || self.accept_pending {
            return Some(Duration::ZERO);
        }
        self.timers
            .next_deadline()
            .map(|at| at.saturating_duration_since(now))
    }

    fn dispatch(&mut self, event: &Event, now: Instant) {
        match event.token() {
            SIGNALS => self.on_signals(now),
            WAKER => self.on_request(now),
            token => match (listener_index(token), Checks::upstream_of(token)) {
                (Some(_), _) => self.accept(now, true),
                (None, Some(i)) => self.checks.on_event(i, &mut self.upstreams, now),
                (None, None) => self.on_pair_event(token.0 / 2, token.0 % 2 == 1, event, now),
            },
        }
    }

    fn on_pair_event(&mut self, key: usize, upstream: bool, event: &Event, now: Instant) {
        let Some(pair) = self.pairs.get_mut(key) else {
            log::trace!(
                "{} event for a closed pair: ignored",
                ConnName::new(self.tag(), key)
            );
            return;
        };
        if upstream {
            pair.upstream.on_event(event);
            if pair.state() == PairState::Connecting {
                self.on_connect_event(key, now);
                return;
            }
        } else {
            pair.client.on_event(event);
        }
        self.drive(key, now);
    }

    /// An event on a connecting upstream socket: connected, failed, or
    /// (spurious) still under way.
    fn on_connect_event(&mut self, key: usize, now: Instant) {
        let Some(pair) = self.pairs.get_mut(key) else {
            return;
        };
        let result = connect_result(&pair.upstream.sock);
        match result {
            Ok(false) => log::trace!("{} connect still under way", pair.name),
            Ok(true) => {
                let target = pair.target;
                log::debug!(
                    "{} connected to upstream {} in {}",
                    pair.name,
                    self.upstreams.list()[target].addr,
                    Dur(now.saturating_duration_since(pair.opened))
                );
                let _ = pair.upstream.sock.set_nodelay(true);
                let took = now.saturating_duration_since(pair.connect_started());
                pair.connected(now);
                self.stats.upstream_connects += 1;
                self.upstreams.record_connect(target, took);
                if self.upstreams.connected(target) {
                    log::info!(
                        "upstream {} is up again",
                        self.upstreams.list()[target].addr
                    );
                }
                self.drive(key, now);
            }
            Err(e) => self.connect_failed(key, ConnectFailure::of(&e), &e.to_string(), now),
        }
    }

    /// A connect failed (or timed out): mark the upstream down, retry the
    /// pair on another, or close the client when none is left.
    fn connect_failed(&mut self, key: usize, why: ConnectFailure, detail: &str, now: Instant) {
        let Some(pair) = self.pairs.get_mut(key) else {
            return;
        };
        let target = pair.target;
        let addr = self.upstreams.list()[target].addr;
        match why {
            ConnectFailure::Refused => self.stats.upstream_refused += 1,
            ConnectFailure::TimedOut => self.stats.upstream_timed_out += 1,
            _ => self.stats.upstream_failed += 1,
        }
        self.upstreams.closed(target);
        self.upstreams.record_failure(target, why);
        pair.holds_upstream = false;
        if self.upstreams.failed(target, now) {
            log::warn!(
                "upstream {addr}: connect {why} ({detail}): marked down for {}",
                Dur(self.forward.down_time)
            );
        } else {
            log::debug!("{} upstream {addr}: connect {why} ({detail})", pair.name);
        }
        let (tried, attempts, name) = (pair.tried, pair.attempts, pair.name);
        match self.start_connect(key, tried, attempts, now) {
            Some((sock, next, attempts)) => {
                let pair = &mut self.pairs[key];
                log::debug!(
                    "{name} retrying on upstream {}",
                    self.upstreams.list()[next].addr
                );
                pair.retry(sock, next, attempts, now);
                self.arm(key);
            }
            None => {
                log::debug!(
                    "{name} no upstream left after {attempts_word}: closing the client",
                    attempts_word = Count(attempts as u64, "attempt")
                );
                if let Some(pair) = self.pairs.get(key) {
                    pair.reset_both();
                }
                self.close(key, CloseReason::NoUpstream, now);
            }
        }
    }

    /// If the supervisor re-read `--upstream-file`, merge the new list
    /// (one atomic load when it did not).
    fn take_new_upstreams(&mut self) {
        let Some(file) = &self.forward.file else {
            return;
        };
        let generation = file.generation();
        if generation == self.file_generation {
            return;
        }
        self.file_generation = generation;
        let (added, retired) = self.upstreams.replace(&file.list());
        log::debug!(
            "{}upstreams: {added} added, {retired} retired (their live connections go on)",
            LoopName(self.tag())
        );
    }

    /// Start a connect for pair `key` on the upstream the balancer picks
    /// among those not in `tried`, within `--retries` (`attempts` made so
    /// far); one that cannot even start (no local port, say) counts as a
    /// failed attempt and the next is tried. Returns the socket, its
    /// upstream and the attempts made, or `None` when none is left.
    fn start_connect(
        &mut self,
        key: usize,
        mut tried: u64,
        mut attempts: usize,
        now: Instant,
    ) -> Option<(TcpStream, usize, usize)> {
        while attempts <= self.forward.retries {
            let next = self.upstreams.pick(now, tried)?;
            attempts += 1;
            tried |= if next < 64 { 1 << next } else { 0 };
            let addr = self.upstreams.list()[next].addr;
            match self.connect(key, addr) {
                Ok(sock) => {
                    self.upstreams.opened(next);
                    return Some((sock, next, attempts));
                }
                Err(e) if is_local(&e) => {
                    // Our shortage (descriptors, ports, memory), not the
                    // upstream's: marking it down would blame it.
                    self.stats.upstream_failed += 1;
                    self.upstreams.record_failure(next, ConnectFailure::Other);
                    log::warn!("cannot connect to upstream {addr}: {e}: closing the client");
                    return None;
                }
                Err(e) => {
                    self.stats.upstream_failed += 1;
                    self.upstreams.record_failure(next, ConnectFailure::of(&e));
                    if self.upstreams.failed(next, now) {
                        log::warn!(
                            "upstream {addr}: connect failed to start ({e}): marked down for {}",
                            Dur(self.forward.down_time)
                        );
                    }
                }
            }
        }
        None
    }

    /// Start a non-blocking connect for pair `key`, registered under its
    /// upstream token.
    fn connect(&mut self, key: usize, addr: SocketAddr) -> io::Result<TcpStream> {
        let mut sock = TcpStream::connect(addr)?;
        self.poll.registry().register(
            &mut sock,
            Token(2 * key + 1),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        log::trace!(
            "{} connecting to upstream {addr}",
            ConnName::new(self.tag(), key)
        );
        Ok(sock)
    }

    fn drive(&mut self, key: usize, now: Instant) {
        let Some(pair) = self.pairs.get_mut(key) else {
            return;
        };
        let mut tools = Tools {
            scratch: &mut self.scratch,
            pipes: &mut self.pipes,
            spliced: &mut self.stats.spliced_bytes,
        };
        let step = pair.drive(&mut tools, now);
        pair.client.sock.take_counts(&mut self.stats);
        match step {
            Step::Idle => self.arm(key),
            Step::Yield => {
                self.ready.push((key, pair.generation));
                self.arm(key);
            }
            Step::Closed(reason) => self.close(key, reason, now),
        }
    }

    /// Give the pair's timer the deadline it needs, if earlier than the one
    /// it has (a later one waits for the armed one to fire).
    fn arm(&mut self, key: usize) {
        let Some(pair) = self.pairs.get_mut(key) else {
            return;
        };
        let Some((at, _)) = pair.deadline(&self.timeouts) else {
            return;
        };
        if pair.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        pair.armed = Some(at);
        let generation = pair.generation;
        self.timers.schedule(at, Wake::Conn { key, generation });
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((_, wake)) = self.timers.pop_due(now) {
            match wake {
                Wake::Conn { key, generation } => {
                    let Some(pair) = self
                        .pairs
                        .get_mut(key)
                        .filter(|p| p.generation == generation)
                    else {
                        continue;
                    };
                    pair.armed = None;
                    match pair.deadline(&self.timeouts) {
                        Some((at, _)) if at > now => self.arm(key),
                        None => {}
                        Some((_, Deadline::Connect)) => {
                            let detail =
                                format!("no answer in {}", Dur(self.forward.connect_timeout));
                            self.connect_failed(key, ConnectFailure::TimedOut, &detail, now)
                        }
                        Some((_, Deadline::Header)) => {
                            log::debug!("{} no complete PROXY header in time", pair.name);
                            let why = StageFailure::Proxy(ProxyFailure::TimedOut);
                            self.close(key, CloseReason::Stage(why), now)
                        }
                        Some((_, Deadline::Stage(why))) => {
                            log::debug!("{} {why}", pair.name);
                            self.close(key, CloseReason::Stage(why), now)
                        }
                        Some((_, Deadline::Idle)) => {
                            log::debug!("{} idle timeout", pair.name);
                            self.close(key, CloseReason::IdleTimeout, now)
                        }
                    }
                }
                Wake::DrainDeadline => {
                    if matches!(self.phase, Phase::Draining { .. }) {
                        self.force(ForceCause::DrainDeadline, now);
                    }
                }
                Wake::AcceptResume => {
                    for listener in &mut self.listeners {
                        listener.resume_if_due(now);
                    }
                    self.accept_pending = true;
                }
                Wake::Every(HEALTH) => {
                    if let Some(every) = self.forward.health_interval {
                        self.take_new_upstreams();
                        self.checks
                            .round(self.poll.registry(), &mut self.upstreams, now);
                        self.timers.schedule(now + every, Wake::Every(HEALTH));
                    }
                }
                Wake::Every(_) => {}
            }
        }
    }

    fn accept(&mut self, now: Instant, arrived: bool) {
        self.accept_up_to(self.config.accept_batch.max(1), now, arrived);
    }

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
            let Some(slot) = self.slots.limit().take_or_park(self.shutdown_handle()) else {
                self.at_limit = true;
                if accepted == 0 && arrived && self.slots.limit().start_warning() {
                    log::warn!(
                        "connection limit {} reached: new connections wait in the backlog",
                        self.config.max_conns
                    );
                }
                return;
            };
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
                    let mut gone = self.listeners.remove(i);
                    let _ = self.poll.registry().deregister(gone.socket_mut());
                }
            }
        }
    }

    /// A client arrived: choose its upstream and start the connect.
    fn open(&mut self, mut client: TcpStream, peer: SocketAddr, slot: Slot, now: Instant) {
        self.stats.accepted += 1;
        self.stats.open += 1;
        if !self.config.stages.trusts(peer.ip()) {
            // A PROXY header lets its sender claim any client address.
            log::debug!(
                "conn from {peer}: not in --proxy-from, may not send PROXY headers; closed"
            );
            let why = StageFailure::Proxy(ProxyFailure::Untrusted);
            self.stats.record_close(CloseReason::Stage(why), 0, 0);
            return;
        }
        let _ = client.set_nodelay(true);
        let key = self.pairs.vacant_key();
        let name = ConnName::new(self.tag(), key);
        if let Err(e) = self.poll.registry().register(
            &mut client,
            Token(2 * key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("conn from {peer}: cannot register: {e}; closing it");
            self.stats.record_close(CloseReason::from_io(&e), 0, 0);
            return;
        }
        self.take_new_upstreams();
        // The first attempt counts as a try, retries are the ones after it.
        let Some((upstream, target, attempts)) = self.start_connect(key, 0, 0, now) else {
            log::debug!("{name} from {peer}: no upstream can be tried: closing it");
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            self.stats.record_close(CloseReason::NoUpstream, 0, 0);
            return;
        };
        let client = match Stream::accept(client, name, &self.config.stages, now) {
            Ok(client) => client,
            Err(e) => {
                // Its stages could not be set up: the connect goes too.
                log::warn!("conn from {peer}: cannot start its stages: {e}; closing it");
                self.upstreams.closed(target);
                self.stats.record_close(CloseReason::from_io(&e), 0, 0);
                return;
            }
        };
        let addr = self.upstreams.list()[target].addr;
        log::debug!("{name} accepted from {peer}: forwarding to {addr}");
        self.next_generation += 1;
        self.slots.keep(slot);
        let mut pair = Pair::new(
            client,
            peer,
            upstream,
            target,
            name,
            self.next_generation,
            &self.how,
            now,
        );
        pair.attempts = attempts;
        self.pairs.insert(pair);
        self.arm(key);
    }

    /// The one place a pair leaves: both sockets close, count, log.
    fn close(&mut self, key: usize, reason: CloseReason, now: Instant) {
        let Some(mut pair) = self.pairs.try_remove(key) else {
            return;
        };
        self.timers.cancel(key);
        pair.release(&mut self.pipes);
        if pair.holds_upstream {
            self.upstreams.closed(pair.target);
        }
        if pair.state() == PairState::Forwarding {
            let (up, down) = pair.bytes();
            self.upstreams.record_bytes(pair.target, up, down);
        }
        let (bytes_in, bytes_out) = pair.bytes();
        let lifetime = now.saturating_duration_since(pair.opened);
        log::trace!("{} {} => closed", pair.name, pair.state());
        log::debug!(
            "{} {} closed: {reason} (in {bytes_in} B, out {bytes_out} B, {})",
            pair.name,
            pair.peer,
            Dur(lifetime)
        );
        if pair.client.sock.handshaking() {
            self.stats.tls_handshake_failures += 1;
        }
        let peer = pair.peer;
        let upstream = (pair.state() == PairState::Forwarding)
            .then(|| self.upstreams.list()[pair.target].addr);
        drop(pair); // both sockets close (and leave the poller)
        drop(self.slots.take());
        self.stats.record_close(reason, bytes_in, bytes_out);
        if let Some(log) = self.access_log.as_mut() {
            let entry = ConnEntry {
                protocol: NAME,
                lifetime,
                bytes_in,
                bytes_out,
                reason,
                upstream,
            };
            log.conn(now, peer, &entry);
        }
        if self.at_limit && self.phase == Phase::Serving {
            self.at_limit = false;
            if self.slots.limit().end_warning() {
                log::info!("below the connection limit again: accepting");
            }
            self.accept_pending = true;
        }
    }

    fn on_signals(&mut self, now: Instant) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let received: Vec<Request> = signals.pending().collect();
        for request in received {
            self.control(request, now);
        }
    }

    fn control(&mut self, request: Request, now: Instant) {
        let Request { control, from } = request;
        match control {
            Control::Quit => self.quit(from, now),
            Control::Force => self.force(ForceCause::SecondSignal, now),
            Control::Stats => log::info!("stats: {}", self.live_stats()),
            Control::Reload => {
                let reopen = self.access_log.as_ref().map(|log| move || log.reopen());
                control::reload(&self.config, reopen, from);
            }
            _ => log::warn!("{from}: {control} is run by a supervisor; ignored"),
        }
    }

    fn on_request(&mut self, now: Instant) {
        let request = self.request.swap(0, Ordering::SeqCst);
        if request & REQUEST_STATS != 0 {
            let stats = self.live_stats();
            if let Some(hook) = self.on_stats.as_mut() {
                hook(&stats);
            }
        }
        if request & REQUEST_ACCEPT != 0 && self.at_limit && self.phase == Phase::Serving {
            self.at_limit = false;
            self.accept_pending = true;
        }
        if request & REQUEST_RELOAD != 0 {
            let from = "reload requested";
            self.control(
                Request {
                    control: Control::Reload,
                    from,
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

    /// The counters, with the bytes of live pairs added in.
    pub(crate) fn live_stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.at_limit = u64::from(self.at_limit);
        stats.access_log_dropped = self.access_log.as_ref().map_or(0, LoopLog::dropped);
        stats.upstreams = self.upstreams.counts(Instant::now());
        for (_, pair) in self.pairs.iter() {
            let (bytes_in, bytes_out) = pair.bytes();
            stats.bytes_in += bytes_in;
            stats.bytes_out += bytes_out;
            if let Some(u) = stats.upstreams.get_mut(pair.target) {
                u.bytes_up += bytes_in;
                u.bytes_down += bytes_out;
            }
        }
        stats
    }

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

    /// Stop accepting; live pairs go on until they end or the deadline.
    fn begin_drain(&mut self, cause: &str, now: Instant) {
        // What waits in the backlog was promised a connection: take it.
        self.accept_up_to(usize::MAX, now, false);
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(listener.socket_mut());
        }
        if let Some(hook) = self.on_stopped_accepting.as_mut() {
            hook();
        }
        self.accept_pending = false;
        self.phase = Phase::Draining { started: now };
        if let Some(timeout) = self.config.drain_timeout {
            self.timers.schedule(now + timeout, Wake::DrainDeadline);
        }
        let deadline = crate::reactor::config::describe_timeout(self.config.drain_timeout);
        let pairs = Count(self.pairs.len() as u64, "connection");
        match self.worker {
            None => log::info!(
                "recv quit signal ({cause}): stopped accepting on {}, letting {pairs} finish (deadline {deadline})",
                self.local_addr
            ),
            Some(_) => log::info!(
                "{}letting {pairs} finish (deadline {deadline})",
                LoopName(self.tag())
            ),
        }
    }

    fn force(&mut self, cause: ForceCause, now: Instant) {
        let remaining = self.pairs.len();
        self.listeners.clear();
        if remaining == 0 {
            self.phase = Phase::Done(Outcome::Clean);
            return;
        }
        log::warn!(
            "{}: force-closing {}",
            CloseReason::Forced(cause),
            Count(remaining as u64, "connection")
        );
        let keys: Vec<usize> = self.pairs.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(pair) = self.pairs.get(key) {
                pair.reset_both();
            }
            self.close(key, CloseReason::Forced(cause), now);
        }
        self.phase = Phase::Done(Outcome::Forced { cause, remaining });
    }

    fn check_finished(&mut self, now: Instant) -> Option<Outcome> {
        match self.phase {
            Phase::Draining { started } if self.pairs.is_empty() => {
                log::info!(
                    "{}drained in {}: {}",
                    LoopName(self.tag()),
                    Dur(now.saturating_duration_since(started)),
                    self.live_stats()
                );
                self.phase = Phase::Done(Outcome::Clean);
                Some(Outcome::Clean)
            }
            Phase::Done(outcome) => Some(outcome),
            _ => None,
        }
    }
}

/// Whether a connect failed for want of something of ours (descriptors,
/// local ports, memory) rather than because of the upstream.
fn is_local(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}
