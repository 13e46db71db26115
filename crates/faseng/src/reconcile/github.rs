//! Reading GitHub for the reconciler: which repositories to list and with what credentials,
//! one GET with its status, headers and body (kept apart
//! from the pass so the pass is tested against a scripted GitHub), and what an answer says
//! of the rate limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deploy_core::{Apps, GithubClients, RepoName, Secret};
use http::HeaderMap;

/// The longest a rate limit pauses reconciling (GitHub's limits reset within the hour).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// How long a rate-limited answer without any hint of when to come back pauses reconciling
/// (GitHub's advice for secondary rate limits: at least a minute).
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// A repository to reconcile and how to reach its GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `owner/name`.
    pub repo: RepoName,
    /// The app's `github_api` (else the default API).
    pub api: Option<String>,
    /// The app's `github_token` (else the default credential).
    pub token: Option<Secret>,
}

impl Target {
    pub(super) fn key(&self) -> String {
        format!("{}|{}", self.api.as_deref().unwrap_or_default(), self.repo)
    }
}

/// The distinct repositories of the operator's apps (by API and name; the first app of a
/// repository that sets `github_api`/`github_token` gives them), split into those faseng has
/// GitHub credentials for and those it has none for (never listed: GitHub would show only
/// public repositories, at a rate limit of 60 requests an hour).
pub fn targets(apps: &Apps, default_credentials: bool) -> (Vec<Target>, Vec<Target>) {
    let mut seen: HashMap<(Option<String>, RepoName), usize> = HashMap::new();
    let mut all: Vec<Target> = Vec::new();
    for app in apps.iter() {
        let api = app
            .github_api
            .as_deref()
            .map(deploy_core::github::normalize_api_url);
        match seen.get(&(api.clone(), app.repository.clone())) {
            Some(&i) => {
                if all[i].token.is_none() {
                    all[i].token = app.github_token.clone();
                }
            }
            None => {
                seen.insert((api.clone(), app.repository.clone()), all.len());
                all.push(Target {
                    repo: app.repository.clone(),
                    api,
                    token: app.github_token.clone(),
                });
            }
        }
    }
    all.into_iter()
        .partition(|t| default_credentials || t.token.is_some())
}

/// One GET's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers (`ETag`, rate limit).
    pub headers: HeaderMap,
    /// Body text (empty for 304).
    pub body: String,
}

/// Reads GitHub: one GET, with `If-None-Match` when given, answered whatever its status.
#[async_trait]
pub trait GithubReader: Send + Sync + 'static {
    /// GETs `route` (`/repos/…`) on `target`'s GitHub.
    async fn get(
        &self,
        target: &Target,
        route: &str,
        if_none_match: Option<&str>,
    ) -> anyhow::Result<Answer>;
}

/// Reads GitHub through octocrab's clients (the app's API and token when it sets them).
#[derive(Debug, Clone)]
pub struct OctocrabReader {
    clients: Arc<GithubClients>,
}

impl OctocrabReader {
    /// A reader over the shared client factory.
    pub fn new(clients: Arc<GithubClients>) -> Self {
        Self { clients }
    }
}

#[async_trait]
impl GithubReader for OctocrabReader {
    async fn get(
        &self,
        target: &Target,
        route: &str,
        if_none_match: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let gh = self
            .clients
            .for_repo(&target.repo, target.api.as_deref(), target.token.as_ref())
            .await?;
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(
                http::header::IF_NONE_MATCH,
                http::HeaderValue::from_str(tag).context("an ETag GitHub sent")?,
            );
        }
        // The raw call: a 304 or a rate-limited answer is read here, not turned into an error.
        let response = gh
            ._get_with_headers(route, Some(headers))
            .await
            .with_context(|| format!("GET {route}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = gh
            .body_to_string(response)
            .await
            .with_context(|| format!("reading the answer to GET {route}"))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header(headers, name).and_then(|v| v.parse().ok())
}

fn until(then: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (then - now).to_std().unwrap_or_default()
}

/// How long a rate-limited answer says to wait, bounded by 1 s and [`MAX_WAIT`]; `None` when
/// the answer is not rate limiting. A 403 or 429 is rate limiting when it carries
/// `Retry-After` (seconds or an HTTP date), or `X-RateLimit-Remaining: 0` (then wait until
/// `X-RateLimit-Reset`), or is a 429 or says "rate limit" (then [`DEFAULT_RATE_LIMIT_WAIT`]).
/// A 403 without any of these is a refusal, not a rate limit.
pub fn rate_limit_wait(answer: &Answer, now: DateTime<Utc>) -> Option<Duration> {
    if !matches!(answer.status, 403 | 429) {
        return None;
    }
    let h = &answer.headers;
    let retry_after = header(h, "retry-after").and_then(|v| {
        v.parse::<u64>().map(Duration::from_secs).ok().or_else(|| {
            DateTime::parse_from_rfc2822(v)
                .ok()
                .map(|at| until(at.with_timezone(&Utc), now))
        })
    });
    let reset = || {
        (header_u64(h, "x-ratelimit-remaining") == Some(0))
            .then(|| header_u64(h, "x-ratelimit-reset"))
            .flatten()
            .and_then(|secs| DateTime::from_timestamp(i64::try_from(secs).ok()?, 0))
            .map(|at| until(at, now))
    };
    let said_so = answer.status == 429
        || answer.body.to_ascii_lowercase().contains("rate limit")
        || header_u64(h, "x-ratelimit-remaining") == Some(0);
    let wait = retry_after
        .or_else(reset)
        .or(said_so.then_some(DEFAULT_RATE_LIMIT_WAIT))?;
    Some(wait.clamp(Duration::from_secs(1), MAX_WAIT))
}

/// What is left of GitHub's rate limit, from an answer's `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Requests left.
    pub remaining: u64,
    /// Requests per window.
    pub limit: u64,
    /// When the window starts again.
    pub reset: DateTime<Utc>,
}

impl Budget {
    /// The budget an answer tells of, if it tells.
    pub fn of(answer: &Answer) -> Option<Self> {
        let h = &answer.headers;
        Some(Self {
            remaining: header_u64(h, "x-ratelimit-remaining")?,
            limit: header_u64(h, "x-ratelimit-limit").unwrap_or(5000),
            reset: DateTime::from_timestamp(
                i64::try_from(header_u64(h, "x-ratelimit-reset")?).ok()?,
                0,
            )?,
        })
    }

    /// The least time until the next pass when little is left (under a tenth of the limit):
    /// passes are spaced so that reconciling, at `requests` per pass, uses at most half of
    /// what remains before the reset; with nothing left, the wait is until the reset. `None`
    /// while plenty is left. Bounded by [`MAX_WAIT`].
    pub fn pace(&self, requests: u64, now: DateTime<Utc>) -> Option<Duration> {
        let to_reset = until(self.reset, now);
        if self.remaining == 0 {
            return Some(to_reset.min(MAX_WAIT));
        }
        if self.remaining.saturating_mul(10) >= self.limit {
            return None;
        }
        let passes = self.remaining / 2 / requests.max(1);
        let wait = if passes == 0 {
            to_reset
        } else {
            to_reset / u32::try_from(passes).unwrap_or(u32::MAX)
        };
        Some(wait.min(MAX_WAIT))
    }
}
