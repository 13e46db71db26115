//! The signed-in dashboard: server-rendered pages (maud) over the shared store — the
//! overview, an app's history and statistics, one deployment with its stages and live log,
//! the release desk — and the forms that ask chima to roll back or unlock (as web actions).
//!
//! Every handler takes the [`Viewer`] the sign-in layer put into the request and never checks
//! sign-in itself. Pages work without script; `/static/dashboard.js` adds the live log, the
//! live stage flow and the refresh of a pending action. Nothing inline: no `<script>`, no
//! `style=`, no event attributes (the dashboard's CSP forbids them).

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use deploy_core::desk::{Tz, when};
use maud::{Markup, html};

use super::WebState;
pub use super::viewer::Viewer;
use crate::messages::dashboard as say;
use crate::store::{RunRecord, RunState};

mod actions;
mod ansi;
mod assets;
mod charts;
mod desk;
mod history;
mod layout;
mod overview;
mod run;
mod stats;
#[cfg(test)]
mod tests;

/// The dashboard's routes (pages GET, actions POST); the sign-in layer wraps them.
pub fn router() -> Router<WebState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/apps/{app}", get(history::page))
        .route("/apps/{app}/stats", get(stats::page))
        .route("/runs/{owner}/{repo}/{id}", get(run::page))
        .route("/runs/{owner}/{repo}/{id}/events", get(run::events))
        .route("/desk", get(desk::page))
        .route("/actions/rollback", post(actions::rollback))
        .route("/actions/unlock", post(actions::unlock))
        .route("/actions/{id}", get(actions::page))
        .route("/static/{file}", get(assets::serve))
}

/// Why a page could not be shown: each is a page of its own with the matching status.
#[derive(Debug)]
pub(crate) enum PageError {
    /// No such app, deployment or action (or not the viewer's).
    NotFound(String),
    /// A form or filter that does not make sense; nothing was changed.
    BadRequest(String),
    /// The store did not answer.
    Unavailable(anyhow::Error),
}

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> Self {
        PageError::Unavailable(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (code, title, text) = match self {
            PageError::NotFound(text) => (StatusCode::NOT_FOUND, "Not found", text),
            PageError::BadRequest(text) => (StatusCode::BAD_REQUEST, "Not done", text),
            PageError::Unavailable(e) => {
                tracing::error!(error = %format!("{e:#}"), "dashboard: the store did not answer");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    say::store_unavailable().to_owned(),
                )
            }
        };
        (code, layout::error_page(title, &text)).into_response()
    }
}

/// What a page handler returns.
pub(crate) type PageResult = Result<Markup, PageError>;

/// A time as the desk shows it (absolute in `tz`, relative to `now`), machine-readable too.
pub(crate) fn time(at: DateTime<Utc>, now: DateTime<Utc>, tz: Tz) -> Markup {
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            title=(at.format("%Y-%m-%d %H:%M:%S UTC")) { (when(at, now, tz)) }
    }
}

/// A run's state as a badge (`data-state` for scripts, styles and tests).
pub(crate) fn state_badge(state: RunState) -> Markup {
    html! { span.badge.state data-state=(state.as_str()) { (state_label(state)) } }
}

/// How a run's state reads on the page.
pub(crate) fn state_label(state: RunState) -> &'static str {
    match state {
        RunState::Queued => "queued",
        RunState::InProgress => "in progress",
        RunState::Success => "success",
        RunState::Failure => "failure",
        RunState::Error => "error",
    }
}

/// The page of a run (its key is `owner/repo/id`).
pub(crate) fn run_path(key: &str) -> String {
    format!("/runs/{key}")
}

/// The first 7 characters of a sha.
pub(crate) fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Whether a run deployed something (`deploy`, `deploy:<task>`), not a lock or unlock.
pub(crate) fn deploys(run: &RunRecord) -> bool {
    crate::store::stats::counted_task(&run.task)
}

/// `ref@sha` with the sha short, in code.
pub(crate) fn version(run: &RunRecord) -> Markup {
    html! { code.version title=(run.sha) { (run.git_ref) "@" (short_sha(&run.sha)) } }
}
