//! What an operator sees: the access log, the trace timeline and the
//! Prometheus endpoint. These render what the loop hands them (plain
//! numbers, addresses, bytes); they know no protocol and no connection type.
//!
//! | file | role |
//! |---|---|
//! | [`access_log`] | formats access-log lines per loop, hands them to one writer thread |
//! | [`trace_events`] | records a loop's timeline as Chrome trace events |
//! | [`metrics`] | Prometheus text over HTTP for `--metrics` (feature `metrics`) |

pub mod access_log;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod trace_events;
