//! Why a deploy may not go ahead, in the words chima refuses with in chat and faseng ends a
//! deployment `error` with: the same text in both places.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::chat::{self, Message, Tone};
use crate::names::{AppName, EnvName};

use super::when;

/// What stands in a deploy's way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// Someone else holds the environment's lock.
    Locked {
        /// The holder, by name (locks are keyed by user id, shown by name).
        holder_name: String,
        /// Why they locked it (may be empty).
        reason: String,
        /// When they took it.
        since: DateTime<Utc>,
        /// When it expires; `None` = until released.
        until: Option<DateTime<Utc>>,
    },
    /// A freeze window is in force.
    Frozen {
        /// Why.
        reason: String,
        /// When it ends.
        until: DateTime<Utc>,
        /// Who froze it, for an ad-hoc freeze; `None` for an app.json window.
        by: Option<String>,
    },
}

impl Blocked {
    /// The refusal as a chat message: `demo in staging is locked by alice: testing, until
    /// 18:09 UTC (in 59 min).` or `demo in live is frozen: weekend, until Mon 7 Dec 10:00 HKT
    /// (in 2 days).` Times are shown in `tz` (the app's).
    pub fn message(&self, app: &AppName, env: &EnvName, now: DateTime<Utc>, tz: Tz) -> Message {
        match self {
            Blocked::Locked {
                holder_name,
                reason,
                since,
                until,
            } => {
                let m = Message::new(Tone::Lock)
                    .quoted(app.as_str())
                    .text(" in ")
                    .quoted(env.as_str())
                    .text(" is locked by ")
                    .quoted(holder_name.as_str());
                let m = with_reason(m, reason);
                match until {
                    Some(until) => m.text(format!(", until {}.", when(*until, now, tz))),
                    None => m.text(format!(", since {}.", when(*since, now, tz))),
                }
            }
            Blocked::Frozen { reason, until, by } => {
                let m = Message::new(Tone::Warning)
                    .quoted(app.as_str())
                    .text(" in ")
                    .quoted(env.as_str())
                    .text(" is frozen");
                let m = match by {
                    Some(by) => m.text(" by ").quoted(by.as_str()),
                    None => m,
                };
                with_reason(m, reason).text(format!(", until {}.", when(*until, now, tz)))
            }
        }
    }

    /// [`Blocked::message`] as plain text (faseng's status description, before GitHub's
    /// length limit is applied).
    pub fn plain(&self, app: &AppName, env: &EnvName, now: DateTime<Utc>, tz: Tz) -> String {
        chat::plain::render(&self.message(app, env, now, tz))
    }
}

fn with_reason(m: Message, reason: &str) -> Message {
    match reason.trim() {
        "" => m,
        reason => m.text(": ").quoted(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{MARKUP_INJECTIONS, Part, slack};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn names(app: &str, env: &str) -> (AppName, EnvName) {
        (AppName::parse(app).unwrap(), EnvName::parse(env).unwrap())
    }

    #[test]
    fn refusals_name_who_or_what_why_and_until_when() {
        let hk: Tz = "Asia/Hong_Kong".parse().unwrap();
        let now = t("2026-12-05T17:10:00Z");
        let lock = |reason: &str, until: Option<&str>| Blocked::Locked {
            holder_name: "alice".into(),
            reason: reason.into(),
            since: t("2026-12-05T16:09:00Z"),
            until: until.map(t),
        };
        for (blocked, app, env, tz, want) in [
            (
                lock("testing", Some("2026-12-05T18:09:00Z")),
                "demo",
                "staging",
                Tz::UTC,
                "⚿ demo in staging is locked by alice: testing, until 18:09 UTC (in 59 min).",
            ),
            (
                lock("  ", Some("2026-12-05T18:09:00Z")),
                "demo",
                "staging",
                Tz::UTC,
                "⚿ demo in staging is locked by alice, until 18:09 UTC (in 59 min).",
            ),
            (
                lock("locked with deploy:lock", None),
                "demo",
                "staging",
                Tz::UTC,
                "⚿ demo in staging is locked by alice: locked with deploy:lock, since 16:09 UTC (1 h ago).",
            ),
            (
                Blocked::Frozen {
                    reason: "weekend".into(),
                    until: t("2026-12-07T02:00:00Z"),
                    by: None,
                },
                "demo",
                "live",
                hk,
                "⚠ demo in live is frozen: weekend, until Mon 7 Dec 10:00 HKT (in 1 day).",
            ),
            (
                Blocked::Frozen {
                    reason: "release prep".into(),
                    until: t("2026-12-05T19:10:00Z"),
                    by: Some("bob".into()),
                },
                "project-x",
                "edge",
                Tz::UTC,
                "⚠ project-x in edge is frozen by bob: release prep, until 19:10 UTC (in 2 h).",
            ),
        ] {
            let (app, env) = names(app, env);
            assert_eq!(blocked.plain(&app, &env, now, tz), want);
        }
    }

    #[test]
    fn tones_follow_what_blocks() {
        let (app, env) = names("demo", "live");
        let now = t("2026-12-05T17:10:00Z");
        let locked = Blocked::Locked {
            holder_name: "a".into(),
            reason: "r".into(),
            since: now,
            until: None,
        };
        let frozen = Blocked::Frozen {
            reason: "r".into(),
            until: now,
            by: None,
        };
        assert_eq!(locked.message(&app, &env, now, Tz::UTC).tone, Tone::Lock);
        assert_eq!(frozen.message(&app, &env, now, Tz::UTC).tone, Tone::Warning);
    }

    #[test]
    fn names_and_reasons_are_quoted_so_they_cannot_ping_or_link() {
        let (app, env) = names("demo", "live");
        let now = t("2026-12-05T17:10:00Z");
        for hostile in MARKUP_INJECTIONS {
            for blocked in [
                Blocked::Locked {
                    holder_name: (*hostile).into(),
                    reason: (*hostile).into(),
                    since: now,
                    until: Some(now),
                },
                Blocked::Frozen {
                    reason: (*hostile).into(),
                    until: now,
                    by: Some((*hostile).into()),
                },
            ] {
                let message = blocked.message(&app, &env, now, Tz::UTC);
                let quoted = message
                    .parts
                    .iter()
                    .filter(|p| matches!(p, Part::Quoted(v) if v == hostile))
                    .count();
                assert_eq!(quoted, 2, "{blocked:?}");
                let shown = slack::mrkdwn(&message);
                assert!(
                    !shown.contains(['<', '>']) && shown.contains(&slack::quote(hostile)),
                    "{hostile} reached Slack unescaped: {shown}"
                );
            }
        }
    }
}
