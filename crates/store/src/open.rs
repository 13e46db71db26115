//! Opening the store a URL names (`FASENG_QUEUE_URL`: the store sits next to the queue).

use std::path::PathBuf;
use std::sync::Arc;

use crate::{RedisStore, SqliteStore, Store};

/// The apalis queue faseng's deployments wait in (the store counts and sweeps its jobs).
pub const DEFAULT_QUEUE: &str = "faseng:deployments";

/// Where a store lives, from `FASENG_QUEUE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `redis://…`, `rediss://…` or `redis+unix://…`.
    Redis(String),
    /// `sqlite://path` (or `sqlite:path`).
    Sqlite(PathBuf),
}

impl StoreUrl {
    /// Parses a `FASENG_QUEUE_URL`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let url = url.trim();
        if url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://")
        {
            Ok(Self::Redis(url.to_owned()))
        } else if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            anyhow::ensure!(!path.is_empty(), "FASENG_QUEUE_URL sqlite:// needs a path");
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else {
            anyhow::bail!("FASENG_QUEUE_URL must start with redis:// or sqlite://, got {url:?}")
        }
    }

    /// The URL as shown (a Redis password is left out).
    pub fn describe(&self) -> String {
        match self {
            Self::Redis(url) => match url::Url::parse(url) {
                Ok(mut parsed) if parsed.password().is_some() => {
                    let _ = parsed.set_password(Some("***"));
                    parsed.to_string()
                }
                _ => url.clone(),
            },
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
        }
    }

    /// Opens the store (creating SQLite's tables when they are missing).
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self {
            Self::Redis(url) => Arc::new(RedisStore::new(
                crate::redis_connect(url).await?,
                DEFAULT_QUEUE,
            )),
            Self::Sqlite(path) => Arc::new(SqliteStore::open(path, DEFAULT_QUEUE).await?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_apart_and_passwords_not_shown() {
        assert_eq!(
            StoreUrl::parse("sqlite://.faseng/faseng.db").unwrap(),
            StoreUrl::Sqlite(".faseng/faseng.db".into())
        );
        let redis = StoreUrl::parse(" redis://:hunter2@redis:6379/0 ").unwrap();
        assert_eq!(
            redis,
            StoreUrl::Redis("redis://:hunter2@redis:6379/0".into())
        );
        assert!(
            !redis.describe().contains("hunter2"),
            "{}",
            redis.describe()
        );
        for bad in ["", "sqlite://", "postgres://x", "redis"] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
