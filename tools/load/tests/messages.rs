//! `tcp-reactor-load --messages N`: a fixed amount of work, which the echo bench's
//! instruction counts (callgrind) need: every connection completes exactly N echoes,
//! then closes cleanly, and the generator exits 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::thread;

const LOAD: &str = env!("CARGO_BIN_EXE_tcp-reactor-load");

/// A plain echo server on a free loopback port, a thread per connection,
/// serving `conns` connections: the load generator needs an echo server,
/// not tcp-reactor in particular.
fn echo_server(conns: usize) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serving = thread::spawn(move || {
        let mut handlers = Vec::new();
        for stream in listener.incoming().take(conns) {
            let mut stream = stream.expect("accept");
            handlers.push(thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return, // FIN: close ours too
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            }));
        }
        for h in handlers {
            let _ = h.join();
        }
    });
    (addr, serving)
}

/// Run the generator against `addr` with `args`; (exit code, its JSON line).
fn load(addr: SocketAddr, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(LOAD)
        .arg(addr.to_string())
        .args(args)
        .args(["--json", "--drain-timeout", "10"])
        .output()
        .expect("run tcp-reactor-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), serde_json::from_str(line).expect("JSON"))
}

#[test]
fn messages_makes_every_connection_complete_exactly_that_many_echoes() {
    let (addr, server) = echo_server(3);
    let (code, report) = load(
        addr,
        &["-c", "3", "-s", "100", "-d", "2", "--messages", "7"],
    );
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["msgs"], 21, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    server.join().expect("every connection closed cleanly");
}

#[test]
fn messages_below_the_depth_issues_only_that_many() {
    let (addr, server) = echo_server(2);
    let (code, report) = load(addr, &["-c", "2", "-d", "4", "--messages", "3"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["msgs"], 6, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    server.join().expect("every connection closed cleanly");
}
