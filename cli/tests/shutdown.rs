//! Graceful shutdown of the real binary, the way an operator triggers it.
//!
//! On SIGINT, SIGTERM or SIGQUIT the server stops accepting at once, echoes
//! everything it has read, half-closes, lingers until each peer's FIN, runs
//! every connection's cleanup, logs `All done.` and exits 0.

#[path = "../../tests/util/mod.rs"]
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

/// `250 µs`, `1.2 ms`, `3 s`: a number and a unit, as `tcp_reactor::base::human::Dur`
/// prints it; not `1.234567ms` or `0ns`.
fn reads_as_a_duration(text: &str) -> bool {
    match text.split_once(' ') {
        Some(("<", "1 µs")) => true,
        Some((number, unit)) => {
            ["µs", "ms", "s"].contains(&unit)
                && number.parse::<f64>().is_ok()
                && number.split('.').nth(1).is_none_or(|d| d.len() == 1)
        }
        None => false,
    }
}

/// Start the binary with `signal` blocked and send it at once: the signal
/// is pending from the first instruction of the new program on, i.e. it
/// arrives at the earliest moment there is. (Unblocked, a signal sent
/// within ~1 ms of exec lands in the dynamic loader, before any code of
/// ours runs, and nothing can catch it there.)
fn quit_at_exec(signal: i32) -> ServerProcess {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(util::binary());
    cmd.args(["--listen", "127.0.0.1:0"]);
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions on a local sigset_t.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
                0 => Ok(()),
                errno => Err(std::io::Error::from_raw_os_error(errno)),
            }
        });
    }
    let server = ServerProcess::spawn(cmd);
    server.signal(signal);
    server
}

#[test]
fn a_quit_signal_at_exec_ends_the_process_cleanly_every_time() {
    for (signal, name) in [
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
    ] {
        for attempt in 0..10 {
            let mut server = quit_at_exec(signal);
            let status = server.wait_exit(Duration::from_secs(10));
            let log = server.log();
            let status = status.unwrap_or_else(|| {
                panic!("{name} #{attempt}: still running 10 s after the signal; log:\n{log}")
            });
            assert_eq!(
                status.code(),
                Some(0),
                "{name} #{attempt}: {status} (not a clean exit); log:\n{log}"
            );
            assert_eq!(
                server
                    .log_lines_with(&format!("recv quit signal ({name})"))
                    .len(),
                1,
                "{name} #{attempt}: log:\n{log}"
            );
            assert!(log.contains("All done."), "{name} #{attempt}: log:\n{log}");
        }
    }
}

/// A pipe whose buffer is already full: (read end, write end).
fn full_pipe() -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fresh descriptors into `fds`, which we own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&write);
    // SAFETY: fcntl on a descriptor we own; the flags are restored below.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    let chunk = [b'#'; 4096];
    let mut file = std::fs::File::from(write);
    while file.write(&chunk).is_ok() {}
    unsafe { libc::fcntl(raw, libc::F_SETFL, flags) };
    (read, file.into())
}

/// Start the binary with its stderr a full pipe, so start-up stops at its
/// first log line (before it binds or starts a thread); send `signal`
/// while it is stuck there, then let it go on.
fn quit_during_startup(signal: i32) -> (std::process::ExitStatus, String) {
    let (mut read, write) = full_pipe();
    let mut cmd = std::process::Command::new(util::binary());
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(write));
    let mut child = cmd.spawn().expect("spawn tcp-reactor");
    drop(cmd); // our copy of the write end
    let wchan = format!("/proc/{}/wchan", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("pipe_write")) {
        assert!(
            Instant::now() < deadline,
            "never blocked writing its log ({wchan})"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: kill(2) on our own child with a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let _ = read.read_to_end(&mut log); // EOF when the child exits
        String::from_utf8_lossy(&log)
            .trim_start_matches('#')
            .to_owned()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("still running 10 s after the signal");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status, reader.join().expect("log reader"))
}

#[test]
fn a_quit_signal_during_startup_is_handled_not_fatal() {
    for (signal, name) in [
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
    ] {
        let (status, log) = quit_during_startup(signal);
        assert_eq!(
            status.code(),
            Some(0),
            "{name} during start-up: {status}; log:\n{log}"
        );
        let quit = format!("recv quit signal ({name})");
        assert_eq!(log.matches(&quit).count(), 1, "{name}: log:\n{log}");
        assert!(log.contains("All done."), "{name}: log:\n{log}");
    }
}

/// `--drain-timeout 0` is no limit: with nothing open the drain is over at
/// once and clean (exit 0, not 3: nothing was cut off), on one loop or two.
#[test]
fn drain_timeout_0_with_nothing_open_exits_0() {
    for threads in ["1", "2"] {
        let mut server = ServerProcess::start(&["--drain-timeout", "0", "--threads", threads]);
        server.signal(libc::SIGTERM);
        let status = server.wait_exit(Duration::from_secs(10)).expect("exits");
        let log = server.log();
        assert_eq!(status.code(), Some(0), "threads {threads}: log:\n{log}");
        assert!(
            !log.contains("force-closing"),
            "threads {threads}: log:\n{log}"
        );
        assert!(log.contains("All done."), "threads {threads}: log:\n{log}");
    }
}

/// `--drain-timeout 0` is no limit: a client that never reads holds the
/// drain open (no deadline cuts it) until a second signal forces it: exit 3.
#[test]
fn drain_timeout_0_waits_for_a_stuck_client_until_a_second_signal() {
    let mut server = ServerProcess::start(&["--drain-timeout", "0"]);
    let _stuck = stuck_client(&server);
    server.signal(libc::SIGTERM);
    assert!(
        server
            .wait_for_log(
                "draining 1 connection (deadline off)",
                Duration::from_secs(5)
            )
            .is_some(),
        "log:\n{}",
        server.log()
    );
    let early = server.wait_exit(Duration::from_secs(1));
    assert!(
        early.is_none(),
        "exited ({early:?}) with a connection still draining; log:\n{}",
        server.log()
    );
    server.signal(libc::SIGINT);
    let status = server.wait_exit(Duration::from_secs(10)).expect("exits");
    let log = server.log();
    assert_eq!(status.code(), Some(3), "log:\n{log}");
    assert!(log.contains("force-closing 1 connection"), "log:\n{log}");
}
