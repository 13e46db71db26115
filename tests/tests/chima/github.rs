//! chima against a fake GitHub: every GitHub outcome of a deploy, listing, CI, GitHub
//! Enterprise, per-app credentials. Every body chima sends is checked against GitHub's schema
//! by the fake.

use chima::chat::{ActionKind, RecordingOutbox};
use deploy_core::{Apps, GithubAuth, Secret};
use e2e::chat::{Chat, check, example_apps, room};
use e2e::fake_github::{FakeGithub, TOKEN};
use serde_json::{Value, json};

#[tokio::test]
async fn deploy_a_branch_creates_exactly_the_deployment_design_md_describes() {
    let chat = Chat::new().await;
    let sha = chat.gh.add_branch("oursky/project-x", "feature/login");
    chat.green("oursky/project-x", "feature/login", "ci/travis");

    let reply = chat
        .reply("deployment", "chima deploy project-x/feature/login to edge")
        .await;

    let deployments = chat.deployments("oursky/project-x");
    assert_eq!(deployments.len(), 1);
    let d = &deployments[0];
    assert_eq!(
        reply,
        format!(
            "Deployment #{} of project-x feature/login@{} to edge for joyz: created, waiting for a deployer. {}/oursky/project-x/deployments",
            d["id"],
            &sha[..7],
            chat.gh.url()
        )
    );
    let body = &chat
        .gh
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/repos/oursky/project-x/deployments")
        .unwrap()
        .body;
    let payload = &body["payload"];
    assert_eq!(
        body,
        &json!({
            "ref": "feature/login", "task": "deploy", "environment": "edge",
            "auto_merge": false, "required_contexts": ["ci/travis"],
            "description": "deploy on edge from chima", "production_environment": false,
            "payload": payload,
        })
    );
    // The live message (the first reply, edited in place) is what faseng will edit.
    assert_eq!(
        payload,
        &json!({
            "name": "project-x", "robotName": "chima", "hosts": "",
            "notify": {"adapter": "slack", "room": "recording", "room_name": "deployment",
                       "user": "U2147483697", "user_name": "joyz", "message_ts": "0",
                       "thread_ts": "1355517523.000001"},
            "config": {"provider": "fabric", "repository": "oursky/project-x",
                       "environments": ["live", "edge"], "default_environment": "edge",
                       "allowed_rooms": ["deployment"], "auto_merge": false,
                       "required_contexts": ["ci/travis"],
                       "edge_url": "https://edge.project-x.example.com",
                       "live_url": "https://project-x.example.com"}
        })
    );
    assert_eq!(d["ref"], "feature/login");
    assert_eq!(d["environment"], "edge");
}

#[tokio::test]
async fn a_room_that_is_not_allowed_creates_nothing_and_says_so() {
    let chat = Chat::new().await;
    assert_eq!(
        chat.reply("random", "chima deploy project-x/feature/login to edge")
            .await,
        "project-x is not allowed to be deployed from #random. Deploy it from #deployment."
    );
    assert!(chat.deployments("oursky/project-x").is_empty());
    assert!(
        chat.gh.requests().is_empty(),
        "GitHub must not even be asked"
    );
}

#[tokio::test]
async fn rooms_may_be_allowed_by_id() {
    let mut apps_json: Value = serde_json::from_str(
        &std::fs::read_to_string(e2e::bins::workspace_root().join("app.json")).unwrap(),
    )
    .unwrap();
    apps_json["project-x"]["allowed_rooms"] = json!(["C024BE91L"]);
    apps_json["project-x"]["required_contexts"] = json!([]);
    let chat = Chat::with(
        FakeGithub::start().await,
        Apps::from_json(&apps_json.to_string()).unwrap(),
    )
    .await;
    chat.gh.add_branch("oursky/project-x", "feature");
    let mut renamed = room("deployment");
    renamed.room_name = "deployment-renamed".into();
    let replies = chat
        .say_in(&renamed, "chima deploy project-x/feature to edge")
        .await;
    assert!(replies[0].text().starts_with("Deployment #"), "{replies:?}");
}

#[tokio::test]
async fn direct_messages_may_deploy_only_apps_without_allowed_rooms() {
    let chat = Chat::new().await;
    let mut dm = room("deployment");
    dm.room_id = "D0DM000001".into();
    dm.room_name = String::new();
    dm.direct = true;
    let replies = chat.say_direct(&dm, "deploy project-x to edge").await;
    assert_eq!(
        replies[0].text(),
        "project-x is not allowed to be deployed from a direct message. Deploy it from #deployment."
    );
    let replies = chat.say_direct(&dm, "deploy trelhub to edge").await;
    assert!(replies[0].text().starts_with("Deployment #"), "{replies:?}");
}

#[tokio::test]
async fn validation_order_is_app_then_environment_then_room() {
    let chat = Chat::new().await;
    assert_eq!(
        chat.reply("random", "chima deploy project-y to nowhere")
            .await,
        "project-y? Never heard of it. Did you mean `project-x`? Apps I know: demo, modmod-web, project-x, trelhub."
    );
    assert_eq!(
        chat.reply("random", "chima deploy project-x to staging")
            .await,
        "project-x doesn't seem to have a staging environment. It has: live, edge."
    );
    assert!(chat.gh.requests().is_empty());
}

#[tokio::test]
async fn the_default_branch_is_asked_once_and_cached() {
    let chat = Chat::new().await;
    for _ in 0..2 {
        let reply = chat.reply("random", "chima deploy trelhub to edge").await;
        assert!(reply.starts_with("Deployment #"), "{reply}");
    }
    let deployments = chat.deployments("oursky/trelhub");
    assert_eq!(deployments.len(), 2);
    assert!(deployments.iter().all(|d| d["ref"] == "main"));
    let repo_lookups = chat
        .gh
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/repos/oursky/trelhub")
        .count();
    assert_eq!(repo_lookups, 1);
}

#[tokio::test]
async fn the_default_environment_and_prod_alias() {
    let chat = Chat::new().await;
    chat.reply("random", "chima deploy trelhub").await;
    chat.reply("random", "chima deploy modmod-web to prod")
        .await;
    assert_eq!(
        chat.deployments("oursky/trelhub")[0]["environment"],
        "pandawork"
    );
    let prod = &chat.deployments("oursky/modmod-web")[0];
    assert_eq!(prod["environment"], "production");
    let body = &chat.last_post_body();
    assert_eq!(body["production_environment"], true);
    assert!(
        body.get("required_contexts").is_none(),
        "omitted when the app sets none"
    );
    assert_eq!(body["auto_merge"], true);
}

#[tokio::test]
async fn forced_deploys_skip_merging_and_checks() {
    let chat = Chat::new().await;
    chat.gh.add_branch("oursky/project-x", "feature");
    chat.red("oursky/project-x", "feature", "ci/travis");
    let reply = chat
        .reply("deployment", "chima deploy! project-x/feature to edge")
        .await;
    assert!(reply.starts_with("Deployment #"), "{reply}");
    let body = &chat.last_post_body();
    assert_eq!(body["auto_merge"], false);
    assert_eq!(body["required_contexts"], json!([]));
}

#[tokio::test]
async fn hosts_and_tasks_reach_the_deployment() {
    let chat = Chat::new().await;
    chat.reply(
        "random",
        "chima deploy:migrate modmod-web to staging/web1,web2",
    )
    .await;
    let d = &chat.deployments("oursky/modmod-web")[0];
    assert_eq!(d["task"], "deploy:migrate");
    assert_eq!(d["payload"]["hosts"], "web1,web2");
    assert_eq!(d["description"], "deploy:migrate on staging from chima");
}

#[tokio::test]
async fn auto_merged_answers_202_and_deploys_nothing_yet() {
    let chat = Chat::new().await;
    chat.gh.add_branch("oursky/trelhub", "topic");
    chat.gh.set_behind_default("oursky/trelhub", "topic");
    assert_eq!(
        chat.reply("random", "chima deploy trelhub/topic to edge")
            .await,
        "GitHub merged the default branch into `topic` first (\"Auto-merged main into topic on deployment.\"), so no deployment of trelhub was made yet. Wait for CI on the merge commit, then deploy again."
    );
    assert!(chat.deployments("oursky/trelhub").is_empty());
}

#[tokio::test]
async fn failing_contexts_are_named_and_deploy_anyway_is_offered() {
    let chat = Chat::new().await;
    chat.gh.add_branch("oursky/project-x", "feature");
    chat.red("oursky/project-x", "feature", "ci/travis");
    let replies = chat
        .say_in(
            &room("deployment"),
            "chima deploy project-x/feature to edge",
        )
        .await;
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].text(),
        "Unmet required commit status contexts for project-x: ci/travis (failure). Nothing was deployed. Fix them, or deploy anyway with `chima deploy! project-x/feature to edge`."
    );
    let action = &replies[0].actions[0];
    assert_eq!(action.kind, ActionKind::DeployAnyway);
    assert_eq!(action.only_user.as_deref(), Some("U2147483697"));
    assert!(chat.deployments("oursky/project-x").is_empty());
}

#[tokio::test]
async fn missing_required_contexts_are_named() {
    let chat = Chat::new().await;
    chat.gh.add_branch("oursky/project-x", "feature");
    assert_eq!(
        chat.reply("deployment", "chima deploy project-x/feature to edge")
            .await,
        "Unmet required commit status contexts for project-x: ci/travis (missing). Nothing was deployed. Fix them, or deploy anyway with `chima deploy! project-x/feature to edge`."
    );
}

#[tokio::test]
async fn merge_conflicts_are_explained() {
    let chat = Chat::new().await;
    chat.gh.add_branch("oursky/trelhub", "topic");
    chat.gh.set_conflicting("oursky/trelhub", "topic");
    assert_eq!(
        chat.reply("random", "chima deploy trelhub/topic").await,
        "GitHub could not merge the default branch into `topic` for trelhub: Conflict merging main into topic. Nothing was deployed. Merge it yourself, or deploy without merging using `deploy!`."
    );
}

#[tokio::test]
async fn an_unknown_ref_is_named() {
    let chat = Chat::new().await;
    assert_eq!(
        chat.reply("random", "chima deploy trelhub/nope to edge")
            .await,
        "There is no `nope` in oursky/trelhub (\"No ref found for: nope\"). Nothing was deployed."
    );
}

#[tokio::test]
async fn a_hostile_ref_never_reaches_github() {
    let chat = Chat::new().await;
    for line in [
        "chima deploy trelhub/--upload-pack=x",
        "chima deploy trelhub/a..b",
        "chima deploy trelhub/x.lock",
        "chima deploy trelhub/a@{b",
    ] {
        let reply = chat.reply("random", line).await;
        assert!(reply.contains("is not a valid git ref"), "{line}: {reply}");
    }
    assert!(chat.gh.requests().is_empty());
}

#[tokio::test]
async fn token_problems_say_which_credential_without_echoing_it() {
    let gh = FakeGithub::start().await;
    let chat = Chat::with_token(gh, example_apps(), "ghp_wrong_token").await;
    let reply = chat.reply("random", "chima deploy trelhub/main").await;
    assert_eq!(
        reply,
        "Unable to create deployments for oursky/trelhub: GitHub rejected the token (401 Bad credentials). Check GITHUB_TOKEN."
    );
    assert!(!reply.contains("ghp_wrong_token"));

    let chat = Chat::new().await;
    chat.gh.set_forbidden("oursky/trelhub");
    assert!(
        chat.reply("random", "chima deploy trelhub/main").await
            .contains("GitHub answered 403 (Resource not accessible by personal access token). The token needs the `repo_deployment` scope")
    );

    let chat = Chat::new().await;
    chat.gh.require_token("oursky/trelhub", "another-token");
    assert_eq!(
        chat.reply("random", "chima deploy trelhub/main").await,
        "Unable to create deployments for oursky/trelhub: GitHub answered 404. The repository does not exist or GITHUB_TOKEN cannot see it; check the token's scopes (`repo` for a private repository)."
    );
}

#[tokio::test]
async fn the_token_travels_in_the_authorization_header_only() {
    let chat = Chat::new().await;
    chat.reply("random", "chima deploy trelhub").await;
    chat.reply("random", "chima deploys trelhub").await;
    let requests = chat.gh.requests();
    assert!(requests.len() >= 3);
    for r in requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{r:?}"
        );
        assert!(!r.query.unwrap_or_default().contains("token"));
    }
}

#[tokio::test]
async fn github_enterprise_prefix_works() {
    let chat = Chat::with(
        FakeGithub::start_with_prefix("/api/v3").await,
        example_apps(),
    )
    .await;
    assert!(chat.gh.url().ends_with("/api/v3"));
    let reply = chat.reply("random", "chima deploy trelhub to edge").await;
    assert!(reply.starts_with("Deployment #"), "{reply}");
    assert!(
        reply.ends_with(&format!(
            "{}/oursky/trelhub/deployments",
            chat.gh.url().trim_end_matches("/api/v3")
        )),
        "{reply}"
    );
    assert_eq!(chat.deployments("oursky/trelhub").len(), 1);
}

#[tokio::test]
async fn per_app_github_api_and_token_are_used_and_never_sent_in_the_payload() {
    let default_gh = FakeGithub::start().await;
    let enterprise = FakeGithub::start_with_prefix("/api/v3").await;
    enterprise.add_repo("corp/internal", "trunk");
    enterprise.require_token("corp/internal", "ghe-app-token");
    let apps = Apps::from_json(
        &json!({"internal": {"provider": "shell", "repository": "corp/internal",
                              "github_api": enterprise.url(), "github_token": "ghe-app-token"}})
        .to_string(),
    )
    .unwrap();
    let chat = Chat::with(default_gh, apps).await;
    let reply = chat.reply("random", "chima deploy internal").await;
    assert!(reply.starts_with("Deployment #"), "{reply}");
    assert!(
        chat.gh.requests().is_empty(),
        "the default GitHub is not used"
    );
    let created = enterprise.deployments("corp/internal");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["ref"], "trunk");
    let sent = enterprise.requests();
    assert!(
        sent.iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer ghe-app-token"))
    );
    let payload = created[0]["payload"].to_string();
    assert!(
        !payload.contains("ghe-app-token") && !payload.contains("github_api"),
        "{payload}"
    );
}

#[tokio::test]
async fn an_unreachable_github_is_reported() {
    let apps = example_apps();
    let bot = chima::cli::github_bot(
        apps,
        "http://127.0.0.1:9",
        GithubAuth::Token(Secret::new(TOKEN)),
        "chima",
    );
    let mut outbox = RecordingOutbox::default();
    bot.handle_message(
        "chima deploy trelhub/main",
        false,
        &room("random"),
        &mut outbox,
    )
    .await;
    assert_eq!(outbox.messages.len(), 1);
    assert!(
        outbox.messages[0].text().starts_with(
            "Unable to create deployments for oursky/trelhub: I could not reach GitHub ("
        ),
        "{:?}",
        outbox.messages
    );
}

async fn post_status(gh: &FakeGithub, repo: &str, id: &Value, state: &str) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/repos/{repo}/deployments/{id}/statuses",
            gh.url()
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"state": state}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn deploys_lists_the_newest_with_their_state() {
    let chat = Chat::new().await;
    chat.gh.add_branch("oursky/trelhub", "feature");
    chat.reply("random", "chima deploy trelhub to edge").await;
    chat.reply("random", "chima deploy trelhub/feature to pandawork")
        .await;
    let ids: Vec<Value> = chat
        .deployments("oursky/trelhub")
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    post_status(&chat.gh, "oursky/trelhub", &ids[0], "success").await;
    post_status(&chat.gh, "oursky/trelhub", &ids[1], "in_progress").await;

    let all = chat.reply("random", "chima deploys trelhub").await;
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines[0], "Recent deployments of trelhub:");
    assert!(
        lines[1].starts_with(&format!("• #{} feature@", ids[1]))
            && lines[1].ends_with("by joyz, just now — in_progress"),
        "{all}"
    );
    assert!(
        lines[2].starts_with(&format!("• #{} main@", ids[0])) && lines[2].ends_with("— success"),
        "{all}"
    );

    let edge = chat.reply("random", "chima deploys trelhub in edge").await;
    assert_eq!(edge.lines().count(), 2, "{edge}");
    assert_eq!(
        chat.reply("random", "chima deploys trelhub/nope").await,
        "No deployments of trelhub of `nope` yet."
    );
}

#[tokio::test]
async fn where_can_i_deploy_shows_what_runs_where() {
    let chat = Chat::new().await;
    chat.reply("random", "chima deploy trelhub to edge").await;
    let id = chat.deployments("oursky/trelhub")[0]["id"].clone();
    post_status(&chat.gh, "oursky/trelhub", &id, "success").await;
    let sha = chat.gh.branch_sha("oursky/trelhub", "main");
    let reply = chat
        .reply("random", "chima where can I deploy trelhub?")
        .await;
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines[0], "trelhub can be deployed to:");
    assert_eq!(lines[1], "• pandawork (default) — nothing deployed yet");
    assert_eq!(
        lines[2],
        format!("• edge — main@{} (#{id}, by joyz, just now)", &sha[..7])
    );
}

#[tokio::test]
async fn ci_names_failing_and_pending_checks() {
    let chat = Chat::new().await;
    chat.gh.add_branch("oursky/project-x", "feature");
    chat.red("oursky/project-x", "feature", "ci/travis");
    chat.gh.add_check(
        "oursky/project-x",
        "feature",
        check("lint", "pending", true),
    );
    chat.gh.add_check(
        "oursky/project-x",
        "feature",
        check("unit", "success", true),
    );
    let sha = chat.gh.branch_sha("oursky/project-x", "feature");
    assert_eq!(
        chat.reply("random", "chima ci project-x/feature").await,
        format!(
            "CI is red for project-x/feature ({}).\nFailing: ci/travis (failure) https://ci.example.com/ci/travis\nPending: lint (in_progress) https://ci.example.com/lint",
            &sha[..7]
        )
    );
    assert!(
        chat.reply("random", "chima status trelhub")
            .await
            .contains("has no CI configured")
    );
}

#[tokio::test]
async fn ci_green_when_everything_passed() {
    let chat = Chat::new().await;
    chat.green("oursky/trelhub", "main", "build");
    chat.gh
        .add_check("oursky/trelhub", "main", check("tests", "success", true));
    let reply = chat.reply("random", "chima ci trelhub").await;
    assert!(
        reply.starts_with("CI is green for trelhub/main (") && reply.ends_with("2 checks passed."),
        "{reply}"
    );
}

#[tokio::test]
async fn after_a_branch_deploy_the_default_branch_is_one_press_away() {
    let chat = Chat::new().await;
    chat.gh.add_branch("oursky/trelhub", "feature");
    let replies = chat
        .say_in(&room("random"), "chima deploy trelhub/feature to edge")
        .await;
    let action = &replies[0].actions[0];
    assert_eq!(action.kind, ActionKind::DeployDefaultBranch);
    assert_eq!(action.command, "chima deploy trelhub/main to edge");
    let replies = chat
        .say_in(&room("random"), "chima deploy trelhub to edge")
        .await;
    assert!(replies[0].actions.is_empty());
}

#[tokio::test]
async fn unaddressed_lines_are_ignored_and_every_addressed_line_is_answered() {
    let chat = Chat::new().await;
    assert!(chat.say("random", "deploy trelhub").await.is_empty());
    assert!(
        chat.say("random", "> chima deploy trelhub")
            .await
            .is_empty()
    );
    assert!(
        chat.say("random", "```\nchima deploy trelhub\n```")
            .await
            .is_empty()
    );
    for line in [
        "chima",
        "chima deplyo trelhub",
        "chima deploy",
        "chima deploy trelhub tos edge",
        "chima deploy trelhub to production/fe burgers",
        "chima help",
        "chima help nothing",
        "chima version",
        "chima 🚀🚀🚀",
        &format!("chima deploy trelhub/{}", "a".repeat(10_000)),
    ] {
        let replies = chat.say("random", line).await;
        assert_eq!(replies.len(), 1, "{line}: {replies:?}");
        assert!(!replies[0].is_empty());
    }
    assert!(chat.deployments("oursky/trelhub").is_empty());
}
