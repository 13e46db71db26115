//! Start markers and recovery: a run is started once (its marker, with a lease and a
//! deadline); a job that finds its run started drops out while the holder keeps its lease, and
//! takes the run over to report it (never to re-run it) once the lease lapses; a worker that
//! lost its lease stops its provider and says nothing more.

use std::time::Duration;

use crate::lease::LeaseKeeper;
use crate::messages;
use crate::outcome::{RunError, RunOutcome};
use crate::runlog::{Redactor, RunLog, RunLogWriter};
use crate::store::{StartMarker, StoredMarker};

use super::line::WaitingGuard;
use super::{Deployer, Run, STORE_RETRY_FOR};
use crate::store::retry as retry_store;

/// How long writing a start marker is tried in place before the attempt gives up.
const MARK_STARTED_RETRY_FOR: Duration = Duration::from_secs(60);

impl Deployer {
    /// Writes the start marker; `Some(existing)` when the run was started before.
    ///
    /// A write whose answer was lost (the store failed mid-call, as when Redis is killed)
    /// may have landed: it is tried again in place, and finding exactly this marker then means
    /// the earlier try set it. (Failing here instead would make the next attempt take its
    /// own marker for a dead worker's and report the run as orphaned without running it.)
    pub(super) async fn mark_started(
        &self,
        key: &str,
        marker: &StartMarker,
    ) -> anyhow::Result<Option<StartMarker>> {
        let previous = retry_store("record the start", MARK_STARTED_RETRY_FOR, || {
            self.store.mark_started(key, marker)
        })
        .await?;
        Ok(previous.filter(|p| p != marker))
    }

    /// The start marker of a run this worker is about to start: its lease, and the
    /// deadline after which its provider is stopped for certain, even if this worker is not
    /// there to stop it (the provider's supervisor does).
    pub(super) fn start_marker(&self, queue_job: Option<String>, timeout: Duration) -> StartMarker {
        let me = &self.settings.identity;
        let now = self.settings.clock.now();
        let until_stopped = timeout + crate::process::SUPERVISOR_SLACK + crate::process::KILL_GRACE;
        StartMarker {
            worker: me.id.clone(),
            started_by: me.id.clone(),
            host: me.host.clone(),
            boot_id: me.boot_id.clone(),
            pid: Some(me.pid),
            pid_start: me.pid_start,
            pgid: None,
            job: queue_job,
            at: now,
            lease_until: Some(self.settings.leases.until(now)),
            renewed_at: Some(now),
            deadline: Some(now + chrono_span(until_stopped)),
        }
    }

    /// A job whose run has started (here or elsewhere). While the run's holder keeps its
    /// lease the job is a duplicate and drops out (a job the queue handed out again waits
    /// instead: its holder may yet stop answering). Once the lease lapses the job takes the
    /// run over to report it; it never runs it again.
    pub(super) async fn resume_started(
        &self,
        run: Run<'_>,
        queue_job: Option<String>,
    ) -> anyhow::Result<()> {
        let mut said_waiting = false;
        loop {
            if let Some(r) = self.store.get_run(run.key.as_str()).await?
                && r.state.is_final()
            {
                tracing::info!("already finished; dropping the repeated job");
                self.metrics.duplicate_job();
                return Ok(());
            }
            let Some(stored) = self.store.started(run.key.as_str()).await? else {
                // Recorded as started, yet nobody holds it (a marker lost with its store).
                tracing::warn!(
                    "the run is recorded as started but has no start marker; reporting it"
                );
                return self.report_stopped(run, None).await;
            };
            let now = self.settings.clock.now();
            let me = &self.settings.identity;
            let holder_gone = me.starter_is_dead(&stored.marker)
                && stored.marker.worker == stored.marker.started_by;
            if !stored.marker.lease_lapsed(now) && !holder_gone {
                if is_duplicate(Some(&stored.marker), queue_job.as_deref()) {
                    tracing::info!(holder = %stored.marker.worker, "the run is going on under another job; dropping this duplicate");
                    self.metrics.duplicate_job();
                    return Ok(());
                }
                if !said_waiting {
                    tracing::info!(holder = %stored.marker.worker, "the run's worker still holds its lease; waiting to see whether it finishes");
                    said_waiting = true;
                }
                let _waiting = WaitingGuard::new(&self.waiting);
                tokio::time::sleep(self.settings.leases.renew_every()).await;
                continue;
            }
            let mine = StartMarker {
                worker: me.id.clone(),
                lease_until: Some(self.settings.leases.until(now)),
                ..stored.marker.clone()
            };
            if self
                .store
                .take_over_started(run.key.as_str(), &stored, &mine)
                .await?
            {
                return self.recover(run, stored, mine).await;
            }
        }
    }

    /// Reports a run this worker took over from one that stopped answering: first makes
    /// sure its provider is stopped (killed here when it ran on this machine and its
    /// starter is gone, else by waiting out its deadline, unless the starter said it stopped
    /// it), then ends it `error`, releasing the environment. Never re-runs it.
    async fn recover(
        &self,
        mut run: Run<'_>,
        old: StoredMarker,
        mine: StartMarker,
    ) -> anyhow::Result<()> {
        let old = old.marker;
        let stopped_answering = old.renewed_at.unwrap_or(old.at);
        tracing::warn!(
            worker = %old.worker,
            at = %stopped_answering,
            "the worker running this deployment stopped answering; taking it over to report it (it is never re-run)"
        );
        self.metrics.recovered_run();
        run.reporter.set_fence(&mine.worker);
        run.lease = Some(LeaseKeeper::start(
            self.store.clone(),
            run.key.as_str(),
            mine,
            self.settings.clock.clone(),
            self.settings.leases,
        ));
        let keeper = run.lease.as_ref().expect("just set");
        let me = &self.settings.identity;
        let killed_here =
            me.starter_is_dead(&old) && kill_leftover_group(&old, run.job.deployment_id).await;
        if !killed_here {
            let deadline = old.deadline.unwrap_or(old.at);
            loop {
                if self
                    .store
                    .provider_stopped(run.key.as_str(), &old.started_by)
                    .await
                    .unwrap_or(false)
                {
                    tracing::info!("its worker says the provider is stopped");
                    break;
                }
                let now = self.settings.clock.now();
                if now >= deadline {
                    break;
                }
                let left = (deadline - now).to_std().unwrap_or_default();
                tracing::info!(deadline = %deadline, "waiting for the provider's deadline before releasing the environment");
                tokio::select! {
                    () = tokio::time::sleep(left.min(self.settings.leases.renew_every())) => {}
                    () = keeper.lost() => {
                        tracing::warn!("another worker took the run over meanwhile; it will report it");
                        return Ok(());
                    }
                }
            }
        }
        self.report_stopped(run, Some(stopped_answering)).await
    }

    /// Ends a run whose worker stopped answering (at `at`, when known) with `error`.
    async fn report_stopped(
        &self,
        run: Run<'_>,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> anyhow::Result<()> {
        let why = RunError::WorkerStopped { at };
        let (log, writer) =
            RunLog::start(self.store.clone(), run.key.to_string(), Redactor::default());
        log.header(
            "faseng",
            &format!(
                "{}; this deployment was not re-run",
                messages::run_error(&why)
            ),
        );
        writer.finish(log).await;
        self.finish(run, RunOutcome::Error(why), None).await
    }

    /// This worker lost the run's lease (it was stopped or cut off for longer than the
    /// lease, and another worker took the run over): stops the provider's process group,
    /// says so for the new holder, and reports nothing (the new holder does).
    /// `provider_running` is false when the provider already ended (and was reaped, so its
    /// group id may belong to someone else by now).
    pub(super) async fn abandon(
        &self,
        run: Run<'_>,
        log: RunLog,
        writer: RunLogWriter,
        provider_running: bool,
    ) {
        let keeper = run.lease.as_ref().expect("a started run holds a lease");
        if provider_running && let Some(pgid) = keeper.pgid() {
            crate::process::stop_group(pgid).await;
        }
        let store = &self.store;
        let me = &self.settings.identity.id;
        let _ = retry_store("note that the provider stopped", STORE_RETRY_FOR, || {
            store.note_provider_stopped(run.key.as_str(), me)
        })
        .await;
        log.header(
            "faseng",
            "this worker lost the run's lease (another worker took it over while this one was stopped or cut off); its provider was stopped here, and the other worker reports the deployment",
        );
        writer.finish(log).await;
        self.metrics.abandoned_run();
    }
}

/// True when a run was started by a different queue job than `mine` (both known).
pub(super) fn is_duplicate(started: Option<&StartMarker>, mine: Option<&str>) -> bool {
    match (started.and_then(|m| m.job.as_deref()), mine) {
        (Some(theirs), Some(mine)) => theirs != mine,
        _ => false,
    }
}

/// Kills what a dead worker's provider left running on this machine, when its process group
/// still carries this deployment's `DEPLOY_ID` (so a reused pid is never hit); true when the
/// group is gone afterwards (or was never started).
async fn kill_leftover_group(marker: &StartMarker, deployment_id: u64) -> bool {
    let Some(pgid) = marker.pgid.filter(|p| *p > 1) else {
        // The dead worker may have spawned its provider without recording the group.
        return false;
    };
    if crate::process::environ_has(pgid, &format!("DEPLOY_ID={deployment_id}")) {
        tracing::warn!(
            pgid,
            "killing the process group the dead worker left running"
        );
        crate::process::stop_group(pgid).await
    } else {
        !crate::process::group_alive(pgid)
    }
}

/// A std duration as a chrono one (saturating).
fn chrono_span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
