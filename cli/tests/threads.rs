//! `--threads N`: N event loops share one listening socket; one signal
//! drains them all, and the process speaks once for all of them.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use util::clients::{total_received, Clients, Plan};
use util::{echo_once, ServerProcess};

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
        // On failure, the server's side of it: every close that was not orderly.
        let unorderly = || {
            let lines = server.log_lines_with(" closed: ");
            let odd: Vec<&String> = lines
                .iter()
                .filter(|l| !l.contains("closed: drained") && !l.contains("closed: peer closed"))
                .collect();
            let cut = server.log_lines_with("linger ended");
            let silent = server.log_lines_with("silent through the drain grace");
            format!("unorderly closes {odd:#?}; lingers cut {cut:#?}; silent {silent:#?}")
        };
        assert!(
            o.error.is_none(),
            "stream {id}: {:?}; {}",
            o.error,
            unorderly()
        );
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

/// Read what `stream` has for us for up to `wait`, adding it to `got`;
/// true once `got` holds all of `msg` (which must be what it holds so far).
fn echoed_within(stream: &mut TcpStream, msg: &[u8], got: &mut Vec<u8>, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0; 64];
    while got.len() < msg.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => panic!("closed by the server after {got:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    assert_eq!(got[..], msg[..got.len()], "echo mismatch");
    got.len() == msg.len()
}

/// A client that connected and sent its message, and what came back so far.
struct Waiting {
    stream: TcpStream,
    msg: Vec<u8>,
    got: Vec<u8>,
}

/// `--threads N --max-conns MAX`: exactly MAX clients are served at once
/// in the whole process; the next MAX wait in the backlog, and each time a
/// served client leaves, exactly one waiting client is served.
fn max_conns_holds_for_the_whole_process(threads: usize, max: usize) {
    let server = ServerProcess::start(&[
        "--threads",
        &threads.to_string(),
        "--max-conns",
        &max.to_string(),
    ]);
    let mut served: Vec<TcpStream> = (0..max)
        .map(|i| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            echo_once(&mut s, format!("served {i}").as_bytes());
            s
        })
        .collect();
    let mut waiting: Vec<Waiting> = (0..max)
        .map(|i| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            let msg = format!("waiting {i}").into_bytes();
            stream.write_all(&msg).unwrap();
            Waiting {
                stream,
                msg,
                got: Vec::new(),
            }
        })
        .collect();
    let none_served =
        |waiting: &mut Vec<Waiting>, open: usize| {
            for w in waiting.iter_mut() {
                assert!(
                !echoed_within(&mut w.stream, &w.msg, &mut w.got, Duration::from_millis(300)),
                "{} served while {open} were open (max-conns {max}, threads {threads}); log:\n{}",
                String::from_utf8_lossy(&w.msg),
                server.log()
            );
            }
        };
    none_served(&mut waiting, max);

    while !waiting.is_empty() {
        let leaving = served.remove(0);
        leaving.shutdown(Shutdown::Both).unwrap();
        drop(leaving);
        // Exactly one waiting client gets in (polled, bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        let next = 'found: loop {
            for (i, w) in waiting.iter_mut().enumerate() {
                if echoed_within(&mut w.stream, &w.msg, &mut w.got, Duration::from_millis(20)) {
                    break 'found i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "a slot freed but no waiting client was served; log:\n{}",
                server.log()
            );
        };
        served.push(waiting.remove(next).stream);
        none_served(&mut waiting, max);
    }
    // The last ones still work.
    for (i, s) in served.iter_mut().enumerate() {
        echo_once(s, format!("again {i}").as_bytes());
    }
}

#[test]
fn max_conns_is_for_the_whole_process_with_two_loops() {
    max_conns_holds_for_the_whole_process(2, 3);
}

#[test]
fn max_conns_is_for_the_whole_process_with_three_loops() {
    max_conns_holds_for_the_whole_process(3, 4);
}
