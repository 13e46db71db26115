//! faseng in process, for chima's local mode (`chima shell` without GitHub): one small type
//! to start it, hand it deployments, follow their logs and stop it. Everything local mode
//! needs from faseng goes through here; statuses come back through the
//! [`DeploymentStatusSink`] given at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deploy_core::{Apps, EnvName, GitRef, RepoName, RunKey, Secret, Task};
use serde_json::Value;

pub use crate::status::{DeploymentStatusSink, PostError, StatusTarget, StatusUpdate};

use crate::intake::{Intake, IntakeOutcome};
use crate::links::LogLinks;
use crate::store::Store;
use crate::web::auth::DashboardAccess;
use deploy_core::event::{DeploymentEvent, WebhookDeployment, WebhookRepository, WebhookUser};

/// Where and how the in-process faseng works.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// Its queue and store (`FASENG_QUEUE_URL`).
    pub queue_url: String,
    /// Its checkout cache (`FASENG_WORKDIR`).
    pub workdir: PathBuf,
    /// `DEPLOY_CONFIG_DIR`.
    pub deploy_config_dir: PathBuf,
    /// `DEPLOYMENT_TIMEOUT`.
    pub deployment_timeout: Duration,
    /// The apps it deploys (the same app.json chima reads).
    pub apps: Apps,
}

/// A deployment recorded locally, handed to faseng as GitHub would hand it a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalDeployment {
    /// The deployment id (local mode numbers its own).
    pub id: u64,
    /// The app's repository.
    pub repo: RepoName,
    /// Where faseng clones it from (a path or URL).
    pub clone_url: String,
    /// The commit.
    pub sha: String,
    /// The ref asked for.
    pub git_ref: GitRef,
    /// `deploy`, `deploy:lock`, …
    pub task: Task,
    /// The environment.
    pub environment: EnvName,
    /// The description (the lock reason for `deploy:lock`).
    pub description: String,
    /// Who asked.
    pub creator: String,
    /// The deployment payload.
    pub payload: Value,
}

/// Why faseng did not take a deployment.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// It can never be run (the reason says why); nothing was queued.
    #[error("{0}")]
    Refused(String),
    /// The queue could not take it now.
    #[error("the local queue is unavailable: {0:#}")]
    Unavailable(anyhow::Error),
}

/// A running in-process faseng: worker plus log pages on a loopback port.
pub struct LocalFaseng {
    intake: Arc<Intake>,
    store: Arc<dyn Store>,
    log_links: LogLinks,
    public_url: String,
    running: std::sync::Mutex<Option<Running>>,
}

/// How to stop the running faseng, until it is stopped.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl std::fmt::Debug for LocalFaseng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFaseng")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl LocalFaseng {
    /// Starts faseng with `settings`, reporting statuses to `sink`.
    pub async fn start(
        settings: LocalSettings,
        sink: Arc<dyn DeploymentStatusSink>,
    ) -> anyhow::Result<Self> {
        let services = Self::connect(settings).await?.with_sink(sink);
        let intake = services.intake();
        let store = services.store.clone();
        let app = crate::Application::build_with(services, true).await?;
        let public_url = app.public_url().to_owned();
        let log_links = app.log_links();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            intake,
            store,
            log_links,
            public_url,
            running: std::sync::Mutex::new(Some(Running { stop, task })),
        })
    }

    /// A faseng that only queues what it is handed (no worker, no pages; links point at
    /// `public_url`): for tests of what local mode records.
    pub async fn queue_only(settings: LocalSettings, public_url: &str) -> anyhow::Result<Self> {
        let services = Self::connect(settings).await?;
        Ok(Self {
            intake: services.intake(),
            store: services.store.clone(),
            log_links: services.log_links(public_url),
            public_url: public_url.to_owned(),
            running: std::sync::Mutex::new(None),
        })
    }

    /// faseng's services for local mode.
    async fn connect(settings: LocalSettings) -> anyhow::Result<crate::Services> {
        let mut config = crate::Config::new(crate::queue::QueueUrl::parse(&settings.queue_url)?);
        config.bind = "127.0.0.1:0".parse().expect("loopback address");
        config.workdir = settings.workdir;
        config.deploy_config_dir = settings.deploy_config_dir;
        config.deployment_timeout = settings.deployment_timeout;
        config.apps = Arc::new(settings.apps);
        // Local mode holds no secrets: providers run as the person at the terminal, who may
        // deploy onto their own machine (the demo app writes under .faseng/sites).
        config.isolation = Some(Arc::new(crate::sandbox::Isolation::shared(
            "local mode holds no secrets",
        )));
        // Webhooks never reach the in-process faseng (deployments are handed over here),
        // but its HTTP side insists on a secret: give it one nobody knows.
        config.webhook_secret = Some(Secret::new(random_hex()?));
        // The dashboard without sign-in, for the person at this machine only.
        config.dashboard = DashboardAccess::Local { user: local_user() };
        crate::Services::connect(config).await
    }

    /// Queues a deployment through the same intake a webhook takes.
    pub async fn submit(&self, deployment: &LocalDeployment) -> Result<(), SubmitError> {
        let event = DeploymentEvent {
            action: Some("created".to_owned()),
            deployment: WebhookDeployment {
                id: deployment.id,
                sha: deployment.sha.clone(),
                git_ref: deployment.git_ref.to_string(),
                task: deployment.task.clone(),
                environment: deployment.environment.to_string(),
                description: Some(deployment.description.clone()),
                creator: Some(WebhookUser {
                    login: deployment.creator.clone(),
                }),
                payload: deployment.payload.clone(),
            },
            repository: WebhookRepository {
                full_name: deployment.repo.to_string(),
                clone_url: Some(deployment.clone_url.clone()),
                // Local mode does not know it: no sticky branch locks there.
                default_branch: None,
            },
            sender: None,
        };
        match self
            .intake
            .accept(&format!("local-{}", deployment.id), &event)
            .await
        {
            Ok(IntakeOutcome::Accepted { .. }) => Ok(()),
            Ok(IntakeOutcome::Refused(why)) => Err(SubmitError::Refused(why)),
            Ok(IntakeOutcome::Duplicate) => Err(SubmitError::Refused(format!(
                "deployment #{} was handed over already",
                deployment.id
            ))),
            Err(e) => Err(SubmitError::Unavailable(e)),
        }
    }

    /// A deployment's log from line `from` (0-based), as far as it is written.
    pub async fn follow(
        &self,
        repo: &RepoName,
        id: u64,
        from: usize,
    ) -> anyhow::Result<Vec<String>> {
        self.store
            .read_log(RunKey::new(repo, id).as_str(), from)
            .await
            .context("reading the local log")
    }

    /// The page showing a deployment's log.
    pub fn log_page(&self, repo: &RepoName, id: u64) -> String {
        self.log_links.page(repo, id)
    }

    /// Where its log pages are served.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The dashboard's address (loopback; no sign-in, for this machine's user only).
    pub fn dashboard_url(&self) -> String {
        format!("{}/", self.public_url.trim_end_matches('/'))
    }

    /// Its store (the one chima reads locks, lines and history from).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Stops it, waiting for running deploys up to its shutdown timeout (once: later calls
    /// do nothing).
    pub async fn stop(&self) -> anyhow::Result<()> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(Running { stop, task }) = running else {
            return Ok(());
        };
        let _ = stop.send(());
        task.await?
    }
}

/// Who the dashboard of local mode shows as the viewer: `$USER`, else the account's name.
fn local_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "local".to_owned())
}

fn random_hex() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
