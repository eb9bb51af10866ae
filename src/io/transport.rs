//! What a connection reads and writes: a socket, or a stage over one.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use crate::base::close::StageFailure;
use crate::base::counters::Stats;

/// A byte stream a connection can run on: a TCP socket, a stage over one
/// (TLS, see [`stack`](crate::io::stack)), or a test double. The hooks with defaults are
/// what a stage knows and a socket does not; a socket keeps the defaults.
pub trait Transport: Read + Write {
    /// Send our FIN: shut down the write half only.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// One read, as [`Read::read`]; the hot path calls this one.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    /// One write, as [`Write::write`]; the hot path calls this one.
    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write(buf)
    }

    /// Bytes the stage has taken but the socket has not (sealed TLS
    /// records). Counted in what the connection owes, so in `wants_write` and the
    /// watermarks: no edge announces them, the next writable edge must.
    fn owed(&self) -> usize {
        0
    }

    /// Write what [`Transport::owed`] counts: `Ok(false)` if the socket
    /// would block first.
    fn flush_owed(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// Our output ends (TLS queues close_notify, to go before our FIN).
    /// Returns whether it queued anything. Called once output is flushed.
    fn end_output(&mut self) -> bool {
        false
    }

    /// The PROXY [`preamble`](crate::io::proxy::preamble) stage is done; `rest` is what followed the
    /// header, already out of the socket. Returns whether this stage took
    /// those bytes as its own (TLS records) rather than payload for the
    /// protocol. Until then a stage passes bytes through untouched.
    fn preamble_done(&mut self, _rest: &[u8]) -> bool {
        false
    }

    /// A deadline of the stage's own (the TLS handshake): when, its name
    /// for the trace, and the reason to close with when it passes.
    fn stage_deadline(&self) -> Option<StageDeadline> {
        None
    }

    /// Why this stage refused the connection, once a call has failed
    /// because of it (TLS: a malformed record, the peer closed mid-handshake…).
    /// `None` for a socket: its errors are the kernel's.
    fn failure(&self) -> Option<StageFailure> {
        None
    }

    /// Add what this stage counted since the last call (TLS handshakes,
    /// ignored server names) to the loop's counters. Called after each
    /// drive; a socket counts nothing.
    #[inline(always)]
    fn take_counts(&mut self, _stats: &mut Stats) {}

    /// A handshake (TLS) has begun and not finished: a close now is a
    /// failed handshake, for the metrics.
    fn handshaking(&self) -> bool {
        false
    }

    /// The kernel reported the peer's FIN (a readiness event's
    /// `read-closed`). A stage that stops at a short read even when it
    /// decrypted nothing reads on to `Ok(0)` from now: no further edge
    /// would announce the FIN.
    fn peer_fin(&mut self) {}
}

impl Transport for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    /// `recvfrom(fd, buf, len, 0)` as a plain system call. libc's `recv`
    /// is a thread-cancellation point: in a process with more than one
    /// thread (the supervisor's) it brackets every call with
    /// `__pthread_enable/disable_asynccancel`, about 60 instructions a
    /// call that Rust, which never cancels threads, does not need.
    #[cfg(target_os = "linux")]
    #[inline]
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the
        // whole call, and the descriptor is this socket's; the kernel
        // writes at most `buf.len()` bytes and keeps no pointer.
        let n = unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                libc::c_long::from(self.as_raw_fd()),
                buf.as_mut_ptr(),
                buf.len(),
                0 as libc::c_long,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// `sendto(fd, buf, len, MSG_NOSIGNAL)` as a plain system call (see
    /// `recv`). `MSG_NOSIGNAL`, as std uses: a write to a reset peer is
    /// `EPIPE`, not a `SIGPIPE`.
    #[cfg(target_os = "linux")]
    #[inline]
    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the
        // whole call, and the descriptor is this socket's; the kernel
        // keeps no pointer.
        let n = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                libc::c_long::from(self.as_raw_fd()),
                buf.as_ptr(),
                buf.len(),
                libc::c_long::from(libc::MSG_NOSIGNAL),
                std::ptr::null::<libc::sockaddr>(),
                0 as libc::c_long,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

/// A deadline a stage below the protocol keeps ([`Transport::stage_deadline`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageDeadline {
    /// When it passes.
    pub at: Instant,
    /// What it is, for the trace (`timer armed: {name} in …`).
    pub name: &'static str,
    /// The reason the connection is closed with when it passes.
    pub reason: StageFailure,
}
