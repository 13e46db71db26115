//! HTTP: the webhook endpoint (transport → domain event → intake), health, metrics and the
//! log pages.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use deploy_core::Secret;
use futures::{Stream, StreamExt as _};

use crate::intake::{Intake, IntakeOutcome};
use crate::metrics::Metrics;
use crate::store::{RunRecord, Store};
use crate::webhook::{self, MAX_BODY_BYTES, WebhookError, WebhookEvent, WebhookHeaders};

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
}

/// The router.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/webhooks/github", post(github_webhook))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/deployments/{owner}/{repo}/{id}", get(log_page))
        .route("/deployments/{owner}/{repo}/{id}/log", get(log_text))
        .route("/deployments/{owner}/{repo}/{id}/events", get(log_events))
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
            let key = RunRecord::key_for(&event.repository.full_name, event.deployment.id);
            match s
                .store
                .record_status_event(&key, &event.deployment_status.state, chrono::Utc::now())
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

async fn healthz(State(s): State<WebState>) -> Response {
    match s.store.ping().await {
        Ok(()) => (StatusCode::OK, format!("ok\n{}\n", s.isolation)).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue unreachable: {e}"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<WebState>) -> Response {
    let depth = s.store.queue_depth().await.ok();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(depth),
    )
        .into_response()
}

fn run_key(owner: &str, repo: &str, id: u64) -> Result<String, Box<Response>> {
    deploy_core::RepoName::parse(&format!("{owner}/{repo}"))
        .map(|r| RunRecord::key_for(&r.to_string(), id))
        .map_err(|e| Box::new((StatusCode::NOT_FOUND, e).into_response()))
}

async fn log_text(
    State(s): State<WebState>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    let key = match run_key(&owner, &repo, id) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    match (s.store.get_run(&key).await, s.store.read_log(&key, 0).await) {
        (Ok(None), _) => (StatusCode::NOT_FOUND, "no such deployment").into_response(),
        (Ok(Some(_)), Ok(lines)) => {
            let mut body = lines.join("\n");
            body.push('\n');
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
        }
        (Err(e), _) | (_, Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}"),
        )
            .into_response(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn log_page(
    State(s): State<WebState>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    let key = match run_key(&owner, &repo, id) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let run = match s.store.get_run(&key).await {
        Ok(Some(r)) => r,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such deployment").into_response(),
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store unavailable: {e}"),
            )
                .into_response();
        }
    };
    let lines = s.store.read_log(&key, 0).await.unwrap_or_default();
    let timing = match (run.started_at, run.finished_at) {
        (Some(st), Some(f)) => format!(
            "started {st}, finished {f} ({:.1} s)",
            (f - st).num_milliseconds() as f64 / 1000.0
        ),
        (Some(st), None) => format!("started {st}"),
        (None, Some(f)) => format!("finished {f}"),
        (None, None) => format!("received {}", run.received_at),
    };
    let live = if run.state.is_final() {
        String::new()
    } else {
        format!(
            r#"<script>
const es = new EventSource("/deployments/{key}/events?from={n}");
es.addEventListener("line", e => {{ document.getElementById("log").textContent += e.data + "\n"; }});
es.addEventListener("state", e => {{ document.getElementById("state").textContent = e.data; }});
es.addEventListener("end", () => es.close());
</script>"#,
            key = esc(&key),
            n = lines.len()
        )
    };
    let mut log = lines.join("\n");
    if !log.is_empty() {
        log.push('\n');
    }
    let html = format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{repo} #{id}</title>
<style>body{{font-family:sans-serif;margin:2em}} pre{{background:#111;color:#ddd;padding:1em;overflow:auto}}</style></head>
<body><h1>{app} to {env} <small>#{id}</small></h1>
<p>State: <strong id="state">{state}</strong> — {desc}</p>
<p>Who: {who} · Ref: <code>{git_ref}@{sha}</code> · Task: {task} · {timing}</p>
<p><a href="/deployments/{key}/log">plain text</a></p>
<pre id="log">{log}</pre>{live}</body></html>"#,
        repo = esc(&run.repo),
        id = run.deployment_id,
        app = esc(&run.app),
        env = esc(&run.environment),
        state = run.state.as_str(),
        desc = esc(&run.description),
        who = esc(&run.creator),
        git_ref = esc(&run.git_ref),
        sha = esc(&run.sha.chars().take(12).collect::<String>()),
        task = esc(&run.task),
        timing = esc(&timing),
        key = esc(&key),
        log = esc(&log),
    );
    Html(html).into_response()
}

#[derive(serde::Deserialize)]
struct From {
    from: Option<usize>,
}

async fn log_events(
    State(s): State<WebState>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    axum::extract::Query(q): axum::extract::Query<From>,
) -> Response {
    let key = match run_key(&owner, &repo, id) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    Sse::new(log_stream(s.store.clone(), key, q.from.unwrap_or(0)))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn log_stream(
    store: Arc<dyn Store>,
    key: String,
    from: usize,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (store, key, from, false),
        |(store, key, mut next, done)| async move {
            if done {
                return None;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
            loop {
                let lines = store.read_log(&key, next).await.unwrap_or_default();
                if !lines.is_empty() {
                    next += lines.len();
                    let events: Vec<Result<Event, Infallible>> = lines
                        .into_iter()
                        .map(|l| Ok(Event::default().event("line").data(l)))
                        .collect();
                    return Some((futures::stream::iter(events), (store, key, next, false)));
                }
                let run = store.get_run(&key).await.ok().flatten();
                if run.as_ref().is_none_or(|r| r.state.is_final())
                    || tokio::time::Instant::now() > deadline
                {
                    let state = run.map_or("unknown", |r| r.state.as_str());
                    let events = vec![
                        Ok(Event::default().event("state").data(state)),
                        Ok(Event::default().event("end").data("")),
                    ];
                    return Some((futures::stream::iter(events), (store, key, next, true)));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        },
    )
    .flatten()
}
