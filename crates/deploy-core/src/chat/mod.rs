//! One neutral chat message, and its renderings. A [`Message`] has a [`Tone`] and [`Part`]s
//! (our own text, quoted values a user or repository controls, links, code), [`Field`]s and
//! [`Button`]s; each platform renders it and escapes every quoted value: [`slack`] (mrkdwn
//! and Block Kit) and [`plain`] (the shell). Later platforms are added the same way.
//!
//! Slack's mrkdwn gives `&`, `<` and `>` meaning (`<!channel>`, `<@U123>`, `<#C1|name>`,
//! `<https://x|label>`), so every value quoted into a message is escaped, and links are
//! built only from values escaped the same way.

pub mod plain;
pub mod slack;

/// How a message should look: each renderer shows it its own way (an emoji, a marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Neutral information (no marker).
    Info,
    /// Waiting for its turn (a deployment in the line).
    Waiting,
    /// Something is under way (a command being carried out).
    Progress,
    /// A deployment has started.
    Started,
    /// It worked.
    Success,
    /// It ran and failed.
    Failure,
    /// It did not happen, and why.
    Error,
    /// It could not run, or needs attention.
    Warning,
    /// A lock was taken, released or refused.
    Lock,
}

/// One piece of a message's line of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Our own words, shown as written (still escaped where the platform needs it).
    Text(String),
    /// A value a user or a repository controls (app, ref, environment, user name,
    /// description): shown as typed, never markup, never a mention, on one line.
    Quoted(String),
    /// A link with a label.
    Link {
        /// Where it goes.
        url: String,
        /// What it says.
        label: String,
    },
    /// Inline code.
    Code(String),
    /// A block of code (log lines), on lines of its own.
    CodeBlock(String),
}

/// A labelled value under the text (`Environment: production`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Our own label.
    pub label: String,
    /// The value, quoted.
    pub value: String,
}

/// A button under a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    /// A stable id the transport hands back when it is pressed.
    pub action_id: String,
    /// What it says.
    pub label: String,
    /// What it carries back (opaque to the renderers).
    pub value: String,
}

/// What a button carries back to chima when pressed (its `value`, as JSON): the command line
/// it runs, as if typed by whoever pressed it, and who may press it. chima's own buttons and
/// the ones faseng puts on a deploy's message ("Roll back") use this one shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ButtonValue {
    /// Command line to run.
    #[serde(rename = "c")]
    pub command: String,
    /// Only this user may press, when set.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub only_user: Option<String>,
}

impl ButtonValue {
    /// A button anyone may press that runs `command`.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            only_user: None,
        }
    }

    /// The value as a button carries it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a button value serialises")
    }
}

/// The action id of the "Roll back" button faseng puts on a finished deploy's message.
pub const ROLLBACK_ACTION_ID: &str = "rollback";

/// One chat message, independent of the platform it is shown on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// How it should look.
    pub tone: Tone,
    /// Its text, in order.
    pub parts: Vec<Part>,
    /// Labelled values under the text.
    pub fields: Vec<Field>,
    /// Buttons.
    pub buttons: Vec<Button>,
}

impl Message {
    /// An empty message with `tone`.
    pub fn new(tone: Tone) -> Self {
        Self {
            tone,
            parts: Vec::new(),
            fields: Vec::new(),
            buttons: Vec::new(),
        }
    }

    /// Adds our own words.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.parts.push(Part::Text(text.into()));
        self
    }

    /// Adds a value a user or repository controls.
    pub fn quoted(mut self, value: impl Into<String>) -> Self {
        self.parts.push(Part::Quoted(value.into()));
        self
    }

    /// Adds a link.
    pub fn link(mut self, url: impl Into<String>, label: impl Into<String>) -> Self {
        self.parts.push(Part::Link {
            url: url.into(),
            label: label.into(),
        });
        self
    }

    /// Adds inline code.
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.parts.push(Part::Code(code.into()));
        self
    }

    /// Adds a code block.
    pub fn code_block(mut self, code: impl Into<String>) -> Self {
        self.parts.push(Part::CodeBlock(code.into()));
        self
    }

    /// Adds a labelled value.
    pub fn field(mut self, label: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push(Field {
            label: label.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a button.
    pub fn button(
        mut self,
        action_id: impl Into<String>,
        label: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.buttons.push(Button {
            action_id: action_id.into(),
            label: label.into(),
            value: value.into(),
        });
        self
    }
}

/// `value` on one line: control characters (newlines, tabs) become spaces, so a quoted
/// value cannot start a line of its own and pass for another message.
pub fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` with Slack's control characters replaced by their entities (`&` → `&amp;`,
/// `<` → `&lt;`, `>` → `&gt;`): shown as typed, never a mention, channel ping or link.
pub fn escape_mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A mrkdwn link `<url|label>`. Both parts are escaped, and a `|` in the URL is
/// percent-encoded, so neither can end the link early or open another one.
pub fn mrkdwn_link(url: &str, label: &str) -> String {
    format!(
        "<{}|{}>",
        escape_mrkdwn(url).replace('|', "%7C"),
        escape_mrkdwn(label)
    )
}

/// Mentions, channel pings and links in the forms Slack parses, and an entity: what a
/// hostile ref, name or output line may carry. Tests of every chat text feed these.
pub const MARKUP_INJECTIONS: &[&str] = &[
    "<!channel>",
    "<!here>",
    "<@U123>",
    "<#C1|x>",
    "<https://evil|click>",
    "&amp;",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Mentions, channel pings and links in every form Slack parses, and an entity.
    const HOSTILE: &[&str] = &[
        "<!channel>",
        "<!here>",
        "<!everyone>",
        "<@U123>",
        "<#C1|x>",
        "<!subteam^S1|@team>",
        "<https://evil|click>",
        "&amp;",
    ];

    #[test]
    fn control_characters_become_entities_and_nothing_else_changes() {
        assert_eq!(
            escape_mrkdwn("<!channel> & <https://evil|click>"),
            "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
        );
        assert_eq!(escape_mrkdwn("&amp;"), "&amp;amp;");
        assert_eq!(
            escape_mrkdwn("*bold* `code` @channel é"),
            "*bold* `code` @channel é"
        );
        for value in HOSTILE {
            let escaped = escape_mrkdwn(value);
            assert!(!escaped.contains(['<', '>']), "{value} → {escaped}");
        }
    }

    #[test]
    fn button_values_are_short_json() {
        let value = ButtonValue::new("rollback demo in staging to #12");
        assert_eq!(
            value.to_json(),
            r#"{"c":"rollback demo in staging to #12"}"#
        );
        let back: ButtonValue = serde_json::from_str(&value.to_json()).unwrap();
        assert_eq!(back, value);
        let only = ButtonValue {
            only_user: Some("U1".into()),
            ..value
        };
        assert_eq!(
            only.to_json(),
            r#"{"c":"rollback demo in staging to #12","u":"U1"}"#
        );
    }

    #[test]
    fn links_cannot_be_broken_out_of() {
        assert_eq!(
            mrkdwn_link("https://faseng.example/deployments/o/r/1?a=1&b=2", "log"),
            "<https://faseng.example/deployments/o/r/1?a=1&amp;b=2|log>"
        );
        assert_eq!(
            mrkdwn_link("https://x/a|<!channel>", "<@U123>"),
            "<https://x/a%7C&lt;!channel&gt;|&lt;@U123&gt;>"
        );
        for value in HOSTILE {
            let link = mrkdwn_link(&format!("https://x/{value}"), value);
            let inner = &link[1..link.len() - 1];
            assert!(!inner.contains(['<', '>']), "{link}");
            let (_, label) = inner.split_once('|').unwrap();
            assert_eq!(
                label,
                escape_mrkdwn(value),
                "the link ends where faseng put its end"
            );
        }
    }
}
