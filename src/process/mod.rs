//! The process: the Go tutorial's main goroutine, around one loop or many.
//!
//! | file | role |
//! |---|---|
//! | [`supervisor`] | runs N loops on one listening socket; owns the signals, logs the process-wide lines, exits with the worst outcome |
//! | `upgrade` | `SIGUSR2`: start the new binary with our sockets, wait for it to be ready |
//! | [`activation`] | sockets inherited from systemd (`LISTEN_FDS`) or from the previous process |
//! | `notify` | `sd_notify`: `READY=1`, `STOPPING=1`, the watchdog |
//! | [`logging`] | when log lines carry the pid (during an upgrade); the binary's format asks |
//!
//! The loop itself, and everything a connection does, is [`crate::reactor`].

pub mod activation;
#[doc(hidden)]
pub mod logging;
pub(crate) mod notify;
pub mod supervisor;
pub(crate) mod upgrade;
