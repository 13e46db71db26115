//! Table-driven tests of the checks, and `evaluate` over an in-memory forge.

use chrono::{DateTime, TimeZone, Utc};
use deploy_core::{AppConfig, GitRef};
use serde_json::json;

use super::*;
use crate::forge::CheckInfo;
use crate::forge::memory::MemoryForge;

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, minute, 0).unwrap()
}

fn report(checks: &[(&str, &str)]) -> CiReport {
    CiReport {
        sha: "a".repeat(40),
        checks: checks
            .iter()
            .map(|(name, state)| CheckInfo {
                name: (*name).to_owned(),
                state: (*state).to_owned(),
                url: Some(format!("https://ci.example/{name}")),
            })
            .collect(),
    }
}

/// (checks, required contexts, verdict, summary, name of the check linked as evidence)
type CiCase = (
    Vec<(&'static str, &'static str)>,
    Option<Vec<String>>,
    Verdict,
    &'static str,
    Option<&'static str>,
);

#[test]
fn ci_verdicts() {
    let required = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let cases: Vec<CiCase> = vec![
        (vec![], None, Verdict::Pass, "no CI configured", None),
        (
            vec![("build", "success"), ("lint", "success")],
            None,
            Verdict::Pass,
            "2 checks green",
            Some("build"),
        ),
        (
            vec![
                ("build", "success"),
                ("lint", "failure"),
                ("e2e", "timed_out"),
            ],
            None,
            Verdict::Fail,
            "failing: lint, e2e",
            Some("lint"),
        ),
        (
            vec![("build", "pending"), ("lint", "failure")],
            None,
            Verdict::Fail,
            "failing: lint",
            Some("lint"),
        ),
        (
            vec![("build", "success"), ("e2e", "in_progress")],
            None,
            Verdict::Pending,
            "waiting for: e2e",
            Some("e2e"),
        ),
        (
            vec![("build", "success"), ("docs", "skipped"), ("x", "neutral")],
            None,
            Verdict::Pass,
            "3 checks green",
            Some("build"),
        ),
        // Required contexts: only those count.
        (
            vec![("build", "success"), ("flaky", "failure")],
            Some(required(&["build"])),
            Verdict::Pass,
            "1 check green",
            Some("build"),
        ),
        (
            vec![("build", "failure"), ("lint", "success")],
            Some(required(&["build", "lint"])),
            Verdict::Fail,
            "failing: build",
            Some("build"),
        ),
        // A required context that never reported is still awaited, even with no CI at all.
        (
            vec![("lint", "success")],
            Some(required(&["build", "lint"])),
            Verdict::Pending,
            "waiting for: build",
            None,
        ),
        (
            vec![],
            Some(required(&["build"])),
            Verdict::Pending,
            "waiting for: build",
            None,
        ),
        (
            vec![("build", "failure")],
            Some(vec![]),
            Verdict::Pass,
            "no status contexts required",
            None,
        ),
    ];
    for (checks, required, verdict, summary, url) in cases {
        let evidence = ci(&report(&checks), required.as_deref());
        assert_eq!(
            evidence,
            Evidence::new(
                verdict,
                summary,
                url.map(|u| format!("https://ci.example/{u}"))
            ),
            "{checks:?} with {required:?}"
        );
    }
}

fn pull(number: u64, state: &str, merged_at: Option<u32>, opened: u32) -> PullInfo {
    PullInfo {
        number,
        title: format!("PR {number}"),
        body: String::new(),
        author: "octo".to_owned(),
        state: state.to_owned(),
        merged: merged_at.is_some(),
        merged_at: merged_at.map(at),
        created_at: at(opened),
        html_url: format!("https://github.com/o/r/pull/{number}"),
        head_ref: format!("topic-{number}"),
    }
}

#[test]
fn the_newest_merged_pull_request_is_picked_else_the_newest_open_one() {
    let cases: Vec<(Vec<PullInfo>, Option<u64>)> = vec![
        (vec![], None),
        (vec![pull(1, "closed", None, 0)], None),
        (
            vec![pull(1, "open", None, 0), pull(2, "open", None, 5)],
            Some(2),
        ),
        (
            vec![
                pull(3, "closed", Some(30), 1),
                pull(4, "closed", Some(20), 2),
                pull(9, "open", None, 50),
            ],
            Some(3),
        ),
        (
            vec![pull(5, "closed", None, 9), pull(6, "open", None, 1)],
            Some(6),
        ),
    ];
    for (pulls, picked) in cases {
        assert_eq!(
            pick_pull(&pulls).map(|p| p.number),
            picked,
            "{:?}",
            pulls.iter().map(|p| p.number).collect::<Vec<_>>()
        );
    }
}

fn reviews(list: &[(&str, &str, Option<u32>)]) -> Vec<ReviewInfo> {
    list.iter()
        .map(|(author, state, minute)| ReviewInfo {
            author: (*author).to_owned(),
            state: (*state).to_owned(),
            submitted_at: minute.map(at),
        })
        .collect()
}

#[test]
fn review_verdicts() {
    let pr = pull(12, "closed", Some(40), 0);
    // (reviews oldest first, verdict, summary)
    let cases: Vec<(Vec<ReviewInfo>, Verdict, &str)> = vec![
        (
            reviews(&[]),
            Verdict::Fail,
            "PR #12 has no approval from someone other than its author octo",
        ),
        (
            reviews(&[("alice", "APPROVED", Some(1))]),
            Verdict::Pass,
            "PR #12 approved by alice",
        ),
        // The author's own approval never counts (logins are case-insensitive).
        (
            reviews(&[("Octo", "APPROVED", Some(1))]),
            Verdict::Fail,
            "PR #12 has no approval from someone other than its author octo",
        ),
        (
            reviews(&[
                ("alice", "APPROVED", Some(1)),
                ("bob", "CHANGES_REQUESTED", Some(2)),
            ]),
            Verdict::Fail,
            "PR #12: changes requested by bob",
        ),
        // A reviewer's later approval replaces their change request.
        (
            reviews(&[
                ("bob", "CHANGES_REQUESTED", Some(1)),
                ("bob", "APPROVED", Some(3)),
            ]),
            Verdict::Pass,
            "PR #12 approved by bob",
        ),
        // …and a later change request replaces an approval.
        (
            reviews(&[
                ("bob", "APPROVED", Some(1)),
                ("bob", "CHANGES_REQUESTED", Some(3)),
            ]),
            Verdict::Fail,
            "PR #12: changes requested by bob",
        ),
        // Dismissed reviews are dropped: the reviewer's latest remaining verdict counts.
        (
            reviews(&[
                ("alice", "APPROVED", Some(1)),
                ("bob", "DISMISSED", Some(2)),
            ]),
            Verdict::Pass,
            "PR #12 approved by alice",
        ),
        (
            reviews(&[("alice", "DISMISSED", Some(1))]),
            Verdict::Fail,
            "PR #12 has no approval from someone other than its author octo",
        ),
        // A comment leaves the verdict standing; a pending review is not submitted.
        (
            reviews(&[
                ("alice", "APPROVED", Some(1)),
                ("alice", "COMMENTED", Some(2)),
                ("bob", "PENDING", None),
            ]),
            Verdict::Pass,
            "PR #12 approved by alice",
        ),
        (
            reviews(&[
                ("carol", "APPROVED", Some(2)),
                ("alice", "APPROVED", Some(1)),
            ]),
            Verdict::Pass,
            "PR #12 approved by alice, carol",
        ),
        // Order by submission time even when listed out of order.
        (
            reviews(&[
                ("bob", "APPROVED", Some(9)),
                ("bob", "CHANGES_REQUESTED", Some(3)),
            ]),
            Verdict::Pass,
            "PR #12 approved by bob",
        ),
    ];
    for (list, verdict, summary) in cases {
        assert_eq!(
            review(Some(&pr), &list),
            Evidence::new(verdict, summary, Some(pr.html_url.clone())),
            "{list:?}"
        );
    }
    assert_eq!(
        review(None, &reviews(&[("alice", "APPROVED", Some(1))])),
        Evidence::new(Verdict::Fail, "no pull request brought this commit", None)
    );
}

#[test]
fn rollback_sections() {
    use RollbackSection::*;
    let cases: &[(&str, RollbackSection)] = &[
        ("", Missing),
        ("Just a description.", Missing),
        ("## Rollback\nRevert the PR.", Present),
        ("# rollback plan\n\n* run `script/undo`", Present),
        ("### ROLLBACK\n\n```\ngit revert abc\n```\n", Present),
        ("Rollback\n========\nRedeploy v1.2.\n", Present),
        ("Rollback steps\n---\n\nflip the flag back\n", Present),
        ("## Rollback\n", Empty),
        ("## Rollback\n\n   \n", Empty),
        ("## Rollback\n<!-- How do we undo this? -->\n", Empty),
        (
            "## Rollback\n<!--\nHow do we undo this?\nSay it here.\n-->\n\n## Testing\nunit tests",
            Empty,
        ),
        ("## Rollback\n<!-- hint --> revert it\n", Present),
        ("## Rollback\n<details>revert</details>\n", Present),
        // The section ends at the next heading of the same or a higher level…
        ("## Rollback\n## Testing\nRan the suite.", Empty),
        ("### Rollback\n# Notes\nSomething.", Empty),
        // …but a deeper heading stays inside it (and is not notes by itself).
        ("## Rollback\n### Steps\n1. revert\n## Other\n", Present),
        ("## Rollback\n### Steps\n<!-- -->\n## Other\nx", Empty),
        // Any heading starting with the word, emphasis and all.
        ("## **Rollback** notes\nrevert", Present),
        ("## How to roll back\nrevert", Missing),
        ("## Rolling back\nrevert", Missing),
        // Not a heading.
        ("Rollback: revert it", Missing),
        ("    ## Rollback\n    revert", Missing),
        ("```\n## Rollback\nrevert\n```", Missing),
        // A later non-empty section counts.
        ("## Rollback\n\n# Rollback again\nrevert", Present),
        // An unclosed comment hides the rest.
        ("## Rollback\n<!-- fill me in\nrevert", Empty),
        ("## Rollback\r\n\r\nRevert the deploy.\r\n", Present),
        ("## Rollback\n---\n", Empty),
    ];
    for (body, expected) in cases {
        assert_eq!(rollback_section(body), *expected, "{body:?}");
    }
}

#[test]
fn rollback_notes_evidence() {
    let mut pr = pull(7, "open", None, 0);
    pr.body = "## Rollback\nrevert".to_owned();
    let link = Some(pr.html_url.clone());
    assert_eq!(
        rollback_notes(Some(&pr)),
        Evidence::new(Verdict::Pass, "PR #7 has rollback notes", link.clone())
    );
    pr.body = "## Rollback\n<!-- todo -->".to_owned();
    assert_eq!(
        rollback_notes(Some(&pr)),
        Evidence::new(
            Verdict::Fail,
            "the Rollback section of PR #7 is empty",
            link.clone()
        )
    );
    pr.body = String::new();
    assert_eq!(
        rollback_notes(Some(&pr)),
        Evidence::new(Verdict::Fail, "PR #7 has no section headed Rollback", link)
    );
    assert_eq!(rollback_notes(None).verdict, Verdict::Fail);
}

#[test]
fn html_comments_are_stripped() {
    for (html, left) in [
        ("<!-- a -->", ""),
        ("x<!-- a -->y<!--b-->z", "xyz"),
        ("<!-- open", ""),
        ("<p>", "<p>"),
    ] {
        assert_eq!(strip_html_comments(html), left);
    }
}

#[test]
fn verdicts_that_block() {
    assert!(Verdict::Fail.blocks());
    assert!(Verdict::Pending.blocks());
    assert!(!Verdict::Pass.blocks());
    assert!(!Verdict::Skipped.blocks());
    assert_eq!(
        serde_json::to_value(Evidence::new(Verdict::Skipped, "s", None)).unwrap(),
        json!({"verdict": "skipped", "summary": "s", "url": null})
    );
}

/// A forge answering `evaluate`'s calls.
fn canned(
    ci: Result<CiReport, ForgeError>,
    pulls: Result<Vec<PullInfo>, ForgeError>,
    reviews: Result<Vec<ReviewInfo>, ForgeError>,
) -> MemoryForge {
    MemoryForge {
        ci: Some(ci),
        pulls: Some(pulls),
        reviews: [(12, reviews.clone()), (4, reviews)].into(),
        ..MemoryForge::default()
    }
}

fn app(extra: serde_json::Value) -> AppConfig {
    let mut config = json!({"provider": "shell", "repository": "o/r"});
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    AppConfig::from_value("demo", &config).unwrap()
}

fn kinds(list: &[&str]) -> Vec<String> {
    list.iter().map(|k| (*k).to_owned()).collect()
}

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn free() -> Evidence {
    Evidence::new(Verdict::Pass, "no lock or freeze", None)
}

#[tokio::test]
async fn evaluate_runs_the_named_checks_in_order_with_their_links() {
    let mut pr = pull(12, "closed", Some(10), 0);
    pr.body = "## Rollback\nrevert".to_owned();
    let forge = canned(
        Ok(report(&[("build", "failure")])),
        Ok(vec![pr.clone(), pull(3, "closed", None, 0)]),
        Ok(reviews(&[("alice", "APPROVED", Some(1))])),
    );
    let results = evaluate(
        &forge,
        &app(json!({})),
        SHA,
        &GitRef::parse("main").unwrap(),
        &kinds(&["not_locked", "rollback_notes", "review", "ci", "typo"]),
        free(),
    )
    .await;
    let pr_link = Some(pr.html_url.clone());
    assert_eq!(
        results,
        vec![
            ("not_locked".to_owned(), free()),
            (
                "rollback_notes".to_owned(),
                Evidence::new(Verdict::Pass, "PR #12 has rollback notes", pr_link.clone())
            ),
            (
                "review".to_owned(),
                Evidence::new(Verdict::Pass, "PR #12 approved by alice", pr_link)
            ),
            (
                "ci".to_owned(),
                Evidence::new(
                    Verdict::Fail,
                    "failing: build",
                    Some("https://ci.example/build".to_owned())
                )
            ),
            (
                "typo".to_owned(),
                Evidence::new(Verdict::Fail, "unknown check \"typo\"", None)
            ),
        ]
    );
    let mut asked = forge.calls();
    asked.sort();
    // CI is asked about the sha itself, not the ref (which may have moved on).
    assert_eq!(
        asked,
        [
            format!("ci {SHA}"),
            format!("pulls {SHA}"),
            "reviews 12".into()
        ]
    );
}

#[tokio::test]
async fn evaluate_asks_only_what_the_checks_need() {
    let forge = canned(Ok(report(&[])), Ok(vec![]), Ok(vec![]));
    let main = GitRef::parse("main").unwrap();
    let results = evaluate(
        &forge,
        &app(json!({})),
        SHA,
        &main,
        &kinds(&["rollback_notes"]),
        free(),
    )
    .await;
    assert_eq!(
        results,
        vec![(
            "rollback_notes".to_owned(),
            Evidence::new(
                Verdict::Fail,
                "no pull request brought 0123456 (main)",
                None
            )
        )]
    );
    assert_eq!(forge.calls(), [format!("pulls {SHA}")]);
    assert!(
        evaluate(&forge, &app(json!({})), SHA, &main, &[], free())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn evaluate_uses_the_apps_required_contexts() {
    let forge = canned(
        Ok(report(&[("build", "success"), ("flaky", "failure")])),
        Ok(vec![]),
        Ok(vec![]),
    );
    let results = evaluate(
        &forge,
        &app(json!({"required_contexts": ["build"]})),
        SHA,
        &GitRef::parse("main").unwrap(),
        &kinds(&["ci"]),
        free(),
    )
    .await;
    assert_eq!(results[0].1.verdict, Verdict::Pass);
}

#[tokio::test]
async fn checks_local_mode_cannot_answer_are_skipped_and_unanswered_ones_fail() {
    let unsupported = || ForgeError::Unsupported("local".to_owned());
    let local = canned(Err(unsupported()), Err(unsupported()), Err(unsupported()));
    let main = GitRef::parse("main").unwrap();
    let all = kinds(&["ci", "review", "rollback_notes", "not_locked"]);
    let results = evaluate(&local, &app(json!({})), SHA, &main, &all, free()).await;
    let skipped = Evidence::new(Verdict::Skipped, "skipped (needs GitHub)", None);
    assert_eq!(results[0].1, skipped);
    assert_eq!(results[1].1, skipped);
    assert_eq!(results[2].1, skipped);
    assert_eq!(results[3].1, free());

    let down = canned(
        Err(ForgeError::Unreachable("connection refused".into())),
        Ok(vec![pull(4, "open", None, 0)]),
        Err(ForgeError::Unexpected {
            status: 502,
            message: "Bad Gateway".into(),
        }),
    );
    let results = evaluate(&down, &app(json!({})), SHA, &main, &all, free()).await;
    assert_eq!(
        results[0].1,
        Evidence::new(
            Verdict::Fail,
            "could not ask GitHub (GitHub is unreachable: connection refused); recheck later",
            None
        )
    );
    assert_eq!(
        results[1].1,
        Evidence::new(
            Verdict::Fail,
            "could not ask GitHub (GitHub answered 502: Bad Gateway); recheck later",
            None
        )
    );
    assert_eq!(results[2].1.verdict, Verdict::Fail);
}
