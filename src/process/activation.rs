//! Inherited listening sockets: systemd socket activation (`sd_listen_fds`)
//! and the hand-over from a previous tcp-reactor during an upgrade.
//!
//! The protocol: `LISTEN_FDS=n` says descriptors 3 … 3+n-1 are listening
//! sockets, `LISTEN_FDNAMES` optionally names them (colon-separated), and
//! `LISTEN_PID` names the process they are meant for — a child that
//! inherits the environment by accident must not take them. An upgrade
//! hand-over (see [`crate::process::upgrade`]) cannot know the new pid before the
//! fork, so it leaves `LISTEN_PID` unset and names the parent instead in
//! `TCP_REACTOR_UPGRADE_PPID`, which the new process checks against
//! `getppid()`.
//!
//! Each descriptor must be a TCP stream socket in listening state; it is
//! made close-on-exec and non-blocking. The variables are removed so that
//! our own children do not inherit them. Call [`take`] early in `main`,
//! while the process is single-threaded.

use std::env;
use std::net::TcpListener;
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};

use socket2::{Domain, SockRef, Type};

use crate::error::Error;

/// First inherited descriptor (after stdin, stdout, stderr).
pub const LISTEN_FDS_START: RawFd = 3;
/// Names the parent of an upgrade hand-over, in place of `LISTEN_PID`.
pub const UPGRADE_PPID_VAR: &str = "TCP_REACTOR_UPGRADE_PPID";

/// Sockets handed to us.
#[derive(Debug)]
pub struct Inherited {
    /// The listening sockets, in descriptor order.
    pub listeners: Vec<TcpListener>,
    /// Their names from `LISTEN_FDNAMES` (`unknown` where none was given).
    pub names: Vec<String>,
    /// True when they came from a previous tcp-reactor (an upgrade).
    pub from_upgrade: bool,
}

/// Take the inherited listening sockets, if the environment hands us any.
pub fn take() -> Result<Option<Inherited>, Error> {
    let Some(count) = env::var("LISTEN_FDS").ok() else {
        return Ok(None);
    };
    let listen_pid = env::var("LISTEN_PID").ok();
    let upgrade_ppid = env::var(UPGRADE_PPID_VAR).ok();
    let names = env::var("LISTEN_FDNAMES").ok();
    for var in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        UPGRADE_PPID_VAR,
    ] {
        env::remove_var(var);
    }
    let pid = std::process::id().to_string();
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() }.to_string();
    let from_upgrade = listen_pid.is_none() && upgrade_ppid.as_deref() == Some(&ppid);
    if listen_pid.as_deref() != Some(&pid) && !from_upgrade {
        log::debug!("LISTEN_FDS is set but meant for another process: ignored");
        return Ok(None);
    }
    let count: RawFd = count.trim().parse().map_err(|_| Error::Inherited {
        fd: LISTEN_FDS_START,
        problem: "LISTEN_FDS is not a number",
    })?;
    if !(1..=1024).contains(&count) {
        return Ok(None);
    }
    let mut names: Vec<String> = names
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    names.resize(count as usize, "unknown".to_owned());
    let mut listeners = Vec::with_capacity(count as usize);
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + count {
        check(fd)?;
        // SAFETY: `check` proved `fd` is an open socket; LISTEN_FDS hands
        // its ownership to us and nothing else in this process uses it.
        listeners.push(unsafe { TcpListener::from_raw_fd(fd) });
    }
    for l in &listeners {
        SockRef::from(l)
            .set_cloexec(true)
            .and_then(|()| l.set_nonblocking(true))
            .map_err(|source| Error::Setup {
                what: "an inherited socket",
                source,
            })?;
    }
    Ok(Some(Inherited {
        listeners,
        names,
        from_upgrade,
    }))
}

/// Is `fd` an open TCP stream socket in listening state?
fn check(fd: RawFd) -> Result<(), Error> {
    let bad = |problem| Error::Inherited { fd, problem };
    // SAFETY: fstat only writes into the struct we pass.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(bad("is not open"));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(bad("is not a socket"));
    }
    // SAFETY: `fd` is open (fstat succeeded) and outlives this borrow.
    let fd_ref = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = SockRef::from(&fd_ref);
    match sock.domain() {
        Ok(d) if d == Domain::IPV4 || d == Domain::IPV6 => {}
        _ => return Err(bad("is not a TCP/IP socket")),
    }
    if sock.r#type().ok() != Some(Type::STREAM) {
        return Err(bad("is not a stream socket"));
    }
    if !sock.is_listener().unwrap_or(false) {
        return Err(bad("is not listening"));
    }
    Ok(())
}
