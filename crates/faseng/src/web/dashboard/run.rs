//! `/runs/{owner}/{repo}/{id}`: one deployment — its facts, a "rollback" badge, its stages as
//! a flow, its log with ANSI colours, links to the commit and to the compare view against the
//! previous successful deploy, and a rollback form when it is an earlier good version — and
//! `…/events`, the stream the page follows while the run goes on: `line` (a log line as
//! HTML), `stages` (the flow's items as HTML), `state`, then `end`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use deploy_core::desk::Tz;
use deploy_core::{CommitSha, RepoName, RunKey};
use futures::{Stream, StreamExt as _};
use maud::{Markup, html};

use super::ansi::line_html;
use super::layout::{self, Nav};
use super::overview::newest_success;
use super::{PageError, PageResult, Viewer, deploys, short_sha, time, version};
use crate::messages::{self, dashboard as say};
use crate::store::{RunRecord, RunState, StageRecord, StageRecordState, Store};
use crate::stream_slots::StreamSlot;
use crate::web::{STREAM_MAX, STREAM_POLL, WebState};

/// The run a path names (`owner`, `repo`, `id`), when it names one at all.
fn run_key(owner: &str, repo: &str, id: &str) -> Option<(RepoName, u64, RunKey)> {
    let repo = RepoName::parse(&format!("{owner}/{repo}")).ok()?;
    let id: u64 = id.parse().ok()?;
    let key = RunKey::new(&repo, id);
    Some((repo, id, key))
}

/// What the page shows besides the run itself.
struct Context {
    /// The previous successful deploy of another sha in the environment (the compare base).
    previous: Option<RunRecord>,
    /// What is deployed in the environment now.
    current: Option<RunRecord>,
    /// The commit page and the compare view on GitHub.
    commit_url: Option<String>,
    compare_url: Option<String>,
    /// The run's signed log link (shareable without signing in).
    log_link: String,
    /// Whether the rollback form is offered.
    rollback: bool,
    tz: Tz,
}

/// `{web}/{owner}/{repo}/{rest…}` on GitHub's web site.
fn github_url(base: &url::Url, repo: &RepoName, rest: &[&str]) -> Option<String> {
    let mut url = base.clone();
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend([repo.owner(), repo.name()])
        .extend(rest);
    Some(url.to_string())
}

/// `GET /runs/{owner}/{repo}/{id}`.
pub(crate) async fn page(
    State(s): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Path((owner, repo, id)): Path<(String, String, String)>,
) -> PageResult {
    let not_found = || PageError::NotFound(say::no_such_deployment().to_owned());
    let (repo, id, key) = run_key(&owner, &repo, &id).ok_or_else(not_found)?;
    let run = s.store.get_run(key.as_str()).await?.ok_or_else(not_found)?;
    let lines = s.store.read_log(key.as_str(), 0).await?;
    let store = s.store.as_ref();
    let previous = if deploys(&run) {
        newest_success(
            store,
            &run.app,
            &run.environment,
            Some(run.received_at),
            Some(&run.sha),
        )
        .await?
    } else {
        None
    };
    let current = newest_success(store, &run.app, &run.environment, None, None).await?;
    let config = deploy_core::AppName::parse(&run.app)
        .ok()
        .and_then(|a| s.apps.get(&a));
    let known_env = config.is_some_and(|c| {
        deploy_core::EnvName::parse(&run.environment).is_ok_and(|e| c.has_environment(&e))
    });
    let sha = CommitSha::parse(&run.sha).ok();
    let commit_url = sha
        .as_ref()
        .and_then(|sha| github_url(&s.github_web_url, &repo, &["commit", sha.as_str()]));
    let compare_url = match (&sha, previous.as_ref().map(|p| CommitSha::parse(&p.sha))) {
        (Some(sha), Some(Ok(base))) => github_url(
            &s.github_web_url,
            &repo,
            &["compare", &format!("{}...{}", base.as_str(), sha.as_str())],
        ),
        _ => None,
    };
    let ctx = Context {
        rollback: known_env
            && run.state == RunState::Success
            && deploys(&run)
            && current.as_ref().is_some_and(|c| c.sha != run.sha),
        previous,
        current,
        commit_url,
        compare_url,
        log_link: crate::links::page_path(&repo, id, &s.link_key.secret(&repo, id)),
        tz: config.map_or(Tz::UTC, deploy_core::AppConfig::tz),
    };
    let now = s.clock.now();
    Ok(layout::page(
        &format!("{} to {} #{}", run.app, run.environment, run.deployment_id),
        &viewer,
        Nav::None,
        render(&viewer, &run, &lines, &ctx, now),
    ))
}

/// How a stage's state reads.
fn stage_state_label(state: StageRecordState) -> (&'static str, &'static str) {
    match state {
        StageRecordState::Pending => ("pending", "waiting"),
        StageRecordState::Running => ("running", "running"),
        StageRecordState::Done => ("done", "done"),
        StageRecordState::Failed => ("failed", "failed"),
    }
}

/// The items of the stage flow (what the `stages` event carries, too).
pub(crate) fn stage_items(stages: &[StageRecord], now: DateTime<Utc>) -> Markup {
    html! {
        @if stages.is_empty() {
            li.stage.none data-state="none" { "The stages show once the run starts." }
        }
        @for stage in stages {
            @let (state, label) = stage_state_label(stage.state);
            li.stage data-stage=(stage.name) data-state=(state) {
                span.stage-name { (stage.name) }
                span.stage-state { (label) }
                span.stage-time {
                    @match (stage.started_at, stage.finished_at) {
                        (Some(start), Some(end)) => {
                            (messages::duration((end - start).num_milliseconds() as f64 / 1000.0))
                        }
                        (Some(start), None) => {
                            "for " (messages::duration((now - start).num_milliseconds() as f64 / 1000.0))
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

fn render(
    viewer: &Viewer,
    run: &RunRecord,
    lines: &[String],
    ctx: &Context,
    now: DateTime<Utc>,
) -> Markup {
    let tz = ctx.tz;
    html! {
        p.muted {
            a href="/" { "Overview" } " · "
            a href=(format!("/apps/{}", run.app)) { (run.app) " history" }
        }
        p.status {
            span #run-state.badge.state data-state=(run.state.as_str()) { (super::state_label(run.state)) }
            @if let Some(mark) = &run.rollback {
                " " span.badge.rollback #rollback data-from=(mark.from) data-to=(mark.to) { "rollback" }
                " from " code { (short_sha(&mark.from)) } " to " code { (short_sha(&mark.to)) }
            }
            " " (run.description)
        }
        dl.facts {
            dt { "Version" } dd { (version(run)) }
            dt { "Environment" } dd { (run.environment) }
            dt { "Task" } dd { (run.task) }
            dt { "Who" } dd { (run.creator) }
            dt { "Received" } dd { (time(run.received_at, now, tz)) }
            @if let Some(at) = run.started_at { dt { "Started" } dd { (time(at, now, tz)) } }
            @if let Some(at) = run.finished_at { dt { "Finished" } dd { (time(at, now, tz)) } }
            @if let Some(secs) = run.duration_secs() { dt { "Took" } dd { (messages::duration(secs)) } }
            dt { "Repository" } dd { (run.repo) }
            dt { "On GitHub" }
            dd #links {
                @if let Some(url) = &ctx.commit_url { a #commit-link href=(url) rel="noreferrer" { "commit " (short_sha(&run.sha)) } }
                @if let (Some(url), Some(prev)) = (&ctx.compare_url, &ctx.previous) {
                    " · " a #compare-link href=(url) rel="noreferrer" { "changes since " (short_sha(&prev.sha)) } " (#" (prev.deployment_id) ")"
                }
            }
            dt { "Shareable log" } dd { a href=(ctx.log_link) { "log link" } " (opens without signing in)" }
        }
        @if ctx.rollback {
            section aria-labelledby="rollback-h" #rollback-section {
                h2 #rollback-h { "Roll back" }
                p {
                    (run.environment) " runs "
                    @if let Some(c) = &ctx.current { code { (c.git_ref) "@" (short_sha(&c.sha)) } } @else { "something else" }
                    " now. Rolling back deploys this version (" (version(run)) ") again, with the same checks as a deploy from chat; the environment is then locked for you."
                }
                form #rollback-form method="post" action="/actions/rollback" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    input type="hidden" name="app" value=(run.app);
                    input type="hidden" name="env" value=(run.environment);
                    input type="hidden" name="deployment" value=(run.deployment_id);
                    button.primary type="submit" { "Roll back " (run.environment) " to #" (run.deployment_id) }
                }
            }
        }
        section aria-labelledby="stages-h" {
            h2 #stages-h { "Stages" }
            ol #stages.stages aria-live="polite" { (stage_items(&run.stages, now)) }
        }
        section aria-labelledby="log-h" {
            h2 #log-h { "Log" }
            p #log-follow aria-live="polite" {}
            div.log-wrap {
                pre #log tabindex="0" aria-labelledby="log-h" data-lines=(lines.len())
                    data-from=(lines.len())
                    data-events=[(!run.state.is_final()).then(|| format!("{}/events", super::run_path(&run.key)))] {
                    @for line in lines { span.line { (line_html(line)) } }
                }
            }
            @if !run.state.is_final() {
                noscript { p { "This page does not follow the log without script: reload it to see more." } }
            }
        }
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct From {
    from: Option<usize>,
}

/// `GET /runs/{owner}/{repo}/{id}/events?from=N`.
pub(crate) async fn events(
    State(s): State<WebState>,
    Extension(_viewer): Extension<Viewer>,
    Path((owner, repo, id)): Path<(String, String, String)>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Query(q): Query<From>,
) -> Response {
    let Some((_, _, key)) = run_key(&owner, &repo, &id) else {
        return PageError::NotFound(say::no_such_deployment().to_owned()).into_response();
    };
    match s.store.get_run(key.as_str()).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return PageError::NotFound(say::no_such_deployment().to_owned()).into_response();
        }
        Err(e) => return PageError::Unavailable(e).into_response(),
    }
    let slot = match s.streams.take(client.ip()) {
        Ok(slot) => slot,
        Err(refused) => return crate::web::stream_refused(refused),
    };
    let live = Live {
        store: s.store.clone(),
        clock: s.clock.clone(),
        key: key.to_string(),
        next: q.from.unwrap_or(0),
        deadline: tokio::time::Instant::now() + STREAM_MAX,
        stages: None,
        state: None,
        ended: false,
        _slot: slot,
    };
    Sse::new(live_stream(live))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Where a page's stream is: the next log line, the stages and state last sent.
struct Live {
    store: Arc<dyn Store>,
    clock: Arc<dyn deploy_core::Clock>,
    key: String,
    next: usize,
    deadline: tokio::time::Instant,
    stages: Option<Vec<StageRecord>>,
    state: Option<RunState>,
    ended: bool,
    _slot: StreamSlot,
}

type Events = Vec<Result<Event, Infallible>>;

impl Live {
    /// What has happened since the last look: new lines first, then stage and state
    /// changes; at the end (final state, run gone, or the stream's deadline) also `end`.
    async fn look(&mut self) -> Events {
        let lines = self
            .store
            .read_log(&self.key, self.next)
            .await
            .unwrap_or_default();
        let mut events: Events = Vec::new();
        if !lines.is_empty() {
            self.next += lines.len();
            events.extend(lines.iter().map(|l| {
                Ok(Event::default()
                    .event("line")
                    .data(line_html(l).into_string()))
            }));
            return events;
        }
        let run = self.store.get_run(&self.key).await.ok().flatten();
        if let Some(run) = &run {
            if self.stages.as_ref() != Some(&run.stages) {
                let items = stage_items(&run.stages, self.clock.now()).into_string();
                events.push(Ok(Event::default().event("stages").data(items)));
                self.stages = Some(run.stages.clone());
            }
            if self.state != Some(run.state) {
                events.push(Ok(Event::default().event("state").data(run.state.as_str())));
                self.state = Some(run.state);
            }
        }
        if run.as_ref().is_none_or(|r| r.state.is_final())
            || tokio::time::Instant::now() >= self.deadline
        {
            // Lines written just before the final state was: read once more.
            let late = self
                .store
                .read_log(&self.key, self.next)
                .await
                .unwrap_or_default();
            self.next += late.len();
            events.extend(late.iter().map(|l| {
                Ok(Event::default()
                    .event("line")
                    .data(line_html(l).into_string()))
            }));
            if run.is_none() {
                events.push(Ok(Event::default().event("state").data("unknown")));
            }
            events.push(Ok(Event::default().event("end").data("")));
            self.ended = true;
        }
        events
    }
}

fn live_stream(live: Live) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(live, |mut live| async move {
        if live.ended {
            return None;
        }
        loop {
            let events = live.look().await;
            if !events.is_empty() {
                return Some((futures::stream::iter(events), live));
            }
            tokio::time::sleep(STREAM_POLL).await;
        }
    })
    .flatten()
}
