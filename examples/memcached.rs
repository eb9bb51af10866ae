//! A memcached server (its text protocol) on tcp-reactor's public API alone.
//!
//! What it teaches: a real protocol a stranger can build on the library.
//! * **Sans-IO**: `Memcached` is bytes and `now` in, bytes and decisions out.
//!   A command line waits, unconsumed, until its `\r\n` is here; a value's
//!   data (up to 1 MiB) is taken as it arrives, so the connection never
//!   holds more than the protocol's own bound.
//! * **Replies of any size, never held twice**: a stored value is an
//!   `Arc<[u8]>`; `get` hands it to the connection with `Output::share`, and
//!   the connection writes it as the socket drains. One call stops taking
//!   commands once its output budget is spent (`budget_spent`): the
//!   connection offers the rest again when the output has drained.
//! * **Several loops** (`--threads N`) from code, with `Supervisor`: one
//!   store for the process (`Arc<Mutex<…>>`), built once; per-loop state
//!   built on each loop's thread (`run_per_loop`): counters that reach
//!   `/metrics` (`--metrics ADDR`) and, on loop 0, a timer that sweeps
//!   expired items. SIGTERM drains every connection, then `All done.`.
//!
//! Commands: `set`/`add`/`replace`/`append`/`prepend`/`cas`, `get`/`gets`
//! with many keys, `delete`, `incr`/`decr`, `touch`, `flush_all`, `stats`,
//! `version`, `verbosity`, `quit`; `noreply`; expiry (relative seconds up to
//! 30 days, else a Unix time; negative: expired at once).
//!
//! Run: `cargo run --example memcached -- --listen 127.0.0.1:11211 --threads 2`,
//! then `memccapable -a -h 127.0.0.1 -p 11211` (memcached's conformance
//! checker, in Debian's libmemcached-tools) or any memcached client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tcp_reactor::process::supervisor::Supervisor;
use tcp_reactor::proto::{budget_spent, Decision, Output, Protocol, Step};
use tcp_reactor::reactor::loop_context::{Counter, LoopContext};
use tcp_reactor::Config;

/// Largest value (memcached's default item size limit).
const MAX_VALUE: usize = 1024 * 1024;
/// Longest key (memcached's `KEY_MAX_LENGTH`).
const MAX_KEY: usize = 250;
/// Longest command line: a `get` of many keys fits.
const MAX_LINE: usize = 8 * 1024;
/// Up to this many seconds, an expiry time is relative (memcached's rule).
const RELATIVE_MAX: i64 = 60 * 60 * 24 * 30;

/// One item.
struct Item {
    flags: u32,
    /// When it expires (`None`: never).
    expires: Option<Instant>,
    cas: u64,
    data: Arc<[u8]>,
}

/// The cache, shared by every connection of every loop.
struct Store {
    items: HashMap<Vec<u8>, Item>,
    /// The last cas unique handed out.
    cas: u64,
    /// Unix time at `started`: turns absolute expiry times into instants.
    unix_at_start: i64,
    started: Instant,
    total_items: u64,
}

impl Store {
    fn new() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Self {
            items: HashMap::new(),
            cas: 0,
            unix_at_start: unix,
            started: Instant::now(),
            total_items: 0,
        }
    }

    /// The live item at `key` (an expired one is removed).
    fn live(&mut self, key: &[u8], now: Instant) -> Option<&mut Item> {
        if self
            .items
            .get(key)
            .is_some_and(|i| i.expires.is_some_and(|e| e <= now))
        {
            self.items.remove(key);
        }
        self.items.get_mut(key)
    }

    /// What an expiry time in a command means, at `now`.
    fn expiry(&self, exptime: i64, now: Instant) -> Option<Instant> {
        match exptime {
            0 => None,
            t if t < 0 => Some(now), // expired at once
            t if t <= RELATIVE_MAX => Some(now + Duration::from_secs(t as u64)),
            t => {
                let since_start = (t - self.unix_at_start).max(0) as u64;
                Some(self.started + Duration::from_secs(since_start))
            }
        }
    }

    fn next_cas(&mut self) -> u64 {
        self.cas += 1;
        self.cas
    }

    fn put(&mut self, key: &[u8], flags: u32, expires: Option<Instant>, data: Arc<[u8]>) {
        let cas = self.next_cas();
        self.total_items += 1;
        self.items.insert(
            key.to_vec(),
            Item {
                flags,
                expires,
                cas,
                data,
            },
        );
    }

    /// Drop what has expired (loop 0's timer does this every second;
    /// reads check too, so this only gives the memory back sooner).
    fn sweep(&mut self, now: Instant) {
        self.items.retain(|_, i| i.expires.is_none_or(|e| e > now));
    }
}

/// Which storage command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Storage {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
}

/// A storage command whose data is still arriving.
struct Pending {
    storage: Storage,
    key: Vec<u8>,
    flags: u32,
    exptime: i64,
    /// The data's length, without its `\r\n`.
    len: usize,
    cas: u64,
    noreply: bool,
    /// What arrived so far (data, then its `\r\n`); `None` while the data
    /// is swallowed (too large: the reply was an error).
    data: Option<Vec<u8>>,
    /// Bytes of data and `\r\n` still to come.
    left: usize,
}

/// What a loop counts (registered on its context: summed into `/metrics`).
#[derive(Clone)]
struct Counts {
    gets: Counter,
    hits: Counter,
    sets: Counter,
}

/// One connection.
struct Memcached {
    store: Arc<Mutex<Store>>,
    counts: Counts,
    pending: Option<Pending>,
}

impl Memcached {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One command line (without its `\r\n`). `Some` when the connection ends.
    fn command(&mut self, line: &[u8], now: Instant, out: &mut Output) -> Option<Decision> {
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let Some(name) = words.next() else {
            out.extend_from_slice(b"ERROR\r\n");
            return None;
        };
        let args: Vec<&[u8]> = words.collect();
        match name {
            b"get" | b"gets" if !args.is_empty() => self.get(&args, name == b"gets", now, out),
            b"set" => self.storage(Storage::Set, &args, out),
            b"add" => self.storage(Storage::Add, &args, out),
            b"replace" => self.storage(Storage::Replace, &args, out),
            b"append" => self.storage(Storage::Append, &args, out),
            b"prepend" => self.storage(Storage::Prepend, &args, out),
            b"cas" => self.storage(Storage::Cas, &args, out),
            b"delete" => self.delete(&args, now, out),
            b"incr" | b"decr" => self.arith(name == b"incr", &args, now, out),
            b"touch" => self.touch(&args, now, out),
            b"flush_all" => self.flush_all(&args, now, out),
            b"stats" if args.is_empty() => self.stats(now, out),
            b"version" => out.extend_from_slice(b"VERSION 1.6.18-tcp-reactor\r\n"),
            // `verbosity [level] [noreply]`, as memcached takes it.
            b"verbosity" if (1..=2).contains(&args.len()) => reply(out, noreply(&args), b"OK\r\n"),
            b"quit" => return Some(Decision::Close),
            _ => out.extend_from_slice(b"ERROR\r\n"),
        }
        None
    }

    fn get(&mut self, keys: &[&[u8]], with_cas: bool, now: Instant, out: &mut Output) {
        let mut store = self.store();
        for key in keys {
            self.counts.gets.inc();
            let Some(item) = store.live(key, now) else {
                continue;
            };
            self.counts.hits.inc();
            out.extend_from_slice(b"VALUE ");
            out.extend_from_slice(key);
            let head = match with_cas {
                true => format!(" {} {} {}\r\n", item.flags, item.data.len(), item.cas),
                false => format!(" {} {}\r\n", item.flags, item.data.len()),
            };
            out.extend_from_slice(head.as_bytes());
            out.share(Arc::clone(&item.data)); // the value itself: not copied
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"END\r\n");
    }

    /// `<cmd> <key> <flags> <exptime> <bytes> [cas] [noreply]`: the data follows.
    fn storage(&mut self, storage: Storage, args: &[&[u8]], out: &mut Output) {
        let wanted = if storage == Storage::Cas { 5 } else { 4 };
        let parsed = (|| {
            if args.len() < wanted || args.len() > wanted + 1 {
                return None;
            }
            let key = args[0];
            let flags: u32 = number(args[1])?;
            let exptime: i64 = number(args[2])?;
            let len: i64 = number(args[3])?;
            let cas: u64 = if storage == Storage::Cas {
                number(args[4])?
            } else {
                0
            };
            let noreply = match args.get(wanted) {
                Some(&b"noreply") => true,
                Some(_) => return None,
                None => false,
            };
            (key.len() <= MAX_KEY && len >= 0).then_some((
                key,
                flags,
                exptime,
                len as usize,
                cas,
                noreply,
            ))
        })();
        let Some((key, flags, exptime, len, cas, noreply)) = parsed else {
            out.extend_from_slice(b"CLIENT_ERROR bad command line format\r\n");
            return;
        };
        let too_large = len > MAX_VALUE;
        if too_large {
            out.extend_from_slice(b"SERVER_ERROR object too large for cache\r\n");
        }
        self.pending = Some(Pending {
            storage,
            key: key.to_vec(),
            flags,
            exptime,
            len,
            cas,
            noreply,
            data: (!too_large).then(|| Vec::with_capacity(len + 2)),
            left: len + 2,
        });
    }

    /// The data of a storage command has all arrived.
    fn store_pending(&mut self, pending: Pending, now: Instant, out: &mut Output) {
        let Some(mut data) = pending.data else {
            return; // too large: already answered, now swallowed
        };
        if !data.ends_with(b"\r\n") {
            out.extend_from_slice(b"CLIENT_ERROR bad data chunk\r\n");
            return;
        }
        data.truncate(pending.len);
        self.counts.sets.inc();
        let mut store = self.store();
        let expires = store.expiry(pending.exptime, now);
        let key = &pending.key[..];
        let exists = store.live(key, now).is_some();
        let answer: &[u8] = match pending.storage {
            Storage::Set => {
                store.put(key, pending.flags, expires, data.into());
                b"STORED\r\n"
            }
            Storage::Add if exists => b"NOT_STORED\r\n",
            Storage::Add => {
                store.put(key, pending.flags, expires, data.into());
                b"STORED\r\n"
            }
            Storage::Replace if !exists => b"NOT_STORED\r\n",
            Storage::Replace => {
                store.put(key, pending.flags, expires, data.into());
                b"STORED\r\n"
            }
            Storage::Append | Storage::Prepend if !exists => b"NOT_STORED\r\n",
            Storage::Append | Storage::Prepend => {
                let cas = store.next_cas();
                if let Some(item) = store.live(key, now) {
                    let joined: Vec<u8> = if pending.storage == Storage::Append {
                        [&item.data[..], &data[..]].concat()
                    } else {
                        [&data[..], &item.data[..]].concat()
                    };
                    if joined.len() > MAX_VALUE {
                        out.extend_from_slice(b"SERVER_ERROR object too large for cache\r\n");
                        return;
                    }
                    item.data = joined.into();
                    item.cas = cas;
                }
                b"STORED\r\n"
            }
            Storage::Cas => match store.live(key, now).map(|i| i.cas) {
                None => b"NOT_FOUND\r\n",
                Some(cas) if cas != pending.cas => b"EXISTS\r\n",
                Some(_) => {
                    store.put(key, pending.flags, expires, data.into());
                    b"STORED\r\n"
                }
            },
        };
        reply(out, pending.noreply, answer);
    }

    fn delete(&mut self, args: &[&[u8]], now: Instant, out: &mut Output) {
        // `delete <key> [0] [noreply]`: a time other than 0 is refused.
        let noreply = noreply(args);
        let rest = &args[1.min(args.len())..args.len() - usize::from(noreply)];
        if args.is_empty() || rest.len() > 1 || rest.first().is_some_and(|t| *t != b"0") {
            out.extend_from_slice(
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
            );
            return;
        }
        let mut store = self.store();
        let found = store.live(args[0], now).is_some();
        if found {
            store.items.remove(args[0]);
        }
        reply(
            out,
            noreply,
            if found {
                b"DELETED\r\n"
            } else {
                b"NOT_FOUND\r\n"
            },
        );
    }

    fn arith(&mut self, incr: bool, args: &[&[u8]], now: Instant, out: &mut Output) {
        let noreply = noreply(args);
        if args.len() != 2 + usize::from(noreply) {
            out.extend_from_slice(b"ERROR\r\n");
            return;
        }
        let Some(delta) = number::<u64>(args[1]) else {
            out.extend_from_slice(b"CLIENT_ERROR invalid numeric delta argument\r\n");
            return;
        };
        let mut store = self.store();
        let cas = store.next_cas();
        let Some(item) = store.live(args[0], now) else {
            return reply(out, noreply, b"NOT_FOUND\r\n");
        };
        let Some(value) = number::<u64>(&item.data) else {
            out.extend_from_slice(
                b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            );
            return;
        };
        let value = if incr {
            value.wrapping_add(delta)
        } else {
            value.saturating_sub(delta)
        };
        let text = value.to_string();
        item.data = Arc::from(text.as_bytes());
        item.cas = cas;
        if !noreply {
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    fn touch(&mut self, args: &[&[u8]], now: Instant, out: &mut Output) {
        let noreply = noreply(args);
        let exptime = args.get(1).and_then(|t| number::<i64>(t));
        let (Some(key), Some(exptime), true) = (
            args.first(),
            exptime,
            args.len() == 2 + usize::from(noreply),
        ) else {
            out.extend_from_slice(b"ERROR\r\n");
            return;
        };
        let mut store = self.store();
        let expires = store.expiry(exptime, now);
        let touched = match store.live(key, now) {
            Some(item) => {
                item.expires = expires;
                true
            }
            None => false,
        };
        reply(
            out,
            noreply,
            if touched {
                b"TOUCHED\r\n"
            } else {
                b"NOT_FOUND\r\n"
            },
        );
    }

    fn flush_all(&mut self, args: &[&[u8]], now: Instant, out: &mut Output) {
        let noreply = noreply(args);
        let delay = match args.first().filter(|a| **a != b"noreply") {
            Some(d) => match number::<i64>(d) {
                Some(d) => d,
                None => {
                    out.extend_from_slice(b"CLIENT_ERROR bad command line format\r\n");
                    return;
                }
            },
            None => 0,
        };
        let mut store = self.store();
        if delay <= 0 {
            store.items.clear();
        } else {
            let at = store.expiry(delay, now);
            for item in store.items.values_mut() {
                item.expires = match (item.expires, at) {
                    (Some(e), Some(at)) => Some(e.min(at)),
                    (e, at) => e.or(at),
                };
            }
        }
        reply(out, noreply, b"OK\r\n");
    }

    fn stats(&mut self, now: Instant, out: &mut Output) {
        let store = self.store();
        let uptime = now.saturating_duration_since(store.started).as_secs();
        let bytes: usize = store.items.values().map(|i| i.data.len()).sum();
        let lines = [
            ("pid", std::process::id().to_string()),
            ("uptime", uptime.to_string()),
            ("time", (store.unix_at_start + uptime as i64).to_string()),
            ("version", "1.6.18-tcp-reactor".to_owned()),
            (
                "pointer_size",
                (8 * std::mem::size_of::<usize>()).to_string(),
            ),
            ("curr_items", store.items.len().to_string()),
            ("total_items", store.total_items.to_string()),
            ("bytes", bytes.to_string()),
            ("cmd_get", self.counts.gets.get().to_string()),
            ("cmd_set", self.counts.sets.get().to_string()),
            ("get_hits", self.counts.hits.get().to_string()),
            (
                "get_misses",
                (self.counts.gets.get() - self.counts.hits.get()).to_string(),
            ),
            ("limit_maxbytes", (64u64 << 20).to_string()),
        ];
        for (name, value) in lines {
            out.extend_from_slice(format!("STAT {name} {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"END\r\n");
    }
}

/// A decimal number, all of `text`.
fn number<T: std::str::FromStr>(text: &[u8]) -> Option<T> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Whether the last argument is `noreply`.
fn noreply(args: &[&[u8]]) -> bool {
    args.last() == Some(&&b"noreply"[..])
}

fn reply(out: &mut Output, noreply: bool, answer: &[u8]) {
    if !noreply {
        out.extend_from_slice(answer);
    }
}

impl Protocol for Memcached {
    const NAME: &'static str = "memcached";

    fn on_input(&mut self, now: Instant, input: &[u8], out: &mut Output) -> Step {
        let start = out.len();
        let mut pos = 0;
        loop {
            // A value's data: take what has arrived (it is ours to keep).
            if let Some(pending) = self.pending.as_mut() {
                let take = pending.left.min(input.len() - pos);
                if let Some(data) = pending.data.as_mut() {
                    data.extend_from_slice(&input[pos..pos + take]);
                }
                pending.left -= take;
                pos += take;
                if pending.left > 0 {
                    break;
                }
                if let Some(pending) = self.pending.take() {
                    self.store_pending(pending, now, out);
                }
                continue;
            }
            // Stop at the budget: the rest is offered again once the
            // output has drained.
            if budget_spent(out.len() - start) {
                break;
            }
            let rest = &input[pos..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                if rest.len() > MAX_LINE {
                    out.extend_from_slice(b"CLIENT_ERROR line too long\r\n");
                    return Step {
                        consumed: input.len(),
                        decision: Decision::Reject("command line too long"),
                    };
                }
                break; // wait for the rest of the line
            };
            let line = &rest[..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pos += nl + 1;
            if let Some(decision) = self.command(line, now, out) {
                return Step {
                    consumed: input.len(),
                    decision,
                };
            }
        }
        Step {
            consumed: pos,
            decision: Decision::Continue,
        }
    }

    /// A command in flight (a value still arriving) finishes first.
    fn on_drain(&mut self, _now: Instant, _out: &mut Output) -> Decision {
        match self.pending {
            Some(_) => Decision::Continue,
            None => Decision::Close,
        }
    }

    fn mid_message(&self) -> bool {
        self.pending.is_some()
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let usage = |what: &str| -> ! {
        eprintln!("memcached: {what} (usage: --listen ADDR [--threads N] [--metrics ADDR])");
        std::process::exit(2)
    };
    let listen: SocketAddr = flag("--listen")
        .unwrap_or_else(|| "127.0.0.1:11211".to_owned())
        .parse()
        .unwrap_or_else(|e| usage(&format!("bad --listen: {e}")));
    let threads: usize = flag("--threads")
        .map(|t| {
            t.parse()
                .unwrap_or_else(|e| usage(&format!("bad --threads: {e}")))
        })
        .unwrap_or(1);
    let mut config = Config {
        listen,
        ..Config::default()
    };
    // The largest command a connection may leave half-received: a line.
    config.limits.max_pending_input = MAX_LINE + 2;
    let supervisor = Supervisor::bind(config, threads)
        .unwrap_or_else(|e| {
            eprintln!("memcached: {e}");
            std::process::exit(1)
        })
        .handle_signals(true);
    let supervisor = match flag("--metrics") {
        Some(addr) => match std::net::TcpListener::bind(addr.as_str()) {
            Ok(listener) => supervisor.metrics(listener),
            Err(e) => {
                eprintln!("memcached: cannot bind --metrics {addr}: {e}");
                std::process::exit(1)
            }
        },
        None => supervisor,
    };
    if let Some(addr) = supervisor.local_addr() {
        println!("listening on {addr}");
    }
    // One store for the process; each loop builds its factory on its own
    // thread, with its own counters, and loop 0 sweeps expired items.
    let store = Arc::new(Mutex::new(Store::new()));
    let outcome = supervisor
        .run_per_loop(move |ctx: &LoopContext| {
            let counts = Counts {
                gets: ctx.counter("memcached_gets_total", "Keys asked for by get and gets."),
                hits: ctx.counter("memcached_get_hits_total", "Keys found by get and gets."),
                sets: ctx.counter("memcached_sets_total", "Values stored."),
            };
            if ctx.id() == 0 {
                let store = Arc::clone(&store);
                ctx.every(Duration::from_secs(1), move |now| {
                    store.lock().unwrap_or_else(|e| e.into_inner()).sweep(now)
                });
            }
            let store = Arc::clone(&store);
            move || Memcached {
                store: Arc::clone(&store),
                counts: counts.clone(),
                pending: None,
            }
        })
        .unwrap_or_else(|e| {
            eprintln!("memcached: {e}");
            std::process::exit(1)
        });
    println!("All done.");
    std::process::exit(outcome.exit_code().into());
}
