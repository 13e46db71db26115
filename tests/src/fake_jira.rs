//! A stateful fake of the Jira REST API (v2), on loopback: issues with a status and the
//! transitions their workflow offers, comments, and a record of every request.
//!
//! It checks requests against Jira's documented shapes (the Jira Server/Data Center and Cloud
//! REST v2 reference: "Get transitions", "Do transition", "Add comment", "Get issue"): HTTP
//! basic auth with the expected user and token (401 with Jira's error body otherwise, as
//! Jira answers), `Content-Type: application/json` on POSTs, a transition body of
//! `{"transition": {"id": "<id>"}}` (plus the optional `fields`, `update`, `historyMetadata`,
//! `properties`), a comment body of `{"body": "<text>"}` (plus the optional `visibility`,
//! `properties`). A request that breaks those shapes, or goes to a path Jira does not have,
//! is answered 400/404 and recorded, and the fake panics on drop if any were recorded.
//! [`FakeJira::fail_next`] makes requests answer 503 for the retry tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::watch;

/// The account the fake accepts.
pub const USER: &str = "chima-bot@example.com";

/// The API token the fake accepts.
pub const TOKEN: &str = "jira_test_token_0123456789";

/// The workflow every issue gets unless told otherwise: `(id, name, status it leads to)`.
pub const WORKFLOW: [(&str, &str, &str); 3] = [
    ("11", "Start Progress", "In Progress"),
    ("21", "Released", "Released"),
    ("31", "Done", "Done"),
];

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct JiraRequest {
    /// HTTP method.
    pub method: String,
    /// Path below the site's base.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body, or `Null`.
    pub body: Value,
}

#[derive(Debug, Clone)]
struct Issue {
    id: u64,
    status: String,
    workflow: Vec<(String, String, String)>,
    comments: Vec<String>,
    transitions_done: Vec<String>,
}

#[derive(Debug)]
struct FailRule {
    method: String,
    path: String,
    remaining: u32,
}

#[derive(Debug, Default)]
struct Inner {
    issues: HashMap<String, Issue>,
    requests: Vec<JiraRequest>,
    violations: Vec<String>,
    failures: Vec<FailRule>,
    next_id: u64,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<watch::Sender<u64>>,
    base_url: String,
    prefix: String,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn violation(&self, text: String) {
        self.lock().violations.push(text);
    }
}

/// The running fake; dropping it stops the server.
pub struct FakeJira {
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeJira {
    fn drop(&mut self) {
        self.server.abort();
        let violations = std::mem::take(&mut self.shared.lock().violations);
        if !violations.is_empty() && !std::thread::panicking() {
            panic!(
                "requests to the fake Jira broke Jira's documented shapes:\n{}",
                violations.join("\n")
            );
        }
    }
}

/// Jira's error body.
fn error(status: StatusCode, messages: &[&str]) -> Response {
    (
        status,
        axum::Json(json!({"errorMessages": messages, "errors": {}})),
    )
        .into_response()
}

/// True when `path` matches `pattern`, where a `*` segment matches any one segment.
fn path_matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| *a == "*" || a == b)
}

impl FakeJira {
    /// Starts the fake at the root of a loopback port (like a Jira Cloud site).
    pub async fn start() -> Self {
        Self::start_with_prefix("").await
    }

    /// Starts the fake under a context path, e.g. `/jira` as Jira Server installs often are.
    pub async fn start_with_prefix(prefix: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (changed, _) = watch::channel(0);
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                next_id: 10_000,
                ..Inner::default()
            })),
            changed: Arc::new(changed),
            base_url: format!("http://{addr}{prefix}"),
            prefix: prefix.to_owned(),
        };
        let api = Router::new()
            .route("/rest/api/2/issue/{key}", get(get_issue))
            .route(
                "/rest/api/2/issue/{key}/transitions",
                get(get_transitions).post(do_transition),
            )
            .route(
                "/rest/api/2/issue/{key}/comment",
                axum::routing::post(add_comment),
            )
            .fallback(unknown_path);
        let app = if prefix.is_empty() {
            api
        } else {
            Router::new().nest(prefix, api)
        }
        .fallback(unknown_path)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { shared, server }
    }

    /// The site's base URL, to give as `JIRA_URL`.
    pub fn url(&self) -> &str {
        &self.shared.base_url
    }

    /// Adds an issue in `status` with the default [`WORKFLOW`].
    pub fn add_issue(&self, key: &str, status: &str) {
        let workflow = WORKFLOW
            .iter()
            .map(|(id, name, to)| ((*id).to_owned(), (*name).to_owned(), (*to).to_owned()))
            .collect();
        self.add_issue_with(key, status, workflow);
    }

    /// Adds an issue whose workflow offers these `(id, name, status it leads to)` transitions.
    pub fn add_issue_with(&self, key: &str, status: &str, workflow: Vec<(String, String, String)>) {
        let mut inner = self.shared.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.issues.insert(
            key.to_owned(),
            Issue {
                id,
                status: status.to_owned(),
                workflow,
                comments: Vec::new(),
                transitions_done: Vec::new(),
            },
        );
    }

    /// An issue's status now.
    pub fn status(&self, key: &str) -> String {
        self.shared.lock().issues[key].status.clone()
    }

    /// The names of the transitions done on an issue, oldest first.
    pub fn transitions_done(&self, key: &str) -> Vec<String> {
        self.shared.lock().issues[key].transitions_done.clone()
    }

    /// The comments added to an issue, oldest first.
    pub fn comments(&self, key: &str) -> Vec<String> {
        self.shared.lock().issues[key].comments.clone()
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<JiraRequest> {
        self.shared.lock().requests.clone()
    }

    /// The next `n` requests of `method` to `path` (below the site's base, e.g.
    /// `/rest/api/2/issue/*/comment`, `*` standing for one segment) answer 503 without
    /// changing anything; they are still listed by [`FakeJira::requests`].
    pub fn fail_next(&self, method: &str, path: &str, n: u32) {
        self.shared.lock().failures.push(FailRule {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            remaining: n,
        });
    }

    /// Waits until `check` holds for the fake's state, or panics after `timeout`.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&FakeJira) -> Option<T>,
    ) -> T {
        crate::wait::on_change(&self.shared.changed, timeout, what, || check(self)).await
    }
}

/// The `Authorization` header Jira expects for [`USER`] and [`TOKEN`].
pub fn basic_auth() -> String {
    let raw = format!("{USER}:{TOKEN}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Records every request, answers 401 without the right credentials, 415 for a POST that is
/// not JSON, and 503 when told to fail.
async fn guard(
    State(shared): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path()
        .strip_prefix(shared.prefix.as_str())
        .unwrap_or(parts.uri.path())
        .to_owned();
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fail = {
        let mut inner = shared.lock();
        inner.requests.push(JiraRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            query: parts.uri.query().map(str::to_owned),
            authorization: authorization.clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        });
        inner
            .failures
            .iter_mut()
            .find(|r| {
                r.remaining > 0 && r.method == parts.method.as_str() && path_matches(&r.path, &path)
            })
            .map(|r| r.remaining -= 1)
            .is_some()
    };
    let answer = if authorization.as_deref() != Some(basic_auth().as_str()) {
        error(
            StatusCode::UNAUTHORIZED,
            &["You are not authenticated. Authentication required to perform this operation."],
        )
    } else if parts.method == Method::POST
        && !parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
    {
        shared.violation(format!(
            "POST {path} without Content-Type: application/json"
        ));
        error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &["Unsupported Media Type"],
        )
    } else if fail {
        error(StatusCode::SERVICE_UNAVAILABLE, &["Service Unavailable"])
    } else {
        next.run(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(bytes),
        ))
        .await
    };
    shared.changed.send_modify(|n| *n += 1);
    answer
}

async fn unknown_path(State(shared): State<Shared>, method: Method, uri: Uri) -> Response {
    shared.violation(format!("{method} {uri}: no such Jira REST path"));
    error(StatusCode::NOT_FOUND, &["null for uri: not faked"])
}

fn no_issue() -> Response {
    error(
        StatusCode::NOT_FOUND,
        &["Issue does not exist or you do not have permission to see it."],
    )
}

fn status_json(shared: &Shared, name: &str) -> Value {
    let id = name
        .bytes()
        .fold(1u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % 100_000;
    json!({
        "self": format!("{}/rest/api/2/status/{id}", shared.base_url),
        "description": "",
        "iconUrl": format!("{}/images/icons/statuses/generic.png", shared.base_url),
        "name": name,
        "id": id.to_string(),
        "statusCategory": {
            "self": format!("{}/rest/api/2/statuscategory/4", shared.base_url),
            "id": 4, "key": "indeterminate", "colorName": "yellow", "name": "In Progress"
        }
    })
}

#[derive(serde::Deserialize)]
struct IssueQuery {
    fields: Option<String>,
}

/// `GET /rest/api/2/issue/{key}` (with `fields=status`, the only field chima reads).
async fn get_issue(
    State(shared): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<IssueQuery>,
) -> Response {
    let Some(issue) = shared.lock().issues.get(&key).cloned() else {
        return no_issue();
    };
    if q.fields.as_deref() != Some("status") {
        shared.violation(format!(
            "GET issue {key} without fields=status (the fake serves only the status field)"
        ));
    }
    axum::Json(json!({
        "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
        "id": issue.id.to_string(),
        "self": format!("{}/rest/api/2/issue/{}", shared.base_url, issue.id),
        "key": key,
        "fields": {"status": status_json(&shared, &issue.status)}
    }))
    .into_response()
}

/// The transitions an issue offers now: its workflow, less those into its current status.
fn offered(issue: &Issue) -> Vec<&(String, String, String)> {
    issue
        .workflow
        .iter()
        .filter(|(_, _, to)| *to != issue.status)
        .collect()
}

/// `GET /rest/api/2/issue/{key}/transitions`.
async fn get_transitions(State(shared): State<Shared>, Path(key): Path<String>) -> Response {
    let Some(issue) = shared.lock().issues.get(&key).cloned() else {
        return no_issue();
    };
    let transitions: Vec<Value> = offered(&issue)
        .into_iter()
        .map(|(id, name, to)| {
            json!({
                "id": id, "name": name, "to": status_json(&shared, to),
                "hasScreen": false, "isGlobal": true, "isInitial": false,
                "isAvailable": true, "isConditional": false, "isLooped": false
            })
        })
        .collect();
    axum::Json(json!({"expand": "transitions", "transitions": transitions})).into_response()
}

/// Checks a JSON body: an object whose keys are among `allowed`, with `required` present;
/// records a violation and answers 400 otherwise.
fn checked_body(
    shared: &Shared,
    what: &str,
    body: &Bytes,
    allowed: &[&str],
    valid: impl Fn(&serde_json::Map<String, Value>) -> bool,
) -> Result<serde_json::Map<String, Value>, Box<Response>> {
    let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_slice(body).ok();
    match parsed {
        Some(map) if map.keys().all(|k| allowed.contains(&k.as_str())) && valid(&map) => Ok(map),
        _ => {
            shared.violation(format!(
                "{what}: body {} is not Jira's documented shape",
                String::from_utf8_lossy(body)
            ));
            Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                &["Can not deserialize instance of the request body"],
            )))
        }
    }
}

/// `POST /rest/api/2/issue/{key}/transitions` with `{"transition": {"id": "…"}}`: 204.
async fn do_transition(
    State(shared): State<Shared>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let map = match checked_body(
        &shared,
        &format!("POST transitions of {key}"),
        &body,
        &[
            "transition",
            "fields",
            "update",
            "historyMetadata",
            "properties",
        ],
        |m| {
            m.get("transition")
                .and_then(|t| t.get("id"))
                .is_some_and(Value::is_string)
        },
    ) {
        Ok(map) => map,
        Err(answer) => return *answer,
    };
    let id = map["transition"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut inner = shared.lock();
    let Some(issue) = inner.issues.get_mut(&key) else {
        return no_issue();
    };
    let Some((_, name, to)) = offered(issue)
        .into_iter()
        .find(|(i, _, _)| *i == id)
        .cloned()
    else {
        return error(
            StatusCode::BAD_REQUEST,
            &[&format!(
                "Transition id '{id}' is not valid for this issue."
            )],
        );
    };
    issue.status = to;
    issue.transitions_done.push(name);
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /rest/api/2/issue/{key}/comment` with `{"body": "…"}`: 201 with the comment.
async fn add_comment(
    State(shared): State<Shared>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let map = match checked_body(
        &shared,
        &format!("POST comment on {key}"),
        &body,
        &["body", "visibility", "properties"],
        |m| m.get("body").is_some_and(Value::is_string),
    ) {
        Ok(map) => map,
        Err(answer) => return *answer,
    };
    let text = map["body"].as_str().unwrap_or_default().to_owned();
    let mut inner = shared.lock();
    inner.next_id += 1;
    let id = inner.next_id;
    let Some(issue) = inner.issues.get_mut(&key) else {
        return no_issue();
    };
    issue.comments.push(text.clone());
    let issue_id = issue.id;
    drop(inner);
    let author = json!({
        "self": format!("{}/rest/api/2/user?username=chima-bot", shared.base_url),
        "name": "chima-bot", "displayName": "chima", "active": true
    });
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3f%z")
        .to_string();
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "self": format!("{}/rest/api/2/issue/{issue_id}/comment/{id}", shared.base_url),
            "id": id.to_string(),
            "author": author, "updateAuthor": author,
            "body": text, "created": now, "updated": now
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_user_colon_token_in_base64() {
        let encoded = basic_auth();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(raw, format!("{USER}:{TOKEN}").as_bytes());
    }

    #[test]
    fn failure_patterns_match_one_segment_per_star() {
        assert!(path_matches(
            "/rest/api/2/issue/*/comment",
            "/rest/api/2/issue/PROJ-1/comment"
        ));
        assert!(!path_matches(
            "/rest/api/2/issue/*/comment",
            "/rest/api/2/issue/PROJ-1/transitions"
        ));
    }
}
