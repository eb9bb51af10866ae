//! `cargo bench --bench tls`: TLS termination in tcp-reactor against tokio-rustls and nginx.
//!
//! One binary, two roles. Run plainly it is the **harness**: it makes an
//! ECDSA P-256 certificate (rcgen) in a temp dir, starts every server as its
//! own process pinned to the server CPU ([`servers`]), drives them from this
//! process pinned to the load CPU ([`client`], and `wrk` for HTTPS), and
//! reports ([`report`]). Run with `--serve tokio-rustls --cert … --key …
//! --listen ADDR` it is the **reference server** ([`tokio_tls`]).
//!
//! Parts (`--only echo,handshake,https,idle`), each measured in the same run,
//! repetitions interleaved (server order rotated each repetition), medians:
//! * echo: 50 connections × 64 B and × 16 KiB, closed loop, tcp-reactor vs
//!   tokio-rustls current_thread: msgs/s, server user/sys CPU per message;
//! * handshake: full TLS 1.3 handshakes per second (new connection each time,
//!   no resumption), then one small echo (or one HTTPS GET) and close_notify:
//!   tcp-reactor echo vs tokio-rustls, tcp-reactor http vs nginx;
//! * https: `wrk -t1 -c50 --latency https://…/`, tcp-reactor http vs nginx;
//! * idle: RSS per idle TLS connection (fresh server, N connections after a
//!   handshake and one exchange);
//! * syscalls: syscalls per echoed message at each echo size, tcp-reactor vs
//!   tokio-rustls, by kind (`strace -c -f`, the slope between two fixed
//!   message counts: [`syscalls`]). Deterministic where the rates are noisy.
//!
//! `--quick` (and `cargo test --benches`, which passes no `--bench`): tiny
//! runs that only check every part works with 0 errors. nginx, wrk or strace
//! missing: a loud `SKIP` and those rows are left out. See docs/BENCHMARKS.md.

mod client;
mod report;
mod servers;
mod syscalls;
mod tokio_tls;

// The echo bench's CPU helpers: CpuSet, layout.
#[allow(dead_code)]
#[path = "../echo/pin.rs"]
mod pin;
// The benches' shared helpers (tools, ports, /proc, wrk's durations).
#[allow(dead_code)]
#[path = "../common/sys.rs"]
mod sys;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Parser;

use report::{Report, Row, Sample, NOISY};
use servers::{Certs, Kind, Server, Snapshot, Window};
use sys::find_tool;

/// TLS benchmark: tcp-reactor against tokio-rustls and nginx.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
pub struct Cli {
    /// Smoke test: tiny runs, checks only that every part runs with 0 errors.
    #[arg(long)]
    quick: bool,
    /// Repetitions of every cell (interleaved); medians are reported.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Measured seconds per echo / handshake cell.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Warm-up seconds before each window (load runs, nothing counted).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    wrk_secs: u32,
    /// Message sizes of the echo part, bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,16384")]
    echo_sizes: Vec<usize>,
    /// Client threads of the handshake loop.
    #[arg(long, default_value_t = 4)]
    hs_threads: usize,
    /// Idle TLS connections opened for the RSS part.
    #[arg(long, default_value_t = 2000)]
    idle_conns: usize,
    /// How the syscalls part counts: perf (tracepoints; the server runs at
    /// full speed) or strace (stops it at every syscall). Default: perf
    /// where it works, else strace.
    #[arg(long, value_enum)]
    syscall_counter: Option<syscalls::Method>,
    /// Messages per connection of the two counted runs of the syscalls part.
    #[arg(long, value_delimiter = ',', default_value = "20,220")]
    syscall_counts: Vec<u64>,
    /// Parts to run (comma-separated): echo, handshake, https, idle, syscalls. Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run every server under this command (split at spaces), e.g.
    /// `--wrap 'valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p'` to see
    /// where a server's time goes (the figures are then those of the wrapped run).
    #[arg(long)]
    wrap: Option<String>,
    /// Seconds the run may spend, in total, waiting before cells while other
    /// processes keep the machine busy (more than a quarter of a core).
    #[arg(long, default_value_t = 180.0)]
    max_wait: f64,
    /// Report directory (default: target/bench-report).
    #[arg(long)]
    out: Option<PathBuf>,

    /// Server mode (internal): `tokio-rustls`.
    #[arg(long, hide = true)]
    serve: Option<String>,
    #[arg(long, default_value = "127.0.0.1:0", hide = true)]
    listen: SocketAddr,
    #[arg(long, hide = true)]
    cert: Option<PathBuf>,
    #[arg(long, hide = true)]
    key: Option<PathBuf>,
    /// Passed by `cargo bench`; without it the run is `--quick`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A cell is re-run (at most this often) while other processes used more
/// than [`NOISY`] of a core during its window; the quietest attempt is kept.
const RETRIES: usize = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(kind) = &cli.serve {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
        let (Some(cert), Some(key), "tokio-rustls") = (&cli.cert, &cli.key, kind.as_str()) else {
            eprintln!("--serve tokio-rustls --cert PEM --key PEM is the only server mode");
            return ExitCode::from(2);
        };
        return match tokio_tls::serve(cli.listen, cert, key) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("tokio-rustls: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match harness(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The settings of one run.
struct Settings {
    quick: bool,
    reps: usize,
    duration: f64,
    warmup: f64,
    wrk_secs: u32,
    hs_threads: usize,
    idle_conns: usize,
    conns: usize,
    /// Messages per connection of the syscalls part's two runs.
    syscall_counts: (u64, u64),
    wrap: Vec<String>,
    /// Seconds still allowed for waiting until the machine is quiet.
    wait_budget: f64,
}

/// What a cell runs.
#[derive(Clone, Copy, PartialEq)]
enum Load {
    Echo { size: usize },
    Handshake,
    Https,
    Idle,
}

fn harness(cli: Cli) -> Result<bool, String> {
    let quick = cli.quick || !cli.bench;
    let s = Settings {
        quick,
        reps: if quick { 1 } else { cli.reps.max(1) },
        duration: if quick { 0.3 } else { cli.duration },
        warmup: if quick { 0.1 } else { cli.warmup },
        wrk_secs: if quick { 1 } else { cli.wrk_secs.max(1) },
        hs_threads: if quick { 2 } else { cli.hs_threads.max(1) },
        idle_conns: if quick { 50 } else { cli.idle_conns.max(1) },
        conns: 50,
        syscall_counts: match (quick, cli.syscall_counts.as_slice()) {
            (true, _) => (2, 6),
            (false, [a, b]) if a < b => (*a, *b),
            _ => return Err("--syscall-counts takes two counts, the first smaller".into()),
        },
        wrap: cli
            .wrap
            .as_deref()
            .map(|w| w.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        wait_budget: if quick { 0.0 } else { cli.max_wait },
    };
    let mut s = s;
    raise_nofile_limit();
    let layout = pin::layout();
    if let Some(cpus) = layout.load {
        // This thread, the client threads it spawns and wrk.
        if let Err(e) = cpus.apply() {
            eprintln!("warning: cannot pin the harness to the load CPU: {e}");
        }
    }
    let wanted = |p: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == p);
    let mut skipped = Vec::new();
    let nginx = find_tool("nginx").is_some();
    let wrk = find_tool("wrk").is_some();
    let counter = match cli.syscall_counter {
        Some(m) => Some(m).filter(|&m| syscalls::available(m).is_ok()),
        None => [syscalls::Method::Perf, syscalls::Method::Strace]
            .into_iter()
            .find(|&m| syscalls::available(m).is_ok()),
    }
    .filter(|_| wanted("syscalls"));
    for (tool, present, what) in [
        ("nginx", nginx, "the nginx rows (handshake, https, idle)"),
        ("wrk", wrk, "the https part"),
        (
            "perf or strace",
            counter.is_some() || !wanted("syscalls"),
            "the syscalls part",
        ),
    ] {
        if !present {
            let msg =
                format!("SKIP {what}: {tool} not installed; run scripts/install-bench-tools.sh");
            eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
            skipped.push(msg);
        }
    }
    let with_nginx = |kinds: &[Kind]| -> Vec<Kind> {
        kinds
            .iter()
            .copied()
            .filter(|&k| nginx || k != Kind::Nginx)
            .collect()
    };
    use Kind::*;
    // (part, load label, load, servers: each tcp-reactor row is followed by its reference)
    let mut groups: Vec<(&str, String, Load, Vec<Kind>)> = Vec::new();
    if wanted("echo") {
        for &size in &cli.echo_sizes {
            let label = format!("echo {} × {}", s.conns, report::bytes(size));
            groups.push((
                "echo",
                label,
                Load::Echo { size },
                vec![ReactorEcho, TokioRustls],
            ));
        }
    }
    if wanted("handshake") {
        let label = format!("handshakes, {} client threads", s.hs_threads);
        let kinds = with_nginx(&[ReactorEcho, TokioRustls, ReactorHttp, Nginx]);
        groups.push(("handshake", label, Load::Handshake, kinds));
    }
    if wanted("https") && wrk {
        let label = format!("wrk -t1 -c50 -d{}s https", s.wrk_secs);
        groups.push((
            "https",
            label,
            Load::Https,
            with_nginx(&[ReactorHttp, Nginx]),
        ));
    }
    if wanted("idle") {
        let label = format!("{} idle TLS connections", s.idle_conns);
        let kinds = with_nginx(&[ReactorEcho, TokioRustls, ReactorHttp, Nginx]);
        groups.push(("idle", label, Load::Idle, kinds));
    }

    let certs = Certs::new()?;
    let config = client::config(&certs.cert_der);
    let mut rows: Vec<Row> = Vec::new();
    for (part, label, load, kinds) in &groups {
        for (i, &kind) in kinds.iter().enumerate() {
            // A tcp-reactor row's reference is the next server in the group.
            let reference = match (kind, kinds.get(i + 1)) {
                (ReactorEcho | ReactorHttp, Some(&r)) if r != ReactorHttp => Some(r),
                _ => None,
            };
            rows.push(Row::new(
                part,
                label.clone(),
                kind,
                reference,
                *load == Load::Idle,
            ));
        }
    }

    // Long-lived servers for the timed parts; the idle part starts fresh ones.
    let mut live: BTreeMap<Kind, Server> = BTreeMap::new();
    for (_, _, load, kinds) in &groups {
        if *load == Load::Idle {
            continue;
        }
        for &k in kinds {
            if let std::collections::btree_map::Entry::Vacant(e) = live.entry(k) {
                e.insert(Server::start(k, &certs, layout.server, &s.wrap)?);
            }
        }
    }
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let total: usize = groups.iter().map(|g| g.3.len()).sum::<usize>() * s.reps;
    let mut n = 0;
    for rep in 0..s.reps {
        for (_, label, load, kinds) in &groups {
            let mut order: Vec<usize> = (0..kinds.len()).collect();
            order.rotate_left(rep % kinds.len().max(1));
            for k in order {
                let kind = kinds[k];
                n += 1;
                eprintln!(
                    "[{n:>3}/{total}] rep {}/{} {label:<32} {kind}",
                    rep + 1,
                    s.reps
                );
                wait_for_quiet(&mut s.wait_budget);
                let result = match load {
                    Load::Idle => idle(kind, &certs, &config, &layout, &s),
                    _ => {
                        let server = live.get_mut(&kind).ok_or("server not started")?;
                        if !server.is_running() {
                            return Err(format!("{kind} died during the run{}", server.log_tail()));
                        }
                        timed(server, *load, &config, &s)
                    }
                };
                let row = rows
                    .iter_mut()
                    .find(|r| r.label == *label && r.kind == kind)
                    .ok_or("no row")?;
                match result {
                    Ok(sample) => {
                        if let Some(e) = &sample.error {
                            failures
                                .push(format!("{label} {kind}: {} error(s): {e}", sample.errors));
                        }
                        row.samples.push(sample);
                    }
                    Err(e) => failures.push(format!("{label} {kind}: {e}")),
                }
            }
        }
    }
    let mut counted = Vec::new();
    if let Some(method) = counter {
        // Counted apart from the timed cells: strace slows a server down.
        // The counters' own tables, for a second look (kept unless --quick).
        let dir = match &cli.out {
            Some(out) => out.join("tls-syscalls"),
            None => report::default_dir().join("tls-syscalls"),
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for &size in &cli.echo_sizes {
            let label = format!("echo {} × {}", s.conns, report::bytes(size));
            for kind in [ReactorEcho, TokioRustls] {
                eprintln!("[syscalls] {label:<32} {kind}");
                let server = match live.entry(kind) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(Server::start(kind, &certs, layout.server, &s.wrap)?)
                    }
                };
                let out = dir.join(format!("{}-{size}", kind.name().replace(' ', "-")));
                match syscalls::measure(
                    method,
                    server.pid(),
                    server.addr,
                    &config,
                    s.conns,
                    size,
                    s.syscall_counts,
                    &out,
                ) {
                    Ok(per) => counted.push((label.clone(), kind, per)),
                    Err(e) => failures.push(format!("syscalls {label} {kind}: {e}")),
                }
            }
        }
        if s.quick {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            eprintln!("wrote the counters' tables to {}", dir.display());
        }
    }
    for (kind, server) in live {
        if let Err(e) = server.stop() {
            failures.push(format!("stop {kind}: {e}"));
        }
    }
    let rep = Report {
        quick: s.quick,
        reps: s.reps,
        layout: layout.describe.clone(),
        elapsed_s: started.elapsed().as_secs_f64(),
        settings: serde_json::json!({
            "quick": s.quick,
            "reps": s.reps,
            "duration_s": s.duration,
            "warmup_s": s.warmup,
            "wrk_secs": s.wrk_secs,
            "hs_threads": s.hs_threads,
            "idle_conns": s.idle_conns,
            "echo_conns": s.conns,
            "syscall_counts_per_conn": [s.syscall_counts.0, s.syscall_counts.1],
            "syscall_counter": counter.map(syscalls::Method::name),
            "cipher_suite": client::SUITE,
            "kx_group": "X25519",
            "certificate": "ECDSA P-256 (rcgen), self-signed, pinned by the client",
            "pinning": layout.describe,
            "retries_when_noisy": RETRIES,
            "noisy_share": NOISY,
        }),
        rows,
        syscalls: counted,
        skipped,
        failures,
    };
    rep.write(cli.out.as_deref())
}

/// One timed cell, re-run while the machine was noisy (keeping the quietest).
fn timed(
    server: &Server,
    load: Load,
    config: &std::sync::Arc<rustls::ClientConfig>,
    s: &Settings,
) -> Result<Sample, String> {
    let mut best = timed_once(server, load, config, s)?;
    for _ in 0..RETRIES {
        if s.quick || best.others_cpu <= NOISY || best.errors > 0 {
            break;
        }
        eprintln!(
            "          other processes used {:.0}% of a core; re-running",
            100.0 * best.others_cpu
        );
        let again = timed_once(server, load, config, s)?;
        if again.errors > 0 || again.others_cpu < best.others_cpu {
            best = again;
        }
    }
    Ok(best)
}

fn timed_once(
    server: &Server,
    load: Load,
    config: &std::sync::Arc<rustls::ClientConfig>,
    s: &Settings,
) -> Result<Sample, String> {
    let (addr, pid) = (server.addr, server.pid());
    match load {
        Load::Echo { size } => {
            let r = client::echo(addr, config, s.conns, size, s.warmup, s.duration, pid)?;
            if !s.wrap.is_empty() {
                // For a profile: its counts cover the process's life.
                eprintln!(
                    "          {} (pid {pid}): {} messages echoed in all",
                    server.kind, r.msgs_total
                );
            }
            Ok(Sample::timed(
                r.msgs,
                &r.window,
                Some((r.p50_us, r.p99_us)),
                r.errors,
                r.first_error,
            ))
        }
        Load::Handshake => {
            let http = server.kind.http();
            let r =
                client::handshakes(addr, config, http, s.hs_threads, s.warmup, s.duration, pid)?;
            Ok(Sample::timed(
                r.done,
                &r.window,
                None,
                r.errors,
                r.first_error,
            ))
        }
        Load::Https => wrk(server, s.wrk_secs),
        Load::Idle => Err("idle is not a timed load".into()),
    }
}

/// `wrk -t1 -c50 --latency https://ADDR/`, pinned to the load CPU like this process.
fn wrk(server: &Server, secs: u32) -> Result<Sample, String> {
    let tool = find_tool("wrk").ok_or("wrk not installed")?;
    let url = format!("https://{}/", server.addr);
    let a = Snapshot::take(server.pid()).ok_or("server gone")?;
    let out = Command::new(tool)
        .args(["-t1", "-c50", &format!("-d{secs}s"), "--latency", &url])
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let b = Snapshot::take(server.pid()).ok_or("server gone during wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let w = report::parse_wrk(&stdout)?;
    let mut window = Window::between(&a, &b);
    // wrk's own clock, not ours (start-up and the TLS handshakes are outside it).
    window.secs = w.requests as f64 / w.rps.max(1e-9);
    let mut sample = Sample::timed(
        w.requests,
        &window,
        Some((w.p50_us, w.p99_us)),
        w.errors,
        None,
    );
    if w.errors > 0 {
        sample.error = Some(format!(
            "wrk counted {} socket error(s) or non-2xx",
            w.errors
        ));
    }
    Ok(sample)
}

/// A fresh server; RSS before and after `idle_conns` TLS connections that each
/// handshook and exchanged one message; then close them and stop the server.
fn idle(
    kind: Kind,
    certs: &Certs,
    config: &std::sync::Arc<rustls::ClientConfig>,
    layout: &pin::Layout,
    s: &Settings,
) -> Result<Sample, String> {
    let settle = std::time::Duration::from_millis(300);
    let server = Server::start(kind, certs, layout.server, &s.wrap)?;
    // One connection first, so one-time start-up costs (rustls' config,
    // buffers of the first accept) are in the baseline, not in the slope.
    let warm = client::open_idle(server.addr, config, kind.http(), 1)?;
    drop(warm);
    std::thread::sleep(settle);
    let before = servers::rss_bytes(server.pid()).ok_or("no RSS")?;
    let held = client::open_idle(server.addr, config, kind.http(), s.idle_conns);
    std::thread::sleep(settle);
    let after = servers::rss_bytes(server.pid()).ok_or("no RSS")?;
    let held = held?;
    let conns = held.len();
    drop(held);
    std::thread::sleep(settle);
    server.stop()?;
    Ok(Sample::idle(conns, before, after))
}

/// Wait (within `budget` seconds, spent across the run) while other processes
/// keep more than [`NOISY`] of a core busy. The servers are idle between
/// cells, so what `/proc/stat` shows busy now is someone else.
fn wait_for_quiet(budget: &mut f64) {
    let sample = std::time::Duration::from_millis(300);
    let mut told = false;
    while *budget > 0.0 {
        let a = servers::machine_busy_ns();
        std::thread::sleep(sample);
        let others = (servers::machine_busy_ns() - a) as f64 / 1e9 / sample.as_secs_f64();
        *budget -= sample.as_secs_f64();
        if others <= NOISY {
            return;
        }
        if !told {
            eprintln!(
                "          other processes use {:.0}% of a core; waiting for quiet ({:.0} s of --max-wait left)",
                100.0 * others,
                budget.max(0.0)
            );
            told = true;
        }
    }
}

fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
