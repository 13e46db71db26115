//! Release-request checks and the tickets of a release, against the fakes: chima's GitHub
//! forge reads pull requests, reviews and commits from the fake GitHub and writes issue
//! comments and labels there; its Jira client moves and comments on issues in the fake Jira.
//! Local mode has no pull requests: its checks show as skipped.

use std::sync::Arc;

use chima::checks::{self, Evidence, Verdict};
use chima::forge::{Forge, ForgeError};
use chima::github::GithubForge;
use chima::local::{LocalDeployments, LocalForge};
use chima::tickets::{
    self, JiraClient, JiraError, JiraPlan, Moved, Outcome, Release, TicketAction, TicketPlan,
};
use deploy_core::{AppConfig, CheckKind, GitRef, GithubAuth, GithubClients, Secret};
use e2e::fake_github::{Check, FakeGithub, PullSpec, TOKEN};
use e2e::fake_jira::{self, FakeJira};
use serde_json::json;

const REPO: &str = "oursky/demo";

fn app() -> AppConfig {
    AppConfig::from_value(
        "demo",
        &json!({"provider": "shell", "repository": REPO, "environments": ["staging", "live"]}),
    )
    .unwrap()
}

async fn github() -> (FakeGithub, GithubForge) {
    let gh = FakeGithub::start().await;
    gh.add_repo(REPO, "main");
    let clients = Arc::new(GithubClients::new(
        gh.url(),
        Some(GithubAuth::Token(Secret::new(TOKEN))),
    ));
    (gh, GithubForge::new(clients))
}

fn all_checks() -> Vec<String> {
    CheckKind::ALL
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect()
}

fn free() -> Evidence {
    Evidence::new(Verdict::Pass, "no lock or freeze", None)
}

#[tokio::test]
async fn pull_requests_reviews_and_commits_are_read_as_github_sends_them() {
    let (gh, forge) = github().await;
    let sha = gh.add_branch(REPO, "feature");
    gh.add_pull(
        REPO,
        &sha,
        PullSpec::merged(12, "Add login")
            .body("## Rollback\nrevert")
            .author("bob")
            .head("feature/PROJ-5")
            .commits(&["PROJ-5 start", "polish"]),
    );
    gh.add_pull(REPO, &sha, PullSpec::closed(11, "Old attempt"));

    let pulls = forge.pulls_for_commit(&app(), &sha).await.unwrap();
    assert_eq!(
        pulls.iter().map(|p| p.number).collect::<Vec<_>>(),
        [11, 12],
        "newest first"
    );
    let merged = &pulls[1];
    assert_eq!(
        (
            merged.title.as_str(),
            merged.body.as_str(),
            merged.author.as_str(),
            merged.state.as_str(),
            merged.merged,
            merged.html_url.as_str(),
            merged.head_ref.as_str(),
        ),
        (
            "Add login",
            "## Rollback\nrevert",
            "bob",
            "closed",
            true,
            "https://github.com/oursky/demo/pull/12",
            "feature/PROJ-5",
        )
    );
    assert!(merged.merged_at.is_some_and(|t| t > merged.created_at));
    let closed = &pulls[0];
    assert_eq!((closed.merged, closed.body.as_str()), (false, ""));
    assert_eq!(checks::pick_pull(&pulls).map(|p| p.number), Some(12));

    // More reviews than one page holds: every page is read, oldest first.
    for i in 0..130 {
        gh.add_review(REPO, 12, &format!("reviewer{i}"), "COMMENTED");
    }
    gh.add_review(REPO, 12, "alice", "APPROVED");
    let reviews = forge.pull_reviews(&app(), 12).await.unwrap();
    assert_eq!(reviews.len(), 131);
    assert_eq!(
        (reviews[130].author.as_str(), reviews[130].state.as_str()),
        ("alice", "APPROVED")
    );
    assert!(
        reviews
            .windows(2)
            .all(|w| w[0].submitted_at < w[1].submitted_at)
    );
    let pages: Vec<Option<String>> = gh
        .requests()
        .into_iter()
        .filter(|r| r.path == "/repos/oursky/demo/pulls/12/reviews")
        .map(|r| r.query)
        .collect();
    assert_eq!(
        pages,
        [
            Some("per_page=100&page=1".to_owned()),
            Some("per_page=100&page=2".to_owned())
        ]
    );

    assert_eq!(
        forge.pull_commits(&app(), 12).await.unwrap(),
        ["PROJ-5 start", "polish"]
    );
    let main = gh.branch_sha(REPO, "main");
    assert!(
        forge
            .pulls_for_commit(&app(), &main)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        forge.pull_reviews(&app(), 404).await.unwrap_err(),
        ForgeError::NotFound
    );
}

#[tokio::test]
async fn issue_comments_and_labels_are_written_and_failures_come_back() {
    let (gh, forge) = github().await;
    gh.add_issue(REPO, 7);
    forge.comment_on_issue(&app(), 7, "hello").await.unwrap();
    forge.add_label(&app(), 7, "released:live").await.unwrap();
    forge.add_label(&app(), 7, "released:live").await.unwrap();
    assert_eq!(gh.issue_comments(REPO, 7), ["hello"]);
    assert_eq!(gh.issue_labels(REPO, 7), ["released:live"]);
    let posts: Vec<_> = gh
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| (r.path, r.body, r.authorization))
        .collect();
    let auth = Some(format!("Bearer {TOKEN}"));
    assert_eq!(
        posts[..2],
        [
            (
                "/repos/oursky/demo/issues/7/comments".to_owned(),
                json!({"body": "hello"}),
                auth.clone()
            ),
            (
                "/repos/oursky/demo/issues/7/labels".to_owned(),
                json!({"labels": ["released:live"]}),
                auth
            ),
        ]
    );

    assert_eq!(
        forge.comment_on_issue(&app(), 99, "x").await.unwrap_err(),
        ForgeError::NotFound
    );
    gh.fail_next("POST", "/repos/oursky/demo/issues/*/labels", 1);
    assert!(matches!(
        forge.add_label(&app(), 7, "hotfix").await,
        Err(ForgeError::Unexpected { status: 500, .. })
    ));
    forge.add_label(&app(), 7, "hotfix").await.unwrap();
    assert_eq!(gh.issue_labels(REPO, 7), ["released:live", "hotfix"]);
}

#[tokio::test]
async fn checks_are_evaluated_against_github_with_their_evidence() {
    let (gh, forge) = github().await;
    let sha = gh.add_branch(REPO, "release");
    let check = |name: &str, state: &str, check_run| Check {
        name: name.to_owned(),
        state: state.to_owned(),
        url: format!("https://ci.example/{name}"),
        check_run,
    };
    gh.add_check(REPO, "release", check("build", "success", true));
    gh.add_check(REPO, "release", check("ci/lint", "success", false));
    gh.add_pull(
        REPO,
        &sha,
        PullSpec::merged(21, "Faster search").author("bob").body(
            "Speeds up search.\r\n\r\nRollback\r\n--------\r\nRedeploy the previous sha.\r\n",
        ),
    );
    gh.add_review(REPO, 21, "alice", "APPROVED");
    let git_ref = GitRef::parse("release").unwrap();
    let (demo, kinds) = (app(), all_checks());
    let run = || checks::evaluate(&forge, &demo, &sha, &git_ref, &kinds, free());

    let pr = Some("https://github.com/oursky/demo/pull/21".to_owned());
    assert_eq!(
        run().await,
        [
            (
                "ci".to_owned(),
                Evidence::new(
                    Verdict::Pass,
                    "2 checks green",
                    Some("https://ci.example/ci/lint".to_owned())
                )
            ),
            (
                "review".to_owned(),
                Evidence::new(Verdict::Pass, "PR #21 approved by alice", pr.clone())
            ),
            (
                "rollback_notes".to_owned(),
                Evidence::new(Verdict::Pass, "PR #21 has rollback notes", pr.clone())
            ),
            ("not_locked".to_owned(), free()),
        ]
    );

    // The author's own approval and a later change request; a failing check run.
    gh.add_review(REPO, 21, "bob", "APPROVED");
    gh.add_review(REPO, 21, "carol", "CHANGES_REQUESTED");
    gh.add_check(REPO, "release", check("e2e", "failure", true));
    let results = run().await;
    assert_eq!(
        results[0].1,
        Evidence::new(
            Verdict::Fail,
            "failing: e2e",
            Some("https://ci.example/e2e".to_owned())
        )
    );
    assert_eq!(
        results[1].1,
        Evidence::new(Verdict::Fail, "PR #21: changes requested by carol", pr)
    );

    // GitHub failing to list the pull requests fails both checks that need one.
    gh.fail_next("GET", "/repos/oursky/demo/commits/*/pulls", 1);
    let results = run().await;
    for (kind, evidence) in &results[1..3] {
        assert_eq!(evidence.verdict, Verdict::Fail, "{kind}");
        assert!(
            evidence
                .summary
                .starts_with("could not ask GitHub (GitHub answered 500"),
            "{kind}: {}",
            evidence.summary
        );
    }

    // A commit no pull request brought.
    let lonely = gh.add_branch(REPO, "hotfix");
    let results = checks::evaluate(
        &forge,
        &app(),
        &lonely,
        &GitRef::parse("hotfix").unwrap(),
        &["review".to_owned(), "ci".to_owned()],
        free(),
    )
    .await;
    assert_eq!(
        results,
        [
            (
                "review".to_owned(),
                Evidence::new(
                    Verdict::Fail,
                    format!("no pull request brought {} (hotfix)", &lonely[..7]),
                    None
                )
            ),
            (
                "ci".to_owned(),
                Evidence::new(Verdict::Pass, "no CI configured", None)
            ),
        ]
    );
}

#[tokio::test]
async fn local_mode_skips_what_needs_github() {
    let state = tempfile::tempdir().unwrap();
    let store = LocalDeployments::open(&state.path().join("local.db"))
        .await
        .unwrap();
    let settings = faseng::local::LocalSettings {
        queue_url: format!("sqlite://{}", state.path().join("faseng.db").display()),
        workdir: state.path().join("work"),
        deploy_config_dir: state.path().join("deploy-config"),
        deployment_timeout: std::time::Duration::from_secs(900),
        apps: Default::default(),
    };
    let faseng = faseng::local::LocalFaseng::queue_only(settings, "http://127.0.0.1:9")
        .await
        .unwrap();
    let forge = LocalForge::new(store, Arc::new(faseng), state.path());
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let results = checks::evaluate(
        &forge,
        &app(),
        sha,
        &GitRef::parse("main").unwrap(),
        &all_checks(),
        free(),
    )
    .await;
    let skipped = Evidence::new(Verdict::Skipped, "skipped (needs GitHub)", None);
    assert_eq!(
        results.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
        [skipped.clone(), skipped.clone(), skipped, free()]
    );
    let report = tickets::update_tickets(&forge, None, &app(), &release(), &plan()).await;
    assert_eq!(
        report.lines(),
        ["Tickets not updated: Finding tickets needs GitHub: local mode has no pull requests."]
    );
}

fn release() -> Release {
    Release {
        sha: String::new(),
        environment: "live".to_owned(),
        deployment_id: 42,
        by: "alice".to_owned(),
    }
}

fn plan() -> TicketPlan {
    TicketPlan {
        github_issues: true,
        label: Some("released:live".to_owned()),
        jira: Some(JiraPlan {
            project: "PROJ".to_owned(),
            transition: "Released".to_owned(),
        }),
    }
}

const RELEASED: &str = "released to live in deployment #42 by alice";

/// The fake GitHub with a merged pull request on `sha` referring to issues #12 and #13 and
/// to PROJ-7 (title), PROJ-8 (branch) and PROJ-9 (a commit).
fn released_pull(gh: &FakeGithub) -> String {
    let sha = gh.add_branch(REPO, "main");
    gh.add_pull(
        REPO,
        &sha,
        PullSpec::merged(30, "PROJ-7: login")
            .body("Fixes #12\n\nAlso closes #13. Not `#14`, not oursky/other#15.")
            .head("feature/PROJ-8-login")
            .commits(&["PROJ-9 tidy", "PROJ-7 more"]),
    );
    gh.add_issue(REPO, 12);
    gh.add_issue(REPO, 13);
    sha
}

fn jira_client(jira: &FakeJira) -> JiraClient {
    JiraClient::new(jira.url(), fake_jira::USER, Secret::new(fake_jira::TOKEN)).unwrap()
}

#[tokio::test]
async fn a_release_comments_on_and_labels_its_issues_and_moves_its_jira_tickets() {
    let (gh, forge) = github().await;
    let sha = released_pull(&gh);
    // A Jira Server under a context path.
    let jira = FakeJira::start_with_prefix("/jira").await;
    jira.add_issue("PROJ-7", "In Progress");
    jira.add_issue("PROJ-8", "Released");
    jira.add_issue_with(
        "PROJ-9",
        "To Do",
        vec![("11".into(), "Start Progress".into(), "In Progress".into())],
    );
    let client = jira_client(&jira);
    let release = Release { sha, ..release() };
    let report = tickets::update_tickets(&forge, Some(&client), &app(), &release, &plan()).await;

    for issue in [12, 13] {
        assert_eq!(gh.issue_comments(REPO, issue), [RELEASED], "#{issue}");
        assert_eq!(gh.issue_labels(REPO, issue), ["released:live"], "#{issue}");
    }
    assert_eq!(jira.transitions_done("PROJ-7"), ["Released"]);
    assert_eq!(jira.status("PROJ-7"), "Released");
    assert!(
        jira.transitions_done("PROJ-8").is_empty(),
        "already released"
    );
    assert!(jira.transitions_done("PROJ-9").is_empty());
    for key in ["PROJ-7", "PROJ-8", "PROJ-9"] {
        assert_eq!(jira.comments(key), [RELEASED], "{key}");
    }
    assert_eq!(
        report.lines(),
        [
            "#12: commented, labelled released:live",
            "#13: commented, labelled released:live",
            "PROJ-7: moved to Released, commented",
            "PROJ-8: already Released, commented",
            "PROJ-9: could not move to Released (PROJ-9 has no transition \"Released\" (it offers: Start Progress)), commented",
        ]
    );
    assert!(!report.is_complete());
    assert!(
        report.to_retry().is_empty(),
        "a missing transition does not pass by waiting"
    );

    // Jira saw the documented requests, each with the account's basic auth.
    let requests = jira.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some(fake_jira::basic_auth().as_str()))
    );
    let moves: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/transitions"))
        .map(|r| (r.path.as_str(), &r.body))
        .collect();
    assert_eq!(
        moves,
        [(
            "/rest/api/2/issue/PROJ-7/transitions",
            &json!({"transition": {"id": "21"}})
        )]
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.path.ends_with("/comment"))
            .all(|r| r.body == json!({ "body": RELEASED }))
    );
    // The token is in no report line and not in the client's debug output.
    let shown = format!("{report:?}\n{}\n{client:?}", report.lines().join("\n"));
    assert!(!shown.contains(fake_jira::TOKEN));
}

#[tokio::test]
async fn unreachable_trackers_are_reported_and_retried_without_repeating_what_worked() {
    let (gh, forge) = github().await;
    let sha = released_pull(&gh);
    let jira = FakeJira::start().await;
    for key in ["PROJ-7", "PROJ-8", "PROJ-9"] {
        jira.add_issue(key, "In Progress");
    }
    gh.fail_next("POST", "/repos/oursky/demo/issues/12/labels", 1);
    jira.fail_next("POST", "/rest/api/2/issue/PROJ-8/comment", 1);
    jira.fail_next("GET", "/rest/api/2/issue/PROJ-9/transitions", 1);
    let client = jira_client(&jira);
    let release = Release {
        sha: sha.clone(),
        ..release()
    };
    let report = tickets::update_tickets(&forge, Some(&client), &app(), &release, &plan()).await;
    let retry = report.to_retry();
    assert_eq!(
        retry,
        [
            TicketAction::IssueLabel {
                issue: 12,
                label: "released:live".into()
            },
            TicketAction::JiraComment {
                key: "PROJ-8".into(),
                body: RELEASED.into()
            },
            TicketAction::JiraTransition {
                key: "PROJ-9".into(),
                transition: "Released".into()
            },
        ]
    );
    assert!(
        report.lines()[0]
            .starts_with("#12: commented, could not label released:live (GitHub answered 500"),
        "{:?}",
        report.lines()
    );
    assert!(report.lines()[0].ends_with("; will retry)"));

    // The caller retries later (through its outbox): only what failed is done again.
    let retried = tickets::apply(&forge, Some(&client), &app(), &retry).await;
    assert!(
        retried.iter().all(|r| r.outcome == Outcome::Done),
        "{retried:?}"
    );
    assert_eq!(gh.issue_comments(REPO, 12), [RELEASED]);
    assert_eq!(gh.issue_labels(REPO, 12), ["released:live"]);
    for key in ["PROJ-7", "PROJ-8", "PROJ-9"] {
        assert_eq!(jira.comments(key), [RELEASED], "{key}");
        assert_eq!(jira.transitions_done(key), ["Released"], "{key}");
    }

    // GitHub failing to list the released pull requests: nothing is updated, all retried.
    gh.fail_next("GET", "/repos/oursky/demo/commits/*/pulls", 1);
    let report = tickets::update_tickets(&forge, Some(&client), &app(), &release, &plan()).await;
    assert!(report.results.is_empty());
    assert!(report.lookup.as_ref().is_some_and(|f| f.temporary));
    assert_eq!(gh.issue_comments(REPO, 12), [RELEASED]);

    // A Jira nobody answers at.
    let gone = JiraClient::new(
        &format!("http://127.0.0.1:{}", e2e::net::free_port("127.0.0.1")),
        fake_jira::USER,
        Secret::new(fake_jira::TOKEN),
    )
    .unwrap();
    let err = gone.comment("PROJ-7", "x").await.unwrap_err();
    assert!(matches!(err, JiraError::Unreachable(_)), "{err:?}");
    assert!(err.is_temporary());
}

#[tokio::test]
async fn jira_refuses_wrong_credentials_and_they_are_never_shown() {
    let jira = FakeJira::start().await;
    jira.add_issue("PROJ-1", "In Progress");
    let wrong = JiraClient::new(
        jira.url(),
        fake_jira::USER,
        Secret::new("nope-secret-value"),
    )
    .unwrap();
    let err = wrong.transition("PROJ-1", "Released").await.unwrap_err();
    assert_eq!(
        err,
        JiraError::Status {
            status: 401,
            message:
                "You are not authenticated. Authentication required to perform this operation."
                    .to_owned()
        }
    );
    assert!(!err.is_temporary());
    assert!(!err.to_string().contains("nope-secret-value"));
    assert!(jira.transitions_done("PROJ-1").is_empty());

    // The right ones work, and moving twice is a no-op the second time.
    let right = jira_client(&jira);
    assert_eq!(
        right.transition("PROJ-1", "released").await,
        Ok(Moved::Done)
    );
    assert_eq!(
        right.transition("PROJ-1", "Released").await,
        Ok(Moved::Already)
    );
    assert_eq!(jira.transitions_done("PROJ-1"), ["Released"]);
    assert_eq!(
        right.comment("NOPE-1", "x").await,
        Err(JiraError::Status {
            status: 404,
            message: "Issue does not exist or you do not have permission to see it.".to_owned()
        })
    );
}
