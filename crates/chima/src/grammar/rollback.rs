//! Rollback and statistics (DESIGN.md § "Rollback and statistics"):
//! `rollback <app> in|on <env> [to <ref>|#<deployment-id>]` and
//! `stats <app> [in <env>] [for <period>]`. Pure: words in, a command or the exact
//! [`Problem`] out.

use deploy_core::{AppName, EnvName, GitRef, RefError, Span};

use super::desk::Words;
use super::{CommandSpec, ParseError, Problem, bad, spec_named};

/// The period `stats` covers when none is given.
pub const DEFAULT_STATS_PERIOD: Span = Span::from_secs(30 * 86_400);

/// The longest period `stats` covers.
pub const MAX_STATS_PERIOD: Span = Span::from_secs(365 * 86_400);

/// What a rollback goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTarget {
    /// The newest earlier successful deployment with another commit.
    Previous,
    /// The commit a ref points at now.
    Ref(GitRef),
    /// The commit of this (successful) deployment.
    Deployment(u64),
}

/// A parsed `rollback` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackCommand {
    /// The app.
    pub app: AppName,
    /// The environment.
    pub env: EnvName,
    /// What to go back to.
    pub target: RollbackTarget,
}

/// A parsed `stats` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsCommand {
    /// The app.
    pub app: AppName,
    /// Only this environment (every one when absent).
    pub env: Option<EnvName>,
    /// How far back from now ([`DEFAULT_STATS_PERIOD`] when not given).
    pub period: Span,
}

const ROLLBACK_ENV_KEYWORDS: &[&str] = &["in", "on"];

/// Parses `rollback …` (`rest` is the line after the command word).
pub(super) fn parse_rollback(rest: &str) -> Result<RollbackCommand, ParseError> {
    let spec = spec_named("rollback");
    let mut w = Words::new(spec, rest.split_whitespace().collect());
    let app = w.app()?;
    let env = w.env_after(ROLLBACK_ENV_KEYWORDS)?;
    let target = match w.peek() {
        Some(to) if to.eq_ignore_ascii_case("to") => {
            let Some(word) = w.peek_after(1) else {
                return Err(bad(spec, Problem::MissingTarget(to.to_owned())));
            };
            w.at += 2;
            target(spec, word)?
        }
        _ => RollbackTarget::Previous,
    };
    w.end(&["to"])?;
    Ok(RollbackCommand { app, env, target })
}

fn target(spec: &'static CommandSpec, word: &str) -> Result<RollbackTarget, ParseError> {
    if let Some(number) = word.strip_prefix('#') {
        return number
            .parse::<u64>()
            .ok()
            .filter(|id| *id > 0)
            .map(RollbackTarget::Deployment)
            .ok_or_else(|| bad(spec, Problem::BadId(word.to_owned())));
    }
    GitRef::parse(word)
        .and_then(|parsed| match parsed.shell_metacharacter() {
            Some(c) => Err(RefError::ShellMetacharacter(c)),
            None => Ok(parsed),
        })
        .map(RollbackTarget::Ref)
        .map_err(|e| bad(spec, Problem::BadRef(word.to_owned(), e)))
}

/// Parses `stats …` (`rest` is the line after the command word).
pub(super) fn parse_stats(rest: &str) -> Result<StatsCommand, ParseError> {
    let spec = spec_named("stats");
    let mut w = Words::new(spec, rest.split_whitespace().collect());
    let app = w.app()?;
    let env = w.optional_env_after(ROLLBACK_ENV_KEYWORDS)?;
    let given = w.peek_after(1);
    let period = w.optional_span("for")?;
    w.end(match (&env, &period) {
        (_, Some(_)) => &[],
        (Some(_), None) => &["for"],
        (None, None) => &["in", "for"],
    })?;
    let period = match period {
        None => DEFAULT_STATS_PERIOD,
        Some(p) if p > MAX_STATS_PERIOD => {
            return Err(bad(
                spec,
                Problem::PeriodTooLong(given.unwrap_or_default().to_owned()),
            ));
        }
        Some(p) => p,
    };
    Ok(StatsCommand { app, env, period })
}

#[cfg(test)]
mod tests {
    use super::super::{Command, parse};
    use super::*;

    fn app(s: &str) -> AppName {
        AppName::parse(s).unwrap()
    }

    fn env(s: &str) -> EnvName {
        EnvName::parse(s).unwrap()
    }

    fn problem(line: &str) -> Problem {
        match parse(line) {
            Err(ParseError::BadArguments { problem, .. }) => problem,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn rollback_commands() {
        let cases: &[(&str, RollbackTarget, &str)] = &[
            (
                "rollback demo in staging",
                RollbackTarget::Previous,
                "staging",
            ),
            ("ROLLBACK Demo on stg", RollbackTarget::Previous, "staging"),
            (
                "rollback demo in staging to #12",
                RollbackTarget::Deployment(12),
                "staging",
            ),
            (
                "rollback demo on prod TO v1.2.0",
                RollbackTarget::Ref(GitRef::parse("v1.2.0").unwrap()),
                "production",
            ),
            (
                "rollback demo in staging to Feature/Login",
                RollbackTarget::Ref(GitRef::parse("Feature/Login").unwrap()),
                "staging",
            ),
            (
                "rollback demo in staging to 0123456789abcdef0123456789abcdef01234567",
                RollbackTarget::Ref(
                    GitRef::parse("0123456789abcdef0123456789abcdef01234567").unwrap(),
                ),
                "staging",
            ),
        ];
        for (line, target, environment) in cases {
            assert_eq!(
                parse(line),
                Ok(Command::Rollback(RollbackCommand {
                    app: app("demo"),
                    env: env(environment),
                    target: target.clone(),
                })),
                "{line}"
            );
        }
    }

    #[test]
    fn rollback_problems_are_named() {
        let cases: &[(&str, Problem)] = &[
            ("rollback", Problem::MissingApp),
            ("rollback demo", Problem::MissingEnv("in".into())),
            ("rollback demo in", Problem::MissingEnv("in".into())),
            (
                "rollback demo to staging",
                Problem::Unexpected {
                    word: "to".into(),
                    suggestion: Some("in"),
                },
            ),
            (
                "rollback demo staging",
                Problem::Unexpected {
                    word: "staging".into(),
                    suggestion: Some("in"),
                },
            ),
            (
                "rollback demo in staging to",
                Problem::MissingTarget("to".into()),
            ),
            (
                "rollback demo in staging to #x",
                Problem::BadId("#x".into()),
            ),
            (
                "rollback demo in staging to #0",
                Problem::BadId("#0".into()),
            ),
            (
                "rollback demo in staging to #-3",
                Problem::BadId("#-3".into()),
            ),
            (
                "rollback demo in staging to $(id)",
                Problem::BadRef("$(id)".into(), RefError::ShellMetacharacter('$')),
            ),
            (
                "rollback demo in staging to a..b",
                Problem::BadRef("a..b".into(), RefError::DoubleDot),
            ),
            (
                "rollback demo in staging to #3 now",
                Problem::Unexpected {
                    word: "now".into(),
                    suggestion: None,
                },
            ),
            (
                "rollback demo in staging ot #3",
                Problem::Unexpected {
                    word: "ot".into(),
                    suggestion: Some("to"),
                },
            ),
            (
                "rollback demo/main in staging",
                Problem::Unexpected {
                    word: "/main".into(),
                    suggestion: None,
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&problem(line), want, "{line}");
        }
        assert!(matches!(
            problem("rollback $(id) in staging"),
            Problem::BadApp(..)
        ));
        assert!(matches!(
            problem("rollback demo in `id`"),
            Problem::BadEnv(..)
        ));
    }

    #[test]
    fn stats_commands() {
        let span = |s: &str| s.parse::<Span>().unwrap();
        let cases: &[(&str, Option<&str>, Span)] = &[
            ("stats demo", None, DEFAULT_STATS_PERIOD),
            ("stats demo in staging", Some("staging"), span("30d")),
            ("STATS Demo on prod for 7d", Some("production"), span("7d")),
            ("stats demo for 90d", None, span("90d")),
            ("stats demo for 365d", None, span("365d")),
            ("stats demo for 12h", None, span("12h")),
        ];
        for (line, environment, period) in cases {
            assert_eq!(
                parse(line),
                Ok(Command::Stats(StatsCommand {
                    app: app("demo"),
                    env: environment.map(env),
                    period: *period,
                })),
                "{line}"
            );
        }
    }

    #[test]
    fn stats_problems_are_named() {
        let cases: &[(&str, Problem)] = &[
            ("stats", Problem::MissingApp),
            ("stats demo for", Problem::MissingDuration("for")),
            (
                "stats demo for a-month",
                Problem::BadDuration(
                    "a-month".into(),
                    deploy_core::SpanError::Malformed("a-month".into()),
                ),
            ),
            (
                "stats demo for 0d",
                Problem::BadDuration("0d".into(), deploy_core::SpanError::Malformed("0d".into())),
            ),
            ("stats demo for 366d", Problem::PeriodTooLong("366d".into())),
            (
                "stats demo for 9000h",
                Problem::PeriodTooLong("9000h".into()),
            ),
            ("stats demo in", Problem::MissingEnv("in".into())),
            (
                "stats demo fro 7d",
                Problem::Unexpected {
                    word: "fro".into(),
                    suggestion: Some("for"),
                },
            ),
            (
                "stats demo for 7d in staging",
                Problem::Unexpected {
                    word: "in".into(),
                    suggestion: None,
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&problem(line), want, "{line}");
        }
    }
}
