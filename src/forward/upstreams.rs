//! The upstreams a loop forwards to, and which one a new connection gets:
//! the balancer and the passive health check, sans-IO (addresses, counts
//! and `now` in, a choice out), so every rule is a unit test.
//!
//! * **Choice** ([`Balance`]): `least-conn` picks the up upstream with the
//!   fewest live connections *on this loop* (ties go round-robin, so equal
//!   upstreams share evenly); `round-robin` takes the next up one in turn.
//! * **Passive check:** a connect that is refused or times out marks its
//!   upstream down until `down_time` has passed; the connection is retried
//!   on another one ([`Upstreams::pick`] skips those it already tried), as
//!   HAProxy's `retries` with `option redispatch`.
//! * **All down:** when every upstream is down, the one whose down time
//!   ends first is tried anyway (a backend that came back is found at once,
//!   not `down_time` later); only when the connection has tried them all
//!   is the client refused.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::base::counters::UpstreamCount;

/// How a new connection's upstream is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// The up upstream with the fewest live connections on this loop.
    #[default]
    LeastConn,
    /// The next up upstream, in turn.
    RoundRobin,
}

impl Balance {
    /// The names `--balance` accepts, in the order the help lists them.
    pub const NAMES: &'static [&'static str] = &["least-conn", "round-robin"];
}

impl FromStr for Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "least-conn" => Ok(Balance::LeastConn),
            "round-robin" => Ok(Balance::RoundRobin),
            other => Err(format!(
                "unknown balance {other:?} (expected one of: {})",
                Balance::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Balance::LeastConn => "least-conn",
            Balance::RoundRobin => "round-robin",
        })
    }
}

/// Why a connect to an upstream failed: the passive check's evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing listens there (`ECONNREFUSED`).
    Refused,
    /// No answer within `--connect-timeout`.
    TimedOut,
    /// Any other error (unreachable, out of ports…).
    Other,
}

impl ConnectFailure {
    /// Classify the error a connect ended with.
    pub fn of(err: &std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            std::io::ErrorKind::TimedOut => ConnectFailure::TimedOut,
            _ => ConnectFailure::Other,
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::TimedOut => "timed out",
            ConnectFailure::Other => "failed",
        })
    }
}

/// One upstream as this loop sees it.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Down until then (a failed connect); `None`: up.
    pub down_until: Option<Instant>,
    /// No longer in the list (`--upstream-file` re-read): takes no new
    /// connection, keeps its live ones.
    pub retired: bool,
    /// What `/metrics` shows of it (`up` filled in when asked), and the
    /// balancer reads: `active` is this loop's connections forwarded to it
    /// now, connecting included.
    pub counts: UpstreamCount,
}

impl Upstream {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            down_until: None,
            retired: false,
            counts: UpstreamCount {
                addr,
                up: 0,
                active: 0,
                connects: 0,
                refused: 0,
                timed_out: 0,
                failed_other: 0,
                bytes_up: 0,
                bytes_down: 0,
                connect_us: 0,
            },
        }
    }
}

/// The upstream list of one loop and its balancer.
#[derive(Clone, Debug)]
pub struct Upstreams {
    list: Vec<Upstream>,
    balance: Balance,
    down_time: Duration,
    /// Where round-robin (and least-conn's tie break) looks first.
    next: usize,
}

impl Upstreams {
    /// Forward to `addrs` (at least one), chosen by `balance`; a failed
    /// connect keeps its upstream out of the choice for `down_time`.
    pub fn new(addrs: &[SocketAddr], balance: Balance, down_time: Duration) -> Self {
        Self {
            list: addrs.iter().map(|&addr| Upstream::new(addr)).collect(),
            balance,
            down_time,
            next: 0,
        }
    }

    /// Every upstream, in the order given.
    pub fn list(&self) -> &[Upstream] {
        &self.list
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none (never, for a list built from flags).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The upstream a connection that has already tried `tried` (a bit per
    /// index) should try now, or `None` when it has tried them all. Up
    /// upstreams first, by the balance; if every untried one is down, the
    /// one that went down longest ago.
    pub fn pick(&mut self, now: Instant, tried: u64) -> Option<usize> {
        let n = self.list.len();
        let untried = |i: usize| !self.list[i].retired && (i >= 64 || tried & (1 << i) == 0);
        let up = |u: &Upstream| u.down_until.is_none_or(|t| t <= now);
        let start = self.next % n.max(1);
        let order = (0..n).map(|k| (start + k) % n);
        let choice = match self.balance {
            Balance::RoundRobin => order.clone().find(|&i| untried(i) && up(&self.list[i])),
            Balance::LeastConn => order
                .clone()
                .filter(|&i| untried(i) && up(&self.list[i]))
                .min_by_key(|&i| self.list[i].counts.active),
        };
        let choice = choice.or_else(|| {
            order
                .filter(|&i| untried(i))
                .min_by_key(|&i| self.list[i].down_until)
        })?;
        self.next = choice + 1;
        Some(choice)
    }

    /// Take a new list: upstreams not in it are retired (their live
    /// connections go on; indices stay, so a pair's upstream is still its
    /// own), new ones join, returning ones come back. Returns how many
    /// were added and retired.
    pub fn replace(&mut self, addrs: &[SocketAddr]) -> (usize, usize) {
        let mut retired = 0;
        for u in &mut self.list {
            let keep = addrs.contains(&u.addr);
            if !keep && !u.retired {
                retired += 1;
            }
            u.retired = !keep;
        }
        let mut added = 0;
        for &addr in addrs {
            if !self.list.iter().any(|u| u.addr == addr) {
                self.list.push(Upstream::new(addr));
                added += 1;
            }
        }
        (added, retired)
    }

    /// A connection to upstream `i` begins (its connect is under way).
    pub fn opened(&mut self, i: usize) {
        if let Some(u) = self.list.get_mut(i) {
            u.counts.active += 1;
        }
    }

    /// A connection to upstream `i` ended (or its connect failed).
    pub fn closed(&mut self, i: usize) {
        if let Some(u) = self.list.get_mut(i) {
            u.counts.active = u.counts.active.saturating_sub(1);
        }
    }

    /// A pair's connect to upstream `i` succeeded after `took`.
    pub fn record_connect(&mut self, i: usize, took: Duration) {
        if let Some(u) = self.list.get_mut(i) {
            u.counts.connects += 1;
            u.counts.connect_us += took.as_micros() as u64;
        }
    }

    /// A connect for a client to upstream `i` failed, as `why` says.
    pub fn record_failure(&mut self, i: usize, why: ConnectFailure) {
        if let Some(u) = self.list.get_mut(i) {
            match why {
                ConnectFailure::Refused => u.counts.refused += 1,
                ConnectFailure::TimedOut => u.counts.timed_out += 1,
                ConnectFailure::Other => u.counts.failed_other += 1,
            }
        }
    }

    /// A pair forwarded to upstream `i` ended, having moved these bytes.
    pub fn record_bytes(&mut self, i: usize, up: u64, down: u64) {
        if let Some(u) = self.list.get_mut(i) {
            u.counts.bytes_up += up;
            u.counts.bytes_down += down;
        }
    }

    /// Every upstream's counts for `/metrics`, at `now`.
    pub fn counts(&self, now: Instant) -> Vec<UpstreamCount> {
        self.list
            .iter()
            .map(|u| UpstreamCount {
                up: u64::from(u.down_until.is_none_or(|t| t <= now)),
                ..u.counts.clone()
            })
            .collect()
    }

    /// A connect to upstream `i` succeeded: it is up.
    pub fn connected(&mut self, i: usize) -> bool {
        let was_down = self
            .list
            .get_mut(i)
            .and_then(|u| u.down_until.take())
            .is_some();
        was_down
    }

    /// A connect to upstream `i` failed: it is down for the down time.
    /// Returns whether it was up until now (the news to log).
    pub fn failed(&mut self, i: usize, now: Instant) -> bool {
        let until = now + self.down_time;
        match self.list.get_mut(i) {
            Some(u) => {
                let was_up = u.down_until.is_none_or(|t| t <= now);
                u.down_until = Some(until);
                was_up
            }
            None => false,
        }
    }

    /// Whether upstream `i` is up at `now`.
    pub fn is_up(&self, i: usize, now: Instant) -> bool {
        self.list
            .get(i)
            .is_some_and(|u| u.down_until.is_none_or(|t| t <= now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect()
    }

    #[test]
    fn round_robin_takes_each_upstream_in_turn() {
        let mut u = Upstreams::new(&addrs(3), Balance::RoundRobin, Duration::from_secs(10));
        let now = Instant::now();
        let picks: Vec<_> = (0..6).map(|_| u.pick(now, 0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_conn_takes_the_least_loaded_and_shares_ties_in_turn() {
        let mut u = Upstreams::new(&addrs(3), Balance::LeastConn, Duration::from_secs(10));
        let now = Instant::now();
        u.opened(0);
        u.opened(0);
        u.opened(1);
        assert_eq!(u.pick(now, 0), Some(2));
        u.opened(2);
        // 2, 1, 1: the tie between 1 and 2 goes to the one after the last pick.
        assert_eq!(u.pick(now, 0), Some(1));
        let mut even = Upstreams::new(&addrs(3), Balance::LeastConn, Duration::from_secs(10));
        let picks: Vec<_> = (0..3).map(|_| even.pick(now, 0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2], "no load anywhere: in turn");
    }

    #[test]
    fn a_failed_upstream_is_skipped_until_its_down_time_ends() {
        let mut u = Upstreams::new(&addrs(2), Balance::RoundRobin, Duration::from_secs(10));
        let now = Instant::now();
        assert!(u.failed(0, now), "news: it was up");
        assert!(!u.failed(0, now), "already down");
        for _ in 0..4 {
            assert_eq!(u.pick(now, 0), Some(1));
        }
        assert!(!u.is_up(0, now + Duration::from_secs(9)));
        let later = now + Duration::from_secs(10);
        assert!(u.is_up(0, later));
        let picks: Vec<_> = (0..2).map(|_| u.pick(later, 0).unwrap()).collect();
        assert!(picks.contains(&0), "back in the rotation: {picks:?}");
        assert!(u.connected(0) || u.is_up(0, later));
    }

    #[test]
    fn a_retry_never_tries_the_same_upstream_twice() {
        let mut u = Upstreams::new(&addrs(3), Balance::LeastConn, Duration::from_secs(10));
        let now = Instant::now();
        let mut tried = 0u64;
        let mut seen = Vec::new();
        while let Some(i) = u.pick(now, tried) {
            u.failed(i, now);
            tried |= 1 << i;
            seen.push(i);
        }
        seen.sort();
        assert_eq!(seen, [0, 1, 2], "each once, then none");
    }

    #[test]
    fn with_every_upstream_down_the_longest_down_is_tried() {
        let mut u = Upstreams::new(&addrs(2), Balance::LeastConn, Duration::from_secs(10));
        let now = Instant::now();
        u.failed(1, now);
        u.failed(0, now + Duration::from_secs(1));
        assert_eq!(u.pick(now + Duration::from_secs(2), 0), Some(1));
    }

    #[test]
    fn a_new_list_retires_the_missing_and_adds_the_new_without_moving_indices() {
        let a = addrs(3);
        let mut u = Upstreams::new(&a[..2], Balance::RoundRobin, Duration::from_secs(10));
        let now = Instant::now();
        u.opened(0); // a live connection on upstream 0
        assert_eq!(u.replace(&[a[1], a[2]]), (1, 1));
        assert_eq!(u.list()[0].addr, a[0], "index 0 is still upstream 0");
        assert_eq!(
            u.list()[0].counts.active,
            1,
            "its live connection is still counted"
        );
        let picks: Vec<_> = (0..4).map(|_| u.pick(now, 0).unwrap()).collect();
        assert!(
            !picks.contains(&0),
            "a retired upstream takes no connection: {picks:?}"
        );
        assert!(picks.contains(&1) && picks.contains(&2));
        assert_eq!(u.replace(&a), (0, 0), "upstream 0 returns");
        assert!(!u.list()[0].retired);
    }

    #[test]
    fn balance_names_parse_and_print_back() {
        for name in Balance::NAMES {
            assert_eq!(name.parse::<Balance>().unwrap().to_string(), *name);
        }
        assert!("random".parse::<Balance>().is_err());
    }
}
