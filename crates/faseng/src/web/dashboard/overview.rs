//! `/`: every app and environment of faseng's app.json — what is deployed (the newest
//! successful deploy: ref@sha, who, when), the newest run's state, the lock, a freeze in
//! force, how many wait in line (chat's desk line and faseng's waiting runs) and the last
//! result.

use axum::Extension;
use axum::extract::State;
use chrono::{DateTime, Utc};
use deploy_core::desk::{Blocked, Tz};
use deploy_core::{AppConfig, EnvName, LineKey};
use maud::{Markup, html};

use super::layout::{self, Nav};
use super::{PageResult, Viewer, deploys, run_path, state_badge, time, version};
use crate::store::{EnvLock, RunQuery, RunRecord, Store, freeze_in_force};
use crate::web::WebState;

/// How many runs one look at an environment's history reads at a time.
const SCAN_PAGE: usize = 50;
/// How many pages back the newest successful deploy is looked for.
const SCAN_PAGES: usize = 10;

/// What the overview shows of one environment.
pub(crate) struct EnvRow {
    /// The environment.
    pub env: EnvName,
    /// The newest successful deploy there.
    pub deployed: Option<RunRecord>,
    /// The newest run of any kind.
    pub newest: Option<RunRecord>,
    /// The newest run that finished.
    pub last_final: Option<RunRecord>,
    /// The lock in force.
    pub lock: Option<EnvLock>,
    /// The freeze in force (app.json window or one made in chat).
    pub freeze: Option<Blocked>,
    /// Requests in the desk line plus faseng's runs waiting for their turn.
    pub waiting: usize,
}

/// The newest successful deploy of `app` in `env` received before `until` (any time when
/// `None`) whose sha is not `except`.
pub(crate) async fn newest_success(
    store: &dyn Store,
    app: &str,
    env: &str,
    until: Option<DateTime<Utc>>,
    except: Option<&str>,
) -> anyhow::Result<Option<RunRecord>> {
    let mut query = RunQuery {
        app: Some(app.to_owned()),
        environment: Some(env.to_owned()),
        until,
        limit: SCAN_PAGE,
        ..RunQuery::default()
    };
    for _ in 0..SCAN_PAGES {
        let page = store.history(&query).await?;
        if let Some(found) = page.items.into_iter().find(|r| {
            r.state == crate::store::RunState::Success
                && deploys(r)
                && except.is_none_or(|sha| r.sha != sha)
        }) {
            return Ok(Some(found));
        }
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => break,
        }
    }
    Ok(None)
}

/// One environment's row, at `now`.
pub(crate) async fn env_row(
    store: &dyn Store,
    app: &AppConfig,
    env: &EnvName,
    now: DateTime<Utc>,
) -> anyhow::Result<EnvRow> {
    let recent = store
        .history(&RunQuery {
            app: Some(app.name.to_string()),
            environment: Some(env.to_string()),
            limit: SCAN_PAGE,
            ..RunQuery::default()
        })
        .await?;
    let newest = recent.items.first().cloned();
    let last_final = recent.items.iter().find(|r| r.state.is_final()).cloned();
    let deployed = match recent
        .items
        .iter()
        .find(|r| r.state == crate::store::RunState::Success && deploys(r))
    {
        Some(r) => Some(r.clone()),
        None if recent.next.is_some() => {
            newest_success(store, app.name.as_str(), env.as_str(), None, None).await?
        }
        None => None,
    };
    let line = LineKey::new(&app.name, env.as_str());
    let lock = store.lock_at(line.as_str(), now).await?;
    let freeze = freeze_in_force(store, app, env, now).await?;
    let requests = store
        .line_requests(line.as_str())
        .await?
        .into_iter()
        .filter(|r| !r.expired(now))
        .count();
    let runs = store.line(line.as_str()).await?;
    let running = match runs.first() {
        Some(head) => store
            .get_run(head)
            .await?
            .is_some_and(|r| r.started_at.is_some()),
        None => false,
    };
    Ok(EnvRow {
        env: env.clone(),
        deployed,
        newest,
        last_final,
        lock,
        freeze,
        waiting: requests + runs.len() - usize::from(running),
    })
}

/// `GET /`.
pub(crate) async fn page(
    State(s): State<WebState>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    let now = s.clock.now();
    let mut apps = Vec::new();
    for app in s.apps.iter() {
        let mut rows = Vec::new();
        for env in &app.environments {
            rows.push(env_row(s.store.as_ref(), app, env, now).await?);
        }
        apps.push((app, rows));
    }
    Ok(layout::page(
        "Overview",
        &viewer,
        Nav::Overview,
        render(&apps, now),
    ))
}

/// The lock as a badge with holder, reason and until.
pub(crate) fn lock_cell(lock: Option<&EnvLock>, now: DateTime<Utc>, tz: Tz) -> Markup {
    html! {
        @match lock {
            Some(lock) => {
                span.badge.lock { "locked" } " by " strong { (lock.shown_name()) }
                @if !lock.reason.is_empty() { ": " (lock.reason) }
                @if let Some(until) = lock.expires_at { br; "until " (time(until, now, tz)) }
            }
            None => span.none { "free" },
        }
    }
}

/// A freeze in force as a badge with its reason and end.
pub(crate) fn freeze_cell(freeze: Option<&Blocked>, now: DateTime<Utc>, tz: Tz) -> Markup {
    html! {
        @match freeze {
            Some(Blocked::Frozen { reason, until, by }) => {
                span.badge.freeze { "frozen" }
                @if !reason.is_empty() { " " (reason) }
                @if let Some(by) = by { " (by " (by) ")" }
                br; "until " (time(*until, now, tz))
            }
            _ => span.none { "—" },
        }
    }
}

pub(crate) fn render(apps: &[(&AppConfig, Vec<EnvRow>)], now: DateTime<Utc>) -> Markup {
    html! {
        @if apps.is_empty() {
            p.none { "faseng's app.json lists no apps." }
        }
        @for (app, rows) in apps {
            section.app aria-labelledby=(format!("app-{}", app.name)) data-app=(app.name.as_str()) {
                h2 id=(format!("app-{}", app.name)) {
                    a href=(format!("/apps/{}", app.name)) { (app.name) }
                }
                p.muted {
                    (app.repository.to_string()) " · "
                    a href=(format!("/apps/{}", app.name)) { "history" } " · "
                    a href=(format!("/apps/{}/stats", app.name)) { "statistics" }
                }
                div.table-wrap {
                    table {
                        caption.muted { "Environments of " (app.name) }
                        thead { tr {
                            th scope="col" { "Environment" }
                            th scope="col" { "Deployed" }
                            th scope="col" { "Newest run" }
                            th scope="col" { "Lock" }
                            th scope="col" { "Freeze" }
                            th scope="col" { "Waiting" }
                            th scope="col" { "Last result" }
                        } }
                        tbody {
                            @for row in rows {
                                (env_tr(app, row, now))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn env_tr(app: &AppConfig, row: &EnvRow, now: DateTime<Utc>) -> Markup {
    let tz = app.tz();
    html! {
        tr data-env=(row.env.as_str()) {
            th scope="row" { (row.env) }
            td.deployed {
                @match &row.deployed {
                    Some(run) => {
                        a href=(run_path(&run.key)) { (version(run)) }
                        br; "by " (run.creator) " "
                        @if let Some(at) = run.finished_at.or(run.started_at) { (time(at, now, tz)) }
                    }
                    None => span.none { "nothing yet" },
                }
            }
            td.newest {
                @match &row.newest {
                    Some(run) => {
                        a href=(run_path(&run.key)) { "#" (run.deployment_id) } " "
                        span id=(format!("newest-{}-{}", app.name, row.env)) { (state_badge(run.state)) }
                    }
                    None => span.none { "—" },
                }
            }
            td.lock { (lock_cell(row.lock.as_ref(), now, tz)) }
            td.freeze { (freeze_cell(row.freeze.as_ref(), now, tz)) }
            td.waiting data-waiting=(row.waiting) { (row.waiting) }
            td.last {
                @match &row.last_final {
                    Some(run) => { (state_badge(run.state)) " " a href=(run_path(&run.key)) { "#" (run.deployment_id) } }
                    None => span.none { "—" },
                }
            }
        }
    }
}
