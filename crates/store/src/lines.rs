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
