//! Environment locks: who holds an app+environment, why, since when and until when.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ChatThread;

/// Who holds a `deploy:lock` on an app+environment, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvLock {
    /// The holder's stable id (chat user id, else GitHub login): what the lock is keyed by.
    pub user: String,
    /// The holder as shown (a display name; never compared).
    #[serde(default)]
    pub user_name: String,
    /// The reason (the lock deployment's description).
    pub reason: String,
    /// Since when it is held.
    pub at: DateTime<Utc>,
    /// When it runs out by itself (`None`: held until unlocked, as Heaven's `deploy:lock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The chat thread it was taken in (reminders and the expiry notice go there); `None`
    /// when taken outside chat (`deploy:lock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<ChatThread>,
    /// When its holder was last reminded of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminded_at: Option<DateTime<Utc>>,
    /// The ref whose deploy took it: a sticky branch lock (app.json `branch_lock`), which
    /// faseng releases when its holder deploys the default branch there again; `None` for a
    /// lock taken by hand (`lock`, `deploy:lock`), which only an unlock or expiry ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

impl EnvLock {
    /// The holder's id (what the lock is keyed by).
    pub fn holder(&self) -> &str {
        &self.user
    }

    /// Since when it is held.
    pub fn since(&self) -> DateTime<Utc> {
        self.at
    }

    /// Whether it has run out at `now` (the caller's clock).
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|end| end <= now)
    }

    /// The name to show for the holder: the display name, else the id.
    pub fn shown_name(&self) -> &str {
        if self.user_name.is_empty() {
            &self.user
        } else {
            &self.user_name
        }
    }
}

/// Environment locks, keyed by line (`app/environment`).
#[async_trait]
pub trait Locks: Send + Sync + 'static {
    /// The `deploy:lock` on a line, if any.
    async fn env_lock(&self, line: &str) -> anyhow::Result<Option<EnvLock>>;

    /// Sets the lock unless another user holds it; returns the holder after the call.
    async fn set_env_lock(&self, line: &str, lock: &EnvLock) -> anyhow::Result<EnvLock>;

    /// Clears the lock when `holder` (a user id) holds it; returns what was there before
    /// the call either way (a lock held by someone else stays).
    async fn clear_env_lock(&self, line: &str, holder: &str) -> anyhow::Result<Option<EnvLock>>;

    /// The lock on a line unless it has run out at `now`.
    async fn lock_at(&self, line: &str, now: DateTime<Utc>) -> anyhow::Result<Option<EnvLock>> {
        Ok(self.env_lock(line).await?.filter(|l| !l.expired(now)))
    }

    /// Sets the lock unless another user holds one that has not run out at `now` (an
    /// expired lock is replaced); returns the holder after the call.
    async fn acquire_lock(
        &self,
        line: &str,
        lock: &EnvLock,
        now: DateTime<Utc>,
    ) -> anyhow::Result<EnvLock>;

    /// Sets the lock whoever holds it (a takeover); returns the lock it replaced.
    async fn take_over_lock(&self, line: &str, lock: &EnvLock) -> anyhow::Result<Option<EnvLock>>;

    /// Every lock, expired ones included (for reminders and expiry), by line.
    async fn locks(&self) -> anyhow::Result<Vec<(String, EnvLock)>>;

    /// Replaces the lock with `new` only if it is still held by `holder` since `since`
    /// (extending it, marking it reminded); whether it did. Atomic: a lock released, taken
    /// over or taken again in between is left alone.
    async fn update_lock_if(
        &self,
        line: &str,
        holder: &str,
        since: DateTime<Utc>,
        new: &EnvLock,
    ) -> anyhow::Result<bool>;

    /// Removes the lock only if it is still held by `holder` since `since`; returns it to
    /// the one caller that removed it (`None` to every other).
    async fn release_lock_if(
        &self,
        line: &str,
        holder: &str,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Option<EnvLock>>;

    /// Removes the lock only if it has run out at `now`; returns it to the one caller that
    /// removed it. What expiry should use: unlike [`Locks::release_lock_if`], it leaves a
    /// lock that was extended after the caller saw it run out.
    async fn expire_lock(&self, line: &str, now: DateTime<Utc>) -> anyhow::Result<Option<EnvLock>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_stored_before_threads_and_reminders_still_reads() {
        let old = r#"{"user":"U0OLD","user_name":"old","reason":"r","at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T04:00:00Z"}"#;
        let lock: EnvLock = serde_json::from_str(old).unwrap();
        assert_eq!(
            (lock.thread, lock.reminded_at, lock.branch),
            (None, None, None)
        );
        // And a lock without them is written as before.
        assert_eq!(
            serde_json::to_string(&EnvLock {
                thread: None,
                reminded_at: None,
                branch: None,
                ..serde_json::from_str(old).unwrap()
            })
            .unwrap(),
            old
        );
    }
}
