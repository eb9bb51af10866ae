//! Counters the loop owns: what `SIGUSR1` prints, what each loop's drain
//! line ends with, and what `--metrics` serves — all three generated from
//! the one list in this file ([`COUNTERS`]).
//!
//! Plain integers, no atomics: only the loop thread touches them. The loop
//! owns one [`Stats`] and lends it, with each call, to what counts below
//! it: a connection (a backpressure pause) through its per-call context,
//! a listener (an accept error's kind) as an argument; a TLS stage keeps
//! its own few counts until the connection takes them after the call. No
//! thread-local, nothing hidden, and nothing here runs per message.
//!
//! # Adding a counter
//! One row in the `counters!` list below: the field it becomes, its kind,
//! its Prometheus family and label, its words in the log lines (`-`: none;
//! a leading space goes on with the previous item, as ` out` after `bytes
//! in`), the protocol it is shown for (`*`: every one) and what it counts. The
//! struct field, the sum over loops, the `SIGUSR1`/drain line and the
//! `/metrics` samples all follow from that row, and `tests/metrics.rs`
//! checks that every row reaches a real scrape. A family with a label
//! (several rows) also needs its title in `FAMILY_TITLES`.

use std::fmt;

use crate::base::close::CloseReason;

/// How Prometheus is told to read a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (summed over loops, reset only by a restart).
    Counter,
    /// Goes up and down (a level now: open connections).
    Gauge,
}

impl Kind {
    /// The word in `# TYPE`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One row of the list: a field of [`Stats`] and how each place shows it.
#[derive(Clone, Copy, Debug)]
pub struct Counter {
    /// The field of [`Stats`] (`closed_slow`).
    pub field: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The Prometheus family (`tcp_reactor_connections_closed_total`);
    /// the rows of one family are next to each other.
    pub family: &'static str,
    /// Its label in a family of several samples (`("reason", "slow_consumer")`).
    pub label: Option<(&'static str, &'static str)>,
    /// Its words in the `SIGUSR1` and drain lines (`None`: `/metrics` only).
    /// Words with a leading space go on with the previous item, without a
    /// comma: `closed ok 3 aborted 0 …`, `bytes in 6 out 6`.
    pub line: Option<&'static str>,
    /// Shown only when serving this protocol (`None`: always).
    pub protocol: Option<&'static str>,
    /// What it counts: the `# HELP` text (a labeled family's is its title
    /// from `FAMILY_TITLES`, then each label with this).
    pub help: &'static str,
    /// Read it from a [`Stats`].
    pub get: fn(&Stats) -> u64,
}

impl Counter {
    /// The sample's name in the exposition: `family` or `family{label="value"}`.
    pub fn sample_name(&self) -> String {
        match self.label {
            Some((key, value)) => format!("{}{{{key}=\"{value}\"}}", self.family),
            None => self.family.to_owned(),
        }
    }

    /// Whether it is shown for `protocol`.
    pub fn shown_for(&self, protocol: &str) -> bool {
        self.protocol.is_none_or(|only| only == protocol)
    }
}

macro_rules! option {
    (-) => {
        None
    };
    (*) => {
        None
    };
    ($value:literal) => {
        Some($value)
    };
}

macro_rules! label {
    () => {
        None
    };
    ($key:ident = $value:literal) => {
        Some((stringify!($key), $value))
    };
}

macro_rules! kind {
    (counter) => {
        Kind::Counter
    };
    (gauge) => {
        Kind::Gauge
    };
}

/// The list: one row per counter. Generates [`Stats`] (one `u64` field per
/// row), [`Stats::add`] and [`COUNTERS`].
macro_rules! counters {
    ($(
        $field:ident : $kind:ident $family:literal [$($key:ident = $value:literal)?]
            $line:tt $protocol:tt $help:literal
    ),* $(,)?) => {
        /// Live counters of one event loop (or, summed, of the process).
        /// One field per row of [`COUNTERS`], which says what each counts.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $(
                #[doc = concat!(
                    $help, " (`", $family, $("{", stringify!($key), "=\"", $value, "\"}",)? "`)"
                )]
                pub $field: u64,
            )*
            /// Counters a library user registered on a loop (see
            /// `LoopContext::counter`), after the built-in ones.
            pub user: Vec<UserCount>,
            /// Forwarding (`--upstream`): one entry per upstream.
            pub upstreams: Vec<UpstreamCount>,
        }

        impl Stats {
            /// Add another loop's counters (for the process's totals).
            pub fn add(&mut self, other: &Stats) {
                $( self.$field += other.$field; )*
                for theirs in &other.user {
                    match self.user.iter_mut().find(|u| u.name == theirs.name) {
                        Some(ours) => ours.value += theirs.value,
                        None => self.user.push(theirs.clone()),
                    }
                }
                for theirs in &other.upstreams {
                    match self.upstreams.iter_mut().find(|u| u.addr == theirs.addr) {
                        Some(ours) => ours.add(theirs),
                        None => self.upstreams.push(theirs.clone()),
                    }
                }
            }
        }

        /// Every counter, in the order the log line and `/metrics` show them.
        pub const COUNTERS: &[Counter] = &[
            $(
                Counter {
                    field: stringify!($field),
                    kind: kind!($kind),
                    family: $family,
                    label: label!($($key = $value)?),
                    line: option!($line),
                    protocol: option!($protocol),
                    help: $help,
                    get: |s: &Stats| s.$field,
                },
            )*
        ];
    };
}

counters! {
    // field:               kind    family                                     [label]                     log line                only   what it counts
    open:                   gauge   "tcp_reactor_connections_active"           []                          "open"                  *      "Connections open now.",
    accepted:               counter "tcp_reactor_connections_accepted_total"   []                          "accepted"              *      "Connections accepted.",
    closed_ok:              counter "tcp_reactor_connections_closed_total"     [reason = "ok"]             "closed ok"             *      "an orderly end: the peer closed, the protocol was done, or drained",
    closed_aborted:         counter "tcp_reactor_connections_closed_total"     [reason = "aborted"]        " aborted"              *      "reset by the peer between messages with nothing owed: nothing lost, it is how load tools end",
    closed_reset:           counter "tcp_reactor_connections_closed_total"     [reason = "reset"]          " reset"                *      "reset with a reply owed or a request half-received, or another I/O error",
    closed_timeout:         counter "tcp_reactor_connections_closed_total"     [reason = "timeout"]        " timeout"              *      "the idle timeout",
    closed_protocol:        counter "tcp_reactor_connections_closed_total"     [reason = "protocol_error"] " protocol"             *      "the peer broke the protocol",
    closed_forced:          counter "tcp_reactor_connections_closed_total"     [reason = "forced"]         " forced"               *      "cut off by the drain deadline or a second quit signal",
    closed_slow:            counter "tcp_reactor_connections_closed_total"     [reason = "slow_consumer"]  " slow"                 *      "a slow consumer: messages for it piled up unread past the slow-consumer limit",
    closed_no_upstream:     counter "tcp_reactor_connections_closed_total"     [reason = "no_upstream"]    -                       "forward" "forwarding: every upstream tried was refused or timed out",
    messages_dropped:       counter "tcp_reactor_messages_dropped_total"       []                          "messages dropped"      *      "Messages between connections dropped: the receiver had closed (or was closing), or the receiving loop's queue was full.",
    accept_skipped:         counter "tcp_reactor_accept_errors_total"          [kind = "skipped"]          "accept errors skipped" *      "that one connection failed",
    accept_exhausted:       counter "tcp_reactor_accept_errors_total"          [kind = "exhausted"]        " exhausted"            *      "out of descriptors or memory: accepting paused",
    accept_other:           counter "tcp_reactor_accept_errors_total"          [kind = "other"]            " other"                *      "any other error: accepting paused",
    bytes_in:               counter "tcp_reactor_bytes_received_total"         []                          "bytes in"              *      "Bytes read from peers, open connections included.",
    bytes_out:              counter "tcp_reactor_bytes_sent_total"             []                          " out"                  *      "Bytes written to peers, open connections included.",
    tls_handshakes:         counter "tcp_reactor_tls_handshakes_total"         []                          -                       *      "TLS handshakes completed.",
    tls_handshake_failures: counter "tcp_reactor_tls_handshake_failures_total" []                          -                       *      "TLS connections closed before their handshake completed: bad or plain-text input, the handshake timeout, a client that gave up.",
    tls_sni_ignored:        counter "tcp_reactor_tls_sni_ignored_total"        []                          -                       *      "TLS ClientHellos whose server name (SNI) was ignored: an IP address (as wrk sends for https://127.0.0.1/) or no valid DNS name. Logged at debug, not warned about.",
    backpressure_pauses:    counter "tcp_reactor_backpressure_pauses_total"    []                          -                       *      "Times a connection stopped reading because its owed output reached the high watermark.",
    at_limit:               gauge   "tcp_reactor_loops_at_connection_limit"    []                          -                       *      "Event loops that stopped accepting at their share of --max-conns.",
    http_1xx:               counter "tcp_reactor_http_responses_total"         [code = "1xx"]              -                       "http" "informational",
    http_2xx:               counter "tcp_reactor_http_responses_total"         [code = "2xx"]              -                       "http" "success",
    http_3xx:               counter "tcp_reactor_http_responses_total"         [code = "3xx"]              -                       "http" "redirection",
    http_4xx:               counter "tcp_reactor_http_responses_total"         [code = "4xx"]              -                       "http" "client error",
    http_5xx:               counter "tcp_reactor_http_responses_total"         [code = "5xx"]              -                       "http" "server error",
    resp_ping:              counter "tcp_reactor_resp_commands_total"          [command = "ping"]          -                       "resp" "PING",
    resp_echo:              counter "tcp_reactor_resp_commands_total"          [command = "echo"]          -                       "resp" "ECHO",
    resp_quit:              counter "tcp_reactor_resp_commands_total"          [command = "quit"]          -                       "resp" "QUIT",
    resp_other:             counter "tcp_reactor_resp_commands_total"          [command = "other"]         -                       "resp" "unknown commands and errors",
    upstream_connects:      counter "tcp_reactor_upstream_connects_total"      []                          -                       "forward" "Connects to upstreams that succeeded.",
    upstream_refused:       counter "tcp_reactor_upstream_connect_failures_total" [kind = "refused"]       -                       "forward" "nothing listened (ECONNREFUSED)",
    upstream_timed_out:     counter "tcp_reactor_upstream_connect_failures_total" [kind = "timeout"]       -                       "forward" "no answer within --connect-timeout",
    upstream_failed:        counter "tcp_reactor_upstream_connect_failures_total" [kind = "other"]         -                       "forward" "any other error",
    spliced_bytes:          counter "tcp_reactor_spliced_bytes_total"          []                          -                       "forward" "Bytes forwarded with splice(2), kernel to kernel (the rest were copied through user space).",
    access_log_dropped:     counter "tcp_reactor_access_log_dropped_total"     []                          -                       *      "Access-log lines dropped because the writer thread fell behind (never waited for).",
    polls:                  counter "tcp_reactor_loop_polls_total"             []                          -                       *      "Turns of the event loops: poll calls that returned.",
    events:                 counter "tcp_reactor_loop_events_total"            []                          -                       *      "Readiness events the polls returned (events per poll = this / polls).",
}

/// The `# HELP` title of each family with a label; each label and its
/// row's text follow it: `Connections closed, by reason: ok (an orderly
/// end…), aborted (…)`.
#[cfg(any(feature = "metrics", test))]
pub(crate) const FAMILY_TITLES: &[(&str, &str)] = &[
    (
        "tcp_reactor_connections_closed_total",
        "Connections closed, by reason",
    ),
    (
        "tcp_reactor_accept_errors_total",
        "Failed accept calls, by kind",
    ),
    (
        "tcp_reactor_upstream_connect_failures_total",
        "Failed connects to upstreams, by kind",
    ),
    (
        "tcp_reactor_http_responses_total",
        "HTTP responses sent, by status class",
    ),
    (
        "tcp_reactor_resp_commands_total",
        "RESP commands answered, by command",
    ),
];

/// The RESP commands counted by name, in the order of
/// `proto::Report::Resp`'s counts; anything else counts as `other`.
#[cfg(test)]
pub(crate) const RESP_COMMANDS: [&str; 4] = ["ping", "echo", "quit", "other"];

impl Stats {
    /// Count one closed connection.
    pub(crate) fn record_close(&mut self, reason: CloseReason, bytes_in: u64, bytes_out: u64) {
        self.open = self.open.saturating_sub(1);
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        let counter = match reason {
            CloseReason::PeerClosed | CloseReason::Done | CloseReason::Drained => {
                &mut self.closed_ok
            }
            CloseReason::PeerAborted => &mut self.closed_aborted,
            CloseReason::Reset | CloseReason::Io(_) => &mut self.closed_reset,
            CloseReason::IdleTimeout => &mut self.closed_timeout,
            CloseReason::ProtocolError(_) | CloseReason::Stage(_) => &mut self.closed_protocol,
            CloseReason::Forced(_) => &mut self.closed_forced,
            CloseReason::SlowConsumer => &mut self.closed_slow,
            CloseReason::NoUpstream => &mut self.closed_no_upstream,
        };
        *counter += 1;
    }
}

/// One upstream's counts (forwarding), summed over loops like the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamCount {
    /// The upstream.
    pub addr: std::net::SocketAddr,
    /// Loops that consider it up now (0: down everywhere).
    pub up: u64,
    /// Pairs forwarded to it now.
    pub active: u64,
    /// Connects that succeeded: pairs it has taken.
    pub connects: u64,
    /// Connects for a client that were refused.
    pub refused: u64,
    /// Connects for a client that timed out (`--connect-timeout`).
    pub timed_out: u64,
    /// Connects for a client that failed otherwise.
    pub failed_other: u64,
    /// Bytes from clients to it, open pairs included.
    pub bytes_up: u64,
    /// Bytes from it to clients, open pairs included.
    pub bytes_down: u64,
    /// Time its successful connects took, in total (µs).
    pub connect_us: u64,
}

impl UpstreamCount {
    /// Another loop's counts for the same upstream.
    pub fn add(&mut self, other: &UpstreamCount) {
        self.up += other.up;
        self.active += other.active;
        self.connects += other.connects;
        self.refused += other.refused;
        self.timed_out += other.timed_out;
        self.failed_other += other.failed_other;
        self.bytes_up += other.bytes_up;
        self.bytes_down += other.bytes_down;
        self.connect_us += other.connect_us;
    }
}

/// A row of [`UPSTREAM_COUNTERS`]: one sample per upstream, labelled
/// `upstream="IP:PORT"` (and `label`, in a family of several rows).
#[derive(Clone, Copy, Debug)]
pub struct UpstreamRow {
    /// The Prometheus family; a family's rows are next to each other.
    pub family: &'static str,
    /// A second label, for a family of several rows.
    pub label: Option<(&'static str, &'static str)>,
    /// Counter or gauge.
    pub kind: Kind,
    /// `# HELP` (the family's first row's).
    pub help: &'static str,
    /// Read it (`f64` for the one in seconds; counts print as integers).
    pub get: fn(&UpstreamCount) -> f64,
}

/// The per-upstream families `/metrics` shows, one row each.
pub const UPSTREAM_COUNTERS: &[UpstreamRow] = &[
    UpstreamRow { family: "tcp_reactor_upstream_up", label: None, kind: Kind::Gauge, help: "Event loops that consider the upstream up (0: down everywhere).", get: |u| u.up as f64 },
    UpstreamRow { family: "tcp_reactor_upstream_active", label: None, kind: Kind::Gauge, help: "Connections forwarded to the upstream now.", get: |u| u.active as f64 },
    UpstreamRow { family: "tcp_reactor_upstream_forwarded_total", label: None, kind: Kind::Counter, help: "Connects to the upstream that succeeded.", get: |u| u.connects as f64 },
    UpstreamRow { family: "tcp_reactor_upstream_failed_connects_total", label: Some(("kind", "refused")), kind: Kind::Counter, help: "Connects to the upstream for a client that failed, by kind: refused, timeout (--connect-timeout), other. Health checks are not counted.", get: |u| u.refused as f64 },
    UpstreamRow { family: "tcp_reactor_upstream_failed_connects_total", label: Some(("kind", "timeout")), kind: Kind::Counter, help: "", get: |u| u.timed_out as f64 },
    UpstreamRow { family: "tcp_reactor_upstream_failed_connects_total", label: Some(("kind", "other")), kind: Kind::Counter, help: "", get: |u| u.failed_other as f64 },
    UpstreamRow { family: "tcp_reactor_upstream_sent_bytes_total", label: None, kind: Kind::Counter, help: "Bytes from clients to the upstream, open connections included.", get: |u| u.bytes_up as f64 },
    UpstreamRow { family: "tcp_reactor_upstream_received_bytes_total", label: None, kind: Kind::Counter, help: "Bytes from the upstream to clients, open connections included.", get: |u| u.bytes_down as f64 },
    UpstreamRow { family: "tcp_reactor_upstream_connect_seconds_total", label: None, kind: Kind::Counter, help: "Time the successful connects to the upstream took, in total (divide by forwarded_total for the mean).", get: |u| u.connect_us as f64 / 1e6 },
];

/// One counter a library user registered, with its value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserCount {
    /// Its Prometheus name (a counter: `…_total` by convention).
    pub name: &'static str,
    /// What it counts (`# HELP`).
    pub help: &'static str,
    /// How many, so far.
    pub value: u64,
}

/// Whether `name` is a valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(crate) fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The `SIGUSR1` line and the end of each drain line: every row of
/// [`COUNTERS`] with words for the log, `open 0, accepted 1, closed ok 1
/// aborted 0 …, bytes in 6 out 6`.
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for counter in COUNTERS {
            let Some(words) = counter.line else {
                continue;
            };
            let sep = if first || words.starts_with(' ') {
                ""
            } else {
                ", "
            };
            write!(f, "{sep}{words} {}", (counter.get)(self))?;
            first = false;
        }
        for user in &self.user {
            write!(f, ", {} {}", user.name, user.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io;

    use super::*;
    use crate::base::close::ForceCause;

    #[test]
    fn the_rows_of_a_family_are_together_and_labeled_ones_have_a_title() {
        let mut seen = HashSet::new();
        let mut previous = "";
        for c in COUNTERS {
            if c.family != previous {
                assert!(seen.insert(c.family), "{} is split in two", c.family);
                previous = c.family;
            }
            let title = FAMILY_TITLES.iter().any(|(f, _)| *f == c.family);
            assert_eq!(title, c.label.is_some(), "{}: title iff labeled", c.field);
            assert!(c.family.starts_with("tcp_reactor_"), "{}", c.family);
            let counter = c.kind == Kind::Counter;
            assert_eq!(counter, c.family.ends_with("_total"), "{}", c.family);
        }
        for (family, _) in FAMILY_TITLES {
            assert!(seen.contains(family), "a title for no family: {family}");
        }
    }

    #[test]
    fn each_field_is_read_by_its_own_row() {
        let mut stats = Stats::default();
        stats.add(&Stats {
            closed_slow: 7,
            ..Stats::default()
        });
        let read: Vec<&str> = COUNTERS
            .iter()
            .filter(|c| (c.get)(&stats) == 7)
            .map(|c| c.field)
            .collect();
        assert_eq!(read, ["closed_slow"]);
    }

    #[test]
    fn every_close_reason_moves_exactly_one_closed_counter() {
        let reasons = [
            CloseReason::PeerClosed,
            CloseReason::Done,
            CloseReason::ProtocolError("x"),
            CloseReason::Drained,
            CloseReason::PeerAborted,
            CloseReason::Reset,
            CloseReason::Io(io::ErrorKind::Other),
            CloseReason::IdleTimeout,
            CloseReason::Forced(ForceCause::DrainDeadline),
            CloseReason::SlowConsumer,
            CloseReason::NoUpstream,
        ];
        let closed = |s: &Stats| -> Vec<u64> {
            COUNTERS
                .iter()
                .filter(|c| c.family == "tcp_reactor_connections_closed_total")
                .map(|c| (c.get)(s))
                .collect()
        };
        for reason in reasons {
            let mut stats = Stats::default();
            stats.record_close(reason, 0, 0);
            assert_eq!(closed(&stats).iter().sum::<u64>(), 1, "{reason}");
        }
    }

    #[test]
    fn the_log_line_groups_a_family_and_names_every_logged_row() {
        let stats = Stats {
            open: 1,
            accepted: 2,
            closed_ok: 1,
            closed_slow: 3,
            messages_dropped: 4,
            ..Stats::default()
        };
        let line = stats.to_string();
        assert!(
            line.starts_with("open 1, accepted 2, closed ok 1 aborted 0 reset 0 "),
            "{line}"
        );
        assert!(line.contains(" slow 3, messages dropped 4, "), "{line}");
        assert!(line.ends_with(", bytes in 0 out 0"), "{line}");
        for c in COUNTERS {
            if let Some(words) = c.line {
                assert!(line.contains(words), "{words} missing from {line}");
            }
        }
    }
}
