//! The load scenarios every server runs.
//!
//! Owns: the scenario grid (1, 50, 1,000 connections × 64 B, 16 KiB × depth 1, 16, plus
//! the idle-memory run), their names and the `--scenarios` filter. Must not: know how a
//! scenario is executed.

use std::fmt;

/// One closed-loop load: `conns` connections, `size`-byte messages, `depth` in flight each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scenario {
    pub conns: usize,
    pub size: usize,
    pub depth: usize,
}

pub const CONNS: [usize; 3] = [1, 50, 1000];
pub const SIZES: [usize; 2] = [64, 16 * 1024];
pub const DEPTHS: [usize; 2] = [1, 16];

/// The scenario the headline targets are stated for.
pub const HEADLINE: Scenario = Scenario {
    conns: 50,
    size: 64,
    depth: 1,
};

/// Name of the idle-memory scenario in `--scenarios`.
pub const IDLE: &str = "idle";

impl Scenario {
    /// Short name used by `--scenarios`, the JSON report and the progress line.
    pub fn name(&self) -> String {
        format!("c{}-s{}-d{}", self.conns, size_name(self.size), self.depth)
    }

    /// Name for tables: "50 conns × 64 B × d1".
    pub fn label(&self) -> String {
        let plural = if self.conns == 1 { "" } else { "s" };
        format!(
            "{} conn{plural} × {} × d{}",
            self.conns,
            size_label(self.size),
            self.depth
        )
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

fn size_name(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{}K", size / 1024)
    } else {
        size.to_string()
    }
}

pub fn size_label(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// Whether `name` passes the `--scenarios` filter (empty filter: everything). An entry
/// that is a whole scenario name selects exactly that one (`c50-s64-d1` is not
/// `c50-s64-d16`); any other entry selects every name containing it.
pub fn selected(filter: &[String], name: &str) -> bool {
    let whole = |f: &str| f == IDLE || all().iter().any(|s| s.name() == f);
    filter.is_empty()
        || filter
            .iter()
            .any(|f| f == name || (!whole(f) && name.contains(f.as_str())))
}

fn all() -> Vec<Scenario> {
    let mut out = Vec::new();
    for size in SIZES {
        for depth in DEPTHS {
            for conns in CONNS {
                out.push(Scenario { conns, size, depth });
            }
        }
    }
    out
}

/// The load scenarios that pass the filter, in grid order.
pub fn grid(filter: &[String]) -> Vec<Scenario> {
    all()
        .into_iter()
        .filter(|s| selected(filter, &s.name()))
        .collect()
}
