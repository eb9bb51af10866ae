//! Syscalls per TLS echo message, by kind: a counter attached to each
//! server under a fixed number of messages, the slope between two counts.
//!
//! Owns: the counted runs and the slope. For each server and message size,
//! two runs of [`client::echo_count`](crate::client::echo_count) — the
//! same connections (connect, handshake, close_notify, close), `small` and
//! then `large` messages on each — each with a counter attached to the
//! server for the whole run. Everything a connection costs once (accept,
//! handshake, close, the counter's attach and detach) is in both counts, so
//! `(calls(large) − calls(small)) ÷ (messages(large) − messages(small))` is
//! what one more message costs, and nothing else.
//!
//! Two counters ([`Method`]), as in the echo bench:
//! * **strace** — `strace -f -c -p PID`, the reference method. It stops the
//!   server at every syscall, so the server runs many times slower than the
//!   client and every `epoll_wait` finds many events ready: its count per
//!   message is lower than untraced. Reads and writes per message are not
//!   affected.
//! * **perf** (the default where it works) — `perf stat` on the kernel's
//!   syscall tracepoints (the enters, and the exits filtered to `EAGAIN`):
//!   no stop per syscall, the server runs at nearly full speed, so
//!   `epoll_wait` is counted as batched in a real run. Those counts vary
//!   by a few hundredths per message from run to run; reads and writes do
//!   not.
//!
//! On loopback a record written in one call arrives whole; a record split
//! across arrivals (a real network's segments) is counted at the stage
//! level instead, over a scripted socket (`tests/fuzz_tls.rs`).
//!
//! Must not: run in the timed cells.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use crate::client;
use crate::sys::{group, parse_strace, parse_strace_errors};

/// How a run counts syscalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Strace,
    Perf,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Strace => "strace -c -f",
            Method::Perf => "perf stat (syscall tracepoints)",
        }
    }
}

/// Syscalls perf counts by name (those the servers' message paths make);
/// the rest of `raw_syscalls:sys_enter` is `(other)`.
const PERF_NAMED: [&str; 12] = [
    "epoll_wait",
    "epoll_pwait",
    "read",
    "recvfrom",
    "readv",
    "recvmsg",
    "write",
    "sendto",
    "writev",
    "sendmsg",
    "epoll_ctl",
    "futex",
];

/// Where the kernel's tracepoints are described.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Columns, in order: the syscall groups, then failed reads and writes.
pub const COLUMNS: [&str; 6] = ["epoll_wait", "read", "write", "other", "EAGAIN", "total"];

/// What one message costs a server, in syscalls (the slope).
#[derive(Debug, Clone, Default)]
pub struct PerMsg {
    /// Calls per message, per [`COLUMNS`] entry.
    pub per_msg: BTreeMap<&'static str, f64>,
    /// What is left of the small run once its messages are taken out, per
    /// connection: accept, handshake, close (and the counter's attach).
    pub per_conn: BTreeMap<&'static str, f64>,
    /// Messages in the two runs.
    pub msgs: (u64, u64),
}

/// One counted run: messages and calls per syscall (and failed calls).
struct Counted {
    msgs: u64,
    calls: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

/// `Ok` when `method` can run here; the error says why not.
pub fn available(method: Method) -> Result<(), String> {
    let (tool, arg) = match method {
        Method::Strace => ("strace", "-V"),
        Method::Perf => ("perf", "--version"),
    };
    match Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(format!("`{tool} {arg}` failed ({s})")),
        Err(_) => return Err(format!("{tool} not installed")),
    }
    if method == Method::Perf && tracepoints().is_none() {
        return Err("no syscall tracepoints (tracefs not mounted?)".into());
    }
    Ok(())
}

fn tracepoints() -> Option<std::path::PathBuf> {
    TRACEFS
        .iter()
        .map(|d| Path::new(d).join("events"))
        .find(|d| d.join("raw_syscalls/sys_enter").exists())
}

/// The slope of `pid`'s syscalls between `counts.0` and `counts.1`
/// messages per connection on `conns` connections of `size`-byte echoes;
/// strace's raw tables are kept next to `out` (a path without extension).
#[allow(clippy::too_many_arguments)]
pub fn measure(
    method: Method,
    pid: u32,
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    conns: usize,
    size: usize,
    counts: (u64, u64),
    out: &Path,
) -> Result<PerMsg, String> {
    let small = counted(method, pid, addr, config, conns, size, counts.0, out)?;
    let large = counted(method, pid, addr, config, conns, size, counts.1, out)?;
    let dm = large.msgs.saturating_sub(small.msgs).max(1) as f64;
    let sum = |c: &Counted, col: &str| -> u64 {
        match col {
            "total" => c.calls.values().sum(),
            // Failed reads and writes: the socket said `WouldBlock`.
            "EAGAIN" => c
                .errors
                .iter()
                .filter(|(name, _)| matches!(group(name), "read" | "write"))
                .map(|(_, n)| n)
                .sum(),
            g => c
                .calls
                .iter()
                .filter(|(name, _)| {
                    let n = group(name);
                    n == g || (g == "other" && !matches!(n, "epoll_wait" | "read" | "write"))
                })
                .map(|(_, n)| n)
                .sum(),
        }
    };
    let per_msg: BTreeMap<&'static str, f64> = COLUMNS
        .iter()
        .map(|&col| {
            let d = sum(&large, col) as f64 - sum(&small, col) as f64;
            (col, d / dm)
        })
        .collect();
    let per_conn = COLUMNS
        .iter()
        .map(|&col| {
            let rest = sum(&small, col) as f64 - per_msg[col] * small.msgs as f64;
            (col, rest / conns.max(1) as f64)
        })
        .collect();
    Ok(PerMsg {
        per_msg,
        per_conn,
        msgs: (small.msgs, large.msgs),
    })
}

/// One run with a counter attached to `pid` from before the first connect
/// until after the last close.
#[allow(clippy::too_many_arguments)]
fn counted(
    method: Method,
    pid: u32,
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    conns: usize,
    size: usize,
    per_conn: u64,
    out: &Path,
) -> Result<Counted, String> {
    let file = out.with_extension(format!("{per_conn}.{method:?}.txt"));
    let mut cmd = match method {
        Method::Strace => {
            let mut c = Command::new("strace");
            c.args(["-f", "-c", "-o"]).arg(&file);
            c
        }
        Method::Perf => {
            let mut c = Command::new("perf");
            c.args(["stat", "-x", ",", "-o"]).arg(&file);
            for e in perf_events() {
                c.arg("-e").arg(&e);
                if e.contains("sys_exit_") {
                    c.args(["--filter", "ret == -11"]); // EAGAIN
                }
            }
            c
        }
    };
    let mut child = cmd
        .arg("-p")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", method.name()))?;
    let mut err = BufReader::new(child.stderr.take().ok_or("stderr is piped")?);
    if method == Method::Strace {
        let mut line = String::new();
        loop {
            line.clear();
            match err.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("strace could not attach to {pid}"));
                }
                Ok(_) if line.contains("attached") => break,
                Ok(_) => {}
            }
        }
    }
    // strace names each thread as it attaches it; perf says nothing: let
    // both settle.
    std::thread::sleep(Duration::from_millis(300));
    let run = client::echo_count(addr, config, conns, size, per_conn);
    // The server handles the closes; then stop counting.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: SIGINT to our own child; strace detaches, perf stops; both
    // write their tables.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child
        .wait()
        .map_err(|e| format!("{}: {e}", method.name()))?;
    if !status.success() && status.signal() != Some(libc::SIGINT) {
        let mut why = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut why);
        return Err(format!(
            "{} exited with {status}: {}",
            method.name(),
            why.trim()
        ));
    }
    let msgs = run?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (calls, errors) = match method {
        Method::Strace => (parse_strace(&text), parse_strace_errors(&text)),
        Method::Perf => parse_perf(&text),
    };
    Ok(Counted {
        msgs,
        calls,
        errors,
    })
}

/// `raw_syscalls:sys_enter`, then each [`PERF_NAMED`] syscall's enter and
/// exit tracepoints that this kernel has (the exits are filtered to EAGAIN).
fn perf_events() -> Vec<String> {
    let dir = tracepoints();
    let mut events = vec!["raw_syscalls:sys_enter".to_string()];
    for name in PERF_NAMED {
        for dir_name in ["sys_enter", "sys_exit"] {
            let exists = dir
                .as_ref()
                .is_some_and(|d| d.join(format!("syscalls/{dir_name}_{name}")).exists());
            if exists {
                events.push(format!("syscalls:{dir_name}_{name}"));
            }
        }
    }
    events
}

/// Calls and EAGAIN failures per syscall from `perf stat -x,` output; the
/// rest of the total is `(other)`.
fn parse_perf(text: &str) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (mut calls, mut errors) = (BTreeMap::new(), BTreeMap::new());
    let mut total = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(n), Some(ev)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let Ok(n) = n.trim().parse::<u64>() else {
            continue;
        };
        let ev = ev.trim();
        if ev == "raw_syscalls:sys_enter" {
            total = n;
        } else if let Some(name) = ev.strip_prefix("syscalls:sys_enter_") {
            calls.insert(name.to_string(), n);
        } else if let Some(name) = ev.strip_prefix("syscalls:sys_exit_") {
            errors.insert(name.to_string(), n);
        }
    }
    let named: u64 = calls.values().sum();
    if total > named {
        calls.insert("(other)".to_string(), total - named);
    }
    (calls, errors)
}
