//! The PROXY preamble stage of a connection's byte path: the header a load
//! balancer sends before anything else, naming the client's real address.
//!
//! Sans-IO, like a protocol: [`Preamble::feed`] takes the bytes one read
//! brought and says what they amount to — [`Step::Incomplete`] (wait for
//! more), [`Step::Done`] (the client the header names, and the bytes that
//! followed it, which belong to the next stage), or [`Step::Invalid`] (close
//! the connection, with the reason). Parsing is [`proxy::parse`]'s; this
//! stage decides what is kept between reads and how long the header may
//! take ([`Preamble::deadline`]).
//!
//! The stage exists only while a header is expected: a connection holds an
//! `Option<Preamble>` that is `None` without `--proxy-protocol` (the plain
//! path pays one test of that byte) and becomes `None` once the header is
//! read. It is one byte: a header that arrives in pieces waits in the
//! connection's input queue, which the connection lends to the stage
//! (`held`) and which holds nothing else until the header is done — so a
//! PROXY listener costs an idle connection nothing.
//!
//! # Bounds
//! A header is refused as soon as it is known to be over its cap
//! (`proxy::V1_MAX`, `proxy::V2_MAX`), so while it waits, `held` holds
//! fewer than `V2_MAX` bytes. The read that completes a header may bring
//! payload behind it (at most one read): that is [`Step::Done`]'s `rest`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::base::buffer::Buffer;
use crate::base::close::ProxyFailure;
use crate::io::proxy::header::{self as proxy, Parsed, ProxyMode};

/// What the bytes fed so far amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A valid beginning of a header: feed the next read.
    Incomplete,
    /// The header is complete.
    Done {
        /// The client the header names; `None` for `LOCAL` (v2 health
        /// checks) and `UNKNOWN` (v1): then the socket's peer stands.
        client: Option<SocketAddr>,
        /// What followed the header: the next stage's bytes (TLS records,
        /// or the protocol's payload). It is all `held` still holds.
        rest: &'a [u8],
    },
    /// Not a header this listener accepts.
    Invalid(ProxyFailure),
}

/// A PROXY header expected, and which kind. See the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preamble {
    /// Never `Off`: then there is no stage.
    mode: ProxyMode,
}

impl Preamble {
    /// The stage for a listener in `mode`; `None` when `mode` is `Off` (no
    /// header is expected).
    pub fn new(mode: ProxyMode) -> Option<Self> {
        (mode != ProxyMode::Off).then_some(Self { mode })
    }

    /// The next `bytes` from the socket, behind what `held` kept from
    /// earlier reads. `Done` consumes the header from `held`, leaving only
    /// `rest`; `Incomplete` keeps everything for the next read.
    pub fn feed<'q>(&self, held: &'q mut Buffer, bytes: &[u8]) -> Step<'q> {
        held.extend(bytes);
        match proxy::parse(self.mode, held.as_slice()) {
            Parsed::Incomplete => {
                debug_assert!(held.len() < proxy::V2_MAX, "over the header cap");
                Step::Incomplete
            }
            Parsed::Invalid(why) => Step::Invalid(why),
            Parsed::Done { len, client } => {
                held.consume(len);
                Step::Done {
                    client,
                    rest: held.as_slice(),
                }
            }
        }
    }

    /// When the whole header must have arrived, for a connection accepted
    /// at `opened`, given `--proxy-timeout` (`None`: no limit of its own).
    pub fn deadline(&self, opened: Instant, timeout: Option<Duration>) -> Option<Instant> {
        timeout.map(|t| opened + t)
    }
}

#[cfg(all(test, feature = "proxy"))]
mod tests {
    use super::*;
    use ppp::v2;
    use std::net::Ipv4Addr;

    const V1_TCP4: &[u8] = b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 8000\r\n";
    const PAYLOAD: &[u8] = b"\x16\x03\x01 hello after the header";

    fn client() -> Option<SocketAddr> {
        Some(SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 51234)))
    }

    fn v2_tcp4() -> Vec<u8> {
        v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            v2::Addresses::IPv4(v2::IPv4::new(
                [192, 0, 2, 7],
                [198, 51, 100, 1],
                51234,
                8000,
            )),
        )
        .write_tlv(0xEA, b"custom tlv")
        .unwrap()
        .build()
        .unwrap()
    }

    fn v2_local() -> Vec<u8> {
        v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Stream,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap()
    }

    fn stage(mode: ProxyMode) -> Preamble {
        Preamble::new(mode).unwrap()
    }

    /// Header and payload cut into two reads at every byte: the first read
    /// is incomplete (unless it holds the whole header), and the read that
    /// completes the header hands on exactly the payload behind it.
    fn assert_splits(mode: ProxyMode, header: &[u8], client: Option<SocketAddr>) {
        let stream = [header, PAYLOAD].concat();
        for cut in 0..stream.len() {
            let p = stage(mode);
            let mut held = Buffer::new();
            let (first, second) = stream.split_at(cut);
            let rest = if cut < header.len() {
                assert_eq!(p.feed(&mut held, first), Step::Incomplete, "cut {cut}");
                assert_eq!(held.len(), cut, "kept for the next read");
                let step = p.feed(&mut held, second);
                assert_eq!(
                    step,
                    Step::Done {
                        client,
                        rest: PAYLOAD
                    },
                    "cut {cut}"
                );
                PAYLOAD
            } else {
                let rest = &stream[header.len()..cut];
                let step = p.feed(&mut held, first);
                assert_eq!(step, Step::Done { client, rest }, "cut {cut}");
                rest
            };
            assert_eq!(held.as_slice(), rest, "only the rest is kept");
        }
    }

    /// One byte per read: incomplete up to the header's last byte.
    fn assert_byte_by_byte(mode: ProxyMode, header: &[u8], client: Option<SocketAddr>) {
        let p = stage(mode);
        let mut held = Buffer::new();
        for (i, byte) in header.iter().enumerate() {
            let step = p.feed(&mut held, std::slice::from_ref(byte));
            if i + 1 < header.len() {
                assert_eq!(step, Step::Incomplete, "byte {i}");
            } else {
                let rest: &[u8] = &[];
                assert_eq!(step, Step::Done { client, rest });
            }
        }
        assert!(
            held.is_empty() && held.capacity() == 0,
            "nothing kept after"
        );
    }

    #[test]
    fn no_stage_without_proxy_protocol() {
        assert_eq!(Preamble::new(ProxyMode::Off), None);
        assert!(Preamble::new(ProxyMode::Any).is_some());
        assert_eq!(std::mem::size_of::<Option<Preamble>>(), 1, "one byte");
    }

    #[test]
    fn a_v1_header_split_at_every_byte_hands_on_exactly_the_payload() {
        for mode in [ProxyMode::V1, ProxyMode::Any] {
            assert_splits(mode, V1_TCP4, client());
            assert_byte_by_byte(mode, V1_TCP4, client());
            assert_splits(mode, b"PROXY UNKNOWN\r\n", None);
        }
    }

    #[test]
    fn a_v2_header_split_at_every_byte_hands_on_exactly_the_payload() {
        for mode in [ProxyMode::V2, ProxyMode::Any] {
            assert_splits(mode, &v2_tcp4(), client());
            assert_byte_by_byte(mode, &v2_tcp4(), client());
            assert_splits(mode, &v2_local(), None);
        }
    }

    #[test]
    fn junk_instead_of_a_header_is_invalid_at_once() {
        let mut held = Buffer::new();
        assert_eq!(
            stage(ProxyMode::Any).feed(&mut held, b"GET / HTTP/1.1\r\n"),
            Step::Invalid(ProxyFailure::Missing)
        );
        let mut held = Buffer::new();
        let v1 = stage(ProxyMode::V1);
        assert_eq!(v1.feed(&mut held, b"PROX"), Step::Incomplete);
        assert_eq!(
            v1.feed(&mut held, b"Z"),
            Step::Invalid(ProxyFailure::Missing)
        );
        let mut held = Buffer::new();
        assert_eq!(
            stage(ProxyMode::V2).feed(&mut held, V1_TCP4),
            Step::Invalid(ProxyFailure::Missing)
        );
        let mut held = Buffer::new();
        assert_eq!(
            v1.feed(&mut held, b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n"),
            Step::Invalid(ProxyFailure::V1Malformed)
        );
    }

    #[test]
    fn an_oversized_header_is_refused_without_buffering_past_its_cap() {
        let v1 = stage(ProxyMode::V1);
        let mut held = Buffer::new();
        let mut fed = 0;
        let verdict = loop {
            let byte = b"PROXY ".get(fed).map_or(&b"1"[..], std::slice::from_ref);
            fed += 1;
            match v1.feed(&mut held, byte) {
                Step::Incomplete => assert!(held.len() < proxy::V1_MAX),
                Step::Invalid(why) => break why,
                done => panic!("no CRLF yet, but {done:?}"),
            }
        };
        assert_eq!(verdict, ProxyFailure::V1TooLong);
        assert_eq!(fed, proxy::V1_MAX, "refused at the v1 cap");

        let mut big = v2_tcp4();
        big[14..16].copy_from_slice(&(proxy::V2_MAX as u16).to_be_bytes());
        let v2 = stage(ProxyMode::V2);
        let mut held = Buffer::new();
        assert_eq!(v2.feed(&mut held, &big[..10]), Step::Incomplete);
        assert_eq!(
            v2.feed(&mut held, &big[10..16]),
            Step::Invalid(ProxyFailure::V2TooLong),
            "refused from the fixed part alone"
        );
    }

    #[test]
    fn the_header_must_arrive_within_its_timeout_of_the_accept() {
        let opened = Instant::now();
        let p = stage(ProxyMode::V1);
        let five = Duration::from_secs(5);
        assert_eq!(p.deadline(opened, Some(five)), Some(opened + five));
        assert_eq!(p.deadline(opened, None), None, "0 = no limit of its own");
    }
}
