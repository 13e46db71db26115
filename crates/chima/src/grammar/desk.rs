//! The release desk's commands (DESIGN.md § "Release desk"): locks, the line, freezes and
//! the audit. Pure: words in, a [`DeskCommand`] or the exact [`Problem`] out.
//!
//! A reason follows the first `:` of the line (`lock demo in staging for 1h: testing`) and
//! is kept as typed; names and durations come before it, word by word.

use deploy_core::{AppName, EnvName, Span};

use super::{
    CommandSpec, ENV_KEYWORDS, ParseError, Problem, bad, closest_keyword, parse_app_and_ref,
    spec_named,
};

/// The most characters of a reason kept (the rest is refused, not cut).
pub const MAX_REASON_CHARS: usize = 300;

/// Which apps a freeze covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeScope {
    /// One app.
    App(AppName),
    /// Every app (`freeze all …`).
    All,
}

/// A parsed release-desk command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeskCommand {
    /// `lock <app> in <env> [for <duration>]: <reason>`.
    Lock {
        /// The app.
        app: AppName,
        /// The environment.
        env: EnvName,
        /// How long; the app's `lock_ttl` when absent.
        span: Option<Span>,
        /// Why (required).
        reason: String,
    },
    /// `unlock <app> in <env>`: the holder releases.
    Unlock {
        /// The app.
        app: AppName,
        /// The environment.
        env: EnvName,
    },
    /// `unlock! <app> in <env>[: <reason>]`: take the lock from its holder.
    TakeOver {
        /// The app.
        app: AppName,
        /// The environment.
        env: EnvName,
        /// Passed to the old holder, when given.
        reason: Option<String>,
    },
    /// `locks [<app>]`.
    Locks {
        /// Only this app's.
        app: Option<AppName>,
    },
    /// `cancel <app> in <env>`: leave the line.
    Cancel {
        /// The app.
        app: AppName,
        /// The environment.
        env: EnvName,
    },
    /// `queue [<app> [in <env>]]`.
    Queue {
        /// Only this app's.
        app: Option<AppName>,
        /// Only this environment's.
        env: Option<EnvName>,
    },
    /// `freeze <app>|all [in <env>] for <duration>: <reason>`.
    Freeze {
        /// Which apps.
        scope: FreezeScope,
        /// Only this environment (all when absent).
        env: Option<EnvName>,
        /// How long, from now.
        span: Span,
        /// Why (required).
        reason: String,
    },
    /// `unfreeze <app> in <env> [for <duration>]: <reason>`.
    Unfreeze {
        /// The app.
        app: AppName,
        /// The environment.
        env: EnvName,
        /// How long (30m when absent; at most 1h).
        span: Option<Span>,
        /// Why (required).
        reason: String,
    },
    /// `freezes [<app>]`.
    Freezes {
        /// Only this app's.
        app: Option<AppName>,
    },
    /// `audit <app> [in <env>] [since <duration>]`.
    Audit {
        /// The app.
        app: AppName,
        /// Only this environment.
        env: Option<EnvName>,
        /// Only entries this recent.
        since: Option<Span>,
    },
}

/// The words before the line's first `:`, and the reason after it (trimmed; `None` when
/// there is no `:` or nothing after it).
fn split_reason(rest: &str) -> (Vec<&str>, Option<&str>) {
    match rest.split_once(':') {
        Some((head, reason)) => {
            let reason = reason.trim();
            (
                head.split_whitespace().collect(),
                (!reason.is_empty()).then_some(reason),
            )
        }
        None => (rest.split_whitespace().collect(), None),
    }
}

fn reason(spec: &'static CommandSpec, reason: Option<&str>) -> Result<String, ParseError> {
    let Some(reason) = reason else {
        return Err(bad(spec, Problem::MissingReason));
    };
    let chars = reason.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(bad(spec, Problem::ReasonTooLong(chars)));
    }
    Ok(reason.to_owned())
}

/// Words read left to right, with the command they belong to for its problems.
pub(super) struct Words<'a> {
    pub(super) spec: &'static CommandSpec,
    words: Vec<&'a str>,
    pub(super) at: usize,
}

impl<'a> Words<'a> {
    pub(super) fn new(spec: &'static CommandSpec, words: Vec<&'a str>) -> Self {
        Self { spec, words, at: 0 }
    }

    pub(super) fn peek(&self) -> Option<&'a str> {
        self.words.get(self.at).copied()
    }

    /// The word `offset` words after the next one.
    pub(super) fn peek_after(&self, offset: usize) -> Option<&'a str> {
        self.words.get(self.at + offset).copied()
    }

    pub(super) fn app(&mut self) -> Result<AppName, ParseError> {
        let word = self.words.get(self.at);
        let (app, git_ref) = parse_app_and_ref(self.spec, word)?;
        if let Some(r) = git_ref {
            return Err(bad(
                self.spec,
                Problem::Unexpected {
                    word: format!("/{r}"),
                    suggestion: None,
                },
            ));
        }
        self.at += 1;
        Ok(app)
    }

    pub(super) fn optional_app(&mut self) -> Result<Option<AppName>, ParseError> {
        match self.peek() {
            None => Ok(None),
            Some(_) => self.app().map(Some),
        }
    }

    /// `in|on|to <env>`, required.
    pub(super) fn env(&mut self) -> Result<EnvName, ParseError> {
        self.env_after(ENV_KEYWORDS)
    }

    /// `<keyword> <env>` for one of `keywords`, required.
    pub(super) fn env_after(&mut self, keywords: &[&'static str]) -> Result<EnvName, ParseError> {
        match self.optional_env_after(keywords)? {
            Some(env) => Ok(env),
            None => Err(match self.peek() {
                Some(word) => bad(
                    self.spec,
                    Problem::Unexpected {
                        word: word.to_owned(),
                        suggestion: closest_keyword(word, keywords).or(Some("in")),
                    },
                ),
                None => bad(self.spec, Problem::MissingEnv("in".to_owned())),
            }),
        }
    }

    /// `in|on|to <env>`, when the next word is one of those keywords.
    pub(super) fn optional_env(&mut self) -> Result<Option<EnvName>, ParseError> {
        self.optional_env_after(ENV_KEYWORDS)
    }

    /// `<keyword> <env>`, when the next word is one of `keywords`.
    pub(super) fn optional_env_after(
        &mut self,
        keywords: &[&'static str],
    ) -> Result<Option<EnvName>, ParseError> {
        let Some(keyword) = self.peek() else {
            return Ok(None);
        };
        if !keywords.contains(&keyword.to_ascii_lowercase().as_str()) {
            return Ok(None);
        }
        let Some(word) = self.words.get(self.at + 1) else {
            return Err(bad(self.spec, Problem::MissingEnv(keyword.to_owned())));
        };
        let word = word.trim_end_matches('?');
        let env = EnvName::parse_with_aliases(word)
            .map_err(|e| bad(self.spec, Problem::BadEnv(word.to_owned(), e)))?;
        self.at += 2;
        Ok(Some(env))
    }

    /// `<keyword> <duration>`, when the next word is `keyword`.
    pub(super) fn optional_span(
        &mut self,
        keyword: &'static str,
    ) -> Result<Option<Span>, ParseError> {
        match self.peek() {
            Some(word) if word.eq_ignore_ascii_case(keyword) => {}
            _ => return Ok(None),
        }
        let Some(word) = self.words.get(self.at + 1) else {
            return Err(bad(self.spec, Problem::MissingDuration(keyword)));
        };
        let span = word
            .parse::<Span>()
            .map_err(|e| bad(self.spec, Problem::BadDuration(word.to_string(), e)))?;
        if span.as_secs() == 0 {
            return Err(bad(
                self.spec,
                Problem::BadDuration(
                    word.to_string(),
                    deploy_core::SpanError::Malformed(word.to_string()),
                ),
            ));
        }
        self.at += 2;
        Ok(Some(span))
    }

    /// Nothing may follow; a word that resembles one of `keywords` is suggested.
    pub(super) fn end(&self, keywords: &[&'static str]) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(word) => Err(bad(
                self.spec,
                Problem::Unexpected {
                    word: word.to_owned(),
                    suggestion: closest_keyword(word, keywords),
                },
            )),
        }
    }
}

/// No reason may be given to a command that takes none.
fn no_reason(spec: &'static CommandSpec, reason: Option<&str>) -> Result<(), ParseError> {
    match reason {
        None => Ok(()),
        Some(r) => Err(bad(
            spec,
            Problem::Unexpected {
                word: format!(": {}", r.chars().take(40).collect::<String>()),
                suggestion: None,
            },
        )),
    }
}

/// Parses a desk command: `word` is its first word (lower-cased, `unlock!` kept whole),
/// `rest` the line after it. `None` when `word` is no desk command.
pub(super) fn parse(word: &str, rest: &str) -> Option<Result<DeskCommand, ParseError>> {
    let name = match word {
        "unlock!" => "unlock",
        w => w,
    };
    let spec = match name {
        "lock" | "unlock" | "locks" | "cancel" | "queue" | "freeze" | "unfreeze" | "freezes"
        | "audit" => spec_named(name),
        _ => return None,
    };
    let (head, why) = split_reason(rest);
    let mut w = Words::new(spec, head);
    Some((|| match word {
        "lock" => {
            let app = w.app()?;
            let env = w.env()?;
            let span = w.optional_span("for")?;
            w.end(&["for"])?;
            let reason = reason(spec, why)?;
            Ok(DeskCommand::Lock {
                app,
                env,
                span,
                reason,
            })
        }
        "unlock" => {
            let app = w.app()?;
            let env = w.env()?;
            w.end(&[])?;
            no_reason(spec, why)?;
            Ok(DeskCommand::Unlock { app, env })
        }
        "unlock!" => {
            let app = w.app()?;
            let env = w.env()?;
            w.end(&[])?;
            let reason = why.map(|r| reason(spec, Some(r))).transpose()?;
            Ok(DeskCommand::TakeOver { app, env, reason })
        }
        "locks" => {
            let app = w.optional_app()?;
            w.end(&[])?;
            no_reason(spec, why)?;
            Ok(DeskCommand::Locks { app })
        }
        "cancel" => {
            let app = w.app()?;
            let env = w.env()?;
            w.end(&[])?;
            no_reason(spec, why)?;
            Ok(DeskCommand::Cancel { app, env })
        }
        "queue" => {
            let app = w.optional_app()?;
            let env = match app {
                Some(_) => w.optional_env()?,
                None => None,
            };
            w.end(&["in"])?;
            no_reason(spec, why)?;
            Ok(DeskCommand::Queue { app, env })
        }
        "freeze" => {
            let scope = match w.peek() {
                Some(all) if all.eq_ignore_ascii_case("all") => {
                    w.at += 1;
                    FreezeScope::All
                }
                _ => FreezeScope::App(w.app()?),
            };
            let env = w.optional_env()?;
            let Some(span) = w.optional_span("for")? else {
                w.end(&["for", "in"])?;
                return Err(bad(spec, Problem::MissingDuration("for")));
            };
            w.end(&[])?;
            let reason = reason(spec, why)?;
            Ok(DeskCommand::Freeze {
                scope,
                env,
                span,
                reason,
            })
        }
        "unfreeze" => {
            let app = w.app()?;
            let env = w.env()?;
            let span = w.optional_span("for")?;
            w.end(&["for"])?;
            let reason = reason(spec, why)?;
            Ok(DeskCommand::Unfreeze {
                app,
                env,
                span,
                reason,
            })
        }
        "freezes" => {
            let app = w.optional_app()?;
            w.end(&[])?;
            no_reason(spec, why)?;
            Ok(DeskCommand::Freezes { app })
        }
        "audit" => {
            let app = w.app()?;
            let env = w.optional_env()?;
            let since = w.optional_span("since")?;
            w.end(&["in", "since"])?;
            no_reason(spec, why)?;
            Ok(DeskCommand::Audit { app, env, since })
        }
        _ => Err(ParseError::UnknownCommand {
            word: word.to_owned(),
            suggestion: None,
        }),
    })())
}

#[cfg(test)]
mod tests {
    use super::super::{Command, parse};
    use super::*;

    fn desk(line: &str) -> DeskCommand {
        match parse(line) {
            Ok(Command::Desk(d)) => d,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn problem(line: &str) -> Problem {
        match parse(line) {
            Err(ParseError::BadArguments { problem, .. }) => problem,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn app(s: &str) -> AppName {
        AppName::parse(s).unwrap()
    }

    fn env(s: &str) -> EnvName {
        EnvName::parse(s).unwrap()
    }

    fn span(s: &str) -> Span {
        s.parse().unwrap()
    }

    #[test]
    fn lock_commands() {
        let cases: &[(&str, DeskCommand)] = &[
            (
                "lock demo in staging for 1h: testing",
                DeskCommand::Lock {
                    app: app("demo"),
                    env: env("staging"),
                    span: Some(span("1h")),
                    reason: "testing".into(),
                },
            ),
            (
                "lock demo on prod: the migration: part 2",
                DeskCommand::Lock {
                    app: app("demo"),
                    env: env("production"),
                    span: None,
                    reason: "the migration: part 2".into(),
                },
            ),
            (
                "LOCK Demo to staging for 1h30m:   spaced  reason ",
                DeskCommand::Lock {
                    app: app("demo"),
                    env: env("staging"),
                    span: Some(span("1h30m")),
                    reason: "spaced  reason".into(),
                },
            ),
            (
                "lock demo in staging:why",
                DeskCommand::Lock {
                    app: app("demo"),
                    env: env("staging"),
                    span: None,
                    reason: "why".into(),
                },
            ),
            (
                "unlock demo in staging",
                DeskCommand::Unlock {
                    app: app("demo"),
                    env: env("staging"),
                },
            ),
            (
                "unlock! demo in staging",
                DeskCommand::TakeOver {
                    app: app("demo"),
                    env: env("staging"),
                    reason: None,
                },
            ),
            (
                "unlock! demo in staging: hotfix",
                DeskCommand::TakeOver {
                    app: app("demo"),
                    env: env("staging"),
                    reason: Some("hotfix".into()),
                },
            ),
            ("locks", DeskCommand::Locks { app: None }),
            (
                "locks demo",
                DeskCommand::Locks {
                    app: Some(app("demo")),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&desk(line), want, "{line}");
        }
    }

    #[test]
    fn line_and_queue_commands() {
        let cases: &[(&str, DeskCommand)] = &[
            (
                "cancel demo in staging",
                DeskCommand::Cancel {
                    app: app("demo"),
                    env: env("staging"),
                },
            ),
            (
                "queue",
                DeskCommand::Queue {
                    app: None,
                    env: None,
                },
            ),
            (
                "queue demo",
                DeskCommand::Queue {
                    app: Some(app("demo")),
                    env: None,
                },
            ),
            (
                "queue demo in staging",
                DeskCommand::Queue {
                    app: Some(app("demo")),
                    env: Some(env("staging")),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&desk(line), want, "{line}");
        }
    }

    #[test]
    fn freeze_commands() {
        let cases: &[(&str, DeskCommand)] = &[
            (
                "freeze demo for 2h: release train",
                DeskCommand::Freeze {
                    scope: FreezeScope::App(app("demo")),
                    env: None,
                    span: span("2h"),
                    reason: "release train".into(),
                },
            ),
            (
                "freeze all in production for 1d: holidays",
                DeskCommand::Freeze {
                    scope: FreezeScope::All,
                    env: Some(env("production")),
                    span: span("1d"),
                    reason: "holidays".into(),
                },
            ),
            (
                "unfreeze demo in production: hotfix",
                DeskCommand::Unfreeze {
                    app: app("demo"),
                    env: env("production"),
                    span: None,
                    reason: "hotfix".into(),
                },
            ),
            (
                "unfreeze demo in production for 45m: hotfix",
                DeskCommand::Unfreeze {
                    app: app("demo"),
                    env: env("production"),
                    span: Some(span("45m")),
                    reason: "hotfix".into(),
                },
            ),
            ("freezes", DeskCommand::Freezes { app: None }),
            (
                "freezes demo",
                DeskCommand::Freezes {
                    app: Some(app("demo")),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&desk(line), want, "{line}");
        }
    }

    #[test]
    fn audit_commands() {
        let cases: &[(&str, DeskCommand)] = &[
            (
                "audit demo",
                DeskCommand::Audit {
                    app: app("demo"),
                    env: None,
                    since: None,
                },
            ),
            (
                "audit demo in staging since 2d",
                DeskCommand::Audit {
                    app: app("demo"),
                    env: Some(env("staging")),
                    since: Some(span("2d")),
                },
            ),
            (
                "audit demo since 30m",
                DeskCommand::Audit {
                    app: app("demo"),
                    env: None,
                    since: Some(span("30m")),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&desk(line), want, "{line}");
        }
    }

    #[test]
    fn problems_are_named() {
        let cases: &[(&str, Problem)] = &[
            ("lock demo in staging", Problem::MissingReason),
            ("lock demo in staging:   ", Problem::MissingReason),
            ("lock demo in staging for 1h", Problem::MissingReason),
            ("lock demo", Problem::MissingEnv("in".into())),
            ("lock", Problem::MissingApp),
            (
                "lock demo staging: x",
                Problem::Unexpected {
                    word: "staging".into(),
                    suggestion: Some("in"),
                },
            ),
            ("lock demo in", Problem::MissingEnv("in".into())),
            (
                "lock demo in staging for: x",
                Problem::MissingDuration("for"),
            ),
            (
                "lock demo in staging for soon: x",
                Problem::BadDuration(
                    "soon".into(),
                    deploy_core::SpanError::Malformed("soon".into()),
                ),
            ),
            (
                "lock demo in staging for 0m: x",
                Problem::BadDuration("0m".into(), deploy_core::SpanError::Malformed("0m".into())),
            ),
            (
                "lock demo in staging fro 1h: x",
                Problem::Unexpected {
                    word: "fro".into(),
                    suggestion: Some("for"),
                },
            ),
            (
                "unlock demo in staging: because",
                Problem::Unexpected {
                    word: ": because".into(),
                    suggestion: None,
                },
            ),
            ("freeze demo: x", Problem::MissingDuration("for")),
            ("freeze demo for 1h", Problem::MissingReason),
            ("unfreeze demo in live", Problem::MissingReason),
            ("cancel demo", Problem::MissingEnv("in".into())),
            ("audit", Problem::MissingApp),
            (
                "audit demo since yesterday",
                Problem::BadDuration(
                    "yesterday".into(),
                    deploy_core::SpanError::Malformed("yesterday".into()),
                ),
            ),
            (
                "locks demo/main",
                Problem::Unexpected {
                    word: "/main".into(),
                    suggestion: None,
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&problem(line), want, "{line}");
        }
        let long = format!("lock demo in staging: {}", "x".repeat(MAX_REASON_CHARS + 1));
        assert_eq!(problem(&long), Problem::ReasonTooLong(MAX_REASON_CHARS + 1));
    }

    #[test]
    fn names_are_checked_as_everywhere() {
        assert!(matches!(
            problem("lock $(id) in staging: x"),
            Problem::BadApp(..)
        ));
        assert!(matches!(
            problem("lock demo in `id`: x"),
            Problem::BadEnv(..)
        ));
    }
}
