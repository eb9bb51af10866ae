//! Echo over real loopback sockets: every byte back, in order, whatever the
//! concurrency, write sizes, half-closes and resets.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use util::clients::{Clients, Plan};
use util::ServerProcess;

fn assert_all_echoed(outcomes: &[util::clients::Outcome], each: u64) {
    for (id, o) in outcomes.iter().enumerate() {
        assert!(o.error.is_none(), "client {id}: error {:?}", o.error);
        assert!(
            o.mismatch.is_none(),
            "client {id}: wrong byte at {:?}",
            o.mismatch
        );
        assert!(o.eof, "client {id}: no EOF");
        assert_eq!(o.sent, each, "client {id} sent");
        assert_eq!(o.received, each, "client {id} received");
    }
}

#[test]
fn a_thousand_interleaved_clients_get_every_byte_back_in_order() {
    util::raise_fd_limit();
    let server = ServerProcess::start(&[]);
    let each = 256 * 1024;
    let mut clients = Clients::connect(server.addr, 1000, Plan::SendThenHalfClose(each), 1);
    let (outcomes, all_done) = clients.run(Duration::from_secs(60), |_| {});
    assert!(all_done, "not every client finished in time");
    assert_all_echoed(&outcomes, each);
}

#[test]
fn a_client_half_close_gets_all_its_bytes_back_then_eof() {
    let server = ServerProcess::start(&[]);
    let each = 3 * 1024 * 1024 + 17;
    let mut clients =
        Clients::connect(server.addr, 1, Plan::SendThenHalfClose(each), 7).max_chunk(64 * 1024);
    let (outcomes, all_done) = clients.run(Duration::from_secs(30), |_| {});
    assert!(all_done);
    assert_all_echoed(&outcomes, each);
    let closed = server.wait_for_log("closed: peer closed", Duration::from_secs(5));
    assert!(closed.is_some(), "log:\n{}", server.log());
}

#[test]
fn a_peer_reset_mid_stream_ends_only_that_connection() {
    let server = ServerProcess::start(&[]);

    // A client that floods without reading, then resets (SO_LINGER 0 + close).
    let flood = TcpStream::connect(server.addr).unwrap();
    flood.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    for _ in 0..200 {
        match (&flood).write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent > 0);
    socket2::SockRef::from(&flood)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(flood);

    let reset = server.wait_for_log("closed: reset by peer", Duration::from_secs(5));
    assert!(reset.is_some(), "log:\n{}", server.log());

    // The server is still serving.
    let mut next = TcpStream::connect(server.addr).unwrap();
    next.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    next.write_all(b"still there?").unwrap();
    next.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    next.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"still there?");
}
