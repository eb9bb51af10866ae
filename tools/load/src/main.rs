//! `tcp-reactor-load`: a closed-loop load generator for any TCP echo server.
//!
//! One thread, one mio event loop. It opens `-c` connections, keeps `-d` messages of `-s`
//! bytes in flight on each (every completed echo issues the next message), checks every
//! echoed byte against a deterministic per-connection pattern, and times every message
//! into an HDR histogram. Only messages completed inside the measured window (after
//! `--warmup`, for `--duration`) are counted. At the end each connection stops issuing,
//! waits for the echoes it is owed, sends FIN and waits for the server's FIN.
//!
//! Roles: `main` owns the clock and the phases (connect, warm-up, window, drain);
//! [`conn`] owns one connection's closed loop; [`stats`] counts and reports; [`cpu`]
//! reads CPU times; [`pattern`] is the byte stream. Exit status: 0 when the run had no
//! errors, 1 when it had any, 2 on bad arguments.

mod conn;
mod cpu;
mod pattern;
mod stats;

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use conn::{Conn, Fault, Shared, State, Step};
use cpu::CpuTimes;
use pattern::Pattern;
use stats::{Report, Stats};

/// Closed-loop load generator for TCP echo servers: verifies every byte, reports
/// throughput and HDR latency percentiles.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address of the echo server, e.g. 127.0.0.1:7000.
    addr: SocketAddr,
    /// Number of connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Message size in bytes; accepts K/KiB and M/MiB suffixes (16K = 16384).
    #[arg(short = 's', long, default_value = "64", value_parser = parse_size)]
    size: usize,
    /// Messages in flight per connection (pipeline depth).
    #[arg(short = 'd', long, default_value_t = 1)]
    depth: usize,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Load before the measured window, seconds (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Print one line of JSON instead of the human report.
    #[arg(long)]
    json: bool,
    /// Also report the CPU time this process id spent inside the window (from /proc).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Window driven by stdin instead of the clock: print `ready` once every connection
    /// is up and has echoed a message, open the window on a `start` line, close it on
    /// `stop` (or EOF), print `stopped`. For harnesses that attach tracers to the server.
    #[arg(long)]
    control: bool,
    /// Fixed work instead of a timed window: every connection completes exactly this many
    /// messages, then sends its FIN (`--warmup`/`--duration` are ignored; every message
    /// is counted). The server then does exactly `connections × messages` echoes, which
    /// instruction counters need (`cargo bench --bench echo -- --scenarios instructions`).
    #[arg(long, value_name = "N", conflicts_with = "control")]
    messages: Option<u64>,
    /// Give up on connections not established after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// After the window, wait this long for owed echoes and the server's FIN, seconds.
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
    /// Connects in progress at once (keeps a short server accept backlog from overflowing).
    #[arg(long, default_value_t = 64)]
    connect_burst: usize,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, mult) = match t.find(|c: char| !c.is_ascii_digit()) {
        None => (t, 1),
        Some(i) => {
            let mult = match t[i..].to_ascii_lowercase().as_str() {
                "b" => 1,
                "k" | "kb" | "kib" => 1024,
                "m" | "mb" | "mib" => 1024 * 1024,
                other => return Err(format!("unknown size suffix {other:?} (use K or M)")),
            };
            (&t[..i], mult)
        }
    };
    let n: usize = digits.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if n == 0 {
        return Err("size must be at least 1 byte".into());
    }
    Ok(n * mult)
}

/// Token of stdin in `--control` mode; connections use their index.
const STDIN: Token = Token(usize::MAX);
/// Bytes read per `read` call; a read shorter than this means the socket is drained.
const READ_BUF: usize = 256 * 1024;
/// Longest single `write`.
const MAX_WRITE: usize = 256 * 1024;

/// CPU times read at one instant (or their differences over the window).
#[derive(Debug, Clone, Copy, Default)]
struct CpuSnapshot {
    own: CpuTimes,
    server: Option<CpuTimes>,
    /// Busy time of all CPUs together.
    machine: Option<Duration>,
}

/// Where the run is. The clock moves it forward; `--control` lines may too.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Opening connections (at most `connect_burst` in progress).
    Connect { deadline: Instant },
    /// Load running; the window opens at `open_at` (`None`: on a `start` line).
    Warmup { open_at: Option<Instant> },
    /// Load running and counted; closes at `close_at` (`None`: on a `stop` line).
    Window {
        opened: Instant,
        close_at: Option<Instant>,
    },
    /// No new messages; waiting for owed echoes and FINs.
    Drain { deadline: Instant },
}

struct Load {
    args: Args,
    poll: Poll,
    /// Indexed by token; `None` once closed or failed.
    conns: Vec<Option<Conn>>,
    /// Number of `Some` entries in `conns`.
    live: usize,
    sh: Shared,
    phase: Phase,
    /// Index of the next connection to open.
    next_connect: usize,
    connecting: usize,
    connected: usize,
    /// CPU snapshot at the window's opening.
    cpu_at_open: CpuSnapshot,
    /// CPU used inside the window.
    cpu_in_window: CpuSnapshot,
    window: Duration,
    stdin_buf: Vec<u8>,
    stdin_open: bool,
    /// `ready` was printed (`--control`).
    announced: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.depth == 0 || args.connections == 0 || args.messages == Some(0) {
        eprintln!("tcp-reactor-load: --connections, --depth and --messages must be at least 1");
        return ExitCode::from(2);
    }
    let mut load = match Load::new(args) {
        Ok(load) => load,
        Err(e) => {
            eprintln!("tcp-reactor-load: setup failed: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = load.run() {
        eprintln!("tcp-reactor-load: event loop failed: {e}");
        return ExitCode::from(1);
    }
    let report = load.report();
    if load.args.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.human());
    }
    if load.sh.stats.errors.total() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

impl Load {
    fn new(args: Args) -> io::Result<Load> {
        let poll = Poll::new()?;
        if args.control {
            let fd = io::stdin().as_raw_fd();
            set_nonblocking(fd)?;
            poll.registry()
                .register(&mut SourceFd(&fd), STDIN, Interest::READABLE)?;
        }
        let sh = Shared {
            buf: vec![0; READ_BUF],
            pattern: Pattern::new(READ_BUF.max(MAX_WRITE)),
            stats: Stats::new(),
            size: args.size,
            depth: args.depth,
            measuring: args.messages.is_some(),
            echoed_once: 0,
            limit: args.messages,
        };
        let deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout);
        Ok(Load {
            conns: Vec::with_capacity(args.connections),
            live: 0,
            args,
            poll,
            sh,
            phase: Phase::Connect { deadline },
            next_connect: 0,
            connecting: 0,
            connected: 0,
            cpu_at_open: CpuSnapshot::default(),
            cpu_in_window: CpuSnapshot::default(),
            window: Duration::ZERO,
            stdin_buf: Vec::new(),
            stdin_open: true,
            announced: false,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.open_connections()?;
        loop {
            let now = Instant::now();
            if !self.advance(now)? {
                return Ok(());
            }
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                if event.token() == STDIN {
                    self.read_control()?;
                    continue;
                }
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                self.on_conn_event(event.token().0, readable, writable);
            }
            if matches!(self.phase, Phase::Connect { .. }) {
                self.open_connections()?;
            }
        }
    }

    fn on_conn_event(&mut self, index: usize, readable: bool, writable: bool) {
        let Some(Some(conn)) = self.conns.get_mut(index) else {
            return;
        };
        let was_connecting = conn.state() == State::Connecting;
        let step = conn.on_ready(readable, writable, Instant::now(), &mut self.sh);
        let now_running = conn.state() != State::Connecting;
        if was_connecting && (now_running || step.is_err()) {
            self.connecting -= 1;
            if step.is_ok() {
                self.connected += 1;
            }
        }
        self.settle(index, step);
    }

    /// Drop the connection if it is finished or failed, counting the failure.
    fn settle(&mut self, index: usize, step: Result<Step, Fault>) {
        let errors = &mut self.sh.stats.errors;
        match step {
            Ok(Step::Keep) => return,
            Ok(Step::Done) => {}
            Err(fault) => {
                match &fault {
                    Fault::Connect(_) => errors.connect += 1,
                    Fault::Reset(_) => errors.reset += 1,
                    Fault::EarlyEof => errors.early_eof += 1,
                    Fault::BadBytes(n) => errors.bad_bytes += n,
                    Fault::Other(_) => errors.other += 1,
                }
                if !self.args.json || errors.total() <= 5 {
                    eprintln!("tcp-reactor-load: connection {index}: {fault}");
                }
            }
        }
        if self.conns[index].take().is_some() {
            self.live -= 1;
        }
    }

    /// Keep up to `connect_burst` non-blocking connects in progress.
    fn open_connections(&mut self) -> io::Result<()> {
        while self.next_connect < self.args.connections && self.connecting < self.args.connect_burst
        {
            let index = self.next_connect;
            self.next_connect += 1;
            match TcpStream::connect(self.args.addr) {
                Ok(mut stream) => {
                    self.poll.registry().register(
                        &mut stream,
                        Token(index),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    self.conns
                        .push(Some(Conn::connecting(stream, index, self.args.depth)));
                    self.connecting += 1;
                    self.live += 1;
                }
                Err(e) => {
                    self.conns.push(None);
                    self.sh.stats.errors.connect += 1;
                    eprintln!("tcp-reactor-load: connect {index}: {e}");
                }
            }
        }
        Ok(())
    }

    /// Move the phase forward. `Ok(false)`: the run is over.
    fn advance(&mut self, now: Instant) -> io::Result<bool> {
        match self.phase {
            Phase::Connect { deadline } => {
                let all_started = self.next_connect == self.args.connections;
                if all_started && self.connecting == 0 || now >= deadline {
                    self.fail_connecting();
                    let open_at = if self.args.control {
                        None
                    } else if self.args.messages.is_some() {
                        Some(now)
                    } else {
                        Some(now + Duration::from_secs_f64(self.args.warmup))
                    };
                    self.phase = Phase::Warmup { open_at };
                    return self.advance(now);
                }
            }
            Phase::Warmup { open_at } => {
                if open_at.is_none() && !self.announced && self.sh.echoed_once >= self.live() {
                    self.announced = true;
                    announce("ready")?;
                }
                let open = match open_at {
                    Some(at) => now >= at,
                    None => self.take_line("start") || !self.stdin_open,
                };
                if open {
                    self.cpu_at_open = self.cpu_snapshot();
                    self.sh.measuring = true;
                    // `--messages`: the window closes when every connection is done.
                    let close_at = (!self.args.control && self.args.messages.is_none())
                        .then(|| now + Duration::from_secs_f64(self.args.duration));
                    self.phase = Phase::Window {
                        opened: now,
                        close_at,
                    };
                    return self.advance(now);
                }
            }
            Phase::Window { opened, close_at } => {
                let close = match close_at {
                    Some(at) => now >= at,
                    None => self.take_line("stop") || !self.stdin_open,
                };
                if close || self.live() == 0 {
                    self.close_window(opened, now)?;
                    return self.advance(now);
                }
            }
            Phase::Drain { deadline } => {
                if self.live() == 0 {
                    return Ok(false);
                }
                if now >= deadline {
                    for conn in self.conns.iter_mut() {
                        if conn.as_ref().is_some_and(Conn::owes) {
                            self.sh.stats.errors.timeout += 1;
                        }
                        *conn = None;
                    }
                    self.live = 0;
                    eprintln!("tcp-reactor-load: drain deadline passed; owed echoes or FINs count as timeouts");
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn close_window(&mut self, opened: Instant, now: Instant) -> io::Result<()> {
        self.sh.measuring = false;
        self.window = now.saturating_duration_since(opened);
        let (open, close) = (self.cpu_at_open, self.cpu_snapshot());
        self.cpu_in_window = CpuSnapshot {
            own: close.own.since(open.own),
            server: open.server.zip(close.server).map(|(a, b)| b.since(a)),
            machine: open
                .machine
                .zip(close.machine)
                .map(|(a, b)| b.saturating_sub(a)),
        };
        if self.args.control {
            announce("stopped")?;
        }
        for index in 0..self.conns.len() {
            if let Some(conn) = self.conns[index].as_mut() {
                let step = conn.finish();
                self.settle(index, step);
            }
        }
        self.phase = Phase::Drain {
            deadline: now + Duration::from_secs_f64(self.args.drain_timeout),
        };
        Ok(())
    }

    /// Count connections still connecting as failed, and drop them.
    fn fail_connecting(&mut self) {
        for conn in self.conns.iter_mut() {
            if conn
                .as_ref()
                .is_some_and(|c| c.state() == State::Connecting)
            {
                *conn = None;
                self.live -= 1;
                self.sh.stats.errors.connect += 1;
            }
        }
        let never_started = self.args.connections - self.next_connect;
        self.sh.stats.errors.connect += never_started as u64;
        self.next_connect = self.args.connections;
        self.connecting = 0;
    }

    fn live(&self) -> usize {
        debug_assert_eq!(self.live, self.conns.iter().filter(|c| c.is_some()).count());
        self.live
    }

    fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connect { deadline } | Phase::Drain { deadline } => Some(deadline),
            Phase::Warmup { open_at } => open_at,
            Phase::Window { close_at, .. } => close_at,
        }
    }

    /// Read what stdin has for us (`--control`).
    fn read_control(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reading into a stack buffer of the given length.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                self.stdin_buf.extend_from_slice(&buf[..n as usize]);
                continue;
            }
            if n == 0 {
                self.stdin_open = false;
                let fd = 0;
                self.poll.registry().deregister(&mut SourceFd(&fd))?;
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }

    /// Consume the first stdin line if it is `word`.
    fn take_line(&mut self, word: &str) -> bool {
        let Some(end) = self.stdin_buf.iter().position(|&b| b == b'\n') else {
            return false;
        };
        let line: Vec<u8> = self.stdin_buf.drain(..=end).collect();
        let line = String::from_utf8_lossy(&line);
        if line.trim() == word {
            true
        } else {
            eprintln!(
                "tcp-reactor-load: ignoring control line {:?} (expected {word:?})",
                line.trim()
            );
            false
        }
    }

    fn cpu_snapshot(&self) -> CpuSnapshot {
        CpuSnapshot {
            own: cpu::own(),
            server: self.args.server_pid.and_then(cpu::of_pid),
            machine: cpu::machine_busy(),
        }
    }

    fn report(&self) -> Report<'_> {
        Report {
            addr: self.args.addr.to_string(),
            connections: self.args.connections,
            connected: self.connected,
            size: self.args.size,
            depth: self.args.depth,
            warmup: Duration::from_secs_f64(self.args.warmup),
            window: self.window,
            stats: &self.sh.stats,
            gen_cpu: self.cpu_in_window.own,
            server: self
                .args
                .server_pid
                .map(|pid| (pid, self.cpu_in_window.server)),
            machine_busy: self.cpu_in_window.machine,
        }
    }
}

/// Print a control-protocol line on stdout right away.
fn announce(word: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{word}")?;
    out.flush()
}

fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own (stdin) with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_accept_binary_suffixes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("16K"), Ok(16384));
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("3x").is_err());
    }
}
