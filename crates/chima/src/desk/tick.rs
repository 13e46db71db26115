//! The desk's clockwork, one step at a time ([`Bot::desk_tick`]): locks that ran out are
//! released (said in their thread), holders are reminded every `lock_reminder` (with Extend
//! and Unlock buttons), requests in line that ran out leave it, and each line whose
//! environment became free for its first requests hands them off, in arrival order; release
//! requests are followed, and failed deploys rolled back where the app asks for it
//! ([`super::auto_rollback`]). Also the rows of `queue`.
//!
//! Every process sharing the store may tick: each release, reminder and hand-off is taken
//! with a fenced store call, so one process does it and the others skip it.

use chrono::{DateTime, Utc};
use deploy_core::{AppConfig, AppName, EnvName};
use deploy_store::{AuditAction, EnvLock, LineRequest, eta_secs};

use crate::chat::{ChatContext, Poster};
use crate::handlers::{Bot, DeployResult};
use crate::messages::desk::{self as say, QueueRow, WaitingRun};

use super::{Desk, Gate, Record, line_of};

/// What one tick did (tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// What the requests handed off from lines became.
    pub deployed: Vec<DeployResult>,
    /// Locks released because they ran out.
    pub expired: usize,
    /// Holders reminded.
    pub reminded: usize,
    /// Requests in line that ran out.
    pub line_expired: usize,
    /// Requests handed off (deployed) from a line.
    pub handed_off: usize,
    /// Release requests that ran out, and whose deployment finished.
    pub releases: super::releases::ReleaseReport,
    /// Failed deploys rolled back automatically (`rollback_on_failure`).
    pub rolled_back: usize,
}

/// Who the desk's own actions are by, in the audit.
const DESK_ACTOR: (&str, &str) = ("chima", "chima");

impl Bot {
    fn app_of_line(&self, line: &str) -> Option<(&AppConfig, EnvName)> {
        let (app, env) = line.split_once('/')?;
        let app = self.apps().get(&AppName::parse(app).ok()?)?;
        let env = EnvName::parse(env).ok()?;
        Some((app, env))
    }

    /// One step of the desk's clockwork, at the desk clock's now.
    pub async fn desk_tick(&self, poster: &dyn Poster) -> anyhow::Result<TickReport> {
        let Some(desk) = self.desk() else {
            return Ok(TickReport::default());
        };
        let mut report = TickReport::default();
        for (line, lock) in desk.store().locks().await? {
            self.tend_lock(&desk, poster, &line, &lock, &mut report)
                .await?;
        }
        for line in desk.store().waiting_lines().await? {
            let moved = self.hand_off(&line, poster).await?;
            report.handed_off += moved.handed_off;
            report.line_expired += moved.line_expired;
            report.deployed.extend(moved.deployed);
        }
        report.releases = self.releases_tick(&desk, poster).await?;
        let rollbacks = self.auto_rollback_tick(&desk, poster).await?;
        report.rolled_back = rollbacks.len();
        report.deployed.extend(rollbacks);
        Ok(report)
    }

    async fn tend_lock(
        &self,
        desk: &Desk,
        poster: &dyn Poster,
        line: &str,
        lock: &EnvLock,
        report: &mut TickReport,
    ) -> anyhow::Result<()> {
        let now = desk.now();
        let app = self.app_of_line(line);
        let tz = self.tz_of_line(line);
        let (app_name, env_name) = line.split_once('/').unwrap_or((line, ""));
        if lock.expired(now) {
            let Some(gone) = desk.store().expire_lock(line, now).await? else {
                return Ok(());
            };
            report.expired += 1;
            desk.record(
                Record::new(
                    DESK_ACTOR,
                    AuditAction::LockExpired,
                    app_name,
                    gone.thread.as_ref(),
                )
                .env(env_name)
                .detail(format!("{}: {}", gone.shown_name(), gone.reason)),
            )
            .await;
            let told = say::lock_expired(app_name, env_name, &gone, now, tz);
            match &gone.thread {
                Some(thread) => {
                    poster.outbox(thread, &gone.user).post(told).await;
                }
                None => poster.direct(&gone.user, told).await,
            }
            return Ok(());
        }
        let Some((app, env)) = app else {
            return Ok(());
        };
        let last = lock.reminded_at.unwrap_or(lock.at);
        if now - last < app.lock_reminder().as_chrono() {
            return Ok(());
        }
        let reminded = EnvLock {
            reminded_at: Some(now),
            ..lock.clone()
        };
        if !desk
            .store()
            .update_lock_if(line, &lock.user, lock.at, &reminded)
            .await?
        {
            return Ok(());
        }
        report.reminded += 1;
        let reminder = say::lock_reminder(app, &env, lock, now, self.name());
        match &lock.thread {
            Some(thread) => {
                poster.outbox(thread, &lock.user).post(reminder).await;
            }
            None => poster.direct(&lock.user, reminder).await,
        }
        Ok(())
    }

    /// Moves one line: requests that ran out leave it (told in their thread); then, in
    /// arrival order, each request whose environment is free for its requester is taken and
    /// deployed as its requester asked, until one is not (the rest wait) or a deploy will
    /// lock the environment again (`branch_lock`). Those still waiting are told their place.
    pub async fn hand_off(&self, line: &str, poster: &dyn Poster) -> anyhow::Result<TickReport> {
        let Some(desk) = self.desk() else {
            return Ok(TickReport::default());
        };
        let mut report = TickReport::default();
        let now = desk.now();
        let requests = desk.store().line_requests(line).await?;
        let app = self.app_of_line(line);
        let mut waiting: Vec<LineRequest> = Vec::new();
        let mut blocked = app.is_none();
        for request in requests {
            if request.expired(now) {
                if let Some(gone) = desk.store().take_line_request(line, request.id).await? {
                    report.line_expired += 1;
                    self.line_request_expired(&desk, poster, &gone).await;
                }
                continue;
            }
            let Some((config, env)) = &app else {
                continue;
            };
            if blocked {
                waiting.push(request);
                continue;
            }
            match desk.gate(config, env, &request.user).await? {
                Gate::Blocked(_) => {
                    blocked = true;
                    waiting.push(request);
                }
                Gate::Free | Gate::Allowed(_) => {
                    let Some(taken) = desk.store().take_line_request(line, request.id).await?
                    else {
                        continue;
                    };
                    report.handed_off += 1;
                    let deployed = self
                        .deploy_from_line(&desk, poster, config, env, &taken)
                        .await;
                    report.deployed.extend(deployed);
                    if config.branch_lock() && !self.is_default_branch(config, &taken.git_ref).await
                    {
                        blocked = true;
                    }
                }
            }
        }
        if report.handed_off > 0 {
            for (i, request) in waiting.iter().enumerate() {
                let told = say::moved_up(&request.git_ref, line, i + 1);
                poster.outbox(&request.chat, &request.user).post(told).await;
            }
        }
        Ok(report)
    }

    async fn is_default_branch(&self, app: &AppConfig, git_ref: &str) -> bool {
        match self.forge().default_branch(app).await {
            Ok(default) => default.as_str() == git_ref,
            // Unknown: assume it will lock, so the rest keep waiting rather than race.
            Err(_) => false,
        }
    }

    async fn deploy_from_line(
        &self,
        desk: &Desk,
        poster: &dyn Poster,
        app: &AppConfig,
        env: &EnvName,
        request: &LineRequest,
    ) -> Vec<DeployResult> {
        desk.record(
            Record::new(
                (&request.user, &request.user_name),
                AuditAction::HandOff,
                app.name.as_str(),
                Some(&request.chat),
            )
            .env(env.as_str())
            .git(&request.git_ref, None)
            .detail(format!("waited since {}", request.at.format("%H:%M UTC"))),
        )
        .await;
        let mut outbox = poster.outbox(&request.chat, &request.user);
        outbox
            .post(say::your_turn(
                app,
                env,
                &request.git_ref,
                &request.user_name,
            ))
            .await;
        let ctx = ChatContext::in_thread(&request.chat, &request.user, &request.user_name);
        Box::pin(self.handle_line(&request.command, &ctx, outbox.as_mut())).await
    }

    async fn line_request_expired(&self, desk: &Desk, poster: &dyn Poster, gone: &LineRequest) {
        let (app, env) = gone.line.split_once('/').unwrap_or((&gone.line, ""));
        desk.record(
            Record::new(
                (&gone.user, &gone.user_name),
                AuditAction::LineExpired,
                app,
                Some(&gone.chat),
            )
            .env(env)
            .git(&gone.git_ref, None),
        )
        .await;
        poster
            .outbox(&gone.chat, &gone.user)
            .post(say::line_request_expired(gone, self.name()))
            .await;
    }
}

/// One environment's row of `queue`: the lock, the requests in line, faseng's runs waiting
/// or running, each with an ETA from the environment's recent durations.
pub async fn queue_row(desk: &Desk, app: &AppConfig, env: &EnvName) -> anyhow::Result<QueueRow> {
    let now = desk.now();
    let line = line_of(&app.name, env);
    let store = desk.store();
    let lock = store.lock_at(line.as_str(), now).await?;
    let requests: Vec<LineRequest> = store
        .line_requests(line.as_str())
        .await?
        .into_iter()
        .filter(|r| !r.expired(now))
        .collect();
    let durations = store.durations(line.as_str()).await?;
    let mut runs = Vec::new();
    for (i, key) in store.line(line.as_str()).await?.into_iter().enumerate() {
        let Some(run) = store.get_run(&key).await? else {
            continue;
        };
        runs.push(WaitingRun {
            id: run.deployment_id,
            git_ref: run.git_ref,
            creator: run.creator,
            running: i == 0 && run.started_at.is_some(),
            eta: eta_at(now, &durations, i),
        });
    }
    let ahead = runs.len();
    let requests = requests
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let eta = lock
                .as_ref()
                .and_then(|l| l.expires_at)
                .or_else(|| eta_at(now, &durations, ahead + i));
            (r, eta)
        })
        .collect();
    Ok(QueueRow {
        app: app.name.clone(),
        env: env.clone(),
        tz: app.tz(),
        lock,
        requests,
        runs,
    })
}

fn eta_at(now: DateTime<Utc>, durations: &[f64], ahead: usize) -> Option<DateTime<Utc>> {
    let secs = eta_secs(durations, ahead)?;
    Some(now + chrono::Duration::milliseconds((secs * 1000.0) as i64))
}
