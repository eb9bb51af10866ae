//! RESP, the Redis protocol (RESP2, and RESP3 after `HELLO 3`): enough of
//! it for `redis-cli`, `redis-benchmark` and a pub/sub broker, sans-IO.
//!
//! Owns command framing (inline lines and multibulk arrays), the few
//! commands, and the limits. It must not buffer on its own: a partial frame
//! stays in the connection's input queue, and bulk strings are **streamed**,
//! never collected, so a connection holds at most [`MAX_PENDING`] bytes of
//! input whatever `--max-body` says.
//!
//! # Commands (names case-insensitive)
//! * `PING` → `+PONG`; `PING msg` → bulk `msg`.
//! * `ECHO msg` → bulk `msg`.
//! * `QUIT` → `+OK`, then close.
//! * `SUBSCRIBE`, `UNSUBSCRIBE`, `PSUBSCRIBE`, `PUNSUBSCRIBE`, `PUBLISH`,
//!   `PUBSUB` and the subscribed mode: see [`pubsub`].
//! * `HELLO [2|3]`, `CLIENT REPLY|SETNAME|GETNAME|ID`, `RESET`: see
//!   [`session`].
//! * The commands are a type, [`Command`]; all but `PING`, `ECHO` and
//!   `QUIT` are taken whole, not streamed (at most `pubsub::MAX_COMMAND`
//!   bytes).
//! * anything else → `-ERR unknown command '<name>'`; the connection stays
//!   usable (`redis-benchmark` starts with `CONFIG GET save`, and copes).
//!
//! # Framing
//! ```text
//!   inline:    PING\r\n                      one line, split on spaces
//!   multibulk: *2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n
//! ```
//! A multibulk command is answered as soon as its name (argument 0) and
//! argument count are known; the argument `ECHO`/`PING` sends back is
//! echoed byte by byte as it arrives (`$5\r\n` first, since its length is
//! known), other arguments are skipped as they arrive. So output follows
//! input exactly as a non-streaming parser's would, wherever reads split it.
//!
//! ```text
//!   Ready ─'*N'─► Name { argc } ─'$L' + name─► Data ─CRLF─► Arg ─'$L'─► Data …
//!     ▲  └─ inline line: answered at once                               │
//!     └────────────────────────── last argument's CRLF ────────────────┘
//! ```
//! Broken framing gets `-ERR Protocol error: …` and the connection closes
//! ([`Decision::Reject`]), as do a bulk or array length over `--max-body`
//! (nothing is allocated for it). While draining, the command in flight
//! finishes, then the connection closes.

mod command;
pub mod pubsub;
pub mod session;

use std::time::Instant;

pub use self::command::Command;
use self::pubsub::{push_bulk, PubSub, Ran, Whole};
use self::session::{Session, Version};
use super::{
    budget_spent, stream_room, Decision, Output, Protocol, Report, Reports, Step, REPLY_MAX,
};
use crate::base::text::push_u64;
use crate::mailbox::{Mailbox, Message};

/// Longest inline command line (Redis allows 64 KiB; we keep a quarter of
/// the connection's pending-input bound).
pub(crate) const INLINE_MAX: usize = 16 * 1024;

/// Longest `*N\r\n` / `$N\r\n` line: a sign, 19 digits, CRLF, and slack.
const LINE_MAX: usize = 32;

/// Bytes of a command name kept for matching and for the error message.
pub(crate) const NAME_PREVIEW: usize = 128;

// The largest fixed reply, an inline `ECHO`'s bulk string (plus an error
// that may follow in the same call), fits the protocols' reply bound.
const _: () = assert!(INLINE_MAX + 1024 <= REPLY_MAX);

/// The most unconsumed input this protocol ever leaves with the connection.
pub const MAX_PENDING: usize = if INLINE_MAX > LINE_MAX + NAME_PREVIEW {
    INLINE_MAX
} else {
    LINE_MAX + NAME_PREVIEW
};

/// Where the connection is in the command stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between commands. `partial`: the start of the next one is waiting in
    /// the connection's input (so a drain must let it finish).
    Ready { partial: bool },
    /// Read `*argc`; argument 0, the command name, comes next.
    Name { argc: u64 },
    /// `left` arguments still to come; the next one is echoed if `echo`.
    Arg { left: u64, echo: bool },
    /// Inside a bulk string: `remaining` data bytes, then CRLF, then `left`
    /// more arguments, the first of which is echoed if `echo_next`.
    Data {
        left: u64,
        remaining: u64,
        echo: bool,
        echo_next: bool,
    },
    /// Closing (QUIT, a protocol error, or drained): nothing more is read.
    Done,
}

/// What follows a command's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// Nothing: the answer is complete.
    Nothing,
    /// Argument 1 is the reply, as a bulk string.
    EchoArg1,
    /// Close the connection (QUIT).
    Close,
    /// Not finished: it stopped at the output budget and is offered again
    /// (leaving every channel); its bytes stay unconsumed.
    Again,
}

/// One connection's RESP state: two words and an enum.
#[derive(Debug)]
pub struct Resp {
    /// Largest bulk string or array accepted (`--max-body`).
    max_len: u64,
    state: State,
    /// A graceful drain began: finish the command in flight, then close.
    draining: bool,
    /// An `UNSUBSCRIBE` / `PUNSUBSCRIBE` without arguments stopped at the
    /// output budget with subscriptions left, to go on when offered again.
    leaving_all: bool,
    /// Channels and patterns subscribed to (see [`pubsub`]).
    pubsub: PubSub,
    /// Protocol version, reply mode, name (see [`session`]): boxed, and
    /// only once a client changes one of them (`HELLO`, `CLIENT`), so the
    /// common RESP2 connection pays one null pointer.
    session: Option<Box<Session>>,
    /// Commands answered since the last [`Protocol::report`]: ping, echo,
    /// quit, other. The loop reports after every drive, which reads at most
    /// `read_budget` (256 KiB) = 43,690 six-byte `PING\r\n`s: `u16` holds it.
    commands: [u16; 4],
}

/// A `*N` or `$N` line at the front of the input.
enum Count {
    /// Not all of it yet.
    Partial,
    /// The count (`None` if negative) and the line's length with CRLF.
    Line(Option<u64>, usize),
    /// No CRLF within [`LINE_MAX`] bytes.
    TooLong,
    /// Not a number, or a CR without LF.
    Invalid,
}

impl Resp {
    /// A connection's protocol state. `max_len` bounds bulk strings and
    /// argument counts (`--max-body`).
    pub fn new(max_len: u64) -> Self {
        Self {
            max_len,
            state: State::Ready { partial: false },
            draining: false,
            leaving_all: false,
            pubsub: PubSub::new(),
            session: None,
            commands: [0; 4],
        }
    }

    /// The RESP version this connection speaks.
    fn version(&self) -> Version {
        self.session.as_ref().map_or(Version::Resp2, |s| s.version)
    }

    /// A command begins: whether its reply is sent (`CLIENT REPLY`).
    fn shows_reply(&mut self) -> bool {
        self.session.as_mut().is_none_or(|s| s.shows_reply())
    }

    /// The session settings, made on first use.
    fn session_mut(&mut self) -> &mut Session {
        self.session.get_or_insert_with(Box::default)
    }

    /// Close with `-ERR Protocol error: <msg>`.
    fn protocol_error(&mut self, msg: &'static str, input: &[u8], out: &mut Vec<u8>) -> Step {
        out.extend_from_slice(b"-ERR Protocol error: ");
        out.extend_from_slice(msg.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.close(input.len(), Decision::Reject(msg))
    }

    /// `$` was expected at the front of `rest`.
    fn expected_dollar(&mut self, rest: &[u8], input: &[u8], out: &mut Vec<u8>) -> Step {
        out.extend_from_slice(b"-ERR Protocol error: expected '$', got '");
        push_sanitized(out, &rest[..1]);
        out.extend_from_slice(b"'\r\n");
        self.close(input.len(), Decision::Reject("expected '$'"))
    }

    /// End the conversation. Whatever follows in `input` is never read:
    /// take it all, so the connection holds nothing while it flushes.
    fn close(&mut self, input_len: usize, decision: Decision) -> Step {
        self.state = State::Done;
        Step {
            consumed: input_len,
            decision,
        }
    }

    /// A whole command was read. While draining that was the last one.
    fn command_done(&mut self, input: &[u8]) -> Option<Step> {
        self.state = State::Ready { partial: false };
        self.draining
            .then(|| self.close(input.len(), Decision::Close))
    }

    /// Answer a streamed command (`PING`, `ECHO`, `QUIT`, or one this
    /// server does not know) from its name and argument count.
    fn answer(
        name: &[u8],
        command: Option<Command>,
        argc: u64,
        out: &mut Vec<u8>,
        commands: &mut [u16; 4],
    ) -> Then {
        let counter = command.map_or(3, Command::counter);
        commands[counter] = commands[counter].saturating_add(1);
        match command {
            Some(Command::Ping) => match argc {
                1 => {
                    out.extend_from_slice(b"+PONG\r\n");
                    Then::Nothing
                }
                2 => Then::EchoArg1,
                _ => wrong_arity(b"ping", out),
            },
            Some(Command::Echo) => match argc {
                2 => Then::EchoArg1,
                _ => wrong_arity(b"echo", out),
            },
            Some(Command::Quit) => {
                out.extend_from_slice(b"+OK\r\n");
                Then::Close
            }
            _ => {
                out.extend_from_slice(b"-ERR unknown command '");
                push_sanitized(out, &name[..name.len().min(NAME_PREVIEW)]);
                out.extend_from_slice(b"'\r\n");
                Then::Nothing
            }
        }
    }

    /// The command `name` is, and whether it is to be read whole and run
    /// by [`Resp::run_whole`]: every command but the streamed three, and
    /// `PING` too in RESP2's subscribed mode (its reply is an array there).
    fn classify(&self, name: &[u8], complete: bool) -> (Option<Command>, bool) {
        let command = Command::parse(name).filter(|_| complete);
        let whole = command.is_some_and(|c| {
            c.whole()
                || (c == Command::Ping
                    && self.pubsub.subscribed()
                    && self.version() == Version::Resp2)
        });
        (command, whole)
    }

    /// Whether RESP2's subscribed mode refuses `command` (the error is
    /// written, unless replies are off).
    fn refused(&mut self, name: &[u8], command: Option<Command>, out: &mut Vec<u8>) -> bool {
        if self.version() != Version::Resp2 {
            return false;
        }
        let mark = out.len();
        if !self.pubsub.refuse(name, command, out) {
            return false;
        }
        if !self.shows_reply() {
            out.truncate(mark);
        }
        true
    }

    /// Run a command read whole, with its arguments after the name.
    /// `stop_at`: where this call's output budget ends (see [`Ran`]).
    fn run_whole<'a>(
        &mut self,
        command: Command,
        args: impl ExactSizeIterator<Item = &'a [u8]>,
        out: &mut Vec<u8>,
        stop_at: usize,
    ) -> Ran {
        if !self.leaving_all {
            self.commands[command.counter()] = self.commands[command.counter()].saturating_add(1);
        }
        let shown = self.shows_reply();
        let mark = out.len();
        let version = self.version();
        let me = self.pubsub.mailbox().me();
        let ran = match command {
            Command::Hello => {
                self.session_mut().hello(args, me, out);
                Ran::Done
            }
            Command::Client => {
                self.session_mut().client(args, me, shown, out);
                return Ran::Done;
            }
            Command::Reset => {
                self.pubsub.leave_all();
                self.session = None; // RESP2, replies on, no name
                out.extend_from_slice(b"+RESET\r\n");
                Ran::Done
            }
            _ => {
                let leaving_all = &mut self.leaving_all;
                self.pubsub
                    .run(command, args, version, out, (stop_at, leaving_all))
            }
        };
        // RESP3's subscribe confirmations are pushes: CLIENT REPLY does
        // not hold them back.
        let pushes = version == Version::Resp3
            && matches!(
                command,
                Command::Subscribe
                    | Command::Unsubscribe
                    | Command::PSubscribe
                    | Command::PUnsubscribe
            );
        if !shown && !pushes {
            out.truncate(mark);
        }
        ran
    }

    /// An inline command at the front of `rest` (not starting with `*`):
    /// `Ok(Some(len))` when a whole line was handled.
    fn inline(
        &mut self,
        rest: &[u8],
        out: &mut Vec<u8>,
        stop_at: usize,
    ) -> Result<Option<(usize, Then)>, ()> {
        let window = &rest[..rest.len().min(INLINE_MAX)];
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            return if window.len() >= INLINE_MAX {
                Err(())
            } else {
                Ok(None)
            };
        };
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut args = line
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|a| !a.is_empty());
        let Some(name) = args.next() else {
            return Ok(Some((nl + 1, Then::Nothing))); // an empty line: no command
        };
        let (command, whole) = self.classify(name, true);
        if self.refused(name, command, out) {
            return Ok(Some((nl + 1, Then::Nothing)));
        }
        if let Some(command) = command.filter(|_| whole) {
            let args: Vec<&[u8]> = args.collect();
            if self.run_whole(command, args.into_iter(), out, stop_at) == Ran::More {
                return Ok(Some((0, Then::Again)));
            }
            return Ok(Some((nl + 1, Then::Nothing)));
        }
        let arg1 = args.next();
        let argc = 1 + u64::from(arg1.is_some()) + args.count() as u64;
        let shown = self.shows_reply();
        let mark = out.len();
        let then = match Self::answer(name, command, argc, out, &mut self.commands) {
            Then::EchoArg1 => {
                push_bulk(out, arg1.unwrap_or_default());
                Then::Nothing
            }
            then => then,
        };
        if !shown {
            out.truncate(mark);
        }
        Ok(Some((nl + 1, then)))
    }
}

fn wrong_arity(command: &[u8], out: &mut Vec<u8>) -> Then {
    out.extend_from_slice(b"-ERR wrong number of arguments for '");
    out.extend_from_slice(command);
    out.extend_from_slice(b"' command\r\n");
    Then::Nothing
}

impl Protocol for Resp {
    const NAME: &'static str = "resp";

    const REPORTS: Reports = Reports::Counts;

    fn report(&mut self, sink: &mut dyn FnMut(Report<'_>)) {
        if self.commands != [0; 4] {
            sink(Report::Resp {
                commands: std::mem::take(&mut self.commands),
            });
        }
    }

    fn on_input(&mut self, _now: Instant, input: &[u8], out: &mut Output) -> Step {
        let mut pos = 0;
        let out_start = out.len();
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => return self.close(input.len(), Decision::Close),
                State::Ready { .. } => {
                    let Some(&first) = rest.first() else {
                        self.state = State::Ready { partial: false };
                        return continue_at(pos);
                    };
                    if budget_spent(out.len() - out_start) {
                        // A 2-byte `x\n` costs a 28-byte error: leave the
                        // rest until these replies drain (the connection
                        // offers it again).
                        self.state = State::Ready { partial: false };
                        return continue_at(pos);
                    }
                    if first != b'*' {
                        match self.inline(rest, out, out_start + stream_room(0)) {
                            Err(()) => {
                                return self.protocol_error("too big inline request", input, out)
                            }
                            Ok(None) => {
                                self.state = State::Ready { partial: true };
                                return continue_at(pos);
                            }
                            Ok(Some((_, Then::Again))) => return continue_at(pos),
                            Ok(Some((len, then))) => {
                                pos += len;
                                if then == Then::Close {
                                    return self.close(input.len(), Decision::Close);
                                }
                                if let Some(step) = self.command_done(input) {
                                    return step;
                                }
                            }
                        }
                        continue;
                    }
                    match count_line(rest) {
                        Count::Partial => {
                            self.state = State::Ready { partial: true };
                            return continue_at(pos);
                        }
                        Count::TooLong => {
                            return self.protocol_error("too big mbulk count string", input, out)
                        }
                        Count::Invalid => {
                            return self.protocol_error("invalid multibulk length", input, out)
                        }
                        Count::Line(Some(argc), _) if argc > self.max_len => {
                            return self.protocol_error("invalid multibulk length", input, out);
                        }
                        Count::Line(Some(argc), len) if argc > 0 => {
                            pos += len;
                            self.state = State::Name { argc };
                        }
                        Count::Line(_, len) => {
                            // `*0` and `*-1`: an empty command, as Redis treats it.
                            pos += len;
                            if let Some(step) = self.command_done(input) {
                                return step;
                            }
                        }
                    }
                }
                State::Name { argc } => {
                    let (len, header) = match self.bulk_header(rest, pos, input, out) {
                        Ok(v) => v,
                        Err(step) => return step,
                    };
                    let preview = len.min(NAME_PREVIEW as u64) as usize;
                    if rest.len() < header + preview {
                        return continue_at(pos);
                    }
                    let name = &rest[header..header + preview];
                    let complete = preview as u64 == len;
                    let (command, whole) = self.classify(name, complete);
                    if let Some(command) = command.filter(|_| whole) {
                        // Taken whole, not streamed.
                        match pubsub::measure(rest, argc) {
                            Whole::Partial => return continue_at(pos),
                            Whole::Invalid(msg) => return self.protocol_error(msg, input, out),
                            Whole::Done(len, args) => {
                                let stop_at = out_start + stream_room(0);
                                if !self.refused(name, Some(command), out)
                                    && self.run_whole(command, args, out, stop_at) == Ran::More
                                {
                                    // Offered again once the output drains.
                                    return continue_at(pos);
                                }
                                pos += len;
                                if let Some(step) = self.command_done(input) {
                                    return step;
                                }
                                continue;
                            }
                        }
                    }
                    let then = if self.refused(name, command, out) {
                        Then::Nothing
                    } else {
                        let shown = self.shows_reply();
                        let mark = out.len();
                        match Self::answer(name, command, argc, out, &mut self.commands) {
                            then if shown => then,
                            then => {
                                out.truncate(mark);
                                match then {
                                    Then::EchoArg1 => Then::Nothing, // skipped, not echoed
                                    then => then,
                                }
                            }
                        }
                    };
                    pos += header + preview;
                    if then == Then::Close {
                        return self.close(input.len(), Decision::Close);
                    }
                    self.state = State::Data {
                        left: argc - 1,
                        remaining: len - preview as u64,
                        echo: false,
                        echo_next: then == Then::EchoArg1,
                    };
                }
                State::Arg { left, echo } => {
                    let (len, header) = match self.bulk_header(rest, pos, input, out) {
                        Ok(v) => v,
                        Err(step) => return step,
                    };
                    pos += header;
                    if echo {
                        out.push(b'$');
                        push_u64(out, len);
                        out.extend_from_slice(b"\r\n");
                    }
                    self.state = State::Data {
                        left: left - 1,
                        remaining: len,
                        echo,
                        echo_next: false,
                    };
                }
                State::Data {
                    left,
                    remaining,
                    echo,
                    echo_next,
                } => {
                    let mut take = remaining.min(rest.len() as u64) as usize;
                    if echo {
                        // A budget's worth at a time, like whole commands.
                        take = take.min(stream_room(out.len() - out_start));
                        out.extend_from_slice(&rest[..take]);
                    }
                    pos += take;
                    let remaining = remaining - take as u64;
                    self.state = State::Data {
                        left,
                        remaining,
                        echo,
                        echo_next,
                    };
                    let rest = &input[pos..];
                    if remaining > 0 || rest.len() < 2 {
                        return continue_at(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return self.protocol_error("bulk string not followed by CRLF", input, out);
                    }
                    pos += 2;
                    if echo {
                        out.extend_from_slice(b"\r\n");
                    }
                    if left > 0 {
                        self.state = State::Arg {
                            left,
                            echo: echo_next,
                        };
                    } else if let Some(step) = self.command_done(input) {
                        return step;
                    }
                }
            }
        }
    }

    fn mid_message(&self) -> bool {
        !matches!(self.state, State::Ready { partial: false } | State::Done)
    }

    fn mailbox(&mut self) -> Option<&mut Mailbox> {
        Some(self.pubsub.mailbox())
    }

    fn on_message(&mut self, _now: Instant, msg: &Message<'_>, out: &mut Output) -> Decision {
        pubsub::frame(msg, self.version(), out);
        Decision::Continue
    }

    fn on_drain(&mut self, _now: Instant, _out: &mut Output) -> Decision {
        match self.state {
            State::Ready { partial: false } | State::Done => {
                self.state = State::Done;
                Decision::Close
            }
            _ => {
                self.draining = true;
                Decision::Continue
            }
        }
    }
}

impl Resp {
    /// A `$N\r\n` header at the front of `rest`: `(N, header length)`.
    /// The `$<len>\r\n` a bulk string (a command's name or argument)
    /// starts with: its length and the header's size. `Err` is the step
    /// to return: wait for more bytes (at `pos`), or a protocol error.
    #[inline]
    fn bulk_header(
        &mut self,
        rest: &[u8],
        pos: usize,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(u64, usize), Step> {
        let Some(&first) = rest.first() else {
            return Err(continue_at(pos));
        };
        if first != b'$' {
            return Err(self.expected_dollar(rest, input, out));
        }
        match self.bulk_len(rest) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(continue_at(pos)),
            Err(msg) => Err(self.protocol_error(msg, input, out)),
        }
    }

    fn bulk_len(&self, rest: &[u8]) -> Result<Option<(u64, usize)>, &'static str> {
        match count_line(rest) {
            Count::Partial => Ok(None),
            Count::TooLong => Err("too big bulk count string"),
            Count::Line(Some(len), header) if len <= self.max_len => Ok(Some((len, header))),
            Count::Line(..) | Count::Invalid => Err("invalid bulk length"),
        }
    }
}

fn continue_at(consumed: usize) -> Step {
    Step {
        consumed,
        decision: Decision::Continue,
    }
}

/// Parse `<prefix>[-]digits\r\n` at the front of `rest`. Only the first
/// [`LINE_MAX`] bytes are looked at, so the verdict never depends on where
/// the input was split.
fn count_line(rest: &[u8]) -> Count {
    let window = &rest[..rest.len().min(LINE_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if window.len() >= LINE_MAX {
            Count::TooLong
        } else {
            Count::Partial
        };
    };
    match rest.get(cr + 1) {
        None => return Count::Partial,
        Some(b'\n') => {}
        Some(_) => return Count::Invalid,
    }
    let text = &rest[1..cr];
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Count::Invalid;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Count::Line((!negative).then_some(n), cr + 2)
}

/// Append `bytes` with control characters (CR and LF above all, which would
/// break the reply's framing) replaced by spaces.
pub(crate) fn push_sanitized(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend(
        bytes
            .iter()
            .map(|&b| if b < 0x20 || b == 0x7f { b' ' } else { b }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1024 * 1024;

    type Driver = crate::proto::driver::Driver<Resp>;

    /// Plays the connection (see `proto::driver`).
    fn driver() -> Driver {
        Driver::new(Resp::new(MAX), MAX_PENDING)
    }

    fn run(chunks: &[&[u8]]) -> (String, Decision) {
        let mut d = driver();
        let mut last = Decision::Continue;
        for chunk in chunks {
            if d.ended.is_some() {
                break;
            }
            if !chunk.is_empty() {
                last = d.feed(Instant::now(), chunk);
            }
        }
        (d.text(), last)
    }

    fn one(input: &str) -> (String, Decision) {
        run(&[input.as_bytes()])
    }

    #[test]
    fn ping_inline_and_multibulk_answer_pong() {
        assert_eq!(one("PING\r\n"), ("+PONG\r\n".into(), Decision::Continue));
        assert_eq!(one("ping\n"), ("+PONG\r\n".into(), Decision::Continue));
        assert_eq!(
            one("*1\r\n$4\r\nPiNg\r\n"),
            ("+PONG\r\n".into(), Decision::Continue)
        );
    }

    #[test]
    fn ping_and_echo_with_an_argument_return_it_as_a_bulk_string() {
        assert_eq!(one("PING hi\r\n").0, "$2\r\nhi\r\n");
        assert_eq!(one("ECHO  hello \r\n").0, "$5\r\nhello\r\n");
        assert_eq!(
            one("*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n").0,
            "$5\r\nhello\r\n"
        );
        assert_eq!(one("*2\r\n$4\r\nPING\r\n$0\r\n\r\n").0, "$0\r\n\r\n");
        // Binary-safe: CR and LF inside a bulk string are data.
        assert_eq!(
            one("*2\r\n$4\r\necho\r\n$4\r\na\r\nb\r\n").0,
            "$4\r\na\r\nb\r\n"
        );
    }

    #[test]
    fn wrong_argument_counts_are_errors_and_the_connection_stays_usable() {
        let (text, decision) = one("ECHO\r\n*3\r\n$4\r\nPING\r\n$1\r\na\r\n$1\r\nb\r\nPING\r\n");
        assert_eq!(
            text,
            "-ERR wrong number of arguments for 'echo' command\r\n\
             -ERR wrong number of arguments for 'ping' command\r\n+PONG\r\n"
        );
        assert_eq!(decision, Decision::Continue);
    }

    #[test]
    fn an_unknown_command_is_an_error_and_the_connection_stays_usable() {
        // What redis-benchmark sends first.
        let (text, decision) = one("*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n\
             *3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$10\r\nappendonly\r\nPING\r\n");
        assert_eq!(
            text,
            "-ERR unknown command 'CONFIG'\r\n-ERR unknown command 'CONFIG'\r\n+PONG\r\n"
        );
        assert_eq!(decision, Decision::Continue);
        assert_eq!(one("get k\r\n").0, "-ERR unknown command 'get'\r\n");
    }

    #[test]
    fn an_unknown_name_is_quoted_truncated_and_sanitized() {
        let long = "x".repeat(1000);
        let (text, decision) = one(&format!("*1\r\n${}\r\n{long}\r\nPING\r\n", long.len()));
        assert_eq!(
            text,
            format!(
                "-ERR unknown command '{}'\r\n+PONG\r\n",
                "x".repeat(NAME_PREVIEW)
            )
        );
        assert_eq!(decision, Decision::Continue);
        assert_eq!(
            one("*1\r\n$3\r\na\r\n\r\n").0,
            "-ERR unknown command 'a  '\r\n"
        );
    }

    #[test]
    fn quit_answers_ok_then_closes() {
        assert_eq!(one("QUIT\r\nPING\r\n"), ("+OK\r\n".into(), Decision::Close));
        assert_eq!(
            one("PING\r\n*1\r\n$4\r\nquit\r\nPING\r\n"),
            ("+PONG\r\n+OK\r\n".into(), Decision::Close)
        );
    }

    #[test]
    fn empty_lines_and_empty_arrays_are_no_commands() {
        assert_eq!(one("\r\n\n  \r\n*0\r\n*-1\r\nPING\r\n").0, "+PONG\r\n");
    }

    #[test]
    fn pipelined_commands_are_all_answered_in_one_call() {
        let mut d = driver();
        let input = "PING\r\n".repeat(100) + &"*1\r\n$4\r\nPING\r\n".repeat(100) + "*1\r\n$4\r\nPI";
        assert_eq!(d.feed(Instant::now(), input.as_bytes()), Decision::Continue);
        assert_eq!(d.text(), "+PONG\r\n".repeat(200));
        assert_eq!(d.pending, b"$4\r\nPI", "the partial last command waits");
    }

    #[test]
    fn cheap_commands_stop_at_the_output_budget_and_resume() {
        // `x\n`: 2 bytes in, a 28-byte error out.
        let many = b"x\n".repeat(32 * 1024);
        let mut resp = Resp::new(MAX);
        let mut out = Output::new();
        let step = resp.on_input(Instant::now(), &many, &mut out);
        assert!(step.consumed < many.len(), "took every command at once");
        assert!(budget_spent(out.len()), "{}", out.len());
        assert!(out.len() <= crate::proto::OUT_BUDGET, "{}", out.len());
        assert_eq!(step.consumed % 2, 0, "stops between commands");
        // A streamed ECHO argument is cut at the budget too.
        let big = vec![b'a'; 200 * 1024];
        let mut out = Output::new();
        let mut resp = Resp::new(MAX);
        let head = format!("*2\r\n$4\r\necho\r\n${}\r\n", big.len());
        let input = [head.as_bytes(), &big].concat();
        let step = resp.on_input(Instant::now(), &input, &mut out);
        assert!(out.len() <= crate::proto::OUT_BUDGET, "{}", out.len());
        assert!(step.consumed < input.len());
        // Offered the rest again (as the connection does), it all comes out.
        let mut d = driver();
        assert_eq!(d.feed(Instant::now(), &many), Decision::Continue);
        assert_eq!(
            d.out.len(),
            32 * 1024 * "-ERR unknown command 'x'\r\n".len()
        );
        assert!(d.pending.is_empty());
    }

    fn mixed_stream() -> Vec<u8> {
        [
            "PING\r\n",
            "*1\r\n$4\r\nPING\r\n",
            "*2\r\n$4\r\nECHO\r\n$12\r\nhello\r\nworld\r\n",
            "ECHO inline\n",
            "\r\n",
            "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n",
            "*0\r\n",
            "*2\r\n$4\r\nping\r\n$3\r\nmsg\r\n",
            "*1\r\n$4\r\nquit\r\n",
            "PING\r\n",
        ]
        .concat()
        .into_bytes()
    }

    #[test]
    fn a_stream_split_at_every_position_gives_the_same_responses() {
        let stream = mixed_stream();
        let whole = run(&[&stream]);
        assert_eq!(
            whole,
            (
                "+PONG\r\n+PONG\r\n$12\r\nhello\r\nworld\r\n$6\r\ninline\r\n\
                 -ERR unknown command 'SET'\r\n$3\r\nmsg\r\n+OK\r\n"
                    .into(),
                Decision::Close
            )
        );
        for i in 0..=stream.len() {
            assert_eq!(run(&[&stream[..i], &stream[i..]]), whole, "split at {i}");
        }
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let pieces = [&stream[..i], &stream[i..j], &stream[j..]];
                assert_eq!(run(&pieces), whole, "split at {i}, {j}");
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(&bytes), whole);
    }

    fn assert_protocol_error(input: &[u8], message: &str) {
        let whole = run(&[input]);
        assert!(
            whole
                .0
                .ends_with(&format!("-ERR Protocol error: {message}\r\n")),
            "{message}: {:?}",
            whole.0
        );
        assert!(matches!(whole.1, Decision::Reject(_)), "{:?}", whole.1);
        for i in 0..=input.len() {
            assert_eq!(run(&[&input[..i], &input[i..]]), whole, "split at {i}");
        }
    }

    #[test]
    fn malformed_framing_is_a_protocol_error_and_closes() {
        for (input, message) in [
            ("*x\r\n", "invalid multibulk length"),
            ("*\r\n", "invalid multibulk length"),
            ("*1\rX", "invalid multibulk length"),
            ("*1\r\nPING\r\n", "expected '$', got 'P'"),
            ("*2\r\n$4\r\nECHO\r\n+hi\r\n", "expected '$', got '+'"),
            ("*1\r\n$x\r\n", "invalid bulk length"),
            ("*1\r\n$-1\r\n", "invalid bulk length"),
            ("*1\r\n$4\r\nPINGxx", "bulk string not followed by CRLF"),
            (
                "*11111111111111111111111111111111111\r\n",
                "too big mbulk count string",
            ),
            (
                "*1\r\n$11111111111111111111111111111111111\r\n",
                "too big bulk count string",
            ),
        ] {
            assert_protocol_error(input.as_bytes(), message);
        }
        let endless = vec![b'a'; INLINE_MAX + 10];
        assert_protocol_error(&endless, "too big inline request");
        // Answers to the good commands before it still go out.
        let (text, _) = one("PING\r\n*1\r\n$x\r\n");
        assert!(text.starts_with("+PONG\r\n-ERR Protocol error"), "{text}");
    }

    #[test]
    fn lengths_over_max_body_are_refused_without_allocating() {
        let mut d = driver();
        let decision = d.feed(
            Instant::now(),
            format!("*2\r\n$4\r\nECHO\r\n${}\r\n", MAX + 1).as_bytes(),
        );
        assert!(matches!(decision, Decision::Reject(_)));
        assert_eq!(d.text(), "-ERR Protocol error: invalid bulk length\r\n");
        let (text, decision) = one(&format!("*{}\r\n", MAX + 1));
        assert_eq!(text, "-ERR Protocol error: invalid multibulk length\r\n");
        assert!(matches!(decision, Decision::Reject(_)));
        // At the limit it is streamed, never held.
        let mut d = driver();
        d.feed(
            Instant::now(),
            format!("*2\r\n$4\r\nECHO\r\n${MAX}\r\n").as_bytes(),
        );
        let chunk = vec![b'z'; 4096];
        for _ in 0..MAX / 4096 {
            assert_eq!(d.feed(Instant::now(), &chunk), Decision::Continue);
            assert!(d.pending.is_empty());
        }
        d.feed(Instant::now(), b"\r\n");
        assert_eq!(d.out.len(), format!("${MAX}\r\n").len() + MAX as usize + 2);
    }

    #[test]
    fn draining_between_commands_closes_at_once() {
        let mut d = driver();
        d.feed(Instant::now(), b"PING\r\n");
        assert_eq!(
            d.proto.on_drain(Instant::now(), &mut d.out),
            Decision::Close
        );
    }

    #[test]
    fn draining_finishes_the_command_in_flight_then_closes() {
        // Mid-bulk.
        let mut d = driver();
        d.feed(Instant::now(), b"*2\r\n$4\r\nECHO\r\n$6\r\nhel");
        assert_eq!(
            d.proto.on_drain(Instant::now(), &mut d.out),
            Decision::Continue
        );
        assert_eq!(d.feed(Instant::now(), b"lo!\r\nPING\r\n"), Decision::Close);
        assert_eq!(d.text(), "$6\r\nhello!\r\n");
        // A partial inline command waiting in the connection's input.
        let mut d = driver();
        d.feed(Instant::now(), b"PI");
        assert_eq!(
            d.proto.on_drain(Instant::now(), &mut d.out),
            Decision::Continue
        );
        assert_eq!(d.feed(Instant::now(), b"NG\r\nPING\r\n"), Decision::Close);
        assert_eq!(d.text(), "+PONG\r\n");
    }

    #[test]
    fn an_idle_resp_connection_is_small() {
        let size = std::mem::size_of::<Resp>();
        eprintln!("Resp: {size} B");
        // 48 B of parser state, a pointer for the session settings a
        // client may change (`HELLO`, `CLIENT`), and an unused mailbox.
        let mailbox = std::mem::size_of::<crate::mailbox::Mailbox>();
        assert!(size <= 48 + 8 + mailbox, "Resp grew to {size} B");
    }
}
