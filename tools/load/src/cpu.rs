//! CPU time of this process and of the server under test.
//!
//! Owns: reading `getrusage(RUSAGE_SELF)` and `/proc/PID/stat`. Must not: interpret the
//! numbers (ratios and per-message figures are the report's business).

use std::time::Duration;

/// User and system CPU time consumed so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    pub user: Duration,
    pub sys: Duration,
}

impl CpuTimes {
    /// Time spent between `earlier` and `self`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }
}

/// CPU time of this process (all threads), microsecond resolution.
pub fn own() -> CpuTimes {
    // SAFETY: getrusage only writes into the zeroed struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return CpuTimes::default();
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    CpuTimes {
        user: tv(usage.ru_utime),
        sys: tv(usage.ru_stime),
    }
}

/// CPU time of process `pid` (all threads) from `/proc/PID/stat`, in clock-tick
/// resolution (usually 10 ms). `None` when the process is gone or unreadable.
pub fn of_pid(pid: u32) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after the last ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14 and stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    let ticks = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000) / hz);
    Some(CpuTimes {
        user: ticks(utime),
        sys: ticks(stime),
    })
}

/// Busy time of the whole machine, all CPUs together (user, nice, system, irq and
/// softirq columns of `/proc/stat`). `None` when unreadable.
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum::<u64>();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_nanos(
        busy.saturating_mul(1_000_000_000) / hz,
    ))
}
