//! chima on Slack, against a fake Slack Web API and a fake GitHub: signed Events API requests,
//! slash commands, buttons, the watchdog, Socket Mode wiring.

use std::sync::Arc;
use std::time::Duration;

use e2e::fake_github::{Check, TOKEN};
use e2e::fake_slack::{BOT_USER, now_secs};
use e2e::slack_app::{BOB, DEPLOYMENT, JOYZ, RANDOM, SlackHarness as Harness, WAIT, sign};
use serde_json::json;

#[tokio::test]
async fn a_mention_in_the_allowed_room_creates_one_deployment_and_one_live_message_in_the_thread() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    h.gh.add_branch("oursky/project-x", "feature");
    h.gh.add_check(
        "oursky/project-x",
        "feature",
        Check {
            name: "ci/travis".into(),
            state: "success".into(),
            url: String::new(),
            check_run: false,
        },
    );

    let ts = h
        .mention(DEPLOYMENT, JOYZ, "deploy project-x/feature to edge")
        .await;
    let live = h.reply_in_thread(DEPLOYMENT, &ts, "Deployment #").await;

    let deployments = h.gh.deployments("oursky/project-x");
    assert_eq!(deployments.len(), 1);
    let notify = &deployments[0]["payload"]["notify"];
    assert_eq!(
        notify,
        &json!({"adapter": "slack", "room": DEPLOYMENT, "room_name": "deployment", "user": JOYZ,
                "user_name": "joyz", "message_ts": live.ts, "thread_ts": ts})
    );
    assert_eq!(live.thread_ts.as_deref(), Some(ts.as_str()));
    assert_eq!(
        live.history.len(),
        1,
        "posted once, then edited once in place"
    );
    assert!(live.history[0].contains("joyz is deploying project-x/feature to edge"));
    assert!(live.text.contains("project-x feature@") && live.text.contains("to edge for joyz"));
    insta::with_settings!({filters => e2e::snapshot::FILTERS.to_vec()}, {
        insta::assert_snapshot!(
            "one_deploy_in_slack",
            e2e::snapshot::message_life(&live.history, &live.text)
        );
    });
    h.settle().await;
    assert_eq!(
        h.slack.replies_in_thread(DEPLOYMENT, &ts).len(),
        1,
        "answered exactly once: {:#?}",
        h.slack.messages()
    );
}

#[tokio::test]
async fn the_same_command_in_random_creates_nothing_and_says_why() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let ts = h
        .mention(RANDOM, JOYZ, "deploy project-x/feature to edge")
        .await;
    let reply = h.reply_in_thread(RANDOM, &ts, "not allowed").await;
    assert_eq!(
        reply.text,
        ":x: project-x is not allowed to be deployed from #random. Deploy it from #deployment."
    );
    assert!(h.gh.deployments("oursky/project-x").is_empty());
}

#[tokio::test]
async fn a_slash_command_works_the_same() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    assert_eq!(
        h.slash(RANDOM, "random", JOYZ, "deploy trelhub to edge")
            .await,
        200
    );
    let posted = h
        .slack
        .wait_until(WAIT, "the slash command's live message", |s| {
            s.messages()
                .into_iter()
                .find(|m| m.channel == RANDOM && m.text.contains("Deployment #"))
        })
        .await;
    assert_eq!(posted.thread_ts, None);
    let d = &h.gh.deployments("oursky/trelhub")[0];
    assert_eq!(d["payload"]["notify"]["message_ts"], json!(posted.ts));
    assert_eq!(d["payload"]["notify"]["room_name"], "random");
    assert_eq!(h.slash(RANDOM, "random", JOYZ, "").await, 200);
    h.slack
        .wait_until(WAIT, "an answer to an empty slash command", |s| {
            s.messages()
                .into_iter()
                .find(|m| m.text.contains("Hi! I'm chima"))
        })
        .await;
}

#[tokio::test]
async fn unsigned_stale_and_tampered_requests_are_refused_and_change_nothing() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let body = h
        .event(
            "app_mention",
            RANDOM,
            JOYZ,
            &format!("<@{BOT_USER}> deploy trelhub"),
            "1.1",
            "EvBad",
        )
        .to_string();
    let unsigned = h
        .http
        .post(format!("{}/slack/events", h.url))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(
        h.send(
            "/slack/events",
            body.clone(),
            "application/json",
            now_secs() - 600,
            &[]
        )
        .await,
        401
    );
    let tampered = h
        .http
        .post(format!("{}/slack/events", h.url))
        .header("x-slack-request-timestamp", now_secs().to_string())
        .header("x-slack-signature", sign(now_secs(), "{}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 401);
    let command = "channel_id=C0RANDOM01&user_id=U1&text=deploy+trelhub";
    let forged = h
        .http
        .post(format!("{}/slack/commands", h.url))
        .header("x-slack-request-timestamp", now_secs().to_string())
        .header("x-slack-signature", "v0=00")
        .body(command)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    h.settle().await;
    assert!(h.gh.deployments("oursky/trelhub").is_empty());
    assert_eq!(
        h.slack.messages().len(),
        1,
        "only the settle command was answered"
    );
}

#[tokio::test]
async fn url_verification_is_echoed() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let body = json!({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let response = h
        .http
        .post(format!("{}/slack/events", h.url))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", now_secs().to_string())
        .header("x-slack-signature", sign(now_secs(), &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
}

#[tokio::test]
async fn bot_messages_and_slack_retries_cause_nothing_new() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let mut own = h.event(
        "message",
        RANDOM,
        BOT_USER,
        "chima deploy trelhub",
        "2.1",
        "EvOwn",
    );
    own["event"]["bot_id"] = json!("BCHIMABOT");
    assert_eq!(
        h.send(
            "/slack/events",
            own.to_string(),
            "application/json",
            now_secs(),
            &[]
        )
        .await,
        200
    );
    let mut other_bot = h.event(
        "message",
        RANDOM,
        "U0OTHERBOT",
        "chima deploy trelhub",
        "2.2",
        "EvBot",
    );
    other_bot["event"]["subtype"] = json!("bot_message");
    assert_eq!(
        h.send(
            "/slack/events",
            other_bot.to_string(),
            "application/json",
            now_secs(),
            &[]
        )
        .await,
        200
    );
    let mut edit = h.event(
        "message",
        RANDOM,
        JOYZ,
        "chima deploy trelhub",
        "2.3",
        "EvEdit",
    );
    edit["event"]["subtype"] = json!("message_changed");
    assert_eq!(
        h.send(
            "/slack/events",
            edit.to_string(),
            "application/json",
            now_secs(),
            &[]
        )
        .await,
        200
    );

    let ts = h.mention(RANDOM, JOYZ, "deploy trelhub to edge").await;
    h.reply_in_thread(RANDOM, &ts, "Deployment #").await;
    let retry = h.event(
        "app_mention",
        RANDOM,
        JOYZ,
        &format!("<@{BOT_USER}> deploy trelhub to edge"),
        &ts,
        &format!("Ev{ts}"),
    );
    assert_eq!(
        h.send(
            "/slack/events",
            retry.to_string(),
            "application/json",
            now_secs(),
            &[
                ("x-slack-retry-num", "1"),
                ("x-slack-retry-reason", "http_timeout")
            ]
        )
        .await,
        200
    );
    h.settle().await;
    assert_eq!(h.gh.deployments("oursky/trelhub").len(), 1);
    assert_eq!(h.slack.replies_in_thread(RANDOM, &ts).len(), 1);
    assert_eq!(h.slack.messages().iter().filter(|m| m.from_api).count(), 2);
}

#[tokio::test]
async fn twenty_commands_at_once_are_each_answered_exactly_once() {
    let h = Arc::new(Harness::start(Duration::from_secs(3600)).await);
    let sends = (0..20).map(|i| {
        let h = h.clone();
        async move {
            let command = if i % 2 == 0 {
                "deploy trelhub to edge"
            } else {
                "where can I deploy trelhub"
            };
            h.mention(RANDOM, JOYZ, command).await
        }
    });
    let threads = futures::future::join_all(sends).await;
    for ts in &threads {
        h.slack
            .wait_until(WAIT, "an answer per command", |s| {
                s.replies_in_thread(RANDOM, ts)
                    .into_iter()
                    .find(|m| !m.text.contains("creating the deployment"))
            })
            .await;
    }
    h.settle().await;
    for ts in &threads {
        assert_eq!(
            h.slack.replies_in_thread(RANDOM, ts).len(),
            1,
            "thread {ts}"
        );
    }
    assert_eq!(h.gh.deployments("oursky/trelhub").len(), 10);
}

#[tokio::test]
async fn direct_messages_follow_allowed_rooms() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let dm = "D0DM000001";
    let ts = h.ts();
    let body = h
        .event(
            "message",
            dm,
            JOYZ,
            "deploy project-x to edge",
            &ts,
            "EvDm1",
        )
        .to_string();
    h.send("/slack/events", body, "application/json", now_secs(), &[])
        .await;
    let refused = h
        .slack
        .wait_until(WAIT, "a DM answer", |s| {
            s.messages().into_iter().find(|m| m.channel == dm)
        })
        .await;
    assert_eq!(
        refused.text,
        ":x: project-x is not allowed to be deployed from a direct message. Deploy it from #deployment."
    );
    assert_eq!(refused.thread_ts, None, "DM answers are not threaded");
    let body = h
        .event(
            "message",
            dm,
            JOYZ,
            "deploy trelhub to edge",
            &h.ts(),
            "EvDm2",
        )
        .to_string();
    h.send("/slack/events", body, "application/json", now_secs(), &[])
        .await;
    h.slack
        .wait_until(WAIT, "a DM deploy", |s| {
            s.messages()
                .into_iter()
                .find(|m| m.channel == dm && m.text.contains("Deployment #"))
        })
        .await;
    assert_eq!(h.gh.deployments("oursky/trelhub").len(), 1);
}

#[tokio::test]
async fn deploy_anyway_only_for_the_asker_and_it_rechecks() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    h.gh.add_branch("oursky/project-x", "feature");
    h.gh.add_check(
        "oursky/project-x",
        "feature",
        Check {
            name: "ci/travis".into(),
            state: "failure".into(),
            url: String::new(),
            check_run: false,
        },
    );
    let ts = h
        .mention(DEPLOYMENT, JOYZ, "deploy project-x/feature to edge")
        .await;
    let refusal = h
        .reply_in_thread(DEPLOYMENT, &ts, "Unmet required commit status contexts")
        .await;
    assert_eq!(
        refusal.blocks[1]["elements"][0]["action_id"],
        "deploy-anyway"
    );

    assert_eq!(h.press(BOB, &refusal).await, 200);
    let told = h
        .slack
        .wait_until(WAIT, "bob told why not", |s| {
            s.messages().into_iter().find(|m| m.ephemeral)
        })
        .await;
    assert_eq!(told.visible_to.as_deref(), Some(BOB));
    assert!(
        told.text.contains("Only joyz can press this button"),
        "{}",
        told.text
    );
    assert!(h.gh.deployments("oursky/project-x").is_empty());

    assert_eq!(h.press(JOYZ, &refusal).await, 200);
    let created = h.reply_in_thread(DEPLOYMENT, &ts, "Deployment #").await;
    let pressed = h.slack.message(DEPLOYMENT, &refusal.ts).unwrap();
    assert!(
        pressed.text.contains("joyz pressed \"Deploy anyway\""),
        "{}",
        pressed.text
    );
    assert!(pressed.blocks.get(1).is_none(), "the button is gone");
    let deployments = h.gh.deployments("oursky/project-x");
    assert_eq!(deployments.len(), 1);
    assert_eq!(
        deployments[0]["payload"]["notify"]["message_ts"],
        json!(created.ts)
    );
    let body = &h
        .gh
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST")
        .unwrap()
        .body;
    assert_eq!(body["required_contexts"], json!([]));
    assert_eq!(body["auto_merge"], false);
}

#[tokio::test]
async fn the_default_branch_button_restores_the_environment() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    h.gh.add_branch("oursky/trelhub", "feature");
    let ts = h
        .mention(RANDOM, JOYZ, "deploy trelhub/feature to edge")
        .await;
    let live = h.reply_in_thread(RANDOM, &ts, "Deployment #").await;
    assert_eq!(
        live.blocks[1]["elements"][0]["action_id"],
        "deploy-default-branch"
    );
    assert_eq!(h.press(BOB, &live).await, 200);
    let restored = h.reply_in_thread(RANDOM, &ts, "main@").await;
    assert!(
        restored.text.contains("for bob"),
        "anyone may restore the default branch: {}",
        restored.text
    );
    assert_eq!(h.gh.deployments("oursky/trelhub").len(), 2);
}

#[tokio::test]
async fn the_watchdog_warns_when_no_deployer_picks_up() {
    let mut h = Harness::start(Duration::from_millis(300)).await;
    let ts = h.mention(RANDOM, JOYZ, "deploy trelhub to edge").await;
    h.reply_in_thread(RANDOM, &ts, "Deployment #").await;
    let report = tokio::time::timeout(WAIT, h.watchdog.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(report.warned);
    let warning = h
        .reply_in_thread(RANDOM, &ts, "No deployer has picked up")
        .await;
    assert!(
        warning.text.contains("/oursky/trelhub/settings/hooks"),
        "{}",
        warning.text
    );
}

#[tokio::test]
async fn the_watchdog_stays_quiet_when_a_status_exists() {
    let mut h = Harness::start(Duration::from_secs(2)).await;
    let ts = h.mention(RANDOM, JOYZ, "deploy trelhub to edge").await;
    h.reply_in_thread(RANDOM, &ts, "Deployment #").await;
    let id = h.gh.deployments("oursky/trelhub")[0]["id"].clone();
    let status = h
        .http
        .post(format!(
            "{}/repos/oursky/trelhub/deployments/{id}/statuses",
            h.gh.url()
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"state": "queued"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 201);
    let report = tokio::time::timeout(WAIT, h.watchdog.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!report.warned);
    assert_eq!(h.slack.replies_in_thread(RANDOM, &ts).len(), 1);
}

#[tokio::test]
async fn rate_limits_are_waited_out() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    h.slack.rate_limit_next(2, 1);
    let ts = h.mention(RANDOM, JOYZ, "version").await;
    h.reply_in_thread(RANDOM, &ts, "chima 0.").await;
    let limited = h
        .slack
        .calls()
        .iter()
        .filter(|c| {
            c.method == "conversations.info"
                || c.method == "users.info"
                || c.method == "chat.postMessage"
        })
        .count();
    assert!(limited >= 3, "the limited calls were retried");
}

#[tokio::test]
async fn slack_markup_is_decoded_before_parsing() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let ts = h
        .mention(
            RANDOM,
            JOYZ,
            "deploy trelhub/<http://release.v1.com|release.v1.com> to edge",
        )
        .await;
    let reply = h.reply_in_thread(RANDOM, &ts, "There is no").await;
    assert!(reply.text.contains("`release.v1.com`"), "{}", reply.text);
}

#[tokio::test]
async fn socket_mode_events_reach_the_same_handlers() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let env = chima::slack::socket::environment(h.app.clone(), &h.web);
    let ts = h.ts();
    let callback: slack_morphism::prelude::SlackPushEventCallback = serde_json::from_value(json!({
        "team_id": "T1", "api_app_id": "A1", "event_id": "EvSocket1", "event_time": 1_700_000_000,
        "event": {"type": "app_mention", "user": JOYZ, "channel": RANDOM,
                  "text": format!("<@{BOT_USER}> deploy trelhub to edge"), "ts": ts}
    }))
    .unwrap();
    chima::slack::socket::on_push(callback, h.web.client(), env.user_state.clone())
        .await
        .unwrap();
    h.reply_in_thread(RANDOM, &ts, "Deployment #").await;
    let command: slack_morphism::prelude::SlackCommandEvent = serde_json::from_value(json!({
        "team_id": "T1", "channel_id": RANDOM, "channel_name": "random", "user_id": JOYZ,
        "command": "/chima", "text": "where can I deploy trelhub",
        "response_url": "https://hooks.slack.com/commands/1", "trigger_id": "t"
    }))
    .unwrap();
    chima::slack::socket::on_command(command, h.web.client(), env.user_state.clone())
        .await
        .unwrap();
    h.slack
        .wait_until(WAIT, "the socket-mode slash answer", |s| {
            s.messages()
                .into_iter()
                .find(|m| m.text.starts_with("trelhub can be deployed to:"))
        })
        .await;
    assert_eq!(h.gh.deployments("oursky/trelhub").len(), 1);
}

#[tokio::test]
async fn names_and_refs_carrying_slack_markup_are_shown_never_pinged_or_linked() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let mallory = "U0MALLORY1";
    h.slack.add_user(mallory, "<!channel> <https://x|y>");
    let ts = h.mention(RANDOM, mallory, "deploy trelhub to edge").await;
    h.reply_in_thread(RANDOM, &ts, "Deployment #").await;
    // Typed as text, Slack sends `<` and `>` as entities; chima reads them as typed.
    for typed in ["&lt;!channel&gt;", "&lt;@U123&gt;&lt;#C1|x&gt;"] {
        let ts = h
            .mention(RANDOM, mallory, &format!("deploy trelhub/{typed} to edge"))
            .await;
        h.reply_in_thread(RANDOM, &ts, "shell metacharacter").await;
    }
    let texts = h.slack.chat_texts();
    for text in &texts {
        assert!(!text.contains(['<', '>']), "chima sent markup: {text}");
    }
    let all = texts.join("\n");
    for shown in [
        "for &lt;!channel&gt; &lt;https://x|y&gt;",
        "`&lt;!channel&gt;`",
        "`&lt;@U123&gt;&lt;#C1|x&gt;`",
    ] {
        assert!(all.contains(shown), "chat never showed {shown:?}:\n{all}");
    }
}
