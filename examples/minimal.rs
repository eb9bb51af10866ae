//! The first file to read: the Go tutorial's TCP echo service on the library.
//!
//! What it teaches:
//! * a protocol is a sans-IO state machine: bytes in, bytes and a decision
//!   out (here: the library's `Echo`, which answers every read with itself);
//! * `Server::bind` + `run` is the whole event loop: accept, one state
//!   machine per connection, SIGINT/SIGTERM/SIGQUIT start a graceful drain
//!   (a second one forces it), and `run` returns once every connection ended;
//! * `on_close` is the handler's deferred cleanup: it runs exactly once per
//!   connection, however it ended (here it prints `handler done.`);
//! * logging is `env_logger`: `RUST_LOG=debug` (or `trace`) shows each
//!   connection's life.
//!
//! Run: `cargo run --example minimal -- 127.0.0.1:8080`, then
//! `nc 127.0.0.1 8080`, type, and press Ctrl-C in the server's terminal.

use tcp_reactor::proto::Echo;
use tcp_reactor::{Config, Server};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let config = Config {
        listen: match listen.parse() {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("minimal: bad address {listen:?}: {e}");
                std::process::exit(2);
            }
        },
        ..Config::default() // handles SIGINT/SIGTERM/SIGQUIT itself
    };
    let server = match Server::bind(config, || Echo) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("minimal: {e}");
            std::process::exit(1);
        }
    };
    // The cleanup hook: the Go handler's `defer`.
    let server = server.on_close(|info| {
        log::debug!("{} closed: {}", info.peer, info.reason);
        println!("handler done.");
    });
    println!("listening on {}", server.local_addr());
    match server.run() {
        Ok(outcome) => {
            println!("All done.");
            std::process::exit(outcome.exit_code().into());
        }
        Err(e) => {
            eprintln!("minimal: {e}");
            std::process::exit(1);
        }
    }
}
