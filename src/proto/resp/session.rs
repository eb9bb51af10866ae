//! What a RESP connection has said about itself: which protocol version
//! it speaks (`HELLO 2|3`), whether it wants replies (`CLIENT REPLY
//! ON|OFF|SKIP`), and the name it gave (`CLIENT SETNAME`). `RESET` puts all
//! of it back to the defaults: RESP2, replies on, no name.

use super::pubsub::{arity, push_bulk, push_int, push_len, unknown_subcommand};
use crate::mailbox::ConnId;

/// The RESP version a connection speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Version {
    /// RESP2: what every client speaks first. Pub/sub frames are arrays.
    #[default]
    Resp2,
    /// RESP3 (after `HELLO 3`): pub/sub frames are pushes (`>`), maps are
    /// maps (`%`), nil is `_`.
    Resp3,
}

impl Version {
    /// The type byte of an out-of-band frame: an array in RESP2, a push in RESP3.
    pub fn push(self) -> u8 {
        match self {
            Version::Resp2 => b'*',
            Version::Resp3 => b'>',
        }
    }
}

/// `CLIENT REPLY`: which replies the client wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Replies {
    /// Every reply (the default).
    #[default]
    On,
    /// None (pushes still come: RESP3's pub/sub frames, and messages).
    Off,
    /// None for the next command, then every reply again.
    SkipNext,
}

/// One connection's session settings.
#[derive(Clone, Debug, Default)]
pub struct Session {
    /// The protocol version spoken.
    pub version: Version,
    /// Which replies are sent.
    pub replies: Replies,
    /// The name set with `CLIENT SETNAME` or `HELLO … SETNAME`: boxed,
    /// so a connection that never names itself pays one pointer.
    name: Option<Box<Name>>,
}

/// A client's name.
#[derive(Clone, Debug)]
struct Name(Vec<u8>);

impl Session {
    /// A command begins: whether its reply is sent. A skipped reply is
    /// the only one skipped.
    pub(crate) fn shows_reply(&mut self) -> bool {
        match self.replies {
            Replies::On => true,
            Replies::Off => false,
            Replies::SkipNext => {
                self.replies = Replies::On;
                false
            }
        }
    }

    /// `HELLO [protover [SETNAME name]]`: switch version, answer who we are.
    pub fn hello<'a>(
        &mut self,
        mut args: impl ExactSizeIterator<Item = &'a [u8]>,
        me: Option<ConnId>,
        out: &mut Vec<u8>,
    ) {
        let version = match args.next() {
            None => self.version,
            Some(b"2") => Version::Resp2,
            Some(b"3") => Version::Resp3,
            Some(v) if v.iter().all(u8::is_ascii_digit) && !v.is_empty() => {
                out.extend_from_slice(b"-NOPROTO unsupported protocol version\r\n");
                return;
            }
            Some(_) => {
                out.extend_from_slice(
                    b"-ERR Protocol version is not an integer or out of range\r\n",
                );
                return;
            }
        };
        let mut name = None;
        while let Some(option) = args.next() {
            match (option.to_ascii_uppercase().as_slice(), args.next()) {
                (b"SETNAME", Some(n)) => name = Some(n),
                (b"AUTH", _) => {
                    out.extend_from_slice(
                        b"-ERR AUTH is not supported: this server has no users\r\n",
                    );
                    return;
                }
                _ => {
                    out.extend_from_slice(b"-ERR Syntax error in HELLO option '");
                    super::push_sanitized(out, &option[..option.len().min(super::NAME_PREVIEW)]);
                    out.extend_from_slice(b"'\r\n");
                    return;
                }
            }
        }
        if let Some(n) = name {
            if let Err(e) = self.set_name(n) {
                out.extend_from_slice(e);
                return;
            }
        }
        self.version = version;
        let (map, pairs) = match version {
            Version::Resp2 => (b'*', 14),
            Version::Resp3 => (b'%', 7),
        };
        push_len(out, map, pairs);
        push_bulk(out, b"server");
        push_bulk(out, b"tcp-reactor");
        push_bulk(out, b"version");
        push_bulk(out, env!("CARGO_PKG_VERSION").as_bytes());
        push_bulk(out, b"proto");
        push_int(out, if version == Version::Resp3 { 3 } else { 2 });
        push_bulk(out, b"id");
        push_int(out, me.map_or(0, |id| id.key));
        push_bulk(out, b"mode");
        push_bulk(out, b"standalone");
        push_bulk(out, b"role");
        push_bulk(out, b"master");
        push_bulk(out, b"modules");
        push_len(out, b'*', 0);
    }

    /// `CLIENT REPLY|SETNAME|GETNAME|ID|HELP …`. `shown`: whether this
    /// command's reply is sent (`CLIENT REPLY ON` always answers `+OK`).
    pub fn client<'a>(
        &mut self,
        mut args: impl ExactSizeIterator<Item = &'a [u8]>,
        me: Option<ConnId>,
        shown: bool,
        out: &mut Vec<u8>,
    ) {
        let Some(sub) = args.next() else {
            return arity("client", out);
        };
        let n = args.len();
        let mark = out.len();
        match sub.to_ascii_uppercase().as_slice() {
            b"REPLY" if n == 1 => {
                let mode = args.next().unwrap_or_default().to_ascii_uppercase();
                match mode.as_slice() {
                    b"ON" => {
                        self.replies = Replies::On;
                        out.extend_from_slice(b"+OK\r\n");
                        return; // shown, whatever the mode was
                    }
                    b"OFF" => self.replies = Replies::Off,
                    b"SKIP" => self.replies = Replies::SkipNext,
                    _ => out.extend_from_slice(b"-ERR syntax error\r\n"),
                }
            }
            b"SETNAME" if n == 1 => match self.set_name(args.next().unwrap_or_default()) {
                Ok(()) => out.extend_from_slice(b"+OK\r\n"),
                Err(e) => out.extend_from_slice(e),
            },
            b"GETNAME" if n == 0 => match &self.name {
                Some(name) => push_bulk(out, &name.0),
                None if self.version == Version::Resp3 => out.extend_from_slice(b"_\r\n"),
                None => out.extend_from_slice(b"$-1\r\n"),
            },
            b"ID" if n == 0 => push_int(out, me.map_or(0, |id| id.key)),
            _ => unknown_subcommand(b"CLIENT", sub, out),
        }
        if !shown {
            out.truncate(mark);
        }
    }

    fn set_name(&mut self, name: &[u8]) -> Result<(), &'static [u8]> {
        if name.iter().any(|&b| b <= b' ' || b > b'~') {
            return Err(
                b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
            );
        }
        self.name = (!name.is_empty()).then(|| Box::new(Name(name.to_vec())));
        Ok(())
    }
}
