//! RSS per idle connection, and the drain of idle connections.
//!
//! Owns: one run per server on a fresh process: RSS after start, then N connections that
//! each echoed one byte and sit idle, RSS again; (after − before) / N is the figure.
//! Then SIGTERM with the N connections still open: each must receive the server's FIN
//! (read returns 0), and the server must exit 0 once they are closed. Kernel socket
//! buffers are not in RSS: this is what the server process itself keeps per connection.
//! Must not: run with more connections than the file-descriptor limit allows (the
//! harness raises its soft limit first; the server inherits it).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::pin::Layout;
use crate::server::{ServerKind, ServerProc};

/// Pause before reading RSS, so worker threads settle.
const SETTLE: Duration = Duration::from_millis(200);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What one idle-memory run measured.
#[derive(Debug, Clone, Default)]
pub struct IdleResult {
    /// Connections that echoed their byte and were held.
    pub conns: usize,
    pub rss_before: u64,
    pub rss_after: u64,
    /// Contract violations seen (no echo, no FIN after SIGTERM, bad exit).
    pub errors: Vec<String>,
}

impl IdleResult {
    /// (RSS with the idle connections − RSS before) / connections.
    pub fn bytes_per_conn(&self) -> f64 {
        (self.rss_after as f64 - self.rss_before as f64) / self.conns.max(1) as f64
    }
}

/// Start a fresh `kind`, hold `conns` idle connections, measure, drain, stop.
pub fn run(
    kind: ServerKind,
    layout: &Layout,
    mt_threads: usize,
    conns: usize,
) -> Result<IdleResult, String> {
    let server = ServerProc::start(kind, layout, mt_threads)?;
    std::thread::sleep(SETTLE);
    let mut result = IdleResult {
        rss_before: server.rss_bytes().unwrap_or(0),
        ..IdleResult::default()
    };
    let mut streams = Vec::with_capacity(conns);
    for i in 0..conns {
        match echo_one_byte(&server, i) {
            Ok(stream) => streams.push(stream),
            Err(e) => {
                result
                    .errors
                    .push(format!("idle connection {i} of {conns}: {e}"));
                break;
            }
        }
    }
    result.conns = streams.len();
    std::thread::sleep(SETTLE);
    result.rss_after = server.rss_bytes().unwrap_or(0);

    server.signal(libc::SIGTERM);
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut byte = [0u8; 1];
        let problem = match stream.read(&mut byte) {
            Ok(0) => continue,
            Ok(_) => "received bytes after SIGTERM that were never sent".to_string(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                format!("no FIN within {}s of SIGTERM", IO_TIMEOUT.as_secs())
            }
            Err(e) => format!("error instead of FIN after SIGTERM: {e}"),
        };
        result.errors.push(format!(
            "idle connection {i}: {problem} (further connections not checked)"
        ));
        break;
    }
    drop(streams);
    if let Err(e) = server.wait_exit() {
        result.errors.push(e);
    }
    Ok(result)
}

/// Connect, send one byte, expect it back; the connection is then held idle.
fn echo_one_byte(server: &ServerProc, i: usize) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&server.addr, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let sent = [(i % 251) as u8];
    stream.write_all(&sent)?;
    let mut got = [0u8; 1];
    stream.read_exact(&mut got)?;
    if got != sent {
        return Err(std::io::Error::other(format!(
            "echoed {:#04x} for {:#04x}",
            got[0], sent[0]
        )));
    }
    Ok(stream)
}
