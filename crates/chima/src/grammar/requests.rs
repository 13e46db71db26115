//! Release requests' commands (DESIGN.md § "Release requests"): `approve #N`,
//! `approve! #N: <reason>`, `reject #N: <reason>`, `claim #N`, `deploy #N`, `cancel #N`,
//! `recheck #N` and `requests [<app>]`. Request numbers are their own sequence, always
//! written with `#` in these commands.

use deploy_core::AppName;

use super::{CommandSpec, ParseError, Problem, bad, parse_app_and_ref, spec_named};
use super::{MAX_REASON_CHARS, no_more};

/// A parsed release-request command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestCommand {
    /// `approve #N`, or `approve! #N: <reason>` (overriding red checks).
    Approve {
        /// The request.
        id: u64,
        /// `approve!`'s reason.
        overriding: Option<String>,
    },
    /// `reject #N: <reason>`.
    Reject {
        /// The request.
        id: u64,
        /// Why.
        reason: String,
    },
    /// `claim #N`: a release admin takes it.
    Claim {
        /// The request.
        id: u64,
    },
    /// `deploy #N`: deploy an approved request now.
    Deploy {
        /// The request.
        id: u64,
    },
    /// `cancel #N`: withdraw it.
    Cancel {
        /// The request.
        id: u64,
    },
    /// `recheck #N`: evaluate its checks again.
    Recheck {
        /// The request.
        id: u64,
    },
    /// `requests [<app>]`: the open requests, in order.
    List {
        /// Only this app's.
        app: Option<AppName>,
    },
}

/// Whether `word` (lower-cased) followed by `next` starts a request command.
pub(super) fn is_request_command(word: &str, next: Option<&str>) -> bool {
    match word {
        "approve" | "approve!" | "reject" | "claim" | "recheck" | "requests" => true,
        "deploy" | "cancel" => next.is_some_and(|w| w.starts_with('#')),
        _ => false,
    }
}

fn request_id(spec: &'static CommandSpec, word: Option<&str>) -> Result<u64, ParseError> {
    let Some(word) = word else {
        return Err(bad(spec, Problem::MissingRequest));
    };
    word.strip_prefix('#')
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| bad(spec, Problem::BadRequest(word.to_owned())))
}

fn reason(spec: &'static CommandSpec, reason: Option<&str>) -> Result<String, ParseError> {
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| bad(spec, Problem::MissingReason))?;
    let chars = reason.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(bad(spec, Problem::ReasonTooLong(chars)));
    }
    Ok(reason.to_owned())
}

/// Parses a request command: `word` its first word (lower-cased), `rest` the line after it.
pub(super) fn parse(word: &str, rest: &str) -> Result<RequestCommand, ParseError> {
    let (head, why) = match rest.split_once(':') {
        Some((head, why)) => (head, Some(why)),
        None => (rest, None),
    };
    let words: Vec<&str> = head.split_whitespace().collect();
    let first = words.first().copied();
    let name = word.trim_end_matches('!');
    let spec = spec_named(name);
    let id = || request_id(spec, first);
    let no_reason = |why: Option<&str>| match why {
        Some(r) => Err(bad(
            spec,
            Problem::Unexpected {
                word: format!(": {}", r.trim().chars().take(40).collect::<String>()),
                suggestion: None,
            },
        )),
        None => Ok(()),
    };
    let command = match word {
        "approve" => {
            no_reason(why)?;
            RequestCommand::Approve {
                id: id()?,
                overriding: None,
            }
        }
        "approve!" => RequestCommand::Approve {
            id: id()?,
            overriding: Some(reason(spec, why)?),
        },
        "reject" => RequestCommand::Reject {
            id: id()?,
            reason: reason(spec, why)?,
        },
        "claim" => {
            no_reason(why)?;
            RequestCommand::Claim { id: id()? }
        }
        "deploy" => {
            no_reason(why)?;
            RequestCommand::Deploy { id: id()? }
        }
        "cancel" => {
            no_reason(why)?;
            RequestCommand::Cancel { id: id()? }
        }
        "recheck" => {
            no_reason(why)?;
            RequestCommand::Recheck { id: id()? }
        }
        _ => {
            no_reason(why)?;
            let app = match first {
                Some(_) => {
                    let (app, git_ref) = parse_app_and_ref(spec, words.first())?;
                    if let Some(r) = git_ref {
                        return Err(bad(
                            spec,
                            Problem::Unexpected {
                                word: format!("/{r}"),
                                suggestion: None,
                            },
                        ));
                    }
                    Some(app)
                }
                None => None,
            };
            no_more(spec, words.get(1..).unwrap_or_default())?;
            return Ok(RequestCommand::List { app });
        }
    };
    no_more(spec, words.get(1..).unwrap_or_default())?;
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::super::{Command, parse};
    use super::*;

    fn request(line: &str) -> RequestCommand {
        match parse(line) {
            Ok(Command::Request(r)) => r,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn problem(line: &str) -> Problem {
        match parse(line) {
            Err(ParseError::BadArguments { problem, .. }) => problem,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn request_commands() {
        let cases: &[(&str, RequestCommand)] = &[
            (
                "approve #3",
                RequestCommand::Approve {
                    id: 3,
                    overriding: None,
                },
            ),
            (
                "APPROVE! #3: CI is down, the change is docs only",
                RequestCommand::Approve {
                    id: 3,
                    overriding: Some("CI is down, the change is docs only".into()),
                },
            ),
            (
                "reject #12: no rollback plan",
                RequestCommand::Reject {
                    id: 12,
                    reason: "no rollback plan".into(),
                },
            ),
            ("claim #1", RequestCommand::Claim { id: 1 }),
            ("deploy #1", RequestCommand::Deploy { id: 1 }),
            ("cancel #2", RequestCommand::Cancel { id: 2 }),
            ("recheck #2", RequestCommand::Recheck { id: 2 }),
            ("requests", RequestCommand::List { app: None }),
            (
                "requests demo",
                RequestCommand::List {
                    app: Some(AppName::parse("demo").unwrap()),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&request(line), want, "{line}");
        }
    }

    #[test]
    fn deploy_and_cancel_without_a_number_stay_what_they_were() {
        assert!(matches!(parse("deploy demo"), Ok(Command::Deploy(_))));
        assert!(matches!(
            parse("cancel demo in staging"),
            Ok(Command::Desk(_))
        ));
    }

    #[test]
    fn problems_are_named() {
        let cases: &[(&str, Problem)] = &[
            ("approve", Problem::MissingRequest),
            ("approve 3", Problem::BadRequest("3".into())),
            ("approve #x", Problem::BadRequest("#x".into())),
            ("approve #0", Problem::BadRequest("#0".into())),
            ("approve! #3", Problem::MissingReason),
            ("approve! #3:  ", Problem::MissingReason),
            ("reject #3", Problem::MissingReason),
            (
                "approve #3: looks good",
                Problem::Unexpected {
                    word: ": looks good".into(),
                    suggestion: None,
                },
            ),
            (
                "claim #3 now",
                Problem::Unexpected {
                    word: "now".into(),
                    suggestion: None,
                },
            ),
            ("deploy #", Problem::BadRequest("#".into())),
        ];
        for (line, want) in cases {
            assert_eq!(&problem(line), want, "{line}");
        }
    }
}
