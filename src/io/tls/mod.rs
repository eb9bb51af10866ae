//! TLS termination in front of every protocol (feature `tls`).
//!
//! * [`config`]: the certificate and key, loaded from PEM files, re-read on
//!   `SIGHUP` ([`TlsConfig::reload`]); shared by every loop.
//! * `client_hello`: the server name (SNI) a client's first bytes carry,
//!   to count the names rustls ignores (an IP address, as `wrk` sends).
//! * [`session`]: the stage in a connection's byte path (socket → PROXY
//!   preamble → **TLS** → protocol), a [`Transport`](crate::io::transport::Transport)
//!   over the socket with rustls inside.
//!
//! Crypto is rustls' `ring` provider: it builds with the Rust toolchain and
//! a C compiler alone. TLS 1.3 and 1.2; ALPN as the protocol asks (`http/1.1`
//! for HTTP); SNI accepted, one certificate chain for every name.

pub(crate) mod client_hello;
pub mod config;
pub mod session;

pub use config::{TlsConfig, TlsError};
pub use session::TlsStream;
