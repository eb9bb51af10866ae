//! The binary's log format: env_logger's usual line, plus the process id
//! while two processes write to the same journal (see
//! `tcp_reactor::process::logging`: an upgrade turns it on).

/// Set up logging from `RUST_LOG` (default `info`) with this module's format.
pub fn init() {
    use std::io::Write;

    // mio's own trace lines print raw tokens (`Token(18446744073709551599)`)
    // and say nothing our trace does not: keep mio at info unless RUST_LOG
    // names it (`RUST_LOG=trace,mio=trace`).
    // rustls warns once per handshake about a client's server name it
    // ignores (an IP address: `wrk https://127.0.0.1/` sends one every
    // time), a flood under load. The module's warnings on a server are all
    // about what a client sent as SNI; the TLS stage counts the names that
    // are ignored and logs them at debug (`tls::client_hello`), and a
    // duplicate name fails the handshake (logged at debug too), so rustls'
    // own line stays off unless RUST_LOG names its module.
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(log::LevelFilter::Info)
        .filter_module("mio", log::LevelFilter::Info)
        .filter_module("rustls::msgs::handshake", log::LevelFilter::Error);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    if let Ok(style) = std::env::var("RUST_LOG_STYLE") {
        builder.parse_write_style(&style);
    }
    builder
        .format(|buf, record| {
            let level = buf.default_level_style(record.level());
            let pid = if tcp_reactor::process::logging::pid_shown() {
                format!("pid {} ", std::process::id())
            } else {
                String::new()
            };
            writeln!(
                buf,
                "[{} {level}{:<5}{level:#} {pid}{}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .init();
}
