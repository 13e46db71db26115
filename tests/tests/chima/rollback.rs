//! Rollback and statistics through chat, in GitHub mode with the fakes: chima's Slack app in
//! process (signed Events API and interaction requests from the fake Slack's samples) and
//! faseng in process, sharing one store on both backends; deployments go through the fake
//! GitHub's webhooks to faseng, which runs a real shell provider on a real git checkout and
//! edits chima's messages in the fake Slack. Also the dashboard's web actions, carried out by
//! chima's step function.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chima::Bot;
use chima::slack::app::{SlackApp, SlackSettings};
use chima::slack::poster::SlackPoster;
use chima::slack::web::SlackWeb;
use deploy_core::chat::ButtonValue;
use deploy_core::{AppName, Apps, GithubAuth, ManualClock, Secret, Span};
use e2e::backend::Backend;
use e2e::fake_github::TOKEN;
use e2e::fake_slack::{BOT_TOKEN, BOT_USER, Message, now_secs};
use e2e::harness::{Env, Options, REPO, WAIT};
use e2e::slack_app::{SECRET as SIGNING_SECRET, post_signed};
use faseng::store::{
    AuditAction, AuditQuery, RollbackMark, RunQuery, RunState, StatsQuery, Store, WebActionState,
    compute_env_stats, figures,
};
use serde_json::{Value, json};

const DEPLOYMENT: &str = "C024BE91L";
const JOYZ: &str = "U2147483697";
const ALICE: &str = "U0ALICE001";

/// The deploy script: fails for a commit that has a file `broken`, else says what it deploys.
const SCRIPT: &str = "set -e\nif [ -f broken ]; then echo \"boom: $DEPLOY_SHA is broken\"; exit 1; fi\necho \"deployed $DEPLOY_SHA to $DEPLOY_ENV for $DEPLOY_USER\"";

/// faseng and chima in process on one store, trelhub with branches `feature` and `broken`.
struct World {
    env: Env,
    bot: Arc<Bot>,
    poster: Arc<SlackPoster>,
    chima_url: String,
    clock: ManualClock,
    http: reqwest::Client,
    next_ts: AtomicU64,
    /// The commits of `main`, `feature` and `broken`.
    main: String,
    feature: String,
    broken: String,
}

impl std::ops::Deref for World {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.env
    }
}

impl World {
    /// trelhub with `extra` merged into its app.json entry (faseng's and chima's alike).
    async fn start(backend: Backend, extra: Value) -> Option<Self> {
        let env = Env::start(
            backend,
            Options {
                script: SCRIPT.into(),
                app: extra,
                ..Options::default()
            },
        )
        .await?;
        let main = env.sha.clone();
        let repo = &env.repo;
        repo.branch("feature");
        repo.write("feature.txt", "new\n");
        let feature = repo.commit("feature");
        repo.branch("broken");
        repo.git(&["reset", "--quiet", "--hard", &main]);
        repo.write("broken", "yes\n");
        let broken = repo.commit("broken");
        repo.branch("main");
        repo.git(&["reset", "--quiet", "--hard", &main]);
        env.gh.set_branch(REPO, "feature", &feature);
        env.gh.set_branch(REPO, "broken", &broken);

        let apps = Apps::from_json(&env.apps_json.to_string()).expect("the app.json");
        let clock = ManualClock::new(chrono::Utc::now());
        let store = chima::store::StoreHandle::open(&env.queue.url)
            .await
            .expect("the shared store opens");
        let bot = Arc::new(
            chima::cli::github_bot(
                apps,
                env.gh.url(),
                GithubAuth::Token(Secret::new(TOKEN)),
                "chima",
            )
            .with_store(store)
            .with_clock(Arc::new(clock.clone())),
        );
        let web = Arc::new(SlackWeb::new(env.slack.api_url(), BOT_TOKEN).unwrap());
        let poster = Arc::new(SlackPoster::new(web.clone()));
        bot.set_poster(poster.clone());
        let app = Arc::new(SlackApp::new(
            bot.clone(),
            web,
            BOT_USER,
            SlackSettings {
                watchdog: Duration::from_secs(600),
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let chima_url = format!("http://{}", listener.local_addr().unwrap());
        let router = chima::slack::http::router(app, SIGNING_SECRET);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Some(Self {
            env,
            bot,
            poster,
            chima_url,
            clock,
            http: reqwest::Client::new(),
            next_ts: AtomicU64::new(100),
            main,
            feature,
            broken,
        })
    }

    /// `<@chima> command` said by `user` in #deployment; the message's ts (its thread).
    async fn say(&self, user: &str, command: &str) -> String {
        let n = self.next_ts.fetch_add(1, Ordering::SeqCst);
        let ts = format!("1765000000.{n:06}");
        let body = json!({"type": "event_callback", "team_id": "T1", "api_app_id": "A1",
            "event_id": format!("Ev{ts}"), "event_time": now_secs(),
            "event": {"type": "app_mention", "user": user, "channel": DEPLOYMENT,
                      "channel_type": "channel", "text": format!("<@{BOT_USER}> {command}"),
                      "ts": ts}})
        .to_string();
        let status = post_signed(
            &self.http,
            &format!("{}/slack/events", self.chima_url),
            SIGNING_SECRET,
            "application/json",
            body,
            now_secs(),
            &[],
        )
        .await;
        assert_eq!(status, 200);
        ts
    }

    /// chima's reply in thread `ts` once one says `needle`.
    async fn reply(&self, ts: &str, needle: &str) -> Message {
        self.slack
            .wait_for_reply(DEPLOYMENT, ts, needle, WAIT)
            .await
    }

    /// The live message in thread `ts` once it said `needle` (faseng may have edited it
    /// since): it, with `text` set to what it said then.
    async fn live(&self, ts: &str, needle: &str) -> Message {
        self.slack
            .wait_until(
                WAIT,
                &format!("a live message in {ts} saying {needle:?}"),
                |s| {
                    s.replies_in_thread(DEPLOYMENT, ts)
                        .into_iter()
                        .filter(|m| m.from_api)
                        .find_map(|m| {
                            let said = std::iter::once(&m.text)
                                .chain(m.history.iter())
                                .find(|t| t.contains(needle))?
                                .clone();
                            Some(Message { text: said, ..m })
                        })
                },
            )
            .await
    }

    /// `user` deploys `git_ref` to staging and it finishes; its id and live message.
    async fn deploy(&self, user: &str, git_ref: &str) -> (u64, Message) {
        let ts = self
            .say(user, &format!("deploy trelhub/{git_ref} to staging"))
            .await;
        let live = self.live(&ts, "Deployment #").await;
        let id = number_after(&live.text, "Deployment #");
        self.env.wait_final(id).await;
        let done = self.finished_message(&live).await;
        (id, done)
    }

    /// The live message once faseng said how its deployment ended.
    async fn finished_message(&self, live: &Message) -> Message {
        self.slack
            .wait_until(WAIT, "the deployment's final message", |s| {
                s.message(DEPLOYMENT, &live.ts).filter(|m| {
                    ["is done in", "failed:", "Rolled back", "has errors"]
                        .iter()
                        .any(|end| m.text.contains(end))
                })
            })
            .await
    }

    /// Presses `message`'s first button as `user`, as Slack posts it.
    async fn press(&self, user: &str, message: &Message) {
        let mut payload = e2e::fixtures::json(
            "slack/shape-samples/app-backend/interactive-components/BlockActionPayload.json",
        );
        let button = message.blocks[1]["elements"][0].clone();
        payload["type"] = json!("block_actions");
        payload["user"] = json!({"id": user, "username": "someone", "team_id": "T1"});
        payload["container"] = json!({"type": "message", "message_ts": message.ts,
                                      "channel_id": message.channel, "is_ephemeral": false});
        payload["channel"] = json!({"id": message.channel, "name": "deployment"});
        payload["message"]["ts"] = json!(message.ts);
        payload["message"]["thread_ts"] = json!(message.thread_ts);
        payload["actions"] = json!([{"type": "button", "action_id": button["action_id"],
                                     "block_id": "b", "text": button["text"],
                                     "value": button["value"], "action_ts": "1"}]);
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        let status = post_signed(
            &self.http,
            &format!("{}/slack/interactions", self.chima_url),
            SIGNING_SECRET,
            "application/x-www-form-urlencoded",
            body,
            now_secs(),
            &[],
        )
        .await;
        assert_eq!(status, 200);
    }

    /// trelhub's deployments on the fake GitHub, oldest first.
    fn deployments(&self) -> Vec<Value> {
        let mut all = self.gh.deployments(REPO);
        all.sort_by_key(|d| d["id"].as_u64());
        all
    }

    fn deployment(&self, id: u64) -> Value {
        self.deployments()
            .into_iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("no deployment #{id}"))
    }

    async fn audit(&self) -> Vec<(AuditAction, String, String)> {
        let store = self.store().await;
        let page = store
            .audit(&AuditQuery {
                app: Some("trelhub".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        page.items
            .into_iter()
            .rev()
            .map(|r| (r.entry.action, r.entry.actor, r.entry.detail))
            .collect()
    }
}

fn number_after(text: &str, marker: &str) -> u64 {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {text:?}"))
        + marker.len();
    text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn short(sha: &str) -> &str {
    &sha[..7]
}

fn mark(from: &str, to: &str) -> Value {
    json!({"from": from, "to": to})
}

async fn two_deploys_then_a_rollback_deploys_the_first_commit_locks_and_says_which(
    backend: Backend,
) {
    let Some(w) = World::start(backend, json!({})).await else {
        return;
    };
    let (first, first_done) = w.deploy(JOYZ, "main").await;
    assert!(
        first_done
            .blocks
            .get(1)
            .is_none_or(|b| b["type"] != "actions"),
        "nothing earlier to roll back to: no button: {}",
        first_done.blocks
    );
    let (second, _) = w.deploy(JOYZ, "feature").await;

    let ts = w.say(JOYZ, "rollback trelhub in staging").await;
    let live = w.live(&ts, "Rollback #").await;
    let id = number_after(&live.text, "Rollback #");
    assert!(id > second, "{}", live.text);
    assert!(
        live.text.contains(&format!(
            "Rollback #{id} of trelhub in staging to `{}` (deployment #{first}) from `{}` for joyz: created",
            short(&w.main),
            short(&w.feature)
        )),
        "says which deployment and commit it goes back to, and from: {}",
        live.text
    );
    let locked = w.reply(&ts, "is now locked").await;
    assert!(
        locked.text.contains(&format!(
            "trelhub in staging is now locked by joyz: rolled back from {}: fix before deploying again, until ",
            short(&w.feature)
        )),
        "{}",
        locked.text
    );

    let d = w.deployment(id);
    assert_eq!(d["ref"], w.main.as_str(), "the commit itself is deployed");
    assert_eq!(d["sha"], w.main.as_str());
    assert_eq!(d["payload"]["rollback"], mark(&w.feature, &w.main));
    assert!(d["payload"]["desk_ticket"].is_string(), "{d}");
    let body =
        w.gh.requests()
            .into_iter()
            .rfind(|r| r.method == "POST" && r.path.ends_with("/deployments"))
            .unwrap()
            .body;
    assert_eq!(
        body["auto_merge"], false,
        "nothing merged into the old commit"
    );

    assert_eq!(w.wait_final(id).await["state"], "success");
    let done = w.finished_message(&live).await;
    assert!(
        done.text.contains(&format!(
            "Rolled back trelhub in staging to {} (from {}) for joyz (#{id}) in ",
            short(&w.main),
            short(&w.feature)
        )),
        "faseng says rollback in the same message: {}",
        done.text
    );
    let store = w.store().await;
    let run = store
        .get_run(&format!("{REPO}/{id}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        run.rollback,
        Some(RollbackMark {
            from: w.feature.clone(),
            to: w.main.clone()
        })
    );
    assert_eq!(run.state, RunState::Success);
    let lock = store.env_lock("trelhub/staging").await.unwrap().unwrap();
    assert_eq!(lock.user, JOYZ);
    assert_eq!(
        lock.reason,
        format!(
            "rolled back from {}: fix before deploying again",
            short(&w.feature)
        )
    );

    let audit = w.audit().await;
    let rollback = audit
        .iter()
        .find(|(a, ..)| *a == AuditAction::Rollback)
        .expect("the rollback is audited");
    assert_eq!(rollback.1, JOYZ);
    assert_eq!(
        rollback.2,
        format!(
            "deployment #{id}: from {} to {}",
            short(&w.feature),
            short(&w.main)
        )
    );
    assert!(
        audit.iter().any(|(a, who, detail)| *a == AuditAction::Lock
            && who == JOYZ
            && detail.contains("after rollback")),
        "{audit:#?}"
    );

    // The lock holds: someone else's deploy is refused before GitHub is asked.
    let before = w.deployments().len();
    let ts = w.say(ALICE, "deploy trelhub/feature to staging").await;
    let refused = w.reply(&ts, "is locked by").await;
    assert!(refused.text.contains("joyz"), "{}", refused.text);
    assert_eq!(w.deployments().len(), before);
}

async fn a_rollback_to_a_named_deployment_or_ref(backend: Backend) {
    let Some(w) = World::start(backend, json!({"lock_after_rollback": false})).await else {
        return;
    };
    let (first, _) = w.deploy(JOYZ, "main").await;
    let (second, _) = w.deploy(JOYZ, "feature").await;

    let ts = w
        .say(JOYZ, &format!("rollback trelhub in staging to #{first}"))
        .await;
    let live = w.live(&ts, "Rollback #").await;
    let to_first = number_after(&live.text, "Rollback #");
    assert_eq!(
        w.deployment(to_first)["payload"]["rollback"],
        mark(&w.feature, &w.main)
    );
    w.wait_final(to_first).await;

    // Back on main: going there again does nothing.
    let ts = w
        .say(JOYZ, &format!("rollback trelhub in staging to #{first}"))
        .await;
    let same = w.reply(&ts, "already at").await;
    assert_eq!(
        same.text,
        format!(
            "trelhub in staging is already at `{}`: nothing to roll back. Nothing was done.",
            short(&w.main)
        )
    );

    let ts = w.say(JOYZ, "rollback trelhub in staging to feature").await;
    let live = w.live(&ts, "Rollback #").await;
    let to_feature = number_after(&live.text, "Rollback #");
    assert!(
        live.text.contains(&format!(
            "to `{}` (feature) from `{}`",
            short(&w.feature),
            short(&w.main)
        )),
        "{}",
        live.text
    );
    let d = w.deployment(to_feature);
    assert_eq!(d["ref"], w.feature.as_str());
    assert_eq!(d["payload"]["rollback"], mark(&w.main, &w.feature));
    w.wait_final(to_feature).await;

    // What cannot be rolled back to is said, and nothing is made.
    let before = w.deployments().len();
    for (line, answer) in [
        (
            "rollback trelhub in staging to #999".to_owned(),
            "There is no deployment #999 of trelhub".to_owned(),
        ),
        (
            "rollback trelhub in staging to nope".to_owned(),
            "There is no ref `nope` in oursky/trelhub to roll back to. Nothing was done."
                .to_owned(),
        ),
        (
            format!("rollback trelhub in staging to #{second}"),
            format!("trelhub in staging is already at `{}`", short(&w.feature)),
        ),
    ] {
        let ts = w.say(JOYZ, &line).await;
        let reply = w.reply(&ts, "Nothing was done").await;
        assert!(reply.text.contains(&answer), "{line}: {}", reply.text);
    }
    // A failed deployment is no target.
    let (failed, _) = w.deploy(JOYZ, "broken").await;
    let ts = w
        .say(JOYZ, &format!("rollback trelhub in staging to #{failed}"))
        .await;
    let reply = w.reply(&ts, "Nothing was done").await;
    assert!(
        reply.text.contains(&format!(
            "Deployment #{failed} of trelhub in staging ended in failure: only a deployment that succeeded there can be rolled back to."
        )),
        "{}",
        reply.text
    );
    assert_eq!(w.deployments().len(), before + 1);
    let store = w.store().await;
    assert_eq!(
        store.env_lock("trelhub/staging").await.unwrap(),
        None,
        "lock_after_rollback: false leaves the environment unlocked"
    );
    assert!(
        !w.audit()
            .await
            .iter()
            .any(|(a, ..)| *a == AuditAction::Lock),
        "no lock was taken"
    );
    assert_eq!(
        w.audit()
            .await
            .iter()
            .filter(|(a, ..)| *a == AuditAction::Rollback)
            .count(),
        2
    );
}

async fn nothing_to_roll_back_is_said_and_nothing_changes(backend: Backend) {
    let Some(w) = World::start(backend, json!({})).await else {
        return;
    };
    let ts = w.say(JOYZ, "rollback trelhub in staging").await;
    let reply = w.reply(&ts, "Nothing was done").await;
    assert_eq!(
        reply.text,
        "Nothing has been deployed to staging of trelhub yet, so there is nothing to roll back. Nothing was done."
    );
    w.deploy(JOYZ, "main").await;
    w.deploy(JOYZ, "main").await;
    let ts = w.say(JOYZ, "rollback trelhub in staging").await;
    let reply = w.reply(&ts, "Nothing was done").await;
    assert!(
        reply.text.starts_with(&format!(
            "There is no earlier successful deployment of trelhub in staging with a commit other than `{}`",
            short(&w.main)
        )),
        "{}",
        reply.text
    );
    assert_eq!(w.deployments().len(), 2);
    let store = w.store().await;
    assert_eq!(store.env_lock("trelhub/staging").await.unwrap(), None);
}

async fn a_locked_environment_refuses_someone_elses_rollback(backend: Backend) {
    let Some(w) = World::start(backend, json!({})).await else {
        return;
    };
    w.deploy(JOYZ, "main").await;
    w.deploy(JOYZ, "feature").await;
    let ts = w
        .say(ALICE, "lock trelhub in staging: checking the feature")
        .await;
    w.reply(&ts, "is locked by alice").await;
    let ts = w.say(JOYZ, "rollback trelhub in staging").await;
    let refused = w.reply(&ts, "Nothing was rolled back").await;
    assert!(
        refused
            .text
            .contains("trelhub in staging is locked by alice")
            && refused.text.contains("checking the feature"),
        "{}",
        refused.text
    );
    assert_eq!(w.deployments().len(), 2, "nothing was made");
    let lock = w
        .store()
        .await
        .env_lock("trelhub/staging")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lock.user, ALICE, "alice still holds it");

    // The holder may roll back.
    let ts = w.say(ALICE, "rollback trelhub in staging").await;
    let live = w.live(&ts, "Rollback #").await;
    let id = number_after(&live.text, "Rollback #");
    assert_eq!(w.wait_final(id).await["state"], "success");
}

async fn a_rollback_into_a_protected_environment_goes_through_a_release_request(backend: Backend) {
    let protect = json!({"protect": {"production": {"approvals": 1, "approvers": ["alice"]}}});
    let Some(w) = World::start(backend, protect).await else {
        return;
    };
    let mut released = Vec::new();
    for git_ref in ["main", "feature"] {
        let ts = w
            .say(JOYZ, &format!("deploy trelhub/{git_ref} to production"))
            .await;
        let opened = w.reply(&ts, "Release request #").await;
        let n = number_after(&opened.text, "Release request #");
        w.say(ALICE, &format!("approve #{n}")).await;
        let live = w.live(&ts, "Deployment #").await;
        let id = number_after(&live.text, "Deployment #");
        assert_eq!(w.wait_final(id).await["state"], "success");
        released.push(id);
    }

    let ts = w.say(JOYZ, "rollback trelhub in production").await;
    let said = w.reply(&ts, "opens a release request").await;
    assert!(
        said.text.contains(&format!(
            "Rolling back trelhub in production to `{}` (deployment #{}) from `{}`: production is protected",
            short(&w.main),
            released[0],
            short(&w.feature)
        )),
        "{}",
        said.text
    );
    let opened = w.reply(&ts, "Release request #").await;
    let n = number_after(&opened.text, "Release request #");
    assert_eq!(n, 3, "{}", opened.text);
    assert_eq!(
        w.deployments().len(),
        2,
        "nothing deployed before the approval"
    );
    let request = w.store().await.request(n).await.unwrap().unwrap();
    assert_eq!(request.sha, w.main);
    assert_eq!(
        request.rollback,
        Some(RollbackMark {
            from: w.feature.clone(),
            to: w.main.clone()
        })
    );

    w.say(ALICE, &format!("approve #{n}")).await;
    let live = w.live(&ts, "Rollback #").await;
    let id = number_after(&live.text, "Rollback #");
    let d = w.deployment(id);
    assert_eq!(d["ref"], w.main.as_str());
    assert_eq!(d["payload"]["rollback"], mark(&w.feature, &w.main));
    assert_eq!(d["payload"]["request"], n);
    assert_eq!(w.wait_final(id).await["state"], "success");
    w.reply(&ts, "is now locked by joyz").await;
    let lock = w
        .store()
        .await
        .env_lock("trelhub/production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lock.user, JOYZ, "locked for the requester");
}

async fn a_failed_deploy_is_rolled_back_automatically_once_in_its_thread(backend: Backend) {
    let Some(w) = World::start(backend, json!({"rollback_on_failure": ["staging"]})).await else {
        return;
    };
    let (good, _) = w.deploy(JOYZ, "main").await;
    let ts = w.say(JOYZ, "deploy trelhub/broken to staging").await;
    let live = w.live(&ts, "Deployment #").await;
    let failed = number_after(&live.text, "Deployment #");
    assert_eq!(w.wait_final(failed).await["state"], "failure");
    let failure = w.finished_message(&live).await;
    assert!(failure.text.contains("failed:"), "{}", failure.text);

    w.clock.set(chrono::Utc::now());
    let report = w.bot.desk_tick(w.poster.as_ref()).await.unwrap();
    assert_eq!(report.rolled_back, 1, "{report:?}");
    // At once again, while the failure is still the environment's newest run: taken already.
    let again = w.bot.desk_tick(w.poster.as_ref()).await.unwrap();
    assert_eq!(again.rolled_back, 0, "{again:?}");
    let said = w.reply(&ts, "rolls back on failure").await;
    assert_eq!(
        said.text,
        format!(
            ":warning: Deployment #{failed} of trelhub failed, and staging rolls back on failure: rolling back to `{}` (deployment #{good}) from `{}`.",
            short(&w.main),
            short(&w.broken)
        )
    );
    let rollback_live = w.live(&ts, "Rollback #").await;
    let id = number_after(&rollback_live.text, "Rollback #");
    let d = w.deployment(id);
    assert_eq!(d["payload"]["rollback"], mark(&w.broken, &w.main));
    assert_eq!(d["payload"]["notify"]["user"], JOYZ, "as the requester");
    assert_eq!(
        d["payload"]["notify"]["thread_ts"],
        ts.as_str(),
        "in the failed deployment's thread"
    );
    assert_eq!(w.wait_final(id).await["state"], "success");
    let done = w.finished_message(&rollback_live).await;
    assert!(
        done.text.contains(&format!(
            "Rolled back trelhub in staging to {} (from {}) for joyz (#{id})",
            short(&w.main),
            short(&w.broken)
        )),
        "{}",
        done.text
    );
    // Both results in the thread of the command that failed.
    let thread: Vec<String> = w
        .slack
        .replies_in_thread(DEPLOYMENT, &ts)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert!(
        thread
            .iter()
            .any(|t| t.contains(&format!("(#{failed}) failed:"))),
        "{thread:#?}"
    );
    assert!(
        thread.iter().any(|t| t.contains("Rolled back trelhub")),
        "{thread:#?}"
    );
    let audit = w.audit().await;
    assert!(
        audit
            .iter()
            .any(|(a, who, detail)| *a == AuditAction::AutoRollback
                && who == "chima"
                && detail == &format!("deployment #{failed} failed; rolling back as joyz")),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|(a, who, _)| *a == AuditAction::Rollback && who == JOYZ),
        "{audit:#?}"
    );

    // Once: later steps leave it, and the rollback itself is never rolled back.
    let count = w.deployments().len();
    for _ in 0..2 {
        let report = w.bot.desk_tick(w.poster.as_ref()).await.unwrap();
        assert_eq!(report.rolled_back, 0);
    }
    assert_eq!(w.deployments().len(), count);
    let taken_up: Vec<String> = w
        .slack
        .replies_in_thread(DEPLOYMENT, &ts)
        .into_iter()
        .map(|m| m.text)
        .filter(|t| t.contains("rolls back on failure") || t.contains("already under way"))
        .collect();
    assert_eq!(taken_up.len(), 1, "said once: {taken_up:#?}");
    assert_eq!(
        w.audit()
            .await
            .iter()
            .filter(|(a, ..)| *a == AuditAction::AutoRollback)
            .count(),
        1
    );
}

async fn the_slack_button_rolls_back(backend: Backend) {
    let Some(w) = World::start(backend, json!({})).await else {
        return;
    };
    let (first, _) = w.deploy(JOYZ, "main").await;
    let (second, done) = w.deploy(JOYZ, "feature").await;
    let button = &done.blocks[1]["elements"][0];
    assert_eq!(button["action_id"], "rollback", "{}", done.blocks);
    assert_eq!(button["text"]["text"], "Roll back");
    let value: ButtonValue = serde_json::from_str(button["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        value,
        ButtonValue::new(format!("rollback trelhub in staging to #{first}"))
    );
    assert!(
        done.text.contains(&format!("(#{second}) is done in")),
        "{}",
        done.text
    );

    w.press(ALICE, &done).await;
    let thread = done.thread_ts.clone().unwrap_or_else(|| done.ts.clone());
    let live = w.live(&thread, "Rollback #").await;
    let id = number_after(&live.text, "Rollback #");
    assert!(live.text.contains("for alice"), "{}", live.text);
    // Pressed again at once: one rollback is enough.
    w.press(ALICE, &done).await;
    let twice = w.reply(&thread, "Nothing was done").await;
    assert!(
        twice.text.contains("already under way") || twice.text.contains("already at"),
        "{}",
        twice.text
    );
    assert_eq!(w.deployments().last().unwrap()["id"], id);
    let d = w.deployment(id);
    assert_eq!(d["payload"]["rollback"], mark(&w.feature, &w.main));
    assert_eq!(
        w.slack.message(DEPLOYMENT, &done.ts).unwrap().text,
        done.text,
        "the deploy's message still says how it went"
    );
    w.wait_final(id).await;
    let lock = w
        .store()
        .await
        .env_lock("trelhub/staging")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lock.user, ALICE, "locked for whoever pressed");

    // A second press goes nowhere: the environment is there already.
    let count = w.deployments().len();
    w.press(ALICE, &done).await;
    let again = w
        .slack
        .wait_until(WAIT, "a second refusal", |s| {
            s.replies_in_thread(DEPLOYMENT, &thread)
                .into_iter()
                .filter(|m| m.text.contains("already at"))
                .nth(usize::from(twice.text.contains("already at")))
        })
        .await;
    assert!(again.text.contains(short(&w.main)), "{}", again.text);
    assert_eq!(w.deployments().len(), count);
}

async fn stats_in_chat_are_the_stores_figures(backend: Backend) {
    let Some(w) = World::start(backend, json!({})).await else {
        return;
    };
    let ts = w.say(JOYZ, "stats trelhub").await;
    let none = w.reply(&ts, "No deploys").await;
    assert_eq!(
        none.text,
        "No deploys of trelhub in the last 30d, so there are no figures."
    );
    w.deploy(JOYZ, "main").await;
    w.deploy(JOYZ, "feature").await;
    w.deploy(JOYZ, "broken").await;
    let ts = w.say(JOYZ, "rollback trelhub in staging").await;
    let live = w.live(&ts, "Rollback #").await;
    w.wait_final(number_after(&live.text, "Rollback #")).await;
    w.finished_message(&live).await;

    let now = chrono::Utc::now();
    w.clock.set(now);
    let ts = w.say(JOYZ, "stats trelhub for 7d").await;
    let reply = w.reply(&ts, "Deliveries of").await;

    // The reference computation over the store's own records, printed the one way.
    let store: Arc<dyn Store> = w.store().await;
    let period: Span = "7d".parse().unwrap();
    let q = StatsQuery {
        app: "trelhub".into(),
        environment: None,
        since: now - period.as_chrono(),
        until: now,
    };
    let runs = store
        .history(&RunQuery {
            app: Some("trelhub".into()),
            limit: 0,
            ..RunQuery::default()
        })
        .await
        .unwrap()
        .items;
    let current = compute_env_stats(&runs, &q);
    let previous = compute_env_stats(&runs, &q.previous());
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].deploys, 4);
    assert_eq!(current[0].failures, 1);
    assert_eq!(current[0].change_failures, 1);
    let rows: Vec<_> = current
        .iter()
        .map(|s| {
            let before = previous.iter().find(|p| p.environment == s.environment);
            (s.environment.clone(), figures(s, before, &q))
        })
        .collect();
    let expected =
        chima::messages::stats::report(&AppName::parse("trelhub").unwrap(), period, &rows);
    assert_eq!(
        reply.text,
        deploy_core::chat::slack::mrkdwn(&expected.message)
    );
    assert!(reply.text.contains("4 deploys"), "{}", reply.text);
    assert!(reply.text.contains("success rate 75%"), "{}", reply.text);
}

async fn a_web_action_is_carried_out_once_with_its_reply(backend: Backend) {
    // Deploys are allowed from #deployment only; the dashboard is no chat room.
    let Some(w) = World::start(backend, json!({"allowed_rooms": ["deployment"]})).await else {
        return;
    };
    w.deploy(JOYZ, "main").await;
    w.deploy(JOYZ, "feature").await;
    let store = w.store().await;
    let id = store
        .submit_web_action(
            "github:octocat",
            "octocat",
            "rollback trelhub in staging",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    w.clock.set(chrono::Utc::now());
    let report = w.bot.web_actions_step("chima-test").await.unwrap();
    assert_eq!(report.done, vec![id]);
    let action = store.web_action(id).await.unwrap().unwrap();
    assert_eq!(action.state, WebActionState::Done);
    let reply = action.reply.clone().unwrap();
    let run_key = action.run_key.clone().expect("the deployment it made");
    let made = number_after(&run_key, &format!("{REPO}/"));
    assert!(
        reply.contains(&format!(
            "Rollback #{made} of trelhub in staging to `{}`",
            short(&w.main)
        )),
        "{reply}"
    );
    assert!(
        reply.contains("trelhub in staging is now locked by octocat"),
        "{reply}"
    );
    let d = w.deployment(made);
    assert!(d["payload"].get("notify").is_none(), "no chat message: {d}");
    assert_eq!(d["payload"]["rollback"], mark(&w.feature, &w.main));
    assert_eq!(w.wait_final(made).await["state"], "success");
    let lock = store.env_lock("trelhub/staging").await.unwrap().unwrap();
    assert_eq!(lock.user, "github:octocat");
    assert_eq!(lock.thread, None, "no chat thread to remind in");
    assert!(
        w.audit()
            .await
            .iter()
            .any(|(a, who, _)| *a == AuditAction::Rollback && who == "github:octocat")
    );

    // Carried out once: the next step finds nothing.
    let count = w.deployments().len();
    let report = w.bot.web_actions_step("chima-test").await.unwrap();
    assert!(report.done.is_empty());
    assert_eq!(w.deployments().len(), count);

    // The unlock button's command, as the holder.
    let unlock = store
        .submit_web_action(
            "github:octocat",
            "octocat",
            "unlock trelhub in staging",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    w.bot.web_actions_step("chima-test").await.unwrap();
    let action = store.web_action(unlock).await.unwrap().unwrap();
    assert_eq!(action.state, WebActionState::Done);
    assert_eq!(action.run_key, None);
    assert!(
        action
            .reply
            .as_deref()
            .unwrap_or_default()
            .contains("unlocked"),
        "{action:?}"
    );
    assert_eq!(store.env_lock("trelhub/staging").await.unwrap(), None);
}

e2e::both_backends!(
    two_deploys_then_a_rollback_deploys_the_first_commit_locks_and_says_which,
    a_rollback_to_a_named_deployment_or_ref,
    nothing_to_roll_back_is_said_and_nothing_changes,
    a_locked_environment_refuses_someone_elses_rollback,
    a_rollback_into_a_protected_environment_goes_through_a_release_request,
    a_failed_deploy_is_rolled_back_automatically_once_in_its_thread,
    the_slack_button_rolls_back,
    stats_in_chat_are_the_stores_figures,
    a_web_action_is_carried_out_once_with_its_reply,
);
