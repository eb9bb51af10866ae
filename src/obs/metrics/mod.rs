//! What the process shows an operator: Prometheus metrics over HTTP.
//!
//! | file | role | may not |
//! |---|---|---|
//! | [`exposition`] | renders counters as Prometheus text (`# HELP`, `# TYPE`, samples) | do I/O |
//! | [`process`] | the standard `process_*` readings from `/proc/self` | run on a loop thread's hot path |
//! | [`endpoint`] | the tiny HTTP/1.1 server for `GET /metrics`, one more token in the supervisor's `Poll` | block, or serve anything but `/metrics` |
//!
//! # Where the numbers come from
//! Each loop keeps its own [`Stats`](crate::base::counters::Stats): plain
//! integers only its thread touches, so the hot path takes no lock and no
//! atomic read-modify-write. A scrape asks every loop for a copy through
//! the stats request the supervisor already uses for `SIGUSR1`
//! (`ShutdownHandle::request_stats`):
//! one bit set in an atomic and a wake-up per loop *per scrape*. Each loop
//! answers on its next turn; when all have answered the supervisor sums
//! them and the endpoint replies. A loop that has finished (during a
//! drain) is counted with the last copy it sent.
//!
//! The endpoint has no authentication: bind it to loopback or a private
//! interface.

pub mod endpoint;
pub mod exposition;
pub mod process;

pub use endpoint::Endpoint;
pub use exposition::{render, Snapshot};

/// Connections waiting in the listen queues of `listeners` (Linux reports a
/// listening socket's accept-queue length in `tcp_info.tcpi_unacked`).
/// `None` when there is no listener left or the kernel does not say.
pub(crate) fn listen_queue(listeners: &[std::net::TcpListener]) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut total = None;
    for listener in listeners {
        // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: valid descriptor, pointer and length for TCP_INFO.
        let rc = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            *total.get_or_insert(0) += u64::from(info.tcpi_unacked);
        }
    }
    total
}
