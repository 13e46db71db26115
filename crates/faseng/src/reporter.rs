//! Reports one run's state changes to GitHub and chat through the outbox (see
//! [`crate::store::outbox`] and [`crate::poster`]): every status and chat update is written
//! to the store, in order, before it is sent, so a restart or an outage loses nothing. The
//! run never waits for GitHub or the chat service; [`Reporter::send`] never blocks (a
//! background task writes to the store, retrying while the store fails).
//!
//! Once the run has written its start marker, [`Reporter::set_fence`] makes every later
//! write conditional on that marker still naming this worker, and [`Reporter::finish_run`]
//! writes the run's final record and last reports at once, under the same fence.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy_core::chat::Message;
use deploy_core::{Notify, RunKey};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::poster::Outbox;
use crate::status::{StatusTarget, StatusUpdate};
use crate::store::{LaneKey, OutboxEntry, OutboxItem, RunRecord, RunState};

/// How long writing reports is tried while the store fails before they are given up (a
/// Redis restart).
const STORE_RETRY_FOR: Duration = Duration::from_secs(300);

pub use crate::poster::RetryPolicy;

/// One thing to tell the world.
#[derive(Debug, Clone)]
pub struct Report {
    /// A deployment status to post.
    pub status: Option<StatusUpdate>,
    /// New content for the chat message.
    pub chat: Option<Message>,
    /// A reply in the chat message's thread (after `chat`).
    pub chat_reply: Option<Message>,
}

/// Handle to a run's reports.
#[derive(Debug)]
pub struct Reporter {
    inner: Option<Inner>,
}

#[derive(Debug)]
struct Inner {
    outbox: Outbox,
    run: String,
    target: StatusTarget,
    notify: Option<Notify>,
    ts: Option<String>,
    fence: Arc<Mutex<Option<String>>>,
    tx: Option<mpsc::UnboundedSender<Write>>,
    writer: Option<JoinHandle<()>>,
}

/// What the writer task is asked to do.
#[derive(Debug)]
enum Write {
    /// Write these entries.
    Entries(Vec<OutboxEntry>),
    /// Say when everything before is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The run state a status's state names.
fn run_state(state: &str) -> Option<RunState> {
    [
        RunState::Queued,
        RunState::InProgress,
        RunState::Success,
        RunState::Failure,
        RunState::Error,
    ]
    .into_iter()
    .find(|s| s.as_str() == state)
}

fn lanes(entries: &[OutboxEntry], run: &str) -> Vec<LaneKey> {
    let mut lanes: Vec<LaneKey> = entries
        .iter()
        .map(|e| LaneKey::new(run, e.item.lane()))
        .collect();
    lanes.sort();
    lanes.dedup();
    lanes
}

impl Reporter {
    /// Starts a reporter for one deployment (run key `owner/repo/id`). `chat_ts` is the
    /// message to edit (none = post a new one on the first chat report, unless the outbox
    /// knows one faseng posted). Chat targets the outbox's notifier does not handle get no
    /// chat reports.
    pub fn start(
        outbox: &Outbox,
        target: StatusTarget,
        notify: Option<Notify>,
        chat_ts: Option<String>,
    ) -> Self {
        let run = RunKey::new(&target.repo, target.deployment_id).to_string();
        let notify = notify.filter(|n| outbox.notifier.handles(n));
        let fence: Arc<Mutex<Option<String>>> = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(
            write(outbox.clone(), run.clone(), fence.clone(), rx)
                .instrument(tracing::Span::current()),
        );
        Self {
            inner: Some(Inner {
                outbox: outbox.clone(),
                run,
                target,
                notify,
                ts: chat_ts,
                fence,
                tx: Some(tx),
                writer: Some(writer),
            }),
        }
    }

    /// A reporter that reports nothing (what is left after [`Reporter::finish`]).
    pub fn closed() -> Self {
        Self { inner: None }
    }

    /// From now on, reports are written only while the run's start marker names `worker`
    /// (the marker this run wrote): a run another worker has taken over reports nothing more.
    pub fn set_fence(&self, worker: &str) {
        if let Some(inner) = &self.inner {
            *inner.fence.lock().unwrap_or_else(|p| p.into_inner()) = Some(worker.to_owned());
        }
    }

    /// The fence set with [`Reporter::set_fence`].
    pub fn fence(&self) -> Option<String> {
        let inner = self.inner.as_ref()?;
        inner
            .fence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The outbox entries a report makes, stamped now.
    pub fn entries(&self, report: &Report) -> Vec<OutboxEntry> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        let written_at = inner.outbox.clock.now();
        let mut items = Vec::new();
        if let Some(status) = &report.status {
            match run_state(status.state) {
                Some(state) => items.push(OutboxItem::Status {
                    repo: inner.target.repo.to_string(),
                    deployment_id: inner.target.deployment_id,
                    state,
                    description: status.description.clone(),
                    log_url: status.log_url.clone(),
                    environment_url: status.environment_url.clone(),
                }),
                None => tracing::warn!(state = status.state, "not a deployment status state"),
            }
        }
        if let Some(notify) = &inner.notify {
            let notifier = &inner.outbox.notifier;
            if let Some(message) = &report.chat {
                items.push(OutboxItem::ChatText {
                    notify: notify.clone(),
                    ts: inner.ts.clone(),
                    text: notifier.render(notify, message),
                });
            }
            if let Some(message) = &report.chat_reply {
                items.push(OutboxItem::ChatReply {
                    notify: notify.clone(),
                    ts: inner.ts.clone(),
                    text: notifier.render(notify, message),
                });
            }
        }
        items
            .into_iter()
            .map(|item| OutboxEntry { written_at, item })
            .collect()
    }

    /// Queues a report for the outbox; never blocks.
    pub fn send(&self, report: Report) {
        let entries = self.entries(&report);
        if entries.is_empty() {
            return;
        }
        if let Some(tx) = self.inner.as_ref().and_then(|i| i.tx.as_ref()) {
            let _ = tx.send(Write::Entries(entries));
        }
    }

    /// Waits until the reports queued so far are written to the store (or given up).
    pub async fn flush(&self) {
        let Some(tx) = self.inner.as_ref().and_then(|i| i.tx.as_ref()) else {
            return;
        };
        let (done, written) = tokio::sync::oneshot::channel();
        if tx.send(Write::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }

    /// Queues a status only.
    pub fn status(&self, status: StatusUpdate) {
        self.send(Report {
            status: Some(status),
            chat: None,
            chat_reply: None,
        });
    }

    /// Stops taking reports and waits up to `bound` for the queued ones to be written to the
    /// store (the poster delivers them from there); returns the chat message ts given at the
    /// start.
    pub async fn finish(mut self, bound: Duration) -> Option<String> {
        let mut inner = self.inner.take()?;
        inner.tx.take();
        if let Some(writer) = inner.writer.take() {
            match tokio::time::timeout(bound, writer).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "the report writer failed"),
                Err(_) => tracing::warn!(
                    "reports still being written to the store after {bound:?}; leaving them to finish in the background"
                ),
            }
        }
        inner.ts
    }

    /// Ends the run: once the queued reports are written, writes its final `record` and
    /// `last` report at once under the fence (retrying while the store fails), and wakes the
    /// poster. `Ok(false)`: fenced out (another worker holds the run), nothing written.
    pub async fn finish_run(mut self, record: &RunRecord, last: Report) -> anyhow::Result<bool> {
        let entries = self.entries(&last);
        let fence = self.fence();
        let Some(mut inner) = self.inner.take() else {
            anyhow::bail!("the reporter is closed");
        };
        inner.tx.take();
        if let Some(writer) = inner.writer.take()
            && let Err(e) = writer.await
        {
            tracing::warn!(error = %e, "the report writer failed");
        }
        let store = inner.outbox.store.clone();
        let written = crate::store::retry("record the result", STORE_RETRY_FOR, || {
            store.finish_run(record, fence.as_deref(), &entries)
        })
        .await?;
        if written {
            inner.outbox.wake(lanes(&entries, &inner.run));
        } else {
            tracing::warn!(
                fence = fence.as_deref().unwrap_or_default(),
                "the run's start marker names another worker now; not recording this result"
            );
        }
        Ok(written)
    }
}

/// Writes queued reports to the store in order (several at once when they queue up), and
/// wakes the poster for their lanes.
async fn write(
    outbox: Outbox,
    run: String,
    fence: Arc<Mutex<Option<String>>>,
    mut rx: mpsc::UnboundedReceiver<Write>,
) {
    let mut fenced_out = false;
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(w) = next {
            match w {
                Write::Entries(entries) => batch.extend(entries),
                Write::Flush(done) => flushes.push(done),
            }
            next = rx.try_recv().ok();
        }
        write_batch(&outbox, &run, &fence, &batch, &mut fenced_out).await;
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn write_batch(
    outbox: &Outbox,
    run: &str,
    fence: &Mutex<Option<String>>,
    batch: &[OutboxEntry],
    fenced_out: &mut bool,
) {
    if batch.is_empty() {
        return;
    }
    let fence = fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let store = outbox.store.clone();
    match crate::store::retry("write reports to the outbox", STORE_RETRY_FOR, || {
        store.outbox_push(run, fence.as_deref(), batch)
    })
    .await
    {
        Ok(true) => outbox.wake(lanes(batch, run)),
        Ok(false) if !*fenced_out => {
            *fenced_out = true;
            tracing::warn!(
                fence = fence.as_deref().unwrap_or_default(),
                "the run's start marker names another worker now; its reports are not written"
            );
        }
        Ok(false) => {}
        Err(e) => {
            let lost: Vec<String> = batch.iter().map(describe).collect();
            tracing::error!(error = %format!("{e:#}"), ?lost, "reports could not be written to the store; they are lost");
        }
    }
}

fn describe(e: &OutboxEntry) -> String {
    match &e.item {
        OutboxItem::Status { state, .. } => format!("status {}", state.as_str()),
        OutboxItem::ChatText { text, .. } => format!("chat: {text}"),
        OutboxItem::ChatReply { text, .. } => format!("reply: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_states_name_run_states() {
        for s in [
            RunState::Queued,
            RunState::InProgress,
            RunState::Success,
            RunState::Failure,
            RunState::Error,
        ] {
            assert_eq!(run_state(s.as_str()), Some(s));
        }
        assert_eq!(run_state("inactive"), None);
    }
}
