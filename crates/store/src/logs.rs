//! Run logs, kept in the store so any `faseng serve` can show any run's log.

use async_trait::async_trait;

/// The bytes a log line counts for in [`crate::StoreSize::log_bytes`].
pub fn log_line_bytes(line: &str) -> u64 {
    line.len() as u64 + 1
}

/// Run logs.
#[async_trait]
pub trait Logs: Send + Sync + 'static {
    /// Appends log lines to a run's log.
    async fn append_log(&self, key: &str, lines: &[String]) -> anyhow::Result<()>;

    /// Reads a run's log from line `from` (0-based).
    async fn read_log(&self, key: &str, from: usize) -> anyhow::Result<Vec<String>>;
}
