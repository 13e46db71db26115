//! Reports one run's state changes to GitHub and chat, in order, in the background: a
//! status post that fails with 5xx is retried with backoff while the run goes on; a 4xx is
//! logged and dropped. The run never waits for a report, except for a bounded drain at the end.
//!
//! Statuses and chat go out on two separate tasks, so a chat service that is down never
//! delays a GitHub status. A chat update that fails for a reason that may pass (5xx,
//! timeout, connection refused) is caught up: the latest text is sent again with backoff
//! (older texts it replaced are skipped) until the chat service answers, for up to
//! [`CHAT_CATCH_UP`] after the run ended; giving up is logged at error level with the text
//! that was not delivered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument as _;

use deploy_core::Notify;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::notify::{ChatNotifier, is_permanent};
use crate::status::{DeploymentStatusSink, PostError, StatusTarget, StatusUpdate};

/// How long after a run ended its chat message keeps being caught up while the chat service
/// fails.
pub const CHAT_CATCH_UP: Duration = Duration::from_secs(15 * 60);

/// How long the end of a run waits for its chat message before leaving the catch-up to the
/// background (a chat outage must not hold a worker slot).
pub const CHAT_DRAIN: Duration = Duration::from_secs(10);

/// How status posts are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (first included).
    pub attempts: u32,
    /// Delay before the second attempt; doubled each time.
    pub first_delay: Duration,
    /// Cap on one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// One thing to tell the world.
#[derive(Debug, Clone)]
pub struct Report {
    /// A deployment status to post.
    pub status: Option<StatusUpdate>,
    /// New text for the chat message.
    pub chat: Option<String>,
    /// A reply in the chat message's thread (after `chat`).
    pub chat_reply: Option<String>,
}

/// A chat change: new text for the message and/or a reply in its thread.
#[derive(Debug)]
struct ChatChange {
    text: Option<String>,
    reply: Option<String>,
}

/// Handle to a run's background reporter.
#[derive(Debug)]
pub struct Reporter {
    statuses: Option<mpsc::UnboundedSender<StatusUpdate>>,
    chat: Option<mpsc::UnboundedSender<ChatChange>>,
    status_task: Option<JoinHandle<()>>,
    chat_task: Option<JoinHandle<()>>,
    ts: Arc<Mutex<Option<String>>>,
}

impl Reporter {
    /// Starts a reporter for one deployment. `chat_ts` is the message to edit (none = post
    /// a new one on the first chat report).
    pub fn start(
        sink: Arc<dyn DeploymentStatusSink>,
        notifier: Arc<dyn ChatNotifier>,
        target: StatusTarget,
        notify: Option<Notify>,
        chat_ts: Option<String>,
        retry: RetryPolicy,
    ) -> Self {
        let (status_tx, mut status_rx) = mpsc::unbounded_channel::<StatusUpdate>();
        let status_task = tokio::spawn(
            async move {
                while let Some(status) = status_rx.recv().await {
                    post_with_retry(sink.as_ref(), &target, &status, retry).await;
                }
            }
            .instrument(tracing::Span::current()),
        );
        let ts = Arc::new(Mutex::new(chat_ts));
        let notify = notify.filter(|n| notifier.handles(n));
        let (chat_tx, chat_task) = match notify {
            Some(n) => {
                let (tx, rx) = mpsc::unbounded_channel::<ChatChange>();
                let chat = ChatCatchUp {
                    notifier,
                    notify: n,
                    ts: ts.clone(),
                    retry,
                };
                let task = tokio::spawn(chat.run(rx).instrument(tracing::Span::current()));
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        Self {
            statuses: Some(status_tx),
            chat: chat_tx,
            status_task: Some(status_task),
            chat_task,
            ts,
        }
    }

    /// A reporter that reports nothing (what is left after [`Reporter::finish`]).
    pub fn closed() -> Self {
        Self {
            statuses: None,
            chat: None,
            status_task: None,
            chat_task: None,
            ts: Arc::new(Mutex::new(None)),
        }
    }

    /// Queues a report; never blocks.
    pub fn send(&self, report: Report) {
        if let (Some(status), Some(tx)) = (report.status, &self.statuses) {
            let _ = tx.send(status);
        }
        if (report.chat.is_some() || report.chat_reply.is_some())
            && let Some(tx) = &self.chat
        {
            let _ = tx.send(ChatChange {
                text: report.chat,
                reply: report.chat_reply,
            });
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

    /// Stops taking reports and waits up to `bound` for the queued statuses to go out, and
    /// up to [`CHAT_DRAIN`] of that for the chat message (which keeps catching up in the
    /// background if the chat service is failing); returns the chat message ts when known.
    pub async fn finish(mut self, bound: Duration) -> Option<String> {
        self.statuses.take();
        self.chat.take();
        let deadline = tokio::time::Instant::now() + bound;
        if let Some(task) = self.status_task.take() {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "status reporter task failed"),
                Err(_) => tracing::warn!(
                    "statuses still pending after {bound:?}; leaving them to finish in the background"
                ),
            }
        }
        if let Some(task) = self.chat_task.take() {
            let chat_deadline = deadline.min(tokio::time::Instant::now() + CHAT_DRAIN);
            match tokio::time::timeout_at(chat_deadline, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "chat reporter task failed"),
                Err(_) => tracing::warn!(
                    "the chat message is not up to date yet; catching up in the background"
                ),
            }
        }
        self.ts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Keeps one run's chat message up to date, catching up after chat outages.
struct ChatCatchUp {
    notifier: Arc<dyn ChatNotifier>,
    notify: Notify,
    ts: Arc<Mutex<Option<String>>>,
    retry: RetryPolicy,
}

impl ChatCatchUp {
    fn ts(&self) -> Option<String> {
        self.ts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn run(self, mut rx: mpsc::UnboundedReceiver<ChatChange>) {
        let mut text: Option<String> = None;
        let mut replies: VecDeque<String> = VecDeque::new();
        let mut failures = 0u32;
        let mut last_error = String::new();
        let mut open = true;
        let mut give_up_at: Option<tokio::time::Instant> = None;
        loop {
            if text.is_some() || !replies.is_empty() {
                match self.deliver(&mut text, &mut replies).await {
                    Ok(()) => {
                        if failures > 0 {
                            tracing::info!(
                                failures,
                                "chat message caught up after the chat service failed"
                            );
                        }
                        failures = 0;
                    }
                    Err(Deliver::Permanent(e)) => {
                        tracing::warn!(error = %e, "chat update refused; not retrying");
                        text = None;
                        replies.clear();
                        failures = 0;
                    }
                    Err(Deliver::Temporary(e)) => {
                        failures += 1;
                        if failures == 1 {
                            tracing::warn!(error = %e, "chat update failed; will catch up when the chat service answers");
                        }
                        last_error = e;
                    }
                }
            }
            let pending = text.is_some() || !replies.is_empty();
            if !open {
                if !pending {
                    return;
                }
                let now = tokio::time::Instant::now();
                let give_up = *give_up_at.get_or_insert(now + CHAT_CATCH_UP);
                if now >= give_up {
                    tracing::error!(
                        text = text.as_deref().unwrap_or(""),
                        replies = replies.len(),
                        error = %last_error,
                        "giving up on the chat message after {CHAT_CATCH_UP:?} of failures; its last update was not delivered"
                    );
                    return;
                }
                tokio::time::sleep(self.retry.delay(failures).min(give_up - now)).await;
                continue;
            }
            let next = if pending {
                match tokio::time::timeout(self.retry.delay(failures), rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => continue,
                }
            } else {
                rx.recv().await
            };
            let Some(first) = next else {
                open = false;
                continue;
            };
            let mut change = Some(first);
            while let Some(c) = change {
                if c.text.is_some() {
                    text = c.text;
                }
                replies.extend(c.reply);
                change = rx.try_recv().ok();
            }
        }
    }

    async fn deliver(
        &self,
        text: &mut Option<String>,
        replies: &mut VecDeque<String>,
    ) -> Result<(), Deliver> {
        if let Some(t) = text.as_deref() {
            let ts = self.ts();
            let new_ts = self
                .notifier
                .upsert(&self.notify, ts.as_deref(), t)
                .await
                .map_err(Deliver::from)?;
            *self.ts.lock().unwrap_or_else(|p| p.into_inner()) = Some(new_ts);
            *text = None;
        }
        while let Some(reply) = replies.front() {
            let Some(ts) = self.ts() else {
                tracing::warn!("no chat message to reply to; dropping the thread reply");
                replies.clear();
                break;
            };
            self.notifier
                .reply(&self.notify, &ts, reply)
                .await
                .map_err(Deliver::from)?;
            replies.pop_front();
        }
        Ok(())
    }
}

enum Deliver {
    Permanent(String),
    Temporary(String),
}

impl From<anyhow::Error> for Deliver {
    fn from(e: anyhow::Error) -> Self {
        if is_permanent(&e) {
            Deliver::Permanent(format!("{e:#}"))
        } else {
            Deliver::Temporary(format!("{e:#}"))
        }
    }
}

async fn post_with_retry(
    sink: &dyn DeploymentStatusSink,
    target: &StatusTarget,
    status: &StatusUpdate,
    retry: RetryPolicy,
) {
    for attempt in 1..=retry.attempts {
        match sink.post(target, status).await {
            Ok(()) => return,
            Err(PostError::Rejected {
                status: code,
                message,
            }) => {
                tracing::warn!(code, %message, state = status.state, "deployment status rejected; not retrying");
                return;
            }
            Err(PostError::Temporary(e)) if attempt < retry.attempts => {
                let delay = retry.delay(attempt);
                tracing::info!(error = %e, attempt, ?delay, state = status.state, "deployment status post failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(PostError::Temporary(e)) => {
                tracing::error!(error = %e, state = status.state, "deployment status post failed; giving up");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::notify::NoChat;
    use crate::store::RunState;

    #[derive(Default)]
    struct Flaky {
        fail_first: AtomicU32,
        code: u16,
        calls: AtomicU32,
        posted: Mutex<Vec<&'static str>>,
    }

    #[async_trait]
    impl DeploymentStatusSink for Flaky {
        async fn post(&self, _: &StatusTarget, u: &StatusUpdate) -> Result<(), PostError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail_first.load(Ordering::SeqCst) > 0 {
                self.fail_first.fetch_sub(1, Ordering::SeqCst);
                return Err(if self.code >= 500 {
                    PostError::Temporary("503".into())
                } else {
                    PostError::Rejected {
                        status: self.code,
                        message: "no".into(),
                    }
                });
            }
            self.posted.lock().unwrap().push(u.state);
            Ok(())
        }
    }

    fn target() -> StatusTarget {
        StatusTarget {
            repo: deploy_core::RepoName::parse("o/r").unwrap(),
            deployment_id: 1,
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn server_errors_are_retried_and_order_is_kept() {
        let sink = Arc::new(Flaky {
            fail_first: AtomicU32::new(2),
            code: 503,
            ..Default::default()
        });
        let r = Reporter::start(sink.clone(), Arc::new(NoChat), target(), None, None, fast());
        r.status(StatusUpdate::new(RunState::Queued, "q".into()));
        r.status(StatusUpdate::new(RunState::Success, "s".into()));
        r.finish(Duration::from_secs(5)).await;
        assert_eq!(*sink.posted.lock().unwrap(), ["queued", "success"]);
        assert_eq!(sink.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let sink = Arc::new(Flaky {
            fail_first: AtomicU32::new(1),
            code: 422,
            ..Default::default()
        });
        let r = Reporter::start(sink.clone(), Arc::new(NoChat), target(), None, None, fast());
        r.status(StatusUpdate::new(RunState::Queued, "q".into()));
        r.status(StatusUpdate::new(RunState::Success, "s".into()));
        r.finish(Duration::from_secs(5)).await;
        assert_eq!(*sink.posted.lock().unwrap(), ["success"]);
        assert_eq!(sink.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            attempts: 9,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(350));
        assert_eq!(p.delay(30), Duration::from_millis(350));
    }
}
