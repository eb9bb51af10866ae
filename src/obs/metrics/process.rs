//! The standard `process_*` metrics every Prometheus client exports, read
//! from `/proc/self` at scrape time (Linux; zeros elsewhere).

/// One reading of this process's resources.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessInfo {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft `RLIMIT_NOFILE`.
    pub max_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessInfo {
    /// Read `/proc/self`; what cannot be read stays 0.
    pub fn read() -> Self {
        let mut info = ProcessInfo::default();
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK) as f64,
                libc::sysconf(libc::_SC_PAGESIZE) as u64,
            )
        };
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces and
            // parentheses) start after the last ')': field 3 is index 0.
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let field = |n: usize| -> f64 {
                    fields
                        .get(n - 3)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0) as f64
                };
                if ticks > 0.0 {
                    info.cpu_seconds = (field(14) + field(15)) / ticks;
                    if let Some(boot) = boot_time() {
                        info.start_time_seconds = boot + field(22) / ticks;
                    }
                }
            }
        }
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            let mut pages = statm
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0));
            info.virtual_memory_bytes = pages.next().unwrap_or(0) * page;
            info.resident_memory_bytes = pages.next().unwrap_or(0) * page;
        }
        info.open_fds = open_fds();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            info.max_fds = lim.rlim_cur;
        }
        info
    }
}

/// Open descriptors. Linux 6.2 and later report the count as the size of
/// `/proc/self/fd`: one `stat` (30 µs with 10,000 sockets open, where
/// listing the directory takes 20 ms). Older kernels say 0: list it then.
fn open_fds() -> u64 {
    match std::fs::metadata("/proc/self/fd") {
        Ok(meta) if meta.len() > 0 => meta.len(),
        _ => std::fs::read_dir("/proc/self/fd")
            // Less the descriptor read_dir itself holds open.
            .map_or(0, |dir| (dir.count() as u64).saturating_sub(1)),
    }
}

/// The system's boot time (`btime` in `/proc/stat`), in Unix seconds.
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_memory_descriptors_and_a_start_time() {
        let info = ProcessInfo::read();
        assert!(info.resident_memory_bytes > 0, "{info:?}");
        assert!(info.virtual_memory_bytes >= info.resident_memory_bytes);
        assert!(info.open_fds >= 3, "{info:?}");
        assert!(info.max_fds >= info.open_fds, "{info:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(info.start_time_seconds > 1e9 && info.start_time_seconds <= now + 1.0);
    }
}
