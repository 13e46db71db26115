//! A bounded store: runs (with their start markers, logs and status history) finished more
//! than `FASENG_RETENTION_DAYS` ago, status histories of deployments faseng kept no run for,
//! and the queue library's finished jobs are deleted by a sweep at start and every
//! [`SWEEP_EVERY`] after, measured on the configured clock. Every faseng process sweeps; the
//! deletes are idempotent, so several at once only repeat each other's reads.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deploy_core::Clock;
use tokio::sync::watch;

use crate::store::{Store, Swept};

/// `FASENG_RETENTION_DAYS`' default.
pub const DEFAULT_DAYS: u32 = 90;

/// How often a process sweeps after the sweep at its start.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How long finished runs are kept, in whole days; 0 keeps everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self::days(DEFAULT_DAYS)
    }
}

impl Retention {
    /// Keeps runs for `days` days (0: for ever).
    pub fn days(days: u32) -> Self {
        Self { days }
    }

    /// The configured number of days.
    pub fn as_days(&self) -> u32 {
        self.days
    }

    /// The cutoff at `now`: what finished before it is deleted. `None` when everything is
    /// kept.
    pub fn cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (self.days > 0).then(|| now - chrono::Duration::days(i64::from(self.days)))
    }
}

/// One sweep at the clock's now: deletes what retention no longer keeps and logs what went.
/// `Ok(None)` when retention keeps everything.
pub async fn sweep_once(
    store: &dyn Store,
    clock: &dyn Clock,
    retention: Retention,
) -> anyhow::Result<Option<Swept>> {
    let Some(cutoff) = retention.cutoff(clock.now()) else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let swept = store.sweep(cutoff).await?;
    if swept.is_empty() {
        tracing::debug!(%cutoff, "retention sweep: nothing older to delete");
    } else {
        tracing::info!(
            %cutoff,
            days = retention.days,
            runs = swept.runs,
            log_bytes = swept.log_bytes,
            status_histories = swept.status_histories,
            queue_jobs = swept.jobs,
            took_ms = started.elapsed().as_millis() as u64,
            "retention sweep deleted what finished before the cutoff"
        );
    }
    Ok(Some(swept))
}

/// Sweeps now and every `every` until `shutdown` turns true. A failed sweep is logged and
/// tried again at the next turn.
pub async fn run_sweeper(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    retention: Retention,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    if retention.cutoff(clock.now()).is_none() {
        tracing::info!("FASENG_RETENTION_DAYS is 0: runs and logs are kept for ever");
        return;
    }
    loop {
        if let Err(e) = sweep_once(store.as_ref(), clock.as_ref(), retention).await {
            tracing::warn!(error = %format!("{e:#}"), "retention sweep failed; trying again in {every:?}");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::prelude::*;
    use crate::store::{RunRecord, RunState, expired};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_cutoff_is_whole_days_before_now_and_zero_keeps_everything() {
        let now = at("2026-12-06T10:00:00Z");
        assert_eq!(
            Retention::days(90).cutoff(now),
            Some(at("2026-09-07T10:00:00Z"))
        );
        assert_eq!(
            Retention::days(1).cutoff(now),
            Some(at("2026-12-05T10:00:00Z"))
        );
        assert_eq!(Retention::days(0).cutoff(now), None);
        assert_eq!(Retention::default().as_days(), 90);
    }

    #[test]
    fn only_finished_runs_that_finished_before_the_cutoff_expire() {
        let cutoff = at("2026-12-05T10:00:00Z");
        let run = |state, received: &str, finished: Option<&str>| RunRecord {
            key: "o/r/1".into(),
            repo: "o/r".into(),
            deployment_id: 1,
            app: "app".into(),
            environment: "edge".into(),
            task: "deploy".into(),
            git_ref: "main".into(),
            sha: "a".repeat(40),
            creator: "alice".into(),
            state,
            description: String::new(),
            received_at: at(received),
            started_at: None,
            finished_at: finished.map(at),
            chat_ts: None,
            rollback: None,
            stages: Vec::new(),
        };
        let long_ago = "2026-01-01T00:00:00Z";
        let just_before = "2026-12-05T09:59:59.999Z";
        for state in [RunState::Success, RunState::Failure, RunState::Error] {
            assert!(expired(&run(state, long_ago, Some(just_before)), cutoff));
            assert!(!expired(
                &run(state, long_ago, Some("2026-12-05T10:00:00Z")),
                cutoff
            ));
            // Received long ago but finished within retention: kept.
            assert!(!expired(
                &run(state, long_ago, Some("2026-12-06T00:00:00Z")),
                cutoff
            ));
            // A finished record without a finish time counts from its arrival.
            assert!(expired(&run(state, long_ago, None), cutoff));
            assert!(!expired(&run(state, "2026-12-06T00:00:00Z", None), cutoff));
        }
        // Queued or running: never, however old.
        for state in [RunState::Queued, RunState::InProgress] {
            assert!(!expired(&run(state, long_ago, None), cutoff));
            assert!(!expired(&run(state, long_ago, Some(long_ago)), cutoff));
        }
    }

    #[tokio::test]
    async fn a_sweep_uses_the_clock_and_zero_days_sweeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("f.db"), "q")
            .await
            .unwrap();
        let now = Utc::now();
        let clock = deploy_core::clock::ManualClock::new(now);
        let mut r = crate::store::contract::run("o/r/1");
        r.state = RunState::Success;
        r.received_at = now;
        r.finished_at = Some(now);
        store.create_run(&r).await.unwrap();
        assert_eq!(
            sweep_once(&store, &clock, Retention::days(1))
                .await
                .unwrap(),
            Some(Swept::default())
        );
        clock.advance(chrono::Duration::days(5));
        assert_eq!(
            sweep_once(&store, &clock, Retention::days(0))
                .await
                .unwrap(),
            None
        );
        assert!(store.get_run("o/r/1").await.unwrap().is_some());
        let swept = sweep_once(&store, &clock, Retention::days(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(swept.runs, 1);
        assert!(store.get_run("o/r/1").await.unwrap().is_none());
    }
}
