//! Text for chat markup. Slack's mrkdwn gives `&`, `<` and `>` meaning (`<!channel>`,
//! `<@U123>`, `<#C1|name>`, `<https://x|label>`), so every value quoted into a message is
//! escaped, and links are built only from values escaped the same way.

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
