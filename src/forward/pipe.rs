//! splice(2) through a pipe: bytes from one socket to another without
//! passing through user space, and the pool that keeps idle pairs from
//! holding pipes.
//!
//! A [`Pipe`] counts what it holds (`held`): the kernel says how many bytes
//! each splice moved, and only we fill and empty it. That count is what
//! tells a socket that would block from a pipe that is full: a splice in
//! that returns `EAGAIN` while the pipe is empty proves the *socket* empty.
//!
//! Pipes are taken from the loop's [`PipePool`] when a direction starts
//! splicing and given back when it is empty again, so an idle proxied
//! pair holds no pipe (two descriptors and 64 KiB of kernel memory each).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What one splice in asks for at most: a default pipe's capacity (16
/// pages). A splice can move less when the data sits in many small
/// buffers (each uses one of the pipe's 16 slots).
pub(crate) const PIPE_SIZE: usize = 64 * 1024;

/// Pipes a loop keeps for reuse; more are closed when given back.
const POOL_MAX: usize = 64;

/// A non-blocking pipe and the bytes in it.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    held: usize,
}

impl Pipe {
    /// A new pipe, both ends non-blocking and close-on-exec.
    pub(crate) fn new() -> io::Result<Self> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both descriptors are open and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Self {
            read,
            write,
            held: 0,
        })
    }

    /// Bytes in the pipe, not yet spliced out.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Move up to the pipe's free room from socket `from` into the pipe:
    /// `Ok(0)` is the peer's FIN.
    pub(crate) fn fill_from(&mut self, from: RawFd) -> io::Result<usize> {
        let room = PIPE_SIZE.saturating_sub(self.held);
        let n = splice(from, self.write.as_raw_fd(), room)?;
        self.held += n;
        Ok(n)
    }

    /// Move what the pipe holds out to socket `to`.
    pub(crate) fn drain_to(&mut self, to: RawFd) -> io::Result<usize> {
        let n = splice(self.read.as_raw_fd(), to, self.held)?;
        self.held -= n.min(self.held);
        Ok(n)
    }
}

/// One `splice(2)` call, non-blocking, retried on `EINTR`.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the call; no offsets are
        // passed (both ends are a socket or a pipe).
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// The loop's empty pipes, for directions that start splicing.
#[derive(Debug, Default)]
pub(crate) struct PipePool {
    free: Vec<Pipe>,
    /// Pipes handed out and not given back.
    pub(crate) out: usize,
}

impl PipePool {
    /// An empty pipe: a kept one, or a new one.
    pub(crate) fn take(&mut self) -> io::Result<Pipe> {
        let pipe = match self.free.pop() {
            Some(pipe) => pipe,
            None => Pipe::new()?,
        };
        self.out += 1;
        Ok(pipe)
    }

    /// A pipe back: kept if it is empty and the pool has room, else closed
    /// (a pipe with bytes in it belongs to a pair that was cut off).
    pub(crate) fn give(&mut self, pipe: Pipe) {
        self.out = self.out.saturating_sub(1);
        if pipe.held == 0 && self.free.len() < POOL_MAX {
            self.free.push(pipe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn bytes_cross_from_socket_to_socket_through_the_pipe() {
        let (mut client, from) = pair();
        let (to, mut server) = pair();
        from.set_nonblocking(true).unwrap();
        let mut pipe = Pipe::new().unwrap();
        // Empty socket and empty pipe: EAGAIN proves the socket empty.
        let err = pipe.fill_from(from.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        client.write_all(b"hello, splice").unwrap();
        let mut moved = 0;
        for _ in 0..100 {
            match pipe.fill_from(from.as_raw_fd()) {
                Ok(n) => moved += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && moved == 13 => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((moved, pipe.held()), (13, 13));
        assert_eq!(pipe.drain_to(to.as_raw_fd()).unwrap(), 13);
        assert_eq!(pipe.held(), 0);
        let mut got = [0u8; 13];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello, splice");
        // The FIN: zero bytes moved.
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(pipe.fill_from(from.as_raw_fd()).unwrap(), 0);
    }

    #[test]
    fn the_pool_keeps_empty_pipes_and_counts_what_is_out() {
        let mut pool = PipePool::default();
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert_eq!(pool.out, 2);
        pool.give(a);
        pool.give(b);
        assert_eq!((pool.out, pool.free.len()), (0, 2));
        let mut full = pool.take().unwrap();
        full.held = 5; // as if cut off with bytes in it
        pool.give(full);
        assert_eq!(
            (pool.out, pool.free.len()),
            (0, 1),
            "a dirty pipe is closed"
        );
    }
}
