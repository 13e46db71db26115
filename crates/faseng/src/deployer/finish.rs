//! Finishing a run: its final record, status and chat message at once (while its start
//! marker is still this worker's), the line left, and the reports let out.

use std::time::Duration;

use chrono::Utc;

use crate::messages;
use crate::outcome::{RunError, RunOutcome};
use crate::reporter::{Report, Reporter};
use crate::store::page::PAGE_MAX;
use crate::store::stats::counted_task;
use crate::store::{RunQuery, RunRecord, RunState};

use super::{Deployer, Run, STORE_RETRY_FOR};
use crate::store::retry as retry_store;

impl Deployer {
    /// Ends the run with `outcome` (`tail`: the last log lines, replied under a failure).
    pub(super) async fn finish(
        &self,
        run: Run<'_>,
        outcome: RunOutcome,
        tail: Option<Vec<String>>,
    ) -> anyhow::Result<()> {
        self.finish_with_text(run, outcome, tail, None).await
    }

    /// [`Deployer::finish`], with the text of a lock or unlock in place of the usual one.
    pub(super) async fn finish_with_text(
        &self,
        mut run: Run<'_>,
        outcome: RunOutcome,
        tail: Option<Vec<String>>,
        lock_text: Option<String>,
    ) -> anyhow::Result<()> {
        let still_held = match &run.lease {
            Some(lease) => lease.confirm().await,
            None => true,
        };
        if !still_held {
            tracing::warn!(
                "the run's lease was lost before its result was written; the worker holding it now reports it"
            );
            self.metrics.abandoned_run();
            return Ok(());
        }
        let now = Utc::now();
        run.record.finished_at = Some(now);
        let (state, description) = match &outcome {
            RunOutcome::Success => (
                RunState::Success,
                lock_text.clone().unwrap_or_else(|| {
                    messages::succeeded(
                        run.record
                            .started_at
                            .map_or(0.0, |s| (now - s).num_milliseconds() as f64 / 1000.0),
                    )
                }),
            ),
            RunOutcome::Failed(f) => (RunState::Failure, messages::run_failure(f)),
            RunOutcome::Error(e) => (RunState::Error, messages::run_error(e)),
        };
        run.record.state = state;
        run.record.description = description.clone();
        if state != RunState::Success {
            super::stages::end_running(&mut run.record.stages, now);
        }
        let secs = run.record.duration_secs();
        if state == RunState::Success
            && lock_text.is_none()
            && let Some(s) = secs
            && let Err(e) = self.store.push_duration(run.job.line.as_str(), s).await
        {
            tracing::warn!(error = %e, "could not record the duration");
        }
        self.leave_line(run.job, run.key.as_str()).await;
        let chat = match (&outcome, &lock_text) {
            (_, Some(_)) => messages::chat_lock(&description),
            (RunOutcome::Success, None) => {
                messages::chat_succeeded(&run.subject(), secs.unwrap_or(0.0), &run.log_url)
            }
            (RunOutcome::Failed(_), None) => {
                messages::chat_failed(&run.subject(), &description, &run.log_url)
            }
            (RunOutcome::Error(RunError::Blocked { message, .. }), None) => {
                messages::chat_refused(&run.subject(), message)
            }
            (RunOutcome::Error(_), None) => messages::chat_error(&run.subject(), &description),
        };
        let chat = match (&outcome, &lock_text) {
            (RunOutcome::Success | RunOutcome::Failed(_), None) => {
                match self.rollback_target(&run.record).await {
                    Some(id) => chat.button(
                        deploy_core::chat::ROLLBACK_ACTION_ID,
                        messages::ROLLBACK_BUTTON,
                        deploy_core::chat::ButtonValue::new(messages::rollback_command(
                            &run.record.app,
                            &run.record.environment,
                            id,
                        ))
                        .to_json(),
                    ),
                    None => chat,
                }
            }
            _ => chat,
        };
        let reply = match (&outcome, tail) {
            (RunOutcome::Failed(_), Some(t)) if !t.is_empty() => Some(messages::chat_log_tail(&t)),
            _ => None,
        };
        let with_log = run.record.started_at.is_some();
        let last = Report {
            status: Some(run.status(state, description, with_log)),
            chat: Some(chat),
            chat_reply: reply,
        };
        tracing::info!(state = state.as_str(), "deployment finished");
        self.metrics.run(
            state.as_str(),
            if lock_text.is_none() { secs } else { None },
        );
        // The final record and reports at once, only while this run's start marker is ours.
        let reporter = std::mem::replace(&mut run.reporter, Reporter::closed());
        let _ = reporter.finish_run(&run.record, last).await;
        if let Some(lease) = run.lease.take() {
            lease.stop();
        }
        Ok(())
    }

    /// Lets the run's reports go out (up to the drain bound), then writes its record with
    /// the chat message it ended up on.
    pub(super) async fn close_run(&self, run: &mut Run<'_>, what: &str) {
        run.record.chat_ts = run
            .reporter_finish(self.settings.report_drain)
            .await
            .or(run.record.chat_ts.clone());
        let store = &self.store;
        let record = &run.record;
        let _ = retry_store(what, STORE_RETRY_FOR, || store.put_run(record)).await;
    }
}

/// How many runs back the "Roll back" button's target is looked for.
const ROLLBACK_LOOKBACK: usize = 1000;

impl Deployer {
    /// What a finished deploy's "Roll back" button goes back to: the newest deployment of its
    /// app in its environment received before it that succeeded, with another commit (none:
    /// no button). A store that cannot be read leaves the button off.
    async fn rollback_target(&self, record: &RunRecord) -> Option<u64> {
        if record.app.is_empty() || !counted_task(&record.task) {
            return None;
        }
        let mut query = RunQuery {
            app: Some(record.app.clone()),
            environment: Some(record.environment.clone()),
            until: Some(record.received_at),
            limit: PAGE_MAX,
            ..RunQuery::default()
        };
        let mut seen = 0;
        while seen < ROLLBACK_LOOKBACK {
            let page = match self.store.history(&query).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not read the history for the Roll back button");
                    return None;
                }
            };
            seen += page.items.len();
            if let Some(found) = page.items.iter().find(|r| {
                r.key != record.key
                    && r.state == RunState::Success
                    && counted_task(&r.task)
                    && !r.sha.eq_ignore_ascii_case(&record.sha)
            }) {
                return Some(found.deployment_id);
            }
            query.cursor = Some(page.next?);
        }
        None
    }
}

impl Run<'_> {
    async fn reporter_finish(&mut self, bound: Duration) -> Option<String> {
        let reporter = std::mem::replace(&mut self.reporter, Reporter::closed());
        reporter.finish(bound).await
    }
}
