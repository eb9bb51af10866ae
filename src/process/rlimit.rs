//! The process's file-descriptor limit (`RLIMIT_NOFILE`).
//!
//! Every connection is a descriptor, so the limit bounds `--max-conns`. The
//! binary raises the soft limit to the hard one at start (as Go's runtime
//! does), and the server keeps a few descriptors in reserve for itself.

/// Descriptors kept back for the poller, listener, signal pipe, logs and the
/// library user's own files.
pub const RESERVE: u64 = 32;

/// The current soft and hard `RLIMIT_NOFILE`, if the OS tells us.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
pub fn nofile() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// Raise the soft limit to the hard limit. Returns the soft limit in force.
pub fn raise_nofile() -> Option<u64> {
    let (soft, hard) = nofile()?;
    if soft >= hard {
        return Some(soft);
    }
    let lim = libc::rlimit {
        rlim_cur: hard as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    Some(if rc == 0 { hard } else { soft })
}

/// The most connections the current soft limit allows, after the reserve.
pub fn max_conns_allowed() -> Option<usize> {
    let (soft, _) = nofile()?;
    Some(soft.saturating_sub(RESERVE).max(1) as usize)
}
