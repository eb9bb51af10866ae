//! The examples, run for real: each is started on a loopback port, driven
//! over TCP, and stopped with a signal; stdout is checked line by line.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// `target/<profile>/examples/<name>`, next to this test's `deps/`.
fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(name))
        .unwrap()
}

struct Example {
    child: Child,
    lines: mpsc::Receiver<String>,
    addr: SocketAddr,
}

impl Example {
    fn start(name: &str, args: &[&str]) -> Self {
        let path = example_path(name);
        assert!(path.exists(), "{path:?} missing: `cargo build --examples`");
        let mut child = Command::new(path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start example");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut example = Self {
            child,
            lines,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let first = example.line();
        example.addr = first
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("first line {first:?}"));
        example
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line on stdout")
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child with a valid signal number.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    fn wait_success(&mut self) {
        for _ in 0..1000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status:?}");
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        panic!("example did not exit");
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(addr: SocketAddr) -> (BufReader<TcpStream>, TcpStream) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (BufReader::new(s.try_clone().unwrap()), s)
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("a line");
    line
}

#[test]
fn minimal_echoes_runs_its_cleanup_hook_and_drains_on_each_quit_signal() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT] {
        let mut ex = Example::start("minimal", &["127.0.0.1:0"]);
        let (mut r, mut w) = connect(ex.addr);
        w.write_all(b"hello\n").unwrap();
        assert_eq!(read_line(&mut r), "hello\n");
        drop((r, w));
        assert_eq!(ex.line(), "handler done.");
        ex.signal(signal);
        assert_eq!(ex.line(), "All done.");
        ex.wait_success();
    }
}

#[test]
fn chat_sends_each_line_to_every_other_client_with_join_and_leave_notices() {
    let mut ex = Example::start("chat", &["--listen", "127.0.0.1:0"]);
    let (mut a_r, mut a_w) = connect(ex.addr);
    let a_name = a_w.local_addr().unwrap();
    let (mut b_r, mut b_w) = connect(ex.addr);
    let b_name = b_w.local_addr().unwrap();
    assert_eq!(read_line(&mut a_r), format!("* {b_name} joined\n"));
    let (mut c_r, c_w) = connect(ex.addr);
    let c_name = c_w.local_addr().unwrap();
    assert_eq!(read_line(&mut a_r), format!("* {c_name} joined\n"));
    assert_eq!(read_line(&mut b_r), format!("* {c_name} joined\n"));

    a_w.write_all(b"hi all\r\n").unwrap();
    assert_eq!(read_line(&mut b_r), format!("{a_name}: hi all\n"));
    assert_eq!(read_line(&mut c_r), format!("{a_name}: hi all\n"));
    b_w.write_all(b"hello a\n").unwrap();
    assert_eq!(read_line(&mut a_r), format!("{b_name}: hello a\n"));
    assert_eq!(read_line(&mut c_r), format!("{b_name}: hello a\n"));

    drop(c_w);
    drop(c_r);
    assert_eq!(
        read_line(&mut a_r),
        format!("* {c_name} left (peer closed)\n")
    );
    assert_eq!(
        read_line(&mut b_r),
        format!("* {c_name} left (peer closed)\n")
    );

    // SIGTERM: what was sent goes out, then each gets EOF.
    b_w.write_all(b"last words\n").unwrap();
    assert_eq!(read_line(&mut a_r), format!("{b_name}: last words\n"));
    ex.signal(libc::SIGTERM);
    let mut rest = String::new();
    a_r.read_to_string(&mut rest).expect("EOF after the drain");
    assert!(!rest.contains(": "), "no chat after the drain: {rest:?}");
    drop((a_w, b_w, b_r));
    assert_eq!(ex.line(), "All done.");
    ex.wait_success();
}

#[test]
fn kv_state_set_on_one_connection_is_seen_on_another() {
    let mut ex = Example::start("kv", &["--listen", "127.0.0.1:0"]);
    let (mut a_r, mut a_w) = connect(ex.addr);
    let (mut b_r, mut b_w) = connect(ex.addr);
    a_w.write_all(b"SET city Lyon\n").unwrap();
    assert_eq!(read_line(&mut a_r), "OK\n");
    b_w.write_all(b"GET city\nDEL city\nGET city\nQUIT\n")
        .unwrap();
    let mut all = String::new();
    b_r.read_to_string(&mut all).unwrap();
    assert_eq!(all, "Lyon\n1\n(nil)\nbye\n");
    drop((a_r, a_w));
    ex.signal(libc::SIGTERM);
    assert_eq!(ex.line(), "All done.");
    ex.wait_success();
}

/// The proof that a stranger can build on the library: memcached's text
/// protocol on the public API alone, on two loops. memcached's own
/// conformance checker passes every ascii test (as memcached 1.6.18 does:
/// 27 of 27), pymemcache round-trips 1 MiB values (this is a debug build:
/// a 1 MiB reply from one call must not trip an assertion), and SIGTERM
/// drains.
#[test]
fn memcached_passes_memcapable_round_trips_a_mebibyte_and_drains() {
    let mut ex = Example::start("memcached", &["--listen", "127.0.0.1:0", "--threads", "2"]);
    let port = ex.addr.port().to_string();
    if util::tools::require("memccapable") {
        let run = Command::new("memccapable")
            .args(["-a", "-h", "127.0.0.1", "-p", &port, "-t", "10"])
            .output()
            .expect("run memccapable");
        let text = String::from_utf8_lossy(&run.stdout).into_owned()
            + &String::from_utf8_lossy(&run.stderr);
        let passed = text.matches("[pass]").count();
        assert!(
            run.status.success() && text.contains("All tests passed") && passed == 27,
            "{passed} of 27 passed:\n{text}"
        );
    }
    let python = "/usr/bin/python3";
    let has_pymemcache = Command::new(python)
        .args(["-c", "import pymemcache"])
        .status()
        .is_ok_and(|s| s.success());
    if util::tools::require_that("pymemcache (python3-pymemcache)", has_pymemcache) {
        let script = format!(
            "from pymemcache.client.base import Client\n\
             c = Client(('127.0.0.1', {port}))\n\
             big = bytes(i % 251 for i in range(1024 * 1024))\n\
             assert c.set('big', big)\n\
             assert c.get('big') == big\n\
             assert c.add('big', b'x', noreply=False) is False\n\
             c.set('n', '41'); assert c.incr('n', 1) == 42\n\
             assert c.get_many(['big', 'n', 'none']) == {{'big': big, 'n': b'42'}}\n\
             assert c.delete('big') and c.get('big') is None\n\
             print('ok')\n"
        );
        let run = Command::new(python)
            .args(["-c", &script])
            .output()
            .expect("run pymemcache");
        assert!(
            run.status.success() && String::from_utf8_lossy(&run.stdout).trim() == "ok",
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    ex.signal(libc::SIGTERM);
    assert_eq!(ex.line(), "All done.");
    ex.wait_success();
}
