//! `cargo bench --bench echo`: tcp-reactor against tokio and a bare mio loop.
//!
//! One binary, two roles. Run plainly it is the **harness** ([`harness`]): it starts
//! every server as its own process (this binary re-executed with `--serve KIND`, or the
//! real `tcp-reactor`), drives each with the `tcp-reactor-load` generator, and reports.
//! Run with `--serve tokio-ct|tokio-mt|bare-mio --listen ADDR` it is one of the
//! **comparison servers** ([`tokio_echo`], [`bare_mio`]), which follow tcp-reactor's
//! contract: echo every byte in order, print `listening on ADDR` on stderr once bound,
//! drain gracefully on SIGTERM/SIGINT/SIGQUIT and exit 0.
//!
//! See docs/BENCHMARKS.md for what is measured and how to read it.

mod bare_mio;
mod golang;
mod harness;
mod idle;
mod instructions;
mod load;
mod pin;
mod plot;
mod report;
mod scaling;
mod scenario;
mod server;
mod syscalls;
// What the benches build at bench time (the load generator, Go).
#[path = "../common/build.rs"]
mod build;
// The benches' shared helpers (tools, ports, /proc, wrk's durations).
#[allow(dead_code)]
#[path = "../common/sys.rs"]
mod sys;
mod tokio_echo;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

use server::ServerKind;

/// Echo benchmark: tcp-reactor vs tokio current_thread / multi_thread vs a bare mio loop.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
pub struct Cli {
    /// Correctness smoke test: every server and scenario briefly, no timing figures;
    /// exits non-zero on any error (CI runs this).
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of every cell (interleaved); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Warm-up seconds per cell (load runs, nothing counted).
    #[arg(long, default_value_t = 0.5)]
    pub warmup: f64,
    /// Servers to run, comma-separated (tcp-reactor, tokio-ct, tokio-mt, bare-mio, go).
    /// `go` is built with `go build` first, and skipped loudly when Go is not installed.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tcp-reactor,tokio-ct,tokio-mt,bare-mio,go"
    )]
    pub servers: Vec<ServerKind>,
    /// Keep only scenarios whose name contains one of these comma-separated strings,
    /// e.g. `c50-` or `s16K` or `idle` (names: c50-s64-d1, c1000-s16K-d16, idle,
    /// instructions, scaling).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Idle connections opened for the RSS-per-connection scenario.
    #[arg(long, default_value_t = 10_000)]
    pub idle_conns: usize,
    /// Worker threads of tokio-mt (default: the number of CPUs servers are pinned to).
    #[arg(long)]
    pub mt_threads: Option<usize>,
    /// Syscall counters to run, each in its own pass after the timed cells: strace
    /// (`strace -f -c -p PID`, the reference) and perf (kernel tracepoint counters,
    /// near-untraced speed; skipped quietly where unavailable).
    #[arg(long, value_delimiter = ',', default_value = "strace,perf")]
    pub syscalls: Vec<syscalls::Method>,
    /// Skip the syscall passes (syscall columns show `-`).
    #[arg(long)]
    pub no_syscalls: bool,
    /// Seconds of load counted per cell in each syscall pass.
    #[arg(long, default_value_t = 0.5)]
    pub trace_secs: f64,
    /// Seconds the run may spend, in total, waiting before cells while other processes
    /// keep the machine busy. (Independently, a cell during which they used more than a
    /// quarter of a core is re-run up to twice, keeping the quietest attempt.)
    #[arg(long, default_value_t = 120.0)]
    pub max_wait: f64,
    /// Instead of checking tcp-reactor's instructions per message against
    /// benches/echo/instructions-baseline.json, write the measured figure there.
    #[arg(long)]
    pub write_instructions_baseline: bool,
    /// Where the JSON, markdown and SVG reports go (default: target/bench-report).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,

    /// Server mode (internal): run this comparison server instead of the harness.
    #[arg(long, value_name = "KIND", hide = true)]
    pub serve: Option<ServerKind>,
    /// Server mode: address to bind.
    #[arg(long, default_value = "127.0.0.1:0", hide = true)]
    pub listen: SocketAddr,
    /// Server mode: tokio-mt worker threads.
    #[arg(long, default_value_t = 1, hide = true)]
    pub threads: usize,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.serve {
        Some(kind) => serve(kind, &cli),
        None => harness::run(cli),
    }
}

/// Server mode: one comparison server in this process.
fn serve(kind: ServerKind, cli: &Cli) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match kind {
        ServerKind::TokioCt => tokio_echo::serve(cli.listen, tokio_echo::Flavor::CurrentThread),
        ServerKind::TokioMt => {
            tokio_echo::serve(cli.listen, tokio_echo::Flavor::MultiThread(cli.threads))
        }
        ServerKind::BareMio => bare_mio::serve(cli.listen),
        ServerKind::TcpReactor | ServerKind::Go => {
            eprintln!("{kind} is its own binary; --serve runs only the Rust comparison servers");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{kind}: {e}");
            ExitCode::FAILURE
        }
    }
}
