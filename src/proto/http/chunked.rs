//! The chunked transfer coding (RFC 9112 §7.1), decoding side, sans-IO.
//!
//! Owns the framing of a chunked request body: chunk-size lines (parsed by
//! `httparse::parse_chunk_size`, extensions ignored), chunk data, the CRLF
//! after it, the last chunk and the trailer section (read and discarded).
//! It must not buffer: it consumes what it can from the front of its input
//! and leaves a partial line for the next call, so the connection holds at
//! most [`LINE_MAX`] bytes for it. Every verdict looks at a bounded window,
//! so it never depends on where reads split the body.
//!
//! Echoing, it writes the body back **as chunks of the same sizes**: a
//! chunk's size line as soon as it is read, its data as it arrives, the
//! last chunk (`0\r\n\r\n`) once the trailers are read. The output is then
//! the same however the input was split, and nothing is collected.
//!
//! ```text
//!   Size ──size > 0──► Data { left } ──left = 0──► DataEnd ──CRLF──► Size
//!    └──size 0──► Trailer ──empty line──► Done
//! ```

/// Longest chunk-size line (extensions included) or trailer line.
pub const LINE_MAX: usize = 4 * 1024;

/// Most trailer bytes in all.
pub(crate) const TRAILERS_MAX: usize = 8 * 1024;

/// Where the decoder is in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A chunk-size line comes next.
    Size,
    /// Inside a chunk: `left` data bytes to come.
    Data { left: u64 },
    /// The chunk's data is complete: CRLF comes next.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one. `seen`
    /// trailer bytes so far.
    Trailer { seen: u16 },
    /// The body is complete.
    Done,
}

/// One chunked body's decoding state: small and `Copy`, so a caller can
/// look ahead with a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoder {
    state: State,
    /// Data bytes announced so far (bounded by `max`).
    total: u64,
}

/// What a call found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Input (or, echoing, output room) ran out before the body ended.
    More,
    /// The body is complete; what follows it is not consumed.
    Done,
    /// Broken framing: a bad chunk-size line, data not followed by CRLF,
    /// a line or the trailers too long.
    Invalid(&'static str),
    /// The chunks announce more than `max` data bytes.
    TooLarge,
}

/// The result of [`Decoder::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes used up from the front of the input.
    pub consumed: usize,
    /// Where that left the body.
    pub status: Status,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// At the start of a body.
    pub const fn new() -> Self {
        Self {
            state: State::Size,
            total: 0,
        }
    }

    /// Decode from the front of `input`; `max` bounds the data bytes of the
    /// whole body. With `echo = Some((out, stop_at))`, the body is written
    /// to `out` re-chunked (see the module doc), and the decoder stops
    /// taking chunk data and new chunks once `out` is `stop_at` bytes long
    /// (the framing around them may add a few bytes past it).
    pub fn decode(
        &mut self,
        input: &[u8],
        max: u64,
        mut echo: Option<(&mut Vec<u8>, usize)>,
    ) -> Decoded {
        let mut pos = 0;
        let status = loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => break Status::Done,
                State::Size => {
                    if echo.as_ref().is_some_and(|(out, stop)| out.len() >= *stop) {
                        break Status::More;
                    }
                    let window = &rest[..rest.len().min(LINE_MAX + 1)];
                    let (len, size) = match httparse::parse_chunk_size(window) {
                        Ok(httparse::Status::Complete((len, size))) if len <= LINE_MAX => {
                            (len, size)
                        }
                        Ok(httparse::Status::Partial) if window.len() <= LINE_MAX => {
                            break Status::More
                        }
                        Ok(_) => break Status::Invalid("chunk-size line too long"),
                        Err(_) => break Status::Invalid("bad chunk-size line"),
                    };
                    if size > max - self.total {
                        break Status::TooLarge;
                    }
                    pos += len;
                    self.total += size;
                    if size == 0 {
                        self.state = State::Trailer { seen: 0 };
                    } else {
                        if let Some((out, _)) = echo.as_mut() {
                            push_hex(out, size);
                            out.extend_from_slice(b"\r\n");
                        }
                        self.state = State::Data { left: size };
                    }
                }
                State::Data { left } => {
                    let mut take = left.min(rest.len() as u64) as usize;
                    if let Some((out, stop)) = echo.as_mut() {
                        take = take.min(stop.saturating_sub(out.len()));
                        out.extend_from_slice(&rest[..take]);
                    }
                    pos += take;
                    let left = left - take as u64;
                    if left > 0 {
                        self.state = State::Data { left };
                        break Status::More;
                    }
                    self.state = State::DataEnd;
                }
                State::DataEnd => {
                    match rest {
                        [b'\r', b'\n', ..] => {}
                        [] | [b'\r'] => break Status::More,
                        _ => break Status::Invalid("chunk data not followed by CRLF"),
                    }
                    pos += 2;
                    if let Some((out, _)) = echo.as_mut() {
                        out.extend_from_slice(b"\r\n");
                    }
                    self.state = State::Size;
                }
                State::Trailer { seen } => {
                    let window = &rest[..rest.len().min(LINE_MAX + 1)];
                    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
                        if window.len() > LINE_MAX {
                            break Status::Invalid("trailer line too long");
                        }
                        break Status::More;
                    };
                    pos += nl + 1;
                    if matches!(&window[..nl], b"" | b"\r") {
                        if let Some((out, _)) = echo.as_mut() {
                            out.extend_from_slice(b"0\r\n\r\n");
                        }
                        self.state = State::Done;
                        break Status::Done;
                    }
                    let seen = usize::from(seen) + nl + 1;
                    if seen > TRAILERS_MAX {
                        break Status::Invalid("trailers over 8 KiB");
                    }
                    // Fits: TRAILERS_MAX < u16::MAX.
                    self.state = State::Trailer { seen: seen as u16 };
                }
            }
        };
        Decoded {
            consumed: pos,
            status,
        }
    }
}

const _: () = assert!(TRAILERS_MAX < u16::MAX as usize);

/// Append `n` in lowercase hexadecimal, without allocating.
fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(n % 16) as usize];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `pieces` one after another (a partial line is offered again
    /// with the next piece); the echo output and the final status.
    fn run(pieces: &[&[u8]], max: u64) -> (Vec<u8>, Status, usize) {
        let mut d = Decoder::new();
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut status = Status::More;
        let mut consumed = 0;
        for piece in pieces {
            pending.extend_from_slice(piece);
            let r = d.decode(&pending, max, Some((&mut out, usize::MAX)));
            pending.drain(..r.consumed);
            consumed += r.consumed;
            status = r.status;
            if status != Status::More {
                break;
            }
        }
        (out, status, consumed)
    }

    const BODY: &[u8] = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT";

    #[test]
    fn chunks_are_echoed_with_their_sizes_extensions_dropped_trailers_discarded() {
        let (out, status, consumed) = run(&[BODY], 1 << 20);
        assert_eq!(out, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        assert_eq!(status, Status::Done);
        assert_eq!(consumed, BODY.len() - 4, "what follows is left");
        for i in 0..=BODY.len() {
            for j in i..=BODY.len() {
                let split = run(&[&BODY[..i], &BODY[i..j], &BODY[j..]], 1 << 20);
                assert_eq!(split, (out.clone(), status, consumed), "split {i} {j}");
            }
        }
    }

    #[test]
    fn broken_framing_is_invalid() {
        for (body, why) in [
            (&b"x\r\n"[..], "bad chunk-size line"),
            (b"5\r\nhelloX\r\n", "chunk data not followed by CRLF"),
            (b"5\r\nhello\n0\r\n\r\n", "chunk data not followed by CRLF"),
            (b"-1\r\n", "bad chunk-size line"),
            (b"ffffffffffffffffff\r\n", "bad chunk-size line"),
        ] {
            assert_eq!(run(&[body], 1 << 20).1, Status::Invalid(why), "{body:?}");
        }
        let long = [b"1;".as_slice(), &[b'e'; LINE_MAX]].concat();
        assert_eq!(
            run(&[&long], 1 << 20).1,
            Status::Invalid("chunk-size line too long")
        );
        let trailers = [b"0\r\n".as_slice(), &b"T: v\r\n".repeat(2000)].concat();
        assert_eq!(
            run(&[&trailers], 1 << 20).1,
            Status::Invalid("trailers over 8 KiB")
        );
    }

    #[test]
    fn more_than_max_data_bytes_is_too_large_at_the_size_line() {
        assert_eq!(run(&[b"5\r\nhello\r\n"], 4).1, Status::TooLarge);
        assert_eq!(run(&[b"2\r\nhe\r\n3\r\nllo\r\n"], 4).1, Status::TooLarge);
        assert_eq!(
            run(&[b"2\r\nhe\r\n2\r\nll\r\n0\r\n\r\n"], 4).1,
            Status::Done
        );
    }

    #[test]
    fn echoing_stops_at_the_output_limit_and_resumes() {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let r = d.decode(b"a\r\n0123456789\r\n0\r\n\r\n", 100, Some((&mut out, 7)));
        assert_eq!(r.status, Status::More);
        assert_eq!(out, b"a\r\n0123");
        assert_eq!(r.consumed, 7);
    }
}
