//! How log lines name things and print quantities, so that they read as
//! sentences: `loop 1 conn 5`, `1 connection`, `drained in 1.2 ms`.
//!
//! Nothing here is on the hot path: each helper is a `Display` value that
//! only does work when a log line is actually written.

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

thread_local! {
    /// The loop this thread runs, when a process runs several (`--threads N`).
    static LOOP: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Mark this thread as loop `id` of several: its connection log lines then
/// say `loop {id} conn {key}`, so two loops' `conn 0` can be told apart.
pub fn set_loop(id: Option<usize>) {
    LOOP.with(|cell| cell.set(id));
}

/// The loop this thread runs, if it is one of several.
pub fn current_loop() -> Option<usize> {
    LOOP.with(Cell::get)
}

/// A connection's name in logs: `conn 5`, or `loop 1 conn 5` with several loops.
#[derive(Clone, Copy, Debug)]
pub struct ConnName(pub usize);

impl fmt::Display for ConnName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match current_loop() {
            Some(id) => write!(f, "loop {id} conn {}", self.0),
            None => write!(f, "conn {}", self.0),
        }
    }
}

/// The loop's name as a prefix for loop-wide lines: `loop 1: ` with
/// several loops, nothing with one.
#[derive(Clone, Copy, Debug)]
pub struct LoopName;

impl fmt::Display for LoopName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match current_loop() {
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
        set_loop(None);
        assert_eq!(ConnName(5).to_string(), "conn 5");
        set_loop(Some(1));
        assert_eq!(ConnName(5).to_string(), "loop 1 conn 5");
        set_loop(None);
    }
}
