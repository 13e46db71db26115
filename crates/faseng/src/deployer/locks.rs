//! Environment locks: `deploy:lock` and `deploy:unlock`, and the check that keeps a deploy
//! out of an environment someone else locked.

use chrono::Utc;

use crate::job::DeployJob;
use crate::messages;
use crate::outcome::{RunError, RunOutcome};
use crate::store::EnvLock;

use super::resolution::Valid;
use super::{Deployer, Run};

impl Deployer {
    /// The lock text when someone other than `user_id` holds a `deploy:lock` on the line.
    pub(super) async fn locked_by_other(
        &self,
        job: &DeployJob,
        user_id: &str,
        valid: &Valid,
    ) -> anyhow::Result<Option<RunError>> {
        Ok(self
            .store
            .env_lock(job.line.as_str())
            .await?
            .filter(|l| l.user != user_id)
            .map(|l| self.locked_text(valid, &l)))
    }

    fn locked_text(&self, valid: &Valid, lock: &EnvLock) -> RunError {
        RunError::Locked {
            app: valid.app.name.to_string(),
            env: valid.env.to_string(),
            holder: lock.shown_name().to_owned(),
            reason: lock.reason.clone(),
        }
    }

    /// `deploy:lock`: takes the lock for the asker unless someone else holds it.
    pub(super) async fn lock(&self, run: Run<'_>, valid: &Valid) -> anyhow::Result<()> {
        let job = run.job;
        let wanted = EnvLock {
            user: run.user_id.clone(),
            user_name: run.user.clone(),
            reason: job.description.clone(),
            at: Utc::now(),
            expires_at: None,
            thread: None,
            reminded_at: None,
            branch: None,
        };
        let held = self.store.set_env_lock(job.line.as_str(), &wanted).await?;
        let outcome = if held.user == wanted.user {
            RunOutcome::Success
        } else {
            RunOutcome::Error(self.locked_text(valid, &held))
        };
        let text = messages::lock_taken(valid.app.name.as_str(), valid.env.as_str(), &run.user);
        self.finish_with_text(run, outcome, None, Some(text)).await
    }

    /// `deploy:unlock`: only the holder (by id) releases the lock.
    pub(super) async fn unlock(&self, run: Run<'_>, valid: &Valid) -> anyhow::Result<()> {
        let previous = self
            .store
            .clear_env_lock(run.job.line.as_str(), &run.user_id)
            .await?;
        let (app, env) = (valid.app.name.as_str(), valid.env.as_str());
        if let Some(lock) = previous.as_ref().filter(|l| l.user != run.user_id) {
            let why = RunError::UnlockRefused {
                app: app.to_owned(),
                env: env.to_owned(),
                holder: lock.shown_name().to_owned(),
            };
            return self.finish(run, RunOutcome::Error(why), None).await;
        }
        let text = messages::lock_released(app, env, previous.as_ref().map(EnvLock::shown_name));
        self.finish_with_text(run, RunOutcome::Success, None, Some(text))
            .await
    }
}
