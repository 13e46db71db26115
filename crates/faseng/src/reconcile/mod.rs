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
//! Transport (`github`: [`GithubReader`], one GET with its status, headers and body) is kept
//! apart from the pass, so the pass is tested against a scripted GitHub.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deploy_core::{Clock, RepoName, RunKey, Span};
use serde_json::Value;
use tokio::sync::watch;

mod github;

pub use github::{
    Answer, Budget, DEFAULT_RATE_LIMIT_WAIT, GithubReader, MAX_WAIT, OctocrabReader, Target,
    rate_limit_wait, targets,
};

use github::header;

use crate::intake::{Intake, IntakeOutcome};
use crate::metrics::Metrics;
use crate::store::Store;
use deploy_core::event::{DeploymentEvent, WebhookRepository};

/// The store duty lease only whose holder reconciles.
pub const DUTY: &str = "reconcile";

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
            let run_key = RunKey::new(repo, id);
            if self.store.get_run(run_key.as_str()).await?.is_some() {
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
                report.found.push(key.to_string());
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
mod tests;
