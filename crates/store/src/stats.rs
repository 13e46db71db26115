//! Delivery statistics per app and environment: deploys, success rate, duration percentiles,
//! change-failure rate and time to restore, over a period and per UTC day.
//!
//! [`compute_env_stats`] and [`compute_daily`] are the definition: they compute the figures
//! from run records. The backends compute the same in the store (and the contract tests hold
//! them to it); [`figures`] is how chat and the dashboard print them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::{RunRecord, RunState};

/// Which runs of which app, over which period (`[since, until)` by when they were received).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    /// The app.
    pub app: String,
    /// Only this environment (all of the app's when `None`).
    pub environment: Option<String>,
    /// The period's start (inclusive).
    pub since: DateTime<Utc>,
    /// The period's end (exclusive).
    pub until: DateTime<Utc>,
}

impl StatsQuery {
    /// The period's length in days (fractional; at least a millisecond's worth).
    pub fn days(&self) -> f64 {
        ((self.until - self.since).num_milliseconds().max(1)) as f64 / 86_400_000.0
    }

    /// The period before this one, of the same length (what the change is measured against).
    pub fn previous(&self) -> StatsQuery {
        StatsQuery {
            since: self.since - (self.until - self.since),
            until: self.since,
            ..self.clone()
        }
    }

    /// The UTC days the period touches, in order.
    pub fn days_touched(&self) -> Vec<NaiveDate> {
        if self.until <= self.since {
            return Vec::new();
        }
        let first = self.since.date_naive();
        let last = (self.until - chrono::Duration::milliseconds(1)).date_naive();
        first.iter_days().take_while(|d| *d <= last).collect()
    }
}

/// The figures of one environment over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvStats {
    /// The environment.
    pub environment: String,
    /// Counted runs (see [`counted`]).
    pub deploys: u64,
    /// Of those, the ones that ended in `success`.
    pub successes: u64,
    /// Of those, the ones that ended in `failure` or `error`.
    pub failures: u64,
    /// Median duration (finished − started) of the counted runs, nearest rank.
    pub median_secs: Option<f64>,
    /// 90th percentile of the same.
    pub p90_secs: Option<f64>,
    /// Counted runs that failed, or that the next counted run rolled back.
    pub change_failures: u64,
    /// Change failures that a later success in the environment followed.
    pub restores: u64,
    /// Median time from a change failure's finish to the next success's finish.
    pub restore_median_secs: Option<f64>,
}

impl EnvStats {
    /// Successes over deploys; `None` without deploys.
    pub fn success_rate(&self) -> Option<f64> {
        (self.deploys > 0).then(|| self.successes as f64 / self.deploys as f64)
    }

    /// Change failures over deploys; `None` without deploys.
    pub fn change_failure_rate(&self) -> Option<f64> {
        (self.deploys > 0).then(|| self.change_failures as f64 / self.deploys as f64)
    }

    /// Deploys per day of the query's period.
    pub fn per_day(&self, q: &StatsQuery) -> f64 {
        self.deploys as f64 / q.days()
    }
}

/// One UTC day of one environment.
#[derive(Debug, Clone, PartialEq)]
pub struct DayPoint {
    /// The day (UTC).
    pub day: NaiveDate,
    /// Counted runs received that day.
    pub deploys: u64,
    /// Of those, successes.
    pub successes: u64,
    /// Their median duration, nearest rank.
    pub median_secs: Option<f64>,
    /// Their 90th percentile duration.
    pub p90_secs: Option<f64>,
}

impl DayPoint {
    /// A day without counted runs.
    pub fn empty(day: NaiveDate) -> Self {
        Self {
            day,
            deploys: 0,
            successes: 0,
            median_secs: None,
            p90_secs: None,
        }
    }
}

/// Statistics computed in the store.
#[async_trait]
pub trait Stats: Send + Sync + 'static {
    /// One entry per environment that had a counted run (sorted by environment name).
    async fn env_stats(&self, q: &StatsQuery) -> anyhow::Result<Vec<EnvStats>>;

    /// Per environment, one point per UTC day in [since, until) (days without runs included, zero).
    async fn daily_stats(&self, q: &StatsQuery) -> anyhow::Result<Vec<(String, Vec<DayPoint>)>>;
}

/// Whether a task is a deploy for the statistics: `deploy` or `deploy:<x>`, but not the
/// lock tasks (`deploy:lock`, `deploy:unlock`), which change nothing.
pub fn counted_task(task: &str) -> bool {
    task == "deploy"
        || task
            .strip_prefix("deploy:")
            .is_some_and(|x| x != "lock" && x != "unlock")
}

/// Whether `run` is a deploy for the statistics: a deploy task ([`counted_task`]), in a
/// final state, and it started (a run refused before it started is not a deploy).
pub fn counted_run(run: &RunRecord) -> bool {
    counted_task(&run.task) && run.state.is_final() && run.started_at.is_some()
}

/// Whether `run` counts for `q`: its app (and environment, when asked), received in the
/// period, and [`counted_run`].
pub fn counted(run: &RunRecord, q: &StatsQuery) -> bool {
    let at = run.received_ms();
    run.app == q.app
        && q.environment.as_ref().is_none_or(|e| *e == run.environment)
        && at >= q.since.timestamp_millis()
        && at < q.until.timestamp_millis()
        && counted_run(run)
}

/// The nearest-rank percentile `num/den` of sorted samples: `sorted[ceil(n·num/den) − 1]`.
pub fn nearest_rank(sorted: &[f64], num: usize, den: usize) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * num).div_ceil(den).max(1);
    Some(sorted[rank - 1])
}

/// Milliseconds from `a` to `b` as seconds, when both are known (the store keeps times to the
/// millisecond, so both sides are truncated to it first).
fn secs_between(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<f64> {
    Some((b?.timestamp_millis() - a?.timestamp_millis()) as f64 / 1000.0)
}

/// The median and 90th percentile of `samples`.
pub(crate) fn percentiles(mut samples: Vec<f64>) -> (Option<f64>, Option<f64>) {
    samples.sort_by(f64::total_cmp);
    (nearest_rank(&samples, 1, 2), nearest_rank(&samples, 9, 10))
}

/// The counted runs of `q` per environment, each in order of receipt (then key).
fn by_environment<'a>(
    runs: &'a [RunRecord],
    q: &StatsQuery,
) -> BTreeMap<&'a str, Vec<&'a RunRecord>> {
    let mut envs: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for run in runs.iter().filter(|r| counted(r, q)) {
        envs.entry(run.environment.as_str()).or_default().push(run);
    }
    for list in envs.values_mut() {
        list.sort_by(|a, b| (a.received_ms(), &a.key).cmp(&(b.received_ms(), &b.key)));
    }
    envs
}

/// The reference computation of [`Stats::env_stats`] over records (the definition; the
/// backends must agree with it).
///
/// * A run is counted when [`counted`] says so; `deploys`, `successes` and `failures` count
///   those, and the durations are theirs (`finished_at − started_at`, to the millisecond; a
///   run without a finish time has none).
/// * A counted run is a change failure when it ended in `failure` or `error`, or when the
///   next counted run in its environment (by receipt, then key) is a rollback whose `from`
///   is its sha.
/// * A change failure is restored by the first later counted run in its environment that
///   succeeded; the time to restore is that run's finish minus the change failure's (never
///   below zero; none when a finish time is missing).
///
/// Only runs received in the period are looked at: a rollback or a success received after
/// `until` does not change the period's figures, so a period's figures never change once it
/// is over and the current and previous periods are measured alike.
pub fn compute_env_stats(runs: &[RunRecord], q: &StatsQuery) -> Vec<EnvStats> {
    by_environment(runs, q)
        .into_iter()
        .map(|(environment, list)| {
            let (median_secs, p90_secs) = percentiles(
                list.iter()
                    .filter_map(|r| secs_between(r.started_at, r.finished_at))
                    .collect(),
            );
            let failed = |r: &RunRecord| matches!(r.state, RunState::Failure | RunState::Error);
            let mut change_failures = 0;
            let mut restores = 0;
            let mut restore_times = Vec::new();
            for (i, run) in list.iter().enumerate() {
                let rolled_back = list
                    .get(i + 1)
                    .and_then(|next| next.rollback.as_ref())
                    .is_some_and(|rb| rb.from == run.sha);
                if !(failed(run) || rolled_back) {
                    continue;
                }
                change_failures += 1;
                if let Some(fix) = list[i + 1..].iter().find(|r| r.state == RunState::Success) {
                    restores += 1;
                    if let Some(secs) = secs_between(run.finished_at, fix.finished_at) {
                        restore_times.push(secs.max(0.0));
                    }
                }
            }
            let (restore_median_secs, _) = percentiles(restore_times);
            EnvStats {
                environment: environment.to_owned(),
                deploys: list.len() as u64,
                successes: list.iter().filter(|r| r.state == RunState::Success).count() as u64,
                failures: list.iter().filter(|r| failed(r)).count() as u64,
                median_secs,
                p90_secs,
                change_failures,
                restores,
                restore_median_secs,
            }
        })
        .collect()
}

/// The reference computation of [`Stats::daily_stats`]: per environment with a counted run
/// (sorted by name), one point per UTC day the period touches ([`StatsQuery::days_touched`]),
/// each with the counted runs received that day.
pub fn compute_daily(runs: &[RunRecord], q: &StatsQuery) -> Vec<(String, Vec<DayPoint>)> {
    let days = q.days_touched();
    by_environment(runs, q)
        .into_iter()
        .map(|(environment, list)| {
            let points = days
                .iter()
                .map(|day| {
                    let that_day: Vec<&&RunRecord> = list
                        .iter()
                        .filter(|r| r.received_at.date_naive() == *day)
                        .collect();
                    let (median_secs, p90_secs) = percentiles(
                        that_day
                            .iter()
                            .filter_map(|r| secs_between(r.started_at, r.finished_at))
                            .collect(),
                    );
                    DayPoint {
                        day: *day,
                        deploys: that_day.len() as u64,
                        successes: that_day
                            .iter()
                            .filter(|r| r.state == RunState::Success)
                            .count() as u64,
                        median_secs,
                        p90_secs,
                    }
                })
                .collect();
            (environment.to_owned(), points)
        })
        .collect()
}

/// The figures as chat and the dashboard print them, so they always agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Deploys: `"12"`.
    pub deploys: String,
    /// Success rate: `"92%"`, or `"–"` without deploys.
    pub success_rate: String,
    /// Median duration: `"1m 12s"`, or `"–"`.
    pub median: String,
    /// 90th percentile duration.
    pub p90: String,
    /// Deploys per day: `"1.4"`.
    pub per_day: String,
    /// Change-failure rate: `"8%"`, or `"–"`.
    pub change_failure_rate: String,
    /// Median time to restore, or `"–"` when nothing was restored.
    pub time_to_restore: String,
    /// Per figure (named as in [`FIGURE_NAMES`]), the change against the previous period:
    /// `"+12%"`, `"−3%"`, `"±0%"` for counts and times, `"+5 pts"`, `"−3 pts"`, `"±0 pts"` for
    /// rates, `"new"` when the previous period had no value, `"–"` when this one has none.
    pub change: Vec<(String, String)>,
}

/// The figures' names, in the order [`Figures::change`] lists them.
pub const FIGURE_NAMES: [&str; 7] = [
    "deploys",
    "success rate",
    "median",
    "p90",
    "per day",
    "change failure rate",
    "time to restore",
];

/// What is printed where there is no figure.
pub const NO_FIGURE: &str = "–";

/// A duration as `"0.4s"`, `"42s"`, `"1m 12s"`, `"2h 5m"`, `"3d 4h"`.
pub fn duration_text(secs: f64) -> String {
    let secs = secs.max(0.0);
    let tenths = (secs * 10.0).round() / 10.0;
    if tenths < 10.0 {
        return format!("{tenths:.1}s");
    }
    let whole = secs.round() as u64;
    match whole {
        0..60 => format!("{whole}s"),
        60..3600 => format!("{}m {}s", whole / 60, whole % 60),
        3600..86_400 => format!("{}h {}m", whole / 3600, whole % 3600 / 60),
        _ => format!("{}d {}h", whole / 86_400, whole % 86_400 / 3600),
    }
}

/// Deploys per day: `"1.4"`, and two decimals below one (`"0.03"`), so that one deploy in a
/// month does not read as none.
pub fn per_day_text(per_day: f64) -> String {
    if per_day > 0.0 && per_day < 1.0 {
        format!("{per_day:.2}")
    } else {
        format!("{per_day:.1}")
    }
}

/// A rate as a whole percentage: `"92%"`.
pub fn percent_text(rate: f64) -> String {
    format!("{}%", (rate * 100.0).round() as i64)
}

/// A signed whole number with a real minus sign (`"+12"`, `"−3"`, `"±0"`).
fn signed(n: i64) -> String {
    match n {
        0 => "±0".to_owned(),
        n if n > 0 => format!("+{n}"),
        n => format!("\u{2212}{}", -n),
    }
}

/// The relative change from `prev` to `cur` as `"+12%"`.
fn relative(cur: Option<f64>, prev: Option<f64>) -> String {
    match (cur, prev) {
        (None, _) => NO_FIGURE.to_owned(),
        (Some(_), None) => "new".to_owned(),
        (Some(_), Some(0.0)) => "new".to_owned(),
        (Some(c), Some(p)) => format!("{}%", signed(((c - p) / p * 100.0).round() as i64)),
    }
}

/// The change in percentage points from `prev` to `cur` as `"−3 pts"`.
fn points(cur: Option<f64>, prev: Option<f64>) -> String {
    match (cur, prev) {
        (None, _) => NO_FIGURE.to_owned(),
        (Some(_), None) => "new".to_owned(),
        (Some(c), Some(p)) => format!(
            "{} pts",
            signed((c * 100.0).round() as i64 - (p * 100.0).round() as i64)
        ),
    }
}

/// How chat and the dashboard print `current` (over `q`) and its change against `previous`
/// (over [`StatsQuery::previous`]; `None` when the environment had no counted run then).
pub fn figures(current: &EnvStats, previous: Option<&EnvStats>, q: &StatsQuery) -> Figures {
    let or_none = |v: Option<f64>, f: fn(f64) -> String| v.map_or_else(|| NO_FIGURE.to_owned(), f);
    let prev_q = q.previous();
    let per_day = |s: &EnvStats, q: &StatsQuery| Some(s.per_day(q));
    let deploys = |s: &EnvStats| Some(s.deploys as f64);
    let changes = [
        relative(deploys(current), previous.and_then(deploys)),
        points(
            current.success_rate(),
            previous.and_then(EnvStats::success_rate),
        ),
        relative(current.median_secs, previous.and_then(|p| p.median_secs)),
        relative(current.p90_secs, previous.and_then(|p| p.p90_secs)),
        relative(
            per_day(current, q),
            previous.and_then(|p| per_day(p, &prev_q)),
        ),
        points(
            current.change_failure_rate(),
            previous.and_then(EnvStats::change_failure_rate),
        ),
        relative(
            current.restore_median_secs,
            previous.and_then(|p| p.restore_median_secs),
        ),
    ];
    Figures {
        deploys: current.deploys.to_string(),
        success_rate: or_none(current.success_rate(), percent_text),
        median: or_none(current.median_secs, duration_text),
        p90: or_none(current.p90_secs, duration_text),
        per_day: per_day_text(current.per_day(q)),
        change_failure_rate: or_none(current.change_failure_rate(), percent_text),
        time_to_restore: or_none(current.restore_median_secs, duration_text),
        change: FIGURE_NAMES
            .iter()
            .zip(changes)
            .map(|(name, text)| ((*name).to_owned(), text))
            .collect(),
    }
}

/// The UTC day `index` days after 1970-01-01.
pub(crate) fn day_of_index(index: i64) -> anyhow::Result<NaiveDate> {
    use anyhow::Context as _;
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_signed(chrono::Duration::days(index)))
        .with_context(|| format!("day {index} is out of range"))
}

/// `points` (days with runs, in order) with a zero point for every other day `q` touches.
pub(crate) fn every_day(q: &StatsQuery, points: Vec<DayPoint>) -> Vec<DayPoint> {
    let mut points = points.into_iter().peekable();
    q.days_touched()
        .into_iter()
        .map(|day| match points.next_if(|p| p.day == day) {
            Some(point) => point,
            None => DayPoint::empty(day),
        })
        .collect()
}

#[cfg(test)]
mod tests;
