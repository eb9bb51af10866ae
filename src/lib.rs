//! tcp-reactor: the Go tutorial's TCP service model — a main routine that
//! waits for signals, an accept loop, one handler per connection, and a
//! graceful shutdown that waits for every handler's cleanup — rebuilt on a
//! single-threaded `mio::Poll` event loop.
//!
//! The folders are the layers:
//!
//! * [`reactor`]: one loop — [`server`](reactor::server) (poll, dispatch by
//!   token), [`conn`](reactor::conn) (one connection's state machine and
//!   byte path), [`listener`](reactor::listener), [`signals`](reactor::signals),
//!   [`timer`](reactor::timer), [`stats`](reactor::stats), and the
//!   [`mailbox`](reactor::mailbox): messages between connections (Go's channels).
//! * [`process`]: the main goroutine's job — the
//!   [`supervisor`](process::supervisor) of N loops, zero-downtime
//!   [`upgrade`](process::upgrade), systemd [`activation`](process::activation)
//!   and [`notify`](process::notify), the fd limit, the command line.
//! * [`proto`]: sans-IO protocols (bytes and `now` in, bytes and decisions out).
//! * `metrics` (feature `metrics`): Prometheus text over HTTP for `--metrics`.
//! * [`config`], [`error`], [`human`], [`text`]: what every layer shares.
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
#![deny(missing_docs)]

pub mod base;
pub mod io;
pub mod mailbox;
pub mod obs;
pub mod process;
pub mod proto;
pub mod reactor;

pub use base::error::Error;
pub use mailbox::{ConnId, Mailbox, Message};
pub use proto::ConnInfo;
pub use proto::Protocol;
pub use reactor::config::Config;
pub use reactor::control::ShutdownHandle;
pub use reactor::server::{Outcome, Server};
