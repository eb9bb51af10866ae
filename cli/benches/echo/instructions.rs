//! User-space instructions per message, counted by callgrind: the deterministic column.
//!
//! Owns: running a server under `valgrind --tool=callgrind` against a fixed amount of
//! work (`tcp-reactor-load --messages N`: every connection completes exactly N echoes,
//! then closes), the slope between a short and a long run, the per-function breakdown
//! (`callgrind_annotate` of both runs, subtracted), the table, and the regression guard
//! against `benches/echo/instructions-baseline.json`.
//!
//! Method. A server is started fresh under callgrind for each run, and stopped with
//! SIGTERM (it drains and exits 0, so callgrind writes its totals). Instructions per
//! message = (Ir_long − Ir_short) ÷ (msgs_long − msgs_short): start-up, connection setup
//! and shutdown are the same in both runs and cancel. Callgrind counts every instruction
//! the process executes in user space (all threads, libc included), not the kernel's.
//! Under callgrind the server runs ~20–50× slower than natively, so with many
//! connections more events are ready per `epoll_wait` than untraced; the per-poll part
//! of the count is therefore spread over more messages than in a native run.
//!
//! The guard runs 1 connection × 64 B × depth 1: each poll then returns exactly one
//! event and the count does not depend on scheduling (measured spread: under 0.1%).
//! It fails the run when tcp-reactor's count exceeds the baseline by more than the
//! baseline's tolerance. Must not: run in the timed cells (callgrind is slow), or run Go.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::load;
use crate::pin::Layout;
use crate::report::BASE;
use crate::scenario::Scenario;
use crate::server::{ServerKind, ServerProc};

/// The scenario's name for `--scenarios`.
pub const NAME: &str = "instructions";

/// The committed baseline the guard compares with.
pub const BASELINE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/echo/instructions-baseline.json"
);

/// Functions kept per breakdown.
const TOP: usize = 25;

/// One counted cell: a load and the per-connection message counts of its two runs.
#[derive(Debug, Clone, Copy)]
pub struct Cell {
    pub scenario: Scenario,
    pub short: u64,
    pub long: u64,
}

/// The cells of the table (each server runs each).
pub const TABLE: [Cell; 2] = [
    Cell {
        scenario: Scenario {
            conns: 50,
            size: 64,
            depth: 1,
        },
        short: 200,
        long: 1000,
    },
    Cell {
        scenario: Scenario {
            conns: 50,
            size: 16 * 1024,
            depth: 1,
        },
        short: 40,
        long: 200,
    },
];

/// The guard's cell: one connection, so one event per poll, so a deterministic count.
pub const GUARD: Cell = Cell {
    scenario: Scenario {
        conns: 1,
        size: 64,
        depth: 1,
    },
    short: 2000,
    long: 10_000,
};

/// What callgrind counted for one server and cell.
#[derive(Debug, Clone)]
pub struct Count {
    pub kind: ServerKind,
    pub cell: Cell,
    /// (messages, Ir total) of the short and the long run.
    pub short: (u64, u64),
    pub long: (u64, u64),
    /// Self cost per message of the functions that cost most, largest first.
    pub top: Vec<(String, f64)>,
}

impl Count {
    pub fn per_msg(&self) -> f64 {
        (self.long.1 as f64 - self.short.1 as f64) / (self.long.0 - self.short.0).max(1) as f64
    }
}

/// What a run of this scenario produced.
pub struct Outcome {
    /// Markdown for the report (table, guard verdict).
    pub markdown: String,
    pub json: Value,
    /// Guard violations and errors; any fails the run.
    pub failures: Vec<String>,
}

/// `Ok` when valgrind and callgrind_annotate can run here; the error says why not.
pub fn available() -> Result<String, String> {
    let out = Command::new("valgrind")
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .map_err(|_| "valgrind not installed".to_string())?;
    if !out.status.success() {
        return Err(format!("`valgrind --version` failed ({})", out.status));
    }
    let ok = Command::new("callgrind_annotate")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        return Err("callgrind_annotate not found".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Run the scenario: the table for `servers` (unless `quick`) and the guard.
/// `Ok(None)` when valgrind is missing outside CI (a loud SKIP line was printed).
pub fn run(
    servers: &[ServerKind],
    layout: &Layout,
    mt_threads: usize,
    quick: bool,
    write_baseline: bool,
    out: &Path,
) -> Result<Option<Outcome>, Vec<String>> {
    let valgrind = match available() {
        Ok(v) => v,
        Err(why) if std::env::var_os("CI").is_some() => {
            return Err(vec![format!(
                "instructions: {why} (CI is set, so this fails instead of skipping); \
                 run scripts/install-test-tools.sh"
            )]);
        }
        Err(why) => {
            eprintln!(
                "\n!!! SKIP instructions-per-message column and its guard: {why}; \
                 run scripts/install-bench-tools.sh !!!\n"
            );
            return Ok(None);
        }
    };
    let dir = out.join("instructions");
    std::fs::create_dir_all(&dir).map_err(|e| vec![format!("{}: {e}", dir.display())])?;
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    if !quick {
        for cell in TABLE {
            for &kind in servers {
                if kind == ServerKind::Go {
                    continue; // valgrind does not run Go programs well
                }
                eprintln!("callgrind  {kind:<11} {}", cell.scenario);
                match count(kind, cell, layout, mt_threads, &dir) {
                    Ok(c) => counts.push(c),
                    Err(e) => failures.push(format!("instructions: {kind} {}: {e}", cell.scenario)),
                }
            }
        }
    }
    eprintln!(
        "callgrind  {:<11} {} (guard)",
        ServerKind::TcpReactor,
        GUARD.scenario
    );
    let guard = count(ServerKind::TcpReactor, GUARD, layout, mt_threads, &dir);
    let rustc = rustc_version();
    let mut md = table(&counts, servers);
    let mut guard_json = Value::Null;
    match guard {
        Ok(g) => {
            let (text, verdict, json) = check(&g, &valgrind, &rustc, write_baseline);
            md.push_str(&text);
            guard_json = json;
            if let Err(e) = verdict {
                failures.push(e);
            }
            counts.push(g);
        }
        Err(e) => failures.push(format!("instructions guard: {e}")),
    }
    for c in &counts {
        let path = dir.join(format!("{}-{}.top.txt", c.kind, c.cell.scenario.name()));
        if let Err(e) = std::fs::write(&path, breakdown(c)) {
            eprintln!("warning: could not write {}: {e}", path.display());
        }
    }
    let json = json!({
        "valgrind": valgrind,
        "rustc": rustc,
        "method": "(Ir_long - Ir_short) / (msgs_long - msgs_short), callgrind, fresh server per run",
        "counts": counts.iter().map(|c| json!({
            "server": c.kind.name(),
            "scenario": c.cell.scenario.name(),
            "short": {"msgs": c.short.0, "ir": c.short.1},
            "long": {"msgs": c.long.0, "ir": c.long.1},
            "instructions_per_msg": c.per_msg(),
            "top": c.top.iter().map(|(f, v)| json!([f, v])).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "guard": guard_json,
    });
    let _ = std::fs::write(
        dir.join("instructions.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
    let _ = std::fs::write(dir.join("instructions.md"), &md);
    Ok(Some(Outcome {
        markdown: md,
        json,
        failures,
    }))
}

/// Count one server on one cell: a short and a long run, each on a fresh server.
pub fn count(
    kind: ServerKind,
    cell: Cell,
    layout: &Layout,
    mt_threads: usize,
    dir: &Path,
) -> Result<Count, String> {
    let short = one_run(kind, cell.scenario, cell.short, layout, mt_threads, dir)?;
    let long = one_run(kind, cell.scenario, cell.long, layout, mt_threads, dir)?;
    let top = per_msg_top(&short.2, &long.2, long.0 - short.0)?;
    Ok(Count {
        kind,
        cell,
        short: (short.0, short.1),
        long: (long.0, long.1),
        top,
    })
}

/// One server under callgrind doing `n` messages per connection:
/// (messages, Ir total, callgrind output file).
fn one_run(
    kind: ServerKind,
    scenario: Scenario,
    n: u64,
    layout: &Layout,
    mt_threads: usize,
    dir: &Path,
) -> Result<(u64, u64, PathBuf), String> {
    let stem = format!("{kind}-{}-n{n}", scenario.name());
    let cg = dir.join(format!("{stem}.callgrind"));
    let log = dir.join(format!("{stem}.valgrind.log"));
    let _ = std::fs::remove_file(&cg);
    let wrapper = [
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", cg.display()),
        format!("--log-file={}", log.display()),
    ];
    let server = ServerProc::start_under(kind, layout, mt_threads, &[], &wrapper)?;
    let gen = load::command(&server, &scenario, layout)
        .arg("--messages")
        .arg(n.to_string())
        .output()
        .map_err(|e| format!("cannot run the load generator: {e}"));
    let stopped = server.stop();
    let result = load::from_output(&gen?)?;
    stopped?;
    let want = n * scenario.conns as u64;
    if result.errors > 0 || result.msgs != want {
        return Err(format!(
            "load generator completed {} of {want} messages with {} error(s) {}",
            result.msgs, result.errors, result.error_detail
        ));
    }
    let text = std::fs::read_to_string(&cg)
        .map_err(|e| format!("no callgrind output {}: {e}", cg.display()))?;
    let ir = totals(&text).ok_or_else(|| format!("{}: no totals line", cg.display()))?;
    Ok((want, ir, cg))
}

/// The `totals:` (or `summary:`) figure of a callgrind output file.
pub fn totals(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("totals:"))
        .or_else(|| text.lines().find(|l| l.starts_with("summary:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Self cost per function from `callgrind_annotate` (inclusive=no, every function).
fn functions(file: &Path) -> Result<Vec<(String, u64)>, String> {
    let out = Command::new("callgrind_annotate")
        .args(["--auto=no", "--inclusive=no", "--threshold=100"])
        .arg(file)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    Ok(parse_annotate(&String::from_utf8_lossy(&out.stdout)))
}

/// Lines `1,234 (5.6%)  file:function [object]` → (function, 1234).
pub fn parse_annotate(text: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some((num, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ir) = num.replace(',', "").parse::<u64>() else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix('(') else {
            continue;
        };
        let Some((_, name)) = rest.split_once(')') else {
            continue;
        };
        let name = name.trim();
        if name == "PROGRAM TOTALS" {
            continue;
        }
        // Drop the `file:` prefix and the ` [object]` suffix.
        let name = name.split_once(" [").map_or(name, |(n, _)| n);
        let name = name.split_once(':').map_or(name, |(_, f)| f);
        out.push((name.to_string(), ir));
    }
    out
}

/// Per-message self cost by function: (long − short) ÷ messages, largest first.
fn per_msg_top(short: &Path, long: &Path, msgs: u64) -> Result<Vec<(String, f64)>, String> {
    let mut by: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for (f, ir) in functions(long)? {
        *by.entry(f).or_default() += ir as i64;
    }
    for (f, ir) in functions(short)? {
        *by.entry(f).or_default() -= ir as i64;
    }
    let mut v: Vec<(String, f64)> = by
        .into_iter()
        .map(|(f, d)| (f, d as f64 / msgs.max(1) as f64))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(TOP);
    Ok(v)
}

fn breakdown(c: &Count) -> String {
    let mut s = format!(
        "{} {}: {:.0} instructions per message (callgrind, self cost per function,\n\
         (Ir of {} msgs − Ir of {} msgs) ÷ {} msgs)\n\n",
        c.kind,
        c.cell.scenario,
        c.per_msg(),
        c.long.0,
        c.short.0,
        c.long.0 - c.short.0
    );
    for (f, v) in &c.top {
        s.push_str(&format!("{v:>9.1}  {f}\n"));
    }
    s
}

fn table(counts: &[Count], servers: &[ServerKind]) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let get = |kind: ServerKind, cell: &Cell| {
        counts
            .iter()
            .find(|c| c.kind == kind && c.cell.scenario == cell.scenario)
            .map(Count::per_msg)
    };
    let mut s = String::from(
        "### User-space instructions per message (callgrind)\n\n\
         Exact counts, not timings: each server runs fresh under `valgrind --tool=callgrind` twice \
         with a fixed number of messages per connection; instructions/msg = (Ir_long − Ir_short) ÷ \
         (msgs_long − msgs_short), so start-up and shutdown cancel. User space only (the kernel's \
         share is not counted). Per-function breakdowns: `instructions/*.top.txt`.\n\n| server |",
    );
    for cell in &TABLE {
        s.push_str(&format!(" {} |", cell.scenario));
    }
    s.push_str("\n|---|");
    for _ in &TABLE {
        s.push_str("--:|");
    }
    s.push('\n');
    for &kind in servers {
        s.push_str(&format!("| {kind} |"));
        if kind == ServerKind::Go {
            for _ in &TABLE {
                s.push_str(" n/a (not under valgrind) |");
            }
            s.push('\n');
            continue;
        }
        for cell in &TABLE {
            let v = get(kind, cell);
            let ratio = |base: ServerKind, label: &str| match (v, get(base, cell)) {
                (Some(v), Some(b)) if base != kind && b > 0.0 => {
                    Some(format!("{:.2}× {label}", v / b))
                }
                _ => None,
            };
            let ratios: Vec<String> = [ratio(BASE, "tokio-ct"), ratio(ServerKind::BareMio, "bare")]
                .into_iter()
                .flatten()
                .collect();
            match v {
                Some(v) if ratios.is_empty() => s.push_str(&format!(" {v:.0} |")),
                Some(v) => s.push_str(&format!(" {v:.0} ({}) |", ratios.join(", "))),
                None => s.push_str(" failed |"),
            }
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

fn rustc_version() -> String {
    Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The guard's verdict on `g`: (markdown, Err(failure) when regressed, JSON).
fn check(
    g: &Count,
    valgrind: &str,
    rustc: &str,
    write_baseline: bool,
) -> (String, Result<(), String>, Value) {
    let now = g.per_msg();
    let how =
        format!("`cargo bench --bench echo -- --scenarios {NAME} --write-instructions-baseline`");
    if write_baseline {
        let v = json!({
            "what": "tcp-reactor's user-space instructions per message (callgrind), 1 conn × 64 B × d1",
            "scenario": GUARD.scenario.name(),
            "messages": [GUARD.short, GUARD.long],
            "instructions_per_msg": now.round(),
            "tolerance": 0.10,
            "valgrind": valgrind,
            "rustc": rustc,
            "update": how,
        });
        let text = serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
        let written = std::fs::write(BASELINE, text).map_err(|e| format!("{BASELINE}: {e}"));
        let md = format!("Guard baseline written: {now:.0} instructions/msg → {BASELINE}\n");
        return (md, written, v);
    }
    let baseline = std::fs::read_to_string(BASELINE)
        .map_err(|e| format!("{BASELINE}: {e}"))
        .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| format!("{BASELINE}: {e}")));
    let baseline = match baseline {
        Ok(b) => b,
        Err(e) => {
            return (
                String::new(),
                Err(format!("instructions guard: {e}")),
                Value::Null,
            )
        }
    };
    let base = baseline["instructions_per_msg"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let tol = baseline["tolerance"].as_f64().unwrap_or(0.10);
    let change = now / base - 1.0;
    let same_tools = baseline["valgrind"].as_str() == Some(valgrind)
        && baseline["rustc"].as_str() == Some(rustc);
    let tools = if same_tools {
        String::new()
    } else {
        format!(
            " (baseline measured with {} and {}; here {valgrind} and {rustc}: counts differ a little between versions)",
            baseline["valgrind"].as_str().unwrap_or("?"),
            baseline["rustc"].as_str().unwrap_or("?")
        )
    };
    let mut md = format!(
        "Guard: tcp-reactor, {}: **{now:.0}** instructions/msg; baseline {base:.0} ({:+.1}%, limit +{:.0}%){tools}.\n",
        GUARD.scenario,
        100.0 * change,
        100.0 * tol
    );
    let verdict = if change.is_nan() || change > tol {
        Err(format!(
            "instructions guard: tcp-reactor needs {now:.0} user-space instructions per message \
             ({}), {:+.1}% over the baseline {base:.0} in {BASELINE} (limit +{:.0}%){tools}. \
             If the increase is intended, refresh the baseline with {how} and commit it.",
            GUARD.scenario,
            100.0 * change,
            100.0 * tol
        ))
    } else {
        if change < -tol {
            md.push_str(&format!(
                "Improved by more than {:.0}%: lower the baseline with {how} so the guard keeps the gain.\n",
                100.0 * tol
            ));
        }
        Ok(())
    };
    let v = json!({
        "scenario": GUARD.scenario.name(),
        "instructions_per_msg": now,
        "baseline": base,
        "change": change,
        "tolerance": tol,
        "ok": verdict.is_ok(),
    });
    (md, verdict, v)
}
