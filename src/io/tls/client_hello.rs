//! What a client's first TLS bytes say about its server name (SNI):
//! sans-IO, no allocation, a prefix of the ClientHello is enough.
//!
//! rustls parses the ClientHello for real; this only looks for the one
//! thing it would warn about once per handshake: a server name that is an
//! IP address (RFC 6066 forbids it; `wrk` and other OpenSSL-based clients
//! given `https://127.0.0.1/` send one) or no valid DNS name at all.
//! rustls ignores such a name and goes on; the stage counts it and logs it
//! at debug with the connection's name, so a load test is not a flood of
//! warnings (`src/process/logging.rs` keeps rustls' own line for it off).
//!
//! The SNI extension comes early in a ClientHello (OpenSSL, rustls and Go
//! send it among the first extensions, before the key shares), so the
//! first read of a connection nearly always holds it, even when a large
//! ClientHello spans two TCP segments. When it does not, the answer is
//! [`Sni::Unknown`], and nothing is counted.

use rustls::pki_types::ServerName;

/// The server name a ClientHello carries, as rustls will take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sni {
    /// No server_name extension.
    Absent,
    /// A valid DNS name: the one rustls reports.
    DnsName,
    /// An IP address, which rustls ignores (with a warning).
    IpAddress,
    /// Neither (not UTF-8, `_` in a label, …): ignored too.
    Invalid,
    /// Not a ClientHello, or cut short before its extensions say.
    Unknown,
}

/// TLS record type `handshake`, handshake type `client_hello`, extension
/// `server_name` and its name type `host_name`.
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;

/// The server name in `first`, the first bytes a client sent (one TLS
/// record or a prefix of it).
pub(crate) fn server_name(first: &[u8]) -> Sni {
    parse(first).unwrap_or(Sni::Unknown)
}

/// `None`: cut short or malformed.
fn parse(first: &[u8]) -> Option<Sni> {
    let mut rec = Cursor(first);
    if rec.u8()? != HANDSHAKE {
        return None;
    }
    rec.take(2)?; // legacy record version
    let len = usize::from(rec.u16()?);
    let body = rec.0.get(..len).unwrap_or(rec.0); // what arrived of the record
    let mut hs = Cursor(body);
    if hs.u8()? != CLIENT_HELLO {
        return None;
    }
    let hello = hs.take(3)?;
    let hello_len = usize::from_be_bytes([0, 0, 0, 0, 0, hello[0], hello[1], hello[2]]);
    let hello_whole = hs.0.len() >= hello_len;
    hs.take(2 + 32)?; // legacy version, random
    let session_id = usize::from(hs.u8()?);
    hs.take(session_id)?;
    let suites = usize::from(hs.u16()?);
    hs.take(suites)?;
    let compression = usize::from(hs.u8()?);
    hs.take(compression)?;
    if hs.0.is_empty() {
        return hello_whole.then_some(Sni::Absent); // no extensions at all
    }
    let extensions = usize::from(hs.u16()?);
    // Walk what arrived of the extensions, even if they go on further.
    let mut ext = Cursor(hs.0.get(..extensions).unwrap_or(hs.0));
    let whole = ext.0.len() == extensions;
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let len = usize::from(ext.u16()?);
        let data = ext.take(len)?;
        if kind == SERVER_NAME {
            return host_name(data);
        }
    }
    whole.then_some(Sni::Absent)
}

/// The name in a server_name extension: its list's first entry, if a
/// `host_name` (rustls stops at an entry of another type, as here).
fn host_name(data: &[u8]) -> Option<Sni> {
    let mut list = Cursor(data);
    let len = usize::from(list.u16()?);
    let mut list = Cursor(list.take(len)?);
    if list.0.is_empty() || list.u8()? != HOST_NAME {
        return Some(Sni::Absent);
    }
    let len = usize::from(list.u16()?);
    let name = list.take(len)?;
    Some(match ServerName::try_from(name) {
        Ok(ServerName::DnsName(_)) => Sni::DnsName,
        Ok(ServerName::IpAddress(_)) => Sni::IpAddress,
        Ok(_) | Err(_) => Sni::Invalid,
    })
}

/// Big-endian reads from a slice; `None` past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello from rustls' client, naming `name` (or, for an IP
    /// address, naming nothing: rustls sends no IP as SNI).
    fn hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        client.write_tls(&mut out).unwrap();
        out
    }

    /// What `wrk` sends: the bytes of an IP address where a DNS name goes
    /// (same length as `localhost`, so every length field still holds).
    fn hello_naming(name: &[u8; 9]) -> Vec<u8> {
        let mut h = hello("localhost");
        let at = h.windows(9).position(|w| w == b"localhost").unwrap();
        h[at..at + 9].copy_from_slice(name);
        h
    }

    #[test]
    fn a_dns_name_an_ip_address_and_an_invalid_name_are_told_apart() {
        assert_eq!(server_name(&hello("localhost")), Sni::DnsName);
        assert_eq!(server_name(&hello_naming(b"127.0.0.1")), Sni::IpAddress);
        assert_eq!(server_name(&hello_naming(b"bad_name!")), Sni::Invalid);
        assert_eq!(server_name(&hello("127.0.0.1")), Sni::Absent);
    }

    #[test]
    fn a_prefix_answers_once_it_holds_the_name_and_never_panics() {
        let h = hello_naming(b"127.0.0.1");
        let at = h.windows(9).position(|w| w == b"127.0.0.1").unwrap();
        for cut in 0..=h.len() {
            let got = server_name(&h[..cut]);
            let want = if cut >= at + 9 {
                Sni::IpAddress
            } else {
                Sni::Unknown
            };
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn other_first_bytes_are_unknown() {
        assert_eq!(server_name(b""), Sni::Unknown);
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n\r\n"), Sni::Unknown);
        assert_eq!(server_name(&[22, 3, 1, 0, 4, 2, 0, 0, 0]), Sni::Unknown);
        let mut h = hello("localhost");
        for i in 0..h.len() {
            h[i] ^= 0xff; // any byte wrong: an answer, never a panic
            let _ = server_name(&h);
            h[i] ^= 0xff;
        }
    }
}
