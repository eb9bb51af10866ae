//! Prometheus text exposition format 0.0.4, written by hand: a handful of
//! families do not need a client library.
//!
//! Names follow the Prometheus conventions (`promtool check metrics`
//! agrees): a `tcp_reactor_` prefix, counters end in `_total`, units are
//! base units in the name (`_bytes`, `_seconds`), labels have few values.
//! Every family has `# HELP` and `# TYPE` before its samples.

use std::fmt::Write;

use crate::base::counters::{Stats, COUNTERS, FAMILY_TITLES, UPSTREAM_COUNTERS};
use crate::obs::metrics::process::ProcessInfo;

/// The media type of what [`render`] writes.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything one scrape reports.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every loop's counters, summed.
    pub loops: Stats,
    /// How many event loops run.
    pub loop_count: usize,
    /// The protocol served (`echo`, `http`, `resp`): selects the request family.
    pub protocol: &'static str,
    /// A graceful drain is under way (or the process handed over to an upgrade).
    pub draining: bool,
    /// Connections the kernel has completed but no loop has accepted yet
    /// (the listen queue), when it can be read.
    pub listen_queue: Option<u64>,
    /// Upgrades started by `SIGUSR2`.
    pub upgrades_started: u64,
    /// Upgrades whose new process became ready (and took over).
    pub upgrades_completed: u64,
    /// Upgrades abandoned: the new process failed or timed out.
    pub upgrades_failed: u64,
    /// The `process_*` readings.
    pub process: ProcessInfo,
}

/// Write `snapshot` as Prometheus text into `out`.
pub fn render(snapshot: &Snapshot, out: &mut String) {
    let mut w = Writer(out);
    w.loop_counters(&snapshot.loops, snapshot.protocol);
    if let Some(queue) = snapshot.listen_queue {
        w.gauge(
            "tcp_reactor_listen_queue_connections",
            "Connections waiting in the listen queue to be accepted (for example at --max-conns).",
            &[("", queue)],
        );
    }
    w.gauge(
        "tcp_reactor_draining",
        "1 while a graceful drain is under way.",
        &[("", u64::from(snapshot.draining))],
    );
    w.counter_labeled(
        "tcp_reactor_upgrades_total",
        "Zero-downtime upgrades (SIGUSR2), by result: started, completed (the new process took over), failed.",
        "result",
        &[
            ("started", snapshot.upgrades_started),
            ("completed", snapshot.upgrades_completed),
            ("failed", snapshot.upgrades_failed),
        ],
    );
    w.gauge(
        "tcp_reactor_loops",
        "Event loops (threads) serving connections.",
        &[("", snapshot.loop_count as u64)],
    );
    let p = &snapshot.process;
    w.counter_f64(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    w.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        &[("", p.resident_memory_bytes)],
    );
    w.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        &[("", p.virtual_memory_bytes)],
    );
    w.gauge(
        "process_open_fds",
        "Number of open file descriptors.",
        &[("", p.open_fds)],
    );
    w.gauge(
        "process_max_fds",
        "Maximum number of open file descriptors.",
        &[("", p.max_fds)],
    );
    w.gauge_f64(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    );
}

struct Writer<'a>(&'a mut String);

impl Writer<'_> {
    /// Every row of [`COUNTERS`] shown for `protocol`: a family's
    /// `# HELP`/`# TYPE` before its first sample.
    fn loop_counters(&mut self, stats: &Stats, protocol: &str) {
        let shown = || COUNTERS.iter().filter(|c| c.shown_for(protocol));
        let mut family = "";
        for counter in shown() {
            if counter.family != family {
                family = counter.family;
                let help = match FAMILY_TITLES.iter().find(|(f, _)| *f == family) {
                    Some((_, title)) => {
                        let labels: Vec<String> = shown()
                            .filter(|c| c.family == family)
                            .filter_map(|c| {
                                c.label.map(|(_, value)| format!("{value} ({})", c.help))
                            })
                            .collect();
                        format!("{title}: {}.", labels.join(", "))
                    }
                    None => counter.help.to_owned(),
                };
                self.head(family, &help, counter.kind.name());
            }
            let _ = writeln!(self.0, "{} {}", counter.sample_name(), (counter.get)(stats));
        }
        // Forwarding: one sample per upstream in each family.
        if !stats.upstreams.is_empty() {
            let mut family = "";
            for row in UPSTREAM_COUNTERS {
                if row.family != family {
                    family = row.family;
                    self.head(family, row.help, row.kind.name());
                }
                let extra = row
                    .label
                    .map(|(k, v)| format!(",{k}=\"{v}\""))
                    .unwrap_or_default();
                for u in &stats.upstreams {
                    let value = (row.get)(u);
                    let _ = writeln!(self.0, "{family}{{upstream=\"{}\"{extra}}} {value}", u.addr);
                }
            }
        }
        // A library user's own, registered on the loops (summed over them).
        for user in &stats.user {
            self.head(user.name, user.help, "counter");
            let _ = writeln!(self.0, "{} {}", user.name, user.value);
        }
    }

    fn head(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: &[(&str, u64)]) {
        self.head(name, help, "gauge");
        let _ = writeln!(self.0, "{name} {}", value[0].1);
    }

    fn counter_labeled(&mut self, name: &str, help: &str, label: &str, samples: &[(&str, u64)]) {
        self.head(name, help, "counter");
        for (value, n) in samples {
            let _ = writeln!(self.0, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }

    fn counter_f64(&mut self, name: &str, help: &str, value: f64) {
        self.head(name, help, "counter");
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn gauge_f64(&mut self, name: &str, help: &str, value: f64) {
        self.head(name, help, "gauge");
        let _ = writeln!(self.0, "{name} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let mut snapshot = Snapshot {
            protocol: "http",
            ..Snapshot::default()
        };
        snapshot.loops.accepted = 3;
        snapshot.loops.closed_reset = 1;
        snapshot.loops.http_2xx = 7;
        let mut out = String::new();
        render(&snapshot, &mut out);
        assert!(out.contains("tcp_reactor_connections_accepted_total 3\n"));
        assert!(out.contains("tcp_reactor_connections_closed_total{reason=\"reset\"} 1\n"));
        assert!(out.contains("tcp_reactor_http_responses_total{code=\"2xx\"} 7\n"));
        let mut declared = std::collections::HashSet::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "{name} sampled before its # TYPE");
            }
        }
    }
}
