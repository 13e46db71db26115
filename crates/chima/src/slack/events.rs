//! Slack's inbound payloads turned into domain events, and Slack's text markup decoded.
//! Pure functions: no I/O, no signature checks (those happen before, on the raw body).

use serde::Deserialize;
use serde_json::Value;

/// A message that may carry commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// Events API `event_id`, for de-duplicating retries.
    pub event_id: Option<String>,
    /// Channel id.
    pub channel: String,
    /// Author's user id.
    pub user: String,
    /// Text as Slack sent it (markup not yet decoded).
    pub text: String,
    /// The message's `ts`.
    pub ts: String,
    /// The thread it was posted in, if any.
    pub thread_ts: Option<String>,
    /// True for a direct message with the bot (every line is for the bot).
    pub direct: bool,
}

/// A slash command (`/chima deploy …`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IncomingCommand {
    /// Channel id.
    pub channel_id: String,
    /// Channel name as Slack sent it (`directmessage` for DMs).
    #[serde(default)]
    pub channel_name: Option<String>,
    /// Who typed it.
    pub user_id: String,
    /// Their user name.
    #[serde(default)]
    pub user_name: Option<String>,
    /// The slash command itself, e.g. `/chima`.
    #[serde(default)]
    pub command: String,
    /// Everything after the slash command.
    #[serde(default)]
    pub text: String,
    /// Where a delayed answer may be sent.
    #[serde(default)]
    pub response_url: Option<String>,
}

/// A press on one of chima's buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonPress {
    /// Who pressed.
    pub user: String,
    /// Channel of the message with the button.
    pub channel: String,
    /// `ts` of the message with the button.
    pub message_ts: String,
    /// The thread that message is in, if any.
    pub thread_ts: Option<String>,
    /// Which action (`deploy-anyway`, …).
    pub action_id: String,
    /// The button's value.
    pub value: String,
}

/// What an inbound Slack request means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// `url_verification`: echo the challenge.
    UrlVerification {
        /// The challenge to echo.
        challenge: String,
    },
    /// A message or mention to read commands from.
    Message(IncomingMessage),
    /// A slash command.
    Command(IncomingCommand),
    /// A button press.
    ButtonPress(ButtonPress),
    /// Nothing to do, and why (for logs).
    Ignored(&'static str),
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Reads an Events API body (`url_verification` or `event_callback`).
pub fn parse_event_body(body: &str, bot_user_id: &str) -> Result<Inbound, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    match v.get("type").and_then(Value::as_str) {
        Some("url_verification") => Ok(Inbound::UrlVerification {
            challenge: str_field(&v, "challenge").ok_or("url_verification without challenge")?,
        }),
        Some("event_callback") => {
            let event = v.get("event").ok_or("event_callback without event")?;
            Ok(read_event(event, str_field(&v, "event_id"), bot_user_id))
        }
        Some(_) => Ok(Inbound::Ignored("not an event callback")),
        None => Err("no type".to_owned()),
    }
}

/// Turns one event (the `event` object of a callback) into a domain event.
pub fn read_event(event: &Value, event_id: Option<String>, bot_user_id: &str) -> Inbound {
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != "app_mention" && kind != "message" {
        return Inbound::Ignored("event type chima does not handle");
    }
    if event
        .get("subtype")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Inbound::Ignored("message subtype (edit, deletion, join, bot message…)");
    }
    if event
        .get("bot_id")
        .and_then(Value::as_str)
        .is_some_and(|b| !b.is_empty())
    {
        return Inbound::Ignored("message from a bot");
    }
    let (Some(user), Some(channel), Some(ts)) = (
        str_field(event, "user").filter(|u| !u.is_empty()),
        str_field(event, "channel").filter(|c| !c.is_empty()),
        str_field(event, "ts"),
    ) else {
        return Inbound::Ignored("message without user, channel or ts");
    };
    if user == bot_user_id {
        return Inbound::Ignored("chima's own message");
    }
    let text = str_field(event, "text").unwrap_or_default();
    let direct =
        str_field(event, "channel_type").as_deref() == Some("im") || channel.starts_with('D');
    if kind == "message" && !direct && text.contains(&format!("<@{bot_user_id}")) {
        // Slack sends an app_mention for the same message; answer that one only.
        return Inbound::Ignored("mention: handled as app_mention");
    }
    if kind == "app_mention" && direct {
        return Inbound::Ignored("mention in a DM: handled as message");
    }
    Inbound::Message(IncomingMessage {
        event_id,
        channel,
        user,
        text,
        ts,
        thread_ts: str_field(event, "thread_ts").filter(|t| !t.is_empty()),
        direct,
    })
}

/// Reads a slash command's form body.
pub fn parse_command_body(body: &str) -> Result<Inbound, String> {
    serde_urlencoded::from_str::<IncomingCommand>(body)
        .map(Inbound::Command)
        .map_err(|e| format!("bad slash command form: {e}"))
}

/// Reads an interaction's form body (`payload=<json>`).
pub fn parse_interaction_body(body: &str) -> Result<Inbound, String> {
    #[derive(Deserialize)]
    struct Form {
        payload: String,
    }
    let form: Form =
        serde_urlencoded::from_str(body).map_err(|e| format!("bad interaction form: {e}"))?;
    let v: Value =
        serde_json::from_str(&form.payload).map_err(|e| format!("bad interaction JSON: {e}"))?;
    Ok(read_interaction(&v))
}

/// Turns an interaction payload into a domain event.
pub fn read_interaction(v: &Value) -> Inbound {
    if v.get("type").and_then(Value::as_str) != Some("block_actions") {
        return Inbound::Ignored("interaction type chima does not handle");
    }
    let action = v.pointer("/actions/0");
    let user = v.pointer("/user/id").and_then(Value::as_str);
    let channel = v
        .pointer("/container/channel_id")
        .or_else(|| v.pointer("/channel/id"))
        .and_then(Value::as_str);
    let message_ts = v
        .pointer("/container/message_ts")
        .or_else(|| v.pointer("/message/ts"))
        .and_then(Value::as_str);
    match (action, user, channel, message_ts) {
        (Some(action), Some(user), Some(channel), Some(message_ts)) => {
            Inbound::ButtonPress(ButtonPress {
                user: user.to_owned(),
                channel: channel.to_owned(),
                message_ts: message_ts.to_owned(),
                thread_ts: v
                    .pointer("/message/thread_ts")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                action_id: str_field(action, "action_id").unwrap_or_default(),
                value: str_field(action, "value").unwrap_or_default(),
            })
        }
        _ => Inbound::Ignored("block action without user, channel, message or action"),
    }
}

/// Decodes Slack's message markup into what the user typed: `<url|label>` → label,
/// `<#C1|name>` → `#name`, `<@U1|name>` → `@name`, `<!here>` → `@here`, `&lt;` → `<`.
/// A bare user mention becomes the plain id (`<@U1>` → `@U1`), and a mention of the bot
/// itself its name (`@chima`), so the grammar never sees Slack's syntax.
pub fn decode_markup(text: &str, bot_user_id: &str, bot_name: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = &after[..end];
        let (target, label) = match inner.split_once('|') {
            Some((t, l)) => (t, Some(l)),
            None => (inner, None),
        };
        match (target.chars().next(), label) {
            (Some('@'), None) if &target[1..] == bot_user_id => {
                out.push_str(&format!("@{bot_name}"))
            }
            (Some('@'), None) => out.push_str(target),
            (Some('@'), Some(name)) => out.push_str(&format!("@{name}")),
            (Some('#'), Some(name)) => out.push_str(&format!("#{name}")),
            (Some('#'), None) => out.push_str(target),
            (Some('!'), _) => {
                let word = target[1..].split('^').next().unwrap_or_default();
                out.push_str(&format!("@{word}"));
            }
            (_, Some(label)) => out.push_str(label),
            (_, None) => out.push_str(target),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOT: &str = "UBOT";

    fn callback(event: Value) -> String {
        json!({"type": "event_callback", "event_id": "Ev1", "event": event}).to_string()
    }

    #[test]
    fn url_verification_is_echoed() {
        assert_eq!(
            parse_event_body(
                r#"{"type":"url_verification","challenge":"abc","token":"t"}"#,
                BOT
            ),
            Ok(Inbound::UrlVerification {
                challenge: "abc".into()
            })
        );
    }

    #[test]
    fn app_mentions_become_messages() {
        let body = callback(json!({"type": "app_mention", "user": "U1", "channel": "C1",
                                   "text": "<@UBOT> deploy x", "ts": "1.2", "thread_ts": "1.0"}));
        assert_eq!(
            parse_event_body(&body, BOT),
            Ok(Inbound::Message(IncomingMessage {
                event_id: Some("Ev1".into()),
                channel: "C1".into(),
                user: "U1".into(),
                text: "<@UBOT> deploy x".into(),
                ts: "1.2".into(),
                thread_ts: Some("1.0".into()),
                direct: false,
            }))
        );
    }

    #[test]
    fn channel_messages_that_mention_the_bot_are_left_to_app_mention() {
        let body = callback(
            json!({"type": "message", "channel_type": "channel", "user": "U1",
                                   "channel": "C1", "text": "<@UBOT> deploy x", "ts": "1.2"}),
        );
        assert!(matches!(
            parse_event_body(&body, BOT),
            Ok(Inbound::Ignored(_))
        ));
    }

    #[test]
    fn direct_messages_are_implicitly_addressed() {
        let body = callback(
            json!({"type": "message", "channel_type": "im", "user": "U1",
                                   "channel": "D1", "text": "deploy x", "ts": "1.2"}),
        );
        match parse_event_body(&body, BOT) {
            Ok(Inbound::Message(m)) => assert!(m.direct),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bots_edits_deletions_and_own_messages_are_ignored() {
        for event in [
            json!({"type": "message", "subtype": "bot_message", "bot_id": "B1", "channel": "C1", "text": "chima deploy x", "ts": "1"}),
            json!({"type": "message", "bot_id": "B1", "user": "U9", "channel": "C1", "text": "chima deploy x", "ts": "1"}),
            json!({"type": "message", "subtype": "message_changed", "channel": "C1", "ts": "1", "message": {"text": "chima deploy x"}}),
            json!({"type": "message", "subtype": "message_deleted", "channel": "C1", "ts": "1", "deleted_ts": "0.9"}),
            json!({"type": "message", "user": "UBOT", "channel": "C1", "text": "chima deploy x", "ts": "1"}),
            json!({"type": "reaction_added", "user": "U1", "reaction": "+1"}),
            json!({"type": "message", "channel": "C1", "text": "chima deploy x", "ts": "1"}),
        ] {
            assert!(
                matches!(
                    parse_event_body(&callback(event.clone()), BOT),
                    Ok(Inbound::Ignored(_))
                ),
                "{event}"
            );
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(parse_event_body("not json", BOT).is_err());
        assert!(parse_event_body("{}", BOT).is_err());
        assert!(parse_event_body(r#"{"type":"event_callback"}"#, BOT).is_err());
    }

    #[test]
    fn slash_commands_are_read_from_the_form() {
        let body = "token=x&team_id=T1&channel_id=C1&channel_name=deployment&user_id=U1&user_name=joyz&command=%2Fchima&text=deploy+project-x+to+edge&response_url=https%3A%2F%2Fhooks.slack.com%2Fx&trigger_id=t";
        assert_eq!(
            parse_command_body(body),
            Ok(Inbound::Command(IncomingCommand {
                channel_id: "C1".into(),
                channel_name: Some("deployment".into()),
                user_id: "U1".into(),
                user_name: Some("joyz".into()),
                command: "/chima".into(),
                text: "deploy project-x to edge".into(),
                response_url: Some("https://hooks.slack.com/x".into()),
            }))
        );
        assert!(parse_command_body("text=x").is_err());
    }

    #[test]
    fn block_actions_become_button_presses() {
        let payload = json!({"type": "block_actions", "user": {"id": "U1"},
            "container": {"type": "message", "message_ts": "5.5", "channel_id": "C1"},
            "message": {"ts": "5.5", "thread_ts": "5.0"},
            "actions": [{"type": "button", "action_id": "deploy-anyway", "value": "v"}]});
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        assert_eq!(
            parse_interaction_body(&body),
            Ok(Inbound::ButtonPress(ButtonPress {
                user: "U1".into(),
                channel: "C1".into(),
                message_ts: "5.5".into(),
                thread_ts: Some("5.0".into()),
                action_id: "deploy-anyway".into(),
                value: "v".into(),
            }))
        );
        let other =
            serde_urlencoded::to_string([("payload", r#"{"type":"view_submission"}"#)]).unwrap();
        assert!(matches!(
            parse_interaction_body(&other),
            Ok(Inbound::Ignored(_))
        ));
        assert!(parse_interaction_body("payload=nope").is_err());
    }

    #[test]
    fn markup_is_decoded_to_what_was_typed() {
        for (slack, typed) in [
            ("deploy x to <#C1|edge>", "deploy x to #edge"),
            (
                "deploy x/<http://release.v1.com|release.v1.com>",
                "deploy x/release.v1.com",
            ),
            ("see <https://example.com>", "see https://example.com"),
            ("<@UBOT> deploy x", "@chima deploy x"),
            ("<@UBOT>: deploy x", "@chima: deploy x"),
            ("deploy x for <@U2>", "deploy x for @U2"),
            ("&lt;@UBOT&gt; deploy x", "<@UBOT> deploy x"),
            ("&gt; chima deploy z", "> chima deploy z"),
            ("ping <@U1|joyz>", "ping @joyz"),
            ("<!here> &lt;b&gt; &amp;", "@here <b> &"),
            ("<!subteam^S1|@team>", "@subteam"),
            ("unclosed < bracket", "unclosed < bracket"),
        ] {
            assert_eq!(decode_markup(slack, "UBOT", "chima"), typed, "{slack}");
        }
    }

    #[test]
    fn the_upstream_samples_parse() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/slack/shape-samples"
        );
        let Ok(mention) = std::fs::read_to_string(format!("{dir}/events/AppMentionPayload.json"))
        else {
            eprintln!("skipped: shared fixtures not found at {dir}");
            return;
        };
        // The shape samples carry empty strings in every field: a mention without a user is
        // ignored, never an error.
        let v: Value = serde_json::from_str(&mention).unwrap();
        assert!(matches!(
            read_event(&v["event"], None, BOT),
            Inbound::Ignored(_)
        ));
        let action: Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{dir}/app-backend/interactive-components/BlockActionPayload.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let _ = read_interaction(&action);
    }
}
