//! before_deploy / after_deploy: named stages around the provider, in the log and in the chat
//! message ("prepare → before → deploy → after"); a failing stage stops the run with
//! `failure` naming it.

#[path = "faseng_harness/mod.rs"]
mod harness;
mod provider_support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use e2e::git_repo::GitRepo;
use faseng::providers::{Outcome, ProviderConfig};
use harness::{Backend, Env, Options, ROOM, WAIT, scratch};
use provider_support::{Direct, group_members, wait_dead};
use serde_json::json;

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn stages_config() -> serde_json::Value {
    json!({"before_deploy": ["script/before"], "after_deploy": ["script/after"]})
}

async fn env_with(before: &str, after: &str) -> Env {
    let opts = Options {
        script: "echo deploy >> $SCRATCH/order\necho deployed".into(),
        ..Options::default()
    };
    let env = Env::start(Backend::Sqlite, opts)
        .await
        .expect("sqlite needs nothing");
    let order = scratch(env.dir.path(), "order");
    let o = env.dir.path().join("deploy-config/trelhub");
    script(
        &o,
        "script/before",
        &before.replace("$ORDER", &order.display().to_string()),
    );
    script(
        &o,
        "script/after",
        &after.replace("$ORDER", &order.display().to_string()),
    );
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn before_and_after_run_around_the_provider_as_named_stages_in_log_and_chat() {
    let env = env_with(
        "echo before >> $ORDER\necho \"before for $DEPLOY_ENV at $DEPLOY_SHA\"",
        "echo after >> $ORDER\necho smoke test passed",
    )
    .await;
    let (id, ts) = env.deploy("edge", "deploy", "joyz", stages_config()).await;
    let done = env.wait_final(id).await;
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(env.states(id), ["queued", "in_progress", "success"]);
    let order = std::fs::read_to_string(scratch(env.dir.path(), "order")).unwrap();
    assert_eq!(order, "before\ndeploy\nafter\n");

    let log_url = env.gh.statuses(id)[1]["log_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, log) = env.get(&format!("{log_url}/log")).await;
    let pos = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing:\n{log}"))
    };
    assert!(pos("==> before: script/before") < pos(&format!("before for edge at {}", env.sha)));
    assert!(pos("==> before: script/before") < pos("==> shell: "));
    assert!(pos("==> shell: ") < pos("==> after: script/after"));
    assert!(pos("==> after: script/after") < pos("smoke test passed"));

    // Chat shows the stage line as it moves on; updates that queue up behind a slow chat
    // call are coalesced to the latest, so the lines seen must be in order (the log above has
    // every stage).
    let msg = env.slack.wait_for_text(ROOM, &ts, "is done", WAIT).await;
    let progression = [
        "*prepare …* → before → deploy → after",
        "prepare ✓ → *before …* → deploy → after",
        "prepare ✓ → before ✓ → *deploy …* → after",
        "prepare ✓ → before ✓ → deploy ✓ → *after …*",
        "prepare ✓ → before ✓ → deploy ✓ → after ✓",
    ];
    let shown: Vec<usize> = msg
        .history
        .iter()
        .chain([&msg.text])
        .filter_map(|h| progression.iter().position(|line| h.contains(line)))
        .collect();
    assert!(
        shown.windows(2).all(|w| w[0] <= w[1]),
        "stages shown out of order: {:?}",
        msg.history
    );
    assert!(
        !shown.is_empty(),
        "no stage progress shown: {:?}",
        msg.history
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_before_stage_stops_the_run_with_a_failure_naming_it() {
    let env = env_with(
        "echo before >> $ORDER\necho 'migrations pending' >&2\nexit 2",
        "echo after >> $ORDER",
    )
    .await;
    let (id, ts) = env.deploy("edge", "deploy", "joyz", stages_config()).await;
    let done = env.wait_final(id).await;
    assert_eq!(done["state"], "failure", "{done}");
    assert_eq!(
        done["description"],
        "Failed in the before stage: script/before: migrations pending"
    );
    assert_eq!(env.states(id), ["queued", "in_progress", "failure"]);
    // Neither the provider nor the after stage ran.
    let order = std::fs::read_to_string(scratch(env.dir.path(), "order")).unwrap();
    assert_eq!(order, "before\n");
    let msg = env
        .slack
        .wait_for_text(ROOM, &ts, "failed: Failed in the before stage", WAIT)
        .await;
    assert!(
        msg.history
            .iter()
            .any(|h| h.contains("prepare ✓ → before ✗ → deploy → after")),
        "{:?}",
        msg.history
    );
}

fn shell_app(before: &[&str], after: &[&str]) -> serde_json::Value {
    json!({"provider": "shell", "repository": "oursky/trelhub", "environments": ["edge"],
           "before_deploy": before, "after_deploy": after})
}

fn repo_with(scripts: &[(&str, &str)]) -> (GitRepo, String) {
    let repo = GitRepo::new();
    for (name, body) in scripts {
        repo.write_executable(name, &format!("#!/bin/sh\n{body}\n"));
    }
    let sha = repo.commit("scripts");
    (repo, sha)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_after_stage_is_a_failure_naming_it_after_the_deploy_ran() {
    let d = Direct::new().await;
    let (repo, sha) = repo_with(&[
        ("script/deploy", "echo deployed"),
        ("script/smoke", "echo 'health check returned 503'\nexit 1"),
    ]);
    let checkout = d.checkout(&repo, &sha, None);
    let settings = d.settings(ProviderConfig::default(), "http://127.0.0.1:9", None);
    let ran = d
        .run(
            &shell_app(&[], &["script/smoke"]),
            "edge",
            "deploy",
            "main",
            &sha,
            &checkout,
            &settings,
            Duration::from_secs(30),
            vec![],
        )
        .await;
    assert_eq!(
        ran.outcome,
        Outcome::Failure(
            "Failed in the after stage: script/smoke: health check returned 503".into()
        ),
        "{}",
        ran.log
    );
    assert!(ran.log.contains("deployed"), "{}", ran.log);
    assert_eq!(
        ran.progress.last().map(String::as_str),
        Some("prepare ✓ → deploy ✓ → after ✗")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_script_that_cannot_run_is_an_error_before_anything_runs() {
    let d = Direct::new().await;
    let (repo, _) = repo_with(&[("script/deploy", "echo deployed"), ("script/plain", "")]);
    std::fs::set_permissions(
        repo.path().join("script/plain"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let sha2 = repo.commit("not executable");
    let checkout = d.checkout(&repo, &sha2, None);
    let settings = d.settings(ProviderConfig::default(), "http://127.0.0.1:9", None);
    for (before, expected) in [
        ("script/nope", "before_deploy: script/nope does not exist"),
        (
            "script/plain",
            "before_deploy: script/plain is not executable",
        ),
    ] {
        let ran = d
            .run(
                &shell_app(&[before], &[]),
                "edge",
                "deploy",
                "main",
                &sha2,
                &checkout,
                &settings,
                Duration::from_secs(30),
                vec![],
            )
            .await;
        assert!(
            matches!(&ran.outcome, Outcome::Error(w) if w.contains(expected)),
            "{:?}",
            ran.outcome
        );
        assert!(ran.pgids.is_empty(), "something ran");
        assert!(!ran.log.contains("deployed"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_share_the_run_timeout_and_a_timed_out_stage_leaves_nothing_running() {
    let d = Direct::new().await;
    let pids = d.dir.path().join("pids");
    let (repo, sha) = repo_with(&[
        ("script/deploy", "echo deployed"),
        (
            "script/warm",
            &format!(
                "sleep 300 &\necho $! >> {}\necho $$ >> {}\nwait",
                pids.display(),
                pids.display()
            ),
        ),
    ]);
    let checkout = d.checkout(&repo, &sha, None);
    let settings = d.settings(ProviderConfig::default(), "http://127.0.0.1:9", None);
    let ran = d
        .run(
            &shell_app(&["script/warm"], &[]),
            "edge",
            "deploy",
            "main",
            &sha,
            &checkout,
            &settings,
            Duration::from_secs(2),
            vec![],
        )
        .await;
    assert_eq!(
        ran.outcome,
        Outcome::Failure("Timed out after 2 s".into()),
        "{}",
        ran.log
    );
    assert!(!ran.log.contains("deployed"));
    let recorded: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(recorded.len(), 2);
    assert!(
        wait_dead(&recorded, Duration::from_secs(5))
            .await
            .is_empty()
    );
    for pg in &ran.pgids {
        assert!(group_members(*pg).is_empty());
    }
    assert_eq!(
        ran.progress.last().map(String::as_str),
        Some("prepare ✓ → before ✗ → deploy")
    );
}
