//! The PROXY protocol stage: a header a load balancer sends before the
//! client's bytes, naming the client's real address.
//!
//! | file | role |
//! |---|---|
//! | [`header`] | the sans-IO parser: incomplete, done (length, client) or invalid; [`Cidr`] for `--proxy-from` |
//! | [`preamble`] | the stage in a connection's byte path: holds a header split across reads, then hands on what followed it |
//! | [`announce`] | the header a proxy sends upstream (`--upstream-send-proxy`) |

pub mod announce;
pub mod header;
pub mod preamble;

pub use announce::Announce;
pub use header::{parse, Cidr, Parsed, ProxyMode};
pub use preamble::Preamble;
