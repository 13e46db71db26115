//! The release desk at run start: the store's [`gate`] (someone else's lock, a freeze),
//! Heaven's `deploy:lock` / `deploy:unlock` on the desk's locks, sticky branch locks, and the
//! audit of what faseng does to locks. Who deploys is the job's identity (see
//! [`crate::desk`]); every time is the deployer's clock.

use chrono::{DateTime, Utc};
use deploy_core::desk::{Blocked, when};
use deploy_core::{LineKey, Task};

use crate::desk;
use crate::messages;
use crate::outcome::{RunError, RunOutcome};
use crate::store::{AuditAction, AuditEntry, EnvLock, Gate, gate, lock_blocked};

use super::resolution::Valid;
use super::{Deployer, Run};

/// How often a lock update that lost a race (the lock changed between reading and writing
/// it) is tried again before giving up.
const LOCK_ATTEMPTS: usize = 3;

impl Deployer {
    fn now(&self) -> DateTime<Utc> {
        self.settings.clock.now()
    }

    /// The refusal when the desk does not let the run's deployer deploy now.
    pub(super) async fn desk_refusal(
        &self,
        run: &Run<'_>,
        valid: &Valid,
    ) -> anyhow::Result<Option<RunError>> {
        let now = self.now();
        if let Gate::Blocked(blocked) =
            gate(&*self.store, &valid.app, &valid.env, &run.user_id, now).await?
        {
            return Ok(Some(refused(valid, &blocked, now)));
        }
        if valid.app.protection(&valid.env).is_some() {
            return self.release_refusal(run, valid).await;
        }
        Ok(None)
    }

    /// Into a protected environment, only the deployment of an approved release request for
    /// exactly its commit and environment goes ahead; the request comes from the desk
    /// ticket chima wrote (never from the payload alone).
    async fn release_refusal(
        &self,
        run: &Run<'_>,
        valid: &Valid,
    ) -> anyhow::Result<Option<RunError>> {
        let identity = run.job.identity();
        let request = identity.allowed_by.iter().find_map(|a| match a {
            crate::store::Allowance::Request(n) => Some(*n),
            _ => None,
        });
        if let Some(n) = request
            && let Some(r) = self.store.request(n).await?
            && r.app == valid.app.name.as_str()
            && r.environment == valid.env.as_str()
            && r.sha.eq_ignore_ascii_case(&run.job.sha)
            && matches!(
                r.state,
                crate::store::RequestState::Approved | crate::store::RequestState::Deploying
            )
        {
            return Ok(None);
        }
        let message = messages::unapproved(valid.app.name.as_str(), valid.env.as_str(), request);
        let text = deploy_core::chat::plain::render(&deploy_core::chat::Message {
            tone: deploy_core::chat::Tone::Info,
            ..message.clone()
        });
        Ok(Some(RunError::Blocked { text, message }))
    }

    /// `deploy:lock`: takes the desk's lock for the deployer (reason: the deployment's
    /// description; expiry: the app's `lock_ttl`; it talks in the payload's thread) unless
    /// someone else holds it. The holder taking it again renews it.
    pub(super) async fn lock(&self, run: Run<'_>, valid: &Valid) -> anyhow::Result<()> {
        let job = run.job;
        let now = self.now();
        let reason = match job.description.trim() {
            "" => messages::deploy_lock_reason(),
            _ if desk::is_generated_description(job) => messages::deploy_lock_reason(),
            given => given.to_owned(),
        };
        let until = now + valid.app.lock_ttl().as_chrono();
        let wanted = EnvLock {
            user: run.user_id.clone(),
            user_name: run.user.clone(),
            reason: reason.clone(),
            at: now,
            expires_at: Some(until),
            thread: run.thread.clone(),
            reminded_at: None,
            branch: None,
        };
        let held = self
            .store
            .acquire_lock(line_of(valid).as_str(), &wanted, now)
            .await?;
        if held.user != wanted.user {
            let why = refused(valid, &lock_blocked(&held), now);
            return self.finish(run, RunOutcome::Error(why), None).await;
        }
        self.audit(
            &run,
            valid,
            AuditAction::Lock,
            messages::audit_lock(&reason, "deploy:lock", job.deployment_id),
        )
        .await;
        let text = messages::lock_taken(
            valid.app.name.as_str(),
            valid.env.as_str(),
            &run.user,
            &when(until, now, valid.app.tz()),
        );
        self.finish_with_text(run, RunOutcome::Success, None, Some(text))
            .await
    }

    /// `deploy:unlock`: only the holder (by id) releases the lock.
    pub(super) async fn unlock(&self, run: Run<'_>, valid: &Valid) -> anyhow::Result<()> {
        let line = line_of(valid);
        let (app, env) = (valid.app.name.as_str(), valid.env.as_str());
        let mut released = None;
        for _ in 0..LOCK_ATTEMPTS {
            let Some(held) = self.store.lock_at(line.as_str(), self.now()).await? else {
                break;
            };
            if held.user != run.user_id {
                let why = RunError::UnlockRefused {
                    app: app.to_owned(),
                    env: env.to_owned(),
                    holder: held.shown_name().to_owned(),
                };
                return self.finish(run, RunOutcome::Error(why), None).await;
            }
            released = self
                .store
                .release_lock_if(line.as_str(), &held.user, held.at)
                .await?;
            if released.is_some() {
                break;
            }
        }
        if let Some(lock) = &released {
            let detail = messages::audit_lock(&lock.reason, "deploy:unlock", run.job.deployment_id);
            self.audit(&run, valid, AuditAction::Unlock, detail).await;
        }
        let text = messages::lock_released(app, env, released.as_ref().map(EnvLock::shown_name));
        self.finish_with_text(run, RunOutcome::Success, None, Some(text))
            .await
    }

    /// A sticky branch lock (app.json `branch_lock`): a deploy of a ref other than the
    /// repository's default branch locks the environment for its deployer ("feature/x is on
    /// edge", for the app's `lock_ttl`). A lock the deployer holds already is extended, never
    /// shortened, and a lock taken by hand stays one. The refusal when someone else took the
    /// lock since the gate was asked.
    pub(super) async fn take_branch_lock(
        &self,
        run: &Run<'_>,
        valid: &Valid,
    ) -> anyhow::Result<Option<RunError>> {
        let job = run.job;
        let Some(default_branch) = job.default_branch.as_deref() else {
            return Ok(None);
        };
        if !valid.app.branch_lock()
            || !deploys_code(&job.task)
            || desk::is_default_branch(&job.git_ref, default_branch)
        {
            return Ok(None);
        }
        let line = line_of(valid);
        let reason = messages::branch_lock_reason(&job.git_ref, valid.env.as_str());
        for _ in 0..LOCK_ATTEMPTS {
            let now = self.now();
            let until = now + valid.app.lock_ttl().as_chrono();
            let Some(held) = self.store.lock_at(line.as_str(), now).await? else {
                let wanted = EnvLock {
                    user: run.user_id.clone(),
                    user_name: run.user.clone(),
                    reason: reason.clone(),
                    at: now,
                    expires_at: Some(until),
                    thread: run.thread.clone(),
                    reminded_at: None,
                    branch: Some(job.git_ref.clone()),
                };
                let holder = self.store.acquire_lock(line.as_str(), &wanted, now).await?;
                if holder.user != run.user_id {
                    return Ok(Some(refused(valid, &lock_blocked(&holder), now)));
                }
                let detail = messages::audit_lock(&reason, "branch lock", job.deployment_id);
                self.audit(run, valid, AuditAction::Lock, detail).await;
                return Ok(None);
            };
            if held.user != run.user_id {
                return Ok(Some(refused(valid, &lock_blocked(&held), now)));
            }
            let extended = EnvLock {
                expires_at: held.expires_at.map(|end| end.max(until)),
                thread: held.thread.clone().or_else(|| run.thread.clone()),
                // A branch lock follows the ref deployed; one taken by hand stays as it was.
                reason: if held.branch.is_some() {
                    reason.clone()
                } else {
                    held.reason.clone()
                },
                branch: held.branch.as_ref().map(|_| job.git_ref.clone()),
                ..held.clone()
            };
            if extended == held {
                return Ok(None);
            }
            if self
                .store
                .update_lock_if(line.as_str(), &held.user, held.at, &extended)
                .await?
            {
                let detail =
                    messages::audit_lock(&extended.reason, "branch lock", job.deployment_id);
                self.audit(run, valid, AuditAction::Extend, detail).await;
                return Ok(None);
            }
        }
        anyhow::bail!("the lock on {line} kept changing while a branch deploy took it")
    }

    /// After the default branch was deployed successfully by the holder of a sticky branch
    /// lock, releases it (a lock taken by hand stays). A store failure is logged: the lock
    /// then runs out by itself.
    pub(super) async fn release_branch_lock(&self, run: &Run<'_>, valid: &Valid) {
        let job = run.job;
        let Some(default_branch) = job.default_branch.as_deref() else {
            return;
        };
        if !deploys_code(&job.task) || !desk::is_default_branch(&job.git_ref, default_branch) {
            return;
        }
        let line = line_of(valid);
        let released = async {
            let Some(held) = self.store.lock_at(line.as_str(), self.now()).await? else {
                return Ok(None);
            };
            if held.user != run.user_id || held.branch.is_none() {
                return Ok(None);
            }
            self.store
                .release_lock_if(line.as_str(), &held.user, held.at)
                .await
        };
        match released.await {
            Ok(Some(lock)) => {
                tracing::info!(%line, branch = lock.branch.as_deref().unwrap_or_default(), "the default branch is back: its deployer's branch lock is released");
                let detail = messages::audit_lock(
                    &lock.reason,
                    "branch lock released by a deploy of the default branch",
                    job.deployment_id,
                );
                self.audit(run, valid, AuditAction::Unlock, detail).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%line, error = %format!("{e:#}"), "could not release the branch lock; it runs out by itself");
            }
        }
    }

    /// Appends what faseng did to a lock to the desk's audit, as the run's deployer did it;
    /// a store failure is logged, never fatal to what it records.
    async fn audit(&self, run: &Run<'_>, valid: &Valid, action: AuditAction, detail: String) {
        let job = run.job;
        let (room, adapter) = match &run.thread {
            Some(t) if t.room_name.is_empty() => (Some(t.room.clone()), t.adapter.clone()),
            Some(t) => (
                Some(format!("#{}", t.room_name.trim_start_matches('#'))),
                t.adapter.clone(),
            ),
            None => (None, desk::OUTSIDE_CHAT.to_owned()),
        };
        let entry = AuditEntry {
            at: self.now(),
            actor: run.user_id.clone(),
            actor_name: run.user.clone(),
            action,
            app: valid.app.name.to_string(),
            environment: Some(valid.env.to_string()),
            git_ref: Some(job.git_ref.clone()),
            sha: Some(job.sha.clone()),
            room,
            adapter: Some(adapter),
            detail,
        };
        if let Err(e) = self.store.audit_append(&entry).await {
            tracing::warn!(error = %format!("{e:#}"), action = action.as_str(), "could not write the audit entry");
        }
    }
}

/// The line (and lock) of a validated run.
fn line_of(valid: &Valid) -> LineKey {
    LineKey::new(&valid.app.name, valid.env.as_str())
}

/// Whether a task deploys the ref (every task but Heaven's lock tasks).
fn deploys_code(task: &Task) -> bool {
    !matches!(task, Task::Lock | Task::Unlock)
}

/// The desk's refusal as the run's error: the words chima refuses with, times in the app's
/// time zone.
fn refused(valid: &Valid, blocked: &Blocked, now: DateTime<Utc>) -> RunError {
    let tz = valid.app.tz();
    RunError::Blocked {
        text: blocked.plain(&valid.app.name, &valid.env, now, tz),
        message: blocked.message(&valid.app.name, &valid.env, now, tz),
    }
}
