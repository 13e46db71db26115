//! Chat notification: keep the message that started a deployment up to date. A trait, so
//! other adapters can be added; the Slack implementation speaks the Web API over plain HTTP.

use std::time::Duration;

use async_trait::async_trait;
use deploy_core::chat::Message;
use deploy_core::{Notify, Secret};
use serde_json::{Value, json};

/// A chat call the chat service refused (bad channel, unknown message, revoked token):
/// sending it again will not help. Other errors (5xx, timeouts, connection failures) may pass.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ChatRefused(pub String);

/// True when `e` is a [`ChatRefused`] (not worth retrying).
pub fn is_permanent(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ChatRefused>().is_some()
}

/// The chat service is rate limiting us: try again after `wait`, not before.
#[derive(Debug, thiserror::Error)]
#[error("{message} (rate limited for {wait:?})")]
pub struct ChatRateLimited {
    /// How long the chat service asks to wait.
    pub wait: Duration,
    /// What was refused.
    pub message: String,
}

/// How long the chat service asks us to wait, when `e` is a [`ChatRateLimited`].
pub fn retry_after(e: &anyhow::Error) -> Option<Duration> {
    e.downcast_ref::<ChatRateLimited>().map(|r| r.wait)
}

/// The longest `Retry-After` a chat call waits out in place; a longer one is handed back
/// to the caller as [`ChatRateLimited`] (the outbox reschedules the message).
const WAIT_IN_PLACE: u64 = 5;

/// Slack error codes that say "try again later" rather than "this call is wrong".
const SLACK_TEMPORARY: &[&str] = &[
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// A chat service faseng can update.
#[async_trait]
pub trait ChatNotifier: Send + Sync + 'static {
    /// True when this notifier handles `notify` (adapter and credentials present).
    fn handles(&self, notify: &Notify) -> bool;
    /// `message` as this chat service takes it (what the outbox stores and `upsert` and
    /// `reply` are given); plain text unless the service has markup of its own.
    fn render(&self, message: &Message) -> String {
        deploy_core::chat::plain::render(message)
    }
    /// Replaces the text of message `ts` in `notify.room`, or posts a new message when `ts`
    /// is `None`; returns the message's ts.
    async fn upsert(&self, notify: &Notify, ts: Option<&str>, text: &str)
    -> anyhow::Result<String>;
    /// Posts `text` in the thread of message `ts`.
    async fn reply(&self, notify: &Notify, ts: &str, text: &str) -> anyhow::Result<()>;
    /// The name of the room `notify.room` names (an id), to match an app's `allowed_rooms`.
    async fn room_name(&self, notify: &Notify) -> anyhow::Result<String>;
}

/// True when faseng may speak in `notify`'s room for an app whose `allowed_rooms` is
/// `allowed` (`None`: every room): the room's id, or its name as the chat service tells it
/// (never the payload's `room_name`, which anyone creating a deployment can write), is listed.
/// A name that cannot be learnt allows nothing.
pub async fn room_allowed(
    notifier: &dyn ChatNotifier,
    allowed: Option<&[String]>,
    notify: &Notify,
) -> bool {
    let Some(allowed) = allowed else {
        return true;
    };
    let listed = |room: &str| {
        allowed
            .iter()
            .any(|a| a.trim_start_matches('#').eq_ignore_ascii_case(room))
    };
    if listed(&notify.room) {
        return true;
    }
    match notifier.room_name(notify).await {
        Ok(name) => listed(&name),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), room = %notify.room, "could not learn the room's name; not posting there");
            false
        }
    }
}

/// Slack Web API (`chat.update`, `chat.postMessage`) with a bot token.
#[derive(Debug, Clone)]
pub struct SlackNotifier {
    http: reqwest::Client,
    api_url: String,
    token: Secret,
    max_attempts: u32,
    /// Room names learnt from `conversations.info`, by id (a channel's id never changes;
    /// a renamed channel keeps its old name here until faseng restarts).
    room_names: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

impl SlackNotifier {
    /// A notifier for `api_url` (`https://slack.com/api` or a fake) and a bot token.
    pub fn new(api_url: &str, token: Secret) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("reqwest client"),
            api_url: api_url.trim_end_matches('/').to_owned(),
            token,
            max_attempts: 4,
            room_names: Default::default(),
        }
    }

    async fn call(&self, method: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}/{method}", self.api_url);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self
                .http
                .post(&url)
                .bearer_auth(self.token.expose())
                .json(&body)
                .send()
                .await;
            let retry_after = match resp {
                Ok(r) if r.status().as_u16() == 429 => {
                    let wait = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(1);
                    if wait > WAIT_IN_PLACE || attempt >= self.max_attempts {
                        return Err(ChatRateLimited {
                            wait: Duration::from_secs(wait),
                            message: format!("slack {method} answered 429"),
                        }
                        .into());
                    }
                    wait
                }
                Ok(r) if r.status().is_server_error() => 1,
                Ok(r) => {
                    let status = r.status();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    if v["ok"] == true {
                        return Ok(v);
                    }
                    let code = v["error"].as_str().unwrap_or("no error code");
                    let message = format!("slack {method} answered {status}: {code}");
                    if SLACK_TEMPORARY.contains(&code) {
                        anyhow::bail!(message);
                    }
                    return Err(ChatRefused(message).into());
                }
                Err(e) if attempt < self.max_attempts => {
                    tracing::debug!(error = %e, "slack {method} failed; retrying");
                    1
                }
                Err(e) => return Err(e.into()),
            };
            if attempt >= self.max_attempts {
                anyhow::bail!("slack {method} still failing after {attempt} attempts");
            }
            tokio::time::sleep(Duration::from_secs(retry_after)).await;
        }
    }
}

#[async_trait]
impl ChatNotifier for SlackNotifier {
    fn handles(&self, notify: &Notify) -> bool {
        notify.adapter.eq_ignore_ascii_case("slack") && !notify.room.is_empty()
    }

    fn render(&self, message: &Message) -> String {
        deploy_core::chat::slack::mrkdwn(message)
    }

    async fn upsert(
        &self,
        notify: &Notify,
        ts: Option<&str>,
        text: &str,
    ) -> anyhow::Result<String> {
        match ts {
            Some(ts) => {
                self.call(
                    "chat.update",
                    json!({"channel": notify.room, "ts": ts, "text": text}),
                )
                .await?;
                Ok(ts.to_owned())
            }
            None => {
                let mut body = json!({"channel": notify.room, "text": text});
                if let Some(thread) = &notify.thread_ts {
                    body["thread_ts"] = json!(thread);
                }
                let v = self.call("chat.postMessage", body).await?;
                v["ts"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow::anyhow!("slack chat.postMessage returned no ts"))
            }
        }
    }

    async fn reply(&self, notify: &Notify, ts: &str, text: &str) -> anyhow::Result<()> {
        self.call(
            "chat.postMessage",
            json!({"channel": notify.room, "thread_ts": ts, "text": text}),
        )
        .await
        .map(drop)
    }

    async fn room_name(&self, notify: &Notify) -> anyhow::Result<String> {
        if let Some(name) = self
            .room_names
            .lock()
            .expect("room names")
            .get(&notify.room)
        {
            return Ok(name.clone());
        }
        let v = self
            .call("conversations.info", json!({"channel": notify.room}))
            .await?;
        let name = v["channel"]["name"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("slack conversations.info returned no name"))?
            .to_owned();
        self.room_names
            .lock()
            .expect("room names")
            .insert(notify.room.clone(), name.clone());
        Ok(name)
    }
}

/// The notifier used when no chat token is configured: it handles nothing.
#[derive(Debug, Clone, Default)]
pub struct NoChat;

#[async_trait]
impl ChatNotifier for NoChat {
    fn handles(&self, _: &Notify) -> bool {
        false
    }
    async fn upsert(&self, _: &Notify, _: Option<&str>, _: &str) -> anyhow::Result<String> {
        anyhow::bail!("no chat configured")
    }
    async fn reply(&self, _: &Notify, _: &str, _: &str) -> anyhow::Result<()> {
        anyhow::bail!("no chat configured")
    }
    async fn room_name(&self, _: &Notify) -> anyhow::Result<String> {
        anyhow::bail!("no chat configured")
    }
}
