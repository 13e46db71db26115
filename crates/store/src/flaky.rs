//! A test store: a real SQLite store with one call failing once, the way a store that dies
//! mid-call fails (before doing anything, or after doing it with the answer lost).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::*;

/// Which store call a [`FlakyStore`] makes fail once, as a store that dies mid-call would.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FailOnce {
    /// The first `env_lock` (checked before the run's turn) waits for `release`, then
    /// fails without doing anything.
    EnvLockAfterRelease,
    /// The first `mark_started` writes the marker, then fails (its answer was lost).
    MarkStartedAnswer,
    /// The first `accept_runs` does its work, then fails (its answer was lost).
    AcceptRunsAnswer,
}

/// A real SQLite store with one call failing once.
pub struct FlakyStore {
    inner: SqliteStore,
    fail: FailOnce,
    failed: std::sync::atomic::AtomicBool,
    /// Notified when the held call is reached.
    pub reached: tokio::sync::Notify,
    /// Lets the held call go on (and fail).
    pub release: tokio::sync::Notify,
}

impl FlakyStore {
    /// `inner` with `fail` armed.
    pub fn new(inner: SqliteStore, fail: FailOnce) -> Self {
        Self {
            inner,
            fail,
            failed: Default::default(),
            reached: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        }
    }

    fn first(&self, which: FailOnce) -> bool {
        self.fail == which && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl Meta for FlakyStore {
    async fn ping(&self) -> anyhow::Result<()> {
        self.inner.ping().await
    }

    async fn queue_depth(&self) -> anyhow::Result<u64> {
        self.inner.queue_depth().await
    }

    async fn link_key(&self, fresh: &str) -> anyhow::Result<String> {
        self.inner.link_key(fresh).await
    }
}

#[async_trait]
impl Deliveries for FlakyStore {
    async fn accept_runs(&self, items: &[AcceptItem]) -> anyhow::Result<Vec<Accepted>> {
        let result = self.inner.accept_runs(items).await;
        if self.first(FailOnce::AcceptRunsAnswer) {
            anyhow::bail!("broken pipe (the answer was lost)");
        }
        result
    }

    async fn release_delivery(&self, delivery_id: &str) -> anyhow::Result<()> {
        self.inner.release_delivery(delivery_id).await
    }
}

#[async_trait]
impl Runs for FlakyStore {
    async fn history(&self, query: &RunQuery) -> anyhow::Result<Page<RunRecord>> {
        self.inner.history(query).await
    }
    async fn create_run(&self, run: &RunRecord) -> anyhow::Result<bool> {
        self.inner.create_run(run).await
    }

    async fn put_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        self.inner.put_run(run).await
    }

    async fn get_run(&self, key: &str) -> anyhow::Result<Option<RunRecord>> {
        self.inner.get_run(key).await
    }

    async fn delete_run(&self, key: &str) -> anyhow::Result<()> {
        self.inner.delete_run(key).await
    }

    async fn mark_started(
        &self,
        key: &str,
        marker: &StartMarker,
    ) -> anyhow::Result<Option<StartMarker>> {
        let result = self.inner.mark_started(key, marker).await;
        if self.first(FailOnce::MarkStartedAnswer) {
            anyhow::bail!("broken pipe (the answer was lost)");
        }
        result
    }

    async fn update_started(&self, key: &str, marker: &StartMarker) -> anyhow::Result<bool> {
        self.inner.update_started(key, marker).await
    }

    async fn started(&self, key: &str) -> anyhow::Result<Option<StoredMarker>> {
        self.inner.started(key).await
    }

    async fn take_over_started(
        &self,
        key: &str,
        expected: &StoredMarker,
        new: &StartMarker,
    ) -> anyhow::Result<bool> {
        self.inner.take_over_started(key, expected, new).await
    }

    async fn note_provider_stopped(&self, key: &str, started_by: &str) -> anyhow::Result<()> {
        self.inner.note_provider_stopped(key, started_by).await
    }

    async fn provider_stopped(&self, key: &str, started_by: &str) -> anyhow::Result<bool> {
        self.inner.provider_stopped(key, started_by).await
    }

    async fn job(&self, key: &str) -> anyhow::Result<Option<String>> {
        self.inner.job(key).await
    }

    async fn record_status_event(
        &self,
        key: &str,
        state: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.inner.record_status_event(key, state, at).await
    }
}

#[async_trait]
impl Lines for FlakyStore {
    async fn line_heads(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.inner.line_heads().await
    }

    async fn line_join(&self, line: &str, key: &str) -> anyhow::Result<()> {
        self.inner.line_join(line, key).await
    }

    async fn line_leave(&self, line: &str, key: &str) -> anyhow::Result<()> {
        self.inner.line_leave(line, key).await
    }

    async fn line(&self, line: &str) -> anyhow::Result<Vec<String>> {
        self.inner.line(line).await
    }

    async fn push_duration(&self, line: &str, secs: f64) -> anyhow::Result<()> {
        self.inner.push_duration(line, secs).await
    }

    async fn durations(&self, line: &str) -> anyhow::Result<Vec<f64>> {
        self.inner.durations(line).await
    }
}

#[async_trait]
impl Locks for FlakyStore {
    async fn acquire_lock(
        &self,
        line: &str,
        lock: &EnvLock,
        now: DateTime<Utc>,
    ) -> anyhow::Result<EnvLock> {
        self.inner.acquire_lock(line, lock, now).await
    }
    async fn take_over_lock(&self, line: &str, lock: &EnvLock) -> anyhow::Result<Option<EnvLock>> {
        self.inner.take_over_lock(line, lock).await
    }
    async fn locks(&self) -> anyhow::Result<Vec<(String, EnvLock)>> {
        self.inner.locks().await
    }
    async fn env_lock(&self, line: &str) -> anyhow::Result<Option<EnvLock>> {
        if self.first(FailOnce::EnvLockAfterRelease) {
            let released = self.release.notified();
            self.reached.notify_one();
            released.await;
            anyhow::bail!("connection refused");
        }
        self.inner.env_lock(line).await
    }

    async fn set_env_lock(&self, line: &str, lock: &EnvLock) -> anyhow::Result<EnvLock> {
        self.inner.set_env_lock(line, lock).await
    }

    async fn clear_env_lock(&self, line: &str, holder: &str) -> anyhow::Result<Option<EnvLock>> {
        self.inner.clear_env_lock(line, holder).await
    }

    async fn update_lock_if(
        &self,
        line: &str,
        holder: &str,
        since: DateTime<Utc>,
        new: &EnvLock,
    ) -> anyhow::Result<bool> {
        self.inner.update_lock_if(line, holder, since, new).await
    }

    async fn release_lock_if(
        &self,
        line: &str,
        holder: &str,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Option<EnvLock>> {
        self.inner.release_lock_if(line, holder, since).await
    }

    async fn expire_lock(&self, line: &str, now: DateTime<Utc>) -> anyhow::Result<Option<EnvLock>> {
        self.inner.expire_lock(line, now).await
    }
}

#[async_trait]
impl Logs for FlakyStore {
    async fn append_log(&self, key: &str, lines: &[String]) -> anyhow::Result<()> {
        self.inner.append_log(key, lines).await
    }

    async fn read_log(&self, key: &str, from: usize) -> anyhow::Result<Vec<String>> {
        self.inner.read_log(key, from).await
    }
}

#[async_trait]
impl Outbox for FlakyStore {
    async fn outbox_push(
        &self,
        run: &str,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool> {
        self.inner.outbox_push(run, fence, entries).await
    }

    async fn finish_run(
        &self,
        record: &RunRecord,
        fence: Option<&str>,
        entries: &[OutboxEntry],
    ) -> anyhow::Result<bool> {
        self.inner.finish_run(record, fence, entries).await
    }

    async fn outbox_due(&self, now: DateTime<Utc>, limit: usize) -> anyhow::Result<Vec<LaneKey>> {
        self.inner.outbox_due(now, limit).await
    }

    async fn outbox_claim(
        &self,
        lane: &LaneKey,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Option<ClaimedLane>> {
        self.inner
            .outbox_claim(lane, holder, now, until, limit)
            .await
    }

    async fn outbox_settle(
        &self,
        lane: &LaneKey,
        holder: &str,
        settle: &Settle,
    ) -> anyhow::Result<Option<u64>> {
        self.inner.outbox_settle(lane, holder, settle).await
    }

    async fn outbox_depth(&self) -> anyhow::Result<u64> {
        self.inner.outbox_depth().await
    }
}

#[async_trait]
impl Duties for FlakyStore {
    async fn acquire_duty(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> anyhow::Result<bool> {
        self.inner.acquire_duty(name, holder, now, ttl).await
    }

    async fn release_duty(&self, name: &str, holder: &str) -> anyhow::Result<()> {
        self.inner.release_duty(name, holder).await
    }
}

#[async_trait]
impl Retention for FlakyStore {
    async fn sweep(&self, cutoff: DateTime<Utc>) -> anyhow::Result<Swept> {
        self.inner.sweep(cutoff).await
    }

    async fn size(&self) -> anyhow::Result<StoreSize> {
        self.inner.size().await
    }
}

#[async_trait]
impl Audit for FlakyStore {
    async fn audit_append(&self, entry: &AuditEntry) -> anyhow::Result<u64> {
        self.inner.audit_append(entry).await
    }
    async fn audit(&self, query: &AuditQuery) -> anyhow::Result<Page<AuditRecord>> {
        self.inner.audit(query).await
    }
}

#[async_trait]
impl DeskLine for FlakyStore {
    async fn join_line(&self, r: &NewLineRequest) -> anyhow::Result<(LineRequest, usize)> {
        self.inner.join_line(r).await
    }

    async fn line_requests(&self, line: &str) -> anyhow::Result<Vec<LineRequest>> {
        self.inner.line_requests(line).await
    }

    async fn waiting_lines(&self) -> anyhow::Result<Vec<String>> {
        self.inner.waiting_lines().await
    }

    async fn leave_line(&self, line: &str, user: &str) -> anyhow::Result<Option<LineRequest>> {
        self.inner.leave_line(line, user).await
    }

    async fn take_line_request(&self, line: &str, id: u64) -> anyhow::Result<Option<LineRequest>> {
        self.inner.take_line_request(line, id).await
    }
}

#[async_trait]
impl Freezes for FlakyStore {
    async fn add_freeze(&self, f: &NewFreeze) -> anyhow::Result<Freeze> {
        self.inner.add_freeze(f).await
    }

    async fn freezes(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Freeze>> {
        self.inner.freezes(now).await
    }

    async fn grant_unfreeze(&self, g: &UnfreezeGrant) -> anyhow::Result<()> {
        self.inner.grant_unfreeze(g).await
    }

    async fn unfreeze_of(
        &self,
        app: &str,
        environment: &str,
        user: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<UnfreezeGrant>> {
        self.inner.unfreeze_of(app, environment, user, now).await
    }

    async fn unfreezes(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<UnfreezeGrant>> {
        self.inner.unfreezes(now).await
    }
}

#[async_trait]
impl Tickets for FlakyStore {
    async fn issue_ticket(&self, t: &DeskTicket) -> anyhow::Result<()> {
        self.inner.issue_ticket(t).await
    }

    async fn redeem_ticket(
        &self,
        id: &str,
        app: &str,
        environment: &str,
        sha: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<DeskTicket>> {
        self.inner
            .redeem_ticket(id, app, environment, sha, now)
            .await
    }
}

#[async_trait]
impl Requests for FlakyStore {
    async fn open_request(&self, r: &NewRequest) -> anyhow::Result<ReleaseRequest> {
        self.inner.open_request(r).await
    }

    async fn request(&self, id: u64) -> anyhow::Result<Option<ReleaseRequest>> {
        self.inner.request(id).await
    }

    async fn open_request_for(
        &self,
        app: &str,
        environment: &str,
        git_ref: &str,
    ) -> anyhow::Result<Option<ReleaseRequest>> {
        self.inner.open_request_for(app, environment, git_ref).await
    }

    async fn requests(
        &self,
        app: Option<&str>,
        open_only: bool,
    ) -> anyhow::Result<Vec<ReleaseRequest>> {
        self.inner.requests(app, open_only).await
    }

    async fn update_request(&self, r: &ReleaseRequest) -> anyhow::Result<Option<ReleaseRequest>> {
        self.inner.update_request(r).await
    }
}

#[async_trait]
impl Stats for FlakyStore {
    async fn env_stats(&self, q: &StatsQuery) -> anyhow::Result<Vec<EnvStats>> {
        self.inner.env_stats(q).await
    }

    async fn daily_stats(&self, q: &StatsQuery) -> anyhow::Result<Vec<(String, Vec<DayPoint>)>> {
        self.inner.daily_stats(q).await
    }
}

#[async_trait]
impl WebActions for FlakyStore {
    async fn submit_web_action(
        &self,
        user_id: &str,
        user_name: &str,
        command: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<u64> {
        self.inner
            .submit_web_action(user_id, user_name, command, at)
            .await
    }

    async fn claim_web_action(
        &self,
        holder: &str,
        at: DateTime<Utc>,
        lease: std::time::Duration,
    ) -> anyhow::Result<Option<WebAction>> {
        self.inner.claim_web_action(holder, at, lease).await
    }

    async fn finish_web_action(
        &self,
        id: u64,
        holder: &str,
        ok: bool,
        reply: &str,
        run_key: Option<&str>,
    ) -> anyhow::Result<bool> {
        self.inner
            .finish_web_action(id, holder, ok, reply, run_key)
            .await
    }

    async fn web_action(&self, id: u64) -> anyhow::Result<Option<WebAction>> {
        self.inner.web_action(id).await
    }
}
