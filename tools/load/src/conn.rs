//! One client connection of the closed loop.
//!
//! Owns: the socket, its readiness flags, how much of its byte stream was issued, written
//! and received back, and the issue time of every message still in flight. A connection
//! keeps `depth` messages in flight: each completed echo immediately issues the next
//! message (closed loop). Must not: read the clock (time is passed in), decide when the
//! measured window opens or closes (the event loop tells it through [`Shared`]).
//!
//! Readiness rules (the socket is registered once, READABLE | WRITABLE, edge-triggered):
//! a flag is set by an event and cleared only by `WouldBlock` or by a short read/write
//! (fewer bytes than asked means the kernel buffer is drained/full, and the next change
//! raises a new edge). `Interrupted` is retried.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use mio::net::TcpStream;

use crate::pattern::Pattern;
use crate::stats::Stats;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Non-blocking connect in progress.
    Connecting,
    /// Closed loop: every completed echo issues a new message.
    Running,
    /// No new messages; waiting for the echoes still owed.
    Finishing,
    /// Our FIN is sent; waiting for the server's FIN (read returns 0).
    Closing,
}

/// Why a connection ended early. Each maps to one counter in [`crate::stats::Errors`].
#[derive(Debug)]
pub enum Fault {
    Connect(io::Error),
    Reset(io::Error),
    EarlyEof,
    BadBytes(u64),
    Other(io::Error),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Connect(e) => write!(f, "connect failed: {e}"),
            Fault::Reset(e) => write!(f, "reset by server: {e}"),
            Fault::EarlyEof => write!(f, "server closed while echoes were owed"),
            Fault::BadBytes(n) => write!(f, "{n} echoed bytes differ from the bytes sent"),
            Fault::Other(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// What the caller does with the connection after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Keep,
    /// Closed cleanly (both FINs exchanged); drop it.
    Done,
}

/// State shared by all connections, owned by the event loop.
pub struct Shared {
    /// One receive buffer for every connection; its length is the read size.
    pub buf: Vec<u8>,
    pub pattern: Pattern,
    pub stats: Stats,
    /// Message size in bytes.
    pub size: usize,
    /// Messages kept in flight per connection.
    pub depth: usize,
    /// Completed messages are counted and timed only while this is true.
    pub measuring: bool,
    /// Connections that completed at least one echo (the server has accepted them).
    pub echoed_once: usize,
    /// `--messages`: messages each connection issues in all, then it finishes.
    pub limit: Option<u64>,
}

pub struct Conn {
    stream: TcpStream,
    seed: usize,
    state: State,
    readable: bool,
    writable: bool,
    /// Stream offset up to which messages were issued (queued for sending).
    issued: u64,
    /// Stream offset up to which bytes were written to the socket. `sent <= issued`.
    sent: u64,
    /// Stream offset up to which echoed bytes were received and checked. `recvd <= sent`.
    recvd: u64,
    /// Issue time of each message not yet fully echoed, oldest first.
    in_flight: VecDeque<Instant>,
    /// At least one echo completed.
    echoed: bool,
}

impl Conn {
    /// A connection whose non-blocking connect was just started.
    pub fn connecting(stream: TcpStream, index: usize, depth: usize) -> Conn {
        Conn {
            stream,
            seed: Pattern::seed(index),
            state: State::Connecting,
            readable: false,
            writable: false,
            issued: 0,
            sent: 0,
            recvd: 0,
            in_flight: VecDeque::with_capacity(depth),
            echoed: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    fn set_state(&mut self, next: State) {
        self.state = next;
    }

    /// Handle a readiness event.
    pub fn on_ready(
        &mut self,
        readable: bool,
        writable: bool,
        now: Instant,
        sh: &mut Shared,
    ) -> Result<Step, Fault> {
        self.readable |= readable;
        self.writable |= writable;
        if self.state == State::Connecting {
            if !self.writable && !self.readable {
                return Ok(Step::Keep);
            }
            if !self.finish_connect()? {
                return Ok(Step::Keep);
            }
            self.set_state(State::Running);
            for _ in 0..sh.depth {
                self.issue_or_finish(now, sh);
            }
        }
        self.pump(now, sh)
    }

    /// Stop issuing messages; once every owed echo is in, send our FIN.
    pub fn finish(&mut self) -> Result<Step, Fault> {
        if self.state == State::Running {
            self.set_state(State::Finishing);
        }
        self.close_if_settled()
    }

    /// Move data until the socket has nothing more to give or take right now.
    fn pump(&mut self, now: Instant, sh: &mut Shared) -> Result<Step, Fault> {
        loop {
            self.flush(sh)?;
            if !self.readable {
                return Ok(Step::Keep);
            }
            if self.read_once(now, sh)? == Step::Done {
                return Ok(Step::Done);
            }
        }
    }

    /// Step 4 and 5 of mio's `TcpStream::connect` recipe. `Ok(false)`: not yet.
    fn finish_connect(&mut self) -> Result<bool, Fault> {
        match self.stream.take_error() {
            Ok(Some(e)) | Err(e) => return Err(Fault::Connect(e)),
            Ok(None) => {}
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                // Small messages must not wait for Nagle; errors here are harmless.
                let _ = self.stream.set_nodelay(true);
                Ok(true)
            }
            Err(e)
                if e.kind() == io::ErrorKind::NotConnected
                    || e.raw_os_error() == Some(libc::EINPROGRESS) =>
            {
                self.writable = false;
                self.readable = false;
                Ok(false)
            }
            Err(e) => Err(Fault::Connect(e)),
        }
    }

    /// While running, queue the next message, or finish once `--messages` are issued.
    fn issue_or_finish(&mut self, now: Instant, sh: &Shared) {
        if self.state != State::Running {
            return;
        }
        let size = sh.size as u64;
        match sh.limit {
            Some(limit) if self.issued / size >= limit => self.set_state(State::Finishing),
            _ => self.issue(now, sh.size),
        }
    }

    /// Queue one more message.
    fn issue(&mut self, now: Instant, size: usize) {
        self.issued += size as u64;
        self.in_flight.push_back(now);
    }

    /// Write issued bytes while the socket takes them.
    fn flush(&mut self, sh: &Shared) -> Result<(), Fault> {
        while self.writable && self.sent < self.issued {
            let want = (self.issued - self.sent).min(usize::MAX as u64) as usize;
            let chunk = sh.pattern.slice(self.seed, self.sent, want);
            match self.stream.write(chunk) {
                Ok(n) => {
                    self.sent += n as u64;
                    if n < chunk.len() {
                        self.writable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(())
    }

    /// One read into the shared buffer: check it, complete messages, issue new ones.
    fn read_once(&mut self, now: Instant, sh: &mut Shared) -> Result<Step, Fault> {
        let n = match self.stream.read(&mut sh.buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                return Ok(Step::Keep);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Step::Keep),
            Err(e) => return Err(classify(e)),
        };
        if n < sh.buf.len() {
            // Short read: the receive queue is empty; new data raises a new edge.
            self.readable = false;
        }
        if n == 0 {
            return if self.state == State::Closing {
                Ok(Step::Done)
            } else {
                Err(Fault::EarlyEof)
            };
        }
        let got = &sh.buf[..n];
        if self.recvd + n as u64 > self.sent {
            // More bytes than we ever sent: count the excess as bad.
            return Err(Fault::BadBytes(self.recvd + n as u64 - self.sent));
        }
        let bad = sh.pattern.mismatches(self.seed, self.recvd, got);
        if bad > 0 {
            return Err(Fault::BadBytes(bad));
        }
        let size = sh.size as u64;
        let done_before = self.recvd / size;
        self.recvd += n as u64;
        let completed = self.recvd / size - done_before;
        if completed > 0 && !self.echoed {
            self.echoed = true;
            sh.echoed_once += 1;
        }
        for _ in 0..completed {
            let issued_at = self
                .in_flight
                .pop_front()
                .expect("invariant: every received byte belongs to an issued message");
            if sh.measuring {
                sh.stats.record(now.saturating_duration_since(issued_at));
            }
            self.issue_or_finish(now, sh);
        }
        self.close_if_settled()
    }

    /// In `Finishing` with nothing owed: send FIN and wait for the server's.
    fn close_if_settled(&mut self) -> Result<Step, Fault> {
        if self.state == State::Finishing && self.in_flight.is_empty() {
            match self.stream.shutdown(Shutdown::Write) {
                Ok(()) => self.set_state(State::Closing),
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(Step::Keep)
    }

    /// Whether this connection still waits on the server (used at the drain deadline).
    pub fn owes(&self) -> bool {
        !self.in_flight.is_empty() || self.state == State::Closing
    }
}

fn classify(e: io::Error) -> Fault {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Fault::Reset(e),
        _ => Fault::Other(e),
    }
}
