//! Slack renderings of a [`Message`]: mrkdwn text (`chat.postMessage`'s `text`, and the
//! notification fallback) and Block Kit blocks (a section with the text and the fields, then
//! an actions block with the buttons).
//!
//! Slack gives meaning only to `&`, `<` and `>` (entities are decoded for display, nothing
//! else is), so every text, quoted value, link label and code is escaped with
//! [`escape_mrkdwn`]. Quoted values are also kept on one line and have `@here`, `@channel`
//! and `@everyone` turned into look-alikes that ping nobody.

use serde_json::{Value, json};

use super::{Message, Part, Tone, escape_mrkdwn, mrkdwn_link, one_line};

/// Characters Slack takes in a section's text.
pub const SECTION_TEXT_MAX: usize = 3000;
/// Fields Slack takes in one section.
pub const FIELDS_MAX: usize = 10;
/// Characters Slack takes in a field.
pub const FIELD_TEXT_MAX: usize = 2000;
/// Characters Slack takes in a button's label.
pub const BUTTON_LABEL_MAX: usize = 75;
/// Characters Slack takes in a button's value.
pub const BUTTON_VALUE_MAX: usize = 2000;

/// The emoji a tone is shown with (empty for [`Tone::Info`]).
pub fn emoji(tone: Tone) -> &'static str {
    match tone {
        Tone::Info => "",
        Tone::Waiting => ":hourglass:",
        Tone::Progress => ":hourglass_flowing_sand:",
        Tone::Started => ":rocket:",
        Tone::Success => ":white_check_mark:",
        Tone::Failure | Tone::Error => ":x:",
        Tone::Warning => ":warning:",
        Tone::Lock => ":lock:",
    }
}

/// Broadcast words Slack may turn into pings when written with a leading `@`.
const BROADCASTS: &[&str] = &["here", "channel", "everyone"];

/// `value` as Slack should show it: one line, escaped, with `@here`-style broadcasts made
/// harmless (the `@` becomes the full-width `＠`).
pub fn quote(value: &str) -> String {
    let line = one_line(value);
    let mut out = String::with_capacity(line.len());
    let mut rest = line.as_str();
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let broadcast = BROADCASTS.iter().any(|w| {
            after
                .get(..w.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(w))
        });
        out.push(if broadcast { '＠' } else { '@' });
        rest = after;
    }
    out.push_str(rest);
    escape_mrkdwn(&out)
}

fn inline_code(code: &str) -> String {
    format!("`{}`", escape_mrkdwn(&one_line(code).replace('`', "'")))
}

fn code_block(code: &str) -> String {
    format!("```\n{}\n```", escape_mrkdwn(&code.replace("```", "'''")))
}

fn parts(message: &Message) -> String {
    let mut out = String::new();
    for part in &message.parts {
        match part {
            Part::Text(text) => out.push_str(&escape_mrkdwn(text)),
            Part::Quoted(value) => out.push_str(&quote(value)),
            // A bare URL: Slack links it by itself, and the text reads the same everywhere.
            Part::Link { url, label } if one_line(label) == *url => {
                out.push_str(&escape_mrkdwn(url))
            }
            Part::Link { url, label } => out.push_str(&mrkdwn_link(url, &one_line(label))),
            Part::Code(code) => out.push_str(&inline_code(code)),
            Part::CodeBlock(code) => out.push_str(&code_block(code)),
        }
    }
    out
}

fn with_emoji(tone: Tone, text: String) -> String {
    match emoji(tone) {
        "" => text,
        e if text.is_empty() => e.to_owned(),
        e => format!("{e} {text}"),
    }
}

fn field_text(label: &str, value: &str, separator: &str) -> String {
    format!("*{}:*{separator}{}", escape_mrkdwn(label), quote(value))
}

/// The message as one mrkdwn text: emoji, text, then one line per field. Buttons need
/// Block Kit ([`blocks`]).
pub fn mrkdwn(message: &Message) -> String {
    let mut out = with_emoji(message.tone, parts(message));
    for f in &message.fields {
        out.push('\n');
        out.push_str(&field_text(&f.label, &f.value, " "));
    }
    out
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The message as Block Kit blocks (a JSON array, as `chat.postMessage` takes it): a section
/// with the text and up to [`FIELDS_MAX`] fields, then an actions block when there are
/// buttons. Texts are cut to Slack's limits.
pub fn blocks(message: &Message) -> Value {
    let mut section = json!({"type": "section"});
    let text = with_emoji(message.tone, parts(message));
    if !text.is_empty() {
        section["text"] = json!({"type": "mrkdwn", "text": cut(&text, SECTION_TEXT_MAX)});
    }
    if !message.fields.is_empty() {
        let fields: Vec<Value> = message
            .fields
            .iter()
            .take(FIELDS_MAX)
            .map(|f| {
                json!({"type": "mrkdwn", "text": cut(&field_text(&f.label, &f.value, "\n"), FIELD_TEXT_MAX)})
            })
            .collect();
        section["fields"] = Value::Array(fields);
    }
    let mut blocks = Vec::new();
    if section.get("text").is_some() || section.get("fields").is_some() {
        blocks.push(section);
    }
    if !message.buttons.is_empty() {
        let elements: Vec<Value> = message
            .buttons
            .iter()
            .map(|b| {
                json!({
                    "type": "button",
                    "text": {"type": "plain_text", "text": cut(&one_line(&b.label), BUTTON_LABEL_MAX)},
                    "action_id": b.action_id,
                    "value": cut(&b.value, BUTTON_VALUE_MAX),
                })
            })
            .collect();
        blocks.push(json!({"type": "actions", "elements": elements}));
    }
    Value::Array(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values a user or repository may write, and how Slack must be sent them.
    const QUOTED: &[(&str, &str)] = &[
        ("production", "production"),
        ("<!channel>", "&lt;!channel&gt;"),
        ("<!here>", "&lt;!here&gt;"),
        ("<@U123>", "&lt;@U123&gt;"),
        ("<#C1|x>", "&lt;#C1|x&gt;"),
        ("<http://x|y>", "&lt;http://x|y&gt;"),
        ("&amp;", "&amp;amp;"),
        ("a & b", "a &amp; b"),
        ("*bold* _it_ ~s~", "*bold* _it_ ~s~"),
        ("line\nsecond", "line second"),
        ("tab\there", "tab here"),
        ("@here", "＠here"),
        ("hi @Channel!", "hi ＠Channel!"),
        ("@everyone", "＠everyone"),
        ("alice@example.com", "alice@example.com"),
        ("@alice", "@alice"),
        ("é ✓", "é ✓"),
    ];

    #[test]
    fn quoted_values_are_escaped_kept_on_one_line_and_ping_nobody() {
        for (value, shown) in QUOTED {
            assert_eq!(quote(value), *shown, "{value:?}");
            assert_eq!(
                mrkdwn(&Message::new(Tone::Info).quoted(*value)),
                *shown,
                "{value:?}"
            );
        }
    }

    #[test]
    fn every_part_renders_as_slack_expects() {
        let cases: &[(Message, &str)] = &[
            (
                Message::new(Tone::Started)
                    .quoted("joyz")
                    .text(" is deploying ")
                    .quoted("app/main")
                    .text(" — ")
                    .link("https://f/x?a=1&b=2", "log"),
                ":rocket: joyz is deploying app/main — <https://f/x?a=1&amp;b=2|log>",
            ),
            (
                Message::new(Tone::Waiting).text("a <b> & c"),
                ":hourglass: a &lt;b&gt; &amp; c",
            ),
            (
                Message::new(Tone::Failure).link("https://x/a|<!channel>", "<@U1>\nx"),
                ":x: <https://x/a%7C&lt;!channel&gt;|&lt;@U1&gt; x>",
            ),
            (
                Message::new(Tone::Info).code("a`b<c>\nd"),
                "`a'b&lt;c&gt; d`",
            ),
            (
                Message::new(Tone::Info)
                    .text("Last 2 log lines:\n")
                    .code_block("a\n```<!here>"),
                "Last 2 log lines:\n```\na\n'''&lt;!here&gt;\n```",
            ),
            (
                Message::new(Tone::Lock)
                    .text("locked")
                    .field("Environment", "<!channel>")
                    .button("x", "Press", "1"),
                ":lock: locked\n*Environment:* &lt;!channel&gt;",
            ),
            (Message::new(Tone::Success), ":white_check_mark:"),
            (Message::new(Tone::Warning).text("w"), ":warning: w"),
            (Message::new(Tone::Error).text("e"), ":x: e"),
            (
                Message::new(Tone::Progress).text("p"),
                ":hourglass_flowing_sand: p",
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(mrkdwn(message), *expected, "{message:?}");
        }
    }

    #[test]
    fn block_kit_has_a_section_with_fields_and_an_actions_block() {
        let message = Message::new(Tone::Success)
            .text("done for ")
            .quoted("<!here>")
            .field("Ref", "*main*")
            .field("User", "@everyone")
            .button("deploy-anyway", "Deploy <anyway>", r#"{"c":"deploy!"}"#);
        assert_eq!(
            blocks(&message),
            json!([
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": ":white_check_mark: done for &lt;!here&gt;"},
                    "fields": [
                        {"type": "mrkdwn", "text": "*Ref:*\n*main*"},
                        {"type": "mrkdwn", "text": "*User:*\n＠everyone"},
                    ],
                },
                {
                    "type": "actions",
                    "elements": [{
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Deploy <anyway>"},
                        "action_id": "deploy-anyway",
                        "value": r#"{"c":"deploy!"}"#,
                    }],
                },
            ])
        );
    }

    #[test]
    fn block_kit_keeps_to_slacks_limits() {
        let mut message = Message::new(Tone::Info).text("x".repeat(5000));
        for i in 0..12 {
            message = message.field(format!("f{i}"), "v".repeat(3000));
        }
        let message = message.button("a", "l".repeat(100), "v");
        let b = blocks(&message);
        let text = b[0]["text"]["text"].as_str().unwrap();
        assert_eq!(text.chars().count(), SECTION_TEXT_MAX);
        let fields = b[0]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), FIELDS_MAX);
        assert!(
            fields
                .iter()
                .all(|f| f["text"].as_str().unwrap().chars().count() <= FIELD_TEXT_MAX)
        );
        let label = b[1]["elements"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(label.chars().count(), BUTTON_LABEL_MAX);
        assert_eq!(
            blocks(&Message::new(Tone::Info).button("a", "b", "c"))[0]["type"],
            "actions"
        );
    }

    #[test]
    fn no_hostile_value_leaves_markup_in_any_rendering() {
        for value in super::super::MARKUP_INJECTIONS {
            let message = Message::new(Tone::Error)
                .quoted(*value)
                .code(*value)
                .code_block(*value)
                .field(*value, *value);
            let text = mrkdwn(&message);
            assert!(!text.contains(['<', '>']), "{value}: {text}");
            let rendered = blocks(&message).to_string();
            assert!(!rendered.contains(['<', '>']), "{value}: {rendered}");
        }
    }
}
