//! HTTP/1.1: a minimal, correct responder, sans-IO.
//!
//! Owns request framing (heads parsed with `httparse`, bodies counted by
//! `Content-Length` or decoded from chunks by [`chunked`]),
//! keep-alive rules, the few routes, and the limits that
//! keep a connection bounded. It must not buffer on its own: a partial head,
//! or body bytes held back before a response is committed, stay in the
//! connection's input queue (bounded by `Limits::max_pending_input`).
//!
//! # Routes
//! * `GET` / `HEAD` of any path: `200 OK`, `text/plain`, `Hello, World!`
//!   (`HEAD`: same head, no body).
//! * `POST /echo`: `200 OK` with the request body echoed back (a chunked
//!   body is echoed chunked, chunk for chunk: see [`chunked`]).
//! * `POST` elsewhere: `404`; any other method: `405` with
//!   `Allow: GET, HEAD, POST`. Their bodies are read and discarded, and the
//!   connection stays usable.
//!
//! # One request's life
//! ```text
//!   Idle ──first byte──► Head { since } ──head parsed──► Body { committed: false }
//!    ▲                     │ line over 8 KiB: 414, head: 431,      │ body complete, or
//!    │                     │ malformed, bad Host: 400, HTTP/2: 505 │ BODY_HOLD bytes here:
//!    │                     │ TE not chunked: 501, too big: 413,    │ write the response head
//!    │                     │ --header-timeout passed: 408          ▼ (chunked: Chunked { .. })
//!    │                     ▼                                   Body { committed: true }
//!    │                   Done (close)                              │ echo or skip body bytes
//!    └──────────────── keep-alive ◄──── body done ─────────────────┘──► Done (close)
//! ```
//!
//! # Streaming, and why the response head waits a little
//! A body is never collected: once the response head is out, body bytes are
//! echoed (or skipped) as they arrive and consumed at once. The head waits
//! until the whole body is here **or** `BODY_HOLD` bytes of it are: small
//! requests then get their whole response in one write, and a graceful
//! drain that starts while such a request is in flight can still put
//! `Connection: close` on its response. A larger body commits the head
//! early; if a drain starts after that, the response completes without the
//! header and the connection closes after it. A chunked body is held the
//! same way, and its first `BODY_HOLD` bytes are decoded ahead (without
//! consuming them), so framing errors and an excess over `--max-body`
//! found there still get 400/413; found later, the response is cut short
//! (no last chunk) and the connection closed.
//!
//! # Time
//! `now` is passed in. The `Date` header is derived from it and a
//! [`DateAnchor`] (wall clock and `Instant` read together, once), and its
//! formatted text is cached per second per thread, so it costs a compare
//! per response. The header timeout runs from the first byte of a request
//! head; before that byte (a fresh or idle keep-alive connection) only the
//! connection's idle timeout applies.

pub mod chunked;
mod status;

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use self::chunked::Decoder;
pub use self::status::Status;
use super::{
    budget_spent, stream_room, ConnInfo, Decision, Output, Protocol, Report, Reports, Step,
    MAX_REPORTS,
};
use crate::base::text::{civil_from_days, push_u64};

/// Longest request head (request line, headers, blank line) we read: 8 KiB,
/// like nginx's `large_client_header_buffers` line limit and Node's default.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// Most header fields in one request head.
pub(crate) const MAX_HEADERS: usize = 64;

/// Body bytes held back (unconsumed) before the response head is written.
pub(crate) const BODY_HOLD: usize = 16 * 1024;

/// The most unconsumed input this protocol ever leaves with the connection.
pub const MAX_PENDING: usize = if MAX_HEAD > BODY_HOLD {
    MAX_HEAD
} else {
    BODY_HOLD
};

const HELLO: &[u8] = b"Hello, World!";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Settings shared by every HTTP connection of a server.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest request body accepted (`Content-Length`); more gets 413.
    pub max_body: u64,
    /// Longest a request head may take to arrive, from its first byte; then
    /// 408. `None`: no limit (the idle timeout still applies).
    pub header_timeout: Option<Duration>,
    /// Where `Date` comes from; `None` leaves the header out.
    pub date: Option<DateAnchor>,
    /// Keep each request's line, `Referer` and `User-Agent` for
    /// [`Protocol::report`] (the access log). Without it a report still
    /// carries the status, the sizes and the timing (the metrics), and no
    /// request text is copied.
    pub log_requests: bool,
}

impl HttpConfig {
    /// The default largest body (`--max-body`): 1 MiB, nginx's `client_max_body_size`.
    pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
    /// The default header timeout (`--header-timeout`; nginx's `client_header_timeout` is 60 s).
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body: Self::DEFAULT_MAX_BODY,
            header_timeout: Some(Self::DEFAULT_HEADER_TIMEOUT),
            date: None,
            log_requests: true,
        }
    }
}

/// A wall-clock reading paired with the `Instant` it was taken at, so that
/// `Date` can be computed from the `now` a protocol is handed.
#[derive(Clone, Copy, Debug)]
pub struct DateAnchor {
    instant: Instant,
    unix: Duration,
}

impl DateAnchor {
    /// Read both clocks once (a clock before 1970 counts as 1970).
    pub fn now() -> Self {
        Self::new(
            Instant::now(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    /// `instant` corresponds to `unix` since the Unix epoch.
    pub fn new(instant: Instant, unix: Duration) -> Self {
        Self { instant, unix }
    }

    /// Whole seconds since the Unix epoch at `now`.
    fn unix_secs(&self, now: Instant) -> u64 {
        let unix = match now.checked_duration_since(self.instant) {
            Some(later) => self.unix.saturating_add(later),
            None => self
                .unix
                .saturating_sub(self.instant.saturating_duration_since(now)),
        };
        unix.as_secs()
    }
}

/// What a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// `GET` (`head: false`) or `HEAD` (`head: true`): the greeting.
    Hello { head: bool },
    /// `POST /echo`: the body back.
    Echo,
    /// `POST` elsewhere.
    NotFound,
    /// Any other method.
    MethodNotAllowed,
}

/// What is remembered of a parsed request head while its body streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    route: Route,
    /// `HTTP/1.0` rather than `HTTP/1.1`.
    http10: bool,
    /// The client lets the connection stay open after this request.
    keep_alive: bool,
}

/// Where the connection is in its current request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Between requests: no byte of the next head has arrived.
    Idle,
    /// Part of a request head has arrived; its first byte at `since`.
    Head { since: Instant },
    /// The head is parsed; `remaining` body bytes are still to come.
    /// `committed`: the response head has been written.
    Body {
        req: Request,
        remaining: u64,
        committed: bool,
    },
    /// The head is parsed; a chunked body is being decoded.
    /// `committed`: the response head has been written.
    Chunked {
        req: Request,
        committed: bool,
        decoder: Decoder,
    },
    /// The conversation is over (a response with `Connection: close` went
    /// out, or an error did). Nothing more is read.
    Done,
}

/// One connection's HTTP/1.1 state: an `Arc` and a small enum (48 B in
/// all), so an idle connection stays cheap.
#[derive(Debug)]
pub struct Http {
    config: Arc<HttpConfig>,
    phase: Phase,
    /// A graceful drain began: finish the request in flight, then close.
    draining: bool,
    /// Requests finished since the last [`Protocol::report`]; boxed on
    /// the first request, so an idle connection pays one pointer for it.
    answered: Option<Box<Answered>>,
}

/// Reports an idle connection keeps room for (see `Answered`).
const KEEP_REPORTS: usize = 32;

/// Longest request line kept for the access log; longer ones are cut.
const MAX_LOGGED_LINE: usize = 2048;

/// Longest `Referer` or `User-Agent` kept for the access log.
const MAX_LOGGED_HEADER: usize = 1024;

/// Requests finished and not yet reported, in buffers that are reused:
/// after the first requests, recording one copies its request line (and,
/// for the access log, two header values) and allocates nothing.
#[derive(Debug, Default)]
struct Answered {
    /// The request in flight: its request line, `Referer` and `User-Agent`
    /// (each cut to its limit), back to back, and their lengths.
    current: Vec<u8>,
    lens: [u16; 3],
    /// When its first byte arrived.
    since: Option<Instant>,
    /// Its response so far: the status (0 until committed), the bytes of
    /// its head (with any `100 Continue` before it) and of its body.
    status: u16,
    head: u64,
    body: u64,
    /// The texts of `done`, back to back.
    text: Vec<u8>,
    done: Vec<Done>,
}

#[derive(Clone, Copy, Debug)]
struct Done {
    /// Where this request's texts start in `text`, and their lengths.
    at: usize,
    lens: [u16; 3],
    status: u16,
    bytes: u64,
    body_bytes: u64,
    started: Instant,
}

impl Answered {
    /// After a long pipeline was reported, free the buffers it grew
    /// (a connection would keep them for its whole life otherwise: 72 KiB
    /// for 1 024 reports). What a keep-alive client or a modest pipeline
    /// needs stays, so those cost no allocation per request.
    fn give_back_after_a_burst(&mut self) {
        if self.done.capacity() > KEEP_REPORTS {
            self.done = Vec::new();
        }
        if self.text.capacity() > KEEP_REPORTS * 64 {
            self.text = Vec::new();
        }
    }

    /// A request began (its head, or the part of it that is here): what
    /// its line and headers say, and when its first byte came. Its
    /// response is not committed yet.
    fn begin(&mut self, line: &[u8], referer: &[u8], user_agent: &[u8], since: Instant) {
        self.current.clear();
        let parts = [
            (line, MAX_LOGGED_LINE),
            (referer, MAX_LOGGED_HEADER),
            (user_agent, MAX_LOGGED_HEADER),
        ];
        for (len, (part, max)) in self.lens.iter_mut().zip(parts) {
            let part = &part[..part.len().min(max)];
            self.current.extend_from_slice(part);
            *len = part.len() as u16;
        }
        self.since = Some(since);
        (self.status, self.head, self.body) = (0, 0, 0);
    }

    /// The response's head (and a fixed body) went into the output.
    fn committed(&mut self, status: Status, head: u64, body: u64) {
        self.status = status.code();
        self.head += head;
        self.body += body;
    }

    /// The request is over (its body read, its response written, or cut
    /// short): record it for the next report. `now` stands for its start
    /// if it never had one.
    fn finish(&mut self, now: Instant) {
        let started = self.since.take().unwrap_or(now);
        if self.done.len() >= MAX_REPORTS {
            return;
        }
        self.done.push(Done {
            at: self.text.len(),
            lens: self.lens,
            status: self.status,
            bytes: self.head + self.body,
            body_bytes: self.body,
            started,
        });
        self.text.extend_from_slice(&self.current);
        (self.status, self.head, self.body) = (0, 0, 0);
    }
}

/// The request line at the front of `input`: up to its line end (without
/// it), or all of `input` when no line end is there (garbage, a partial
/// head). What nginx logs as `$request`, for rejected requests too.
fn first_line(input: &[u8]) -> &[u8] {
    let input = &input[..input.len().min(MAX_HEAD + 1)];
    // Empty lines before a request line are skipped (RFC 9112 §2.2).
    let start = input.iter().position(|&b| b != b'\r' && b != b'\n');
    let input = &input[start.unwrap_or(input.len())..];
    let line = match input.iter().position(|&b| b == b'\n') {
        Some(end) => &input[..end],
        None => input,
    };
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What a response head says, besides the fixed fields.
struct Head<'a> {
    status: Status,
    /// `Content-Length`, or `None` for a chunked body.
    len: Option<u64>,
    /// Extra header lines, each ending in CRLF (`Allow: …`).
    extra: &'a str,
    connection: Connection,
}

/// The `Connection` field of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Connection {
    /// `Connection: close`: the connection ends after this response.
    Close,
    /// `Connection: keep-alive`: an HTTP/1.0 client must be told.
    KeepAlive,
    /// None: HTTP/1.1 keeps the connection by default.
    Implied,
}

impl Connection {
    /// The field for a response after which the connection closes
    /// (`close`), or stays open for a client of HTTP/1.0 or 1.1.
    fn after(close: bool, http10: bool) -> Self {
        match (close, http10) {
            (true, _) => Connection::Close,
            (false, true) => Connection::KeepAlive,
            (false, false) => Connection::Implied,
        }
    }
}

/// An error response that ends the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fatal {
    status: Status,
    /// Logged as the protocol error.
    why: &'static str,
    /// Suppress the body (a `HEAD` request).
    head: bool,
}

impl Fatal {
    const fn new(status: Status, why: &'static str) -> Self {
        Self {
            status,
            why,
            head: false,
        }
    }
}

/// The outcome of looking for a request head at the front of the input.
enum Parsed {
    /// Not all of it yet.
    Partial,
    /// A request head of `len` bytes, announcing a body of `body_len`
    /// bytes, or a chunked one (`body_len` is then 0).
    Request {
        len: usize,
        req: Request,
        body_len: u64,
        chunked: bool,
        expect_continue: bool,
        /// Where the `Referer` and `User-Agent` values are in the input,
        /// for the access log (offsets: a version-rewritten copy has the
        /// same); empty when absent.
        referer: std::ops::Range<usize>,
        user_agent: std::ops::Range<usize>,
    },
    /// Answer with an error and close.
    Fatal(Fatal),
}

impl Http {
    /// A connection's protocol state; `config` is shared by all of them.
    pub fn new(config: Arc<HttpConfig>) -> Self {
        Self {
            config,
            phase: Phase::Idle,
            draining: false,
            answered: None,
        }
    }

    /// Parse the request head at the front of `input` (not more than
    /// `MAX_HEAD + 1` bytes of it are looked at, so where the input is split
    /// never changes the verdict).
    fn parse_head(&self, input: &[u8]) -> Parsed {
        let window = &input[..input.len().min(MAX_HEAD + 1)];
        match self.parse_window(window) {
            Err(httparse::Error::Version) => self.parse_other_version(window),
            Err(_) => Parsed::Fatal(MALFORMED),
            Ok(parsed) => parsed,
        }
    }

    /// `httparse` knows HTTP/1.0 and HTTP/1.1 only. A later HTTP/1.x is
    /// served as HTTP/1.1 (RFC 9110 §2.5: a recipient of a higher minor
    /// version treats the message as the highest minor version it knows),
    /// by parsing a copy with the minor digit rewritten; another major
    /// version gets 505, as nginx answers `HTTP/2.0` over HTTP/1 framing.
    #[cold]
    fn parse_other_version(&self, window: &[u8]) -> Parsed {
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            return if window.len() > MAX_HEAD {
                Parsed::Fatal(URI_TOO_LONG)
            } else {
                Parsed::Partial
            };
        };
        let line = &window[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
        match version {
            [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
                let mut copy = [0u8; MAX_HEAD + 1];
                let copy = &mut copy[..window.len()];
                copy.copy_from_slice(window);
                copy[line.len() - 1] = b'1';
                self.parse_window(copy).unwrap_or(Parsed::Fatal(MALFORMED))
            }
            [b'H', b'T', b'T', b'P', b'/', b'2'..=b'9', b'.', minor] if minor.is_ascii_digit() => {
                Parsed::Fatal(Fatal::new(
                    Status::VersionNotSupported,
                    "HTTP major version other than 1",
                ))
            }
            _ => Parsed::Fatal(MALFORMED),
        }
    }

    /// Parse a head window (see [`Http::parse_head`]); `httparse`'s errors
    /// other than too many headers are passed up.
    fn parse_window(&self, window: &[u8]) -> Result<Parsed, httparse::Error> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let len = match parsed.parse(window) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Complete(_)) => return Ok(Parsed::Fatal(too_large(window))),
            Ok(httparse::Status::Partial) if window.len() > MAX_HEAD => {
                return Ok(Parsed::Fatal(too_large(window)))
            }
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => return Ok(Parsed::Fatal(TOO_LARGE)),
            Err(e) => return Err(e),
        };
        let (Some(method), Some(path), Some(version)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return Ok(Parsed::Fatal(MALFORMED));
        };
        let http10 = version == 0;
        let head = method == "HEAD";
        let fatal = |status, why| Ok(Parsed::Fatal(Fatal { status, why, head }));

        let mut content_length = None;
        let (mut codings, mut chunked_only) = (0, true);
        let mut hosts = 0;
        let (mut close, mut keep_alive) = (false, false);
        let mut expect_continue = false;
        let (mut referer, mut user_agent) = (0..0, 0..0);
        for h in parsed.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                match (content_length, parse_length(h.value)) {
                    (None, Some(n)) => content_length = Some(n),
                    _ => return fatal(Status::BadRequest, "bad Content-Length"),
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                for coding in h.value.split(|&b| b == b',') {
                    let coding = coding.trim_ascii();
                    if !coding.is_empty() {
                        codings += 1;
                        chunked_only &= coding.eq_ignore_ascii_case(b"chunked");
                    }
                }
                if h.value.trim_ascii().is_empty() {
                    return fatal(Status::BadRequest, "empty Transfer-Encoding");
                }
            } else if name.eq_ignore_ascii_case(b"host") {
                hosts += 1;
                if !valid_host(h.value) {
                    return fatal(Status::BadRequest, "Host is not a valid authority");
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"expect") {
                expect_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            } else if !self.config.log_requests {
                // The two below are for the access log only.
            } else if name.eq_ignore_ascii_case(b"referer") {
                referer = offsets(window, h.value);
            } else if name.eq_ignore_ascii_case(b"user-agent") {
                user_agent = offsets(window, h.value);
            }
        }
        let chunked = codings > 0;
        if chunked && content_length.is_some() {
            // Two framings: which one a proxy in front used is unknowable
            // (request smuggling). RFC 9112 §6.3 allows rejecting it.
            return fatal(Status::BadRequest, "Content-Length with Transfer-Encoding");
        }
        if chunked && http10 {
            // RFC 9112 §6.1: faulty framing in HTTP/1.0.
            return fatal(Status::BadRequest, "Transfer-Encoding in HTTP/1.0");
        }
        if chunked && !(codings == 1 && chunked_only) {
            // Only chunked alone is implemented (gzip, chunked is not;
            // chunked not last is not a framing at all): RFC 9112 §6.1
            // says 501, and closing keeps the stream from being misread.
            return fatal(Status::NotImplemented, "transfer coding other than chunked");
        }
        if hosts > 1 || (hosts == 0 && !http10) {
            // RFC 9112 §3.2: an HTTP/1.1 request needs exactly one Host.
            return fatal(Status::BadRequest, "missing or repeated Host");
        }
        let body_len = content_length.unwrap_or(0);
        if body_len > self.config.max_body {
            return fatal(Status::ContentTooLarge, "request body over --max-body");
        }
        let route = match method {
            "GET" => Route::Hello { head: false },
            "HEAD" => Route::Hello { head: true },
            "POST" if path == "/echo" || path.starts_with("/echo?") => Route::Echo,
            "POST" => Route::NotFound,
            _ => Route::MethodNotAllowed,
        };
        Ok(Parsed::Request {
            len,
            req: Request {
                route,
                http10,
                keep_alive: !close && (!http10 || keep_alive),
            },
            body_len,
            chunked,
            expect_continue: expect_continue && !http10 && (body_len > 0 || chunked),
            referer,
            user_agent,
        })
    }

    /// `req` and its body are done: the connection closes, or waits for
    /// the next request.
    fn request_done(&mut self, now: Instant, req: &Request, input: &[u8]) -> Option<Step> {
        self.record().finish(now);
        if self.closes_after(req) {
            // Whatever follows is never read: take it all, so the
            // connection holds nothing while it flushes.
            self.phase = Phase::Done;
            return Some(Step {
                consumed: input.len(),
                decision: Decision::Close,
            });
        }
        self.phase = Phase::Idle;
        None
    }

    /// A chunked body broke after its response head went out: the status
    /// cannot change any more, so the response ends unfinished (no last
    /// chunk: the client sees an incomplete message) and the connection
    /// closes.
    fn abort(&mut self, now: Instant, why: &'static str, input: &[u8]) -> Step {
        self.record().finish(now);
        self.phase = Phase::Done;
        Step {
            consumed: input.len(),
            decision: Decision::Reject(why),
        }
    }

    /// Whether the connection ends after `req`'s response.
    fn closes_after(&self, req: &Request) -> bool {
        !req.keep_alive || self.draining
    }

    /// Write `req`'s response head (and its fixed body, if it has one).
    /// `body_len`: the request body's length (no byte of it is consumed
    /// yet), `None` for a chunked body (an echo is then chunked too).
    fn commit(&mut self, now: Instant, req: &Request, body_len: Option<u64>, out: &mut Vec<u8>) {
        let close = self.closes_after(req);
        let (status, len, extra, body): (Status, Option<u64>, &str, &[u8]) = match req.route {
            Route::Hello { head } => (
                Status::Ok,
                Some(HELLO.len() as u64),
                "",
                if head { b"" } else { HELLO },
            ),
            Route::Echo => (Status::Ok, body_len, "", b""),
            Route::NotFound => (Status::NotFound, Some(10), "", b"Not Found\n"),
            Route::MethodNotAllowed => (
                Status::MethodNotAllowed,
                Some(19),
                "Allow: GET, HEAD, POST\r\n",
                b"Method Not Allowed\n",
            ),
        };
        debug_assert!(
            matches!(req.route, Route::Echo | Route::Hello { head: true })
                || Some(body.len() as u64) == len
        );
        let before = out.len();
        let connection = Connection::after(close, req.http10);
        self.push_head(
            now,
            out,
            Head {
                status,
                len,
                extra,
                connection,
            },
        );
        let head_len = (out.len() - before) as u64;
        out.extend_from_slice(body);
        // An echoed body is counted as it streams out.
        self.record().committed(status, head_len, body.len() as u64);
    }

    /// The record of the request in flight (allocated on the first one).
    fn record(&mut self) -> &mut Answered {
        self.answered.get_or_insert_with(Box::default)
    }

    /// Write an error response that ends the connection. `line`: the
    /// request line (or what stands for it), when no head was parsed.
    fn fail(
        &mut self,
        now: Instant,
        fatal: Fatal,
        line: Option<&[u8]>,
        consumed: usize,
        out: &mut Vec<u8>,
    ) -> Step {
        if let Some(line) = line {
            let since = match self.phase {
                Phase::Head { since } => since,
                _ => now,
            };
            let line = if self.config.log_requests { line } else { b"" };
            self.record().begin(line, b"", b"", since);
        }
        // The reason phrase doubles as the body.
        let text = fatal.status.reason();
        let before = out.len();
        let head = Head {
            status: fatal.status,
            len: Some(text.len() as u64 + 1),
            extra: "",
            connection: Connection::Close,
        };
        self.push_head(now, out, head);
        let head = (out.len() - before) as u64;
        if !fatal.head {
            out.extend_from_slice(text.as_bytes());
            out.push(b'\n');
        }
        let record = self.record();
        record.committed(fatal.status, head, (out.len() - before) as u64 - head);
        record.finish(now);
        self.phase = Phase::Done;
        Step {
            consumed,
            decision: Decision::Reject(fatal.why),
        }
    }

    /// Write a response head: the status line, the fixed fields, the
    /// length (or chunked), `Date` (if configured), `extra`, `Connection`.
    fn push_head(&self, now: Instant, out: &mut Vec<u8>, head: Head<'_>) {
        let Head {
            status,
            len: content_length,
            extra,
            connection,
        } = head;
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.line().as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: text/plain\r\n");
        match content_length {
            Some(len) => {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, len);
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
        if let Some(anchor) = &self.config.date {
            out.extend_from_slice(b"Date: ");
            push_date(out, anchor.unix_secs(now));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(extra.as_bytes());
        match connection {
            Connection::Close => out.extend_from_slice(b"Connection: close\r\n"),
            Connection::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
            Connection::Implied => {}
        }
        out.extend_from_slice(b"\r\n");
    }
}

const TOO_LARGE: Fatal = Fatal::new(Status::HeaderFieldsTooLarge, "request head over 8 KiB");

const URI_TOO_LONG: Fatal = Fatal::new(Status::UriTooLong, "request line over 8 KiB");

const MALFORMED: Fatal = Fatal::new(Status::BadRequest, "malformed request head");

/// A head over [`MAX_HEAD`]: 414 when the request line alone does not fit
/// (the target is what is long), else 431 (the header fields are).
fn too_large(window: &[u8]) -> Fatal {
    let line_fits = window[..window.len().min(MAX_HEAD)].contains(&b'\n');
    if line_fits {
        TOO_LARGE
    } else {
        URI_TOO_LONG
    }
}

/// A `Host` value: an RFC 3986 authority without userinfo, `host [":"
/// port]`, where host is an IP-literal (`[...]`), an IPv4 address or a
/// reg-name (unreserved, sub-delims and %-escapes; IPv4 is one of those),
/// and port is digits. Empty is allowed (RFC 9112 §3.2: a target without
/// an authority). `Host: a b` is not.
fn valid_host(value: &[u8]) -> bool {
    let unreserved_or_sub_delim =
        |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
    let (host, port) = if let Some(literal) = value.strip_prefix(b"[") {
        let Some(end) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &literal[..end];
        // IPv6 (hex, colons, dots of an embedded IPv4) or IPvFuture.
        if inside.is_empty()
            || !inside
                .iter()
                .all(|&b| unreserved_or_sub_delim(b) || b == b':')
        {
            return false;
        }
        (&[][..], &literal[end + 1..])
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        }
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' if host.len() > i + 2
                && host[i + 1].is_ascii_hexdigit()
                && host[i + 2].is_ascii_hexdigit() =>
            {
                i += 3
            }
            b if unreserved_or_sub_delim(b) => i += 1,
            _ => return false,
        }
    }
    port_ok
}

impl Protocol for Http {
    const NAME: &'static str = "http";

    fn on_input(&mut self, now: Instant, input: &[u8], out: &mut Output) -> Step {
        let mut pos = 0;
        let out_start = out.len();
        loop {
            let rest = &input[pos..];
            match self.phase {
                Phase::Done => {
                    return Step {
                        consumed: input.len(),
                        decision: Decision::Close,
                    }
                }
                Phase::Idle | Phase::Head { .. } => {
                    if rest.is_empty() {
                        self.phase = Phase::Idle;
                        return continue_at(pos);
                    }
                    if self.phase == Phase::Idle && budget_spent(out.len() - out_start) {
                        // Pipelined requests can ask for far more than they
                        // weigh: leave the rest until these replies drain.
                        return continue_at(pos);
                    }
                    match self.parse_head(rest) {
                        Parsed::Partial => {
                            let since = match self.phase {
                                Phase::Head { since } => since,
                                _ => now,
                            };
                            self.phase = Phase::Head { since };
                            // What is here of the line, should the head
                            // never complete (408 logs it).
                            let line = match self.config.log_requests {
                                true => first_line(rest),
                                false => b"",
                            };
                            self.record().begin(line, b"", b"", since);
                            return continue_at(pos);
                        }
                        Parsed::Fatal(fatal) => {
                            let line = first_line(rest);
                            return self.fail(now, fatal, Some(line), input.len(), out);
                        }
                        Parsed::Request {
                            len,
                            req,
                            body_len,
                            chunked,
                            expect_continue,
                            referer,
                            user_agent,
                        } => {
                            let since = match self.phase {
                                Phase::Head { since } => since,
                                _ => now,
                            };
                            let head = &rest[..len];
                            let part = |r: std::ops::Range<usize>| head.get(r).unwrap_or_default();
                            let (line, referer, user_agent) = match self.config.log_requests {
                                true => (first_line(head), part(referer), part(user_agent)),
                                false => (&b""[..], &b""[..], &b""[..]),
                            };
                            self.record().begin(line, referer, user_agent, since);
                            pos += len;
                            if expect_continue {
                                out.extend_from_slice(CONTINUE);
                                self.record().head += CONTINUE.len() as u64;
                            }
                            self.phase = if chunked {
                                Phase::Chunked {
                                    req,
                                    committed: false,
                                    decoder: Decoder::new(),
                                }
                            } else {
                                Phase::Body {
                                    req,
                                    remaining: body_len,
                                    committed: false,
                                }
                            };
                        }
                    }
                }
                Phase::Body {
                    req,
                    remaining,
                    committed,
                } => {
                    let here = rest.len() as u64;
                    if !committed {
                        if here < remaining && here < BODY_HOLD as u64 {
                            return continue_at(pos); // hold: the head may still change
                        }
                        self.commit(now, &req, Some(remaining), out);
                    }
                    let mut take = here.min(remaining) as usize;
                    if req.route == Route::Echo {
                        // Echoed a budget's worth at a time: the rest is
                        // offered again once the output has drained.
                        take = take.min(stream_room(out.len() - out_start));
                        out.extend_from_slice(&rest[..take]);
                        self.record().body += take as u64;
                    }
                    pos += take;
                    let remaining = remaining - take as u64;
                    if remaining > 0 {
                        self.phase = Phase::Body {
                            req,
                            remaining,
                            committed: true,
                        };
                        return continue_at(pos);
                    }
                    if let Some(step) = self.request_done(now, &req, input) {
                        return step;
                    }
                }
                Phase::Chunked {
                    req,
                    committed,
                    mut decoder,
                } => {
                    let max = self.config.max_body;
                    if !committed {
                        // Look ahead at the first BODY_HOLD bytes, a fixed
                        // window (so the verdict never depends on reads):
                        // framing errors there still get a clean 400/413.
                        let window = &rest[..rest.len().min(BODY_HOLD)];
                        let head = req.route == (Route::Hello { head: true });
                        let fatal = |status, why| Fatal { status, why, head };
                        let mut scan = decoder;
                        match scan.decode(window, max, None).status {
                            chunked::Status::Invalid(why) => {
                                return self.fail(
                                    now,
                                    fatal(Status::BadRequest, why),
                                    None,
                                    input.len(),
                                    out,
                                )
                            }
                            chunked::Status::TooLarge => {
                                let fatal =
                                    fatal(Status::ContentTooLarge, "request body over --max-body");
                                return self.fail(now, fatal, None, input.len(), out);
                            }
                            chunked::Status::More if window.len() < BODY_HOLD => {
                                return continue_at(pos); // hold: the head may still change
                            }
                            chunked::Status::More | chunked::Status::Done => {
                                self.commit(now, &req, None, out)
                            }
                        }
                    }
                    let decoded = if req.route == Route::Echo {
                        let (before, stop_at) =
                            (out.len(), out.len() + stream_room(out.len() - out_start));
                        let decoded = decoder.decode(rest, max, Some((out, stop_at)));
                        self.record().body += (out.len() - before) as u64;
                        decoded
                    } else {
                        decoder.decode(rest, max, None)
                    };
                    pos += decoded.consumed;
                    match decoded.status {
                        chunked::Status::More => {
                            self.phase = Phase::Chunked {
                                req,
                                committed: true,
                                decoder,
                            };
                            return continue_at(pos);
                        }
                        chunked::Status::Done => {
                            if let Some(step) = self.request_done(now, &req, input) {
                                return step;
                            }
                        }
                        chunked::Status::Invalid(why) => return self.abort(now, why, input),
                        chunked::Status::TooLarge => {
                            return self.abort(now, "request body over --max-body", input)
                        }
                    }
                }
            }
        }
    }

    const REPORTS: Reports = Reports::Requests;

    fn report(&mut self, sink: &mut dyn FnMut(Report<'_>)) {
        let Some(a) = self.answered.as_deref_mut() else {
            return;
        };
        for done in a.done.drain(..) {
            let mut at = done.at;
            let [request, referer, user_agent] = done.lens.map(|len| {
                let part = &a.text[at..at + usize::from(len)];
                at += usize::from(len);
                part
            });
            sink(Report::Http {
                request,
                referer,
                user_agent,
                status: done.status,
                bytes: done.bytes,
                body_bytes: done.body_bytes,
                started: done.started,
            });
        }
        a.text.clear();
        a.give_back_after_a_burst();
    }

    fn mid_message(&self) -> bool {
        matches!(self.phase, Phase::Head { .. } | Phase::Body { .. })
    }

    /// A response cut short by the close (the peer left mid-body, or a
    /// forced drain) is still a request served: it is reported with the
    /// status it was sent with and the bytes written so far, as nginx logs
    /// it.
    fn on_closed(&mut self, _info: &ConnInfo) {
        if let Phase::Body {
            committed: true, ..
        }
        | Phase::Chunked {
            committed: true, ..
        } = self.phase
        {
            if let Some(record) = self.answered.as_deref_mut() {
                if let Some(since) = record.since {
                    record.finish(since);
                }
            }
            self.phase = Phase::Done;
        }
    }

    fn on_drain(&mut self, _now: Instant, _out: &mut Output) -> Decision {
        match self.phase {
            Phase::Idle | Phase::Done => {
                self.phase = Phase::Done;
                Decision::Close
            }
            Phase::Head { .. } | Phase::Body { .. } | Phase::Chunked { .. } => {
                self.draining = true;
                Decision::Continue
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Head { since } => self.config.header_timeout.map(|t| since + t),
            _ => None,
        }
    }

    fn on_timeout(&mut self, now: Instant, out: &mut Output) -> Decision {
        match self.next_deadline() {
            Some(deadline) if now >= deadline => {
                let fatal = Fatal::new(Status::RequestTimeout, "request head too slow");
                self.fail(now, fatal, None, 0, out).decision
            }
            _ => Decision::Continue,
        }
    }
}

fn continue_at(consumed: usize) -> Step {
    Step {
        consumed,
        decision: Decision::Continue,
    }
}

/// A `Content-Length` value: 1 to 19 ASCII digits (fits `u64`).
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
const DATE_LEN: usize = 29;

thread_local! {
    /// The last second formatted, and its text: one format per second per
    /// thread, whatever the request rate.
    static DATE_CACHE: Cell<(u64, [u8; DATE_LEN])> = const { Cell::new((u64::MAX, [0; DATE_LEN])) };
}

fn push_date(out: &mut Vec<u8>, unix_secs: u64) {
    let text = DATE_CACHE.with(|cache| {
        let (secs, text) = cache.get();
        if secs == unix_secs {
            return text;
        }
        let text = format_date(unix_secs);
        cache.set((unix_secs, text));
        text
    });
    out.extend_from_slice(&text);
}

/// Format seconds since the Unix epoch as an IMF-fixdate (RFC 9110 §5.6.7).
fn format_date(unix_secs: u64) -> [u8; DATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_secs / 86_400;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let year = year % 10_000;

    let mut t = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    t[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |t: &mut [u8], at: usize, v: u64| {
        t[at] = b'0' + (v / 10 % 10) as u8;
        t[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut t, 5, day);
    t[8..11].copy_from_slice(MONTHS[(month - 1) as usize % 12]);
    two(&mut t, 12, year / 100);
    two(&mut t, 14, year % 100);
    two(&mut t, 17, secs_of_day / 3600);
    two(&mut t, 20, secs_of_day / 60 % 60);
    two(&mut t, 23, secs_of_day % 60);
    t
}

/// Where `part` (a slice of `whole`) lies in it.
fn offsets(whole: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Driver = crate::proto::driver::Driver<Http>;

    /// Plays the connection (see `proto::driver`).
    fn driver(config: HttpConfig) -> Driver {
        Driver::new(Http::new(Arc::new(config)), MAX_PENDING)
    }

    fn config() -> HttpConfig {
        HttpConfig::default()
    }

    /// Feed `chunks` (stopping at the end of the conversation); returns
    /// everything written and the last decision.
    fn run(chunks: &[&[u8]]) -> (String, Decision) {
        let now = Instant::now();
        let mut d = driver(config());
        let mut last = Decision::Continue;
        for chunk in chunks {
            if d.ended.is_some() {
                break;
            }
            if !chunk.is_empty() {
                last = d.feed(now, chunk);
            }
        }
        (d.text(), last)
    }

    fn one(request: &str) -> (String, Decision) {
        run(&[request.as_bytes()])
    }

    const GET: &str = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    const HELLO_RESPONSE: &str =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

    #[test]
    fn get_of_any_path_is_hello_world_and_keeps_the_connection() {
        assert_eq!(one(GET), (HELLO_RESPONSE.into(), Decision::Continue));
        let (text, decision) = one("GET /any/path?q=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(text, HELLO_RESPONSE);
        assert_eq!(decision, Decision::Continue);
    }

    #[test]
    fn head_has_the_same_head_and_no_body() {
        let (text, decision) = one("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
        );
        assert_eq!(decision, Decision::Continue);
    }

    #[test]
    fn post_echo_sends_the_body_back_and_other_posts_are_404() {
        let (text, decision) =
            one("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"
        );
        assert_eq!(decision, Decision::Continue);
        // No Content-Length: an empty body (RFC 9112 §6.3).
        let (text, _) = one("POST /echo?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(text.contains("Content-Length: 0\r\n\r\n"), "{text}");
        // Elsewhere: 404, body skipped, connection still usable.
        let (text, decision) = one(&format!(
            "POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc{GET}"
        ));
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.ends_with(HELLO_RESPONSE), "{text}");
        assert_eq!(decision, Decision::Continue);
    }

    #[test]
    fn other_methods_get_405_with_allow_and_the_connection_stays_usable() {
        let (text, decision) = one(&format!(
            "DELETE /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nzz{GET}"
        ));
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: GET, HEAD, POST\r\n"), "{text}");
        assert!(text.ends_with(HELLO_RESPONSE), "{text}");
        assert_eq!(decision, Decision::Continue);
    }

    #[test]
    fn pipelined_requests_stop_at_the_output_budget_and_resume() {
        let mut http = Http::new(Arc::new(config()));
        let now = Instant::now();
        let one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 4000).collect();
        let mut out = Output::new();
        let step = http.on_input(now, &many, &mut out);
        assert!(step.consumed < many.len(), "took every request at once");
        assert!(
            budget_spent(out.len()) && out.len() <= crate::proto::OUT_BUDGET,
            "{}",
            out.len()
        );
        assert_eq!(step.consumed % one.len(), 0, "stops between requests");
        // Offered the rest again, it goes on where it stopped.
        let mut answered = out.len();
        let mut pos = step.consumed;
        while pos < many.len() {
            let mut out = Output::new();
            let step = http.on_input(now, &many[pos..], &mut out);
            assert!(step.consumed > 0);
            pos += step.consumed;
            answered += out.len();
        }
        let per_reply = {
            let mut h = Http::new(Arc::new(config()));
            let mut o = Output::new();
            h.on_input(now, one, &mut o);
            o.len()
        };
        assert_eq!(answered, per_reply * 4000);
    }

    #[test]
    fn pipelined_requests_are_all_answered_in_order_in_one_call() {
        let now = Instant::now();
        let mut d = driver(config());
        let input = format!(
            "{GET}POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiHEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /"
        );
        assert_eq!(d.feed(now, input.as_bytes()), Decision::Continue);
        let text = d.text();
        let heads: Vec<_> = text.match_indices("HTTP/1.1 200 OK").collect();
        assert_eq!(heads.len(), 3, "{text}");
        assert!(
            text.contains("Content-Length: 2\r\n\r\nhiHTTP/1.1"),
            "{text}"
        );
        assert_eq!(d.pending, b"GET /", "the partial fourth waits");
    }

    /// A conversation exercising every kind of request, ending in a close.
    fn mixed_stream() -> Vec<u8> {
        [
            GET,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde",
            "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n",
            "PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz",
            "POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n!",
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            "\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nwxyz",
            "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "GET /ignored HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        .concat()
        .into_bytes()
    }

    #[test]
    fn a_stream_split_at_every_position_gives_the_same_responses() {
        let stream = mixed_stream();
        let whole = run(&[&stream]);
        assert_eq!(whole.1, Decision::Close);
        assert_eq!(whole.0.matches("HTTP/1.1 200 OK").count(), 6, "{}", whole.0);
        assert!(whole.0.contains("HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(!whole.0.contains("/ignored"));
        for i in 0..=stream.len() {
            assert_eq!(run(&[&stream[..i], &stream[i..]]), whole, "split at {i}");
        }
        // Three pieces, and a byte at a time.
        for i in (0..=stream.len()).step_by(7) {
            for j in i..=stream.len() {
                let pieces = [&stream[..i], &stream[i..j], &stream[j..]];
                assert_eq!(run(&pieces), whole, "split at {i}, {j}");
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(&bytes), whole);
    }

    fn assert_fatal(request: &[u8], status: &str) {
        let whole = run(&[request]);
        assert!(
            whole.0.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{status}: {}",
            whole.0
        );
        assert!(whole.0.contains("\r\nConnection: close\r\n"), "{}", whole.0);
        assert!(matches!(whole.1, Decision::Reject(_)), "{:?}", whole.1);
        for i in 0..=request.len() {
            assert_eq!(run(&[&request[..i], &request[i..]]), whole, "split at {i}");
        }
    }

    #[test]
    fn a_head_over_8_kib_is_431_and_one_of_exactly_8_kib_is_served() {
        let head_of = |len: usize| {
            let start = "GET / HTTP/1.1\r\nHost: x\r\nX: ";
            let pad = len - start.len() - 4;
            format!("{start}{}\r\n\r\n", "a".repeat(pad)).into_bytes()
        };
        let fits = head_of(MAX_HEAD);
        assert_eq!(run(&[&fits]), (HELLO_RESPONSE.into(), Decision::Continue));
        assert_fatal(
            &head_of(MAX_HEAD + 1),
            "431 Request Header Fields Too Large",
        );
        // A head that never ends is cut off at 8 KiB, not buffered on.
        let endless = vec![b'a'; 3 * MAX_HEAD];
        let endless = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &endless].concat();
        assert_fatal(&endless, "431 Request Header Fields Too Large");
        assert_fatal(
            &endless[..MAX_HEAD + 1],
            "431 Request Header Fields Too Large",
        );
        // Too many header fields is the same complaint.
        let many = format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS)
        );
        assert_fatal(many.as_bytes(), "431 Request Header Fields Too Large");
    }

    #[test]
    fn a_request_line_over_the_head_limit_is_414_not_431() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_fatal(long.as_bytes(), "414 URI Too Long");
        // A target that never ends is cut off at 8 KiB, not buffered on.
        let endless = [b"GET /".as_slice(), &vec![b'a'; 3 * MAX_HEAD]].concat();
        assert_fatal(&endless, "414 URI Too Long");
        assert_fatal(&endless[..MAX_HEAD + 1], "414 URI Too Long");
        // A long line that fits, with header fields past the limit: 431.
        let line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD - 100));
        let over = format!("{line}Host: x\r\nX: {}\r\n\r\n", "b".repeat(200));
        assert_fatal(over.as_bytes(), "431 Request Header Fields Too Large");
    }

    #[test]
    fn a_host_that_is_not_an_authority_is_400() {
        for bad in [
            "a b", "a/b", "a@b", "x:y", "x:80:80", "[::1", "[]", "[::1]x", "a%2", "a%zz", "\"q\"",
        ] {
            let request = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_fatal(request.as_bytes(), "400 Bad Request");
        }
        for good in [
            "example.test",
            "example.test:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[v1.fe80::a+en1]",
            "a%20b",
            "x:",
            "",
            "xn--bcher-kva.example",
            "a-b_c~d!$&'()*+,;=",
        ] {
            let request = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
            assert_eq!(
                one(&request),
                (HELLO_RESPONSE.into(), Decision::Continue),
                "{good:?}"
            );
        }
    }

    #[test]
    fn later_http_1_minor_versions_are_served_as_1_1_and_other_majors_get_505() {
        for version in ["1.2", "1.9"] {
            let request = format!("GET / HTTP/{version}\r\nHost: x\r\n\r\n");
            let (text, decision) = run(&[request.as_bytes(), GET.as_bytes()]);
            assert_eq!(text, HELLO_RESPONSE.repeat(2), "{version}");
            assert_eq!(decision, Decision::Continue);
            for i in 0..=request.len() {
                let b = request.as_bytes();
                assert_eq!(
                    run(&[&b[..i], &b[i..]]),
                    (HELLO_RESPONSE.into(), Decision::Continue)
                );
            }
        }
        // Served as HTTP/1.1: Host is required, keep-alive is the default.
        assert_fatal(b"GET / HTTP/1.2\r\n\r\n", "400 Bad Request");
        let (text, decision) = one(
            "POST /echo HTTP/1.5\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        );
        assert!(text.ends_with("Connection: close\r\n\r\nhi"), "{text}");
        assert_eq!(decision, Decision::Close);
        for version in ["2.0", "3.0", "9.9"] {
            let request = format!("GET / HTTP/{version}\r\nHost: x\r\n\r\n");
            assert_fatal(request.as_bytes(), "505 HTTP Version Not Supported");
        }
        for bad in ["0.9", "1.", "1.1x", "11.1", "A.1"] {
            let request = format!("GET / HTTP/{bad}\r\nHost: x\r\n\r\n");
            assert_fatal(request.as_bytes(), "400 Bad Request");
        }
    }

    #[test]
    fn malformed_heads_are_400_and_close() {
        for bad in [
            "GET/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1x\r\nHost: x\r\n\r\n",
            "G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nBad\x7fName: y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n",
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert_fatal(bad.as_bytes(), "400 Bad Request");
        }
        // An error after good requests: their answers first, then the 400.
        let (text, decision) = one(&format!("{GET}BAD\x00\r\n\r\n"));
        assert!(text.starts_with(HELLO_RESPONSE), "{text}");
        assert!(
            text[HELLO_RESPONSE.len()..].starts_with("HTTP/1.1 400 "),
            "{text}"
        );
        assert!(matches!(decision, Decision::Reject(_)));
    }

    #[test]
    fn a_body_over_max_body_is_413_without_reading_it() {
        let limit = HttpConfig::DEFAULT_MAX_BODY;
        let over = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            limit + 1
        );
        assert_fatal(over.as_bytes(), "413 Content Too Large");
        assert!(!one(&over).0.contains("100 Continue"));
        let at = format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {limit}\r\n\r\n");
        assert_eq!(one(&at).1, Decision::Continue);
    }

    const CHUNKED: &str = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn a_chunked_post_echo_is_echoed_as_chunks_of_the_same_sizes() {
        let request =
            format!("{CHUNKED}5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n{GET}");
        let (text, decision) = one(&request);
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n{HELLO_RESPONSE}"
            )
        );
        assert_eq!(decision, Decision::Continue);
        let b = request.as_bytes();
        for i in 0..=b.len() {
            assert_eq!(
                run(&[&b[..i], &b[i..]]),
                (text.clone(), decision),
                "split at {i}"
            );
        }
        // Chunked bodies elsewhere are read and discarded.
        let (text, decision) = one(&format!(
            "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n{GET}"
        ));
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.ends_with(HELLO_RESPONSE), "{text}");
        assert_eq!(decision, Decision::Continue);
        // Expect: 100-continue is answered for a chunked body too.
        let (text, _) = one(
            "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        assert!(
            text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
            "{text}"
        );
    }

    #[test]
    fn a_large_chunked_body_streams_through_a_piece_at_a_time() {
        let now = Instant::now();
        let mut d = driver(config());
        d.feed(now, CHUNKED.as_bytes());
        let chunk = [b"1000\r\n".as_slice(), &[b'c'; 0x1000], b"\r\n"].concat();
        for _ in 0..200 {
            assert_eq!(d.feed(now, &chunk), Decision::Continue);
            assert!(d.pending.len() < BODY_HOLD);
        }
        assert!(d.text().contains("Transfer-Encoding: chunked"));
        assert_eq!(d.feed(now, b"0\r\n\r\n"), Decision::Continue);
        let head_len = d.text().find("\r\n\r\n").unwrap() + 4;
        assert_eq!(d.out.len(), head_len + 200 * chunk.len() + 5);
        assert!(d.out.ends_with(b"\r\n0\r\n\r\n"));
    }

    #[test]
    fn broken_chunked_framing_is_400_and_too_much_is_413() {
        for body in [
            "x\r\n",
            "5\r\nhelloXX",
            "5\r\nhello\n",
            "5 5\r\nhello\r\n0\r\n\r\n",
            "ffffffffffffffffffff\r\n",
        ] {
            assert_fatal(format!("{CHUNKED}{body}").as_bytes(), "400 Bad Request");
        }
        let over = format!("{CHUNKED}{:x}\r\n", HttpConfig::DEFAULT_MAX_BODY + 1);
        assert_fatal(over.as_bytes(), "413 Content Too Large");
        let two = format!("{CHUNKED}{:x}\r\n", HttpConfig::DEFAULT_MAX_BODY / 2 + 1);
        let two = [two.as_bytes(), &vec![b'a'; BODY_HOLD / 2]].concat();
        // Over BODY_HOLD before the error: the head went out, so the
        // response ends unfinished (no last chunk) and the connection closes.
        let mut d = driver(config());
        let now = Instant::now();
        assert_eq!(d.feed(now, &two), Decision::Continue);
        assert_eq!(d.feed(now, &vec![b'a'; BODY_HOLD]), Decision::Continue);
        assert!(d.text().starts_with("HTTP/1.1 200 OK\r\n"));
        let rest = HttpConfig::DEFAULT_MAX_BODY as usize / 2 + 1 - BODY_HOLD / 2 - BODY_HOLD;
        assert_eq!(d.feed(now, &vec![b'a'; rest]), Decision::Continue);
        let big = format!("\r\n{:x}\r\n", HttpConfig::DEFAULT_MAX_BODY / 2);
        assert!(matches!(d.feed(now, big.as_bytes()), Decision::Reject(_)));
        assert!(!d.text().ends_with("0\r\n\r\n"));
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_501_and_with_content_length_400() {
        for coding in [
            "gzip",
            "gzip, chunked",
            "chunked, gzip",
            "chunked, chunked",
            "identity",
        ] {
            let request =
                format!("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n\r\n");
            assert_fatal(request.as_bytes(), "501 Not Implemented");
        }
        // Split over two fields, chunked is still not alone.
        assert_fatal(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            "501 Not Implemented",
        );
        // Request smuggling: two framings.
        for request in [
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
        ] {
            assert_fatal(request.as_bytes(), "400 Bad Request");
        }
    }

    #[test]
    fn a_head_trickled_slower_than_the_header_timeout_gets_408() {
        let t0 = Instant::now();
        let mut d = driver(config());
        assert_eq!(d.proto.next_deadline(), None, "idle: no header timer");
        d.feed(t0, b"GET / HT");
        let deadline = t0 + HttpConfig::DEFAULT_HEADER_TIMEOUT;
        assert_eq!(d.proto.next_deadline(), Some(deadline));
        // More bytes do not restart the clock: it bounds the whole head.
        d.feed(t0 + Duration::from_secs(9), b"TP/1.1\r\n");
        assert_eq!(d.proto.next_deadline(), Some(deadline));
        let early = d
            .proto
            .on_timeout(deadline - Duration::from_millis(1), &mut d.out);
        assert_eq!(early, Decision::Continue);
        assert!(d.out.is_empty());
        let decision = d.proto.on_timeout(deadline, &mut d.out);
        assert!(matches!(decision, Decision::Reject(_)));
        let text = d.text();
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert_eq!(d.proto.next_deadline(), None, "no timer after closing");
    }

    #[test]
    fn the_header_timer_covers_each_head_but_not_an_idle_keep_alive() {
        let t0 = Instant::now();
        let mut d = driver(config());
        d.feed(t0, GET.as_bytes());
        assert_eq!(d.proto.next_deadline(), None);
        let t1 = t0 + Duration::from_secs(100);
        d.feed(t1, b"GET /");
        assert_eq!(
            d.proto.next_deadline(),
            Some(t1 + HttpConfig::DEFAULT_HEADER_TIMEOUT)
        );
        let mut off = driver(HttpConfig {
            header_timeout: None,
            ..config()
        });
        off.feed(t0, b"GET /");
        assert_eq!(off.proto.next_deadline(), None);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let close = Decision::Close;
        let go_on = Decision::Continue;
        for (request, header, decision) in [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", None, go_on),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                Some("close"),
                close,
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, CLOSE\r\n\r\n",
                Some("close"),
                close,
            ),
            ("GET / HTTP/1.0\r\n\r\n", Some("close"), close),
            (
                "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                Some("keep-alive"),
                go_on,
            ),
            (
                "HEAD / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                Some("close"),
                close,
            ),
        ] {
            let (text, got) = one(request);
            assert_eq!(got, decision, "{request:?}");
            let found = text.lines().find_map(|l| l.strip_prefix("Connection: "));
            assert_eq!(found, header, "{request:?}: {text}");
        }
    }

    #[test]
    fn draining_an_idle_connection_closes_at_once() {
        let mut d = driver(config());
        d.feed(Instant::now(), GET.as_bytes());
        assert_eq!(
            d.proto.on_drain(Instant::now(), &mut d.out),
            Decision::Close
        );
        let mut fresh = driver(config());
        assert_eq!(
            fresh.proto.on_drain(Instant::now(), &mut fresh.out),
            Decision::Close
        );
    }

    #[test]
    fn draining_mid_head_or_mid_body_finishes_that_request_with_connection_close() {
        let now = Instant::now();
        // Mid-head.
        let mut d = driver(config());
        d.feed(now, b"GET / HTTP/1.1\r\nHo");
        assert_eq!(d.proto.on_drain(now, &mut d.out), Decision::Continue);
        assert_eq!(d.feed(now, b"st: x\r\n\r\nGET /next"), Decision::Close);
        assert_eq!(
            d.text(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, World!"
        );
        // Mid-body: the response is held until the body is here.
        let mut d = driver(config());
        d.feed(
            now,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234",
        );
        assert!(d.out.is_empty(), "small body: response head held");
        assert_eq!(d.proto.on_drain(now, &mut d.out), Decision::Continue);
        assert_eq!(d.feed(now, b"56789"), Decision::Close);
        assert_eq!(
            d.text(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789"
        );
    }

    #[test]
    fn draining_after_a_large_body_committed_its_head_completes_then_closes() {
        let now = Instant::now();
        let mut d = driver(config());
        let len = 4 * BODY_HOLD;
        d.feed(
            now,
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
        );
        d.feed(now, &vec![b'a'; BODY_HOLD]);
        assert!(d.text().starts_with("HTTP/1.1 200 OK\r\n"), "committed");
        assert_eq!(d.proto.on_drain(now, &mut d.out), Decision::Continue);
        assert_eq!(
            d.feed(now, &vec![b'b'; len - BODY_HOLD - 1]),
            Decision::Continue
        );
        assert_eq!(d.feed(now, b"c"), Decision::Close);
        assert!(d.text().ends_with("bbbc"));
    }

    #[test]
    fn a_large_body_streams_through_without_piling_up() {
        let now = Instant::now();
        let mut d = driver(config());
        let len = HttpConfig::DEFAULT_MAX_BODY as usize;
        d.feed(
            now,
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
        );
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        for chunk in body.chunks(4000) {
            assert_eq!(d.feed(now, chunk), Decision::Continue);
            assert!(d.pending.len() < BODY_HOLD);
        }
        assert!(d.out.ends_with(&body));
        assert_eq!(
            d.out.len() - body.len(),
            d.text().find("\r\n\r\n").unwrap() + 4
        );
        assert_eq!(d.feed(now, GET.as_bytes()), Decision::Continue);
        assert!(d.text().ends_with(HELLO_RESPONSE));
    }

    #[test]
    fn expect_100_continue_is_answered_before_the_body() {
        let mut d = driver(config());
        d.feed(
            Instant::now(),
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(d.text(), "HTTP/1.1 100 Continue\r\n\r\n");
        d.feed(Instant::now(), b"abc");
        assert!(d.text().ends_with("Content-Length: 3\r\n\r\nabc"));
    }

    #[test]
    fn date_comes_from_now_and_the_anchor() {
        let t0 = Instant::now();
        let anchor = DateAnchor::new(t0, Duration::from_secs(784_111_777));
        let mut d = driver(HttpConfig {
            date: Some(anchor),
            ..config()
        });
        d.feed(t0 + Duration::from_millis(999), GET.as_bytes());
        d.feed(t0 + Duration::from_secs(1), GET.as_bytes());
        let text = d.text();
        assert!(
            text.contains("\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nDate: Sun, 06 Nov 1994 08:49:38 GMT\r\n"),
            "{text}"
        );
    }

    #[test]
    fn dates_format_as_imf_fixdate() {
        for (secs, text) in [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_709_164_799, "Wed, 28 Feb 2024 23:59:59 GMT"),
            (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
        ] {
            assert_eq!(std::str::from_utf8(&format_date(secs)).unwrap(), text);
        }
    }

    #[test]
    fn numbers_format_without_allocating() {
        for n in [0, 7, 10, 13, 1_048_576, u64::MAX] {
            let mut out = Output::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    /// What one report says, with its texts as strings.
    type Seen = (String, String, String, u16, u64, u64);

    fn reports(http: &mut Http) -> Vec<Seen> {
        let mut seen = Vec::new();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        http.report(&mut |r| {
            if let Report::Http {
                request,
                referer,
                user_agent,
                status,
                bytes,
                body_bytes,
                ..
            } = r
            {
                seen.push((
                    text(request),
                    text(referer),
                    text(user_agent),
                    status,
                    bytes,
                    body_bytes,
                ));
            }
        });
        seen
    }

    #[test]
    fn each_request_is_reported_once_with_its_line_headers_status_and_sizes() {
        let now = Instant::now();
        let mut d = driver(config());
        d.feed(now, b"GET /a?b HTTP/1.1\r\nHost: x\r\nUser-Agent: t/1\r\nReferer: http://r/\r\n\r\nPOST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nzz");
        let seen = reports(&mut d.proto);
        let hello = HELLO_RESPONSE.len() as u64;
        // Both responses' bytes, exactly: the 404's is what follows the 200.
        let not_found = d.out.len() as u64 - hello;
        assert!(d.text()[hello as usize..].starts_with("HTTP/1.1 404 "));
        let s = |t: &str| t.to_owned();
        assert_eq!(
            seen,
            [
                (
                    s("GET /a?b HTTP/1.1"),
                    s("http://r/"),
                    s("t/1"),
                    200,
                    hello,
                    13
                ),
                (s("POST /nope HTTP/1.1"), s(""), s(""), 404, not_found, 10),
            ]
        );
        assert_eq!(reports(&mut d.proto), [], "reported twice");
        // A request that cannot be parsed is still one: its first line
        // (what nginx logs as $request), its status, its bytes.
        let mut d = driver(config());
        d.feed(now, b"BLAH\r\n\r\n");
        let seen = reports(&mut d.proto);
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].0.as_str(), seen[0].3), ("BLAH", 400));
        assert_eq!(seen[0].4, d.out.len() as u64);
        assert_eq!(seen[0].5, "Bad Request\n".len() as u64);
        // Empty lines before a request line are not part of it.
        let mut d = driver(config());
        d.feed(now, b"\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(reports(&mut d.proto)[0].0, "GET /x HTTP/1.1");
        // Without the access log, no text is copied.
        let mut d = driver(HttpConfig {
            log_requests: false,
            ..config()
        });
        d.feed(now, b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n");
        assert_eq!(
            reports(&mut d.proto),
            [(s(""), s(""), s(""), 200, hello, 13)]
        );
    }

    /// A request is reported when it is over, not when its response head
    /// goes out: a body streamed after an early head (over BODY_HOLD)
    /// counts in its bytes and its time. The HEAD response has no body.
    #[test]
    fn a_request_is_reported_when_its_body_is_done_with_every_byte() {
        let t0 = Instant::now();
        let mut http = Http::new(Arc::new(config()));
        let mut out = Output::new();
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            2 * BODY_HOLD
        );
        let body = vec![b'b'; 2 * BODY_HOLD];
        http.on_input(t0, head.as_bytes(), &mut out);
        http.on_input(t0, &body[..BODY_HOLD], &mut out);
        assert_eq!(reports(&mut http), [], "not over: half the body to come");
        let later = t0 + Duration::from_millis(300);
        http.on_input(later, &body[BODY_HOLD..], &mut out);
        let mut started = None;
        http.report(&mut |r| {
            if let Report::Http {
                started: s,
                bytes,
                body_bytes,
                ..
            } = r
            {
                started = Some(s);
                assert_eq!(bytes, out.len() as u64);
                assert_eq!(body_bytes, 2 * BODY_HOLD as u64);
            }
        });
        assert_eq!(started, Some(t0), "timed from its first byte");
        http.on_input(later, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", &mut out);
        let seen = reports(&mut http);
        assert_eq!((seen[0].3, seen[0].5), (200, 0));
    }

    /// The peer leaves mid-body: the request it was served is still
    /// reported, with what was written.
    #[test]
    fn a_response_cut_short_by_the_close_is_reported() {
        let now = Instant::now();
        let mut http = Http::new(Arc::new(config()));
        let mut out = Output::new();
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            4 * BODY_HOLD
        );
        http.on_input(now, head.as_bytes(), &mut out);
        http.on_input(now, &vec![b'b'; BODY_HOLD], &mut out);
        assert_eq!(reports(&mut http), []);
        http.on_closed(&ConnInfo::new(
            crate::mailbox::ConnId::NOBODY,
            "127.0.0.1:1".parse().unwrap(),
            crate::base::close::CloseReason::Reset,
            (0, 0),
            Duration::ZERO,
        ));
        let seen = reports(&mut http);
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].3, seen[0].4, seen[0].5),
            (200, out.len() as u64, BODY_HOLD as u64)
        );
    }

    /// A head that never completes gets 408, logged with what came of its
    /// request line.
    #[test]
    fn a_timed_out_head_is_reported_with_its_partial_line() {
        let t0 = Instant::now();
        let mut http = Http::new(Arc::new(config()));
        let mut out = Output::new();
        http.on_input(t0, b"GET /slow HTTP/1.1\r\nHo", &mut out);
        let deadline = http.next_deadline().unwrap();
        http.on_timeout(deadline, &mut out);
        let seen = reports(&mut http);
        assert_eq!((seen[0].0.as_str(), seen[0].3), ("GET /slow HTTP/1.1", 408));
    }

    /// A burst of pipelined requests grows the report buffers (up to
    /// MAX_REPORTS between two collections); once reported, a connection
    /// keeps no more than room for a few (before: 72 KiB for life).
    #[test]
    fn a_burst_s_report_buffers_are_given_back_once_reported() {
        let now = Instant::now();
        let mut http = Http::new(Arc::new(config()));
        let many = GET.repeat(1000);
        let mut out = Output::new();
        let mut pos = 0;
        while pos < many.len() {
            pos += http
                .on_input(now, &many.as_bytes()[pos..], &mut out)
                .consumed;
        }
        let held = |h: &Http| {
            h.answered.as_ref().map_or(0, |a| {
                a.done.capacity() * std::mem::size_of::<Done>() + a.text.capacity()
            })
        };
        assert!(held(&http) >= 1000 * std::mem::size_of::<Done>());
        let mut reported = 0;
        http.report(&mut |_| reported += 1);
        assert_eq!(reported, 1000);
        assert!(held(&http) <= KEEP_REPORTS * 128, "{} B kept", held(&http));
        // A keep-alive client's one request per collection reuses them.
        http.on_input(now, GET.as_bytes(), &mut out);
        http.report(&mut |_| {});
        let kept = held(&http);
        http.on_input(now, GET.as_bytes(), &mut out);
        http.report(&mut |_| {});
        assert_eq!(held(&http), kept);
    }

    #[test]
    fn an_idle_http_connection_is_small() {
        let size = std::mem::size_of::<Http>();
        eprintln!("Http: {size} B");
        // 40 B before chunked bodies; their decoder (two u64: a chunk's
        // bytes left, the body's total) costs the other 8.
        // One more pointer: the boxed record of answered requests (access
        // log and metrics), allocated on a connection's first request.
        assert!(size <= 56, "Http grew to {size} B");
    }
}
