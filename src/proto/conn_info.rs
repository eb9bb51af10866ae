//! What a connection looked like when it ended: the facts a protocol's
//! [`on_closed`](super::Protocol::on_closed) and the server's cleanup hook
//! both get.

use std::net::SocketAddr;
use std::time::Duration;

use crate::base::close::CloseReason;
use crate::mailbox::ConnId;

/// What a connection looked like when it ended.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnInfo {
    /// Its identity: loop, slab key (reused by later connections) and the
    /// generation that tells the tenants of one key apart.
    pub id: ConnId,
    /// The peer's address (the client a PROXY header named, if one did).
    pub peer: SocketAddr,
    /// Why it ended.
    pub reason: CloseReason,
    /// Bytes read from the peer.
    pub bytes_in: u64,
    /// Bytes written to the peer.
    pub bytes_out: u64,
    /// How long it was open.
    pub lifetime: Duration,
}

impl ConnInfo {
    /// The facts of a connection that ended, as the loop records them (and
    /// as a test of a protocol's `on_closed` makes them up).
    pub fn new(
        id: ConnId,
        peer: SocketAddr,
        reason: CloseReason,
        (bytes_in, bytes_out): (u64, u64),
        lifetime: Duration,
    ) -> Self {
        Self {
            id,
            peer,
            reason,
            bytes_in,
            bytes_out,
            lifetime,
        }
    }
}
