//! How a loop names its event sources: every `mio::Token` it registers.
//!
//! | token | source |
//! |---|---|
//! | `Token(key)` | the connection in slab slot `key` |
//! | [`LISTENERS`]` - i` | listening socket `i` |
//! | [`SIGNALS`] | the signal self-pipe (a lone server's) |
//! | [`WAKER`] | the cross-thread waker (a handle, another loop's messages) |

use mio::Token;

/// Token of the signal self-pipe.
pub const SIGNALS: Token = Token(usize::MAX - 1);
/// Token of the cross-thread waker.
pub(crate) const WAKER: Token = Token(usize::MAX - 2);
/// Token of listening socket `i` is `Token(LISTENERS - i)`.
pub(crate) const LISTENERS: usize = usize::MAX - 16;
/// Most listening sockets one server serves.
pub(crate) const MAX_LISTENERS: usize = 1024;

/// Which listening socket a token names, if it names one.
pub(crate) fn listener_index(token: Token) -> Option<usize> {
    (token.0 <= LISTENERS && token.0 > LISTENERS - MAX_LISTENERS).then(|| LISTENERS - token.0)
}
