//! Finding tickets in text: GitHub issue references in a pull request's title and description,
//! Jira keys in titles, branch names and commit messages.

use deploy_core::protect::JiraSettings;
use pulldown_cmark::{Event, Parser, Tag, TagEnd};

/// The text of `markdown` that people read as prose: without code (spans and blocks), link
/// and image targets and texts, and raw HTML, each replaced by a space so nothing joins up.
fn prose(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    // Depth inside links, images and code blocks, whose text is never a reference.
    let mut hidden = 0usize;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Link { .. } | Tag::Image { .. } | Tag::CodeBlock(_)) => {
                hidden += 1;
                out.push(' ');
            }
            Event::End(TagEnd::Link | TagEnd::Image | TagEnd::CodeBlock) => {
                hidden = hidden.saturating_sub(1);
                out.push(' ');
            }
            Event::Text(t) if hidden == 0 => out.push_str(&t),
            Event::End(_) | Event::SoftBreak | Event::HardBreak => out.push('\n'),
            _ => out.push(' '),
        }
    }
    out
}

/// True when a character before `#` keeps it from starting a reference (`owner/repo#1`,
/// `a#1`, `&#12;`, `x.y#1`).
fn joins_before(c: char) -> bool {
    c.is_alphanumeric() || "_/&#.-@=%+~\\".contains(c)
}

/// The issue numbers `text` (markdown) refers to in its own repository: `#12`, `Fixes #12`,
/// `(closes #7)`; not `owner/repo#1`, not inside code, links or URLs; each once, in order.
pub fn issue_refs(text: &str) -> Vec<u64> {
    let prose = prose(text);
    let mut found = Vec::new();
    for token in prose.split_whitespace() {
        if token.contains("://") || token.starts_with("www.") {
            continue;
        }
        let chars: Vec<(usize, char)> = token.char_indices().collect();
        for (i, &(at, c)) in chars.iter().enumerate() {
            if c != '#' || (i > 0 && joins_before(chars[i - 1].1)) {
                continue;
            }
            let digits: String = token[at + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let after = token[at + 1 + digits.len()..].chars().next();
            if digits.is_empty() || after.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Ok(n) = digits.parse::<u64>()
                && n > 0
                && !found.contains(&n)
            {
                found.push(n);
            }
        }
    }
    found
}

/// The Jira keys of `project` (e.g. `PROJ`) in `texts`: `PROJ-123`, word-bounded (not
/// `XPROJ-1`, `PROJ-12a`, `PROJ-1_x`) and only that project's; each once, in order. Keys are
/// upper case, as Jira writes them. The matching is app.json's own
/// ([`JiraSettings::keys_in`]).
pub fn jira_keys<'a>(texts: impl IntoIterator<Item = &'a str>, project: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    if project.is_empty() {
        return found;
    }
    let settings = JiraSettings {
        project: project.to_owned(),
        transition: String::new(),
    };
    for text in texts {
        for key in settings.keys_in(text) {
            if !found.contains(&key) {
                found.push(key);
            }
        }
    }
    found
}

/// True for a Jira key as Jira writes them: `PROJ-123` (what is safe to put in a URL path).
pub fn is_jira_key(key: &str) -> bool {
    let Some((project, number)) = key.rsplit_once('-') else {
        return false;
    };
    project.starts_with(|c: char| c.is_ascii_uppercase())
        && project
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !number.is_empty()
        && !number.starts_with('0')
        && number.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_references() {
        let cases: &[(&str, &[u64])] = &[
            ("", &[]),
            ("#12", &[12]),
            ("Fixes #12", &[12]),
            ("fixes #12, closes #7 and resolves #12 again", &[12, 7]),
            ("See (#3) and [#4] and #5.", &[3, 4, 5]),
            ("Part of #8: the rest", &[8]),
            ("Closes: #9", &[9]),
            ("- [x] #10\n- [ ] #11", &[10, 11]),
            // Other repositories, not references here.
            ("Fixes oursky/other#1", &[]),
            ("Fixes oursky/chima#1 and #2", &[2]),
            // Not numbers of issues.
            ("#0 #12abc #1_2 a#3 issue#4 C#5", &[]),
            ("color: #fff; &#12; x.#13", &[]),
            ("version 1.2#3", &[]),
            // Code spans and blocks.
            ("`#14` and ``Fixes #15``", &[]),
            ("```\nFixes #16\n```\n#17", &[17]),
            ("    indented #18\n", &[]),
            // URLs and links.
            ("https://example.com/page#19 http://x/#20", &[]),
            ("<https://github.com/o/r/issues/21#issuecomment-1>", &[]),
            ("[#22](https://github.com/o/r/issues/22) and #23", &[23]),
            ("www.example.com/#24", &[]),
            // Raw HTML.
            ("<!-- Fixes #25 -->\n\nFixes #26", &[26]),
            ("Fixes #29 <!-- and #30 -->", &[29]),
            // Headings and emphasis are prose.
            ("## Fixes #27\n**closes #28**", &[27, 28]),
            ("Fixes #18446744073709551616", &[]),
        ];
        for (text, refs) in cases {
            assert_eq!(issue_refs(text), *refs, "{text:?}");
        }
    }

    #[test]
    fn jira_keys_of_the_project() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["PROJ-123 Add login"], &["PROJ-123"]),
            (&["feature/PROJ-7-login", "Fix PROJ-7"], &["PROJ-7"]),
            (
                &["[PROJ-1] and (PROJ-2), PROJ-3."],
                &["PROJ-1", "PROJ-2", "PROJ-3"],
            ),
            (&["PROJ-12_fix feature/PROJ-13-fix"], &["PROJ-13"]),
            // Not this project's, not word-bounded, not keys.
            (&["OTHER-1 XPROJ-2 PROJ2-3 PROJ-4a PROJ- PROJ-x"], &[]),
            (&["proj-5 Proj-6"], &[]),
            (&["PROJ-07"], &[]),
            (&["1PROJ-8"], &[]),
            (&["ABC-PROJ-9"], &["PROJ-9"]),
        ];
        for (texts, keys) in cases {
            assert_eq!(jira_keys(texts.iter().copied(), "PROJ"), *keys, "{texts:?}");
        }
        assert!(jira_keys(["PROJ-1"], "").is_empty());
    }

    #[test]
    fn jira_key_shapes() {
        for key in ["PROJ-1", "AB2-99", "A_B-3"] {
            assert!(is_jira_key(key), "{key}");
        }
        for key in [
            "proj-1",
            "PROJ-",
            "PROJ-01",
            "-1",
            "PROJ-1/../x",
            "PROJ-1?x",
            "2X-1",
        ] {
            assert!(!is_jira_key(key), "{key}");
        }
    }
}
