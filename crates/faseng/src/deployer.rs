//! The worker's step: take one job from "accepted" to a final status. Everything a user can
//! cause ends as a status (never a retry): validation, locks, the waiting line, checkout,
//! provider, report. A job that comes back after it started is an orphan and is reported,
//! never re-run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::Utc;
use deploy_core::{
    AppConfig, Apps, Clock, CommitSha, EnvName, GitRef, GithubClients, Notify, Secret,
};
use tracing::Instrument as _;

use crate::checkout::{Checkouts, CloneSource, GitCredentials, overlay};
use crate::job::DeployJob;
use crate::lease::{LeaseKeeper, LeaseSettings, WorkerIdentity};
use crate::links::LogLinks;
use crate::messages::{self, ChatSubject};
use crate::metrics::Metrics;
use crate::notify::ChatNotifier;
use crate::poster::Outbox;
use crate::providers::{self, Outcome, RunContext};
use crate::reporter::{Report, Reporter, RetryPolicy};
use crate::resolve;
use crate::runlog::{Redactor, RunLog, RunLogWriter};
use crate::sandbox::Isolation;
use crate::status::{DeploymentStatusSink, StatusTarget, StatusUpdate};
use crate::store::{EnvLock, RunRecord, RunState, StartMarker, Store, StoredMarker};
use crate::webhook::clean_user_name;

/// The median of the recent durations times the runs ahead; `None` without history.
pub fn eta_secs(recent: &[f64], ahead: usize) -> Option<f64> {
    if recent.is_empty() || ahead == 0 {
        return None;
    }
    let mut v: Vec<f64> = recent
        .iter()
        .copied()
        .filter(|d| d.is_finite() && *d >= 0.0)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    Some(median * ahead as f64)
}

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

/// The runs going on in this process, shared by every deployer the process builds (a worker
/// restarted after a backend error gets a new deployer, but its predecessor's runs go on).
///
/// A run is executed on its own task, so it outlives the queue's handler future: apalis drops
/// the in-flight handler futures when it restarts a worker after a backend error (a Redis
/// restart, a busy SQLite), and a dropped run would be left with no final status. Graceful
/// shutdown waits for the live runs to finish.
///
/// A job for a run that is live here (the queue handing it out again, e.g. recovered from the
/// restarted worker's in-flight list) drops out at once only when that run has started: a
/// started run always ends with a final status. Before its start the live attempt may still
/// fail (the store is down) with no handler left to try again, so the repeated job waits for
/// the attempt to end and then takes over.
#[derive(Debug, Default)]
pub struct LiveRuns {
    runs: Mutex<HashMap<String, LivePhase>>,
    changed: tokio::sync::Notify,
}

/// How far a live run has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LivePhase {
    /// Claimed; its start marker is not written yet (it may still end with an error).
    Starting,
    /// Its start marker is written: it will end with a final status.
    Started,
}

impl LiveRuns {
    /// Marks `key` live; the phase of the run already live under it otherwise.
    fn claim(&self, key: &str) -> Option<LivePhase> {
        let mut runs = self.lock();
        if let Some(phase) = runs.get(key) {
            return Some(*phase);
        }
        runs.insert(key.to_owned(), LivePhase::Starting);
        None
    }

    fn mark_started(&self, key: &str) {
        if let Some(phase) = self.lock().get_mut(key) {
            *phase = LivePhase::Started;
        }
        self.changed.notify_waiters();
    }

    fn release(&self, key: &str) {
        self.lock().remove(key);
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LivePhase>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many runs are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no run is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until no run is live.
    pub async fn wait_idle(&self) {
        loop {
            let changed = self.changed.notified();
            if self.is_empty() {
                return;
            }
            changed.await;
        }
    }
}

/// Releases a live run when its task ends, however it ends.
struct LiveGuard {
    live: Arc<LiveRuns>,
    key: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.release(&self.key);
    }
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

/// Counts a run as waiting for as long as it lives.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl<'a> WaitingGuard<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
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
enum Turn {
    /// The run is at the head of its line.
    Ours,
    /// Every job slot was waiting: this job went back to the end of the queue.
    HandedBack,
}

/// How long a run waits with every job slot of its worker waiting before it hands its job
/// back to the queue, in line polls.
const HAND_BACK_AFTER_POLLS: u32 = 8;

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

/// A run's validated inputs.
struct Valid {
    app: AppConfig,
    env: EnvName,
    git_ref: GitRef,
    sha: CommitSha,
}

/// Per-run reporting context.
struct Run<'a> {
    job: &'a DeployJob,
    key: String,
    record: RunRecord,
    reporter: Reporter,
    /// Who asked, by stable id (`notify.user`, else the deployment's creator): what locks and
    /// records are keyed by.
    user_id: String,
    /// Who asked, as shown (a display name is never used to decide anything).
    user: String,
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
        let key = job.key();
        let mut waited = false;
        loop {
            let changed = self.live.changed.notified();
            match self.live.claim(&key) {
                None => break,
                Some(LivePhase::Started) => {
                    span.in_scope(|| {
                        tracing::info!(
                            "the run is going on in this process; dropping the repeated job"
                        );
                    });
                    self.metrics.duplicate_job();
                    return Ok(());
                }
                Some(LivePhase::Starting) => {
                    if !waited {
                        span.in_scope(|| {
                            tracing::info!("the run is about to start in this process; waiting to see whether it does");
                        });
                        waited = true;
                    }
                    // This slot waits too (on a run that may be waiting for its line).
                    let _waiting = WaitingGuard::new(&self.waiting);
                    changed.await;
                }
            }
        }
        let guard = LiveGuard {
            live: self.live.clone(),
            key,
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
        let record = match self.store.get_run(&key).await? {
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
            self.leave_line(&job, &key).await;
            return Ok(());
        }
        let notify = self.chat_target(&job).await;
        let chat_ts = record
            .chat_ts
            .clone()
            .or_else(|| notify.as_ref().and_then(|n| n.message_ts.clone()));
        let user_id = notify
            .as_ref()
            .map(|n| clean_user_name(&n.user))
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| job.creator.clone());
        let user = notify
            .as_ref()
            .map(|n| n.user_name.clone())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| user_id.clone());
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
            user_id,
            user,
            environment_url: None,
            lease: None,
        };

        if run.record.state == RunState::InProgress || run.record.started_at.is_some() {
            return self.resume_started(run, queue_job).await;
        }

        let valid = match self.validate(&job) {
            Ok(v) => v,
            Err(why) => return self.finish(run, Outcome::Error(why), None).await,
        };
        run.environment_url = valid.app.environment_url(&valid.env).map(str::to_owned);

        match job.task.as_str() {
            "deploy:lock" => return self.lock(run, &valid).await,
            "deploy:unlock" => return self.unlock(run, &valid).await,
            _ => {}
        }
        if let Some(why) = self.locked_by_other(&job, &run.user_id, &valid).await? {
            return self.finish(run, Outcome::Error(why), None).await;
        }
        let Some(provider) = providers::for_kind(valid.app.provider, &self.settings.providers)
        else {
            let why = messages::unsupported_provider(valid.app.provider.as_str());
            return self.finish(run, Outcome::Error(why), None).await;
        };

        if let Turn::HandedBack = self.wait_for_turn(&mut run).await? {
            self.close_run(&mut run, "record the wait").await;
            return Ok(());
        }
        if let Some(why) = self.locked_by_other(&job, &run.user_id, &valid).await? {
            return self.finish(run, Outcome::Error(why), None).await;
        }

        let timeout = self.run_timeout(&valid.app);
        let marker = self.start_marker(queue_job.clone(), timeout);
        if self.mark_started(&run.key, &marker).await?.is_some() {
            return self.resume_started(run, queue_job).await;
        }
        run.reporter.set_fence(&marker.worker);
        run.lease = Some(LeaseKeeper::start(
            self.store.clone(),
            &run.key,
            marker,
            self.settings.clock.clone(),
            self.settings.leases,
        ));
        self.live.mark_started(&run.key);
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
        let (log, writer) = RunLog::start(self.store.clone(), run.key.clone(), redactor);
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
        let outcome = tokio::select! {
            outcome = self.execute(&job, &valid, provider.as_ref(), &log, &run, access) => Some(outcome),
            () = keeper.lost() => None,
        };
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
        let tail = log.tail();
        match &outcome {
            Outcome::Success => log.header("faseng", "success"),
            Outcome::Failure(d) | Outcome::Error(d) => log.header("faseng", d),
        }
        writer.finish(log).await;
        self.finish(run, outcome, Some(tail)).await
    }

    /// The operator's app for a job (see [`resolve::app_for`]).
    fn operator_app(&self, job: &DeployJob) -> Result<&AppConfig, resolve::Refusal> {
        resolve::app_for(&self.apps, &job.repo_name(), job.payload_name())
    }

    /// The chat message to keep up to date: the payload's, when the operator's app for the
    /// deployment allows its room (a deployment that resolves to no app gets no chat).
    async fn chat_target(&self, job: &DeployJob) -> Option<Notify> {
        let notify = job.notify()?;
        let app = self.operator_app(job).ok()?;
        if crate::notify::room_allowed(&*self.notifier, app.allowed_rooms.as_deref(), &notify).await
        {
            Some(notify)
        } else {
            tracing::warn!(room = %notify.room, app = %app.name, "the deployment's chat room is not in the app's allowed_rooms: not posting there");
            None
        }
    }

    /// The app's timeout (else faseng's): it covers checkout, stages and provider.
    fn run_timeout(&self, app: &AppConfig) -> Duration {
        Duration::from_secs(
            app.timeout
                .unwrap_or(self.settings.default_timeout.as_secs())
                .max(1),
        )
    }

    /// The token for the app's GitHub: its own, faseng's, or a GitHub App installation
    /// token for its repository (`None` when there is none, or it could not be minted).
    async fn github_token(&self, app: &AppConfig) -> Option<Secret> {
        if let Some(t) = &app.github_token {
            return Some(t.clone());
        }
        match self
            .settings
            .github
            .access_token(&app.repository, app.github_api.as_deref())
            .await
        {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no GitHub token for the checkout");
                None
            }
        }
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
    ) -> Outcome {
        // The operator's clone_url may be relative to faseng's directory; the webhook's is
        // GitHub's (a URL, or a path in tests).
        let parsed = match (&valid.app.clone_url, &job.clone_url) {
            (Some(url), _) => CloneSource::parse(url, Some(&self.settings.base_dir)),
            (None, Some(url)) => CloneSource::parse(url, None),
            (None, None) => {
                return Outcome::Error(messages::could_not_run(
                    "the webhook has no clone_url and the app sets none",
                ));
            }
        };
        let source = match parsed {
            Ok(s) => s,
            Err(e) => return Outcome::Error(messages::could_not_run(&format!("{e:#}"))),
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
                return Outcome::Error(messages::could_not_run(&format!("checkout failed: {e:#}")));
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
                    return Outcome::Error(messages::could_not_run(&format!(
                        "deploy-config overlay failed: {e}"
                    )));
                }
            }
        }
        let isolation = self.settings.isolation.as_ref();
        if let Err(e) = isolation.hand_over(&dir.root) {
            self.checkouts.remove(dir).await;
            return Outcome::Error(messages::could_not_run(&format!(
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
        // prepare → before → deploy → after, each stage shown in the chat message.
        let running = messages::chat_running(&run.subject(), &run.log_url);
        let on_progress = |progress: &providers::stages::Progress| {
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

    /// Resolves the job against the operator's app.json (the only authority on how it is
    /// deployed; `payload.config` is never read) and validates what reaches processes.
    fn validate(&self, job: &DeployJob) -> Result<Valid, String> {
        let app = self.operator_app(job).map_err(|r| r.description())?;
        let env = resolve::environment_of(app, &job.environment).map_err(|r| r.description())?;
        let git_ref = GitRef::parse(&job.git_ref)
            .map_err(|e| messages::invalid_input("ref", &job.git_ref, &e.to_string()))?;
        let sha = CommitSha::parse(&job.sha)
            .map_err(|_| messages::invalid_input("sha", &job.sha, "not a full commit sha"))?;
        Ok(Valid {
            app: app.clone(),
            env,
            git_ref,
            sha,
        })
    }

    /// The lock text when someone other than `user_id` holds a `deploy:lock` on the line.
    async fn locked_by_other(
        &self,
        job: &DeployJob,
        user_id: &str,
        valid: &Valid,
    ) -> anyhow::Result<Option<String>> {
        Ok(self
            .store
            .env_lock(&job.line)
            .await?
            .filter(|l| l.user != user_id)
            .map(|l| self.locked_text(valid, &l)))
    }

    fn locked_text(&self, valid: &Valid, lock: &EnvLock) -> String {
        messages::locked(
            valid.app.name.as_str(),
            valid.env.as_str(),
            lock.shown_name(),
            &lock.reason,
        )
    }

    async fn lock(&self, run: Run<'_>, valid: &Valid) -> anyhow::Result<()> {
        let job = run.job;
        let wanted = EnvLock {
            user: run.user_id.clone(),
            user_name: run.user.clone(),
            reason: job.description.clone(),
            at: Utc::now(),
            expires_at: None,
        };
        let held = self.store.set_env_lock(&job.line, &wanted).await?;
        let outcome = if held.user == wanted.user {
            Outcome::Success
        } else {
            Outcome::Error(self.locked_text(valid, &held))
        };
        let text = messages::lock_taken(valid.app.name.as_str(), valid.env.as_str(), &run.user);
        self.finish_with_text(run, outcome, None, Some(text)).await
    }

    /// `deploy:unlock`: only the holder (by id) releases the lock.
    async fn unlock(&self, run: Run<'_>, valid: &Valid) -> anyhow::Result<()> {
        let previous = self
            .store
            .clear_env_lock(&run.job.line, &run.user_id)
            .await?;
        let (app, env) = (valid.app.name.as_str(), valid.env.as_str());
        if let Some(lock) = previous.as_ref().filter(|l| l.user != run.user_id) {
            let why = messages::unlock_refused(app, env, lock.shown_name());
            return self.finish(run, Outcome::Error(why), None).await;
        }
        let text = messages::lock_released(app, env, previous.as_ref().map(EnvLock::shown_name));
        self.finish_with_text(run, Outcome::Success, None, Some(text))
            .await
    }

    async fn wait_for_turn(&self, run: &mut Run<'_>) -> anyhow::Result<Turn> {
        let job = run.job;
        let mut announced: Option<Option<u64>> = None;
        let _waiting = WaitingGuard::new(&self.waiting);
        let mut polls_all_waiting = 0u32;
        loop {
            let line = self.store.line(&job.line).await?;
            let Some(pos) = line.iter().position(|k| *k == run.key) else {
                self.store.line_join(&job.line, &run.key).await?;
                continue;
            };
            if pos > 0 && self.drop_stale_head(&job.line, &line[0]).await {
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
                        let recent = self.store.durations(&job.line).await.unwrap_or_default();
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

    /// Writes the start marker; `Some(existing)` when the run was started before.
    ///
    /// A write whose answer was lost (the store failed mid-call, as when Redis is killed)
    /// may have landed: it is tried again in place, and finding exactly this marker then means
    /// the earlier try set it. (Failing here instead would make the next attempt take its
    /// own marker for a dead worker's and report the run as orphaned without running it.)
    async fn mark_started(
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

    /// The start marker of a run this worker is about to start: its lease, and the
    /// deadline after which its provider is stopped for certain, even if this worker is not
    /// there to stop it (the provider's supervisor does).
    fn start_marker(&self, queue_job: Option<String>, timeout: Duration) -> StartMarker {
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
    async fn resume_started(&self, run: Run<'_>, queue_job: Option<String>) -> anyhow::Result<()> {
        let mut said_waiting = false;
        loop {
            if let Some(r) = self.store.get_run(&run.key).await?
                && r.state.is_final()
            {
                tracing::info!("already finished; dropping the repeated job");
                self.metrics.duplicate_job();
                return Ok(());
            }
            let Some(stored) = self.store.started(&run.key).await? else {
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
                .take_over_started(&run.key, &stored, &mine)
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
            &run.key,
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
                    .provider_stopped(&run.key, &old.started_by)
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
        let why = messages::worker_stopped(at);
        let (log, writer) = RunLog::start(self.store.clone(), run.key.clone(), Redactor::default());
        log.header("faseng", &format!("{why}; this deployment was not re-run"));
        writer.finish(log).await;
        self.finish(run, Outcome::Error(why), None).await
    }

    /// This worker lost the run's lease (it was stopped or cut off for longer than the
    /// lease, and another worker took the run over): stops the provider's process group,
    /// says so for the new holder, and reports nothing (the new holder does).
    /// `provider_running` is false when the provider already ended (and was reaped, so its
    /// group id may belong to someone else by now).
    async fn abandon(
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
            store.note_provider_stopped(&run.key, me)
        })
        .await;
        log.header(
            "faseng",
            "this worker lost the run's lease (another worker took it over while this one was stopped or cut off); its provider was stopped here, and the other worker reports the deployment",
        );
        writer.finish(log).await;
        self.metrics.abandoned_run();
    }

    async fn leave_line(&self, job: &DeployJob, key: &str) {
        let store = &self.store;
        let _ = retry_store("leave the waiting line", STORE_RETRY_FOR, || {
            store.line_leave(&job.line, key)
        })
        .await;
        self.line_changed.notify_waiters();
    }

    async fn finish(
        &self,
        run: Run<'_>,
        outcome: Outcome,
        tail: Option<Vec<String>>,
    ) -> anyhow::Result<()> {
        self.finish_with_text(run, outcome, tail, None).await
    }

    async fn finish_with_text(
        &self,
        mut run: Run<'_>,
        outcome: Outcome,
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
            Outcome::Success => (
                RunState::Success,
                lock_text.clone().unwrap_or_else(|| {
                    messages::succeeded(
                        run.record
                            .started_at
                            .map_or(0.0, |s| (now - s).num_milliseconds() as f64 / 1000.0),
                    )
                }),
            ),
            Outcome::Failure(d) => (RunState::Failure, d.clone()),
            Outcome::Error(d) => (RunState::Error, d.clone()),
        };
        run.record.state = state;
        run.record.description = description.clone();
        let secs = run.record.duration_secs();
        if state == RunState::Success
            && lock_text.is_none()
            && let Some(s) = secs
            && let Err(e) = self.store.push_duration(&run.job.line, s).await
        {
            tracing::warn!(error = %e, "could not record the duration");
        }
        self.leave_line(run.job, &run.key).await;
        let chat = match (&outcome, &lock_text) {
            (_, Some(_)) => messages::chat_lock(&description),
            (Outcome::Success, None) => {
                messages::chat_succeeded(&run.subject(), secs.unwrap_or(0.0), &run.log_url)
            }
            (Outcome::Failure(d), None) => messages::chat_failed(&run.subject(), d, &run.log_url),
            (Outcome::Error(d), None) => messages::chat_error(&run.subject(), d),
        };
        let reply = match (&outcome, tail) {
            (Outcome::Failure(_), Some(t)) if !t.is_empty() => Some(messages::chat_log_tail(&t)),
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
    async fn close_run(&self, run: &mut Run<'_>, what: &str) {
        run.record.chat_ts = run
            .reporter_finish(self.settings.report_drain)
            .await
            .or(run.record.chat_ts.clone());
        let store = &self.store;
        let record = &run.record;
        let _ = retry_store(what, STORE_RETRY_FOR, || store.put_run(record)).await;
    }
}

/// How long the end of a run keeps trying to write its result to a store that fails (a
/// Redis restart): a run whose result is not recorded would hold its environment's line.
const STORE_RETRY_FOR: Duration = Duration::from_secs(300);

/// How long writing a start marker is tried in place before the attempt gives up.
const MARK_STARTED_RETRY_FOR: Duration = Duration::from_secs(60);

/// Runs a store call until it succeeds, with backoff, for up to `retry_for`; the last error
/// when it never did (logged, as are the first failure and a recovery).
pub(crate) async fn retry_store<T, F, Fut>(
    what: &str,
    retry_for: Duration,
    mut call: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + retry_for;
    let mut delay = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        match call().await {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(failures, "could {what} after the store came back");
                }
                return Ok(value);
            }
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %format!("{e:#}"), "could not {what}; trying again");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not {what}; giving up after {retry_for:?}");
                return Err(e.context(format!("could not {what}")));
            }
        }
    }
}

impl Run<'_> {
    async fn reporter_finish(&mut self, bound: Duration) -> Option<String> {
        let reporter = std::mem::replace(&mut self.reporter, Reporter::closed());
        reporter.finish(bound).await
    }
}

/// True when a run was started by a different queue job than `mine` (both known).
fn is_duplicate(started: Option<&StartMarker>, mine: Option<&str>) -> bool {
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
    let wanted = format!("DEPLOY_ID={deployment_id}");
    let ours = std::fs::read(format!("/proc/{pgid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes()))
        .unwrap_or(false);
    if ours {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::NoChat;
    use crate::status::NullStatusSink;
    use crate::store::SqliteStore;
    use crate::store::flaky::{FailOnce, FlakyStore};
    use crate::store::prelude::*;

    /// A shared deployer over a [`FlakyStore`], and a shell deployment of `o/r` to edge with
    /// no clone URL (so a run that gets going ends at once with "could not run").
    async fn flaky_world(
        dir: &std::path::Path,
        fail: FailOnce,
    ) -> (Arc<Deployer>, Arc<FlakyStore>, DeployJob) {
        let inner = SqliteStore::open(&dir.join("faseng.db"), "test")
            .await
            .unwrap();
        let store = Arc::new(FlakyStore::new(inner, fail));
        let workdir = dir.join("work");
        let deployer = Deployer::new(
            store.clone(),
            Arc::new(NullStatusSink),
            Arc::new(NoChat),
            Checkouts::new(&workdir),
            Arc::new(
                Apps::from_json(
                    r#"{"r": {"provider": "shell", "repository": "o/r", "environments": ["edge"]}}"#,
                )
                .unwrap(),
            ),
            Arc::new(Metrics::default()),
            DeployerSettings {
                log_links: crate::links::LogLinks::new(
                    "http://faseng.test",
                    crate::links::LinkKey::new(&"k".repeat(32)).unwrap(),
                ),
                deploy_config_dir: dir.join("deploy-config"),
                default_timeout: Duration::from_secs(60),
                worker_name: "test-worker".into(),
                status_retry: RetryPolicy::default(),
                line_poll: Duration::from_millis(50),
                slots: 32,
                report_drain: Duration::from_secs(5),
                secrets: Vec::new(),
                providers: providers::ProviderSettings::new(
                    Default::default(),
                    "http://github.test",
                    workdir.clone(),
                ),
                isolation: Arc::new(Isolation::shared("a unit test")),
                github: Arc::new(GithubClients::new("http://github.test", None)),
                base_dir: dir.to_owned(),
                identity: Arc::new(WorkerIdentity::detect(Some("test-worker"))),
                leases: LeaseSettings::default(),
                clock: deploy_core::clock::system(),
            },
        )
        .into_shared();
        let job = DeployJob::sample("d-1", "o/r", "r/edge");
        (deployer, store, job)
    }

    #[tokio::test]
    async fn a_repeated_job_waits_for_a_live_attempt_that_has_not_started_and_takes_over_when_it_fails()
     {
        let dir = tempfile::tempdir().unwrap();
        let (deployer, store, job) = flaky_world(dir.path(), FailOnce::EnvLockAfterRelease).await;
        let reached = store.reached.notified();
        let first = tokio::spawn({
            let (deployer, job) = (deployer.clone(), job.clone());
            async move { deployer.process(job, Some("q-1".into())).await }
        });
        reached.await;

        // The queue hands the job out again (recovered from a restarted worker) while the
        // first attempt is live and not started: it must not drop out.
        let mut again = Box::pin(deployer.process(job.clone(), Some("q-1".into())));
        assert!(
            futures::poll!(&mut again).is_pending(),
            "the repeated job dropped out while the live attempt could still fail"
        );
        // The first attempt fails (the store went away) and nobody is left to retry it.
        store.release.notify_one();
        assert!(first.await.unwrap().is_err());
        again.await.unwrap();

        let run = store.get_run(&job.key()).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Error, "{run:?}");
        assert!(run.description.contains("clone_url"), "{run:?}");
        assert!(deployer.live_runs().is_empty());
    }

    #[tokio::test]
    async fn a_start_marker_whose_answer_was_lost_is_taken_for_our_own() {
        let dir = tempfile::tempdir().unwrap();
        let (deployer, store, job) = flaky_world(dir.path(), FailOnce::MarkStartedAnswer).await;
        deployer
            .process(job.clone(), Some("q-1".into()))
            .await
            .unwrap();
        let run = store.get_run(&job.key()).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Error, "{run:?}");
        assert!(
            run.description.contains("clone_url"),
            "the run went on as started, not as an orphan: {run:?}"
        );
        assert!(run.started_at.is_some(), "{run:?}");
    }

    #[test]
    fn a_run_started_by_another_job_is_a_duplicate_and_by_the_same_job_an_orphan() {
        let m = |job: Option<&str>| StartMarker {
            job: job.map(str::to_owned),
            ..StartMarker::sample("w", Utc::now())
        };
        assert!(is_duplicate(Some(&m(Some("a"))), Some("b")));
        assert!(!is_duplicate(Some(&m(Some("a"))), Some("a")));
        assert!(!is_duplicate(Some(&m(None)), Some("a")));
        assert!(!is_duplicate(Some(&m(Some("a"))), None));
        assert!(!is_duplicate(None, Some("a")));
    }

    #[test]
    fn eta_is_the_median_of_recent_runs_times_the_runs_ahead() {
        assert_eq!(eta_secs(&[], 2), None);
        assert_eq!(eta_secs(&[10.0], 0), None);
        assert_eq!(eta_secs(&[10.0, 30.0, 20.0], 1), Some(20.0));
        assert_eq!(eta_secs(&[10.0, 20.0, 30.0, 1000.0], 2), Some(50.0));
        assert_eq!(eta_secs(&[f64::NAN, 60.0], 3), Some(180.0));
    }
}
