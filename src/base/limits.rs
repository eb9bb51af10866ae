//! Bounds and timeouts every connection obeys.

use std::time::Duration;

/// Bounds and timeouts a connection obeys. Built once from the config.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Stop reading when this many output bytes are owed.
    pub write_high_watermark: usize,
    /// Read again once owed output has drained to this many bytes.
    pub write_low_watermark: usize,
    /// Most unconsumed input (a partial frame) a protocol may leave behind.
    pub max_pending_input: usize,
    /// Close after this long without traffic in either direction.
    pub idle_timeout: Option<Duration>,
    /// After our FIN, how long to wait for more input (or the peer's FIN)
    /// before closing anyway.
    pub linger_timeout: Duration,
    /// After our FIN, the longest we keep reading and discarding in all.
    pub linger_max: Duration,
    /// Fairness: most bytes read per connection per turn of the loop.
    pub read_budget: usize,
    /// When a drain starts, how long a connection that has not sent payload
    /// yet may take to send its first input (which is then answered).
    pub drain_silent_grace: Duration,
    /// How long a connection may take to send its whole PROXY header
    /// (`None`: no limit of its own; the idle timeout still applies).
    pub proxy_timeout: Option<Duration>,
    /// Most output a connection may owe after a message from another
    /// connection was framed into it; past it, it is closed as a
    /// [`CloseReason::SlowConsumer`](crate::base::close::CloseReason::SlowConsumer) (see [`crate::mailbox`]). Replies to
    /// its own input are bounded by the watermarks instead (reading stops).
    pub slow_consumer_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            write_high_watermark: 64 * 1024,
            write_low_watermark: 16 * 1024,
            max_pending_input: 64 * 1024,
            idle_timeout: Some(Duration::from_secs(300)),
            linger_timeout: Duration::from_secs(5),
            linger_max: Duration::from_secs(30),
            read_budget: 256 * 1024,
            drain_silent_grace: Duration::from_secs(1),
            proxy_timeout: Some(Duration::from_secs(5)),
            slow_consumer_limit: 1024 * 1024,
        }
    }
}
