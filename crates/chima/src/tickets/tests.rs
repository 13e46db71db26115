//! Finding a release's tickets and applying the updates, over an in-memory forge (the Jira
//! client is tested against the fake Jira in the e2e crate).

use chrono::{TimeZone, Utc};
use deploy_core::AppConfig;
use serde_json::json;

use super::*;
use crate::forge::memory::MemoryForge;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn app() -> AppConfig {
    AppConfig::from_value("demo", &json!({"provider": "shell", "repository": "o/r"})).unwrap()
}

fn pull(number: u64, title: &str, body: &str, state: &str, merged: bool) -> PullInfo {
    PullInfo {
        number,
        title: title.to_owned(),
        body: body.to_owned(),
        author: "octo".to_owned(),
        state: state.to_owned(),
        merged,
        merged_at: merged.then(|| Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()),
        created_at: Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap(),
        html_url: format!("https://github.com/o/r/pull/{number}"),
        head_ref: format!("feature/PROJ-{number}0"),
    }
}

fn release() -> Release {
    Release {
        sha: SHA.to_owned(),
        environment: "live".to_owned(),
        deployment_id: 42,
        by: "alice".to_owned(),
    }
}

fn plan(label: Option<&str>, jira: bool) -> TicketPlan {
    TicketPlan {
        github_issues: true,
        label: label.map(str::to_owned),
        jira: jira.then(|| JiraPlan {
            project: "PROJ".to_owned(),
            transition: "Released".to_owned(),
        }),
    }
}

const BODY: &str = "released to live in deployment #42 by alice";

fn comment(issue: u64) -> TicketAction {
    TicketAction::IssueComment {
        issue,
        body: BODY.to_owned(),
    }
}

fn label(issue: u64) -> TicketAction {
    TicketAction::IssueLabel {
        issue,
        label: "released:live".to_owned(),
    }
}

#[tokio::test]
async fn issues_of_the_released_pull_requests_are_found_once_each() {
    let forge = MemoryForge {
        pulls: Some(Ok(vec![
            pull(
                30,
                "Login (#30)",
                "Fixes #12, closes #7\n\n`#99`",
                "closed",
                true,
            ),
            pull(
                31,
                "Follow-up",
                "Part of #12. Also #31 itself and o/other#5",
                "open",
                false,
            ),
            pull(9, "Abandoned", "Fixes #8", "closed", false),
        ])),
        ..MemoryForge::default()
    };
    let (actions, left_out) = plan_actions(
        &forge,
        &app(),
        &release(),
        &plan(Some("released:live"), false),
    )
    .await
    .unwrap();
    assert_eq!(
        actions,
        [comment(12), label(12), comment(7), label(7)],
        "the closed unmerged #9 released nothing; a pull request's own number is not a ticket"
    );
    assert_eq!(left_out, 0);
    assert_eq!(
        forge.calls(),
        [format!("pulls {SHA}")],
        "no commits read without Jira"
    );

    let (no_label, _) = plan_actions(&forge, &app(), &release(), &plan(None, false))
        .await
        .unwrap();
    assert_eq!(no_label, [comment(12), comment(7)]);
}

#[tokio::test]
async fn jira_keys_come_from_titles_branches_and_commits() {
    let forge = MemoryForge {
        pulls: Some(Ok(vec![pull(3, "PROJ-1: login", "", "closed", true)])),
        commits: [(
            3,
            Ok(vec![
                "PROJ-2 first".to_owned(),
                "OTHER-3 and PROJ-1".to_owned(),
            ]),
        )]
        .into(),
        ..MemoryForge::default()
    };
    let mut p = plan(Some("released:live"), true);
    p.github_issues = false;
    let (actions, _) = plan_actions(&forge, &app(), &release(), &p).await.unwrap();
    let keys: Vec<String> = actions.iter().map(TicketAction::ticket).collect();
    // Title, then branch feature/PROJ-30, then commits.
    assert_eq!(
        keys,
        ["PROJ-1", "PROJ-1", "PROJ-30", "PROJ-30", "PROJ-2", "PROJ-2"]
    );
    assert_eq!(
        actions[..2],
        [
            TicketAction::JiraTransition {
                key: "PROJ-1".into(),
                transition: "Released".into()
            },
            TicketAction::JiraComment {
                key: "PROJ-1".into(),
                body: BODY.into()
            }
        ]
    );
}

#[tokio::test]
async fn nothing_is_asked_when_nothing_is_wanted() {
    let forge = MemoryForge::default();
    let report = update_tickets(&forge, None, &app(), &release(), &TicketPlan::default()).await;
    assert_eq!(report, TicketReport::default());
    assert!(report.is_complete());
    assert!(forge.calls().is_empty());
}

#[tokio::test]
async fn at_most_max_tickets_of_each_kind() {
    let body: String = (1..=30).map(|n| format!("#{n} ")).collect();
    let forge = MemoryForge {
        pulls: Some(Ok(vec![pull(100, "Many", &body, "closed", true)])),
        ..MemoryForge::default()
    };
    let (actions, left_out) = plan_actions(&forge, &app(), &release(), &plan(None, false))
        .await
        .unwrap();
    assert_eq!(actions.len(), MAX_TICKETS);
    assert_eq!(left_out, 30 - MAX_TICKETS);
}

#[tokio::test]
async fn every_action_is_tried_and_failures_are_reported_for_retry() {
    let forge = MemoryForge {
        pulls: Some(Ok(vec![pull(
            30,
            "Login",
            "Fixes #12 and #13 and #404",
            "closed",
            true,
        )])),
        issues: vec![12, 13],
        // The first write (the comment on #12) is lost on the way.
        failing_writes: 1.into(),
        ..MemoryForge::default()
    };
    let report = update_tickets(
        &forge,
        None,
        &app(),
        &release(),
        &plan(Some("released:live"), true),
    )
    .await;
    let outcomes: Vec<(String, bool)> = report
        .results
        .iter()
        .map(|r| {
            (
                r.action.to_string(),
                matches!(&r.outcome, Outcome::Failed(f) if f.temporary),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("comment on #12".to_owned(), true),
            ("label #12 released:live".to_owned(), false),
            ("comment on #13".to_owned(), false),
            ("label #13 released:live".to_owned(), false),
            ("comment on #404".to_owned(), false),
            ("label #404 released:live".to_owned(), false),
            ("move PROJ-300 to Released".to_owned(), false),
            ("comment on PROJ-300".to_owned(), false),
        ]
    );
    assert!(matches!(report.results[1].outcome, Outcome::Done));
    assert!(
        matches!(&report.results[4].outcome, Outcome::Failed(f) if f.reason == "repository not found")
    );
    // Jira is wanted but not set up: said, never retried.
    assert!(
        matches!(&report.results[6].outcome, Outcome::Failed(f) if f.reason.contains("JIRA_URL"))
    );
    assert!(!report.is_complete());
    assert_eq!(report.to_retry(), [comment(12)]);

    // The retry does only what failed.
    let retried = apply(&forge, None, &app(), &report.to_retry()).await;
    assert_eq!(
        retried,
        [ActionResult {
            action: comment(12),
            outcome: Outcome::Done
        }]
    );
    let comments = forge.comments.lock().unwrap().clone();
    assert_eq!(comments, [(13, BODY.to_owned()), (12, BODY.to_owned())]);
}

#[tokio::test]
async fn a_lookup_that_fails_updates_nothing() {
    let down = MemoryForge {
        pulls: Some(Err(ForgeError::Unreachable("timed out".into()))),
        ..MemoryForge::default()
    };
    let report = update_tickets(&down, None, &app(), &release(), &plan(None, false)).await;
    assert_eq!(
        report.lookup,
        Some(Failure {
            reason: "could not read the released pull requests (GitHub is unreachable: timed out)"
                .to_owned(),
            temporary: true
        })
    );
    assert!(report.results.is_empty());
    assert!(!report.is_complete());

    let commits_down = MemoryForge {
        pulls: Some(Ok(vec![pull(3, "Fixes #1", "", "closed", true)])),
        commits: [(
            3,
            Err(ForgeError::Unexpected {
                status: 502,
                message: "Bad Gateway".into(),
            }),
        )]
        .into(),
        issues: vec![1],
        ..MemoryForge::default()
    };
    let report = update_tickets(&commits_down, None, &app(), &release(), &plan(None, true)).await;
    assert!(report.lookup.as_ref().is_some_and(|f| f.temporary));
    assert!(commits_down.comments.lock().unwrap().is_empty());

    let local = MemoryForge {
        pulls: Some(Err(ForgeError::Unsupported("local".into()))),
        ..MemoryForge::default()
    };
    let report = update_tickets(&local, None, &app(), &release(), &plan(None, false)).await;
    assert_eq!(
        report.lookup,
        Some(Failure {
            reason: "Finding tickets needs GitHub: local mode has no pull requests.".to_owned(),
            temporary: false
        })
    );
}

#[test]
fn actions_round_trip_through_json_for_the_outbox() {
    let actions = vec![
        comment(12),
        label(12),
        TicketAction::JiraTransition {
            key: "PROJ-1".into(),
            transition: "Released".into(),
        },
    ];
    let text = serde_json::to_string(&actions).unwrap();
    assert_eq!(
        serde_json::to_value(&actions[1]).unwrap(),
        json!({"action": "issue_label", "issue": 12, "label": "released:live"})
    );
    assert_eq!(
        serde_json::from_str::<Vec<TicketAction>>(&text).unwrap(),
        actions
    );
}

#[test]
fn a_plan_follows_the_apps_ticket_settings() {
    let settings = TicketSettings {
        github_issues: true,
        label: Some("released:{env}".to_owned()),
        jira: Some(deploy_core::JiraSettings {
            project: "PROJ".to_owned(),
            transition: "Released".to_owned(),
        }),
    };
    let live = deploy_core::EnvName::parse("live").unwrap();
    assert_eq!(
        TicketPlan::for_release(&settings, &live),
        plan(Some("released:live"), true)
    );
    let bare = TicketSettings {
        github_issues: false,
        label: None,
        jira: None,
    };
    assert_eq!(TicketPlan::for_release(&bare, &live), TicketPlan::default());
}
