//! HTTP: the webhook endpoint (transport → domain event → intake), health, metrics, the
//! log pages and the dashboard. `/healthz` and `/metrics` are open; a run's page, plain log
//! and event stream answer only under the run's signed link (see [`crate::links`]), and 404
//! otherwise; the dashboard only behind its sign-in gate ([`auth`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use deploy_core::{Apps, Clock, RepoName, RunKey, Secret};
use futures::{Stream, StreamExt as _};

use crate::intake::{Intake, IntakeOutcome};
use crate::links::{self, LinkKey};
use crate::messages;
use crate::metrics::Metrics;
use crate::store::{RunRecord, Store};
use crate::stream_slots::{Refused, StreamSlot, StreamSlots};
use crate::webhook::{self, MAX_BODY_BYTES, WebhookError, WebhookEvent, WebhookHeaders};

pub mod auth;
pub mod dashboard;
pub mod viewer;

/// What the web handlers share.
#[derive(Clone)]
pub struct WebState {
    /// The webhook secret.
    pub secret: Secret,
    /// Accepts deployments.
    pub intake: Arc<Intake>,
    /// The store (logs, runs, health).
    pub store: Arc<dyn Store>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// How providers are kept from faseng, as `/healthz` says it.
    pub isolation: String,
    /// Checks the secret of log links.
    pub link_key: LinkKey,
    /// The live log streams open (capped per client and in all).
    pub streams: Arc<StreamSlots>,
    /// Who may see the dashboard (sign-in, sessions, local mode).
    pub gate: Arc<auth::Gate>,
    /// The operator's apps: what the dashboard lists.
    pub apps: Arc<Apps>,
    /// Where "now" comes from on the dashboard (relative times, periods, actions).
    pub clock: Arc<dyn Clock>,
    /// GitHub's web address (`GITHUB_WEB_URL`): the base of commit and compare links.
    pub github_web_url: url::Url,
}

/// What `/healthz` and `/metrics` need: all a `faseng worker` serves (`FASENG_WORKER_BIND`).
#[derive(Clone)]
pub struct OpsState {
    /// The store (health, queue depth, store size).
    pub store: Arc<dyn Store>,
    /// This process's counters.
    pub metrics: Arc<Metrics>,
    /// How providers are kept from faseng, as `/healthz` says it.
    pub isolation: String,
}

impl axum::extract::FromRef<WebState> for OpsState {
    fn from_ref(s: &WebState) -> Self {
        Self {
            store: s.store.clone(),
            metrics: s.metrics.clone(),
            isolation: s.isolation.clone(),
        }
    }
}

/// `/healthz` and `/metrics` alone (`faseng worker` with `FASENG_WORKER_BIND`).
pub fn ops_router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The router.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/webhooks/github", post(github_webhook))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/deployments/{owner}/{repo}/{id}/{secret}", get(log_page))
        .route(
            "/deployments/{owner}/{repo}/{id}/{secret}/log",
            get(log_text),
        )
        .route(
            "/deployments/{owner}/{repo}/{id}/{secret}/events",
            get(log_events),
        )
        .route(
            "/deployments/{owner}/{repo}/{id}",
            get(|| async { not_found() }),
        )
        .merge(auth::routes(dashboard::router(), &state))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn github_webhook(State(s): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    let hs = WebhookHeaders {
        event: header_str(&headers, "x-github-event"),
        delivery: header_str(&headers, "x-github-delivery"),
        signature_256: header_str(&headers, "x-hub-signature-256"),
    };
    let event = match webhook::decode(s.secret.expose().as_bytes(), &hs, &body) {
        Ok(ev) => ev,
        Err(e) => {
            s.metrics.webhook("rejected");
            let code = if e == WebhookError::BadSignature {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            tracing::info!(error = %e, delivery = ?hs.delivery, "webhook refused");
            return (code, e.to_string()).into_response();
        }
    };
    handle_event(&s, event).await
}

async fn handle_event(s: &WebState, event: WebhookEvent) -> Response {
    match event {
        WebhookEvent::Ping => {
            s.metrics.webhook("ping");
            (StatusCode::OK, "pong").into_response()
        }
        WebhookEvent::Ignored(name) => {
            s.metrics.webhook("ignored");
            (StatusCode::ACCEPTED, format!("ignored: {name}")).into_response()
        }
        WebhookEvent::DeploymentStatus { event, .. } => {
            let Ok(repo) = RepoName::parse(&event.repository.full_name) else {
                s.metrics.webhook("ignored");
                return (StatusCode::ACCEPTED, "ignored: deployment_status").into_response();
            };
            let key = RunKey::new(&repo, event.deployment.id);
            match s
                .store
                .record_status_event(
                    key.as_str(),
                    &event.deployment_status.state,
                    chrono::Utc::now(),
                )
                .await
            {
                Ok(()) => {
                    s.metrics.webhook("recorded");
                    (StatusCode::ACCEPTED, "recorded").into_response()
                }
                Err(e) => {
                    s.metrics.webhook("unavailable");
                    tracing::error!(error = %e, "store unavailable");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store unavailable; retry later",
                    )
                        .into_response()
                }
            }
        }
        WebhookEvent::Deployment { delivery_id, event } => {
            match s.intake.accept(&delivery_id, &event).await {
                Ok(IntakeOutcome::Accepted { key }) => {
                    s.metrics.webhook("accepted");
                    (StatusCode::ACCEPTED, format!("queued {key}")).into_response()
                }
                Ok(IntakeOutcome::Duplicate) => {
                    s.metrics.webhook("duplicate");
                    (StatusCode::OK, "duplicate delivery; already queued").into_response()
                }
                Ok(IntakeOutcome::Refused(why)) => {
                    s.metrics.webhook("rejected");
                    (StatusCode::UNPROCESSABLE_ENTITY, why).into_response()
                }
                Err(e) => {
                    s.metrics.webhook("unavailable");
                    tracing::error!(error = %format!("{e:#}"), %delivery_id, "could not enqueue; answering 503 so GitHub redelivers");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "queue unavailable; retry later",
                    )
                        .into_response()
                }
            }
        }
    }
}

async fn healthz(State(s): State<OpsState>) -> Response {
    match s.store.ping().await {
        Ok(()) => (StatusCode::OK, format!("ok\n{}\n", s.isolation)).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue unreachable: {e}"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<OpsState>) -> Response {
    let depth = s.store.queue_depth().await.ok();
    let mut text = s.metrics.render(depth);
    match s.store.size().await {
        Ok(size) => text.push_str(&crate::metrics::render_store_size(&size)),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "/metrics: could not read the store's size")
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn store_unavailable(e: &anyhow::Error) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("store unavailable: {e}"),
    )
        .into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, messages::no_such_deployment()).into_response()
}

/// A run whose log this request may read: its path named the run and carried a secret that
/// [`LinkKey::may_read_log`] accepts. Any other is answered like an unknown deployment,
/// before the store is asked anything.
struct ReadableRun {
    /// The run key, `owner/repo/id`.
    key: RunKey,
    /// The run's page path, secret included.
    page: String,
}

impl FromRequestParts<WebState> for ReadableRun {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &WebState) -> Result<Self, Response> {
        let Ok(Path((owner, repo, id, secret))) =
            Path::<(String, String, String, String)>::from_request_parts(parts, s).await
        else {
            return Err(not_found());
        };
        let (Ok(repo), Ok(id)) = (RepoName::parse(&format!("{owner}/{repo}")), id.parse()) else {
            return Err(not_found());
        };
        if !s.link_key.may_read_log(&repo, id, &secret) {
            return Err(not_found());
        }
        Ok(Self {
            key: RunKey::new(&repo, id),
            page: links::page_path(&repo, id, &secret),
        })
    }
}

async fn log_text(State(s): State<WebState>, run: ReadableRun) -> Response {
    let key = run.key;
    match (
        s.store.get_run(key.as_str()).await,
        s.store.read_log(key.as_str(), 0).await,
    ) {
        (Ok(None), _) => not_found(),
        (Ok(Some(_)), Ok(lines)) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            plain_log(&lines),
        )
            .into_response(),
        (Err(e), _) | (_, Err(e)) => store_unavailable(&e),
    }
}

/// The log as text, one line after another, in one buffer of the exact size.
fn plain_log(lines: &[String]) -> String {
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// What HTML makes of `byte` when it is one of the characters it gives a meaning to.
fn html_entity(byte: u8) -> Option<&'static str> {
    match byte {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'"' => Some("&quot;"),
        b'\'' => Some("&#39;"),
        _ => None,
    }
}

/// The length of `s` once escaped for HTML.
fn escaped_len(s: &str) -> usize {
    s.bytes().map(|b| html_entity(b).map_or(1, str::len)).sum()
}

/// Writes `s` escaped for HTML (text and quoted attribute values alike).
fn write_escaped(out: &mut impl std::fmt::Write, s: &str) -> std::fmt::Result {
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        if let Some(entity) = html_entity(b) {
            out.write_str(&s[plain..i])?;
            out.write_str(entity)?;
            plain = i + 1;
        }
    }
    out.write_str(&s[plain..])
}

/// Shows a value escaped for HTML.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_escaped(f, self.0)
    }
}

/// Room for everything on the page but the log: the markup and the run's short fields.
const PAGE_FRAME_BYTES: usize = 2048;

async fn log_page(State(s): State<WebState>, readable: ReadableRun) -> Response {
    let key = readable.key;
    let run = match s.store.get_run(key.as_str()).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(),
        Err(e) => return store_unavailable(&e),
    };
    let lines = s.store.read_log(key.as_str(), 0).await.unwrap_or_default();
    Html(page_html(&run, &readable.page, &lines)).into_response()
}

/// The log page: the run's facts, its log escaped straight into one buffer sized up front
/// and, while the run goes on, a script that follows its event stream.
fn page_html(run: &RunRecord, page: &str, lines: &[String]) -> String {
    use std::fmt::Write as _;
    let timing = match (run.started_at, run.finished_at) {
        (Some(st), Some(f)) => format!(
            "started {st}, finished {f} ({:.1} s)",
            (f - st).num_milliseconds() as f64 / 1000.0
        ),
        (Some(st), None) => format!("started {st}"),
        (None, Some(f)) => format!("finished {f}"),
        (None, None) => format!("received {}", run.received_at),
    };
    let sha: String = run.sha.chars().take(12).collect();
    let fields = [
        &sha,
        &run.repo,
        &run.app,
        &run.environment,
        &run.description,
        &run.creator,
        &run.git_ref,
        &run.task,
        &timing,
    ];
    let log_bytes: usize = lines.iter().map(|l| escaped_len(l) + 1).sum();
    let field_bytes: usize = fields.iter().map(|f| escaped_len(f)).sum();
    let mut html =
        String::with_capacity(PAGE_FRAME_BYTES + field_bytes + 2 * escaped_len(page) + log_bytes);
    let _ = write!(
        html,
        r#"<!doctype html>
<html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"><title>{repo} #{id}</title>
<style>body{{font-family:sans-serif;margin:2em}} pre{{background:#111;color:#ddd;padding:1em;overflow:auto}}</style></head>
<body><h1>{app} to {env} <small>#{id}</small></h1>
<p>State: <strong id="state">{state}</strong> — {desc}</p>
<p>Who: {who} · Ref: <code>{git_ref}@{sha}</code> · Task: {task} · {timing}</p>
<p><a href="{page}/log">plain text</a></p>
<pre id="log">"#,
        repo = Escaped(&run.repo),
        id = run.deployment_id,
        app = Escaped(&run.app),
        env = Escaped(&run.environment),
        state = run.state.as_str(),
        desc = Escaped(&run.description),
        who = Escaped(&run.creator),
        git_ref = Escaped(&run.git_ref),
        sha = Escaped(&sha),
        task = Escaped(&run.task),
        timing = Escaped(&timing),
        page = Escaped(page),
    );
    for line in lines {
        let _ = write_escaped(&mut html, line);
        html.push('\n');
    }
    html.push_str("</pre>");
    if !run.state.is_final() {
        let _ = write!(
            html,
            r#"<script>
const es = new EventSource("{page}/events?from={n}");
es.addEventListener("line", e => {{ document.getElementById("log").textContent += e.data + "\n"; }});
es.addEventListener("state", e => {{ document.getElementById("state").textContent = e.data; }});
es.addEventListener("end", () => es.close());
</script>"#,
            page = Escaped(page),
            n = lines.len()
        );
    }
    html.push_str("</body></html>");
    html
}

#[derive(serde::Deserialize)]
struct From {
    from: Option<usize>,
}

async fn log_events(
    State(s): State<WebState>,
    run: ReadableRun,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    axum::extract::Query(q): axum::extract::Query<From>,
) -> Response {
    match s.store.get_run(run.key.as_str()).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(),
        Err(e) => return store_unavailable(&e),
    }
    let slot = match s.streams.take(client.ip()) {
        Ok(slot) => slot,
        Err(refused) => return stream_refused(refused),
    };
    let following = Following {
        store: s.store.clone(),
        key: run.key.to_string(),
        next: q.from.unwrap_or(0),
        deadline: tokio::time::Instant::now() + STREAM_MAX,
        ended: false,
        _slot: slot,
    };
    Sse::new(log_stream(following))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The 429 that says why a live stream got no slot.
pub(crate) fn stream_refused(refused: Refused) -> Response {
    let text = match refused {
        Refused::PerClient(n) => messages::too_many_streams_from_client(n),
        Refused::Total(n) => messages::too_many_streams(n),
    };
    (StatusCode::TOO_MANY_REQUESTS, text).into_response()
}

/// How long one live log stream stays open at most.
pub(crate) const STREAM_MAX: Duration = Duration::from_secs(3600);

/// How often a live log stream looks for new lines.
pub(crate) const STREAM_POLL: Duration = Duration::from_millis(300);

/// Where a live log stream is; holds the stream's slot while it is open.
struct Following {
    store: Arc<dyn Store>,
    key: String,
    next: usize,
    deadline: tokio::time::Instant,
    ended: bool,
    _slot: StreamSlot,
}

/// The log's lines from `next` on as they are written, then the run's final state and
/// `end` (or that, as far as it got, at the stream's deadline).
fn log_stream(following: Following) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(following, |mut f| async move {
        if f.ended {
            return None;
        }
        loop {
            let lines = f.store.read_log(&f.key, f.next).await.unwrap_or_default();
            if !lines.is_empty() {
                f.next += lines.len();
                let events: Vec<Result<Event, Infallible>> = lines
                    .into_iter()
                    .map(|l| Ok(Event::default().event("line").data(l)))
                    .collect();
                return Some((futures::stream::iter(events), f));
            }
            let run = f.store.get_run(&f.key).await.ok().flatten();
            if run.as_ref().is_none_or(|r| r.state.is_final())
                || tokio::time::Instant::now() >= f.deadline
            {
                let state = run.map_or("unknown", |r| r.state.as_str());
                let events = vec![
                    Ok(Event::default().event("state").data(state)),
                    Ok(Event::default().event("end").data("")),
                ];
                f.ended = true;
                return Some((futures::stream::iter(events), f));
            }
            tokio::time::sleep(STREAM_POLL).await;
        }
    })
    .flatten()
}

#[cfg(test)]
mod tests;
