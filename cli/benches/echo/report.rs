//! From raw runs to what a person reads: medians, ratios, tables, target checks, JSON.
//!
//! Owns: [`Results`] (everything a bench run collected), the median of every figure over
//! repetitions (each figure on its own), every figure's ratio to tokio current_thread of
//! the same run, the markdown tables, the target checks, and the JSON report. Must not:
//! run anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::idle::IdleResult;
use crate::load::LoadResult;
use crate::scenario::{Scenario, HEADLINE};
use crate::server::ServerKind;
use crate::syscalls::{Method, SyscallCounts, GROUPS};

/// A run is noisy when other processes used more than this share of a core in its window.
pub const NOISY_SHARE: f64 = 0.25;

/// The reference every ratio divides by.
pub const BASE: ServerKind = ServerKind::TokioCt;

/// Everything one bench run collected.
#[derive(Default)]
pub struct Results {
    pub servers: Vec<ServerKind>,
    pub scenarios: Vec<Scenario>,
    pub settings: Value,
    pub runs: BTreeMap<(ServerKind, Scenario), Vec<LoadResult>>,
    pub syscalls: BTreeMap<(Method, ServerKind, Scenario), SyscallCounts>,
    /// Syscall counters that did not run, and why.
    pub syscall_skip: Vec<String>,
    pub idle: BTreeMap<ServerKind, Vec<IdleResult>>,
    /// The callgrind counts and the guard's verdict (`instructions` scenario).
    pub instructions: Option<Value>,
    /// Its markdown (table and guard verdict), shown after the idle table.
    pub instructions_md: String,
    /// Errors and contract violations; any of them fails the run.
    pub failures: Vec<String>,
}

/// Medians of one (server, scenario) cell.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub user_ns: Option<f64>,
    pub sys_ns: Option<f64>,
    pub syscalls: Option<f64>,
    pub gen_cpu: f64,
    /// CPU used by everything else on the machine, share of one core.
    pub others_cpu: Option<f64>,
    /// Sum over repetitions (all of them, noisy or not).
    pub errors: u64,
    /// Runs the medians are taken over (noisy runs excluded when a quiet one exists).
    pub used: usize,
    /// Total syscalls per message from the perf pass.
    pub perf_syscalls: Option<f64>,
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

/// Σ f(run) ÷ Σ messages over the runs that have f; `None` when none has it.
fn pooled(runs: &[LoadResult], f: fn(&LoadResult) -> Option<f64>) -> Option<f64> {
    let with: Vec<(f64, u64)> = runs.iter().filter_map(|r| Some((f(r)?, r.msgs))).collect();
    let msgs: u64 = with.iter().map(|w| w.1).sum();
    if with.is_empty() || msgs == 0 {
        return None;
    }
    Some(with.iter().map(|w| w.0).sum::<f64>() / msgs as f64)
}

impl Results {
    pub fn row(&self, kind: ServerKind, s: &Scenario) -> Option<Row> {
        let all = self.runs.get(&(kind, *s)).filter(|r| !r.is_empty())?;
        // Runs disturbed by other processes are left out when a quiet one exists.
        let quiet: Vec<LoadResult> = all
            .iter()
            .filter(|r| r.others_cpu.unwrap_or(0.0) <= NOISY_SHARE)
            .cloned()
            .collect();
        let runs: &[LoadResult] = if quiet.is_empty() { all } else { &quiet };
        let m =
            |f: &dyn Fn(&LoadResult) -> Option<f64>| median(runs.iter().filter_map(f).collect());
        Some(Row {
            msgs_per_s: m(&|r| Some(r.msgs_per_s))?,
            mb_per_s: m(&|r| Some(r.mb_per_s))?,
            p50_us: m(&|r| Some(r.p50_us))?,
            p99_us: m(&|r| Some(r.p99_us))?,
            p999_us: m(&|r| Some(r.p999_us))?,
            // CPU time is tick-sampled (user vs system decided per tick), so per-run figures
            // are noisy; pooling all repetitions (Σ time ÷ Σ messages) uses every sample.
            user_ns: pooled(runs, |r| r.server_user_ns),
            sys_ns: pooled(runs, |r| r.server_sys_ns),
            syscalls: self.syscalls_per_msg(Method::Strace, kind, s),
            gen_cpu: m(&|r| Some(r.gen_cpu)).unwrap_or(0.0),
            others_cpu: m(&|r| r.others_cpu),
            errors: all.iter().map(|r| r.errors).sum(),
            used: runs.len(),
            perf_syscalls: self.syscalls_per_msg(Method::Perf, kind, s),
        })
    }

    /// Total syscalls per message counted by `method`.
    pub fn syscalls_per_msg(&self, method: Method, kind: ServerKind, s: &Scenario) -> Option<f64> {
        self.syscalls
            .get(&(method, kind, *s))
            .map(SyscallCounts::total_per_msg)
    }

    /// Median bytes per idle connection.
    pub fn idle_bytes(&self, kind: ServerKind) -> Option<f64> {
        let runs = self.idle.get(&kind)?;
        median(
            runs.iter()
                .filter(|r| r.conns > 0)
                .map(IdleResult::bytes_per_conn)
                .collect(),
        )
    }

    /// The markdown tables, target checks included.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let reps = self.settings["reps"].as_u64().unwrap_or(1);
        if self.scenarios.is_empty() {
            self.syscall_table(&mut s);
            self.idle_table(&mut s);
            s.push_str(&self.instructions_md);
            s.push_str(&self.targets_text());
            return s;
        }
        let all: Vec<&LoadResult> = self.runs.values().flatten().collect();
        let noisy = all
            .iter()
            .filter(|r| r.others_cpu.unwrap_or(0.0) > NOISY_SHARE)
            .count();
        if noisy > 0 {
            let _ = writeln!(
                s,
                "> **Noisy machine:** in {noisy} of {} timed runs other processes used more than \
                 {:.0}% of a core during the window. Those runs are left out of a cell's figures \
                 when the cell has a quiet run; `other CPU` shows what remained.\n",
                all.len(),
                100.0 * NOISY_SHARE
            );
        }
        let _ = writeln!(
            s,
            "### Echo: throughput, latency, CPU and syscalls per message\n\n\
             Median of {reps} interleaved run(s) per cell; `(n×)` = ratio to tokio-ct in the same run \
             (for latency, CPU and syscalls lower is better). user/sys ns/msg: server CPU time in \
             the measured windows ÷ messages, pooled over the runs; syscalls/msg: from the strace pass (and the perf pass, untraced batching). {}.\n",
            self.settings["pinning"].as_str().unwrap_or("")
        );
        s.push_str(
            "| scenario | server | msgs/s | MB/s | p50 µs | p99 µs | p99.9 µs | user ns/msg | sys ns/msg | syscalls/msg strace | syscalls/msg perf | load gen CPU | other CPU | errors |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for sc in &self.scenarios {
            let base = self.row(BASE, sc);
            for &kind in &self.servers {
                let Some(r) = self.row(kind, sc) else {
                    let _ = writeln!(s, "| {sc} | {kind} | failed | | | | | | | | | | | |");
                    continue;
                };
                let with =
                    |v: Option<f64>, b: Option<f64>, f: fn(f64) -> String| cell(kind, v, b, f);
                let b = |g: fn(&Row) -> Option<f64>| base.as_ref().and_then(g);
                let _ = writeln!(
                    s,
                    "| {sc} | {kind} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% | {} | {} |",
                    with(Some(r.msgs_per_s), b(|x| Some(x.msgs_per_s)), fmt_rate),
                    with(Some(r.mb_per_s), b(|x| Some(x.mb_per_s)), fmt_mb),
                    with(Some(r.p50_us), b(|x| Some(x.p50_us)), fmt_us),
                    with(Some(r.p99_us), b(|x| Some(x.p99_us)), fmt_us),
                    with(Some(r.p999_us), b(|x| Some(x.p999_us)), fmt_us),
                    with(r.user_ns, b(|x| x.user_ns), fmt_ns),
                    with(r.sys_ns, b(|x| x.sys_ns), fmt_ns),
                    with(r.syscalls, b(|x| x.syscalls), fmt_sys),
                    with(r.perf_syscalls, b(|x| x.perf_syscalls), fmt_sys),
                    100.0 * r.gen_cpu,
                    r.others_cpu
                        .map(|o| format!("{:.0}%", 100.0 * o))
                        .unwrap_or("-".into()),
                    r.errors
                );
            }
        }
        s.push('\n');
        self.syscall_table(&mut s);
        self.idle_table(&mut s);
        s.push_str(&self.instructions_md);
        s.push_str(&self.targets_text());
        s
    }

    fn syscall_table(&self, s: &mut String) {
        for why in &self.syscall_skip {
            let _ = writeln!(s, "Syscall counter skipped: {why}.\n");
        }
        if self.syscalls.is_empty() {
            return;
        }
        let secs = self.settings["trace_secs"].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            s,
            "### Syscalls per message, by kind\n\n\
             From separate {secs} s runs per cell with a counter attached to the running server \
             (connection setup and teardown excluded): `strace -f -c -p PID` (the syscalls/msg \
             column above), and `perf stat` on the syscall tracepoints, which does not slow the \
             server down and so shows untraced `epoll_wait` batching. `read` = read/recvfrom/recvmsg, \
             `write` = write/sendto/sendmsg, `epoll_wait` includes epoll_pwait.\n"
        );
        s.push_str("| scenario | server | counter |");
        for g in GROUPS {
            let _ = write!(s, " {g} |");
        }
        s.push_str(" total |\n|---|---|---|");
        for _ in GROUPS {
            s.push_str("--:|");
        }
        s.push_str("--:|\n");
        let methods: Vec<Method> = {
            let mut m: Vec<Method> = self.syscalls.keys().map(|k| k.0).collect();
            m.dedup();
            m.sort();
            m.dedup();
            m
        };
        for sc in &self.scenarios {
            for &kind in &self.servers {
                for &method in &methods {
                    let Some(c) = self.syscalls.get(&(method, kind, *sc)) else {
                        continue;
                    };
                    let base = self.syscalls_per_msg(method, BASE, sc);
                    let _ = write!(s, "| {sc} | {kind} | {} |", method.name());
                    for g in GROUPS {
                        let _ = write!(s, " {:.3} |", c.per_msg(g));
                    }
                    let _ = writeln!(
                        s,
                        " {} |",
                        cell(kind, Some(c.total_per_msg()), base, fmt_sys)
                    );
                }
            }
        }
        s.push('\n');
    }

    fn idle_table(&self, s: &mut String) {
        if self.idle.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "### Memory per idle connection\n\n\
             Fresh server process; RSS before, and with N connections that each echoed one byte \
             and sit idle (median of the runs). Kernel socket buffers are not in RSS.\n\n\
             | server | idle conns | RSS before | RSS with idle conns | bytes / idle conn |\n\
             |---|--:|--:|--:|--:|"
        );
        let base = self.idle_bytes(BASE);
        for &kind in &self.servers {
            let Some(runs) = self.idle.get(&kind).filter(|r| !r.is_empty()) else {
                continue;
            };
            let before = median(runs.iter().map(|r| r.rss_before as f64).collect()).unwrap_or(0.0);
            let after = median(runs.iter().map(|r| r.rss_after as f64).collect()).unwrap_or(0.0);
            let conns = runs.iter().map(|r| r.conns).min().unwrap_or(0);
            let _ = writeln!(
                s,
                "| {kind} | {conns} | {:.1} MiB | {:.1} MiB | {} |",
                before / 1048576.0,
                after / 1048576.0,
                cell(kind, self.idle_bytes(kind), base, |v| format!("{v:.0}"))
            );
        }
        s.push('\n');
    }

    /// The issue-7 targets for tcp-reactor, each met / missed with its ratio.
    pub fn targets(&self) -> Vec<Value> {
        let me = ServerKind::TcpReactor;
        let mut out = Vec::new();
        let mut push = |what: String,
                        value: Option<f64>,
                        limit: f64,
                        higher_is_better: bool,
                        detail: String| {
            let met = value.map(|v| {
                if higher_is_better {
                    v >= limit
                } else {
                    v <= limit
                }
            });
            out.push(json!({ "target": what, "value": value, "limit": limit, "met": met, "detail": detail }));
        };
        let h = HEADLINE;
        let (mine, base) = (self.row(me, &h), self.row(BASE, &h));
        let ratio = |f: fn(&Row) -> Option<f64>| Some(f(mine.as_ref()?)? / f(base.as_ref()?)?);
        let both = |f: fn(&Row) -> Option<f64>, fmt: fn(f64) -> String| match (
            mine.and_then(|r| f(&r)),
            base.and_then(|r| f(&r)),
        ) {
            (Some(a), Some(b)) => format!("{} vs {}", fmt(a), fmt(b)),
            _ => "not measured".into(),
        };
        push(
            format!("throughput at {h} >= 1.05x tokio-ct"),
            ratio(|r| Some(r.msgs_per_s)),
            1.05,
            true,
            both(
                |r| Some(r.msgs_per_s),
                |v| format!("{} msgs/s", fmt_rate(v)),
            ),
        );
        push(
            format!("user CPU/msg at {h} <= 0.5x tokio-ct"),
            ratio(|r| r.user_ns),
            0.5,
            false,
            both(|r| r.user_ns, |v| format!("{v:.0} ns")),
        );
        let others = |method: Method| {
            format!(
                "tokio-ct {}, bare-mio {}",
                self.syscalls_per_msg(method, BASE, &h)
                    .map(fmt_sys)
                    .unwrap_or("-".into()),
                self.syscalls_per_msg(method, ServerKind::BareMio, &h)
                    .map(fmt_sys)
                    .unwrap_or("-".into())
            )
        };
        push(
            format!("syscalls/msg at {h} <= 2.05 (strace)"),
            self.syscalls_per_msg(Method::Strace, me, &h),
            2.05,
            false,
            others(Method::Strace),
        );
        // Untraced, epoll_wait/msg depends on whether the server or the generator is the
        // bottleneck at that moment (an idle-ish server wakes per message); shown for
        // information, not judged.
        let perf_info = self.syscalls_per_msg(Method::Perf, me, &h).map(|v| {
            json!({
                "target": format!("syscalls/msg at {h}, untraced (perf)"),
                "value": v, "limit": Value::Null, "met": Value::Null,
                "detail": format!("{}; depends on who is the bottleneck", others(Method::Perf)),
            })
        });
        push(
            "RSS per idle connection <= 256 B".into(),
            self.idle_bytes(me),
            256.0,
            false,
            format!(
                "tokio-ct {}",
                self.idle_bytes(BASE)
                    .map(|v| format!("{v:.0} B"))
                    .unwrap_or("-".into())
            ),
        );
        for sc in self.scenarios.iter().filter(|s| s.conns == 1000) {
            let (a, b) = (self.row(me, sc), self.row(BASE, sc));
            let value = a.zip(b).map(|(a, b)| a.p99_us / b.p99_us);
            let detail = a
                .zip(b)
                .map(|(a, b)| format!("{} vs {} µs", fmt_us(a.p99_us), fmt_us(b.p99_us)))
                .unwrap_or("not measured".into());
            push(
                format!("p99 at {sc} <= tokio-ct's"),
                value,
                1.0,
                false,
                detail,
            );
        }
        out.extend(perf_info);
        out
    }

    pub fn targets_text(&self) -> String {
        let mut s =
            String::from("### Targets (tcp-reactor; ratios to tokio-ct in the same run)\n\n");
        for t in self.targets() {
            let status = match (t["met"].as_bool(), t["limit"].is_null()) {
                (Some(true), _) => "met   ",
                (Some(false), _) => "MISSED",
                (None, true) => "info  ",
                (None, false) => "n/a   ",
            };
            let value = t["value"]
                .as_f64()
                .map(|v| format!("{v:.3}"))
                .unwrap_or("-".into());
            let _ = writeln!(
                s,
                "- `{status}` {}: **{value}** ({})",
                t["target"].as_str().unwrap_or(""),
                t["detail"].as_str().unwrap_or("")
            );
        }
        s
    }

    /// Compact correctness table for `--quick`.
    pub fn quick_text(&self) -> String {
        let mut s = String::from("| scenario | server | msgs | errors |\n|---|---|--:|--:|\n");
        for sc in &self.scenarios {
            for &kind in &self.servers {
                match self.runs.get(&(kind, *sc)) {
                    Some(runs) => {
                        let msgs: u64 = runs.iter().map(|r| r.msgs).sum();
                        let errors: u64 = runs.iter().map(|r| r.errors).sum();
                        let _ = writeln!(s, "| {sc} | {kind} | {msgs} | {errors} |");
                    }
                    None => {
                        let _ = writeln!(s, "| {sc} | {kind} | - | failed |");
                    }
                }
            }
        }
        for (kind, runs) in &self.idle {
            let conns = runs.iter().map(|r| r.conns).min().unwrap_or(0);
            let errors: usize = runs.iter().map(|r| r.errors.len()).sum();
            let _ = writeln!(s, "| idle ({conns} conns, drain) | {kind} | - | {errors} |");
        }
        s
    }

    pub fn json(&self) -> Value {
        let mut cells = Vec::new();
        for sc in &self.scenarios {
            for &kind in &self.servers {
                let runs = self.runs.get(&(kind, *sc));
                let row = self.row(kind, sc);
                let base = self.row(BASE, sc);
                let sys: serde_json::Map<String, Value> = self
                    .syscalls
                    .iter()
                    .filter(|((_, k, s), _)| *k == kind && s == sc)
                    .map(|((m, _, _), c)| {
                        let per_msg: serde_json::Map<String, Value> = GROUPS
                            .iter()
                            .map(|g| (g.to_string(), json!(c.per_msg(g))))
                            .collect();
                        let v = json!({
                            "msgs": c.msgs,
                            "calls": c.calls,
                            "per_msg": per_msg,
                            "total_per_msg": c.total_per_msg(),
                        });
                        (m.name().to_string(), v)
                    })
                    .collect();
                let ratio = |f: fn(&Row) -> Option<f64>| -> Option<f64> {
                    Some(f(row.as_ref()?)? / f(base.as_ref()?)?)
                };
                cells.push(json!({
                    "server": kind.name(),
                    "scenario": sc.name(),
                    "conns": sc.conns, "size": sc.size, "depth": sc.depth,
                    "median": row.map(|r| json!({
                        "msgs_per_s": r.msgs_per_s, "mb_per_s": r.mb_per_s,
                        "p50_us": r.p50_us, "p99_us": r.p99_us, "p999_us": r.p999_us,
                        "user_ns_per_msg": r.user_ns, "sys_ns_per_msg": r.sys_ns,
                        "syscalls_per_msg": r.syscalls, "perf_syscalls_per_msg": r.perf_syscalls,
                        "load_gen_cpu": r.gen_cpu, "runs_used": r.used,
                        "others_cpu": r.others_cpu, "errors": r.errors,
                    })),
                    "ratio_to_tokio_ct": json!({
                        "msgs_per_s": ratio(|r| Some(r.msgs_per_s)),
                        "mb_per_s": ratio(|r| Some(r.mb_per_s)),
                        "p50_us": ratio(|r| Some(r.p50_us)),
                        "p99_us": ratio(|r| Some(r.p99_us)),
                        "p999_us": ratio(|r| Some(r.p999_us)),
                        "user_ns_per_msg": ratio(|r| r.user_ns),
                        "sys_ns_per_msg": ratio(|r| r.sys_ns),
                        "syscalls_per_msg": ratio(|r| r.syscalls),
                    }),
                    "syscalls": sys,
                    "runs": runs.map(|rs| rs.iter().map(|r| r.raw.clone()).collect::<Vec<_>>()),
                }));
            }
        }
        let idle: Vec<Value> = self
            .idle
            .iter()
            .map(|(kind, runs)| {
                json!({
                    "server": kind.name(),
                    "bytes_per_idle_conn": self.idle_bytes(*kind),
                    "runs": runs.iter().map(|r| json!({
                        "conns": r.conns, "rss_before": r.rss_before, "rss_after": r.rss_after,
                        "bytes_per_conn": r.bytes_per_conn(), "errors": r.errors,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "settings": self.settings,
            "cells": cells,
            "idle": idle,
            "syscalls_skipped": self.syscall_skip,
            "instructions": self.instructions,
            "targets": self.targets(),
            "failures": self.failures,
        })
    }
}

/// `value (ratio×)`, or just the value for the reference server or a missing reference.
fn cell(kind: ServerKind, v: Option<f64>, base: Option<f64>, f: fn(f64) -> String) -> String {
    match (v, base) {
        (None, _) => "-".into(),
        (Some(v), Some(b)) if kind != BASE && b > 0.0 => format!("{} ({:.2}×)", f(v), v / b),
        (Some(v), _) => f(v),
    }
}

pub fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn fmt_mb(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn fmt_us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn fmt_ns(v: f64) -> String {
    format!("{v:.0}")
}

fn fmt_sys(v: f64) -> String {
    format!("{v:.2}")
}
