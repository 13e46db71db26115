//! Where deployments live. GitHub mode talks to the GitHub Deployments API; local mode (a
//! later addition) keeps them in SQLite. Handlers only see this trait.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deploy_core::{AppConfig, EnvName, GitRef, NewDeployment};

/// A deployment as the chat shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentInfo {
    /// Deployment id.
    pub id: u64,
    /// The ref asked for.
    pub git_ref: String,
    /// The commit it resolved to.
    pub sha: String,
    /// Target environment.
    pub environment: String,
    /// `deploy`, `deploy:migrate`, …
    pub task: String,
    /// Who asked: the chat user from the payload, else the GitHub creator.
    pub creator: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Latest status state (`queued`, `in_progress`, `success`, …), if any.
    pub state: Option<String>,
    /// A link to it for people.
    pub url: String,
}

impl DeploymentInfo {
    /// The first seven digits of the sha.
    pub fn short_sha(&self) -> &str {
        self.sha.get(..7).unwrap_or(&self.sha)
    }
}

/// What GitHub said to a deployment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// 201: created.
    Created(DeploymentInfo),
    /// 202: GitHub merged the default branch into the ref; nothing deployed yet.
    AutoMerged {
        /// GitHub's message, e.g. "Auto-merged main into topic on deployment."
        message: String,
    },
    /// 409: required status contexts are not green.
    ChecksFailed {
        /// `(context, state)` of each failing or missing context.
        contexts: Vec<(String, String)>,
    },
    /// 409: merging the default branch into the ref conflicted.
    MergeConflict {
        /// GitHub's message.
        message: String,
    },
    /// 422: the ref does not exist (or another validation failure).
    Unprocessable {
        /// GitHub's message, e.g. "No ref found for: nope".
        message: String,
    },
}

/// Filters for listing deployments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentFilter {
    /// Only this ref.
    pub git_ref: Option<GitRef>,
    /// Only this environment.
    pub environment: Option<EnvName>,
    /// At most this many (newest first).
    pub limit: usize,
}

/// One CI check on a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckInfo {
    /// Context or check-run name.
    pub name: String,
    /// `success`, `failure`, `error`, `pending`, `cancelled`, `timed_out`, …
    pub state: String,
    /// Link to details, if any.
    pub url: Option<String>,
}

/// What CI says about a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiReport {
    /// The commit.
    pub sha: String,
    /// Every status context and check run.
    pub checks: Vec<CheckInfo>,
}

/// The one-word answer to "is CI green?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiVerdict {
    /// Everything passed.
    Green,
    /// Something failed.
    Red,
    /// Nothing failed yet, something still runs.
    Pending,
    /// No status and no check run at all.
    NoCi,
}

fn is_failure(state: &str) -> bool {
    matches!(
        state,
        "failure"
            | "error"
            | "cancelled"
            | "timed_out"
            | "action_required"
            | "startup_failure"
            | "stale"
    )
}

fn is_pending(state: &str) -> bool {
    matches!(
        state,
        "pending" | "queued" | "in_progress" | "requested" | "waiting" | "expected"
    )
}

impl CiReport {
    /// Red if anything failed, else pending if anything runs, else green; no checks: no CI.
    pub fn verdict(&self) -> CiVerdict {
        if self.checks.is_empty() {
            CiVerdict::NoCi
        } else if self.failing().next().is_some() {
            CiVerdict::Red
        } else if self.pending().next().is_some() {
            CiVerdict::Pending
        } else {
            CiVerdict::Green
        }
    }
    /// Checks that failed.
    pub fn failing(&self) -> impl Iterator<Item = &CheckInfo> {
        self.checks.iter().filter(|c| is_failure(&c.state))
    }
    /// Checks still running.
    pub fn pending(&self) -> impl Iterator<Item = &CheckInfo> {
        self.checks.iter().filter(|c| is_pending(&c.state))
    }
}

/// A pull request associated with a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullInfo {
    /// Its number (also its issue number).
    pub number: u64,
    /// Title.
    pub title: String,
    /// Description (markdown); empty when it has none.
    pub body: String,
    /// The author's login.
    pub author: String,
    /// `open` or `closed`.
    pub state: String,
    /// True once merged.
    pub merged: bool,
    /// When it was merged.
    pub merged_at: Option<DateTime<Utc>>,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// A link to it for people.
    pub html_url: String,
    /// The branch it was made from.
    pub head_ref: String,
}

/// One review of a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewInfo {
    /// The reviewer's login.
    pub author: String,
    /// `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`, `DISMISSED` or `PENDING`.
    pub state: String,
    /// When it was submitted (`None` while pending).
    pub submitted_at: Option<DateTime<Utc>>,
}

/// Why a forge call failed; each becomes one clear chat reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgeError {
    /// 401: the token is missing, wrong or expired.
    #[error("bad credentials")]
    BadCredentials,
    /// 403: the token may not do this.
    #[error("forbidden: {message}")]
    Forbidden {
        /// GitHub's message.
        message: String,
    },
    /// 404: the repository does not exist or the token cannot see it.
    #[error("repository not found")]
    NotFound,
    /// GitHub could not be reached or answered something unreadable.
    #[error("GitHub is unreachable: {0}")]
    Unreachable(String),
    /// Another status.
    #[error("GitHub answered {status}: {message}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// GitHub's message.
        message: String,
    },
    /// Local mode has no such feature.
    #[error("{0}")]
    Unsupported(String),
}

/// A deployment's latest status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentState {
    /// `queued`, `in_progress`, `success`, `failure`, `error`, …
    pub state: String,
    /// The log page, when the deployer gave one.
    pub log_url: Option<String>,
}

impl DeploymentState {
    /// Whether the deployment has finished (no status follows this one).
    pub fn is_final(&self) -> bool {
        matches!(
            self.state.as_str(),
            "success" | "failure" | "error" | "inactive"
        )
    }
}

/// Where deployments are created and read.
#[async_trait]
pub trait Forge: Send + Sync {
    /// A short name for banners: `GitHub (https://api.github.com)`, `local`.
    fn describe(&self) -> String;
    /// The repository's default branch.
    async fn default_branch(&self, app: &AppConfig) -> Result<GitRef, ForgeError>;
    /// Creates a deployment.
    async fn create_deployment(
        &self,
        app: &AppConfig,
        request: &NewDeployment,
    ) -> Result<CreateOutcome, ForgeError>;
    /// Recent deployments, newest first, each with its latest state.
    async fn deployments(
        &self,
        app: &AppConfig,
        filter: &DeploymentFilter,
    ) -> Result<Vec<DeploymentInfo>, ForgeError>;
    /// The newest deployment to `environment` whose latest state is `success`.
    async fn current_deployment(
        &self,
        app: &AppConfig,
        environment: &EnvName,
    ) -> Result<Option<DeploymentInfo>, ForgeError>;
    /// The deployment's latest status: its state and log link, `None` before the first.
    async fn deployment_state(
        &self,
        app: &AppConfig,
        id: u64,
    ) -> Result<Option<DeploymentState>, ForgeError>;
    /// True when the deployment has at least one status (a deployer picked it up).
    async fn has_statuses(&self, app: &AppConfig, id: u64) -> Result<bool, ForgeError>;
    /// The commit `git_ref` points at now; `None` when there is no such ref (the deployment
    /// request then gets the forge's own answer for it).
    async fn resolve_sha(
        &self,
        app: &AppConfig,
        git_ref: &GitRef,
    ) -> Result<Option<String>, ForgeError>;
    /// CI state of a ref.
    async fn ci_report(&self, app: &AppConfig, git_ref: &GitRef) -> Result<CiReport, ForgeError>;
    /// The pull requests that brought `sha` (GitHub's "list pull requests associated with a
    /// commit").
    async fn pulls_for_commit(
        &self,
        app: &AppConfig,
        sha: &str,
    ) -> Result<Vec<PullInfo>, ForgeError>;
    /// Every review of a pull request, oldest first.
    async fn pull_reviews(
        &self,
        app: &AppConfig,
        number: u64,
    ) -> Result<Vec<ReviewInfo>, ForgeError>;
    /// The messages of a pull request's commits, oldest first.
    async fn pull_commits(&self, app: &AppConfig, number: u64) -> Result<Vec<String>, ForgeError>;
    /// Comments on an issue (or pull request).
    async fn comment_on_issue(
        &self,
        app: &AppConfig,
        number: u64,
        body: &str,
    ) -> Result<(), ForgeError>;
    /// Adds a label to an issue (or pull request); GitHub creates a label it does not know.
    async fn add_label(&self, app: &AppConfig, number: u64, label: &str) -> Result<(), ForgeError>;
    /// The output of a deployment run, line by line.
    async fn log(&self, id: u64) -> Result<Vec<String>, ForgeError>;
    /// Where people can see the repository's webhooks (for "nobody picked it up").
    fn hooks_settings_url(&self, app: &AppConfig) -> String;
}

#[cfg(test)]
pub(crate) mod memory;

#[cfg(test)]
mod tests {
    use super::*;

    fn report(states: &[&str]) -> CiReport {
        CiReport {
            sha: "abc".into(),
            checks: states
                .iter()
                .enumerate()
                .map(|(i, s)| CheckInfo {
                    name: format!("c{i}"),
                    state: (*s).to_owned(),
                    url: None,
                })
                .collect(),
        }
    }

    #[test]
    fn ci_verdicts() {
        for (states, verdict) in [
            (&[][..], CiVerdict::NoCi),
            (&["success", "success"][..], CiVerdict::Green),
            (&["success", "pending"][..], CiVerdict::Pending),
            (&["failure", "pending"][..], CiVerdict::Red),
            (&["success", "timed_out"][..], CiVerdict::Red),
            (&["neutral", "skipped", "success"][..], CiVerdict::Green),
            (&["queued"][..], CiVerdict::Pending),
        ] {
            assert_eq!(report(states).verdict(), verdict, "{states:?}");
        }
    }
}
