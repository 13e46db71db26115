//! `faseng serve [--no-worker]` and `faseng worker`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use deploy_core::logging::{self, LogFormat};
use deploy_core::{Apps, GithubAuth, Secret, Span};
use faseng::links::LinkKey;
use faseng::providers::{ProviderConfig, SshKeySource};
use faseng::queue::{QueueTiming, QueueUrl};
use faseng::web::auth::{AccessSettings, DashboardAccess};
use faseng::{Application, Config, Services};
use tracing::Level;

/// The deployer: GitHub deployment webhooks in, provider runs, statuses and chat updates out.
#[derive(Debug, Parser)]
#[command(name = "faseng", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: `text`, or `json` for one JSON object per line (everything faseng writes
    /// on stdout and stderr, start-up messages and errors included).
    #[arg(long, env = deploy_core::logging::ENV, default_value = "text", value_parser = ["text", "json"], global = true)]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve `POST /webhooks/github`, the log pages, `/healthz` and `/metrics`, and (unless
    /// `--no-worker`) run a worker in the same process.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Do not run a worker in this process (run `faseng worker` processes instead).
        #[arg(long, env = "FASENG_NO_WORKER")]
        no_worker: bool,
        /// Shared secret of the GitHub webhook; requests without a valid X-Hub-Signature-256 get 401.
        #[arg(
            long,
            env = "GITHUB_WEBHOOK_SECRET",
            hide_env_values = true,
            required_unless_present = "webhook_secret_file"
        )]
        webhook_secret: Option<String>,
        /// The webhook secret as a file (read at start; providers never see the file).
        #[arg(
            long,
            env = "GITHUB_WEBHOOK_SECRET_FILE",
            conflicts_with = "webhook_secret"
        )]
        webhook_secret_file: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, env = "FASENG_BIND", default_value = "127.0.0.1:8081")]
        bind: SocketAddr,
        /// HTTP connections open at once; more wait until one closes. Every client also has
        /// 10 s to send a request's headers and 30 s more until its response begins (408).
        #[arg(long, env = "FASENG_MAX_CONNECTIONS", default_value_t = deploy_core::server::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        #[command(flatten)]
        dashboard: DashboardArgs,
    },
    /// Run a worker only (scale out by running several against one Redis).
    Worker {
        #[command(flatten)]
        common: Common,
        /// Address for this worker's `/healthz` (does the store answer?) and `/metrics`;
        /// unset: no port.
        #[arg(long, env = "FASENG_WORKER_BIND")]
        worker_bind: Option<SocketAddr>,
    },
}

/// The dashboard's sign-in (off unless an OAuth app is given).
#[derive(Debug, Args)]
struct DashboardArgs {
    /// Client id of the GitHub OAuth app members sign in to the dashboard with (its callback
    /// URL: FASENG_PUBLIC_URL/auth/callback). Unset: the dashboard is off.
    #[arg(long, env = "GITHUB_OAUTH_CLIENT_ID")]
    github_oauth_client_id: Option<String>,
    /// The OAuth app's client secret (it also keys the dashboard's session cookies, with the
    /// webhook secret).
    #[arg(long, env = "GITHUB_OAUTH_CLIENT_SECRET", hide_env_values = true)]
    github_oauth_client_secret: Option<String>,
    /// The OAuth app's client secret as a file.
    #[arg(
        long,
        env = "GITHUB_OAUTH_CLIENT_SECRET_FILE",
        conflicts_with = "github_oauth_client_secret"
    )]
    github_oauth_client_secret_file: Option<PathBuf>,
    /// GitHub's web address, where members sign in (GitHub Enterprise Server: `https://HOST`);
    /// the API calls of signing in go to GITHUB_API_URL.
    #[arg(long, env = "GITHUB_WEB_URL", default_value = faseng::app::DEFAULT_GITHUB_WEB_URL)]
    github_web_url: String,
    /// Who may sign in to the dashboard: active members of this organization (`my-org`) or
    /// of one of its teams (`my-org/team-slug`). Required with GITHUB_OAUTH_CLIENT_ID.
    #[arg(long, env = "FASENG_GITHUB_ORG")]
    github_org: Option<String>,
}

impl DashboardArgs {
    fn access(self, private_files: &mut Vec<PathBuf>) -> anyhow::Result<DashboardAccess> {
        let client_secret = secret(
            self.github_oauth_client_secret,
            self.github_oauth_client_secret_file,
            private_files,
        )?;
        DashboardAccess::from_settings(AccessSettings {
            client_id: non_empty(self.github_oauth_client_id),
            client_secret: client_secret.map(Secret::new),
            web_url: self.github_web_url,
            org: non_empty(self.github_org),
        })
    }
}

#[derive(Debug, Args)]
struct Common {
    /// Queue: `redis://HOST:PORT` (many workers, many machines) or `sqlite://PATH` (one machine).
    #[arg(
        long,
        env = "FASENG_QUEUE_URL",
        default_value = "sqlite://.faseng/faseng.db"
    )]
    queue_url: String,
    /// Checkout cache and scratch directory.
    #[arg(long, env = "FASENG_WORKDIR", default_value = ".faseng/work")]
    workdir: PathBuf,
    /// Base URL for log links; default `http://FASENG_BIND`.
    #[arg(long, env = "FASENG_PUBLIC_URL")]
    public_url: Option<String>,
    /// Key that signs log links (at least 32 characters, e.g. `openssl rand -hex 32`): each
    /// link carries a secret made from it, without which a log answers 404. Unset: the first
    /// faseng to start makes one and keeps it in the store, where every other process of that
    /// FASENG_QUEUE_URL finds it.
    #[arg(long, env = "FASENG_LINK_KEY", hide_env_values = true)]
    link_key: Option<String>,
    /// Provider task definitions overlaid onto checkouts (`<dir>/<app>/`).
    #[arg(long, env = "DEPLOY_CONFIG_DIR", default_value = "./deploy-config")]
    deploy_config_dir: PathBuf,
    /// Seconds one run may take, unless the app sets `timeout`.
    #[arg(long, env = "DEPLOYMENT_TIMEOUT", default_value_t = 900)]
    deployment_timeout: u64,
    /// GitHub API base (GitHub Enterprise: `https://HOST/api/v3`).
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    github_api_url: String,
    /// Token for the GitHub API and https clones (sent only to the app's GitHub origin).
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    github_token: Option<String>,
    /// The GitHub token as a file.
    #[arg(long, env = "GITHUB_TOKEN_FILE", conflicts_with = "github_token")]
    github_token_file: Option<PathBuf>,
    /// Slack bot token, to edit the chat message of a deployment.
    #[arg(long, env = "SLACK_BOT_TOKEN", hide_env_values = true)]
    slack_bot_token: Option<String>,
    /// The Slack bot token as a file.
    #[arg(long, env = "SLACK_BOT_TOKEN_FILE", conflicts_with = "slack_bot_token")]
    slack_bot_token_file: Option<PathBuf>,
    /// Slack Web API base.
    #[arg(long, env = "SLACK_API_URL", default_value = "https://slack.com/api")]
    slack_api_url: String,
    /// The operator's app.json: the only source of how each app is deployed (provider,
    /// scripts, clone URL, timeout, Heroku names…). A deployment is resolved by its
    /// repository (`payload.name` only chooses between apps of one repository) and may only
    /// target an environment listed here; `payload.config` is never obeyed.
    #[arg(long, env = "FASENG_APPS_JSON", default_value = "./app.json")]
    apps_json: PathBuf,
    /// Jobs one worker holds at once (running or waiting for their turn).
    #[arg(long, env = "FASENG_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Worker heartbeat, seconds; a worker silent for 3 heartbeats is dead and its jobs are recovered.
    #[arg(long, env = "FASENG_HEARTBEAT", default_value_t = 10)]
    heartbeat: u64,
    /// This process's name as the holder of run leases; must differ between processes.
    /// Default: host name + boot id + pid (never the host name alone).
    #[arg(long, env = "FASENG_WORKER_ID")]
    worker_id: Option<String>,
    /// Seconds a running deploy's lease lasts; renewed every third of it. A run whose lease
    /// lapses is taken over by another worker, which reports it once its provider is
    /// certainly stopped (it is never re-run).
    #[arg(long, env = "FASENG_LEASE_SECS", default_value_t = 30)]
    lease_secs: u64,
    /// A run at the head of its line with no job and no live worker for this long is queued
    /// again (its job was lost, e.g. faseng died between accepting and queueing it), e.g.
    /// `2m`, `30s`.
    #[arg(long, env = "FASENG_REPAIR_AFTER", default_value = "2m")]
    repair_after: deploy_core::Span,
    /// Seconds SIGTERM waits for running deployments before exiting.
    #[arg(long, env = "FASENG_SHUTDOWN_TIMEOUT", default_value_t = 600)]
    shutdown_timeout: u64,
    /// The longest wait between attempts to deliver a status or chat update while GitHub or
    /// the chat service fails (a duration: `30s`, `5m`); attempts back off up to it, with
    /// jitter, for up to 24 hours. A longer `Retry-After` is honoured.
    #[arg(long, env = "FASENG_REPORT_RETRY_MAX", default_value = "60s")]
    report_retry_max: deploy_core::Span,
    /// How long a faseng process's claim on a deployment's pending reports lasts (renewed
    /// while it sends them); the reports of a process that died are taken over by another
    /// after this, and a status whose delivery it left unknown is checked on GitHub first
    /// (a duration; default: the run lease, FASENG_LEASE_SECS).
    #[arg(long, env = "FASENG_REPORT_LEASE")]
    report_lease: Option<deploy_core::Span>,
    /// Deploy key (private key text) fabric and capistrano authenticate with; written 0600
    /// into a per-run directory that is removed after the run.
    #[arg(
        long,
        env = "DEPLOY_SSH_KEY",
        hide_env_values = true,
        conflicts_with = "deploy_ssh_key_file"
    )]
    deploy_ssh_key: Option<String>,
    /// Deploy key as a path, used in place.
    #[arg(long, env = "DEPLOY_SSH_KEY_FILE")]
    deploy_ssh_key_file: Option<PathBuf>,
    /// known_hosts lines for the deploy targets; a host whose key does not match is refused.
    /// Absent: accept-new (new hosts are remembered under FASENG_WORKDIR/ssh/known_hosts).
    #[arg(long, env = "DEPLOY_SSH_KNOWN_HOSTS")]
    deploy_ssh_known_hosts: Option<String>,
    /// Heroku Platform API key for the heroku provider.
    #[arg(long, env = "HEROKU_API_KEY", hide_env_values = true)]
    heroku_api_key: Option<String>,
    /// The Heroku API key as a file.
    #[arg(long, env = "HEROKU_API_KEY_FILE", conflicts_with = "heroku_api_key")]
    heroku_api_key_file: Option<PathBuf>,
    /// When faseng runs as root: the unprivileged user providers run as (deploy scripts,
    /// fab, cap, stages). Default `nobody`; a dedicated user is better (the Docker image
    /// has one). As an ordinary user, faseng sandboxes providers with bubblewrap where it
    /// can; where it cannot, it says so at start and on /healthz.
    #[arg(long, env = "FASENG_PROVIDER_USER")]
    provider_user: Option<String>,
    /// Heroku Platform API base.
    #[arg(long, env = "HEROKU_API_URL", default_value = "https://api.heroku.com")]
    heroku_api_url: String,
    /// Whole days finished runs are kept, with their logs and status history (and the queue's
    /// finished jobs); older ones are deleted by a sweep at start and every hour. 0 keeps
    /// everything.
    #[arg(long, env = "FASENG_RETENTION_DAYS", default_value_t = faseng::retention::DEFAULT_DAYS)]
    retention_days: u32,
    /// Seconds between passes that list the newest GitHub deployments of every app's
    /// repository and queue those whose webhook never came (also once at start; 0: never).
    /// One faseng process of a store does it at a time.
    #[arg(long, env = "FASENG_RECONCILE_SECS", default_value_t = 30)]
    reconcile_secs: u64,
    /// How far back reconciling looks (`30m`, `2h`): deployments created earlier are never
    /// picked up, nor any with a status.
    #[arg(long, env = "FASENG_RECONCILE_WINDOW", default_value = "1h")]
    reconcile_window: Span,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A secret given as text or as a file (`*_FILE`); the file's path is remembered so that
/// providers never see it.
fn secret(
    text: Option<String>,
    file: Option<PathBuf>,
    private_files: &mut Vec<PathBuf>,
) -> anyhow::Result<Option<String>> {
    match file.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => {
            let value = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the secret file {}", path.display()))?;
            private_files.push(path);
            Ok(non_empty(Some(value)))
        }
        None => Ok(non_empty(text)),
    }
}

impl Common {
    fn config(self) -> anyhow::Result<Config> {
        let mut c = Config::new(QueueUrl::parse(&self.queue_url)?);
        c.workdir = self.workdir;
        c.public_url = non_empty(self.public_url);
        c.link_key = non_empty(self.link_key)
            .map(|key| LinkKey::new(&key))
            .transpose()
            .context("FASENG_LINK_KEY (--link-key)")?;
        c.deploy_config_dir = self.deploy_config_dir;
        c.deployment_timeout = Duration::from_secs(self.deployment_timeout.max(1));
        c.github_api_url = self.github_api_url;
        let mut private_files = vec![self.apps_json.clone()];
        c.github_auth = match secret(
            self.github_token,
            self.github_token_file,
            &mut private_files,
        )? {
            Some(t) => Some(GithubAuth::Token(Secret::new(t))),
            None => GithubAuth::from_env()?,
        };
        c.slack_token = secret(
            self.slack_bot_token,
            self.slack_bot_token_file,
            &mut private_files,
        )?
        .map(Secret::new);
        c.slack_api_url = self.slack_api_url;
        c.apps = std::sync::Arc::new(load_apps(&self.apps_json));
        c.concurrency = self.concurrency.max(1);
        c.timing = QueueTiming {
            heartbeat: Duration::from_secs(self.heartbeat.max(1)),
            missed_heartbeats: 3,
            ..QueueTiming::default()
        };
        c.shutdown_timeout = Duration::from_secs(self.shutdown_timeout);
        c.status_retry.max_delay = self.report_retry_max.as_duration();
        c.report_lease = self.report_lease.map(deploy_core::Span::as_duration);
        c.providers = ProviderConfig {
            ssh_key: match (
                non_empty(self.deploy_ssh_key),
                self.deploy_ssh_key_file
                    .filter(|p| !p.as_os_str().is_empty()),
            ) {
                (Some(text), _) => Some(SshKeySource::Text(Secret::new(text))),
                (None, Some(path)) => Some(SshKeySource::File(path)),
                (None, None) => None,
            },
            ssh_known_hosts: non_empty(self.deploy_ssh_known_hosts),
            heroku_api_key: secret(
                self.heroku_api_key,
                self.heroku_api_key_file,
                &mut private_files,
            )?
            .map(Secret::new),
            heroku_api_url: self.heroku_api_url,
        };
        c.provider_user = non_empty(self.provider_user);
        c.retention = faseng::retention::Retention::days(self.retention_days);
        c.worker_id = non_empty(self.worker_id);
        c.repair = faseng::repair::RepairSettings {
            after: self.repair_after.as_duration().max(Duration::from_secs(1)),
        };
        c.leases = faseng::lease::LeaseSettings {
            lease: Duration::from_secs(self.lease_secs.max(1)),
        };
        c.private_files = private_files;
        c.reconcile = faseng::reconcile::ReconcileSettings {
            every: Duration::from_secs(self.reconcile_secs),
            window: self.reconcile_window,
        };
        Ok(c)
    }
}

/// The operator's app.json, or exit 2 listing every problem in it.
fn load_apps(path: &std::path::Path) -> Apps {
    match Apps::load(path) {
        Ok(apps) => apps,
        Err(e) => {
            let advice = format!(
                "nothing was started; fix {} (FASENG_APPS_JSON) and try again.",
                path.display()
            );
            if logging::is_json() {
                logging::say(Level::ERROR, "faseng", &format!("{e}{advice}"));
            } else {
                eprint!("faseng: {e}");
                eprintln!("faseng: {advice}");
            }
            std::process::exit(2);
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    logging::init(
        LogFormat::from_process(),
        "info,apalis=warn,sqlx=warn",
        logging::Stream::Stdout,
    );
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !logging::is_json() || !e.use_stderr() => e.exit(),
        Err(e) => {
            logging::say(Level::ERROR, "faseng", &e.render().to_string());
            return std::process::ExitCode::from(2);
        }
    };
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            logging::say(Level::ERROR, "faseng", &format!("faseng: {e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match deploy_core::server::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    match cli.command {
        Command::Serve {
            common,
            no_worker,
            webhook_secret,
            webhook_secret_file,
            bind,
            max_connections,
            dashboard,
        } => {
            let mut config = common.config()?;
            config.github_web_url = dashboard.github_web_url.clone();
            config.dashboard = dashboard.access(&mut config.private_files)?;
            let webhook_secret = secret(
                webhook_secret,
                webhook_secret_file,
                &mut config.private_files,
            )?;
            let Some(webhook_secret) = webhook_secret else {
                anyhow::bail!("GITHUB_WEBHOOK_SECRET must not be empty");
            };
            config.webhook_secret = Some(Secret::new(webhook_secret));
            config.bind = bind;
            config.http_limits.max_connections = max_connections.max(1);
            let app = Application::build(config, !no_worker).await?;
            tracing::info!(addr = %app.local_addr(), worker = !no_worker, "faseng serving");
            app.run(shutdown_signal()).await
        }
        Command::Worker {
            common,
            worker_bind,
        } => {
            let config = common.config()?;
            let public_url = config
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.bind));
            let services = std::sync::Arc::new(
                Services::connect(config)
                    .await
                    .context("starting the worker")?,
            );
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = tx.send(true);
            });
            let reconciler = services.spawn_reconciler(services.intake(), rx.clone());
            let ops = match worker_bind {
                Some(bind) => {
                    let listener = tokio::net::TcpListener::bind(bind)
                        .await
                        .with_context(|| format!("binding {bind} (FASENG_WORKER_BIND)"))?;
                    tracing::info!(addr = %listener.local_addr()?, "worker /healthz and /metrics");
                    let mut stop = rx.clone();
                    Some(tokio::spawn(deploy_core::server::run(
                        listener,
                        faseng::web::ops_router(services.ops_state()),
                        deploy_core::server::Limits::default(),
                        async move {
                            let _ = stop.wait_for(|s| *s).await;
                        },
                    )))
                }
                None => None,
            };
            let stopping = rx.clone();
            let result = services.run_worker(public_url, rx).await;
            if let Some(r) = reconciler {
                if result.is_err() {
                    r.abort();
                }
                let _ = r.await;
            }
            if let Some(ops) = ops {
                if *stopping.borrow() {
                    let _ = ops.await;
                } else {
                    ops.abort();
                }
            }
            result
        }
    }
}
