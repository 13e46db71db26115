//! The queued job: everything a worker needs to run one deployment, taken from the webhook
//! as sent (refs and shas are validated by the worker before any process sees them).

use chrono::{DateTime, Utc};
use deploy_core::{Apps, LineKey, Notify, RepoName, RepoNameError, RunKey, Task};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::desk::Identity;
use crate::store::{AcceptItem, RollbackMark, RunRecord, RunState};
use deploy_core::event::{DeploymentEvent, clean_user_name};

/// Name of the apalis queue (the same for producers and consumers).
pub const QUEUE_NAME: &str = deploy_store::DEFAULT_QUEUE;

/// One deployment to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployJob {
    /// `X-GitHub-Delivery` of the webhook that brought it.
    pub delivery_id: String,
    /// `owner/repo`, validated.
    pub repo: String,
    /// The GitHub deployment id.
    pub deployment_id: u64,
    /// The ref as sent.
    pub git_ref: String,
    /// The sha as sent.
    pub sha: String,
    /// The task as sent.
    pub task: Task,
    /// The environment as sent.
    pub environment: String,
    /// The deployment description (the lock reason for `deploy:lock`).
    pub description: String,
    /// Who created the deployment.
    pub creator: String,
    /// The deployment payload (an object).
    pub payload: Value,
    /// `repository.clone_url` of the webhook.
    pub clone_url: Option<String>,
    /// The waiting line (`app/env`) it belongs to.
    pub line: LineKey,
    /// The operator's app it resolved to at intake (empty when none did: the worker reports
    /// why and runs nothing).
    #[serde(default)]
    pub app: String,
    /// When the webhook arrived.
    pub received_at: DateTime<Utc>,
    /// Who deploys, decided once at intake (see [`crate::desk::decide_identity`]), so a
    /// retried or recovered run needs no (used) ticket; `None` in a job queued by a faseng
    /// from before desk tickets: its creator.
    #[serde(default)]
    pub identity: Option<Identity>,
    /// The repository's default branch, as the webhook said (`None`: not said).
    #[serde(default)]
    pub default_branch: Option<String>,
}

fn payload_name(payload: &Value) -> Option<&str> {
    payload.get("name").and_then(Value::as_str)
}

impl DeployJob {
    /// A deploy of `main` to edge as deployment 7 of `repo` in `line`, with an empty payload.
    #[cfg(test)]
    pub(crate) fn sample(delivery_id: &str, repo: &str, line: &str) -> Self {
        let (app, env) = line.split_once('/').expect("line is app/env");
        let app = deploy_core::AppName::parse(app).expect("a valid app name");
        Self {
            delivery_id: delivery_id.into(),
            repo: repo.into(),
            deployment_id: 7,
            git_ref: "main".into(),
            sha: "a".repeat(40),
            task: Task::Deploy,
            environment: "edge".into(),
            description: String::new(),
            creator: "joyz".into(),
            payload: serde_json::json!({}),
            clone_url: None,
            line: LineKey::new(&app, env),
            app: app.to_string(),
            received_at: Utc::now(),
            identity: None,
            default_branch: Some("main".into()),
        }
    }

    /// Builds the job for a webhook, in the line of the operator's app it resolves to (see
    /// [`crate::resolve`]); one that resolves to none gets a line of its own. `Err` when the
    /// repository name is unusable.
    pub fn from_event(
        delivery_id: &str,
        ev: &DeploymentEvent,
        apps: &Apps,
    ) -> Result<Self, RepoNameError> {
        let repo = RepoName::parse(&ev.repository.full_name)?;
        let payload = ev.payload_object();
        let app = crate::resolve::app_for(apps, &repo, payload_name(&payload))
            .ok()
            .map(|a| &a.name);
        let line = match app {
            Some(app) => LineKey::new(app, &ev.deployment.environment),
            None => LineKey::unresolved(&repo, &ev.deployment.environment),
        };
        let app = app.map(ToString::to_string).unwrap_or_default();
        Ok(Self {
            delivery_id: delivery_id.to_owned(),
            repo: repo.to_string(),
            deployment_id: ev.deployment.id,
            git_ref: ev.deployment.git_ref.clone(),
            sha: ev.deployment.sha.clone(),
            task: ev.deployment.task.clone(),
            environment: ev.deployment.environment.clone(),
            description: ev.deployment.description.clone().unwrap_or_default(),
            creator: ev.creator(),
            line,
            app,
            payload,
            clone_url: ev.repository.clone_url.clone(),
            received_at: Utc::now(),
            identity: None,
            default_branch: ev.repository.default_branch.clone(),
        })
    }

    /// The run key, `owner/repo/id`.
    pub fn key(&self) -> RunKey {
        RunKey::new(&self.repo_name(), self.deployment_id)
    }

    /// The repository (validated when the job was built).
    pub fn repo_name(&self) -> RepoName {
        RepoName::parse(&self.repo).expect("validated at intake")
    }

    /// The app the payload names (`payload.name`): only ever a choice between apps of the
    /// deployment's repository (see [`crate::resolve::app_for`]).
    pub fn payload_name(&self) -> Option<&str> {
        payload_name(&self.payload)
    }

    /// The operator's app it resolved to at intake; empty when none did.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Who deploys: as decided at intake, else (a job from before desk tickets) its
    /// GitHub creator. Never `payload.notify`'s user, which anyone can write.
    pub fn identity(&self) -> Identity {
        self.identity
            .clone()
            .unwrap_or_else(|| Identity::creator(&self.creator))
    }

    /// The chat message to keep up to date, if the payload names one; its `user_name` is
    /// cleaned with [`clean_user_name`] (it becomes `DEPLOY_USER`).
    pub fn notify(&self) -> Option<Notify> {
        self.payload
            .get("notify")
            .and_then(|n| serde_json::from_value::<Notify>(n.clone()).ok())
            .filter(|n| !n.room.is_empty())
            .map(|n| Notify {
                user_name: clean_user_name(&n.user_name),
                ..n
            })
    }

    /// The payload's rollback mark (`payload.rollback`), when it names commits and the commit it
    /// deploys is this deployment's own: a mark saying anything else is ignored (it only
    /// changes how the run is described, never how it is deployed).
    pub fn rollback_mark(&self) -> Option<RollbackMark> {
        let mark: deploy_core::Rollback =
            serde_json::from_value(self.payload.get("rollback")?.clone()).ok()?;
        (mark.is_well_formed() && mark.to.eq_ignore_ascii_case(&self.sha)).then(|| RollbackMark {
            from: mark.from.to_ascii_lowercase(),
            to: mark.to.to_ascii_lowercase(),
        })
    }

    /// What the store keeps when the job is accepted: its delivery, its record, its line and
    /// the job itself (so a run whose job was lost can be queued again).
    pub fn accept_item(&self) -> AcceptItem {
        AcceptItem {
            delivery_id: self.delivery_id.clone(),
            run: self.initial_record(),
            line: self.line.to_string(),
            job: serde_json::to_string(self).expect("a job serialises"),
        }
    }

    /// The record for a job that was just accepted.
    pub fn initial_record(&self) -> RunRecord {
        RunRecord {
            key: self.key().to_string(),
            repo: self.repo.clone(),
            deployment_id: self.deployment_id,
            app: self.app().to_owned(),
            environment: self.environment.clone(),
            task: self.task.to_string(),
            git_ref: self.git_ref.clone(),
            sha: self.sha.clone(),
            creator: self.creator.clone(),
            state: RunState::Queued,
            description: String::new(),
            received_at: self.received_at,
            started_at: None,
            finished_at: None,
            chat_ts: None,
            rollback: self.rollback_mark(),
            stages: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(repo: &str, name: &str, environment: &str) -> DeploymentEvent {
        serde_json::from_value(serde_json::json!({
            "deployment": {"id": 1, "sha": "a", "ref": "main", "environment": environment,
                           "payload": {"name": name}},
            "repository": {"full_name": repo}
        }))
        .unwrap()
    }

    #[test]
    fn lines_are_per_operator_app_and_environment() {
        let apps = Apps::from_json(
            r#"{"trelhub": {"provider": "shell", "repository": "oursky/Trelhub",
                            "environments": ["edge"]}}"#,
        )
        .unwrap();
        let job = DeployJob::from_event("d", &event("oursky/trelhub", "project-x", "Edge"), &apps)
            .unwrap();
        assert_eq!((job.app(), job.line.as_str()), ("trelhub", "trelhub/edge"));
        let job =
            DeployJob::from_event("d", &event("mallory/x", "trelhub", "edge"), &apps).unwrap();
        assert_eq!((job.app(), job.line.as_str()), ("", "?mallory/x/edge"));
    }

    #[test]
    fn the_payloads_rollback_mark_is_kept_when_it_names_this_deployments_commit() {
        let mut job = DeployJob::sample("d", "o/r", "r/edge");
        assert_eq!(job.initial_record().rollback, None);
        let to = job.sha.clone();
        job.payload = serde_json::json!({"rollback": {"from": "B".repeat(40), "to": to}});
        assert_eq!(
            job.initial_record().rollback,
            Some(RollbackMark {
                from: "b".repeat(40),
                to: job.sha.clone()
            })
        );
        for lie in [
            serde_json::json!({"rollback": {"from": "b".repeat(40), "to": "c".repeat(40)}}),
            serde_json::json!({"rollback": {"from": "<!here>", "to": job.sha}}),
            serde_json::json!({"rollback": {"from": "b".repeat(40)}}),
            serde_json::json!({"rollback": "yes"}),
        ] {
            job.payload = lie.clone();
            assert_eq!(job.initial_record().rollback, None, "{lie}");
        }
    }

    #[test]
    fn the_notify_user_name_is_cleaned() {
        let mut job = DeployJob::sample("d", "o/r", "r/edge");
        job.payload = serde_json::json!({"notify": {"adapter": "slack", "room": "C1",
                                                    "user_name": "jo\u{0}yz\n"}});
        assert_eq!(job.notify().unwrap().user_name, "jo\u{fffd}yz\u{fffd}");
    }
}
