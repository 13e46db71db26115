//! The GitHub forge: deployments, statuses and CI through the GitHub REST API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deploy_core::{AppConfig, EnvName, GitRef, GithubClients, NewDeployment};
use futures::future::join_all;
use octocrab::Octocrab;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::forge::{
    CheckInfo, CiReport, CreateOutcome, DeploymentFilter, DeploymentInfo, DeploymentState, Forge,
    ForgeError, PullInfo, ReviewInfo,
};

/// How long a repository's default branch is remembered.
const DEFAULT_BRANCH_TTL: Duration = Duration::from_secs(600);

/// Items per page of a paged list (GitHub's maximum).
const PER_PAGE: usize = 100;

/// Pages read of one list at most (GitHub lists at most 250 commits of a pull request; a
/// thousand reviews is more than any pull request has).
const MAX_PAGES: usize = 10;

/// Deployments on GitHub (or GitHub Enterprise).
pub struct GithubForge {
    clients: Arc<GithubClients>,
    default_branches: Mutex<HashMap<String, (GitRef, Instant)>>,
}

impl GithubForge {
    /// A forge using these clients.
    pub fn new(clients: Arc<GithubClients>) -> Self {
        Self {
            clients,
            default_branches: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self, app: &AppConfig) -> Result<Octocrab, ForgeError> {
        self.clients
            .for_repo(
                &app.repository,
                app.github_api.as_deref(),
                app.github_token.as_ref(),
            )
            .await
            .map_err(|e| ForgeError::Unreachable(format!("{e:#}")))
    }

    fn api_url<'a>(&'a self, app: &'a AppConfig) -> &'a str {
        app.github_api.as_deref().unwrap_or(self.clients.api_url())
    }

    /// The web address of the GitHub behind an API URL.
    fn web_url(api: &str) -> String {
        let api = api.trim_end_matches('/');
        if api == "https://api.github.com" {
            "https://github.com".to_owned()
        } else if let Some(host) = api.strip_suffix("/api/v3") {
            host.to_owned()
        } else {
            api.to_owned()
        }
    }

    fn deployments_url(&self, app: &AppConfig) -> String {
        format!(
            "{}/{}/deployments",
            Self::web_url(self.api_url(app)),
            app.repository
        )
    }

    async fn latest_state(
        &self,
        gh: &Octocrab,
        app: &AppConfig,
        id: u64,
    ) -> Result<Option<String>, ForgeError> {
        let route = format!(
            "/repos/{}/deployments/{id}/statuses?per_page=1",
            app.repository
        );
        let statuses: Vec<StatusJson> = gh.get(route, None::<&()>).await.map_err(map_error)?;
        Ok(statuses.into_iter().next().map(|s| s.state))
    }

    fn info(&self, app: &AppConfig, d: DeploymentJson, state: Option<String>) -> DeploymentInfo {
        let creator = d
            .payload
            .get("notify")
            .and_then(|n| n.get("user_name"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| d.creator.map(|c| c.login))
            .unwrap_or_else(|| "someone".to_owned());
        DeploymentInfo {
            id: d.id,
            git_ref: d.git_ref,
            sha: d.sha,
            environment: d.environment,
            task: d.task,
            creator,
            created_at: d.created_at,
            state,
            url: self.deployments_url(app),
        }
    }
}

#[derive(Deserialize)]
struct DeploymentJson {
    id: u64,
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    environment: String,
    #[serde(default = "default_task")]
    task: String,
    #[serde(default)]
    payload: Value,
    creator: Option<Login>,
    created_at: DateTime<Utc>,
}

fn default_task() -> String {
    "deploy".to_owned()
}

#[derive(Deserialize)]
struct Login {
    login: String,
}

#[derive(Deserialize)]
struct StatusJson {
    state: String,
    #[serde(default)]
    log_url: Option<String>,
}

#[derive(Deserialize)]
struct RepoJson {
    default_branch: String,
}

#[derive(Deserialize)]
struct CombinedStatusJson {
    sha: String,
    #[serde(default)]
    statuses: Vec<CommitStatusJson>,
}

#[derive(Deserialize)]
struct CommitStatusJson {
    context: String,
    state: String,
    target_url: Option<String>,
}

#[derive(Deserialize)]
struct CheckRunsJson {
    #[serde(default)]
    check_runs: Vec<CheckRunJson>,
}

#[derive(Deserialize)]
struct CheckRunJson {
    name: String,
    status: Option<String>,
    conclusion: Option<String>,
    html_url: Option<String>,
}

/// A pull request as GitHub lists it (`pull-request-simple`).
#[derive(Deserialize)]
struct PullJson {
    number: u64,
    title: String,
    body: Option<String>,
    user: Option<Login>,
    state: String,
    merged_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    html_url: String,
    head: HeadJson,
}

#[derive(Deserialize)]
struct HeadJson {
    #[serde(rename = "ref")]
    git_ref: String,
}

/// A pull request review (`pull-request-review`).
#[derive(Deserialize)]
struct ReviewJson {
    user: Option<Login>,
    state: String,
    submitted_at: Option<DateTime<Utc>>,
}

/// A commit of a pull request (`commit`): only its message is read.
#[derive(Deserialize)]
struct PullCommitJson {
    commit: CommitDetailJson,
}

#[derive(Deserialize)]
struct CommitDetailJson {
    message: String,
}

impl From<PullJson> for PullInfo {
    fn from(p: PullJson) -> Self {
        PullInfo {
            number: p.number,
            title: p.title,
            body: p.body.unwrap_or_default(),
            author: p.user.map(|u| u.login).unwrap_or_default(),
            state: p.state,
            merged: p.merged_at.is_some(),
            merged_at: p.merged_at,
            created_at: p.created_at,
            html_url: p.html_url,
            head_ref: p.head.git_ref,
        }
    }
}

/// Every item of a paged list: pages of [`PER_PAGE`] until a short one, at most
/// [`MAX_PAGES`].
async fn get_all<T: DeserializeOwned>(gh: &Octocrab, route: &str) -> Result<Vec<T>, ForgeError> {
    let mut all = Vec::new();
    for page in 1..=MAX_PAGES {
        let batch: Vec<T> = gh
            .get(
                format!("{route}?per_page={PER_PAGE}&page={page}"),
                None::<&()>,
            )
            .await
            .map_err(map_error)?;
        let full = batch.len() >= PER_PAGE;
        all.extend(batch);
        if !full {
            break;
        }
    }
    Ok(all)
}

#[derive(Deserialize)]
struct ErrorJson {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<Value>,
}

fn map_error(err: octocrab::Error) -> ForgeError {
    match err {
        octocrab::Error::GitHub { source, .. } => {
            status_error(source.status_code.as_u16(), source.message.clone())
        }
        other => ForgeError::Unreachable(short_error(&other)),
    }
}

fn short_error(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text.chars().take(200).collect()
}

fn status_error(status: u16, message: String) -> ForgeError {
    match status {
        401 => ForgeError::BadCredentials,
        403 => ForgeError::Forbidden { message },
        404 => ForgeError::NotFound,
        _ => ForgeError::Unexpected { status, message },
    }
}

/// Percent-encodes a ref for use as one path segment run (`/` kept, as GitHub expects).
fn encode_ref(git_ref: &str) -> String {
    let mut out = String::with_capacity(git_ref.len());
    for b in git_ref.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn query_value(s: &str) -> String {
    encode_ref(s).replace('/', "%2F")
}

/// Reads the `(context, state)` pairs from a 409's `errors[].contexts`.
fn failed_contexts(errors: &[Value]) -> Vec<(String, String)> {
    errors
        .iter()
        .filter_map(|e| e.get("contexts").and_then(Value::as_array))
        .flatten()
        .filter_map(|c| {
            Some((
                c.get("context")?.as_str()?.to_owned(),
                c.get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("missing")
                    .to_owned(),
            ))
        })
        .collect()
}

#[async_trait]
impl Forge for GithubForge {
    fn describe(&self) -> String {
        format!("GitHub ({})", self.clients.api_url())
    }

    async fn default_branch(&self, app: &AppConfig) -> Result<GitRef, ForgeError> {
        let key = format!("{}|{}", self.api_url(app), app.repository);
        if let Some((branch, at)) = self.default_branches.lock().expect("cache lock").get(&key)
            && at.elapsed() < DEFAULT_BRANCH_TTL
        {
            return Ok(branch.clone());
        }
        let gh = self.client(app).await?;
        let repo: RepoJson = gh
            .get(format!("/repos/{}", app.repository), None::<&()>)
            .await
            .map_err(map_error)?;
        let branch = GitRef::parse(&repo.default_branch).map_err(|e| {
            ForgeError::Unreachable(format!(
                "unreadable default branch {:?}: {e}",
                repo.default_branch
            ))
        })?;
        self.default_branches
            .lock()
            .expect("cache lock")
            .insert(key, (branch.clone(), Instant::now()));
        Ok(branch)
    }

    async fn create_deployment(
        &self,
        app: &AppConfig,
        request: &NewDeployment,
    ) -> Result<CreateOutcome, ForgeError> {
        let gh = self.client(app).await?;
        let route = format!("/repos/{}/deployments", app.repository);
        // The raw call: octocrab's typed call cannot read GitHub's 202 answer.
        let response = gh
            ._post(route.as_str(), Some(request))
            .await
            .map_err(|e| ForgeError::Unreachable(short_error(&e)))?;
        let status = response.status().as_u16();
        let text = gh
            .body_to_string(response)
            .await
            .map_err(|e| ForgeError::Unreachable(short_error(&e)))?;
        let unreadable = |e: serde_json::Error| {
            ForgeError::Unreachable(format!("unreadable answer ({status}): {e}"))
        };
        match status {
            201 => {
                let d: DeploymentJson = serde_json::from_str(&text).map_err(unreadable)?;
                Ok(CreateOutcome::Created(self.info(app, d, None)))
            }
            202 | 409 | 422 | 401 | 403 | 404 => {
                let body: ErrorJson = serde_json::from_str(&text).map_err(unreadable)?;
                let contexts = failed_contexts(&body.errors);
                match status {
                    202 => Ok(CreateOutcome::AutoMerged {
                        message: body.message,
                    }),
                    409 if !contexts.is_empty() => Ok(CreateOutcome::ChecksFailed { contexts }),
                    409 => Ok(CreateOutcome::MergeConflict {
                        message: body.message,
                    }),
                    422 => Ok(CreateOutcome::Unprocessable {
                        message: body.message,
                    }),
                    _ => Err(status_error(status, body.message)),
                }
            }
            _ => {
                let message = serde_json::from_str::<ErrorJson>(&text)
                    .map(|b| b.message)
                    .unwrap_or_else(|_| text.chars().take(200).collect());
                Err(status_error(status, message))
            }
        }
    }

    async fn deployments(
        &self,
        app: &AppConfig,
        filter: &DeploymentFilter,
    ) -> Result<Vec<DeploymentInfo>, ForgeError> {
        let gh = self.client(app).await?;
        let mut route = format!(
            "/repos/{}/deployments?per_page={}",
            app.repository,
            filter.limit.clamp(1, 100)
        );
        if let Some(r) = &filter.git_ref {
            route.push_str(&format!("&ref={}", query_value(r.as_str())));
        }
        if let Some(e) = &filter.environment {
            route.push_str(&format!("&environment={}", query_value(e.as_str())));
        }
        let list: Vec<DeploymentJson> = gh.get(route, None::<&()>).await.map_err(map_error)?;
        let states = join_all(list.iter().map(|d| self.latest_state(&gh, app, d.id))).await;
        list.into_iter()
            .zip(states)
            .map(|(d, state)| Ok(self.info(app, d, state?)))
            .collect()
    }

    async fn current_deployment(
        &self,
        app: &AppConfig,
        environment: &EnvName,
    ) -> Result<Option<DeploymentInfo>, ForgeError> {
        let gh = self.client(app).await?;
        let route = format!(
            "/repos/{}/deployments?per_page=20&environment={}",
            app.repository,
            query_value(environment.as_str())
        );
        let list: Vec<DeploymentJson> = gh.get(route, None::<&()>).await.map_err(map_error)?;
        for d in list {
            if d.task != "deploy" {
                continue;
            }
            let state = self.latest_state(&gh, app, d.id).await?;
            if state.as_deref() == Some("success") {
                return Ok(Some(self.info(app, d, state)));
            }
        }
        Ok(None)
    }

    async fn deployment_state(
        &self,
        app: &AppConfig,
        id: u64,
    ) -> Result<Option<DeploymentState>, ForgeError> {
        let gh = self.client(app).await?;
        let route = format!(
            "/repos/{}/deployments/{id}/statuses?per_page=1",
            app.repository
        );
        let statuses: Vec<StatusJson> = gh.get(route, None::<&()>).await.map_err(map_error)?;
        Ok(statuses.into_iter().next().map(|s| DeploymentState {
            state: s.state,
            log_url: s.log_url.filter(|u| !u.is_empty()),
        }))
    }

    async fn has_statuses(&self, app: &AppConfig, id: u64) -> Result<bool, ForgeError> {
        let gh = self.client(app).await?;
        Ok(self.latest_state(&gh, app, id).await?.is_some())
    }

    async fn resolve_sha(
        &self,
        app: &AppConfig,
        git_ref: &GitRef,
    ) -> Result<Option<String>, ForgeError> {
        let gh = self.client(app).await?;
        // The combined status names the commit the ref points at; GitHub answers 422 for a
        // ref that does not exist.
        let path = format!(
            "/repos/{}/commits/{}/status?per_page=1",
            app.repository,
            encode_ref(git_ref.as_str())
        );
        match gh.get::<CombinedStatusJson, _, _>(path, None::<&()>).await {
            Ok(combined) => Ok(Some(combined.sha)),
            Err(e) => match map_error(e) {
                ForgeError::Unexpected { status: 422, .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn ci_report(&self, app: &AppConfig, git_ref: &GitRef) -> Result<CiReport, ForgeError> {
        let gh = self.client(app).await?;
        let base = format!(
            "/repos/{}/commits/{}",
            app.repository,
            encode_ref(git_ref.as_str())
        );
        let (combined, runs) = futures::join!(
            gh.get::<CombinedStatusJson, _, _>(format!("{base}/status"), None::<&()>),
            gh.get::<CheckRunsJson, _, _>(format!("{base}/check-runs?per_page=100"), None::<&()>)
        );
        let combined = combined.map_err(map_error)?;
        let runs = runs.map_err(map_error)?;
        let mut checks: Vec<CheckInfo> = combined
            .statuses
            .into_iter()
            .map(|s| CheckInfo {
                name: s.context,
                state: s.state,
                url: s.target_url,
            })
            .collect();
        checks.extend(runs.check_runs.into_iter().map(|r| {
            CheckInfo {
                name: r.name,
                state: r
                    .conclusion
                    .or(r.status.filter(|s| s != "completed"))
                    .unwrap_or_else(|| "pending".to_owned()),
                url: r.html_url,
            }
        }));
        Ok(CiReport {
            sha: combined.sha,
            checks,
        })
    }

    async fn pulls_for_commit(
        &self,
        app: &AppConfig,
        sha: &str,
    ) -> Result<Vec<PullInfo>, ForgeError> {
        let gh = self.client(app).await?;
        let route = format!(
            "/repos/{}/commits/{}/pulls",
            app.repository,
            encode_ref(sha)
        );
        let pulls: Vec<PullJson> = get_all(&gh, &route).await?;
        Ok(pulls.into_iter().map(PullInfo::from).collect())
    }

    async fn pull_reviews(
        &self,
        app: &AppConfig,
        number: u64,
    ) -> Result<Vec<ReviewInfo>, ForgeError> {
        let gh = self.client(app).await?;
        let route = format!("/repos/{}/pulls/{number}/reviews", app.repository);
        let reviews: Vec<ReviewJson> = get_all(&gh, &route).await?;
        Ok(reviews
            .into_iter()
            .map(|r| ReviewInfo {
                author: r.user.map(|u| u.login).unwrap_or_default(),
                state: r.state,
                submitted_at: r.submitted_at,
            })
            .collect())
    }

    async fn pull_commits(&self, app: &AppConfig, number: u64) -> Result<Vec<String>, ForgeError> {
        let gh = self.client(app).await?;
        let route = format!("/repos/{}/pulls/{number}/commits", app.repository);
        let commits: Vec<PullCommitJson> = get_all(&gh, &route).await?;
        Ok(commits.into_iter().map(|c| c.commit.message).collect())
    }

    async fn comment_on_issue(
        &self,
        app: &AppConfig,
        number: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        let gh = self.client(app).await?;
        let route = format!("/repos/{}/issues/{number}/comments", app.repository);
        let _: Value = gh
            .post(route, Some(&serde_json::json!({ "body": body })))
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn add_label(&self, app: &AppConfig, number: u64, label: &str) -> Result<(), ForgeError> {
        let gh = self.client(app).await?;
        let route = format!("/repos/{}/issues/{number}/labels", app.repository);
        let _: Value = gh
            .post(route, Some(&serde_json::json!({ "labels": [label] })))
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn log(&self, _id: u64) -> Result<Vec<String>, ForgeError> {
        Err(ForgeError::Unsupported(
            "Deployment logs are on faseng's log page: follow the link in the deployment's status (`deploys <app>` lists them)."
                .to_owned(),
        ))
    }

    fn hooks_settings_url(&self, app: &AppConfig) -> String {
        format!(
            "{}/{}/settings/hooks",
            Self::web_url(self.api_url(app)),
            app.repository
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_urls_for_github_and_enterprise() {
        assert_eq!(
            GithubForge::web_url("https://api.github.com"),
            "https://github.com"
        );
        assert_eq!(
            GithubForge::web_url("https://ghe.corp/api/v3/"),
            "https://ghe.corp"
        );
        assert_eq!(
            GithubForge::web_url("http://127.0.0.1:1"),
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn refs_are_encoded_for_paths_and_queries() {
        assert_eq!(encode_ref("feature/login"), "feature/login");
        assert_eq!(encode_ref("a#b%c"), "a%23b%25c");
        assert_eq!(encode_ref("café"), "caf%C3%A9");
        assert_eq!(query_value("feature/x&y=1"), "feature%2Fx%26y%3D1");
    }

    #[test]
    fn failed_contexts_are_read_from_409_errors() {
        let errors: Vec<Value> = serde_json::from_str(
            r#"[{"contexts": [{"context": "ci/travis", "state": "failure"}, {"context": "lint"}],
                 "resource": "Deployment", "field": "required_contexts", "code": "invalid"}]"#,
        )
        .unwrap();
        assert_eq!(
            failed_contexts(&errors),
            vec![
                ("ci/travis".to_owned(), "failure".to_owned()),
                ("lint".to_owned(), "missing".to_owned())
            ]
        );
        assert!(failed_contexts(&[]).is_empty());
    }

    #[test]
    fn statuses_map_to_errors() {
        assert_eq!(status_error(401, String::new()), ForgeError::BadCredentials);
        assert_eq!(status_error(404, String::new()), ForgeError::NotFound);
        assert!(matches!(
            status_error(403, "x".into()),
            ForgeError::Forbidden { .. }
        ));
        assert!(matches!(
            status_error(500, "x".into()),
            ForgeError::Unexpected { status: 500, .. }
        ));
    }
}
