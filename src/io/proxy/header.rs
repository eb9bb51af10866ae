//! The PROXY protocol (v1 text, v2 binary): a preamble a load balancer
//! sends before the client's bytes, naming the client's real address.
//!
//! Sans-IO: [`parse`] looks at the bytes received so far and says
//! *incomplete* (wait for more), *done* (how many bytes the header took, and
//! the client's address), or *invalid* (close the connection). We never
//! guess whether a header is present: in `any` mode one is required.
//!
//! Framing is ours, parsing is `ppp`'s: a v1 header is one line, so it is
//! handed to `ppp` only once its CRLF has arrived; a v2 header states its
//! length in its 16-byte fixed part, so it is handed over only once that
//! many bytes are here. (`ppp` alone calls some cut points, such as right
//! after a space in a v1 line, malformed rather than incomplete.)
//!
//! Bounds: a v1 header is at most 107 bytes (the spec's limit) and a v2
//! header at most `V2_MAX` bytes; a longer one is refused as soon as its
//! length is known, so nothing past the cap is ever buffered.
//!
//! Also here: [`Cidr`], the `--proxy-from` allow-list. A PROXY header lets
//! its sender claim any client address, so only trusted peers may send one.

use std::fmt;

pub use crate::base::close::ProxyFailure;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

#[cfg(feature = "proxy")]
use ppp::{v1, v2};

/// Which PROXY headers a listener expects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// No PROXY header: the first byte is payload.
    #[default]
    Off,
    /// A v1 (text) header is required.
    V1,
    /// A v2 (binary) header is required.
    V2,
    /// A v1 or v2 header is required.
    Any,
}

/// The longest v1 header, CRLF included (the spec's 107 bytes).
#[cfg(feature = "proxy")]
pub(crate) const V1_MAX: usize = 107;
/// The longest v2 header we accept (16-byte fixed part + addresses + TLVs).
pub(crate) const V2_MAX: usize = 1024;

#[cfg(feature = "proxy")]
const V1_PREFIX: &[u8] = b"PROXY ";
#[cfg(feature = "proxy")]
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// What the bytes so far amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid beginning: wait for more bytes.
    Incomplete,
    /// A complete header of `len` bytes. `client` is the address it names,
    /// or `None` for `LOCAL` (v2 health checks) and `UNKNOWN` (v1): then the
    /// socket's own peer address stands.
    Done {
        /// Header length: the payload starts after it.
        len: usize,
        /// The client's address, when the header names one.
        client: Option<SocketAddr>,
    },
    /// Not a header this listener accepts.
    Invalid(ProxyFailure),
}

/// Parse the bytes received so far.
#[cfg(feature = "proxy")]
pub fn parse(mode: ProxyMode, input: &[u8]) -> Parsed {
    match mode {
        ProxyMode::Off => Parsed::Done {
            len: 0,
            client: None,
        },
        ProxyMode::V1 => parse_v1(input),
        ProxyMode::V2 => parse_v2(input),
        ProxyMode::Any => match input.first() {
            None => Parsed::Incomplete,
            Some(b'P') => parse_v1(input),
            Some(b'\r') => parse_v2(input),
            Some(_) => Parsed::Invalid(ProxyFailure::Missing),
        },
    }
}

#[cfg(feature = "proxy")]
fn prefix_state(input: &[u8], prefix: &[u8]) -> Option<Parsed> {
    let n = input.len().min(prefix.len());
    if input[..n] != prefix[..n] {
        return Some(Parsed::Invalid(ProxyFailure::Missing));
    }
    (input.len() < prefix.len()).then_some(Parsed::Incomplete)
}

#[cfg(feature = "proxy")]
fn parse_v1(input: &[u8]) -> Parsed {
    if let Some(state) = prefix_state(input, V1_PREFIX) {
        return state;
    }
    let Some(end) = input.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if input.len() >= V1_MAX {
            Parsed::Invalid(ProxyFailure::V1TooLong)
        } else {
            Parsed::Incomplete
        };
    };
    match v1::Header::try_from(&input[..end + 2]) {
        Ok(header) => Parsed::Done {
            len: header.header.len(),
            client: match header.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            },
        },
        Err(_) => Parsed::Invalid(ProxyFailure::V1Malformed),
    }
}

#[cfg(feature = "proxy")]
fn parse_v2(input: &[u8]) -> Parsed {
    if let Some(state) = prefix_state(input, V2_SIGNATURE) {
        return state;
    }
    if input.len() < 16 {
        return Parsed::Incomplete;
    }
    let len = 16 + u16::from_be_bytes([input[14], input[15]]) as usize;
    if len > V2_MAX {
        return Parsed::Invalid(ProxyFailure::V2TooLong);
    }
    if input.len() < len {
        return Parsed::Incomplete;
    }
    match v2::Header::try_from(&input[..len]) {
        Ok(header) => Parsed::Done {
            len: header.len(),
            client: match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, _) => None, // UNIX or unspecified: keep the socket's
            },
        },
        Err(_) => Parsed::Invalid(ProxyFailure::V2Malformed),
    }
}

/// Without the `proxy` feature no header can be read: a listener that
/// requires one refuses every connection, and says why.
#[cfg(not(feature = "proxy"))]
pub fn parse(mode: ProxyMode, _input: &[u8]) -> Parsed {
    match mode {
        ProxyMode::Off => Parsed::Done {
            len: 0,
            client: None,
        },
        _ => Parsed::Invalid(ProxyFailure::Unsupported),
    }
}

/// An address block such as `127.0.0.0/8` or `::1/128` (a bare address is
/// a block of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The blocks trusted by default: loopback only.
    pub fn loopback() -> Vec<Cidr> {
        vec![
            Cidr {
                addr: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
            },
            Cidr {
                addr: IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
                prefix: 128,
            },
        ]
    }

    /// Whether `ip` lies in this block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an address block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("'{s}': prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(all(test, feature = "proxy"))]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const V1_TCP4: &[u8] = b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 8000\r\n";
    const V1_TCP6: &[u8] = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 8000\r\n";
    const V1_UNKNOWN: &[u8] = b"PROXY UNKNOWN\r\n";

    fn v2(command: v2::Command, addresses: v2::Addresses, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
        let mut builder = v2::Builder::with_addresses(
            v2::Version::Two | command,
            v2::Protocol::Stream,
            addresses,
        );
        for (kind, value) in tlvs {
            builder = builder.write_tlv(*kind, value).unwrap();
        }
        builder.build().unwrap()
    }

    fn v2_tcp4() -> Vec<u8> {
        v2(
            v2::Command::Proxy,
            v2::Addresses::IPv4(v2::IPv4::new(
                [192, 0, 2, 7],
                [198, 51, 100, 1],
                51234,
                8000,
            )),
            &[(0x04, b"noop"), (0xEA, b"custom tlv")],
        )
    }

    /// Every strict prefix is incomplete; the whole is done; payload after
    /// the header is not part of it.
    fn assert_splits(mode: ProxyMode, header: &[u8], client: Option<SocketAddr>) {
        for cut in 0..header.len() {
            assert_eq!(
                parse(mode, &header[..cut]),
                Parsed::Incomplete,
                "cut at {cut}"
            );
        }
        let mut with_payload = header.to_vec();
        with_payload.extend_from_slice(b"payload\r\n");
        let done = Parsed::Done {
            len: header.len(),
            client,
        };
        assert_eq!(parse(mode, header), done);
        assert_eq!(parse(mode, &with_payload), done);
    }

    #[test]
    fn v1_headers_split_at_every_byte() {
        let c4 = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 51234));
        let c6 = SocketAddr::from(("2001:db8::7".parse::<Ipv6Addr>().unwrap(), 51234));
        for mode in [ProxyMode::V1, ProxyMode::Any] {
            assert_splits(mode, V1_TCP4, Some(c4));
            assert_splits(mode, V1_TCP6, Some(c6));
            assert_splits(mode, V1_UNKNOWN, None);
        }
    }

    #[test]
    fn v2_headers_with_tlvs_split_at_every_byte() {
        let c4 = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 51234));
        let c6 = SocketAddr::from(("2001:db8::7".parse::<Ipv6Addr>().unwrap(), 51234));
        let tcp6 = v2(
            v2::Command::Proxy,
            v2::Addresses::IPv6(v2::IPv6::new(
                "2001:db8::7".parse::<Ipv6Addr>().unwrap(),
                "2001:db8::1".parse::<Ipv6Addr>().unwrap(),
                51234,
                8000,
            )),
            &[(0x01, b"h2")],
        );
        let local = v2(v2::Command::Local, v2::Addresses::Unspecified, &[]);
        for mode in [ProxyMode::V2, ProxyMode::Any] {
            assert_splits(mode, &v2_tcp4(), Some(c4));
            assert_splits(mode, &tcp6, Some(c6));
            assert_splits(mode, &local, None);
        }
    }

    #[test]
    fn a_header_is_required_and_never_guessed() {
        assert_eq!(
            parse(ProxyMode::Any, b"GET / HTTP/1.1\r\n"),
            Parsed::Invalid(ProxyFailure::Missing)
        );
        assert_eq!(
            parse(ProxyMode::V1, b"hello"),
            Parsed::Invalid(ProxyFailure::Missing)
        );
        assert_eq!(
            parse(ProxyMode::V2, b"PROXY TCP4"),
            Parsed::Invalid(ProxyFailure::Missing)
        );
        assert_eq!(
            parse(ProxyMode::V1, &v2_tcp4()),
            Parsed::Invalid(ProxyFailure::Missing)
        );
        assert_eq!(
            parse(ProxyMode::Off, b"anything"),
            Parsed::Done {
                len: 0,
                client: None
            }
        );
    }

    #[test]
    fn malformed_and_oversized_headers_are_refused() {
        assert_eq!(
            parse(ProxyMode::V1, b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n"),
            Parsed::Invalid(ProxyFailure::V1Malformed)
        );
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(
            parse(ProxyMode::V1, &long),
            Parsed::Invalid(ProxyFailure::V1TooLong)
        );
        let mut big = v2_tcp4();
        big[14..16].copy_from_slice(&((V2_MAX as u16).to_be_bytes()));
        assert_eq!(
            parse(ProxyMode::V2, &big[..16]),
            Parsed::Invalid(ProxyFailure::V2TooLong),
            "refused from the fixed part alone, before buffering the rest"
        );
        let mut bad_version = v2_tcp4();
        bad_version[12] = 0x31;
        assert_eq!(
            parse(ProxyMode::V2, &bad_version),
            Parsed::Invalid(ProxyFailure::V2Malformed)
        );
    }

    #[test]
    fn cidr_blocks_match_v4_v6_and_mapped_addresses() {
        let lo: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains("127.9.9.9".parse().unwrap()));
        assert!(lo.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!lo.contains("10.0.0.1".parse().unwrap()));
        let one: Cidr = "10.1.2.3".parse().unwrap();
        assert!(
            one.contains("10.1.2.3".parse().unwrap()) && !one.contains("10.1.2.4".parse().unwrap())
        );
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        assert_eq!(Cidr::loopback().len(), 2);
    }
}
