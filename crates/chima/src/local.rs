//! Local mode: deployments and their statuses live in a SQLite file on this machine instead of
//! on GitHub, and an in-process faseng worker runs them. Only "where deployments live"
//! differs from GitHub mode: the same handlers, queue, waiting line, locks, providers, log
//! store and status transitions run after a deployment exists.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deploy_core::{AppConfig, EnvName, GitRef, NewDeployment};
use faseng::local::{
    DeploymentStatusSink, LocalDeployment, LocalFaseng, PostError, StatusTarget, StatusUpdate,
    SubmitError,
};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tokio::sync::mpsc;

use crate::forge::{
    CiReport, CreateOutcome, DeploymentFilter, DeploymentInfo, DeploymentState, Forge, ForgeError,
    PullInfo, ReviewInfo,
};
use crate::messages;
use crate::store::StoreHandle;

/// A status change, as local mode reports it to the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEvent {
    /// Deployment id.
    pub deployment_id: u64,
    /// `queued`, `in_progress`, `success`, `failure`, `error`.
    pub state: String,
    /// faseng's description.
    pub description: String,
    /// The log page, when the status has one.
    pub log_url: Option<String>,
}

impl StatusEvent {
    /// True for `success`, `failure` and `error`.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "success" | "failure" | "error")
    }
}

/// Deployments and statuses in a SQLite file.
#[derive(Clone)]
pub struct LocalDeployments {
    pool: SqlitePool,
    events: Option<mpsc::UnboundedSender<StatusEvent>>,
}

fn db_error(e: sqlx::Error) -> ForgeError {
    ForgeError::Unreachable(format!("local deployment store: {e}"))
}

impl LocalDeployments {
    /// Opens (creating) the store at `path`.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS deployments (
                id INTEGER PRIMARY KEY AUTOINCREMENT, repo TEXT NOT NULL, app TEXT NOT NULL,
                git_ref TEXT NOT NULL, sha TEXT NOT NULL, task TEXT NOT NULL,
                environment TEXT NOT NULL, description TEXT NOT NULL, creator TEXT NOT NULL,
                payload TEXT NOT NULL, created_at TEXT NOT NULL)",
        )
        .execute(&pool)
        .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS statuses (
                id INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id INTEGER NOT NULL,
                state TEXT NOT NULL, description TEXT NOT NULL, log_url TEXT,
                environment_url TEXT, created_at TEXT NOT NULL)",
        )
        .execute(&pool)
        .await?;
        Ok(Self { pool, events: None })
    }

    /// Reports every status recorded from now on to `events`.
    pub fn with_events(mut self, events: mpsc::UnboundedSender<StatusEvent>) -> Self {
        self.events = Some(events);
        self
    }

    async fn insert_deployment(
        &self,
        app: &AppConfig,
        request: &NewDeployment,
        sha: &str,
        payload: &Value,
    ) -> Result<(u64, DateTime<Utc>), ForgeError> {
        let now = Utc::now();
        let row = sqlx::query(
            "INSERT INTO deployments (repo, app, git_ref, sha, task, environment, description,
                                      creator, payload, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(app.repository.to_string())
        .bind(app.name.as_str())
        .bind(request.git_ref.as_str())
        .bind(sha)
        .bind(request.task.to_string())
        .bind(request.environment.as_str())
        .bind(&request.description)
        .bind(creator_of(payload))
        .bind(payload.to_string())
        .bind(now.to_rfc3339())
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        let id: i64 = row.get(0);
        Ok((id as u64, now))
    }

    async fn latest_state(&self, id: u64) -> Result<Option<String>, ForgeError> {
        sqlx::query_scalar(
            "SELECT state FROM statuses WHERE deployment_id = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(id as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn list(
        &self,
        app: &AppConfig,
        filter: &DeploymentFilter,
    ) -> Result<Vec<DeploymentInfo>, ForgeError> {
        let rows = sqlx::query(
            "SELECT id, git_ref, sha, environment, task, creator, created_at FROM deployments
             WHERE app = ? AND (? IS NULL OR git_ref = ?) AND (? IS NULL OR environment = ?)
             ORDER BY id DESC LIMIT ?",
        )
        .bind(app.name.as_str())
        .bind(filter.git_ref.as_ref().map(GitRef::as_str))
        .bind(filter.git_ref.as_ref().map(GitRef::as_str))
        .bind(filter.environment.as_ref().map(EnvName::as_str))
        .bind(filter.environment.as_ref().map(EnvName::as_str))
        .bind(filter.limit.max(1) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut list = Vec::with_capacity(rows.len());
        for row in rows {
            let id = row.get::<i64, _>("id") as u64;
            let created: String = row.get("created_at");
            list.push(DeploymentInfo {
                id,
                git_ref: row.get("git_ref"),
                sha: row.get("sha"),
                environment: row.get("environment"),
                task: row.get("task"),
                creator: row.get("creator"),
                created_at: DateTime::parse_from_rfc3339(&created)
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|_| Utc::now()),
                state: self.latest_state(id).await?,
                url: String::new(),
            });
        }
        Ok(list)
    }
}

fn creator_of(payload: &Value) -> String {
    payload
        .pointer("/notify/user_name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("local")
        .to_owned()
}

#[async_trait]
impl DeploymentStatusSink for LocalDeployments {
    async fn post(&self, target: &StatusTarget, update: &StatusUpdate) -> Result<(), PostError> {
        sqlx::query(
            "INSERT INTO statuses (deployment_id, state, description, log_url, environment_url, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(target.deployment_id as i64)
        .bind(update.state)
        .bind(&update.description)
        .bind(&update.log_url)
        .bind(&update.environment_url)
        .bind(Utc::now().to_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(|e| PostError::Temporary(format!("local status store: {e}")))?;
        if let Some(events) = &self.events {
            let _ = events.send(StatusEvent {
                deployment_id: target.deployment_id,
                state: update.state.to_owned(),
                description: update.description.clone(),
                log_url: update.log_url.clone(),
            });
        }
        Ok(())
    }

    async fn list(&self, target: &StatusTarget) -> Result<Vec<String>, PostError> {
        sqlx::query_scalar("SELECT state FROM statuses WHERE deployment_id = ? ORDER BY id")
            .bind(target.deployment_id as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| PostError::Temporary(format!("local status store: {e}")))
    }
}

/// Where a local-mode app's repository is: its `clone_url`, made absolute.
fn local_repository(app: &AppConfig, base: &Path) -> Result<String, ForgeError> {
    let url = app.clone_url.as_deref().ok_or_else(|| {
        ForgeError::Unsupported(format!(
            "{} has no clone_url in app.json. Local mode deploys from a repository on this machine: set `clone_url` to its path (or a file:// URL), or set GITHUB_TOKEN to deploy through GitHub.",
            app.name
        ))
    })?;
    if url.contains("://") {
        return Ok(url.to_owned());
    }
    let path = base.join(url);
    let path = path.canonicalize().map_err(|e| {
        ForgeError::Unsupported(format!(
            "{}'s clone_url {} is not a readable directory: {e}",
            app.name,
            path.display()
        ))
    })?;
    Ok(path.to_string_lossy().into_owned())
}

async fn git(args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("git")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("git could not start: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The commit a ref names in a repository (a path or URL), via `git ls-remote`; a full sha
/// is taken as it is when the repository has it.
async fn resolve(repository: &str, git_ref: &GitRef) -> Result<Option<String>, ForgeError> {
    let r = git_ref.as_str();
    // The repository is an absolute path or a URL and a GitRef never starts with '-', so no
    // argument can be read as an option.
    let listing = git(&[
        "ls-remote",
        repository,
        r,
        &format!("refs/heads/{r}"),
        &format!("refs/tags/{r}^{{}}"),
        &format!("refs/tags/{r}"),
    ])
    .await
    .map_err(ForgeError::Unreachable)?;
    let wanted = [
        format!("refs/heads/{r}"),
        format!("refs/tags/{r}^{{}}"),
        format!("refs/tags/{r}"),
        r.to_owned(),
    ];
    for name in &wanted {
        if let Some(sha) = listing.lines().find_map(|l| {
            let (sha, refname) = l.split_once('\t')?;
            (refname == name).then(|| sha.to_owned())
        }) {
            return Ok(Some(sha));
        }
    }
    if r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()) && !repository.contains("://") {
        let object = format!("{r}^{{commit}}");
        if let Ok(sha) = git(&[
            "-C",
            repository,
            "rev-parse",
            "--verify",
            "--quiet",
            &object,
        ])
        .await
        {
            return Ok(Some(sha));
        }
    }
    Ok(None)
}

/// The local forge: deployments in SQLite, handed to the in-process faseng (through the
/// same intake a webhook takes).
pub struct LocalForge {
    store: LocalDeployments,
    faseng: Arc<LocalFaseng>,
    base: PathBuf,
}

impl LocalForge {
    /// A forge over `store` feeding `faseng`; relative `clone_url`s are taken from `base`.
    pub fn new(store: LocalDeployments, faseng: Arc<LocalFaseng>, base: &Path) -> Self {
        Self {
            store,
            faseng,
            base: base.to_owned(),
        }
    }
}

#[async_trait]
impl Forge for LocalForge {
    fn describe(&self) -> String {
        "local mode (SQLite on this machine)".to_owned()
    }

    async fn default_branch(&self, app: &AppConfig) -> Result<GitRef, ForgeError> {
        let repository = local_repository(app, &self.base)?;
        let head = git(&["ls-remote", "--symref", &repository, "HEAD"])
            .await
            .map_err(ForgeError::Unreachable)?;
        let branch = head.lines().find_map(|l| {
            l.strip_prefix("ref: refs/heads/")?
                .split('\t')
                .next()
                .and_then(|b| GitRef::parse(b).ok())
        });
        match branch {
            Some(b) => Ok(b),
            // A detached HEAD (as some CI checkouts leave it) is still a commit to deploy.
            None if head.lines().any(|l| l.ends_with("\tHEAD")) => {
                Ok(GitRef::parse("HEAD").expect("HEAD is a valid ref"))
            }
            None => Err(ForgeError::Unreachable(format!(
                "{repository} has no commits"
            ))),
        }
    }

    async fn create_deployment(
        &self,
        app: &AppConfig,
        request: &NewDeployment,
    ) -> Result<CreateOutcome, ForgeError> {
        let repository = local_repository(app, &self.base)?;
        let git_ref = &request.git_ref;
        let Some(sha) = resolve(&repository, git_ref).await? else {
            return Ok(CreateOutcome::Unprocessable {
                message: format!("No ref found for: {git_ref}"),
            });
        };
        let payload = serde_json::to_value(&request.payload)
            .map_err(|e| ForgeError::Unreachable(e.to_string()))?;
        let (id, created_at) = self
            .store
            .insert_deployment(app, request, &sha, &payload)
            .await?;
        let creator = creator_of(&payload);
        let deployment = LocalDeployment {
            id,
            repo: app.repository.clone(),
            clone_url: repository,
            sha: sha.clone(),
            git_ref: request.git_ref.clone(),
            task: request.task.clone(),
            environment: request.environment.clone(),
            description: request.description.clone(),
            creator: creator.clone(),
            payload,
        };
        match self.faseng.submit(&deployment).await {
            Ok(()) => {}
            Err(SubmitError::Refused(why)) => {
                return Err(ForgeError::Unreachable(format!(
                    "the local queue did not take it: {why}"
                )));
            }
            Err(e @ SubmitError::Unavailable(_)) => {
                return Err(ForgeError::Unreachable(e.to_string()));
            }
        }
        Ok(CreateOutcome::Created(DeploymentInfo {
            id,
            git_ref: request.git_ref.to_string(),
            sha,
            environment: request.environment.to_string(),
            task: request.task.to_string(),
            creator,
            created_at,
            state: None,
            url: self.faseng.log_page(&app.repository, id),
        }))
    }

    async fn deployments(
        &self,
        app: &AppConfig,
        filter: &DeploymentFilter,
    ) -> Result<Vec<DeploymentInfo>, ForgeError> {
        let mut list = self.store.list(app, filter).await?;
        for d in &mut list {
            d.url = self.faseng.log_page(&app.repository, d.id);
        }
        Ok(list)
    }

    async fn current_deployment(
        &self,
        app: &AppConfig,
        environment: &EnvName,
    ) -> Result<Option<DeploymentInfo>, ForgeError> {
        let filter = DeploymentFilter {
            git_ref: None,
            environment: Some(environment.clone()),
            limit: 50,
        };
        Ok(self
            .store
            .list(app, &filter)
            .await?
            .into_iter()
            .find(|d| d.task == "deploy" && d.state.as_deref() == Some("success")))
    }

    async fn deployment_state(
        &self,
        _app: &AppConfig,
        id: u64,
    ) -> Result<Option<DeploymentState>, ForgeError> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT state, log_url FROM statuses WHERE deployment_id = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(id as i64)
        .fetch_optional(&self.store.pool)
        .await
        .map_err(db_error)?;
        Ok(row.map(|(state, log_url)| DeploymentState { state, log_url }))
    }

    async fn has_statuses(&self, _app: &AppConfig, id: u64) -> Result<bool, ForgeError> {
        Ok(self.store.latest_state(id).await?.is_some())
    }

    async fn resolve_sha(
        &self,
        app: &AppConfig,
        git_ref: &GitRef,
    ) -> Result<Option<String>, ForgeError> {
        let repository = local_repository(app, &self.base)?;
        resolve(&repository, git_ref).await
    }

    async fn ci_report(&self, _app: &AppConfig, _git_ref: &GitRef) -> Result<CiReport, ForgeError> {
        Err(ForgeError::Unsupported(messages::no_ci_in_local_mode()))
    }

    async fn pulls_for_commit(
        &self,
        _app: &AppConfig,
        _sha: &str,
    ) -> Result<Vec<PullInfo>, ForgeError> {
        Err(ForgeError::Unsupported(crate::checks::texts::needs_github()))
    }

    async fn pull_reviews(
        &self,
        _app: &AppConfig,
        _number: u64,
    ) -> Result<Vec<ReviewInfo>, ForgeError> {
        Err(ForgeError::Unsupported(crate::checks::texts::needs_github()))
    }

    async fn pull_commits(
        &self,
        _app: &AppConfig,
        _number: u64,
    ) -> Result<Vec<String>, ForgeError> {
        Err(ForgeError::Unsupported(crate::checks::texts::needs_github()))
    }

    async fn comment_on_issue(
        &self,
        _app: &AppConfig,
        _number: u64,
        _body: &str,
    ) -> Result<(), ForgeError> {
        Err(ForgeError::Unsupported(crate::checks::texts::needs_github()))
    }

    async fn add_label(
        &self,
        _app: &AppConfig,
        _number: u64,
        _label: &str,
    ) -> Result<(), ForgeError> {
        Err(ForgeError::Unsupported(crate::checks::texts::needs_github()))
    }

    async fn log(&self, id: u64) -> Result<Vec<String>, ForgeError> {
        let repo: Option<String> = sqlx::query_scalar("SELECT repo FROM deployments WHERE id = ?")
            .bind(id as i64)
            .fetch_optional(&self.store.pool)
            .await
            .map_err(db_error)?;
        let Some(repo) = repo else {
            return Err(ForgeError::Unsupported(format!(
                "There is no deployment #{id} on this machine."
            )));
        };
        let repo = deploy_core::RepoName::parse(&repo)
            .map_err(|e| ForgeError::Unreachable(format!("local deployment store: {e}")))?;
        self.faseng
            .follow(&repo, id, 0)
            .await
            .map_err(|e| ForgeError::Unreachable(format!("local log store: {e:#}")))
    }

    fn hooks_settings_url(&self, _app: &AppConfig) -> String {
        String::new()
    }
}

/// Where local mode keeps things, from `chima shell`'s flags.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// The faseng queue (`FASENG_QUEUE_URL`), `sqlite://.faseng/faseng.db` by default.
    pub queue_url: String,
    /// The local deployments database.
    pub db: PathBuf,
    /// faseng's checkout cache (`FASENG_WORKDIR`).
    pub workdir: PathBuf,
    /// `DEPLOY_CONFIG_DIR`.
    pub deploy_config_dir: PathBuf,
    /// `DEPLOYMENT_TIMEOUT`.
    pub deployment_timeout: std::time::Duration,
}

/// A running local mode: the bot, the status events, and the in-process faseng.
pub struct LocalMode {
    /// The bot, deploying through [`LocalForge`].
    pub bot: crate::Bot,
    /// Status changes, as they are recorded.
    pub events: mpsc::UnboundedReceiver<StatusEvent>,
    /// Where faseng's log pages are served while the shell runs.
    pub public_url: String,
    faseng: Arc<LocalFaseng>,
}

impl LocalMode {
    /// Starts faseng in-process (worker plus log pages on a free loopback port) and a bot that
    /// records deployments locally.
    pub async fn start(
        apps: deploy_core::Apps,
        settings: &LocalSettings,
        name: &str,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let (tx, events) = mpsc::unbounded_channel();
        let store = LocalDeployments::open(&settings.db)
            .await
            .with_context(|| format!("opening {}", settings.db.display()))?
            .with_events(tx);
        let faseng = Arc::new(
            LocalFaseng::start(
                faseng::local::LocalSettings {
                    queue_url: settings.queue_url.clone(),
                    workdir: settings.workdir.clone(),
                    deploy_config_dir: settings.deploy_config_dir.clone(),
                    deployment_timeout: settings.deployment_timeout,
                    // The same app.json decides how faseng deploys (relative clone URLs are
                    // taken from the current directory, as the forge does).
                    apps: apps.clone(),
                },
                Arc::new(store.clone()),
            )
            .await?,
        );
        let public_url = faseng.public_url().to_owned();
        let shown = deploy_store::StoreUrl::parse(&settings.queue_url)?.describe();
        let shared = StoreHandle::new(faseng.store(), &shown);
        let base = std::env::current_dir()?;
        let forge = LocalForge::new(store, faseng.clone(), &base);
        Ok(Self {
            bot: crate::Bot::new(apps, Arc::new(forge), name).with_store(shared),
            events,
            public_url,
            faseng,
        })
    }

    /// Stops the in-process faseng (waiting for running deploys up to its shutdown timeout).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.faseng.stop().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ChatContext, RecordingOutbox};

    /// chima in local mode reads the in-process faseng's store: a lock faseng holds shows in
    /// `where can I deploy`.
    #[tokio::test]
    async fn local_mode_shows_the_locks_faseng_holds() {
        let dir = tempfile::tempdir().unwrap();
        let apps = deploy_core::Apps::from_json(
            r#"{"demo": {"provider": "shell", "repository": "oursky/demo",
                "environments": ["staging", "production"], "default_environment": "staging",
                "clone_url": "."}}"#,
        )
        .unwrap();
        let settings = LocalSettings {
            queue_url: format!("sqlite://{}", dir.path().join("faseng.db").display()),
            db: dir.path().join("local.db"),
            workdir: dir.path().join("work"),
            deploy_config_dir: dir.path().join("deploy-config"),
            deployment_timeout: std::time::Duration::from_secs(60),
        };
        let local = LocalMode::start(apps, &settings, "chima").await.unwrap();
        let store = local.bot.store().expect("local mode shares faseng's store");
        assert!(
            store.describe().starts_with("sqlite://"),
            "{}",
            store.describe()
        );
        let lock = deploy_store::EnvLock {
            user: "U0ALICE".into(),
            user_name: "alice".into(),
            reason: "testing".into(),
            at: Utc::now(),
            expires_at: None,
            thread: None,
            reminded_at: None,
            branch: None,
        };
        store
            .store()
            .set_env_lock("demo/production", &lock)
            .await
            .unwrap();
        let mut outbox = RecordingOutbox::default();
        local
            .bot
            .handle_line(
                "where can I deploy demo",
                &ChatContext::shell("shell", "bob"),
                &mut outbox,
            )
            .await;
        let text = &outbox.messages[0].text();
        assert!(
            text.contains(
                "• production — nothing deployed yet — locked by alice since just now: `testing`"
            ),
            "{text}"
        );
        assert!(
            text.contains("• staging (default) — nothing deployed yet\n"),
            "{text}"
        );
        local.stop().await.unwrap();
    }
}
