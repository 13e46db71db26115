//! Automatic rollback (app.json `rollback_on_failure`), one step of the desk's clockwork: in
//! each environment that rolls back on failure, a deploy that ended in `failure` as the
//! environment's newest is rolled back, once, to the newest earlier successful commit, as the
//! failed deployment's requester, in its chat thread (where faseng reported the failure; the
//! rollback's own message is posted there too, and faseng keeps it up to date).
//!
//! Never twice: the failed run is claimed first with a single-use lease in the store
//! (`auto-rollback:<run key>`, held far longer than [`AUTO_ROLLBACK_WINDOW`]), which one
//! process gets; the claim is also audited (`auto_rollback`). Never a rollback of a
//! rollback, and never a failure older than [`AUTO_ROLLBACK_WINDOW`] (a chima that was down
//! does not roll back what people may have dealt with meanwhile).

use chrono::Duration;
use deploy_core::{AppConfig, EnvName};
use deploy_store::{AuditAction, ChatThread, RunQuery, RunRecord, RunState};

use crate::chat::{ChatContext, Poster, RecordingOutbox};
use crate::handlers::rollback::{NoRollback, current, env_history, previous_good, worth_it};
use crate::handlers::{Bot, DeployResult};
use crate::messages::rollback::{self as say, RollbackPlan, Via};

use super::{Desk, Record};

/// How long after a deploy failed it is still rolled back automatically.
pub const AUTO_ROLLBACK_WINDOW: Duration = Duration::hours(1);

/// How long the claim on a failed run is kept (far past the window, so it is never taken
/// again).
const CLAIM_KEPT: std::time::Duration = std::time::Duration::from_secs(8 * 24 * 3600);

/// Runs of an environment looked at for its newest deploy.
const NEWEST_RUNS: usize = 20;

/// Who the automatic rollback's claim and audit are by.
const DESK_ACTOR: (&str, &str) = ("chima", "chima");

/// The claim on a failed run (a lease name in the store).
pub fn claim_name(run_key: &str) -> String {
    format!("auto-rollback:{run_key}")
}

/// Whether `run` (an environment's newest deploy) is one to roll back automatically at
/// `now`: it failed, is no rollback itself, and failed within the window.
pub fn wants_rollback(run: &RunRecord, now: chrono::DateTime<chrono::Utc>) -> bool {
    run.state == RunState::Failure
        && run.rollback.is_none()
        && run
            .finished_at
            .is_some_and(|end| now - end <= AUTO_ROLLBACK_WINDOW)
}

/// Who asked for a deployment and where it was talked about, from the job faseng kept.
struct Origin {
    user: String,
    user_name: String,
    thread: Option<ChatThread>,
}

impl Bot {
    /// One pass of automatic rollbacks; what they became.
    pub async fn auto_rollback_tick(
        &self,
        desk: &Desk,
        poster: &dyn Poster,
    ) -> anyhow::Result<Vec<DeployResult>> {
        let mut results = Vec::new();
        for app in self.apps().iter() {
            for env in &app.environments {
                if !app.rolls_back_on_failure(env) {
                    continue;
                }
                if let Some(result) = self.auto_rollback(desk, poster, app, env).await? {
                    results.push(result);
                }
            }
        }
        Ok(results)
    }

    async fn auto_rollback(
        &self,
        desk: &Desk,
        poster: &dyn Poster,
        app: &AppConfig,
        env: &EnvName,
    ) -> anyhow::Result<Option<DeployResult>> {
        let newest = desk
            .store()
            .history(&RunQuery {
                app: Some(app.name.to_string()),
                environment: Some(env.to_string()),
                limit: NEWEST_RUNS,
                ..RunQuery::default()
            })
            .await?
            .items;
        let now = desk.now();
        let Some(failed) = current(&newest).filter(|r| wants_rollback(r, now)).cloned() else {
            return Ok(None);
        };
        // One process, once: the claim outlives the window by far.
        let claimant = format!("{}/{}", self.name(), deploy_store::DeskTicket::new_id()?);
        if !desk
            .store()
            .acquire_duty(&claim_name(&failed.key), &claimant, now, CLAIM_KEPT)
            .await?
        {
            return Ok(None);
        }
        let origin = self.origin(desk, &failed).await;
        desk.record(
            Record::new(
                DESK_ACTOR,
                AuditAction::AutoRollback,
                app.name.as_str(),
                origin.thread.as_ref(),
            )
            .env(env.as_str())
            .git(&failed.git_ref, Some(&failed.sha))
            .detail(format!(
                "deployment #{} failed; rolling back as {}",
                failed.deployment_id, origin.user_name
            )),
        )
        .await;
        let ctx = match &origin.thread {
            Some(thread) => ChatContext::in_thread(thread, &origin.user, &origin.user_name),
            None => ChatContext {
                adapter: "none".to_owned(),
                room_id: String::new(),
                room_name: String::new(),
                user_id: origin.user.clone(),
                user_name: origin.user_name.clone(),
                message_id: None,
                thread_id: None,
                direct: false,
            },
        };
        let mut recorded = RecordingOutbox::default();
        let mut thread_outbox = origin
            .thread
            .as_ref()
            .map(|thread| poster.outbox(thread, &origin.user));
        let outbox: &mut dyn crate::chat::Outbox = match thread_outbox.as_mut() {
            Some(outbox) => outbox.as_mut(),
            None => &mut recorded,
        };
        let runs = env_history(desk, app, env).await?;
        let plan = previous_good(&runs, &failed).map(|good| RollbackPlan {
            from: failed.sha.to_ascii_lowercase(),
            to: good.sha.to_ascii_lowercase(),
            via: Via::Deployment(good.deployment_id),
        });
        let Some(plan) = plan else {
            outbox
                .post(say::automatic_impossible(
                    &app.name,
                    env,
                    failed.deployment_id,
                ))
                .await;
            return Ok(None);
        };
        if let Err(why) = worth_it(&runs, &plan.from, &plan.to) {
            let reply = match why {
                NoRollback::UnderWay { sha, id } => say::under_way(&app.name, env, &sha, id),
                _ => say::automatic_impossible(&app.name, env, failed.deployment_id),
            };
            outbox.post(reply).await;
            return Ok(None);
        }
        outbox
            .post(say::automatic(&app.name, env, failed.deployment_id, &plan))
            .await;
        let result = Box::pin(self.roll_back(app, env, plan, &ctx, outbox)).await;
        if origin.thread.is_none() {
            for reply in recorded.messages {
                poster.direct(&origin.user, reply).await;
            }
        }
        Ok(Some(result))
    }

    /// The failed deployment's requester and thread, from the job faseng kept (its desk
    /// ticket's person, else its GitHub creator; its payload's chat message).
    async fn origin(&self, desk: &Desk, run: &RunRecord) -> Origin {
        let job = match desk.store().job(&run.key).await {
            Ok(Some(text)) => serde_json::from_str::<faseng::job::DeployJob>(&text).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), key = %run.key, "could not read the failed deployment's job");
                None
            }
        };
        match job {
            Some(job) => {
                let who = job.identity();
                Origin {
                    user: who.user,
                    user_name: who.user_name,
                    thread: job.notify().map(|n| faseng::desk::thread_of(&n)),
                }
            }
            None => Origin {
                user: run.creator.clone(),
                user_name: run.creator.clone(),
                thread: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn failed(finished: DateTime<Utc>) -> RunRecord {
        RunRecord {
            key: "o/demo/3".into(),
            repo: "o/demo".into(),
            deployment_id: 3,
            app: "demo".into(),
            environment: "staging".into(),
            task: "deploy".into(),
            git_ref: "main".into(),
            sha: "c".repeat(40),
            creator: "chima".into(),
            state: RunState::Failure,
            description: String::new(),
            received_at: finished - Duration::minutes(2),
            started_at: Some(finished - Duration::minutes(1)),
            finished_at: Some(finished),
            chat_ts: None,
            rollback: None,
            stages: Vec::new(),
        }
    }

    #[test]
    fn only_a_recent_failure_that_is_no_rollback_is_rolled_back() {
        let now: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
        assert!(wants_rollback(&failed(now - Duration::minutes(5)), now));
        assert!(wants_rollback(&failed(now - AUTO_ROLLBACK_WINDOW), now));
        assert!(!wants_rollback(
            &failed(now - AUTO_ROLLBACK_WINDOW - Duration::seconds(1)),
            now
        ));
        let error = RunRecord {
            state: RunState::Error,
            ..failed(now)
        };
        assert!(!wants_rollback(&error, now), "an error changed nothing");
        let rollback = RunRecord {
            rollback: Some(deploy_store::RollbackMark {
                from: "b".repeat(40),
                to: "c".repeat(40),
            }),
            ..failed(now)
        };
        assert!(
            !wants_rollback(&rollback, now),
            "never a rollback of a rollback"
        );
        assert_eq!(claim_name("o/demo/3"), "auto-rollback:o/demo/3");
    }
}
