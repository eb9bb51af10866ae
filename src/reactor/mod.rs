//! The loop: one `mio::Poll` on one thread, and every event source it owns.
//!
//! | file | role | may not |
//! |---|---|---|
//! | [`server`] | polls, dispatches events by token, fires timers, routes mailbox batches, decides when to stop | know any protocol |
//! | `conn` | one connection's state machine, buffers and byte path | touch the poller or other connections |
//! | `listener` | the accept goroutine: accept until `WouldBlock`, back off on `EMFILE` | decide on connection limits |
//! | [`admission`] | `--max-conns`: one count all loops share, touched only at accept and close | know a socket |
//! | [`signals`] | SIGINT/SIGTERM/SIGQUIT/SIGUSR1/SIGUSR2/SIGHUP as a pollable source | act on them |
//! | [`control`] | the requests a signal or a handle makes ([`Control`](control::Control)): shutdown, force, stats, reload, upgrade | decide policy |
//! | [`config`] | one loop's [`Config`](config::Config): address, limits, stages | parse flags |
//! | [`loop_context`] | what a per-loop factory gets: the loop's id, its own counters and timers | outlive the loop |
//! | `timer` | a heap of `(deadline, key, generation)` wake-ups | know what a deadline means |
//! | `tokens` | which `mio::Token` means what | |
//!
//! Nothing here knows about processes, threads or the command line: that
//! is [`crate::process`].

pub mod admission;
pub mod config;
#[doc(hidden)]
pub mod conn;
pub mod control;
#[doc(hidden)]
pub mod listener;
pub mod loop_context;
pub mod server;
pub mod signals;
pub(crate) mod timer;
pub(crate) mod tokens;
