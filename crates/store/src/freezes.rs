//! Freezes made in chat (`freeze demo in live for 2h: …`) and the unfreezes that lift a
//! freeze for one person (`unfreeze demo in live: …`). app.json's own freeze windows are
//! configuration, not kept here.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ChatThread;

/// A freeze being made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFreeze {
    /// The app it freezes (`None`: every app).
    pub app: Option<String>,
    /// The environment it freezes (`None`: every environment).
    pub environment: Option<String>,
    /// When it begins.
    pub from: DateTime<Utc>,
    /// When it ends.
    pub until: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// Who made it (a stable id).
    pub by: String,
    /// Who made it, as shown (never compared).
    #[serde(default)]
    pub by_name: String,
    /// Where it was made, if in chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatThread>,
}

/// A freeze made in chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// Assigned by the store, increasing.
    pub id: u64,
    /// The app it freezes (`None`: every app).
    pub app: Option<String>,
    /// The environment it freezes (`None`: every environment).
    pub environment: Option<String>,
    /// When it begins.
    pub from: DateTime<Utc>,
    /// When it ends.
    pub until: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// Who made it (a stable id).
    pub by: String,
    /// Who made it, as shown (never compared).
    #[serde(default)]
    pub by_name: String,
    /// Where it was made, if in chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatThread>,
}

impl Freeze {
    /// Freeze `f` as the store keeps it, under `id`.
    pub(crate) fn new(id: u64, f: NewFreeze) -> Self {
        let NewFreeze {
            app,
            environment,
            from,
            until,
            reason,
            by,
            by_name,
            chat,
        } = f;
        Self {
            id,
            app,
            environment,
            from,
            until,
            reason,
            by,
            by_name,
            chat,
        }
    }

    /// Whether it freezes `app` in `environment`.
    pub fn covers(&self, app: &str, environment: &str) -> bool {
        self.app.as_deref().is_none_or(|a| a == app)
            && self.environment.as_deref().is_none_or(|e| e == environment)
    }

    /// Whether it is in force at `now` (begun, not ended).
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.from <= now && now < self.until
    }
}

/// A freeze lifted for one person on one app+environment, for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfreezeGrant {
    /// The app.
    pub app: String,
    /// The environment.
    pub environment: String,
    /// For whom (a stable id).
    pub user: String,
    /// For whom, as shown (never compared).
    #[serde(default)]
    pub user_name: String,
    /// Why.
    pub reason: String,
    /// When it was granted.
    pub at: DateTime<Utc>,
    /// When it ends.
    pub until: DateTime<Utc>,
}

/// Freezes made in chat, and unfreeze grants.
#[async_trait]
pub trait Freezes: Send + Sync + 'static {
    /// Keeps a freeze; it with its id.
    async fn add_freeze(&self, f: &NewFreeze) -> anyhow::Result<Freeze>;

    /// The freezes not ended at `now` (in force and coming), by start (then id).
    async fn freezes(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Freeze>>;

    /// Keeps a grant, replacing the user's earlier grant for the same app+environment.
    async fn grant_unfreeze(&self, g: &UnfreezeGrant) -> anyhow::Result<()>;

    /// The user's grant for `app` in `environment` if it has not ended at `now`.
    async fn unfreeze_of(
        &self,
        app: &str,
        environment: &str,
        user: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<UnfreezeGrant>>;

    /// The grants not ended at `now`, by app, environment, then user.
    async fn unfreezes(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<UnfreezeGrant>>;
}

/// `found` in the order [`Freezes::freezes`] lists them.
pub(crate) fn sorted_freezes(mut found: Vec<Freeze>) -> Vec<Freeze> {
    found.sort_by_key(|f| (f.from, f.id));
    found
}

/// `found` in the order [`Freezes::unfreezes`] lists them.
pub(crate) fn sorted_grants(mut found: Vec<UnfreezeGrant>) -> Vec<UnfreezeGrant> {
    found.sort_by(|a, b| (&a.app, &a.environment, &a.user).cmp(&(&b.app, &b.environment, &b.user)));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freeze(app: Option<&str>, environment: Option<&str>) -> Freeze {
        let t0: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
        Freeze::new(
            1,
            NewFreeze {
                app: app.map(Into::into),
                environment: environment.map(Into::into),
                from: t0,
                until: t0 + chrono::Duration::hours(1),
                reason: "r".into(),
                by: "U0ALICE".into(),
                by_name: "alice".into(),
                chat: None,
            },
        )
    }

    #[test]
    fn a_freeze_covers_its_app_and_environment_or_all() {
        for (f, covered) in [
            (freeze(None, None), [true, true, true]),
            (freeze(Some("demo"), None), [true, true, false]),
            (freeze(None, Some("live")), [true, false, true]),
            (freeze(Some("demo"), Some("live")), [true, false, false]),
        ] {
            let got = [("demo", "live"), ("demo", "edge"), ("web", "live")]
                .map(|(app, env)| f.covers(app, env));
            assert_eq!(got, covered, "{:?} {:?}", f.app, f.environment);
        }
    }

    #[test]
    fn a_freeze_is_in_force_from_its_start_until_its_end() {
        let f = freeze(None, None);
        let second = chrono::Duration::seconds(1);
        assert!(!f.active(f.from - second));
        assert!(f.active(f.from));
        assert!(f.active(f.until - second));
        assert!(!f.active(f.until));
    }
}
