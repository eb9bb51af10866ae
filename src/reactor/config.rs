//! Everything the server can be told, with the defaults a user gets when
//! they say nothing. The CLI fills this in; library users build it directly.

use std::net::SocketAddr;
use std::time::Duration;

use crate::base::limits::Limits;
use crate::io::stack::Stages;

/// Server configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Length of the kernel's queue of connections not yet accepted.
    pub backlog: i32,
    /// How long a graceful shutdown may take before connections are forced
    /// (`None`: no deadline; a second quit signal still forces).
    pub drain_timeout: Option<Duration>,
    /// Most connections served at once; beyond it new ones wait in the backlog.
    pub max_conns: usize,
    /// Per-connection bounds and timeouts.
    pub limits: Limits,
    /// Install SIGINT/SIGTERM/SIGQUIT/SIGUSR1 handlers. Library users running
    /// several servers, or owning signals themselves, turn this off and use a
    /// [`ShutdownHandle`](crate::ShutdownHandle).
    pub handle_signals: bool,
    /// Most connections accepted in one turn of the loop before the
    /// connections it already has get a turn. Loops that share a listening
    /// socket use a small batch, so that a burst of connects spreads over
    /// them instead of landing on whichever woke first.
    pub accept_batch: usize,
    /// The stages of the byte path below the protocol: a PROXY header
    /// first, TLS (see [`Stages`]).
    pub stages: Stages,
}

impl Config {
    /// Re-read what can change while serving (the TLS certificate and key);
    /// a failure keeps what is in use, and says why.
    pub fn reload(&self, cause: &str) {
        self.stages.reload(cause);
    }

    /// One line for the start-up log: protocol and limits.
    pub fn describe(&self, protocol: &str) -> String {
        format!(
            "protocol {protocol}{}, max-conns {}, drain-timeout {}, idle-timeout {}",
            self.stages.describe(),
            self.max_conns,
            describe_timeout(self.drain_timeout),
            describe_timeout(self.limits.idle_timeout),
        )
    }
}

/// A timeout for the log: `10s`, or `off` for no limit.
pub(crate) fn describe_timeout(timeout: Option<Duration>) -> String {
    match timeout {
        Some(d) => crate::base::human::Dur(d).to_string(),
        None => "off".into(),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            backlog: 1024,
            drain_timeout: Some(Duration::from_secs(10)),
            max_conns: 10_000,
            limits: Limits::default(),
            handle_signals: true,
            accept_batch: 256,
            stages: Stages::default(),
        }
    }
}
