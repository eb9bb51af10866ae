//! The PROXY header a proxy *sends*: the other end of [`header`](super::header).
//! `--upstream-send-proxy` puts one before the first client byte toward
//! the upstream, naming the real client, as HAProxy's `send-proxy` and
//! `send-proxy-v2` do. Built with ppp, the crate the parser uses, so what
//! we send is what a parser reads.

use std::net::SocketAddr;

/// Which header to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announce {
    /// v1, text: `PROXY TCP4 client server cport sport\r\n`.
    V1,
    /// v2, binary.
    V2,
}

impl Announce {
    /// The names `--upstream-send-proxy` accepts.
    pub const NAMES: &'static [&'static str] = &["v1", "v2"];

    /// A header saying that `client` connected to `server` (our listener's
    /// address, as the client saw it). A client and server of different
    /// families (an IPv4 client on an IPv6 socket) are sent as the mapped
    /// IPv6 pair; v1 has `UNKNOWN` for anything it cannot say.
    pub fn header(self, client: SocketAddr, server: SocketAddr) -> Vec<u8> {
        let (client, server) = same_family(client, server);
        match self {
            Announce::V1 => v1(client, server).into_bytes(),
            Announce::V2 => v2(client, server),
        }
    }
}

impl std::str::FromStr for Announce {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(Announce::V1),
            "v2" => Ok(Announce::V2),
            other => Err(format!(
                "unknown PROXY version {other:?} (expected v1 or v2)"
            )),
        }
    }
}

/// Both addresses in one family: IPv4 if both are (or map to) IPv4,
/// else both as IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v4 = |s: SocketAddr| match s {
        SocketAddr::V6(v6) => v6
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddr::from((ip, v6.port()))),
        v4 => Some(v4),
    };
    let v6 = |s: SocketAddr| match s {
        SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        v6 => v6,
    };
    match (v4(a), v4(b)) {
        (Some(a), Some(b)) => (a, b),
        _ => (v6(a), v6(b)),
    }
}

#[cfg(feature = "proxy")]
fn v1(client: SocketAddr, server: SocketAddr) -> String {
    use ppp::v1::Addresses;
    let addresses = match (client, server) {
        (SocketAddr::V4(c), SocketAddr::V4(s)) => {
            Addresses::new_tcp4(*c.ip(), *s.ip(), c.port(), s.port())
        }
        (SocketAddr::V6(c), SocketAddr::V6(s)) => {
            Addresses::new_tcp6(*c.ip(), *s.ip(), c.port(), s.port())
        }
        _ => Addresses::Unknown,
    };
    addresses.to_string()
}

#[cfg(feature = "proxy")]
fn v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (client, server),
    )
    .build()
    .unwrap_or_default()
}

// Without ppp (a library built without `proxy`): v1's text by hand, and
// v2 not at all — an empty header, which a v2 upstream refuses. The
// binary is always built with `proxy`.
#[cfg(not(feature = "proxy"))]
fn v1(client: SocketAddr, server: SocketAddr) -> String {
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        server.ip(),
        client.port(),
        server.port()
    )
}

#[cfg(not(feature = "proxy"))]
fn v2(_client: SocketAddr, _server: SocketAddr) -> Vec<u8> {
    Vec::new()
}

#[cfg(all(test, feature = "proxy"))]
mod tests {
    use super::*;
    use crate::io::proxy::{parse, Parsed, ProxyMode};

    #[test]
    fn what_we_send_our_own_parser_reads_back() {
        let cases = [
            ("203.0.113.7:5555", "127.0.0.1:8000"),
            ("[2001:db8::1]:443", "[::1]:8000"),
            ("198.51.100.2:1", "[::ffff:127.0.0.1]:8000"),
        ];
        for (client, server) in cases {
            let (client, server): (SocketAddr, SocketAddr) =
                (client.parse().unwrap(), server.parse().unwrap());
            for (announce, mode) in [(Announce::V1, ProxyMode::V1), (Announce::V2, ProxyMode::V2)] {
                let header = announce.header(client, server);
                let mut bytes = header.clone();
                bytes.extend_from_slice(b"payload");
                match parse(mode, &bytes) {
                    Parsed::Done {
                        len,
                        client: Some(named),
                    } => {
                        assert_eq!(len, header.len(), "{announce:?} {client}");
                        assert_eq!(named.ip().to_canonical(), client.ip().to_canonical());
                        assert_eq!(named.port(), client.port());
                    }
                    other => panic!("{announce:?} {client}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn v1_is_the_text_haproxy_sends() {
        let header = Announce::V1.header(
            "192.0.2.1:56324".parse().unwrap(),
            "192.0.2.2:443".parse().unwrap(),
        );
        assert_eq!(header, b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n");
    }
}
