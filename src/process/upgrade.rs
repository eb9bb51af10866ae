//! Zero-downtime binary upgrade (nginx's `SIGUSR2`), the hand-over half.
//!
//! The running process starts a fresh copy of its executable with the same
//! arguments and hands it the **same listening sockets** — not sibling
//! `SO_REUSEPORT` sockets, whose queued connections would be dropped when
//! the old one closes. The sockets travel as descriptors 3, 4, … with
//! `LISTEN_FDS`, so the new process takes them on the socket-activation
//! path ([`crate::process::activation`]). The `--metrics` listener travels
//! the same way, after them (its number in `TCP_REACTOR_METRICS_FD`): the
//! new process serves metrics on the same socket, where binding the
//! address again would fail while the old process holds it. A pipe's write
//! end travels last (its number in `TCP_REACTOR_READY_FD`): the new process
//! writes one byte once all its loops are listening. Until then the old
//! process keeps accepting; if the pipe reports EOF instead (the new
//! process died) or the byte does not come in time, the old process keeps
//! serving and says why.
//!
//! If the old process dies before the new one is ready, the new one still
//! serves on the sockets it holds; docs/ARCHITECTURE.md ("Inherited sockets
//! and the upgrade hand-over") says what happens when either process dies
//! at each step.

use std::ffi::OsString;
use std::io::{self, Read};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};

use mio::unix::pipe;

use crate::process::activation::{
    LISTEN_FDS_START, METRICS_FD_VAR, READY_FD_VAR, UPGRADE_PPID_VAR,
};

/// An upgrade under way: the new process and the read end of its pipe.
#[derive(Debug)]
pub struct Upgrade {
    /// The new process.
    pub child: Child,
    /// Readable (a byte, or EOF) when the new process is ready or gone.
    pub ready: pipe::Receiver,
}

/// What the readiness pipe said.
#[derive(Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The new process is listening.
    Ready,
    /// It closed the pipe without saying so: it exited or failed.
    Gone,
    /// Nothing yet.
    Pending,
}

impl Upgrade {
    /// Start `exe args…` with `listeners` as its inherited sockets, and
    /// `metrics` as its metrics listener.
    pub fn spawn(
        exe: &PathBuf,
        args: &[OsString],
        listeners: &[TcpListener],
        names: &[String],
        metrics: Option<BorrowedFd<'_>>,
    ) -> io::Result<Self> {
        let (sender, ready) = pipe::new()?;
        // Placed at 3, 4, …: the listeners, the metrics listener, the pipe.
        let mut sources: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
        let count = listeners.len();
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env("LISTEN_FDS", count.to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env_remove("LISTEN_PID")
            .env(UPGRADE_PPID_VAR, std::process::id().to_string())
            .env_remove(METRICS_FD_VAR)
            // systemd's names us; the new process becomes the main one
            // (MAINPID=), and must pet the watchdog (WATCHDOG_USEC) too.
            .env_remove("WATCHDOG_PID");
        if let Some(metrics) = metrics {
            cmd.env(METRICS_FD_VAR, place(sources.len()).to_string());
            sources.push(metrics.as_raw_fd());
        }
        cmd.env(READY_FD_VAR, place(sources.len()).to_string());
        sources.push(sender.as_raw_fd());
        let mut scratch = vec![-1; sources.len()];
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only async-signal-safe functions (fcntl, dup2) on memory
        // allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // First move every source above the target range, so that
                // placing one cannot overwrite another still to be placed.
                for (slot, &fd) in scratch.iter_mut().zip(&sources) {
                    *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 1000);
                    if *slot < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // dup2 clears close-on-exec on the copy: these survive exec.
                for (i, &fd) in scratch.iter().enumerate() {
                    if libc::dup2(fd, LISTEN_FDS_START + i as RawFd) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(sender); // only the child holds the write end now: its exit is EOF
        Ok(Self { child, ready })
    }

    /// Read what the pipe has to say.
    pub(crate) fn poll_ready(&mut self) -> Readiness {
        let mut byte = [0u8; 1];
        loop {
            match self.ready.read(&mut byte) {
                Ok(0) => return Readiness::Gone,
                Ok(_) => return Readiness::Ready,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Readiness::Pending,
                Err(_) => return Readiness::Gone,
            }
        }
    }
}

/// The descriptor the `i`-th handed-over source lands on in the new process.
fn place(i: usize) -> RawFd {
    LISTEN_FDS_START + i as RawFd
}

/// In a process started by [`Upgrade::spawn`]: tell the old process we
/// are ready (write a byte to the pipe it handed over, taken with the
/// sockets by [`activation::take`](crate::process::activation::take), and
/// close it). If the old process is gone the write fails (`EPIPE`; `SIGPIPE`
/// is ignored) and nothing else happens: we serve either way.
pub(crate) fn report_ready(pipe: OwnedFd) {
    let mut pipe = std::fs::File::from(pipe);
    if let Err(e) = std::io::Write::write_all(&mut pipe, b"1") {
        log::info!("upgrade: the previous process did not hear we are ready ({e}): it is gone");
    }
}
