//! `RUST_LOG=trace` on one connection reads like a lesson: the poll and its
//! wait, every event by name, timers armed and fired, each read and write
//! with its size and why it stopped, the FIN, every state change through
//! to closed, and the cleanup. No raw tokens, no raw `Instant`s.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use util::ServerProcess;

/// The message of each log line (after `] `).
fn messages(log: &str) -> Vec<String> {
    log.lines()
        .map(|l| l.split_once("] ").map_or(l, |(_, m)| m).to_owned())
        .collect()
}

/// Assert `wanted` appear in `lines` in this order (other lines between).
fn assert_in_order(lines: &[String], wanted: &[&str]) {
    let mut at = 0;
    for want in wanted {
        match lines[at..].iter().position(|l| l.contains(want)) {
            Some(i) => at += i + 1,
            None => panic!(
                "no line containing {want:?} after line {at}; the trace:\n{}",
                lines.join("\n")
            ),
        }
    }
}

/// Nothing only a maintainer understands.
fn assert_readable(log: &str) {
    for raw in ["Token(", "Instant {", "tv_sec", "tv_nsec"] {
        assert!(!log.contains(raw), "trace shows {raw}:\n{log}");
    }
}

#[test]
fn one_echo_connection_through_a_drain_reads_as_a_lesson() {
    let mut server = ServerProcess::start_with(&[], |cmd| {
        cmd.env("RUST_LOG", "trace");
    });
    let mut client = util::connect(server.addr);
    util::echo_once(&mut client, b"hello\n");
    server.signal(libc::SIGTERM);
    // The drain answers what was read, then sends our FIN: we read EOF.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("read to our FIN");
    assert!(rest.is_empty());
    client
        .shutdown(Shutdown::Write)
        .expect("send the client's FIN");
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)).map(|s| s.code()),
        Some(Some(0))
    );
    let log = server.log();
    assert_readable(&log);
    assert_in_order(
        &messages(&log),
        &["recv quit signal (SIGTERM)", "waker event", "All done."],
    );
    assert_in_order(
        &messages(&log),
        &[
            "poll: 1 event after",
            "listener 0 event: readable",
            "conn 0 accepted from",
            "conn 0 timer armed: idle timeout in",
            "poll: 1 event after",
            "conn 0 event: readable",
            "conn 0 read 6 B (short read: drained)",
            "conn 0 wrote 6 of 6 B",
            // The supervisor's `recv quit signal` line comes from another
            // thread: it may print before the loop's line above.
            "waker event",
            "draining 1 connection",
            "conn 0 Open => Flushing (drained)",
            "conn 0 all owed bytes written: FIN sent",
            "conn 0 Flushing (drained) => Lingering (drained)",
            "conn 0 timer armed: linger in",
            "conn 0 event: readable",
            "conn 0 read EOF",
            "conn 0 Lingering (drained) => closed",
            "conn 0 socket closed and removed from the poller",
            "closed: drained (in 6 B, out 6 B,",
            "handler done.",
            "All done.",
        ],
    );
}

#[test]
fn a_peer_that_closes_first_and_an_idle_timer_show_in_the_trace() {
    let mut server = ServerProcess::start_with(&["--idle-timeout", "0.2"], |cmd| {
        cmd.env("RUST_LOG", "trace");
    });
    // One client half-closes after its message...
    let mut first = util::connect(server.addr);
    first.write_all(b"bye\n").expect("write");
    first.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    first.read_to_end(&mut back).expect("read to EOF");
    assert_eq!(back, b"bye\n");
    // ...another says nothing until the idle timer fires.
    let mut idle = util::connect(server.addr);
    let mut nothing = Vec::new();
    idle.read_to_end(&mut nothing)
        .expect("closed by the idle timeout");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let log = server.log();
    assert_readable(&log);
    let lines = messages(&log);
    assert_in_order(
        &lines,
        &[
            "conn 0 read 4 B",
            "conn 0 wrote 4 of 4 B",
            "conn 0 read EOF",
            "conn 0 Open => Flushing (peer closed, peer done)",
            "conn 0 all owed bytes written and the peer is done: closing",
            "conn 0 Flushing (peer closed, peer done) => closed",
            "closed: peer closed",
        ],
    );
    assert_in_order(
        &lines,
        &[
            "conn 0 accepted from",
            "conn 0 timer armed: idle timeout in",
            "conn 0 timer fired",
            "conn 0 Open => closed",
            "closed: idle timeout",
        ],
    );
}

#[test]
fn with_several_loops_each_line_names_its_loop() {
    let mut server = ServerProcess::start_with(&["--threads", "2"], |cmd| {
        cmd.env("RUST_LOG", "trace");
    });
    util::echo_and_close(server.addr, b"hi\n");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let log = server.log();
    assert_readable(&log);
    let lines = messages(&log);
    let conn_lines: Vec<&String> = lines.iter().filter(|l| l.contains(" conn 0 ")).collect();
    assert!(!conn_lines.is_empty(), "{log}");
    for line in &conn_lines {
        assert!(
            line.starts_with("loop 0 conn 0") || line.starts_with("loop 1 conn 0"),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("loop 0: poll: ")),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("loop 1: poll: ")),
        "{log}"
    );
}

#[test]
fn a_tls_handshake_timer_is_named_in_the_trace() {
    let certs = util::tls::Certs::new();
    let mut args: Vec<String> = certs.args().to_vec();
    args.extend(["--tls-handshake-timeout", "0.2"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = ServerProcess::start_with(&args, |cmd| {
        cmd.env("RUST_LOG", "trace");
    });
    // A client that never starts its handshake.
    let mut silent = util::connect(server.addr);
    let mut nothing = Vec::new();
    let _ = silent.read_to_end(&mut nothing);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let log = server.log();
    assert_readable(&log);
    assert_in_order(
        &messages(&log),
        &[
            "conn 0 accepted from",
            // The armed deadline is the handshake's (0.2 s), not the idle
            // timeout's, and the trace says so.
            "conn 0 timer armed: TLS handshake timeout in",
            "conn 0 timer fired",
            "closed: protocol error: TLS handshake not finished in time",
        ],
    );
}
