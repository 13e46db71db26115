//! Property tests: no input makes the name and app.json parsers panic, and what they accept
//! always satisfies the rules.

use deploy_core::{AppName, Apps, EnvName, GitRef};
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z_]{0,12}".prop_map(Value::String),
        ".{0,20}".prop_map(Value::String),
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
