//! `--protocol http` against the real binary: real clients (curl, wrk, ab)
//! where they are installed, raw sockets for what a client library would
//! hide (pipelining, a drain mid-request, a slowloris, malformed input).

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use util::tools::require;
use util::ServerProcess;

const HELLO: &[u8] = b"Hello, World!";

fn http_server(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--protocol", "http"];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

/// One response read off the wire.
#[derive(Debug)]
struct Response {
    status: String,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Read one response (head, then `Content-Length` bytes of body, none for
/// a `HEAD`), keeping what follows it in `buf`.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Response {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf);
    };
    let head = String::from_utf8(buf[..end].to_vec()).expect("ASCII head");
    buf.drain(..end);
    let status = head.lines().next().unwrap_or_default().to_string();
    let mut response = Response {
        status,
        head,
        body: Vec::new(),
    };
    let len: usize = if head_request {
        0
    } else {
        response
            .header("content-length")
            .expect("Content-Length")
            .parse()
            .unwrap()
    };
    while buf.len() < len {
        fill(stream, buf);
    }
    response.body = buf.drain(..len).collect();
    response
}

fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0; 16 * 1024];
    let n = stream.read(&mut chunk).expect("read (timed out?)");
    assert!(
        n > 0,
        "EOF mid-response; have {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

/// The server closes: EOF (not a reset) after nothing more.
fn assert_eof(stream: &mut TcpStream, buf: &[u8]) {
    assert!(buf.is_empty(), "unexpected bytes: {buf:?}");
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("clean EOF, not a reset");
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
}

fn output(cmd: &mut Command) -> (String, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("run tool");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn curl_gets_heads_posts_and_reuses_the_connection() {
    if !require("curl") {
        return;
    }
    let server = http_server(&[]);
    let url = format!("http://{}/", server.addr);
    let (stdout, stderr) = output(Command::new("curl").args(["-sv", &url, &url]));
    assert_eq!(stdout, "Hello, World!Hello, World!");
    assert!(
        stderr.contains("Re-using existing connection") || stderr.contains("Reusing existing"),
        "second request did not reuse the connection:\n{stderr}"
    );
    assert_eq!(stderr.matches("Connected to").count(), 1, "{stderr}");

    let (head, _) = output(Command::new("curl").args(["-sI", &url]));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 13\r\n"), "{head}");
    assert!(head.contains("Date: "), "{head}");

    let echo = format!("http://{}/echo", server.addr);
    let (body, _) =
        output(Command::new("curl").args(["-s", "--data-binary", "hello world", &echo]));
    assert_eq!(body, "hello world");

    // A 200 KB body through a file: streamed back byte for byte.
    let big: String = (0..200_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let path = std::env::temp_dir().join(format!("tcp-reactor-http-{}.txt", std::process::id()));
    std::fs::write(&path, &big).unwrap();
    let data = format!("@{}", path.display());
    let (body, _) = output(Command::new("curl").args(["-s", "--data-binary", &data, &echo]));
    let _ = std::fs::remove_file(&path);
    assert!(body == big, "echoed {} of {} bytes", body.len(), big.len());
}

#[test]
fn wrk_keep_alive_load_has_no_socket_errors_and_only_2xx() {
    if !require("wrk") {
        return;
    }
    let server = http_server(&[]);
    let url = format!("http://{}/", server.addr);
    let (report, _) = output(Command::new("wrk").args(["-t1", "-c50", "-d2s", &url]));
    eprintln!("{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    let rps: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in:\n{report}"));
    assert!(rps > 100.0, "{report}");

    // wrk resets every connection whose last response it did not read:
    // the peer left between messages and nothing was lost, so the
    // operator's counters say `aborted`, not `reset`.
    let stats = stats_once_all_closed(&server);
    assert!(stats.contains(" reset 0 "), "{stats}");
}

/// The `SIGUSR1` counters line, once every connection has closed.
fn stats_once_all_closed(server: &ServerProcess) -> String {
    for asked in 1..=50 {
        server.signal(libc::SIGUSR1);
        thread::sleep(Duration::from_millis(100));
        let lines = server.log_lines_with("stats: ");
        assert_eq!(lines.len(), asked, "{}", server.log());
        if lines[asked - 1].contains("stats: open 0,") {
            eprintln!("{}", lines[asked - 1]);
            return lines[asked - 1].clone();
        }
    }
    panic!("connections still open after 5 s:\n{}", server.log());
}

#[test]
fn ab_keep_alive_10000_requests_none_failed() {
    if !require("ab") {
        return;
    }
    let server = http_server(&[]);
    let url = format!("http://{}/", server.addr);
    let (report, _) = output(Command::new("ab").args(["-k", "-n", "10000", "-c", "20", &url]));
    let field = |name: &str| -> u64 {
        report
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{report}"))
    };
    eprintln!(
        "ab: {} req/s",
        report
            .lines()
            .find(|l| l.starts_with("Requests per second"))
            .unwrap_or("?")
    );
    assert_eq!(field("Complete requests:"), 10_000, "{report}");
    assert_eq!(field("Failed requests:"), 0, "{report}");
    assert_eq!(field("Keep-Alive requests:"), 10_000, "{report}");

    // ab ends some connections with a reset after their last response:
    // nothing was lost, so the operator's counters must not call it one.
    let stats = stats_once_all_closed(&server);
    assert!(stats.contains(" reset 0 "), "{stats}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = http_server(&[]);
    let mut s = util::connect(server.addr);
    s.write_all(
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nsecond\
          HEAD /3 HTTP/1.1\r\nHost: x\r\n\r\n\
          PUT /4 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n!\
          GET /5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    let first = read_response(&mut s, &mut buf, false);
    assert_eq!(first.body, HELLO);
    let second = read_response(&mut s, &mut buf, false);
    assert_eq!(second.body, b"second");
    let third = read_response(&mut s, &mut buf, true);
    assert_eq!(third.header("content-length"), Some("13"));
    let fourth = read_response(&mut s, &mut buf, false);
    assert_eq!(fourth.status, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(fourth.header("allow"), Some("GET, HEAD, POST"));
    let fifth = read_response(&mut s, &mut buf, false);
    assert_eq!(fifth.body, HELLO);
    assert_eq!(fifth.header("connection"), Some("close"));
    assert_eof(&mut s, &buf);
}

#[test]
fn http_1_0_closes_unless_keep_alive_is_asked_for() {
    let server = http_server(&[]);
    let mut s = util::connect(server.addr);
    let mut buf = Vec::new();
    s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut buf, false);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, false);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eof(&mut s, &buf);
}

#[test]
fn sigterm_mid_body_completes_the_response_with_connection_close() {
    let mut server = http_server(&[]);
    let mut s = util::connect(server.addr);
    // An idle keep-alive connection alongside: it is closed at once.
    let mut idle = util::connect(server.addr);
    let mut idle_buf = Vec::new();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_response(&mut idle, &mut idle_buf, false);

    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        .unwrap();
    thread::sleep(Duration::from_millis(200)); // let the server read the first half
    server.signal(libc::SIGTERM);
    server
        .wait_for_log("draining 2 connection", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no drain; log:\n{}", server.log()));
    assert_eof(&mut idle, &idle_buf);
    drop(idle); // our FIN ends the server's lingering close of it

    s.write_all(b"world").unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false);
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    assert_eq!(r.body, b"helloworld");
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eof(&mut s, &buf);
    let status = server.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
}

#[test]
fn a_slowloris_head_gets_408_and_is_closed() {
    let server = http_server(&["--header-timeout", "0.5"]);
    let mut s = util::connect(server.addr);
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    // Trickle a header line every 100 ms: always active, never finished.
    let mut trickler = s.try_clone().unwrap();
    let trickle = thread::spawn(move || {
        for i in 0..30 {
            thread::sleep(Duration::from_millis(100));
            if trickler
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .is_err()
            {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false);
    let elapsed = start.elapsed();
    assert_eq!(r.status, "HTTP/1.1 408 Request Timeout");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest); // EOF once the linger sees our FIN or ends
    let _ = s.shutdown(Shutdown::Both);
    trickle.join().unwrap();
    assert!(
        server
            .wait_for_log("request head too slow", Duration::from_secs(5))
            .is_some(),
        "log:\n{}",
        server.log()
    );
}

#[test]
fn malformed_and_oversized_requests_get_4xx_and_close() {
    let server = http_server(&["--max-body", "100"]);
    for (request, status) in [
        (
            b"BAD\x01 / HTTP/1.1\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000)).into_bytes(),
            "HTTP/1.1 414 URI Too Long",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
                "a".repeat(9000)
            )
            .into_bytes(),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
            "HTTP/1.1 505 HTTP Version Not Supported",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n".to_vec(),
            "HTTP/1.1 413 Content Too Large",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            "HTTP/1.1 501 Not Implemented",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX"
                .to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
                .to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n"
                .to_vec(),
            "HTTP/1.1 413 Content Too Large",
        ),
    ] {
        let mut s = util::connect(server.addr);
        s.write_all(&request).unwrap();
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf, false);
        assert_eq!(r.status, status);
        assert_eq!(r.header("connection"), Some("close"));
        s.shutdown(Shutdown::Write).unwrap();
        assert_eof(&mut s, &buf);
    }
    // The server is still serving.
    let mut s = util::connect(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, &mut Vec::new(), false).body, HELLO);
}

/// Run curl with `stdin` on its standard input; its standard output.
fn curl_with_stdin(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("curl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || input.write_all(&stdin));
    let out = child.wait_with_output().expect("curl output");
    writer.join().unwrap().expect("curl's stdin");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    out.stdout
}

/// A body every byte value, 300 KiB: past the 16 KiB hold and the output
/// budget, so it streams through in many reads and chunks.
fn binary_body() -> Vec<u8> {
    (0..300 * 1024)
        .map(|i: u32| (i * 7 + i / 251) as u8)
        .collect()
}

/// RFC 9112 §7.1: curl sends standard input chunked (`-T -`); the echo
/// comes back byte for byte, itself chunked.
#[test]
fn curl_upload_from_stdin_is_sent_chunked_and_echoed_byte_exact() {
    if !require("curl") {
        return;
    }
    let server = http_server(&[]);
    let url = format!("http://{}/echo", server.addr);
    let body = binary_body();
    let echoed = curl_with_stdin(&["-sS", "-X", "POST", "-T", "-", &url], &body);
    assert!(
        echoed == body,
        "{} B back for {} B",
        echoed.len(),
        body.len()
    );
    let head = curl_with_stdin(
        &[
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-T",
            "-",
            &url,
        ],
        b"hi",
    );
    let head = String::from_utf8_lossy(&head);
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
}

/// `--data-binary @file` with a chunked header: the same. Over
/// `--max-body`: 413 when the excess is announced within the first 16 KiB
/// of the body (the response head waits that long); later, the response
/// already went out as 200, so it is cut short (no last chunk) and the
/// connection closed: curl reports a partial transfer.
#[test]
fn curl_data_binary_with_transfer_encoding_chunked_is_echoed_byte_exact() {
    if !require("curl") {
        return;
    }
    let server = http_server(&["--max-body", "400000"]);
    let url = format!("http://{}/echo", server.addr);
    let dir = std::env::temp_dir().join(format!("tcp-reactor-chunked-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("body");
    let body = binary_body();
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{}", file.display());
    let chunked = |url: &str| {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &data,
            url,
        ])
        .stdin(Stdio::null());
        cmd.output().expect("run curl")
    };
    let out = chunked(&url);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout == body,
        "{} B back for {} B",
        out.stdout.len(),
        body.len()
    );

    std::fs::write(&file, vec![b'z'; 500_000]).unwrap();
    let out = chunked(&url);
    assert!(
        !out.status.success(),
        "a cut response must not look complete"
    );
    assert!(out.stdout.len() < 500_000, "{} B back", out.stdout.len());

    let small = http_server(&["--max-body", "100"]);
    std::fs::write(&file, vec![b'z'; 101]).unwrap();
    let out = chunked(&format!("http://{}/echo", small.addr));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Content Too Large\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// RFC 9110 §2.5: a later minor version is served as the highest we know.
#[test]
fn http_1_2_is_served_as_http_1_1() {
    let server = http_server(&[]);
    let mut s = util::connect(server.addr);
    s.write_all(b"GET / HTTP/1.2\r\nHost: x\r\n\r\nPOST /echo HTTP/1.9\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false);
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    assert_eq!(r.header("connection"), None, "kept alive, as 1.1");
    assert_eq!(r.body, HELLO);
    let r = read_response(&mut s, &mut buf, false);
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    assert_eq!(r.body, b"abc");
}

/// Pipelined requests can ask for far more than they weigh. The protocol
/// stops at its output budget and the connection offers the rest again as
/// the output drains: every request is still answered, in order.
#[test]
fn four_thousand_pipelined_gets_are_all_answered_even_past_the_output_budget() {
    let server = http_server(&[]);
    let mut s = util::connect(server.addr);
    let one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 4000).collect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        thread::spawn(move || w.write_all(&many).unwrap())
    };
    let mut all = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    while all.windows(4).filter(|w| w == b"\r\n\r\n").count() < 4000 {
        assert!(
            Instant::now() < deadline,
            "stalled after {} bytes",
            all.len()
        );
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        all.extend_from_slice(&buf[..n]);
    }
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 4000);
    assert_eq!(text.matches("Hello, World!").count(), 4000);
}

/// A client that pipelines requests and never reads holds the server to
/// its bound, measured as RSS (what the allocator holds, not `len()`):
/// the write high watermark plus one call's output, plus the input queue
/// (one read), 192 KiB per connection. (The budget matters for *slow*
/// readers too, whose unpausing lets one 64 KiB read of queued requests
/// through; that is pinned by the protocol's own unit test.)
///
/// Before: 270–330 KiB per connection. Output grew by doubling (44 → 88
/// → 176 KiB of capacity for 108 KiB owed), the input queue doubled to
/// 128 KiB behind a partial request (a whole read appended to it), and
/// each connection kept the 1 024 access-log reports (72 KiB) a burst had
/// grown for its whole life.
#[test]
fn pipelining_clients_that_never_read_cannot_grow_server_memory() {
    util::raise_fd_limit();
    let server = http_server(&[]);
    let base_kib = util::procfs::rss_kib(server.pid());
    let one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let chunk: Vec<u8> = one.iter().copied().cycle().take(one.len() * 2400).collect();
    let n = 100;
    let _open = util::flood_without_reading(server.addr, n, &chunk); // kept open until measured
    let peak_kib = util::procfs::rss_kib(server.pid());
    let per_conn_kib = 64 + 64 + 64; // high watermark + output budget + input queue
    let bound_kib = base_kib + n as u64 * per_conn_kib + 1024; // + 1 MiB for the process
    eprintln!(
        "pipelining non-readers: RSS {base_kib} -> {peak_kib} KiB, {} KiB per connection (bound {bound_kib} KiB)",
        (peak_kib - base_kib) / n as u64
    );
    assert!(
        peak_kib <= bound_kib,
        "RSS {peak_kib} KiB over {bound_kib} KiB"
    );
}
