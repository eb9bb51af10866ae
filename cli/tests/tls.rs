//! TLS termination (`--tls-cert`/`--tls-key`) against the real binary:
//! a rustls client for exact bytes, real clients (openssl s_client, curl,
//! redis-cli, wrk, Python's ssl) where they are installed, raw sockets for
//! what no client library would send. Certificates are made at test time.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use util::tls::{self as tls, Certs};
use util::tools::require;
use util::ServerProcess;

fn tls_server(certs: &Certs, extra: &[&str]) -> ServerProcess {
    let mut args: Vec<String> = certs.args().to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::start(&args)
}

/// Output of a finished tool: (stdout, stderr), asserting it exited 0.
fn output(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Read until the server closes (bounded by a read timeout); returns the bytes.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("server did not close within 10 s: {e}"),
        }
    }
}

/// Wait (bounded) for a log line, or fail with the whole log.
fn wait_log(server: &ServerProcess, needle: &str) -> String {
    server
        .wait_for_log(needle, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{}", server.log()))
}

#[test]
fn tls13_and_tls12_clients_get_every_byte_echoed() {
    let certs = Certs::new();
    let server = tls_server(&certs, &[]);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = tls::client_config(&certs.cert_pem, Some(version), &[]);
        let mut client = tls::connect(server.addr, config).expect("handshake");
        assert_eq!(client.conn.protocol_version(), Some(version.version));
        tls::echo(&mut client, b"hello over TLS");
        tls::echo(&mut client, &[7u8; 40_000]);
    }
    wait_log(&server, "TLS handshake done: Some(TLSv1_3)");
    wait_log(&server, "TLS handshake done: Some(TLSv1_2)");
}

/// The edge-triggered rule for TLS: one write far larger than a record
/// (and than one read of the socket) arrives as many records. If the stage
/// stopped after the first record with the rest in rustls or the socket,
/// no further edge would come and this would hang until its read timeout.
#[test]
fn one_large_write_is_echoed_in_full_without_a_further_edge() {
    let certs = Certs::new();
    let server = tls_server(&certs, &[]);
    let mut client = tls::connect(server.addr, certs.client()).expect("handshake");
    let msg: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    tls::echo(&mut client, &msg);
    // And again with the connection warm: buffers were given back between.
    tls::echo(&mut client, &msg);
}

#[test]
fn sni_is_accepted_and_not_required() {
    let certs = Certs::new();
    let server = tls_server(&certs, &[]);
    // rustls sends SNI for a DNS name; for an IP address it sends none.
    let mut named = tls::connect(server.addr, certs.client()).expect("with SNI");
    tls::echo(&mut named, b"named");
    let tcp = TcpStream::connect(server.addr).unwrap();
    let config = certs.client();
    let ip = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, ip).unwrap();
    let mut plain = rustls::StreamOwned::new(conn, tcp);
    plain.write_all(b"no sni").unwrap();
    let mut got = [0; 6];
    plain.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"no sni");
    wait_log(&server, "SNI localhost");
    wait_log(&server, "SNI none");
}

#[test]
fn http_offers_alpn_http11_and_serves_requests() {
    let certs = Certs::new();
    let server = tls_server(&certs, &["--protocol", "http"]);
    let config = tls::client_config(&certs.cert_pem, None, &[b"h2", b"http/1.1"]);
    let mut client = tls::connect(server.addr, config).expect("handshake");
    assert_eq!(client.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    client.read_to_end(&mut response).expect("clean close");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("Hello, World!"), "{text}");
}

#[test]
fn a_proxy_header_is_read_before_the_tls_bytes() {
    let certs = Certs::new();
    let server = tls_server(&certs, &["--proxy-protocol", "v1"]);
    // The header and the ClientHello may share one segment: the bytes
    // behind the header are the TLS stage's, not the protocol's.
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 443\r\n")
        .unwrap();
    let mut client = tls::connect_over(tcp, certs.client()).expect("handshake");
    tls::echo(&mut client, b"behind a balancer");
    wait_log(&server, "PROXY header: client 192.0.2.7:5555");
}

#[test]
fn plain_http_to_the_tls_port_gets_a_400_saying_https_and_is_closed() {
    let certs = Certs::new();
    let server = tls_server(&certs, &[]);
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let answer = String::from_utf8(read_to_close(&mut tcp)).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("https://"), "{answer}");
    wait_log(
        &server,
        "closed: protocol error: plain HTTP sent to the TLS port",
    );
    // The loop is unaffected.
    let mut client = tls::connect(server.addr, certs.client()).expect("handshake");
    tls::echo(&mut client, b"still serving");
}

#[test]
fn bad_input_is_closed_with_a_reason_and_the_loop_serves_on() {
    let certs = Certs::new();
    let server = tls_server(&certs, &[]);
    // A ClientHello cut short, then our FIN.
    let hello = client_hello(&certs);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "random bytes",
            (0..512u32).map(|i| (i * 7919 % 256) as u8).collect(),
            "closed: protocol error: TLS: ",
        ),
        (
            "a truncated ClientHello",
            hello[..hello.len() / 2].to_vec(),
            "closed: protocol error: TLS: peer closed during the handshake",
        ),
        (
            "an oversized record",
            vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00],
            "closed: protocol error: TLS: ",
        ),
    ];
    for (what, bytes, reason) in cases {
        let before = server.log_lines_with(reason).len();
        let mut tcp = TcpStream::connect(server.addr).unwrap();
        tcp.write_all(&bytes).unwrap();
        tcp.shutdown(Shutdown::Write).unwrap();
        let _ = read_to_close(&mut tcp); // closed, perhaps after an alert
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.log_lines_with(reason).len() == before {
            assert!(
                Instant::now() < deadline,
                "{what}: no {reason:?}:\n{}",
                server.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        let mut client = tls::connect(server.addr, certs.client()).expect("handshake");
        tls::echo(&mut client, what.as_bytes());
    }
}

/// A real ClientHello, as a client would send it first.
fn client_hello(certs: &Certs) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(certs.client(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[test]
fn a_handshake_never_finished_is_closed_at_the_handshake_timeout() {
    let certs = Certs::new();
    let server = tls_server(&certs, &["--tls-handshake-timeout", "1"]);
    let hello = client_hello(&certs);
    // One sends half a ClientHello and waits; one sends nothing.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(&hello[..10]).unwrap();
    let mut silent = TcpStream::connect(server.addr).unwrap();
    let _ = read_to_close(&mut slow);
    let _ = read_to_close(&mut silent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server
        .log_lines_with("closed: protocol error: TLS handshake not finished in time")
        .len()
        < 2
    {
        assert!(Instant::now() < deadline, "{}", server.log());
        thread::sleep(Duration::from_millis(20));
    }
    let mut client = tls::connect(server.addr, certs.client()).expect("handshake");
    tls::echo(&mut client, b"unaffected");
}

/// `--tls-handshake-timeout 0` is no limit of its own, as `0` is for every
/// `*-timeout` flag: a stalled handshake is then ended by the idle timeout,
/// with that reason, and a slow client that does finish is served.
#[test]
fn tls_handshake_timeout_0_leaves_a_stalled_handshake_to_the_idle_timeout() {
    let certs = Certs::new();
    let server = tls_server(
        &certs,
        &["--tls-handshake-timeout", "0", "--idle-timeout", "1"],
    );
    let hello = client_hello(&certs);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(&hello[..10]).unwrap();
    let _ = read_to_close(&mut slow);
    let line = wait_log(&server, " closed: ");
    assert!(line.contains("closed: idle timeout"), "{}", server.log());
    assert!(
        server
            .log_lines_with("TLS handshake not finished in time")
            .is_empty(),
        "{}",
        server.log()
    );
    let mut client = tls::connect(server.addr, certs.client()).expect("handshake");
    tls::echo(&mut client, b"served");
}

/// Graceful drain over TLS: the reply in flight, then close_notify, then
/// FIN. rustls reports a close without close_notify as `UnexpectedEof`;
/// a clean one is `Ok(0)`.
#[test]
fn a_drain_sends_close_notify_before_fin() {
    let certs = Certs::new();
    let server = tls_server(&certs, &[]);
    let mut client = tls::connect(server.addr, certs.client()).expect("handshake");
    tls::echo(&mut client, b"before the drain");
    server.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    let read = client.read_to_end(&mut rest);
    assert!(read.is_ok(), "not a clean TLS close: {read:?}");
    assert!(rest.is_empty());
    wait_log(&server, "All done.");
}

#[test]
fn python_ssl_without_ragged_eofs_reads_a_clean_close() {
    if !require("python3") {
        return;
    }
    let certs = Certs::new();
    let server = tls_server(&certs, &[]);
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))),
                    server_hostname="localhost", suppress_ragged_eofs=False)
s.settimeout(10)
s.sendall(b"ping")
got = b""
while len(got) < 4:
    got += s.recv(4)
assert got == b"ping", got
print("echoed", flush=True)
sys.stdin.readline()          # the test sends SIGTERM to the server now
try:
    rest = s.recv(100)
except ssl.SSLEOFError as e:
    print("ragged:", e); sys.exit(1)
assert rest == b"", rest
print("clean close")
"#;
    let mut py = Command::new("python3")
        .args(["-c", script])
        .arg(&certs.cert)
        .arg(server.addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = py.stdout.take().unwrap();
    let mut line = [0u8; 7];
    stdout.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"echoed\n");
    server.signal(libc::SIGTERM);
    py.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = py.wait().unwrap();
    assert!(status.success(), "{rest}");
    assert_eq!(rest, "clean close\n");
}

#[test]
fn openssl_s_client_echoes_and_exits_0_at_the_drain() {
    if !require("openssl") {
        return;
    }
    let certs = Certs::new();
    let server = tls_server(&certs, &[]);
    let mut s_client =
        util::tls::s_client(server.addr, &certs, &["-verify_return_error", "-quiet"]);
    let mut stdin = s_client.stdin.take().unwrap();
    stdin.write_all(b"hello s_client\n").unwrap();
    let mut stdout = s_client.stdout.take().unwrap();
    let mut got = [0u8; 15];
    stdout.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello s_client\n");
    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = s_client.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "s_client still running");
        thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    s_client
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "s_client: {status}: {err}");
    assert!(!err.contains("error"), "{err}");
    drop(stdin);
}

#[test]
fn curl_gets_posts_and_reuses_one_tls_connection() {
    if !require("curl") {
        return;
    }
    let certs = Certs::new();
    let server = tls_server(&certs, &["--protocol", "http"]);
    let port = server.addr.port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/");
    let echo = format!("https://localhost:{port}/echo");
    let curl = || {
        let mut cmd = Command::new("curl");
        cmd.args(["-sv", "--resolve", &resolve, "--cacert"])
            .arg(&certs.cert);
        cmd
    };
    let (stdout, stderr) = output(curl().args([&url, &url]));
    assert_eq!(stdout, "Hello, World!Hello, World!");
    assert!(
        stderr.contains("Re-using existing connection") || stderr.contains("Reusing existing"),
        "second request did not reuse the connection:\n{stderr}"
    );
    assert!(
        stderr.contains("ALPN: server accepted http/1.1"),
        "{stderr}"
    );
    let (body, _) = output(curl().args(["--data-binary", "hello over https", &echo]));
    assert_eq!(body, "hello over https");
}

#[test]
fn redis_cli_over_tls_pings_and_echoes() {
    if !require("redis-cli") {
        return;
    }
    let certs = Certs::new();
    let server = tls_server(&certs, &["--protocol", "resp"]);
    let port = server.addr.port().to_string();
    let cli = |args: &[&str]| {
        output(
            Command::new("redis-cli")
                .args(["--tls", "--cacert"])
                .arg(&certs.cert)
                .args(["-h", "localhost", "-p", &port])
                .args(args),
        )
        .0
    };
    assert_eq!(cli(&["PING"]), "PONG\n");
    assert_eq!(cli(&["ECHO", "hello tls"]), "hello tls\n");
}

#[test]
fn wrk_over_https_has_no_errors() {
    if !require("wrk") {
        return;
    }
    let certs = Certs::new();
    let server = tls_server(&certs, &["--protocol", "http"]);
    let url = format!("https://localhost:{}/", server.addr.port());
    let (report, _) = output(Command::new("wrk").args(["-t1", "-c20", "-d2s", &url]));
    eprintln!("{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    assert!(report.contains("Requests/sec:"), "{report}");
}

/// SIGHUP: new handshakes get the new pair on every loop; a connection
/// made before carries on; a bad pair on disk is refused and the last
/// good one kept.
#[test]
fn sighup_reloads_the_certificate_on_every_loop_and_keeps_it_when_bad() {
    let mut certs = Certs::new();
    let server = tls_server(&certs, &["--threads", "2"]);
    let old = certs.client();
    let mut live = tls::connect(server.addr, old.clone()).expect("handshake");
    tls::echo(&mut live, b"before");

    certs.regenerate();
    server.signal(libc::SIGHUP);
    wait_log(&server, "SIGHUP: reloaded TLS certificate");
    let new = certs.client();
    // Enough connections that both loops accept some.
    for i in 0..12 {
        let mut c = tls::connect(server.addr, new.clone()).expect("new pair");
        tls::echo(&mut c, format!("new {i}").as_bytes());
        assert!(
            tls::connect(server.addr, old.clone()).is_err(),
            "a new handshake still used the old pair"
        );
    }
    tls::echo(&mut live, b"the live connection carries on");

    std::fs::write(&certs.key, "not a key\n").unwrap();
    server.signal(libc::SIGHUP);
    wait_log(&server, "TLS reload failed, keeping the old pair");
    let mut c = tls::connect(server.addr, new.clone()).expect("kept pair");
    tls::echo(&mut c, b"still the good pair");
}

#[test]
fn tls_flags_misused_exit_2_and_unusable_files_exit_1_naming_the_file() {
    let certs = Certs::new();
    let run = |args: &[&str]| {
        let out = Command::new(util::binary())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cert = certs.cert.to_str().unwrap();
    let key = certs.key.to_str().unwrap();

    let (code, err) = run(&["--tls-cert", cert]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-key"), "{err}");
    let (code, err) = run(&["--tls-key", key]);
    assert_eq!(code, Some(2), "{err}");

    let missing = certs.dir.join("missing.pem");
    let (code, err) = run(&["--tls-cert", missing.to_str().unwrap(), "--tls-key", key]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("missing.pem: cannot read"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // The certificate file has no key in it.
    let (code, err) = run(&["--tls-cert", cert, "--tls-key", cert]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cert.pem: no private key"), "{err}");

    // A key from another pair.
    let other = Certs::new();
    let other_key = other.key.to_str().unwrap();
    let (code, err) = run(&["--tls-cert", cert, "--tls-key", other_key]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("key.pem: key cannot be used with certificate"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// SIGUSR2 re-execs with the same arguments: the new process loads the
/// same files and serves TLS on the same socket; a connection on the old
/// one is drained with close_notify.
#[test]
fn tls_survives_a_sigusr2_upgrade() {
    let certs = Certs::new();
    let mut server = tls_server(&certs, &[]);
    let mut live = tls::connect(server.addr, certs.client()).expect("handshake");
    tls::echo(&mut live, b"old process");
    server.signal(libc::SIGUSR2);
    let deadline = Instant::now() + Duration::from_secs(15);
    let line = loop {
        let ready = server.log_lines_with("upgrade: new process ");
        if let Some(line) = ready.into_iter().find(|l| l.contains("is ready")) {
            break line;
        }
        assert!(Instant::now() < deadline, "never ready:\n{}", server.log());
        thread::sleep(Duration::from_millis(10));
    };
    let next: i32 = line
        .split("upgrade: new process ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    // The old process drains: its connection ends with close_notify.
    let mut rest = Vec::new();
    assert!(live.read_to_end(&mut rest).is_ok(), "not a clean TLS close");
    assert_eq!(
        server
            .wait_exit(Duration::from_secs(15))
            .and_then(|s| s.code()),
        Some(0)
    );
    let mut fresh = tls::connect(server.addr, certs.client()).expect("new process handshake");
    tls::echo(&mut fresh, b"new process");
    drop(fresh);
    // SAFETY: signalling the process our server started.
    assert_eq!(unsafe { libc::kill(next, libc::SIGTERM) }, 0);
}

/// Under systemd socket activation (LISTEN_FDS) TLS is the same.
#[test]
fn tls_serves_on_a_socket_from_systemd_activation() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let certs = Certs::new();
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let fd = socket.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", util::binary()])
        .args(certs.args())
        .env("LISTEN_FDS", "1");
    // SAFETY: dup2 and fcntl are async-signal-safe; `fd` stays open in the parent.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = ServerProcess::launch(cmd);
    assert_eq!(server.addr, addr);
    drop(socket);
    let mut client = tls::connect(addr, certs.client()).expect("handshake");
    tls::echo(&mut client, b"activated");
    server.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    assert!(
        client.read_to_end(&mut rest).is_ok(),
        "not a clean TLS close"
    );
    assert_eq!(
        server
            .wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}

/// TLS 1.2 renegotiation (openssl s_client's `R`) is refused by rustls;
/// the connection goes on or is closed with a reason, never a panic, and
/// the loop serves on.
#[test]
fn a_renegotiation_attempt_is_refused_and_the_loop_serves_on() {
    if !require("openssl") {
        return;
    }
    let certs = Certs::new();
    let server = tls_server(&certs, &[]);
    let mut s_client = util::tls::s_client(server.addr, &certs, &["-tls1_2"]);
    let mut stdin = s_client.stdin.take().unwrap();
    wait_log(&server, "TLS handshake done: Some(TLSv1_2)");
    stdin.write_all(b"R\n").unwrap();
    stdin.flush().unwrap();
    thread::sleep(Duration::from_millis(300));
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s_client.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = s_client.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = s_client.wait();
    wait_log(&server, "closed: ");
    let mut client = tls::connect(server.addr, certs.client()).expect("handshake");
    tls::echo(&mut client, b"after renegotiation");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
