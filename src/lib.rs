//! tcp-reactor: the Go tutorial's TCP service model — a main routine that
//! waits for signals, an accept loop, one handler per connection, and a
//! graceful shutdown that waits for every handler's cleanup — rebuilt on a
//! single-threaded `mio::Poll` event loop.
//!
//! # What a library user writes
//!
//! A [`Protocol`]: bytes and `now` in, bytes and a [`Decision`] out — no
//! socket, no poller (see [`proto`], and [`proto::driver::Driver`] to test
//! one without a network). Then either one loop, a [`Server`], or several
//! loops on one listening socket, a [`Supervisor`]:
//!
//! ```no_run
//! use tcp_reactor::{proto::Echo, Config, Server};
//!
//! // The library logs through the `log` crate: install a logger to see it.
//! env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
//! let server = Server::bind(Config::default(), || Echo)?
//!     .on_close(|info| println!("{} done: {}", info.peer, info.reason));
//! let outcome = server.run()?;
//! std::process::exit(outcome.exit_code().into());
//! # Ok::<(), tcp_reactor::Error>(())
//! ```
//!
//! Connections reach each other through their [`Mailbox`] (Go's
//! channels): on one loop directly, across loops through a bounded queue.
//! Everything else a deployment needs — TLS, PROXY headers, access logs,
//! metrics, zero-downtime upgrades — is a [`Config`] field or a
//! [`Supervisor`] option, behind a cargo feature where it costs a crate.
//!
//! # The layers
//!
//! The folders are the layers; a module imports only from the layers
//! below it (`tests/layers.rs` checks):
//!
//! ```text
//!   process    supervisor of N loops, signals' policy, upgrades, systemd
//!      │
//!   reactor    one mio::Poll loop: server, conn state machine, listener, timers
//!      │
//!   io · proto · obs   byte-path stages (PROXY, TLS) · sans-IO protocols · logs, metrics
//!      │
//!   mailbox    messages between connections (Go's channels)
//!      │
//!   base       close reasons, limits, counters, buffers, errors
//! ```
//!
//! * [`base`]: what every layer shares — [`CloseReason`], [`Limits`], the
//!   one list of counters ([`Stats`]), the [`Error`].
//! * [`mailbox`]: [`Mailbox`], [`ConnId`], [`Message`], and the process-wide
//!   [`Hub`](mailbox::Hub) of topics.
//! * [`io`]: the [`Transport`](io::transport::Transport) a connection reads
//!   and writes, and the stages wrapping the socket ([`io::proxy`], `io::tls`).
//! * [`proto`]: the [`Protocol`] trait and the bundled echo, RESP and HTTP.
//! * [`obs`]: access log, Chrome trace events, Prometheus metrics.
//! * [`reactor`]: the loop ([`Server`]), its [`Config`], the [`Control`]
//!   requests, the [`LoopContext`] a factory gets.
//! * [`process`]: the [`Supervisor`], socket inheritance and upgrades.
//!
//! Modules marked hidden in these docs (`reactor::conn`, `process::cli`…)
//! are the binary's and the benches' plumbing, not an API.
#![deny(missing_docs)]

pub mod base;
#[cfg(feature = "forward")]
pub mod forward;
pub mod io;
pub mod mailbox;
pub mod obs;
pub mod process;
pub mod proto;
pub mod reactor;

pub use base::close::CloseReason;
pub use base::counters::Stats;
pub use base::error::Error;
pub use base::limits::Limits;
pub use mailbox::{ConnId, Mailbox, Message};
pub use process::supervisor::{Supervisor, SupervisorHandle};
pub use proto::{ConnInfo, Decision, Output, Protocol, Step};
pub use reactor::config::Config;
pub use reactor::control::{Control, ShutdownHandle};
pub use reactor::loop_context::{Counter, LoopContext};
pub use reactor::server::{Outcome, Server};
