//! Property tests: no input makes the name and app.json parsers panic, and what they accept
//! always satisfies the rules; freeze windows answer consistently at any time in any zone.

use chrono::{DateTime, Utc};
use deploy_core::desk::{CronSchedule, FreezeRule, FreezeWindow, when};
use deploy_core::{AppName, Apps, EnvName, GitRef, Span};
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z_]{0,12}".prop_map(Value::String),
        ".{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("4h"),
            Just("0 18 * * FRI"),
            Just("Asia/Hong_Kong"),
            Just("2026-12-24T00:00:00+08:00"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("provider".to_owned()),
                    Just("repository".to_owned()),
                    Just("environments".to_owned()),
                    Just("allowed_rooms".to_owned()),
                    Just("default_environment".to_owned()),
                    Just("timeout".to_owned()),
                    Just("deploy_script".to_owned()),
                    Just("lock_ttl".to_owned()),
                    Just("tz".to_owned()),
                    Just("freeze".to_owned()),
                    Just("cron".to_owned()),
                    Just("duration".to_owned()),
                    Just("from".to_owned()),
                    Just("until".to_owned()),
                    Just("reason".to_owned()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn git_refs_never_panic_and_accepted_refs_are_safe(s in "\\PC{0,300}|[a-z/._@{}~^:?*\\[\\\\ -]{0,40}") {
        if let Ok(r) = GitRef::parse(&s) {
            let r = r.as_str();
            prop_assert!(!r.is_empty() && r.len() <= 255);
            prop_assert!(!r.starts_with('-') && !r.starts_with('/') && !r.ends_with('/'));
            prop_assert!(!r.chars().any(|c| c.is_whitespace() || c.is_control()));
            let no_sequences = !r.contains("..") && !r.contains("@{") && !r.contains("//");
            prop_assert!(no_sequences, "forbidden sequence in {:?}", r);
            prop_assert!(!r.ends_with('.') && !r.ends_with(".lock"));
            prop_assert!(!r.chars().any(|c| "~^:?*[\\".contains(c)));
        }
    }

    #[test]
    fn names_never_panic_and_accepted_names_are_plain(s in "\\PC{0,120}") {
        let accepted = [AppName::parse(&s).map(|n| n.to_string()), EnvName::parse(&s).map(|n| n.to_string())];
        for name in accepted.into_iter().flatten() {
            prop_assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)));
            prop_assert!(name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn app_json_never_panics_on_any_text(s in "\\PC{0,400}") {
        let _ = Apps::from_json(&s);
    }

    #[test]
    fn app_json_never_panics_and_loaded_apps_are_complete(v in json_value()) {
        match Apps::from_json(&v.to_string()) {
            Ok(apps) => {
                for app in apps.iter() {
                    prop_assert!(!app.environments.is_empty());
                    prop_assert!(app.raw.get("github_token").is_none());
                }
            }
            Err(e) => prop_assert!(!e.problems.is_empty()),
        }
    }
}

/// Zones with and without daylight saving time, on both sides of UTC.
const ZONES: [&str; 6] = [
    "UTC",
    "Asia/Hong_Kong",
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "Pacific/Chatham",
];

fn cron_window() -> impl Strategy<Value = FreezeWindow> {
    (
        0..60u32,
        0..24u32,
        prop_oneof![Just("*"), Just("FRI"), Just("MON-FRI"), Just("SUN,WED")],
        1..(31 * 24 * 60u64),
        prop::sample::select(&ZONES[..]),
    )
        .prop_map(|(minute, hour, days, minutes, tz)| FreezeWindow {
            rule: FreezeRule::Cron {
                schedule: CronSchedule::parse(&format!("{minute} {hour} * * {days}")).unwrap(),
                duration: Span::from_secs(minutes * 60),
                tz: tz.parse().unwrap(),
            },
            reason: "r".into(),
            environments: None,
        })
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2020 to 2035.
    (1_577_836_800..2_082_758_400i64).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn freeze_windows_answer_consistently(window in cron_window(), now in instant()) {
        if let Some(active) = window.active_at(now) {
            prop_assert!(active.contains(now), "{active:?} at {now}");
            // The freeze is over at its end: the window is not in force again until later.
            if let Some(again) = window.active_at(active.end) {
                prop_assert!(again.start > active.start, "{again:?} after {active:?}");
            }
        }
        let next = window.next_after(now).expect("a weekly schedule always fires again");
        prop_assert!(next.start > now && next.end > next.start, "{next:?} after {now}");
        prop_assert!(window.active_at(next.start).is_some(), "{next:?} is in force at its start");
    }

    #[test]
    fn times_show_in_any_zone(at in instant(), now in instant(), tz in prop::sample::select(&ZONES[..])) {
        let shown = when(at, now, tz.parse().unwrap());
        prop_assert!(shown.ends_with(')') && shown.contains(" ("), "{shown}");
    }
}

#[test]
fn git_agrees_on_a_sample_of_generated_refs() {
    if std::process::Command::new("git")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: git is not installed");
        return;
    }
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    runner
        .run(&"[a-z0-9/._@{}~^:][a-z0-9/._@{}~^:-]{0,15}", |candidate| {
            // check-ref-format takes no `--`; the pattern never starts with '-'.
            let git_ok = std::process::Command::new("git")
                .args(["check-ref-format", "--allow-onelevel", &candidate])
                .status()
                .expect("git runs")
                .success();
            let ours = GitRef::parse(&candidate).is_ok();
            prop_assert_eq!(ours, git_ok, "{:?}: git and GitRef disagree", candidate);
            Ok(())
        })
        .unwrap();
}
