//! The byte path below the protocol: a socket, and the stages that wrap it.
//!
//! ```text
//!   socket ──► PROXY preamble ──► TLS ──► (the protocol, a layer up)
//!   transport   proxy::preamble    tls::session
//! ```
//!
//! | file | role |
//! |---|---|
//! | [`transport`] | the [`Transport`](transport::Transport) trait a connection reads and writes, and its plain-socket impl |
//! | [`proxy`] | PROXY protocol v1/v2: the header parser and the preamble stage |
//! | [`tls`] | TLS termination: the certificate pair, the rustls stage (feature `tls`) |
//! | [`stack`] | the stages a config asks for, built over an accepted socket |
//!
//! Nothing here knows a protocol, the loop, or the process.

pub mod proxy;
pub mod stack;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
