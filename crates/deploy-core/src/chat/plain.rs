//! Plain-text rendering of a [`Message`], for a terminal: a tone marker, the text (quoted
//! values on one line, code in backticks, links as `label (url)`), one line per field and
//! buttons as `[label]`. Nothing is markup here, so nothing is escaped; invisible and
//! control characters in quoted values are shown as `\u{…}` or spaces so a line cannot be
//! made to read as something else.

use super::{Message, Part, Tone, one_line};

/// The marker a tone is shown with (empty for [`Tone::Info`]).
pub fn marker(tone: Tone) -> &'static str {
    match tone {
        Tone::Info => "",
        Tone::Waiting | Tone::Progress => "…",
        Tone::Started => "▶",
        Tone::Success => "✔",
        Tone::Failure | Tone::Error => "✖",
        Tone::Warning => "⚠",
        Tone::Lock => "⚿",
    }
}

/// `value` on one line with invisible characters shown as escapes.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in one_line(value).chars() {
        if crate::is_invisible(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// The message as terminal text.
pub fn render(message: &Message) -> String {
    let mut text = String::new();
    for part in &message.parts {
        match part {
            Part::Text(t) => text.push_str(t),
            Part::Quoted(v) => text.push_str(&quote(v)),
            Part::Link { url, label } if one_line(label) == *url => text.push_str(url),
            Part::Link { url, label } => {
                text.push_str(&format!("{} ({})", quote(label), one_line(url)))
            }
            Part::Code(c) => text.push_str(&format!("`{}`", quote(c).replace('`', "'"))),
            Part::CodeBlock(c) => {
                for (i, line) in c.lines().enumerate() {
                    if i > 0 || !(text.is_empty() || text.ends_with('\n')) {
                        text.push('\n');
                    }
                    text.push_str("    ");
                    text.push_str(line);
                }
            }
        }
    }
    let mut out = match marker(message.tone) {
        "" => text,
        m if text.is_empty() => m.to_owned(),
        m => format!("{m} {text}"),
    };
    for f in &message.fields {
        out.push_str(&format!("\n{}: {}", f.label, quote(&f.value)));
    }
    for b in &message.buttons {
        out.push_str(&format!("\n  [{}]", quote(&b.label)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_renders_as_a_terminal_shows_it() {
        let cases: &[(Message, &str)] = &[
            (
                Message::new(Tone::Started)
                    .quoted("joyz")
                    .text(" is deploying ")
                    .quoted("<!channel>")
                    .text(" — ")
                    .link("https://f/x?a=1&b=2", "log"),
                "▶ joyz is deploying <!channel> — log (https://f/x?a=1&b=2)",
            ),
            (
                Message::new(Tone::Info).link("https://x", "https://x"),
                "https://x",
            ),
            (
                Message::new(Tone::Info).quoted("a\nb\u{202e}c *bold* &amp; @here"),
                "a b\\u{202e}c *bold* &amp; @here",
            ),
            (Message::new(Tone::Error).code("a`b\nc"), "✖ `a'b c`"),
            (
                Message::new(Tone::Failure)
                    .text("Last 2 log lines:\n")
                    .code_block("a\nb"),
                "✖ Last 2 log lines:\n    a\n    b",
            ),
            (
                Message::new(Tone::Lock)
                    .text("locked")
                    .field("By", "<@U1>\nx")
                    .button("id", "Unlock", "v"),
                "⚿ locked\nBy: <@U1> x\n  [Unlock]",
            ),
            (Message::new(Tone::Success), "✔"),
            (Message::new(Tone::Waiting).text("w"), "… w"),
            (Message::new(Tone::Warning).text("w"), "⚠ w"),
        ];
        for (message, expected) in cases {
            assert_eq!(render(message), *expected, "{message:?}");
        }
    }
}
