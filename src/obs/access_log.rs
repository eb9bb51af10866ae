//! `--access-log PATH|-`: one line per HTTP request, and one per finished
//! echo or resp connection, written without the loop ever touching the
//! disk, in the format `--access-log-format` names ([`Format`]):
//!
//! ```text
//! 203.0.113.7 - - [26/Nov/2026:00:26:32 +0000] "GET /hello?x=1 HTTP/1.1" 200 13 "-" "curl/8.5.0"
//! {"time":"2026-11-26T00:26:32.123Z","client":"203.0.113.7:5555","protocol":"http","request":"GET /hello?x=1 HTTP/1.1","status":200,"body_bytes":13,"bytes":115,"referer":null,"user_agent":"curl/8.5.0","duration":0.000041}
//! {"time":"2026-11-26T00:26:32.125Z","client":"127.0.0.1:38072","protocol":"echo","duration":1.204113,"bytes_in":6,"bytes_out":6,"reason":"peer closed","upstream":null}
//! ```
//!
//! * `combined` is nginx's default format, byte for byte (`$remote_addr -
//!   $remote_user [$time_local] "$request" $status $body_bytes_sent
//!   "$http_referer" "$http_user_agent"`), so goaccess, GoAccess-style
//!   dashboards and every tool that reads nginx's logs read it; a request
//!   that could not be parsed logs what came of its first line (`"BLAH"
//!   400`), as nginx does. Times are UTC (`+0000`). It has no line for a
//!   connection without requests (echo, resp).
//! * `json` is one object per line, for every protocol, with the fields of
//!   `HTTP_FIELDS` or `CONN_FIELDS` ([`Field`] says what each is).
//!
//! A request's `duration` runs from the turn that read its first byte to
//! the moment the loop collected it, just after it wrote the response's
//! last byte (to the socket; to its output queue when the client is not
//! reading).
//!
//! Escaping: in `combined`, as nginx, `"`, `\`, control bytes and bytes
//! from 0x7F up are `\xHH`; in `json`, strings are JSON strings (UTF-8
//! passes through; a byte that is not UTF-8 is written `\\xHH`, i.e. the
//! text `\xHH`).
//!
//! # Who writes
//! Each loop formats its lines into its own [`LoopLog`] buffer (no lock, no
//! allocation per line) and hands the buffer to one writer thread once per
//! loop turn, or as soon as it holds [`CHUNK`] bytes, through a bounded
//! channel (`QUEUED_CHUNKS` buffers). The writer thread does the blocking
//! `write(2)`s. When the disk falls behind and the channel is full, a loop
//! keeps buffering up to `MAX_BUFFERED` bytes; beyond that, lines are
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

use crate::base::close::CloseReason;
use crate::base::text::{civil_from_days, push_u64};

/// A loop hands its buffer over once it holds this much.
pub const CHUNK: usize = 64 * 1024;
/// Buffers waiting for the writer thread, at most.
pub(crate) const QUEUED_CHUNKS: usize = 64;
/// Most bytes one loop keeps while the writer is behind; then lines drop.
pub(crate) const MAX_BUFFERED: usize = 256 * 1024;

/// Emptied buffers the writer hands back, so a flush does not allocate.
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// How lines are written: `--access-log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// nginx's `combined`, for HTTP: what goaccess and other log tools read.
    Combined,
    /// One JSON object per line, for every protocol (jq reads it).
    Json,
}

impl Format {
    /// Every format and its name (`--access-log-format NAME`).
    pub const NAMES: [(Format, &'static str); 2] =
        [(Format::Combined, "combined"), (Format::Json, "json")];
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .find(|(_, name)| *name == s)
            .map(|&(format, _)| format)
            .ok_or_else(|| format!("unknown access-log format '{s}'"))
    }
}

/// One fact a line can carry. Declared once, here: the JSON keys, the
/// `combined` layout and the README's table of fields come from this list
/// (`tests/readme.rs` checks the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// When the line was written.
    Time,
    /// The client.
    Client,
    /// `--protocol`.
    Protocol,
    /// The HTTP request line.
    Request,
    /// The HTTP status.
    Status,
    /// Bytes of the response body.
    BodyBytes,
    /// Bytes of the whole response.
    Bytes,
    /// The `Referer` header.
    Referer,
    /// The `User-Agent` header.
    UserAgent,
    /// Seconds the request (or connection) took.
    Duration,
    /// Bytes the connection read.
    BytesIn,
    /// Bytes the connection wrote.
    BytesOut,
    /// Why the connection closed.
    Reason,
    /// Where a forwarded connection went (`--upstream`).
    Upstream,
}

/// What an HTTP request's `json` line holds, in order.
pub(crate) const HTTP_FIELDS: [Field; 10] = [
    Field::Time,
    Field::Client,
    Field::Protocol,
    Field::Request,
    Field::Status,
    Field::BodyBytes,
    Field::Bytes,
    Field::Referer,
    Field::UserAgent,
    Field::Duration,
];

/// What a finished echo or resp connection's `json` line holds, in order.
pub(crate) const CONN_FIELDS: [Field; 8] = [
    Field::Time,
    Field::Client,
    Field::Protocol,
    Field::Duration,
    Field::BytesIn,
    Field::BytesOut,
    Field::Reason,
    Field::Upstream,
];

/// nginx's `combined`, piece by piece: `$remote_addr - $remote_user
/// [$time_local] "$request" $status $body_bytes_sent "$http_referer"
/// "$http_user_agent"`.
const COMBINED: [Piece; 14] = [
    Piece::Field(Field::Client),
    Piece::Text(" - - ["),
    Piece::Field(Field::Time),
    Piece::Text("] \""),
    Piece::Field(Field::Request),
    Piece::Text("\" "),
    Piece::Field(Field::Status),
    Piece::Text(" "),
    Piece::Field(Field::BodyBytes),
    Piece::Text(" \""),
    Piece::Field(Field::Referer),
    Piece::Text("\" \""),
    Piece::Field(Field::UserAgent),
    Piece::Text("\""),
];

enum Piece {
    Text(&'static str),
    Field(Field),
}

impl Field {
    /// Every field, in the README's order.
    pub const ALL: [Field; 14] = [
        Field::Time,
        Field::Client,
        Field::Protocol,
        Field::Request,
        Field::Status,
        Field::BodyBytes,
        Field::Bytes,
        Field::Referer,
        Field::UserAgent,
        Field::Duration,
        Field::BytesIn,
        Field::BytesOut,
        Field::Reason,
        Field::Upstream,
    ];

    /// Its key in a `json` line.
    pub const fn key(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::Client => "client",
            Field::Protocol => "protocol",
            Field::Request => "request",
            Field::Status => "status",
            Field::BodyBytes => "body_bytes",
            Field::Bytes => "bytes",
            Field::Referer => "referer",
            Field::UserAgent => "user_agent",
            Field::Duration => "duration",
            Field::BytesIn => "bytes_in",
            Field::BytesOut => "bytes_out",
            Field::Reason => "reason",
            Field::Upstream => "upstream",
        }
    }

    /// What it says, for the README's table.
    pub const fn meaning(self) -> &'static str {
        match self {
            Field::Time => "when the line was written: UTC, `2026-11-26T00:26:32.123Z` (combined: `[26/Nov/2026:00:26:32 +0000]`)",
            Field::Client => "the client (the one a PROXY header named, if any): `IP:PORT` (combined: the IP)",
            Field::Protocol => "`http`, `echo`, `resp`, or `forward` (`--upstream`)",
            Field::Request => "the request line as received, at most 2 KiB; for a request that could not be parsed, what came of its first line",
            Field::Status => "the response status",
            Field::BodyBytes => "bytes of the response body (nginx's `$body_bytes_sent`)",
            Field::Bytes => "bytes of the whole response: head and body",
            Field::Referer => "the `Referer` header, at most 1 KiB (`null` when absent; combined: `-`)",
            Field::UserAgent => "the `User-Agent` header, at most 1 KiB (`null` when absent; combined: `-`)",
            Field::Duration => "seconds, to the microsecond: for a request, from its first byte to its last byte written; for a connection, its lifetime",
            Field::BytesIn => "bytes the connection read",
            Field::BytesOut => "bytes the connection wrote",
            Field::Reason => "why the connection closed (`peer closed`, `idle timeout`, …)",
            Field::Upstream => "where a forwarded connection went (`--upstream`): `IP:PORT` (`null` for a protocol, or when no upstream took it)",
        }
    }
}

/// What one HTTP request's line says (besides the time and the client).
#[derive(Clone, Copy, Debug)]
pub struct HttpEntry<'a> {
    /// The request line as received.
    pub request: &'a [u8],
    /// The `Referer` value; empty when absent.
    pub referer: &'a [u8],
    /// The `User-Agent` value; empty when absent.
    pub user_agent: &'a [u8],
    /// The response status.
    pub status: u16,
    /// The whole response's bytes.
    pub bytes: u64,
    /// The response body's bytes.
    pub body_bytes: u64,
    /// From the request's first byte to its last byte written.
    pub took: Duration,
}

/// What one finished connection's line says (besides the time and the client).
#[derive(Clone, Copy, Debug)]
pub struct ConnEntry<'a> {
    /// `--protocol`.
    pub protocol: &'a str,
    /// How long it was open.
    pub lifetime: Duration,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Why it closed.
    pub reason: CloseReason,
    /// The upstream it was forwarded to (`--upstream`), if any.
    pub upstream: Option<SocketAddr>,
}

/// A line to write.
#[derive(Clone, Copy)]
enum Entry<'a> {
    Http(&'a HttpEntry<'a>),
    Conn(&'a ConnEntry<'a>),
}

/// Where the lines go: the writer thread and its queue. Clone one per loop.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    reopen: Arc<AtomicBool>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
    pool: Pool,
    format: Format,
}

impl AccessLog {
    /// Open `path` for appending (`-`: standard output) and start the
    /// writer; lines are written in `format`.
    pub fn open(path: &str, format: Format) -> io::Result<Self> {
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
            format,
        })
    }

    /// Reopen the file before the next write (`SIGHUP`, after logrotate).
    pub(crate) fn reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
        // Wake the writer even if nothing is logged for a while.
        let _ = self.tx.try_send(Vec::new());
    }

    /// A loop's own buffer in front of this log.
    pub(crate) fn for_loop(&self) -> LoopLog {
        LoopLog {
            reopen: Arc::clone(&self.reopen),
            tx: self.tx.clone(),
            buf: Vec::with_capacity(CHUNK),
            dropped: 0,
            anchor: (
                Instant::now(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            pool: Arc::clone(&self.pool),
            format: self.format,
            second: (u64::MAX, [0; TIME_TEXT]),
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

/// Longest time text a format writes per second: `26/Nov/2026:00:26:32 +0000`.
const TIME_TEXT: usize = 26;

/// One loop's buffer of formatted lines.
pub struct LoopLog {
    reopen: Arc<AtomicBool>,
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    /// Lines dropped because the writer fell [`MAX_BUFFERED`] behind.
    dropped: u64,
    /// The `Instant` at which the wall clock read the second element
    /// (since the Unix epoch).
    anchor: (Instant, Duration),
    pool: Pool,
    format: Format,
    /// The last second formatted, in the format's style: one format per
    /// second, whatever the request rate.
    second: (u64, [u8; TIME_TEXT]),
    /// The last client formatted (keep-alive requests repeat it).
    client: Option<(SocketAddr, [u8; 64], usize)>,
}

impl LoopLog {
    /// Reopen the file before the next write (`SIGHUP` to a standalone server).
    pub(crate) fn reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Vec::new());
    }

    /// The format lines are written in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// A finished HTTP request, at `at` (when its last byte was written).
    pub fn http(&mut self, at: Instant, client: SocketAddr, entry: &HttpEntry<'_>) {
        self.line(at, client, Entry::Http(entry));
    }

    /// A finished connection of a protocol without requests (echo, resp).
    /// `combined` has no line for it.
    pub fn conn(&mut self, at: Instant, client: SocketAddr, entry: &ConnEntry<'_>) {
        if self.format == Format::Json {
            self.line(at, client, Entry::Conn(entry));
        }
    }

    fn line(&mut self, at: Instant, client: SocketAddr, entry: Entry<'_>) {
        let start = self.buf.len();
        match self.format {
            Format::Combined => {
                for piece in &COMBINED {
                    match piece {
                        Piece::Text(text) => self.buf.extend_from_slice(text.as_bytes()),
                        Piece::Field(field) => self.field(*field, at, client, entry),
                    }
                }
            }
            Format::Json => {
                let fields: &[Field] = match entry {
                    Entry::Http(_) => &HTTP_FIELDS,
                    Entry::Conn(_) => &CONN_FIELDS,
                };
                for (i, &field) in fields.iter().enumerate() {
                    self.buf
                        .extend_from_slice(if i == 0 { b"{\"" } else { b",\"" });
                    self.buf.extend_from_slice(field.key().as_bytes());
                    self.buf.extend_from_slice(b"\":");
                    self.field(field, at, client, entry);
                }
                self.buf.push(b'}');
            }
        }
        self.buf.push(b'\n');
        self.bound(start);
    }

    /// Write one field's value, as the format writes it.
    fn field(&mut self, field: Field, at: Instant, client: SocketAddr, entry: Entry<'_>) {
        let json = self.format == Format::Json;
        let number = |buf: &mut Vec<u8>, n: u64| push_u64(buf, n);
        match (field, entry) {
            (Field::Time, _) => {
                self.quote_if(json);
                self.time(at);
                self.quote_if(json);
            }
            (Field::Client, _) => {
                self.quote_if(json);
                self.client(client);
                self.quote_if(json);
            }
            (Field::Protocol, Entry::Http(_)) => self.buf.extend_from_slice(b"\"http\""),
            (Field::Protocol, Entry::Conn(c)) => self.string(c.protocol.as_bytes()),
            (Field::Request, Entry::Http(h)) => match json {
                true => self.string(h.request),
                false => escape_nginx(&mut self.buf, h.request),
            },
            (Field::Status, Entry::Http(h)) => number(&mut self.buf, u64::from(h.status)),
            (Field::BodyBytes, Entry::Http(h)) => number(&mut self.buf, h.body_bytes),
            (Field::Bytes, Entry::Http(h)) => number(&mut self.buf, h.bytes),
            (Field::Referer, Entry::Http(h)) => self.header(h.referer),
            (Field::UserAgent, Entry::Http(h)) => self.header(h.user_agent),
            (Field::Duration, Entry::Http(h)) => push_seconds(&mut self.buf, h.took),
            (Field::Duration, Entry::Conn(c)) => push_seconds(&mut self.buf, c.lifetime),
            (Field::BytesIn, Entry::Conn(c)) => number(&mut self.buf, c.bytes_in),
            (Field::BytesOut, Entry::Conn(c)) => number(&mut self.buf, c.bytes_out),
            (Field::Reason, Entry::Conn(c)) => {
                let _ = write!(self.buf, "\"{}\"", c.reason); // plain ASCII
            }
            (
                Field::Upstream,
                Entry::Conn(ConnEntry {
                    upstream: Some(to), ..
                }),
            ) => {
                let _ = write!(self.buf, "\"{to}\""); // plain ASCII
            }
            // A field the entry does not have (not in its list).
            _ => self
                .buf
                .extend_from_slice(if json { b"null" } else { b"-" }),
        }
    }

    fn quote_if(&mut self, json: bool) {
        if json {
            self.buf.push(b'"');
        }
    }

    /// A JSON string.
    fn string(&mut self, text: &[u8]) {
        self.buf.push(b'"');
        escape_json(&mut self.buf, text);
        self.buf.push(b'"');
    }

    /// A header's value: absent (empty) is `null` in JSON, `-` in combined.
    fn header(&mut self, value: &[u8]) {
        match (self.format, value.is_empty()) {
            (Format::Json, true) => self.buf.extend_from_slice(b"null"),
            (Format::Json, false) => self.string(value),
            (Format::Combined, true) => self.buf.push(b'-'),
            (Format::Combined, false) => escape_nginx(&mut self.buf, value),
        }
    }

    /// Lines dropped so far because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Hand what is buffered to the writer (once per loop turn). When its
    /// queue is full the lines stay here, up to `MAX_BUFFERED`.
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

    /// The time `at`: `2026-11-26T00:26:32.123Z` (json) or
    /// `26/Nov/2026:00:26:32 +0000` (combined's `$time_local`, in UTC).
    fn time(&mut self, at: Instant) {
        let (anchor, unix) = self.anchor;
        let since = match at.checked_duration_since(anchor) {
            Some(later) => unix + later,
            None => unix.saturating_sub(anchor.saturating_duration_since(at)),
        };
        let secs = since.as_secs();
        if self.second.0 != secs {
            self.second = (secs, format_second(self.format, secs));
        }
        let len = match self.format {
            Format::Json => 19,
            Format::Combined => TIME_TEXT,
        };
        self.buf.extend_from_slice(&self.second.1[..len]);
        if self.format == Format::Json {
            let ms = since.subsec_millis();
            self.buf.extend_from_slice(&[
                b'.',
                b'0' + (ms / 100) as u8,
                b'0' + (ms / 10 % 10) as u8,
                b'0' + (ms % 10) as u8,
                b'Z',
            ]);
        }
    }

    /// The client: `203.0.113.7:5555` (json) or `203.0.113.7` (combined's
    /// `$remote_addr`), formatted once per client in a row.
    fn client(&mut self, client: SocketAddr) {
        if let Some((addr, text, len)) = &self.client {
            if *addr == client {
                self.buf.extend_from_slice(&text[..*len]);
                return;
            }
        }
        let mut text = [0u8; 64];
        let mut cursor = io::Cursor::new(&mut text[..]);
        let _ = match self.format {
            Format::Json => write!(cursor, "{client}"),
            Format::Combined => write!(cursor, "{}", client.ip()),
        };
        let len = cursor.position() as usize;
        self.buf.extend_from_slice(&text[..len]);
        self.client = Some((client, text, len));
    }
}

/// A second since the Unix epoch in `format`'s style (the JSON one is the
/// first 19 bytes: milliseconds and `Z` follow).
fn format_second(format: Format, secs: u64) -> [u8; TIME_TEXT] {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day) = civil_from_days(secs / 86_400);
    let t = secs % 86_400;
    let (h, m, s) = (t / 3600, t / 60 % 60, t % 60);
    let mut text = [0u8; TIME_TEXT];
    let _ = match format {
        Format::Json => write!(
            &mut text[..],
            "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}"
        ),
        Format::Combined => write!(
            &mut text[..],
            "{day:02}/{}/{year:04}:{h:02}:{m:02}:{s:02} +0000",
            MONTHS[(month as usize + 11) % 12]
        ),
    };
    text
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

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Append `text` as nginx's log does: `"`, `\`, control bytes and bytes
/// from 0x7F up as `\xHH`.
fn escape_nginx(out: &mut Vec<u8>, text: &[u8]) {
    if !text.iter().any(|&b| NGINX_ESCAPES[usize::from(b)]) {
        out.extend_from_slice(text); // the usual request line: as it is
        return;
    }
    for &b in text {
        if NGINX_ESCAPES[usize::from(b)] {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
}

/// The bytes nginx's log escapes (`ngx_http_log_escape`).
const NGINX_ESCAPES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b >= 0x7f || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};

/// Append `text` as the inside of a JSON string: UTF-8 passes through,
/// `"` and `\` are escaped, control bytes are `\u00HH`, and a byte that is
/// not UTF-8 is the text `\xHH` (written `\\xHH`), so a line is always
/// valid JSON.
fn escape_json(out: &mut Vec<u8>, text: &[u8]) {
    let plain = |b: u8| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\';
    if text.iter().all(|&b| plain(b)) {
        out.extend_from_slice(text); // printable ASCII, as it is
        return;
    }
    for chunk in text.utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0..=0x1f => out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]),
                _ => out.push(b),
            }
        }
        for &b in chunk.invalid() {
            out.extend_from_slice(&[
                b'\\',
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with_queue(n: usize, format: Format) -> (LoopLog, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::sync_channel(n);
        let anchor = (Instant::now(), Duration::from_millis(1_764_116_792_123));
        let log = LoopLog {
            reopen: Arc::default(),
            tx,
            buf: Vec::new(),
            dropped: 0,
            anchor,
            pool: Arc::default(),
            format,
            second: (u64::MAX, [0; TIME_TEXT]),
            client: None,
        };
        (log, rx)
    }

    fn written(mut log: LoopLog, rx: &mpsc::Receiver<Vec<u8>>) -> String {
        log.flush();
        String::from_utf8(rx.try_recv().unwrap_or_default()).unwrap()
    }

    const GET: HttpEntry<'static> = HttpEntry {
        request: b"GET /a\"b\\c\x01\xc3\xa9 HTTP/1.1",
        referer: b"http://r.example/",
        user_agent: b"",
        status: 200,
        bytes: 78,
        body_bytes: 13,
        took: Duration::from_micros(41),
    };

    const ECHO: ConnEntry<'static> = ConnEntry {
        upstream: None,
        protocol: "echo",
        lifetime: Duration::from_millis(1204),
        bytes_in: 6,
        bytes_out: 6,
        reason: CloseReason::PeerClosed,
    };

    /// Byte for byte what nginx writes for the same request
    /// (`log_format combined`, escaping included: nginx logged
    /// `"GET /q\x22uote\x01\xC3\xA9 HTTP/1.1"` for that target).
    #[test]
    fn combined_is_nginx_s_layout_and_escaping() {
        let (mut log, rx) = log_with_queue(4, Format::Combined);
        let at = log.anchor.0;
        let client = "203.0.113.7:5555".parse().unwrap();
        log.http(at, client, &GET);
        log.conn(at, client, &ECHO); // no line: combined is HTTP's
        let v6 = "[2001:db8::1]:443".parse().unwrap();
        let bad = HttpEntry {
            request: b"BLAH",
            status: 400,
            referer: b"",
            ..GET
        };
        log.http(at + Duration::from_secs(1), v6, &bad);
        assert_eq!(
            written(log, &rx),
            "203.0.113.7 - - [26/Nov/2025:00:26:32 +0000] \"GET /a\\x22b\\x5Cc\\x01\\xC3\\xA9 HTTP/1.1\" 200 13 \"http://r.example/\" \"-\"\n\
             2001:db8::1 - - [26/Nov/2025:00:26:33 +0000] \"BLAH\" 400 13 \"-\" \"-\"\n"
        );
    }

    #[test]
    fn json_is_one_object_per_line_for_requests_and_connections() {
        let (mut log, rx) = log_with_queue(4, Format::Json);
        let at = log.anchor.0;
        let client = "203.0.113.7:5555".parse().unwrap();
        log.http(at, client, &GET);
        let not_utf8 = HttpEntry {
            request: b"\xff\xfe\"x",
            user_agent: b"a\tb",
            ..GET
        };
        log.http(at, client, &not_utf8);
        log.conn(at + Duration::from_secs(1), client, &ECHO);
        let text = written(log, &rx);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"time":"2025-11-26T00:26:32.123Z","client":"203.0.113.7:5555","protocol":"http","request":"GET /a\"b\\c\u0001é HTTP/1.1","status":200,"body_bytes":13,"bytes":78,"referer":"http://r.example/","user_agent":null,"duration":0.000041}"#
        );
        assert_eq!(
            lines[2],
            r#"{"time":"2025-11-26T00:26:33.123Z","client":"203.0.113.7:5555","protocol":"echo","duration":1.204000,"bytes_in":6,"bytes_out":6,"reason":"peer closed","upstream":null}"#
        );
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line).expect(line);
            assert!(v.is_object());
        }
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["request"], "\\xFF\\xFE\"x", "bytes that are not UTF-8");
        assert_eq!(v["user_agent"], "a\tb");
        let keys: Vec<&str> = HTTP_FIELDS.iter().map(|f| f.key()).collect();
        let got: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        assert_eq!(got, keys_sorted, "the fields of HTTP_FIELDS, each once");
    }

    #[test]
    fn when_the_writer_falls_behind_lines_wait_then_drop_and_are_counted() {
        let (mut log, rx) = log_with_queue(1, Format::Combined);
        let at = log.anchor.0;
        let client = "127.0.0.1:1".parse().unwrap();
        let line = [b"GET /".as_slice(), &[b'a'; 1000], b" HTTP/1.1"].concat();
        let entry = HttpEntry {
            request: &line,
            ..GET
        };
        let line_len = {
            let (mut one, _rx) = log_with_queue(1, Format::Combined);
            one.http(at, client, &entry);
            one.buf.len()
        };
        let mut lines = 0u64;
        while log.dropped() == 0 {
            log.http(at, client, &entry);
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

    #[test]
    fn every_field_is_in_a_list_and_has_a_key_and_a_meaning() {
        for field in Field::ALL {
            assert!(
                HTTP_FIELDS.contains(&field) || CONN_FIELDS.contains(&field),
                "{field:?} is on no line"
            );
            assert!(!field.key().is_empty() && !field.meaning().is_empty());
        }
        let combined: Vec<Field> = COMBINED
            .iter()
            .filter_map(|p| match p {
                Piece::Field(f) => Some(*f),
                Piece::Text(_) => None,
            })
            .collect();
        assert!(combined.iter().all(|f| HTTP_FIELDS.contains(f)));
    }
}
