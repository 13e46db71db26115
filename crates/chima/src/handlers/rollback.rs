//! `rollback <app> in <env> [to <ref>|#<id>]`: deploys an earlier commit again.

use crate::chat::{ChatContext, Outbox};
use crate::grammar::RollbackCommand;
use crate::messages;

use super::{Bot, DeployResult};

impl Bot {
    /// Handles a rollback command; the deployment it made, if any.
    pub async fn rollback(
        &self,
        command: &RollbackCommand,
        _ctx: &ChatContext,
        outbox: &mut dyn Outbox,
    ) -> Vec<DeployResult> {
        outbox
            .post(messages::unsupported(&format!(
                "rollback of {} is not available yet",
                command.app
            )))
            .await;
        Vec::new()
    }
}
