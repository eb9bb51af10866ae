//! The process's file-descriptor limit (`RLIMIT_NOFILE`).
//!
//! Every connection is a descriptor, and so is a part of every event loop
//! (its epoll instance, its waker, its copy of each listening socket), so
//! the limit bounds `--max-conns` and `--threads`. The binary raises the
//! soft limit to the hard one at start (as Go's runtime does), then checks
//! that the loops it is asked for fit before it starts any ([`fit_loops`]):
//! otherwise each loop thread would be started only for the process to
//! fail with `EMFILE` once they are thousands. The server keeps a few
//! descriptors in reserve for itself.

/// Descriptors kept back for the supervisor's poller and waker, the
/// listeners, the signal pipe, the metrics endpoint, logs, an upgrade's
/// pipe and the library user's own files.
pub(crate) const RESERVE: u64 = 32;

/// Descriptors one event loop holds, whatever its traffic: its epoll
/// instance, its waker's eventfd, and its copy of each of `listeners`.
pub(crate) fn fds_per_loop(listeners: usize) -> u64 {
    2 + listeners as u64
}

/// Loops that do not fit in the descriptor limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyLoops {
    /// Descriptors the loops need, with the reserve and one connection.
    pub needed: u64,
    /// The soft `RLIMIT_NOFILE` in force.
    pub limit: u64,
    /// The most loops that would fit (at least 0).
    pub most: u64,
}

/// Check that `loops` event loops on `listeners` sockets fit in the soft
/// limit with the `RESERVE` and room for one connection. `Ok` when the
/// limit cannot be read.
pub fn fit_loops(loops: usize, listeners: usize) -> Result<(), TooManyLoops> {
    let Some((limit, _)) = nofile() else {
        return Ok(());
    };
    fit_loops_in(loops, listeners, limit)
}

fn fit_loops_in(loops: usize, listeners: usize, limit: u64) -> Result<(), TooManyLoops> {
    let per_loop = fds_per_loop(listeners);
    let needed = (loops as u64)
        .saturating_mul(per_loop)
        .saturating_add(RESERVE + 1);
    if needed <= limit {
        return Ok(());
    }
    let most = limit.saturating_sub(RESERVE + 1) / per_loop;
    Err(TooManyLoops {
        needed,
        limit,
        most,
    })
}

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

/// The most connections the current soft limit allows, after the reserve
/// and `held` descriptors the event loops hold themselves, when each
/// connection holds `per_conn` (a proxied pair: 2).
pub(crate) fn max_conns_allowed(held: u64, per_conn: u64) -> Option<usize> {
    let (soft, _) = nofile()?;
    Some((soft.saturating_sub(RESERVE + held) / per_conn.max(1)).max(1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_fit_with_the_reserve_and_one_connection_or_say_how_many_would() {
        // 32 + 1 + 3 per loop (one listener): 330 loops need 1 023.
        assert_eq!(fit_loops_in(330, 1, 1024), Ok(()));
        assert_eq!(
            fit_loops_in(10_000, 1, 1024),
            Err(TooManyLoops {
                needed: 30_033,
                limit: 1024,
                most: 330
            })
        );
        assert_eq!(fit_loops_in(usize::MAX, 2, 64).map_err(|e| e.most), Err(7));
    }
}
