//! Waiting lines (one per app+environment, in arrival order) and the recent durations
//! their ETAs are computed from.

use async_trait::async_trait;

/// How many successful run durations are kept per app+environment for the ETA.
pub const DURATIONS_KEPT: usize = 10;

/// Waiting lines and recent durations.
#[async_trait]
pub trait Lines: Send + Sync + 'static {
    /// Every non-empty waiting line with its first run: `(line, run key)`.
    async fn line_heads(&self) -> anyhow::Result<Vec<(String, String)>>;

    /// Appends a run to the end of a waiting line (no-op when already in it).
    async fn line_join(&self, line: &str, key: &str) -> anyhow::Result<()>;

    /// Removes a run from a waiting line.
    async fn line_leave(&self, line: &str, key: &str) -> anyhow::Result<()>;

    /// The line's run keys, first (running) first.
    async fn line(&self, line: &str) -> anyhow::Result<Vec<String>>;

    /// Records a successful run's duration (the last [`DURATIONS_KEPT`] are kept).
    async fn push_duration(&self, line: &str, secs: f64) -> anyhow::Result<()>;

    /// The recent successful durations, newest first.
    async fn durations(&self, line: &str) -> anyhow::Result<Vec<f64>>;
}

/// The median of the recent durations times the runs ahead; `None` without history.
pub fn eta_secs(recent: &[f64], ahead: usize) -> Option<f64> {
    if recent.is_empty() || ahead == 0 {
        return None;
    }
    let mut v: Vec<f64> = recent
        .iter()
        .copied()
        .filter(|d| d.is_finite() && *d >= 0.0)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    Some(median * ahead as f64)
}
