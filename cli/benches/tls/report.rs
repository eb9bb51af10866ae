//! From samples to what a person reads: medians, ratios, the targets, markdown and JSON.
//!
//! Owns: [`Sample`] (one measured cell), [`Row`] (a server's samples for one
//! load), [`Report`] (the run), the median of each figure on its own, each
//! tcp-reactor figure's ratio to its reference in the same run, the issue's
//! targets and the `wrk` output parser. Must not: run anything.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::servers::{Kind, Window};
use crate::sys::duration_us;
use crate::syscalls::{PerMsg, COLUMNS};

/// A window is noisy when other processes used more than this share of a core.
pub const NOISY: f64 = 0.25;

/// One measured cell.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Operations per second (timed) or bytes per idle connection (idle).
    pub value: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Server CPU per operation.
    pub user_ns: Option<f64>,
    pub sys_ns: Option<f64>,
    /// Other processes during the window, share of one core.
    pub others_cpu: f64,
    /// The client side (this process and wrk), share of one core.
    pub load_cpu: f64,
    pub errors: u64,
    pub error: Option<String>,
    /// Idle only: connections held, RSS before and after.
    pub conns: usize,
    pub rss_before: u64,
    pub rss_after: u64,
}

impl Sample {
    pub fn timed(
        ops: u64,
        w: &Window,
        latency: Option<(f64, f64)>,
        errors: u64,
        error: Option<String>,
    ) -> Sample {
        let per = |ns: f64| (ops > 0).then(|| ns / ops as f64);
        Sample {
            value: ops as f64 / w.secs,
            p50_us: latency.map(|l| l.0),
            p99_us: latency.map(|l| l.1),
            user_ns: per(w.server_user_ns),
            sys_ns: per(w.server_sys_ns),
            others_cpu: w.others_cpu,
            load_cpu: w.load_cpu,
            errors,
            error: if errors > 0 {
                error.or(Some("see the log".into()))
            } else {
                None
            },
            ..Sample::default()
        }
    }

    pub fn idle(conns: usize, before: u64, after: u64) -> Sample {
        Sample {
            value: (after as f64 - before as f64) / conns.max(1) as f64,
            conns,
            rss_before: before,
            rss_after: after,
            ..Sample::default()
        }
    }

    /// The server's busy share of one core in the window.
    pub fn server_cpu(&self) -> Option<f64> {
        Some((self.user_ns? + self.sys_ns?) * self.value / 1e9)
    }

    fn json(&self) -> Value {
        json!({
            "value": self.value, "p50_us": self.p50_us, "p99_us": self.p99_us,
            "user_ns": self.user_ns, "sys_ns": self.sys_ns,
            "others_cpu": self.others_cpu, "load_cpu": self.load_cpu,
            "errors": self.errors, "error": self.error,
            "conns": self.conns, "rss_before": self.rss_before, "rss_after": self.rss_after,
        })
    }
}

/// One server's samples for one load.
pub struct Row {
    pub part: &'static str,
    pub label: String,
    pub kind: Kind,
    /// The server this row's ratios divide by (same load, same run).
    pub reference: Option<Kind>,
    pub idle: bool,
    pub samples: Vec<Sample>,
}

impl Row {
    pub fn new(
        part: &'static str,
        label: String,
        kind: Kind,
        reference: Option<Kind>,
        idle: bool,
    ) -> Row {
        Row {
            part,
            label,
            kind,
            reference,
            idle,
            samples: Vec::new(),
        }
    }

    /// The samples the medians are taken over: those whose window other
    /// processes left quiet (at most [`NOISY`] of a core), or all of them
    /// when none was quiet. (The idle rows do not depend on CPU time.)
    fn used(&self) -> Vec<&Sample> {
        let quiet: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| self.idle || s.others_cpu <= NOISY)
            .collect();
        if quiet.is_empty() {
            self.samples.iter().collect()
        } else {
            quiet
        }
    }

    fn med(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        median(self.used().into_iter().filter_map(f).collect())
    }

    fn value(&self) -> Option<f64> {
        self.med(|s| Some(s.value))
    }

    /// (max − min) / median of the value over the repetitions, in percent.
    fn spread(&self) -> Option<f64> {
        let v: Vec<f64> = self.used().iter().map(|s| s.value).collect();
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        let m = self.value()?;
        (v.len() > 1 && m != 0.0).then(|| 100.0 * (hi - lo) / m.abs())
    }

    fn unit(&self) -> &'static str {
        match self.part {
            "echo" => "msgs/s",
            "handshake" => "handshakes/s",
            "https" => "req/s",
            _ => "bytes/conn",
        }
    }
}

/// The median (mean of the middle two for an even count); `None` when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// `64 B`, `16 KiB`.
pub fn bytes(n: usize) -> String {
    if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// The whole run.
pub struct Report {
    pub quick: bool,
    pub reps: usize,
    pub layout: String,
    pub elapsed_s: f64,
    pub settings: Value,
    pub rows: Vec<Row>,
    /// Syscalls per echoed message: (load, server, slope).
    pub syscalls: Vec<(String, Kind, PerMsg)>,
    pub skipped: Vec<String>,
    pub failures: Vec<String>,
}

/// One of the targets, checked.
struct Target {
    what: String,
    ratio: Option<f64>,
    limit: f64,
    /// `true`: the ratio must be at least `limit`; `false`: at most (or below).
    at_least: bool,
    strict: bool,
}

impl Target {
    fn met(&self) -> Option<bool> {
        let r = self.ratio?;
        Some(match (self.at_least, self.strict) {
            (true, _) => r >= self.limit,
            (false, false) => r <= self.limit,
            (false, true) => r < self.limit,
        })
    }
}

impl Report {
    fn row(&self, label: &str, kind: Kind) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.label == label && r.kind == kind)
    }

    fn ratio(&self, row: &Row, f: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
        let reference = self.row(&row.label, row.reference?)?;
        let (a, b) = (f(row)?, f(reference)?);
        (b != 0.0).then(|| a / b)
    }

    fn ratio_to(
        &self,
        part: &str,
        kind: Kind,
        to: Kind,
        f: impl Fn(&Row) -> Option<f64>,
    ) -> Option<f64> {
        let row = self
            .rows
            .iter()
            .find(|r| r.part == part && r.kind == kind)?;
        let reference = self.row(&row.label, to)?;
        let (a, b) = (f(row)?, f(reference)?);
        (b != 0.0).then(|| a / b)
    }

    fn targets(&self) -> Vec<Target> {
        use Kind::*;
        let mut t = Vec::new();
        let value = |r: &Row| r.value();
        let user = |r: &Row| r.med(|s| s.user_ns);
        for row in self
            .rows
            .iter()
            .filter(|r| r.part == "echo" && r.kind == ReactorEcho)
        {
            t.push(Target {
                what: format!("{}: msgs/s ≥ 1.0× tokio-rustls", row.label),
                ratio: self.ratio(row, value),
                limit: 1.0,
                at_least: true,
                strict: false,
            });
            t.push(Target {
                what: format!("{}: user CPU/msg ≤ 0.8× tokio-rustls", row.label),
                ratio: self.ratio(row, user),
                limit: 0.8,
                at_least: false,
                strict: false,
            });
        }
        let mut add = |what: &str, part: &str, kind, to, limit, at_least, strict| {
            t.push(Target {
                what: what.to_string(),
                ratio: self.ratio_to(part, kind, to, value),
                limit,
                at_least,
                strict,
            })
        };
        add(
            "handshakes/s (http, one GET) ≥ 1.0× nginx",
            "handshake",
            ReactorHttp,
            Nginx,
            1.0,
            true,
            false,
        );
        add(
            "handshakes/s (echo, one echo) ≥ 1.0× nginx (GET)",
            "handshake",
            ReactorEcho,
            Nginx,
            1.0,
            true,
            false,
        );
        add(
            "HTTPS req/s (wrk) ≥ 1.0× nginx",
            "https",
            ReactorHttp,
            Nginx,
            1.0,
            true,
            false,
        );
        add(
            "RSS per idle TLS conn (echo) ≤ 0.5× tokio-rustls",
            "idle",
            ReactorEcho,
            TokioRustls,
            0.5,
            false,
            false,
        );
        add(
            "RSS per idle TLS conn (echo) below nginx",
            "idle",
            ReactorEcho,
            Nginx,
            1.0,
            false,
            true,
        );
        add(
            "RSS per idle TLS conn (http) below nginx",
            "idle",
            ReactorHttp,
            Nginx,
            1.0,
            false,
            true,
        );
        t
    }

    pub fn markdown(&self) -> String {
        let mut m = String::from("## TLS: tcp-reactor against tokio-rustls and nginx\n\n");
        let _ = writeln!(
            m,
            "{}; {} rep(s), interleaved, medians; TLS 1.3, {}, X25519, ECDSA P-256 \
             certificate, no resumption; `(n×)` = this row ÷ its reference in the same run; \
             server CPU from /proc/PID/stat (ns per operation, and busy share of its one \
             core); client CPU = this bench's client threads or wrk, share of the load core \
             (near 100%: the client, not the server, set the rate); medians over the \
             repetitions whose window other processes left quiet (≤ 25% of a core; all \
             of them when none was), `used` = how many; spread = (max − min) ÷ median \
             over those; others = CPU other processes used during the window (median, \
             % of one core); \
             run took {:.0} s.\n",
            self.layout,
            self.reps,
            crate::client::SUITE,
            self.elapsed_s
        );
        for msg in &self.skipped {
            let _ = writeln!(m, "**{msg}**\n");
        }
        let timed: Vec<&Row> = self.rows.iter().filter(|r| !r.idle).collect();
        if !timed.is_empty() {
            m.push_str(
                "| load | server | rate | used | spread | p50 µs | p99 µs | user ns/op | sys ns/op | server CPU | client CPU | others | errors |\n\
                 |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            for row in timed {
                let cell = |f: &dyn Fn(&Row) -> Option<f64>, digits: usize| -> String {
                    let v = f(row);
                    match (v, self.ratio(row, |r| f(r))) {
                        (Some(v), Some(x)) => format!("{v:.digits$} ({x:.2}×)"),
                        (Some(v), None) => format!("{v:.digits$}"),
                        (None, _) => "-".into(),
                    }
                };
                let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.0}%", 100.0 * v));
                let _ = writeln!(
                    m,
                    "| {} | {} | {} {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    row.label,
                    row.kind,
                    cell(&|r: &Row| r.value(), 0),
                    row.unit(),
                    row.used().len(),
                    row.samples.len(),
                    row.spread().map_or("-".into(), |s| format!("{s:.0}%")),
                    cell(&|r: &Row| r.med(|s| s.p50_us), 0),
                    cell(&|r: &Row| r.med(|s| s.p99_us), 0),
                    cell(&|r: &Row| r.med(|s| s.user_ns), 0),
                    cell(&|r: &Row| r.med(|s| s.sys_ns), 0),
                    pct(row.med(|s| s.server_cpu())),
                    pct(row.med(|s| Some(s.load_cpu))),
                    pct(row.med(|s| Some(s.others_cpu))),
                    row.samples.iter().map(|s| s.errors).sum::<u64>(),
                );
            }
            m.push('\n');
        }
        let idle: Vec<&Row> = self.rows.iter().filter(|r| r.idle).collect();
        if !idle.is_empty() {
            m.push_str(
                "| load | server | RSS before | RSS after | per idle connection | spread |\n\
                 |---|---|---:|---:|---:|---:|\n",
            );
            for row in idle {
                let mib = |f: fn(&Sample) -> u64| {
                    row.med(|s| Some(f(s) as f64))
                        .map_or("-".into(), |v| format!("{:.1} MiB", v / 1048576.0))
                };
                let per = match (row.value(), self.ratio(row, |r| r.value())) {
                    (Some(v), Some(x)) => format!("{:.1} KiB ({x:.2}×)", v / 1024.0),
                    (Some(v), None) => format!("{:.1} KiB", v / 1024.0),
                    _ => "-".into(),
                };
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {per} | {} |",
                    row.label,
                    row.kind,
                    mib(|s| s.rss_before),
                    mib(|s| s.rss_after),
                    row.spread().map_or("-".into(), |s| format!("{s:.0}%")),
                );
            }
            m.push('\n');
        }
        if !self.syscalls.is_empty() {
            self.syscalls_markdown(&mut m);
        }
        let targets = self.targets();
        if targets.iter().any(|t| t.ratio.is_some()) {
            m.push_str("| target (issue 14) | measured | met |\n|---|---:|---|\n");
            for t in targets.iter().filter(|t| t.ratio.is_some()) {
                let _ = writeln!(
                    m,
                    "| {} | {:.2}× | {} |",
                    t.what,
                    t.ratio.unwrap_or(f64::NAN),
                    match t.met() {
                        Some(true) => "yes",
                        _ => "**no**",
                    }
                );
            }
            m.push('\n');
        }
        if self.quick {
            m.push_str("(--quick: smoke test, figures not meaningful)\n");
        }
        for f in &self.failures {
            let _ = writeln!(m, "FAIL: {f}");
        }
        m
    }

    /// Syscalls per message, each tcp-reactor figure with its ratio to
    /// tokio-rustls at the same size.
    fn syscalls_markdown(&self, m: &mut String) {
        let _ = writeln!(
            m,
            "Syscalls per echoed message ({} on the server, the slope between \
             two runs of {} and {} messages per connection; per connection = what the \
             smaller run cost beyond its messages, ÷ connections: accept, handshake, close; \
             EAGAIN = reads and writes that would block; epoll_wait depends on how many \
             events each wait finds, which a faster server and strace both change):\n",
            self.settings["syscall_counter"].as_str().unwrap_or("?"),
            self.settings["syscall_counts_per_conn"][0],
            self.settings["syscall_counts_per_conn"][1],
        );
        for (what, per_conn) in [("per message", false), ("per connection", true)] {
            let _ = write!(m, "| {what} | server |");
            for c in COLUMNS {
                let _ = write!(m, " {c} |");
            }
            m.push_str("\n|---|---|");
            for _ in COLUMNS {
                m.push_str("---:|");
            }
            m.push('\n');
            let pick = |p: &PerMsg, c: &str| {
                let col = if per_conn { &p.per_conn } else { &p.per_msg };
                col.get(c).copied()
            };
            for (label, kind, per) in &self.syscalls {
                let reference = self.syscalls.iter().find(|(l, k, _)| {
                    l == label && *k == Kind::TokioRustls && *kind != Kind::TokioRustls
                });
                let _ = write!(m, "| {label} | {kind} |");
                for c in COLUMNS {
                    let v = pick(per, c).unwrap_or(0.0);
                    match reference.and_then(|(_, _, r)| pick(r, c)) {
                        Some(r) if r > 0.05 => {
                            let _ = write!(m, " {v:.2} ({:.2}×) |", v / r);
                        }
                        _ => {
                            let _ = write!(m, " {v:.2} |");
                        }
                    }
                }
                m.push('\n');
            }
            m.push('\n');
        }
    }

    pub fn json(&self) -> Value {
        let syscalls: Vec<Value> = self
            .syscalls
            .iter()
            .map(|(label, kind, per)| {
                json!({
                    "load": label, "server": kind.name(),
                    "per_msg": per.per_msg, "per_conn": per.per_conn,
                    "msgs": [per.msgs.0, per.msgs.1],
                })
            })
            .collect();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let med = |f: fn(&Sample) -> Option<f64>| r.med(f);
                json!({
                    "part": r.part, "load": r.label, "server": r.kind.name(),
                    "unit": r.unit(),
                    "reference": r.reference.map(Kind::name),
                    "median": {
                        "value": r.value(), "p50_us": med(|s| s.p50_us), "p99_us": med(|s| s.p99_us),
                        "user_ns": med(|s| s.user_ns), "sys_ns": med(|s| s.sys_ns),
                        "others_cpu": med(|s| Some(s.others_cpu)), "load_cpu": med(|s| Some(s.load_cpu)),
                        "server_cpu": med(Sample::server_cpu),
                    },
                    "ratio": {
                        "value": self.ratio(r, |r| r.value()),
                        "user_ns": self.ratio(r, |r| r.med(|s| s.user_ns)),
                        "sys_ns": self.ratio(r, |r| r.med(|s| s.sys_ns)),
                    },
                    "spread_pct": r.spread(),
                    "samples_used": r.used().len(),
                    "samples": r.samples.iter().map(Sample::json).collect::<Vec<_>>(),
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .iter()
            .map(
                |t| json!({ "target": t.what, "ratio": t.ratio, "limit": t.limit, "met": t.met() }),
            )
            .collect();
        json!({
            "bench": "tls",
            "settings": self.settings,
            "elapsed_s": self.elapsed_s,
            "rows": rows,
            "syscalls": syscalls,
            "targets": targets,
            "skipped": self.skipped,
            "failures": self.failures,
        })
    }

    /// Print the markdown; write `tls.md` and `tls.json` (a `--quick` run only
    /// where `--out` asks); `Ok(false)` when anything failed.
    pub fn write(&self, out: Option<&Path>) -> Result<bool, String> {
        let md = self.markdown();
        print!("{md}");
        let dir = match (out, self.quick) {
            (Some(out), _) => Some(out.to_path_buf()),
            (None, true) => None,
            (None, false) => Some(default_dir()),
        };
        if let Some(dir) = dir {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let json = serde_json::to_string_pretty(&self.json()).map_err(|e| e.to_string())?;
            for (name, text) in [("tls.md", md), ("tls.json", json)] {
                let path = dir.join(name);
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        if !self.failures.is_empty() {
            eprintln!("FAIL: {} failure(s)", self.failures.len());
        }
        Ok(self.failures.is_empty())
    }
}

/// Where a run's report goes without `--out`: target/bench-report.
pub fn default_dir() -> std::path::PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("bench-report")
}

/// What `wrk --latency` printed.
pub struct Wrk {
    pub rps: f64,
    pub requests: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

pub fn parse_wrk(out: &str) -> Result<Wrk, String> {
    let mut w = Wrk {
        rps: 0.0,
        requests: 0,
        p50_us: 0.0,
        p99_us: 0.0,
        errors: 0,
    };
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => w.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => w.p50_us = duration_us(v).unwrap_or(0.0),
            ["99%", v] => w.p99_us = duration_us(v).unwrap_or(0.0),
            [n, "requests", "in", ..] => w.requests = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                w.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse().unwrap_or(1),
            _ => {}
        }
    }
    if w.rps <= 0.0 || w.requests == 0 {
        return Err(format!("no Requests/sec in wrk's output:\n{out}"));
    }
    Ok(w)
}
