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
}

impl Buffer {
    /// An empty buffer (no allocation).
    pub const fn new() -> Self {
        Self { inner: None }
    }

    /// Number of queued bytes.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |b| b.data.len() - b.start)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// The queued bytes, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        self.inner.as_ref().map_or(&[], |b| &b.data[b.start..])
    }

    /// Heap bytes held (for memory accounting and tests).
    pub fn capacity(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |b| b.data.capacity() + std::mem::size_of::<Inner>())
    }

    /// Queue `bytes` behind what is already there.
    pub fn extend(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let inner = self.inner.get_or_insert_with(|| {
            Box::new(Inner {
                data: Vec::with_capacity(bytes.len()),
                start: 0,
            })
        });
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

    /// Drop `n` bytes from the front (they were written, or consumed).
    ///
    /// `n` larger than [`Buffer::len`] is clamped.
    pub fn consume(&mut self, n: usize) {
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        inner.start = (inner.start + n).min(inner.data.len());
        debug_assert!(inner.start <= inner.data.len());
        if inner.start == inner.data.len() {
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
}
