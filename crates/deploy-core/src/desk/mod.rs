//! The release desk's vocabulary, pure and shared by chima (which refuses in chat) and faseng
//! (which ends a deployment `error`): how long locks and unfreezes may last, freeze windows
//! and their occurrences, why a deploy is [`Blocked`], and how a time is shown ([`when`]).
//! Nothing here reads a clock: every question is asked at an explicit `now`.

mod blocked;
mod freeze;
mod when;

pub use blocked::Blocked;
/// The IANA time zone type desk times are shown in (`AppConfig::tz`), re-exported so callers
/// need not depend on chrono-tz themselves.
pub use chrono_tz::Tz;
pub(crate) use freeze::parse_tz;
pub use freeze::{
    CronSchedule, FreezeOccurrence, FreezeRule, FreezeWindow, Interval, MAX_FREEZE_DURATION,
    ScheduleError, frozen, upcoming,
};
pub use when::when;

use crate::duration::{Span, SpanError};

/// The longest a lock (and an ad-hoc freeze) may be taken for.
pub const MAX_LOCK: Span = Span::from_secs(7 * 86_400);
/// The longest an unfreeze lasts.
pub const MAX_UNFREEZE: Span = Span::from_secs(3_600);
/// How long an unfreeze lasts when no duration is given.
pub const DEFAULT_UNFREEZE: Span = Span::from_secs(30 * 60);
/// app.json `lock_ttl` when unset.
pub const DEFAULT_LOCK_TTL: Span = Span::from_secs(4 * 3_600);
/// app.json `lock_reminder` when unset.
pub const DEFAULT_LOCK_REMINDER: Span = Span::from_secs(2 * 3_600);

/// Why a duration typed for the desk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeskSpanError {
    /// Not a duration at all.
    #[error(transparent)]
    Malformed(#[from] SpanError),
    /// `0m` and the like.
    #[error("{what} must last more than 0")]
    Zero {
        /// `a lock`, `an unfreeze`, …
        what: &'static str,
    },
    /// Longer than allowed.
    #[error("{given} is too long: {what} lasts at most {max}")]
    TooLong {
        /// `a lock`, `an unfreeze`, …
        what: &'static str,
        /// What was asked for, as typed.
        given: String,
        /// The most allowed.
        max: Span,
    },
}

fn bounded(text: &str, what: &'static str, max: Span) -> Result<Span, DeskSpanError> {
    let span: Span = text.parse()?;
    if span.as_secs() == 0 {
        Err(DeskSpanError::Zero { what })
    } else if span > max {
        Err(DeskSpanError::TooLong {
            what,
            given: text.trim().to_owned(),
            max,
        })
    } else {
        Ok(span)
    }
}

/// A lock's duration (`lock … for <duration>`): more than 0, at most [`MAX_LOCK`] (7d).
pub fn lock_span(text: &str) -> Result<Span, DeskSpanError> {
    bounded(text, "a lock", MAX_LOCK)
}

/// An ad-hoc freeze's duration (`freeze … for <duration>`): more than 0, at most 7d.
pub fn freeze_span(text: &str) -> Result<Span, DeskSpanError> {
    bounded(text, "a freeze", MAX_LOCK)
}

/// An unfreeze's duration (`unfreeze … for <duration>`): more than 0, at most
/// [`MAX_UNFREEZE`] (1h).
pub fn unfreeze_span(text: &str) -> Result<Span, DeskSpanError> {
    bounded(text, "an unfreeze", MAX_UNFREEZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desk_durations_are_bounded_with_the_limit_named() {
        for (text, want) in [
            ("30m", Ok(1_800)),
            ("1h30m", Ok(5_400)),
            ("7d", Ok(604_800)),
            ("6d23h59m59s", Ok(604_799)),
            ("7d1s", Err("7d1s is too long: a lock lasts at most 7d")),
            ("8d", Err("8d is too long: a lock lasts at most 7d")),
            ("0m", Err("a lock must last more than 0")),
            (
                "soon",
                Err("\"soon\" is not a duration: write it like 90s, 30m, 4h, 1d or 1h30m"),
            ),
            ("", Err("a duration is needed, e.g. 30m, 4h or 1d")),
        ] {
            let got = lock_span(text)
                .map(Span::as_secs)
                .map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_owned), "{text:?}");
        }
        assert_eq!(unfreeze_span("1h").unwrap().as_secs(), 3_600);
        assert_eq!(
            unfreeze_span("61m").unwrap_err().to_string(),
            "61m is too long: an unfreeze lasts at most 1h"
        );
        assert_eq!(freeze_span("7d").unwrap(), MAX_LOCK);
        assert_eq!(
            freeze_span("0s").unwrap_err().to_string(),
            "a freeze must last more than 0"
        );
    }

    #[test]
    fn the_limits_are_what_the_design_says() {
        for (span, text) in [
            (MAX_LOCK, "7d"),
            (MAX_UNFREEZE, "1h"),
            (DEFAULT_UNFREEZE, "30m"),
            (DEFAULT_LOCK_TTL, "4h"),
            (DEFAULT_LOCK_REMINDER, "2h"),
            (MAX_FREEZE_DURATION, "31d"),
        ] {
            assert_eq!(span.to_string(), text);
        }
    }
}
