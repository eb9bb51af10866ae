//! How log lines name things and print quantities, so that they read as
//! sentences: `loop 1 conn 5`, `1 connection`, `drained in 1.2 ms`.
//!
//! Nothing here is on the hot path: each helper is a `Display` value that
//! only does work when a log line is actually written.

use std::fmt;
use std::time::Duration;

/// Which loop a log line is about: its id when the process runs several
/// loops (`--threads N`), nothing with one. Each loop knows its own and
/// hands it to what it names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopTag(Option<u16>);

impl LoopTag {
    /// The only loop of its process (or a standalone server): unnamed.
    pub const ONLY: LoopTag = LoopTag(None);

    /// Loop `id` of `loops`: named only when there are several.
    pub fn of(id: usize, loops: usize) -> Self {
        LoopTag((loops > 1).then(|| u16::try_from(id).unwrap_or(u16::MAX)))
    }
}

/// A connection's name in logs: `conn 5`, or `loop 1 conn 5` with several
/// loops, so two loops' `conn 0` can be told apart. Eight bytes: a
/// connection keeps its own (a slab key fits 32 bits, as the descriptor
/// limit does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnName {
    tag: LoopTag,
    key: u32,
}

impl ConnName {
    /// The connection in slab slot `key` of the loop `tag` names.
    pub fn new(tag: LoopTag, key: usize) -> Self {
        Self {
            tag,
            key: u32::try_from(key).unwrap_or(u32::MAX),
        }
    }

    /// Its slab key.
    pub fn key(self) -> usize {
        self.key as usize
    }
}

impl fmt::Display for ConnName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tag.0 {
            Some(id) => write!(f, "loop {id} conn {}", self.key),
            None => write!(f, "conn {}", self.key),
        }
    }
}

/// The loop's name as a prefix for loop-wide lines: `loop 1: ` with
/// several loops, nothing with one.
#[derive(Clone, Copy, Debug)]
pub struct LoopName(pub LoopTag);

impl fmt::Display for LoopName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 .0 {
            Some(id) => write!(f, "loop {id}: "),
            None => Ok(()),
        }
    }
}

/// A poll timeout: `none` (sleep until an event) or a [`Dur`].
#[derive(Clone, Copy, Debug)]
pub struct Timeout(pub Option<Duration>);

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => Dur(d).fmt(f),
            None => f.write_str("none"),
        }
    }
}

/// `n` followed by `noun`, plural unless `n` is 1: `1 connection`, `2 connections`.
#[derive(Clone, Copy, Debug)]
pub struct Count(pub u64, pub &'static str);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Count(n, noun) = *self;
        write!(f, "{n} {noun}{}", if n == 1 { "" } else { "s" })
    }
}

/// A duration at a precision a person reads: `0 s`, `250 µs`, `1.2 ms`,
/// `3.5 s`, `5 min`, `2 min 5 s`. Never `0ns` or `1.234567891s`.
#[derive(Clone, Copy, Debug)]
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let us = d.as_secs_f64() * 1e6;
        if d.is_zero() {
            f.write_str("0 s")
        } else if us < 1.0 {
            f.write_str("< 1 µs")
        } else if us < 1_000.0 {
            write!(f, "{us:.0} µs")
        } else if us < 1_000_000.0 {
            write!(f, "{} ms", one_decimal(us / 1e3))
        } else if d.as_secs() < 120 {
            write!(f, "{} s", one_decimal(d.as_secs_f64()))
        } else if d.as_secs() % 60 == 0 {
            write!(f, "{} min", d.as_secs() / 60)
        } else {
            write!(f, "{} min {} s", d.as_secs() / 60, d.as_secs() % 60)
        }
    }
}

/// One decimal, without a trailing `.0` on large values: `1.2`, `15`, `250`.
fn one_decimal(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_writes_them() {
        let cases = [
            (Duration::ZERO, "0 s"),
            (Duration::from_nanos(300), "< 1 µs"),
            (Duration::from_micros(250), "250 µs"),
            (Duration::from_micros(1_234), "1.2 ms"),
            (Duration::from_millis(15), "15 ms"),
            (Duration::from_millis(3_500), "3.5 s"),
            (Duration::from_secs(10), "10 s"),
            (Duration::from_secs(125), "2 min 5 s"),
            (Duration::from_secs(300), "5 min"),
        ];
        for (d, text) in cases {
            assert_eq!(Dur(d).to_string(), text, "{d:?}");
        }
    }

    #[test]
    fn counts_agree_in_number() {
        assert_eq!(Count(0, "connection").to_string(), "0 connections");
        assert_eq!(Count(1, "connection").to_string(), "1 connection");
        assert_eq!(Count(2, "connection").to_string(), "2 connections");
    }

    #[test]
    fn connections_carry_their_loop_only_when_there_are_several() {
        assert_eq!(ConnName::new(LoopTag::ONLY, 5).to_string(), "conn 5");
        assert_eq!(ConnName::new(LoopTag::of(0, 1), 5).to_string(), "conn 5");
        assert_eq!(
            ConnName::new(LoopTag::of(1, 2), 5).to_string(),
            "loop 1 conn 5"
        );
        assert_eq!(LoopName(LoopTag::of(1, 2)).to_string(), "loop 1: ");
        assert_eq!(LoopName(LoopTag::ONLY).to_string(), "");
    }
}
