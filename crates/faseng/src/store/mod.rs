//! Durable state that apalis does not keep for us, behind one trait with a Redis and a
//! SQLite implementation: delivery dedup, the per-app+environment waiting line, environment
//! locks (`deploy:lock`), run records and "started" markers, recent durations for the ETA,
//! the log store (so any `faseng serve` can show any run's log) and the key log links are
//! signed with (so every faseng process signs them alike).

#[cfg(test)]
pub(crate) mod flaky;
pub mod outbox;
mod redis_outbox;
mod redis_store;
mod sqlite_outbox;
mod sqlite_store;

pub use outbox::{
    ClaimedLane, Lane, LaneKey, OutboxEntry, OutboxItem, Settle, SettleRetry, StoredEntry,
};
pub use redis_store::{RedisStore, connect as redis_connect};
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

/// Marks a run as begun; if it ever comes back, it is an orphan, never re-run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartMarker {
    /// Worker name that started it.
    pub worker: String,
    /// Host name of that worker.
    pub host: String,
    /// Process group of the provider, once spawned.
    pub pgid: Option<i32>,
    /// The queue's id for the job that started it: a job with another id for the same run
    /// is a duplicate (dropped quietly), one with the same id is an orphan (reported).
    #[serde(default)]
    pub job: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
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
}

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
    /// Updates the marker (e.g. with the provider's process group).
    async fn update_started(&self, key: &str, marker: &StartMarker) -> anyhow::Result<()>;
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
}

#[cfg(test)]
pub(crate) mod contract {
    //! One behaviour suite, run against both stores.
    use super::*;

    pub(crate) fn run(key: &str) -> RunRecord {
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

        let m = StartMarker {
            worker: "w".into(),
            host: "h".into(),
            pgid: None,
            job: Some("j".into()),
            at: Utc::now(),
        };
        assert_eq!(store.mark_started("o/r/1", &m).await.unwrap(), None);
        let again = store.mark_started("o/r/1", &m).await.unwrap();
        assert_eq!(again.as_ref().map(|m| m.worker.as_str()), Some("w"));
        let m2 = StartMarker {
            pgid: Some(42),
            ..m
        };
        store.update_started("o/r/1", &m2).await.unwrap();
        assert_eq!(
            store
                .mark_started("o/r/1", &m2)
                .await
                .unwrap()
                .unwrap()
                .pgid,
            Some(42)
        );

        // A batch behaves as its items one after the other: dedup by delivery and by run
        // within the batch, and the line in arrival order.
        let item = |delivery: &str, key: &str| AcceptItem {
            delivery_id: delivery.into(),
            run: run(key),
            line: "app/batch".into(),
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

        outbox::contract::exercise(store).await;
    }
}
