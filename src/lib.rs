//! tcp-reactor: the Go tutorial's TCP service model — a main routine that
//! waits for signals, an accept loop, one handler per connection, and a
//! graceful shutdown that waits for every handler's cleanup — rebuilt on a
//! single-threaded `mio::Poll` event loop.
//!
//! * [`server`]: the loop, dispatching events by token.
//! * [`conn`]: one connection's state machine and buffers.
//! * [`proto`]: sans-IO protocols (bytes in, bytes and decisions out).
//! * [`listener`], [`signals`], [`timer`]: the other event sources.
//!
//! ```no_run
//! use tcp_reactor::{proto::Echo, Config, Server};
//!
//! let server = Server::bind(Config::default(), || Echo)?
//!     .on_close(|info| println!("{} done: {}", info.peer, info.reason));
//! let outcome = server.run()?;
//! std::process::exit(outcome.exit_code().into());
//! # Ok::<(), tcp_reactor::Error>(())
//! ```
#![deny(missing_docs)]

pub mod activation;
pub mod cli;
pub mod config;
pub mod conn;
pub mod error;
pub mod limit;
pub mod listener;
pub mod notify;
pub mod proto;
pub mod rlimit;
pub mod server;
pub mod signals;
pub mod stats;
pub mod supervisor;
pub mod timer;
pub mod upgrade;

pub use config::Config;
pub use error::Error;
pub use server::{ConnInfo, Outcome, Server, ShutdownHandle};
