//! Reconciling with GitHub: GitHub does not redeliver a webhook that failed (refused, never
//! sent, sent while faseng was down), so every [`ReconcileSettings::every`] and at start one
//! faseng process of the store — the holder of the `reconcile` duty lease — lists the newest
//! deployments of every repository in the operator's app.json and takes each one created
//! within [`ReconcileSettings::window`] that has no status and is unknown to the store through
//! the same [`Intake`] as a webhook. The store's dedup by run key makes webhook and reconciler
//! deploy a deployment exactly once, whichever sees it first, even if two processes reconcile.
//!
//! Lists are asked for with `If-None-Match` (an unchanged list answers 304 and costs no rate
//! limit); a rate-limited answer pauses reconciling as long as GitHub says (bounded by
//! [`MAX_WAIT`]), and passes are spaced out when little of the rate limit is left.
//!
//! Transport ([`GithubReader`]: one GET with its status, headers and body) is kept apart from
//! the pass, so the pass is tested against a scripted GitHub.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deploy_core::{Apps, Clock, GithubClients, RepoName, Secret, Span};
use http::HeaderMap;
use serde_json::Value;
use tokio::sync::watch;

use crate::intake::{Intake, IntakeOutcome};
use crate::metrics::Metrics;
use crate::store::{RunRecord, Store};
use crate::webhook::{DeploymentEvent, WebhookRepository};

/// The store duty lease only whose holder reconciles.
pub const DUTY: &str = "reconcile";

/// The longest a rate limit pauses reconciling (GitHub's limits reset within the hour).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// How long a rate-limited answer without any hint of when to come back pauses reconciling
/// (GitHub's advice for secondary rate limits: at least a minute).
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Deployments asked for per repository and pass: GitHub's largest page, the first only.
pub const PAGE: usize = 100;

/// How often and how far back faseng reconciles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileSettings {
    /// `FASENG_RECONCILE_SECS`: time between passes; zero turns reconciling off.
    pub every: Duration,
    /// `FASENG_RECONCILE_WINDOW`: deployments created earlier are never picked up.
    pub window: Span,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(30),
            window: Span::from_secs(3600),
        }
    }
}

impl ReconcileSettings {
    /// False when reconciling is turned off.
    pub fn is_on(&self) -> bool {
        !self.every.is_zero()
    }

    /// How long the lease lasts unrenewed: three passes, so a stopped process's lease lapses
    /// and another takes over, and a slow pass does not lose it.
    pub fn lease_ttl(&self) -> Duration {
        self.every.saturating_mul(3)
    }
}

/// A repository to reconcile and how to reach its GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `owner/name`.
    pub repo: RepoName,
    /// The app's `github_api` (else the default API).
    pub api: Option<String>,
    /// The app's `github_token` (else the default credential).
    pub token: Option<Secret>,
}

impl Target {
    fn key(&self) -> String {
        format!("{}|{}", self.api.as_deref().unwrap_or_default(), self.repo)
    }
}

/// The distinct repositories of the operator's apps (by API and name; the first app of a
/// repository that sets `github_api`/`github_token` gives them), split into those faseng has
/// GitHub credentials for and those it has none for (never listed: GitHub would show only
/// public repositories, at a rate limit of 60 requests an hour).
pub fn targets(apps: &Apps, default_credentials: bool) -> (Vec<Target>, Vec<Target>) {
    let mut seen: HashMap<(Option<String>, RepoName), usize> = HashMap::new();
    let mut all: Vec<Target> = Vec::new();
    for app in apps.iter() {
        let api = app
            .github_api
            .as_deref()
            .map(deploy_core::github::normalize_api_url);
        match seen.get(&(api.clone(), app.repository.clone())) {
            Some(&i) => {
                if all[i].token.is_none() {
                    all[i].token = app.github_token.clone();
                }
            }
            None => {
                seen.insert((api.clone(), app.repository.clone()), all.len());
                all.push(Target {
                    repo: app.repository.clone(),
                    api,
                    token: app.github_token.clone(),
                });
            }
        }
    }
    all.into_iter()
        .partition(|t| default_credentials || t.token.is_some())
}

/// One GET's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers (`ETag`, rate limit).
    pub headers: HeaderMap,
    /// Body text (empty for 304).
    pub body: String,
}

/// Reads GitHub: one GET, with `If-None-Match` when given, answered whatever its status.
#[async_trait]
pub trait GithubReader: Send + Sync + 'static {
    /// GETs `route` (`/repos/…`) on `target`'s GitHub.
    async fn get(
        &self,
        target: &Target,
        route: &str,
        if_none_match: Option<&str>,
    ) -> anyhow::Result<Answer>;
}

/// Reads GitHub through octocrab's clients (the app's API and token when it sets them).
#[derive(Debug, Clone)]
pub struct OctocrabReader {
    clients: Arc<GithubClients>,
}

impl OctocrabReader {
    /// A reader over the shared client factory.
    pub fn new(clients: Arc<GithubClients>) -> Self {
        Self { clients }
    }
}

#[async_trait]
impl GithubReader for OctocrabReader {
    async fn get(
        &self,
        target: &Target,
        route: &str,
        if_none_match: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let gh = self
            .clients
            .for_repo(&target.repo, target.api.as_deref(), target.token.as_ref())
            .await?;
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(
                http::header::IF_NONE_MATCH,
                http::HeaderValue::from_str(tag).context("an ETag GitHub sent")?,
            );
        }
        // The raw call: a 304 or a rate-limited answer is read here, not turned into an error.
        let response = gh
            ._get_with_headers(route, Some(headers))
            .await
            .with_context(|| format!("GET {route}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = gh
            .body_to_string(response)
            .await
            .with_context(|| format!("reading the answer to GET {route}"))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header(headers, name).and_then(|v| v.parse().ok())
}

fn until(then: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (then - now).to_std().unwrap_or_default()
}

/// How long a rate-limited answer says to wait, bounded by 1 s and [`MAX_WAIT`]; `None` when
/// the answer is not rate limiting. A 403 or 429 is rate limiting when it carries
/// `Retry-After` (seconds or an HTTP date), or `X-RateLimit-Remaining: 0` (then wait until
/// `X-RateLimit-Reset`), or is a 429 or says "rate limit" (then [`DEFAULT_RATE_LIMIT_WAIT`]).
/// A 403 without any of these is a refusal, not a rate limit.
pub fn rate_limit_wait(answer: &Answer, now: DateTime<Utc>) -> Option<Duration> {
    if !matches!(answer.status, 403 | 429) {
        return None;
    }
    let h = &answer.headers;
    let retry_after = header(h, "retry-after").and_then(|v| {
        v.parse::<u64>().map(Duration::from_secs).ok().or_else(|| {
            DateTime::parse_from_rfc2822(v)
                .ok()
                .map(|at| until(at.with_timezone(&Utc), now))
        })
    });
    let reset = || {
        (header_u64(h, "x-ratelimit-remaining") == Some(0))
            .then(|| header_u64(h, "x-ratelimit-reset"))
            .flatten()
            .and_then(|secs| DateTime::from_timestamp(i64::try_from(secs).ok()?, 0))
            .map(|at| until(at, now))
    };
    let said_so = answer.status == 429
        || answer.body.to_ascii_lowercase().contains("rate limit")
        || header_u64(h, "x-ratelimit-remaining") == Some(0);
    let wait = retry_after
        .or_else(reset)
        .or(said_so.then_some(DEFAULT_RATE_LIMIT_WAIT))?;
    Some(wait.clamp(Duration::from_secs(1), MAX_WAIT))
}

/// What is left of GitHub's rate limit, from an answer's `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Requests left.
    pub remaining: u64,
    /// Requests per window.
    pub limit: u64,
    /// When the window starts again.
    pub reset: DateTime<Utc>,
}

impl Budget {
    /// The budget an answer tells of, if it tells.
    pub fn of(answer: &Answer) -> Option<Self> {
        let h = &answer.headers;
        Some(Self {
            remaining: header_u64(h, "x-ratelimit-remaining")?,
            limit: header_u64(h, "x-ratelimit-limit").unwrap_or(5000),
            reset: DateTime::from_timestamp(
                i64::try_from(header_u64(h, "x-ratelimit-reset")?).ok()?,
                0,
            )?,
        })
    }

    /// The least time until the next pass when little is left (under a tenth of the limit):
    /// passes are spaced so that reconciling, at `requests` per pass, uses at most half of
    /// what remains before the reset; with nothing left, the wait is until the reset. `None`
    /// while plenty is left. Bounded by [`MAX_WAIT`].
    pub fn pace(&self, requests: u64, now: DateTime<Utc>) -> Option<Duration> {
        let to_reset = until(self.reset, now);
        if self.remaining == 0 {
            return Some(to_reset.min(MAX_WAIT));
        }
        if self.remaining.saturating_mul(10) >= self.limit {
            return None;
        }
        let passes = self.remaining / 2 / requests.max(1);
        let wait = if passes == 0 {
            to_reset
        } else {
            to_reset / u32::try_from(passes).unwrap_or(u32::MAX)
        };
        Some(wait.min(MAX_WAIT))
    }
}

/// The deployments of a listing created within `window` of `now` (a deployment dated later
/// than `now`, by clock skew, is within it), with their ids; entries without an id or a
/// readable `created_at` are left out.
pub fn in_window(
    list: &[Value],
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> Vec<(u64, &Value)> {
    let since = now - window;
    list.iter()
        .filter_map(|d| {
            let id = d.get("id")?.as_u64()?;
            let created = DateTime::parse_from_rfc3339(d.get("created_at")?.as_str()?).ok()?;
            (created.with_timezone(&Utc) >= since).then_some((id, d))
        })
        .collect()
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Run keys of the deployments this pass found and queued.
    pub found: Vec<String>,
    /// Repositories whose list was unchanged (304).
    pub unchanged: usize,
    /// Repositories that could not be reconciled this pass (tried again next pass).
    pub failed: usize,
    /// The pass stopped for GitHub's rate limit and reconciling pauses this long.
    pub rate_limited: Option<Duration>,
    /// No pass was made: a rate limit is being waited out.
    pub skipped: bool,
}

/// Why a repository's reconciling stopped.
enum Stop {
    /// GitHub's rate limit: pause this long, skip the rest of the pass.
    RateLimited(Duration),
    /// Anything else: try again next pass.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

/// What a reconciler remembers between passes.
#[derive(Debug, Default)]
struct State {
    /// Target key → ETag of the last list whose every candidate was dealt with.
    lists: HashMap<String, String>,
    /// Target key → ETag and repository object.
    repos: HashMap<String, (String, WebhookRepository)>,
    /// No pass before this (a rate limit, or a low budget).
    not_before: Option<DateTime<Utc>>,
    /// Targets whose last pass failed (their failure was logged).
    failing: HashSet<String>,
    /// Passes are spaced out for a low rate-limit budget (and it was logged).
    slowed: bool,
}

/// Counters of one pass.
#[derive(Debug, Default)]
struct Tally {
    /// Answers that counted against the rate limit (all but 304s).
    requests: u64,
    /// The newest budget GitHub told of.
    budget: Option<Budget>,
}

/// The duty lease a pass renews between repositories.
struct Lease<'a> {
    store: &'a dyn Store,
    clock: &'a dyn Clock,
    holder: &'a str,
    ttl: Duration,
}

impl Lease<'_> {
    async fn renew(&self) -> anyhow::Result<bool> {
        self.store
            .acquire_duty(DUTY, self.holder, self.clock.now(), self.ttl)
            .await
    }
}

/// Lists GitHub deployments faseng may have missed and takes them in.
pub struct Reconciler {
    targets: Vec<Target>,
    reader: Arc<dyn GithubReader>,
    store: Arc<dyn Store>,
    intake: Arc<Intake>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    settings: ReconcileSettings,
    state: Mutex<State>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("targets", &self.targets.len())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler of `targets`, taking deployments in through `intake`.
    pub fn new(
        targets: Vec<Target>,
        reader: Arc<dyn GithubReader>,
        store: Arc<dyn Store>,
        intake: Arc<Intake>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        settings: ReconcileSettings,
    ) -> Self {
        Self {
            targets,
            reader,
            store,
            intake,
            metrics,
            clock,
            settings,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass over every repository, without the lease (tests; [`Reconciler::run`] holds it).
    pub async fn pass(&self) -> PassReport {
        self.pass_holding(None).await
    }

    async fn pass_holding(&self, lease: Option<&Lease<'_>>) -> PassReport {
        let now = self.clock.now();
        let mut report = PassReport::default();
        if self.state().not_before.is_some_and(|t| now < t) {
            report.skipped = true;
            return report;
        }
        let mut tally = Tally::default();
        for (i, target) in self.targets.iter().enumerate() {
            if i > 0
                && let Some(lease) = lease
            {
                match lease.renew().await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!("another process took the reconcile lease mid-pass");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "could not renew the reconcile lease; ending this pass");
                        break;
                    }
                }
            }
            let key = target.key();
            match self
                .reconcile_repo(target, now, &mut tally, &mut report)
                .await
            {
                Ok(()) => {
                    if self.state().failing.remove(&key) {
                        tracing::info!(repository = %target.repo, "reconciling {} works again", target.repo);
                    }
                }
                Err(Stop::Failed(e)) => {
                    report.failed += 1;
                    let error = format!("{e:#}");
                    if self.state().failing.insert(key) {
                        tracing::warn!(repository = %target.repo, %error, "could not reconcile {} with GitHub; trying again every pass", target.repo);
                    } else {
                        tracing::debug!(repository = %target.repo, %error, "reconciling still fails");
                    }
                }
                Err(Stop::RateLimited(wait)) => {
                    let at = self.clock.now();
                    let resume = at + chrono::Duration::from_std(wait).unwrap_or_default();
                    tracing::warn!(
                        repository = %target.repo,
                        wait_secs = wait.as_secs(),
                        until = %resume.to_rfc3339(),
                        "GitHub's rate limit: reconciling pauses for {}s, as GitHub asks (not an error)",
                        wait.as_secs()
                    );
                    let mut state = self.state();
                    state.not_before = Some(state.not_before.map_or(resume, |t| t.max(resume)));
                    report.rate_limited = Some(wait);
                    return report;
                }
            }
        }
        self.pace(&tally);
        report
    }

    /// Spaces passes out while little of the rate limit is left.
    fn pace(&self, tally: &Tally) {
        let Some(budget) = tally.budget else { return };
        let now = self.clock.now();
        let mut state = self.state();
        match budget.pace(tally.requests, now) {
            Some(wait) if wait > self.settings.every => {
                if !state.slowed {
                    tracing::info!(
                        remaining = budget.remaining,
                        limit = budget.limit,
                        "little of GitHub's rate limit is left ({} of {}): reconciling slows to a pass every {}s until it resets",
                        budget.remaining,
                        budget.limit,
                        wait.as_secs()
                    );
                }
                state.slowed = true;
                state.not_before = Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
            }
            _ => {
                if state.slowed {
                    tracing::info!(
                        "GitHub's rate limit has room again: reconciling at its usual pace"
                    );
                }
                state.slowed = false;
            }
        }
    }

    /// Checks an answer for the rate limit and notes the budget it tells of.
    fn check(&self, answer: &Answer, tally: &mut Tally) -> Result<(), Stop> {
        if answer.status != 304 {
            tally.requests += 1;
        }
        if let Some(budget) = Budget::of(answer) {
            tally.budget = Some(budget);
        }
        match rate_limit_wait(answer, self.clock.now()) {
            Some(wait) => Err(Stop::RateLimited(wait)),
            None => Ok(()),
        }
    }

    async fn get(
        &self,
        target: &Target,
        route: &str,
        etag: Option<&str>,
        tally: &mut Tally,
    ) -> Result<Answer, Stop> {
        let answer = self.reader.get(target, route, etag).await?;
        self.check(&answer, tally)?;
        Ok(answer)
    }

    async fn reconcile_repo(
        &self,
        target: &Target,
        now: DateTime<Utc>,
        tally: &mut Tally,
        report: &mut PassReport,
    ) -> Result<(), Stop> {
        let repo = &target.repo;
        let key = target.key();
        let known_etag = self.state().lists.get(&key).cloned();
        let route = format!(
            "/repos/{}/{}/deployments?per_page={PAGE}",
            repo.owner(),
            repo.name()
        );
        let answer = self
            .get(target, &route, known_etag.as_deref(), tally)
            .await?;
        if answer.status == 304 {
            report.unchanged += 1;
            return Ok(());
        }
        let list: Vec<Value> = parse(&answer, &format!("the deployments of {repo}"))?;
        let window = self.settings.window.as_chrono();
        for (id, deployment) in in_window(&list, now, window) {
            let run_key = RunRecord::key_for(&repo.to_string(), id);
            if self.store.get_run(&run_key).await?.is_some() {
                continue;
            }
            let statuses_route = format!(
                "/repos/{}/{}/deployments/{id}/statuses?per_page=1",
                repo.owner(),
                repo.name()
            );
            let answer = self.get(target, &statuses_route, None, tally).await?;
            if answer.status == 404 {
                continue; // deleted since it was listed
            }
            let statuses: Vec<Value> = parse(
                &answer,
                &format!("the statuses of deployment {id} of {repo}"),
            )?;
            if !statuses.is_empty() {
                continue; // another deployer's, or ours from before the store knew it
            }
            let repository = self.repository(target, tally).await?;
            self.take_in(repo, id, deployment, repository, report)
                .await?;
        }
        if let Some(etag) = header(&answer.headers, "etag") {
            self.state().lists.insert(key, etag.to_owned());
        }
        Ok(())
    }

    /// The repository object (for `clone_url`), asked for again only when it changed.
    async fn repository(
        &self,
        target: &Target,
        tally: &mut Tally,
    ) -> Result<WebhookRepository, Stop> {
        let key = target.key();
        let cached = self.state().repos.get(&key).cloned();
        let route = format!("/repos/{}/{}", target.repo.owner(), target.repo.name());
        let answer = self
            .get(
                target,
                &route,
                cached.as_ref().map(|(etag, _)| etag.as_str()),
                tally,
            )
            .await?;
        if answer.status == 304
            && let Some((_, repository)) = cached
        {
            return Ok(repository);
        }
        let repository: WebhookRepository =
            parse(&answer, &format!("the repository {}", target.repo))?;
        if let Some(etag) = header(&answer.headers, "etag") {
            self.state()
                .repos
                .insert(key, (etag.to_owned(), repository.clone()));
        }
        Ok(repository)
    }

    /// Takes one missed deployment through the intake, as its webhook would have been.
    async fn take_in(
        &self,
        repo: &RepoName,
        id: u64,
        deployment: &Value,
        repository: WebhookRepository,
        report: &mut PassReport,
    ) -> Result<(), Stop> {
        let event = match serde_json::from_value(deployment.clone()) {
            Ok(deployment) => DeploymentEvent {
                action: Some("created".to_owned()),
                deployment,
                repository,
                sender: None,
            },
            Err(e) => {
                // Its webhook would have been refused as malformed too.
                tracing::warn!(repository = %repo, deployment = id, error = %e, "a deployment found by reconciling is unusable; left alone");
                return Ok(());
            }
        };
        let delivery_id = format!("reconcile:{repo}/{id}");
        match self
            .intake
            .accept(&delivery_id, &event)
            .await
            .with_context(|| format!("queueing deployment {id} of {repo}"))?
        {
            IntakeOutcome::Accepted { key } => {
                self.metrics.reconciled();
                tracing::info!(
                    repository = %repo,
                    deployment = id,
                    environment = %event.deployment.environment,
                    git_ref = %event.deployment.git_ref,
                    "deployment {id} of {repo} ({} to {}) was found by reconciling with GitHub: its webhook never arrived; queued",
                    event.deployment.git_ref.escape_debug(),
                    event.deployment.environment.escape_debug(),
                );
                report.found.push(key);
            }
            IntakeOutcome::Duplicate => {
                tracing::debug!(repository = %repo, deployment = id, "its webhook came first");
            }
            IntakeOutcome::Refused(why) => {
                tracing::warn!(repository = %repo, deployment = id, %why, "a deployment found by reconciling was refused");
            }
        }
        Ok(())
    }

    /// Reconciles every [`ReconcileSettings::every`], from now, whenever this process holds
    /// the `reconcile` lease (as `holder`), until `shutdown`; then gives the lease up.
    pub async fn run(self: Arc<Self>, holder: String, mut shutdown: watch::Receiver<bool>) {
        let every = self.settings.every;
        let ttl = self.settings.lease_ttl();
        tracing::info!(
            repositories = self.targets.len(),
            "reconciling with GitHub every {}s over the last {} (one faseng process of the store at a time)",
            every.as_secs(),
            self.settings.window
        );
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut holding = false;
        let mut store_failing = false;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            let lease = Lease {
                store: &*self.store,
                clock: &*self.clock,
                holder: &holder,
                ttl,
            };
            match lease.renew().await {
                Ok(true) => {
                    store_failing = false;
                    if !holding {
                        tracing::info!(%holder, "this process reconciles with GitHub now (it took the reconcile lease)");
                    }
                    holding = true;
                    tokio::select! {
                        report = self.pass_holding(Some(&lease)) => {
                            tracing::debug!(
                                %holder,
                                found = report.found.len(),
                                unchanged = report.unchanged,
                                failed = report.failed,
                                skipped = report.skipped,
                                "reconcile pass done"
                            );
                        }
                        _ = shutdown.wait_for(|s| *s) => break,
                    }
                }
                Ok(false) => {
                    store_failing = false;
                    if holding {
                        tracing::info!(%holder, "another process reconciles with GitHub now");
                    }
                    holding = false;
                }
                Err(e) => {
                    if !store_failing {
                        tracing::warn!(error = %format!("{e:#}"), "could not take the reconcile lease; trying again every pass");
                    }
                    store_failing = true;
                    holding = false;
                }
            }
        }
        if holding && let Err(e) = self.store.release_duty(DUTY, &holder).await {
            tracing::warn!(error = %format!("{e:#}"), "could not give up the reconcile lease; another process takes it when it lapses");
        }
    }
}

/// Parses a 200 answer's JSON body; any other status is an error naming `what`.
fn parse<T: serde::de::DeserializeOwned>(answer: &Answer, what: &str) -> Result<T, Stop> {
    if answer.status != 200 {
        let message: String = answer.body.chars().take(200).collect();
        return Err(Stop::Failed(anyhow::anyhow!(
            "GitHub answered HTTP {} for {what}: {message}",
            answer.status
        )));
    }
    serde_json::from_str(&answer.body)
        .with_context(|| format!("reading {what}"))
        .map_err(Stop::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{self, QueueUrl};
    use deploy_core::ManualClock;
    use serde_json::json;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn at(secs: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(secs)
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        Answer {
            status,
            headers: map,
            body: body.to_owned(),
        }
    }

    #[test]
    fn the_window_includes_its_edge_and_the_future_and_nothing_older() {
        let d = |id: u64, created: &str| json!({"id": id, "created_at": created});
        let list = vec![
            d(1, "2026-12-06T09:00:00Z"),      // exactly one hour before now
            d(2, "2026-12-06T08:59:59Z"),      // one second older
            d(3, "2026-12-06T10:00:05Z"),      // dated after now (clock skew)
            d(4, "2026-12-06T09:30:00+01:00"), // 08:30 UTC
            json!({"id": 5}),
            json!({"id": 6, "created_at": "yesterday"}),
            json!({"created_at": "2026-12-06T09:59:00Z"}),
            d(7, "2026-12-06T09:59:00Z"),
        ];
        let ids: Vec<u64> = in_window(&list, t0(), chrono::Duration::hours(1))
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, [1, 3, 7]);
        assert!(
            in_window(&list, t0(), chrono::Duration::zero())
                .iter()
                .all(|(id, _)| *id == 3)
        );
    }

    #[test]
    fn rate_limits_are_read_from_the_headers() {
        let now = at(0);
        let reset = (now.timestamp() + 120).to_string();
        // Retry-After, in seconds or as a date.
        let a = answer(429, &[("retry-after", "7")], "");
        assert_eq!(rate_limit_wait(&a, now), Some(Duration::from_secs(7)));
        let a = answer(
            403,
            &[("retry-after", "Sun, 06 Dec 2026 10:00:30 GMT")],
            "{}",
        );
        assert_eq!(rate_limit_wait(&a, now), Some(Duration::from_secs(30)));
        // Primary limit: until the reset.
        let a = answer(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ],
            r#"{"message":"API rate limit exceeded"}"#,
        );
        assert_eq!(rate_limit_wait(&a, now), Some(Duration::from_secs(120)));
        // A reset already past still waits a moment.
        let a = answer(
            403,
            &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")],
            "",
        );
        assert_eq!(rate_limit_wait(&a, now), Some(Duration::from_secs(1)));
        // Far off: bounded.
        let a = answer(429, &[("retry-after", "999999")], "");
        assert_eq!(rate_limit_wait(&a, now), Some(MAX_WAIT));
        // No hint: a minute.
        let a = answer(429, &[], "");
        assert_eq!(rate_limit_wait(&a, now), Some(DEFAULT_RATE_LIMIT_WAIT));
        let a = answer(
            403,
            &[],
            r#"{"message":"You have exceeded a secondary rate limit."}"#,
        );
        assert_eq!(rate_limit_wait(&a, now), Some(DEFAULT_RATE_LIMIT_WAIT));
        // A refusal is not a rate limit, nor is a good answer with budget left.
        let a = answer(
            403,
            &[("x-ratelimit-remaining", "4000")],
            r#"{"message":"Resource not accessible by integration"}"#,
        );
        assert_eq!(rate_limit_wait(&a, now), None);
        let a = answer(200, &[("retry-after", "5")], "[]");
        assert_eq!(rate_limit_wait(&a, now), None);
    }

    #[test]
    fn passes_slow_down_when_little_of_the_budget_is_left() {
        let now = at(0);
        let budget = |remaining| Budget {
            remaining,
            limit: 5000,
            reset: at(1800),
        };
        assert_eq!(budget(4000).pace(10, now), None, "plenty left");
        assert_eq!(budget(500).pace(10, now), None, "a tenth left is plenty");
        // 400 left, 10 per pass: 20 passes may use half of it in the 30 minutes left.
        assert_eq!(budget(400).pace(10, now), Some(Duration::from_secs(90)));
        assert_eq!(
            budget(15).pace(10, now),
            Some(Duration::from_secs(1800)),
            "not even one pass fits in half: wait for the reset"
        );
        assert_eq!(budget(0).pace(1, now), Some(Duration::from_secs(1800)));
        let a = answer(
            200,
            &[
                ("x-ratelimit-remaining", "12"),
                ("x-ratelimit-limit", "60"),
                ("x-ratelimit-reset", &at(60).timestamp().to_string()),
            ],
            "[]",
        );
        assert_eq!(
            Budget::of(&a),
            Some(Budget {
                remaining: 12,
                limit: 60,
                reset: at(60)
            })
        );
        assert_eq!(Budget::of(&answer(200, &[], "[]")), None);
    }

    #[test]
    fn targets_are_the_distinct_repositories_faseng_can_read() {
        let apps = Apps::from_json(
            &json!({
                "a": {"provider": "shell", "repository": "o/one"},
                "b": {"provider": "shell", "repository": "o/one", "github_token": "tb"},
                "c": {"provider": "shell", "repository": "o/two", "github_api": "https://ghe/api/v3/"},
                "d": {"provider": "shell", "repository": "o/two"},
            })
            .to_string(),
        )
        .unwrap();
        let (readable, unreadable) = targets(&apps, true);
        assert!(unreadable.is_empty());
        assert_eq!(readable.len(), 3);
        let one = readable.iter().find(|t| t.repo.name() == "one").unwrap();
        assert_eq!(one.token, Some(Secret::new("tb")));
        assert!(
            readable
                .iter()
                .any(|t| t.api.as_deref() == Some("https://ghe/api/v3"))
        );
        let (readable, unreadable) = targets(&apps, false);
        assert_eq!(readable.len(), 1, "only o/one has a token of its own");
        assert_eq!(unreadable.len(), 2);
    }

    /// A scripted GitHub: deployments with statuses per repository, ETags on lists and
    /// repositories, and rate-limited answers on demand.
    #[derive(Default)]
    struct Scripted {
        deployments: Mutex<Vec<Value>>,
        statuses: Mutex<HashMap<u64, usize>>,
        /// Answers given before any other, first first.
        next: Mutex<std::collections::VecDeque<Answer>>,
        calls: Mutex<Vec<(String, Option<String>, u16)>>,
    }

    impl Scripted {
        fn add(&self, id: u64, created_at: DateTime<Utc>) {
            self.deployments.lock().unwrap().insert(
                0,
                json!({"id": id, "sha": "a".repeat(40), "ref": "main", "task": "deploy",
                       "environment": "edge", "creator": {"login": "ci"}, "payload": {},
                       "created_at": created_at.to_rfc3339()}),
            );
        }

        fn calls(&self) -> Vec<(String, Option<String>, u16)> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    fn etag_of(body: &str) -> String {
        use sha2::Digest as _;
        format!(
            "W/\"{}\"",
            hex::encode(sha2::Sha256::digest(body.as_bytes()))
        )
    }

    #[async_trait]
    impl GithubReader for Scripted {
        async fn get(
            &self,
            _: &Target,
            route: &str,
            if_none_match: Option<&str>,
        ) -> anyhow::Result<Answer> {
            let next = self.next.lock().unwrap().pop_front();
            let answer = if let Some(next) = next {
                next
            } else {
                let path = route.split('?').next().unwrap();
                let body = match path.split('/').collect::<Vec<_>>()[..] {
                    ["", "repos", _, _, "deployments"] => {
                        serde_json::to_string(&*self.deployments.lock().unwrap()).unwrap()
                    }
                    ["", "repos", _, _, "deployments", id, "statuses"] => {
                        let n = self
                            .statuses
                            .lock()
                            .unwrap()
                            .get(&id.parse().unwrap())
                            .copied();
                        json!(vec![json!({"state": "success"}); n.unwrap_or(0).min(1)]).to_string()
                    }
                    ["", "repos", o, r] => json!({"full_name": format!("{o}/{r}"),
                                                  "clone_url": "https://example/o/r.git"})
                    .to_string(),
                    _ => anyhow::bail!("not scripted: {route}"),
                };
                let etag = etag_of(&body);
                if if_none_match == Some(etag.as_str()) {
                    answer(304, &[("etag", &etag)], "")
                } else {
                    answer(200, &[("etag", &etag)], &body)
                }
            };
            self.calls.lock().unwrap().push((
                route.to_owned(),
                if_none_match.map(str::to_owned),
                answer.status,
            ));
            Ok(answer)
        }
    }

    struct Fixture {
        reconciler: Reconciler,
        github: Arc<Scripted>,
        store: Arc<dyn Store>,
        clock: ManualClock,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (queue, store) = queue::open(
            &QueueUrl::Sqlite(dir.path().join("r.db")),
            Default::default(),
        )
        .await
        .unwrap();
        let apps = Arc::new(
            Apps::from_json(r#"{"trelhub": {"provider": "shell", "repository": "oursky/trelhub", "environments": ["edge"]}}"#)
                .unwrap(),
        );
        let (targets, _) = targets(&apps, true);
        let github = Arc::new(Scripted::default());
        let clock = ManualClock::new(t0());
        let reconciler = Reconciler::new(
            targets,
            github.clone(),
            store.clone(),
            Arc::new(Intake::new(store.clone(), queue, apps)),
            Arc::new(Metrics::default()),
            Arc::new(clock.clone()),
            ReconcileSettings {
                every: Duration::from_secs(30),
                window: "1h".parse().unwrap(),
            },
        );
        Fixture {
            reconciler,
            github,
            store,
            clock,
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn only_new_unknown_deployments_without_statuses_are_taken_in_once() {
        let f = fixture().await;
        f.github.add(1, at(-7200)); // before the window
        f.github.add(2, at(-600)); // a previous deployer's, with a status
        f.github.statuses.lock().unwrap().insert(2, 1);
        f.github.add(3, at(-600)); // known to the store (its webhook came)
        let mut known = crate::store::contract::run("oursky/trelhub/3");
        known.deployment_id = 3;
        f.store.create_run(&known).await.unwrap();
        f.github.add(4, at(-30)); // missed
        let report = f.reconciler.pass().await;
        assert_eq!(report.found, ["oursky/trelhub/4"]);
        let run = f.store.get_run("oursky/trelhub/4").await.unwrap().unwrap();
        assert_eq!((run.app.as_str(), run.creator.as_str()), ("trelhub", "ci"));
        assert!(f.store.get_run("oursky/trelhub/1").await.unwrap().is_none());
        assert!(f.store.get_run("oursky/trelhub/2").await.unwrap().is_none());
        let calls = f.github.calls();
        let routes: Vec<&str> = calls.iter().map(|(r, _, _)| r.as_str()).collect();
        assert_eq!(
            routes,
            [
                "/repos/oursky/trelhub/deployments?per_page=100",
                "/repos/oursky/trelhub/deployments/4/statuses?per_page=1",
                "/repos/oursky/trelhub",
                "/repos/oursky/trelhub/deployments/2/statuses?per_page=1",
            ],
            "the store is asked before GitHub; deployments before the window cost nothing"
        );
        assert!(
            f.reconciler
                .metrics
                .render(None)
                .contains("faseng_reconciled_total 1")
        );

        // Nothing changed: one 304, nothing taken twice.
        let report = f.reconciler.pass().await;
        assert_eq!((report.found.len(), report.unchanged), (0, 1));
        let calls = f.github.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].2, 304);
        assert!(calls[0].1.is_some(), "If-None-Match was sent");

        // A new deployment: the list changed, the repository did not.
        f.github.add(5, at(-1));
        let report = f.reconciler.pass().await;
        assert_eq!(report.found, ["oursky/trelhub/5"]);
        let calls = f.github.calls();
        let repo_call = calls
            .iter()
            .find(|(r, _, _)| r == "/repos/oursky/trelhub")
            .unwrap();
        assert_eq!(repo_call.2, 304, "the repository came from its cache");
        assert!(
            f.reconciler
                .metrics
                .render(None)
                .contains("faseng_reconciled_total 2")
        );
    }

    #[tokio::test]
    async fn a_rate_limit_pauses_reconciling_and_keeps_the_list_unread() {
        let f = fixture().await;
        f.github.add(1, at(-10));
        f.github
            .next
            .lock()
            .unwrap()
            .push_back(answer(429, &[("retry-after", "90")], ""));
        let report = f.reconciler.pass().await;
        assert_eq!(report.rate_limited, Some(Duration::from_secs(90)));
        assert!(report.found.is_empty());
        f.github.calls();

        f.clock.advance(chrono::Duration::seconds(89));
        let report = f.reconciler.pass().await;
        assert!(report.skipped, "still waiting");
        assert!(f.github.calls().is_empty(), "nothing asked while waiting");

        f.clock.advance(chrono::Duration::seconds(1));
        let report = f.reconciler.pass().await;
        assert_eq!(report.found, ["oursky/trelhub/1"]);
        let calls = f.github.calls();
        assert_eq!(calls[0].1, None, "the limited answer left no ETag behind");
    }

    #[tokio::test]
    async fn a_failed_repository_leaves_its_list_to_be_read_again() {
        let f = fixture().await;
        f.github.add(1, at(-10));
        // The list is read, the statuses answer fails: the list must not be remembered as
        // dealt with.
        let list = serde_json::to_string(&*f.github.deployments.lock().unwrap()).unwrap();
        {
            let mut next = f.github.next.lock().unwrap();
            next.push_back(answer(200, &[("etag", "\"v1\"")], &list));
            next.push_back(answer(500, &[], "oops"));
        }
        let report = f.reconciler.pass().await;
        assert_eq!((report.failed, report.found.len()), (1, 0));
        f.github.calls();
        let report = f.reconciler.pass().await;
        assert_eq!(report.found, ["oursky/trelhub/1"]);
        let calls = f.github.calls();
        assert_eq!(calls[0].1, None, "no If-None-Match after a failed pass");
    }

    #[tokio::test]
    async fn a_low_budget_spaces_passes_out() {
        let f = fixture().await;
        let reset = at(600).timestamp().to_string();
        f.github.next.lock().unwrap().push_back(answer(
            200,
            &[
                ("x-ratelimit-remaining", "20"),
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-reset", &reset),
            ],
            "[]",
        ));
        let report = f.reconciler.pass().await;
        assert_eq!(report.rate_limited, None);
        // 20 left, 1 request a pass: 10 passes in the 600 s left.
        f.clock.advance(chrono::Duration::seconds(59));
        assert!(f.reconciler.pass().await.skipped);
        f.clock.advance(chrono::Duration::seconds(1));
        assert!(!f.reconciler.pass().await.skipped);
    }
}
