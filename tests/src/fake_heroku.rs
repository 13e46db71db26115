//! A fake Heroku Platform API (builds only) that speaks the real wire format: it checks the
//! `Accept` and `Authorization` headers, validates the `POST /apps/{app}/builds` body against
//! the Create link's schema in `../shared/fixtures/heroku/build-schema.json` (Heroku's
//! `strictProperties` enforced), answers with build objects that it validates against the
//! build schema itself, runs each build in the background, and streams its output at
//! `output_stream_url` (text/plain, following the build until it ends).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::fixtures;

/// The API key the fake accepts.
pub const API_KEY: &str = "hrku-01234567-test-key-89abcdef";

/// The media type every request must ask for.
pub const ACCEPT: &str = "application/vnd.heroku+json; version=3";

/// How a build on an app ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildResult {
    /// `succeeded`, with a release.
    Succeeded,
    /// `failed`.
    Failed,
    /// Stays `pending` until cancelled.
    Never,
}

/// What builds of an app print and how they end.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    /// Output lines, in order.
    pub lines: Vec<String>,
    /// The end.
    pub result: BuildResult,
}

impl Default for BuildPlan {
    fn default() -> Self {
        Self {
            lines: vec![
                "-----> Building on the Heroku-22 stack".into(),
                "-----> Using buildpack: heroku/ruby".into(),
                "-----> Compressing...".into(),
                "       Done: 42.1M".into(),
                "-----> Launching...".into(),
                "       Released v7".into(),
            ],
            result: BuildResult::Succeeded,
        }
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// JSON body or `Null`.
    pub body: Value,
}

#[derive(Debug)]
struct Build {
    app: String,
    json: Value,
    output: Vec<String>,
    done: bool,
    cancelled: bool,
}

#[derive(Debug, Default)]
struct Inner {
    apps: HashMap<String, (String, BuildPlan)>,
    forbidden: Vec<String>,
    refusals: HashMap<String, String>,
    cut_once: Option<usize>,
    builds: HashMap<String, Build>,
    requests: Vec<Recorded>,
    problems: Vec<String>,
    next: u64,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changed: watch::Sender<u64>,
    base: String,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

/// The running fake; stops when dropped.
pub struct FakeHeroku {
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeHeroku {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn uuid(n: u64) -> String {
    format!("01234567-89ab-cdef-0123-{n:012x}")
}

fn schema_doc() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| fixtures::json("heroku/build-schema.json"))
}

/// Heroku's `strictProperties: true` means no other properties: say so in JSON Schema.
fn strict(schema: Value) -> Value {
    match schema {
        Value::Object(mut m) => {
            // draft-04 hyper-schema is Heroku's meta-schema; the validator knows the plain
            // drafts, and the keywords used here mean the same in them.
            m.remove("$schema");
            for v in m.values_mut() {
                *v = strict(std::mem::take(v));
            }
            if m.get("strictProperties") == Some(&Value::Bool(true)) && m.contains_key("properties")
            {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(m)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(strict).collect()),
        other => other,
    }
}

fn validate(schema_pointer: &str, instance: &Value) -> Result<(), Vec<String>> {
    let doc = schema_doc();
    let schema = doc
        .pointer(schema_pointer)
        .unwrap_or_else(|| panic!("no {schema_pointer} in build-schema.json"));
    // The resource's hyper-schema links point back at the resource itself; they describe
    // endpoints, not the instance, so they are left out before inlining.
    let mut schema = schema.clone();
    if let Some(m) = schema.as_object_mut() {
        m.remove("links");
        m.remove("definitions");
    }
    let compiled = strict(fixtures::inline_refs(doc, &schema, 0));
    let validator = jsonschema::validator_for(&compiled).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The Create link's request schema.
const CREATE_SCHEMA: &str = "/definitions/build/links/0/schema";
/// The build resource.
const BUILD_SCHEMA: &str = "/definitions/build";

fn error(status: StatusCode, id: &str, message: &str) -> Response {
    (status, axum::Json(json!({"id": id, "message": message}))).into_response()
}

impl FakeHeroku {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (changed, _) = watch::channel(0);
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner::default())),
            changed,
            base,
        };
        let app = Router::new()
            .route("/apps/{app}/builds", post(create_build))
            .route(
                "/apps/{app}/builds/{id}",
                get(get_build).delete(cancel_build),
            )
            .route("/streams/{id}", get(stream))
            .fallback(|| async {
                error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "The requested API endpoint was not found.",
                )
            })
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { shared, server }
    }

    /// The base URL to give as `HEROKU_API_URL`.
    pub fn url(&self) -> &str {
        &self.shared.base
    }

    /// faseng's provider settings against this fake: its URL and [`API_KEY`] on top of
    /// `base`.
    pub fn provider_config(
        &self,
        base: faseng::providers::ProviderConfig,
    ) -> faseng::providers::ProviderConfig {
        faseng::providers::ProviderConfig {
            heroku_api_key: Some(deploy_core::Secret::new(API_KEY)),
            heroku_api_url: self.url().to_owned(),
            ..base
        }
    }

    /// Adds an app whose builds follow `plan`.
    pub fn add_app(&self, name: &str, plan: BuildPlan) {
        let mut inner = self.shared.lock();
        inner.next += 1;
        let id = uuid(inner.next);
        inner.apps.insert(name.to_owned(), (id, plan));
    }

    /// Makes the key unable to access an app (403).
    pub fn forbid(&self, name: &str) {
        self.shared.lock().forbidden.push(name.to_owned());
    }

    /// Makes build requests for an app fail validation on Heroku's side (422, with `message`).
    pub fn refuse_builds(&self, name: &str, message: &str) {
        self.shared
            .lock()
            .refusals
            .insert(name.to_owned(), message.to_owned());
    }

    /// Makes the next output stream connection drop (a broken connection, not a clean end)
    /// after `lines` lines.
    pub fn cut_next_stream_after(&self, lines: usize) {
        self.shared.lock().cut_once = Some(lines);
    }

    /// Every request, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Every wire-format problem seen (headers, bodies, the fake's own answers).
    pub fn problems(&self) -> Vec<String> {
        self.shared.lock().problems.clone()
    }

    /// The builds created, as JSON, in creation order.
    pub fn builds(&self) -> Vec<Value> {
        let inner = self.shared.lock();
        let mut b: Vec<&Build> = inner.builds.values().collect();
        b.sort_by_key(|b| b.json["id"].as_str().unwrap_or_default().to_owned());
        b.into_iter().map(|b| b.json.clone()).collect()
    }

    /// True when a build was cancelled through the API.
    pub fn cancelled(&self, build_id: &str) -> bool {
        self.shared
            .lock()
            .builds
            .get(build_id)
            .is_some_and(|b| b.cancelled)
    }
}

fn record(shared: &Shared, method: &str, path: &str, headers: &HeaderMap, body: Value) {
    shared.lock().requests.push(Recorded {
        method: method.to_owned(),
        path: path.to_owned(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    });
}

/// Header checks shared by the API routes; `Err` is Heroku's answer.
fn check_headers(shared: &Shared, headers: &HeaderMap, app: &str) -> Result<(), Box<Response>> {
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept != ACCEPT {
        shared
            .lock()
            .problems
            .push(format!("Accept was {accept:?}, not {ACCEPT:?}"));
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Please specify a version along with Heroku's API MIME type.",
        )));
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {API_KEY}") {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid credentials provided.",
        )));
    }
    let inner = shared.lock();
    if !inner.apps.contains_key(app) {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Couldn't find that app.",
        )));
    }
    if inner.forbidden.iter().any(|a| a == app) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!("You do not have access to the app {app}."),
        )));
    }
    Ok(())
}

fn answer_build(shared: &Shared, json: &Value, status: StatusCode) -> Response {
    if let Err(e) = validate(BUILD_SCHEMA, json) {
        shared.lock().problems.push(format!(
            "the fake's own build does not match the schema: {e:?}"
        ));
    }
    (status, axum::Json(json.clone())).into_response()
}

async fn create_build(
    State(shared): State<Shared>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(
        &shared,
        "POST",
        &format!("/apps/{app}/builds"),
        &headers,
        parsed.clone(),
    );
    if let Err(r) = check_headers(&shared, &headers, &app) {
        return *r;
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        shared
            .lock()
            .problems
            .push(format!("Content-Type was {content_type:?}"));
    }
    if let Err(errors) = validate(CREATE_SCHEMA, &parsed) {
        shared.lock().problems.push(format!(
            "build body does not match the Create schema: {errors:?}"
        ));
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_params",
            &errors.join("; "),
        );
    }
    if let Some(message) = shared.lock().refusals.get(&app).cloned() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_params", &message);
    }
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (json, plan, id) = {
        let mut inner = shared.lock();
        inner.next += 1;
        let id = uuid(inner.next);
        inner.next += 1;
        let user = uuid(inner.next);
        let (app_id, plan) = inner.apps[&app].clone();
        let blob = &parsed["source_blob"];
        let json = json!({
            "app": {"id": app_id},
            "buildpacks": null,
            "created_at": now,
            "id": id,
            "output_stream_url": format!("{}/streams/{id}", shared.base),
            "release": null,
            "slug": null,
            "source_blob": {
                "checksum": null,
                "url": blob["url"],
                "version": blob.get("version").cloned().unwrap_or(Value::Null),
                "version_description": blob.get("version_description").cloned().unwrap_or(Value::Null),
            },
            "stack": "heroku-22",
            "status": "pending",
            "updated_at": now,
            "user": {"id": user, "email": "deployer@example.com"},
        });
        inner.builds.insert(
            id.clone(),
            Build {
                app: app.clone(),
                json: json.clone(),
                output: Vec::new(),
                done: false,
                cancelled: false,
            },
        );
        (json, plan, id)
    };
    tokio::spawn(run_build(shared.clone(), id, plan));
    answer_build(&shared, &json, StatusCode::CREATED)
}

/// The build "runs": its lines appear one by one, then it ends as planned.
async fn run_build(shared: Shared, id: String, plan: BuildPlan) {
    for line in plan.lines {
        // The pace of a build's output, not a wait.
        tokio::time::sleep(Duration::from_millis(15)).await;
        if let Some(b) = shared.lock().builds.get_mut(&id) {
            if b.done {
                return;
            }
            b.output.push(line);
        }
        shared.bump();
    }
    let status = match plan.result {
        BuildResult::Succeeded => "succeeded",
        BuildResult::Failed => "failed",
        BuildResult::Never => return,
    };
    let mut inner = shared.lock();
    inner.next += 1;
    let release = uuid(inner.next);
    if let Some(b) = inner.builds.get_mut(&id) {
        if b.done {
            return;
        }
        b.json["status"] = json!(status);
        if status == "succeeded" {
            b.json["release"] = json!({"id": release});
        }
        b.done = true;
    }
    drop(inner);
    shared.bump();
}

async fn get_build(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    record(
        &shared,
        "GET",
        &format!("/apps/{app}/builds/{id}"),
        &headers,
        Value::Null,
    );
    if let Err(r) = check_headers(&shared, &headers, &app) {
        return *r;
    }
    let json = shared
        .lock()
        .builds
        .get(&id)
        .filter(|b| b.app == app)
        .map(|b| b.json.clone());
    match json {
        Some(j) => answer_build(&shared, &j, StatusCode::OK),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Couldn't find that build.",
        ),
    }
}

async fn cancel_build(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    record(
        &shared,
        "DELETE",
        &format!("/apps/{app}/builds/{id}"),
        &headers,
        Value::Null,
    );
    if let Err(r) = check_headers(&shared, &headers, &app) {
        return *r;
    }
    let json = {
        let mut inner = shared.lock();
        inner.builds.get_mut(&id).filter(|b| b.app == app).map(|b| {
            b.cancelled = true;
            b.done = true;
            b.json["status"] = json!("failed");
            b.json.clone()
        })
    };
    shared.bump();
    match json {
        Some(j) => answer_build(&shared, &j, StatusCode::OK),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Couldn't find that build.",
        ),
    }
}

/// `text/plain` output of a build: what it printed so far, then each new line, until it ends.
/// `Range: bytes=<n>-` resumes at byte n (206), as Heroku's stream does.
async fn stream(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(
        &shared,
        "GET",
        &format!("/streams/{id}"),
        &headers,
        Value::Null,
    );
    if headers.contains_key("authorization") {
        shared
            .lock()
            .problems
            .push("the API key was sent to the output stream".to_owned());
    }
    if !shared.lock().builds.contains_key(&id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let start: Option<usize> = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok());
    let cut = shared.lock().cut_once.take();
    let rx = shared.changed.subscribe();
    // (shared, id, bytes sent, lines sent on this connection, change feed, cut after lines)
    let state = (shared, id, start.unwrap_or(0), 0usize, rx, cut);
    let body = futures::stream::unfold(
        state,
        |(shared, id, sent, lines_sent, mut rx, cut)| async move {
            // After the injected break the body ends (hyper drops the connection anyway).
            const BROKEN: usize = usize::MAX;
            if cut == Some(BROKEN) {
                return None;
            }
            if cut.is_some_and(|c| lines_sent >= c) {
                let error = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut");
                return Some((Err(error), (shared, id, sent, lines_sent, rx, Some(BROKEN))));
            }
            loop {
                let (text, done) = {
                    let inner = shared.lock();
                    let b = inner.builds.get(&id)?;
                    let text: String = b.output.iter().map(|l| format!("{l}\n")).collect();
                    (text, b.done)
                };
                if sent < text.len() {
                    let end = text[sent..].find('\n').map_or(text.len(), |i| sent + i + 1);
                    let chunk = text[sent..end].to_owned();
                    return Some((
                        Ok::<_, std::io::Error>(chunk),
                        (shared, id, end, lines_sent + 1, rx, cut),
                    ));
                }
                if done {
                    return None;
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    let status = if start.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_schema_is_enforced_with_strict_properties() {
        assert!(
            validate(
                CREATE_SCHEMA,
                &json!({"source_blob": {"url": "https://x", "version": "abc"}})
            )
            .is_ok()
        );
        assert!(validate(CREATE_SCHEMA, &json!({})).is_err());
        assert!(validate(CREATE_SCHEMA, &json!({"source_blob": {"url": 1}})).is_err());
        assert!(
            validate(
                CREATE_SCHEMA,
                &json!({"source_blob": {"url": "https://x", "sha": "abc"}})
            )
            .is_err()
        );
    }
}
