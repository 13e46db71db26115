//! The durable job queue (apalis 1.0 on Redis or SQLite) and the store that goes with it,
//! chosen by `FASENG_QUEUE_URL`. Above this module there is one code path.
//!
//! apalis traps handled here: every job is pushed with `max_attempts(1)` and the handler
//! never returns a retryable error once a run may have started (Redis ignores
//! `max_attempts`); each process gets a unique worker name; the SQLite pool has WAL and
//! `synchronous = FULL`, and apalis's migrations run without its `setup` (which turns syncing
//! off); Redis's persistence is checked at start; the Redis connection has a
//! long response timeout; the worker polls on a short interval with a timer that is always
//! armed (apalis' `poll_with_interval` can leave none after an empty fetch).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use apalis::prelude::*;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;

use crate::deployer::Deployer;
use crate::job::{DeployJob, QUEUE_NAME};
use crate::store::{RedisStore, SqliteStore, Store, redis_connect};

/// Where the queue lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueUrl {
    /// `redis://…` or `rediss://…`.
    Redis(String),
    /// `sqlite://PATH`.
    Sqlite(PathBuf),
}

impl QueueUrl {
    /// Parses `FASENG_QUEUE_URL`.
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
}

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

async fn handle(
    job: DeployJob,
    task_id: TaskId,
    deployer: Data<Arc<Deployer>>,
) -> Result<(), BoxDynError> {
    let queue_job = Some(task_id.to_string());
    // `process` fails only before a run started (the store was unreachable), so trying
    // again here is safe; the start marker keeps a run from ever happening twice. apalis
    // itself never retries (Redis would ignore max_attempts).
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=PRE_START_ATTEMPTS {
        match deployer.process(job.clone(), queue_job.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < PRE_START_ATTEMPTS => {
                tracing::warn!(error = %format!("{e:#}"), attempt, "job could not start; trying again in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), deployment = job.deployment_id, "job could not start; giving up");
                return Err(AbortError::new(e.into_boxed_dyn_error()).into());
            }
        }
    }
    Ok(())
}

/// How often a job whose run has not started is tried when the store fails (~2 minutes).
const PRE_START_ATTEMPTS: u32 = 12;

/// A worker name unique to this process (apalis refuses a name that is still heartbeating).
pub fn unique_worker_name(prefix: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{}-{nanos:x}", host.trim(), std::process::id())
}

/// Wakes the worker every `interval` and always leaves a timer armed.
///
/// apalis' own `poll_with_interval` replaces a timer that fired with a new one it does not
/// poll; when that same poll ends in an empty fetch, nothing wakes the worker until the next
/// heartbeat (seen in `bench drain`: a single worker that went idle picked up the next job
/// only when its heartbeat came due, 1–2 s later; with the default heartbeat it would be up
/// to 10 s). Here a timer that fired is re-armed and polled at once, so a waker is
/// always registered.
struct ArmedInterval {
    interval: Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl ArmedInterval {
    fn new(interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        Self {
            interval,
            sleep: Box::pin(tokio::time::sleep(interval)),
        }
    }
}

impl PollStrategy for ArmedInterval {
    fn poll_drive(
        &mut self,
        cx: &mut std::task::Context<'_>,
        _snapshot: &PollSnapshot,
    ) -> std::task::Poll<Option<()>> {
        let mut fired = false;
        while self.sleep.as_mut().poll(cx).is_ready() {
            fired = true;
            let next = tokio::time::Instant::now() + self.interval;
            self.sleep.as_mut().reset(next);
        }
        if fired {
            std::task::Poll::Ready(Some(()))
        } else {
            std::task::Poll::Pending
        }
    }
}

/// Runs a worker until `shutdown` resolves, then waits up to `shutdown_timeout` (counted
/// from the signal) for running jobs. Returns `Err` when the worker stopped on its own
/// (backend failure after a few in-place restarts): callers restart or exit non-zero.
///
/// apalis's own `shutdown_timeout` is not used: its timer starts when the monitor is built,
/// so a process that has run longer than the timeout would not wait at all.
pub async fn run_worker(
    queue: &Queue,
    deployer: Arc<Deployer>,
    name: &str,
    concurrency: usize,
    timing: QueueTiming,
    shutdown_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let name = name.to_owned();
    macro_rules! monitor {
        ($storage:expr) => {{
            let storage = $storage.clone();
            let deployer = deployer.clone();
            Monitor::new()
                .register(move |restarts| {
                    // A restarted worker gets a new name: apalis refuses one still heartbeating.
                    let name = if restarts == 0 { name.clone() } else { format!("{name}-r{restarts}") };
                    WorkerBuilder::new(name.as_str())
                        .backend(storage.clone().poll_with_strategy(ArmedInterval::new(timing.poll_interval)))
                        .catch_panic()
                        .concurrency(concurrency)
                        .data(deployer.clone())
                        .build(handle)
                })
                .should_restart(|w, e| {
                    tracing::error!(worker = %w.name(), error = %e, restarts = w.restarts(), "worker failed");
                    w.restarts() < 3
                })
        }};
    }
    let monitor = match queue {
        Queue::Redis { storage } => monitor!(storage),
        Queue::Sqlite { storage } => monitor!(storage),
    };
    let ctx = monitor.context();
    let run = monitor.run();
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => {
            result.context("the worker stopped")?;
            anyhow::bail!("the worker stopped without being asked to")
        }
        () = shutdown => {}
    }
    tracing::info!("stopping: no new jobs; waiting up to {shutdown_timeout:?} for running ones");
    let _ = ctx.shutdown();
    match tokio::time::timeout(shutdown_timeout, run).await {
        Ok(result) => result.context("the worker stopped"),
        Err(_) => {
            tracing::warn!(
                "deployments still running after {shutdown_timeout:?}; exiting (another worker will report them)"
            );
            Ok(())
        }
    }
}
