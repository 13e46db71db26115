//! Outbound Slack: the Web API client (bounded retries, 429 `Retry-After` honoured), the
//! channel and user directory (cached with expiry), Block Kit rendering and the outbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deploy_core::chat;
use serde_json::json;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::chat::{MessageRef, Outbox, Reply, Visibility};

/// How long channel and user names are remembered.
const DIRECTORY_TTL: Duration = Duration::from_secs(600);
/// Attempts for one Web API call that fails with a 5xx or a transport error.
const ATTEMPTS: u32 = 3;
/// The longest `Retry-After` chima waits out before giving up on a call.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A user group's handle and its members' ids.
type UserGroup = (String, Vec<String>);

/// What chima needs to know about a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Name without `#` (empty for a DM).
    pub name: String,
    /// True for a direct message with the bot.
    pub direct: bool,
}

/// The Slack Web API, as chima uses it.
pub struct SlackWeb {
    client: Arc<SlackHyperClient>,
    token: SlackApiToken,
    channels: Mutex<HashMap<String, (ChannelInfo, Instant)>>,
    users: Mutex<HashMap<String, (String, Instant)>>,
    /// Every user group's handle and members, as of when they were read.
    groups: Mutex<Option<(Vec<UserGroup>, Instant)>>,
}

pub use deploy_core::chat::ButtonValue;

/// Renders a reply as Block Kit (deploy-core's Slack rendering of its message: every quoted
/// value escaped, nothing in it pings, mentions or links) with the section's text as the
/// notification fallback, and the reply's buttons in an actions block.
pub fn render(reply: &Reply) -> SlackMessageContent {
    let rendered = chat::slack::blocks(&reply.message);
    let mut blocks: Vec<SlackBlock> = serde_json::from_value(rendered).unwrap_or_default();
    let text = blocks
        .iter()
        .find_map(|b| match b {
            SlackBlock::Section(s) => match &s.text {
                Some(SlackBlockText::MarkDown(t)) => Some(t.text.clone()),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_else(|| chat::slack::mrkdwn(&reply.message));
    if !reply.actions.is_empty() {
        let buttons = reply
            .actions
            .iter()
            .map(|a| {
                let value = ButtonValue {
                    command: a.command.clone(),
                    only_user: a.only_user.clone(),
                };
                SlackActionBlockElement::Button(
                    SlackBlockButtonElement::new(SlackBlockPlainTextOnly::from(a.label.as_str()))
                        .with_action_id(a.kind.id().into())
                        .with_value(value.to_json()),
                )
            })
            .collect();
        blocks.push(SlackBlock::Actions(SlackActionsBlock::new(buttons)));
    }
    SlackMessageContent::new()
        .with_text(text)
        .with_blocks(blocks)
}

fn retryable(err: &SlackClientError) -> bool {
    match err {
        SlackClientError::HttpError(e) => e.status_code.is_server_error(),
        SlackClientError::HttpProtocolError(_) | SlackClientError::EndOfStream(_) => true,
        _ => false,
    }
}

fn describe(err: &SlackClientError) -> String {
    match err {
        SlackClientError::ApiError(e) => format!("error code {}", e.code),
        SlackClientError::HttpError(e) => format!("HTTP {}", e.status_code),
        SlackClientError::RateLimitError(_) => "rate limited (HTTP 429)".to_owned(),
        other => format!("{other}"),
    }
}

/// A Web API failure, with Slack's error code when there is one. Never contains the token.
#[derive(Debug, thiserror::Error)]
#[error("Slack {method} failed: {detail}")]
pub struct SlackCallError {
    /// The method, e.g. `chat.postMessage`.
    pub method: &'static str,
    /// Slack's error code or the HTTP failure.
    pub detail: String,
}

/// Runs one Web API call with bounded retries: after a 429 it waits as long as `Retry-After`
/// says (at most a minute), after a 5xx or a transport error it backs off. Failures are
/// logged with Slack's error code, never with the token.
macro_rules! call_slack {
    ($web:expr, $method:literal, |$session:ident| $call:expr) => {{
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            let $session = $web.client.open_session(&$web.token);
            match $call.await {
                Ok(v) => break Ok(v),
                Err(SlackClientError::RateLimitError(limit)) if attempt < ATTEMPTS => {
                    let wait = limit.retry_after.unwrap_or(Duration::from_secs(1)).min(MAX_RETRY_AFTER);
                    tracing::warn!(method = $method, attempt, ?wait, "Slack rate limit (429), waiting");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) if retryable(&e) && attempt < ATTEMPTS => {
                    tracing::warn!(method = $method, attempt, error = %describe(&e), "Slack call failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    let detail = describe(&e);
                    tracing::warn!(method = $method, error = %detail, "Slack call failed");
                    break Err(SlackCallError { method: $method, detail });
                }
            }
        }
    }};
}

impl SlackWeb {
    /// A client for the Web API at `api_url` (`https://slack.com/api` or a fake).
    pub fn new(api_url: &str, bot_token: &str) -> anyhow::Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| anyhow::anyhow!("no TLS root certificates on this machine: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        // No proactive throttling (it would hold chat.postMessage to 1/s even in bursts Slack
        // allows); a 429 is waited out below for as long as its Retry-After says.
        let connector = SlackClientHyperConnector::with_connector(https)
            .with_slack_api_url(api_url.trim_end_matches('/'));
        Ok(Self {
            client: Arc::new(SlackClient::new(connector)),
            token: SlackApiToken::new(bot_token.into()),
            channels: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            groups: Mutex::new(None),
        })
    }

    /// The underlying client (Socket Mode needs it).
    pub fn client(&self) -> Arc<SlackHyperClient> {
        self.client.clone()
    }

    /// The bot's own user id (`auth.test`).
    pub async fn bot_user_id(&self) -> Result<String, SlackCallError> {
        let r = call_slack!(self, "auth.test", |s| s.auth_test())?;
        Ok(r.user_id.to_string())
    }

    /// A channel's name and kind, cached.
    pub async fn channel(&self, id: &str) -> Result<ChannelInfo, SlackCallError> {
        if let Some((info, at)) = self.channels.lock().expect("cache lock").get(id)
            && at.elapsed() < DIRECTORY_TTL
        {
            return Ok(info.clone());
        }
        let request = SlackApiConversationsInfoRequest::new(id.into());
        let r = call_slack!(self, "conversations.info", |s| s
            .conversations_info(&request))?;
        let info = ChannelInfo {
            name: r.channel.name.clone().unwrap_or_default(),
            direct: r.channel.flags.is_im.unwrap_or(false),
        };
        self.channels
            .lock()
            .expect("cache lock")
            .insert(id.to_owned(), (info.clone(), Instant::now()));
        Ok(info)
    }

    /// A user's name, cached.
    pub async fn user_name(&self, id: &str) -> Result<String, SlackCallError> {
        if let Some((name, at)) = self.users.lock().expect("cache lock").get(id)
            && at.elapsed() < DIRECTORY_TTL
        {
            return Ok(name.clone());
        }
        let request = SlackApiUsersInfoRequest::new(id.into());
        let r = call_slack!(self, "users.info", |s| s.users_info(&request))?;
        let name = r
            .user
            .profile
            .as_ref()
            .and_then(|p| p.display_name.clone())
            .filter(|n| !n.is_empty())
            .or(r.user.name.clone())
            .unwrap_or_else(|| id.to_owned());
        self.users
            .lock()
            .expect("cache lock")
            .insert(id.to_owned(), (name.clone(), Instant::now()));
        Ok(name)
    }

    /// The handles of the user groups `user` belongs to (`usergroups.list` with its users,
    /// cached like names): how `@group` approvers are matched.
    pub async fn user_groups(&self, user: &str) -> Result<Vec<String>, SlackCallError> {
        let cached = self
            .groups
            .lock()
            .expect("cache lock")
            .as_ref()
            .filter(|(_, at)| at.elapsed() < DIRECTORY_TTL)
            .map(|(groups, _)| groups.clone());
        let groups = match cached {
            Some(groups) => groups,
            None => {
                let request = SlackApiUserGroupsListRequest::new().with_include_users(true);
                let r = call_slack!(self, "usergroups.list", |s| s.usergroups_list(&request))?;
                let groups: Vec<UserGroup> = r
                    .usergroups
                    .into_iter()
                    .map(|g| {
                        let members = g
                            .users
                            .unwrap_or_default()
                            .into_iter()
                            .map(|u| u.to_string())
                            .collect();
                        (g.handle, members)
                    })
                    .collect();
                *self.groups.lock().expect("cache lock") = Some((groups.clone(), Instant::now()));
                groups
            }
        };
        Ok(groups
            .into_iter()
            .filter(|(_, members)| members.iter().any(|m| m == user))
            .map(|(handle, _)| handle)
            .collect())
    }

    /// Posts a message (in a thread when `thread_ts` is set); returns its `ts`.
    pub async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        reply: &Reply,
    ) -> Result<String, SlackCallError> {
        let mut request = SlackApiChatPostMessageRequest::new(channel.into(), render(reply));
        request.thread_ts = thread_ts.map(Into::into);
        let r = call_slack!(self, "chat.postMessage", |s| s.chat_post_message(&request))?;
        Ok(r.ts.to_string())
    }

    /// Posts a message only `user` sees.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        thread_ts: Option<&str>,
        reply: &Reply,
    ) -> Result<(), SlackCallError> {
        let mut request =
            SlackApiChatPostEphemeralRequest::new(channel.into(), user.into(), render(reply));
        request.thread_ts = thread_ts.map(Into::into);
        call_slack!(self, "chat.postEphemeral", |s| s
            .chat_post_ephemeral(&request))?;
        Ok(())
    }

    /// Replaces a message.
    pub async fn update(
        &self,
        channel: &str,
        ts: &str,
        reply: &Reply,
    ) -> Result<(), SlackCallError> {
        let request = SlackApiChatUpdateRequest::new(channel.into(), render(reply), ts.into());
        call_slack!(self, "chat.update", |s| s.chat_update(&request))?;
        Ok(())
    }
}

/// Where one command's replies go: its channel, its thread, its author.
pub struct SlackOutbox {
    web: Arc<SlackWeb>,
    channel: String,
    thread_ts: Option<String>,
    user: String,
}

impl SlackOutbox {
    /// Replies for `user`'s command in `channel` (in `thread_ts` when set).
    pub fn new(web: Arc<SlackWeb>, channel: &str, thread_ts: Option<String>, user: &str) -> Self {
        Self {
            web,
            channel: channel.to_owned(),
            thread_ts,
            user: user.to_owned(),
        }
    }
}

#[async_trait]
impl Outbox for SlackOutbox {
    async fn post(&mut self, reply: Reply) -> Option<MessageRef> {
        let thread = self.thread_ts.as_deref();
        if reply.visibility == Visibility::OnlyAsker {
            let _ = self
                .web
                .post_ephemeral(&self.channel, &self.user, thread, &reply)
                .await;
            return None;
        }
        let ts = self.web.post(&self.channel, thread, &reply).await.ok()?;
        Some(MessageRef {
            channel: self.channel.clone(),
            id: ts,
        })
    }

    async fn edit(&mut self, message: &MessageRef, reply: Reply) {
        if self
            .web
            .update(&message.channel, &message.id, &reply)
            .await
            .is_err()
        {
            // The edit failed for good: say it as a new message rather than not at all.
            let _ = self
                .web
                .post(&message.channel, self.thread_ts.as_deref(), &reply)
                .await;
        }
    }
}

/// The JSON a slash command answers with at once (nothing visible: the replies follow in the
/// channel).
pub fn slash_ack() -> serde_json::Value {
    json!({})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Action, ActionKind};
    use crate::messages;

    #[test]
    fn quoted_values_cannot_ping_mention_or_link_in_the_blocks_or_the_fallback() {
        let app = deploy_core::AppName::parse("trelhub").unwrap();
        let env = deploy_core::EnvName::parse("edge").unwrap();
        for value in deploy_core::chat::MARKUP_INJECTIONS {
            let replies = [
                messages::deploy_requested(value, &app, value, &env, value),
                messages::button_not_yours(value),
                messages::button_pressed(value, value, value),
                messages::log(7, &[(*value).to_owned()]),
                Reply::new(chat::Message::new(chat::Tone::Error).quoted(*value)),
            ];
            for reply in &replies {
                let v = serde_json::to_value(render(reply)).unwrap();
                for shown in [&v["text"], &v["blocks"][0]["text"]["text"]] {
                    let shown = shown.as_str().unwrap();
                    assert!(!shown.contains(['<', '>']), "{value}: {shown}");
                    assert!(
                        shown.contains(&chat::escape_mrkdwn(value)),
                        "{value}: {shown}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_long_reply_is_cut_alike_in_the_blocks_and_the_fallback() {
        let v = serde_json::to_value(render(&Reply::new(
            chat::Message::new(chat::Tone::Info).quoted("<".repeat(5000)),
        )))
        .unwrap();
        assert_eq!(v["text"], v["blocks"][0]["text"]["text"]);
        assert_eq!(
            v["text"].as_str().unwrap().chars().count(),
            chat::slack::SECTION_TEXT_MAX
        );
    }

    #[test]
    fn replies_render_as_blocks_with_a_plain_fallback() {
        let reply = Reply::new(chat::Message::new(chat::Tone::Error).quoted("no <b>")).with_action(
            Action {
                kind: ActionKind::DeployAnyway,
                label: "Deploy anyway".into(),
                command: "chima deploy! x".into(),
                only_user: Some("U1".into()),
            },
        );
        let v = serde_json::to_value(render(&reply)).unwrap();
        assert_eq!(v["text"], ":x: no &lt;b&gt;");
        assert_eq!(v["blocks"][0]["type"], "section");
        assert_eq!(v["blocks"][0]["text"]["type"], "mrkdwn");
        assert_eq!(v["blocks"][0]["text"]["text"], ":x: no &lt;b&gt;");
        let button = &v["blocks"][1]["elements"][0];
        assert_eq!(button["type"], "button");
        assert_eq!(button["action_id"], "deploy-anyway");
        assert_eq!(button["text"]["text"], "Deploy anyway");
        let value: ButtonValue = serde_json::from_str(button["value"].as_str().unwrap()).unwrap();
        assert_eq!(value.command, "chima deploy! x");
        assert_eq!(value.only_user.as_deref(), Some("U1"));
    }
}
