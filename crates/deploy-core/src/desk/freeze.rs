//! Freeze windows from app.json: a repeating window (`cron` + `duration`, in a time zone) or a
//! fixed one (`from` – `until`). All pure: every question is asked at an explicit `now`.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset as _, TimeZone as _, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::duration::Span;
use crate::names::EnvName;

use super::Blocked;

/// The longest a repeating window's `duration` may be.
pub const MAX_FREEZE_DURATION: Span = Span::from_secs(31 * 86_400);

/// At most this many steps join overlapping occurrences of a repeating window into one.
const MAX_JOINS: usize = 1_000;

/// Overlapping occurrences are joined until the freeze has lasted this long.
const MAX_JOINED_SPAN: Span = Span::from_secs(90 * 86_400);

/// A stretch of time, from `start` (included) to `end` (excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval {
    /// When it begins.
    pub start: DateTime<Utc>,
    /// When it is over.
    pub end: DateTime<Utc>,
}

impl Interval {
    /// True when `at` is inside it.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

/// A 5-field cron schedule (`minute hour day-of-month month day-of-week`, names such as `FRI`
/// and `DEC` allowed), kept with the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    text: String,
    cron: Box<croner::Cron>,
}

/// Why a cron schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a cron schedule (minute hour day month weekday, e.g. \"0 18 * * FRI\"): {reason}"
)]
pub struct ScheduleError {
    text: String,
    reason: String,
}

impl CronSchedule {
    /// Parses a 5-field schedule; one that never fires is refused too.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        use croner::parser::{CronParser, Seconds, Year};
        let refuse = |reason: String| ScheduleError {
            text: text.to_owned(),
            reason,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| refuse(e.to_string()))?;
        let schedule = Self {
            text: text.trim().to_owned(),
            cron: Box::new(cron),
        };
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        if schedule.first_after(epoch, Tz::UTC).is_none() {
            return Err(refuse("it never fires".to_owned()));
        }
        Ok(schedule)
    }

    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The latest firing at or before `at`, reading the schedule on `tz`'s clock.
    fn latest_at_or_before(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&tz), true)
            .ok()
            .map(|t| t.to_utc())
    }

    /// The first firing strictly after `at`, reading the schedule on `tz`'s clock.
    fn first_after(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&at.with_timezone(&tz), false)
            .ok()
            .map(|t| t.to_utc())
    }
}

/// When a freeze window is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeRule {
    /// Each time `schedule` fires on `tz`'s clock, for `duration` (counted on that clock, so
    /// a window from Friday 18:00 for 64h ends Monday 10:00 local time across a DST change).
    Cron {
        /// When it starts.
        schedule: CronSchedule,
        /// How long each occurrence lasts.
        duration: Span,
        /// The clock `schedule` and `duration` are read on.
        tz: Tz,
    },
    /// Once, from `from` until `until`.
    Fixed {
        /// When it starts.
        from: DateTime<Utc>,
        /// When it ends.
        until: DateTime<Utc>,
    },
}

/// One freeze window of an app: no deploys while it is in force, unless unfrozen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeWindow {
    /// When it is in force.
    pub rule: FreezeRule,
    /// Why (shown to whoever is refused).
    pub reason: String,
    /// The environments it freezes; `None` = all of the app's.
    pub environments: Option<Vec<EnvName>>,
}

impl FreezeWindow {
    /// True when it freezes `env`.
    pub fn covers(&self, env: &EnvName) -> bool {
        self.environments
            .as_ref()
            .is_none_or(|envs| envs.contains(env))
    }

    /// The occurrence in force at `now`, if any. For a repeating window, that is the latest
    /// firing at or before `now` that has not ended, its end carried over any occurrences
    /// that begin before it is over (so `end` is when deploys may go again).
    pub fn active_at(&self, now: DateTime<Utc>) -> Option<Interval> {
        match &self.rule {
            FreezeRule::Fixed { from, until } => {
                let interval = Interval {
                    start: *from,
                    end: *until,
                };
                interval.contains(now).then_some(interval)
            }
            FreezeRule::Cron {
                schedule,
                duration,
                tz,
            } => {
                let start = schedule.latest_at_or_before(now, *tz)?;
                let interval = joined(schedule, *duration, *tz, start);
                interval.contains(now).then_some(interval)
            }
        }
    }

    /// The next occurrence that starts after `now` (joined with those overlapping it, as in
    /// [`FreezeWindow::active_at`]).
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<Interval> {
        match &self.rule {
            FreezeRule::Fixed { from, until } => (*from > now).then_some(Interval {
                start: *from,
                end: *until,
            }),
            FreezeRule::Cron {
                schedule,
                duration,
                tz,
            } => schedule
                .first_after(now, *tz)
                .map(|start| joined(schedule, *duration, *tz, start)),
        }
    }

    /// Parses one entry of app.json's `freeze` list. `Err` lists every problem as
    /// (key, message); `app_tz` is the default for `tz`, `app_environments` what
    /// `environments` may name.
    pub(crate) fn from_value(
        value: &Value,
        app_tz: Tz,
        app_environments: &[EnvName],
    ) -> Result<Self, Vec<(&'static str, String)>> {
        const CRON_KEYS: [&str; 5] = ["cron", "duration", "tz", "reason", "environments"];
        const FIXED_KEYS: [&str; 4] = ["from", "until", "reason", "environments"];
        let Value::Object(entry) = value else {
            return Err(vec![(
                "",
                "must be an object with cron + duration, or from + until".to_owned(),
            )]);
        };
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        let is_cron = entry.contains_key("cron");
        let is_fixed = entry.contains_key("from") || entry.contains_key("until");
        let allowed: &[&str] = if is_cron { &CRON_KEYS } else { &FIXED_KEYS };
        for key in entry.keys() {
            if !allowed.contains(&key.as_str()) {
                let known = if is_cron || is_fixed {
                    allowed.join(", ")
                } else {
                    "cron, duration, tz, from, until, reason, environments".to_owned()
                };
                problems.push(("", format!("unknown key {key:?} (known: {known})")));
            }
        }

        let reason = match entry.get("reason") {
            Some(Value::String(r)) if !r.trim().is_empty() => Some(r.trim().to_owned()),
            None => {
                problems.push(("reason", "is required".to_owned()));
                None
            }
            Some(_) => {
                problems.push(("reason", "must be a non-empty string".to_owned()));
                None
            }
        };

        let environments = match entry.get("environments") {
            None => None,
            Some(Value::Array(items)) if !items.is_empty() => {
                let mut envs = Vec::new();
                for item in items {
                    match item.as_str().map(EnvName::parse) {
                        Some(Ok(env)) if app_environments.contains(&env) => {
                            if !envs.contains(&env) {
                                envs.push(env);
                            }
                        }
                        Some(Ok(env)) => problems.push((
                            "environments",
                            format!("{env} is not one of the app's environments"),
                        )),
                        _ => problems
                            .push(("environments", format!("{item} is not an environment name"))),
                    }
                }
                Some(envs)
            }
            Some(_) => {
                problems.push((
                    "environments",
                    "must be a non-empty list of the app's environments (leave it out for all)"
                        .to_owned(),
                ));
                None
            }
        };

        let rule = if is_cron {
            cron_rule(entry, app_tz, &mut problems)
        } else if is_fixed {
            fixed_rule(entry, &mut problems)
        } else {
            problems.push((
                "",
                "needs cron + duration (a repeating window) or from + until (a fixed one)"
                    .to_owned(),
            ));
            None
        };

        match (rule, reason) {
            (Some(rule), Some(reason)) if problems.is_empty() => Ok(Self {
                rule,
                reason,
                environments,
            }),
            _ => Err(problems),
        }
    }
}

/// The occurrence of a repeating window that starts at `start`, its end carried over the
/// occurrences that begin before it is over. A window that never lets up (a daily schedule
/// lasting two days) is carried at most [`MAX_JOINED_SPAN`] and [`MAX_JOINS`] steps ahead.
fn joined(schedule: &CronSchedule, duration: Span, tz: Tz, start: DateTime<Utc>) -> Interval {
    let end_of = |firing: DateTime<Utc>| add_on_clock(firing, duration, tz);
    let mut interval = Interval {
        start,
        end: end_of(start),
    };
    let mut last = start;
    for _ in 0..MAX_JOINS {
        if interval.end - interval.start > MAX_JOINED_SPAN.as_chrono() {
            break;
        }
        // The latest firing before the end reaches furthest; the ones between add nothing.
        match schedule.latest_at_or_before(interval.end, tz) {
            Some(firing) if firing > last => {
                interval.end = interval.end.max(end_of(firing));
                last = firing;
            }
            _ => break,
        }
    }
    interval
}

fn cron_rule(
    entry: &serde_json::Map<String, Value>,
    app_tz: Tz,
    problems: &mut Vec<(&'static str, String)>,
) -> Option<FreezeRule> {
    let schedule = match entry.get("cron") {
        Some(Value::String(text)) => CronSchedule::parse(text)
            .map_err(|e| problems.push(("cron", e.to_string())))
            .ok(),
        _ => {
            problems.push(("cron", "must be a cron schedule string".to_owned()));
            None
        }
    };
    let duration = match entry.get("duration") {
        None => {
            problems.push((
                "duration",
                "is required with cron (e.g. \"64h\")".to_owned(),
            ));
            None
        }
        Some(Value::String(text)) => match text.parse::<Span>() {
            Ok(span) if span.as_secs() == 0 => {
                problems.push(("duration", "must be more than 0".to_owned()));
                None
            }
            Ok(span) if span > MAX_FREEZE_DURATION => {
                problems.push((
                    "duration",
                    format!("{span} is too long: a window lasts at most {MAX_FREEZE_DURATION}"),
                ));
                None
            }
            Ok(span) => Some(span),
            Err(e) => {
                problems.push(("duration", e.to_string()));
                None
            }
        },
        Some(_) => {
            problems.push(("duration", "must be a duration such as \"64h\"".to_owned()));
            None
        }
    };
    let tz = match entry.get("tz") {
        None => Some(app_tz),
        Some(value) => parse_tz(value).map_err(|e| problems.push(("tz", e))).ok(),
    };
    Some(FreezeRule::Cron {
        schedule: schedule?,
        duration: duration?,
        tz: tz?,
    })
}

fn fixed_rule(
    entry: &serde_json::Map<String, Value>,
    problems: &mut Vec<(&'static str, String)>,
) -> Option<FreezeRule> {
    let mut time = |key: &'static str| match entry.get(key) {
        None => {
            problems.push((
                key,
                "is required (an RFC 3339 time such as \"2026-12-24T00:00:00+08:00\")".to_owned(),
            ));
            None
        }
        Some(Value::String(text)) => match DateTime::parse_from_rfc3339(text.trim()) {
            Ok(t) => Some(t.to_utc()),
            Err(e) => {
                problems.push((
                    key,
                    format!("{text:?} is not an RFC 3339 time such as \"2026-12-24T00:00:00+08:00\": {e}"),
                ));
                None
            }
        },
        Some(_) => {
            problems.push((key, "must be an RFC 3339 time string".to_owned()));
            None
        }
    };
    let from = time("from");
    let until = time("until");
    let (from, until) = (from?, until?);
    if from >= until {
        problems.push(("until", "must be later than from".to_owned()));
        return None;
    }
    Some(FreezeRule::Fixed { from, until })
}

/// An IANA time zone name from app.json; the error names the closest known zone.
pub(crate) fn parse_tz(value: &Value) -> Result<Tz, String> {
    let Some(name) = value.as_str() else {
        return Err("must be an IANA time zone name such as \"Asia/Hong_Kong\"".to_owned());
    };
    name.parse::<Tz>().map_err(|_| {
        let closest = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|tz| {
                (
                    strsim::jaro_winkler(&name.to_lowercase(), &tz.name().to_lowercase()),
                    tz,
                )
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .filter(|(score, _)| *score > 0.85)
            .map(|(_, tz)| format!(" (did you mean {}?)", tz.name()))
            .unwrap_or_default();
        format!("{name:?} is not an IANA time zone name such as \"Asia/Hong_Kong\"{closest}")
    })
}

/// `start` plus `span` read on `tz`'s wall clock. A time the clock skips (spring forward) is
/// taken with the offset in force before the skip, i.e. as the moment after it; a time the
/// clock shows twice (fall back) is its later moment, so a window never ends early.
fn add_on_clock(start: DateTime<Utc>, span: Span, tz: Tz) -> DateTime<Utc> {
    let naive: NaiveDateTime = start.with_timezone(&tz).naive_local() + span.as_chrono();
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.to_utc(),
        LocalResult::Ambiguous(_, later) => later.to_utc(),
        LocalResult::None => {
            let day_before = naive - chrono::Duration::days(1);
            let offset = tz.offset_from_utc_datetime(&day_before).fix();
            (naive - chrono::Duration::seconds(i64::from(offset.local_minus_utc()))).and_utc()
        }
    }
}

/// One occurrence of a freeze window, as `freezes` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeOccurrence {
    /// When it is in force.
    pub interval: Interval,
    /// Why.
    pub reason: String,
    /// The environments it freezes; `None` = all.
    pub environments: Option<Vec<EnvName>>,
}

impl FreezeOccurrence {
    /// True when it is in force at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.interval.contains(now)
    }
}

/// The occurrences of `windows` that are in force at `now` or begin within `horizon` of it, at
/// most `per_window` of each window, sorted by start: what `freezes [<app>]` lists. With `env`,
/// only the windows that freeze it.
pub fn upcoming(
    windows: &[FreezeWindow],
    env: Option<&EnvName>,
    now: DateTime<Utc>,
    horizon: Span,
    per_window: usize,
) -> Vec<FreezeOccurrence> {
    let last_start = now + horizon.as_chrono();
    let mut out = Vec::new();
    for window in windows.iter().filter(|w| env.is_none_or(|e| w.covers(e))) {
        let mut found = Vec::new();
        let mut next = window.active_at(now).or_else(|| window.next_after(now));
        while let Some(interval) = next.filter(|i| i.start <= last_start) {
            if found.len() == per_window {
                break;
            }
            found.push(interval);
            next = window.next_after(interval.end);
        }
        out.extend(found.into_iter().map(|interval| FreezeOccurrence {
            interval,
            reason: window.reason.clone(),
            environments: window.environments.clone(),
        }));
    }
    out.sort_by(|a, b| {
        (a.interval.start, a.interval.end, &a.reason).cmp(&(
            b.interval.start,
            b.interval.end,
            &b.reason,
        ))
    });
    out
}

/// The window of `windows` that freezes `env` at `now`, as a refusal: the one that lasts
/// longest when several do.
pub fn frozen(windows: &[FreezeWindow], env: &EnvName, now: DateTime<Utc>) -> Option<Blocked> {
    windows
        .iter()
        .filter(|w| w.covers(env))
        .filter_map(|w| w.active_at(now).map(|i| (i.end, w)))
        .max_by_key(|(end, _)| *end)
        .map(|(until, w)| Blocked::Frozen {
            reason: w.reason.clone(),
            until,
            by: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn env(name: &str) -> EnvName {
        EnvName::parse(name).unwrap()
    }

    fn cron(schedule: &str, duration: &str, tz: &str) -> FreezeWindow {
        FreezeWindow {
            rule: FreezeRule::Cron {
                schedule: CronSchedule::parse(schedule).unwrap(),
                duration: duration.parse().unwrap(),
                tz: tz.parse().unwrap(),
            },
            reason: format!("{schedule} for {duration} in {tz}"),
            environments: None,
        }
    }

    fn fixed(from: &str, until: &str) -> FreezeWindow {
        FreezeWindow {
            rule: FreezeRule::Fixed {
                from: t(from),
                until: t(until),
            },
            reason: "holidays".into(),
            environments: None,
        }
    }

    fn interval(start: &str, end: &str) -> Interval {
        Interval {
            start: t(start),
            end: t(end),
        }
    }

    #[test]
    fn windows_are_active_from_their_start_until_just_before_their_end() {
        let weekend = cron("0 18 * * FRI", "64h", "Asia/Hong_Kong");
        // Fri 4 Dec 18:00 HKT = 10:00Z; + 64h = Mon 7 Dec 10:00 HKT = 02:00Z.
        let this_weekend = interval("2026-12-04T10:00:00Z", "2026-12-07T02:00:00Z");
        let next_weekend = interval("2026-12-11T10:00:00Z", "2026-12-14T02:00:00Z");
        let new_york = cron("0 18 * * FRI", "64h", "America/New_York");
        let gap = cron("30 2 * * *", "1h", "America/New_York");
        let ends_in_gap = cron("30 1 * * SAT", "25h", "America/New_York");
        let twice = cron("0 9,10 * * *", "90m", "UTC");
        let holidays = fixed("2026-12-23T16:00:00Z", "2026-12-26T16:00:00Z");
        let h = interval("2026-12-23T16:00:00Z", "2026-12-26T16:00:00Z");
        for (window, now, active, next) in [
            (&weekend, "2026-12-04T09:59:59Z", None, Some(this_weekend)),
            (
                &weekend,
                "2026-12-04T10:00:00Z",
                Some(this_weekend),
                Some(next_weekend),
            ),
            (
                &weekend,
                "2026-12-05T00:00:00Z",
                Some(this_weekend),
                Some(next_weekend),
            ),
            (
                &weekend,
                "2026-12-07T01:59:59Z",
                Some(this_weekend),
                Some(next_weekend),
            ),
            (&weekend, "2026-12-07T02:00:00Z", None, Some(next_weekend)),
            // Spring forward on Sun 8 Mar: Fri 18:00 EST (23:00Z) to Mon 10:00 EDT (14:00Z),
            // 63 real hours, so the window still ends at 10:00 on the wall.
            (
                &new_york,
                "2026-03-09T13:59:00Z",
                Some(interval("2026-03-06T23:00:00Z", "2026-03-09T14:00:00Z")),
                Some(interval("2026-03-13T22:00:00Z", "2026-03-16T14:00:00Z")),
            ),
            (
                &new_york,
                "2026-03-09T14:00:00Z",
                None,
                Some(interval("2026-03-13T22:00:00Z", "2026-03-16T14:00:00Z")),
            ),
            // Fall back on Sun 1 Nov: Fri 18:00 EDT (22:00Z) to Mon 10:00 EST (15:00Z).
            (
                &new_york,
                "2026-11-02T14:30:00Z",
                Some(interval("2026-10-30T22:00:00Z", "2026-11-02T15:00:00Z")),
                Some(interval("2026-11-06T23:00:00Z", "2026-11-09T15:00:00Z")),
            ),
            // 02:30 does not exist on 8 Mar: the firing is the first moment after the gap
            // (03:00 EDT = 07:00Z) and lasts an hour on the wall.
            (
                &gap,
                "2026-03-08T07:30:00Z",
                Some(interval("2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z")),
                Some(interval("2026-03-09T06:30:00Z", "2026-03-09T07:30:00Z")),
            ),
            // Sat 01:30 EST + 25h = Sun 02:30, which the clock skips: it ends at 03:30 EDT.
            (
                &ends_in_gap,
                "2026-03-08T07:00:00Z",
                Some(interval("2026-03-07T06:30:00Z", "2026-03-08T07:30:00Z")),
                Some(interval("2026-03-14T05:30:00Z", "2026-03-15T06:30:00Z")),
            ),
            // Occurrences that overlap are one freeze: 09:00–10:30 and 10:00–11:30.
            (
                &twice,
                "2026-12-05T09:15:00Z",
                Some(interval("2026-12-05T09:00:00Z", "2026-12-05T11:30:00Z")),
                Some(interval("2026-12-05T10:00:00Z", "2026-12-05T11:30:00Z")),
            ),
            (
                &twice,
                "2026-12-05T11:29:00Z",
                Some(interval("2026-12-05T10:00:00Z", "2026-12-05T11:30:00Z")),
                Some(interval("2026-12-06T09:00:00Z", "2026-12-06T11:30:00Z")),
            ),
            (
                &twice,
                "2026-12-05T11:30:00Z",
                None,
                Some(interval("2026-12-06T09:00:00Z", "2026-12-06T11:30:00Z")),
            ),
            (&holidays, "2026-12-23T15:59:59Z", None, Some(h)),
            (&holidays, "2026-12-23T16:00:00Z", Some(h), None),
            (&holidays, "2026-12-26T15:59:59Z", Some(h), None),
            (&holidays, "2026-12-26T16:00:00Z", None, None),
        ] {
            assert_eq!(
                window.active_at(t(now)),
                active,
                "{} at {now}",
                window.reason
            );
            assert_eq!(
                window.next_after(t(now)),
                next,
                "next of {} after {now}",
                window.reason
            );
        }
    }

    #[test]
    fn a_window_that_never_lets_up_is_joined_only_so_far() {
        let now = t("2026-12-05T10:00:30Z");
        let start = t("2026-12-05T10:00:00Z");
        // Each minute's occurrence reaches two minutes on: a step per two minutes, capped.
        let every_minute = cron("* * * * *", "2m", "UTC").active_at(now).unwrap();
        assert_eq!(every_minute.start, start);
        assert_eq!(
            every_minute.end,
            start + chrono::Duration::minutes(2 * (MAX_JOINS as i64 + 1))
        );
        // Daily for ten days: joined in ten-day steps until it has lasted 90 days.
        let daily = cron("0 10 * * *", "10d", "UTC").active_at(now).unwrap();
        assert_eq!(daily.start, start);
        assert_eq!(daily.end, start + chrono::Duration::days(100));
    }

    #[test]
    fn windows_cover_their_environments_or_all() {
        let mut window = cron("0 18 * * FRI", "64h", "UTC");
        assert!(window.covers(&env("staging")) && window.covers(&env("live")));
        window.environments = Some(vec![env("live")]);
        assert!(window.covers(&env("live")) && !window.covers(&env("staging")));
    }

    #[test]
    fn schedules_are_five_fields_with_names() {
        for ok in [
            "0 18 * * FRI",
            "0 18 * * fri",
            "30 9 1 DEC *",
            "*/15 * * * MON-FRI",
        ] {
            assert!(CronSchedule::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            CronSchedule::parse(" 0 18 * * FRI ").unwrap().as_str(),
            "0 18 * * FRI"
        );
        for bad in ["0 0 18 * * FRI", "0 18 * *", "", "0 25 * * *", "0 0 31 2 *"] {
            assert!(CronSchedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn freezes_lists_active_and_coming_windows_in_order() {
        let mut weekend = cron("0 18 * * FRI", "64h", "Asia/Hong_Kong");
        weekend.reason = "weekend".into();
        weekend.environments = Some(vec![env("live")]);
        let holidays = fixed("2026-12-23T16:00:00Z", "2026-12-26T16:00:00Z");
        let past = fixed("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
        let windows = [holidays, weekend, past];
        let now = t("2026-12-05T00:00:00Z");
        let listed = |env: Option<&EnvName>, horizon: &str, per_window| {
            upcoming(&windows, env, now, horizon.parse().unwrap(), per_window)
                .into_iter()
                .map(|o| {
                    (
                        o.interval.start.to_rfc3339(),
                        o.reason.clone(),
                        o.is_active(now),
                    )
                })
                .collect::<Vec<_>>()
        };
        let row = |start: &str, reason: &str, active| (start.to_owned(), reason.to_owned(), active);
        assert_eq!(
            listed(Some(&env("live")), "21d", 3),
            vec![
                row("2026-12-04T10:00:00+00:00", "weekend", true),
                row("2026-12-11T10:00:00+00:00", "weekend", false),
                row("2026-12-18T10:00:00+00:00", "weekend", false),
                row("2026-12-23T16:00:00+00:00", "holidays", false),
            ]
        );
        assert_eq!(
            listed(Some(&env("live")), "14d", 5),
            vec![
                row("2026-12-04T10:00:00+00:00", "weekend", true),
                row("2026-12-11T10:00:00+00:00", "weekend", false),
                row("2026-12-18T10:00:00+00:00", "weekend", false),
            ]
        );
        assert_eq!(
            listed(Some(&env("staging")), "21d", 3),
            vec![row("2026-12-23T16:00:00+00:00", "holidays", false)]
        );
        assert_eq!(listed(None, "21d", 1).len(), 2);
        assert!(listed(None, "21d", 0).is_empty());
    }

    #[test]
    fn the_freeze_in_force_is_the_one_that_lasts_longest() {
        let mut short = fixed("2026-12-05T00:00:00Z", "2026-12-05T12:00:00Z");
        short.reason = "short".into();
        let mut long = fixed("2026-12-04T00:00:00Z", "2026-12-06T00:00:00Z");
        long.reason = "long".into();
        long.environments = Some(vec![env("live")]);
        let windows = [short, long];
        let now = t("2026-12-05T06:00:00Z");
        assert_eq!(
            frozen(&windows, &env("live"), now),
            Some(Blocked::Frozen {
                reason: "long".into(),
                until: t("2026-12-06T00:00:00Z"),
                by: None
            })
        );
        assert_eq!(
            frozen(&windows, &env("staging"), now),
            Some(Blocked::Frozen {
                reason: "short".into(),
                until: t("2026-12-05T12:00:00Z"),
                by: None
            })
        );
        assert_eq!(
            frozen(&windows, &env("staging"), t("2026-12-05T12:00:00Z")),
            None
        );
    }
}
