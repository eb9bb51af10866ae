//! The `tcp-reactor` binary: parse flags, start logging, run the server,
//! turn the outcome into an exit code. Everything else is in the library.

use std::io::Write;
use std::process::ExitCode;

use tcp_reactor::cli::{self, ProtocolName};
use tcp_reactor::{proto::Echo, Server};

fn main() -> ExitCode {
    let invocation = match cli::parse(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(exit) => {
            if exit.stdout {
                print!("{}", exit.message);
                let _ = std::io::stdout().flush();
            } else {
                eprintln!("tcp-reactor: {}", exit.message);
            }
            return ExitCode::from(exit.code);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Some(limit) = tcp_reactor::rlimit::raise_nofile() {
        log::debug!("RLIMIT_NOFILE soft limit: {limit}");
    }
    let run = match invocation.protocol {
        ProtocolName::Echo => Server::bind(invocation.config, || Echo).and_then(Server::run),
    };
    match run {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("tcp-reactor: error: {e}");
            ExitCode::from(1)
        }
    }
}
