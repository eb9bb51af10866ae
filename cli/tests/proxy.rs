//! PROXY protocol in front of the real binary, over raw sockets: the
//! header is read whole (however it is split), never echoed, its client
//! becomes the peer in the logs, and bad or untrusted headers close only
//! their own connection.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use util::ServerProcess;

const V1: &[u8] = b"PROXY TCP4 192.0.2.10 127.0.0.1 40123 8000\r\n";

fn v2_tcp4_with_tlv() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    let tlv = [0x04u8, 0x00, 0x03, b'a', b'b', b'c'];
    h.extend_from_slice(&((12 + tlv.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[198, 51, 100, 20, 127, 0, 0, 1]);
    h.extend_from_slice(&40124u16.to_be_bytes());
    h.extend_from_slice(&8000u16.to_be_bytes());
    h.extend_from_slice(&tlv);
    h
}

const V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// Send `pieces` with pauses between them (separate reads on the server),
/// half-close, and return everything echoed.
fn send_in_pieces(addr: SocketAddr, pieces: &[&[u8]]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for piece in pieces {
        s.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    back
}

#[test]
fn a_v1_header_split_across_reads_is_consumed_and_names_the_peer() {
    let server = ServerProcess::start(&["--proxy-protocol", "v1"]);
    for cut in [1, 6, 20, V1.len() - 1] {
        let back = send_in_pieces(server.addr, &[&V1[..cut], &V1[cut..], b"payload"]);
        assert_eq!(back, b"payload", "cut at {cut}");
    }
    // Header and payload in one write: the bytes after the header are payload.
    let back = send_in_pieces(server.addr, &[&[V1, b"same read"].concat()]);
    assert_eq!(back, b"same read");
    let log = server.log();
    assert!(
        log.contains("PROXY header: client 192.0.2.10:40123"),
        "{log}"
    );
    assert!(
        log.contains("192.0.2.10:40123 closed: peer closed"),
        "{log}"
    );
    assert!(log.contains("192.0.2.10:40123 handler done."), "{log}");
}

#[test]
fn v2_with_tlvs_and_local_health_checks_are_handled() {
    let server = ServerProcess::start(&["--proxy-protocol", "any"]);
    let v2 = v2_tcp4_with_tlv();
    let back = send_in_pieces(server.addr, &[&v2[..13], &v2[13..17], &v2[17..], b"binary"]);
    assert_eq!(back, b"binary");
    assert!(
        server
            .log()
            .contains("PROXY header: client 198.51.100.20:40124"),
        "{}",
        server.log()
    );

    // LOCAL (what HAProxy's v2 health checks send): the socket's own peer stands.
    let back = send_in_pieces(server.addr, &[V2_LOCAL, b"check"]);
    assert_eq!(back, b"check");
    assert!(server
        .log()
        .contains("without a client (LOCAL/UNKNOWN): keeping 127.0.0.1:"));

    // v1 also accepted in `any` mode.
    assert_eq!(send_in_pieces(server.addr, &[V1, b"one"]), b"one");
}

#[test]
fn bad_headers_close_only_their_own_connection() {
    let server = ServerProcess::start(&["--proxy-protocol", "v2"]);
    let mut good = TcpStream::connect(server.addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    good.write_all(&[v2_tcp4_with_tlv().as_slice(), b"keep"].concat())
        .unwrap();
    let mut four = [0; 4];
    good.read_exact(&mut four).unwrap();

    for bad in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],            // no header at all
        b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n", // v1 where v2 is required
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",   // v2 length over the cap
    ] {
        let back = send_in_pieces(server.addr, &[bad]);
        assert!(back.is_empty(), "echoed behind a bad header: {back:?}");
    }
    let closed = server.log_lines_with("closed: protocol error");
    assert_eq!(closed.len(), 3, "{}", server.log());

    good.write_all(b"more").unwrap();
    good.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"more", "the good connection is untouched");
}

#[test]
fn a_header_that_never_completes_times_out() {
    let server = ServerProcess::start(&["--proxy-protocol", "v1", "--proxy-timeout", "0.3"]);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0; 1];
    let got = slow.read(&mut b);
    assert!(
        matches!(got, Ok(0)) || matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "{got:?}"
    );
    let closed = server.wait_for_log("no complete PROXY header in time", Duration::from_secs(3));
    assert!(closed.is_some(), "{}", server.log());
}

/// `--proxy-timeout 0` is no limit (like every `*-timeout` flag's 0): a
/// header that is slow to come is waited for, then served.
#[test]
fn proxy_timeout_0_waits_for_the_header_however_long_it_takes() {
    let server = ServerProcess::start(&["--proxy-protocol", "v1", "--proxy-timeout", "0"]);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(&V1[..10]).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut b = [0; 7];
    let early = slow.read(&mut b);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "closed or answered while the header was incomplete: {early:?}; log:\n{}",
        server.log()
    );
    slow.write_all(&[&V1[10..], b"payload"].concat()).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"payload");
    assert!(
        server.log_lines_with("no complete PROXY header").is_empty(),
        "{}",
        server.log()
    );
}

#[test]
fn peers_outside_proxy_from_are_closed_at_once() {
    let server = ServerProcess::start(&[
        "--proxy-protocol",
        "v1",
        "--proxy-from",
        "10.0.0.0/8,192.168.0.0/16",
    ]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    let _ = s.write_all(&[V1, b"forged"].concat()); // may already be reset
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    assert!(back.is_empty(), "an untrusted peer was served");
    let line = server.wait_for_log(
        "not in --proxy-from, may not send PROXY headers",
        Duration::from_secs(3),
    );
    assert!(line.is_some(), "{}", server.log());
}
