//! Where deployment statuses go. A trait, because local mode records them in SQLite
//! instead of GitHub; the GitHub implementation posts through octocrab.

use std::sync::Arc;
use std::time::Duration;

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

/// Why a status call failed; callers retry [`PostError::Temporary`] and
/// [`PostError::RateLimited`], never [`PostError::Rejected`].
#[derive(Debug, Error)]
pub enum PostError {
    /// 4xx (other than a rate limit, 408 and 429): retrying will not help.
    #[error("rejected with HTTP {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Response body (shortened).
        message: String,
    },
    /// 5xx, timeouts, connection errors: worth retrying; whether a post was recorded is
    /// unknown.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// GitHub's rate limit (403 or 429 with `Retry-After`, or `x-ratelimit-remaining: 0`
    /// and `x-ratelimit-reset`; GitHub's secondary rate limit): nothing was recorded; try
    /// again after `wait`.
    #[error("rate limited for {wait:?}: {message}")]
    RateLimited {
        /// How long GitHub asks to wait.
        wait: Duration,
        /// Response body (shortened).
        message: String,
    },
}

/// How long to wait after a rate limit answer that says nothing of when to come back
/// (GitHub's advice: at least a minute).
pub const RATE_LIMIT_DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// Takes an HTTP answer of GitHub's REST API that is not 2xx for what it means (`now`:
/// seconds since the epoch, for `x-ratelimit-reset`).
pub fn classify(status: u16, headers: &http::HeaderMap, body: &str, now: i64) -> PostError {
    let message: String = body.chars().take(300).collect();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if status == 403 || status == 429 {
        if let Some(secs) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
            return PostError::RateLimited {
                wait: Duration::from_secs(secs),
                message,
            };
        }
        if header("x-ratelimit-remaining") == Some("0")
            && let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok())
        {
            // A second more than the reset, so the retry lands after it.
            let wait = u64::try_from(reset.saturating_sub(now)).unwrap_or(0) + 1;
            return PostError::RateLimited {
                wait: Duration::from_secs(wait),
                message,
            };
        }
        if status == 429 || message.to_ascii_lowercase().contains("rate limit") {
            return PostError::RateLimited {
                wait: RATE_LIMIT_DEFAULT_WAIT,
                message,
            };
        }
    }
    if (400..500).contains(&status) && status != 408 && status != 429 {
        PostError::Rejected { status, message }
    } else {
        PostError::Temporary(format!("HTTP {status}: {message}"))
    }
}

/// Somewhere deployment statuses are recorded.
#[async_trait]
pub trait DeploymentStatusSink: Send + Sync + 'static {
    /// Posts one status.
    async fn post(&self, target: &StatusTarget, update: &StatusUpdate) -> Result<(), PostError>;
    /// The states of the statuses recorded for a deployment (any order).
    async fn list(&self, target: &StatusTarget) -> Result<Vec<String>, PostError>;
    /// True when a status in `state` is recorded for the deployment (checked before a status
    /// whose earlier post has an unknown outcome is posted again).
    async fn has_state(&self, target: &StatusTarget, state: &str) -> Result<bool, PostError> {
        Ok(self.list(target).await?.iter().any(|s| s == state))
    }
}

fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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

    async fn client(&self, target: &StatusTarget) -> Result<octocrab::Octocrab, PostError> {
        self.clients
            .for_repo(&target.repo, None, None)
            .await
            .map_err(|e| PostError::Temporary(format!("{e:#}")))
    }
}

/// The REST route of a deployment's statuses.
fn statuses_route(target: &StatusTarget) -> String {
    format!(
        "/repos/{}/{}/deployments/{}/statuses",
        target.repo.owner(),
        target.repo.name(),
        target.deployment_id
    )
}

#[async_trait]
impl DeploymentStatusSink for GithubStatusSink {
    async fn post(&self, target: &StatusTarget, update: &StatusUpdate) -> Result<(), PostError> {
        let gh = self.client(target).await?;
        let route = statuses_route(target);
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
        let headers = resp.headers().clone();
        let body = gh.body_to_string(resp).await.unwrap_or_default();
        Err(classify(status, &headers, &body, now_epoch()))
    }

    async fn list(&self, target: &StatusTarget) -> Result<Vec<String>, PostError> {
        let gh = self.client(target).await?;
        // GitHub lists newest first; faseng writes a handful per deployment.
        let route = format!("{}?per_page=100", statuses_route(target));
        let resp = gh
            ._get(route.as_str())
            .await
            .map_err(|e| PostError::Temporary(e.to_string()))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = gh
            .body_to_string(resp)
            .await
            .map_err(|e| PostError::Temporary(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(classify(status, &headers, &body, now_epoch()));
        }
        let list: Vec<serde_json::Value> = serde_json::from_str(&body)
            .map_err(|e| PostError::Temporary(format!("reading the statuses: {e}")))?;
        Ok(list
            .iter()
            .filter_map(|s| s["state"].as_str().map(str::to_owned))
            .collect())
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

    async fn list(&self, _: &StatusTarget) -> Result<Vec<String>, PostError> {
        Ok(Vec::new())
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

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn wait(e: PostError) -> Option<Duration> {
        match e {
            PostError::RateLimited { wait, .. } => Some(wait),
            _ => None,
        }
    }

    #[test]
    fn a_secondary_rate_limit_is_temporary_with_its_wait() {
        let now = 1_800_000_000;
        // 403 or 429 with Retry-After.
        for code in [403, 429] {
            let e = classify(code, &headers(&[("retry-after", "7")]), "", now);
            assert_eq!(wait(e), Some(Duration::from_secs(7)), "{code}");
        }
        // x-ratelimit-remaining: 0 with the reset time: until a second after it.
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1800000030"),
        ]);
        assert_eq!(
            wait(classify(403, &h, "", now)),
            Some(Duration::from_secs(31))
        );
        let past = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1799999990"),
        ]);
        assert_eq!(
            wait(classify(429, &past, "", now)),
            Some(Duration::from_secs(1))
        );
        // A 429, or a 403 that says so, without headers: GitHub's minute.
        assert_eq!(
            wait(classify(429, &headers(&[]), "", now)),
            Some(RATE_LIMIT_DEFAULT_WAIT)
        );
        let body = r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}"#;
        assert_eq!(
            wait(classify(403, &headers(&[]), body, now)),
            Some(RATE_LIMIT_DEFAULT_WAIT)
        );
    }

    #[test]
    fn other_client_errors_are_final_and_server_errors_temporary() {
        let now = 1_800_000_000;
        let plain_403 = classify(
            403,
            &headers(&[]),
            r#"{"message":"Resource not accessible by integration"}"#,
            now,
        );
        assert!(
            matches!(plain_403, PostError::Rejected { status: 403, .. }),
            "{plain_403:?}"
        );
        // Remaining requests left: a 403 that is no rate limit.
        let h = headers(&[
            ("x-ratelimit-remaining", "12"),
            ("x-ratelimit-reset", "1800000030"),
        ]);
        assert!(matches!(
            classify(403, &h, "", now),
            PostError::Rejected { .. }
        ));
        for code in [400, 401, 404, 422] {
            assert!(
                matches!(
                    classify(code, &headers(&[]), "", now),
                    PostError::Rejected { .. }
                ),
                "{code}"
            );
        }
        // Retry-After on anything but 403/429 is no rate limit.
        assert!(matches!(
            classify(422, &headers(&[("retry-after", "5")]), "", now),
            PostError::Rejected { .. }
        ));
        for code in [408, 500, 502, 503] {
            assert!(
                matches!(
                    classify(code, &headers(&[]), "", now),
                    PostError::Temporary(_)
                ),
                "{code}"
            );
        }
    }
}
