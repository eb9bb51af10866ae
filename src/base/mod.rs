//! The bottom layer: what every other layer shares, and nothing that
//! knows a socket, a poller or a protocol.
//!
//! | file | what it holds |
//! |---|---|
//! | [`buffer`] | a byte queue with documented growth bounds: what a connection owes or holds |
//! | [`close`] | why a connection ended ([`CloseReason`](close::CloseReason)): the loop, counters, logs and the cleanup hook speak it |
//! | [`limits`] | the bounds and timeouts every connection obeys |
//! | [`counters`] | the one list of counters, from which `/metrics`, the `SIGUSR1` line and the drain line are generated |
//! | [`error`] | the library's [`Error`](error::Error): what can fail when starting or running a loop |
//! | [`human`] | how logs name things: durations, counts, connections |
//! | `text` | decimal numbers and civil dates written into byte buffers, allocation-free |
//! | [`rlimit`] | the file-descriptor limit behind `--max-conns` and `--threads` |

#[doc(hidden)]
pub mod buffer;
pub mod close;
pub mod counters;
pub mod error;
#[doc(hidden)]
pub mod human;
pub mod limits;
#[doc(hidden)]
pub mod rlimit;
pub(crate) mod text;
