//! Chat notification: keep the message that started a deployment up to date. A trait, so
//! other adapters can be added; [`Notifiers`] picks one by the payload's `notify.adapter`.
//! The Slack implementation speaks the Web API through slack-morphism, as chima does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::chat::Message;
use deploy_core::{Notify, Secret};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

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
    /// `message` as this chat service takes it for `notify` (what the outbox stores and
    /// `upsert` and `reply` are given); plain text unless the service has markup of its own.
    fn render(&self, _notify: &Notify, message: &Message) -> String {
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

/// A Slack message with buttons as the outbox keeps it: its mrkdwn text (the notification
/// fallback) and its Block Kit blocks, as one JSON object. A message without buttons is kept as
/// its mrkdwn text alone (as faseng always kept it), so a stored text that is not this object
/// is sent as text.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackBlocks {
    text: String,
    blocks: serde_json::Value,
}

/// The content `chat.postMessage` / `chat.update` are sent for a rendered text: its blocks when
/// it has some (see [`SlackBlocks`]), else the text.
fn slack_content(rendered: &str) -> SlackMessageContent {
    let rich = rendered
        .starts_with('{')
        .then(|| serde_json::from_str::<SlackBlocks>(rendered).ok())
        .flatten();
    match rich {
        Some(SlackBlocks { text, blocks }) => {
            let content = SlackMessageContent::new().with_text(text);
            match serde_json::from_value::<Vec<SlackBlock>>(blocks) {
                Ok(blocks) => content.with_blocks(blocks),
                Err(e) => {
                    tracing::warn!(error = %e, "a stored message's blocks do not read; sending its text");
                    content
                }
            }
        }
        None => SlackMessageContent::new().with_text(rendered.to_owned()),
    }
}

/// Slack Web API (`chat.update`, `chat.postMessage`, `conversations.info`) with a bot token,
/// through slack-morphism.
#[derive(Clone)]
pub struct SlackNotifier {
    client: Arc<SlackHyperClient>,
    token: SlackApiToken,
    max_attempts: u32,
    /// Room names learnt from `conversations.info`, by id (a channel's id never changes;
    /// a renamed channel keeps its old name here until faseng restarts).
    room_names: Arc<std::sync::Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackNotifier").finish_non_exhaustive()
    }
}

/// How long one Web API call may take before it counts as a transport failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What one failed attempt of a Web API call means for the next.
enum Failure {
    /// Wait this long and try again (while attempts are left).
    Retry(Duration, String),
    /// Give up with this error.
    Fail(anyhow::Error),
}

/// Slack's error code in an HTTP error's JSON body, when it has one.
fn body_code(body: Option<&str>) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body?).ok()?;
    v["error"].as_str().map(str::to_owned)
}

fn classify(method: &str, attempt: u32, max_attempts: u32, err: SlackClientError) -> Failure {
    let refused_or_temporary = |code: &str, message: String| {
        if SLACK_TEMPORARY.contains(&code) {
            Failure::Fail(anyhow::anyhow!(message))
        } else {
            Failure::Fail(ChatRefused(message).into())
        }
    };
    match err {
        SlackClientError::RateLimitError(limit) => {
            let wait = limit.retry_after.unwrap_or(Duration::from_secs(1));
            if wait.as_secs() > WAIT_IN_PLACE || attempt >= max_attempts {
                Failure::Fail(
                    ChatRateLimited {
                        wait,
                        message: format!("slack {method} answered 429"),
                    }
                    .into(),
                )
            } else {
                Failure::Retry(wait, "429".to_owned())
            }
        }
        SlackClientError::HttpError(e) if e.status_code.is_server_error() => Failure::Retry(
            Duration::from_secs(1),
            format!("HTTP {}", e.status_code.as_u16()),
        ),
        SlackClientError::HttpError(e) => {
            let code = body_code(e.http_response_body.as_deref())
                .unwrap_or_else(|| "no error code".to_owned());
            let message = format!("slack {method} answered {}: {code}", e.status_code);
            refused_or_temporary(&code, message)
        }
        SlackClientError::ApiError(e) => {
            let message = format!("slack {method} answered 200 OK: {}", e.code);
            refused_or_temporary(&e.code, message)
        }
        other => Failure::Retry(Duration::from_secs(1), other.to_string()),
    }
}

impl SlackNotifier {
    /// A notifier for `api_url` (`https://slack.com/api` or a fake) and a bot token.
    pub fn new(api_url: &str, token: Secret) -> anyhow::Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| anyhow::anyhow!("no TLS root certificates on this machine: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        // No proactive throttling: a 429 is waited out in place when short, handed back
        // as ChatRateLimited (the poster reschedules) when long.
        let connector = SlackClientHyperConnector::with_connector(https)
            .with_slack_api_url(api_url.trim_end_matches('/'));
        Ok(Self {
            client: Arc::new(SlackClient::new(connector)),
            token: SlackApiToken::new(token.expose().to_owned().into()),
            max_attempts: 4,
            room_names: Default::default(),
        })
    }

    fn session(&self) -> SlackClientSession<'_, SlackClientHyperHttpsConnector> {
        self.client.open_session(&self.token)
    }

    /// Runs one Web API call: a short `Retry-After` and 5xx or transport failures are
    /// retried in place (up to four attempts); a long one is [`ChatRateLimited`]; an error
    /// code that will not change is [`ChatRefused`]; temporary codes are plain errors.
    async fn call<T, F, Fut>(&self, method: &str, call: F) -> anyhow::Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ClientResult<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match tokio::time::timeout(CALL_TIMEOUT, call()).await {
                Ok(result) => result,
                Err(_) => Err(SlackClientError::EndOfStream(
                    slack_morphism::errors::SlackClientEndOfStreamError::new(),
                )),
            };
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match classify(method, attempt, self.max_attempts, err) {
                Failure::Fail(e) => return Err(e),
                Failure::Retry(_, why) if attempt >= self.max_attempts => {
                    anyhow::bail!("slack {method} still failing after {attempt} attempts: {why}")
                }
                Failure::Retry(wait, why) => {
                    tracing::debug!(error = %why, "slack {method} failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[async_trait]
impl ChatNotifier for SlackNotifier {
    fn handles(&self, notify: &Notify) -> bool {
        notify.adapter.eq_ignore_ascii_case("slack") && !notify.room.is_empty()
    }

    fn render(&self, _notify: &Notify, message: &Message) -> String {
        let text = deploy_core::chat::slack::mrkdwn(message);
        if message.buttons.is_empty() {
            return text;
        }
        let rich = SlackBlocks {
            text,
            blocks: deploy_core::chat::slack::blocks(message),
        };
        serde_json::to_string(&rich).expect("blocks serialise")
    }

    async fn upsert(
        &self,
        notify: &Notify,
        ts: Option<&str>,
        text: &str,
    ) -> anyhow::Result<String> {
        let content = slack_content(text);
        let channel: SlackChannelId = notify.room.clone().into();
        match ts {
            Some(ts) => {
                let request =
                    SlackApiChatUpdateRequest::new(channel, content, ts.to_owned().into());
                self.call("chat.update", {
                    let request = &request;
                    move || async move { self.session().chat_update(request).await }
                })
                .await?;
                Ok(ts.to_owned())
            }
            None => {
                let mut request = SlackApiChatPostMessageRequest::new(channel, content);
                request.thread_ts = notify.thread_ts.clone().map(Into::into);
                let posted = self
                    .call("chat.postMessage", {
                        let request = &request;
                        move || async move { self.session().chat_post_message(request).await }
                    })
                    .await?;
                Ok(posted.ts.to_string())
            }
        }
    }

    async fn reply(&self, notify: &Notify, ts: &str, text: &str) -> anyhow::Result<()> {
        let content = slack_content(text);
        let mut request = SlackApiChatPostMessageRequest::new(notify.room.clone().into(), content);
        request.thread_ts = Some(ts.to_owned().into());
        self.call("chat.postMessage", {
            let request = &request;
            move || async move { self.session().chat_post_message(request).await }
        })
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
        let request = SlackApiConversationsInfoRequest::new(notify.room.clone().into());
        let info = self
            .call("conversations.info", {
                let request = &request;
                move || async move { self.session().conversations_info(request).await }
            })
            .await?;
        let name = info
            .channel
            .name
            .ok_or_else(|| anyhow::anyhow!("slack conversations.info returned no name"))?;
        self.room_names
            .lock()
            .expect("room names")
            .insert(notify.room.clone(), name.clone());
        Ok(name)
    }
}

/// The chat notifiers of this faseng, by the `notify.adapter` a deployment's payload names:
/// a payload is handled by the notifier registered for its adapter, and by nothing when none
/// is (`shell` and `none`, whose chats faseng cannot reach, never are).
#[derive(Clone, Default)]
pub struct Notifiers {
    by_adapter: HashMap<String, Arc<dyn ChatNotifier>>,
}

impl std::fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_adapter.keys()).finish()
    }
}

impl Notifiers {
    /// No notifier: every chat target is left alone.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `notifier` for the adapter `name` (matched without regard to case).
    #[must_use]
    pub fn with(mut self, name: &str, notifier: Arc<dyn ChatNotifier>) -> Self {
        self.by_adapter.insert(name.to_ascii_lowercase(), notifier);
        self
    }

    fn pick(&self, notify: &Notify) -> anyhow::Result<&Arc<dyn ChatNotifier>> {
        self.by_adapter
            .get(&notify.adapter.to_ascii_lowercase())
            .ok_or_else(|| {
                ChatRefused(format!(
                    "no chat adapter {:?} in this faseng",
                    notify.adapter
                ))
                .into()
            })
    }
}

#[async_trait]
impl ChatNotifier for Notifiers {
    fn handles(&self, notify: &Notify) -> bool {
        self.pick(notify).is_ok_and(|n| n.handles(notify))
    }
    fn render(&self, notify: &Notify, message: &Message) -> String {
        match self.pick(notify) {
            Ok(n) => n.render(notify, message),
            Err(_) => deploy_core::chat::plain::render(message),
        }
    }
    async fn upsert(
        &self,
        notify: &Notify,
        ts: Option<&str>,
        text: &str,
    ) -> anyhow::Result<String> {
        self.pick(notify)?.upsert(notify, ts, text).await
    }
    async fn reply(&self, notify: &Notify, ts: &str, text: &str) -> anyhow::Result<()> {
        self.pick(notify)?.reply(notify, ts, text).await
    }
    async fn room_name(&self, notify: &Notify) -> anyhow::Result<String> {
        self.pick(notify)?.room_name(notify).await
    }
}

/// A notifier that handles nothing (tests, and a faseng without chat).
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use slack_morphism::errors::{SlackClientApiError, SlackClientHttpError, SlackRateLimitError};

    fn notify(adapter: &str) -> Notify {
        Notify {
            adapter: adapter.into(),
            room: "C1".into(),
            ..Notify::default()
        }
    }

    #[test]
    fn the_payloads_adapter_picks_the_notifier() {
        let slack = SlackNotifier::new("http://127.0.0.1:9/api", Secret::new("xoxb-t")).unwrap();
        let registry = Notifiers::new().with("slack", Arc::new(slack));
        assert!(registry.handles(&notify("slack")));
        assert!(registry.handles(&notify("Slack")));
        for adapter in ["shell", "none", "teams", ""] {
            assert!(!registry.handles(&notify(adapter)), "{adapter}");
        }
        let message = Message::new(deploy_core::chat::Tone::Started).quoted("<!here>");
        assert_eq!(
            registry.render(&notify("slack"), &message),
            ":rocket: &lt;!here&gt;"
        );
        assert_eq!(registry.render(&notify("shell"), &message), "▶ <!here>");
        assert!(!Notifiers::new().handles(&notify("slack")));
    }

    #[test]
    fn a_message_with_buttons_is_kept_with_its_blocks_and_sent_with_them() {
        let slack = SlackNotifier::new("http://127.0.0.1:9/api", Secret::new("xoxb-t")).unwrap();
        let plain = Message::new(deploy_core::chat::Tone::Success).quoted("<!here> ok");
        let rendered = slack.render(&notify("slack"), &plain);
        assert_eq!(rendered, ":white_check_mark: &lt;!here&gt; ok");
        let sent = serde_json::to_value(slack_content(&rendered)).unwrap();
        assert_eq!(sent["text"], rendered);
        assert!(sent.get("blocks").is_none_or(serde_json::Value::is_null));

        let value = deploy_core::chat::ButtonValue::new("rollback demo in staging to #3");
        let with_button = plain.button(
            deploy_core::chat::ROLLBACK_ACTION_ID,
            "Roll back",
            value.to_json(),
        );
        let rendered = slack.render(&notify("slack"), &with_button);
        let sent = serde_json::to_value(slack_content(&rendered)).unwrap();
        assert_eq!(sent["text"], ":white_check_mark: &lt;!here&gt; ok");
        assert_eq!(sent["blocks"][0]["type"], "section");
        assert_eq!(
            sent["blocks"][0]["text"]["text"],
            ":white_check_mark: &lt;!here&gt; ok"
        );
        let button = &sent["blocks"][1]["elements"][0];
        assert_eq!(button["action_id"], "rollback");
        assert_eq!(button["text"]["text"], "Roll back");
        assert_eq!(button["value"], value.to_json());

        // What an older faseng stored, and text that merely looks like JSON, go out as text.
        for stored in ["{\"text\": \"x\"}", "{not json", "plain"] {
            let sent = serde_json::to_value(slack_content(stored)).unwrap();
            assert_eq!(sent["text"], stored);
        }
    }

    #[tokio::test]
    async fn an_adapter_nobody_serves_is_refused_not_retried() {
        let e = Notifiers::new()
            .upsert(&notify("teams"), None, "x")
            .await
            .unwrap_err();
        assert!(is_permanent(&e), "{e:#}");
    }

    fn failure(err: SlackClientError, attempt: u32) -> Result<Duration, anyhow::Error> {
        match classify("chat.update", attempt, 4, err) {
            Failure::Retry(wait, _) => Ok(wait),
            Failure::Fail(e) => Err(e),
        }
    }

    #[test]
    fn slack_failures_map_to_what_the_poster_expects() {
        let limited = |secs| {
            SlackClientError::RateLimitError(
                SlackRateLimitError::new().opt_retry_after(Some(Duration::from_secs(secs))),
            )
        };
        assert_eq!(failure(limited(2), 1).unwrap(), Duration::from_secs(2));
        let long = failure(limited(90), 1).unwrap_err();
        assert_eq!(retry_after(&long), Some(Duration::from_secs(90)));
        let last = failure(limited(2), 4).unwrap_err();
        assert_eq!(retry_after(&last), Some(Duration::from_secs(2)));

        let http = |status| SlackClientError::HttpError(SlackClientHttpError::new(status));
        assert!(failure(http(StatusCode::BAD_GATEWAY), 1).is_ok());
        let bad = failure(
            SlackClientError::HttpError(
                SlackClientHttpError::new(StatusCode::BAD_REQUEST)
                    .with_http_response_body(r#"{"ok":false,"error":"invalid_auth"}"#.into()),
            ),
            1,
        )
        .unwrap_err();
        assert!(
            is_permanent(&bad) && bad.to_string().contains("invalid_auth"),
            "{bad}"
        );

        let api = |code: &str| SlackClientError::ApiError(SlackClientApiError::new(code.into()));
        let refused = failure(api("channel_not_found"), 1).unwrap_err();
        assert!(is_permanent(&refused), "{refused}");
        assert!(refused.to_string().contains("channel_not_found"));
        let temporary = failure(api("internal_error"), 1).unwrap_err();
        assert!(!is_permanent(&temporary) && retry_after(&temporary).is_none());
        assert!(
            failure(
                SlackClientError::EndOfStream(
                    slack_morphism::errors::SlackClientEndOfStreamError::new()
                ),
                1
            )
            .is_ok()
        );
    }
}
