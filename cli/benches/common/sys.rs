//! What every bench needs from the system around the servers it runs: a
//! tool on the `PATH` (or in `sbin`), a free loopback port, the address a
//! server logged in its `listening on` line, a process's CPU from `/proc`,
//! `wrk`'s durations, and the syscall groups and `strace -c` parser that
//! the syscalls-per-message counts share. Included by each bench with
//! `#[path]`; it owns no state and runs nothing.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

/// An executable on PATH or in the sbin directories (nginx lives in /usr/sbin).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The address in a `... listening on 127.0.0.1:PORT ...` line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split_whitespace().next()?;
    token
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// Clock ticks (`/proc`'s CPU unit) to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / tck
}

/// Fields of `/proc/PID/stat` after `(comm)`: index 0 is the state (field 3).
pub fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse::<i64>().unwrap_or(0) as u64)
            .collect(),
    )
}

/// (user, system) CPU of a process, all threads, in ns.
pub fn cpu_ns(pid: u32) -> Option<(u64, u64)> {
    let f = stat_fields(&pid.to_string())?;
    // utime is field 14, stime 15; f[0] is field 4.
    Some((ticks_to_ns(*f.get(10)?), ticks_to_ns(*f.get(11)?)))
}

/// `1.23ms`, `456.00us`, `1.02s` (wrk's latencies) → microseconds.
pub fn duration_us(s: &str) -> Option<f64> {
    let (num, mul) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    Some(num.parse::<f64>().ok()? * mul)
}

/// Syscall groups shown as columns, in order; everything else is `other`.
pub const GROUPS: [&str; 6] = ["epoll_wait", "read", "write", "epoll_ctl", "futex", "other"];

/// The column a syscall name counts under.
pub fn group(name: &str) -> &'static str {
    match name {
        "epoll_wait" | "epoll_pwait" | "epoll_pwait2" => "epoll_wait",
        "read" | "recvfrom" | "recvmsg" | "readv" | "recvmmsg" => "read",
        "write" | "sendto" | "sendmsg" | "writev" | "sendmmsg" => "write",
        "epoll_ctl" => "epoll_ctl",
        "futex" => "futex",
        _ => "other",
    }
}

/// Calls per syscall from `strace -c` output.
pub fn parse_strace(text: &str) -> BTreeMap<String, u64> {
    strace_column(text, 3)
}

/// Failed calls (`EAGAIN`: a read or write that would block, …) per
/// syscall from `strace -c` output.
pub fn parse_strace_errors(text: &str) -> BTreeMap<String, u64> {
    strace_column(text, 4)
}

/// Column `col` of `strace -c`'s table (`% time, seconds, usecs/call,
/// calls, [errors,] syscall`), per syscall; an absent errors column is 0.
fn strace_column(text: &str, col: usize) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[0].parse::<f64>().is_err() {
            continue;
        }
        let name = fields[fields.len() - 1];
        if name == "total" || col + 1 >= fields.len() {
            continue;
        }
        if let Ok(n) = fields[col].parse::<u64>() {
            *calls.entry(name.to_string()).or_insert(0) += n;
        }
    }
    calls
}
