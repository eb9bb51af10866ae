//! One direction of a proxied pair: bytes from one socket to the other,
//! by copy or by splice, with backpressure and the FIN that follows them.
//!
//! # Invariants
//! * What the flow owes its destination is `pending()`: the copy queue
//!   *or* the pipe, never both — a read by copy waits for the pipe to
//!   empty and a splice waits for the queue, so bytes leave in the order
//!   they came.
//! * The flow reads its source only while `pending() < HIGH_WATERMARK`:
//!   a slow destination stops the source (its kernel buffers fill, and
//!   TCP tells the sender). So a direction holds at most
//!   `HIGH_WATERMARK + one read` (128 KiB) in user space, or one pipe.
//! * An empty queue owns no memory and an empty pipe goes back to the
//!   pool: an idle direction costs only this struct.
//! * The FIN travels: once the source has said `Ok(0)` and everything
//!   owed is written, the destination's write half is shut (once).
//!
//! # Edge-triggered reading
//! A copy read shorter than the buffer proves the socket empty (as in
//! `reactor::conn`). A splice cannot: it stops early when the pipe's
//! slots run out. So a splice direction drops the source's readable flag
//! only on `EAGAIN` with an **empty** pipe, which the socket alone can
//! cause.
//!
//! # Copy or splice ([`Splice`])
//! `auto` (the default) starts every direction copying — small messages
//! cost two system calls each way (read, write) that way, against three
//! for splice (in, out, and the `EAGAIN` that proves the socket empty) —
//! and switches a direction to splice when a read fills the whole 64 KiB
//! buffer: bulk data, where not copying pays. It goes back to copying once
//! a splice moves less than a page.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::str::FromStr;

use mio::net::TcpStream;

use crate::base::buffer::Buffer;
use crate::io::stack::Stream;
use crate::io::transport::Transport;

use super::pipe::{Pipe, PipePool};

/// What a direction may owe its destination before it stops reading.
pub(crate) const HIGH_WATERMARK: usize = 64 * 1024;

/// A splice that moves less than this sends an `auto` direction back to copying.
const SPLICE_SMALL: usize = 4096;

/// Reads and writes one direction may make per drive before others get a
/// turn (a pair that yields is driven again next turn).
const BUDGET: usize = 16;

/// When a direction uses `splice(2)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Splice {
    /// Copy small messages, splice bulk data (see the module docs).
    #[default]
    Auto,
    /// Always splice.
    Always,
    /// Never: every byte through user space.
    Never,
}

impl Splice {
    /// The names `--splice` accepts.
    pub const NAMES: &'static [&'static str] = &["auto", "always", "never"];
}

impl FromStr for Splice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Splice::Auto),
            "always" => Ok(Splice::Always),
            "never" => Ok(Splice::Never),
            other => Err(format!(
                "unknown splice mode {other:?} (expected one of: {})",
                Splice::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for Splice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Splice::Auto => "auto",
            Splice::Always => "always",
            Splice::Never => "never",
        })
    }
}

/// What a pair's socket is: a [`Transport`] (a socket, or TLS over one)
/// that says whether bytes may be spliced straight from or to it.
pub(crate) trait Endpoint: Transport {
    /// The socket's descriptor when nothing sits between it and the
    /// bytes (no TLS): then a flow may splice.
    fn splice_fd(&self) -> Option<RawFd>;

    /// The socket under any stage (for socket options).
    fn socket(&self) -> &TcpStream;
}

impl Endpoint for TcpStream {
    #[inline]
    fn splice_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }

    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Endpoint for Stream {
    #[inline]
    fn splice_fd(&self) -> Option<RawFd> {
        match self {
            Stream::Plain(s) => Some(s.as_raw_fd()),
            #[cfg(feature = "tls")]
            Stream::Tls(_) => None,
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

/// One socket of a pair and what its last readiness event said.
#[derive(Debug)]
pub(crate) struct Side<S> {
    pub(crate) sock: S,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The kernel reported the peer's FIN: read on until `Ok(0)`.
    pub(crate) read_closed: bool,
}

impl<S: Endpoint> Side<S> {
    pub(crate) fn new(sock: S) -> Self {
        Self {
            sock,
            readable: false,
            writable: false,
            read_closed: false,
        }
    }

    /// Remember what an event said (cleared only by `WouldBlock`).
    pub(crate) fn on_event(&mut self, event: &mio::event::Event) {
        let error = event.is_error();
        self.readable |= event.is_readable() || error;
        self.writable |= event.is_writable() || event.is_write_closed() || error;
        if event.is_read_closed() && !self.read_closed {
            self.read_closed = true;
            self.sock.peer_fin(); // a TLS stage reads on to Ok(0)
        }
    }
}

/// Which socket of the pair an error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Reading the source.
    Source,
    /// Writing the destination.
    Destination,
}

/// What one pump did.
#[derive(Debug)]
pub(crate) enum Pumped {
    /// Nothing more to do until an event.
    Idle,
    /// The budget ran out with work left.
    Yield,
    /// An error on one end: the pair is over.
    Failed(End, io::Error),
}

/// What a pump borrows from the loop.
pub(crate) struct Tools<'a> {
    pub(crate) scratch: &'a mut [u8],
    pub(crate) pipes: &'a mut PipePool,
    pub(crate) spliced: &'a mut u64,
}

/// One direction's state (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Flow {
    queue: Buffer,
    pipe: Option<Pipe>,
    splicing: bool,
    /// The source said `Ok(0)`.
    pub(crate) eof: bool,
    /// The destination's write half is shut.
    pub(crate) shut: bool,
    /// The destination's output was ended (TLS: close_notify queued).
    ended: bool,
    /// Bytes written to the destination.
    pub(crate) bytes: u64,
}

impl Flow {
    /// A direction that splices from the start (`always`) or not.
    pub(crate) fn new(splice: Splice) -> Self {
        Self {
            splicing: splice == Splice::Always,
            ..Self::default()
        }
    }

    /// Queue `bytes` to go before anything this flow reads (a PROXY
    /// header, and what followed the client's): only before it has read.
    pub(crate) fn announce(&mut self, bytes: &[u8]) {
        debug_assert!(self.pipe.is_none() && self.bytes == 0);
        self.queue.extend(bytes);
    }

    /// Bytes read and not yet written.
    pub(crate) fn pending(&self) -> usize {
        self.queue.len() + self.pipe.as_ref().map_or(0, Pipe::held)
    }

    /// Whether this direction is over: FIN passed on.
    pub(crate) fn done(&self) -> bool {
        self.shut
    }

    /// Give the pipe back (the pair is closing, or the direction is idle).
    pub(crate) fn release(&mut self, pipes: &mut PipePool) {
        if let Some(pipe) = self.pipe.take() {
            pipes.give(pipe);
        }
    }

    /// Move what can be moved from `src` to `dst` now. `name` says, in
    /// the trace, which direction this is.
    pub(crate) fn pump<A: Endpoint, B: Endpoint>(
        &mut self,
        src: &mut Side<A>,
        dst: &mut Side<B>,
        mode: Splice,
        tools: &mut Tools<'_>,
        name: &dyn fmt::Display,
    ) -> Pumped {
        for _ in 0..BUDGET {
            let mut moved = false;
            // 0. Records a TLS destination sealed and the socket refused.
            if dst.sock.owed() > 0 && dst.writable {
                match dst.sock.flush_owed() {
                    Ok(true) => moved = true,
                    Ok(false) => dst.writable = false,
                    Err(e) => return Pumped::Failed(End::Destination, e),
                }
            }
            // 1. What is owed goes first.
            if self.pending() > 0 && dst.writable && dst.sock.owed() == 0 {
                match self.write(dst, tools) {
                    Ok(n) => {
                        log::trace!("{name}: wrote {n} B, {} B still owed", self.pending());
                        moved |= n > 0
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        log::trace!("{name}: write would block, {} B owed", self.pending());
                        dst.writable = false
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                    Err(e) => return Pumped::Failed(End::Destination, e),
                }
            }
            if !self.splicing && self.pipe.as_ref().is_some_and(|p| p.held() == 0) {
                self.release(tools.pipes);
            }
            // 2. Then more, while under the watermark.
            if !self.eof && src.readable && self.pending() < HIGH_WATERMARK {
                match self.read(src, dst, mode, tools, name) {
                    Ok(progress) => moved |= progress,
                    Err((end, e)) => return Pumped::Failed(end, e),
                }
            }
            // 3. The FIN follows the last byte (a TLS destination's
            // close_notify first).
            if self.eof && self.pending() == 0 && !self.shut && dst.sock.owed() == 0 {
                if !self.ended {
                    self.ended = true;
                    if dst.sock.end_output() {
                        continue; // close_notify queued: flush it, then the FIN
                    }
                }
                self.shut = true;
                self.release(tools.pipes);
                log::trace!(
                    "{name}: FIN passed on (shutdown write) after {} B",
                    self.bytes
                );
                match dst.sock.shutdown_write() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => return Pumped::Failed(End::Destination, e),
                }
            }
            if !moved {
                return Pumped::Idle;
            }
        }
        Pumped::Yield
    }

    /// One write of what is owed: the copy queue, else the pipe.
    fn write<B: Endpoint>(
        &mut self,
        dst: &mut Side<B>,
        tools: &mut Tools<'_>,
    ) -> io::Result<usize> {
        if !self.queue.is_empty() {
            let n = dst.sock.send(self.queue.as_slice())?;
            self.queue.consume(n);
            self.bytes += n as u64;
            return Ok(n);
        }
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(0);
        };
        let Some(fd) = dst.sock.splice_fd() else {
            return Ok(0); // never: a direction with a stage does not splice
        };
        let n = pipe.drain_to(fd)?;
        self.bytes += n as u64;
        *tools.spliced += n as u64;
        Ok(n)
    }

    /// One read from `src`: spliced into the pipe, or copied into the
    /// scratch buffer and written straight on (what `dst` refuses is
    /// queued). Sets `eof` at the FIN. Returns whether anything happened
    /// (`WouldBlock` is nothing; `Interrupted` asks for another try).
    fn read<A: Endpoint, B: Endpoint>(
        &mut self,
        src: &mut Side<A>,
        dst: &mut Side<B>,
        mode: Splice,
        tools: &mut Tools<'_>,
        name: &dyn fmt::Display,
    ) -> Result<bool, (End, io::Error)> {
        if self.splicing && (src.sock.splice_fd().is_none() || dst.sock.splice_fd().is_none()) {
            self.splicing = false; // a stage (TLS) on either side: copy
        }
        if self.splicing && self.queue.is_empty() {
            return self.splice_in(src, mode, tools, name);
        }
        if self.pipe.as_ref().is_some_and(|p| p.held() > 0) {
            return Ok(false); // copying waits for the pipe to empty
        }
        let room = if self.queue.is_empty() {
            tools.scratch.len()
        } else {
            (HIGH_WATERMARK - self.pending()).min(tools.scratch.len())
        };
        let full = tools.scratch.len();
        let buf = &mut tools.scratch[..room];
        let n = match src.sock.recv(buf) {
            Ok(n) => n,
            Err(e) => return settle(e, End::Source, &mut src.readable),
        };
        if n == 0 {
            self.eof = true;
            log::trace!("{name}: FIN read");
            return Ok(true);
        }
        if n < room && !src.read_closed {
            src.readable = false; // a short read: the socket is empty
        }
        log::trace!(
            "{name}: read {n} B{}",
            if src.readable {
                ""
            } else {
                " (short read: drained)"
            }
        );
        if mode == Splice::Auto && n == full {
            log::trace!("{name}: a full {n} B read: splicing from now");
            self.splicing = true;
        }
        let mut written = 0;
        if self.queue.is_empty() && dst.writable && dst.sock.owed() == 0 {
            match dst.sock.send(&buf[..n]) {
                Ok(w) => written = w,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    settle(e, End::Destination, &mut dst.writable)?;
                }
            }
        }
        self.bytes += written as u64;
        if written < n {
            self.queue.extend(&buf[written..n]);
        }
        Ok(true)
    }

    /// One splice from `src` into the pipe (taken from the pool first).
    fn splice_in<A: Endpoint>(
        &mut self,
        src: &mut Side<A>,
        mode: Splice,
        tools: &mut Tools<'_>,
        name: &dyn fmt::Display,
    ) -> Result<bool, (End, io::Error)> {
        if self.pipe.is_none() {
            match tools.pipes.take() {
                Ok(pipe) => self.pipe = Some(pipe),
                Err(e) => {
                    log::debug!("{name}: no pipe ({e}): copying instead");
                    self.splicing = false;
                    return Ok(true);
                }
            }
        }
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(false);
        };
        let Some(fd) = src.sock.splice_fd() else {
            return Ok(false);
        };
        match pipe.fill_from(fd) {
            Ok(0) => {
                self.eof = true;
                log::trace!("{name}: FIN read");
                Ok(true)
            }
            Ok(n) => {
                if mode == Splice::Auto && n < SPLICE_SMALL {
                    log::trace!("{name}: spliced {n} B, a small message: copying from now");
                    self.splicing = false;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if pipe.held() == 0 {
                    src.readable = false; // an empty pipe: the socket is empty
                }
                Ok(false)
            }
            Err(e) => settle(e, End::Source, &mut src.readable),
        }
    }
}

/// What an I/O error means for a pump: `WouldBlock` clears the flag that
/// promised readiness (nothing happened), `Interrupted` asks for another
/// try, anything else ends the pair, blamed on `end`.
fn settle(e: io::Error, end: End, ready: &mut bool) -> Result<bool, (End, io::Error)> {
    match e.kind() {
        io::ErrorKind::WouldBlock => {
            *ready = false;
            Ok(false)
        }
        io::ErrorKind::Interrupted => Ok(true),
        _ => Err((end, e)),
    }
}
