//! The `tcp-reactor` binary: take over the quit signals, parse flags, take
//! inherited sockets or bind, start logging, run the supervisor, turn the
//! outcome into an exit code. Everything else is in the library.
//!
//! Its own package (`tcp-reactor-cli`), so the library's users never build
//! clap or env_logger; `cargo run` at the workspace root runs it.

mod args;
mod logging;

use std::io::Write;
use std::process::ExitCode;

use args::{ProtocolName, EXIT_USAGE};
use tcp_reactor::base::rlimit;
use tcp_reactor::obs::access_log::AccessLog;
use tcp_reactor::obs::trace_events::TraceEvents;
use tcp_reactor::process::activation;
use tcp_reactor::process::supervisor::{self, Supervisor};
use tcp_reactor::proto::{DateAnchor, Echo, Http, HttpConfig, Resp};
use tcp_reactor::reactor::listener;
use tcp_reactor::reactor::signals::{self, SignalSource};

fn main() -> ExitCode {
    // First of all: from here a quit signal is queued for the supervisor,
    // never the default action, whatever start-up is doing when it comes.
    let signals = match SignalSource::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("tcp-reactor: error: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = signals::unblock() {
        eprintln!("tcp-reactor: error: cannot unblock the quit signals: {e}");
        return ExitCode::from(1);
    }
    let invocation = match args::parse(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(exit) => {
            if exit.stdout {
                print!("{}", exit.message);
                let _ = std::io::stdout().flush();
            } else {
                eprintln!("tcp-reactor: {}", exit.message);
            }
            return ExitCode::from(exit.code);
        }
    };
    logging::init();
    // Still single-threaded, as it must be: taking the inherited sockets
    // reads and clears the environment (see `activation`). No thread
    // exists before this line, and nothing touches the environment after.
    let mut inherited = match activation::take() {
        Ok(inherited) => inherited,
        Err(e) => return fail(&e),
    };
    // An upgrade runs us with the previous process's arguments: its
    // sockets are the ones `--listen` bound. From systemd, both is a mistake.
    let conflict = inherited
        .as_ref()
        .filter(|i| i.upgrade.is_none() && invocation.listen_given);
    if let Some(inherited) = conflict {
        eprintln!(
            "tcp-reactor: error: --listen cannot be used with {} inherited socket(s) (LISTEN_FDS); \
             drop --listen or the socket activation (try --help)",
            inherited.listeners.len()
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(limit) = rlimit::raise_nofile() {
        log::debug!("RLIMIT_NOFILE soft limit: {limit}");
    }
    // A usage error, found before a socket is bound or a thread started.
    let loops = supervisor::loops_for(invocation.threads);
    let listeners = inherited.as_ref().map_or(1, |i| i.listeners.len());
    if let Err(fit) = rlimit::fit_loops(loops, listeners) {
        let asked = match invocation.threads {
            0 => format!("0 ({loops} cores)"),
            n => n.to_string(),
        };
        eprintln!(
            "tcp-reactor: error: --threads {asked} needs about {} descriptors; the limit is {} (ulimit -n): at most {} fit",
            fit.needed, fit.limit, fit.most
        );
        return ExitCode::from(EXIT_USAGE);
    }

    let config = invocation.config;
    // An upgrade hands over the metrics listener too: the previous process
    // still holds the address, so binding it again would fail.
    let inherited_metrics = inherited
        .as_mut()
        .and_then(|i| i.upgrade.as_mut())
        .and_then(|h| h.metrics.take());
    let supervisor = match inherited {
        Some(inherited) => {
            let supervisor = Supervisor::new(config, invocation.threads, inherited.listeners)
                .inherited(inherited.names);
            match inherited.upgrade {
                Some(handover) => supervisor.upgraded_from(handover),
                None => supervisor,
            }
        }
        None => match listener::bind(config.listen, config.backlog) {
            Ok(socket) => Supervisor::new(config, invocation.threads, vec![socket]),
            Err(e) => return fail(&e),
        },
    }
    .upgrade_timeout(invocation.upgrade_timeout)
    .upgrades(true)
    .signals(signals);
    let supervisor = match (invocation.metrics, inherited_metrics) {
        (Some(_), Some(socket)) => supervisor.metrics(socket),
        (Some(addr), None) => match listener::bind(addr, 64) {
            Ok(socket) => supervisor.metrics(socket),
            Err(e) => return fail(&e),
        },
        (None, _) => supervisor,
    };

    let format = invocation.access_log_format;
    let open_log = |path| AccessLog::open(path, format);
    let access_log = match invocation.access_log.as_deref().map(open_log) {
        Some(Ok(log)) => Some(log),
        Some(Err(e)) => {
            eprintln!(
                "tcp-reactor: error: cannot open the access log {}: {e}",
                invocation.access_log.as_deref().unwrap_or("")
            );
            return ExitCode::from(1);
        }
        None => None,
    };
    let supervisor = match &access_log {
        Some(log) => supervisor.access_log(log.clone()),
        None => supervisor,
    };

    let trace = match invocation.trace_events.as_deref().map(TraceEvents::create) {
        Some(Ok(trace)) => Some(trace),
        Some(Err(e)) => {
            eprintln!(
                "tcp-reactor: error: cannot create the trace-events file {}: {e}",
                invocation.trace_events.as_deref().unwrap_or("")
            );
            return ExitCode::from(1);
        }
        None => None,
    };
    let supervisor = match &trace {
        Some(trace) => supervisor.trace_events(trace.clone()),
        None => supervisor,
    };

    let run = match (invocation.forward, invocation.protocol) {
        (Some(forward), _) => supervisor.run_forward(forward),
        (None, ProtocolName::Echo) => supervisor.run(|| Echo),
        (None, ProtocolName::Http) => {
            let http = std::sync::Arc::new(HttpConfig {
                max_body: invocation.max_body,
                header_timeout: invocation.header_timeout,
                date: Some(DateAnchor::now()),
                // Requests are copied for the access log only.
                log_requests: invocation.access_log.is_some(),
            });
            supervisor.run(move || Http::new(std::sync::Arc::clone(&http)))
        }
        // RESP streams bulk strings, so the default pending-input bound holds.
        (None, ProtocolName::Resp) => supervisor.run(move || Resp::new(invocation.max_body)),
    };
    // Every loop has ended: write what they handed over, then exit.
    if let Some(log) = access_log {
        log.finish();
    }
    if let Some(Err(e)) = trace.map(TraceEvents::finish) {
        log::warn!("trace events: cannot finish the file: {e}");
    }
    match run {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => fail(&e),
    }
}

/// One line on stderr, exit code 1: could not start, or the loop failed.
fn fail(error: &tcp_reactor::Error) -> ExitCode {
    eprintln!("tcp-reactor: error: {error}");
    ExitCode::from(1)
}
