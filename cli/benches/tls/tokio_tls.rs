//! The reference: the TLS echo service written the ordinary tokio way.
//!
//! Owns: a `current_thread` runtime, an accept loop that spawns one task per
//! connection, the tokio-rustls handshake, the echo and the graceful drain.
//! Must not: be tuned past what a careful tokio-rustls user writes: one task
//! and one 16 KiB buffer per connection, `read` then `write_all` + `flush`,
//! TCP_NODELAY on.
//!
//! Same TLS as tcp-reactor, byte for byte: the `rustls::ServerConfig` comes
//! from `tcp_reactor::io::tls::TlsConfig::load` (rustls 0.23 with `ring`, TLS 1.3
//! and 1.2, the default cipher-suite list, no ALPN for echo), so the two
//! servers differ only in what drives rustls.
//!
//! Drain (like benches/echo/tokio_echo.rs): on SIGTERM/SIGINT/SIGQUIT the
//! listener is dropped and a `watch` flag flips; every task finishes the
//! echo of what it read, sends close_notify and FIN (`shutdown`), and reads
//! until the peer's EOF (bounded). When the last task's `mpsc::Sender`
//! drops, `All done.` is logged and the process exits 0.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

/// Per-connection plaintext buffer: one 16 KiB message fits in one read.
const BUF_LEN: usize = 16 * 1024;
/// A handshake not done by then is dropped (tcp-reactor's default, too).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a drain may wait for peers to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Load the pair, bind, print `listening on ADDR`, serve until a quit signal, drain.
pub fn serve(addr: SocketAddr, cert: &Path, key: &Path) -> io::Result<()> {
    let tls = tcp_reactor::io::tls::TlsConfig::load(cert, key, &[], None)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let acceptor = TlsAcceptor::from(tls.current());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(addr, acceptor))
}

async fn run(addr: SocketAddr, acceptor: TlsAcceptor) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    log::info!("listening on {}", listener.local_addr()?);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let (quit_tx, quit_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(echo(stream, acceptor.clone(), quit_rx.clone(), done_tx.clone()));
                }
                // EMFILE and friends: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = quit.recv() => break,
        }
    }
    log::info!("recv quit signal");
    drop(listener);
    let _ = quit_tx.send(true);
    drop(done_tx);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, done_rx.recv()).await;
    log::info!("All done.");
    Ok(())
}

/// One connection: handshake, echo until EOF or the drain flag, close_notify.
async fn echo(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    mut quit: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        _ => return,
    };
    let mut buf = vec![0u8; BUF_LEN];
    let quit_flag = quit.changed();
    tokio::pin!(quit_flag);
    loop {
        let n = tokio::select! {
            biased;
            res = tls.read(&mut buf) => match res {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = &mut quit_flag => break,
        };
        // write_all may leave records inside rustls; flush sends them.
        if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
            return;
        }
    }
    // close_notify, then FIN; then wait (bounded) for the peer's EOF.
    if tls.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Ok(n) = tls.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
