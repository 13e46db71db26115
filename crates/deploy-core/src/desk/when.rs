//! How every desk text shows a time: absolute in the app's time zone and relative to now,
//! e.g. `18:09 UTC (in 59 min)` or `Mon 7 Dec 10:00 HKT (in 2 days)`.

use chrono::{DateTime, Datelike as _, Utc};
use chrono_tz::Tz;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// `at` as the desk shows it at `now`: the clock time in `tz` (with the weekday and date when
/// it is not today there, and the year when not this year) and how far away it is:
/// `18:09 UTC (in 59 min)`, `Mon 7 Dec 10:00 HKT (in 2 days)`, `09:12 UTC (3 h ago)`.
pub fn when(at: DateTime<Utc>, now: DateTime<Utc>, tz: Tz) -> String {
    format!("{} ({})", absolute(at, now, tz), relative(at, now))
}

/// The clock time in `tz`, with as much of the date as differs from `now`'s there.
fn absolute(at: DateTime<Utc>, now: DateTime<Utc>, tz: Tz) -> String {
    let local = at.with_timezone(&tz);
    let today = now.with_timezone(&tz);
    let format = if local.date_naive() == today.date_naive() {
        "%H:%M %Z"
    } else if local.year() == today.year() {
        "%a %-d %b %H:%M %Z"
    } else {
        "%a %-d %b %Y %H:%M %Z"
    };
    local.format(format).to_string()
}

/// `in 59 min`, `in 3 h`, `in 2 days`, `59 min ago`: minutes counted down (whole minutes
/// left), hours and days rounded to the nearest.
fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (at - now).num_seconds();
    let future = secs > 0;
    let s = secs.unsigned_abs();
    let amount = if s < MINUTE {
        return if future {
            "in under a minute"
        } else {
            "just now"
        }
        .to_owned();
    } else if s < HOUR {
        format!("{} min", s / MINUTE)
    } else if s < DAY {
        format!("{} h", (s + HOUR / 2) / HOUR)
    } else {
        let days = (s + DAY / 2) / DAY;
        format!("{days} day{}", if days == 1 { "" } else { "s" })
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn times_show_absolute_in_the_zone_and_relative_to_now() {
        let hk: Tz = "Asia/Hong_Kong".parse().unwrap();
        let ny: Tz = "America/New_York".parse().unwrap();
        let now = "2026-12-05T17:10:00Z";
        for (at, now, tz, want) in [
            (
                "2026-12-05T18:09:00Z",
                now,
                Tz::UTC,
                "18:09 UTC (in 59 min)",
            ),
            (
                "2026-12-05T18:09:59Z",
                now,
                Tz::UTC,
                "18:09 UTC (in 59 min)",
            ),
            (
                "2026-12-05T17:10:30Z",
                now,
                Tz::UTC,
                "17:10 UTC (in under a minute)",
            ),
            ("2026-12-05T17:10:00Z", now, Tz::UTC, "17:10 UTC (just now)"),
            ("2026-12-05T17:09:30Z", now, Tz::UTC, "17:09 UTC (just now)"),
            (
                "2026-12-05T16:11:00Z",
                now,
                Tz::UTC,
                "16:11 UTC (59 min ago)",
            ),
            ("2026-12-05T20:10:00Z", now, Tz::UTC, "20:10 UTC (in 3 h)"),
            ("2026-12-05T18:40:00Z", now, Tz::UTC, "18:40 UTC (in 2 h)"),
            ("2026-12-05T18:39:00Z", now, Tz::UTC, "18:39 UTC (in 1 h)"),
            ("2026-12-05T14:10:00Z", now, Tz::UTC, "14:10 UTC (3 h ago)"),
            (
                "2026-12-06T16:00:00Z",
                now,
                Tz::UTC,
                "Sun 6 Dec 16:00 UTC (in 23 h)",
            ),
            (
                "2026-12-07T02:00:00Z",
                now,
                hk,
                "Mon 7 Dec 10:00 HKT (in 1 day)",
            ),
            // Fri 18:00 HKT + 64 h = Mon 10:00 HKT; on Saturday morning HKT it is 2 days away.
            (
                "2026-12-07T02:00:00Z",
                "2026-12-05T00:00:00Z",
                hk,
                "Mon 7 Dec 10:00 HKT (in 2 days)",
            ),
            (
                "2026-12-01T09:00:00Z",
                now,
                Tz::UTC,
                "Tue 1 Dec 09:00 UTC (4 days ago)",
            ),
            (
                "2027-01-02T09:00:00Z",
                now,
                Tz::UTC,
                "Sat 2 Jan 2027 09:00 UTC (in 28 days)",
            ),
            // Today is judged in the zone: 23:30 UTC is already tomorrow in Hong Kong.
            (
                "2026-12-05T23:30:00Z",
                "2026-12-05T15:00:00Z",
                hk,
                "Sun 6 Dec 07:30 HKT (in 9 h)",
            ),
            (
                "2026-12-05T15:30:00Z",
                "2026-12-05T15:00:00Z",
                hk,
                "23:30 HKT (in 30 min)",
            ),
            // The abbreviation follows daylight saving time.
            (
                "2026-07-01T16:00:00Z",
                "2026-07-01T15:00:00Z",
                ny,
                "12:00 EDT (in 1 h)",
            ),
            ("2026-12-05T17:00:00Z", now, ny, "12:00 EST (10 min ago)"),
        ] {
            assert_eq!(when(t(at), t(now), tz), want, "{at} at {now} in {tz}");
        }
    }
}
