//! The process: the Go tutorial's main goroutine, for one loop or many.
//!
//! `--threads N` runs N independent event loops ([`Server`]s), each on its
//! own thread with its own `Poll`, sharing nothing on the hot path. They
//! share the *listening socket*: each loop registers its own `dup` of it,
//! and whichever loop is free takes the next connection. The kernel's
//! accept queue belongs to that one socket, so a loop that stops strands
//! nothing, and the same socket can be handed to an upgraded process.
//!
//! The supervisor runs on the main thread with a small `Poll` of its own:
//!
//! | token | source | what it does |
//! |---|---|---|
//! | `SIGNALS` | SIGINT/SIGTERM/SIGQUIT | first: stop listening, tell every loop to drain; second: force them |
//! | | SIGUSR1 | ask every loop for its counters, log the sum |
//! | | SIGUSR2 | start an [upgrade](crate::process::upgrade) |
//! | | SIGHUP | re-read the TLS certificate and key; every loop's next accept uses them |
//! | `EVENTS` | waker + channel from the loops | started, counters, finished |
//! | `UPGRADE` | readiness pipe of the new process | ready: stop accepting and drain; EOF: upgrade failed, keep serving |
//! | `METRICS`.. | `--metrics` listener and its scrapes | ask every loop for its counters, answer with their sum |
//!
//! and its timers: the sd_notify watchdog, `EXTEND_TIMEOUT_USEC` during a
//! drain, the upgrade deadline. It logs the process-wide lines once
//! (`listening on`, `recv quit signal`, `All done.`), and exits with the
//! worst outcome of its loops.
//!
//! Besides the socket, the loops share one count of open connections
//! ([`crate::reactor::admission`]), so `--max-conns` holds for the process, not per loop.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use crate::base::counters::Stats;
use crate::base::error::Error;
use crate::base::rlimit;
use crate::io::stack::{Accept, Stream};
use crate::mailbox::Hub;
use crate::obs::access_log::AccessLog;
use crate::obs::trace_events::TraceEvents;
use crate::process::activation::Handover;
use crate::process::notify::{self, Notifier};
use crate::process::upgrade::{self, Readiness, Upgrade};
use crate::proto::Protocol;
use crate::reactor::admission::{self, ConnLimit};
use crate::reactor::config::Config;
use crate::reactor::conn::ForceCause;
use crate::reactor::server::{Outcome, Server, ShutdownHandle};
use crate::reactor::signals::{SignalEvent, SignalSource};

const SIGNALS: Token = Token(0);
const EVENTS: Token = Token(1);
const UPGRADE: Token = Token(2);
/// The metrics listener; its scrapes take the tokens after it.
#[cfg(feature = "metrics")]
const METRICS: Token = Token(3);

/// Accept batch of loops sharing a socket (see `Config::accept_batch`).
const SHARED_ACCEPT_BATCH: usize = 4;

/// How long the scrapes in flight when the last loop finishes may take
/// before the process exits anyway.
const SCRAPES_GRACE: Duration = Duration::from_secs(1);

/// How long `EXTEND_TIMEOUT_USEC` extensions are spaced during a drain.
const EXTEND_EVERY: Duration = Duration::from_secs(5);

/// What a loop thread tells the supervisor.
enum LoopEvent {
    Started(usize, ShutdownHandle),
    /// Boxed: the counters are far larger than the other events.
    Stats(usize, Box<Stats>),
    StoppedAccepting,
    Finished(usize, Result<Outcome, Error>),
}

/// Where the process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Quit signal: listeners shut, loops draining.
    Draining,
    /// A new process took over: our copies closed, loops draining.
    HandedOver,
}

/// The process-level runner for one or more loops.
pub struct Supervisor {
    config: Config,
    threads: usize,
    listeners: Vec<TcpListener>,
    names: Vec<String>,
    /// What a previous tcp-reactor handed over with the sockets (upgrade).
    handover: Option<Handover>,
    exe: Option<PathBuf>,
    args: Vec<OsString>,
    upgrade_timeout: Duration,
    signals: Option<SignalSource>,
    #[cfg(feature = "metrics")]
    metrics: Option<TcpListener>,
    access_log: Option<AccessLog>,
    trace_events: Option<TraceEvents>,
}

/// One request for every loop's counters (`SIGUSR1`, a scrape), until
/// each running loop has answered.
struct StatsRound {
    answered: Vec<bool>,
    /// Log the sum when complete (`SIGUSR1`).
    log: bool,
}

/// What the supervisor counts itself.
#[derive(Default)]
struct Counts {
    upgrades_started: u64,
    upgrades_completed: u64,
    upgrades_failed: u64,
}

impl Supervisor {
    /// Supervise `threads` loops (0 = one per available core) serving on
    /// `listeners` (already listening).
    pub fn new(config: Config, threads: usize, listeners: Vec<TcpListener>) -> Self {
        let threads = loops_for(threads);
        let names = vec!["tcp-reactor".to_owned(); listeners.len()];
        Self {
            config,
            threads,
            listeners,
            names,
            handover: None,
            exe: std::env::current_exe().ok(),
            args: std::env::args_os().skip(1).collect(),
            upgrade_timeout: Duration::from_secs(30),
            signals: None,
            #[cfg(feature = "metrics")]
            metrics: None,
            access_log: None,
            trace_events: None,
        }
    }

    /// The sockets were inherited (systemd, an upgrade): their names.
    pub fn inherited(mut self, names: Vec<String>) -> Self {
        self.names = names;
        self
    }

    /// The sockets came from a previous tcp-reactor (an upgrade): report
    /// readiness through its pipe, and take over as systemd's main pid.
    /// Its metrics listener, if any, is for [`metrics`](Self::metrics).
    pub fn upgraded_from(mut self, handover: Handover) -> Self {
        // The previous process is still logging while it drains.
        crate::process::logging::show_pid();
        self.handover = Some(handover);
        self
    }

    /// How long an upgraded process may take to become ready.
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade_timeout = timeout;
        self
    }

    /// Use signal handlers installed earlier (the binary installs them
    /// first thing, so a quit signal during start-up is queued, not fatal).
    /// Without this, [`run`](Self::run) installs them itself.
    pub fn signals(mut self, signals: SignalSource) -> Self {
        self.signals = Some(signals);
        self
    }

    /// Serve Prometheus metrics on `listener` (bound and listening): `GET /metrics`.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, listener: TcpListener) -> Self {
        self.metrics = Some(listener);
        self
    }

    /// Every loop writes its access-log lines to `log`; `SIGHUP` reopens it.
    pub fn access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    /// Every loop records its timeline into `trace`.
    pub fn trace_events(mut self, trace: TraceEvents) -> Self {
        self.trace_events = Some(trace);
        self
    }

    /// Run the loops until they have all drained; returns the worst outcome.
    // Without `metrics`, the upgrade counts are kept but never shown.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables, unused_assignments))]
    pub fn run<P, F>(mut self, make_protocol: F) -> Result<Outcome, Error>
    where
        P: Protocol + 'static,
        F: Fn() -> P + Clone + Send + 'static,
    {
        let setup = |what| move |source| Error::Setup { what, source };
        let mut poll = Poll::new().map_err(setup("the supervisor's poller"))?;
        let mut signals = match self.signals.take() {
            Some(signals) => signals,
            None => SignalSource::install().map_err(setup("signal handlers"))?,
        };
        signals
            .register(poll.registry(), SIGNALS)
            .map_err(setup("signal handlers"))?;
        let waker = Arc::new(Waker::new(poll.registry(), EVENTS).map_err(setup("the waker"))?);
        let (tx, rx) = mpsc::channel();
        let n = self.threads;

        // Before any thread exists: thousands of loops that cannot all get
        // their descriptors would each be started for nothing.
        rlimit::fit_loops(n, self.listeners.len())
            .map_err(|fit| Error::TooManyLoops { loops: n, fit })?;
        // One limit for the process, computed (and printed) once; every
        // loop counts against it (see crate::reactor::admission).
        let loop_fds = n as u64 * rlimit::fds_per_loop(self.listeners.len());
        self.config.max_conns = admission::effective_max_conns(self.config.max_conns, loop_fds);
        let limit = Arc::new(ConnLimit::new(self.config.max_conns));
        let mut per_loop = self.config.clone();
        per_loop.handle_signals = false;
        if n > 1 {
            per_loop.accept_batch = per_loop.accept_batch.min(SHARED_ACCEPT_BATCH);
        }
        let mut joins = Vec::with_capacity(n);
        let hub = Hub::new(n);
        // A loop that cannot be started stops the start-up; those already
        // running are stopped below, not left behind.
        let mut failed = None;
        for id in 0..n {
            let sockets = match self
                .listeners
                .iter()
                .map(TcpListener::try_clone)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(sockets) => sockets,
                Err(e) => {
                    failed = Some(setup("a listener copy")(e));
                    break;
                }
            };
            let (tx, waker, make, config, hub, limit, log) = (
                tx.clone(),
                Arc::clone(&waker),
                make_protocol.clone(),
                per_loop.clone(),
                Arc::clone(&hub),
                Arc::clone(&limit),
                (self.access_log.clone(), self.trace_events.clone()),
            );
            // A config with no stage (no TLS) runs its loops on bare sockets:
            // no per-message dispatch to a stage it does not have.
            let staged = config.stages.needed();
            let spawned = thread::Builder::new()
                .name(format!("loop-{id}"))
                .spawn(move || match staged {
                    true => run_loop::<P, F, Stream>(
                        id, config, limit, sockets, make, hub, tx, waker, log,
                    ),
                    false => run_loop::<P, F, mio::net::TcpStream>(
                        id, config, limit, sockets, make, hub, tx, waker, log,
                    ),
                });
            match spawned {
                Ok(join) => joins.push(join),
                Err(e) => {
                    failed = Some(setup("a loop thread")(e));
                    break;
                }
            }
        }

        // Wait until every loop started is up, or has failed.
        let mut handles: Vec<Option<ShutdownHandle>> = (0..n).map(|_| None).collect();
        let mut finished: Vec<Option<Result<Outcome, Error>>> = (0..n).map(|_| None).collect();
        while (0..joins.len()).any(|id| handles[id].is_none() && finished[id].is_none()) {
            match rx.recv() {
                Ok(LoopEvent::Started(id, handle)) => handles[id] = Some(handle),
                Ok(LoopEvent::Finished(id, result)) => finished[id] = Some(result),
                Ok(LoopEvent::Stats(..) | LoopEvent::StoppedAccepting) => {}
                Err(_) => break,
            }
        }
        let broken = finished.iter().any(|f| matches!(f, Some(Err(_))));
        let handles: Vec<ShutdownHandle> = handles.into_iter().flatten().collect();
        if handles.len() < n || broken {
            handles.iter().for_each(ShutdownHandle::force);
            for join in joins {
                let _ = join.join();
            }
            let first_error = finished.into_iter().flatten().find_map(Result::err);
            return match failed.or(first_error) {
                Some(e) => Err(e),
                None => Ok(Outcome::Clean),
            };
        }

        let addrs: Vec<String> = self
            .listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        log::info!(
            "listening on {} ({}, threads {n}{})",
            addrs.join(" and "),
            self.config.describe(make_protocol().name()),
            match &self.handover {
                Some(h) if h.orphaned => format!(
                    ", sockets handed over by the previous process {}, which is gone",
                    h.from
                ),
                Some(h) => format!(", sockets handed over by the previous process {}", h.from),
                None => String::new(),
            }
        );
        #[cfg(feature = "metrics")]
        let mut endpoint = match self.metrics.take() {
            Some(listener) => {
                let endpoint =
                    crate::obs::metrics::Endpoint::new(listener, METRICS, poll.registry())
                        .map_err(setup("the metrics listener"))?;
                log::info!("metrics on http://{}/metrics", endpoint.local_addr());
                Some(endpoint)
            }
            None => None,
        };
        #[cfg(feature = "metrics")]
        let protocol_name = make_protocol().name();
        let notifier = Notifier::from_env();
        if let Some(n) = &notifier {
            let mainpid = if self.handover.is_some() {
                format!("\nMAINPID={}", std::process::id())
            } else {
                String::new()
            };
            n.send(&format!(
                "READY=1\nSTATUS=serving on {}{mainpid}",
                addrs.join(" ")
            ));
        }
        if let Some(pipe) = self.handover.as_mut().and_then(|h| h.ready.take()) {
            upgrade::report_ready(pipe);
        }

        let watchdog = notifier
            .as_ref()
            .and(notify::watchdog_interval())
            .map(|d| d / 2);
        let mut next_watchdog = watchdog.map(|d| Instant::now() + d);
        let mut next_extend: Option<Instant> = None;
        let mut drain_deadline: Option<Instant> = None;
        let mut phase = Phase::Serving;
        let mut upgrading: Option<(Upgrade, Instant)> = None;
        let mut round: Option<StatsRound> = None;
        let mut last_stats: Vec<Stats> = vec![Stats::default(); n];
        let mut counts = Counts::default();
        let mut stopped_accepting = 0;
        let mut events = Events::with_capacity(64);

        let mut exit_by: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if finished.iter().all(Option::is_some) {
                // Every loop is done: answer the scrapes already accepted
                // (an upgrade's old process accepted them just before the
                // hand-over), for a moment at most, then go.
                #[cfg(feature = "metrics")]
                let busy = endpoint.as_mut().is_some_and(|e| {
                    e.stop_accepting(poll.registry());
                    e.busy()
                });
                #[cfg(not(feature = "metrics"))]
                let busy = false;
                if !busy || now >= *exit_by.get_or_insert(now + SCRAPES_GRACE) {
                    break;
                }
            }
            #[cfg(feature = "metrics")]
            let scrape_deadline = endpoint.as_ref().and_then(|e| e.next_deadline());
            #[cfg(not(feature = "metrics"))]
            let scrape_deadline = None;
            let timeout = [
                next_watchdog,
                next_extend,
                upgrading.as_ref().map(|(_, d)| *d),
                scrape_deadline,
                exit_by,
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now));
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Poll(e));
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => {
                        let received: Vec<SignalEvent> = signals.pending().collect();
                        for signal in received {
                            match signal {
                                SignalEvent::Quit(name) if phase == Phase::Serving => {
                                    // Our copies only: each loop takes what is
                                    // queued, then closes its own (see Server).
                                    self.listeners.clear();
                                    stopped_accepting = 0;
                                    log::info!(
                                        "recv quit signal ({name}): draining {n} loop{}",
                                        if n == 1 { "" } else { "s" }
                                    );
                                    handles.iter().for_each(ShutdownHandle::shutdown);
                                    if let Some((mut up, _)) = upgrading.take() {
                                        log::warn!("upgrade abandoned: shutting down");
                                        let _ = up.child.kill();
                                    }
                                    phase = Phase::Draining;
                                    drain_deadline = self.config.drain_timeout.map(|d| now + d);
                                    if let Some(nt) = &notifier {
                                        nt.send("STOPPING=1\nSTATUS=draining");
                                        // No deadline of ours: systemd's own
                                        // TimeoutStopSec decides, unextended.
                                        next_extend = drain_deadline.map(|_| now);
                                    }
                                }
                                SignalEvent::Quit(name) => {
                                    log::warn!("recv quit signal again ({name}) while draining");
                                    handles.iter().for_each(ShutdownHandle::force);
                                }
                                SignalEvent::Stats => {
                                    ask_stats(&mut round, &handles, &finished);
                                    if let Some(round) = round.as_mut() {
                                        round.log = true;
                                    }
                                }
                                SignalEvent::Reload => {
                                    // nginx's HUP: the certificate is re-read, the log reopened.
                                    self.config.reload("SIGHUP");
                                    match &self.access_log {
                                        Some(log) => {
                                            log::info!("SIGHUP: reopening the access log");
                                            log.reopen();
                                        }
                                        None => log::debug!("SIGHUP: no access log to reopen"),
                                    }
                                }
                                SignalEvent::Upgrade => {
                                    if upgrading.is_some() {
                                        log::warn!(
                                            "SIGUSR2: an upgrade is already in flight; ignored"
                                        );
                                    } else if phase != Phase::Serving {
                                        log::warn!("SIGUSR2: shutting down; upgrade ignored");
                                    } else {
                                        #[cfg(feature = "metrics")]
                                        let metrics =
                                            endpoint.as_ref().and_then(|e| e.listener_fd());
                                        #[cfg(not(feature = "metrics"))]
                                        let metrics = None;
                                        upgrading = self.start_upgrade(&poll, now, metrics);
                                        counts.upgrades_started += 1;
                                        if upgrading.is_none() {
                                            counts.upgrades_failed += 1;
                                        }
                                    }
                                }
                            }
                        }
                    }
                    EVENTS => {
                        while let Ok(event) = rx.try_recv() {
                            match event {
                                LoopEvent::Stats(id, stats) => {
                                    last_stats[id] = *stats;
                                    if let Some(round) = round.as_mut() {
                                        round.answered[id] = true;
                                    }
                                }
                                LoopEvent::StoppedAccepting => {
                                    stopped_accepting += 1;
                                    if stopped_accepting == n {
                                        if phase == Phase::Draining {
                                            log::info!(
                                                "stopped accepting on {}",
                                                addrs.join(" and ")
                                            );
                                        }
                                        // Each loop routed what it had sent before it
                                        // said so: those messages are in their
                                        // receivers' queues, ahead of this.
                                        handles.iter().for_each(ShutdownHandle::drain_connections);
                                    }
                                }
                                LoopEvent::Finished(id, result) => finished[id] = Some(result),
                                LoopEvent::Started(..) => {}
                            }
                        }
                    }
                    UPGRADE => {
                        let Some((up, _)) = upgrading.as_mut() else {
                            continue;
                        };
                        match up.poll_ready() {
                            Readiness::Pending => {}
                            Readiness::Ready => {
                                let pid = up.child.id();
                                log::info!(
                                    "upgrade: new process {pid} is ready; stopped accepting, draining {n} loop{}",
                                    if n == 1 { "" } else { "s" }
                                );
                                let _ = poll.registry().deregister(&mut up.ready);
                                upgrading = None;
                                counts.upgrades_completed += 1;
                                self.listeners.clear(); // our copies only: the socket lives on in the new process
                                #[cfg(feature = "metrics")]
                                if let Some(endpoint) = endpoint.as_mut() {
                                    // Scrapes from now on read the new process.
                                    endpoint.stop_accepting(poll.registry());
                                }
                                handles.iter().for_each(ShutdownHandle::shutdown);
                                phase = Phase::HandedOver;
                            }
                            Readiness::Gone => {
                                if let Some((mut up, _)) = upgrading.take() {
                                    counts.upgrades_failed += 1;
                                    let _ = poll.registry().deregister(&mut up.ready);
                                    let status = wait_briefly(&mut up.child);
                                    log::warn!(
                                        "upgrade failed: new process {} {status} before it was ready; still serving",
                                        up.child.id()
                                    );
                                }
                            }
                        }
                    }
                    #[cfg(feature = "metrics")]
                    token if endpoint.as_ref().is_some_and(|e| e.owns(token)) => {
                        let Some(endpoint) = endpoint.as_mut() else {
                            continue;
                        };
                        if endpoint.on_event(poll.registry(), event, now) {
                            ask_stats(&mut round, &handles, &finished);
                        }
                    }
                    _ => {}
                }
            }
            // A round is complete once every loop has answered
            // or finished (then its last copy counts).
            let complete = round
                .as_ref()
                .is_some_and(|r| (0..n).all(|id| r.answered[id] || finished[id].is_some()));
            if complete {
                let mut sum = Stats::default();
                last_stats.iter().for_each(|s| sum.add(s));
                if round.take().is_some_and(|r| r.log) {
                    log::info!("stats: {sum}");
                }
                #[cfg(feature = "metrics")]
                if let Some(endpoint) = endpoint.as_mut().filter(|e| e.waiting()) {
                    let snapshot = crate::obs::metrics::Snapshot {
                        loops: sum,
                        loop_count: n,
                        protocol: protocol_name,
                        draining: phase != Phase::Serving,
                        listen_queue: crate::obs::metrics::listen_queue(&self.listeners),
                        upgrades_started: counts.upgrades_started,
                        upgrades_completed: counts.upgrades_completed,
                        upgrades_failed: counts.upgrades_failed,
                        process: crate::obs::metrics::process::ProcessInfo::read(),
                    };
                    let mut text = String::with_capacity(8 * 1024);
                    crate::obs::metrics::render(&snapshot, &mut text);
                    endpoint.respond(poll.registry(), &text, now);
                }
            }
            // Timers.
            #[cfg(feature = "metrics")]
            if let Some(endpoint) = endpoint.as_mut() {
                endpoint.on_timer(poll.registry(), now);
            }
            if let (Some(at), Some(every)) = (next_watchdog, watchdog) {
                if now >= at {
                    if let Some(nt) = &notifier {
                        nt.send("WATCHDOG=1");
                    }
                    next_watchdog = Some(now + every);
                }
            }
            if let (Some(at), Some(deadline)) = (next_extend, drain_deadline) {
                if now >= at && phase == Phase::Draining {
                    if let Some(nt) = &notifier {
                        let left = deadline.saturating_duration_since(now) + EXTEND_EVERY;
                        nt.send(&format!("EXTEND_TIMEOUT_USEC={}", left.as_micros()));
                    }
                    next_extend = Some(now + EXTEND_EVERY);
                }
            }
            if upgrading
                .as_ref()
                .is_some_and(|(_, deadline)| now >= *deadline)
            {
                if let Some((mut up, _)) = upgrading.take() {
                    counts.upgrades_failed += 1;
                    let _ = poll.registry().deregister(&mut up.ready);
                    log::warn!(
                        "upgrade failed: new process {} not ready within {}; stopped it, still serving",
                        up.child.id(),
                        crate::base::human::Dur(self.upgrade_timeout)
                    );
                    let _ = up.child.kill();
                    let _ = up.child.wait();
                }
            }
        }
        for join in joins {
            let _ = join.join();
        }
        let outcome = combine(finished.into_iter().flatten())?;
        log::info!("All done.");
        Ok(outcome)
    }

    fn start_upgrade(
        &self,
        poll: &Poll,
        now: Instant,
        metrics: Option<BorrowedFd<'_>>,
    ) -> Option<(Upgrade, Instant)> {
        let Some(exe) = &self.exe else {
            log::warn!("upgrade failed: cannot tell which executable to start; still serving");
            return None;
        };
        // Two processes log from here on: tell their lines apart.
        crate::process::logging::show_pid();
        match Upgrade::spawn(exe, &self.args, &self.listeners, &self.names, metrics) {
            Ok(mut up) => {
                if let Err(e) = poll
                    .registry()
                    .register(&mut up.ready, UPGRADE, Interest::READABLE)
                {
                    log::warn!("upgrade failed: {e}; still serving");
                    let _ = up.child.kill();
                    return None;
                }
                log::info!(
                    "upgrade: started new process {} from {}; serving until it is ready",
                    up.child.id(),
                    exe.display()
                );
                Some((up, now + self.upgrade_timeout))
            }
            Err(e) => {
                log::warn!(
                    "upgrade failed: cannot start {}: {e}; still serving",
                    exe.display()
                );
                None
            }
        }
    }
}

/// How many loops `--threads N` means: `N`, or one per available core for 0.
pub fn loops_for(threads: usize) -> usize {
    match threads {
        0 => thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// One loop thread: build the server on its copies of the sockets, report
/// its handle, run, report the result.
#[allow(clippy::too_many_arguments)] // what one loop is given: each is distinct
fn run_loop<P, F, S>(
    id: usize,
    config: Config,
    limit: Arc<ConnLimit>,
    sockets: Vec<TcpListener>,
    make: F,
    hub: Arc<Hub>,
    tx: mpsc::Sender<LoopEvent>,
    waker: Arc<Waker>,
    (access_log, trace): (Option<AccessLog>, Option<TraceEvents>),
) where
    P: Protocol,
    F: Fn() -> P + Send + 'static,
    S: Accept,
{
    let send = {
        let (tx, waker) = (tx.clone(), Arc::clone(&waker));
        move |event| {
            let _ = tx.send(event);
            let _ = waker.wake();
        }
    };
    let server = match Server::<P, S>::on_sockets(config, sockets, make) {
        Ok(server) => server,
        Err(e) => return send(LoopEvent::Finished(id, Err(e))),
    };
    let (stats_send, stop_send) = (send.clone(), send.clone());
    let server = match &access_log {
        Some(log) => server.access_log(log),
        None => server,
    };
    drop(access_log);
    let server = match &trace {
        Some(trace) => server.trace_events(trace),
        None => server,
    };
    let server = server
        .worker(id)
        .hub(hub, id)
        .shared_limit(limit)
        .on_stats(move |stats| stats_send(LoopEvent::Stats(id, Box::new(stats.clone()))))
        .on_stopped_accepting(move || stop_send(LoopEvent::StoppedAccepting));
    send(LoopEvent::Started(id, server.shutdown_handle()));
    let result = server.run();
    send(LoopEvent::Finished(id, result));
}

/// Ask every running loop for its counters, unless a round is already out.
fn ask_stats(
    round: &mut Option<StatsRound>,
    handles: &[ShutdownHandle],
    finished: &[Option<Result<Outcome, Error>>],
) {
    if round.is_some() {
        return;
    }
    *round = Some(StatsRound {
        answered: vec![false; handles.len()],
        log: false,
    });
    for (handle, done) in handles.iter().zip(finished) {
        if done.is_none() {
            handle.request_stats();
        }
    }
}

/// The worst of the loops' outcomes: an error, else a forced drain (with
/// the counts added up), else clean. A loop reports `Forced` only when it
/// cut a connection off, and one with nothing counted is clean anyway: exit
/// code 3 means a client lost its connection.
fn combine(results: impl Iterator<Item = Result<Outcome, Error>>) -> Result<Outcome, Error> {
    let mut outcome = Outcome::Clean;
    for result in results {
        match (result?, &mut outcome) {
            (Outcome::Clean, _) => {}
            (Outcome::Forced { cause, remaining }, Outcome::Clean) => {
                outcome = Outcome::Forced { cause, remaining };
            }
            (
                Outcome::Forced {
                    remaining: more,
                    cause,
                },
                Outcome::Forced {
                    remaining,
                    cause: worst,
                },
            ) => {
                *remaining += more;
                if cause == ForceCause::SecondSignal {
                    *worst = cause;
                }
            }
        }
    }
    Ok(match outcome {
        Outcome::Forced { remaining: 0, .. } => Outcome::Clean,
        outcome => outcome,
    })
}

/// The exit status of a child that closed its pipe, if it exits soon.
fn wait_briefly(child: &mut std::process::Child) -> String {
    for _ in 0..100 {
        match child.try_wait() {
            Ok(Some(status)) => return format!("exited ({status})"),
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => return format!("could not be waited for ({e})"),
        }
    }
    "closed its readiness pipe".to_owned()
}
