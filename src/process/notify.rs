//! `sd_notify`: telling the service manager what the process is doing.
//!
//! When `NOTIFY_SOCKET` is set (a path, or `@name` for an abstract
//! address), systemd listens there for datagrams of `KEY=value` lines:
//! `READY=1` once we listen, `STATUS=…` for `systemctl status`,
//! `STOPPING=1` when the drain starts, `EXTEND_TIMEOUT_USEC=…` while a long
//! drain goes on, `WATCHDOG=1` as a heartbeat, and `MAINPID=…` when an
//! upgraded process takes over. Sending is best effort: a failure is logged
//! at debug and never stops the server.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, if set and usable.
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::connect(path.to_string_lossy().as_ref()) {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!("NOTIFY_SOCKET={path:?} is unusable: {e}");
                None
            }
        }
    }

    fn connect(path: &str) -> io::Result<Self> {
        let addr = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if path.starts_with('/') {
            SocketAddr::from_pathname(path)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a path or @name",
            ));
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket, addr })
    }

    /// Send one notification (newline-separated `KEY=value` lines).
    pub fn send(&self, message: &str) {
        log::debug!("sd_notify: {}", message.replace('\n', " "));
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            log::debug!("sd_notify failed: {e}");
        }
    }
}

/// The watchdog interval systemd expects heartbeats within, if any
/// (`WATCHDOG_USEC`, for us if `WATCHDOG_PID` is unset or our pid).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("tcp-reactor-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let server = UnixDatagram::bind(&dir).unwrap();
        let n = Notifier::connect(dir.to_str().unwrap()).unwrap();
        n.send("READY=1\nSTATUS=serving");
        let mut buf = [0; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("tcp-reactor-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::connect(&format!("@{name}")).unwrap();
        n.send("STOPPING=1");
        let mut buf = [0; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn a_relative_path_is_refused() {
        assert!(Notifier::connect("relative/sock").is_err());
    }
}
