//! `--access-log PATH|-`: one line per HTTP response (the PROXY client
//! when there is one), one per finished echo or resp connection, written
//! by a thread of its own, and reopened on SIGHUP for logrotate.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{echo_and_close, ServerProcess};

fn temp_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "tcp-reactor-access-{}-{name}.log",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// SIGTERM, wait for exit 0, and return the log file's lines.
fn stop_and_read(mut server: ServerProcess, path: &PathBuf) -> Vec<String> {
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    let text = std::fs::read_to_string(path).expect("the access log exists");
    let _ = std::fs::remove_file(path);
    text.lines().map(str::to_owned).collect()
}

/// Wait (bounded) until the file has `n` lines.
fn wait_lines(path: &PathBuf, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `2026-11-26T00:26:32.123Z`: a UTC time with milliseconds.
fn assert_time(field: &str) {
    let b = field.as_bytes();
    assert_eq!(b.len(), 24, "{field}");
    assert!(
        b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
        "{field}"
    );
}

#[test]
fn each_http_response_is_one_line_with_client_request_status_bytes_and_duration() {
    let path = temp_path("http");
    let server =
        ServerProcess::start(&["--protocol", "http", "--access-log", path.to_str().unwrap()]);
    let mut stream = util::connect(server.addr);
    let local = stream.local_addr().unwrap();
    stream
        .write_all(
            b"GET /hello?x=1 HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /nope HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nzz\
              GET /q\"uote HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    drop(stream); // our FIN ends the server's linger
    let lines = stop_and_read(server, &path);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let fields: Vec<Vec<&str>> = lines.iter().map(|l| l.split(' ').collect()).collect();
    for (f, (request, status)) in fields.iter().zip([
        ("\"GET /hello?x=1\"", "200"),
        ("\"POST /nope\"", "404"),
        ("\"GET /q\\x22uote\"", "200"),
    ]) {
        assert_time(f[0]);
        assert_eq!(f[1], local.to_string());
        assert_eq!(f[2], "http");
        assert_eq!(format!("{} {}", f[3], f[4]), request);
        assert_eq!(f[5], status);
        let seconds: f64 = f[7].parse().expect("a duration in seconds");
        assert!(seconds >= 0.0);
    }
    // Bytes: each response's head and body, exactly as sent.
    let total: usize = fields.iter().map(|f| f[6].parse::<usize>().unwrap()).sum();
    assert_eq!(total, response.len());
}

#[test]
fn behind_a_proxy_the_line_names_the_client_from_the_proxy_header() {
    let path = temp_path("proxy");
    let server = ServerProcess::start(&[
        "--protocol",
        "http",
        "--proxy-protocol",
        "v1",
        "--access-log",
        path.to_str().unwrap(),
    ]);
    let mut stream = util::connect(server.addr);
    stream
        .write_all(
            b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n\
              GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    drop(stream); // our FIN ends the server's linger
    let lines = stop_and_read(server, &path);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(" 203.0.113.7:5555 http \"GET /\" 200 "),
        "{}",
        lines[0]
    );
}

#[test]
fn each_echo_and_resp_connection_is_one_line_with_lifetime_bytes_and_reason() {
    let path = temp_path("echo");
    let server = ServerProcess::start(&["--access-log", path.to_str().unwrap()]);
    echo_and_close(server.addr, b"hello\n");
    let mut open = util::connect(server.addr);
    util::echo_once(&mut open, b"0123456789");
    let local = open.local_addr().unwrap();
    drop(open); // the peer's FIN: closed once its echo is written
    assert_eq!(wait_lines(&path, 2).len(), 2);
    let lines = stop_and_read(server, &path);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let first: Vec<&str> = lines[0].splitn(8, ' ').collect();
    assert_time(first[0]);
    assert_eq!(&first[2..4], ["echo", "conn"]);
    let lifetime: f64 = first[4].parse().expect("lifetime in seconds");
    assert!(lifetime >= 0.0);
    assert_eq!(&first[5..], ["6", "6", "\"peer closed\""]);
    let second: Vec<&str> = lines[1].splitn(8, ' ').collect();
    assert_eq!(second[1], local.to_string());
    assert_eq!(&second[5..7], ["10", "10"]);

    let path = temp_path("resp");
    let server =
        ServerProcess::start(&["--protocol", "resp", "--access-log", path.to_str().unwrap()]);
    let mut stream = util::connect(server.addr);
    stream.write_all(b"PING\r\nQUIT\r\n").unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"+PONG\r\n+OK\r\n");
    drop(stream);
    let lines = stop_and_read(server, &path);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(" resp conn "), "{}", lines[0]);
    assert!(
        lines[0].ends_with(" 12 12 \"protocol closed\""),
        "{}",
        lines[0]
    );
}

#[test]
fn sighup_reopens_the_file_after_logrotate_moved_it() {
    let path = temp_path("rotate");
    let rotated = path.with_extension("log.1");
    let _ = std::fs::remove_file(&rotated);
    let server = ServerProcess::start(&["--access-log", path.to_str().unwrap()]);
    echo_and_close(server.addr, b"before\n");
    assert_eq!(wait_lines(&path, 1).len(), 1);
    std::fs::rename(&path, &rotated).unwrap();
    server.signal(libc::SIGHUP);
    server
        .wait_for_log("SIGHUP: reopening the access log", Duration::from_secs(5))
        .expect("SIGHUP is logged");
    echo_and_close(server.addr, b"after the rotation\n");
    let old = std::fs::read_to_string(&rotated).unwrap();
    let lines = stop_and_read(server, &path);
    assert_eq!(old.lines().count(), 1, "{old}");
    assert!(old.contains(" 7 7 "), "{old}");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(" 19 19 "), "{}", lines[0]);
    let _ = std::fs::remove_file(&rotated);
}

#[test]
fn dash_writes_the_access_log_to_standard_output() {
    let mut child = Command::new(util::BINARY)
        .args(["--listen", "127.0.0.1:0", "--access-log", "-"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "no listening line"
        );
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let mut stream = util::connect(addr);
    stream.write_all(b"x").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains(" echo conn ") && stdout.contains(" 1 1 \"peer closed\""));
}
