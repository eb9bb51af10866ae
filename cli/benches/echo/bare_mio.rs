//! The floor: the leanest echo loop mio allows, to measure tcp-reactor against.
//!
//! Owns: one listener, one slab of connections, one shared 64 KiB read buffer. No state
//! machine, no timers, no logging on the hot path (only the `listening on`, `recv quit
//! signal` and `All done.` lines of the server contract). Must not: cost more than the
//! unavoidable syscalls, so that what tcp-reactor spends above it is visible.
//!
//! The rules that keep it at about 2 syscalls per message:
//! * Each socket is registered once, READABLE | WRITABLE, edge-triggered (mio always is),
//!   and never re-registered: readiness is tracked in two flags per connection. An event
//!   sets them; `WouldBlock` or a short transfer clears them.
//! * A read shorter than the buffer means the receive queue is empty: the socket is
//!   treated as drained (the next arrival raises a new edge) instead of reading again to
//!   `WouldBlock`. Tokio does the same.
//! * Data is read into the shared buffer and written straight back from it; only the
//!   unwritten tail is copied into the connection. While a tail is pending the
//!   connection is not read (back-pressure: the peer's window fills up instead).
//! * Closing a socket removes it from epoll, so connections are dropped without
//!   `deregister` (no `epoll_ctl` per close).
//!
//! Graceful drain (SIGTERM, SIGINT, SIGQUIT): the listener is closed, every connection
//! stops reading, writes its pending tail, sends FIN, then discards input until the
//! peer's FIN. The process exits 0 when all are closed, or after [`DRAIN_TIMEOUT`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use socket2::{Domain, Socket, Type};

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// The shared read buffer. A read shorter than this means the socket is drained.
const BUF_LEN: usize = 64 * 1024;
/// Same accept backlog as tokio's `TcpListener::bind`.
const BACKLOG: i32 = 1024;
/// How long a drain may wait for peers to close.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

struct Conn {
    stream: TcpStream,
    readable: bool,
    writable: bool,
    /// Echo bytes the socket did not take yet.
    tail: Vec<u8>,
    /// The peer sent FIN.
    eof: bool,
    /// Draining: stop echoing; FIN once the tail is out.
    draining: bool,
    /// Our FIN is sent; input is discarded until the peer's FIN.
    shut: bool,
}

/// Bind, print the contract's `listening on` line, serve until a quit signal and drain.
pub fn serve(addr: SocketAddr) -> io::Result<()> {
    let mut listener = bind(addr)?;
    log::info!("listening on {}", listener.local_addr()?);
    let mut poll = Poll::new()?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT])?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    let mut listener = Some(listener);
    let mut conns: Slab<Conn> = Slab::with_capacity(1024);
    let mut buf = vec![0u8; BUF_LEN];
    let mut events = Events::with_capacity(1024);
    let mut drain_deadline: Option<Instant> = None;

    loop {
        let timeout = drain_deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => {
                    if let Some(l) = listener.as_ref() {
                        accept_all(l, &poll, &mut conns);
                    }
                }
                SIGNALS => {
                    if signals.pending().next().is_some() && drain_deadline.is_none() {
                        log::info!("recv quit signal");
                        listener = None;
                        drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                        let keys: Vec<usize> = conns.iter().map(|(k, _)| k).collect();
                        for key in keys {
                            conns[key].draining = true;
                            if !drive(&mut conns[key], &mut buf) {
                                conns.remove(key);
                            }
                        }
                    }
                }
                Token(key) => {
                    let Some(conn) = conns.get_mut(key) else {
                        continue;
                    };
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        conn.readable = true;
                    }
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        conn.writable = true;
                    }
                    if !drive(conn, &mut buf) {
                        conns.remove(key);
                    }
                }
            }
        }
        if let Some(deadline) = drain_deadline {
            if conns.is_empty() || Instant::now() >= deadline {
                break;
            }
        }
    }
    log::info!("All done.");
    Ok(())
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

fn accept_all(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll
                    .registry()
                    .register(&mut stream, Token(entry.key()), interest)
                    .is_ok()
                {
                    entry.insert(Conn {
                        stream,
                        readable: false,
                        writable: false,
                        tail: Vec::new(),
                        eof: false,
                        draining: false,
                        shut: false,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // WouldBlock: done. Anything else (EMFILE, ...): the next edge retries.
            Err(_) => return,
        }
    }
}

/// Move bytes until the socket has nothing more to give or take. `false`: close it.
fn drive(c: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        if !c.tail.is_empty() {
            if !c.writable {
                return true;
            }
            match write_some(&mut c.stream, &c.tail) {
                Ok(n) => {
                    c.tail.drain(..n);
                    if !c.tail.is_empty() {
                        c.writable = false;
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        if c.eof {
            return false;
        }
        if c.draining && !c.shut {
            if c.stream.shutdown(Shutdown::Write).is_err() {
                return false;
            }
            c.shut = true;
        }
        if !c.readable {
            return true;
        }
        let n = match c.stream.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.readable = false;
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        if n < buf.len() {
            c.readable = false;
        }
        if n == 0 {
            c.eof = true;
            continue;
        }
        if c.shut {
            continue;
        }
        let written = if c.writable {
            match write_some(&mut c.stream, &buf[..n]) {
                Ok(m) => m,
                Err(_) => return false,
            }
        } else {
            0
        };
        if written < n {
            c.writable = false;
            c.tail.extend_from_slice(&buf[written..n]);
        }
    }
}

/// One `write`, retried on `Interrupted`; `WouldBlock` reads as 0 bytes taken.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
