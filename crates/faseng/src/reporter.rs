//! Reports one run's state changes to GitHub and chat, in order, in the background: a
//! status post that fails with 5xx is retried with backoff while the run goes on; a 4xx is
//! logged and dropped. The run never waits for a report, except for a bounded drain at the end.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use deploy_core::Notify;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::notify::ChatNotifier;
use crate::status::{DeploymentStatusSink, PostError, StatusTarget, StatusUpdate};

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

/// Handle to a run's background reporter.
#[derive(Debug)]
pub struct Reporter {
    tx: Option<mpsc::UnboundedSender<Report>>,
    task: Option<JoinHandle<Option<String>>>,
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
        let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
        let task = tokio::spawn(
            async move {
                let notify = notify.filter(|n| notifier.handles(n));
                let mut ts = chat_ts;
                while let Some(report) = rx.recv().await {
                    if let Some(status) = &report.status {
                        post_with_retry(sink.as_ref(), &target, status, retry).await;
                    }
                    let Some(n) = &notify else { continue };
                    if let Some(text) = &report.chat {
                        match notifier.upsert(n, ts.as_deref(), text).await {
                            Ok(new_ts) => ts = Some(new_ts),
                            Err(e) => tracing::warn!(error = %e, "chat update failed"),
                        }
                    }
                    if let (Some(text), Some(t)) = (&report.chat_reply, &ts)
                        && let Err(e) = notifier.reply(n, t, text).await
                    {
                        tracing::warn!(error = %e, "chat thread reply failed");
                    }
                }
                ts
            }
            .instrument(tracing::Span::current()),
        );
        Self {
            tx: Some(tx),
            task: Some(task),
        }
    }

    /// A reporter that reports nothing (what is left after [`Reporter::finish`]).
    pub fn closed() -> Self {
        Self {
            tx: None,
            task: None,
        }
    }

    /// Queues a report; never blocks.
    pub fn send(&self, report: Report) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(report);
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

    /// Stops taking reports and waits up to `bound` for the queued ones to go out; returns
    /// the chat message ts when known.
    pub async fn finish(mut self, bound: Duration) -> Option<String> {
        self.tx.take();
        let task = self.task.take()?;
        match tokio::time::timeout(bound, task).await {
            Ok(Ok(ts)) => ts,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reporter task failed");
                None
            }
            Err(_) => {
                tracing::warn!(
                    "reports still pending after {bound:?}; leaving them to finish in the background"
                );
                None
            }
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
