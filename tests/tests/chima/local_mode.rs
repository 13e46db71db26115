//! Local mode from a fresh clone: `chima shell` without GITHUB_TOKEN records deployments on
//! this machine and runs them with an in-process faseng worker, for real.

use std::path::Path;

use e2e::git_repo::git_at;
use e2e::procs::{Output as Run, run_with_input};

/// Runs `chima shell` in the project directory with local state under `state`.
async fn local_shell(state: &Path, input: &str) -> Run {
    shell_in(&e2e::bins::workspace_root(), Some(state), input).await
}

/// Runs `chima shell` in `dir` without a GitHub token; local state goes under `state`, or
/// where chima puts it by default (`dir/.faseng`) when `None`.
async fn shell_in(dir: &Path, state: Option<&Path>, input: &str) -> Run {
    let mut command = tokio::process::Command::new(e2e::bins::binary("chima"));
    command
        .arg("shell")
        .current_dir(dir)
        .env_remove("GITHUB_TOKEN")
        .env_remove("GITHUB_APP_ID")
        .env_remove("GITHUB_APP_PRIVATE_KEY")
        .env_remove("CHIMA_APPS_JSON")
        .env_remove("DEPLOY_CONFIG_DIR")
        .env_remove("FASENG_WORKDIR")
        .env_remove("CHIMA_LOCAL_DB")
        .env_remove("FASENG_QUEUE_URL");
    if let Some(state) = state {
        let faseng = state.join(".faseng");
        command
            .env("FASENG_WORKDIR", faseng.join("work"))
            .env("CHIMA_LOCAL_DB", faseng.join("local.db"))
            .env(
                "FASENG_QUEUE_URL",
                format!("sqlite://{}", faseng.join("faseng.db").display()),
            );
    }
    run_with_input(command, input).await
}

fn head_of_main() -> String {
    git_at(&e2e::bins::workspace_root(), &["ls-remote", ".", "HEAD"])
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// README's first command, as written, in a fresh clone: every path is chima's default
/// (relative to the clone), and the demo page is built from the clone's own commit.
#[tokio::test]
async fn the_quick_start_deploys_demo_in_a_fresh_clone_with_the_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("chima");
    let root = e2e::bins::workspace_root().display().to_string();
    let dest = clone.display().to_string();
    git_at(tmp.path(), &["clone", "--quiet", &root, &dest]);
    let run = shell_in(&clone, None, "chima deploy demo to staging\n").await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("  ↳ #1 demo: success in "),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&clone)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let page = clone.join(".faseng/sites/staging/current/index.html");
    let html = std::fs::read_to_string(&page)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", page.display(), run.stdout));
    assert!(html.contains(&head), "built from the clone's HEAD: {html}");
}

#[tokio::test]
async fn piping_one_deploy_into_the_shell_deploys_demo_and_reports_success() {
    let state = tempfile::tempdir().unwrap();
    let run = local_shell(state.path(), "chima deploy demo to staging\n").await;
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stderr.contains("ready: local mode"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the dashboard and logs at http://127.0.0.1:"),
        "the banner names the dashboard's loopback address: {}",
        run.stderr
    );
    let sha = head_of_main();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("… ") && lines[0].contains("is deploying demo/"),
        "{}",
        run.stdout
    );
    assert!(
        lines[1].contains("Deployment #1 of demo "),
        "{}",
        run.stdout
    );
    let states: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("  ↳ #1 demo: "))
        .collect();
    assert_eq!(states.len(), 3, "queued, running, success: {}", run.stdout);
    assert!(states[0].starts_with("queued"));
    assert!(states[1].starts_with("running — Deploying with shell"));
    assert!(states[2].starts_with("success in "), "{}", run.stdout);
    assert!(
        states[2].contains("(log: `log 1`, http://127.0.0.1:"),
        "{}",
        run.stdout
    );

    let page = state
        .path()
        .join(".faseng/sites/staging/current/index.html");
    let html = std::fs::read_to_string(&page)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", page.display(), run.stdout));
    assert!(
        html.contains(&sha),
        "the page is built from the deployed commit"
    );

    // A second session sees what the first recorded.
    let run = local_shell(
        state.path(),
        "chima deploys demo\nchima log 1\nchima where can I deploy demo\nchima ci demo\n",
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let blocks: Vec<&str> = run.stdout.trim_end().split("\n\n").collect();
    assert_eq!(blocks.len(), 4, "{}", run.stdout);
    assert!(
        blocks[0].starts_with("Recent deployments of demo:\n• #1 main@")
            && blocks[0].ends_with("— success"),
        "{}",
        blocks[0]
    );
    assert!(
        blocks[1].starts_with("Log of deployment #1:"),
        "{}",
        blocks[1]
    );
    assert!(blocks[1].contains("==> 4/4 verifying"), "{}", blocks[1]);
    assert!(
        blocks[2].contains(&format!("• staging (default) — main@{} (#1,", &sha[..7])),
        "{}",
        blocks[2]
    );
    assert_eq!(
        blocks[3],
        "There is no CI in local mode: deployments are recorded on this machine, not on GitHub."
    );
}

#[tokio::test]
async fn apps_without_a_local_repository_are_explained() {
    let state = tempfile::tempdir().unwrap();
    let run = local_shell(
        state.path(),
        "chima deploy trelhub to edge\nchima deploy demo/no-such-branch\n",
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("trelhub has no clone_url in app.json. Local mode deploys from a repository on this machine"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("There is no `no-such-branch` in oursky/chima"),
        "{}",
        run.stdout
    );
}

/// Runs `chima shell` in the project directory as `user`, with local state under `state`
/// and app.json at `apps` (the shipped one when `None`).
async fn desk_shell(state: &Path, user: &str, apps: Option<&Path>, input: &str) -> Run {
    let faseng = state.join(".faseng");
    let mut command = tokio::process::Command::new(e2e::bins::binary("chima"));
    command
        .arg("shell")
        .current_dir(e2e::bins::workspace_root())
        .env_remove("GITHUB_TOKEN")
        .env_remove("GITHUB_APP_ID")
        .env_remove("GITHUB_APP_PRIVATE_KEY")
        .env_remove("DEPLOY_CONFIG_DIR")
        .env("USER", user)
        .env("FASENG_WORKDIR", faseng.join("work"))
        .env("CHIMA_LOCAL_DB", faseng.join("local.db"))
        .env(
            "FASENG_QUEUE_URL",
            format!("sqlite://{}", faseng.join("faseng.db").display()),
        );
    match apps {
        Some(apps) => command.env("CHIMA_APPS_JSON", apps),
        None => command.env_remove("CHIMA_APPS_JSON"),
    };
    run_with_input(command, input).await
}

/// The reply blocks of a shell session (one per line typed; the desk's own words and the
/// deployment's progress are in the block of the line that set them off).
fn blocks(stdout: &str) -> Vec<&str> {
    stdout.trim_end().split("\n\n").collect()
}

/// Issue #15's first "done when", in local mode: a lock keeps another person out and names
/// its holder, `when free` waits in line and deploys by itself at `unlock`, and `audit`
/// shows each step.
#[tokio::test]
async fn a_lock_a_line_and_the_audit_in_local_mode() {
    let state = tempfile::tempdir().unwrap();
    let run = desk_shell(
        state.path(),
        "alice",
        None,
        "chima lock demo in staging for 1h: testing\n\
         as bob\n\
         chima deploy demo to staging\n\
         chima deploy demo to staging when free\n\
         as alice\n\
         chima unlock demo in staging\n",
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let b = blocks(&run.stdout);
    assert!(
        b[0].starts_with("⚿ demo in staging is locked by alice: testing, until "),
        "{}",
        run.stdout
    );
    assert_eq!(b[1], "Now speaking as bob (for the lines that follow).");
    assert!(
        b[2].starts_with("✖ demo in staging is locked by alice: testing, until ")
            && b[2].contains("Nothing was deployed.")
            && b[2]
                .contains("[Deploy when free] type: chima deploy demo/main to staging when free"),
        "{}",
        b[2]
    );
    assert!(
        b[3].starts_with("… main is #1 in line for demo in staging"),
        "{}",
        b[3]
    );
    assert!(
        b[5].starts_with("⚿ demo in staging is unlocked. The request waiting in line goes first.")
            && b[5].contains("▶ bob, demo in staging is free: deploying main as you asked.")
            && b[5].contains("Deployment #1 of demo main@"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  ↳ #1 demo: success in "),
        "the handed-off deploy ran to the end: {}",
        run.stdout
    );

    let audit = desk_shell(state.path(), "carol", None, "chima audit demo\n").await;
    let text = audit.stdout.trim_end();
    let steps: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(steps.len(), 5, "{text}");
    for (line, step) in steps.iter().rev().zip([
        "alice lock staging: for 1h: testing",
        "bob line_join staging main: position 1",
        "alice unlock staging: testing",
        "bob hand_off staging main",
        "bob deploy staging main@",
    ]) {
        assert!(line.contains(step), "{step:?} in {line:?}\n{text}");
    }

    let json = desk_shell_audit_json(state.path()).await;
    let actions: Vec<String> = json
        .iter()
        .map(|v| v["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        ["deploy", "hand_off", "unlock", "line_join", "lock"]
    );
}

async fn desk_shell_audit_json(state: &Path) -> Vec<serde_json::Value> {
    let faseng = state.join(".faseng");
    let mut command = tokio::process::Command::new(e2e::bins::binary("chima"));
    command
        .args(["audit", "--app", "demo", "--json"])
        .current_dir(e2e::bins::workspace_root())
        .env_remove("GITHUB_TOKEN")
        .env(
            "FASENG_QUEUE_URL",
            format!("sqlite://{}", faseng.join("faseng.db").display()),
        );
    let run = run_with_input(command, "").await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Issue #15's freeze "done when", in local mode: a window in app.json refuses deploys until
/// the person unfreezes; others stay refused.
#[tokio::test]
async fn a_configured_freeze_refuses_until_unfreeze_in_local_mode() {
    let state = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::hours(1)).to_rfc3339();
    let until = (now + chrono::Duration::hours(2)).to_rfc3339();
    let root = e2e::bins::workspace_root();
    let apps = state.path().join("app.json");
    std::fs::write(
        &apps,
        serde_json::json!({"demo": {
            "provider": "shell", "repository": "oursky/chima", "environments": ["staging"],
            "default_environment": "staging", "clone_url": root.display().to_string(),
            "deploy_script": "deploy.sh", "timeout": 120,
            "freeze": [{"from": from, "until": until, "reason": "release week"}]}})
        .to_string(),
    )
    .unwrap();
    let run = desk_shell(
        state.path(),
        "alice",
        Some(&apps),
        "chima deploy demo to staging\n\
         chima freezes demo\n\
         chima unfreeze demo in staging for 20m: hotfix\n\
         chima deploy demo to staging\n\
         as bob\n\
         chima deploy demo to staging\n",
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let b = blocks(&run.stdout);
    assert!(
        b[0].starts_with("✖ demo in staging is frozen: release week, until ")
            && b[0].contains("Nothing was deployed."),
        "{}",
        b[0]
    );
    assert!(
        b[1].contains("demo in every environment — on now")
            && b[1].contains("release week (app.json)"),
        "{}",
        b[1]
    );
    assert!(
        b[2].starts_with(
            "⚠ alice lifted the freeze on demo in staging for themselves only, until "
        ),
        "{}",
        b[2]
    );
    assert!(b[3].contains("Deployment #1 of demo main@"), "{}", b[3]);
    assert!(
        b[5].starts_with("✖ demo in staging is frozen: release week"),
        "{}",
        b[5]
    );
    assert!(
        run.stdout.contains("  ↳ #1 demo: success in "),
        "{}",
        run.stdout
    );
}

/// Issue #16's "done when", in local mode with the shipped app.json (`demo` protects
/// `production`): a deploy opens a request, the requester's own approval is refused, bob's
/// deploys it, the requester is told every step, and `audit demo` lists them.
#[tokio::test]
async fn a_release_request_in_local_mode() {
    let state = tempfile::tempdir().unwrap();
    let run = desk_shell(
        state.path(),
        "alice",
        None,
        "chima deploy demo to production\n\
         chima approve #1\n\
         as bob\n\
         chima approve #1\n",
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let b = blocks(&run.stdout);
    assert!(
        b[0].starts_with("… Release request #1 (demo main@")
            && b[0].contains("to production) opened by alice")
            && b[0].contains("• ci – skipped")
            && b[0].contains("• not_locked ✔ pass"),
        "{}",
        b[0]
    );
    assert!(
        b[1].contains("You asked for release request #1")
            && b[1].contains("someone else must approve it"),
        "{}",
        b[1]
    );
    assert!(
        b[3].starts_with("✔ bob approved release request #1")
            && b[3].contains("is complete: deploying exactly")
            && b[3].contains("Deployment #1 of demo "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  ↳ #1 demo: success in "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("(to alice only) ✔ Your release request #1"),
        "the requester is told directly: {}",
        run.stdout
    );

    let audit = desk_shell(state.path(), "carol", None, "chima audit demo\n").await;
    for step in [
        "alice request production",
        "bob approve production",
        "release production",
    ] {
        assert!(audit.stdout.contains(step), "{step:?} in {}", audit.stdout);
    }
}

/// Issue #17's "done when", in local mode: after two deploys, `rollback demo in staging`
/// through a real `chima shell` deploys the first commit again, marked as a rollback, says
/// which, and locks staging for whoever rolled back.
#[tokio::test]
async fn a_rollback_in_local_mode() {
    let state = tempfile::tempdir().unwrap();
    let repo = e2e::git_repo::GitRepo::new();
    repo.write_executable(
        "deploy.sh",
        "#!/bin/sh\necho \"deployed $DEPLOY_SHA to $DEPLOY_ENV\"\n",
    );
    let first = repo.commit("first");
    repo.branch("feature");
    repo.write("feature.txt", "new\n");
    let second = repo.commit("feature");
    repo.branch("main");
    repo.git(&["reset", "--quiet", "--hard", &first]);
    let apps = state.path().join("app.json");
    std::fs::write(
        &apps,
        serde_json::json!({"demo": {
            "provider": "shell", "repository": "oursky/chima", "environments": ["staging"],
            "default_environment": "staging", "clone_url": repo.path().display().to_string(),
            "deploy_script": "deploy.sh", "timeout": 120}})
        .to_string(),
    )
    .unwrap();
    let run = desk_shell(
        state.path(),
        "alice",
        Some(&apps),
        "chima deploy demo to staging\nchima deploy demo/feature to staging\n",
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("  ↳ #1 demo: success in ")
            && run.stdout.contains("  ↳ #2 demo: success in "),
        "{}",
        run.stdout
    );

    let run = desk_shell(
        state.path(),
        "alice",
        Some(&apps),
        "chima rollback demo in staging\n",
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "Rollback #3 of demo in staging to `{}` (deployment #1) from `{}` for alice: created",
            &first[..7],
            &second[..7]
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "⚿ demo in staging is now locked by alice: rolled back from {}: fix before deploying again, until ",
            &second[..7]
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  ↳ #3 demo: success in "),
        "{}",
        run.stdout
    );
    let url = format!(
        "sqlite://{}",
        state.path().join(".faseng/faseng.db").display()
    );
    let store = faseng::store::StoreUrl::parse(&url)
        .unwrap()
        .open()
        .await
        .unwrap();
    let record = store.get_run("oursky/chima/3").await.unwrap().unwrap();
    assert_eq!(record.sha, first);
    assert_eq!(
        record.rollback,
        Some(faseng::store::RollbackMark {
            from: second.clone(),
            to: first.clone()
        })
    );

    let run = desk_shell(
        state.path(),
        "bob",
        Some(&apps),
        "chima deploy demo/feature to staging\nchima stats demo\n",
    )
    .await;
    let b = blocks(&run.stdout);
    assert!(
        b[0].contains("demo in staging is locked by alice: rolled back from"),
        "the rollback's lock keeps bob out: {}",
        run.stdout
    );
    assert!(
        b[1].starts_with("Deliveries of demo over the last 30d")
            && b[1].contains("• staging — 3 deploys (new), success rate 100% (new)"),
        "{}",
        run.stdout
    );
}
