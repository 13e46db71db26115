//! faseng end to end, in process, on both queue backends: signed webhooks from a fake
//! GitHub, a real git repository, real processes, statuses and chat edits checked.

use std::time::Duration;

use axum::http::StatusCode;
use e2e::harness::{Backend, Env, Options, REPO, ROOM, SECRET, WAIT, scratch, wait_for};
use serde_json::json;

/// Starts an environment whose `script/deploy` is `script`.
async fn start_with_script(backend: Backend, script: &str) -> Option<Env> {
    start_with_app(backend, script, json!({})).await
}

/// Starts an environment whose `script/deploy` is `script`, with `app` merged into the
/// operator's trelhub entry.
async fn start_with_app(backend: Backend, script: &str, app: serde_json::Value) -> Option<Env> {
    let opts = Options {
        script: script.into(),
        app,
        ..Options::default()
    };
    Env::start(backend, opts).await
}

/// joyz deploys main to edge (the webhook reaches faseng); returns the deployment id and
/// the chat message ts.
async fn deploy_edge(env: &Env) -> (u64, String) {
    env.deploy("edge", "deploy", "joyz").await
}

/// Like [`deploy_edge`], but the webhook is held back: returns the deployment id and the
/// signed delivery (headers, body) to post by hand.
async fn held_back_delivery(env: &Env) -> (u64, Vec<(String, String)>, Vec<u8>) {
    let (d, headers, body) = env.deployment_and_webhook("edge", "deploy", "joyz").await;
    (d["id"].as_u64().unwrap(), headers, body)
}

/// Waits for deployment `id`'s final status and asserts it is a success.
async fn expect_success(env: &Env, id: u64) {
    let s = env.wait_final(id).await;
    assert_eq!(s["state"], "success", "#{id}: {s}");
}

/// Asserts deployment `id` succeeded and reported exactly queued, in_progress, success.
async fn expect_clean_success(env: &Env, id: u64) {
    expect_success(env, id).await;
    assert_eq!(env.states(id), ["queued", "in_progress", "success"]);
}

/// Waits for deployment `id`'s final status and asserts its state and description.
async fn expect_final(env: &Env, id: u64, state: &str, description: &str) {
    let s = env.wait_final(id).await;
    assert_eq!(
        (s["state"].as_str(), s["description"].as_str()),
        (Some(state), Some(description)),
        "#{id}: {s}"
    );
}

/// A file the deploy scripts wrote in the scratch directory.
fn read_scratch(env: &Env, name: &str) -> String {
    std::fs::read_to_string(scratch(env.dir.path(), name)).unwrap()
}

async fn a_signed_deployment_runs_and_reports_in_order(backend: Backend) {
    let Some(env) = Env::start(backend, Options::default()).await else {
        return;
    };
    let (id, ts) = deploy_edge(&env).await;
    expect_clean_success(&env, id).await;
    let statuses = env.gh.statuses(id);
    let log_url = statuses[1]["log_url"].as_str().unwrap().to_owned();
    let secret = log_url
        .strip_prefix(&format!("{}/deployments/{REPO}/{id}/", env.url))
        .unwrap_or_else(|| panic!("{log_url}"));
    assert!(
        secret.len() == 32 && secret.chars().all(|c| c.is_ascii_hexdigit()),
        "{log_url}"
    );
    assert_eq!(
        statuses[2]["environment_url"],
        "https://edge.trelhub.example"
    );

    let (code, page) = env.get(&log_url).await;
    assert_eq!(code, 200);
    assert!(page.contains("deployed edge"), "{page}");
    assert!(page.contains("success"));
    let (code, text) = env.get(&format!("{log_url}/log")).await;
    assert_eq!(code, 200);
    for var in [
        "DEPLOY_ENV=edge",
        "DEPLOY_REF=main",
        &format!("DEPLOY_SHA={}", env.sha),
        "DEPLOY_TASK=deploy",
        "DEPLOY_APP=trelhub",
        &format!("DEPLOY_ID={id}"),
        "DEPLOY_USER=joyz",
        "BRANCH=main",
        &format!("SHA={}", env.sha),
    ] {
        assert!(text.contains(var), "{var} missing from the log:\n{text}");
    }
    assert!(text.contains("==> shell: "), "{text}");
    assert!(
        !text.contains(e2e::fake_github::TOKEN) && !text.contains(e2e::fake_slack::BOT_TOKEN),
        "a token leaked:\n{text}"
    );

    let msg = env.slack.wait_for_text(ROOM, &ts, "is done", WAIT).await;
    assert!(msg.text.contains("trelhub/main"), "{}", msg.text);
    // The edits on the way may be coalesced; where the message ends is not.
    insta::with_settings!({filters => e2e::snapshot::FILTERS.to_vec()}, {
        insta::assert_snapshot!("a_deploy_done_in_slack", msg.text);
    });
    assert!(
        msg.history.iter().any(|h| h.contains("queued")),
        "{:?}",
        msg.history
    );
    assert!(
        msg.history.iter().any(|h| h.contains("is deploying")),
        "{:?}",
        msg.history
    );

    let (_, metrics) = env.get("/metrics").await;
    assert!(
        metrics.contains("faseng_webhooks_total{outcome=\"accepted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("faseng_runs_total{outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert_eq!(env.get("/healthz").await.0, 200);
}

async fn a_failing_script_is_a_failure_with_its_last_line(backend: Backend) {
    let script = "echo preparing\necho 'database unreachable' >&2\nexit 3";
    let Some(env) = start_with_script(backend, script).await else {
        return;
    };
    let (id, ts) = deploy_edge(&env).await;
    expect_final(&env, id, "failure", "Failed: database unreachable").await;
    assert_eq!(env.states(id), ["queued", "in_progress", "failure"]);
    env.slack
        .wait_for_text(ROOM, &ts, "failed: Failed: database unreachable", WAIT)
        .await;
    let replies = env
        .slack
        .wait_until(WAIT, "a thread reply", |s| {
            let r = s.replies_in_thread(ROOM, &ts);
            (!r.is_empty()).then_some(r)
        })
        .await;
    assert!(
        replies[0].text.contains("database unreachable") && replies[0].text.contains("preparing"),
        "{}",
        replies[0].text
    );
}

async fn bad_signatures_are_refused_and_nothing_runs(backend: Backend) {
    let Some(env) = Env::start(backend, Options::default()).await else {
        return;
    };
    let (id, headers, body) = held_back_delivery(&env).await;
    let without = |name: &str| {
        headers
            .iter()
            .filter(|(k, _)| k != name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut wrong = without("x-hub-signature-256");
    wrong.push((
        "x-hub-signature-256".into(),
        e2e::fake_github::sign("not the secret", &body),
    ));
    let mut sha1_only = without("x-hub-signature-256");
    sha1_only.push((
        "x-hub-signature".into(),
        "sha1=0000000000000000000000000000000000000000".into(),
    ));
    assert_eq!(env.post_webhook(&wrong, body.clone()).await, 401);
    assert_eq!(
        env.post_webhook(&without("x-hub-signature-256"), body.clone())
            .await,
        401
    );
    assert_eq!(env.post_webhook(&sha1_only, body.clone()).await, 401);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(env.post_webhook(&headers, tampered).await, 401);

    let (_, metrics) = env.get("/metrics").await;
    assert!(
        metrics.contains("faseng_webhooks_total{outcome=\"rejected\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("faseng_queue_depth 0"), "{metrics}");
    let page = e2e::log_links::page(&env.queue_url, &env.url, REPO, id).await;
    assert_eq!(
        env.get(&format!("{page}/log")).await.0,
        404,
        "a run record exists"
    );
    // A signed one afterwards goes through, so the silence above was not an idle worker.
    assert_eq!(env.post_webhook(&headers, body).await, 202);
    expect_clean_success(&env, id).await;
}

async fn one_delivery_sent_twice_runs_once(backend: Backend) {
    let Some(env) = start_with_script(backend, "echo $DEPLOY_ID >> $SCRATCH/runs").await else {
        return;
    };
    let (id, headers, body) = held_back_delivery(&env).await;
    let (a, b) = tokio::join!(
        env.post_webhook(&headers, body.clone()),
        env.post_webhook(&headers, body.clone())
    );
    let mut codes = [a, b];
    codes.sort_unstable();
    assert_eq!(codes, [200, 202], "one accepted, one duplicate");
    expect_success(&env, id).await;
    // A redelivery after the run (GitHub's "Redeliver" button) changes nothing either.
    assert_eq!(env.post_webhook(&headers, body).await, 200);
    let runs = read_scratch(&env, "runs");
    assert_eq!(runs.lines().count(), 1, "{runs}");
    assert_eq!(env.states(id), ["queued", "in_progress", "success"]);
}

const TIMED: &str = "echo \"start $DEPLOY_ID $(date +%s.%N)\" >> $SCRATCH/$DEPLOY_ENV.times\n\
                     sleep 0.3\n\
                     echo \"end $DEPLOY_ID $(date +%s.%N)\" >> $SCRATCH/$DEPLOY_ENV.times";

fn parse_times(text: &str) -> Vec<(String, u64, f64)> {
    text.lines()
        .map(|l| {
            let mut p = l.split_whitespace();
            (
                p.next().unwrap().to_owned(),
                p.next().unwrap().parse().unwrap(),
                p.next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

async fn one_environment_runs_one_at_a_time_in_arrival_order(backend: Backend) {
    let Some(env) = start_with_script(backend, TIMED).await else {
        return;
    };
    // One earlier run gives the line a duration history, so waiting runs get an ETA.
    let (warm_up, _) = deploy_edge(&env).await;
    expect_success(&env, warm_up).await;
    let mut hooks = Vec::new();
    for _ in 0..3 {
        hooks.push(held_back_delivery(&env).await);
    }
    let ids: Vec<u64> = hooks.iter().map(|(id, _, _)| *id).collect();
    for (_, headers, body) in &hooks {
        assert_eq!(env.post_webhook(headers, body.clone()).await, 202);
    }
    for id in &ids {
        expect_success(&env, *id).await;
    }
    let times = parse_times(&read_scratch(&env, "edge.times"));
    let times: Vec<_> = times
        .into_iter()
        .filter(|(_, id, _)| *id != warm_up)
        .collect();
    let order: Vec<(String, u64)> = times.iter().map(|(k, id, _)| (k.clone(), *id)).collect();
    let expected: Vec<(String, u64)> = ids
        .iter()
        .flat_map(|id| [("start".to_owned(), *id), ("end".to_owned(), *id)])
        .collect();
    assert_eq!(
        order, expected,
        "runs overlapped or ran out of order: {times:?}"
    );
    for w in times.windows(2) {
        assert!(w[0].2 <= w[1].2, "{times:?}");
    }
    // The later ones were told whom they wait behind, and roughly how long.
    let second = &env.gh.statuses(ids[1])[0];
    assert_eq!(
        second["description"],
        format!("Waiting behind #{}, about 1 min", ids[0])
    );
    let third = &env.gh.statuses(ids[2])[0];
    assert_eq!(
        third["description"],
        format!("Waiting behind #{} (2 ahead), about 1 min", ids[1])
    );
}

async fn different_environments_run_in_parallel(backend: Backend) {
    // Each run waits for the other environment's run to have started: both succeed only
    // if they overlap.
    let script = "touch $SCRATCH/$DEPLOY_ENV.started\n\
                  other=edge; [ \"$DEPLOY_ENV\" = edge ] && other=staging\n\
                  i=0; while [ ! -e $SCRATCH/$other.started ]; do i=$((i+1)); [ $i -gt 400 ] && { echo 'no overlap'; exit 1; }; sleep 0.05; done\n\
                  echo overlapped";
    let Some(env) = start_with_script(backend, script).await else {
        return;
    };
    let (a, _) = deploy_edge(&env).await;
    let (b, _) = env.deploy("staging", "deploy", "joyz").await;
    expect_success(&env, a).await;
    expect_success(&env, b).await;
}

/// Waits for deployment `id`'s final status and asserts its state and that its
/// description starts with `start`.
async fn expect_final_starting(env: &Env, id: u64, state: &str, start: &str) -> String {
    let s = env.wait_final(id).await;
    let description = s["description"].as_str().unwrap_or_default().to_owned();
    assert!(
        s["state"] == state && description.starts_with(start),
        "#{id}: want {state} {start:?}…, got {s}"
    );
    description
}

/// What alice's `deploy:lock` of edge (reason: its description) says to everyone else.
const ALICES_LOCK: &str = "⚿ trelhub in edge is locked by alice: deploy:lock on edge, until ";

async fn lock_and_unlock_follow_heaven(backend: Backend) {
    let Some(env) = start_with_script(backend, "echo $DEPLOY_USER >> $SCRATCH/deployed").await
    else {
        return;
    };
    let (lock, _) = env.deploy("edge", "deploy:lock", "alice").await;
    expect_final_starting(
        &env,
        lock,
        "success",
        "trelhub locked on edge by alice until ",
    )
    .await;

    let (blocked, ts) = env.deploy("edge", "deploy", "bob").await;
    expect_final_starting(&env, blocked, "error", ALICES_LOCK).await;
    env.slack
        .wait_for_text(
            ROOM,
            &ts,
            "was refused: trelhub in edge is locked by alice",
            WAIT,
        )
        .await;

    let (other_env, _) = env.deploy("staging", "deploy", "bob").await;
    expect_success(&env, other_env).await;
    let (owner, _) = env.deploy("edge", "deploy", "alice").await;
    expect_success(&env, owner).await;

    // Only the holder unlocks.
    let (unlock, _) = env.deploy("edge", "deploy:unlock", "bob").await;
    let refused = "trelhub is locked on edge by alice; only they can unlock it";
    expect_final(&env, unlock, "error", refused).await;
    let (unlock, _) = env.deploy("edge", "deploy:unlock", "alice").await;
    let what = "trelhub unlocked on edge (was locked by alice)";
    expect_final(&env, unlock, "success", what).await;
    let (after, _) = env.deploy("edge", "deploy", "bob").await;
    expect_success(&env, after).await;
    let deployed = read_scratch(&env, "deployed");
    assert_eq!(
        deployed.lines().collect::<Vec<_>>(),
        ["bob", "alice", "bob"]
    );
}

/// Locks are keyed by the deployer's id, which only a desk ticket or the GitHub creator
/// gives: a payload that claims the holder in `notify`, or a ticket for another user who
/// shows the same display name, can neither deploy through the lock nor free it.
async fn a_lock_is_not_freed_by_a_user_with_the_same_name(backend: Backend) {
    let Some(env) = start_with_script(backend, "echo $DEPLOY_USER >> $SCRATCH/deployed").await
    else {
        return;
    };
    let (lock, _) = env.deploy("edge", "deploy:lock", "alice").await;
    expect_final_starting(&env, lock, "success", "trelhub locked on edge by alice").await;
    let claims_alice = |task: &'static str| {
        let env = &env;
        async move {
            // chima's payload for alice, without her ticket (`gh api`, a copied payload).
            let (payload, _) = env.payload("alice");
            env.deploy_payload("edge", task, payload).await
        }
    };
    let same_name = |task: &'static str| {
        let env = &env;
        async move {
            let now = chrono::Utc::now();
            let ticket = faseng::store::DeskTicket {
                id: faseng::store::DeskTicket::new_id().unwrap(),
                app: "trelhub".into(),
                environment: "edge".into(),
                sha: env.sha.clone(),
                user: "U0SOMEONEELSE".into(),
                user_name: "alice".into(),
                allowed_by: Vec::new(),
                at: now,
                expires_at: now + chrono::Duration::hours(1),
            };
            env.store().await.issue_ticket(&ticket).await.unwrap();
            let (mut payload, _) = env.payload("alice");
            payload["notify"]["user"] = json!("U0SOMEONEELSE");
            payload["desk_ticket"] = json!(ticket.id);
            env.deploy_payload("edge", task, payload).await
        }
    };
    let refused = "trelhub is locked on edge by alice; only they can unlock it";
    for id in [
        claims_alice("deploy:unlock").await,
        same_name("deploy:unlock").await,
    ] {
        expect_final(&env, id, "error", refused).await;
    }
    for id in [claims_alice("deploy").await, same_name("deploy").await] {
        expect_final_starting(&env, id, "error", ALICES_LOCK).await;
    }
    assert!(
        !scratch(env.dir.path(), "deployed").exists(),
        "someone other than alice deployed through her lock"
    );
    let (unlock, _) = env.deploy("edge", "deploy:unlock", "alice").await;
    let what = "trelhub unlocked on edge (was locked by alice)";
    expect_final(&env, unlock, "success", what).await;
}

async fn hostile_refs_and_shas_never_reach_a_process(backend: Backend) {
    let Some(env) = start_with_script(backend, "touch $SCRATCH/ran").await else {
        return;
    };
    let pwned = scratch(env.dir.path(), "pwned");
    let p = pwned.display().to_string();
    let cases = [
        ("ref", format!("--upload-pack=touch {p}")),
        ("ref", format!("main;touch${{IFS}}{p}")),
        ("ref", "main\ntouch".to_owned()),
        ("sha", format!("$(touch {p})")),
        ("sha", "abc123".to_owned()),
        ("environment", format!("edge;touch {p}")),
    ];
    for (field, value) in cases {
        let (mut d, _, _) = env.deployment_and_webhook("edge", "deploy", "joyz").await;
        d[field] = json!(value);
        let (headers, body) = env.gh.deployment_webhook(REPO, &d, SECRET);
        assert_eq!(
            env.post_webhook(&headers, body.to_vec()).await,
            202,
            "{field}={value:?}"
        );
        let s = env.wait_final(d["id"].as_u64().unwrap()).await;
        assert_eq!(s["state"], "error", "{field}={value:?}: {s}");
        let why = s["description"].as_str().unwrap();
        assert!(
            why.contains("is not valid") || why.contains("has no environment"),
            "{s}"
        );
    }
    assert!(
        !scratch(env.dir.path(), "ran").exists(),
        "the deploy script ran"
    );
    assert!(!pwned.exists(), "a hostile value was executed");
}

async fn a_timeout_kills_the_whole_process_group(backend: Backend) {
    let script = format!(
        "{}\n({} wait) &\necho children started\nwait",
        e2e::dirs::lingering_child("child"),
        e2e::dirs::lingering_child("grandchild")
    );
    let Some(env) = start_with_app(backend, &script, json!({"timeout": 2})).await else {
        return;
    };
    let (id, _) = env.deploy("edge", "deploy", "joyz").await;
    expect_final(&env, id, "failure", "Timed out after 2 s").await;
    let scratch_dir = scratch(env.dir.path(), "");
    for name in ["child", "grandchild"] {
        assert!(scratch(env.dir.path(), &format!("{name}.held")).exists());
        e2e::dirs::wait_released(&scratch_dir, name, Duration::from_secs(5)).await;
    }
    let (_, log) = env.get(&format!("{}/log", env.log_url(id))).await;
    assert!(
        log.contains("timed out after 2 s: killing the process group"),
        "{log}"
    );
    assert!(log.contains("children started"), "{log}");
}

async fn failed_status_posts_are_retried_without_holding_the_run(backend: Backend) {
    let Some(env) = Env::start(backend, Options::default()).await else {
        return;
    };
    env.gh.fail_status_posts(3);
    let (id, _) = deploy_edge(&env).await;
    expect_clean_success(&env, id).await;
}

/// A deployment made outside chat (CI, `gh api`) carries no payload: faseng deploys it as
/// its own app.json says, attributed to its GitHub creator.
async fn a_deployment_without_a_payload_deploys_from_the_operators_app_json(backend: Backend) {
    let Some(env) = start_with_script(backend, "echo by $DEPLOY_USER").await else {
        return;
    };
    let d = env
        .gh
        .create_deployment(REPO, json!({"ref": "main", "environment": "edge", "auto_merge": false, "required_contexts": []}))
        .await;
    let id = d["id"].as_u64().unwrap();
    expect_success(&env, id).await;
    let creator = d["creator"]["login"].as_str().unwrap();
    let log = env.log(id).await;
    assert!(log.contains(&format!("by {creator}")), "{log}");
}

async fn other_events(backend: Backend) {
    let Some(env) = Env::start(backend, Options::default()).await else {
        return;
    };
    let ping = e2e::fixtures::json("github/webhooks/ping/payload.json");
    let (h, b) = e2e::fake_github::signed_delivery("ping", "p-1", &ping, SECRET);
    assert_eq!(env.post_webhook(&h, b.to_vec()).await, 200);
    let status = e2e::fixtures::json("github/webhooks/deployment_status/payload.json");
    let (h, b) = e2e::fake_github::signed_delivery("deployment_status", "s-1", &status, SECRET);
    assert_eq!(env.post_webhook(&h, b.to_vec()).await, 202);
    let (h, b) = e2e::fake_github::signed_delivery("push", "x-1", &json!({}), SECRET);
    let mut req = reqwest::Client::new().post(format!("{}/webhooks/github", env.url));
    for (k, v) in &h {
        req = req.header(k, v);
    }
    let r = req.body(b.to_vec()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(r.text().await.unwrap(), "ignored: push");
    let big = vec![b'x'; 26 * 1024 * 1024];
    let (h, _) = e2e::fake_github::signed_delivery("deployment", "big", &json!({}), SECRET);
    assert_eq!(env.post_webhook(&h, big).await, 413);
}

async fn chat_without_a_message_ts_gets_a_new_message_and_rate_limits_are_honoured(
    backend: Backend,
) {
    let Some(env) = Env::start(backend, Options::default()).await else {
        return;
    };
    let (mut payload, _) = env.payload("joyz");
    payload["notify"]
        .as_object_mut()
        .unwrap()
        .remove("message_ts");
    env.slack.rate_limit_next(1, 1);
    let d = env
        .gh
        .create_deployment(
            REPO,
            json!({"ref": "main", "environment": "edge", "auto_merge": false,
                   "required_contexts": [], "payload": payload}),
        )
        .await;
    let id = d["id"].as_u64().unwrap();
    expect_success(&env, id).await;
    let msg = env
        .slack
        .wait_until(WAIT, "faseng's own message to say done", |s| {
            s.messages()
                .into_iter()
                .find(|m| m.from_api && m.channel == ROOM && m.text.contains("is done"))
        })
        .await;
    assert!(
        msg.history.iter().any(|h| h.contains("queued")),
        "{:?}",
        msg.history
    );
    let ours = env
        .slack
        .messages()
        .into_iter()
        .filter(|m| m.text.contains("trelhub/main"))
        .count();
    assert_eq!(ours, 1, "one message, then edits");
    // The first chat.postMessage got 429 and was sent again after Retry-After.
    let posts = env
        .slack
        .calls()
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .count();
    assert_eq!(posts, 2);

    let (code, events) = env.get(&format!("{}/events", env.log_url(id))).await;
    assert_eq!(code, 200);
    assert!(
        events.contains("event: line") && events.contains("deployed edge"),
        "{events}"
    );
    assert!(events.contains("event: end"), "{events}");
}

async fn a_second_job_for_a_started_deployment_drops_out(backend: Backend) {
    let script = "echo run >> $SCRATCH/runs\n\
                  touch $SCRATCH/started\n\
                  i=0; while [ ! -e $SCRATCH/go ]; do i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.05; done";
    let Some(env) = start_with_script(backend, script).await else {
        return;
    };
    let (id, headers, body) = held_back_delivery(&env).await;
    assert_eq!(env.post_webhook(&headers, body.clone()).await, 202);
    let started = scratch(env.dir.path(), "started");
    wait_for("the run to start", WAIT, || started.exists().then_some(())).await;

    // A second queue job for the same deployment, as an intake that re-enqueues a
    // deployment it thinks was lost would create.
    let services = faseng::Services::connect(env.config(Duration::from_secs(60)))
        .await
        .unwrap();
    let event: deploy_core::event::DeploymentEvent = serde_json::from_slice(&body).unwrap();
    let job = faseng::job::DeployJob::from_event("another-delivery", &event, &services.config.apps)
        .unwrap();
    services.queue.push(job.clone()).await.unwrap();
    env.wait_for_metric("faseng_duplicate_jobs_total 1").await;
    std::fs::write(scratch(env.dir.path(), "go"), "").unwrap();
    expect_success(&env, id).await;
    // And one more after it finished.
    services.queue.push(job).await.unwrap();
    env.wait_for_metric("faseng_duplicate_jobs_total 2").await;
    assert_eq!(env.states(id), ["queued", "in_progress", "success"]);
    let runs = read_scratch(&env, "runs");
    assert_eq!(runs.lines().count(), 1);
}

/// The head of a line has its job behind a later run's job in the queue (as a job recovered
/// from a dead worker goes to the end) and the worker has one slot: the later run takes the
/// slot and waits for the head, whose job nobody would take. The waiting run hands its job
/// back, the head runs, then the later one; each once, in line order.
async fn a_worker_whose_every_slot_waits_hands_a_job_back(backend: Backend) {
    let opts = Options {
        script: "echo $DEPLOY_ID >> $SCRATCH/runs".into(),
        with_worker: false,
        ..Options::default()
    };
    let Some(env) = Env::start(backend, opts).await else {
        return;
    };
    let mut config = env.config(Duration::from_secs(60));
    config.concurrency = 1;
    let services = std::sync::Arc::new(faseng::Services::connect(config).await.unwrap());
    let mut jobs = Vec::new();
    for n in 0..2 {
        let (_, _, body) = env.deployment_and_webhook("edge", "deploy", "joyz").await;
        let event: deploy_core::event::DeploymentEvent = serde_json::from_slice(&body).unwrap();
        jobs.push(
            faseng::job::DeployJob::from_event(
                &format!("delivery-{n}"),
                &event,
                &services.config.apps,
            )
            .unwrap(),
        );
    }
    let items: Vec<_> = jobs
        .iter()
        .map(faseng::job::DeployJob::accept_item)
        .collect();
    services.store.accept_runs(&items).await.unwrap();
    let (head, later) = (&jobs[0], &jobs[1]);
    services.queue.push(later.clone()).await.unwrap();
    services.queue.push(head.clone()).await.unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(services.clone().run_worker(env.url.clone(), stopped));
    for job in [head, later] {
        expect_success(&env, job.deployment_id).await;
    }
    let runs = read_scratch(&env, "runs");
    assert_eq!(
        runs.lines().collect::<Vec<_>>(),
        [
            head.deployment_id.to_string(),
            later.deployment_id.to_string()
        ],
        "each ran once, in line order"
    );
    let later_states = env.states(later.deployment_id);
    assert_eq!(
        later_states.iter().filter(|s| *s == "in_progress").count(),
        1,
        "{later_states:?}"
    );
    assert_eq!(
        later_states.iter().filter(|s| *s == "queued").count(),
        1,
        "one status per state (that it is next goes to chat only), not again after the hand-back: {later_states:?}"
    );
    let _ = stop.send(true);
    worker.await.unwrap().unwrap();
}

/// A real run's page, plain log and live stream answer under the `log_url` faseng posted
/// (to GitHub and in chat), and 404 like an unknown deployment without its secret, with a
/// wrong one, or with another run's.
async fn a_log_is_served_under_its_link_only(backend: Backend) {
    let Some(env) = Env::start(backend, Options::default()).await else {
        return;
    };
    let (id, ts) = deploy_edge(&env).await;
    let (other, _) = deploy_edge(&env).await;
    expect_success(&env, id).await;
    expect_success(&env, other).await;
    let link = env.log_url(id);
    assert_eq!(env.wait_final(id).await["log_url"], link.as_str());
    env.slack
        .wait_for_text(ROOM, &ts, &format!("<{link}|log>"), WAIT)
        .await;
    let other_secret = env.log_url(other).rsplit('/').next().unwrap().to_owned();
    let unknown = (StatusCode::NOT_FOUND, "no such deployment".to_owned());
    for part in ["", "/log", "/events"] {
        let (code, body) = env.get(&format!("{link}{part}")).await;
        assert_eq!(code, 200, "{link}{part}: {body}");
        assert!(body.contains("deployed edge"), "{link}{part}: {body}");

        let mut wrong = link.clone();
        let last = if wrong.pop() == Some('0') { '1' } else { '0' };
        wrong.push(last);
        for refused in [
            format!("/deployments/{REPO}/{id}{part}"),
            format!("{wrong}{part}"),
            format!("/deployments/{REPO}/{id}/{other_secret}{part}"),
        ] {
            let (code, body) = env.get(&refused).await;
            assert_eq!(
                (StatusCode::from_u16(code).unwrap(), body),
                unknown,
                "{refused}"
            );
        }
    }
    assert_eq!(env.get("/healthz").await.0, 200);
    assert_eq!(env.get("/metrics").await.0, 200);
}

e2e::both_backends!(
    a_log_is_served_under_its_link_only,
    a_worker_whose_every_slot_waits_hands_a_job_back,
    a_second_job_for_a_started_deployment_drops_out,
    chat_without_a_message_ts_gets_a_new_message_and_rate_limits_are_honoured,
    a_signed_deployment_runs_and_reports_in_order,
    a_failing_script_is_a_failure_with_its_last_line,
    bad_signatures_are_refused_and_nothing_runs,
    one_delivery_sent_twice_runs_once,
    one_environment_runs_one_at_a_time_in_arrival_order,
    different_environments_run_in_parallel,
    lock_and_unlock_follow_heaven,
    a_lock_is_not_freed_by_a_user_with_the_same_name,
    hostile_refs_and_shas_never_reach_a_process,
    a_timeout_kills_the_whole_process_group,
    failed_status_posts_are_retried_without_holding_the_run,
    a_deployment_without_a_payload_deploys_from_the_operators_app_json,
    other_events,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_means_503_and_no_lost_delivery() {
    let Some(mut env) = Env::start(Backend::Redis, Options::default()).await else {
        return;
    };
    let (id, headers, body) = held_back_delivery(&env).await;
    env.queue.redis.as_mut().unwrap().stop();
    assert_eq!(env.post_webhook(&headers, body.clone()).await, 503);
    assert_eq!(env.get("/healthz").await.0, 503);
    env.queue.redis.as_mut().unwrap().restart();
    // GitHub redelivers the same delivery: it is accepted now, and runs once.
    let code = wait_for_async_status(&env, &headers, &body).await;
    assert_eq!(code, 202);
    expect_clean_success(&env, id).await;
}

/// Retries a delivery until faseng has reconnected (as GitHub's redelivery would).
async fn wait_for_async_status(env: &Env, headers: &[(String, String)], body: &[u8]) -> u16 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let code = env.post_webhook(headers, body.to_vec()).await;
        if code != 503 || tokio::time::Instant::now() > deadline {
            return code;
        }
        // GitHub redelivers after a pause; faseng's reconnect has no event to wait on.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
