//! Syscalls per message, by kind, from separate short runs with a counter attached.
//!
//! Owns: the counted runs and the parsing of the counters' output. Two counters:
//! * **strace** — `strace -f -c -p PID`, the reference method. Every syscall stops the
//!   server for the tracer, so the server runs many times slower; more events are then
//!   ready per `epoll_wait`, and `epoll_wait`/msg reads *lower* than untraced (read and
//!   write counts per message are unaffected).
//! * **perf** — `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_* -p PID`, kernel
//!   tracepoint counters: no stop per syscall, the server runs at nearly full speed, so
//!   `epoll_wait` batching is as untraced. Used when `perf` and the syscall tracepoints
//!   are available.
//!
//! The window is exact on the load side: the generator runs in `--control` mode,
//! connects, has every connection echo once (so the server has accepted them all); the
//! counter is attached (strace: `attached` on its stderr; perf: started disabled and
//! enabled through its control FIFO), then the generator is told `start`, after
//! `--trace-secs` `stop`, and the counter is detached once the generator confirms
//! `stopped`. Connection setup and teardown are outside the window; the milliseconds
//! between attach and `start` and between `stopped` and detach add a little traffic that
//! is counted by the tracer but not by the generator, so figures err slightly high.
//! Must not: run in the timed cells.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::load;
use crate::pin::Layout;
use crate::scenario::Scenario;
use crate::server::ServerProc;
pub use crate::sys::{group, parse_strace, GROUPS};

/// How a run counts syscalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Method {
    Strace,
    Perf,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Strace => "strace",
            Method::Perf => "perf",
        }
    }
}

/// Syscalls perf counts one by one (when the kernel has their tracepoint); the rest is
/// `raw_syscalls:sys_enter` minus these.
const PERF_NAMED: [&str; 13] = [
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "recvfrom",
    "read",
    "readv",
    "recvmsg",
    "sendto",
    "write",
    "writev",
    "sendmsg",
    "epoll_ctl",
    "futex",
];

/// Where the kernel's tracepoints are described.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// What one counted run saw.
#[derive(Debug, Clone, Default)]
pub struct SyscallCounts {
    /// Messages the load generator completed inside the counted window.
    pub msgs: u64,
    /// Calls per syscall name (failed calls included). perf's uncounted rest is `(other)`.
    pub calls: BTreeMap<String, u64>,
}

impl SyscallCounts {
    /// Calls per message in `group_name` (one of [`GROUPS`]).
    pub fn per_msg(&self, group_name: &str) -> f64 {
        let calls: u64 = self
            .calls
            .iter()
            .filter(|(name, _)| group(name) == group_name)
            .map(|(_, n)| n)
            .sum();
        calls as f64 / self.msgs.max(1) as f64
    }

    /// All calls per message.
    pub fn total_per_msg(&self) -> f64 {
        self.calls.values().sum::<u64>() as f64 / self.msgs.max(1) as f64
    }
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
    if method == Method::Perf && tracepoint_dir().is_none() {
        return Err("no syscall tracepoints (tracefs not mounted?)".into());
    }
    Ok(())
}

fn tracepoint_dir() -> Option<PathBuf> {
    TRACEFS
        .iter()
        .map(|d| Path::new(d).join("events"))
        .find(|d| d.join("raw_syscalls/sys_enter").exists())
}

/// Count `server`'s syscalls over `secs` of `scenario` load; the counter's raw output
/// is kept in `out` (a file path without extension).
pub fn measure(
    method: Method,
    server: &ServerProc,
    scenario: &Scenario,
    layout: &Layout,
    secs: f64,
    out: &Path,
) -> Result<SyscallCounts, String> {
    let mut gen = load::command(server, scenario, layout)
        .arg("--control")
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the load generator: {e}"))?;
    let mut gen_in = gen.stdin.take().expect("stdin is piped");
    let mut gen_out = BufReader::new(gen.stdout.take().expect("stdout is piped"));
    let counted = (|| {
        wait_for_line(&mut gen_out, "ready", "load generator")?;
        let mut counter = Counter::attach(method, server.pid(), out)?;
        let window = (|| {
            control(&mut gen_in, "start")?;
            std::thread::sleep(Duration::from_secs_f64(secs));
            control(&mut gen_in, "stop")?;
            wait_for_line(&mut gen_out, "stopped", "load generator")
        })();
        let calls = counter.detach();
        window?;
        calls
    })();
    drop(gen_in);
    let mut rest = String::new();
    let _ = gen_out.read_to_string(&mut rest);
    let _ = gen.wait();
    let calls = counted?;
    let json = rest
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or("load generator printed no JSON after the counted window")?;
    Ok(SyscallCounts {
        msgs: load::parse(json)?.msgs,
        calls,
    })
}

fn control(gen_in: &mut ChildStdin, word: &str) -> Result<(), String> {
    writeln!(gen_in, "{word}")
        .and_then(|_| gen_in.flush())
        .map_err(|e| format!("cannot control the load generator: {e}"))
}

/// A syscall counter attached to the server.
struct Counter {
    method: Method,
    child: Child,
    file: PathBuf,
    /// perf's control and acknowledgement FIFOs, and their paths (removed on drop).
    fifos: Option<(std::fs::File, std::fs::File)>,
    fifo_paths: Vec<PathBuf>,
}

impl Counter {
    /// Attach and, once counting, return.
    fn attach(method: Method, pid: u32, out: &Path) -> Result<Counter, String> {
        match method {
            Method::Strace => Self::attach_strace(pid, out),
            Method::Perf => Self::attach_perf(pid, out),
        }
    }

    fn attach_strace(pid: u32, out: &Path) -> Result<Counter, String> {
        let file = out.with_extension("strace.txt");
        let mut child = Command::new("strace")
            .args(["-f", "-c", "-o"])
            .arg(&file)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start strace: {e}"))?;
        let mut err = BufReader::new(child.stderr.take().expect("stderr is piped"));
        if let Err(e) = wait_for_line_containing(&mut err, "attached") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("strace could not attach: {e}"));
        }
        Ok(Counter {
            method: Method::Strace,
            child,
            file,
            fifos: None,
            fifo_paths: Vec::new(),
        })
    }

    fn attach_perf(pid: u32, out: &Path) -> Result<Counter, String> {
        let file = out.with_extension("perf.txt");
        let ctl = out.with_extension("perf-ctl.fifo");
        let ack = out.with_extension("perf-ack.fifo");
        for fifo in [&ctl, &ack] {
            let _ = std::fs::remove_file(fifo);
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: mkfifo with a valid NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(format!(
                    "mkfifo {}: {}",
                    fifo.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-o"])
            .arg(&file)
            .args(["-D", "-1", "--control"])
            .arg(format!("fifo:{},{}", ctl.display(), ack.display()))
            .arg("-e")
            .arg(perf_events().join(","))
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&ctl);
                let _ = std::fs::remove_file(&ack);
                return Err(format!("cannot start perf: {e}"));
            }
        };
        // From here on, dropping the counter kills perf and removes the FIFOs.
        let mut counter = Counter {
            method: Method::Perf,
            child,
            file,
            fifos: None,
            fifo_paths: vec![ctl.clone(), ack.clone()],
        };
        // perf opens its FIFOs read-write; until it has, a non-blocking open for writing
        // fails with ENXIO.
        let deadline = Instant::now() + Duration::from_secs(5);
        let ctl_w = loop {
            let open = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&ctl);
            match open {
                Ok(f) => break f,
                Err(_)
                    if Instant::now() < deadline
                        && matches!(counter.child.try_wait(), Ok(None)) =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    let _ = counter.child.kill();
                    let mut why = String::new();
                    if let Some(mut err) = counter.child.stderr.take() {
                        let _ = err.read_to_string(&mut why);
                    }
                    return Err(format!("perf did not start: {e} {}", why.trim()));
                }
            }
        };
        let ack_r = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&ack)
            .map_err(|e| format!("{}: {e}", ack.display()))?;
        counter.fifos = Some((ctl_w, ack_r));
        counter.perf_command("enable")?;
        Ok(counter)
    }

    /// Send `cmd` on perf's control FIFO and wait for its `ack`.
    fn perf_command(&mut self, cmd: &str) -> Result<(), String> {
        let (ctl, ack) = self.fifos.as_mut().ok_or("not a perf counter")?;
        writeln!(ctl, "{cmd}").map_err(|e| format!("perf control: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            match ack.read(&mut buf) {
                Ok(n) if n > 0 => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(3).any(|w| w == b"ack") {
                        return Ok(());
                    }
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        Err(format!("perf did not acknowledge {cmd:?}"))
    }

    /// Stop counting and read the counts.
    fn detach(&mut self) -> Result<BTreeMap<String, u64>, String> {
        if self.method == Method::Perf {
            self.perf_command("disable")?;
        }
        // SAFETY: SIGINT to our own child; strace detaches, perf stops; both write out.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self
            .child
            .wait()
            .map_err(|e| format!("{}: {e}", self.method.name()))?;
        // strace re-raises the SIGINT it was stopped with after writing its summary.
        if !status.success() && status.signal() != Some(libc::SIGINT) {
            return Err(format!("{} exited with {status}", self.method.name()));
        }
        let text = std::fs::read_to_string(&self.file)
            .map_err(|e| format!("cannot read {}: {e}", self.file.display()))?;
        Ok(match self.method {
            Method::Strace => parse_strace(&text),
            Method::Perf => parse_perf(&text),
        })
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for path in &self.fifo_paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `raw_syscalls:sys_enter` plus every [`PERF_NAMED`] tracepoint this kernel has.
fn perf_events() -> Vec<String> {
    let dir = tracepoint_dir();
    let mut events = vec!["raw_syscalls:sys_enter".to_string()];
    for name in PERF_NAMED {
        let exists = dir
            .as_ref()
            .is_some_and(|d| d.join(format!("syscalls/sys_enter_{name}")).exists());
        if exists {
            events.push(format!("syscalls:sys_enter_{name}"));
        }
    }
    events
}

/// Calls per syscall from `perf stat -x,` output; the rest of the total is `(other)`.
pub fn parse_perf(text: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    let mut total = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 3 {
            continue;
        }
        let Ok(n) = fields[0].trim().parse::<u64>() else {
            continue;
        };
        match fields[2].trim() {
            "raw_syscalls:sys_enter" => total = n,
            ev => {
                if let Some(name) = ev.strip_prefix("syscalls:sys_enter_") {
                    if n > 0 {
                        calls.insert(name.to_string(), n);
                    }
                }
            }
        }
    }
    let named: u64 = calls.values().sum();
    if total > named {
        calls.insert("(other)".to_string(), total - named);
    }
    calls
}

fn wait_for_line(r: &mut impl BufRead, want: &str, who: &str) -> Result<(), String> {
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return Err(format!("{who} ended before printing {want:?}")),
            Ok(_) if line.trim() == want => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("{who}: {e}")),
        }
    }
}

fn wait_for_line_containing(r: &mut impl BufRead, want: &str) -> Result<(), String> {
    let mut line = String::new();
    let mut seen = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return Err(seen.trim().to_string()),
            Ok(_) if line.contains(want) => return Ok(()),
            Ok(_) => seen.push_str(&line),
            Err(e) => return Err(e.to_string()),
        }
    }
}
