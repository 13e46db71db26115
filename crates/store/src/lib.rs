//! Durable state that apalis does not keep for us, behind one trait with a Redis and a
//! SQLite implementation: delivery dedup, the per-app+environment waiting line, environment
//! locks (`deploy:lock`), run records and "started" markers, recent durations for the ETA,
//! the log store (so any `faseng serve` can show any run's log), the key log links are
//! signed with (so every faseng process signs them alike) and duty leases (which process does
//! a periodic job, such as reconciling with GitHub, when several share one store).

#[cfg(any(test, feature = "testing"))]
pub mod flaky;
pub mod messages;
mod retry;
pub mod outbox;
mod redis_outbox;
mod redis_store;
mod sqlite_outbox;
mod sqlite_store;

pub use outbox::{
    ClaimedLane, Lane, LaneKey, OutboxEntry, OutboxItem, Settle, SettleRetry, StoredEntry,
};
pub use redis_store::{
    RedisStore, connect as redis_connect, warn_if_not_durable as warn_redis_durability,
};
pub use retry::retry;
pub use sqlite_store::{SqliteStore, database_files};

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How long delivery ids are remembered for dedup (GitHub redelivers for up to a few days).
pub const DELIVERY_TTL: Duration = Duration::from_secs(8 * 24 * 3600);

/// How many successful run durations are kept per app+environment for the ETA.
pub const DURATIONS_KEPT: usize = 10;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Accepted, waiting for a worker or for its turn in the line.
    Queued,
    /// The provider (or checkout) is running.
    InProgress,
    /// The provider succeeded.
    Success,
    /// The provider ran and failed.
    Failure,
    /// It could not run.
    Error,
}

impl RunState {
    /// The GitHub deployment status state name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::InProgress => "in_progress",
            RunState::Success => "success",
            RunState::Failure => "failure",
            RunState::Error => "error",
        }
    }

    /// True for `success`, `failure` and `error`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Success | RunState::Failure | RunState::Error
        )
    }
}

/// What is known about one deployment run; stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `owner/repo/id`.
    pub key: String,
    /// `owner/repo`.
    pub repo: String,
    /// The GitHub deployment id.
    pub deployment_id: u64,
    /// App name (resolved from the payload).
    pub app: String,
    /// Environment.
    pub environment: String,
    /// Task (`deploy`, `deploy:lock`, …).
    pub task: String,
    /// Ref as sent (may be invalid: it is shown, never used, until validated).
    pub git_ref: String,
    /// Sha as sent.
    pub sha: String,
    /// Who created the deployment.
    pub creator: String,
    /// Current state.
    pub state: RunState,
    /// Last status description.
    pub description: String,
    /// When the webhook arrived.
    pub received_at: DateTime<Utc>,
    /// When the provider started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The chat message ts, once known (posted by faseng when the payload had none).
    pub chat_ts: Option<String>,
}

impl RunRecord {
    /// The run key for a repository and deployment id.
    pub fn key_for(repo: &str, id: u64) -> String {
        format!("{repo}/{id}")
    }

    /// Seconds from start to finish, when both are known.
    pub fn duration_secs(&self) -> Option<f64> {
        let (s, f) = (self.started_at?, self.finished_at?);
        Some((f - s).num_milliseconds() as f64 / 1000.0)
    }
}

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
    /// When.
    pub at: DateTime<Utc>,
}

impl EnvLock {
    /// The name to show for the holder: the display name, else the id.
    pub fn shown_name(&self) -> &str {
        if self.user_name.is_empty() {
            &self.user
        } else {
            &self.user_name
        }
    }
}

/// Marks a run as begun (a run that comes back after this is never re-run) and holds its
/// lease: the worker in `worker` renews `lease_until` every third of the lease, and only
/// that worker may write the run's progress and result. A worker that finds the lease
/// lapsed may take the run over ([`Store::take_over_started`]) to report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartMarker {
    /// The worker holding the run now (its `FASENG_WORKER_ID`): the lease's holder and the
    /// fence for everything the run writes.
    pub worker: String,
    /// The worker that started the provider (stays when another worker takes the run over).
    #[serde(default)]
    pub started_by: String,
    /// Host name of the starter.
    pub host: String,
    /// Boot id of the starter's machine (with the host name, "the same machine").
    #[serde(default)]
    pub boot_id: String,
    /// The starter's process id and start time (clock ticks since boot): with the boot id,
    /// they tell whether that very process is gone.
    #[serde(default)]
    pub pid: Option<u32>,
    /// See `pid`.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// Process group of the provider, once spawned.
    pub pgid: Option<i32>,
    /// The queue's id for the job that started it: a job with another id for the same run
    /// is a duplicate (dropped quietly), one with the same id is an orphan (reported).
    #[serde(default)]
    pub job: Option<String>,
    /// When the run started.
    pub at: DateTime<Utc>,
    /// Until when the holder's lease runs.
    #[serde(default)]
    pub lease_until: Option<DateTime<Utc>>,
    /// When the holder last renewed its lease (what "stopped answering at" names).
    #[serde(default)]
    pub renewed_at: Option<DateTime<Utc>>,
    /// After this the starter's provider is stopped for certain, whatever became of the
    /// starter: start + timeout + the supervisor's slack and kill grace.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
}

impl StartMarker {
    /// A marker held by `worker` since `at`, with a lease of one minute (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn sample(worker: &str, at: DateTime<Utc>) -> Self {
        Self {
            worker: worker.into(),
            started_by: worker.into(),
            host: "h".into(),
            boot_id: "b".into(),
            pid: None,
            pid_start: None,
            pgid: None,
            job: Some("j".into()),
            at,
            lease_until: Some(at + chrono::Duration::seconds(60)),
            renewed_at: Some(at),
            deadline: Some(at + chrono::Duration::seconds(600)),
        }
    }

    /// True when the lease has lapsed at `now` (a marker without a lease has none to keep).
    pub fn lease_lapsed(&self, now: DateTime<Utc>) -> bool {
        self.lease_until.is_none_or(|until| until <= now)
    }
}

/// A start marker as stored: the parsed marker and the exact stored text, which a
/// compare-and-set ([`Store::take_over_started`]) compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMarker {
    /// The marker.
    pub marker: StartMarker,
    /// Its stored form.
    pub raw: String,
}

/// What [`Store::accept_runs`] did with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The delivery id had not been seen.
    pub fresh_delivery: bool,
    /// The run record was created (and the run joined its line).
    pub created: bool,
}

/// One delivery to accept, for [`Store::accept_runs`].
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptItem {
    /// `X-GitHub-Delivery`.
    pub delivery_id: String,
    /// The run record to create.
    pub run: RunRecord,
    /// The waiting line the run joins when its record is new.
    pub line: String,
    /// The queue job (JSON), kept so a run whose job was lost can be queued again.
    pub job: String,
}

/// What one retention sweep ([`Store::sweep`]) deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Finished runs, each with its start marker, log and status history.
    pub runs: u64,
    /// The bytes of their logs.
    pub log_bytes: u64,
    /// Status histories of deployments faseng kept no run for.
    pub status_histories: u64,
    /// Finished jobs of the queue library (its own records of them).
    pub jobs: u64,
}

impl Swept {
    /// True when nothing was deleted.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// How much the store keeps, for the `faseng_store_*` gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSize {
    /// Run records.
    pub runs: u64,
    /// Bytes of run logs (each line and its newline, as `/log` serves them).
    pub log_bytes: u64,
}

/// The bytes a log line counts for in [`StoreSize::log_bytes`].
pub fn log_line_bytes(line: &str) -> u64 {
    line.len() as u64 + 1
}

/// Whether retention deletes `run` at `cutoff`: it is finished (success, failure or error)
/// and finished before the cutoff (a finished record without a finish time counts from when
/// it was received). A queued or running run is never deleted, however old.
pub fn expired(run: &RunRecord, cutoff: DateTime<Utc>) -> bool {
    run.state.is_final() && run.finished_at.unwrap_or(run.received_at) < cutoff
}

/// How many runs a sweep reads and deletes per round trip.
pub(crate) const SWEEP_BATCH: usize = 200;

/// The operations faseng needs from its durable store. Every method is one round trip and
/// safe to call from any number of processes at once.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap reachability check (`/healthz`).
    async fn ping(&self) -> anyhow::Result<()>;
    /// Intake: for each delivery, in order, as if one after the other (a later item sees an
    /// earlier one's delivery and run), remembers the delivery, creates the run record, and
    /// when the record is new puts the run at the end of its line; atomically and in one
    /// round trip (Redis: one script; SQLite: one transaction). All of it happens or
    /// none; after an `Err` either may be the case (the answer can be lost on the way back).
    async fn accept_runs(&self, items: &[AcceptItem]) -> anyhow::Result<Vec<Accepted>>;
    /// Forgets a delivery id (the enqueue after claiming it failed; GitHub will redeliver).
    async fn release_delivery(&self, delivery_id: &str) -> anyhow::Result<()>;
    /// Creates a run record; `false` when one with the same key exists.
    async fn create_run(&self, run: &RunRecord) -> anyhow::Result<bool>;
    /// Overwrites a run record.
    async fn put_run(&self, run: &RunRecord) -> anyhow::Result<()>;
    /// Reads a run record.
    async fn get_run(&self, key: &str) -> anyhow::Result<Option<RunRecord>>;
    /// Deletes a run record (rollback of a failed enqueue).
    async fn delete_run(&self, key: &str) -> anyhow::Result<()>;
    /// Sets the durable "started" marker; `Some(existing)` when it was already set.
    async fn mark_started(
        &self,
        key: &str,
        marker: &StartMarker,
    ) -> anyhow::Result<Option<StartMarker>>;
    /// Replaces the marker when `marker.worker` holds it (a lease renewal, the provider's
    /// process group); `false` when another worker holds it or there is none (the lease is
    /// lost).
    async fn update_started(&self, key: &str, marker: &StartMarker) -> anyhow::Result<bool>;
    /// The marker of a run, as stored.
    async fn started(&self, key: &str) -> anyhow::Result<Option<StoredMarker>>;
    /// Replaces the marker with `new` when it is still exactly `expected` (read earlier, its
    /// lease seen lapsed): the takeover of a run whose worker stopped answering. `false`
    /// when it changed meanwhile (renewed, or taken over by someone else).
    async fn take_over_started(
        &self,
        key: &str,
        expected: &StoredMarker,
        new: &StartMarker,
    ) -> anyhow::Result<bool>;
    /// Notes that the provider started by `started_by` is stopped for certain (its starter,
    /// having lost the lease, stopped it): the run's new holder need not wait for its
    /// deadline.
    async fn note_provider_stopped(&self, key: &str, started_by: &str) -> anyhow::Result<()>;
    /// Whether the provider started by `started_by` was noted stopped.
    async fn provider_stopped(&self, key: &str, started_by: &str) -> anyhow::Result<bool>;
    /// The queue job kept for a run at intake (JSON).
    async fn job(&self, key: &str) -> anyhow::Result<Option<String>>;
    /// Every non-empty waiting line with its first run: `(line, run key)`.
    async fn line_heads(&self) -> anyhow::Result<Vec<(String, String)>>;
    /// Appends a run to the end of a waiting line (no-op when already in it).
    async fn line_join(&self, line: &str, key: &str) -> anyhow::Result<()>;
    /// Removes a run from a waiting line.
    async fn line_leave(&self, line: &str, key: &str) -> anyhow::Result<()>;
    /// The line's run keys, first (running) first.
    async fn line(&self, line: &str) -> anyhow::Result<Vec<String>>;
    /// The `deploy:lock` on a line, if any.
    async fn env_lock(&self, line: &str) -> anyhow::Result<Option<EnvLock>>;
    /// Sets the lock unless another user holds it; returns the holder after the call.
    async fn set_env_lock(&self, line: &str, lock: &EnvLock) -> anyhow::Result<EnvLock>;
    /// Clears the lock when `holder` (a user id) holds it; returns what was there before
    /// the call either way (a lock held by someone else stays).
    async fn clear_env_lock(&self, line: &str, holder: &str) -> anyhow::Result<Option<EnvLock>>;
    /// Records a successful run's duration (the last [`DURATIONS_KEPT`] are kept).
    async fn push_duration(&self, line: &str, secs: f64) -> anyhow::Result<()>;
    /// The recent successful durations, newest first.
    async fn durations(&self, line: &str) -> anyhow::Result<Vec<f64>>;
    /// Appends log lines to a run's log.
    async fn append_log(&self, key: &str, lines: &[String]) -> anyhow::Result<()>;
    /// Reads a run's log from line `from` (0-based).
    async fn read_log(&self, key: &str, from: usize) -> anyhow::Result<Vec<String>>;
    /// Records a `deployment_status` webhook for history.
    async fn record_status_event(
        &self,
        key: &str,
        state: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()>;
    /// Jobs waiting in the apalis queue (for `/metrics`).
    async fn queue_depth(&self) -> anyhow::Result<u64>;
    /// The key log links are signed with: stores `fresh` when there is none yet and returns
    /// the stored one, atomically (every process that races here gets the same key).
    async fn link_key(&self, fresh: &str) -> anyhow::Result<String>;
    /// Retention: deletes every run that is [`expired`] at `cutoff` (record, start marker,
    /// log, status history), the status history of deployments without a run whose last
    /// event is older than `cutoff`, and the queue library's finished jobs done before it.
    /// Never a queued or running run. Idempotent, and safe from many processes at once.
    async fn sweep(&self, cutoff: DateTime<Utc>) -> anyhow::Result<Swept>;
    /// How many runs and log bytes the store keeps; constant time (maintained counts).
    async fn size(&self) -> anyhow::Result<StoreSize>;

    /// Outbox (see [`outbox`]): appends `entries` to their lanes of run `run`, in order,
    /// atomically. A status whose state was already written for the run is left out, as is
    /// a final state when one was written. With `fence: Some(worker)` nothing is written
    /// unless the run's start marker names that worker: `false` = fenced out.
    async fn outbox_push(
        &self,
        run: &str,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool>;
    /// Writes a run's final record and its last outbox entries (as [`Store::outbox_push`])
    /// at once, when the fence holds; `false` = fenced out, nothing written.
    async fn finish_run(
        &self,
        record: &RunRecord,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool>;
    /// Up to `limit` lanes with entries that are due at `now` (not held, not waiting for a
    /// retry), most overdue first.
    async fn outbox_due(&self, now: DateTime<Utc>, limit: usize) -> anyhow::Result<Vec<LaneKey>>;
    /// Claims a lane for `holder` until `until` (a holder renews its own claim this way) and
    /// returns up to `limit` of its entries, in order; `None` when another holder's claim is
    /// live or the lane waits for a retry. A claim that lapsed is taken over, in doubt.
    async fn outbox_claim(
        &self,
        lane: &LaneKey,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Option<ClaimedLane>>;
    /// Releases a claimed lane, deleting what is done, keeping the chat ts and rescheduling
    /// (see [`Settle`]); the number of entries left, or `None` when `holder` no longer held it.
    async fn outbox_settle(
        &self,
        lane: &LaneKey,
        holder: &str,
        settle: &Settle,
    ) -> anyhow::Result<Option<u64>>;
    /// Entries waiting in the outbox, all lanes (cheap: `/metrics` reads it).
    async fn outbox_depth(&self) -> anyhow::Result<u64>;
    /// Takes the duty lease `name` (a periodic job that one process of the store does at a
    /// time) for `holder` until `now + ttl`, atomically: when it is free, has expired (its end
    /// is not after `now`) or is `holder`'s already (renewed). `false` while another holder's
    /// lease runs. Time is the caller's (its clock), never the store's.
    async fn acquire_duty(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> anyhow::Result<bool>;
    /// Ends `holder`'s lease of duty `name` so another process may take it at once (a stopping
    /// process); nothing happens when someone else holds it.
    async fn release_duty(&self, name: &str, holder: &str) -> anyhow::Result<()>;
}

#[cfg(any(test, feature = "testing"))]
pub mod contract {
    //! One behaviour suite, run against both stores.
    use super::*;

    /// A queued run record of app `app` in `edge` under `key` (tests).
    pub fn run(key: &str) -> RunRecord {
        RunRecord {
            key: key.into(),
            repo: "o/r".into(),
            deployment_id: 1,
            app: "app".into(),
            environment: "edge".into(),
            task: "deploy".into(),
            git_ref: "main".into(),
            sha: "a".repeat(40),
            creator: "alice".into(),
            state: RunState::Queued,
            description: String::new(),
            received_at: Utc::now(),
            started_at: None,
            finished_at: None,
            chat_ts: None,
        }
    }

    pub(crate) async fn exercise(store: &dyn Store) {
        store.ping().await.unwrap();

        let r = run("o/r/1");
        assert!(store.create_run(&r).await.unwrap());
        assert!(!store.create_run(&r).await.unwrap());
        let mut r2 = r.clone();
        r2.state = RunState::Success;
        store.put_run(&r2).await.unwrap();
        assert_eq!(store.get_run("o/r/1").await.unwrap(), Some(r2));
        store.delete_run("o/r/1").await.unwrap();
        assert_eq!(store.get_run("o/r/1").await.unwrap(), None);

        let m = StartMarker::sample("w", Utc::now());
        assert_eq!(store.mark_started("o/r/1", &m).await.unwrap(), None);
        let again = store.mark_started("o/r/1", &m).await.unwrap();
        assert_eq!(again.as_ref().map(|m| m.worker.as_str()), Some("w"));
        let m2 = StartMarker {
            pgid: Some(42),
            ..m.clone()
        };
        assert!(store.update_started("o/r/1", &m2).await.unwrap());
        assert_eq!(
            store
                .mark_started("o/r/1", &m2)
                .await
                .unwrap()
                .unwrap()
                .pgid,
            Some(42)
        );
        assert!(store.started("o/r/404").await.unwrap().is_none());
        assert!(
            !store.update_started("o/r/404", &m2).await.unwrap(),
            "no marker, no lease to renew"
        );

        // Leases: only the holder renews; a takeover is a compare-and-set on what was read.
        let read = store.started("o/r/1").await.unwrap().unwrap();
        assert_eq!(read.marker, m2);
        let other = StartMarker {
            worker: "w2".into(),
            ..m2.clone()
        };
        assert!(
            !store.update_started("o/r/1", &other).await.unwrap(),
            "another worker cannot renew the holder's lease"
        );
        let renewed = StartMarker {
            lease_until: Some(m2.at + chrono::Duration::seconds(90)),
            ..m2.clone()
        };
        assert!(store.update_started("o/r/1", &renewed).await.unwrap());
        assert!(
            !store
                .take_over_started("o/r/1", &read, &other)
                .await
                .unwrap(),
            "the marker was renewed after it was read"
        );
        let read = store.started("o/r/1").await.unwrap().unwrap();
        assert_eq!(read.marker, renewed);
        assert!(
            store
                .take_over_started("o/r/1", &read, &other)
                .await
                .unwrap()
        );
        assert!(
            !store
                .take_over_started("o/r/1", &read, &other)
                .await
                .unwrap(),
            "a takeover happens once"
        );
        assert_eq!(store.started("o/r/1").await.unwrap().unwrap().marker, other);
        assert!(
            !store.update_started("o/r/1", &renewed).await.unwrap(),
            "the old holder has lost its lease"
        );
        assert!(!store.provider_stopped("o/r/1", "w").await.unwrap());
        store.note_provider_stopped("o/r/1", "w").await.unwrap();
        assert!(store.provider_stopped("o/r/1", "w").await.unwrap());
        assert!(!store.provider_stopped("o/r/1", "w2").await.unwrap());
        assert!(!store.provider_stopped("o/r/2", "w").await.unwrap());

        // A batch behaves as its items one after the other: dedup by delivery and by run
        // within the batch, and the line in arrival order.
        let item = |delivery: &str, key: &str| AcceptItem {
            delivery_id: delivery.into(),
            run: run(key),
            line: "app/batch".into(),
            job: format!("{{\"job\": \"{key}\"}}"),
        };
        let out = store
            .accept_runs(&[
                item("b1", "o/r/10"),
                item("b1", "o/r/11"),
                item("b2", "o/r/10"),
                item("b3", "o/r/12"),
            ])
            .await
            .unwrap();
        let acc = |fresh_delivery, created| Accepted {
            fresh_delivery,
            created,
        };
        assert_eq!(
            out,
            [
                acc(true, true),
                acc(false, true),
                acc(true, false),
                acc(true, true)
            ]
        );
        assert_eq!(
            store.line("app/batch").await.unwrap(),
            ["o/r/10", "o/r/11", "o/r/12"]
        );
        assert!(store.accept_runs(&[]).await.unwrap().is_empty());
        assert_eq!(
            store.job("o/r/11").await.unwrap().as_deref(),
            Some(r#"{"job": "o/r/11"}"#),
            "the job of a created run is kept"
        );
        assert_eq!(store.job("o/r/99").await.unwrap(), None);
        // A released delivery is new again (the undo of an intake whose push failed).
        assert_eq!(
            store.accept_runs(&[item("b3", "o/r/13")]).await.unwrap(),
            [acc(false, true)]
        );
        store.release_delivery("b3").await.unwrap();
        assert_eq!(
            store.accept_runs(&[item("b3", "o/r/14")]).await.unwrap(),
            [acc(true, true)]
        );

        store.line_join("app/edge", "a").await.unwrap();
        store.line_join("app/edge", "b").await.unwrap();
        store.line_join("app/edge", "a").await.unwrap();
        store.line_join("app/other", "c").await.unwrap();
        assert_eq!(store.line("app/edge").await.unwrap(), ["a", "b"]);
        store.line_leave("app/edge", "a").await.unwrap();
        store.line_join("app/edge", "a").await.unwrap();
        assert_eq!(store.line("app/edge").await.unwrap(), ["b", "a"]);
        assert_eq!(store.line("app/other").await.unwrap(), ["c"]);
        let mut heads = store.line_heads().await.unwrap();
        heads.sort();
        assert_eq!(
            heads,
            [
                ("app/batch".to_owned(), "o/r/10".to_owned()),
                ("app/edge".to_owned(), "b".to_owned()),
                ("app/other".to_owned(), "c".to_owned())
            ]
        );
        store.line_leave("app/other", "c").await.unwrap();
        assert!(
            store
                .line_heads()
                .await
                .unwrap()
                .iter()
                .all(|(line, _)| line != "app/other"),
            "an empty line has no head"
        );
        store.line_join("app/other", "c").await.unwrap();

        assert_eq!(store.env_lock("app/edge").await.unwrap(), None);
        let alice = EnvLock {
            user: "U0ALICE".into(),
            user_name: "alice".into(),
            reason: "testing".into(),
            at: Utc::now(),
        };
        assert_eq!(store.set_env_lock("app/edge", &alice).await.unwrap(), alice);
        let alice_again = EnvLock {
            reason: "still testing".into(),
            ..alice.clone()
        };
        assert_eq!(
            store.set_env_lock("app/edge", &alice_again).await.unwrap(),
            alice_again,
            "the holder re-locks"
        );
        // Another user with the same display name is another user.
        let other_alice = EnvLock {
            user: "U0OTHER".into(),
            ..alice.clone()
        };
        assert_eq!(
            store.set_env_lock("app/edge", &other_alice).await.unwrap(),
            alice_again
        );
        assert_eq!(
            store.clear_env_lock("app/edge", "U0OTHER").await.unwrap(),
            Some(alice_again.clone())
        );
        assert_eq!(
            store.env_lock("app/edge").await.unwrap(),
            Some(alice_again.clone()),
            "only the holder clears the lock"
        );
        assert_eq!(
            store.clear_env_lock("app/edge", "U0ALICE").await.unwrap(),
            Some(alice_again)
        );
        assert_eq!(store.env_lock("app/edge").await.unwrap(), None);
        assert_eq!(
            store.clear_env_lock("app/edge", "U0ALICE").await.unwrap(),
            None
        );

        for i in 0..12 {
            store.push_duration("app/edge", f64::from(i)).await.unwrap();
        }
        let d = store.durations("app/edge").await.unwrap();
        assert_eq!(d.len(), DURATIONS_KEPT);
        assert_eq!(d[0], 11.0);

        store
            .append_log("o/r/1", &["one".into(), "two".into()])
            .await
            .unwrap();
        store.append_log("o/r/1", &["three".into()]).await.unwrap();
        assert_eq!(
            store.read_log("o/r/1", 0).await.unwrap(),
            ["one", "two", "three"]
        );
        assert_eq!(store.read_log("o/r/1", 2).await.unwrap(), ["three"]);
        assert!(store.read_log("o/r/9", 0).await.unwrap().is_empty());
        store
            .record_status_event("o/r/1", "success", Utc::now())
            .await
            .unwrap();
        store.queue_depth().await.unwrap();

        // The first key offered is kept; later offers get it back.
        assert_eq!(store.link_key("first key").await.unwrap(), "first key");
        assert_eq!(store.link_key("second key").await.unwrap(), "first key");

        sweeping(store).await;
        outbox::contract::exercise(store).await;
        exercise_duties(store).await;
    }

    /// Retention: what a sweep deletes and what it keeps, the gauges' counts, idempotence.
    async fn sweeping(store: &dyn Store) {
        let now = Utc::now();
        let day = chrono::Duration::days(1);
        let cutoff = now - day;
        let at = |state: RunState, received: DateTime<Utc>, finished: Option<DateTime<Utc>>| {
            move |key: &str| RunRecord {
                state,
                received_at: received,
                started_at: finished.map(|_| received),
                finished_at: finished,
                ..run(key)
            }
        };
        let before = store.size().await.unwrap();
        let old_done = at(RunState::Success, now - day * 3, Some(now - day * 3))("s/old/1");
        let old_failed = at(RunState::Failure, now - day * 3, Some(now - day * 2))("s/old/2");
        let old_queued = at(RunState::Queued, now - day * 3, None)("s/old/3");
        let old_running = at(RunState::InProgress, now - day * 3, None)("s/old/4");
        let fresh_done = at(RunState::Error, now, Some(now))("s/new/5");
        // Received long ago, finished within retention: kept until it is old itself.
        let late_done = at(RunState::Success, now - day * 3, Some(now - day / 2))("s/late/6");
        for r in [&old_done, &old_failed, &old_queued, &fresh_done, &late_done] {
            assert!(store.create_run(r).await.unwrap());
        }
        // A record first written by an overwrite is counted and swept like any other.
        store.put_run(&old_running).await.unwrap();
        // One accepted at intake (with its kept queue job), finished long ago.
        let accepted = at(RunState::Success, now - day * 3, Some(now - day * 3))("s/acc/9");
        let item = AcceptItem {
            delivery_id: "s-delivery-9".into(),
            run: RunRecord {
                state: RunState::Queued,
                finished_at: None,
                ..accepted.clone()
            },
            line: "app/sweep".into(),
            job: "{\"job\": 9}".into(),
        };
        assert!(store.accept_runs(&[item]).await.unwrap()[0].created);
        store.line_leave("app/sweep", &accepted.key).await.unwrap();
        store.put_run(&accepted).await.unwrap();
        store
            .note_provider_stopped(&old_done.key, "w")
            .await
            .unwrap();
        let marker = StartMarker::sample("w", now);
        for r in [&old_done, &old_failed, &old_running] {
            store.mark_started(&r.key, &marker).await.unwrap();
            store
                .record_status_event(&r.key, "success", r.received_at)
                .await
                .unwrap();
        }
        let lines: Vec<String> = vec!["héllo".into(), String::new(), "x".repeat(100)];
        let bytes: u64 = lines.iter().map(|l| log_line_bytes(l)).sum();
        assert_eq!(
            bytes,
            (6 + 1) + 1 + (100 + 1),
            "bytes, not characters, and a newline each"
        );
        for r in [&old_done, &old_queued, &fresh_done] {
            store.append_log(&r.key, &lines).await.unwrap();
        }
        // Histories of deployments faseng never ran: one old, one recent.
        store
            .record_status_event("s/none/7", "success", now - day * 2)
            .await
            .unwrap();
        store
            .record_status_event("s/none/8", "success", now)
            .await
            .unwrap();
        let size = store.size().await.unwrap();
        assert_eq!(size.runs, before.runs + 7);
        assert_eq!(size.log_bytes, before.log_bytes + 3 * bytes);

        let swept = store.sweep(cutoff).await.unwrap();
        assert_eq!(swept.runs, 3, "{swept:?}");
        assert_eq!(
            store.job(&accepted.key).await.unwrap(),
            None,
            "the kept job goes"
        );
        assert!(
            !store.provider_stopped(&old_done.key, "w").await.unwrap(),
            "the provider-stopped note goes"
        );
        assert_eq!(swept.log_bytes, bytes, "{swept:?}");
        assert_eq!(swept.status_histories, 1, "{swept:?}");
        for gone in [&old_done, &old_failed, &accepted] {
            assert_eq!(store.get_run(&gone.key).await.unwrap(), None);
            assert!(store.read_log(&gone.key, 0).await.unwrap().is_empty());
            assert_eq!(
                store.mark_started(&gone.key, &marker).await.unwrap(),
                None,
                "the start marker goes with the run"
            );
        }
        for kept in [&old_queued, &old_running, &fresh_done, &late_done] {
            assert_eq!(store.get_run(&kept.key).await.unwrap().as_ref(), Some(kept));
        }
        assert_eq!(store.read_log(&old_queued.key, 0).await.unwrap(), lines);
        let size = store.size().await.unwrap();
        // The two markers written by the probe above belong to no run; the gauges count runs.
        assert_eq!(size.runs, before.runs + 4);
        assert_eq!(size.log_bytes, before.log_bytes + 2 * bytes);

        // Again: nothing more to delete (several processes may sweep at once).
        let again = store.sweep(cutoff).await.unwrap();
        assert_eq!(again.runs + again.status_histories, 0, "{again:?}");
        assert_eq!(store.size().await.unwrap(), size);

        // Once retention has passed for them too, the rest of the finished runs go; the
        // queued and running ones stay.
        let swept = store.sweep(now + day).await.unwrap();
        assert_eq!(swept.runs, 2, "{swept:?}");
        assert_eq!(swept.log_bytes, bytes, "{swept:?}");
        // s/none/8, and o/r/1's (its run was deleted above).
        assert_eq!(swept.status_histories, 2, "{swept:?}");
        assert!(store.get_run(&old_queued.key).await.unwrap().is_some());
        assert!(store.get_run(&old_running.key).await.unwrap().is_some());
        // A deleted run's record, log and count: an intake rollback keeps the gauge right.
        store.delete_run(&old_queued.key).await.unwrap();
        assert_eq!(
            store.size().await.unwrap().runs,
            before.runs + 1,
            "deleting a run uncounts it"
        );
    }

    /// Duty leases, on a time moved by hand.
    async fn exercise_duties(store: &dyn Store) {
        let t0 = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let ttl = Duration::from_secs(90);
        let duty = "reconcile";
        assert!(store.acquire_duty(duty, "a", at(0), ttl).await.unwrap());
        assert!(
            !store.acquire_duty(duty, "b", at(10), ttl).await.unwrap(),
            "a running lease is not taken"
        );
        assert!(
            store.acquire_duty(duty, "a", at(60), ttl).await.unwrap(),
            "the holder renews"
        );
        assert!(
            !store.acquire_duty(duty, "b", at(100), ttl).await.unwrap(),
            "a renewed lease runs from its renewal"
        );
        assert!(
            store
                .acquire_duty("other", "b", at(100), ttl)
                .await
                .unwrap(),
            "duties are independent"
        );
        assert!(
            store.acquire_duty(duty, "b", at(150), ttl).await.unwrap(),
            "a lease not renewed lapses at its end"
        );
        assert!(!store.acquire_duty(duty, "a", at(151), ttl).await.unwrap());
        store.release_duty(duty, "a").await.unwrap();
        assert!(
            !store.acquire_duty(duty, "a", at(152), ttl).await.unwrap(),
            "only the holder releases"
        );
        store.release_duty(duty, "b").await.unwrap();
        assert!(
            store.acquire_duty(duty, "a", at(152), ttl).await.unwrap(),
            "a released lease is free at once"
        );
        store.release_duty("never-taken", "a").await.unwrap();
    }
}
