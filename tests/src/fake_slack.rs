//! A stateful fake of the Slack Web API on loopback.
//!
//! Every call is checked against `../shared/fixtures/slack/web-api` where the method is
//! described there (required arguments, token in the `Authorization` header); a call that
//! fails the check is answered `invalid_arguments` and recorded, and the fake panics on drop
//! if any were. It keeps channels, users and messages (with their edits), can simulate rate
//! limits and an outage, and lets tests wait for a message to reach a state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::fixtures;

/// The bot token the fake accepts.
pub const BOT_TOKEN: &str = "xoxb-test-token";
/// The app-level token the fake accepts for Socket Mode.
pub const APP_TOKEN: &str = "xapp-test-token";
/// The bot's own user id.
pub const BOT_USER: &str = "UCHIMABOT";
/// The bot's bot id (as in `bot_id` of its messages).
pub const BOT_ID: &str = "BCHIMABOT";

/// What chima knows of a message from joyz (U2147483697) in the fake's `#deployment`
/// (C024BE91L), for driving its `Bot` without a transport.
pub fn deployment_room_context() -> chima::chat::ChatContext {
    chima::chat::ChatContext {
        adapter: "slack".into(),
        room_id: "C024BE91L".into(),
        room_name: "deployment".into(),
        user_id: "U2147483697".into(),
        user_name: "joyz".into(),
        message_id: Some("1355517523.000001".into()),
        thread_id: None,
        direct: false,
    }
}

/// Seconds since the Unix epoch: a fresh `X-Slack-Request-Timestamp` / `event_time`.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `v0=<hex>` signature of a request to a Slack app: HMAC-SHA256 of `v0:{timestamp}:{body}`
/// under the signing secret, as Slack signs what it sends.
pub fn sign_request(signing_secret: &str, timestamp: u64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(signing_secret.as_bytes()).expect("any key length");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// One Web API call as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Method name, e.g. `chat.postMessage`.
    pub method: String,
    /// Arguments, from the JSON body, form body or query string.
    pub args: Map<String, Value>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

/// A message in a channel, as it stands now.
#[derive(Debug, Clone)]
pub struct Message {
    /// Channel id.
    pub channel: String,
    /// Its `ts`.
    pub ts: String,
    /// The thread it was posted in, if any.
    pub thread_ts: Option<String>,
    /// Current text.
    pub text: String,
    /// Current blocks (JSON), if any.
    pub blocks: Value,
    /// Earlier texts, oldest first (one per `chat.update`).
    pub history: Vec<String>,
    /// True for `chat.postEphemeral` messages.
    pub ephemeral: bool,
    /// For ephemeral messages, who sees it.
    pub visible_to: Option<String>,
    /// True when posted through the Web API (by the bot), false when seeded by a test.
    pub from_api: bool,
}

#[derive(Debug, Default)]
struct Inner {
    channels: HashMap<String, (String, &'static str)>,
    users: HashMap<String, String>,
    /// User groups: id, handle, members.
    groups: Vec<(String, String, Vec<String>)>,
    messages: Vec<Message>,
    calls: Vec<Call>,
    violations: Vec<String>,
    next_ts: u64,
    rate_limited: u32,
    retry_after: u64,
    down: Option<StatusCode>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running fake; dropping it stops the server.
pub struct FakeSlack {
    shared: Shared,
    api_url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.server.abort();
        let violations = std::mem::take(&mut self.shared.lock().violations);
        if !violations.is_empty() && !std::thread::panicking() {
            panic!(
                "calls to the fake Slack broke the spec:\n{}",
                violations.join("\n")
            );
        }
    }
}

impl FakeSlack {
    /// Starts the fake with channels `#deployment` (C024BE91L), `#random` (C0RANDOM01),
    /// `#qa` (C0QA000001), a private `#ops` (G0OPS00001), a DM (D0DM000001) and users
    /// joyz (U2147483697), alice (U0ALICE001) and bob (U0BOB00001).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (changed, _) = watch::channel(0);
        let mut inner = Inner {
            next_ts: 1,
            ..Inner::default()
        };
        for (id, name, kind) in [
            ("C024BE91L", "deployment", "channel"),
            ("C0RANDOM01", "random", "channel"),
            ("C0QA000001", "qa", "channel"),
            ("G0OPS00001", "ops", "group"),
            ("D0DM000001", "", "im"),
        ] {
            inner
                .channels
                .insert(id.to_owned(), (name.to_owned(), kind));
        }
        for (id, name) in [
            ("U2147483697", "joyz"),
            ("U0ALICE001", "alice"),
            ("U0BOB00001", "bob"),
            (BOT_USER, "chima"),
        ] {
            inner.users.insert(id.to_owned(), name.to_owned());
        }
        let shared = Shared {
            inner: Arc::new(Mutex::new(inner)),
            changed: Arc::new(changed),
        };
        let app = Router::new()
            .route("/api/{method}", any(call))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            shared,
            api_url: format!("http://{addr}/api"),
            server,
        }
    }

    /// The base URL to give as `SLACK_API_URL` (ends in `/api`).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Adds (or renames) a user that `users.info` answers for.
    /// Adds a user group (`S…` id, `handle` without `@`) with its members.
    pub fn add_user_group(&self, id: &str, handle: &str, members: &[&str]) {
        self.shared.lock().groups.push((
            id.to_owned(),
            handle.to_owned(),
            members.iter().map(|m| (*m).to_owned()).collect(),
        ));
    }

    /// Adds (or renames) a user.
    pub fn add_user(&self, id: &str, name: &str) {
        self.shared
            .lock()
            .users
            .insert(id.to_owned(), name.to_owned());
    }

    /// Posts a message as a user would (for seeding threads); returns its `ts`.
    pub fn post_as_user(&self, channel: &str, text: &str) -> String {
        self.seed(channel, text, false)
    }

    /// Posts a message as the bot (e.g. the live message faseng will edit); returns its `ts`.
    pub fn post_as_bot(&self, channel: &str, text: &str) -> String {
        self.seed(channel, text, true)
    }

    fn seed(&self, channel: &str, text: &str, from_api: bool) -> String {
        let mut inner = self.shared.lock();
        let ts = next_ts(&mut inner);
        inner.messages.push(Message {
            channel: channel.to_owned(),
            ts: ts.clone(),
            thread_ts: None,
            text: text.to_owned(),
            blocks: Value::Null,
            history: Vec::new(),
            ephemeral: false,
            visible_to: None,
            from_api,
        });
        ts
    }

    /// All messages, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.lock().messages.clone()
    }

    /// The message at `channel` / `ts`.
    pub fn message(&self, channel: &str, ts: &str) -> Option<Message> {
        self.shared
            .lock()
            .messages
            .iter()
            .find(|m| m.channel == channel && m.ts == ts)
            .cloned()
    }

    /// Messages posted into a thread, oldest first.
    pub fn replies_in_thread(&self, channel: &str, thread_ts: &str) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| m.channel == channel && m.thread_ts.as_deref() == Some(thread_ts))
            .collect()
    }

    /// Every call received, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// Every text sent to be shown by a chat call (`chat.postMessage`, `chat.postEphemeral`,
    /// `chat.update`), oldest first: each call's `text` and every text object in its
    /// `blocks`.
    pub fn chat_texts(&self) -> Vec<String> {
        fn texts(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Array(a) => a.iter().for_each(|v| texts(v, out)),
                Value::Object(o) => {
                    for (k, v) in o {
                        match v {
                            Value::String(s) if k == "text" => out.push(s.clone()),
                            v => texts(v, out),
                        }
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        for call in self.calls() {
            if !matches!(
                call.method.as_str(),
                "chat.postMessage" | "chat.postEphemeral" | "chat.update"
            ) {
                continue;
            }
            if let Some(text) = call.args.get("text").and_then(Value::as_str) {
                out.push(text.to_owned());
            }
            match call.args.get("blocks") {
                Some(Value::String(encoded)) => texts(
                    &serde_json::from_str(encoded).unwrap_or(Value::Null),
                    &mut out,
                ),
                Some(blocks) => texts(blocks, &mut out),
                None => {}
            }
        }
        out
    }

    /// The next `n` calls answer 429 with `Retry-After: retry_after_secs`.
    pub fn rate_limit_next(&self, n: u32, retry_after_secs: u64) {
        let mut inner = self.shared.lock();
        inner.rate_limited = n;
        inner.retry_after = retry_after_secs;
    }

    /// While down, every call answers 503.
    pub fn set_down(&self, down: bool) {
        self.fail_with(down.then_some(503));
    }

    /// While `Some(status)`, every call answers that HTTP status (e.g. 500) with no Slack
    /// body, as a failing load balancer in front of Slack would; `None` ends the outage.
    /// Calls are still recorded, so a test can see what was attempted during the outage.
    pub fn fail_with(&self, status: Option<u16>) {
        self.shared.lock().down =
            status.map(|s| StatusCode::from_u16(s).expect("a valid HTTP status"));
    }

    /// Waits until `check` holds, or panics after `timeout`.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&FakeSlack) -> Option<T>,
    ) -> T {
        crate::wait::on_change(&self.shared.changed, timeout, what, || check(self)).await
    }

    /// Waits until the message at `channel` / `ts` contains `needle`; returns the message.
    pub async fn wait_for_text(
        &self,
        channel: &str,
        ts: &str,
        needle: &str,
        timeout: Duration,
    ) -> Message {
        self.wait_until(timeout, &format!("{channel}/{ts} to say {needle:?}"), |s| {
            s.message(channel, ts).filter(|m| m.text.contains(needle))
        })
        .await
    }

    /// Waits until a message posted through the API in the thread of `thread` contains
    /// `needle`; returns it.
    pub async fn wait_for_reply(
        &self,
        channel: &str,
        thread: &str,
        needle: &str,
        timeout: Duration,
    ) -> Message {
        let what = format!("a reply in {thread} saying {needle:?}");
        self.wait_until(timeout, &what, |s| {
            s.replies_in_thread(channel, thread)
                .into_iter()
                .find(|m| m.from_api && m.text.contains(needle))
        })
        .await
    }

    /// Waits until the fake was called with API method `method` (even while failing).
    pub async fn wait_for_call(&self, method: &str, timeout: Duration) {
        self.wait_until(timeout, &format!("a {method} call"), |s| {
            s.calls().iter().any(|c| c.method == method).then_some(())
        })
        .await;
    }

    /// Waits until `n` messages posted through the API exist; returns them.
    pub async fn wait_for_posts(&self, n: usize, timeout: Duration) -> Vec<Message> {
        self.wait_until(timeout, &format!("{n} posted messages"), |s| {
            let posted: Vec<Message> = s.messages().into_iter().filter(|m| m.from_api).collect();
            (posted.len() >= n).then_some(posted)
        })
        .await
    }
}

fn next_ts(inner: &mut Inner) -> String {
    inner.next_ts += 1;
    format!("1700000000.{:06}", inner.next_ts)
}

fn parse_args(headers: &HeaderMap, uri: &Uri, body: &Bytes) -> Map<String, Value> {
    let mut args = Map::new();
    if let Some(q) = uri.query() {
        for (k, v) in url_pairs(q) {
            args.insert(k, Value::String(v));
        }
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/json") {
        if let Ok(Value::Object(map)) = serde_json::from_slice(body) {
            args.extend(map);
        }
    } else if let Ok(text) = std::str::from_utf8(body) {
        for (k, v) in url_pairs(text) {
            // Slack form bodies carry JSON-valued arguments (blocks) as strings.
            let value = if k == "blocks" {
                serde_json::from_str(&v).unwrap_or(Value::String(v))
            } else {
                Value::String(v)
            };
            args.insert(k, value);
        }
    }
    args
}

fn url_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a call against the Web API spec: required arguments and the token.
fn check_against_spec(
    method: &str,
    args: &Map<String, Value>,
    authorization: Option<&str>,
) -> Vec<String> {
    let Some(paths) = fixtures::slack_web_api().get("paths") else {
        return vec!["spec has no paths".into()];
    };
    let Some(ops) = paths.get(format!("/{method}")) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for (http_method, op) in ops.as_object().into_iter().flatten() {
        let _ = http_method;
        for param in op["parameters"].as_array().into_iter().flatten() {
            let name = param["name"].as_str().unwrap_or_default();
            let required = param["required"].as_bool().unwrap_or(false);
            if name == "token" {
                if required && authorization.is_none() && !args.contains_key("token") {
                    problems.push(format!("{method}: no token"));
                }
                continue;
            }
            if required && !args.contains_key(name) {
                problems.push(format!("{method}: missing required argument {name}"));
            }
        }
    }
    problems
}

/// Checks a chat call's `blocks` against the Web API description's `blocks` definition, and
/// each button in them against what Block Kit takes (a plain-text label, an action id, a value
/// of at most 2000 characters).
fn check_blocks(method: &str, args: &Map<String, Value>) -> Vec<String> {
    let Some(blocks) = args.get("blocks") else {
        return Vec::new();
    };
    let blocks = match blocks {
        Value::String(encoded) => match serde_json::from_str(encoded) {
            Ok(v) => v,
            Err(e) => return vec![format!("{method}: blocks are not JSON: {e}")],
        },
        v => v.clone(),
    };
    let mut problems: Vec<String> = fixtures::check_slack_definition("blocks", &blocks)
        .err()
        .into_iter()
        .flatten()
        .map(|e| format!("{method}: blocks: {e}"))
        .collect();
    for block in blocks.as_array().into_iter().flatten() {
        if block["type"] != "actions" {
            continue;
        }
        for button in block["elements"].as_array().into_iter().flatten() {
            let ok = button["type"] == "button"
                && button["text"]["type"] == "plain_text"
                && button["text"]["text"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty() && t.chars().count() <= 75)
                && button["action_id"]
                    .as_str()
                    .is_some_and(|a| !a.is_empty() && a.len() <= 255)
                && button["value"]
                    .as_str()
                    .is_none_or(|v| v.chars().count() <= 2000);
            if !ok {
                problems.push(format!("{method}: not a Block Kit button: {button}"));
            }
        }
    }
    problems
}

/// Checks that a chat call does not ask Slack to turn plain `@channel`, `@name` or `#room`
/// into mentions (`link_names`, `parse=full`): faseng and chima escape what they quote, and
/// either option would undo that.
fn check_no_mention_parsing(method: &str, args: &Map<String, Value>) -> Vec<String> {
    if !method.starts_with("chat.") {
        return Vec::new();
    }
    let truthy = |v: &Value| match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64() != Some(0),
        Value::String(s) => !matches!(s.as_str(), "" | "0" | "false"),
        _ => false,
    };
    let mut problems = Vec::new();
    if args.get("link_names").is_some_and(truthy) {
        problems.push(format!(
            "{method}: link_names turns @channel text into a ping"
        ));
    }
    if args.get("parse").and_then(Value::as_str) == Some("full") {
        problems.push(format!(
            "{method}: parse=full turns @channel text into a ping"
        ));
    }
    problems
}

fn ok(mut body: Value) -> Response {
    body["ok"] = json!(true);
    axum::Json(body).into_response()
}

fn fail(error: &str) -> Response {
    axum::Json(json!({"ok": false, "error": error})).into_response()
}

async fn call(
    State(shared): State<Shared>,
    Path(method): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let mut args = parse_args(&headers, &uri, &body);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = handle(&shared, &method, &mut args, authorization.as_deref());
    shared.lock().calls.push(Call {
        method,
        args,
        authorization,
    });
    shared.changed.send_modify(|n| *n += 1);
    response
}

fn handle(
    shared: &Shared,
    method: &str,
    args: &mut Map<String, Value>,
    authorization: Option<&str>,
) -> Response {
    let mut inner = shared.lock();
    if let Some(status) = inner.down {
        return (status, "upstream unavailable").into_response();
    }
    if inner.rate_limited > 0 {
        inner.rate_limited -= 1;
        let retry_after = inner.retry_after.to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after)],
            axum::Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response();
    }
    let mut problems = check_against_spec(method, args, authorization);
    problems.extend(check_no_mention_parsing(method, args));
    problems.extend(check_blocks(method, args));
    if !problems.is_empty() {
        inner.violations.extend(problems);
        return fail("invalid_arguments");
    }
    let token = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| args.get("token").and_then(Value::as_str).map(str::to_owned));
    let expected = if method == "apps.connections.open" {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    if token.as_deref() != Some(expected) {
        return fail(if token.is_none() {
            "not_authed"
        } else {
            "invalid_auth"
        });
    }
    let arg = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
    match method {
        "auth.test" => {
            let mut body = fixtures::json("slack/shape-samples/api/auth.test.json");
            body["user_id"] = json!(BOT_USER);
            body["user"] = json!("chima");
            body["bot_id"] = json!(BOT_ID);
            body["error"] = json!(null);
            ok(strip_errors(body))
        }
        "conversations.info" => {
            let Some(channel) = arg("channel") else {
                return fail("channel_not_found");
            };
            let Some((name, kind)) = inner.channels.get(&channel).cloned() else {
                return fail("channel_not_found");
            };
            let mut body = fixtures::json("slack/shape-samples/api/conversations.info.json");
            let c = &mut body["channel"];
            c["id"] = json!(channel);
            c["name"] = json!(name);
            c["name_normalized"] = json!(name);
            c["is_channel"] = json!(kind == "channel");
            c["is_group"] = json!(kind == "group");
            c["is_private"] = json!(kind == "group");
            c["is_im"] = json!(kind == "im");
            c["is_mpim"] = json!(false);
            if kind == "im" {
                c["user"] = json!("U2147483697");
            }
            ok(strip_errors(body))
        }
        "users.info" => {
            let Some(user) = arg("user") else {
                return fail("user_not_found");
            };
            let Some(name) = inner.users.get(&user).cloned() else {
                return fail("user_not_found");
            };
            ok(json!({"user": {"id": user, "name": name, "real_name": name,
                               "profile": {"display_name": name, "real_name": name},
                               "is_bot": user == BOT_USER}}))
        }
        "apps.connections.open" => ok(json!({"url": "ws://127.0.0.1:9/socket-mode"})),
        // Slack's documented usergroups.list answer (https://api.slack.com/methods/usergroups.list);
        // members only with include_users=true, as Slack does.
        "usergroups.list" => {
            let with_users = arg("include_users").as_deref() == Some("true");
            let groups: Vec<Value> = inner
                .groups
                .iter()
                .map(|(id, handle, members)| {
                    let mut g = json!({"id": id, "team_id": "T0001", "is_usergroup": true,
                        "is_subteam": true, "name": handle, "description": "", "handle": handle,
                        "is_external": false, "date_create": 1446746793, "date_update": 1446746793,
                        "date_delete": 0, "auto_type": null, "created_by": "U060RNRCZ",
                        "updated_by": "U060RNRCZ", "deleted_by": null,
                        "prefs": {"channels": [], "groups": []}, "user_count": members.len()});
                    if with_users {
                        g["users"] = json!(members);
                    }
                    g
                })
                .collect();
            ok(json!({"usergroups": groups}))
        }
        "chat.postMessage" | "chat.postEphemeral" => {
            let Some(channel) = arg("channel") else {
                return fail("channel_not_found");
            };
            // A user's id as the channel posts in the bot's direct messages with them (as
            // Slack does for chat.postMessage); ephemeral messages need a real channel.
            let direct = method == "chat.postMessage" && inner.users.contains_key(&channel);
            if !inner.channels.contains_key(&channel) && !direct {
                return fail("channel_not_found");
            }
            let text = arg("text").unwrap_or_default();
            let blocks = args.get("blocks").cloned().unwrap_or(Value::Null);
            if text.is_empty() && blocks.is_null() {
                return fail("no_text");
            }
            let ts = next_ts(&mut inner);
            let ephemeral = method == "chat.postEphemeral";
            inner.messages.push(Message {
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts: arg("thread_ts"),
                text: text.clone(),
                blocks: blocks.clone(),
                history: Vec::new(),
                ephemeral,
                visible_to: arg("user"),
                from_api: true,
            });
            if ephemeral {
                return ok(json!({"message_ts": ts}));
            }
            ok(json!({"channel": channel, "ts": ts,
                      "message": {"type": "message", "subtype": "bot_message", "text": text,
                                  "ts": ts, "bot_id": BOT_ID, "user": BOT_USER}}))
        }
        "chat.update" => {
            let (Some(channel), Some(ts)) = (arg("channel"), arg("ts")) else {
                return fail("invalid_arguments");
            };
            let text = arg("text").unwrap_or_default();
            let blocks = args.get("blocks").cloned();
            let Some(message) = inner
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
            else {
                return fail("message_not_found");
            };
            let old = std::mem::replace(&mut message.text, text.clone());
            message.history.push(old);
            if let Some(b) = blocks {
                message.blocks = b;
            }
            ok(json!({"channel": channel, "ts": ts, "text": text,
                      "message": {"text": text, "user": BOT_USER}}))
        }
        _ => fail("unknown_method"),
    }
}

/// The shape samples carry every optional field, including `error`; a success has none.
fn strip_errors(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        for key in ["error", "warning", "needed", "provided"] {
            map.remove(key);
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_are_decoded() {
        assert_eq!(
            url_pairs("channel=C1&text=hello+world%21&x="),
            vec![
                ("channel".into(), "C1".into()),
                ("text".into(), "hello world!".into()),
                ("x".into(), String::new())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn asking_slack_to_parse_mentions_is_a_violation() {
        let args = |v: Value| v.as_object().unwrap().clone();
        for bad in [
            json!({"link_names": true}),
            json!({"link_names": "1"}),
            json!({"parse": "full"}),
        ] {
            assert_eq!(
                check_no_mention_parsing("chat.postMessage", &args(bad)).len(),
                1
            );
        }
        for fine in [
            json!({"link_names": false}),
            json!({"link_names": "0"}),
            json!({"parse": "none"}),
            json!({}),
        ] {
            assert!(check_no_mention_parsing("chat.update", &args(fine)).is_empty());
        }
    }

    #[test]
    fn blocks_are_checked_against_the_spec() {
        let args = |v: Value| v.as_object().unwrap().clone();
        let button = json!({"type": "button", "text": {"type": "plain_text", "text": "Roll back"},
                            "action_id": "rollback", "value": "{\"c\":\"x\"}"});
        let good = json!({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}},
                                     {"type": "actions", "elements": [button]}]});
        assert!(check_blocks("chat.update", &args(good.clone())).is_empty());
        let encoded = json!({"blocks": good["blocks"].to_string()});
        assert!(check_blocks("chat.update", &args(encoded)).is_empty());
        for bad in [
            json!({"blocks": [{"text": "no type"}]}),
            json!({"blocks": {"type": "section"}}),
            json!({"blocks": [{"type": "actions", "elements": [{"type": "button", "text": "plain"}]}]}),
            json!({"blocks": "[not json"}),
        ] {
            assert!(
                !check_blocks("chat.postMessage", &args(bad.clone())).is_empty(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_spec_requires_channel_and_ts_for_updates() {
        let args = Map::new();
        let problems = check_against_spec("chat.update", &args, Some("Bearer x"));
        assert_eq!(
            problems,
            vec![
                "chat.update: missing required argument channel",
                "chat.update: missing required argument ts"
            ]
        );
    }
}
