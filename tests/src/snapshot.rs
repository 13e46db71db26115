//! What varies from run to run in a chat text, for snapshot tests (`insta`'s filters): commit
//! shas, loopback ports, log-link secrets, durations and deployment ids.
//!
//! ```text
//! insta::with_settings!({filters => e2e::snapshot::FILTERS.to_vec()}, {
//!     insta::assert_snapshot!(text);
//! });
//! ```

/// `(regex, replacement)` pairs, applied in order.
pub const FILTERS: &[(&str, &str)] = &[
    // A log link's secret (32 hex digits) before any sha rule can eat part of it.
    (r"\b[0-9a-f]{32}\b", "[secret]"),
    (r"\b[0-9a-f]{40}\b", "[sha]"),
    (r"\b[0-9a-f]{7}\b", "[short-sha]"),
    (r"127\.0\.0\.1:\d+", "[loopback]"),
    (r"\b\d+(\.\d+)? ?s\b", "[duration]"),
    (r"#\d+", "#[id]"),
    (r"chima \d+\.\d+\.\d+\S*", "chima [version]"),
    (r"/\d+/", "/[id]/"),
];

/// A chat message's life as one text: each version it was posted or edited to, in order,
/// then what it says now.
pub fn message_life(history: &[String], now: &str) -> String {
    let mut out = String::new();
    for (n, text) in history.iter().enumerate() {
        out.push_str(&format!("--- version {}\n{text}\n", n + 1));
    }
    out.push_str(&format!("--- now\n{now}\n"));
    out
}
