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
//! Each loop records into its own [`LoopTrace`], which the loop owns and
//! lends to a connection for the call that changes its state (nothing is
//! written while it serves); the loop appends it to the file when it ends,
//! and the file is a valid JSON array once the process exits. Bounded: a
//! loop stops recording after `MAX_BYTES_PER_LOOP` bytes of events and
//! marks where with a `trace truncated` instant event. When the option is
//! off, the cost is one `Option` test per loop turn and per state change.

use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most bytes of events one loop records (16 MiB: about 150,000 events).
pub(crate) const MAX_BYTES_PER_LOOP: usize = 16 * 1024 * 1024;

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

/// One loop's recording: its track in the file, and the events it has
/// recorded so far.
pub struct LoopTrace {
    sink: TraceEvents,
    pid: u32,
    tid: usize,
    buf: Vec<u8>,
    truncated: bool,
}

impl std::fmt::Debug for LoopTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoopTrace(loop {}, {} B)", self.tid, self.buf.len())
    }
}

impl LoopTrace {
    /// Start recording loop `tid`'s track into `sink`.
    pub fn start(sink: &TraceEvents, tid: usize) -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        let _ = writeln!(
            buf,
            "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":{},\"tid\":{tid},\"args\":{{\"name\":\"loop {tid}\"}}}},",
            std::process::id()
        );
        Self {
            sink: sink.clone(),
            pid: std::process::id(),
            tid,
            buf,
            truncated: false,
        }
    }

    /// Stop recording and append the events to the file.
    pub fn end(self) {
        self.sink.append(&self.buf);
    }

    /// Write one event: `{"name":…,"ph":…,"ts":…,"pid":…,"tid":…` + `rest(buf, tid)` + `},`.
    fn record(
        &mut self,
        name: &str,
        ph: &str,
        at: Instant,
        rest: impl FnOnce(&mut Vec<u8>, usize),
    ) {
        if self.truncated {
            return;
        }
        let ts = Micros(at.saturating_duration_since(self.sink.start));
        let (pid, tid) = (self.pid, self.tid);
        if self.buf.len() >= MAX_BYTES_PER_LOOP {
            self.truncated = true;
            let _ = writeln!(
                self.buf,
                "{{\"name\":\"trace truncated\",\"ph\":\"i\",\"s\":\"t\",\"ts\":{ts},\"pid\":{pid},\"tid\":{tid}}},"
            );
            return;
        }
        let _ = write!(
            self.buf,
            "{{\"name\":\"{name}\",\"ph\":\"{ph}\",\"ts\":{ts},\"pid\":{pid},\"tid\":{tid}"
        );
        rest(&mut self.buf, tid);
        self.buf.extend_from_slice(b"},\n");
    }

    /// A wait in `poll` from `from` to `to` that returned `events` events.
    #[inline(never)]
    pub fn poll(&mut self, from: Instant, to: Instant, events: usize) {
        let dur = Micros(to.saturating_duration_since(from));
        self.record("poll", "X", from, |b, _| {
            let _ = write!(b, ",\"dur\":{dur},\"args\":{{\"events\":{events}}}");
        });
    }

    /// Handling a poll's events, from `from` to now.
    #[inline(never)]
    pub fn dispatch(&mut self, from: Instant, events: usize) {
        let dur = Micros(Instant::now().saturating_duration_since(from));
        self.record("dispatch", "X", from, |b, _| {
            let _ = write!(b, ",\"dur\":{dur},\"args\":{{\"events\":{events}}}");
        });
    }

    /// A loop-wide moment (`drain begins`, `drained`).
    pub fn instant(&mut self, name: &str, at: Instant) {
        self.record(name, "i", at, |b, _| b.extend_from_slice(b",\"s\":\"t\""));
    }

    /// Connection `generation` (in slot `key`, from `peer`) entered `state`.
    pub(crate) fn conn_begin(
        &mut self,
        generation: u64,
        key: usize,
        peer: SocketAddr,
        state: &str,
        at: Instant,
    ) {
        self.record(state, "b", at, |b, tid| {
            let _ = write!(
                b,
                ",\"cat\":\"conn\",\"id\":\"{tid}.{generation}\",\"args\":{{\"conn\":{key},\"peer\":\"{peer}\"}}"
            );
        });
    }

    /// Connection `generation` left `state` (`why`: the close reason, if it closed).
    pub(crate) fn conn_end(
        &mut self,
        generation: u64,
        state: &str,
        at: Instant,
        why: Option<&dyn std::fmt::Display>,
    ) {
        self.record(state, "e", at, |b, tid| {
            let _ = write!(b, ",\"cat\":\"conn\",\"id\":\"{tid}.{generation}\"");
            if let Some(why) = why {
                let _ = write!(b, ",\"args\":{{\"closed\":\"{why}\"}}");
            }
        });
    }

    /// Connection `generation` went from state `from` to `to` now.
    pub(crate) fn conn_state(
        &mut self,
        generation: u64,
        key: usize,
        peer: SocketAddr,
        from: &str,
        to: &str,
    ) {
        let now = Instant::now();
        self.conn_end(generation, from, now, None);
        self.conn_begin(generation, key, peer, to, now);
    }
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
