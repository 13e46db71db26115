//! GitRef and the simple names on arbitrary UTF-8: parsing never panics, and whatever is
//! accepted obeys git's check-ref-format rules and ours (no leading `-`, no control or
//! invisible characters, at most 255 bytes).
#![no_main]

use deploy_core::{AppName, CommitSha, EnvName, GitRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(r) = GitRef::parse(s) {
        let r = r.as_str();
        assert_eq!(r, s);
        assert!(!r.is_empty() && r.len() <= 255);
        assert!(!r.starts_with('-'));
        assert!(r != "@");
        assert!(!r.contains("..") && !r.contains("@{") && !r.contains("//"));
        assert!(!r.starts_with('/') && !r.ends_with('/') && !r.ends_with('.'));
        assert!(!r.chars().any(|c| c.is_whitespace()
            || c.is_control()
            || deploy_core::is_invisible(c)
            || "~^:?*[\\".contains(c)));
        for component in r.split('/') {
            assert!(!component.starts_with('.') && !component.ends_with(".lock"));
        }
    }
    for name in [
        AppName::parse(s).map(|n| n.to_string()),
        EnvName::parse(s).map(|n| n.to_string()),
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        );
        assert!(name != "." && name != "..");
    }
    if let Ok(sha) = CommitSha::parse(s) {
        assert!(sha.as_str().len() == 40 || sha.as_str().len() == 64);
        assert_eq!(sha.short().len(), 7);
    }
});
