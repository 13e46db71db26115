//! The release desk's commands: locks, the line, freezes and the audit. Each checks what a
//! deploy would check (app, environment, room) before it changes anything, writes what it
//! did to the audit, and answers once.

use deploy_core::desk::{DEFAULT_UNFREEZE, MAX_LOCK, MAX_UNFREEZE, upcoming};
use deploy_core::{AppConfig, AppName, EnvName, Span};
use deploy_store::{AuditAction, AuditQuery, EnvLock, NewFreeze, UnfreezeGrant};

use crate::chat::{ChatContext, Outbox, Reply};
use crate::desk::{Desk, Record, line_of, lock_blocked};
use crate::grammar::{DeskCommand, FreezeScope};
use crate::messages::{self, desk as say};

use super::{Bot, DeployResult};

/// How far ahead `freezes` looks for coming windows.
const FREEZES_HORIZON: Span = Span::from_secs(14 * 86_400);
/// Occurrences of one app.json window `freezes` shows at most.
const FREEZES_PER_WINDOW: usize = 3;
/// Audit entries `audit` shows.
const AUDIT_SHOWN: usize = 20;

impl Bot {
    /// Handles a release-desk command; the deployments it set off (a line that moved).
    pub async fn desk_command(
        &self,
        command: DeskCommand,
        ctx: &ChatContext,
        outbox: &mut dyn Outbox,
    ) -> Vec<DeployResult> {
        let Some(desk) = self.desk() else {
            outbox.post(say::no_store()).await;
            return Vec::new();
        };
        let mut released = None;
        let reply = match self.desk_reply(&desk, command, ctx, &mut released).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "release desk command failed");
                say::store_failed(&format!("{e:#}"))
            }
        };
        outbox.post(reply).await;
        match released {
            Some(line) => self.after_release(&line).await,
            None => Vec::new(),
        }
    }

    /// The answer to a desk command; `released` names the line whose lock or freeze it
    /// lifted, so the line can move once the answer is out.
    async fn desk_reply(
        &self,
        desk: &Desk,
        command: DeskCommand,
        ctx: &ChatContext,
        released: &mut Option<String>,
    ) -> anyhow::Result<Reply> {
        match command {
            DeskCommand::Lock {
                app,
                env,
                span,
                reason,
            } => self.lock(desk, ctx, &app, &env, span, &reason).await,
            DeskCommand::Unlock { app, env } => self.unlock(desk, ctx, &app, &env, released).await,
            DeskCommand::TakeOver { app, env, reason } => {
                self.take_over(desk, ctx, &app, &env, reason.as_deref())
                    .await
            }
            DeskCommand::Locks { app } => self.locks(desk, app.as_ref()).await,
            DeskCommand::Cancel { app, env } => self.cancel(desk, ctx, &app, &env).await,
            DeskCommand::Queue { app, env } => self.queue(desk, app.as_ref(), env.as_ref()).await,
            DeskCommand::Freeze {
                scope,
                env,
                span,
                reason,
            } => {
                self.freeze(desk, ctx, &scope, env.as_ref(), span, &reason)
                    .await
            }
            DeskCommand::Unfreeze {
                app,
                env,
                span,
                reason,
            } => {
                self.unfreeze(desk, ctx, &app, &env, span, &reason, released)
                    .await
            }
            DeskCommand::Freezes { app } => self.freezes(desk, app.as_ref()).await,
            DeskCommand::Audit { app, env, since } => {
                self.audit(desk, &app, env.as_ref(), since).await
            }
        }
    }

    /// The app and environment a changing desk command names, checked as a deploy is
    /// (known app, its environment, a room it may be deployed from).
    fn desk_target(
        &self,
        app: &AppName,
        env: &EnvName,
        ctx: &ChatContext,
    ) -> Result<&AppConfig, Reply> {
        let app = self.app(app)?;
        if !app.has_environment(env) {
            return Err(messages::unknown_environment(app, env));
        }
        self.check_room(app, ctx)?;
        Ok(app)
    }

    async fn lock(
        &self,
        desk: &Desk,
        ctx: &ChatContext,
        app: &AppName,
        env: &EnvName,
        span: Option<Span>,
        reason: &str,
    ) -> anyhow::Result<Reply> {
        let config = match self.desk_target(app, env, ctx) {
            Ok(c) => c,
            Err(reply) => return Ok(reply),
        };
        let span = span.unwrap_or_else(|| config.lock_ttl());
        if span > MAX_LOCK {
            return Ok(say::too_long("A lock", span, MAX_LOCK));
        }
        let now = desk.now();
        let line = line_of(app, env);
        let held = desk.lock(app, env).await?;
        let renewing = held.as_ref().is_some_and(|l| l.user == ctx.user_id);
        let wanted = EnvLock {
            user: ctx.user_id.clone(),
            user_name: ctx.user_name.clone(),
            reason: reason.to_owned(),
            at: held.as_ref().filter(|_| renewing).map_or(now, |l| l.at),
            expires_at: Some(now + span.as_chrono()),
            thread: Some(ctx.chat_thread()),
            reminded_at: renewing.then_some(now),
            branch: None,
        };
        let holder = desk
            .store()
            .acquire_lock(line.as_str(), &wanted, now)
            .await?;
        if holder.user != ctx.user_id {
            return Ok(say::lock_refused(
                config,
                env,
                &lock_blocked(&holder),
                now,
                &self.name,
            ));
        }
        let action = if renewing {
            AuditAction::Extend
        } else {
            AuditAction::Lock
        };
        desk.record(
            Record::new(
                (&ctx.user_id, &ctx.user_name),
                action,
                app.as_str(),
                Some(&ctx.chat_thread()),
            )
            .env(env.as_str())
            .detail(format!("for {span}: {reason}")),
        )
        .await;
        Ok(say::locked(config, env, &holder, renewing, now, &self.name))
    }

    async fn unlock(
        &self,
        desk: &Desk,
        ctx: &ChatContext,
        app: &AppName,
        env: &EnvName,
        released: &mut Option<String>,
    ) -> anyhow::Result<Reply> {
        let config = match self.desk_target(app, env, ctx) {
            Ok(c) => c,
            Err(reply) => return Ok(reply),
        };
        let now = desk.now();
        let line = line_of(app, env);
        let Some(held) = desk.lock(app, env).await? else {
            return Ok(say::not_locked(app, env));
        };
        if held.user != ctx.user_id {
            return Ok(say::not_your_lock(config, env, &held, now, &self.name));
        }
        let Some(gone) = desk
            .store()
            .release_lock_if(line.as_str(), &held.user, held.at)
            .await?
        else {
            // Taken over or run out between the read and the release.
            return Ok(say::not_locked(app, env));
        };
        desk.record(
            Record::new(
                (&ctx.user_id, &ctx.user_name),
                AuditAction::Unlock,
                app.as_str(),
                Some(&ctx.chat_thread()),
            )
            .env(env.as_str())
            .detail(gone.reason.clone()),
        )
        .await;
        let waiting = desk.store().line_requests(line.as_str()).await?.len();
        *released = Some(line.to_string());
        Ok(say::unlocked(app, env, waiting))
    }

    async fn take_over(
        &self,
        desk: &Desk,
        ctx: &ChatContext,
        app: &AppName,
        env: &EnvName,
        reason: Option<&str>,
    ) -> anyhow::Result<Reply> {
        let config = match self.desk_target(app, env, ctx) {
            Ok(c) => c,
            Err(reply) => return Ok(reply),
        };
        let now = desk.now();
        let line = line_of(app, env);
        let Some(held) = desk.lock(app, env).await? else {
            return Ok(say::not_locked(app, env));
        };
        if held.user == ctx.user_id {
            return Ok(say::already_yours(app, env));
        }
        let wanted = EnvLock {
            user: ctx.user_id.clone(),
            user_name: ctx.user_name.clone(),
            reason: match reason {
                Some(r) => r.to_owned(),
                None => format!("taken over from {}", held.shown_name()),
            },
            at: now,
            expires_at: Some(now + config.lock_ttl().as_chrono()),
            thread: Some(ctx.chat_thread()),
            reminded_at: None,
            branch: None,
        };
        let old = desk
            .store()
            .take_over_lock(line.as_str(), &wanted)
            .await?
            .filter(|old| !old.expired(now))
            .unwrap_or(held);
        desk.record(
            Record::new(
                (&ctx.user_id, &ctx.user_name),
                AuditAction::Takeover,
                app.as_str(),
                Some(&ctx.chat_thread()),
            )
            .env(env.as_str())
            .detail(format!(
                "from {}{}",
                old.shown_name(),
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            )),
        )
        .await;
        if let Some(poster) = self.poster() {
            let told = say::lock_taken_from_you(app, env, &ctx.user_name, reason);
            if let Some(thread) = &old.thread {
                poster.outbox(thread, &old.user).post(told.clone()).await;
            }
            poster.direct(&old.user, told).await;
        }
        Ok(say::taken_over(config, env, &old, &wanted, now))
    }

    async fn locks(&self, desk: &Desk, app: Option<&AppName>) -> anyhow::Result<Reply> {
        if let Some(app) = app
            && let Err(reply) = self.app(app)
        {
            return Ok(reply);
        }
        let now = desk.now();
        let mut held: Vec<(String, EnvLock)> = desk
            .store()
            .locks()
            .await?
            .into_iter()
            .filter(|(line, lock)| {
                !lock.expired(now)
                    && app
                        .is_none_or(|a| line.split_once('/').is_some_and(|(l, _)| l == a.as_str()))
            })
            .collect();
        held.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(say::locks(app, &held, |line| self.tz_of_line(line), now))
    }

    async fn cancel(
        &self,
        desk: &Desk,
        ctx: &ChatContext,
        app: &AppName,
        env: &EnvName,
    ) -> anyhow::Result<Reply> {
        if let Err(reply) = self.desk_target(app, env, ctx) {
            return Ok(reply);
        }
        let line = line_of(app, env);
        let Some(left) = desk.store().leave_line(line.as_str(), &ctx.user_id).await? else {
            return Ok(say::not_in_line(app, env));
        };
        desk.record(
            Record::new(
                (&ctx.user_id, &ctx.user_name),
                AuditAction::LineCancel,
                app.as_str(),
                Some(&ctx.chat_thread()),
            )
            .env(env.as_str())
            .git(&left.git_ref, None),
        )
        .await;
        Ok(say::left_line(app, env, &left.git_ref))
    }

    async fn queue(
        &self,
        desk: &Desk,
        app: Option<&AppName>,
        env: Option<&EnvName>,
    ) -> anyhow::Result<Reply> {
        let apps: Vec<&AppConfig> = match app {
            Some(name) => match self.app(name) {
                Ok(a) => vec![a],
                Err(reply) => return Ok(reply),
            },
            None => self.apps.iter().collect(),
        };
        if let (Some(app), Some(env)) = (apps.first(), env)
            && !app.has_environment(env)
        {
            return Ok(messages::unknown_environment(app, env));
        }
        let now = desk.now();
        let mut rows = Vec::new();
        for app in apps {
            for e in app
                .environments
                .iter()
                .filter(|e| env.is_none_or(|w| w == *e))
            {
                let row = crate::desk::tick::queue_row(desk, app, e).await?;
                // One named environment is always shown; otherwise only what has anything
                // in it (a lock, a request, a run).
                if env.is_some() || !row.is_empty() {
                    rows.push(row);
                }
            }
        }
        Ok(say::queue(&rows, now))
    }

    #[allow(clippy::too_many_arguments)]
    async fn freeze(
        &self,
        desk: &Desk,
        ctx: &ChatContext,
        scope: &FreezeScope,
        env: Option<&EnvName>,
        span: Span,
        reason: &str,
    ) -> anyhow::Result<Reply> {
        if span > MAX_LOCK {
            return Ok(say::too_long("A freeze", span, MAX_LOCK));
        }
        let app = match scope {
            FreezeScope::App(name) => {
                let app = match self.app(name) {
                    Ok(a) => a,
                    Err(reply) => return Ok(reply),
                };
                if let Some(env) = env
                    && !app.has_environment(env)
                {
                    return Ok(messages::unknown_environment(app, env));
                }
                if let Err(reply) = self.check_room(app, ctx) {
                    return Ok(reply);
                }
                Some(app)
            }
            FreezeScope::All => None,
        };
        let now = desk.now();
        let freeze = desk
            .store()
            .add_freeze(&NewFreeze {
                app: app.map(|a| a.name.to_string()),
                environment: env.map(|e| e.to_string()),
                from: now,
                until: now + span.as_chrono(),
                reason: reason.to_owned(),
                by: ctx.user_id.clone(),
                by_name: ctx.user_name.clone(),
                chat: Some(ctx.chat_thread()),
            })
            .await?;
        let app_label = app.map_or("all", |a| a.name.as_str());
        let chat = ctx.chat_thread();
        let mut record = Record::new(
            (&ctx.user_id, &ctx.user_name),
            AuditAction::Freeze,
            app_label,
            Some(&chat),
        )
        .detail(format!("for {span}: {reason}"));
        if let Some(env) = env {
            record = record.env(env.as_str());
        }
        desk.record(record).await;
        let tz = app.map_or(deploy_core::desk::Tz::UTC, |a| a.tz());
        Ok(say::frozen_now(&freeze, &ctx.user_name, now, tz))
    }

    #[allow(clippy::too_many_arguments)]
    async fn unfreeze(
        &self,
        desk: &Desk,
        ctx: &ChatContext,
        app: &AppName,
        env: &EnvName,
        span: Option<Span>,
        reason: &str,
        released: &mut Option<String>,
    ) -> anyhow::Result<Reply> {
        let config = match self.desk_target(app, env, ctx) {
            Ok(c) => c,
            Err(reply) => return Ok(reply),
        };
        let span = span.unwrap_or(DEFAULT_UNFREEZE);
        if span > MAX_UNFREEZE {
            return Ok(say::too_long("An unfreeze", span, MAX_UNFREEZE));
        }
        let Some(freeze) = desk.freeze(config, env).await? else {
            return Ok(say::not_frozen(app, env));
        };
        let now = desk.now();
        let until = now + span.as_chrono();
        desk.store()
            .grant_unfreeze(&UnfreezeGrant {
                app: app.to_string(),
                environment: env.to_string(),
                user: ctx.user_id.clone(),
                user_name: ctx.user_name.clone(),
                reason: reason.to_owned(),
                at: now,
                until,
            })
            .await?;
        desk.record(
            Record::new(
                (&ctx.user_id, &ctx.user_name),
                AuditAction::Unfreeze,
                app.as_str(),
                Some(&ctx.chat_thread()),
            )
            .env(env.as_str())
            .detail(format!("for {span}: {reason}")),
        )
        .await;
        *released = Some(line_of(app, env).to_string());
        Ok(say::unfrozen(
            config,
            env,
            &ctx.user_name,
            reason,
            &freeze,
            until,
            now,
        ))
    }

    async fn freezes(&self, desk: &Desk, app: Option<&AppName>) -> anyhow::Result<Reply> {
        let apps: Vec<&AppConfig> = match app {
            Some(name) => match self.app(name) {
                Ok(a) => vec![a],
                Err(reply) => return Ok(reply),
            },
            None => self.apps.iter().collect(),
        };
        let now = desk.now();
        let mut configured = Vec::new();
        for a in &apps {
            for occurrence in upcoming(a.freezes(), None, now, FREEZES_HORIZON, FREEZES_PER_WINDOW)
            {
                configured.push((*a, occurrence));
            }
        }
        configured.sort_by_key(|(_, o)| o.interval.start);
        let ad_hoc: Vec<_> = desk
            .store()
            .freezes(now)
            .await?
            .into_iter()
            .filter(|f| app.is_none_or(|a| f.app.as_deref().is_none_or(|fa| fa == a.as_str())))
            .collect();
        let unfreezes: Vec<_> = desk
            .store()
            .unfreezes(now)
            .await?
            .into_iter()
            .filter(|g| app.is_none_or(|a| g.app == a.as_str()))
            .collect();
        let tz = match apps.as_slice() {
            [one] => one.tz(),
            _ => deploy_core::desk::Tz::UTC,
        };
        Ok(say::freezes(app, &configured, &ad_hoc, &unfreezes, now, tz))
    }

    async fn audit(
        &self,
        desk: &Desk,
        app: &AppName,
        env: Option<&EnvName>,
        since: Option<Span>,
    ) -> anyhow::Result<Reply> {
        let config = match self.app(app) {
            Ok(a) => a,
            Err(reply) => return Ok(reply),
        };
        if let Some(env) = env
            && !config.has_environment(env)
        {
            return Ok(messages::unknown_environment(config, env));
        }
        let now = desk.now();
        let page = desk
            .store()
            .audit(&AuditQuery {
                app: Some(app.to_string()),
                environment: env.map(|e| e.to_string()),
                since: since.map(|s| now - s.as_chrono()),
                limit: AUDIT_SHOWN,
                cursor: None,
            })
            .await?;
        Ok(say::audit(app, env, since, &page.items, now, config.tz()))
    }

    /// The time zone of the app a line (`app/env`) belongs to (UTC when unknown).
    pub(crate) fn tz_of_line(&self, line: &str) -> deploy_core::desk::Tz {
        line.split_once('/')
            .and_then(|(app, _)| AppName::parse(app).ok())
            .and_then(|app| self.apps.get(&app).map(AppConfig::tz))
            .unwrap_or(deploy_core::desk::Tz::UTC)
    }

    /// After a lock or freeze stopped standing in a line's way: the line moves at once
    /// (the ticker would move it too, later); the deployments it set off.
    pub(crate) async fn after_release(&self, line: &str) -> Vec<DeployResult> {
        let Some(poster) = self.poster() else {
            return Vec::new();
        };
        match Box::pin(self.hand_off(line, poster.as_ref())).await {
            Ok(report) => report.deployed,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), line, "could not move the line");
                Vec::new()
            }
        }
    }
}
