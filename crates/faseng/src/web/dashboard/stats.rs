//! `/apps/{app}/stats?env=&for=30d`: per environment the figures chat's `stats` prints (the
//! store's [`figures`], so both always agree) with their change against the previous period,
//! and charts per day from the store's daily statistics: deploys (bars), success rate and
//! duration p50/p90 (lines).

use axum::Extension;
use axum::extract::{Path, Query, State};
use deploy_core::{AppConfig, AppName, EnvName};
use maud::{Markup, html};
use serde::Deserialize;

use super::charts::{Chart, Series, bar_chart, line_chart};
use super::layout::{self, Nav};
use super::{PageError, PageResult, Viewer};
use crate::messages::dashboard as say;
use crate::store::stats::{FIGURE_NAMES, duration_text};
use crate::store::{DayPoint, EnvStats, Figures, StatsQuery, figures};
use crate::web::WebState;

/// The periods offered, in days.
const PERIODS: [(&str, i64); 3] = [("7d", 7), ("30d", 30), ("90d", 90)];
/// The period when none is asked for.
const DEFAULT_PERIOD: &str = "30d";

/// The query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Params {
    #[serde(default)]
    env: String,
    #[serde(default, rename = "for")]
    period: String,
}

/// One environment's part of the page.
struct EnvPart {
    env: EnvName,
    figures: Option<Figures>,
    days: Vec<DayPoint>,
}

/// `GET /apps/{app}/stats`.
pub(crate) async fn page(
    State(s): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Path(app): Path<String>,
    Query(params): Query<Params>,
) -> PageResult {
    let config = AppName::parse(&app)
        .ok()
        .and_then(|a| s.apps.get(&a))
        .ok_or_else(|| PageError::NotFound(say::no_such_app(&app)))?;
    let period = match params.period.trim() {
        "" => DEFAULT_PERIOD,
        p => PERIODS
            .iter()
            .find(|(name, _)| *name == p)
            .map(|(name, _)| *name)
            .ok_or_else(|| PageError::BadRequest(say::bad_period(p)))?,
    };
    let days = PERIODS
        .iter()
        .find(|(n, _)| *n == period)
        .map_or(30, |p| p.1);
    let env = match params.env.trim() {
        "" => None,
        e => Some(
            EnvName::parse(e)
                .ok()
                .filter(|e| config.has_environment(e))
                .ok_or_else(|| {
                    PageError::BadRequest(say::no_such_environment(config.name.as_str(), e))
                })?,
        ),
    };
    let now = s.clock.now();
    let q = StatsQuery {
        app: config.name.to_string(),
        environment: env.as_ref().map(ToString::to_string),
        since: now - chrono::Duration::days(days),
        until: now,
    };
    let current = s.store.env_stats(&q).await?;
    let previous = s.store.env_stats(&q.previous()).await?;
    let mut daily = s.store.daily_stats(&q).await?;
    let parts = config
        .environments
        .iter()
        .filter(|e| env.as_ref().is_none_or(|w| w == *e))
        .map(|e| {
            let find = |list: &[EnvStats]| -> Option<EnvStats> {
                list.iter().find(|x| x.environment == e.as_str()).cloned()
            };
            let days = daily
                .iter_mut()
                .find(|(name, _)| name == e.as_str())
                .map(|(_, points)| std::mem::take(points))
                .unwrap_or_else(|| {
                    // An environment without counted runs: every day, at zero.
                    q.days_touched().into_iter().map(DayPoint::empty).collect()
                });
            EnvPart {
                env: e.clone(),
                figures: find(&current).map(|c| figures(&c, find(&previous).as_ref(), &q)),
                days,
            }
        })
        .collect::<Vec<_>>();
    Ok(layout::page(
        &format!("{} — statistics", config.name),
        &viewer,
        Nav::Overview,
        render(config, env.as_ref(), period, &q, &parts),
    ))
}

/// What each figure is called on the page, by its name in [`FIGURE_NAMES`].
fn figure_label(name: &str) -> &str {
    match name {
        "deploys" => "Deploys",
        "success rate" => "Success rate",
        "median" => "Median duration",
        "p90" => "p90 duration",
        "per day" => "Deploys per day",
        "change failure rate" => "Change-failure rate",
        "time to restore" => "Time to restore",
        other => other,
    }
}

fn figure_values(f: &Figures) -> [&str; 7] {
    [
        &f.deploys,
        &f.success_rate,
        &f.median,
        &f.p90,
        &f.per_day,
        &f.change_failure_rate,
        &f.time_to_restore,
    ]
}

fn render(
    app: &AppConfig,
    env: Option<&EnvName>,
    period: &str,
    q: &StatsQuery,
    parts: &[EnvPart],
) -> Markup {
    html! {
        p.muted { a href="/" { "Overview" } " · " a href=(format!("/apps/{}", app.name)) { "History" } }
        form.filters method="get" action=(format!("/apps/{}/stats", app.name)) aria-label="Choose the period" {
            label { "Environment"
                select name="env" {
                    option value="" { "all" }
                    @for e in &app.environments {
                        option value=(e.as_str()) selected[env == Some(e)] { (e) }
                    }
                }
            }
            label { "Period"
                select name="for" {
                    @for (name, days) in PERIODS {
                        option value=(name) selected[name == period] { "last " (days) " days" }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        p.muted #period data-since=(q.since.to_rfc3339()) data-until=(q.until.to_rfc3339()) {
            "From " (q.since.format("%-d %b %Y %H:%M UTC")) " to " (q.until.format("%-d %b %Y %H:%M UTC"))
            ", compared with the " (period) " before."
        }
        @for part in parts {
            section.env-stats aria-labelledby=(format!("stats-{}", part.env)) data-env=(part.env.as_str()) {
                h2 id=(format!("stats-{}", part.env)) { (part.env) }
                @match &part.figures {
                    Some(f) => {
                        dl.figures {
                            @for ((name, value), (_, change)) in FIGURE_NAMES.iter().zip(figure_values(f)).zip(&f.change) {
                                div data-figure=(name) {
                                    dt { (figure_label(name)) }
                                    dd { (value) span.change { "(" (change) ")" } }
                                }
                            }
                        }
                    }
                    None => p.none { "No deploys in this period." },
                }
                (charts(part))
            }
        }
    }
}

fn count_text(v: f64) -> String {
    format!("{v}")
}

fn percent(v: f64) -> String {
    format!("{}%", v.round())
}

fn charts(part: &EnvPart) -> Markup {
    let days: Vec<chrono::NaiveDate> = part.days.iter().map(|d| d.day).collect();
    let deploys: Vec<f64> = part.days.iter().map(|d| d.deploys as f64).collect();
    let rate: Vec<Option<f64>> = part
        .days
        .iter()
        .map(|d| (d.deploys > 0).then(|| d.successes as f64 * 100.0 / d.deploys as f64))
        .collect();
    let id = |what: &str| format!("{what}-{}", part.env);
    let (deploys_id, rate_id, duration_id) = (id("deploys"), id("success"), id("duration"));
    html! {
        div.charts {
            (bar_chart(&Chart { id: &deploys_id, title: "Deploys per day", days: &days, format: &count_text, y_max: None }, &deploys))
            (line_chart(
                &Chart { id: &rate_id, title: "Success rate per day", days: &days, format: &percent, y_max: Some(100.0) },
                &[Series { name: "success rate", class: "s1", values: rate }],
            ))
            (line_chart(
                &Chart { id: &duration_id, title: "Duration per day (p50, p90)", days: &days, format: &duration_text, y_max: None },
                &[
                    Series { name: "p50", class: "s1", values: part.days.iter().map(|d| d.median_secs).collect() },
                    Series { name: "p90", class: "s2", values: part.days.iter().map(|d| d.p90_secs).collect() },
                ],
            ))
        }
    }
}
