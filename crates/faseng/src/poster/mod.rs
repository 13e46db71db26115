//! The poster: delivers what the outbox holds (see [`crate::store::outbox`]). One per
//! process. The process that writes an entry wakes its own poster at once; a periodic scan
//! (about every second) picks up entries left by other or restarted processes.
//!
//! A lane is claimed (a lease in the store), its entries are sent in order, and the lane is
//! settled: delivered entries are deleted; on a temporary failure the lane is rescheduled
//! with exponential backoff and jitter, honouring `Retry-After` and GitHub's secondary rate
//! limit, for up to [`OUTBOX_GIVE_UP`] after an entry was written. A status whose delivery
//! outcome is unknown (timeout, 5xx, a lane taken over from a lapsed claim) is checked
//! against GitHub's list of the deployment's statuses before it is sent again.
//!
//! [`OUTBOX_GIVE_UP`]: crate::store::outbox::OUTBOX_GIVE_UP
//!
//! Chat: the latest text wins (older texts still waiting are skipped), thread replies go
//! out in order, once; the message faseng posted itself (a payload without `message_ts`) is
//! kept in the store, so later edits, after a restart too, edit that message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deploy_core::RepoName;
use tokio::sync::watch;
use tracing::Instrument as _;

mod outbox;
mod settings;

pub use outbox::Outbox;
use settings::random_u64;
pub(crate) use settings::unit_random;
pub use settings::{PosterSettings, RetryPolicy};

use crate::metrics::Metrics;
use crate::notify::{is_permanent, retry_after};
use crate::status::{DeploymentStatusSink, PostError, StatusTarget, StatusUpdate};
use crate::store::{ClaimedLane, Lane, LaneKey, OutboxItem, Settle, SettleRetry, Store};

/// Delivers the outbox's entries (see the module docs).
pub struct Poster {
    outbox: Outbox,
    sink: Arc<dyn DeploymentStatusSink>,
    metrics: Arc<Metrics>,
    settings: PosterSettings,
    holder: String,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// How one send went.
enum Sent {
    /// Delivered (or found delivered).
    Done,
    /// Refused for good: dropped.
    Refused(String),
    /// Try again later.
    Retry {
        /// At least this long (the service asked).
        wait: Option<Duration>,
        error: String,
        /// Whether it may have been recorded.
        doubt: bool,
    },
}

impl Poster {
    /// A poster for `outbox`'s entries, sending statuses to `sink` and chat to the outbox's
    /// notifier; `holder` names it in the store's leases (unique per process).
    pub fn new(
        outbox: &Outbox,
        sink: Arc<dyn DeploymentStatusSink>,
        metrics: Arc<Metrics>,
        settings: PosterSettings,
        holder: &str,
    ) -> Self {
        Self {
            outbox: outbox.clone(),
            sink,
            metrics,
            settings,
            holder: holder.to_owned(),
        }
    }

    /// A holder name unique to this process: `prefix`, host, pid and a random part.
    pub fn holder_name(prefix: &str) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        format!(
            "{prefix}-{host}-{}-{:08x}",
            std::process::id(),
            random_u64() as u32
        )
    }

    fn store(&self) -> &dyn Store {
        self.outbox.store.as_ref()
    }

    fn now(&self) -> DateTime<Utc> {
        self.outbox.clock.now()
    }

    /// Sends until `stop` turns true, then finishes what it holds for up to the drain time.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        // Lanes being sent here, and whether they were woken again meanwhile.
        let busy: Arc<Mutex<HashMap<LaneKey, bool>>> = Arc::default();
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.settings.lanes_at_once.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        let mut next_scan = tokio::time::Instant::now();
        let mut scan_failing = false;
        loop {
            let stopping = *stop.borrow();
            let mut lanes = self.outbox.waker.take();
            if !stopping && tokio::time::Instant::now() >= next_scan {
                next_scan = tokio::time::Instant::now() + self.settings.scan_every;
                match self.store().outbox_due(self.now(), 200).await {
                    Ok(due) => {
                        if scan_failing {
                            tracing::info!("the outbox can be read again");
                            scan_failing = false;
                        }
                        lanes.extend(due);
                    }
                    Err(e) if !scan_failing => {
                        tracing::warn!(error = %format!("{e:#}"), "could not read the outbox; trying again");
                        scan_failing = true;
                    }
                    Err(_) => {}
                }
                if let Ok(depth) = self.store().outbox_depth().await {
                    self.metrics.set_outbox_depth(depth);
                }
            }
            for lane in lanes {
                {
                    let mut busy = busy.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(again) = busy.get_mut(&lane) {
                        // Being sent here: it is looked at again when its sender is done
                        // (its sender may have just found nothing left).
                        *again = true;
                        continue;
                    }
                    busy.insert(lane.clone(), false);
                }
                let (me, busy, permits) = (self.clone(), busy.clone(), permits.clone());
                let span =
                    tracing::info_span!("outbox", run = %lane.run, lane = lane.lane.as_str());
                tasks.spawn(
                    async move {
                        let _permit = permits.acquire_owned().await;
                        me.lane(&lane).await;
                        let again = busy
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&lane)
                            .unwrap_or(false);
                        if again {
                            me.outbox.wake([lane]);
                        }
                    }
                    .instrument(span),
                );
            }
            while tasks.try_join_next().is_some() {}
            if stopping {
                break;
            }
            tokio::select! {
                () = self.outbox.waker.notify.notified() => {}
                () = tokio::time::sleep_until(next_scan) => {}
                _ = stop.changed() => {}
            }
        }
        if !tasks.is_empty() {
            tracing::info!(lanes = tasks.len(), "finishing the reports being sent");
        }
        let drained = tokio::time::timeout(self.settings.drain, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                lanes = tasks.len(),
                "reports still being sent at shutdown; another faseng process (or the next start) sends them"
            );
            tasks.abort_all();
        }
    }

    /// Sends every lane due now (and those woken), one after the other; how many lanes it
    /// looked at. For tests, which move the clock instead of waiting.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let mut lanes = self.outbox.waker.take();
        lanes.extend(self.store().outbox_due(self.now(), 1000).await?);
        for lane in &lanes {
            self.lane(lane).await;
        }
        self.metrics
            .set_outbox_depth(self.store().outbox_depth().await?);
        Ok(lanes.len())
    }

    /// Claims a lane and sends it until it is empty or waits for a retry.
    async fn lane(&self, key: &LaneKey) {
        loop {
            let now = self.now();
            let claimed = match self
                .store()
                .outbox_claim(
                    key,
                    &self.holder,
                    now,
                    now + self.lease(),
                    self.settings.batch,
                )
                .await
            {
                Ok(Some(c)) if !c.entries.is_empty() => c,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not claim an outbox lane; the scan tries again");
                    return;
                }
            };
            if claimed.taken_over {
                tracing::info!(
                    "taking over reports from a process whose claim lapsed; checking what was delivered"
                );
            }
            let settle = match key.lane {
                Lane::Status => self.send_statuses(key, &claimed).await,
                Lane::Chat => self.send_chat(key, &claimed).await,
            };
            let retrying = settle.retry.is_some();
            match self.store().outbox_settle(key, &self.holder, &settle).await {
                Ok(Some(left)) if left > 0 && !retrying => continue,
                Ok(Some(_)) => return,
                Ok(None) => {
                    tracing::warn!(
                        "the claim on these reports lapsed while they were sent; another process goes on with them"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not record what was delivered; the claim lapses and the rest is checked before it is sent again");
                    return;
                }
            }
        }
    }

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::seconds(30))
    }

    /// Renews the claim when less than half of it is left; false when it was lost.
    async fn keep_claim(&self, key: &LaneKey, until: &mut DateTime<Utc>) -> bool {
        let now = self.now();
        if *until - now > self.lease() / 2 {
            return true;
        }
        match self
            .store()
            .outbox_claim(key, &self.holder, now, now + self.lease(), 1)
            .await
        {
            Ok(Some(_)) => {
                *until = now + self.lease();
                true
            }
            _ => false,
        }
    }

    /// True (logged and counted) when an entry written at `written_at` is past its time.
    fn too_old(&self, written_at: DateTime<Utc>, what: &str) -> bool {
        let age = self.now() - written_at;
        let limit = chrono::Duration::from_std(self.settings.give_up_after)
            .unwrap_or(chrono::Duration::hours(24));
        if age < limit {
            return false;
        }
        tracing::error!(
            undelivered = what,
            written_at = %written_at,
            "giving up on a report not delivered within {:?}",
            self.settings.give_up_after
        );
        self.metrics.outbox_abandoned();
        true
    }

    /// When to try again after `attempts` failures in a row (at least `wait`).
    fn retry_at(&self, attempts: u32, wait: Option<Duration>) -> DateTime<Utc> {
        let backoff = self.settings.retry.jittered(attempts, unit_random());
        let delay = wait.map_or(backoff, |w| w.max(backoff));
        self.now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1))
    }

    async fn send_statuses(&self, key: &LaneKey, claimed: &ClaimedLane) -> Settle {
        let mut settle = Settle::default();
        let mut doubt = claimed.doubt;
        let mut until = self.now() + self.lease();
        let mut failures = claimed.attempts;
        for stored in &claimed.entries {
            let OutboxItem::Status {
                repo,
                deployment_id,
                state,
                description,
                log_url,
                environment_url,
            } = &stored.entry.item
            else {
                settle.done_upto = Some(stored.seq);
                continue;
            };
            if self.too_old(
                stored.entry.written_at,
                &format!("status {} of deployment {deployment_id}", state.as_str()),
            ) {
                settle.done_upto = Some(stored.seq);
                doubt = false;
                continue;
            }
            let Ok(repo) = RepoName::parse(repo) else {
                tracing::warn!(repo, "an outbox status for an invalid repository; dropped");
                settle.done_upto = Some(stored.seq);
                continue;
            };
            if !self.keep_claim(key, &mut until).await {
                break;
            }
            let target = StatusTarget {
                repo,
                deployment_id: *deployment_id,
            };
            let update = StatusUpdate {
                state: state.as_str(),
                description: description.clone(),
                log_url: log_url.clone(),
                environment_url: environment_url.clone(),
            };
            match self.post_status(&target, &update, doubt).await {
                Sent::Done => {
                    if failures > 0 {
                        tracing::info!(
                            failures,
                            state = update.state,
                            "deployment status delivered after GitHub failed"
                        );
                        failures = 0;
                    }
                    settle.done_upto = Some(stored.seq);
                    doubt = false;
                }
                Sent::Refused(why) => {
                    self.metrics.status_post_failed();
                    tracing::warn!(state = update.state, error = %why, "deployment status rejected; not retrying");
                    settle.done_upto = Some(stored.seq);
                    doubt = false;
                }
                Sent::Retry {
                    wait,
                    error,
                    doubt: d,
                } => {
                    self.metrics.status_post_failed();
                    let attempts = if settle.done_upto.is_some() {
                        1
                    } else {
                        claimed.attempts.saturating_add(1)
                    };
                    let at = self.retry_at(attempts, wait);
                    if attempts == 1 {
                        tracing::warn!(state = update.state, %error, retry_at = %at, "deployment status post failed; retrying (the run goes on)");
                    } else {
                        tracing::info!(state = update.state, %error, attempts, retry_at = %at, "deployment status post failed again; retrying");
                    }
                    settle.retry = Some(SettleRetry {
                        at,
                        attempts,
                        error,
                        doubt: d,
                    });
                    break;
                }
            }
        }
        settle
    }

    /// Posts one status; with `doubt`, first checks whether GitHub has it already.
    async fn post_status(&self, target: &StatusTarget, update: &StatusUpdate, doubt: bool) -> Sent {
        let limit = self.settings.send_timeout;
        if doubt {
            match tokio::time::timeout(limit, self.sink.has_state(target, update.state)).await {
                Ok(Ok(true)) => {
                    tracing::info!(
                        state = update.state,
                        "GitHub recorded this status although its answer was lost; not posting it again"
                    );
                    return Sent::Done;
                }
                Ok(Ok(false)) => {}
                Ok(Err(PostError::Rejected { status, message })) => {
                    tracing::warn!(status, %message, "could not list the deployment's statuses; posting without checking");
                }
                Ok(Err(PostError::RateLimited { wait, message })) => {
                    return Sent::Retry {
                        wait: Some(wait),
                        error: message,
                        doubt: true,
                    };
                }
                Ok(Err(PostError::Temporary(e))) => {
                    return Sent::Retry {
                        wait: None,
                        error: format!("listing statuses: {e}"),
                        doubt: true,
                    };
                }
                Err(_) => {
                    return Sent::Retry {
                        wait: None,
                        error: format!("listing statuses took over {limit:?}"),
                        doubt: true,
                    };
                }
            }
        }
        match tokio::time::timeout(limit, self.sink.post(target, update)).await {
            Ok(Ok(())) => Sent::Done,
            Ok(Err(e @ PostError::Rejected { .. })) => Sent::Refused(e.to_string()),
            Ok(Err(PostError::RateLimited { wait, message })) => Sent::Retry {
                wait: Some(wait),
                error: format!("rate limited: {message}"),
                doubt: false,
            },
            Ok(Err(PostError::Temporary(e))) => Sent::Retry {
                wait: None,
                error: e,
                doubt: true,
            },
            Err(_) => Sent::Retry {
                wait: None,
                error: format!("no answer within {limit:?}"),
                doubt: true,
            },
        }
    }

    /// True when a chat lane is behind (it failed, it was taken over, or `entry` waited
    /// longer than [`CHAT_BEHIND`]): then only the latest text is sent. Otherwise each edit is
    /// shown in turn, as the run goes.
    fn catching_up(&self, claimed: &ClaimedLane, entry: &crate::store::StoredEntry) -> bool {
        claimed.attempts > 0
            || claimed.taken_over
            || self.now() - entry.entry.written_at
                > chrono::Duration::from_std(CHAT_BEHIND).unwrap_or_default()
    }

    async fn send_chat(&self, key: &LaneKey, claimed: &ClaimedLane) -> Settle {
        let mut settle = Settle::default();
        let mut until = self.now() + self.lease();
        let mut posted = claimed.chat_ts.clone();
        let mut recovering = claimed.attempts > 0;
        let last_text = claimed
            .entries
            .iter()
            .rev()
            .find(|e| matches!(e.entry.item, OutboxItem::ChatText { .. }))
            .map(|e| e.seq);
        for stored in &claimed.entries {
            let (notify, ts, text, is_text) = match &stored.entry.item {
                OutboxItem::ChatText { notify, ts, text } => (notify, ts, text, true),
                OutboxItem::ChatReply { notify, ts, text } => (notify, ts, text, false),
                OutboxItem::Status { .. } => {
                    settle.done_upto = Some(stored.seq);
                    continue;
                }
            };
            if is_text && Some(stored.seq) != last_text && self.catching_up(claimed, stored) {
                // A newer text replaces it.
                settle.done_upto = Some(stored.seq);
                continue;
            }
            let what = if is_text {
                "chat message"
            } else {
                "thread reply"
            };
            if self.too_old(stored.entry.written_at, &format!("{what}: {text}")) {
                settle.done_upto = Some(stored.seq);
                continue;
            }
            if !self.outbox.notifier.handles(notify) {
                // Another process (with the chat credentials) sends it.
                settle.retry = Some(SettleRetry {
                    at: self.now() + chrono::Duration::seconds(60),
                    attempts: claimed.attempts,
                    error: "this faseng has no chat service for it".into(),
                    doubt: false,
                });
                break;
            }
            let message = posted.clone().or_else(|| ts.clone());
            if !is_text && message.is_none() {
                tracing::warn!("no chat message to reply to; dropping the thread reply");
                settle.done_upto = Some(stored.seq);
                continue;
            }
            if !self.keep_claim(key, &mut until).await {
                break;
            }
            let limit = self.settings.send_timeout;
            let notifier = &self.outbox.notifier;
            let result = tokio::time::timeout(limit, async {
                match message.as_deref() {
                    Some(m) if !is_text => {
                        notifier.reply(notify, m, text).await.map(|()| m.to_owned())
                    }
                    message => notifier.upsert(notify, message, text).await,
                }
            })
            .await;
            match result {
                Ok(Ok(new_ts)) => {
                    if recovering {
                        tracing::info!(
                            failures = claimed.attempts,
                            "chat message caught up after the chat service failed"
                        );
                        recovering = false;
                    }
                    if is_text && message.is_none() {
                        posted = Some(new_ts.clone());
                        settle.chat_ts = Some(new_ts);
                    }
                    settle.done_upto = Some(stored.seq);
                }
                Ok(Err(e)) if is_permanent(&e) => {
                    self.metrics.chat_post_failed();
                    tracing::warn!(error = %format!("{e:#}"), "chat update refused; not retrying");
                    settle.done_upto = Some(stored.seq);
                }
                failed => {
                    self.metrics.chat_post_failed();
                    let (error, wait) = match failed {
                        Ok(Err(e)) => (format!("{e:#}"), retry_after(&e)),
                        _ => (format!("no answer within {limit:?}"), None),
                    };
                    let attempts = if settle.done_upto.is_some() {
                        1
                    } else {
                        claimed.attempts.saturating_add(1)
                    };
                    if attempts == 1 {
                        tracing::warn!(%error, "chat update failed; will catch up when the chat service answers");
                    }
                    settle.retry = Some(SettleRetry {
                        at: self.retry_at(attempts, wait),
                        attempts,
                        error,
                        doubt: false,
                    });
                    break;
                }
            }
        }
        settle
    }
}

/// How far behind a chat text may be and still be shown when a newer one is waiting.
const CHAT_BEHIND: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests;
