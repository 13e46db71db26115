//! `/desk`: the release desk at a glance — locks (with an Unlock or Take over form), chat's
//! desk line, faseng's waiting runs, freezes in force and coming (app.json windows and those
//! made in chat) with the unfreezes granted, open release requests, and the newest audit
//! entries.

use axum::Extension;
use axum::extract::State;
use chrono::{DateTime, Utc};
use deploy_core::desk::{FreezeOccurrence, Tz, upcoming};
use deploy_core::{AppConfig, AppName, EnvName, LineKey, Span};
use maud::{Markup, html};

use super::layout::{self, Nav};
use super::{PageResult, Viewer, run_path, short_sha, time};
use crate::store::{
    AuditQuery, AuditRecord, EnvLock, Freeze, LineRequest, ReleaseRequest, RunRecord, UnfreezeGrant,
};
use crate::web::WebState;

/// How far ahead app.json freeze windows are listed.
const FREEZES_HORIZON: Span = Span::from_secs(14 * 86_400);
/// Occurrences of one window listed at most.
const FREEZES_PER_WINDOW: usize = 3;
/// Audit entries shown.
const AUDIT_SHOWN: usize = 25;

/// Everything the desk page shows.
struct Desk<'a> {
    locks: Vec<(String, EnvLock)>,
    line: Vec<LineRequest>,
    runs: Vec<(String, Vec<RunRecord>)>,
    windows: Vec<(&'a AppConfig, FreezeOccurrence)>,
    freezes: Vec<Freeze>,
    unfreezes: Vec<UnfreezeGrant>,
    requests: Vec<ReleaseRequest>,
    audit: Vec<AuditRecord>,
}

/// `GET /desk`.
pub(crate) async fn page(
    State(s): State<WebState>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    let now = s.clock.now();
    let store = s.store.as_ref();
    let mut locks: Vec<(String, EnvLock)> = store
        .locks()
        .await?
        .into_iter()
        .filter(|(_, l)| !l.expired(now))
        .collect();
    locks.sort_by(|a, b| a.0.cmp(&b.0));
    let mut line = Vec::new();
    let mut lines = store.waiting_lines().await?;
    lines.sort();
    for l in lines {
        line.extend(
            store
                .line_requests(&l)
                .await?
                .into_iter()
                .filter(|r| !r.expired(now)),
        );
    }
    let mut runs = Vec::new();
    let mut windows = Vec::new();
    for app in s.apps.iter() {
        for env in &app.environments {
            let key = LineKey::new(&app.name, env.as_str());
            let mut waiting = Vec::new();
            for run in store.line(key.as_str()).await? {
                if let Some(r) = store.get_run(&run).await? {
                    waiting.push(r);
                }
            }
            if !waiting.is_empty() {
                runs.push((key.to_string(), waiting));
            }
        }
        windows.extend(
            upcoming(
                app.freezes(),
                None,
                now,
                FREEZES_HORIZON,
                FREEZES_PER_WINDOW,
            )
            .into_iter()
            .map(|o| (app, o)),
        );
    }
    windows.sort_by_key(|(_, o)| o.interval.start);
    let desk = Desk {
        locks,
        line,
        runs,
        windows,
        freezes: store.freezes(now).await?,
        unfreezes: store.unfreezes(now).await?,
        requests: store.requests(None, true).await?,
        audit: store
            .audit(&AuditQuery {
                limit: AUDIT_SHOWN,
                ..AuditQuery::default()
            })
            .await?
            .items,
    };
    Ok(layout::page(
        "Release desk",
        &viewer,
        Nav::Desk,
        render(&s, &viewer, &desk, now),
    ))
}

/// The time zone of the app a line (`app/env`) belongs to.
fn tz_of(s: &WebState, line: &str) -> Tz {
    line.split_once('/')
        .and_then(|(app, _)| AppName::parse(app).ok())
        .and_then(|app| s.apps.get(&app).map(AppConfig::tz))
        .unwrap_or(Tz::UTC)
}

/// The app and environment of a line, when app.json lists them.
fn line_target<'a>(s: &'a WebState, line: &str) -> Option<(&'a AppConfig, EnvName)> {
    let (app, env) = line.split_once('/')?;
    let app = s.apps.get(&AppName::parse(app).ok()?)?;
    let env = EnvName::parse(env)
        .ok()
        .filter(|e| app.has_environment(e))?;
    Some((app, env))
}

/// The Unlock (holder) or Take over (anyone else) form of a lock.
fn lock_form(viewer: &Viewer, app: &AppConfig, env: &EnvName, lock: &EnvLock) -> Markup {
    let mine = lock.user == viewer.id;
    html! {
        form.inline method="post" action="/actions/unlock" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            input type="hidden" name="app" value=(app.name.as_str());
            input type="hidden" name="env" value=(env.as_str());
            @if mine {
                button type="submit" { "Unlock" }
            } @else {
                input type="hidden" name="takeover" value="1";
                button.danger type="submit" { "Take over" }
            }
        }
    }
}

fn render(s: &WebState, viewer: &Viewer, d: &Desk<'_>, now: DateTime<Utc>) -> Markup {
    html! {
        section aria-labelledby="locks-h" #locks {
            h2 #locks-h { "Locks" }
            @if d.locks.is_empty() {
                p.none { "No environment is locked." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Where" } th scope="col" { "Held by" } th scope="col" { "Reason" } th scope="col" { "Since" } th scope="col" { "Until" } th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody {
                        @for (line, lock) in &d.locks {
                            @let tz = tz_of(s, line);
                            tr data-line=(line) {
                                th scope="row" { (line) }
                                td { (lock.shown_name()) }
                                td { (lock.reason) }
                                td { (time(lock.at, now, tz)) }
                                td { @match lock.expires_at { Some(until) => (time(until, now, tz)), None => "until unlocked" } }
                                td { @if let Some((app, env)) = line_target(s, line) { (lock_form(viewer, app, &env, lock)) } }
                            }
                        }
                    }
                } }
            }
        }
        section aria-labelledby="line-h" #line {
            h2 #line-h { "Waiting in line" }
            h3 { "Chat's desk line (" em { "deploy … when free" } ")" }
            @if d.line.is_empty() {
                p.none { "Nobody waits for a lock or freeze to end." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Where" } th scope="col" { "Who" } th scope="col" { "Ref" } th scope="col" { "Since" } th scope="col" { "Gives up" } } }
                    tbody {
                        @for r in &d.line {
                            @let tz = tz_of(s, &r.line);
                            tr { th scope="row" { (r.line) } td { (if r.user_name.is_empty() { &r.user } else { &r.user_name }) } td { code { (r.git_ref) } } td { (time(r.at, now, tz)) } td { (time(r.expires_at, now, tz)) } }
                        }
                    }
                } }
            }
            h3 { "faseng's runs in line" }
            @if d.runs.is_empty() {
                p.none { "No run is running or waiting." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Where" } th scope="col" { "Position" } th scope="col" { "Deployment" } th scope="col" { "Ref" } th scope="col" { "Who" } th scope="col" { "State" } } }
                    tbody {
                        @for (line, runs) in &d.runs {
                            @for (i, r) in runs.iter().enumerate() {
                                tr {
                                    th scope="row" { (line) }
                                    td { (i + 1) }
                                    td { a href=(run_path(&r.key)) { "#" (r.deployment_id) } }
                                    td { code { (r.git_ref) "@" (short_sha(&r.sha)) } }
                                    td { (r.creator) }
                                    td { (super::state_badge(r.state)) }
                                }
                            }
                        }
                    }
                } }
            }
        }
        section aria-labelledby="freezes-h" #freezes {
            h2 #freezes-h { "Freezes" }
            @if d.windows.is_empty() && d.freezes.is_empty() {
                p.none { "No freeze is in force or coming in the next 14 days." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Freezes" } th scope="col" { "Reason" } th scope="col" { "From" } th scope="col" { "Until" } th scope="col" { "Made" } } }
                    tbody {
                        @for (app, o) in &d.windows {
                            @let tz = app.tz();
                            tr data-active=(o.is_active(now)) {
                                th scope="row" { (app.name) " in " (o.environments.as_ref().map_or_else(|| "every environment".to_owned(), |e| e.iter().map(EnvName::as_str).collect::<Vec<_>>().join(", "))) }
                                td { @if o.is_active(now) { span.badge.freeze { "in force" } " " } (o.reason) }
                                td { (time(o.interval.start, now, tz)) }
                                td { (time(o.interval.end, now, tz)) }
                                td { "app.json" }
                            }
                        }
                        @for f in &d.freezes {
                            tr data-active=(f.active(now)) {
                                th scope="row" { (f.app.as_deref().unwrap_or("every app")) " in " (f.environment.as_deref().unwrap_or("every environment")) }
                                td { @if f.active(now) { span.badge.freeze { "in force" } " " } (f.reason) }
                                td { (time(f.from, now, Tz::UTC)) }
                                td { (time(f.until, now, Tz::UTC)) }
                                td { "in chat by " (if f.by_name.is_empty() { &f.by } else { &f.by_name }) }
                            }
                        }
                    }
                } }
            }
            @if !d.unfreezes.is_empty() {
                h3 { "Unfreezes granted" }
                ul {
                    @for g in &d.unfreezes {
                        li { (g.app) " in " (g.environment) " for " strong { (if g.user_name.is_empty() { &g.user } else { &g.user_name }) } ": " (g.reason) ", until " (time(g.until, now, Tz::UTC)) }
                    }
                }
            }
        }
        section aria-labelledby="requests-h" #requests {
            h2 #requests-h { "Release requests" }
            @if d.requests.is_empty() {
                p.none { "No release request is open." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Request" } th scope="col" { "Where" } th scope="col" { "Version" } th scope="col" { "Asked by" } th scope="col" { "State" } th scope="col" { "Approvals" } th scope="col" { "Runs out" } } }
                    tbody {
                        @for r in &d.requests {
                            @let tz = tz_of(s, &format!("{}/{}", r.app, r.environment));
                            tr {
                                th scope="row" { "#" (r.id) }
                                td { (r.app) " in " (r.environment) }
                                td { code { (r.git_ref) "@" (short_sha(&r.sha)) } }
                                td { (if r.requester_name.is_empty() { &r.requester } else { &r.requester_name }) }
                                td { span.badge { (r.state.as_str()) } }
                                td { (r.approvals.len()) }
                                td { (time(r.expires_at, now, tz)) }
                            }
                        }
                    }
                } }
            }
        }
        section aria-labelledby="audit-h" #audit {
            h2 #audit-h { "Audit" }
            @if d.audit.is_empty() {
                p.none { "Nothing has been recorded yet." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "Where" } th scope="col" { "Detail" } } }
                    tbody {
                        @for a in &d.audit {
                            @let e = &a.entry;
                            tr {
                                td { (time(e.at, now, Tz::UTC)) }
                                td { (if e.actor_name.is_empty() { &e.actor } else { &e.actor_name }) }
                                td { (e.action.as_str()) }
                                td { (e.app) @if let Some(env) = &e.environment { " in " (env) } }
                                td { @if let Some(r) = &e.git_ref { code { (r) } " " } (e.detail) }
                            }
                        }
                    }
                } }
            }
        }
    }
}
