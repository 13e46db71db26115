//! The release desk's rules over the store chima shares with faseng: whether a deploy may go
//! ahead now (a lock, a freeze, the speaker's own lock or unfreeze), what a request in line
//! waits for, desk tickets and the audit. No chat here: handlers say what happened.
//!
//! Every time is read from one injectable [`Clock`], so expiry, reminders and windows are
//! tested by moving a clock, never by sleeping.

pub mod auto_rollback;
pub mod export;
pub mod releases;
pub mod tick;
pub mod ticker;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deploy_core::desk::Blocked;
use deploy_core::{AppConfig, AppName, Clock, EnvName, LineKey};
use deploy_store::{
    Allowance, AuditAction, AuditEntry, ChatThread, DeskTicket, EnvLock, Store, freeze_in_force,
    gate,
};
pub use deploy_store::{Gate, lock_blocked};

/// How long a desk ticket may wait for its deployment's webhook.
pub const TICKET_TTL: chrono::Duration = chrono::Duration::hours(1);

/// The desk: the shared store, the clock.
#[derive(Clone)]
pub struct Desk {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Desk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk").finish_non_exhaustive()
    }
}

/// An app's line key for `env`.
pub fn line_of(app: &AppName, env: &EnvName) -> LineKey {
    LineKey::new(app, env.as_str())
}

impl Desk {
    /// A desk over `store`, telling time by `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Now, by the desk's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The lock on `app` in `env` unless it has run out.
    pub async fn lock(&self, app: &AppName, env: &EnvName) -> anyhow::Result<Option<EnvLock>> {
        self.store
            .lock_at(line_of(app, env).as_str(), self.now())
            .await
    }

    /// The freeze in force on `app` in `env` now (an app.json window or one made in chat),
    /// the one lasting longest when several are.
    pub async fn freeze(&self, app: &AppConfig, env: &EnvName) -> anyhow::Result<Option<Blocked>> {
        freeze_in_force(self.store.as_ref(), app, env, self.now()).await
    }

    /// Whether `user` (a chat user id) may deploy `app` to `env` now.
    pub async fn gate(&self, app: &AppConfig, env: &EnvName, user: &str) -> anyhow::Result<Gate> {
        gate(self.store.as_ref(), app, env, user, self.now()).await
    }

    /// Writes a single-use ticket for a deployment of `sha` by `user`, allowed by `allowed_by`
    /// (empty: only who asked); its id goes into `payload.desk_ticket`.
    pub async fn issue_ticket(
        &self,
        app: &AppName,
        env: &EnvName,
        sha: &str,
        (user, user_name): (&str, &str),
        allowed_by: Vec<Allowance>,
    ) -> anyhow::Result<String> {
        let now = self.now();
        let ticket = DeskTicket {
            id: DeskTicket::new_id()?,
            app: app.to_string(),
            environment: env.to_string(),
            sha: sha.to_owned(),
            user: user.to_owned(),
            user_name: user_name.to_owned(),
            allowed_by,
            at: now,
            expires_at: now + TICKET_TTL,
        };
        self.store.issue_ticket(&ticket).await?;
        Ok(ticket.id)
    }

    /// Appends a release action to the audit; a store failure is logged, never fatal to the
    /// action it records (which has happened already).
    pub async fn record(&self, entry: Record<'_>) {
        let entry = AuditEntry {
            at: self.now(),
            actor: entry.actor.0.to_owned(),
            actor_name: entry.actor.1.to_owned(),
            action: entry.action,
            app: entry.app.to_owned(),
            environment: entry.env.map(str::to_owned),
            git_ref: entry.git_ref.map(str::to_owned),
            sha: entry.sha.map(str::to_owned),
            room: entry.chat.map(|c| {
                if c.room_name.is_empty() {
                    c.room.clone()
                } else {
                    format!("#{}", c.room_name)
                }
            }),
            adapter: entry.chat.map(|c| c.adapter.clone()),
            detail: entry.detail,
        };
        if let Err(e) = self.store.audit_append(&entry).await {
            tracing::warn!(error = %format!("{e:#}"), action = entry.action.as_str(), "could not write the audit entry");
        }
    }
}

/// What [`Desk::record`] writes: who, what, where.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// Who (stable id, shown name).
    pub actor: (&'a str, &'a str),
    /// What.
    pub action: AuditAction,
    /// The app (`all` for a freeze of every app).
    pub app: &'a str,
    /// The environment, when there is one.
    pub env: Option<&'a str>,
    /// The ref, when there is one.
    pub git_ref: Option<&'a str>,
    /// The commit, when known.
    pub sha: Option<&'a str>,
    /// Where in chat.
    pub chat: Option<&'a ChatThread>,
    /// The reason, the duration, the deployment.
    pub detail: String,
}

impl<'a> Record<'a> {
    /// `actor` did `action` to `app`, from `chat`.
    pub fn new(
        actor: (&'a str, &'a str),
        action: AuditAction,
        app: &'a str,
        chat: Option<&'a ChatThread>,
    ) -> Self {
        Self {
            actor,
            action,
            app,
            env: None,
            git_ref: None,
            sha: None,
            chat,
            detail: String::new(),
        }
    }

    /// In `env`.
    pub fn env(mut self, env: &'a str) -> Self {
        self.env = Some(env);
        self
    }

    /// Of `git_ref` (and `sha`, when known).
    pub fn git(mut self, git_ref: &'a str, sha: Option<&'a str>) -> Self {
        self.git_ref = Some(git_ref);
        self.sha = sha;
        self
    }

    /// With `detail`.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

#[cfg(test)]
mod tests;
