//! TLS test helpers: certificates made at test time (rcgen, ECDSA P-256,
//! names `localhost` and `127.0.0.1`), and a blocking rustls client that
//! trusts exactly one of them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A certificate and its key, as PEM files in a fresh directory.
pub struct Certs {
    /// The directory holding both files (removed on drop).
    pub dir: PathBuf,
    /// `cert.pem`.
    pub cert: PathBuf,
    /// `key.pem` (PKCS#8).
    pub key: PathBuf,
    /// The certificate's PEM text, for clients to trust.
    pub cert_pem: String,
}

impl Certs {
    /// A new self-signed pair, written to a directory of its own.
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tcp-reactor-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut certs = Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
            cert_pem: String::new(),
        };
        certs.regenerate();
        certs
    }

    /// Write a new pair over the files (what an operator's renewal does).
    pub fn regenerate(&mut self) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("rcgen");
        self.cert_pem = made.cert.pem();
        std::fs::write(&self.cert, &self.cert_pem).expect("write cert");
        std::fs::write(&self.key, made.key_pair.serialize_pem()).expect("write key");
    }

    /// `--tls-cert … --tls-key …`, as strings for a command line.
    pub fn args(&self) -> [String; 4] {
        [
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// A client config trusting only this certificate (TLS 1.3 and 1.2).
    pub fn client(&self) -> Arc<ClientConfig> {
        client_config(&self.cert_pem, None, &[])
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client config trusting `cert_pem`, limited to `version` if given,
/// offering `alpn`.
pub fn client_config(
    cert_pem: &str,
    version: Option<&'static rustls::SupportedProtocolVersion>,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.expect("PEM")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match version {
        Some(v) => vec![v],
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A blocking TLS client over loopback.
pub type Client = StreamOwned<ClientConnection, TcpStream>;

/// Connect and finish the handshake (for `localhost`), with a 10 s read timeout.
pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Client> {
    let tcp = TcpStream::connect(addr)?;
    connect_over(tcp, config)
}

/// The handshake over a socket the caller opened (after a PROXY header, say).
pub fn connect_over(tcp: TcpStream, config: Arc<ClientConfig>) -> std::io::Result<Client> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("localhost").expect("name");
    let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Send `msg` and read back exactly as many bytes; assert they are `msg`.
pub fn echo(stream: &mut Client, msg: &[u8]) {
    stream.write_all(msg).expect("write");
    stream.flush().expect("flush");
    let mut got = vec![0; msg.len()];
    stream.read_exact(&mut got).expect("read echo");
    assert!(got == msg, "echo differs");
}

/// `openssl s_client` to `addr`, trusting only `certs`, with its stdin,
/// stdout and stderr piped; `extra`: more flags (`-quiet`, `-tls1_2`…).
pub fn s_client(addr: SocketAddr, certs: &Certs, extra: &[&str]) -> std::process::Child {
    use std::process::{Command, Stdio};
    Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "localhost"])
        .args(extra)
        .arg("-CAfile")
        .arg(&certs.cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client")
}
