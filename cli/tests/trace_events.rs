//! `--trace-events FILE`: a Chrome trace-event JSON timeline of the loops
//! (Perfetto, chrome://tracing): a track per loop, poll waits, dispatch,
//! a span per connection state, the drain.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use serde_json::Value;
use util::{echo_and_close, ServerProcess};

#[test]
fn a_drain_with_several_connections_is_a_valid_timeline_of_every_kind_of_event() {
    let path = std::env::temp_dir().join(format!("tcp-reactor-trace-{}.json", std::process::id()));
    let mut server =
        ServerProcess::start(&["--threads", "2", "--trace-events", path.to_str().unwrap()]);
    for i in 0..3 {
        echo_and_close(server.addr, format!("closed first {i}\n").as_bytes());
    }
    let mut spoke = util::connect(server.addr);
    util::echo_once(&mut spoke, b"still open\n");
    let silent = util::connect(server.addr);
    server.signal(libc::SIGTERM);
    // The drain sends our FIN to the one that spoke; the silent one gets
    // its grace, then the same.
    let mut rest = Vec::new();
    spoke.read_to_end(&mut rest).expect("our FIN");
    spoke.shutdown(Shutdown::Write).expect("its FIN");
    let mut silent = silent;
    let mut nothing = Vec::new();
    silent
        .read_to_end(&mut nothing)
        .expect("our FIN after the grace");
    let _ = silent.write_all(b"");
    drop(silent);
    let status = server.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.log());

    let text = std::fs::read_to_string(&path).expect("the trace file");
    let _ = std::fs::remove_file(&path);
    let events: Vec<Value> = match serde_json::from_str(&text) {
        Ok(Value::Array(events)) => events,
        other => panic!("not a JSON array: {other:?}\n{text}"),
    };
    let field = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();

    // A named track per loop.
    let tracks: BTreeSet<String> = events
        .iter()
        .filter(|e| field(e, "ph") == "M" && field(e, "name") == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        tracks,
        BTreeSet::from(["loop 0".to_owned(), "loop 1".to_owned()])
    );
    // Poll waits and dispatch are complete events with a duration.
    for name in ["poll", "dispatch"] {
        let spans: Vec<&Value> = events
            .iter()
            .filter(|e| field(e, "ph") == "X" && field(e, "name") == name)
            .collect();
        assert!(!spans.is_empty(), "no {name} spans");
        assert!(spans
            .iter()
            .all(|e| e["dur"].is_number() && e["ts"].is_number()));
    }
    // The drain, on each loop.
    for name in ["drain begins", "drained"] {
        let n = events
            .iter()
            .filter(|e| field(e, "ph") == "i" && field(e, "name") == name)
            .count();
        assert_eq!(n, 2, "{name} on each loop");
    }
    // Per connection: states begin and end in turn, the last says why it closed.
    let mut conns: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for e in events.iter().filter(|e| field(e, "cat") == "conn") {
        let id = field(e, "id");
        conns
            .entry(id)
            .or_default()
            .push((field(e, "ph"), field(e, "name")));
    }
    assert_eq!(conns.len(), 5, "{conns:?}");
    let mut states = BTreeSet::new();
    for (id, spans) in &conns {
        assert_eq!(spans[0], ("b".to_owned(), "Open".to_owned()), "conn {id}");
        for pair in spans.chunks(2) {
            assert_eq!(pair.len(), 2, "conn {id}: unended span: {spans:?}");
            assert_eq!(pair[0].0, "b");
            assert_eq!(pair[1].0, "e");
            assert_eq!(pair[0].1, pair[1].1, "conn {id}: {spans:?}");
            states.insert(pair[0].1.clone());
        }
    }
    for state in ["Open", "Draining", "Flushing", "Lingering"] {
        assert!(states.contains(state), "no {state} span: {states:?}");
    }
    let closes = events
        .iter()
        .filter(|e| field(e, "ph") == "e" && e["args"]["closed"].is_string())
        .count();
    assert_eq!(closes, 5);
}
