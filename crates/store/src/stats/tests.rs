//! The definitions, pinned.

use super::*;
use crate::RollbackMark;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Day 1 is 2026-03-01 (UTC).
fn at(day: u32, hms: &str) -> DateTime<Utc> {
    t(&format!("2026-03-{day:02}T{hms}Z"))
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
}

/// A counted deploy of `app` in `env` received at `received`, started then, that took
/// `secs` and ended in `state` with `sha`.
fn deploy(
    id: u64,
    env: &str,
    received: DateTime<Utc>,
    state: RunState,
    secs: i64,
    sha: &str,
) -> RunRecord {
    RunRecord {
        key: RunRecord::key_for("o/r", id),
        deployment_id: id,
        app: "demo".into(),
        environment: env.into(),
        state,
        sha: sha.into(),
        received_at: received,
        started_at: Some(received),
        finished_at: Some(received + chrono::Duration::seconds(secs)),
        ..crate::contract::run("x")
    }
}

fn rollback(run: RunRecord, from: &str) -> RunRecord {
    RunRecord {
        rollback: Some(RollbackMark {
            from: from.into(),
            to: run.sha.clone(),
        }),
        ..run
    }
}

fn query(env: Option<&str>, since: DateTime<Utc>, until: DateTime<Utc>) -> StatsQuery {
    StatsQuery {
        app: "demo".into(),
        environment: env.map(Into::into),
        since,
        until,
    }
}

#[test]
fn which_runs_count() {
    let q = query(None, at(1, "00:00:00"), at(2, "00:00:00"));
    let base = deploy(1, "staging", at(1, "12:00:00"), RunState::Success, 10, "s");
    let with = |f: &dyn Fn(&mut RunRecord)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let cases: Vec<(&str, RunRecord, bool)> = vec![
        ("a deploy that succeeded", base.clone(), true),
        (
            "a named deploy task",
            with(&|r| r.task = "deploy:migrate".into()),
            true,
        ),
        (
            "deploy:lock changes nothing",
            with(&|r| r.task = "deploy:lock".into()),
            false,
        ),
        (
            "deploy:unlock changes nothing",
            with(&|r| r.task = "deploy:unlock".into()),
            false,
        ),
        (
            "not a deploy task",
            with(&|r| r.task = "migrate".into()),
            false,
        ),
        (
            "deployx is not deploy",
            with(&|r| r.task = "deployx".into()),
            false,
        ),
        ("failed", with(&|r| r.state = RunState::Failure), true),
        (
            "errored after it started",
            with(&|r| r.state = RunState::Error),
            true,
        ),
        (
            "refused before it started",
            with(&|r| {
                r.state = RunState::Error;
                r.started_at = None;
                r.finished_at = None;
            }),
            false,
        ),
        ("still queued", with(&|r| r.state = RunState::Queued), false),
        (
            "still running",
            with(&|r| r.state = RunState::InProgress),
            false,
        ),
        ("another app", with(&|r| r.app = "web".into()), false),
        (
            "received at the start",
            with(&|r| r.received_at = q.since),
            true,
        ),
        (
            "received just before the start",
            with(&|r| r.received_at = q.since - chrono::Duration::milliseconds(1)),
            false,
        ),
        (
            "received at the end",
            with(&|r| r.received_at = q.until),
            false,
        ),
        (
            "received just before the end",
            with(&|r| r.received_at = q.until - chrono::Duration::milliseconds(1)),
            true,
        ),
    ];
    for (what, run, expected) in cases {
        assert_eq!(counted(&run, &q), expected, "{what}");
    }
    let staging = query(Some("staging"), q.since, q.until);
    assert!(counted(&base, &staging));
    assert!(!counted(
        &base,
        &query(Some("production"), q.since, q.until)
    ));
}

#[test]
fn percentiles_are_nearest_rank() {
    let ints = |r: std::ops::RangeInclusive<i32>| r.map(f64::from).collect::<Vec<_>>();
    let cases: Vec<(Vec<f64>, Option<f64>, Option<f64>)> = vec![
        (vec![], None, None),
        (vec![5.0], Some(5.0), Some(5.0)),
        (vec![1.0, 2.0], Some(1.0), Some(2.0)),
        (vec![1.0, 2.0, 3.0], Some(2.0), Some(3.0)),
        (vec![4.0, 1.0, 3.0, 2.0], Some(2.0), Some(4.0)),
        (ints(1..=10), Some(5.0), Some(9.0)),
        (ints(1..=11), Some(6.0), Some(10.0)),
        (ints(1..=20), Some(10.0), Some(18.0)),
        (ints(1..=100), Some(50.0), Some(90.0)),
    ];
    for (samples, median, p90) in cases {
        assert_eq!(percentiles(samples.clone()), (median, p90), "{samples:?}");
    }
}

#[test]
fn figures_of_an_environment() {
    let q = query(None, at(1, "00:00:00"), at(11, "00:00:00"));
    let mut runs = vec![
        // 1: fine.
        deploy(1, "staging", at(1, "10:00:00"), RunState::Success, 60, "s1"),
        // 2: failed: a change failure, restored by 3 (finished 10:40:30 → 12:01:30).
        deploy(2, "staging", at(1, "10:40:00"), RunState::Failure, 30, "s2"),
        // 3: succeeded, then rolled back by 4: a change failure, restored by 4 (→ 13:02:00).
        deploy(3, "staging", at(1, "12:00:00"), RunState::Success, 90, "s3"),
        rollback(
            deploy(
                4,
                "staging",
                at(1, "13:00:00"),
                RunState::Success,
                120,
                "s1",
            ),
            "s3",
        ),
        // Not deploys: a lock, a refusal that never started, one still running.
        RunRecord {
            task: "deploy:lock".into(),
            ..deploy(5, "staging", at(2, "09:00:00"), RunState::Failure, 1, "s9")
        },
        RunRecord {
            started_at: None,
            finished_at: None,
            ..deploy(6, "staging", at(2, "09:01:00"), RunState::Error, 1, "s9")
        },
        RunRecord {
            finished_at: None,
            ..deploy(
                7,
                "staging",
                at(2, "09:02:00"),
                RunState::InProgress,
                1,
                "s9",
            )
        },
        // 8 errored; 9 is a success in between, then 10 rolls back from 8's sha: not the
        // next counted run after 8, so it marks 9 only if 9 had that sha (it has not).
        deploy(8, "staging", at(3, "10:00:00"), RunState::Error, 10, "s8"),
        deploy(9, "staging", at(3, "11:00:00"), RunState::Success, 20, "s9"),
        rollback(
            deploy(
                10,
                "staging",
                at(3, "12:00:00"),
                RunState::Failure,
                40,
                "s1",
            ),
            "s8",
        ),
        // 10 failed: no success after it in the period; a success after the period does
        // not restore it.
        deploy(
            11,
            "staging",
            at(11, "00:00:00"),
            RunState::Success,
            5,
            "s1",
        ),
        // Another environment and another app.
        deploy(
            12,
            "production",
            at(5, "10:00:00"),
            RunState::Success,
            300,
            "s1",
        ),
        RunRecord {
            app: "web".into(),
            ..deploy(13, "staging", at(5, "10:00:00"), RunState::Failure, 3, "s1")
        },
    ];
    // The order runs were written in does not matter.
    runs.reverse();
    let stats = compute_env_stats(&runs, &q);
    let staging = EnvStats {
        environment: "staging".into(),
        deploys: 7,
        successes: 4,
        failures: 3,
        // 10, 20, 30, 40, 60, 90, 120
        median_secs: Some(40.0),
        p90_secs: Some(120.0),
        // 2 (failed), 3 (rolled back), 8 (errored), 10 (failed)
        change_failures: 4,
        // 2 by 3, 3 by 4, 8 by 9
        restores: 3,
        // 2: 4860 s, 3: 3630 s, 8: 11:00:20 − 10:00:10 = 3610 s
        restore_median_secs: Some(3630.0),
    };
    let production = EnvStats {
        environment: "production".into(),
        deploys: 1,
        successes: 1,
        failures: 0,
        median_secs: Some(300.0),
        p90_secs: Some(300.0),
        change_failures: 0,
        restores: 0,
        restore_median_secs: None,
    };
    assert_eq!(
        stats,
        [production.clone(), staging.clone()],
        "sorted by environment"
    );
    assert_eq!(
        compute_env_stats(&runs, &query(Some("staging"), q.since, q.until)),
        std::slice::from_ref(&staging)
    );
    assert_eq!(staging.success_rate(), Some(4.0 / 7.0));
    assert_eq!(staging.change_failure_rate(), Some(4.0 / 7.0));
    assert_eq!(staging.per_day(&q), 0.7);
    assert!(
        compute_env_stats(&runs, &query(Some("nowhere"), q.since, q.until)).is_empty(),
        "an environment without counted runs has no entry"
    );
}

#[test]
fn rollbacks_mark_the_run_they_follow() {
    let q = query(None, at(1, "00:00:00"), at(2, "00:00:00"));
    let d = |id, h: &str, sha: &str| deploy(id, "staging", at(1, h), RunState::Success, 10, sha);
    let cases: Vec<(&str, Vec<RunRecord>, u64, u64)> = vec![
        (
            "rolled back from its sha: a change failure, restored by the rollback",
            vec![d(1, "10:00:00", "a"), rollback(d(2, "11:00:00", "z"), "a")],
            1,
            1,
        ),
        (
            "a rollback from another sha marks nothing",
            vec![d(1, "10:00:00", "a"), rollback(d(2, "11:00:00", "z"), "b")],
            0,
            0,
        ),
        (
            "only the next counted run marks it",
            vec![
                d(1, "10:00:00", "a"),
                d(2, "10:30:00", "b"),
                rollback(d(3, "11:00:00", "z"), "a"),
            ],
            0,
            0,
        ),
        (
            "a rollback that never started is not a run that follows",
            vec![
                d(1, "10:00:00", "a"),
                RunRecord {
                    state: RunState::Error,
                    started_at: None,
                    finished_at: None,
                    ..rollback(d(2, "10:30:00", "z"), "b")
                },
                rollback(d(3, "11:00:00", "z"), "a"),
            ],
            1,
            1,
        ),
        (
            "a failed rollback is a change failure itself, and restores nothing",
            vec![
                d(1, "10:00:00", "a"),
                RunRecord {
                    state: RunState::Failure,
                    ..rollback(d(2, "11:00:00", "z"), "a")
                },
            ],
            2,
            0,
        ),
        (
            "a rollback received after the period does not count",
            vec![
                d(1, "23:00:00", "a"),
                rollback(
                    deploy(2, "staging", at(2, "00:00:00"), RunState::Success, 10, "z"),
                    "a",
                ),
            ],
            0,
            0,
        ),
        (
            "the same time: ordered by key",
            vec![rollback(d(2, "10:00:00", "z"), "a"), d(1, "10:00:00", "a")],
            1,
            1,
        ),
    ];
    for (what, runs, change_failures, restores) in cases {
        let stats = compute_env_stats(&runs, &q);
        assert_eq!(
            (stats[0].change_failures, stats[0].restores),
            (change_failures, restores),
            "{what}"
        );
    }
}

#[test]
fn time_to_restore_is_from_the_failures_finish_to_the_next_success() {
    let q = query(None, at(1, "00:00:00"), at(2, "00:00:00"));
    let runs = [
        deploy(1, "staging", at(1, "10:00:00"), RunState::Failure, 60, "a"),
        deploy(2, "staging", at(1, "10:30:00"), RunState::Error, 60, "b"),
        // Overlapping: it finished before 2 did, so 2 is restored at once (never below 0).
        deploy(3, "staging", at(1, "10:30:30"), RunState::Success, 10, "c"),
        deploy(4, "staging", at(1, "12:00:00"), RunState::Failure, 1, "d"),
        RunRecord {
            finished_at: None,
            ..deploy(5, "staging", at(1, "13:00:00"), RunState::Success, 1, "e")
        },
    ];
    let stats = &compute_env_stats(&runs, &q)[0];
    assert_eq!(stats.change_failures, 3);
    assert_eq!(
        stats.restores, 3,
        "5 restores 4, though without a finish time"
    );
    // 1: 10:30:40 − 10:01:00 = 1780 s; 2: 0 s; 4: unknown
    assert_eq!(stats.restore_median_secs, Some(0.0));
    assert_eq!(stats.median_secs, Some(10.0), "5 has no duration");
}

#[test]
fn daily_points_cover_every_day_of_the_period() {
    // From noon on the 1st to noon on the 4th: four days, the first and last in part.
    let q = query(None, at(1, "12:00:00"), at(4, "12:00:00"));
    assert_eq!(q.days_touched(), [day(1), day(2), day(3), day(4)]);
    assert_eq!(
        query(None, at(1, "00:00:00"), at(3, "00:00:00")).days_touched(),
        [day(1), day(2)],
        "the end is exclusive"
    );
    assert!(
        query(None, at(2, "00:00:00"), at(1, "00:00:00"))
            .days_touched()
            .is_empty()
    );
    let runs = [
        // Before the period: not counted.
        deploy(1, "staging", at(1, "11:59:59"), RunState::Success, 5, "a"),
        deploy(2, "staging", at(1, "12:00:00"), RunState::Success, 10, "a"),
        deploy(3, "staging", at(1, "23:59:59"), RunState::Failure, 30, "b"),
        deploy(4, "staging", at(1, "18:00:00"), RunState::Success, 20, "c"),
        deploy(5, "staging", at(3, "00:00:00"), RunState::Success, 7, "c"),
        deploy(6, "production", at(4, "11:59:59"), RunState::Error, 1, "c"),
        // After the period: not counted.
        deploy(
            7,
            "production",
            at(4, "12:00:00"),
            RunState::Success,
            1,
            "c",
        ),
    ];
    let point = |d, deploys, successes, median: Option<f64>, p90: Option<f64>| DayPoint {
        day: day(d),
        deploys,
        successes,
        median_secs: median,
        p90_secs: p90,
    };
    let empty = |d| point(d, 0, 0, None, None);
    assert_eq!(
        compute_daily(&runs, &q),
        [
            (
                "production".to_owned(),
                vec![
                    empty(1),
                    empty(2),
                    empty(3),
                    point(4, 1, 0, Some(1.0), Some(1.0))
                ]
            ),
            (
                "staging".to_owned(),
                vec![
                    point(1, 3, 2, Some(20.0), Some(30.0)),
                    empty(2),
                    point(3, 1, 1, Some(7.0), Some(7.0)),
                    empty(4),
                ]
            ),
        ]
    );
    assert_eq!(
        compute_daily(&runs, &query(Some("staging"), q.since, q.until)).len(),
        1
    );
    assert!(compute_daily(&[], &q).is_empty());
}

#[test]
fn the_previous_period_is_as_long_and_ends_where_this_one_starts() {
    let q = query(Some("staging"), at(11, "00:00:00"), at(31, "00:00:00"));
    let p = q.previous();
    assert_eq!((p.since, p.until), (t("2026-02-19T00:00:00Z"), q.since));
    assert_eq!(p.environment, q.environment);
    assert_eq!(q.days(), 20.0);
}

#[test]
fn durations_are_printed_short() {
    let cases = [
        (0.0, "0.0s"),
        (0.44, "0.4s"),
        (9.94, "9.9s"),
        (10.4, "10s"),
        (59.4, "59s"),
        (59.6, "1m 0s"),
        (72.0, "1m 12s"),
        (3599.0, "59m 59s"),
        (3600.0, "1h 0m"),
        (7500.0, "2h 5m"),
        (86_400.0 * 3.0 + 3600.0 * 4.0 + 59.0, "3d 4h"),
        (-3.0, "0.0s"),
    ];
    for (secs, text) in cases {
        assert_eq!(duration_text(secs), text, "{secs}");
    }
    assert_eq!(percent_text(11.0 / 12.0), "92%");
    assert_eq!(percent_text(0.0), "0%");
}

fn env(
    deploys: u64,
    successes: u64,
    median: Option<f64>,
    change_failures: u64,
    restore: Option<f64>,
) -> EnvStats {
    EnvStats {
        environment: "staging".into(),
        deploys,
        successes,
        failures: deploys - successes,
        median_secs: median,
        p90_secs: median.map(|m| m * 2.0),
        change_failures,
        restores: u64::from(restore.is_some()),
        restore_median_secs: restore,
    }
}

#[test]
fn deploys_per_day_keep_two_decimals_below_one() {
    assert_eq!(
        [0.0, 1.0 / 30.0, 0.25, 1.0, 1.44, 12.0].map(per_day_text),
        ["0.0", "0.03", "0.25", "1.0", "1.4", "12.0"].map(String::from)
    );
}

#[test]
fn figures_and_their_change_against_the_previous_period() {
    let q = query(None, at(1, "00:00:00"), at(11, "00:00:00"));
    let current = env(14, 13, Some(72.0), 1, Some(600.0));
    let previous = env(10, 10, Some(80.0), 0, None);
    let f = figures(&current, Some(&previous), &q);
    assert_eq!(
        (
            f.deploys.as_str(),
            f.success_rate.as_str(),
            f.median.as_str(),
            f.p90.as_str(),
            f.per_day.as_str(),
            f.change_failure_rate.as_str(),
            f.time_to_restore.as_str()
        ),
        ("14", "93%", "1m 12s", "2m 24s", "1.4", "7%", "10m 0s")
    );
    let change: Vec<(&str, &str)> = f
        .change
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        change,
        [
            ("deploys", "+40%"),
            ("success rate", "\u{2212}7 pts"),
            ("median", "\u{2212}10%"),
            ("p90", "\u{2212}10%"),
            ("per day", "+40%"),
            ("change failure rate", "+7 pts"),
            ("time to restore", "new"),
        ]
    );
    // Nothing before: everything is new; nothing now: no figure.
    let first = figures(&env(3, 3, None, 0, None), None, &q);
    assert_eq!(first.median, NO_FIGURE);
    assert_eq!(first.time_to_restore, NO_FIGURE);
    assert_eq!(first.change_failure_rate, "0%");
    let texts: Vec<&str> = first.change.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["new", "new", "–", "–", "new", "new", "–"]);
    // The same again: no change.
    let same = figures(&previous, Some(&previous), &q);
    let texts: Vec<&str> = same.change.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["±0%", "±0 pts", "±0%", "±0%", "±0%", "±0 pts", "–"]);
}
