//! Retention: deleting finished runs and the desk's records past their time, and the
//! gauges of what is kept.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::RunRecord;

/// What one retention sweep ([`Retention::sweep`]) deleted.
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
    /// Freezes made in chat that had ended.
    pub freezes: u64,
    /// Unfreeze grants that had ended.
    pub unfreezes: u64,
    /// Desk tickets that had run out unredeemed.
    pub tickets: u64,
    /// Requests in line that had run out and were never taken.
    pub line_requests: u64,
    /// Release requests that were over (not open) and last changed before the cutoff.
    pub requests: u64,
    /// Web actions that were finished (done or failed) and submitted before the cutoff.
    pub web_actions: u64,
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

/// Whether retention deletes `run` at `cutoff`: it is finished (success, failure or error)
/// and finished before the cutoff (a finished record without a finish time counts from when
/// it was received). A queued or running run is never deleted, however old.
pub fn expired(run: &RunRecord, cutoff: DateTime<Utc>) -> bool {
    run.state.is_final() && run.finished_at.unwrap_or(run.received_at) < cutoff
}

/// How many runs a sweep reads and deletes per round trip.
pub(crate) const SWEEP_BATCH: usize = 200;

/// Retention and the gauges of what is kept.
#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Retention: deletes every run that is [`expired`] at `cutoff` (record, start marker,
    /// log, status history), the status history of deployments without a run whose last
    /// event is older than `cutoff`, and the queue library's finished jobs done before it;
    /// and the release desk's freezes and unfreeze grants that ended, and tickets and
    /// requests in line that ran out, before it; and release requests that are over and last
    /// changed before it; and web actions finished and submitted before it. Never a queued or
    /// running run, never an open request, never a pending or running web action.
    /// Idempotent, and safe from many processes at once.
    async fn sweep(&self, cutoff: DateTime<Utc>) -> anyhow::Result<Swept>;

    /// How many runs and log bytes the store keeps; constant time (maintained counts).
    async fn size(&self) -> anyhow::Result<StoreSize>;
}
