//! The store chima shares with faseng (the same Redis or SQLite file): locks, lines and
//! history, read without going through GitHub.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deploy_core::{AppName, EnvName};
use deploy_store::{EnvLock, Store, StoreUrl};

/// An open store, and how to name it in messages.
#[derive(Clone)]
pub struct StoreHandle {
    store: Arc<dyn Store>,
    shown: String,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("store", &self.shown)
            .finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// Opens the store at `url` (`FASENG_QUEUE_URL`).
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let url = StoreUrl::parse(url)?;
        Ok(Self {
            store: url.open().await?,
            shown: url.describe(),
        })
    }

    /// A handle on a store already open (local mode: the in-process faseng's).
    pub fn new(store: Arc<dyn Store>, shown: &str) -> Self {
        Self {
            store,
            shown: shown.to_owned(),
        }
    }

    /// The store, as shown (a Redis password left out).
    pub fn describe(&self) -> &str {
        &self.shown
    }

    /// The store itself.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The live locks (not run out at `now`) of `app` in `environments`.
    pub async fn locks_of(
        &self,
        app: &AppName,
        environments: &[EnvName],
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(EnvName, EnvLock)>> {
        let mut locks = Vec::new();
        for env in environments {
            if let Some(lock) = self.store.lock_at(&format!("{app}/{env}"), now).await? {
                locks.push((env.clone(), lock));
            }
        }
        Ok(locks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What faseng's `deploy:lock` leaves, read back through a handle opened from a URL.
    async fn reads_what_faseng_wrote(url: &str) {
        let handle = StoreHandle::open(url).await.unwrap();
        let now: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
        let lock = EnvLock {
            user: "U0ALICE".into(),
            user_name: "alice".into(),
            reason: "testing".into(),
            at: now,
            expires_at: Some(now + chrono::Duration::hours(1)),
            thread: None,
            reminded_at: None,
            branch: None,
        };
        // Written through another handle, as faseng would.
        let faseng = StoreUrl::parse(url).unwrap().open().await.unwrap();
        faseng.set_env_lock("demo/staging", &lock).await.unwrap();
        let app = AppName::parse("demo").unwrap();
        let envs = ["staging", "production"].map(|e| EnvName::parse(e).unwrap());
        assert_eq!(
            handle.locks_of(&app, &envs, now).await.unwrap(),
            [(envs[0].clone(), lock)]
        );
        assert!(
            handle
                .locks_of(&app, &envs, now + chrono::Duration::hours(1))
                .await
                .unwrap()
                .is_empty(),
            "a lock that ran out is not shown"
        );
    }

    #[tokio::test]
    async fn a_handle_opens_and_reads_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("faseng.db").display());
        reads_what_faseng_wrote(&url).await;
        assert!(
            StoreHandle::open(&url)
                .await
                .unwrap()
                .describe()
                .starts_with("sqlite://")
        );
    }

    #[tokio::test]
    async fn a_handle_opens_and_reads_on_redis() {
        let Some(server) = deploy_store::contract::RedisServer::start() else {
            return;
        };
        reads_what_faseng_wrote(&server.url()).await;
    }
}
