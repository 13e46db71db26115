//! Names that must be valid before anything uses them: app and environment names, git refs,
//! repository names and repository-relative script paths. Parse once, then trust the type.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Why a string is not a valid name; rendered to users as is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// The string is longer than allowed.
    #[error("is longer than {max} bytes")]
    TooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// A character outside the allowed set.
    #[error("may only contain a-z, 0-9, '-', '_' and '.', and must start with a letter or digit")]
    BadCharacters,
}

fn check_simple_name(s: &str, max: usize) -> Result<String, NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > max {
        return Err(NameError::TooLong { max });
    }
    let lower = s.to_ascii_lowercase();
    let mut chars = lower.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if first_ok && rest_ok {
        Ok(lower)
    } else {
        Err(NameError::BadCharacters)
    }
}

macro_rules! simple_name {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses a name (case-insensitive; stored lower-case).
            pub fn parse(s: &str) -> Result<Self, NameError> {
                check_simple_name(s, $max).map(Self)
            }
            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

simple_name!(
    /// An app name as keyed in app.json: `[a-z0-9][-_.a-z0-9]*`, at most 100 bytes.
    /// It names a directory under `deploy-config/`, so it can never be `..` or start with `-`.
    AppName,
    100
);

simple_name!(
    /// An environment name (`production`, `edge`, …): `[a-z0-9][-_.a-z0-9]*`, at most 64 bytes.
    EnvName,
    64
);

impl EnvName {
    /// Parses a name given in chat, expanding the aliases `prod` and `stg`.
    pub fn parse_with_aliases(s: &str) -> Result<Self, NameError> {
        match s.to_ascii_lowercase().as_str() {
            "prod" => Self::parse("production"),
            "stg" => Self::parse("staging"),
            other => Self::parse(other),
        }
    }

    /// `production`, the environment used when neither the command nor the app names one.
    pub fn production() -> Self {
        Self("production".to_owned())
    }
}

/// Why a string is not a valid git ref; each variant is one of git's rules or one of ours.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RefError {
    /// Empty string.
    #[error("is empty")]
    Empty,
    /// Longer than 255 bytes.
    #[error("is longer than 255 bytes")]
    TooLong,
    /// Starts with `-`, so a program could read it as an option.
    #[error("starts with '-'")]
    LeadingDash,
    /// Contains whitespace.
    #[error("contains whitespace")]
    Whitespace,
    /// Contains a control character.
    #[error("contains a control character")]
    Control,
    /// Contains an invisible or text-direction character.
    #[error("contains an invisible or text-direction character")]
    Invisible,
    /// Contains one of `~^:?*[\`.
    #[error("contains '{0}'")]
    ForbiddenChar(char),
    /// Contains `..`.
    #[error("contains '..'")]
    DoubleDot,
    /// Contains `@{`.
    #[error("contains '@{{'")]
    AtBrace,
    /// Is the single character `@`.
    #[error("is '@'")]
    LoneAt,
    /// Starts or ends with `/` or contains `//`.
    #[error("has an empty path component (leading, trailing or double '/')")]
    EmptyComponent,
    /// A path component starts with `.`.
    #[error("has a path component starting with '.'")]
    DotComponent,
    /// A path component ends with `.lock`.
    #[error("has a path component ending with '.lock'")]
    LockComponent,
    /// Ends with `.`.
    #[error("ends with '.'")]
    TrailingDot,
    /// Contains a shell metacharacter. git allows these, so [`GitRef::parse`] accepts them;
    /// chat commands refuse them (see [`GitRef::shell_metacharacter`]).
    #[error("contains the shell metacharacter {}", shell_char_name(*.0))]
    ShellMetacharacter(char),
}

/// A metacharacter named so that it reads well inside chat markup (a bare backtick would
/// open a code span).
fn shell_char_name(c: char) -> String {
    match c {
        '`' => "backtick".to_owned(),
        '\'' => "single quote".to_owned(),
        '"' => "double quote".to_owned(),
        c => format!("'{c}'"),
    }
}

/// Characters a shell gives meaning to. Legal in git refs, never in a ref typed in chat.
const SHELL_METACHARACTERS: &str = "$`;|&<>()'\"";

/// A branch, tag or commit name that passes `git check-ref-format --allow-onelevel`, and more:
/// no leading `-`, no whitespace or control or invisible characters, at most 255 bytes.
/// A `GitRef` is safe to pass as one argv element to git or a provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GitRef(String);

/// True for invisible and text-direction characters (soft hyphen, zero-width spaces and
/// joiners, bidi embeddings, overrides and isolates, BOM, …): they make text look like what
/// it is not, so no name may contain them and no reply may echo them raw.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

impl GitRef {
    /// Parses a ref, naming the first rule it breaks.
    pub fn parse(s: &str) -> Result<Self, RefError> {
        if s.is_empty() {
            return Err(RefError::Empty);
        }
        if s.len() > 255 {
            return Err(RefError::TooLong);
        }
        if s == "@" {
            return Err(RefError::LoneAt);
        }
        if s.starts_with('-') {
            return Err(RefError::LeadingDash);
        }
        for c in s.chars() {
            if c.is_whitespace() {
                return Err(RefError::Whitespace);
            }
            if c.is_control() {
                return Err(RefError::Control);
            }
            if is_invisible(c) {
                return Err(RefError::Invisible);
            }
            if "~^:?*[\\".contains(c) {
                return Err(RefError::ForbiddenChar(c));
            }
        }
        if s.contains("..") {
            return Err(RefError::DoubleDot);
        }
        if s.contains("@{") {
            return Err(RefError::AtBrace);
        }
        if s.ends_with('.') {
            return Err(RefError::TrailingDot);
        }
        for component in s.split('/') {
            if component.is_empty() {
                return Err(RefError::EmptyComponent);
            }
            if component.starts_with('.') {
                return Err(RefError::DotComponent);
            }
            if component.ends_with(".lock") {
                return Err(RefError::LockComponent);
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The ref as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first shell metacharacter in the ref, if any. Such refs are legal for git and
    /// harmless to faseng (argv and environment only), but nobody types them in chat except
    /// by mistake or in an attack, so chima refuses them.
    pub fn shell_metacharacter(&self) -> Option<char> {
        self.0.chars().find(|c| SHELL_METACHARACTERS.contains(*c))
    }

    /// True when this looks like a full or abbreviated commit sha (7–40 hex digits).
    pub fn looks_like_sha(&self) -> bool {
        (7..=40).contains(&self.0.len()) && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for GitRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for GitRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for GitRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A full 40-hex-digit commit sha (or 64 for SHA-256 repositories), lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CommitSha(String);

/// A string that is not a full lower-case commit sha.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a full lower-case commit sha")]
pub struct ShaError(String);

impl CommitSha {
    /// Parses a full commit sha; anything else is refused.
    pub fn parse(s: &str) -> Result<Self, ShaError> {
        let ok = (s.len() == 40 || s.len() == 64)
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ShaError(s.to_owned()))
        }
    }
    /// The sha as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first seven digits, as shown in chat.
    pub fn short(&self) -> &str {
        &self.0[..7]
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CommitSha {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A GitHub repository `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName {
    owner: String,
    name: String,
}

/// A string that is not a repository name `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be of the form owner/name, got {0:?}")]
pub struct RepoNameError(String);

impl RepoName {
    /// Parses `owner/name` (GitHub's character rules: letters, digits, `-`, `_`, `.`).
    pub fn parse(s: &str) -> Result<Self, RepoNameError> {
        let bad = || RepoNameError(s.to_owned());
        let (owner, name) = s.split_once('/').ok_or_else(bad)?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 100
                && !p.starts_with(['-', '.'])
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if part_ok(owner) && part_ok(name) && name != ".." {
            Ok(Self {
                owner: owner.to_owned(),
                name: name.to_owned(),
            })
        } else {
            Err(bad())
        }
    }
    /// The owner (user or organisation).
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// The repository name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl Serialize for RepoName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RepoName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A path inside a repository that a provider may execute: relative, no `..`, no leading `-`,
/// only `[A-Za-z0-9_./-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ScriptPath(String);

/// A string that is not a script path inside the repository.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "must be a relative path inside the repository (letters, digits, '_', '.', '-', '/'; no '..'), got {0:?}"
)]
pub struct ScriptPathError(String);

impl ScriptPath {
    /// Parses a repository-relative script path.
    pub fn parse(s: &str) -> Result<Self, ScriptPathError> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && !s.starts_with(['/', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
            && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ScriptPathError(s.to_owned()))
        }
    }
    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScriptPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_ref_accepts_ordinary_branches_tags_and_shas() {
        for ok in [
            "main",
            "feature/login",
            "atmos/branch",
            "v1.2.3",
            "release-2026.11",
            "a1b2c3d",
            "feature/café",
            "日本語/ブランチ",
            "user@host",
            "x.lock.y",
            "deploy_bot/fix-42",
        ] {
            assert!(GitRef::parse(ok).is_ok(), "{ok} should be accepted");
        }
    }

    #[test]
    fn git_ref_refuses_hostile_and_malformed_refs() {
        let cases: &[(&str, RefError)] = &[
            ("", RefError::Empty),
            ("; rm -rf /", RefError::Whitespace),
            ("--upload-pack=x", RefError::LeadingDash),
            ("-b", RefError::LeadingDash),
            ("a..b", RefError::DoubleDot),
            ("x.lock", RefError::LockComponent),
            ("feat/x.lock/y", RefError::LockComponent),
            ("a@{b", RefError::AtBrace),
            ("@", RefError::LoneAt),
            ("dev/.branch", RefError::DotComponent),
            (".hidden", RefError::DotComponent),
            ("ends.", RefError::TrailingDot),
            ("ends/", RefError::EmptyComponent),
            ("/starts", RefError::EmptyComponent),
            ("a//b", RefError::EmptyComponent),
            ("a~1", RefError::ForbiddenChar('~')),
            ("a^", RefError::ForbiddenChar('^')),
            ("a:b", RefError::ForbiddenChar(':')),
            ("a?", RefError::ForbiddenChar('?')),
            ("a*", RefError::ForbiddenChar('*')),
            ("a[1]", RefError::ForbiddenChar('[')),
            ("a\\b", RefError::ForbiddenChar('\\')),
            ("tab\there", RefError::Whitespace),
            ("nl\nx", RefError::Whitespace),
            ("bell\u{7}", RefError::Control),
            ("del\u{7f}", RefError::Control),
            ("nbsp\u{a0}x", RefError::Whitespace),
            ("rtl\u{202e}x", RefError::Invisible),
            ("zw\u{200b}x", RefError::Invisible),
        ];
        for (input, expected) in cases {
            assert_eq!(GitRef::parse(input).as_ref(), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn shell_syntax_that_git_allows_stays_a_plain_string() {
        // git accepts `$(id)` as a branch name; it is harmless because a GitRef only ever
        // travels as one argv element or environment value, never through a shell.
        assert_eq!(GitRef::parse("$(id)").unwrap().as_str(), "$(id)");
        assert_eq!(GitRef::parse("`id`").unwrap().as_str(), "`id`");
        // ...but it is named, so chat can refuse it.
        for (r, c) in [
            ("$(id)", '$'),
            ("`id`", '`'),
            ("a;b", ';'),
            ("a|b", '|'),
            ("a&&b", '&'),
        ] {
            assert_eq!(
                GitRef::parse(r).unwrap().shell_metacharacter(),
                Some(c),
                "{r}"
            );
        }
        assert_eq!(
            GitRef::parse("feature/login-2")
                .unwrap()
                .shell_metacharacter(),
            None
        );
    }

    #[test]
    fn git_ref_length_limit_is_255_bytes() {
        assert!(GitRef::parse(&"a".repeat(255)).is_ok());
        assert_eq!(GitRef::parse(&"a".repeat(256)), Err(RefError::TooLong));
        assert_eq!(GitRef::parse(&"é".repeat(128)), Err(RefError::TooLong));
    }

    #[test]
    fn git_ref_agrees_with_git_check_ref_format() {
        let Ok(out) = std::process::Command::new("git").arg("--version").output() else {
            eprintln!("skipped: git is not installed");
            return;
        };
        assert!(out.status.success());
        for candidate in [
            "main",
            "a..b",
            "x.lock",
            "a@{b",
            "dev/.branch",
            "ends.",
            "a//b",
            "a~1",
            "a b",
            "feat/ok",
            "@",
            "a:b",
            "v1.0",
            "日本",
        ] {
            let git_ok = std::process::Command::new("git")
                .args(["check-ref-format", "--allow-onelevel", candidate])
                .status()
                .expect("git runs")
                .success();
            assert_eq!(
                GitRef::parse(candidate).is_ok(),
                git_ok,
                "disagreement with git on {candidate:?}"
            );
        }
    }

    #[test]
    fn app_and_env_names_are_lowercased_and_restricted() {
        assert_eq!(AppName::parse("Project-X").unwrap().as_str(), "project-x");
        assert_eq!(AppName::parse("a.b_c-1").unwrap().as_str(), "a.b_c-1");
        assert_eq!(AppName::parse(""), Err(NameError::Empty));
        for bad in ["..", "-rf", ".x", "a/b", "a b", "ä", "$(id)", "a;b"] {
            assert_eq!(AppName::parse(bad), Err(NameError::BadCharacters), "{bad}");
        }
        assert_eq!(
            AppName::parse(&"a".repeat(101)),
            Err(NameError::TooLong { max: 100 })
        );
    }

    #[test]
    fn environment_aliases_expand() {
        assert_eq!(
            EnvName::parse_with_aliases("prod").unwrap().as_str(),
            "production"
        );
        assert_eq!(
            EnvName::parse_with_aliases("STG").unwrap().as_str(),
            "staging"
        );
        assert_eq!(
            EnvName::parse_with_aliases("edge").unwrap().as_str(),
            "edge"
        );
    }

    #[test]
    fn repo_names_need_owner_and_name() {
        let r = RepoName::parse("oursky/project-x").unwrap();
        assert_eq!((r.owner(), r.name()), ("oursky", "project-x"));
        assert_eq!(r.to_string(), "oursky/project-x");
        for bad in ["", "oursky", "/x", "x/", "a/b/c", "a/..", "-a/b", "a b/c"] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn script_paths_stay_inside_the_repository() {
        assert!(ScriptPath::parse("script/deploy").is_ok());
        assert!(ScriptPath::parse("bin/pre-deploy.sh").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "-x",
            "a b",
            "a;b",
            "./x",
            "a//b",
        ] {
            assert!(ScriptPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commit_shas_must_be_full() {
        let sha = CommitSha::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
        assert_eq!(sha.short(), "0123456");
        for bad in [
            "abc",
            "0123456789ABCDEF0123456789abcdef01234567",
            "--upload-pack",
        ] {
            assert!(CommitSha::parse(bad).is_err());
        }
    }
}
