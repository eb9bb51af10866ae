//! The library API: embed a server, supply a cleanup hook, stop it from
//! another thread. The hook is the Go handler's deferred cleanup: it must
//! run exactly once per connection, whichever way the connection ends.

mod util;

use util::echo_once;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tcp_reactor::base::close::{CloseReason, ForceCause};
use tcp_reactor::proto::Echo;
use tcp_reactor::{Config, ConnInfo, Outcome, Server};

fn config() -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        handle_signals: false,
        ..Config::default()
    };
    config.limits.idle_timeout = Some(Duration::from_millis(300));
    config
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_cleanup_hook_runs_exactly_once_per_connection_whatever_ends_it() {
    let closed: Arc<Mutex<Vec<ConnInfo>>> = Arc::default();
    let sink = Arc::clone(&closed);
    let server = Server::bind(config(), || Echo)
        .unwrap()
        .on_close(move |info| sink.lock().unwrap().push(info.clone()));
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let running = thread::spawn(move || server.run().unwrap());
    let count = |reason: CloseReason| {
        closed
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i.reason == reason)
            .count()
    };

    // 1. The peer half-closes: everything echoed, then closed.
    let mut polite = TcpStream::connect(addr).unwrap();
    echo_once(&mut polite, b"hello");
    polite.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    polite.read_to_end(&mut rest).unwrap();
    wait_until("peer-closed cleanup", || {
        count(CloseReason::PeerClosed) == 1
    });

    // 2. The peer resets after its reply arrived, as `wrk` and `ab` do:
    //    nothing was lost, so it is not counted as a reset.
    let abrupt = TcpStream::connect(addr).unwrap();
    echo_once(&mut abrupt.try_clone().unwrap(), b"bye");
    socket2::SockRef::from(&abrupt)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(abrupt);
    wait_until("aborted cleanup", || count(CloseReason::PeerAborted) == 1);

    // 2b. The peer resets while output is owed to it (it never read its
    //     echoes): that reply is lost, and it is a reset.
    let rude = TcpStream::connect(addr).unwrap();
    // A small receive buffer, so the echoes cannot all fit in it: with
    // loopback's autotuned buffers 4 MiB could, nothing would be owed and
    // the reset would rightly count as aborted.
    socket2::SockRef::from(&rude)
        .set_recv_buffer_size(4096)
        .unwrap();
    rude.set_nonblocking(true).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..64 {
        if (&rude).write(&chunk).is_err() {
            break;
        }
    }
    socket2::SockRef::from(&rude)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(rude);
    wait_until("reset cleanup", || count(CloseReason::Reset) == 1);

    // 3. The peer goes quiet: the idle timeout closes it.
    let mut sleepy = TcpStream::connect(addr).unwrap();
    echo_once(&mut sleepy, b"zzz");
    wait_until("idle cleanup", || count(CloseReason::IdleTimeout) == 1);

    // 4. Two connections are open when shutdown starts: both drained.
    let mut open: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for s in &mut open {
        echo_once(s, b"still here");
    }
    handle.shutdown();
    for mut s in open {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap(); // our FIN arrives: EOF, no reset
        assert!(rest.is_empty());
    } // dropping sends the peers' FINs, ending the lingering closes

    let outcome = running.join().unwrap();
    assert_eq!(outcome, Outcome::Clean);
    let closed = closed.lock().unwrap();
    let mut per_generation: HashMap<u64, usize> = HashMap::new();
    for info in closed.iter() {
        *per_generation.entry(info.id.generation).or_default() += 1;
    }
    assert_eq!(closed.len(), 6, "{closed:#?}");
    assert!(
        per_generation.values().all(|&n| n == 1),
        "{per_generation:?}"
    );
    assert_eq!(
        closed
            .iter()
            .filter(|i| i.reason == CloseReason::Drained)
            .count(),
        2
    );
    let polite_info = closed
        .iter()
        .find(|i| i.reason == CloseReason::PeerClosed)
        .unwrap();
    assert_eq!((polite_info.bytes_in, polite_info.bytes_out), (5, 5));
}

#[test]
fn forcing_the_drain_still_runs_each_cleanup_once() {
    let closed: Arc<Mutex<Vec<ConnInfo>>> = Arc::default();
    let sink = Arc::clone(&closed);
    let mut config = config();
    config.limits.idle_timeout = None;
    let server = Server::bind(config, || Echo)
        .unwrap()
        .on_close(move |info| sink.lock().unwrap().push(info.clone()));
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let running = thread::spawn(move || server.run().unwrap());

    // Three clients that never read and never close.
    let stuck: Vec<TcpStream> = (0..3)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_nonblocking(true).unwrap();
            let chunk = vec![1u8; 64 * 1024];
            for _ in 0..400 {
                if (&s).write(&chunk).is_err() {
                    break;
                }
            }
            s
        })
        .collect();

    handle.shutdown();
    thread::sleep(Duration::from_millis(200));
    handle.force();
    let outcome = running.join().unwrap();
    assert_eq!(
        outcome,
        Outcome::Forced {
            cause: ForceCause::SecondSignal,
            remaining: 3
        }
    );
    let closed = closed.lock().unwrap();
    assert_eq!(closed.len(), 3);
    assert!(closed
        .iter()
        .all(|i| i.reason == CloseReason::Forced(ForceCause::SecondSignal)));
    drop(stuck);
}

/// Every connection holds one `--max-conns` slot, and gives it back
/// however it ends — also when it never starts: here a loop on bare
/// sockets is given a TLS config, so building each connection's stream
/// fails right after `accept`. The limit is one count for the process (two
/// loops share it): after more failed connections than slots, a client of
/// the other loop is still served.
#[cfg(feature = "tls")]
#[test]
fn a_connection_whose_stream_cannot_be_built_gives_its_slot_back() {
    use tcp_reactor::io::tls::TlsConfig;
    use tcp_reactor::reactor::admission::ConnLimit;

    const SLOTS: usize = 2;
    let limit = Arc::new(ConnLimit::new(SLOTS));
    let certs = util::tls::Certs::new();
    let mut staged = config();
    staged.stages.tls = Some(TlsConfig::load(&certs.cert, &certs.key, &[], None).unwrap());
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let broken = Server::<Echo, mio::net::TcpStream>::on_sockets(staged, vec![socket], || Echo)
        .unwrap()
        .shared_limit(Arc::clone(&limit));
    let good = Server::bind(config(), || Echo)
        .unwrap()
        .shared_limit(Arc::clone(&limit));
    let (broken_addr, good_addr) = (broken.local_addr(), good.local_addr());
    let handles = [broken.shutdown_handle(), good.shutdown_handle()];
    let running = [
        thread::spawn(move || broken.run().unwrap()),
        thread::spawn(move || good.run().unwrap()),
    ];

    for i in 0..3 * SLOTS {
        let mut refused = util::connect(broken_addr);
        let mut byte = [0u8; 1];
        // Closed at once (EOF, or a reset); a timeout means it waits in the
        // backlog behind slots that were never given back.
        match refused.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!(
                "failed connection {i}: {other:?} (slots in use: {})",
                limit.open()
            ),
        }
    }
    wait_until("every slot given back", || limit.open() == 0);
    let mut served = util::connect(good_addr);
    echo_once(&mut served, b"a slot was free");
    drop(served);

    handles.iter().for_each(|h| h.shutdown());
    for run in running {
        assert_eq!(run.join().unwrap(), Outcome::Clean);
    }
}

/// Several loops from code, without signals or re-exec: a supervisor runs
/// two, a handle reads their summed counters (a library user's own
/// counter among them) and shuts them down, and `run` returns `Clean`.
/// Each loop builds its protocol factory on its own thread, so per-loop
/// state is an `Rc`, and a loop timer ticks it.
#[test]
fn a_supervisor_runs_two_loops_from_code_and_a_handle_reads_and_stops_them() {
    use std::cell::Cell;
    use std::rc::Rc;
    use tcp_reactor::process::supervisor::Supervisor;
    use tcp_reactor::reactor::loop_context::LoopContext;

    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let supervisor = Supervisor::bind(config(), 2).unwrap().metrics(metrics);
    let addr = supervisor.local_addr().unwrap();
    let handle = supervisor.handle();
    let running = thread::spawn(move || {
        supervisor.run_per_loop(|ctx: &LoopContext| {
            let served = ctx.counter("app_echoes_total", "Connections the app echoed for.");
            let ticks = Rc::new(Cell::new(0u64)); // this loop's own: no lock
            let ticked = ctx.counter("app_ticks_total", "Loop timer ticks.");
            let t = Rc::clone(&ticks);
            ctx.every(Duration::from_millis(10), move |_| {
                t.set(t.get() + 1);
                ticked.inc();
            });
            move || {
                served.inc();
                Echo
            }
        })
    });
    for _ in 0..5 {
        let mut s = util::connect(addr);
        echo_once(&mut s, b"hi");
    }
    let mut stats = None;
    wait_until("both loops' counters, ticks included", || {
        stats = handle.stats();
        stats.as_ref().is_some_and(|s| {
            s.user
                .iter()
                .any(|u| u.name == "app_ticks_total" && u.value >= 2)
                && s.accepted >= 5
        })
    });
    let stats = stats.unwrap();
    let served = stats.user.iter().find(|u| u.name == "app_echoes_total");
    assert_eq!(served.map(|u| u.value), Some(5), "{stats:?}");
    // The user's counter reaches a scrape, with its help and type.
    let mut scrape = TcpStream::connect(metrics_addr).unwrap();
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    scrape.read_to_string(&mut text).unwrap();
    assert!(
        text.contains("# HELP app_echoes_total Connections the app echoed for.\n# TYPE app_echoes_total counter\napp_echoes_total 5\n"),
        "{text}"
    );
    handle.shutdown();
    assert_eq!(running.join().unwrap().unwrap(), Outcome::Clean);
    assert!(handle.stats().is_none(), "the supervisor is gone");
}

/// A protocol that greets on open, answers `big` with 1 MiB shared by
/// reference, `copy` with 1 MiB copied into one call's output (over the
/// budget: served, never a panic, even in a debug build), and records
/// when the conversation ended.
struct Greeter {
    value: Arc<[u8]>,
    ended: Arc<Mutex<Vec<CloseReason>>>,
}

impl tcp_reactor::Protocol for Greeter {
    const NAME: &'static str = "greeter";

    fn on_open(&mut self, out: &mut tcp_reactor::proto::Output) {
        out.extend_from_slice(b"220 hello\n");
    }

    fn on_input(
        &mut self,
        _now: Instant,
        input: &[u8],
        out: &mut tcp_reactor::proto::Output,
    ) -> tcp_reactor::proto::Step {
        use tcp_reactor::proto::{Decision, Step};
        let mut consumed = 0;
        while let Some(nl) = input[consumed..].iter().position(|&b| b == b'\n') {
            match &input[consumed..consumed + nl] {
                b"big" => {
                    out.extend_from_slice(b"VALUE\n");
                    out.share(Arc::clone(&self.value));
                    out.extend_from_slice(b"\nEND\n");
                }
                b"copy" => out.extend_from_slice(&self.value),
                _ => out.extend_from_slice(b"?\n"),
            }
            consumed += nl + 1;
        }
        Step {
            consumed,
            decision: Decision::Continue,
        }
    }

    fn on_end(&mut self, reason: &CloseReason) {
        self.ended.lock().unwrap().push(*reason);
    }
}

#[test]
fn a_protocol_greets_answers_a_mebibyte_shared_or_copied_and_hears_the_end_at_once() {
    let value: Arc<[u8]> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let ended: Arc<Mutex<Vec<CloseReason>>> = Arc::default();
    let make = {
        let (value, ended) = (Arc::clone(&value), Arc::clone(&ended));
        move || Greeter {
            value: Arc::clone(&value),
            ended: Arc::clone(&ended),
        }
    };
    let server = Server::bind(config(), make).unwrap();
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let running = thread::spawn(move || server.run().unwrap());

    let mut client = TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 10];
    client.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"220 hello\n", "spoken first, before any input");

    client.write_all(b"big\ncopy\nbig\n").unwrap();
    let mut expected = Vec::new();
    for reply in ["big", "copy", "big"] {
        if reply == "big" {
            expected.extend_from_slice(b"VALUE\n");
            expected.extend_from_slice(&value);
            expected.extend_from_slice(b"\nEND\n");
        } else {
            expected.extend_from_slice(&value);
        }
    }
    let mut got = vec![0u8; expected.len()];
    client.read_exact(&mut got).unwrap();
    assert!(got == expected, "3 MiB back, byte for byte");
    // Ours, the factory's and the connection's protocol's: the server
    // holds no copy and no reference once the bytes are sent.
    assert_eq!(Arc::strong_count(&value), 3);

    // The peer half-closes: the protocol hears the end now, even though the
    // connection then waits for nothing more (it closes once it is done).
    client.shutdown(Shutdown::Write).unwrap();
    wait_until("on_end", || !ended.lock().unwrap().is_empty());
    assert_eq!(ended.lock().unwrap()[0], CloseReason::PeerClosed);
    handle.shutdown();
    assert_eq!(running.join().unwrap(), Outcome::Clean);
    assert_eq!(ended.lock().unwrap().len(), 1, "told once");
}
