//! Web actions: what signed-in dashboard users ask chima to do (DESIGN § "Rollback and
//! statistics", issue #17's contract §3). faseng's dashboard stores a chat command line with
//! the viewer's identity; chima claims it (each action once, see
//! [`deploy_store::WebActions`]) and runs it through the same handler as a chat line, as the
//! viewer, in the pseudo-room `dashboard` ([`ChatContext::dashboard`]: the app's
//! `allowed_rooms` does not apply; locks, freezes, protection, desk tickets and the audit do),
//! and stores the reply's plain text and the run key of a deployment it made.

use std::time::Duration;

use deploy_store::{RunRecord, WebAction};

use crate::chat::{ChatContext, RecordingOutbox};
use crate::handlers::{Bot, DeployResult};

/// How often chima looks for web actions.
pub const EVERY: Duration = Duration::from_secs(1);

/// How long a claimed action is held: past it, the action is ended as failed (a chima that
/// stopped while doing it), never carried out again.
pub const LEASE: Duration = Duration::from_secs(120);

/// How long one action may take before it is given up (well within [`LEASE`]).
pub const TIME_LIMIT: Duration = Duration::from_secs(90);

/// Most actions carried out in one step (the rest wait for the next).
pub const PER_STEP: usize = 10;

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebActionReport {
    /// The actions carried out, by id.
    pub done: Vec<u64>,
    /// The deployments they made.
    pub deployed: Vec<DeployResult>,
}

impl Bot {
    /// One step: claims pending web actions (as `holder`, this process) and carries each out
    /// as a chat line would be. Without a store there is nothing to do.
    pub async fn web_actions_step(&self, holder: &str) -> anyhow::Result<WebActionReport> {
        let mut report = WebActionReport::default();
        let Some(desk) = self.desk() else {
            return Ok(report);
        };
        while report.done.len() < PER_STEP {
            let Some(action) = desk
                .store()
                .claim_web_action(holder, desk.now(), LEASE)
                .await?
            else {
                break;
            };
            let (ok, reply, deployed) = self.carry_out(&action).await;
            let run_key = deployed.iter().find_map(|result| match result {
                DeployResult::Created { id, app, .. } => self
                    .apps()
                    .get(app)
                    .map(|config| RunRecord::key_for(&config.repository.to_string(), *id)),
                DeployResult::Refused => None,
            });
            let finished = desk
                .store()
                .finish_web_action(action.id, holder, ok, &reply, run_key.as_deref())
                .await?;
            if !finished {
                tracing::warn!(
                    action = action.id,
                    "a web action's claim lapsed while it was carried out; it is recorded as failed"
                );
            }
            report.done.push(action.id);
            report.deployed.extend(deployed);
        }
        Ok(report)
    }

    /// Runs one action's command as its user in the dashboard; whether it ran, its reply as
    /// plain text, and the deployments it made.
    async fn carry_out(&self, action: &WebAction) -> (bool, String, Vec<DeployResult>) {
        let ctx = ChatContext::dashboard(&action.user_id, &action.user_name);
        let mut outbox = RecordingOutbox::default();
        let ran = tokio::time::timeout(
            TIME_LIMIT,
            self.handle_line(&action.command, &ctx, &mut outbox),
        )
        .await;
        let text = outbox
            .messages
            .iter()
            .map(|reply| reply.text())
            .collect::<Vec<_>>()
            .join("\n");
        match ran {
            Ok(deployed) => (true, text, deployed),
            Err(_) => {
                tracing::warn!(action = action.id, "a web action took too long");
                let reply = crate::messages::web_action_too_slow(TIME_LIMIT.as_secs());
                let text = if text.is_empty() {
                    reply
                } else {
                    format!("{text}\n{reply}")
                };
                (false, text, Vec::new())
            }
        }
    }
}
