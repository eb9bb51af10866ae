//! Zero-downtime binary upgrade (`SIGUSR2`): a new process takes over the
//! same listening socket, the old one drains and exits 0, and no client —
//! short request/response or long-lived stream — sees an error.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::clients::{Clients, Outcome, Plan};
use util::ServerProcess;

/// Become the reaper of orphaned descendants, so that each old server's
/// exit status (its parent, the previous server, is gone by then) comes
/// to us.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
}

/// Exit code of process `pid` (our child or reparented to us).
fn wait_pid(pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only `status`.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Kills every server generation still alive when the test ends.
struct Generations(Vec<i32>);

impl Drop for Generations {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill with a pid we started (directly or not).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Short connections, 20 at a time, until told to stop: each sends one
/// 1 000-byte request in one write, reads it back, closes.
fn short_load(addr: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<(u64, Vec<Outcome>)> {
    thread::spawn(move || {
        let (mut rounds, mut bad) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let mut clients =
                Clients::connect(addr, 20, Plan::SendThenHalfClose(1000), rounds).fixed_chunk(1000);
            let (outcomes, _) = clients.run(Duration::from_secs(20), |_| {});
            bad.extend(outcomes.into_iter().filter(|o| {
                o.error.is_some() || o.mismatch.is_some() || !o.eof || o.received != 1000
            }));
            rounds += 1;
        }
        (rounds, bad)
    })
}

#[test]
fn three_upgrades_under_load_lose_no_connection_and_no_byte() {
    become_subreaper();
    util::raise_fd_limit();
    let mut server = ServerProcess::start_with(&["--drain-timeout", "30"], |cmd| {
        cmd.env("RUST_LOG", "info");
    });
    let addr = server.addr;
    let mut generations = Generations(vec![server.pid()]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = short_load(addr, Arc::clone(&stop));

    let mut current = server.pid();
    for round in 1..=3 {
        // Long-lived streams on the current process, drained by the upgrade.
        let streams = thread::spawn(move || {
            let mut s = Clients::connect(addr, 10, Plan::StreamUntilEof, 100 + round);
            s.run(Duration::from_secs(60), |_| {})
        });
        thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling a server generation we started.
        assert_eq!(unsafe { libc::kill(current, libc::SIGUSR2) }, 0);

        let ready = "upgrade: new process ";
        let deadline = Instant::now() + Duration::from_secs(15);
        let next: i32 = loop {
            let lines = server.log_lines_with(ready);
            if lines.len() >= round as usize {
                let line = &lines[round as usize - 1];
                if line.contains("is ready") {
                    break line
                        .split(ready)
                        .nth(1)
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                }
            }
            assert!(
                Instant::now() < deadline,
                "upgrade {round} never ready:\n{}",
                server.log()
            );
            thread::sleep(Duration::from_millis(10));
        };
        generations.0.push(next);
        // Both processes log into one journal now: each line says whose it is.
        for pid in [current, next] {
            assert!(
                !server.log_lines_with(&format!(" pid {pid} ")).is_empty(),
                "no line tagged with pid {pid}:\n{}",
                server.log()
            );
        }

        let code = if round == 1 {
            server
                .wait_exit(Duration::from_secs(30))
                .and_then(|s| s.code())
        } else {
            wait_pid(current, Duration::from_secs(30))
        };
        assert_eq!(
            code,
            Some(0),
            "generation {current} exit; log:\n{}",
            server.log()
        );

        let (outcomes, all_done) = streams.join().unwrap();
        assert!(all_done, "round {round}: a stream was never drained");
        for (i, o) in outcomes.iter().enumerate() {
            assert!(o.error.is_none(), "round {round} stream {i}: {:?}", o.error);
            assert!(
                o.mismatch.is_none() && o.eof && o.received > 0,
                "round {round} stream {i}: {o:?}"
            );
        }
        current = next;
    }

    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (rounds, bad) = load.join().unwrap();
    eprintln!(
        "upgrade under load: {} short connections, {} bad",
        rounds * 20,
        bad.len()
    );
    assert!(rounds >= 5, "the load barely ran: {rounds} rounds");
    assert!(bad.is_empty(), "client-visible failures: {bad:?}");

    // The last generation serves, and stops cleanly.
    util::echo_and_close(addr, b"fourth generation");
    // SAFETY: signalling the last generation.
    unsafe { libc::kill(current, libc::SIGTERM) };
    assert_eq!(wait_pid(current, Duration::from_secs(30)), Some(0));
    assert_eq!(
        server.log_lines_with("upgrade failed").len(),
        0,
        "{}",
        server.log()
    );
}

/// A copy of the binary we can replace on disk, as an operator would.
fn binary_copy(tag: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tcp-reactor-upgrade-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tcp-reactor");
    std::fs::copy(util::binary(), &path).unwrap();
    path
}

fn replace_with_script(path: &std::path::Path, script: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, script).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_failed_upgrade_leaves_the_old_process_serving() {
    let path = binary_copy("fails");
    let mut cmd = Command::new(&path);
    cmd.args(["--listen", "127.0.0.1:0"]);
    let mut server = ServerProcess::launch(cmd);
    let stop = Arc::new(AtomicBool::new(false));
    let load = short_load(server.addr, Arc::clone(&stop));

    replace_with_script(&path, "#!/bin/sh\nexit 1\n");
    thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGUSR2);
    let failed = server.wait_for_log("upgrade failed", Duration::from_secs(10));
    assert!(
        failed
            .as_deref()
            .is_some_and(|l| l.contains("exit status: 1")),
        "{failed:?}\n{}",
        server.log()
    );
    thread::sleep(Duration::from_millis(300));

    stop.store(true, Ordering::Relaxed);
    let (rounds, bad) = load.join().unwrap();
    assert!(
        rounds > 0 && bad.is_empty(),
        "{rounds} rounds, failures: {bad:?}"
    );
    util::echo_and_close(server.addr, b"still the old one");
    server.signal(libc::SIGTERM);
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn a_hung_upgrade_times_out_and_a_second_sigusr2_meanwhile_is_ignored() {
    let path = binary_copy("hangs");
    let mut cmd = Command::new(&path);
    cmd.args(["--listen", "127.0.0.1:0", "--upgrade-timeout", "1"]);
    let mut server = ServerProcess::launch(cmd);

    replace_with_script(&path, "#!/bin/sh\nexec sleep 30\n");
    server.signal(libc::SIGUSR2);
    assert!(server
        .wait_for_log("upgrade: started new process", Duration::from_secs(5))
        .is_some());
    server.signal(libc::SIGUSR2);
    assert!(
        server
            .wait_for_log("already in flight; ignored", Duration::from_secs(5))
            .is_some(),
        "{}",
        server.log()
    );
    let timed_out = server.wait_for_log("not ready within", Duration::from_secs(5));
    assert!(timed_out.is_some(), "{}", server.log());
    util::echo_and_close(server.addr, b"old one still serving");
    server.signal(libc::SIGTERM);
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// The address from a `… on http://ADDR/metrics` line.
fn metrics_addr(server: &ServerProcess) -> SocketAddr {
    let line = server
        .wait_for_log("metrics on http://", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no `metrics on` line:\n{}", server.log()));
    line.split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// One `GET /metrics`: the body of a `200 OK`, or what went wrong.
fn scrape(addr: SocketAddr) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e} after {response:?}"))?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200 OK") => Ok(body.to_owned()),
        _ => Err(format!("not a 200: {response:?}")),
    }
}

/// The pid in the `upgrade: new process PID is ready` line of upgrade `round`.
fn wait_ready(server: &ServerProcess, round: usize) -> i32 {
    let ready = "upgrade: new process ";
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lines = server.log_lines_with(ready);
        if let Some(line) = lines.get(round - 1).filter(|l| l.contains("is ready")) {
            return line
                .split(ready)
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|pid| pid.parse().ok())
                .unwrap_or_else(|| panic!("no pid in {line:?}"));
        }
        assert!(
            Instant::now() < deadline,
            "upgrade {round} never ready:\n{}",
            server.log()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// `--metrics` binds an address the old process still holds during the
/// overlap: the metrics listener is handed over like the others. Three
/// upgrades in a row while a client scrapes without pause: each completes
/// (the old process exits 0), and every scrape is answered.
#[test]
fn three_upgrades_with_metrics_hand_the_metrics_socket_over_while_it_is_scraped() {
    become_subreaper();
    let server = ServerProcess::start_with(&["--metrics", "127.0.0.1:0"], |cmd| {
        cmd.env("RUST_LOG", "info");
    });
    let metrics = metrics_addr(&server);
    let mut generations = Generations(vec![server.pid()]);
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let (mut answered, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match scrape(metrics) {
                    Ok(body) if body.contains("tcp_reactor_connections_accepted_total") => {
                        answered += 1
                    }
                    Ok(body) => failed.push(format!("no counters in {body:?}")),
                    Err(e) => failed.push(e),
                }
                thread::sleep(Duration::from_millis(2));
            }
            (answered, failed)
        })
    };

    let mut current = server.pid();
    for round in 1..=3 {
        thread::sleep(Duration::from_millis(200));
        // SAFETY: signalling a server generation we started.
        assert_eq!(unsafe { libc::kill(current, libc::SIGUSR2) }, 0);
        let next = wait_ready(&server, round);
        generations.0.push(next);
        assert_eq!(
            wait_pid(current, Duration::from_secs(30)),
            Some(0),
            "generation {current} exit; log:\n{}",
            server.log()
        );
        current = next;
    }
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = scraper.join().unwrap();
    eprintln!("{answered} scrapes answered over three upgrades");
    assert!(
        failed.is_empty(),
        "{} scrapes failed, the first: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(answered >= 20, "the scraper barely ran: {answered}");
    assert_eq!(
        server.log_lines_with("upgrade failed").len(),
        0,
        "{}",
        server.log()
    );
    // The address now serves the last generation's counters: a fresh
    // process, which has started no upgrade of its own.
    let body = scrape(metrics).expect("a scrape of the last generation");
    assert!(
        body.contains("tcp_reactor_upgrades_total{result=\"started\"} 0\n"),
        "{body}"
    );
    // SAFETY: signalling the last generation.
    unsafe { libc::kill(current, libc::SIGTERM) };
    assert_eq!(wait_pid(current, Duration::from_secs(30)), Some(0));
}

/// `kill -9` of the old process just after `SIGUSR2`, while the new one is
/// still starting (a wrapper that sleeps, then execs the real binary): the
/// new process is no longer the old one's child when it looks, yet it must
/// serve on the sockets it was handed — the listener and the metrics one —
/// since nothing else can. Repeated, the address serves every time.
#[test]
fn the_new_process_serves_on_the_handed_over_sockets_when_the_old_one_is_killed_mid_upgrade() {
    become_subreaper();
    const TRIALS: usize = 4;
    for trial in 0..TRIALS {
        let path = binary_copy(&format!("killed-{trial}"));
        let real = path.with_file_name("tcp-reactor-real");
        std::fs::copy(util::binary(), &real).unwrap();
        let mut cmd = Command::new(&path);
        cmd.args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
        let server = ServerProcess::launch(cmd);
        let metrics = metrics_addr(&server);
        let mut generations = Generations(vec![server.pid()]);
        replace_with_script(
            &path,
            &format!("#!/bin/sh\nsleep 0.3\nexec '{}' \"$@\"\n", real.display()),
        );

        server.signal(libc::SIGUSR2);
        let started = "upgrade: started new process ";
        let line = server
            .wait_for_log(started, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("trial {trial}: no upgrade started:\n{}", server.log()));
        server.signal(libc::SIGKILL); // before the new binary is even running
        let next: i32 = line
            .split(started)
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"));
        generations.0.push(next);

        // Connects meanwhile wait in the socket's queue: answered once the
        // new process is up.
        util::echo_and_close(server.addr, format!("trial {trial}").as_bytes());
        let body = scrape(metrics)
            .unwrap_or_else(|e| panic!("trial {trial}: metrics: {e}\n{}", server.log()));
        assert!(
            body.contains("tcp_reactor_connections_accepted_total 1\n"),
            "{body}"
        );
        assert!(
            server
                .wait_for_log("which is gone", Duration::from_secs(5))
                .is_some(),
            "trial {trial}: the new process did not say its parent was gone:\n{}",
            server.log()
        );
        // SAFETY: signalling the generation we started (through the old one).
        unsafe { libc::kill(next, libc::SIGTERM) };
        assert_eq!(
            wait_pid(next, Duration::from_secs(10)),
            Some(0),
            "trial {trial}:\n{}",
            server.log()
        );
        drop(server);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}

/// Under systemd with `WatchdogSec=`, `WATCHDOG_PID` names the process the
/// pets are expected from: the old one. The upgraded process must not take
/// that to mean "not for me" — it is the main process from its `MAINPID=`
/// on, and without its pets systemd would kill the service once the old
/// one has exited.
#[test]
fn an_upgraded_process_pets_the_systemd_watchdog() {
    use std::os::unix::net::UnixDatagram;
    become_subreaper();
    let path =
        std::env::temp_dir().join(format!("tcp-reactor-upgrade-notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let recv_until = |needle: &str, timeout: Duration| -> Vec<String> {
        let (deadline, mut buf, mut seen) = (Instant::now() + timeout, [0u8; 4096], Vec::new());
        while Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                if seen.last().is_some_and(|m| m.contains(needle)) {
                    break;
                }
            }
        }
        seen
    };
    // systemd sets WATCHDOG_PID to the main pid: `exec` keeps the shell's.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", util::binary()])
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000");
    let mut server = ServerProcess::launch(cmd);
    let mut generations = Generations(vec![server.pid()]);
    let seen = recv_until("WATCHDOG=1", Duration::from_secs(5));
    assert!(seen.iter().any(|m| m.contains("WATCHDOG=1")), "{seen:?}");

    server.signal(libc::SIGUSR2);
    let next = wait_ready(&server, 1);
    generations.0.push(next);
    assert_eq!(
        server
            .wait_exit(Duration::from_secs(30))
            .and_then(|s| s.code()),
        Some(0),
        "{}",
        server.log()
    );
    let _ = recv_until("no such message", Duration::from_millis(100)); // what the old one sent
    let seen = recv_until("WATCHDOG=1", Duration::from_secs(2));
    assert!(
        seen.iter().any(|m| m.contains("WATCHDOG=1")),
        "no pet from the new process {next} once the old one exited: {seen:?}\n{}",
        server.log()
    );
    // SAFETY: signalling the generation we started (through the old one).
    unsafe { libc::kill(next, libc::SIGTERM) };
    assert_eq!(wait_pid(next, Duration::from_secs(10)), Some(0));
    let _ = std::fs::remove_file(&path);
}
