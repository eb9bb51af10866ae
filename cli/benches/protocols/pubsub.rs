//! Pub/sub fan-out: one publisher, N subscribers of one channel, against any server that
//! speaks redis' RESP2 pub/sub (redis-server, tcp-reactor `--protocol resp`).
//!
//! Owns: the subscriber and publisher clients and what one run measures. Not the servers,
//! the CPU readings or the table (main.rs).
//!
//! Each subscriber thread reads `message` frames, checks every frame's bytes and takes the
//! publish time out of the payload's first 8 bytes, so each delivery yields one latency
//! sample (publish → delivery, same clock: one process). The publisher pipelines `PUBLISH`
//! commands and checks that every reply counts all N subscribers. Flow control is end to
//! end: the publisher keeps at most `window` messages ahead of the *slowest subscriber*,
//! and the window is sized so that at most 32 KiB is ever queued for one subscriber — under
//! tcp-reactor's write high watermark, and far under redis' `client-output-buffer-limit
//! pubsub` — so neither server's slow-consumer policy is exercised: this measures
//! delivery, not disconnection. The run ends with one frame whose timestamp is `u64::MAX`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const CHANNEL: &[u8] = b"news";
const STOP: u64 = u64::MAX;

/// What one fan-out run measured (client side).
#[derive(Clone, Debug, Default)]
pub struct Fanout {
    /// Messages delivered to subscribers in the window (published × subscribers).
    pub delivered: u64,
    /// Length of the window.
    pub elapsed: Duration,
    /// Publish-to-delivery latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Bad frames, wrong receiver counts, early EOFs, timeouts.
    pub errors: u64,
}

/// The exact bytes of one `message` frame carrying `payload_len` bytes.
fn frame_prefix(payload_len: usize) -> Vec<u8> {
    let mut p = b"*3\r\n$7\r\nmessage\r\n$".to_vec();
    p.extend_from_slice(format!("{}\r\n", CHANNEL.len()).as_bytes());
    p.extend_from_slice(CHANNEL);
    p.extend_from_slice(format!("\r\n${payload_len}\r\n").as_bytes());
    p
}

fn publish_command(payload: &[u8]) -> Vec<u8> {
    let mut c = b"*3\r\n$7\r\nPUBLISH\r\n$".to_vec();
    c.extend_from_slice(format!("{}\r\n", CHANNEL.len()).as_bytes());
    c.extend_from_slice(CHANNEL);
    c.extend_from_slice(format!("\r\n${}\r\n", payload.len()).as_bytes());
    c.extend_from_slice(payload);
    c.extend_from_slice(b"\r\n");
    c
}

/// Run `subscribers` subscribers and one publisher of `size`-byte messages for `secs`.
pub fn fanout(
    addr: SocketAddr,
    subscribers: usize,
    size: usize,
    secs: f64,
) -> Result<Fanout, String> {
    let size = size.max(8);
    let frame_len = frame_prefix(size).len() + size + 2;
    let window = (32 * 1024 / frame_len).max(4) as u64;
    let start = Instant::now();
    let received: Arc<Vec<AtomicU64>> =
        Arc::new((0..subscribers).map(|_| AtomicU64::new(0)).collect());
    let ready = Arc::new(Barrier::new(subscribers + 1));

    let mut threads = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let (received, ready) = (Arc::clone(&received), Arc::clone(&ready));
        threads.push(thread::spawn(move || {
            subscriber(addr, i, size, start, &received, &ready)
        }));
    }
    ready.wait();

    let publisher = publish(addr, subscribers, size, window, secs, start, &received);
    let mut samples: Vec<u32> = Vec::new();
    let mut errors = 0;
    for t in threads {
        match t.join() {
            Ok(Ok(mut s)) => samples.append(&mut s),
            Ok(Err(e)) => {
                eprintln!("pubsub subscriber: {e}");
                errors += 1;
            }
            Err(_) => errors += 1,
        }
    }
    let (published, elapsed, pub_errors) = publisher?;
    samples.sort_unstable();
    let pct = |p: f64| -> f64 {
        if samples.is_empty() {
            return f64::NAN;
        }
        let i = ((samples.len() as f64 * p) as usize).min(samples.len() - 1);
        samples[i] as f64 / 1000.0
    };
    Ok(Fanout {
        delivered: published * subscribers as u64,
        elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors: errors + pub_errors,
    })
}

/// One subscriber: subscribe, then count and time frames until the stop frame.
/// Returns its latency samples in nanoseconds (capped at u32::MAX ≈ 4.3 s).
fn subscriber(
    addr: SocketAddr,
    i: usize,
    size: usize,
    start: Instant,
    received: &[AtomicU64],
    ready: &Barrier,
) -> Result<Vec<u32>, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    s.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n")
        .map_err(|e| e.to_string())?;
    let confirm = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n";
    let mut got = vec![0u8; confirm.len()];
    let confirmed = s
        .read_exact(&mut got)
        .map_err(|e| format!("subscribe reply: {e}"));
    ready.wait(); // never leave the publisher waiting, even on error
    confirmed?;
    if got != confirm {
        return Err(format!(
            "subscribe reply {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    let prefix = frame_prefix(size);
    let frame_len = prefix.len() + size + 2;
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let mut samples = Vec::new();
    let mut count = 0u64;
    loop {
        let n = s
            .read(&mut buf[filled..])
            .map_err(|e| format!("subscriber {i}: {e}"))?;
        if n == 0 {
            return Err(format!("subscriber {i}: EOF after {count} messages"));
        }
        filled += n;
        let mut at = 0;
        let now = start.elapsed().as_nanos() as u64;
        while filled - at >= frame_len {
            let frame = &buf[at..at + frame_len];
            if &frame[..prefix.len()] != prefix.as_slice() || &frame[frame_len - 2..] != b"\r\n" {
                return Err(format!("subscriber {i}: bad frame after {count} messages"));
            }
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&frame[prefix.len()..prefix.len() + 8]);
            let sent = u64::from_le_bytes(stamp);
            if sent == STOP {
                received[i].store(count, Ordering::Release);
                return Ok(samples);
            }
            samples.push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
            count += 1;
            at += frame_len;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        received[i].store(count, Ordering::Release);
    }
}

/// The publisher: keeps at most `window` messages ahead of the slowest subscriber until
/// `secs` have passed, then publishes the stop frame. Returns (published, window, errors).
fn publish(
    addr: SocketAddr,
    subscribers: usize,
    size: usize,
    window: u64,
    secs: f64,
    start: Instant,
    received: &[AtomicU64],
) -> Result<(u64, Duration, u64), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("publisher connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let reply = format!(":{subscribers}\r\n").into_bytes();
    let mut payload = vec![b'x'; size];
    let mut batch = Vec::new();
    let mut replies = vec![0u8; 64 * 1024];
    let (mut published, mut answered, mut errors) = (0u64, 0u64, 0u64);
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(secs);
    let mut pending = 0usize; // reply bytes not yet matched
    loop {
        let done = Instant::now() >= deadline;
        let slowest = received
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        let room = (slowest + window).saturating_sub(published);
        batch.clear();
        if done {
            payload[..8].copy_from_slice(&STOP.to_le_bytes());
            batch.extend_from_slice(&publish_command(&payload));
        } else {
            for _ in 0..room.min(64) {
                let now = start.elapsed().as_nanos() as u64;
                payload[..8].copy_from_slice(&now.to_le_bytes());
                batch.extend_from_slice(&publish_command(&payload));
                published += 1;
            }
        }
        if !batch.is_empty() {
            s.write_all(&batch).map_err(|e| format!("publish: {e}"))?;
        }
        let owed = published + u64::from(done) - answered;
        if owed > 0 && (room == 0 || done || owed >= window) {
            let n = s
                .read(&mut replies[pending..])
                .map_err(|e| format!("publish reply: {e}"))?;
            if n == 0 {
                return Err("publisher: EOF".into());
            }
            pending += n;
            let whole = pending / reply.len();
            for k in 0..whole {
                if replies[k * reply.len()..(k + 1) * reply.len()] != reply[..] {
                    errors += 1;
                }
            }
            answered += whole as u64;
            replies.copy_within(whole * reply.len()..pending, 0);
            pending -= whole * reply.len();
        } else if room == 0 {
            thread::yield_now();
        }
        if done {
            // Read the rest of the replies (the stop frame's included), then finish.
            while answered < published + 1 {
                let n = s
                    .read(&mut replies[pending..])
                    .map_err(|e| format!("publish reply: {e}"))?;
                if n == 0 {
                    return Err("publisher: EOF".into());
                }
                pending += n;
                let whole = pending / reply.len();
                answered += whole as u64;
                replies.copy_within(whole * reply.len()..pending, 0);
                pending -= whole * reply.len();
            }
            return Ok((published, began.elapsed(), errors));
        }
    }
}
