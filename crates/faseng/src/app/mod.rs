//! Wiring: configuration → store, queue, sinks → the HTTP app and/or a worker.
//! `Application::build` then `run` (or `run_worker` for a worker-only process).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deploy_core::{GithubAuth, GithubClients};
use tokio::net::TcpListener;
use tokio::sync::watch;

mod config;

pub use config::{Config, DEFAULT_GITHUB_WEB_URL};

use crate::checkout::Checkouts;
use crate::deployer::{Deployer, DeployerSettings, LiveRuns};
use crate::intake::Intake;
use crate::lease::WorkerIdentity;
use crate::links::{LinkKey, LogLinks};
use crate::metrics::Metrics;
use crate::notify::{ChatNotifier, Notifiers, SlackNotifier};
use crate::poster::{Outbox, Poster, PosterSettings};
use crate::providers::ProviderSettings;
use crate::queue::{self, Queue};
use crate::reconcile::{OctocrabReader, Reconciler};
use crate::repair::LineRepair;
use crate::sandbox::{Isolation, IsolationSettings};
use crate::status::{DeploymentStatusSink, GithubStatusSink};
use crate::store::Store;
use crate::stream_slots::{self, StreamSlots};
use crate::web::{self, WebState};
use crate::worker::{self, WorkerSettings};

/// Shared parts, built once per process.
pub struct Services {
    /// The config it was built from.
    pub config: Config,
    /// Store.
    pub store: Arc<dyn Store>,
    /// Queue (producer side).
    pub queue: Queue,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Status destination.
    pub sink: Arc<dyn DeploymentStatusSink>,
    /// Chat.
    pub notifier: Arc<dyn ChatNotifier>,
    /// The runs going on in this process (shared by its deployers).
    pub live_runs: Arc<LiveRuns>,
    /// GitHub clients (statuses, checkout and tarball tokens).
    pub github: Arc<GithubClients>,
    /// How provider processes are kept from faseng.
    pub isolation: Arc<Isolation>,
    /// The key log links are signed with, the same in every process of one store.
    pub link_key: LinkKey,
    /// Where runs write their reports; this process's poster delivers them.
    pub outbox: Outbox,
    /// Whether this process's poster runs (one per process).
    poster_running: std::sync::atomic::AtomicBool,
    /// Who this process is, as the holder of run leases.
    pub identity: Arc<WorkerIdentity>,
}

/// This process's running poster (see [`Services::start_poster`]).
#[derive(Debug)]
pub struct PosterTask {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PosterTask {
    /// Stops the poster, letting it finish what it holds (briefly).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the poster task failed");
        }
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Connects to the queue and builds the GitHub and chat clients.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let (queue, store) = queue::open(&config.queue_url, config.timing)
            .await
            .context("opening the queue (FASENG_QUEUE_URL)")?;
        let link_key = match &config.link_key {
            Some(key) => key.clone(),
            None => {
                let stored = store
                    .link_key(&LinkKey::generate()?)
                    .await
                    .context("reading the link key from the store (FASENG_QUEUE_URL)")?;
                LinkKey::new(&stored).context("the link key kept in the store")?
            }
        };
        let clients = Arc::new(GithubClients::new(
            &config.github_api_url,
            config.github_auth.clone(),
        ));
        let sink: Arc<dyn DeploymentStatusSink> = Arc::new(GithubStatusSink::new(clients.clone()));
        let isolation = match &config.isolation {
            Some(i) => i.clone(),
            None => Arc::new(
                Isolation::detect(&IsolationSettings {
                    provider_user: config.provider_user.clone(),
                    hidden: config.hidden_paths(),
                })
                .context("setting up the provider isolation (FASENG_PROVIDER_USER)")?,
            ),
        };
        if isolation.is_shared() && config.isolation.is_none() {
            tracing::warn!(
                "{}: a deploy script can read what faseng can (see README, Security model)",
                isolation.describe()
            );
        } else {
            tracing::info!("{}", isolation.describe());
        }
        let mut notifiers = Notifiers::new();
        if let Some(token) = &config.slack_token {
            let slack = SlackNotifier::new(&config.slack_api_url, token.clone())
                .context("setting up the Slack client (SLACK_API_URL)")?;
            notifiers = notifiers.with("slack", Arc::new(slack));
        }
        let notifier: Arc<dyn ChatNotifier> = Arc::new(notifiers);
        let identity = Arc::new(WorkerIdentity::detect(config.worker_id.as_deref()));
        tracing::info!(worker_id = %identity.id, "worker identity (FASENG_WORKER_ID)");
        let outbox = Outbox::new(store.clone(), notifier.clone(), config.clock.clone());
        Ok(Self {
            config,
            store,
            queue,
            metrics: Arc::new(Metrics::default()),
            sink,
            notifier,
            live_runs: Arc::new(LiveRuns::default()),
            github: clients,
            isolation,
            link_key,
            outbox,
            poster_running: Default::default(),
            identity,
        })
    }

    /// Replaces the status sink (local mode, tests).
    pub fn with_sink(mut self, sink: Arc<dyn DeploymentStatusSink>) -> Self {
        self.sink = sink;
        self
    }

    /// Replaces the chat notifier.
    pub fn with_notifier(mut self, notifier: Arc<dyn ChatNotifier>) -> Self {
        self.outbox = self.outbox.with_notifier(notifier.clone());
        self.notifier = notifier;
        self
    }

    /// Starts this process's poster, which delivers the outbox's statuses and chat updates
    /// (this process's at once, other processes' within a scan); `None` when it runs already.
    pub fn start_poster(&self) -> Option<PosterTask> {
        if self
            .poster_running
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return None;
        }
        let settings = PosterSettings {
            retry: self.config.status_retry,
            ..PosterSettings::default()
        }
        .with_lease(self.config.report_lease.unwrap_or(self.config.leases.lease));
        let poster = Arc::new(Poster::new(
            &self.outbox,
            self.sink.clone(),
            self.metrics.clone(),
            settings,
            &Poster::holder_name(&self.identity.id),
        ));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(poster.run(stopped));
        Some(PosterTask { stop, task })
    }

    /// A new intake into this process's store and queue.
    pub fn intake(&self) -> Arc<Intake> {
        Arc::new(
            Intake::new(
                self.store.clone(),
                self.queue.clone(),
                self.config.apps.clone(),
            )
            .with_clock(self.config.clock.clone()),
        )
    }

    /// Starts reconciling with GitHub (see [`crate::reconcile`]) through `intake` until
    /// `shutdown`: every faseng process runs this, and the one holding the store's
    /// `reconcile` lease does the passes. `None` when it is turned off
    /// (`FASENG_RECONCILE_SECS=0`) or faseng has GitHub credentials for no app's repository.
    pub fn spawn_reconciler(
        &self,
        intake: Arc<Intake>,
        shutdown: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let c = &self.config;
        if !c.reconcile.is_on() {
            tracing::info!("not reconciling with GitHub (FASENG_RECONCILE_SECS=0)");
            return None;
        }
        let (targets, unreadable) =
            crate::reconcile::targets(&c.apps, self.github.has_credentials());
        if targets.is_empty() {
            tracing::debug!("not reconciling with GitHub: no credentials for any app's repository");
            return None;
        }
        for t in &unreadable {
            tracing::info!(repository = %t.repo, "not reconciling {}: no GitHub credentials for it", t.repo);
        }
        let reconciler = Arc::new(Reconciler::new(
            targets,
            Arc::new(OctocrabReader::new(self.github.clone())),
            self.store.clone(),
            intake,
            self.metrics.clone(),
            c.clock.clone(),
            c.reconcile,
        ));
        let holder = self.identity.id.clone();
        Some(tokio::spawn(reconciler.run(holder, shutdown)))
    }

    /// Log links under `public_url`, signed with this process's link key.
    pub fn log_links(&self, public_url: &str) -> LogLinks {
        LogLinks::new(public_url, self.link_key.clone())
    }

    /// A deployer for worker tasks in this process.
    pub fn deployer(&self, public_url: &str, worker_name: &str) -> anyhow::Result<Deployer> {
        let c = &self.config;
        let mut secrets: Vec<String> = Vec::new();
        match &c.github_auth {
            Some(GithubAuth::Token(t)) => secrets.push(t.expose().to_owned()),
            Some(GithubAuth::App { private_key, .. }) => {
                secrets.extend(crate::runlog::pem_secrets(private_key.expose()));
            }
            None => {}
        }
        secrets.extend(c.slack_token.iter().map(|t| t.expose().to_owned()));
        secrets.extend(c.webhook_secret.iter().map(|t| t.expose().to_owned()));
        secrets.extend(c.providers.secrets());
        secrets.push(self.link_key.expose().to_owned());
        let providers =
            ProviderSettings::new(c.providers.clone(), &c.github_api_url, c.workdir.clone());
        Ok(Deployer::new(
            self.store.clone(),
            self.sink.clone(),
            self.notifier.clone(),
            Checkouts::new(&c.workdir),
            c.apps.clone(),
            self.metrics.clone(),
            DeployerSettings {
                log_links: self.log_links(public_url),
                deploy_config_dir: c.deploy_config_dir.clone(),
                default_timeout: c.deployment_timeout,
                worker_name: worker_name.to_owned(),
                status_retry: c.status_retry,
                line_poll: Duration::from_millis(250),
                slots: c.concurrency.max(1),
                report_drain: Duration::from_secs(120),
                secrets,
                providers,
                isolation: self.isolation.clone(),
                github: self.github.clone(),
                base_dir: std::env::current_dir().context("reading the working directory")?,
                identity: self.identity.clone(),
                leases: c.leases,
                clock: c.clock.clone(),
            },
        )
        .with_live_runs(self.live_runs.clone())
        .with_queue(self.queue.clone())
        .with_outbox(self.outbox.clone()))
    }

    /// Makes the work directory ready for provider runs (see [`Isolation::prepare_workdir`])
    /// and removes the run directories dead processes left in it.
    pub fn prepare_for_runs(&self) -> anyhow::Result<()> {
        let workdir = std::path::absolute(&self.config.workdir)?;
        self.isolation
            .prepare_workdir(&workdir)
            .context("preparing the work directory (FASENG_WORKDIR)")?;
        crate::checkout::prune_runs(&workdir);
        Ok(())
    }

    /// One retention sweep now, on the configured clock (see [`crate::retention`]); `None`
    /// when `FASENG_RETENTION_DAYS` is 0.
    pub async fn sweep_now(&self) -> anyhow::Result<Option<crate::store::Swept>> {
        crate::retention::sweep_once(
            self.store.as_ref(),
            self.config.clock.as_ref(),
            self.config.retention,
        )
        .await
    }

    /// Starts the retention sweeper of this process (now, then every `sweep_every`) until
    /// `shutdown` turns true.
    pub fn spawn_sweeper(&self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::retention::run_sweeper(
            self.store.clone(),
            self.config.clock.clone(),
            self.config.retention,
            self.config.sweep_every,
            shutdown,
        ))
    }

    /// What `/healthz` and `/metrics` need (also served by `faseng worker` on
    /// `FASENG_WORKER_BIND`).
    pub fn ops_state(&self) -> web::OpsState {
        web::OpsState {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            isolation: self.isolation.describe(),
        }
    }

    /// Runs a worker until `shutdown`; restarts it (new name, backoff) if it stops on its own.
    /// The process's poster runs with it (unless it runs already), and stops after it.
    pub async fn run_worker(
        self: Arc<Self>,
        public_url: String,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let poster = self.start_poster();
        let result = self.clone().run_worker_only(public_url, shutdown).await;
        if let Some(p) = poster {
            p.stop().await;
        }
        result
    }

    async fn run_worker_only(
        self: Arc<Self>,
        public_url: String,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        self.prepare_for_runs()?;
        let _sweeper = self.spawn_sweeper(shutdown.clone());
        let repair = LineRepair::new(
            self.store.clone(),
            self.queue.clone(),
            self.config.clock.clone(),
            self.metrics.clone(),
            self.config.repair,
        );
        let mut repair_stop = shutdown.clone();
        let holder = self.identity.id.clone();
        tokio::spawn(async move {
            repair
                .run(&holder, async move {
                    let _ = repair_stop.wait_for(|s| *s).await;
                })
                .await;
        });
        let settings = WorkerSettings {
            prefix: self.config.worker_prefix.clone(),
            concurrency: self.config.concurrency,
            timing: self.config.timing,
            shutdown_timeout: self.config.shutdown_timeout,
        };
        worker::run(
            &self.queue,
            &self.live_runs,
            &settings,
            |name| Ok(self.deployer(&public_url, name)?.into_shared()),
            shutdown,
        )
        .await
    }
}

/// The HTTP application, optionally with an in-process worker.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    services: Arc<Services>,
    public_url: String,
    github_web_url: url::Url,
    with_worker: bool,
    gate: Arc<web::auth::Gate>,
}

impl Application {
    /// Binds the listener and connects everything; `with_worker = false` is `--no-worker`.
    pub async fn build(config: Config, with_worker: bool) -> anyhow::Result<Self> {
        let services = Services::connect(config).await?;
        Self::build_with(services, with_worker).await
    }

    /// Same, over already connected services (to swap the sink or notifier).
    pub async fn build_with(services: Services, with_worker: bool) -> anyhow::Result<Self> {
        anyhow::ensure!(
            services
                .config
                .webhook_secret
                .as_ref()
                .is_some_and(|s| !s.expose().is_empty()),
            "GITHUB_WEBHOOK_SECRET is required to serve webhooks"
        );
        if with_worker {
            services.prepare_for_runs()?;
        }
        let listener = TcpListener::bind(services.config.bind)
            .await
            .with_context(|| format!("binding {}", services.config.bind))?;
        let addr = listener.local_addr()?;
        let github_web_url = url::Url::parse(&services.config.github_web_url)
            .context("GITHUB_WEB_URL is not a URL")?;
        let public_url = services
            .config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let c = &services.config;
        let gate = web::auth::Gate::new(
            &c.dashboard,
            &public_url,
            c.webhook_secret.as_ref(),
            &c.github_api_url,
            c.clock.clone(),
        )
        .context("setting up the dashboard's sign-in")?;
        tracing::info!("{}", c.dashboard.describe());
        Ok(Self {
            listener,
            services: Arc::new(services),
            public_url,
            github_web_url,
            with_worker,
            gate: Arc::new(gate),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The base URL for links.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The links to the log pages this application serves.
    pub fn log_links(&self) -> LogLinks {
        self.services.log_links(&self.public_url)
    }

    /// The shared services.
    pub fn services(&self) -> Arc<Services> {
        self.services.clone()
    }

    /// Serves until `shutdown` resolves; then stops the worker (waiting for running jobs
    /// up to the shutdown timeout).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (tx, rx) = watch::channel(false);
        let s = &self.services;
        // Started first and stopped last: runs that finish while the worker drains still
        // have their reports delivered.
        let poster = s.start_poster();
        let intake = s.intake();
        let reconciler = s.spawn_reconciler(intake.clone(), rx.clone());
        let state = WebState {
            secret: s.config.webhook_secret.clone().expect("checked in build"),
            intake,
            store: s.store.clone(),
            metrics: s.metrics.clone(),
            isolation: s.isolation.describe(),
            link_key: s.link_key.clone(),
            streams: StreamSlots::new(
                stream_slots::DEFAULT_PER_CLIENT,
                stream_slots::DEFAULT_TOTAL,
            ),
            apps: s.config.apps.clone(),
            clock: s.config.clock.clone(),
            github_web_url: self.github_web_url.clone(),
            gate: self.gate.clone(),
        };
        // A worker sweeps in `run_worker`; without one, this process does.
        let _sweeper = (!self.with_worker).then(|| s.spawn_sweeper(rx.clone()));
        let worker = self.with_worker.then(|| {
            tokio::spawn(
                self.services
                    .clone()
                    .run_worker(self.public_url.clone(), rx.clone()),
            )
        });
        let mut http_rx = rx.clone();
        let server = tokio::spawn(deploy_core::server::run(
            self.listener,
            web::router(state),
            s.config.http_limits,
            async move {
                let _ = http_rx.wait_for(|s| *s).await;
            },
        ));
        shutdown.await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
        let worker_result = match worker {
            Some(w) => w.await.context("worker task").and_then(|r| r),
            None => Ok(()),
        };
        let reconcile_result = match reconciler {
            Some(r) => r.await.context("reconcile task"),
            None => Ok(()),
        };
        let server_result = server.await.context("http task");
        if let Some(p) = poster {
            p.stop().await;
        }
        worker_result?;
        server_result?;
        reconcile_result?;
        Ok(())
    }
}
