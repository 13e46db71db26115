//! `chima shell` as a real process: stdin in, one reply block per line out.

use e2e::fake_github::{Check, FakeGithub, TOKEN};
use e2e::procs::{Output, run_with_input};

/// Runs `chima shell` in the project directory with `args`, no GitHub credentials but those
/// in `env`, and `input` on stdin.
async fn chima_shell(args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
    let store = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(e2e::bins::binary("chima"));
    cmd.arg("shell")
        .env(
            "FASENG_QUEUE_URL",
            format!("sqlite://{}", store.path().join("faseng.db").display()),
        )
        .args(args)
        .current_dir(e2e::bins::workspace_root())
        .env_remove("GITHUB_TOKEN")
        .env_remove("GITHUB_APP_ID")
        .env_remove("GITHUB_APP_PRIVATE_KEY")
        .env_remove("CHIMA_APPS_JSON")
        .envs(env.iter().copied());
    run_with_input(cmd, input).await
}

async fn github() -> FakeGithub {
    let gh = FakeGithub::start().await;
    gh.add_repo("oursky/project-x", "main");
    gh.add_repo("oursky/trelhub", "main");
    gh.add_branch("oursky/project-x", "feature/login");
    gh.add_check(
        "oursky/project-x",
        "feature/login",
        Check {
            name: "ci/travis".into(),
            state: "success".into(),
            url: String::new(),
            check_run: false,
        },
    );
    gh
}

#[tokio::test]
async fn a_deploy_typed_in_the_allowed_room_creates_exactly_one_deployment() {
    let gh = github().await;
    let run = chima_shell(
        &["--room", "deployment", "--user", "joyz"],
        &[("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", gh.url())],
        "chima deploy project-x/feature/login to edge\n",
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let deployments = gh.deployments("oursky/project-x");
    assert_eq!(deployments.len(), 1);
    let d = &deployments[0];
    assert_eq!(d["ref"], "feature/login");
    assert_eq!(d["environment"], "edge");
    assert_eq!(d["payload"]["notify"]["adapter"], "shell");
    assert_eq!(d["payload"]["notify"]["room_name"], "deployment");
    assert_eq!(d["payload"]["notify"]["user_name"], "joyz");
    let body = &gh
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap()
        .body;
    assert_eq!(body["auto_merge"], false);
    assert_eq!(body["required_contexts"], serde_json::json!(["ci/travis"]));
    assert!(
        run.stdout
            .contains("… joyz is deploying project-x/feature/login to edge"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "↳ … Deployment #{} of project-x feature/login@",
            d["id"]
        )),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("ready: GitHub mode"), "{}", run.stderr);
    assert!(!run.stderr.contains(TOKEN) && !run.stdout.contains(TOKEN));
    insta::with_settings!({filters => e2e::snapshot::FILTERS.to_vec()}, {
        insta::assert_snapshot!("one_deploy_in_the_shell", run.stdout);
    });
}

#[tokio::test]
async fn a_room_that_is_not_allowed_creates_none_and_says_why() {
    let gh = github().await;
    let run = chima_shell(
        &["--room", "random"],
        &[("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", gh.url())],
        "chima deploy project-x/feature/login to edge\n",
    )
    .await;
    assert_eq!(run.code, Some(0));
    assert!(gh.deployments("oursky/project-x").is_empty());
    assert_eq!(
        run.stdout,
        "✖ project-x is not allowed to be deployed from #random. Deploy it from #deployment.\n\n"
    );
}

#[tokio::test]
async fn every_line_gets_one_reply_block() {
    let gh = github().await;
    let run = chima_shell(
        &[],
        &[("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", gh.url())],
        "help\nchima deplyo trelhub\n\nversion\nwhere can I deploy trelhub\n",
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let blocks: Vec<&str> = run.stdout.trim_end().split("\n\n").collect();
    assert_eq!(blocks.len(), 4, "{}", run.stdout);
    assert!(blocks[0].starts_with("Here is what I can do"));
    assert!(blocks[1].starts_with("✖ I don't know the command `deplyo`. Did you mean `deploy`?"));
    assert!(blocks[2].starts_with("chima 0."));
    assert!(blocks[3].starts_with("trelhub can be deployed to:"));
    insta::with_settings!({filters => e2e::snapshot::FILTERS.to_vec()}, {
        insta::assert_snapshot!("four_lines_four_replies", run.stdout);
    });
}

#[tokio::test]
async fn a_broken_app_json_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.json");
    std::fs::write(
        &path,
        r#"{"a": {"provider": "ansible"}, "b": {"provider": "shell", "repository": "nope", "environments": []}}"#,
    )
    .unwrap();
    let run = chima_shell(
        &[],
        &[
            ("GITHUB_TOKEN", TOKEN),
            ("CHIMA_APPS_JSON", path.to_str().unwrap()),
        ],
        "chima deploy a\n",
    )
    .await;
    assert_eq!(run.code, Some(2));
    assert_eq!(run.stdout, "", "nothing started");
    for problem in [
        "app.json has 4 problems:",
        "app.json: a.provider: unknown provider \"ansible\"",
        "app.json: a.repository: is required (owner/name)",
        "app.json: b.repository: must be of the form owner/name, got \"nope\"",
        "app.json: b.environments: must be a non-empty list of names",
    ] {
        assert!(
            run.stderr.contains(problem),
            "missing {problem:?} in {}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn a_json_syntax_error_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.json");
    std::fs::write(
        &path,
        "{\n  \"a\": {\n    \"provider\": \"shell\"\n    \"repository\": \"o/r\"\n  }\n}\n",
    )
    .unwrap();
    let run = chima_shell(&[], &[("CHIMA_APPS_JSON", path.to_str().unwrap())], "").await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .contains("app.json: invalid JSON at line 4, column 5: expected `,` or `}`"),
        "{}",
        run.stderr
    );
}
