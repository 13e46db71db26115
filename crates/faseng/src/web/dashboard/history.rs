//! `/apps/{app}`: the app's runs, newest first, from [`Runs::history`](crate::store::Runs),
//! filtered by environment and ref (in the store) and by state and who (here, over the
//! store's pages), a page at a time with the store's cursor (`?page=`).

use axum::Extension;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use deploy_core::{AppConfig, AppName, EnvName};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav};
use super::{PageError, PageResult, Viewer, run_path, state_badge, time, version};
use crate::messages::dashboard as say;
use crate::store::{Cursor, RunQuery, RunRecord, RunState};
use crate::web::WebState;

/// Rows on one page.
pub(crate) const PAGE_ROWS: usize = 50;
/// Store pages one page of filtered rows reads at most (a rare state or person may need
/// several; the page then ends early with a link to go on).
const SCAN_ROUNDS: usize = 20;

/// The query string, as typed (empty fields mean "any").
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filters {
    #[serde(default)]
    env: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    who: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
    #[serde(default)]
    page: String,
}

/// The filters, checked.
#[derive(Debug, Default)]
struct Checked {
    env: Option<EnvName>,
    state: Option<RunState>,
    who: Option<String>,
    git_ref: Option<String>,
    cursor: Option<Cursor>,
}

const STATES: [RunState; 5] = [
    RunState::Queued,
    RunState::InProgress,
    RunState::Success,
    RunState::Failure,
    RunState::Error,
];

fn check(app: &AppConfig, f: &Filters) -> Result<Checked, PageError> {
    let trimmed = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let env = match trimmed(&f.env) {
        Some(e) => Some(
            EnvName::parse(&e)
                .ok()
                .filter(|e| app.has_environment(e))
                .ok_or_else(|| {
                    PageError::BadRequest(say::no_such_environment(app.name.as_str(), &e))
                })?,
        ),
        None => None,
    };
    let state = match trimmed(&f.state) {
        Some(s) => Some(
            STATES
                .into_iter()
                .find(|st| st.as_str() == s)
                .ok_or_else(|| PageError::BadRequest(say::bad_filter("state", &s)))?,
        ),
        None => None,
    };
    let cursor = match trimmed(&f.page) {
        Some(p) => Some(
            Cursor::parse(&p).ok_or_else(|| PageError::BadRequest(say::bad_filter("page", &p)))?,
        ),
        None => None,
    };
    Ok(Checked {
        env,
        state,
        who: trimmed(&f.who),
        git_ref: trimmed(&f.git_ref),
        cursor,
    })
}

impl Checked {
    fn keeps(&self, run: &RunRecord) -> bool {
        self.state.is_none_or(|s| run.state == s)
            && self
                .who
                .as_ref()
                .is_none_or(|w| run.creator.eq_ignore_ascii_case(w))
    }

    /// The query string for these filters at `page`.
    fn link(&self, app: &AppName, page: Option<&Cursor>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(e) = &self.env {
            q.append_pair("env", e.as_str());
        }
        if let Some(s) = self.state {
            q.append_pair("state", s.as_str());
        }
        if let Some(w) = &self.who {
            q.append_pair("who", w);
        }
        if let Some(r) = &self.git_ref {
            q.append_pair("ref", r);
        }
        if let Some(p) = page {
            q.append_pair("page", p.as_str());
        }
        let q = q.finish();
        if q.is_empty() {
            format!("/apps/{app}")
        } else {
            format!("/apps/{app}?{q}")
        }
    }
}

/// One page of rows that pass the filters, and where the next page starts.
async fn rows(
    s: &WebState,
    app: &AppName,
    f: &Checked,
) -> anyhow::Result<(Vec<RunRecord>, Option<Cursor>)> {
    let mut query = RunQuery {
        app: Some(app.to_string()),
        environment: f.env.as_ref().map(ToString::to_string),
        git_ref: f.git_ref.clone(),
        cursor: f.cursor.clone(),
        ..RunQuery::default()
    };
    let mut shown = Vec::new();
    for _ in 0..SCAN_ROUNDS {
        // Never more than the page still has room for: the store's cursor then sits right
        // after the last row read, all of which were shown or filtered out.
        query.limit = PAGE_ROWS - shown.len();
        let page = s.store.history(&query).await?;
        shown.extend(page.items.into_iter().filter(|r| f.keeps(r)));
        match page.next {
            Some(next) if shown.len() < PAGE_ROWS => query.cursor = Some(next),
            next => return Ok((shown, next)),
        }
    }
    Ok((shown, query.cursor))
}

/// `GET /apps/{app}`.
pub(crate) async fn page(
    State(s): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Path(app): Path<String>,
    Query(filters): Query<Filters>,
) -> PageResult {
    let config = AppName::parse(&app)
        .ok()
        .and_then(|a| s.apps.get(&a))
        .ok_or_else(|| PageError::NotFound(say::no_such_app(&app)))?;
    let checked = check(config, &filters)?;
    let (runs, next) = rows(&s, &config.name, &checked).await?;
    let now = s.clock.now();
    Ok(layout::page(
        &format!("{} — history", config.name),
        &viewer,
        Nav::Overview,
        render(config, &checked, &runs, next.as_ref(), now),
    ))
}

fn render(
    app: &AppConfig,
    f: &Checked,
    runs: &[RunRecord],
    next: Option<&Cursor>,
    now: DateTime<Utc>,
) -> Markup {
    let tz = app.tz();
    html! {
        p.muted { a href="/" { "Overview" } " · " a href=(format!("/apps/{}/stats", app.name)) { "Statistics" } }
        form.filters method="get" action=(format!("/apps/{}", app.name)) aria-label="Filter the history" {
            label { "Environment"
                select name="env" {
                    option value="" { "any" }
                    @for e in &app.environments {
                        option value=(e.as_str()) selected[f.env.as_ref() == Some(e)] { (e) }
                    }
                }
            }
            label { "State"
                select name="state" {
                    option value="" { "any" }
                    @for st in STATES {
                        option value=(st.as_str()) selected[f.state == Some(st)] { (super::state_label(st)) }
                    }
                }
            }
            label { "Who" input type="text" name="who" value=(f.who.as_deref().unwrap_or("")) autocomplete="off"; }
            label { "Ref" input type="text" name="ref" value=(f.git_ref.as_deref().unwrap_or("")) autocomplete="off"; }
            button type="submit" { "Filter" }
            @if f.env.is_some() || f.state.is_some() || f.who.is_some() || f.git_ref.is_some() {
                a href=(format!("/apps/{}", app.name)) { "Clear" }
            }
        }
        @if runs.is_empty() {
            p.none #no-runs { "No deployments match." }
        } @else {
            div.table-wrap {
                table #history {
                    caption.muted { "Deployments of " (app.name) ", newest first" }
                    thead { tr {
                        th scope="col" { "Deployment" }
                        th scope="col" { "Environment" }
                        th scope="col" { "Version" }
                        th scope="col" { "Task" }
                        th scope="col" { "Who" }
                        th scope="col" { "State" }
                        th scope="col" { "Received" }
                        th scope="col" { "Took" }
                    } }
                    tbody {
                        @for run in runs {
                            tr data-run=(run.key) {
                                td { a href=(run_path(&run.key)) { "#" (run.deployment_id) } }
                                td { (run.environment) }
                                td { (version(run)) }
                                td { (run.task) }
                                td { (run.creator) }
                                td { (state_badge(run.state)) }
                                td { (time(run.received_at, now, tz)) }
                                td { @if let Some(secs) = run.duration_secs() { (crate::messages::duration(secs)) } }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if f.cursor.is_some() {
                a href=(f.link(&app.name, None)) rel="first" { "Newest" }
            }
            @if let Some(next) = next {
                a #older href=(f.link(&app.name, Some(next))) rel="next" { "Older" }
            }
        }
    }
}
