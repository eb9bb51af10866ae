//! The multi-core scaling scenario: `tcp-reactor --threads N` against tokio
//! `multi_thread` limited to N workers.
//!
//! Owns: splitting the CPUs (servers pinned to the first half, one load
//! generator pinned to each CPU of the other half — one generator is one
//! thread and saturates one core), running both servers in turn, adding up
//! the generators' figures, and the table. Must not: pretend to scale on a
//! machine too small to show it. With fewer than 4 CPUs it prints a loud
//! SKIP line and returns `None`, unless asked for by name
//! (`--scenarios scaling`), which runs it anyway (1 server CPU, 1 load CPU)
//! to exercise the code.

use std::io::Write;
use std::process::Stdio;

use crate::load;
use crate::pin::{CpuSet, Layout};
use crate::report::{fmt_rate, fmt_us};
use crate::scenario::Scenario;
use crate::server::{ServerKind, ServerProc};

/// The scenario's name for `--scenarios`.
pub const NAME: &str = "scaling";

/// Connections each load generator opens.
const CONNS_PER_GENERATOR: usize = 100;

struct Outcome {
    kind: ServerKind,
    msgs_per_s: f64,
    p99_us: f64,
    errors: u64,
}

/// Run the scenario on `cpus` (the harness's CPUs before it pinned itself);
/// `Ok(None)` when skipped, `Err` with what failed.
pub fn run(
    cpus: &[usize],
    quick: bool,
    warmup: f64,
    duration: f64,
    asked: bool,
) -> Result<Option<String>, Vec<String>> {
    if cpus.len() < 4 && !asked {
        eprintln!(
            "SKIP scaling scenario: it needs at least 4 CPUs (servers on half, load on the other half); \
             this machine allows {}. Run `cargo bench --bench echo -- --scenarios scaling` on a bigger one \
             (or here, to exercise it on 1 + 1 CPUs).",
            cpus.len()
        );
        return Ok(None);
    }
    if cpus.len() < 2 {
        eprintln!("SKIP scaling scenario: fewer than 2 CPUs");
        return Ok(None);
    }
    let half = cpus.len() / 2;
    let (server_cpus, load_cpus) = cpus.split_at(half);
    let threads = server_cpus.len();
    let layout = Layout {
        load: None,
        server: Some(CpuSet::from_cpus(server_cpus)),
        describe: format!("servers on CPUs {server_cpus:?}, load generators on {load_cpus:?}"),
        server_cpus: threads,
    };
    let scenario = Scenario {
        conns: if quick { 20 } else { CONNS_PER_GENERATOR },
        size: 64,
        depth: 1,
    };
    let mut outcomes = Vec::new();
    let mut errors = Vec::new();
    for kind in [ServerKind::TcpReactor, ServerKind::TokioMt] {
        eprintln!(
            "scaling: {kind} with {threads} thread(s), {} load generator(s)",
            load_cpus.len()
        );
        let extra = match kind {
            ServerKind::TcpReactor => vec!["--threads".to_string(), threads.to_string()],
            _ => Vec::new(),
        };
        let server = match ServerProc::start_with_args(kind, &layout, threads, &extra) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match drive(&server, &scenario, load_cpus, warmup, duration) {
            Ok(o) => outcomes.push(Outcome { kind, ..o }),
            Err(e) => errors.push(format!("{kind}: {e}")),
        }
        if let Err(e) = server.stop() {
            errors.push(e);
        }
    }
    for o in &outcomes {
        if o.errors > 0 {
            errors.push(format!("{}: {} load errors", o.kind, o.errors));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Some(table(
        &outcomes,
        threads,
        load_cpus.len(),
        &layout.describe,
        quick,
    )))
}

/// One load generator per load CPU, all at once; their rates add up.
fn drive(
    server: &ServerProc,
    scenario: &Scenario,
    load_cpus: &[usize],
    warmup: f64,
    duration: f64,
) -> Result<Outcome, String> {
    let mut children = Vec::new();
    for &cpu in load_cpus {
        let one = Layout {
            load: Some(CpuSet::from_cpus(&[cpu])),
            server: None,
            describe: String::new(),
            server_cpus: 1,
        };
        let child = load::command(server, scenario, &one)
            .arg("--warmup")
            .arg(warmup.to_string())
            .arg("--duration")
            .arg(duration.to_string())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a load generator: {e}"))?;
        children.push(child);
    }
    let mut total = Outcome {
        kind: server.kind,
        msgs_per_s: 0.0,
        p99_us: 0.0,
        errors: 0,
    };
    for child in children {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let r = load::from_output(&out)?;
        total.msgs_per_s += r.msgs_per_s;
        total.p99_us = total.p99_us.max(r.p99_us);
        total.errors += r.errors;
    }
    Ok(total)
}

fn table(
    outcomes: &[Outcome],
    threads: usize,
    generators: usize,
    describe: &str,
    quick: bool,
) -> String {
    let mut md = Vec::new();
    let _ = writeln!(md, "### Scaling: {threads} server thread(s), {generators} load generator(s) × {CONNS_PER_GENERATOR} conns × 64 B × d1\n");
    let _ = writeln!(
        md,
        "{describe}; tcp-reactor `--threads {threads}`, tokio-mt with {threads} worker(s).{}\n",
        if quick {
            " Quick run: correctness only."
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "| server | msgs/s | msgs/s per thread | worst p99 µs | errors |"
    );
    let _ = writeln!(md, "|---|--:|--:|--:|--:|");
    let base = outcomes
        .iter()
        .find(|o| o.kind == ServerKind::TokioMt)
        .map(|o| o.msgs_per_s);
    for o in outcomes {
        let ratio = match base {
            Some(b) if b > 0.0 && o.kind != ServerKind::TokioMt => {
                format!(" ({:.2}×)", o.msgs_per_s / b)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "| {} | {}{ratio} | {} | {} | {} |",
            o.kind,
            fmt_rate(o.msgs_per_s),
            fmt_rate(o.msgs_per_s / threads as f64),
            fmt_us(o.p99_us),
            o.errors
        );
    }
    String::from_utf8_lossy(&md).into_owned()
}
