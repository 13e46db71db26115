//! `stats <app> [in <env>] [for <period>]`: delivery statistics per environment.

use crate::chat::Reply;
use crate::grammar::StatsCommand;
use crate::messages;

use super::Bot;

impl Bot {
    /// The answer to a stats command.
    pub async fn stats(&self, command: &StatsCommand) -> Reply {
        messages::unsupported(&format!("stats of {} are not available yet", command.app))
    }
}
