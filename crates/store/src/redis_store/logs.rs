//! Run logs on Redis.

use super::*;

#[async_trait]
impl Logs for RedisStore {
    async fn append_log(&self, key: &str, lines: &[String]) -> anyhow::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let bytes: u64 = lines.iter().map(|l| log_line_bytes(l)).sum();
        let _: () = redis::pipe()
            .atomic()
            .rpush(k("log", key), lines)
            .ignore()
            .hincr(LOG_SIZES, key, bytes)
            .ignore()
            .incr(LOG_BYTES, bytes)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn read_log(&self, key: &str, from: usize) -> anyhow::Result<Vec<String>> {
        Ok(self.conn().lrange(k("log", key), from as isize, -1).await?)
    }
}
