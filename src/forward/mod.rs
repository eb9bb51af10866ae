//! Forwarding: every accepted connection is proxied to an upstream — the
//! TCP proxy and load balancer (`--upstream`).
//!
//! | file | role | may not |
//! |---|---|---|
//! | [`upstreams`] | the upstream list, the balancer, the passive health check (sans-IO) | touch a socket |
//! | [`upstream_file`] | `--upstream-file`: the list in a file, re-read on SIGHUP | know a loop |
//! | `health` | `--health-interval`: a connect to every upstream each interval | know a pair |
//! | `pipe` | splice(2) through a pipe, and the loop's pool of pipes | know a pair |
//! | `flow` | one direction: copy or splice, backpressure, the FIN that follows | know the other direction |
//! | `pair` | one proxied connection: its state, both sockets, both flows | touch the poller |
//! | [`forwarder`] | the loop: accept, connect, retry, timers, drain | know what the bytes mean |
//!
//! It sits above [`crate::reactor`], whose listener, admission, timers and
//! control requests it reuses, and below [`crate::process`], whose
//! supervisor runs its loops as it runs servers.

pub(crate) mod flow;
pub mod forwarder;
pub(crate) mod health;
pub(crate) mod pair;
pub(crate) mod pipe;
pub mod upstream_file;
pub mod upstreams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::io::proxy::Announce;

pub use flow::Splice;
pub use forwarder::Forwarder;
pub use pair::PairState;
pub use upstream_file::UpstreamFile;
pub use upstreams::{Balance, ConnectFailure};

/// What a forwarding loop forwards to, and how.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The upstreams (at least one).
    pub upstreams: Vec<SocketAddr>,
    /// How each connection's upstream is chosen.
    pub balance: Balance,
    /// How long a connect may take before its upstream counts as down.
    pub connect_timeout: Duration,
    /// Further upstreams a connection tries after a failed connect.
    pub retries: usize,
    /// How long a failed upstream is left out of the choice.
    pub down_time: Duration,
    /// When bytes move with splice(2).
    pub splice: Splice,
    /// Send a PROXY header naming the client before its first byte.
    pub send_proxy: Option<Announce>,
    /// Where `upstreams` came from, re-read on SIGHUP (`None`: the list
    /// is fixed).
    pub file: Option<Arc<UpstreamFile>>,
    /// Connect to every upstream this often (`None`: passive checks only).
    pub health_interval: Option<Duration>,
}

impl Forward {
    /// Default `--connect-timeout`.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default `--retries`.
    pub const DEFAULT_RETRIES: usize = 2;
    /// Default `--upstream-down-time`.
    pub const DEFAULT_DOWN_TIME: Duration = Duration::from_secs(10);

    /// Forward to `upstreams` with the defaults.
    pub fn to(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            upstreams,
            balance: Balance::default(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            retries: Self::DEFAULT_RETRIES,
            down_time: Self::DEFAULT_DOWN_TIME,
            splice: Splice::default(),
            send_proxy: None,
            file: None,
            health_interval: None,
        }
    }

    /// The start-up line's words: `forward to 127.0.0.1:6379, 127.0.0.1:6380
    /// (least-conn, splice auto)`.
    pub fn describe(&self) -> String {
        let mut to: Vec<String> = self.upstreams.iter().map(SocketAddr::to_string).collect();
        if let Some(file) = &self.file {
            to.push(format!("(from {})", file.path().display()));
        }
        let proxy = match self.send_proxy {
            Some(Announce::V1) => ", PROXY v1 header",
            Some(Announce::V2) => ", PROXY v2 header",
            None => "",
        };
        format!(
            "forward to {} ({}, splice {}{proxy})",
            to.join(", "),
            self.balance,
            self.splice
        )
    }
}
