//! Echo: every byte received is sent back, in order.
//!
//! The Go tutorial's handler body. It consumes all input at once, never needs
//! more bytes to finish anything, and so agrees to close as soon as a drain
//! starts (after the connection has echoed what it already read).

use std::time::Instant;

use super::{stream_room, Decision, Output, Protocol, Step};

/// The echo protocol. Stateless, so it costs no memory per connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Protocol for Echo {
    const NAME: &'static str = "echo";

    fn replies_with_input(&self) -> bool {
        true
    }

    fn on_input(&mut self, _now: Instant, input: &[u8], out: &mut Output) -> Step {
        // Input larger than a read (queued behind a PROXY header, say) is
        // echoed a budget at a time.
        let take = input.len().min(stream_room(0));
        out.extend_from_slice(&input[..take]);
        Step {
            consumed: take,
            decision: Decision::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_every_byte_in_order_and_consumes_all() {
        let now = Instant::now();
        let mut echo = Echo;
        let mut out = Output::new();
        let step = echo.on_input(now, b"hello ", &mut out);
        assert_eq!(step.consumed, 6);
        assert_eq!(step.decision, Decision::Continue);
        echo.on_input(now, b"world", &mut out);
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn echoes_at_most_a_budget_per_call() {
        let input = vec![b'e'; 3 * crate::proto::OUT_BUDGET];
        let mut out = Output::new();
        let step = Echo.on_input(Instant::now(), &input, &mut out);
        assert!(crate::proto::budget_spent(out.len()));
        assert_eq!(step.consumed, out.len());
    }

    #[test]
    fn agrees_to_close_when_draining() {
        assert_eq!(
            Echo.on_drain(Instant::now(), &mut Output::new()),
            Decision::Close
        );
    }
}
