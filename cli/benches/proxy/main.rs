//! `cargo bench --bench proxy`: `tcp-reactor --upstream` against HAProxy
//! (`mode tcp`, `nbthread 1`, `option splice-auto`), nginx `stream` (one
//! worker) and the Go model (an `io.Copy` pair per client, `GOMAXPROCS=1`),
//! all in front of the same echo backend, driven by the same load
//! generator, in one interleaved run.
//!
//! Layout on a 2-core machine: the proxy under test alone on CPU 0; the
//! backend, the load generator and iperf3 on CPU 1. Each proxy's CPU time
//! is read exactly (`/proc/PID/task/*/schedstat`, through the generator's
//! `--server-pid`), so "CPU per message" is the proxy's own cost.
//!
//! Columns: messages/s at 50 connections × 64 B and × 16 KiB (depth 1),
//! the proxy's CPU per message and p99; iperf3 one stream each way with the
//! proxy's CPU share; RSS per idle proxied pair (1 000 pairs opened, each
//! having carried one byte each way). A proxy whose program is missing is
//! skipped with a line saying so (`scripts/install-test-tools.sh`).
//!
//! `--quick`: 2 s cells instead of 5.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../common/build.rs"]
mod build;

/// The proxies, in the order the table shows them.
const PROXIES: [&str; 4] = ["tcp-reactor", "haproxy", "nginx", "go"];

/// Where the bench writes configs and builds the Go proxy.
fn work_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tcp-reactor"));
    let dir = bin
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("proxy-bench"))
        .unwrap_or_else(|| PathBuf::from("target/proxy-bench"));
    std::fs::create_dir_all(&dir).expect("target/proxy-bench");
    dir
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Run `cmd` on CPU `cpu` only (when the machine has two).
fn pin(cmd: &mut Command, cpu: usize) -> &mut Command {
    if cpus() >= 2 {
        // SAFETY: the closure only builds a CPU set and calls sched_setaffinity.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
    }
    cmd
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn wait_listening(addr: SocketAddr, what: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!("{what} exited ({status}): {}", err.trim()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{what} never listened on {addr}"))
}

/// A running process we stop when done.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, mut cmd: Command, addr: SocketAddr) -> Result<Proc, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{name}: {e}"))?;
    wait_listening(addr, name, &mut child)?;
    // Drain stderr so a chatty proxy never blocks on a full pipe.
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || for _ in BufReader::new(err).lines() {});
    }
    Ok(Proc { child, addr })
}

/// The echo backend every proxy forwards to (CPU 1).
fn backend() -> Result<Proc, String> {
    let addr = free_addr();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcp-reactor"));
    cmd.args(["--listen", &addr.to_string(), "--max-conns", "20000"])
        .env("RUST_LOG", "warn");
    pin(&mut cmd, 1);
    spawn("backend", cmd, addr)
}

/// Start proxy `name` on CPU 0, forwarding to `upstream`.
fn start(name: &'static str, upstream: SocketAddr) -> Result<Proc, String> {
    let addr = free_addr();
    let dir = work_dir();
    let mut cmd = match name {
        "tcp-reactor" => {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcp-reactor"));
            cmd.args(["--listen", &addr.to_string()])
                .args(["--upstream", &upstream.to_string()])
                .args(["--max-conns", "20000"])
                .env("RUST_LOG", "warn");
            cmd
        }
        "haproxy" => {
            which("haproxy")?;
            let cfg = dir.join("haproxy.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "global\n  nbthread 1\n  maxconn 4096\n\
                     defaults\n  mode tcp\n  option splice-auto\n  timeout connect 5s\n  \
                     timeout client 300s\n  timeout server 300s\n\
                     frontend f\n  bind {addr}\n  default_backend b\n\
                     backend b\n  server s1 {upstream}\n"
                ),
            )
            .map_err(|e| e.to_string())?;
            let mut cmd = Command::new("haproxy");
            cmd.arg("-db").arg("-f").arg(&cfg);
            cmd
        }
        "nginx" => {
            which("nginx")?;
            let module = "/usr/lib/nginx/modules/ngx_stream_module.so";
            if !Path::new(module).exists() {
                return Err(format!("no {module} (libnginx-mod-stream)"));
            }
            let cfg = dir.join("nginx.conf");
            std::fs::write(
                &cfg,
                format!(
                    "load_module {module};\ndaemon off;\nmaster_process off;\n\
                     worker_processes 1;\npid {pid};\nerror_log stderr warn;\n\
                     events {{ worker_connections 4096; }}\n\
                     stream {{ server {{ listen {addr}; proxy_pass {upstream}; }} }}\n",
                    pid = dir.join("nginx.pid").display()
                ),
            )
            .map_err(|e| e.to_string())?;
            let mut cmd = Command::new("nginx");
            cmd.arg("-e")
                .arg("stderr")
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&cfg);
            cmd
        }
        "go" => {
            let bin = build_go(&dir)?;
            let mut cmd = Command::new(bin);
            cmd.arg(addr.to_string())
                .arg(upstream.to_string())
                .env("GOMAXPROCS", "1");
            cmd
        }
        other => return Err(format!("unknown proxy {other}")),
    };
    pin(&mut cmd, 0);
    spawn(name, cmd, addr)
}

fn which(program: &str) -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).exists()));
    match found {
        true => Ok(()),
        false => Err(format!(
            "{program} not installed (scripts/install-test-tools.sh installs it)"
        )),
    }
}

fn build_go(dir: &Path) -> Result<PathBuf, String> {
    which("go")?;
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/proxy/go/proxy.go");
    build::go_build(source, &dir.join("go"), "go-proxy")
}

/// One load cell's figures.
#[derive(Default, Clone)]
struct Cell {
    msgs_per_s: f64,
    cpu_us_per_msg: f64,
    p99_us: f64,
    errors: u64,
}

fn load(generator: &Path, proxy: &Proc, size: usize, secs: f64) -> Result<Cell, String> {
    let mut cmd = Command::new(generator);
    cmd.arg(proxy.addr.to_string())
        .args(["-c", "50", "-s", &size.to_string(), "-d", "1", "--json"])
        .args(["--server-pid", &proxy.pid().to_string()])
        .args(["--warmup", "1", "--duration", &secs.to_string()]);
    pin(&mut cmd, 1);
    let out = cmd.output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("no JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let msgs = f("msgs").max(1.0);
    Ok(Cell {
        msgs_per_s: f("msgs_per_s"),
        cpu_us_per_msg: (f("server_user_ns") + f("server_sys_ns")) / msgs / 1e3,
        p99_us: f("p99_us"),
        errors: v.get("errors").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// Total CPU time of process `pid`, all threads (ns).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// One iperf3 run through a proxy.
#[derive(Clone, Copy)]
struct Bulk {
    /// Received, Gbit/s.
    gbit: f64,
    /// The proxy's CPU over the run, as a share of one core.
    cpu: f64,
}

/// iperf3, one stream through `proxy` (`-R`: upstream to client).
fn iperf(proxy: &Proc, reverse: bool, secs: f64) -> Result<Bulk, String> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", "127.0.0.1", "-p", &proxy.addr.port().to_string()])
        .args(["-t", &format!("{}", secs.max(1.0) as u64), "-J"]);
    if reverse {
        cmd.arg("-R");
    }
    pin(&mut cmd, 1);
    let before = (cpu_ns(proxy.pid()), Instant::now());
    let out = cmd.output().map_err(|e| e.to_string())?;
    let cpu = (cpu_ns(proxy.pid()) - before.0) as f64 / before.1.elapsed().as_nanos() as f64;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 JSON: {e}"))?;
    let end = &v["end"];
    let gbit = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("iperf3: {}", v["error"]))?
        / 1e9;
    Ok(Bulk { gbit, cpu })
}

/// Open `n` pairs through `proxy`, each carrying one byte each way, and
/// return the proxy's RSS growth per pair (bytes).
fn idle_rss_per_pair(proxy: &Proc, n: usize) -> Result<f64, String> {
    let before = rss_kib(proxy.pid());
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(proxy.addr).map_err(|e| e.to_string())?;
        s.write_all(b"x").map_err(|e| e.to_string())?;
        held.push(s);
    }
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib(proxy.pid());
    drop(held);
    Ok(after.saturating_sub(before) as f64 * 1024.0 / n as f64)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 2.0 } else { 5.0 };
    let generator = build::load_generator();
    let echo = match backend() {
        Ok(b) => b,
        Err(e) => panic!("the echo backend: {e}"),
    };
    println!(
        "proxy bench: {secs} s cells, proxy on CPU 0, backend + load on CPU 1 ({} CPUs)",
        cpus()
    );
    // Messages through each proxy, interleaved per size.
    let sizes = [64usize, 16 * 1024];
    let mut cells: Vec<Vec<Option<Cell>>> = vec![vec![None; sizes.len()]; PROXIES.len()];
    let mut skipped: Vec<String> = Vec::new();
    for (s, &size) in sizes.iter().enumerate() {
        for (p, &name) in PROXIES.iter().enumerate() {
            let proxy = match start(name, echo.addr) {
                Ok(proxy) => proxy,
                Err(e) => {
                    if s == 0 {
                        println!("SKIP {name}: {e}");
                        skipped.push(name.to_string());
                    }
                    continue;
                }
            };
            match load(&generator, &proxy, size, secs) {
                Ok(cell) => cells[p][s] = Some(cell),
                Err(e) => println!("{name} × {size} B: {e}"),
            }
            drop(proxy);
        }
    }
    drop(echo);

    // iperf3 one stream each way; RSS per idle pair.
    let mut bulk: Vec<Option<(Bulk, Bulk)>> = vec![None; PROXIES.len()];
    let mut idle: Vec<Option<f64>> = vec![None; PROXIES.len()];
    if which("iperf3").is_ok() {
        let addr = free_addr();
        let mut cmd = Command::new("iperf3");
        cmd.args(["-s", "-p", &addr.port().to_string()]);
        pin(&mut cmd, 1);
        match spawn("iperf3 -s", cmd, addr) {
            Ok(server) => {
                for (p, &name) in PROXIES.iter().enumerate() {
                    let Ok(proxy) = start(name, server.addr) else {
                        continue;
                    };
                    // iperf3 -s serves one test at a time and needs a moment
                    // between them; a run it refused is tried once more.
                    let run = |reverse| {
                        std::thread::sleep(Duration::from_millis(500));
                        iperf(&proxy, reverse, secs).or_else(|_| {
                            std::thread::sleep(Duration::from_secs(1));
                            iperf(&proxy, reverse, secs)
                        })
                    };
                    let up = run(false);
                    let down = run(true);
                    match (up, down) {
                        (Ok(up), Ok(down)) => bulk[p] = Some((up, down)),
                        (Err(e), _) | (_, Err(e)) => println!("{name} iperf3: {e}"),
                    }
                }
            }
            Err(e) => println!("SKIP iperf3: {e}"),
        }
    } else {
        println!("SKIP iperf3: not installed (scripts/install-test-tools.sh installs it)");
    }
    if let Ok(echo) = backend() {
        for (p, &name) in PROXIES.iter().enumerate() {
            let Ok(proxy) = start(name, echo.addr) else {
                continue;
            };
            match idle_rss_per_pair(&proxy, 1000) {
                Ok(bytes) => idle[p] = Some(bytes),
                Err(e) => println!("{name} idle pairs: {e}"),
            }
        }
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| proxy | 64 B msgs/s | CPU/msg | p99 | 16 KiB msgs/s | CPU/msg | p99 | iperf3 → Gbit/s (CPU) | iperf3 ← Gbit/s (CPU) | RSS/idle pair |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|---|---|");
    for (p, &name) in PROXIES.iter().enumerate() {
        if skipped.contains(&name.to_string()) {
            continue;
        }
        let mut row = format!("| {name} |");
        for cell in &cells[p] {
            match cell {
                Some(c) => {
                    let errors = if c.errors > 0 {
                        format!(" ({} errors)", c.errors)
                    } else {
                        String::new()
                    };
                    let _ = write!(
                        row,
                        " {:.1}k{errors} | {:.1} µs | {:.0} µs |",
                        c.msgs_per_s / 1e3,
                        c.cpu_us_per_msg,
                        c.p99_us
                    );
                }
                None => row.push_str(" – | – | – |"),
            }
        }
        match bulk[p] {
            Some((up, down)) => {
                let _ = write!(
                    row,
                    " {:.1} ({:.0}%) | {:.1} ({:.0}%) |",
                    up.gbit,
                    up.cpu * 100.0,
                    down.gbit,
                    down.cpu * 100.0,
                );
            }
            None => row.push_str(" – | – |"),
        }
        match idle[p] {
            Some(b) => {
                let _ = write!(row, " {:.2} KiB |", b / 1024.0);
            }
            None => row.push_str(" – |"),
        }
        let _ = writeln!(table, "{row}");
    }
    // Ratios against the goals: rate vs nginx, CPU vs HAProxy.
    let ours = &cells[0];
    let mut ratios = String::new();
    for (s, size) in ["64 B", "16 KiB"].iter().enumerate() {
        if let (Some(o), Some(h), Some(n)) = (&ours[s], &cells[1][s], &cells[2][s]) {
            let _ = writeln!(
                ratios,
                "{size}: rate {:.2}× nginx stream (goal ≥ 1.0), CPU/msg {:.2}× HAProxy (goal ≤ 0.8)",
                o.msgs_per_s / n.msgs_per_s.max(1.0),
                o.cpu_us_per_msg / h.cpu_us_per_msg.max(1e-9)
            );
        }
    }
    if let (Some(o), Some(h)) = (bulk[0], bulk[1]) {
        let _ = writeln!(
            ratios,
            "iperf3 →: {:.2}× HAProxy's rate at {:.2}× its CPU (goal ≥ 1.0 at ≤ 1.0)",
            o.0.gbit / h.0.gbit.max(1e-9),
            o.0.cpu / h.0.cpu.max(1e-9)
        );
    }
    println!("\n{table}\n{ratios}");
}
