//! One timed cell: the load generator against one server for one scenario.
//!
//! Owns: the `tcp-reactor-load` command line (pinned to the load CPU, `--json`,
//! `--server-pid` so the generator itself samples the server's CPU time exactly at the
//! window's edges) and parsing its JSON into a [`LoadResult`]. Must not: aggregate
//! repetitions (the report does).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::pin::Layout;
use crate::scenario::Scenario;
use crate::server::{load_generator, ServerProc};

/// What one run of the load generator measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub msgs: u64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Total error count, and a readable breakdown when non-zero.
    pub errors: u64,
    pub error_detail: String,
    /// Load generator CPU inside the window, as a share of one core.
    pub gen_cpu: f64,
    /// Server CPU inside the window.
    pub server_user_ns: Option<f64>,
    pub server_sys_ns: Option<f64>,
    /// CPU the rest of the machine used inside the window (other processes, ksoftirqd),
    /// as a share of one core. A busy neighbour makes the cell unreliable.
    pub others_cpu: Option<f64>,
    /// The generator's JSON line as printed.
    pub raw: Value,
}

/// The generator's command line for `scenario` against `server` (no timing flags).
pub fn command(server: &ServerProc, scenario: &Scenario, layout: &Layout) -> Command {
    let mut cmd = Command::new(load_generator());
    cmd.arg(server.addr.to_string())
        .arg("-c")
        .arg(scenario.conns.to_string())
        .arg("-s")
        .arg(scenario.size.to_string())
        .arg("-d")
        .arg(scenario.depth.to_string())
        .arg("--json")
        .arg("--server-pid")
        .arg(server.pid().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cpus) = layout.load {
        // SAFETY: the closure only calls sched_setaffinity on a prepared set.
        unsafe { cmd.pre_exec(move || cpus.apply()) };
    }
    cmd
}

/// Run one timed cell and parse the result.
pub fn run(
    server: &ServerProc,
    scenario: &Scenario,
    layout: &Layout,
    warmup: f64,
    duration: f64,
) -> Result<LoadResult, String> {
    let out = command(server, scenario, layout)
        .arg("--warmup")
        .arg(warmup.to_string())
        .arg("--duration")
        .arg(duration.to_string())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", load_generator().display()))?;
    from_output(&out)
}

/// The result of a finished generator process: its last `--json` line, with
/// the first lines of its stderr added to the error detail when it counted
/// errors.
pub fn from_output(out: &std::process::Output) -> Result<LoadResult, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| {
            format!(
                "load generator printed no JSON ({}); stderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    parse(line).map(|mut r| {
        if r.errors > 0 {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().take(3).collect::<Vec<_>>().join(" / ");
            if !first.is_empty() {
                r.error_detail = format!("{}; {first}", r.error_detail);
            }
        }
        r
    })
}

/// Parse the generator's `--json` line.
pub fn parse(line: &str) -> Result<LoadResult, String> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| format!("bad JSON from load generator: {e}"))?;
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let need = |k: &str| f(k).ok_or_else(|| format!("load generator JSON lacks {k:?}"));
    let errors = u("errors");
    let error_detail = if errors == 0 {
        String::new()
    } else {
        [
            ("connect", "connect_errors"),
            ("reset", "resets"),
            ("bad bytes", "bad_bytes"),
            ("early EOF", "early_eofs"),
            ("timeout", "timeouts"),
            ("other", "other_errors"),
        ]
        .iter()
        .filter(|(_, k)| u(k) > 0)
        .map(|(name, k)| format!("{name} {}", u(k)))
        .collect::<Vec<_>>()
        .join(", ")
    };
    let others_cpu = (|| {
        let cpu_s =
            f("gen_user_s")? + f("gen_sys_s")? + (f("server_user_ns")? + f("server_sys_ns")?) / 1e9;
        Some(((f("machine_busy_s")? - cpu_s) / f("window_s")?.max(1e-9)).max(0.0))
    })();
    Ok(LoadResult {
        msgs: u("msgs"),
        msgs_per_s: need("msgs_per_s")?,
        mb_per_s: need("mb_per_s")?,
        p50_us: need("p50_us")?,
        p99_us: need("p99_us")?,
        p999_us: need("p999_us")?,
        errors,
        error_detail,
        gen_cpu: f("gen_cpu").unwrap_or(0.0),
        server_user_ns: f("server_user_ns"),
        server_sys_ns: f("server_sys_ns"),
        others_cpu,
        raw: v,
    })
}
