//! Starting the way production services start: systemd socket activation
//! (`LISTEN_FDS`) and readiness notification (`NOTIFY_SOCKET`).

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{binary, echo_once, tools, ServerProcess};

/// `sh -c 'LISTEN_PID=$$ exec tcp-reactor …'` with `fd` placed at 3: the
/// shell's pid is the server's pid after `exec`, so LISTEN_PID is right.
fn activated_command(fd: i32, listen_pid: Option<&str>, args: &[&str]) -> Command {
    let script = match listen_pid {
        None => "LISTEN_PID=$$ exec \"$0\" \"$@\"".to_owned(),
        Some(pid) => format!("LISTEN_PID={pid} exec \"$0\" \"$@\""),
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &script, binary()])
        .args(args)
        .env("LISTEN_FDS", "1");
    // SAFETY: dup2 and fcntl are async-signal-safe; `fd` stays open in the parent.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec set: clear it instead.
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
    cmd
}

#[test]
fn it_serves_on_a_socket_handed_over_with_listen_fds() {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let mut server = ServerProcess::launch(activated_command(socket.as_raw_fd(), None, &[]));
    assert_eq!(
        server.addr, addr,
        "serves the inherited socket, binds nothing"
    );
    drop(socket); // the server holds its own copy
    echo_once(&mut util::connect(addr), b"activated");
    server.signal(libc::SIGTERM);
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

#[test]
fn sockets_meant_for_another_pid_are_ignored() {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let inherited = socket.local_addr().unwrap();
    let mut cmd = activated_command(socket.as_raw_fd(), Some("1"), &["--listen", "127.0.0.1:0"]);
    cmd.env("RUST_LOG", "debug");
    let server = ServerProcess::launch(cmd);
    assert_ne!(server.addr, inherited, "took a socket meant for pid 1");
    assert!(
        server.log().contains("meant for another process"),
        "{}",
        server.log()
    );
    echo_once(&mut util::connect(server.addr), b"own socket");
}

#[test]
fn a_descriptor_that_is_not_a_socket_is_a_clear_error_with_exit_1() {
    let file = std::fs::File::open("/dev/null").unwrap();
    let out = activated_command(file.as_raw_fd(), None, &[])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("inherited descriptor 3 (LISTEN_FDS) is not a socket"),
        "{stderr}"
    );
}

#[test]
fn listen_together_with_inherited_sockets_is_a_usage_error() {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let out = activated_command(socket.as_raw_fd(), None, &["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--listen cannot be used with 1 inherited socket"),
        "{stderr}"
    );
}

#[test]
fn systemd_socket_activate_starts_it_for_real() {
    if !tools::require("systemd-socket-activate") {
        return;
    }
    // It wants a real port: take a free one (loopback, released at once).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args([
        "-l",
        &format!("127.0.0.1:{port}"),
        "--fdname=echo",
        binary(),
    ]);
    let mut server = ServerProcess::spawn(cmd);
    // It listens itself, and execs the service on the first connection.
    assert!(
        server
            .wait_for_log(" as 3.", Duration::from_secs(10))
            .is_some(),
        "{}",
        server.log()
    );
    let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    first.write_all(b"first").unwrap();
    server.wait_listening();
    assert_eq!(server.addr.port(), port, "serves the activated socket");
    let mut back = [0; 5];
    first.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"first");
    echo_once(
        &mut util::connect(server.addr),
        b"from systemd-socket-activate",
    );
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(0), "{}", server.log());
}

fn recv_until(
    sock: &UnixDatagram,
    needle: &str,
    timeout: Duration,
    seen: &mut Vec<String>,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.contains(needle);
            seen.push(msg);
            if hit {
                return true;
            }
        }
    }
    false
}

#[test]
fn it_notifies_ready_then_stopping_and_pets_the_watchdog() {
    let path = std::env::temp_dir().join(format!("tcp-reactor-notify-test-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut server = ServerProcess::start_with(&[], |cmd| {
        cmd.env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000");
    });
    let mut seen = Vec::new();
    assert!(
        recv_until(&sock, "READY=1", Duration::from_secs(5), &mut seen),
        "{seen:?}"
    );
    assert!(seen.last().unwrap().contains("STATUS="), "{seen:?}");
    assert!(
        recv_until(&sock, "WATCHDOG=1", Duration::from_secs(2), &mut seen),
        "{seen:?}"
    );
    server.signal(libc::SIGTERM);
    assert!(
        recv_until(&sock, "STOPPING=1", Duration::from_secs(5), &mut seen),
        "{seen:?}"
    );
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    let ready = seen.iter().position(|m| m.contains("READY=1")).unwrap();
    let stopping = seen.iter().position(|m| m.contains("STOPPING=1")).unwrap();
    assert!(ready < stopping, "{seen:?}");
    let _ = std::fs::remove_file(&path);
}
