//! How a poster works: its settings and the backoff between delivery attempts.

use std::time::Duration;

use chrono::Utc;

use crate::store::outbox::OUTBOX_GIVE_UP;

/// How a poster works.
#[derive(Debug, Clone, Copy)]
pub struct PosterSettings {
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// How long a claim on a lane lasts (renewed while sending); a dead process's lanes are
    /// taken over this long after it last renewed.
    pub lease: Duration,
    /// How often the store is scanned for lanes left by other processes.
    pub scan_every: Duration,
    /// How long an entry is tried before it is abandoned.
    pub give_up_after: Duration,
    /// The longest one call to GitHub or the chat service may take (at most half the lease:
    /// a claim is renewed before each call when half of it is gone).
    pub send_timeout: Duration,
    /// Entries taken per claim.
    pub batch: usize,
    /// Lanes sent at once.
    pub lanes_at_once: usize,
    /// How long a stopping poster may finish what it holds.
    pub drain: Duration,
}

impl PosterSettings {
    /// These settings with another lease (and a send timeout that fits in half of it).
    #[must_use]
    pub fn with_lease(self, lease: Duration) -> Self {
        let lease = lease.max(Duration::from_secs(2));
        Self {
            lease,
            send_timeout: self.send_timeout.min(lease / 2),
            ..self
        }
    }
}

impl Default for PosterSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            lease: Duration::from_secs(30),
            scan_every: Duration::from_secs(1),
            give_up_after: OUTBOX_GIVE_UP,
            send_timeout: Duration::from_secs(15),
            batch: 50,
            lanes_at_once: 16,
            drain: Duration::from_secs(5),
        }
    }
}

/// Backoff between delivery attempts: doubling from `first_delay` up to `max_delay`, with
/// jitter; a `Retry-After` longer than that is honoured.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub first_delay: Duration,
    /// Cap on one delay (`FASENG_REPORT_RETRY_MAX`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay after `n` failures in a row (1-based), before jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(31));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// [`RetryPolicy::delay`] with "equal jitter": half of it, plus up to the other half
    /// as `unit` (in [0, 1)) says, so processes that failed together do not retry together.
    pub fn jittered(&self, n: u32, unit: f64) -> Duration {
        let d = self.delay(n);
        d / 2 + (d / 2).mul_f64(unit.clamp(0.0, 1.0))
    }
}

pub(super) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: the clock's nanoseconds are jitter enough.
        return u64::from(Utc::now().timestamp_subsec_nanos());
    }
    u64::from_le_bytes(bytes)
}

/// A random number in [0, 1).
pub(crate) fn unit_random() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(350));
        assert_eq!(p.delay(30), Duration::from_millis(350));
        assert_eq!(p.delay(u32::MAX), Duration::from_millis(350));
    }

    #[test]
    fn jitter_keeps_between_half_and_the_whole_delay() {
        let p = RetryPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        };
        assert_eq!(p.jittered(3, 0.0), Duration::from_millis(200));
        assert_eq!(p.jittered(3, 0.5), Duration::from_millis(300));
        assert!(p.jittered(3, 0.999_999) <= Duration::from_millis(400));
        assert_eq!(p.jittered(3, 7.0), Duration::from_millis(400), "clamped");
        // Over many draws, retries spread over the window.
        let draws: Vec<Duration> = (0..200).map(|_| p.jittered(4, unit_random())).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_millis(400) && *d <= Duration::from_millis(800))
        );
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 100, "{} distinct delays", distinct.len());
    }
}
