//! The deterministic byte stream every connection sends, and its check.
//!
//! Owns: what byte sits at stream offset `k` of connection `i`, and the comparison of
//! echoed bytes against it. Must not: touch sockets or clocks.
//!
//! Byte `k` of connection `i` is `(k + seed(i)) mod 251`. Because 251 is prime and no
//! message size used in practice is a multiple of it, a dropped, duplicated or reordered
//! message shifts the stream and is caught by the very next comparison; the per-connection
//! seed catches bytes that cross connections. Any slice of the stream is a slice of one
//! precomputed buffer, so sending is a plain `write` from it and checking is a `memcmp`.

/// Period of the pattern (a prime).
const PERIOD: usize = 251;

/// One precomputed buffer that holds every slice of the stream up to `max_len` bytes.
pub struct Pattern {
    /// Invariant: `bytes[j] == j % PERIOD` and `bytes.len() == max_len + PERIOD`.
    bytes: Vec<u8>,
    max_len: usize,
}

impl Pattern {
    /// A pattern that can hand out slices of up to `max_len` bytes.
    pub fn new(max_len: usize) -> Pattern {
        let bytes = (0..max_len + PERIOD).map(|j| (j % PERIOD) as u8).collect();
        Pattern { bytes, max_len }
    }

    /// The seed of connection `index`: spreads neighbours apart in the pattern.
    pub fn seed(index: usize) -> usize {
        (index * 37) % PERIOD
    }

    /// The `len` bytes of the stream with `seed`, starting at stream offset `offset`.
    /// `len` is clamped to the longest slice this pattern holds.
    pub fn slice(&self, seed: usize, offset: u64, len: usize) -> &[u8] {
        let start = ((offset % PERIOD as u64) as usize + seed) % PERIOD;
        let len = len.min(self.max_len);
        debug_assert!(start + len <= self.bytes.len());
        &self.bytes[start..start + len]
    }

    /// How many bytes of `got` differ from the stream at `offset`; 0 when all match.
    pub fn mismatches(&self, seed: usize, offset: u64, got: &[u8]) -> u64 {
        let mut bad = 0;
        let mut done = 0;
        while done < got.len() {
            let want = self.slice(seed, offset + done as u64, got.len() - done);
            let part = &got[done..done + want.len()];
            if part != want {
                bad += part.iter().zip(want).filter(|(a, b)| a != b).count() as u64;
            }
            done += want.len();
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_the_stream_at_any_offset() {
        let p = Pattern::new(1000);
        let seed = Pattern::seed(3);
        let whole = p.slice(seed, 0, 1000).to_vec();
        for offset in [0u64, 1, 250, 251, 600] {
            let part = p.slice(seed, offset, 300);
            assert_eq!(part, &whole[offset as usize..offset as usize + 300]);
        }
    }

    #[test]
    fn mismatches_counts_only_differing_bytes() {
        let p = Pattern::new(64);
        let seed = Pattern::seed(1);
        let mut got = p.slice(seed, 10, 64).to_vec();
        assert_eq!(p.mismatches(seed, 10, &got), 0);
        got[5] ^= 0xff;
        got[40] ^= 0x01;
        assert_eq!(p.mismatches(seed, 10, &got), 2);
        // A shifted stream (one lost byte) mismatches almost everywhere.
        assert!(p.mismatches(seed, 11, p.slice(seed, 10, 64)) > 60);
    }

    #[test]
    fn long_reads_are_checked_in_pieces() {
        let p = Pattern::new(16);
        let seed = Pattern::seed(2);
        let got: Vec<u8> = (0..100u64).map(|k| p.slice(seed, k, 1)[0]).collect();
        assert_eq!(p.mismatches(seed, 0, &got), 0);
    }
}
