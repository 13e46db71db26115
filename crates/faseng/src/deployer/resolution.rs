//! Resolution: a job against the operator's app.json (its app, environment and task, the
//! only authority on how it is deployed), and what the app gives a run (chat room, timeout,
//! GitHub token).

use std::time::Duration;

use deploy_core::{AppConfig, CommitSha, EnvName, GitRef, Notify, Secret};

use crate::job::DeployJob;
use crate::outcome::RunError;
use crate::resolve;

use super::Deployer;

/// A run's validated inputs.
pub(super) struct Valid {
    pub(super) app: AppConfig,
    pub(super) env: EnvName,
    pub(super) git_ref: GitRef,
    pub(super) sha: CommitSha,
}

impl Deployer {
    /// The operator's app for a job (see [`resolve::app_for`]).
    fn operator_app(&self, job: &DeployJob) -> Result<&AppConfig, resolve::Refusal> {
        resolve::app_for(&self.apps, &job.repo_name(), job.payload_name())
    }

    /// Resolves the job against the operator's app.json (the only authority on how it is
    /// deployed; `payload.config` is never read) and validates what reaches processes.
    pub(super) fn validate(&self, job: &DeployJob) -> Result<Valid, RunError> {
        let app = self.operator_app(job).map_err(RunError::Refused)?;
        let env = resolve::environment_of(app, &job.environment).map_err(RunError::Refused)?;
        let git_ref = GitRef::parse(&job.git_ref).map_err(|e| RunError::InvalidInput {
            what: "ref",
            value: job.git_ref.clone(),
            why: e.to_string(),
        })?;
        let sha = CommitSha::parse(&job.sha).map_err(|_| RunError::InvalidInput {
            what: "sha",
            value: job.sha.clone(),
            why: "not a full commit sha".to_owned(),
        })?;
        Ok(Valid {
            app: app.clone(),
            env,
            git_ref,
            sha,
        })
    }

    /// The chat message to keep up to date: the payload's, when the operator's app for the
    /// deployment allows its room (a deployment that resolves to no app gets no chat).
    pub(super) async fn chat_target(&self, job: &DeployJob) -> Option<Notify> {
        let notify = job.notify()?;
        let app = self.operator_app(job).ok()?;
        if crate::notify::room_allowed(&*self.notifier, app.allowed_rooms.as_deref(), &notify).await
        {
            Some(notify)
        } else {
            tracing::warn!(room = %notify.room, app = %app.name, "the deployment's chat room is not in the app's allowed_rooms: not posting there");
            None
        }
    }

    /// The app's timeout (else faseng's): it covers checkout, stages and provider.
    pub(super) fn run_timeout(&self, app: &AppConfig) -> Duration {
        Duration::from_secs(
            app.timeout
                .unwrap_or(self.settings.default_timeout.as_secs())
                .max(1),
        )
    }

    /// The token for the app's GitHub: its own, faseng's, or a GitHub App installation
    /// token for its repository (`None` when there is none, or it could not be minted).
    pub(super) async fn github_token(&self, app: &AppConfig) -> Option<Secret> {
        if let Some(t) = &app.github_token {
            return Some(t.clone());
        }
        match self
            .settings
            .github
            .access_token(&app.repository, app.github_api.as_deref())
            .await
        {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no GitHub token for the checkout");
                None
            }
        }
    }
}
