//! faseng obeys only its operator: a deployment creator (anyone with Deployments: write on a
//! hooked repository) may ask for a deploy, never decide how it runs. In process, on both
//! queue backends: signed webhooks from a fake GitHub, a real git repository and real
//! processes.

use std::time::Duration;

use e2e::harness::{Backend, Env, Options, REPO, ROOM, WAIT, scratch};
use serde_json::{Value, json};

/// A script that records each run and takes longer than a payload's `timeout: 1` would allow.
const RECORDING_SCRIPT: &str =
    "echo run >> $SCRATCH/runs\nsleep 2\necho deployed by the operator script";

async fn start(backend: Backend, app: Value, other_apps: Value) -> Option<Env> {
    let opts = Options {
        script: RECORDING_SCRIPT.into(),
        app,
        other_apps,
        ..Options::default()
    };
    Env::start(backend, opts).await
}

/// How many times the deploy script ran.
fn runs(env: &Env) -> usize {
    std::fs::read_to_string(scratch(env.dir.path(), "runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Waits for #`id`'s final status and asserts its state and that its description has `says`.
async fn expect_final(env: &Env, id: u64, state: &str, says: &str) -> Value {
    let s = env.wait_final(id).await;
    assert_eq!(s["state"], state, "#{id}: {s}");
    let description = s["description"].as_str().unwrap_or_default();
    assert!(
        description.contains(says),
        "#{id}: {says:?} not in {description:?}"
    );
    s
}

/// A payload whose `config` tries every override: provider, scripts, stages, clone URL,
/// Heroku names, timeout, GitHub API and token, environment URL, pass-through keys. None of it
/// is obeyed: the operator's script runs once, to its end, with the operator's settings.
async fn a_payload_config_changes_nothing_about_how_an_app_is_deployed(backend: Backend) {
    let Some(env) = start(backend, json!({}), json!({})).await else {
        return;
    };
    let (mut payload, _) = env.payload("joyz");
    payload["config"] = json!({
        "provider": "heroku", "heroku_edge_name": "another-teams-app",
        "heroku_name": "another-teams-app",
        "repository": "oursky/vault",
        "environments": ["edge", "qa"],
        "deploy_script": "script/other",
        "before_deploy": ["script/deploy"], "after_deploy": ["script/deploy"],
        "clone_url": "/nonexistent/elsewhere.git",
        "timeout": 1,
        "github_api": "http://127.0.0.1:9/api/v3", "github_token": "stolen",
        "fabric_task": "pwn",
        "edge_url": "https://evil.example",
        "secret_setting": "from the payload"
    });
    let id = env.deploy_payload("edge", "deploy", payload).await;
    let s = expect_final(&env, id, "success", "Deployed in").await;
    assert_eq!(s["environment_url"], "https://edge.trelhub.example", "{s}");
    assert_eq!(runs(&env), 1, "the payload's stages ran, or its script did");
    let log = env.log(id).await;
    assert!(log.contains("deployed by the operator script"), "{log}");
    assert!(!log.contains("heroku"), "{log}");
    assert!(!log.contains("elsewhere"), "{log}");
}

/// `payload.name` may only choose between apps of the deployment's own repository.
async fn a_payload_naming_another_repositorys_app_is_refused_naming_both(backend: Backend) {
    let vault = json!({"vault": {"provider": "shell", "repository": "oursky/vault",
                                  "environments": ["edge"], "deploy_script": "script/deploy"}});
    let Some(env) = start(backend, json!({}), vault).await else {
        return;
    };
    let (mut payload, _) = env.payload("joyz");
    payload["name"] = json!("vault");
    let id = env.deploy_payload("edge", "deploy", payload).await;
    let why = "payload.name is vault, an app of oursky/vault, but this deployment is of oursky/trelhub: nothing was run";
    expect_final(&env, id, "error", why).await;
    assert_eq!(env.states(id), ["error"]);
    assert_eq!(runs(&env), 0);
}

async fn an_environment_the_app_does_not_list_is_refused(backend: Backend) {
    let Some(env) = start(backend, json!({}), json!({})).await else {
        return;
    };
    let (id, _) = env.deploy("qa", "deploy", "joyz").await;
    let why = "trelhub has no environment \"qa\" in faseng's app.json (edge, staging, production): nothing was run";
    expect_final(&env, id, "error", why).await;
    assert_eq!(runs(&env), 0);
}

/// A repository whose webhook reaches faseng but that no app deploys.
async fn a_repository_no_app_deploys_is_refused(backend: Backend) {
    let Some(env) = start(backend, json!({}), json!({})).await else {
        return;
    };
    let stranger = "mallory/tools";
    env.gh.add_repo(stranger, "main");
    env.gh.set_branch(stranger, "main", &env.sha);
    env.gh.set_clone_url(stranger, &env.repo.url());
    let (mut payload, _) = env.payload("joyz");
    payload["config"]["repository"] = json!(stranger);
    payload.as_object_mut().unwrap().remove("name");
    let d = env
        .gh
        .create_deployment(
            stranger,
            json!({"ref": "main", "environment": "edge", "auto_merge": false,
                   "required_contexts": [], "payload": payload}),
        )
        .await;
    let id = d["id"].as_u64().unwrap();
    expect_final(
        &env,
        id,
        "error",
        "no app in faseng's app.json deploys mallory/tools",
    )
    .await;
    assert_eq!(runs(&env), 0);
}

/// faseng speaks only in rooms the operator's app allows: the room's id or its name as Slack
/// tells it (never the payload's `room_name`).
async fn chat_goes_only_to_rooms_the_app_allows(backend: Backend) {
    let Some(env) = start(backend, json!({"allowed_rooms": ["deployment"]}), json!({})).await
    else {
        return;
    };
    let (id, ts) = env.deploy("edge", "deploy", "joyz").await;
    expect_final(&env, id, "success", "Deployed in").await;
    env.slack.wait_for_text(ROOM, &ts, "is done", WAIT).await;

    let other_room = "C0RANDOM01";
    let ts = env.slack.post_as_bot(other_room, "joyz asked for a deploy");
    let (mut payload, _) = env.payload("joyz");
    payload["notify"]["room"] = json!(other_room);
    payload["notify"]["room_name"] = json!("deployment");
    payload["notify"]["message_ts"] = json!(ts);
    let id = env.deploy_payload("edge", "deploy", payload).await;
    expect_final(&env, id, "success", "Deployed in").await;
    let spoke: Vec<_> = env
        .slack
        .calls()
        .into_iter()
        .filter(|c| {
            c.method.starts_with("chat.") && c.args.get("channel") == Some(&json!(other_room))
        })
        .collect();
    assert!(
        spoke.is_empty(),
        "faseng spoke in a room trelhub does not allow: {spoke:?}"
    );
    assert_eq!(
        env.slack.message(other_room, &ts).unwrap().history.len(),
        0,
        "the message in #random was edited"
    );
}

/// A clone that stalls is stopped at the run's deadline: the run ends `error` naming the
/// step, and the repository's cache is free for the next run.
async fn a_stalled_clone_ends_in_error_and_frees_the_cache(backend: Backend) {
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_url = format!("http://{}/oursky/trelhub.git", stall.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = stall.accept().await {
            held.push(socket);
        }
    });
    let mirror = json!({"trelhub-stalled": {"provider": "shell", "repository": REPO,
                                            "environments": ["edge"], "timeout": 3,
                                            "clone_url": stall_url}});
    let Some(env) = start(backend, json!({}), mirror).await else {
        return;
    };
    let (mut payload, _) = env.payload("joyz");
    payload["name"] = json!("trelhub-stalled");
    let started = tokio::time::Instant::now();
    let id = env.deploy_payload("edge", "deploy", payload).await;
    let why = format!("git fetch of {stall_url} did not finish within the run's timeout");
    expect_final(&env, id, "error", &why).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the stalled clone was stopped only after {:?}",
        started.elapsed()
    );
    let (id, _) = env.deploy("edge", "deploy", "joyz").await;
    expect_final(&env, id, "success", "Deployed in").await;
}

e2e::both_backends!(
    a_payload_config_changes_nothing_about_how_an_app_is_deployed,
    a_payload_naming_another_repositorys_app_is_refused_naming_both,
    an_environment_the_app_does_not_list_is_refused,
    a_repository_no_app_deploys_is_refused,
    chat_goes_only_to_rooms_the_app_allows,
    a_stalled_clone_ends_in_error_and_frees_the_cache,
);

/// faseng's app.json is validated like chima's: a broken file lists every problem, and
/// nothing starts.
#[test]
fn a_broken_operator_app_json_lists_every_problem_and_faseng_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("app.json");
    std::fs::write(
        &apps,
        r#"{"a": {"provider": "ansible", "repository": "o/a"},
            "b": {"provider": "shell", "repository": "o/b", "environments": []}}"#,
    )
    .unwrap();
    let out = std::process::Command::new(e2e::bins::binary("faseng"))
        .arg("worker")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FASENG_APPS_JSON", &apps)
        .env(
            "FASENG_QUEUE_URL",
            format!("sqlite://{}/f.db", dir.path().display()),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("a.provider"), "{stderr}");
    assert!(stderr.contains("b.environments"), "{stderr}");
    assert!(stderr.contains("FASENG_APPS_JSON"), "{stderr}");
    assert!(!dir.path().join("f.db").exists(), "something was started");
}
