//! What one load run counted, and how it is printed.
//!
//! Owns: the latency histogram, the message counter of the measured window, the error
//! counters, and the human and `--json` renderings of the final report. Must not: do I/O
//! on sockets or decide when the window opens (the event loop in `main` does).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::cpu::CpuTimes;

/// Every way a connection can fail the run. Each counter is one event, except
/// `bad_bytes`, which counts echoed bytes that differ from what was sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Errors {
    /// `connect` failed, or the connection was not established before the deadline.
    pub connect: u64,
    /// The server reset the connection (ECONNRESET, EPIPE, ECONNABORTED).
    pub reset: u64,
    /// Echoed bytes that are not the bytes sent at that stream offset.
    pub bad_bytes: u64,
    /// The server closed its side while echoes were still owed.
    pub early_eof: u64,
    /// Echoes (or the server's FIN after ours) that did not arrive before the drain deadline.
    pub timeout: u64,
    /// Any other socket error.
    pub other: u64,
}

impl Errors {
    /// The sum of all counters; a clean run has 0.
    pub fn total(&self) -> u64 {
        self.connect + self.reset + self.bad_bytes + self.early_eof + self.timeout + self.other
    }
}

/// Counters shared by every connection of the run.
pub struct Stats {
    /// Round-trip time of every message completed inside the window, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Messages whose echo completed inside the window.
    pub msgs: u64,
    pub errors: Errors,
}

impl Stats {
    pub fn new() -> Stats {
        // 1 ns .. 60 s at 3 significant digits: about 0.1% error on every percentile.
        let latency = Histogram::new_with_bounds(1, 60_000_000_000, 3)
            .expect("static histogram bounds are valid");
        Stats {
            latency,
            msgs: 0,
            errors: Errors::default(),
        }
    }

    /// Account one completed message of the measured window.
    pub fn record(&mut self, rtt: Duration) {
        self.msgs += 1;
        self.latency
            .saturating_record(rtt.as_nanos().min(u64::MAX as u128) as u64);
    }
}

/// Everything the final report shows.
pub struct Report<'a> {
    pub addr: String,
    pub connections: usize,
    pub connected: usize,
    pub size: usize,
    pub depth: usize,
    pub warmup: Duration,
    /// Actual length of the measured window.
    pub window: Duration,
    pub stats: &'a Stats,
    /// CPU this load generator used inside the window.
    pub gen_cpu: CpuTimes,
    /// `(pid, CPU used inside the window)` of the watched server, if any.
    pub server: Option<(u32, Option<CpuTimes>)>,
    /// Busy time of the whole machine inside the window (all CPUs).
    pub machine_busy: Option<Duration>,
}

impl Report<'_> {
    /// Window length for rates; an empty window (every connection failed before it
    /// opened) reads as 0 rates, not infinities.
    fn secs(&self) -> f64 {
        if self.window.is_zero() {
            f64::INFINITY
        } else {
            self.window.as_secs_f64()
        }
    }

    fn msgs_per_s(&self) -> f64 {
        self.stats.msgs as f64 / self.secs()
    }

    /// Echoed payload, one direction, in MB (10^6 bytes) per second.
    fn mb_per_s(&self) -> f64 {
        self.msgs_per_s() * self.size as f64 / 1e6
    }

    fn quantile_us(&self, q: f64) -> f64 {
        if self.stats.latency.is_empty() {
            return 0.0;
        }
        self.stats.latency.value_at_quantile(q) as f64 / 1000.0
    }

    fn max_us(&self) -> f64 {
        self.stats.latency.max() as f64 / 1000.0
    }

    fn gen_cpu_share(&self) -> f64 {
        (self.gen_cpu.user + self.gen_cpu.sys).as_secs_f64() / self.secs()
    }

    /// One line of JSON; the echo bench harness parses it.
    pub fn json(&self) -> String {
        let e = &self.stats.errors;
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"addr\":\"{}\",\"connections\":{},\"connected\":{},\"size\":{},\"depth\":{},\
             \"warmup_s\":{:.3},\"window_s\":{:.6},\"msgs\":{},\"msgs_per_s\":{:.1},\
             \"mb_per_s\":{:.3},\"p50_us\":{:.2},\"p99_us\":{:.2},\"p999_us\":{:.2},\
             \"max_us\":{:.2},\"errors\":{},\"connect_errors\":{},\"resets\":{},\
             \"bad_bytes\":{},\"early_eofs\":{},\"timeouts\":{},\"other_errors\":{},\
             \"gen_user_s\":{:.6},\"gen_sys_s\":{:.6},\"gen_cpu\":{:.4}",
            self.addr,
            self.connections,
            self.connected,
            self.size,
            self.depth,
            self.warmup.as_secs_f64(),
            self.window.as_secs_f64(),
            self.stats.msgs,
            self.msgs_per_s(),
            self.mb_per_s(),
            self.quantile_us(0.5),
            self.quantile_us(0.99),
            self.quantile_us(0.999),
            self.max_us(),
            e.total(),
            e.connect,
            e.reset,
            e.bad_bytes,
            e.early_eof,
            e.timeout,
            e.other,
            self.gen_cpu.user.as_secs_f64(),
            self.gen_cpu.sys.as_secs_f64(),
            self.gen_cpu_share(),
        );
        match self.server {
            Some((pid, Some(cpu))) => {
                let _ = write!(
                    s,
                    ",\"server_pid\":{pid},\"server_user_ns\":{},\"server_sys_ns\":{}",
                    cpu.user.as_nanos(),
                    cpu.sys.as_nanos()
                );
            }
            Some((pid, None)) => {
                let _ = write!(
                    s,
                    ",\"server_pid\":{pid},\"server_user_ns\":null,\"server_sys_ns\":null"
                );
            }
            None => {
                s.push_str(",\"server_pid\":null,\"server_user_ns\":null,\"server_sys_ns\":null")
            }
        }
        match self.machine_busy {
            Some(busy) => {
                let _ = write!(s, ",\"machine_busy_s\":{:.6}", busy.as_secs_f64());
            }
            None => s.push_str(",\"machine_busy_s\":null"),
        }
        s.push('}');
        s
    }

    /// A few lines for a person.
    pub fn human(&self) -> String {
        let e = &self.stats.errors;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "target   {}  connections {}/{}  size {} B  depth {}  warm-up {:.1} s  measured {:.2} s",
            self.addr,
            self.connected,
            self.connections,
            self.size,
            self.depth,
            self.warmup.as_secs_f64(),
            self.window.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "rate     {:.0} msgs/s  {:.2} MB/s (echoed payload, each direction)",
            self.msgs_per_s(),
            self.mb_per_s()
        );
        let _ = writeln!(
            s,
            "latency  p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us  ({} msgs)",
            self.quantile_us(0.5),
            self.quantile_us(0.99),
            self.quantile_us(0.999),
            self.max_us(),
            self.stats.msgs
        );
        let _ = writeln!(
            s,
            "errors   {} (connect {}, reset {}, bad bytes {}, early EOF {}, timeout {}, other {})",
            e.total(),
            e.connect,
            e.reset,
            e.bad_bytes,
            e.early_eof,
            e.timeout,
            e.other
        );
        let _ = write!(
            s,
            "load gen {:.0}% of one core (user {:.0}%, sys {:.0}%)",
            100.0 * self.gen_cpu_share(),
            100.0 * self.gen_cpu.user.as_secs_f64() / self.secs(),
            100.0 * self.gen_cpu.sys.as_secs_f64() / self.secs()
        );
        if let (Some((_, Some(server))), Some(busy)) = (self.server, self.machine_busy) {
            let others = busy.as_secs_f64()
                - (self.gen_cpu.user + self.gen_cpu.sys + server.user + server.sys).as_secs_f64();
            let _ = write!(
                s,
                "\nothers   {:.0}% of one core busy outside this process and the server",
                100.0 * others.max(0.0) / self.secs()
            );
        }
        if let Some((pid, Some(cpu))) = self.server {
            let per_msg = |d: Duration| d.as_nanos() as f64 / self.stats.msgs.max(1) as f64;
            let _ = write!(
                s,
                "\nserver   pid {pid}: user {:.0} ns/msg, sys {:.0} ns/msg ({:.0}% of one core)",
                per_msg(cpu.user),
                per_msg(cpu.sys),
                100.0 * (cpu.user + cpu.sys).as_secs_f64() / self.secs()
            );
        }
        s
    }
}
