//! The commands this RESP server knows, as a type: a name is parsed once
//! into a [`Command`], and everything else (which commands are streamed,
//! which are allowed in subscribed mode, which counter one moves) is a
//! `match` on it.

/// A command by name (case-insensitive on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// `PING [msg]`.
    Ping,
    /// `ECHO msg`.
    Echo,
    /// `QUIT`: `+OK`, then close.
    Quit,
    /// `SUBSCRIBE channel…`.
    Subscribe,
    /// `UNSUBSCRIBE [channel…]`.
    Unsubscribe,
    /// `PSUBSCRIBE pattern…`.
    PSubscribe,
    /// `PUNSUBSCRIBE [pattern…]`.
    PUnsubscribe,
    /// `PUBLISH channel message`.
    Publish,
    /// `PUBSUB CHANNELS|NUMSUB|NUMPAT|HELP`.
    PubSub,
    /// `RESET`: leave every channel and pattern, back to RESP2 and replies on.
    Reset,
    /// `HELLO [protover [SETNAME name]]`: RESP2 or RESP3.
    Hello,
    /// `CLIENT REPLY|SETNAME|GETNAME|ID|HELP`.
    Client,
}

impl Command {
    /// Every command, for tables and tests.
    pub const ALL: [Command; 12] = [
        Command::Ping,
        Command::Echo,
        Command::Quit,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::PSubscribe,
        Command::PUnsubscribe,
        Command::Publish,
        Command::PubSub,
        Command::Reset,
        Command::Hello,
        Command::Client,
    ];

    /// The command `name` is, if this server knows it.
    pub fn parse(name: &[u8]) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|c| name.eq_ignore_ascii_case(c.name().as_bytes()))
    }

    /// Its name, lower case, as redis' error messages show it.
    pub const fn name(self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Echo => "echo",
            Command::Quit => "quit",
            Command::Subscribe => "subscribe",
            Command::Unsubscribe => "unsubscribe",
            Command::PSubscribe => "psubscribe",
            Command::PUnsubscribe => "punsubscribe",
            Command::Publish => "publish",
            Command::PubSub => "pubsub",
            Command::Reset => "reset",
            Command::Hello => "hello",
            Command::Client => "client",
        }
    }

    /// Whether it is read whole before it is run (at most
    /// `MAX_COMMAND` bytes). `PING`, `ECHO`
    /// and `QUIT` are answered as they stream in instead, so their
    /// argument may be as long as `--max-body`.
    pub const fn whole(self) -> bool {
        !matches!(self, Command::Ping | Command::Echo | Command::Quit)
    }

    /// Whether RESP2's subscribed mode allows it (redis: "only
    /// (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET"). RESP3
    /// allows every command there: its pushes are told from replies.
    pub(crate) const fn allowed_when_subscribed(self) -> bool {
        matches!(
            self,
            Command::Ping
                | Command::Quit
                | Command::Reset
                | Command::Subscribe
                | Command::Unsubscribe
                | Command::PSubscribe
                | Command::PUnsubscribe
        )
    }

    /// Which `tcp_reactor_resp_commands_total` row it counts in: its index
    /// in `RESP_COMMANDS` (ping,
    /// echo, quit; everything else is `other`).
    pub const fn counter(self) -> usize {
        match self {
            Command::Ping => 0,
            Command::Echo => 1,
            Command::Quit => 2,
            _ => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Command;
    use crate::base::counters::RESP_COMMANDS;

    #[test]
    fn every_command_parses_from_its_name_in_any_case() {
        for command in Command::ALL {
            assert_eq!(Command::parse(command.name().as_bytes()), Some(command));
            let upper = command.name().to_ascii_uppercase();
            assert_eq!(Command::parse(upper.as_bytes()), Some(command));
        }
        assert_eq!(Command::parse(b"GET"), None);
        assert_eq!(Command::parse(b"PIN"), None);
    }

    #[test]
    fn each_command_counts_in_the_row_named_after_it_or_in_other() {
        for command in Command::ALL {
            let row = RESP_COMMANDS[command.counter()];
            assert!(row == command.name() || row == "other", "{command:?}");
        }
    }
}
