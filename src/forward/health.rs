//! Active health checks (`--health-interval`): every interval, a TCP
//! connect to each upstream; one that succeeds marks its upstream up at
//! once (rather than after `--upstream-down-time`), one that is refused,
//! fails or is still unanswered at the next round marks it down — as
//! HAProxy's `check` without a payload.
//!
//! Each loop checks on its own (its upstream states are its own), so N
//! loops make N connects per upstream per interval. A check is a
//! non-blocking connect registered in the loop's poller under a token of
//! its own (see [`Checks::token`]); nothing is sent, and the socket is
//! closed as soon as the answer is known.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::reactor::tokens::{LISTENERS, MAX_LISTENERS};

use super::upstreams::Upstreams;

/// Token of upstream `i`'s check is `Token(FIRST - i)`, below the
/// listeners' range and far above any pair's.
const FIRST: usize = LISTENERS - MAX_LISTENERS - 1;

/// Most upstreams checked (more are left to the passive check).
const MAX_CHECKED: usize = 1 << 16;

/// What a finished connect says.
pub(crate) fn connect_result(sock: &TcpStream) -> io::Result<bool> {
    match sock.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => match sock.peer_addr() {
            Ok(_) => Ok(true),
            Err(e)
                if e.kind() == io::ErrorKind::NotConnected
                    || e.raw_os_error() == Some(libc::EINPROGRESS) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        },
    }
}

/// The checks in flight, one slot per upstream.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    in_flight: Vec<Option<TcpStream>>,
}

impl Checks {
    /// Which upstream's check a token names, if it names one.
    pub(crate) fn upstream_of(token: Token) -> Option<usize> {
        (token.0 <= FIRST && token.0 > FIRST - MAX_CHECKED).then(|| FIRST - token.0)
    }

    fn token(i: usize) -> Token {
        Token(FIRST - i)
    }

    /// A round: a check still unanswered from the last one failed; then a
    /// new connect to every upstream in the list.
    pub(crate) fn round(&mut self, registry: &Registry, upstreams: &mut Upstreams, now: Instant) {
        let n = upstreams.len().min(MAX_CHECKED);
        self.in_flight.resize_with(n, || None);
        for i in 0..n {
            if self.in_flight[i].take().is_some() {
                let addr = upstreams.list()[i].addr;
                verdict(
                    upstreams,
                    i,
                    addr,
                    Err("no answer within the interval"),
                    now,
                );
            }
            let (addr, retired) = (upstreams.list()[i].addr, upstreams.list()[i].retired);
            if retired {
                continue;
            }
            match TcpStream::connect(addr).and_then(|mut sock| {
                registry.register(&mut sock, Self::token(i), Interest::WRITABLE)?;
                Ok(sock)
            }) {
                Ok(sock) => self.in_flight[i] = Some(sock),
                Err(e) => verdict(upstreams, i, addr, Err(&e.to_string()), now),
            }
        }
    }

    /// An event on upstream `i`'s check.
    pub(crate) fn on_event(&mut self, i: usize, upstreams: &mut Upstreams, now: Instant) {
        let Some(Some(sock)) = self.in_flight.get(i) else {
            return;
        };
        let addr = upstreams.list()[i].addr;
        match connect_result(sock) {
            Ok(false) => {} // still under way
            Ok(true) => {
                self.in_flight[i] = None;
                verdict(upstreams, i, addr, Ok(()), now);
            }
            Err(e) => {
                self.in_flight[i] = None;
                verdict(upstreams, i, addr, Err(&e.to_string()), now);
            }
        }
    }
}

/// Apply a check's result; log only the news (up → down, down → up).
fn verdict(
    upstreams: &mut Upstreams,
    i: usize,
    addr: SocketAddr,
    result: Result<(), &str>,
    now: Instant,
) {
    match result {
        Ok(()) => {
            if upstreams.connected(i) {
                log::info!("upstream {addr} is up again (health check)");
            }
        }
        Err(why) => {
            if upstreams.failed(i, now) {
                log::warn!("upstream {addr}: health check failed ({why}): marked down");
            }
        }
    }
}
