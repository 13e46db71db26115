//! The durable job queue (apalis 1.0 on Redis or SQLite) and the store that goes with it,
//! chosen by `FASENG_QUEUE_URL`: the backend adapter (open, push). Above this module there is
//! one code path; the runtime that takes jobs off the queue is [`crate::worker`].
//!
//! apalis traps handled here: every job is pushed with `max_attempts(1)` (Redis ignores it;
//! the worker's handler never returns a retryable error once a run may have started); the
//! SQLite pool has WAL and `synchronous = FULL`, and apalis's migrations run without its
//! `setup` (which turns syncing off); Redis's persistence is checked at start; the Redis
//! connection has a long response timeout.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;

use crate::job::{DeployJob, QUEUE_NAME};
use crate::store::{RedisStore, SqliteStore, Store, redis_connect};

/// Where the queue lives: the store's URL (`FASENG_QUEUE_URL`); the queue shares it.
pub use crate::store::StoreUrl as QueueUrl;

/// Worker timing knobs.
#[derive(Debug, Clone, Copy)]
pub struct QueueTiming {
    /// How often the worker asks the backend for jobs when idle.
    pub poll_interval: Duration,
    /// Worker heartbeat.
    pub heartbeat: Duration,
    /// Missed heartbeats before a worker's jobs are orphans.
    pub missed_heartbeats: usize,
}

impl Default for QueueTiming {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(50),
            heartbeat: Duration::from_secs(10),
            missed_heartbeats: 3,
        }
    }
}

/// The producer side plus the matching store.
#[derive(Clone)]
pub enum Queue {
    /// apalis-redis.
    Redis {
        /// The storage (cloned per push).
        storage: RedisStorage<DeployJob>,
    },
    /// apalis-sqlite.
    Sqlite {
        /// The storage (cloned per push).
        storage: SqliteStorage<DeployJob>,
    },
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Queue::Redis { .. } => "Queue::Redis",
            Queue::Sqlite { .. } => "Queue::Sqlite",
        })
    }
}

/// Opens the queue and its store.
pub async fn open(url: &QueueUrl, timing: QueueTiming) -> anyhow::Result<(Queue, Arc<dyn Store>)> {
    match url {
        QueueUrl::Redis(u) => {
            let conn = redis_connect(u).await?;
            crate::store::warn_redis_durability(&conn).await;
            let config = apalis_redis::Config::default()
                .queue(QUEUE_NAME)
                .heartbeat_interval(timing.heartbeat)
                .missed_heartbeats(timing.missed_heartbeats);
            let storage = RedisStorage::new(conn.clone()).with_config(config);
            Ok((
                Queue::Redis { storage },
                Arc::new(RedisStore::new(conn, QUEUE_NAME)),
            ))
        }
        QueueUrl::Sqlite(path) => {
            let store = SqliteStore::open(path, QUEUE_NAME).await?;
            let config = apalis_sqlite::Config::default()
                .queue(QUEUE_NAME)
                .heartbeat_interval(timing.heartbeat.max(Duration::from_secs(1)))
                .missed_heartbeats(timing.missed_heartbeats);
            let storage = SqliteStorage::new(store.pool()).with_config(config);
            Ok((Queue::Sqlite { storage }, Arc::new(store)))
        }
    }
}

impl Queue {
    /// Pushes a job durably (returns once the backend has it).
    pub async fn push(&self, job: DeployJob) -> anyhow::Result<()> {
        let task = TaskBuilder::new(job).max_attempts(1).build();
        match self {
            Queue::Redis { storage } => storage
                .clone()
                .push_task(task)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            Queue::Sqlite { storage } => storage
                .clone()
                .push_task(task)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        }
        Ok(())
    }
}

impl Queue {
    /// Pushes several jobs durably in one backend call (one Redis script, one SQLite
    /// transaction), in order; returns once the backend has all of them.
    pub async fn push_all(&self, jobs: Vec<DeployJob>) -> anyhow::Result<()> {
        let tasks = futures::stream::iter(
            jobs.into_iter()
                .map(|job| TaskBuilder::new(job).max_attempts(1).build()),
        );
        match self {
            Queue::Redis { storage } => storage
                .clone()
                .push_all(tasks)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            Queue::Sqlite { storage } => storage
                .clone()
                .push_all(tasks)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        }
        Ok(())
    }
}
