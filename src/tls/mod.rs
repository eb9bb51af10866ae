//! TLS termination in front of every protocol (feature `tls`).
//!
//! * [`config`]: the certificate and key, loaded from PEM files, re-read on
//!   `SIGHUP` ([`TlsConfig::reload`]); shared by every loop.
//! * [`session`]: the stage in a connection's byte path (socket → PROXY
//!   preamble → **TLS** → protocol), a [`Transport`](crate::reactor::conn::Transport)
//!   over the socket with rustls inside.
//!
//! Crypto is rustls' `ring` provider: it builds with the Rust toolchain and
//! a C compiler alone. TLS 1.3 and 1.2; ALPN as the protocol asks (`http/1.1`
//! for HTTP); SNI accepted, one certificate chain for every name.

pub mod config;
pub mod session;

pub use config::{TlsConfig, TlsError, DEFAULT_HANDSHAKE_TIMEOUT};
pub use session::TlsStream;
