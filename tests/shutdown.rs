//! Graceful shutdown of the real binary, the way an operator triggers it.
//!
//! On SIGINT, SIGTERM or SIGQUIT the server stops accepting at once, echoes
//! everything it has read, half-closes, lingers until each peer's FIN, runs
//! every connection's cleanup, logs `All done.` and exits 0.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use util::clients::{total_received, Clients, Plan};
use util::ServerProcess;

const STREAMERS: usize = 100;

/// Every streaming client got a prefix of what it sent and then a clean
/// EOF (not a reset); a connect during the drain is refused; exit code 0.
fn streaming_clients_are_drained_cleanly_on(signal: i32, name: &str) {
    let mut server = ServerProcess::start(&[]);

    // One quiet client that holds the drain open (the server lingers for
    // its FIN) while we check that new connections are refused.
    let mut quiet = TcpStream::connect(server.addr).unwrap();
    quiet
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    quiet.write_all(b"ping").unwrap();
    let mut four = [0; 4];
    quiet.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"ping");

    let mut clients = Clients::connect(server.addr, STREAMERS, Plan::StreamUntilEof, 3);
    let mut signalled = false;
    let (outcomes, all_done) = clients.run(Duration::from_secs(30), |outcomes| {
        // Signal once every client has had real traffic echoed.
        if !signalled && outcomes.iter().all(|o| o.received >= 32 * 1024) {
            server.signal(signal);
            signalled = true;
        }
    });
    assert!(
        signalled,
        "clients never got going: {} B echoed",
        total_received(&outcomes)
    );
    assert!(all_done, "not every client saw the end of the stream");
    for (id, o) in outcomes.iter().enumerate() {
        assert!(
            o.error.is_none(),
            "client {id}: {:?} (a reset is a failed drain)",
            o.error
        );
        assert!(
            o.mismatch.is_none(),
            "client {id}: wrong byte at {:?}",
            o.mismatch
        );
        assert!(o.eof, "client {id}: no clean EOF");
        assert!(o.received <= o.sent, "client {id}: more back than sent");
    }

    let line = server.wait_for_log("recv quit signal", Duration::from_secs(5));
    assert!(
        line.as_deref().is_some_and(|l| l.contains(name)),
        "{line:?}"
    );
    // Once every loop has let go of the listening socket, connects are refused.
    let stopped = server.wait_for_log("stopped accepting on", Duration::from_secs(5));
    assert!(stopped.is_some(), "log:\n{}", server.log());
    let refused = TcpStream::connect(server.addr)
        .map(|_| ())
        .map_err(|e| e.kind());
    assert_eq!(
        refused,
        Err(ErrorKind::ConnectionRefused),
        "connect during the drain"
    );

    // The quiet client is drained too: it gets its FIN, we send ours.
    let mut rest = Vec::new();
    quiet.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(quiet);

    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("server exits");
    let log = server.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(log.contains("All done."), "log:\n{log}");
    for line in server.log_lines_with("drained in ") {
        let took = line
            .split("drained in ")
            .nth(1)
            .and_then(|r| r.split(':').next());
        assert!(
            took.is_some_and(reads_as_a_duration),
            "not a duration a person reads: {line}"
        );
    }
    let done = server.log_lines_with("handler done.").len();
    assert_eq!(done, STREAMERS + 1, "one `handler done` per connection");
}

#[test]
fn sigterm_drains_streaming_clients_and_exits_0() {
    streaming_clients_are_drained_cleanly_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_drains_streaming_clients_and_exits_0() {
    streaming_clients_are_drained_cleanly_on(libc::SIGINT, "SIGINT");
}

#[test]
fn sigquit_drains_streaming_clients_and_exits_0() {
    streaming_clients_are_drained_cleanly_on(libc::SIGQUIT, "SIGQUIT");
}

/// A client that sends without ever reading fills both socket buffers, so
/// the server can never flush what it owes it.
fn stuck_client(server: &ServerProcess) -> TcpStream {
    let stuck = TcpStream::connect(server.addr).unwrap();
    stuck.set_nonblocking(true).unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    let mut full_for = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while full_for < 20 && Instant::now() < deadline {
        match (&stuck).write(&chunk) {
            Ok(_) => full_for = 0,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                full_for += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("stuck client write: {e}"),
        }
    }
    assert!(full_for >= 20, "the buffers never filled");
    stuck
}

#[test]
fn the_drain_deadline_force_closes_a_client_that_never_reads() {
    let mut server = ServerProcess::start(&["--drain-timeout", "1"]);
    let _stuck = stuck_client(&server);

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("server exits");
    let took = signalled.elapsed();
    let log = server.log();
    assert_eq!(
        status.code(),
        Some(3),
        "forced shutdown exit code; log:\n{log}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "left before the deadline: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "deadline overshot: {took:?}");
    // Sentences, not debug dumps: one connection, a readable deadline.
    let forcing = server.log_lines_with("force-closing");
    assert!(
        forcing.len() == 1 && forcing[0].ends_with("force-closing 1 connection"),
        "log:\n{log}"
    );
    assert!(
        log.contains("draining 1 connection (deadline 1.0 s)"),
        "log:\n{log}"
    );
    assert!(
        log.contains("closed: forced: drain deadline passed"),
        "log:\n{log}"
    );
    assert_eq!(
        server.log_lines_with("handler done.").len(),
        1,
        "cleanup ran once"
    );
    assert!(log.contains("All done."), "log:\n{log}");
}

#[test]
fn a_second_signal_during_the_drain_forces_exit_at_once() {
    let mut server = ServerProcess::start(&["--drain-timeout", "60"]);
    let _stuck = stuck_client(&server);

    server.signal(libc::SIGTERM);
    assert!(server
        .wait_for_log("recv quit signal", Duration::from_secs(5))
        .is_some());
    let second = Instant::now();
    server.signal(libc::SIGINT);
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("server exits");
    let log = server.log();
    assert!(second.elapsed() < Duration::from_secs(2), "not at once");
    assert_eq!(status.code(), Some(3), "log:\n{log}");
    assert!(
        log.contains("recv quit signal again (SIGINT)"),
        "log:\n{log}"
    );
    assert!(
        log.contains("closed: forced: second quit signal"),
        "log:\n{log}"
    );
    assert_eq!(server.log_lines_with("handler done.").len(), 1);
}

/// `250 µs`, `1.2 ms`, `3 s`: a number and a unit, as `tcp_reactor::human::Dur`
/// prints it; not `1.234567ms` or `0ns`.
fn reads_as_a_duration(text: &str) -> bool {
    match text.split_once(' ') {
        Some(("<", "1 µs")) => true,
        Some((number, unit)) => {
            ["µs", "ms", "s"].contains(&unit)
                && number.parse::<f64>().is_ok()
                && number.split('.').nth(1).map_or(true, |d| d.len() == 1)
        }
        None => false,
    }
}
