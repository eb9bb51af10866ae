//! `tcp-reactor-load --messages N`: a fixed amount of work, which the echo bench's
//! instruction counts (callgrind) need: every connection completes exactly N echoes,
//! then closes cleanly, and the generator exits 0.

mod util;

use std::process::Command;
use std::time::Duration;

use util::ServerProcess;

const LOAD: &str = env!("CARGO_BIN_EXE_tcp-reactor-load");

/// Run the generator against `server` with `args`; (exit code, its JSON line).
fn load(server: &ServerProcess, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(LOAD)
        .arg(server.addr.to_string())
        .args(args)
        .args(["--json", "--drain-timeout", "10"])
        .output()
        .expect("run tcp-reactor-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), serde_json::from_str(line).expect("JSON"))
}

fn stop(mut server: ServerProcess) {
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", server.log());
}

#[test]
fn messages_makes_every_connection_complete_exactly_that_many_echoes() {
    let server = ServerProcess::start(&[]);
    let (code, report) = load(
        &server,
        &["-c", "3", "-s", "100", "-d", "2", "--messages", "7"],
    );
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["msgs"], 21, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    stop(server);
}

#[test]
fn messages_below_the_depth_issues_only_that_many() {
    let server = ServerProcess::start(&[]);
    let (code, report) = load(&server, &["-c", "2", "-d", "4", "--messages", "3"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["msgs"], 6, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    stop(server);
}
