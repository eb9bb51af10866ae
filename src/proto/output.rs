//! Where a protocol writes what it says: bytes it copies in, and shared
//! chunks it hands over by reference, so a large stored value (a cache
//! entry, a file) goes out without being copied into the connection.
//!
//! An [`Output`] reads and writes like the `Vec<u8>` it wraps (it derefs
//! to one: `out.extend_from_slice(…)`, `out.push(…)`, `out.len()`), and
//! adds [`Output::share`]. The connection writes the pieces in order,
//! straight to the socket when it takes them; what the socket refuses is
//! queued, a shared chunk by reference, and goes out as the socket drains.
//! A reply of any size is fine: a protocol never holds it twice, and the
//! connection stops reading while it owes more than its high watermark.
//!
//! ```
//! use std::sync::Arc;
//! use tcp_reactor::proto::Output;
//!
//! let value: Arc<[u8]> = Arc::from(vec![b'x'; 1 << 20]); // kept in a store
//! let mut out = Output::new();
//! out.extend_from_slice(b"VALUE k 0 1048576\r\n");
//! out.share(Arc::clone(&value)); // not copied
//! out.extend_from_slice(b"\r\nEND\r\n");
//! assert_eq!(out.len(), 26); // the bytes copied in
//! assert_eq!(out.total_len(), 26 + (1 << 20));
//! ```

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A protocol call's output: copied bytes, with shared chunks among them.
#[derive(Debug, Default, Clone)]
pub struct Output {
    bytes: Vec<u8>,
    /// Shared chunks and where each goes: after `bytes[..at]`.
    shared: Vec<(usize, Arc<[u8]>)>,
}

/// One piece of an [`Output`], in order.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// Bytes copied into the output.
    Bytes(&'a [u8]),
    /// A chunk shared by reference.
    Shared(&'a Arc<[u8]>),
}

impl Output {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty, with room for `capacity` copied bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
            shared: Vec::new(),
        }
    }

    /// Send `chunk` here, after what was written so far, without copying
    /// it: the connection keeps a reference until the socket has taken it.
    pub fn share(&mut self, chunk: Arc<[u8]>) {
        if !chunk.is_empty() {
            self.shared.push((self.bytes.len(), chunk));
        }
    }

    /// Forget everything written (the allocation is kept).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.shared.clear();
    }

    /// Keep the first `len` copied bytes and the chunks shared before them
    /// (a chunk shared at exactly `len` goes too: it was written after).
    pub fn truncate(&mut self, len: usize) {
        self.bytes.truncate(len);
        self.shared.retain(|(at, _)| *at < len);
    }

    /// Whether nothing at all was written (no byte, no chunk).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.shared.is_empty()
    }

    /// Whether any chunk is shared (else the bytes are all there is).
    pub(crate) fn has_shared(&self) -> bool {
        !self.shared.is_empty()
    }

    /// Every byte that goes out: copied and shared.
    pub fn total_len(&self) -> usize {
        self.bytes.len() + self.shared.iter().map(|(_, c)| c.len()).sum::<usize>()
    }

    /// The pieces, in the order they go out.
    pub fn pieces(&self) -> impl Iterator<Item = Piece<'_>> + '_ {
        let mut from = 0;
        let mut shared = self.shared.iter();
        let mut pending: Option<&Arc<[u8]>> = None;
        std::iter::from_fn(move || {
            if let Some(chunk) = pending.take() {
                return Some(Piece::Shared(chunk));
            }
            match shared.next() {
                Some((at, chunk)) => {
                    let bytes = &self.bytes[from..*at];
                    from = *at;
                    if bytes.is_empty() {
                        Some(Piece::Shared(chunk))
                    } else {
                        pending = Some(chunk);
                        Some(Piece::Bytes(bytes))
                    }
                }
                None if from < self.bytes.len() => {
                    let bytes = &self.bytes[from..];
                    from = self.bytes.len();
                    Some(Piece::Bytes(bytes))
                }
                None => None,
            }
        })
    }

    /// Everything, flattened: what the peer reads (tests, small outputs).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.total_len());
        for piece in self.pieces() {
            match piece {
                Piece::Bytes(b) => all.extend_from_slice(b),
                Piece::Shared(c) => all.extend_from_slice(c),
            }
        }
        all
    }
}

/// The copied bytes, as the `Vec<u8>` they are in.
impl Deref for Output {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.bytes
    }
}

impl DerefMut for Output {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }
}

/// Compared by what the peer reads: every piece, flattened.
impl PartialEq for Output {
    fn eq(&self, other: &Output) -> bool {
        self.to_vec() == other.to_vec()
    }
}

impl PartialEq<[u8]> for Output {
    fn eq(&self, other: &[u8]) -> bool {
        self.to_vec() == other
    }
}

impl PartialEq<&[u8]> for Output {
    fn eq(&self, other: &&[u8]) -> bool {
        self.to_vec() == *other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Output {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.to_vec() == other[..]
    }
}

impl PartialEq<Vec<u8>> for Output {
    fn eq(&self, other: &Vec<u8>) -> bool {
        &self.to_vec() == other
    }
}

impl From<Vec<u8>> for Output {
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            shared: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_come_in_the_order_they_were_written() {
        let mut out = Output::new();
        out.share(Arc::from(&b"A"[..]));
        out.extend_from_slice(b"bc");
        out.share(Arc::from(&b"D"[..]));
        out.share(Arc::from(&b"E"[..]));
        out.push(b'f');
        assert_eq!(out.to_vec(), b"AbcDEf");
        assert_eq!(out.len(), 3);
        assert_eq!(out.total_len(), 6);
        out.truncate(2);
        assert_eq!(out.to_vec(), b"Abc", "D and E were shared after byte 2");
        out.clear();
        assert!(out.is_empty() && !out.has_shared());
    }
}
