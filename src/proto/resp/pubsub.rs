//! RESP pub/sub: `SUBSCRIBE`, `UNSUBSCRIBE`, `PSUBSCRIBE`, `PUNSUBSCRIBE`,
//! `PUBLISH`, `PUBSUB` and the subscribed mode, on top of the
//! [`Mailbox`](crate::mailbox): a channel is a mailbox group, a pattern a
//! pattern group, a published message a group message.
//!
//! Owns the commands' replies and the `message` / `pmessage` frames, byte
//! for byte as redis-server 7 sends them, in RESP2 (arrays) or RESP3
//! (pushes, after `HELLO 3`). It must not parse RESP framing: the
//! [`Resp`](super::Resp) protocol hands it a command and its arguments.
//!
//! * `SUBSCRIBE ch…` → per channel `*3 subscribe <ch> :<subscriptions>`.
//! * `UNSUBSCRIBE [ch…]` → per channel `*3 unsubscribe <ch> :<left>`; with
//!   no argument every channel, in the order they were joined (redis-server
//!   uses its hash order), or `*3 unsubscribe <nil> :<left>` if there were
//!   none. `PSUBSCRIBE` / `PUNSUBSCRIBE` likewise for glob patterns.
//! * `PUBLISH ch msg` → `:<receivers>`: subscribers of `ch` plus one per
//!   (subscriber, matching pattern), on every loop, as Redis counts. A
//!   subscriber gets its `message` first, then a `pmessage` per matching
//!   pattern in the order patterns were first subscribed (redis-server
//!   walks its pattern dict in hash order).
//! * A subscriber gets a message for a channel only while it is subscribed
//!   to it (or to the pattern it matched) when the message is delivered:
//!   the loop asks [`Mailbox::accepts`] first, so nothing arrives after
//!   the `unsubscribe` reply that left the channel.
//! * `PUBSUB CHANNELS [pattern]` (channels with subscribers), `PUBSUB
//!   NUMSUB [ch…]` (subscribers of each, integers), `PUBSUB NUMPAT`
//!   (distinct patterns): over every loop, from the shared directory.
//! * Subscribed in RESP2 (any channel or pattern): only the commands
//!   `Command::allowed_when_subscribed` names, `PING` answering
//!   `*2 pong <arg or "">`; anything else is `-ERR Can't execute '<cmd>': …`.
//!   RESP3 allows every command, its pushes being told apart from replies.
//! * `RESET` → leaves every channel and pattern (the rest is the
//!   session's: see [`super::session`]).
//!
//! Pub/sub commands are taken whole (not streamed): one may be at most
//! `MAX_COMMAND` bytes, so it fits the protocol's pending-input bound.

use super::command::Command;
use super::session::Version;
use crate::mailbox::{Mailbox, Message};

/// Longest command taken whole (all its framing included). A longer one
/// is a protocol error: the protocol keeps at most
/// [`MAX_PENDING`](super::MAX_PENDING) bytes of unconsumed input.
pub(crate) const MAX_COMMAND: usize = super::MAX_PENDING - 64;

/// One connection's subscriptions, kept in its mailbox.
#[derive(Debug, Default)]
pub struct PubSub {
    mailbox: Mailbox,
}

/// Whether a pub/sub command is finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ran {
    /// Its replies are all written.
    Done,
    /// It stopped at the output budget: offer it again once the output has
    /// drained (leaving every channel of a client that has 100,000).
    More,
}

impl PubSub {
    /// No subscriptions, detached until the connection opens.
    pub fn new() -> Self {
        Self::default()
    }

    /// The messaging handle (for [`Protocol::mailbox`](crate::proto::Protocol::mailbox)).
    pub fn mailbox(&mut self) -> &mut Mailbox {
        &mut self.mailbox
    }

    /// Channels plus patterns: Redis' subscription count.
    pub(crate) fn subscriptions(&self) -> usize {
        self.mailbox.topic_count() + self.mailbox.pattern_count()
    }

    /// Whether the connection is in subscribed mode.
    pub fn subscribed(&self) -> bool {
        self.subscriptions() > 0
    }

    /// In RESP2's subscribed mode, refuse a command that is not allowed
    /// there (`name`, and what it parsed as). `true` if refused.
    pub(crate) fn refuse(&self, name: &[u8], command: Option<Command>, out: &mut Vec<u8>) -> bool {
        if !self.subscribed() || command.is_some_and(Command::allowed_when_subscribed) {
            return false;
        }
        out.extend_from_slice(b"-ERR Can't execute '");
        for &b in name.iter().take(super::NAME_PREVIEW) {
            out.push(if b.is_ascii_control() {
                b' '
            } else {
                b.to_ascii_lowercase()
            });
        }
        out.extend_from_slice(
            b"': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
        );
        true
    }

    /// Run pub/sub `command` with its arguments (the name excluded),
    /// answering in `version`. Leaving every channel stops once `out` is
    /// `stop_at` bytes long, with [`Ran::More`], and says so in
    /// `leaving_all`: the command offered again goes on where it stopped
    /// (no second `nil` reply).
    pub(crate) fn run<'a>(
        &mut self,
        command: Command,
        mut args: impl ExactSizeIterator<Item = &'a [u8]>,
        version: Version,
        out: &mut Vec<u8>,
        (stop_at, leaving_all): (usize, &mut bool),
    ) -> Ran {
        let n = args.len();
        match command {
            Command::Subscribe | Command::PSubscribe if n == 0 => arity(command.name(), out),
            Command::Subscribe => {
                for channel in args {
                    self.mailbox.join(channel);
                    self.reply(version, b"subscribe", Some(channel), out);
                }
            }
            Command::PSubscribe => {
                for pattern in args {
                    self.mailbox.join_pattern(pattern);
                    self.reply(version, b"psubscribe", Some(pattern), out);
                }
            }
            Command::Unsubscribe if n == 0 => {
                let resumed = std::mem::take(leaving_all);
                if self.mailbox.topic_count() == 0 && !resumed {
                    self.reply(version, b"unsubscribe", None, out);
                }
                while let Some(channel) = self.mailbox.first_topic() {
                    if out.len() >= stop_at {
                        *leaving_all = true;
                        return Ran::More;
                    }
                    self.mailbox.leave(&channel);
                    self.reply(version, b"unsubscribe", Some(&channel), out);
                }
            }
            Command::Unsubscribe => {
                for channel in args {
                    self.mailbox.leave(channel);
                    self.reply(version, b"unsubscribe", Some(channel), out);
                }
            }
            Command::PUnsubscribe if n == 0 => {
                let resumed = std::mem::take(leaving_all);
                if self.mailbox.pattern_count() == 0 && !resumed {
                    self.reply(version, b"punsubscribe", None, out);
                }
                while let Some(pattern) = self.mailbox.first_pattern() {
                    if out.len() >= stop_at {
                        *leaving_all = true;
                        return Ran::More;
                    }
                    self.mailbox.leave_pattern(&pattern);
                    self.reply(version, b"punsubscribe", Some(&pattern), out);
                }
            }
            Command::PUnsubscribe => {
                for pattern in args {
                    self.mailbox.leave_pattern(pattern);
                    self.reply(version, b"punsubscribe", Some(pattern), out);
                }
            }
            Command::Publish => match (n, args.next(), args.next()) {
                (2, Some(channel), Some(message)) => {
                    let receivers = self.mailbox.publish(channel, message);
                    push_int(out, receivers);
                }
                _ => arity("publish", out),
            },
            Command::PubSub => self.pubsub(args, out),
            Command::Ping => match (n, args.next()) {
                (0, _) => out.extend_from_slice(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
                (1, Some(arg)) => {
                    out.extend_from_slice(b"*2\r\n$4\r\npong\r\n");
                    push_bulk(out, arg);
                }
                _ => arity("ping", out),
            },
            // Not pub/sub commands: the session's or streamed.
            Command::Echo | Command::Quit | Command::Reset | Command::Hello | Command::Client => {}
        }
        Ran::Done
    }

    /// `PUBSUB <subcommand> …`, over every loop's subscribers.
    fn pubsub<'a>(&mut self, mut args: impl ExactSizeIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
        let Some(sub) = args.next() else {
            return arity("pubsub", out);
        };
        let hub = self.mailbox.hub();
        let is = |name: &[u8]| sub.eq_ignore_ascii_case(name);
        if is(b"CHANNELS") && args.len() <= 1 {
            let pattern = args.next();
            let mut channels = hub.map(|h| h.topics(pattern)).unwrap_or_default();
            channels.sort();
            push_len(out, b'*', channels.len());
            for channel in &channels {
                push_bulk(out, channel);
            }
        } else if is(b"NUMSUB") {
            // A flat array of channel, count, … in RESP3 too (redis 7.0).
            push_len(out, b'*', args.len() * 2);
            for channel in args {
                push_bulk(out, channel);
                push_int(out, hub.map_or(0, |h| h.members(channel)));
            }
        } else if is(b"NUMPAT") && args.len() == 0 {
            push_int(out, hub.map_or(0, |h| h.pattern_count()));
        } else if is(b"HELP") && args.len() == 0 {
            let lines: [&[u8]; 7] = [
                b"PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                b"CHANNELS [<pattern>]",
                b"    Return the currently active channels matching a <pattern> (default: '*').",
                b"NUMPAT",
                b"    Return number of subscriptions to patterns.",
                b"NUMSUB [<channel> ...]",
                b"    Return the number of subscribers for the specified channels, excluding",
            ];
            push_len(out, b'*', lines.len());
            for line in lines {
                out.push(b'+');
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        } else {
            unknown_subcommand(b"PUBSUB", sub, out);
        }
    }

    /// Leave every channel and pattern, silently.
    pub(crate) fn leave_all(&mut self) {
        while let Some(channel) = self.mailbox.first_topic() {
            self.mailbox.leave(&channel);
        }
        while let Some(pattern) = self.mailbox.first_pattern() {
            self.mailbox.leave_pattern(&pattern);
        }
    }

    /// `*3 <kind> <name or nil> :<subscriptions>` (a push in RESP3).
    fn reply(&self, version: Version, kind: &[u8], name: Option<&[u8]>, out: &mut Vec<u8>) {
        push_len(out, version.push(), 3);
        push_bulk(out, kind);
        match (name, version) {
            (Some(name), _) => push_bulk(out, name),
            (None, Version::Resp2) => out.extend_from_slice(b"$-1\r\n"),
            (None, Version::Resp3) => out.extend_from_slice(b"_\r\n"),
        }
        push_int(out, self.subscriptions());
    }
}

/// Frame a message for a subscriber: `message` (by channel), `pmessage`
/// (by pattern), or the payload as it is (sent by id); a push in RESP3.
pub fn frame(msg: &Message<'_>, version: Version, out: &mut Vec<u8>) {
    match (msg.topic, msg.pattern) {
        (Some(channel), None) => {
            push_len(out, version.push(), 3);
            out.extend_from_slice(b"$7\r\nmessage\r\n");
            push_bulk(out, channel);
            push_bulk(out, msg.payload);
        }
        (Some(channel), Some(pattern)) => {
            push_len(out, version.push(), 4);
            out.extend_from_slice(b"$8\r\npmessage\r\n");
            push_bulk(out, pattern);
            push_bulk(out, channel);
            push_bulk(out, msg.payload);
        }
        (None, _) => out.extend_from_slice(msg.payload),
    }
}

/// `-ERR wrong number of arguments for '<command>' command`.
pub(crate) fn arity(command: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"-ERR wrong number of arguments for '");
    out.extend_from_slice(command.as_bytes());
    out.extend_from_slice(b"' command\r\n");
}

/// `-ERR unknown subcommand '<sub>'. Try <COMMAND> HELP.`
pub(crate) fn unknown_subcommand(command: &[u8], sub: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"-ERR unknown subcommand '");
    super::push_sanitized(out, &sub[..sub.len().min(super::NAME_PREVIEW)]);
    out.extend_from_slice(b"'. Try ");
    out.extend_from_slice(command);
    out.extend_from_slice(b" HELP.\r\n");
}

/// `<kind><n>\r\n`: an array, push or map header.
pub(crate) fn push_len(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    crate::base::text::push_u64(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

/// `:<n>\r\n`.
pub(crate) fn push_int(out: &mut Vec<u8>, n: usize) {
    push_len(out, b':', n);
}

/// `$<len>\r\n<bytes>\r\n`.
pub(crate) fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    push_len(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// The arguments of a whole multibulk command, after its name: each
/// `$<len>\r\n<bytes>\r\n`, already checked by [`measure`].
#[derive(Clone, Debug)]
pub(crate) struct BulkArgs<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for BulkArgs<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let (len, header) = bulk_header(self.rest)?;
        let arg = self.rest.get(header..header + len)?;
        self.rest = self.rest.get(header + len + 2..)?;
        self.left -= 1;
        Some(arg)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for BulkArgs<'_> {}

/// What [`measure`] found at the front of the input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whole<'a> {
    /// Not all of it yet (and it may still fit).
    Partial,
    /// The whole command is `len` bytes; its arguments after the name.
    Done(usize, BulkArgs<'a>),
    /// Broken framing, or longer than [`MAX_COMMAND`].
    Invalid(&'static str),
}

impl PartialEq for BulkArgs<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.rest == other.rest && self.left == other.left
    }
}

impl Eq for BulkArgs<'_> {}

/// Check that `rest` starts with `argc` whole bulk strings (the name
/// first) within [`MAX_COMMAND`] bytes. The verdict depends only on the
/// bytes, never on where reads split them: lengths are checked against the
/// bound as soon as their header is read.
pub(crate) fn measure(rest: &[u8], argc: u64) -> Whole<'_> {
    let mut pos = 0;
    for _ in 0..argc {
        let Some(&first) = rest.get(pos) else {
            return Whole::Partial;
        };
        if first != b'$' {
            return Whole::Invalid("expected '$'");
        }
        let window = &rest[pos..rest.len().min(pos + 32)];
        let Some(cr) = window.iter().position(|&b| b == b'\r') else {
            return if window.len() >= 32 {
                Whole::Invalid("too big bulk count string")
            } else {
                Whole::Partial
            };
        };
        let Some((len, header)) = bulk_header(&rest[pos..]) else {
            return if rest.len() <= pos + cr + 1 {
                Whole::Partial
            } else {
                Whole::Invalid("invalid bulk length")
            };
        };
        let end = len.saturating_add(pos + header + 2);
        if end > MAX_COMMAND {
            return Whole::Invalid("pub/sub command too long");
        }
        if rest.len() < end {
            return Whole::Partial;
        }
        if &rest[end - 2..end] != b"\r\n" {
            return Whole::Invalid("bulk string not followed by CRLF");
        }
        pos = end;
    }
    let mut args = BulkArgs {
        rest,
        left: argc as usize,
    };
    args.next(); // the name
    Whole::Done(pos, args)
}

/// `$<len>\r\n` at the front of `rest`: `(len, header length)`.
fn bulk_header(rest: &[u8]) -> Option<(usize, usize)> {
    let window = &rest[..rest.len().min(32)];
    let cr = window.iter().position(|&b| b == b'\r')?;
    if rest.get(cr + 1) != Some(&b'\n') || rest.first() != Some(&b'$') {
        return None;
    }
    let digits = &rest[1..cr];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = digits.iter().fold(0usize, |n, &d| {
        n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
    });
    Some((len, cr + 2))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::super::{Resp, MAX_PENDING};
    use crate::mailbox::{ConnId, Hub, Message, Receivers, To};
    use crate::proto::driver::Driver;
    use crate::proto::{Decision, Protocol};

    fn resp(hub: &Arc<Hub>, key: usize) -> Driver<Resp> {
        let mut proto = Resp::new(512 * 1024 * 1024);
        let me = ConnId {
            loop_id: 0,
            key,
            generation: key as u64,
        };
        proto.mailbox().unwrap().attach(me, Arc::clone(hub));
        Driver::new(proto, MAX_PENDING)
    }

    #[test]
    fn subscribe_replies_per_channel_with_the_running_count() {
        let hub = Hub::new(1);
        let mut sub = resp(&hub, 1);
        sub.feed(
            Instant::now(),
            b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\nPSUBSCRIBE n*\r\n",
        );
        assert_eq!(
            sub.text(),
            "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n\
             *3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n\
             *3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n"
        );
    }

    #[test]
    fn publish_counts_receivers_and_records_what_it_sent() {
        let hub = Hub::new(1);
        let mut sub = resp(&hub, 1);
        sub.feed(Instant::now(), b"SUBSCRIBE news\r\nPSUBSCRIBE n*\r\n");
        let mut publisher = resp(&hub, 2);
        publisher.feed(
            Instant::now(),
            b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$2\r\nhi\r\n",
        );
        assert_eq!(publisher.text(), ":2\r\n");
        let sent = publisher.proto.mailbox().unwrap().sent();
        let mut framed = crate::proto::Output::new();
        let mut on = Receivers::default();
        for (to, msg) in sent.iter() {
            assert_eq!(to, To::Members { loop_id: 0 });
            hub.receivers(msg.topic.unwrap(), 0, hub.clock(), &mut on);
            for i in 0..on.len() {
                let (id, pattern) = on.get(i).unwrap();
                assert_eq!(id.key, 1);
                let msg = Message { pattern, ..msg };
                sub.proto.on_message(Instant::now(), &msg, &mut framed);
            }
        }
        assert_eq!(
            String::from_utf8(framed.to_vec()).unwrap(),
            "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n\
             *4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
        );
    }

    #[test]
    fn a_publish_split_anywhere_is_answered_once_whole() {
        let input = b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$5\r\nhello\r\nPING\r\n";
        for split in 1..input.len() {
            let hub = Hub::new(1);
            let mut publisher = resp(&hub, 1);
            publisher.feed(Instant::now(), &input[..split]);
            publisher.feed(Instant::now(), &input[split..]);
            assert_eq!(publisher.text(), ":0\r\n+PONG\r\n", "split at {split}");
        }
    }

    #[test]
    fn subscribed_mode_allows_ping_and_refuses_other_commands() {
        let hub = Hub::new(1);
        let mut sub = resp(&hub, 1);
        sub.feed(Instant::now(), b"SUBSCRIBE a\r\n");
        sub.out.clear();
        sub.feed(Instant::now(), b"PING\r\nPING x\r\nECHO y\r\n");
        assert_eq!(
            sub.text(),
            "*2\r\n$4\r\npong\r\n$0\r\n\r\n*2\r\n$4\r\npong\r\n$1\r\nx\r\n\
             -ERR Can't execute 'echo': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
        );
        sub.out.clear();
        sub.feed(Instant::now(), b"UNSUBSCRIBE\r\nUNSUBSCRIBE\r\nPING\r\n");
        assert_eq!(
            sub.text(),
            "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n\
             *3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n+PONG\r\n"
        );
    }

    #[test]
    fn a_pubsub_command_longer_than_the_bound_is_a_protocol_error() {
        let hub = Hub::new(1);
        let mut publisher = resp(&hub, 1);
        let big = super::MAX_COMMAND;
        let head = format!("*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n${big}\r\n");
        let decision = publisher.feed(Instant::now(), head.as_bytes());
        assert_eq!(decision, Decision::Reject("pub/sub command too long"));
    }
}
