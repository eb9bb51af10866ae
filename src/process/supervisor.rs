//! The process: the Go tutorial's main goroutine, for one loop or many.
//!
//! `--threads N` runs N independent event loops ([`Server`]s), each on its
//! own thread with its own `Poll`, sharing nothing on the hot path. They
//! share the *listening socket*: each loop registers its own `dup` of it,
//! and whichever loop is free takes the next connection. The kernel's
//! accept queue belongs to that one socket, so a loop that stops strands
//! nothing, and the same socket can be handed to an upgraded process.
//!
//! The supervisor runs on the calling thread with a small `Poll` of its own,
//! and one method of `Running` per source:
//!
//! | token | source | method |
//! |---|---|---|
//! | `SIGNALS` | SIGINT/SIGTERM/SIGQUIT/SIGUSR1/SIGUSR2/SIGHUP, when asked for ([`Supervisor::signals`]) | `Running::control`, as for a handle |
//! | `EVENTS` | the loops (started, counters, stopped accepting, finished) and the [`SupervisorHandle`]s | `Running::on_loop_events`, `Running::on_asks` |
//! | `UPGRADE` | readiness pipe of the new process | `Running::on_upgrade_pipe`: ready: stop accepting and drain; EOF: upgrade failed, keep serving |
//! | `METRICS`.. | `--metrics` listener and its scrapes | `Running::on_metrics`: ask every loop for its counters, answer with their sum |
//!
//! and its timers (`Running::on_timers`): the sd_notify watchdog,
//! `EXTEND_TIMEOUT_USEC` during a drain, the upgrade deadline, slow
//! scrapes. It logs the process-wide lines once (`listening on`, `recv
//! quit signal`, `All done.`), and returns the worst outcome of its loops.
//!
//! What it is asked is a [`Control`], whoever asks: a signal, a
//! [`SupervisorHandle`] on another thread (a library user's, or a test's),
//! a scrape. Signals and upgrades (re-executing the program) happen only
//! when asked for: a library user running several loops from code gets
//! neither unless it says so.
//!
//! Besides the socket, the loops share one count of open connections
//! ([`crate::reactor::admission`]), so `--max-conns` holds for the process, not per loop.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::base::counters::Stats;
use crate::base::error::Error;
use crate::base::human::{Count, Dur};
use crate::base::rlimit;
#[cfg(feature = "forward")]
use crate::forward::{self, Forward, Forwarder};
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
use crate::reactor::control::ShutdownHandle;
use crate::reactor::control::{self, Control, Request};
use crate::reactor::loop_context::{LoopContext, OnLoop};
use crate::reactor::server::{Outcome, Server};
use crate::reactor::signals::SignalSource;

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

/// How long [`SupervisorHandle::stats`] waits for every loop's answer.
const STATS_WAIT: Duration = Duration::from_secs(5);

/// What a loop thread tells the supervisor.
enum LoopEvent {
    /// Up, with its handle and its protocol's name.
    Started(usize, ShutdownHandle, &'static str),
    /// Boxed: the counters are far larger than the other events.
    Stats(usize, Box<Stats>),
    StoppedAccepting,
    Finished(usize, Result<Outcome, Error>),
}

/// What a handle asks the supervisor.
enum Ask {
    Control(Request),
    /// The sum of every loop's counters, sent back on this channel.
    Stats(Sender<Stats>),
}

/// Where the process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Quit: listeners shut, loops draining.
    Draining,
    /// A new process took over: our copies closed, loops draining.
    HandedOver,
}

/// How the supervisor takes signals.
enum Signals {
    /// It does not: a library user who owns them (the default).
    Off,
    /// It installs the handlers itself when it runs.
    Install,
    /// Handlers installed earlier (the binary installs them first thing, so
    /// a quit signal during start-up is queued, not fatal).
    Given(SignalSource),
}

/// The process-level runner for one or more loops: built, told what it
/// may do, then [`run`](Supervisor::run) until every loop has drained.
///
/// ```no_run
/// use tcp_reactor::process::supervisor::Supervisor;
/// use tcp_reactor::proto::Echo;
/// use tcp_reactor::Config;
///
/// // Two loops on one listening socket, stopped from another thread.
/// let supervisor = Supervisor::bind(Config::default(), 2)?;
/// let handle = supervisor.handle();
/// let stop = std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(1));
///     let stats = handle.stats(); // every loop's counters, summed
///     handle.shutdown(); // a graceful drain, as SIGTERM would
///     stats
/// });
/// let outcome = supervisor.run(|| Echo)?;
/// assert_eq!(outcome.exit_code(), 0);
/// # let _ = stop.join();
/// # Ok::<(), tcp_reactor::Error>(())
/// ```
pub struct Supervisor {
    config: Config,
    threads: usize,
    listeners: Vec<TcpListener>,
    names: Vec<String>,
    /// What a previous tcp-reactor handed over with the sockets (upgrade).
    handover: Option<Handover>,
    /// `SIGUSR2` re-executes the program (only when asked for).
    upgrades: bool,
    exe: Option<PathBuf>,
    args: Vec<OsString>,
    upgrade_timeout: Duration,
    signals: Signals,
    #[cfg(feature = "metrics")]
    metrics: Option<TcpListener>,
    access_log: Option<AccessLog>,
    trace_events: Option<TraceEvents>,
    /// Run on SIGHUP after the built-in reloads (the forwarder's upstream file).
    on_reload: Option<ReloadHook>,
    /// Descriptors one connection holds (a proxied pair: 2), for the
    /// `--max-conns` the descriptor limit allows.
    fds_per_conn: u64,
    asks: (Sender<Ask>, Receiver<Ask>),
    waker: Arc<OnceLock<Arc<Waker>>>,
}

/// Asks a running [`Supervisor`] what a signal would, from any thread:
/// shut every loop down, force them, reload, read their summed counters.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: Sender<Ask>,
    waker: Arc<OnceLock<Arc<Waker>>>,
}

impl SupervisorHandle {
    /// Ask for `control` (see [`Control`]), as the signal for it would.
    /// `Upgrade` does something only if [`Supervisor::upgrades`] allowed it.
    pub fn send(&self, control: Control) {
        self.ask(Ask::Control(Request {
            control,
            from: "a handle",
        }));
    }

    /// Drain every loop gracefully (a second call forces), as `SIGTERM`.
    pub fn shutdown(&self) {
        self.send(Control::Quit);
    }

    /// Cut every connection of every loop now.
    pub fn force(&self) {
        self.send(Control::Force);
    }

    /// Every loop's counters, summed (as `SIGUSR1` logs them and a scrape
    /// shows them); `None` if the supervisor has stopped or did not answer
    /// within 5 s.
    pub fn stats(&self) -> Option<Stats> {
        let (tx, rx) = mpsc::channel();
        self.ask(Ask::Stats(tx));
        rx.recv_timeout(STATS_WAIT).ok()
    }

    fn ask(&self, ask: Ask) {
        if self.tx.send(ask).is_ok() {
            if let Some(waker) = self.waker.get() {
                let _ = waker.wake();
            }
        }
    }
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
            upgrades: false,
            exe: std::env::current_exe().ok(),
            args: std::env::args_os().skip(1).collect(),
            upgrade_timeout: Duration::from_secs(30),
            signals: Signals::Off,
            #[cfg(feature = "metrics")]
            metrics: None,
            access_log: None,
            trace_events: None,
            on_reload: None,
            fds_per_conn: 1,
            asks: mpsc::channel(),
            waker: Arc::default(),
        }
    }

    /// Bind `config.listen` and supervise `threads` loops serving on it.
    pub fn bind(config: Config, threads: usize) -> Result<Self, Error> {
        let socket = crate::reactor::listener::bind(config.listen, config.backlog)?;
        Ok(Self::new(config, threads, vec![socket]))
    }

    /// The address of the first listening socket.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listeners.first().and_then(|l| l.local_addr().ok())
    }

    /// A handle to ask the supervisor things from another thread, before or
    /// while it runs.
    pub fn handle(&self) -> SupervisorHandle {
        SupervisorHandle {
            tx: self.asks.0.clone(),
            waker: Arc::clone(&self.waker),
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

    /// Let [`Control::Upgrade`] (`SIGUSR2`) re-execute the program with the
    /// same arguments and hand the sockets over (see
    /// `upgrade`). Off unless asked for.
    pub fn upgrades(mut self, on: bool) -> Self {
        self.upgrades = on;
        self
    }

    /// How long an upgraded process may take to become ready.
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade_timeout = timeout;
        self
    }

    /// Take SIGINT/SIGTERM/SIGQUIT/SIGUSR1/SIGUSR2/SIGHUP with handlers
    /// installed earlier (the binary installs them first thing).
    pub fn signals(mut self, signals: SignalSource) -> Self {
        self.signals = Signals::Given(signals);
        self
    }

    /// Take the signals, installing their handlers when it runs (`true`),
    /// or leave them alone (`false`, the default).
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = if on { Signals::Install } else { Signals::Off };
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
    /// `make_protocol` makes one protocol state per connection, on any loop.
    pub fn run<P, F>(self, make_protocol: F) -> Result<Outcome, Error>
    where
        P: Protocol + 'static,
        F: Fn() -> P + Clone + Send + 'static,
    {
        self.run_per_loop(move |_: &LoopContext| make_protocol.clone())
    }

    /// Run the loops, each building its own protocol factory *on its own
    /// thread*: `per_loop` is called once per loop with that loop's
    /// [`LoopContext`], and what it returns makes that loop's protocols. So
    /// per-loop state (an `Rc<RefCell<…>>` the loop's protocols share) needs
    /// no lock and no `Send`, and the context registers counters that reach
    /// `/metrics` and timers that fire on the loop.
    pub fn run_per_loop<P, F, G>(self, per_loop: F) -> Result<Outcome, Error>
    where
        P: Protocol + 'static,
        F: Fn(&LoopContext) -> G + Clone + Send + 'static,
        G: FnMut() -> P + 'static,
    {
        self.run_loops(move |given: Given| {
            // A config with no stage (no TLS) runs its loops on bare sockets:
            // no per-message dispatch to a stage it does not have.
            match given.config.stages.needed() {
                true => run_loop::<P, F, G, Stream>(given, per_loop.clone()),
                false => run_loop::<P, F, G, mio::net::TcpStream>(given, per_loop.clone()),
            }
        })
    }

    #[cfg(feature = "forward")]
    /// Run loops that forward every connection as `forward` says (the TCP
    /// proxy, see [`crate::forward`]) until they have all drained.
    pub fn run_forward(mut self, forward: Forward) -> Result<Outcome, Error> {
        log::info!("{}", forward.describe());
        if let Some(file) = forward.file.clone() {
            self.on_reload = Some(Box::new(move |cause| file.reload(cause)));
        }
        self.fds_per_conn = 2;
        self.run_loops(move |given: Given| run_forward_loop(given, forward.clone()))
    }

    /// Start the loops (`launch` runs one, on its own thread), then serve
    /// signals, upgrades, metrics and the drain until they have finished.
    fn run_loops<L>(mut self, launch: L) -> Result<Outcome, Error>
    where
        L: Fn(Given) + Clone + Send + 'static,
    {
        let setup = |what| move |source| Error::Setup { what, source };
        let poll = Poll::new().map_err(setup("the supervisor's poller"))?;
        let signals = match std::mem::replace(&mut self.signals, Signals::Off) {
            Signals::Off => None,
            Signals::Install => Some(SignalSource::install().map_err(setup("signal handlers"))?),
            Signals::Given(signals) => Some(signals),
        };
        let mut signals = signals;
        if let Some(signals) = signals.as_mut() {
            signals
                .register(poll.registry(), SIGNALS)
                .map_err(setup("signal handlers"))?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), EVENTS).map_err(setup("the waker"))?);
        let _ = self.waker.set(Arc::clone(&waker));
        let loops = self.start_loops(launch, &waker)?;
        let protocol = loops.protocol;
        let mut running = Running::new(self, poll, signals, loops, protocol)?;
        running.serve()?;
        running.finish()
    }

    /// Start every loop's thread; wait until each is up (or one failed,
    /// which stops the others).
    fn start_loops<L>(&mut self, launch: L, waker: &Arc<Waker>) -> Result<Loops, Error>
    where
        L: Fn(Given) + Clone + Send + 'static,
    {
        let setup = |what| move |source| Error::Setup { what, source };
        let n = self.threads;
        // Before any thread exists: thousands of loops that cannot all get
        // their descriptors would each be started for nothing.
        rlimit::fit_loops(n, self.listeners.len())
            .map_err(|fit| Error::TooManyLoops { loops: n, fit })?;
        // One limit for the process, computed (and printed) once; every
        // loop counts against it (see crate::reactor::admission).
        let loop_fds = n as u64 * rlimit::fds_per_loop(self.listeners.len());
        self.config.max_conns =
            admission::effective_max_conns(self.config.max_conns, loop_fds, self.fds_per_conn);
        let limit = Arc::new(ConnLimit::new(self.config.max_conns));
        let mut per_loop_config = self.config.clone();
        per_loop_config.handle_signals = false;
        if n > 1 {
            per_loop_config.accept_batch = per_loop_config.accept_batch.min(SHARED_ACCEPT_BATCH);
        }
        let (tx, rx) = mpsc::channel();
        let hub = Hub::new(n);
        let mut joins = Vec::with_capacity(n);
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
            let given = Given {
                id,
                config: per_loop_config.clone(),
                limit: Arc::clone(&limit),
                sockets,
                hub: Arc::clone(&hub),
                tx: tx.clone(),
                waker: Arc::clone(waker),
                access_log: self.access_log.clone(),
                trace: self.trace_events.clone(),
            };
            let launch = launch.clone();
            let spawned = thread::Builder::new()
                .name(format!("loop-{id}"))
                .spawn(move || launch(given));
            match spawned {
                Ok(join) => joins.push(join),
                Err(e) => {
                    failed = Some(setup("a loop thread")(e));
                    break;
                }
            }
        }
        let mut protocol = "";
        let mut handles: Vec<Option<ShutdownHandle>> = (0..n).map(|_| None).collect();
        let mut finished: Vec<Option<Result<Outcome, Error>>> = (0..n).map(|_| None).collect();
        while (0..joins.len()).any(|id| handles[id].is_none() && finished[id].is_none()) {
            match rx.recv() {
                Ok(LoopEvent::Started(id, handle, name)) => {
                    handles[id] = Some(handle);
                    protocol = name;
                }
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
            return Err(failed.or(first_error).unwrap_or(Error::Setup {
                what: "the loops",
                source: std::io::Error::other("a loop stopped while starting"),
            }));
        }
        Ok(Loops {
            protocol,
            handles,
            finished,
            joins,
            rx,
            last_stats: vec![Stats::default(); n],
            stopped_accepting: 0,
        })
    }
}

/// What SIGHUP runs besides the built-in reloads.
type ReloadHook = Box<dyn FnMut(&str) + Send>;

/// The loops a supervisor runs, and what they told it.
struct Loops {
    /// What their protocol calls itself (for the logs and `/metrics`).
    protocol: &'static str,
    handles: Vec<ShutdownHandle>,
    finished: Vec<Option<Result<Outcome, Error>>>,
    joins: Vec<JoinHandle<()>>,
    rx: Receiver<LoopEvent>,
    /// Each loop's counters as it last sent them.
    last_stats: Vec<Stats>,
    stopped_accepting: usize,
}

impl Loops {
    fn each(&self, control: Control) {
        self.handles.iter().for_each(|h| h.send(control));
    }

    fn all_finished(&self) -> bool {
        self.finished.iter().all(Option::is_some)
    }
}

/// One request for every loop's counters (`SIGUSR1`, a scrape, a handle),
/// until each running loop has answered.
struct StatsRound {
    answered: Vec<bool>,
    /// Log the sum when complete (`SIGUSR1`).
    log: bool,
    /// Handles waiting for the sum.
    waiting: Vec<Sender<Stats>>,
}

/// What the supervisor counts itself.
#[derive(Default)]
struct Counts {
    upgrades_started: u64,
    upgrades_completed: u64,
    upgrades_failed: u64,
}

/// A running supervisor: what its `run` loop's locals were, with one
/// method per event source.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))] // `protocol`: for the scrape
struct Running {
    sup: Supervisor,
    poll: Poll,
    signals: Option<SignalSource>,
    loops: Loops,
    protocol: &'static str,
    addrs: Vec<String>,
    phase: Phase,
    round: Option<StatsRound>,
    counts: Counts,
    upgrading: Option<(Upgrade, Instant)>,
    notifier: Option<Notifier>,
    /// sd_notify: the watchdog's period (half systemd's), and next petting.
    watchdog: Option<(Duration, Instant)>,
    drain_deadline: Option<Instant>,
    next_extend: Option<Instant>,
    /// Every loop has finished: go once the scrapes in flight are answered, by then.
    exit_by: Option<Instant>,
    #[cfg(feature = "metrics")]
    endpoint: Option<crate::obs::metrics::Endpoint>,
}

impl Running {
    fn new(
        mut sup: Supervisor,
        poll: Poll,
        signals: Option<SignalSource>,
        loops: Loops,
        protocol: &'static str,
    ) -> Result<Self, Error> {
        let setup = |what| move |source| Error::Setup { what, source };
        let addrs: Vec<String> = sup
            .listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        log::info!(
            "listening on {} ({}, threads {}{})",
            addrs.join(" and "),
            sup.config.describe(protocol),
            sup.threads,
            match &sup.handover {
                Some(h) if h.orphaned => format!(
                    ", sockets handed over by the previous process {}, which is gone",
                    h.from
                ),
                Some(h) => format!(", sockets handed over by the previous process {}", h.from),
                None => String::new(),
            }
        );
        #[cfg(feature = "metrics")]
        let endpoint = match sup.metrics.take() {
            Some(listener) => {
                let endpoint =
                    crate::obs::metrics::Endpoint::new(listener, METRICS, poll.registry())
                        .map_err(setup("the metrics listener"))?;
                log::info!("metrics on http://{}/metrics", endpoint.local_addr());
                Some(endpoint)
            }
            None => None,
        };
        #[cfg(not(feature = "metrics"))]
        let _ = setup;
        let notifier = Notifier::from_env();
        if let Some(n) = &notifier {
            let mainpid = if sup.handover.is_some() {
                format!("\nMAINPID={}", std::process::id())
            } else {
                String::new()
            };
            n.send(&format!(
                "READY=1\nSTATUS=serving on {}{mainpid}",
                addrs.join(" ")
            ));
        }
        if let Some(pipe) = sup.handover.as_mut().and_then(|h| h.ready.take()) {
            upgrade::report_ready(pipe);
        }
        let watchdog = notifier
            .as_ref()
            .and(notify::watchdog_interval())
            .map(|d| (d / 2, Instant::now() + d / 2));
        Ok(Self {
            sup,
            poll,
            signals,
            loops,
            protocol,
            addrs,
            phase: Phase::Serving,
            round: None,
            counts: Counts::default(),
            upgrading: None,
            notifier,
            watchdog,
            drain_deadline: None,
            next_extend: None,
            exit_by: None,
            #[cfg(feature = "metrics")]
            endpoint,
        })
    }

    /// Poll and dispatch until every loop has finished (and the scrapes
    /// in flight then are answered).
    fn serve(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(64);
        // Asked before we were up.
        self.on_asks(Instant::now());
        while !self.done(Instant::now()) {
            let timeout = self
                .next_timer()
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Poll(e));
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signals(now),
                    EVENTS => {
                        self.on_loop_events();
                        self.on_asks(now);
                    }
                    UPGRADE => self.on_upgrade_pipe(),
                    _ => self.on_metrics(event, now),
                }
            }
            self.complete_round(now);
            self.on_timers(now);
        }
        Ok(())
    }

    /// Join the loops' threads and combine their outcomes.
    fn finish(self) -> Result<Outcome, Error> {
        let Loops {
            joins, finished, ..
        } = self.loops;
        for join in joins {
            let _ = join.join();
        }
        let outcome = combine(finished.into_iter().flatten())?;
        log::info!("All done.");
        Ok(outcome)
    }

    /// Every loop is done: answer the scrapes already accepted (an
    /// upgrade's old process accepted them just before the hand-over),
    /// for a moment at most, then go.
    fn done(&mut self, now: Instant) -> bool {
        if !self.loops.all_finished() {
            return false;
        }
        #[cfg(feature = "metrics")]
        let busy = {
            let registry = self.poll.registry();
            self.endpoint.as_mut().is_some_and(|e| {
                e.stop_accepting(registry);
                e.busy()
            })
        };
        #[cfg(not(feature = "metrics"))]
        let busy = false;
        !busy || now >= *self.exit_by.get_or_insert(now + SCRAPES_GRACE)
    }

    /// The earliest of the supervisor's timers.
    fn next_timer(&self) -> Option<Instant> {
        #[cfg(feature = "metrics")]
        let scrape = self.endpoint.as_ref().and_then(|e| e.next_deadline());
        #[cfg(not(feature = "metrics"))]
        let scrape = None;
        [
            self.watchdog.map(|(_, at)| at),
            self.next_extend,
            self.upgrading.as_ref().map(|(_, at)| *at),
            scrape,
            self.exit_by,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_signals(&mut self, now: Instant) {
        let received: Vec<Request> = match self.signals.as_mut() {
            Some(signals) => signals.pending().collect(),
            None => return,
        };
        for request in received {
            self.control(request, now);
        }
    }

    /// What the handles asked.
    fn on_asks(&mut self, now: Instant) {
        while let Ok(ask) = self.sup.asks.1.try_recv() {
            match ask {
                Ask::Control(request) => self.control(request, now),
                Ask::Stats(reply) => {
                    self.ask_stats();
                    match self.round.as_mut() {
                        Some(round) => round.waiting.push(reply),
                        None => {
                            let _ = reply.send(self.sum());
                        }
                    }
                }
            }
        }
    }

    /// Do what is asked (see [`Control`]), whoever asks.
    fn control(&mut self, request: Request, now: Instant) {
        let Request { control, from } = request;
        match control {
            Control::Quit if self.phase == Phase::Serving => self.quit(from, now),
            Control::Quit => {
                log::warn!("recv quit signal again ({from}) while draining");
                self.loops.each(Control::Force);
            }
            Control::Force => self.loops.each(Control::Force),
            Control::Stats => {
                self.ask_stats();
                if let Some(round) = self.round.as_mut() {
                    round.log = true;
                }
            }
            Control::Reload => {
                let reopen = self.sup.access_log.as_ref().map(|log| move || log.reopen());
                control::reload(&self.sup.config, reopen, from);
                if let Some(hook) = self.sup.on_reload.as_mut() {
                    hook(from);
                }
            }
            Control::Upgrade => self.upgrade(from, now),
        }
    }

    /// The first quit: stop accepting, tell every loop to drain.
    fn quit(&mut self, from: &str, now: Instant) {
        // Our copies only: each loop takes what is queued, then closes its
        // own (see Server).
        self.sup.listeners.clear();
        self.loops.stopped_accepting = 0;
        log::info!(
            "recv quit signal ({from}): draining {}",
            Count(self.loops.handles.len() as u64, "loop")
        );
        self.loops.each(Control::Quit);
        if let Some((mut up, _)) = self.upgrading.take() {
            log::warn!("upgrade abandoned: shutting down");
            let _ = up.child.kill();
        }
        self.phase = Phase::Draining;
        self.drain_deadline = self.sup.config.drain_timeout.map(|d| now + d);
        if let Some(nt) = &self.notifier {
            nt.send("STOPPING=1\nSTATUS=draining");
            // No deadline of ours: systemd's own TimeoutStopSec decides, unextended.
            self.next_extend = self.drain_deadline.map(|_| now);
        }
    }

    /// `SIGUSR2`: start the new binary with our sockets.
    fn upgrade(&mut self, from: &str, now: Instant) {
        if !self.sup.upgrades {
            log::warn!("{from}: upgrades are off for this process; ignored");
            return;
        }
        if self.upgrading.is_some() {
            log::warn!("{from}: an upgrade is already in flight; ignored");
            return;
        }
        if self.phase != Phase::Serving {
            log::warn!("{from}: shutting down; upgrade ignored");
            return;
        }
        self.counts.upgrades_started += 1;
        self.upgrading = self.start_upgrade(now);
        if self.upgrading.is_none() {
            self.counts.upgrades_failed += 1;
        }
    }

    fn start_upgrade(&self, now: Instant) -> Option<(Upgrade, Instant)> {
        let Some(exe) = &self.sup.exe else {
            log::warn!("upgrade failed: cannot tell which executable to start; still serving");
            return None;
        };
        #[cfg(feature = "metrics")]
        let metrics = self.endpoint.as_ref().and_then(|e| e.listener_fd());
        #[cfg(not(feature = "metrics"))]
        let metrics = None;
        // Two processes log from here on: tell their lines apart.
        crate::process::logging::show_pid();
        let spawned = Upgrade::spawn(
            exe,
            &self.sup.args,
            &self.sup.listeners,
            &self.sup.names,
            metrics,
        );
        match spawned {
            Ok(mut up) => {
                if let Err(e) =
                    self.poll
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
                Some((up, now + self.sup.upgrade_timeout))
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

    /// The new process's readiness pipe: a byte (ready: hand over), or EOF
    /// (it died first: keep serving).
    fn on_upgrade_pipe(&mut self) {
        let Some((up, _)) = self.upgrading.as_mut() else {
            return;
        };
        match up.poll_ready() {
            Readiness::Pending => {}
            Readiness::Ready => {
                log::info!(
                    "upgrade: new process {} is ready; stopped accepting, draining {}",
                    up.child.id(),
                    Count(self.loops.handles.len() as u64, "loop")
                );
                let _ = self.poll.registry().deregister(&mut up.ready);
                self.upgrading = None;
                self.counts.upgrades_completed += 1;
                // Our copies only: the socket lives on in the new process.
                self.sup.listeners.clear();
                #[cfg(feature = "metrics")]
                if let Some(endpoint) = self.endpoint.as_mut() {
                    // Scrapes from now on read the new process.
                    endpoint.stop_accepting(self.poll.registry());
                }
                self.loops.each(Control::Quit);
                self.phase = Phase::HandedOver;
            }
            Readiness::Gone => {
                if let Some((mut up, _)) = self.upgrading.take() {
                    self.counts.upgrades_failed += 1;
                    let _ = self.poll.registry().deregister(&mut up.ready);
                    let status = wait_briefly(&mut up.child);
                    log::warn!(
                        "upgrade failed: new process {} {status} before it was ready; still serving",
                        up.child.id()
                    );
                }
            }
        }
    }

    /// What the loops said: started (late), counters, stopped accepting,
    /// finished.
    fn on_loop_events(&mut self) {
        while let Ok(event) = self.loops.rx.try_recv() {
            match event {
                LoopEvent::Stats(id, stats) => {
                    self.loops.last_stats[id] = *stats;
                    if let Some(round) = self.round.as_mut() {
                        round.answered[id] = true;
                    }
                }
                LoopEvent::StoppedAccepting => {
                    self.loops.stopped_accepting += 1;
                    if self.loops.stopped_accepting == self.loops.handles.len() {
                        if self.phase == Phase::Draining {
                            log::info!("stopped accepting on {}", self.addrs.join(" and "));
                        }
                        // Each loop routed what it had sent before it said
                        // so: those messages are in their receivers'
                        // queues, ahead of this.
                        for handle in &self.loops.handles {
                            handle.drain_connections();
                        }
                    }
                }
                LoopEvent::Finished(id, result) => self.loops.finished[id] = Some(result),
                LoopEvent::Started(..) => {}
            }
        }
    }

    /// A scrape (or its connection) of the metrics endpoint.
    #[allow(unused_variables)]
    fn on_metrics(&mut self, event: &Event, now: Instant) {
        #[cfg(feature = "metrics")]
        {
            let registry = self.poll.registry();
            let Some(endpoint) = self.endpoint.as_mut().filter(|e| e.owns(event.token())) else {
                return;
            };
            if endpoint.on_event(registry, event, now) {
                self.ask_stats();
            }
        }
    }

    /// Ask every running loop for its counters, unless a round is already out.
    fn ask_stats(&mut self) {
        if self.round.is_some() {
            return;
        }
        self.round = Some(StatsRound {
            answered: vec![false; self.loops.handles.len()],
            log: false,
            waiting: Vec::new(),
        });
        for (handle, done) in self.loops.handles.iter().zip(&self.loops.finished) {
            if done.is_none() {
                handle.request_stats();
            }
        }
    }

    /// The loops' counters, summed.
    fn sum(&self) -> Stats {
        let mut sum = Stats::default();
        self.loops.last_stats.iter().for_each(|s| sum.add(s));
        sum
    }

    /// A round is complete once every loop has answered or finished (then
    /// its last copy counts): log it, answer the scrape and the handles.
    #[allow(unused_variables)]
    fn complete_round(&mut self, now: Instant) {
        let loops = &self.loops;
        let complete = self.round.as_ref().is_some_and(|r| {
            (0..loops.handles.len()).all(|id| r.answered[id] || loops.finished[id].is_some())
        });
        if !complete {
            return;
        }
        let sum = self.sum();
        let Some(round) = self.round.take() else {
            return;
        };
        if round.log {
            log::info!("stats: {sum}");
        }
        for reply in round.waiting {
            let _ = reply.send(sum.clone());
        }
        #[cfg(feature = "metrics")]
        if let Some(endpoint) = self.endpoint.as_mut().filter(|e| e.waiting()) {
            let snapshot = crate::obs::metrics::Snapshot {
                loops: sum,
                loop_count: self.loops.handles.len(),
                protocol: self.protocol,
                draining: self.phase != Phase::Serving,
                listen_queue: crate::obs::metrics::listen_queue(&self.sup.listeners),
                upgrades_started: self.counts.upgrades_started,
                upgrades_completed: self.counts.upgrades_completed,
                upgrades_failed: self.counts.upgrades_failed,
                process: crate::obs::metrics::process::ProcessInfo::read(),
            };
            let mut text = String::with_capacity(8 * 1024);
            crate::obs::metrics::render(&snapshot, &mut text);
            endpoint.respond(self.poll.registry(), &text, now);
        }
    }

    /// The watchdog, the drain's timeout extensions, the upgrade deadline,
    /// slow scrapes.
    fn on_timers(&mut self, now: Instant) {
        #[cfg(feature = "metrics")]
        if let Some(endpoint) = self.endpoint.as_mut() {
            endpoint.on_timer(self.poll.registry(), now);
        }
        if let Some((every, at)) = self.watchdog {
            if now >= at {
                if let Some(nt) = &self.notifier {
                    nt.send("WATCHDOG=1");
                }
                self.watchdog = Some((every, now + every));
            }
        }
        if let (Some(at), Some(deadline)) = (self.next_extend, self.drain_deadline) {
            if now >= at && self.phase == Phase::Draining {
                if let Some(nt) = &self.notifier {
                    let left = deadline.saturating_duration_since(now) + EXTEND_EVERY;
                    nt.send(&format!("EXTEND_TIMEOUT_USEC={}", left.as_micros()));
                }
                self.next_extend = Some(now + EXTEND_EVERY);
            }
        }
        let late = self
            .upgrading
            .as_ref()
            .is_some_and(|(_, deadline)| now >= *deadline);
        if late {
            if let Some((mut up, _)) = self.upgrading.take() {
                self.counts.upgrades_failed += 1;
                let _ = self.poll.registry().deregister(&mut up.ready);
                log::warn!(
                    "upgrade failed: new process {} not ready within {}; stopped it, still serving",
                    up.child.id(),
                    Dur(self.sup.upgrade_timeout)
                );
                let _ = up.child.kill();
                let _ = up.child.wait();
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

/// What one loop thread is given.
struct Given {
    id: usize,
    config: Config,
    limit: Arc<ConnLimit>,
    sockets: Vec<TcpListener>,
    hub: Arc<Hub>,
    tx: Sender<LoopEvent>,
    waker: Arc<Waker>,
    access_log: Option<AccessLog>,
    trace: Option<TraceEvents>,
}

/// How a loop's thread tells the supervisor what happens: the channel,
/// and the waker of the supervisor's poller so the news is seen at once.
#[derive(Clone)]
struct Reporter {
    id: usize,
    tx: Sender<LoopEvent>,
    waker: Arc<Waker>,
}

impl Reporter {
    fn send(&self, event: LoopEvent) {
        let _ = self.tx.send(event);
        let _ = self.waker.wake();
    }

    /// The loop's `on_stats` hook: its counters, when asked.
    fn stats(&self) -> impl FnMut(&Stats) + Send + 'static {
        let report = self.clone();
        move |stats| report.send(LoopEvent::Stats(report.id, Box::new(stats.clone())))
    }

    /// The loop's `on_stopped_accepting` hook.
    fn stopped_accepting(&self) -> impl FnMut() + Send + 'static {
        let report = self.clone();
        move || report.send(LoopEvent::StoppedAccepting)
    }
}

/// One loop thread: build its protocol factory and server on its own
/// thread, report its handle, run, report the result.
fn run_loop<P, F, G, S>(given: Given, per_loop: F)
where
    P: Protocol,
    F: Fn(&LoopContext) -> G,
    G: FnMut() -> P,
    S: Accept,
{
    let Given {
        id,
        config,
        limit,
        sockets,
        hub,
        tx,
        waker,
        access_log,
        trace,
    } = given;
    let report = Reporter { id, tx, waker };
    let ctx = LoopContext::new(id, hub.loops());
    let make = per_loop(&ctx);
    let make = OnLoop {
        make,
        extras: ctx.into_extras(),
    };
    let server = match Server::<P, S, OnLoop<G>>::with_factory(config, sockets, make) {
        Ok(server) => server,
        Err(e) => return report.send(LoopEvent::Finished(id, Err(e))),
    };
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
        .on_stats(report.stats())
        .on_stopped_accepting(report.stopped_accepting());
    report.send(LoopEvent::Started(
        id,
        server.shutdown_handle(),
        server.protocol_name(),
    ));
    let result = server.run();
    report.send(LoopEvent::Finished(id, result));
}

#[cfg(feature = "forward")]
/// One forwarding loop's thread (see [`run_loop`]).
fn run_forward_loop(given: Given, forward: Forward) {
    let Given {
        id,
        config,
        limit,
        sockets,
        hub,
        tx,
        waker,
        access_log,
        trace: _,
    } = given;
    let report = Reporter { id, tx, waker };
    let forwarder = match Forwarder::new(config, forward, sockets) {
        Ok(forwarder) => forwarder,
        Err(e) => return report.send(LoopEvent::Finished(id, Err(e))),
    };
    let forwarder = match &access_log {
        Some(log) => forwarder.access_log(log),
        None => forwarder,
    };
    drop(access_log);
    let forwarder = forwarder
        .worker(id, hub.loops())
        .shared_limit(limit)
        .on_stats(report.stats())
        .on_stopped_accepting(report.stopped_accepting());
    report.send(LoopEvent::Started(
        id,
        forwarder.shutdown_handle(),
        forward::forwarder::NAME,
    ));
    let result = forwarder.run();
    report.send(LoopEvent::Finished(id, result));
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
