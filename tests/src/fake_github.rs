//! A stateful fake of the GitHub REST API, on loopback, speaking GitHub's wire format.
//!
//! Every request body it receives is validated against that operation's request schema in
//! `../shared/fixtures/github/openapi-subset.json`; a body that fails is answered 422 and
//! recorded, and the fake panics on drop if any were recorded, so a bad body fails the test.
//! Like GitHub, it fires a signed `deployment` webhook when a deployment is created (once a
//! webhook is set with [`FakeGithub::set_webhook`], and unless deliveries are dropped with
//! [`FakeGithub::drop_deliveries`]). Like GitHub, it answers a repository and its deployments
//! list with an `ETag` and `304 Not Modified` to a matching `If-None-Match`, sends
//! `X-RateLimit-*` headers on lists, and can be told to rate-limit lists
//! ([`FakeGithub::rate_limit_next_list`]).
//!
//! Pull requests (associated with commits), their reviews and commits, and issue comments and
//! labels live per repository ([`FakeGithub::add_pull`], [`FakeGithub::add_review`],
//! [`FakeGithub::issue_comments`], [`FakeGithub::issue_labels`]; see `pulls.rs` for which
//! shapes are validated how). Any endpoint can be made to answer 500
//! ([`FakeGithub::fail_next`]). GitHub's OAuth web flow and the membership endpoints the
//! dashboard's sign-in uses are in `oauth.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::watch;

use crate::fixtures;

mod oauth;
mod pulls;

pub use oauth::Exchange;
pub use pulls::{PullSpec, PullState};

/// The token the fake accepts unless told otherwise.
pub const TOKEN: &str = "ghp_test_token_0123456789";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path below the API base (prefix removed).
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body, or `Null`.
    pub body: Value,
    /// The `If-None-Match` header.
    pub if_none_match: Option<String>,
    /// When the fake received it.
    pub received_at: std::time::Instant,
}

/// A commit status (legacy statuses API) or check run on a commit.
#[derive(Debug, Clone)]
pub struct Check {
    /// Context (status) or name (check run).
    pub name: String,
    /// `success`, `failure`, `error`, `pending` for statuses; for check runs the conclusion
    /// (`success`, `failure`, …) or `pending` while queued / in progress.
    pub state: String,
    /// Link to the details.
    pub url: String,
    /// True for a check run, false for a legacy commit status.
    pub check_run: bool,
}

#[derive(Debug, Default)]
struct Repo {
    full_name: String,
    default_branch: String,
    clone_url: Option<String>,
    branches: HashMap<String, String>,
    checks: HashMap<String, Vec<Check>>,
    behind_default: Vec<String>,
    conflicting: Vec<String>,
    accept_token: Option<String>,
    forbidden: bool,
    pulls: pulls::RepoPulls,
}

#[derive(Debug)]
struct Webhook {
    url: String,
    secret: String,
}

/// A delivery the fake fired, and what the receiver answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-GitHub-Delivery`.
    pub id: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// The receiver's HTTP status (0 when the connection failed).
    pub status: u16,
    /// The body sent.
    pub body: Bytes,
}

#[derive(Debug, Default)]
struct Inner {
    repos: HashMap<String, Repo>,
    deployments: Vec<Value>,
    statuses: HashMap<u64, Vec<Value>>,
    requests: Vec<RecordedRequest>,
    violations: Vec<String>,
    next_id: u64,
    fail_status_posts: u32,
    rate_limited_status_posts: u32,
    rate_limit_retry_after: u64,
    lost_status_answers: u32,
    webhook: Option<Webhook>,
    deliveries: Vec<Delivery>,
    drop_deliveries: bool,
    rate_limits: VecDeque<RateLimit>,
    counters: HashMap<String, Counters>,
    list_answers: Vec<ListAnswer>,
    failures: Vec<FailRule>,
    oauth: oauth::OauthState,
}

/// Requests the fake answers 500 (see [`FakeGithub::fail_next`]).
#[derive(Debug)]
struct FailRule {
    method: String,
    path: String,
    remaining: u32,
}

/// True when `path` matches `pattern`, where a `*` segment matches any one segment.
fn path_matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| *a == "*" || a == b)
}

/// One deployments list the fake answered.
#[derive(Debug, Clone)]
pub struct ListAnswer {
    /// `owner/repo`.
    pub repo: String,
    /// The HTTP status (200, 304, 403 or 429).
    pub status: u16,
    /// The `If-None-Match` it was asked with.
    pub if_none_match: Option<String>,
    /// The `ETag` it answered (none when rate-limited).
    pub etag: Option<String>,
    /// When it was answered.
    pub at: std::time::Instant,
}

/// How the fake refuses a deployments list for GitHub's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// The primary limit is spent: 403 with `X-RateLimit-Remaining: 0` and
    /// `X-RateLimit-Reset` this far ahead (rounded up to a whole second).
    Exhausted {
        /// Time until the reset.
        reset_in: Duration,
    },
    /// A secondary limit: 429 with `Retry-After` of this many whole seconds.
    RetryAfter(Duration),
}

/// What the fake counted for one repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `GET …/deployments` calls.
    pub list_calls: u64,
    /// Of these, answered 304 Not Modified.
    pub list_not_modified: u64,
    /// Of these, refused for the rate limit.
    pub list_rate_limited: u64,
    /// `GET /repos/{owner}/{repo}` calls answered 304 Not Modified.
    pub repo_not_modified: u64,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<watch::Sender<u64>>,
    base_url: String,
    http: reqwest::Client,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The running fake; dropping it stops the server.
pub struct FakeGithub {
    shared: Shared,
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.server.abort();
        let violations = std::mem::take(&mut self.shared.lock().violations);
        if !violations.is_empty() && !std::thread::panicking() {
            panic!(
                "requests to the fake GitHub broke the schema:\n{}",
                violations.join("\n")
            );
        }
    }
}

impl FakeGithub {
    /// Starts the fake at the root of a loopback port (like api.github.com).
    pub async fn start() -> Self {
        Self::start_with_prefix("").await
    }

    /// Starts the fake under a path prefix, e.g. `/api/v3` as GitHub Enterprise does.
    pub async fn start_with_prefix(prefix: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}{prefix}");
        let (changed, _) = watch::channel(0);
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                next_id: 1000,
                ..Inner::default()
            })),
            changed: Arc::new(changed),
            base_url: url.clone(),
            http: reqwest::Client::new(),
        };
        let api = Router::new()
            .route("/user", get(get_user))
            .route("/repos/{owner}/{repo}", get(get_repo))
            .route("/repos/{owner}/{repo}/branches/{*branch}", get(get_branch))
            .route(
                "/repos/{owner}/{repo}/deployments",
                post(create_deployment).get(list_deployments),
            )
            .route(
                "/repos/{owner}/{repo}/deployments/{id}",
                get(get_deployment),
            )
            .route(
                "/repos/{owner}/{repo}/deployments/{id}/statuses",
                post(create_status).get(list_statuses),
            )
            .route("/repos/{owner}/{repo}/commits/{*rest}", get(commit_checks))
            .route(
                "/repos/{owner}/{repo}/pulls/{number}/reviews",
                get(pulls::list_reviews),
            )
            .route(
                "/repos/{owner}/{repo}/pulls/{number}/commits",
                get(pulls::list_pull_commits),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                post(pulls::create_issue_comment),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{number}/labels",
                post(pulls::add_issue_labels),
            )
            .route("/repos/{owner}/{repo}/tarball/{*git_ref}", get(tarball))
            .route("/repos/{owner}/{repo}/installation", get(repo_installation))
            .route(
                "/app/installations/{id}/access_tokens",
                post(installation_access_token),
            )
            .merge(oauth::api_routes())
            .fallback(not_found);
        let app = if prefix.is_empty() {
            api
        } else {
            Router::new().nest(prefix, api)
        }
        .merge(oauth::web_routes())
        .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            shared,
            url,
            server,
        }
    }

    /// The API base URL to give as `GITHUB_API_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds a repository with its default branch (at a generated sha).
    pub fn add_repo(&self, full_name: &str, default_branch: &str) {
        let mut inner = self.shared.lock();
        let repo = inner.repos.entry(full_name.to_owned()).or_default();
        repo.full_name = full_name.to_owned();
        repo.default_branch = default_branch.to_owned();
        repo.branches.insert(
            default_branch.to_owned(),
            fake_sha(full_name, default_branch),
        );
    }

    /// Adds (or moves) a branch; returns its sha.
    pub fn add_branch(&self, full_name: &str, branch: &str) -> String {
        let sha = fake_sha(full_name, branch);
        self.set_branch(full_name, branch, &sha);
        sha
    }

    /// Points a branch at a given sha (e.g. a real commit of a local test repository).
    pub fn set_branch(&self, full_name: &str, branch: &str, sha: &str) {
        self.with_repo(full_name, |r| {
            r.branches.insert(branch.to_owned(), sha.to_owned());
        });
    }

    /// The sha a branch points at.
    pub fn branch_sha(&self, full_name: &str, branch: &str) -> String {
        self.with_repo(full_name, |r| r.branches[branch].clone())
    }

    /// The `repository.clone_url` sent in webhooks (default: the GitHub https URL).
    pub fn set_clone_url(&self, full_name: &str, clone_url: &str) {
        self.with_repo(full_name, |r| r.clone_url = Some(clone_url.to_owned()));
    }

    /// Adds a commit status or check run to the commit a ref points at.
    pub fn add_check(&self, full_name: &str, git_ref: &str, check: Check) {
        self.with_repo(full_name, |r| {
            let sha = r
                .branches
                .get(git_ref)
                .cloned()
                .unwrap_or(git_ref.to_owned());
            r.checks.entry(sha).or_default().push(check);
        });
    }

    /// The next deployment of this branch with auto_merge answers 202 (the default branch is
    /// merged into it first).
    pub fn set_behind_default(&self, full_name: &str, branch: &str) {
        self.with_repo(full_name, |r| r.behind_default.push(branch.to_owned()));
    }

    /// Deployments of this branch with auto_merge answer 409 merge conflict.
    pub fn set_conflicting(&self, full_name: &str, branch: &str) {
        self.with_repo(full_name, |r| r.conflicting.push(branch.to_owned()));
    }

    /// This repository accepts only `token` (e.g. a per-app token); others get 404 as GitHub
    /// answers for a repository a token cannot see.
    pub fn require_token(&self, full_name: &str, token: &str) {
        self.with_repo(full_name, |r| r.accept_token = Some(token.to_owned()));
    }

    /// Creating deployments in this repository answers 403 (token lacks `repo_deployment`).
    pub fn set_forbidden(&self, full_name: &str) {
        self.with_repo(full_name, |r| r.forbidden = true);
    }

    /// From now on, deployments created fire a signed `deployment` webhook at `url`.
    pub fn set_webhook(&self, url: &str, secret: &str) {
        self.shared.lock().webhook = Some(Webhook {
            url: url.to_owned(),
            secret: secret.to_owned(),
        });
    }

    /// While `drop` is true, deployments created fire no webhook (as when the hook is missing
    /// or misconfigured, or GitHub gave up delivering): nothing is sent and nothing recorded.
    pub fn drop_deliveries(&self, drop: bool) {
        self.shared.lock().drop_deliveries = drop;
    }

    /// Creates a deployment (as [`FakeGithub::create_deployment`]) whose webhook never goes out.
    pub async fn create_deployment_without_webhook(&self, full_name: &str, body: Value) -> Value {
        let (status, response) = create(&self.shared, full_name, &body, Some(TOKEN));
        assert_eq!(status, StatusCode::CREATED, "{response}");
        self.shared.bump();
        response
    }

    /// Dates a deployment's creation (e.g. before faseng's reconcile window).
    pub fn set_created_at(&self, deployment_id: u64, at: chrono::DateTime<chrono::Utc>) {
        let mut inner = self.shared.lock();
        let d = inner
            .deployments
            .iter_mut()
            .find(|d| d["id"] == deployment_id)
            .expect("known deployment");
        let at = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        d["created_at"] = at.clone();
        d["updated_at"] = at;
    }

    /// Adds a status to a deployment directly, as another deployer would have (not a request
    /// faseng made; [`FakeGithub::statuses`] shows it like any other).
    pub fn add_status(&self, deployment_id: u64, state: &str, description: &str) {
        let mut inner = self.shared.lock();
        let deployment = inner
            .deployments
            .iter()
            .find(|d| d["id"] == deployment_id)
            .cloned()
            .expect("known deployment");
        push_status(
            &mut inner,
            &deployment,
            &json!({"state": state, "description": description}),
        );
        drop(inner);
        self.shared.bump();
    }

    /// The next deployments list asked for (of any repository) is refused for the rate limit.
    pub fn rate_limit_next_list(&self, limit: RateLimit) {
        self.shared.lock().rate_limits.push_back(limit);
    }

    /// What the fake counted for a repository (lists, 304s, rate-limited answers).
    pub fn counters(&self, full_name: &str) -> Counters {
        self.shared
            .lock()
            .counters
            .get(full_name)
            .copied()
            .unwrap_or_default()
    }

    /// The deployments lists of a repository the fake answered, oldest first.
    pub fn list_answers(&self, full_name: &str) -> Vec<ListAnswer> {
        self.shared
            .lock()
            .list_answers
            .iter()
            .filter(|a| a.repo == full_name)
            .cloned()
            .collect()
    }

    /// The next `n` status posts answer 500 (and are not recorded); `u32::MAX` until told
    /// otherwise, `0` ends it.
    pub fn fail_status_posts(&self, n: u32) {
        self.shared.lock().fail_status_posts = n;
    }

    /// The next `n` status posts hit GitHub's secondary rate limit: 403 with `Retry-After:
    /// retry_after_secs` and GitHub's message, not recorded.
    pub fn rate_limit_status_posts(&self, n: u32, retry_after_secs: u64) {
        let mut inner = self.shared.lock();
        inner.rate_limited_status_posts = n;
        inner.rate_limit_retry_after = retry_after_secs;
    }

    /// The next `n` status posts are recorded, but answered 500 (the answer is lost on the
    /// way back, as when a proxy times out after GitHub wrote the status).
    pub fn lose_status_answers(&self, n: u32) {
        self.shared.lock().lost_status_answers = n;
    }

    /// The next `n` requests of `method` to `path` (below the API base, e.g.
    /// `/repos/o/r/issues/*/labels`, where `*` stands for any one segment) answer 500 without
    /// reaching their handler; they are still listed by [`FakeGithub::requests`].
    pub fn fail_next(&self, method: &str, path: &str, n: u32) {
        self.shared.lock().failures.push(FailRule {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            remaining: n,
        });
    }

    /// The status posts received (recorded or not), oldest first, with when they arrived.
    pub fn status_posts(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/statuses"))
            .collect()
    }

    /// Creates a deployment as GitHub would for another client (CI, `gh`), firing the webhook.
    pub async fn create_deployment(&self, full_name: &str, body: Value) -> Value {
        let (status, response) = create(&self.shared, full_name, &body, Some(TOKEN));
        assert_eq!(status, StatusCode::CREATED, "{response}");
        fire_webhook(&self.shared, full_name, &response).await;
        response
    }

    /// The `(headers, body)` of the `deployment` webhook GitHub sends for `deployment`,
    /// built from the upstream sample payload, signed with `secret`.
    pub fn deployment_webhook(
        &self,
        full_name: &str,
        deployment: &Value,
        secret: &str,
    ) -> (Vec<(String, String)>, Bytes) {
        let inner = self.shared.lock();
        let repo = inner.repos.get(full_name).expect("known repo");
        let body = deployment_event(repo, deployment);
        drop(inner);
        let id = format!("fake-{}", deployment["id"]);
        signed_delivery("deployment", &id, &body, secret)
    }

    /// Every deployment created in a repository, oldest first.
    pub fn deployments(&self, full_name: &str) -> Vec<Value> {
        let url = repo_url(&self.url, full_name);
        self.shared
            .lock()
            .deployments
            .iter()
            .filter(|d| d["repository_url"] == url)
            .cloned()
            .collect()
    }

    /// The statuses posted for a deployment, oldest first.
    pub fn statuses(&self, deployment_id: u64) -> Vec<Value> {
        self.shared
            .lock()
            .statuses
            .get(&deployment_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Webhook deliveries fired so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    /// Sends a delivery again (as GitHub's "Redeliver" button does), returning the status.
    pub async fn redeliver(&self, delivery_id: &str) -> u16 {
        let (delivery, webhook_url, secret) = {
            let inner = self.shared.lock();
            let d = inner
                .deliveries
                .iter()
                .find(|d| d.id == delivery_id)
                .expect("known delivery")
                .clone();
            let hook = inner.webhook.as_ref().expect("webhook set");
            (d, hook.url.clone(), hook.secret.clone())
        };
        post_delivery(
            &self.shared,
            &webhook_url,
            &secret,
            &delivery.event,
            &delivery.id,
            delivery.body,
        )
        .await
    }

    /// Waits until `check` holds for the fake's state, or panics after `timeout`.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&FakeGithub) -> Option<T>,
    ) -> T {
        crate::wait::on_change(&self.shared.changed, timeout, what, || check(self)).await
    }

    /// Waits until a deployment has a status in `state`, returning that status.
    pub async fn wait_for_status(
        &self,
        deployment_id: u64,
        state: &str,
        timeout: Duration,
    ) -> Value {
        self.wait_until(
            timeout,
            &format!("deployment {deployment_id} to be {state}"),
            |gh| {
                gh.statuses(deployment_id)
                    .into_iter()
                    .find(|s| s["state"] == state)
            },
        )
        .await
    }

    /// Waits until `n` deployments exist in a repository, returning them.
    pub async fn wait_for_deployments(
        &self,
        full_name: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Value> {
        self.wait_until(timeout, &format!("{n} deployments of {full_name}"), |gh| {
            let d = gh.deployments(full_name);
            (d.len() >= n).then_some(d)
        })
        .await
    }

    fn with_repo<T>(&self, full_name: &str, f: impl FnOnce(&mut Repo) -> T) -> T {
        let mut inner = self.shared.lock();
        let repo = inner
            .repos
            .get_mut(full_name)
            .unwrap_or_else(|| panic!("add_repo({full_name:?}) first"));
        f(repo)
    }
}

/// A deterministic 40-hex sha for a repo and name.
pub fn fake_sha(full_name: &str, name: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(full_name.as_bytes()).unwrap();
    mac.update(name.as_bytes());
    hex::encode(mac.finalize().into_bytes())[..40].to_owned()
}

/// `sha256=<hex>` of `body` under `secret`, as GitHub signs webhooks.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Headers and body of a signed webhook delivery.
pub fn signed_delivery(
    event: &str,
    delivery_id: &str,
    body: &Value,
    secret: &str,
) -> (Vec<(String, String)>, Bytes) {
    let body = Bytes::from(serde_json::to_vec(body).unwrap());
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("user-agent".to_owned(), "GitHub-Hookshot/fake".to_owned()),
        ("x-github-event".to_owned(), event.to_owned()),
        ("x-github-delivery".to_owned(), delivery_id.to_owned()),
        ("x-github-hook-id".to_owned(), "424242".to_owned()),
        ("x-hub-signature-256".to_owned(), sign(secret, &body)),
    ];
    (headers, body)
}

fn repo_url(base: &str, full_name: &str) -> String {
    format!("{base}/repos/{full_name}")
}

async fn record(
    State(shared): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let received_at = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let prefix = url_path(&shared.base_url);
    let path = parts
        .uri
        .path()
        .strip_prefix(prefix.as_str())
        .unwrap_or(parts.uri.path());
    let fail = {
        let mut inner = shared.lock();
        let fail = inner
            .failures
            .iter_mut()
            .find(|r| {
                r.remaining > 0 && r.method == parts.method.as_str() && path_matches(&r.path, path)
            })
            .map(|r| r.remaining -= 1)
            .is_some();
        inner.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            authorization: parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            if_none_match: parts
                .headers
                .get("if-none-match")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            received_at,
        });
        fail
    };
    if fail {
        shared.bump();
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
    }
    let response = next
        .run(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(bytes),
        ))
        .await;
    shared.bump();
    response
}

fn url_path(base: &str) -> String {
    base.splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .unwrap_or_default()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .map(str::to_owned)
}

fn message(status: StatusCode, text: &str) -> Response {
    (
        status,
        axum::Json(json!({"message": text, "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

/// The `owner/repo` a request's path names, once its credentials are good for that
/// repository; as an extractor it answers GitHub's refusal (401 / 404) itself.
struct RepoAccess(String);

impl FromRequestParts<Shared> for RepoAccess {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, Response> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let full_name = format!("{}/{}", params["owner"], params["repo"]);
        if parts
            .uri
            .query()
            .is_some_and(|q| q.contains("access_token"))
        {
            return Err(message(
                StatusCode::UNAUTHORIZED,
                "Must specify access token via Authorization header.",
            ));
        }
        let token = bearer(&parts.headers);
        let inner = shared.lock();
        let Some(repo) = inner.repos.get(&full_name) else {
            return Err(message(StatusCode::NOT_FOUND, "Not Found"));
        };
        let accepted = repo.accept_token.as_deref().unwrap_or(TOKEN);
        match token.as_deref() {
            None => Err(message(StatusCode::UNAUTHORIZED, "Requires authentication")),
            Some(t) if t == accepted => Ok(Self(full_name.clone())),
            Some(t) if t == TOKEN => Err(message(StatusCode::NOT_FOUND, "Not Found")),
            Some(_) => Err(message(StatusCode::UNAUTHORIZED, "Bad credentials")),
        }
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    message(
        StatusCode::NOT_FOUND,
        &format!("Not Found ({method} {uri} is not faked)"),
    )
}

async fn get_user(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Some((login, id, _)) = oauth::token_user(&s, &headers) {
        return axum::Json(oauth::user_json(&s, &login, id)).into_response();
    }
    if bearer(&headers).as_deref() != Some(TOKEN) {
        return message(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    axum::Json(json!({"login": "chima-bot", "id": 4242, "type": "User"})).into_response()
}

async fn get_repo(
    State(shared): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    RepoAccess(full_name): RepoAccess,
    headers: HeaderMap,
) -> Response {
    let mut inner = shared.lock();
    let repo = &inner.repos[&full_name];
    let mut body = fixtures::github_example("full-repository-default-response");
    body["name"] = json!(name);
    body["full_name"] = json!(full_name);
    body["owner"]["login"] = json!(owner);
    body["default_branch"] = json!(repo.default_branch);
    body["url"] = json!(repo_url(&shared.base_url, &full_name));
    body["clone_url"] = json!(clone_url(repo));
    let answer = conditional(&headers, &body, &[]);
    if answer.status() == StatusCode::NOT_MODIFIED {
        inner
            .counters
            .entry(full_name)
            .or_default()
            .repo_not_modified += 1;
    }
    answer
}

/// A weak ETag of a JSON body, as GitHub sends them.
fn etag(body: &Value) -> String {
    use sha2::Digest as _;
    let digest = Sha256::digest(body.to_string().as_bytes());
    format!("W/\"{}\"", &hex::encode(digest)[..32])
}

/// `body` with its ETag and `extra` headers, or 304 when `If-None-Match` names that ETag.
fn conditional(headers: &HeaderMap, body: &Value, extra: &[(&'static str, String)]) -> Response {
    let tag = etag(body);
    let matches = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        axum::Json(body.clone()).into_response()
    };
    let h = response.headers_mut();
    h.insert("etag", tag.parse().unwrap());
    for (name, value) in extra {
        h.insert(*name, value.parse().unwrap());
    }
    response
}

/// GitHub's `X-RateLimit-*` headers with `remaining` of 5000 left, resetting in an hour.
fn rate_headers(remaining: u64, reset_in: Duration) -> Vec<(&'static str, String)> {
    let reset = chrono::Utc::now().timestamp() + i64::try_from(reset_in.as_secs()).unwrap_or(0);
    vec![
        ("x-ratelimit-limit", "5000".to_owned()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-used", (5000 - remaining.min(5000)).to_string()),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".to_owned()),
    ]
}

/// The answer to a list refused for the rate limit.
fn rate_limited(limit: RateLimit) -> Response {
    match limit {
        RateLimit::Exhausted { reset_in } => {
            let mut response = message(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for user ID 4242.",
            );
            let whole =
                Duration::from_secs(reset_in.as_secs() + u64::from(reset_in.subsec_nanos() > 0));
            for (name, value) in rate_headers(0, whole) {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        RateLimit::RetryAfter(wait) => {
            let mut response = message(
                StatusCode::TOO_MANY_REQUESTS,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            response
                .headers_mut()
                .insert("retry-after", wait.as_secs().to_string().parse().unwrap());
            response
        }
    }
}

async fn get_branch(
    State(shared): State<Shared>,
    Path((_, _, branch)): Path<(String, String, String)>,
    RepoAccess(full_name): RepoAccess,
) -> Response {
    let inner = shared.lock();
    match inner.repos[&full_name].branches.get(&branch) {
        Some(sha) => {
            axum::Json(json!({"name": branch, "commit": {"sha": sha}, "protected": false}))
                .into_response()
        }
        None => message(StatusCode::NOT_FOUND, "Branch not found"),
    }
}

fn clone_url(repo: &Repo) -> String {
    repo.clone_url
        .clone()
        .unwrap_or_else(|| format!("https://github.com/{}.git", repo.full_name))
}

fn resolve_ref(repo: &Repo, git_ref: &str) -> Option<String> {
    if let Some(sha) = repo.branches.get(git_ref) {
        return Some(sha.clone());
    }
    let is_sha = git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit());
    is_sha.then(|| git_ref.to_ascii_lowercase())
}

/// Checks a body against the request schema of `POST path`; a violation is recorded (the
/// fake panics on drop) and its text returned for the 422 answer.
fn schema_violation(shared: &Shared, path: &str, body: &Value) -> Option<String> {
    let errors = fixtures::check_github_request("POST", path, body).err()?;
    let text = format!("POST {path}: {}\n  body: {body}", errors.join("; "));
    shared.lock().violations.push(text.clone());
    Some(text)
}

/// Where GitHub's error answers to creating a deployment point.
const CREATE_DEPLOYMENT_DOCS: &str =
    "https://docs.github.com/rest/deployments/deployments#create-a-deployment";

fn create(
    shared: &Shared,
    full_name: &str,
    body: &Value,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let path = "/repos/{owner}/{repo}/deployments";
    if let Some(text) = schema_violation(shared, path, body) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": format!("Invalid request: {text}")}),
        );
    }
    let mut inner = shared.lock();
    let next_id = inner.next_id;
    let Some(repo) = inner.repos.get_mut(full_name) else {
        return (StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    };
    if repo.forbidden {
        return (
            StatusCode::FORBIDDEN,
            json!({"message": "Resource not accessible by personal access token",
                   "documentation_url": CREATE_DEPLOYMENT_DOCS}),
        );
    }
    let git_ref = body["ref"].as_str().unwrap_or_default().to_owned();
    let Some(sha) = resolve_ref(repo, &git_ref) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": format!("No ref found for: {git_ref}"),
                   "documentation_url": CREATE_DEPLOYMENT_DOCS}),
        );
    };
    let auto_merge = body["auto_merge"].as_bool().unwrap_or(true);
    if auto_merge && git_ref != repo.default_branch {
        if repo.conflicting.contains(&git_ref) {
            return (
                StatusCode::CONFLICT,
                json!({"message": format!("Conflict merging {} into {git_ref}.", repo.default_branch)}),
            );
        }
        if let Some(i) = repo.behind_default.iter().position(|b| *b == git_ref) {
            repo.behind_default.remove(i);
            return (
                StatusCode::ACCEPTED,
                json!({"message": format!("Auto-merged {} into {git_ref} on deployment.", repo.default_branch)}),
            );
        }
    }
    let checks = repo.checks.get(&sha).cloned().unwrap_or_default();
    let required: Vec<String> = match body.get("required_contexts") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => {
            let mut all: Vec<String> = checks.iter().map(|c| c.name.clone()).collect();
            all.dedup();
            all
        }
    };
    let failing: Vec<Value> = required
        .iter()
        .filter_map(|ctx| match checks.iter().find(|c| &c.name == ctx) {
            Some(c) if c.state == "success" => None,
            Some(c) => Some(json!({"context": ctx, "state": c.state})),
            None => Some(json!({"context": ctx, "state": "missing"})),
        })
        .collect();
    if !failing.is_empty() {
        return (
            StatusCode::CONFLICT,
            json!({"message": format!("Conflict: Commit status checks failed for {git_ref}."),
                   "errors": [{"contexts": failing, "resource": "Deployment",
                               "field": "required_contexts", "code": "invalid"}],
                   "documentation_url": CREATE_DEPLOYMENT_DOCS}),
        );
    }
    inner.next_id += 1;
    let base = shared.base_url.clone();
    let environment = body["environment"]
        .as_str()
        .unwrap_or("production")
        .to_owned();
    let mut deployment = fixtures::github_example("deployment-simple-example");
    let url = format!("{}/deployments/{next_id}", repo_url(&base, full_name));
    deployment["url"] = json!(url);
    deployment["id"] = json!(next_id);
    deployment["sha"] = json!(sha);
    deployment["ref"] = json!(git_ref);
    deployment["task"] = body.get("task").cloned().unwrap_or(json!("deploy"));
    deployment["payload"] = match body.get("payload") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(json!({})),
        Some(p) => p.clone(),
        None => json!({}),
    };
    deployment["environment"] = json!(environment);
    deployment["original_environment"] = json!(environment);
    deployment["description"] = body.get("description").cloned().unwrap_or(Value::Null);
    deployment["creator"]["login"] = json!(if token == Some(TOKEN) {
        "chima-bot"
    } else {
        "someone"
    });
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    deployment["created_at"] = json!(now);
    deployment["updated_at"] = json!(now);
    deployment["statuses_url"] = json!(format!("{url}/statuses"));
    deployment["repository_url"] = json!(repo_url(&base, full_name));
    deployment["production_environment"] = body
        .get("production_environment")
        .cloned()
        .unwrap_or(json!(environment == "production"));
    deployment["transient_environment"] = body
        .get("transient_environment")
        .cloned()
        .unwrap_or(json!(false));
    if let Err(errors) = fixtures::check_github_response("POST", path, 201, &deployment) {
        panic!("the fake built an invalid deployment: {errors:?}");
    }
    inner.deployments.push(deployment.clone());
    (StatusCode::CREATED, deployment)
}

async fn create_deployment(
    State(shared): State<Shared>,
    RepoAccess(full_name): RepoAccess,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return message(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let (status, response) = create(&shared, &full_name, &body, bearer(&headers).as_deref());
    if status == StatusCode::CREATED {
        fire_webhook(&shared, &full_name, &response).await;
    }
    (status, axum::Json(response)).into_response()
}

fn deployment_event(repo: &Repo, deployment: &Value) -> Value {
    let mut event = fixtures::json("github/webhooks/deployment/payload.json");
    event["deployment"] = deployment.clone();
    let (owner, name) = repo.full_name.split_once('/').unwrap_or(("o", "r"));
    let r = &mut event["repository"];
    r["name"] = json!(name);
    r["full_name"] = json!(repo.full_name);
    r["owner"]["login"] = json!(owner);
    r["default_branch"] = json!(repo.default_branch);
    r["clone_url"] = json!(clone_url(repo));
    r["html_url"] = json!(format!("https://github.com/{}", repo.full_name));
    event["sender"]["login"] = deployment["creator"]["login"].clone();
    event
}

async fn fire_webhook(shared: &Shared, full_name: &str, deployment: &Value) {
    let target = {
        let inner = shared.lock();
        let Some(hook) = &inner.webhook else { return };
        if inner.drop_deliveries {
            return;
        }
        let body = deployment_event(&inner.repos[full_name], deployment);
        (hook.url.clone(), hook.secret.clone(), body)
    };
    let (url, secret, body) = target;
    let id = format!("delivery-{}", deployment["id"]);
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap());
    let shared = shared.clone();
    // GitHub delivers asynchronously, after answering the API call.
    tokio::spawn(async move {
        post_delivery(&shared, &url, &secret, "deployment", &id, bytes).await;
    });
}

async fn post_delivery(
    shared: &Shared,
    url: &str,
    secret: &str,
    event: &str,
    id: &str,
    body: Bytes,
) -> u16 {
    let mut request = shared.http.post(url);
    let (headers, _) = signed_delivery(event, id, &Value::Null, secret);
    for (k, v) in headers {
        if k != "x-hub-signature-256" {
            request = request.header(k, v);
        }
    }
    request = request.header("x-hub-signature-256", sign(secret, &body));
    let status = match request.body(body.clone()).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    shared.lock().deliveries.push(Delivery {
        id: id.to_owned(),
        event: event.to_owned(),
        status,
        body,
    });
    shared.bump();
    status
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    environment: Option<String>,
    sha: Option<String>,
    task: Option<String>,
    per_page: Option<usize>,
}

async fn list_deployments(
    State(shared): State<Shared>,
    Query(q): Query<ListQuery>,
    RepoAccess(full_name): RepoAccess,
    headers: HeaderMap,
) -> Response {
    let url = repo_url(&shared.base_url, &full_name);
    let mut inner = shared.lock();
    inner
        .counters
        .entry(full_name.clone())
        .or_default()
        .list_calls += 1;
    let if_none_match = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(limit) = inner.rate_limits.pop_front() {
        let answer = rate_limited(limit);
        inner
            .counters
            .entry(full_name.clone())
            .or_default()
            .list_rate_limited += 1;
        inner.list_answers.push(ListAnswer {
            repo: full_name,
            status: answer.status().as_u16(),
            if_none_match,
            etag: None,
            at: std::time::Instant::now(),
        });
        return answer;
    }
    let matches = |d: &&Value, field: &str, want: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| d[field].as_str() == Some(w.as_str()))
    };
    let list: Vec<Value> = inner
        .deployments
        .iter()
        .rev()
        .filter(|d| d["repository_url"] == url)
        .filter(|d| matches(d, "ref", &q.git_ref))
        .filter(|d| matches(d, "environment", &q.environment))
        .filter(|d| matches(d, "sha", &q.sha))
        .filter(|d| matches(d, "task", &q.task))
        .take(q.per_page.unwrap_or(30).min(100))
        .cloned()
        .collect();
    let answer = conditional(
        &headers,
        &Value::Array(list),
        &rate_headers(4999, Duration::from_secs(3600)),
    );
    if answer.status() == StatusCode::NOT_MODIFIED {
        inner
            .counters
            .entry(full_name.clone())
            .or_default()
            .list_not_modified += 1;
    }
    inner.list_answers.push(ListAnswer {
        repo: full_name,
        status: answer.status().as_u16(),
        if_none_match,
        etag: answer
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        at: std::time::Instant::now(),
    });
    answer
}

async fn get_deployment(
    State(shared): State<Shared>,
    Path((_, _, id)): Path<(String, String, u64)>,
    RepoAccess(_): RepoAccess,
) -> Response {
    let inner = shared.lock();
    match inner.deployments.iter().find(|d| d["id"] == id) {
        Some(d) => axum::Json(d.clone()).into_response(),
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn create_status(
    State(shared): State<Shared>,
    Path((_, _, id)): Path<(String, String, u64)>,
    RepoAccess(_): RepoAccess,
    body: Bytes,
) -> Response {
    {
        let mut inner = shared.lock();
        if inner.fail_status_posts > 0 {
            inner.fail_status_posts -= 1;
            return message(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
        }
        if inner.rate_limited_status_posts > 0 {
            inner.rate_limited_status_posts -= 1;
            let mut response = message(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.",
            );
            response.headers_mut().insert(
                "retry-after",
                inner.rate_limit_retry_after.to_string().parse().unwrap(),
            );
            return response;
        }
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return message(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let path = "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses";
    if let Some(text) = schema_violation(&shared, path, &body) {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Invalid request: {text}"),
        );
    }
    let mut inner = shared.lock();
    let Some(deployment) = inner.deployments.iter().find(|d| d["id"] == id).cloned() else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let status = push_status(&mut inner, &deployment, &body);
    if inner.lost_status_answers > 0 {
        inner.lost_status_answers -= 1;
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
    }
    (StatusCode::CREATED, axum::Json(status)).into_response()
}

/// Records a status (a create request's `body`) of `deployment`; returns it as GitHub does.
fn push_status(inner: &mut Inner, deployment: &Value, body: &Value) -> Value {
    let id = deployment["id"].as_u64().expect("a deployment id");
    let status_id = inner.next_id;
    inner.next_id += 1;
    let mut status = fixtures::github_example("deployment-status");
    let log_url = body
        .get("log_url")
        .or(body.get("target_url"))
        .cloned()
        .unwrap_or(json!(""));
    status["id"] = json!(status_id);
    status["state"] = body["state"].clone();
    status["description"] = body.get("description").cloned().unwrap_or(json!(""));
    status["environment"] = body
        .get("environment")
        .cloned()
        .unwrap_or(deployment["environment"].clone());
    status["log_url"] = log_url.clone();
    status["target_url"] = log_url;
    status["environment_url"] = body.get("environment_url").cloned().unwrap_or(json!(""));
    status["deployment_url"] = deployment["url"].clone();
    status["repository_url"] = deployment["repository_url"].clone();
    status["url"] = json!(format!(
        "{}/statuses/{status_id}",
        deployment["url"].as_str().unwrap_or_default()
    ));
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    status["created_at"] = json!(now);
    status["updated_at"] = json!(now);
    inner.statuses.entry(id).or_default().push(status.clone());
    status
}

#[derive(serde::Deserialize)]
struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn list_statuses(
    State(shared): State<Shared>,
    Path((_, _, id)): Path<(String, String, u64)>,
    Query(q): Query<PageQuery>,
    RepoAccess(_): RepoAccess,
) -> Response {
    let inner = shared.lock();
    if !inner.deployments.iter().any(|d| d["id"] == id) {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    let mut list = inner.statuses.get(&id).cloned().unwrap_or_default();
    list.reverse();
    list.truncate(q.per_page.unwrap_or(30).min(100));
    axum::Json(list).into_response()
}

async fn commit_checks(
    State(shared): State<Shared>,
    Path((_, _, rest)): Path<(String, String, String)>,
    Query(q): Query<PageQuery>,
    RepoAccess(full_name): RepoAccess,
) -> Response {
    if let Some(git_ref) = rest.strip_suffix("/pulls") {
        return pulls::commit_pulls(&shared, &full_name, git_ref, &q);
    }
    let (git_ref, kind) = match (
        rest.strip_suffix("/status"),
        rest.strip_suffix("/check-runs"),
    ) {
        (Some(r), _) => (r.to_owned(), "status"),
        (_, Some(r)) => (r.to_owned(), "check-runs"),
        _ => return message(StatusCode::NOT_FOUND, "Not Found"),
    };
    let inner = shared.lock();
    let repo = &inner.repos[&full_name];
    let Some(sha) = resolve_ref(repo, &git_ref) else {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No commit found for SHA: {git_ref}"),
        );
    };
    let checks = repo.checks.get(&sha).cloned().unwrap_or_default();
    if kind == "status" {
        let statuses: Vec<&Check> = checks.iter().filter(|c| !c.check_run).collect();
        let state = if statuses.is_empty() || statuses.iter().any(|c| c.state == "pending") {
            "pending"
        } else if statuses.iter().all(|c| c.state == "success") {
            "success"
        } else {
            "failure"
        };
        let mut body = fixtures::github_example("combined-commit-status");
        let template = body["statuses"][0].clone();
        body["state"] = json!(state);
        body["sha"] = json!(sha);
        body["total_count"] = json!(statuses.len());
        body["statuses"] = Value::Array(
            statuses
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut s = template.clone();
                    s["id"] = json!(i + 1);
                    s["context"] = json!(c.name);
                    s["state"] = json!(c.state);
                    s["target_url"] = json!(c.url);
                    s["description"] = json!(format!("{} is {}", c.name, c.state));
                    s
                })
                .collect(),
        );
        return axum::Json(body).into_response();
    }
    let mut body = fixtures::github_example("check-run-paginated");
    let template = body["check_runs"][0].clone();
    let runs: Vec<Value> = checks
        .iter()
        .filter(|c| c.check_run)
        .enumerate()
        .map(|(i, c)| {
            let mut r = template.clone();
            r["id"] = json!(i + 1);
            r["name"] = json!(c.name);
            r["head_sha"] = json!(sha);
            r["html_url"] = json!(c.url);
            if c.state == "pending" {
                r["status"] = json!("in_progress");
                r["conclusion"] = Value::Null;
                r["completed_at"] = Value::Null;
            } else {
                r["status"] = json!("completed");
                r["conclusion"] = json!(c.state);
            }
            r
        })
        .collect();
    body["total_count"] = json!(runs.len());
    body["check_runs"] = Value::Array(runs);
    axum::Json(body).into_response()
}

async fn tarball(
    Path((_, _, git_ref)): Path<(String, String, String)>,
    RepoAccess(full_name): RepoAccess,
) -> Response {
    let location = format!(
        "https://codeload.github.com/{full_name}/legacy.tar.gz/{git_ref}?token=fake-signed"
    );
    (StatusCode::FOUND, [("location", location)]).into_response()
}

/// A fresh RSA private key (PEM) for a GitHub App, made with `openssl genrsa`.
pub fn app_private_key() -> String {
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .stderr(std::process::Stdio::null())
        .output()
        .expect("openssl genrsa runs");
    assert!(out.status.success(), "openssl genrsa failed");
    String::from_utf8(out.stdout).expect("PEM is text")
}

/// The installation every repository of the fake belongs to, for a GitHub App.
pub const INSTALLATION_ID: u64 = 4242;

/// The installation access token the fake mints for [`INSTALLATION_ID`].
pub const INSTALLATION_TOKEN: &str = "ghs_test_installation_token_0123";

/// True when `headers` carry an App's JWT (`Bearer <header>.<claims>.<signature>`): the fake
/// does not check the signature, only that it is not a token.
fn app_jwt(headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|t| t.split('.').count() == 3 && t.starts_with("ey"))
}

/// `GET /repos/{owner}/{repo}/installation`: the App's installation for the repository.
async fn repo_installation(
    State(shared): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !app_jwt(&headers) {
        return message(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    let full_name = format!("{owner}/{repo}");
    if !shared.lock().repos.contains_key(&full_name) {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    let account =
        fixtures::json("github/webhooks/deployment/payload.json")["deployment"]["creator"].clone();
    axum::Json(json!({
        "id": INSTALLATION_ID,
        "account": account,
        "access_tokens_url": format!("{}/app/installations/{INSTALLATION_ID}/access_tokens", shared.base_url),
        "repositories_url": format!("{}/installation/repositories", shared.base_url),
        "html_url": format!("https://github.com/organizations/{owner}/settings/installations/{INSTALLATION_ID}"),
        "app_id": 7,
        "target_id": 1,
        "target_type": "Organization",
        "permissions": {"contents": "read", "deployments": "write", "statuses": "read"},
        "events": ["deployment"],
        "single_file_name": null,
        "repository_selection": "selected",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z"
    }))
    .into_response()
}

/// `POST /app/installations/{id}/access_tokens`: an installation token, valid for an hour.
async fn installation_access_token(Path(id): Path<u64>, headers: HeaderMap) -> Response {
    if !app_jwt(&headers) {
        return message(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    if id != INSTALLATION_ID {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "token": INSTALLATION_TOKEN,
            "expires_at": expires,
            "permissions": {"contents": "read", "deployments": "write", "statuses": "read"},
            "repository_selection": "selected"
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_githubs_documented_vector() {
        assert_eq!(
            sign("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn failure_patterns_match_one_segment_per_star() {
        assert!(path_matches(
            "/repos/o/r/issues/*/labels",
            "/repos/o/r/issues/12/labels"
        ));
        assert!(!path_matches(
            "/repos/o/r/issues/*/labels",
            "/repos/o/r/issues/12/comments"
        ));
        assert!(!path_matches(
            "/repos/o/r/issues/*",
            "/repos/o/r/issues/12/labels"
        ));
        assert!(path_matches("/user", "/user"));
    }

    #[test]
    fn url_paths_are_extracted_from_base_urls() {
        assert_eq!(url_path("http://127.0.0.1:1234/api/v3"), "/api/v3");
        assert_eq!(url_path("http://127.0.0.1:1234"), "");
    }
}
