//! The hostile input corpus (`e2e::hostile`) driven through the real chima handlers against
//! the fake GitHub, and as correctly signed `deployment` webhooks through faseng in process:
//! nothing panics, every refusal says what is wrong, no hostile chat line reaches GitHub, no
//! injection ever runs (a canary file is never created), faseng keeps serving, and nothing a
//! deployment carries (ref, user name, output, environment, lock reason) becomes a ping, a
//! mention or a link in chat.

use std::collections::BTreeSet;
use std::path::Path;

use chima::chat::{RecordingOutbox, Tone};
use e2e::chat::Chat;
use e2e::fake_github::TOKEN;
use e2e::harness::{Backend, Env, Options, REPO, SECRET, scratch};
use e2e::hostile::{self, Category, Edit, Verdict, WebhookCase};
use serde_json::{Value, json};

/// A directory for the canary whose path has no `.` component and no whitespace, so that
/// refs built from it are refused only for what they are meant to test.
fn canary_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("canary")
        .tempdir_in("/tmp")
        .unwrap();
    let path = dir.path().display().to_string();
    assert!(
        !path.contains("/.") && !path.contains(char::is_whitespace),
        "{path}"
    );
    dir
}

#[test]
fn the_corpus_is_large_and_covers_every_category() {
    let canary = "/tmp/canary/pwned";
    let chat = hostile::chat_cases(canary);
    let hooks = hostile::webhook_cases(canary);
    assert!(chat.len() + hooks.len() >= 50);
    let covered: BTreeSet<Category> = chat
        .iter()
        .map(|c| c.category)
        .chain(hooks.iter().map(|c| c.category))
        .collect();
    for category in [
        Category::ShellMetacharacters,
        Category::OptionInjection,
        Category::PathTraversal,
        Category::UnicodeConfusables,
        Category::ControlCharacters,
        Category::Huge,
        Category::DeepNesting,
        Category::WrongTypes,
        Category::MissingFields,
        Category::DuplicateKeys,
        Category::InvalidUtf8,
        Category::Markup,
    ] {
        assert!(covered.contains(&category), "{category:?} has no case");
    }
    let chat_names: BTreeSet<&str> = chat.iter().map(|c| c.name).collect();
    let hook_names: BTreeSet<&str> = hooks.iter().map(|c| c.name).collect();
    assert_eq!(chat_names.len(), chat.len(), "chat case names are unique");
    assert_eq!(
        hook_names.len(),
        hooks.len(),
        "webhook case names are unique"
    );
}

#[tokio::test]
async fn chima_refuses_every_hostile_command_clearly_and_github_hears_nothing() {
    let Chat { gh, bot, .. } = Chat::new().await;
    gh.add_repo("oursky/chima", "main");
    let canary_dir = canary_dir();
    let canary = canary_dir.path().join("pwned");
    let cases = hostile::chat_cases(&canary.display().to_string());
    for case in &cases {
        let mut outbox = RecordingOutbox::default();
        let results = bot
            .handle_message(
                &case.text,
                false,
                &e2e::fake_slack::deployment_room_context(),
                &mut outbox,
            )
            .await;
        let name = case.name;
        assert!(
            results.is_empty(),
            "{name}: a deployment was attempted: {results:?}"
        );
        let replies = outbox.messages;
        assert!(!replies.is_empty(), "{name}: no reply");
        for reply in &replies {
            let text = &reply.text();
            assert_eq!(reply.tone(), Tone::Error, "{name}: not a refusal: {text}");
            assert!(
                !text.trim().is_empty() && text.len() < 4096,
                "{name}: empty or huge reply ({} bytes)",
                text.len()
            );
            assert!(!text.contains(TOKEN), "{name}: the token leaked: {text}");
            assert!(
                !text
                    .chars()
                    .any(|c| (c.is_control() && c != '\n') || deploy_core::is_invisible(c)),
                "{name}: raw control or invisible character echoed: {text:?}"
            );
        }
        assert!(
            replies.iter().any(|r| r.text().contains(case.says)),
            "{name}: the refusal does not say {:?}: {:?}",
            case.says,
            replies.iter().map(|r| r.text()).collect::<Vec<_>>()
        );
        let requests = gh.requests();
        assert!(
            requests.is_empty(),
            "{name}: GitHub was asked: {:?}",
            requests
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect::<Vec<_>>()
        );
    }
    assert!(!canary.exists(), "a hostile command was executed");

    // The same bot and fake do create a deployment for a good command: the silence above
    // is the refusals' doing, not the set-up's.
    let mut outbox = RecordingOutbox::default();
    let results = bot
        .handle_message(
            "chima deploy trelhub/main to pandawork",
            false,
            &e2e::fake_slack::deployment_room_context(),
            &mut outbox,
        )
        .await;
    assert_eq!(results.len(), 1, "{:?}", outbox.messages);
    assert_eq!(gh.deployments("oursky/trelhub").len(), 1);
}

/// The body of `base` changed by `edit`.
fn apply(base: &[u8], edit: &Edit) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(base).unwrap();
    match edit {
        Edit::Set(pointer, new) => {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            match value.pointer_mut(parent) {
                Some(Value::Object(o)) => {
                    o.insert(key.to_owned(), new.clone());
                }
                _ => panic!("{parent} is not an object in the body"),
            }
            serde_json::to_vec(&value).unwrap()
        }
        Edit::Remove(pointer) => {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let removed = value
                .pointer_mut(parent)
                .and_then(Value::as_object_mut)
                .and_then(|o| o.remove(key));
            assert!(removed.is_some(), "{pointer} is not in the body");
            serde_json::to_vec(&value).unwrap()
        }
        Edit::Splice { find, with } => {
            let text = serde_json::to_vec(&value).unwrap();
            let at = text
                .windows(find.len())
                .position(|w| w == find.as_bytes())
                .unwrap_or_else(|| panic!("{find} is not in the body"));
            let mut out = text[..at].to_vec();
            out.extend_from_slice(with);
            out.extend_from_slice(&text[at + find.len()..]);
            out
        }
        Edit::SetRaw(pointer, raw) => {
            const HOLE: &str = "\"hostile-placeholder\"";
            let with_hole = apply(base, &Edit::Set(pointer, json!("hostile-placeholder")));
            let at = with_hole
                .windows(HOLE.len())
                .position(|w| w == HOLE.as_bytes())
                .unwrap();
            let mut out = with_hole[..at].to_vec();
            out.extend_from_slice(raw);
            out.extend_from_slice(&with_hole[at + HOLE.len()..]);
            out
        }
        Edit::Body(bytes) => bytes.clone(),
    }
}

/// Headers of the fake's delivery with a fresh delivery id and the signature of `body`.
fn signed(headers: &[(String, String)], body: &[u8], delivery: &str) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| match k.as_str() {
            "x-github-delivery" => (k.clone(), delivery.to_owned()),
            "x-hub-signature-256" => (k.clone(), faseng::webhook::sign(SECRET.as_bytes(), body)),
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

/// The deploy script: records what it was given, byte for byte, and touches nothing else.
const SCRIPT: &str = "for v in DEPLOY_REF DEPLOY_TASK DEPLOY_APP DEPLOY_USER; do\n\
                      printenv \"$v\" > \"$SCRATCH/$v-$DEPLOY_ID\"\n\
                      done\n\
                      echo deployed";

async fn run_case(env: &Env, index: usize, case: &WebhookCase, scratch_dir: &Path) {
    let name = case.name;
    let (d, headers, base) = env.deployment_and_webhook("edge", "deploy", "joyz").await;
    let id = d["id"].as_u64().unwrap();
    // Hostile webhooks come from outside chat: no desk ticket, their creator deploys.
    let base = apply(&base, &Edit::Remove("/deployment/payload/desk_ticket"));
    let body = apply(&base, &case.edit);
    let headers = signed(&headers, &body, &format!("hostile-{index}"));
    let code = env.post_webhook(&headers, body).await;
    let page = e2e::log_links::page(&env.queue_url, &env.url, REPO, id).await;
    match &case.verdict {
        Verdict::Refused(expected) => {
            assert_eq!(code, *expected, "{name}: HTTP status");
            assert_eq!(
                env.get(&page).await.0,
                404,
                "{name}: a refused delivery was recorded"
            );
            assert!(
                env.gh.statuses(id).is_empty(),
                "{name}: statuses were posted"
            );
        }
        Verdict::RunError(says) => {
            assert_eq!(code, 202, "{name}: HTTP status");
            let s = env.wait_final(id).await;
            let description = s["description"].as_str().unwrap_or_default();
            assert_eq!(s["state"], "error", "{name}: {s}");
            assert!(
                description.contains(says),
                "{name}: the error does not say {says:?}: {description}"
            );
            assert!(
                !std::fs::exists(scratch_dir.join(format!("DEPLOY_REF-{id}"))).unwrap(),
                "{name}: the deploy script ran"
            );
        }
        Verdict::Runs | Verdict::Verbatim { .. } => {
            assert_eq!(code, 202, "{name}: HTTP status");
            let s = env.wait_final(id).await;
            assert_eq!(s["state"], "success", "{name}: {s}");
            if let Verdict::Verbatim { var, value } = &case.verdict {
                let seen = std::fs::read(scratch_dir.join(format!("{var}-{id}"))).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&seen),
                    format!("{value}\n"),
                    "{name}: {var} did not arrive verbatim"
                );
            }
            let (code, html) = env.get(&page).await;
            assert_eq!(code, 200, "{name}");
            assert!(
                !html.contains("<script>alert") && !html.contains("<img src=x"),
                "{name}: markup echoed raw into the page"
            );
        }
    }
    assert_eq!(env.get("/healthz").await.0, 200, "{name}: faseng is unwell");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faseng_refuses_or_contains_every_hostile_webhook_and_keeps_serving() {
    let opts = Options {
        script: SCRIPT.into(),
        ..Options::default()
    };
    let env = Env::start(Backend::Sqlite, opts)
        .await
        .expect("SQLite needs no server");
    let canary_dir = canary_dir();
    let canary = canary_dir.path().join("pwned");
    let scratch_dir = scratch(env.dir.path(), "");
    let cases = hostile::webhook_cases(&canary.display().to_string());
    for (index, case) in cases.iter().enumerate() {
        run_case(&env, index, case, &scratch_dir).await;
        assert!(
            !canary.exists(),
            "{}: a hostile value was executed",
            case.name
        );
    }
    // The next good delivery is served as usual.
    let (id, _) = env.deploy("edge", "deploy", "joyz").await;
    let s = env.wait_final(id).await;
    assert_eq!(s["state"], "success", "{s}");
    assert_eq!(
        std::fs::read_to_string(scratch_dir.join(format!("DEPLOY_REF-{id}"))).unwrap(),
        "main\n"
    );
    assert!(!canary.exists(), "a hostile value was executed");
}

/// Mrkdwn that pings everyone in the room if quoted raw (a legal git ref, too).
const PING: &str = "<!channel>";
/// Mrkdwn that shows `y` and links elsewhere if quoted raw.
const LINK: &str = "<https://x|y>";

/// `text` without faseng's own links to its log pages (`<{faseng}/deployments/…|log>`).
fn without_log_links(text: &str, faseng_url: &str) -> String {
    let start = format!("<{faseng_url}/deployments/");
    let mut rest = text;
    let mut out = String::new();
    while let Some(at) = rest.find(&start) {
        let Some(len) = rest[at..].find("|log>") else {
            break;
        };
        out.push_str(&rest[..at]);
        rest = &rest[at + len + "|log>".len()..];
    }
    out.push_str(rest);
    out
}

/// Sends the webhook of a deployment by `user` of `task` to `edge`, changed by `edits`, and
/// waits for its final status; returns it and the chat message's ts.
async fn deliver(
    env: &Env,
    delivery: &str,
    task: &str,
    user: &str,
    edits: &[Edit],
) -> (Value, String) {
    let (d, headers, mut body) = env.deployment_and_webhook("edge", task, user).await;
    for edit in edits {
        body = apply(&body, edit);
    }
    let headers = signed(&headers, &body, delivery);
    assert_eq!(env.post_webhook(&headers, body).await, 202);
    let ts = d["payload"]["notify"]["message_ts"]
        .as_str()
        .unwrap()
        .to_owned();
    (env.wait_final(d["id"].as_u64().unwrap()).await, ts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_a_deployment_carries_becomes_a_ping_mention_or_link_in_chat() {
    let opts = Options {
        script: format!("echo 'deploying {PING} {LINK} <@U123> <#C1|x> &amp;'\nexit 1"),
        ..Options::default()
    };
    let env = Env::start(Backend::Sqlite, opts)
        .await
        .expect("SQLite needs no server");
    let user = format!("{PING} {LINK}");

    let (failed, ts) = deliver(
        &env,
        "chat-failure",
        "deploy",
        &user,
        &[Edit::Set("/deployment/ref", json!(PING))],
    )
    .await;
    assert_eq!(failed["state"], "failure", "{failed}");
    let tail = env
        .slack
        .wait_until(e2e::harness::WAIT, "the failure's log tail", |s| {
            s.replies_in_thread(e2e::harness::ROOM, &ts)
                .into_iter()
                .find(|m| m.text.contains("log lines"))
        })
        .await;
    assert!(
        tail.text.contains(
            "deploying &lt;!channel&gt; &lt;https://x|y&gt; &lt;@U123&gt; &lt;#C1|x&gt; &amp;amp;"
        ),
        "{}",
        tail.text
    );

    let (bad_env, ts) = deliver(
        &env,
        "chat-environment",
        "deploy",
        &user,
        &[Edit::Set("/deployment/environment", json!("<!here>"))],
    )
    .await;
    assert_eq!(bad_env["state"], "error", "{bad_env}");
    env.slack
        .wait_for_text(e2e::harness::ROOM, &ts, "has errors", e2e::harness::WAIT)
        .await;

    let (locked, ts) = deliver(
        &env,
        "chat-lock",
        "deploy:lock",
        &user,
        &[Edit::Set("/deployment/description", json!(LINK))],
    )
    .await;
    assert_eq!(locked["state"], "success", "{locked}");
    env.slack
        .wait_for_text(e2e::harness::ROOM, &ts, ":lock:", e2e::harness::WAIT)
        .await;

    let texts = env.slack.chat_texts();
    for text in &texts {
        let quoted = without_log_links(text, &env.url);
        assert!(
            !quoted.contains(['<', '>']),
            "faseng sent markup it did not write: {text}"
        );
    }
    let all = texts.join("\n");
    for shown in [
        "&lt;!channel&gt; &lt;https://x|y&gt; is deploying trelhub/&lt;!channel&gt;",
        "&lt;!channel&gt; &lt;https://x|y&gt;'s deployment of trelhub/&lt;!channel&gt;",
        "environment \"&lt;!here&gt;\"",
        ":lock: trelhub locked on edge by &lt;!channel&gt; &lt;https://x|y&gt;",
    ] {
        assert!(all.contains(shown), "chat never showed {shown:?}:\n{all}");
    }
    assert!(
        all.contains(&format!("<{}/deployments/{REPO}/", env.url)),
        "faseng's own log link is a link"
    );
}
