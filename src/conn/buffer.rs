//! A byte queue for what a connection still owes (output the kernel did not
//! take) or still holds (input the protocol did not consume yet).
//!
//! Most of the time both queues are empty: the loop reads into one shared
//! scratch buffer, the protocol answers into another, and the reply is
//! written straight from there. Only the tail the kernel refused, or a
//! partial frame, is copied into a connection's [`Buffer`].
//!
//! # Invariants
//! * The queued bytes are `data[start..]`; `start <= data.len()`.
//! * An empty buffer owns **no heap memory** (`capacity() == 0`): an idle
//!   connection costs only its slab entry. The first byte queued allocates,
//!   consuming the last byte frees.
//! * The buffer itself does not bound its size. Its owner does: the
//!   connection stops reading while its output is above the high watermark,
//!   so output never exceeds `high watermark + one read`, and input never
//!   exceeds the protocol's frame limit + one read.

/// A FIFO byte queue that frees its memory whenever it drains.
#[derive(Debug, Default)]
pub struct Buffer {
    data: Vec<u8>,
    start: usize,
}

impl Buffer {
    /// An empty buffer (no allocation).
    pub const fn new() -> Self {
        Self {
            data: Vec::new(),
            start: 0,
        }
    }

    /// Number of queued bytes.
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queued bytes, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// Heap bytes held (for memory accounting and tests).
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// Queue `bytes` behind what is already there.
    pub fn extend(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.start > 0 {
            // Slide the live bytes to the front so the Vec grows only when
            // the queue itself does.
            self.data.drain(..self.start);
            self.start = 0;
        }
        self.data.extend_from_slice(bytes);
    }

    /// Drop `n` bytes from the front (they were written, or consumed).
    ///
    /// `n` larger than [`Buffer::len`] is clamped.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.data.len());
        if self.start == self.data.len() {
            self.data = Vec::new();
            self.start = 0;
        }
        debug_assert!(self.start <= self.data.len());
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

    #[test]
    fn over_consuming_is_clamped() {
        let mut b = Buffer::new();
        b.extend(b"xy");
        b.consume(10);
        assert!(b.is_empty());
    }
}
