//! Where deployment statuses go. A trait, because local mode records them in SQLite
//! instead of GitHub; the GitHub implementation posts through octocrab.

use std::sync::Arc;

use async_trait::async_trait;
use deploy_core::{GithubClients, RepoName};
use serde::Serialize;
use thiserror::Error;

use crate::store::RunState;

/// One deployment status, as `POST /repos/{o}/{r}/deployments/{id}/statuses` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusUpdate {
    /// `queued`, `in_progress`, `success`, `failure` or `error`.
    pub state: &'static str,
    /// At most 140 characters (see [`crate::messages::description`]).
    pub description: String,
    /// The log page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    /// The app's `<env>_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_url: Option<String>,
}

impl StatusUpdate {
    /// A status of `state` with a description.
    pub fn new(state: RunState, description: String) -> Self {
        Self {
            state: state.as_str(),
            description,
            log_url: None,
            environment_url: None,
        }
    }
}

/// Which deployment a status is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTarget {
    /// The repository.
    pub repo: RepoName,
    /// The deployment id.
    pub deployment_id: u64,
}

/// Why a status post failed; callers retry [`PostError::Temporary`] only.
#[derive(Debug, Error)]
pub enum PostError {
    /// 4xx: retrying will not help.
    #[error("rejected with HTTP {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Response body (shortened).
        message: String,
    },
    /// 5xx, timeouts, connection errors: worth retrying.
    #[error("temporary failure: {0}")]
    Temporary(String),
}

/// Somewhere deployment statuses are recorded.
#[async_trait]
pub trait DeploymentStatusSink: Send + Sync + 'static {
    /// Posts one status.
    async fn post(&self, target: &StatusTarget, update: &StatusUpdate) -> Result<(), PostError>;
}

/// Posts statuses to GitHub (or GitHub Enterprise, or a fake) through octocrab.
#[derive(Debug, Clone)]
pub struct GithubStatusSink {
    clients: Arc<GithubClients>,
}

impl GithubStatusSink {
    /// A sink using the shared client factory.
    pub fn new(clients: Arc<GithubClients>) -> Self {
        Self { clients }
    }
}

#[async_trait]
impl DeploymentStatusSink for GithubStatusSink {
    async fn post(&self, target: &StatusTarget, update: &StatusUpdate) -> Result<(), PostError> {
        let gh = self
            .clients
            .for_repo(&target.repo, None, None)
            .await
            .map_err(|e| PostError::Temporary(format!("{e:#}")))?;
        let route = format!(
            "/repos/{}/{}/deployments/{}/statuses",
            target.repo.owner(),
            target.repo.name(),
            target.deployment_id
        );
        // The raw call: a typed one would fail on any response shape it does not expect,
        // and a status that was recorded must not be posted again.
        let resp = gh
            ._post(route.as_str(), Some(update))
            .await
            .map_err(|e| PostError::Temporary(e.to_string()))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = gh.body_to_string(resp).await.unwrap_or_default();
        let message: String = body.chars().take(300).collect();
        if (400..500).contains(&status) && status != 408 && status != 429 {
            Err(PostError::Rejected { status, message })
        } else {
            Err(PostError::Temporary(format!("HTTP {status}: {message}")))
        }
    }
}

/// A sink that drops statuses (no GitHub credentials and no local store configured).
#[derive(Debug, Clone, Default)]
pub struct NullStatusSink;

#[async_trait]
impl DeploymentStatusSink for NullStatusSink {
    async fn post(&self, _: &StatusTarget, _: &StatusUpdate) -> Result<(), PostError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_rest_shape() {
        let mut u = StatusUpdate::new(RunState::InProgress, "Deploying".into());
        u.log_url = Some("http://h/l".into());
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"state": "in_progress", "description": "Deploying", "log_url": "http://h/l"})
        );
    }
}
