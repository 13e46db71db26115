//! Runs: each deployment's record, its start marker (the lease of the worker running it),
//! its kept queue job and status history, and the history of runs, newest first.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::page::{Cursor, Page};

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
    /// Set when this deployment is a rollback: the sha it rolled back from and the sha it deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackMark>,
    /// The run's stages in order with their state and times (empty until the run starts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageRecord>,
}

/// What a rollback deployment rolls back: from the sha that was deployed to an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackMark {
    /// The sha rolled back from (the one that was deployed).
    pub from: String,
    /// The sha this deployment deploys.
    pub to: String,
}

/// Where one stage of a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageRecordState {
    /// Not begun.
    Pending,
    /// Under way.
    Running,
    /// Ended well.
    Done,
    /// Ended badly.
    Failed,
}

/// One stage of a run (`prepare`, `before`, `deploy`, `after`, later `verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    /// The stage's name.
    pub name: String,
    /// Where it is.
    pub state: StageRecordState,
    /// When it began.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
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

/// Marks a run as begun (a run that comes back after this is never re-run) and holds its
/// lease: the worker in `worker` renews `lease_until` every third of the lease, and only
/// that worker may write the run's progress and result. A worker that finds the lease
/// lapsed may take the run over ([`Runs::take_over_started`]) to report it.
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
/// compare-and-set ([`Runs::take_over_started`]) compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMarker {
    /// The marker.
    pub marker: StartMarker,
    /// Its stored form.
    pub raw: String,
}

impl StoredMarker {
    /// Parses a marker as it was stored, keeping the text for a compare-and-set.
    pub fn from_raw(raw: String) -> anyhow::Result<Self> {
        Ok(Self {
            marker: crate::from_json(&raw)?,
            raw,
        })
    }
}

/// A history query: runs newest first (by when they were received), filtered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only this app's runs.
    pub app: Option<String>,
    /// Only runs in this environment.
    pub environment: Option<String>,
    /// Only runs of this ref (as sent).
    pub git_ref: Option<String>,
    /// Only runs received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only runs received before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many (1 to [`crate::page::PAGE_MAX`]; 0 means the most).
    pub limit: usize,
    /// Where to go on from (a previous page's [`Page::next`]).
    pub cursor: Option<Cursor>,
}

impl RunQuery {
    /// Whether `run` is one the query lists (cursor aside).
    pub fn matches(&self, run: &RunRecord) -> bool {
        self.app.as_ref().is_none_or(|a| *a == run.app)
            && self
                .environment
                .as_ref()
                .is_none_or(|e| *e == run.environment)
            && self.git_ref.as_ref().is_none_or(|r| *r == run.git_ref)
            && self.since.is_none_or(|s| run.received_at >= s)
            && self.until.is_none_or(|u| run.received_at < u)
    }

    /// Whether `run` has the app, environment and ref asked for (the backends select by
    /// time and cursor themselves, to the millisecond).
    pub(crate) fn matches_names(&self, run: &RunRecord) -> bool {
        self.app.as_ref().is_none_or(|a| *a == run.app)
            && self
                .environment
                .as_ref()
                .is_none_or(|e| *e == run.environment)
            && self.git_ref.as_ref().is_none_or(|r| *r == run.git_ref)
    }

    /// The page size asked for, within bounds.
    pub fn page_size(&self) -> usize {
        crate::audit::page_size(self.limit)
    }

    /// The position after which the page starts: `(received ms, key)`, newest first.
    pub(crate) fn after(&self) -> Option<(i64, &str)> {
        self.cursor.as_ref().and_then(Cursor::position)
    }

    /// Whether `(at_ms, key)` comes after the cursor in newest-first order.
    pub(crate) fn past_cursor(&self, at_ms: i64, key: &str) -> bool {
        self.after()
            .is_none_or(|(ms, k)| at_ms < ms || (at_ms == ms && key < k))
    }
}

impl RunRecord {
    /// When the run was received, in milliseconds since the epoch (the history's order).
    pub fn received_ms(&self) -> i64 {
        self.received_at.timestamp_millis()
    }
}

/// Run records and what belongs to each run.
#[async_trait]
pub trait Runs: Send + Sync + 'static {
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

    /// Records a `deployment_status` webhook for history.
    async fn record_status_event(
        &self,
        key: &str,
        state: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()>;

    /// Runs matching `query`, newest first (by receive time, then key), a page at a time.
    async fn history(&self, query: &RunQuery) -> anyhow::Result<Page<RunRecord>>;
}

/// The first `size` of `found` (newest first), with a cursor when there were more.
pub(crate) fn page_of(mut found: Vec<(i64, RunRecord)>, size: usize) -> Page<RunRecord> {
    let next = (found.len() > size).then(|| {
        let (ms, run) = &found[size - 1];
        Cursor::after(*ms, &run.key)
    });
    found.truncate(size);
    Page {
        items: found.into_iter().map(|(_, run)| run).collect(),
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_and_stages_are_left_out_when_empty_and_old_records_read() {
        let run = crate::contract::run("o/r/1");
        let json = serde_json::to_value(&run).unwrap();
        assert!(json.get("rollback").is_none() && json.get("stages").is_none());
        let old: RunRecord = serde_json::from_value(json).unwrap();
        assert_eq!(old, run);

        let t: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
        let marked = RunRecord {
            rollback: Some(RollbackMark {
                from: "b".repeat(40),
                to: "a".repeat(40),
            }),
            stages: vec![StageRecord {
                name: "prepare".into(),
                state: StageRecordState::Done,
                started_at: Some(t),
                finished_at: Some(t),
            }],
            ..run
        };
        let json = serde_json::to_value(&marked).unwrap();
        assert_eq!(json["rollback"]["from"], "b".repeat(40));
        assert_eq!(json["stages"][0]["state"], "done");
        assert_eq!(serde_json::from_value::<RunRecord>(json).unwrap(), marked);
    }
}
