//! The bench run: plan the cells, run them interleaved, report.
//!
//! Owns: the settings of a run (full or `--quick`), the plan (every timed cell of every
//! repetition, interleaved: for each repetition, for each scenario, every server in an
//! order rotated per repetition; then the idle-memory runs; then one pass per syscall
//! counter), the
//! long-lived server processes, the progress line on stderr, and the exit status.
//! Must not: measure (that is [`load`], [`syscalls`], [`idle`]) or format figures
//! ([`report`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::golang;
use crate::idle;
use crate::instructions;
use crate::load;
use crate::pin::{self, Layout};
use crate::plot;
use crate::report::{Results, NOISY_SHARE};
use crate::scaling;
use crate::scenario::{self, Scenario, IDLE};
use crate::server::{ServerKind, ServerProc};
use crate::syscalls::{self, Method};
use crate::Cli;

/// At most this many re-runs per cell.
const NOISY_RETRIES: usize = 2;
/// Before a cell, wait (within the run's `--max-wait` budget) while other processes keep
/// more than [`NOISY_SHARE`] of a core busy.
const QUIET_SAMPLE: Duration = Duration::from_millis(300);
/// How long one cell of each kind is expected to take beyond its configured seconds.
const CELL_OVERHEAD_S: f64 = 0.3;

/// One thing to run.
#[derive(Debug, Clone, Copy)]
enum Task {
    Timed {
        rep: usize,
        kind: ServerKind,
        scenario: Scenario,
    },
    Idle {
        rep: usize,
        kind: ServerKind,
    },
    Syscalls {
        method: Method,
        kind: ServerKind,
        scenario: Scenario,
    },
}

struct Settings {
    quick: bool,
    reps: usize,
    duration: f64,
    warmup: f64,
    idle_conns: usize,
    /// Syscall counters that will run.
    methods: Vec<Method>,
    trace_secs: f64,
    mt_threads: usize,
    out: PathBuf,
    /// Seconds this run may still spend waiting for other processes to quiet down.
    wait_budget: f64,
}

pub fn run(cli: Cli) -> ExitCode {
    // `cargo bench` passes --bench; without it (`cargo test --benches`) only smoke-test.
    let quick = cli.quick || !cli.bench;
    let nofile = raise_nofile_limit();
    // SAFETY: sysconf has no preconditions. (Read before this process pins itself.)
    let cpus_online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
    let all_cpus = pin::allowed_cpus(); // before the harness pins itself below
    let layout = pin::layout();
    if let Some(cpus) = layout.load {
        if let Err(e) = cpus.apply() {
            eprintln!("warning: cannot pin the harness to the load CPU: {e}");
        }
    }
    let mut idle_conns = if quick {
        cli.idle_conns.min(200)
    } else {
        cli.idle_conns
    };
    if nofile < idle_conns as u64 + 256 {
        let fit = nofile.saturating_sub(256) as usize;
        eprintln!(
            "warning: open-file limit {nofile} is too low for {idle_conns} idle connections; using {fit}"
        );
        idle_conns = fit;
    }
    let settings = Settings {
        quick,
        reps: if quick { 1 } else { cli.reps.max(1) },
        duration: if quick { 0.25 } else { cli.duration },
        warmup: if quick { 0.05 } else { cli.warmup },
        idle_conns,
        methods: Vec::new(),
        trace_secs: cli.trace_secs,
        mt_threads: cli.mt_threads.unwrap_or(layout.server_cpus).max(1),
        out: cli.out.clone().unwrap_or_else(default_out_dir),
        wait_budget: if quick { 0.0 } else { cli.max_wait },
    };
    let mut servers = cli.servers.clone();
    servers.dedup();
    if servers.contains(&ServerKind::Go) {
        if let Err(why) = golang::build() {
            eprintln!(
                "\n!!! SKIP the go server: {why}; run scripts/install-bench-tools.sh (golang-go) !!!\n"
            );
            servers.retain(|&k| k != ServerKind::Go);
        }
    }
    let scenarios = scenario::grid(&cli.scenarios);
    let with_idle = scenario::selected(&cli.scenarios, IDLE) && idle_conns > 0;

    let mut results = Results {
        servers: servers.clone(),
        scenarios: scenarios.clone(),
        settings: json!({
            "quick": quick,
            "reps": settings.reps,
            "duration_s": settings.duration,
            "warmup_s": settings.warmup,
            "idle_conns": idle_conns,
            "trace_secs": settings.trace_secs,
            "tokio_mt_threads": settings.mt_threads,
            "pinning": layout.describe,
            "cpus_online": cpus_online,
        }),
        ..Results::default()
    };
    let mut settings = settings;
    if !quick && cli.no_syscalls {
        results.syscall_skip.push("--no-syscalls".into());
    }
    if !quick && !cli.no_syscalls {
        let mut wanted = cli.syscalls.clone();
        wanted.sort();
        wanted.dedup();
        for method in wanted {
            match syscalls::available(method) {
                Ok(()) => settings.methods.push(method),
                Err(why) if method == Method::Strace => {
                    eprintln!(
                        "\n!!! SKIP syscalls column: {why}, run scripts/install-bench-tools.sh !!!\n"
                    );
                    results
                        .syscall_skip
                        .push(format!("strace: {why}; run scripts/install-bench-tools.sh"));
                }
                Err(why) => {
                    eprintln!("note: perf syscall pass skipped: {why}");
                    results.syscall_skip.push(format!("perf: {why}"));
                }
            }
        }
    }
    results.settings["syscall_counters"] = json!(settings
        .methods
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>());
    if !quick {
        eprintln!(
            "echo bench: {} server(s) × {} scenario(s) × {} rep(s), {} s + {} s warm-up per cell; {}",
            servers.len(),
            scenarios.len(),
            settings.reps,
            settings.duration,
            settings.warmup,
            layout.describe
        );
    }

    let plan = plan(&settings, &servers, &scenarios, with_idle);
    execute(&plan, &mut settings, &layout, &mut results);
    if scenario::selected(&cli.scenarios, scaling::NAME) {
        let asked = cli.scenarios.iter().any(|f| f == scaling::NAME);
        match scaling::run(&all_cpus, quick, settings.warmup, settings.duration, asked) {
            Ok(Some(md)) => {
                println!("{md}");
                let path = settings.out.join("scaling.md");
                let written = std::fs::create_dir_all(&settings.out)
                    .and_then(|()| std::fs::write(&path, &md));
                if let Err(e) = written {
                    eprintln!("warning: could not write {}: {e}", path.display());
                }
            }
            Ok(None) => {}
            Err(errors) => results
                .failures
                .extend(errors.into_iter().map(|e| format!("scaling: {e}"))),
        }
    }
    if scenario::selected(&cli.scenarios, instructions::NAME) {
        let out = &settings.out;
        match instructions::run(
            &servers,
            &layout,
            settings.mt_threads,
            quick,
            cli.write_instructions_baseline,
            out,
        ) {
            Ok(Some(o)) => {
                if quick {
                    println!("{}", o.markdown);
                }
                results.instructions_md = o.markdown;
                results.instructions = Some(o.json);
                results.failures.extend(o.failures);
            }
            Ok(None) => {}
            Err(errors) => results.failures.extend(errors),
        }
    }
    finish(&settings, &results)
}

/// Every task of the run, in order.
fn plan(
    s: &Settings,
    servers: &[ServerKind],
    scenarios: &[Scenario],
    with_idle: bool,
) -> Vec<Task> {
    let mut plan = Vec::new();
    for rep in 0..s.reps {
        let mut order = servers.to_vec();
        if !order.is_empty() {
            let n = rep % order.len();
            order.rotate_left(n);
        }
        for &scenario in scenarios {
            for &kind in &order {
                plan.push(Task::Timed {
                    rep,
                    kind,
                    scenario,
                });
            }
        }
        if with_idle {
            for &kind in &order {
                plan.push(Task::Idle { rep, kind });
            }
        }
    }
    for &method in &s.methods {
        for &scenario in scenarios {
            for &kind in servers {
                plan.push(Task::Syscalls {
                    method,
                    kind,
                    scenario,
                });
            }
        }
    }
    plan
}

fn estimate(task: &Task, s: &Settings) -> f64 {
    match task {
        Task::Timed { .. } => s.warmup + s.duration + CELL_OVERHEAD_S,
        Task::Idle { .. } => 0.6 + s.idle_conns as f64 * 80e-6,
        Task::Syscalls { .. } => s.trace_secs + 2.0 * CELL_OVERHEAD_S,
    }
}

fn execute(plan: &[Task], s: &mut Settings, layout: &Layout, results: &mut Results) {
    let mut live: Vec<ServerProc> = Vec::new();
    let mut dead: Vec<ServerKind> = Vec::new();
    for &kind in &results.servers.clone() {
        match ServerProc::start(kind, layout, s.mt_threads) {
            Ok(p) => live.push(p),
            Err(e) => {
                results.failures.push(format!("start: {e}"));
                dead.push(kind);
            }
        }
    }
    let total_est: f64 = plan.iter().map(|t| estimate(t, s)).sum();
    let mut done_est = 0.0;
    let started = Instant::now();
    for (i, task) in plan.iter().enumerate() {
        let label = match task {
            Task::Timed {
                rep,
                kind,
                scenario,
            } => format!("rep {}/{}  {kind:<11} {scenario}", rep + 1, s.reps),
            Task::Idle { rep, kind } => format!(
                "rep {}/{}  {kind:<11} idle memory, {} conns",
                rep + 1,
                s.reps,
                s.idle_conns
            ),
            Task::Syscalls {
                method,
                kind,
                scenario,
            } => format!("{:<10} {kind:<11} {scenario}", method.name()),
        };
        let left = if done_est > 0.0 {
            (total_est - done_est) * started.elapsed().as_secs_f64() / done_est
        } else {
            total_est
        };
        eprintln!(
            "[{:>3}/{}] {label}  (~{}:{:02} left)",
            i + 1,
            plan.len(),
            left as u64 / 60,
            left as u64 % 60
        );
        wait_for_quiet(s);
        run_task(task, s, layout, &mut live, &mut dead, results);
        done_est += estimate(task, s);
    }
    for server in live {
        let kind = server.kind;
        if let Err(e) = server.stop() {
            results.failures.push(format!("stop: {e}"));
        } else if s.quick {
            eprintln!("{kind}: SIGTERM → drained, exit 0");
        }
    }
}

fn run_task(
    task: &Task,
    s: &Settings,
    layout: &Layout,
    live: &mut [ServerProc],
    dead: &mut Vec<ServerKind>,
    results: &mut Results,
) {
    let kind = match task {
        Task::Timed { kind, .. } | Task::Idle { kind, .. } | Task::Syscalls { kind, .. } => *kind,
    };
    if let Task::Idle { .. } = task {
        match idle::run(kind, layout, s.mt_threads, s.idle_conns) {
            Ok(r) => {
                for e in &r.errors {
                    results.failures.push(format!("idle: {kind}: {e}"));
                }
                results.idle.entry(kind).or_default().push(r);
            }
            Err(e) => results.failures.push(format!("idle: {e}")),
        }
        return;
    }
    if dead.contains(&kind) {
        return;
    }
    let Some(server) = live.iter_mut().find(|p| p.kind == kind) else {
        return;
    };
    if !server.is_running() {
        results.failures.push(format!(
            "{kind}: server process died during the run{}",
            server.log_tail()
        ));
        dead.push(kind);
        return;
    }
    match *task {
        Task::Timed { scenario, .. } => match timed(server, &scenario, layout, s) {
            Ok(r) => {
                if r.errors > 0 {
                    results.failures.push(format!(
                        "{kind} {scenario}: {} error(s): {}",
                        r.errors, r.error_detail
                    ));
                }
                results.runs.entry((kind, scenario)).or_default().push(r);
            }
            Err(e) => results.failures.push(format!("{kind} {scenario}: {e}")),
        },
        Task::Syscalls {
            method, scenario, ..
        } => {
            let dir = s.out.join("syscalls");
            let _ = std::fs::create_dir_all(&dir);
            let out = dir.join(format!("{kind}-{}", scenario.name()));
            match syscalls::measure(method, server, &scenario, layout, s.trace_secs, &out) {
                Ok(c) => {
                    results.syscalls.insert((method, kind, scenario), c);
                }
                Err(e) => {
                    eprintln!(
                        "warning: {} syscalls of {kind} {scenario}: {e}",
                        method.name()
                    );
                }
            }
        }
        Task::Idle { .. } => unreachable!("handled above"),
    }
}

/// One timed cell; re-run (up to [`NOISY_RETRIES`] times) while other processes took
/// more than [`NOISY_SHARE`] of a core during the window, keeping the quietest attempt.
fn timed(
    server: &ServerProc,
    scenario: &Scenario,
    layout: &Layout,
    s: &Settings,
) -> Result<load::LoadResult, String> {
    let mut best = load::run(server, scenario, layout, s.warmup, s.duration)?;
    for _ in 0..NOISY_RETRIES {
        let others = best.others_cpu.unwrap_or(0.0);
        if s.quick || others <= NOISY_SHARE || best.errors > 0 {
            break;
        }
        eprintln!(
            "          other processes used {:.0}% of a core during the window; re-running",
            100.0 * others
        );
        let again = load::run(server, scenario, layout, s.warmup, s.duration)?;
        if again.errors > 0 || again.others_cpu.unwrap_or(0.0) < others {
            best = again;
        }
    }
    Ok(best)
}

/// Wait while other processes keep the machine busy (the servers are idle between
/// cells, so what /proc/stat shows busy now is someone else), within the wait budget.
fn wait_for_quiet(s: &mut Settings) {
    let mut told = false;
    while s.wait_budget > 0.0 {
        let Some(others) = busy_share(QUIET_SAMPLE) else {
            return;
        };
        s.wait_budget -= QUIET_SAMPLE.as_secs_f64();
        if others <= NOISY_SHARE {
            return;
        }
        if !told {
            eprintln!(
                "          other processes use {:.0}% of a core; waiting for quiet ({:.0} s of --max-wait left)",
                100.0 * others,
                s.wait_budget.max(0.0)
            );
            told = true;
        }
        std::thread::sleep(Duration::from_secs(1));
        s.wait_budget -= 1.0;
    }
}

/// Busy share of one core, all CPUs together, over `period` (from /proc/stat).
fn busy_share(period: Duration) -> Option<f64> {
    fn busy_ticks() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq
        Some([0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum())
    }
    let before = busy_ticks()?;
    std::thread::sleep(period);
    let after = busy_ticks()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(after.saturating_sub(before) as f64 / hz / period.as_secs_f64())
}

/// Print the report, write the files, decide the exit status.
fn finish(s: &Settings, results: &Results) -> ExitCode {
    if s.quick {
        println!("{}", results.quick_text());
    } else {
        let md = results.markdown();
        println!("{md}");
        match write_reports(s, results, &md) {
            Ok(paths) => eprintln!("reports: {paths}"),
            Err(e) => eprintln!("warning: could not write reports: {e}"),
        }
    }
    if results.failures.is_empty() {
        if s.quick {
            eprintln!("echo bench --quick: every server and scenario ran with 0 errors");
        }
        ExitCode::SUCCESS
    } else {
        eprintln!("\n!!! {} failure(s):", results.failures.len());
        for f in &results.failures {
            eprintln!("  - {f}");
        }
        ExitCode::FAILURE
    }
}

fn write_reports(s: &Settings, results: &Results, md: &str) -> Result<String, String> {
    std::fs::create_dir_all(&s.out).map_err(|e| format!("{}: {e}", s.out.display()))?;
    let json_path = s.out.join("echo.json");
    let md_path = s.out.join("echo.md");
    let svg_path = s.out.join("echo.svg");
    let json = serde_json::to_string_pretty(&results.json()).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, json).map_err(|e| format!("{}: {e}", json_path.display()))?;
    std::fs::write(&md_path, md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    plot::write_svg(results, &svg_path)?;
    Ok(format!(
        "{}, {}, {}",
        json_path.display(),
        md_path.display(),
        svg_path.display()
    ))
}

/// `target/bench-report`, next to the target dir cargo built tcp-reactor into.
fn default_out_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tcp-reactor"));
    bin.parent()
        .and_then(|profile| profile.parent())
        .map(|target| target.join("bench-report"))
        .unwrap_or_else(|| PathBuf::from("target/bench-report"))
}

/// Raise RLIMIT_NOFILE's soft limit to the hard limit (servers inherit it); returns it.
fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}
