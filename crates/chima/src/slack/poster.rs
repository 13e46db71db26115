//! How chima speaks in Slack when no command is being answered: into a kept thread (a lock's,
//! a request's), and directly to a person (`chat.postMessage` with the user's id as the
//! channel posts in the bot's direct messages with them).

use std::sync::Arc;

use async_trait::async_trait;
use deploy_store::ChatThread;

use crate::chat::{Outbox, Poster, Reply};

use super::web::{SlackOutbox, SlackWeb};

/// The Slack [`Poster`].
pub struct SlackPoster {
    web: Arc<SlackWeb>,
}

impl SlackPoster {
    /// A poster over `web`.
    pub fn new(web: Arc<SlackWeb>) -> Self {
        Self { web }
    }
}

#[async_trait]
impl Poster for SlackPoster {
    fn outbox(&self, thread: &ChatThread, user_id: &str) -> Box<dyn Outbox> {
        Box::new(SlackOutbox::new(
            self.web.clone(),
            &thread.room,
            thread.thread.clone(),
            user_id,
        ))
    }

    async fn direct(&self, user_id: &str, reply: Reply) {
        if let Err(e) = self.web.post(user_id, None, &reply).await {
            tracing::warn!(error = %e, "could not send a direct message");
        }
    }

    async fn groups_of(&self, user_id: &str) -> Vec<String> {
        match self.web.user_groups(user_id).await {
            Ok(groups) => groups,
            Err(e) => {
                tracing::warn!(error = %e, "could not read Slack's user groups; @group approvers do not match");
                Vec::new()
            }
        }
    }
}
