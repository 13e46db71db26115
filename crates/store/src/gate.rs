//! The release desk's one rule, shared by chima (refusing in chat) and faseng (refusing a
//! deployment made outside chat): may this person deploy this app to this environment now?
//! Someone else's lock or a freeze (an app.json window, or one made in chat) says no, unless
//! the person holds the lock or an unfreeze.

use chrono::{DateTime, Utc};
use deploy_core::desk::{Blocked, frozen};
use deploy_core::{AppConfig, EnvName, LineKey};

use crate::{Allowance, EnvLock, Freeze, Store};

/// Whether a deploy by one person may go ahead in an environment now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Nothing stands in the way.
    Free,
    /// Something would, but the person holds what lets them through (their lock, an
    /// unfreeze).
    Allowed(Vec<Allowance>),
    /// Refused: someone else's lock, or a freeze.
    Blocked(Blocked),
}

/// The freeze in force on `app` in `env` at `now` (an app.json window or one made in chat),
/// the one lasting longest when several are.
pub async fn freeze_in_force(
    store: &dyn Store,
    app: &AppConfig,
    env: &EnvName,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Blocked>> {
    let configured = frozen(app.freezes(), env, now);
    let ad_hoc = store
        .freezes(now)
        .await?
        .into_iter()
        .filter(|f| f.active(now) && f.covers(app.name.as_str(), env.as_str()))
        .max_by_key(|f| f.until)
        .map(|f| freeze_blocked(&f));
    Ok([configured, ad_hoc]
        .into_iter()
        .flatten()
        .max_by_key(|b| match b {
            Blocked::Frozen { until, .. } => Some(*until),
            Blocked::Locked { .. } => None,
        }))
}

/// Whether `user` (a stable id: a chat user id, or a GitHub login for a deployment made
/// outside chat) may deploy `app` to `env` at `now`.
pub async fn gate(
    store: &dyn Store,
    app: &AppConfig,
    env: &EnvName,
    user: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Gate> {
    let mut allowed = Vec::new();
    let line = LineKey::new(&app.name, env.as_str());
    if let Some(lock) = store.lock_at(line.as_str(), now).await? {
        if lock.user != user {
            return Ok(Gate::Blocked(lock_blocked(&lock)));
        }
        allowed.push(Allowance::Lock);
    }
    if let Some(freeze) = freeze_in_force(store, app, env, now).await? {
        let unfrozen = store
            .unfreeze_of(app.name.as_str(), env.as_str(), user, now)
            .await?;
        if unfrozen.is_none() {
            return Ok(Gate::Blocked(freeze));
        }
        allowed.push(Allowance::Unfreeze);
    }
    Ok(if allowed.is_empty() {
        Gate::Free
    } else {
        Gate::Allowed(allowed)
    })
}

/// A lock held by someone else, as a refusal.
pub fn lock_blocked(lock: &EnvLock) -> Blocked {
    Blocked::Locked {
        holder_name: lock.shown_name().to_owned(),
        reason: lock.reason.clone(),
        since: lock.at,
        until: lock.expires_at,
    }
}

/// A freeze made in chat, as a refusal.
pub fn freeze_blocked(freeze: &Freeze) -> Blocked {
    Blocked::Frozen {
        reason: freeze.reason.clone(),
        until: freeze.until,
        by: Some(if freeze.by_name.is_empty() {
            freeze.by.clone()
        } else {
            freeze.by_name.clone()
        }),
    }
}
