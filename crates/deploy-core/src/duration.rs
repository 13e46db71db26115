//! Durations as operators and chat users write them: `90s`, `30m`, `4h`, `1d`, `1h30m`
//! (units in descending order, each at most once; no spaces, no fractions).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// A duration written with units, e.g. `1h30m`. Displays in the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(Duration);

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpanError {
    /// Nothing was given.
    #[error("a duration is needed, e.g. 30m, 4h or 1d")]
    Empty,
    /// A number without a unit, a unknown unit, or units out of order.
    #[error("{0:?} is not a duration: write it like 90s, 30m, 4h, 1d or 1h30m")]
    Malformed(String),
    /// More than fits.
    #[error("{0:?} is too long")]
    TooLong(String),
}

const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

impl Span {
    /// A span of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The span as a [`Duration`].
    pub fn as_duration(self) -> Duration {
        self.0
    }

    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    /// The span as a chrono duration (for date arithmetic).
    pub fn as_chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.as_secs()).unwrap_or(i64::MAX))
    }
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        if s.is_empty() {
            return Err(SpanError::Empty);
        }
        let malformed = || SpanError::Malformed(text.to_owned());
        let mut total: u64 = 0;
        let mut next_unit = 0;
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = c.to_ascii_lowercase();
            let at = UNITS[next_unit..]
                .iter()
                .position(|(u, _)| *u == unit)
                .ok_or_else(malformed)?
                + next_unit;
            if digits.is_empty() {
                return Err(malformed());
            }
            let n: u64 = digits
                .parse()
                .map_err(|_| SpanError::TooLong(text.to_owned()))?;
            total = n
                .checked_mul(UNITS[at].1)
                .and_then(|secs| total.checked_add(secs))
                .ok_or_else(|| SpanError::TooLong(text.to_owned()))?;
            digits.clear();
            next_unit = at + 1;
        }
        if !digits.is_empty() {
            return Err(malformed());
        }
        Ok(Self::from_secs(total))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.as_secs();
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, secs) in UNITS {
            if rest >= secs {
                write!(f, "{}{unit}", rest / secs)?;
                rest %= secs;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> Result<u64, SpanError> {
        s.parse::<Span>().map(Span::as_secs)
    }

    #[test]
    fn the_written_forms_parse() {
        for (text, want) in [
            ("90s", 90),
            ("30m", 1_800),
            ("4h", 14_400),
            ("1d", 86_400),
            ("1h30m", 5_400),
            ("2d4h", 187_200),
            ("1H", 3_600),
            (" 7d ", 604_800),
            ("0s", 0),
        ] {
            assert_eq!(secs(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn malformed_durations_are_refused_with_the_text_named() {
        for text in [
            "30", "m", "1x", "30m1h", "1h1h", "1.5h", "-1h", "1 h", "h30",
        ] {
            assert_eq!(
                secs(text),
                Err(SpanError::Malformed(text.to_owned())),
                "{text}"
            );
        }
        assert_eq!(secs(""), Err(SpanError::Empty));
        assert!(matches!(
            secs("99999999999999999999d"),
            Err(SpanError::TooLong(_))
        ));
    }

    #[test]
    fn spans_display_as_they_are_written() {
        for text in ["90s", "30m", "1h30m", "1d", "2d4h1m5s", "0s"] {
            let span: Span = text.parse().unwrap();
            let shown = span.to_string();
            assert_eq!(shown.parse::<Span>().unwrap(), span, "{text}");
        }
        assert_eq!(Span::from_secs(90).to_string(), "1m30s");
        assert_eq!(Span::from_secs(3_600).to_string(), "1h");
    }

    #[test]
    fn spans_round_trip_through_json() {
        let span: Span = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(span.as_secs(), 5_400);
        assert_eq!(serde_json::to_string(&span).unwrap(), "\"1h30m\"");
        assert!(serde_json::from_str::<Span>("\"soon\"").is_err());
    }
}
