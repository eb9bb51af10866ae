//! The certificate and key a TLS listener serves, loaded from PEM files and
//! re-loadable while the server runs.
//!
//! [`TlsConfig`] owns the file paths and the current `rustls::ServerConfig`.
//! Loops read the current config only when they accept a connection (one
//! uncontended read lock per accept, none per message); a reload (SIGHUP)
//! builds a complete new config first and swaps it in only if it is good,
//! so a bad pair on disk never stops the server serving the old one. Live
//! connections keep the config they were accepted with.
//!
//! This module must not do I/O on connections: that is
//! [`session`](super::session)'s job.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Why a certificate/key pair could not be used. `Display` is one line that
/// names the file and the reason.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read or parsed as PEM.
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    NoCertificate(PathBuf),
    /// The key file holds no private key (PKCS#8, SEC1 or PKCS#1).
    NoKey(PathBuf),
    /// rustls refused the pair: the key does not match the certificate, or
    /// the key type is unsupported.
    Refused {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// rustls' reason.
        why: String,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, why } => write!(f, "{}: cannot read: {why}", path.display()),
            TlsError::NoCertificate(path) => {
                write!(f, "{}: no PEM CERTIFICATE in the file", path.display())
            }
            TlsError::NoKey(path) => write!(
                f,
                "{}: no private key in the file (PEM PKCS#8, SEC1 EC or PKCS#1 RSA)",
                path.display()
            ),
            TlsError::Refused { key, cert, why } => write!(
                f,
                "{}: key cannot be used with certificate {}: {why}",
                key.display(),
                cert.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// A sane handshake limit for [`TlsConfig::load`] (the default of
/// `--tls-handshake-timeout`).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS settings shared by every loop of a process.
#[derive(Debug)]
pub struct TlsConfig {
    cert: PathBuf,
    key: PathBuf,
    alpn: Vec<Vec<u8>>,
    /// A handshake not finished this long after accept is closed (`None`:
    /// no limit of its own; the idle timeout still applies).
    pub handshake_timeout: Option<Duration>,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsConfig {
    /// Load `cert` (PEM chain, leaf first) and `key`, offering the ALPN
    /// protocols in `alpn` (e.g. `http/1.1`; empty: no ALPN).
    pub fn load(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        alpn: &[&[u8]],
        handshake_timeout: Option<Duration>,
    ) -> Result<Arc<Self>, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let server = build(&cert, &key, &alpn)?;
        Ok(Arc::new(Self {
            cert,
            key,
            alpn,
            handshake_timeout,
            current: RwLock::new(server),
        }))
    }

    /// Re-read the files. On success new handshakes use the new pair; on
    /// failure the old pair stays in use and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = build(&self.cert, &self.key, &self.alpn)?;
        // A poisoned lock only means a reader panicked; the Arc inside is whole.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The config new connections are accepted with.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The certificate file, for logs.
    pub(crate) fn cert_path(&self) -> &Path {
        &self.cert
    }
}

/// rustls with `ring`, TLS 1.3 and 1.2, no client certificates.
fn build(cert: &Path, key: &Path, alpn: &[Vec<u8>]) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path, e: pem::Error| TlsError::Read {
        path: path.to_path_buf(),
        why: match e {
            pem::Error::Io(io) => io.to_string(),
            other => other.to_string(),
        },
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let private = match PrivateKeyDer::from_pem_file(key) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => return Err(TlsError::NoKey(key.to_path_buf())),
        Err(e) => return Err(read(key, e)),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let refused = |e: rustls::Error| TlsError::Refused {
        key: key.to_path_buf(),
        cert: cert.to_path_buf(),
        why: e.to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(refused)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(refused)?;
    config.alpn_protocols = alpn.to_vec();
    // No session tickets or resumption state beyond rustls' small default
    // cache; no 0-RTT (replayable early data is the protocol's problem, and
    // none of ours is ready for it).
    Ok(Arc::new(config))
}
