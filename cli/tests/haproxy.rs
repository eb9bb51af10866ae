//! A real HAProxy (deploy/haproxy/haproxy.cfg, as shipped) in front of two
//! tcp-reactor backends speaking PROXY v2 (and v1): byte-exact echo,
//! clients' own addresses in the backends' logs, and rolling restarts that
//! no client sees.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::clients::{Clients, Outcome, Plan};
use util::{tools, ServerProcess};

/// Clients connect from here; HAProxy connects to the backends from 127.0.0.1.
const CLIENT_IP: [u8; 4] = [127, 0, 0, 2];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Haproxy {
    /// Killed on drop; what it printed is shown only if the test fails.
    _child: tools::Captured,
    front: SocketAddr,
    _dir: std::path::PathBuf,
}

impl Haproxy {
    /// Run deploy/haproxy/haproxy.cfg with our ports (and `proxy_kw` for
    /// `send-proxy-v2`), and wait until its frontend accepts.
    fn start(a: u16, b: u16, proxy_kw: &str) -> Self {
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/haproxy/haproxy.cfg"
        ))
        .unwrap();
        let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let cfg = shipped
            .replace("127.0.0.1:9000", &front.to_string())
            .replace("127.0.0.1:8001", &format!("127.0.0.1:{a}"))
            .replace("127.0.0.1:8002", &format!("127.0.0.1:{b}"))
            .replace("send-proxy-v2", proxy_kw);
        let dir =
            std::env::temp_dir().join(format!("tcp-reactor-haproxy-{}-{a}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let mut cmd = Command::new("haproxy");
        cmd.args(["-db", "-f"]).arg(&path);
        let child = tools::Captured::spawn("haproxy", cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(front).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy never listened on {front}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Haproxy {
            _child: child,
            front,
            _dir: dir,
        }
    }
}

fn backend(port: u16, version: &str) -> ServerProcess {
    let listen = format!("127.0.0.1:{port}");
    ServerProcess::start(&[
        "--listen",
        &listen,
        "--proxy-protocol",
        version,
        "--drain-timeout",
        "30",
    ])
}

fn all_clean(outcomes: &[Outcome], each: u64) -> Result<(), String> {
    for (i, o) in outcomes.iter().enumerate() {
        if o.error.is_some() || o.mismatch.is_some() || !o.eof || o.received != each {
            return Err(format!("client {i}: {o:?}"));
        }
    }
    Ok(())
}

fn echo_through_haproxy(version: &str, proxy_kw: &str) {
    if !tools::require("haproxy") {
        return;
    }
    util::raise_fd_limit();
    let (pa, pb) = (free_port(), free_port());
    let (a, b) = (backend(pa, version), backend(pb, version));
    let haproxy = Haproxy::start(pa, pb, proxy_kw);
    let from = Some(IpAddr::from(CLIENT_IP));
    let mut clients = Clients::connect_from(
        from,
        haproxy.front,
        200,
        Plan::SendThenHalfClose(64 * 1024),
        1,
    );
    let (outcomes, all_done) = clients.run(Duration::from_secs(60), |_| {});
    assert!(all_done);
    all_clean(&outcomes, 64 * 1024).unwrap();

    for (name, server) in [("a", &a), ("b", &b)] {
        let proxied = server.log_lines_with("PROXY header: client 127.0.0.2:");
        assert!(
            !proxied.is_empty(),
            "backend {name} served no client:\n{}",
            server.log()
        );
        let closed = server.log_lines_with("127.0.0.2:");
        assert!(
            closed.iter().any(|l| l.contains("handler done.")),
            "backend {name} logs HAProxy's address"
        );
    }
    let total: usize = [&a, &b]
        .iter()
        .map(|s| s.log_lines_with("PROXY header: client 127.0.0.2:").len())
        .sum();
    assert_eq!(total, 200, "every client's own address reached a backend");
}

#[test]
fn echo_through_haproxy_with_proxy_v2_is_byte_exact_and_backends_see_clients() {
    echo_through_haproxy("v2", "send-proxy-v2");
}

#[test]
fn echo_through_haproxy_with_proxy_v1_is_byte_exact_and_backends_see_clients() {
    echo_through_haproxy("v1", "send-proxy");
}

/// Short request/response connections, 20 at a time, until told to stop.
fn short_load(front: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<(u64, Vec<Outcome>)> {
    thread::spawn(move || {
        let (mut rounds, mut bad) = (0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let from = Some(IpAddr::from(CLIENT_IP));
            let mut c =
                Clients::connect_from(from, front, 20, Plan::SendThenHalfClose(1000), rounds)
                    .fixed_chunk(1000);
            let (outcomes, _) = c.run(Duration::from_secs(20), |_| {});
            bad.extend(
                outcomes
                    .into_iter()
                    .filter(|o| all_clean(std::slice::from_ref(o), 1000).is_err()),
            );
            rounds += 1;
        }
        (rounds, bad)
    })
}

fn rolling_restart(version: &str, proxy_kw: &str) {
    if !tools::require("haproxy") {
        return;
    }
    util::raise_fd_limit();
    let (pa, pb) = (free_port(), free_port());
    let mut backends = [backend(pa, version), backend(pb, version)];
    let haproxy = Haproxy::start(pa, pb, proxy_kw);
    let front = haproxy.front;
    thread::sleep(Duration::from_millis(500)); // both checked UP

    let streams = thread::spawn(move || {
        let from = Some(IpAddr::from(CLIENT_IP));
        let mut s = Clients::connect_from(from, front, 10, Plan::StreamUntilEof, 77);
        s.run(Duration::from_secs(90), |_| {})
    });
    let stop = Arc::new(AtomicBool::new(false));
    let load = short_load(front, Arc::clone(&stop));
    thread::sleep(Duration::from_millis(500));

    for (i, port) in [(0, pa), (1, pb)] {
        backends[i].signal(libc::SIGTERM);
        let status = backends[i]
            .wait_exit(Duration::from_secs(30))
            .expect("backend exits");
        assert_eq!(
            status.code(),
            Some(0),
            "backend {i} drain:\n{}",
            backends[i].log()
        );
        backends[i] = backend(port, version); // a new one on the same port
        thread::sleep(Duration::from_millis(1000)); // checked UP again
    }

    stop.store(true, Ordering::Relaxed);
    let (rounds, bad) = load.join().unwrap();
    eprintln!(
        "rolling restart ({version}): {} short connections, {} bad",
        rounds * 20,
        bad.len()
    );
    assert!(rounds >= 5, "the load barely ran: {rounds} rounds");
    assert!(bad.is_empty(), "client-visible failures: {bad:?}");

    let (outcomes, all_done) = streams.join().unwrap();
    assert!(all_done, "a long-lived stream never ended");
    for (i, o) in outcomes.iter().enumerate() {
        assert!(o.error.is_none(), "stream {i}: {:?}", o.error);
        assert!(
            o.mismatch.is_none() && o.eof && o.received > 0 && o.received <= o.sent,
            "stream {i}: {o:?}"
        );
    }
    drop(haproxy);
}

#[test]
fn rolling_restart_behind_haproxy_with_proxy_v2_is_invisible_to_clients() {
    rolling_restart("v2", "send-proxy-v2");
}

#[test]
fn rolling_restart_behind_haproxy_with_proxy_v1_is_invisible_to_clients() {
    rolling_restart("v1", "send-proxy");
}

#[test]
fn haproxy_health_checks_are_accepted_as_local_headers() {
    if !tools::require("haproxy") {
        return;
    }
    let (pa, pb) = (free_port(), free_port());
    let (a, _b) = (backend(pa, "v2"), backend(pb, "v2"));
    let _haproxy = Haproxy::start(pa, pb, "send-proxy-v2");
    let line = a.wait_for_log("without a client (LOCAL/UNKNOWN)", Duration::from_secs(5));
    assert!(line.is_some(), "{}", a.log());
    assert!(
        a.log_lines_with("closed: protocol error").is_empty(),
        "{}",
        a.log()
    );
    let mut s = TcpStream::connect(_haproxy.front).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"ok?").unwrap();
    let mut b3 = [0; 3];
    s.read_exact(&mut b3).unwrap();
    assert_eq!(&b3, b"ok?");
}
