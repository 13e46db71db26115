//! The dashboard's forms: `POST /actions/rollback` and `POST /actions/unlock` check their
//! fields with the name types, build the chat command chima will run for the viewer
//! (`rollback <app> in <env> [to #<id>]`, `unlock <app> in <env>`, `unlock! <app> in <env>:
//! from the dashboard`), submit it as a web action and answer 303 to `/actions/{id}`, which
//! shows how it went (only to whoever submitted it). The sign-in layer has checked the CSRF
//! token before these run; a field that is not valid changes nothing.

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use deploy_core::desk::Tz;
use deploy_core::{AppConfig, AppName, EnvName};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav};
use super::{PageError, PageResult, Viewer, run_path, time};
use crate::messages::dashboard as say;
use crate::store::{WebAction, WebActionState};
use crate::web::WebState;

/// How often the script reloads a page of an action chima has not finished (seconds).
const REFRESH_SECS: u32 = 2;

/// `POST /actions/rollback`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RollbackForm {
    #[serde(default)]
    app: String,
    #[serde(default)]
    env: String,
    /// A deployment id to roll back to; empty: the newest earlier good one.
    #[serde(default)]
    deployment: String,
}

/// `POST /actions/unlock`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UnlockForm {
    #[serde(default)]
    app: String,
    #[serde(default)]
    env: String,
    /// `1`: take the lock from its holder (`unlock!`).
    #[serde(default)]
    takeover: String,
}

/// The app and environment a form names, checked against app.json.
fn target<'a>(
    s: &'a WebState,
    app: &str,
    env: &str,
) -> Result<(&'a AppConfig, EnvName), PageError> {
    let name = AppName::parse(app.trim())
        .map_err(|e| PageError::BadRequest(say::bad_field("app", &e.to_string())))?;
    let config = s
        .apps
        .get(&name)
        .ok_or_else(|| PageError::BadRequest(say::no_such_app(name.as_str())))?;
    let env = EnvName::parse(env.trim())
        .map_err(|e| PageError::BadRequest(say::bad_field("environment", &e.to_string())))?;
    if !config.has_environment(&env) {
        return Err(PageError::BadRequest(say::no_such_environment(
            config.name.as_str(),
            env.as_str(),
        )));
    }
    Ok((config, env))
}

/// The chat command of a rollback.
pub(crate) fn rollback_command(app: &AppName, env: &EnvName, to: Option<u64>) -> String {
    match to {
        Some(id) => format!("rollback {app} in {env} to #{id}"),
        None => format!("rollback {app} in {env}"),
    }
}

/// The chat command of an unlock (`takeover`: from whoever holds it).
pub(crate) fn unlock_command(app: &AppName, env: &EnvName, takeover: bool) -> String {
    if takeover {
        format!("unlock! {app} in {env}: from the dashboard")
    } else {
        format!("unlock {app} in {env}")
    }
}

async fn submit(s: &WebState, viewer: &Viewer, command: &str) -> Result<Response, PageError> {
    let id = s
        .store
        .submit_web_action(&viewer.id, &viewer.name, command, s.clock.now())
        .await?;
    tracing::info!(action = id, user = %viewer.id, %command, "dashboard action submitted");
    Ok(Redirect::to(&format!("/actions/{id}")).into_response())
}

/// `POST /actions/rollback`.
pub(crate) async fn rollback(
    State(s): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<RollbackForm>,
) -> Result<Response, PageError> {
    let (config, env) = target(&s, &form.app, &form.env)?;
    let to = match form.deployment.trim().trim_start_matches('#') {
        "" => None,
        id => Some(id.parse::<u64>().ok().filter(|id| *id > 0).ok_or_else(|| {
            PageError::BadRequest(say::bad_field(
                "deployment",
                "it must be a deployment number",
            ))
        })?),
    };
    submit(&s, &viewer, &rollback_command(&config.name, &env, to)).await
}

/// `POST /actions/unlock`.
pub(crate) async fn unlock(
    State(s): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<UnlockForm>,
) -> Result<Response, PageError> {
    let (config, env) = target(&s, &form.app, &form.env)?;
    let takeover = match form.takeover.trim() {
        "" | "0" => false,
        "1" => true,
        _ => {
            return Err(PageError::BadRequest(say::bad_field(
                "takeover",
                "it must be 1 or empty",
            )));
        }
    };
    submit(&s, &viewer, &unlock_command(&config.name, &env, takeover)).await
}

/// `GET /actions/{id}`.
pub(crate) async fn page(
    State(s): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> PageResult {
    let not_found = || PageError::NotFound(say::no_such_action().to_owned());
    let id: u64 = id.parse().map_err(|_| not_found())?;
    let action = s
        .store
        .web_action(id)
        .await?
        .filter(|a| a.user_id == viewer.id)
        .ok_or_else(not_found)?;
    Ok(layout::page(
        &format!("Action {id}"),
        &viewer,
        Nav::None,
        render(&action, s.clock.now()),
    ))
}

fn state_text(state: WebActionState) -> &'static str {
    match state {
        WebActionState::Pending => "waiting for chima",
        WebActionState::Running => "chima is on it",
        WebActionState::Done => "done",
        WebActionState::Failed => "failed",
    }
}

fn render(action: &WebAction, now: DateTime<Utc>) -> Markup {
    html! {
        dl.facts {
            dt { "Command" } dd { code #command { (action.command) } }
            dt { "State" }
            dd { span #action-state.badge.state data-state=(action.state.as_str()) { (state_text(action.state)) } }
            dt { "Asked" } dd { (time(action.submitted_at, now, Tz::UTC)) " by " (action.user_name) }
        }
        @if let Some(reply) = &action.reply {
            h2 { "chima's reply" }
            p.reply #reply { (reply) }
        }
        @if let Some(key) = &action.run_key {
            p { a #new-run href=(run_path(key)) { "Follow the deployment it started" } }
        }
        @if !action.state.is_final() {
            div #waiting data-refresh=(REFRESH_SECS) {
                p { "chima carries out dashboard actions within a few seconds; this page refreshes until it has. " a href=(format!("/actions/{}", action.id)) { "Refresh" } }
            }
        }
        p { a href="/" { "Back to the overview" } " · " a href="/desk" { "Release desk" } }
    }
}
