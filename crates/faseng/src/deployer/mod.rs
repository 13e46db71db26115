//! The worker's step: take one job from "accepted" to a final status. Everything a user can
//! cause ends as a status (never a retry): validation, locks, the waiting line, checkout,
//! provider, report. A job that comes back after it started is an orphan and is reported,
//! never re-run.
//!
//! One deploy reads top-down in [`Deployer::process`] here, which calls into: `live` (the
//! runs going on in this process), `resolution` (app, environment, task), `locks`, `line`
//! (the waiting line and ETA), `recovery` (start markers, runs taken over from a worker that
//! stopped answering) and `finish` (the final record, status and chat message).

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use deploy_core::{Apps, Clock, GithubClients, RunKey, Secret, Task};
use tracing::Instrument as _;

use crate::checkout::{Checkouts, CloneSource, GitCredentials, overlay};
use crate::job::DeployJob;
use crate::lease::{LeaseKeeper, LeaseSettings, WorkerIdentity};
use crate::links::LogLinks;
use crate::messages::{self, ChatSubject};
use crate::metrics::Metrics;
use crate::notify::ChatNotifier;
use crate::outcome::{RunError, RunOutcome};
use crate::poster::{Outbox, RetryPolicy};
use crate::providers::{self, RunContext};
use crate::reporter::{Report, Reporter};
use crate::runlog::{Redactor, RunLog};
use crate::sandbox::Isolation;
use crate::status::{DeploymentStatusSink, StatusTarget, StatusUpdate};
use crate::store::{ChatThread, RunRecord, RunState, Store};

mod finish;
mod line;
mod live;
mod locks;
mod recovery;
mod resolution;
mod stages;
#[cfg(test)]
mod tests;

pub use crate::store::eta_secs;
pub use live::LiveRuns;

use line::Turn;
use resolution::Valid;

/// Settings for the deployer.
#[derive(Debug, Clone)]
pub struct DeployerSettings {
    /// Makes the `log_url` of a run (see [`crate::links`]).
    pub log_links: LogLinks,
    /// `deploy-config/` root.
    pub deploy_config_dir: PathBuf,
    /// Default run timeout.
    pub default_timeout: Duration,
    /// This worker's name (for start markers).
    pub worker_name: String,
    /// How status posts are retried.
    pub status_retry: RetryPolicy,
    /// How often a waiting run re-checks the line (other processes may finish).
    pub line_poll: Duration,
    /// How many jobs the worker using this deployer runs at once, waiting ones included.
    pub slots: usize,
    /// How long the end of a run waits for its reports to go out.
    pub report_drain: Duration,
    /// Secrets to redact from logs (tokens of this process).
    pub secrets: Vec<String>,
    /// What providers need from faseng's configuration (SSH key, Heroku API, …).
    pub providers: Arc<providers::ProviderSettings>,
    /// How provider processes are kept from faseng.
    pub isolation: Arc<Isolation>,
    /// GitHub clients: the API base, and tokens for checkouts and tarballs.
    pub github: Arc<GithubClients>,
    /// Where relative `clone_url`s are taken from (faseng's working directory).
    pub base_dir: PathBuf,
    /// Who this process is, as the holder of run leases.
    pub identity: Arc<WorkerIdentity>,
    /// How long run leases run.
    pub leases: LeaseSettings,
    /// Where "now" comes from for leases and deadlines.
    pub clock: Arc<dyn Clock>,
}

/// Runs jobs. Shared by every task of a worker.
pub struct Deployer {
    /// The durable store.
    pub store: Arc<dyn Store>,
    /// Where statuses go.
    pub sink: Arc<dyn DeploymentStatusSink>,
    /// Chat.
    pub notifier: Arc<dyn ChatNotifier>,
    /// Clone cache.
    pub checkouts: Checkouts,
    /// The operator's app.json: the only authority on how an app is deployed.
    pub apps: Arc<Apps>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: DeployerSettings,
    line_changed: tokio::sync::Notify,
    live: Arc<LiveRuns>,
    /// Runs of this deployer waiting for their turn in a line.
    waiting: AtomicUsize,
    /// Where a waiting run hands its job back when every slot waits (see [`Deployer::with_queue`]).
    queue: Option<crate::queue::Queue>,
    /// Where runs write their reports (see [`Deployer::with_outbox`]).
    outbox: Option<Outbox>,
    me: Weak<Deployer>,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer")
            .field("settings", &self.settings.worker_name)
            .finish_non_exhaustive()
    }
}

/// What a run may use of faseng's: the token for its GitHub and its time.
#[derive(Clone, Copy)]
struct RunAccess<'a> {
    token: Option<&'a Secret>,
    /// The app's timeout (else faseng's): it covers checkout, stages and provider.
    timeout: Duration,
    deadline: tokio::time::Instant,
}

/// Per-run reporting context.
struct Run<'a> {
    job: &'a DeployJob,
    key: RunKey,
    record: RunRecord,
    reporter: Reporter,
    /// Who deploys, by stable id (the desk ticket's user, else the deployment's GitHub
    /// creator; see [`crate::desk`]): what locks and records are keyed by.
    user_id: String,
    /// Who deploys, as shown (a display name is never used to decide anything).
    user: String,
    /// The chat thread the payload talks in (an allowed room): where a lock it takes talks.
    thread: Option<ChatThread>,
    environment_url: Option<String>,
    log_url: String,
    /// The run's lease, once this worker holds it (it started the run, or took it over).
    lease: Option<LeaseKeeper>,
}

impl Run<'_> {
    fn subject(&self) -> ChatSubject<'_> {
        ChatSubject {
            app: self.job.app(),
            git_ref: &self.job.git_ref,
            sha: &self.job.sha,
            env: &self.job.environment,
            user: &self.user,
            id: self.job.deployment_id,
            rollback_from: self.record.rollback.as_ref().map(|r| r.from.as_str()),
        }
    }

    fn status(&self, state: RunState, description: String, with_log: bool) -> StatusUpdate {
        let mut s = StatusUpdate::new(state, description);
        if with_log {
            s.log_url = Some(self.log_url.clone());
        }
        s.environment_url = self.environment_url.clone();
        s
    }
}

impl Deployer {
    /// A deployer over the given parts.
    pub fn new(
        store: Arc<dyn Store>,
        sink: Arc<dyn DeploymentStatusSink>,
        notifier: Arc<dyn ChatNotifier>,
        checkouts: Checkouts,
        apps: Arc<Apps>,
        metrics: Arc<Metrics>,
        settings: DeployerSettings,
    ) -> Self {
        Self {
            store,
            sink,
            notifier,
            checkouts,
            apps,
            metrics,
            settings,
            line_changed: tokio::sync::Notify::new(),
            live: Arc::new(LiveRuns::default()),
            waiting: Default::default(),
            queue: None,
            outbox: None,
            me: Weak::new(),
        }
    }

    /// Writes runs' reports to `outbox`, whose poster delivers them (without this, to an
    /// outbox over the deployer's store that only another process's poster reads).
    #[must_use]
    pub fn with_outbox(mut self, outbox: Outbox) -> Self {
        self.outbox = Some(outbox);
        self
    }

    fn outbox(&self) -> Outbox {
        self.outbox.clone().unwrap_or_else(|| {
            Outbox::new(
                self.store.clone(),
                self.notifier.clone(),
                deploy_core::clock::system(),
            )
        })
    }

    /// Lets a waiting run hand its job back to `queue` when every job slot of the worker is
    /// waiting: the runs ahead in those lines may have their jobs behind them in the queue (a
    /// job recovered from a dead worker goes to the end), and with every slot waiting nobody
    /// would ever take them.
    #[must_use]
    pub fn with_queue(mut self, queue: crate::queue::Queue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Shares the registry of live runs with other deployers of this process.
    #[must_use]
    pub fn with_live_runs(mut self, live: Arc<LiveRuns>) -> Self {
        self.live = live;
        self
    }

    /// The deployer behind an `Arc`, able to put each run on its own task (see [`LiveRuns`]).
    /// A deployer used without this runs each job inside the caller's future.
    pub fn into_shared(self) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            ..self
        })
    }

    /// The runs going on in this process.
    pub fn live_runs(&self) -> &Arc<LiveRuns> {
        &self.live
    }

    /// The log page of a job's run, its link secret included.
    pub fn log_url(&self, job: &DeployJob) -> String {
        self.settings
            .log_links
            .page(&job.repo_name(), job.deployment_id)
    }

    /// Takes one job to a final status. `Err` only when nothing was started and the store
    /// could not be reached (the queue may deliver it again; the start marker keeps a run
    /// from ever happening twice).
    ///
    /// `queue_job` is the queue's id for this job: a job that finds its run started under
    /// another id is a duplicate and drops out quietly; one that finds its own id (or none
    /// is known) is an orphan and is reported.
    ///
    /// The run goes on on its own task when the deployer is shared ([`Deployer::into_shared`]):
    /// dropping the returned future does not stop it.
    pub async fn process(&self, job: DeployJob, queue_job: Option<String>) -> anyhow::Result<()> {
        let span = tracing::info_span!("deployment", id = job.deployment_id, repo = %job.repo, env = %job.environment);
        let Some(guard) = self.claim_live(job.key().to_string(), &span).await else {
            return Ok(());
        };
        let Some(me) = self.me.upgrade() else {
            let _guard = guard;
            return self.process_inner(job, queue_job).instrument(span).await;
        };
        let task = tokio::spawn(
            async move {
                let _guard = guard;
                me.process_inner(job, queue_job).await
            }
            .instrument(span),
        );
        match task.await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("the run's task failed: {e}")),
        }
    }

    async fn process_inner(&self, job: DeployJob, queue_job: Option<String>) -> anyhow::Result<()> {
        let key = job.key();
        let record = match self.store.get_run(key.as_str()).await? {
            Some(r) => r,
            None => {
                let r = job.initial_record();
                self.store.create_run(&r).await?;
                r
            }
        };
        if record.state.is_final() {
            tracing::info!("already finished; dropping the repeated job");
            self.metrics.duplicate_job();
            self.leave_line(&job, key.as_str()).await;
            return Ok(());
        }
        let notify = self.chat_target(&job).await;
        let chat_ts = record
            .chat_ts
            .clone()
            .or_else(|| notify.as_ref().and_then(|n| n.message_ts.clone()));
        let who = job.identity();
        let thread = notify.as_ref().map(crate::desk::thread_of);
        let target = StatusTarget {
            repo: job.repo_name(),
            deployment_id: job.deployment_id,
        };
        let reporter = Reporter::start(&self.outbox(), target, notify, chat_ts);
        let mut run = Run {
            job: &job,
            log_url: self.log_url(&job),
            key,
            record,
            reporter,
            user_id: who.user,
            user: who.user_name,
            thread,
            environment_url: None,
            lease: None,
        };

        if run.record.state == RunState::InProgress || run.record.started_at.is_some() {
            return self.resume_started(run, queue_job).await;
        }

        let valid = match self.validate(&job) {
            Ok(v) => v,
            Err(why) => return self.finish(run, RunOutcome::Error(why), None).await,
        };
        run.environment_url = valid.app.environment_url(&valid.env).map(str::to_owned);

        match job.task {
            Task::Lock => return self.lock(run, &valid).await,
            Task::Unlock => return self.unlock(run, &valid).await,
            _ => {}
        }
        if let Some(why) = self.desk_refusal(&run, &valid).await? {
            return self.finish(run, RunOutcome::Error(why), None).await;
        }
        let Some(provider) = providers::for_kind(valid.app.provider, &self.settings.providers)
        else {
            let why = RunError::UnsupportedProvider(valid.app.provider.as_str().to_owned());
            return self.finish(run, RunOutcome::Error(why), None).await;
        };

        if let Turn::HandedBack = self.wait_for_turn(&mut run).await? {
            self.close_run(&mut run, "record the wait").await;
            return Ok(());
        }
        if let Some(why) = self.desk_refusal(&run, &valid).await? {
            return self.finish(run, RunOutcome::Error(why), None).await;
        }
        if let Some(why) = self.take_branch_lock(&run, &valid).await? {
            return self.finish(run, RunOutcome::Error(why), None).await;
        }

        let timeout = self.run_timeout(&valid.app);
        let marker = self.start_marker(queue_job.clone(), timeout);
        if self
            .mark_started(run.key.as_str(), &marker)
            .await?
            .is_some()
        {
            return self.resume_started(run, queue_job).await;
        }
        run.reporter.set_fence(&marker.worker);
        run.lease = Some(LeaseKeeper::start(
            self.store.clone(),
            run.key.as_str(),
            marker,
            self.settings.clock.clone(),
            self.settings.leases,
        ));
        self.live.mark_started(run.key.as_str());
        run.record.state = RunState::InProgress;
        run.record.started_at = Some(Utc::now());
        run.record.description = messages::running(provider.name());
        if let Err(e) = self.store.put_run(&run.record).await {
            tracing::warn!(error = %e, "could not record the start");
        }
        run.reporter.send(Report {
            status: Some(run.status(
                RunState::InProgress,
                messages::running(provider.name()),
                true,
            )),
            chat: Some(messages::chat_running(&run.subject(), &run.log_url)),
            chat_reply: None,
        });

        let deadline = tokio::time::Instant::now() + timeout;
        let token = self.github_token(&valid.app).await;
        let redactor = Redactor::new(
            self.settings
                .secrets
                .iter()
                .cloned()
                .chain(token.iter().map(|t| t.expose().to_owned())),
        )
        .with_config_secrets(&valid.app.raw);
        let (log, writer) = RunLog::start(self.store.clone(), run.key.to_string(), redactor);
        log.header(
            "faseng",
            &format!(
                "deployment #{} of {}@{} to {} by {}",
                job.deployment_id,
                job.git_ref,
                valid.sha.short(),
                valid.env,
                run.user
            ),
        );
        let access = RunAccess {
            token: token.as_ref(),
            timeout,
            deadline,
        };
        let keeper = run.lease.as_ref().expect("held since the start marker");
        let stage_recorder = stages::StageRecorder::new(
            self.store.clone(),
            self.settings.clock.clone(),
            run.record.clone(),
            Some(keeper.watch()),
        );
        let outcome = tokio::select! {
            outcome = self.execute(&job, &valid, provider.as_ref(), &log, &run, access, &stage_recorder) => Some(outcome),
            () = keeper.lost() => None,
        };
        run.record.stages = stage_recorder.close().await;
        // A worker that was stopped past its lease may wake to a provider that ended
        // meanwhile: before it says anything, the store (not this process's last renewal)
        // decides whether the run is still its own.
        let Some(outcome) = outcome else {
            self.abandon(run, log, writer, true).await;
            return Ok(());
        };
        if !keeper.confirm().await {
            self.abandon(run, log, writer, false).await;
            return Ok(());
        }
        if outcome == RunOutcome::Success {
            self.release_branch_lock(&run, &valid).await;
        }
        let tail = log.tail();
        match outcome.description() {
            None => log.header("faseng", "success"),
            Some(d) => log.header("faseng", &d),
        }
        writer.finish(log).await;
        self.finish(run, outcome, Some(tail)).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        job: &DeployJob,
        valid: &Valid,
        provider: &dyn providers::Provider,
        log: &RunLog,
        run: &Run<'_>,
        access: RunAccess<'_>,
        stage_recorder: &stages::StageRecorder,
    ) -> RunOutcome {
        // The operator's clone_url may be relative to faseng's directory; the webhook's is
        // GitHub's (a URL, or a path in tests).
        let parsed = match (&valid.app.clone_url, &job.clone_url) {
            (Some(url), _) => CloneSource::parse(url, Some(&self.settings.base_dir)),
            (None, Some(url)) => CloneSource::parse(url, None),
            (None, None) => {
                return RunOutcome::Error(RunError::CouldNotRun(
                    "the webhook has no clone_url and the app sets none".to_owned(),
                ));
            }
        };
        let source = match parsed {
            Ok(s) => s,
            Err(e) => return RunOutcome::Error(RunError::CouldNotRun(format!("{e:#}"))),
        };
        let api = valid
            .app
            .github_api
            .as_deref()
            .unwrap_or(self.settings.github.api_url());
        let credentials = GitCredentials::new(api, access.token.cloned());
        let dir = match self
            .checkouts
            .prepare(
                &job.repo_name(),
                &source,
                &credentials,
                &valid.sha,
                log,
                access.deadline,
            )
            .await
        {
            Ok(dir) => dir,
            Err(e) => {
                log.header("git", &format!("{e:#}"));
                return RunOutcome::Error(RunError::CheckoutFailed(format!("{e:#}")));
            }
        };
        let overlay_dir = self
            .settings
            .deploy_config_dir
            .join(valid.app.name.as_str());
        if overlay_dir.is_dir() {
            match overlay(&overlay_dir, &dir.checkout) {
                Ok(n) => log.header(
                    "overlay",
                    &format!("{n} file(s) from {}", overlay_dir.display()),
                ),
                Err(e) => {
                    self.checkouts.remove(dir).await;
                    return RunOutcome::Error(RunError::CouldNotRun(format!(
                        "deploy-config overlay failed: {e}"
                    )));
                }
            }
        }
        let isolation = self.settings.isolation.as_ref();
        if let Err(e) = isolation.hand_over(&dir.root) {
            self.checkouts.remove(dir).await;
            return RunOutcome::Error(RunError::CouldNotRun(format!(
                "could not hand the checkout to the provider user: {e}"
            )));
        }
        let ctx = RunContext {
            app: &valid.app,
            env: &valid.env,
            git_ref: &valid.git_ref,
            sha: &valid.sha,
            task: &job.task,
            deployment_id: job.deployment_id,
            user: &run.user,
            checkout: &dir.checkout,
            run: &dir,
            isolation,
            timeout: access.timeout,
            deadline: access.deadline,
            github_token: access.token,
            lease: run.lease.as_ref(),
        };
        let lease = run.lease.as_ref();
        let on_spawn = |pgid: i32| {
            if let Some(lease) = lease {
                let lease = lease.pgid_recorder();
                tokio::spawn(async move { lease.record(pgid).await }.in_current_span());
            }
        };
        // prepare → before → deploy → after, each stage shown in the chat message and
        // recorded in the run record (the dashboard's stage flow).
        let running = messages::chat_running(&run.subject(), &run.log_url);
        let on_progress = |progress: &providers::stages::Progress| {
            drop(stage_recorder.update(progress));
            run.reporter.send(Report {
                status: None,
                chat: Some(providers::stages::chat_running_with_stages(
                    &running, progress,
                )),
                chat_reply: None,
            });
        };
        let outcome = providers::stages::run(provider, &ctx, log, &on_spawn, &on_progress).await;
        self.checkouts.remove(dir).await;
        outcome
    }
}

/// How long the end of a run keeps trying to write its result to a store that fails (a
/// Redis restart): a run whose result is not recorded would hold its environment's line.
pub(crate) const STORE_RETRY_FOR: Duration = Duration::from_secs(300);
