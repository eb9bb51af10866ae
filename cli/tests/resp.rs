//! `--protocol resp` against the real binary: `redis-cli` and
//! `redis-benchmark` where installed, raw sockets for pipelining, protocol
//! errors, QUIT and a drain with a command in flight.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use util::tools::require;
use util::ServerProcess;

fn resp_server(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--protocol", "resp"];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

/// Read exactly `expected.len()` bytes and compare.
fn expect(stream: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0; expected.len()];
    stream
        .read_exact(&mut got)
        .unwrap_or_else(|e| panic!("waiting for {:?}: {e}", String::from_utf8_lossy(expected)));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

/// The server closes: EOF (not a reset) after nothing more.
fn expect_eof(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("clean EOF, not a reset");
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
}

fn tool(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("run tool");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_cli_ping_echo_and_an_unknown_command() {
    if !require("redis-cli") {
        return;
    }
    let server = resp_server(&[]);
    let port = server.addr.port().to_string();
    let cli = |args: &[&str]| {
        tool(
            Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port])
                .args(args),
        )
    };
    assert_eq!(cli(&["PING"]), "PONG\n");
    assert_eq!(cli(&["ECHO", "hello world"]), "hello world\n");
    assert_eq!(cli(&["PING", "msg"]), "msg\n");
    // redis-cli adds a blank line after an error reply.
    assert_eq!(cli(&["GET", "k"]).trim_end(), "ERR unknown command 'GET'");
}

#[test]
fn redis_benchmark_ping_inline_and_mbulk_complete() {
    if !require("redis-benchmark") {
        return;
    }
    let server = resp_server(&[]);
    let port = server.addr.port().to_string();
    let report = tool(Command::new("redis-benchmark").args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "ping",
        "-n",
        "100000",
        "-q",
    ]));
    // `-q` redraws a progress line with CR; the final figures follow the last CR.
    let figures: Vec<&str> = report
        .lines()
        .filter_map(|l| l.rsplit('\r').next())
        .map(str::trim)
        .filter(|l| l.contains("requests per second"))
        .collect();
    eprintln!("{}", figures.join("\n"));
    for test in ["PING_INLINE:", "PING_MBULK:"] {
        assert!(
            figures.iter().any(|l| l.starts_with(test)),
            "no {test} figure in:\n{report}"
        );
    }
}

#[test]
fn pipelined_inline_and_multibulk_commands_are_answered_in_order() {
    let server = resp_server(&[]);
    let mut s = util::connect(server.addr);
    s.write_all(
        b"PING\r\n*1\r\n$4\r\nping\r\n*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n\
          CONFIG GET save\r\nECHO inline\r\n*2\r\n$4\r\nPING\r\n$3\r\nmsg\r\n",
    )
    .unwrap();
    expect(
        &mut s,
        b"+PONG\r\n+PONG\r\n$5\r\nhello\r\n-ERR unknown command 'CONFIG'\r\n\
          $6\r\ninline\r\n$3\r\nmsg\r\n",
    );
    // Still usable after the unknown command; QUIT ends it.
    s.write_all(b"QUIT\r\nPING\r\n").unwrap();
    expect(&mut s, b"+OK\r\n");
    expect_eof(&mut s);
}

#[test]
fn malformed_framing_and_over_limit_lengths_get_a_protocol_error_and_close() {
    let server = resp_server(&["--max-body", "1000"]);
    for (input, reply) in [
        (
            &b"*1\r\nPING\r\n"[..],
            &b"-ERR Protocol error: expected '$', got 'P'\r\n"[..],
        ),
        (
            b"*x\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1001\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n$4\r\nECHO\r\n$1001\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
    ] {
        let mut s = util::connect(server.addr);
        s.write_all(b"PING\r\n").unwrap();
        s.write_all(input).unwrap();
        expect(&mut s, b"+PONG\r\n");
        expect(&mut s, reply);
        s.shutdown(Shutdown::Write).unwrap();
        expect_eof(&mut s);
    }
    // At the limit, ECHO streams the argument back.
    let mut s = util::connect(server.addr);
    let arg = vec![b'x'; 1000];
    s.write_all(b"*2\r\n$4\r\nECHO\r\n$1000\r\n").unwrap();
    s.write_all(&arg).unwrap();
    s.write_all(b"\r\n").unwrap();
    expect(&mut s, b"$1000\r\n");
    expect(&mut s, &arg);
    expect(&mut s, b"\r\n");
}

#[test]
fn sigterm_mid_command_finishes_it_then_closes() {
    let mut server = resp_server(&[]);
    let mut s = util::connect(server.addr);
    s.write_all(b"*2\r\n$4\r\nECHO\r\n$10\r\nhello").unwrap();
    expect(&mut s, b"$10\r\nhello");
    server.signal(libc::SIGTERM);
    server
        .wait_for_log("draining 1 connection", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no drain; log:\n{}", server.log()));
    thread::sleep(Duration::from_millis(50));
    s.write_all(b"world\r\nPING\r\n").unwrap();
    expect(&mut s, b"world\r\n");
    s.shutdown(Shutdown::Write).unwrap();
    expect_eof(&mut s);
    let status = server.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
}

/// A client that sends `x\n` (an unknown inline command, 2 bytes in, a
/// 28-byte error out) over and over and never reads holds the server to
/// its bound: the write high watermark plus one call's output budget plus
/// one read of input, per connection. Before the RESP output budget, one
/// 64 KiB read queued ~832 KiB of errors: ~400 KiB of RSS per connection.
#[test]
fn inline_commands_from_clients_that_never_read_cannot_grow_server_memory() {
    util::raise_fd_limit();
    let server = resp_server(&[]);
    let base_kib = util::procfs::rss_kib(server.pid());
    let chunk: Vec<u8> = b"x\n".iter().copied().cycle().take(64 * 1024).collect();
    let n = 100;
    let _open = util::flood_without_reading(server.addr, n, &chunk); // kept open until measured
    let peak_kib = util::procfs::rss_kib(server.pid());
    let per_conn_kib = 64 + 64 + 64; // high watermark + output budget + input queue
    let bound_kib = base_kib + n as u64 * per_conn_kib + 1024; // + 1 MiB for the process
    eprintln!(
        "inline non-readers: RSS {base_kib} -> {peak_kib} KiB, {} KiB per connection (bound {bound_kib} KiB)",
        (peak_kib - base_kib) / n as u64
    );
    assert!(
        peak_kib <= bound_kib,
        "RSS {peak_kib} KiB over {bound_kib} KiB"
    );
}
