//! `--upstream`: the TCP proxy, driven over loopback with real upstreams —
//! tcp-reactor echo servers, a listener that resets, a port where nothing
//! listens, and redis-server behind the proxy where it is installed.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use util::clients::{Clients, Plan};
use util::tools::require;

use util::ServerProcess;

/// An echo server to forward to.
fn backend() -> ServerProcess {
    ServerProcess::start(&[])
}

/// The proxy in front of `upstreams`, with `extra` flags.
fn proxy(upstreams: &[SocketAddr], extra: &[&str]) -> ServerProcess {
    let list: Vec<String> = upstreams.iter().map(SocketAddr::to_string).collect();
    let list = list.join(",");
    let mut args = vec!["--upstream", &list];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

/// An address where nothing listens (bound, then closed).
fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// SIGTERM, and the process must drain and exit 0.
fn stop_cleanly(server: &mut ServerProcess) {
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10)).map(|s| s.code());
    assert_eq!(status, Some(Some(0)), "{}", server.log());
}

/// Wait (at most 5 s) until something accepts connections at `addr`.
fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many of `server`'s log lines contain `needle`, once that is `n`
/// (its log is read on another thread: a line may lag its effect).
fn lines_with(server: &ServerProcess, needle: &str, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = server.log_lines_with(needle).len();
        if seen >= n || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn round_trip(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(msg).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    got
}

#[test]
fn clients_get_their_bytes_back_exactly_through_the_proxy_and_half_close_travels() {
    util::raise_fd_limit();
    let echo = backend();
    let mut proxy = proxy(&[echo.addr], &[]);
    // 200 clients × 256 KiB in random-sized writes, then FIN: each must get
    // every byte back and then EOF — the FIN went to the upstream after the
    // last byte, and the upstream's FIN came back.
    let mut clients = Clients::connect(proxy.addr, 200, Plan::SendThenHalfClose(256 * 1024), 21);
    let (outcomes, all_done) = clients.run(Duration::from_secs(60), |_| {});
    assert!(all_done, "{}", proxy.log());
    for (id, o) in outcomes.iter().enumerate() {
        assert!(
            o.error.is_none() && o.mismatch.is_none() && o.eof,
            "client {id}: {o:?}"
        );
        assert_eq!(o.received, 256 * 1024, "client {id}");
    }
    stop_cleanly(&mut proxy);
    let log = proxy.log();
    assert!(log.contains("forward to "), "{log}");
    assert!(log.contains("accepted 200"), "{log}");
}

#[test]
fn bulk_data_is_spliced_and_small_messages_copied_byte_exact_in_every_mode() {
    let echo = backend();
    let big: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    for mode in ["auto", "always", "never"] {
        let mut proxy = proxy(&[echo.addr], &["--splice", mode]);
        assert_eq!(round_trip(proxy.addr, b"tiny"), b"tiny", "{mode}");
        let got = round_trip(proxy.addr, &big);
        assert!(
            got == big,
            "{mode}: {} of {} bytes, or not equal",
            got.len(),
            big.len()
        );
        stop_cleanly(&mut proxy);
    }
}

#[test]
fn round_robin_spreads_connections_over_every_upstream_and_logs_each_pair() {
    let a = backend();
    let b = backend();
    let log = std::env::temp_dir().join(format!("forward-access-{}.json", std::process::id()));
    let log_arg = log.to_str().unwrap();
    let mut proxy = proxy(
        &[a.addr, b.addr],
        &["--balance", "round-robin", "--access-log", log_arg],
    );
    for i in 0..10u8 {
        let msg = vec![i; 3 + usize::from(i)];
        assert_eq!(round_trip(proxy.addr, &msg), msg);
    }
    let (na, nb) = (
        lines_with(&a, " accepted from ", 5),
        lines_with(&b, " accepted from ", 5),
    );
    assert_eq!((na, nb), (5, 5), "{}", proxy.log());
    stop_cleanly(&mut proxy);
    // One JSON line per pair: client, upstream, bytes each way, why it closed.
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10, "{text}");
    let mut to_a = 0;
    for line in &lines {
        assert_eq!(line["protocol"], "forward", "{line}");
        assert_eq!(line["reason"], "peer closed", "{line}");
        assert_eq!(line["bytes_in"], line["bytes_out"], "{line}");
        let upstream = line["upstream"].as_str().unwrap();
        assert!(upstream == a.addr.to_string() || upstream == b.addr.to_string());
        to_a += usize::from(upstream == a.addr.to_string());
    }
    assert_eq!(to_a, 5);
    let total: u64 = lines.iter().map(|l| l["bytes_in"].as_u64().unwrap()).sum();
    assert_eq!(total, (0..10).map(|i| 3 + i).sum::<u64>());
}

#[test]
fn a_dead_upstream_is_marked_down_and_its_connections_retried_on_another() {
    let echo = backend();
    let dead = dead_addr();
    let proxy = proxy(&[dead, echo.addr], &["--balance", "round-robin"]);
    // Every client is served: the one sent to the dead upstream is retried
    // on the live one, and later ones skip the dead one while it is down.
    for i in 0..20u8 {
        assert_eq!(round_trip(proxy.addr, &[i; 100]), [i; 100], "client {i}");
    }
    let down = proxy.log_lines_with("marked down");
    assert_eq!(down.len(), 1, "{}", proxy.log());
    assert!(down[0].contains(&dead.to_string()) && down[0].contains("refused"));
    assert_eq!(lines_with(&echo, " accepted from ", 20), 20);
}

#[test]
fn with_every_upstream_down_the_client_is_closed_at_once_and_counted() {
    let mut proxy = proxy(&[dead_addr(), dead_addr()], &[]);
    let start = Instant::now();
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the close, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2), "left hanging");
    proxy.signal(libc::SIGUSR1);
    proxy
        .wait_for_log("stats:", Duration::from_secs(5))
        .expect("a stats line");
    let log = proxy.log();
    assert!(log.contains("no upstream left after 2 attempts"), "{log}");
    stop_cleanly(&mut proxy);
}

#[test]
fn a_reset_from_the_upstream_resets_the_client() {
    // An upstream that accepts, reads a little and resets.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = upstream.local_addr().unwrap();
    let resetter = std::thread::spawn(move || {
        let (mut s, _) = upstream.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    });
    let proxy = proxy(&[addr], &[]);
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"hello").unwrap();
    resetter.join().unwrap();
    let mut buf = [0u8; 16];
    let got = s.read(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "expected a reset, got {got:?}; log:\n{}",
        proxy.log()
    );
}

#[test]
fn a_drain_lets_live_pairs_finish_and_cuts_them_at_the_deadline() {
    let echo = backend();
    // Finishes: a pair mid-conversation when SIGTERM arrives goes on.
    let mut proxy1 = proxy(&[echo.addr], &[]);
    let mut s = TcpStream::connect(proxy1.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"before").unwrap();
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).unwrap();
    proxy1.signal(libc::SIGTERM);
    proxy1
        .wait_for_log("letting 1 connection finish", Duration::from_secs(5))
        .expect("the drain line");
    assert!(TcpStream::connect(proxy1.addr).is_err(), "still accepting");
    s.write_all(b"after").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
    let status = proxy1.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", proxy1.log());

    // Cut: a pair that never ends is closed at the deadline, exit 3.
    let mut proxy2 = proxy(&[echo.addr], &["--drain-timeout", "0.5"]);
    let mut idle = TcpStream::connect(proxy2.addr).unwrap();
    idle.write_all(b"x").unwrap();
    idle.read_exact(&mut [0u8; 1]).unwrap();
    proxy2.signal(libc::SIGTERM);
    let status = proxy2.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(3), "{}", proxy2.log());
}

#[test]
fn redis_cli_talks_to_redis_server_through_the_proxy() {
    if !require("redis-server") || !require("redis-cli") {
        return;
    }
    let port = dead_addr().port();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let upstream: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(upstream);
    let proxy = proxy(&[upstream], &[]);
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &proxy.addr.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(cli(&["SET", "k", "through the proxy"]), "OK");
    assert_eq!(cli(&["GET", "k"]), "through the proxy");
    assert_eq!(cli(&["PING"]), "PONG");
    let _ = redis.kill();
    let _ = redis.wait();
}

#[test]
fn bad_upstream_flags_are_one_line_naming_the_flag_with_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--upstream", "localhost"], "--upstream"),
        (
            &["--upstream", "127.0.0.1:1", "--protocol", "http"],
            "--protocol",
        ),
        (
            &["--upstream", "127.0.0.1:1", "--balance", "random"],
            "--balance",
        ),
        (&["--balance", "round-robin"], "--upstream"),
        (
            &["--upstream", "127.0.0.1:1", "--splice", "sometimes"],
            "--splice",
        ),
    ];
    for (args, flag) in cases {
        let out = Command::new(util::binary()).args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

/// iperf3's own `sum_sent` and `sum_received` differ even on a direct
/// connection (what is in flight when the window closes: 1 996 226 560 vs
/// 1 992 949 654 bytes here), so the check is that nothing goes missing
/// beyond that. (iperf3 ends its data connections with unread bytes in
/// them, which the kernel turns into a reset, proxy or not.)
#[test]
fn iperf3_through_the_proxy_both_ways_loses_nothing() {
    if !require("iperf3") {
        return;
    }
    let addr = dead_addr();
    let mut server = Command::new("iperf3")
        .args(["-s", "-p", &addr.port().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(addr);
    let proxy = proxy(&[addr], &[]);
    for reverse in [false, true] {
        let mut cmd = Command::new("iperf3");
        cmd.args(["-c", "127.0.0.1", "-p", &proxy.addr.port().to_string()])
            .args(["-t", "1", "-J"]);
        if reverse {
            cmd.arg("-R");
        }
        let out = cmd.output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let end = &v["end"];
        let (sent, received) = (&end["sum_sent"]["bytes"], &end["sum_received"]["bytes"]);
        assert!(
            sent.as_u64().is_some_and(|n| n > 1_000_000),
            "reverse {reverse}: {v}"
        );
        let (sent, received) = (sent.as_f64().unwrap(), received.as_f64().unwrap());
        assert!(
            received <= sent && received >= 0.95 * sent,
            "reverse {reverse}: sent {sent}, received {received}"
        );
    }
    let _ = server.kill();
    let _ = server.wait();
    let mut proxy = proxy;
    stop_cleanly(&mut proxy);
    let closed = proxy.log_lines_with(" closed: ");
    assert_eq!(
        closed.len(),
        4,
        "control and data, each way: {}",
        proxy.log()
    );
}

#[test]
fn an_upstream_killed_mid_test_costs_clients_nothing() {
    let mut a = backend();
    let b = backend();
    let proxy = proxy(&[a.addr, b.addr], &["--balance", "round-robin"]);
    for i in 0..10u8 {
        assert_eq!(round_trip(proxy.addr, &[i; 10]), [i; 10]);
    }
    a.signal(libc::SIGKILL);
    a.wait_exit(Duration::from_secs(5)).expect("killed");
    // Every later client is served: the first one sent to the dead
    // upstream is retried on the live one, the rest skip it.
    for i in 0..40u8 {
        assert_eq!(
            round_trip(proxy.addr, &[i; 10]),
            [i; 10],
            "client {i} after the kill"
        );
    }
    assert_eq!(
        proxy.log_lines_with("marked down").len(),
        1,
        "{}",
        proxy.log()
    );
    assert_eq!(lines_with(&b, " accepted from ", 45), 5 + 40);
}

#[test]
fn a_proxy_header_toward_the_upstream_names_the_real_client() {
    for (version, mode) in [("v1", "v1"), ("v2", "v2")] {
        // The upstream requires the header and logs the client it names.
        let upstream = ServerProcess::start(&["--proxy-protocol", mode]);
        let proxy = proxy(&[upstream.addr], &["--upstream-send-proxy", version]);
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        let me = s.local_addr().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"who am I").unwrap();
        let mut buf = [0u8; 8];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(
            &buf, b"who am I",
            "{version}: the header is not echoed back"
        );
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
        let accepted = upstream
            .wait_for_log(&me.to_string(), Duration::from_secs(5))
            .unwrap_or_else(|| {
                panic!(
                    "{version}: the upstream never named {me}:\n{}",
                    upstream.log()
                )
            });
        assert!(accepted.contains(&me.to_string()), "{accepted}");
        // Our own counts are the client's bytes, not the header's.
        let closed = proxy
            .wait_for_log(" closed: ", Duration::from_secs(5))
            .expect("closed");
        assert!(closed.contains("(in 8 B, out 8 B"), "{closed}");
    }
}

#[test]
fn haproxy_then_this_proxy_then_a_backend_all_name_the_real_client() {
    if !require("haproxy") {
        return;
    }
    // backend (requires PROXY v2) ← this proxy (reads v2, sends v2) ← HAProxy (send-proxy-v2)
    let backend = ServerProcess::start(&["--proxy-protocol", "v2"]);
    let ours = proxy(
        &[backend.addr],
        &["--proxy-protocol", "v2", "--upstream-send-proxy", "v2"],
    );
    let front = dead_addr();
    let cfg = std::env::temp_dir().join(format!("forward-haproxy-{}.cfg", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "global\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 30s\n  timeout server 30s\n\
             frontend f\n  bind {front}\n  default_backend b\n\
             backend b\n  server s1 {} send-proxy-v2\n",
            ours.addr
        ),
    )
    .unwrap();
    let mut haproxy = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(front);
    let mut s = TcpStream::connect(front).unwrap();
    let me = s.local_addr().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"through two proxies").unwrap();
    let mut buf = [0u8; 19];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"through two proxies");
    drop(s);
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    let _ = std::fs::remove_file(&cfg);
    assert!(
        ours.wait_for_log(
            &format!("PROXY header: client {me}"),
            Duration::from_secs(5)
        )
        .is_some(),
        "{}",
        ours.log()
    );
    assert!(
        backend
            .wait_for_log(&me.to_string(), Duration::from_secs(5))
            .is_some(),
        "the backend never named {me}:\n{}",
        backend.log()
    );
}

#[test]
fn a_bad_or_missing_proxy_header_closes_only_that_client() {
    let echo = backend();
    let proxy = proxy(
        &[echo.addr],
        &["--proxy-protocol", "v1", "--proxy-timeout", "0.3"],
    );
    // Not a header: closed.
    let mut bad = TcpStream::connect(proxy.addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(matches!(bad.read(&mut [0u8; 16]), Ok(0) | Err(_)));
    // Silent: closed at the header deadline.
    let mut silent = TcpStream::connect(proxy.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(matches!(silent.read(&mut [0u8; 16]), Ok(0) | Err(_)));
    // A good one, split across writes, with payload behind it in the same write.
    let mut good = TcpStream::connect(proxy.addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    good.write_all(b"PROXY TCP4 192.0.2.7 ").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    good.write_all(b"127.0.0.1 51234 8000\r\npayload").unwrap();
    let mut buf = [0u8; 7];
    good.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"payload");
    let log = proxy.log();
    assert!(
        log.contains("PROXY header: client 192.0.2.7:51234"),
        "{log}"
    );
    assert!(
        log.contains("closed: protocol error: no PROXY header"),
        "{log}"
    );
    assert!(
        log.contains("closed: protocol error: no complete PROXY header in time"),
        "{log}"
    );
}

#[test]
fn tls_is_terminated_in_front_of_a_plain_upstream() {
    let certs = util::tls::Certs::new();
    let echo = backend();
    let args = certs.args();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--idle-timeout", "10"]); // a hang fails in seconds, not minutes
    let mut proxy = proxy(&[echo.addr], &args);
    // A rustls client: TLS 1.3 to the proxy, plaintext to the echo server.
    let mut client = util::tls::connect(proxy.addr, certs.client()).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    util::tls::echo(&mut client, b"hello through TLS");
    util::tls::echo(&mut client, &big);
    drop(client);
    // openssl s_client, as stunnel and hitch are used.
    if require("openssl") {
        // -quiet ignores stdin's EOF unless told -no_ign_eof.
        let flags = ["-verify_return_error", "-quiet", "-no_ign_eof"];
        let mut s_client = util::tls::s_client(proxy.addr, &certs, &flags);
        let mut stdin = s_client.stdin.take().unwrap();
        stdin.write_all(b"hello s_client\n").unwrap();
        let mut stdout = s_client.stdout.take().unwrap();
        let mut got = [0u8; 15];
        stdout.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello s_client\n");
        drop(stdin); // EOF: s_client sends close_notify; the FIN goes through to the echo server
        let status = s_client.wait().unwrap();
        let mut err = String::new();
        s_client
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "s_client: {status}: {err}");
    }
    // Plain bytes on the TLS port close with a reason; the loop serves on.
    let mut plain = TcpStream::connect(proxy.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(&[0x42; 64]).unwrap();
    let _ = plain.read(&mut [0u8; 64]);
    proxy.signal(libc::SIGUSR1);
    let stats = proxy
        .wait_for_log("stats:", Duration::from_secs(5))
        .expect("stats");
    assert!(stats.contains("protocol 1"), "{stats}");
    stop_cleanly(&mut proxy);
    // The echo server saw plaintext: every byte, and nothing else.
    let echoed: u64 = echo
        .log_lines_with(" closed: ")
        .iter()
        .filter_map(|l| {
            l.split("(in ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let expected = 17 + big.len() as u64 + if require("openssl") { 15 } else { 0 };
    assert_eq!(echoed, expected, "{}", echo.log());
}

#[test]
fn sigusr2_hands_the_listener_over_and_the_old_process_keeps_its_pairs() {
    // SAFETY: prctl with integer arguments only: the new process, started
    // by the old one, becomes our child when the old one exits.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    let echo = backend();
    let mut old = ServerProcess::start_with(
        &[
            "--upstream",
            &echo.addr.to_string(),
            "--drain-timeout",
            "30",
        ],
        |cmd| {
            cmd.env("RUST_LOG", "info");
        },
    );
    let addr = old.addr;
    let mut live = TcpStream::connect(addr).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    live.write_all(b"before").unwrap();
    live.read_exact(&mut [0u8; 6]).unwrap();

    old.signal(libc::SIGUSR2);
    let ready = old
        .wait_for_log("upgrade: new process ", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("never ready:\n{}", old.log()));
    let new_pid: i32 = ready
        .split("upgrade: new process ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{ready}"));
    // New clients go to the new process…
    for i in 0..5u8 {
        assert_eq!(round_trip(addr, &[i; 32]), [i; 32]);
    }
    // …while the old one still forwards its live pair, then exits once it ends.
    live.write_all(b"after the upgrade").unwrap();
    let mut buf = [0u8; 17];
    live.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after the upgrade");
    live.shutdown(Shutdown::Write).unwrap();
    assert_eq!(live.read(&mut [0u8; 1]).unwrap(), 0);
    let status = old
        .wait_exit(Duration::from_secs(15))
        .expect("the old process exits");
    assert_eq!(status.code(), Some(0), "{}", old.log());

    // SAFETY: signalling the process the old one started.
    unsafe { libc::kill(new_pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let mut status = 0;
        // SAFETY: waitpid writes only `status`.
        let rc = unsafe { libc::waitpid(new_pid, &mut status, libc::WNOHANG) };
        if rc == new_pid {
            break libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        assert!(Instant::now() < deadline, "the new process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn curl_and_wrk_reach_nginx_through_the_proxy() {
    if !require("nginx") || !require("curl") || !require("wrk") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("forward-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let upstream = dead_addr();
    let cfg = dir.join("nginx.conf");
    std::fs::write(
        &cfg,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\n\
             error_log stderr warn;\nevents {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
             server {{ listen {upstream}; location / {{ return 200 \"hello from nginx\\n\"; }} }} }}\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let mut nginx = Command::new("nginx")
        .arg("-e")
        .arg("stderr")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(upstream);
    let proxy = proxy(&[upstream], &[]);
    let url = format!("http://{}/", proxy.addr);
    let out = Command::new("curl")
        .args(["-s", &url, &url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from nginx\nhello from nginx\n"
    );
    let out = Command::new("wrk")
        .args(["-t1", "-c20", "-d1s", &url])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let _ = nginx.kill();
    let _ = nginx.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    assert!(report.contains("Requests/sec"), "{report}");
}

#[test]
fn sighup_re_reads_the_upstream_file_and_a_bad_one_keeps_the_old_list() {
    let a = backend();
    let b = backend();
    let path = std::env::temp_dir().join(format!("forward-upstreams-{}.txt", std::process::id()));
    std::fs::write(&path, format!("# the first list\n{}\n", a.addr)).unwrap();
    let proxy = ServerProcess::start(&["--upstream-file", path.to_str().unwrap()]);
    // A live pair on A, and new clients on A.
    let mut live = TcpStream::connect(proxy.addr).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    live.write_all(b"on a").unwrap();
    live.read_exact(&mut [0u8; 4]).unwrap();
    assert_eq!(round_trip(proxy.addr, b"x"), b"x");
    assert_eq!(lines_with(&a, " accepted from ", 2), 2);

    // A removed, B added: new clients go to B, the live pair stays on A.
    std::fs::write(&path, format!("{}\n", b.addr)).unwrap();
    proxy.signal(libc::SIGHUP);
    proxy
        .wait_for_log("re-read", Duration::from_secs(5))
        .expect("the re-read line");
    for i in 0..4u8 {
        assert_eq!(round_trip(proxy.addr, &[i; 8]), [i; 8]);
    }
    assert_eq!(lines_with(&b, " accepted from ", 4), 4);
    assert_eq!(lines_with(&a, " accepted from ", 3), 2, "none more on A");
    live.write_all(b"still a").unwrap();
    let mut buf = [0u8; 7];
    live.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still a");

    // A bad file: logged, and the list in use (B) is kept.
    std::fs::write(&path, "not an address\n").unwrap();
    proxy.signal(libc::SIGHUP);
    let error = proxy
        .wait_for_log("keeping the upstreams in use", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{}", proxy.log()));
    assert!(error.contains("line 1"), "{error}");
    assert_eq!(round_trip(proxy.addr, b"y"), b"y");
    assert_eq!(lines_with(&b, " accepted from ", 5), 5);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_bad_or_unreadable_upstream_file_is_one_line_at_start() {
    let dir = std::env::temp_dir();
    let empty = dir.join(format!("forward-empty-{}.txt", std::process::id()));
    std::fs::write(&empty, "# nothing here\n").unwrap();
    let missing = dir.join("forward-no-such-file.txt");
    let cases = [
        (&empty, 2, "names no upstream"),
        (&missing, 1, "cannot read"),
    ];
    for (path, code, words) in cases {
        let out = Command::new(util::binary())
            .args(["--upstream-file", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(words) && stderr.contains("--upstream-file"),
            "{stderr}"
        );
    }
    let _ = std::fs::remove_file(&empty);
}

#[test]
fn an_active_health_check_brings_a_recovered_upstream_back_at_once() {
    let b = backend();
    let a_addr = dead_addr();
    let proxy = proxy(
        &[a_addr, b.addr],
        &[
            "--balance",
            "round-robin",
            "--upstream-down-time",
            "60",
            "--health-interval",
            "0.1",
        ],
    );
    proxy
        .wait_for_log(
            &format!("upstream {a_addr}: health check failed"),
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("A never marked down by a check:\n{}", proxy.log()));
    for i in 0..4u8 {
        assert_eq!(round_trip(proxy.addr, &[i; 4]), [i; 4], "served by B");
    }
    // A comes back: a check finds it long before the 60 s down time ends.
    let a = ServerProcess::start(&["--listen", &a_addr.to_string()]);
    proxy
        .wait_for_log(
            &format!("upstream {a_addr} is up again (health check)"),
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("A never seen up:\n{}", proxy.log()));
    for i in 0..6u8 {
        assert_eq!(round_trip(proxy.addr, &[i; 4]), [i; 4]);
    }
    // Round-robin again: A takes its half (the checks carry no bytes).
    assert_eq!(lines_with(&a, "(in 4 B", 3), 3, "{}", a.log());
    assert_eq!(
        proxy.log_lines_with("marked down for").len(),
        0,
        "no client met A down"
    );
}

/// `GET /metrics` at `addr`, the body.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

#[test]
fn metrics_count_each_upstream() {
    let a = backend();
    let b = backend();
    let dead = dead_addr();
    let metrics = dead_addr();
    let proxy = proxy(
        &[a.addr, b.addr, dead],
        &[
            "--balance",
            "round-robin",
            "--metrics",
            &metrics.to_string(),
            "--threads",
            "2",
        ],
    );
    // Round-robin per loop: whichever loop takes a client, each upstream
    // gets some; the dead one fails once per loop that tries it.
    for i in 0..12u8 {
        let msg = vec![i; 100];
        assert_eq!(round_trip(proxy.addr, &msg), msg);
    }
    let body = scrape(metrics);
    let sample = |family: &str, upstream: SocketAddr| -> u64 {
        let key = match family.split_once('|') {
            Some((family, kind)) => format!("{family}{{upstream=\"{upstream}\",kind=\"{kind}\"}} "),
            None => format!("{family}{{upstream=\"{upstream}\"}} "),
        };
        body.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in\n{body}"))
    };
    let forwarded: u64 = [a.addr, b.addr]
        .iter()
        .map(|&u| sample("tcp_reactor_upstream_forwarded_total", u))
        .sum();
    assert_eq!(forwarded, 12, "{body}");
    assert!(sample("tcp_reactor_upstream_forwarded_total", a.addr) > 0);
    assert!(sample("tcp_reactor_upstream_forwarded_total", b.addr) > 0);
    assert_eq!(sample("tcp_reactor_upstream_forwarded_total", dead), 0);
    assert!(sample("tcp_reactor_upstream_failed_connects_total|refused", dead) >= 1);
    assert_eq!(
        sample("tcp_reactor_upstream_failed_connects_total|timeout", dead),
        0
    );
    assert_eq!(
        sample("tcp_reactor_upstream_failed_connects_total|refused", a.addr),
        0
    );
    assert_eq!(
        sample("tcp_reactor_upstream_up", a.addr),
        2,
        "up on both loops"
    );
    assert!(
        sample("tcp_reactor_upstream_up", dead) < 2,
        "down on the loop(s) that tried it"
    );
    let sent: u64 = [a.addr, b.addr]
        .iter()
        .map(|&u| sample("tcp_reactor_upstream_sent_bytes_total", u))
        .sum();
    assert_eq!(sent, 1200);
    assert_eq!(sample("tcp_reactor_upstream_active", a.addr), 0);
    if require("promtool") {
        let (ok, said) = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .output_with(&body);
        assert!(ok, "promtool: {said}");
    }
}

trait OutputWith {
    fn output_with(&mut self, input: &str) -> (bool, String);
}

impl OutputWith for Command {
    /// Run with `input` on stdin; success and stderr+stdout.
    fn output_with(&mut self, input: &str) -> (bool, String) {
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        (out.status.success(), text)
    }
}

#[test]
fn the_trace_shows_the_connect_both_directions_and_both_fins() {
    let echo = backend();
    let proxy = ServerProcess::start_with(&["--upstream", &echo.addr.to_string()], |cmd| {
        cmd.env("RUST_LOG", "trace");
    });
    let big = vec![7u8; 200_000];
    assert_eq!(round_trip(proxy.addr, &big), big);
    proxy
        .wait_for_log("=> closed", Duration::from_secs(5))
        .expect("the pair closes");
    for line in [
        "connecting to upstream",
        "Connecting => Forwarding",
        "client → upstream: a full 65536 B read: splicing from now",
        "client → upstream: FIN read",
        "client → upstream: FIN passed on (shutdown write) after 200000 B",
        "upstream → client: FIN read",
        "upstream → client: FIN passed on (shutdown write) after 200000 B",
        "Forwarding => closed",
    ] {
        assert_eq!(
            lines_with(&proxy, line, 1),
            1,
            "no {line:?} in the trace:\n{}",
            proxy.log()
        );
    }
}

#[test]
fn clients_that_never_read_cannot_grow_proxy_memory_and_then_get_every_byte() {
    let echo = backend();
    let proxy = proxy(&[echo.addr], &["--splice", "never"]);
    let pid = proxy.pid();
    // Warm up: the loop's own buffers exist before the baseline.
    assert_eq!(round_trip(proxy.addr, &[1; 100_000]), vec![1; 100_000]);
    let before = util::procfs::rss_kib(pid);
    // 50 clients send until every buffer on the way is full: theirs, the
    // proxy's, the echo server's, and back.
    let chunk = vec![b'z'; 16 * 1024];
    let socks = util::flood_without_reading(proxy.addr, 50, &chunk);
    let grown = util::procfs::rss_kib(pid).saturating_sub(before);
    // Per pair at most 64 KiB owed plus one 64 KiB read, each way.
    let bound = 50 * 256 + 4 * 1024;
    eprintln!("50 clients that never read: proxy RSS grew {grown} KiB (bound {bound} KiB)");
    assert!(grown < bound, "RSS grew {grown} KiB, bound {bound} KiB");
    // Then they read: every byte comes back.
    let mut total = 0u64;
    for mut s in socks {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == b'z'));
        total += got.len() as u64;
    }
    assert!(total > 50 * 64 * 1024, "{total}");
    assert!(
        lines_with(&proxy, "closed: peer closed", 51) >= 51,
        "{}",
        proxy.log()
    );
}

#[test]
fn a_connect_that_times_out_marks_the_upstream_down_and_the_client_goes_elsewhere() {
    // An upstream whose accept queue is full: the kernel drops further
    // SYNs, so a connect neither succeeds nor fails — it hangs.
    let black_hole =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    black_hole
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    black_hole.listen(0).unwrap();
    let hole = black_hole.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        // Fill the queue (never accepted); later ones may hang: don't wait.
        if let Ok(s) = TcpStream::connect_timeout(&hole, Duration::from_millis(100)) {
            fillers.push(s);
        }
    }
    let b = backend();
    let proxy = proxy(
        &[hole, b.addr],
        &["--balance", "round-robin", "--connect-timeout", "0.3"],
    );
    let start = Instant::now();
    for i in 0..3u8 {
        assert_eq!(round_trip(proxy.addr, &[i; 16]), [i; 16]);
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let down = proxy.log_lines_with("marked down");
    assert_eq!(down.len(), 1, "{}", proxy.log());
    assert!(
        down[0].contains("timed out") && down[0].contains(&hole.to_string()),
        "{}",
        down[0]
    );
    drop(fillers);
}

#[test]
fn an_idle_pair_is_closed_at_the_idle_timeout_and_a_chatty_one_is_not() {
    let echo = backend();
    let proxy = proxy(&[echo.addr], &["--idle-timeout", "0.4"]);
    let mut idle = TcpStream::connect(proxy.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut chatty = TcpStream::connect(proxy.addr).unwrap();
    chatty
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..8 {
        chatty.write_all(b"hi").unwrap();
        chatty.read_exact(&mut [0u8; 2]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    // The idle one was closed by now; the chatty one still works.
    assert_eq!(idle.read(&mut [0u8; 1]).unwrap_or(0), 0);
    chatty.write_all(b"ok").unwrap();
    chatty.read_exact(&mut [0u8; 2]).unwrap();
    assert_eq!(
        lines_with(&proxy, "closed: idle timeout", 1),
        1,
        "{}",
        proxy.log()
    );
}

#[test]
fn ipv6_clients_and_upstreams() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIP ipv6_clients_and_upstreams: no IPv6 loopback here");
        return;
    }
    let echo = ServerProcess::start(&["--listen", "[::1]:0"]);
    let proxy = ServerProcess::start(&[
        "--listen",
        "[::1]:0",
        "--upstream",
        &echo.addr.to_string(),
        "--upstream-send-proxy",
        "v1",
    ]);
    assert!(proxy.addr.is_ipv6());
    // The upstream speaks echo, so it echoes our PROXY v1 header back first.
    let got = round_trip(proxy.addr, b"six");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("PROXY TCP6 ::1 ::1 ") && text.ends_with("\r\nsix"),
        "{text:?}"
    );
}

#[test]
fn the_connection_limit_counts_two_descriptors_a_pair() {
    let mut cmd = Command::new(util::binary());
    cmd.args(["--max-conns", "99999999", "--upstream", "127.0.0.1:9"]);
    util::with_nofile(&mut cmd, 1000);
    cmd.args(["--listen", "127.0.0.1:0"]);
    let server = ServerProcess::launch(cmd);
    let line = server.log_lines_with("listening on").remove(0);
    // A protocol gets 965 under this limit (cli.rs); a pair holds two.
    assert!(line.contains("max-conns 482,"), "{line}");
}
