//! The binary's command-line contract: exit codes and one-line errors.
//!
//! 0 clean shutdown, 1 could not start (bind failed…), 2 bad command line,
//! 3 forced shutdown (tested in `shutdown.rs`).

#[path = "../../tests/util/mod.rs"]
mod util;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use util::{binary, ServerProcess};

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run tcp-reactor");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_flag_is_a_one_line_error_naming_it_and_exit_2() {
    let (code, _, stderr) = run(&["--no-such-flag"]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn a_bad_value_is_a_one_line_error_naming_the_flag_and_exit_2() {
    for args in [
        &["--listen", "localhost"][..],
        &["--drain-timeout", "ten"],
        &["--max-conns", "-5"],
        &["--protocol", "smtp"],
    ] {
        let (code, _, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(args[0]), "{args:?}: {stderr}");
    }
}

#[test]
fn upgrade_timeout_0_is_refused_with_a_one_line_reason_and_exit_2() {
    // Bounded: a binary that took 0 would serve until killed.
    let mut child = Command::new(binary())
        .args(["--listen", "127.0.0.1:0", "--upgrade-timeout", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tcp-reactor");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("--upgrade-timeout 0 was accepted: still serving after 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("collect output");
    let (code, stderr) = (out.status.code(), String::from_utf8_lossy(&out.stderr));
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--upgrade-timeout"), "{stderr}");
}

/// Each event loop holds descriptors of its own (epoll, waker, its copy of
/// the listener): more loops than the limit allows are refused before any
/// is started — not thousands of threads started, then `EMFILE`.
#[test]
fn more_threads_than_the_descriptor_limit_allows_is_refused_up_front_with_exit_2() {
    let mut cmd = Command::new(binary());
    cmd.args(["--listen", "127.0.0.1:0", "--threads", "10000"]);
    util::with_nofile(&mut cmd, 1024);
    let out = cmd.output().expect("run tcp-reactor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--threads 10000"), "{stderr}");
    assert!(stderr.contains("the limit is 1024 (ulimit -n)"), "{stderr}");
    assert!(stderr.contains("at most 330 fit"), "{stderr}");
}

#[test]
fn a_port_in_use_is_a_one_line_error_with_address_and_reason_and_exit_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = run(&["--listen", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_address_we_do_not_own_is_a_one_line_error_and_exit_1() {
    // TEST-NET-1: never assigned to a local interface.
    let (code, _, stderr) = run(&["--listen", "192.0.2.1:9"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("192.0.2.1:9"), "{stderr}");
}

#[test]
fn help_and_version_print_to_stdout_and_exit_0() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for flag in ["--listen", "--drain-timeout", "--protocol", "Exit codes"] {
        assert!(stdout.contains(flag), "--help lacks {flag}:\n{stdout}");
    }
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("tcp-reactor "), "{stdout}");
}

#[test]
fn port_0_logs_the_real_port_and_ipv6_works() {
    let server = ServerProcess::start(&[]);
    assert_ne!(server.addr.port(), 0);
    let first_info = server
        .log()
        .lines()
        .find(|l| l.contains(" INFO "))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        first_info.contains("listening on"),
        "first info line: {first_info}"
    );

    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = ServerProcess::start(&["--listen", "[::1]:0"]);
        assert!(v6.addr.is_ipv6(), "{}", v6.addr);
        let mut s = std::net::TcpStream::connect(v6.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"six").unwrap();
        let mut b = [0; 3];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"six");
    }
}

/// The start-up line shows the `--max-conns` in force, not the one asked
/// for: with `RLIMIT_NOFILE` at 1000 that is 1000 less the 32 reserved and
/// the 3 each loop holds (epoll, waker, its copy of the listener).
#[test]
fn the_startup_line_shows_the_connection_limit_in_force() {
    for (threads, max_conns) in [("1", 965), ("2", 962)] {
        let mut cmd = Command::new(binary());
        cmd.args(["--max-conns", "99999999", "--threads", threads]);
        util::with_nofile(&mut cmd, 1000);
        cmd.args(["--listen", "127.0.0.1:0"]);
        let server = ServerProcess::launch(cmd);
        let line = server.log_lines_with("listening on").remove(0);
        let in_force = format!("max-conns {max_conns},");
        assert!(line.contains(&in_force), "threads {threads}: {line}");
        assert!(!line.contains("99999999"), "threads {threads}: {line}");
        assert_eq!(
            server
                .log_lines_with("above what RLIMIT_NOFILE allows")
                .len(),
            1,
            "threads {threads}: said once:\n{}",
            server.log()
        );
    }
}
