//! `--threads N`: N event loops share one listening socket; one signal
//! drains them all, and the process speaks once for all of them.

mod util;

use std::time::Duration;

use util::clients::{total_received, Clients, Plan};
use util::ServerProcess;

/// `loop N: drained in …: open 0, accepted A, …` → (N, A).
fn accepted_per_loop(log: &str) -> Vec<(usize, u64)> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("loop ")? + 5..];
            let (id, rest) = rest.split_once(": drained in")?;
            let accepted = rest.split("accepted ").nth(1)?.split(',').next()?;
            Some((id.parse().ok()?, accepted.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn two_loops_echo_a_thousand_clients_and_drain_together_on_sigterm() {
    util::raise_fd_limit();
    let mut server = ServerProcess::start(&["--threads", "2"]);
    let log = server.log();
    assert!(log.contains("threads 2"), "{log}");

    // 1 000 clients echo byte-exact.
    let mut clients = Clients::connect(server.addr, 1000, Plan::SendThenHalfClose(16 * 1024), 5);
    let (outcomes, all_done) = clients.run(Duration::from_secs(60), |_| {});
    assert!(all_done);
    for (id, o) in outcomes.iter().enumerate() {
        assert!(
            o.error.is_none() && o.mismatch.is_none() && o.eof,
            "client {id}: {o:?}"
        );
        assert_eq!(o.received, 16 * 1024);
    }

    // 100 streaming clients, then SIGTERM: prefixes and clean EOFs.
    let mut streams = Clients::connect(server.addr, 100, Plan::StreamUntilEof, 6);
    let mut signalled = false;
    let (outcomes, all_done) = streams.run(Duration::from_secs(30), |o| {
        if !signalled && o.iter().all(|o| o.received >= 16 * 1024) {
            server.signal(libc::SIGTERM);
            signalled = true;
        }
    });
    assert!(
        signalled,
        "streams never got going: {}",
        total_received(&outcomes)
    );
    assert!(all_done);
    for (id, o) in outcomes.iter().enumerate() {
        assert!(o.error.is_none(), "stream {id}: {:?}", o.error);
        assert!(
            o.mismatch.is_none() && o.eof && o.received <= o.sent,
            "stream {id}: {o:?}"
        );
    }

    let status = server.wait_exit(Duration::from_secs(15)).expect("exits");
    let log = server.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(server.log_lines_with("recv quit signal").len(), 1, "{log}");
    assert_eq!(server.log_lines_with("All done.").len(), 1, "{log}");

    // Each connection line says which loop it belongs to: two loops each
    // have a `conn 0`, and a reader must be able to tell them apart.
    let accepted = server.log_lines_with(" accepted from ");
    assert_eq!(accepted.len(), 1100, "{log}");
    for line in &accepted {
        assert!(
            line.contains("] loop 0 conn ") || line.contains("] loop 1 conn "),
            "connection line without its loop: {line}"
        );
    }

    let per_loop = accepted_per_loop(&log);
    eprintln!("connections per loop: {per_loop:?}");
    assert_eq!(per_loop.len(), 2, "{log}");
    assert_eq!(per_loop.iter().map(|(_, n)| n).sum::<u64>(), 1100);
    assert!(
        per_loop.iter().all(|&(_, n)| n > 0),
        "a loop got nothing: {per_loop:?}"
    );
}

#[test]
fn sigusr1_adds_up_the_counters_of_every_loop() {
    let server = ServerProcess::start(&["--threads", "3"]);
    let mut clients = Clients::connect(server.addr, 30, Plan::SendThenHalfClose(100), 2);
    let (_, all_done) = clients.run(Duration::from_secs(20), |_| {});
    assert!(all_done);
    std::thread::sleep(Duration::from_millis(100));
    server.signal(libc::SIGUSR1);
    let line = server
        .wait_for_log("stats: ", Duration::from_secs(5))
        .expect("stats line");
    assert!(line.contains("accepted 30, closed ok 30"), "{line}");
    assert!(line.contains("bytes in 3000 out 3000"), "{line}");
    assert_eq!(
        server.log_lines_with("stats: ").len(),
        1,
        "one line for the process"
    );
}
