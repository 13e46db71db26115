//! The waiting line of an app's environment: one run at a time, in arrival order, with the
//! place and ETA said while a run waits, and a job handed back to the queue when every job
//! slot of the worker waits.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::job::DeployJob;
use crate::messages;
use crate::reporter::Report;
use crate::store::{RunState, eta_secs};

use super::{Deployer, Run, STORE_RETRY_FOR};
use crate::store::retry as retry_store;

/// Counts a run as waiting for as long as it lives.
pub(super) struct WaitingGuard<'a>(&'a AtomicUsize);

impl<'a> WaitingGuard<'a> {
    pub(super) fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a wait for the line ended.
pub(super) enum Turn {
    /// The run is at the head of its line.
    Ours,
    /// Every job slot was waiting: this job went back to the end of the queue.
    HandedBack,
}

/// How long a run waits with every job slot of its worker waiting before it hands its job
/// back to the queue, in line polls.
const HAND_BACK_AFTER_POLLS: u32 = 8;

impl Deployer {
    /// Waits until the run is at the head of its line, saying its place (and ETA) while it
    /// waits; hands the job back to the queue when every job slot of the worker waits.
    pub(super) async fn wait_for_turn(&self, run: &mut Run<'_>) -> anyhow::Result<Turn> {
        let job = run.job;
        let mut announced: Option<Option<u64>> = None;
        let _waiting = WaitingGuard::new(&self.waiting);
        let mut polls_all_waiting = 0u32;
        loop {
            let line = self.store.line(job.line.as_str()).await?;
            let Some(pos) = line.iter().position(|k| *k == run.key) else {
                self.store
                    .line_join(job.line.as_str(), run.key.as_str())
                    .await?;
                continue;
            };
            if pos > 0 && self.drop_stale_head(job.line.as_str(), &line[0]).await {
                continue;
            }
            let ahead = if pos == 0 {
                None
            } else {
                line[pos - 1]
                    .rsplit('/')
                    .next()
                    .and_then(|id| id.parse::<u64>().ok())
            };
            if announced != Some(ahead) {
                let text = match ahead {
                    None => messages::queued(),
                    Some(id) => {
                        let recent = self
                            .store
                            .durations(job.line.as_str())
                            .await
                            .unwrap_or_default();
                        messages::waiting(id, pos, eta_secs(&recent, pos))
                    }
                };
                announced = Some(ahead);
                // A job handed back and taken again has said this already.
                let said = ahead.is_some() && text == run.record.description;
                if !said {
                    run.record.description = text.clone();
                    let waiting_text = ahead.map(|_| text.as_str());
                    run.reporter.send(Report {
                        status: Some(run.status(RunState::Queued, text.clone(), false)),
                        chat: Some(messages::chat_queued(&run.subject(), waiting_text)),
                        chat_reply: None,
                    });
                }
            }
            if pos == 0 {
                return Ok(Turn::Ours);
            }
            if self.waiting.load(Ordering::SeqCst) >= self.settings.slots {
                polls_all_waiting += 1;
            } else {
                polls_all_waiting = 0;
            }
            if polls_all_waiting >= HAND_BACK_AFTER_POLLS
                && let Some(queue) = &self.queue
            {
                match queue.push(job.clone()).await {
                    Ok(()) => {
                        tracing::info!(
                            "every job slot of this worker is waiting on a line; handing this job back to the queue so the runs ahead can be taken"
                        );
                        return Ok(Turn::HandedBack);
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "could not hand the job back; waiting on");
                        polls_all_waiting = 0;
                    }
                }
            }
            let notified = self.line_changed.notified();
            let _ = tokio::time::timeout(self.settings.line_poll, notified).await;
        }
    }

    /// A head-of-line entry whose run already finished (its worker died after finishing but
    /// before leaving the line) is removed.
    async fn drop_stale_head(&self, line: &str, head: &str) -> bool {
        match self.store.get_run(head).await {
            Ok(Some(r)) if r.state.is_final() => {
                tracing::warn!(head, "removing a finished run from the head of the line");
                let _ = self.store.line_leave(line, head).await;
                true
            }
            Ok(None) => {
                tracing::warn!(head, "removing an unknown run from the head of the line");
                let _ = self.store.line_leave(line, head).await;
                true
            }
            _ => false,
        }
    }

    /// Takes the run out of its line (retrying while the store fails) and wakes the runs
    /// waiting in this process.
    pub(super) async fn leave_line(&self, job: &DeployJob, key: &str) {
        let store = &self.store;
        let _ = retry_store("leave the waiting line", STORE_RETRY_FOR, || {
            store.line_leave(job.line.as_str(), key)
        })
        .await;
        self.line_changed.notify_waiters();
    }
}
