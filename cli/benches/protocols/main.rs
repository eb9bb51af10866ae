//! `cargo bench --bench protocols`: tcp-reactor's `http` and `resp` protocols against
//! nginx (one worker, `return 200`) and redis-server, on the same machine, in the same run;
//! and pub/sub fan-out (one publisher; 1, 10, 100 subscribers; 64 B and 1 KiB) against
//! redis-server with our own clients ([`pubsub`]). `--only http,resp,pubsub` picks parts.
//!
//! Every server is its own process pinned to one CPU (the last this process may use); the
//! load tools (`wrk`, `redis-benchmark`) are pinned to the first. Servers are started once,
//! runs are interleaved (the order rotates each repetition) and medians are reported.
//! Server CPU per request is read from `/proc/PID/stat` before and after each run.
//! A missing tool skips its half with a loud `SKIP:` line; the exit status is then still 0.
//! Every server this bench starts is killed at the end, also on error or panic, and gets
//! `PR_SET_PDEATHSIG` so it dies with the bench. See docs/BENCHMARKS.md.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;

// The echo bench's CPU helpers; this bench uses CpuSet and allowed_cpus only.
#[allow(dead_code)]
#[path = "../echo/pin.rs"]
mod pin;

use pin::CpuSet;

// The benches' shared helpers (tools, ports, /proc, wrk's durations).
#[allow(dead_code)]
#[path = "../common/sys.rs"]
mod sys;
use sys::{cpu_ns, duration_us, find_tool, free_port, listening_addr};

mod pubsub;

/// tcp-reactor's http/resp against nginx and redis-server.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Cli {
    /// Smoke test: tiny runs, only checks that every run produces numbers and 0 errors.
    #[arg(long)]
    quick: bool,
    /// Repetitions of every run (interleaved); medians are reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    duration: u32,
    /// Requests per redis-benchmark test (`-n`).
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Run only these parts (comma-separated): http, resp, pubsub. Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Report directory (default: target/bench-report).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

// ---------------------------------------------------------------- CPUs and /proc

/// Pin the child to `cpus` (if any) and have it killed when the bench dies.
fn prepare(cmd: &mut Command, cpus: Option<CpuSet>) {
    // SAFETY: only async-signal-safe calls (sched_setaffinity, prctl) on prepared data.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(set) = cpus {
                let _ = set.apply();
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    };
}

// ---------------------------------------------------------------- servers

/// A server under test. Dropping it kills it (SIGKILL) if it is still running.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
}

impl Server {
    /// tcp-reactor `--protocol PROTO`; its address comes from the `listening on` line.
    fn tcp_reactor(proto: &str, cpu: Option<CpuSet>) -> Result<Server, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcp-reactor"));
        cmd.args(["--protocol", proto, "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn,tcp_reactor=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        prepare(&mut cmd, cpu);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("tcp-reactor: cannot start: {e}"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if !sent {
                    if let Some(addr) = listening_addr(&line) {
                        sent = true;
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let mut server = Server {
            name: "tcp-reactor",
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
        };
        server.addr = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "tcp-reactor: no `listening on ADDR` line within 10 s".to_string())?;
        Ok(server)
    }

    /// An external server; ready once its port accepts a connection.
    fn external(
        name: &'static str,
        mut cmd: Command,
        port: u16,
        cpu: Option<CpuSet>,
    ) -> Result<Server, String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        prepare(&mut cmd, cpu);
        let child = cmd
            .spawn()
            .map_err(|e| format!("{name}: cannot start: {e}"))?;
        let mut server = Server {
            name,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        let started = Instant::now();
        while TcpStream::connect(server.addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{name}: exited ({status}) before listening"));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "{name}: not listening on {} after 10 s",
                    server.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL. Returns how it ended, for the log.
    fn stop(mut self) -> String {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return format!("{}: {status}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        format!("{}: killed after 5 s", self.name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// nginx, one process (`master_process off`), config and temp paths in `dir`.
fn start_nginx(nginx: &Path, dir: &Path, cpu: Option<CpuSet>) -> Result<Server, String> {
    let port = free_port()?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\nerror_log stderr;\n\
         pid {d}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n\
         location / {{ return 200 \"Hello, World!\"; }}\n  }}\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| format!("write nginx.conf: {e}"))?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-p").arg(dir).arg("-c").arg(&conf_path);
    cmd.arg("-e").arg("stderr");
    Server::external("nginx", cmd, port, cpu)
}

fn start_redis(redis: &Path, dir: &Path, cpu: Option<CpuSet>) -> Result<Server, String> {
    let port = free_port()?;
    let mut cmd = Command::new(redis);
    cmd.args([
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .args(["--bind", "127.0.0.1", "--loglevel", "warning", "--dir"])
    .arg(dir);
    Server::external("redis-server", cmd, port, cpu)
}

/// One PING each way (inline and multibulk): the server must answer `+PONG`.
fn check_ping(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"PING\r\n*1\r\n$4\r\nPING\r\n")
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 14 {
        let n = s.read(&mut buf).map_err(|e| format!("PING: {e}"))?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    if got != b"+PONG\r\n+PONG\r\n" {
        return Err(format!("PING answered {:?}", String::from_utf8_lossy(&got)));
    }
    Ok(())
}

// ---------------------------------------------------------------- load tools

/// One measured run against one server.
#[derive(Clone, Default)]
struct Sample {
    rps: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    user_ns: f64,
    sys_ns: f64,
    errors: u64,
}

/// Run a load tool pinned to the load CPU; return its stdout and the server's CPU delta.
fn run_load(
    cmd: &mut Command,
    server: &Server,
    cpu: Option<CpuSet>,
) -> Result<(String, u64, u64), String> {
    prepare(cmd, cpu);
    let before = cpu_ns(server.pid()).ok_or("cannot read server /proc/PID/stat")?;
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    let after = cpu_ns(server.pid()).ok_or("server exited during the run")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}{}",
            cmd.get_program(),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((stdout, after.0 - before.0, after.1 - before.1))
}

fn wrk(wrk: &Path, server: &Server, secs: u32, cpu: Option<CpuSet>) -> Result<Sample, String> {
    let url = format!("http://{}/", server.addr);
    let mut cmd = Command::new(wrk);
    cmd.args(["-t1", "-c50", &format!("-d{secs}s"), "--latency", &url]);
    let (out, user, sys) = run_load(&mut cmd, server, cpu)?;
    let mut s = Sample::default();
    let mut requests = 0u64;
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => s.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => s.p50_us = duration_us(v),
            ["99%", v] => s.p99_us = duration_us(v),
            [n, "requests", "in", ..] => requests = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                s.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => s.errors += n.parse().unwrap_or(1),
            _ => {}
        }
    }
    if s.rps <= 0.0 || requests == 0 {
        return Err(format!(
            "wrk against {}: no Requests/sec in:\n{out}",
            server.name
        ));
    }
    s.user_ns = user as f64 / requests as f64;
    s.sys_ns = sys as f64 / requests as f64;
    Ok(s)
}

/// `redis-benchmark -t ping`: (PING_INLINE, PING_MBULK) samples; CPU is split evenly
/// (both tests run `n` requests, back to back, in one invocation).
fn redis_bench(
    tool: &Path,
    server: &Server,
    n: u64,
    pipeline: u32,
    cpu: Option<CpuSet>,
) -> Result<[Sample; 2], String> {
    let mut cmd = Command::new(tool);
    cmd.args(["-h", "127.0.0.1", "-p", &server.addr.port().to_string()])
        .args(["-t", "ping", "-n", &n.to_string(), "-q"])
        .args(["-P", &pipeline.to_string()]);
    let (out, user, sys) = run_load(&mut cmd, server, cpu)?;
    let mut samples = [Sample::default(), Sample::default()];
    // -q prints progress with `\r`; the final line per test is
    // `PING_INLINE: 123456.79 requests per second, p50=0.199 msec`.
    for line in out.split(['\r', '\n']) {
        let i = if line.starts_with("PING_INLINE:") {
            0
        } else if line.starts_with("PING_MBULK:") {
            1
        } else {
            continue;
        };
        let Some(pos) = line.find(" requests per second") else {
            continue;
        };
        let num = line[..pos].rsplit(' ').next().unwrap_or("");
        samples[i].rps = num.parse().unwrap_or(0.0);
        if let Some(p) = line.find("p50=") {
            let v = line[p + 4..].split_whitespace().next().unwrap_or("");
            samples[i].p50_us = v.parse::<f64>().ok().map(|ms| ms * 1e3);
        }
    }
    for (s, name) in samples.iter_mut().zip(["PING_INLINE", "PING_MBULK"]) {
        if s.rps <= 0.0 {
            return Err(format!(
                "redis-benchmark against {}: no {name} rate in:\n{out}",
                server.name
            ));
        }
        s.user_ns = user as f64 / (2 * n) as f64;
        s.sys_ns = sys as f64 / (2 * n) as f64;
    }
    Ok(samples)
}

// ---------------------------------------------------------------- report

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Median of each column over the repetitions of one row.
fn summarize(samples: &[Sample]) -> Sample {
    let opt = |f: fn(&Sample) -> Option<f64>| {
        let v: Vec<f64> = samples.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(v))
    };
    Sample {
        rps: median(samples.iter().map(|s| s.rps).collect()),
        p50_us: opt(|s| s.p50_us),
        p99_us: opt(|s| s.p99_us),
        user_ns: median(samples.iter().map(|s| s.user_ns).collect()),
        sys_ns: median(samples.iter().map(|s| s.sys_ns).collect()),
        errors: samples.iter().map(|s| s.errors).sum(),
    }
}

/// A table row: label, server, samples.
struct Row {
    load: String,
    server: &'static str,
    samples: Vec<Sample>,
}

fn cell(v: Option<f64>, reference: Option<f64>, digits: usize) -> String {
    match (v, reference) {
        (Some(v), Some(r)) if r > 0.0 => format!("{v:.digits$} ({:.2}×)", v / r),
        (Some(v), _) => format!("{v:.digits$}"),
        (None, _) => "-".to_string(),
    }
}

/// Rows come in pairs: tcp-reactor, then the reference it is divided by.
fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| load | server | req/s | p50 µs | p99 µs | user ns/req | sys ns/req | errors |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for pair in rows.chunks(2) {
        let reference = pair.get(1).map(|r| summarize(&r.samples));
        for (i, row) in pair.iter().enumerate() {
            let s = summarize(&row.samples);
            let r = if i == 0 { reference.clone() } else { None };
            let r = r.as_ref();
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                row.load,
                row.server,
                cell(Some(s.rps), r.map(|r| r.rps), 0),
                cell(s.p50_us, r.and_then(|r| r.p50_us), 0),
                cell(s.p99_us, r.and_then(|r| r.p99_us), 0),
                cell(Some(s.user_ns), r.map(|r| r.user_ns), 0),
                cell(Some(s.sys_ns), r.map(|r| r.sys_ns), 0),
                s.errors
            );
        }
    }
    t
}

// ---------------------------------------------------------------- main

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `cargo test --benches` runs without --bench: behave like --quick.
    let quick = cli.quick || !cli.bench;
    let (reps, secs, n) = if quick {
        (1, 1, 2_000)
    } else {
        (cli.reps.max(1), cli.duration.max(1), cli.requests.max(1))
    };
    let cpus = pin::allowed_cpus();
    let (load_cpu, server_cpu, layout) = if cpus.len() >= 2 {
        let (l, s) = (cpus[0], cpus[cpus.len() - 1]);
        let d = format!("load tool on CPU {l}, server on CPU {s}");
        (
            Some(CpuSet::from_cpus(&[l])),
            Some(CpuSet::from_cpus(&[s])),
            d,
        )
    } else {
        (None, None, "not pinned (fewer than 2 CPUs)".to_string())
    };
    let dir = std::env::temp_dir().join(format!("tcp-reactor-protocols-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let wanted = |part: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == part);
    let parts = [wanted("http"), wanted("resp"), wanted("pubsub")];
    let result = run(quick, reps, secs, n, load_cpu, server_cpu, &dir, parts);
    let _ = std::fs::remove_dir_all(&dir);
    let (body, failures) = match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = String::from("## Protocols: tcp-reactor against nginx and redis-server\n\n");
    let _ = writeln!(
        report,
        "{}; {reps} rep(s), medians; wrk -t1 -c50 -d{secs}s; redis-benchmark -t ping -n {n} \
         (50 clients); `(n×)` = tcp-reactor ÷ the reference in the same run; CPU ns/req from \
         /proc/PID/stat; run took {:.0} s.\n",
        layout,
        started.elapsed().as_secs_f64()
    );
    report.push_str(&body);
    print!("{report}");
    // A smoke test does not overwrite the last real report unless --out asks it to.
    let out = match (&cli.out, quick) {
        (Some(out), _) => Some(out.clone()),
        (None, true) => None,
        (None, false) => {
            // CARGO_TARGET_TMPDIR is target/tmp; the report goes next to it.
            let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
            Some(tmp.parent().unwrap_or(tmp).join("bench-report"))
        }
    };
    if let Some(out) = out.filter(|out| std::fs::create_dir_all(out).is_ok()) {
        let path = out.join("protocols.md");
        match std::fs::write(&path, &report) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(e) => eprintln!("warning: cannot write {}: {e}", path.display()),
        }
    }
    if failures > 0 {
        eprintln!("FAIL: {failures} run(s) reported errors");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[allow(clippy::too_many_arguments)]
fn run(
    quick: bool,
    reps: usize,
    secs: u32,
    n: u64,
    load_cpu: Option<CpuSet>,
    server_cpu: Option<CpuSet>,
    dir: &Path,
    [http, resp, pubsub]: [bool; 3],
) -> Result<(String, u64), String> {
    let mut body = String::new();
    let mut failures = 0;
    let missing = |tools: &[&str]| -> Option<String> {
        tools
            .iter()
            .find(|t| find_tool(t).is_none())
            .map(|t| t.to_string())
    };

    // http: tcp-reactor vs nginx, wrk.
    if !http {
    } else if let Some(tool) = missing(&["nginx", "wrk"]) {
        let msg = format!("SKIP: {tool} not installed; run scripts/install-bench-tools.sh");
        eprintln!("\n!!!!!!!! {msg} (http half skipped) !!!!!!!!\n");
        let _ = writeln!(body, "### http\n\n{msg}\n");
    } else {
        let wrk_path = find_tool("wrk").expect("checked");
        let nginx_dir = dir.join("nginx");
        std::fs::create_dir_all(nginx_dir.join("logs")).map_err(|e| e.to_string())?;
        let servers = [
            Server::tcp_reactor("http", server_cpu)?,
            start_nginx(
                &find_tool("nginx").expect("checked"),
                &nginx_dir,
                server_cpu,
            )?,
        ];
        let mut rows: Vec<Row> = servers
            .iter()
            .map(|s| Row {
                load: format!("http GET / ({secs} s)"),
                server: s.name,
                samples: Vec::new(),
            })
            .collect();
        for rep in 0..reps {
            for k in 0..servers.len() {
                let i = (k + rep) % servers.len();
                eprintln!("[http rep {}/{reps}] {}", rep + 1, servers[i].name);
                let s = wrk(&wrk_path, &servers[i], secs, load_cpu)?;
                rows[i].samples.push(s);
            }
        }
        for s in servers {
            eprintln!("stopped {}", s.stop());
        }
        failures += rows
            .iter()
            .flat_map(|r| &r.samples)
            .map(|s| s.errors)
            .sum::<u64>();
        let _ = writeln!(
            body,
            "### http: `wrk -t1 -c50 --latency` against tcp-reactor `--protocol http` and nginx \
             (1 worker, `return 200`)\n\n{}",
            table(&rows)
        );
    }

    // resp: tcp-reactor vs redis-server, redis-benchmark.
    if !resp {
    } else if let Some(tool) = missing(&["redis-server", "redis-benchmark"]) {
        let msg = format!("SKIP: {tool} not installed; run scripts/install-bench-tools.sh");
        eprintln!("\n!!!!!!!! {msg} (resp half skipped) !!!!!!!!\n");
        let _ = writeln!(body, "### resp\n\n{msg}\n");
    } else {
        let bench = find_tool("redis-benchmark").expect("checked");
        let servers = [
            Server::tcp_reactor("resp", server_cpu)?,
            start_redis(
                &find_tool("redis-server").expect("checked"),
                dir,
                server_cpu,
            )?,
        ];
        for s in &servers {
            check_ping(s.addr).map_err(|e| format!("{}: {e}", s.name))?;
        }
        // rows[pipeline][test][server]
        let mut rows: Vec<Row> = Vec::new();
        for p in [1, 16] {
            for test in ["PING_INLINE", "PING_MBULK"] {
                for s in &servers {
                    rows.push(Row {
                        load: format!("{test} -P {p}"),
                        server: s.name,
                        samples: Vec::new(),
                    });
                }
            }
        }
        for rep in 0..reps {
            for (pi, p) in [1u32, 16].into_iter().enumerate() {
                for k in 0..servers.len() {
                    let i = (k + rep) % servers.len();
                    eprintln!("[resp rep {}/{reps}] -P {p} {}", rep + 1, servers[i].name);
                    let [inline, mbulk] = redis_bench(&bench, &servers[i], n, p, load_cpu)?;
                    rows[pi * 4 + i].samples.push(inline);
                    rows[pi * 4 + 2 + i].samples.push(mbulk);
                }
            }
        }
        // The servers must still answer after the load.
        for s in &servers {
            if let Err(e) = check_ping(s.addr) {
                eprintln!("FAIL: {} after the runs: {e}", s.name);
                failures += 1;
            }
        }
        for s in servers {
            eprintln!("stopped {}", s.stop());
        }
        let _ = writeln!(
            body,
            "### resp: `redis-benchmark -t ping` (50 clients) against tcp-reactor `--protocol resp` \
             and redis-server\n\nCPU ns/req: the whole invocation (both tests) ÷ 2n.\n\n{}",
            table(&rows)
        );
    }
    // pub/sub fan-out: tcp-reactor vs redis-server, our own publisher and subscribers.
    if !pubsub {
    } else if let Some(tool) = missing(&["redis-server"]) {
        let msg = format!("SKIP: {tool} not installed; run scripts/install-bench-tools.sh");
        eprintln!("\n!!!!!!!! {msg} (pub/sub half skipped) !!!!!!!!\n");
        let _ = writeln!(body, "### pub/sub\n\n{msg}\n");
    } else {
        let (rows, errors) = fanout_rows(quick, reps, secs, load_cpu, server_cpu, dir)?;
        failures += errors;
        let _ =
            writeln!(
            body,
            "### pub/sub fan-out: 1 publisher, N subscribers of one channel, against tcp-reactor \
             `--protocol resp` and redis-server\n\n\
             msg/s counts *delivered* messages (published × N); CPU ns per delivered message; \
             p50/p99: publish → delivery latency. The publisher stays at most 32 KiB ahead of \
             the slowest subscriber (see benches/protocols/pubsub.rs).\n\n{}",
            table(&rows).replacen("req/s", "msg/s", 1).replace("ns/req", "ns/msg")
        );
    }
    if quick {
        body.push_str("(--quick: smoke test, figures not meaningful)\n");
    }
    Ok((body, failures))
}

/// The fan-out matrix: 1, 10 and 100 subscribers × 64 B and 1 KiB, both servers,
/// interleaved. The clients are threads of this process, pinned to the load CPU.
fn fanout_rows(
    quick: bool,
    reps: usize,
    secs: u32,
    load_cpu: Option<CpuSet>,
    server_cpu: Option<CpuSet>,
    dir: &Path,
) -> Result<(Vec<Row>, u64), String> {
    if let Some(cpu) = load_cpu {
        let _ = cpu.apply(); // this thread, and the client threads it spawns
    }
    let servers = [
        Server::tcp_reactor("resp", server_cpu)?,
        start_redis(
            &find_tool("redis-server").expect("checked"),
            dir,
            server_cpu,
        )?,
    ];
    let cases: Vec<(usize, usize)> = [1, 10, 100]
        .into_iter()
        .flat_map(|n| [64, 1024].map(|size| (n, size)))
        .collect();
    let mut rows = Vec::new();
    for &(n, size) in &cases {
        for s in &servers {
            rows.push(Row {
                load: format!("{n} × {size} B"),
                server: s.name,
                samples: Vec::new(),
            });
        }
    }
    let secs = if quick { 0.5 } else { f64::from(secs) };
    for rep in 0..reps {
        for (c, &(n, size)) in cases.iter().enumerate() {
            for k in 0..servers.len() {
                let i = (k + rep) % servers.len();
                let server = &servers[i];
                eprintln!(
                    "[pubsub rep {}/{reps}] {n} × {size} B {}",
                    rep + 1,
                    server.name
                );
                let before = cpu_ns(server.pid()).ok_or("cannot read server /proc/PID/stat")?;
                let f = pubsub::fanout(server.addr, n, size, secs)
                    .map_err(|e| format!("{}: {e}", server.name))?;
                let after = cpu_ns(server.pid()).ok_or("server exited during the run")?;
                let per = |ns: u64| ns as f64 / f.delivered.max(1) as f64;
                rows[c * 2 + i].samples.push(Sample {
                    rps: f.delivered as f64 / f.elapsed.as_secs_f64(),
                    p50_us: Some(f.p50_us),
                    p99_us: Some(f.p99_us),
                    user_ns: per(after.0 - before.0),
                    sys_ns: per(after.1 - before.1),
                    errors: f.errors,
                });
            }
        }
    }
    for s in servers {
        eprintln!("stopped {}", s.stop());
    }
    let errors = rows.iter().flat_map(|r| &r.samples).map(|s| s.errors).sum();
    Ok((rows, errors))
}
