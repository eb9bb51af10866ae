//! `--access-log PATH|-`: one line per HTTP response, and one per finished
//! echo or resp connection, written without the loop ever touching the disk.
//!
//! ```text
//! 2026-11-26T00:26:32.123Z 203.0.113.7:5555 http "GET /hello?x=1" 200 78 0.000041
//! 2026-11-26T00:26:32.125Z 127.0.0.1:38072 echo conn 1.204113 6 6 "peer closed"
//! ```
//! `TIME CLIENT http "METHOD TARGET" STATUS BYTES SECONDS` (seconds from the
//! request head's first byte to its response) and
//! `TIME CLIENT PROTOCOL conn SECONDS IN OUT "CLOSE REASON"`. TIME is UTC
//! with milliseconds; CLIENT is the address a PROXY header named when there
//! was one; quotes, backslashes and control bytes in a target are `\xHH`.
//!
//! # Who writes
//! Each loop formats its lines into its own [`LoopLog`] buffer (no lock, no
//! allocation per line) and hands the buffer to one writer thread once per
//! loop turn, or as soon as it holds [`CHUNK`] bytes, through a bounded
//! channel ([`QUEUED_CHUNKS`] buffers). The writer thread does the blocking
//! `write(2)`s. When the disk falls behind and the channel is full, a loop
//! keeps buffering up to [`MAX_BUFFERED`] bytes; beyond that, lines are
//! dropped and counted (`tcp_reactor_access_log_dropped_total`), never
//! waited for. `SIGHUP` makes the writer reopen the path (after logrotate
//! moved the file); `-` is standard output.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::reactor::conn::CloseReason;
use crate::text::push_u64;

/// A loop hands its buffer over once it holds this much.
pub const CHUNK: usize = 64 * 1024;
/// Buffers waiting for the writer thread, at most.
pub const QUEUED_CHUNKS: usize = 64;
/// Most bytes one loop keeps while the writer is behind; then lines drop.
pub const MAX_BUFFERED: usize = 256 * 1024;

/// Emptied buffers the writer hands back, so a flush does not allocate.
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// Where the lines go: the writer thread and its queue. Clone one per loop.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    reopen: Arc<AtomicBool>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
    pool: Pool,
}

impl AccessLog {
    /// Open `path` for appending (`-`: standard output) and start the writer.
    pub fn open(path: &str) -> io::Result<Self> {
        let target = if path == "-" {
            None
        } else {
            Some(PathBuf::from(path))
        };
        let mut out = open_target(target.as_ref())?;
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUED_CHUNKS);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&reopen);
        let pool: Pool = Arc::default();
        let returns = Arc::clone(&pool);
        let writer = thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                for mut chunk in rx {
                    if flag.swap(false, Ordering::SeqCst) {
                        match open_target(target.as_ref()) {
                            Ok(reopened) => out = reopened,
                            Err(e) => {
                                log::warn!("access log: cannot reopen: {e}; keeping the old file")
                            }
                        }
                    }
                    if let Err(e) = out.write_all(&chunk).and_then(|()| out.flush()) {
                        log::warn!("access log: write failed: {e}");
                    }
                    chunk.clear();
                    if let Ok(mut pool) = returns.lock() {
                        if pool.len() < QUEUED_CHUNKS && chunk.capacity() > 0 {
                            pool.push(chunk);
                        }
                    }
                }
            })?;
        Ok(Self {
            tx,
            reopen,
            writer: Arc::new(Mutex::new(Some(writer))),
            pool,
        })
    }

    /// Reopen the file before the next write (`SIGHUP`, after logrotate).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
        // Wake the writer even if nothing is logged for a while.
        let _ = self.tx.try_send(Vec::new());
    }

    /// A loop's own buffer in front of this log.
    pub fn for_loop(&self) -> LoopLog {
        LoopLog {
            reopen: Arc::clone(&self.reopen),
            tx: self.tx.clone(),
            buf: Vec::with_capacity(CHUNK),
            dropped: 0,
            anchor: (Instant::now(), SystemTime::now()),
            pool: Arc::clone(&self.pool),
            second: (u64::MAX, [0; 19]),
            client: None,
        }
    }

    /// Wait until every line handed over is written. Call once every loop
    /// (every [`LoopLog`]) is gone; later lines are lost.
    pub fn finish(self) {
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        drop(self.tx);
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

fn open_target(path: Option<&PathBuf>) -> io::Result<Box<dyn Write + Send>> {
    Ok(match path {
        None => Box::new(io::stdout()),
        Some(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
    })
}

/// One loop's buffer of formatted lines.
pub struct LoopLog {
    reopen: Arc<AtomicBool>,
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    /// Lines dropped because the writer fell [`MAX_BUFFERED`] behind.
    dropped: u64,
    /// A wall-clock reading and the `Instant` it was taken at.
    anchor: (Instant, SystemTime),
    pool: Pool,
    /// The last second formatted (`2026-11-26T00:26:32`): one format per
    /// second, whatever the request rate.
    second: (u64, [u8; 19]),
    /// The last client formatted (keep-alive requests repeat it).
    client: Option<(SocketAddr, [u8; 64], usize)>,
}

impl LoopLog {
    /// Reopen the file before the next write (`SIGHUP` to a standalone server).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Vec::new());
    }

    /// A finished HTTP response.
    #[allow(clippy::too_many_arguments)]
    pub fn http(
        &mut self,
        at: Instant,
        client: SocketAddr,
        method: &str,
        target: &str,
        status: u16,
        bytes: u64,
        took: Duration,
    ) {
        let start = self.buf.len();
        self.time(at);
        self.client(client);
        self.buf.extend_from_slice(b" http \"");
        escape(&mut self.buf, method);
        self.buf.push(b' ');
        escape(&mut self.buf, target);
        self.buf.extend_from_slice(b"\" ");
        push_u64(&mut self.buf, u64::from(status));
        self.buf.push(b' ');
        push_u64(&mut self.buf, bytes);
        self.buf.push(b' ');
        push_seconds(&mut self.buf, took);
        self.buf.push(b'\n');
        self.bound(start);
    }

    /// A finished connection of a protocol without requests (echo, resp).
    #[allow(clippy::too_many_arguments)]
    pub fn conn(
        &mut self,
        at: Instant,
        client: SocketAddr,
        protocol: &str,
        lifetime: Duration,
        bytes_in: u64,
        bytes_out: u64,
        reason: CloseReason,
    ) {
        let start = self.buf.len();
        self.time(at);
        self.client(client);
        let _ = write!(self.buf, " {protocol} conn ");
        push_seconds(&mut self.buf, lifetime);
        let _ = writeln!(self.buf, " {bytes_in} {bytes_out} \"{reason}\"");
        self.bound(start);
    }

    /// Lines dropped so far because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Hand what is buffered to the writer (once per loop turn). When its
    /// queue is full the lines stay here, up to [`MAX_BUFFERED`].
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let spare = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        let spare = spare.unwrap_or_else(|| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(&mut self.buf, spare);
        match self.tx.try_send(chunk) {
            Ok(()) => {}
            Err(TrySendError::Full(chunk) | TrySendError::Disconnected(chunk)) => {
                self.buf = chunk;
            }
        }
    }

    /// Keep the line just written only if the buffer stays in bounds;
    /// hand a full chunk over at once.
    fn bound(&mut self, start: usize) {
        if self.buf.len() > MAX_BUFFERED {
            self.buf.truncate(start);
            if self.dropped == 0 {
                log::warn!(
                    "access log: the writer is {MAX_BUFFERED} B behind; dropping lines (counted)"
                );
            }
            self.dropped += 1;
        } else if self.buf.len() >= CHUNK {
            self.flush();
        }
    }

    /// `2026-11-26T00:26:32.123Z` for `at`.
    fn time(&mut self, at: Instant) {
        let (anchor, wall) = self.anchor;
        let wall = match at.checked_duration_since(anchor) {
            Some(later) => wall + later,
            None => wall - anchor.saturating_duration_since(at),
        };
        let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        if self.second.0 != secs {
            let (year, month, day) = crate::text::civil_from_days(secs / 86_400);
            let t = secs % 86_400;
            let mut text = [0u8; 19];
            let _ = write!(
                &mut text[..],
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
                t / 3600,
                t / 60 % 60,
                t % 60,
            );
            self.second = (secs, text);
        }
        self.buf.extend_from_slice(&self.second.1);
        let ms = since.subsec_millis();
        self.buf.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    }

    /// ` 203.0.113.7:5555`, formatted once per client in a row.
    fn client(&mut self, client: SocketAddr) {
        self.buf.push(b' ');
        if let Some((addr, text, len)) = &self.client {
            if *addr == client {
                self.buf.extend_from_slice(&text[..*len]);
                return;
            }
        }
        let mut text = [0u8; 64];
        let mut cursor = io::Cursor::new(&mut text[..]);
        let _ = write!(cursor, "{client}");
        let len = cursor.position() as usize;
        self.buf.extend_from_slice(&text[..len]);
        self.client = Some((client, text, len));
    }
}

/// `1.204113`: seconds with microseconds.
fn push_seconds(out: &mut Vec<u8>, d: Duration) {
    push_u64(out, d.as_secs());
    let us = d.subsec_micros();
    out.push(b'.');
    let mut frac = [b'0'; 6];
    let mut v = us;
    for slot in frac.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&frac);
}

/// Append `text` with `"`, `\` and control bytes as `\xHH`.
fn escape(out: &mut Vec<u8>, text: &str) {
    for &b in text.as_bytes() {
        if b < 0x20 || b == 0x7f || b == b'"' || b == b'\\' {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with_queue(n: usize) -> (LoopLog, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::sync_channel(n);
        let anchor = (
            Instant::now(),
            UNIX_EPOCH + Duration::from_millis(1_764_116_792_123),
        );
        let log = LoopLog {
            reopen: Arc::default(),
            tx,
            buf: Vec::new(),
            dropped: 0,
            anchor,
            pool: Arc::default(),
            second: (u64::MAX, [0; 19]),
            client: None,
        };
        (log, rx)
    }

    #[test]
    fn an_http_line_has_time_client_request_status_bytes_and_duration() {
        let (mut log, rx) = log_with_queue(4);
        let at = log.anchor.0;
        let client = "203.0.113.7:5555".parse().unwrap();
        log.http(
            at,
            client,
            "GET",
            "/a\"b",
            200,
            78,
            Duration::from_micros(41),
        );
        log.conn(
            at + Duration::from_secs(1),
            client,
            "echo",
            Duration::from_millis(1204),
            6,
            6,
            CloseReason::PeerClosed,
        );
        log.flush();
        let text = String::from_utf8(rx.try_recv().unwrap()).unwrap();
        assert_eq!(
            text,
            "2025-11-26T00:26:32.123Z 203.0.113.7:5555 http \"GET /a\\x22b\" 200 78 0.000041\n\
             2025-11-26T00:26:33.123Z 203.0.113.7:5555 echo conn 1.204000 6 6 \"peer closed\"\n"
        );
    }

    #[test]
    fn when_the_writer_falls_behind_lines_wait_then_drop_and_are_counted() {
        let (mut log, rx) = log_with_queue(1);
        let at = log.anchor.0;
        let client = "127.0.0.1:1".parse().unwrap();
        let path = "/".repeat(1000);
        let line_len = {
            let (mut one, _rx) = log_with_queue(1);
            one.http(at, client, "GET", &path, 200, 1, Duration::ZERO);
            one.buf.len()
        };
        let mut lines = 0u64;
        while log.dropped() == 0 {
            log.http(at, client, "GET", &path, 200, 1, Duration::ZERO);
            log.flush(); // the queue holds one chunk; nobody reads it
            lines += 1;
            assert!(lines < 10_000, "never dropped");
        }
        assert!(log.buf.len() <= MAX_BUFFERED);
        // One chunk went to the queue, the rest waited here up to the bound.
        let queued = rx.try_recv().unwrap().len();
        assert!(queued > 0 && rx.try_recv().is_err());
        assert!(log.buf.len() + line_len > MAX_BUFFERED, "dropped too early");
        assert_eq!(log.dropped(), 1);
    }
}
