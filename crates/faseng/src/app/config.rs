//! faseng's configuration, as `main` builds it from the command line and environment (or a
//! test builds it directly), with the defaults DESIGN.md lists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deploy_core::{Apps, Clock, GithubAuth, Secret};

use crate::lease::LeaseSettings;
use crate::links::LinkKey;
use crate::poster::RetryPolicy;
use crate::providers::ProviderConfig;
use crate::queue::{QueueTiming, QueueUrl};
use crate::reconcile::ReconcileSettings;
use crate::repair::RepairSettings;
use crate::sandbox::Isolation;
use crate::web::auth::DashboardAccess;

/// GitHub's web address unless `GITHUB_WEB_URL` names another (GitHub Enterprise Server).
pub const DEFAULT_GITHUB_WEB_URL: &str = "https://github.com";

/// Everything faseng needs to run; built from the command line / environment by `main`,
/// or directly by tests.
#[derive(Debug, Clone)]
pub struct Config {
    /// `FASENG_QUEUE_URL`.
    pub queue_url: QueueUrl,
    /// `GITHUB_WEBHOOK_SECRET` (required to serve).
    pub webhook_secret: Option<Secret>,
    /// `FASENG_BIND`.
    pub bind: SocketAddr,
    /// What one client can hold of the HTTP server (`FASENG_MAX_CONNECTIONS` and timeouts).
    pub http_limits: deploy_core::server::Limits,
    /// `FASENG_PUBLIC_URL`; `None` = `http://{bound address}`.
    pub public_url: Option<String>,
    /// `FASENG_LINK_KEY`; `None` = the key kept in the store (made by the first process).
    pub link_key: Option<LinkKey>,
    /// `FASENG_WORKDIR`.
    pub workdir: PathBuf,
    /// `DEPLOY_CONFIG_DIR`.
    pub deploy_config_dir: PathBuf,
    /// `DEPLOYMENT_TIMEOUT`.
    pub deployment_timeout: Duration,
    /// `GITHUB_API_URL`.
    pub github_api_url: String,
    /// `GITHUB_WEB_URL`: GitHub's web address (the dashboard's commit and compare links).
    pub github_web_url: String,
    /// `GITHUB_TOKEN` or a GitHub App.
    pub github_auth: Option<GithubAuth>,
    /// `SLACK_BOT_TOKEN`.
    pub slack_token: Option<Secret>,
    /// `SLACK_API_URL`.
    pub slack_api_url: String,
    /// The operator's app.json (`FASENG_APPS_JSON`): the only authority on how each app is
    /// deployed; a deployment of a repository no app deploys is refused.
    pub apps: Arc<Apps>,
    /// Jobs one worker runs at once (waiting ones included).
    pub concurrency: usize,
    /// Queue timing.
    pub timing: QueueTiming,
    /// How long SIGTERM waits for running jobs.
    pub shutdown_timeout: Duration,
    /// Backoff between attempts to deliver statuses and chat updates
    /// (`FASENG_REPORT_RETRY_MAX` caps it).
    pub status_retry: RetryPolicy,
    /// How long a process's claim on a deployment's reports lasts (`FASENG_REPORT_LEASE`):
    /// a dead process's reports are taken over after this. `None`: the run lease's length.
    pub report_lease: Option<Duration>,
    /// Worker name prefix.
    pub worker_prefix: String,
    /// Provider settings: `DEPLOY_SSH_KEY` / `DEPLOY_SSH_KEY_FILE`, `DEPLOY_SSH_KNOWN_HOSTS`,
    /// `HEROKU_API_KEY`, `HEROKU_API_URL`.
    pub providers: ProviderConfig,
    /// `FASENG_PROVIDER_USER`: who providers run as when faseng runs as root.
    pub provider_user: Option<String>,
    /// How providers are kept from faseng; `None` = the strongest this machine allows
    /// ([`Isolation::detect`]). Local mode, which holds no secrets, shares its user.
    pub isolation: Option<Arc<Isolation>>,
    /// Files of faseng's a provider must never see besides its work directory, store and
    /// deploy-config (app.json, secret files).
    pub private_files: Vec<PathBuf>,
    /// Where "now" comes from for expiry, windows and retention (tests move it by hand).
    pub clock: Arc<dyn Clock>,
    /// `FASENG_RETENTION_DAYS`: how long finished runs, logs and status history are kept.
    pub retention: crate::retention::Retention,
    /// How often the retention sweep runs after the one at start.
    pub sweep_every: Duration,
    /// `FASENG_WORKER_ID`: this process's name as the holder of run leases (default: host
    /// name + boot id + pid).
    pub worker_id: Option<String>,
    /// `FASENG_LEASE_SECS`: how long a running deploy's lease lasts without renewal.
    pub leases: LeaseSettings,
    /// `FASENG_REPAIR_AFTER`: when a line head nobody takes forward is queued again.
    pub repair: RepairSettings,
    /// `FASENG_RECONCILE_SECS` and `FASENG_RECONCILE_WINDOW`: how often and how far back
    /// faseng lists GitHub deployments it was never told about.
    pub reconcile: ReconcileSettings,
    /// Who may see the dashboard: off, GitHub sign-in (`GITHUB_OAUTH_CLIENT_ID`,
    /// `GITHUB_OAUTH_CLIENT_SECRET`, `GITHUB_WEB_URL`, `FASENG_GITHUB_ORG`) or local mode.
    pub dashboard: DashboardAccess,
}

impl Config {
    /// Defaults as DESIGN.md lists them, for a queue URL.
    pub fn new(queue_url: QueueUrl) -> Self {
        Self {
            queue_url,
            webhook_secret: None,
            bind: "127.0.0.1:8081".parse().expect("valid address"),
            http_limits: deploy_core::server::Limits::default(),
            public_url: None,
            link_key: None,
            workdir: PathBuf::from(".faseng/work"),
            deploy_config_dir: PathBuf::from("deploy-config"),
            deployment_timeout: Duration::from_secs(900),
            github_api_url: deploy_core::github::DEFAULT_API_URL.to_owned(),
            github_web_url: DEFAULT_GITHUB_WEB_URL.to_owned(),
            github_auth: None,
            slack_token: None,
            slack_api_url: "https://slack.com/api".to_owned(),
            apps: Arc::new(Apps::default()),
            concurrency: 32,
            timing: QueueTiming::default(),
            shutdown_timeout: Duration::from_secs(60),
            status_retry: RetryPolicy::default(),
            report_lease: None,
            worker_prefix: "faseng".to_owned(),
            providers: ProviderConfig::default(),
            provider_user: None,
            isolation: None,
            private_files: Vec::new(),
            clock: deploy_core::clock::system(),
            retention: crate::retention::Retention::default(),
            sweep_every: crate::retention::SWEEP_EVERY,
            worker_id: None,
            leases: LeaseSettings::default(),
            repair: RepairSettings::default(),
            reconcile: ReconcileSettings::default(),
            dashboard: DashboardAccess::Off,
        }
    }

    /// faseng's own paths a provider must never see.
    pub(super) fn hidden_paths(&self) -> Vec<PathBuf> {
        let absolute =
            |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        let mut hidden = vec![absolute(&self.workdir), absolute(&self.deploy_config_dir)];
        if let QueueUrl::Sqlite(db) = &self.queue_url {
            hidden.extend(crate::store::database_files(&absolute(db)));
        }
        if let Some(crate::providers::SshKeySource::File(key)) = &self.providers.ssh_key {
            hidden.push(absolute(key));
        }
        hidden.extend(self.private_files.iter().map(|p| absolute(p)));
        hidden
    }
}
