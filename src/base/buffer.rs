//! A byte queue for what a connection still owes (output the kernel did not
//! take) or still holds (input the protocol did not consume yet).
//!
//! Most of the time both queues are empty: the loop reads into one shared
//! scratch buffer, the protocol answers into another, and the reply is
//! written straight from there. Only the tail the kernel refused, or a
//! partial frame, is copied into a connection's [`Buffer`].
//!
//! # Invariants
//! * The queued bytes are `data[start..]`; `start <= data.len()`; and
//!   `start < data.len()` whenever the buffer exists: an empty queue is
//!   represented by no allocation at all.
//! * An empty buffer owns **no heap memory** (`capacity() == 0`): an idle
//!   connection costs only its slab entry. The first byte queued allocates,
//!   consuming the last byte frees.
//! * The buffer itself does not bound its size. Its owner does: the
//!   connection stops reading while its output is above the high watermark,
//!   so output never exceeds `high watermark + one protocol call's output`,
//!   and a read never takes input past one read's size (64 KiB).
//! * Its **capacity** stays within those bounds too, because that is what
//!   the process pays (RSS counts capacity once the allocator has recycled
//!   it, not `len()`). Capacity grows by doubling for amortized appends,
//!   but never past the queued length rounded up to [`GRANULE`] (16 KiB):
//!   a queue that has held at most 64 KiB holds at most 64 KiB of memory,
//!   and one that has held 108 KiB (an HTTP connection's output at the
//!   high watermark plus one call) at most 112 KiB — not the 176 KiB that
//!   plain doubling from 44 KiB gives.
//! * Behind the bytes, a queue of output may hold **shared chunks**
//!   (`Arc<[u8]>`: a stored value a protocol sends without copying, see
//!   `proto::Output::share`), and bytes queued after them. The front is
//!   always one contiguous slice ([`Buffer::as_slice`]); a chunk counts in
//!   [`Buffer::len`] (it is owed) but not in [`Buffer::capacity`] (the
//!   connection did not allocate it, and holds only a reference).

use std::collections::VecDeque;
use std::sync::Arc;

/// Capacity never grows past the queued length rounded up to this.
/// Beyond it, growth is in steps of at least this much, so appending
/// many small pieces (messages to a subscriber) stays amortized.
pub const GRANULE: usize = 16 * 1024;

/// A FIFO byte queue that frees its memory whenever it drains.
///
/// Empty, it is one null pointer (8 bytes), so the two queues of an idle
/// connection cost 16 bytes of its slab entry and no heap.
#[derive(Debug, Default)]
pub struct Buffer {
    inner: Option<Box<Inner>>,
}

#[derive(Debug)]
struct Inner {
    data: Vec<u8>,
    start: usize,
    /// What was queued behind a shared chunk, in order (empty for input,
    /// and for output that never shared): after `data[start..]`.
    tail: VecDeque<Piece>,
    /// Bytes in `tail`, not yet consumed.
    tail_len: usize,
}

/// A piece of the queue behind its first bytes.
#[derive(Debug)]
enum Piece {
    /// A chunk shared by reference, from `offset` on.
    Shared(Arc<[u8]>, usize),
    /// Bytes queued after a shared chunk, from `offset` on.
    Copied(Vec<u8>, usize),
}

impl Piece {
    fn rest(&self) -> &[u8] {
        match self {
            Piece::Shared(chunk, at) => &chunk[*at..],
            Piece::Copied(bytes, at) => &bytes[*at..],
        }
    }
}

impl Inner {
    fn new(capacity: usize) -> Box<Self> {
        Box::new(Inner {
            data: Vec::with_capacity(capacity),
            start: 0,
            tail: VecDeque::new(),
            tail_len: 0,
        })
    }
}

impl Buffer {
    /// An empty buffer (no allocation).
    pub const fn new() -> Self {
        Self { inner: None }
    }

    /// Number of queued bytes (shared chunks' included).
    pub fn len(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |b| b.data.len() - b.start + b.tail_len)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// The oldest queued bytes: all of them, unless a chunk is shared;
    /// then the bytes before it, or the front chunk's rest. Writing and
    /// consuming this slice until the buffer is empty writes everything.
    pub fn as_slice(&self) -> &[u8] {
        match self.inner.as_ref() {
            None => &[],
            Some(b) if b.start < b.data.len() => &b.data[b.start..],
            Some(b) => b.tail.front().map_or(&[], Piece::rest),
        }
    }

    /// Queue `chunk[from..]` behind what is there, by reference.
    pub fn share(&mut self, chunk: Arc<[u8]>, from: usize) {
        if from >= chunk.len() {
            return;
        }
        let inner = self.inner.get_or_insert_with(|| Inner::new(0));
        inner.tail_len += chunk.len() - from;
        inner.tail.push_back(Piece::Shared(chunk, from));
    }

    /// Heap bytes held (for memory accounting and tests): shared chunks
    /// are referenced, not held, and not counted.
    pub fn capacity(&self) -> usize {
        self.inner.as_ref().map_or(0, |b| {
            let copied: usize = b
                .tail
                .iter()
                .map(|p| match p {
                    Piece::Copied(v, _) => v.capacity(),
                    Piece::Shared(..) => 0,
                })
                .sum();
            b.data.capacity() + copied + std::mem::size_of::<Inner>()
        })
    }

    /// Queue `bytes` behind what is already there.
    pub fn extend(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let inner = self.inner.get_or_insert_with(|| Inner::new(bytes.len()));
        if !inner.tail.is_empty() {
            // Behind a shared chunk: these go after it, in a piece of their own.
            inner.tail_len += bytes.len();
            match inner.tail.back_mut() {
                Some(Piece::Copied(last, _)) => last.extend_from_slice(bytes),
                _ => inner.tail.push_back(Piece::Copied(bytes.to_vec(), 0)),
            }
            return;
        }
        if inner.start > 0 {
            // Slide the live bytes to the front so the Vec grows only when
            // the queue itself does.
            inner.data.drain(..inner.start);
            inner.start = 0;
        }
        let needed = inner.data.len() + bytes.len();
        let capacity = inner.data.capacity();
        if needed > capacity {
            // Double (amortized appends), but not past the granule above
            // what is needed (see the module docs).
            let grown = (2 * capacity).min(needed.next_multiple_of(GRANULE));
            inner
                .data
                .reserve_exact(grown.max(needed) - inner.data.len());
        }
        inner.data.extend_from_slice(bytes);
    }

    /// Drop `n` bytes from the front (they were written, or consumed): at
    /// most [`Buffer::as_slice`]'s length, the front piece.
    pub(crate) fn consume(&mut self, n: usize) {
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        if inner.start < inner.data.len() {
            inner.start = (inner.start + n).min(inner.data.len());
            if inner.start == inner.data.len() && !inner.tail.is_empty() {
                inner.data = Vec::new(); // the bytes before the chunk are out
                inner.start = 0;
            }
        } else if let Some(front) = inner.tail.front_mut() {
            let left = front.rest().len();
            let n = n.min(left);
            inner.tail_len -= n;
            match front {
                Piece::Shared(_, at) | Piece::Copied(_, at) => *at += n,
            }
            if n == left {
                inner.tail.pop_front(); // the reference is dropped here
            }
        }
        if inner.start >= inner.data.len() && inner.tail.is_empty() {
            self.inner = None; // drained: give the memory back
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_fifo() {
        let mut b = Buffer::new();
        b.extend(b"abc");
        b.extend(b"def");
        b.consume(2);
        assert_eq!(b.as_slice(), b"cdef");
        b.extend(b"g");
        assert_eq!(b.as_slice(), b"cdefg");
        assert_eq!(b.len(), 5);
    }

    #[test]
    fn an_empty_buffer_holds_no_memory() {
        let mut b = Buffer::new();
        assert_eq!(b.capacity(), 0);
        b.extend(&[7; 1000]);
        assert!(b.capacity() >= 1000);
        b.consume(400);
        b.consume(600);
        assert!(b.is_empty());
        assert_eq!(b.capacity(), 0);
    }

    /// Appends of 44 KiB (an HTTP call's output at its budget) up to
    /// 108 KiB: plain doubling would hold 176 KiB; the granule holds 112.
    /// Small appends still double (no reallocation per append).
    #[test]
    fn capacity_stays_within_the_granule_above_the_largest_length() {
        let mut b = Buffer::new();
        for _ in 0..2 {
            b.extend(&[1; 44 * 1024]);
        }
        b.extend(&[1; 20 * 1024]);
        assert_eq!(b.len(), 108 * 1024);
        let held = b.capacity() - std::mem::size_of::<Inner>();
        assert!(held <= 112 * 1024, "{held} B for 108 KiB");

        let mut b = Buffer::new();
        b.extend(&[1; 100]);
        let mut grown = 0;
        let mut last = b.capacity();
        for _ in 0..1000 {
            b.extend(&[2; 60]);
            grown += usize::from(b.capacity() != last);
            last = b.capacity();
        }
        assert!(grown <= 16, "{grown} reallocations for 1000 appends");
        assert!(b.capacity() - std::mem::size_of::<Inner>() <= 64 * 1024);
    }

    #[test]
    fn over_consuming_is_clamped() {
        let mut b = Buffer::new();
        b.extend(b"xy");
        b.consume(10);
        assert!(b.is_empty());
    }

    #[test]
    fn shared_chunks_go_out_in_order_by_reference_and_are_not_held() {
        let chunk: Arc<[u8]> = Arc::from(&b"SHARED"[..]);
        let mut b = Buffer::new();
        b.extend(b"ab");
        b.share(Arc::clone(&chunk), 2);
        b.extend(b"cd");
        b.extend(b"e");
        assert_eq!(b.len(), 2 + 4 + 3);
        assert_eq!(Arc::strong_count(&chunk), 2, "queued by reference");
        let mut out = Vec::new();
        while !b.is_empty() {
            let front = b.as_slice();
            let n = front.len().min(3);
            out.extend_from_slice(&front[..n]);
            b.consume(n);
        }
        assert_eq!(out, b"abAREDcde");
        assert_eq!(Arc::strong_count(&chunk), 1, "given back once written");
        assert_eq!(b.capacity(), 0);
    }
}
