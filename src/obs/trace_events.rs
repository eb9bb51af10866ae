//! `--trace-events FILE`: the loop's timeline as Chrome trace-event JSON,
//! for Perfetto (ui.perfetto.dev) or `chrome://tracing`.
//!
//! | event | phase | what |
//! |---|---|---|
//! | `loop N` | `M` (thread name) | one track per event loop |
//! | `poll` | `X` (complete) | a wait in `poll`, `args.events` = how many it returned |
//! | `dispatch` | `X` | handling those events, revisits, accepts and timers |
//! | `Open`, `Draining`, `Flushing`, `Lingering` | `b`/`e` (async, `id` = `"loop.generation"`) | a span per connection state; `args` name the slot and the peer, the last says why it closed |
//! | `drain begins`, `drained` | `i` (instant) | the loop's graceful drain |
//!
//! Each loop records into a thread-local buffer (nothing is written while
//! it serves) and appends it to the file when it ends; the file is a valid
//! JSON array once the process exits. Bounded: a loop stops recording after
//! [`MAX_BYTES_PER_LOOP`] bytes of events and marks where with a
//! `trace truncated` instant event. When the option is off, the cost is a
//! `bool` test per loop turn and a thread-local `bool` read per state change.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most bytes of events one loop records (16 MiB: about 150,000 events).
pub const MAX_BYTES_PER_LOOP: usize = 16 * 1024 * 1024;

/// The trace file, shared by every loop of the process.
#[derive(Clone)]
pub struct TraceEvents {
    file: Arc<Mutex<Option<File>>>,
    start: Instant,
}

impl TraceEvents {
    /// Create `path` and start the JSON array; times count from now.
    pub fn create(path: &str) -> io::Result<Self> {
        let mut file = File::create(path)?;
        file.write_all(b"[\n")?;
        Ok(Self {
            file: Arc::new(Mutex::new(Some(file))),
            start: Instant::now(),
        })
    }

    /// Close the JSON array. Call once every loop has ended.
    pub fn finish(self) -> io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut file) = guard.take() {
            writeln!(
                file,
                "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{},\"args\":{{\"name\":\"tcp-reactor\"}}}}\n]",
                std::process::id()
            )?;
            file.flush()?;
        }
        Ok(())
    }

    fn append(&self, bytes: &[u8]) {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = guard.as_mut() {
            if let Err(e) = file.write_all(bytes) {
                log::warn!("trace events: write failed: {e}");
            }
        }
    }
}

struct LoopTrace {
    sink: TraceEvents,
    pid: u32,
    tid: usize,
    buf: Vec<u8>,
    truncated: bool,
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static TRACE: RefCell<Option<LoopTrace>> = const { RefCell::new(None) };
}

/// Whether this thread records trace events.
pub fn on() -> bool {
    ON.with(Cell::get)
}

/// Start recording this thread's events as loop `tid`'s track.
pub fn start_loop(sink: &TraceEvents, tid: usize) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let _ = writeln!(
        buf,
        "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":{},\"tid\":{tid},\"args\":{{\"name\":\"loop {tid}\"}}}},",
        std::process::id()
    );
    TRACE.with(|t| {
        *t.borrow_mut() = Some(LoopTrace {
            sink: sink.clone(),
            pid: std::process::id(),
            tid,
            buf,
            truncated: false,
        })
    });
    ON.with(|on| on.set(true));
}

/// Stop recording and append this thread's events to the file.
pub fn end_loop() {
    ON.with(|on| on.set(false));
    if let Some(trace) = TRACE.with(|t| t.borrow_mut().take()) {
        trace.sink.append(&trace.buf);
    }
}

/// Write one event: `{"name":…,"ph":…,"ts":…,"pid":…,"tid":…` + `rest(buf, tid)` + `},`.
fn record(name: &str, ph: &str, at: Instant, rest: impl FnOnce(&mut Vec<u8>, usize)) {
    TRACE.with(|t| {
        let mut t = t.borrow_mut();
        let Some(trace) = t.as_mut() else {
            return;
        };
        if trace.truncated {
            return;
        }
        let ts = Micros(at.saturating_duration_since(trace.sink.start));
        let (pid, tid) = (trace.pid, trace.tid);
        if trace.buf.len() >= MAX_BYTES_PER_LOOP {
            trace.truncated = true;
            let _ = writeln!(
                trace.buf,
                "{{\"name\":\"trace truncated\",\"ph\":\"i\",\"s\":\"t\",\"ts\":{ts},\"pid\":{pid},\"tid\":{tid}}},"
            );
            return;
        }
        let _ = write!(
            trace.buf,
            "{{\"name\":\"{name}\",\"ph\":\"{ph}\",\"ts\":{ts},\"pid\":{pid},\"tid\":{tid}"
        );
        rest(&mut trace.buf, tid);
        trace.buf.extend_from_slice(b"},\n");
    });
}

/// A duration in microseconds with nanosecond decimals, written in place.
struct Micros(std::time::Duration);

impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{:03}",
            self.0.as_micros(),
            self.0.subsec_nanos() % 1000
        )
    }
}

/// A wait in `poll` from `from` to `to` that returned `events` events.
#[inline(never)]
pub fn poll(from: Instant, to: Instant, events: usize) {
    let dur = Micros(to.saturating_duration_since(from));
    record("poll", "X", from, |b, _| {
        let _ = write!(b, ",\"dur\":{dur},\"args\":{{\"events\":{events}}}");
    });
}

/// Handling a poll's events, from `from` to now.
#[inline(never)]
pub fn dispatch(from: Instant, events: usize) {
    let dur = Micros(Instant::now().saturating_duration_since(from));
    record("dispatch", "X", from, |b, _| {
        let _ = write!(b, ",\"dur\":{dur},\"args\":{{\"events\":{events}}}");
    });
}

/// A loop-wide moment (`drain begins`, `drained`).
pub fn instant(name: &str, at: Instant) {
    record(name, "i", at, |b, _| b.extend_from_slice(b",\"s\":\"t\""));
}

/// Connection `generation` (in slot `key`, from `peer`) entered `state`.
pub fn conn_begin(generation: u64, key: usize, peer: SocketAddr, state: &str, at: Instant) {
    record(state, "b", at, |b, tid| {
        let _ = write!(
            b,
            ",\"cat\":\"conn\",\"id\":\"{tid}.{generation}\",\"args\":{{\"conn\":{key},\"peer\":\"{peer}\"}}"
        );
    });
}

/// Connection `generation` left `state` (`why`: the close reason, if it closed).
pub fn conn_end(generation: u64, state: &str, at: Instant, why: Option<&dyn std::fmt::Display>) {
    record(state, "e", at, |b, tid| {
        let _ = write!(b, ",\"cat\":\"conn\",\"id\":\"{tid}.{generation}\"");
        if let Some(why) = why {
            let _ = write!(b, ",\"args\":{{\"closed\":\"{why}\"}}");
        }
    });
}

/// Connection `generation` went from state `from` to `to` now.
pub fn conn_state(generation: u64, key: usize, peer: SocketAddr, from: &str, to: &str) {
    let now = Instant::now();
    conn_end(generation, from, now, None);
    conn_begin(generation, key, peer, to, now);
}
