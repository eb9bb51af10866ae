//! Messages between connections through the library: a protocol learns its
//! identity from its mailbox, sends by id, and a message for a connection
//! that has closed never reaches the next tenant of its slab slot.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tcp_reactor::mailbox::{ConnId, Mailbox};
use tcp_reactor::proto::{Decision, Output, Protocol, Step};
use tcp_reactor::{Config, Server};

/// Lines in: `id` → `<loop> <key> <generation>`; `to <loop> <key> <gen>
/// <text>` → sends `<text>` there and answers `sent`.
#[derive(Default)]
struct Relay {
    mailbox: Mailbox,
}

impl Protocol for Relay {
    const NAME: &'static str = "relay";

    fn on_input(&mut self, _now: Instant, input: &[u8], out: &mut Output) -> Step {
        let mut consumed = 0;
        while let Some(nl) = input[consumed..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&input[consumed..consumed + nl]).into_owned();
            consumed += nl + 1;
            let words: Vec<&str> = line.splitn(5, ' ').collect();
            match words.as_slice() {
                ["id"] => {
                    let me = self.mailbox.me().expect("attached when opened");
                    out.extend_from_slice(
                        format!("{} {} {}\n", me.loop_id, me.key, me.generation).as_bytes(),
                    );
                }
                ["to", l, k, g, text] => {
                    let to = ConnId {
                        loop_id: l.parse().unwrap_or(0),
                        key: k.parse().unwrap_or(0),
                        generation: g.parse().unwrap_or(0),
                    };
                    self.mailbox.send(to, format!("{text}\n").as_bytes());
                    out.extend_from_slice(b"sent\n");
                }
                _ => out.extend_from_slice(b"?\n"),
            }
        }
        Step {
            consumed,
            decision: Decision::Continue,
        }
    }

    fn mailbox(&mut self) -> Option<&mut Mailbox> {
        Some(&mut self.mailbox)
    }
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn ask(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        self.line()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line");
        line.trim_end().to_owned()
    }
}

#[test]
fn a_message_for_a_closed_connection_never_reaches_the_next_tenant_of_its_slot() {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        handle_signals: false,
        ..Config::default()
    };
    let closed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&closed);
    let server = Server::bind(config, Relay::default)
        .unwrap()
        .on_close(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let running = thread::spawn(move || server.run().unwrap());

    let mut sender = Client::connect(addr);
    sender.ask("id");
    let mut first = Client::connect(addr);
    let old = first.ask("id");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "first connection never closed");
        thread::sleep(Duration::from_millis(5));
    }
    let mut tenant = Client::connect(addr);
    let new = tenant.ask("id");
    let (old_key, new_key) = (old.split(' ').nth(1), new.split(' ').nth(1));
    assert_eq!(old_key, new_key, "the slot is reused ({old} / {new})");
    assert_ne!(old, new, "with a new generation");

    // FIFO from one sender: were "for the old one" delivered, it would
    // arrive before "for the tenant".
    assert_eq!(sender.ask(&format!("to {old} for the old one")), "sent");
    assert_eq!(sender.ask(&format!("to {new} for the tenant")), "sent");
    assert_eq!(tenant.line(), "for the tenant");

    drop((sender, tenant));
    handle.shutdown();
    running.join().unwrap();
}

#[test]
fn sends_from_one_connection_to_another_arrive_in_order() {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        handle_signals: false,
        ..Config::default()
    };
    let server = Server::bind(config, Relay::default).unwrap();
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let running = thread::spawn(move || server.run().unwrap());
    let mut receiver = Client::connect(addr);
    let me = receiver.ask("id");
    let mut sender = Client::connect(addr);
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!("to {me} message {i}\n"));
    }
    sender.writer.write_all(batch.as_bytes()).unwrap();
    for i in 0..1000 {
        assert_eq!(sender.line(), "sent");
        assert_eq!(receiver.line(), format!("message {i}"));
    }
    drop((sender, receiver));
    handle.shutdown();
    running.join().unwrap();
}
