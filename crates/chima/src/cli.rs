//! Command-line interface and start-up: flags (each with an environment fallback), loading
//! app.json, building the bot.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use deploy_core::apps::Secret;
use deploy_core::github::DEFAULT_API_URL;
use deploy_core::{Apps, GithubAuth, GithubClients};

use crate::github::GithubForge;
use crate::handlers::Bot;

/// chima: tell chima to make faseng deploy.
#[derive(Debug, Parser)]
#[command(
    name = "chima",
    version,
    about = "The ChatOps deploy bot: chat commands become GitHub deployments"
)]
pub struct Cli {
    /// The apps chima knows (hubot-deploy apps.json format).
    #[arg(
        long,
        env = "CHIMA_APPS_JSON",
        default_value = "./app.json",
        global = true
    )]
    pub apps_json: PathBuf,
    /// The word that addresses the bot in a channel.
    #[arg(long, env = "CHIMA_NAME", default_value = "chima", global = true)]
    pub name: String,
    /// GitHub API base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, env = "GITHUB_API_URL", default_value = DEFAULT_API_URL, global = true)]
    pub github_api_url: String,
    /// GitHub token (needs `repo_deployment`, and `repo` for private repositories).
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true, global = true)]
    pub github_token: Option<String>,
    /// GitHub App id (instead of a token; with --github-app-private-key).
    #[arg(long, env = "GITHUB_APP_ID", global = true)]
    pub github_app_id: Option<u64>,
    /// GitHub App private key, PEM.
    #[arg(
        long,
        env = "GITHUB_APP_PRIVATE_KEY",
        hide_env_values = true,
        global = true
    )]
    pub github_app_private_key: Option<String>,
    /// Log format: `text`, or `json` for one JSON object per line on stderr (banners and
    /// errors included; `chima shell`'s conversation on stdout stays text).
    #[arg(long, env = deploy_core::logging::ENV, default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
    /// faseng's queue and store (`redis://…` or `sqlite://path`), shared with faseng: chima
    /// reads and writes locks, lines, freezes, desk tickets and the audit there. The default
    /// is the same file faseng uses when both run from one directory.
    #[arg(long, env = "FASENG_QUEUE_URL", global = true)]
    pub queue_url: Option<String>,
    /// Seconds between steps of the release desk's clockwork (locks that ran out,
    /// reminders, the line moving, automatic rollbacks); 0 turns it off (the dashboard's web
    /// actions are still carried out, about once a second).
    #[arg(
        long,
        env = "CHIMA_DESK_TICK_SECS",
        default_value_t = 30,
        global = true
    )]
    pub desk_tick_secs: u64,
    /// Jira base URL, for moving tickets after a release (with JIRA_USER and JIRA_TOKEN).
    #[arg(long, env = "JIRA_URL", global = true)]
    pub jira_url: Option<String>,
    /// Jira user (basic auth).
    #[arg(long, env = "JIRA_USER", global = true)]
    pub jira_user: Option<String>,
    /// Jira API token (basic auth); never logged or shown.
    #[arg(long, env = "JIRA_TOKEN", hide_env_values = true, global = true)]
    pub jira_token: Option<String>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Local mode's store when `FASENG_QUEUE_URL` is not set.
pub const LOCAL_QUEUE_URL: &str = "sqlite://.faseng/faseng.db";

/// chima's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Terminal chat: reads command lines from stdin, prints replies.
    Shell(ShellArgs),
    /// Slack: Events API over HTTP (or Socket Mode when SLACK_APP_TOKEN is set).
    Serve(ServeArgs),
    /// The release desk's audit (locks, the line, freezes, deploys), newest first, from the
    /// store shared with faseng: one line per action, or JSON lines for other tools.
    Audit(AuditArgs),
}

/// Flags of `chima audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only this app's actions.
    #[arg(long)]
    pub app: Option<String>,
    /// Only this environment's actions.
    #[arg(long)]
    pub env: Option<String>,
    /// Only actions this recent (`30m`, `2h`, `7d`).
    #[arg(long)]
    pub since: Option<deploy_core::Span>,
    /// At most this many (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// One JSON object per line (`at`, `actor`, `actor_name`, `action`, `app`,
    /// `environment`, `git_ref`, `sha`, `room`, `adapter`, `detail`).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `chima serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address for the Slack endpoints and /healthz.
    #[arg(long, env = "CHIMA_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Slack bot token (xoxb-…): chat:write, channels:read, groups:read, im:read, users:read,
    /// usergroups:read (for `@group` approvers).
    #[arg(long, env = "SLACK_BOT_TOKEN", hide_env_values = true)]
    pub slack_bot_token: String,
    /// Slack signing secret, to verify inbound requests (Events API mode).
    #[arg(long, env = "SLACK_SIGNING_SECRET", hide_env_values = true)]
    pub slack_signing_secret: Option<String>,
    /// Slack app-level token (xapp-…): use Socket Mode instead of inbound HTTP.
    #[arg(long, env = "SLACK_APP_TOKEN", hide_env_values = true)]
    pub slack_app_token: Option<String>,
    /// Slack Web API base URL.
    #[arg(long, env = "SLACK_API_URL", default_value = "https://slack.com/api")]
    pub slack_api_url: String,
    /// Seconds after which chima warns in the thread that no deployer picked a deployment up.
    #[arg(long, env = "CHIMA_WATCHDOG_SECS", default_value_t = 60)]
    pub watchdog_secs: u64,
    /// HTTP connections open at once; more wait until one closes. Every client also has
    /// 10 s to send a request's headers and 30 s more until its response begins (408).
    #[arg(long, env = "CHIMA_MAX_CONNECTIONS", default_value_t = deploy_core::server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
}

impl ServeArgs {
    /// What one client can hold of the HTTP server.
    pub fn http_limits(&self) -> deploy_core::server::Limits {
        deploy_core::server::Limits {
            max_connections: self.max_connections.max(1),
            ..deploy_core::server::Limits::default()
        }
    }
}

/// Flags of `chima shell`.
#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    /// The room the commands are said in (matched against allowed_rooms).
    #[arg(long, env = "CHIMA_SHELL_ROOM", default_value = "shell")]
    pub room: String,
    /// Who is typing (default: $USER).
    #[arg(long, env = "USER", default_value = "shell-user")]
    pub user: String,
    /// Local mode: where deployments and their statuses are recorded.
    #[arg(long, env = "CHIMA_LOCAL_DB", default_value = ".faseng/local.db")]
    pub local_db: PathBuf,
    /// Local mode: faseng's checkout cache.
    #[arg(long, env = "FASENG_WORKDIR", default_value = ".faseng/work")]
    pub workdir: PathBuf,
    /// Local mode: provider task definitions overlaid onto checkouts.
    #[arg(long, env = "DEPLOY_CONFIG_DIR", default_value = "./deploy-config")]
    pub deploy_config_dir: PathBuf,
    /// Local mode: seconds one run may take (an app's `timeout` overrides).
    #[arg(long, env = "DEPLOYMENT_TIMEOUT", default_value_t = 900)]
    pub deployment_timeout: u64,
}

impl ShellArgs {
    /// Local mode's settings; `queue_url` is `FASENG_QUEUE_URL`, if set.
    pub fn local_settings(&self, queue_url: Option<&str>) -> crate::local::LocalSettings {
        crate::local::LocalSettings {
            queue_url: queue_url.unwrap_or(LOCAL_QUEUE_URL).to_owned(),
            db: self.local_db.clone(),
            workdir: self.workdir.clone(),
            deploy_config_dir: self.deploy_config_dir.clone(),
            deployment_timeout: std::time::Duration::from_secs(self.deployment_timeout),
        }
    }
}

impl Cli {
    /// GitHub mode: the store shared with faseng (`FASENG_QUEUE_URL`, else the default file),
    /// and whether it looks unshared (an SQLite file no faseng had made yet). A store named
    /// in `FASENG_QUEUE_URL` that does not open is an error; the default file that cannot be
    /// made (a read-only directory) leaves chima without the release desk (`Ok(None)`, with
    /// a warning), as before the desk existed.
    pub async fn shared_store(&self) -> anyhow::Result<Option<(crate::store::StoreHandle, bool)>> {
        use anyhow::Context as _;
        let given = self.queue_url.as_deref().filter(|u| !u.trim().is_empty());
        let url = given.unwrap_or(LOCAL_QUEUE_URL);
        let fresh = deploy_store::StoreUrl::parse(url)
            .ok()
            .and_then(|u| match u {
                deploy_store::StoreUrl::Sqlite(path) => Some(!path.exists()),
                _ => None,
            })
            .unwrap_or(false);
        match crate::store::StoreHandle::open(url).await {
            Ok(store) => Ok(Some((store, fresh))),
            Err(e) if given.is_none() => {
                tracing::warn!(
                    error = %format!("{e:#}"),
                    store = url,
                    "no store for the release desk (set FASENG_QUEUE_URL to faseng's): locks, the line, freezes and requests are off"
                );
                Ok(None)
            }
            Err(e) => Err(e).context("opening the store shared with faseng (FASENG_QUEUE_URL)"),
        }
    }

    /// The Jira client from JIRA_URL, JIRA_USER and JIRA_TOKEN (all or none).
    pub fn jira(&self) -> anyhow::Result<Option<crate::tickets::JiraClient>> {
        fn set(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|s| !s.trim().is_empty())
        }
        crate::tickets::JiraClient::configure(
            set(&self.jira_url),
            set(&self.jira_user),
            set(&self.jira_token).map(Secret::new),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// How often the release desk's clockwork steps (zero: never).
    pub fn desk_tick(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.desk_tick_secs)
    }

    /// The GitHub credential from the flags, if any.
    pub fn github_auth(&self) -> anyhow::Result<Option<GithubAuth>> {
        let non_empty = |s: &Option<String>| s.as_ref().filter(|v| !v.trim().is_empty()).cloned();
        if let Some(token) = non_empty(&self.github_token) {
            return Ok(Some(GithubAuth::Token(Secret::new(token.trim()))));
        }
        match (self.github_app_id, non_empty(&self.github_app_private_key)) {
            (Some(app_id), Some(key)) => Ok(Some(GithubAuth::App {
                app_id,
                private_key: Secret::new(key),
            })),
            (Some(_), None) => {
                anyhow::bail!("GITHUB_APP_ID is set but GITHUB_APP_PRIVATE_KEY is not")
            }
            (None, Some(_)) => {
                anyhow::bail!("GITHUB_APP_PRIVATE_KEY is set but GITHUB_APP_ID is not")
            }
            (None, None) => Ok(None),
        }
    }
}

/// Builds a bot that deploys through GitHub.
pub fn github_bot(apps: Apps, api_url: &str, auth: GithubAuth, name: &str) -> Bot {
    let clients = Arc::new(GithubClients::new(api_url, Some(auth)));
    Bot::new(apps, Arc::new(GithubForge::new(clients)), name)
}
