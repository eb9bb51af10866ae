//! `GET /metrics` over HTTP/1.1: a listening socket and a few short-lived
//! connections, served by whichever `mio::Poll` registers them (the
//! supervisor's). No framework: one request per connection, answered with
//! `Connection: close`.
//!
//! A scrape moves through three phases: `Reading` the request head (at
//! most `MAX_REQUEST` bytes), `Waiting` for the loops' counters (the
//! owner sees [`Endpoint::on_event`] return `true`, asks the loops, and
//! calls `Endpoint::respond` with the text), then `Writing` until the
//! kernel took everything, FIN, close. Any other path gets `404`, any
//! other method `405`. At most `MAX_SCRAPES` are served at once (more
//! wait in the listen queue); each must finish within `SCRAPE_TIMEOUT`.
//! The same readiness rules as a connection of the loop: registered once,
//! edge-triggered, read and write until `WouldBlock`.
//!
//! In an upgrade the listening socket is handed to the new process with
//! the others; once the new process has taken over, the old one
//! stops accepting on it and only finishes the
//! scrapes it has, so every scrape after the hand-over reads the new
//! process's counters.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::obs::metrics::exposition::CONTENT_TYPE;

/// Most scrapes served at once.
pub(crate) const MAX_SCRAPES: usize = 8;
/// Longest request head read.
pub(crate) const MAX_REQUEST: usize = 8 * 1024;
/// Longest a scrape connection may live.
pub(crate) const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Reading,
    Waiting,
    Writing,
}

struct Scrape {
    stream: TcpStream,
    input: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    phase: Phase,
    deadline: Instant,
    writable: bool,
}

/// The metrics listener and its scrapes; tokens `base` (listener) to
/// `base + MAX_SCRAPES` (scrapes).
pub struct Endpoint {
    /// `None` once it stopped accepting (the socket went to a new process).
    listener: Option<TcpListener>,
    addr: SocketAddr,
    base: usize,
    scrapes: Slab<Scrape>,
}

impl Endpoint {
    /// Serve on `listener` (bound and listening), registered with tokens
    /// from `base` up.
    pub fn new(
        listener: std::net::TcpListener,
        base: Token,
        registry: &Registry,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut listener = TcpListener::from_std(listener);
        registry.register(&mut listener, base, Interest::READABLE)?;
        Ok(Self {
            listener: Some(listener),
            addr,
            base: base.0,
            scrapes: Slab::with_capacity(MAX_SCRAPES),
        })
    }

    /// The address scrapes go to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether `token` is the listener's or a scrape's.
    pub fn owns(&self, token: Token) -> bool {
        (self.base..=self.base + MAX_SCRAPES).contains(&token.0)
    }

    /// The listening socket, to hand to an upgraded process.
    pub(crate) fn listener_fd(&self) -> Option<BorrowedFd<'_>> {
        self.listener.as_ref().map(AsFd::as_fd)
    }

    /// Accept no more scrapes (a new process took the socket over); the
    /// ones accepted are still answered.
    pub(crate) fn stop_accepting(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            let _ = registry.deregister(&mut listener);
        }
    }

    /// Whether any scrape is in flight.
    pub fn busy(&self) -> bool {
        !self.scrapes.is_empty()
    }

    /// Whether a scrape waits for `Endpoint::respond`.
    pub fn waiting(&self) -> bool {
        self.scrapes.iter().any(|(_, s)| s.phase == Phase::Waiting)
    }

    /// Handle an event for one of our tokens. Returns `true` when a scrape
    /// now waits for the metrics text.
    pub fn on_event(&mut self, registry: &Registry, event: &Event, now: Instant) -> bool {
        if event.token().0 == self.base {
            self.accept(registry, now);
            return false;
        }
        let key = event.token().0 - self.base - 1;
        let Some(scrape) = self.scrapes.get_mut(key) else {
            return false;
        };
        scrape.writable |= event.is_writable() || event.is_error();
        let wants = match scrape.phase {
            Phase::Reading => scrape.read(),
            Phase::Waiting => Ok(false),
            Phase::Writing => scrape.write().map(|_| false),
        };
        self.settle(key, wants, registry, now)
    }

    /// Close scrapes past their deadline.
    pub fn on_timer(&mut self, registry: &Registry, now: Instant) {
        let late: Vec<usize> = self
            .scrapes
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        if late.is_empty() {
            return;
        }
        for key in late {
            log::debug!("metrics: scrape {key} took over {SCRAPE_TIMEOUT:?}: closed");
            let mut scrape = self.scrapes.remove(key);
            let _ = registry.deregister(&mut scrape.stream);
        }
        self.accept(registry, now);
    }

    /// The earliest scrape deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.scrapes.iter().map(|(_, s)| s.deadline).min()
    }

    /// Answer every waiting scrape with `body` (Prometheus text).
    pub(crate) fn respond(&mut self, registry: &Registry, body: &str, now: Instant) {
        let keys: Vec<usize> = self
            .scrapes
            .iter()
            .filter(|(_, s)| s.phase == Phase::Waiting)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            let result = match self.scrapes.get_mut(key) {
                Some(scrape) => {
                    scrape.reply("200 OK", CONTENT_TYPE, body);
                    scrape.write().map(|_| false)
                }
                None => continue,
            };
            self.settle(key, result, registry, now);
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        while self.scrapes.len() < MAX_SCRAPES {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let entry = self.scrapes.vacant_entry();
                    let token = Token(self.base + 1 + entry.key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = registry.register(&mut stream, token, interest) {
                        log::warn!("metrics: cannot register a scrape from {peer}: {e}");
                        continue;
                    }
                    log::trace!("metrics: scrape {} from {peer}", entry.key());
                    entry.insert(Scrape {
                        stream,
                        input: Vec::new(),
                        out: Vec::new(),
                        sent: 0,
                        phase: Phase::Reading,
                        deadline: now + SCRAPE_TIMEOUT,
                        writable: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("metrics: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// After I/O on scrape `key`: close it when done or failed; make room
    /// for queued scrapes. Passes on whether it now waits for the text.
    fn settle(
        &mut self,
        key: usize,
        result: io::Result<bool>,
        registry: &Registry,
        now: Instant,
    ) -> bool {
        let done = match (&result, self.scrapes.get(key)) {
            (Err(_), _) => true,
            (Ok(_), Some(s)) => s.phase == Phase::Writing && s.sent == s.out.len(),
            (Ok(_), None) => false,
        };
        if done {
            let mut scrape = self.scrapes.remove(key);
            let _ = scrape.stream.shutdown(Shutdown::Write);
            let _ = registry.deregister(&mut scrape.stream);
            self.accept(registry, now);
        }
        matches!(result, Ok(true))
    }
}

impl Scrape {
    /// Read the request head; `Ok(true)` once it asks for `/metrics`.
    fn read(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    if let Some(end) = find(&self.input, b"\r\n\r\n") {
                        return self.route(end);
                    }
                    if self.input.len() > MAX_REQUEST {
                        self.reply("431 Request Header Fields Too Large", "text/plain", "");
                        return self.write().map(|_| false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn route(&mut self, end: usize) -> io::Result<bool> {
        let head = String::from_utf8_lossy(&self.input[..end]);
        let mut words = head.lines().next().unwrap_or("").split(' ');
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        match (method, path) {
            ("GET", "/metrics") => {
                self.phase = Phase::Waiting;
                return Ok(true);
            }
            (_, "/metrics") => self.reply("405 Method Not Allowed", "text/plain", "GET only\n"),
            _ => self.reply("404 Not Found", "text/plain", "try /metrics\n"),
        }
        self.write().map(|_| false)
    }

    fn reply(&mut self, status: &str, content_type: &str, body: &str) {
        self.out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        self.sent = 0;
        self.phase = Phase::Writing;
    }

    fn write(&mut self) -> io::Result<()> {
        while self.writable && self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
