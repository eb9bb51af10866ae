//! One server under test, as a child process.
//!
//! Owns: starting a server (tcp-reactor's own binary, or this bench binary re-executed
//! with `--serve KIND`) pinned to the server CPUs, learning its address from the
//! contract's `listening on ADDR` stderr line, keeping the tail of its log, reading its
//! RSS, and stopping it with SIGTERM while checking the contract (exit status 0).
//! Must not: measure anything beyond RSS (the load generator reads CPU times).

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pin::Layout;
use crate::sys::listening_addr;

/// How long a server may take to print `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to drain and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Log lines kept for error reports.
const LOG_TAIL: usize = 40;

/// The servers this bench knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum ServerKind {
    /// This crate's server (`target/release/tcp-reactor`).
    TcpReactor,
    /// tokio, `current_thread` runtime: the reference every ratio divides by.
    TokioCt,
    /// tokio, `multi_thread` runtime.
    TokioMt,
    /// The bare mio echo loop: the floor.
    BareMio,
    /// The Go tutorial's model: a goroutine per connection (benches/echo/go/echo.go).
    Go,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::TcpReactor => "tcp-reactor",
            ServerKind::TokioCt => "tokio-ct",
            ServerKind::TokioMt => "tokio-mt",
            ServerKind::BareMio => "bare-mio",
            ServerKind::Go => "go",
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A running server.
pub struct ServerProc {
    pub kind: ServerKind,
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
    exited: bool,
}

impl ServerProc {
    /// Start `kind` on 127.0.0.1 (port chosen by the kernel) and wait for its address.
    pub fn start(kind: ServerKind, layout: &Layout, mt_threads: usize) -> Result<Self, String> {
        Self::start_with_args(kind, layout, mt_threads, &[])
    }

    /// Like [`ServerProc::start`], with extra arguments for the server
    /// (e.g. `--threads N` for tcp-reactor).
    pub fn start_with_args(
        kind: ServerKind,
        layout: &Layout,
        mt_threads: usize,
        extra: &[String],
    ) -> Result<Self, String> {
        Self::start_under(kind, layout, mt_threads, extra, &[])
    }

    /// Like [`ServerProc::start_with_args`], with the server's command line run by
    /// `wrapper` (e.g. `valgrind --tool=callgrind …`; empty: run it directly). The
    /// wrapper must run the server in its own process (same pid), as valgrind does, so
    /// that signals and `/proc` reach the server.
    pub fn start_under(
        kind: ServerKind,
        layout: &Layout,
        mt_threads: usize,
        extra: &[String],
        wrapper: &[String],
    ) -> Result<Self, String> {
        let program = match kind {
            ServerKind::TcpReactor => PathBuf::from(env!("CARGO_BIN_EXE_tcp-reactor")),
            ServerKind::Go => crate::golang::binary()
                .cloned()
                .ok_or("go: the Go server was not built")?,
            _ => std::env::current_exe()
                .map_err(|e| format!("cannot find the bench binary to re-execute: {e}"))?,
        };
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(&program);
                cmd
            }
            None => Command::new(&program),
        };
        if kind == ServerKind::Go {
            cmd.env("GOMAXPROCS", layout.server_cpus.max(1).to_string());
        } else if kind != ServerKind::TcpReactor {
            cmd.arg("--serve").arg(kind.name());
            if kind == ServerKind::TokioMt {
                cmd.arg("--threads").arg(mt_threads.to_string());
            }
        }
        cmd.args(extra)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cpus) = layout.server {
            // SAFETY: the closure only calls sched_setaffinity on a prepared set.
            unsafe { cmd.pre_exec(move || cpus.apply()) };
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{kind}: cannot start {:?}: {e}", cmd.get_program()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let log_w = Arc::clone(&log);
        std::thread::spawn(move || read_log(stderr, log_w, addr_tx));
        let mut server = ServerProc {
            kind,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log,
            exited: false,
        };
        match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                let why = match status {
                    Some(s) => format!("exited ({s}) before printing `listening on ADDR`"),
                    None => format!(
                        "printed no `listening on ADDR` line within {}s",
                        START_TIMEOUT.as_secs()
                    ),
                };
                Err(format!("{kind}: {why}{}", server.log_tail()))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident set size in bytes, from `/proc/PID/statm`.
    pub fn rss_bytes(&self) -> Option<u64> {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid())).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * page.max(1) as u64)
    }

    /// Send SIGTERM and wait for the drain; the contract says exit status 0.
    pub fn stop(self) -> Result<(), String> {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// Wait for the process to exit after a quit signal; the contract says status 0.
    pub fn wait_exit(mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exited = true;
                    if !status.success() {
                        return Err(format!(
                            "{}: exited with {status} after SIGTERM (contract: 0){}",
                            self.kind,
                            self.log_tail()
                        ));
                    }
                    // Give the log reader a moment to see the last lines.
                    std::thread::sleep(Duration::from_millis(20));
                    if !self.log_contains("All done.") {
                        eprintln!(
                            "warning: {}: exited 0 but never logged `All done.`",
                            self.kind
                        );
                    }
                    return Ok(());
                }
                Ok(None) if started.elapsed() < STOP_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    return Err(format!(
                        "{}: still running {}s after SIGTERM{}",
                        self.kind,
                        STOP_TIMEOUT.as_secs(),
                        self.log_tail()
                    ))
                }
                Err(e) => return Err(format!("{}: wait failed: {e}", self.kind)),
            }
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    fn log_contains(&self, needle: &str) -> bool {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().any(|l| l.contains(needle))
    }

    /// The last lines the server logged, formatted to append to an error.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.is_empty() {
            return "\n    (the server logged nothing)".to_string();
        }
        let mut s = String::from("\n    last server log lines:");
        for line in log.iter() {
            s.push_str("\n    | ");
            s.push_str(line);
        }
        s
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if !self.exited && self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Keep the last lines of the server's stderr; report the `listening on` address once.
fn read_log(
    stderr: std::process::ChildStderr,
    log: Arc<Mutex<VecDeque<String>>>,
    addr_tx: mpsc::Sender<SocketAddr>,
) {
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    let mut found = false;
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
        if !found {
            if let Some(addr) = listening_addr(&line) {
                found = true;
                let _ = addr_tx.send(addr);
            }
        }
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == LOG_TAIL {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// Path of the load generator: its own crate (tools/load), so cargo does
/// not build it for this bench by itself; built here once, in release, into
/// the same target directory as this bench binary.
pub fn load_generator() -> PathBuf {
    crate::build::load_generator()
}
