//! RESP pub/sub against the real binary: the same conversation as a real
//! `redis-server`, byte for byte; `redis-cli SUBSCRIBE` / `PUBLISH` on one
//! loop and on two; a subscriber that never reads is cut off as a slow
//! consumer while the others get everything; a drain delivers what was
//! already published before the FIN.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use util::procfs::rss_kib;
use util::tools::require;
use util::ServerProcess;

fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect to {port}: {e}"),
        }
    }
}

/// Read until the bytes read end with `suffix`; return them.
fn read_until_suffix(stream: &mut TcpStream, suffix: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..100_000 {
        if got.ends_with(suffix) {
            return got;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "waiting for {:?} after {:?}: {e}",
                String::from_utf8_lossy(suffix),
                String::from_utf8_lossy(&got)
            ),
        }
    }
    panic!(
        "no {:?} in {:?}",
        String::from_utf8_lossy(suffix),
        String::from_utf8_lossy(&got)
    );
}

/// Build a multibulk command.
fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The conversation both servers get: (connection, bytes sent).
fn script() -> Vec<(usize, Vec<u8>)> {
    let (a, b, c, d, e) = (0, 1, 2, 3, 4);
    vec![
        (a, cmd(&[b"SUBSCRIBE", b"news", b"weather"])),
        (b, cmd(&[b"PSUBSCRIBE", b"n*", b"w?ather", b"h[^a]llo"])),
        (e, cmd(&[b"SUBSCRIBE", b"news"])),
        (e, cmd(&[b"psubscribe", b"ne\\ws", b"[v-x]eather"])), // one pattern per channel: Redis walks patterns in hash order
        (c, cmd(&[b"PUBLISH", b"news", b"hi"])),
        (c, cmd(&[b"PUBLISH", b"weather", b"sun\r\nrain"])),
        (c, cmd(&[b"PUBLISH", b"hello", b""])),
        (c, cmd(&[b"PUBLISH", b"hallo", b"nobody"])),
        (c, b"PUBLISH news inline\r\n".to_vec()),
        (a, cmd(&[b"PING"])),
        (a, cmd(&[b"PING", b"there"])),
        (a, cmd(&[b"GET", b"x"])),
        (a, cmd(&[b"PUBLISH", b"news", b"from a"])),
        (a, cmd(&[b"UNSUBSCRIBE", b"news", b"never"])),
        (a, cmd(&[b"UNSUBSCRIBE"])),
        (a, cmd(&[b"UNSUBSCRIBE"])),
        (a, cmd(&[b"PUNSUBSCRIBE"])),
        (a, cmd(&[b"ECHO", b"back to normal"])),
        (b, cmd(&[b"PUNSUBSCRIBE", b"n*"])),
        (c, cmd(&[b"PUBLISH", b"news", b"again"])),
        (c, cmd(&[b"SUBSCRIBE"])),
        (c, cmd(&[b"PUBLISH", b"news"])),
        (d, b"subscribe x\r\n".to_vec()),
        (d, b"PING\r\n".to_vec()),
        (d, cmd(&[b"RESET"])),
        (d, cmd(&[b"PING"])),
        (e, cmd(&[b"PUNSUBSCRIBE", b"ne\\ws"])),
        (c, cmd(&[b"PUBLISH", b"news", b"last"])),
    ]
}

/// Run the script against a server on `port`: after each step, every
/// connection is sent `PING zz<step>` and read up to its reply, so all
/// replies and messages of a step are collected before the next one.
fn transcript(port: u16) -> Vec<Vec<u8>> {
    let mut conns: Vec<TcpStream> = (0..5).map(|_| connect(port)).collect();
    let mut seen = vec![Vec::new(); conns.len()];
    for (step, (who, bytes)) in script().into_iter().enumerate() {
        conns[who].write_all(&bytes).unwrap();
        // The sender first: once its reply is read, what it published has
        // been routed, and every later PING is answered behind it.
        let order = std::iter::once(who).chain((0..conns.len()).filter(|&i| i != who));
        for i in order {
            let conn = &mut conns[i];
            let mark = format!("zz{step}");
            conn.write_all(&cmd(&[b"PING", mark.as_bytes()])).unwrap();
            let suffix = format!("${}\r\n{mark}\r\n", mark.len());
            let got = read_until_suffix(conn, suffix.as_bytes());
            seen[i].extend_from_slice(&got);
        }
    }
    seen
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pubsub_frames_are_byte_for_byte_those_of_redis_server() {
    if !require("redis-server") {
        return;
    }
    let port = free_port();
    let _redis = Redis(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server"),
    );
    let theirs = transcript(port);
    let ours_server = ServerProcess::start(&["--protocol", "resp"]);
    let ours = transcript(ours_server.addr.port());
    for (i, (ours, theirs)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(
            String::from_utf8_lossy(ours),
            String::from_utf8_lossy(theirs),
            "connection {i}"
        );
    }
}

/// `redis-cli SUBSCRIBE news` in one process, `redis-cli PUBLISH news hi`
/// in another; with several subscribers, on two loops some are elsewhere.
fn redis_cli_publish_reaches_subscribers(threads: &str) {
    if !require("redis-cli") {
        return;
    }
    let server = ServerProcess::start(&["--protocol", "resp", "--threads", threads]);
    let port = server.addr.port().to_string();
    let mut subs: Vec<(Child, BufReader<std::process::ChildStdout>)> = (0..4)
        .map(|_| {
            let mut child = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port, "SUBSCRIBE", "news"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("redis-cli");
            let out = BufReader::new(child.stdout.take().unwrap());
            (child, out)
        })
        .collect();
    // PUBLISH answers how many received it: wait until all four have joined.
    let mut receivers = String::new();
    for _ in 0..500 {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port, "PUBLISH", "news", "hi"])
            .output()
            .expect("redis-cli PUBLISH");
        receivers = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if receivers == "4" {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(receivers, "4", "{}", server.log());
    for (mut child, out) in subs.drain(..) {
        let mut lines = out.lines().map_while(Result::ok);
        let mut window: Vec<String> = Vec::new();
        for line in lines.by_ref().take(200) {
            window.push(line);
            if window.ends_with(&["message".into(), "news".into(), "hi".into()]) {
                break;
            }
        }
        assert!(
            window.ends_with(&["message".into(), "news".into(), "hi".into()]),
            "{window:?}"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn redis_cli_subscribe_sees_redis_cli_publish_on_one_loop() {
    redis_cli_publish_reaches_subscribers("1");
}

#[test]
fn redis_cli_subscribe_sees_redis_cli_publish_across_two_loops() {
    redis_cli_publish_reaches_subscribers("2");
}

fn message_frame(channel: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = b"*3\r\n$7\r\nmessage\r\n".to_vec();
    for part in [channel, payload] {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    let mut p = format!("message {i}:").into_bytes();
    p.resize(len, b'a' + (i % 26) as u8);
    p
}

fn subscribe(port: u16, channel: &[u8]) -> TcpStream {
    let mut s = connect(port);
    s.write_all(&cmd(&[b"SUBSCRIBE", channel])).unwrap();
    let reply = format!(
        "*3\r\n$9\r\nsubscribe\r\n${}\r\n{}\r\n:1\r\n",
        channel.len(),
        String::from_utf8_lossy(channel)
    );
    let mut got = vec![0; reply.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, reply.as_bytes());
    s
}

#[test]
fn a_subscriber_that_never_reads_is_cut_off_and_the_others_get_every_byte() {
    let server = ServerProcess::start(&["--protocol", "resp"]);
    let port = server.addr.port();
    let _slow = subscribe(port, b"news");
    let mut fast: Vec<TcpStream> = (0..2).map(|_| subscribe(port, b"news")).collect();
    let mut publisher = connect(port);
    let rss_before = rss_kib(server.pid());

    const LEN: usize = 8 * 1024;
    const CHUNK: usize = 64; // messages per round: 512 KiB
    let total = 40 * 1024 * 1024 / LEN;
    let mut counts = Vec::new();
    for round in 0..total / CHUNK {
        let mut batch = Vec::new();
        let mut expected = Vec::new();
        for i in round * CHUNK..(round + 1) * CHUNK {
            let p = payload(i, LEN);
            batch.extend_from_slice(&cmd(&[b"PUBLISH", b"news", &p]));
            expected.extend_from_slice(&message_frame(b"news", &p));
        }
        publisher.write_all(&batch).unwrap();
        let mut replies = Vec::new();
        while replies.iter().filter(|&&b| b == b'\n').count() < CHUNK {
            let mut buf = [0u8; 4096];
            let n = publisher.read(&mut buf).expect("PUBLISH replies");
            assert!(n > 0, "publisher closed");
            replies.extend_from_slice(&buf[..n]);
        }
        counts.extend(
            String::from_utf8_lossy(&replies)
                .lines()
                .map(|l| l.trim_start_matches(':').to_owned()),
        );
        for f in &mut fast {
            let mut got = vec![0; expected.len()];
            f.read_exact(&mut got).expect("fast subscriber reads");
            assert!(got == expected, "round {round}: bytes differ");
        }
    }
    let rss_after = rss_kib(server.pid());
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!("RSS {rss_before} KiB -> {rss_after} KiB (+{growth} KiB) for 40 MiB published");
    assert!(growth <= 16 * 1024, "RSS grew by {growth} KiB");
    assert_eq!(counts.first().map(String::as_str), Some("3"));
    assert_eq!(
        counts.last().map(String::as_str),
        Some("2"),
        "slow one dropped"
    );
    assert!(
        server
            .wait_for_log("slow consumer", Duration::from_secs(5))
            .is_some(),
        "{}",
        server.log()
    );
}

/// On one loop a publish is routed in the turn that answers it, so every
/// message the publisher saw counted is queued before the drain starts.
/// With several loops, no loop tells its connections to drain before every
/// loop has stopped accepting and routed what it sent: a batch another loop
/// answered PUBLISH for is delivered before the subscribers' FIN.
#[test]
fn a_drain_delivers_what_was_published_before_the_fin() {
    for threads in ["1", "2", "3"] {
        for _ in 0..3 {
            drain_delivers_what_was_published(threads);
        }
    }
}

fn drain_delivers_what_was_published(threads: &str) {
    let mut server = ServerProcess::start(&["--protocol", "resp", "--threads", threads]);
    let port = server.addr.port();
    let mut subs: Vec<TcpStream> = (0..4).map(|_| subscribe(port, b"news")).collect();
    let mut publisher = connect(port);
    let mut expected = Vec::new();
    let mut batch = Vec::new();
    let n = 64;
    for i in 0..n {
        let p = payload(i, 4096);
        batch.extend_from_slice(&cmd(&[b"PUBLISH", b"news", &p]));
        expected.extend_from_slice(&message_frame(b"news", &p));
    }
    publisher.write_all(&batch).unwrap();
    let mut got = Vec::new();
    while got.iter().filter(|&&b| b == b'\n').count() < n {
        let mut buf = [0u8; 256];
        let k = publisher.read(&mut buf).unwrap();
        assert!(k > 0);
        got.extend_from_slice(&buf[..k]);
    }
    assert_eq!(got, b":4\r\n".repeat(n));
    server.signal(libc::SIGTERM);
    drop(publisher); // its FIN ends its lingering close at once
    for mut s in subs.drain(..) {
        let mut all = Vec::new();
        s.read_to_end(&mut all).expect("clean EOF after everything");
        assert!(
            all == expected,
            "--threads {threads}: {} of {} bytes",
            all.len(),
            expected.len()
        );
    } // dropped: our FIN ends the subscriber's lingering close
    let status = server.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}\n{}", server.log());
}
