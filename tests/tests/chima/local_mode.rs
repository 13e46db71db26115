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
