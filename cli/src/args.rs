//! The command line: flags in, a [`Config`] (or an exit) out.
//!
//! Its own module so it is unit-tested without starting anything, and
//! `main.rs` stays a few lines. Usage errors are one line on stderr and
//! exit code 2.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Parser, ValueEnum};

use tcp_reactor::forward::upstream_file::FileError;
use tcp_reactor::forward::{Balance, Forward, Splice, UpstreamFile};
use tcp_reactor::io::proxy::{Announce, Cidr, ProxyMode};
use tcp_reactor::io::tls::TlsConfig;
use tcp_reactor::obs::access_log::Format;
use tcp_reactor::proto::HttpConfig;
use tcp_reactor::Config;

/// Exit code for a bad flag or value.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the process cannot start (a TLS file it cannot use, say).
pub const EXIT_START: u8 = 1;

/// Serve a TCP protocol on one single-threaded mio event loop, with graceful drain.
///
/// Exit codes: 0 clean shutdown (every connection drained), 1 could not
/// start (e.g. bind failed) or the event loop failed, 2 bad command line,
/// 3 shutdown was forced (drain deadline passed, or a second quit signal).
#[derive(Debug, Parser)]
#[command(name = "tcp-reactor", version, about, long_about)]
pub struct Args {
    /// Address to listen on, IPv4 or IPv6 (port 0 picks a free port)
    /// [default: 127.0.0.1:8000]. Not allowed with inherited sockets
    /// (systemd socket activation).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Event loops to run, one thread each (0 = one per available core).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,

    /// Seconds a new process started by SIGUSR2 may take to become ready
    /// before the upgrade is abandoned (and it is killed). Must be above 0:
    /// a hung new process would otherwise keep the listening sockets open
    /// for good.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = secs, allow_negative_numbers = true)]
    pub upgrade_timeout: f64,

    /// Require a PROXY protocol header (sent by a load balancer such as
    /// HAProxy) at the start of every connection: v1, v2, or either.
    #[arg(long, value_enum, value_name = "VERSION", default_value_t = ProxyArg::Off)]
    pub proxy_protocol: ProxyArg,

    /// Peers allowed to send PROXY headers; connections from others are
    /// closed [default: 127.0.0.0/8,::1/128].
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    pub proxy_from: Vec<Cidr>,

    /// Seconds a connection may take to send its whole PROXY header
    /// (0 = no limit; the idle timeout still applies).
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = secs, allow_negative_numbers = true)]
    pub proxy_timeout: f64,

    /// Serve TLS on every connection with this PEM certificate chain (leaf
    /// first). Needs --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key for --tls-cert (PEM: PKCS#8, SEC1 EC or PKCS#1 RSA).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Seconds a TLS handshake may take from accept before the connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = secs, allow_negative_numbers = true)]
    pub tls_handshake_timeout: f64,

    /// Protocol to serve.
    #[arg(long, value_enum, default_value_t = ProtocolName::Echo)]
    pub protocol: ProtocolName,

    /// Forward every connection to one of these upstreams (IP:PORT, comma
    /// separated or the flag repeated): a TCP proxy and load balancer.
    /// Refuses --protocol.
    #[arg(long, value_name = "ADDR[,ADDR…]", value_delimiter = ',', conflicts_with = "protocol", value_parser = upstream_addr, group = "forwarding")]
    pub upstream: Vec<SocketAddr>,

    /// Like --upstream, from a file: one IP:PORT a line (`#` comments).
    /// SIGHUP re-reads it: added upstreams take new connections, removed
    /// ones keep their live connections; a bad file keeps the old list.
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "protocol",
        group = "forwarding"
    )]
    pub upstream_file: Option<PathBuf>,

    /// How --upstream picks each connection's upstream.
    #[arg(long, value_name = "HOW", default_value = "least-conn", requires = "forwarding", value_parser = balance_names())]
    pub balance: Balance,

    /// Seconds a connect to an upstream may take before it counts as failed.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = secs, requires = "forwarding", allow_negative_numbers = true)]
    pub connect_timeout: f64,

    /// Further upstreams a connection tries after a refused or timed-out connect.
    #[arg(long, value_name = "N", default_value_t = Forward::DEFAULT_RETRIES, requires = "forwarding")]
    pub retries: usize,

    /// Seconds an upstream whose connect failed is left out of the choice.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = secs, requires = "forwarding", allow_negative_numbers = true)]
    pub upstream_down_time: f64,

    /// Seconds between active health checks: a TCP connect to every
    /// upstream, which marks it up or down at once (0 = off: a down
    /// upstream is tried again after --upstream-down-time).
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = secs, requires = "forwarding", allow_negative_numbers = true)]
    pub health_interval: f64,

    /// Send the upstream a PROXY protocol header (v1 or v2) naming the
    /// client, before its first byte (HAProxy's send-proxy / send-proxy-v2).
    #[arg(long, value_name = "VERSION", requires = "forwarding", value_parser = announce_names())]
    pub upstream_send_proxy: Option<Announce>,

    /// When --upstream moves bytes with splice(2): `auto` (bulk data
    /// spliced, small messages copied), `always` or `never`.
    #[arg(long, value_name = "WHEN", default_value = "auto", requires = "forwarding", value_parser = splice_names())]
    pub splice: Splice,

    /// Seconds a graceful shutdown may take before connections are
    /// force-closed (0 = no limit; a second quit signal still forces).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = secs, allow_negative_numbers = true)]
    pub drain_timeout: f64,

    /// Seconds without traffic either way before a connection is closed (0 = no limit).
    #[arg(long, value_name = "SECS", default_value_t = 300.0, value_parser = secs, allow_negative_numbers = true)]
    pub idle_timeout: f64,

    /// Stop reading from a connection once this many output bytes are owed.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024, allow_negative_numbers = true)]
    pub write_high_watermark: usize,

    /// Read again once owed output has drained to this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024, allow_negative_numbers = true)]
    pub write_low_watermark: usize,

    /// Most connections served at once (capped by RLIMIT_NOFILE less a reserve).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..), allow_negative_numbers = true)]
    pub max_conns: u64,

    /// Listen backlog: connections the kernel queues before we accept them.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(i32).range(1..), allow_negative_numbers = true)]
    pub backlog: i32,

    /// Largest request body (http) or bulk string and array (resp) accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = HttpConfig::DEFAULT_MAX_BODY, allow_negative_numbers = true)]
    pub max_body: u64,

    /// Seconds an HTTP request head may take to arrive, from its first byte (0 = no limit).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = secs, allow_negative_numbers = true)]
    pub header_timeout: f64,

    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    /// No authentication: bind loopback or a private interface.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Write an access log (one line per HTTP request, or per finished
    /// echo/resp connection) to PATH, or `-` for standard output. SIGHUP
    /// reopens it.
    #[arg(long, value_name = "PATH|-")]
    pub access_log: Option<String>,

    /// The access log's lines: `combined` (nginx's default format, which
    /// goaccess and other log tools read; HTTP requests only) or `json`
    /// (one object per line, for every protocol) [default: combined with
    /// --protocol http, json otherwise].
    #[arg(long, value_name = "FORMAT", requires = "access_log", value_parser = format_names())]
    pub access_log_format: Option<Format>,

    /// Record the loops' timeline (polls, dispatch, a span per connection
    /// state) as Chrome trace-event JSON in FILE, for Perfetto or
    /// chrome://tracing. Written when the loops end; at most 16 MiB per loop.
    #[arg(long, value_name = "FILE")]
    pub trace_events: Option<String>,
}

/// The PROXY protocol versions `--proxy-protocol` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProxyArg {
    /// No PROXY header.
    Off,
    /// PROXY protocol v1 (text), HAProxy's `send-proxy`.
    V1,
    /// PROXY protocol v2 (binary), HAProxy's `send-proxy-v2`.
    V2,
    /// Either version; a header is still required.
    Any,
}

impl From<ProxyArg> for ProxyMode {
    fn from(arg: ProxyArg) -> Self {
        match arg {
            ProxyArg::Off => ProxyMode::Off,
            ProxyArg::V1 => ProxyMode::V1,
            ProxyArg::V2 => ProxyMode::V2,
            ProxyArg::Any => ProxyMode::Any,
        }
    }
}

/// The protocols `--protocol` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtocolName {
    /// Every byte received is sent back, in order.
    Echo,
    /// HTTP/1.1: `GET`/`HEAD` any path, `POST /echo`; keep-alive, pipelining.
    Http,
    /// RESP2 (Redis): `PING`, `ECHO`, `QUIT`, inline or multibulk, pipelined.
    Resp,
}

/// `--access-log-format`'s values, from the library's one list of them.
fn format_names() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Format::NAMES.map(|(_, name)| name))
        .try_map(|name| name.parse::<Format>())
}

fn secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(0.0..=1e9).contains(&v) {
        return Err(format!("'{s}' is out of range (0 to 1e9 seconds)"));
    }
    Ok(v)
}

/// A `*-timeout` flag's seconds: 0 means no limit, for every such flag
/// (`--upgrade-timeout` refuses 0 instead, see [`Args::to_config`]).
/// An `--upstream` address: IP and port, v4 or v6 (`[::1]:80`).
fn upstream_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP:PORT address (IPv6 as [::1]:80)"))
}

fn balance_names() -> impl clap::builder::TypedValueParser<Value = Balance> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Balance::NAMES).try_map(|name| name.parse::<Balance>())
}

fn announce_names() -> impl clap::builder::TypedValueParser<Value = Announce> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Announce::NAMES)
        .try_map(|name| name.parse::<Announce>())
}

fn splice_names() -> impl clap::builder::TypedValueParser<Value = Splice> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Splice::NAMES).try_map(|name| name.parse::<Splice>())
}

fn limit(secs: f64) -> Option<Duration> {
    (secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// What the process should do instead of serving.
#[derive(Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code.
    pub code: u8,
    /// Text to print.
    pub message: String,
    /// Print on stdout (help, version) rather than stderr.
    pub stdout: bool,
}

impl Args {
    /// Turn parsed flags into a server configuration, checking how they fit together.
    pub(crate) fn to_config(&self) -> Result<Config, String> {
        if self.write_low_watermark > self.write_high_watermark {
            return Err(format!(
                "--write-low-watermark ({}) must not exceed --write-high-watermark ({})",
                self.write_low_watermark, self.write_high_watermark
            ));
        }
        if self.write_high_watermark == 0 {
            return Err("--write-high-watermark must be at least 1".into());
        }
        if self.upgrade_timeout == 0.0 {
            return Err(
                "--upgrade-timeout must be above 0: without a deadline a new process \
                 that hangs is never stopped and keeps the listening sockets open"
                    .into(),
            );
        }
        let mut config = Config {
            listen: self.listen.unwrap_or(Config::default().listen),
            backlog: self.backlog,
            drain_timeout: limit(self.drain_timeout),
            max_conns: usize::try_from(self.max_conns).unwrap_or(usize::MAX),
            ..Config::default()
        };
        config.limits.idle_timeout = limit(self.idle_timeout);
        config.limits.write_high_watermark = self.write_high_watermark;
        config.limits.write_low_watermark = self.write_low_watermark;
        config.stages.proxy = self.proxy_protocol.into();
        if !self.proxy_from.is_empty() {
            config.stages.proxy_from = self.proxy_from.clone();
        }
        config.limits.proxy_timeout = limit(self.proxy_timeout);
        Ok(config)
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub struct Invocation {
    /// The protocol to serve.
    pub protocol: ProtocolName,
    /// `--listen` was given explicitly.
    pub listen_given: bool,
    /// Event loops to run (0 = one per core).
    pub threads: usize,
    /// How long an upgraded process may take to become ready.
    pub upgrade_timeout: Duration,
    /// The server configuration.
    pub config: Config,
    /// `--max-body`: largest HTTP body, RESP bulk string or array.
    pub max_body: u64,
    /// `--header-timeout` (`None` when 0): longest an HTTP request head may take.
    pub header_timeout: Option<Duration>,
    /// `--metrics`: where to serve `GET /metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--access-log`: a path, or `-` for standard output.
    pub access_log: Option<String>,
    /// `--access-log-format`, or the protocol's default.
    pub access_log_format: Format,
    /// `--trace-events`: where to write the Chrome trace-event JSON.
    pub trace_events: Option<String>,
    /// `--upstream` and its companions: forward instead of serving a protocol.
    pub forward: Option<Forward>,
}

/// Parse a command line (program name first).
pub fn parse<I, T>(args: I) -> Result<Invocation, Exit>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = Args::try_parse_from(args).map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit {
            code: 0,
            message: e.to_string(),
            stdout: true,
        },
        _ => Exit {
            code: EXIT_USAGE,
            message: one_line(&e.to_string()),
            stdout: false,
        },
    })?;
    let mut config = args.to_config().map_err(|msg| Exit {
        code: EXIT_USAGE,
        message: format!("error: {msg}"),
        stdout: false,
    })?;
    let access_log_format = match (args.access_log_format, args.protocol) {
        (Some(Format::Combined), ProtocolName::Echo | ProtocolName::Resp) => {
            return Err(Exit {
                code: EXIT_USAGE,
                message: "error: --access-log-format combined is nginx's format for HTTP \
                          requests; echo and resp connections are logged as json"
                    .into(),
                stdout: false,
            })
        }
        (Some(format), _) => format,
        (None, ProtocolName::Http) => Format::Combined,
        (None, ProtocolName::Echo | ProtocolName::Resp) => Format::Json,
    };
    let file = match &args.upstream_file {
        Some(path) => Some(UpstreamFile::load(path).map_err(|e| Exit {
            // Unreadable is the system's answer (1); a bad list is ours (2).
            code: match e {
                FileError::Unreadable(..) => EXIT_START,
                _ => EXIT_USAGE,
            },
            message: format!("error: --upstream-file: {e}"),
            stdout: false,
        })?),
        None => None,
    };
    let upstreams = match &file {
        Some(file) => file.list(),
        None => args.upstream.clone(),
    };
    let forward = (!upstreams.is_empty()).then(|| Forward {
        upstreams,
        file: file.map(std::sync::Arc::new),
        balance: args.balance,
        connect_timeout: limit(args.connect_timeout).unwrap_or(Forward::DEFAULT_CONNECT_TIMEOUT),
        retries: args.retries,
        down_time: Duration::from_secs_f64(args.upstream_down_time),
        splice: args.splice,
        send_proxy: args.upstream_send_proxy,
        health_interval: limit(args.health_interval),
    });
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        // HTTP says so in ALPN; echo and RESP have no registered name.
        // A proxy does not know what it forwards: it offers none.
        let alpn: &[&[u8]] = match (&forward, args.protocol) {
            (Some(_), _) => &[],
            (None, ProtocolName::Http) => &[b"http/1.1"],
            (None, ProtocolName::Echo | ProtocolName::Resp) => &[],
        };
        let timeout = limit(args.tls_handshake_timeout);
        config.stages.tls = Some(TlsConfig::load(cert, key, alpn, timeout).map_err(|e| Exit {
            code: EXIT_START,
            message: format!("error: {e}"),
            stdout: false,
        })?);
    }
    Ok(Invocation {
        protocol: args.protocol,
        listen_given: args.listen.is_some(),
        threads: args.threads,
        upgrade_timeout: Duration::from_secs_f64(args.upgrade_timeout),
        config,
        max_body: args.max_body,
        header_timeout: limit(args.header_timeout),
        metrics: args.metrics,
        access_log: args.access_log,
        access_log_format,
        trace_events: args.trace_events,
        forward,
    })
}

/// clap's errors carry usage and a hint on later lines; keep the first.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("error: bad command line");
    // "… required arguments were not provided:" names them on the next line.
    match lines.next() {
        Some(next) if first.ends_with(':') => format!("{first} {next} (try --help)"),
        _ => format!("{first} (try --help)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> Invocation {
        parse(std::iter::once("tcp-reactor").chain(args.iter().copied())).unwrap()
    }

    fn parse_err(args: &[&str]) -> Exit {
        parse(std::iter::once("tcp-reactor").chain(args.iter().copied())).unwrap_err()
    }

    #[test]
    fn protocol_offers_exactly_the_protocols_the_library_ships() {
        let offered: Vec<String> = ProtocolName::value_variants()
            .iter()
            .filter_map(|p| p.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(offered, tcp_reactor::proto::BUNDLED);
    }

    #[test]
    fn no_flags_serve_echo_on_loopback_8000() {
        let inv = parse_ok(&[]);
        assert_eq!(inv.protocol, ProtocolName::Echo);
        assert_eq!(inv.config.listen, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(inv.config.drain_timeout, Some(Duration::from_secs(10)));
        assert_eq!(
            inv.config.limits.idle_timeout,
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn flags_reach_the_config() {
        let inv = parse_ok(&[
            "--listen",
            "[::1]:0",
            "--drain-timeout",
            "1.5",
            "--idle-timeout",
            "0",
            "--max-conns",
            "10",
        ]);
        assert_eq!(inv.config.listen, "[::1]:0".parse().unwrap());
        assert_eq!(inv.config.drain_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(inv.config.limits.idle_timeout, None);
        assert_eq!(inv.config.max_conns, 10);
    }

    #[test]
    fn a_bad_flag_is_one_line_naming_it_with_code_2() {
        let exit = parse_err(&["--frobnicate"]);
        assert_eq!(exit.code, 2);
        assert!(exit.message.contains("--frobnicate"), "{}", exit.message);
        assert_eq!(exit.message.lines().count(), 1, "{}", exit.message);
    }

    #[test]
    fn a_bad_value_is_one_line_naming_the_flag_with_code_2() {
        for args in [
            &["--listen", "nonsense"][..],
            &["--drain-timeout", "soon"],
            &["--drain-timeout", "-1"],
            &["--max-conns", "0"],
            &[
                "--write-low-watermark",
                "100",
                "--write-high-watermark",
                "10",
            ],
        ] {
            let exit = parse_err(args);
            assert_eq!(exit.code, 2, "{args:?}");
            assert!(exit.message.contains(args[0]), "{args:?}: {}", exit.message);
            assert_eq!(exit.message.lines().count(), 1, "{}", exit.message);
        }
    }

    #[test]
    fn protocols_and_their_limits_have_defaults_and_flags() {
        let inv = parse_ok(&[]);
        assert_eq!(inv.max_body, 1024 * 1024);
        assert_eq!(inv.header_timeout, Some(Duration::from_secs(10)));
        let inv = parse_ok(&[
            "--protocol",
            "http",
            "--max-body",
            "4096",
            "--header-timeout",
            "2.5",
        ]);
        assert_eq!(inv.protocol, ProtocolName::Http);
        assert_eq!(inv.max_body, 4096);
        assert_eq!(inv.header_timeout, Some(Duration::from_millis(2500)));
        let inv = parse_ok(&[
            "--protocol",
            "resp",
            "--max-body",
            "0",
            "--header-timeout",
            "0",
        ]);
        assert_eq!(inv.protocol, ProtocolName::Resp);
        assert_eq!(inv.max_body, 0);
        assert_eq!(inv.header_timeout, None);
    }

    #[test]
    fn bad_protocol_limits_are_one_line_naming_the_flag_with_code_2() {
        for args in [
            &["--protocol", "gopher"][..],
            &["--max-body", "-1"],
            &["--max-body", "lots"],
            &["--header-timeout", "-1"],
            &["--header-timeout", "soon"],
        ] {
            let exit = parse_err(args);
            assert_eq!(exit.code, 2, "{args:?}");
            assert!(exit.message.contains(args[0]), "{args:?}: {}", exit.message);
            assert_eq!(exit.message.lines().count(), 1, "{}", exit.message);
        }
    }

    #[test]
    fn zero_means_no_limit_for_every_timeout_flag_but_upgrade() {
        let inv = parse_ok(&[
            "--drain-timeout",
            "0",
            "--idle-timeout",
            "0",
            "--header-timeout",
            "0",
            "--proxy-timeout",
            "0",
        ]);
        assert_eq!(inv.config.drain_timeout, None);
        assert_eq!(inv.config.limits.idle_timeout, None);
        assert_eq!(inv.header_timeout, None);
        assert_eq!(inv.config.limits.proxy_timeout, None);
        let inv = parse_ok(&["--proxy-timeout", "0.25"]);
        assert_eq!(
            inv.config.limits.proxy_timeout,
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn upgrade_timeout_0_is_refused_in_one_line_with_code_2() {
        for zero in ["0", "0.0"] {
            let exit = parse_err(&["--upgrade-timeout", zero]);
            assert_eq!(exit.code, 2);
            assert!(
                exit.message.contains("--upgrade-timeout"),
                "{}",
                exit.message
            );
            assert_eq!(exit.message.lines().count(), 1, "{}", exit.message);
        }
        let inv = parse_ok(&["--upgrade-timeout", "0.5"]);
        assert_eq!(inv.upgrade_timeout, Duration::from_millis(500));
    }

    #[test]
    fn help_and_version_exit_0_on_stdout() {
        for flag in ["--help", "--version"] {
            let exit = parse_err(&[flag]);
            assert_eq!(exit.code, 0);
            assert!(exit.stdout);
        }
    }
}
