//! Inherited sockets: systemd socket activation (`sd_listen_fds`) and the
//! hand-over from a previous tcp-reactor during an upgrade — and, with
//! them, every environment variable the process inherits and consumes.
//!
//! The protocol: `LISTEN_FDS=n` says descriptors 3 … 3+n-1 are listening
//! sockets, `LISTEN_FDNAMES` optionally names them (colon-separated), and
//! `LISTEN_PID` names the process they are meant for — a child that
//! inherits the environment by accident must not take them.
//!
//! An upgrade hand-over (see `crate::process::upgrade`) cannot know the
//! new pid before the fork, so it leaves `LISTEN_PID` unset and names the
//! previous process in `TCP_REACTOR_UPGRADE_PPID` instead. That process is
//! our parent when we start, but need not be by the time we look: it may
//! have died (a `kill -9` just after `SIGUSR2`) and we were re-parented, or
//! a wrapper script started us. Either way the sockets are ours — nothing
//! else holds the variable (we clear it, as below, before any child can
//! see it) — and serving on them is the only way the address keeps
//! listening: binding it ourselves would fail while the old socket lives in
//! our own descriptors. So the marker alone hands them over; the parent is
//! only compared to say, in the log, when the previous process is gone.
//! The hand-over may also carry the previous process's `--metrics`
//! listener (`TCP_REACTOR_METRICS_FD`) and the write end of its readiness
//! pipe (`TCP_REACTOR_READY_FD`).
//!
//! Each listening descriptor must be a TCP stream socket in listening
//! state; it is made close-on-exec and non-blocking. The readiness pipe
//! must be a pipe.
//!
//! # Before any thread
//! [`take`] reads *and removes* every one of these variables, so that our
//! own children never inherit them. Changing the environment while another
//! thread may read it is undefined behaviour in glibc (`setenv`/`unsetenv`
//! against a concurrent `getenv`, which C code such as `getaddrinfo` or
//! `localtime` calls without Rust's lock); edition 2024 makes
//! `env::remove_var` `unsafe` for that reason. So [`take`] refuses to run
//! once the process has a second thread, and the binary calls it before it
//! starts any. Nothing in the crate touches the environment after it.

use std::env;
use std::net::TcpListener;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, SockRef, Type};

use crate::base::error::Error;

/// First inherited descriptor (after stdin, stdout, stderr).
pub(crate) const LISTEN_FDS_START: RawFd = 3;
/// Names the previous process of an upgrade hand-over, in place of `LISTEN_PID`.
pub(crate) const UPGRADE_PPID_VAR: &str = "TCP_REACTOR_UPGRADE_PPID";
/// Names the readiness pipe's write end in an upgraded process.
pub(crate) const READY_FD_VAR: &str = "TCP_REACTOR_READY_FD";
/// Names the previous process's `--metrics` listener in an upgraded process.
pub(crate) const METRICS_FD_VAR: &str = "TCP_REACTOR_METRICS_FD";

/// Every variable [`take`] consumes (and removes).
const CONSUMED: [&str; 6] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    UPGRADE_PPID_VAR,
    READY_FD_VAR,
    METRICS_FD_VAR,
];

/// Sockets handed to us.
#[derive(Debug)]
pub struct Inherited {
    /// The listening sockets, in descriptor order.
    pub listeners: Vec<TcpListener>,
    /// Their names from `LISTEN_FDNAMES` (`unknown` where none was given).
    pub names: Vec<String>,
    /// Set when they came from a previous tcp-reactor (an upgrade).
    pub upgrade: Option<Handover>,
}

/// What a previous tcp-reactor handed over besides its listeners.
#[derive(Debug)]
pub struct Handover {
    /// Its pid.
    pub from: u32,
    /// Whether it was already gone (not our parent) when we looked.
    pub orphaned: bool,
    /// Its `--metrics` listener, if it served metrics.
    pub metrics: Option<TcpListener>,
    /// The write end of its readiness pipe: one byte once we listen (see
    /// `report_ready`).
    pub ready: Option<OwnedFd>,
}

/// Take the inherited sockets, if the environment hands us any, and remove
/// every variable that says so. Call it before the process starts a
/// second thread (see the module docs); afterwards it fails with
/// [`Error::Setup`] without touching the environment.
pub fn take() -> Result<Option<Inherited>, Error> {
    if let Some(threads) = threads().filter(|&n| n > 1) {
        return Err(Error::Setup {
            what: "inherited sockets",
            source: std::io::Error::other(format!(
                "the environment can only be taken while the process has one thread, not {threads}"
            )),
        });
    }
    let vars: Vec<Option<String>> = CONSUMED.iter().map(|v| env::var(v).ok()).collect();
    for var in CONSUMED {
        // Sound only while no other thread can read the environment (in
        // edition 2024 this call is `unsafe` for that reason): checked above.
        env::remove_var(var);
    }
    let [count, listen_pid, names, upgrade_ppid, ready_fd, metrics_fd] =
        <[Option<String>; 6]>::try_from(vars).unwrap_or_default();
    let Some(count) = count else {
        return Ok(None);
    };
    let upgrade_from = match (&listen_pid, &upgrade_ppid) {
        (None, Some(ppid)) => ppid.trim().parse::<u32>().ok(),
        _ => None,
    };
    if upgrade_from.is_none() && listen_pid.as_deref() != Some(&std::process::id().to_string()) {
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
        listeners.push(listener(fd)?);
    }
    let upgrade = match upgrade_from {
        Some(from) => {
            let past = LISTEN_FDS_START + count;
            let metrics = match fd_after(metrics_fd.as_deref(), past) {
                Some(fd) => Some(listener(fd)?),
                None => None,
            };
            // SAFETY: getppid has no preconditions.
            let parent = unsafe { libc::getppid() };
            Some(Handover {
                from,
                orphaned: u32::try_from(parent).ok() != Some(from),
                metrics,
                ready: fd_after(ready_fd.as_deref(), past).and_then(pipe),
            })
        }
        None => None,
    };
    Ok(Some(Inherited {
        listeners,
        names,
        upgrade,
    }))
}

/// How many threads the process has (`/proc/self/task`), if it can tell.
fn threads() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

/// A descriptor number from a variable, if it is one of ours: at or past
/// `past` (after the listeners), below what a hand-over could place.
fn fd_after(value: Option<&str>, past: RawFd) -> Option<RawFd> {
    let fd: RawFd = value?.trim().parse().ok()?;
    (past..past + 16).contains(&fd).then_some(fd)
}

/// Take `fd`, which must be a listening TCP socket: close-on-exec,
/// non-blocking.
fn listener(fd: RawFd) -> Result<TcpListener, Error> {
    check(fd)?;
    // SAFETY: `check` proved `fd` is an open socket; LISTEN_FDS (or the
    // hand-over) gives its ownership to us and nothing else here uses it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    SockRef::from(&listener)
        .set_cloexec(true)
        .and_then(|()| listener.set_nonblocking(true))
        .map_err(|source| Error::Setup {
            what: "an inherited socket",
            source,
        })?;
    Ok(listener)
}

/// Take `fd` if it is a pipe (the readiness pipe), close-on-exec. Anything
/// else is left alone: we would not write a byte into a stranger's file.
fn pipe(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fstat only writes into the struct we pass.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        log::warn!("{READY_FD_VAR}={fd} is not a pipe: not reporting readiness");
        return None;
    }
    // SAFETY: `fd` is an open pipe handed to us for the readiness byte only.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        Some(OwnedFd::from_raw_fd(fd))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The test harness runs tests on threads of its own: taking the
    /// environment there must refuse, and leave it as it was.
    #[test]
    fn the_environment_is_not_taken_once_a_second_thread_exists() {
        let other =
            std::thread::spawn(|| std::thread::park_timeout(std::time::Duration::from_secs(5)));
        let before: Vec<Option<std::ffi::OsString>> = CONSUMED.iter().map(env::var_os).collect();
        let err = take().expect_err("taken with several threads");
        assert!(err.to_string().contains("one thread"), "{err}");
        let after: Vec<Option<std::ffi::OsString>> = CONSUMED.iter().map(env::var_os).collect();
        assert_eq!(before, after);
        other.thread().unpark();
        let _ = other.join();
    }

    #[test]
    fn descriptor_numbers_are_taken_only_just_past_the_listeners() {
        assert_eq!(fd_after(Some("5"), 5), Some(5));
        assert_eq!(fd_after(Some(" 6 "), 5), Some(6));
        assert_eq!(fd_after(Some("4"), 5), None, "a listener's own number");
        assert_eq!(fd_after(Some("0"), 5), None);
        assert_eq!(fd_after(Some("x"), 5), None);
        assert_eq!(fd_after(None, 5), None);
    }
}
