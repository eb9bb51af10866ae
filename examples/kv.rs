//! A tiny key-value store whose state every connection shares.
//!
//! What it teaches: on one event loop, state shared by connections needs no
//! lock. All connections run on the loop's thread, one call at a time, so
//! the store lives in a `thread_local!` of that thread and each call borrows
//! it for its duration. (The factory handed to `Server::bind` must be
//! `Send`, since a server may be built on one thread and run on another, so
//! it cannot capture an `Rc`; the thread-local is the loop's own.) With
//! several loops each would have its own store: share an `Arc<Mutex<..>>`
//! instead, or shard keys by loop and reach them through the mailbox.
//!
//! Protocol, one command per line: `SET key value` → `OK`, `GET key` →
//! the value or `(nil)`, `DEL key` → `1`/`0`, `QUIT` → `bye`, then close.
//!
//! Run: `cargo run --example kv -- --listen 127.0.0.1:7001`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use tcp_reactor::proto::{Decision, Output, Protocol, Step};
use tcp_reactor::{Config, Server};

thread_local! {
    /// The loop's store: only its thread ever touches it.
    static STORE: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
}

struct Kv;

impl Protocol for Kv {
    const NAME: &'static str = "kv";

    fn on_input(&mut self, _now: Instant, input: &[u8], out: &mut Output) -> Step {
        let mut consumed = 0;
        while let Some(nl) = input[consumed..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&input[consumed..consumed + nl]).into_owned();
            consumed += nl + 1;
            let mut words = line.trim_end().splitn(3, ' ');
            let reply =
                STORE.with_borrow_mut(|store| match (words.next(), words.next(), words.next()) {
                    (Some("SET"), Some(k), Some(v)) => {
                        store.insert(k.to_owned(), v.to_owned());
                        "OK".to_owned()
                    }
                    (Some("GET"), Some(k), None) => {
                        store.get(k).cloned().unwrap_or_else(|| "(nil)".into())
                    }
                    (Some("DEL"), Some(k), None) => u8::from(store.remove(k).is_some()).to_string(),
                    (Some("QUIT"), None, None) => "bye".to_owned(),
                    _ => "ERR usage: SET k v | GET k | DEL k | QUIT".to_owned(),
                });
            out.extend_from_slice(reply.as_bytes());
            out.push(b'\n');
            if reply == "bye" {
                return Step {
                    consumed: input.len(),
                    decision: Decision::Close,
                };
            }
        }
        let decision = if input.len() - consumed > 64 * 1024 {
            Decision::Reject("line too long")
        } else {
            Decision::Continue
        };
        Step { consumed, decision }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().collect();
    let listen = match args.iter().position(|a| a == "--listen") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => "127.0.0.1:7001".to_owned(),
    };
    let config = Config {
        listen: listen.parse().unwrap_or_else(|e| {
            eprintln!("kv: bad --listen {listen:?}: {e}");
            std::process::exit(2)
        }),
        ..Config::default()
    };
    let server = Server::bind(config, || Kv).unwrap_or_else(|e| {
        eprintln!("kv: {e}");
        std::process::exit(1)
    });
    println!("listening on {}", server.local_addr());
    let outcome = server.run().unwrap_or_else(|e| {
        eprintln!("kv: {e}");
        std::process::exit(1)
    });
    println!("All done.");
    std::process::exit(outcome.exit_code().into());
}
