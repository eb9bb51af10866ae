//! The loop: one `mio::Poll` on one thread, and every event source it owns.
//!
//! | file | role | may not |
//! |---|---|---|
//! | [`server`] | polls, dispatches events by token, fires timers, decides when to stop | know any protocol |
//! | [`conn`] | one connection's state machine, buffers and byte path | touch the poller or other connections |
//! | [`listener`] | the accept goroutine: accept until `WouldBlock`, back off on `EMFILE` | decide on connection limits |
//! | [`signals`] | SIGINT/SIGTERM/SIGQUIT/SIGUSR1/SIGUSR2 as a pollable token | act on them |
//! | [`timer`] | a heap of `(deadline, key, generation)` wake-ups | know what a deadline means |
//! | [`stats`] | plain per-loop counters (no atomics: one thread touches them) | lock |
//! | [`mailbox`] | messages between connections: a protocol records sends, the server routes them (same loop directly, other loops through a bounded queue and their waker) | write to a socket |
//! | [`trace_events`] | records the loop's timeline (polls, dispatch, connection states) as Chrome trace events | write while serving |
//! | [`access_log`] | formats access-log lines per loop, hands them to one writer thread | write to disk on the loop |
//!
//! Nothing here knows about processes, threads or the command line: that
//! is [`crate::process`].

pub mod admission;
pub mod config;
pub mod conn;
pub mod control;
pub mod listener;
pub mod loop_context;
pub mod server;
pub mod signals;
pub mod timer;
pub mod tokens;
