//! Recording a run's stages (prepare → before → deploy → after) in its run record as they
//! change, with their times, so the dashboard and its stream can show them. Only while this
//! worker holds the run's lease (each write renews and checks it first); writes go one at a
//! time, each with the newest stages, and none after [`StageRecorder::close`] (the final
//! record, written by `finish`, carries them from then on).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use deploy_core::Clock;
use tracing::Instrument as _;

use crate::lease::LeaseWatch;
use crate::providers::stages::{Progress, StageState};
use crate::store::{RunRecord, StageRecord, StageRecordState, Store};

/// Writes a run's stages into its record as the run goes.
#[derive(Clone)]
pub(crate) struct StageRecorder {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The record as the run started (state in progress); stages go into copies of it.
    base: RunRecord,
    lease: Option<LeaseWatch>,
    stages: Mutex<Vec<StageRecord>>,
    /// Held while writing; `true` once closed (nothing is written after).
    writing: tokio::sync::Mutex<bool>,
}

impl StageRecorder {
    /// A recorder for the run whose record (as started) is `base`, writing while `lease`
    /// (the run's) is held.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        base: RunRecord,
        lease: Option<LeaseWatch>,
    ) -> Self {
        let stages = Mutex::new(base.stages.clone());
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                base,
                lease,
                stages,
                writing: tokio::sync::Mutex::new(false),
            }),
        }
    }

    /// Takes in a change of the stages and writes the record soon (from a task of its own:
    /// progress is reported from synchronous code).
    pub(crate) fn update(&self, progress: &Progress) -> tokio::task::JoinHandle<()> {
        let now = self.inner.clock.now();
        {
            let mut stages = self.inner.stages.lock().unwrap_or_else(|p| p.into_inner());
            merge(&mut stages, progress, now);
        }
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.write().await }.in_current_span())
    }

    /// Stops writing (waiting for a write under way) and returns the stages as they are.
    pub(crate) async fn close(&self) -> Vec<StageRecord> {
        let mut closed = self.inner.writing.lock().await;
        *closed = true;
        self.inner
            .stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Inner {
    async fn write(&self) {
        let closed = self.writing.lock().await;
        if *closed {
            return;
        }
        if let Some(lease) = &self.lease
            && !lease.confirm().await
        {
            return;
        }
        let mut record = self.base.clone();
        record.stages = self
            .stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Err(e) = self.store.put_run(&record).await {
            tracing::warn!(error = %format!("{e:#}"), "could not record the run's stages");
        }
        drop(closed);
    }
}

/// The stored form of a stage's state.
fn stored(state: StageState) -> StageRecordState {
    match state {
        StageState::Pending => StageRecordState::Pending,
        StageState::Running => StageRecordState::Running,
        StageState::Done => StageRecordState::Done,
        StageState::Failed => StageRecordState::Failed,
    }
}

/// `stages` brought to `progress` at `now`: a stage that begins gets its start, one that
/// ends its end (and a start, if it was never seen running).
pub(crate) fn merge(stages: &mut Vec<StageRecord>, progress: &Progress, now: DateTime<Utc>) {
    for (stage, state) in progress.stages() {
        let name = stage.as_str();
        let i = match stages.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                stages.push(StageRecord {
                    name: name.to_owned(),
                    state: StageRecordState::Pending,
                    started_at: None,
                    finished_at: None,
                });
                stages.len() - 1
            }
        };
        let record = &mut stages[i];
        let state = stored(state);
        if record.state == state {
            continue;
        }
        record.state = state;
        match state {
            StageRecordState::Pending => {}
            StageRecordState::Running => record.started_at = Some(now),
            StageRecordState::Done | StageRecordState::Failed => {
                record.started_at.get_or_insert(now);
                record.finished_at = Some(now);
            }
        }
    }
}

/// At the end of a run that did not succeed: a stage still running failed with it (its
/// worker stopped, or the run was cut short).
pub(crate) fn end_running(stages: &mut [StageRecord], now: DateTime<Utc>) {
    for stage in stages
        .iter_mut()
        .filter(|s| s.state == StageRecordState::Running)
    {
        stage.state = StageRecordState::Failed;
        stage.finished_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::stages::Stage;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_770_000_000 + secs, 0).unwrap()
    }

    fn app(before: bool) -> deploy_core::AppConfig {
        let mut v = serde_json::json!({"provider": "shell", "repository": "o/r"});
        if before {
            v["before_deploy"] = serde_json::json!(["script/migrate"]);
        }
        deploy_core::AppConfig::from_value("demo", &v).unwrap()
    }

    #[test]
    fn stages_get_their_start_and_end_as_they_change() {
        let mut progress = Progress::for_app(&app(true));
        let mut stages = Vec::new();
        progress.set(Stage::Prepare, StageState::Running);
        merge(&mut stages, &progress, t(0));
        let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["prepare", "before", "deploy"]);
        assert_eq!(stages[0].state, StageRecordState::Running);
        assert_eq!(stages[0].started_at, Some(t(0)));
        assert_eq!(stages[1].state, StageRecordState::Pending);
        assert_eq!(stages[1].started_at, None);

        progress.set(Stage::Prepare, StageState::Done);
        progress.set(Stage::Before, StageState::Running);
        merge(&mut stages, &progress, t(3));
        assert_eq!(
            (stages[0].started_at, stages[0].finished_at),
            (Some(t(0)), Some(t(3)))
        );
        assert_eq!(stages[1].started_at, Some(t(3)));

        progress.set(Stage::Before, StageState::Failed);
        merge(&mut stages, &progress, t(9));
        assert_eq!(stages[1].state, StageRecordState::Failed);
        assert_eq!(stages[1].finished_at, Some(t(9)));
        // Unchanged stages keep their times when merged again.
        merge(&mut stages, &progress, t(20));
        assert_eq!(stages[1].finished_at, Some(t(9)));
        assert_eq!(stages[2].state, StageRecordState::Pending);
    }

    #[test]
    fn a_stage_still_running_at_a_failed_end_failed_with_it() {
        let mut progress = Progress::for_app(&app(false));
        let mut stages = Vec::new();
        progress.set(Stage::Prepare, StageState::Done);
        progress.set(Stage::Deploy, StageState::Running);
        merge(&mut stages, &progress, t(1));
        end_running(&mut stages, t(5));
        assert_eq!(stages[0].state, StageRecordState::Done);
        assert_eq!(stages[1].state, StageRecordState::Failed);
        assert_eq!(stages[1].finished_at, Some(t(5)));
    }

    #[tokio::test]
    async fn the_record_gets_the_stages_and_nothing_is_written_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            crate::store::SqliteStore::open(&dir.path().join("s.db"), "q")
                .await
                .unwrap(),
        );
        let mut base = crate::store::contract::run("o/r/1");
        base.state = crate::store::RunState::InProgress;
        store.create_run(&base).await.unwrap();
        let clock = Arc::new(deploy_core::ManualClock::new(t(0)));
        let recorder = StageRecorder::new(store.clone(), clock.clone(), base.clone(), None);
        let mut progress = Progress::for_app(&app(false));
        progress.set(Stage::Prepare, StageState::Running);
        recorder.update(&progress).await.unwrap();
        let stored = store.get_run("o/r/1").await.unwrap().unwrap();
        assert_eq!(stored.stages[0].state, StageRecordState::Running);
        assert_eq!(stored.state, crate::store::RunState::InProgress);

        let closed = recorder.close().await;
        assert_eq!(closed.len(), 2);
        let mut done = stored.clone();
        done.state = crate::store::RunState::Success;
        store.put_run(&done).await.unwrap();
        progress.set(Stage::Prepare, StageState::Done);
        recorder.update(&progress).await.unwrap();
        assert_eq!(
            store.get_run("o/r/1").await.unwrap().unwrap().state,
            crate::store::RunState::Success,
            "the final record stays"
        );
    }
}
