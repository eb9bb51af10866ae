//! The servers under test, as processes, and what `/proc` says about them.
//!
//! Owns: the certificate pair (rcgen, ECDSA P-256, made at bench time in a
//! temp dir), starting tcp-reactor (`--protocol echo|http --tls-cert …
//! --tls-key …`), the tokio-rustls reference (this bench binary re-executed
//! with `--serve tokio-rustls`) and nginx (one worker, `ssl`, `return 200`),
//! each pinned to the server CPU and killed if the bench dies
//! (`PR_SET_PDEATHSIG`); reading their CPU time and RSS; stopping them with
//! SIGTERM and checking the exit status. Must not: generate load.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pin::CpuSet;
use crate::sys::{cpu_ns, find_tool, free_port, listening_addr, stat_fields, ticks_to_ns};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TAIL: usize = 20;

/// Which server, and which of its services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `tcp-reactor --protocol echo` over TLS.
    ReactorEcho,
    /// `tcp-reactor --protocol http` over TLS.
    ReactorHttp,
    /// tokio current_thread + tokio-rustls echo ([`crate::tokio_tls`]).
    TokioRustls,
    /// nginx, one worker, `listen … ssl`, `return 200 "Hello, World!"`.
    Nginx,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::ReactorEcho => "tcp-reactor echo",
            Kind::ReactorHttp => "tcp-reactor http",
            Kind::TokioRustls => "tokio-rustls",
            Kind::Nginx => "nginx",
        }
    }

    /// Whether it speaks HTTP (the clients send a GET) rather than echo.
    pub fn http(self) -> bool {
        matches!(self, Kind::ReactorHttp | Kind::Nginx)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The certificate pair every server uses, in a temp dir removed on drop.
pub struct Certs {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate (DER): clients pin exactly this one.
    pub cert_der: Vec<u8>,
}

impl Certs {
    /// A fresh self-signed ECDSA P-256 pair for `localhost` and 127.0.0.1.
    pub fn new() -> Result<Certs, String> {
        let dir =
            std::env::temp_dir().join(format!("tcp-reactor-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("logs")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| format!("rcgen: {e}"))?;
        let certs = Certs {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            cert_der: made.cert.der().to_vec(),
            dir,
        };
        std::fs::write(&certs.cert, made.cert.pem()).map_err(|e| e.to_string())?;
        std::fs::write(&certs.key, made.key_pair.serialize_pem()).map_err(|e| e.to_string())?;
        Ok(certs)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running server. Dropping it kills it if it still runs.
pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Start `kind` on 127.0.0.1 (a free port), pinned to `cpu`, and wait until it
    /// listens. `wrap` (empty: none) runs the server's command line, e.g.
    /// `valgrind --tool=callgrind`; it must keep the server in its own pid.
    pub fn start(
        kind: Kind,
        certs: &Certs,
        cpu: Option<CpuSet>,
        wrap: &[String],
    ) -> Result<Server, String> {
        let mut args: Vec<OsString> = Vec::new();
        let mut arg = |a: &dyn AsRef<OsStr>| args.push(a.as_ref().to_os_string());
        let (program, port, log_env) = match kind {
            Kind::ReactorEcho | Kind::ReactorHttp => {
                let proto = if kind == Kind::ReactorHttp {
                    "http"
                } else {
                    "echo"
                };
                for a in ["--protocol", proto, "--listen", "127.0.0.1:0", "--tls-cert"] {
                    arg(&a);
                }
                arg(&certs.cert);
                arg(&"--tls-key");
                arg(&certs.key);
                let exe = PathBuf::from(env!("CARGO_BIN_EXE_tcp-reactor"));
                (exe, None, "warn,tcp_reactor=info")
            }
            Kind::TokioRustls => {
                let exe = std::env::current_exe()
                    .map_err(|e| format!("cannot find the bench binary to re-execute: {e}"))?;
                for a in [
                    "--serve",
                    "tokio-rustls",
                    "--listen",
                    "127.0.0.1:0",
                    "--cert",
                ] {
                    arg(&a);
                }
                arg(&certs.cert);
                arg(&"--key");
                arg(&certs.key);
                (exe, None, "info")
            }
            Kind::Nginx => {
                let nginx = find_tool("nginx").ok_or("nginx not installed")?;
                let port = free_port()?;
                let conf = nginx_conf(certs, port)?;
                arg(&"-p");
                arg(&certs.dir);
                arg(&"-c");
                arg(&conf);
                arg(&"-e");
                arg(&"stderr");
                (nginx, Some(port), "info")
            }
        };
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(&program);
                cmd
            }
            None => Command::new(&program),
        };
        cmd.args(&args).env("RUST_LOG", log_env);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls (sched_setaffinity, prctl) on prepared data.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(set) = cpu {
                    let _ = set.apply();
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{kind}: cannot start {:?}: {e}", cmd.get_program()))?;
        let stderr = child.stderr.take().ok_or("stderr is piped")?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let log_w = Arc::clone(&log);
        std::thread::spawn(move || read_log(stderr, log_w, tx));
        let mut server = Server {
            kind,
            addr: SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0))),
            child,
            log,
        };
        let started = Instant::now();
        match port {
            None => match rx.recv_timeout(START_TIMEOUT) {
                Ok(addr) => server.addr = addr,
                Err(_) => {
                    return Err(format!(
                        "{kind}: no `listening on ADDR` line within {} s{}",
                        START_TIMEOUT.as_secs(),
                        server.log_tail()
                    ))
                }
            },
            Some(_) => {
                while TcpStream::connect(server.addr).is_err() {
                    if let Ok(Some(status)) = server.child.try_wait() {
                        return Err(format!(
                            "{kind}: exited ({status}) before listening{}",
                            server.log_tail()
                        ));
                    }
                    if started.elapsed() > START_TIMEOUT {
                        return Err(format!("{kind}: not listening on {}", server.addr));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM and wait; a non-zero exit (or none) is an error.
    pub fn stop(mut self) -> Result<(), String> {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "{}: exited with {status} after SIGTERM{}",
                        self.kind,
                        self.log_tail()
                    ))
                }
                Ok(None) if started.elapsed() < STOP_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    return Err(format!(
                        "{}: still running {} s after SIGTERM",
                        self.kind,
                        STOP_TIMEOUT.as_secs()
                    ))
                }
                Err(e) => return Err(format!("{}: wait: {e}", self.kind)),
            }
        }
    }

    /// The last lines the server logged, to append to an error.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = String::new();
        for line in log.iter() {
            s.push_str("\n    | ");
            s.push_str(line);
        }
        s
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

fn read_log(
    stderr: std::process::ChildStderr,
    log: Arc<Mutex<VecDeque<String>>>,
    addr_tx: mpsc::Sender<SocketAddr>,
) {
    let mut found = false;
    for line in BufReader::new(stderr).split(b'\n') {
        let Ok(raw) = line else { return };
        let line = String::from_utf8_lossy(&raw).into_owned();
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

/// nginx: one process (`master_process off`), TLS on, `return 200`, room
/// for many idle connections, no per-connection request cap (wrk's 50
/// connections stay open for the whole run, as with tcp-reactor).
fn nginx_conf(certs: &Certs, port: u16) -> Result<PathBuf, String> {
    let d = certs.dir.display();
    let (cert, key) = (certs.cert.display(), certs.key.display());
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\nerror_log stderr crit;\n\
         pid {d}/nginx.pid;\nworker_rlimit_nofile 16384;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 100000000;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n\
         ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
         ssl_protocols TLSv1.2 TLSv1.3;\n\
         location / {{ return 200 \"Hello, World!\"; }}\n  }}\n}}\n"
    );
    let path = certs.dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| format!("write nginx.conf: {e}"))?;
    Ok(path)
}

// ---------------------------------------------------------------- /proc

/// CPU of this process: its threads and its waited-for children (wrk), in ns.
pub fn self_cpu_ns() -> u64 {
    stat_fields("self")
        .map(|f| ticks_to_ns(f[10..14].iter().sum()))
        .unwrap_or(0)
}

/// Busy CPU of the whole machine (all but idle and iowait), in ns.
pub fn machine_busy_ns() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4 && i < 8)
        .map(|(_, x)| x)
        .sum();
    ticks_to_ns(busy)
}

/// VmRSS of `pid` and its children (nginx's workers, if it has any), bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let mut total = vm_rss(&pid.to_string())?;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            // f[0] is field 4, the parent pid.
            if stat_fields(name).and_then(|f| f.first().copied()) == Some(u64::from(pid)) {
                total += vm_rss(name).unwrap_or(0);
            }
        }
    }
    Some(total)
}

fn vm_rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU figures at one instant, for a measured window.
#[derive(Clone, Copy)]
pub struct Snapshot {
    at: Instant,
    server: (u64, u64),
    load: u64,
    machine: u64,
}

impl Snapshot {
    pub fn take(server_pid: u32) -> Option<Snapshot> {
        Some(Snapshot {
            at: Instant::now(),
            server: cpu_ns(server_pid)?,
            load: self_cpu_ns(),
            machine: machine_busy_ns(),
        })
    }
}

/// What happened between two snapshots.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub secs: f64,
    pub server_user_ns: f64,
    pub server_sys_ns: f64,
    /// The bench process (client threads, wrk) as a share of one core.
    pub load_cpu: f64,
    /// Everything else on the machine, as a share of one core.
    pub others_cpu: f64,
}

impl Window {
    pub fn between(a: &Snapshot, b: &Snapshot) -> Window {
        let secs = (b.at - a.at).as_secs_f64().max(1e-9);
        let user = b.server.0.saturating_sub(a.server.0) as f64;
        let sys = b.server.1.saturating_sub(a.server.1) as f64;
        let load = b.load.saturating_sub(a.load) as f64;
        let machine = b.machine.saturating_sub(a.machine) as f64;
        Window {
            secs,
            server_user_ns: user,
            server_sys_ns: sys,
            load_cpu: load / 1e9 / secs,
            others_cpu: ((machine - user - sys - load) / 1e9 / secs).max(0.0),
        }
    }
}
