//! before_deploy / after_deploy: named stages around the provider, in the log and in the chat
//! message ("prepare → before → deploy → after"); a failing stage stops the run with
//! `failure` naming it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use e2e::direct::Outcome;
use e2e::direct::{Direct, Job, Ran, deploy_through_webhook};
use e2e::git_repo::GitRepo;
use e2e::harness::{Backend, Env, Options, scratch};
use faseng::providers::ProviderConfig;
use faseng::store::StageRecordState;
use serde_json::json;

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The stages the run record of deployment `id` holds: (name, state), each begun and ended
/// in order when it ran.
async fn recorded_stages(env: &Env, id: u64) -> Vec<(String, &'static str)> {
    let key = format!("{}/{id}", e2e::world::REPO);
    let run = env.store().await.get_run(&key).await.unwrap().unwrap();
    let mut last_end = None;
    for stage in run.stages.iter().filter(|s| s.started_at.is_some()) {
        let (start, end) = (stage.started_at.unwrap(), stage.finished_at.unwrap());
        assert!(start <= end, "{stage:?}");
        assert!(
            last_end.is_none_or(|e| e <= start),
            "in order: {:?}",
            run.stages
        );
        last_end = Some(end);
    }
    run.stages
        .iter()
        .map(|s| {
            let state = match s.state {
                StageRecordState::Pending => "pending",
                StageRecordState::Running => "running",
                StageRecordState::Done => "done",
                StageRecordState::Failed => "failed",
            };
            (s.name.clone(), state)
        })
        .collect()
}

fn stages_config() -> serde_json::Value {
    json!({"before_deploy": ["script/before"], "after_deploy": ["script/after"]})
}

async fn env_with(before: &str, after: &str) -> Env {
    let opts = Options {
        script: "echo deploy >> $SCRATCH/order\necho deployed".into(),
        app: stages_config(),
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
    let run = deploy_through_webhook(&env, "success").await;
    let order = std::fs::read_to_string(scratch(env.dir.path(), "order")).unwrap();
    assert_eq!(order, "before\ndeploy\nafter\n");

    let log = run.log().await;
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
    let msg = run.chat_says("is done").await;
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
    // The run record keeps every stage with its times (the dashboard's stage flow).
    let done = |name: &str| (name.to_owned(), "done");
    assert_eq!(
        recorded_stages(&env, run.id).await,
        [
            done("prepare"),
            done("before"),
            done("deploy"),
            done("after")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_before_stage_stops_the_run_with_a_failure_naming_it() {
    let env = env_with(
        "echo before >> $ORDER\necho 'migrations pending' >&2\nexit 2",
        "echo after >> $ORDER",
    )
    .await;
    let run = deploy_through_webhook(&env, "failure").await;
    assert_eq!(
        run.done["description"],
        "Failed in the before stage: script/before: migrations pending"
    );
    // Neither the provider nor the after stage ran.
    let order = std::fs::read_to_string(scratch(env.dir.path(), "order")).unwrap();
    assert_eq!(order, "before\n");
    run.chat_showed(
        "failed: Failed in the before stage",
        "prepare ✓ → before ✗ → deploy → after",
    )
    .await;
    let stage = |name: &str, state| (name.to_owned(), state);
    assert_eq!(
        recorded_stages(&env, run.id).await,
        [
            stage("prepare", "done"),
            stage("before", "failed"),
            stage("deploy", "pending"),
            stage("after", "pending")
        ]
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

/// Runs the shell provider on a checkout of `sha` with these `before_deploy` and
/// `after_deploy` stages.
async fn run_stages(
    d: &Direct,
    repo: &GitRepo,
    sha: &str,
    (before, after): (&[&str], &[&str]),
    timeout: Duration,
) -> Ran {
    let checkout = d.checkout(repo, sha, None);
    let settings = d.settings_without_github(ProviderConfig::default());
    let app = shell_app(before, after);
    d.run(Job::deploy(&app, sha, &checkout, &settings, timeout))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_after_stage_is_a_failure_naming_it_after_the_deploy_ran() {
    let d = Direct::new().await;
    let (repo, sha) = repo_with(&[
        ("script/deploy", "echo deployed"),
        ("script/smoke", "echo 'health check returned 503'\nexit 1"),
    ]);
    let stages: (&[&str], &[&str]) = (&[], &["script/smoke"]);
    let ran = run_stages(&d, &repo, &sha, stages, Duration::from_secs(30)).await;
    assert_eq!(
        ran.outcome,
        Outcome::Failure(
            "Failed in the after stage: script/smoke: health check returned 503".into()
        ),
        "{}",
        ran.log
    );
    ran.assert_logged(&["deployed"]);
    assert_eq!(ran.last_progress(), Some("prepare ✓ → deploy ✓ → after ✗"));
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
    for (before, expected) in [
        ("script/nope", "before_deploy: script/nope does not exist"),
        (
            "script/plain",
            "before_deploy: script/plain is not executable",
        ),
    ] {
        let ran = run_stages(&d, &repo, &sha2, (&[before], &[]), Duration::from_secs(30)).await;
        let why = ran.error();
        assert!(why.contains(expected), "{before}: {why}");
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
    let stages: (&[&str], &[&str]) = (&["script/warm"], &[]);
    let ran = run_stages(&d, &repo, &sha, stages, Duration::from_secs(2)).await;
    ran.assert_timed_out(2);
    assert!(!ran.log.contains("deployed"));
    ran.assert_nothing_left_running(&pids, 2).await;
    assert_eq!(ran.last_progress(), Some("prepare ✓ → before ✗ → deploy"));
}
