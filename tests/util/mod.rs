//! Shared test helpers: start the real binary, talk to it over loopback.
//!
//! Each integration test file does `mod util;` and uses what it needs.
#![allow(dead_code)]

pub mod clients;
pub mod tls;
pub mod tools;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Path of the `tcp-reactor` binary (package `tcp-reactor-cli`, `cli/`),
/// which cargo builds before it runs that package's tests.
pub fn binary() -> &'static str {
    // Set by cargo for the binary package's own integration tests
    // (cli/tests/), which it builds the binary for; the library's tests
    // (tests/) never start it.
    match option_env!("CARGO_BIN_EXE_tcp-reactor") {
        Some(path) => path,
        None => panic!("only the tests in cli/tests/ can start the server binary"),
    }
}

/// Start `cmd` with `RLIMIT_NOFILE` at `limit` (soft and hard).
pub fn with_nofile(cmd: &mut Command, limit: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and only reads `lim`.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &lim) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
}

/// Raise this process's descriptor limit so tests can open many sockets.
pub fn raise_fd_limit() {
    let _ = tcp_reactor::base::rlimit::raise_nofile();
}

/// A running `tcp-reactor` process with its stderr captured line by line.
pub struct ServerProcess {
    child: Child,
    /// The address from its `listening on ADDR` line.
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Start the binary with `args` (on `127.0.0.1:0` unless they say
    /// `--listen`) and `RUST_LOG=debug`, and wait for its `listening on` line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, |_| {})
    }

    /// Like [`start`](Self::start), letting the caller adjust the command.
    pub fn start_with(args: &[&str], adjust: impl FnOnce(&mut Command)) -> Self {
        let mut cmd = Command::new(binary());
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args);
        adjust(&mut cmd);
        Self::launch(cmd)
    }

    /// Run `cmd` (which must end up exec'ing tcp-reactor) with stderr
    /// captured and `RUST_LOG=debug` unless set, and wait for `listening on`.
    pub fn launch(cmd: Command) -> Self {
        let mut server = Self::spawn(cmd);
        server.wait_listening();
        server
    }

    /// Like [`launch`](Self::launch) without waiting: `addr` is unset until
    /// [`wait_listening`](Self::wait_listening).
    pub fn spawn(mut cmd: Command) -> Self {
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "debug");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn_retrying_busy_text(&mut cmd);
        let stderr = child.stderr.take().expect("stderr piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
        }
    }

    /// Wait for the `listening on ADDR` line and take the address from it.
    pub fn wait_listening(&mut self) {
        let line = self
            .wait_for_log("listening on ", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no `listening on` line; log:\n{}", self.log()));
        self.addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse address from {line:?}"));
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send a signal to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Everything logged so far, one line per line.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Lines logged so far that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Wait (bounded) for a log line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return Some(line.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread collect the last lines.
                thread::sleep(Duration::from_millis(50));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Connect to `addr` with a 5 s read timeout: no test read blocks forever.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
}

/// Write `msg` and read back exactly as many bytes: they must be `msg`.
pub fn echo_once(stream: &mut TcpStream, msg: &[u8]) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream.write_all(msg).expect("write");
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, msg);
}

/// On a fresh connection: send `msg`, half-close, read to EOF; everything
/// that comes back must be exactly `msg`.
pub fn echo_and_close(addr: SocketAddr, msg: &[u8]) {
    let mut stream = connect(addr);
    stream.write_all(msg).expect("write");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    stream.read_to_end(&mut back).expect("read to EOF");
    assert_eq!(back, msg);
}

/// Readings from `/proc/PID` of a running process.
pub mod procfs {
    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(pid: i32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// The most resident memory the process has had (`VmHWM`), in KiB.
    pub fn peak_rss_kib(pid: i32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM")
    }

    /// User + system CPU time consumed so far, in seconds.
    pub fn cpu_secs(pid: i32) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
        // Fields after the command name (which may hold spaces) start at ')'.
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields[11].parse().expect("utime");
        let stime: u64 = fields[12].parse().expect("stime");
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (utime + stime) as f64 / ticks
    }

    /// Number of open file descriptors.
    pub fn fd_count(pid: i32) -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("read fd dir")
            .count()
    }

    /// Set another process's `RLIMIT_NOFILE` (soft and hard).
    pub fn set_nofile(pid: i32, limit: u64) {
        let lim = libc::rlimit {
            rlim_cur: limit as libc::rlim_t,
            rlim_max: limit as libc::rlim_t,
        };
        // SAFETY: prlimit reads `lim` and writes nothing (old limit not asked).
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }
}

/// Spawn `cmd`, retrying while exec says `ETXTBSY`. A test that has just
/// written the executable (a copy of the binary, an upgrade script) can
/// race another test thread's fork: the child holds the write descriptor
/// until its own exec closes it, and exec'ing a file open for writing fails.
fn spawn_retrying_busy_text(cmd: &mut Command) -> Child {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                thread::sleep(Duration::from_millis(10))
            }
            result => return result.expect("spawn tcp-reactor"),
        }
    }
    panic!("spawn tcp-reactor: text file busy for 1 s");
}

/// Open `n` connections that never read and write `chunk` on each, again
/// and again, until the server stops taking bytes from every one of them
/// (30 rounds without progress, 20 s at most): a server holding its
/// memory bound has then stopped reading them. Returns the sockets, still
/// open, so the caller can measure before they close.
pub fn flood_without_reading(addr: SocketAddr, n: usize, chunk: &[u8]) -> Vec<TcpStream> {
    let socks: Vec<TcpStream> = (0..n)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let mut stalled = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stalled < 30 && Instant::now() < deadline {
        let mut progressed = false;
        for mut s in &socks {
            while let Ok(k) = s.write(chunk) {
                progressed |= k > 0;
            }
        }
        stalled = if progressed { 0 } else { stalled + 1 };
        thread::sleep(Duration::from_millis(10));
    }
    socks
}
