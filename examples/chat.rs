//! A line chat room: every line a client sends goes to every other client.
//!
//! What it teaches: connections that talk to each other, Go's channels on
//! the event loop (see `tcp_reactor::mailbox`).
//! * The protocol owns a `Mailbox` and returns it from `mailbox()`; the loop
//!   attaches it when the connection opens, then calls `on_open`, where it
//!   joins the group `room` and announces itself.
//! * `publish` only records the message (the protocol stays sans-IO); after
//!   the turn the loop hands it to each member's `on_message`, which frames
//!   it into that member's output. No lock, no timer, no polling.
//! * A member that does not read is not allowed to slow the room down or to
//!   pile up memory: once it owes more than `slow_consumer_limit` bytes it
//!   is disconnected with reason `slow consumer` (as NATS and Redis do).
//! * `on_end` says goodbye as soon as the conversation is over (the
//!   connection may still linger for the peer's FIN); SIGTERM drains: what
//!   each member was already sent goes out before its FIN.
//!
//! Run: `cargo run --example chat -- --listen 127.0.0.1:7000`, then several
//! `nc 127.0.0.1 7000`.

use std::net::SocketAddr;
use std::time::Instant;

use tcp_reactor::base::close::CloseReason;
use tcp_reactor::mailbox::{Mailbox, Message};
use tcp_reactor::proto::{Decision, Output, Protocol, Step};
use tcp_reactor::{Config, Server};

const ROOM: &[u8] = b"room";
/// Longest line; a longer one ends the conversation.
const MAX_LINE: usize = 4096;

#[derive(Default)]
struct Chat {
    mailbox: Mailbox,
    name: String,
}

impl Protocol for Chat {
    const NAME: &'static str = "chat";

    fn on_peer(&mut self, peer: SocketAddr) {
        self.name = peer.to_string();
    }

    fn mailbox(&mut self) -> Option<&mut Mailbox> {
        Some(&mut self.mailbox)
    }

    fn on_open(&mut self, _out: &mut Output) {
        self.mailbox.join(ROOM);
        let notice = format!("* {} joined\n", self.name);
        self.mailbox.publish(ROOM, notice.as_bytes());
    }

    fn on_input(&mut self, _now: Instant, input: &[u8], _out: &mut Output) -> Step {
        let mut consumed = 0;
        while let Some(nl) = input[consumed..].iter().position(|&b| b == b'\n') {
            let line = &input[consumed..consumed + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut said = format!("{}: ", self.name).into_bytes();
            said.extend_from_slice(line);
            said.push(b'\n');
            self.mailbox.publish(ROOM, &said);
            consumed += nl + 1;
        }
        let decision = if input.len() - consumed > MAX_LINE {
            Decision::Reject("line too long")
        } else {
            Decision::Continue
        };
        Step { consumed, decision }
    }

    fn on_message(&mut self, _now: Instant, msg: &Message<'_>, out: &mut Output) -> Decision {
        if Some(msg.from) != self.mailbox.me() {
            out.extend_from_slice(msg.payload); // not our own words back
        }
        Decision::Continue
    }

    /// As soon as the conversation is over (not after the lingering close,
    /// which may take seconds): leave, and say so.
    fn on_end(&mut self, reason: &CloseReason) {
        self.mailbox.leave(ROOM);
        let notice = format!("* {} left ({reason})\n", self.name);
        self.mailbox.publish(ROOM, notice.as_bytes());
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().collect();
    let listen = match args.iter().position(|a| a == "--listen") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => "127.0.0.1:7000".to_owned(),
    };
    let mut config = Config {
        listen: listen.parse().unwrap_or_else(|e| {
            eprintln!("chat: bad --listen {listen:?}: {e}");
            std::process::exit(2)
        }),
        ..Config::default()
    };
    // The slow-consumer bound: 256 KiB of chat owed to one member.
    config.limits.slow_consumer_limit = 256 * 1024;
    let server = Server::bind(config, Chat::default).unwrap_or_else(|e| {
        eprintln!("chat: {e}");
        std::process::exit(1)
    });
    println!("listening on {}", server.local_addr());
    let outcome = server.run().unwrap_or_else(|e| {
        eprintln!("chat: {e}");
        std::process::exit(1)
    });
    println!("All done.");
    std::process::exit(outcome.exit_code().into());
}
