//! The reference: the same echo service written the ordinary tokio way.
//!
//! Owns: a runtime (`current_thread`, or `multi_thread` with N workers), an accept loop
//! that spawns one task per connection, and the graceful drain. Must not: be tuned past
//! what a careful tokio user writes: one task and one 16 KiB buffer per connection,
//! `read` then `write_all`, TCP_NODELAY on.
//!
//! Roles in the drain (mini-redis style): the accept loop listens for SIGTERM, SIGINT and
//! SIGQUIT; on the first it drops the listener and flips a `watch` flag. Every
//! connection task watches the flag between reads: it finishes the `write_all` of what
//! it already read, sends FIN, and discards input until the peer's FIN. Each task holds
//! a clone of an `mpsc::Sender`; when the last one drops, the drain is complete and the
//! accept loop logs `All done.` (or gives up after [`DRAIN_TIMEOUT`]).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

/// Per-connection read buffer: one 16 KiB message fits in one read.
const BUF_LEN: usize = 16 * 1024;
/// How long a drain may wait for peers to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Which tokio runtime serves.
#[derive(Debug, Clone, Copy)]
pub enum Flavor {
    CurrentThread,
    /// `multi_thread` with this many worker threads.
    MultiThread(usize),
}

/// Bind, print the contract's `listening on` line, serve until a quit signal and drain.
pub fn serve(addr: SocketAddr, flavor: Flavor) -> io::Result<()> {
    let mut builder = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread(workers) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(workers.max(1));
            b
        }
    };
    builder.enable_all().build()?.block_on(run(addr))
}

async fn run(addr: SocketAddr) -> io::Result<()> {
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
                    tokio::spawn(echo(stream, quit_rx.clone(), done_tx.clone()));
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

/// One connection: echo until EOF, or until the drain flag flips.
async fn echo(mut stream: TcpStream, mut quit: watch::Receiver<bool>, _done: mpsc::Sender<()>) {
    let mut buf = vec![0u8; BUF_LEN];
    // Created once: re-creating it per read would re-register a waiter per message.
    let quit_flag = quit.changed();
    tokio::pin!(quit_flag);
    loop {
        let n = tokio::select! {
            biased;
            res = stream.read(&mut buf) => match res {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = &mut quit_flag => break,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    // Everything read was written back; now FIN and wait for the peer's.
    if stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
